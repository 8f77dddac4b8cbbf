"""Plex's side of a link: whole-section listings and the dated history, per person.

Reading (reference §3): the libraries (`services.plex.libraries`, default every movie and show
library), then per library one paged listing per type — movies; shows (their ids key the
episodes); seasons (only for ratings); all episodes in one listing — and the person's history
since the last read. Requests grow with pages, never with items.

Whose state: watched state and ratings are per Plex account, so listings and writes use the
profile's own token (`profiles.X.accounts.plex.token`, or the one `watchbridge auth plex`
stored); a profile without one is the server owner (the server token). The history is read with
the server token filtered by the profile's server-local account id (owner = 1): PMS serves it to
the admin. The id comes from the sign-in, a number in `users.plex`, or a username there (or the
sign-in's) looked up in `/accounts` once a week. Without an id or the owner's token a person's
plays come from the watched state alone (one per watched item).

What counts as a play:
- a history row of an item that is watched now (viewCount > 0). Unwatching in Plex keeps the
  rows in history but means "not watched": the item's plays disappear (the removal propagates
  through the baseline rules) and those rows are retired so a later rewatch does not bring them
  back;
- a watched item with no history row (marked watched, history cleared) gives one play at
  `lastViewedAt`, remembered so it keeps its record when history appears later;
- a play we wrote ourselves: Plex stamps a scrobble *now* and cannot back-date, so the
  deliverer records every write (`written`); the history row our scrobble made is recognised
  and the play is read back at the time it came from, never as a new play "today".

The cheap check (`unchanged`) is one history request of size 1 (total and newest row): it
covers new plays, our own scrobbles and deleted history, in every library at once. Ratings and
mark-watched without history do not show there; they arrive with the engine's daily full read
(or live through Plex's `media.rate` webhook). Section `updatedAt` was not used: it moves with
library scans, not with a person's watching.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchbridge import ratings
from watchbridge.config import Config, Link, PlexConfig
from watchbridge.errors import ConfigError
from watchbridge.model import Ids, MediaRef
from watchbridge.readers import Clock, SideRead
from watchbridge.reconcile import Play, Rated, Side
from watchbridge.services.plex import (
    HistoryEntry,
    LibraryItem,
    PlexAuthError,
    PlexClient,
    Section,
    library_item,
)
from watchbridge.store import Store

log = logging.getLogger(__name__)

SERVICE = "plex"
OWNER_ACCOUNT = "1"  # the server owner's server-local account id
KEYS = "keys"  # item key -> {"rating_keys": [...], "watched_at": lastViewedAt or None}
PLAYS = "plays"  # record -> {"item", "at", "rating_key"}: the plays of the last read
WRITTEN = "written"  # record -> Written, see below
SYNTHETIC = "synthetic"  # record -> {"rating_key", "at", "removed"}: plays with no history row
RETIRED = "retired"  # history id -> {"rating_key"}: rows of items since unwatched
HISTORY = "history"  # history id -> {"rating_key", "at"}: the server's history, cached
ECHO_WINDOW = 900.0  # a history row this close to one of our scrobbles is that scrobble
DUPLICATE_WINDOW = 120.0  # two copies of one item (4K + HD libraries) watched together
HISTORY_OVERLAP = 86400.0  # delta history reads look back this far past the newest row
ACCOUNTS = "plex-accounts"  # id cache: profile + configured names -> server-local account id
ACCOUNTS_TTL = 7 * 86400.0
CLOCK_MARGIN = 600.0  # the server's clock may differ from ours by this much
WATCHED_PREFIX = "watched:"
WRITTEN_PREFIX = "written:"
HISTORY_PREFIX = "history:"


# --------------------------------------------------------------------------- item keys


def movie_key(ids: Ids) -> str | None:
    if ids.tmdb:
        return f"movie:tmdb:{ids.tmdb}"
    return f"movie:imdb:{ids.imdb}" if ids.imdb else None


def show_key(ids: Ids, season: int | None = None) -> str | None:
    """A show (or one of its seasons) by TMDB id, TVDB only when no TMDB id is known."""
    name, value = ("tmdb", ids.tmdb) if ids.tmdb else ("tvdb", ids.tvdb)
    if not value:
        return None
    return f"show:{name}:{value}" + (f":s{season}" if season is not None else "")


def episode_key(show_ids: Ids, season: int | None, number: int | None) -> str | None:
    if season is None or number is None:
        return None
    name, value = ("tmdb", show_ids.tmdb) if show_ids.tmdb else ("tvdb", show_ids.tvdb)
    return f"episode:{name}:{value}:s{season}e{number}" if value else None


def key_for_ref(ref: MediaRef) -> str | None:
    """The canonical key of an outbox row's item (as `sides.ref_for_key` built it)."""
    if ref.kind == "movie":
        return movie_key(ref.ids)
    if ref.kind == "show":
        return show_key(ref.ids)
    if ref.kind == "season":
        return show_key(ref.show_ids, ref.season)
    return episode_key(ref.show_ids, ref.season, ref.number)


