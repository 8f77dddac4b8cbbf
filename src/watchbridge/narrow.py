"""One run of a link narrowed to some AniList entries (`watchbridge sync --anilist-id`,
`--anilist-status`). Pure.

The side that knows the entries (the AniList reader) turns a `Narrowing` into a predicate over
item keys; the engine keeps only those items on both sides (and in their baselines) before it
plans, so both directions are narrowed alike. A narrowed run moves no baseline or cursor: the
next full run still sees everything (see `watchbridge.sync.apply_plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from watchbridge.reconcile import Side

Keep = Callable[[str], bool]  # item key -> whether this run plans it

# AniList list statuses (`--anilist-status`, case-insensitive)
ANILIST_STATUSES: tuple[str, ...] = (
    "CURRENT",
    "PLANNING",
    "COMPLETED",
    "DROPPED",
    "PAUSED",
    "REPEATING",
)


@dataclass(frozen=True)
class Narrowing:
    """Which AniList entries a run is about: these media ids, and every entry in these list
    statuses (either may be empty; both empty narrows to nothing)."""

    anilist_ids: frozenset[int] = frozenset()
    statuses: frozenset[str] = frozenset()

    def describe(self) -> str:
        parts = [f"AniList {i}" for i in sorted(self.anilist_ids)]
        parts += [f"every {s} entry" for s in sorted(self.statuses)]
        return " and ".join(parts) or "nothing"


def narrowing(ids: tuple[int, ...] = (), statuses: tuple[str, ...] = ()) -> Narrowing | None:
    """The narrowing the options ask for; None when none was given (a normal run)."""
    if not ids and not statuses:
        return None
    return Narrowing(frozenset(ids), frozenset(s.upper() for s in statuses))


def no_movie(item: str) -> bool:
    """A `Keep` for a link one of whose services holds no movies."""
    return not item.startswith("movie:")


def narrow_side(side: Side, keep: Keep) -> Side:
    """`side` with only the plays and ratings of items `keep` says yes to."""
    return replace(
        side,
        plays=tuple(p for p in side.plays if keep(p.item)),
        ratings={k: r for k, r in side.ratings.items() if keep(k)},
    )


def narrow_sides(sides: Mapping[str, Side], keep: Keep) -> dict[str, Side]:
    return {service: narrow_side(side, keep) for service, side in sides.items()}


@runtime_checkable
class Narrower(Protocol):
    """A side reader that can tell which items a `Narrowing` covers (the AniList reader)."""

    service: str

    async def selection(self, profile: str, wanted: Narrowing, own: Side) -> Keep:
        """The predicate over item keys for `wanted`; `own` is what this side just read."""
        ...
