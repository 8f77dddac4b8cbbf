"""Serializd's side of a link: the diary, read newest-first only until nothing is new, and the
watched state (ticks, marked seasons) where it can tell the other side something.

Serializd has no change feed and its diary pages are not reliably sorted, so the cheap check
reads pages until one holds no entry it has not seen (`diary_until`); a delta read adds those
entries to the baseline. Removals leave no trace in that check: the daily full read finds them,
and an entry it misses counts as deleted only when it can tell the diary was read whole, or the
next run's read of the whole diary misses it too (`missed_by`).

Ticks and season marks are a second system the diary does not show (reference §5.2, §6.1).
Marked seasons come in one paged listing; ticks only one season per request, and no listing
says which seasons hold any. So every run reads the ticks of the seasons where the other side
holds plays the diary does not explain (not to log them again), and a full read (first run,
daily, `--full`) also turns every marked season into plays and reads the ticks of the seasons
the user touched on Serializd where an episode is missing on both sides (`refine`). An episode
ticked (or in a season marked watched) without a diary play is an undated play
(`reconcile.UNDATED`: watched, date unknown), recorded `tick:<item>` (or `mark:<item>`). Those
plays live in the baseline between reads (the diary reads do not see them) and are replaced
only when their season is read again, so a tick disappears from the side only when Serializd
shows it gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace
from datetime import time
from typing import Any

from watchbridge.accounts import user_named
from watchbridge.catalogue import show_seasons
from watchbridge.config import Config, Link
from watchbridge.deliver.serializd import (
    DIARY_WINDOW,
    MARK_RECORD,
    NAME,
    PLAYS,
    RATED_ROWS,
    RATINGS,
    TICK_RECORD,
    forget_first_misses,
)
from watchbridge.deliver.trakt import readings
from watchbridge.http import changed_answer
from watchbridge.metrics import Metrics
from watchbridge.model import MediaRef, ref_from_dict
from watchbridge.playback import LEAST_WATCHED, shortest_viewing
from watchbridge.ratings import to_serializd
from watchbridge.readers import Clock, OnTheirWay, SideRead, Tally
from watchbridge.reconcile import (
    DUPLICATE_WINDOW_MINUTES,
    EXPECTED,
    UNDATED,
    Action,
    Plan,
    Play,
    Rated,
    Side,
    flows,
    match_plays,
    without_waiting,
)
from watchbridge.services.serializd import (
    DEFAULT_TAG,
    DiaryEntry,
    DiaryRead,
    SerializdClient,
    SerializdItemError,
    ShowSeasons,
)
from watchbridge.services.serializd import NAME as SERVICE_NAME
from watchbridge.sides import (
    RATED_LOG,
    diary_key,
    episode_key,
    ref_for_key,
    serializd_side,
    show_key,
)
from watchbridge.store import Store
from watchbridge.zone import local

log = logging.getLogger(__name__)

_EPISODE = re.compile(r"^episode:tmdb:(\d+):s(\d+)e(\d+)$")
WATCHED_STATE = (TICK_RECORD, MARK_RECORD)
# Cursor: the ids of the diary entries the last full read did not list while the baseline held
# them, not taken as deleted yet (JSON list; see `missed_by`).
MISSED = "missed"
# Cursor: the other side's dated plays (`item@minute`) a read of the whole diary found no
# entry of, copied there since or not (a dead letter): no reason to read the diary again
# (JSON list; see `SerializdReader._unlogged`). Only the newest UNLOGGED_NAMED (by the play's
# time) are named; the older ones are one fingerprint (UNLOGGED_OLDER, `remember_unlogged`).
UNLOGGED = "unlogged"
UNLOGGED_OLDER = "unlogged_older"
# Plays kept off for good stay missing for ever: named, a household's years of them would
# make the cursor grow without end (about 40 bytes each, written every run).
UNLOGGED_NAMED = 500
# A log the user makes in Serializd's app this soon after the play of ours of the episode is
# that viewing, logged again (at the end of the credits, or minutes after): the webhook fires at
# about 90 %, so the rest of the episode and its credits pass before the app's log, while a real
# rewatch comes a whole episode after the first. At most this long; less for a short episode
# (`late_log_window`).
LATE_LOG_WINDOW = 20 * 60.0
# ...and one made up to this long before it (the play delivered late), as `one_play` allows.
EARLY_LOG = DUPLICATE_WINDOW_MINUTES * 60.0
# `dateAdded` counts whole seconds, and Serializd's clock is known to us to a second: a log
# is taken as made before a link deleted our entry only when it was by more than this much
# (on either reading of that clock); a log made at about the same moment counts as a new play.
ADDED_SLACK = 2.0
# The app may date a log by the day alone (its midnight, in the user's time zone): a log dated
# further from the play is of another viewing, logged afterwards.
A_DAY = 86400.0
# Cursor: when each diary log dated by the day alone was logged (JSON {record: dateAdded}, see
# `day_logged`): a delta read reads the new logs only, and an older one's stays needed. Kept
# by every read (empty too): cursors without it are an earlier release's, read whole once.
DAY_LOGGED = "day_logged"


def dated_by_the_day(entry: DiaryEntry) -> bool:
    """Whether a diary log is dated by the day alone, not to the moment of a viewing: its
    date (a `backdate`, not when it was logged) is a midnight, UTC or the household's (as the
    app dates a log by a day)."""
    at = entry.watched_at
    if at == entry.date_added or at <= 0:
        return False
    if at % A_DAY == 0:
        return True
    return local(at).time() == time(0, 0)


def day_logged(
    entries: Iterable[DiaryEntry], before: Mapping[str, float], side: Side
) -> dict[str, float]:
    """Record -> when it was logged (`dateAdded`) of the plays of `side` dated by the day
    alone (`dated_by_the_day`), from `entries` read now, else as `before` (the cursor) kept
    them (`Side.logged`). Pure."""
    read = {str(e.id): e.date_added for e in entries if e.is_log and dated_by_the_day(e)}
    records = {p.record for p in side.plays}
    known = {**before, **read}
    return {record: at for record, at in known.items() if record in records}


def logged_cursor(cursors: Mapping[str, str]) -> dict[str, float]:
    """The DAY_LOGGED cursor (empty when none was kept)."""
    kept = json.loads(cursors.get(DAY_LOGGED) or "{}")
    return {str(k): float(v) for k, v in kept.items()} if isinstance(kept, dict) else {}


def known_ids(cursors: Mapping[str, str]) -> set[int]:
    return set(json.loads(cursors.get("diary_ids") or "[]"))


def merge_diary(baseline: Side, fresh: Side) -> Side:
    """The baseline with new diary entries added; a newer rating of an item replaces the old."""
    scores: dict[str, Rated] = dict(baseline.ratings)
    for item, rated in fresh.ratings.items():
        if item not in scores or scores[item].at <= rated.at:
            scores[item] = rated
    seen = {p.record for p in baseline.plays}
    return Side(baseline.plays + tuple(p for p in fresh.plays if p.record not in seen), scores)


def resolve_expected(side: Side, written: Mapping[str, int]) -> Side:
    """Plays we queued (expected) whose diary entry the delivery ledger now names become plays
    of that entry; the rest stay expected."""
    known = {p.record for p in side.plays}
    plays: list[Play] = []
    for play in side.plays:
        if play.record.startswith(EXPECTED) and play.at != UNDATED:
            minute = int(play.at // 60)
            review = next(
                (
                    written[key]
                    for offset in (0, -1, 1, -2, 2)
                    if (key := f"{play.item}@{minute + offset}") in written
                ),
                None,
            )
            if review is not None:
                if str(review) not in known:
                    plays.append(Play(play.item, play.at, str(review)))
                    known.add(str(review))
                continue
        plays.append(play)
    return Side(tuple(plays), side.ratings)


def _ledger_mark(written: Mapping[str, int]) -> str:
    """What the delivery ledger holds, in short: one entry removed and another written
    between two runs must still read as a change."""
    return hashlib.sha256(json.dumps(sorted(written.items())).encode()).hexdigest()[:16]


def with_written(side: Side, written: Mapping[str, int], accounted: set[int]) -> Side:
    """`side` with the diary entries our deliveries wrote since the last read (`accounted`:
    the ledger's review ids then): a delta read leaves our own entries out, and a webhook's
    play (a rewatch above all) must be on this side, or the link would add it again."""
    known = {p.record for p in side.plays}
    plays = list(side.plays)
    for key, review in written.items():
        if review in accounted or str(review) in known:
            continue
        item, _, minute = key.rpartition("@")
        if item and minute.isdigit():
            plays.append(Play(item, int(minute) * 60.0, str(review)))
    return replace(side, plays=tuple(plays))


def edited_since(
    ratings: Mapping[str, Rated],
    baseline: Side | None,
    rows_before: Mapping[str, str] | None,
    now: float,
) -> dict[str, Rated]:
    """`ratings` as a full read found them, dated by when an edit was seen: stars changed on
    a diary row in the app keep the row's `dateAdded`, so a value other than the baseline's,
    dated no later than it, held by the same rows as at the last read (`rows_before`, the
    cursors' `rating_rows`: no row deleted, none added), was changed in place since: it is
    dated `now`, or the other side's older copy would win it back. So is one of an item no
    read found rows of while the baseline holds a rating of it: that rating is a copy the
    link expects (`reconcile.expect_ratings`), its row the copy's, dated as the rating it
    copied, and another value there is the user's edit of it. (Rows changed, an older row's
    value showing again once a newer one is deleted, a diary log's as well, keep their date;
    so does every rating while the cursors kept no rows, None.) The same value keeps the
    baseline's date (an edit seen by an earlier read). Pure."""
    if baseline is None:
        return dict(ratings)
    dated: dict[str, Rated] = {}
    for item, rated in ratings.items():
        before = baseline.ratings.get(item)
        if before is not None and rated.at <= before.at:
            if rated.value == before.value:
                rated = replace(rated, at=before.at)
            elif (
                rated.record
                and rows_before is not None
                and (same_rows(rows_before.get(item, ""), rated.record) or item not in rows_before)
            ):
                rated = replace(rated, at=now)
        dated[item] = rated
    return dated


def same_rows(before: str, now: str) -> bool:
    """Whether two records of a rating name the same diary rows. A record kept before logs
    were named (a bare `log`) is compared as it was then, logs unnamed: the first read after
    an upgrade still tells an edit in place, and takes no rating for one it is not."""
    named_before, named_now = set(before.split(",")) - {""}, set(now.split(",")) - {""}
    if RATED_LOG in named_before:
        named_before, named_now = _logs_unnamed(named_before), _logs_unnamed(named_now)
    return named_before == named_now


def _logs_unnamed(rows: set[str]) -> set[str]:
    return {RATED_LOG if row.startswith(f"{RATED_LOG}:") else row for row in rows}


def unanswered_copies(
    diary: Iterable[DiaryEntry], sends: Iterable[tuple[dict[str, Any], float, int]]
) -> set[int]:
    """Ids of the rating-only rows that are `sends` (item, rated at, rating 0-100: our rating
    copies whose answer was lost) landed: of that item and value, backdated to that time, as
    the retry looks for them. Taken for ours until the retry records them: dated by when they
    landed, a copy that landed late reads as a rating given after the user's newer one, and a
    link copies it back over it (the date a read gives a rating stays with it). Pure."""
    wanted: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for item, at, rating in sends:
        key = _tmdb_key(ref_from_dict(item))
        if key is not None:
            wanted[key].append((at, to_serializd(rating)))
    return {
        entry.id
        for entry in diary
        if not entry.is_log
        and any(
            entry.rating == stars and abs(entry.watched_at - at) <= DIARY_WINDOW
            for at, stars in wanted.get(diary_key(entry) or "", ())
        )
    }


def _tmdb_key(ref: MediaRef) -> str | None:
    """The key a diary row of the item has (`diary_key`), when the item names its show's TMDB
    id (a row named otherwise is looked up by its delivery, and stays unknown until then)."""
    show = ref.ids.tmdb if ref.kind == "show" else ref.show_ids.tmdb
    if not show:
        return None
    if ref.kind == "episode" and ref.season is not None and ref.number is not None:
        return episode_key(show, ref.season, ref.number)
    if ref.kind == "season" and ref.season is not None:
        return show_key(show, ref.season)
    return show_key(show) if ref.kind == "show" else None


def rating_rows(known: Mapping[str, str], fresh: Side) -> dict[str, str]:
    """Item -> ids of the rating-only diary rows holding its rating (comma-separated): the
    rows known before plus those a read found."""
    rows = dict(known)
    for item, rated in fresh.ratings.items():
        if rated.record:
            ids = [*rows.get(item, "").split(","), *rated.record.split(",")]
            rows[item] = ",".join(dict.fromkeys(i for i in ids if i))
    return rows


def unplaced(
    diary: Iterable[DiaryEntry], baseline: Side | None, read: Side
) -> tuple[tuple[Play, ...], dict[str, Rated]]:
    """The plays and ratings of diary entries a read cannot place (a season id their show's
    season list no longer names, e.g. re-keyed on TMDB), as the baseline had them: still in
    the diary, they are no removals. A rating names no record: the baseline's ratings of
    those shows that the read lacks are kept. Pure."""
    rows = [e for e in diary if e.season_id is not None and e.season_number is None]
    if not rows or baseline is None:
        return (), {}
    records = {str(e.id) for e in rows}
    shows = {str(e.show_id) for e in rows}
    plays = tuple(p for p in baseline.plays if p.record in records)
    ratings = {
        key: rated
        for key, rated in baseline.ratings.items()
        if key not in read.ratings and _tmdb_show_of(key) in shows
    }
    return plays, ratings


def unread_kept(
    unreadable: Collection[int], baseline: Side | None, read: Side, rows: Mapping[str, str]
) -> tuple[tuple[Play, ...], dict[str, Rated]]:
    """The plays and ratings of diary entries a read could not parse or missed once
    (`unreadable`, their ids), as the baseline had them: still in the diary, they are no
    removals. A rating is kept when one of its rows (`rows`: item -> the ids holding its
    rating, `rating_rows`) is unreadable, unless the read found a rating of the item as new
    or newer: an older row's stars (a rating-only row under a log's) are not what Serializd
    shows while the newer row stands. Pure."""
    if not unreadable or baseline is None:
        return (), {}
    records = {str(i) for i in unreadable}
    plays = tuple(p for p in baseline.plays if p.record in records)
    ratings = {
        key: rated
        for key, rated in baseline.ratings.items()
        if records & _row_ids(rows.get(key, ""))
        and (key not in read.ratings or read.ratings[key].at < rated.at)
    }
    return plays, ratings


def _row_ids(record: str) -> set[str]:
    """The diary ids a rating's rows name (`123`, or `log:123` for a diary log's stars)."""
    return {part.rpartition(":")[2] for part in record.split(",")} - {"", RATED_LOG}


def relied_on(baseline: Side | None, rows: Mapping[str, str]) -> set[int]:
    """The ids of the diary entries the baseline holds a play or a rating of (`rows`: item ->
    the rows holding its rating, `rating_rows`): a full read not listing one takes it for
    deleted. Pure."""
    ids = {int(p.record) for p in baseline.plays if p.record.isdigit()} if baseline else set()
    for held in rows.values():
        ids |= {int(i) for i in _row_ids(held) if i.isdigit()}
    return ids


def missed_by(
    read: DiaryRead,
    relied: AbstractSet[int],
    missed_before: AbstractSet[int],
    known: AbstractSet[int],
) -> tuple[frozenset[int], frozenset[int]]:
    """The entries of `relied` a whole read of the diary did not list, as (gone, missed once).
    The pages are not reliably ordered and may answer no count (§5.1): an entry deleted or
    added while they are read moves the rows after it onto a page already read, and one of
    them is never seen; an entry deleted and another added keep the count, and the added one
    hides a row only from a page read later, where it is listed. So a miss proves an entry
    gone only when the read listed as many rows as the pages counted (`all_listed`) and none
    the last run did not know (`known`: the ids it counted in the diary, ours included), or
    when the read before (a run earlier) missed it too (`missed_before`), or took it for gone
    already (not `known`: the baseline keeps the plays of removals held for confirmation);
    else it is missed once, and read again by the next run. A read listing none of them
    reads another diary (another account signed in) or an emptied one: no shift hides them
    all, and the account check must see their plays gone; unless the read saw the diary
    change (`changed`), which may have hidden the only one or two. Nor is a read that saw it
    change the second read of a proof: its pages shifted too, and may hide the same row
    again (a busy evening's reads each growing), so its misses stay missed once, and the
    next run reads the whole diary again, until a read the diary did not change under. Pure."""
    missed = frozenset(relied) - read.listed
    if (missed == relied and not read.changed) or (read.all_listed and read.listed <= known):
        return missed, frozenset()
    once = (missed & known) - (frozenset() if read.changed else missed_before)
    return missed - once, once


def without_entries(
    side: Side, gone: AbstractSet[int], rows: Mapping[str, str], whole: Side
) -> tuple[Side, dict[str, str]]:
    """`side` and its rating rows (`rows`) without the diary entries `gone`: their plays go,
    and a rating held by one of them is the one the whole diary now shows (`whole`, as read),
    or none. Pure."""
    records = {str(i) for i in gone}
    plays = tuple(p for p in side.plays if p.record not in records)
    ratings, kept = dict(side.ratings), dict(rows)
    for item, held in rows.items():
        if not records & _row_ids(held):
            continue
        now = whole.ratings.get(item)
        if now is None:
            ratings.pop(item, None)
            del kept[item]
        else:
            ratings[item], kept[item] = now, now.record
    return Side(plays, ratings), kept


def _tmdb_show_of(key: str) -> str | None:
    """The TMDB show id of an item key (an episode, a season or a show)."""
    ref = ref_for_key(key)
    if ref is None:
        return None
    return ref.ids.tmdb if ref.kind == "show" else ref.show_ids.tmdb


def watched_state(side: Side | None) -> tuple[Play, ...]:
    """The plays a diary read cannot see (ticks and marks found by `refine`)."""
    return tuple(p for p in side.plays if p.record.startswith(WATCHED_STATE)) if side else ()


def ticked_by_us(side: Side | None, ticked: Collection[str]) -> tuple[Play, ...]:
    """Ticks our deliveries made (`ticked`: their items) of undated plays the baseline still
    expects: no diary read shows them, and before a season read finds them they would count
    as never delivered, so a removal of them on the other side would not be carried."""
    if side is None:
        return ()
    carried = {p.item for p in side.plays if p.record.startswith(WATCHED_STATE)}
    return tuple(
        Play(p.item, UNDATED, f"{TICK_RECORD}{p.item}")
        for p in side.plays
        if p.record.startswith(EXPECTED)
        and p.at == UNDATED
        and p.item in ticked
        and p.item not in carried
    )


def unlogged(own: Side, other: Side) -> set[str]:
    """The other side's dated episode plays (`item@minute`) no play of `own` explains: each
    is a diary entry to add, unless the user logged that viewing on Serializd. Pure."""
    _, lonely, _ = match_plays(other.plays, own.plays)
    return {
        f"{p.item}@{int(p.at // 60)}" for p in lonely if p.at != UNDATED and _EPISODE.match(p.item)
    }


def carried(plays: AbstractSet[str], service: str, waiting: OnTheirWay) -> set[str]:
    """The plays among `plays` (`item@minute`) that a webhook's play on its way to `service`
    stands for, as the link leaves their copies out of its plan (`without_waiting`): that
    row logs the viewing, the link does not. Pure."""
    adds = []
    for play in sorted(plays, key=_play_order):
        item, _, minute = play.rpartition("@")
        adds.append(Action("add_play", service, item, "", float(minute) * 60))
    left = without_waiting(Plan(tuple(adds), frozenset()), waiting).actions
    return set(plays) - {f"{a.item}@{int(a.at // 60)}" for a in left}


def _play_order(play: str) -> tuple[int, str]:
    """An `item@minute` play's place, oldest first."""
    item, _, minute = play.rpartition("@")
    return int(minute) if minute.isdigit() else 0, item


def _fingerprint(plays: Iterable[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(plays)).encode()).hexdigest()[:32]


def remember_unlogged(missing: AbstractSet[str], most: int = UNLOGGED_NAMED) -> dict[str, str]:
    """The cursors that keep the plays a whole read found `missing` (`found_missing` reads
    them): the newest `most` by name (UNLOGGED), the older ones as one fingerprint of them
    all and the first named that they come before (UNLOGGED_OLDER), however many. Pure."""
    ordered = sorted(missing, key=_play_order)
    older, named = ordered[: -max(most, 1)], ordered[-max(most, 1) :]
    cursors = {UNLOGGED: json.dumps(sorted(named))}
    if older:
        cursors[UNLOGGED_OLDER] = json.dumps({"before": named[0], "plays": _fingerprint(older)})
    return cursors


def found_missing(lonely: AbstractSet[str], cursors: Mapping[str, str]) -> set[str]:
    """The plays among `lonely` that a whole read found missing before (`remember_unlogged`):
    those named, and the older ones only while they are exactly the ones it fingerprinted. A
    play older than those named that is new (a backdated one), or one of them explained
    since, and all the older ones are read for again: one more read of the whole diary, never
    a copy on a guess. Pure."""
    known = set(lonely) & set(json.loads(cursors.get(UNLOGGED) or "[]"))
    older = json.loads(cursors.get(UNLOGGED_OLDER) or "{}")
    if isinstance(older, dict) and isinstance(before := older.get("before"), str):
        old = {p for p in lonely if _play_order(p) < _play_order(before)}
        if old and _fingerprint(old) == older.get("plays"):
            known |= old
    return known


def unexplained(own: Side, other: Side) -> tuple[dict[int, dict[int, set[int]]], set[str]]:
    """Show -> season -> episode numbers of the other side's plays that no play of `own`
    explains (the only seasons worth a watched-state read), and the items among them that
    the other side holds undated."""
    _, lonely, _ = match_plays(other.plays, own.plays)
    found: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    undated: set[str] = set()
    for play in lonely:
        parts = _EPISODE.match(play.item)
        if parts:
            show, season, number = (int(x) for x in parts.groups())
            found[show][season].add(number)
            if play.at == UNDATED:
                undated.add(play.item)
    return found, undated


def with_seasons_read(
    own: Side,
    read_seasons: Sequence[tuple[int, int, set[int] | None, set[int]]],
    other_undated: AbstractSet[str],
) -> Side:
    """`own` with the watched state of the seasons read (show, season, ticked episodes or
    None when marked, episodes wanted) in place of what it held of them (`season_state`).
    Pure."""
    fresh: list[Play] = []
    replaced: set[str] = set()
    for show, season, watched, episodes in read_seasons:
        plays, gone = season_state(show, season, watched, episodes, own, other_undated)
        fresh += plays
        replaced |= gone
    kept = tuple(p for p in own.plays if p.record not in replaced)
    known = {p.record for p in kept}
    return Side(kept + tuple(p for p in fresh if p.record not in known), own.ratings)


def season_state(
    show: int,
    season: int,
    watched: set[int] | None,
    wanted: set[int],
    own: Side,
    other_undated: AbstractSet[str] = frozenset(),
) -> tuple[list[Play], set[str]]:
    """The undated plays of one season after reading it, and the records they replace (every
    tick and mark of the season: what the read says now is the whole watched state).

    `watched`: the ticked episode numbers, or None when the whole season is marked watched
    (then `wanted` names its episodes). A tick or mark already known keeps its play; a new one
    becomes a play when the diary holds no play of the episode, when the other side holds an
    undated play of it that nothing else explains (watched = watched), or when the episode was
    ticked or marked before (a tick that became a mark stays a watched episode)."""
    prefix = episode_key(show, season, 0)[:-1]  # "episode:tmdb:SHOW:sSEASONe"
    in_season = [p for p in own.plays if p.item.startswith(prefix)]
    dated = {p.item for p in in_season if not p.record.startswith(WATCHED_STATE)}
    before = {p.record: p for p in in_season if p.record.startswith(WATCHED_STATE)}
    held_before = {p.item for p in before.values()}
    kind, numbers = (MARK_RECORD, wanted) if watched is None else (TICK_RECORD, watched)
    plays = []
    for number in sorted(numbers):
        item = episode_key(show, season, number)
        record = f"{kind}{item}"
        if record in before:
            plays.append(before[record])
        elif item not in dated or item in other_undated or item in held_before:
            plays.append(Play(item, UNDATED, record))
    return plays, set(before)


def named_seasons(own: Side, ours: AbstractSet[str]) -> dict[int, set[int]]:
    """Show -> season numbers where the user did something on Serializd: their own diary
    plays, and the ticks and marks read before (not the entries we wrote, records `ours`, nor
    plays we queued: those say nothing about what the user does there)."""
    shows: dict[int, set[int]] = defaultdict(set)
    for play in own.plays:
        if play.record in ours or play.record.startswith(EXPECTED):
            continue
        parts = _EPISODE.match(play.item)
        if parts:
            shows[int(parts[1])].add(int(parts[2]))
    return dict(shows)


def marked_before(own: Side) -> set[tuple[int, int]]:
    """(show, season) of the seasons whose episodes `own` holds as marked watched."""
    found = set()
    for play in own.plays:
        parts = _EPISODE.match(play.item) if play.record.startswith(MARK_RECORD) else None
        if parts:
            found.add((int(parts[1]), int(parts[2])))
    return found


def discovery_seasons(
    season_numbers: Iterable[int], touched: AbstractSet[int], watching: bool
) -> set[int]:
    """The seasons of a show whose ticks a full read may read: every regular one of a show on
    the "currently watching" list; else those the user touched (`touched`: diary plays, ticks
    and marks) and the one after the last of them (watching goes on into the next season)."""
    numbers = set(season_numbers)
    if watching:
        return {n for n in numbers if n > 0}
    after = {max(touched) + 1} if touched else set()
    return (set(touched) | after) & numbers


def episodes_held(*sides: Side) -> dict[tuple[int, int], set[int]]:
    """(show, season) -> the episode numbers any of `sides` holds a play of."""
    held: dict[tuple[int, int], set[int]] = defaultdict(set)
    for side in sides:
        for play in side.plays:
            parts = _EPISODE.match(play.item)
            if parts:
                show, season, number = (int(x) for x in parts.groups())
                held[(show, season)].add(number)
    return held


def worth_reading(count: int | None, held: AbstractSet[int], was_marked: bool) -> bool:
    """Whether a full read reads the ticks of a season nobody asked about: only when a tick
    there could tell the other side something (an episode neither side holds a play of; all
    of them when the catalogue gives no count), or when the season was marked watched and is
    not any more (its ticks are what is left)."""
    if was_marked or count is None:
        return True
    return any(number not in held for number in range(1, count + 1))


def late_log_window(duration: float | None) -> float:
    """How long after a play of ours of an episode `duration` seconds long (None: unknown) an
    untagged log of it is that viewing logged again: until a rewatch could have been watched,
    the least a viewing of the episode takes (an 11-minute cartoon's: 8 minutes 48 seconds),
    LATE_LOG_WINDOW at most. Unknown (a link's copy, a webhook naming no length): the least
    any viewing takes (`shortest_viewing`), not LATE_LOG_WINDOW, since a short episode's
    rewatch taken for ours is a play lost for good, while a log of ours copied as a rewatch is
    a second entry the user sees and can delete."""
    if not duration:
        return shortest_viewing(None)
    return min(LATE_LOG_WINDOW, LEAST_WATCHED * duration)


def logged_after_ours(
    entries: Iterable[DiaryEntry],
    side: Side,
    ours: Mapping[int, float | None],
    before: Side | None,
    skew: float,
    deleted: Iterable[Play] = (),
    removed_at: Mapping[str, float] | None = None,
) -> set[str]:
    """The records of the diary logs among `entries` that are a viewing `side` holds a play
    of ours of (`ours`: our review ids, each with the length in seconds of the episode played
    when known), logged again in Serializd's app: untagged, of the same episode, added
    (`dateAdded`, on either reading of Serializd's clock) from EARLY_LOG before that play to
    `late_log_window` after it, and watched (their date) within a day of it. One each way,
    earliest first. A log another watchbridge or profile wrote (tagged) is its own play, and
    one the baseline `before` holds already stays as it was read. `deleted`: plays of ours
    (of review ids in `ours`) a link deleted carrying a removal: a log of their viewing stays
    taken, or the play removed would come back through it; but not one added after the link
    deleted ours (`removed_at`, by record, our clock): the user logged that viewing again
    after the removal, a play of its own. Pure."""
    held = {p.record for p in before.plays} if before is not None else set()
    standing = [p for p in side.plays if p.record.isdigit() and int(p.record) in ours]
    read = {p.record for p in standing}
    mine = sorted(
        [*standing, *(p for p in deleted if p.record not in read)],
        key=lambda p: p.at,
    )
    logs = sorted(
        (
            e
            for e in entries
            if e.is_log
            and DEFAULT_TAG not in e.tags
            and e.id not in ours
            and str(e.id) not in held
            and (key := diary_key(e)) is not None
            and key.startswith("episode:")
        ),
        key=lambda e: e.date_added,
    )
    taken: set[str] = set()
    removed = removed_at or {}
    for play in mine:
        window = late_log_window(ours[int(play.record)])
        deleted_at = removed.get(play.record)
        for entry in logs:
            record = str(entry.id)
            added = readings(entry.date_added, skew)
            if (
                record not in taken
                and diary_key(entry) == play.item
                and abs(entry.watched_at - play.at) <= A_DAY
                and any(-EARLY_LOG <= reading - play.at <= window for reading in added)
                and (deleted_at is None or all(t + ADDED_SLACK <= deleted_at for t in added))
            ):
                taken.add(record)
                break
    return taken


def gone_now(deleted: Iterable[Play], side: Side, before: Side | None) -> list[Play]:
    """The plays among `deleted` (of ours, deleted by a link) that the baseline `before` still
    held and `side` no longer does: the read that sees their entries gone. Pure."""
    held = {p.record for p in before.plays} if before is not None else set()
    read = {p.record for p in side.plays}
    return [p for p in deleted if p.record in held and p.record not in read]


def without_records(side: Side, records: Collection[str]) -> Side:
    """`side` without the plays of `records` (its ratings as they are)."""
    if not records:
        return side
    return replace(side, plays=tuple(p for p in side.plays if p.record not in records))


class SerializdReader:
    service = "serializd"

    def __init__(
        self,
        client: SerializdClient,
        store: Store,
        clock: Callable[[], float],
        discover: bool = True,
        guards: bool = True,
    ) -> None:
        self.client = client
        self.store = store
        self.clock = clock
        # Whether the other side's plays are copied to Serializd: only then must a read that
        # may have missed an entry look again before they are (`_unlogged`).
        self.guards = guards
        # Whether full reads look for watched state beyond the seasons the sides disagree on:
        # only worth it when Serializd's plays flow to the other side.
        self.discover = discover
        self.dry_run = False  # see readers.Noting
        self._fresh: dict[str, list[DiaryEntry]] = {}
        self._plays: dict[str, dict[str, Any]] = {}  # see `_plays_ledger`
        self._ledger: dict[str, dict[str, int]] = {}
        self._cursors: dict[str, dict[str, str]] = {}  # what read() returned, per profile
        self._full: dict[str, bool] = {}
        self._partial: dict[str, bool] = {}  # see the end of `read`
        self._before: dict[str, Side] = {}  # the baseline `read` was given (`_unlogged`)
        self.seasons_read = 0  # watched-state reads of single seasons (reported by the bench)
        self.tally: Tally | None = None  # the shows `refine` has looked at (the long part)

    @property
    def requests_sent(self) -> int:
        return self.client.http.requests_sent

    async def _new_entries(self, profile: str, cursors: Mapping[str, str]) -> list[DiaryEntry]:
        if profile not in self._fresh:
            written = await self._written(profile)
            known = known_ids(cursors) | set(written.values())
            listed: set[int] = set()
            self._fresh[profile] = await self.client.diary_until(profile, known, listed)
            await self._forget_first_misses(profile, listed)
        return self._fresh[profile]

    async def _read_again(self, profile: str) -> DiaryRead:
        """The whole diary, read by the run after a full read missed entries once (`MISSED`):
        only a second read proves them gone. Its new entries serve as the delta read's."""
        whole_diary = await self.client.diary_read(profile, growing=True)
        await self._forget_first_misses(profile, whole_diary.listed)
        return whole_diary

    async def _forget_first_misses(self, profile: str, listed: Collection[int]) -> None:
        """The delivery's first misses of our entries this read listed are forgotten (they
        were there), except in a dry run, which writes nothing."""
        if not self.dry_run:
            await asyncio.to_thread(forget_first_misses, self.store, profile, listed)

    async def _written(self, profile: str) -> dict[str, int]:
        """The diary plays we wrote (delivery ledger key `item@minute` -> review id): not news
        to a delta read, which would otherwise page through a whole backfill again. The plays
        queued for them (expected) take their review ids instead (`resolve_expected`), so a
        removal on either side finds them. (Ratings we wrote are read back as usual.)"""
        if profile not in self._ledger:
            plays = await self._plays_ledger(profile)
            self._ledger[profile] = {
                key: v["review_id"]
                for key, v in plays.items()
                if isinstance(v, dict) and isinstance(v.get("review_id"), int)
            }
        return self._ledger[profile]

    async def _written_since_read(self, profile: str, own: Side) -> Side:
        """`own` with the diary entries our deliveries wrote since `read` took the ledger (a
        webhook's play landing while a run reads): the diary read may predate them, the ticks
        read after it do not, and a tick the diary does not explain is taken for a play of its
        own (watched, date unknown) beside the entry, which the other side would get as a
        second, undated play. The cursors take the ledger as it is now."""
        before = self._ledger.get(profile)
        if before is None:  # read() did not run for this profile
            return own
        del self._ledger[profile]
        self._plays.pop(profile, None)
        written = await self._written(profile)
        if written == before:
            return own
        cursors = self._cursors.get(profile)
        if cursors is not None:
            cursors["written"] = _ledger_mark(written)
            cursors["ledger_ids"] = json.dumps(sorted(set(written.values())))
        return with_written(own, written, set(before.values()))

    async def _plays_ledger(self, profile: str) -> dict[str, Any]:
        """The delivery ledger of plays, read once per profile and run."""
        if profile not in self._plays:
            self._plays[profile] = await asyncio.to_thread(
                self.store.mirror_get, NAME, profile, PLAYS
            )
        return self._plays[profile]

    async def _lengths(self, profile: str) -> dict[int, float]:
        """The length in seconds of the episode each diary play of ours is (or, deleted by a
        link, was) of (review id -> seconds), where the webhook that queued it told it."""
        plays = await self._plays_ledger(profile)
        return {
            review: float(v["duration"])
            for v in plays.values()
            if isinstance(v, dict)
            and isinstance(review := v.get("review_id") or v.get("deleted"), int)
            and isinstance(v.get("duration"), int | float)
        }

    async def _deleted_by_link(self, profile: str) -> tuple[list[Play], dict[str, float]]:
        """The diary plays of ours a link deleted carrying a removal from the other side (the
        delivery ledger's `deleted`), as the plays of their entries they were, and when each
        was deleted (review id as text -> our clock; removals noted before that was kept say
        nothing)."""
        plays = await self._plays_ledger(profile)
        deleted, removed_at = [], {}
        for key, v in plays.items():
            if not isinstance(v, dict) or not isinstance(review := v.get("deleted"), int):
                continue
            if isinstance(at := v.get("at"), int | float):
                deleted.append(Play(key.rpartition("@")[0], float(at), str(review)))
            if isinstance(when := v.get("removed_at"), int | float):
                removed_at[str(review)] = float(when)
        return deleted, removed_at

    async def _ticked(self, profile: str) -> set[str]:
        """The items our deliveries ticked without a date (no diary entry), still ticked."""
        plays = await self._plays_ledger(profile)
        return {
            key.rpartition("@")[0]
            for key, v in plays.items()
            if key.endswith("@0")
            and isinstance(v, dict)
            and v.get("ticked")
            and not v.get("removed")
        }

    async def _rated(self, profile: str) -> set[int]:
        """The diary rows holding ratings we copied there (delivery ledger review ids): every
        one since they were kept, and each item's last before that."""
        rated = await asyncio.to_thread(self.store.mirror_get, NAME, profile, RATINGS)
        rows = await asyncio.to_thread(self.store.mirror_get, NAME, profile, RATED_ROWS)
        return {int(review) for review in rows if review.isdigit()} | {
            v["review_id"]
            for v in rated.values()
            if isinstance(v, dict) and isinstance(v.get("review_id"), int)
        }

    async def _unanswered(self, profile: str, diary: Iterable[DiaryEntry]) -> set[int]:
        """The diary rows that are our rating sends whose answer was lost, before their retry
        finds them and records them as ours (see `unanswered_copies`)."""
        sends = await asyncio.to_thread(self.store.unanswered_ratings, profile, NAME)
        return unanswered_copies(diary, sends) if sends else set()

    async def account(self, profile: str, reading: bool) -> str | None:
        return user_named(await self.client.username(profile))

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        """Nothing new in the diary, and nothing delivered since the last read (a delivered
        play's review id must replace its expected play in the baseline, or a removal of it
        would go unseen): no request beyond the first diary page. Entries the last full read
        missed once are to be read again (`missed_by`): then no request, a read follows."""
        if cursors.get(MISSED):
            return False
        fresh = await self._new_entries(profile, cursors)
        return not fresh and _ledger_mark(await self._written(profile)) == cursors.get("written")

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        first = baseline is None or "diary_ids" not in cursors
        # Cursors an earlier release kept have no DAY_LOGGED: read whole once to learn when
        # the logs read before were logged, or a new log of a second viewing on their day
        # reads as a duplicate of one whose dateAdded is unknown (`recorded_twice`).
        full = full or first or DAY_LOGGED not in cursors
        written = await self._written(profile)
        ours = await self._rated(profile)
        missed_before = set(json.loads(cursors.get(MISSED) or "[]"))
        missed: frozenset[int] = frozenset()
        before = json.loads(cursors.get("rating_rows") or "{}")
        if full:
            # A first read knows none of the diary: a row a growing read misses (`missed_by`
            # keeps only those the baseline holds) would be a play Serializd lacks, and the
            # other side's play of it logged there again. It fails, and is read again.
            whole_diary = await self.client.diary_read(profile, growing=not first)
            # No count (one that moved, or a diary answering none, §5.1), or fewer rows listed
            # than counted (one deleted while read, or pages out of order): a log made while
            # the pages were read may be on one read before it.
            partial = not whole_diary.all_listed
            await self._forget_first_misses(profile, whole_diary.listed)
            diary = whole_diary.entries
            known = known_ids(cursors) | set(written.values())
            _, missed = missed_by(whole_diary, relied_on(baseline, before), missed_before, known)
            if missed:
                log.info(
                    "serializd diary entries were not listed by a read of the whole diary "
                    "that cannot tell it was read whole: their plays and ratings are kept, "
                    "and the next run reads the diary again; missed again, they count as deleted",
                    extra={"profile": profile, "entries": len(missed)},
                )
            ids = {e.id for e in diary} | whole_diary.unreadable | missed
            read = serializd_side(diary, ours | await self._unanswered(profile, diary))
            kept, kept_ratings = unplaced(diary, baseline, read)
            if kept or kept_ratings:
                log.warning(
                    "serializd diary entries name a season their show no longer lists: "
                    "their plays and ratings are kept as they were read before",
                    extra={"profile": profile, "entries": len(kept) + len(kept_ratings)},
                )
            unread, unread_ratings = unread_kept(
                whole_diary.unreadable | missed, baseline, read, before
            )
            if whole_diary.unreadable:
                count = len(whole_diary.unreadable)
                log.warning(
                    changed_answer(
                        SERVICE_NAME,
                        f"{count} of {count + len(diary)} diary entries have no show or date "
                        "watchbridge can read",
                        "the plays and ratings read from them before are kept, new ones wait",
                    ),
                    extra={"profile": profile, "unreadable_ids": sorted(whole_diary.unreadable)},
                )
            kept, kept_ratings = kept + unread, {**kept_ratings, **unread_ratings}
            rows_read = before if "rating_rows" in cursors else None
            ratings = edited_since(
                {**read.ratings, **kept_ratings}, baseline, rows_read, self.clock()
            )
            ticked = ticked_by_us(baseline, await self._ticked(profile))
            side = Side(read.plays + kept + watched_state(baseline) + ticked, ratings)
            # A kept rating's rows: those it had, and any the read listed of its item.
            kept_rows = {k: before[k] for k in unread_ratings if k in before}
            rows = rating_rows(rating_rows(kept_rows, read), side)
        else:
            again = await self._read_again(profile) if missed_before else None
            partial = again is None or not again.all_listed
            if again is None:
                fresh = await self._new_entries(profile, cursors)
            else:
                known = known_ids(cursors) | set(written.values())
                fresh = [e for e in again.entries if e.id not in known]
            ids = known_ids(cursors) | {e.id for e in fresh}  # ours stay out: see _written
            read = serializd_side(fresh, ours | await self._unanswered(profile, fresh))
            merged = merge_diary(baseline or Side(), read)
            side = resolve_expected(merged, written)
            if "ledger_ids" in cursors:  # (a cursor of an older version: none are new)
                side = with_written(side, written, set(json.loads(cursors["ledger_ids"])))
            rows = rating_rows(before, read)
            if again is not None:
                # Missed by two reads; one missed by a read that saw the diary change is read
                # again by the next run (`missed_by`).
                gone, missed = missed_by(again, missed_before, missed_before, known)
                whole = serializd_side(
                    again.entries, ours | await self._unanswered(profile, again.entries)
                )
                side, rows = without_entries(side, gone, rows, whole)
                ids -= gone
        # A log made in the app after the play of ours of that viewing is no second play, nor
        # is it once a link deleted ours (the viewing was removed on the other side).
        read_now = diary if full else fresh
        logged_again, left = await self._logged_again(profile, read_now, side, baseline)
        if left:
            log.info(
                "serializd: a link deleted watchbridge's diary entry of a viewing removed on "
                "the other side; your own log of it is left in your diary, not copied back",
                extra={"profile": profile, "entries": len(left)},
            )
        side = without_records(side, logged_again)
        # A rating's rows (what removing it deletes) live in the cursors: the baseline keeps
        # only its value and time. So does when each log dated by the day alone was logged.
        logged = day_logged(read_now, logged_cursor(cursors), side)
        side = Side(
            side.plays,
            {k: replace(r, record=rows.get(k, "")) for k, r in side.ratings.items()},
            logged=logged,
        )
        saved = {
            "diary_ids": json.dumps(sorted(ids)),
            "written": _ledger_mark(written),
            "ledger_ids": json.dumps(sorted(set(written.values()))),
            "rating_rows": json.dumps(rows, sort_keys=True),
        }
        if missed:
            saved[MISSED] = json.dumps(sorted(missed))
        saved[DAY_LOGGED] = json.dumps(logged, sort_keys=True)  # even empty: read by this release
        if "marks" in cursors:
            saved["marks"] = cursors["marks"]
        saved |= {k: cursors[k] for k in (UNLOGGED, UNLOGGED_OLDER) if k in cursors}
        # refine() adds to these (the engine saves the dict once the plan is applied)
        self._cursors[profile], self._full[profile] = saved, full
        # Whether an entry new since the last run may be missing from this read: a delta read
        # stops at the first page with nothing new, and a whole read the diary grew under may
        # miss a row (§5.1). Before the other side's play is copied, `_unlogged` looks again.
        self._partial[profile] = partial
        self._before[profile] = baseline or Side()
        return SideRead(side, saved)

    async def _logged_again(
        self, profile: str, entries: Sequence[DiaryEntry], side: Side, before: Side | None
    ) -> tuple[set[str], set[str]]:
        """The records of `entries` that are a play of ours logged again in the app
        (`logged_after_ours`), and those of a viewing a link deleted ours of (left in the
        diary, no play)."""
        written = await self._written(profile)
        skew = self.client.http.clock_skew
        lengths = await self._lengths(profile)
        deleted, removed_at = await self._deleted_by_link(profile)
        reviews = {*written.values(), *(int(p.record) for p in deleted)}
        of_ours = {review: lengths.get(review) for review in reviews}
        logged_again = logged_after_ours(entries, side, of_ours, before, skew, deleted, removed_at)
        gone = gone_now(deleted, side, before)
        left = logged_after_ours(entries, Side(), of_ours, before, skew, gone, removed_at)
        return logged_again, left

    async def _unlogged(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None
    ) -> Side:
        """`own` with the diary entries a read that cannot tell it listed every row missed
        (`_partial`), when the other side holds a dated play `own` does not explain, not
        known missing yet (UNLOGGED): copied, it would be logged on Serializd beside the
        user's own log of it. The whole diary is read then (no read by show exists, §5.1),
        and what it finds new is added as a delta read adds it. The plays a whole read
        found missing are kept (UNLOGGED, capped: `remember_unlogged`), so that one that
        stays so (a dead letter) costs no read each run. Nor is the diary read for a play a
        webhook's row is taking there (`waiting`, `carried`): that row logs it, the link
        does not."""
        cursors = self._cursors.get(profile)
        if cursors is None or not self.guards:
            return own
        lonely = await asyncio.to_thread(unlogged, own, other)
        known_missing = found_missing(lonely, cursors)
        partial = self._partial.get(profile, False)
        to_copy = lonely - known_missing
        if partial and to_copy:
            # Not one the baseline explained, that lost its partner on Serializd since (an
            # entry deleted there, read by a daily read): the plan carries that removal.
            before = self._before.get(profile, Side())
            to_copy &= await asyncio.to_thread(unlogged, before, other)
        if partial and to_copy and waiting:
            to_copy -= carried(to_copy, self.service, waiting)
        if partial and to_copy:
            whole_diary = await self.client.diary_read(profile, growing=True)
            await self._forget_first_misses(profile, whole_diary.listed)
            own = await self._with_unseen(profile, own, whole_diary.entries, cursors)
            lonely = await asyncio.to_thread(unlogged, own, other)
            # Grew again: the next run's read looks again. (A diary answering no count shows
            # no growth: this read, begun after the run's, found what was logged during that.)
            partial = whole_diary.changed
            if partial and (unsure := lonely - known_missing):
                # A log made while it read may be on a page read before it: copied now, the
                # play would be logged beside it. None of them is, this run.
                log.info(
                    "serializd diary grew while it was read whole before plays were copied "
                    "there: they wait for the next run, which reads it again",
                    extra={"profile": profile, "plays": len(unsure)},
                )
                own = replace(own, unlisted=frozenset(p.rpartition("@")[0] for p in unsure))
        cursors.pop(UNLOGGED_OLDER, None)
        cursors |= remember_unlogged(lonely & known_missing if partial else lonely, UNLOGGED_NAMED)
        return own

    async def _with_unseen(
        self,
        profile: str,
        own: Side,
        entries: Sequence[DiaryEntry],
        cursors: dict[str, str],
    ) -> Side:
        """`own` with the entries among `entries` the run's read did not know (as a delta
        read adds them), and the cursors counting them."""
        known = known_ids(cursors) | set((await self._written(profile)).values())
        fresh = [e for e in entries if e.id not in known]
        if not fresh:
            return own
        log.info(
            "serializd diary entries the run's read of the diary did not list were found by a "
            "read of the whole diary, before the other side's plays are copied there",
            extra={"profile": profile, "entries": len(fresh)},
        )
        read = serializd_side(
            fresh, await self._rated(profile) | await self._unanswered(profile, fresh)
        )
        side = merge_diary(own, read)
        logged_again, _ = await self._logged_again(profile, fresh, side, own)
        side = without_records(side, logged_again)
        rows = rating_rows(json.loads(cursors.get("rating_rows") or "{}"), read)
        cursors["diary_ids"] = json.dumps(sorted(known_ids(cursors) | {e.id for e in fresh}))
        cursors["rating_rows"] = json.dumps(rows, sort_keys=True)
        logged = day_logged(fresh, own.logged, side)
        if logged:
            cursors[DAY_LOGGED] = json.dumps(logged, sort_keys=True)
        return Side(
            side.plays,
            {k: replace(r, record=rows.get(k, r.record)) for k, r in side.ratings.items()},
            logged=logged,
        )

    async def refine(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None = None
    ) -> Side:
        """Turn Serializd's watched state into undated plays where it matters.

        Every run: the ticks (or marks) of the seasons where `other` holds plays the diary does
        not explain. A full read, when Serializd's plays flow to the other side, also turns
        every season marked watched into plays (one per episode, no extra read) and reads the
        ticks of the seasons the user touched on Serializd (`discovery_seasons`) wherever an
        episode is still missing on both sides (`worth_reading`): Serializd lists ticks one
        season per request and has no listing of the seasons holding any.

        The diary entries our deliveries wrote since `read` took the ledger are added
        (`_written_since_read`) before the ticks are read and again after: the ticks read show
        their ticks, which are not plays of their own.
        """
        self.tally = None
        own = await self._written_since_read(profile, own)
        own = await self._unlogged(profile, own, other, waiting)
        # (kept apart: the steps below build `own` anew)
        unlisted, logged = own.unlisted, own.logged
        # Pure work over every play of both sides (at 60,000 plays ~0.5 s of CPU): on a
        # thread, so that the event loop answers webhooks meanwhile.
        asked, other_undated = await asyncio.to_thread(unexplained, own, other)
        discover = self.discover and self._full.get(profile, False)
        if not asked and not discover:
            return replace(own, unlisted=unlisted, logged=logged)
        marks = await self._marks(profile)
        touched: dict[int, set[int]] = {}
        watching: set[int] = set()
        if discover:
            ours = {str(review) for review in (await self._written(profile)).values()}
            touched = await asyncio.to_thread(named_seasons, own, ours)
            watching = set(await self.client.currently_watching(profile))
        held = await asyncio.to_thread(episodes_held, own, other)
        was_marked = await asyncio.to_thread(marked_before, own)
        read_seasons: list[tuple[int, int, set[int] | None, set[int]]] = []
        shows = {*asked, *marks, *touched, *watching} if discover else {*asked}
        self.tally = tally = Tally("shows", len(shows))
        for done, show in enumerate(sorted(shows)):
            tally.done = done
            try:
                seasons = await show_seasons(self.client, self.store, show, self.clock, counts=True)
            except SerializdItemError:
                continue  # a show Serializd does not know: nothing of it is watched there
            marked = {n for n, i in seasons.ids.items() if i in marks.get(show, ())}
            candidates = set(asked.get(show, {}))
            if discover:
                numbers = touched.get(show, set()) | marked
                candidates |= marked | discovery_seasons(seasons.ids, numbers, show in watching)
            for season in sorted(candidates):
                season_id = seasons.ids.get(season)
                if season_id is None:
                    continue
                episodes = set(asked.get(show, {}).get(season, ()))
                watched: set[int] | None = None
                if season in marked:
                    episodes |= await self._episodes(show, season, seasons)
                elif episodes or (
                    discover
                    and worth_reading(
                        seasons.episodes.get(season),
                        held.get((show, season), set()),
                        (show, season) in was_marked,
                    )
                ):
                    watched = await self.client.episode_logs(profile, show, season, season_id)
                    self.seasons_read += 1
                else:
                    continue
                read_seasons.append((show, season, watched, episodes))
        tally.done = len(shows)
        # An entry landing after the ledger was taken above and before its season's ticks were
        # read is in neither, but its tick is: the ledger is taken again (a delivery records the
        # entry before it ticks the episode).
        own = await self._written_since_read(profile, own)
        own = await asyncio.to_thread(with_seasons_read, own, read_seasons, other_undated)
        return replace(own, unlisted=unlisted, logged=logged)

    async def _episodes(self, show: int, season: int, seasons: ShowSeasons) -> set[int]:
        """Every episode number of a season: its count in the catalogue, else the season's
        own listing (one more read)."""
        count = seasons.episodes.get(season)
        if count is not None:
            return set(range(1, count + 1))
        try:
            return set(await self.client.season_episodes(show, season))
        except SerializdItemError:
            return set()

    async def _marks(self, profile: str) -> dict[int, set[int]]:
        """Show -> season ids marked watched: read on a full read (one paged listing of every
        marked show), else taken from the cursors."""
        cursors = self._cursors.setdefault(profile, {})
        if self._full.get(profile, True) or "marks" not in cursors:
            watched = await self.client.watched_read(profile)
            marks = {str(s): ids for s, ids in watched.shows}
            if watched.unreadable:
                before = json.loads(cursors.get("marks") or "{}")
                marks |= {str(s): before[str(s)] for s in watched.unreadable if str(s) in before}
                count = len(watched.unreadable)
                log.warning(
                    changed_answer(
                        SERVICE_NAME,
                        f"{count} of {count + len(watched.shows)} shows on the watched pages "
                        "have no seasons watchbridge can read",
                        "the seasons marked watched read from them before are kept, new ones wait",
                    ),
                    extra={"profile": profile, "unreadable_shows": sorted(watched.unreadable)},
                )
            cursors["marks"] = json.dumps(marks, sort_keys=True)
        return {int(s): set(ids) for s, ids in json.loads(cursors["marks"]).items()}

    async def aclose(self) -> None:
        await self.client.aclose()


def make_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Clock,
    metrics: Metrics | None = None,
) -> SerializdReader:
    assert config.services.serializd is not None
    accounts = {p: a for p in profiles if (a := config.profiles[p].accounts.serializd)}
    client = SerializdClient(
        config.services.serializd, store, accounts=accounts, clock=clock, metrics=metrics
    )
    return SerializdReader(
        client,
        store,
        clock,
        discover=any(source == "serializd" for source, _ in flows(link)),
        guards=any(target == "serializd" for _, target in flows(link)),
    )
