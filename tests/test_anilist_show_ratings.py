"""A whole anime show rated in Plex, by webhook, to the running app with AniList: AniList rates
each season's entry, so the rating is not written there (a show maps to several entries: a
guess would overwrite one's score). The user is told, once per show and calmly, what to rate
instead, until the season is rated or for 30 days."""

from __future__ import annotations

import copy
import html
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.harness import AppThread, free_port, nothing_waits, wait_for, watchbridge
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced
from watchbridge.config import load_config
from watchbridge.show_ratings import WEBHOOK, from_link, seasons_rated_at
from watchbridge.wiring import build_app, build_runtime

SECRET = "show-ratings-secret-0123"
DAY = 86400.0
RE_ZERO, RE_ZERO_TMDB = 21355, 65942  # TMDB 65942 S1E1-25 in the pinned mapping samples
BREAKING_BAD = 1396  # in no mapping dataset: not anime


class Clock:
    """The app's clock: the wall clock moved by `ahead` seconds."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


class App:
    def __init__(self, thread: AppThread, db: Path, config: Path, clock: Clock) -> None:
        self.thread, self.db, self.config, self.clock = thread, db, config, clock

    def post(self, body: dict[str, Any]) -> None:
        content, content_type = plex_multipart(body, thumb=False)
        answer = httpx.post(
            f"{self.thread.url}/webhooks/plex/{SECRET}",
            content=content,
            headers={"content-type": content_type},
        )
        assert answer.status_code == 202, answer.text
        wait_for(lambda: nothing_waits(self.db))

    def told(self) -> list[str]:
        """The anime lines of `/api/status`, as the status page and `watchbridge status`
        say them."""
        lines = httpx.get(f"{self.thread.url}/api/status").json()["anime"]
        assert isinstance(lines, list)
        return lines

    def page(self) -> str:
        return httpx.get(self.thread.url).text


def rated(kind: str, key: str, title: str, tmdb: int, rating: float, at: float) -> dict[str, Any]:
    """Plex's media.rate of a whole show (`kind` "show") or of its season 1, in a library on
    the TMDB agent."""
    body = copy.deepcopy(sample_json("plex", "season_legacy_media_rate.json"))
    metadata = body["Metadata"]
    body["rating"] = rating
    metadata |= {"ratingKey": key, "userRating": rating, "lastRatedAt": int(at)}
    if kind == "show":
        for field in ("parentGuid", "parentRatingKey", "parentTitle", "parentKey", "index"):
            metadata.pop(field, None)
        metadata |= {
            "type": "show",
            "title": title,
            "guid": f"com.plexapp.agents.themoviedb://{tmdb}?lang=en",
        }
    else:
        metadata |= {
            "title": "Season 1",
            "parentTitle": title,
            "guid": f"com.plexapp.agents.themoviedb://{tmdb}/1?lang=en",
            "parentGuid": f"com.plexapp.agents.themoviedb://{tmdb}?lang=en",
            "index": 1,
        }
    return body


@pytest.fixture
def app(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[App, FakeAniList]]:
    unpaced(monkeypatch, "anilist")
    anilist = start_fake(FakeAniList())
    datasets = start_fake(FakeDatasets())
    assert isinstance(anilist, FakeAniList) and isinstance(datasets, FakeDatasets)
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(RE_ZERO, episodes=25)
    anilist.add_entry(RE_ZERO, status="CURRENT", progress=3, updated_at=int(time.time() - DAY))
    urls = "".join(f"      {name}: {url}\n" for name, url in datasets.urls().items())
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"server: {{host: 127.0.0.1, port: {free_port()}, webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'watchbridge.db'}}}\n"
        "services:\n"
        f'  anilist:\n    api_url: "{anilist.url}"\n    auth_url: "{anilist.auth_url}"\n'
        f"    mapping_urls:\n{urls}"
        "profiles:\n  me:\n    users: {plex: ['1']}\n"
        f'    accounts: {{anilist: {{token: "{anilist.issue_token()}"}}}}\n',
        encoding="utf-8",
    )
    clock = Clock()
    runtime = build_runtime(load_config(path, {}), clock=clock)
    with AppThread(build_app(runtime)) as thread:
        yield App(thread, Path(runtime.config.storage.path), path, clock), anilist


def test_a_whole_anime_show_rated_in_plex_is_told_with_what_to_rate_until_its_season_is(
    app: tuple[App, FakeAniList],
) -> None:
    running, anilist = app
    now = running.clock()
    running.post(rated("show", "20", "Re:ZERO", RE_ZERO_TMDB, 9.0, now - 60))
    running.post(rated("show", "30", "Breaking Bad", BREAKING_BAD, 8.0, now - 30))

    told = running.told()
    assert len(told) == 1, told  # Breaking Bad is none of AniList's business
    assert told[0].startswith("me: 'Re:ZERO' is rated as a whole show in Plex (9/10)"), told
    assert "AniList rates each season's entry" in told[0]
    assert "rate the season in Plex, or the entry on AniList" in told[0]
    assert anilist.snapshot()[RE_ZERO]["score"] == 0  # no entry's score guessed
    page = running.page()
    assert f"<p>{html.escape(told[0])}</p>" in page  # calm: nothing is broken
    assert "anime for AniList" not in page
    said = watchbridge("status", "--config", str(running.config))
    assert f"anime:         {told[0]}" in said.stdout, said.stdout + said.stderr

    running.post(rated("season", "21", "Re:ZERO", RE_ZERO_TMDB, 8.0, running.clock()))

    assert anilist.snapshot()[RE_ZERO]["score"] == 80
    assert running.told() == []

    # Rated as a whole again: told again, for 30 days.
    running.post(rated("show", "20", "Re:ZERO", RE_ZERO_TMDB, 7.0, running.clock()))
    assert [line[:55] for line in running.told()] == [
        "me: 'Re:ZERO' is rated as a whole show in Plex (7/10), "
    ]
    running.clock.ahead += 29 * DAY
    assert len(running.told()) == 1
    running.clock.ahead += 2 * DAY
    assert running.told() == []


def test_a_links_read_tells_a_show_rating_once_and_no_more_once_a_season_is_rated_after() -> None:
    source = "plex link ratings"
    first = from_link({}, {"show:tmdb:1": (90, 100.0)}, {}, {"show:tmdb:1": "A"}, "plex", source, 5)
    assert first.put["show:tmdb:1"]["noted_at"] == 5 and first.forget == []
    records = dict(first.put) | {"show:tmdb:2": {"source": WEBHOOK, "rating": 70}}
    again = from_link(records, {"show:tmdb:1": (90, 100.0)}, {}, {}, "plex", source, 9)
    assert again.put == {} and again.forget == []  # the same rating: told once, title kept
    changed = from_link(records, {"show:tmdb:1": (70, 200.0)}, {}, {}, "plex", source, 9)
    assert changed.put["show:tmdb:1"] == {
        "rating": 70,
        "title": "A",
        "where": "plex",
        "source": source,
        "noted_at": 9,
    }
    seasons = seasons_rated_at([("show:tmdb:1:s2", 150.0), ("episode:tmdb:1:s1e1", 999.0)])
    assert seasons == {"show:tmdb:1": 150.0}
    rated = from_link(records, {"show:tmdb:1": (90, 100.0)}, seasons, {}, "plex", source, 9)
    assert rated.put == {} and rated.forget == ["show:tmdb:1"]
    gone = from_link(records, {}, {}, {}, "plex", source, 9)
    assert gone.forget == ["show:tmdb:1"]  # cleared in Plex; the webhook's record stays
