"""The Plex client against the fake PMS: items found and missing, token handling, errors."""

from __future__ import annotations

import gc
import json
import logging
import socket
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import MODERN_VERSION, OLD_VERSION, TOKEN, FakePlex
from watchbridge.config import PlexConfig, Secret
from watchbridge.errors import ConfigError
from watchbridge.http import RetryPolicy, Unavailable
from watchbridge.ingest.common import obj
from watchbridge.ingest.plex import metadata_ref
from watchbridge.model import Ids
from watchbridge.services.plex import (
    PlexAuthError,
    PlexClient,
    PlexError,
    PlexItem,
    first_metadata,
    item_from_metadata,
    scrobbles_rowless,
)

pytestmark = pytest.mark.anyio

ARRIVAL_GUIDS = ["imdb://tt2543164", "tmdb://329865", "tvdb://1204"]
BREAKING_BAD_GUIDS = ["imdb://tt0903747", "tmdb://1396", "tvdb://81189"]
FELINA_GUIDS = ["imdb://tt2322158", "tmdb://62161", "tvdb://4639463"]
CLIENT_ID = "0f9e8d7c-watchbridge-test"


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie(
        "48213", "Arrival", 2016, ARRIVAL_GUIDS, guid="plex://movie/5d776b59ad5437001f79c6f8"
    )
    fake.add_show("72962", "Breaking Bad", 2008, BREAKING_BAD_GUIDS)
    fake.add_episode("73155", "72962", 5, 16, FELINA_GUIDS, title="Felina")
    return fake


def make_client(plex: FakePlex, token: str | None = TOKEN) -> PlexClient:
    config = PlexConfig(url=plex.url, token=Secret(token) if token is not None else None)
    client = PlexClient(config, client_identifier=CLIENT_ID)
    client.http.retry = RetryPolicy(attempts=3, backoff=0.01, max_inline_wait=0.5)
    return client


@pytest.fixture
async def client(plex: FakePlex) -> AsyncIterator[PlexClient]:
    client = make_client(plex)
    yield client
    await client.aclose()


async def test_movie_is_read_with_ids_from_the_guid_array(
    client: PlexClient, plex: FakePlex
) -> None:
    item = await client.metadata("48213")
    assert item == PlexItem(
        rating_key="48213",
        type="movie",
        title="Arrival",
        year=2016,
        guid="plex://movie/5d776b59ad5437001f79c6f8",
        ids=Ids(
            imdb="tt2543164",
            tmdb="329865",
            tvdb="1204",
            plex_guid="plex://movie/5d776b59ad5437001f79c6f8",
        ),
    )
    assert plex.calls("GET", "/library/metadata/48213")[0].status == 200


async def test_episode_carries_its_own_ids_numbers_and_the_show_key(client: PlexClient) -> None:
    item = await client.metadata("73155")
    assert item is not None
    assert item.type == "episode"
    assert (item.ids.tvdb, item.ids.imdb) == ("4639463", "tt2322158")
    assert item.show_ids == Ids(plex_guid="plex://show/000000000000000000072962")
    assert (item.season, item.number, item.grandparent_rating_key) == (5, 16, "72962")
    assert (item.title, item.show_title) == ("Felina", "Breaking Bad")


async def test_show_is_read_with_its_ids(client: PlexClient) -> None:
    item = await client.metadata("72962")
    assert item is not None
    assert (item.type, item.title, item.year) == ("show", "Breaking Bad", 2008)
    assert (item.ids.tvdb, item.ids.tmdb, item.ids.imdb) == ("81189", "1396", "tt0903747")


