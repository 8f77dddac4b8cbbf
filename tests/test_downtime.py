"""Plays finished while the service was down: told at the next start, for sources no link
reads back."""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import AppThread, ServiceProcess, free_port, put_back, write_config
from tests.playback_rig import running_rig
from watchbridge.clocksteps import Reading
from watchbridge.config import load_config, parse_config
from watchbridge.downtime import (
    DOWNTIME_TITLE,
    RESTORED_TITLE,
    downtime_notice,
    unread_sources,
)
from watchbridge.store import Store
from watchbridge.wiring import build_app, build_runtime

SECRET = "downtime-secret-1234"
JELLYFIN_AND_PLEX = """
services: {plex: {url: 'http://plex:32400', token: t}, serializd: {}}
profiles:
  me:
    users: {jellyfin: [alex], plex: ['1']}
    accounts: {plex: {}, serializd: {email: a@b.c, password: pw}}
"""


def test_sources_a_link_reads_back_are_not_named() -> None:
    seen = {"jellyfin", "plex", "tautulli"}
    config = parse_config(JELLYFIN_AND_PLEX, Path("watchbridge.yaml"), {})
    assert unread_sources(config, seen) == ["jellyfin", "plex", "tautulli"]
    linked = JELLYFIN_AND_PLEX + "links: {plex-serializd: {services: [plex, serializd]}}\n"
    config = parse_config(linked, Path("watchbridge.yaml"), {})
    assert unread_sources(config, seen) == ["jellyfin"]


def test_jellyfin_caught_up_with_its_api_key_is_not_named() -> None:
    seen = {"jellyfin", "emby"}
    servers = "services: {jellyfin: {url: 'http://jf:8096', api_key: k}, emby: {url: 'http://e'}, "
    with_key = JELLYFIN_AND_PLEX.replace("services: {", servers, 1)
    config = parse_config(with_key, Path("watchbridge.yaml"), {})
    assert unread_sources(config, seen) == ["emby"]  # no API key: not read
    off = with_key.replace("api_key: k", "api_key: k, catch_up: false")
    config = parse_config(off, Path("watchbridge.yaml"), {})
    assert unread_sources(config, seen) == ["emby", "jellyfin"]
    # A profile taking every webhook lists no account for the catch-up to read.
    unlisted = with_key.replace("users: {jellyfin: [alex], plex: ['1']}", "default: true")
    config = parse_config(unlisted, Path("watchbridge.yaml"), {})
    assert unread_sources(config, seen) == ["emby", "jellyfin"]


def test_a_restart_for_an_update_is_not_worth_a_word() -> None:
    assert downtime_notice(1000.0, 1060.0, ["jellyfin"]) is None
    assert downtime_notice(None, 1060.0, ["jellyfin"]) is None  # a first start
    assert downtime_notice(1000.0, 99_000.0, []) is None  # every source is read back


def test_an_absence_names_its_length_and_what_to_do() -> None:
    notice = downtime_notice(0.0, 3 * 3600.0, ["jellyfin", "plex"])
    assert notice is not None
    assert "about 3 h (since 1970-01-01 00:00 UTC)" in notice
    assert "on jellyfin, plex reached no service" in notice
    assert "mark those items watched again there" in notice
    # Jellyfin and Emby marked what finished played already: its checkmark would unmark it.
    assert "mark it unplayed, then played" in notice


def generic_sender_setup(tmp_path: Path, receiver: AlertReceiver) -> ServiceProcess:
    """The service for one person whose plays come by generic webhook (no link reads them
    back), alerting to `receiver`, after one play: its database knows the source. That first
    run is the whole service built in this process (a start as a child process costs seconds
    of imports, several under load); the starts the tests tell of are real processes."""
    port = free_port()
    path = write_config(
        tmp_path,
        f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
        "profiles: {me: {users: {generic: [alex]}}}\n",
        port,
    )
    text = path.read_text().replace("server:\n", f"server:\n  webhook_secret: {SECRET}\n")
    path.write_text(text)
    play = {
        "event": "stop",
        "user": "alex",
        "item": {"type": "movie", "ids": {"imdb": "tt0113277"}},
    }
    secret = {"X-Webhook-Secret": SECRET}
    runtime = build_runtime(load_config(path))
    with AppThread(build_app(runtime)) as first:
        assert httpx.post(f"{first.url}/webhooks/generic", json=play, headers=secret).is_success
    assert runtime.downtime is None  # a first start tells nothing
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.alive_at() is not None  # noted at its stop: `away_for` moves it back
    return ServiceProcess(path, port)


