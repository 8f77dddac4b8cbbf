"""Where the mapped ranges end: entry ends, seasons the datasets do not know yet, and titles
found by their AniDB or MAL id (pinned dataset samples, plus small made-up rows)."""

from __future__ import annotations

import json

import pytest

from tests.fakes.anime_datasets import sample_bodies
from watchbridge.anime import AnimeIndex, EpisodeRef, Unmatched, load_index


@pytest.fixture(scope="module")
def index() -> AnimeIndex:
    return load_index(sample_bodies())


@pytest.mark.parametrize(
    ("show", "season", "number"),
    [
        (65942, 1, 51),  # Re:Zero S2 Part 2 (119661) is 39-50; Kometa/Fribb say "offset 38"
        (30984, 2, 60),  # Bleach TYBW Part 2 (159322) is 14-26; the others say "offset 13"
        (1429, 4, 40),  # AoT Final Chapters (146984) has one AniList episode
    ],
)
def test_an_open_offset_row_ends_where_the_entrys_anilist_keyed_ranges_end(
    index: AnimeIndex, show: int, season: int, number: int
) -> None:
    found = index.anilist_for(show, season, number)
    assert isinstance(found, Unmatched) and found.code == "outside", found


def test_the_first_of_two_tvdb_episodes_one_anilist_episode_covers_is_a_part(
    index: AnimeIndex,
) -> None:
    # AoT Final Chapters: TVDB S4E29 and E30 are its one AniList episode; the last part counts.
    first = index.anilist_for(267440, 4, 29, "tvdb")
    assert isinstance(first, Unmatched) and first.code == "partial", first
    assert index.anilist_for(267440, 4, 30, "tvdb") == (146984, 1)


def test_the_last_episode_of_a_capped_entry_still_maps(index: AnimeIndex) -> None:
    assert index.anilist_for(65942, 1, 50) == (119661, 12)
    assert index.anilist_for(30984, 2, 26) == (159322, 13)


def test_an_anilist_episode_past_the_entrys_end_is_outside_not_a_guess(
    index: AnimeIndex,
) -> None:
    found = index.episode_for(119661, 13)
    assert isinstance(found, Unmatched) and found.code == "outside", found
    assert isinstance(index.episode_for(119661, 12), EpisodeRef)


@pytest.mark.parametrize(("show", "season"), [(65942, 3), (1429, 5)])
def test_a_season_of_a_known_show_in_no_range_is_a_new_season_not_unknown(
    index: AnimeIndex, show: int, season: int
) -> None:
    found = index.anilist_for(show, season, 1)
    assert isinstance(found, Unmatched) and found.code == "new-season", found


def test_a_show_in_no_dataset_is_unknown(index: AnimeIndex) -> None:
    found = index.anilist_for(1396, 1, 1)  # Breaking Bad
    assert isinstance(found, Unmatched) and found.code == "unknown"


def test_the_entries_of_one_season_come_in_episode_order(index: AnimeIndex) -> None:
    assert index.season_entries(65942, 1) == ((21355, 1), (108632, 26), (119661, 39))


def test_anidb_and_mal_ids_name_their_anilist_entry(index: AnimeIndex) -> None:
    assert index.anilist_by_ids(anidb=7) == 164  # Princess Mononoke
    assert index.anilist_by_ids(mal=164) == 164
    unknown = index.anilist_by_ids(anidb=999_999)
    assert isinstance(unknown, Unmatched) and unknown.code == "unknown"


ORPHAN_ROW = {
    "type": "TV",
    "anidb_id": 99_001,
    "mal_id": 55_501,
    "tvdb_id": 900_001,
    "themoviedb_id": {"tv": 800_001},
    "season": {"tvdb": 1, "tmdb": 2},
    "episode_offset": {"tmdb": 12},
}


def orphan_index() -> AnimeIndex:
    return load_index({"fribb": json.dumps([ORPHAN_ROW])})


def test_a_title_the_datasets_know_only_by_mal_id_maps_through_the_entrys_mal_id() -> None:
    index = orphan_index()
    assert isinstance(index.episode_for(777, 1), Unmatched)
    assert isinstance(index.anilist_for(800_001, 2, 13), Unmatched)  # the reverse is built
    assert index.adopt(777, 55_501)
    found = index.episode_for(777, 1)
    assert isinstance(found, EpisodeRef) and (found.show, found.season, found.number) == (
        800_001,
        2,
        13,
    )
    assert index.anilist_for(800_001, 2, 13) == (777, 1)


def test_an_entry_the_datasets_know_is_not_remapped_by_mal_id(index: AnimeIndex) -> None:
    assert not index.adopt(119661, 55_501)
    assert not orphan_index().adopt(778, 12345)  # no row with that MAL id
