"""When the episodes our saves put on an AniList entry were watched (`anilist_viewings`): the
chain of saves a link walks back from what it reads. The links over the fakes are in
test_household_plays.py; these are the cases the household does not reach."""

from __future__ import annotations

import json
from dataclasses import replace

from watchbridge.anilist_viewings import (
    MAX_NOTES,
    SaveNote,
    bridged,
    episode_dates,
    noted,
    notes_from_json,
    notes_to_json,
    save_note,
    sent_from_json,
    sent_save,
    sent_to_json,
    settled,
    viewed_to_json,
)
from watchbridge.reconcile import UNDATED
from watchbridge.services.anilist import EntryWrite, ListEntry

DAY = 86400.0
T = 1_800_000_000.0


def entry(progress: int, updated_at: float, **fields: object) -> ListEntry:
    return replace(ListEntry(1, 10, "CURRENT", progress, updated_at=updated_at), **fields)


def saves(start: ListEntry, *steps: tuple[ListEntry, float | None, bool]) -> list[SaveNote]:
    """The notes of saves in a row from `start`: each (entry after it, viewing, lowered)."""
    notes: list[SaveNote] = []
    current = start
    for after, viewing, lowered in steps:
        notes = noted(notes, save_note(current, after, viewing, lowered))
        current = after
    return notes


def test_each_episode_of_a_step_keeps_its_save_and_the_rest_the_users_change() -> None:
    users = entry(6, T - 5 * DAY)  # the user ticked up to 6 on AniList
    notes = saves(
        users,
        (entry(7, T), T - 3 * DAY, False),
        (entry(8, T + 60), UNDATED, False),  # a play of no known date: when we wrote it
        (entry(8, T + 120, score=80), None, False),  # a score watches nothing
    )
    viewings = episode_dates(entry(8, T + 120, score=80), notes)
    assert viewings is not None
    dates = [viewings.date(n, -1.0) for n in (5, 6, 7, 8)]
    assert dates == [T - 5 * DAY, T - 5 * DAY, T - 3 * DAY, T + 60]


def test_an_entry_changed_on_anilist_since_our_last_save_is_dated_by_anilist() -> None:
    notes = saves(entry(6, T - 5 * DAY), (entry(7, T), T - 3 * DAY, False))
    assert episode_dates(entry(8, T + 60), notes) is None


def test_a_change_on_anilist_between_two_saves_ends_the_chain() -> None:
    notes = saves(entry(6, T - 5 * DAY), (entry(7, T), T - 3 * DAY, False))
    notes = noted(notes, save_note(entry(8, T + 60), entry(9, T + 120), T - DAY, False))
    assert len(notes) == 1
    viewings = episode_dates(entry(9, T + 120), notes)
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (7, 8, 9)] == [T + 60, T + 60, T - DAY]


def test_a_rewatch_we_begin_dates_its_own_episodes_only() -> None:
    completed = entry(12, T - 9 * DAY, status="COMPLETED", episodes=12)
    rewatching = replace(completed, status="REPEATING", progress=1, updated_at=T)
    notes = saves(
        completed,
        (rewatching, T - 2 * DAY, False),
        (replace(rewatching, progress=2, updated_at=T + 60), T - DAY, False),
    )
    viewings = episode_dates(replace(rewatching, progress=2, updated_at=T + 60), notes)
    assert viewings is not None
    assert dict(viewings.dates) == {1: T - 2 * DAY, 2: T - DAY}
    assert viewings.date(3, -1.0) == -1.0  # of no pass our saves began


def test_a_note_of_an_older_release_dates_the_whole_viewing() -> None:
    notes = notes_from_json({"saved": T, "at": T - 2 * DAY})
    viewings = episode_dates(entry(5, T), notes)
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (1, 5)] == [T - 2 * DAY, T - 2 * DAY]
    later = noted(notes, save_note(entry(5, T), entry(6, T + 60), T - DAY, False))
    viewings = episode_dates(entry(6, T + 60), notes_from_json(notes_to_json(later)))
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (5, 6)] == [T - 2 * DAY, T - DAY]


def as_the_release_before_the_chains_reads(entry: ListEntry, kept: object) -> float:
    """When the viewing `entry` shows was watched, read from VIEWED as the release before the
    chains (stop 50) read it: one note `{"saved", "at"}` dates it when `saved` is the entry's
    `updatedAt`; anything else (a bare chain) is no note, and `updatedAt` dates it."""
    if isinstance(kept, dict) and kept.get("saved") == entry.updated_at:
        at = kept.get("at")
        if isinstance(at, int | float) and at > UNDATED:
            return float(at)
    return entry.updated_at


