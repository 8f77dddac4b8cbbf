"""Ratings end to end, from what the user does to what Trakt ends up holding: cases found in a
review of the ratings paths (each names what went wrong before)."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, nothing_waits, sign_in_trakt, wait_for
from tests.ingest_samples import sample_json
from tests.linkrig import Rig, ratings_rig
from tests.test_webhooks_e2e import plex_multipart
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime

SECRET = "ratings-review-secret"

SHOW = 1396  # Breaking Bad (TMDB)


@pytest.fixture
async def link(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with ratings_rig(tmp_path, start_fake, monkeypatch) as rig:
        yield rig


def trakt_ratings(rig: Rig) -> dict[tuple[str, int | None], int]:
    return {
        (r.item.kind, getattr(r.item, "number", None) if r.item.kind == "season" else None): (
            r.rating
        )
        for r in rig.trakt.ratings()
    }


@pytest.mark.anyio
async def test_a_show_and_a_season_rating_removed_together_are_both_removed_on_trakt(
    link: Rig,
) -> None:
    show = link.serializd.log_entry(None, SHOW, None, None, rating=8, is_log=False)
    season = link.serializd.log_entry(None, SHOW, 2, None, rating=6, is_log=False)
    await link.sync_and_deliver()
    assert trakt_ratings(link) == {("show", None): 8, ("season", 2): 6}
    with link.serializd.lock:  # the user clears both on serializd.com
        link.serializd.user.reviews.remove(show)
        link.serializd.user.reviews.remove(season)
    await link.sync_and_deliver(full=True)
    assert trakt_ratings(link) == {}
    await link.sync_and_deliver(full=True)
    assert (trakt_ratings(link), link.serializd.diary()) == ({}, [])


# --------------------------------------------------------------------------- webhooks to Trakt


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return fake


@pytest.fixture
def app(tmp_path: Path, trakt: FakeTrakt) -> Iterator[AppThread]:
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{users: {{plex: ["1"], jellyfin: [alex], emby: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        yield thread


def post_plex(app: AppThread, body: dict[str, Any]) -> httpx.Response:
    content, content_type = plex_multipart(body, thumb=False)
    return httpx.post(
        f"{app.url}/webhooks/plex/{SECRET}", content=content, headers={"content-type": content_type}
    )


def plex_show_rated(rating: float) -> dict[str, Any]:
    """Plex's media.rate for a whole show (Plex TV Series agent), rated `rating` (0-10)."""
    body = copy.deepcopy(sample_json("plex", "movie_media_rate.json"))
    metadata = {
        key: value
        for key, value in body["Metadata"].items()
        if key not in ("duration", "viewCount", "lastViewedAt", "studio", "tagline")
    }
    body["Metadata"] = metadata | {
        "librarySectionType": "show",
        "librarySectionTitle": "TV Shows",
        "ratingKey": "51000",
        "key": "/library/metadata/51000/children",
        "guid": "plex://show/5d9c086c46115600200aa2fe",
        "type": "show",
        "title": "Breaking Bad",
        "year": 2008,
        "Guid": [{"id": "imdb://tt0903747"}, {"id": "tmdb://1396"}, {"id": "tvdb://81189"}],
        "userRating": rating,
    }
    body["rating"] = str(rating)
    return body


def test_a_show_rated_in_plex_is_rated_as_the_show_on_trakt(
    app: AppThread, trakt: FakeTrakt
) -> None:
    trakt.add_show("Breaking Bad", 2008, tmdb=SHOW, tvdb=81189, imdb="tt0903747")
    assert post_plex(app, plex_show_rated(9.0)).status_code == 202
    wait_for(lambda: [(r.item.kind, r.rating) for r in trakt.ratings()] == [("show", 9)])


def test_a_show_rating_cleared_in_plex_is_removed_on_trakt(
    app: AppThread, trakt: FakeTrakt
) -> None:
    trakt.add_show("Breaking Bad", 2008, tmdb=SHOW, tvdb=81189, imdb="tt0903747")
    assert post_plex(app, plex_show_rated(8.0)).status_code == 202
    wait_for(lambda: [r.rating for r in trakt.ratings()] == [8])
    time.sleep(1.1)  # a later second: another change
    cleared = plex_show_rated(0)
    del cleared["rating"], cleared["Metadata"]["userRating"]
    assert post_plex(app, cleared).status_code == 202
    wait_for(lambda: trakt.ratings() == [])


def test_a_show_rated_in_plex_without_its_ids_is_acknowledged_and_not_a_dead_letter(
    app: AppThread, trakt: FakeTrakt
) -> None:
    body = plex_show_rated(9.0)
    del body["Metadata"]["Guid"]  # older servers leave it out
    assert post_plex(app, body).status_code == 200


def movie_rated(rating: float, given_at: int) -> dict[str, Any]:
    """Plex's media.rate of Arrival, rated `rating` (0-10) at `given_at` (its lastRatedAt)."""
    body = copy.deepcopy(sample_json("plex", "movie_media_rate.json"))
    body["Metadata"] |= {"userRating": rating, "lastRatedAt": given_at}
    body["rating"] = str(rating)
    return body


def test_a_plex_rating_posted_after_a_later_one_does_not_overwrite_it_on_trakt(
    app: AppThread, trakt: FakeTrakt, tmp_path: Path
) -> None:
    # Plex posts webhooks unordered (best effort): 3.5 stars then 4 stars a few seconds later,
    # the 4 stars' post first. What Trakt keeps is the last write: before, the 7.
    trakt.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    given = int(time.time()) - 5
    assert post_plex(app, movie_rated(8.0, given + 3)).status_code == 202
    wait_for(lambda: [r.rating for r in trakt.ratings()] == [8])
    assert post_plex(app, movie_rated(7.0, given)).status_code in (200, 202)
    wait_for(lambda: nothing_waits(tmp_path / "wb.db"))
    assert [r.rating for r in trakt.ratings()] == [8]
