"""AniList's side of a link: list state turned into plays, through the anime mapping.

AniList keeps only the highest episode reached per entry (one cour or part), not which episodes
were watched or when (reference anilist.md §7). So the side is made up from list state:

- A progress step N -> M seen between two reads becomes plays of episodes N+1..M, dated with
  the entry's `updatedAt` (approximate, the best AniList knows).
- On the first read of an entry, its last episode is dated (`completedAt` when completed, else
  `updatedAt`) and the earlier ones are *undated* ("watched, date unknown"): the planner pairs
  them with any play of the same episode on the other side instead of inventing a date.
  Where the entry's `updatedAt` is a save of ours (a score, another link's play), it dates
  no viewing: the dates noted with our saves do (`deliver.anilist.VIEWED`), each episode the
  one of the save that raised the progress past it (`anilist_viewings`), so every link gives
  one viewing one date, also for several episodes read in one step.
- A rewatch (REPEATING) adds a second pass of plays; passes completed before the first sync
  are not invented (AniList keeps a count, not dates). A rewatch begun and paused or dropped
  between two reads (last read completed, now paused or dropped with a lower progress:
  `rewatch_set_aside`) is one too: the first viewing stays, the progress is the rewatch's,
  also once it is set to watching again (at a lower progress, 0 included: restarted), as is
  a rewatch set from rewatching straight to watching. Completed with nothing of it logged
  and its count left as it was, it is no pass: AniList counts a finished rewatch by `repeat`
  (reference anilist.md §7), and a mis-click (Rewatching, then Completed) reads the same.
  Completed with episodes of it logged, it is a whole pass, its count raised or not, and it
  stays one (`finished_passes`): a rewatch begun after it is the next pass.
  So is a finished entry set back to watching at a lower progress (`relogged`: how AniList
  users begin a rewatch or reset an entry), except that the lowering itself watched nothing:
  only the episodes logged after it are the rewatch's plays (`<entry id>:w<pass>:<episode>`).
- A movie (an entry the mapping gives a TMDB movie) is one movie play once the entry is
  watched to its end (progress short of its episode count is nothing: anime-mapping.md §6 F),
  and one more per rewatch; its score is the movie's rating. Only on a link with Trakt: the
  reader of a link with a TV-only side (Serializd) leaves movies out (`tv_only`).
- Each AniList episode goes through the mapping (`watchbridge.anime`) to the TMDB show, season
  and episode the other side uses. Entries that cannot be mapped are reported (`watchbridge
  anime unmatched`) and left out; they never stop the run. An episode that is only part of a
  target (of a movie, or of a longer episode) is no play on its own: its last part carries it.
- An answer by absolute number (One Piece, Gintama) is placed on the other side's season list
  (`watchbridge.anime_seasons`: Trakt's or Serializd's, read only for shows such an answer
  touches, cached a week); the other side's plays of such a show that no seasonal range holds
  are counted back to an absolute number the same way. When the list cannot be read (and no
  earlier copy is kept), those episodes stay unmatched (`seasons`) and the next run tries
  again: it does not count as unchanged, and reads the whole list.

A play queued for AniList that the target took without a write (a second viewing on the
other side of an episode the entry counts: AniList keeps one per pass) is absorbed once its
row is done: it stays a play of this side (record `held:…`) for as long as the entry holds
the episode (in any pass), so it is never mistaken for a play AniList took and then lost
(which would remove it from the other side). A queued play still waiting stays queued: it may
yet start or carry on a rewatch (`deliver.anilist`), and the rewatch's plays read back take
its date (the newest one queued of the episode), so they pair with the plays that caused them.

Plays keep their record (`<entry id>:<episode>`, `<entry id>:r<pass>:<episode>`) and date
across reads, so an unchanged list reads the same every time. A delta read asks only for the
entries updated since the last read (one request, §5.4); deletions and lowered progress show up
in the daily full read.

Scores: an entry's score is the rating of the TMDB season its first episode lands on. Several
entries can share a season (Re:Zero's three parts are all TMDB S1): the season's rating is the
score of the first *scored* entry in episode order, the same entry a rating from the other side
is written to (`deliver.anilist.season_owner`). `updatedAt` moves with every progress step, so
a score is dated by the read that saw it change (`updatedAt` then); on first sight, by the
entry's finish date, else its start date, else its last update.

What AniList can hold (the side's catalog, `refine`): its own items, and the other side's
episodes that map back to an AniList entry, no further than the entry's episode count;
season ratings only for seasons an entry on the list or one of those episodes lands on.
Movies that map to an entry count as that entry (and their ratings as its score). Anything
else (not anime, a season the datasets do not know yet, an episode past an entry's end) is
never planned to AniList; anime among them is listed by `watchbridge anime unmatched` and
picked up on the first run after the datasets catch up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from watchbridge import show_ratings
from watchbridge.accounts import user_named
from watchbridge.anilist_viewings import Viewings, episode_dates
from watchbridge.anime import (
    PARTIAL,
    PENDING,
    AnimeIndex,
    EpisodeRef,
    Forward,
    MovieRef,
    Unmatched,
    anime_signs,
)
from watchbridge.anime_seasons import AbsoluteSeasons, forward_wants, placed
from watchbridge.config import Config, Link
from watchbridge.ids import webhook_ref
from watchbridge.metrics import Metrics
from watchbridge.model import MediaRef
from watchbridge.narrow import Keep, Narrowing
from watchbridge.readers import Clock, OnTheirWay, SideRead
from watchbridge.readers.plex import key_for_ref
from watchbridge.reconcile import ABSORBED, EXPECTED, UNDATED, Play, Rated, Side
from watchbridge.services.anilist import (
    FINISHED_STATUSES,
    STOPPED_STATUSES,
    AniListClient,
    FuzzyDate,
    ListEntry,
    UnreadEntry,
)
from watchbridge.sides import episode_key, ref_for_key, show_key
from watchbridge.store import Store

if TYPE_CHECKING:
    from watchbridge.anime_data import ListsMissing

log = logging.getLogger(__name__)
T = TypeVar("T")
WAITING = "seasons_waiting"  # cursor: entries whose season list could not be read
RETRY = "seasons_retry"  # cursor: the other side has plays waiting for a season list
DATED_BY = "dated_by"  # cursor: the webhook rows (keys) whose times dated a step (each one)
TV_ONLY = "tv-only"  # Unmatched code: a movie, for a link whose other side holds TV only

# (AniList id, AniList episode, AniList episode count or None) -> where it lands on TMDB
Mapper = Callable[[int, int, int | None], Forward]
# an item of the other side -> (AniList id, AniList episode), as the delivery target maps it
ReverseMapper = Callable[[MediaRef], tuple[int, int] | Unmatched]


@dataclass(frozen=True)
class EntryState:
    """What the last read saw of one entry (kept in the cursors to spot steps, rewatches and
    score changes). `media`/`episodes`/`score`/`score_at` are 0/None in states saved by
    older releases: their score then counts as first seen. `set_aside`: a rewatch paused or
    dropped, or set to watching (`rewatch_set_aside`): its progress is the rewatch's,
    the first viewing finished.
    `again_from`/`relogging`: rewatches begun by setting the entry back to watching
    (`relogged`). `uncounted`: see `finished_passes`."""

    progress: int
    repeat: int
    status: str
    media: int = 0
    episodes: int | None = None
    score: int = 0
    score_at: float = 0.0
    set_aside: bool = False
    # Rewatches begun by setting a finished entry back to watching at a lower progress
    # (`relogged`): for each, the progress it was set back to (its episodes up to there were
    # not logged again, so they are no plays); the last one goes on while `relogging`.
    again_from: tuple[int, ...] = ()
    relogging: bool = False
    # Rewatches logged and completed past `repeat`, the count left as it was (`uncounted`):
    # their plays stay, and the next rewatch is a pass of its own.
    uncounted: int = 0


@dataclass(frozen=True)
class Converted:
    side: Side
    states: dict[int, EntryState]  # by list entry id
    unmatched: dict[int, tuple[ListEntry, Unmatched]] = field(default_factory=dict)  # by media
    mapped: frozenset[int] = frozenset()  # media ids that mapped (to clear old reports)
    dated_by: frozenset[str] = frozenset()  # the webhook rows (keys) whose times dated a step


# --------------------------------------------------------------------------- pure conversion


def entry_of(record: str) -> int | None:
    """The list entry id a play record belongs to (None for other records)."""
    head = record.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def first_pass_count(entry: ListEntry, known: Iterable[str], set_aside: bool = False) -> int:
    """How many episodes the first viewing covers. Any status counts its progress: moving an
    entry to Planning, Paused or Dropped keeps its progress on AniList, and unwatches nothing.
    A rewatch (one going on, finished, or one paused or dropped: read before, or `set_aside`,
    see `rewatch_set_aside`; its progress is then the rewatch's) means the first viewing was
    finished."""
    known = list(known)
    if _rewatched(entry, known, set_aside):
        # A rewatch means the first viewing was finished.
        seen = [int(r.rsplit(":", 1)[1].split(".")[0]) for r in known if _first_pass(r)]
        return entry.episodes or max([entry.progress, *seen])
    return entry.progress


def _rewatched(entry: ListEntry, known: Iterable[str], set_aside: bool) -> bool:
    """Whether the entry was rewatched (see `first_pass_count`): its progress is then a
    rewatch's, not the first viewing's."""
    rewatched = entry.status == "REPEATING" or entry.repeat > 0 or set_aside
    return rewatched or any(":r" in r for r in known)


def _first_pass(record: str) -> bool:
    """Whether a play record is of the first viewing (not `:r<pass>:` nor `:w<pass>:`)."""
    return ":r" not in record and ":w" not in record


def _counted(before: EntryState | None, episodes: int | None) -> int | None:
    """Episodes of the first viewing the last read counted (None: never read)."""
    if before is None:
        return None
    if before.status == "REPEATING" or before.repeat > 0 or before.set_aside or before.again_from:
        return episodes or before.progress
    return before.progress


def rewatch_set_aside(entry: ListEntry, before: EntryState | None) -> bool:
    """Whether `entry`, paused or dropped, is a rewatch set aside (`before`: what the last read
    saw of the same entry id). So when the last read saw its first viewing finished (completed
    or rewatching) and its progress is lower now: the user began a rewatch (AniList counts its
    own progress) and paused it between two reads, so this read never saw it rewatching. Or
    when the last read found it so already. A completed title's episodes stay watched: the
    lower progress is the rewatch's, not an unwatch (the delivery target reads it the same way,
    `deliver.anilist.set_aside_rewatch`). A rewatch set aside, or one the last read saw
    rewatching, then set to watching (at any progress, 0 included) goes on, as a rewatch set
    back to watching does (`relogged`): the first viewing stays, the progress is the
    rewatch's, lowered it takes only the rewatch's own plays past it, and the episodes logged
    since are the rewatch's. Pure."""
    if before is None or entry.repeat != before.repeat:
        return False
    if entry.status == "CURRENT":
        # Rewatching at some progress, now watching: the rewatch goes on (at 0 `relogged`
        # holds it, as a finished entry set back to watching).
        rewatching = before.status == "REPEATING" and before.progress > 0
        return before.set_aside or rewatching
    if entry.status not in STOPPED_STATUSES:
        return False
    if before.set_aside:
        return True
    counted = _counted(before, entry.episodes) or 0
    return before.status in FINISHED_STATUSES and entry.progress < counted


