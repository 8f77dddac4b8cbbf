"""Stopping the service while a scheduled link run goes (`docker stop`, an update in Home
Assistant or Unraid): the stop ends the run at once, not after server.shutdown_timeout, and
the next run goes through as if the stopped one had never begun."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.harness import AppThread
from tests.test_link_plex_serializd import DIARY, setup
from tests.unpaced import unpaced
from watchbridge.app import create_app
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.scheduler import SyncScheduler
from watchbridge.store import Store
from watchbridge.sync import STOPPED, run_link
from watchbridge.wiring import build_runtime, make_targets

LINK = "plex-serializd"
# Seconds: the stop took 8.2 before the fix (shutdown_timeout is 8 s, `docker stop` kills at
# 10 s); the margin is for a loaded machine.
QUICK_STOP = 4.0


def answer_held(serializd: FakeSerializd) -> Callable[[], None]:
    """The run waits for the diary's answer (a slow Serializd); the release, for afterwards."""
    return serializd.hold_next(route=DIARY).set


def rate_limited(serializd: FakeSerializd) -> Callable[[], None]:
    """Serializd asks the run to wait 12 s, under the 15 s the client waits inline."""
    serializd.fail_next(1, 429, headers={"Retry-After": "12"}, route=DIARY)
    return lambda: None


@pytest.fixture(autouse=True)
def unpaced_serializd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serializd's pacing lifted (2 requests a second: the next run's ten plays waited 5 s
    on it): these tests are about the stop, not the pace."""
    unpaced(monkeypatch, "serializd")


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize("waiting", [answer_held, rate_limited])
def test_a_stop_during_a_link_run_ends_it_at_once_and_the_next_run_goes_through(
    tmp_path: Path,
    start_fake: Any,
    caplog: pytest.LogCaptureFixture,
    waiting: Callable[[FakeSerializd], Callable[[], None]],
) -> None:
    path, _, serializd = setup(tmp_path, start_fake)
    config = load_config(path, {})
    release = waiting(serializd)
    runtime = build_runtime(config)
    app = create_app(runtime, tasks=[SyncScheduler(first_delay=0)])
    try:
        with caplog.at_level(logging.INFO), AppThread(app):
            # The scheduled run has asked for the diary, and waits (for its answer, or the
            # 12 s the 429 asked for).
            wait_for(lambda: serializd.count(*DIARY.split()) > 0)
            time.sleep(0.3)
            assert [r.outcome for r in runtime.store.recent_runs(LINK, 10)] == ["running"]
            stopping = time.monotonic()
        took = time.monotonic() - stopping
    finally:
        release()

    assert took < QUICK_STOP, f"the stop took {took:.1f} s"
    said = [r.getMessage() for r in caplog.records]
    assert "background task did not stop in time" not in said, said
    assert "watchbridge stopped" in said
    with Store.open(Path(config.storage.path)) as store:
        runs = store.recent_runs(LINK, 10)
        assert [(r.outcome, r.error) for r in runs] == [("interrupted", STOPPED)]
        assert sum(store.outbox_counts().values()) == 0  # nothing queued by the run cut short
    assert serializd.diary() == []

    # The next start: its first run goes through, and each play is copied once.
    async def next_run() -> None:
        runtime = build_runtime(config)
        runtime.open()
        worker = DeliveryWorker(make_targets, config.delivery)
        worker.targets = {t.name: t for t in make_targets(runtime)}
        try:
            result = await run_link(config, runtime.store, LINK, yes=True)
            assert result.outcome == "ok" and result.queued == 10
            while await worker.pass_once(runtime):
                pass
            assert [r.outcome for r in runtime.store.recent_runs(LINK, 10)] == [
                "ok",
                "interrupted",
            ]
        finally:
            for target in worker.targets.values():
                await target.aclose()
            runtime.close()

    asyncio.run(next_run())
    assert sorted(e.episode_number for e in serializd.diary()) == list(range(1, 11))
