"""A season rated (or its rating cleared) in Plex, by webhook, to the running app: what Trakt
and Serializd end up holding. Plex's TV Series agent names a season's show by its plex://
guid only (`parentGuid`, `parentRatingKey`): its ids are read from the Plex server."""

from __future__ import annotations

import copy
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN as PLEX_TOKEN
from tests.fakes.plex import FakePlex
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt, wait_for
from tests.ingest_samples import only_event, sample_json
from tests.test_webhooks_e2e import plex_multipart
from watchbridge.config import parse_config
from watchbridge.ingest.common import UNSUPPORTED_TYPE
from watchbridge.ingest.plex import parse
from watchbridge.model import Ids, Ignored
from watchbridge.wiring import build_app, build_runtime

SECRET = "season-ratings-secret"
SAMPLE = "season_new_agent_media_rate.json"  # Breaking Bad season 2, rated 8
SHOW_GUID = "plex://show/5d9c086c46115600200aa2fe"
SEASON_2_ID = 3573  # Breaking Bad season 2 on TMDB (and so Serializd)


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_show("Breaking Bad", 2008, imdb="tt0903747", tmdb=1396, tvdb=81189, seasons={2: 13})
    return fake


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_show(
        "51000", "Breaking Bad", 2008, ["imdb://tt0903747", "tmdb://1396", "tvdb://81189"]
    )
    fake.items["51000"]["guid"] = SHOW_GUID
    return fake


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.seed_reference_catalogue()
    return fake


def serve(tmp_path: Path, trakt: FakeTrakt, services: str = "", accounts: str = "") -> AppThread:
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
{services}profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}{accounts}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    thread = AppThread(build_app(runtime))
    thread.__enter__()
    sign_in_trakt(runtime.store, trakt, now=time.time())
    return thread


@pytest.fixture
def app(tmp_path: Path, trakt: FakeTrakt, plex: FakePlex) -> Iterator[AppThread]:
    thread = serve(tmp_path, trakt, f'  plex: {{url: "{plex.url}", token: {PLEX_TOKEN}}}\n')
    yield thread
    thread.__exit__()


def post_plex(app: AppThread, body: dict[str, Any]) -> httpx.Response:
    content, content_type = plex_multipart(body, thumb=False)
    return httpx.post(
        f"{app.url}/webhooks/plex/{SECRET}", content=content, headers={"content-type": content_type}
    )


def season_rated(rating: float | None) -> dict[str, Any]:
    """The sample, rated `rating` (0-10), or cleared (None: no userRating, no rating)."""
    body = copy.deepcopy(sample_json("plex", SAMPLE))
    if rating is None:
        del body["rating"], body["Metadata"]["userRating"]
    else:
        body["rating"] = str(rating)
        body["Metadata"]["userRating"] = rating
    return body


def trakt_ratings(trakt: FakeTrakt) -> list[tuple[str, int, int]]:
    return [(r.item.kind, getattr(r.item, "number", 0), r.rating) for r in trakt.ratings()]


# --------------------------------------------------------------------------- Trakt


def test_a_season_rated_in_plex_is_rated_as_that_season_on_trakt(
    app: AppThread, trakt: FakeTrakt, plex: FakePlex
) -> None:
    assert post_plex(app, season_rated(8.0)).status_code == 202
    wait_for(lambda: trakt_ratings(trakt) == [("season", 2, 8)])
    assert plex.requests[-1].path == "/library/metadata/51000"  # the show, for its ids


def test_a_season_rating_cleared_in_plex_is_removed_on_trakt(
    app: AppThread, trakt: FakeTrakt
) -> None:
    assert post_plex(app, season_rated(7.0)).status_code == 202
    wait_for(lambda: trakt_ratings(trakt) == [("season", 2, 7)])
    time.sleep(1.1)  # a later second: another change
    assert post_plex(app, season_rated(None)).status_code == 202
    wait_for(lambda: trakt.ratings() == [])


def test_without_the_plex_server_a_season_rating_waits_saying_what_to_set(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    app = serve(tmp_path, trakt)
    try:
        assert post_plex(app, season_rated(8.0)).status_code == 202

        def last_error() -> str:
            with sqlite3.connect(tmp_path / "wb.db") as db:
                row = db.execute("SELECT last_error FROM outbox WHERE target = 'trakt'").fetchone()
            return str(row[0] if row else "")

        wait_for(lambda: last_error().startswith("unmatched:"))
    finally:
        app.__exit__()
    assert "services.plex.url and services.plex.token" in last_error()
    assert "Breaking Bad season 2" in last_error()
    assert trakt.ratings() == []


# --------------------------------------------------------------------------- Serializd


def test_a_season_rated_in_plex_is_that_seasons_rating_on_serializd(
    tmp_path: Path, trakt: FakeTrakt, plex: FakePlex, serializd: FakeSerializd
) -> None:
    email, password, _ = ALICE
    app = serve(
        tmp_path,
        trakt,
        f'  plex: {{url: "{plex.url}", token: {PLEX_TOKEN}}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n',
        f', serializd: {{email: "{email}", password: "{password}"}}',
    )
    try:
        assert post_plex(app, season_rated(8.0)).status_code == 202

        def rated() -> list[tuple[int | None, int | None, int]]:
            return [(r.season_id, r.episode_number, r.rating) for r in serializd.diary()]

        wait_for(lambda: rated() == [(SEASON_2_ID, None, 8)])
        wait_for(lambda: trakt_ratings(trakt) == [("season", 2, 8)])
        time.sleep(1.1)
        assert post_plex(app, season_rated(None)).status_code == 202
        wait_for(lambda: rated() == [] and trakt.ratings() == [])
    finally:
        app.__exit__()


# --------------------------------------------------------------------------- parsing


def test_a_season_is_read_by_its_show_and_number() -> None:
    item = only_event(parse(sample_json("plex", SAMPLE))).item
    assert (item.kind, item.show_ids, item.season) == ("season", Ids(plex_guid=SHOW_GUID), 2)
    assert (item.show_title, item.source_key, item.show_source_key) == (
        "Breaking Bad",
        "51002",
        "51000",
    )


def test_a_seasons_own_ids_are_never_taken_for_its_shows() -> None:
    # TMDB's season id 3573 is no show's id (TMDB show 3573 is another show altogether).
    body = season_rated(8.0)
    body["Metadata"]["Guid"] = [{"id": "tmdb://3573"}, {"id": "tvdb://30272"}]
    item = only_event(parse(body)).item
    assert (item.ids, item.show_ids) == (Ids(), Ids(plex_guid=SHOW_GUID))


def test_a_legacy_agent_season_names_its_show_in_its_guid() -> None:
    item = only_event(parse(sample_json("plex", "season_legacy_media_rate.json"))).item
    assert (item.kind, item.show_ids, item.season) == ("season", Ids(tvdb="81189"), 5)


@pytest.mark.parametrize(
    "changes",
    [
        {"parentRatingKey": None},  # a plex:// show and nothing to read its ids by
        {"index": None},  # no number
        # HAMA's tvdb4 mode: its seasons are story arcs, no TheTVDB season.
        {"guid": "com.plexapp.agents.hama://tvdb4-81797/2?lang=en", "parentGuid": None},
    ],
)
def test_a_season_that_cannot_be_placed_is_acknowledged_and_ignored(
    changes: dict[str, Any],
) -> None:
    body = season_rated(8.0)
    for key, value in changes.items():
        if value is None:
            body["Metadata"].pop(key)
        else:
            body["Metadata"][key] = value
    assert parse(body) == Ignored(UNSUPPORTED_TYPE)
