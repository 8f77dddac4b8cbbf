"""Anime plays no mapping dataset knows, through the running app from Jellyfin and Emby
webhooks: skipped for AniList as not anime, the likely anime among them (an anime id,
absolute numbering, the genre Anime or Animation) are told where a household without a
terminal looks (the status page, `/api/status`) and by `watchbridge status`, in one wording;
`watchbridge anime unmatched` lists them with why, and only counts the other shows."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, EMBY_SERIES, FakeJellyfin, sample_server
from tests.harness import AppThread, free_port, wait_for, watchbridge
from tests.ingest_samples import sample_json
from watchbridge.config import load_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "anime-kept-off-secret-0123"
DAN_DA_DAN = "240411"  # TMDB: in none of the sample datasets
TOLD = (
    "me: 1 show not sent to AniList as no mapping dataset knows it, though likely anime: "
    f"'Dan Da Dan' (tmdb {DAN_DA_DAN}; genre Animation); if it is anime, add a mapping "
    "override (services.anilist.mapping_overrides; README: Anime mapping): its plays of the "
    "last 30 days go then, as they do once a dataset refresh maps it"
)


@pytest.fixture
def config_path(tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]) -> Path:
    anilist = start_fake(FakeAniList())
    lists = start_fake(FakeDatasets())
    assert isinstance(anilist, FakeAniList) and isinstance(lists, FakeDatasets)
    jellyfin = sample_server(start_fake, "jellyfin")  # Breaking Bad
    emby = FakeJellyfin("emby")
    start_fake(emby)
    emby.add_series(EMBY_SERIES, "Dan Da Dan", Tmdb=DAN_DA_DAN)
    urls = "".join(f"      {name}: {url}\n" for name, url in lists.urls().items())
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"server: {{host: 127.0.0.1, port: {free_port()}, webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'watchbridge.db'}}}\n"
        "services:\n"
        f'  anilist:\n    api_url: "{anilist.url}"\n    auth_url: "{anilist.auth_url}"\n'
        f"    mapping_urls:\n{urls}"
        f'  jellyfin: {{url: "{jellyfin.url}", api_key: "{API_KEY}"}}\n'
        f'  emby: {{url: "{emby.url}", api_key: "{API_KEY}"}}\n'
        "profiles:\n  me:\n    users: {jellyfin: [alex], emby: [alex]}\n"
        f'    accounts: {{anilist: {{token: "{anilist.issue_token()}"}}}}\n',
        encoding="utf-8",
    )
    return path


def dan_da_dan() -> dict[str, Any]:
    """Emby's play of a Dan Da Dan episode, a library on TMDB metadata: genres only."""
    body = sample_json("emby", "playback_stop_episode_completed.json")
    body["Item"] |= {
        "Name": "That's How Love Starts, Ya Know!",
        "SeriesName": "Dan Da Dan",
        "ParentIndexNumber": 1,
        "IndexNumber": 1,
        "ProviderIds": {},
        "Genres": ["Animation", "Comedy", "Action & Adventure"],
    }
    return body


@pytest.fixture
def skipped(config_path: Path) -> Iterator[AppThread]:
    """The app, once Jellyfin's Breaking Bad and Emby's Dan Da Dan plays were skipped for
    AniList as not anime."""
    runtime = build_runtime(load_config(config_path, {}))
    db = Path(runtime.config.storage.path)
    with AppThread(build_app(runtime)) as app:
        plays = [
            ("jellyfin", sample_json("jellyfin", "playback_stop_episode_completed.json")),
            ("emby", dan_da_dan()),
        ]
        for source, body in plays:
            answer = httpx.post(f"{app.url}/webhooks/{source}/{SECRET}", json=body)
            assert answer.status_code == 202, answer.text
        wait_for(lambda: skipped_for_anilist(db) == 2)
        yield app


def skipped_for_anilist(db: Path) -> int:
    """The plays for AniList settled as not anime."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE target = 'anilist' AND status = 'done'"
            " AND last_error LIKE 'skipped: not anime%'"
        ).fetchone()
    return int(count)


def test_the_status_page_and_api_name_the_likely_anime_kept_off_anilist(
    skipped: AppThread,
) -> None:
    api = httpx.get(f"{skipped.url}/api/status").json()
    (kept_off,) = api["anime_not_sent"]
    assert kept_off["message"] == TOLD
    assert kept_off["titles"] == [
        {"title": "Dan Da Dan", "ids": f"tmdb {DAN_DA_DAN}", "plays": 1, "why": "genre Animation"}
    ]
    page = httpx.get(skipped.url).text
    assert "Dan Da Dan" in page and "Breaking Bad" not in page
    assert "services.anilist.mapping_overrides" in page
    assert "watchbridge anime" not in page  # nothing the app's household cannot run


def test_watchbridge_status_says_it_in_the_same_words(
    skipped: AppThread, config_path: Path
) -> None:
    status = watchbridge("status", "--config", str(config_path))
    assert status.returncode == 0, status.stderr
    assert f"anime:         {TOLD}" in status.stdout.splitlines()


def test_anime_unmatched_lists_the_likely_anime_with_why_and_counts_the_rest(
    skipped: AppThread, config_path: Path
) -> None:
    listed = watchbridge("anime", "unmatched", "--config", str(config_path))
    assert listed.returncode == 0, listed.stderr
    assert f"  'Dan Da Dan' (tmdb {DAN_DA_DAN}): 1 play; likely anime: genre Animation" in (
        listed.stdout.splitlines()
    )
    assert "Breaking Bad" not in listed.stdout
    assert "me: 1 other title skipped as not anime (no anime id, absolute number or anime" in (
        listed.stdout
    )
