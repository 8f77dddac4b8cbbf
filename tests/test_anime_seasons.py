"""Absolute episode numbers ⇄ season and episode: the pure converter (`anime.SeasonTable`), and the
season lists it runs on, read from the fake Trakt and Serializd and cached in the store
(`anime_seasons`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from watchbridge.anime import PENDING, EpisodeRef, SeasonTable, Unmatched, seasonal
from watchbridge.anime_seasons import (
    FRESH,
    NEWER,
    AbsoluteSeasons,
    SerializdSeasons,
    TraktSeasons,
    table_from_dict,
    table_to_dict,
    trakt_table,
)
from watchbridge.config import SerializdConfig, TraktConfig
from watchbridge.http import RetryPolicy
from watchbridge.services.serializd import SerializdClient
from watchbridge.services.trakt import ListedEpisode, ListedSeason, TraktClient, parse_seasons
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

# Gintama as one long show with TVDB's four seasons (counted, no absolute numbers given).
GINTAMA = SeasonTable(((1, 49), (2, 50), (3, 51), (4, 51)))
GINTAMA_PLACES = [(1, (1, 1)), (49, (1, 49)), (50, (2, 1)), (99, (2, 50)), (120, (3, 21)),
                  (151, (4, 1)), (201, (4, 51))]  # fmt: skip
# A source that lists one episode too few in season 1 but numbers season 2 absolutely.
GAPPED = SeasonTable(((1, 7), (2, 3)), ((9, 2, 1), (10, 2, 2), (11, 2, 3)))


# --------------------------------------------------------------------------- the converter


@pytest.mark.parametrize(("absolute", "place"), GINTAMA_PLACES)
def test_counted_seasons_turn_an_absolute_number_into_season_and_episode(
    absolute: int, place: tuple[int, int]
) -> None:
    assert GINTAMA.season_of(absolute) == place


@pytest.mark.parametrize(("absolute", "place"), GINTAMA_PLACES)
def test_counted_seasons_turn_season_and_episode_into_an_absolute_number(
    absolute: int, place: tuple[int, int]
) -> None:
    assert GINTAMA.absolute_of(*place) == absolute


@pytest.mark.parametrize(("absolute", "place"), [(9, (2, 1)), (11, (2, 3)), (3, (1, 3))])
def test_a_given_absolute_number_wins_over_counting_both_ways(
    absolute: int, place: tuple[int, int]
) -> None:
    assert GAPPED.season_of(absolute) == place
    assert GAPPED.absolute_of(*place) == absolute


def test_counting_that_contradicts_a_given_absolute_number_is_refused() -> None:
    answer = GAPPED.season_of(8)  # counted: S2E1, which the source numbers 9
    assert isinstance(answer, Unmatched) and answer.code == "ambiguous"


@pytest.mark.parametrize(
    ("table", "absolute"),
    [(GINTAMA, 202), (GINTAMA, 0), (SeasonTable(((1, 10), (2, None), (3, 5))), 12)],
)
def test_an_absolute_number_past_what_the_list_counts_is_outside(
    table: SeasonTable, absolute: int
) -> None:
    answer = table.season_of(absolute)
    assert isinstance(answer, Unmatched) and answer.code == "outside"


@pytest.mark.parametrize(("season", "number"), [(3, 52), (5, 1), (2, 0)])
def test_an_episode_past_its_season_or_in_an_unlisted_season_is_outside(
    season: int, number: int
) -> None:
    answer = GINTAMA.absolute_of(season, number)
    assert isinstance(answer, Unmatched) and answer.code == "outside"


def test_a_special_has_no_absolute_number() -> None:
    answer = GINTAMA.absolute_of(0, 3)
    assert isinstance(answer, Unmatched) and answer.code == "unmapped"


def test_specials_are_left_out_of_the_count() -> None:
    table = trakt_table(
        [ListedSeason(0, 5), ListedSeason(1, 49), ListedSeason(2, 50), ListedSeason(3, 51)]
    )
    assert table.season_of(120) == (3, 21)


def test_a_trakt_season_without_its_episodes_counts_by_trakts_episode_count() -> None:
    table = trakt_table([ListedSeason(1, 12), ListedSeason(2, 12, (ListedEpisode(1, 13),))])
    assert (table.season_of(12), table.season_of(13)) == ((1, 12), (2, 1))


def test_trakt_number_abs_is_kept_and_nulls_are_counted() -> None:
    seasons = parse_seasons(
        [
            {"number": 1, "episodes": [{"number": 1, "number_abs": None}, {"number": 2}]},
            {"number": 2, "episode_count": 2, "episodes": [{"number": 1, "number_abs": 7}]},
            {"number": "x"},
        ]
    )
    table = trakt_table(seasons)
    assert table.counts == ((1, 2), (2, 1))
    assert (table.season_of(2), table.season_of(7)) == ((1, 2), (2, 1))


@pytest.mark.parametrize(
    ("want", "covered"),
    [(201, True), (202, False), ((4, 51), True), ((4, 52), False), ((2, 50), True), (None, True)],
)
def test_a_table_says_whether_it_lists_what_is_wanted(
    want: int | tuple[int, int] | None, covered: bool
) -> None:
    assert GINTAMA.covers(want) is covered


def test_an_absolute_answer_of_the_mapping_is_placed_on_the_seasons() -> None:
    ref = EpisodeRef("tmdb", 57041, None, 120, True, "fribb")
    placed = seasonal(ref, GINTAMA)
    assert isinstance(placed, EpisodeRef)
    assert (placed.show, placed.season, placed.number, placed.absolute) == (57041, 3, 21, False)


def test_one_anilist_episode_over_a_season_break_is_not_guessed() -> None:
    ref = EpisodeRef("tmdb", 57041, None, 49, True, "override", (49, 50))
    answer = seasonal(ref, GINTAMA)
    assert isinstance(answer, Unmatched) and answer.code == "ambiguous"


@pytest.mark.parametrize(
    "table", [GAPPED, SeasonTable(((1, 3), (2, None))), Unmatched("no such show", "no-target")]
)
def test_a_table_survives_the_store_as_json(table: SeasonTable | Unmatched) -> None:
    assert table_from_dict(table_to_dict(table)) == table


# --------------------------------------------------------------------------- reading the lists

ONE_PIECE = 37854


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    show = fake.add_show("One Piece", 1999, tmdb=ONE_PIECE)
    absolute = 0
    for season, count in ((0, 2), (1, 8), (2, 22)):
        for number in range(1, count + 1):
            absolute += season > 0
            fake.add_episode(show, season, number, number_abs=absolute if season else None)
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def trakt_client(trakt: FakeTrakt, store: Store) -> Iterator[TraktClient]:
    client = TraktClient(TraktConfig(client_id=CLIENT_ID, api_url=trakt.url), store)
    client.http.retry = RetryPolicy(attempts=1, backoff=0.01, max_inline_wait=0.1)
    yield client


def seasons_of(client: TraktClient, store: Store, clock: FakeClock) -> AbsoluteSeasons:
    return AbsoluteSeasons(TraktSeasons(client), store, clock)


def season_lists_read(trakt: FakeTrakt) -> int:
    return trakt.count("GET", "/shows/{id}/seasons")


async def test_trakts_season_list_places_an_absolute_number_by_its_number_abs(
    trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    seasons = seasons_of(trakt_client, store, clock)
    await seasons.prepare({ONE_PIECE: 15})
    placed = seasons.place(EpisodeRef("tmdb", ONE_PIECE, None, 15, True, "fribb"))
    assert isinstance(placed, EpisodeRef) and (placed.season, placed.number) == (2, 7)
    assert seasons.absolute_of(ONE_PIECE, 2, 7) == 15


async def test_a_season_list_is_read_once_a_week_and_kept_in_the_store(
    trakt: FakeTrakt, trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    await seasons_of(trakt_client, store, clock).prepare({ONE_PIECE: 15})
    clock.advance(FRESH - 60)
    await seasons_of(trakt_client, store, clock).prepare({ONE_PIECE: 15})  # a later run
    assert season_lists_read(trakt) == 1
    clock.advance(120)
    await seasons_of(trakt_client, store, clock).prepare({ONE_PIECE: 15})
    assert season_lists_read(trakt) == 2


async def test_an_episode_past_the_lists_end_reads_it_again_after_a_day_not_before(
    trakt: FakeTrakt, trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    await seasons_of(trakt_client, store, clock).prepare({ONE_PIECE: 30})
    show = trakt.shows[0]
    trakt.add_episode(show, 2, 23, number_abs=31)  # aired since
    clock.advance(3600)
    await seasons_of(trakt_client, store, clock).prepare({ONE_PIECE: 31})
    assert season_lists_read(trakt) == 1
    clock.advance(NEWER)
    seasons = seasons_of(trakt_client, store, clock)
    await seasons.prepare({ONE_PIECE: 31})
    assert season_lists_read(trakt) == 2
    assert seasons.absolute_of(ONE_PIECE, 2, 23) == 31


async def test_the_last_good_list_serves_while_reading_it_again_fails(
    trakt: FakeTrakt, trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    await seasons_of(trakt_client, store, clock).prepare({ONE_PIECE: 15})
    clock.advance(FRESH + 60)
    trakt.fail_next(1, 503, route="/shows/{id}/seasons")
    seasons = seasons_of(trakt_client, store, clock)
    await seasons.prepare({ONE_PIECE: 15})
    assert trakt.knobs_pending == 0
    assert seasons.absolute_of(ONE_PIECE, 2, 7) == 15


async def test_without_any_list_a_failed_read_leaves_the_episode_waiting(
    trakt: FakeTrakt, trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    trakt.fail_next(1, 503, route="/shows/{id}/seasons")
    seasons = seasons_of(trakt_client, store, clock)
    await seasons.prepare({ONE_PIECE: 15})
    answer = seasons.place(EpisodeRef("tmdb", ONE_PIECE, None, 15, True, "fribb"))
    assert isinstance(answer, Unmatched) and answer.code == PENDING
    assert "could not be read" in answer.reason


async def test_a_show_trakt_does_not_know_is_unmatched_and_not_asked_again_that_day(
    trakt: FakeTrakt, trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    seasons = seasons_of(trakt_client, store, clock)
    await seasons.prepare({999: 1})
    answer = seasons.absolute_of(999, 1, 1)
    assert isinstance(answer, Unmatched) and answer.code == "no-target"
    clock.advance(3600)
    await seasons_of(trakt_client, store, clock).prepare({999: 1})
    assert trakt.count("GET", "/search/{id_type}/{id}") == 1


async def test_a_show_not_prepared_is_remembered_as_missing(
    trakt: FakeTrakt, trakt_client: TraktClient, store: Store, clock: FakeClock
) -> None:
    seasons = seasons_of(trakt_client, store, clock)
    answer = seasons.place(EpisodeRef("tmdb", ONE_PIECE, None, 15, True, "fribb"))
    assert isinstance(answer, Unmatched) and answer.code == PENDING
    assert seasons.missing == {ONE_PIECE}
    assert trakt.requests == []


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.add_show(ONE_PIECE, "One Piece", {0: 4, 1: 61, 2: 16, 3: 14})
    return fake


@pytest.mark.parametrize("counts_given", [True, False])
async def test_serializds_seasons_are_counted_from_its_show_answer_or_season_lists(
    serializd: FakeSerializd, store: Store, clock: FakeClock, counts_given: bool
) -> None:
    serializd.show_episode_counts = counts_given
    client = SerializdClient(SerializdConfig(api_url=serializd.url), store, requests_per_second=1e3)
    seasons = AbsoluteSeasons(SerializdSeasons(client), store, clock)
    await seasons.prepare({ONE_PIECE: 80})
    await seasons.aclose()
    placed = seasons.place(EpisodeRef("tmdb", ONE_PIECE, None, 80, True, "fribb"))
    assert isinstance(placed, EpisodeRef) and (placed.season, placed.number) == (3, 3)
    season_reads = serializd.count("GET", "/api/show/{id}/season/{number}")
    assert season_reads == (0 if counts_given else 3)
