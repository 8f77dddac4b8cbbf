"""When each webhook source and server last had a webhook accepted: status page, /api/status,
`watchbridge status` and /metrics, through restarts and the pruning of the events."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx

from tests.fakes.receiver import FakeClock
from tests.harness import AppThread
from tests.ingest_samples import sample_json
from tests.test_cli import run
from tests.test_webhooks_e2e import plex_multipart
from watchbridge.config import Config, parse_config
from watchbridge.lastwebhooks import SERVERS_KEPT, LastWebhook, servers_shown
from watchbridge.maintenance import housekeeping
from watchbridge.store import Store
from watchbridge.wiring import build_app, build_runtime

SECRET = "last-webhook-secret"
PLEX_SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"
DAY = 86400.0


def config_file(directory: Path) -> tuple[Path, Config]:
    text = (
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {directory / 'wb.db'}}}\n"
        "profiles: {me: {default: true}}\n"
    )
    path = directory / "watchbridge.yaml"
    path.write_text(text)
    return path, parse_config(text, path, {})


def post_plex_and_generic(url: str) -> None:
    payload = sample_json("plex", "movie_media_scrobble.json")
    payload["Server"] = {"title": "Living room", "uuid": PLEX_SERVER}
    body, content_type = plex_multipart(payload, thumb=False)
    plex = httpx.post(
        f"{url}/webhooks/plex/{SECRET}", content=body, headers={"content-type": content_type}
    )
    assert plex.status_code == 202, plex.text
    generic = {
        "event": "start",
        "user": "me",
        "item": {"type": "movie", "ids": {"imdb": "tt0113277"}},
    }
    answer = httpx.post(f"{url}/webhooks/generic/{SECRET}", json=generic)
    assert answer.status_code == 202, answer.text


def last_webhooks(url: str) -> dict[tuple[str, str], float]:
    found = httpx.get(f"{url}/api/status").json()["last_webhooks"]
    return {(one["source"], one["server"]): one["at"] for one in found}


def server_names(url: str) -> dict[tuple[str, str], str]:
    found = httpx.get(f"{url}/api/status").json()["last_webhooks"]
    return {(one["source"], one["server"]): one["server_name"] for one in found}


def test_each_source_and_server_shows_its_last_webhook_through_restarts_and_pruning(
    tmp_path: Path,
) -> None:
    path, config = config_file(tmp_path)
    with AppThread(build_app(build_runtime(config))) as app:
        assert "No webhook accepted yet." in httpx.get(app.url).text
        before = time.time()
        post_plex_and_generic(app.url)
        seen = last_webhooks(app.url)
        assert set(seen) == {("plex", PLEX_SERVER), ("generic", "")}
        assert all(before <= at <= time.time() for at in seen.values())
        page = httpx.get(app.url).text
        # The server by its own name (Plex's Server.title), not its 40-digit machine id.
        assert "last webhook" in page and "<td>Living room</td>" in page
        assert server_names(app.url) == {("plex", PLEX_SERVER): "Living room", ("generic", ""): ""}
        metrics = httpx.get(f"{app.url}/metrics").text
        gauge = "watchbridge_webhook_last_received_timestamp_seconds"
        samples = {
            line.split()[0]: float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith(gauge + "{")
        }
        assert samples == {  # a source that never sent one has no sample
            f'{gauge}{{source="generic"}}': seen["generic", ""],
            f'{gauge}{{source="plex"}}': seen["plex", PLEX_SERVER],
        }

    # A month later the hourly prune has deleted every event: their last times stay.
    store = Store.open(config.storage.path)
    try:
        store.prune(time.time() + 30 * DAY, keep_done=7 * DAY, keep_sessions=DAY)
    finally:
        store.close()
    with sqlite3.connect(config.storage.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)

    with AppThread(build_app(build_runtime(config))) as app:
        assert last_webhooks(app.url) == seen
        assert server_names(app.url)["plex", PLEX_SERVER] == "Living room"
    shown = run("status", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "last webhook:\n" in shown.stdout
    assert "  plex from Living room: 20" in shown.stdout
    assert f"plex from {PLEX_SERVER}" not in shown.stdout
    assert "  generic: 20" in shown.stdout


def test_a_later_prune_keeps_the_latest_time_not_the_one_it_kept_before(tmp_path: Path) -> None:
    _, config = config_file(tmp_path)
    store = Store.open(config.storage.path)
    try:
        for at in (1000.0, 2000.0):
            store.record_event(source="plex", kind="play", payload={"server": "s"}, now=at)
            store.prune(at + 10, keep_done=1, keep_sessions=1)
        store.record_event(source="plex", kind="play", payload={"server": "s"}, now=1500.0)
        store.prune(3000.0, keep_done=1, keep_sessions=1)  # an older one pruned last
        assert [(w.source, w.server, w.at) for w in store.last_webhooks()] == [("plex", "s", 2000)]
    finally:
        store.close()


def test_status_shows_a_server_name_with_controls_escaped_on_its_own_row(tmp_path: Path) -> None:
    # A server's name is the media server's text: a newline in it would forge a row of
    # `watchbridge status`, an escape sequence would drive the terminal.
    path, config = config_file(tmp_path)
    store = Store.open(config.storage.path)
    try:
        store.record_event(
            source="generic", kind="play", payload={"server": "Den\x1b[2J\nqueue: 0"}, now=1000.0
        )
    finally:
        store.close()
    shown = run("status", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "  generic from Den\\x1b[2J\\nqueue: 0: 1970-01-01 00:16:40 UTC\n" in shown.stdout
    assert "\x1b" not in shown.stdout


def post_generic(url: str, server: str) -> None:
    generic = {
        "event": "played",
        "user": "me",
        "server": server,
        "item": {"type": "movie", "ids": {"imdb": "tt0113277"}},
    }
    answer = httpx.post(f"{url}/webhooks/generic/{SECRET}", json=generic)
    assert answer.status_code == 202, answer.text


def test_a_sender_naming_a_new_server_in_each_webhook_keeps_the_servers_bounded(
    tmp_path: Path,
) -> None:
    # A script of the user's own puts a session id where the server's name goes: a new
    # `server` each time. The household's Plex server and Kodi box must still show.
    path, config = config_file(tmp_path)
    clock = FakeClock(time.time() - 10 * DAY)
    with AppThread(build_app(build_runtime(config, clock=clock))) as app:
        post_plex_and_generic(app.url)
        for n in range(3 * SERVERS_KEPT):
            clock.advance(60)
            post_generic(app.url, f"session-{n}")
        clock.advance(60)
        post_generic(app.url, "kodi")
        in_memory = last_webhooks(app.url)
    assert {("plex", PLEX_SERVER), ("generic", "kodi")} <= set(in_memory)
    assert sum(source == "generic" for source, _ in in_memory) == SERVERS_KEPT

    async def housekeeping_a_week_later() -> None:
        runtime = build_runtime(config, clock=lambda: clock() + 8 * DAY)
        runtime.open()
        try:
            await housekeeping(runtime)
        finally:
            runtime.close()

    asyncio.run(housekeeping_a_week_later())
    with sqlite3.connect(config.storage.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        kept = dict(conn.execute("SELECT source, COUNT(*) FROM webhooks_last_seen GROUP BY 1"))
    assert kept == {"generic": SERVERS_KEPT, "plex": 1}

    shown = run("status", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "  plex from Living room: " in shown.stdout
    assert "  generic from kodi: " in shown.stdout
    assert shown.stdout.count("  generic from ") == SERVERS_KEPT
    with AppThread(build_app(build_runtime(config))) as app:
        assert last_webhooks(app.url) == in_memory


def test_two_servers_of_one_name_are_told_apart_by_their_ids() -> None:
    # A new Plex server is named after its machine ("raspberrypi"): a household's and a
    # friend's may share a name; a server whose webhooks give none is shown by its id.
    last = [
        LastWebhook("plex", "aaa", 3.0, "raspberrypi"),
        LastWebhook("plex", "bbb", 2.0, "raspberrypi"),
        LastWebhook("plex", "ccc", 1.0, "Home"),
        LastWebhook("jellyfin", "ddd", 1.0, "Home"),
        LastWebhook("tautulli", "eee", 1.0),
    ]
    assert servers_shown(last) == {
        ("plex", "aaa"): "raspberrypi (aaa)",
        ("plex", "bbb"): "raspberrypi (bbb)",
        ("plex", "ccc"): "Home",
        ("jellyfin", "ddd"): "Home",
        ("tautulli", "eee"): "eee",
    }
