"""Absolute episode numbers on a show's live season list (Trakt or Serializd), cached.

Some long runners map to TMDB by absolute number (One Piece, Gintama: Anime-Lists' `a`, or an
override `absolute: true`). The datasets disagree on where TMDB's seasons break (reference
anime-mapping.md §6 D), so the break points come from the side the link writes to: Trakt's
season list (`/shows/{id}/seasons?extended=full,episodes`, with `number_abs` where Trakt has
it) for links with Trakt, Serializd's show answer (TMDB seasons and episode counts) for links
with Serializd. `anime.SeasonTable` does the counting; this module only reads and caches.

Costs: only shows an absolute mapping actually touches are read, each at most once a week
(Trakt: a TMDB-id search and the season list; Serializd: the show answer, plus a season's
episode list where the answer gives no count), and again after a day when an episode past the
list's end is wanted (a new episode). Lists are kept in the store for 90 days: when reading
one again fails, the last good copy serves. When there is none, the episodes stay unmatched
(`PENDING`) and are tried again on the next run; a failure never stops the rest of a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from watchbridge.anime import PENDING, EpisodeRef, Forward, SeasonTable, Unmatched, seasonal
from watchbridge.config import Config, Link
from watchbridge.errors import WatchbridgeError
from watchbridge.metrics import Metrics
from watchbridge.services.serializd import SerializdClient, SerializdItemError
from watchbridge.services.trakt import ListedSeason, TraktClient, TraktItemError
from watchbridge.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "anime-seasons"
FRESH = 7 * 86400.0  # a season list is read again after a week
NEWER = 86400.0  # ... or after a day, when an episode past its end is wanted
KEEP = 90 * 86400.0  # a stale list serves this long while reading it again fails
UNKNOWN = 86400.0  # a show the source does not know is asked about again after a day
RETRY = 600.0  # a read that failed (or came up short) is not repeated sooner

# The highest absolute number wanted of a show, or the highest (season, episode); None: any.
Want = int | tuple[int, int] | None
# (AniList id, AniList episode, AniList episode count or None) -> where it lands on TMDB
Mapper = Callable[[int, int, int | None], Forward]


# --------------------------------------------------------------------------- pure shapes


def trakt_table(seasons: Iterable[ListedSeason]) -> SeasonTable:
    """Trakt's season list as a table: regular seasons with their episodes' `number_abs`; a
    season's count is its highest listed episode, else Trakt's `episode_count` (an empty
    episodes list, trakt/trakt-api#799)."""
    counts: list[tuple[int, int | None]] = []
    numbered: list[tuple[int, int, int]] = []
    for season in sorted(seasons, key=lambda s: s.number):
        if season.number < 1:
            continue
        listed = [e.number for e in season.episodes]
        counts.append((season.number, max(listed) if listed else season.episode_count))
        numbered += [
            (e.number_abs, season.number, e.number)
            for e in season.episodes
            if e.number_abs is not None and e.number_abs > 0
        ]
    return SeasonTable(tuple(counts), tuple(numbered), "Trakt's season list")


def serializd_table(counts: Mapping[int, int | None]) -> SeasonTable:
    """Serializd's (TMDB) seasons as a table: episode counts of the regular seasons by number
    (None: no count known); specials have no absolute number and are left out."""
    regular = tuple((number, counts[number]) for number in sorted(counts) if number > 0)
    return SeasonTable(regular, (), "Serializd's (TMDB) seasons")


def table_to_dict(table: SeasonTable | Unmatched) -> dict[str, Any]:
    if isinstance(table, Unmatched):
        return {"unmatched": [table.reason, table.code]}
    return {
        "counts": [list(c) for c in table.counts],
        "numbered": [list(n) for n in table.numbered],
        "source": table.source,
    }


def table_from_dict(value: Any) -> SeasonTable | Unmatched | None:
    """A cached table (None when the value is not one: read again)."""
    if not isinstance(value, dict):
        return None
    try:
        if "unmatched" in value:
            reason, code = value["unmatched"]
            return Unmatched(str(reason), str(code))
        counts = tuple((int(s), None if c is None else int(c)) for s, c in value["counts"])
        numbered = tuple((int(a), int(s), int(n)) for a, s, n in value["numbered"])
        return SeasonTable(counts, numbered, str(value["source"]))
    except (KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- sources


class SeasonSource(Protocol):
    """Where season lists come from. `fetch` answers Unmatched for a show the source does not
    know, and raises WatchbridgeError (ServiceError) when it cannot answer now."""

    key: str  # "trakt" | "serializd": the cache key's prefix
    name: str  # for messages

    @property
    def requests_sent(self) -> int: ...

    async def fetch(self, show: int) -> SeasonTable | Unmatched: ...

    async def aclose(self) -> None: ...


class TraktSeasons:
    """Trakt's season list of a TMDB show: the Trakt id by search, then the list."""

    key, name = "trakt", "Trakt"

    def __init__(self, client: TraktClient) -> None:
        self.client = client

    @property
    def requests_sent(self) -> int:
        return self.client.http.requests_sent

    async def fetch(self, show: int) -> SeasonTable | Unmatched:
        trakt = await self.client.show_id("tmdb", str(show))
        if trakt is None:
            return Unmatched(f"Trakt has no show with TMDB id {show}", "no-target")
        try:
            return trakt_table(await self.client.show_seasons(trakt))
        except TraktItemError as exc:
            return Unmatched(exc.message, "no-target")

    async def aclose(self) -> None:
        await self.client.aclose()


class SerializdSeasons:
    """Serializd's show answer (TMDB seasons with episode counts); a season it gives no count
    for is counted from its episode list."""

    key, name = "serializd", "Serializd"

    def __init__(self, client: SerializdClient) -> None:
        self.client = client

    @property
    def requests_sent(self) -> int:
        return self.client.http.requests_sent

    async def fetch(self, show: int) -> SeasonTable | Unmatched:
        try:
            listed = await self.client.show_seasons(show)
            counts: dict[int, int | None] = {}
            for number in sorted(n for n in listed.ids if n > 0):
                count = listed.episodes.get(number)
                if count is None:
                    count = max(await self.client.season_episodes(show, number), default=0)
                counts[number] = count
        except SerializdItemError as exc:
            return Unmatched(
                f"Serializd does not know TMDB show {show}: {exc.quoted('serializd')}", "no-target"
            )
        return serializd_table(counts)

    async def aclose(self) -> None:
        await self.client.aclose()


# --------------------------------------------------------------------------- the cache


class AbsoluteSeasons:
    """The season lists of one source for the shows absolute mappings touch.

    `prepare` reads what is wanted (store first, the source when due); `place` and
    `absolute_of` answer from what was prepared, without I/O, so the pure mapping code can
    use them. A show asked about but not prepared is remembered in `missing`."""

    def __init__(self, source: SeasonSource, store: Store, clock: Callable[[], float]) -> None:
        self.source = source
        self.store = store
        self.clock = clock
        self.missing: set[int] = set()
        self._tables: dict[int, SeasonTable | Unmatched] = {}
        self._held: dict[int, tuple[float, SeasonTable | Unmatched] | None] = {}
        self._tried: dict[int, float] = {}

    @property
    def requests_sent(self) -> int:
        return self.source.requests_sent

    async def aclose(self) -> None:
        await self.source.aclose()

    # ------------------------------------------------------------------ I/O

    async def prepare(self, wants: Mapping[int, Want]) -> None:
        """Have the season list of every show in `wants` at hand (see the module doc)."""
        for show, want in sorted(wants.items()):
            await self._prepare(show, want)
            self.missing.discard(show)

    async def _prepare(self, show: int, want: Want) -> None:
        now = self.clock()
        if show not in self._held:
            self._held[show] = await asyncio.to_thread(self._load, show)
        held = self._held[show]
        if held is not None and not _due(held, want, now):
            self._tables[show] = held[1]
            return
        if now - self._tried.get(show, float("-inf")) < RETRY:
            if held is not None and isinstance(held[1], SeasonTable):
                self._tables[show] = held[1]
            return
        self._tried[show] = now
        try:
            fresh = await self.source.fetch(show)
        except WatchbridgeError as exc:
            stale = held[1] if held is not None else None
            if isinstance(stale, SeasonTable):
                log.warning(
                    "season list not read again: the last good copy serves",
                    extra={"service": self.source.key, "show": show, "why": exc.message},
                )
                self._tables[show] = stale
            else:
                log.warning(
                    "season list could not be read: absolute episodes stay unmatched",
                    extra={"service": self.source.key, "show": show, "why": exc.message},
                )
                self._tables[show] = Unmatched(
                    f"TMDB show {show} is numbered absolutely here and {self.source.name}'s "
                    f"season list could not be read ({exc.message}); tried again next run",
                    PENDING,
                )
            return
        self._tables[show] = fresh
        self._held[show] = (now, fresh)
        await asyncio.to_thread(
            self.store.cache_put, NAMESPACE, self._lookup(show), _stored(now, fresh), now, KEEP
        )

    def _lookup(self, show: int) -> str:
        return f"{self.source.key}:{show}"

    def _load(self, show: int) -> tuple[float, SeasonTable | Unmatched] | None:
        hit, value = self.store.cache_get(NAMESPACE, self._lookup(show), self.clock())
        if not hit or not isinstance(value, dict) or not isinstance(value.get("at"), int | float):
            return None
        table = table_from_dict(value.get("table"))
        return None if table is None else (float(value["at"]), table)

    # ------------------------------------------------------------------ answers (no I/O)

    def table(self, show: int) -> SeasonTable | Unmatched:
        found = self._tables.get(show)
        if found is None:
            self.missing.add(show)
            return Unmatched(
                f"TMDB show {show} is numbered absolutely here and its season list is not "
                "read yet; tried again next run",
                PENDING,
            )
        return found

    def place(self, forward: Forward) -> Forward:
        """A TMDB answer by absolute number placed on the show's seasons; others unchanged."""
        if not isinstance(forward, EpisodeRef) or forward.season is not None:
            return forward
        if forward.scheme != "tmdb":
            return forward
        table = self.table(forward.show)
        if isinstance(table, Unmatched):
            return table
        return seasonal(forward, table)

    def absolute_of(self, show: int, season: int, number: int) -> int | Unmatched:
        """The absolute number of TMDB `show` S`season`E`number` on this source's list."""
        table = self.table(show)
        if isinstance(table, Unmatched):
            return table
        found = table.absolute_of(season, number)
        if isinstance(found, Unmatched):
            return Unmatched(f"show {show}: {found.reason}", found.code)
        return found


def _due(held: tuple[float, SeasonTable | Unmatched], want: Want, now: float) -> bool:
    at, table = held
    if isinstance(table, Unmatched):
        return now - at >= UNKNOWN
    return now - at >= FRESH or (not table.covers(want) and now - at >= NEWER)


def _stored(now: float, table: SeasonTable | Unmatched) -> dict[str, Any]:
    return {"at": now, "table": table_to_dict(table)}


def placed(mapper: Mapper, seasons: AbsoluteSeasons | None) -> Mapper:
    """`mapper` with its absolute TMDB answers placed on `seasons` (unchanged without)."""
    if seasons is None:
        return mapper

    def place(anilist: int, episode: int, total: int | None) -> Forward:
        return seasons.place(mapper(anilist, episode, total))

    return place


def forward_wants(
    mapper: Mapper,
    episodes: Iterable[tuple[int, int, int | None]],
) -> dict[int, int]:
    """The shows (and highest absolute numbers) that (AniList id, episode, count) answer
    absolutely: what to prepare before mapping an AniList list."""
    wants: dict[int, int] = {}
    for anilist, episode, total in episodes:
        if episode < 1:
            continue
        ref = mapper(anilist, episode, total)
        if isinstance(ref, EpisodeRef) and ref.season is None and ref.scheme == "tmdb":
            top = max(ref.numbers or (ref.number,))
            wants[ref.show] = max(wants.get(ref.show, 0), top)
    return wants


# --------------------------------------------------------------------------- wiring


def trakt_seasons(
    config: Config, store: Store, clock: Callable[[], float], metrics: Metrics | None = None
) -> AbsoluteSeasons | None:
    if config.services.trakt is None:
        return None
    client = TraktClient(config.services.trakt, store, metrics=metrics, clock=clock)
    return AbsoluteSeasons(TraktSeasons(client), store, clock)


def serializd_seasons(
    config: Config, store: Store, clock: Callable[[], float], metrics: Metrics | None = None
) -> AbsoluteSeasons | None:
    if config.services.serializd is None:
        return None
    client = SerializdClient(config.services.serializd, store, metrics=metrics, clock=clock)
    return AbsoluteSeasons(SerializdSeasons(client), store, clock)


MAKERS = {"trakt": trakt_seasons, "serializd": serializd_seasons}


def other_side(config: Config, link: Link) -> str | None:
    """Whose season lists an AniList link places absolute numbers on: its other side's; for a
    media server (numbered by its TMDB agent, like a webhook's plays), Trakt's where it is
    configured, else Serializd's."""
    others = [str(s) for s in link.services if s != "anilist"]
    if len(others) != 1:
        return None
    return others[0] if others[0] in MAKERS else webhook_side(config)


def webhook_side(config: Config) -> str | None:
    """Whose season lists place a webhook's absolute numbers: Trakt's, else Serializd's."""
    configured = {"trakt": config.services.trakt, "serializd": config.services.serializd}
    return next((name for name, service in configured.items() if service is not None), None)


def for_link(
    config: Config,
    store: Store,
    link: Link,
    clock: Callable[[], float],
    metrics: Metrics | None = None,
) -> AbsoluteSeasons | None:
    """The season lists an AniList link places absolute numbers on (its other side's)."""
    other = other_side(config, link)
    return MAKERS[other](config, store, clock, metrics) if other else None


class SeasonSources:
    """Season lists for the AniList delivery target, by where a row comes from: a link's row
    uses its other side's lists; a webhook's (numbered by the media server's TMDB agent) uses
    Trakt's when Trakt is configured, else Serializd's."""

    def __init__(
        self,
        sources: Mapping[str, AbsoluteSeasons],
        links: Mapping[str, str],
        default: str | None,
    ) -> None:
        self.sources = dict(sources)
        self.links = dict(links)
        self.default = default

    def for_payload(self, payload: Mapping[str, Any]) -> AbsoluteSeasons | None:
        link = payload.get("link")
        key = self.links.get(link) if isinstance(link, str) else self.default
        return self.sources.get(key) if key else None

    async def aclose(self) -> None:
        for source in self.sources.values():
            await source.aclose()


def season_sources(
    config: Config, store: Store, clock: Callable[[], float], metrics: Metrics | None = None
) -> SeasonSources:
    sources = {
        key: made
        for key, make in MAKERS.items()
        if (made := make(config, store, clock, metrics)) is not None
    }
    links = {
        name: other
        for name, link in config.links.items()
        if "anilist" in link.services and (other := other_side(config, link)) is not None
    }
    default = webhook_side(config)
    return SeasonSources(sources, links, default)
