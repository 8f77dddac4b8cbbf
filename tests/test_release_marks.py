"""Trakt plays marked "watched on release date" (air date + runtime): which are taken for
marks, read undated (`release_marks`). The reads against the fake Trakt are in
tests/test_readers.py, the first sync through the CLI in tests/test_switching_tools.py."""

from __future__ import annotations

from watchbridge.reconcile import UNDATED, Play, Side
from watchbridge.release_marks import (
    UNKNOWN_RUNTIME_SPAN,
    as_marks,
    cached_moments,
    found_marks,
    marks_read,
    missing_places,
    release_candidates,
    release_moments,
    second_marks,
    to_cache,
    viewings_logged,
)
from watchbridge.services.trakt import parse_seasons

E1 = "episode:tmdb:1396:s1e1"
E2 = "episode:tmdb:1396:s1e2"
MOVIE = "movie:tmdb:603"
AIRED = 1_200_000_000.0  # 2008-01-10 21:20 UTC
RELEASED = AIRED + 47 * 60
YEAR = 365 * 86400.0


def test_a_season_list_gives_each_episode_its_release_moment_when_trakt_knows_both_parts() -> None:
    listed = parse_seasons(
        [
            {
                "number": 1,
                "episodes": [
                    {"number": 1, "first_aired": "2008-01-10T21:20:00.000Z", "runtime": 47},
                    {"number": 2, "first_aired": "2008-01-17T21:20:00.000Z", "runtime": None},
                    {"number": 3, "first_aired": None, "runtime": 47},
                ],
            }
        ]
    )
    aired_2 = AIRED + 7 * 86400
    assert release_moments(listed) == {
        "s1e1": (RELEASED, RELEASED),
        "s1e2": (aired_2, aired_2 + UNKNOWN_RUNTIME_SPAN),  # no runtime: its air date on
    }


def test_only_plays_a_viewing_on_the_other_side_waits_for_are_asked_about() -> None:
    trakt = Side(
        (
            Play(E1, RELEASED, "t1"),  # the viewing on the other side is years later
            Play(E2, RELEASED + 7 * 86400, "t2"),  # paired by its time
            Play(MOVIE, RELEASED, "t3"),  # a movie: Trakt documents `released` for episodes
        )
    )
    other = Side(
        (
            Play(E1, RELEASED + 5 * YEAR, "q1"),
            Play(E2, RELEASED + 7 * 86400 + 30, "q2"),
            Play(MOVIE, RELEASED + 5 * YEAR, "q3"),
        )
    )
    assert release_candidates(trakt, other) == {E1: ([Play(E1, RELEASED, "t1")], 1)}
    assert release_candidates(trakt, Side()) == {}  # nothing to pair with: copied as today


def test_no_more_plays_are_taken_for_marks_than_the_other_side_holds_viewings_waiting() -> None:
    """An old tool's duplicate of a mark (posted twice): one mark stands for the one viewing,
    the other stays dated, a second record of it (`reconcile._second_records`)."""
    trakt = Side((Play(E1, RELEASED, "t1"), Play(E1, RELEASED + 20, "t2"), Play(E1, 5, "t0")))
    other = Side((Play(E1, RELEASED + 5 * YEAR, "q1"),))
    candidates = release_candidates(trakt, other)
    marks = found_marks(candidates, {"1396": {"s1e1": (RELEASED, RELEASED)}})
    assert marks == {"t1": RELEASED}
    assert (
        found_marks(candidates, {"1396": {"s1e1": (RELEASED + 60, RELEASED + 60)}}) == {}
    )  # another minute
    assert found_marks(candidates, {}) == {}  # Trakt gave no air date or runtime
    plays = as_marks(trakt, marks).plays
    assert [p.at for p in plays] == [UNDATED, RELEASED + 20, 5]


