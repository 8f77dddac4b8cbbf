"""The AniList client against the stateful fake: reads, writes, tokens, limits and errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import CLIENT_ID, CLIENT_SECRET, FakeAniList, Token
from tests.fakes.base import FakeServer
from tests.harness import loop_free_while_the_store_is_locked, until
from watchbridge.config import AniListConfig, Secret
from watchbridge.http import ANSWERED, RateLimited, Unavailable
from watchbridge.services.anilist import (
    AniListAuthError,
    AniListClient,
    AniListDisabled,
    AniListError,
    AniListNotFound,
    AniListToken,
    AniListValidationError,
    EntryWrite,
    FuzzyDate,
    classify_errors,
    dedupe,
    expiry_warning,
    guard_progress,
    jwt_claims,
    parse_collection,
    parse_page,
    parse_viewer,
    pasted_token,
)
from watchbridge.store import Store

pytestmark = pytest.mark.anyio
FIXTURES = Path(__file__).parent / "fixtures" / "anilist"
DAY = 86400.0


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.limit = fake.burst_limit = 100_000  # tests of the limits set their own
    return fake


def make_client(fake: FakeAniList, store: Store, **kwargs: Any) -> AniListClient:
    config = AniListConfig(
        api_url=fake.url,
        auth_url=fake.auth_url,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
    )
    kwargs.setdefault("per_minute", 1_000_000)
    return AniListClient(config, store, **kwargs)


@pytest.fixture
async def client(fake: FakeAniList, store: Store) -> AsyncIterator[AniListClient]:
    client = make_client(fake, store, seeded_tokens={"alice": Secret(fake.issue_token())})
    yield client
    await client.aclose()


def sent_variables(fake: FakeAniList, operation: str) -> list[dict[str, Any]]:
    return [
        r.json()["variables"]
        for r in fake.calls("POST", "/")
        if operation in r.json()["query"] and r.status == 200
    ]


# --------------------------------------------------------------------------- samples (pure)


async def test_every_client_of_one_anilist_api_shares_its_pacer(
    fake: FakeAniList, store: Store
) -> None:
    # The limit is per IP: the delivery target and each link run's reader have their own client.
    delivery, reader = make_client(fake, store), make_client(fake, store)
    other = AniListClient(AniListConfig(api_url="http://127.0.0.1:9"), store)
    assert delivery.pacer is reader.pacer and other.pacer is not delivery.pacer
    for client in (delivery, reader, other):
        await client.aclose()


def test_sample_collection_chunks_parse_into_five_unique_entries() -> None:
    first, more = parse_collection(fixture("medialistcollection-response-chunk1.json")["data"])
    second, last = parse_collection(fixture("medialistcollection-response-chunk2.json")["data"])
    assert more is True and last is False
    entries = dedupe(first.entries + second.entries)
    assert [e.media_id for e in entries] == [119661, 131681, 164, 21, 172463]
    one_piece = next(e for e in entries if e.media_id == 21)
    assert one_piece.hidden and one_piece.episodes is None and one_piece.progress == 1085


def test_sample_scores_are_raw_and_unset_dates_are_empty() -> None:
    read, _ = parse_collection(fixture("medialistcollection-response-chunk1.json")["data"])
    entries = read.entries
    aot = next(e for e in entries if e.media_id == 131681)
    assert aot.score == 90
    assert aot.completed_at == FuzzyDate(2022, 4, 4)
    rezero = entries[0]
    assert rezero.score == 0 and not rezero.completed_at
    assert rezero.completed_at.timestamp() is None


def test_sample_viewer_reads_the_score_format() -> None:
    viewer = parse_viewer(fixture("viewer-response.json")["data"])
    assert (viewer.id, viewer.name, viewer.score_format) == (5678901, "alice_tv", "POINT_5")
    assert viewer.custom_lists == ("Rewatch queue",)


def test_sample_updated_since_page_parses_newest_first() -> None:
    read, more = parse_page(fixture("medialist-updated-since-response.json")["data"])
    assert more and [e.updated_at for e in read.entries] == [1782640802, 1750000000]


@pytest.mark.parametrize(
    ("sample", "status", "kind", "words"),
    [
        ("error-graphql-200.json", 200, AniListError, "nonexistentField"),
        ("error-validation-400.json", 400, AniListValidationError, "score: The score may not"),
        ("error-api-disabled-403.json", 403, AniListDisabled, "temporarily disabled"),
    ],
)
def test_sample_error_bodies_become_typed_errors(
    sample: str, status: int, kind: type[AniListError], words: str
) -> None:
    error = classify_errors(status, fixture(sample))
    assert isinstance(error, kind)
    assert words in error.message


@pytest.mark.parametrize("zone", ["Pacific/Auckland", "Pacific/Kiritimati", "America/Los_Angeles"])
def test_a_fuzzy_date_is_its_own_day_where_watchbridge_runs(
    time_zone: Callable[[str], None], zone: str
) -> None:
    time_zone(zone)  # in UTC+13 and +14, noon UTC is already the next day
    at = FuzzyDate(2026, 11, 15).timestamp()
    assert at is not None and FuzzyDate.of(at) == FuzzyDate(2026, 11, 15)


def test_a_fuzzy_date_with_only_a_year_and_month_is_the_first_of_the_month() -> None:
    assert FuzzyDate(2019, 8).timestamp() == FuzzyDate.of(1564660800).timestamp()


def test_the_sample_token_answer_gives_user_and_expiry_from_the_jwt() -> None:
    token = fixture("oauth-token-response.json")["access_token"]
    parsed = AniListToken.from_access_token(token, now=0.0, expires_in=1.0)
    assert parsed.user_id == 5678901
    assert parsed.expires_at == jwt_claims(token)["exp"] == 1814200000


def test_a_pasted_pin_page_url_yields_the_token() -> None:
    assert pasted_token(" https://x/#access_token=abc.def.ghi&token_type=Bearer ") == "abc.def.ghi"
    assert pasted_token("abc.def.ghi\n") == "abc.def.ghi"


# --------------------------------------------------------------------------- progress guard


def entry_at(progress: int, status: str = "CURRENT") -> Any:
    from watchbridge.services.anilist import ListEntry

    return ListEntry(id=1, media_id=9, status=status, progress=progress)


def test_a_lower_progress_is_dropped_from_a_write() -> None:
    write = guard_progress(EntryWrite(9, progress=3, score_raw=70), entry_at(7), False)
    assert write == EntryWrite(9, progress=None, score_raw=70)


def test_a_lower_progress_is_sent_when_a_removal_is_propagated_on_purpose() -> None:
    assert guard_progress(EntryWrite(9, progress=3), entry_at(7), True).progress == 3


def test_a_new_rewatch_pass_may_start_again_from_episode_one() -> None:
    write = EntryWrite(9, status="REPEATING", progress=1)
    assert guard_progress(write, entry_at(12, "COMPLETED"), False).progress == 1


def test_a_write_sends_only_what_differs() -> None:
    current = entry_at(7)
    assert EntryWrite(9, status="CURRENT", progress=7).changes(current) is None
    assert EntryWrite(9, status="CURRENT", progress=8).changes(current) == EntryWrite(9, progress=8)
    assert EntryWrite(9, progress=8).variables(entry_id=1) == {"id": 1, "progress": 8}


# --------------------------------------------------------------------------- reads


async def test_viewer_gives_id_name_and_score_format(client: AniListClient) -> None:
    viewer = await client.viewer("alice")
    assert (viewer.id, viewer.name, viewer.score_format) == (5678901, "alice_tv", "POINT_5")


async def test_the_whole_list_of_1200_entries_takes_three_requests(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.generate_list(1200, 15_000)
    entries = await client.entries("alice")
    assert len(entries) == 1200
    assert sum(e.progress for e in entries) == 15_000
    assert fake.operations == ["MediaListCollection"] * 3  # the user id is in the token
    assert client.requests_sent == 3


async def test_a_request_reading_its_sign_in_leaves_the_event_loop_free(
    client: AniListClient, store: Store
) -> None:
    # Each request reads the sign-in from the store, whose lock a link run's apply holds for
    # most of a second at a big account: waited for on the event loop, every webhook waited.
    await client.viewer("alice")
    working = client.viewer("alice", refresh=True)
    assert await loop_free_while_the_store_is_locked(store, working), "the loop waited for it"


async def test_noting_that_anilist_took_the_sign_in_leaves_the_event_loop_free(
    fake: FakeAniList, client: AniListClient, store: Store
) -> None:
    # After each answer the sign-in's refusal on record is looked up (`note_taken`), in the
    # store, whose lock a link run's apply may have taken while the request was under way.
    await client.viewer("alice")
    released = fake.hold_next(route="POST /")
    request = asyncio.ensure_future(client.viewer("alice", refresh=True))
    await until(lambda: fake.count("POST", "/") == 2)

    async def answered() -> object:
        released.set()
        return await request

    assert await loop_free_while_the_store_is_locked(store, answered()), "the loop waited"


async def test_a_token_without_a_user_id_asks_viewer_once(fake: FakeAniList, store: Store) -> None:
    opaque = "opaque-token"
    fake.tokens[opaque] = Token(fake.viewer, fake.now() + DAY)
    client = make_client(fake, store, seeded_tokens={"alice": Secret(opaque)})
    try:
        await client.entries("alice")
        await client.entries("alice")
        assert fake.operations == ["Viewer", "MediaListCollection", "MediaListCollection"]
    finally:
        await client.aclose()


async def test_the_list_keeps_hidden_entries_and_dedupes_custom_lists(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.add_entry(164, status="COMPLETED", progress=1, custom_lists=["Rewatch queue"])
    fake.add_entry(21, status="PAUSED", progress=1085, hidden=True, custom_lists=["Rewatch queue"])
    entries = await client.entries("alice")
    assert sorted(e.media_id for e in entries) == [21, 164]


async def test_list_queries_name_the_user_explicitly(
    fake: FakeAniList, client: AniListClient
) -> None:
    await client.entries("alice")
    assert sent_variables(fake, "MediaListCollection")[0]["userId"] == fake.viewer.id


async def test_scores_are_read_raw_whatever_the_users_format(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.add_entry(164, status="COMPLETED", progress=1, score=75)
    (entry,) = await client.entries("alice")
    assert entry.score == 75  # a POINT_5 user sees 4 stars


async def test_changes_since_a_time_take_one_request(
    fake: FakeAniList, client: AniListClient
) -> None:
    now = fake.now()
    fake.generate_list(300, 3000)  # updated hours ago
    fake.add_entry(99, progress=4, updated_at=now + 10)
    changed = (await client.read_changes("alice", now)).entries
    assert [e.media_id for e in changed] == [99]
    assert client.requests_sent == 1


async def test_changes_since_page_on_until_an_older_entry_appears(
    fake: FakeAniList, client: AniListClient
) -> None:
    now = fake.now()
    fake.generate_list(100, 500)
    for n in range(60):
        fake.add_entry(500 + n, progress=1, updated_at=now + n + 10)
    changed = (await client.read_changes("alice", now)).entries
    assert len(changed) == 60
    assert fake.operations.count("Page.mediaList") == 2


# --------------------------------------------------------------------------- writes


async def test_save_creates_an_entry_with_status_progress_score_and_dates(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.add_media(119661, episodes=12)
    saved = await client.save_entry(
        "alice",
        EntryWrite(
            119661,
            status="CURRENT",
            progress=4,
            score_raw=70,
            started_at=FuzzyDate(2026, 6, 27),
        ),
        current=None,
    )
    assert saved is not None and saved.progress == 4 and saved.score == 70
    stored = fake.snapshot()[119661]
    assert stored["status"] == "CURRENT" and stored["score"] == 70
    assert stored["startedAt"] == {"year": 2026, "month": 6, "day": 27}
    assert "score" not in sent_variables(fake, "SaveMediaListEntry")[0]  # scoreRaw only


async def test_save_updates_by_entry_id_sending_only_changes(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.add_entry(119661, status="CURRENT", progress=3)
    (current,) = await client.entries("alice")
    await client.save_entry(
        "alice", EntryWrite(119661, status="CURRENT", progress=5), current=current
    )
    assert sent_variables(fake, "SaveMediaListEntry") == [{"id": current.id, "progress": 5}]


async def test_save_never_lowers_progress_unless_asked(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.add_entry(119661, status="CURRENT", progress=7)
    (current,) = await client.entries("alice")
    kept = await client.save_entry("alice", EntryWrite(119661, progress=5), current=current)
    assert kept == current and fake.snapshot()[119661]["progress"] == 7
    assert "SaveMediaListEntry" not in fake.operations
    await client.save_entry(
        "alice", EntryWrite(119661, progress=5), current=current, allow_lower=True
    )
    assert fake.snapshot()[119661]["progress"] == 5


async def test_delete_takes_the_list_entry_id(fake: FakeAniList, client: AniListClient) -> None:
    entry = fake.add_entry(164, status="COMPLETED", progress=1)
    assert await client.delete_entry("alice", entry.id) is True
    assert fake.snapshot() == {}
    assert await client.delete_entry("alice", entry.id) is False


async def test_saving_an_unknown_title_is_not_found(client: AniListClient) -> None:
    with pytest.raises(AniListNotFound):
        await client.save_entry("alice", EntryWrite(424242, progress=1), current=None)


async def test_an_out_of_range_score_is_a_validation_error_naming_the_field(
    client: AniListClient, fake: FakeAniList
) -> None:
    fake.add_media(164, episodes=1)
    with pytest.raises(AniListValidationError) as caught:
        await client.save_entry("alice", EntryWrite(164, score_raw=150), current=None)
    assert "score" in caught.value.fields


# --------------------------------------------------------------------------- errors


async def test_an_error_inside_http_200_is_an_error(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.fail_graphql_next("Internal Server Error", 500)
    with pytest.raises(AniListError, match="Internal Server Error"):
        await client.viewer("alice")


async def test_api_disabled_is_a_service_wide_pause_not_a_sign_in_problem(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.disabled = True
    with pytest.raises(AniListDisabled) as caught:
        await client.viewer("alice")
    assert caught.value.retry_after and caught.value.retry_after >= 600
    assert not isinstance(caught.value, AniListAuthError)


def refusal(message: str, status: int) -> dict[str, Any]:
    """An error answer of AniList's own (§1)."""
    return {"data": None, "errors": [{"message": message, "status": status}]}


