"""Why the database cannot be written, in words a user can act on: its disk full, the file or
its folder read-only, another program holding it locked, its pages damaged, the disk failing.

Pure: an exception and the database's path in, a `StorageFault` (or None: not the disk's
fault, such as our own SQL) out.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from typing import Literal

from watchbridge.zone import local_time

STORAGE_ALERT = "storage"  # the alert kind that tells of these faults (storagewatch)

FaultKind = Literal["full", "read_only", "locked", "damaged", "failing", "moved"]

# SQLite's own code for a database file no longer at its path (it checks only for a rollback
# journal; the store checks in WAL mode too: `DatabaseMoved`).
SQLITE_READONLY_DBMOVED = 8 | (4 << 8)

# SQLite's primary result codes (the low byte of an extended one).
_BY_SQLITE_CODE: dict[int, FaultKind] = {
    5: "locked",  # SQLITE_BUSY: another connection holds the write lock
    8: "read_only",  # SQLITE_READONLY
    10: "failing",  # SQLITE_IOERR
    11: "damaged",  # SQLITE_CORRUPT
    13: "full",  # SQLITE_FULL
    14: "failing",  # SQLITE_CANTOPEN: its -wal or -shm cannot be made
    26: "damaged",  # SQLITE_NOTADB
}
_BY_SQLITE_EXTENDED_CODE: dict[int, FaultKind] = {SQLITE_READONLY_DBMOVED: "moved"}
# Where SQLite gave no code (an error raised again by hand), its words.
_BY_SQLITE_WORDS: tuple[tuple[str, FaultKind], ...] = (
    ("database or disk is full", "full"),
    ("readonly database", "read_only"),
    ("database is locked", "locked"),
    ("database is busy", "locked"),
    ("disk image is malformed", "damaged"),
    ("file is not a database", "damaged"),
    ("disk i/o error", "failing"),
    ("unable to open database file", "failing"),
)
_BY_ERRNO: dict[int, FaultKind] = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EROFS: "read_only",
    errno.EACCES: "read_only",
    errno.EPERM: "read_only",
    errno.EIO: "failing",
}

_SHORT: dict[FaultKind, str] = {
    "full": "the disk is full",
    "read_only": "it is read-only",
    "locked": "another program holds it locked",
    "damaged": "the file is damaged",
    "failing": "the disk fails to write",
    "moved": "its file was deleted or moved",
}
# Said of a file deleted or moved: every write checks the files first (store.OpenFiles).
_REFUSED_MEANWHILE = (
    "Meanwhile the plays your media servers report are refused (webhooks answered 503, not "
    "recorded) and nothing is sent or synced."
)
# Said of every other kind but a damaged file. A full disk may still take a small write: the
# write-ahead log's file keeps its size and is written over from its start, so webhooks may be
# stored and deliveries sent until the log is full. Said as seen (`webhooks_meanwhile`) or,
# where nothing was seen, both ways.
_EITHER = (
    "webhooks are stored (answered 202) while their write works, and refused (answered 503, "
    "not recorded) once it fails"
)
WEBHOOKS_EITHER = f"Meanwhile {_EITHER}"
_STUCK = (
    "Deliveries and syncs stop at the first write that fails (a delivery sent whose result "
    "cannot be written stays being sent until a write works again); what was queued before "
    "waits and is not lost. Once a write works again watchbridge goes on by itself, no restart "
    "needed."
)


def webhooks_meanwhile(taken_at: float | None, refused_at: float | None) -> str:
    """What webhooks meet while the database fails writes, from the last one taken and the
    last one refused for the database (None: none seen)."""
    if refused_at is not None and (taken_at is None or refused_at >= taken_at):
        return (
            f"The last webhook, at {local_time(refused_at)}, was refused (answered 503, not "
            "recorded): webhooks are refused while their write fails, and stored again once it "
            "works"
        )
    if taken_at is not None:
        return f"The last webhook, at {local_time(taken_at)}, was stored (answered 202): {_EITHER}"
    return WEBHOOKS_EITHER


class DatabaseMoved(sqlite3.OperationalError):
    """The database file (or its -wal, -shm) at the store's path is no longer the one the
    store has open: deleted, moved or replaced while it runs. SQLite would go on writing to
    the file it has open, and all written there is gone at the next start."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} was deleted, moved or replaced since it was opened")
        self.sqlite_errorcode = SQLITE_READONLY_DBMOVED


