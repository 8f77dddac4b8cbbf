"""Jellyfin and Emby behind a reverse proxy (Traefik, nginx, SWAG): while the server's container
restarts, the proxy answers 404 (or its 502 page) for every path, `/System/Info/Public` too.
That is an outage, never "the server has no such series" nor "check services.jellyfin.url": the
play that needs the show's ids waits (no try spent, the unreachable alert) and goes once the
server is back. An answer a proxy could give in the server's place (a 404, a 401, a page) is the
server's own only when `/System/Info/Public` then answers as the server last seen there (its
`Id`); one such answer vouches for a minute. The server's own 404 is still "no such series"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, EMBY_SERIES, JELLYFIN_SERIES, FakeJellyfin, sample_server
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.test_enrich import (
    FAST,
    close_targets,
    drain,
    jellyfin_service,
    post_jellyfin,
    serializd,
    serializd_runtime,
    worker_for,
)
from watchbridge.config import EmbyConfig, JellyfinConfig, Secret
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import IDENTITY_VOUCHES, Unavailable
from watchbridge.services.jellyfin import MediaServerAuthError, MediaServerClient, MediaServerError

pytestmark = pytest.mark.anyio

__all__ = ["close_targets", "serializd"]  # fixtures of test_enrich's used here

Flavour = Literal["jellyfin", "emby"]
NAMES = {"jellyfin": "Jellyfin", "emby": "Emby"}
CHECK = "/System/Info/Public"
UNKNOWN = "0123" * 8  # a Jellyfin item id the server does not hold
LOGIN_PAGE = "<html><body><form>Sign in to continue</form></body></html>"


def not_answering(flavour: Flavour) -> str:
    return f"not the {NAMES[flavour]} server answering"


@pytest.fixture(params=["jellyfin", "emby"])
def server(
    request: pytest.FixtureRequest, start_fake: Callable[[FakeServer], FakeServer]
) -> FakeJellyfin:
    return sample_server(start_fake, request.param)


@pytest.fixture
async def client(server: FakeJellyfin, clock: FakeClock) -> AsyncIterator[MediaServerClient]:
    kind = JellyfinConfig if server.flavour == "jellyfin" else EmbyConfig
    made = MediaServerClient(kind(url=server.url, api_key=Secret(API_KEY)), clock=clock)
    made.http.retry = FAST
    yield made
    await made.aclose()


def series_id(server: FakeJellyfin) -> str:
    return JELLYFIN_SERIES if server.flavour == "jellyfin" else EMBY_SERIES


# What the enricher asks of the client: each must take a proxy's answer for an outage.
CALLS: dict[str, Callable[[MediaServerClient, str], Awaitable[object]]] = {
    "series": lambda c, key: c.series(key),
    "movie": lambda c, key: c.movie(key),
}


@pytest.mark.parametrize("bad_gateway", [False, True], ids=["404 page not found", "502 page"])
@pytest.mark.parametrize("call", CALLS)
async def test_a_proxys_page_in_the_servers_place_is_an_outage_from_the_first_start(
    client: MediaServerClient, server: FakeJellyfin, call: str, bad_gateway: bool
) -> None:
    # Nothing has answered as the server yet (watchbridge just started): still an outage that
    # holds the play, not "check your URL" (a MediaServerError spends the play's tries).
    server.proxy_lost_server(bad_gateway=bad_gateway)
    with pytest.raises(Unavailable) as raised:
        await CALLS[call](client, series_id(server))
    assert not isinstance(raised.value, MediaServerError)
    if not bad_gateway:  # a 502 is the HTTP policy's outage, as any gateway's
        assert not_answering(server.flavour) in raised.value.message
        assert f"services.{server.flavour}.url" in raised.value.message  # if it lasts
        assert raised.value.status is None  # an outage, not this item's failure
    assert not await client.answers()
    server.proxy_found_server()
    assert await client.answers()
    found = await client.series(series_id(server))
    assert found is not None and found.ids.tmdb == "1396"


async def test_the_servers_own_404_is_still_no_such_series_and_one_check_vouches_a_minute(
    start_fake: Callable[[FakeServer], FakeServer], clock: FakeClock
) -> None:
    jellyfin = sample_server(start_fake, "jellyfin")
    client = MediaServerClient(
        JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)), clock=clock
    )
    client.http.retry = FAST
    try:
        assert await client.series(UNKNOWN) is None
        assert await client.movie("4567" * 8) is None
        assert jellyfin.count("GET", CHECK) == 1  # asked once for both 404s
        clock.advance(IDENTITY_VOUCHES + 1)
        assert await client.series(UNKNOWN) is None
        assert jellyfin.count("GET", CHECK) == 2
        clock.advance(IDENTITY_VOUCHES + 1)
        jellyfin.proxy_lost_server()  # a minute later: asked again, and it is the proxy's
        with pytest.raises(Unavailable, match=not_answering("jellyfin")):
            await client.series(UNKNOWN)
    finally:
        await client.aclose()


async def test_a_404_while_the_check_names_another_server_is_an_outage(
    client: MediaServerClient, server: FakeJellyfin
) -> None:
    assert await client.answers()  # the server at the URL, as first seen
    server.server_id = "f" * 32  # another server at the address (the proxy routes elsewhere)
    assert not await client.answers()
    server.fail_next(1, 404, route=server.item_route)
    with pytest.raises(Unavailable, match="names another server"):
        await client.series(series_id(server))


@pytest.mark.parametrize(
    "check",
    [
        {"status": 200, "body": LOGIN_PAGE},
        {"status": 502, "body": "<html>502 Bad Gateway</html>"},
        {"status": 401, "body": "<html>401 Authorization Required</html>"},
    ],
    ids=["a login page", "a gateway error", "an auth proxy"],
)
async def test_a_404_while_the_check_is_no_servers_answer_is_an_outage(
    client: MediaServerClient, server: FakeJellyfin, check: dict[str, Any]
) -> None:
    server.fail_next(5, route=CHECK, **check)
    server.fail_next(1, 404, route=server.item_route, body=b"404 page not found\n")
    with pytest.raises(Unavailable):
        await client.series(series_id(server))
    assert not await client.answers()  # a page in its place is no sign the server is up


async def test_a_proxys_login_page_for_every_path_is_no_sign_the_server_is_up(
    client: MediaServerClient, server: FakeJellyfin
) -> None:
    # An answer to the check that any page could give (a 200) said "up": a lookup's outage
    # was then taken for that item's failure, and its play spent its tries.
    server.fail_next(1, 200, route=CHECK, body=LOGIN_PAGE)
    assert not await client.answers()


async def test_an_auth_proxys_401_is_an_outage_and_the_servers_own_a_refused_key(
    client: MediaServerClient, server: FakeJellyfin
) -> None:
    # Authelia/Organizr in front asking for a sign-in on every path: not the server refusing
    # services.*.api_key (a new key would not help).
    server.fail_next(5, 401, body="<html>401 Authorization Required</html>")
    with pytest.raises(Unavailable) as raised:
        await client.series(series_id(server))
    assert not isinstance(raised.value, MediaServerAuthError)
    server.clear_knobs()
    server.api_key = "a-new-key-made-on-the-server"  # the server itself refuses ours
    with pytest.raises(MediaServerAuthError, match=f"services.{server.flavour}.api_key"):
        await client.series(series_id(server))


@pytest.mark.parametrize(
    "check",
    [
        {"status": 200, "body": {"MediaContainer": {"size": 0}}},
        {"status": 401, "body": "<html>Unauthorized</html>", "headers": {"X-Plex-Protocol": "1.0"}},
    ],
    ids=["JSON of another service", "a Plex server"],
)
async def test_another_kind_of_server_at_the_url_from_the_start_names_the_url_to_fix(
    client: MediaServerClient, server: FakeJellyfin, check: dict[str, Any]
) -> None:
    server.fail_next(5, route=CHECK, **check)
    server.fail_next(1, 404, route=server.item_route)
    with pytest.raises(MediaServerError) as raised:
        await client.series(series_id(server))
    assert not isinstance(raised.value, Unavailable)
    assert f"set services.{server.flavour}.url" in raised.value.message


async def test_another_kind_of_server_where_the_server_was_seen_is_an_outage(
    client: MediaServerClient, server: FakeJellyfin, clock: FakeClock
) -> None:
    # Once the server answered at the URL, whatever answers there in its place is waited out:
    # a container given its address on a restart, a proxy's route changed for a moment.
    assert await client.answers()
    clock.advance(IDENTITY_VOUCHES + 1)
    server.fail_next(5, 200, route=CHECK, body={"MediaContainer": {"size": 0}})
    server.fail_next(1, 404, route=server.item_route)
    with pytest.raises(Unavailable, match=not_answering(server.flavour)):
        await client.series(series_id(server))


async def test_a_server_reinstalled_at_the_url_is_known_by_its_answers(
    client: MediaServerClient, server: FakeJellyfin, clock: FakeClock
) -> None:
    # A new server id (a fresh config volume): its item answers name it, and its own 404s
    # are then no outage, without restarting watchbridge.
    assert await client.answers()
    server.server_id = "e" * 32
    assert await client.series(series_id(server)) is not None  # names the new server
    clock.advance(IDENTITY_VOUCHES + 1)
    if server.flavour == "jellyfin":
        assert await client.series(UNKNOWN) is None
    assert await client.answers()


# --------------------------------------------------------------------------- a play's delivery


@pytest.mark.parametrize("bad_gateway", [False, True], ids=["404 page not found", "502 page"])
async def test_a_play_waits_out_the_proxys_pages_unspent_and_goes_once_when_jellyfin_is_back(
    tmp_path: Path,
    serializd: FakeSerializd,
    start_fake: Callable[[FakeServer], FakeServer],
    receiver: AlertReceiver,
    clock: FakeClock,
    close_targets: list[DeliveryWorker],
    bad_gateway: bool,
) -> None:
    jellyfin = sample_server(start_fake, "jellyfin")
    runtime = serializd_runtime(tmp_path, serializd, receiver, clock, jellyfin_service(jellyfin))
    jellyfin.proxy_lost_server(bad_gateway=bad_gateway)  # the Jellyfin container restarts
    try:
        worker = await worker_for(runtime)
        close_targets.append(worker)
        enricher = worker.targets["serializd"].enricher  # type: ignore[attr-defined]
        enricher.series["jellyfin"].client.http.retry = FAST
        post_jellyfin(runtime)
        for _ in range(6):  # an hour and a half; the worker looks every 15 minutes
            await drain(worker, runtime, passes=1)
            clock.advance(900)
        ((attempts, reason),) = runtime.store.db.execute(
            "SELECT attempts, last_error FROM outbox WHERE status = 'pending'"
        ).fetchall()
        assert attempts == 0  # held: no try spent (a proxy's 404 read as "no such series",
        assert "unmatched" not in reason  # or as a wrong URL, spent them: dead letters)
        assert runtime.store.outbox_counts()["dead"] == 0
        assert runtime.store.unmatched_count() == 0
        told = receiver.titles()
        assert told and set(told) == {"watchbridge: Jellyfin cannot be reached"}
        if not bad_gateway:
            assert not_answering("jellyfin") in receiver.messages[0]["message"]
        assert serializd.diary() == []

        jellyfin.proxy_found_server()
        await drain(worker, runtime)
        assert [(r.show_id, r.episode_number) for r in serializd.diary()] == [(1396, 14)]
        assert receiver.titles()[len(told) :] == [
            "Resolved: watchbridge: Jellyfin cannot be reached"
        ]
        clock.advance(3600)
        await drain(worker, runtime)
        assert len(serializd.diary()) == 1  # once
    finally:
        runtime.close()
