"""What kind of filesystem holds the database, so a start can warn of one SQLite cannot trust.

SQLite's WAL journal (which watchbridge uses) needs POSIX locks and a shared-memory file that
every user of the database maps on one machine; SQLite documents network filesystems as
unsupported for it (https://www.sqlite.org/wal.html, https://www.sqlite.org/useovernet.html),
and Unraid users report locked and damaged databases on the user shares (`/mnt/user`, the FUSE
filesystem `shfs`). Some of these set-ups work, so this warns and never refuses.

The filesystem is read from /proc/self/mountinfo (the mount with the longest mount point that
holds the path), which inside a container shows a bind mount with the type of the host's
filesystem under it. Parsing and judging are pure; `read_mountinfo` is the only I/O.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystems whose files live on another machine.
NETWORK = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "fuse.sshfs"})
# Folders a virtual machine (or Docker Desktop, WSL) shares from its host.
FROM_HOST = frozenset({"9p", "virtiofs", "vboxsf", "drvfs", "fakeowner"})
UNRAID_USER_SHARE = "fuse.shfs"
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: a filesystem (or a folder of it) mounted at `point`."""

    point: str  # where this process sees it, e.g. /data
    fstype: str  # ext4, nfs4, fuse.shfs, ...
    root: str  # the folder of that filesystem mounted there (a bind mount's source folder)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in mountinfo's text, in its order (a later one at the same point hides the
    earlier); lines that are not mountinfo's are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        # id parent major:minor root point options [optional fields...] - fstype source super
        if "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if len(fields) < separator + 2:
            continue
        mounts.append(
            Mount(
                point=_unescape(fields[4]), fstype=fields[separator + 1], root=_unescape(fields[3])
            )
        )
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline or backslash in a path as an octal escape."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mount_of(path: str, mountinfo: str) -> Mount | None:
    """The mount that holds the absolute `path` (symlinks already resolved): the one with the
    longest mount point above it, the last listed of those at one point; None when mountinfo
    names none (empty: not Linux, /proc not mounted)."""
    found: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        point = mount.point.rstrip("/")
        if path != point and not path.startswith(point + "/"):
            continue
        if found is None or len(point) >= len(found.point.rstrip("/")):
            found = mount
    return found


def shared_filesystem_warning(key: str, path: str, mountinfo: str) -> str | None:
    """What to tell the user when `path` (the value of config key `key`, symlinks resolved)
    is on a network, host-shared or FUSE filesystem; None on a local one (ext4, xfs, btrfs,
    zfs, overlay, tmpfs, ...) or when the filesystem is not known."""
    mount = mount_of(path, mountinfo)
    if mount is None:
        return None
    kind = mount.fstype
    also = "and the lock, journal and backup files beside it"
    if kind == UNRAID_USER_SHARE:
        # The folder as the Unraid server names it: the share's folder mounted here, and
        # the path's own folders below the mount point.
        below = path[len(mount.point.rstrip("/")) :]
        folder = posixpath.dirname("/mnt/user" + mount.root.rstrip("/") + below)
        pool = folder.replace("/mnt/user", "", 1)
        return (
            f"{key}: {path} ({also}) is on an Unraid user share ({kind}, {folder} on the "
            "server), where SQLite databases are reported locked or damaged: use "
            f"/mnt/cache{pool} (or your pool's /mnt/POOL{pool}) for that folder instead, "
            "e.g. as the container's path, or make the share exclusive to one pool; move "
            "the files there with the container stopped"
        )
    if kind in NETWORK or kind in FROM_HOST:
        where = (
            "a network filesystem"
            if kind in NETWORK
            else "a folder shared from the host of a virtual machine or Docker Desktop"
        )
        return (
            f"{key}: {path} ({also}) is on {where} ({kind}): SQLite does not support its "
            "journal there (it needs locks and shared memory on one machine), so the database "
            "may be reported locked or become damaged; keep it on a disk of the machine "
            "watchbridge runs on (move it with the service stopped) and keep "
            "`watchbridge backup --to` copies on the share instead"
        )
    if kind in ("fuse", "fuseblk") or kind.startswith("fuse."):
        return (
            f"{key}: {path} ({also}) is on a FUSE filesystem ({kind}): SQLite's locks and "
            "shared memory work there only as far as that program supports them; if the "
            "database is reported locked or damaged, move it to a disk's own filesystem "
            "(ext4, xfs, btrfs, zfs) with the service stopped"
        )
    return None


def read_mountinfo(source: Path = MOUNTINFO) -> str:
    """This process's mount table; empty where there is none to read (not Linux)."""
    try:
        return source.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
