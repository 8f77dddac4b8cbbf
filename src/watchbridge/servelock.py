"""One `watchbridge serve` per database: an OS lock on a file beside it, held while it runs.

Two services on one database would both deliver the queue (each taking back the other's
claimed rows) and both run the scheduled links: plays sent twice, alerts told twice. The lock
is `flock` on `<database>.lock`, so the kernel lets it go whenever the process ends, however
it ends (kill -9, a power cut, a container restarted with the same pid): a restart never finds
a stale lock. The file itself stays: removing it on exit would let a starting service lock a
file that is no longer there. `serve` takes it, and `rename-profile` for the moment it moves a
profile's state (a service running meanwhile would go on under the name it knows); of the
commands meant to run beside the service (status, sync, auth, ...) only `sync` looks at it, for
a moment (`serving`): with no service running, its config is the one that says what the queue
may still send.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from watchbridge.errors import StoreError, WatchbridgeError
from watchbridge.privatefiles import in_the_way, make_private_folder, not_writable, owner_of
from watchbridge.zone import local_time

LOCK_SUFFIX = ".lock"
_RECORD_BYTES = 4096
# A starting service finding the lock taken tries again this long: `serving` holds it for a
# moment only, and must never turn a service away.
_CONTENDED_FOR = 0.5


class AlreadyServing(WatchbridgeError):
    """Another `watchbridge serve` holds the database: restarting cannot change that, so it
    exits as a config error does (the systemd unit does not loop on it)."""

    exit_code = 2

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as its record in the lock file says (each part may be unknown)."""

    pid: int | None = None
    host: str = ""
    started: float | None = None


def lock_path(database: Path) -> Path:
    """The lock file: beside the real database file, so that a symlinked path and its target
    (or two containers' mounts of one folder) share one lock."""
    real = database.expanduser().resolve()
    return real.with_name(real.name + LOCK_SUFFIX)


def record(holder: Holder) -> str:
    """What the holder writes into the lock file for the next one to name it."""
    return json.dumps({"pid": holder.pid, "host": holder.host, "started": holder.started}) + "\n"


def parse_record(text: str) -> Holder:
    """The holder a lock file names; anything unreadable (cut short, edited) is left unknown."""
    try:
        data = json.loads(text)
    except ValueError:
        return Holder()
    return holder_of(data) if isinstance(data, dict) else Holder()


def holder_of(data: Mapping[str, Any]) -> Holder:
    """The holder the `pid`, `host` and `started` of a record name; what is not of its type
    (an edited file, another release's note) is left unknown."""
    pid, host, started = data.get("pid"), data.get("host"), data.get("started")
    return Holder(
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        host="".join(c for c in host if c.isprintable())[:64] if isinstance(host, str) else "",
        started=float(started)
        if isinstance(started, int | float) and not isinstance(started, bool)
        else None,
    )


def described(holder: Holder) -> str:
    """The holder as a refusal names it: " (pid N on host H, started ...)", or "" unknown."""
    where = " ".join(
        part
        for part in (
            f"pid {holder.pid}" if holder.pid is not None else "",
            f"on host {holder.host}" if holder.host else "",
        )
        if part
    )
    when = (
        f"started {local_time(holder.started, seconds=True)}" if holder.started is not None else ""
    )
    parts = ", ".join(part for part in (where, when) if part)
    return f" ({parts})" if parts else ""


def refusal(database: Path, lock: Path, holder: Holder) -> str:
    """The one line a second `serve` stops with."""
    who = described(holder)
    return (
        f"storage.path {database}: another watchbridge service is running on this "
        f"database{who} and holds its lock file {lock}: stop that one first (two would send "
        "plays twice), or give this one a database of its own (storage.path)"
    )


# The lock files this process holds: its own lock is no other service's (`held_elsewhere`).
_HELD_HERE: set[Path] = set()