ANILISTS_OWN_ERRORS = [
    (400, fixture("error-validation-400.json"), AniListValidationError),
    (400, refusal("Invalid token", 400), AniListAuthError),
    (401, refusal("Unauthorized.", 401), AniListAuthError),
    (404, refusal("Not Found.", 404), AniListNotFound),
    (403, fixture("error-api-disabled-403.json"), AniListDisabled),
]


@pytest.mark.parametrize(("status", "body", "kind"), ANILISTS_OWN_ERRORS)
async def test_anilists_own_json_errors_are_what_they_say_and_show_it_answers(
    fake: FakeAniList,
    client: AniListClient,
    status: int,
    body: dict[str, Any],
    kind: type[AniListError],
) -> None:
    # Its own answer, whatever it refuses: the error it names, and AniList is there (an
    # outage of it is over).
    fake.fail_next(1, status, body=body, route="POST /")
    answered: set[str] = set()
    hearing = ANSWERED.set(answered)
    try:
        with pytest.raises(kind):
            await client.viewer("alice")
    finally:
        ANSWERED.reset(hearing)
    assert answered == {"anilist"}


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404])
@pytest.mark.parametrize(
    "body",
    ["<!DOCTYPE html><html><body><h1>Error</h1> cloudflare</body></html>", {"message": "Nope"}],
    ids=["html", "json"],
)
async def test_a_page_in_anilists_place_is_an_outage_not_its_answer(
    fake: FakeAniList, client: AniListClient, status: int, body: str | dict[str, str]
) -> None:
    # A proxy's, a gateway's or Cloudflare's page, not AniList's JSON (neither data nor
    # errors): no refusal of AniList's (no sign-in, row or title to blame), nor a sign that
    # it is back.
    fake.fail_next(1, status, body=body, route="POST /")
    answered: set[str] = set()
    hearing = ANSWERED.set(answered)
    try:
        with pytest.raises(Unavailable, match="not AniList's") as caught:
            await client.viewer("alice")
    finally:
        ANSWERED.reset(hearing)
    assert not isinstance(caught.value, AniListError)
    assert not caught.value.answered
    assert answered == set()


