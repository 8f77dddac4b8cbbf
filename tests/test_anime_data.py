"""Anime mapping datasets on disk: downloaded from (fake) upstream, cached, refreshed on a
schedule, and still used when a refresh fails."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fakes.anime_datasets import PATHS, FakeDatasets, sample_bodies
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import watchbridge, write_config
from watchbridge import anime_data
from watchbridge.anime import EpisodeRef, Unmatched
from watchbridge.anime_data import (
    MISSING_RETRY,
    RETRY_FAILED,
    SEEN_REFRESH,
    AnimeData,
    UnmatchedRecord,
    clear_unmatched,
    from_config,
    group_unmatched,
    link_source,
    note_unmatched,
    note_unmatched_entries,
    note_unmatched_plays,
    unmatched_records,
)
from watchbridge.causes import MISSING_TITLE
from watchbridge.config import load_config
from watchbridge.deliver.anilist import NAME, SKIPPED
from watchbridge.errors import ConfigError
from watchbridge.http import HttpClient, RetryPolicy
from watchbridge.maintenance import check_anime_datasets
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.statuspage import page_state, render
from watchbridge.store import Store
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

DAY = 86400.0


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeDatasets:
    server = start_fake(FakeDatasets())
    assert isinstance(server, FakeDatasets)
    return server


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient("anime-datasets", "", retry=RetryPolicy(attempts=2, backoff=0.01))
    yield client
    await client.aclose()


def make_data(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock, **kwargs: object
) -> AnimeData:
    return AnimeData(
        tmp_path / "anime-datasets",
        urls=fake.urls(),
        refresh=DAY,
        clock=clock,
        http=http,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_first_use_downloads_every_dataset_and_maps(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    index = await data.index()
    assert index.loaded == ("anibridge", "kometa", "fribb", "animelists")
    ref = index.episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef) and (ref.show, ref.season, ref.number) == (65942, 1, 41)
    assert {s.name: s.rows for s in data.status()} == {
        "anibridge": 18,
        "kometa": 19,
        "fribb": 18,
        "animelists": 18,
    }
    # The anibridge release download answers with a redirect first, like GitHub does.
    assert fake.count("GET", PATHS["anibridge"]) == 1


async def test_no_download_before_the_refresh_interval(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    sent = len(fake.requests)
    clock.advance(DAY - 60)
    await data.index()
    assert len(fake.requests) == sent


async def test_a_due_refresh_asks_with_the_etag_and_keeps_an_unchanged_copy(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    fetched = {s.name: s.fetched_at for s in data.status()}
    clock.advance(DAY)
    await data.index()
    kometa = fake.calls("GET", PATHS["kometa"])
    assert kometa[-1].headers.get("if-none-match") and kometa[-1].status == 304
    assert {s.name: s.fetched_at for s in data.status()} == fetched


async def test_a_new_upstream_version_replaces_the_cache(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    kometa = json.loads(fake.bodies["kometa"])
    kometa["99001"] = {"tvdb_id": 1, "tvdb_season": 1, "tvdb_epoffset": 0, "anilist_id": 99001}
    fake.bodies["kometa"] = json.dumps(kometa).encode()
    clock.advance(DAY)
    index = await data.index()
    assert isinstance(index.episode_for(99001, 1, "tvdb"), EpisodeRef)


async def test_runs_share_one_built_index_until_a_dataset_changes(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    first = await make_data(tmp_path, fake, http, clock).index()
    second_run = make_data(tmp_path, fake, http, clock)
    assert second_run.cached_index() is first
    fake.bodies["kometa"] = fake.bodies["kometa"].replace(b"42203", b"42204")
    await second_run.refresh(force=True)
    assert second_run.cached_index() is not first


async def test_a_failing_download_keeps_the_cached_copy_and_says_so(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    clock.advance(DAY)
    fake.fail_next(8, 503)  # every dataset host is down (2 tries each)
    index = await data.index()
    ref = index.episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef) and ref.number == 41
    assert all(s.error and "using the cached copy from" in s.error for s in data.status())
    assert data.out_of_date(clock()) == []  # logged only: the copy is one refresh period old


async def test_a_failed_download_names_its_url_without_a_signed_token(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    urls = {name: f"{url}?token=s1gned-t0ken" for name, url in fake.urls().items()}
    data = AnimeData(tmp_path / "anime-datasets", urls=urls, refresh=DAY, clock=clock, http=http)
    fake.fail_next(8, 404)
    await data.index()
    errors = [s.error for s in data.status() if s.error]
    assert errors and all("answered HTTP 404" in e for e in errors)
    assert not any("s1gned-t0ken" in e for e in errors)


async def test_an_alert_once_the_cache_is_two_refresh_periods_old(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    clock.advance(2 * DAY)
    fake.fail_next(8, 503)
    await data.index()
    problems = data.out_of_date(clock())
    assert len(problems) == 4
    assert problems[0].startswith("anime dataset anibridge: refresh failed (")
    assert "using the cached copy from 2023-11-14" in problems[0]


async def test_a_copy_upstream_keeps_confirming_raises_no_alert_for_one_failed_check(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    for _ in range(2):  # 304 Not Modified: the copy is upstream's latest
        clock.advance(DAY)
        await data.index()
    clock.advance(DAY)
    fake.fail_next(8, 503)
    await data.index()
    assert data.out_of_date(clock()) == []


async def test_the_out_of_date_alert_says_when_the_copy_was_last_confirmed_current(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()  # 2023-11-14
    clock.advance(DAY)
    await data.index()  # 304 Not Modified on 2023-11-15
    clock.advance(2 * DAY)
    fake.fail_next(8, 503)
    await data.index()
    problems = data.out_of_date(clock())
    assert len(problems) == 4
    assert problems[0].endswith(
        "using the cached copy from 2023-11-14, last confirmed current on 2023-11-15"
    )


async def test_the_hourly_check_alerts_once_per_throttle_window_and_resolves_when_current(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, receiver: AlertReceiver
) -> None:
    urls = "".join(f"      {name}: {url}\n" for name, url in fake.urls().items())
    path = write_config(
        tmp_path,
        f"alerts:\n  urls: [{receiver.apprise_url}]\n  throttle: 1d\n"
        f"services:\n  anilist:\n    mapping_urls:\n{urls}",
    )
    clock = FakeClock()
    runtime = build_runtime(load_config(path, {}), clock=clock)
    runtime.open()
    try:
        fake.fail_next(8, 503)  # no copy yet, and every host is down
        await from_config(runtime.config, http=http, clock=clock).index()
        for _ in range(3):  # three hourly checks while the hosts stay down
            await check_anime_datasets(runtime)
            clock.advance(3600)
        # No list downloaded at all: AniList deliveries wait, told as such.
        assert receiver.titles() == [MISSING_TITLE]
        await from_config(runtime.config, http=http, clock=clock).refresh(force=True)
        await check_anime_datasets(runtime)
        assert receiver.titles() == [MISSING_TITLE, f"Resolved: {MISSING_TITLE}"]
    finally:
        runtime.close()


async def test_the_hourly_check_keeps_what_a_link_runs_refresh_could_not_write_for_status(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient
) -> None:
    path = anime_config(tmp_path, fake)
    clock = FakeClock()
    runtime = build_runtime(load_config(path, {}), clock=clock)
    runtime.open()
    try:
        # A link run's refresh (made without the database) whose datasets.json write fails.
        await from_config(runtime.config, http=http, clock=clock).index()
        blocked = tmp_path / "anime-datasets" / "datasets.json.tmp"
        blocked.mkdir()
        clock.advance(8 * DAY)
        await from_config(runtime.config, http=http, clock=clock).refresh()
        await check_anime_datasets(runtime)
    finally:
        runtime.close()
    status = run_cli("status", "--config", str(path))  # another process: not in its memory
    assert status.returncode == 0, status.stderr
    assert f"anime:         anime dataset kometa: refresh failed (could not write {blocked}" in (
        status.stdout
    )


async def test_a_failed_refresh_is_retried_within_the_hour_not_at_once(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    clock.advance(DAY)
    fake.fail_next(8, 503)
    await data.index()
    sent = len(fake.requests)
    await data.index()
    assert len(fake.requests) == sent
    clock.advance(3600)
    await data.index()
    assert len(fake.requests) > sent
    assert not any(s.error for s in data.status())


async def test_a_dataset_without_a_copy_is_asked_again_within_minutes_not_at_every_use(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    fake.bodies = {}  # a first start whose downloads all fail
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    sent = len(fake.requests)
    await data.index()  # the next delivery pass, link run
    assert len(fake.requests) == sent
    fake.bodies = sample_bodies()
    clock.advance(MISSING_RETRY)
    assert len(await data.index()) > 0


async def test_a_lasting_failure_is_logged_once_then_hourly_and_once_when_it_works_again(
    tmp_path: Path,
    fake: FakeDatasets,
    http: HttpClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hosts a firewall blocks for good: asked every MISSING_RETRY all the same, but the log
    is not filled with the same four warnings (the alert tells the user)."""
    caplog.set_level(logging.DEBUG, logger="watchbridge.anime_data")
    fake.bodies = {}
    data = make_data(tmp_path, fake, http, clock)
    warned: list[int] = []
    for _ in range(2 * 12):  # two hours of tries
        caplog.clear()
        await data.index()
        warned.append(len([r for r in caplog.records if r.levelno == logging.WARNING]))
        clock.advance(MISSING_RETRY)
    assert warned == [4] + [0] * 11 + [4] + [0] * 11  # each dataset's, once, then hourly
    assert len([r for r in fake.requests if r.method == "GET"]) >= 24 * 4  # tries kept up

    fake.bodies = sample_bodies()
    caplog.clear()
    assert len(await data.index()) > 0
    again = [r for r in caplog.records if r.getMessage() == "anime dataset refresh works again"]
    assert sorted(getattr(r, "dataset", "") for r in again) == sorted(PATHS)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    clock.advance(DAY)
    caplog.clear()
    fake.bodies = {}
    await data.index()  # a new failure later is told again at once
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4


