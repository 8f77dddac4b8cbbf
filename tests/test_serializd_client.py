"""The Serializd client against the stateful fake Serializd: sign-in, paging, both systems."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd, parse_iso
from tests.harness import loop_free_while_the_store_is_locked
from watchbridge.config import Secret, SerializdAccount, SerializdConfig
from watchbridge.http import RateLimited, RetryPolicy, Unavailable
from watchbridge.ratings import to_serializd
from watchbridge.services.serializd import (
    LOGIN_FORBIDDEN_WAIT,
    REFUSAL_KEPT,
    REFUSED,
    REQUESTS_PER_SECOND,
    SerializdAuthError,
    SerializdClient,
    SerializdError,
    SerializdItemError,
    SerializdUnavailable,
    WatchlistShow,
    blocked_advice,
    credentials_fingerprint,
    episode_log_body,
    lane,
    login_refusal,
    parse_diary_page,
    parse_season_listing,
    parse_show_page,
    parse_show_seasons,
    parse_watchlist_page,
    review_body,
    seasons_body,
    snake_case_only,
    token_expiry,
    watchlist_remove_body,
)
from watchbridge.store import Store

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).parent / "fixtures" / "serializd"
PROFILE = "me"
EMAIL, PASSWORD, USERNAME = ALICE
LOGIN = "/api/login"
DIARY = "/api/user/{username}/diary"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = FakeSerializd()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


def make_client(
    fake: FakeSerializd,
    store: Store,
    password: str = PASSWORD,
    url: str | None = None,
    email: str = EMAIL,
    clock: Callable[[], float] = time.time,
    requests_per_second: float = 1000,
) -> SerializdClient:
    account = SerializdAccount(email, Secret(password))
    client = SerializdClient(
        SerializdConfig(api_url=url or fake.url),
        store,
        accounts={PROFILE: account},
        requests_per_second=requests_per_second,
        clock=clock,
    )
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
    return client


@pytest.fixture
async def client(fake: FakeSerializd, store: Store) -> AsyncIterator[SerializdClient]:
    client = make_client(fake, store)
    yield client
    await client.aclose()


def seed_diary(fake: FakeSerializd, count: int) -> None:
    """`count` rows, one minute apart (row i is the i-th newest from the end)."""
    for i in range(count):
        fake.log_entry(
            None, 1396, 1, 1 + i % 7, date_added=f"2026-07-01T{10 + i // 60:02d}:{i % 60:02d}:00Z"
        )


# --------------------------------------------------------------------------- sign-in


async def test_login_stores_the_token(
    client: SerializdClient, fake: FakeSerializd, store: Store
) -> None:
    assert await client.login(PROFILE) == USERNAME
    stored = store.get_token("serializd", PROFILE)
    assert stored is not None and stored["token"] in fake.tokens
    assert stored["username"] == USERNAME
    assert stored["expires_at"] == pytest.approx(fake.now() + fake.token_lifetime, abs=5)


async def test_a_request_reading_its_sign_in_leaves_the_event_loop_free(
    client: SerializdClient, store: Store
) -> None:
    # Each request reads the sign-in from the store, whose lock a link run's apply holds for
    # most of a second at a big account: waited for on the event loop, every webhook waited.
    await client.login(PROFILE)
    working = client.diary(PROFILE)
    assert await loop_free_while_the_store_is_locked(store, working), "the loop waited for it"


async def test_wrong_password_is_one_clear_error(fake: FakeSerializd, store: Store) -> None:
    client = make_client(fake, store, password="wrong")
    with pytest.raises(SerializdAuthError, match=r"profiles\.me\.accounts\.serializd") as caught:
        await client.diary(PROFILE)
    assert "Incorrect password." in str(caught.value)
    for _ in range(3):  # later calls do not hammer login with the same refused password
        with pytest.raises(SerializdAuthError):
            await client.mark_seasons(PROFILE, 1396, [3572])
    await asyncio.gather(*(client.diary(PROFILE) for _ in range(5)), return_exceptions=True)
    assert fake.count("POST", LOGIN) == 1
    await client.aclose()


async def test_a_refused_password_is_not_sent_again_by_the_next_runs(
    fake: FakeSerializd, store: Store
) -> None:
    # Each sync run and watchlist run builds its own client: 48 runs a day would each try the
    # refused password, which risks locking the account.
    for _ in range(3):
        client = make_client(fake, store, password="wrong")
        with pytest.raises(SerializdAuthError):
            await client.diary(PROFILE)
        await client.aclose()
    assert fake.count("POST", LOGIN) == 1
    fixed = make_client(fake, store)  # the user puts the right password in the config
    assert await fixed.diary(PROFILE) == []
    await fixed.aclose()
    assert fake.count("POST", LOGIN) == 2


async def test_a_refused_password_made_right_on_the_website_works_again_within_hours(
    fake: FakeSerializd, store: Store
) -> None:
    clock = FakeClock(fake.now())
    refused = make_client(fake, store, password="wrong", clock=clock)
    with pytest.raises(SerializdAuthError, match="else every 6 hours"):
        await refused.diary(PROFILE)
    await refused.aclose()
    fake.users[EMAIL.lower()].password = "wrong"  # the user set the website to the config's
    clock.advance(REFUSAL_KEPT + 1)
    later = make_client(fake, store, password="wrong", clock=clock)
    assert await later.diary(PROFILE) == []  # not held for a year
    await later.aclose()
    assert fake.count("POST", LOGIN) == 2


async def test_a_refused_password_is_tried_again_after_hours_while_its_refusal_is_kept(
    fake: FakeSerializd, store: Store
) -> None:
    # The refusal is kept until a login goes through (the status reads refused until then),
    # but the same password is tried again after its hours: kept is not held off.
    clock = FakeClock(fake.now())
    for _ in range(2):
        clock.advance(REFUSAL_KEPT + 1)
        client = make_client(fake, store, password="wrong", clock=clock)
        with pytest.raises(SerializdAuthError, match="else every 6 hours") as refused:
            await client.diary(PROFILE)
        await client.aclose()
        assert refused.value.retry_after == REFUSAL_KEPT
    assert fake.count("POST", LOGIN) == 2
    refusal = login_refusal(store, PROFILE, clock() + 365 * 86400.0)
    assert refusal is not None and refusal.at == clock()
    assert "wrong" not in json.dumps(store.cache_get(REFUSED, PROFILE, clock())[1])


async def test_a_6_hour_refusal_an_older_release_kept_holds_its_hours_after_upgrading(
    fake: FakeSerializd, store: Store
) -> None:
    clock = FakeClock(fake.now())
    client = make_client(fake, store, clock=clock)
    account = client.accounts[PROFILE]
    # As releases before kept it: the bare fingerprint, for 6 hours from the refusal.
    store.cache_put(
        REFUSED, PROFILE, credentials_fingerprint(account), clock() - 3600, REFUSAL_KEPT
    )
    with pytest.raises(SerializdAuthError, match="else every 6 hours") as held:
        await client.diary(PROFILE)
    assert held.value.retry_after == pytest.approx(REFUSAL_KEPT - 3600)
    assert fake.count("POST", LOGIN) == 0
    clock.advance(REFUSAL_KEPT)
    assert await client.diary(PROFILE) == []  # its hours over: the password works again
    await client.aclose()


async def test_a_refusal_kept_for_a_year_by_an_older_release_does_not_hold_after_upgrading(
    fake: FakeSerializd, store: Store
) -> None:
    client = make_client(fake, store)
    account = client.accounts[PROFILE]
    year = 365 * 86400.0
    store.cache_put(
        "serializd-refused", PROFILE, credentials_fingerprint(account), fake.now(), year
    )
    assert await client.diary(PROFILE) == []  # the password works again: signed in
    await client.aclose()


async def test_a_login_401_that_is_not_about_the_password_is_tried_again_later(
    fake: FakeSerializd, store: Store
) -> None:
    clock = FakeClock(fake.now())
    fake.fail_next(1, 401, body={"message": "You must be logged in"}, route="POST /api/login")
    first = make_client(fake, store, clock=clock)
    with pytest.raises(SerializdAuthError, match="tried again in a while"):
        await first.diary(PROFILE)
    await first.aclose()
    clock.advance(LOGIN_FORBIDDEN_WAIT + 1)
    later = make_client(fake, store, clock=clock)  # the same, right password
    assert await later.diary(PROFILE) == []
    await later.aclose()


async def test_an_email_changed_in_the_config_signs_in_as_that_account(
    fake: FakeSerializd, store: Store
) -> None:
    bob = fake.add_user("bob@example.com", "bobs own password", "bob_tv")
    alice = make_client(fake, store)
    await alice.diary(PROFILE)  # signed in as Alice, token stored
    await alice.aclose()
    corrected = make_client(fake, store, "bobs own password", email="bob@example.com")
    assert await corrected.username(PROFILE) == bob.username
    await corrected.aclose()


async def test_no_credentials_names_the_setting(fake: FakeSerializd, store: Store) -> None:
    client = SerializdClient(SerializdConfig(api_url=fake.url), store)
    with pytest.raises(SerializdAuthError, match=r"set profiles\.me\.accounts\.serializd"):
        await client.diary(PROFILE)
    assert not fake.requests
    await client.aclose()


async def test_expired_token_logs_in_once_again(
    client: SerializdClient, fake: FakeSerializd, store: Store
) -> None:
    await client.login(PROFILE)
    before = store.get_token("serializd", PROFILE)
    fake.expire_tokens()
    assert await client.diary(PROFILE) == []
    assert fake.count("POST", LOGIN) == 2
    assert store.get_token("serializd", PROFILE) != before


async def test_parallel_calls_after_expiry_log_in_once(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    await client.login(PROFILE)
    fake.expire_tokens()
    results = await asyncio.gather(
        *(client.episode_logs(PROFILE, 1396, 1, 3572) for _ in range(6)), client.diary(PROFILE)
    )
    assert results[0] == set()
    assert fake.count("POST", LOGIN) == 2


async def test_pasted_token_is_adopted(fake: FakeSerializd, store: Store) -> None:
    # A profile the client has no configured sign-in for (a config with a password logs in
    # with it instead: `a_profile_switched_from_a_token_to_a_password_logs_in`).
    client = SerializdClient(SerializdConfig(api_url=fake.url), store, requests_per_second=1000)
    assert await client.use_token(PROFILE, fake.issue_token()) == USERNAME
    await client.diary(PROFILE)
    assert fake.count("POST", LOGIN) == 0
    await client.aclose()


VALIDATE = "/api/validateauthtoken"


def token_client(
    fake: FakeSerializd, store: Store, token: str, clock: Callable[[], float] = time.time
) -> SerializdClient:
    """A client for a profile whose config has `token: ...` (as pasted, normalised as the
    config does)."""
    return SerializdClient(
        SerializdConfig(api_url=fake.url),
        store,
        accounts={PROFILE: SerializdAccount(token=Secret(token))},
        requests_per_second=1000,
        clock=clock,
    )


@pytest.mark.parametrize(
    "pasted",
    [
        "{token}",
        "tvproject_credentials={token}",
        "Bearer {token}",
        "_ga=GA1.1.5; tvproject_credentials={token}; theme=dark",
    ],
)
async def test_a_pasted_token_is_checked_once_and_used_without_a_login(
    fake: FakeSerializd, store: Store, pasted: str
) -> None:
    token = fake.issue_token()
    client = token_client(fake, store, pasted.format(token=token))
    await client.diary(PROFILE)
    await client.mark_seasons(PROFILE, 1396, [3572])
    await client.aclose()
    again = token_client(fake, store, pasted.format(token=token))  # the service restarted
    await again.diary(PROFILE)
    await again.aclose()
    assert fake.count("POST", LOGIN) == 0
    assert fake.count("POST", VALIDATE) == 1  # which also named the user the paths need
    assert fake.season_marks() == {(1396, 3572)}
    reads = fake.calls("GET", DIARY)
    assert reads and all(r.headers["authorization"] == f"Bearer {token}" for r in reads)
    stored = store.get_token("serializd", PROFILE)
    assert stored is not None and stored["username"] == USERNAME
    assert stored["expires_at"] == pytest.approx(fake.now() + fake.token_lifetime, abs=5)


async def test_an_expired_pasted_token_says_what_to_do_and_is_not_sent_again_for_hours(
    fake: FakeSerializd, store: Store
) -> None:
    clock = FakeClock(time.time())
    client = token_client(fake, store, fake.issue_token(), clock)
    await client.diary(PROFILE)
    fake.expire_tokens()
    with pytest.raises(SerializdAuthError) as caught:
        await client.diary(PROFILE)
    message = caught.value.message
    assert "Serializd no longer accepts the token pasted for profile me" in message
    assert "https://www.serializd.com" in message and "tvproject_credentials" in message
    assert "profiles.me.accounts.serializd.token" in message and "restart" in message
    assert caught.value.retry_after == REFUSAL_KEPT
    sent = len(fake.requests)
    clock.advance(REFUSAL_KEPT - 60)
    for _ in range(3):
        with pytest.raises(SerializdAuthError, match="no longer accepts"):
            await client.diary(PROFILE)
    assert len(fake.requests) == sent  # nothing to log in again with: nothing is sent
    assert fake.count("POST", LOGIN) == 0
    clock.advance(120)  # tried again then, in case Serializd refused it by mistake
    with pytest.raises(SerializdAuthError):
        await client.diary(PROFILE)
    assert len(fake.requests) == sent + 2  # the read refused, and the token check saying no
    assert fake.count("POST", LOGIN) == 0
    await client.aclose()
    fresh = token_client(fake, store, fake.issue_token(), clock)  # pasted, and restarted
    await fresh.diary(PROFILE)
    await fresh.aclose()


async def test_a_token_serializd_says_is_not_valid_is_refused_at_its_check(
    fake: FakeSerializd, store: Store
) -> None:
    token = fake.issue_token()
    fake.expire_tokens()
    client = token_client(fake, store, token)
    with pytest.raises(SerializdAuthError, match="no longer accepts the token pasted"):
        await client.diary(PROFILE)
    with pytest.raises(SerializdAuthError):
        await client.diary(PROFILE)
    assert fake.count("POST", VALIDATE) == 1
    assert fake.count("GET", DIARY) == 0
    assert store.get_token("serializd", PROFILE) is None
    await client.aclose()


async def test_a_token_the_config_changes_is_used_from_the_next_start(
    fake: FakeSerializd, store: Store
) -> None:
    bob = fake.add_user("bob@example.com", "another long passphrase", "bob_tv")
    client = token_client(fake, store, fake.issue_token())
    assert await client.username(PROFILE) == USERNAME
    await client.aclose()
    changed = token_client(fake, store, fake.issue_token(bob))
    assert await changed.username(PROFILE) == "bob_tv"
    await changed.aclose()
    assert fake.count("POST", VALIDATE) == 2


async def test_a_profile_switched_from_a_token_to_a_password_logs_in(
    fake: FakeSerializd, store: Store
) -> None:
    pasted = token_client(fake, store, fake.issue_token())
    await pasted.diary(PROFILE)
    await pasted.aclose()
    client = make_client(fake, store)
    await client.diary(PROFILE)
    await client.aclose()
    assert fake.count("POST", LOGIN) == 1
    stored = store.get_token("serializd", PROFILE)
    assert stored is not None and stored["email"] == EMAIL and not stored["pasted"]


async def test_a_username_changed_on_serializd_is_followed_without_signing_in_again(
    client: SerializdClient, fake: FakeSerializd, store: Store
) -> None:
    fake.log_entry(None, 1396, 1, 1)
    assert len(await client.diary(PROFILE)) == 1
    fake.user.username = "alice_renamed"  # changed in the app's settings; the token still works
    assert len(await client.diary(PROFILE)) == 1
    stored = store.get_token("serializd", PROFILE)
    assert stored is not None and stored["username"] == "alice_renamed"
    assert stored["formerly"] == ["alice_tv"]  # one account under both (accounts.sign_in_names)
    assert fake.count("POST", LOGIN) == 1  # the token was asked whose it is, not replaced


@pytest.mark.parametrize(
    ("stored_email", "formerly"),
    [
        (EMAIL.upper(), ["alice_tv"]),  # the same login (emails are not case-sensitive)
        (f"{EMAIL} ", ["alice_tv"]),  # signed in with a space pasted after it, removed since
        (None, []),  # an older release kept no email: a rename cannot be told, as before
    ],
)
async def test_a_username_changed_on_serializd_and_met_at_a_new_login_is_known_by_its_email(
    client: SerializdClient,
    fake: FakeSerializd,
    store: Store,
    stored_email: str | None,
    formerly: list[str],
) -> None:
    fake.log_entry(None, 1396, 1, 1)
    await client.login(PROFILE)
    signed_in = store.get_token("serializd", PROFILE)
    assert signed_in is not None
    store.put_token("serializd", PROFILE, {**signed_in, "email": stored_email}, time.time())
    fake.user.username = "alice_renamed"
    fake.expire_tokens()  # before any read met the rename: the next one logs in again

    assert len(await client.diary(PROFILE)) == 1
    stored = store.get_token("serializd", PROFILE)
    assert stored is not None and stored["username"] == "alice_renamed"
    assert stored["formerly"] == formerly  # one account under both (accounts.sign_in_names)
    assert stored["email"] == EMAIL
    assert fake.count("POST", LOGIN) == 2


async def test_an_email_pasted_with_a_space_around_it_keeps_the_sign_in(
    client: SerializdClient, fake: FakeSerializd, store: Store
) -> None:
    """The same email quoted with a space after it (pasted) is the same login: the sign-in
    stands, rather than being replaced by a login with that text (which Serializd may
    refuse as an unknown user)."""
    await client.login(PROFILE)
    pasted = make_client(fake, store, email=f" {EMAIL.upper()} ")
    try:
        assert await pasted.diary(PROFILE) == []
    finally:
        await pasted.aclose()
    assert fake.count("POST", LOGIN) == 1


async def test_an_email_pasted_with_a_space_around_it_signs_in_as_the_email(
    fake: FakeSerializd, store: Store
) -> None:
    """The first login sends the email without the spaces a paste left around it."""
    pasted = make_client(fake, store, email=f" {EMAIL} ")
    try:
        assert await pasted.diary(PROFILE) == []
    finally:
        await pasted.aclose()
    assert fake.count("POST", LOGIN) == 1


async def test_token_expiry_claim_is_read() -> None:
    token = load("login-response.json")["token"]
    assert token_expiry(token) == parse_iso("2027-07-01T12:00:00Z")
    assert token_expiry("not-a-jwt") is None


# --------------------------------------------------------------------------- transport


async def test_checkpoint_page_is_unavailable_not_a_json_crash(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    fake.checkpoint_next(3)
    with pytest.raises(SerializdUnavailable, match=r"serializd\.onrender\.com") as caught:
        await client.login(PROFILE)
    assert isinstance(caught.value, Unavailable) and "checkpoint" in str(caught.value)
    assert fake.count("POST", LOGIN) == 1  # waiting does not help: not retried


async def test_a_page_that_is_no_checkpoint_is_not_blamed_on_serializds_host(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    # A DNS filter's block page (or a captive portal's) answered for the API host.
    page = "<html><body>This site is blocked by your network</body></html>"
    fake.fail_next(3, 200, body=page, route=f"POST {LOGIN}")
    with pytest.raises(SerializdUnavailable) as caught:
        await client.login(PROFILE)
    assert "blocks scripted clients" not in str(caught.value)
    assert "a DNS filter's block page, a captive portal, a proxy" in str(caught.value)


def test_the_advice_for_a_page_never_names_the_address_already_set() -> None:
    advice = blocked_advice("https://serializd.onrender.com/", checkpoint=False)
    assert "set services.serializd.api_url" not in advice
    assert "a DNS filter's block page" in advice
    advice = blocked_advice("https://serializd.onrender.com", checkpoint=True)
    assert "set services.serializd.api_url" not in advice
    advice = blocked_advice("https://www.serializd.com", checkpoint=True)
    assert advice.endswith(
        "that host blocks scripted clients; set services.serializd.api_url to "
        "https://serializd.onrender.com"
    )


async def test_checkpoint_error_names_a_proxy_without_its_password(
    fake: FakeSerializd, store: Store
) -> None:
    proxy = fake.url.replace("://", "://proxyuser:Pr0xyPassw0rd@")
    client = make_client(fake, store, url=proxy)
    fake.checkpoint_next(3)
    with pytest.raises(SerializdUnavailable) as caught:
        await client.login(PROFILE)
    assert "Pr0xyPassw0rd" not in str(caught.value)
    assert fake.url.split("://")[1] in str(caught.value)  # the host still says which one


async def test_unknown_endpoint_html_404_is_a_clear_error(
    fake: FakeSerializd, store: Store
) -> None:
    client = make_client(fake, store, url=f"{fake.url}/moved")
    with pytest.raises(SerializdError, match="not a Serializd endpoint"):
        await client.login(PROFILE)
    await client.aclose()


async def test_server_errors_are_retried(client: SerializdClient, fake: FakeSerializd) -> None:
    await client.login(PROFILE)
    fake.fail_next(1, 502, route=DIARY)
    assert await client.diary(PROFILE) == []
    fake.fail_next(5, 503, body=b"Service Unavailable", content_type="text/plain")
    with pytest.raises(Unavailable):
        await client.diary(PROFILE)


async def test_json_429_backs_off_and_long_waits_go_back(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    await client.login(PROFILE)
    fake.fail_next(1, 429, headers={"Retry-After": "0"}, body={"message": "slow down"})
    assert await client.diary(PROFILE) == []
    fake.fail_next(1, 429, headers={"Retry-After": "120"}, body={"message": "slow down"})
    with pytest.raises(RateLimited):
        await client.diary(PROFILE)


async def test_app_headers_are_sent(client: SerializdClient, fake: FakeSerializd) -> None:
    fake.require_origin_referer = True
    await client.login(PROFILE)
    await client.season_map(1396)
    for request in fake.requests:
        assert request.headers["x-requested-with"] == "serializd_vercel"
        assert request.headers["accept"] == "application/json"


# --------------------------------------------------------------------------- reads


def test_a_finished_event_loop_is_not_kept_alive_by_its_lanes() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def contend() -> None:  # two requests at once: one waits at the account's gate
        loops.append(weakref.ref(asyncio.get_running_loop()))
        way = lane("http://serializd.invalid", PROFILE, 1000.0)

        async def hold() -> None:
            async with way.gate:
                await asyncio.sleep(0.01)

        await asyncio.gather(hold(), hold())

    asyncio.run(contend())
    asyncio.run(contend())
    gc.collect()
    assert loops[0]() is None


async def test_a_run_reading_the_catalogue_keeps_to_the_accounts_pace(
    fake: FakeSerializd, store: Store
) -> None:
    """§8: about 2 requests a second per account. A run reads the account's diary, then for
    each season the catalogue's listing and the account's ticks of it (as the reader's
    refine does): the host sees the account's pace, not a catalogue lane's pace beside it."""
    seed_diary(fake, 60)  # 3 diary pages
    client = make_client(fake, store, requests_per_second=REQUESTS_PER_SECOND)
    try:
        await client.diary(PROFILE)
        seasons = await client.show_seasons(1396)
        for number in (1, 2, 3):
            await client.season_listing(1396, number)
            await client.episode_logs(PROFILE, 1396, number, seasons.ids[number])
    finally:
        await client.aclose()
    stamps = sorted(request.time for request in fake.requests)
    assert len(stamps) == 11  # sign-in, 3 diary pages, 1 show, 3 listings, 3 seasons' ticks
    busiest = max(sum(start <= t < start + 1 for t in stamps) for start in stamps)
    assert busiest <= REQUESTS_PER_SECOND + 1  # one request every 1/rate s, the ends counted
    took = stamps[-1] - stamps[0]
    assert (len(stamps) - 1) / took <= REQUESTS_PER_SECOND * 1.1


async def test_catalogue_reads_take_no_lane_of_their_own_beside_an_account(
    fake: FakeSerializd, store: Store
) -> None:
    """Before any account sent anything (an AniList link numbering episodes), catalogue reads
    have a lane of their own; afterwards the lane of the account that sent last, whichever
    client reads the catalogue. Each account keeps its own lane."""
    reader = make_client(fake, store)
    catalogue = SerializdClient(
        SerializdConfig(api_url=fake.url), store, requests_per_second=1000
    )  # no accounts: a numbering client
    try:
        await catalogue.season_map(1396)
        alone = catalogue.catalogue_lane()
        assert alone is reader.lane("")
        await reader.diary(PROFILE)
        assert catalogue.catalogue_lane() is reader.lane(PROFILE) is not alone
        assert reader.lane("someone else") is not reader.lane(PROFILE)
    finally:
        await reader.aclose()
        await catalogue.aclose()


async def test_a_429_on_a_catalogue_read_holds_every_account_until_its_retry_after_ends(
    fake: FakeSerializd, store: Store
) -> None:
    """Whether Serializd limits per account or per address is not known (§8); a home
    server's accounts share one address. A 429 on a catalogue read (in the lane of the
    account that sent last) holds every account's requests, also the other's, which sends
    next and whose lane catalogue reads then take, until its Retry-After ends."""
    bob = fake.add_user("bob@example.com", "bob's password", "bob_tv")
    client = SerializdClient(
        SerializdConfig(api_url=fake.url),
        store,
        accounts={
            PROFILE: SerializdAccount(EMAIL, Secret(PASSWORD)),
            "you": SerializdAccount(bob.email, Secret("bob's password")),
        },
        requests_per_second=1000,
    )
    client.http.retry = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=5)
    try:
        await client.diary("you")
        await client.diary(PROFILE)  # the catalogue read below takes my lane
        fake.fail_next(1, 429, headers={"Retry-After": "2"}, body={"message": "slow down"})
        listing = asyncio.create_task(client.season_listing(1396, 1))
        while not any(request.status == 429 for request in fake.requests):
            await asyncio.sleep(0.01)
        others = [client.diary("you"), client.show_seasons(1396), client.diary(PROFILE)]
        answers = await asyncio.gather(listing, *others)
    finally:
        await client.aclose()
    assert answers[0] and answers[2].ids  # all went on once the wait was over
    (limited,) = [request for request in fake.requests if request.status == 429]
    after = [request for request in fake.requests if request.time > limited.time]
    paths = sorted(request.path for request in after)
    assert paths == [
        "/api/show/1396",
        "/api/show/1396/season/1",
        f"/api/user/{USERNAME}/diary",
        "/api/user/bob_tv/diary",
    ]
    assert min(request.time for request in after) >= limited.time + 2


async def test_diary_collects_every_page_despite_the_order(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    seed_diary(fake, 60)
    entries = await client.diary(PROFILE)
    assert sorted(e.id for e in entries) == sorted(r.id for r in fake.diary())
    assert [e.watched_at for e in entries] == sorted((e.watched_at for e in entries), reverse=True)
    assert fake.count("GET", DIARY) == 3


@pytest.mark.parametrize("page", [2, 3])
async def test_a_diary_page_answered_empty_is_an_outage_not_the_end(
    client: SerializdClient, fake: FakeSerializd, page: int
) -> None:
    # A short diary would read as entries removed on Serializd, and the link would remove
    # them from the other side: the last page too.
    seed_diary(fake, 60)
    fake.empty_diary_page = page
    with pytest.raises(SerializdUnavailable, match=f"diary page {page} of 3 with nothing new"):
        await client.diary(PROFILE)
    assert len(await client.diary(PROFILE)) == 60  # the next read, the glitch gone


async def test_a_diary_whose_pages_all_answer_page_one_is_an_outage(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    seed_diary(fake, 60)
    fake.diary_ignores_page = True
    with pytest.raises(SerializdUnavailable, match="diary page 2 of 3"):
        await client.diary(PROFILE)


async def test_an_empty_diary_is_one_empty_page(client: SerializdClient) -> None:
    assert await client.diary(PROFILE) == []


async def test_diary_entry_fields(client: SerializdClient, fake: FakeSerializd) -> None:
    fake.flag_spelling = "long"
    fake.log_entry(
        None,
        1396,
        2,
        4,
        backdate="2026-06-30T20:10:00Z",
        rating=7,
        is_rewatch=True,
        review_text="again",
        tags=["#watchbridge"],
    )
    fake.log_entry(None, 1396, None, None, date_added="2026-06-20T17:45:10Z", rating=10)
    episode, show = await client.diary(PROFILE)
    assert (episode.season_id, episode.season_number, episode.episode_number) == (3573, 2, 4)
    assert episode.watched_at == parse_iso("2026-06-30T20:10:00Z")
    assert (episode.rating, episode.is_rewatch, episode.review_text) == (7, True, "again")
    assert episode.tags == ("#watchbridge",) and episode.internal_rating == 70
    assert (show.season_id, show.season_number, show.episode_number) == (None, None, None)
    assert show.watched_at == parse_iso("2026-06-20T17:45:10Z")  # no backdate: dateAdded


async def test_diary_until_stops_only_on_a_page_with_nothing_new(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    fake.diary_order = "newest"  # exact pages: 24 rows each, newest first
    seed_diary(fake, 120)
    rows = sorted(fake.diary(), key=lambda r: r.date_added, reverse=True)
    new = {rows[3].id, rows[30].id}  # one on page 1, one on page 2
    known = {r.id for r in rows} - new
    found = await client.diary_until(PROFILE, known)
    assert {e.id for e in found} == new
    assert fake.count("GET", DIARY) == 3  # page 3 had nothing new: stop (of 5 pages)
    assert await client.diary_until(PROFILE, known | new) == []
    assert fake.count("GET", DIARY) == 4


async def test_diary_lists_reads_until_it_saw_the_entries_and_all_pages_for_one_gone(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    """Whether entries still stand, at the cost of the pages until each is seen (a row seen
    is there, whatever the order: a partial listing of every row on those pages); one never
    seen is gone only after the whole diary (a whole listing). A row listed but unreadable is
    there all the same."""
    fake.diary_order = "newest"  # exact pages: 24 rows each, newest first
    seed_diary(fake, 120)
    rows = sorted(fake.diary(), key=lambda r: r.date_added, reverse=True)
    on_pages_1_and_2 = {rows[3].id, rows[30].id}
    partial = await client.diary_lists(PROFILE, on_pages_1_and_2)
    assert partial.ids == {r.id for r in rows[:48]} and not partial.whole
    assert fake.count("GET", DIARY) == 2  # of 5 pages
    fake.delete_entry(rows[30])
    listing = await client.diary_lists(PROFILE, on_pages_1_and_2)
    assert listing.ids == {r.id for r in rows} - {rows[30].id} and listing.whole
    assert fake.count("GET", DIARY) == 2 + 5

    def undated(body: dict[str, Any]) -> None:
        for row in body["reviews"]:
            if row["id"] == rows[3].id:
                row["dateAdded"] = row["backdate"] = 1_700_000_000_000

    fake.reshape_next(1, undated, route=DIARY)
    assert rows[3].id in (await client.diary_lists(PROFILE, {rows[3].id})).ids


async def test_diary_until_finds_new_rows_in_unsorted_pages(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    seed_diary(fake, 100)
    known = {r.id for r in fake.diary()}
    for minute in range(20):  # 20 newer rows, scattered over pages 1-2 by the jitter
        fake.log_entry(None, 1396, 1, 1, date_added=f"2026-08-01T10:{minute:02d}:00Z")
    found = await client.diary_until(PROFILE, known)
    assert {e.id for e in found} == {r.id for r in fake.diary()} - known
    assert fake.count("GET", DIARY) < 5


async def test_diary_until_leaves_out_rows_it_cannot_read_and_says_so_once(
    client: SerializdClient, fake: FakeSerializd, caplog: pytest.LogCaptureFixture
) -> None:
    fake.diary_order = "newest"  # exact pages: 24 rows each, newest first
    seed_diary(fake, 30)
    rows = sorted(fake.diary(), key=lambda r: r.date_added, reverse=True)
    known = {r.id for r in rows[4:]}
    dated_otherwise, id_renamed = {rows[0].id, rows[5].id}, rows[1].id  # rows[5] is known

    def change(body: dict[str, Any]) -> None:
        for row in body["reviews"]:
            if row["id"] in dated_otherwise:
                row["dateAdded"] = row["backdate"] = 1_700_000_000_000
            elif row["id"] == id_renamed:
                row["reviewId"] = row.pop("id")

    fake.reshape_always(change, route=DIARY)
    caplog.clear()
    found = await client.diary_until(PROFILE, known)
    assert {e.id for e in found} == {rows[2].id, rows[3].id}
    told = [r for r in caplog.records if "may have changed its answers" in r.getMessage()]
    assert len(told) == 1 and told[0].levelname == "WARNING"
    assert "3 diary entries (1 without an id) on the pages read" in told[0].getMessage()
    assert told[0].__dict__["unreadable_ids"] == sorted(dated_otherwise)


async def test_unreadable_diary_rows_met_at_every_delta_read_are_told_hourly(
    client: SerializdClient, fake: FakeSerializd, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs read new entries every 30 minutes: until watchbridge is updated, the same rows
    would give a warning each time; the first read warns, the next within the hour says it
    at DEBUG, and one an hour on warns again."""
    seed_diary(fake, 5)
    known = {r.id for r in fake.diary()}

    def dated_otherwise(body: dict[str, Any]) -> None:
        for row in body["reviews"][:1]:
            row["dateAdded"] = row["backdate"] = 1_700_000_000_000

    fake.reshape_always(dated_otherwise, route=DIARY)
    caplog.set_level("DEBUG", logger="watchbridge.services.serializd")
    levels = []
    now = client.clock()
    client.clock = lambda: now
    for wait in (0.0, 1800.0, 1800.0):
        now += wait
        caplog.clear()
        await client.diary_until(PROFILE, known)
        told = [r for r in caplog.records if "may have changed its answers" in r.getMessage()]
        levels.append([r.levelname for r in told])
    assert levels == [["WARNING"], ["DEBUG"], ["WARNING"]]


