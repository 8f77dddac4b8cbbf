"""A Plex ⇄ AniList link run while no anime mapping list is downloaded (a first start whose
downloads fail, or every dataset switched off): with nothing to tell which AniList title a
play is, it plans nothing (no copy, no removal, no entry listed as unknown), and its run
record, `watchbridge status` and the status page say that it waits for the lists: waiting,
not failed, nor counted toward the link's failures; a scheduled one raises the lists' alert
itself, and runs again at their next try. Over real HTTP: the lists from a local fake that
fails, Plex and AniList from theirs, the link run as `watchbridge sync` or by the service's
scheduler."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets, sample_bodies
from tests.fakes.plex import FakePlex
from tests.fakes.receiver import AlertReceiver
from tests.harness import until, watchbridge
from tests.test_app import runtime_for
from tests.test_link_plex_anilist import link_config
from tests.test_statuspage import needs_named
from watchbridge import anime_data
from watchbridge.anime_data import MISSING_KEY, ListsMissing
from watchbridge.app import Runtime
from watchbridge.causes import MISSING_TITLE, UNREADABLE_TITLE, told_elsewhere
from watchbridge.config import Duration, load_config
from watchbridge.maintenance import DATASETS_TITLE, check_anime_datasets
from watchbridge.scheduler import SyncScheduler
from watchbridge.statuspage import PageState, render
from watchbridge.sync import FAILURES_BEFORE_ALERT, causes_of, failures_in_a_row, run_link
from watchbridge.wiring import build_runtime

DAY = 86400.0
AOT, AOT_P2 = 1429, 131681  # TMDB show; AniList: Final Season Part 2 = TMDB S4E17-28
WAITS = "anime mapping lists are not downloaded yet"
# What the run record says: waiting (not failed), since when and until when.
WAITING = re.compile(
    r"waiting for the anime mapping lists \(download failed at \d\d:\d\d \S+,"
    r" next try (tomorrow )?\d\d:\d\d\)"
)


def setup(tmp_path: Path, start_fake: Any) -> tuple[Path, FakePlex, FakeAniList, FakeDatasets]:
    """AniList's entry at episode 3 of Part 2 (S4E17-19); Plex watched S4E17 only."""
    plex, anilist = start_fake(FakePlex()), start_fake(FakeAniList())
    anilist.limit = anilist.burst_limit = 100_000
    lists = start_fake(FakeDatasets())
    lists.bodies = {}  # every download fails (404) until a test publishes them
    anilist.add_media(AOT_P2, episodes=12)
    anilist.add_entry(AOT_P2, status="CURRENT", progress=3, updated_at=int(time.time() - 3 * DAY))
    plex.add_show("400", "Attack on Titan", 2013, [f"tmdb://{AOT}"])
    for n in range(17, 29):
        plex.add_episode(str(4000 + n), "400", 4, n)
    plex.watch("4017", time.time() - 7 * DAY)
    return link_config(tmp_path, plex, anilist, lists), plex, anilist, lists


def sync(path: Path, *args: str) -> tuple[int, str]:
    result = watchbridge("sync", "--link", "plex-anilist", *args, "--config", str(path))
    return result.returncode, result.stdout + result.stderr