def relogged(entry: ListEntry, before: EntryState | None) -> tuple[tuple[int, ...], bool]:
    """The rewatches `entry` (as read now; `before`: what the last read saw of the same entry
    id) was set back to watching for, each by the progress it was set back to, and whether the
    last one goes on. A finished entry (completed, or rewatching with nothing of the rewatch
    logged) set back to watching (CURRENT) at a lower progress, with no rewatch counted since,
    is how AniList users begin a rewatch (or reset an entry): its first viewing stays watched,
    and the progress is the rewatch's. Only the episodes logged after that are its plays: the
    lowering itself watched nothing. It goes on, whatever the status (progress lowered further
    lowers where it starts), until the entry is completed again. An entry never finished,
    lowered, is an unwatch as before. Pure."""
    if before is None:
        return (), False
    bases = before.again_from
    if before.relogging:
        if entry.status == "COMPLETED":
            return bases, False
        return (*bases[:-1], min(bases[-1], entry.progress)), True
    finished = before.status == "COMPLETED" or (
        before.status == "REPEATING" and before.progress == 0
    )
    lower = entry.progress < (_counted(before, entry.episodes) or 0)
    if entry.status == "CURRENT" and entry.repeat == before.repeat and finished and lower:
        return (*bases, entry.progress), True
    return bases, False


def finished_passes(entry: ListEntry, before: EntryState | None) -> int:
    """How many rewatch passes of `entry` were over by the last read: those AniList counts
    (`repeat`), and those a read saw completed with episodes of them logged while the count
    stayed (`uncounted`: a client that does not raise it). Their plays are kept; the rewatch
    going on now is the pass after them. A count lowered by hand is the user's word: the
    passes past it go. Pure."""
    if before is None or entry.repeat < before.repeat:
        return entry.repeat
    return max(entry.repeat, before.repeat + before.uncounted)


def _pass_logged(entry: ListEntry, number: int, known: Iterable[str]) -> bool:
    return any(r.startswith(f"{entry.id}:r{number}:") for r in known)