async def test_season_map_reads_id_then_season_id(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    expected = {0: 3577, 1: 3572, 2: 3573, 3: 3575, 4: 3576, 5: 3578}
    assert await client.season_map(1396) == expected
    fake.season_row_keys = ("seasonId",)
    assert await client.season_map(1396) == expected
    with pytest.raises(SerializdItemError, match="Show not found"):
        await client.season_map(424242)


# --------------------------------------------------------------------------- writes


async def test_ticks_and_season_marks_round_trip(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    await client.log_episodes(PROFILE, 1396, 3572, [3, 1, 2, 2])
    assert fake.ticks() == {(1396, 3572, 1), (1396, 3572, 2), (1396, 3572, 3)}
    await client.unlog_episodes(PROFILE, 1396, 3572, [2])
    assert await client.episode_logs(PROFILE, 1396, 1, 3572) == {1, 3}
    await client.mark_seasons(PROFILE, 1396, [3572, 3573])
    assert await client.watched_seasons(PROFILE) == [(1396, [3572, 3573])]
    await client.unmark_seasons(PROFILE, 1396, [3573])
    assert fake.season_marks() == {(1396, 3572)}
    assert fake.diary() == []  # the watched state never writes the diary
    with pytest.raises(SerializdItemError):
        await client.log_episodes(PROFILE, 1396, 1, [1])  # a season number is not an id


async def test_a_write_answered_with_a_redirect_is_not_taken_as_done(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    # A proxy or a host that moved answers a redirect with no body: Serializd never saw it.
    moved = "https://serializd.example.net/api/episode_log/add"
    fake.fail_next(1, 308, headers={"Location": moved}, route="POST /api/episode_log/add")
    with pytest.raises(Unavailable) as raised:
        await client.log_episodes(PROFILE, 1396, 3572, [1])
    assert "a redirect to https://serializd.example.net/api/episode_log/add" in str(raised.value)
    assert not raised.value.outcome_unknown
    assert fake.ticks() == set()


async def test_watched_seasons_pages(client: SerializdClient, fake: FakeSerializd) -> None:
    fake.watched_page_size = 2
    for tmdb in range(1, 6):
        fake.add_show(tmdb, f"Show {tmdb}", {1: 3, 2: 3})
        fake.mark(None, tmdb, 1, 2)
    shows = await client.watched_seasons(PROFILE)
    assert sorted(show for show, _ in shows) == [1, 2, 3, 4, 5]
    assert fake.count("GET", "/api/user/{username}/watchedpage_v2/{page}") == 3


async def test_currently_watching_reads_every_page(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    fake.watched_page_size = 2
    for tmdb in range(1, 6):
        fake.add_show(tmdb, f"Show {tmdb}", {1: 3})
        fake.start_watching(None, tmdb)
    assert sorted(await client.currently_watching(PROFILE)) == [1, 2, 3, 4, 5]
    assert fake.count("GET", "/api/user/{username}/currently_watching_page/{page}") == 3


async def test_show_seasons_give_season_ids_and_episode_counts(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    seasons = await client.show_seasons(1396)
    assert seasons.ids[1] == 3572 and seasons.episodes == {0: 11, 1: 7, 2: 13, 3: 13, 4: 13, 5: 16}
    assert list(await client.season_episodes(1396, 1)) == list(range(1, 8))


async def test_watchlist_reads_every_page_sorted_by_date_added(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    fake.watchlist_page_size = 2
    for tmdb in range(1, 6):
        fake.add_show(tmdb, f"Show {tmdb}", {1: 3, 2: 3})
        fake.add_to_watchlist(None, tmdb, 2)
    shows = await client.watchlist(PROFILE)
    assert sorted(s.show_id for s in shows) == [1, 2, 3, 4, 5]
    assert all(len(s.season_ids) == 1 and s.name for s in shows)
    pages = fake.calls("GET", "/api/user/{username}/watchlistpage_v2/{page}")
    assert len(pages) == 3 and {r.query.get("sort_by") for r in pages} == {"date_added_desc"}


async def test_watchlist_writes_take_season_ids(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    await client.add_to_watchlist(PROFILE, 1396, [3576, 3575])
    assert fake.watchlisted() == {1396: {3575, 3576}}
    await client.remove_from_watchlist(PROFILE, 1396, [3575])
    assert fake.watchlisted() == {1396: {3576}}
    assert json.loads(fake.calls("POST", "/api/watchlist/remove_v2")[0].body) == load(
        "watchlist-remove_v2-request.json"
    )


async def test_a_watchlist_answer_without_items_is_an_error_not_empty(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    fake.fail_next(
        1, 200, body={"message": "ok"}, route="/api/user/{username}/watchlistpage_v2/{page}"
    )
    with pytest.raises(SerializdError, match="watchlist page"):
        await client.watchlist(PROFILE)


async def test_diary_entry_lands_with_date_rating_and_rewatch(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    watched_at = parse_iso("2026-07-02T20:30:00Z")
    created = await client.add_diary_entry(
        PROFILE, 1396, 3572, 5, watched_at, to_serializd(75), is_rewatch=True
    )
    (row,) = fake.diary()
    assert created == row.id
    assert (row.season_id, row.episode_number, row.backdate) == (3572, 5, "2026-07-02T20:30:00Z")
    assert (row.rating, row.is_rewatch, row.is_log, row.tags) == (8, True, True, ["#watchbridge"])
    assert not fake.ticks()  # a diary entry is not a tick: log_episodes does that
    (entry,) = await client.diary(PROFILE)
    assert (entry.id, entry.season_number, entry.watched_at) == (row.id, 1, watched_at)
    assert entry.internal_rating == 80


async def test_diary_entry_without_rating_or_id_in_the_answer(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    fake.reviews_add_answer = "message"
    assert await client.add_diary_entry(PROFILE, 1396, None, None, None, None, False) is None
    (row,) = fake.diary()
    assert (row.rating, row.season_id, row.backdate) == (0, None, None)


async def test_camel_case_is_never_sent(client: SerializdClient, fake: FakeSerializd) -> None:
    await client.log_episodes(PROFILE, 1396, 3572, [1])
    await client.unlog_episodes(PROFILE, 1396, 3572, [1])
    await client.mark_seasons(PROFILE, 1396, [3572])
    await client.unmark_seasons(PROFILE, 1396, [3572])
    await client.add_diary_entry(PROFILE, 1396, 3572, 1, 1_780_000_000, 6, False)
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 6 and all(r.status == 200 for r in posts)
    for request in posts:
        assert all(key == key.lower() for key in request.json())
    with pytest.raises(ValueError, match="snake_case"):
        snake_case_only({"showId": 1396})


# --------------------------------------------------------------------------- pure shapes


async def test_bodies_match_the_samples() -> None:
    when = parse_iso("2026-07-02T20:30:00Z")
    assert episode_log_body(1396, 3572, [5]) == load("episode_log-add-request.json")
    assert episode_log_body(1396, 3572, [5], add=False) == load("episode_log-remove-request.json")
    assert seasons_body(1396, [3573, 3572]) == load("watched_v2-request.json")
    episode = review_body(1396, 3572, 5, watched_at=when, rating=7, is_rewatch=False)
    assert episode == load("reviews-add-request-episode-log.json")
    show = review_body(
        1396, None, None, watched_at=when, rating=10, is_rewatch=False, tags=(), is_log=False
    )
    assert show == {**load("reviews-add-request-show-rating.json"), "like": False}
    with pytest.raises(ValueError):
        review_body(1396, 3572, 1, watched_at=None, rating=11, is_rewatch=False)
    assert seasons_body(1396, [3576, 3575]) == load("watchlist_v2-request.json")
    assert watchlist_remove_body(1396, [3575]) == load("watchlist-remove_v2-request.json")


async def test_sample_watchlist_page_parses() -> None:
    shows, total_pages = parse_watchlist_page(load("watchlistpage_v2-page-1.json"))
    assert total_pages == 1
    assert shows == [
        WatchlistShow(95479, (134232,), "Jujutsu Kaisen", parse_iso("2026-01-10T09:00:00Z")),
        WatchlistShow(1396, (3575, 3576, 3578), "Breaking Bad", parse_iso("2025-12-01T20:00:00Z")),
    ]


async def test_sample_currently_watching_page_parses() -> None:
    data = load("currently_watching_page-page-1.json")
    assert parse_show_page(data, "currently watching page 1") == ([65942], 1)


async def test_sample_show_and_season_give_episode_counts_numbers_and_ids() -> None:
    seasons = parse_show_seasons(load("show-1396.json"))
    assert (seasons.ids[1], seasons.episodes[1]) == (3572, 7)
    episodes = parse_season_listing(load("season-1396-1.json")).ids
    assert list(episodes) == list(range(1, 8))
    assert (episodes[1], episodes[7]) == (62085, 62091)  # TMDB episode ids
    assert parse_season_listing(load("season-empty-response.json")).ids == {}


async def test_sample_diary_page_parses() -> None:
    entries, total_pages = parse_diary_page(load("diary-page-1.json"))
    assert total_pages == 3 and [e.id for e in entries][:2] == [53120001, 53119870]
    first, rewatch, no_backdate, show_level = entries
    assert (first.season_number, first.rating, first.tags) == (1, 8, ("#watchbridge",))
    assert rewatch.is_rewatch and not first.is_rewatch
    assert no_backdate.watched_at == no_backdate.date_added == parse_iso("2026-06-28T08:00:02Z")
    assert no_backdate.season_number == 1 and no_backdate.review_text == "That episode."
    assert show_level.season_id is None and not show_level.is_log
    assert parse_diary_page(load("diary-page-empty.json")) == ([], 3)


async def test_currently_watching_rows_without_a_show_id_fail_the_read(
    client: SerializdClient, fake: FakeSerializd
) -> None:
    for tmdb in range(1, 4):
        fake.add_show(tmdb, f"Show {tmdb}", {1: 3})
        fake.start_watching(None, tmdb)

    def one_show_id_gone(body: dict[str, Any]) -> None:
        del body["items"][1]["showId"]

    fake.reshape_always(
        one_show_id_gone, route="GET /api/user/{username}/currently_watching_page/{page}"
    )
    with pytest.raises(SerializdError) as failed:
        await client.currently_watching(PROFILE)
    assert "1 of 3 rows of currently watching page 1 have no show id" in failed.value.message
    assert "Serializd may have changed its answers" in failed.value.message