class ServeLock:
    """The held lock; released by `release`, or by the kernel when the process ends."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        _HELD_HERE.add(path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor lets the lock go
            self._fd = None
            _HELD_HERE.discard(self.path)

    def __enter__(self) -> ServeLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def hold(database: Path, now: float) -> ServeLock:
    """Take the database's lock for this process, before anything opens the database; raise
    AlreadyServing naming the holder while another service has it, StoreError when the lock
    file cannot be made or locked."""
    if database.is_dir():
        raise StoreError(
            f"storage.path: {database} is a directory; name the database file in it, "
            f"e.g. {database / 'watchbridge.db'}"
        )
    lock = lock_path(database)
    fd = _open(database, lock)
    try:
        _lock(fd, fcntl.LOCK_EX, time.monotonic() + _CONTENDED_FOR)
    except OSError as exc:
        holder = _read_holder(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
        os.close(fd)
        if holder is not None:
            raise AlreadyServing(refusal(database, lock, holder), holder) from None
        raise StoreError(
            f"storage.path {database}: cannot lock {lock} ({exc.strerror}): the file system "
            "holding the database does not support file locks; keep it on a local disk"
        ) from None
    with contextlib.suppress(OSError):  # another user's file, opened to read
        os.fchmod(fd, 0o600)
    # Best effort: the record only names this process to a second start.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, record(Holder(os.getpid(), socket.gethostname(), now)).encode(), 0)
    return ServeLock(lock, fd)


@dataclass(frozen=True)
class ServiceSeen:
    """What `serving` saw of the database's lock: `running` True (a service holds it), False
    (none does), or None when it could not tell, `doubt` saying why (the lock file named) and
    what to do."""

    running: bool | None
    doubt: str = ""


def serving(database: Path) -> ServiceSeen:
    """Whether a `watchbridge serve` holds the database's lock now. Looked at with a shared
    lock taken and let go at once (`hold` waits that moment out). A lock file that cannot be
    opened (another user's, mode 0600) or locked leaves it unsure: never taken for "alone"."""
    lock = lock_path(database)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    # Every start makes it: none there, no service ever ran on this database.
    except (FileNotFoundError, NotADirectoryError):
        return ServiceSeen(running=False)
    except OSError as exc:
        return ServiceSeen(
            running=None,
            doubt=f"cannot open {lock} ({exc.strerror}); run sync as the service's user",
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return ServiceSeen(running=True)
        return ServiceSeen(
            running=None,
            doubt=f"cannot lock {lock} ({exc.strerror}); keep the database on a local disk",
        )
    finally:
        os.close(fd)  # lets the shared lock go, if taken
    return ServiceSeen(running=False)


def held_elsewhere(database: Path) -> Holder | None:
    """The service of another process that holds the database's lock now, as its record names
    it; None when none does (or this process holds it, or it cannot be told)."""
    lock = lock_path(database)
    if lock in _HELD_HERE or serving(database).running is not True:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return Holder()
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _lock(fd: int, how: int, until: float) -> None:
    """flock without waiting, tried again until `until` while another holds it."""
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= until:
                raise
        time.sleep(0.05)


def _open(database: Path, lock: Path) -> int:
    """The lock file's descriptor (made with mode 0600; not passed on to child processes).
    One another user owns is opened to read: flock needs no more."""
    try:
        make_private_folder(lock.parent)
        try:
            return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except PermissionError as denied:
            try:
                return os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise denied from None  # not there to read either: the folder is the matter
    except OSError as exc:
        said = f"storage.path {database}: cannot open its lock file {lock} ({exc.strerror})"
        if exc.errno in (errno.EACCES, errno.EPERM):
            blocked = in_the_way(lock)
            mend = not_writable(blocked, owner_of(blocked), os.getuid(), os.getgid())
            raise StoreError(f"{said}: {mend}") from None
        raise StoreError(
            f"{said}: check that the folder exists and that the user watchbridge runs as can "
            "write there"
        ) from None


def _read_holder(fd: int) -> Holder:
    try:
        text = os.pread(fd, _RECORD_BYTES, 0).decode("utf-8", errors="replace")
    except OSError:
        return Holder()
    return parse_record(text)
