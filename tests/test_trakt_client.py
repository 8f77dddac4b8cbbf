"""The Trakt client against the stateful fake Trakt: sign-in, tokens, writes, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer, cloudflare_page
from tests.fakes.trakt import CLIENT_ID, CLIENT_SECRET, FakeTrakt, RateLimit
from tests.harness import (
    loop_free_at_every_wait_for_the_store,
    loop_free_while_the_store_is_locked,
    paused_read,
    sign_in_trakt,
    statements_run,
    store_connections,
    until,
)
from watchbridge.config import Secret, TraktConfig
from watchbridge.http import IN_ITS_PLACE_PAUSE, RateLimited, Unavailable
from watchbridge.limits import LimitHit
from watchbridge.model import Ids, MediaRef
from watchbridge.services.trakt import (
    DeviceCode,
    HistoryPlay,
    RatingWrite,
    TraktAccountError,
    TraktAuthError,
    TraktClient,
    TraktError,
    TraktSignInUnavailable,
    device_code_of,
    share_media,
)
from watchbridge.store import Store

pytestmark = pytest.mark.anyio
PROFILE = "me"


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.seed_reference_catalogue()
    return fake


@pytest.fixture
async def client(trakt: FakeTrakt, store: Store) -> AsyncIterator[TraktClient]:
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(config, store, sleep=no_wait)
    client.http.retry = type(client.http.retry)(attempts=2, backoff=0.01, max_inline_wait=0.5)
    yield client
    await client.aclose()


def signed_in(trakt: FakeTrakt, store: Store) -> None:
    sign_in_trakt(store, trakt, PROFILE)


def a_movie(trakt: FakeTrakt) -> MediaRef:
    movie = trakt.movies[0]
    return MediaRef("movie", Ids(imdb=movie.imdb, tmdb=str(movie.tmdb)), title=movie.title)


async def test_device_sign_in_stores_tokens(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    def approve(code: DeviceCode) -> None:
        trakt.approve_device(code.user_code)

    tokens = await client.sign_in(PROFILE, approve)
    assert store.get_token("trakt", PROFILE)["access_token"] == tokens.access_token


async def test_device_sign_in_denied_is_a_clear_error(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    with pytest.raises(TraktAuthError, match="denied"):
        await client.sign_in(PROFILE, lambda code: trakt.deny_device(code.user_code))


@pytest.mark.parametrize(
    ("misbehave", "message"),
    [
        ("expire_device", "expired before it was approved"),  # 410
        ("use_device", "already used"),  # 409
        ("forget_device", "did not recognise the device code"),  # 404
    ],
)
async def test_device_sign_in_with_a_spent_code_ends_with_a_clear_error(
    client: TraktClient, trakt: FakeTrakt, misbehave: str, message: str
) -> None:
    with pytest.raises(TraktAuthError, match=message):
        await client.sign_in(PROFILE, lambda code: getattr(trakt, misbehave)(code.user_code))


async def test_device_sign_in_slow_down_keeps_polling(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    def slow_then_approve(code: DeviceCode) -> None:
        trakt.slow_down_device(code.user_code, 2)
        trakt.approve_device(code.user_code)

    assert (await client.sign_in(PROFILE, slow_then_approve)).access_token


async def test_sign_in_detects_an_app_without_vip(client: TraktClient, trakt: FakeTrakt) -> None:
    trakt.vip = False
    with pytest.raises(TraktAccountError, match="VIP"):
        await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))


@pytest.mark.parametrize("request_id", [True, False], ids=["request-id", "no-request-id"])
async def test_sign_in_says_vip_when_the_device_code_request_is_refused(
    client: TraktClient, trakt: FakeTrakt, request_id: bool
) -> None:
    # Trakt's 426 names its upgrade page (X-Upgrade-URL), which no proxy's page does: without
    # x-request-id it was taken for a page in Trakt's place ("try again in a few minutes").
    trakt.vip, trakt.vip_gates_sign_in, trakt.auth_request_id = False, True, request_id
    with pytest.raises(TraktAccountError, match="VIP"):
        await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))


async def test_a_firewall_block_of_the_sign_in_is_not_blamed_on_the_apps_settings(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.cloudflare_next(1, status=403, route="POST /oauth/device/code")  # Cloudflare's page
    with pytest.raises(Unavailable, match="firewall") as refused:
        await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    assert "client_id" not in refused.value.message and "VIP" not in refused.value.message


async def test_a_firewall_block_while_the_code_is_typed_keeps_the_sign_in_polling(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    def blocked_once_then_approved(code: DeviceCode) -> None:
        trakt.cloudflare_next(1, status=403, route="POST /oauth/device/token")
        trakt.approve_device(code.user_code)

    assert (await client.sign_in(PROFILE, blocked_once_then_approved)).access_token


# Pages a proxy or Cloudflare answers in place of Trakt's sign-in host (auth.trakt.tv): the
# reference does not say whether that host's own answers carry x-request-id, so these carry
# none either way; Trakt's own OAuth answers are JSON, or a device poll's bare status.
IN_PLACE_OF_THE_SIGN_IN_HOST = [
    pytest.param("cloudflare", 400, id="cloudflare-400"),
    pytest.param("cloudflare", 401, id="cloudflare-401"),
    pytest.param("cloudflare", 403, id="cloudflare-403"),
    pytest.param("proxy", 401, id="proxy-html-401"),
    pytest.param("text", 400, id="proxy-text-400"),
]


def page_in_place(trakt: FakeTrakt, kind: str, status: int, route: str, n: int = 1) -> None:
    if kind == "cloudflare":
        trakt.cloudflare_next(n, status=status, route=route)
    else:
        trakt.proxy_page_next(n, status=status, route=route, html=kind == "proxy")


@pytest.mark.parametrize(
    ("status", "html"),
    [(400, True), (401, True), (401, False), (404, True), (409, True), (410, True), (418, True)],
)
async def test_a_page_in_place_of_a_device_poll_answer_keeps_the_sign_in_polling(
    client: TraktClient, trakt: FakeTrakt, status: int, html: bool
) -> None:
    # A proxy's 410 or 418 page ended the sign-in with "expired" or "denied". Its 401 (an
    # HTML page, a line of text) is not Trakt's empty one refusing the app.
    trakt.auth_request_id = False

    def paged_once_then_approved(code: DeviceCode) -> None:
        trakt.proxy_page_next(1, status=status, route="POST /oauth/device/token", html=html)
        trakt.approve_device(code.user_code)

    assert (await client.sign_in(PROFILE, paged_once_then_approved)).access_token


@pytest.mark.parametrize(("status", "told"), [(403, "in its place"), (502, "answered 502")])
async def test_a_sign_in_host_answering_no_poll_says_so_not_that_the_code_expired(
    client: TraktClient, trakt: FakeTrakt, status: int, told: str
) -> None:
    # Whether the code was approved meanwhile, Trakt could not say: "expired" sent the
    # person to look for a mistake of theirs.
    trakt.auth_request_id, trakt.device_expires_in = False, 20
    if status == 502:  # a gateway's: outlasts each poll's tries
        trakt.fail_next(100, status, route="POST /oauth/device/token", from_trakt=False)
    else:
        trakt.cloudflare_next(100, status=status, route="POST /oauth/device/token")
    with pytest.raises(Unavailable) as unanswered:
        await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    said = unanswered.value.message
    assert "sign-in host did not answer" in said and "try again in a few minutes" in said
    assert told in said and "expired" not in said


async def test_trakt_s_bare_device_poll_answers_without_a_request_id_are_its_own(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.auth_request_id = False

    def slow_then_approve(code: DeviceCode) -> None:
        trakt.slow_down_device(code.user_code, 1)
        trakt.approve_device(code.user_code)

    assert (await client.sign_in(PROFILE, slow_then_approve)).access_token
    with pytest.raises(TraktAuthError, match="denied"):
        await client.sign_in(PROFILE, lambda code: trakt.deny_device(code.user_code))


@pytest.mark.parametrize(("kind", "status"), IN_PLACE_OF_THE_SIGN_IN_HOST)
async def test_a_page_in_place_of_the_device_code_is_not_blamed_on_the_app(
    client: TraktClient, trakt: FakeTrakt, kind: str, status: int
) -> None:
    trakt.auth_request_id = False
    page_in_place(trakt, kind, status, "POST /oauth/device/code")
    with pytest.raises(Unavailable, match="try again in a few minutes") as unanswered:
        await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    assert "client_id" not in unanswered.value.message
    assert "VIP" not in unanswered.value.message


async def test_sign_in_holds_when_only_the_vip_check_meets_an_outage(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    def approve(code: DeviceCode) -> None:
        trakt.approve_device(code.user_code)
        trakt.fail_next(5, 503, route="GET /users/settings")

    tokens = await client.sign_in(PROFILE, approve)
    assert store.get_token("trakt", PROFILE)["access_token"] == tokens.access_token


async def test_whose_account_a_sign_in_is_is_asked_once_per_token(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    sign_in_trakt(store, trakt, PROFILE)
    assert await client.account(PROFILE) == trakt.user.uuid
    assert await client.account(PROFILE) == trakt.user.uuid
    assert trakt.count("GET", "/users/settings") == 1


async def test_a_settings_answer_that_is_no_json_is_a_clear_error(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    sign_in_trakt(store, trakt, PROFILE)
    trakt.fail_next(1, 200, body="<html>sign in to the proxy</html>", route="GET /users/settings")
    with pytest.raises(TraktError, match="/users/settings answered something else than JSON"):
        await client.account(PROFILE)


@pytest.mark.parametrize("path", ["/sync/last_activities", "/users/settings"])
async def test_a_proxys_page_with_a_200_is_an_outage_naming_the_request(
    client: TraktClient, trakt: FakeTrakt, store: Store, path: str
) -> None:
    sign_in_trakt(store, trakt, PROFILE)
    trakt.fail_next(5, 200, body="<html>This site is blocked</html>", route=f"GET {path}")
    read = client.last_activities if path == "/sync/last_activities" else client.settings
    with pytest.raises(Unavailable, match=f"Trakt: GET {path} answered 200 with an unreadable"):
        await read(PROFILE)


async def test_a_request_reading_its_sign_in_leaves_the_event_loop_free(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Each request reads the sign-in from the store, whose lock a link run's apply holds for
    # most of a second at a big account: waited for on the event loop, every webhook waited.
    signed_in(trakt, store)
    working = client.last_activities(PROFILE)
    assert await loop_free_while_the_store_is_locked(store, working), "the loop waited for it"


async def test_noting_that_trakt_took_the_sign_in_leaves_the_event_loop_free(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # After each answer the sign-in's refusal on record is looked up (`note_taken`), in the
    # store, whose lock a link run's apply may have taken while the request was under way.
    signed_in(trakt, store)
    released = trakt.hold_next(route="GET /sync/last_activities")
    request = asyncio.ensure_future(client.last_activities(PROFILE))
    await until(lambda: trakt.count("GET", "/sync/last_activities") == 1)

    async def answered() -> object:
        released.set()
        return await request

    assert await loop_free_while_the_store_is_locked(store, answered()), "the loop waited"


async def test_asking_whose_account_the_sign_in_is_leaves_the_event_loop_free(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Each link run asks it before its reads, beside another link's apply, which holds the
    # store's lock for most of a second at a big account: the cache is read and written.
    signed_in(trakt, store)
    asked = asyncio.ensure_future(client.account(PROFILE))
    assert await loop_free_at_every_wait_for_the_store(store, asked), "the loop waited"
    assert asked.result() == trakt.user.uuid
    cached = asyncio.ensure_future(client.account(PROFILE))
    assert await loop_free_at_every_wait_for_the_store(store, cached), "the loop waited"
    assert cached.result() == trakt.user.uuid
    assert trakt.count("GET", "/users/settings") == 1


async def test_a_token_refresh_leaves_the_event_loop_free(trakt: FakeTrakt, store: Store) -> None:
    # A refresh reads and writes the store several times (who else refreshes, the new pair,
    # how it went), any of them while a link run's apply may hold its lock.
    signed_in(trakt, store)
    client = TraktClient(
        TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url),
        store,
        clock=lambda: time.time() + 0.8 * 7 * 86400,
        sleep=no_wait,
    )
    spent = store.get_token("trakt", PROFILE)["refresh_token"]
    try:
        request = asyncio.ensure_future(client.last_activities(PROFILE))
        assert await loop_free_at_every_wait_for_the_store(store, request), "the loop waited"
    finally:
        await client.aclose()
    assert store.get_token("trakt", PROFILE)["refresh_token"] != spent
    assert trakt.count("POST", "/oauth/token") == 1


async def test_whether_a_refresh_is_due_is_read_leaving_the_event_loop_free(
    trakt: FakeTrakt, store: Store
) -> None:
    # Housekeeping asks it of every profile each hour, while a link run's apply may hold the
    # store's lock for most of a second at a big account.
    signed_in(trakt, store)
    client = TraktClient(
        TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url),
        store,
        clock=lambda: time.time() + 0.8 * 7 * 86400,
    )
    try:
        due = asyncio.ensure_future(client.refresh_due(PROFILE))
        assert await loop_free_while_the_store_is_locked(store, due), "the loop waited for it"
        assert due.result() is True
    finally:
        await client.aclose()


async def test_whether_a_sign_in_ends_soon_is_read_leaving_the_event_loop_free(
    trakt: FakeTrakt, store: Store
) -> None:
    # After Trakt refused to renew a sign-in, each delivery batch asks it, while a link
    # run's apply may hold the store's lock for most of a second at a big account.
    signed_in(trakt, store)
    trakt.refuse_refresh_tokens()
    client = TraktClient(
        TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url),
        store,
        clock=lambda: time.time() + 0.8 * 7 * 86400,
        sleep=no_wait,
    )
    try:
        assert await client.refresh_if_due(PROFILE)  # refused; its access token still works
        ending = asyncio.ensure_future(client.sign_in_ending(PROFILE))
        assert await loop_free_while_the_store_is_locked(store, ending), "the loop waited"
        assert "keeps working until" in (ending.result() or "")
    finally:
        await client.aclose()


async def test_not_signed_in_says_how_to_sign_in(client: TraktClient) -> None:
    with pytest.raises(TraktAuthError, match="watchbridge auth trakt --profile me"):
        await client.last_activities(PROFILE)


async def test_expired_access_token_is_refreshed_once_and_stored(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    before = store.get_token("trakt", PROFILE)
    trakt.expire_tokens()
    await client.last_activities(PROFILE)
    after = store.get_token("trakt", PROFILE)
    assert after["refresh_token"] != before["refresh_token"]
    assert trakt.count("POST", "/oauth/token") == 1


async def test_two_processes_refreshing_at_once_both_keep_the_sign_in(
    trakt: FakeTrakt, store: Store
) -> None:
    # The service and a `watchbridge sync` share the database and each refresh on a 401;
    # Trakt's refresh tokens are single-use, so one of them is refused.
    async def brief(seconds: float) -> None:  # the wait for the other's pair, shortened
        await asyncio.sleep(min(seconds, 0.3))

    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    one, other = TraktClient(config, store, sleep=brief), TraktClient(config, store, sleep=brief)
    signed_in(trakt, store)
    trakt.expire_tokens()
    try:
        await asyncio.gather(one.last_activities(PROFILE), other.last_activities(PROFILE))
        await one.last_activities(PROFILE)  # the stored pair is the one Trakt accepted
        await other.last_activities(PROFILE)
    finally:
        await one.aclose()
        await other.aclose()
    assert trakt.count("POST", "/oauth/token") <= 2  # a second one is refused, or not sent


async def test_clients_of_one_process_refresh_once_however_slow_the_answer(
    trakt: FakeTrakt, store: Store
) -> None:
    # The service's delivery target and each link's reader are clients of their own; a token
    # answer slower than the wait for another process's pair must not cost the sign-in.
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    deliver, reader = TraktClient(config, store), TraktClient(config, store)
    signed_in(trakt, store)
    trakt.expire_tokens()
    trakt.delay_next(1, 3.0, route="POST /oauth/token")
    try:
        await asyncio.gather(deliver.last_activities(PROFILE), reader.last_activities(PROFILE))
    finally:
        await deliver.aclose()
        await reader.aclose()
    assert trakt.count("POST", "/oauth/token") == 1


def _a_process(db: Path, trakt: FakeTrakt, results: dict[str, str], name: str) -> None:
    """A process of its own: a thread with its own event loop, store connection and client."""

    async def main() -> None:
        config = TraktConfig(
            CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url
        )
        client = TraktClient(config, store)
        try:
            await client.last_activities(PROFILE)
            results[name] = "ok"
        except TraktError as exc:
            results[name] = exc.message
        finally:
            await client.aclose()

    with Store.open(db) as store:
        asyncio.run(main())


def test_a_process_refreshing_while_anothers_refresh_is_slow_keeps_the_sign_in(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # The service's refresh spends the refresh token; Trakt's answer takes seconds, and the
    # sync run's own refresh is refused meanwhile: it must wait for the service's pair.
    db = tmp_path / "wb.db"
    with Store.open(db) as store:
        signed_in(trakt, store)
    trakt.expire_tokens()
    trakt.delay_next(1, 3.0, route="POST /oauth/token")
    results: dict[str, str] = {}
    service = threading.Thread(target=_a_process, args=(db, trakt, results, "service"))
    service.start()
    while trakt.count("POST", "/oauth/token") == 0:
        time.sleep(0.01)
    sync = threading.Thread(target=_a_process, args=(db, trakt, results, "sync"))
    sync.start()
    service.join(30)
    sync.join(30)
    assert results == {"service": "ok", "sync": "ok"}


async def test_a_refresh_stopped_after_trakt_took_it_keeps_the_sign_in(
    trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.expire_tokens()
    trakt.delay_next(1, 1.0, route="POST /oauth/token")  # taken; the answer is slow
    stopped = client_for(trakt, store)
    call = asyncio.ensure_future(stopped.last_activities(PROFILE))
    while trakt.count("POST", "/oauth/token") == 0:
        await asyncio.sleep(0.01)
    call.cancel()  # Ctrl-C on `watchbridge sync`, the service stopping
    with pytest.raises(asyncio.CancelledError):
        await call
    await stopped.aclose()
    later = client_for(trakt, store)  # the next run: the pair Trakt gave was kept
    try:
        await later.last_activities(PROFILE)
    finally:
        await later.aclose()
    assert trakt.count("POST", "/oauth/token") == 1


def test_a_sign_in_made_while_the_service_refreshes_is_the_one_kept(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    db = tmp_path / "wb.db"
    trakt.add_user("newaccount")
    with Store.open(db) as store:
        signed_in(trakt, store)  # the old account
    trakt.expire_tokens()
    trakt.delay_next(1, 2.0, route="POST /oauth/token")  # the service's refresh, slow
    results: dict[str, str] = {}
    service = threading.Thread(target=_a_process, args=(db, trakt, results, "service"))
    service.start()
    while trakt.count("POST", "/oauth/token") == 0:
        time.sleep(0.01)

    async def auth_trakt() -> str:  # meanwhile the user signs the profile in to another account
        with Store.open(db) as store:
            config = TraktConfig(
                CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url
            )
            client = TraktClient(config, store, sleep=no_wait)
            try:

                def approve(code: DeviceCode) -> None:
                    trakt.approve_device(code.user_code, "newaccount")

                return (await client.sign_in(PROFILE, approve)).access_token
            finally:
                await client.aclose()

    new_sign_in = asyncio.run(auth_trakt())
    service.join(30)
    with Store.open(db) as store:
        assert store.get_token("trakt", PROFILE)["access_token"] == new_sign_in  # type: ignore[index]
    assert results == {"service": "ok"}


@pytest.fixture
def expired_sign_in(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Store]:
    """A store signed in to Trakt whose access token has expired; it waits 0.2 s for a lock."""
    with Store.open(tmp_path / "wb.db", busy_timeout=0.2) as store:
        signed_in(trakt, store)
        trakt.expire_tokens()
        yield store


def client_for(trakt: FakeTrakt, store: Store) -> TraktClient:
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    return TraktClient(config, store)


async def refreshed_while_locked(client: TraktClient, store: Store, after: float = 0.0) -> None:
    """A call that refreshes the sign-in while another process holds the database's write
    lock (a long commit of a `watchbridge sync`), and `after` seconds more: the new pair
    cannot be stored then."""
    assert store.path is not None
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        await client.last_activities(PROFILE)
        await asyncio.sleep(after)
        other.execute("COMMIT")
    finally:
        other.close()


async def test_a_refreshed_pair_the_database_cannot_take_yet_is_kept(
    trakt: FakeTrakt, expired_sign_in: Store
) -> None:
    # Refresh tokens are single-use: losing the new pair would cost the sign-in.
    store = expired_sign_in
    spent = store.get_token("trakt", PROFILE)
    client, other = client_for(trakt, store), client_for(trakt, store)
    try:
        await refreshed_while_locked(client, store)
        await client.last_activities(PROFILE)  # stores the pair now
        stored = store.get_token("trakt", PROFILE)
        await other.last_activities(PROFILE)
    finally:
        await client.aclose()
        await other.aclose()
    assert trakt.count("POST", "/oauth/token") == 1  # the other client used the stored pair
    assert stored is not None and spent is not None
    assert stored["refresh_token"] != spent["refresh_token"]


async def test_a_refreshed_pair_kept_in_memory_is_stored_once_the_database_is_free(
    trakt: FakeTrakt, expired_sign_in: Store
) -> None:
    # An idle service makes no next request: a `watchbridge sync` beside it would refresh
    # with the spent token and be told to sign in again.
    store = expired_sign_in
    spent = store.get_token("trakt", PROFILE)
    client = client_for(trakt, store)
    try:
        await refreshed_while_locked(client, store)
        for _ in range(50):
            stored = store.get_token("trakt", PROFILE)
            if stored != spent:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    assert stored is not None and spent is not None
    assert stored["refresh_token"] != spent["refresh_token"]


async def test_a_pair_the_database_keeps_refusing_is_warned_of_once_not_at_each_try(
    trakt: FakeTrakt, expired_sign_in: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = expired_sign_in  # a full disk, a read-only mount: the log must not fill it
    client = client_for(trakt, store)
    try:
        await refreshed_while_locked(client, store, after=2.2)  # two tries more
    finally:
        await client.aclose()
    said = [r for r in caplog.records if "could not be stored yet" in r.getMessage()]
    assert len(said) == 1


async def test_a_refreshed_pair_kept_in_memory_is_stored_when_its_client_closes(
    trakt: FakeTrakt, expired_sign_in: Store
) -> None:
    # A `watchbridge sync` whose one Trakt request refreshed while the database was locked:
    # the pair must not end with the process.
    store = expired_sign_in
    spent = store.get_token("trakt", PROFILE)
    client = client_for(trakt, store)
    await refreshed_while_locked(client, store)
    await client.aclose()
    stored = store.get_token("trakt", PROFILE)
    assert stored is not None and spent is not None
    assert stored["refresh_token"] != spent["refresh_token"]


async def test_a_pair_that_cannot_be_stored_at_close_is_reported(
    trakt: FakeTrakt, expired_sign_in: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = expired_sign_in
    client = client_for(trakt, store)
    assert store.path is not None
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # locked past the run's end
        await client.last_activities(PROFILE)
        await client.aclose()
    finally:
        other.close()
    assert f"run `watchbridge auth trakt --profile {PROFILE}`" in caplog.text


async def test_a_pair_kept_in_memory_never_replaces_a_newer_sign_in(
    trakt: FakeTrakt, expired_sign_in: Store
) -> None:
    store = expired_sign_in
    service = client_for(trakt, store)
    try:
        await refreshed_while_locked(service, store)
        signed_in(trakt, store)  # `watchbridge auth trakt` in another process, meanwhile
        signed_in_again = store.get_token("trakt", PROFILE)
        await service.last_activities(PROFILE)
        assert store.get_token("trakt", PROFILE) == signed_in_again
    finally:
        await service.aclose()


async def test_a_401_answered_after_another_process_refreshed_uses_its_pair(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Refreshing again would spend the other process's refresh token and kill its access token.
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    other = TraktClient(config, store, sleep=no_wait)
    signed_in(trakt, store)
    trakt.expire_tokens()
    trakt.delay_next(1, 0.5, route="GET /sync/last_activities")  # our 401 comes back late
    ours = asyncio.ensure_future(client.last_activities(PROFILE))
    while not trakt.requests:
        await asyncio.sleep(0.01)
    try:
        await other.last_activities(PROFILE)  # refreshes and stores the new pair meanwhile
        await ours
        await other.last_activities(PROFILE)
    finally:
        await other.aclose()
    assert trakt.count("POST", "/oauth/token") == 1


async def test_rejected_refresh_needs_a_new_sign_in(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.revoke_tokens()
    with pytest.raises(TraktAuthError, match="no longer accepts"):
        await client.last_activities(PROFILE)


async def test_two_processes_refreshing_an_ended_sign_in_at_once_refresh_it_once(
    trakt: FakeTrakt, store: Store
) -> None:
    # The service and a `watchbridge sync` reach an ended sign-in at one moment. Each looked
    # for a refresh going on, found none, then said it was refreshing: both refreshed. Trakt
    # gave the first (slow to answer) the new pair and refused the second the spent refresh
    # token; the second, reading its own word over the first's, signed the profile out.
    assert store.path is not None
    signed_in(trakt, store)
    trakt.expire_tokens()
    config = TraktConfig(
        CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url,
        refresh_race_seconds=0.05,
    )  # fmt: skip
    first_answer = trakt.hold_next(route="POST /oauth/token")
    waits: list[float] = []

    async def first_answer_comes_late(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # past the race: only a refresh said to be going on is waited for
            first_answer.set()
        await asyncio.sleep(seconds)

    other_store = Store.open(store.path)  # the other process's own connection
    ours = TraktClient(config, store, sleep=first_answer_comes_late)
    theirs = TraktClient(config, other_store, sleep=first_answer_comes_late)
    their_outcome: list[object] = []

    async def their_sync() -> None:  # on an event loop of its own, as in another process
        try:
            their_outcome.append(await theirs.last_activities(PROFILE))
        except TraktError as exc:
            their_outcome.append(exc)
        finally:
            await theirs.aclose()

    other = threading.Thread(target=asyncio.run, args=(their_sync(),))
    looking = "FROM id_cache WHERE namespace = 'trakt-refreshing'"
    try:
        with (
            paused_read(looking, *store_connections(store), steps=5) as look,
            statements_run("BEGIN IMMEDIATE", other_store.db.conn) as theirs_wrote,
        ):
            call = asyncio.ensure_future(ours.last_activities(PROFILE))
            await until(look.reached.is_set)  # we look for a refresh going on...
            other.start()
            await until(lambda: bool(theirs_wrote))  # ...as they say theirs is
            await asyncio.sleep(0.3)  # time for them to send it, if they may
        await call
    finally:
        first_answer.set()
        await ours.aclose()
        other.join(15)
        other_store.close()
    assert not [o for o in their_outcome if isinstance(o, TraktError)], their_outcome
    assert trakt.count("POST", "/oauth/token") == 1
    assert store.get_token("trakt", PROFILE)["access_token"] in trakt.tokens


@pytest.mark.parametrize(("race", "polls"), [(None, [1.0, 1.0]), (0.05, [0.025, 0.025])])
async def test_a_refused_refresh_looks_for_another_process_pair_over_the_race_it_is_given(
    trakt: FakeTrakt, store: Store, race: float | None, polls: list[float]
) -> None:
    # Three looks (start, middle, end) whatever the race: a short one (the tests') is the
    # same search, sooner over; none set is the 2 s a `watchbridge sync` beside the service
    # may take to store the pair it got with the same single-use refresh token.
    waits: list[float] = []

    async def counted(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    if race is not None:
        config = dataclasses.replace(config, refresh_race_seconds=race)
    client = TraktClient(config, store, sleep=counted)
    signed_in(trakt, store)
    trakt.revoke_tokens()
    try:
        with pytest.raises(TraktAuthError, match="no longer accepts"):
            await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    assert waits == pytest.approx(polls)


async def test_a_pair_stored_by_another_process_within_a_short_race_is_taken(
    trakt: FakeTrakt, store: Store
) -> None:
    waits: list[float] = []
    config = TraktConfig(
        CLIENT_ID,
        Secret(CLIENT_SECRET),
        api_url=trakt.url,
        auth_url=trakt.url,
        refresh_race_seconds=0.05,
    )

    async def other_process_stores_its_pair(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the last look but one: the other process was just slower
            signed_in(trakt, store)
        await asyncio.sleep(0)

    client = TraktClient(config, store, sleep=other_process_stores_its_pair)
    signed_in(trakt, store)
    trakt.revoke_tokens()
    try:
        await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    assert waits == pytest.approx([0.025, 0.025])


@pytest.mark.parametrize(
    ("status", "error"),
    [(403, Unavailable), (404, TraktAuthError), (418, TraktAuthError)],
)
async def test_a_refresh_refused_for_another_reason_asks_for_a_human_or_waits(
    client: TraktClient, trakt: FakeTrakt, store: Store, status: int, error: type[Exception]
) -> None:
    # 404: an OAuth host that moved: a human must look. 403 from Trakt's firewall (no Trakt
    # request id): its bans pass; tried again in minutes (pitfalls/trakt.md §7).
    signed_in(trakt, store)
    trakt.expire_tokens()
    body = cloudflare_page(status) if status == 403 else {"error": "nope"}
    trakt.fail_next(1, status, body=body, route="POST /oauth/token", from_trakt=status != 403)
    with pytest.raises(error):
        await client.last_activities(PROFILE)


async def test_a_refresh_answered_by_something_else_than_trakt_is_tried_later(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.expire_tokens()
    trakt.fail_next(1, 200, body="<html>captive portal</html>", route="POST /oauth/token")
    with pytest.raises(Unavailable, match="not Trakt's"):
        await client.last_activities(PROFILE)
    await client.last_activities(PROFILE)  # the sign-in was not spent


@pytest.mark.parametrize(("kind", "status"), IN_PLACE_OF_THE_SIGN_IN_HOST)
async def test_a_refresh_answered_by_a_page_in_place_of_trakt_is_an_outage_not_a_refusal(
    client: TraktClient, trakt: FakeTrakt, store: Store, kind: str, status: int
) -> None:
    # Read as Trakt's refusal, the profile was marked "sign-in needed" and its refresh
    # token set aside as spent, though Trakt never saw it.
    trakt.auth_request_id = False
    signed_in(trakt, store)
    trakt.expire_tokens()
    page_in_place(trakt, kind, status, "POST /oauth/token")
    with pytest.raises(TraktSignInUnavailable, match="in its place") as held:
        await client.last_activities(PROFILE)
    assert held.value.retry_after == IN_ITS_PLACE_PAUSE
    await client.last_activities(PROFILE)  # the page is gone: the same refresh token works
    assert trakt.count("POST", "/oauth/token") == 2


async def test_a_refresh_answered_by_a_page_uses_the_working_token_and_tries_again_later(
    trakt: FakeTrakt, store: Store
) -> None:
    trakt.auth_request_id = False
    signed_in(trakt, store)
    stored = store.get_token("trakt", PROFILE)
    ahead = [0.8 * 7 * 86400]  # past the refresh point; the access token works for a day
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(config, store, clock=lambda: time.time() + ahead[0], sleep=no_wait)
    trakt.proxy_page_next(1, status=401, route="POST /oauth/token")
    try:
        await client.last_activities(PROFILE)  # with the current token
        assert await client.sign_in_ending(PROFILE) is None  # nothing to sign in again for
        assert store.get_token("trakt", PROFILE) == stored
        ahead[0] += 600  # past the wait before a failed refresh is tried again
        await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    assert store.get_token("trakt", PROFILE)["refresh_token"] != stored["refresh_token"]
    assert trakt.count("POST", "/oauth/token") == 2


async def test_trakt_refusing_a_refresh_without_a_request_id_is_still_a_refusal(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Its OAuth error is JSON (RFC 6749 5.2): Trakt's own answer, whatever its headers.
    trakt.auth_request_id = False
    signed_in(trakt, store)
    trakt.refuse_refresh_tokens()
    trakt.expire_tokens()
    with pytest.raises(TraktAuthError, match="no longer accepts"):
        await client.last_activities(PROFILE)


async def test_a_refused_refresh_is_said_in_words_not_trakt_s_oauth_code(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # The status page showed "(invalid_grant)" to people who never read RFC 6749.
    signed_in(trakt, store)
    trakt.refuse_refresh_tokens()
    trakt.expire_tokens()
    with pytest.raises(TraktAuthError) as refused:
        await client.last_activities(PROFILE)
    said = str(refused.value)
    assert "(it was revoked or used elsewhere)" in said, said
    assert "invalid_grant" not in said, said
    assert f"watchbridge auth trakt --profile {PROFILE}" in said, said


async def test_trakt_s_vip_refusal_of_a_refresh_without_a_request_id_says_vip(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # A bare 426 naming Trakt's upgrade page was held as a proxy's page, every 10 minutes,
    # while the app's owner had lost VIP.
    trakt.auth_request_id = False
    signed_in(trakt, store)
    trakt.expire_tokens()
    upgrade = {"X-Upgrade-URL": trakt.upgrade_url}
    trakt.fail_next(1, 426, upgrade, route="POST /oauth/token", from_trakt=False)
    with pytest.raises(TraktAccountError, match="VIP"):
        await client.last_activities(PROFILE)


@pytest.mark.parametrize("expires_in", ["a week", -3600, "NaN"])
async def test_a_refreshed_pair_with_a_lifetime_that_is_no_number_is_kept_and_used(
    client: TraktClient, trakt: FakeTrakt, store: Store, expires_in: object
) -> None:
    # Trakt took the single-use refresh token when it answered: thrown away, the new pair
    # left only the spent one, and the next refresh signed the profile out. Taken as it was
    # (a lifetime past or at once), every call refreshed again.
    signed_in(trakt, store)
    before = store.get_token("trakt", PROFILE)
    trakt.expire_tokens()
    trakt.reshape_next(1, lambda pair: pair | {"expires_in": expires_in}, route="POST /oauth/token")
    await client.last_activities(PROFILE)
    await client.last_activities(PROFILE)
    after = store.get_token("trakt", PROFILE)
    assert after["refresh_token"] != before["refresh_token"]
    assert 0 < after["expires_in"] <= trakt.token_lifetime  # the shortest Trakt has given
    assert trakt.count("POST", "/oauth/token") == 1


async def test_an_outage_of_the_sign_in_host_before_the_token_expires_stops_no_call(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Tokens are refreshed at 75 % of their life: the rest is there to ride out such outages.
    sign_in_trakt(store, trakt, PROFILE, now=time.time() - 0.8 * trakt.token_lifetime)
    trakt.fail_next(10, 503, route="POST /oauth/token")
    await client.last_activities(PROFILE)
    await client.last_activities(PROFILE)
    assert trakt.count("POST", "/oauth/token") == 2  # one refresh (two tries), then a pause


async def test_a_wrong_client_secret_at_sign_in_names_the_settings(
    trakt: FakeTrakt, store: Store
) -> None:
    client = client_with_secret(trakt, store, "not-the-secret")
    try:
        with pytest.raises(TraktAuthError, match=r"services\.trakt\.client_secret"):
            await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    finally:
        await client.aclose()


async def test_a_wrong_client_secret_answered_with_a_400_stops_the_sign_in_at_once(
    trakt: FakeTrakt, store: Store
) -> None:
    # OAuth allows invalid_client as a 400: polled as "pending", it ended as "expired".
    client = client_with_secret(trakt, store, "not-the-secret")
    invalid = {"error": "invalid_client", "error_description": "bad secret"}
    trakt.fail_next(500, 400, body=invalid, route="POST /oauth/device/token")
    try:
        with pytest.raises(TraktAuthError, match=r"services\.trakt\.client_secret"):
            await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    finally:
        await client.aclose()
    assert trakt.count("POST", "/oauth/device/token") == 1


async def test_an_empty_401_to_the_poll_names_the_app_s_settings_at_once(
    trakt: FakeTrakt, store: Store
) -> None:
    # Trakt's device routes answer bare statuses; its empty 401 (no request id) was read as a
    # proxy's page, and the sign-in polled until the code ran out, 10 minutes later, to say
    # "try again in a few minutes".
    trakt.auth_request_id, trakt.bare_client_refusal = False, True
    client = client_with_secret(trakt, store, "not-the-secret")
    try:
        with pytest.raises(TraktAuthError) as refused:
            await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    finally:
        await client.aclose()
    said = refused.value.message
    assert "services.trakt.client_id" in said and "services.trakt.client_secret" in said
    assert "VIP" in said and "try again in a few minutes" not in said
    assert trakt.count("POST", "/oauth/device/token") == 1


async def test_an_empty_401_to_the_code_request_names_the_app_s_settings(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    # A deleted app's client id (trakt-api#902: apps of accounts whose VIP ended).
    trakt.auth_request_id, trakt.bare_client_refusal = False, True
    trakt.delete_app()
    with pytest.raises(TraktAccountError) as refused:
        await client.sign_in(PROFILE, lambda code: trakt.approve_device(code.user_code))
    said = refused.value.message
    assert "services.trakt.client_id" in said and "VIP" in said
    assert "try again in a few minutes" not in said


async def test_a_wrong_client_secret_at_refresh_names_the_settings_not_a_new_sign_in(
    trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.expire_tokens()
    client = client_with_secret(trakt, store, "not-the-secret")
    try:
        with pytest.raises(TraktAuthError, match=r"services\.trakt\.client_secret") as refused:
            await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    assert "watchbridge auth trakt --profile" not in str(refused.value)


def client_with_secret(trakt: FakeTrakt, store: Store, secret: str) -> TraktClient:
    config = TraktConfig(CLIENT_ID, Secret(secret), api_url=trakt.url, auth_url=trakt.url)
    return TraktClient(config, store, sleep=no_wait)


def two_clients(trakt: FakeTrakt, store: Store) -> tuple[TraktClient, TraktClient]:
    """Two clients of one account, as the delivery worker and a link run have."""
    return client_with_secret(trakt, store, CLIENT_SECRET), client_with_secret(
        trakt, store, CLIENT_SECRET
    )


async def test_clients_of_one_account_pace_their_writes_together(
    trakt: FakeTrakt, store: Store
) -> None:
    # The delivery worker and a link's writer each have a client; Trakt counts the account.
    trakt.enforce_rate_limits = True
    signed_in(trakt, store)
    deliver, link = two_clients(trakt, store)
    movie = a_movie(trakt)
    try:
        # Connections set up first: a slow connect of a loaded machine would delay the first
        # write's arrival, and Trakt's 1 s counts arrivals.
        await asyncio.gather(deliver.last_activities(PROFILE), link.last_activities(PROFILE))
        await asyncio.gather(
            deliver.scrobble(PROFILE, "start", movie, 10), link.add_watchlist(PROFILE, [movie])
        )
    finally:
        await deliver.aclose()
        await link.aclose()
    assert [r.status for r in trakt.requests if r.method == "POST"] == [201, 201]


async def test_a_429_one_client_got_pauses_the_other_clients_of_the_account(
    trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    deliver, reader = two_clients(trakt, store)
    trakt.throttle_next(1, retry_after=120, route="GET /sync/last_activities")
    try:
        with pytest.raises(RateLimited):
            await deliver.last_activities(PROFILE)
        asked = len(trakt.requests)
        with pytest.raises(RateLimited):  # handed back at once, as it was to the other client
            await reader.last_activities(PROFILE)
    finally:
        await deliver.aclose()
        await reader.aclose()
    assert len(trakt.requests) == asked  # the reader asked nothing within the Retry-After


async def test_a_request_waiting_for_its_turn_is_handed_another_clients_long_429(
    trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    deliver, link = two_clients(trakt, store)
    trakt.enforce_rate_limits = True
    trakt.rate_limits["AUTHED_API_GET_LIMIT"] = RateLimit(3600, 0)  # any read: 429, an hour
    trakt.delay_next(1, 0.5, route="GET /sync/last_activities")  # ... answered a moment later
    movie = a_movie(trakt)
    try:
        await deliver.scrobble(PROFILE, "start", movie, 10)  # spends this second's write
        reading = asyncio.create_task(link.last_activities(PROFILE))
        await asyncio.sleep(0.1)
        writing = asyncio.create_task(deliver.scrobble(PROFILE, "pause", movie, 20))  # waits
        with pytest.raises(RateLimited):
            await reading
        with pytest.raises(RateLimited):  # not an hour's sleep in the pacer
            await asyncio.wait_for(writing, timeout=5)
    finally:
        await deliver.aclose()
        await link.aclose()


async def test_device_sign_in_keeps_polling_through_a_gateway_error(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    def approve_after_a_blip(code: DeviceCode) -> None:
        trakt.fail_next(2, 502, route="POST /oauth/device/token")  # both tries of one poll
        trakt.approve_device(code.user_code)

    assert (await client.sign_in(PROFILE, approve_after_a_blip)).access_token


async def test_seeded_refresh_token_signs_in(trakt: FakeTrakt, store: Store) -> None:
    token = trakt.issue_token()
    config = TraktConfig(CLIENT_ID, None, api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(
        config, store, seeded_refresh_tokens={PROFILE: Secret(token.refresh_token)}
    )
    await client.last_activities(PROFILE)
    await client.aclose()
    assert store.get_token("trakt", PROFILE) is not None


def seeded_client(trakt: FakeTrakt, store: Store, refresh_token: str) -> TraktClient:
    """A client whose config pre-seeds `refresh_token` (as after a restart with it pasted)."""
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    seeded = {PROFILE: Secret(refresh_token)}
    return TraktClient(config, store, seeded_refresh_tokens=seeded, sleep=no_wait)


async def test_a_refresh_token_pasted_in_the_config_replaces_a_stored_pair_trakt_refuses(
    trakt: FakeTrakt, store: Store
) -> None:
    # The stored pair was revoked; the user pasted a new refresh token and restarted.
    signed_in(trakt, store)
    dead = store.get_token("trakt", PROFILE)
    trakt.revoke_tokens()
    pasted = trakt.issue_token()
    client = seeded_client(trakt, store, pasted.refresh_token)
    try:
        await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    stored = store.get_token("trakt", PROFILE)
    assert stored is not None and dead is not None
    assert stored["refresh_token"] not in (dead["refresh_token"], pasted.refresh_token)


def refreshes_with(trakt: FakeTrakt, refresh_token: str) -> int:
    return sum(
        1
        for call in trakt.calls("POST", "/oauth/token")
        if call.json().get("refresh_token") == refresh_token
    )


async def test_a_pre_seeded_refresh_token_is_sent_once_in_all_the_database_s_lifetimes(
    trakt: FakeTrakt, store: Store
) -> None:
    old = trakt.issue_token()  # the token once pasted, spent by its first refresh
    client = seeded_client(trakt, store, old.refresh_token)
    await client.last_activities(PROFILE)
    trakt.revoke_tokens()
    try:
        for _ in range(3):
            with pytest.raises(TraktAuthError, match="no longer accepts"):
                await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    restarted = seeded_client(trakt, store, old.refresh_token)  # the same config, restarted
    try:
        with pytest.raises(TraktAuthError, match="no longer accepts"):
            await restarted.last_activities(PROFILE)
    finally:
        await restarted.aclose()
    assert refreshes_with(trakt, old.refresh_token) == 1
    kept = [tuple(row) for row in store.db.execute("SELECT * FROM tokens").fetchall()]
    assert old.refresh_token not in str(kept)  # only its hash
    # A token pasted since is taken, once.
    pasted = trakt.issue_token()
    again = seeded_client(trakt, store, pasted.refresh_token)
    try:
        await again.last_activities(PROFILE)
    finally:
        await again.aclose()
    assert refreshes_with(trakt, pasted.refresh_token) == 1


async def test_a_pasted_token_meeting_a_locked_account_leaves_the_working_sign_in_in_use(
    trakt: FakeTrakt, store: Store
) -> None:
    # Trakt refused the stored pair's refresh at 80 % of its life, when its access token
    # still works for a day; the pasted token's try is answered 423.
    signed_in(trakt, store)
    trakt.refuse_refresh_tokens()
    pasted = trakt.issue_token()
    trakt.fail_next(1, 400, body={"error": "invalid_grant"}, route="POST /oauth/token")
    trakt.fail_next(1, 423, route="POST /oauth/token")
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(
        config,
        store,
        seeded_refresh_tokens={PROFILE: Secret(pasted.refresh_token)},
        clock=lambda: time.time() + 0.8 * 7 * 86400,
        sleep=no_wait,
    )
    try:
        await client.last_activities(PROFILE)  # with the access token that still works
    finally:
        await client.aclose()
    assert trakt.count("GET", "/sync/last_activities") == 1


async def test_scrobble_stop_past_80_adds_one_play(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    movie = a_movie(trakt)
    first = await client.scrobble(PROFILE, "stop", movie, 95)
    again = await client.scrobble(PROFILE, "stop", movie, 95)
    assert first.action == "scrobble" and again.duplicate
    assert len(trakt.history()) == 1


async def test_history_add_reports_unknown_items(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    known, unknown = a_movie(trakt), MediaRef("movie", Ids(imdb="tt9999999"))
    result = await client.add_history(
        PROFILE, [HistoryPlay(known, 1_700_000_000), HistoryPlay(unknown, 1_700_000_000)]
    )
    assert result.added == 1 and result.not_found == [unknown]
    assert len(trakt.history()) == 1


async def test_a_history_add_answered_in_another_shape_is_not_taken_as_done(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Counts wrapped in an object: read as they were, `not_found` is empty and the unknown
    # movie's play would be marked delivered and lost without a word.
    signed_in(trakt, store)
    known, unknown = a_movie(trakt), MediaRef("movie", Ids(imdb="tt9999999"))
    trakt.reshape_next(1, lambda body: {"result": body}, route="POST /sync/history")
    with pytest.raises(Unavailable) as failed:
        await client.add_history(
            PROFILE, [HistoryPlay(known, 1_700_000_000), HistoryPlay(unknown, 1_700_000_000)]
        )
    assert failed.value.outcome_unknown and not failed.value.answered  # looked for, not resent
    assert "Trakt may have changed its answers" in failed.value.message
    assert "without its `added` counts" in failed.value.message


@pytest.mark.parametrize(
    "not_found",
    [[{"ids": {"imdb": "tt9999999"}}], {"movies": {"ids": {"imdb": "tt9999999"}}}, "tt9999999"],
    ids=["a list", "a group not a list", "text"],
)
async def test_a_history_add_answered_with_its_not_found_in_another_shape_is_not_taken_as_done(
    client: TraktClient, trakt: FakeTrakt, store: Store, not_found: object
) -> None:
    # Read as before, it failed with a traceback (a list) or said every item found (the
    # unknown movie's play marked delivered and lost).
    signed_in(trakt, store)
    known, unknown = a_movie(trakt), MediaRef("movie", Ids(imdb="tt9999999"))
    reshaped = lambda body: body | {"not_found": not_found}  # noqa: E731
    trakt.reshape_next(1, reshaped, route="POST /sync/history")
    with pytest.raises(Unavailable) as failed:
        await client.add_history(
            PROFILE, [HistoryPlay(known, 1_700_000_000), HistoryPlay(unknown, 1_700_000_000)]
        )
    assert failed.value.outcome_unknown and not failed.value.answered  # looked for, not resent
    assert "without a `not_found` watchbridge can read" in failed.value.message


async def test_a_watchlist_add_answered_with_its_not_found_as_a_list_is_sent_again(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    movie = a_movie(trakt)
    trakt.reshape_next(1, lambda body: body | {"not_found": [{}]}, route="POST /sync/watchlist")
    with pytest.raises(Unavailable) as failed:
        await client.add_watchlist(PROFILE, [movie])
    assert not failed.value.outcome_unknown
    assert "without a `not_found` watchbridge can read" in failed.value.message


async def test_a_rating_removal_answered_with_its_not_found_in_another_shape_is_not_taken_as_done(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # `not_found` sent as a list: read as before, it said every item found and removed.
    signed_in(trakt, store)
    movie = a_movie(trakt)
    trakt.reshape_next(1, lambda body: body | {"not_found": []}, route="POST /sync/ratings/remove")
    with pytest.raises(Unavailable) as failed:
        await client.remove_ratings(PROFILE, [movie])
    assert failed.value.outcome_unknown and not failed.value.answered
    assert "without a `not_found` watchbridge can read" in failed.value.message
    assert "Trakt may have changed its answers" in failed.value.message


async def test_history_add_reports_an_episode_missing_under_its_show(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Trakt echoes it under not_found.episodes (trakt-api#357); read as added, the play would
    # be marked delivered and lost without a word.
    signed_in(trakt, store)
    there = MediaRef("episode", show_ids=Ids(tvdb="121361"), season=1, number=1)
    missing = MediaRef("episode", show_ids=Ids(tvdb="121361"), season=1, number=99)
    result = await client.add_history(
        PROFILE, [HistoryPlay(there, 1_700_000_000), HistoryPlay(missing, 1_700_000_000)]
    )
    assert result.added == 1 and result.not_found == [missing]


async def test_rating_an_episode_missing_under_its_show_reports_it_not_found(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    missing = MediaRef("episode", show_ids=Ids(tvdb="121361"), season=1, number=99)
    result = await client.add_ratings(PROFILE, [RatingWrite(missing, 8, 1_700_000_000)])
    assert result.added == 0 and result.not_found == [missing]
    assert trakt.ratings() == []


async def test_watched_snapshot_counts_the_plays_of_each_episode_specials_too(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Since mid-2026 Trakt gives a show's seasons only with extended=progress, season 0 only
    # with specials=true (trakt-api#844, #792): without them every episode had no plays.
    signed_in(trakt, store)
    show = trakt.add_show("Doctor Who", 2005, tvdb=78804, seasons={0: 1, 1: 1})
    for episode in (show.seasons[0].episodes[1], *show.episodes()):
        trakt.add_history(episode, "2026-09-01T20:00:00Z")
    (row,) = await client.watched(PROFILE, "shows")
    plays = {(s["number"], e["number"]): e["plays"] for s in row["seasons"] for e in s["episodes"]}
    assert plays == {(0, 1): 2, (1, 1): 1}


async def test_watched_snapshot_reads_every_page(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Trakt pages it since mid-2026, 100 a page by default and with extended=progress.
    signed_in(trakt, store)
    for n in range(260):
        trakt.add_history(trakt.add_movie(f"Movie {n}", 2000), "2026-09-01T20:00:00Z")
    for n in range(120):
        show = trakt.add_show(f"Show {n}", 2000, seasons={1: 1})
        trakt.add_history(show.seasons[1].episodes[1], "2026-09-01T20:00:00Z")
    assert len(await client.watched(PROFILE, "movies")) == 260
    shows = await client.watched(PROFILE, "shows")
    assert len(shows) == 120 and all(row["seasons"] for row in shows)


async def test_ratings_are_written(client: TraktClient, trakt: FakeTrakt, store: Store) -> None:
    signed_in(trakt, store)
    await client.add_ratings(PROFILE, [RatingWrite(a_movie(trakt), 8, 1_700_000_000)])
    assert [r.rating for r in trakt.ratings()] == [8]


async def test_trakt_answers_are_awaited_a_minute(client: TraktClient) -> None:
    # trakt-api.md §9: batch writes are slow (800 ratings took ~45 s); a 60 s read timeout.
    assert client.http._client.timeout.read == 60.0


async def test_trakt_header_names_are_lower_case(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    await client.last_activities(PROFILE)
    sent = trakt.requests[-1].headers.raw
    assert {"trakt-api-key", "trakt-api-version", "user-agent"} <= {k for k, _ in sent}


async def test_server_errors_are_retried(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.fail_next(1, 502)
    assert await client.last_activities(PROFILE)


async def test_persistent_outage_is_unavailable(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.fail_next(5, 503)
    with pytest.raises(Unavailable):
        await client.last_activities(PROFILE)


async def test_long_retry_after_is_handed_back(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.throttle_next(1, retry_after=120)
    with pytest.raises(RateLimited) as caught:
        await client.last_activities(PROFILE)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 120


@pytest.mark.parametrize(("status", "words"), [(420, "limit"), (423, "locked"), (426, "VIP")])
async def test_account_problems_are_not_retried(
    client: TraktClient, trakt: FakeTrakt, store: Store, status: int, words: str
) -> None:
    signed_in(trakt, store)
    trakt.fail_next(1, status)
    with pytest.raises(TraktAccountError, match=words):
        await client.add_history(PROFILE, [HistoryPlay(a_movie(trakt), 1_700_000_000)])
    assert trakt.count("POST", "/sync/history") == 1


@pytest.mark.parametrize(
    ("deactivated", "words"),
    [
        (False, "the Trakt account is locked (Trakt's abuse checks lock accounts that send too"),
        (True, "the Trakt account is deactivated: contact Trakt support to reactivate it"),
    ],
)
async def test_a_423_says_whether_the_account_is_locked_or_deactivated(
    client: TraktClient, trakt: FakeTrakt, store: Store, deactivated: bool, words: str
) -> None:
    signed_in(trakt, store)
    trakt.lock_account(deactivated=deactivated)
    with pytest.raises(TraktAccountError) as caught:
        await client.add_history(PROFILE, [HistoryPlay(a_movie(trakt), 1_700_000_000)])
    assert f"Trakt: {words}" in caught.value.message


async def test_a_426_points_first_at_the_apps_owner_who_must_be_vip(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # Since July 2026 an app works only while its owner is VIP: a 426 on a play that worked
    # yesterday is far more often the app's owner than a feature of the user's account.
    signed_in(trakt, store)
    trakt.fail_next(1, 426)
    with pytest.raises(TraktAccountError) as caught:
        await client.add_history(PROFILE, [HistoryPlay(a_movie(trakt), 1_700_000_000)])
    assert "the account that owns the app of services.trakt.client_id must be VIP" in (
        caught.value.message
    )


@pytest.mark.parametrize(
    ("vip", "headers", "fix"),
    [
        (True, True, "the account is VIP and still at its limit: make room on Trakt"),
        (False, True, "upgrade to VIP (https://trakt.tv/vip) or make room on Trakt"),
        # 2026's bare 420: the account's settings say whether it is VIP (§15)
        (True, False, "the account is VIP and still at its limit: make room on Trakt"),
        (False, False, "upgrade to VIP (https://app.trakt.tv/vip) or make room on Trakt"),
    ],
)
async def test_an_account_limit_says_to_upgrade_only_an_account_trakt_says_is_not_vip(
    client: TraktClient, trakt: FakeTrakt, store: Store, vip: bool, headers: bool, fix: str
) -> None:
    signed_in(trakt, store)
    trakt.set_limits(vip=vip)
    trakt.account_limit(1, route="POST /sync/ratings", headers=headers)  # False: 2026's bare 420
    with pytest.raises(TraktAccountError) as caught:
        await client.add_ratings(PROFILE, [RatingWrite(a_movie(trakt), 8, 1_700_000_000)])
    assert fix in caught.value.message


@pytest.mark.parametrize("headers", [True, False])
async def test_a_full_history_never_says_to_upgrade_as_vip_has_the_same_history_limit(
    client: TraktClient, trakt: FakeTrakt, store: Store, headers: bool
) -> None:
    signed_in(trakt, store)
    trakt.set_limits(vip=False)
    trakt.account_limit(1, route="POST /sync/history", headers=headers)
    with pytest.raises(TraktAccountError) as caught:
        await client.add_history(PROFILE, [HistoryPlay(a_movie(trakt), 1_700_000_000)])
    assert "make room on Trakt (a VIP account has the same history limit)" in (caught.value.message)
    assert "upgrade" not in caught.value.message


async def test_a_bare_account_limit_names_the_limit_the_accounts_settings_list(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.account_limit(1, route="POST /sync/watchlist", headers=False)
    written = await client.add_watchlist(PROFILE, [a_movie(trakt)])
    assert written.limit_hit == LimitHit(limit=250, vip=False)


async def test_a_bare_account_limit_whose_settings_cannot_be_read_is_told_as_trakt_said_it(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.account_limit(1, route="POST /sync/ratings", headers=False)
    trakt.fail_next(1, 404, route="GET /users/settings")
    with pytest.raises(TraktAccountError) as caught:
        await client.add_ratings(PROFILE, [RatingWrite(a_movie(trakt), 8, 1_700_000_000)])
    assert "make room on Trakt, or upgrade to VIP (https://app.trakt.tv/vip) if the" in (
        caught.value.message
    )


async def test_a_search_answered_with_a_page_that_is_not_json_is_a_trakt_error(
    client: TraktClient, trakt: FakeTrakt
) -> None:
    trakt.fail_next(1, 200, body="<html>maintenance</html>", route="/search/{id_type}/{id}")
    with pytest.raises(TraktError, match="other than JSON"):
        await client.search("tmdb", "65942", "show")


@pytest.fixture
def long_history(trakt: FakeTrakt) -> FakeTrakt:
    """300 plays: two pages of 250."""
    show = trakt.add_show("Long Show", 2010, tmdb=4242, tvdb=4243, seasons={1: 150, 2: 150})
    for episode in show.episodes():
        trakt.add_history(episode, "2024-01-01T20:00:00.000Z")
    return trakt


@pytest.mark.parametrize("page_count", [None, "abc", "1"])
async def test_a_history_with_a_broken_page_count_is_read_whole(
    client: TraktClient, long_history: FakeTrakt, store: Store, page_count: str | None
) -> None:
    # A short read would take the plays past page 1 for removed on Trakt (trakt-api#896).
    signed_in(long_history, store)
    long_history.page_count_header = page_count
    assert len(await client.history(PROFILE, "episodes")) == 300


async def test_a_page_count_far_too_high_stops_at_the_first_empty_page(
    client: TraktClient, long_history: FakeTrakt, store: Store
) -> None:
    signed_in(long_history, store)
    long_history.page_count_header = "40"
    assert len(await client.history(PROFILE, "episodes")) == 300
    assert long_history.count("GET", "/sync/history/{type}") == 3


async def test_a_listing_answered_with_a_page_that_is_not_json_is_an_outage(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.fail_next(2, 200, body="<html>maintenance</html>", content_type="text/html")
    with pytest.raises(Unavailable, match="unreadable body"):
        await client.history(PROFILE, "movies")


async def test_a_history_add_answered_with_a_cut_off_body_may_have_landed(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.fail_next(1, 201, body='{"added": {"movies": 1', content_type="application/json",
                    route="POST /sync/history", after_handler=True)  # fmt: skip
    with pytest.raises(Unavailable) as caught:
        await client.add_history(PROFILE, [HistoryPlay(a_movie(trakt), 1.7e9)])
    assert caught.value.outcome_unknown
    assert len(trakt.history()) == 1  # it did land


async def test_a_listing_that_serves_its_first_page_whatever_is_asked_ends(
    client: TraktClient, long_history: FakeTrakt, store: Store
) -> None:
    # With no page count to go by, full pages read on: a page served again ends the listing.
    signed_in(long_history, store)
    long_history.page_count_header, long_history.ignore_page = None, True
    assert len(await client.history(PROFILE, "episodes")) == 250
    assert long_history.count("GET", "/sync/history/{type}") == 2


async def test_a_firewall_block_is_waited_out_for_minutes(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    signed_in(trakt, store)
    trakt.cloudflare_next(1, status=403)
    with pytest.raises(Unavailable) as caught:
        await client.last_activities(PROFILE)
    assert caught.value.retry_after == 600


async def test_a_401_page_without_trakts_request_id_leaves_the_sign_in_unrefreshed(
    client: TraktClient, trakt: FakeTrakt, store: Store
) -> None:
    # A proxy's or Cloudflare's 401 says nothing of the token: a refresh would spend the
    # single-use refresh token for nothing. Waited out as an outage instead (pitfalls §7).
    signed_in(trakt, store)
    trakt.cloudflare_next(1, status=401)
    with pytest.raises(Unavailable, match="in its place") as caught:
        await client.scrobble(PROFILE, "stop", a_movie(trakt), 90.0)
    assert caught.value.retry_after == 600 and not caught.value.answered
    assert trakt.count("POST", "/oauth/token") == 0
    await client.last_activities(PROFILE)  # the sign-in still works


async def test_a_host_clock_days_ahead_of_trakts_refreshes_the_sign_in_once_not_at_every_call(
    trakt: FakeTrakt, store: Store
) -> None:
    # A home server whose time is days off (a bad RTC, time sync failing): Trakt's
    # `created_at` is by Trakt's clock, so each pair it gave looked due for a refresh at once.
    ahead = 6 * 86400.0  # beyond 75 % of the fake's 7-day tokens
    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(config, store, clock=lambda: time.time() + ahead, sleep=no_wait)
    signed_in(trakt, store)  # as Trakt stamped it
    try:
        for _ in range(4):
            await client.last_activities(PROFILE)
    finally:
        await client.aclose()
    assert trakt.count("POST", "/oauth/token") == 1


async def test_a_clock_set_forward_while_the_code_is_shown_does_not_end_the_sign_in(
    trakt: FakeTrakt, store: Store
) -> None:
    # A home server just started, its time synced (NTP) an hour forward while the person
    # types the code: Trakt, not our clock, says when the code has expired.
    jumped, shown, waits = [0.0], [], []

    async def meanwhile(_: float) -> None:
        waits.append(_)
        if len(waits) == 1:
            jumped[0] = 3600.0  # time synced while the first poll waits
        else:
            trakt.approve_device(shown[0].user_code)  # the person is done typing
        await asyncio.sleep(0)

    config = TraktConfig(CLIENT_ID, Secret(CLIENT_SECRET), api_url=trakt.url, auth_url=trakt.url)
    client = TraktClient(config, store, clock=lambda: time.time() + jumped[0], sleep=meanwhile)
    try:
        tokens = await client.sign_in(PROFILE, shown.append)
    finally:
        await client.aclose()
    assert store.get_token("trakt", PROFILE)["access_token"] == tokens.access_token


async def test_a_pasted_refresh_token_tried_again_after_an_outage_keeps_its_pair(
    trakt: FakeTrakt, store: Store
) -> None:
    # Trakt refused the stored pair; the pasted token's first try met a captive portal.
    signed_in(trakt, store)
    dead = store.get_token("trakt", PROFILE)
    trakt.revoke_tokens()
    pasted = trakt.issue_token()
    trakt.fail_next(1, 400, body={"error": "invalid_grant"}, route="POST /oauth/token")
    trakt.fail_next(1, 200, body="<html>sign in to the wifi</html>", route="POST /oauth/token")
    client = seeded_client(trakt, store, pasted.refresh_token)
    try:
        # Not "no longer accepts the sign-in: run `watchbridge auth trakt`": it waits.
        with pytest.raises(TraktSignInUnavailable, match="pasted"):
            await client.last_activities(PROFILE)
        await client.last_activities(PROFILE)  # the pasted token is sent now: its pair is kept
    finally:
        await client.aclose()
    stored = store.get_token("trakt", PROFILE)
    assert stored is not None and dead is not None
    assert stored["refresh_token"] not in (dead["refresh_token"], pasted.refresh_token)


async def test_a_history_read_holds_one_object_per_show_and_says_what_trakt_sent(
    client: TraktClient, long_history: FakeTrakt, store: Store
) -> None:
    # At 60,000 plays the show's JSON repeated in every entry was ~40 MB of the read.
    signed_in(long_history, store)
    episode = long_history.shows[-1].seasons[1].episodes[1]
    long_history.add_history(episode, "2024-02-01T20:00:00.000Z")  # a rewatch
    entries = await client.history(PROFILE, "episodes")
    assert entries == [h.to_json() for h in long_history.history()]  # across both pages
    assert len({id(e["show"]) for e in entries}) == 1
    rewatched = [e["episode"] for e in entries if e["episode"]["ids"]["trakt"] == episode.trakt]
    assert len(rewatched) == 2 and rewatched[0] is rewatched[1]


def test_media_shared_only_when_equal() -> None:
    before = {"title": "Show", "ids": {"trakt": 1, "tmdb": 10}}
    renamed = {"title": "Show (2024)", "ids": {"trakt": 1, "tmdb": 10}}
    entries = [{"show": before}, {"show": dict(before)}, {"show": renamed}, {"show": []}]
    share_media(entries, {})
    assert entries[1]["show"] is before and entries[2]["show"] is renamed
    assert entries == [{"show": before}, {"show": before}, {"show": renamed}, {"show": []}]


async def test_a_device_code_answer_without_its_waits_takes_the_documented_ones() -> None:
    answer = {"device_code": "d", "user_code": "u", "verification_url": "https://trakt.tv/activate"}
    for waits in ({}, {"interval": None, "expires_in": "soon"}, {"interval": -1, "expires_in": 0}):
        code = device_code_of(answer | waits)
        assert (code.interval, code.expires_in) == (5.0, 600.0)
