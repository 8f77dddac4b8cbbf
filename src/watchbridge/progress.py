"""What `watchbridge sync` shows while a run works and once it is done.

The runner reports each reader step (the cheap check, the read, the closer look) to a
`SyncProgress`; `ObservedReader` does that for any `SideReader`, so readers know nothing of it.
`RunStats` keeps requests and time per profile and side; `summary_rows` joins them with the run's
plans into one row per profile and side (pure), shown as a rich table on a terminal and as plain
`key=value` lines elsewhere (cron, logs, tests).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from watchbridge.readers import OnTheirWay, SideRead, SideReader, Tally
from watchbridge.reconcile import Action, Side
from watchbridge.store import RunProgress
from watchbridge.zone import local_time

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from watchbridge.sync import ProfilePlan

STEP_WORDS = {
    "check": "checking",
    "account": "asking whose account is",
    "read": "reading",
    "refine": "comparing",
}


class SyncProgress(Protocol):
    """Told about every reader step of a run, in order (steps do not overlap)."""

    def started(self, profile: str, reader: SideReader, step: str) -> None:
        """`reader` starts `step` ("check", "account", "read" or "refine") for `profile`."""
        ...

    def finished(
        self, profile: str, reader: SideReader, step: str, requests: int, seconds: float
    ) -> None:
        """`step` is done after `requests` API requests and `seconds`."""
        ...


class ObservedReader:
    """A `SideReader` that reports its steps to a `SyncProgress`."""

    def __init__(
        self,
        reader: SideReader,
        progress: SyncProgress,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.progress = progress
        self.clock = clock
        self.service = reader.service

    @property
    def requests_sent(self) -> int:
        return self.reader.requests_sent

    async def _step(self, profile: str, step: str, work: Any) -> Any:
        before, start = self.reader.requests_sent, self.clock()
        self.progress.started(profile, self.reader, step)
        try:
            return await work
        finally:
            self.progress.finished(
                profile, self.reader, step, self.reader.requests_sent - before, self.clock() - start
            )

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        result: bool = await self._step(profile, "check", self.reader.unchanged(profile, cursors))
        return result

    async def account(self, profile: str, reading: bool) -> str | None:
        work = self.reader.account(profile, reading)
        result: str | None = await self._step(profile, "account", work)
        return result

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        work = self.reader.read(profile, cursors, baseline, full)
        result: SideRead = await self._step(profile, "read", work)
        return result

    async def refine(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None = None
    ) -> Side:
        work = self.reader.refine(profile, own, other, waiting)
        result: Side = await self._step(profile, "refine", work)
        return result

    async def aclose(self) -> None:
        await self.reader.aclose()


class Both:
    """Tells two `SyncProgress`es (the second may be None: then it is the first alone)."""

    def __init__(self, first: SyncProgress, second: SyncProgress | None) -> None:
        self.told = [first] if second is None else [first, second]

    def started(self, profile: str, reader: SideReader, step: str) -> None:
        for one in self.told:
            one.started(profile, reader, step)

    def finished(
        self, profile: str, reader: SideReader, step: str, requests: int, seconds: float
    ) -> None:
        for one in self.told:
            one.finished(profile, reader, step, requests, seconds)


class RunRecorder:
    """Where a run has got (its step, its requests so far, done/total where the reader counts
    them), for the run's heartbeat to record in the store: `watchbridge status`, the status
    page and `/api/status` show it while the run goes. Asked only at each beat, so a run
    writes no more than its heartbeat does."""

    def __init__(self) -> None:
        self.step = "starting"
        self.profile: str | None = None
        self._done_requests = 0
        self._reader: SideReader | None = None
        self._reader_start = 0
        self._tally: Tally | None = None  # the run's own (writing), when no reader's
        self._before: object = None  # the reader's tally as its step began: an earlier step's

    def started(self, profile: str, reader: SideReader, step: str) -> None:
        self.profile, self.step = profile, f"{STEP_WORDS.get(step, step)} {reader.service}"
        self._reader, self._reader_start, self._tally = reader, reader.requests_sent, None
        self._before = getattr(reader, "tally", None)

    def finished(
        self, profile: str, reader: SideReader, step: str, requests: int, seconds: float
    ) -> None:
        self._done_requests += requests
        self._reader = None

    def doing(self, step: str, profile: str | None = None, tally: Tally | None = None) -> None:
        """The run's own step between reader steps ("writing"), counted by `tally`."""
        self.step, self.profile, self._reader, self._tally = step, profile, None, tally

    def requests(self) -> int:
        live = self._reader.requests_sent - self._reader_start if self._reader else 0
        return self._done_requests + live

    def snapshot(self, now: float) -> RunProgress:
        tally = self._tally
        if self._reader is not None:
            counted = getattr(self._reader, "tally", None)  # a reader that counts its step
            fresh = isinstance(counted, Tally) and counted is not self._before
            tally = counted if fresh and isinstance(counted, Tally) else None
        return RunProgress(
            step=self.step,
            profile=self.profile,
            requests=self.requests(),
            at=now,
            done=tally.done if tally else None,
            total=tally.total if tally else None,
            unit=tally.unit if tally else None,
        )


