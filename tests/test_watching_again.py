"""Auto-play's next episode stays "watching" on Trakt when the stop of the one before is
delivered a moment after its start: Trakt ends any item's watching on a pause or stop, so
the start goes again (deliver.watching)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import FakeTrakt
from tests.test_delivery import runtime as runtime  # fixtures: the service, its Trakt
from tests.test_delivery import storage_settings as storage_settings
from tests.test_delivery import trakt as trakt
from tests.test_delivery import two_people, webhook
from tests.test_delivery import worker as worker
from watchbridge.app import Runtime
from watchbridge.deliver.watching import RESTART_WITHIN, SentStart, to_send_again
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.model import Ids, MediaRef
from watchbridge.services.trakt import READ_TIMEOUT_SECONDS

pytestmark = pytest.mark.anyio

DURATION_MS = 3_315_000  # the samples' episode length
BREAKING_BAD = 81189  # the samples' show (TheTVDB)


def episode(runtime: Runtime, event: str, number: int, profile: str = "me", **more: Any) -> None:
    """Plex's webhook `media.{event}` of Breaking Bad S5E`number`."""
    webhook(
        runtime,
        f"episode_legacy_media_{event}.json",
        profile,
        ratingKey=str(73_140 + number),
        guid=f"com.plexapp.agents.thetvdb://{BREAKING_BAD}/5/{number}?lang=en",
        index=number,
        title=f"Episode {number}",
        **more,
    )


def at(percent: float) -> int:
    """A Plex viewOffset at `percent` of the episode."""
    return int(DURATION_MS * percent / 100)


@pytest.fixture(autouse=True)
def breaking_bad(trakt: FakeTrakt, clock: FakeClock) -> None:
    trakt.advance(clock() - trakt.now())  # one time on both sides
    trakt.add_show("Breaking Bad", 2008, tvdb=BREAKING_BAD, seasons={5: 16})


def numbers(watching: Any) -> tuple[int, int] | None:
    return None if watching is None else (watching.item.season, watching.item.number)


async def next_one_started(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, trakt: FakeTrakt
) -> tuple[float, float]:
    """E15 is watched and E16 auto-plays; E16's start is delivered before E15's stop comes.
    Returns E16's progress as Trakt took it, and its watching's end."""
    episode(runtime, "play", 15, viewOffset=at(50))
    await worker.pass_once(runtime)
    clock.advance(600)
    trakt.advance(600)
    episode(runtime, "play", 16, viewOffset=at(2))
    await worker.pass_once(runtime)
    started = trakt.watching("sean")
    assert started is not None and numbers(started) == (5, 16)
    clock.advance(0.3)  # Jellyfin's handlers post the two events 50-500 ms apart
    trakt.advance(0.3)
    return started.progress, started.expires_at


@pytest.mark.parametrize(
    ("event", "offset"),
    [("stop", at(40)), ("pause", at(40)), ("scrobble", None)],
    ids=["stop at 40 %", "pause", "completion"],
)
async def test_the_stop_of_the_episode_before_delivered_after_the_next_ones_start_keeps_it(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    event: str,
    offset: int | None,
) -> None:
    progress, _ = await next_one_started(runtime, worker, clock, trakt)
    episode(runtime, event, 15, **({"viewOffset": offset} if offset is not None else {}))
    await worker.pass_once(runtime)
    watching = trakt.watching("sean")
    assert numbers(watching) == (5, 16)
    assert watching is not None and watching.progress == progress  # as it was sent
    assert trakt.count("POST", "/scrobble/start") == 3
    plays = [(h.item.season, h.item.number) for h in trakt.history("sean")]
    assert plays == ([(5, 15)] if event == "scrobble" else [])
    assert runtime.store.outbox_counts()["done"] == 3