@dataclass(frozen=True)
class Library:
    """The listings of one person's chosen libraries."""

    movies: Sequence[LibraryItem] = ()
    shows: Sequence[LibraryItem] = ()
    seasons: Sequence[LibraryItem] = ()
    episodes: Sequence[LibraryItem] = ()


def item_keys(library: Library) -> dict[str, tuple[str, LibraryItem]]:
    """ratingKey -> (canonical key, item) for every item that can be linked."""
    shows = {s.rating_key: s for s in library.shows}
    keyed: dict[str, tuple[str, LibraryItem]] = {}
    for movie in library.movies:
        if key := movie_key(movie.ids):
            keyed[movie.rating_key] = (key, movie)
    for show in library.shows:
        if key := show_key(show.ids):
            keyed[show.rating_key] = (key, show)
    for season in library.seasons:
        parent = shows.get(season.parent_rating_key or "")
        if parent is not None and (key := show_key(parent.ids, season.season)):
            keyed[season.rating_key] = (key, season)
    for episode in library.episodes:
        parent = shows.get(episode.grandparent_rating_key or "")
        if parent is None:
            show_ids = episode.show_ids
        else:  # legacy guids name the show too; new-agent episodes only have the listing's
            show_ids = parent.ids.merged(episode.show_ids) if episode.show_ids else parent.ids
        if key := episode_key(show_ids, episode.season, episode.number):
            keyed[episode.rating_key] = (key, episode)
    return keyed


# --------------------------------------------------------------------------- plays (pure)


@dataclass(frozen=True)
class Written:
    """A play we put into Plex: the time it came from, when we scrobbled (every attempt;
    empty when Plex already showed it watched after that time), whether the last scrobble's
    outcome is still unknown (`pending`) and whether the play was removed since."""

    rating_key: str
    item: str
    at: float
    attempts: tuple[float, ...] = ()
    pending: bool = False
    removed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rating_key": self.rating_key,
            "item": self.item,
            "at": self.at,
            "attempts": list(self.attempts),
            "pending": self.pending,
            "removed": self.removed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Written:
        return cls(
            str(data["rating_key"]),
            str(data["item"]),
            float(data["at"]),
            tuple(float(t) for t in data.get("attempts") or ()),
            bool(data.get("pending")),
            bool(data.get("removed")),
        )


def written_record(rating_key: str, at: float) -> str:
    return f"{WRITTEN_PREFIX}{rating_key}:{int(at // 60)}"


@dataclass(frozen=True)
class Memory:
    """What the reader remembers between reads about one person's plays."""

    written: Mapping[str, Written] = field(default_factory=dict)
    synthetic: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    retired: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Built:
    side: Side
    memory: Memory
    plays: dict[str, dict[str, Any]]  # record -> {"item", "at", "rating_key"}
    keys: dict[str, dict[str, Any]]  # item key -> {"rating_keys", "watched_at"}


def build_side(
    library: Library,
    history: Iterable[HistoryEntry],
    memory: Memory,
    with_ratings: bool,
    listed_at: float | None = None,
) -> Built:
    """One person's Plex side from their listings, history and what we remember. Pure.

    `listed_at`: when the listings were taken; a history row after it (less a margin for the
    server's clock) may be a play the listing missed, so it is never retired."""
    keyed = item_keys(library)
    watched = {rk for rk, (_, item) in keyed.items() if item.view_count > 0}
    rows = [h for h in history if h.rating_key in keyed]
    plays: list[tuple[Play, str]] = []

    # Retire what an unwatch took away: those rows and writes never come back.
    settled = float("inf") if listed_at is None else listed_at - CLOCK_MARGIN
    retired = set(memory.retired) | {
        h.id for h in rows if h.rating_key not in watched and h.viewed_at < settled
    }
    written = {
        record: replace(w, removed=True) if _unwatched(w, watched, settled) else w
        for record, w in memory.written.items()
    }
    echoes = _echoes(rows, written.values())
    for record, w in written.items():
        if not w.removed and w.rating_key in keyed:
            plays.append((Play(keyed[w.rating_key][0], w.at, record), w.rating_key))
    for h in rows:
        if h.rating_key in watched and h.id not in retired and h.id not in echoes:
            plays.append(
                (Play(keyed[h.rating_key][0], h.viewed_at, HISTORY_PREFIX + h.id), h.rating_key)
            )

    synthetic: dict[str, Mapping[str, Any]] = {
        record: s for record, s in memory.synthetic.items() if s["rating_key"] in watched
    }
    accounted = {rk for _, rk in plays} | {w.rating_key for w in written.values()}
    accounted |= {s["rating_key"] for s in synthetic.values()}
    for rk in sorted(watched - accounted):
        at = keyed[rk][1].last_viewed_at
        if at is not None:
            synthetic[f"{WATCHED_PREFIX}{rk}:{int(at)}"] = {"rating_key": rk, "at": at}
    for record, s in synthetic.items():
        if not s.get("removed"):
            plays.append((Play(keyed[s["rating_key"]][0], float(s["at"]), record), s["rating_key"]))

    kept = _without_copies(plays)
    side = Side(
        tuple(p for p, _ in kept),
        _ratings(keyed.values()) if with_ratings else {},
        catalog=frozenset(key for key, _ in keyed.values()),
    )
    return Built(
        side,
        Memory(written, synthetic, frozenset(retired)),
        {p.record: {"item": p.item, "at": p.at, "rating_key": rk} for p, rk in kept},
        _key_map(keyed.values()),
    )


