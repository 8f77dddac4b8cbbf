"""AniList's side of a link: list state turned into plays, through the anime mapping.

AniList keeps only the highest episode reached per entry (one cour or part), not which episodes
were watched or when (reference anilist.md §7). So the side is made up from list state:

- A progress step N -> M seen between two reads becomes plays of episodes N+1..M, dated with
  the entry's `updatedAt` (approximate, the best AniList knows).
- On the first read of an entry, its last episode is dated (`completedAt` when completed, else
  `updatedAt`) and the earlier ones are *undated* ("watched, date unknown"): the planner pairs
  them with any play of the same episode on the other side instead of inventing a date.
- A rewatch (REPEATING) adds a second pass of plays; passes completed before the first sync
  are not invented (AniList keeps a count, not dates).
- Each AniList episode goes through the mapping (`watchbridge.anime`) to the TMDB show, season
  and episode the other side uses. Entries that cannot be mapped are reported (`watchbridge
  anime unmatched`) and left out; they never stop the run. Movies and absolute-only answers
  are left out too (the link keys episodes by TMDB season).

Plays keep their record (`<entry id>:<episode>`, `<entry id>:r<pass>:<episode>`) and date
across reads, so an unchanged list reads the same every time. A delta read asks only for the
entries updated since the last read (one request, §5.4); deletions and lowered progress show up
in the daily full read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from watchbridge.anime import AnimeIndex, EpisodeRef, Forward, MovieRef, Unmatched
from watchbridge.config import Config, Link
from watchbridge.model import MediaRef
from watchbridge.narrow import Keep, Narrowing
from watchbridge.readers import Clock, SideRead
from watchbridge.reconcile import EXPECTED, UNDATED, Play, Rated, Side
from watchbridge.services.anilist import AniListClient, ListEntry
from watchbridge.sides import episode_key, ref_for_key, show_key
from watchbridge.store import Store

log = logging.getLogger(__name__)

# (AniList id, AniList episode, AniList episode count or None) -> where it lands on TMDB
Mapper = Callable[[int, int, int | None], Forward]
# an item of the other side -> (AniList id, AniList episode), as the delivery target maps it
ReverseMapper = Callable[[MediaRef], tuple[int, int] | Unmatched]


@dataclass(frozen=True)
class EntryState:
    """What the last read saw of one entry (kept in the cursors to spot steps and rewatches)."""

    progress: int
    repeat: int
    status: str


@dataclass(frozen=True)
class Converted:
    side: Side
    states: dict[int, EntryState]  # by list entry id
    unmatched: dict[int, tuple[ListEntry, Unmatched]] = field(default_factory=dict)  # by media
    mapped: frozenset[int] = frozenset()  # media ids that mapped (to clear old reports)


# --------------------------------------------------------------------------- pure conversion


def entry_of(record: str) -> int | None:
    """The list entry id a play record belongs to (None for other records)."""
    head = record.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def first_pass_count(entry: ListEntry, known: Iterable[str]) -> int:
    """How many episodes the first viewing covers."""
    if entry.status == "PLANNING":
        return 0
    if entry.status == "REPEATING" or entry.repeat > 0:
        # A rewatch means the first viewing was finished.
        seen = [int(r.rsplit(":", 1)[1].split(".")[0]) for r in known if ":r" not in r]
        return entry.episodes or max([entry.progress, *seen])
    return entry.progress


def _counted(before: EntryState | None, episodes: int | None) -> int | None:
    """Episodes of the first viewing the last read counted (None: never read)."""
    if before is None:
        return None
    if before.status == "REPEATING" or before.repeat > 0:
        return episodes or before.progress
    return 0 if before.status == "PLANNING" else before.progress


def _date(entry: ListEntry, episode: int, last: int, observed: bool) -> float:
    """When an episode counts as watched: a step seen between reads happened by `updatedAt`;
    on a first read only the last episode has a date."""
    if observed:
        return entry.updated_at or UNDATED
    if episode < last:
        return UNDATED
    if entry.status == "COMPLETED":
        completed = entry.completed_at.timestamp()
        if completed is not None:
            return completed
    return entry.updated_at or UNDATED


def _keys(forward: Forward) -> list[str] | Unmatched | None:
    """Item keys for one mapped AniList episode; None for a movie (not part of the link)."""
    if isinstance(forward, Unmatched):
        return forward
    if isinstance(forward, MovieRef):
        return None
    if forward.season is None:
        return Unmatched(
            f"only an absolute TMDB number is known (show {forward.show} episode "
            f"{forward.number}); the link needs season and episode: add an override",
            "absolute",
        )
    numbers = forward.numbers or (forward.number,)
    return [episode_key(forward.show, forward.season, n) for n in numbers]


def entry_plays(
    entry: ListEntry,
    before: EntryState | None,
    known: Mapping[str, Play],
    mapper: Mapper,
    claims: dict[str, list[Play]] | None = None,
) -> tuple[list[Play], Unmatched | None]:
    """One entry's plays: `known` are its plays from the last read, by record.

    `claims` are plays we queued for AniList (by item): a new play of such an item is that
    write read back, so it takes the queued play's date (and uses the claim up); without
    this, a back-dated play sent to AniList would come back dated today and be copied again."""
    plays: list[Play] = []
    problem: Unmatched | None = None
    cache: dict[int, list[str] | Unmatched | None] = {}

    def add(record: str, episode: int, at: float) -> None:
        nonlocal problem
        if episode not in cache:
            cache[episode] = _keys(mapper(entry.media_id, episode, entry.episodes))
        keys = cache[episode]
        if isinstance(keys, Unmatched):
            problem = problem or keys
            return
        for n, key in enumerate(keys or ()):
            full = record if n == 0 else f"{record}.{n}"
            old = known.get(full)
            when = old.at if old is not None else at
            if old is None and claims and claims.get(key):
                when = claims[key].pop(0).at
            plays.append(Play(key, when, full))

    first = first_pass_count(entry, known)
    # What the last read had already counted: episodes past it are a step seen happening.
    counted = _counted(before, entry.episodes)
    for episode in range(1, first + 1):
        step = counted is not None and episode > counted
        add(f"{entry.id}:{episode}", episode, _date(entry, episode, first, step))
    for n in range(1, entry.repeat + 1):  # finished rewatches
        seen = any(r.startswith(f"{entry.id}:r{n}:") for r in known)
        if not seen and (before is None or n <= before.repeat):
            continue  # finished before we were watching: no dates to give
        for episode in range(1, (entry.episodes or entry.progress) + 1):
            add(f"{entry.id}:r{n}:{episode}", episode, entry.updated_at or UNDATED)
    if entry.status == "REPEATING":
        n = entry.repeat + 1
        again = 0
        if before is not None and before.status == "REPEATING" and before.repeat == entry.repeat:
            again = before.progress
        for episode in range(1, entry.progress + 1):
            step = before is not None and episode > again
            add(f"{entry.id}:r{n}:{episode}", episode, _date(entry, episode, entry.progress, step))
    return plays, problem


def rating_key(entry: ListEntry, mapper: Mapper) -> str | None:
    """An entry's score is about its TMDB season (an AniList entry is one cour or part)."""
    forward = mapper(entry.media_id, 1, entry.episodes)
    if isinstance(forward, EpisodeRef) and forward.season is not None:
        return show_key(forward.show, forward.season)
    return None


