"""`docker stop` (SIGTERM, then SIGKILL 10 s later by Docker's default) while the service waits
for a slow service: the stop ends within moments, and what it was delivering stays queued for
the next start, its attempt not spent."""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tests.fakes.receiver import AlertReceiver
from tests.fakes.trakt import FakeTrakt
from tests.harness import ServiceProcess, free_port
from tests.ingest_samples import plex_scrobble_now
from tests.test_downtime import away_for, generic_sender_setup, wait_for_alerts
from tests.test_webhooks_e2e import post_plex, seeded, service_for, wait_for
from watchbridge.downtime import DOWNTIME_TITLE

# Seconds: the stop took 8.6 before its fix (the signal seen within a second, background work
# told only after the 2 s drain, then waited for up to server.shutdown_timeout, 8 s). Now: the
# delivery's 2 s to get its answer, and the margin of a loaded machine.
QUICK_STOP = 5.0


def _outbox(database: Path) -> list[tuple[str, int]]:
    look = sqlite3.connect(database)
    try:
        return look.execute("SELECT status, attempts FROM outbox").fetchall()
    finally:
        look.close()


def test_a_stop_during_a_delivery_to_a_slow_trakt_ends_promptly_and_keeps_the_play(
    tmp_path: Path, start_fake: Any
) -> None:
    trakt = seeded(start_fake(FakeTrakt()))
    service: ServiceProcess = service_for(tmp_path, trakt)
    answering = trakt.hold_next(route="POST /scrobble/stop")
    service.start()
    try:
        payload = plex_scrobble_now("movie_legacy_imdb_media_scrobble.json")
        assert post_plex(service, payload).status_code == 202
        wait_for(lambda: trakt.count("POST", "/scrobble/stop") == 1)  # its answer held
        stopping = time.monotonic()
        code = service.terminate(timeout=20)
        took = time.monotonic() - stopping
    finally:
        answering.set()
        service.kill()
    printed = service.output()
    assert code in (0, -15), printed
    assert took < QUICK_STOP, f"the stop took {took:.1f} s\n{printed}"
    assert "watchbridge stopped" in printed
    assert "background task did not stop in time" not in printed
    # Acknowledged, cut short on its way: queued again as it was (no attempt spent), for the
    # next start, which looks for it on Trakt first (test_webhooks_e2e's kill -9 covers that).
    assert _outbox(tmp_path / "wb.db") == [("pending", 0)]


class SilentHost:
    """A notification host that takes each connection and request and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", free_port()))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                self.connections.append(self.sock.accept()[0])

    def url(self, read_timeout: float) -> str:
        """An Apprise URL to it, with a read timeout (`rto`) such as a slow host is given."""
        return f"json://127.0.0.1:{self.sock.getsockname()[1]}/hook?rto={read_timeout:g}"

    def close(self) -> None:
        self.sock.close()
        for connection in self.connections:
            connection.close()


# Seconds: the stop took the alert URL's read timeout (30 s here) before its fix, Python's exit
# waiting for Apprise's thread; the packages give a stop 15 s before a kill.
STOP_WITH_AN_ALERT_ON_ITS_WAY = 5.0


def test_a_stop_while_an_alert_waits_on_a_silent_host_ends_promptly_and_keeps_the_alert(
    tmp_path: Path, start_fake: Any
) -> None:
    # SIGINT (Ctrl-C) ends the process as SIGTERM does a container's first process (PID 1,
    # `docker run` without --init): by Python's own exit, which waits for threads still running.
    silent = SilentHost()
    receiver: AlertReceiver = start_fake(AlertReceiver())
    try:
        service = generic_sender_setup(tmp_path, receiver)
        away_for(tmp_path, 7200)  # the start tells the absence: an alert
        config = service.config.read_text()
        service.config.write_text(config.replace(receiver.apprise_url, silent.url(30)))
        service.start()
        try:
            wait_for(lambda: bool(silent.connections))  # the alert on its way, unanswered
            assert service.proc is not None
            stopping = time.monotonic()
            service.proc.send_signal(signal.SIGINT)
            code = service.proc.wait(timeout=40)
            took = time.monotonic() - stopping
        finally:
            service.kill()
        printed = service.output()
    finally:
        silent.close()
    assert code == 130, printed
    assert took < STOP_WITH_AN_ALERT_ON_ITS_WAY, f"the stop took {took:.1f} s\n{printed}"
    assert "watchbridge stopped" in printed
    service.config.write_text(config)  # the host answers again: the next start sends it
    service.start()
    try:
        wait_for_alerts(receiver, 1, timeout=20)
    finally:
        service.terminate()
    assert receiver.titles() == [DOWNTIME_TITLE]
