"""One `watchbridge serve` per database: a second one stops before it touches the database."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.harness import ServiceProcess, free_port, write_config
from watchbridge.errors import StoreError
from watchbridge.servelock import (
    AlreadyServing,
    Holder,
    ServiceSeen,
    described,
    hold,
    lock_path,
    parse_record,
    refusal,
    serving,
)
from watchbridge.store import NewOutboxRow, Store


def watchbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchbridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


def second_config(tmp_path: Path, database: Path) -> tuple[Path, int]:
    """Another service's config (its own folder and port) naming the same database."""
    folder = tmp_path / "second"
    folder.mkdir()
    port = free_port()
    config = write_config(folder, port=port)
    config.write_text(config.read_text().replace(str(folder / "watchbridge.db"), str(database)))
    return config, port


def claimed_row(database: Path) -> tuple[str, str | None, int]:
    with sqlite3.connect(database) as conn:
        row = conn.execute("SELECT status, claimed_by, attempts FROM outbox").fetchone()
    return row[0], row[1], row[2]


def test_a_second_serve_on_the_same_database_stops_with_one_line_and_claims_nothing(
    tmp_path: Path,
) -> None:
    first_port = free_port()
    first = ServiceProcess(write_config(tmp_path, port=first_port), first_port).start()
    database = tmp_path / "watchbridge.db"
    try:
        # A delivery the first service's worker holds (as while it waits for Trakt's answer).
        with Store.open(database) as store:
            store.enqueue([NewOutboxRow("trakt", "me", "scrobble", {}, "k1", "i1")], time.time())
        with sqlite3.connect(database) as conn:
            conn.execute(
                "UPDATE outbox SET status = 'inflight', claimed_by = 'service-first',"
                " updated_at = ?",
                (time.time(),),
            )
        config, port = second_config(tmp_path, database)
        second = subprocess.Popen(
            [sys.executable, "-m", "watchbridge", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while second.poll() is None and claimed_row(database)[0] == "inflight":
                assert time.monotonic() < deadline, "the second serve neither ran nor stopped"
                time.sleep(0.1)
            # Its start took nothing back from the first one's worker.
            assert claimed_row(database) == ("inflight", "service-first", 0)
            code = second.wait(30)
            out, err = second.communicate()
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(
            f"error: storage.path {database}: another watchbridge service is running on this "
            f"database (pid {first.proc.pid if first.proc else 0} on host "
            f"{socket.gethostname()}, started "
        )
        assert f"holds its lock file {database}.lock: stop that one first" in err
        assert "or give this one a database of its own (storage.path)" in err
        # It never listened; the first one serves on, and the commands meant to run beside it
        # still work.
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
        assert httpx.get(f"{first.url}/readyz").status_code == 200
        for command in (["status"], ["deadletters", "list"], ["check-config"]):
            beside = watchbridge(*command, "--config", str(first.config))
            assert beside.returncode == 0, (command, beside.stderr)
    finally:
        first.kill()
    assert stat.S_IMODE(os.stat(lock_path(database)).st_mode) == 0o600


def test_a_serve_killed_with_kill_9_leaves_no_lock_a_restart_trips_over(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    first = ServiceProcess(config, port).start()
    first.kill()  # SIGKILL: no clean-up ran; the lock file stays, naming the dead process
    assert lock_path(tmp_path / "watchbridge.db").exists()
    restarted = ServiceProcess(config, port).start()
    try:
        assert httpx.get(f"{restarted.url}/readyz").status_code == 200
    finally:
        restarted.terminate()
    again = ServiceProcess(config, port).start()  # and after a clean stop
    again.kill()


def test_a_second_serve_restores_no_backup_while_another_holds_the_lock(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    database = tmp_path / "watchbridge.db"
    backup = tmp_path / "watchbridge.db.backup"
    Store.open(backup).close()  # a restored backup waiting to be started from
    holder = held_by_another_process(database)
    try:
        result = watchbridge("serve", "--config", str(config))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert "another watchbridge service is running on this database" in result.stderr
    assert "a new database" not in result.stderr
    assert not database.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "watchbridge.db.backup",
        "watchbridge.db.lock",
        "watchbridge.yaml",
    ]


def test_a_database_named_through_a_symlink_shares_the_lock_of_its_file(tmp_path: Path) -> None:
    # One service names the file, the other a symlink to it (another mount, a path kept from
    # an old setup): one database, so one lock, not a lock file beside each name.
    (tmp_path / "data").mkdir()
    database = tmp_path / "data" / "watchbridge.db"
    Store.open(database).close()
    named_otherwise = tmp_path / "watchbridge.db"
    named_otherwise.symlink_to(database)
    with hold(database, time.time()), pytest.raises(AlreadyServing):
        hold(named_otherwise, time.time())
    assert not (tmp_path / "watchbridge.db.lock").exists()


def test_a_sync_looking_whether_a_service_runs_never_turns_one_away(tmp_path: Path) -> None:
    # `watchbridge sync` looks (a shared lock, let go at once) whether a service runs: a
    # service starting in that moment waits it out instead of stopping as a second one.
    database = tmp_path / "watchbridge.db"
    assert serving(database) == ServiceSeen(running=False)  # no service ever ran here
    with hold(database, time.time()):
        assert serving(database) == ServiceSeen(running=True)
    assert serving(database) == ServiceSeen(running=False)
    lock = os.open(lock_path(database), os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_SH)  # a sync's look, caught in its moment
    threading.Timer(0.1, os.close, (lock,)).start()
    with hold(database, time.time()):
        assert serving(database) == ServiceSeen(running=True)


def test_a_lock_file_that_cannot_be_opened_leaves_it_unsure_whether_a_service_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a 0600 lock file of root's is to a sync run as another user. The tests may run as
    # root, whom no mode stops: a socket in its place cannot be opened by anyone.
    monkeypatch.chdir(tmp_path)  # a socket's path is short, the test's folder may not be
    in_place = socket.socket(socket.AF_UNIX)
    in_place.bind("watchbridge.db.lock")
    try:
        seen = serving(tmp_path / "watchbridge.db")
    finally:
        in_place.close()
    assert seen.running is None
    lock = tmp_path / "watchbridge.db.lock"
    assert seen.doubt == (
        f"cannot open {lock} (No such device or address); run sync as the service's user"
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_a_data_folder_root_owns_names_the_folder_and_the_chown_for_the_services_user() -> None:
    # Unraid makes the appdata folders as root; the template runs the container as 99:100.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o755)
        data = folder / "data"
        data.mkdir(mode=0o755)
        config = write_config(folder)
        database = data / "watchbridge.db"
        config.write_text(config.read_text().replace(str(folder / "watchbridge.db"), str(database)))
        unraid = ["setpriv", "--reuid=99", "--regid=100", "--clear-groups"]
        result = subprocess.run(
            [*unraid, sys.executable, "-m", "watchbridge", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": name},
        )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot open its lock file {database}.lock (Permission denied): " in line
    assert (
        f"the folder {data} (owner UID 0 GID 0, mode 0755) is not writable by UID 99 GID " in line
    )
    assert line.endswith(f"give it to that user (chown -R 99:100 {data})")


def test_a_lock_file_with_a_record_cut_short_still_gives_the_whole_advice() -> None:
    assert parse_record('{"pid": 12') == Holder()
    assert parse_record('{"pid": 7, "host": "box\\u001b[2J", "started": true}') == Holder(
        pid=7, host="box[2J"
    )
    line = refusal(Path("/data/watchbridge.db"), Path("/data/watchbridge.db.lock"), Holder())
    assert line == (
        "storage.path /data/watchbridge.db: another watchbridge service is running on this "
        "database and holds its lock file /data/watchbridge.db.lock: stop that one first (two "
        "would send plays twice), or give this one a database of its own (storage.path)"
    )


def test_serve_help_says_one_runs_per_database_and_how_a_second_one_ends() -> None:
    shown = watchbridge("serve", "--help")
    assert shown.returncode == 0, shown.stderr
    help_text = " ".join(shown.stdout.split())
    assert "a second on the same storage.path stops at once with exit code 2" in help_text
    assert ".lock" in help_text


def held_by_another_process(database: Path) -> subprocess.Popen[str]:
    """A service's lock on `database`, held by another process until killed."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from watchbridge import servelock;"
            f"lock = servelock.hold(Path({str(database)!r}), 0.0); print('held', flush=True);"
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def as_an_earlier_release_left_it(database: Path) -> str:
    """A database this release made, its last migration taken back off the record (as the
    release before it left the database); that migration's name."""
    Store.open(database).close()
    with sqlite3.connect(database) as conn:
        (name,) = conn.execute(
            "SELECT name FROM _sqlite_migrations ORDER BY id DESC LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", (name,))
    return str(name)


def test_a_command_of_a_newer_release_does_not_upgrade_the_database_under_a_running_service(
    tmp_path: Path,
) -> None:
    # The service of the release before runs; a newer `watchbridge` (a pip upgrade, a second
    # container of a newer image) runs a command on its database: upgraded under it, the old
    # service would go on writing what the new release misreads.
    config = write_config(tmp_path, port=free_port())
    database = tmp_path / "watchbridge.db"
    pending = as_an_earlier_release_left_it(database)
    holder = held_by_another_process(database)
    try:
        result = watchbridge("deadletters", "retry", "--all", "--config", str(config))
        with pytest.raises(StoreError, match="a service of an earlier watchbridge is running"):
            Store.open(database)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "a service of an earlier watchbridge is running on this database (pid" in line
    assert f"({pending})" in line and "stop that service and start this version's" in line
    with sqlite3.connect(database) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations")}
    assert pending not in names  # left as the running service knows it


def test_the_service_that_holds_the_lock_upgrades_its_own_database(tmp_path: Path) -> None:
    database = tmp_path / "watchbridge.db"
    pending = as_an_earlier_release_left_it(database)
    with hold(database, time.time()):
        Store.open(database).close()
    with sqlite3.connect(database) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations")}
    assert pending in names


def test_the_running_service_is_said_started_on_the_households_clock(
    time_zone: Callable[[str], None],
) -> None:
    time_zone("Europe/Berlin")
    said = described(Holder(12, "nas", 1_790_000_000.0))
    assert said == " (pid 12 on host nas, started 2026-09-21 16:13:20 CEST)"
