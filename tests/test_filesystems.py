"""The warning of a database on a network, host-shared or FUSE filesystem (Unraid's user
shares, NFS, SMB), judged from mountinfo text as the kernel writes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import watchbridge, write_config
from watchbridge.app import start_warnings
from watchbridge.config import load_config
from watchbridge.filesystems import (
    mount_of,
    parse_mountinfo,
    read_mountinfo,
    shared_filesystem_warning,
)

# A container on Unraid: /data from the user share /mnt/user/appdata/watchbridge (shfs),
# /config from the cache pool, the image's own files on overlay.
UNRAID_CONTAINER = """\
1200 1100 0:120 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l/A,upperdir=/u,workdir=/w
1201 1200 0:122 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1234 1200 0:45 /appdata/watchbridge /data rw,noatime - fuse.shfs shfs rw,user_id=0,allow_other
1235 1200 0:46 /appdata/watchbridge-config /config rw,noatime - btrfs /dev/nvme0n1p1 rw,ssd
"""

# A Raspberry Pi: the SD card at /, a USB disk, an NFS export and an SMB share (its options
# carry the user name, which no warning may repeat).
PI = """\
27 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
28 27 8:1 / /mnt/usb rw,relatime shared:30 - xfs /dev/sda1 rw,attr2,inode64
29 27 0:50 / /mnt/nas rw,relatime shared:40 - nfs4 nas.lan:/export/media rw,vers=4.2,hard
30 27 0:51 / /mnt/smb\\040share rw,relatime shared:41 - cifs //nas/share rw,vers=3.1.1,username=bob
31 27 0:52 / /mnt/pool rw,relatime shared:42 - fuse.mergerfs pool rw,allow_other
32 27 0:53 / /mnt/zfs rw,relatime shared:43 - zfs tank/data rw,xattr,noacl
33 27 0:54 / /tmp rw,nosuid,nodev shared:44 - tmpfs tmpfs rw
"""


def test_mountinfo_is_read_as_the_kernel_writes_it() -> None:
    mounts = parse_mountinfo(UNRAID_CONTAINER + PI + "not a mountinfo line\n\n")
    assert [m.fstype for m in mounts][:4] == ["overlay", "proc", "fuse.shfs", "btrfs"]
    assert mounts[2].point == "/data" and mounts[2].root == "/appdata/watchbridge"
    assert "/mnt/smb share" in [m.point for m in mounts]  # \040 is a space
    assert len(mounts) == 11


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/data/watchbridge.db", "fuse.shfs"),
        ("/data", "fuse.shfs"),
        ("/database.db", "overlay"),  # /data is no folder above it
        ("/config/watchbridge.yaml", "btrfs"),
        ("/app/watchbridge.db", "overlay"),
    ],
)
def test_the_longest_mount_point_above_the_path_holds_it(path: str, fstype: str) -> None:
    mount = mount_of(path, UNRAID_CONTAINER)
    assert mount is not None and mount.fstype == fstype


def test_a_later_mount_at_the_same_point_hides_the_earlier() -> None:
    over = PI + "40 27 0:60 / /mnt/usb rw,relatime - nfs 10.0.0.2:/srv rw,vers=3\n"
    mount = mount_of("/mnt/usb/watchbridge.db", over)
    assert mount is not None and mount.fstype == "nfs"


def test_an_unraid_user_share_is_named_with_the_cache_path_to_use() -> None:
    warning = shared_filesystem_warning("storage.path", "/data/watchbridge.db", UNRAID_CONTAINER)
    assert warning is not None
    assert warning.startswith("storage.path: /data/watchbridge.db (and the lock, journal")
    assert "Unraid user share (fuse.shfs, /mnt/user/appdata/watchbridge on the server)" in warning
    assert "use /mnt/cache/appdata/watchbridge (or your pool's /mnt/POOL/appdata/watchbridge)" in (
        warning
    )
    # Run on the Unraid server itself, the share is /mnt/user and the path says the rest.
    host = "22 1 0:45 / /mnt/user rw,noatime - fuse.shfs shfs rw,allow_other\n"
    warning = shared_filesystem_warning("storage.path", "/mnt/user/appdata/wb/w.db", host)
    assert warning is not None and "/mnt/user/appdata/wb on the server" in warning
    assert "use /mnt/cache/appdata/wb" in warning


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/mnt/nas/watchbridge/watchbridge.db", "is on a network filesystem (nfs4)"),
        ("/mnt/smb share/watchbridge.db", "is on a network filesystem (cifs)"),
        ("/mnt/pool/appdata/watchbridge.db", "is on a FUSE filesystem (fuse.mergerfs)"),
    ],
)
def test_network_and_fuse_filesystems_are_warned_of(path: str, said: str) -> None:
    warning = shared_filesystem_warning("storage.path", path, PI)
    assert warning is not None
    assert warning.startswith(f"storage.path: {path} (") and said in warning
    assert "bob" not in warning and "nas.lan" not in warning  # the mount's source and options


@pytest.mark.parametrize(
    ("fstype", "said"),
    [
        ("smb3", "a network filesystem"),
        ("9p", "shared from the host of a virtual machine or Docker Desktop"),
        ("virtiofs", "shared from the host of a virtual machine or Docker Desktop"),
        ("fuse.sshfs", "a network filesystem"),
        ("fuseblk", "a FUSE filesystem"),
    ],
)
def test_other_shared_filesystems_are_warned_of(fstype: str, said: str) -> None:
    mountinfo = f"50 27 0:70 / /srv rw,relatime - {fstype} src rw\n"
    warning = shared_filesystem_warning("storage.path", "/srv/watchbridge.db", mountinfo)
    assert warning is not None and f"{said} ({fstype})" in warning


@pytest.mark.parametrize(
    "path",
    ["/watchbridge.db", "/mnt/usb/watchbridge.db", "/mnt/zfs/w.db", "/tmp/w.db", "/mnt/nasty/w"],
)
def test_local_filesystems_are_not_warned_of(path: str) -> None:
    assert shared_filesystem_warning("storage.path", path, PI) is None
    for fstype in ("btrfs", "overlay"):
        line = f"60 27 0:80 / /mnt rw - {fstype} x rw\n"
        assert shared_filesystem_warning("storage.path", path, PI + line) is None


def test_no_mount_table_no_warning() -> None:
    # Not Linux, or /proc not mounted: nothing is known, nothing is said.
    assert shared_filesystem_warning("storage.path", "/data/watchbridge.db", "") is None


def test_the_start_warns_where_a_symlinked_database_really_is(tmp_path: Path) -> None:
    share = tmp_path / "nas"
    share.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "watchbridge.db").symlink_to(share / "watchbridge.db")
    path = write_config(tmp_path / "data")
    config = load_config(path, {})
    real = os.path.realpath(share)
    mountinfo = PI + f"70 27 0:90 / {real} rw,relatime - nfs4 nas:/x rw\n"
    warnings = start_warnings(config, [], mountinfo=mountinfo)
    (warning,) = [w for w in warnings if w.startswith("storage.path")]
    assert warning.startswith(f"storage.path: {real}/watchbridge.db (")
    assert "network filesystem (nfs4)" in warning
    # The same database on the disk the rest of the machine is on: nothing to say.
    assert not [w for w in start_warnings(config, [], mountinfo=PI) if "storage.path" in w]


def test_this_machines_own_mount_table_is_read() -> None:
    mountinfo = read_mountinfo()
    if not mountinfo:
        pytest.skip("no /proc/self/mountinfo here")
    mount = mount_of("/proc/self/status", mountinfo)
    assert mount is not None and mount.fstype == "proc"
    assert read_mountinfo(Path("/nonexistent/mountinfo")) == ""


def test_check_config_says_what_this_machine_holds_the_database_on(tmp_path: Path) -> None:
    path = write_config(tmp_path, "profiles:\n  me: {default: true}\n")
    result = watchbridge("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if line.startswith("warning: storage")]
    database = os.path.realpath(tmp_path / "watchbridge.db")
    expected = shared_filesystem_warning("storage.path", database, read_mountinfo())
    assert said == ([f"warning: {expected}"] if expected else [])