def uncounted(
    entry: ListEntry,
    before: EntryState | None,
    known: Iterable[str],
    relog: tuple[tuple[int, ...], bool],
) -> int:
    """The passes over after this read that `repeat` does not count: the earlier ones, and
    the rewatch going on at the last read if it is completed now without its count raised
    (its plays are kept as a pass: `entry_plays`). Pure."""
    over = finished_passes(entry, before)
    if entry.status == "COMPLETED" and not relog[1] and _pass_logged(entry, over + 1, known):
        over += 1
    return over - entry.repeat


def _date(
    entry: ListEntry, episode: int, last: int, observed: bool, when: float | None = None
) -> float:
    """When an episode counts as watched: a step seen between reads happened by `updatedAt`
    (`when`: the episode's own date, where saves of ours tell it); on a first read only the
    last episode has a date."""
    if when is not None:
        entry = replace(entry, updated_at=when)
    if observed:
        return entry.updated_at or UNDATED
    if episode < last:
        return UNDATED
    if entry.status == "COMPLETED":
        completed = _day_time(entry, entry.completed_at)
        if completed is not None:
            return completed
    return entry.updated_at or UNDATED


def _day_time(entry: ListEntry, day: FuzzyDate) -> float | None:
    """When a day the user set on the entry counts: its noon, but never after the entry's last
    update (finished this morning, noon is still hours away); None when no day is set."""
    at = day.timestamp()
    if at is None or not entry.updated_at:
        return at
    return min(at, entry.updated_at)


def play_keys(forward: Forward, episode: int, total: int | None) -> list[str] | Unmatched:
    """Item keys for one mapped AniList episode (of an entry of `total` episodes); none when
    it is no play on its own: part of a movie or of a longer episode (its last part counts),
    a movie for a TV-only side, or a movie before the entry's last episode."""
    if isinstance(forward, Unmatched):
        return [] if forward.code in (PARTIAL, TV_ONLY) else forward
    if isinstance(forward, MovieRef):
        if forward.tmdb is None:  # `sides.movie_key` keys a movie by its TMDB id first
            return Unmatched(
                f"only an IMDb id is known for this movie ({forward.imdb})", "no-target"
            )
        return [f"movie:tmdb:{forward.tmdb}"] if episode >= (total or episode) else []
    if forward.season is None:  # no season list at hand to place it (see the module doc)
        return Unmatched(
            f"only an absolute TMDB number is known (show {forward.show} episode "
            f"{forward.number}) and no season list to place it on: add an override",
            "absolute",
        )
    numbers = forward.numbers or (forward.number,)
    return [episode_key(forward.show, forward.season, n) for n in numbers]


def tv_only(mapper: Mapper) -> Mapper:
    """`mapper` for a link whose other side holds TV only (Serializd): movies are left out."""

    def mapped(anilist: int, episode: int, total: int | None) -> Forward:
        forward = mapper(anilist, episode, total)
        if isinstance(forward, MovieRef):
            return Unmatched(f"AniList {anilist} is a movie: the other side holds TV only", TV_ONLY)
        return forward

    return mapped


def score_date(entry: ListEntry, before: EntryState | None) -> float:
    """When the entry's current score was given, as well as AniList lets us know."""
    if before is not None and before.media == entry.media_id and before.score == entry.score:
        return before.score_at
    if before is not None and before.media == entry.media_id:
        return entry.updated_at  # changed since the last read: by this update at the latest
    for day in (entry.completed_at, entry.started_at):
        at = _day_time(entry, day)
        if at is not None:
            return at
    return entry.updated_at


def entry_state(
    entry: ListEntry,
    before: EntryState | None,
    set_aside: bool = False,
    again: tuple[tuple[int, ...], bool] = ((), False),
    passes_uncounted: int = 0,
) -> EntryState:
    return EntryState(
        entry.progress,
        entry.repeat,
        entry.status,
        entry.media_id,
        entry.episodes,
        entry.score,
        score_date(entry, before) if entry.score > 0 else 0.0,
        set_aside,
        *again,
        passes_uncounted,
    )


def entry_plays(
    entry: ListEntry,
    before: EntryState | None,
    known: Mapping[str, Play],
    mapper: Mapper,
    claims: dict[str, list[Play]] | None = None,
    dated: dict[str, list[tuple[float, str]]] | None = None,
    used: set[str] | None = None,
    set_aside: bool = False,
    relog: tuple[tuple[int, ...], bool] = ((), False),
    viewings: Viewings | None = None,
) -> tuple[list[Play], Unmatched | None]:
    """One entry's plays: `known` are its plays from the last read, by record. `set_aside`:
    the entry is a rewatch paused or dropped (`rewatch_set_aside`). `relog`: the rewatches it
    was set back to watching for (`relogged`), whose plays are `<entry id>:w<pass>:<episode>`.
    `viewings`: when the episodes of the pass its progress counts were watched, where saves of
    ours tell (`anilist_viewings`): each keeps its own date, not the last save's.

    `claims` are plays we queued for AniList (by item, oldest first): a new play of such an
    item is that write read back, so it takes the queued play's date (and uses the claim up);
    without this, a back-dated play sent to AniList would come back dated today and be copied
    again. `dated`: the times of webhook plays AniList took (by item, oldest first, with their
    outbox row), used the same way (a webhook's play of two days ago, delivered now); the rows
    used go into `used`."""
    plays: list[Play] = []
    problem: Unmatched | None = None
    cache: dict[int, list[str] | Unmatched] = {}

    def add(record: str, episode: int, at: float) -> None:
        nonlocal problem
        if episode not in cache:
            forward = mapper(entry.media_id, episode, entry.episodes)
            cache[episode] = play_keys(forward, episode, entry.episodes)
        keys = cache[episode]
        if isinstance(keys, Unmatched):
            problem = problem or keys
            return
        for n, key in enumerate(keys):
            full = record if n == 0 else f"{record}.{n}"
            old = known.get(full)
            when = old.at if old is not None else at
            # A rewatch is the newest viewing queued; the first pass the oldest.
            newest = 0 if _first_pass(full) else -1
            if old is None and claims and claims.get(key):
                when = claims[key].pop(newest).at
            elif old is None and dated and dated.get(key):
                when, row = dated[key].pop(newest)
                if used is not None:
                    used.add(row)
            plays.append(Play(key, when, full))

    def watched(episode: int) -> float:
        """The date of an episode of the pass the progress counts."""
        return entry.updated_at if viewings is None else viewings.date(episode, entry.updated_at)

    bases, relogging = relog
    first = first_pass_count(entry, known, set_aside or bool(bases))
    counts_first = not _rewatched(entry, known, set_aside or bool(bases))
    # What the last read had already counted: episodes past it are a step seen happening.
    counted = _counted(before, entry.episodes)
    for episode in range(1, first + 1):
        step = counted is not None and episode > counted
        when = watched(episode) if counts_first else None
        add(f"{entry.id}:{episode}", episode, _date(entry, episode, first, step, when))
    for k, base in enumerate(bases, 1):  # rewatches begun by setting it back to watching
        going = relogging and k == len(bases)
        top = entry.progress if going else (entry.episodes or entry.progress)
        for episode in range(base + 1, top + 1):
            at = watched(episode) if going else entry.updated_at
            add(f"{entry.id}:w{k}:{episode}", episode, at or UNDATED)
    # Such a rewatch finished as a counted one (set rewatching, then completed): its plays
    # are the ones above, not a pass of its own.
    ended = before is not None and before.relogging and not relogging
    for n in range(1, entry.repeat + 1):  # finished rewatches
        seen = _pass_logged(entry, n, known)
        if not seen and (before is None or n <= before.repeat):
            continue  # finished before we were watching: no dates to give
        if not seen and ended and before is not None and n == before.repeat + 1:
            continue
        for episode in range(1, (entry.episodes or entry.progress) + 1):
            add(f"{entry.id}:r{n}:{episode}", episode, entry.updated_at or UNDATED)
    over = finished_passes(entry, before)
    for n in range(entry.repeat + 1, over + 1):  # finished, not counted: as they were
        head = f"{entry.id}:r{n}:"
        logged = {int(r.removeprefix(head).split(".")[0]) for r in known if r.startswith(head)}
        for episode in sorted(logged):
            add(f"{head}{episode}", episode, entry.updated_at or UNDATED)
    current_pass = over + 1  # the rewatch going on, if any
    if relogging:
        pass  # the rewatch goes on as set back to watching (above), whatever the status
    elif entry.status == "REPEATING":
        n = current_pass
        again = 0
        if before is not None and before.status == "REPEATING" and before.repeat == entry.repeat:
            again = before.progress
        for episode in range(1, entry.progress + 1):
            step = before is not None and episode > again
            at = _date(entry, episode, entry.progress, step, watched(episode))
            add(f"{entry.id}:r{n}:{episode}", episode, at)
    elif set_aside or _pass_logged(entry, current_pass, known):
        # A rewatch paused or dropped: AniList keeps its progress, and what it watched stays.
        # Completed with its count unchanged, it is a pass all the same (`uncounted`).
        for episode in range(1, entry.progress + 1):
            add(f"{entry.id}:r{current_pass}:{episode}", episode, entry.updated_at or UNDATED)
    return plays, problem


