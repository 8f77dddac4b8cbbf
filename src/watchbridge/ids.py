"""Identity resolution: turn what a source gave us into ids a target can use, with a cache.

Pure rules decide which lookups to try; the lookup itself and the cache are injected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from watchbridge.model import Ids, MediaRef

FOUND_TTL = 30 * 86400.0
MISSING_TTL = 86400.0  # a fresh episode may be added on Trakt within a day

Search = Callable[[str, str, str], Awaitable[list[dict[str, Any]]]]


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
