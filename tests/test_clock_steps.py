"""The wall clock stepping while watchbridge runs, or between a stop and a start: a Raspberry
Pi without a real-time clock booting behind until NTP answers, a VM resumed, a time fixed by
hand. The uptime (clocksteps.uptime) is a second hand-moved clock here: it is what no one sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt
from tests.playback_rig import jellyfin, jellyfin_progress, running_rig
from tests.test_delivery import (
    UNKNOWN_GUID,
    _lift_the_pacer,
    close_targets,
    drain,
    play_a_movie_trakt_does_not_know,
    webhook,
    worker_for,
)
from watchbridge import clocksteps
from watchbridge.app import Runtime
from watchbridge.clocksteps import STEP, ClockWatch, sent_at, uptime_clock
from watchbridge.config import parse_config
from watchbridge.deliver.worker import PROFILE_HOLDS, DeliveryWorker
from watchbridge.maintenance import check_tautulli_watched, housekeeping
from watchbridge.release_marks import LOOKUP_WAIT, failed_lookups, lookups_told, waited_out
from watchbridge.services.trakt import parse_iso
from watchbridge.store import FAILED_LOOKUPS
from watchbridge.tautulliwatched import ALERT_KIND, Reports
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

DAY = 86400.0
HEAT_BY_IMDB = {"type": "movie", "ids": {"imdb": "tt0113277"}}


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    return fake


@pytest.fixture
def uptime() -> FakeClock:
    return FakeClock(1_000.0)


@pytest.fixture
def runtime(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock, uptime: FakeClock
) -> Iterator[Runtime]:
    runtime = _runtime(tmp_path, trakt, receiver, clock, uptime)
    yield runtime
    runtime.close()


def _runtime(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock, uptime: FakeClock
) -> Runtime:
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
delivery: {{max_attempts: 10}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}, plex: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock, uptime=uptime)
    runtime.open()
    if runtime.store.get_token("trakt", "me") is None:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())
    return runtime


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[DeliveryWorker]:
    worker = worker_for(runtime)
    yield worker
    await close_targets(worker)


@dataclass
class Clocks:
    """The wall clock, the uptime no one sets, and Trakt's clock."""

    clock: FakeClock
    uptime: FakeClock
    trakt: FakeTrakt

    def later(self, seconds: float) -> None:
        """`seconds` pass with no step: the clock and the uptime move together."""
        self.clock.advance(seconds)
        self.uptime.advance(seconds)

    def step(self, seconds: float) -> None:
        """Time sync sets the clock `seconds` ahead, a minute after it was last read; Trakt's
        clock is right all along."""
        self.later(60.0)
        self.clock.advance(seconds)
        self.trakt.advance(self.clock() - self.trakt.now())


@pytest.fixture
def clocks(clock: FakeClock, uptime: FakeClock, trakt: FakeTrakt) -> Clocks:
    return Clocks(clock, uptime, trakt)


Restart = Callable[[], AbstractAsyncContextManager[tuple[Runtime, DeliveryWorker]]]


async def stop(runtime: Runtime, worker: DeliveryWorker) -> None:
    runtime.note_alive()  # as the service does every 5 minutes, and as it stops
    await close_targets(worker)
    runtime.close()


@pytest.fixture
def restart(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock, uptime: FakeClock
) -> Restart:
    """The service started again (after `stop`) on the same database, by the clocks as they
    are now: its runtime and delivery worker, closed on leaving."""

    @contextlib.asynccontextmanager
    async def started() -> AsyncIterator[tuple[Runtime, DeliveryWorker]]:
        again = _runtime(tmp_path, trakt, receiver, clock, uptime)
        restarted = worker_for(again)
        try:
            yield again, restarted
        finally:
            await close_targets(restarted)
            again.close()

    return started


async def pass_unpaced(worker: DeliveryWorker, runtime: Runtime) -> None:
    """A pass at once, not waiting out the pacer a 429 paused in real time."""
    _lift_the_pacer(worker)
    await worker.pass_once(runtime)


def trakt_learns_the_unknown_movie(trakt: FakeTrakt) -> None:
    trakt.add_movie("Nobody Knows", 2020, imdb=UNKNOWN_GUID.split("//")[1].split("?")[0])