def _rated(media: int, episodes: int | None, mapper: Mapper) -> tuple[str, int] | None:
    """(item key, TMDB episode) an entry's score is the rating of: the TMDB season its first
    episode lands on, or the movie it is."""
    forward = mapper(media, 1, episodes)
    if isinstance(forward, Unmatched) and forward.code == PARTIAL and episodes:
        forward = mapper(media, episodes, episodes)  # a movie in parts: by its last one
    if isinstance(forward, EpisodeRef) and forward.season is not None:
        return show_key(forward.show, forward.season), forward.number
    if isinstance(forward, MovieRef) and forward.tmdb is not None:
        return f"movie:tmdb:{forward.tmdb}", 0  # as `sides.movie_key` keys it
    return None


def rating_key(entry: ListEntry, mapper: Mapper) -> str | None:
    """The TMDB season (or movie) an entry's score is about (an entry is one cour or part)."""
    start = _rated(entry.media_id, entry.episodes, mapper)
    return start[0] if start else None


def season_ratings(states: Iterable[EntryState], mapper: Mapper) -> dict[str, Rated]:
    """One rating per TMDB season (or movie): the score of the first scored entry in it."""
    best: dict[str, tuple[int, int, Rated]] = {}
    for state in states:
        if state.score <= 0 or not state.media:
            continue
        start = _rated(state.media, state.episodes, mapper)
        if start is None:
            continue
        key, number = start
        if key not in best or (number, state.media) < best[key][:2]:
            best[key] = (number, state.media, Rated(state.score, state.score_at))
    return {key: rated for key, (_, _, rated) in best.items()}


def anilist_side(
    entries: Iterable[ListEntry],
    before: Mapping[int, EntryState],
    baseline: Side | None,
    mapper: Mapper,
    dated: Mapping[str, list[tuple[float, str]]] | None = None,
    viewed: Mapping[int, Viewings] | None = None,
) -> Converted:
    """The side for `entries`, keeping records and dates of `baseline` plays (`dated`: see
    `entry_plays`). `viewed`: by media id, when the episodes an entry shows were watched, where
    its `updatedAt` is a save of ours (`deliver.anilist.VIEWED`): its plays are dated so."""
    known: dict[int, dict[str, Play]] = {}
    claims: dict[str, list[Play]] = {}
    renewed = replaced_entries(entries, before)
    for play in baseline.plays if baseline else ():
        entry_id = entry_of(play.record)
        if play.record.startswith(EXPECTED):
            claims.setdefault(play.item, []).append(play)
        elif entry_id is not None:
            if entry_id in renewed:  # the same viewings, under the entry's new id
                entry_id = renewed[entry_id]
                play = Play(play.item, play.at, f"{entry_id}:{play.record.split(':', 1)[1]}")
            known.setdefault(entry_id, {})[play.record] = play
    was = {new: old for old, new in renewed.items()}
    for waiting in claims.values():
        waiting.sort(key=lambda p: p.at)
    times = {item: sorted(rows) for item, rows in (dated or {}).items()}
    used: set[str] = set()
    plays: list[Play] = []
    states: dict[int, EntryState] = {}
    unmatched: dict[int, tuple[ListEntry, Unmatched]] = {}
    mapped: set[int] = set()
    for entry in entries:
        prior = before.get(entry.id) or before.get(was.get(entry.id, 0))
        set_aside = rewatch_set_aside(entry, before.get(entry.id))
        relog = relogged(entry, before.get(entry.id))
        logged = known.get(entry.id, {})
        over = uncounted(entry, prior, logged, relog)
        states[entry.id] = entry_state(entry, prior, set_aside, relog, over)
        watched = (viewed or {}).get(entry.media_id)
        last = None if watched is None else watched.date(entry.progress, entry.updated_at)
        dating = entry if last is None else replace(entry, updated_at=last)
        made, problem = entry_plays(
            dating, prior, logged, mapper, claims, times, used, set_aside, relog, watched
        )
        plays += made
        if problem is not None:
            unmatched[entry.media_id] = (entry, problem)
        else:
            mapped.add(entry.media_id)
    # Queued plays not read back yet stay claimed (the engine settles or tombstones them).
    plays += [play for waiting in claims.values() for play in waiting]
    scores = season_ratings(states.values(), mapper)
    return Converted(
        Side(tuple(plays), scores), states, unmatched, frozenset(mapped), frozenset(used)
    )


