"""Every sample payload of every source, posted to the running app: what does Trakt end up with?

The expected outcome of each sample is written out by hand (which item, and whether it ends as
a play, a rating, watching, a pause or nothing), and checked on the fake Trakt's state, not on
what watchbridge sent: a parser that misread a sample cannot move its own expectation.
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
from tests.fakes.trakt import CLIENT_ID, Episode, FakeTrakt, Movie, Season
from tests.harness import AppThread, sign_in_trakt
from tests.ingest_samples import payload_names, raw_request, sample_bytes
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "sample-secret"
YUMA_IMDB = "tt0050086"

# The items the samples name, by a key of the catalogue `seed_catalogue` gives the fake Trakt.
ARRIVAL, HEAT, YUMA = "Arrival", "Heat", "3:10 to Yuma"
FELINA, OZYMANDIAS, BAKI = "Breaking Bad 5x16", "Breaking Bad 5x14", "Baki Hanma 1x1"
BB_SEASON_2, BB_SEASON_5 = "Breaking Bad season 2", "Breaking Bad season 5"
BB_SHOW_GUID = "plex://show/5d9c086c46115600200aa2fe"  # the new-agent season sample's show

# (source, sample) -> (what Trakt ends up with, the item; for a rating, Trakt's 1-10 value).
# "play": one play in history; "watching": shown as watching; "pause": a paused scrobble and no
# play; "nothing": no change at all (acknowledged and ignored); "unchanged": taken (a favourite
# with no rating: a clear of a rating watchbridge had, which it has none of here), no change.
EXPECTED: dict[tuple[str, str], tuple[str, str | None, int | None]] = {
    ("plex", "episode_legacy_media_pause.json"): ("pause", FELINA, None),
    ("plex", "episode_legacy_media_play.json"): ("watching", FELINA, None),
    ("plex", "episode_legacy_media_rate.json"): ("rating", FELINA, 10),
    ("plex", "episode_legacy_media_resume.json"): ("watching", FELINA, None),
    ("plex", "episode_legacy_media_scrobble.json"): ("play", FELINA, None),
    ("plex", "episode_legacy_media_stop.json"): ("play", FELINA, None),  # 99 %
    ("plex", "episode_new_agent_friend_media_scrobble.json"): ("play", BAKI, None),
    ("plex", "movie_legacy_imdb_media_scrobble.json"): ("play", HEAT, None),
    ("plex", "movie_library_new.json"): ("nothing", None, None),
    ("plex", "movie_media_pause.json"): ("pause", ARRIVAL, None),
    ("plex", "movie_media_play.json"): ("watching", ARRIVAL, None),
    ("plex", "movie_media_rate.json"): ("rating", ARRIVAL, 9),
    ("plex", "movie_media_resume.json"): ("watching", ARRIVAL, None),
    ("plex", "movie_media_scrobble.json"): ("play", ARRIVAL, None),
    ("plex", "movie_media_stop.json"): ("play", ARRIVAL, None),  # 96 %
    ("plex", "movie_new_agent_no_guid_array_media_scrobble.json"): ("play", YUMA, None),
    ("plex", "owner_playback_started_friend.json"): ("nothing", None, None),
    ("plex", "season_legacy_media_rate.json"): ("rating", BB_SEASON_5, 7),
    ("plex", "season_new_agent_media_rate.json"): ("rating", BB_SEASON_2, 8),
    ("plex", "track_media_play.json"): ("nothing", None, None),
    ("plex", "trailer_clip_media_play.json"): ("nothing", None, None),
    ("plex", "vod_catalog_media_stop.json"): ("nothing", None, None),
    ("jellyfin", "playback_progress_episode_paused.json"): ("pause", OZYMANDIAS, None),
    ("jellyfin", "playback_start_episode.json"): ("watching", OZYMANDIAS, None),
    ("jellyfin", "playback_stop_episode_completed.json"): ("play", OZYMANDIAS, None),
    ("jellyfin", "template_rendered_playback_stop.json"): ("play", OZYMANDIAS, None),
    ("jellyfin", "user_data_saved_toggle_played_movie.json"): ("play", ARRIVAL, None),
    ("jellyfin", "user_data_saved_update_rating_movie.json"): ("nothing", None, None),
    ("emby", "item_markplayed_movie.json"): ("play", ARRIVAL, None),
    ("emby", "item_rate_favorite_movie.json"): ("unchanged", None, None),
    ("emby", "playback_pause_episode.json"): ("pause", OZYMANDIAS, None),
    ("emby", "playback_start_episode.json"): ("watching", OZYMANDIAS, None),
    ("emby", "playback_stop_episode_completed.json"): ("play", OZYMANDIAS, None),
    ("tautulli", "pause_episode.json"): ("pause", FELINA, None),
    ("tautulli", "play_episode.json"): ("watching", FELINA, None),
    ("tautulli", "stop_episode.json"): ("play", FELINA, None),  # 99 %
    ("tautulli", "watched_episode.json"): ("play", FELINA, None),
    ("tautulli", "watched_movie.json"): ("play", ARRIVAL, None),
}
RAW_EXPECTED = {
    ("plex", "multipart_movie_media_play"): ("watching", ARRIVAL, None),
    ("plex", "multipart_episode_media_pause_plain_field"): ("pause", FELINA, None),
    ("emby", "multipart_playback_stop_episode"): ("play", OZYMANDIAS, None),
}
SAMPLES = [
    (source, name)
    for source in ("plex", "jellyfin", "emby", "tautulli")
    for name in payload_names(source)
]


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def seed_catalogue(trakt: FakeTrakt) -> dict[str, Movie | Episode | Season]:
    """What Trakt knows of the samples' items, with their real ids."""
    breaking_bad = trakt.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189)
    baki = trakt.add_show("Baki Hanma", 2021)  # its Plex guid names it by plex:// only
    return {
        ARRIVAL: trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865),
        HEAT: trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949),
        YUMA: trakt.add_movie("3:10 to Yuma", 1957, imdb=YUMA_IMDB),  # named by Plex only
        FELINA: trakt.add_episode(breaking_bad, 5, 16, title="Felina", imdb="tt2301455"),
        OZYMANDIAS: trakt.add_episode(
            breaking_bad, 5, 14, title="Ozymandias", imdb="tt2301451", tmdb=62161, tvdb=4637661
        ),
        BAKI: trakt.add_episode(baki, 1, 1, imdb="tt14765720", tmdb=3087250, tvdb=8530933),
        BB_SEASON_2: trakt.add_season(breaking_bad, 2, tmdb=3573),
        BB_SEASON_5: trakt.add_season(breaking_bad, 5),
    }


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
    fake.add_show(
        "51000",
        "Breaking Bad",
        2008,
        ["imdb://tt0903747", "tmdb://1396", "tvdb://81189"],
        guid=BB_SHOW_GUID,
    )
    return fake


