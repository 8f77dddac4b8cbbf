"""`docker stop` (SIGTERM, then SIGKILL 10 s later by Docker's default) while the service waits
for a slow service: the stop ends within moments, and what it was delivering stays queued for
the next start, its attempt not spent."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from tests.fakes.trakt import FakeTrakt
from tests.harness import ServiceProcess
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import post_plex, seeded, service_for, wait_for

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
        payload = sample_json("plex", "movie_legacy_imdb_media_scrobble.json")
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