def replaced_entries(
    entries: Iterable[ListEntry], before: Mapping[int, EntryState]
) -> dict[int, int]:
    """Old entry id -> new one, for each title listed under another id than the last read
    saw: AniList keeps one entry per title, so the old one was deleted and the title added
    again (to start over, say). Pure."""
    now = {entry.media_id: entry.id for entry in entries}
    return {
        old: now[state.media]
        for old, state in before.items()
        if state.media and state.media in now and now[state.media] != old
    }


def unread_kept(
    unread: Iterable[UnreadEntry],
    entries: Iterable[ListEntry],
    before: Mapping[int, EntryState],
    baseline: Side | None,
) -> tuple[dict[int, EntryState], tuple[Play, ...]]:
    """The states and plays the last read had of the entries a whole read could not read
    whole (`unread`): still on the list, they are no removals (their plays and score stay),
    and their changes wait until they read. An entry known by its title's id only is the one
    the last read saw holding that title. Pure."""
    read = {entry.id for entry in entries}
    by_media = {state.media: entry_id for entry_id, state in before.items() if state.media}
    ids = set()
    for entry in unread:
        entry_id = entry.entry_id if entry.entry_id in before else None
        if entry_id is None and entry.media_id is not None:
            entry_id = by_media.get(entry.media_id, entry.entry_id)
        if entry_id is not None and entry_id not in read:
            ids.add(entry_id)
    states = {entry_id: before[entry_id] for entry_id in ids if entry_id in before}
    plays = tuple(p for p in baseline.plays if entry_of(p.record) in ids) if baseline else ()
    return states, plays


def absorb(
    side: Side, baseline: Side | None, delivered: Callable[[Play], bool] = lambda _: True
) -> Side:
    """`side` with its queued plays whose row is done (`delivered`) and whose episode the
    list holds turned into absorbed plays (AniList took them without a write), and the
    absorbed plays of `baseline` (a full read starts from scratch) kept while their episode
    is still held."""
    held = {p.item for p in side.plays if entry_of(p.record) is not None}
    plays: list[Play] = []
    records = set()
    for play in side.plays:
        if play.record.startswith(EXPECTED) and play.item in held and delivered(play):
            play = Play(play.item, play.at, ABSORBED + play.record.removeprefix(EXPECTED))
        elif play.record.startswith(ABSORBED) and play.item not in held:
            continue  # the entry no longer counts it: that viewing goes with it
        plays.append(play)
        records.add(play.record)
    for play in baseline.plays if baseline else ():
        if play.record.startswith(ABSORBED) and play.item in held and play.record not in records:
            plays.append(play)
    return replace(side, plays=tuple(plays))


def merge(
    baseline: Side,
    fresh: Converted,
    changed: set[int],
    states: Mapping[int, EntryState],
    mapper: Mapper,
) -> Side:
    """A delta read: entries in `changed` replaced by their fresh plays, the rest as before
    (`fresh` carries the queued plays still waiting). Ratings come from every entry's state
    (`states`: the saved ones with the fresh ones over them), so a season shared by several
    entries still rates by its first scored one."""
    kept = tuple(
        p
        for p in baseline.plays
        if not p.record.startswith(EXPECTED) and entry_of(p.record) not in changed
    )
    return Side(kept + fresh.side.plays, season_ratings(states.values(), mapper))


def _state_json(s: EntryState) -> list[object]:
    # `set_aside` and the rewatches set back to watching only where they hold: the other
    # entries read the same in earlier releases.
    head: list[object] = [s.progress, s.repeat, s.status, s.media, s.episodes, s.score]
    head.append(s.score_at)
    if s.uncounted:
        return [*head, s.set_aside, list(s.again_from), s.relogging, s.uncounted]
    if s.again_from:
        return [*head, s.set_aside, list(s.again_from), s.relogging]
    return head + ([True] if s.set_aside else [])


def states_json(states: Mapping[int, EntryState]) -> str:
    return json.dumps(
        {str(k): _state_json(s) for k, s in sorted(states.items())}, separators=(",", ":")
    )


def states_from(cursors: Mapping[str, str]) -> dict[int, EntryState]:
    try:
        raw = json.loads(cursors.get("entries") or "{}")
    except ValueError:
        return {}
    states = {}
    for key, value in raw.items() if isinstance(raw, dict) else ():
        if not key.isdigit() or not isinstance(value, list) or len(value) not in (3, 7, 8, 10, 11):
            continue
        try:
            head = EntryState(int(value[0]), int(value[1]), str(value[2]))
            if len(value) >= 7:
                episodes = None if value[4] is None else int(value[4])
                head = replace(
                    head,
                    media=int(value[3]),
                    episodes=episodes,
                    score=int(value[5]),
                    score_at=float(value[6]),
                    set_aside=len(value) >= 8 and value[7] is True,
                )
            if len(value) >= 10:
                bases = value[8] if isinstance(value[8], list) else []
                again = tuple(int(b) for b in bases)
                head = replace(head, again_from=again, relogging=value[9] is True and bool(again))
            if len(value) == 11:
                head = replace(head, uncounted=max(0, int(value[10])))
        except (TypeError, ValueError):
            continue
        states[int(key)] = head
    return states


def selected_media(entries: Iterable[ListEntry], wanted: Narrowing) -> frozenset[int]:
    """The AniList media ids a narrowed run is about: those named, and every list entry in
    one of the statuses asked for."""
    by_status = {e.media_id for e in entries if e.status in wanted.statuses}
    return wanted.anilist_ids | frozenset(by_status)


def selection_keep(
    media: frozenset[int],
    entries: Iterable[ListEntry],
    own: Side,
    mapper: Mapper,
    reverse: ReverseMapper | None,
) -> Keep:
    """Whether an item key belongs to one of `media`: the items this side's plays of those
    entries landed on and their seasons' ratings, and (through the reverse mapping, the
    one deliveries use) any item of the other side that maps back to one of them."""
    chosen = [e for e in entries if e.media_id in media]
    entry_ids = {e.id for e in chosen}
    direct = {p.item for p in own.plays if entry_of(p.record) in entry_ids}
    direct |= {k for e in chosen if (k := rating_key(e, mapper)) is not None}
    for media_id in media - {e.media_id for e in chosen}:  # not on the list (yet)
        start = _rated(media_id, None, mapper)
        if start is not None:
            direct.add(start[0])
    answers: dict[str, bool] = {}

    def keep(key: str) -> bool:
        if key in direct:
            return True
        if reverse is None:
            return False
        if key not in answers:
            ref = ref_for_key(key)
            hit = reverse(ref) if ref is not None else None
            answers[key] = isinstance(hit, tuple) and hit[0] in media
        return answers[key]

    return keep


@dataclass(frozen=True)
class Catalog:
    """What the AniList side can hold, and the other side's anime plays it cannot (why)."""

    items: frozenset[str]
    unmatched: dict[str, Unmatched] = field(default_factory=dict)
    # The other side's items that are none of AniList's business (`Side.left_alone`).
    left_alone: frozenset[str] = frozenset()
    # The other side's ratings of whole anime shows, which AniList takes by season only
    # (`Side.shows_rated_apart`; `show_ratings` tells the user).
    shows_rated: frozenset[str] = frozenset()


