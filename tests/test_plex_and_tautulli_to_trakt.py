"""Plex's webhook and Tautulli's both set up for one Plex server (two guides followed), through
the running app to the fake Trakt: what Trakt ends up holding."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, nothing_waits, sign_in_trakt, wait_for
from tests.ingest_samples import sample_json
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "two-plex-senders-secret"
FELINA_MS = 3_315_000  # the samples' episode (Breaking Bad 5x16), both senders name it


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    show = fake.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    fake.add_episode(show, 5, 16, title="Felina")
    return fake


@contextlib.contextmanager
def running_app(tmp_path: Path, trakt: FakeTrakt) -> Iterator[tuple[AppThread, Path]]:
    """The example config's one-person set-up (a default profile), delivering to the fake."""
    db = tmp_path / "wb.db"
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {db}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{default: true, users: {{plex: ['1']}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        yield thread, db


def post_plex(app: AppThread, event: str, percent: float) -> None:
    name = event.removeprefix("media.")
    body = sample_json("plex", f"episode_legacy_media_{name}.json")
    body["Metadata"]["viewOffset"] = int(FELINA_MS * percent / 100)
    files = {"payload": json.dumps(body)}
    answer = httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files=files)
    assert answer.status_code == 202, answer.text


def post_tautulli(app: AppThread, action: str, percent: float) -> None:
    body = sample_json("tautulli", "watched_episode.json") | {
        "action": action,
        "view_offset": str(int(FELINA_MS * percent / 100)),
        "progress_percent": str(int(percent)),
    }
    answer = httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=body)
    assert answer.status_code == 202, answer.text


def counted_by_tautulli(app: AppThread, db: Path, trakt: FakeTrakt) -> None:
    """Plex starts the viewing (Trakt: watching); Tautulli's Watched at 85 % ends it there."""
    post_plex(app, "media.play", 0)
    wait_for(lambda: trakt.watching() is not None)
    post_tautulli(app, "watched", 85)
    wait_for(lambda: len(trakt.history()) == 1 and nothing_waits(db))


def test_the_credits_resumed_on_plex_after_tautulli_counted_the_viewing_end_with_it(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Paused and resumed in the credits before Plex's own scrobble (90 %), whose play is left
    # out as the second report: that resume must not show the episode as playing again after
    # the viewing ended.
    with running_app(tmp_path, trakt) as (app, db):
        counted_by_tautulli(app, db, trakt)
        post_plex(app, "media.pause", 87)
        wait_for(lambda: nothing_waits(db))
        post_plex(app, "media.resume", 87)
        wait_for(lambda: nothing_waits(db))
        post_plex(app, "media.scrobble", 90)
        post_plex(app, "media.stop", 100)
        wait_for(lambda: nothing_waits(db))
        assert trakt.watching() is None
    assert len(trakt.history()) == 1 and trakt.playback() == []


def test_the_credits_paused_then_stopped_on_plex_after_tautulli_counted_it_leave_no_resume_point(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Stopped at 87 %: Plex never scrobbles, and its pause would stay in Trakt's "continue
    # watching" for months, for an episode Trakt has as watched.
    with running_app(tmp_path, trakt) as (app, db):
        counted_by_tautulli(app, db, trakt)
        post_plex(app, "media.pause", 87)
        wait_for(lambda: nothing_waits(db))
        post_plex(app, "media.stop", 87)
        wait_for(lambda: nothing_waits(db))
    assert trakt.playback() == []
    assert len(trakt.history()) == 1 and trakt.watching() is None


def routes_asked(trakt: FakeTrakt) -> list[str]:
    with trakt.lock:
        return [r.route or r.path for r in trakt.requests]


def test_a_plex_episode_goes_out_by_its_own_ids_without_a_search_first(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Plex's own agent took the episode's ids from Plex's metadata servers, not from an NFO
    # a user wrote: no id search stands between the webhook and the scrobble.
    show = trakt.add_show("Baki Hanma", 2021, tvdb=397934)
    trakt.add_episode(show, 1, 1, tvdb=8530933, tmdb=3087250, imdb="tt14765720")
    body = sample_json("plex", "episode_new_agent_friend_media_scrobble.json")
    body |= {"event": "media.play", "Account": body["Account"] | {"id": 1}}
    body["Metadata"]["viewOffset"] = 0
    with running_app(tmp_path, trakt) as (app, db):
        files = {"payload": json.dumps(body)}
        answer = httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files=files)
        assert answer.status_code == 202, answer.text
        wait_for(lambda: nothing_waits(db))
    asked = routes_asked(trakt)
    assert "/scrobble/start" in asked, asked
    assert "/search/{id_type}/{id}" not in asked[: asked.index("/scrobble/start")], asked
    assert trakt.watching() is not None
