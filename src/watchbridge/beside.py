"""Another watchbridge service writing to this database, seen in the notes of being alive.

The lock file (servelock.py) stops a second `serve` whose kernel sees the first one's lock: on
one machine, in any container. It cannot stop one whose kernel never sees it: a service on
another machine sharing the database over a network share that does not carry file locks, or
a development build from before the lock running beside a newer one (0.1.0 writes no note of
being alive, so nothing here can find it). Every service notes itself
alive in the database every ALIVE_EVERY (downtime.py); each note now says whose it is, and
the note a service finds in place of its own last one is another's: it logs that, and the
`storage` alert tells the user, until a note finds its own last one in place again.

Found from what is written in the database, never by comparing clocks: two machines' clocks
may disagree by minutes, a note's value is only compared with the one this process wrote.
Pure logic; the store reads and writes the notes (`Store.note_alive`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchbridge.servelock import Holder, described, holder_of

BESIDE_KEY = "another_service"  # the `storage` alert's key for this condition
TITLE = "another watchbridge service is writing to this database"
OVER = "no other watchbridge service writes to this database any more"


@dataclass(frozen=True)
class Noted:
    """A note of being alive as the database holds it: its time (`alive_at`) and the JSON
    beside it (`alive_clock`: uptime, boot and, since this release, whose note it is)."""

    wall: float | None
    clock: str | None


@dataclass(frozen=True)
class Mine:
    """This service, as its notes name it: `instance` tells two services on one host apart
    (in containers both may be pid 1)."""

    instance: str
    pid: int
    host: str
    started: float

    def fields(self) -> dict[str, Any]:
        """What a note of this service adds to `alive_clock`."""
        return {
            "instance": self.instance,
            "pid": self.pid,
            "host": self.host,
            "started": self.started,
        }


def other_writer(mine: Mine, last: float | None, replaced: Noted) -> Holder | None:
    """Who wrote the note this service's note replaced, when that was not this service's own
    last note (`last`: its time; None before the first, when any earlier one is expected). A
    note not naming its writer (an older release's) is another service all the same."""
    if last is None or replaced.wall is None:
        return None
    clock = _decoded(replaced.clock)
    if replaced.wall == last and clock.get("instance") == mine.instance:
        return None
    if clock.get("wall") != replaced.wall:  # the JSON is of another note (an older release's)
        return Holder()
    return holder_of(clock)


def message(database: Path, other: Holder) -> str:
    """What the log says, on one line: who, why the lock did not stop it, what to do."""
    who = _who(other)
    return (
        f"storage.path {database}: another watchbridge service is writing to this "
        f"database{who}. Its lock file could not keep it out: it runs on another machine "
        "sharing the database over a network share that does not carry file locks, or it is "
        "an earlier build from before the lock. Both deliver the queue, run the links and "
        "send alerts; stop one of them, or give it a database of its own (storage.path), "
        "and keep the database on a local disk"
    )


def alert_text(database: Path, other: Holder) -> str:
    """What the `storage` alert says: what to do and what it means first (a phone's lines),
    then who the other is and why the lock did not stop it."""
    return (
        f"Stop one of the two watchbridge services writing to {database}, or give one a "
        "database of its own (storage.path). Until then both send your plays and ratings and "
        "run the syncs, and a play may be sent twice.\n\n"
        f"The other one{_who(other)} got past the lock file: it runs on another machine "
        "sharing the database over a network share that does not carry file locks, or it is "
        "an earlier build from before the lock. Keep the database on a local disk of the "
        "machine that runs watchbridge."
    )


def _who(other: Holder) -> str:
    return described(other) or " (an older release, which does not say who it is)"


def _decoded(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text or "null")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