def _unwatched(written: Written, watched: set[str], settled: float) -> bool:
    """A write of ours whose item is no longer watched (not one the listing may predate)."""
    recent = bool(written.attempts) and written.attempts[-1] >= settled
    return written.rating_key not in watched and not written.removed and not recent


def _echoes(rows: Iterable[HistoryEntry], written: Iterable[Written]) -> set[str]:
    """History rows our own scrobbles made."""
    attempts: dict[str, list[float]] = defaultdict(list)
    for w in written:
        attempts[w.rating_key] += w.attempts
    return {
        h.id
        for h in rows
        if any(abs(h.viewed_at - t) <= ECHO_WINDOW for t in attempts.get(h.rating_key, ()))
    }


def _without_copies(plays: list[tuple[Play, str]]) -> list[tuple[Play, str]]:
    """One play where copies of one item (several libraries) were watched at the same time,
    or where a history row turned up for a play first read from the watched flag: the play we
    knew first keeps its record (a changed record would look like a removal)."""

    def rank(play: Play) -> tuple[int, str]:
        first_known = (WRITTEN_PREFIX, WATCHED_PREFIX)
        return next((n for n, p in enumerate(first_known) if play.record.startswith(p)), 2), (
            play.record
        )

    kept: list[tuple[Play, str]] = []
    cluster: list[tuple[Play, str]] = []
    for entry in sorted(plays, key=lambda x: (x[0].item, x[0].at, x[0].record)):
        play = entry[0]
        if cluster and (
            cluster[0][0].item != play.item or play.at - cluster[0][0].at > DUPLICATE_WINDOW
        ):
            kept.append(min(cluster, key=lambda x: rank(x[0])))
            cluster = []
        cluster.append(entry)
    if cluster:
        kept.append(min(cluster, key=lambda x: rank(x[0])))
    return kept


def _ratings(keyed: Iterable[tuple[str, LibraryItem]]) -> dict[str, Rated]:
    scores: dict[str, Rated] = {}
    for key, item in keyed:
        value = ratings.from_ten(item.user_rating)
        if value is None:
            continue
        at = item.last_rated_at or 0.0
        if key not in scores or scores[key].at < at:
            scores[key] = Rated(value, at)
    return scores