def anilist_side(
    entries: Iterable[ListEntry],
    before: Mapping[int, EntryState],
    baseline: Side | None,
    mapper: Mapper,
) -> Converted:
    """The side for `entries`, keeping records and dates of `baseline` plays."""
    known: dict[int, dict[str, Play]] = {}
    claims: dict[str, list[Play]] = {}
    for play in baseline.plays if baseline else ():
        entry_id = entry_of(play.record)
        if play.record.startswith(EXPECTED):
            claims.setdefault(play.item, []).append(play)
        elif entry_id is not None:
            known.setdefault(entry_id, {})[play.record] = play
    plays: list[Play] = []
    scores: dict[str, Rated] = {}
    states: dict[int, EntryState] = {}
    unmatched: dict[int, tuple[ListEntry, Unmatched]] = {}
    mapped: set[int] = set()
    for entry in entries:
        states[entry.id] = EntryState(entry.progress, entry.repeat, entry.status)
        made, problem = entry_plays(
            entry, before.get(entry.id), known.get(entry.id, {}), mapper, claims
        )
        plays += made
        if problem is not None:
            unmatched[entry.media_id] = (entry, problem)
        else:
            mapped.add(entry.media_id)
        key = rating_key(entry, mapper) if entry.score > 0 else None
        if key is not None and (key not in scores or scores[key].at < entry.updated_at):
            scores[key] = Rated(entry.score, entry.updated_at)
    # Queued plays not read back yet stay claimed (the engine settles or tombstones them).
    plays += [play for waiting in claims.values() for play in waiting]
    return Converted(Side(tuple(plays), scores), states, unmatched, frozenset(mapped))


