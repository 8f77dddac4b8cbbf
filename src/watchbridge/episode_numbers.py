"""Another service's season and episode numbers for a show's episodes, found by the
episodes' own ids.

A Plex show set to a TheTVDB ordering (aired, DVD or absolute) numbers its episodes as TVDB
does, while Trakt and Serializd number them their own way (TMDB's for Serializd, mostly TMDB's
for Trakt: trakt-api.md §14). A link keys such a show's Plex episodes by the other side's
numbers: each episode's own TVDB, TMDB or IMDb id looked up in that side's season listings.

Listings are cached per show: used for a day, and read again sooner (at most hourly) when a
watched episode is missing that was not missing at the last read (a new one aired). They are
kept for 30 days to stand in when the service cannot answer, so a show's keys do not flip back
to Plex's numbers because one read failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from watchbridge.catalogue import season_episodes
from watchbridge.config import Config
from watchbridge.http import ServiceError
from watchbridge.metrics import Metrics
from watchbridge.model import Ids
from watchbridge.services.serializd import SerializdClient, SerializdItemError
from watchbridge.services.trakt import EPISODE_IDS, TraktClient, TraktItemError
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


def _matchable(ids: Ids) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name in EPISODE_IDS if (value := getattr(ids, name)))


class NumberSource(Protocol):
    """One service's episode listings of a show (empty when it does not know the show);
    raises ServiceError when it cannot answer now."""

    key: str  # the cache key's prefix
    name: str  # for messages

    async def fetch(self, show: Ids) -> dict[tuple[str, str], tuple[int, int]]: ...

    async def aclose(self) -> None: ...


class TraktNumbers:
    """Trakt's numbers: the show's Trakt id by id search, then its season list with episodes."""

    key, name = "trakt", "Trakt"

    def __init__(self, client: TraktClient) -> None:
        self.client = client

    async def fetch(self, show: Ids) -> dict[tuple[str, str], tuple[int, int]]:
        trakt = None
        for name in ("tmdb", "tvdb", "imdb"):
            value = getattr(show, name)
            if value and (trakt := await self.client.show_id(name, value)) is not None:
                break
        if trakt is None:
            return {}
        try:
            seasons = await self.client.show_seasons(trakt)
        except TraktItemError:
            return {}
        return {
            pair: (season.number, episode.number)
            for season in seasons
            for episode in season.episodes
            for pair in _matchable(episode.ids)
        }

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
            episodes, _ = await season_episodes(
                self.client, self.store, tmdb, season, self.clock, fresh=True
            )
            for number, episode_id in episodes.items():
                if episode_id is not None:
                    found[("tmdb", str(episode_id))] = (season, number)
        return found

    async def aclose(self) -> None:
        await self.client.aclose()


class EpisodeNumbering:
    """A source's numbers for a show, cached as the module docstring says."""

    def __init__(self, source: NumberSource, store: Store, clock: Callable[[], float]) -> None:
        self.source, self.store, self.clock = source, store, clock

    @property
    def name(self) -> str:
        return self.source.name

    async def numbers(self, show: Ids, watched: Sequence[Ids]) -> EpisodeNumbers:
        """The show's numbers; `watched`: the ids of its watched episodes, whose absence from
        the cached listing means a fresh read may be due."""
        lookup = f"{self.source.key}:{_show_lookup(show)}"
        now = self.clock()
        hit, value = await asyncio.to_thread(self.store.cache_get, CACHE, lookup, now)
        cached = _decoded(value) if hit else None
        if cached is not None:
            at, numbers, lacking = cached
            age = now - at
            if age < FRESH_FOR and (
                age < REFRESH_MISSING_AFTER or _lacking(numbers, watched) <= lacking
            ):
                return numbers
        try:
            numbers = await self.source.fetch(show)
        except ServiceError as exc:
            if cached is None:
                raise
            log.warning(
                "could not read a show's episode numbers again; using the last ones read",
                extra={"service": self.source.name, "show": lookup, "problem": exc.message},
            )
            return cached[1]
        stored = {
            "at": now,
            "episodes": [[name, value, s, n] for (name, value), (s, n) in numbers.items()],
            "lacking": [[list(p) for p in pairs] for pairs in sorted(_lacking(numbers, watched))],
        }
        await asyncio.to_thread(self.store.cache_put, CACHE, lookup, stored, now, KEEP_FOR)
        return numbers

    async def aclose(self) -> None:
        await self.source.aclose()


def _lacking(numbers: EpisodeNumbers, watched: Sequence[Ids]) -> set[tuple[tuple[str, str], ...]]:
    """The watched episodes (by their ids) the listing does not hold."""
    return {
        pairs for ids in watched if (pairs := _matchable(ids)) and numbers_for(numbers, ids) is None
    }


def _show_lookup(show: Ids) -> str:
    name, value = next(iter(show.present().items()), ("none", ""))
    return f"{name}:{value}"


def _decoded(
    value: Any,
) -> tuple[float, dict[tuple[str, str], tuple[int, int]], set[tuple[tuple[str, str], ...]]] | None:
    """A cached listing: when it was read, its numbers, and the watched episodes it lacked."""
    if not isinstance(value, dict):
        return None
    try:
        numbers = {(str(n), str(v)): (int(s), int(e)) for n, v, s, e in value["episodes"]}
        lacking = {tuple((str(n), str(v)) for n, v in pairs) for pairs in value["lacking"]}
        return float(value["at"]), numbers, lacking
    except (KeyError, TypeError, ValueError):
        return None


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
