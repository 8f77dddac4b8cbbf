"""The Jellyfin/Emby client against the fake server: a series' provider ids by its server id."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Literal

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, EMBY_SERIES, JELLYFIN_SERIES, FakeJellyfin, sample_server
from watchbridge.config import EmbyConfig, JellyfinConfig, Secret
from watchbridge.errors import ConfigError
from watchbridge.http import RetryPolicy, Unavailable
from watchbridge.model import Ids
from watchbridge.services.jellyfin import (
    MediaServerAuthError,
    MediaServerClient,
    media_server_client,
)

pytestmark = pytest.mark.anyio

BREAKING_BAD = Ids(imdb="tt0903747", tmdb="1396", tvdb="81189")


@pytest.fixture
def jellyfin(start_fake: Callable[[FakeServer], FakeServer]) -> FakeJellyfin:
    return sample_server(start_fake, "jellyfin")


@pytest.fixture
def emby(start_fake: Callable[[FakeServer], FakeServer]) -> FakeJellyfin:
    return sample_server(start_fake, "emby")


def config_for(fake: FakeJellyfin, key: str = API_KEY) -> JellyfinConfig | EmbyConfig:
    kind = JellyfinConfig if fake.flavour == "jellyfin" else EmbyConfig
    return kind(url=fake.url, api_key=Secret(key))


async def client_for(fake: FakeJellyfin, key: str = API_KEY) -> MediaServerClient:
    client = MediaServerClient(config_for(fake, key))
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    return client


@pytest.fixture
async def jellyfin_client(jellyfin: FakeJellyfin) -> AsyncIterator[MediaServerClient]:
    client = await client_for(jellyfin)
    yield client
    await client.aclose()


@pytest.fixture
async def emby_client(emby: FakeJellyfin) -> AsyncIterator[MediaServerClient]:
    client = await client_for(emby)
    yield client
    await client.aclose()


async def test_jellyfin_series_ids_come_from_items_by_id_with_the_mediabrowser_header(
    jellyfin_client: MediaServerClient, jellyfin: FakeJellyfin
) -> None:
    series = await jellyfin_client.series(JELLYFIN_SERIES)
    assert series is not None
    assert (series.title, series.ids) == ("Breaking Bad", BREAKING_BAD)
    (request,) = jellyfin.requests
    assert request.path == f"/Items/{JELLYFIN_SERIES}"
    assert request.headers["authorization"] == f'MediaBrowser Token="{API_KEY}"'
    assert "x-emby-token" not in request.headers and "api_key" not in request.query


async def test_emby_series_ids_come_from_an_items_query_with_the_emby_token(
    emby_client: MediaServerClient, emby: FakeJellyfin
) -> None:
    series = await emby_client.series(EMBY_SERIES)
    assert series is not None
    assert series.ids == BREAKING_BAD
    (request,) = emby.requests
    assert (request.path, request.query["Ids"]) == ("/Items", EMBY_SERIES)
    assert request.headers["x-emby-token"] == API_KEY
    assert "api_key" not in request.query  # keys stay out of URLs (and so out of logs)


async def test_an_unknown_series_is_none(
    jellyfin_client: MediaServerClient, emby_client: MediaServerClient
) -> None:
    assert await jellyfin_client.series("00000000000000000000000000000000") is None
    assert await emby_client.series("99999") is None


async def test_an_item_that_is_not_a_series_is_none(
    jellyfin_client: MediaServerClient, jellyfin: FakeJellyfin
) -> None:
    jellyfin.add_item("c7d2a91e4b3f4e6a8d0b1c2e3f4a5b6c", "Ozymandias", "Episode")
    assert await jellyfin_client.series("c7d2a91e4b3f4e6a8d0b1c2e3f4a5b6c") is None


async def test_malformed_provider_ids_are_dropped(
    jellyfin_client: MediaServerClient, jellyfin: FakeJellyfin
) -> None:
    jellyfin.add_series("ab" * 16, "Odd", Tmdb="not-a-number", Imdb="tt0903747", Zap2It="x")
    series = await jellyfin_client.series("ab" * 16)
    assert series is not None and series.ids == Ids(imdb="tt0903747")


@pytest.mark.parametrize("flavour", ["jellyfin", "emby"])
async def test_a_wrong_api_key_is_a_credentials_error_after_one_request(
    start_fake: Callable[[FakeServer], FakeServer], flavour: Literal["jellyfin", "emby"]
) -> None:
    fake = sample_server(start_fake, flavour)
    client = await client_for(fake, key="f" * 32)
    try:
        with pytest.raises(MediaServerAuthError) as raised:
            await client.series(JELLYFIN_SERIES if flavour == "jellyfin" else EMBY_SERIES)
    finally:
        await client.aclose()
    assert f"services.{flavour}.api_key" in raised.value.message
    assert "f" * 32 not in raised.value.message
    # Not retried (only a new key helps); one check that the 401 is the server's own, not
    # an auth proxy's in front of it.
    assert [r.route for r in fake.requests] == [fake.item_route, "/System/Info/Public"]


async def test_a_failing_server_is_unavailable_after_the_inline_retries(
    jellyfin_client: MediaServerClient, jellyfin: FakeJellyfin
) -> None:
    jellyfin.fail_next(2, 503)
    with pytest.raises(Unavailable):
        await jellyfin_client.series(JELLYFIN_SERIES)
    assert len(jellyfin.requests) == 2
    assert await jellyfin_client.series(JELLYFIN_SERIES) is not None  # back: nothing stuck


async def test_nothing_listening_at_the_url_names_the_setting_to_check() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = MediaServerClient(EmbyConfig(url=f"http://127.0.0.1:{port}", api_key=Secret("k")))
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    try:
        with pytest.raises(Unavailable) as raised:
            await client.series(EMBY_SERIES)
    finally:
        await client.aclose()
    assert f"nothing answers at http://127.0.0.1:{port} (services.emby.url)" in raised.value.message


def test_a_server_without_url_or_key_has_no_client() -> None:
    assert media_server_client(None) is None
    assert media_server_client(JellyfinConfig(url="http://jellyfin:8096")) is None
    assert media_server_client(EmbyConfig(url="", api_key=Secret("k"))) is None
    with pytest.raises(ConfigError, match=r"services\.emby\.api_key"):
        MediaServerClient(EmbyConfig(url="http://emby:8096"))


async def test_a_server_that_is_there_answers_even_when_an_item_fails(
    jellyfin_client: MediaServerClient, jellyfin: FakeJellyfin
) -> None:
    jellyfin.fail_next(3, 504, route="/Items/{item_id}")  # a proxy giving up on one item
    assert await jellyfin_client.answers()


async def test_a_server_that_drops_every_connection_does_not_answer(
    emby_client: MediaServerClient, emby: FakeJellyfin
) -> None:
    emby.drop_next(10)
    assert not await emby_client.answers()


async def test_a_proxy_refusing_the_check_does_not_count_as_the_server_answering(
    jellyfin_client: MediaServerClient, jellyfin: FakeJellyfin
) -> None:
    # An auth proxy (or a dead server's proxy page) answering for it is no sign it is up.
    jellyfin.fail_next(1, 401, route="/System/Info/Public")
    assert not await jellyfin_client.answers()