def run(path: Path, *args: str) -> str:
    result = watchbridge(*args, "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def watched(plex: FakePlex) -> list[int]:
    return [n for n in range(17, 29) if plex.user_state(str(4000 + n)).get("viewCount")]


def test_a_link_run_without_the_lists_waits_for_them_and_says_so(
    tmp_path: Path, start_fake: Any
) -> None:
    path, plex, anilist, lists = setup(tmp_path, start_fake)

    code, out = sync(path)

    # A wait, not an error (a cron job mails no failure): one plain line, exit code 0.
    assert code == 0 and "plex-anilist: waiting for the anime mapping lists" in out, out
    assert WAITS in out and "error" not in out, out
    assert watched(plex) == [17] and anilist.snapshot()[AOT_P2]["progress"] == 3
    assert "anilist:131681" not in run(path, "anime", "unmatched")  # not taken as unknown
    status = run(path, "status")
    assert WAITS in status and "plex-anilist: waiting at" in status, status
    assert WAITING.search(status), status
    runtime = runtime_for(path)
    runtime.open()
    try:
        (last,) = runtime.store.recent_runs("plex-anilist", 5)
        assert last.outcome == "waiting" and failures_in_a_row([last]) == 0
        page = render(PageState(runtime.config, runtime.store.status()), time.time())
    finally:
        runtime.close()
    assert WAITING.search(page) and 'bad">waiting' not in page  # told, not shown as a problem
    assert not [text for _, text in needs_named(page) if "plex-anilist" in text]

    lists.bodies = sample_bodies()  # the hosts serve again: the link syncs as on a first run
    run(path, "anime", "refresh")  # as the message says (or the service's next try)
    code, out = sync(path)
    assert code == 0, out
    assert watched(plex) == [17, 18, 19]
    assert anilist.snapshot()[AOT_P2]["progress"] == 3


def test_a_link_whose_datasets_are_all_switched_off_removes_nothing(
    tmp_path: Path, start_fake: Any
) -> None:
    path, plex, anilist, lists = setup(tmp_path, start_fake)
    lists.bodies = sample_bodies()
    assert sync(path)[0] == 0
    assert watched(plex) == [17, 18, 19]
    text = path.read_text()
    for url in lists.urls().values():
        text = text.replace(f'"{url}"', '""')
    path.write_text(text)

    code, out = sync(path, "--full")

    assert code != 0 and "switched off" in out, out
    assert watched(plex) == [17, 18, 19] and anilist.snapshot()[AOT_P2]["progress"] == 3
    assert "holds removals" not in run(path, "status")


@pytest.mark.anyio
async def test_the_waiting_link_is_told_by_the_lists_alert_not_its_own(
    tmp_path: Path, start_fake: Any
) -> None:
    """While the lists' alert is open, the link's "keeps failing" alert would say it again."""
    path, _, _, _ = setup(tmp_path, start_fake)
    runtime = runtime_for(path)
    runtime.open()
    try:
        with pytest.raises(ListsMissing) as failed:
            await run_link(runtime.config, runtime.store, "plex-anilist")
    finally:
        runtime.close()

    def lists_alert_open(kind: str, key: str) -> bool:
        return (kind, key) == ("service_unreachable", MISSING_KEY)

    assert told_elsewhere(causes_of(failed.value), lists_alert_open)


@pytest.mark.anyio
async def test_a_scheduled_run_waiting_for_the_lists_raises_their_alert_not_the_links(
    tmp_path: Path, start_fake: Any, receiver: AlertReceiver
) -> None:
    """Nothing waits for AniList (no play queued): the waiting link raises the lists' alert
    at once, one alert however many runs wait, and its waits are no failures: no "keeps
    failing" alert, none counted."""
    path, _, _, _ = setup(tmp_path, start_fake)
    path.write_text(f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n' + path.read_text())
    config = load_config(path, {})
    link = dataclasses.replace(config.links["plex-anilist"], interval=Duration(0.1))
    runtime = build_runtime(dataclasses.replace(config, links={"plex-anilist": link}))
    runtime.open()
    stop = asyncio.Event()
    scheduled = asyncio.create_task(SyncScheduler(first_delay=0).run(runtime, stop))
    try:
        await until(lambda: len(runtime.store.recent_runs("plex-anilist", 10)) >= 5)
        await until(lambda: bool(receiver.messages))
    finally:
        stop.set()
        await scheduled
    try:
        runs = runtime.store.recent_runs("plex-anilist", 100)
        outcomes = {r.outcome for r in runs} - {"interrupted"}  # the one the stop cut short
        assert outcomes == {"waiting"} and failures_in_a_row(runs) == 0
    finally:
        runtime.close()
    assert receiver.titles() == [MISSING_TITLE]


@pytest.mark.anyio
async def test_a_scheduled_link_waiting_for_the_lists_runs_again_at_their_next_try(
    tmp_path: Path, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its interval is half an hour: once the lists' hosts serve again, the link syncs at
    their next try (5 minutes; here shortened), not an interval later."""
    monkeypatch.setattr(anime_data, "MISSING_RETRY", 0.5)
    path, _, _, lists = setup(tmp_path, start_fake)
    runtime = build_runtime(load_config(path, {}))
    runtime.open()
    stop = asyncio.Event()
    scheduled = asyncio.create_task(SyncScheduler(first_delay=0).run(runtime, stop))
    try:
        await until(lambda: last_outcome(runtime) == "waiting")
        lists.bodies = sample_bodies()
        await until(lambda: last_outcome(runtime) == "ok", timeout=10)
    finally:
        stop.set()
        await scheduled
        runtime.close()


def last_outcome(runtime: Runtime) -> str | None:
    runs = runtime.store.recent_runs("plex-anilist", 1)
    return runs[0].outcome if runs else None


def test_lists_downloaded_but_unreadable_fail_the_link_not_wait(
    tmp_path: Path, start_fake: Any
) -> None:
    """Copies on disk that give no mapping (each unreadable: damaged, or a format this
    release cannot read) are no download to wait for: the run fails, and is counted, so the
    link's alert tells of it. Before, it was recorded as waiting for lists "not downloaded
    yet", not counted, and no alert told of it (the downloads went through): the link never
    synced again, silently."""
    path, plex, _, lists = setup(tmp_path, start_fake)
    lists.bodies = sample_bodies()
    run(path, "anime", "refresh")
    data = anime_data.from_config(load_config(path, {}))
    for name in data.urls:
        data.path(name).write_text("not a mapping list", encoding="utf-8")
    runtime = runtime_for(path)
    runtime.open()
    try:
        with pytest.raises(ListsMissing) as failed:
            asyncio.run(run_link(runtime.config, runtime.store, "plex-anilist"))
        (last,) = runtime.store.recent_runs("plex-anilist", 5)
    finally:
        runtime.close()
    assert not isinstance(failed.value, anime_data.ListsNotYet)
    assert last.outcome == "failed" and failures_in_a_row([last]) == 1
    assert "not downloaded yet" not in failed.value.message, failed.value.message
    assert "could not be read" in failed.value.message, failed.value.message
    assert watched(plex) == [17]


def damage_lists(path: Path) -> None:
    """Every copy on disk replaced by text no dataset format reads."""
    data = anime_data.from_config(load_config(path, {}))
    for name in data.urls:
        data.path(name).write_text("not a mapping list", encoding="utf-8")


def with_alerts(path: Path, receiver: AlertReceiver) -> None:
    path.write_text(f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n' + path.read_text())


@pytest.mark.anyio
async def test_a_scheduled_run_on_unreadable_lists_raises_their_alert_at_once(
    tmp_path: Path, start_fake: Any, receiver: AlertReceiver
) -> None:
    """Nothing waits for AniList (no play queued): before, the runs told nothing of the
    lists (the link's "keeps failing" alert came at the third run, the lists' alert at the
    hourly check, up to an hour on). The first run raises the lists' alert itself: once
    however many runs fail, and one alert with the hourly check's (one condition); the
    link's stays quiet, and the lists' resolves as before once they can be read."""
    path, _, _, lists = setup(tmp_path, start_fake)
    lists.bodies = sample_bodies()
    await asyncio.to_thread(run, path, "anime", "refresh")
    damage_lists(path)
    with_alerts(path, receiver)
    config = load_config(path, {})
    link = dataclasses.replace(config.links["plex-anilist"], interval=Duration(0.1))
    runtime = build_runtime(dataclasses.replace(config, links={"plex-anilist": link}))
    runtime.open()
    try:
        stop = asyncio.Event()
        scheduled = asyncio.create_task(SyncScheduler(first_delay=0).run(runtime, stop))
        runs = FAILURES_BEFORE_ALERT + 2
        try:
            await until(lambda: len(runtime.store.recent_runs("plex-anilist", 10)) >= runs)
        finally:
            stop.set()
            await scheduled
        failed = runtime.store.recent_runs("plex-anilist", 100)
        assert failures_in_a_row(failed) >= FAILURES_BEFORE_ALERT  # still failures, counted
        assert receiver.titles() == [UNREADABLE_TITLE]
        (alert,) = receiver.messages
        assert "watchbridge anime refresh" in alert["message"], alert["message"]
        assert "anibridge:" in alert["message"], alert["message"]  # each dataset's problem

        await check_anime_datasets(runtime)  # the hourly check: the same alert, no second
        assert receiver.titles() == [UNREADABLE_TITLE]

        await asyncio.to_thread(run, path, "anime", "refresh")  # as the alert says
        await check_anime_datasets(runtime)
        assert receiver.titles() == [UNREADABLE_TITLE, f"Resolved: {UNREADABLE_TITLE}"]
        synced = await run_link(runtime.config, runtime.store, "plex-anilist")
        assert synced.outcome == "ok" and synced.queued  # S4E18-19 for Plex
    finally:
        runtime.close()


def test_watchbridge_sync_on_unreadable_lists_says_so_and_raises_their_alert(
    tmp_path: Path, start_fake: Any, receiver: AlertReceiver
) -> None:
    """From cron: the run fails saying what to do, and the lists' alert is raised once (the
    run's and the check after it are one condition), kept for the service to remind of."""
    path, plex, _, lists = setup(tmp_path, start_fake)
    lists.bodies = sample_bodies()
    run(path, "anime", "refresh")
    damage_lists(path)
    with_alerts(path, receiver)

    code, out = sync(path)

    assert code != 0, out
    assert "the anime mapping lists on disk could not be read" in out, out
    assert "watchbridge anime refresh" in out, out
    assert receiver.titles() == [UNREADABLE_TITLE]
    runtime = runtime_for(path)
    runtime.open()
    try:
        assert runtime.notifier.raised("service_unreachable", MISSING_KEY)
    finally:
        runtime.close()
    assert watched(plex) == [17]


def scheduled(path: Path) -> Runtime:
    """The service's runtime with the link run every tenth of a second."""
    config = load_config(path, {})
    link = dataclasses.replace(config.links["plex-anilist"], interval=Duration(0.1))
    return build_runtime(dataclasses.replace(config, links={"plex-anilist": link}))


@pytest.mark.anyio
async def test_a_scheduled_run_reading_the_lists_again_resolves_their_alert(
    tmp_path: Path, start_fake: Any, receiver: AlertReceiver
) -> None:
    """Nothing waits for AniList (no delivery to resolve it): the first run that reads the
    lists once they are downloaded again sends the "Resolved" notice, not the hourly check
    up to an hour on (none runs here)."""
    path, plex, _, lists = setup(tmp_path, start_fake)
    lists.bodies = sample_bodies()
    await asyncio.to_thread(run, path, "anime", "refresh")
    damage_lists(path)
    with_alerts(path, receiver)
    runtime = scheduled(path)
    runtime.open()
    stop = asyncio.Event()
    task = asyncio.create_task(SyncScheduler(first_delay=0).run(runtime, stop))
    try:
        await until(lambda: receiver.titles() == [UNREADABLE_TITLE])
        await asyncio.to_thread(run, path, "anime", "refresh")  # as the alert says
        await until(lambda: len(receiver.titles()) >= 2)
        await until(lambda: last_outcome(runtime) == "ok")
    finally:
        stop.set()
        await task
        runtime.close()
    assert receiver.titles() == [UNREADABLE_TITLE, f"Resolved: {UNREADABLE_TITLE}"]
    assert "AniList deliveries go on" in receiver.messages[1]["message"]
    assert watched(plex) == [17]  # the run queued S4E18-19 for Plex; no worker delivers here


@pytest.mark.anyio
async def test_a_scheduled_run_once_the_lists_download_resolves_their_alert_only(
    tmp_path: Path, start_fake: Any, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Downloads failing, then all but one list downloads: the run reading them resolves the
    "not downloaded yet" alert at once. The one list still missing leaves them out of date:
    that alert stays the hourly check's to raise, not the run's."""
    monkeypatch.setattr(anime_data, "MISSING_RETRY", 0.5)
    path, _, _, lists = setup(tmp_path, start_fake)
    with_alerts(path, receiver)
    runtime = scheduled(path)
    runtime.open()
    stop = asyncio.Event()
    task = asyncio.create_task(SyncScheduler(first_delay=0).run(runtime, stop))
    try:
        await until(lambda: receiver.titles() == [MISSING_TITLE])
        lists.bodies = {k: v for k, v in sample_bodies().items() if k != "kometa"}
        await until(lambda: len(receiver.titles()) >= 2)
        await until(lambda: last_outcome(runtime) == "ok")
        await asyncio.sleep(0.5)  # more runs: none raises the out-of-date alert
        assert receiver.titles() == [MISSING_TITLE, f"Resolved: {MISSING_TITLE}"]
    finally:
        stop.set()
        await task
    try:
        await check_anime_datasets(runtime)  # the hourly check
    finally:
        runtime.close()
    assert receiver.titles()[2:] == [DATASETS_TITLE], receiver.titles()
    assert "kometa" in receiver.messages[2]["message"]