def _key_map(keyed: Iterable[tuple[str, LibraryItem]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for key, item in keyed:
        entry = found.setdefault(key, {"rating_keys": [], "watched_at": None})
        entry["rating_keys"].append(item.rating_key)
        if item.view_count > 0 and item.last_viewed_at is not None:
            entry["watched_at"] = max(entry["watched_at"] or 0.0, item.last_viewed_at)
    return found


def choose_sections(
    sections: Sequence[Section], names: Sequence[str], profile: str
) -> list[Section]:
    """The libraries named in config (every movie and show library when none are named)."""
    usable = [s for s in sections if s.type in ("movie", "show")]
    if not names:
        return usable
    by_title = {s.title.casefold(): s for s in usable}
    missing = [n for n in names if n.casefold() not in by_title]
    if missing:
        seen = ", ".join(s.title for s in usable) or "none"
        raise ConfigError(
            f"services.plex.libraries: the Plex server has no movie or show library named "
            f"{', '.join(repr(n) for n in missing)} for profile {profile} (libraries: {seen})"
        )
    return [by_title[n.casefold()] for n in names]


# --------------------------------------------------------------------------- who is reading


@dataclass(frozen=True)
class Access:
    """How one profile reaches its own Plex state."""

    token: str | None  # None: the server token (the owner)
    account_id: str | None  # server-local id for the history; None: unknown


def profile_token(config: Config, store: Store, profile: str) -> str | None:
    """The profile's own token (config first, then the one sign-in stored); None: the owner."""
    person = config.profiles.get(profile)
    account = person.accounts.plex if person else None
    if account is not None and account.token:
        return account.token.reveal()
    stored = store.get_token(SERVICE, profile) or {}
    token = stored.get("token")
    return str(token) if token else None


def known_account_id(config: Config, store: Store, profile: str, token: str | None) -> str | None:
    """The server-local account id when it is known without asking the server."""
    stored = store.get_token(SERVICE, profile) or {}
    if stored.get("account_id") not in (None, ""):
        return str(stored["account_id"])
    person = config.profiles.get(profile)
    for user in person.users.plex if person else ():
        if user.strip().isdigit():
            return user.strip()
    return OWNER_ACCOUNT if token is None else None


def plex_client(config: Config, store: Store, clock: Clock) -> PlexClient:
    plex: PlexConfig | None = config.services.plex
    if plex is None or not plex.url:
        raise ConfigError("services.plex.url is needed to sync with the Plex server")
    identifier = store.setting("plex_client_identifier", lambda: uuid.uuid4().hex, clock())
    return PlexClient(plex, clock=clock, client_identifier=identifier)


# --------------------------------------------------------------------------- the reader


class PlexReader:
    service = SERVICE

    def __init__(
        self, client: PlexClient, config: Config, store: Store, link: Link, clock: Clock
    ) -> None:
        self.client = client
        self.config = config
        self.store = store
        self.link = link
        self.clock = clock
        self._access: dict[str, Access] = {}
        self._server_accounts: dict[str, str] | None = None

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    async def access(self, profile: str) -> Access:
        if profile not in self._access:
            token = await asyncio.to_thread(profile_token, self.config, self.store, profile)
            account = await asyncio.to_thread(
                known_account_id, self.config, self.store, profile, token
            )
            stored = await asyncio.to_thread(self.store.get_token, SERVICE, profile) or {}
            if account is None:
                account = await self._account_by_name(profile, stored.get("username"))
            if account is None and stored.get("plextv_id") not in (None, ""):
                # A shared or managed user's server-local id is their plex.tv id (reference
                # §2); only the owner differs (1), and the owner is found by name above.
                account = str(stored["plextv_id"])
            if account is None:
                log.warning(
                    "no Plex account id for this profile: plays come from watched state only; "
                    "name the account (id or username) in profiles.<name>.users.plex",
                    extra={"profile": profile},
                )
            self._access[profile] = Access(token, account)
        return self._access[profile]

    async def _account_by_name(self, profile: str, signed_in_as: object = None) -> str | None:
        """The id of the account named in `users.plex` (or the sign-in's username), from the
        server's `/accounts` (remembered for a week, so the cheap check stays one request)."""
        person = self.config.profiles.get(profile)
        configured = [*(person.users.plex if person else ()), str(signed_in_as or "")]
        names = sorted({n.strip().casefold() for n in configured if n.strip()})
        if not names or not self.client.token:
            return None
        lookup = f"{profile}:{','.join(names)}"
        hit, cached = await asyncio.to_thread(self.store.cache_get, ACCOUNTS, lookup, self.clock())
        if hit:
            return str(cached) if cached is not None else None
        if self._server_accounts is None:
            self._server_accounts = await self.client.accounts()
        found = next(
            (n for n, name in self._server_accounts.items() if name.casefold() in names), None
        )
        await asyncio.to_thread(
            self.store.cache_put, ACCOUNTS, lookup, found, self.clock(), ACCOUNTS_TTL
        )
        return found

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        access = await self.access(profile)
        if access.account_id is None or "history" not in cursors:
            return False
        token = self._history_token(access)
        try:
            total, newest = await self.client.history_head(access.account_id, token)
        except PlexAuthError:
            if token is None:
                raise
            return False  # only the owner may read the history: read the listings instead
        return _history_cursor(total, newest) == cursors["history"]

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        access = await self.access(profile)
        # What we wrote is loaded before the listings: a write delivered while we read must
        # not look unwatched in a listing taken before it.
        memory = await asyncio.to_thread(self._memory, profile)
        listed_at = self.clock()
        library, listings = await self._library(profile, access.token)
        history, cursor = await self._history(profile, access, full)
        built = build_side(library, history, memory, "ratings" in self.link.kinds, listed_at)
        await asyncio.to_thread(self._remember, profile, built)
        keep = "collection" in self.link.kinds
        return SideRead(built.side, {"history": cursor}, listings if keep else None)

    async def refine(self, profile: str, own: Side, other: Side) -> Side:
        return own

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ reads

    async def _library(
        self, profile: str, token: str | None
    ) -> tuple[Library, dict[str, list[Mapping[str, object]]]]:
        """The chosen libraries' items, and the raw listings they were read from."""
        plex = self.config.services.plex
        names = plex.libraries if plex else []
        chosen = choose_sections(await self.client.sections(token), names, profile)
        rows: dict[str, list[Mapping[str, object]]] = defaultdict(list)
        for section in chosen:
            kinds = ["movie"] if section.type == "movie" else ["show", "episode"]
            if section.type == "show" and "ratings" in self.link.kinds:
                kinds.append("season")
            for kind in kinds:
                rows[kind] += await self.client.listing_rows(section.key, kind, token)
        found = {
            kind: [item for row in listed if (item := library_item(row)) is not None]
            for kind, listed in rows.items()
        }
        library = Library(*(found.get(k, []) for k in ("movie", "show", "season", "episode")))
        return library, rows

    def _history_token(self, access: Access) -> str | None:
        """History is the admin's view: the server token, else the profile's own."""
        return None if self.client.token else access.token

    async def _history(
        self, profile: str, access: Access, full: bool
    ) -> tuple[list[HistoryEntry], str]:
        """The account's whole history: read whole on a full read (or the first), else the rows
        since the newest cached one merged onto the cache."""
        account, token = access.account_id, self._history_token(access)
        if account is None:
            return [], ""
        cached = await asyncio.to_thread(self.store.mirror_get, SERVICE, profile, HISTORY)
        rows = {
            number: HistoryEntry(number, str(v["rating_key"]), float(v["at"]), account)
            for number, v in cached.items()
        }
        since = None if full or not rows else max(h.viewed_at for h in rows.values())
        try:
            fresh = await self.client.history(
                account, None if since is None else since - HISTORY_OVERLAP, token
            )
        except PlexAuthError:
            if token is None:
                raise
            # The listings just took this token: the server keeps its history for the owner.
            log.warning(
                "the Plex server serves its watch history to the owner only; set "
                "services.plex.token for dated plays (until then: one play per watched item)",
                extra={"profile": profile},
            )
            return [], ""
        replaced = since is None
        if replaced:
            rows = {h.id: h for h in fresh}
        else:
            rows.update({h.id: h for h in fresh})
        values = {h.id: {"rating_key": h.rating_key, "at": h.viewed_at} for h in rows.values()}
        now = self.clock()
        if replaced:
            await asyncio.to_thread(
                self.store.mirror_replace, SERVICE, profile, HISTORY, values, now
            )
        else:
            new = {h.id: values[h.id] for h in fresh}
            await asyncio.to_thread(self.store.mirror_put, SERVICE, profile, HISTORY, new, now)
        ordered = sorted(rows.values(), key=lambda h: (h.viewed_at, h.id), reverse=True)
        return ordered, _history_cursor(len(ordered), ordered[0] if ordered else None)

    # ------------------------------------------------------------------ memory (store)

    def _memory(self, profile: str) -> Memory:
        written = self.store.mirror_get(SERVICE, profile, WRITTEN)
        return Memory(
            {record: Written.from_dict(v) for record, v in written.items()},
            self.store.mirror_get(SERVICE, profile, SYNTHETIC),
            frozenset(self.store.mirror_get(SERVICE, profile, RETIRED)),
        )

    def _remember(self, profile: str, built: Built) -> None:
        now, store, memory = self.clock(), self.store, built.memory
        store.mirror_replace(SERVICE, profile, KEYS, built.keys, now)
        store.mirror_replace(SERVICE, profile, PLAYS, built.plays, now)
        store.mirror_replace(SERVICE, profile, SYNTHETIC, dict(memory.synthetic), now)
        store.mirror_put(SERVICE, profile, RETIRED, {h: {} for h in memory.retired}, now)
        store.mirror_put(
            SERVICE, profile, WRITTEN, {r: w.to_dict() for r, w in memory.written.items()}, now
        )


def _history_cursor(total: int, newest: HistoryEntry | None) -> str:
    return f"{total}:{newest.id if newest else ''}"


def make_reader(
    config: Config, store: Store, link: Link, profiles: list[str], clock: Clock
) -> PlexReader:
    return PlexReader(plex_client(config, store, clock), config, store, link, clock)
