"""The Plex client's library reads and writes against the stateful fake PMS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from watchbridge.config import PlexConfig, Secret
from watchbridge.http import RetryPolicy, Unavailable
from watchbridge.model import Ids
from watchbridge.services.plex import (
    HistoryEntry,
    PlexAuthError,
    PlexClient,
    PlexItemError,
    Section,
    library_item,
)

pytestmark = pytest.mark.anyio

ARRIVAL = ["imdb://tt2543164", "tmdb://329865"]
HEAT = ["imdb://tt0113277", "tmdb://949"]
BREAKING_BAD = ["imdb://tt0903747", "tmdb://1396", "tvdb://81189"]
JAMIE_TOKEN = "managed-user-token-5d4c3b2a"
JAMIE = 48151623
T0 = 1_700_000_000


@pytest.fixture
def plex(start_fake: Callable[[FakeServer], FakeServer]) -> FakePlex:
    fake = start_fake(FakePlex())
    assert isinstance(fake, FakePlex)
    fake.add_movie("100", "Arrival", 2016, ARRIVAL)
    fake.add_movie("101", "Heat", 1995, HEAT)
    fake.add_show("200", "Breaking Bad", 2008, BREAKING_BAD)
    for number in range(1, 6):
        fake.add_episode(f"2{number:02d}", "200", 1, number, [f"tvdb://34{number}"])
    fake.add_user(JAMIE_TOKEN, JAMIE, "jamie")
    return fake


@pytest.fixture
async def client(plex: FakePlex) -> AsyncIterator[PlexClient]:
    client = PlexClient(PlexConfig(url=plex.url, token=Secret(TOKEN)), client_identifier="test")
    client.http.retry = RetryPolicy(attempts=3, backoff=0.01, max_inline_wait=0.5)
    yield client
    await client.aclose()


async def test_sections_are_listed_with_their_type_and_agent(client: PlexClient) -> None:
    assert await client.sections() == [
        Section("1", "Movies", "movie", "tv.plex.agents.movie"),
        Section("2", "TV Shows", "show", "tv.plex.agents.series"),
    ]


async def test_a_listing_is_read_in_pages_until_the_total(
    client: PlexClient, plex: FakePlex
) -> None:
    episodes = await client.listing("2", "episode", page_size=2)
    assert [e.number for e in episodes] == [1, 2, 3, 4, 5]
    sent = plex.calls("GET", "/library/sections/{key}/all")
    assert [r.headers["x-plex-container-start"] for r in sent] == ["0", "2", "4"]
    assert {r.headers["x-plex-container-size"] for r in sent} == {"2"}
    assert all(r.query == {"type": "4", "includeGuids": "1"} for r in sent)


async def test_listed_items_carry_ids_and_the_accounts_state(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.watch("100", T0)
    plex.rate("100", 8.0, T0 + 60)
    arrival, heat = await client.listing("1", "movie")
    assert arrival.ids == Ids(imdb="tt2543164", tmdb="329865", plex_guid=arrival.ids.plex_guid)
    assert (arrival.view_count, arrival.last_viewed_at) == (1, T0)
    assert (arrival.user_rating, arrival.last_rated_at) == (8.0, T0 + 60)
    assert (heat.view_count, heat.last_viewed_at, heat.user_rating) == (0, None, None)


async def test_episodes_carry_their_show_key_and_numbers(client: PlexClient) -> None:
    first = (await client.listing("2", "episode"))[0]
    assert (first.grandparent_rating_key, first.season, first.number) == ("200", 1, 1)
    assert first.ids.tvdb == "341"


async def test_seasons_carry_their_show_and_index(client: PlexClient) -> None:
    (season,) = await client.listing("2", "season")
    assert (season.type, season.parent_rating_key, season.season) == ("season", "200", 1)


async def test_history_is_one_accounts_newest_first_and_since_a_time(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.watch("100", T0)
    plex.watch("101", T0 + 100)
    plex.watch("101", T0 + 50, account=JAMIE)
    history = await client.history("1", since=T0 + 10)
    assert history.entries == [HistoryEntry("2", "101", T0 + 100, "1")]
    assert history.foreign == 0
    sent = plex.calls("GET", "/status/sessions/history/all")[0]
    assert sent.query == {"sort": "viewedAt:desc", "accountID": "1", "viewedAt>": str(T0 + 10)}


async def test_history_rows_of_other_accounts_a_server_sends_unasked_are_dropped_and_counted(
    client: PlexClient, plex: FakePlex
) -> None:
    # An older server, or a proxy dropping the query string, ignores `accountID`.
    plex.filters_history_by_account = False
    plex.watch("100", T0)
    plex.watch("101", T0 + 50, account=JAMIE)
    plex.watch("100", T0 + 60, account=JAMIE)
    history = await client.history("1", page_size=1)  # the two newest pages: JAMIE's alone
    assert history.entries == [HistoryEntry("1", "100", T0, "1")]
    assert history.foreign == 2
    assert plex.count("GET", "/status/sessions/history/all") == 3


async def test_history_head_is_one_request_with_the_total(
    client: PlexClient, plex: FakePlex
) -> None:
    newest_id = [plex.watch("100", T0 + n) for n in range(3)][-1]
    total, newest = await client.history_head("1")
    assert (total, newest) == (3, str(newest_id))
    assert plex.count("GET", "/status/sessions/history/all") == 1


async def test_scrobble_adds_a_view_stamped_now(client: PlexClient, plex: FakePlex) -> None:
    plex.clock = lambda: T0 + 500
    await client.scrobble("100")
    assert plex.user_state("100") == {"viewCount": 1, "lastViewedAt": T0 + 500}
    assert plex.history_of("100") == [T0 + 500]
    sent = plex.calls("GET", "/:/scrobble")[0]
    assert sent.query == {"key": "100", "identifier": "com.plexapp.plugins.library"}


async def test_unscrobble_resets_the_watched_state(client: PlexClient, plex: FakePlex) -> None:
    plex.watch("100", T0)
    await client.unscrobble("100")
    assert plex.user_state("100") == {}


async def test_rate_sets_and_minus_one_clears(client: PlexClient, plex: FakePlex) -> None:
    await client.rate("100", 7.5)
    assert plex.user_state("100")["userRating"] == 7.5
    await client.rate("100", None)
    assert "userRating" not in plex.user_state("100")
    assert [r.query["rating"] for r in plex.calls("PUT", "/:/rate")] == ["7.5", "-1"]


async def test_writes_use_the_token_they_are_given(client: PlexClient, plex: FakePlex) -> None:
    await client.scrobble("100", JAMIE_TOKEN)
    assert plex.user_state("100", JAMIE)["viewCount"] == 1
    assert plex.user_state("100") == {}


async def test_a_scrobble_is_not_resent_after_a_dropped_connection(
    client: PlexClient, plex: FakePlex
) -> None:
    plex.drop_next(1, "/:/scrobble", after_handler=True)
    with pytest.raises(Unavailable) as caught:
        await client.scrobble("100")
    assert caught.value.outcome_unknown
    assert plex.count("GET", "/:/scrobble") == 1
    assert plex.user_state("100")["viewCount"] == 1


async def test_writing_an_unknown_item_is_an_item_error(client: PlexClient) -> None:
    with pytest.raises(PlexItemError, match="999"):
        await client.scrobble("999")


async def test_deleting_a_history_row(client: PlexClient, plex: FakePlex) -> None:
    number = plex.watch("100", T0)
    assert await client.delete_history(str(number)) is True
    assert plex.history_of("100") == []
    assert await client.delete_history(str(number)) is False


async def test_a_refused_token_on_a_listing_is_an_auth_error(
    client: PlexClient, plex: FakePlex
) -> None:
    with pytest.raises(PlexAuthError, match="401"):
        await client.listing("1", "movie", token="stale-token-000")


async def test_accounts_are_listed_by_server_local_id(client: PlexClient) -> None:
    assert await client.accounts() == {"1": "owner", str(JAMIE): "jamie"}


async def test_per_call_tokens_go_in_the_header_and_are_redacted(
    client: PlexClient, plex: FakePlex
) -> None:
    await client.listing("1", "movie", token=JAMIE_TOKEN)
    sent = plex.calls("GET", "/library/sections/{key}/all")[0]
    assert sent.headers["x-plex-token"] == JAMIE_TOKEN
    assert JAMIE_TOKEN not in sent.path and JAMIE_TOKEN not in str(sent.query)
    assert JAMIE_TOKEN not in client.http.redact(f"/x?X-Plex-Token={JAMIE_TOKEN}")


def test_listing_entries_are_read_whether_numbers_are_numbers_or_strings() -> None:
    entry = {
        "ratingKey": 73155,
        "type": "episode",
        "guid": "plex://episode/5d9c1276e9d5a1001f4ff2fa",
        "Guid": [{"id": "imdb://tt2322158"}, {"id": "tvdb://4639463"}],
        "grandparentRatingKey": "72962",
        "parentIndex": "5",
        "index": "16",
        "viewCount": "2",
        "lastViewedAt": "1700000000",
        "userRating": "9.0",
        "lastRatedAt": 1700000100,
    }
    item = library_item(entry)
    assert item is not None
    assert (item.rating_key, item.season, item.number) == ("73155", 5, 16)
    assert (item.view_count, item.last_viewed_at) == (2, 1_700_000_000)
    assert (item.user_rating, item.last_rated_at) == (9.0, 1_700_000_100)
    assert item.ids.tvdb == "4639463"


def test_an_unrated_entry_has_no_rating() -> None:
    item = library_item({"ratingKey": "1", "type": "movie", "userRating": 0})
    assert item is not None and item.user_rating is None and item.view_count == 0
