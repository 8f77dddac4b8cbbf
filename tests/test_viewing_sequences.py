"""Real viewing sequences, as Plex and Jellyfin post them, through the running app to the fake
Trakt: what Trakt ends up holding (plays and their dates, what it shows as watching).

The app's clock is the fake Trakt's, so "the next day" moves both."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso
from tests.harness import AppThread, sign_in_trakt
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "viewing-sequences-secret"
HOUR = 3600.0
DAY = 24 * HOUR
MOVIE_MS = 6960000  # Arrival in the Plex samples
EPISODE_TICKS = 28560000000  # Ozymandias in the Jellyfin samples


@dataclass
class Home:
    thread: AppThread
    trakt: FakeTrakt
    db: Path

    def plex(self, event: str, percent: float | None, player: str = "tv") -> None:
        body = copy.deepcopy(sample_json("plex", "movie_media_stop.json"))
        body["event"] = event
        body["Player"] = {"local": True, "title": player, "uuid": f"uuid-{player}"}
        if percent is None:
            body["Metadata"].pop("viewOffset", None)
        else:
            body["Metadata"]["viewOffset"] = int(MOVIE_MS * percent / 100)
        content, content_type = plex_multipart(body, thumb=False)
        self._post("plex", content, content_type)

    def jellyfin(self, kind: str, percent: float, episode: int = 14, **fields: Any) -> None:
        name = {
            "start": "playback_start_episode.json",
            "progress": "playback_progress_episode_paused.json",
            "stop": "playback_stop_episode_completed.json",
        }[kind]
        body = copy.deepcopy(sample_json("jellyfin", name))
        body["PlaybackPositionTicks"] = int(EPISODE_TICKS * percent / 100)
        if kind == "progress":
            body["IsPaused"] = False
        if kind == "stop":
            body["PlayedToCompletion"] = False
        if episode != 14:
            body.update(
                ItemId=f"episode-{episode}",
                Name=f"Episode {episode}",
                EpisodeNumber=episode,
                Provider_tvdb=str(4637600 + episode),
                Provider_imdb=None,
                Provider_tmdb=None,
            )
        for key, value in fields.items():
            body[key] = value
        body = {k: v for k, v in body.items() if v is not None}
        self._post("jellyfin", json.dumps(body).encode(), "application/json")

    def _post(self, source: str, content: bytes, content_type: str) -> None:
        response = httpx.post(
            f"{self.thread.url}/webhooks/{source}/{SECRET}",
            content=content,
            headers={"content-type": content_type},
        )
        assert response.status_code in (200, 202), response.text

    def later(self, seconds: float) -> None:
        self.settle()
        self.trakt.advance(seconds)

    def settle(self) -> None:
        """Wait until the app delivered (or gave up on) what it queued."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sqlite3.connect(self.db) as conn:
                (busy,) = conn.execute(
                    "SELECT count(*) FROM outbox WHERE status IN ('pending', 'inflight')"
                ).fetchone()
            if not busy:
                return
            time.sleep(0.05)
        raise AssertionError(f"deliveries still pending: {self.outbox()}")

    def outbox(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(
                "SELECT id, action, status, last_error, payload FROM outbox ORDER BY id"
            ).fetchall()

    def plays(self) -> list[float]:
        self.settle()
        return sorted(parse_iso(h.watched_at) for h in self.trakt.history())


def _home(tmp_path: Path, trakt: FakeTrakt, threshold: int) -> Iterator[Home]:
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
delivery: {{retry_after: 1s}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me:
    users: {{plex: ["1"], jellyfin: [alex]}}
    completion_threshold: {threshold}
    accounts: {{trakt: {{}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=trakt.now)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=trakt.now())
        yield Home(thread, trakt, tmp_path / "wb.db")


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    show = fake.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    fake.add_episode(show, 5, 14, tvdb=4637661, imdb="tt2301451", tmdb=62161)
    for n in (15, 16):
        fake.add_episode(show, 5, n, tvdb=4637600 + n)
    return fake


@pytest.fixture
def home(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Home]:
    yield from _home(tmp_path, trakt, 90)


@pytest.fixture
def lenient(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Home]:
    yield from _home(tmp_path, trakt, 80)


def near(a: float, b: float, within: float = 120.0) -> bool:
    return abs(a - b) <= within


# ------------------------------------------------------------------------------- scenarios


def test_plex_counted_at_82_by_an_80_profile_then_finished_the_next_day_is_one_play(
    lenient: Home,
) -> None:
    lenient.plex("media.play", None)
    lenient.later(95 * 60)
    lenient.plex("media.stop", 82)
    (counted,) = lenient.plays()
    lenient.later(DAY)
    lenient.plex("media.play", 82)
    lenient.later(12 * 60)  # Plex's scrobble as this playback passes 90 %
    lenient.plex("media.scrobble", None)
    lenient.later(10 * 60)
    lenient.plex("media.stop", 100)
    assert lenient.plays() == [counted]
    assert lenient.trakt.watching() is None