def observed(readers: list[SideReader], progress: SyncProgress | None) -> list[SideReader]:
    """`readers`, each reporting to `progress` (unchanged when there is none)."""
    if progress is None:
        return readers
    return [ObservedReader(reader, progress) for reader in readers]


# --------------------------------------------------------------------------- statistics


@dataclass
class SideStats:
    requests: int = 0
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)


class RunStats:
    """Requests and time per (profile, service), from the steps reported."""

    def __init__(self) -> None:
        self.sides: dict[tuple[str, str], SideStats] = {}

    def started(self, profile: str, reader: SideReader, step: str) -> None:
        self.sides.setdefault((profile, reader.service), SideStats())

    def finished(
        self, profile: str, reader: SideReader, step: str, requests: int, seconds: float
    ) -> None:
        stats = self.sides.setdefault((profile, reader.service), SideStats())
        stats.requests += requests
        stats.seconds += seconds
        stats.steps.append(step)


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class SummaryRow:
    """One profile and side of a run: what was read, planned and queued, and what it cost."""

    profile: str
    side: str
    plays: int | None  # None: not read (nothing changed since the last run)
    adds: int
    removals: int
    ratings: int  # rating changes (set or removed)
    queued: int
    held: int  # removals the mass-removal guard held back
    skipped: int  # planned writes no outbox row can carry (an item key no service can name)
    requests: int
    seconds: float

    def plain(self) -> str:
        plays = "unchanged" if self.plays is None else str(self.plays)
        return (
            f"summary {self.profile} {self.side}: plays={plays} adds={self.adds} "
            f"removals={self.removals} ratings={self.ratings} queued={self.queued} "
            f"held={self.held} skipped={self.skipped} requests={self.requests} "
            f"seconds={self.seconds:.2f}"
        )


def summary_rows(
    plans: Iterable[ProfilePlan],
    services: Iterable[str],
    stats: RunStats,
    writable: Callable[[str, tuple[Action, ...]], int],
    applied: bool,
    confirm_removals: bool,
) -> list[SummaryRow]:
    """One row per profile and side. `plans` are the run's `ProfilePlan`s; `writable(profile,
    actions)` counts the outbox rows those actions make; `applied` is False for a dry run."""
    rows = []
    sides = list(services)
    for result in plans:
        actions: tuple[Action, ...] = result.plan.actions
        kept = {id(a) for a in result.plan.held_back(confirm_removals)}
        for side in sides:
            mine = tuple(a for a in actions if a.target == side)
            held = [a for a in mine if id(a) in kept]
            go = tuple(a for a in mine if id(a) not in kept)
            rows_made = writable(result.profile, go)
            cost = stats.sides.get((result.profile, side), SideStats())
            rows.append(
                SummaryRow(
                    profile=result.profile,
                    side=side,
                    plays=None if result.unchanged else result.sizes.get(side, 0),
                    adds=sum(a.kind == "add_play" for a in mine),
                    removals=sum(a.kind == "remove_play" for a in mine),
                    ratings=sum(a.kind in ("set_rating", "remove_rating") for a in mine),
                    queued=rows_made if applied else 0,
                    held=len(held) + result.held_counts.get(side, 0),
                    skipped=len(go) - rows_made,
                    requests=cost.requests,
                    seconds=cost.seconds,
                )
            )
    return rows


COLUMNS = (
    "profile",
    "side",
    "plays",
    "adds",
    "removals",
    "ratings",
    "queued",
    "held",
    "skipped",
    "requests",
    "time",
)
RARE = ("held", "skipped")  # shown only when a row has some, to fit 80 columns


def table_cells(row: SummaryRow) -> dict[str, str]:
    return {
        "profile": row.profile,
        "side": row.side,
        "plays": "-" if row.plays is None else str(row.plays),
        "adds": str(row.adds),
        "removals": str(row.removals),
        "ratings": str(row.ratings),
        "queued": str(row.queued),
        "held": str(row.held),
        "skipped": str(row.skipped),
        "requests": str(row.requests),
        "time": f"{row.seconds:.1f}s",
    }


def render_table(console: Console, title: str, rows: list[SummaryRow]) -> None:
    """The run's summary as a table; `-` plays: nothing changed there, so nothing was read."""
    from rich.table import Table

    cells = [table_cells(row) for row in rows]
    shown = [c for c in COLUMNS if c not in RARE or any(cell[c] != "0" for cell in cells)]
    unread = any(row.plays is None for row in rows)
    caption = "-: nothing changed since the last run" if unread else None
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.box, table.padding, table.pad_edge = None, (0, 1), False
    for name in shown:
        table.add_column(name, justify="left" if name in ("profile", "side") else "right")
    for row, cell in zip(rows, cells, strict=True):
        table.add_row(*(cell[c] for c in shown), style="dim" if row.plays is None else None)
    console.print(table)


# --------------------------------------------------------------------------- live display