class _Kept(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class StartedInThread:
    url: str
    logged: list[str]  # its log's messages, to its stop

    def output(self) -> str:
        return "\n".join(self.logged)


@contextmanager
def started_in_thread(service: ServiceProcess) -> Iterator[StartedInThread]:
    """A start of `service`'s config as the whole service built in this process, its log
    kept, stopped at the end: for starts no test signals nor kills (a child process's start
    costs seconds of imports, several more under load)."""
    logged: list[str] = []
    kept, ours = _Kept(logged), logging.getLogger("watchbridge")
    level = ours.level
    ours.setLevel(logging.INFO)  # as `serve` logs: "watchbridge started" and the like
    ours.addHandler(kept)
    try:
        with AppThread(build_app(build_runtime(load_config(service.config)))) as thread:
            yield StartedInThread(thread.url, logged)
    finally:
        ours.removeHandler(kept)
        ours.setLevel(level)


def away_for(tmp_path: Path, seconds: float) -> None:
    """As if the service stopped (crashed) `seconds` ago."""
    with sqlite3.connect(tmp_path / "watchbridge.db") as db:
        db.execute(
            "UPDATE settings SET value = ? WHERE name = 'alive_at'", (time.time() - seconds,)
        )


def wait_for_alerts(receiver: AlertReceiver, count: int, timeout: float = 30.0) -> None:
    """Wait until the receiver holds `count` alerts; fail, saying which came, if it does not."""
    deadline = time.monotonic() + timeout
    while len(receiver.titles()) < count:
        assert time.monotonic() < deadline, (
            f"{count} alert(s) awaited, {len(receiver.titles())} came in {timeout:.0f} s: "
            f"{receiver.titles()}"
        )
        time.sleep(0.05)


def test_a_start_after_hours_away_says_so_in_the_log_the_status_and_an_alert(
    tmp_path: Path, start_fake: Any
) -> None:
    receiver = start_fake(AlertReceiver())
    service = generic_sender_setup(tmp_path, receiver)
    away_for(tmp_path, 7200)
    with started_in_thread(service) as started:
        status = httpx.get(f"{started.url}/api/status").json()
        page = httpx.get(started.url).text
        wait_for_alerts(receiver, 1)
    assert receiver.titles() == [DOWNTIME_TITLE]
    assert "watchbridge was not running for about 2 h" in started.output()
    assert status["downtime"].startswith("watchbridge was not running for about 2 h")
    assert "on generic reached no service" in page


def test_each_absence_sends_its_own_alert(tmp_path: Path, start_fake: Any) -> None:
    # Two crashes an hour apart: the second absence lost plays too, within any throttle.
    receiver = start_fake(AlertReceiver())
    service = generic_sender_setup(tmp_path, receiver)
    for told, away in enumerate((7200, 3600), start=1):
        away_for(tmp_path, away)
        with started_in_thread(service):
            wait_for_alerts(receiver, told)
    assert receiver.titles() == [DOWNTIME_TITLE, DOWNTIME_TITLE]


def copy_put_back_under(service: ServiceProcess, tmp_path: Path) -> None:
    """A backup copy taken 2023-11-14 22:13 UTC put back in place of the stopped `service`'s
    database, three days after it stopped. Started as a process after that, not in this one:
    here SQLite then found the file put back "disk I/O error" (cause not found)."""
    database = tmp_path / "watchbridge.db"
    with Store.open(database) as store:
        store.backup_to(tmp_path / "nightly.db")
    away_for(tmp_path, 3 * 86400)
    copy = sqlite3.connect(tmp_path / "nightly.db")
    with copy:
        copy.execute("UPDATE settings SET value = 1700000000 WHERE name = 'copied_at'")
        # As in any copy, the service noted itself alive before the copy was taken.
        copy.execute(
            "INSERT OR REPLACE INTO settings (name, value, updated_at)"
            " VALUES ('alive_at', '1699999000.0', 1699999000)"
        )
    copy.close()  # its log into the file
    put_back(tmp_path / "nightly.db", database)


def test_a_start_on_a_copy_put_back_says_so_once_not_that_it_was_away(
    tmp_path: Path, start_fake: Any
) -> None:
    # The copy's alive note is as old as the copy: "was not running ... mark those items
    # watched again" would have the user send twice what went out after it was taken.
    receiver = start_fake(AlertReceiver())
    service = generic_sender_setup(tmp_path, receiver)
    copy_put_back_under(service, tmp_path)
    service.start()
    try:
        status = httpx.get(f"{service.url}/api/status").json()
        wait_for_alerts(receiver, 1)
    finally:
        service.terminate()
    assert receiver.titles() == [RESTORED_TITLE]
    told = "the database is a backup copy taken 2023-11-14 22:13 UTC, put back in its place"
    output = service.output()
    assert told in output and "was not running" not in output
    assert status["downtime"].startswith(told)
    service.start()  # told once
    service.terminate()
    assert told not in service.output()
    assert receiver.titles() == [RESTORED_TITLE]


# What `watchbridge sync` does first on a database: tell a restore, if it is the one to.
SYNC_TELLS_THE_RESTORE = """
import sys
import threading
from pathlib import Path
from watchbridge.cli import _restore_told_once
from watchbridge.config import load_config
from watchbridge.wiring import build_runtime
runtime = build_runtime(load_config(Path(sys.argv[1])))
runtime.open()
try:
    _restore_told_once(runtime)
finally:
    runtime.close()
"""


def test_a_start_after_a_sync_told_the_restore_says_nothing_of_it_nor_of_an_absence(
    tmp_path: Path, start_fake: Any
) -> None:
    # A `watchbridge sync` from cron reached the copy put back a moment before the service
    # started (or at the same moment, and took it first): the sync told the restore. The
    # service tells it no second time, nor the copy's old alive note as an absence.
    receiver = start_fake(AlertReceiver())
    service = generic_sender_setup(tmp_path, receiver)
    copy_put_back_under(service, tmp_path)
    told = subprocess.run(  # in a process of its own, as cron runs it
        [sys.executable, "-c", SYNC_TELLS_THE_RESTORE, str(service.config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert told.returncode == 0, told.stderr
    assert "the database is a backup copy" in told.stderr
    assert receiver.titles() == [RESTORED_TITLE]
    service.start()
    try:
        status = httpx.get(f"{service.url}/api/status").json()
        time.sleep(1.0)  # an alert of the start would be on its way by now
    finally:
        service.terminate()
    output = service.output()
    assert "the database is a backup copy" not in output
    assert "was not running" not in output
    assert status["downtime"] is None
    assert receiver.titles() == [RESTORED_TITLE]


def test_the_absence_alert_a_kill_cut_off_mid_send_is_sent_by_the_next_start(
    tmp_path: Path, start_fake: Any
) -> None:
    # The start tells an absence, once (the next start finds the service alive moments ago);
    # the notification host hangs before it takes the message, and the container is killed
    # (docker's SIGKILL after a stop's 10 s). The next start sends it: maybe twice, never lost.
    receiver = start_fake(AlertReceiver())
    service = generic_sender_setup(tmp_path, receiver)
    away_for(tmp_path, 7200)
    on_its_way, let_go = threading.Event(), threading.Event()
    receiver.refuse_next(lambda: (on_its_way.set(), let_go.wait(60)))
    service.start()
    try:
        assert on_its_way.wait(30), "the absence alert was not sent"
        service.kill()  # SIGKILL, mid-send
    finally:
        let_go.set()  # its refusal goes to no one
    assert "was not running for about 2 h" in service.output()
    assert receiver.titles() == []
    with started_in_thread(service) as started:
        wait_for_alerts(receiver, 1, timeout=20)
    assert receiver.titles() == [DOWNTIME_TITLE]
    assert "was not running" not in started.output()  # the kill was moments ago


def test_a_kill_while_a_stop_drains_its_connections_is_no_absence(
    tmp_path: Path, start_fake: Any
) -> None:
    # docker stop: SIGTERM, then SIGKILL 10 s later, which may land while open connections
    # drain (2 s) or background work ends (server.shutdown_timeout). The service noted itself
    # alive up to ALIVE_EVERY (5 min) before; a restart at once must not say it was away.
    receiver = start_fake(AlertReceiver())
    service = generic_sender_setup(tmp_path, receiver)
    service.start()
    away_for(tmp_path, 240)  # its last note of being alive, 4 minutes ago
    uploading = socket.create_connection(("127.0.0.1", service.port))  # a webhook's body
    try:
        uploading.sendall(
            b"POST /webhooks/generic HTTP/1.1\r\nHost: watchbridge\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            b"X-Webhook-Secret: " + SECRET.encode() + b"\r\n\r\n{"
        )
        time.sleep(0.5)  # its head read: the drain waits for it
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        service.wait_for_output("Waiting for connections to close")
        time.sleep(0.5)
        service.kill()  # SIGKILL, mid-drain
    finally:
        uploading.close()
    assert "watchbridge stopped" not in "".join(service.seen)
    with started_in_thread(service) as started:
        status = httpx.get(f"{started.url}/api/status").json()
    assert "watchbridge started" in started.output()
    assert "was not running" not in started.output()
    assert status["downtime"] is None
    assert receiver.titles() == []


# --------------------------------------------------------------------------- the clock moved
# between a stop and a start: the uptime (clocksteps) times the absence on one boot


def restarted_after(tmp_path: Path, up: float, clock_set: float) -> str | None:
    """The downtime a start tells `up` seconds (of uptime) after a service stopped on the same
    boot (its plays sent by a generic webhook), its clock set `clock_set` seconds forward
    (back when negative) meanwhile; in process, on hand-moved clocks."""
    clock, uptime = FakeClock(1_700_000_000.0), FakeClock(5_000.0)
    with running_rig(tmp_path, clock, uptime) as rig:
        rig.post("generic", {"event": "played", "user": "alex", "item": HEAT})
    uptime.advance(up)
    clock.advance(up + clock_set)
    with running_rig(tmp_path, clock, uptime) as rig:
        return rig.runtime.downtime


HEAT = {"type": "movie", "ids": {"imdb": "tt0113277"}}
DAY = 86400.0


def test_a_clock_fixed_before_a_restart_is_no_absence_of_days(tmp_path: Path) -> None:
    # The clock was 3 days behind (a board booted with an old saved time, no time sync
    # reached); fixed by hand, and the service restarted a minute later.
    assert restarted_after(tmp_path, 60, clock_set=3 * DAY) is None


def test_an_absence_hidden_by_a_clock_set_back_is_told_timed_by_the_uptime(
    tmp_path: Path,
) -> None:
    # The clock ran a day fast; the service was down 3 hours, and the clock set right meanwhile.
    notice = restarted_after(tmp_path, 3 * 3600, clock_set=-DAY)
    assert notice is not None
    assert notice.startswith("watchbridge was not running for about 3 h (since ")
    assert "timed by the uptime: the clock was set meanwhile" in notice


def test_a_note_the_clocks_cannot_time_across_a_reboot_claims_no_length() -> None:
    now = Reading(1_700_000_000.0, 90.0, "boot-2")
    # Noted by a clock never set (a board booted at 1970), then a reboot.
    never_set = downtime_notice(Reading(3600.0, 3000.0, "boot-1"), now, ["jellyfin"])
    assert never_set is not None
    assert "not running for a time the clocks cannot tell" in never_set
    assert "days" not in never_set
    # Noted after this boot began, by a clock that ran ahead.
    ahead = downtime_notice(Reading(1_700_000_600.0, 3000.0, "boot-1"), now, ["jellyfin"])
    assert ahead is not None and "a time the clocks cannot tell" in ahead
    # Across a reboot, clocks that agree with it time it as they say.
    rebooted = downtime_notice(Reading(1_699_990_000.0, 3000.0, "boot-1"), now, ["jellyfin"])
    assert rebooted is not None and "for about 2 h (since 2023-11-14 19:26 UTC)" in rebooted


def test_the_time_an_absence_began_is_told_on_the_households_clock(
    time_zone: Callable[[str], None],
) -> None:
    # The status page names its zone once; this notice on it said UTC.
    time_zone("America/New_York")
    notice = downtime_notice(1_790_000_000.0, 1_790_000_000.0 + 3 * 3600.0, ["plex"])
    assert notice is not None and "(since 2026-09-21 10:13 EDT)" in notice
