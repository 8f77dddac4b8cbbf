"""The words for a folder or file the user watchbridge runs as cannot write: the path, its owner
and mode, and the exact command with this process's own UID and GID."""

from __future__ import annotations

import os
from pathlib import Path

from watchbridge.privatefiles import Owner, in_the_way, not_writable, owner_of

ROOTS = Owner(uid=0, gid=0, mode=0o755, folder=True)


def test_a_folder_root_owns_is_named_with_the_chown_for_unraids_user() -> None:
    said = not_writable(Path("/config"), ROOTS, 99, 100)
    assert said == (
        "the folder /config (owner UID 0 GID 0, mode 0755) is not writable by UID 99 GID 100, "
        "the user watchbridge runs as: give it to that user (chown -R 99:100 /config)"
    )


def test_a_file_is_given_over_alone_and_where_to_run_it_follows_the_command() -> None:
    file = Owner(uid=0, gid=0, mode=0o600, folder=False)
    said = not_writable(Path("/data/watchbridge.db.lock"), file, 1000, 1000, where="; on the host")
    assert said.endswith("(chown 1000:1000 /data/watchbridge.db.lock; on the host)")
    assert "the file /data/watchbridge.db.lock (owner UID 0 GID 0, mode 0600)" in said


def test_a_folder_that_cannot_be_made_is_made_and_given_over_in_one_command() -> None:
    said = not_writable(Path("/data/watchbridge"), None, 99, 100)
    assert said.startswith("the folder /data/watchbridge is missing and cannot be made by UID 99")
    assert said.endswith("(mkdir -p /data/watchbridge && chown -R 99:100 /data/watchbridge)")


def test_what_is_in_the_way_is_the_folder_the_first_missing_folder_or_the_file(
    tmp_path: Path,
) -> None:
    target = tmp_path / "data" / "watchbridge.db.lock"
    assert in_the_way(tmp_path / "data" / "more" / "x.lock") == tmp_path / "data"
    (tmp_path / "data").mkdir()
    assert in_the_way(target) == tmp_path / "data"
    target.touch()
    assert in_the_way(target) == target  # its folder takes writes: the file is the matter
    found = owner_of(target)
    assert found is not None and (found.uid, found.gid, found.folder) == (
        os.getuid(),
        os.getgid(),
        False,
    )
    assert owner_of(tmp_path / "nowhere") is None