def catalog_for(
    own: Side,
    other: Side,
    reverse: ReverseMapper,
    states: Mapping[int, EntryState],
    mapper: Mapper,
) -> Catalog:
    """The items AniList can hold (see the module doc). `states` are the entries on the list:
    their episode counts end what an entry can take, their seasons (or movies) can take a
    rating."""
    items = {p.item for p in own.plays if not p.record.startswith(EXPECTED)} | set(own.ratings)
    totals = {s.media: s.episodes for s in states.values() if s.media}
    rated = {
        start[0]
        for s in states.values()
        if s.media and (start := _rated(s.media, s.episodes, mapper)) is not None
    }
    unmatched: dict[str, Unmatched] = {}
    alone: set[str] = set()
    for item in {p.item for p in other.plays} - items:
        ref = ref_for_key(item)
        if ref is None or (ref.kind != "movie" and (ref.kind != "episode" or ref.season is None)):
            continue
        hit = reverse(ref)
        if isinstance(hit, Unmatched):
            if hit.code not in ("unknown", PARTIAL):  # not anime, or counted by its last part
                unmatched[item] = hit
            elif hit.code == PARTIAL or anime_signs(ref) is None:
                alone.add(item)
            continue
        media, episode = hit
        total = totals.get(media)
        if total is not None and episode > total:
            unmatched[item] = Unmatched(
                f"{item} would be episode {episode} of AniList {media}, which has {total}: "
                "a part newer than the datasets, or a dataset off by some episodes; "
                "add an override to map it",
                "outside",
            )
            continue
        items.add(item)
        if ref.kind == "movie":
            rated.add(item)
        elif ref.show_ids.tmdb:
            rated.add(show_key(ref.show_ids.tmdb, ref.season))
    items |= {key for key in other.ratings if key in rated}
    alone |= {key for key in set(other.ratings) - items if not_anime(key, reverse)}
    shows = {key for key in set(other.ratings) - items - alone if _whole_show(key)}
    return Catalog(frozenset(items), unmatched, frozenset(alone), frozenset(shows))


def not_anime(key: str, reverse: ReverseMapper) -> bool:
    """Whether the item a rating is of is no anime: no mapping dataset knows its show (or
    film) and nothing marks it as anime (`show_ratings.anime_show`)."""
    ref = ref_for_key(key)
    return ref is not None and not show_ratings.anime_show(ref, reverse)


def _whole_show(key: str) -> bool:
    ref = ref_for_key(key)
    return ref is not None and ref.kind == "show"


def same_in_format(own: Side, other: Side, score_format: str, other_service: str = "trakt") -> Side:
    """`own` with each rating that already agrees with the other side's given the other
    side's value, so it is not planned again every run: the user would see no difference in
    their own format (raw 70 and 80 are both 4 stars in POINT_5: the target writes nothing),
    or the other side holds what our score becomes there (Trakt and Serializd keep 90 for a
    raw 85; Plex keeps 85 as 8.5, so 90 there is another rating)."""
    from watchbridge import ratings

    snapped = dict(own.ratings)
    for key, rated in own.ratings.items():
        theirs = other.ratings.get(key)
        if theirs is None or theirs.value == rated.value:
            continue
        kept = ratings.kept_by(other_service, rated.value) == theirs.value
        if kept or ratings.anilist_same(rated.value, theirs.value, score_format):
            snapped[key] = replace(rated, value=theirs.value)
    return own if snapped == dict(own.ratings) else replace(own, ratings=snapped)


# --------------------------------------------------------------------------- the reader


