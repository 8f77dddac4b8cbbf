"""AniList list state as plays on TMDB episodes: progress steps, first reads, rewatches, mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.harness import loop_free_while_the_store_is_locked
from watchbridge.anime import EpisodeRef, Forward, MovieRef, Unmatched
from watchbridge.anime_data import unmatched_records
from watchbridge.config import AniListConfig, Secret
from watchbridge.deliver.anilist import REWATCH_SET_ASIDE
from watchbridge.model import MediaRef
from watchbridge.readers.anilist import (
    ABSORBED,
    AniListReader,
    EntryState,
    absorb,
    anilist_side,
    catalog_for,
    merge,
    same_in_format,
    states_from,
    tv_only,
)
from watchbridge.reconcile import EXPECTED, UNDATED, Play, Rated, Side
from watchbridge.services.anilist import AniListClient, FuzzyDate, ListEntry
from watchbridge.store import Store

REZERO_P2 = 119661  # TMDB 65942, Re:Zero S2 Part 2 runs on in season 1 from episode 38
AOT_FINAL = 131681
MOVIE = 164
ABSOLUTE = 21
DOUBLE = 500
# anilist id -> (tmdb show, season, offset)
TABLE: dict[int, tuple[int, int, int]] = {REZERO_P2: (65942, 1, 37), AOT_FINAL: (1429, 4, 16)}
UPDATED = 1_782_640_802.0


def table(anilist: int, episode: int, total: int | None) -> Forward:
    if anilist == MOVIE:
        return MovieRef(128, None, "test")
    if anilist == ABSOLUTE:
        return EpisodeRef("tmdb", 37854, None, episode, True, "test")
    if anilist == DOUBLE:
        return EpisodeRef(
            "tmdb", 9, 1, 2 * episode - 1, False, "test", (2 * episode - 1, 2 * episode)
        )
    if anilist not in TABLE:
        return Unmatched(f"AniList {anilist} is in no mapping dataset", "unknown")
    show, season, offset = TABLE[anilist]
    return EpisodeRef("tmdb", show, season, episode + offset, False, "test")


def entry(media: int = REZERO_P2, **fields: Any) -> ListEntry:
    values: dict[str, Any] = {
        "id": 7000 + media,
        "media_id": media,
        "status": "CURRENT",
        "episodes": 12,
        "updated_at": UPDATED,
    }
    values.update(fields)
    return ListEntry(**values)


def key(episode: int) -> str:
    return f"episode:tmdb:65942:s1e{episode + 37}"


def plays_of(side: Side) -> list[tuple[str, float, str]]:
    return sorted((p.item, p.at, p.record) for p in side.plays)


# --------------------------------------------------------------------------- pure conversion


def test_a_first_read_dates_the_last_episode_and_leaves_earlier_ones_undated() -> None:
    side = anilist_side([entry(progress=3)], {}, None, table).side
    assert plays_of(side) == [
        (key(1), UNDATED, "126661:1"),
        (key(2), UNDATED, "126661:2"),
        (key(3), UPDATED, "126661:3"),
    ]


def test_a_completed_entry_dates_its_last_episode_with_completed_at() -> None:
    done = entry(status="COMPLETED", progress=12, completed_at=FuzzyDate(2026, 6, 20))
    side = anilist_side([done], {}, None, table).side
    last = max(side.plays, key=lambda p: p.item)
    assert last.item == key(12) and last.at == FuzzyDate(2026, 6, 20).timestamp()


def test_a_finish_date_of_the_last_updates_day_dates_the_play_no_later_than_that_update(
    time_zone: Callable[[str], None],
) -> None:
    time_zone("UTC")  # UPDATED is 10:00 there: the day's noon is two hours later
    today = FuzzyDate.of(UPDATED)
    done = entry(status="COMPLETED", progress=12, completed_at=today)
    side = anilist_side([done], {}, None, table).side
    assert max(side.plays, key=lambda p: p.item).at == UPDATED


def test_a_progress_step_becomes_dated_plays_of_the_new_episodes() -> None:
    first = anilist_side([entry(progress=3)], {}, None, table)
    later = entry(progress=5, updated_at=UPDATED + 86400)
    side = anilist_side([later], first.states, first.side, table).side
    assert plays_of(side)[:3] == plays_of(first.side)  # kept as they were
    assert plays_of(side)[3:] == [
        (key(4), UPDATED + 86400, "126661:4"),
        (key(5), UPDATED + 86400, "126661:5"),
    ]


def test_an_unchanged_list_reads_the_same_every_time() -> None:
    first = anilist_side([entry(progress=5)], {}, None, table)
    again = anilist_side([entry(progress=5)], first.states, first.side, table)
    assert again.side == first.side


def test_lowered_progress_drops_the_plays_past_it() -> None:
    first = anilist_side([entry(progress=5)], {}, None, table)
    lower = anilist_side([entry(progress=3)], first.states, first.side, table)
    assert [p.record for p in lower.side.plays] == ["126661:1", "126661:2", "126661:3"]


def test_a_rewatch_adds_a_second_pass_and_keeps_the_first() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    rewatch = entry(status="REPEATING", progress=2, updated_at=UPDATED + 100)
    side = anilist_side([rewatch], done.states, done.side, table).side
    assert len(side.plays) == 14
    second = sorted((p for p in side.plays if ":r1:" in p.record), key=lambda p: p.item)
    assert [(p.item, p.at) for p in second] == [(key(1), UPDATED + 100), (key(2), UPDATED + 100)]


def test_a_finished_rewatch_counts_the_whole_pass() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    watching = anilist_side(
        [entry(status="REPEATING", progress=11, updated_at=UPDATED + 100)],
        done.states,
        done.side,
        table,
    )
    finished = entry(status="COMPLETED", progress=12, repeat=1, updated_at=UPDATED + 200)
    side = anilist_side([finished], watching.states, watching.side, table).side
    second = {p.record: p.at for p in side.plays if ":r1:" in p.record}
    assert len(second) == 12
    assert second["126661:r1:11"] == UPDATED + 100 and second["126661:r1:12"] == UPDATED + 200


# How a rewatch the last read saw at progress 0 can be there: set Rewatching (at 0), set
# Rewatching and then Watching at 0, or set aside (paused) before an episode of it was logged.
REWATCHES_AT_0 = {
    "rewatching": [entry(status="REPEATING", progress=0, updated_at=UPDATED + 100)],
    "set-to-watching": [
        entry(status="REPEATING", progress=5, updated_at=UPDATED + 100),
        entry(progress=0, updated_at=UPDATED + 150),
    ],
    "paused": [entry(status="PAUSED", progress=0, updated_at=UPDATED + 100)],
}


@pytest.mark.parametrize("counted", [0, 1], ids=["repeat-kept", "repeat-counted"])
@pytest.mark.parametrize("route", sorted(REWATCHES_AT_0))
def test_a_rewatch_at_0_completed_is_a_pass_once_it_is_counted(route: str, counted: int) -> None:
    """Completed again with nothing of the rewatch logged. AniList knows a finished rewatch
    by its count: clients add one to `repeat` when a rewatch finishes (anilist.md §7). With
    the count left as it was, it reads as a mis-click (Rewatching, then Completed again):
    no pass is made up for episodes nobody logged, the first viewing stays. Counted, then or
    later by hand, it is one whole pass, dated when it was counted, and no more."""
    last = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    for step in REWATCHES_AT_0[route]:
        last = read_on([step], last)
    done = entry(status="COMPLETED", progress=12, repeat=counted, updated_at=UPDATED + 200)
    finished = read_on([done], last)
    if not counted:
        assert sorted(p.item for p in finished.side.plays) == [key(n) for n in range(1, 13)]
        finished = read_on([done], finished)  # read on: still no pass
        assert len(finished.side.plays) == 12
    counted_at = UPDATED + (200 if counted else 300)
    counted_now = entry(status="COMPLETED", progress=12, repeat=1, updated_at=counted_at)
    finished = read_on([counted_now], finished)
    again = sorted((p.item, p.at) for p in finished.side.plays if ":r1:" in p.record)
    assert again == [(key(n), counted_at) for n in range(1, 13)]
    assert len(finished.side.plays) == 12 + 12
    finished = read_on([counted_now], finished)  # read on: the one pass
    assert len(finished.side.plays) == 12 + 12


def test_rewatches_finished_before_the_first_sync_are_not_invented() -> None:
    side = anilist_side([entry(status="COMPLETED", progress=12, repeat=2)], {}, None, table).side
    assert len(side.plays) == 12


def test_planning_entries_have_no_plays() -> None:
    assert anilist_side([entry(status="PLANNING")], {}, None, table).side.plays == ()


@pytest.mark.parametrize("status", ["PLANNING", "PAUSED", "DROPPED"])
def test_moving_a_watched_entry_to_another_status_unwatches_nothing(status: str) -> None:
    # AniList keeps the progress: only a lower progress (or a deleted entry) is a removal.
    watching = anilist_side([entry(progress=3)], {}, None, table)
    moved = anilist_side([entry(status=status, progress=3)], watching.states, None, table)
    assert [p.item for p in moved.side.plays] == [p.item for p in watching.side.plays]
    assert len(moved.side.plays) == 3


def test_an_unmapped_entry_is_reported_and_the_others_still_count() -> None:
    converted = anilist_side([entry(progress=2), entry(media=999, progress=4)], {}, None, table)
    assert {p.record.split(":")[0] for p in converted.side.plays} == {"126661"}
    assert converted.unmatched[999][1].code == "unknown"
    assert converted.mapped == frozenset({REZERO_P2})


def test_an_absolute_only_answer_is_unmatched_rather_than_guessed() -> None:
    converted = anilist_side([entry(media=ABSOLUTE, progress=4)], {}, None, table)
    assert converted.side.plays == ()
    assert converted.unmatched[ABSOLUTE][1].code == "absolute"


def test_one_anilist_episode_spanning_two_tmdb_episodes_plays_both() -> None:
    side = anilist_side([entry(media=DOUBLE, progress=1)], {}, None, table).side
    assert sorted(p.item for p in side.plays) == ["episode:tmdb:9:s1e1", "episode:tmdb:9:s1e2"]


def test_scores_are_ratings_of_the_tmdb_season_on_the_raw_scale() -> None:
    side = anilist_side([entry(progress=2, score=85)], {}, None, table).side
    assert dict(side.ratings) == {"show:tmdb:65942:s1": side.ratings["show:tmdb:65942:s1"]}
    assert side.ratings["show:tmdb:65942:s1"].value == 85


def test_entry_states_survive_the_cursor_round_trip() -> None:
    converted = anilist_side([entry(status="REPEATING", progress=3, repeat=1)], {}, None, table)
    from watchbridge.readers.anilist import states_json

    assert states_from({"entries": states_json(converted.states)}) == {
        126661: EntryState(3, 1, "REPEATING", REZERO_P2, 12)
    }


def test_a_rewatch_set_aside_survives_the_cursor_round_trip() -> None:
    from watchbridge.readers.anilist import states_json

    states = {1: EntryState(3, 0, "PAUSED", REZERO_P2, 12, set_aside=True)}
    assert states_from({"entries": states_json(states)}) == states


def test_states_saved_by_an_earlier_release_still_read() -> None:
    assert states_from({"entries": '{"126661":[3,1,"REPEATING"]}'}) == {
        126661: EntryState(3, 1, "REPEATING")
    }


# --------------------------------------------------------------------------- score dates

SEASON = "show:tmdb:65942:s1"


def test_a_score_keeps_its_date_while_only_progress_moves() -> None:
    first = anilist_side([entry(progress=3, score=60)], {}, None, table)
    later = entry(progress=4, score=60, updated_at=UPDATED + 86400)
    side = anilist_side([later], first.states, first.side, table).side
    assert side.ratings[SEASON].at == first.side.ratings[SEASON].at == UPDATED


def test_a_changed_score_is_dated_by_the_update_that_changed_it() -> None:
    first = anilist_side([entry(progress=3, score=60)], {}, None, table)
    later = entry(progress=3, score=80, updated_at=UPDATED + 86400)
    side = anilist_side([later], first.states, first.side, table).side
    assert (side.ratings[SEASON].value, side.ratings[SEASON].at) == (80, UPDATED + 86400)


def test_a_score_first_seen_is_dated_by_the_finish_date_when_there_is_one() -> None:
    done = entry(status="COMPLETED", progress=12, score=70, completed_at=FuzzyDate(2024, 3, 1))
    side = anilist_side([done], {}, None, table).side
    assert side.ratings[SEASON].at == FuzzyDate(2024, 3, 1).timestamp()


def test_a_delta_read_keeps_the_season_rating_of_entries_it_did_not_see() -> None:
    first = anilist_side([entry(progress=3, score=60)], {}, None, table)
    other = entry(media=AOT_FINAL, progress=1)
    fresh = anilist_side([other], first.states, first.side, table)
    states = {**first.states, **fresh.states}
    side = merge(first.side, fresh, {other.id}, states, table)
    assert side.ratings[SEASON].value == 60


@pytest.mark.parametrize(
    ("ours", "theirs", "score_format", "same"),
    [
        (85, 90, "POINT_100", True),  # Trakt keeps tens: 85 is written there as 9
        (70, 80, "POINT_5", True),  # both four stars
        (70, 80, "POINT_100", False),
        (85, 80, "POINT_100", False),
    ],
)
def test_a_score_that_already_agrees_with_the_other_side_is_not_planned_again(
    ours: int, theirs: int, score_format: str, same: bool
) -> None:
    own = Side((), {SEASON: Rated(ours, UPDATED)})
    snapped = same_in_format(own, Side((), {SEASON: Rated(theirs, UPDATED)}), score_format)
    assert (snapped.ratings[SEASON].value == theirs) is same


def test_plex_keeps_half_stars_so_a_raw_85_is_not_its_9() -> None:
    # A POINT_10_DECIMAL 9.0 lowered to 8.5 on AniList must reach Plex, which keeps 8.5.
    own = Side((), {SEASON: Rated(85, UPDATED)})
    plex = Side((), {SEASON: Rated(90, UPDATED)})
    assert same_in_format(own, plex, "POINT_10_DECIMAL", "plex").ratings[SEASON].value == 85
    assert same_in_format(own, plex, "POINT_10_DECIMAL", "trakt").ratings[SEASON].value == 90


# --------------------------------------------------------------------------- second viewings


def queued(episode: int, at: float = UPDATED - 9 * 86400) -> Play:
    return Play(key(episode), at, f"{EXPECTED}{key(episode)}@{at:.0f}")


def test_a_queued_second_viewing_of_a_counted_episode_is_absorbed_once_its_row_is_done() -> None:
    first = anilist_side([entry(progress=3)], {}, None, table)
    baseline = Side((*first.side.plays, queued(2)))
    read = anilist_side([entry(progress=3)], first.states, baseline, table)
    side = absorb(read.side, baseline, delivered=lambda _: True)
    (absorbed,) = [p for p in side.plays if not p.record.startswith("126661:")]
    assert absorbed.item == key(2) and absorbed.record.startswith(ABSORBED)
    assert absorb(side, side) == side  # and kept on the next read


def test_a_queued_play_whose_row_still_waits_stays_queued() -> None:
    first = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    baseline = Side((*first.side.plays, queued(1, UPDATED + 86400)))
    read = anilist_side([entry(status="COMPLETED", progress=12)], first.states, baseline, table)
    side = absorb(read.side, baseline, delivered=lambda _: False)
    assert queued(1, UPDATED + 86400) in side.plays  # it may yet start a rewatch


def test_an_absorbed_play_goes_once_the_entry_no_longer_counts_its_episode() -> None:
    first = anilist_side([entry(progress=3)], {}, None, table)
    held = absorb(Side((*first.side.plays, queued(3))), None)
    lower = anilist_side([entry(progress=2)], first.states, held, table)
    side = absorb(lower.side, held)
    assert [p for p in side.plays if p.record.startswith(ABSORBED)] == []


def test_an_absorbed_play_stays_when_a_rewatch_starts() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    held = absorb(Side((*done.side.plays, queued(5))), None)
    rewatch = entry(status="REPEATING", progress=1, updated_at=UPDATED + 100)
    read = anilist_side([rewatch], done.states, held, table)
    side = absorb(read.side, held)
    assert [p.item for p in side.plays if p.record.startswith(ABSORBED)] == [key(5)]


def test_a_rewatch_read_back_takes_the_date_of_the_newest_play_queued_of_its_episode() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    old, new = queued(1, UPDATED - 86400), queued(1, UPDATED + 86400)
    baseline = Side((*done.side.plays, new, old))
    rewatch = entry(status="REPEATING", progress=1, updated_at=UPDATED + 2 * 86400)
    read = anilist_side([rewatch], done.states, baseline, table)
    (again,) = [p for p in read.side.plays if p.record == "126661:r1:1"]
    assert again.at == new.at
    assert old in read.side.plays  # still queued: absorbed once its row is done


# --------------------------------------------------------------------------- movies

MOVIE_KEY = "movie:tmdb:128"


def test_a_completed_movie_is_one_movie_play_dated_when_it_was_finished() -> None:
    done = entry(
        MOVIE, episodes=1, status="COMPLETED", progress=1, completed_at=FuzzyDate(2026, 6, 20)
    )
    side = anilist_side([done], {}, None, table).side
    assert plays_of(side) == [(MOVIE_KEY, FuzzyDate(2026, 6, 20).timestamp(), "7164:1")]


def test_a_movie_watched_short_of_its_episode_count_is_no_play_and_not_unmatched() -> None:
    def parts(anilist: int, episode: int, total: int | None) -> Forward:
        if episode < 4:
            return Unmatched("episodes 1-4 make one movie", "partial")
        return MovieRef(997317, None, "test")

    started = anilist_side([entry(MOVIE, episodes=4, progress=3)], {}, None, parts)
    assert started.side.plays == () and started.unmatched == {}
    done = anilist_side([entry(MOVIE, episodes=4, status="COMPLETED", progress=4)], {}, None, parts)
    assert [p.item for p in done.side.plays] == ["movie:tmdb:997317"]


def test_a_movies_score_is_the_rating_of_the_movie() -> None:
    scored = entry(MOVIE, episodes=1, status="COMPLETED", progress=1, score=90)
    assert set(anilist_side([scored], {}, None, table).side.ratings) == {MOVIE_KEY}


def test_a_tv_only_link_leaves_movies_out_without_reporting_them() -> None:
    scored = entry(MOVIE, episodes=1, status="COMPLETED", progress=1, score=90)
    converted = anilist_side([scored], {}, None, tv_only(table))
    assert converted.side == Side() and converted.unmatched == {}


# --------------------------------------------------------------------------- what AniList holds


def reverse(item: MediaRef) -> tuple[int, int] | Unmatched:
    if item.kind == "movie":
        return (MOVIE, 1) if item.ids.tmdb == "128" else Unmatched("in no dataset", "unknown")
    ids, season, number = item.show_ids, item.season, item.number or 0
    if ids.tmdb == "65942" and season == 1 and number >= 38:
        return REZERO_P2, number - 37  # open-ended, as an "offset" row reads
    if ids.tmdb == "65942":
        return Unmatched("the datasets know the show, not this season", "new-season")
    return Unmatched("in no mapping dataset", "unknown")


def trakt(*items: str, rated: tuple[str, ...] = ()) -> Side:
    return Side(
        tuple(Play(item, UPDATED, str(n)) for n, item in enumerate(items)),
        {item: Rated(80, UPDATED) for item in rated},
    )


def test_anilist_holds_anime_episodes_that_map_back_and_not_other_shows() -> None:
    listed = anilist_side([entry(progress=1)], {}, None, table)
    other = trakt(key(2), "episode:tmdb:1396:s1e1")
    catalog = catalog_for(listed.side, other, reverse, listed.states, table)
    assert key(2) in catalog.items and "episode:tmdb:1396:s1e1" not in catalog.items
    assert catalog.unmatched == {}  # not anime: nothing to report


def test_an_episode_past_the_listed_entrys_count_is_not_held_and_is_reported() -> None:
    listed = anilist_side([entry(progress=1, episodes=12)], {}, None, table)
    catalog = catalog_for(listed.side, trakt(key(13)), reverse, listed.states, table)
    assert key(13) not in catalog.items
    assert catalog.unmatched[key(13)].code == "outside"


def test_a_new_season_of_a_known_show_is_not_held_and_is_reported() -> None:
    new = "episode:tmdb:65942:s3e1"
    catalog = catalog_for(Side(), trakt(new), reverse, {}, table)
    assert new not in catalog.items and catalog.unmatched[new].code == "new-season"


def test_a_season_rating_is_held_only_where_an_entry_can_take_it() -> None:
    other = trakt(rated=(SEASON, "show:tmdb:1396:s1"))
    assert catalog_for(Side(), other, reverse, {}, table).items == frozenset()
    listed = anilist_side([entry(progress=1)], {}, None, table)
    catalog = catalog_for(listed.side, other, reverse, listed.states, table)
    assert SEASON in catalog.items and "show:tmdb:1396:s1" not in catalog.items


def test_anilist_holds_anime_movies_and_their_ratings_and_not_other_movies() -> None:
    other = trakt(MOVIE_KEY, "movie:tmdb:550", rated=(MOVIE_KEY, "movie:tmdb:550"))
    catalog = catalog_for(Side(), other, reverse, {}, table)
    assert catalog.items == frozenset({MOVIE_KEY}) and catalog.unmatched == {}


def test_a_play_only_queued_for_anilist_does_not_make_its_item_holdable() -> None:
    queued = Play("episode:tmdb:1396:s1e1", UPDATED, f"{EXPECTED}episode:tmdb:1396:s1e1@1")
    catalog = catalog_for(Side((queued,)), Side(), reverse, {}, table)
    assert catalog.items == frozenset()


@pytest.mark.parametrize("status", ["PAUSED", "DROPPED"])
@pytest.mark.parametrize("progress", [3, 0])
def test_a_rewatch_begun_and_set_aside_between_two_reads_keeps_the_first_viewing(
    status: str, progress: int
) -> None:
    # Between the reads the user set REPEATING, watched `progress` episodes, then paused it.
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    aside = entry(status=status, progress=progress, updated_at=UPDATED + 100)
    read = anilist_side([aside], done.states, done.side, table)
    first = [p for p in plays_of(read.side) if ":r" not in p[2]]
    assert first == plays_of(done.side)  # kept, with their dates
    again = sorted((p.item, p.at) for p in read.side.plays if ":r1:" in p.record)
    assert again == [(key(n), UPDATED + 100) for n in range(1, progress + 1)]
    later = anilist_side([aside], read.states, read.side, table)  # and on every read after
    assert plays_of(later.side) == plays_of(read.side)
    assert later.states == read.states


@pytest.mark.parametrize("aside", [3, 0])
def test_a_rewatch_set_aside_then_set_to_watching_at_0_is_the_rewatch_restarted(
    aside: int,
) -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    paused = read_on([entry(status="PAUSED", progress=aside, updated_at=UPDATED + 100)], done)
    # Set to Watching at 0: the rewatch begins again, the first viewing stays watched.
    restart = entry(progress=0, updated_at=UPDATED + 200)
    again = read_on([restart], paused)
    assert plays_of(again.side) == plays_of(done.side)
    later = read_on([restart], again)  # and on every read after
    assert plays_of(later.side) == plays_of(done.side)
    # The episodes logged since are the rewatch's, and its end brings the rest of it.
    logged = read_on([entry(progress=2, updated_at=UPDATED + 300)], later)
    rewatch = sorted((p.item, p.at) for p in logged.side.plays if ":r1:" in p.record)
    assert rewatch == [(key(1), UPDATED + 300), (key(2), UPDATED + 300)]
    assert len(logged.side.plays) == 12 + 2
    end = read_on([entry(status="COMPLETED", progress=12, updated_at=UPDATED + 400)], logged)
    assert len(end.side.plays) == 12 + 12
    assert plays_of(read_on([entry(status="COMPLETED", progress=12)], end).side) == plays_of(
        end.side
    )


@pytest.mark.parametrize("lowered", [0, 2])
def test_a_rewatch_set_to_watching_at_a_lower_progress_is_the_rewatch_restarted(
    lowered: int,
) -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    rewatching = read_on([entry(status="REPEATING", progress=5, updated_at=UPDATED + 100)], done)
    # Set to Watching (not paused first) lower, 0 included: the rewatch begins again there.
    restart = entry(progress=lowered, updated_at=UPDATED + 200)
    again = read_on([restart], rewatching)
    first_viewing = plays_of(done.side)
    assert [p for p in plays_of(again.side) if ":r" not in p[2]] == first_viewing
    assert len(again.side.plays) == 12 + lowered  # the rewatch's own plays past it go
    later = read_on([restart], again)  # and so it reads on every read after
    assert plays_of(later.side) == plays_of(again.side)
    logged = read_on([entry(progress=lowered + 1, updated_at=UPDATED + 300)], later)
    assert len(logged.side.plays) == 12 + lowered + 1
    assert (key(lowered + 1), UPDATED + 300) in [(p.item, p.at) for p in logged.side.plays]


def test_a_completed_entry_paused_at_its_full_progress_is_no_rewatch() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    paused = anilist_side([entry(status="PAUSED", progress=12)], done.states, done.side, table)
    assert plays_of(paused.side) == plays_of(done.side)


def read_on(entries: list[ListEntry], last: Any) -> Any:
    return anilist_side(entries, last.states, last.side, table)


@pytest.mark.parametrize("progress", [3, 0])
def test_a_completed_entry_set_back_to_watching_lower_keeps_the_first_viewing(
    progress: int,
) -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    reset = read_on([entry(progress=progress, updated_at=UPDATED + 100)], done)
    assert plays_of(reset.side) == plays_of(done.side)  # nothing unwatched, nothing invented
    later = read_on([entry(progress=progress, updated_at=UPDATED + 100)], reset)
    assert plays_of(later.side) == plays_of(done.side)  # and on every read after


def test_episodes_logged_after_a_reset_are_the_rewatchs_plays_up_to_its_end() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    reset = read_on([entry(progress=3, updated_at=UPDATED + 100)], done)
    logged = read_on([entry(progress=5, updated_at=UPDATED + 200)], reset)
    again = sorted((p.item, p.at, p.record) for p in logged.side.plays if ":w1:" in p.record)
    assert again == [
        (key(4), UPDATED + 200, "126661:w1:4"),
        (key(5), UPDATED + 200, "126661:w1:5"),
    ]
    # AniList completes it (no rewatch counted: it was never set rewatching)
    end = read_on([entry(status="COMPLETED", progress=12, updated_at=UPDATED + 300)], logged)
    rewatch = {p.record: p.at for p in end.side.plays if ":w1:" in p.record}
    assert sorted(rewatch) == sorted(f"126661:w1:{n}" for n in range(4, 13))
    assert rewatch["126661:w1:4"] == UPDATED + 200 and rewatch["126661:w1:12"] == UPDATED + 300
    assert len(end.side.plays) == 12 + 9
    after = read_on([entry(status="COMPLETED", progress=12, updated_at=UPDATED + 300)], end)
    assert plays_of(after.side) == plays_of(end.side)
    # A second reset starts a second such rewatch, the first one's plays staying
    second = read_on([entry(progress=0, updated_at=UPDATED + 400)], after)
    assert plays_of(second.side) == plays_of(end.side)
    one = read_on([entry(progress=1, updated_at=UPDATED + 500)], second)
    assert [p.record for p in one.side.plays if ":w2:" in p.record] == ["126661:w2:1"]


def test_a_reset_rewatch_set_rewatching_and_finished_counts_its_plays_once() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    reset = read_on([entry(progress=10, updated_at=UPDATED + 100)], done)
    switched = read_on([entry(status="REPEATING", progress=11, updated_at=UPDATED + 200)], reset)
    assert [p.record for p in switched.side.plays if not p.record[7:].isdigit()] == ["126661:w1:11"]
    end = entry(status="COMPLETED", progress=12, repeat=1, updated_at=UPDATED + 300)
    finished = read_on([end], switched)
    again = sorted(p.record for p in finished.side.plays if not p.record[7:].isdigit())
    assert again == ["126661:w1:11", "126661:w1:12"]
    assert plays_of(read_on([end], finished).side) == plays_of(finished.side)


def test_lowering_a_reset_rewatch_takes_only_its_own_plays_past_the_new_progress() -> None:
    done = anilist_side([entry(status="COMPLETED", progress=12)], {}, None, table)
    reset = read_on([entry(progress=3, updated_at=UPDATED + 100)], done)
    logged = read_on([entry(progress=6, updated_at=UPDATED + 200)], reset)
    lower = read_on([entry(progress=1, updated_at=UPDATED + 300)], logged)
    assert plays_of(lower.side) == plays_of(done.side)
    relog = read_on([entry(progress=2, updated_at=UPDATED + 400)], lower)
    assert [p.record for p in relog.side.plays if ":w1:" in p.record] == ["126661:w1:2"]


def test_a_reset_rewatch_survives_the_cursor_round_trip() -> None:
    from watchbridge.readers.anilist import states_json

    states = {1: EntryState(5, 0, "CURRENT", REZERO_P2, 12, again_from=(12, 3), relogging=True)}
    assert states_from({"entries": states_json(states)}) == states


def test_lowered_progress_of_a_paused_first_viewing_still_drops_the_plays_past_it() -> None:
    watching = anilist_side([entry(status="PAUSED", progress=8)], {}, None, table)
    lower = anilist_side([entry(status="PAUSED", progress=5)], watching.states, None, table)
    assert sorted(p.record for p in lower.side.plays) == [f"126661:{n}" for n in range(1, 6)]


# --------------------------------------------------------------------------- against the fake


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.limit = fake.burst_limit = 100_000
    return fake


async def _table() -> Callable[[int, int, int | None], Forward]:
    return table


@pytest.fixture
async def reader(fake: FakeAniList, store: Store) -> Any:
    config = AniListConfig(api_url=fake.url, auth_url=fake.auth_url)
    client = AniListClient(
        config, store, seeded_tokens={"alice": Secret(fake.issue_token())}, per_minute=100_000
    )
    reader = AniListReader(client, _table, store=store, clock=fake.now)
    yield reader
    await reader.aclose()


@pytest.mark.anyio
async def test_reads_full_then_checks_cheaply_then_reads_only_what_moved(
    fake: FakeAniList, reader: AniListReader
) -> None:
    watching = fake.add_entry(REZERO_P2, status="CURRENT", progress=3, updated_at=UPDATED)
    fake.add_entry(999, status="COMPLETED", progress=12, updated_at=UPDATED - 10)
    first = await reader.read("alice", {}, None, full=True)
    assert len(first.side.plays) == 3
    assert await reader.unchanged("alice", first.cursors) is True

    sent = reader.requests_sent
    watching.progress, watching.updated_at = 5, int(UPDATED + 3600)
    assert await reader.unchanged("alice", first.cursors) is False
    second = await reader.read("alice", first.cursors, first.side, full=False)
    assert reader.requests_sent - sent == 2  # the cheap check and one page of changes
    new = [p for p in second.side.plays if p.record in (f"{watching.id}:4", f"{watching.id}:5")]
    assert [p.at for p in new] == [UPDATED + 3600, UPDATED + 3600]
    assert len(second.side.plays) == 5


@pytest.mark.anyio
async def test_a_completed_entry_set_back_to_watching_is_told_to_the_delivery_target(
    fake: FakeAniList, reader: AniListReader, store: Store
) -> None:
    # Only the link's read may have seen the entry completed (the delivery target's first read
    # comes after the change): it tells the target the lower progress is a rewatch's, which
    # older plays do not raise and removals do not lower (`deliver.anilist`).
    done = fake.add_entry(REZERO_P2, status="COMPLETED", progress=12, updated_at=UPDATED)
    first = await reader.read("alice", {}, None, full=True)
    done.status, done.progress, done.updated_at = "CURRENT", 3, int(UPDATED + 3600)
    await reader.read("alice", first.cursors, first.side, full=False)
    _, noted = store.cache_get(REWATCH_SET_ASIDE, f"alice:{REZERO_P2}", fake.now())
    assert noted == done.id


@pytest.mark.anyio
async def test_a_read_checking_the_sign_ins_expiry_leaves_the_event_loop_free(
    fake: FakeAniList, reader: AniListReader, store: Store
) -> None:
    # A read first looks whether the sign-in expires soon, in the store, whose lock a link
    # run's apply holds for most of a second at a big account.
    fake.add_entry(REZERO_P2, status="CURRENT", progress=3, updated_at=UPDATED)
    working = reader.read("alice", {}, None, full=True)
    assert await loop_free_while_the_store_is_locked(store, working), "the loop waited for it"


@pytest.mark.anyio
async def test_unmatched_entries_are_listed_for_the_user_and_cleared_once_mapped(
    fake: FakeAniList, reader: AniListReader, store: Store
) -> None:
    fake.add_entry(999, status="CURRENT", progress=2)
    await reader.read("alice", {}, None, full=True)
    (record,) = unmatched_records(store, ["alice"])
    assert record.key == "anilist:999" and record.code == "unknown"
    TABLE[999] = (1, 1, 0)
    try:
        await reader.read("alice", {}, None, full=True)
    finally:
        del TABLE[999]
    assert unmatched_records(store, ["alice"]) == []


@pytest.mark.anyio
async def test_plays_we_queued_for_anilist_stay_claimed_until_read_back(
    fake: FakeAniList, reader: AniListReader
) -> None:
    fake.add_entry(REZERO_P2, status="CURRENT", progress=1)
    expected = Play(key(9), UPDATED, f"{EXPECTED}{key(9)}@{UPDATED:.0f}")
    read = await reader.read("alice", {}, Side((expected,)), full=True)
    assert expected in read.side.plays


def test_a_back_dated_play_we_sent_keeps_its_date_when_read_back() -> None:
    first = anilist_side([entry(progress=3)], {}, None, table)
    sent_at = 1_577_836_800.0  # a 2020 Trakt play copied to AniList
    queued = Play(key(4), sent_at, f"{EXPECTED}{key(4)}@{sent_at:.0f}")
    baseline = Side((*first.side.plays, queued))
    later = anilist_side(
        [entry(progress=4, updated_at=UPDATED + 50)], first.states, baseline, table
    )
    (fourth,) = [p for p in later.side.plays if p.item == key(4)]
    assert fourth.at == sent_at and fourth.record == "126661:4"


def test_the_anime_index_places_anilist_episodes_on_tmdb_seasons() -> None:
    from tests.fakes.anime_datasets import sample_bodies
    from watchbridge.anime import load_index

    index = load_index(sample_bodies())

    def mapper(anilist: int, episode: int, total: int | None) -> Forward:
        return index.episode_for(anilist, episode, "tmdb", total)

    side = anilist_side([entry(media=AOT_FINAL, progress=5)], {}, None, mapper).side
    assert sorted(p.item for p in side.plays)[-1] == "episode:tmdb:1429:s4e21"
    rezero = anilist_side([entry(progress=3)], {}, None, mapper).side
    assert "episode:tmdb:65942:s1e41" in {p.item for p in rezero.plays}


@pytest.mark.anyio
async def test_an_entry_the_datasets_know_only_by_its_mal_id_maps_through_it(
    fake: FakeAniList, store: Store
) -> None:
    import json

    from watchbridge.anime import AnimeIndex, load_index

    row = {"anidb_id": 99_001, "mal_id": 55_501, "themoviedb_id": {"tv": 800_001}}
    index = load_index({"fribb": json.dumps([{**row, "season": {"tmdb": 2}}])})

    async def loaded() -> AnimeIndex:
        return index

    async def mapper() -> Callable[[int, int, int | None], Forward]:
        return lambda media, episode, total: index.episode_for(media, episode, "tmdb", total)

    fake.add_media(777, episodes=12, id_mal=55_501)
    fake.add_entry(777, status="CURRENT", progress=2)
    client = AniListClient(
        AniListConfig(api_url=fake.url, auth_url=fake.auth_url),
        store,
        seeded_tokens={"alice": Secret(fake.issue_token())},
        per_minute=100_000,
    )
    reader = AniListReader(client, mapper, store=store, clock=fake.now, index=loaded)
    try:
        read = await reader.read("alice", {}, None, full=True)
    finally:
        await reader.aclose()
    assert sorted(p.item for p in read.side.plays) == [
        "episode:tmdb:800001:s2e1",
        "episode:tmdb:800001:s2e2",
    ]