async def test_a_play_received_before_the_clock_is_set_forward_is_dated_by_the_clock_as_set(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    clocks: Clocks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A Pi booted with the time it saved 3 days ago; Trakt is not reachable yet (the router
    # boots too). The film ends: its play waits.
    trakt.fail_next(1, 503)
    webhook(runtime, "movie_media_scrobble.json")
    await worker.pass_once(runtime)
    assert trakt.history() == []
    with caplog.at_level(logging.INFO):
        clocks.step(3 * DAY)
        await drain(worker, runtime, clock, passes=3, step=301)
    (play,) = trakt.history()
    assert play.item.title == "Arrival"
    assert play.watched_at is not None
    # Ended a minute before the step (and 15 minutes of passes ago), not 3 days earlier.
    assert abs(parse_iso(play.watched_at) - (clock() - 3 * 301 - 60)) <= 120
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("the clock jumped forward") for m in messages)


async def test_a_clock_set_forward_while_trakt_holds_a_profile_raises_no_alert_of_a_days_long_hold(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    receiver: AlertReceiver,
    clock: FakeClock,
    clocks: Clocks,
) -> None:
    # Booted 3 days behind; Trakt's rate limit holds the profile's deliveries.
    trakt.throttle_next(10**6, retry_after=1)
    webhook(runtime, "movie_media_scrobble.json")
    await worker.pass_once(runtime)
    clocks.step(3 * DAY)
    for _ in range(5):  # held 6 minutes in all, by the clock as set
        clocks.later(60)
        await pass_unpaced(worker, runtime)
    assert receiver.titles() == []
    trakt.clear_knobs()
    _lift_the_pacer(worker)
    await drain(worker, runtime, clock, passes=2, step=301)
    assert [h.item.title for h in trakt.history()] == ["Arrival"]
    assert receiver.titles() == []


async def test_a_clock_set_forward_by_days_does_not_make_a_failing_play_a_dead_letter(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    clocks: Clocks,
) -> None:
    # delivery.max_age (7 days) counts from a row's first failure: a clock 8 days behind,
    # set right an hour after the play first failed, is not 8 days of failing.
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)
    assert runtime.store.outbox_counts()["pending"] == 1
    clocks.later(3600)
    clocks.step(8 * DAY)
    await drain(worker, runtime, clock, passes=2, step=3601)
    counts = runtime.store.outbox_counts()
    assert counts.get("dead", 0) == 0 and counts["pending"] == 1


def last_plex_webhook(runtime: Runtime) -> tuple[float, float | None]:
    """When the Plex server last sent a webhook: as the store reads it at start, and as the
    running service holds it (seeded from the store, as at start)."""
    (stored,) = runtime.store.last_webhooks(["plex"])
    runtime.last_webhooks.seed([stored])
    return stored.at, runtime.last_webhooks.of_server("plex", stored.server)


async def test_a_webhook_received_before_the_clock_is_set_forward_is_not_days_old(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, clocks: Clocks
) -> None:
    # The webhooks_stopped alert compares Plex's view times with the last webhook's: one
    # taken while the Pi said 3 days ago would make every view since look unannounced.
    webhook(runtime, "movie_media_scrobble.json")
    received = clock()
    clocks.step(3 * DAY)
    await worker.pass_once(runtime)
    stored, held = last_plex_webhook(runtime)
    assert stored == held == pytest.approx(received + 3 * DAY)


async def test_a_webhook_received_while_the_clock_ran_ahead_is_no_webhook_still_to_come(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, clocks: Clocks
) -> None:
    webhook(runtime, "movie_media_scrobble.json")
    stored, _ = last_plex_webhook(runtime)
    clocks.step(-2 * DAY)  # the clock ran two days fast until time sync set it back
    await worker.pass_once(runtime)
    assert runtime.last_webhooks.recent()[0].at == pytest.approx(stored - 2 * DAY)
    assert last_plex_webhook(runtime)[0] == pytest.approx(stored - 2 * DAY)
    assert last_plex_webhook(runtime)[0] <= clock()