@pytest.mark.parametrize("landed", [True, False], ids=["stop landed", "stop not landed"])
async def test_a_stop_timing_out_after_the_next_ones_start_shows_the_next_one_watching(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock, landed: bool
) -> None:
    # E15's completion goes a moment after E16's start and gets no answer in time: if Trakt
    # took it, it ended E16's watching, so the start goes again (as after a stop answered);
    # the stop itself waits, marked, and Trakt's history is read before it is ever sent again.
    await next_one_started(runtime, worker, clock, trakt)
    http = worker.targets["trakt"].client.http  # type: ignore[attr-defined]
    http._client.timeout = httpx.Timeout(0.2)  # READ_TIMEOUT_SECONDS, shortened for the test
    if landed:
        trakt.delay_next(1, 0.5, route="POST /scrobble/stop")  # taken, answered too late
    else:
        trakt.drop_next(1, route="POST /scrobble/stop")  # cut before Trakt's writes
    episode(runtime, "scrobble", 15)
    delivering = asyncio.create_task(worker.pass_once(runtime))
    await until_sent(trakt, "POST", "/scrobble/stop")
    clock.advance(READ_TIMEOUT_SECONDS)  # the wait for the answer, on our clock
    trakt.advance(READ_TIMEOUT_SECONDS)
    await delivering
    assert numbers(trakt.watching("sean")) == (5, 16)
    assert trakt.count("POST", "/scrobble/start") == 3
    for _ in range(3):
        clock.advance(600)
        trakt.advance(600)
        await worker.pass_once(runtime)
    assert [(h.item.season, h.item.number) for h in trakt.history("sean")] == [(5, 15)]
    assert trakt.count("POST", "/scrobble/stop") == 1  # the retry looked, then added once
    assert runtime.store.outbox_counts()["pending"] == 0


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not landed"])
@pytest.mark.parametrize("event", ["pause", "stop"], ids=["pause", "stop at 30 %"])
@pytest.mark.parametrize("then", [15, 16], ids=["same episode resumed", "next episode"])
async def test_a_pause_whose_answer_is_lost_holds_nothing_and_the_next_start_goes_at_once(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    landed: bool,
    event: str,
    then: int,
) -> None:
    # A pause (a stop under 80 % is one on Trakt) changes no history: sending it again, or
    # not once a newer start went, is harmless; holding Trakt for it kept that start waiting.
    episode(runtime, "play", 15, viewOffset=at(10))
    await worker.pass_once(runtime)
    clock.advance(600)
    trakt.advance(600)
    trakt.drop_next(1, route="POST /scrobble/pause", after_handler=landed)
    episode(runtime, event, 15, viewOffset=at(30))
    await worker.pass_once(runtime)
    assert not worker.holds
    clock.advance(1)
    trakt.advance(1)
    episode(runtime, "play", then, viewOffset=at(31 if then == 15 else 2))
    await worker.pass_once(runtime)
    assert numbers(trakt.watching("sean")) == (5, then)
    for _ in range(3):
        clock.advance(60)
        trakt.advance(60)
        await worker.pass_once(runtime)
    assert numbers(trakt.watching("sean")) == (5, then)  # no pause sent again after it
    assert trakt.history("sean") == []
    assert runtime.store.outbox_counts()["pending"] == 0
    assert not runtime.store.dead_letters()