async def test_an_expired_token_asks_for_a_new_sign_in(
    fake: FakeAniList, client: AniListClient
) -> None:
    await client.viewer("alice")
    fake.expire_tokens()
    with pytest.raises(AniListAuthError, match="auth anilist"):
        await client.viewer("alice", refresh=True)


async def test_a_profile_without_a_token_is_told_how_to_sign_in(
    fake: FakeAniList, store: Store
) -> None:
    client = make_client(fake, store)
    try:
        with pytest.raises(AniListAuthError, match="watchbridge auth anilist --profile bob"):
            await client.viewer("bob")
        assert fake.requests == []
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- tokens


async def test_a_config_token_is_stored_with_its_expiry(
    fake: FakeAniList, client: AniListClient, store: Store
) -> None:
    await client.viewer("alice")
    stored = store.get_token("anilist", "alice")
    assert stored is not None and stored["user_id"] == fake.viewer.id
    days = client.expires_in_days("alice")
    assert days is not None and 364 < days <= 365


async def test_expiry_is_warned_about_thirty_days_ahead(fake: FakeAniList, store: Store) -> None:
    clock_now = [time.time()]
    token = fake.issue_token(lifetime=40 * DAY)
    client = make_client(
        fake, store, seeded_tokens={"alice": Secret(token)}, clock=lambda: clock_now[0]
    )
    try:
        assert client.expiry_warning("alice") is None
        clock_now[0] += 11 * DAY
        warning = client.expiry_warning("alice")
        assert warning is not None and "in 29 days" in warning and "auth anilist" in warning
        clock_now[0] += 30 * DAY
        assert "expired" in (client.expiry_warning("alice") or "")
        with pytest.raises(AniListAuthError, match="expired"):
            client.token("alice")
    finally:
        await client.aclose()