async def test_each_datasets_line_says_nothing_maps_while_none_is_downloaded(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    fake.bodies = {}
    statuses = await make_data(tmp_path, fake, http, clock).refresh()
    for status in statuses:
        assert status.error is not None
        assert status.error.endswith(
            "no cached copy yet, nor of any other dataset: anime plays wait for one before they"
            " go to AniList"
        ), status.error


async def test_a_dataset_without_a_copy_beside_others_says_mapping_works_from_those(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    del fake.bodies["fribb"]
    statuses = await make_data(tmp_path, fake, http, clock).refresh()
    (failed,) = [status.error for status in statuses if status.error]
    assert failed.endswith("no cached copy yet: mapping works from the other datasets only")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_a_read_only_folder_is_a_failed_refresh_said_and_alerted_not_an_exception(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    data.directory.mkdir()
    data.directory.chmod(0o500)  # a volume mounted read-only, a folder of another user
    try:
        statuses = await data.refresh()
        index = data.cached_index()
    finally:
        data.directory.chmod(0o700)
    assert len(index) == 0 and all(not s.cached for s in statuses)
    for status in statuses:
        assert status.error is not None and "could not write" in status.error, status.error
        assert "Permission denied" in status.error and "writable by the user" in status.error
    # The hourly check reads the state afresh: it alerts, with no copy to fall back on.
    problems = make_data(tmp_path, fake, http, clock).out_of_date(clock())
    assert problems == [s.error for s in statuses]


async def test_a_refresh_whose_state_cannot_be_written_says_so_and_keeps_the_copy(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    # datasets.json cannot be written (as on a full disk): here its temporary file is taken.
    (data.directory / "datasets.json.tmp").mkdir()
    clock.advance(DAY)
    statuses = await data.refresh()  # upstream answers "unchanged" (304)
    for status in statuses:
        assert status.cached and status.error is not None, status
        assert "could not write" in status.error and "datasets.json.tmp" in status.error
        assert "using the cached copy from" in status.error
    ref = (await data.index()).episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef) and ref.number == 41
    sent = len(fake.requests)
    await data.refresh()  # what this check found is kept: not asked again at once
    assert len(fake.requests) == sent
    (data.directory / "datasets.json.tmp").rmdir()
    clock.advance(RETRY_FAILED)
    assert all(s.error is None for s in await data.refresh())  # written again: all well


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full to fill a disk")
async def test_a_full_disk_leaves_no_part_of_a_new_copy_and_keeps_the_old(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    fake.bodies["kometa"] = fake.bodies["kometa"].replace(b"42203", b"42204")
    # Writes of the new copy's temporary file go to /dev/full: a real "No space left on device".
    tmp = data.directory / "kometa.json.tmp"
    tmp.symlink_to("/dev/full")
    clock.advance(DAY)
    statuses = {s.name: s for s in await data.refresh()}
    error = statuses["kometa"].error
    assert error is not None and f"could not write {tmp}: No space left on device" in error
    assert "using the cached copy from" in error
    assert not tmp.exists() and not tmp.is_symlink()  # nothing left behind for good
    assert not list(data.directory.glob("*.tmp"))
    assert b"42203" in (data.directory / "kometa.json").read_bytes()


async def test_with_no_cache_a_failing_dataset_leaves_the_others_working(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    del fake.bodies["anibridge"]  # upstream answers 404
    data = make_data(tmp_path, fake, http, clock)
    index = await data.index()
    assert index.loaded == ("kometa", "fribb", "animelists")
    status = {s.name: s for s in data.status()}["anibridge"]
    assert not status.cached
    assert status.error is not None and "HTTP 404" in status.error
    assert "no cached copy yet" in status.error
    ref = index.episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef) and ref.number == 41


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<!DOCTYPE html><html>Rate limit</html>", "does not parse"),
        (b"{}", "holds no rows"),
        (json.dumps({"69": {"tvdb_id": 81797, "anilist_id": 21}}).encode(), "looks truncated"),
    ],
)
async def test_a_bad_download_never_replaces_the_last_good_copy(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock, body: bytes, why: str
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    fake.bodies["kometa"] = body
    clock.advance(DAY)
    await data.index()
    status = {s.name: s for s in data.status()}["kometa"]
    assert status.error is not None and why in status.error
    assert status.rows == 19
    assert b"42203" in data.path("kometa").read_bytes()


async def test_a_dataset_upstream_keeps_smaller_for_a_refresh_period_is_taken(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    # Upstream drops most rows for good (a clean-up, a split): refused as truncated at first,
    # it must not stay refused for ever, hourly downloads and the mapping frozen on the old copy.
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    smaller = {"69": {"tvdb_id": 81797, "anilist_id": 21}}
    fake.bodies["kometa"] = json.dumps(smaller).encode()
    clock.advance(DAY)
    await data.index()
    status = {s.name: s for s in data.status()}["kometa"]
    assert status.error is not None and "looks truncated" in status.error
    assert "2023-11-16" in status.error  # when a copy this small is taken as upstream's own
    smaller["70"] = {"tvdb_id": 81798, "anilist_id": 22}  # upstream moves on, still small
    fake.bodies["kometa"] = json.dumps(smaller).encode()
    clock.advance(DAY / 2)
    await data.index()
    assert {s.name: s for s in data.status()}["kometa"].rows == 19
    clock.advance(DAY / 2)
    await data.index()
    status = {s.name: s for s in data.status()}["kometa"]
    assert status.error is None and status.rows == 2
    assert b'"70"' in data.path("kometa").read_bytes()
    assert data.out_of_date(clock()) == []


async def test_a_smaller_download_fixed_upstream_within_the_period_starts_the_wait_again(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    data = make_data(tmp_path, fake, http, clock)
    await data.index()
    whole = fake.bodies["kometa"]
    fake.bodies["kometa"] = json.dumps({"69": {"tvdb_id": 81797, "anilist_id": 21}}).encode()
    clock.advance(DAY)
    await data.index()  # refused: looks truncated
    fake.bodies["kometa"] = whole + b" "  # upstream fixed its bad push
    clock.advance(3600)
    await data.index()
    assert not any(s.error for s in data.status())
    fake.bodies["kometa"] = json.dumps({"69": {"tvdb_id": 81797, "anilist_id": 21}}).encode()
    clock.advance(DAY)
    await data.index()  # another bad push: a wait of its own
    status = {s.name: s for s in data.status()}["kometa"]
    assert status.error is not None and "looks truncated" in status.error
    assert status.rows == 19


async def test_an_empty_url_switches_a_dataset_off(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    urls = {**fake.urls(), "fribb": ""}
    data = AnimeData(tmp_path, urls=urls, refresh=DAY, clock=clock, http=http)
    index = await data.index()
    assert "fribb" not in index.loaded
    assert fake.count("GET", PATHS["fribb"]) == 0


async def test_overrides_file_is_read_and_changes_are_picked_up(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    overrides = tmp_path / "anime-overrides.yaml"
    overrides.write_text("119661: {tmdb: {show: 65942, season: 2, offset: 0}}\n")
    data = make_data(tmp_path, fake, http, clock, overrides_path=overrides)
    ref = (await data.index()).episode_for(119661, 3, "tmdb")
    assert isinstance(ref, EpisodeRef) and (ref.season, ref.source) == (2, "override")
    overrides.write_text("119661: skip\n")
    assert isinstance(data.cached_index().episode_for(119661, 3, "tmdb"), Unmatched)


async def test_a_broken_overrides_file_is_a_config_error(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock
) -> None:
    overrides = tmp_path / "anime-overrides.yaml"
    overrides.write_text("119661: {tmdb: {show: 65942, season: two}}\n")
    data = make_data(tmp_path, fake, http, clock, overrides_path=overrides)
    with pytest.raises(ConfigError, match=r"anime-overrides.yaml: 119661.tmdb.season: expected"):
        await data.index()
    overrides.unlink()
    with pytest.raises(ConfigError, match=r"services\.anilist\.mapping_overrides: .* not found"):
        data.cached_index()


def test_an_overrides_file_under_home_written_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_config(tmp_path, "services:\n  anilist:\n    mapping_overrides: ~/o.yaml\n")
    assert from_config(load_config(path, {})).overrides_path == tmp_path / "home" / "o.yaml"


def test_config_keys_place_the_cache_next_to_the_database(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "services:\n  anilist:\n    mapping_refresh: 1d\n"
        "    mapping_overrides: anime-overrides.yaml\n"
        "    mapping_urls:\n      kometa: http://127.0.0.1:9/anime_ids.json\n      fribb: ''\n",
    )
    data = from_config(load_config(path, {}))
    assert data.directory == tmp_path / "anime-datasets"
    assert data.overrides_path == tmp_path / "anime-overrides.yaml"
    assert data.refresh_every == DAY
    assert data.urls["kometa"] == "http://127.0.0.1:9/anime_ids.json"
    assert "fribb" not in data.urls


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    mapping_urls:\n      mal: https://x\n", "mapping_urls.mal: unknown key"),
        ("    mapping_urls:\n      kometa: ftp://x\n", r"kometa: expected an http\(s\) URL"),
        ("    mapping_refresh: 10m\n", "mapping_refresh: expected at least 1h"),
    ],
)
def test_bad_mapping_config_names_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = write_config(tmp_path, "services:\n  anilist:\n" + body)
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


def test_unmatched_entries_are_recorded_listed_and_cleared(store: Store) -> None:
    why = Unmatched("AniList 189046 is in none of the mapping datasets", "unknown")
    note_unmatched(store, "me", "anilist:189046", why, 100.0, title="Re:Zero", anilist_id=189046)
    note_unmatched(store, "me", "episode:tmdb:1:s1e1", Unmatched("no range", "outside"), 200.0)
    records = unmatched_records(store, ["me", "other"])
    assert [r.key for r in records] == ["episode:tmdb:1:s1e1", "anilist:189046"]
    assert records[1].title == "Re:Zero" and records[1].code == "unknown"
    clear_unmatched(store, "me", ["anilist:189046"])
    assert [r.key for r in unmatched_records(store, ["me"])] == ["episode:tmdb:1:s1e1"]


def rows_written(store: Store) -> int:
    """Rows inserted, replaced or deleted on this connection so far."""
    return store._conn.total_changes


def test_an_unmatched_entry_reported_again_unchanged_is_not_written_again(store: Store) -> None:
    why = Unmatched("AniList 189046 is in none of the mapping datasets", "unknown")
    note_unmatched(store, "me", "anilist:189046", why, 100.0, title="Re:Zero", anilist_id=189046)
    before = rows_written(store)
    note_unmatched(store, "me", "anilist:189046", why, 400.0, title="Re:Zero", anilist_id=189046)
    clear_unmatched(store, "me", ["anilist:1", "anilist:2"])  # mapped entries never recorded
    assert rows_written(store) == before
    (record,) = unmatched_records(store, ["me"])
    assert record.seen_at == 100.0


def test_an_unmatched_entry_is_seen_again_a_day_later_or_when_its_reason_changes(
    store: Store,
) -> None:
    why = Unmatched("AniList 189046 is in none of the mapping datasets", "unknown")
    note_unmatched(store, "me", "anilist:189046", why, 100.0, title="Re:Zero", anilist_id=189046)
    later = 100.0 + SEEN_REFRESH
    note_unmatched(store, "me", "anilist:189046", why, later, title="Re:Zero", anilist_id=189046)
    assert unmatched_records(store, ["me"])[0].seen_at == later
    pending = Unmatched("new season not in the datasets yet", "new-season")
    note_unmatched(store, "me", "anilist:189046", pending, later + 60, title="Re:Zero")
    (record,) = unmatched_records(store, ["me"])
    assert (record.code, record.seen_at) == ("new-season", later + 60)


def test_what_a_link_no_longer_reports_is_forgotten_and_what_others_recorded_stays(
    store: Store,
) -> None:
    why = Unmatched("in none of the mapping datasets", "unknown")
    later = Unmatched("not this season yet", "new-season")
    trakt, serializd = link_source("trakt", "plays"), link_source("serializd", "plays")
    found = {"episode:tmdb:1:s5e1": later, "movie:tmdb:9": why}
    note_unmatched_plays(store, "me", found, 1.0, trakt)
    note_unmatched_plays(store, "me", {"episode:tmdb:2:s2e1": later}, 1.0, serializd)
    note_unmatched(store, "me", "episode:tmdb:3:s1e1", later, 1.0)  # a webhook play's delivery
    note_unmatched_plays(store, "you", {"episode:tmdb:1:s5e1": later}, 1.0, trakt)

    note_unmatched_plays(store, "me", {"movie:tmdb:9": why}, 2.0, trakt)  # s5e1 went
    left = {(r.profile, r.key) for r in unmatched_records(store, ["me", "you"])}
    assert left == {
        ("me", "movie:tmdb:9"),
        ("me", "episode:tmdb:2:s2e1"),  # the other link's
        ("me", "episode:tmdb:3:s1e1"),  # a delivery's, cleared when it delivers
        ("you", "episode:tmdb:1:s5e1"),
    }


def test_a_whole_read_forgets_the_entries_it_no_longer_reports_and_a_delta_read_does_not(
    store: Store,
) -> None:
    source = link_source("trakt", "list")

    def entries(*media: int) -> list[UnmatchedRecord]:
        why = Unmatched("in none of the mapping datasets", "unknown")
        return [
            UnmatchedRecord("me", f"anilist:{m}", why.reason, why.code, None, m, 1.0, source)
            for m in media
        ]

    note_unmatched_entries(store, "me", entries(998, 999), 1.0, source, whole=True)
    note_unmatched_entries(store, "me", entries(), 2.0, source, whole=False)  # nothing moved
    assert len(unmatched_records(store, ["me"])) == 2
    note_unmatched_entries(store, "me", entries(998), 3.0, source, whole=True)
    assert [r.key for r in unmatched_records(store, ["me"])] == ["anilist:998"]


def test_records_of_an_older_release_are_taken_over_by_the_link_that_reports_them(
    store: Store,
) -> None:
    old = {"reason": "in none of the mapping datasets", "code": "unknown", "seen_at": 1.0}
    stored = {key: old for key in ("anilist:998", "anilist:999", "episode:tmdb:1:s5e1")}
    store.mirror_put("anime", "me", "unmatched", stored, 1.0)
    source = link_source("trakt", "list")
    still = UnmatchedRecord("me", "anilist:998", old["reason"], "unknown", None, None, 2.0, source)
    note_unmatched_entries(store, "me", [still], 2.0, source, whole=True)
    records = unmatched_records(store, ["me"])
    # The other side's play is not the list read's to forget.
    assert [(r.key, r.source) for r in records] == [
        ("anilist:998", source),
        ("episode:tmdb:1:s5e1", ""),
    ]


def test_a_webhook_plays_record_of_an_older_release_stays_when_a_link_does_not_report_it(
    store: Store,
) -> None:
    # Records as releases before sources wrote them (asdict of the record then: no `source`).
    # A delivery's (a webhook play) carries the play's title; the link's plays report never did.
    def older(key: str, title: str | None) -> dict[str, object]:
        fields = {"profile": "me", "key": key, "reason": "not this season yet"}
        return fields | {"code": "new-season", "title": title, "anilist_id": None, "seen_at": 1.0}

    webhook, linked = "episode:tmdb:3:s1e1", "episode:tmdb:1:s5e1"
    unknown = "episode:tmdb:4:s1e1"  # lacking the title field: who wrote it cannot be told
    stored = {webhook: older(webhook, "Frieren"), linked: older(linked, None)}
    stored[unknown] = {"reason": "not this season yet", "code": "new-season", "seen_at": 1.0}
    store.mirror_put("anime", "me", "unmatched", stored, 1.0)
    note_unmatched_plays(store, "me", {}, 2.0, link_source("trakt", "plays"))
    assert {r.key for r in unmatched_records(store, ["me"])} == {webhook, unknown}


# --------------------------------------------------------------------------- the commands


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return watchbridge(*args)


def anime_config(tmp_path: Path, fake: FakeDatasets) -> Path:
    urls = "".join(f"      {name}: {url}\n" for name, url in fake.urls().items())
    return write_config(tmp_path, f"services:\n  anilist:\n    mapping_urls:\n{urls}")


def test_anime_explain_prints_the_chain(tmp_path: Path, fake: FakeDatasets) -> None:
    result = run_cli("anime", "explain", "119661", "--config", str(anime_config(tmp_path, fake)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "AniList 119661"
    assert "anibridge: show 65942: S1 1-12 → 39-50" in result.stdout
    assert "result TMDB: episode 1 → show 65942 S1E39 via anibridge" in lines


def test_anime_explain_offline_without_a_cache_warns(tmp_path: Path, fake: FakeDatasets) -> None:
    path = anime_config(tmp_path, fake)
    result = run_cli("anime", "explain", "119661", "--offline", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "warning: anime dataset kometa is not downloaded yet" in result.stderr
    assert "result: unmatched: AniList 119661 is in none of the mapping datasets" in result.stdout
    assert not fake.requests


def test_anime_refresh_reports_a_failed_download(tmp_path: Path, fake: FakeDatasets) -> None:
    del fake.bodies["fribb"]
    result = run_cli("anime", "refresh", "--config", str(anime_config(tmp_path, fake)))
    assert result.returncode == 1
    assert "kometa: 19 rows, fetched" in result.stdout
    assert "fribb: anime dataset fribb: refresh failed" in result.stdout
    assert "error: could not refresh fribb; the cached copies stay in use" in result.stderr


def test_anime_refresh_replaces_a_damaged_copy_upstream_has_not_changed(
    tmp_path: Path, fake: FakeDatasets
) -> None:
    """Before, upstream's "unchanged" (304) to the copy's ETag kept the damaged copy, and the
    command said it went well: the advice the held deliveries and the link give did nothing."""
    path = anime_config(tmp_path, fake)
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 0
    data = anime_data.from_config(load_config(path, {}))
    for name in data.urls:
        data.path(name).write_text("not a mapping list", encoding="utf-8")
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 0
    assert {name: data.path(name).read_bytes() for name in data.urls} == fake.bodies
    assert len(data.cached_index()) > 0


def test_a_failed_refresh_is_on_the_status_page_as_watchbridge_status_says_it(
    tmp_path: Path, fake: FakeDatasets
) -> None:
    # The Home Assistant app's household has the page only: no terminal for `status`.
    del fake.bodies["fribb"]
    path = anime_config(tmp_path, fake)
    Store.open(tmp_path / "watchbridge.db").close()  # the service has run
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 1
    status = run_cli("status", "--config", str(path)).stdout.splitlines()
    said = [line.removeprefix("anime:").strip() for line in status if line.startswith("anime:")]
    assert len(said) == 1 and said[0].startswith("anime dataset fribb: refresh failed"), said
    runtime = build_runtime(load_config(path, {}))
    runtime.open()
    try:
        page = render(asyncio.run(page_state(runtime, 10_000.0)), 10_000.0)
    finally:
        runtime.close()
    assert html.escape(said[0]) in page
    assert "anime for AniList: 1 thing(s) to look at" in page  # the summary names it


def test_a_failed_refresh_whose_cached_copy_serves_is_calm_until_the_alert_would_be_sent(
    tmp_path: Path, fake: FakeDatasets
) -> None:
    """Before, it was red and under *Needs you* at once, though the household lacked nothing
    (the hourly check alerts after two refresh periods without a current copy)."""
    path = anime_config(tmp_path, fake)
    Store.open(tmp_path / "watchbridge.db").close()  # the service has run
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 0
    del fake.bodies["fribb"]  # its host fails from now on; the copy downloaded stays in use
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 1
    config = load_config(path, {})
    runtime = build_runtime(config)
    runtime.open()
    try:
        now = time.time()
        later = now + 2 * anime_data.from_config(config).refresh_every + 60
        calm, red = (render(asyncio.run(page_state(runtime, at)), at) for at in (now, later))
    finally:
        runtime.close()
    (line,) = re.findall(r'<h2 id="anime">Anime</h2><p>([^<]*)</p>', calm)
    assert html.unescape(line).startswith("anime dataset fribb: refresh failed"), line
    assert "anime for AniList" not in calm  # not among what needs the user
    assert f'<h2 id="anime">Anime</h2><p class="bad">{line}</p>' in red
    assert "anime for AniList: 1 thing(s) to look at" in red


def test_a_refresh_whose_state_cannot_be_written_is_in_the_next_commands_status(
    tmp_path: Path, fake: FakeDatasets
) -> None:
    path = anime_config(tmp_path, fake)
    Store.open(tmp_path / "watchbridge.db").close()  # the service has run
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 0
    assert "anime:" not in run_cli("status", "--config", str(path)).stdout
    # datasets.json cannot be written (as in a folder mounted read-only): its temporary file
    # is taken. What the refresh found is known to its own process only, unless kept.
    blocked = tmp_path / "anime-datasets" / "datasets.json.tmp"
    blocked.mkdir()
    fake.bodies["kometa"] = fake.bodies["kometa"].replace(b"42203", b"42204")
    refreshed = run_cli("anime", "refresh", "--config", str(path))
    assert refreshed.returncode == 1 and "could not write" in refreshed.stdout
    status = run_cli("status", "--config", str(path))
    assert status.returncode == 0, status.stderr
    assert (
        "anime:         anime dataset kometa: refresh failed (could not write "
        f"{blocked}: Is a directory; the folder must be writable"
    ) in status.stdout
    blocked.rmdir()
    assert run_cli("anime", "refresh", "--config", str(path)).returncode == 0
    assert "anime:" not in run_cli("status", "--config", str(path)).stdout


def test_anime_unmatched_lists_what_could_not_be_mapped(tmp_path: Path) -> None:
    path = write_config(tmp_path, "profiles:\n  me:\n    default: true\n")
    store = Store.open(tmp_path / "watchbridge.db")
    why = Unmatched("AniList 189046 is in none of the mapping datasets", "unknown")
    note_unmatched(store, "me", "anilist:189046", why, 100.0, title="Re:Zero S3")
    store.close()
    result = run_cli("anime", "unmatched", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert (
        "me  anilist:189046 'Re:Zero S3'  [unknown]  AniList 189046 is in none of the mapping"
        in result.stdout
    )


def one_piece_unplaced(tmp_path: Path) -> Path:
    """100 One Piece plays (S21E1071-1170) a link could not place, and one of them a webhook
    play (titled) could not either: the config's path."""
    path = write_config(tmp_path, "profiles:\n  me:\n    default: true\n")
    store = Store.open(tmp_path / "watchbridge.db")
    why = "only an absolute TMDB number is known and no season list to place it on"
    found = {
        f"episode:tmdb:37854:s21e{n}": Unmatched(f"episode {n}: {why}", "absolute")
        for n in range(1071, 1171)
    }
    note_unmatched_plays(store, "me", found, 100.0, "plex link plays")
    webhook = Unmatched(f"episode 1100: {why}", "absolute")
    note_unmatched(store, "me", "episode:tmdb:37854:s21e1100", webhook, 200.0, title="One Piece")
    store.close()
    return path


def test_anime_unmatched_lists_a_shows_episodes_as_one_line_with_the_fix(tmp_path: Path) -> None:
    result = run_cli("anime", "unmatched", "--config", str(one_piece_unplaced(tmp_path)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "me  episode:tmdb:37854 'One Piece'  [absolute]  100 episodes: S21E1071-1170  (seen "
    )
    assert lines[1] == (
        "    why (first): episode 1071: only an absolute TMDB number is known and no season "
        "list to place it on"
    )
    assert lines[2].startswith("    fix: set services.trakt or services.serializd")
    assert lines[3:] == ["`watchbridge anime unmatched --all` lists every episode on its own line"]


def test_anime_unmatched_all_lists_every_episode(tmp_path: Path) -> None:
    path = one_piece_unplaced(tmp_path)
    result = run_cli("anime", "unmatched", "--all", "--config", str(path))
    assert result.returncode == 0, result.stderr
    listed = [line for line in result.stdout.splitlines() if "[absolute]" in line]
    assert len(listed) == 100
    assert "me  episode:tmdb:37854:s21e1100 'One Piece'  [absolute]  episode 1100" in listed[0]


def test_unmatched_episodes_group_by_show_and_reason_with_runs_per_season() -> None:
    def record(key: str, code: str = "new-season") -> UnmatchedRecord:
        return UnmatchedRecord("me", key, "why", code, None, None, 1.0)

    keys = ["s5e3", "s5e1", "s5e2", "s5e7", "s6e1", "sNoneeNonea1071"]
    records = [record(f"episode:tmdb:1429:{k}") for k in keys]
    records += [record("episode:tmdb:1429:s5e9", "outside"), record("anilist:999", "unknown")]
    groups = {(g.key, g.code): g for g in group_unmatched(records)}
    assert groups["episode:tmdb:1429", "new-season"].episodes == "S5E1-3, S5E7, S6E1, absolute 1071"
    assert groups["episode:tmdb:1429", "outside"].episodes == "S5E9"
    assert groups["anilist:999", "unknown"].episodes == ""
    assert len(groups) == 3


async def unmatched_listing(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, why: Unmatched
) -> str:
    """What `watchbridge anime unmatched` prints once AniList 119661 was noted as `why`,
    with the datasets freshly downloaded."""
    path = anime_config(tmp_path, fake)
    await from_config(load_config(path, {}), http=http).refresh()
    store = Store.open(tmp_path / "watchbridge.db")
    note_unmatched(store, "default", "anilist:119661", why, 100.0, anilist_id=119661)
    store.close()
    result = run_cli("anime", "unmatched", "--config", str(path))
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_anime_unmatched_says_when_a_dataset_refresh_mapped_an_entry(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient
) -> None:
    why = Unmatched("AniList 119661 is in none of the mapping datasets", "unknown")
    listed = await unmatched_listing(tmp_path, fake, http, why)
    assert "-> maps now; the next sync uses it" in listed


async def test_anime_unmatched_promises_nothing_for_an_entry_waiting_on_a_season_list(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient
) -> None:
    # The datasets map it by absolute number all along: the season list is what it lacks.
    why = Unmatched("no season list to place absolute episode 1100 on", "absolute")
    listed = await unmatched_listing(tmp_path, fake, http, why)
    assert "[absolute]" in listed and "maps now" not in listed


def test_anime_unmatched_when_everything_maps(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    Store.open(tmp_path / "watchbridge.db").close()
    result = run_cli("anime", "unmatched", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing unmatched"


def test_anime_unmatched_names_the_titles_skipped_as_not_anime(tmp_path: Path) -> None:
    path = write_config(tmp_path, "profiles:\n  me:\n    default: true\n")
    store = Store.open(tmp_path / "watchbridge.db")
    frieren = MediaRef("episode", show_ids=Ids(tmdb="209867"), show_title="Frieren", season=2)
    arrival = MediaRef("movie", Ids(tmdb="329865"), title="Arrival")
    plays = [(replace(frieren, number=1), ["Anime", "Fantasy"]), (arrival, ["Drama"])]
    kept = {
        f"me:anilist:play:{n}": {
            "profile": "me",
            "action": "play",
            "payload": {"item": ref_to_dict(item), "at": 100.0, "genres": genres},
            "ordering_key": f"me:anilist:{n}",
        }
        for n, (item, genres) in enumerate(plays)
    }
    store.mirror_put(NAME, "me", SKIPPED, kept, 100.0)  # as the target keeps them
    store.close()
    result = run_cli("anime", "unmatched", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "skipped as not anime although likely anime" in result.stdout
    assert "  'Frieren' (tmdb 209867): 1 play; likely anime: genre Anime" in result.stdout
    assert "Arrival" not in result.stdout  # a film, counted with the rest
    assert "me: 1 other title skipped as not anime" in result.stdout