@pytest.fixture
def catalogue(trakt: FakeTrakt) -> dict[str, Movie | Episode | Season]:
    return seed_catalogue(trakt)


@pytest.fixture
def app(
    tmp_path: Path, trakt: FakeTrakt, plex: FakePlex, catalogue: dict[str, Movie | Episode | Season]
) -> Iterator[AppThread]:
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
    users: {{plex: ["1", "48151623"]}}
    accounts: {{trakt: {{}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        yield thread


def _ended_as(
    trakt: FakeTrakt, outcome: str, item: Movie | Episode | Season | None, rating: int | None
) -> Callable[[], bool]:
    """Whether the fake Trakt holds what `outcome` says of `item` (and nothing else)."""
    if outcome == "play":
        return lambda: [entry.item for entry in trakt.history()] == [item]
    if outcome == "watching":
        return lambda: (now := trakt.watching()) is not None and now.item is item
    if outcome == "pause":
        return lambda: (
            trakt.count("POST", "/scrobble/pause") == 1
            and trakt.history() == []
            and [p.item for p in trakt.playback()] == [item]
        )
    if outcome == "rating":
        return lambda: [(r.item, r.rating) for r in trakt.ratings()] == [(item, rating)]
    raise AssertionError(f"unknown outcome {outcome}")


def _lands_as_it_should(
    app: AppThread,
    trakt: FakeTrakt,
    catalogue: dict[str, Movie | Episode | Season],
    body: bytes,
    content_type: str,
    source: str,
    expected: tuple[str, str | None, int | None],
) -> None:
    outcome, key, rating = expected
    response = httpx.post(
        f"{app.url}/webhooks/{source}/{SECRET}",
        content=body,
        headers={"content-type": content_type},
    )
    if outcome == "unchanged":
        assert response.json() == {"status": "accepted", "queued": 0}, response.text
    if outcome in ("nothing", "unchanged"):
        assert response.status_code == (200 if outcome == "nothing" else 202), response.text
        time.sleep(0.2)
        assert trakt.history() == [] and trakt.ratings() == [] and trakt.watching() is None
        return
    assert response.status_code == 202, response.text
    item = catalogue[key] if key else None
    assert wait_for(_ended_as(trakt, outcome, item, rating)), (
        f"Trakt did not end with {outcome} of {key}: history {trakt.history()}, "
        f"watching {trakt.watching()}, ratings {trakt.ratings()}"
    )


def test_every_sample_has_its_expected_outcome_written_out() -> None:
    assert sorted(EXPECTED) == sorted(SAMPLES)


@pytest.mark.parametrize(("source", "name"), SAMPLES, ids=[f"{s}/{n}" for s, n in SAMPLES])
def test_sample_reaches_trakt_as_it_should(
    app: AppThread,
    trakt: FakeTrakt,
    catalogue: dict[str, Movie | Episode | Season],
    source: str,
    name: str,
) -> None:
    body = sample_bytes(source, name)
    expected = EXPECTED[source, name]
    _lands_as_it_should(app, trakt, catalogue, body, "application/json", source, expected)


@pytest.mark.parametrize(
    ("source", "stem"), list(RAW_EXPECTED), ids=[f"{s}/{n}" for s, n in RAW_EXPECTED]
)
def test_captured_multipart_bodies_reach_trakt_as_they_should(
    app: AppThread,
    trakt: FakeTrakt,
    catalogue: dict[str, Movie | Episode | Season],
    source: str,
    stem: str,
) -> None:
    body, content_type = raw_request(source, stem)
    expected = RAW_EXPECTED[source, stem]
    _lands_as_it_should(app, trakt, catalogue, body, content_type, source, expected)
