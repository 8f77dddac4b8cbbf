"""A database SQLite keeps out of WAL mode: every commit waits for the disk, and the user is told.

`PRAGMA journal_mode=WAL` only asks: where the files cannot share memory, SQLite answers with
the rollback journal it keeps. The `no_shared_memory` fixture (conftest) makes the store meet
that answer as it would on such a filesystem."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.harness import AppThread, watchbridge, write_config
from tests.test_app import runtime_for
from tests.test_disk_syncs import DiskSyncs
from watchbridge.app import create_app
from watchbridge.store import Store


def test_a_database_kept_out_of_wal_waits_for_the_disk_at_every_commit(
    tmp_path: Path, no_shared_memory: None
) -> None:
    path = tmp_path / "watchbridge.db"
    store = Store.open(path, durability="normal")
    try:
        assert store.journal_mode == "delete"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        syncs = DiskSyncs(store._conn)
        store.mirror_put("plex", "alex", "written", {"a": 1}, 0.0, synced=False)
        assert syncs.stop() == 1  # synced=False waits too
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        problem = store.journal_problem
        assert problem is not None
        assert problem.startswith(f"storage.path: {path}: SQLite could not put the database in ")
        assert "'delete' journal" in problem
        assert "move the database" in problem
    finally:
        store.close()


def test_a_database_in_wal_keeps_the_durability_asked_for(tmp_path: Path) -> None:
    # The same file, opened where SQLite gives WAL mode: nothing to tell, nothing forced.
    store = Store.open(tmp_path / "watchbridge.db", durability="normal")
    try:
        assert (store.journal_mode, store.journal_problem) == ("wal", None)
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        syncs = DiskSyncs(store._conn)
        store.mirror_put("plex", "alex", "written", {"a": 1}, 0.0, synced=False)
        assert syncs.stop() == 0
    finally:
        store.close()


def test_check_config_tells_of_a_database_kept_out_of_wal(
    tmp_path: Path, no_shared_memory: None
) -> None:
    path = write_config(tmp_path, "profiles:\n  me: {default: true}\n")
    Store.open(tmp_path / "watchbridge.db").close()  # check-config looks at one that exists
    result = watchbridge("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    (said,) = [line for line in result.stdout.splitlines() if "WAL mode" in line]
    assert said.startswith(f"warning: storage.path: {tmp_path / 'watchbridge.db'}: SQLite could")


def test_the_start_log_tells_of_a_database_kept_out_of_wal(
    tmp_path: Path, no_shared_memory: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="watchbridge")
    with AppThread(create_app(runtime_for(write_config(tmp_path)))):
        pass
    told = [r.getMessage() for r in caplog.records if "WAL mode" in r.getMessage()]
    assert len(told) == 1
    assert told[0].startswith(f"storage.path: {tmp_path / 'watchbridge.db'}: SQLite could not")


def test_what_was_told_is_told_again_only_once_it_changes_or_comes_back(store: Store) -> None:
    assert store.newly_told("storage", "on nfs4", 1.0)
    assert not store.newly_told("storage", "on nfs4", 2.0)
    assert store.newly_told("storage", "on cifs", 3.0)  # another place: said again
    assert not store.newly_told("storage", "", 4.0)  # moved to a local disk: nothing to say
    assert not store.newly_told("storage", "", 5.0)
    assert store.newly_told("storage", "on cifs", 6.0)  # and back: said again
