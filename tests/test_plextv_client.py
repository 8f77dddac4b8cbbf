"""The plex.tv / discover client against the stateful fake: PIN sign-in, users and server
tokens, the watchlist (including its 404 failure mode) and matching by external id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plextv import FakePlexTv
from watchbridge.config import PlexConfig, Secret
from watchbridge.http import RetryPolicy
from watchbridge.model import Ids
from watchbridge.services.plextv import (
    Pin,
    PlexTvAuthError,
    PlexTvClient,
    PlexTvError,
    WatchlistUnavailable,
    auth_url,
)
from watchbridge.store import Store

pytestmark = pytest.mark.anyio
CLIENT_ID = "3c1d6a2e-watchbridge-install"
MACHINE = "d3a1f0c2b4e6a8c0e2f4a6b8c0d2e4f6a8b07c6d"
ARRIVAL = ["imdb://tt2543164", "tmdb://329865", "tvdb://1204"]
GOT = ["imdb://tt0944947", "tmdb://1399", "tvdb://121361"]


@pytest.fixture
def plextv(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlexTv:
    fake = start_fake(FakePlexTv())
    assert isinstance(fake, FakePlexTv)
    return fake


def make_client(
    plextv: FakePlexTv, store: Store, client_id: str = CLIENT_ID, **tokens: str
) -> PlexTvClient:
    config = PlexConfig(account_url=plextv.url, discover_url=plextv.url, metadata_url=plextv.url)
    now = [1_800_000_000.0]

    async def no_wait(seconds: float) -> None:  # time passes without waiting
        now[0] += seconds
        await asyncio.sleep(0)

    client = PlexTvClient(
        config,
        store,
        client_identifier=client_id,
        account_tokens={name: Secret(value) for name, value in tokens.items()},
        clock=lambda: now[0],
        sleep=no_wait,
    )
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    return client


@pytest.fixture
async def client(plextv: FakePlexTv, store: Store) -> AsyncIterator[PlexTvClient]:
    client = make_client(plextv, store, me=plextv.owner.token)
    yield client
    await client.aclose()


# --------------------------------------------------------------------------- sign-in


async def test_pin_sign_in_stores_the_token_for_the_profile(
    plextv: FakePlexTv, store: Store
) -> None:
    client = make_client(plextv, store)
    shown: list[tuple[Pin, str]] = []

    def show(pin: Pin, url: str) -> None:
        shown.append((pin, url))
        plextv.approve_pin(pin.id)  # the person approves in their browser

    account = await client.sign_in("me", show)
    await client.aclose()
    assert account.username == "alex"
    assert store.get_token("plex", "me") == {
        "token": plextv.owner.token,
        "plextv_id": account.id,
        "username": "alex",
    }
    pin, url = shown[0]
    assert len(pin.code) >= 20  # strong PIN for the app.plex.tv link
    query = parse_qs(urlsplit(url).fragment.lstrip("?"))
    assert query["clientID"] == [CLIENT_ID] and query["code"] == [pin.code]


async def test_pin_is_created_strong_with_the_stable_client_identifier(
    plextv: FakePlexTv, store: Store
) -> None:
    client = make_client(plextv, store)
    pin = await client.create_pin()
    await client.aclose()
    (request,) = plextv.calls("POST", "/api/v2/pins")
    assert request.query == {"strong": "true"}
    assert request.headers["x-plex-client-identifier"] == CLIENT_ID
    assert request.headers["x-plex-product"] == "watchbridge"
    assert plextv.pins[pin.id].client_identifier == CLIENT_ID


async def test_a_pin_polled_with_another_client_identifier_is_unknown(
    plextv: FakePlexTv, store: Store
) -> None:
    first = make_client(plextv, store)
    pin = await first.create_pin()
    await first.aclose()
    other = make_client(plextv, store, client_id="a-new-random-id")
    with pytest.raises(PlexTvAuthError, match="run the sign-in again"):
        await other.check_pin(pin.id)
    await other.aclose()


async def test_a_pin_never_approved_expires_with_a_clear_message(
    plextv: FakePlexTv, store: Store
) -> None:
    client = make_client(plextv, store)
    with pytest.raises(PlexTvAuthError, match="expired before it was approved"):
        await client.sign_in("me", lambda pin, url: None, timeout=5)
    await client.aclose()
    assert store.get_token("plex", "me") is None
    assert plextv.count("GET", "/api/v2/pins/{id}") >= 3


async def test_a_profile_without_sign_in_is_told_how_to_sign_in(
    plextv: FakePlexTv, store: Store
) -> None:
    client = make_client(plextv, store)
    with pytest.raises(PlexTvAuthError, match="watchbridge auth plex --profile kid"):
        await client.watchlist("kid")
    await client.aclose()


def test_the_auth_link_names_the_client_and_the_code() -> None:
    url = auth_url(Pin(1, "abcdefghijklmnopqrstuvwxy"), CLIENT_ID)
    assert url.startswith("https://app.plex.tv/auth#?clientID=" + CLIENT_ID)
    assert "code=abcdefghijklmnopqrstuvwxy" in url


# --------------------------------------------------------------------------- users and tokens


async def test_account_and_home_users(client: PlexTvClient, plextv: FakePlexTv) -> None:
    kid = plextv.add_account("Kid", managed=True)
    account = await client.account(plextv.owner.token)
    assert (account.id, account.username) == (plextv.owner.id, "alex")
    users = await client.home_users(plextv.owner.token)
    assert [(u.title, u.admin, u.managed) for u in users] == [
        ("alex", True, False),
        ("Kid", False, True),
    ]
    assert users[1].id == kid.id


async def test_a_friends_token_for_this_server_comes_from_shared_servers(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    plextv.add_server(MACHINE)
    jamie = plextv.add_account("jamie.r")
    token = plextv.share_server(MACHINE, jamie)
    shares = await client.shared_servers(plextv.owner.token, MACHINE)
    assert [(s.user_id, s.username) for s in shares] == [(jamie.id, "jamie.r")]
    assert token not in repr(shares)  # tokens never show in reprs
    assert await client.server_token_for(plextv.owner.token, MACHINE, "jamie.r") == token
    assert await client.server_token_for(plextv.owner.token, MACHINE, str(jamie.id)) == token


async def test_a_managed_users_token_comes_from_switching_then_resources(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    plextv.add_server(MACHINE)
    kid = plextv.add_account("Kid", managed=True)
    server_token = plextv.share_server(MACHINE, kid)
    assert await client.server_token_for(plextv.owner.token, MACHINE, "kid") == server_token
    assert plextv.count("POST", "/api/home/users/{id}/switch") == 1


async def test_a_protected_home_user_needs_their_pin(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    kid = plextv.add_account("Kid", managed=True, pin="1234")
    with pytest.raises(PlexTvError, match="a PIN is needed"):
        await client.switch_home_user(plextv.owner.token, kid.id)
    assert await client.switch_home_user(plextv.owner.token, kid.id, pin="1234") == kid.token


async def test_a_user_without_access_to_the_server_is_an_error(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    plextv.add_server(MACHINE)
    with pytest.raises(PlexTvError, match="no access to server"):
        await client.server_token_for(plextv.owner.token, MACHINE, "stranger")


async def test_a_home_user_the_server_is_not_shared_with_gets_no_token_for_it(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    plextv.add_server(MACHINE)
    plextv.add_account("Kid", managed=True)
    with pytest.raises(PlexTvError, match="no access to server"):  # not their switch token
        await client.server_token_for(plextv.owner.token, MACHINE, "kid")


async def test_a_rejected_token_is_an_auth_error(client: PlexTvClient) -> None:
    with pytest.raises(PlexTvAuthError, match="401"):
        await client.account("not-a-token")


# --------------------------------------------------------------------------- watchlist


async def test_a_sign_in_is_the_plex_tv_token_even_when_a_token_is_pasted(
    plextv: FakePlexTv, store: Store
) -> None:
    client = make_client(plextv, store, me="a-token-for-the-server")
    store.put_token("plex", "me", {"token": plextv.owner.token}, 0.0)
    try:
        assert await client.watchlist("me") == []
    finally:
        await client.aclose()


async def test_a_pasted_server_token_refused_by_plex_tv_says_to_sign_in(
    plextv: FakePlexTv, store: Store
) -> None:
    client = make_client(plextv, store, me="a-token-for-the-server")
    try:
        with pytest.raises(PlexTvAuthError) as refused:
            await client.watchlist("me")
    finally:
        await client.aclose()
    said = refused.value.message
    assert "profiles.me.accounts.plex.token may be a token for the Plex server" in said, said
    assert "`watchbridge auth plex --profile me`" in said, said


async def test_watchlist_is_read_in_pages_with_external_ids(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    for n in range(230):
        plextv.watchlist_add(plextv.owner, plextv.add_title("movie", f"Movie {n}", 2000))
    got = plextv.add_title("show", "Game of Thrones", 2011, GOT)
    plextv.watchlist_add(plextv.owner, got)
    items = await client.watchlist("me")
    assert len(items) == 231
    assert plextv.count("GET", "/library/sections/watchlist/all") == 3  # pages of 100
    show = next(i for i in items if i.kind == "show")
    assert show.rating_key == got.rating_key
    assert show.ids == Ids(imdb="tt0944947", tmdb="1399", tvdb="121361")
    request = plextv.calls("GET", "/library/sections/watchlist/all")[0]
    assert request.headers["x-plex-token"] == plextv.owner.token
    assert "X-Plex-Token" not in request.query  # never in the URL


async def test_an_empty_watchlist_is_empty(client: PlexTvClient) -> None:
    assert await client.watchlist("me") == []


async def test_a_watchlist_404_is_an_error_never_an_empty_list(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    plextv.watchlist_add(plextv.owner, plextv.add_title("movie", "Arrival", 2016, ARRIVAL))
    plextv.watchlist_moved = True
    with pytest.raises(WatchlistUnavailable, match="404") as caught:
        await client.watchlist("me")
    assert "services.plex.discover_url" in caught.value.message


async def test_a_watchlist_outage_is_an_error(client: PlexTvClient, plextv: FakePlexTv) -> None:
    plextv.fail_next(2, 503, route="/library/sections/watchlist/all")
    with pytest.raises(WatchlistUnavailable, match="could not be read"):
        await client.watchlist("me")


async def test_a_watchlist_answer_without_a_container_is_an_error(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    plextv.fail_next(1, 200, body={"errors": []}, route="/library/sections/watchlist/all")
    with pytest.raises(WatchlistUnavailable, match="no readable list"):
        await client.watchlist("me")


async def test_add_and_remove_change_the_watchlist(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    arrival = plextv.add_title("movie", "Arrival", 2016, ARRIVAL)
    await client.add_to_watchlist("me", arrival.rating_key)
    await client.add_to_watchlist("me", arrival.rating_key)  # twice is fine
    assert plextv.watchlist() == [arrival]
    assert await client.remove_from_watchlist("me", arrival.rating_key) is True
    assert plextv.watchlist() == []
    assert await client.remove_from_watchlist("me", "0" * 24) is False


async def test_titles_are_matched_by_external_id(client: PlexTvClient, plextv: FakePlexTv) -> None:
    arrival = plextv.add_title("movie", "Arrival", 2016, ARRIVAL)
    found = await client.match("me", "movie", Ids(tmdb="329865"))
    assert found is not None and found.rating_key == arrival.rating_key
    by_imdb = await client.match("me", "movie", Ids(tmdb="1", imdb="tt2543164"))
    assert by_imdb is not None and by_imdb.rating_key == arrival.rating_key
    assert await client.match("me", "show", Ids(tmdb="329865")) is None
    (first, *_rest) = plextv.calls("GET", "/library/metadata/{id}")
    assert first.query == {"type": "1", "guid": "tmdb://329865"}


async def test_details_give_the_ids_a_watchlist_entry_lacks(
    client: PlexTvClient, plextv: FakePlexTv
) -> None:
    arrival = plextv.add_title("movie", "Arrival", 2016, ARRIVAL)
    plextv.watchlist_add(plextv.owner, arrival)
    plextv.watchlist_guids = False
    (entry,) = await client.watchlist("me")
    assert not entry.ids
    details = await client.details("me", arrival.rating_key)
    assert details is not None and details.ids.tmdb == "329865"


async def test_tokens_never_reach_logs_or_errors(
    plextv: FakePlexTv, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(plextv, store, me=plextv.owner.token)
    plextv.fail_next(5, 503)
    with caplog.at_level(logging.DEBUG), pytest.raises(WatchlistUnavailable) as caught:
        await client.watchlist("me")
    await client.aclose()
    assert plextv.owner.token not in caplog.text
    assert plextv.owner.token not in caught.value.message


def test_xml_answers_with_entity_declarations_are_refused() -> None:
    from watchbridge.services.plextv import parse_xml

    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    with pytest.raises(ValueError, match="DOCTYPE"):
        parse_xml(bomb)
    assert parse_xml(b'<user authenticationToken="t"/>').attrib == {"authenticationToken": "t"}
