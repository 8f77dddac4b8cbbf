"""Folders watchbridge makes for files only their owner may read (the database, its lock)."""

from __future__ import annotations

import contextlib
from pathlib import Path

PRIVATE_FOLDER = 0o700


def make_private_folder(folder: Path) -> None:
    """Make `folder` and each of its parents that is missing with mode 0700, whatever the
    umask: under Unraid's 000 they came out 0777, and anyone on the machine could then delete
    the database and put a backup copy of theirs in its place, or put a -wal file of their
    own beside it for SQLite to write the sign-ins' tokens into. Folders already there are
    left as they are (a mounted /data is the user's)."""
    missing = []
    for level in (folder, *folder.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            level.mkdir(mode=PRIVATE_FOLDER)
