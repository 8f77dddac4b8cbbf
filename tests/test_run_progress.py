"""A long link run says how far it has got: its step, its requests so far and, where the
reader counts them, done of total, recorded at each heartbeat and shown by `/api/status`, the
status page and `watchbridge status` while it goes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.plex import FakePlex
from tests.fakes.serializd import FakeSerializd
from tests.harness import AppThread, until, watchbridge
from tests.test_link_plex_serializd import TICKS, link_config
from watchbridge import readers, statuspage, sync
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime, create_app
from watchbridge.config import Config, load_config
from watchbridge.metrics import Metrics
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

HOUR = 3600.0
LINK = "plex-serializd"
SHOWS = {1396: "Breaking Bad", 1399: "Game of Thrones", 1668: "Friends"}


@pytest.fixture
def plex_and_serializd(start_fake: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Three shows with episodes watched in Plex and none on Serializd; Serializd read
    without pacing, and a heartbeat every 50 ms (a minute in the service)."""
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    monkeypatch.setattr(sync, "HEARTBEAT_EVERY", 0.05)
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    for n, (tmdb, title) in enumerate(SHOWS.items()):
        serializd.add_show(tmdb, title, {1: 10}, season_ids={1: 9000 + n})
        plex.add_show(str(20 + n), title, 2000 + n, [f"tmdb://{tmdb}"])
        for episode in range(1, 4):
            key = f"{n}0{episode}"
            plex.add_episode(key, str(20 + n), 1, episode)
            plex.watch(key, time.time() - 40 * HOUR + episode * HOUR)
    yield plex, serializd


def served_status(config: Config) -> tuple[Any, str]:
    """`/api/status` and the status page, as the service on the same database answers them."""
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        return httpx.get(f"{app.url}/api/status").json(), httpx.get(f"{app.url}/").text


def beat(store: Store) -> float:
    """When the link's run last stamped its heartbeat (0: not begun)."""
    runs = store.last_runs()
    return (runs[0].heartbeat_at or 0.0) if runs else 0.0


def status_line(said: str) -> str:
    (line,) = [line for line in said.splitlines() if line.startswith(f"  {LINK}:")]
    return line


async def test_a_run_shows_its_step_requests_and_how_far_it_has_got_while_it_goes(
    tmp_path: Path, plex_and_serializd: Any
) -> None:
    plex, serializd = plex_and_serializd
    path = link_config(tmp_path, plex, serializd)
    config = load_config(path, {})
    run_store = Store.open(Path(config.storage.path))
    released = serializd.hold_next(TICKS)  # the first season's ticks: while comparing
    run = asyncio.create_task(sync.run_link(config, run_store, LINK, yes=True))
    try:
        method, _, route = TICKS.partition(" ")
        await until(lambda: serializd.count(method, route) > 0)  # its answer held back
        asked_at = time.time()
        await until(lambda: beat(run_store) > asked_at)  # a heartbeat since: the run's step
        api, page = served_status(config)
        said = (await asyncio.to_thread(watchbridge, "status", "--config", str(path))).stdout
        assert not run.done()  # still waiting for the ticks held back
    finally:
        released.set()
    result = await run
    after = (await asyncio.to_thread(watchbridge, "status", "--config", str(path))).stdout
    finished, _ = served_status(config)
    run_store.close()

    (link,) = api["links"]
    progress = link["progress"]
    assert link["outcome"] == "running" and link["counts"] == {}
    assert progress["step"] == "comparing serializd" and progress["profile"] == "alex"
    assert (progress["done"], progress["total"], progress["unit"]) == (0, 3, "shows")
    assert progress["requests"] > 0 and link["api_calls"] == progress["requests"]
    assert progress["text"] == (
        f"comparing serializd for alex: 0 of 3 shows, {progress['requests']} API requests so far"
    )
    line = status_line(said)
    assert "nothing to do" not in line, line
    assert re.fullmatch(
        rf"  {LINK}: running since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC, for \d+s; "
        r"comparing serializd for alex: 0 of 3 shows, \d+ API requests so far "
        r"\(as of \d\d:\d\d:\d\d UTC\)",
        line,
    ), line
    assert "running since " in page and "comparing serializd for alex: 0 of 3 shows" in page

    (done,) = finished["links"]
    assert done["outcome"] == "ok" and done["progress"] is None
    assert done["api_calls"] == result.api_calls and done["counts"] == {"serializd:add_play": 9}
    line = status_line(after)
    assert re.fullmatch(
        rf"  {LINK}: ok at \S+ \S+ UTC \(\d+\.\d s, {result.api_calls} API requests\); "
        r"serializd: 9 play\(s\) queued to add",
        line,
    ), line


async def test_a_finished_run_that_changed_nothing_says_no_changes(
    tmp_path: Path, plex_and_serializd: Any
) -> None:
    plex, serializd = plex_and_serializd
    path = link_config(tmp_path, plex, serializd)
    config = load_config(path, {})
    with Store.open(Path(config.storage.path)) as store:
        await sync.run_link(config, store, LINK, yes=True)
        await sync.run_link(config, store, LINK, yes=True)  # nothing new on either side
    line = status_line(watchbridge("status", "--config", str(path)).stdout)
    assert line.endswith("; nothing to do") and "running" not in line, line