def test_expiry_warning_is_silent_for_a_token_without_expiry() -> None:
    assert expiry_warning(AniListToken("opaque", 0.0), 1e9, "alice") is None


async def test_the_code_flow_trades_the_pin_code_for_a_stored_token(
    fake: FakeAniList, store: Store
) -> None:
    client = make_client(fake, store)
    try:
        assert "response_type=code" in client.authorize_url("code")
        viewer = await client.exchange_code("alice", fake.authorize())
        assert viewer.id == fake.viewer.id
        assert (await client.viewer("alice")).name == "alice_tv"
        token = store.get_token("anilist", "alice")
        assert token is not None and token["expires_at"] > fake.now() + 300 * DAY
    finally:
        await client.aclose()


async def test_a_used_or_wrong_code_is_refused_with_advice(fake: FakeAniList, store: Store) -> None:
    client = make_client(fake, store)
    try:
        with pytest.raises(AniListAuthError, match="copy a fresh code"):
            await client.exchange_code("alice", "not-a-code")
    finally:
        await client.aclose()


async def test_a_pasted_token_is_checked_before_it_is_stored(
    fake: FakeAniList, store: Store
) -> None:
    client = make_client(fake, store)
    try:
        with pytest.raises(AniListAuthError):
            await client.use_token("alice", "bad.token.value")
        assert store.get_token("anilist", "alice") is None
        viewer = await client.use_token("alice", f"https://x/#access_token={fake.issue_token()}")
        assert viewer.name == "alice_tv" and store.get_token("anilist", "alice") is not None
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- rate limits