async def test_a_vm_frozen_by_its_host_keeps_the_time_of_a_play_received_before_the_freeze(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    clocks: Clocks,
) -> None:
    # The clock is right: Trakt's (its Date header) agrees with it.
    trakt.advance(clock() - trakt.now())
    play_a_movie_trakt_does_not_know(runtime)
    played = clock()
    await worker.pass_once(runtime)  # unmatched: tried again in an hour
    # The host sleeps 8 hours: the VM counts neither its wall clock nor its uptime meanwhile,
    # and time sync steps its wall clock forward on waking. The play was dated right.
    clock.advance(8 * 3600)
    trakt.advance(8 * 3600)
    trakt_learns_the_unknown_movie(trakt)
    for _ in range(2):
        clocks.later(60)
        trakt.advance(60)
        await pass_unpaced(worker, runtime)
    (play,) = trakt.history()
    assert play.watched_at is not None
    assert abs(parse_iso(play.watched_at) - played) <= 60


async def test_a_clock_set_back_between_a_stop_and_a_start_does_not_hold_deliveries_that_long(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    restart: Restart,
) -> None:
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)  # unmatched: tried again in an hour
    await stop(runtime, worker)
    # The clock ran a day fast; the machine restarts with it set right.
    clock.advance(-DAY)
    trakt_learns_the_unknown_movie(trakt)
    async with restart() as (again, restarted):
        await drain(restarted, again, clock, passes=3, step=1801)
        assert [h.item.title for h in trakt.history()] == ["Nobody Knows"]


async def test_a_play_stamped_while_the_clock_ran_ahead_goes_out_dated_no_later_than_now(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    uptime: FakeClock,
    restart: Restart,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The clock runs a day fast; the film ends and is rated while Trakt answers 503, and the
    # service stops. (A single stop goes out live, dated by Trakt; a rating, a mark or a burst
    # of plays carries our time.)
    trakt.advance(clock() - DAY - trakt.now())  # Trakt's clock is right all along
    trakt.fail_next(1, 503)
    webhook(runtime, "movie_media_scrobble.json")
    rated_at = clock()
    webhook(runtime, "movie_media_rate.json")
    await worker.pass_once(runtime)
    assert trakt.history() == [] and trakt.ratings() == []
    await stop(runtime, worker)
    # Restarted with the clock set right (the day it ran fast taken back), minutes later.
    clock.advance(-DAY + 300)
    uptime.advance(300)
    trakt.advance(clock() - trakt.now())
    async with restart() as (again, restarted):
        with caplog.at_level(logging.WARNING):
            await drain(restarted, again, clock, passes=3, step=301)
    (play,) = trakt.history()
    (rating,) = trakt.ratings()
    assert play.watched_at is not None
    # Not the day ahead it was stamped: the time the restarted service first looked.
    assert parse_iso(play.watched_at) <= clock() and parse_iso(rating.rated_at) <= clock()
    assert abs(parse_iso(play.watched_at) - (rated_at - DAY + 300)) <= 60
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("plays dated ahead of this clock") for m in messages)


def test_a_generic_play_dated_minutes_ahead_of_this_clock_is_dated_now(tmp_path: Path) -> None:
    # Accepted as two clocks a little apart (generic.dated): sent as it came, a play would end
    # in Trakt's history after the time it reached watchbridge.
    with running_rig(tmp_path) as rig:
        ahead = datetime.fromtimestamp(rig.clock() + 240, UTC).isoformat()
        rig.post(
            "generic",
            {"event": "played", "user": "alex", "item": HEAT_BY_IMDB} | {"watched_at": ahead},
        )
        (play,) = rig.plays()
        assert play["payload"]["at"] == rig.clock()


