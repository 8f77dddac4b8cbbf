"""Trakt's side of a link: `/sync/last_activities` first, then only what moved.

History has no delete feed, so a delta read re-reads a rolling window (the last week, or since
the previous read if that is older) and the plays of the baseline inside that window that are
gone count as removed; older plays are kept from the baseline until the daily full read.
When history moved and the change was no write of ours, it may lie further back than the
window, beside what the window shows (a play backdated on trakt.tv, an old one removed):
Trakt's play counts (`/sync/watched`, each movie's and each show's own: a page per 250) are
compared with the plays the read holds, and the history of each show or movie whose count
moved is read (`counts_moved`, `groups_read`). Where the counts cannot tell (an item gone from
them, too many moved, history moved with nothing to show for it, or the counts unreadable),
the read says so (`SideRead.missed`) and the engine reads Trakt in full in that run. A change
that leaves an item's count as it was (an old play of it removed and another added between
two runs) waits for the daily full read.
Ratings are re-read whole (one short listing) only when their activity stamp moved.

Plays marked "watched on release date" (dated at their episode's air date + runtime) that a
viewing on the other side is left waiting for are read undated (`release_marks`, `refine`):
one request per show asked, its answer cached for a week (asked again once for an episode it
lacks: a season aired since).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from watchbridge.accounts import account_named
from watchbridge.config import Config, Link, link_profiles
from watchbridge.deliver.trakt import forget_plays
from watchbridge.http import RateLimited, Unavailable, changed_answer
from watchbridge.logs import Repeating
from watchbridge.loose import obj
from watchbridge.metrics import Metrics
from watchbridge.model import MediaRef
from watchbridge.readers import Clock, OnTheirWay, SideRead, some_titles
from watchbridge.reconcile import EXPECTED, UNDATED, Play, Side, given_once, settle_expected
from watchbridge.release_marks import (
    LOOKUP_FORGOTTEN_AFTER,
    Moments,
    as_marks,
    cached_moments,
    complete,
    failed_lookups,
    found_marks,
    held_items,
    holding,
    lookups_told,
    marks_read,
    missing_places,
    places_asked,
    release_candidates,
    release_moments,
    seasons_asked,
    second_marks,
    show_of,
    synced_as_dated,
    to_cache,
    unlisted_before,
    unread_seasons,
    viewings_logged,
    waited_out,
)
from watchbridge.services.trakt import (
    SERVICE,
    TraktAccountError,
    TraktAuthError,
    TraktClient,
    TraktError,
    TraktItemError,
    parse_iso,
)
from watchbridge.sides import (
    WatchedEpisode,
    episode_key,
    movie_key,
    ref_for_key,
    trakt_episode_aliases,
    trakt_names_item,
    trakt_side,
    trakt_unnamed_entries,
    trakt_unread_entries,
    trakt_unread_ratings,
    trakt_watched_episodes,
    watched_lately,
)
from watchbridge.store import FAILED_LOOKUPS, Store

log = logging.getLogger(__name__)
# A delta read meets history entries or ratings it cannot read at every run until watchbridge
# is updated: a warning at first, then hourly with the count since (the full read says it
# daily).
_UNREAD_HISTORY = Repeating(log)
# A show or movie Trakt answers without the TMDB id it gave before stays so for days or weeks:
# a warning at first, then hourly with the count since.
_TMDB_GONE = Repeating(log)
# Mirror collection: "show:<Trakt id>" or "movie:<Trakt id>" -> the TMDB id Trakt last gave it.
TMDB_IDS = "tmdb_ids"

OVERLAP = 6 * 3600.0  # plays logged late with an earlier watched_at
RECONCILE_WINDOW = 7 * 86400.0  # how far back a delta read looks for removals
# Seconds Trakt's stamp of a history change, put on our clock, may fall after we noted our
# write that made it: its Date header's whole seconds (the skew read by it) and the way back.
STAMP_SLACK = 5.0
# A live scrobble is remembered at its play's time and dated by Trakt when sent: up to
# delivery.late_after (2 min by default; 10 before) and the call's own tries later.
SCROBBLE_LAG = 15 * 60.0
# Cursor: the episodes watched in the last RECONCILE_WINDOW with their own ids
# (`watched_episodes_json`), kept for a run that reads no history (Trakt unchanged, the other
# side not): the link's guard against copying a webhook play still on its way keys a play
# named by those ids only through them (`SideRead.aliases`).
RECENT_EPISODES = "recent_episodes"
_RECENT_EPISODES_FORMAT = 1  # {"v": 1, "episodes": [[key, at, trakt, tmdb, tvdb], ...]}
# Mirror collection: history id -> watched_at of the plays taken for marks of "watched on
# release date" (`release_marks`): read undated at every run after, asking nothing.
RELEASE_MARKS = "release_marks"
# Mirror collection: history id -> watched_at of the episodes' plays Trakt logged by a scrobble
# or a check-in (`release_marks.viewings_logged`): never taken for marks, also once a later run
# reads them from the baseline only. Kept as reads find them, pruned by the full read: one row
# per scrobbled episode play, so a run looks up only the records it asks about (`mirror_has`).
VIEWINGS = "live_viewings"
# Cache: a show's TMDB id -> its episodes' release moments (`release_moments`); an episode's
# air date and runtime seldom change once it aired.
RELEASES_CACHE = "trakt-release-moments"
RELEASES_TTL = 7 * 86400.0
# The shows and movies whose play count moved are read one by one (a request per 250 of each
# one's plays) up to this many, or up to one per 250 plays of the whole history where that is
# more; past that the whole history is read instead, costing no more.
ITEMS_READ_MOST = 10


def _lookup_failed(exc: TraktError | Unavailable) -> bool:
    """Whether a show's failed lookup holds that show's plays only: Trakt failing on it or
    answering it unreadably; not a 429 (paced and resumed as every read is) nor a refused
    sign-in or account (every request fails alike)."""
    if isinstance(exc, RateLimited | TraktAuthError | TraktAccountError):
        return False
    return not (isinstance(exc, Unavailable) and exc.status == 429)


def media_types(link: Link) -> tuple[str, ...]:
    """The Trakt history types the other side of `link` can hold."""
    return ("movies", "episodes") if link.movies else ("episodes",)


Played = tuple[MediaRef, float]  # an item, and when Trakt holds it watched


def plays_gone(baseline: Side, read: Side) -> tuple[list[Played], list[Played]]:
    """The plays of `baseline` a Trakt read no longer holds (its own records the read lacks,
    and plays we wrote, not read back under a Trakt id yet, of which it holds no play near
    their minute), and the read's plays of those items. Pure."""
    held = {p.record for p in read.plays}
    near = {(p.item, int(p.at // 60) + d) for p in read.plays for d in range(-2, 3)}
    gone = [
        (ref, p.at)
        for p in baseline.plays
        if p.at != UNDATED
        and p.record not in held
        and (given_once(p.record) or (p.item, int(p.at // 60)) not in near)
        and (ref := ref_for_key(p.item))
    ]
    items = {ref.key() for ref, _ in gone}
    kept = [
        (ref, p.at)
        for p in read.plays
        if p.at != UNDATED and (ref := ref_for_key(p.item)) and ref.key() in items
    ]
    return gone, kept


def _named_media(entry: Any) -> tuple[str, dict[str, Any]] | None:
    """The Trakt object an entry's item is keyed by ("show" for a show, season or episode,
    "movie" for a movie), with its `ids`; None when the entry names none."""
    if not isinstance(entry, dict):
        return None
    name = "movie" if entry.get("type") == "movie" else "show"
    media = entry.get(name)
    if not isinstance(media, dict) or not isinstance(media.get("ids"), dict):
        return None
    return name, media


def tmdb_ids(entries: Iterable[Any]) -> dict[str, Any]:
    """ "show:<Trakt id>" or "movie:<Trakt id>" -> the TMDB id Trakt gives it, for every show
    and movie the entries name with both ids. Pure."""
    found: dict[str, Any] = {}
    for entry in entries:
        named = _named_media(entry)
        if named is not None:
            ids = named[1]["ids"]
            if ids.get("trakt") and ids.get("tmdb"):
                found[f"{named[0]}:{ids['trakt']}"] = ids["tmdb"]
    return found


def with_tmdb_read_before(
    entries: Sequence[Any], known: Mapping[str, Any]
) -> tuple[list[Any], set[str]]:
    """`entries` with the TMDB id Trakt gave before (`known`, see `tmdb_ids`) put back where
    Trakt now names the same show or movie (its Trakt id) without one, and the titles of
    those. Trakt drops a show's TMDB id while TMDB merges or deletes its entry: read without
    it, every play and rating of the show would read as removed on Trakt, and be removed on
    the other side. Pure (the entries changed are copies)."""
    kept: list[Any] = []
    titles: set[str] = set()
    for entry in entries:
        named = _named_media(entry)
        if named is not None:
            name, media = named
            ids = media["ids"]
            before = known.get(f"{name}:{ids.get('trakt')}")
            if not ids.get("tmdb") and before:
                entry = {**entry, name: {**media, "ids": {**ids, "tmdb": before}}}
                titles.add(str(media.get("title") or f"{name} {ids.get('trakt')}"))
        kept.append(entry)
    return kept, titles


def tmdb_gone(titles: Iterable[str]) -> str:
    """What to say of the shows and movies Trakt names without the TMDB id it gave before."""
    shown = some_titles(sorted(titles))
    return (
        f"Trakt no longer gives the TMDB id it gave before for {shown}: their plays and "
        "ratings on Trakt are linked by that id as before, so none is taken as removed (TMDB "
        "may be merging or deleting its entry; if this lasts for weeks, check the show's or "
        "movie's TMDB id on trakt.tv)"
    )


def unread_history(history: Sequence[Any]) -> str:
    """What of a history answer watchbridge cannot read, said with `changed_answer` ("" when
    nothing): entries naming no item (`trakt_unnamed_entries`), and entries without a
    `watched_at` field at all (Trakt sends `null` for a play without a date, so a field gone
    is a changed answer). Both are left out of the read (see `unread_kept`). Pure."""
    unnamed = trakt_unnamed_entries(history)
    missing = sum(1 for e in history if trakt_names_item(e) and "watched_at" not in e)
    parts = [
        f"{count} of {len(history)} history entries {what}"
        for count, what in (
            (unnamed, "name no item watchbridge can read"),
            (missing, "have no `watched_at`"),
        )
        if count
    ]
    if not parts:
        return ""
    kept = (
        "every play read before is kept (a removal made meanwhile waits), new ones wait"
        if unnamed
        else "the plays read before of their items are kept, new ones wait"
    )
    return changed_answer("Trakt", "; ".join(parts), kept)


def unread_kept(
    history: Sequence[dict[str, Any]], baseline: Side | None, read: Side
) -> tuple[Play, ...]:
    """The plays the baseline held of the items of history entries without a `watched_at`
    field (`trakt_unread_entries`) that `read` lacks: Trakt still holds plays of those items,
    so none of them is a removal to carry to the other side, nor forgotten. A play we wrote
    and have not read back yet (expected) is kept under the id of one of the item's entries
    the baseline does not know, at its own time, so the engine takes it as read back; a new
    play of such an item waits until it reads again. An entry naming no item watchbridge can
    read (`trakt_unnamed_entries`) may be any of them: then every play of the baseline that
    `read` lacks is kept, and a removal made meanwhile waits until it reads again. Pure."""
    unread = trakt_unread_entries(history)
    unnamed = trakt_unnamed_entries(history)
    if not (unread or unnamed) or baseline is None:
        return ()
    known = {p.record for p in baseline.plays}
    fresh: dict[str, list[str]] = {}  # item -> ids of its unread entries new to the baseline
    for item, record in unread:
        fresh.setdefault(item, [])
        if record and record not in known:
            fresh[item].append(record)
    held = {p.record for p in read.plays}
    kept: list[Play] = []
    for play in sorted(baseline.plays, key=lambda p: p.at):
        if play.item not in fresh or play.record in held:
            continue
        if not play.record.startswith(EXPECTED):
            kept.append(play)
        elif fresh[play.item]:
            kept.append(Play(play.item, play.at, fresh[play.item].pop(0)))
    if unnamed:
        held |= {p.record for p in kept}
        kept += [
            play
            for play in baseline.plays
            if play.record not in held and not play.record.startswith(EXPECTED)
        ]
    return tuple(kept)


def unread_ratings(
    rated: Sequence[dict[str, Any]], baseline: Side | None, read: Side
) -> tuple[Side, str]:
    """`read` with the ratings of entries in a shape watchbridge does not know taken care of,
    and what to say of them with `changed_answer` ("" when none). Pure.

    An entry whose item is known but not its `rating` keeps the baseline's rating of the
    item; one that names no item watchbridge can read keeps every rating of the baseline
    the read lacks (any may be its). A rating without its `rated_at` is read with its value:
    the same as the baseline's, dated, it keeps the baseline's date (nothing changed); else it is
    undated, a change told by its value (`reconcile._changed`). Those items are the side's
    `unread_ratings`: what only a date or an absence would decide there waits
    (`_rating_decision`), so a Trakt rating unread is neither taken as removed nor written
    over by a rating that is not a change since the last run."""
    unread = trakt_unread_ratings(rated)
    before = baseline.ratings if baseline else {}
    scores = dict(read.ratings)
    waiting: set[str] = set()
    undated = [item for item, rating in scores.items() if rating.at == UNDATED]
    for item in undated:
        was = before.get(item)
        if was is not None and was.value == scores[item].value and was.at != UNDATED:
            scores[item] = was
        else:
            waiting.add(item)
    named = {item for item in unread if item is not None}
    if None in unread:
        named |= set(before) - set(scores)
    for item in named:
        waiting.add(item)
        if item in before and item not in scores:
            scores[item] = before[item]
    parts = []
    if unread:
        parts.append(
            f"{len(unread)} of {len(rated)} ratings have no item or `rating` watchbridge can read"
        )
    if undated:
        parts.append(f"{len(undated)} of {len(rated)} ratings have no `rated_at`")
    if not parts:
        return read, ""
    told = changed_answer(
        "Trakt",
        "; ".join(parts),
        "the ratings read before of their items are kept, new ones and changes only a date "
        "could decide wait",
    )
    return replace(read, ratings=scores, unread_ratings=frozenset(waiting)), told


def _again_if_unread(saved: dict[str, str], side: Side) -> dict[str, str]:
    """The cursors to save: with ratings unread, none that would let the next run skip
    reading them (a run that reads no ratings would not know which wait)."""
    if not side.unread_ratings:
        return saved
    return {**saved, "all": "", "rated": ""}


def watched_episodes_json(episodes: Mapping[str, WatchedEpisode]) -> str:
    """`episodes` as the cursor keeps them: compact (one list per episode). Pure."""
    rows = [[key, int(e.at), e.trakt, e.tmdb, e.tvdb] for key, e in sorted(episodes.items())]
    return json.dumps({"v": _RECENT_EPISODES_FORMAT, "episodes": rows}, separators=(",", ":"))


def watched_episodes_kept(cursors: Mapping[str, str]) -> dict[str, WatchedEpisode]:
    """The episodes an earlier read kept in `cursors` (none from a release that kept none, or
    kept them in another form: the next read of history finds them again). Pure."""
    try:
        kept = json.loads(cursors.get(RECENT_EPISODES) or "{}")
        if kept.get("v") != _RECENT_EPISODES_FORMAT:
            return {}
        return {
            str(key): WatchedEpisode(float(at), *(None if v is None else str(v) for v in ids))
            for key, at, *ids in kept["episodes"]
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _side_read(
    saved: dict[str, str],
    side: Side,
    watched: Mapping[str, WatchedEpisode],
    missed: bool = False,
) -> SideRead:
    """The read, its cursors keeping the episodes watched lately for the next run."""
    saved = {**saved, RECENT_EPISODES: watched_episodes_json(watched)}
    aliases = trakt_episode_aliases(watched)
    return SideRead(side, _again_if_unread(saved, side), aliases=aliases, missed=missed)


def stamps(activities: Mapping[str, Any], types: tuple[str, ...]) -> dict[str, str]:
    """The activity stamps a read depends on: watched per type, rated for every level."""

    def at(section: str, field: str) -> str:
        return str((activities.get(section) or {}).get(field) or "")

    rated_sections = ("shows", "seasons", *types)
    return {
        "all": str(activities.get("all") or ""),
        "watched": ",".join(at(t, "watched_at") for t in types),
        "rated": ",".join(at(s, "rated_at") for s in rated_sections),
    }


def delta_since(history_at: float, now: float) -> float:
    return min(history_at - OVERLAP, now - RECONCILE_WINDOW)


def merge_history(baseline: Side, recent: Side, since: float) -> tuple[Play, ...]:
    """Baseline plays older than `since` (and plays we queued ourselves), and everything the
    delta read found after it."""
    kept = tuple(p for p in baseline.plays if p.at < since or p.record.startswith(EXPECTED))
    return kept + tuple(p for p in recent.plays if p.at >= since)


# The service reads a link's sides on the event loop that answers webhooks: what follows turns
# a whole history (60,000 entries: ~0.3 s of CPU on a first run, ~1 s with a baseline) into
# a side, so the reader runs it on a thread and a webhook is not kept waiting behind it.


def full_side(
    history: Sequence[Any], rated: Sequence[Any], baseline: Side | None
) -> tuple[Side, list[str]]:
    """A full read's side (history and ratings, with what the baseline keeps of entries
    watchbridge cannot read) and what to say of those entries. Pure."""
    side = trakt_side(history, rated)
    side = replace(side, plays=side.plays + unread_kept(history, baseline, side))
    side, rated_unread = unread_ratings(rated, baseline, side)
    return side, [told for told in (unread_history(history), rated_unread) if told]


def delta_plays(
    history: Sequence[Any], baseline: Side, since: float
) -> tuple[tuple[Play, ...], str]:
    """A delta read's plays (`merge_history`, with `unread_kept`) and what to say of the
    entries watchbridge cannot read ("" when none). Pure."""
    plays = merge_history(baseline, trakt_side(history, ()), since)
    plays += unread_kept(history, baseline, Side(plays))
    return plays, unread_history(history)


def unaccounted(baseline: Side, plays: Sequence[Play], since: float) -> bool:
    """Whether a delta read's plays (`delta_plays`, read from `since`) show nothing that
    accounts for Trakt's history having moved: no play new to the baseline, and none of the
    baseline's from `since` on gone. Trakt's history then changed where the read does not
    look: a play dated before `since` added (marked "watched on release date", dated by
    hand, or of unknown date: none is listed by a read from a date), or one removed. Pure."""
    records = {p.record for p in plays}
    if records - {p.record for p in baseline.plays}:
        return False
    return not any(
        p.at >= since and not p.record.startswith(EXPECTED) and p.record not in records
        for p in baseline.plays
    )


def last_watched(activities: Mapping[str, Any], types: Sequence[str]) -> float | None:
    """The latest `watched_at` activity stamp of `types` (when history last changed), None
    when none can be read. Pure."""
    found = []
    for kind in types:
        stamp = (activities.get(kind) or {}).get("watched_at")
        try:
            found.append(parse_iso(str(stamp)))
        except (TypeError, ValueError):
            continue
    return max(found, default=None)


def moved_types(types: Sequence[str], before: str, after: str) -> tuple[str, ...]:
    """Of the history `types`, those whose watched stamp moved from `before` to `after` (the
    "watched" of two `stamps`); all of them when `before` was kept for other types. Pure."""
    old, new = before.split(","), after.split(",")
    if len(old) != len(types) or len(new) != len(types):
        return tuple(types)
    return tuple(kind for kind, was, now in zip(types, old, new, strict=True) if was != now)


def play_group(item: str) -> str | None:
    """What Trakt counts the plays of `item` under in its watched snapshot, and reads one
    history of (`/sync/history/{movies|shows}/{id}`): a movie (its key), or an episode's
    show (the episode's key without its season and number). None for other keys. Pure."""
    if item.startswith("movie:"):
        return item
    if item.startswith("episode:"):
        return item.rpartition(":")[0]
    return None


@dataclass(frozen=True)
class Counted:
    """A movie or show of Trakt's watched snapshot: the history type and Trakt ids to read
    its plays by, how many it counts (None: a count watchbridge cannot read), and since when
    for a show the user started a rewatch of (`reset_at`, §10)."""

    kind: str
    trakt: tuple[str, ...]
    plays: int | None
    reset_at: float | None = None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _reset_at(entry: Mapping[str, Any]) -> float | None:
    stamp = entry.get("reset_at")
    try:
        return parse_iso(str(stamp)) if stamp else None
    except ValueError:
        return None


def watched_counts(watched: Iterable[Any]) -> dict[str, Counted]:
    """`play_group` -> what Trakt's watched snapshot (`/sync/watched/movies` entries marked
    `type` movie, and `/sync/watched/shows?extended=noseasons`, §10) counts of it: each item's
    own `plays`. Entries that name no item a read keys are left out, as their plays are from
    a read. Pure."""
    counted: dict[str, Counted] = {}
    for entry in watched:
        if not isinstance(entry, dict):
            continue
        if entry.get("type") == "movie":
            kind, ids = "movies", obj(obj(entry.get("movie")).get("ids"))
            group = movie_key(ids)
        else:
            kind, ids = "shows", obj(obj(entry.get("show")).get("ids"))
            tmdb = ids.get("tmdb")
            group = play_group(episode_key(tmdb, 1, 1)) if tmdb else None
        if group is None or not ids.get("trakt"):
            continue
        plays, reset_at = _count(entry.get("plays")), _reset_at(entry)
        was = counted.get(group)  # two Trakt items of one TMDB id: both counted, both read
        if was is not None:
            both = (was.plays, plays) if was.reset_at == reset_at else (None, None)
            plays = None if None in both else sum(c or 0 for c in both)
        trakt = (*(was.trakt if was else ()), str(ids["trakt"]))
        counted[group] = Counted(kind, trakt, plays, reset_at)
    return counted


def _told(count: Counted, plays: Sequence[tuple[str, float, bool]]) -> bool:
    """Whether `count` agrees with the plays held of its item ((item, at, read from Trakt),
    plays we wrote and have not read back yet counted there or not, as landed or not) in one
    of the ways Trakt may count a show's plays: its specials counted or not (asked for
    nowhere), and, since a rewatch started, every play (trakt-api#661) or those since then
    (the reference sample). Pure."""
    assert count.plays is not None
    for specials in (True, False):
        for since in {None, count.reset_at}:
            kept = [
                read
                for item, at, read in plays
                if (specials or ":s0e" not in item) and (since is None or at >= since)
            ]
            if sum(kept) <= count.plays <= len(kept):
                return True
    return False


def counts_moved(counted: Mapping[str, Counted], plays: Sequence[Play]) -> tuple[list[str], bool]:
    """The groups (`play_group`) whose plays Trakt counts (`watched_counts`) more of than
    `plays` hold, plays we wrote included (those count there once landed), or fewer than
    `plays` hold read from Trakt: a play added or removed there that the read does not show
    (`_told`: in none of the ways Trakt may count them; a change that leaves the count
    agreeing, such as an old play removed and another added of one item, waits for the daily
    full read). And whether some group `plays` hold read from Trakt is missing from the counts
    (all its plays removed, or a count unread): the counts cannot tell. Pure."""
    held: dict[str, list[tuple[str, float, bool]]] = {}
    for play in settle_expected(Side(tuple(plays))).plays:
        group = play_group(play.item)
        if group is not None:
            read = not play.record.startswith(EXPECTED)
            held.setdefault(group, []).append((play.item, play.at, read))
    moved = [
        group
        for group, count in counted.items()
        if count.plays is not None and not _told(count, held.get(group, ()))
    ]
    untold = any(group not in counted and any(r for _, _, r in ps) for group, ps in held.items())
    return sorted(moved), untold


def groups_read(
    plays: Sequence[Play], history: Sequence[Any], groups: Collection[str]
) -> tuple[Play, ...]:
    """`plays` with those of `groups` read from Trakt replaced by `history`, those groups'
    whole history (with what the plays held of entries watchbridge cannot read,
    `unread_kept`); plays we wrote and have not read back yet are kept. Pure."""

    def replaced(play: Play) -> bool:
        return play_group(play.item) in groups and not play.record.startswith(EXPECTED)

    read = Side(tuple(p for p in trakt_side(history, ()).plays if play_group(p.item) in groups))
    kept = tuple(p for p in plays if not replaced(p))
    return kept + read.plays + unread_kept(history, Side(tuple(filter(replaced, plays))), read)


def rated_side(
    rated: Sequence[dict[str, Any]], baseline: Side, plays: tuple[Play, ...]
) -> tuple[Side, str]:
    """`plays` with the ratings read again (`unread_ratings`). Pure."""
    return unread_ratings(rated, baseline, Side(plays, trakt_side((), rated).ratings))


def tmdb_ids_new(entries: Iterable[Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """The TMDB ids the entries give (`tmdb_ids`) that `known` lacks or holds otherwise."""
    return {key: tmdb for key, tmdb in tmdb_ids(entries).items() if known.get(key) != tmdb}


def keyed_as_before(
    history: Sequence[Any], rated: Sequence[Any], known: Mapping[str, Any]
) -> tuple[list[Any], list[Any], set[str]]:
    """Both listings `with_tmdb_read_before`, and the titles of both. Pure."""
    history, gone = with_tmdb_read_before(history, known)
    rated, gone_too = with_tmdb_read_before(rated, known)
    return history, rated, gone | gone_too


def forget_gone(store: Store, profile: str, baseline: Side, read: Side) -> None:
    """Tell the delivery target which plays Trakt no longer holds (`plays_gone`,
    `forget_plays`)."""
    gone, kept = plays_gone(baseline, read)
    forget_plays(store, profile, gone, SCROBBLE_LAG, kept)


class TraktReader:
    service = "trakt"

    def __init__(
        self,
        client: TraktClient,
        types: tuple[str, ...],
        clock: Clock,
        store: Store | None = None,
    ) -> None:
        self.client = client
        self.types = types
        self.clock = clock
        self.store = store  # where the delivery target keeps what Trakt holds
        self._activities: dict[str, dict[str, Any]] = {}
        # A dry run keeps no play as a mark (`refine`); the release moments it asked for
        # are cached all the same (they only save requests).
        self.dry_run = False
        self.link_name: str | None = None  # the link reading (`Linked`): its own writes

    @property
    def requests_sent(self) -> int:
        return self.client.http.requests_sent

    async def _stamps(self, profile: str) -> dict[str, str]:
        if profile not in self._activities:
            self._activities[profile] = await self.client.last_activities(profile)
        return stamps(self._activities[profile], self.types)

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        """Whether nothing moved on Trakt; not while plays wait for a show's lookup that
        failed (`refine`): the next run asks again, changed or not (and syncs them as they
        are dated once they waited LOOKUP_WAIT)."""
        if self.store is not None:
            store, now = self.store, self.clock()
            failed = await asyncio.to_thread(
                store.mirror_get, self.service, profile, FAILED_LOOKUPS
            )
            if any(
                holding(e) and now - float(e.get("last", 0)) <= LOOKUP_FORGOTTEN_AFTER
                for e in failed.values()
            ):
                return False
        return (await self._stamps(profile))["all"] == cursors.get("all")

    async def account(self, profile: str, reading: bool) -> str | None:
        """Before a read (at most one request per sign-in token): a Trakt account of another
        person reads as plays gone."""
        if not reading:
            return None
        account = await self.client.account(profile)
        return account_named(account) if account else None

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        now = self.clock()
        moved = await self._stamps(profile)
        saved = {**moved, "history_at": str(now)}
        lately = now - RECONCILE_WINDOW
        if full or baseline is None or "history_at" not in cursors:
            history = await self._history(profile, None)
            rated = await self.client.ratings(profile)
            history, rated = await self._keyed_as_before(profile, now, history, rated, True)
            await self._note_viewings(profile, now, history, True)
            side, told = await asyncio.to_thread(full_side, history, rated, baseline)
            for unread in told:
                log.warning(unread, extra={"profile": profile})
            await self._forget_gone(profile, baseline, side)
            watched = await asyncio.to_thread(trakt_watched_episodes, history, lately)
            return _side_read(saved, side, watched)
        plays = baseline.plays
        read: dict[str, WatchedEpisode] = {}
        missed = False
        if moved["watched"] != cursors.get("watched"):
            since = delta_since(float(cursors["history_at"]), now)
            history = await self._history(profile, since)
            history, _ = await self._keyed_as_before(profile, now, history, [])
            await self._note_viewings(profile, now, history)
            plays, unread = await asyncio.to_thread(delta_plays, history, baseline, since)
            if await self._not_ours(profile, float(cursors["history_at"])):
                silent = await asyncio.to_thread(unaccounted, baseline, plays, since)
                kinds = moved_types(self.types, cursors.get("watched", ""), moved["watched"])
                plays, missed = await self._counts_read(profile, now, plays, silent, kinds)
            read = await asyncio.to_thread(trakt_watched_episodes, history, lately)
            if unread:
                _UNREAD_HISTORY.warning(("history", profile), unread, now, profile=profile)
            await self._forget_gone(profile, baseline, Side(plays))
        side = Side(plays, baseline.ratings)
        if moved["rated"] != cursors.get("rated"):
            rated = await self.client.ratings(profile)
            _, rated = await self._keyed_as_before(profile, now, [], rated)
            side, unread = await asyncio.to_thread(rated_side, rated, baseline, plays)
            if unread:
                _UNREAD_HISTORY.warning(("ratings", profile), unread, now, profile=profile)
        # With those kept from earlier reads: a run that reads no history (Trakt's unchanged,
        # the other side's not) has no others.
        watched = watched_lately(watched_episodes_kept(cursors), read, lately)
        return _side_read(saved, side, watched, missed)

    async def _not_ours(self, profile: str, read_at: float) -> bool:
        """Whether Trakt's history changed by more than writes of ours since the last read
        (`read_at`): another link's plays or removals were delivered since (dated maybe
        years back, where the run does not read again), or none of this link's or a
        webhook's was, or the last was before Trakt's stamp of the change (by Trakt's clock,
        put on ours: a host whose time sync failed is minutes off)."""
        if self.store is None:
            return True
        ours, others = await asyncio.to_thread(
            self.store.plays_written_at, profile, self.service, read_at, self.link_name
        )
        changed = last_watched(self._activities.get(profile, {}), self.types)
        return (
            others
            or ours is None
            or (changed is not None and changed - self.client.clock_skew > ours + STAMP_SLACK)
        )

    async def _counts_read(
        self,
        profile: str,
        now: float,
        plays: tuple[Play, ...],
        silent: bool,
        kinds: Sequence[str],
    ) -> tuple[tuple[Play, ...], bool]:
        """`plays` (a delta read's, after a change of history not ours) with the shows and
        movies whose play count on Trakt moved read whole (`counts_moved`, `groups_read`):
        a play backdated on trakt.tv or an old one removed, also beside a recent play the
        delta read shows. Only the counts of `kinds` are read (the history types whose stamp
        moved). And whether Trakt is to be read in full instead (`SideRead.missed`): the
        counts cannot tell, too many moved, or history moved with nothing to show for it
        (`silent`: the delta read shows nothing new or gone)."""
        try:
            snapshot: list[Any] = []
            for kind in kinds:
                if kind == "movies":
                    listed = await self.client.watched(profile, "movies")
                    snapshot += [{**e, "type": "movie"} for e in listed if isinstance(e, dict)]
                else:  # each show's own count: a page of 250 shows, not 100 with episodes
                    snapshot += await self.client.watched(profile, "shows", seasons=False)
        except (TraktError, Unavailable) as exc:
            if not _lookup_failed(exc):
                raise  # the account's or the pace's: the run stops as it would anyway
            log.warning(
                "Trakt's play counts could not be read (%s): reading its history in full",
                exc.said,
                extra={"profile": profile},
            )
            return plays, True
        snapshot, _ = await self._keyed_as_before(profile, now, snapshot, [])
        counted = await asyncio.to_thread(watched_counts, snapshot)
        prefixes = tuple("movie:" if kind == "movies" else "episode:" for kind in kinds)
        counts = [p for p in plays if p.item.startswith(prefixes)]
        groups, untold = await asyncio.to_thread(counts_moved, counted, counts)
        too_many = len(groups) > max(ITEMS_READ_MOST, len(plays) // 250)
        if untold or too_many or (silent and not groups):
            log.info(
                "Trakt's history changed outside the recent plays a run reads (a play dated "
                "further back added, such as one marked 'watched on release date', or one "
                "removed), and its play counts do not tell where: reading it in full",
                extra={"profile": profile},
            )
            return plays, True
        if not groups:
            return plays, False
        history: list[Any] = []
        for group in groups:
            for trakt in counted[group].trakt:
                history += await self.client.history(profile, counted[group].kind, trakt)
        history, _ = await self._keyed_as_before(profile, now, history, [])
        log.info(
            "Trakt's history changed outside the recent plays a run reads (a play dated "
            "further back added, such as one marked 'watched on release date', or one "
            "removed): read the history of the %d show(s) or movie(s) whose play count moved",
            len(groups),
            extra={"profile": profile},
        )
        return await asyncio.to_thread(groups_read, plays, history, set(groups)), False

    async def _keyed_as_before(
        self,
        profile: str,
        now: float,
        history: list[Any],
        rated: list[Any],
        whole: bool = False,
    ) -> tuple[list[Any], list[Any]]:
        """`history` and `rated` (`whole`: all of both) with the TMDB ids Trakt gave before
        put back where it names the same show or movie without one now
        (`with_tmdb_read_before`, said once), and the ids it gives remembered for that."""
        if self.store is None:
            return history, rated
        known = await asyncio.to_thread(self.store.mirror_get, self.service, profile, TMDB_IDS)
        new = await asyncio.to_thread(tmdb_ids_new, [*history, *rated], known)
        if new:
            await asyncio.to_thread(
                self.store.mirror_put, self.service, profile, TMDB_IDS, new, now
            )
        known |= new
        history, rated, gone = await asyncio.to_thread(keyed_as_before, history, rated, known)
        if gone:
            _TMDB_GONE.warning(("tmdb", profile), tmdb_gone(gone), now, profile=profile)
        elif whole:
            _TMDB_GONE.over(("tmdb", profile), "Trakt gives those TMDB ids again", now)
        return history, rated

    async def _note_viewings(
        self, profile: str, now: float, history: Sequence[Any], whole: bool = False
    ) -> None:
        """Remember the plays `history` holds that Trakt logged by a scrobble or a check-in
        (`VIEWINGS`); a `whole` history forgets those it no longer holds."""
        if self.store is None:
            return
        store = self.store
        read = viewings_logged(history)
        # A delta looks up its own records only: the collection holds one per scrobbled play.
        known: Collection[str] = (
            await asyncio.to_thread(store.mirror_get, self.service, profile, VIEWINGS)
            if whole
            else await asyncio.to_thread(
                store.mirror_has, self.service, profile, VIEWINGS, sorted(read)
            )
        )
        new = {record: at for record, at in read.items() if record not in known}
        if new:
            await asyncio.to_thread(store.mirror_put, self.service, profile, VIEWINGS, new, now)
        gone = sorted(set(known) - set(read)) if whole else []
        if gone:
            await asyncio.to_thread(store.mirror_remove, self.service, profile, VIEWINGS, gone)

    async def _forget_gone(self, profile: str, baseline: Side | None, read: Side) -> None:
        """Tell the delivery target which plays Trakt no longer holds (see `forget_plays`)."""
        if baseline is None or self.store is None:
            return
        await asyncio.to_thread(forget_gone, self.store, profile, baseline, read)

    async def _history(self, profile: str, since: float | None) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for kind in self.types:
            entries += await self.client.history(profile, kind, start_at=since)
        return entries

    async def refine(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None = None
    ) -> Side:
        """`own` with its plays marked "watched on release date" read undated: those taken
        for marks before, and those `release_marks` finds among the plays a viewing on the
        other side is left waiting for (their shows' release moments asked for). The
        candidates of a show whose release moments cannot be had now are held (`Side.held`),
        on both sides, until a run has them or for LOOKUP_WAIT at most: then they sync as they
        are dated (`release_marks.waited_out`), and the log and the status line say so."""
        if self.store is None:
            return own
        store = self.store
        kept = await asyncio.to_thread(store.mirror_get, self.service, profile, RELEASE_MARKS)
        # Taken for marks before a read told their scrobble or check-in: dated again. Of the
        # live viewings (one per scrobbled play) only the records asked about are looked up.
        viewings = await asyncio.to_thread(
            store.mirror_has, self.service, profile, VIEWINGS, sorted(kept)
        )
        kept = {record: at for record, at in kept.items() if record not in viewings}
        own = as_marks(own, {record: float(at) for record, at in kept.items()})
        candidates = await asyncio.to_thread(release_candidates, own, other)
        records = sorted(p.record for plays, _ in candidates.values() for p in plays)
        viewings = await asyncio.to_thread(
            store.mirror_has, self.service, profile, VIEWINGS, records
        )
        asked, places = seasons_asked(candidates), places_asked(candidates)
        known = {}
        if asked:
            known = await asyncio.to_thread(store.mirror_get, self.service, profile, TMDB_IDS)
        moments: dict[str, Moments] = {}
        failing: dict[str, str] = {}
        for show in sorted(asked):
            try:
                moments[show] = await self._release_moments(
                    show, known, asked[show], places.get(show, set())
                )
            except (TraktError, Unavailable) as exc:
                if not _lookup_failed(exc):
                    raise  # the account's or the pace's: the run stops as it would anyway
                failing[show] = exc.said
        failed = await asyncio.to_thread(store.mirror_get, self.service, profile, FAILED_LOOKUPS)
        now = self.clock()
        synced = waited_out(failed, failing, now)
        waits = held_items(candidates, failing)
        put = await self._note_lookups(profile, failed, failing, waits, set(moments), now)
        for show, said in sorted(failing.items()):
            if show in synced:
                log.warning(synced_as_dated(show, put[show]), extra={"profile": profile})
            else:
                log.warning(
                    "Trakt's episode dates of the show with TMDB id %s could not be read "
                    "(%s): its plays that may be marked 'watched on release date' wait (a "
                    "day at most, then they are synced as they are dated)",
                    show,
                    said,
                    extra={"profile": profile},
                )
        held = held_items(candidates, set(failing) - synced)
        found = found_marks(candidates, moments, viewings)
        if found and not self.dry_run:
            await asyncio.to_thread(
                store.mirror_put, self.service, profile, RELEASE_MARKS, found, self.clock()
            )
        own = as_marks(own, found)
        marks = {*kept, *found}
        seconds = await asyncio.to_thread(second_marks, own, other, marks)
        read = await asyncio.to_thread(marks_read, own, marks)
        if seconds or read:
            own = replace(own, second_marks=seconds, marks=read)
        return replace(own, held=held) if held else own

    async def _note_lookups(
        self,
        profile: str,
        before: Mapping[str, Any],
        failing: Mapping[str, str],
        held: Iterable[str],
        answered: set[str],
        now: float,
    ) -> dict[str, Any]:
        """Keep since when each show's lookup fails (`release_marks.failed_lookups`, over the
        record as it was, `before`; not in a dry run): the entries of the shows failing now."""
        assert self.store is not None
        store = self.store
        if not failing and not before:
            return {}
        places: dict[str, list[str]] = {show: [] for show in failing}
        for item in held:
            if (named := show_of(item)) is not None:
                places[named[0]].append(named[1])
        put, gone = failed_lookups(
            before, {s: (failing[s], places[s]) for s in failing}, answered, now
        )
        if self.dry_run:
            return put
        if put:
            await asyncio.to_thread(
                store.mirror_put, self.service, profile, FAILED_LOOKUPS, put, now
            )
        if gone:
            await asyncio.to_thread(
                store.mirror_remove, self.service, profile, FAILED_LOOKUPS, gone
            )
        return put

    async def _release_moments(
        self,
        tmdb: str,
        known: Mapping[str, Any],
        seasons: Collection[int] = (),
        places: Collection[str] = (),
    ) -> Moments:
        """The release moments of the episodes of the show with TMDB id `tmdb` (cached): its
        season list, the show found by the Trakt id a read remembered (`TMDB_IDS`, else one
        search). A show Trakt does not know has none. Asked again when the answer kept lacks
        one of `places` it was not asked about before (a season aired since), once: the
        places the new answer lacks too are kept with it (`to_cache`). Raises TraktError
        when the list names none of the episodes of one of `seasons` (trakt/trakt-api#799:
        nothing can be told of their plays), and as the client raises."""
        assert self.store is not None
        store, now = self.store, self.clock()
        hit, cached = await asyncio.to_thread(store.cache_get, RELEASES_CACHE, tmdb, now)
        if hit and isinstance(cached, dict):
            if not missing_places(cached, places):
                return cached_moments(cached)
            places = {*places, *unlisted_before(cached)}
        shows = [k[5:] for k, v in known.items() if k.startswith("show:") and str(v) == tmdb]
        trakt: int | str | None = next((s for s in shows if s.isdigit()), None)
        moments: dict[str, tuple[float, float]] = {}
        try:
            if trakt is None:
                trakt = await self.client.show_id("tmdb", tmdb)
            if trakt is not None:
                listed = await self.client.show_seasons(trakt)
                unread = unread_seasons(listed, seasons)
                if unread:
                    named = ", ".join(str(n) for n in unread)
                    raise TraktError(
                        self.service,
                        f"its season list came without the episodes of season {named} "
                        "(trakt/trakt-api#799)",
                    )
                moments = release_moments(listed)
                if not complete(listed):
                    return moments  # asked again next time: it may list them then
        except TraktItemError:
            pass  # no such show: nothing of it is a mark
        kept = to_cache(moments, places)
        await asyncio.to_thread(store.cache_put, RELEASES_CACHE, tmdb, kept, now, RELEASES_TTL)
        return moments

    async def aclose(self) -> None:
        await self.client.aclose()


def lookups_waiting(config: Config, store: Store, now: float) -> dict[str, list[str]]:
    """Link -> what its status line says of the shows whose release dates Trakt failed to give
    for a day, their plays synced as they are dated since (`release_marks.lookups_told`), by
    profile."""
    told: dict[str, list[str]] = {}
    for name, link in config.links.items():
        if SERVICE not in link.services:
            continue
        for profile in link_profiles(config, link):
            record = store.mirror_get(SERVICE, profile, FAILED_LOOKUPS)
            lines = [f"{profile}: {line}" for line in lookups_told(record, now)]
            if lines:
                told.setdefault(name, []).extend(lines)
    return told


def make_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Clock,
    metrics: Metrics | None = None,
) -> TraktReader:
    from watchbridge.wiring import seeded_trakt_tokens

    assert config.services.trakt is not None
    client = TraktClient(
        config.services.trakt,
        store,
        metrics=metrics,
        clock=clock,
        seeded_refresh_tokens=seeded_trakt_tokens(config),
    )
    return TraktReader(client, media_types(link), clock, store)
