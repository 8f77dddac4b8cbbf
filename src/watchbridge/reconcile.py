"""Reconciliation planning: two sides' state in, the writes that make them agree out. Pure.

Plays are events, not a watched flag: each side holds a list of plays (item, time, the side's
own record id), rewatches being several plays. Each side's state from the previous run is its
baseline, so a removal is "present last time, absent now" and can propagate; propagated
removals leave tombstones so they do not bounce back. Every action carries its reason.

Undated plays: a play whose `at` is `UNDATED` (0) says "watched, date unknown" (a Serializd
episode ticked without a diary entry, a Trakt play with `watched_at` null). It matches one play
of the same item on the other side whatever its time, but only after every dated play has
found its dated partner, so it never takes the place of a real viewing; nor of one dated after
the flag was first read (`Side.first_seen`) when the flag was held already at the last run: a
tick left behind when its diary entry was deleted says nothing of the next viewing. It counts
as removed only when its side holds no play of the item any more (it is a watched flag, not an
event), and then takes every play of the item on the other side with it.

A link's first run (the two sides meet for the first time, no baseline): a viewing logged on
one side days after the other (a catch-up log on Serializd) is further apart than
MATCH_WINDOW. After the usual matching, the plays of an item still without a partner on each
side are paired one for one, nearest first, within FIRST_RUN_WINDOW: taken as the same
viewing, they make no write, are listed (`Plan.same_viewing`) and are remembered
(`Plan.paired`), so later runs pair them again by their records. Only on a first run: later,
a rewatch weeks after a viewing must not be taken for it. And once after a restore (`plan`'s
`restored`), for the plays new on both sides since the baseline only: a play a link wrote to
Plex or AniList after the backup copy was taken is dated the day of the write there, days
from the play it copied, and the baseline put back knows neither.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from watchbridge import ratings
from watchbridge.config import Link
from watchbridge.guard import CONFIRM, removals_held
from watchbridge.zone import local_time

MATCH_WINDOW = 36 * 3600.0  # a play on each side within this time is the same viewing
SAME_VIEWING = 60.0  # ...and this close, certainly so (one viewing, dated by two clocks)
# On a link's first run only: plays of an item left without a partner on each side are taken
# for one viewing this far apart (one side logged it days later, by hand).
FIRST_RUN_WINDOW = 30 * 86400.0
EXPECTED = "expect:"  # record prefix of a play we queued but have not read back yet
ABSORBED = "held:"  # record prefix of a play AniList already counted (readers/anilist.py)
UNDATED = 0.0  # `Play.at` of a play whose date is unknown
# Targets take a play of an item within this many minutes of one they hold for that play
# (a webhook's and a link's copy of one viewing): two viewings copied are set further apart.
DUPLICATE_WINDOW_MINUTES = 2
# A play dated by the day alone (`Side.logged`) logged this long before its date to this long
# after it was logged on its day, as it was watched (a day either side for the time zones,
# and a night more); logged later, it may be an import of such dates, run again.
LOGGED_ON_ITS_DAY = (-86400.0, 2 * 86400.0)
ActionKind = Literal["add_play", "remove_play", "set_rating", "remove_rating"]
COPIES = ("add_play", "set_rating")  # what one side's plays and ratings make on the other
# The start of the `source` of a rating removal that takes back a copy of ours still on its
# way (`withdraws`), then the copy's value and the date of the rating it copied.
WITHDRAWS = "withdraws:"
# The start of the `source` of a rating removal from a side that keeps no record of its own
# for a rating, then the value and date of the rating it removes (`_rating_source`).
REMOVES = "removes:"

# What else reads as a play gone from a side: an AniList entry's episodes reach the other side
# through the anime mapping, which a dataset refresh (or a release reading it better) changes.
GONE_ALSO = {"anilist": " (or the anime mapping no longer places it there)"}
# The reason of a removal of a Trakt play marked "watched on release date" taken along with
# the viewing it is a second record of (`_marks_going_along`), before "removed on SIDE".
MARK_GOING = "its 'watched on release date' mark, a second record of the viewing "


def one_play(at: float, other: float) -> bool:
    """Whether a target takes plays of one item at `at` and at `other` for one play: their
    minutes are within DUPLICATE_WINDOW_MINUTES of each other. Pure."""
    return abs(int(at // 60) - int(other // 60)) <= DUPLICATE_WINDOW_MINUTES


def recorded_twice(play: Play, other: Play, logged: Mapping[str, float]) -> bool:
    """Whether two plays of one item on one side are one viewing recorded twice (an old
    tool's duplicate, posted again): dated within the duplicate window (`one_play`). Not two
    dated by the day alone (`logged`: when each was logged, `Side.logged`), whose dates say
    nothing of the hour: those are one viewing only when logged within that window of each
    other (a tool posting it twice, a retry, a double tap), or when either was logged after
    its day (an import of such dates run twice looks as a catch-up logged by hand does: kept
    as one, as dates to the minute are). Logged apart on their day, they are two viewings of
    it, logged by hand as they were watched. Pure."""
    if not one_play(play.at, other.at):
        return False
    mine, theirs = logged.get(play.record), logged.get(other.record)
    if mine is None or theirs is None or one_play(mine, theirs):
        return True
    return not (_on_its_day(play.at, mine) and _on_its_day(other.at, theirs))


def _on_its_day(at: float, logged: float) -> bool:
    """Whether a play dated by the day alone (`at`) was logged on that day (LOGGED_ON_ITS_DAY)."""
    before, after = LOGGED_ON_ITS_DAY
    return before <= logged - at <= after


@dataclass(frozen=True)
class Play:
    item: str  # canonical item key (e.g. "episode:tmdb:1396:s1e1")
    at: float  # watched at (UTC seconds)
    record: str  # the side's own id for this play (Trakt history id, Serializd review id)


@dataclass(frozen=True)
class Rated:
    value: int  # internal 0-100
    at: float  # rated at
    record: str = ""  # the side's own ids of the rows holding it, when a removal needs them
    # A baseline's copy of ours not read back yet (`expect_ratings`): it stands only once
    # its row is delivered (`settle_expected_ratings`).
    expected: bool = False


@dataclass(frozen=True)
class Side:
    """What one service holds for one profile."""

    plays: tuple[Play, ...] = ()
    ratings: Mapping[str, Rated] = field(default_factory=dict)
    # The items this side can hold at all (a media server: what is in its libraries);
    # None: anything. Plays and ratings of other items are not planned for it.
    catalog: frozenset[str] | None = None
    # False: this side rates no episode (AniList scores a season's or a movie's entry), so no
    # episode's rating is planned for it, whatever its catalog holds.
    rates_episodes: bool = True
    # Items outside `catalog` that are none of this side's business (AniList: what is not
    # anime; an episode counted by its last part): left out as the others, but not counted
    # as items it lacks (the run's summary says nothing of them).
    left_alone: frozenset[str] = frozenset()
    # Ratings of whole shows outside `catalog` that this side cannot take however they map
    # (AniList scores each season's entry): left out as the others, counted on their own
    # (`Plan.shows_rated_apart`), as the user is told of them apart (`show_ratings`).
    shows_rated_apart: frozenset[str] = frozenset()
    # Titles of the rated whole shows, where this side's read names them (Plex's): for what
    # the user is told of a show's rating the other side cannot take (`show_ratings`).
    show_titles: Mapping[str, str] = field(default_factory=dict)
    # Records of plays keyed by the other side's episode numbers rather than the library's
    # own (Plex shows in a TheTVDB ordering): held before under another item, such a play is
    # gone from that one.
    renumbered: frozenset[str] = frozenset()
    # Plays this side no longer holds that are not removals (a copy of ours made to an episode
    # since renumbered: the play it copied is added again, to the right episode).
    forgotten: tuple[Play, ...] = ()
    # Items whose rating this side leaves out on purpose (episodes renumbered since they were
    # rated): no removal of the rating is read from them (the other side's is still copied).
    renumbered_ratings: frozenset[str] = frozenset()
    # Items whose rating this side read in a shape it does not know (a changed answer: its
    # value or date unreadable, the rating read before kept): nothing is written over it
    # that only its date or its absence would decide; a change of the other side's still is.
    unread_ratings: frozenset[str] = frozenset()
    # When each undated play (by record) was first read (`with_first_seen`): it stands for no
    # dated play of the other side dated after that, but one that side held already then.
    first_seen: Mapping[str, float] = field(default_factory=dict)
    # Items this side may hold a play of that its read did not list (a read of the whole
    # Serializd diary that the diary grew under): no play of them is copied to it this run,
    # the next run's read looks again.
    unlisted: frozenset[str] = frozenset()
    # Items whose plays wait for a lookup of this side's that failed this run (Trakt's
    # release dates of their show, `release_marks`): no play of them is copied either way,
    # the next run asks again.
    held: frozenset[str] = frozenset()
    # Records of this side's plays marked "watched on release date" (read undated) whose
    # viewing the other side holds paired with another play of this side already (a mark
    # added on Trakt after the viewing was copied there, `release_marks.second_marks`): a
    # second record of that viewing, neither copied nor removed (removed with the viewing).
    second_marks: frozenset[str] = frozenset()
    # Records of every play of this side taken for such a mark (read undated, second or
    # not): a viewing removed on the other side takes one with it where that side holds no
    # play of the episode any more (`_marks_going_along`).
    marks: frozenset[str] = frozenset()
    # When each play dated by the day alone was logged, by record (a Serializd log made in its
    # app, dated by a day and no hour: its `dateAdded`): of two such plays of one item on one
    # day, only this tells one viewing recorded twice from two viewings (`recorded_twice`).
    logged: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SameViewing:
    """Two plays of one item, one on each side, that a link's first run took for one viewing
    although logged further apart than MATCH_WINDOW: nothing is written for them."""

    item: str
    plays: Mapping[str, Play]  # service -> its play

    def partner(self, service: str, record: str) -> str | None:
        """The other side's record paired with `service`'s `record`, if this pair holds it."""
        mine = self.plays.get(service)
        if mine is None or mine.record != record:
            return None
        return next(p.record for s, p in self.plays.items() if s != service)

    def describe(self) -> str:
        """ "ITEM SIDE DATE ~ SIDE DATE", the dates on the household's clock (zone.py)."""
        dates = " ~ ".join(f"{s} {local_time(p.at)}" for s, p in self.plays.items())
        return f"{self.item} {dates}"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    target: str  # the service to write to
    item: str
    reason: str
    at: float = 0.0
    value: int | None = None
    record: str = ""  # for removals: the target's record id
    # What makes this write one logical action among others of the item (its idempotency):
    # for an add, the source's record of the play (two undated plays of one episode are two
    # adds); for a rating, the value it replaces (so a preferred side can assert its value
    # again after the other side changed it).
    source: str = ""
    # For an add: the plays of the item the target will hold just before this one lands (what
    # it held, read and not merely queued, when this was planned, plus the adds of the item
    # planned before this one, which go out first). An undated add whose answer was lost is
    # recognised by the count growing past it.
    target_plays: int = 0
    # For an add: the plays of the item the target holds, or will by then, from before this
    # one (undated ones too): this play is a rewatch there when there are any.
    earlier_plays: int = 0


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    tombstones: frozenset[tuple[str, str]]  # (service, record) removals we made, not to re-add
    held: str = ""  # why removals are held back (mass-removal guard), empty when not
    # per target: writes left out because the item is not in its catalog
    out_of_catalog: Mapping[str, int] = field(default_factory=dict)
    # Tombstones whose record a side holds again after its removal was done: its play was
    # planned as a new one; they are to be forgotten.
    spent: frozenset[tuple[str, str]] = frozenset()
    # Plays this (first) run took for one viewing although days apart: no write, but listed.
    same_viewing: tuple[SameViewing, ...] = ()
    # Every such pair to remember after this run (those of earlier first runs whose plays a
    # side still holds, or held last time, and this run's): later runs pair them again.
    paired: tuple[SameViewing, ...] = ()
    # Sides the plays and ratings of an account not checked yet would be copied to (`plan`'s
    # `unchecked`): those writes wait with the removals.
    copies_wait_on: frozenset[str] = frozenset()
    # per target: ratings of whole shows left out that it can take by season only
    # (`Side.shows_rated_apart`), not among `out_of_catalog`
    shows_rated_apart: Mapping[str, int] = field(default_factory=dict)
    # per side: plays left as they are as a second record of a viewing the other side holds
    # once (an old tool's duplicates, `_second_records`): neither copied nor removed, but
    # told (the sides' sizes differ by them)
    held_twice: Mapping[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = defaultdict(int)
        for action in self.actions:
            counted[f"{action.target}:{action.kind}"] += 1
        return dict(counted)

    def writes(self, confirmed: bool = False) -> tuple[Action, ...]:
        """What may be applied now: everything unless removals are held (and not `confirmed`);
        then neither they nor the plays added of their items (`waiting_with_removals`)."""
        kept = {id(a) for a in self.held_back(confirmed)}
        return tuple(a for a in self.actions if id(a) not in kept)

    def held_back(self, confirmed: bool = False) -> tuple[Action, ...]:
        """What a hold keeps back: the removals, the adds that wait with them, and the plays
        and ratings an account not checked yet would copy (`copies_wait_on`)."""
        if not self.held or confirmed:
            return ()
        waiting = {id(a) for a in waiting_with_removals(self.actions)}
        return tuple(
            a
            for a in self.actions
            if (a.kind.startswith("remove") and not withdraws(a))
            or id(a) in waiting
            or (a.kind in COPIES and a.target in self.copies_wait_on)
        )


def waiting_with_removals(actions: Sequence[Action]) -> list[Action]:
    """The plays added to a side that also loses plays of their item: held, they wait with
    the removals. A season marked unwatched by mistake and marked watched again on Plex is
    dated today there; copied, those plays would stand beside the ones the hold keeps."""
    removing = {(a.target, a.item) for a in actions if a.kind == "remove_play"}
    return [a for a in actions if a.kind == "add_play" and (a.target, a.item) in removing]


def withdraws(action: Action) -> bool:
    """Whether `action` removes a rating only to take back a copy of ours still on its way
    (its source cleared it meanwhile): the target was read without it, so it takes nothing
    there the user sees, and no removal guard holds it (held, the copy would land)."""
    return action.kind == "remove_rating" and action.source.startswith(WITHDRAWS)


def flows(link: Link) -> list[tuple[str, str]]:
    """(from, to) pairs the link's direction allows."""
    first, second = link.services[0], link.services[1]
    if link.direction == "one-way":
        return [(first, second)]
    return [(first, second), (second, first)]


def match_plays(
    ours: Iterable[Play],
    theirs: Iterable[Play],
    known: Mapping[str, str] = MappingProxyType({}),
    stands_for: Callable[[Play, Play], bool] | None = None,
) -> tuple[list[tuple[Play, Play]], list[Play], list[Play]]:
    """Pair plays of the same item: first those `known` to be one viewing (our record ->
    theirs: a first run took them for one, `SameViewing`), then those within SAME_VIEWING (one
    viewing, copied), then the rest within MATCH_WINDOW, nearest first in time order; then
    undated plays with what is left of the same item (earliest first) that they may stand for
    (`stands_for(ours, theirs)`, see `flag_limits`; None: any). Without the
    SAME_VIEWING step, a viewing added later a few hours before one already on both sides
    would take that one's partner, and look copied while the other looked new. A play left
    over that is dated as the partner of a `known` pair days apart is a copy of that viewing
    (another link's): in no pair, and not left without one either.

    Returns (pairs, ours without a partner, theirs without a partner).
    """
    by_item: dict[str, list[Play]] = defaultdict(list)
    for play in theirs:
        by_item[play.item].append(play)
    pairs: list[tuple[Play, Play]] = []
    lonely_ours: list[Play] = []
    undated_ours: list[Play] = []
    used: set[int] = set()
    near: list[Play] = []
    unknown: list[Play] = []
    for play in sorted(ours, key=lambda p: (p.item, p.at)):
        partner = _known_partner(play, known.get(play.record), by_item, used)
        if partner is None:
            unknown.append(play)
        else:
            used.add(id(partner))
            pairs.append((play, partner))
    known_pairs = len(pairs)
    for play in unknown:
        if play.at == UNDATED:
            undated_ours.append(play)
            continue
        partner = _same_viewing(play, by_item.get(play.item, ()), used)
        if partner is None:
            near.append(play)
        else:
            used.add(id(partner))
            pairs.append((play, partner))
    for play in near:
        best: Play | None = None
        best_gap = MATCH_WINDOW
        for other in by_item.get(play.item, ()):
            if other.at == UNDATED or id(other) in used:
                continue
            gap = abs(other.at - play.at)
            if gap <= best_gap and (best is None or gap < best_gap):
                best, best_gap = other, gap
        if best is None:
            lonely_ours.append(play)
            continue
        used.add(id(best))
        pairs.append((play, best))
    # Undated plays of ours take what is left of the item on their side (earliest first);
    # lonely plays of ours may still be taken by an undated play of theirs.
    still_lonely: list[Play] = []
    for play in undated_ours + lonely_ours:
        rest = [
            o
            for o in by_item.get(play.item, ())
            if id(o) not in used
            and (play.at == UNDATED or o.at == UNDATED)
            and (stands_for is None or stands_for(play, o))
        ]
        if not rest:
            still_lonely.append(play)
            continue
        partner = min(rest, key=lambda o: (o.at != UNDATED, o.at))
        used.add(id(partner))
        pairs.append((play, partner))
    lonely_theirs = [p for group in by_item.values() for p in group if id(p) not in used]
    # A first run's pair days apart is this link's alone: the household's other links (and
    # webhooks) copy each of its two plays as a viewing of its own, so each side comes to
    # hold the other's play too, at its time. Such a copy is that viewing, not a new one:
    # copied back, it was set a few minutes apart there and went round the other links again,
    # every run without end.
    far_ours, far_theirs = _days_apart(pairs[:known_pairs])
    if far_ours:
        still_lonely = [p for p in still_lonely if not _copy_of(p, far_theirs)]
        lonely_theirs = [p for p in lonely_theirs if not _copy_of(p, far_ours)]
    return pairs, still_lonely, lonely_theirs


def _days_apart(
    pairs: Iterable[tuple[Play, Play]],
) -> tuple[dict[str, list[Play]], dict[str, list[Play]]]:
    """The plays of `pairs` (ours, theirs) whose partner is not dated as they are, by item."""
    apart = [(o, t) for o, t in pairs if UNDATED not in (o.at, t.at) and not _same_time(o, t)]
    return _by_item(o for o, _ in apart), _by_item(t for _, t in apart)


def _copy_of(play: Play, days_apart: Mapping[str, list[Play]]) -> bool:
    """Whether `play` is dated as one of `days_apart` of its item (within SAME_VIEWING: a
    copy carries its source's time, to the minute the target keeps)."""
    return play.at != UNDATED and any(
        _same_time(play, other) for other in days_apart.get(play.item, ())
    )


def _same_time(play: Play, other: Play) -> bool:
    return abs(play.at - other.at) < SAME_VIEWING


def _known_partner(
    play: Play, record: str | None, by_item: Mapping[str, list[Play]], used: set[int]
) -> Play | None:
    """The play of `play`'s item with the other side's `record`, if still there and free."""
    if record is None:
        return None
    return next(
        (p for p in by_item.get(play.item, ()) if p.record == record and id(p) not in used),
        None,
    )


def first_run_pairs(
    ours: Iterable[Play], theirs: Iterable[Play]
) -> tuple[list[tuple[Play, Play]], list[Play], list[Play]]:
    """On a link's first run, the plays left without a partner on each side (`match_plays`)
    paired one for one, nearest first, when they are of one item and within FIRST_RUN_WINDOW
    (dated ones only): one viewing, logged on one side days after the other.

    Returns (pairs, ours still without a partner, theirs still without a partner)."""
    ours, theirs = list(ours), list(theirs)
    by_item: dict[str, list[int]] = defaultdict(list)
    for m, other in enumerate(theirs):
        if other.at != UNDATED:
            by_item[other.item].append(m)
    close = sorted(
        (abs(mine.at - theirs[m].at), n, m)
        for n, mine in enumerate(ours)
        if mine.at != UNDATED
        for m in by_item.get(mine.item, ())
        if abs(mine.at - theirs[m].at) <= FIRST_RUN_WINDOW
    )
    pairs: list[tuple[Play, Play]] = []
    taken_ours: set[int] = set()
    taken_theirs: set[int] = set()
    for _, n, m in close:
        if n not in taken_ours and m not in taken_theirs:
            taken_ours.add(n)
            taken_theirs.add(m)
            pairs.append((ours[n], theirs[m]))
    rest_ours = [p for n, p in enumerate(ours) if n not in taken_ours]
    rest_theirs = [p for m, p in enumerate(theirs) if m not in taken_theirs]
    return pairs, rest_ours, rest_theirs


def _same_viewing(play: Play, others: Iterable[Play], used: set[int]) -> Play | None:
    """The closest of `others` within SAME_VIEWING of `play` (undated ones never)."""
    close = [
        other
        for other in others
        if other.at != UNDATED and abs(other.at - play.at) < SAME_VIEWING and id(other) not in used
    ]
    return min(close, key=lambda other: abs(other.at - play.at), default=None)


def flag_limits(
    ours: Side, theirs: Side, ours_before: Side, theirs_before: Side
) -> Callable[[Play, Play], bool]:
    """Whether our play and theirs (one of them undated, a watched flag) may be one viewing:
    a flag stands for an undated play, for a play dated no later than the flag was first read
    (`Side.first_seen`), or for one the other side held already at the last run (what it may
    have stood for then); never for a viewing after it, such as the next viewing of an
    episode whose diary entry was deleted on Serializd and its tick left. A flag its side did
    not hold at the last run stands for any play: both came up since that run, in an order no
    date tells (a tick made while Plex, its clock a minute ahead, dates the play after the
    read; each would otherwise be copied to the other side as a viewing of its own)."""
    held_by_ours = {p.record for p in ours_before.plays}
    held_by_theirs = {p.record for p in theirs_before.plays}

    def flag_stands_for(
        flag: Play, seen: Mapping[str, float], flags_held: set[str], play: Play, held: set[str]
    ) -> bool:
        since = seen.get(flag.record)
        return (
            play.at == UNDATED
            or since is None
            or flag.record not in flags_held
            or play.at <= since
            or play.record in held
        )

    def stands_for(mine: Play, other: Play) -> bool:
        if mine.at == UNDATED:
            return flag_stands_for(mine, ours.first_seen, held_by_ours, other, held_by_theirs)
        return flag_stands_for(other, theirs.first_seen, held_by_theirs, mine, held_by_ours)

    return stands_for


def with_first_seen(
    current: Mapping[str, Side], baseline: Mapping[str, Side], read_at: Mapping[str, float]
) -> dict[str, Side]:
    """`current` with when each side's undated plays were first read (`Side.first_seen`): as
    the baseline keeps it, else when this run read the side (`read_at`: read for the first
    time, or kept by a release before this record). Pure."""
    sides: dict[str, Side] = {}
    for service, side in current.items():
        before, now = baseline.get(service, Side()).first_seen, read_at[service]
        seen = {p.record: before.get(p.record, now) for p in side.plays if p.at == UNDATED}
        sides[service] = replace(side, first_seen=seen)
    return sides


def plan(
    link: Link,
    current: Mapping[str, Side],
    baseline: Mapping[str, Side],
    tombstones: frozenset[tuple[str, str]] = frozenset(),
    done_at: Mapping[tuple[str, str], float] = MappingProxyType({}),
    holding: bool = False,
    hold: str = "",
    first_run: bool = False,
    paired: Sequence[SameViewing] = (),
    kept_off: Collection[tuple[str, str]] = frozenset(),
    unchecked: Collection[str] = (),
    copying: Collection[tuple[str, str, int]] = frozenset(),
    restored: bool = False,
    on_their_way: Mapping[tuple[str, str], Sequence[float]] = MappingProxyType({}),
) -> Plan:
    """The writes that bring both sides of `link` into agreement, each with its reason.
    `tombstones`: (service, record) of removals made; `done_at`: those whose removal a run
    saw done (its record absent from its side), and when. A record read again after that is a
    new play (a Serializd tick ticked again: its record names the episode), unless it is an id
    given to one play only (`given_once`). `holding`: an earlier run held removals for
    confirmation; every removal waits until one is confirmed or none is left. `hold`: a
    reason every removal of this run waits, whatever its share (see `guard.removals_held`).
    `first_run`: the two sides meet for the first time (see FIRST_RUN_WINDOW); `paired`: the
    plays earlier first runs took for one viewing (`Plan.paired` as saved). `kept_off`:
    (target, record) of plays the user keeps off that target (`deadletters discard
    --for-good`, whose record is the play's on the other side): never added there.
    `unchecked`: the sides `hold` is for (read no dated play while their account is not
    checked yet): with `hold`, the plays they would add to the other side (undated ones: those
    tell nothing of whose the account is, `accounts.read_empty`) and the ratings they would
    set there wait with the removals, for the same reason (that account may be another
    person's, and what it holds is no more the user's than its empty history is the user's
    removals; newest-wins, its ratings would overwrite the user's own). `copying`: (target,
    item, value) of the link's rating copies queued and not delivered (see `_winner`).
    `restored`: the database was put back from a backup copy since `baseline` was saved: the
    plays new on both sides since it are paired as a first run pairs them (nothing else of a
    first run: the baseline still tells removals). `on_their_way`: the plays webhooks queued
    for a side that have not landed, as `without_waiting` takes them (which leaves out the
    copies they stand for): a play of the other side recorded twice there within minutes
    (an old tool's duplicate) is one viewing, that row's, and its second record is not
    copied (`Plan.held_twice`)."""
    actions: list[Action] = []
    new_tombstones: set[tuple[str, str]] = set()
    renumbered: set[tuple[str, str]] = set()
    spent: set[tuple[str, str]] = set()
    same_viewing: list[SameViewing] = []
    held_twice: Counter[str] = Counter()
    handed: list[SameViewing] = []
    allowed = set(flows(link))
    if "history" in link.kinds:
        history = _History(paired, first_run, same_viewing, restored, handed)
        actions += _plan_history(
            link,
            current,
            baseline,
            tombstones,
            allowed,
            new_tombstones,
            renumbered,
            done_at,
            spent,
            history,
            kept_off,
            held_twice,
            on_their_way,
        )
    if "ratings" in link.kinds:
        actions += _plan_ratings(link, current, baseline, allowed, copying)
    actions, left_out, void, shows_apart = _within_catalogs(actions, current, renumbered)
    new_tombstones -= {(a.target, a.record) for a in void}  # nothing removed: nothing to keep
    wait_on = frozenset(_other(link, side) for side in unchecked) if hold else frozenset()
    held = _mass_removal(link, current, actions, holding, hold, wait_on)
    held = _with_copies_held(held, actions, link, wait_on, hold)
    kept = tuple(pair for pair in paired if _still_known(pair, current, baseline))
    return Plan(
        tuple(actions),
        frozenset(new_tombstones),
        held,
        left_out,
        frozenset(spent),
        tuple(same_viewing),
        kept + tuple(handed) + tuple(same_viewing),
        wait_on,
        shows_apart,
        dict(held_twice),
    )


def _other(link: Link, side: str) -> str:
    a, b = link.services[0], link.services[1]
    return b if side == a else a


def _with_copies_held(
    held: str, actions: Sequence[Action], link: Link, wait_on: Collection[str], hold: str
) -> str:
    """`held` (why removals wait, or "") saying the plays and ratings that wait with them
    because they come from an account not checked yet (copied to the sides `wait_on`, for
    `hold`)."""
    said = []
    with_them = " with them" if held else ""
    for target in sorted(wait_on):
        source = _other(link, target)
        adds = [a for a in actions if a.kind == "add_play" and a.target == target]
        if adds:
            count = len(adds)
            undated = "undated " if all(a.at == UNDATED for a in adds) else ""
            said.append(
                f"{count} {undated}play{'s' if count > 1 else ''} from {source} would be added "
                f"to {target}{with_them}"
            )
        sets = [a for a in actions if a.kind == "set_rating" and a.target == target]
        if not sets:
            continue
        count = len(sets)
        text = f"{count} rating{'s' if count > 1 else ''} from {source} would be set on {target}"
        text += with_them
        over = sum(1 for a in sets if a.source.startswith("over:"))  # the target rated it too
        if over:
            text += f", {over} of them" if count > 1 else ","
            text += f" over {target}'s own"
        said.append(text)
    if not said:
        return held
    if held:
        return f"{held.removesuffix(f'; {CONFIRM}')}; {'; '.join(said)}; {CONFIRM}"
    return f"{'; '.join(said)} ({hold}); {CONFIRM}"


@dataclass(frozen=True)
class _History:
    """What `_plan_history` knows of first runs, and where it puts the pairs it takes."""

    paired: Sequence[SameViewing]
    first_run: bool
    taken: list[SameViewing]
    restored: bool = False  # pairs as a first run, the plays new since the baseline only
    # Pairs days apart a tidied-away duplicate's record handed to the one left beside it
    # (`_tidied_away`): remembered as `paired`, not listed as taken by a first run.
    handed: list[SameViewing] = field(default_factory=list)

    def known(
        self, source: str, target: str, sides: Mapping[str, Side] | None = None
    ) -> dict[str, str]:
        """Source record -> target record of the remembered pairs; with `sides` (the two as
        read), not those each side holds a copy of the other's play beside (`_outgrown`)."""
        known: dict[str, str] = {}
        by_item: dict[str, dict[str, list[Play]]] = {}
        if sides is not None and self.paired:
            by_item = {service: _by_item(sides[service].plays) for service in (source, target)}
        for pair in self.paired:
            mine, theirs = pair.plays.get(source), pair.plays.get(target)
            if mine is None or theirs is None:
                continue
            if by_item and _outgrown(mine, theirs, by_item[source], by_item[target]):
                continue
            known[mine.record] = theirs.record
        return known


def _by_item(plays: Iterable[Play]) -> dict[str, list[Play]]:
    grouped: dict[str, list[Play]] = defaultdict(list)
    for play in plays:
        grouped[play.item].append(play)
    return grouped


def _outgrown(
    mine: Play,
    theirs: Play,
    my_side: Mapping[str, list[Play]],
    their_side: Mapping[str, list[Play]],
) -> bool:
    """Whether a pair days apart is held as two viewings now: each side (its plays by item)
    holds a play dated as the other's play of the pair (other links copied each as a viewing
    of its own). Each play is then the viewing its copy is: kept as one, a removal of one took
    the other's viewing along and left its own copy behind, to be copied back."""

    def beside(play: Play, side: Mapping[str, list[Play]], own: Play) -> bool:
        return any(p.record != own.record and _same_time(p, play) for p in side.get(play.item, ()))

    return beside(theirs, my_side, mine) and beside(mine, their_side, theirs)


def _still_known(
    pair: SameViewing, current: Mapping[str, Side], baseline: Mapping[str, Side]
) -> bool:
    """Whether a side holds one of the pair's plays, or held it last time (its removal is
    still to be carried across, or waits for confirmation)."""
    for service, play in pair.plays.items():
        for sides in (current, baseline):
            side = sides.get(service)
            if side is not None and any(p.record == play.record for p in side.plays):
                return True
    return False


def without_waiting(plan: Plan, waiting: Mapping[tuple[str, str], Sequence[float]]) -> Plan:
    """The plan without the play adds that a delivery already waiting will make.

    `waiting`: (target, item) -> times of plays a webhook queued for the target that have not
    landed yet, so the target's read does not show them. Each stands for the add of its item
    within SAME_VIEWING, else the nearest within MATCH_WINDOW (an undated add: any one left);
    the others stay. (As in `match_plays`: an add a few hours away must not take the place of
    the play itself.)"""
    if not waiting:
        return plan
    adds = [(n, a) for n, a in enumerate(plan.actions) if a.kind == "add_play"]
    carried = _carried([((a.target, a.item), a.at) for _, a in adds], waiting)
    dropped = {adds[m][0] for m in carried}
    actions = tuple(a for n, a in enumerate(plan.actions) if n not in dropped)
    return replace(plan, actions=actions)


def _carried(
    plays: Sequence[tuple[tuple[str, str], float]],
    waiting: Mapping[tuple[str, str], Sequence[float]],
) -> set[int]:
    """The indexes of `plays` ((target, item), time) that a webhook's play on its way
    (`waiting`, as `without_waiting` takes it) stands for: each waiting play the one of its
    key within SAME_VIEWING, else one within MATCH_WINDOW (an undated one: any one left),
    nearest first, as `match_plays` pairs (not the first listed: a waiting play hours from
    an older viewing and a minute from its own is its own). Pure."""
    slots = [(key, t) for key, times in waiting.items() for t in sorted(times)]
    of_key: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for s, (key, _) in enumerate(slots):
        of_key[key].append(s)
    free = set(range(len(slots)))
    taken: set[int] = set()
    for same in (True, False):
        near = sorted(
            (abs(slots[s][1] - at) if at != UNDATED else float("inf"), n, s)
            for n, (key, at) in enumerate(plays)
            if n not in taken
            for s in of_key.get(key, ())
            if s in free
            and (
                at != UNDATED and abs(slots[s][1] - at) < SAME_VIEWING
                if same
                else at == UNDATED or abs(slots[s][1] - at) <= MATCH_WINDOW
            )
        )
        for _, n, s in near:
            if n not in taken and s in free:
                taken.add(n)
                free.discard(s)
    return taken


def without_webhook_ratings(plan: Plan, waiting: Collection[tuple[str, str, int]]) -> Plan:
    """The plan without the rating copies that a webhook's rating row still on its way to the
    same target carries (`waiting`: target, item, value): the target's read does not show it
    yet. Queued, the copy is one write too many; and where the webhook's row names the item by
    other ids than a link does (`MediaRef.order_key`), the two do not take turns: landing after
    a newer change there (the rating cleared), it would undo it."""
    if not waiting:
        return plan

    def carried(action: Action) -> bool:
        return action.kind == "set_rating" and (action.target, action.item, action.value) in waiting

    return replace(plan, actions=tuple(a for a in plan.actions if not carried(a)))


def without_copies_back(plan: Plan, removing: Collection[tuple[str, str, float | None]]) -> Plan:
    """The plan without rating copies of an item whose rating removal is queued for the side
    it would be copied from (`removing`: (target, item, queued at) of those removals): that
    side still shows the rating until the removal lands, and copying it back would undo it.
    A removal that died (queued at: when) holds back only ratings as old as it: one given
    since is the user's new rating."""
    if not removing:
        return plan

    def copied_back(action: Action) -> bool:
        return action.kind == "set_rating" and any(
            item == action.item
            and target != action.target
            and (since is None or action.at <= since)
            for target, item, since in removing
        )

    return replace(plan, actions=tuple(a for a in plan.actions if not copied_back(a)))


def _within_catalogs(
    actions: list[Action], current: Mapping[str, Side], renumbered: set[tuple[str, str]]
) -> tuple[list[Action], dict[str, int], list[Action], dict[str, int]]:
    """Adds and ratings for items their target cannot hold are left out (and counted, but
    for those none of its business, `Side.left_alone`, and apart for whole shows' ratings it
    takes by season only, `Side.shows_rated_apart`):
    planning them every run would only ever end in "not in any library"; so are episode
    ratings for a side that rates no episode (not counted: no item is missing there). A play
    or rating "removed" from a side that cannot hold its item (an add it skipped, then read as
    gone; a title that left its libraries) takes nothing from the other side; unless the play
    is still there, keyed as another episode (`renumbered`: the removals it makes, by target
    and record).

    Returns the actions kept, the adds left out per target, the removals dropped, and the
    show ratings left out per target."""
    kept: list[Action] = []
    left_out: defaultdict[str, int] = defaultdict(int)
    shows_apart: defaultdict[str, int] = defaultdict(int)
    void: list[Action] = []
    for action in actions:
        target = current[action.target]
        catalog = target.catalog
        adding = action.kind in ("add_play", "set_rating")
        if action.kind == "set_rating" and not target.rates_episodes and _episode(action.item):
            continue  # nothing it could hold: not counted as an item it lacks
        if adding and catalog is not None and action.item not in catalog:
            if action.item in target.shows_rated_apart:
                shows_apart[action.target] += 1
            elif action.item not in target.left_alone:
                left_out[action.target] += 1
        elif (
            action.kind in ("remove_play", "remove_rating")
            and (action.target, action.record) not in renumbered
            and not _could_hold(action, current)
        ):
            void.append(action)
        else:
            kept.append(action)
    return kept, dict(left_out), void, dict(shows_apart)


def _episode(item: str) -> bool:
    """Whether an item key names an episode (`sides.episode_key`)."""
    return item.startswith("episode:")


def _could_hold(removal: Action, current: Mapping[str, Side]) -> bool:
    """Whether the side a removal comes from could hold the removed item."""
    sources = [side for name, side in current.items() if name != removal.target]
    return all(side.catalog is None or removal.item in side.catalog for side in sources)


def _plan_history(
    link: Link,
    current: Mapping[str, Side],
    baseline: Mapping[str, Side],
    tombstones: frozenset[tuple[str, str]],
    allowed: set[tuple[str, str]],
    new_tombstones: set[tuple[str, str]],
    renumbered: set[tuple[str, str]],
    done_at: Mapping[tuple[str, str], float],
    spent: set[tuple[str, str]],
    history: _History,
    kept_off: Collection[tuple[str, str]],
    held_twice: Counter[str],
    on_their_way: Mapping[tuple[str, str], Sequence[float]],
) -> list[Action]:
    a, b = link.services[0], link.services[1]
    actions: list[Action] = []
    matched, only_a, only_b = match_plays(
        current[a].plays,
        current[b].plays,
        history.known(a, b, current),
        flag_limits(current[a], current[b], baseline.get(a, Side()), baseline.get(b, Side())),
    )
    # The plays each side holds with a partner on the other side: a play of their side at
    # their minute is a second record of their viewing (`_second_records`). A removal takes
    # none whose partner is at its very time (certainly the record of a viewing still
    # there); one paired days apart may be the copy of the removed play too.
    partnered = {a: {p.record for p, _ in matched}, b: {q.record for _, q in matched}}
    dated = [(p, q) for p, q in matched if UNDATED not in (p.at, q.at) and one_play(p.at, q.at)]
    standing = {a: {p.record for p, _ in dated}, b: {q.record for _, q in dated}}
    # (survivor, its partner) of the viewings whose record that paired them was tidied away.
    handover: dict[str, list[tuple[Play, Play | None]]] = {a: [], b: []}
    # A play we removed ourselves (its tombstone) is no new removal to carry back.
    removed = {
        side: [
            p
            for p in _removed(baseline.get(side, Side()).plays, current[side])
            if (side, p.record) not in tombstones
        ]
        for side in (a, b)
    }
    # A play one side removed takes its partner on the other side with it (where allowed),
    # and that partner must not count as "new" and be copied back.
    partners_of_removed: dict[str, set[str]] = {a: set(), b: set()}
    for source, target in ((a, b), (b, a)):
        renumbered_now = current[source].renumbered
        moved_now = redated(baseline.get(source, Side()).plays, current[source])
        gone_plays = [p for p in removed[source] if p.record not in renumbered_now]
        # An old tool's second record of a viewing tidied away (or the record its second
        # one stays beside): the viewing is still there, its partner stays.
        tidied = _tidied_away(
            gone_plays,
            current[source].plays,
            baseline.get(source, Side()).plays,
            baseline.get(target, Side()).plays,
            history.known(source, target),
        )
        gone_plays = [p for p in gone_plays if p.record not in tidied]
        for survivor, partner in tidied.values():
            handover[source].append((survivor, partner))
        known = history.known(source, target, current)
        free = [p for p in current[target].plays if p.record not in standing[target]]
        pairs, _, _ = match_plays(gone_plays, free, known)
        pairs += _copies_going_along(pairs, current[source].plays, current[target].plays, known)
        pairs += _unwatched_partners(gone_plays, current[target].plays, pairs)
        pairs += _second_records_going_along(
            pairs, free, [p for p in current[source].plays if p.record not in standing[source]]
        )
        watched = {p.item for p in current[source].plays}
        marks_along = _marks_going_along(pairs, free, current[target].marks, watched)
        pairs += marks_along
        # A plan lists a mark taken along undated beside the viewing's copy: said as such,
        # or one deletion reads as two plays removed for no reason.
        a_mark = {id(mark) for _, mark in marks_along}
        copies = _copies_of_renumbered(
            [p for p in removed[source] if p.record in renumbered_now],
            current[target].plays,
            {partner.record for _, partner in pairs},
        )
        for gone, partner in pairs + copies:
            partners_of_removed[target].add(partner.record)
            if partner.at == UNDATED and gone.at != UNDATED and gone.item in watched:
                # One viewing gone while others remain: the item is still watched, so its
                # undated partner (a tick) stays, and is not copied back either.
                new_tombstones.add((target, partner.record))
            elif partner.record.startswith(ABSORBED):
                # AniList counted that viewing within its progress without a write: taking it
                # away would lower the progress the other viewings make (a duplicate tidied
                # away on Trakt un-completed the entry, then took the real play with it).
                new_tombstones.add((target, partner.record))
            elif gone.record.startswith(ABSORBED) and (source, target) in allowed:
                # The other way: an entry deleted on AniList takes the viewing it counted, not
                # the other side's extra viewings it held within that count (nor are they
                # copied back to it).
                new_tombstones.add((target, partner.record))
            elif (source, target) in allowed:
                actions.append(
                    Action(
                        "remove_play",
                        target,
                        partner.item,
                        (MARK_GOING if id(partner) in a_mark else "")
                        + f"removed on {source}{GONE_ALSO.get(source, '')}",
                        partner.at,
                        record=partner.record,
                        source=_removal_source(gone, partner),
                    )
                )
                new_tombstones.add((target, partner.record))
                if gone.record in renumbered_now:
                    renumbered.add((target, partner.record))
            else:
                # Not carried by this run (one way the other way): no tombstone, so that a
                # later run still finds the removal, and does not take it for a new play.
                continue
            if gone.record not in renumbered_now and gone.record not in moved_now:
                # (A play moved to another day is still there: its new date is copied as a
                # new play, and a later removal of it must still be carried.)
                new_tombstones.add((source, gone.record))
        if (source, target) in allowed:
            for flag in _left_behind(gone_plays, baseline.get(source, Side()), current[source]):
                partners_of_removed[source].add(flag.record)
                new_tombstones.add((source, flag.record))

    def gone_or_removed(source: str, play: Play) -> bool:
        """A play going with a removal, or one we removed: no new play to copy."""
        stone = (source, play.record)
        return play.record in partners_of_removed[source] or (
            stone in tombstones and (stone not in done_at or given_once(play.record))
        )

    # A pair days apart whose record on one side was tidied away: the second record left
    # there is that viewing, remembered with its partner as the pair was.
    alone = {a: {p.record: p for p in only_a}, b: {p.record: p for p in only_b}}
    for side in (a, b):
        other = b if side == a else a
        for survivor, partner in handover[side]:
            if partner is None or survivor.record not in alone[side]:
                continue
            if (now := alone[other].pop(partner.record, None)) is None:
                continue
            del alone[side][survivor.record]
            history.handed.append(SameViewing(survivor.item, {side: survivor, other: now}))
    only_a = [p for p in only_a if p.record in alone[a]]
    only_b = [p for p in only_b if p.record in alone[b]]
    # A second record of a viewing the other side holds (an old tool's duplicate) is no
    # viewing of its own: neither paired as one by a first run nor copied.
    seconds = _second_records(only_a, current[a], partnered[a])
    seconds |= _second_records(only_b, current[b], partnered[b])
    _count_left(held_twice, a, only_a, seconds, gone_or_removed)
    _count_left(held_twice, b, only_b, seconds, gone_or_removed)
    only_a = [p for p in only_a if p.record not in seconds | current[a].second_marks]
    only_b = [p for p in only_b if p.record not in seconds | current[b].second_marks]
    if history.first_run or history.restored:
        # After a restore, only plays new since the baseline: one it holds that is left
        # without a partner (a link one way only, a play kept off) stays so.
        held_before: dict[str, set[str]] = {a: set(), b: set()}
        if not history.first_run:
            held_before = {s: {p.record for p in baseline.get(s, Side()).plays} for s in (a, b)}

        def pairable(side: str, play: Play) -> bool:
            return not gone_or_removed(side, play) and play.record not in held_before[side]

        days_apart, _, _ = first_run_pairs(
            [p for p in only_a if pairable(a, p)], [p for p in only_b if pairable(b, p)]
        )
        history.taken.extend(SameViewing(p.item, {a: p, b: other}) for p, other in days_apart)
        taken = {id(play) for pair in days_apart for play in pair}
        only_a = [p for p in only_a if id(p) not in taken]
        only_b = [p for p in only_b if id(p) not in taken]
        for side, lonely, index in ((a, only_a, 0), (b, only_b, 1)):
            partners = {pair[index].record for pair in days_apart}
            seconds = _second_records(lonely, current[side], partners)
            _count_left(held_twice, side, lonely, seconds, gone_or_removed)
            lonely[:] = [p for p in lonely if p.record not in seconds]
    waiting = current[a].held | current[b].held
    for source, target, lonely in ((a, b, only_a), (b, a, only_b)):
        if (source, target) not in allowed:
            continue
        copied = [
            p
            for p in lonely
            if not gone_or_removed(source, p)
            and (target, p.record) not in kept_off
            and p.item not in current[target].unlisted
            and p.item not in waiting
        ]
        # A webhook's play on its way to the target stands for one of them: the others
        # within its minutes are that viewing's second records on this side.
        seconds = _second_records_on_their_way(copied, target, on_their_way, current[source].logged)
        if seconds:
            held_twice[source] += len(seconds)
        held = _read_plays_per_item(current[target].plays)
        again = {(p.item, int(p.at // 60)) for p in current[target].forgotten}
        dates: defaultdict[str, list[float]] = defaultdict(list)
        for play in current[target].plays:
            if play.record not in partners_of_removed[target]:  # going: not watched before
                dates[play.item].append(play.at)
        for play in copied:
            if play.record in seconds:
                continue
            stone = (source, play.record)
            held[play.item] += 1
            at = apart_from(play.at, dates[play.item])
            # By its own time: a copy set apart earlier is still the later viewing there.
            earlier = sum(1 for when in dates[play.item] if when <= play.at or when == UNDATED)
            dates[play.item].append(at)
            # Forgotten by the target, or read again since its removal: a new action, its own
            # key (one per removal: a tick may be unticked and ticked again many times).
            suffix = ":again" if (play.item, int(play.at // 60)) in again else ""
            if stone in done_at:
                suffix += f":again:{int(done_at[stone] * 1000)}"
                spent.add(stone)
            actions.append(
                Action(
                    "add_play",
                    target,
                    play.item,
                    f"new on {source}",
                    at,
                    source=play.record + suffix,
                    target_plays=held[play.item] - 1,
                    earlier_plays=earlier,
                )
            )
    return actions


def _second_records(lonely: Iterable[Play], side: Side, partnered: Collection[str]) -> set[str]:
    """Records of the `lonely` plays (without a partner on the other side) that a play of
    their `side` with a partner there is within the duplicate window of (`recorded_twice`):
    one viewing recorded twice on that side (an old tool's duplicate, posted again), which the
    other side holds once already. Copied, it would be a second play there of one viewing
    (Trakt keys a play by its minute: trakt-api#876). Dated plays only. Pure."""
    held = _by_item(p for p in side.plays if p.record in partnered and p.at != UNDATED)
    return {
        p.record
        for p in lonely
        if p.at != UNDATED and any(recorded_twice(p, o, side.logged) for o in held.get(p.item, ()))
    }


def _second_records_on_their_way(
    plays: Sequence[Play],
    target: str,
    on_their_way: Mapping[tuple[str, str], Sequence[float]],
    logged: Mapping[str, float],
) -> set[str]:
    """Records of `plays` (to be copied to `target`) within the duplicate window of one that
    a webhook's play on its way there stands for (`_carried`, as `without_waiting` takes
    that one's copy out), told by `recorded_twice` (`logged`: their side's `Side.logged`):
    one viewing recorded twice on their side (an old tool's duplicate), which the target is
    to hold once, by that webhook's row, as it would by one already there
    (`_second_records`). Dated plays only. Pure."""
    carried = _carried([((target, p.item), p.at) for p in plays], on_their_way)
    if not carried:
        return set()
    held = _by_item(plays[n] for n in carried if plays[n].at != UNDATED)
    return {
        p.record
        for n, p in enumerate(plays)
        if n not in carried
        and p.at != UNDATED
        and any(recorded_twice(p, o, logged) for o in held.get(p.item, ()))
    }


def _count_left(
    counted: Counter[str],
    side: str,
    lonely: Iterable[Play],
    seconds: Collection[str],
    going: Callable[[str, Play], bool],
) -> None:
    """Count in `counted` the plays of `side` among `lonely` that are `seconds` (second
    records, `_second_records`) left as they are: not those `going` with a removal."""
    left = sum(1 for p in lonely if p.record in seconds and not going(side, p))
    if left:
        counted[side] += left


def _tidied_away(
    gone: Sequence[Play],
    present: Iterable[Play],
    before: Iterable[Play],
    other_before: Iterable[Play],
    known: Mapping[str, str],
) -> dict[str, tuple[Play, Play | None]]:
    """Gone record -> (the play of its side left in its place, the other side's play the
    pair held at the last run, if any) for the `gone` plays that were one of two records of
    one viewing on their side (`one_play`) while the other side held it once: the gone one
    or the one left had no partner at the last run (`_second_records`). Tidying an old
    tool's duplicate away, whichever of the two, takes nothing from the other side, however
    far from them the other side dates the viewing. Pure."""
    beside = _by_item(p for p in present if p.at != UNDATED)
    near = {
        g.record: [p for p in beside.get(g.item, ()) if one_play(p.at, g.at)]
        for g in gone
        if g.at != UNDATED
    }
    items = {g.item for g in gone if near.get(g.record)}
    if not items:
        return {}
    pairs, _, _ = match_plays(
        [p for p in before if p.item in items], [p for p in other_before if p.item in items], known
    )
    partner_of = {p.record: q for p, q in pairs}
    tidied: dict[str, tuple[Play, Play | None]] = {}
    for play in gone:
        left = near.get(play.record) or []
        seconds = [p for p in left if p.record not in partner_of]
        if play.record not in partner_of and left:
            tidied[play.record] = (min(left, key=lambda p: abs(p.at - play.at)), None)
        elif seconds:
            survivor = min(seconds, key=lambda p: abs(p.at - play.at))
            tidied[play.record] = (survivor, partner_of[play.record])
    return tidied


def _second_records_going_along(
    pairs: Sequence[tuple[Play, Play]], free: Iterable[Play], present: Iterable[Play]
) -> list[tuple[Play, Play]]:
    """(gone play, record) for the plays of `free` (the target's without a partner at their
    time) that are second records of a removed play's partner (`_second_records`) and that
    none of the plays `present` on the removed play's side (without a partner at their time)
    is left to pair with: the viewing removed, they go with it, rather than be copied back
    as a viewing of its own."""
    taken = {id(partner) for _, partner in pairs}
    by_item = _by_item(p for p in free if p.at != UNDATED and id(p) not in taken)
    going: list[tuple[Play, Play]] = []
    left: dict[str, list[Play]] | None = None
    for gone, partner in pairs:
        if partner.at == UNDATED:
            continue
        seconds = [p for p in by_item.get(partner.item, ()) if one_play(p.at, partner.at)]
        if not seconds:
            continue
        left = _by_item(present) if left is None else left
        _, _, alone = match_plays(left.get(partner.item, ()), by_item[partner.item])
        for play in seconds:
            if any(play is other for other in alone):
                by_item[partner.item].remove(play)
                going.append((gone, play))
    return going


def _marks_going_along(
    pairs: Sequence[tuple[Play, Play]],
    free: Iterable[Play],
    marks: Collection[str],
    watched: Collection[str],
) -> list[tuple[Play, Play]]:
    """(gone play, mark) for the target's plays marked "watched on release date" (`marks`,
    read undated) left in `free` of an episode the removed play's side holds no play of any
    more (`watched`: its items), one per removed play: a second record of the removed viewing
    (`Side.second_marks`: on Trakt the mark and the copy are one viewing), it goes with it
    rather than be copied back as a viewing of its own. Where that side still holds a play of
    the episode, the mark stays, standing for that one (as an undated partner does)."""
    taken = {id(partner) for _, partner in pairs}
    left = _by_item(
        p
        for p in sorted(free, key=lambda p: p.record)
        if p.at == UNDATED and p.record in marks and id(p) not in taken
    )
    going: list[tuple[Play, Play]] = []
    done: set[int] = set()
    for gone, _ in pairs:
        if gone.item in watched or id(gone) in done or not left.get(gone.item):
            continue
        done.add(id(gone))
        going.append((gone, left[gone.item].pop(0)))
    return going


def _copies_going_along(
    pairs: Sequence[tuple[Play, Play]],
    present: Iterable[Play],
    target: Iterable[Play],
    known: Mapping[str, str],
) -> list[tuple[Play, Play]]:
    """(gone play, copy) for the plays of `target` dated as a gone play whose remembered
    partner days apart goes with it: copies of that viewing another link made (`match_plays`
    counts them neither new nor paired). Left behind, each was copied back to the side the
    user removed the viewing from. Not those a play still on the gone play's side stands
    for."""
    far = [(g, p) for g, p in pairs if known.get(g.record) == p.record and not _same_time(g, p)]
    if not far:
        return []
    items = {gone.item for gone, _ in far}
    taken = {p.record for _, p in pairs}
    target = [p for p in target if p.item in items and p.record not in taken]
    _, _, unclaimed = match_plays([p for p in present if p.item in items], target, known)
    free = {p.record for p in unclaimed}
    copies: list[tuple[Play, Play]] = []
    for gone, _ in far:
        for copy in target:
            if copy.item == gone.item and copy.record in free and _same_time(copy, gone):
                free.discard(copy.record)
                copies.append((gone, copy))
    return copies


def apart_from(at: float, taken: Sequence[float]) -> float:
    """`at`, or the nearest time a few minutes away (later first, on the same day where
    there is one) at which the target does not take the play for one of the item's plays at
    `taken`: two viewings logged with one date are both copied, the second after the first.
    Days are the machine's local ones (`TZ`; Serializd shows a diary entry's date), and the
    time chosen is on `at`'s day (one way or the other a free minute is there, short of
    hundreds of the item's plays within hours of midnight)."""
    if at == UNDATED:
        return at
    minutes = [int(when // 60) for when in taken if when != UNDATED]

    def free(when: float) -> bool:
        return all(abs(int(when // 60) - m) > DUPLICATE_WINDOW_MINUTES for m in minutes)

    if free(at):
        return at
    step = (DUPLICATE_WINDOW_MINUTES + 1) * 60
    # A play held rules out at most two steps each way: this far, one is free on each side of
    # `at`, so one on its day (nearest first: the same pick as a shorter search that finds it).
    steps = 2 * len(minutes) + 2
    near = (at + sign * n * step for n in range(1, steps) for sign in (1, -1))
    day, first_free = _local_day(at), None
    for when in near:
        if free(when):
            if _local_day(when) == day:
                return when
            first_free = when if first_free is None else first_free
    assert first_free is not None  # each way, one of the steps is free
    return first_free


def _local_day(at: float) -> tuple[int, int, int]:
    return time.localtime(at)[:3]


def _removal_source(gone: Play, partner: Play) -> str:
    """What makes the removal of `partner` (going with `gone`) one action among others of its
    item (`Action.source`): nothing where the partner's minute or id tells it apart; for an
    undated partner whose record names the item, not one play (a Serializd tick: ticked
    again, copied again and removed again within the week, its second removal would share
    the first one's key and be dropped while the first is kept), the gone play's record."""
    if partner.at != UNDATED or given_once(partner.record):
        return ""
    return gone.record


def given_once(record: str) -> bool:
    """Whether `record` is an id its service gives one play only (a Trakt history entry, a
    Serializd diary entry): read again after its removal was seen done, it is a read lagging
    behind the removal (Trakt's do), not a new play, unlike a tick's record (it names the
    episode)."""
    return record.isdigit()


def _copies_of_renumbered(
    moved: Iterable[Play], target: Iterable[Play], taken: set[str]
) -> list[tuple[Play, Play]]:
    """The plays copied from plays a side has renumbered since (now keyed as other episodes):
    a dated play of the old item at the same minute, as a copy carries its source's time. A
    play matched only by being near (or undated: a tick) may be a real viewing of that
    episode, and stays."""
    by_minute = {(p.item, int(p.at // 60)): p for p in target if p.at != UNDATED}
    copies: list[tuple[Play, Play]] = []
    for play in moved:
        copy = by_minute.get((play.item, int(play.at // 60)))
        if play.at != UNDATED and copy is not None and copy.record not in taken:
            taken.add(copy.record)
            copies.append((play, copy))
    return copies


def _left_behind(gone: Iterable[Play], before: Side, now: Side) -> list[Play]:
    """Undated plays new on a side whose dated plays of the item are all removed, in the same
    read: the watched flag their viewing left (the tick a Serializd diary entry came with,
    still there once the entry is deleted in the app), not a new "watched, date unknown" to
    copy back in place of the removal just carried. A flag named by its item (not an id
    given to one play) is set again only by unsetting it first (a removal, then a new play)."""
    items = {p.item for p in gone if p.at != UNDATED}
    known = {p.record for p in before.plays}
    dated = {p.item for p in now.plays if p.at != UNDATED}
    return [
        p
        for p in now.plays
        if p.at == UNDATED
        and p.item in items
        and p.item not in dated
        and p.record not in known
        and not given_once(p.record)
        and not p.record.startswith(EXPECTED)
    ]


def _read_plays_per_item(plays: Iterable[Play]) -> defaultdict[str, int]:
    """How many plays of each item a side holds, leaving out the ones only queued."""
    counts: defaultdict[str, int] = defaultdict(int)
    for play in plays:
        if not play.record.startswith(EXPECTED):
            counts[play.item] += 1
    return counts


def _removed(before: Iterable[Play], now: Side) -> list[Play]:
    """Plays of the baseline that are gone: their record, or, for a play now renumbered, their
    record under that item, or the play as it was dated before its side moved it to another
    day (`redated`). An undated play is a watched flag: it is gone only when no play of its
    item is left (a diary entry replacing a tick is no removal)."""
    before = list(before)
    present = {p.record for p in now.plays} | {p.record for p in now.forgotten}
    renumbered = {(p.record, p.item) for p in now.plays if p.record in now.renumbered}
    moved = redated(before, now)
    items_now = {p.item for p in now.plays}
    gone = [
        p
        for p in before
        if (
            p.record not in present
            or (p.record in now.renumbered and (p.record, p.item) not in renumbered)
            or p.record in moved
        )
        and not p.record.startswith(EXPECTED)
        and not (p.at == UNDATED and p.item in items_now)
    ]
    # A new record of the item at the very same time is the same play under another name (an
    # AniList entry deleted and added again): no removal, one new record for each gone one.
    known = {p.record for p in before}
    renamed = Counter(
        (p.item, p.at)
        for p in now.plays
        if p.record not in known and p.at != UNDATED and not p.record.startswith(EXPECTED)
    )
    removed = []
    for play in gone:
        if renamed[play.item, play.at] > 0 and play.record not in present:
            renamed[play.item, play.at] -= 1
            continue
        removed.append(play)
    return removed


def redated(before: Iterable[Play], now: Side) -> set[str]:
    """Records of dated plays that `now` holds dated more than MATCH_WINDOW away from the
    baseline's time (a Serializd diary entry whose date the user changed keeps its id): the
    play moved, so its partner on the other side is no longer that viewing. Moved less far,
    the partner still matches it and nothing is written."""
    dated = {p.record: p.at for p in now.plays if p.at != UNDATED}
    return {
        p.record
        for p in before
        if p.at != UNDATED
        and p.record in dated
        and abs(dated[p.record] - p.at) > MATCH_WINDOW
        and not p.record.startswith(EXPECTED)
    }


def removals_kept(
    baseline: Mapping[str, Side],
    current: Mapping[str, Side],
    service: str,
    tombstones: Collection[tuple[str, str]],
    paired: Sequence[SameViewing] = (),
) -> Side:
    """The side `service` as read, with the plays and ratings its `baseline` held that are
    gone from it: the next run's baseline while removals wait for confirmation, so that each
    run finds them gone again while all else moves on (a play copied meanwhile and then
    removed is a removal, not a new play to copy back). Not kept: plays we removed ourselves
    (their tombstones), records read under another item (renumbered), a play logged again
    (`_logged_again`; `paired`: the plays first runs took for one viewing), and a rating the
    other side changed or no longer holds either (no removal of it waits: the rating there is
    the newer one; a copy of it made since is no change). A play moved to another day
    (`redated`) is kept at its old time until its move is applied, and a flag the removed
    plays left (`_left_behind`) is left out until their removal is. Pure."""
    before, now = baseline.get(service, Side()), current[service]
    other = next((s for s in current if s != service), "")
    other_before, other_now = baseline.get(other, Side()), current.get(other, Side())
    records = {p.record for p in now.plays}
    gone = [
        p
        for p in _removed(before.plays, now)
        if p.record not in records and (service, p.record) not in tombstones
    ]
    partners = _History(paired, False, []).known(service, other)
    again = _logged_again(gone, now, {p.record for p in before.plays}, other_now, partners)
    ratings = {
        item: rated
        for item, rated in before.ratings.items()
        if item not in now.renumbered_ratings
        and (
            _same_rating(other_now.ratings.get(item), other_before.ratings.get(item))
            or (
                _copied_from(rated, service, other_now.ratings.get(item), other)
                and item not in other_before.ratings
            )
        )
    }
    kept = tuple(p for p in gone if p.record not in again)
    # A play moved to another day stays where it was until its move (a removal) is applied.
    redated_now = redated(before.plays, now)
    moved = {
        p.record: p
        for p in before.plays
        if p.record in redated_now and (service, p.record) not in tombstones
    }
    # A flag their viewing left (`_left_behind`) stays out while their removal waits: kept,
    # the run that applies the removal would not find it new, tombstone nothing, and the run
    # after would copy it back as an undated play in place of the one just removed.
    left = {p.record for p in _left_behind(gone, before, now)}
    plays = tuple(moved.get(p.record, p) for p in now.plays if p.record not in left)
    return replace(now, plays=plays + kept, ratings={**ratings, **now.ratings})


def _logged_again(
    gone: Sequence[Play],
    now: Side,
    before: set[str],
    other: Side,
    partners: Mapping[str, str] = MappingProxyType({}),
) -> set[str]:
    """Records of `gone` plays logged again on their side: a new record of the item (not in
    the baseline, `before`) that stands for the same viewing on the other side, the play
    there nearest to it being the gone play's partner (a rewatch has its own). The partner is
    the play a first run took for the same viewing (`partners`: record -> the other side's,
    while that side holds it), else the one nearest to the gone play, as in `match_plays`."""
    new = [p for p in now.plays if p.record not in before and p.at != UNDATED]
    held = {p.record: p for p in other.plays}
    again: set[str] = set()
    taken: set[str] = set()
    for play in gone:
        remembered = partners.get(play.record)
        partner = (held.get(remembered) if remembered else None) or _nearest(play, other.plays)
        for candidate in sorted(new, key=lambda p: abs(p.at - play.at)):
            if (
                candidate.item == play.item
                and candidate.record not in taken
                and abs(candidate.at - play.at) <= MATCH_WINDOW
                and partner is not None
                and _nearest(candidate, other.plays) == partner
            ):
                again.add(play.record)
                taken.add(candidate.record)
                break
    return again


def _nearest(play: Play, plays: Iterable[Play]) -> Play | None:
    """The dated play of `play`'s item nearest to it within MATCH_WINDOW, if any."""
    near = [
        p
        for p in plays
        if p.item == play.item and p.at != UNDATED and abs(p.at - play.at) <= MATCH_WINDOW
    ]
    return min(near, key=lambda p: abs(p.at - play.at), default=None)


def _copied_from(rated: Rated, service: str, other: Rated | None, other_service: str) -> bool:
    """Whether the other side's rating, new there since the baseline, is this side's `rated`
    (the copy a run made: its removal here still waits, it is no newer rating there)."""
    return other is not None and ratings.same_on_both(
        service, rated.value, other_service, other.value
    )


def _same_rating(now: Rated | None, before: Rated | None) -> bool:
    # By value: a date that moved alone is no change of the user's. AniList's score keeps its
    # own `score_at` across reads, but a state an older release saved has none: its first
    # read since dates the same score anew, by the entry's days (`score_date`).
    return now is not None and before is not None and now.value == before.value


def _changed(now: Rated, before: Rated) -> bool:
    """Whether a side's rating changed since its baseline: another value (by value, as
    `_same_rating`), dated otherwise. Every change a side reads moves the date too; a value
    alone moves where AniList's score stood as the other side's value the user's format
    showed alike (`readers.anilist.same_in_format`, kept in the baseline) and a format that
    tells them apart shows the score's own again, at its own date: no change of the user's.
    A rating the side gives no date (0: Plex's `lastRatedAt` may be left out) has only its
    value to tell a change by."""
    return not _same_rating(now, before) and (now.at != before.at or now.at == UNDATED)


def _unwatched_partners(
    removed: Iterable[Play], target: Iterable[Play], pairs: list[tuple[Play, Play]]
) -> list[tuple[Play, Play]]:
    """An item marked unwatched (an undated play removed) takes every play of it on the
    other side, not only the one it was paired with."""
    cleared = {p.item: p for p in removed if p.at == UNDATED}
    if not cleared:
        return []
    taken = {id(partner) for _, partner in pairs}
    return [(cleared[p.item], p) for p in target if p.item in cleared and id(p) not in taken]


def expect(side: Side, adds: Iterable[Action]) -> Side:
    """`side` with the plays we just queued for it, until a read shows them for real.

    A delta read may not reach back to a back-dated play we wrote, so without this the next
    run would find it missing and plan it again."""
    expected = tuple(Play(a.item, a.at, expected_record(a)) for a in adds)
    return replace(side, plays=side.plays + expected)


def expect_ratings(
    side: Side, service: str, writes: Iterable[Action], removing: Collection[str] = ()
) -> Side:
    """`side` (`service`'s, as read) with the ratings the rating `writes` we queued for it
    will leave there, as `expect` does for plays: saved as read, the next run would take our
    own removal for the user's ("rating removed on `service`") and delete a rating given
    again on the other side meanwhile, and take our copy for a rating new there (copying it
    back over the user's clear). `removing`: items whose removal an earlier run of the link
    queued for `service` that is still to be tried (its landing after the next read must not
    read as the user's either).

    A copy is expected only over no rating: over one the side holds, a copy not landed yet
    when the next run reads would look like the user's change back to the old value.
    What does not land: a removal that dies leaves the rating there (`without_copies_back`
    keeps it from being copied back over the clear); a copy not delivered by the next run
    is no rating there yet (`settle_expected_ratings`). Pure."""
    scores = dict(side.ratings)
    for write in writes:
        if write.target != service:
            continue
        if write.kind == "remove_rating":
            scores.pop(write.item, None)
        elif (
            write.kind == "set_rating"
            and write.value is not None
            and write.item not in side.ratings
        ):
            value = ratings.kept_by(service, write.value)
            scores[write.item] = Rated(value, write.at, expected=True)
    for item in removing:
        scores.pop(item, None)
    return side if scores == dict(side.ratings) else replace(side, ratings=scores)


def settle_expected_ratings(
    side: Side, service: str, delivered: Collection[tuple[str, int, float]]
) -> Side:
    """`side` (a baseline) with its expected ratings (`expect_ratings`) standing where the
    copy's row was delivered (`delivered`: item, value sent to `service`, and the date of the
    rating it copied), as the read before it would have found them; the others left out: a
    copy on its way, dead, settled unsent or discarded put nothing there, and the side's
    missing rating is no removal of the user's (a removal would take the other side's rating
    with it). By the copied rating's date too: an earlier copy of the same value, delivered
    days ago and removed since, says nothing of this one. Pure."""
    if not any(rated.expected for rated in side.ratings.values()):
        return side
    sent = {(item, ratings.kept_by(service, value), at) for item, value, at in delivered}
    scores = {
        item: replace(rated, expected=False)
        for item, rated in side.ratings.items()
        if not rated.expected or (item, rated.value, rated.at) in sent
    }
    return replace(side, ratings=scores)


def expected_record(add: Action) -> str:
    """The record of the play `add` queued, until a read shows it (see `expect`)."""
    # `#source` keeps two expected plays of one item and time apart (an undated rewatch).
    return f"{EXPECTED}{add.item}@{add.at:.0f}" + (f"#{add.source}" if add.source else "")


def settle_expected(side: Side) -> Side:
    """Drop expected plays that a real play of the same item now stands for (for an undated
    one, any real play of the item: the target chose its date, e.g. Trakt's `released`).
    Each real play stands for one expected play: two plays we queued of one item (a rewatch)
    need two read back."""
    expected = [p for p in side.plays if p.record.startswith(EXPECTED)]
    if not expected:
        return side
    settled = _stood_for(expected, side.plays)
    kept = tuple(p for p in side.plays if p.record not in settled)
    return side if len(kept) == len(side.plays) else replace(side, plays=kept)


AddRow = Literal["delivered", "waiting", "gone"]  # what became of the outbox row of our add


def carry_expected(
    baseline: Side, read: Side, row_of: Callable[[Play], AddRow]
) -> tuple[Side, Side]:
    """The baseline and the read of a side that was just read in full, with the expected
    plays of the baseline that the read does not show accounted for, by what became of the
    row that adds each (`row_of`). One delivered reached the side and was removed there
    since: it becomes an ordinary play of the baseline, so the plan carries that removal
    across. One still waiting (or a dead letter) stays expected, on both: its original on the
    other side must stay. One whose row is gone (its dead letter discarded, or pruned) was
    never written: it is expected no more, so the plan copies its original again, unless a
    removal of ours keeps that from coming back (its tombstone); discarding says "not this
    row", not "never this play". One the side forgot (`Side.forgotten`) is settled: it is
    added again."""
    expected = [p for p in baseline.plays if p.record.startswith(EXPECTED)]
    settled = _stood_for(expected, (*read.plays, *read.forgotten))
    missing = {p.record: row_of(p) for p in expected if p.record not in settled}
    if not missing:
        return baseline, read
    plays = tuple(
        Play(p.item, p.at, p.record.removeprefix(EXPECTED))
        if missing.get(p.record) == "delivered"
        else p
        for p in baseline.plays
        if missing.get(p.record) != "gone"
    )
    # A reader may carry the waiting ones itself (AniList's claims): once each, not twice.
    carried = {p.record for p in read.plays if missing.get(p.record) != "gone"}
    waiting = tuple(
        p for p in expected if missing.get(p.record) == "waiting" and p.record not in carried
    )
    kept = tuple(p for p in read.plays if missing.get(p.record) != "gone")
    return replace(baseline, plays=plays), replace(read, plays=kept + waiting)


def _stood_for(expected: Iterable[Play], plays: Iterable[Play]) -> set[str]:
    """Records of the expected plays a real play of `plays` stands for, one each: a dated one
    by the nearest real play within MATCH_WINDOW, then an undated one by any left."""
    real: dict[str, list[float]] = defaultdict(list)
    for play in plays:
        if not play.record.startswith(EXPECTED):
            real[play.item].append(play.at)
    settled: set[str] = set()
    undated: list[Play] = []
    for play in sorted(expected, key=lambda p: p.at):
        if play.at == UNDATED:
            undated.append(play)
            continue
        dates = real.get(play.item, [])
        near = [at for at in dates if abs(at - play.at) <= MATCH_WINDOW]
        if near:
            dates.remove(min(near, key=lambda at: abs(at - play.at)))
            settled.add(play.record)
    for play in undated:
        if real.get(play.item):
            real[play.item].pop()
            settled.add(play.record)
    return settled


def _plan_ratings(
    link: Link,
    current: Mapping[str, Side],
    baseline: Mapping[str, Side],
    allowed: set[tuple[str, str]],
    copying: Collection[tuple[str, str, int]] = frozenset(),
) -> list[Action]:
    a, b = link.services[0], link.services[1]
    actions: list[Action] = []
    items = set(current[a].ratings) | set(current[b].ratings)
    for item in sorted(items):
        decision = _rating_decision(link, item, current, baseline, copying)
        if decision is None:
            continue
        source, target, kind, reason = decision
        if (source, target) not in allowed:
            continue
        rated = current[source].ratings.get(item)
        held = current[target].ratings.get(item)
        actions.append(
            Action(
                kind,
                target,
                item,
                reason,
                rated.at if rated else 0.0,
                value=rated.value if rated else None,
                record=held.record if kind == "remove_rating" and held else "",
                source=_rating_source(kind, held),
            )
        )
    for item in sorted({item for _, item, _ in copying} - items):
        actions += _withdrawals(link, item, current, baseline, allowed, copying)
    return actions


def _rating_source(kind: ActionKind, held: Rated | None) -> str:
    """What makes a rating write one action among others of its item (`Action.source`): a
    copy names the target's rating it replaces; a removal names the rating it takes away
    when the target has no record of its own for it (Trakt, Plex, AniList: rate, clear and
    rate again, and the second removal would share the first one's key and be dropped while
    the first is kept). A Serializd removal's record (its diary rows) names it already, and
    its key stays as it was."""
    if held is None:
        return ""
    if kind == "set_rating":
        return f"over:{held.value}@{held.at:.0f}"
    if kind == "remove_rating" and not held.record:
        return f"{REMOVES}{held.value}@{held.at:.0f}"
    return ""


def _withdrawals(
    link: Link,
    item: str,
    current: Mapping[str, Side],
    baseline: Mapping[str, Side],
    allowed: set[tuple[str, str]],
    copying: Collection[tuple[str, str, int]],
) -> list[Action]:
    """The removals taking back the link's copies of `item`'s rating still on their way
    (`copying`) whose source cleared the rating since (neither side holds one now): landing,
    a copy would put back the rating the user cleared, and the next run would copy it back
    to its source. Queued behind the copy (one ordering key), a removal settles it unsent,
    or, one already in flight, follows it."""
    actions = []
    for target in link.services:
        source = _other(link, target)
        cleared = baseline.get(source, Side()).ratings.get(item)
        values = sorted(v for t, i, v in copying if t == target and i == item)
        if cleared is None or not values or (source, target) not in allowed:
            continue
        if any(item in current[side].unread_ratings for side in link.services):
            continue  # a rating there that could not be read, not none: it waits
        if item in current[source].renumbered_ratings:
            continue  # left out on purpose, not cleared
        reason = f"rating removed on {source} while its copy to {target} waited"
        copied = ",".join(map(str, values))
        withdrawn = f"{WITHDRAWS}{copied}@{cleared.at:.0f}"
        actions.append(Action("remove_rating", target, item, reason, source=withdrawn))
    return actions


def _rating_decision(
    link: Link,
    item: str,
    current: Mapping[str, Side],
    baseline: Mapping[str, Side],
    copying: Collection[tuple[str, str, int]] = frozenset(),
) -> tuple[str, str, ActionKind, str] | None:
    a, b = link.services[0], link.services[1]
    ra, rb = current[a].ratings.get(item), current[b].ratings.get(item)
    unread = item in current[a].unread_ratings or item in current[b].unread_ratings
    if ra is not None and rb is not None:
        if ratings.same_on_both(a, ra.value, b, rb.value):
            return None
        winner, why = _winner(link, item, current, baseline, copying)
        if unread and (why == NEWER or why.startswith(FINER)):
            return None  # a date (or value) unread cannot tell which is newer: it waits
        loser = b if winner == a else a
        return winner, loser, "set_rating", f"ratings differ: {winner} wins ({why})"
    present, missing = (a, b) if ra is not None else (b, a)
    if item in current[missing].unread_ratings:
        return None  # a rating there that could not be read, not none: it waits
    if item in baseline.get(missing, Side()).ratings:
        if item in current[missing].renumbered_ratings:
            return None  # left out on purpose, not removed
        return missing, present, "remove_rating", f"rating removed on {missing}"
    return present, missing, "set_rating", f"rated on {present}"


NEWER = "newer"  # why a rating wins by its date alone
FINER = "the finer rating"  # why it wins over its own whole point (`_winner`)


def _winner(
    link: Link,
    item: str,
    current: Mapping[str, Side],
    baseline: Mapping[str, Side],
    copying: Collection[tuple[str, str, int]],
) -> tuple[str, str]:
    """The side whose rating of `item` wins (both hold one, and they differ), and why.

    `prefer: newest-wins` is a three-way merge with the baseline: the side whose rating
    changed since the last run (each compared with its own baseline, `_changed`) wins, whatever
    the dates: its change is the newest event. Dates alone mislead (an older rating showing
    again once a newer one is deleted is a change dated long ago). Both changed, or either
    side's baseline lacks the item (a first run, a kind new to the link): the newer date, but
    for a whole point (below). Neither changed: the copy one side won and still waits for
    (`copying`: target, item, value of the link's rating copies not delivered yet, dead
    letters too) keeps winning, or the next run would undo the last one's choice by the
    dates; else the newer date.

    Both changed, or the link meets both ratings first: against its own whole point
    (`ratings.rounded_from`) the finer rating wins, not the newer. A rating goes round a
    household through Trakt or Serializd and reaches two fine sides (Plex, AniList) both as
    itself and as its whole point, the latter dated when it arrived: the newer date would
    overwrite the user's 75 with the 80 it became. (Not when neither changed: a side's
    baseline is what the run read before its copy landed, so a whole point the user gives
    again there reads as no change, and its date tells it.)"""
    a, b = link.services[0], link.services[1]
    if link.direction == "one-way":
        return a, "the link's source"
    if link.prefer in (a, b):
        return link.prefer, "preferred"
    ra, rb = current[a].ratings[item], current[b].ratings[item]
    before_a = baseline.get(a, Side()).ratings.get(item)
    before_b = baseline.get(b, Side()).ratings.get(item)
    newer = (a if ra.at >= rb.at else b), NEWER
    if before_a is not None and before_b is not None:
        changed_a, changed_b = _changed(ra, before_a), _changed(rb, before_b)
        if changed_a != changed_b:
            return (a if changed_a else b), "changed since the last run"
        if not changed_a:
            won_a, won_b = (b, item, ra.value) in copying, (a, item, rb.value) in copying
            if won_a != won_b:
                return (a if won_a else b), "its copy still waits"
            return newer
    elif before_a is not None or before_b is not None:
        return newer
    for finer, coarser, rated, whole in ((a, b, ra, rb), (b, a, rb, ra)):
        if ratings.rounded_from(whole.value, rated.value):
            return finer, f"{FINER}: {coarser}'s is its whole point"
    return newer


def _mass_removal(
    link: Link,
    current: Mapping[str, Side],
    actions: list[Action],
    holding: bool,
    hold: str,
    wait_on: Collection[str] = (),
) -> str:
    """Why this plan's removals must wait for confirmation, if they would empty a side, or
    (`holding`) an earlier run held removals: they wait until confirmed or undone, however
    small a share of the side they become as it grows; or for `hold`, whatever their share.
    The plays added to the sides `wait_on` come from an account not checked yet: said apart
    (`_with_copies_held`), not as plays marked watched again.

    Plays and ratings are weighed apart: a side whose ratings read empty (an expired session,
    an endpoint that moved) must not take every rating on the other side with it."""
    groups = [
        (removals, size, f"{noun} on {side}")
        for side in link.services
        for kind, noun, size in (
            ("remove_play", "plays", len(current[side].plays)),
            ("remove_rating", "ratings", len(current[side].ratings)),
        )
        if (
            removals := sum(
                1 for x in actions if x.target == side and x.kind == kind and not withdraws(x)
            )
        )
    ]
    share = link.max_removal_share
    held = [removals_held(n, size, what, share, 1, holding, hold) for n, size, what in groups]
    if not any(held):
        return ""
    # Every removal waits, and is named: confirming applies them all.
    reasons = [
        why.removesuffix(f"; {CONFIRM}") or f"{n} of {size} {what} with them"
        for why, (n, size, what) in zip(held, groups, strict=True)
    ]
    for side in link.services:
        if side in wait_on:
            continue
        adds = sum(1 for a in waiting_with_removals(actions) if a.target == side)
        if adds:
            # Worded as the other held lines, so a confirmed run says they are added.
            reasons.append(
                f"{adds} play{'s' if adds > 1 else ''} of those items new on the other side "
                f"(marked watched again?) would be added to {side} with them"
            )
    return f"{'; '.join(reasons)}; {CONFIRM}"
