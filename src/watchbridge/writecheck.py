"""Whether the database takes writes, asked by a command in a process of its own (`watchbridge
status`), which cannot see the running service's `storage_fault`.

Two tries, neither leaving anything behind: the write lock and a row written, then rolled back
(a lock held past storage.busy_timeout, a read-only file or folder), and a small unnamed file
written to the database's folder, synced and dropped (a full disk: SQLite meets that only when
it commits, which a look must not do).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from watchbridge.errors import StoreError
from watchbridge.storagefault import StorageFault, fault_of
from watchbridge.store import Store

# Room a write needs at the least: a group of webhooks' pages in the write-ahead log.
ROOM_NEEDED = 64 * 1024  # bytes


def write_fault(store: Store) -> StorageFault | None:
    """What keeps `store`'s database from taking writes now, or None when it takes them (or
    fails for a reason that is not the disk's, which this cannot name)."""
    database = str(store.path)
    try:
        store.try_write()
    except StoreError as exc:
        return fault_of(exc.__cause__ or exc, database)
    try:
        _write_beside(Path(database))
    except OSError as exc:
        return fault_of(exc, database)
    return None


def _write_beside(database: Path) -> None:
    """Write ROOM_NEEDED bytes to the disk where the database really is (through a symlink) and
    sync them. The file has no name where the filesystem allows (O_TMPFILE), else it is
    unlinked as soon as made: closing it frees its space."""
    with tempfile.TemporaryFile(dir=database.resolve().parent, buffering=0) as probe:
        left = memoryview(bytes(ROOM_NEEDED))
        while left:  # a nearly full disk takes part of a write before refusing the rest
            left = left[os.write(probe.fileno(), left) :]
        os.fsync(probe.fileno())
