"""End to end: webhooks posted to the running service, asserting what the fake Trakt holds."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.fakes.base import FakeServer, running
from tests.fakes.jellyfin import API_KEY as JELLYFIN_KEY
from tests.fakes.jellyfin import sample_server
from tests.fakes.plex import TOKEN as PLEX_TOKEN
from tests.fakes.plex import FakePlex
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE as SERIALIZD_USER
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso
from tests.harness import ServiceProcess, free_port, nothing_waits, sign_in_trakt
from tests.ingest_samples import plex_scrobble_now, sample_json
from tests.test_link_anilist import a_zone_where_it_is_morning
from tests.test_plex_enrichment import add_baki_hanma
from watchbridge.store import Store

SECRET = "hook-secret-123"
THUMB = bytes(range(256)) * 120  # a 30 KB poster, as Plex attaches to play and rate


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def delivered_all(service: ServiceProcess) -> bool:
    """Whether every delivery the service's webhooks queued has been made (or given up): a
    webhook's 202 comes once its outbox rows are committed, so after it, nothing it queued can
    still reach a service. A wait on this, not a sleep, for "nothing more was sent"."""
    return nothing_waits(service.config.parent / "wb.db")


def plex_multipart(payload: dict[str, Any] | bytes, thumb: bool = True) -> tuple[bytes, str]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    boundary = "wbboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\n'
        f"Content-Type: application/json\r\n\r\n".encode()
        + raw
        + b"\r\n"
    ]
    if thumb:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="thumb"; filename="t.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + THUMB
            + b"\r\n"
        )
    return b"".join(
        parts
    ) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def seeded(fake: FakeTrakt) -> FakeTrakt:
    fake.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    fake.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    breaking = fake.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    for n in range(1, 17):
        fake.add_episode(breaking, 5, n, tvdb=4000000 + n)
    return fake


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return seeded(fake)


def service_for(
    tmp_path: Path, trakt: FakeTrakt, extra: str = "", storage: str = ""
) -> ServiceProcess:
    port = free_port()
    config = tmp_path / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}{storage}}}
delivery: {{retry_after: 1s}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me:
    users: {{plex: ["1"], jellyfin: [alice], emby: [alice], tautulli: [alex], generic: [alice]}}
    accounts: {{trakt: {{}}}}
{extra}""",
        encoding="utf-8",
    )
    store = Store.open(tmp_path / "wb.db")
    sign_in_trakt(store, trakt, "me", now=time.time())
    store.close()
    return ServiceProcess(config, port)


@pytest.fixture
def service(tmp_path: Path, trakt: FakeTrakt) -> Iterator[ServiceProcess]:
    proc = service_for(tmp_path, trakt).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, FakeTrakt]]:
    """One service and its Trakt, started once, for the tests whose webhooks are refused or
    ignored: none of them may reach Trakt, so each one's check that Trakt saw nothing covers
    them all. Tests that count outcomes or send something deliverable get their own."""
    with running(FakeTrakt()) as fake:
        proc = service_for(tmp_path_factory.mktemp("quiet"), seeded(fake)).start()
        try:
            yield proc, fake
        finally:
            proc.kill()


@pytest.fixture
def quiet_service(quiet: tuple[ServiceProcess, FakeTrakt]) -> ServiceProcess:
    return quiet[0]


@pytest.fixture
def quiet_trakt(quiet: tuple[ServiceProcess, FakeTrakt]) -> FakeTrakt:
    return quiet[1]


def post_plex(service: ServiceProcess, payload: dict[str, Any] | bytes) -> httpx.Response:
    body, content_type = plex_multipart(payload)
    return httpx.post(
        f"{service.url}/webhooks/plex/{SECRET}",
        content=body,
        headers={"content-type": content_type},
    )


def titles(trakt: FakeTrakt) -> list[str]:
    return [h.item.title for h in trakt.history()]


