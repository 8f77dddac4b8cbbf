"""Trakt collection, watchlist and account limits: the client against the stateful fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, VIP_LIMITS, FakeTrakt
from tests.harness import sign_in_trakt
from watchbridge.config import TraktConfig
from watchbridge.http import Pacer
from watchbridge.model import Ids, MediaRef
from watchbridge.services.trakt import (
    CollectionWrite,
    TraktClient,
    TraktLimitError,
)
from watchbridge.store import Store

pytestmark = pytest.mark.anyio
PROFILE = "me"
FIXTURES = Path(__file__).parent / "fixtures" / "trakt"
BATMAN = MediaRef("movie", ids=Ids(tmdb="272"), title="Batman Begins")
TRON = MediaRef("movie", ids=Ids(imdb="tt1104001"))
GUARDIANS = MediaRef("movie", ids=Ids(tmdb="118340"))
GOT = MediaRef("show", ids=Ids(tvdb="121361"))
BOX_CUTTER = MediaRef("episode", show_ids=Ids(tvdb="81189"), season=4, number=1)
DV_ATMOS = {
    "media_type": "bluray",
    "resolution": "uhd_4k",
    "hdr": "dolby_vision",
    "audio": "dolby_atmos",
    "audio_channels": "7.1.4",
}


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.seed_reference_catalogue()
    return fake


@pytest.fixture
async def client(trakt: FakeTrakt, store: Store) -> AsyncIterator[TraktClient]:
    config = TraktConfig(CLIENT_ID, None, api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(config, store, sleep=no_wait)
    client.http.pacers[PROFILE] = Pacer()  # Trakt's 1 write/s pacing is tested in test_http
    sign_in_trakt(store, trakt, PROFILE)
    yield client
    await client.aclose()


# --------------------------------------------------------------------------- settings


async def test_settings_give_the_free_accounts_limits(client: TraktClient) -> None:
    settings = await client.settings(PROFILE)
    assert settings.vip is False
    assert settings.limit("watchlist") == 250
    assert settings.limit("collection") == 1000


async def test_settings_of_a_vip_account(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    vip = trakt.add_user("vera", vip=True)
    sign_in_trakt(store, trakt, "vera", user=vip)
    client.http.pacers["vera"] = Pacer()
    settings = await client.settings("vera")
    assert settings.vip is True and settings.limit("watchlist") == 5000


# --------------------------------------------------------------------------- collection


async def test_collection_add_stores_media_details_as_trakt_lists_them(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    written = await client.add_collection(
        PROFILE,
        [
            CollectionWrite(BATMAN, DV_ATMOS, collected_at=1_788_113_520.0),
            CollectionWrite(BOX_CUTTER, {"media_type": "digital", "resolution": "hd_1080p"}),
        ],
    )
    assert (written.added, written.not_found, written.limit_hit) == (2, [], None)
    movies = await client.collection(PROFILE, "movies")
    sample = load("sync_collection_movies_metadata.json")[0]
    assert set(movies[0]) == set(sample)
    assert movies[0]["metadata"] == DV_ATMOS
    assert movies[0]["collected_at"] == "2026-08-30T18:12:00.000Z"
    (show,) = await client.collection(PROFILE, "shows")
    assert show["show"]["ids"]["tvdb"] == 81189
    assert show["seasons"][0]["episodes"][0]["metadata"]["resolution"] == "hd_1080p"


async def test_sample_collection_request_is_accepted_by_the_fake(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    response = await client._call(  # the sample body exactly as in the reference
        PROFILE, "POST", "/sync/collection", json=load("sync_collection_add_request.json")
    )
    assert response.status_code == 201
    assert response.json()["added"] == load("sync_collection_add_response.json")["added"]


async def test_resending_the_same_details_is_existing_and_new_details_update(
    client: TraktClient,
) -> None:
    await client.add_collection(PROFILE, [CollectionWrite(BATMAN, DV_ATMOS)])
    same = await client.add_collection(PROFILE, [CollectionWrite(BATMAN, DV_ATMOS)])
    assert (same.added, same.existing, same.updated) == (0, 1, 0)
    better = {**DV_ATMOS, "audio_channels": "7.1"}
    changed = await client.add_collection(PROFILE, [CollectionWrite(BATMAN, better)])
    assert changed.updated == 1
    (movie,) = await client.collection(PROFILE, "movies")
    assert movie["metadata"]["audio_channels"] == "7.1"


async def test_collection_remove_and_unknown_items(client: TraktClient) -> None:
    unknown = MediaRef("movie", ids=Ids(tmdb="999999999"))
    added = await client.add_collection(
        PROFILE, [CollectionWrite(BATMAN, {}), CollectionWrite(unknown, {})]
    )
    assert added.added == 1 and added.not_found == [added.not_found[0]]
    assert added.not_found[0].ids.tmdb == "999999999"
    removed = await client.remove_collection(PROFILE, [BATMAN])
    assert removed.deleted == 1
    assert await client.collection(PROFILE, "movies") == []


async def test_collection_reads_every_page(client: TraktClient, trakt: FakeTrakt) -> None:
    for n in range(1, 252):
        trakt.add_show(f"Show {n}", 2000, tmdb=70000 + n, seasons={1: 1})
    episodes = [
        CollectionWrite(
            MediaRef("episode", show_ids=Ids(tmdb=str(70000 + n)), season=1, number=1), {}
        )
        for n in range(1, 252)
    ]
    assert (await client.add_collection(PROFILE, episodes)).added == 251
    shows = await client.collection(PROFILE, "shows")
    assert len(shows) == 251
    assert trakt.count("GET", "/sync/collection/{type}") == 2  # pages of 250


async def test_free_collection_at_its_limit_reports_the_420_and_writes_nothing_more(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.user.limits["collection"] = {"item_count": 2}
    first = await client.add_collection(
        PROFILE, [CollectionWrite(BATMAN, {}), CollectionWrite(TRON, {})]
    )
    assert first.added == 2
    full = await client.add_collection(PROFILE, [CollectionWrite(GUARDIANS, {})])
    assert full.limit_hit is not None
    assert full.limit_hit.limit == 2 and full.limit_hit.vip is False
    assert full.limit_hit.upgrade_url == "https://trakt.tv/vip"
    assert len(trakt.collection()) == 2


async def test_vip_lifts_the_collection_limit(client: TraktClient, trakt: FakeTrakt) -> None:
    trakt.user.limits["collection"] = {"item_count": 1}
    await client.add_collection(PROFILE, [CollectionWrite(BATMAN, {})])
    trakt.user.vip, trakt.user.limits = True, dict(VIP_LIMITS)
    more = await client.add_collection(PROFILE, [CollectionWrite(TRON, {})])
    assert more.added == 1 and more.limit_hit is None


async def test_unknown_metadata_values_are_refused_by_the_fake(client: TraktClient) -> None:
    from watchbridge.services.trakt import TraktError

    with pytest.raises(TraktError, match="422"):
        await client.add_collection(PROFILE, [CollectionWrite(BATMAN, {"hdr": "hdr12"})])


# --------------------------------------------------------------------------- watchlist


async def test_watchlist_add_read_and_remove(client: TraktClient, trakt: FakeTrakt) -> None:
    added = await client.add_watchlist(PROFILE, [BATMAN, GOT])
    assert added.added == 2 and added.item_count == 2
    again = await client.add_watchlist(PROFILE, [BATMAN])
    assert (again.added, again.existing) == (0, 1)
    rows = await client.watchlist(PROFILE)
    assert {r["type"] for r in rows} == {"movie", "show"}
    sample_movie = load("sync_watchlist.json")[1]
    assert set(next(r for r in rows if r["type"] == "movie")) == set(sample_movie)
    removed = await client.remove_watchlist(PROFILE, [GOT])
    assert removed.deleted == 1
    assert [r["type"] for r in await client.watchlist(PROFILE, "shows")] == []


async def test_watchlist_unknown_title_is_reported_not_found(client: TraktClient) -> None:
    unknown = MediaRef("show", ids=Ids(tmdb="424242"))
    result = await client.add_watchlist(PROFILE, [unknown])
    assert result.added == 0 and result.not_found == [unknown]


async def test_free_watchlist_at_its_limit_gives_the_upgrade_url(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.user.limits["watchlist"] = {"item_count": 1}
    await client.add_watchlist(PROFILE, [BATMAN])
    result = await client.add_watchlist(PROFILE, [TRON])
    assert result.limit_hit is not None
    assert (result.limit_hit.limit, result.limit_hit.upgrade_url) == (1, "https://trakt.tv/vip")


async def test_a_420_elsewhere_raises_a_limit_error_with_what_trakt_said(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.account_limit(route="POST /sync/ratings", limit=10000)
    from watchbridge.services.trakt import RatingWrite

    with pytest.raises(TraktLimitError) as caught:
        await client.add_ratings(PROFILE, [RatingWrite(BATMAN, 8, 1_788_000_000.0)])
    assert caught.value.status == 420
    assert caught.value.hit.limit == 10000
    assert "https://trakt.tv/vip" in caught.value.message


async def test_a_bare_420_still_names_the_default_upgrade_page(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.account_limit(route="POST /sync/watchlist", headers=False)
    result = await client.add_watchlist(PROFILE, [BATMAN])
    assert result.limit_hit is not None and result.limit_hit.upgrade_url is None
