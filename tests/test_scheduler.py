"""Scheduled link runs: they sync on their own, and a link that keeps failing says so."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, User
from tests.harness import quick_refresh_race, sign_in_trakt, until
from tests.unpaced import unpaced_while
from watchbridge import scheduler
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime
from watchbridge.config import Duration, parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.guard import BEFORE_CONFIRMING
from watchbridge.maintenance import refresh_trakt_sign_ins
from watchbridge.scheduler import REPORT_GRACE, SyncScheduler
from watchbridge.services.serializd import REFUSED as SERIALIZD_REFUSED
from watchbridge.store import RUN_LEASE, Store, SyncRun
from watchbridge.sync import (
    FAILURES_BEFORE_ALERT,
    STOPPED,
    LinkBusy,
    failures_in_a_row,
    report_held,
    report_run,
    review_wait,
    run_link,
)
from watchbridge.wiring import build_runtime, make_targets


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    the scheduler's runs and alerts, not the services' pace."""
    with unpaced_while("trakt", "serializd"):
        yield


pytestmark = pytest.mark.anyio


def runtime_for(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    interval: float,
    first_run: str = "apply",
    more_profiles: str = "",
    kinds: str = "[history, ratings]",
    busy_timeout: float = 5.0,
) -> Runtime:
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}, busy_timeout: {busy_timeout}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
{more_profiles}
links:
  ts: {{services: [trakt, serializd], first_run: {first_run}, kinds: {kinds}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    link = dataclasses.replace(config.links["ts"], interval=Duration(interval))
    config = dataclasses.replace(config, links={"ts": link})
    runtime = build_runtime(quick_refresh_race(config))
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=time.time())
    return runtime


@contextlib.asynccontextmanager
async def scheduled(runtime: Runtime, deliver: bool = False) -> AsyncIterator[None]:
    """The scheduler (and with `deliver`, the delivery worker) running on `runtime` for the
    block; then both stop and the runtime closes."""
    stop = asyncio.Event()
    runs = [SyncScheduler(first_delay=0).run(runtime, stop)]
    if deliver:
        worker = DeliveryWorker(make_targets, runtime.config.delivery)
        runtime.on_enqueued.append(worker.notify)
        runs.append(worker.run(runtime, stop))
    tasks = [asyncio.create_task(run) for run in runs]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        runtime.close()


@pytest.fixture
def fakes(start_fake: Any) -> tuple[FakeTrakt, FakeSerializd, AlertReceiver]:
    return link_fakes(start_fake)


def link_fakes(start_fake: Any) -> tuple[FakeTrakt, FakeSerializd, AlertReceiver]:
    """Trakt and Serializd knowing Breaking Bad's first season, s1e4 in the diary, and the
    alert receiver, for `runtime_for`'s link ts."""
    trakt, serializd, receiver = (
        start_fake(FakeTrakt()),
        start_fake(FakeSerializd()),
        start_fake(AlertReceiver()),
    )
    trakt.add_show("Breaking Bad", 2008, tmdb=1396, seasons={1: 7})
    serializd.add_show(1396, "Breaking Bad", seasons={1: 7})
    serializd.log_entry(None, 1396, 1, 4, backdate="2024-01-04T20:00:00.000Z")
    return trakt, serializd, receiver


async def test_a_scheduled_run_syncs_the_link(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
    async with scheduled(runtime, deliver=True):
        await until(lambda: [(h.item.season, h.item.number) for h in trakt.history()] == [(1, 4)])


async def test_a_link_failing_three_times_alerts_once(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    serializd.fail_next(100, 404, body="<html>Not Found</html>")
    async with scheduled(runtime):
        await until(lambda: any("keeps failing" in t for t in receiver.titles()))
        await asyncio.sleep(0.3)
        assert sum("keeps failing" in t for t in receiver.titles()) == 1  # throttled
        runs = runtime.store.db.execute("SELECT outcome, error FROM sync_runs").fetchall()
        assert {r[0] for r in runs} <= {"failed", "running"} and ("failed",) in [
            r[:1] for r in runs
        ]


async def test_scheduled_runs_are_counted_by_link_and_result(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    serializd.fail_next(2, 404, body="<html>Not Found</html>")  # two runs fail, then all is well
    async with scheduled(runtime):
        await until(lambda: counted(runtime, "failed") and counted(runtime, "ok"))


async def test_a_link_that_syncs_again_after_a_failing_streak_sends_the_recovery_notice(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    # Each of the first three runs fails at its first Serializd request (the sign-in).
    serializd.fail_next(3, 404, body="<html>Not Found</html>")
    async with scheduled(runtime):
        await until(lambda: any(t.startswith("Resolved:") for t in receiver.titles()))
        await asyncio.sleep(0.3)  # later successful runs resolve nothing more
        assert receiver.titles() == [
            "watchbridge: link ts keeps failing",
            "Resolved: watchbridge: link ts keeps failing",
        ]


async def test_a_link_failing_before_a_restart_gets_its_recovery_notice_after_it(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    serializd.fail_next(1000, 404, body="<html>Not Found</html>")
    async with scheduled(runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)):
        await until(lambda: any("keeps failing" in t for t in receiver.titles()))
    serializd.clear_knobs()  # the box restarts; Serializd is fine again meanwhile
    async with scheduled(runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)):
        await until(lambda: any(t.startswith("Resolved:") for t in receiver.titles()))
    assert receiver.titles() == [
        "watchbridge: link ts keeps failing",
        "Resolved: watchbridge: link ts keeps failing",
    ]


async def test_failures_on_both_sides_of_restarts_count_towards_the_alert(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    # A daily link on a box that restarts more often than that: one failed run per start.
    trakt, serializd, receiver = fakes
    serializd.fail_next(1000, 404, body="<html>Not Found</html>")
    for restart in range(FAILURES_BEFORE_ALERT):
        runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
        async with scheduled(runtime):
            await until(lambda n=restart, r=runtime: failed_runs(r) > n)
            if restart == FAILURES_BEFORE_ALERT - 1:  # told before the stop (a stop cuts it)
                await until(lambda: receiver.titles() == ["watchbridge: link ts keeps failing"])


def failed_runs(runtime: Runtime) -> int:
    return sum(run.outcome == "failed" for run in runtime.store.recent_runs("ts", 100))


async def test_a_failure_is_reported_even_when_the_run_history_cannot_be_read(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "wb.db")
    store.close()  # the database is what failed
    alerts = Notifier(parse_config("{}", Path("watchbridge.yaml"), {}).alerts)
    assert await report_run(store, alerts, "ts", "database is locked") == 1


async def test_a_link_failing_for_weeks_is_told_with_every_failed_run_and_since_when(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    store = Store.open(tmp_path / "wb.db")
    for hour in range(30):  # a run an hour, each failed
        run_id = store.start_run("ts", hour * 3600.0)
        assert run_id is not None
        store.finish_run(run_id, hour * 3600.0 + 60, "failed", {}, 1, "Serializd: 404")
    config = parse_config(f"alerts: {{urls: ['{receiver.apprise_url}']}}", Path("w.yaml"), {})
    assert await report_run(store, Notifier(config.alerts), "ts", "Serializd: 404") == 30
    store.close()
    (body,) = [m["message"] for m in receiver.messages]
    # The reason, which carries the fix, first: a phone shows the start.
    assert body == "Serializd: 404\n(30 runs in a row failed since 1970-01-01 00:00 UTC)"


async def test_a_run_meeting_a_database_another_process_holds_logs_one_line(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = runtime_for(tmp_path, *fakes, interval=3600, busy_timeout=0.2)
    holder = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a `watchbridge sync`, a sqlite3 shell
    try:
        with caplog.at_level(logging.WARNING, logger="watchbridge.scheduler"):
            async with scheduled(runtime):
                await until(
                    lambda: any(r.getMessage() == "sync run failed" for r in caplog.records)
                )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (failed, *_) = [r for r in caplog.records if r.getMessage() == "sync run failed"]
    assert failed.exc_info is None
    assert "stayed locked by another process" in failed.__dict__["reason"]


async def test_a_run_stopped_by_a_shutdown_is_recorded_as_interrupted_not_failed(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
    trakt.delay_next(100, 5.0)  # mid-read when the service stops
    task = asyncio.create_task(run_link(runtime.config, runtime.store, "ts", clock=time.time))
    await until(lambda: runtime.store.recent_runs("ts", 1) != [])
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    runs = runtime.store.recent_runs("ts", 10)
    runtime.close()
    assert [run.outcome for run in runs] == ["interrupted"]
    assert "CancelledError" not in (runs[0].error or "")
    assert failures_in_a_row(runs) == 0


async def test_a_run_stopped_while_the_database_is_busy_is_recorded_without_holding_the_loop(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    """The stop lands while another process writes (a `watchbridge sync` from cron, a
    backup): the run's "interrupted" record waits for the database in a thread, not on the
    event loop (webhooks are answered meanwhile), and is in by the time the run is over, also
    when the shutdown cancels the run once more while it waits (server.shutdown_timeout ran
    out): the store closes right after."""
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
    trakt.delay_next(100, 5.0)  # mid-read when the service stops
    task = asyncio.create_task(run_link(runtime.config, runtime.store, "ts", clock=time.time))
    await until(lambda: runtime.store.recent_runs("ts", 1) != [])
    await asyncio.sleep(0.3)
    holder = sqlite3.connect(tmp_path / "wb.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    letting_go = threading.Timer(1.0, holder.execute, ("ROLLBACK",))  # a second later
    letting_go.start()
    ticks: list[float] = []

    async def ticking() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(ticking())
    try:
        task.cancel()
        await asyncio.sleep(0.2)
        task.cancel()  # the shutdown's own cancel, while the record waits for the database
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.closing(sqlite3.connect(tmp_path / "wb.db")) as look:  # as it is over
            runs = look.execute("SELECT outcome, error FROM sync_runs").fetchall()
    finally:
        ticker.cancel()
        letting_go.join()
        holder.close()
        runtime.close()
    longest = max(later - earlier for earlier, later in itertools.pairwise(ticks))
    assert longest < 0.4, f"the event loop was held {longest:.2f} s"
    assert runs == [("interrupted", STOPPED)]


async def test_a_run_left_alive_by_a_killed_process_delays_the_link_only_until_its_lease_ends(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver], monkeypatch: Any
) -> None:
    monkeypatch.setattr(scheduler, "BUSY_MARGIN", 0.1)
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
    with runtime.store.transaction() as conn:  # its heartbeat's lease ends a second from now
        conn.execute(
            "INSERT INTO sync_runs (link, started_at, heartbeat_at) VALUES ('ts', ?, ?)",
            (time.time() - 600, time.time() - RUN_LEASE + 1),
        )
    async with scheduled(runtime, deliver=True):
        await until(lambda: [(h.item.season, h.item.number) for h in trakt.history()] == [(1, 4)])
        outcomes = [run.outcome for run in runtime.store.recent_runs("ts", 10)]
    assert "failed" in outcomes  # the dead run, closed when the next one started


async def test_list_titles_a_scheduled_run_cannot_sync_are_logged_once(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt, serializd, receiver = fakes
    serializd.add_show(424242, "Unknown To Trakt", seasons={1: 3})
    serializd.add_to_watchlist(None, 424242)
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    link = dataclasses.replace(runtime.config.links["ts"], kinds=["history", "watchlist"])
    runtime.config = dataclasses.replace(runtime.config, links={"ts": link})
    with caplog.at_level("WARNING", logger="watchbridge.scheduler"):
        async with scheduled(runtime):
            await until(lambda: len(runtime.store.recent_runs("ts", 10)) >= 3)
    logged = [r for r in caplog.records if r.getMessage() == "list titles not synced"]
    assert len(logged) == 1 and "Unknown To Trakt" in logged[0].titles  # type: ignore[attr-defined]


async def test_a_scheduled_first_run_logs_the_plays_it_takes_for_one_viewing(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No `watchbridge sync` output to list them (`first_run: apply`): the log names them.
    trakt, serializd, receiver = fakes
    (show,) = trakt.shows
    episode = show.episode(1, 4)
    assert episode is not None
    trakt.add_history(episode, "2024-01-01T20:00:00.000Z")  # logged on Serializd 3 days on
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
    told = "first sync took plays days apart for one viewing"
    with caplog.at_level(logging.INFO, logger="watchbridge.scheduler"):
        async with scheduled(runtime):
            await until(lambda: any(r.getMessage().startswith(told) for r in caplog.records))
    (logged,) = [r for r in caplog.records if r.getMessage().startswith(told)]
    assert logged.plays == (  # type: ignore[attr-defined]
        "episode:tmdb:1396:s1e4 trakt 2024-01-01 20:00 UTC ~ serializd 2024-01-04 20:00 UTC"
    )


async def test_held_removals_are_told_even_when_the_runs_watchlist_part_fails(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    a_trakt_play_an_hour_ago(trakt)
    page = "/api/user/{username}/watchlistpage_v2/{page}"
    serializd.fail_next(100_000, 403, body={"message": "Nope"}, route=page)
    runtime = runtime_for(
        tmp_path, trakt, serializd, receiver, interval=0.2, kinds="[history, watchlist]"
    )
    async with scheduled(runtime, deliver=True):
        await until(lambda: len(trakt.history()) == 2 and len(serializd.diary()) == 2)
        remove_it_on_trakt(trakt)
        await until(lambda: any("holds removals" in t for t in receiver.titles()))
        await until(lambda: "--confirm-removals" in (runtime.store.last_runs()[0].error or ""))


def test_failures_in_a_row_pass_over_runs_that_say_nothing_of_the_link() -> None:
    def run(outcome: str, error: str | None = None) -> SyncRun:
        return SyncRun(0, "ts", 0.0, 1.0, outcome, {}, 0, error)

    newest_first = [run("failed"), run("interrupted"), run("ok", "watchlist: 502"),
                    run("dry-run"), run("failed"), run("ok"), run("failed")]  # fmt: skip
    assert failures_in_a_row(newest_first) == 3
    assert failures_in_a_row([run("needs-review", "review the plan"), run("ok")]) == 0
    # A held run went through; its error is what waits for the user (with the command).
    held = run("held", "me: 2 of 2 plays ... confirm with `watchbridge sync --confirm-removals`")
    assert failures_in_a_row([run("failed"), held, held, run("failed")]) == 1


def a_trakt_play_an_hour_ago(trakt: FakeTrakt) -> None:
    """s1e1 on Trakt, beside the diary's s1e4: once synced, each side has both plays."""
    recent = time.strftime("%Y-%m-%dT%H:%M:00.000Z", time.gmtime(time.time() - 3600))
    with trakt.lock:
        trakt.add_history(trakt.shows[0].seasons[1].episodes[1], recent)


def remove_it_on_trakt(trakt: FakeTrakt) -> None:
    """The user removes s1e1 on Trakt: half of Serializd's plays, so the link holds it."""
    with trakt.lock:
        trakt.user.history = [h for h in trakt.user.history if h.item.number != 1]
        trakt._touch(trakt.user, "episodes.watched_at")


async def until_a_removal_is_held(
    trakt: FakeTrakt, serializd: FakeSerializd, receiver: AlertReceiver
) -> None:
    """Both plays on both sides, then the user removes one on Trakt: the alert comes."""
    await until(lambda: len(trakt.history()) == 2 and len(serializd.diary()) == 2)
    remove_it_on_trakt(trakt)
    await until(lambda: any("holds removals" in t for t in receiver.titles()))


async def test_a_scheduled_run_holding_removals_alerts_with_the_confirming_command(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    a_trakt_play_an_hour_ago(trakt)
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    async with scheduled(runtime, deliver=True):
        await until_a_removal_is_held(trakt, serializd, receiver)
        held = next(m for m in receiver.messages if "holds removals" in str(m.get("title")))
        # This link's only: without --link it would confirm every link's held removals.
        assert "`watchbridge sync --link ts --confirm-removals`" in str(held.get("message"))
        assert len(serializd.diary()) == 2  # nothing removed


async def confirm_removals(runtime: Runtime) -> None:
    while True:  # the scheduler's own run may hold the link for a moment
        with contextlib.suppress(LinkBusy):
            await run_link(runtime.config, runtime.store, "ts", confirm_removals=True)
            return
        await asyncio.sleep(0.05)


async def test_held_removals_once_confirmed_send_the_resolved_notice(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    a_trakt_play_an_hour_ago(trakt)
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    async with scheduled(runtime, deliver=True):
        await until_a_removal_is_held(trakt, serializd, receiver)
        await confirm_removals(runtime)  # `watchbridge sync --confirm-removals`
        await until(lambda: "Resolved: watchbridge: link ts holds removals" in receiver.titles())


async def test_a_first_run_waiting_for_review_alerts_with_the_review_command(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 0.05, first_run="dry-run")
    async with scheduled(runtime):
        await until(lambda: bool(receiver.messages))
        await asyncio.sleep(0.3)
    (alert,) = receiver.messages  # throttled: once
    assert alert["title"] == "watchbridge: link ts waits for your review"
    assert "`watchbridge sync --link ts --dry-run`" in str(alert["message"])


# Seconds: the stop above took 4.0 before its fix (Apprise's wait for the hanging host).
QUICK_STOP = 2.0


async def test_a_stop_cuts_short_an_alert_on_its_way_after_a_run_and_the_next_start_sends_it(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    """The notification host hangs (Apprise waits its 10 s) as the run's alert goes out, and
    the service stops: the stop does not wait for it (server.shutdown_timeout is 8 s), and the
    alert is kept for the next start, which sends it."""
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 3600, first_run="dry-run")
    answering = receiver.hold_next()
    try:
        async with scheduled(runtime):
            await until(lambda: bool(receiver.messages))  # on its way, its answer held
            stopping = time.monotonic()
        took = time.monotonic() - stopping
    finally:
        answering.set()
    assert took < QUICK_STOP, f"the stop took {took:.1f} s"

    later = build_runtime(runtime.config)
    later.open()
    try:
        assert later.notifier.unsent("sync_failing", "ts:review")
        await later.notifier.send_unsent()
    finally:
        later.close()
    titles = receiver.titles()
    assert titles == ["watchbridge: link ts waits for your review"] * 2, titles


async def test_a_stop_lets_an_alert_answered_within_a_moment_go_out_once(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    """The notification host answers a little late as the service stops: the alert is sent,
    not cut short and sent again by the next start."""
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 3600, first_run="dry-run")
    answering = receiver.hold_next()
    async with scheduled(runtime):
        await until(lambda: bool(receiver.messages))  # on its way, its answer held
        asyncio.get_running_loop().call_later(REPORT_GRACE / 4, answering.set)

    later = build_runtime(runtime.config)
    later.open()
    try:
        assert not later.notifier.unsent("sync_failing", "ts:review")
    finally:
        later.close()
    assert receiver.titles() == ["watchbridge: link ts waits for your review"]


async def test_a_run_waiting_for_the_review_of_a_kind_new_to_the_link_logs_what_it_waits_for(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 3600, kinds="[history]")
    async with scheduled(runtime, deliver=True):  # plays only, long synced
        await until(lambda: len(trakt.history()) == 1)
    serializd.log_entry(None, 1396, 1, 4, backdate="2024-01-04T20:00:00.000Z", rating=8)
    runtime = runtime_for(
        tmp_path, trakt, serializd, receiver, 0.1, first_run="dry-run", kinds="[history, ratings]"
    )
    with caplog.at_level(logging.WARNING, logger="watchbridge.scheduler"):
        async with scheduled(runtime):
            await until(lambda: any("waits for" in r.getMessage() for r in caplog.records))
            await until(lambda: any("review" in m["title"] for m in receiver.messages))
    (waits, *_) = [r.getMessage() for r in caplog.records if "waits for" in r.getMessage()]
    assert waits == (
        "sync waits for a review of the first sync of ratings, new in the link's kinds"
    )
    # Its plays go on syncing meanwhile: the alert does not say it copies nothing.
    alert = next(m for m in receiver.messages if "review" in m["title"])
    assert alert["message"].startswith(
        "Link ts copies no ratings between Trakt and Serializd for profile me until you review"
        " what it would write (the rest goes on syncing): see it with `watchbridge sync --link"
        " ts --dry-run`"
    ), alert["message"]


def test_what_a_run_waits_for_names_a_first_run_and_new_kinds_apart() -> None:
    assert review_wait({"me": frozenset()}) == "a first-run review"
    assert review_wait({"me": frozenset(), "bob": frozenset({"watchlist", "ratings"})}) == (
        "a first-run review and a review of the first sync of ratings and watchlist, new in "
        "the link's kinds"
    )


BOB = ("bob@example.com", "bobs password", "bob_tv")
WITH_BOB = f"""
  bob:
    accounts:
      trakt: {{}}
      serializd: {{email: {BOB[0]}, password: "{BOB[1]}"}}
"""


async def test_a_profile_added_later_waits_for_its_review_without_stopping_the_others(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    bob_serializd = serializd.add_user(*BOB)
    serializd.log_entry(bob_serializd, 1396, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 3600, first_run="dry-run")
    await run_link(runtime.config, runtime.store, "ts", yes=True)  # me's reviewed first run
    runtime.close()

    runtime = runtime_for(
        tmp_path, trakt, serializd, receiver, 0.1, first_run="dry-run", more_profiles=WITH_BOB
    )
    sign_in_trakt(runtime.store, trakt, "bob", now=time.time(), user=trakt.add_user("bob"))
    serializd.log_entry(None, 1396, 1, 5, backdate="2024-01-05T20:00:00.000Z")  # me watches
    async with scheduled(runtime, deliver=True):
        await until(lambda: (1, 5) in [(h.item.season, h.item.number) for h in trakt.history()])
        await until(lambda: bool(receiver.messages))
        bob_rows = runtime.store.db.execute("SELECT COUNT(*) FROM outbox WHERE profile = 'bob'")
        assert bob_rows.fetchone()[0] == 0  # bob's first plan waits for the review
    assert "first sync of links.ts for bob" in str(receiver.messages[0]["message"])


async def test_held_removals_are_alerted_while_another_profile_waits_for_review(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    a_trakt_play_an_hour_ago(trakt)
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    async with scheduled(runtime, deliver=True):  # me synced long ago
        await until(lambda: len(trakt.history()) == 2 and len(serializd.diary()) == 2)
    bob_serializd = serializd.add_user(*BOB)
    serializd.log_entry(bob_serializd, 1396, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    runtime = runtime_for(
        tmp_path, trakt, serializd, receiver, 0.2, first_run="dry-run", more_profiles=WITH_BOB
    )
    sign_in_trakt(runtime.store, trakt, "bob", now=time.time(), user=trakt.add_user("bob"))
    remove_it_on_trakt(trakt)
    async with scheduled(runtime, deliver=True):
        await until(lambda: "watchbridge: link ts holds removals" in receiver.titles())
        assert "watchbridge: link ts waits for your review" in receiver.titles()
        assert len(serializd.diary()) == 2  # held, not removed


async def test_a_run_where_one_profile_fails_beside_anothers_review_is_counted_as_failed(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    async with scheduled(runtime):  # me synced long ago
        await until(lambda: counted(runtime, "ok"))
    bob_serializd = serializd.add_user(*BOB)  # bob joins: his first run waits for review
    serializd.log_entry(bob_serializd, 1396, 1, 2, backdate="2024-01-02T20:00:00.000Z")
    runtime = runtime_for(
        tmp_path, trakt, serializd, receiver, 0.05, first_run="dry-run", more_profiles=WITH_BOB
    )
    sign_in_trakt(runtime.store, trakt, "bob", now=time.time(), user=trakt.add_user("bob"))
    trakt.revoke_tokens(trakt.user)  # me's sign-in lapses
    async with scheduled(runtime):
        await until(lambda: counted(runtime, "failed"))  # as the run history says
        assert not counted(runtime, "needs-review")


def counted(runtime: Runtime, result: str) -> bool:
    """Whether the `ts` link's scheduled runs have counted one with `result`."""
    return (runs_counted(runtime, result) or 0) >= 1


def runs_counted(runtime: Runtime, result: str) -> float | None:
    """The `ts` link's scheduled runs counted with `result`, as /metrics serves it (None: no
    such series)."""
    line = f'watchbridge_sync_runs_total{{link="ts",result="{result}"}} '
    for served in runtime.metrics.render().decode().splitlines():
        if served.startswith(line):
            return float(served.removeprefix(line))
    return None


async def test_a_links_failed_runs_are_served_at_0_before_the_first(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    # A series that first appears at 1 is no increase to Prometheus: an alert on failed runs
    # would miss the first failure after each start.
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    async with scheduled(runtime):
        await until(lambda: counted(runtime, "ok"))
        assert runs_counted(runtime, "failed") == 0


async def test_every_profiles_held_removals_go_out_in_one_alert(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=3600)
    held = ["me: 1 of 2 serializd plays", "bob: 1 of 2 serializd plays"]
    await report_held(runtime.notifier, "ts", held)
    (alert,) = receiver.messages
    assert alert["message"].split("\n\n")[1] == "\n".join([*held, BEFORE_CONFIRMING])
    runtime.close()


async def test_an_unforeseen_failure_logs_its_traceback_once_per_streak(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    runtime.store.set_cursor("trakt", "me", "link:ts", "{damaged", time.time())  # not JSON
    with caplog.at_level("DEBUG", logger="watchbridge.scheduler"):  # each run's line
        async with scheduled(runtime):
            await until(lambda: failed_runs(runtime) >= 3)
    failed = [r for r in caplog.records if r.getMessage() == "sync run failed"]
    assert len(failed) >= 3 and "JSONDecodeError" in failed[0].reason  # type: ignore[attr-defined]
    assert [r.exc_info is not None for r in failed[:3]] == [True, False, False]


async def test_a_link_failing_on_a_bug_alerts_that_it_is_one_and_where_its_traceback_is(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    runtime.store.set_cursor("trakt", "me", "link:ts", "{damaged", time.time())  # not JSON
    async with scheduled(runtime):
        await until(lambda: any("keeps failing" in t for t in receiver.titles()))
    (body,) = [m["message"] for m in receiver.messages if "keeps failing" in m["title"]]
    # What it is and what to do within what a phone shows; the bug's text only in the log.
    assert body[:100] == (
        "an unexpected error in watchbridge (JSONDecodeError), a bug: the log's `sync run failed`"
        " line has it"
    )
    assert "please report it" in body and "Expecting" not in body


async def test_a_bug_in_a_streak_of_failures_keeps_its_traceback(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A service failing (foreseen, told), then a bug: the streak did not start with the bug,
    # and "sync run failed" was told lately, but the bug's traceback is what a fix needs.
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 0.05)
    trakt.fail_next(1000, 400, body={"error": "bad request"})
    with caplog.at_level("INFO", logger="watchbridge.scheduler"):
        async with scheduled(runtime):
            await until(lambda: failed_runs(runtime) >= 1)
            runtime.store.set_cursor("trakt", "me", "link:ts", "{damaged", time.time())
            trakt.clear_knobs()
            await until(lambda: failed_runs(runtime) >= 4)
    failed = [r for r in caplog.records if r.getMessage() == "sync run failed"]
    assert failed[0].exc_info is None  # the foreseen failure: no traceback
    bugs = [r for r in failed if r.exc_info]
    assert len(bugs) == 1 and bugs[0].levelname == "WARNING"  # once in the streak
    assert "JSONDecodeError" in bugs[0].reason  # type: ignore[attr-defined]


def me_and_bob(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> tuple[Runtime, User]:
    """The link for me (a Trakt play an hour old) and bob, run every 0.2 s; bob's Trakt user."""
    trakt, serializd, receiver = fakes
    serializd.add_user(*BOB)
    a_trakt_play_an_hour_ago(trakt)
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, 0.2, more_profiles=WITH_BOB)
    bob = trakt.add_user("bob")
    sign_in_trakt(runtime.store, trakt, "bob", now=time.time(), user=bob)
    return runtime, bob


async def until_me_holds_a_removal(fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]) -> None:
    trakt, serializd, receiver = fakes
    await until(lambda: len(trakt.history()) == 2 and len(serializd.diary()) == 2)
    remove_it_on_trakt(trakt)  # me: 1 of 2 plays, held
    await until(lambda: "watchbridge: link ts holds removals" in receiver.titles())


async def test_the_held_removals_alert_stays_while_the_holding_profile_cannot_be_read(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime, _ = me_and_bob(tmp_path, fakes)
    async with scheduled(runtime, deliver=True):
        await until_me_holds_a_removal(fakes)
        trakt.revoke_tokens(trakt.user)  # me's sign-in lapses; bob syncs on
        await until(lambda: failed_runs(runtime) >= 2, timeout=60)
    assert "Resolved: watchbridge: link ts holds removals" not in receiver.titles()
    assert len(serializd.diary()) == 2


async def test_confirmed_removals_resolve_the_alert_while_a_profile_holding_none_is_unread(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime, bob = me_and_bob(tmp_path, fakes)
    async with scheduled(runtime, deliver=True):
        await until_me_holds_a_removal(fakes)
        trakt.revoke_tokens(bob)  # bob's sign-in lapses; he holds nothing
        await until(lambda: failed_runs(runtime) >= 1, timeout=60)
        await confirm_removals(runtime)
        for wake in runtime.on_enqueued:
            wake()
        await until(lambda: len(serializd.diary()) == 1, timeout=30)
        resolved = "Resolved: watchbridge: link ts holds removals"
        await until(lambda: resolved in receiver.titles(), timeout=30)


async def test_a_hold_is_logged_as_a_warning_once_while_it_lasts(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt, serializd, receiver = fakes
    a_trakt_play_an_hour_ago(trakt)
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.2)
    with caplog.at_level("WARNING", logger="watchbridge.scheduler"):
        async with scheduled(runtime, deliver=True):
            await until_a_removal_is_held(trakt, serializd, receiver)
            runs = len(runtime.store.recent_runs("ts", 100))
            await until(lambda: len(runtime.store.recent_runs("ts", 100)) >= runs + 2)
    logged = [r for r in caplog.records if r.getMessage().startswith("sync holds removals")]
    assert len(logged) == 1 and "--link ts --confirm-removals" in logged[0].held  # type: ignore[attr-defined]


async def test_a_link_failing_run_after_run_logs_a_line_as_it_begins_and_one_as_it_ends(
    tmp_path: Path,
    fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt, serializd, receiver = fakes
    runtime = runtime_for(tmp_path, trakt, serializd, receiver, interval=0.05)
    serializd.fail_next(100_000, 400)  # Serializd refusing for weeks; the link runs on
    with caplog.at_level("INFO", logger="watchbridge.scheduler"):
        async with scheduled(runtime):
            await until(lambda: failed_runs(runtime) >= 5)
            told = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert told.count("sync run failed") == 1  # then once an hour
            serializd.clear_knobs()  # Serializd is back
            await until(
                lambda: any(r.getMessage() == "sync runs work again" for r in caplog.records)
            )
    (over,) = [r for r in caplog.records if r.getMessage() == "sync runs work again"]
    assert over.times >= 5  # type: ignore[attr-defined]


TRAKT_SIGN_IN_PAUSED = "watchbridge: Trakt sign-in needed (profile me)"
TOKEN_LIFE = 7 * 86400.0  # what FakeTrakt gives


def two_trakt_links(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, receiver: AlertReceiver
) -> Runtime:
    """`me`'s history and ratings synced by a link each (`ts`, `tr`), both reading Trakt; its
    Trakt sign-in run out (an idle week), so the housekeeping renews it."""
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  ts: {{services: [trakt, serializd], first_run: apply, kinds: [history]}}
  tr: {{services: [trakt, serializd], first_run: apply, kinds: [ratings]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    links = {n: dataclasses.replace(ln, interval=Duration(0.05)) for n, ln in config.links.items()}
    runtime = build_runtime(quick_refresh_race(dataclasses.replace(config, links=links)))
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=time.time() - TOKEN_LIFE - 3600)
    return runtime


def runs_of(runtime: Runtime, link: str, outcome: str) -> int:
    return sum(run.outcome == outcome for run in runtime.store.recent_runs(link, 100))


async def test_a_revoked_sign_in_failing_two_links_is_one_alert_and_one_resolved(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = two_trakt_links(tmp_path, trakt, serializd, receiver)
    trakt.revoke_tokens()  # the user removed the app on Trakt
    await refresh_trakt_sign_ins(runtime)  # the housekeeping tells of it
    assert receiver.titles() == [TRAKT_SIGN_IN_PAUSED]
    async with scheduled(runtime):
        # Each link fails on the same sign-in, past the runs a "keeps failing" alert waits for.
        await until(
            lambda: all(
                runs_of(runtime, link, "failed") > FAILURES_BEFORE_ALERT for link in ("ts", "tr")
            )
        )
        assert receiver.titles() == [TRAKT_SIGN_IN_PAUSED]  # not once more per link
        sign_in_trakt(runtime.store, trakt, "me", now=time.time())  # `watchbridge auth trakt`
        await until(lambda: all(runs_of(runtime, link, "ok") for link in ("ts", "tr")))
        await refresh_trakt_sign_ins(runtime)  # the next housekeeping round
    assert receiver.titles() == [TRAKT_SIGN_IN_PAUSED, f"Resolved: {TRAKT_SIGN_IN_PAUSED}"]


async def test_a_link_failing_for_another_cause_than_an_open_alert_tells_its_own(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = two_trakt_links(tmp_path, trakt, serializd, receiver)
    trakt.revoke_tokens()
    await refresh_trakt_sign_ins(runtime)
    # Signed in again, the housekeeping not round yet: its alert is still open, while
    # Serializd now refuses every request.
    sign_in_trakt(runtime.store, trakt, "me", now=time.time())
    serializd.fail_next(100_000, 400)
    async with scheduled(runtime):
        await until(lambda: "watchbridge: link ts keeps failing" in receiver.titles())
        await until(lambda: "watchbridge: link tr keeps failing" in receiver.titles())
    assert receiver.titles()[0] == TRAKT_SIGN_IN_PAUSED


async def test_a_revoked_sign_in_met_first_by_links_raises_its_one_alert_and_one_resolved(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = two_trakt_links(tmp_path, trakt, serializd, receiver)
    # No delivery waits and no housekeeping round came yet: the links meet the cause first.
    trakt.revoke_tokens()
    async with scheduled(runtime):
        await until(
            lambda: all(
                runs_of(runtime, link, "failed") > FAILURES_BEFORE_ALERT for link in ("ts", "tr")
            )
        )
        assert receiver.titles() == [TRAKT_SIGN_IN_PAUSED]  # the delivery's alert, raised once
        (told,) = receiver.messages
        assert told["message"].endswith("run `watchbridge auth trakt --profile me`")  # the fix
        sign_in_trakt(runtime.store, trakt, "me", now=time.time())  # `watchbridge auth trakt`
        await until(lambda: all(runs_of(runtime, link, "ok") for link in ("ts", "tr")))
        await refresh_trakt_sign_ins(runtime)  # the next housekeeping round: nothing left to say
    assert receiver.titles() == [TRAKT_SIGN_IN_PAUSED, f"Resolved: {TRAKT_SIGN_IN_PAUSED}"]


async def test_a_sign_in_a_link_raised_is_over_once_a_run_reads_with_it_again(
    tmp_path: Path, fakes: tuple[FakeTrakt, FakeSerializd, AlertReceiver]
) -> None:
    trakt, serializd, receiver = fakes
    runtime = two_trakt_links(tmp_path, trakt, serializd, receiver)
    sign_in_trakt(runtime.store, trakt, "me", now=time.time())
    paused = "watchbridge: Serializd sign-in needed (profile me)"
    user = serializd.users[ALICE[0].lower()]
    user.password = "changed on the website"
    serializd.expire_tokens()
    async with scheduled(runtime):
        # No play is delivered to Serializd, and no housekeeping signs it in: the links'
        # runs are the only ones to end the alert they raised.
        await until(lambda: receiver.titles() == [paused])
        user.password = ALICE[1]  # made right again on the website ...
        runtime.store.cache_forget(SERIALIZD_REFUSED)  # ... and its refusal's hours are over
        await until(lambda: receiver.titles() == [paused, f"Resolved: {paused}"])
        await until(lambda: all(runs_of(runtime, link, "ok") for link in ("ts", "tr")))
    assert receiver.titles() == [paused, f"Resolved: {paused}"]


async def test_since_when_a_link_keeps_failing_is_told_on_the_households_clock(
    tmp_path: Path, receiver: AlertReceiver, time_zone: Callable[[str], None]
) -> None:
    time_zone("America/New_York")
    store = Store.open(tmp_path / "wb.db")
    for hour in range(3):
        run_id = store.start_run("ts", 1_790_000_000.0 + hour * 3600.0)
        assert run_id is not None
        store.finish_run(run_id, 1_790_000_060.0 + hour * 3600.0, "failed", {}, 1, "x")
    config = parse_config(f"alerts: {{urls: ['{receiver.apprise_url}']}}", Path("w.yaml"), {})
    assert await report_run(store, Notifier(config.alerts), "ts", "x") == 3
    store.close()
    (body,) = [m["message"] for m in receiver.messages]
    assert body == "x\n(3 runs in a row failed since 2026-09-21 10:13 EDT)"