@dataclass(frozen=True)
class StorageFault:
    """What keeps the database at `path` from taking writes, and what to do about it."""

    kind: FaultKind
    problem: str  # a sentence's body: "the disk holding /data/watchbridge.db is full"
    act: str  # what to do, in a short sentence a phone's first lines show
    details: str  # more of how and why, read after
    said: str  # the error as SQLite (or the system) worded it: "database or disk is full"

    @property
    def title(self) -> str:
        """The alert's title."""
        return f"watchbridge cannot write its database: {_SHORT[self.kind]}"

    @property
    def fix(self) -> str:
        """What to do, with its details (the log, /api/status)."""
        return f"{self.act} {self.details}"

    @property
    def message(self) -> str:
        """The alert's text where nothing was seen of webhooks (`message_with`)."""
        return self.message_with(WEBHOOKS_EITHER)

    def message_with(self, webhooks: str) -> str:
        """The alert's text: what is wrong and what to do first, in two short sentences; then
        the details, what happens meanwhile (`webhooks`: what webhooks meet, a sentence
        without its full stop), and the error as it was worded."""
        lead = f"{self.problem[0].upper()}{self.problem[1:]}. {self.act}"
        meanwhile = {"damaged": "", "moved": f" {_REFUSED_MEANWHILE}"}.get(
            self.kind, f" {webhooks}. {_STUCK}"
        )
        return f"{lead}\n\n{self.details}{meanwhile} (The error: {self.said}.)"


def fault_kind(exc: BaseException) -> FaultKind | None:
    """Which fault of the disk or the database file `exc` is, None for any other error."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
        return None  # our own SQL or use of the connection, not the disk
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code in _BY_SQLITE_EXTENDED_CODE:
            return _BY_SQLITE_EXTENDED_CODE[code]
        if isinstance(code, int) and (code & 0xFF) in _BY_SQLITE_CODE:
            return _BY_SQLITE_CODE[code & 0xFF]
        words = str(exc).lower()
        return next((kind for text, kind in _BY_SQLITE_WORDS if text in words), None)
    if isinstance(exc, OSError) and exc.errno is not None:
        return _BY_ERRNO.get(exc.errno)
    return None


def of_the_disk(exc: BaseException) -> bool:
    """Whether `exc` is SQLite failing a read or write of the database for the disk or the
    file (full, read-only, locked, damaged), not for our SQL: no bug of the code that met it,
    which lets it go up to its task's supervisor, which tells of it as the fault it is."""
    return isinstance(exc, sqlite3.Error) and fault_kind(exc) is not None


def fault_of(exc: BaseException, database: str) -> StorageFault | None:
    """`exc`, met writing the database at `database`, as a fault a user can mend; None when
    it is not one (a bug: the caller tells of it as such)."""
    kind = fault_kind(exc)
    if kind is None:
        return None
    said = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if kind == "full":
        return StorageFault(
            kind,
            f"the disk holding {database} is full",
            "Free some space on it, or move storage.path to a disk with room.",
            "Old backups, logs and media are what usually fill it.",
            said,
        )
    if kind == "read_only":
        return StorageFault(
            kind,
            f"the database {database} or its folder is read-only",
            "Make it writable for watchbridge again.",
            "If you mounted it read-only (a `:ro` volume), mount it read-write: watchbridge "
            "writes there. A disk remounts itself read-only after an I/O error: check it "
            "(`dmesg`, `mount`) and mount it read-write again; after a restore or a copy as "
            "root, give the folder and the files in it (the database, its -wal and -shm) to "
            "the user watchbridge runs as (`chown`, 1000 in the image, 99:100 on Unraid).",
            said,
        )
    if kind == "locked":
        return StorageFault(
            kind,
            f"another program holds the database {database} locked for longer than "
            f"storage.busy_timeout",
            "Close that program.",
            "It is often a sqlite3 shell or database browser left open in the middle of a "
            "write, a backup tool copying the file, or a long `watchbridge sync`.",
            said,
        )
    if kind == "damaged":
        return StorageFault(
            kind,
            f"the database {database} is damaged",
            "Stop watchbridge and move the file aside: the next start begins from the "
            "`watchbridge backup` copy beside it.",
            "Check the disk too: a failing SD card loses pages.",
            said,
        )
    if kind == "moved":
        return StorageFault(
            kind,
            f"the database {database} was deleted, moved or replaced while watchbridge runs",
            "If you moved it, put it back; if it was deleted or replaced, restart watchbridge.",
            "Put back (the database or its -wal or -shm file), watchbridge goes on by itself. "
            "Restarted, it starts from the `watchbridge backup` copy beside the database if "
            "there is one (else from a new database: sign in again then), and each delivery "
            "the copy has waiting is checked against its service before it is sent.",
            said,
        )
    return StorageFault(
        kind,
        f"the disk holding {database} fails to write",
        "Check that it is mounted, has space and is healthy (`dmesg`, `df -h`).",
        "A failing SD card or a disk unplugged does this.",
        said,
    )