def test_a_mark_kept_is_read_undated_only_while_trakt_dates_its_play_the_same_minute() -> None:
    trakt = Side((Play(E1, RELEASED, "t1"),))
    assert as_marks(trakt, {"t1": RELEASED + 30}).plays == (Play(E1, UNDATED, "t1"),)
    assert as_marks(trakt, {"t1": RELEASED + 120}) is trakt
    assert as_marks(trakt, {}) is trakt


def test_a_mark_of_a_viewing_trakt_holds_a_copy_of_already_is_a_second_record() -> None:
    """Marked on trakt.tv after the viewing was copied there: the mark is asked about and,
    read undated, left without a partner, a second record of the viewing (not copied)."""
    copy = Play(E1, RELEASED + 5 * YEAR, "t2")
    trakt = Side((Play(E1, RELEASED, "t1"), copy))
    other = Side((Play(E1, RELEASED + 5 * YEAR + 30, "q1"),))
    candidates = release_candidates(trakt, other)
    assert candidates == {E1: ([Play(E1, RELEASED, "t1")], 1)}
    marks = found_marks(candidates, {"1396": {"s1e1": (RELEASED, RELEASED)}})
    read = as_marks(trakt, marks)
    assert second_marks(read, other, marks) == {"t1"}
    assert second_marks(read, Side(), marks) == frozenset()  # its viewing gone: not kept
    # Still a mark (`Side.marks`): a removal of its viewing takes it along (test_reconcile).
    assert marks_read(read, marks) == {"t1"}
    assert marks_read(trakt, marks) == frozenset()  # not read undated (`as_marks`): none
    alone = Side((Play(E1, RELEASED, "t1"),))  # the mark pairs with the viewing: no second
    assert second_marks(as_marks(alone, marks), other, marks) == frozenset()


def test_an_episode_without_a_runtime_is_told_by_any_minute_of_its_span() -> None:
    trakt = Side((Play(E1, AIRED + 50 * 60, "t1"), Play(E2, AIRED - 60, "t2")))
    other = Side((Play(E1, AIRED + 5 * YEAR, "q1"), Play(E2, AIRED + 5 * YEAR, "q2")))
    span = (AIRED, AIRED + UNKNOWN_RUNTIME_SPAN)
    moments = {"1396": {"s1e1": span, "s1e2": span}}
    assert found_marks(release_candidates(trakt, other), moments) == {"t1": AIRED + 50 * 60}
    # Scrobbled or checked in as it aired: a viewing of its own, never a mark.
    history = [
        {"id": 1, "action": "scrobble", "type": "episode", "watched_at": "2026-01-01T00:50:00Z"},
        {"id": 2, "action": "checkin", "type": "episode", "watched_at": "2026-01-01T00:51:00Z"},
        {"id": 3, "action": "watch", "type": "episode", "watched_at": "2026-01-01T00:52:00Z"},
        {"id": 4, "action": "scrobble", "type": "movie", "watched_at": "2026-01-01T00:53:00Z"},
    ]
    viewings = viewings_logged(history)
    assert sorted(viewings) == ["1", "2"]
    trakt = Side((Play(E1, AIRED + 50 * 60, "1"),))
    assert found_marks(release_candidates(trakt, other), moments, viewings) == {}
    # As cached: spans as lists, and one time each as cached before spans.
    assert cached_moments({"s1e1": list(span), "s1e2": RELEASED}) == {
        "s1e1": span,
        "s1e2": (RELEASED, RELEASED),
    }


def test_a_kept_answer_lacking_an_episode_is_asked_again_once() -> None:
    """Places a kept answer lacks are asked about again, unless that answer was asked about
    them already and lacked them too (kept with it)."""
    first = to_cache({"s1e1": (RELEASED, RELEASED)}, ["s1e1"])
    assert first == {"s1e1": [RELEASED, RELEASED]}
    assert missing_places(first, ["s1e1", "s2e1"]) == ["s2e1"]  # a season aired since
    again = to_cache({"s1e1": (RELEASED, RELEASED)}, ["s1e1", "s2e1"])
    assert missing_places(again, ["s1e1", "s2e1"]) == []
    assert cached_moments(again) == {"s1e1": (RELEASED, RELEASED)}
