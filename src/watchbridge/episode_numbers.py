"""Another service's season and episode numbers for a show's episodes, found by the
episodes' own ids.

A Plex show set to a TheTVDB ordering (aired, DVD or absolute) numbers its episodes as TVDB
does, while Trakt and Serializd number them their own way (TMDB's for Serializd, mostly TMDB's
for Trakt: trakt-api.md §14). A link keys such a show's Plex episodes by the other side's
numbers: each episode's own TVDB, TMDB or IMDb id looked up in that side's season listings.

Listings are cached per show: used for a day, and read again hourly while a watched episode
has been missing from them for less than a day (a new one aired; services list it hours
later). They are kept for 30 days to stand in when the service cannot answer (or suddenly
lists nothing for the show), tried again hourly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from watchbridge.catalogue import season_listing
from watchbridge.config import Config
from watchbridge.http import ServiceError
from watchbridge.ids import ListedRow
from watchbridge.metrics import Metrics
from watchbridge.model import Ids
from watchbridge.services.serializd import SerializdClient, SerializdItemError
from watchbridge.services.trakt import EPISODE_IDS, ListedSeason, TraktClient, TraktItemError
from watchbridge.store import Store

log = logging.getLogger(__name__)

# (id name, value) of an episode's own id -> its (season, number) on the other side
EpisodeNumbers = Mapping[tuple[str, str], tuple[int, int]]

CACHE = "episode-numbers"  # id cache: "<source>:<show lookup>" -> {"at", "episodes", "lacking"}
FRESH_FOR = 86400.0
REFRESH_MISSING_AFTER = 3600.0
KEEP_FOR = 30 * 86400.0


def numbers_for(numbers: EpisodeNumbers, ids: Ids) -> tuple[int, int] | None:
    """The (season, number) one of the episode's ids has there: TVDB's first (IMDb episode
    ids are sometimes shared by the parts of a multi-part episode)."""
    for name in EPISODE_IDS:
        value = getattr(ids, name)
        if value and (found := numbers.get((name, value))) is not None:
            return found
    return None


def unambiguous(
    listed: Iterable[tuple[tuple[str, str], tuple[int, int]]],
) -> dict[tuple[str, str], tuple[int, int]]:
    """Each id with the one episode it names; an id listed at several (the parts of a
    multi-part episode IMDb lists once) names none of them: the last part is not the first.
    Pure."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    shared: set[tuple[str, str]] = set()
    for pair, where in listed:
        if found.setdefault(pair, where) != where:
            shared.add(pair)
    return {pair: where for pair, where in found.items() if pair not in shared}


def _matchable(ids: Ids) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name in EPISODE_IDS if (value := getattr(ids, name)))


class NumberSource(Protocol):
    """One service's episode listings of a show (empty when it does not know the show);
    raises ServiceError when it cannot answer now."""

    key: str  # the cache key's prefix
    name: str  # for messages

    async def fetch(self, show: Ids) -> dict[tuple[str, str], tuple[int, int]]: ...

    async def aclose(self) -> None: ...


async def trakt_seasons(client: TraktClient, show: Ids) -> list[ListedSeason]:
    """A show's season list on Trakt, found by its TMDB, TVDB or IMDb id ([] when Trakt has
    no such show)."""
    for name in ("tmdb", "tvdb", "imdb"):
        value = getattr(show, name)
        if value and (trakt := await client.show_id(name, value)) is not None:
            try:
                return await client.show_seasons(trakt)
            except TraktItemError:
                return []
    return []


def trakt_listing(client: TraktClient) -> Callable[[Ids], Awaitable[list[ListedRow]]]:
    """A show's episodes on Trakt as (season, number, number_abs, title, ids) rows."""

    async def listing(show: Ids) -> list[ListedRow]:
        return [
            (
                season.number,
                episode.number,
                episode.number_abs,
                episode.title,
                episode.ids.present(),
            )
            for season in await trakt_seasons(client, show)
            for episode in season.episodes
        ]

    return listing


class TraktNumbers:
    """Trakt's numbers: the show's Trakt id by id search, then its season list with episodes."""

    key, name = "trakt", "Trakt"

    def __init__(self, client: TraktClient) -> None:
        self.client = client

    async def fetch(self, show: Ids) -> dict[tuple[str, str], tuple[int, int]]:
        return unambiguous(
            (pair, (season.number, episode.number))
            for season in await trakt_seasons(self.client, show)
            for episode in season.episodes
            for pair in _matchable(episode.ids)
        )

    async def aclose(self) -> None:
        await self.client.aclose()


class SerializdNumbers:
    """Serializd's numbers, which are TMDB's: each season's listing gives its episodes' TMDB
    ids (§4)."""

    key, name = "serializd", "Serializd"

    def __init__(self, client: SerializdClient, store: Store, clock: Callable[[], float]) -> None:
        self.client, self.store, self.clock = client, store, clock

    async def fetch(self, show: Ids) -> dict[tuple[str, str], tuple[int, int]]:
        if not (show.tmdb and show.tmdb.isdigit()):
            return {}
        tmdb = int(show.tmdb)
        try:
            seasons = await self.client.show_seasons(tmdb)
        except SerializdItemError:
            return {}
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for season in sorted(seasons.ids):
            listing, _ = await season_listing(
                self.client, self.store, tmdb, season, self.clock, fresh=True
            )
            for number, episode_id in listing.ids.items():
                if episode_id is not None:
                    found[("tmdb", str(episode_id))] = (season, number)
        return found

    async def aclose(self) -> None:
        await self.client.aclose()