def test_the_release_before_the_chains_reads_the_kept_notes_as_its_one_note() -> None:
    # A rollback: that release reads VIEWED after our saves and must date the viewing each
    # entry shows (its last episode) as watched, not by the last save.
    users = entry(5, T - 9 * DAY)
    raised = saves(users, (entry(6, T), T - 3 * DAY, False), (entry(7, T + 60), T - DAY, False))
    scored = noted(raised, save_note(entry(7, T + 60), entry(7, T + 120, score=80), None, False))
    lowered = noted(raised, save_note(entry(7, T + 60), entry(6, T + 120), UNDATED, True))
    undated = saves(users, (entry(6, T), UNDATED, False))
    cases = [
        (entry(7, T + 60), raised, T - DAY),
        (entry(7, T + 120, score=80), scored, T - DAY),  # a score keeps the viewing's date
        (entry(6, T + 120), lowered, T - 3 * DAY),  # a removal: the new last episode's
        (entry(6, T), undated, T),  # no date known: the save's, as that release had it
    ]
    for read, notes, watched in cases:
        kept = json.loads(json.dumps(viewed_to_json(notes)))
        assert as_the_release_before_the_chains_reads(read, kept) == watched
        assert notes_from_json(kept) == notes_from_json(notes_to_json(notes))  # and this one


def test_unreadable_notes_are_none() -> None:
    assert notes_from_json([{"saved": "x"}]) == []
    assert notes_from_json("nonsense") == []


def test_a_removal_of_ours_leaves_each_episode_below_it_its_date() -> None:
    notes = saves(
        entry(9, T - 5 * DAY),
        (entry(10, T), T - 3 * DAY, False),
        (entry(11, T + 60), T - 2 * DAY, False),
        (entry(10, T + 120), UNDATED, True),  # episode 11 unwatched on the other side
    )
    viewings = episode_dates(entry(10, T + 120), notes)
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (9, 10, 11)] == [T - 5 * DAY, T - 3 * DAY, -1.0]
    notes = noted(notes, save_note(entry(10, T + 120), entry(11, T + 180), T - DAY, False))
    viewings = episode_dates(entry(11, T + 180), notes)
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (10, 11)] == [T - 3 * DAY, T - DAY]


def test_a_save_whose_answer_was_lost_is_noted_once_a_read_shows_it_landed() -> None:
    notes = saves(entry(6, T - 5 * DAY), (entry(7, T), T - 3 * DAY, False))
    sent = sent_save(entry(7, T), EntryWrite(10, progress=8), T - 2 * DAY, False)
    sent = sent_from_json(sent_to_json(sent))
    assert sent is not None
    assert settled(notes, sent, entry(7, T)) == notes  # it did not land
    assert settled(notes, sent, entry(9, T + 60)) == notes  # the user's change, not ours
    viewings = episode_dates(entry(8, T + 60), settled(notes, sent, entry(8, T + 60)))
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (6, 7, 8)] == [T - 5 * DAY, T - 3 * DAY, T - 2 * DAY]


def test_episodes_past_the_notes_kept_are_undated_and_the_notes_stay_small() -> None:
    # One Piece written one episode a day for 150 days between two reads of a link.
    start = entry(0, T - 200 * DAY, episodes=1100)
    steps = [
        (entry(n, T + n * DAY, episodes=1100), T + n * DAY - 600, False) for n in range(1, 151)
    ]
    notes = notes_from_json(notes_to_json(saves(start, *steps)))
    assert len(notes) == MAX_NOTES
    viewings = episode_dates(entry(150, T + 150 * DAY, episodes=1100), notes)
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (1, 50)] == [UNDATED, UNDATED]
    assert viewings.date(51, -1.0) == T + 51 * DAY - 600
    assert len(json.dumps(notes_to_json(notes))) < 130 * MAX_NOTES


def test_a_users_tick_between_two_saves_keeps_the_chain_a_rewatch_of_theirs_ends_it() -> None:
    notes = saves(entry(5, T - 9 * DAY), (entry(6, T), T - 3 * DAY, False))
    ticked = entry(7, T)  # in the same second as our save
    chain = noted(bridged(notes, ticked), save_note(ticked, entry(8, T + 60), T - DAY, False))
    viewings = episode_dates(entry(8, T + 60), chain)
    assert viewings is not None
    assert [viewings.date(n, -1.0) for n in (5, 6, 7, 8)] == [T - 9 * DAY, T - 3 * DAY, T, T - DAY]
    rewatching = entry(7, T + 30, status="REPEATING", repeat=1)
    assert bridged(notes, rewatching) == notes
