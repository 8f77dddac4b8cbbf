"""The database cannot be written (its disk full, read-only, locked by another program): a
webhook is never acknowledged unless stored, the alert says what is wrong and resolves itself
once a write works again. A full disk is SQLite's own: `PRAGMA max_page_count` on the
service's connection, so that the test needs no small file system of its own."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, sign_in_trakt, watchbridge, write_config
from tests.ingest_samples import sample_bytes, sample_json
from tests.test_app import jellyfin_config, runtime_for, wait_until
from watchbridge import statuspage, storagewatch, webhooks
from watchbridge.app import Runtime, create_app
from watchbridge.config import parse_config
from watchbridge.storagefault import DatabaseMoved, fault_kind, fault_of
from watchbridge.storagewatch import StorageWatch
from watchbridge.store import OpenFiles, Store
from watchbridge.wiring import build_app, build_runtime

HOOK = "/webhooks/jellyfin/s3cret-hook"
FULL_TITLE = "watchbridge cannot write its database: the disk is full"


def sqlite_error(words: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(words)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (sqlite_error("database or disk is full", sqlite3.SQLITE_FULL), "full"),
        (
            sqlite_error("attempt to write a readonly database", sqlite3.SQLITE_READONLY),
            "read_only",
        ),
        (sqlite_error("database is locked", sqlite3.SQLITE_BUSY), "locked"),
        (sqlite_error("database disk image is malformed", sqlite3.SQLITE_CORRUPT), "damaged"),
        (sqlite_error("disk I/O error", 10 | (3 << 8)), "failing"),  # SQLITE_IOERR_WRITE
        (sqlite3.OperationalError("database or disk is full"), "full"),  # no code: its words
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only"),
        (sqlite3.IntegrityError("UNIQUE constraint failed: outbox.id"), None),  # our SQL
        (sqlite3.OperationalError("no such column: x"), None),
        (OSError("database or disk is full"), None),  # no errno: not the disk's
    ],
)
def test_each_fault_of_the_disk_is_named_as_such(error: BaseException, kind: str | None) -> None:
    assert fault_kind(error) == kind


def test_a_full_disk_is_said_plainly_with_what_to_do() -> None:
    error = sqlite_error("database or disk is full", sqlite3.SQLITE_FULL)
    fault = fault_of(error, "/data/watchbridge.db")
    assert fault is not None
    assert fault.title == FULL_TITLE
    assert "The disk holding /data/watchbridge.db is full" in fault.message
    assert "Free some space" in fault.message and "not lost" in fault.message


def hold_the_lock(tmp_path: Path) -> sqlite3.Connection:
    """A sqlite3 shell in the middle of a write (another program holding the database)."""
    shell = sqlite3.connect(tmp_path / "watchbridge.db", isolation_level=None)
    shell.execute("BEGIN IMMEDIATE")
    return shell


def quick_lock_runtime(tmp_path: Path, receiver: AlertReceiver) -> Runtime:
    path = jellyfin_config(tmp_path, receiver)
    path.write_text(path.read_text().replace("storage:\n", "storage:\n  busy_timeout: 0.2s\n"))
    return runtime_for(path)


def post(app: AppThread) -> httpx.Response:
    body = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    return httpx.post(f"{app.url}{HOOK}", content=body)


def test_a_webhook_the_database_cannot_take_is_503_with_retry_after_and_says_why(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    with AppThread(
        create_app(quick_lock_runtime(tmp_path, receiver), extra_routes=webhooks.ROUTES)
    ) as app:
        shell = hold_the_lock(tmp_path)
        refused = post(app)
        shell.close()
        again = post(app)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "60"
    error = refused.json()["error"]
    assert f"another program holds the database {tmp_path / 'watchbridge.db'} locked" in error
    assert again.status_code == 202


LOCKED_TITLE = "watchbridge cannot write its database: another program holds it locked"


def test_the_database_held_by_another_program_is_alerted_shown_and_resolved_once_let_go(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    runtime = quick_lock_runtime(tmp_path, receiver)
    routes = [*webhooks.ROUTES, *statuspage.ROUTES]
    served = create_app(runtime, tasks=[StorageWatch()], extra_routes=routes)
    with AppThread(served) as app:
        shell = hold_the_lock(tmp_path)
        post(app)
        wait_until(lambda: LOCKED_TITLE in receiver.titles())
        storage = httpx.get(f"{app.url}/api/status").json()["storage"]
        page = httpx.get(f"{app.url}/").text  # a Home Assistant user reads only the page
        shell.close()
        wait_until(lambda: f"Resolved: {LOCKED_TITLE}" in receiver.titles())
        after = httpx.get(f"{app.url}/api/status").json()["storage"]
        page_after = httpx.get(f"{app.url}/").text
    alert = next(m["message"] for m in receiver.messages if m["title"] == LOCKED_TITLE)
    assert "sqlite3 shell" in alert and "no restart needed" in alert
    assert storage["kind"] == "locked" and "storage.busy_timeout" in storage["problem"]
    assert after is None
    assert "cannot write its database" in page and "a sqlite3 shell" in page
    assert "cannot write its database" not in page_after


class WritesTheDatabase:
    """A background task (delivery's name) that writes the database every 50 ms."""

    name = "delivery"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.runs += 1
        while not stop.is_set():
            await asyncio.to_thread(runtime.store.note_alive, runtime.clock())
            await asyncio.sleep(0.05)


def test_a_task_failing_on_the_database_is_the_storage_alert_not_a_crash_alert(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    runtime = quick_lock_runtime(tmp_path, receiver)
    runtime.task_restart_delay = 0.05
    task = WritesTheDatabase()
    with AppThread(create_app(runtime, tasks=[task, StorageWatch()])):
        shell = hold_the_lock(tmp_path)
        wait_until(lambda: task.runs >= 4 and LOCKED_TITLE in receiver.titles())
        shell.close()
        wait_until(lambda: f"Resolved: {LOCKED_TITLE}" in receiver.titles())
    assert task.runs >= 4
    assert "watchbridge: its delivery keeps failing" not in receiver.titles()


class FailsOnAFullDisk:
    """A background task whose writes fail: the disk is full."""

    name = "delivery"

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        raise sqlite_error("database or disk is full", sqlite3.SQLITE_FULL)


def test_a_task_failing_on_a_full_disk_logs_it_plainly_without_a_traceback(
    tmp_path: Path, receiver: AlertReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = runtime_for(jellyfin_config(tmp_path, receiver))
    runtime.task_restart_delay = 10.0
    served = create_app(runtime, tasks=[FailsOnAFullDisk()])
    with caplog.at_level(logging.WARNING, logger="watchbridge.app"), AppThread(served):
        wait_until(lambda: any("restarting" in r.getMessage() for r in caplog.records))
    told = [r for r in caplog.records if "restarting" in r.getMessage()]
    assert told[0].getMessage() == f"{FULL_TITLE}; restarting"
    assert told[0].exc_info is None


def test_with_storage_left_out_of_alerts_kinds_a_task_failing_on_the_database_still_alerts(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # alerts.kinds written before `storage` existed: the crash alert it always got is not
    # held back for a storage alert that is never sent.
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    path = jellyfin_config(tmp_path, receiver)
    path.write_text(
        path.read_text()
        .replace("storage:\n", "storage:\n  busy_timeout: 0.2s\n")
        .replace("alerts: {urls:", "alerts: {kinds: [internal_error], urls:")
    )
    runtime = runtime_for(path)
    runtime.task_restart_delay = 0.05
    task = WritesTheDatabase()
    with AppThread(create_app(runtime, tasks=[task, StorageWatch()])):
        shell = hold_the_lock(tmp_path)
        wait_until(lambda: "watchbridge: its delivery keeps failing" in receiver.titles())
        shell.close()
    assert task.runs >= 3
    assert "watchbridge: its delivery keeps failing" in receiver.titles()
    assert LOCKED_TITLE not in receiver.titles()


REFUSING_JELLYFIN = "watchbridge is refusing Jellyfin webhooks"


def test_webhooks_refused_for_the_database_are_told_by_the_storage_alert_alone(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One cause, one alert: the storage alert says which webhooks were refused, how many,
    # that their plays are lost, and what brings them back; no `webhook_rejects` beside it.
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    runtime = quick_lock_runtime(tmp_path, receiver)
    served = create_app(
        runtime, tasks=[StorageWatch()], extra_routes=[*webhooks.ROUTES, *statuspage.ROUTES]
    )
    with AppThread(served) as app:
        shell = hold_the_lock(tmp_path)
        first = post(app).status_code
        wait_until(lambda: LOCKED_TITLE in receiver.titles())
        page = httpx.get(f"{app.url}/").text  # the page says it too (an app user reads only it)
        refused = [first, post(app).status_code]  # told in the "Resolved" notice
        shell.close()
        wait_until(lambda: f"Resolved: {LOCKED_TITLE}" in receiver.titles())
        wait_until(lambda: not webhooks._alerting)  # the refusals' own alerts, if any, sent
    assert refused == [503, 503]
    assert REFUSING_JELLYFIN not in receiver.titles()
    alert = next(m["message"] for m in receiver.messages if m["title"] == LOCKED_TITLE)
    assert "So far 1 Jellyfin webhook was refused" in alert
    assert "mark what was watched meanwhile watched again in Jellyfin" in alert
    assert "refused_webhooks" in alert  # where to find them
    assert "So far 1 Jellyfin webhook was refused" in page
    resolved = next(m["message"] for m in receiver.messages if m["title"].startswith("Resolved"))
    assert "2 Jellyfin webhooks were refused" in resolved
    assert "watched again in Jellyfin" in resolved


def test_with_storage_left_out_of_alerts_kinds_webhooks_refused_for_it_are_still_alerted(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    path = jellyfin_config(tmp_path, receiver)
    path.write_text(
        path.read_text()
        .replace("storage:\n", "storage:\n  busy_timeout: 0.2s\n")
        .replace("alerts: {urls:", "alerts: {kinds: [webhook_rejects], urls:")
    )
    served = create_app(runtime_for(path), tasks=[StorageWatch()], extra_routes=webhooks.ROUTES)
    with AppThread(served) as app:
        shell = hold_the_lock(tmp_path)
        refused = post(app)
        wait_until(lambda: REFUSING_JELLYFIN in receiver.titles())
        shell.close()
    assert refused.status_code == 503
    alert = next(m["message"] for m in receiver.messages if m["title"] == REFUSING_JELLYFIN)
    assert "another program holds the database" in alert


MOVED_TITLE = "watchbridge cannot write its database: its file was deleted or moved"


def test_a_database_moved_away_while_the_service_runs_is_refused_until_put_back(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite goes on writing to files no longer at their path (deleted, moved, replaced): a
    # webhook answered 202 there is gone at the next start, which opens what is at the path.
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    runtime = runtime_for(jellyfin_config(tmp_path, receiver))
    served = create_app(runtime, tasks=[StorageWatch()], extra_routes=webhooks.ROUTES)
    files = [tmp_path / f"watchbridge.db{suffix}" for suffix in ("", "-wal", "-shm")]
    aside = tmp_path / "aside"
    aside.mkdir()
    with AppThread(served) as app:
        assert post(app).status_code == 202
        for file in files:  # a user tidying up the data folder
            file.rename(aside / file.name)
        refused = post(app)
        wait_until(lambda: MOVED_TITLE in receiver.titles())
        for file in files:
            (aside / file.name).rename(file)
        again = post(app)
        wait_until(lambda: f"Resolved: {MOVED_TITLE}" in receiver.titles())
    assert refused.status_code == 503, refused.text
    assert f"the database {tmp_path / 'watchbridge.db'} was deleted" in refused.json()["error"]
    alert = next(m["message"] for m in receiver.messages if m["title"] == MOVED_TITLE)
    assert "put it back" in alert and "restart watchbridge" in alert
    assert again.status_code == 202
    with contextlib.closing(sqlite3.connect(files[0])) as look:
        assert look.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)


def test_a_write_ahead_log_deleted_while_the_service_runs_is_refused_not_acknowledged(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    # `rm watchbridge.db-*`: what the service commits after goes to the deleted log, and is
    # lost at the next start.
    runtime = runtime_for(jellyfin_config(tmp_path, receiver))
    with AppThread(create_app(runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app).status_code == 202
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"watchbridge.db{suffix}").unlink()
        refused = post(app)
    assert refused.status_code == 503, refused.text
    assert "was deleted, moved or replaced" in refused.json()["error"]


# `watchbridge status` runs in a process of its own, without the service's runtime: it tries
# the database itself, leaving nothing behind.

READ_ONLY_TITLE = "watchbridge cannot write its database: it is read-only"


def status_of(folder: Path) -> subprocess.CompletedProcess[str]:
    return watchbridge("status", "--config", str(folder / "watchbridge.yaml"))


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A disk of its own at `folder` (a tmpfs of `size`), unmounted afterwards; skips where
    this machine does not let the test mount one (not root, no CAP_SYS_ADMIN)."""
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounts a small disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
    if mounted.returncode != 0:
        pytest.skip("this machine does not let the test mount a disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(disk: Path) -> Path:
    """Take the disk's last byte (a backup copy, logs, media), as a file one can delete."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, bytes(4096))
    finally:
        os.close(fd)
    return ballast


def test_status_says_the_disk_is_full_and_what_to_do_without_writing_anything(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "data") as disk:
        write_config(disk)
        service = Store.open(disk / "watchbridge.db")  # the running service, its log open
        try:
            ballast = fill(disk)
            with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
                for _ in range(100):  # as the service's next writes fail
                    service.note_alive(time.time())
            files = sorted(os.listdir(disk))
            full = status_of(disk)
            left = sorted(os.listdir(disk))
            ballast.unlink()
            freed = status_of(disk)
        finally:
            service.close()
    assert full.returncode == 0, full.stderr
    line = next(s for s in full.stdout.splitlines() if s.startswith("storage:"))
    assert line.startswith(f"storage:       {FULL_TITLE}. The disk holding {disk}")
    assert "Free some space on it" in line
    assert "waiting:" in full.stdout  # the rest of the status as ever
    assert left == files
    assert freed.returncode == 0 and "storage:" not in freed.stdout


def test_status_says_another_program_holds_the_database_locked_without_waiting_on_it(
    tmp_path: Path,
) -> None:
    write_config(tmp_path, "  busy_timeout: 0.2\n")
    Store.open(tmp_path / "watchbridge.db").close()
    shell = hold_the_lock(tmp_path)
    try:
        started = time.monotonic()
        locked = status_of(tmp_path)
        took = time.monotonic() - started
    finally:
        shell.close()
    let_go = status_of(tmp_path)
    assert locked.returncode == 0, locked.stderr
    assert f"storage:       {LOCKED_TITLE}. Another program holds the database" in locked.stdout
    assert "a sqlite3 shell" in locked.stdout
    assert took < 5
    assert let_go.returncode == 0 and "storage:" not in let_go.stdout
    with sqlite3.connect(tmp_path / "watchbridge.db") as look:  # the try was rolled back
        assert look.execute("SELECT 1 FROM settings WHERE name = 'write_check'").fetchall() == []


def test_status_on_a_read_only_disk_says_so_plainly_with_what_to_do(tmp_path: Path) -> None:
    # Room for a new database's first log (over 1 MB with every migration), checkpointed at
    # its close: one left beside it on a full disk is another fault than the one tested.
    with small_disk(tmp_path / "data", "8m") as disk:
        write_config(disk)
        Store.open(disk / "watchbridge.db").close()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        result = status_of(disk)
    assert result.returncode == 1  # nothing to show: SQLite cannot open it read-only here
    line = result.stderr.strip()
    assert line.startswith(f"error: storage.path {disk / 'watchbridge.db'}: cannot open the ")
    assert f"the database {disk / 'watchbridge.db'} or its folder is read-only" in line
    assert "its filesystem is mounted read-only" in line and "mount it read-write again" in line
    assert "Traceback" not in result.stderr


def test_a_database_replaced_at_its_path_is_told_apart_by_its_inode_on_a_local_disk(
    tmp_path: Path,
) -> None:
    database = tmp_path / "wb.db"
    database.write_bytes(b"one")
    files = OpenFiles(database, wal=False)
    files.check()
    replacement = tmp_path / "copy.db"
    replacement.write_bytes(b"two")
    os.replace(replacement, database)  # a backup moved over it
    with pytest.raises(DatabaseMoved):
        files.check()


def test_on_a_shared_filesystem_only_a_database_gone_from_its_path_counts(
    tmp_path: Path,
) -> None:
    # Inode numbers a network or FUSE filesystem makes up prove no other file: a false alarm
    # would refuse every webhook.
    database = tmp_path / "wb.db"
    database.write_bytes(b"one")
    files = OpenFiles(database, wal=False, shared=True)
    files.check()
    replacement = tmp_path / "copy.db"
    replacement.write_bytes(b"two")
    os.replace(replacement, database)
    files.check()
    database.unlink()
    with pytest.raises(DatabaseMoved):
        files.check()


class RecordsPlays:
    """A background task (the catch-up's name) that records a play every 20 ms once `go` is
    set, each a new row: the database grows, as a household's plays make it grow."""

    name = "catch-up"

    def __init__(self) -> None:
        self.go = threading.Event()

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.go.is_set():
                await asyncio.to_thread(
                    runtime.store.record_event,
                    source="jellyfin",
                    kind="play",
                    payload={"note": "x" * 2000},
                    now=time.time(),
                )
            await asyncio.sleep(0.02)


def test_a_full_disk_whose_log_still_takes_webhooks_is_told_as_it_is(
    tmp_path: Path, receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The write-ahead log's file keeps its size after a checkpoint, and SQLite writes it over
    # from its start: on a disk with no byte free a webhook is still stored there (202) until
    # the log is full. The alert must not say webhooks are refused, nor that nothing is sent.
    monkeypatch.setattr(storagewatch, "CHECK_EVERY", 0.1)
    with small_disk(tmp_path / "data", "4m") as disk:
        runtime = runtime_for(jellyfin_config(disk, receiver))
        runtime.task_restart_delay = 5.0
        plays = RecordsPlays()
        routes = [*webhooks.ROUTES, *statuspage.ROUTES]
        served = create_app(runtime, tasks=[plays, StorageWatch()], extra_routes=routes)
        with AppThread(served) as app:
            assert post(app).status_code == 202
            with contextlib.closing(sqlite3.connect(disk / "watchbridge.db")) as shell:
                shell.execute("PRAGMA wal_checkpoint(RESTART)")  # the log starts over
            ballast = fill(disk)
            taken = post(app)
            plays.go.set()
            wait_until(lambda: FULL_TITLE in receiver.titles())
            page = httpx.get(f"{app.url}/").text
            refused = post(app)
            page_refused = httpx.get(f"{app.url}/").text
            ballast.unlink()
            wait_until(lambda: f"Resolved: {FULL_TITLE}" in receiver.titles())
    assert taken.status_code == 202
    alert = next(m["message"] for m in receiver.messages if m["title"] == FULL_TITLE)
    for said in (alert, page):
        assert "are refused (webhooks answered 503" not in said and "nothing is sent" not in said
        assert "The last webhook, at " in said and "was stored (answered 202): " in said
        assert "a delivery sent whose result cannot be written stays being sent" in said
    assert refused.status_code == 503
    assert "was refused (answered 503, not recorded): webhooks are refused" in page_refused
    assert "So far 1 Jellyfin webhook was refused" in page_refused


@contextlib.contextmanager
def full_at_the_note_of_a_play(store: Store, service: str = "trakt") -> Iterator[None]:
    """The disk fills up as the note of a play `service` took is written (the mirror: the
    first write after its answer), and has room again afterwards: SQLite's own "database or
    disk is full", from a 1 MB write its limit on the service's connection refuses."""
    conn = store._conn
    assert conn is not None
    with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as look:
        look.execute("CREATE TABLE ballast (filler BLOB)")
        look.execute(
            "CREATE TRIGGER fills_the_disk BEFORE INSERT ON mirror"
            f" WHEN NEW.service = '{service}' AND NEW.collection = 'plays'"
            " BEGIN INSERT INTO ballast VALUES (zeroblob(1048576)); END"
        )
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (room,) = conn.execute("PRAGMA max_page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + 64}")
        try:
            yield
        finally:
            look.execute("DROP TRIGGER fills_the_disk")
            conn.execute(f"PRAGMA max_page_count = {room}")


def outbox_rows(db: Path) -> list[tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT status, last_error FROM outbox").fetchall()


def test_a_disk_full_as_a_play_trakt_took_is_noted_is_the_storage_fault_and_lands_once(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    trakt.add_episode(show, 5, 14, tvdb=4637661, imdb="tt2301451", tmdb=62161)
    db = tmp_path / "wb.db"
    config = parse_config(
        f"""
server: {{webhook_secret: s3cret-hook}}
storage: {{path: {db}}}
delivery: {{retry_after: 1s}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{users: {{jellyfin: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    runtime.task_restart_delay = 0.05
    body = sample_json("jellyfin", "playback_stop_episode_completed.json")
    body["NotificationUsername"] = "alex"
    with caplog.at_level(logging.INFO), AppThread(build_app(runtime)) as app:
        sign_in_trakt(runtime.store, trakt, now=time.time())
        with full_at_the_note_of_a_play(runtime.store):
            assert httpx.post(f"{app.url}{HOOK}", json=body).status_code == 202
            wait_until(lambda: trakt.count("POST", "/scrobble/stop") == 1)
            wait_until(lambda: "; restarting" in caplog.text)
            during = outbox_rows(db)
        wait_until(lambda: [status for status, _ in outbox_rows(db)] == ["done"])
    assert len(trakt.history()) == 1  # taken once, never twice
    assert trakt.count("POST", "/scrobble/stop") == 1  # found on Trakt, not sent again
    told = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
    assert told[:1] == [f"{FULL_TITLE}; restarting"]
    assert "unexpected error" not in caplog.text and "target crashed" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "a traceback"
    assert all("a bug" not in (reason or "") for _, reason in during), during
    # No crash of the process, nor the row's fault: its try is not spent, nor counted as one
    # that took the process down (a disk failing so again and again would make it a dead
    # letter, and a row of a batch would go alone from then on).
    with contextlib.closing(sqlite3.connect(db)) as conn:
        spent = conn.execute("SELECT attempts, crashes FROM outbox").fetchall()
    assert spent == [(1, 0)]