def merge(baseline: Side, fresh: Converted, changed: set[int]) -> Side:
    """A delta read: entries in `changed` replaced by their fresh plays, the rest as before
    (`fresh` carries the queued plays still waiting). Ratings are keyed by season, so fresh
    ones go over the old."""
    kept = tuple(
        p
        for p in baseline.plays
        if not p.record.startswith(EXPECTED) and entry_of(p.record) not in changed
    )
    scores = {**baseline.ratings, **fresh.side.ratings}
    return Side(kept + fresh.side.plays, scores)


def states_json(states: Mapping[int, EntryState]) -> str:
    return json.dumps(
        {str(k): [s.progress, s.repeat, s.status] for k, s in sorted(states.items())},
        separators=(",", ":"),
    )


def states_from(cursors: Mapping[str, str]) -> dict[int, EntryState]:
    try:
        raw = json.loads(cursors.get("entries") or "{}")
    except ValueError:
        return {}
    states = {}
    for key, value in raw.items() if isinstance(raw, dict) else ():
        if key.isdigit() and isinstance(value, list) and len(value) == 3:
            states[int(key)] = EntryState(int(value[0]), int(value[1]), str(value[2]))
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
        forward = mapper(media_id, 1, None)
        if isinstance(forward, EpisodeRef) and forward.season is not None:
            direct.add(show_key(forward.show, forward.season))
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
    ) -> None:
        self.client = client
        self.mapper = mapper
        self.reverse = reverse
        self.store = store
        self.clock = clock
        self._newest: dict[str, float] = {}
        self._listed: dict[str, list[ListEntry]] = {}  # the whole list, when the read had it

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        """One request: the newest `updatedAt` on the list against the saved one."""
        if "updated_at" not in cursors:
            return False
        self._newest[profile] = await self.client.newest_update(profile)
        return self._newest[profile] <= float(cursors["updated_at"])

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        warning = self.client.expiry_warning(profile)
        if warning is not None:
            log.warning("AniList sign-in expires soon", extra={"profile": profile, "why": warning})
        mapper = await self.mapper()
        before = states_from(cursors)
        if full or baseline is None or "updated_at" not in cursors:
            entries = await self.client.entries(profile)
            self._listed[profile] = entries
            converted = anilist_side(entries, before, baseline, mapper)
            side = converted.side
            states = converted.states
        else:
            since = float(cursors["updated_at"])
            entries = await self.client.updated_since(profile, since)
            converted = anilist_side(entries, before, baseline, mapper)
            side = merge(baseline, converted, {e.id for e in entries})
            states = {**before, **converted.states}
        newest = max([e.updated_at for e in entries], default=0.0)
        newest = max(newest, float(cursors.get("updated_at") or 0), self._newest.get(profile, 0.0))
        self._report(profile, converted)
        return SideRead(side, {"updated_at": str(newest), "entries": states_json(states)})

    def _report(self, profile: str, converted: Converted) -> None:
        if self.store is None:
            return
        from watchbridge.anime_data import clear_unmatched, note_unmatched

        now = self.clock()
        for media_id, (entry, why) in converted.unmatched.items():
            note_unmatched(
                self.store,
                profile,
                f"anilist:{media_id}",
                why,
                now,
                title=entry.title or None,
                anilist_id=media_id,
            )
        if converted.mapped:
            clear_unmatched(self.store, profile, [f"anilist:{m}" for m in converted.mapped])

    async def refine(self, profile: str, own: Side, other: Side) -> Side:
        return own

    async def selection(self, profile: str, wanted: Narrowing, own: Side) -> Keep:
        """The items of the entries `wanted` names (the whole list is read for it when this
        run's read was a delta: one request per 500 entries)."""
        entries = self._listed.get(profile)
        if entries is None:
            entries = self._listed[profile] = await self.client.entries(profile)
        reverse = await self.reverse() if self.reverse is not None else None
        media = selected_media(entries, wanted)
        return selection_keep(media, entries, own, await self.mapper(), reverse)

    async def aclose(self) -> None:
        await self.client.aclose()


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
    config: Config, store: Store, link: Link, profiles: list[str], clock: Clock
) -> AniListReader:
    from watchbridge.wiring import anilist_client

    client = anilist_client(config, store, clock)
    index = index_loader(config)
    return AniListReader(
        client,
        index_mapper(config, index),
        store=store,
        clock=clock,
        reverse=index_reverse_mapper(index),
    )
