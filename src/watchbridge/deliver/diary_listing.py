"""What Serializd's diary was seen to list, shared by the checks of one delivery run.

A removal keeps an episode ticked while another diary entry of ours of it stands, and the
user may have deleted that entry in the app. The diary cannot be read by show or by entry,
and its pages are not reliably newest first (reference §5.1): an entry seen on any page is
there, but only a read of every page proves one gone. That costs a request per 24 entries, so
the reads of a run (the look at its newest pages, a whole read, the pages read until our
entries showed) are kept here, per profile, and serve every later check they can answer:

- an entry seen by any read is there (a read the user deleted it after leaves it standing
  until the next run reads: the tick is kept, never taken);
- an entry not seen is missed only by a whole read, and only if it was listed when that
  read began: entries we add afterwards are noted as there (`noted`), a read during which we
  added one counts as a partial read, and one our ledger recorded after the read began (a
  `watchbridge sync` beside the service adds entries too, never noted here) is not missed by
  it (`missed`);
- one whole read can miss an entry that is there: an entry deleted and another added while
  its pages are read keep the count it checks, and Serializd may answer no count at all,
  and either moves the rows after them onto a page already read. So an entry is gone only
  when a second whole read, begun after the first one that missed it ended, misses it too
  (`judged`); when that first read ended is kept in the store by the caller (`judged`'s
  `first_misses`), so that the proof outlives a restart, and forgotten once any read lists
  the entry, the link reader's included (`forget_first_misses`): else a later miss would
  complete a proof against an entry seen since. A whole read kept for later checks records
  each first miss once (`recorded`): asked again after a read listed the entry, it would
  record the miss it made before that read as new;
- the link reader's whole reads (the daily full read) count as no miss, first or second: a
  miss is judged against what was added while the read ran (`noted`, the adds a read
  overlapped), which only the delivery knows, and it proves nothing unless a removal waits,
  whose own next read comes minutes later (SECOND_READ_AFTER) and is one whole read more at
  most, in a case (a whole read missing an entry) that is rare;
- a listing serves a row only when read after the row was planned from its link's read
  (and after its last try), and for `keep` seconds: what the user changed before the plan
  is in it;
- a read that fails proves nothing: nothing of it is kept.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from watchbridge.deliver.trakt import still_fresh

# A first miss older than this proves nothing with a second read: a second read normally
# follows within minutes, and a release before this one (rolled back to, then upgraded from)
# may have seen the entry listed since without forgetting the miss.
FIRST_MISS_KEPT = 6 * 3600.0


@dataclass(frozen=True)
class Listing:
    """The ids of the diary rows seen listed by reads begun at `read_at` or later (our
    clock), and whether one of them read the whole diary (then an id not among them, if it
    was listed at `read_at`, was missed by that read, which ended at `ended_at`)."""

    read_at: float
    ids: frozenset[int]
    whole: bool
    ended_at: float
    # The entries whose first miss this whole read recorded (`first_missed`, `recorded`).
    recorded: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Verdict:
    """What a listing says of the entries of ours asked about (review ids)."""

    listed: frozenset[int]  # seen: they stand
    gone: frozenset[int]  # missed by it and by a whole read that ended before it began
    missed_once: frozenset[int]  # missed by it, by no whole read before it: not gone yet
    unread: frozenset[int]  # neither seen nor missed: a read made later may tell

    @property
    def settled(self) -> bool:
        """Whether no read made now could tell more of them (none `unread`)."""
        return not self.unread


def serves(listing: Listing | None, since: float, now: float, keep: float) -> bool:
    """Whether `listing` may answer for a row planned (or last tried) at `since`."""
    return (
        listing is not None and listing.read_at >= since and still_fresh(listing.read_at, now, keep)
    )


def missed(listing: Listing, wanted: Mapping[int, float]) -> frozenset[int]:
    """The entries of ours `wanted` (review id -> when our ledger recorded it, our clock)
    that the listing missed: a whole read, begun after they were recorded, did not list
    them. One recorded since may have been added after the read began."""
    if not listing.whole:
        return frozenset()
    return frozenset(
        review
        for review, recorded in wanted.items()
        if review not in listing.ids and recorded < listing.read_at
    )


def judged(
    listing: Listing, wanted: Mapping[int, float], first_misses: Mapping[int, float]
) -> Verdict:
    """What the listing says of the entries `wanted` (as for `missed`), given when the first
    whole read that missed each of them ended (`first_misses`, review id -> our clock): one
    it misses is gone when that read ended before this one began, within FIRST_MISS_KEPT."""
    listed = frozenset(wanted) & listing.ids
    not_there = missed(listing, wanted)
    gone = frozenset(
        review
        for review in not_there
        if review in first_misses
        and listing.read_at - FIRST_MISS_KEPT <= first_misses[review] < listing.read_at
    )
    return Verdict(listed, gone, not_there - gone, frozenset(wanted) - listed - not_there)


def first_missed(
    listing: Listing, verdict: Verdict, first_misses: Mapping[int, float]
) -> dict[int, float]:
    """The entries the listing was the first whole read to miss (`verdict.missed_once`, none
    remembered yet, or one older than FIRST_MISS_KEPT), each with when that read ended: what
    the store keeps of them. Not those it recorded already (`Listing.recorded`)."""
    return {
        review: listing.ended_at
        for review in verdict.missed_once - listing.recorded
        if first_misses.get(review, -math.inf) < listing.read_at - FIRST_MISS_KEPT
    }


def recorded(kept: Listing, listing: Listing, reviews: Collection[int]) -> Listing:
    """`kept` noting that the whole read `listing` recorded the first misses of `reviews`,
    when `kept` still holds that read (ended when it did); else `kept` as it is."""
    if not reviews or not (kept.whole and kept.ended_at == listing.ended_at):
        return kept
    return replace(kept, recorded=kept.recorded | frozenset(reviews))


def merged(kept: Listing | None, read: Listing, now: float, keep: float) -> Listing:
    """`kept` with a newer `read` added. A whole read replaces what was kept (it is newer);
    a partial one adds what it saw to a listing still fresh, dated by the older read."""
    if read.whole or kept is None or not still_fresh(kept.read_at, now, keep):
        return read
    return replace(kept, read_at=min(kept.read_at, read.read_at), ids=kept.ids | read.ids)


def noted(listing: Listing, *, added: int | None = None, deleted: int | None = None) -> Listing:
    """`listing` after a diary entry of ours was added (it is there) or deleted (gone)."""
    ids = set(listing.ids)
    if added is not None:
        ids.add(added)
    if deleted is not None:
        ids.discard(deleted)
    return replace(listing, ids=frozenset(ids))
