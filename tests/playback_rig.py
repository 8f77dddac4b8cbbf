"""The real webhook route, store and playback sessions on a loopback port with a hand-moved
clock and no delivery worker: webhook bodies from the reference samples go in, and the outbox
rows watchbridge queued are read back, so a test sees exactly what it decided to send.

Rows stay `pending` unless a newer live state superseded them (status 'done', last_error
'superseded')."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.receiver import FakeClock
from tests.fakes.trakt import CLIENT_ID
from tests.harness import AppThread, free_port
from tests.ingest_samples import sample_json
from watchbridge import webhooks
from watchbridge.app import Runtime, create_app
from watchbridge.config import parse_config
from watchbridge.maintenance import KEEP_DONE, KEEP_SESSIONS
from watchbridge.wiring import build_runtime

SECRET = "playback-secret-123"
HOUR = 3600.0
JELLYFIN_TICKS = 28560000000  # the Jellyfin samples' episode runtime (47.6 min) in .NET ticks

# Sample accounts: Plex owner Account.id 1, Jellyfin/Emby user "alex", Tautulli user_id 27160034.
# Trakt points at a closed port: nothing is delivered, and no worker runs anyway.
CONFIG = """
server: {{webhook_secret: {secret}}}
storage: {{path: {db}}}
services:
  trakt: {{client_id: {client_id}, api_url: "http://127.0.0.1:{dead}", auth_url: "http://127.0.0.1:{dead}"}}
profiles:
  me:
    users: {{plex: ["1"], jellyfin: [alex], emby: [alex], tautulli: ["27160034"], generic: [alex]}}
    accounts: {{trakt: {{}}}}
"""


class Rig:
    def __init__(self, thread: AppThread, clock: FakeClock, db: Path, runtime: Runtime) -> None:
        self.thread = thread
        self.clock = clock
        self.db = db
        self.runtime = runtime

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def post(self, source: str, body: dict[str, Any]) -> None:
        """POST `body` as `source` sends it (Plex: multipart); it must be accepted."""
        content = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        if source == "plex":
            boundary = "playbackboundary"
            content = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\n'
                "Content-Type: application/json\r\n\r\n".encode()
                + content
                + f"\r\n--{boundary}--\r\n".encode()
            )
            headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        response = httpx.post(
            f"{self.thread.url}/webhooks/{source}/{SECRET}", content=content, headers=headers
        )
        assert response.status_code in (200, 202), response.text

    def housekeeping(self) -> None:
        """What the hourly maintenance does to old rows and idle sessions, at the rig's time:
        through the service's own store, as the maintenance does."""
        self.runtime.store.prune(self.clock(), KEEP_DONE, KEEP_SESSIONS)

    def rows(self) -> list[dict[str, Any]]:
        """Every outbox row queued so far, oldest first (whatever became of it since)."""
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(
                "SELECT id, action, payload, status, last_error, idempotency_key FROM outbox"
                " ORDER BY id"
            ).fetchall()
        return [dict(r) | {"payload": json.loads(r["payload"])} for r in found]

    def plays(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if r["action"] == "play"]

    def to_send(self) -> list[str]:
        """The live states still to go out (not superseded), oldest first."""
        rows = self.rows()
        return [r["payload"]["scrobble_action"] for r in rows if _live(r) and not _superseded(r)]

    def live(self) -> list[str]:
        """Every live state queued, in order: 'start'/'pause', and 'play' for completions."""
        return [r["payload"]["scrobble_action"] if _live(r) else "play" for r in self.rows()]


def _live(row: dict[str, Any]) -> bool:
    return bool(row["action"] == "watching")


def _superseded(row: dict[str, Any]) -> bool:
    return bool(row["last_error"] == "superseded")


@contextmanager
def running_rig(
    tmp_path: Path, clock: FakeClock | None = None, uptime: FakeClock | None = None
) -> Iterator[Rig]:
    """The rig, on `clock` (else a FakeClock of its own); `uptime`: the machine's, else the
    clock is its own uptime (it never steps)."""
    db = tmp_path / "wb.db"
    config = parse_config(
        CONFIG.format(secret=SECRET, db=db, client_id=CLIENT_ID, dead=free_port()),
        Path("watchbridge.yaml"),
        {},
    )
    clock = FakeClock() if clock is None else clock
    runtime = build_runtime(config, clock=clock, uptime=uptime)
    app = create_app(runtime, tasks=[], extra_routes=[*webhooks.ROUTES])
    with AppThread(app) as thread:
        yield Rig(thread, clock, db, runtime)


def plex(name: str, **metadata: Any) -> dict[str, Any]:
    """A Plex sample payload with Metadata fields replaced."""
    body = copy.deepcopy(sample_json("plex", name))
    body["Metadata"].update(metadata)
    return body


def jellyfin(name: str, **fields: Any) -> dict[str, Any]:
    """A Jellyfin sample payload with fields replaced (None removes one)."""
    body = copy.deepcopy(sample_json("jellyfin", name))
    for key, value in fields.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def jellyfin_progress(percent: float, paused: bool = False, **fields: Any) -> dict[str, Any]:
    """A Jellyfin PlaybackProgress report at `percent` of the sample episode."""
    position = int(JELLYFIN_TICKS * percent / 100)
    return jellyfin(
        "playback_progress_episode_paused.json",
        IsPaused=paused,
        PlaybackPositionTicks=position,
        **fields,
    )


def jellyfin_stop(percent: float, **fields: Any) -> dict[str, Any]:
    """A Jellyfin PlaybackStop at `percent`, not played to completion."""
    position = int(JELLYFIN_TICKS * percent / 100)
    return jellyfin(
        "playback_stop_episode_completed.json",
        PlayedToCompletion=False,
        PlaybackPositionTicks=position,
        **fields,
    )


def jellyfin_toggle_played(played: bool) -> dict[str, Any]:
    """A UserDataSaved/TogglePlayed for the sample episode: like every manual mark, no device."""
    return jellyfin(
        "playback_stop_episode_completed.json",
        NotificationType="UserDataSaved",
        SaveReason="TogglePlayed",
        Played=played,
        PlayedToCompletion=None,
        IsPaused=None,
        PlaybackPositionTicks=0,
        LastPlayedDate="2025-03-14T20:48:02.8817769Z",
        DeviceId=None,
        DeviceName=None,
        ClientName=None,
        Id=None,
    )


def emby(name: str) -> dict[str, Any]:
    return copy.deepcopy(sample_json("emby", name))


def emby_marked_played(play_count: int, last_played: str) -> dict[str, Any]:
    """Emby's item.markplayed of the sample episode (no session: a mark names no device),
    with its UserData as Emby sends it: the count and the last play's date after the mark."""
    body = emby("playback_stop_episode_completed.json")
    body["Event"] = "item.markplayed"
    del body["Session"], body["PlaybackInfo"]
    body["Item"]["UserData"] = {"PlayCount": play_count, "LastPlayedDate": last_played}
    return body


def tautulli(name: str) -> dict[str, Any]:
    return copy.deepcopy(sample_json("tautulli", name))