def test_a_viewing_ended_before_the_clock_is_set_by_years_is_not_played_again_when_it_wakes(
    tmp_path: Path,
) -> None:
    # A board without a real-time clock booted at 1970; its Jellyfin TV finishes an episode
    # and is left paused on the credits. NTP then sets the clock, 54 years forward. Sessions
    # are forgotten after 400 days: by the clock as stamped, this one would be at once.
    clock, uptime = FakeClock(2 * DAY), FakeClock(30.0)
    with running_rig(tmp_path, clock, uptime) as rig:

        def later(seconds: float) -> None:
            clock.advance(seconds)
            uptime.advance(seconds)

        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        later(46 * 60)
        rig.post("jellyfin", jellyfin_progress(97, paused=True))
        later(1.5 * 3600)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        later(60)
        clock.advance(1_700_000_000 - clock())  # time sync answers
        asyncio.run(housekeeping(rig.runtime))  # the hourly round, before the worker's pass
        worker = DeliveryWorker(lambda _: [], rig.runtime.config.delivery)
        asyncio.run(worker.pass_once(rig.runtime))
        later(2 * DAY)
        rig.housekeeping()
        # The TV wakes and reports that viewing again.
        rig.post("jellyfin", jellyfin_progress(97, paused=True))
        later(60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        assert len(rig.plays()) == 1, rig.live()


def test_a_time_goes_out_no_later_than_now_unless_the_clock_is_not_set() -> None:
    now = 1_800_000_000.0
    assert sent_at(now - 60, now) == now - 60
    assert sent_at(now + DAY, now) == now
    # A board booted at 1970 cannot judge a sender's time: it stands.
    assert sent_at(now, 86400.0) == now


def test_a_step_is_seen_either_way_and_time_syncs_slewing_is_not_one() -> None:
    wall, up = FakeClock(1_800_000_000.0), FakeClock(50.0)
    watch = ClockWatch(wall, up)
    first = watch.look()
    for _ in range(100):  # 100 looks 5 minutes apart, the clock slewed 0.5 ms a second
        wall.advance(300.15)
        up.advance(300.0)
        assert watch.look() == first
    assert watch.unhandled() == []
    wall.advance(-STEP - 1)
    back = watch.look()
    wall.advance(2 * DAY)
    ahead = watch.look()
    assert len({first, back, ahead}) == 3
    steps = watch.unhandled()
    assert [(s.frame, s.into, round(s.seconds)) for s in steps] == [
        (first, back, -STEP - 1),
        (back, ahead, 2 * DAY),
    ]
    watch.handled(steps[0])
    assert watch.unhandled() == steps[1:]


def _failing_since(runtime: Runtime) -> list[float]:
    with contextlib.closing(sqlite3.connect(runtime.config.storage.path)) as conn:
        found = conn.execute("SELECT failing_since FROM outbox WHERE failing_since IS NOT NULL")
        return [since for (since,) in found]


async def test_a_step_whose_handling_fails_midway_moves_no_time_twice_when_tried_again(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    clocks: Clocks,
) -> None:
    # A play Trakt does not know fails since now; half an hour later a rate limit holds the
    # profile. Time sync then sets the clock 2 minutes forward.
    play_a_movie_trakt_does_not_know(runtime)
    await worker.pass_once(runtime)
    (failing_since,) = _failing_since(runtime)
    clocks.later(1800)
    trakt.throttle_next(10**6, retry_after=0)
    webhook(runtime, "movie_media_scrobble.json")
    await worker.pass_once(runtime)
    ((_, hold),) = runtime.store.cache_items(PROFILE_HOLDS, clock())
    clocks.step(120)
    # The worker's pass after the step fails on the database (another process holding it,
    # a full disk) once the plays are restamped: the supervisor starts it again.
    with contextlib.closing(sqlite3.connect(runtime.config.storage.path)) as conn:
        conn.execute(
            "CREATE TRIGGER full_disk BEFORE INSERT ON id_cache"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        conn.commit()
        with pytest.raises(sqlite3.DatabaseError):
            await worker.pass_once(runtime)
        conn.execute("DROP TRIGGER full_disk")
        conn.commit()
    await pass_unpaced(worker, runtime)
    assert _failing_since(runtime) == [failing_since + 120]
    ((_, moved),) = runtime.store.cache_items(PROFILE_HOLDS, clock())
    assert moved["since"] == hold["since"] + 120


async def test_a_play_whose_answer_was_lost_before_the_clock_is_set_is_not_played_twice(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    clocks: Clocks,
) -> None:
    # A Pi booted 3 days behind; a film ends, and its play goes out late, dated by that clock:
    # Trakt takes it and the answer is lost.
    webhook(runtime, "movie_media_scrobble.json")
    clocks.later(900)
    trakt.drop_next(1, route="POST /sync/history", after_handler=True)
    await worker.pass_once(runtime)
    (sent,) = trakt.history()
    # Time sync sets the clock; the play's time moves with it, but Trakt holds the one sent.
    clocks.step(3 * DAY)
    _lift_the_pacer(worker)
    await drain(worker, runtime, clock, passes=3, step=301)
    assert trakt.history() == [sent]
    counts = runtime.store.outbox_counts()
    assert counts["done"] == 1 and counts["pending"] == 0


def test_the_uptime_counts_suspended_time_on_linux_and_on_macos() -> None:
    # Linux's CLOCK_MONOTONIC stops while suspended; macOS's counts sleep, its time.monotonic
    # does not (a Mac woken from sleep would see a step of the clock).
    assert uptime_clock("linux") == "CLOCK_BOOTTIME"
    assert uptime_clock("darwin") == "CLOCK_MONOTONIC"
    assert uptime_clock("win32") is None
    assert clocksteps.uptime() > 0  # the clock chosen here reads


async def test_a_clock_set_back_holds_deliveries_beside_a_killed_syncs_claim_no_longer_than_ever(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clocks: Clocks
) -> None:
    # A `watchbridge sync` claimed a play and was killed while the clock ran a day fast; the
    # clock is set right. README: a process killed while it delivered holds the service up 10
    # minutes at most (store.CLAIM_ALIVE), and housekeeping takes its claims back after the
    # lease (store.CLAIM_LEASE): not a day and 10 minutes, a day and half an hour.
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    webhook(runtime, "movie_legacy_imdb_media_scrobble.json", lastViewedAt=int(clocks.clock()))
    (killed,) = runtime.store.claim("cli-killed", clocks.clock(), 10, ["trakt"])
    await worker.pass_once(runtime)  # the service sees the clock as it runs ahead
    clocks.step(-DAY)
    play_a_movie_trakt_does_not_know(runtime)  # another item: it waits for no earlier row
    trakt_learns_the_unknown_movie(trakt)
    await worker.pass_once(runtime)
    clocks.later(11 * 60.0)
    await worker.pass_once(runtime)
    assert [h.item.title for h in trakt.history()] == ["Nobody Knows"]
    clocks.later(30 * 60.0)
    await housekeeping(runtime)
    # Taken back, the killed sync's lone row waits delivery.retry_after, as a killed service's.
    clocks.later(float(runtime.config.delivery.retry_after) + 1)
    await worker.pass_once(runtime)
    assert sorted(h.item.title for h in trakt.history()) == ["Heat", "Nobody Knows"]
    assert all(parse_iso(h.watched_at) <= clocks.clock() for h in trakt.history())
    assert killed.id not in runtime.store.pending_among([killed.id])


async def test_stops_tautulli_sent_before_the_clock_is_set_forward_are_not_days_of_stops(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, clocks: Clocks
) -> None:
    # A Pi booted with the time it saved 3 days ago: two stops of an evening's viewings
    # (Tautulli's Watched not ticked) come before time sync sets the clock, a third after.
    # Three stops within an hour are not "3 stops over 3 days": neither the status line nor
    # the webhooks_stopped alert.
    await worker.pass_once(runtime)  # the service's worker looks at the clock as it starts
    stop = Reports("plex-machine", "Living Room", stops=1)
    for _ in range(2):
        runtime.store.count_tautulli_reports(stop, clock())
        clocks.later(1200)
    clocks.step(3 * DAY)
    await worker.pass_once(runtime)
    runtime.store.count_tautulli_reports(stop, clock())
    (seen,) = runtime.store.tautulli_reports()
    assert seen.stops == 3 and not seen.no_watched
    await check_tautulli_watched(runtime)
    assert not runtime.notifier.raised(ALERT_KIND, seen.key)


async def test_a_lookup_failing_before_the_clock_is_set_forward_still_holds_its_plays_a_day(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, clocks: Clocks
) -> None:
    # Trakt's episode dates of a show fail at a link run while the Pi says yesterday (the
    # time it saved as it shut down); time sync then sets it. An hour of failing is not a day:
    # the show's plays that may be 'watched on release date' marks still wait, not synced as
    # they are dated (a mark copied as a viewing at its air date).
    await worker.pass_once(runtime)
    failing = {"7001": ("Trakt answered 500", ["s1e1"])}
    record, _ = failed_lookups({}, failing, set(), clock())
    runtime.store.mirror_put("trakt", "me", FAILED_LOOKUPS, record, clock())
    clocks.later(1800)
    clocks.step(DAY)
    await worker.pass_once(runtime)
    clocks.later(1800)
    record = runtime.store.mirror_get("trakt", "me", FAILED_LOOKUPS)
    assert waited_out(record, failing, clock()) == frozenset()
    assert lookups_told(record, clock()) == []
    clocks.later(LOOKUP_WAIT)  # a day of failing, by the clock as set: they no longer wait
    assert waited_out(record, failing, clock()) == {"7001"}
