"""Every sample payload of every source, posted to the running app: what does Trakt end up with?

Expectations are stated per kind of event (a completion adds one play, a rating sets a
rating, a start shows as watching, anything ignored changes nothing) and checked on the fake
Trakt's state, not on what watchbridge sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN as PLEX_TOKEN
from tests.fakes.plex import FakePlex
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt
from tests.ingest_samples import FIXTURES, payload_names, raw_request, sample_bytes
from watchbridge import ratings
from watchbridge.config import parse_config
from watchbridge.ingest import parse
from watchbridge.model import Accepted, MediaEvent
from watchbridge.wiring import build_app, build_runtime

SECRET = "sample-secret"
THRESHOLD = 90  # the default completion_threshold
YUMA_IMDB = "tt0050086"
SAMPLES = [
    (source, name)
    for source in ("plex", "jellyfin", "emby", "tautulli")
    for name in payload_names(source)
]
RAW = [
    ("plex", "multipart_movie_media_play"),
    ("plex", "multipart_episode_media_pause_plain_field"),
    ("emby", "multipart_playback_stop_episode"),
]


def wait_for(check: Callable[[], bool], timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def seed(trakt: FakeTrakt, event: MediaEvent) -> None:
    """Put the sample's item into the fake Trakt's catalogue, with the ids the sample has."""
    item = event.item
    ids = item.ids
    if item.kind == "movie" and not (ids.imdb or ids.tmdb):
        trakt.add_movie(item.title or "?", item.year, imdb=YUMA_IMDB)  # known to Plex only
        return
    if item.kind == "movie":
        trakt.add_movie(
            item.title or "?", item.year, imdb=ids.imdb, tmdb=int(ids.tmdb) if ids.tmdb else None
        )
        return
    show_ids = item.show_ids
    show = trakt.add_show(
        item.show_title or "?",
        None,
        imdb=show_ids.imdb,
        tmdb=int(show_ids.tmdb) if show_ids.tmdb else None,
        tvdb=int(show_ids.tvdb) if show_ids.tvdb else None,
    )
    trakt.add_episode(
        show,
        item.season or 1,
        item.number or 1,
        tvdb=int(ids.tvdb) if ids.tvdb else None,
        imdb=ids.imdb,
        tmdb=int(ids.tmdb) if ids.tmdb else None,
    )


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return fake


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    """The Plex server behind the samples: asked for ids when a payload has only plex:// guids."""
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie(
        "8372",
        "3:10 to Yuma",
        1957,
        [f"imdb://{YUMA_IMDB}"],
        guid="plex://movie/5d7768a696b655001fdc0e5c",
    )
    return fake


@pytest.fixture
def app(tmp_path: Path, trakt: FakeTrakt, plex: FakePlex) -> Iterator[AppThread]:
    users = {"plex": ["1", "48151623"], "jellyfin": [], "emby": [], "tautulli": []}
    for source, name in SAMPLES:
        for event in _events(source, sample_bytes(source, name)):
            users[source] += [v for v in (event.account.id, event.account.name) if v]
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "{plex.url}", token: {PLEX_TOKEN}}}
profiles:
  me:
    default: true
    users: {users}
    accounts: {{trakt: {{}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        yield thread


def _events(source: str, body: bytes, content_type: str = "application/json") -> list[MediaEvent]:
    result = parse(source, body, content_type)
    return result.events if isinstance(result, Accepted) else []


def _expect(trakt: FakeTrakt, event: MediaEvent) -> Callable[[], bool]:
    """What the fake Trakt holds once this event (alone, in a fresh session) is delivered."""
    if event.action == "rate":
        if event.rating is None:
            return lambda: trakt.ratings() == []
        wanted = ratings.to_trakt(event.rating)
        return lambda: [r.rating for r in trakt.ratings()] == [wanted]
    if event.played or (event.action == "stop" and (event.progress or 0) >= THRESHOLD):
        return lambda: len(trakt.history()) == 1
    if event.action in ("start", "resume", "progress"):
        return lambda: trakt.watching() is not None
    # A pause, or a stop short of the threshold: Trakt hears a pause and records no play.
    return lambda: trakt.count("POST", "/scrobble/pause") == 1 and trakt.history() == []


def _lands_as_it_should(
    app: AppThread, trakt: FakeTrakt, source: str, body: bytes, content_type: str
) -> None:
    events = _events(source, body, content_type)
    for event in events:
        seed(trakt, event)
    response = httpx.post(
        f"{app.url}/webhooks/{source}/{SECRET}",
        content=body,
        headers={"content-type": content_type},
    )
    assert response.status_code in (200, 202), response.text
    if not events:
        assert response.status_code == 200
        time.sleep(0.2)
        assert trakt.history() == [] and trakt.ratings() == [] and trakt.watching() is None
        return
    assert wait_for(_expect(trakt, events[0])), f"Trakt did not end up as expected: {events[0]}"


@pytest.mark.parametrize(("source", "name"), SAMPLES, ids=[f"{s}/{n}" for s, n in SAMPLES])
def test_sample_reaches_trakt_as_it_should(
    app: AppThread, trakt: FakeTrakt, source: str, name: str
) -> None:
    _lands_as_it_should(app, trakt, source, sample_bytes(source, name), "application/json")


@pytest.mark.parametrize(("source", "stem"), RAW, ids=[f"{s}/{n}" for s, n in RAW])
def test_captured_multipart_bodies_reach_trakt_as_they_should(
    app: AppThread, trakt: FakeTrakt, source: str, stem: str
) -> None:
    body, content_type = raw_request(source, stem)
    assert _events(source, body, content_type), "the captured body should parse"
    _lands_as_it_should(app, trakt, source, body, content_type)


def test_fixture_folder_is_complete() -> None:
    assert (FIXTURES / "plex" / "movie_media_scrobble.json").is_file()