async def test_requests_are_spread_by_the_served_limit(fake: FakeAniList, store: Store) -> None:
    fake.limit = 304  # minus the margin: 300/min, one request every 0.2 s after a burst of 3
    client = make_client(fake, store, seeded_tokens={"alice": Secret(fake.issue_token())})
    try:
        for _ in range(7):
            await client.viewer("alice", refresh=True)
        times = [r.time for r in fake.requests]
        # A burst of 3, then 5 per second: 7 requests take 0.8 s from the first send (unspread,
        # some 20 ms); the fake's arrival times carry a busy machine's jitter (0.727 s seen).
        assert times[-1] - times[0] >= 0.6
        assert client.waited > 0.45
        assert fake.rate_limited == []
    finally:
        await client.aclose()


async def test_a_burst_429_is_waited_out_while_remaining_says_otherwise(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.burst_limit, fake.burst_retry_after = 2, 1
    for _ in range(3):
        await client.viewer("alice", refresh=True)
    assert fake.rate_limited == ["burst"]
    burst = next(r for r in fake.requests if r.status == 429)
    assert burst is not None
    assert client.waited >= 1.0


async def test_a_minute_long_timeout_goes_back_to_the_caller_when_too_long_to_wait(
    fake: FakeAniList, store: Store
) -> None:
    fake.limit, fake.send_rate_headers = 2, False  # so the client cannot see it coming
    client = make_client(
        fake, store, seeded_tokens={"alice": Secret(fake.issue_token())}, max_inline_wait=15
    )
    try:
        await client.viewer("alice", refresh=True)
        await client.viewer("alice", refresh=True)
        with pytest.raises(RateLimited) as caught:
            await client.viewer("alice", refresh=True)
        assert caught.value.retry_after is not None and caught.value.retry_after >= 60
    finally:
        await client.aclose()


async def test_a_429_with_only_a_reset_time_waits_until_then(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.fail_next(
        1,
        429,
        headers={"X-RateLimit-Reset": str(int(time.time()) + 1)},
        body={"data": None, "errors": [{"message": "Too Many Requests.", "status": 429}]},
    )
    viewer = await client.viewer("alice")
    assert viewer.id == fake.viewer.id
    assert 0.9 <= client.waited < 5


async def test_missing_rate_limit_headers_are_tolerated(
    fake: FakeAniList, client: AniListClient
) -> None:
    fake.send_rate_headers = False
    fake.generate_list(10, 40)
    assert len(await client.entries("alice")) == 10
