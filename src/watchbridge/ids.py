"""Identity resolution: turn what a source gave us into ids a target can use, with a cache.

Pure rules decide which lookups to try; the lookup itself and the cache are injected.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from watchbridge.http import ServiceError
from watchbridge.model import Ids, MediaRef
from watchbridge.services.plex import PlexItem

log = logging.getLogger(__name__)

FOUND_TTL = 30 * 86400.0
MISSING_TTL = 86400.0  # a fresh episode may be added on Trakt within a day
PLEX_FOUND_TTL = 7 * 86400.0
PLEX_MISSING_TTL = 3600.0  # PMS may still be matching a freshly added file

Search = Callable[[str, str, str], Awaitable[list[dict[str, Any]]]]
PlexMetadata = Callable[[str], Awaitable[PlexItem | None]]
TRAKT_ID_NAMES = ("trakt", "imdb", "tmdb", "tvdb", "slug")  # what Trakt matches items by


class IdCache(Protocol):
    def cache_get(self, namespace: str, lookup: str, now: float) -> tuple[bool, Any]: ...

    def cache_put(
        self, namespace: str, lookup: str, value: Any, now: float, ttl: float
    ) -> None: ...


def lookups(item: MediaRef) -> list[tuple[str, str, str]]:
    """(id_type, id, type) searches worth trying for an item, strongest first."""
    kind = "episode" if item.kind == "episode" else item.kind
    return [
        (name, str(value), kind)
        for name in ("imdb", "tmdb", "tvdb")
        if (value := getattr(item.ids, name))
    ]


def ids_from(found: dict[str, Any]) -> Ids:
    return Ids(**{k: str(v) for k, v in found.items() if k in Ids.__dataclass_fields__ and v})


def apply_match(item: MediaRef, result: dict[str, Any]) -> MediaRef:
    """The item with the ids of one search result added (ours kept where both have one)."""
    media = result.get(result.get("type", item.kind)) or {}
    show = result.get("show") or {}
    return replace(
        item,
        ids=item.ids.merged(ids_from(media.get("ids") or {})),
        show_ids=item.show_ids.merged(ids_from(show.get("ids") or {})),
    )


class TraktResolver:
    """Finds Trakt ids for items by searching their other ids; remembers answers."""

    namespace = "trakt-search"

    def __init__(self, search: Search, cache: IdCache, clock: Callable[[], float]) -> None:
        self.search = search
        self.cache = cache
        self.clock = clock

    async def resolve(self, item: MediaRef) -> MediaRef | None:
        for id_type, value, kind in lookups(item):
            lookup = f"{kind}:{id_type}:{value}"
            hit, cached = self.cache.cache_get(self.namespace, lookup, self.clock())
            if not hit:
                results = await self.search(id_type, value, kind)
                cached = next((r for r in results if r.get("type") == kind), None)
                ttl = FOUND_TTL if cached else MISSING_TTL
                self.cache.cache_put(self.namespace, lookup, cached, self.clock(), ttl)
            if cached:
                return apply_match(item, cached)
        return None


# --------------------------------------------------------------------------- Plex enrichment


def has_trakt_ids(ids: Ids) -> bool:
    """Any id Trakt can match a show (or a movie) by."""
    return any(getattr(ids, name) for name in TRAKT_ID_NAMES)


def movie_sendable(item: MediaRef) -> bool:
    return bool(item.ids.trakt or item.ids.imdb or item.ids.tmdb)


def episode_sendable(item: MediaRef) -> bool:
    """By the episode's own tvdb/trakt id, or by show ids with season and number."""
    by_numbers = has_trakt_ids(item.show_ids) and item.season is not None and bool(item.number)
    return bool(item.ids.tvdb or item.ids.trakt) or by_numbers


def from_plex(item: MediaRef) -> bool:
    """Only items Plex identified (a plex:// guid) are looked up on Plex: Emby's item ids are
    numeric strings too, and the same key on the Plex server is a different item."""
    return bool(item.ids.plex_guid or item.show_ids.plex_guid)


def needs_plex_ids(item: MediaRef) -> bool:
    """A Plex item with a key to read and no ids Trakt can use yet."""
    if not (item.source_key or item.show_source_key) or not from_plex(item):
        return False
    if item.kind == "movie":
        return not movie_sendable(item)
    if item.kind == "episode":
        return not episode_sendable(item)
    return False


def show_key_to_read(item: MediaRef) -> str | None:
    """The show to read: an episode's, while it has no show ids Trakt can use."""
    if item.kind != "episode" or has_trakt_ids(item.show_ids):
        return None
    return item.show_source_key


def merge_plex_item(item: MediaRef, found: PlexItem) -> MediaRef:
    """The item with what PMS says about it filled into its gaps (ours win).

    A ratingKey that now names something of another type (PMS reuses keys after a library
    rebuild) adds nothing."""
    if found.type != item.kind:
        return item
    if item.kind == "episode":
        return replace(
            item,
            ids=item.ids.merged(found.ids),
            show_ids=item.show_ids.merged(found.show_ids),
            title=item.title or found.title,
            show_title=item.show_title or found.show_title,
            season=item.season if item.season is not None else found.season,
            number=item.number if item.number is not None else found.number,
            absolute=item.absolute if item.absolute is not None else found.absolute,
            show_source_key=item.show_source_key or found.grandparent_rating_key,
        )
    return replace(
        item,
        ids=item.ids.merged(found.ids),
        title=item.title or found.title,
        year=item.year or found.year,
    )


def merge_plex_show(item: MediaRef, show: PlexItem) -> MediaRef:
    """An episode with its show's ids (read from the show's own Plex item) filled in."""
    if show.type != "show":
        return item
    return replace(
        item,
        show_ids=item.show_ids.merged(show.ids),
        show_title=item.show_title or show.title,
    )


class PlexEnricher:
    """Fills in the ids Plex webhooks leave out by reading the items from the Plex server.

    A new-agent movie from an older PMS has only its plex:// guid; a new-agent episode has
    only the episode's ids and a plex://show guid. The item (by ratingKey) and, for episodes
    still without show ids, the show (by grandparentRatingKey) are read once and cached.
    A failing server leaves the item as it is (nothing cached): the caller's retry asks again.
    """

    namespace = "plex-metadata"

    def __init__(
        self, client_metadata: PlexMetadata, cache: IdCache, clock: Callable[[], float]
    ) -> None:
        self.metadata = client_metadata
        self.cache = cache
        self.clock = clock

    async def enrich(self, item: MediaRef) -> MediaRef:
        if not needs_plex_ids(item):
            return item
        try:
            if item.source_key:
                found = await self._read(item.source_key)
                if found is not None:
                    item = merge_plex_item(item, found)
            show_key = show_key_to_read(item)
            if show_key:
                show = await self._read(show_key)
                if show is not None:
                    item = merge_plex_show(item, show)
        except ServiceError as exc:
            log.warning(
                "plex lookup failed",
                extra={"item": item.describe(), "problem": exc.message},
            )
        return item

    async def _read(self, rating_key: str) -> PlexItem | None:
        hit, cached = self.cache.cache_get(self.namespace, rating_key, self.clock())
        if hit and cached is None:
            return None
        if hit and isinstance(cached, dict):
            try:
                return PlexItem.from_dict(cached)
            except TypeError:
                pass  # written by another version: read the item again
        found = await self.metadata(rating_key)
        ttl = PLEX_FOUND_TTL if found is not None else PLEX_MISSING_TTL
        value = None if found is None else found.to_dict()
        self.cache.cache_put(self.namespace, rating_key, value, self.clock(), ttl)
        return found
