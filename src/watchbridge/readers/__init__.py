"""How a service takes part in a link: a `SideReader` turns its answers into a `Side`.

The engine (`watchbridge.sync`) first lets a reader that cannot read yet say so (`Waiting`:
nothing is read then), asks every reader whose account it reads (`account`: a changed one
starts the link over, `watchbridge.accounts`), then the cheap question (`unchanged`, at most
one request), reads only when something moved (`read`, a delta merged onto the last run's
baseline unless a full read is due), lets each reader look closer where the two sides
disagree (`refine`), then plans. Readers hold their clients; the engine saves the cursors a
read returns once its plan is applied.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from watchbridge.config import Config, Link
from watchbridge.metrics import Metrics
from watchbridge.reconcile import Side
from watchbridge.store import Store

Clock = Callable[[], float]
# (target, item key) -> the times of the plays webhooks queued for that target that have not
# landed: its read does not show them, and the link adds none of them again (`sync._waiting`,
# `reconcile.without_waiting`).
OnTheirWay = Mapping[tuple[str, str], Sequence[float]]
TITLES_NAMED = 5  # titles a warning names; it counts the others


def some_titles(titles: Sequence[str], most: int = TITLES_NAMED) -> str:
    """The first `most` of `titles` and how many others ("A, B and 3 more"). Pure."""
    shown = ", ".join(titles[:most])
    return f"{shown} and {len(titles) - most} more" if len(titles) > most else shown


@dataclass(frozen=True)
class SideRead:
    side: Side
    cursors: dict[str, str]  # saved by the engine once the plan is applied
    # Raw library listings by kind (movie, show, episode) when the link's collection run
    # needs them (Plex): read once for both.
    listings: Mapping[str, Sequence[Mapping[str, object]]] | None = None
    # A media server's own key for a movie or episode (Plex ratingKey) -> the key this side
    # reads it under: webhook plays still waiting to be delivered carry it as `source_key`,
    # with the server's numbers (an episode renumbered as the other side numbers it) and the
    # ids the server gave the item then (a legacy agent's TheTVDB or IMDb id, before its
    # library was switched to Plex's current agents). Also each item's plex:// guid -> its
    # key: such a play may name the episode by nothing else.
    aliases: Mapping[str, str] = field(default_factory=dict)
    # A delta read that saw the side change beyond where it looks and cannot tell where
    # (Trakt's history moved, and its play counts do not say which show or movie: one gone
    # from them, too many moved, or none): the engine reads the side again in full in the
    # same run.
    missed: bool = False


@dataclass
class Tally:
    """How far a reader's long step has got: `done` of `total` `unit`s. A reader that has
    one sets it as `tally` (a run's status shows it; see `progress.RunRecorder`)."""

    unit: str  # what is counted ("shows")
    total: int
    done: int = 0


class SideReader(Protocol):
    service: str

    @property
    def requests_sent(self) -> int: ...

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        """The cheap "anything changed since `cursors`?" check: at most one request."""
        ...

    async def account(self, profile: str, reading: bool) -> str | None:
        """Whose data this side is for `profile` (`accounts.py`): an identity, or None when
        it is not known (or noted elsewhere). Asked before the cheap check, then again when
        a read follows (`reading`); a reader whose answer costs a request answers only then,
        so that a run with nothing new stays at one request."""
        ...

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        """The side's current state: a delta merged onto `baseline` unless `full`."""
        ...

    async def refine(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None = None
    ) -> Side:
        """Detail read only where the two sides disagree (most readers return `own`);
        `waiting`: the webhook plays on their way (the link copies none of them)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Noting(Protocol):
    """A reader whose reads also write what the delivery or later reads go by (Serializd: an
    entry of ours a read lists is no first miss any more, `forget_first_misses`; Plex: the
    account its names found, the maps its deliverer reads). A dry run writes nothing: the
    engine sets `dry_run` on such a reader before it reads, and it writes none of it (a cache
    that only saves requests may still be written)."""

    dry_run: bool


@runtime_checkable
class Linked(Protocol):
    """A reader that tells the writes of the link reading from other links' (Trakt: another
    link's plays, dated maybe years back, are news to read; its own, and webhooks', are
    not): the engine sets `link_name` to the link's name before it reads."""

    link_name: str | None


@runtime_checkable
class Waiting(Protocol):
    """A reader that may have to wait for something before any profile is read (AniList:
    the anime mapping lists): `ready` raises a WatchbridgeError saying what, and the run
    reads, plans and saves nothing (a side read without it would be read wrong)."""

    async def ready(self) -> None: ...


ReaderFactory = Callable[[Config, Store, Link, list[str], Clock, Metrics | None], SideReader]


# service -> module exposing `make_reader: ReaderFactory` (imported only when a link uses it)
READERS: dict[str, str] = {
    "trakt": "watchbridge.readers.trakt",
    "serializd": "watchbridge.readers.serializd",
    "plex": "watchbridge.readers.plex",
    "anilist": "watchbridge.readers.anilist",
}


def reader_for(
    service: str,
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Clock,
    metrics: Metrics | None = None,
) -> SideReader | None:
    """The reader of `service` for `link`, or None when the service cannot take part yet."""
    module = READERS.get(service)
    if module is None:
        return None
    factory: ReaderFactory = importlib.import_module(module).make_reader
    return factory(config, store, link, profiles, clock, metrics)