class AniListReader:
    service = "anilist"

    def __init__(
        self,
        client: AniListClient,
        mapper: Callable[[], Awaitable[Mapper]],
        *,
        store: Store | None = None,
        clock: Clock,
        reverse: Callable[[], Awaitable[ReverseMapper]] | None = None,
        index: Callable[[], Awaitable[AnimeIndex]] | None = None,
        seasons: AbsoluteSeasons | None = None,
        movies: bool = False,
        other: str = "trakt",
        missing: Callable[[], ListsMissing] | None = None,
    ) -> None:
        self.client = client
        self.missing = missing  # why the link waits while `index` is empty (`ready`)
        self.other = other  # the link's other service (what it keeps of a score)
        self.mapper = mapper
        self.movies = movies  # whether the other side holds movies (Trakt does)
        self.reverse = reverse
        self.seasons = seasons  # the other side's season lists, for absolute numbers
        self.index = index  # to map titles the datasets know by MAL id only
        self.store = store
        self.clock = clock
        self._newest: dict[str, float] = {}
        self._listed: dict[str, list[ListEntry]] = {}  # the whole list, when the read had it
        self._states: dict[str, dict[int, EntryState]] = {}  # every entry, after the read
        self._cursors: dict[str, dict[str, str]] = {}  # this run's, until the engine saves them

    @property
    def requests_sent(self) -> int:
        seasons = self.seasons.requests_sent if self.seasons is not None else 0
        return self.client.requests_sent + seasons

    async def account(self, profile: str, reading: bool) -> str | None:
        return user_named(await self.client.user_id(profile))

    async def ready(self) -> None:
        """Raise ListsMissing while no anime mapping list is downloaded (downloading those due
        first): with no mapping, every entry would read as unknown and every play as not
        anime, and the link would copy and save that (`readers.Waiting`). None downloaded
        yet is a wait (`ListsNotYet`), every one switched off or copies none of which can be
        read a failure (`ListsUnreadable`)."""
        if self.index is None or self.missing is None:
            return
        if len(await self.index()) == 0:
            # Reads the lists' state on disk (and their index, should a file change meanwhile).
            raise await asyncio.to_thread(self.missing)

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        """One request: the newest `updatedAt` on the list against the saved one."""
        if "updated_at" not in cursors or WAITING in cursors or RETRY in cursors:
            return False
        self._newest[profile] = await self.client.newest_update(profile)
        return self._newest[profile] <= float(cursors["updated_at"])

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        warning = await asyncio.to_thread(self.client.expiry_warning, profile)
        if warning is not None:
            log.warning("AniList sign-in expires soon", extra={"profile": profile, "why": warning})
        raw = await self.mapper()
        mapper = self._placed(raw)
        before = states_from(cursors)
        delivered = self._delivered(profile)
        # Entries waiting for a season list changed nothing on AniList: only a whole read
        # brings them back.
        whole = full or WAITING in cursors or baseline is None or "updated_at" not in cursors
        if whole:
            listed = await self.client.read_list(profile)
            self._listed[profile] = listed.entries
        else:
            listed = await self.client.read_changes(profile, float(cursors["updated_at"]))
        # Entries that do not read whole: a delta read keeps them as the last read saw them
        # (they are not among those it changes), a whole read takes them from it (`unread_kept`).
        entries = listed.entries
        await self._adopt(entries)
        await self._prepare(raw, entries, before)
        spent = set(json.loads(cursors.get(DATED_BY) or "[]"))
        dated, kept = await asyncio.to_thread(self._webhook_times, profile, spent)
        viewed = await asyncio.to_thread(self._viewed, profile, entries)
        converted = await self._settled(
            lambda: anilist_side(entries, before, baseline, mapper, dated, viewed)
        )
        if self.store is not None:
            await asyncio.to_thread(self._note_set_aside, profile, entries, before)
        if whole or baseline is None:
            kept_states, kept_plays = unread_kept(listed.unread, entries, before, baseline)
            states = {**kept_states, **converted.states}
            plays = converted.side.plays + kept_plays
            ratings = season_ratings(states.values(), mapper)
            side = absorb(
                replace(converted.side, plays=plays, ratings=ratings), baseline, delivered
            )
        else:
            renewed = replaced_entries(entries, before)
            states = {i: s for i, s in {**before, **converted.states}.items() if i not in renewed}
            changed = {e.id for e in entries} | set(renewed)
            side = await self._settled(
                lambda: absorb(merge(baseline, converted, changed, states, mapper), None, delivered)
            )
        self._states[profile] = states
        newest = max([e.updated_at for e in entries], default=0.0)
        newest = max(newest, float(cursors.get("updated_at") or 0), self._newest.get(profile, 0.0))
        self._report(profile, converted, whole)
        saved = {"updated_at": str(newest), "entries": states_json(states)}
        # Each webhook time dates one step, once: a later rewatch is dated by AniList.
        saved[DATED_BY] = json.dumps(sorted((spent & kept) | converted.dated_by))
        waiting = sorted(m for m, (_, why) in converted.unmatched.items() if why.code == PENDING)
        if waiting:
            saved[WAITING] = json.dumps(waiting)
        self._cursors[profile] = saved
        return SideRead(side, saved)

    def _note_set_aside(
        self, profile: str, entries: Iterable[ListEntry], before: Mapping[int, EntryState]
    ) -> None:
        """Tell the delivery target of rewatches this read saw paused or dropped, or set (back)
        to watching (`relogged` included): a play of the link's other side goes on with them,
        and no removal lowers them (`deliver.anilist.REWATCH_SET_ASIDE`)."""
        from watchbridge.deliver.anilist import note_set_aside

        assert self.store is not None
        seen = [(before.get(e.id), e) for e in entries]
        note_set_aside(self.store, profile, seen, self.clock())

    async def _prepare(
        self, raw: Mapper, entries: Iterable[ListEntry], before: Mapping[int, EntryState]
    ) -> None:
        """Read the season lists the entries' absolute answers need: each entry's last
        episode, and the first (where its score lands) of every entry on the list."""
        if self.seasons is None:
            return
        episodes: list[tuple[int, int, int | None]] = []
        for entry in entries:
            again = entry.status == "REPEATING" or entry.repeat > 0
            again = again or rewatch_set_aside(entry, before.get(entry.id))
            again = again or bool(relogged(entry, before.get(entry.id))[0])
            top = max(entry.progress, entry.episodes or 0) if again else entry.progress
            episodes += [(entry.media_id, top, entry.episodes), (entry.media_id, 1, entry.episodes)]
        episodes += [(state.media, 1, state.episodes) for state in before.values() if state.media]
        wants = forward_wants(raw, episodes)
        if wants:
            await self.seasons.prepare(wants)

    async def _settled(self, compute: Callable[[], T]) -> T:
        """`compute()`, once more after reading the season lists it asked for and `_prepare`
        did not foresee (an absolute answer in the middle of an entry)."""
        result = compute()
        if self.seasons is not None and self.seasons.missing:
            await self.seasons.prepare(dict.fromkeys(self.seasons.missing))
            result = compute()
        return result

    async def _mapper(self) -> Mapper:
        return self._placed(await self.mapper())

    def _placed(self, raw: Mapper) -> Mapper:
        """`raw` with absolute numbers placed on the season lists, movies only for Trakt."""
        mapper = placed(raw, self.seasons)
        return mapper if self.movies else tv_only(mapper)

    def _webhook_times(
        self, profile: str, spent: set[str]
    ) -> tuple[dict[str, list[tuple[float, str]]], set[str]]:
        """When the webhook plays AniList took were watched, by item key, with their outbox
        rows (those not `spent` dating an earlier step): AniList dates a step by when it took
        it, which may be days later. Second: every such row still kept."""
        times: dict[str, list[tuple[float, str]]] = {}
        kept: set[str] = set()
        if self.store is None:
            return times, kept
        now = self.clock()
        for row, item, at, source in self.store.delivered_webhook_plays(profile, self.service):
            kept.add(row)
            if row in spent:
                continue
            ref = webhook_ref(self.store, item, source, now)
            key = key_for_ref(ref) if ref is not None else None
            if key is not None:
                times.setdefault(key, []).append((at, row))
        return times, kept

    def _viewed(self, profile: str, entries: Iterable[ListEntry]) -> dict[int, Viewings]:
        """When the episodes entries show were watched, for those saves of ours dated anew
        (`deliver.anilist.VIEWED`)."""
        if self.store is None:
            return {}
        from watchbridge.deliver.anilist import viewed_marks

        entries = list(entries)
        marks = viewed_marks(self.store, profile, entries, self.clock())
        found = {e.media_id: episode_dates(e, marks.get(e.media_id, ())) for e in entries}
        return {media: viewings for media, viewings in found.items() if viewings is not None}

    def _delivered(self, profile: str) -> Callable[[Play], bool]:
        """Whether the row of a play we queued for AniList is done (all are without a store)."""
        if self.store is None:
            return lambda _: True
        from watchbridge.sync import sync_key

        keys = self.store.delivered_keys(profile, self.service, sync_key(profile, self.service))

        def delivered(play: Play) -> bool:
            prefix = sync_key(profile, self.service, "add_play", play.item, play.at)
            at = bisect_left(keys, prefix)
            return at < len(keys) and keys[at].startswith(prefix)

        return delivered

    async def _reverse(self, other: Side | None = None) -> ReverseMapper | None:
        """The reverse mapping, placing absolute shows on this link's season lists; the
        lists the other side's plays need are read first."""
        from watchbridge.deliver.anilist import IndexReverse

        if self.reverse is None:
            return None
        reverse = await self.reverse()
        if self.seasons is None or not isinstance(reverse, IndexReverse):
            return reverse
        reverse = reverse.with_seasons(self.seasons)
        if other is not None:
            refs = []
            for key in {p.item for p in other.plays} | set(other.ratings):
                parts = key.split(":")
                if len(parts) < 3 or parts[1] != "tmdb" or not parts[2].isdigit():
                    continue
                if reverse.index.has_absolute(int(parts[2])) and (ref := ref_for_key(key)):
                    refs.append(ref)
            wants = reverse.wants(refs)
            if wants:
                await self.seasons.prepare(wants)
        return reverse

    def _report(self, profile: str, converted: Converted, whole: bool) -> None:
        """The entries that could not be mapped, for `watchbridge anime unmatched` (after a
        whole read, only those: what is no longer on the list or maps now is forgotten)."""
        if self.store is None:
            return
        from watchbridge.anime_data import (
            UnmatchedRecord,
            clear_unmatched,
            link_source,
            note_unmatched_entries,
        )

        now, source = self.clock(), link_source(self.other, "list")
        records = [
            UnmatchedRecord(
                profile,
                f"anilist:{media_id}",
                why.reason,
                why.code,
                entry.title or None,
                media_id,
                now,
                source,
            )
            for media_id, (entry, why) in converted.unmatched.items()
        ]
        note_unmatched_entries(self.store, profile, records, now, source, whole)
        if converted.mapped:
            clear_unmatched(self.store, profile, [f"anilist:{m}" for m in converted.mapped])

    async def _adopt(self, entries: Iterable[ListEntry]) -> None:
        if self.index is None:
            return
        index = await self.index()
        for entry in entries:
            index.adopt(entry.media_id, entry.mal_id)

    async def refine(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None = None
    ) -> Side:
        """Say what AniList can hold (see the module doc), and give a score the user would
        see as the other side's rating that rating's value."""
        if any(
            key in other.ratings and other.ratings[key].value != rated.value
            for key, rated in own.ratings.items()
        ):
            viewer = await self.client.viewer(profile)
            own = same_in_format(own, other, viewer.score_format, self.other)
        own = replace(own, rates_episodes=False)  # its scores are its entries'
        reverse = await self._reverse(other)
        if reverse is None:
            return own
        catalog = catalog_for(
            own, other, reverse, self._states.get(profile, {}), await self._mapper()
        )
        self._report_plays(profile, catalog)
        if any(why.code == PENDING for why in catalog.unmatched.values()):
            # The engine saves this run's cursors after refining: the next run reads again.
            self._cursors.get(profile, {})[RETRY] = "1"
        # A play queued for AniList that it cannot hold (an earlier release queued some) is no
        # write to wait for.
        holdable = tuple(
            p for p in own.plays if not p.record.startswith(EXPECTED) or p.item in catalog.items
        )
        await asyncio.to_thread(self._report_shows, profile, own, other, catalog.shows_rated)
        return replace(
            own,
            plays=holdable,
            catalog=catalog.items,
            left_alone=catalog.left_alone,
            shows_rated_apart=catalog.shows_rated,
        )

    def _report_shows(self, profile: str, own: Side, other: Side, shows: frozenset[str]) -> None:
        """The other side's ratings of whole anime shows, recorded for the user to be told
        what to rate instead, until a season of the show is rated on either side after them
        (`show_ratings`)."""
        if self.store is None:
            return
        from watchbridge.anime_data import link_source

        now = self.clock()
        records = show_ratings.records_of(self.store, profile)
        rated = {key: (other.ratings[key].value, other.ratings[key].at) for key in shows}
        seasons = show_ratings.seasons_rated_at(
            (key, r.at) for side in (own, other) for key, r in side.ratings.items()
        )
        titles = {key: title for key in shows if (title := other.show_titles.get(key))}
        changed = show_ratings.from_link(
            records,
            rated,
            seasons,
            titles,
            self.other,
            link_source(self.other, "ratings"),
            now,
        )
        for key, record in changed.put.items():
            show_ratings.note(self.store, profile, key, record, now)
        show_ratings.forget(self.store, profile, changed.forget)

    def _report_plays(self, profile: str, catalog: Catalog) -> None:
        """The other side's anime plays AniList cannot take, for `watchbridge anime
        unmatched` (the whole side: those no longer reported are forgotten); those that map
        now are cleared."""
        if self.store is None:
            return
        from watchbridge.anime_data import clear_unmatched, link_source, note_unmatched_plays

        source = link_source(self.other, "plays")
        note_unmatched_plays(self.store, profile, catalog.unmatched, self.clock(), source)
        clear_unmatched(self.store, profile, catalog.items)  # only what was recorded

    async def selection(self, profile: str, wanted: Narrowing, own: Side) -> Keep:
        """The items of the entries `wanted` names (the whole list is read for it when this
        run's read was a delta: one request per 500 entries)."""
        entries = self._listed.get(profile)
        if entries is None:
            entries = self._listed[profile] = await self.client.entries(profile)
        reverse = await self._reverse()
        media = selected_media(entries, wanted)
        return selection_keep(media, entries, own, await self._mapper(), reverse)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.seasons is not None:
            await self.seasons.aclose()