async def test_legacy_guids_are_read_like_the_webhook_parser_reads_them(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.add_movie("1187", "Heat", 1995, guid="com.plexapp.agents.imdb://tt0113277?lang=en")
    plex.add_movie("949", "Heat", 1995, guid="com.plexapp.agents.themoviedb://949?lang=en")
    plex.add_show("500", "Breaking Bad", guid="com.plexapp.agents.thetvdb://81189?lang=en")
    plex.add_episode("501", "500", 5, 16, guid="com.plexapp.agents.thetvdb://81189/5/16?lang=en")
    imdb_movie = await client.metadata("1187")
    tmdb_movie = await client.metadata("949")
    show = await client.metadata("500")
    episode = await client.metadata("501")
    assert imdb_movie is not None and imdb_movie.ids == Ids(imdb="tt0113277")
    assert tmdb_movie is not None and tmdb_movie.ids == Ids(tmdb="949")
    assert show is not None and show.ids == Ids(tvdb="81189")
    assert episode is not None
    # A legacy episode guid names the show, with season and number.
    assert (episode.ids, episode.show_ids) == (Ids(), Ids(tvdb="81189"))
    assert (episode.season, episode.number) == (5, 16)


async def test_unknown_rating_key_is_none(client: PlexClient, plex: FakePlex) -> None:
    assert await client.metadata("99999") is None
    assert plex.count("GET", "/library/metadata/{key}") == 1  # a 404 is an answer: no retry


async def test_empty_rating_key_asks_nothing(client: PlexClient, plex: FakePlex) -> None:
    assert await client.metadata("  ") is None
    assert plex.requests == []


async def test_wrong_token_is_an_auth_error(plex: FakePlex) -> None:
    client = make_client(plex, token="not-the-right-token")
    try:
        with pytest.raises(PlexAuthError, match="401"):
            await client.metadata("48213")
    finally:
        await client.aclose()
    assert plex.count("GET", "/library/metadata/{key}") == 1


async def test_missing_token_is_an_auth_error(plex: FakePlex) -> None:
    client = make_client(plex, token=None)
    try:
        with pytest.raises(PlexAuthError):
            await client.metadata("48213")
    finally:
        await client.aclose()
    assert "x-plex-token" not in plex.requests[0].headers


async def test_token_and_identity_go_in_headers_never_in_the_url(
    client: PlexClient, plex: FakePlex
) -> None:
    await client.metadata("48213")
    sent = plex.requests[0]
    assert sent.headers["x-plex-token"] == TOKEN
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["x-plex-client-identifier"] == CLIENT_ID
    assert sent.headers["x-plex-product"] == "watchbridge"
    assert sent.query == {}
    assert TOKEN not in sent.path


async def test_server_errors_are_retried(client: PlexClient, plex: FakePlex) -> None:
    plex.fail_next(2, 503)
    item = await client.metadata("48213")
    assert item is not None and item.title == "Arrival"
    assert plex.count("GET", "/library/metadata/{key}") == 3


async def test_persistent_outage_is_unavailable(client: PlexClient, plex: FakePlex) -> None:
    plex.fail_next(3, 500)
    with pytest.raises(Unavailable):
        await client.metadata("48213")
    assert plex.count("GET", "/library/metadata/{key}") == 3


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (a server moved to another port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_nothing_listening_at_the_url_names_the_setting_to_check() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    client = PlexClient(PlexConfig(url=url, token=Secret(TOKEN)), client_identifier=CLIENT_ID)
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    try:
        with pytest.raises(Unavailable) as raised:
            await client.identity()
    finally:
        await client.aclose()
    assert raised.value.message == (
        f"Plex: the connection was refused after 2 attempt(s): nothing answers at {url} "
        "(services.plex.url); is the server running, or did its address or port change?"
    )


async def test_nothing_listening_at_an_ipv6_address_names_it_as_a_url_would() -> None:
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        url = f"http://[::1]:{probe.getsockname()[1]}"  # bound, not listening: refused
        client = PlexClient(PlexConfig(url=url, token=Secret(TOKEN)), client_identifier=CLIENT_ID)
        client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
        try:
            with pytest.raises(Unavailable) as raised:
                await client.identity()
        finally:
            await client.aclose()
    assert f"nothing answers at {url} (services.plex.url)" in raised.value.message


async def test_a_server_that_answers_errors_is_not_told_to_check_its_address(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.fail_next(3, 500)
    with pytest.raises(Unavailable) as raised:
        await client.metadata("48213")
    assert "services.plex.url" not in raised.value.message


async def test_other_refusals_are_plex_errors(client: PlexClient, plex: FakePlex) -> None:
    plex.fail_next(1, 400)
    with pytest.raises(PlexError, match="400") as caught:
        await client.metadata("48213")
    assert not isinstance(caught.value, PlexAuthError)


async def test_non_json_answer_is_a_plex_error(client: PlexClient, plex: FakePlex) -> None:
    plex.fail_next(1, 200, body="<MediaContainer size='0'/>", content_type="text/xml")
    with pytest.raises(PlexError, match="no JSON"):
        await client.metadata("48213")


async def test_the_fake_answers_xml_without_a_json_accept_header(plex: FakePlex) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=plex.url) as raw:
        answer = await raw.get("/library/metadata/48213", headers={"X-Plex-Token": TOKEN})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")


async def test_token_never_appears_in_logs_or_errors(
    plex: FakePlex, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(plex)
    messages: list[str] = []
    try:
        await client.metadata("48213")
        plex.fail_next(3, 502)
        with pytest.raises(Unavailable) as outage:
            await client.metadata("48213")
        messages.append(str(outage.value))
        plex.token = "rotated-on-the-server"
        with pytest.raises(PlexAuthError) as refused:
            await client.metadata("48213")
        messages += [str(refused.value), repr(refused.value)]
    finally:
        await client.aclose()
    assert caplog.records  # the retries and the outage were logged
    assert TOKEN not in caplog.text
    assert all(TOKEN not in message for message in messages)
    assert TOKEN not in repr(client.config)


async def test_rating_keys_cannot_escape_the_metadata_path(
    client: PlexClient, plex: FakePlex
) -> None:
    assert await client.metadata("../../accounts") is None
    assert plex.requests[0].path == "/library/metadata/..%2F..%2Faccounts"


def test_a_client_needs_the_server_url() -> None:
    with pytest.raises(ConfigError, match=r"services\.plex\.url"):
        PlexClient(PlexConfig(url=None, token=Secret(TOKEN)))


def test_plex_items_survive_the_cache_round_trip() -> None:
    item = PlexItem(
        rating_key="73155",
        type="episode",
        title="Felina",
        ids=Ids(tvdb="4639463", plex_guid="plex://episode/x"),
        show_ids=Ids(plex_guid="plex://show/y"),
        season=5,
        number=16,
        grandparent_rating_key="72962",
    )
    assert PlexItem.from_dict(item.to_dict()) == item


def test_metadata_is_found_in_any_container_shape() -> None:
    movie = {"ratingKey": "1", "type": "movie", "guid": "imdb://tt0113277"}
    for name in ("Metadata", "Video", "Directory"):
        assert first_metadata({"MediaContainer": {"size": 1, name: [movie]}}) == movie
    assert first_metadata({"MediaContainer": {"size": 0}}) == {}
    assert first_metadata([]) == {}
    assert item_from_metadata("1", {}) is None


def test_the_client_and_the_webhook_parser_read_guids_the_same_way() -> None:
    """The service parses Metadata with the ingest parser's guid rules: nothing duplicated."""
    metadata = {
        "ratingKey": "7",
        "type": "episode",
        "guid": "com.plexapp.agents.hama://tvdb3-81797/2/80?lang=en",
        "grandparentRatingKey": "6",
    }
    ref = metadata_ref(metadata, [])
    item = item_from_metadata("7", obj(metadata))
    assert ref is not None and item is not None
    assert (item.show_ids, item.absolute, item.number) == (ref.show_ids, 80, None)
    assert item.grandparent_rating_key == "6"


async def test_identity_names_the_servers_machine_identifier(
    client: PlexClient, plex: FakePlex
) -> None:
    assert await client.identity() == plex.machine_id


async def test_identity_keeps_the_servers_version_and_whether_its_scrobbles_make_rows(
    client: PlexClient, plex: FakePlex
) -> None:
    assert (client.version, client.rowless_scrobbles) == (None, False)  # not known: older
    plex.version = OLD_VERSION
    await client.identity()
    assert (client.version, client.rowless_scrobbles) == (OLD_VERSION, False)
    plex.version = MODERN_VERSION  # updated to a server that writes no row for a mark played
    await client.identity()
    assert (client.version, client.rowless_scrobbles) == (MODERN_VERSION, True)


@pytest.mark.parametrize(
    ("version", "rowless"),
    [
        ("1.40.0.7997-c29d4c0c8", False),
        ("1.40.0.7998-c29d4c0c8", True),
        ("1.40.1.8120-6dc7f7fd8", True),
        ("1.32.8.7639-fb6452ebf", False),
        ("2.0", True),
        ("", False),
        ("unknown", False),
        (None, False),
    ],
)
def test_scrobbles_make_no_history_row_from_pms_1_40_0_7998(
    version: str | None, rowless: bool
) -> None:
    assert scrobbles_rowless(version) is rowless


async def test_item_details_are_read_in_batches_and_a_gone_item_is_left_out(
    client: PlexClient, plex: FakePlex
) -> None:
    for key in range(100, 105):
        plex.add_movie(str(key), f"Movie {key}", 2000)
    found = await client.details([str(k) for k in range(100, 105)] + ["999"], batch=3)
    assert sorted(found) == ["100", "101", "102", "103", "104"]
    assert found["100"]["Media"][0]["Part"][0]["file"] == "/media/100.mkv"
    # 100,101,102 | 103,104,999 (404) -> 103 | 104,999 (404) -> 104 | 999
    assert len(plex.calls("GET", "/library/metadata/{key}")) == 6


async def test_a_server_that_is_there_answers(client: PlexClient) -> None:
    assert await client.answers()


async def test_a_server_whose_proxy_says_it_is_down_does_not_answer(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.fail_next(10, 502)
    assert not await client.answers()


@pytest.fixture
def big_library(plex: FakePlex) -> FakePlex:
    """1,500 more watched episodes of Breaking Bad: 30 pages of 50."""
    for n in range(1500):
        key = str(800_000 + n)
        plex.add_episode(key, "72962", 1 + n // 100, 1 + n % 100, [f"tvdb://{900_000 + n}"])
        plex.watch(key, 1_700_000_000 + n * 60)
    return plex


async def whole_answer_size(plex: FakePlex, path: str, params: dict[str, object]) -> int:
    """Bytes of Python objects the whole answer's JSON decodes to (traced), unpaged."""
    headers = {"accept": "application/json", "x-plex-token": TOKEN}
    async with httpx.AsyncClient(base_url=plex.url, headers=headers) as http:
        body = (await http.get(path, params=params)).content  # type: ignore[arg-type]
    before = tracemalloc.get_traced_memory()[0]
    decoded = json.loads(body)
    size = tracemalloc.get_traced_memory()[0] - before
    del decoded
    return size


@pytest.mark.parametrize("read", ["listing", "history"])
async def test_a_paged_read_never_holds_all_its_rows(
    client: PlexClient, big_library: FakePlex, read: str
) -> None:
    # A first run reads 40,000 episodes: their rows' JSON was held whole (~100 MB) beside
    # the items made of them.
    path, params = {
        "listing": ("/library/sections/2/all", {"type": 4, "includeGuids": 1}),
        "history": ("/status/sessions/history/all", {"accountID": 1}),
    }[read]

    async def read_it() -> list[object]:
        if read == "listing":
            return list(await client.listing("2", "episode", page_size=50))
        return list((await client.history("1", page_size=50)).entries)

    await read_it()  # the connection and what a first request sets up, not measured
    tracemalloc.start()
    try:
        rows = await whole_answer_size(big_library, path, params)
        gc.collect()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        got = await read_it()
        kept, peak = (traced - before for traced in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert len(got) == {"listing": 1501, "history": 1500}[read]
    # Beside what it keeps: about a page (a thirtieth). The fake serves from a thread of this
    # process, so its pages in the making are traced too: under load, up to a third and more.
    assert peak - kept < rows / 2, (peak, kept, rows)


@pytest.mark.parametrize("read", ["listing", "history"])
async def test_a_row_it_cannot_read_on_any_page_refuses_the_whole_read_counting_every_row(
    client: PlexClient, plex: FakePlex, read: str
) -> None:
    for n in range(4):
        plex.add_episode(f"7320{n}", "72962", 1, 1 + n, [])
        plex.watch(f"7320{n}", 1_700_000_000 + n * 60)
    plex.watch("73155", 1_700_000_600)

    def unkeyed(body: dict[str, Any]) -> None:  # one row of the last page loses its key
        for row in body["MediaContainer"].get("Metadata", []):
            if row.get("ratingKey") == "73155":
                row["key"] = row.pop("ratingKey")

    route = {"listing": "GET /library/sections/{key}/all", "history": None}[read]
    if read == "listing":
        plex.reshape_always(unkeyed, route=route)
        told = "the listing of library 2: 1 of 5 rows have no `ratingKey`"
        with pytest.raises(PlexError, match=told):
            await client.listing("2", "episode", page_size=2)
    else:
        plex.reshape_always(unkeyed, route="GET /status/sessions/history/all")
        told = "the watch history: 1 of 5 rows have no `ratingKey`"
        with pytest.raises(PlexError, match=told):
            await client.history("1", page_size=2)
