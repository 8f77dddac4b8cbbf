"""A month of restarts on one database and one unchanged config: what a start tells of a
condition that does not change reaches the user once, and nothing it keeps grows with them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.harness import ServiceProcess, free_port, write_config
from watchbridge.store import Store

RESTORE_FAILED = "its backup copy"


def _pages_lost(copy: Path) -> None:
    """A watchbridge database copy whose pages after the first (its tables) were lost: an SD
    card's damage, or a copy a power cut ended halfway."""
    database = copy.with_name("made.db")
    Store.open(database).close()
    data = database.read_bytes()
    copy.write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))
    database.unlink()


def test_a_damaged_backup_copy_of_a_missing_database_is_not_started_from_at_every_start(
    tmp_path: Path,
) -> None:
    # The README's advice for a damaged database: move it aside, the next start begins from
    # the backup copy. When that copy is damaged too, the start copied it in, refused it as
    # damaged ("move it aside; the next start begins from its backup copy"), and so on at
    # every restart: the service never started again.
    damaged = tmp_path / "wb.db.backup"
    _pages_lost(damaged)
    before = damaged.read_bytes()
    port = free_port()
    config = write_config(tmp_path, "", port).read_text().replace("watchbridge.db", "wb.db")
    (tmp_path / "watchbridge.yaml").write_text(config, encoding="utf-8")
    said = []
    for _ in range(3):
        service = ServiceProcess(tmp_path / "watchbridge.yaml", port, options=["--backup-on-stop"])
        service.start()
        assert service.terminate() in (0, -15)
        said.append(service.output())
    first, *later = said
    assert "is damaged" in first and "started from a new database" in first, first
    assert all("backup" not in each or "backup copy written" in each for each in later), later
    # The damaged copy is kept aside for whoever wants to rescue it, not overwritten by the
    # copies each stop writes.
    assert (tmp_path / "wb.db.backup.damaged").read_bytes() == before
    look = sqlite3.connect(tmp_path / "wb.db.backup")
    try:
        assert look.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        look.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "watchbridge.yaml",
        "wb.db",
        "wb.db.backup",
        "wb.db.backup.damaged",
        "wb.db.lock",
    ], names