class LiveProgress(RunStats):
    """A rich progress display of one run: a bar over the link's profiles, the current step
    and the requests made so far (read live from the reader while a long read pages)."""

    def __init__(self, console: Console, link: str, profiles: list[str]) -> None:
        super().__init__()
        self.console = console
        self.link = link
        self.profiles = profiles
        self._done_requests = 0
        self._reader: SideReader | None = None
        self._reader_start = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def requests_so_far(self) -> int:
        live = self._reader.requests_sent - self._reader_start if self._reader else 0
        return self._done_requests + live

    def __enter__(self) -> LiveProgress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        outer = self

        class Requests(TextColumn):
            def render(self, task: Any) -> Any:
                from rich.text import Text

                return Text(f"{outer.requests_so_far()} requests")

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            Requests(""),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.__enter__()
        self._task = self._progress.add_task(f"{self.link}: starting", total=len(self.profiles))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)

    def started(self, profile: str, reader: SideReader, step: str) -> None:
        super().started(profile, reader, step)
        self._reader, self._reader_start = reader, reader.requests_sent
        if self._progress is not None and self._task is not None:
            done = self.profiles.index(profile) if profile in self.profiles else 0
            word = STEP_WORDS.get(step, step)
            self._progress.update(
                self._task,
                completed=done,
                description=f"{self.link} · {profile}: {word} {reader.service}",
                refresh=True,  # a few steps per run: show each, however short
            )

    def finished(
        self, profile: str, reader: SideReader, step: str, requests: int, seconds: float
    ) -> None:
        super().finished(profile, reader, step, requests, seconds)
        self._done_requests += requests
        self._reader = None


class DeliveryBar:
    """A rich bar over the rows a run queued while the command delivers them."""

    def __init__(self, console: Console, total: int) -> None:
        from rich.progress import Progress

        self.progress = Progress(console=console, transient=True)
        self.task = self.progress.add_task("delivering", total=total)

    def __enter__(self) -> DeliveryBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, delivered: int) -> None:
        self.progress.update(self.task, completed=delivered, refresh=True)


# --------------------------------------------------------------------------- status


# Plex's history cursor: the rows read and the newest's id ("12:345"), or, from a server that
# ignores its account filter, everyone's rows ("all:12:345"; "all:" alone: read it again).
_PLEX_HISTORY = re.compile(r"(all:)?(\d+):\S*")


# The parts of a link's cursors that tell how far a side was read, as a date or a count
# (Trakt's activity stamps and the episodes it keeps, Plex's history rows, Serializd's diary
# entries, AniList's list entries and their newest change); the others are the readers' own
# bookkeeping (what a run wrote, the rows and marks it saw), which nobody can read.
_READ_UP_TO = frozenset(
    {"all", "watched", "rated", "history_at", "recent_episodes", "history", "diary_ids"}
    | {"updated_at", "entries"}
)


def _short_value(key: str, value: str) -> str | None:
    """A cursor part as a date or a count (None: neither, or no date yet)."""
    if key == "history" and value == "all:":
        return "to read again"
    rows = _PLEX_HISTORY.fullmatch(value) if key == "history" else None
    if rows is not None:
        return _counted(int(rows[2]), "rows") + (" of every account" if rows[1] else "")
    if value.startswith("["):
        try:
            return _counted(len(json.loads(value)), "ids")
        except ValueError:
            return None
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        if key == "entries" and isinstance(parsed, dict):  # AniList's entries, by media id
            return _counted(len(parsed), "entries", "entry")
        # A versioned list ({"v": 1, "episodes": [...]}): counted.
        listed = [(k, v) for k, v in parsed.items() if isinstance(v, list)]
        return _counted(len(listed[0][1]), listed[0][0]) if len(listed) == 1 else None
    stamps = [v for v in value.split(",") if v]
    if key.endswith("_at"):
        try:
            at = float(value)
        except ValueError:
            return None
        return local_time(at) if at > 0 else None  # 0: nothing read yet (an empty list)
    if stamps and all(_looks_iso(v) for v in stamps):  # the services' own: UTC (Z) all
        latest = max(stamps)
        try:
            when = datetime.fromisoformat(latest.replace("Z", "+00:00"))
        except ValueError:
            return latest[:16].replace("T", " ") + " UTC"
        return local_time((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
    return None


def _counted(count: int, plural: str, one: str | None = None) -> str:
    return f"{count} {(one or plural.removesuffix('s')) if count == 1 else plural}"


def _looks_iso(value: str) -> bool:
    return len(value) >= 16 and value[4] == "-" and value[10] == "T"


def short_cursor(value: str, width: int = 120) -> str:
    """How far a link's cursor says a side was read, for `watchbridge status`: its parts a
    user can read (`_READ_UP_TO`) as `key value` pairs, id lists counted and timestamps to
    the minute on the household's clock (as the run times beside them), clipped to `width`;
    "" when it holds none."""
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return ""
    shown = [
        f"{key} {said}"
        for key, part in sorted(parsed.items())
        if key in _READ_UP_TO and (said := _short_value(key, str(part))) is not None
    ]
    text = ", ".join(shown)
    return text if len(text) <= width else text[: width - 1] + "…"
