"""When whole reads of a Serializd diary prove an entry of ours gone (deliver/diary_listing):
two whole reads must miss it, the second begun after the first ended, and not hours apart."""

from __future__ import annotations

from watchbridge.deliver.diary_listing import (
    FIRST_MISS_KEPT,
    Listing,
    first_missed,
    judged,
    merged,
    recorded,
)

ENTRY = 7
RECORDED = 1_000.0  # when our ledger recorded the entry


def whole_read(at: float, ids: frozenset[int] = frozenset()) -> Listing:
    return Listing(read_at=at, ids=ids, whole=True, ended_at=at + 50)


def test_an_entry_one_whole_read_misses_is_missed_once_and_remembered() -> None:
    listing = whole_read(2_000.0)
    verdict = judged(listing, {ENTRY: RECORDED}, {})
    assert verdict.missed_once == {ENTRY} and not verdict.gone
    assert first_missed(listing, verdict, {}) == {ENTRY: 2_050.0}


def test_a_second_whole_read_begun_after_the_first_ended_proves_it_gone() -> None:
    verdict = judged(whole_read(2_400.0), {ENTRY: RECORDED}, {ENTRY: 2_050.0})
    assert verdict.gone == {ENTRY}


def test_a_listed_entry_stands_whatever_was_missed_before() -> None:
    verdict = judged(whole_read(2_400.0, frozenset({ENTRY})), {ENTRY: RECORDED}, {ENTRY: 2_050.0})
    assert verdict.listed == {ENTRY} and not verdict.gone


def test_a_first_miss_older_than_it_is_kept_for_proves_nothing_and_is_taken_again() -> None:
    # A release before this one may have read the entry listed since, without forgetting the
    # miss (a rollback, then this release again): the miss is hours old, so it starts over.
    now = 2_050.0 + FIRST_MISS_KEPT + 1
    listing = whole_read(now)
    verdict = judged(listing, {ENTRY: RECORDED}, {ENTRY: 2_050.0})
    assert verdict.missed_once == {ENTRY} and not verdict.gone
    assert first_missed(listing, verdict, {ENTRY: 2_050.0}) == {ENTRY: now + 50}


def test_a_kept_whole_read_records_each_first_miss_once() -> None:
    # Kept for the checks after it, the read that missed the entry is asked again once another
    # read listed it (its first miss forgotten): the miss it made before that is no new one.
    listing = whole_read(2_000.0)
    verdict = judged(listing, {ENTRY: RECORDED}, {})
    kept = recorded(listing, listing, first_missed(listing, verdict, {}))
    kept = merged(kept, Listing(2_100.0, frozenset({99}), False, 2_110.0), 2_120.0, 300.0)
    assert first_missed(kept, judged(kept, {ENTRY: RECORDED}, {}), {}) == {}
    later = whole_read(2_400.0)  # a read of its own still records its miss
    assert recorded(kept, later, {ENTRY}) == kept
    assert first_missed(later, judged(later, {ENTRY: RECORDED}, {}), {}) == {ENTRY: 2_450.0}