Wanted = tuple[tuple[str, str], ...]  # one watched episode's own ids


@dataclass(frozen=True)
class Listing:
    """A show's numbers as cached: when they were read and last tried, and the watched
    episodes they lack, with when each was first found missing."""

    read_at: float
    tried_at: float
    numbers: EpisodeNumbers
    lacking: Mapping[Wanted, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.read_at,
            "tried": self.tried_at,
            "episodes": [[name, value, s, n] for (name, value), (s, n) in self.numbers.items()],
            "lacking": [[[list(p) for p in pairs], at] for pairs, at in self.lacking.items()],
        }

    @classmethod
    def from_dict(cls, value: Any) -> Listing | None:
        try:
            numbers = {(str(n), str(v)): (int(s), int(e)) for n, v, s, e in value["episodes"]}
            lacking = {
                tuple((str(n), str(v)) for n, v in pairs): float(at)
                for pairs, at in value["lacking"]
            }
            return cls(float(value["at"]), float(value["tried"]), numbers, lacking)
        except (KeyError, TypeError, ValueError):
            return None


class EpisodeNumbering:
    """A source's numbers for a show, cached as the module docstring says."""

    def __init__(self, source: NumberSource, store: Store, clock: Callable[[], float]) -> None:
        self.source, self.store, self.clock = source, store, clock

    @property
    def name(self) -> str:
        return self.source.name

    async def numbers(self, show: Ids, watched: Sequence[Ids]) -> EpisodeNumbers:
        """The show's numbers; `watched`: the ids of its watched episodes, whose absence from
        the cached listing may make a fresh read due."""
        lookup = f"{self.source.key}:{_show_lookup(show)}"
        now = self.clock()
        hit, value = await asyncio.to_thread(self.store.cache_get, CACHE, lookup, now)
        cached = Listing.from_dict(value) if hit else None
        missing = [pairs for ids in watched if (pairs := _matchable(ids))]
        if cached is not None:
            missing = [pairs for pairs in missing if not _holds(cached.numbers, pairs)]
            lacking = {pairs: cached.lacking.get(pairs, now) for pairs in missing}
            lacking = {**cached.lacking, **lacking}
            if not _due(cached, lacking, now):
                if lacking != cached.lacking:
                    await self._keep(lookup, replace(cached, lacking=lacking), now)
                return cached.numbers
        try:
            numbers = await self.source.fetch(show)
            if cached is not None and cached.numbers and not numbers:
                raise ServiceError(self.source.name, "listed no episodes of a show it listed")
        except ServiceError as exc:
            if cached is None:
                raise
            log.warning(
                "could not read a show's episode numbers again; using the last ones read",
                extra={"service": self.source.name, "show": lookup, "problem": exc.message},
            )
            await self._keep(lookup, replace(cached, tried_at=now, lacking=lacking), now)
            return cached.numbers
        seen = cached.lacking if cached is not None else {}
        still = {pairs: seen.get(pairs, now) for pairs in {*seen, *missing}}
        still = {pairs: at for pairs, at in still.items() if not _holds(numbers, pairs)}
        await self._keep(lookup, Listing(now, now, numbers, still), now)
        return numbers

    async def _keep(self, lookup: str, listing: Listing, now: float) -> None:
        value = listing.to_dict()
        await asyncio.to_thread(self.store.cache_put, CACHE, lookup, value, now, KEEP_FOR)

    async def aclose(self) -> None:
        await self.source.aclose()


def _due(cached: Listing, lacking: Mapping[Wanted, float], now: float) -> bool:
    """A fresh read: daily, and hourly while a watched episode has been missing for less than
    a day (a new one airs and is listed hours later); never sooner than an hour after the
    last try (an outage)."""
    if now - cached.tried_at < REFRESH_MISSING_AFTER:
        return False
    recent = any(now - at < FRESH_FOR for at in lacking.values())
    return now - cached.read_at >= FRESH_FOR or recent


def _holds(numbers: EpisodeNumbers, pairs: Wanted) -> bool:
    return any(pair in numbers for pair in pairs)


def _show_lookup(show: Ids) -> str:
    name, value = next(iter(show.present().items()), ("none", ""))
    return f"{name}:{value}"


# --------------------------------------------------------------------------- wiring


def numbering_for(
    config: Config,
    store: Store,
    other: str,
    clock: Callable[[], float],
    metrics: Metrics | None = None,
) -> EpisodeNumbering | None:
    """The numbers a link's other side keys episodes by: Trakt's or Serializd's own; TMDB's
    (Serializd's, else Trakt's) for AniList, whose anime mapping starts from TMDB numbers.
    None when that service is not configured, or the side numbers as the library does."""
    order = {"trakt": ("trakt",), "serializd": ("serializd",), "anilist": ("serializd", "trakt")}
    for name in order.get(other, ()):
        if name == "trakt" and config.services.trakt is not None:
            client = TraktClient(config.services.trakt, store, metrics=metrics, clock=clock)
            return EpisodeNumbering(TraktNumbers(client), store, clock)
        if name == "serializd" and config.services.serializd is not None:
            serializd = SerializdClient(
                config.services.serializd, store, metrics=metrics, clock=clock
            )
            return EpisodeNumbering(SerializdNumbers(serializd, store, clock), store, clock)
    return None
