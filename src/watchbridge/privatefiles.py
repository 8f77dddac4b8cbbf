"""Folders watchbridge makes for files only their owner may read (the database, its lock),
and the words for one it cannot write."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Owner:
    """Who owns a file or folder, and its mode, as `ls -ln` shows them."""

    uid: int
    gid: int
    mode: int
    folder: bool


def owner_of(path: Path) -> Owner | None:
    """`path`'s owner and mode; None where it is not there (or cannot be looked at)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return Owner(info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode))


def in_the_way(target: Path) -> Path:
    """What keeps this user from writing `target`: the file itself where it is there in a
    folder this user can write, else its folder, or the first folder on the way that is
    missing (where making it is what failed)."""
    if os.path.exists(target) and os.access(target.parent, os.W_OK):
        return target
    folder = target.parent
    while not os.path.exists(folder.parent) and folder.parent != folder:
        folder = folder.parent
    return folder


def not_writable(path: Path, owner: Owner | None, uid: int, gid: int, where: str = "") -> str:
    """The words for `path` (from `in_the_way`, `owner` its `owner_of`) that the user
    watchbridge runs as, `uid` and `gid`, cannot write, ending with the command that mends it
    (`where` said after it: where to run it)."""
    user = f"UID {uid} GID {gid}, the user watchbridge runs as"
    if owner is None:
        command = f"mkdir -p {path} && chown -R {uid}:{gid} {path}"
        return (
            f"the folder {path} is missing and cannot be made by {user}: make it and give it "
            f"to that user ({command}{where})"
        )
    kind, recursive = ("folder", "-R ") if owner.folder else ("file", "")
    return (
        f"the {kind} {path} (owner UID {owner.uid} GID {owner.gid}, mode {owner.mode:04o}) is "
        f"not writable by {user}: give it to that user (chown {recursive}{uid}:{gid} {path}"
        f"{where})"
    )