async def test_a_pause_whose_answer_is_lost_goes_again_when_nothing_follows_it(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    episode(runtime, "play", 15, viewOffset=at(10))
    await worker.pass_once(runtime)
    clock.advance(600)
    trakt.advance(600)
    trakt.drop_next(1, route="POST /scrobble/pause")  # cut before Trakt's writes
    episode(runtime, "pause", 15, viewOffset=at(30))
    await worker.pass_once(runtime)
    assert trakt.playback("sean") == []
    for _ in range(3):
        clock.advance(60)
        trakt.advance(60)
        await worker.pass_once(runtime)
    assert [(p.item.number, p.progress) for p in trakt.playback("sean")] == [(15, 30.0)]
    assert trakt.watching("sean") is None
    assert runtime.store.outbox_counts()["pending"] == 0


async def until_sent(trakt: FakeTrakt, method: str, path: str) -> None:
    while trakt.count(method, path) == 0:
        await asyncio.sleep(0.01)


async def test_the_start_is_not_sent_again_when_the_stop_of_the_one_before_comes_later(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    # Longer after the start than auto-play's two posts may be apart: no part of it.
    await next_one_started(runtime, worker, clock, trakt)
    clock.advance(RESTART_WITHIN)
    episode(runtime, "stop", 15, viewOffset=at(40))
    await worker.pass_once(runtime)
    assert trakt.watching("sean") is None
    assert trakt.count("POST", "/scrobble/start") == 2


@pytest.mark.parametrize("event", ["pause", "stop"])
async def test_a_start_ended_by_its_own_episode_is_not_sent_again(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock, event: str
) -> None:
    await next_one_started(runtime, worker, clock, trakt)
    episode(runtime, event, 16, viewOffset=at(3))  # E16 itself: paused, or stopped
    await worker.pass_once(runtime)
    assert trakt.watching("sean") is None
    assert trakt.count("POST", "/scrobble/start") == 2


async def test_a_start_paused_since_is_not_sent_again_by_a_stop_of_another_episode(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    await next_one_started(runtime, worker, clock, trakt)
    episode(runtime, "pause", 16, viewOffset=at(3))
    await worker.pass_once(runtime)
    clock.advance(0.3)
    episode(runtime, "stop", 15, viewOffset=at(40))
    await worker.pass_once(runtime)
    assert trakt.watching("sean") is None
    assert trakt.count("POST", "/scrobble/start") == 2


async def test_a_stop_of_one_profile_sends_no_start_of_another_profiles_episode(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with two_people(tmp_path, trakt, receiver, clock) as (runtime, worker):
        episode(runtime, "play", 15, viewOffset=at(50))  # me
        await worker.pass_once(runtime)
        episode(runtime, "play", 16, profile="you", viewOffset=at(2))
        await worker.pass_once(runtime)
        clock.advance(0.3)
        episode(runtime, "stop", 15, viewOffset=at(40))  # me, a moment later
        await worker.pass_once(runtime)
        assert trakt.watching("sean") is None
        assert numbers(trakt.watching("bob")) == (5, 16)
        assert trakt.count("POST", "/scrobble/start") == 2


async def test_both_in_one_batch_send_the_start_last_and_once(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    episode(runtime, "play", 15, viewOffset=at(50))
    await worker.pass_once(runtime)
    clock.advance(10)  # E15's start is within the window still: its own stop ends it
    trakt.advance(10)
    episode(runtime, "play", 16, viewOffset=at(2))
    episode(runtime, "stop", 15, viewOffset=at(40))
    await worker.pass_once(runtime)
    assert numbers(trakt.watching("sean")) == (5, 16)
    scrobbles = [r.path for r in trakt.requests if r.path.startswith("/scrobble/")]
    assert scrobbles == ["/scrobble/start", "/scrobble/pause", "/scrobble/start"]


async def test_a_start_sent_again_that_fails_leaves_the_stop_delivered(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    await next_one_started(runtime, worker, clock, trakt)
    trakt.fail_next(1, 502, route="POST /scrobble/start")
    episode(runtime, "stop", 15, viewOffset=at(40))
    await worker.pass_once(runtime)
    assert trakt.count("POST", "/scrobble/start") == 3  # tried once, not again
    assert runtime.store.outbox_counts()["done"] == 3
    assert not runtime.store.dead_letters() and not receiver.messages
    clock.advance(60)
    await worker.pass_once(runtime)
    assert trakt.count("POST", "/scrobble/start") == 3


E15, E16 = (MediaRef("episode", show_ids=Ids(tvdb="81189"), season=5, number=n) for n in (15, 16))


def test_a_start_sent_after_now_is_not_sent_again() -> None:
    # The clock was set back since it went: its age is unknown.
    assert to_send_again(SentStart(E16, 2.0, 1000.0), E15, 999.0) is None
    assert to_send_again(SentStart(E16, 2.0, 1000.0), E15, 1000.0) == SentStart(E16, 2.0, 1000.0)


def test_a_start_named_by_other_ids_of_the_stopped_episode_is_its_own() -> None:
    by_tmdb = MediaRef("episode", Ids(tmdb="62161"), show_ids=Ids(tmdb="1396"), season=5, number=15)
    both = MediaRef(
        "episode", Ids(tmdb="62161"), show_ids=Ids(tvdb="81189", tmdb="1396"), season=5, number=15
    )
    assert to_send_again(SentStart(by_tmdb, 2.0, 1000.0), both, 1001.0) is None
