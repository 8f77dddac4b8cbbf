"""One run of a link at a time, across processes: a lease with a heartbeat in the run history."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import LINK, Rig, open_rig, use_fast_readers
from watchbridge import sync
from watchbridge.alerts import Notifier
from watchbridge.config import Config, Duration, Secret
from watchbridge.errors import WatchbridgeError
from watchbridge.scheduler import SyncScheduler
from watchbridge.store import DIED, RUN_LEASE, Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def rig(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    use_fast_readers(monkeypatch)
    trakt: FakeTrakt = start_fake(FakeTrakt())
    serializd: FakeSerializd = start_fake(FakeSerializd())
    rig = open_rig(tmp_path, trakt, serializd)
    yield rig
    asyncio.run(rig.aclose())


def test_a_second_start_is_refused_while_the_first_run_is_alive(store: Store) -> None:
    assert store.start_run("ts", 100.0) is not None
    assert store.start_run("ts", 100.0 + RUN_LEASE - 1) is None


def test_runs_of_different_links_do_not_exclude_each_other(store: Store) -> None:
    assert store.start_run("ts", 100.0) is not None
    assert store.start_run("pt", 100.0) is not None


def test_a_heartbeat_keeps_the_lease(store: Store) -> None:
    run = store.start_run("ts", 100.0)
    assert run is not None
    store.heartbeat_run(run, 100.0 + RUN_LEASE)
    assert store.start_run("ts", 100.0 + RUN_LEASE + 1) is None


def test_a_run_whose_process_died_is_closed_as_failed(store: Store) -> None:
    dead = store.start_run("ts", 100.0)
    assert store.start_run("ts", 100.0 + RUN_LEASE + 1) not in (None, dead)
    closed = store.db.execute("SELECT outcome, error FROM sync_runs WHERE id = ?", [dead])
    assert tuple(closed.fetchone()) == ("failed", DIED)


async def test_a_sync_is_refused_while_another_process_runs_the_link(rig: Rig) -> None:
    started = time.time()
    rig.store.start_run(LINK, started)  # another process's live run
    with pytest.raises(WatchbridgeError, match="another sync of this link is still running"):
        await rig.sync()
    ends = datetime.fromtimestamp(started + RUN_LEASE, UTC).strftime("%H:%M UTC")
    with pytest.raises(
        WatchbridgeError, match=f"if it was stopped mid-run, it counts as over at {ends}"
    ):
        await rig.sync()  # a `kill -9`ed run ends there
    assert rig.trakt.requests == [] and rig.serializd.requests == []


async def test_a_long_run_stamps_its_heartbeat(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "HEARTBEAT_EVERY", 0.05)
    rig.trakt.delay_next(1, 0.5)  # the run's first request answers slowly
    await rig.sync()
    started, beat, finished = tuple(
        rig.store.db.execute(
            "SELECT started_at, heartbeat_at, finished_at FROM sync_runs"
        ).fetchone()
    )
    assert started < beat <= finished


async def test_a_lease_renewal_that_fails_is_tried_again_at_the_next_beat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "HEARTBEAT_EVERY", 0.05)
    store = Store.open(tmp_path / "wb.db", busy_timeout=0.01)
    run = store.start_run(LINK, 100.0)
    assert run is not None
    other = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a `watchbridge` command holds the write lock
    beats = asyncio.create_task(sync._heartbeat(store, run, time.time))
    await asyncio.sleep(0.3)  # each stamp meanwhile fails: "database is locked"
    other.execute("ROLLBACK")
    await asyncio.sleep(0.3)
    beats.cancel()
    (beat,) = store.db.execute("SELECT heartbeat_at FROM sync_runs WHERE id = ?", [run]).fetchone()
    assert beat is not None and beat > 100.0
    other.close()
    store.close()


def three_runs_killed(rig: Rig, receiver: AlertReceiver) -> tuple[Config, Notifier]:
    """Three runs killed before their end (out of memory on a big first read, say): none
    ended to say so. Returns the rig's config and a notifier alerting `receiver`."""
    alerts = dataclasses.replace(rig.runtime.config.alerts, urls=[Secret(receiver.apprise_url)])
    started = time.time() - 4 * RUN_LEASE
    for n in range(3):
        rig.store.start_run(LINK, started + n * (RUN_LEASE + 1))
    return dataclasses.replace(rig.runtime.config, alerts=alerts), Notifier(alerts)


async def test_runs_killed_before_their_end_three_times_in_a_row_are_alerted(
    rig: Rig, start_fake: Callable[[Any], Any]
) -> None:
    receiver: AlertReceiver = start_fake(AlertReceiver())
    config, notifier = three_runs_killed(rig, receiver)
    await sync.run_link(config, rig.store, LINK, yes=True, alerts=notifier)
    assert receiver.titles() == [f"watchbridge: link {LINK} keeps failing"]
    assert "give the container more memory" in str(receiver.messages[0]["message"])


async def test_a_run_killed_before_its_end_is_told_in_the_log_without_alert_urls(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.store.start_run(LINK, time.time() - 2 * RUN_LEASE)
    await sync.run_link(rig.runtime.config, rig.store, LINK, yes=True, alerts=rig.runtime.notifier)
    told = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in told] == ["the last sync run was killed before its end"]


async def test_a_run_stopped_while_its_start_tells_of_killed_runs_is_closed_as_interrupted(
    rig: Rig, start_fake: Callable[[Any], Any]
) -> None:
    receiver: AlertReceiver = start_fake(AlertReceiver())
    config, notifier = three_runs_killed(rig, receiver)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(sync.run_link(config, rig.store, LINK, yes=True, alerts=notifier))
    receiver.refuse_next(lambda: loop.call_soon_threadsafe(task.cancel))  # Ctrl-C meanwhile
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.store.recent_runs(LINK, 1)[0].outcome == "interrupted"


async def test_the_scheduler_skips_a_busy_link_without_counting_a_failure(
    rig: Rig, start_fake: Callable[[Any], Any]
) -> None:
    receiver: AlertReceiver = start_fake(AlertReceiver())
    runtime = rig.runtime
    link = dataclasses.replace(runtime.config.links[LINK], interval=Duration(0.02))
    alerts = dataclasses.replace(runtime.config.alerts, urls=[Secret(receiver.apprise_url)])
    runtime.config = dataclasses.replace(runtime.config, links={LINK: link}, alerts=alerts)
    runtime.notifier = Notifier(alerts)
    rig.store.start_run(LINK, time.time())  # a `watchbridge sync` in another process
    stop = asyncio.Event()
    task = asyncio.create_task(SyncScheduler(first_delay=0).run(runtime, stop))
    await asyncio.sleep(0.5)  # ~25 scheduled attempts
    stop.set()
    await task
    assert receiver.titles() == []
    assert rig.trakt.requests == []


async def test_a_sync_refused_beside_a_running_one_says_when_on_the_households_clock(
    rig: Rig, time_zone: Callable[[str], None]
) -> None:
    # It said "it counts as over at 14:18 UTC" to a household whose clock read 10:18.
    time_zone("America/New_York")
    started = time.time()
    rig.store.start_run(LINK, started)
    ends = datetime.fromtimestamp(started + RUN_LEASE, ZoneInfo("America/New_York"))
    with pytest.raises(WatchbridgeError, match=f"it counts as over at {ends:%H:%M %Z}"):
        await rig.sync()