def index_loader(config: Config) -> Callable[[], Awaitable[AnimeIndex]]:
    """The mapping index from the datasets cache (refreshed when due), loaded once."""
    from watchbridge import anime_data

    loaded: list[AnimeIndex] = []

    async def load() -> AnimeIndex:
        if not loaded:
            data = anime_data.from_config(config)
            try:
                loaded.append(await data.index())
            finally:
                await data.aclose()
        return loaded[0]

    return load


def index_mapper(
    config: Config, index: Callable[[], Awaitable[AnimeIndex]] | None = None
) -> Callable[[], Awaitable[Mapper]]:
    """The forward mapping (AniList episode -> TMDB) of the index."""
    load_index = index or index_loader(config)

    async def load() -> Mapper:
        found = await load_index()
        return lambda anilist, episode, total: found.episode_for(anilist, episode, "tmdb", total)

    return load


def index_reverse_mapper(
    index: Callable[[], Awaitable[AnimeIndex]],
) -> Callable[[], Awaitable[ReverseMapper]]:
    """The reverse mapping (an item -> AniList id and episode) deliveries use."""
    from watchbridge.deliver.anilist import index_reverse

    async def load() -> ReverseMapper:
        return index_reverse(await index())

    return load


def make_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Clock,
    metrics: Metrics | None = None,
) -> AniListReader:
    from watchbridge import anime_data
    from watchbridge.anime_seasons import for_link
    from watchbridge.wiring import anilist_client

    client = anilist_client(config, store, clock, metrics=metrics)
    index = index_loader(config)

    def missing() -> ListsMissing:
        return anime_data.from_config(config, store=store).link_waits()

    return AniListReader(
        client,
        index_mapper(config, index),
        store=store,
        clock=clock,
        reverse=index_reverse_mapper(index),
        index=index,
        seasons=for_link(config, store, link, clock, metrics),
        movies=link.movies,
        other=next((name for name in link.services if name != "anilist"), "trakt"),
        missing=missing,
    )