def test_plex_movie_scrobble_lands_in_history_once(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    payload = sample_json("plex", "movie_legacy_imdb_media_scrobble.json")
    assert post_plex(service, payload).status_code == 202
    wait_for(lambda: titles(trakt) == ["Heat"])
    stop = dict(payload, event="media.stop")
    assert post_plex(service, stop).status_code == 202
    wait_for(lambda: delivered_all(service))
    assert titles(trakt) == ["Heat"]


def test_a_clean_stop_leaves_a_backup_copy_holding_the_last_webhook(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    service = service_for(tmp_path, trakt)
    service.options = ["--backup-on-stop"]
    service.start()
    try:
        payload = sample_json("plex", "movie_legacy_imdb_media_scrobble.json")
        assert post_plex(service, payload).status_code == 202
        assert service.terminate() in (0, -15)
    finally:
        service.kill()
    assert "backup copy written" in service.output()
    copy = sqlite3.connect(tmp_path / "wb.db.backup")
    try:
        assert copy.execute("SELECT kind FROM events").fetchall() == [("stop",)]
    finally:
        copy.close()
    assert (tmp_path / "wb.db.backup").stat().st_mode & 0o777 == 0o600


def _damage_pages_nothing_reads_before_the_stop(database: Path) -> None:
    """Overwrite part of a table's page in the file, as a failing SD card does: the file still
    opens, and only a read of that table (or a check) finds the damage."""
    look = sqlite3.connect(database)
    try:
        look.execute("CREATE TABLE filler(x TEXT)")
        look.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
        look.commit()
        look.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = look.execute(
            "SELECT pageno FROM dbstat WHERE name = 'filler' AND pagetype = 'leaf'"
        ).fetchall()
        size = look.execute("PRAGMA page_size").fetchone()[0]
    finally:
        look.close()
    with database.open("r+b") as file:
        file.seek((pages[len(pages) // 2][0] - 1) * size)
        file.write(b"\xff" * 64)


def _sound(database: Path) -> bool:
    look = sqlite3.connect(database)
    try:
        return look.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    except sqlite3.DatabaseError:  # "database disk image is malformed"
        return False
    finally:
        look.close()


def test_a_stop_keeps_the_backup_copy_when_the_database_is_damaged(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # README: a damaged database is stopped, moved aside, and the next start begins from its
    # backup copy. The stop must not have put a copy of the damage in that copy's place.
    service = service_for(tmp_path, trakt)
    with Store.open(tmp_path / "wb.db") as store:
        store.backup_to(tmp_path / "wb.db.backup")
    _damage_pages_nothing_reads_before_the_stop(tmp_path / "wb.db")
    assert _sound(tmp_path / "wb.db.backup") and not _sound(tmp_path / "wb.db")
    service.options = ["--backup-on-stop"]
    service.start()
    try:
        assert service.terminate() in (0, -15)
    finally:
        service.kill()
    assert _sound(tmp_path / "wb.db.backup")  # the copy from before the damage, kept
    told = service.output()
    assert "no backup copy at stop" in told and "is damaged" in told
    assert not (tmp_path / ".wb.db.backup.partial").exists()


def test_without_backup_on_stop_a_stop_writes_no_copy(
    service: ServiceProcess, tmp_path: Path
) -> None:
    assert service.terminate() in (0, -15)
    assert not (tmp_path / "wb.db.backup").exists()


def test_plex_episode_scrobble_lands_by_show_and_numbers(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    assert (
        post_plex(service, sample_json("plex", "episode_legacy_media_scrobble.json")).status_code
        == 202
    )
    wait_for(lambda: len(trakt.history()) == 1)
    entry = trakt.history()[0]
    assert (entry.item.season, entry.item.number) == (5, 16)


def test_plex_play_shows_as_watching(service: ServiceProcess, trakt: FakeTrakt) -> None:
    assert post_plex(service, sample_json("plex", "movie_media_play.json")).status_code == 202
    wait_for(lambda: trakt.watching() is not None)


def test_plex_rating_reaches_trakt(service: ServiceProcess, trakt: FakeTrakt) -> None:
    assert post_plex(service, sample_json("plex", "movie_media_rate.json")).status_code == 202
    wait_for(lambda: [r.rating for r in trakt.ratings()] == [9])


def test_a_plex_rating_cleared_is_removed_from_trakt(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    rated = sample_json("plex", "movie_media_rate.json")
    assert post_plex(service, rated).status_code == 202
    wait_for(lambda: [r.rating for r in trakt.ratings()] == [9])
    cleared = sample_json("plex", "movie_media_rate.json")
    del cleared["rating"], cleared["Metadata"]["userRating"], cleared["Metadata"]["lastRatedAt"]
    assert post_plex(service, cleared).status_code == 202
    wait_for(lambda: trakt.ratings() == [])


@pytest.mark.parametrize(
    "sample",
    [
        "track_media_play.json",
        "trailer_clip_media_play.json",
        "movie_library_new.json",
        "vod_catalog_media_stop.json",
    ],
)
def test_not_for_us_is_acknowledged_and_nothing_is_sent(
    quiet_service: ServiceProcess, quiet_trakt: FakeTrakt, sample: str
) -> None:
    response = post_plex(quiet_service, sample_json("plex", sample))
    assert response.status_code == 200
    assert response.json()["status"].startswith("ignored_")
    wait_for(lambda: delivered_all(quiet_service))
    assert quiet_trakt.history() == [] and quiet_trakt.count("POST", "/scrobble/start") == 0


def test_unmapped_account_is_acknowledged_and_ignored(quiet_service: ServiceProcess) -> None:
    response = post_plex(
        quiet_service, sample_json("plex", "episode_new_agent_friend_media_scrobble.json")
    )
    assert (response.status_code, response.json()["status"]) == (200, "ignored_unmapped_account")


def test_an_unmapped_accounts_webhook_is_counted_and_queues_nothing(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # Issue 3: "Unmapped accounts: 2xx, counted, ignored". Its own service: the count is exact.
    friend = sample_json("plex", "episode_new_agent_friend_media_scrobble.json")
    for _ in range(2):
        assert post_plex(service, friend).status_code == 200
    metrics = httpx.get(f"{service.url}/metrics").text
    counted = 'watchbridge_webhook_events_total{outcome="ignored_unmapped_account",source="plex"}'
    assert f"{counted} 2.0" in metrics
    with contextlib.closing(sqlite3.connect(service.config.parent / "wb.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
    assert trakt.history() == [] and trakt.count("POST", "/scrobble/stop") == 0


def test_secret_in_header_is_accepted(service: ServiceProcess) -> None:
    body, content_type = plex_multipart(sample_json("plex", "movie_media_play.json"))
    response = httpx.post(
        f"{service.url}/webhooks/plex",
        content=body,
        headers={"content-type": content_type, "x-webhook-secret": SECRET},
    )
    assert response.status_code == 202


@pytest.mark.parametrize("url_secret", ["wrong", None])
def test_wrong_or_missing_secret_is_401(
    quiet_service: ServiceProcess, url_secret: str | None
) -> None:
    path = f"/webhooks/plex/{url_secret}" if url_secret else "/webhooks/plex"
    response = httpx.post(f"{quiet_service.url}{path}", content=b"{}")
    assert response.status_code == 401
    assert "secret" in response.json()["error"]


def test_malformed_body_is_400_with_a_reason(quiet_service: ServiceProcess) -> None:
    response = httpx.post(f"{quiet_service.url}/webhooks/jellyfin/{SECRET}", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_body_over_the_limit_is_413(quiet_service: ServiceProcess) -> None:
    # Refused on its Content-Length, unread (a Plex webhook's poster is dropped instead: below).
    response = httpx.post(
        f"{quiet_service.url}/webhooks/jellyfin/{SECRET}", content=b"x" * (6 * 1024 * 1024)
    )
    assert response.status_code == 413


def _peak_memory_kib(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def post_chunked_until_answered(
    port: int, path: str, head: bytes, filler: bytes, total: int, tail: bytes = b""
) -> tuple[bytes, int]:
    """POST `head`, `filler` repeated up to `total` bytes and `tail`, chunked (no Content-Length
    to refuse early), stopping as soon as the service answers: its answer and the bytes sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent, answer = 0, b""
    try:
        boundary = head.split(b"\r\n", 1)[0][2:].decode()
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for piece in [head] + [filler] * (total // len(filler)) + [tail] * bool(tail):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered before the body ended
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            else:
                sock.sendall(b"0\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n" not in answer and (more := sock.recv(65536)):
                answer += more
    finally:
        sock.close()
    return answer, sent


def test_a_plex_poster_far_over_the_limit_is_dropped_unbuffered_and_the_play_kept(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # Issue 3: the thumb part "is never buffered beyond a limit"; plex.md §7: "never fail on a
    # large thumb" (Plex never sends a webhook again). A 64 MB poster after a good payload,
    # far past server.max_webhook_bytes (5 MB): read and dropped as it comes, the play kept,
    # and the service's peak memory stays far below the poster's size.
    assert service.proc is not None
    payload, _ = plex_multipart(sample_json("plex", "movie_media_play.json"), thumb=False)
    head = payload.removesuffix(b"--wbboundary--\r\n") + (
        b'--wbboundary\r\nContent-Disposition: form-data; name="thumb"; filename="t.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    filler, tail = THUMB * 4, b"\r\n--wbboundary--\r\n"
    poster = 64 * 1024 * 1024 // len(filler) * len(filler)  # 64 MiB, whole pieces
    before = _peak_memory_kib(service.proc.pid)
    answer, sent = post_chunked_until_answered(
        service.port, f"/webhooks/plex/{SECRET}", head, filler, poster, tail
    )
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    assert sent == len(head) + poster + len(tail), "answered before the body ended"
    grown_mib = (_peak_memory_kib(service.proc.pid) - before) / 1024
    assert grown_mib < 24, f"peak memory grew by {grown_mib:.0f} MiB for a 64 MiB poster"
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'watchbridge_webhook_events_total{outcome="accepted",source="plex"} 1.0' in metrics
    dropped = sent - payload.index(b"--wbboundary", 10) - len(b"--wbboundary")
    series = 'watchbridge_webhook_dropped_bytes_total{source="plex"} '
    counted = [float(line.removeprefix(series)) for line in metrics.splitlines() if series in line]
    assert counted == [dropped]
    wait_for(lambda: delivered_all(service))
    assert trakt.count("POST", "/scrobble/start") == 1
    watching = trakt.watching()
    assert watching is not None and getattr(watching.item, "imdb", None) == "tt2543164"


def test_unknown_source_is_404(quiet_service: ServiceProcess) -> None:
    assert (
        httpx.post(f"{quiet_service.url}/webhooks/kodi/{SECRET}", content=b"{}").status_code == 404
    )


def test_a_webhook_to_a_mistyped_url_is_told_in_the_log(tmp_path: Path, trakt: FakeTrakt) -> None:
    # A source mistyped in the pasted URL (or a segment added after the secret) was answered
    # 404 and counted on /metrics only: every play of that server lost, without a log line.
    service = service_for(tmp_path, trakt).start()
    try:
        for path in (f"jelyfin/{SECRET}", f"plex/{SECRET}/extra", f"Plex/{SECRET}"):
            assert httpx.post(f"{service.url}/webhooks/{path}", content=b"{}").status_code == 404
        assert httpx.get(f"{service.url}/webhooks/plex/{SECRET}").status_code == 405
    finally:
        output = service.output()
    told = [line for line in output.splitlines() if "no webhook URL of watchbridge" in line]
    assert len(told) == 1, told  # once in a while, not per webhook
    assert "level=warning" in told[0] and "watchbridge webhook-urls" in told[0]
    assert SECRET not in output


def test_outcomes_are_counted_by_source(service: ServiceProcess) -> None:
    httpx.post(f"{service.url}/webhooks/plex/wrong", content=b"{}")
    post_plex(service, sample_json("plex", "track_media_play.json"))
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'watchbridge_webhook_events_total{outcome="unauthorized",source="plex"} 1.0' in metrics
    assert 'outcome="ignored_not_video",source="plex"' in metrics


def test_readyz_is_unavailable_while_a_damaged_database_refuses_webhooks(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    service = service_for(tmp_path, trakt).start()
    db = tmp_path / "wb.db"
    try:
        for _ in range(20):
            assert post_plex(service, sample_json("plex", "movie_media_play.json")).is_success
        with sqlite3.connect(db) as other:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with db.open("r+b") as disk:  # an SD card damaging the database's pages
            disk.seek(4096)
            disk.write(b"\xa5" * (db.stat().st_size - 4096))
        response = post_plex(service, sample_json("plex", "movie_media_scrobble.json"))
        assert response.status_code == 503
        assert httpx.get(f"{service.url}/readyz").status_code == 503
    finally:
        service.kill()


def test_a_webhook_the_database_cannot_take_is_503_counted_and_alerted(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    alerts = f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n'
    service = service_for(tmp_path, trakt, alerts, storage=", busy_timeout: 0.3").start()
    blocker = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        response = post_plex(service, sample_json("plex", "movie_media_scrobble.json"))
        assert response.status_code == 503
        assert "could not store" in response.json()["error"]
        assert httpx.get(f"{service.url}/readyz").status_code == 503
        # One cause, one alert: the storage alert tells of the refused webhook too.
        locked = "watchbridge cannot write its database: another program holds it locked"
        wait_for(lambda: locked in receiver.titles())
        blocker.execute("ROLLBACK")
        assert httpx.get(f"{service.url}/readyz").status_code == 200
        metrics = httpx.get(f"{service.url}/metrics").text
        assert (
            'watchbridge_webhook_events_total{outcome="store_error",source="plex"} 1.0' in metrics
        )
        # The refusal is listed for the user; the alert tells of it too unless a background
        # write met the lock first and its alert went out before the webhook came (then its
        # "Resolved" notice tells of it: test_storage_faults).
        (refused,) = httpx.get(f"{service.url}/api/status").json()["refused_webhooks"]
        assert (refused["source"], refused["webhooks"], refused["status"]) == ("plex", 1, 503)
        alert = next(m["message"] for m in receiver.messages if m["title"] == locked)
        assert "So far" not in alert or "So far 1 Plex webhook was refused" in alert
        assert "watchbridge is refusing Plex webhooks" not in receiver.titles()
    finally:
        blocker.close()
        service.kill()


def test_two_dated_plays_of_one_episode_from_the_generic_schema_are_two_plays(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    episode = {"type": "episode", "season": 5, "number": 14, "show": {"ids": {"tvdb": 81189}}}
    for when in ("2024-01-10T21:00:00Z", "2025-03-14T20:48:02Z"):
        body = {"event": "played", "user": "alice", "watched_at": when, "item": episode}
        response = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=body)
        assert response.json() == {"status": "accepted", "queued": 1}
    wait_for(lambda: len(trakt.history()) == 2, timeout=20)
    assert sorted(h.watched_at[:10] for h in trakt.history()) == ["2024-01-10", "2025-03-14"]


def test_a_generic_play_dated_by_its_day_reaches_trakt_on_that_day_where_watchbridge_runs(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # A household in New York (TZ, as docker-compose.yml passes it) logs a play of the 14th,
    # and one of today with no time, in the morning of a zone where it is morning now.
    service = service_for(tmp_path, trakt)
    service.env = {"TZ": "America/New_York"}
    service.start()
    episode = {"type": "episode", "season": 5, "number": 14, "show": {"ids": {"tvdb": 81189}}}
    try:
        body = {"event": "played", "user": "alice", "watched_at": "2025-03-14", "item": episode}
        response = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=body)
        assert response.json() == {"status": "accepted", "queued": 1}
        wait_for(lambda: len(trakt.history()) == 1, timeout=20)
        # Noon in New York, not midnight UTC (the evening of the 13th there).
        assert trakt.history()[0].watched_at == "2025-03-14T16:00:00.000Z"
    finally:
        service.kill()


def test_a_generic_play_dated_today_without_a_time_is_dated_now_not_refused(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    zone = a_zone_where_it_is_morning()  # today's noon is hours away there
    service = service_for(tmp_path, trakt)
    service.env = {"TZ": zone}
    service.start()
    try:
        posted = time.time()
        today = datetime.fromtimestamp(posted, ZoneInfo(zone)).date().isoformat()
        movie = {"type": "movie", "ids": {"imdb": "tt0113277"}}
        body = {"event": "played", "user": "alice", "watched_at": today, "item": movie}
        response = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=body)
        assert response.json() == {"status": "accepted", "queued": 1}, response.text
        wait_for(lambda: len(trakt.history()) == 1, timeout=20)
        assert abs(parse_iso(trakt.history()[0].watched_at) - posted) < 120
    finally:
        service.kill()


def test_a_generic_movie_known_by_its_title_only_reaches_trakt(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # As docs/webhooks.md's Home Assistant example sends it: no ids, a title and a year.
    body = {
        "event": "played",
        "user": "alice",
        "player": "media_player.living_room",
        "item": {"type": "movie", "title": "Arrival", "year": 2016},
    }
    response = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=body)
    assert response.json() == {"status": "accepted", "queued": 1}
    wait_for(lambda: len(trakt.history()) == 1, timeout=20)
    assert titles(trakt) == ["Arrival"]


def test_a_double_episode_file_reaches_trakt_without_the_servers_api_key(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # Trakt finds S05E14 by its own id and, with it, the show: S05E15 has no id of its own.
    payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
    payload |= {"NotificationUsername": "alice", "EpisodeNumberEnd": 15}
    payload |= {"Provider_tvdb": "4000014", "Provider_imdb": "", "Provider_tmdb": ""}
    response = httpx.post(f"{service.url}/webhooks/jellyfin/{SECRET}", json=payload)
    assert response.json() == {"status": "accepted", "queued": 2}
    wait_for(lambda: len(trakt.history()) == 2)
    assert sorted((h.item.season, h.item.number) for h in trakt.history()) == [(5, 14), (5, 15)]


def test_a_double_episode_file_numbered_unlike_trakt_places_the_second_after_the_first(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # The server's S05E14-15 are Trakt's S05E10-11 (another episode order): the server's
    # numbers would put the second on Trakt's S05E15, an episode the user never watched.
    payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
    payload |= {"NotificationUsername": "alice", "EpisodeNumberEnd": 15}
    payload |= {"Provider_tvdb": "4000010", "Provider_imdb": "", "Provider_tmdb": ""}
    httpx.post(f"{service.url}/webhooks/jellyfin/{SECRET}", json=payload)
    wait_for(lambda: len(trakt.history()) == 2)
    assert sorted((h.item.season, h.item.number) for h in trakt.history()) == [(5, 10), (5, 11)]


def test_late_completion_is_added_to_history_with_its_real_time(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    service = service_for(tmp_path, trakt, "").start()
    try:
        trakt.fail_next(6, 503)  # Trakt is down for the first tries
        posted = time.time()
        payload = plex_scrobble_now("movie_legacy_imdb_media_scrobble.json", posted)
        assert post_plex(service, payload).status_code == 202
        wait_for(lambda: titles(trakt) == ["Heat"], timeout=20)
        assert abs(parse_iso(trakt.history()[0].watched_at) - posted) < 120
    finally:
        service.kill()


def test_acknowledged_webhooks_survive_kill_9_and_reach_trakt_exactly_once(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # Six senders at once, so the kill lands while requests are in flight and group commits
    # are open, not between two requests.
    template = sample_json("plex", "movie_legacy_imdb_media_scrobble.json")
    posted = [f"Flood {n}" for n in range(150)]
    for n, title in enumerate(posted):
        trakt.add_movie(title, 2000, imdb=f"tt9{n:06d}")
    service = service_for(tmp_path, trakt).start()
    acknowledged: list[str] = []
    lock = threading.Lock()

    def send(numbers: range) -> None:
        with httpx.Client(timeout=5) as client:
            for n in numbers:
                payload = json.loads(json.dumps(template))
                payload["Metadata"] |= {
                    "guid": f"com.plexapp.agents.imdb://tt9{n:06d}?lang=en",
                    "ratingKey": str(5000 + n),
                    "title": posted[n],
                }
                try:
                    response = client.post(f"{service.url}/webhooks/plex/{SECRET}", json=payload)
                except httpx.TransportError:
                    return  # the service is gone
                if response.status_code == 202:
                    with lock:
                        acknowledged.append(posted[n])

    senders = [threading.Thread(target=send, args=(range(k, 150, 6),)) for k in range(6)]
    for sender in senders:
        sender.start()
    wait_for(lambda: len(acknowledged) >= 40, timeout=20)
    service.kill()  # kill -9 in the middle of the flood
    for sender in senders:
        sender.join()
    assert 40 <= len(acknowledged) < len(posted)
    restarted = ServiceProcess(service.config, service.port).start()
    try:
        wait_for(lambda: set(acknowledged) <= set(titles(trakt)), timeout=30)
        wait_for(lambda: delivered_all(restarted))  # anything sent twice shows by now
        landed = titles(trakt)
        assert set(acknowledged) <= set(landed)
        assert len(landed) == len(set(landed)), "a play reached Trakt twice"
        assert set(landed) <= set(posted)
    finally:
        restarted.kill()


# --------------------------------------------------------------------------- Serializd, no Trakt


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.seed_reference_catalogue()  # Breaking Bad (TMDB 1396) with its TMDB season ids
    return fake


def serializd_service(
    tmp_path: Path, serializd: FakeSerializd, servers: str = ""
) -> ServiceProcess:
    """The service for a household with a Serializd account and no Trakt at all; `servers`
    adds media servers under `services` (YAML lines)."""
    port = free_port()
    config = tmp_path / "watchbridge.yaml"
    email, password, _ = SERIALIZD_USER
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
delivery: {{retry_after: 1s}}
services:
  serializd: {{api_url: "{serializd.url}"}}
{servers}
profiles:
  me:
    users: {{plex: ["1"], jellyfin: [alex], emby: [alex]}}
    accounts: {{serializd: {{email: "{email}", password: "{password}"}}}}
""",
        encoding="utf-8",
    )
    return ServiceProcess(config, port).start()


@pytest.fixture
def serializd_only(tmp_path: Path, serializd: FakeSerializd) -> Iterator[ServiceProcess]:
    proc = serializd_service(tmp_path, serializd)
    yield proc
    proc.kill()


def logged(serializd: FakeSerializd) -> list[tuple[int, int | None, int | None, bool]]:
    return [(r.show_id, r.season_id, r.episode_number, r.is_log) for r in serializd.diary()]


def test_a_plex_episode_scrobble_is_one_diary_entry_and_one_tick_on_serializd(
    serializd_only: ServiceProcess, serializd: FakeSerializd
) -> None:
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    # The legacy TMDB agent names the show by its TMDB id, as Serializd keys shows.
    payload["Metadata"]["guid"] = "com.plexapp.agents.themoviedb://1396/5/16?lang=en"
    assert post_plex(serializd_only, payload).status_code == 202
    wait_for(lambda: serializd.ticks() == {(1396, 3578, 16)})
    stop = dict(payload, event="media.stop")  # the stop after the scrobble: no second play
    assert post_plex(serializd_only, stop).status_code == 202
    wait_for(lambda: delivered_all(serializd_only))  # a second entry would show by now
    assert logged(serializd) == [(1396, 3578, 16, True)]
    assert serializd.ticks() == {(1396, 3578, 16)}


def test_a_play_held_for_a_refused_password_goes_out_at_the_start_after_the_fix(
    tmp_path: Path, serializd: FakeSerializd
) -> None:
    # The password on serializd.com changed: the play waits (half an hour between tries).
    email, password, _ = SERIALIZD_USER
    serializd.users[email.lower()].password = "changed-on-the-site"
    service = serializd_service(tmp_path, serializd)
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    payload["Metadata"]["guid"] = "com.plexapp.agents.themoviedb://1396/5/16?lang=en"
    try:
        assert post_plex(service, payload).status_code == 202
        wait_for(lambda: "refused the email or password" in outbox_errors(tmp_path))
    finally:
        service.terminate()
    # The user puts the new password in the config and restarts: it is tried at once.
    config = service.config.read_text(encoding="utf-8")
    service.config.write_text(config.replace(password, "changed-on-the-site"), encoding="utf-8")
    service.start()
    try:
        wait_for(lambda: serializd.ticks() == {(1396, 3578, 16)}, timeout=10)
    finally:
        service.kill()


def test_an_unmatched_play_goes_out_at_the_start_after_the_server_is_configured(
    tmp_path: Path, serializd: FakeSerializd, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Without services.jellyfin the play has no show TMDB id: unmatched, tried hourly.
    service = serializd_service(tmp_path, serializd)
    payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
    payload |= {"NotificationUsername": "alex"}
    try:
        assert httpx.post(f"{service.url}/webhooks/jellyfin/{SECRET}", json=payload).is_success
        wait_for(lambda: "services.jellyfin.api_key" in outbox_errors(tmp_path))
    finally:
        service.terminate()
    # The user does what the reason says and restarts: the play goes out at once.
    server = sample_server(start_fake, "jellyfin")
    servers = f'  jellyfin: {{url: "{server.url}", api_key: "{JELLYFIN_KEY}"}}'
    service = serializd_service(tmp_path, serializd, servers)
    try:
        wait_for(lambda: len(serializd.diary()) == 1, timeout=10)
    finally:
        service.kill()


def test_trakts_id_search_for_an_episodes_show_is_not_asked_again_when_it_comes_again(
    tmp_path: Path, serializd: FakeSerializd, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Jellyfin names only the episode's ids; without services.jellyfin, Serializd's show TMDB
    # id comes from Trakt's id search (no Trakt account needed), whose answers are remembered.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    show = trakt.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    trakt.add_episode(show, 5, 14, tvdb=4637661, imdb="tt2301451")
    servers = (
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}'
    )
    service = serializd_service(tmp_path, serializd, servers)
    url = f"{service.url}/webhooks/jellyfin/{SECRET}"
    start = sample_json("jellyfin", "playback_start_episode.json")
    stop = sample_json("jellyfin", "playback_stop_episode_completed.json")
    try:
        assert httpx.post(url, json=stop).status_code == 202
        wait_for(lambda: logged(serializd) == [(1396, 3578, 14, True)])
        searched = trakt.count("GET", "/search/{id_type}/{id}")
        assert searched >= 1
        # Watched again from the start: a second play row, placed by the show's TMDB id too
        # (Serializd's target then finds it too close to the first to be a rewatch).
        for again in (start, stop):
            assert httpx.post(url, json=again).status_code == 202
        wait_for(lambda: delivered_all(service))
        with sqlite3.connect(tmp_path / "wb.db") as db:
            plays = db.execute("SELECT COUNT(*) FROM outbox WHERE action = 'play'").fetchone()
        assert plays == (2,)
        assert trakt.count("GET", "/search/{id_type}/{id}") == searched
    finally:
        service.kill()


def outbox_errors(tmp_path: Path) -> str:
    with sqlite3.connect(tmp_path / "wb.db") as db:
        return " ".join(e or "" for (e,) in db.execute("SELECT last_error FROM outbox"))


def test_a_plex_start_queues_nothing_for_serializd(
    serializd_only: ServiceProcess, serializd: FakeSerializd, tmp_path: Path
) -> None:
    # Serializd logs finished episodes: live state there would only end as dead letters.
    play = sample_json("plex", "episode_legacy_media_play.json")
    play["Metadata"]["guid"] = "com.plexapp.agents.themoviedb://1396/5/16?lang=en"
    assert post_plex(serializd_only, play).status_code == 202
    with sqlite3.connect(tmp_path / "wb.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)


# Jellyfin, Emby and Plex's new agent name only the episode's ids: the show's TMDB id Serializd
# keys shows by is read from the server the play came from (services.jellyfin/emby/plex).


@dataclass
class ServerRig:
    """The Serializd-only service with a Jellyfin or Emby server to read show ids from."""

    flavour: Literal["jellyfin", "emby"]
    service: ServiceProcess
    server: FakeServer

    def post(self, payload: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.service.url}/webhooks/{self.flavour}/{SECRET}", json=payload)


@pytest.fixture(params=["jellyfin", "emby"])
def with_server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    serializd: FakeSerializd,
    start_fake: Callable[[FakeServer], FakeServer],
) -> Iterator[ServerRig]:
    flavour = request.param
    server = sample_server(start_fake, flavour)
    servers = f'  {flavour}: {{url: "{server.url}", api_key: "{JELLYFIN_KEY}"}}'
    service = serializd_service(tmp_path, serializd, servers)
    yield ServerRig(flavour, service, server)
    service.kill()


def test_a_jellyfin_or_emby_episode_completion_is_one_diary_entry_and_one_tick_on_serializd(
    with_server: ServerRig, serializd: FakeSerializd
) -> None:
    payload = sample_json(with_server.flavour, "playback_stop_episode_completed.json")
    assert with_server.post(payload).status_code == 202
    wait_for(lambda: serializd.ticks() == {(1396, 3578, 14)})
    wait_for(lambda: delivered_all(with_server.service))  # a second entry would show by now
    assert logged(serializd) == [(1396, 3578, 14, True)]
    # The series, read once (the catch-up of missed plays asks the server's id, its accounts
    # and their played items too).
    catch_up = ("/Users", "/System/Info/Public")
    reads = [
        r
        for r in with_server.server.requests
        if r.route not in catch_up and "IsPlayed" not in r.query
    ]
    assert len(reads) == 1, reads


def test_a_double_episode_file_watched_to_the_end_logs_both_episodes(
    with_server: ServerRig, serializd: FakeSerializd
) -> None:
    payload = sample_json(with_server.flavour, "playback_stop_episode_completed.json")
    if with_server.flavour == "jellyfin":
        payload["EpisodeNumberEnd"] = 15  # one file holding S05E14-E15
    else:
        payload["Item"]["IndexNumberEnd"] = 15
    assert with_server.post(payload).json() == {"status": "accepted", "queued": 2}
    wait_for(lambda: serializd.ticks() == {(1396, 3578, 14), (1396, 3578, 15)})


def test_a_plex_new_agent_episode_scrobble_reaches_serializd_through_the_plex_server(
    tmp_path: Path, serializd: FakeSerializd, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    add_baki_hanma(plex)
    serializd.add_show(131041, "Baki Hanma", {1: 13}, season_ids={1: 197430})
    servers = f'  plex: {{url: "{plex.url}", token: "{PLEX_TOKEN}"}}'
    service = serializd_service(tmp_path, serializd, servers)
    try:
        payload = sample_json("plex", "episode_new_agent_friend_media_scrobble.json")
        payload["Account"]["id"] = 1  # the owner's play (the sample's friend is not mapped)
        assert post_plex(service, payload).status_code == 202
        wait_for(lambda: serializd.ticks() == {(131041, 197430, 1)})
        wait_for(lambda: delivered_all(service))
        assert logged(serializd) == [(131041, 197430, 1, True)]
        assert [r.path for r in plex.requests] == ["/library/metadata/40275"]
    finally:
        service.kill()


def test_a_double_episode_file_numbered_unlike_trakt_with_the_servers_api_key(
    tmp_path: Path, trakt: FakeTrakt, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # As above, with services.jellyfin's API key: asking the server gives the show's ids, by
    # which the server's numbers alone would put the second on Trakt's S05E15.
    server = sample_server(start_fake, "jellyfin")
    service = service_for(tmp_path, trakt)
    jellyfin = f'  jellyfin: {{url: "{server.url}", api_key: "{JELLYFIN_KEY}"}}\n'
    text = service.config.read_text(encoding="utf-8")
    service.config.write_text(text.replace("\nprofiles:", f"\n{jellyfin}profiles:", 1))
    service.start()
    try:
        payload = sample_json("jellyfin", "playback_stop_episode_completed.json")
        payload |= {"NotificationUsername": "alice", "EpisodeNumberEnd": 15}
        payload |= {"Provider_tvdb": "4000010", "Provider_imdb": "", "Provider_tmdb": ""}
        httpx.post(f"{service.url}/webhooks/jellyfin/{SECRET}", json=payload)
        wait_for(lambda: len(trakt.history()) == 2)
        played = sorted((h.item.season, h.item.number) for h in trakt.history())
        assert played == [(5, 10), (5, 11)]
    finally:
        service.kill()


def test_a_home_assistant_template_rendering_missing_values_as_none_reaches_trakt(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # Home Assistant renders a missing attribute as "None", and an entity's state as "unknown"
    # or "unavailable": optional fields sent so are absent, not a 400 that loses the play.
    body = {
        "event": "played",
        "user": "alice",
        "watched_at": "None",
        "played": "unknown",
        "progress": "unavailable",
        "rating": "None",
        "item": {
            "type": "episode",
            "ids": {"imdb": "None", "tmdb": "unknown", "tvdb": "unavailable", "slug": "None"},
            "season": "5",
            "number": 14,
            "absolute": "None",
            "show": {
                "title": "Breaking Bad",
                "year": "None",
                "ids": {"tvdb": 81189, "imdb": "None"},
            },
        },
    }
    response = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=body)
    assert response.json() == {"status": "accepted", "queued": 1}
    wait_for(lambda: len(trakt.history()) == 1, timeout=20)
    entry = trakt.history()[0]
    assert (entry.item.season, entry.item.number) == (5, 14)


def test_a_required_field_rendered_as_none_is_a_400_naming_it(
    quiet_service: ServiceProcess,
) -> None:
    episode = {"type": "episode", "season": "None", "number": 14, "show": {"ids": {"tvdb": 81189}}}
    cases = [
        ({"event": "played", "user": "alice", "item": episode}, "item.season"),
        (
            {
                "event": "rate",
                "user": "alice",
                "rating": "unknown",
                "item": dict(episode, season=5),
            },
            "rating: required",
        ),
        ({"event": "None", "user": "alice", "item": dict(episode, season=5)}, "event: "),
        ({"event": "played", "user": "alice", "item": {"type": "unavailable"}}, "item.type: "),
    ]
    for body, reason in cases:
        response = httpx.post(f"{quiet_service.url}/webhooks/generic/{SECRET}", json=body)
        assert response.status_code == 400
        assert reason in response.text


def test_a_two_part_episode_known_by_its_shared_imdb_id_lands_on_its_own_part(
    service: ServiceProcess, trakt: FakeTrakt
) -> None:
    # IMDb gives both parts of a two-part episode one id: Trakt's search by it answers with
    # both, and only our numbers tell which part was watched.
    show = trakt.add_show("Doctor Who", 2005, tvdb=78804, tmdb=57243)
    trakt.add_episode(show, 4, 12, title="The Stolen Earth", imdb="tt1205438")
    trakt.add_episode(show, 4, 13, title="Journey's End", imdb="tt1205438")
    body = {
        "event": "played",
        "user": "alice",
        "item": {"type": "episode", "ids": {"imdb": "tt1205438"}, "season": 4, "number": 13},
    }
    response = httpx.post(f"{service.url}/webhooks/generic/{SECRET}", json=body)
    assert response.json() == {"status": "accepted", "queued": 1}
    wait_for(lambda: len(trakt.history()) == 1, timeout=20)
    (play,) = trakt.history()
    assert (play.item.season, play.item.number) == (4, 13)
