"""The webhook route's HTTP contract, served before Litestar's router (app.App)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import http.client
import json
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receiver import AlertReceiver
from tests.harness import AppThread
from tests.ingest_samples import sample_bytes, sample_json
from tests.test_webhooks_e2e import plex_multipart, post_chunked_until_answered
from watchbridge import senders, webhooks
from watchbridge.config import parse_config
from watchbridge.ingest import parse
from watchbridge.model import Accepted, ref_to_dict
from watchbridge.playback import Session
from watchbridge.store import IngestJob, IngestWriter, NewOutboxRow, Store
from watchbridge.webhooks import doubling_title, event_record
from watchbridge.wiring import build_app, build_runtime

SECRET = "route-secret-123"
PLEX_SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"  # of the Plex and Tautulli samples
LIMIT = 65536  # the smallest limit the config allows


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    path = tmp_path_factory.mktemp("route") / "wb.db"
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}, max_webhook_bytes: {LIMIT}}}\n"
        f"storage: {{path: {path}}}\nprofiles: {{me: {{default: true}}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as thread:
        yield thread


def generic_play() -> dict[str, object]:
    return {
        "event": "start",
        "user": "alice",
        "item": {"type": "movie", "ids": {"imdb": "tt0113277"}},
    }


def test_an_accepted_webhook_is_202_with_the_rows_queued(app: AppThread) -> None:
    response = httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=generic_play())
    assert response.status_code == 202, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "accepted", "queued": 0}  # no target configured


def test_a_generic_time_hours_ahead_is_a_400_naming_the_zone(app: AppThread) -> None:
    local = datetime.now(UTC) + timedelta(hours=2)  # a local time sent without its zone
    sent = local.strftime("%Y-%m-%dT%H:%M:%S")
    play = generic_play() | {"event": "played", "watched_at": sent}
    response = httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=play)
    assert (response.status_code, response.json()["error"]) == (
        400,
        # TZ at UTC: its offset would say nothing over Z; the sender's clock is 2 hours ahead.
        f"watched_at: {sent} has no time zone: add yours (e.g. {sent}+02:00 if it was sent as it"
        " happened) or Z, or send no watched_at to date it as it arrives",
    )
    # The local time with Z: read as UTC, hours ahead.
    play = generic_play() | {"event": "played", "watched_at": f"{sent}Z"}
    response = httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=play)
    assert response.status_code == 400
    assert "2.0 hours ahead" in response.json()["error"]
    assert "a local time with Z is read as UTC" in response.json()["error"]


def test_a_generic_time_minutes_ahead_is_two_clocks_and_accepted(app: AppThread) -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=2)
    play = generic_play() | {"event": "played", "watched_at": ahead.isoformat()}
    assert httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=play).status_code == 202


def test_a_trailing_slash_is_the_same_url(app: AppThread) -> None:
    response = httpx.post(f"{app.url}/webhooks/generic/{SECRET}/", json=generic_play())
    assert response.status_code == 202


def test_other_methods_are_405_with_a_json_error(app: AppThread) -> None:
    response = httpx.get(f"{app.url}/webhooks/plex/{SECRET}")
    assert (response.status_code, response.json()["status"]) == (405, 405)
    # Mostly a browser opening the pasted URL: it is told how to check it instead.
    assert "to check the URL, play something" in response.json()["error"]
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/webhooks", "/webhooks/", f"/webhooks/plex/{SECRET}/more"])
def test_paths_that_name_no_webhook_are_a_json_404(app: AppThread, path: str) -> None:
    response = httpx.post(f"{app.url}{path}", content=b"{}")
    assert response.status_code == 404
    assert response.json()["error"]


@pytest.mark.parametrize("path", [f"/webhooks/{SECRET}", f"/webhooks/{SECRET}/plex"])
def test_a_url_with_the_source_left_out_does_not_echo_the_secret(app: AppThread, path: str) -> None:
    response = httpx.post(f"{app.url}{path}", content=b"{}")  # media servers log answers
    assert response.status_code == 404
    assert SECRET not in response.text


def post_with_header_secret(app: AppThread, secret: str) -> int:
    """The status of a generic play sent with `secret` in X-Webhook-Secret, byte for byte
    (httpx refuses a header value with surrounding whitespace; Tautulli sends it)."""
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        body = json.dumps(generic_play())
        headers = {"Content-Type": "application/json", "X-Webhook-Secret": secret}
        connection.request("POST", "/webhooks/generic", body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("pasted", [f"{SECRET} ", f"{SECRET}\t", f" {SECRET}", f" {SECRET}  "])
def test_a_header_secret_pasted_with_surrounding_whitespace_is_accepted(
    app: AppThread, pasted: str
) -> None:
    assert post_with_header_secret(app, pasted) == 202


@pytest.mark.parametrize("pasted", ["%20", "%0A", "%20%20"])
def test_a_url_secret_pasted_with_a_space_or_line_break_after_it_is_accepted(
    app: AppThread, pasted: str
) -> None:
    # Plex's and Jellyfin's URL fields keep what was pasted; every play would be a 401.
    answer = httpx.post(f"{app.url}/webhooks/generic/{SECRET}{pasted}", json=generic_play())
    assert answer.status_code == 202, answer.text


def test_a_url_secret_of_spaces_alone_is_no_secret(app: AppThread) -> None:
    answer = httpx.post(f"{app.url}/webhooks/generic/%20%20", json=generic_play())
    assert answer.status_code == 401


def test_a_header_of_whitespace_alone_is_no_secret(app: AppThread) -> None:
    assert post_with_header_secret(app, " \t ") == 401


@pytest.mark.parametrize("parameter", ["secret", "token", "Secret"])
def test_a_secret_in_a_query_parameter_is_told_where_it_goes_and_not_echoed(
    app: AppThread, parameter: str
) -> None:
    response = httpx.post(
        f"{app.url}/webhooks/generic", params={parameter: SECRET}, json=generic_play()
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert "in the URL's path" in error and "X-Webhook-Secret header" in error
    assert "query" in error and SECRET not in response.text


def test_a_wrong_secret_without_a_query_parameter_is_told_plainly(app: AppThread) -> None:
    response = httpx.post(f"{app.url}/webhooks/generic/wrong-one", json=generic_play())
    assert response.status_code == 401
    assert "query" not in response.json()["error"]


def post_with_field(
    app: AppThread, source: str, sample: str, path: str, value: object
) -> httpx.Response:
    """A sample sent to `source`'s URL with the value at `path` (keys joined by dots) set."""
    document = sample_json(source, sample)
    *parents, key = path.split(".")
    node = document
    for parent in parents:
        node = node.setdefault(parent, {})
    node[key] = value
    return httpx.post(f"{app.url}/webhooks/{source}/{SECRET}", json=document)


def assert_answered_not_failed(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.json()["status"] != "internal_error"


@pytest.mark.parametrize(
    ("source", "sample", "path"),
    [
        ("plex", "movie_media_rate.json", "Metadata.userRating"),
        ("jellyfin", "user_data_saved_update_rating_movie.json", "Rating"),
        ("emby", "item_rate_favorite_movie.json", "Item.UserData.Rating"),
        ("tautulli", "stop_episode.json", "user_rating"),
    ],
)
@pytest.mark.parametrize("rating", ["1e308", "-1e308", "1e400"])
def test_a_rating_past_the_float_range_is_read_as_no_rating_not_a_server_error(
    app: AppThread, source: str, sample: str, path: str, rating: str
) -> None:
    # Templates send numbers as text; text is read as a number as far as a number is.
    response = post_with_field(app, source, sample, path, rating)
    assert_answered_not_failed(response)
    assert response.status_code in (200, 202), response.text


@pytest.mark.parametrize("percent", [5e-324, "1e-310"])
def test_a_tautulli_progress_percent_near_zero_is_no_server_error(
    app: AppThread, percent: object
) -> None:
    # A position that disagrees with the duration goes by progress_percent, which a percent
    # near zero would make a duration of more than any float.
    response = post_with_field(app, "tautulli", "stop_episode.json", "progress_percent", percent)
    assert_answered_not_failed(response)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "fields",
    [
        {"position_ms": 1000, "duration_ms": 10**400},
        {"position_ms": 10**400, "duration_ms": 5_400_000},
        {"progress": 50, "duration_ms": 10**400},
        {"progress": 50, "duration_ms": 1e308},
        {"position_ms": 10**14, "duration_ms": 10**14},
    ],
    ids=["duration-huge", "position-huge", "progress-duration-huge", "duration-float", "300y+"],
)
def test_a_generic_position_or_duration_past_300_years_is_a_400_naming_it(
    app: AppThread, fields: dict[str, object]
) -> None:
    play = generic_play() | {"event": "stop"} | fields
    response = httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=play)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith(("position_ms: ", "duration_ms: ")) and "milliseconds" in error


@pytest.fixture(scope="module")
def app_with_trakt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    """Webhooks queue Trakt deliveries (to a closed port: the worker's tries do not matter)."""
    path = tmp_path_factory.mktemp("route-trakt") / "wb.db"
    closed = "http://127.0.0.1:9"
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {path}}}\n"
        f"services: {{trakt: {{client_id: abc, api_url: '{closed}', auth_url: '{closed}'}}}}\n"
        "profiles: {me: {default: true, accounts: {trakt: {}}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as thread:
        yield thread


def test_a_title_cut_mid_emoji_is_queued(app_with_trakt: AppThread) -> None:
    # A lone surrogate in a title without ids ends up in the outbox keys SQLite binds.
    body = (
        b'{"event": "start", "user": "alice", "player": "kodi",'
        b' "item": {"type": "movie", "title": "Am\\u00e9lie \\ud83d", "year": 2001}}'
    )
    url = f"{app_with_trakt.url}/webhooks/generic/{SECRET}"
    response = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json().get("queued")) == (202, 1), response.text


def test_a_body_without_length_is_cut_off_at_the_limit(app: AppThread) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to refuse early
        for _ in range(3):
            yield b" " * (LIMIT // 2)

    response = httpx.post(f"{app.url}/webhooks/generic/{SECRET}", content=chunks())
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["error"]


def _dropped_bytes(app: AppThread) -> float:
    """watchbridge_webhook_dropped_bytes_total for Plex so far (0 before the first drop)."""
    series = 'watchbridge_webhook_dropped_bytes_total{source="plex"} '
    for line in httpx.get(f"{app.url}/metrics").text.splitlines():
        if line.startswith(series):
            return float(line.removeprefix(series))
    return 0.0


def _plex_body(*parts: tuple[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (name, content) parts, as Plex sends (`thumb`: a JPEG file part)."""
    body = b""
    for name, content in parts:
        extra = '; filename="thumb.jpg"\r\nContent-Type: image/jpeg' if name == "thumb" else ""
        body += (
            (
                f'--wbboundary\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    headers = {"content-type": "multipart/form-data; boundary=wbboundary"}
    return body + b"--wbboundary--\r\n", headers


PLEX_PLAY = sample_bytes("plex", "movie_media_play.json")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_plex_poster_past_the_limit_is_dropped_and_the_play_kept(
    app: AppThread, chunked: bool
) -> None:
    # Plex never sends a webhook again: a 413 for its poster would lose the play (plex.md §7).
    body, headers = _plex_body(("payload", PLEX_PLAY), ("thumb", b"\xff" * (4 * LIMIT)))
    before = _dropped_bytes(app)
    content = (body[i : i + 8192] for i in range(0, len(body), 8192)) if chunked else body
    url = f"{app.url}/webhooks/plex/{SECRET}"
    response = httpx.post(url, content=content, headers=headers)
    assert response.status_code == 202, response.text
    after_payload = body.index(b"--wbboundary", len(PLEX_PLAY)) + len(b"--wbboundary")
    assert _dropped_bytes(app) - before == len(body) - after_payload


def test_a_plex_payload_part_past_the_limit_is_413_naming_the_payload_part(
    app: AppThread,
) -> None:
    padded = PLEX_PLAY.replace(b'"event"', b'"padding": "%s", "event"' % (b"x" * LIMIT), 1)
    body, headers = _plex_body(("payload", padded), ("thumb", b"\xff" * 1000))
    response = httpx.post(f"{app.url}/webhooks/plex/{SECRET}", content=body, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == (
        f"payload part (with what came before it) larger than server.max_webhook_bytes "
        f"({LIMIT} bytes); only what comes after the payload part may go past it"
    )
    # Other sources' whole bodies are held to the limit, and say so.
    other = httpx.post(f"{app.url}/webhooks/emby/{SECRET}", content=body, headers=headers)
    assert other.status_code == 413
    assert other.json()["error"] == f"body larger than server.max_webhook_bytes ({LIMIT} bytes)"


def test_a_plex_poster_before_the_payload_counts_towards_the_limit(app: AppThread) -> None:
    # Plex sends the payload first (samples, plex.md §1); a poster first is kept while it
    # and the payload after it fit within the limit, else the webhook is refused.
    url = f"{app.url}/webhooks/plex/{SECRET}"
    small, headers = _plex_body(("thumb", b"\xff" * (LIMIT // 2)), ("payload", PLEX_PLAY))
    assert httpx.post(url, content=small, headers=headers).status_code == 202
    large, headers = _plex_body(("thumb", b"\xff" * (2 * LIMIT)), ("payload", PLEX_PLAY))
    assert httpx.post(url, content=large, headers=headers).status_code == 413


def _answer_to_headers_alone(app: AppThread, path: str, length: int) -> tuple[bytes, bytes]:
    """The status line and the whole answer to a POST declaring `length` bytes and sending
    none."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
            "Content-Type: multipart/form-data; boundary=wbboundary\r\n\r\n".encode()
        )
        answer = _whole_answer(sock)
        return answer.partition(b"\r\n")[0], answer


def test_a_plex_body_declared_past_the_cap_and_others_past_the_limit_are_refused_unread(
    app: AppThread,
) -> None:
    cap = webhooks.PAYLOAD_BODY_CAP
    plex = _answer_to_headers_alone(app, f"/webhooks/plex/{SECRET}", cap + 1)
    assert b" 413 " in plex[0]
    assert b"body larger than 128 MiB, the most read of a webhook whose payload part" in plex[1]
    emby = _answer_to_headers_alone(app, f"/webhooks/emby/{SECRET}", LIMIT + 1)
    assert b" 413 " in emby[0]
    assert b"body larger than server.max_webhook_bytes (%d bytes)" % LIMIT in emby[1]


def test_a_plex_body_that_goes_on_past_the_cap_is_413_once_the_cap_is_read(
    app: AppThread,
) -> None:
    # A sender that never stops (a bug, a loop) holds the connection no longer than the cap.
    body, _ = _plex_body(("payload", PLEX_PLAY))
    head = (
        body.removesuffix(b"--wbboundary--\r\n")
        + b'--wbboundary\r\nContent-Disposition: form-data; name="thumb"\r\n\r\n'
    )
    filler = b"\xff" * (1024 * 1024)
    cap = webhooks.PAYLOAD_BODY_CAP
    answer, sent = post_chunked_until_answered(
        app.port, f"/webhooks/plex/{SECRET}", head, filler, cap + 64 * len(filler)
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert cap < sent < cap + 32 * len(filler)


def test_health_and_metrics_still_go_through_the_router(app: AppThread) -> None:
    assert httpx.get(f"{app.url}/healthz").json() == {"status": "ok"}
    assert "watchbridge_webhook_events_total" in httpx.get(f"{app.url}/metrics").text


def test_the_stored_event_record_is_the_event_as_a_dict() -> None:
    result = parse("plex", sample_bytes("plex", "movie_media_scrobble.json"), "")
    assert isinstance(result, Accepted)
    event = result.events[0]
    expected = dataclasses.asdict(event) | {"item": ref_to_dict(event.item)}
    assert event_record(event) == expected


# --------------------------------------------------------------------------- the writer


def _job(key: str) -> IngestJob:
    def decide(
        session: Session | None, marks: Session | None
    ) -> tuple[Session | None, list[NewOutboxRow]]:
        row = NewOutboxRow("trakt", "me", "watching", {}, key, key)
        return Session(key, "playing", 1.0, 0, 1.0), [row]

    return IngestJob("plex", "start", "me", {}, 1.0, key, decide)


def test_the_writer_commits_even_while_the_loop_itself_waits_for_the_store(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "wb.db")
    writer = IngestWriter(store)

    async def scenario() -> int:
        pending = asyncio.ensure_future(writer.write(_job("a")))
        await asyncio.sleep(0)  # the job is queued
        time.sleep(0.2)  # without yielding: the writer now holds the store, waiting for us
        store.outbox_counts()  # blocks this loop until the writer inserts by itself
        return await pending

    results: list[int] = []
    runner = threading.Thread(target=lambda: results.append(asyncio.run(scenario())), daemon=True)
    runner.start()
    runner.join(timeout=5)
    assert not runner.is_alive(), "the writer and the event loop wait for each other"
    writer.close()
    store.close()
    assert results == [1]
    assert Store.open(tmp_path / "wb.db").outbox_counts()["pending"] == 1


def test_a_group_that_cannot_start_its_transaction_fails_its_webhooks(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "wb.db", busy_timeout=0.1)
    other = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    writer = IngestWriter(store)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            asyncio.run(writer.write(_job("a")))
        other.execute("ROLLBACK")
        assert asyncio.run(writer.write(_job("b"))) == 1  # and the writer carries on
    finally:
        writer.close()
        other.close()
        store.close()


def test_an_account_no_profile_lists_shows_on_the_status(tmp_path: Path) -> None:
    # users.jellyfin says "alex"; Jellyfin's login is "Alex Smith". A media server never shows
    # the answer, so the status page and /api/status are where the user can see why.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {users: {jellyfin: [alex]}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    play = sample_json("jellyfin", "playback_stop_episode_completed.json")
    play["NotificationUsername"] = "Alex Smith"
    with AppThread(build_app(build_runtime(config))) as app:
        for _ in range(2):
            answer = httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", json=play)
            assert answer.json()["status"] == "ignored_unmapped_account"
        (seen,) = httpx.get(f"{app.url}/api/status").json()["unmapped_accounts"]
        page = httpx.get(app.url).text
    assert (seen["source"], seen["webhooks"]) == ("jellyfin", 2)
    assert seen["account"].startswith("Alex Smith")
    assert "Alex Smith" in page and "profiles.NAME.users.jellyfin" in page
    assert seen["fix"].startswith("add it under profiles.NAME.users.jellyfin")


def test_refused_webhooks_show_on_the_status_with_what_to_do_and_never_the_secret(
    tmp_path: Path,
) -> None:
    # The example config sends no alerts, and a media server never sends a refused webhook
    # again: the status page and /api/status are where the user can see plays being lost.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {default: true}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as app:
        for _ in range(3):  # Tautulli left with an old secret
            httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}-old", json=generic_play())
        httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", content=b"{not json")
        httpx.post(f"{app.url}/webhooks/generic/{SECRET}", json=generic_play())  # taken
        refused = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
        page = html.unescape(httpx.get(app.url).text)
    malformed, unauthorized = refused  # the most recently refused first
    assert unauthorized | {"last_at": 0, "fix": ""} == {
        "source": "tautulli",
        "outcome": "unauthorized",
        "status": 401,
        "webhooks": 3,
        "last_at": 0,
        "reason": "missing or wrong webhook secret (see `watchbridge webhook-urls`)",
        "fix": "",
        "taken_again_at": None,  # refused moments ago: still going on
        "warning": "media servers do not send these again, so each is a play lost unless a "
        "Plex link's sync (plex-serializd, plex-anilist, plex-trakt) finds it",
    }
    assert abs(unauthorized["last_at"] - time.time()) < 60
    assert "watchbridge webhook-urls" in unauthorized["fix"]
    assert (malformed["source"], malformed["status"], malformed["webhooks"]) == ("jellyfin", 400, 1)
    assert malformed["reason"].startswith("body is not JSON")
    assert "401: wrong secret" in page and "400: not understood" in page
    assert unauthorized["fix"] in page and malformed["reason"] in page
    assert SECRET not in page and SECRET not in str(refused)


def test_an_emby_webhook_naming_no_user_says_which_emby_setting_sends_one(tmp_path: Path) -> None:
    # Emby sends no User unless the webhook's "Limit user events to" selects users: no
    # profile can list an account that has no name, so the status names the setting.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {users: {emby: [alex]}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    play = sample_json("emby", "playback_stop_episode_completed.json")
    del play["User"]
    with AppThread(build_app(build_runtime(config))) as app:
        answer = httpx.post(f"{app.url}/webhooks/emby/{SECRET}", json=play)
        assert answer.json()["status"] == "ignored_unmapped_account"
        (seen,) = httpx.get(f"{app.url}/api/status").json()["unmapped_accounts"]
        page = httpx.get(app.url).text
    assert seen["account"] == "(no account in the webhook)"
    assert "Limit user events to" in seen["fix"] and "Limit user events to" in page


# A Tautulli template without them names neither (its `player`, a name, stands in for
# `machine_id` when there).
NAMING_THE_SERVER_AND_PLAYER = ("server_machine_id", "machine_id", "player")


def test_plex_and_tautulli_reporting_one_server_alert_only_once_a_viewing_counts_twice(
    tmp_path: Path, start_fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The example config's single-person set-up (a default profile) plus Tautulli's webhook
    # for the same Plex server: each viewing is reported minutes apart by both. Both naming
    # the server and player (Plex's webhook, the docs' Tautulli template), it counts once: a
    # note, no alert. A Tautulli template naming neither: it counts twice, an alert.
    receiver = start_fake(AlertReceiver())
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
        "profiles: {me: {default: true, users: {plex: ['1']}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    caplog.set_level("INFO", logger="watchbridge.webhooks")
    with AppThread(build_app(build_runtime(config))) as app:
        tautulli = sample_json("tautulli", "watched_episode.json")
        answer = httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=tautulli)
        assert answer.status_code == 202
        assert httpx.get(f"{app.url}/api/status").json()["reported_twice"] == []
        body = sample_bytes("plex", "episode_legacy_media_scrobble.json")
        plex = httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files={"payload": body})
        assert plex.status_code == 202
        (matched,) = httpx.get(f"{app.url}/api/status").json()["reported_twice"]
        page = html.unescape(httpx.get(app.url).text)
        unnamed = {k: v for k, v in tautulli.items() if k not in NAMING_THE_SERVER_AND_PLAYER}
        answer = httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=unnamed)
        assert answer.status_code == 202
        (unmatched,) = httpx.get(f"{app.url}/api/status").json()["reported_twice"]
        deadline = time.monotonic() + 10
        while (webhooks._alerting or not receiver.messages) and time.monotonic() < deadline:
            time.sleep(0.05)
    # One alert, of the viewing that counts twice (the notifier would hold back a second).
    # Which profile, within what a phone shows (one alert per profile: two could be doubled).
    assert receiver.titles() == ["watchbridge: both Plex and Tautulli report profile me's plays"]
    said = str(receiver.messages[0]["message"])
    # The profile's one Plex server (its Plex webhook's) stands in for the server the
    # template leaves out: only the player's line is lacking for the reports to pair.
    assert "each viewing counts twice" in said and '"machine_id": "{machine_id}"' in said
    assert "server_machine_id" not in said
    assert (matched["profile"], matched["server"]) == ("me", PLEX_SERVER)
    assert matched["counted_twice"] is False and "counted once" in matched["message"]
    assert "both Plex's and Tautulli's webhooks" in page and "remove Tautulli's webhook" in page
    assert "counted once" in page and 'class="bad">profile me' not in page
    assert (unmatched["server"], unmatched["counted_twice"]) == (PLEX_SERVER, True)
    told = [(r.levelname, r.getMessage()) for r in caplog.records if "from both" in r.getMessage()]
    assert [level for level, _ in told] == ["INFO", "WARNING"]


def test_a_tautulli_template_without_machine_id_pairs_by_name_or_the_alert_asks_for_it(
    tmp_path: Path, start_fake: Any
) -> None:
    # Its {player} (the player's name) is Plex's Player.title: counted once, a note. Naming a
    # player Plex's webhook does not name so, its reports cannot be paired: the alert names
    # the line its JSON Data lacks.
    receiver = start_fake(AlertReceiver())
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
        "profiles: {me: {default: true, users: {plex: ['1']}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as app:
        tautulli = sample_json("tautulli", "watched_episode.json")
        del tautulli["machine_id"]
        assert httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=tautulli).is_success
        body = sample_bytes("plex", "episode_legacy_media_scrobble.json")
        assert httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files={"payload": body}).is_success
        (paired,) = httpx.get(f"{app.url}/api/status").json()["reported_twice"]
        tautulli["player"] = "Bedroom TV"
        assert httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=tautulli).is_success
        (unpaired,) = httpx.get(f"{app.url}/api/status").json()["reported_twice"]
        deadline = time.monotonic() + 10
        while (webhooks._alerting or not receiver.messages) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert paired["counted_twice"] is False
    assert unpaired["counted_twice"] is True
    assert '"machine_id": "{machine_id}"' in unpaired["message"]
    assert receiver.titles() == [doubling_title("me")]
    assert '"machine_id": "{machine_id}"' in str(receiver.messages[0]["message"])


def test_a_tautulli_template_without_server_machine_id_pairs_while_the_plex_server_is_sure(
    tmp_path: Path, start_fake: Any
) -> None:
    # A Tautulli watches one Plex server: the profile's Plex webhooks naming one, its reports
    # are that server's, counted once (a note). Once they name a second (a friend's server),
    # which one is not sure: the alert asks for the server's line, as without a Plex server.
    receiver = start_fake(AlertReceiver())
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
        "profiles: {me: {default: true, users: {plex: ['1']}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as app:
        plex = sample_bytes("plex", "episode_legacy_media_scrobble.json")
        assert httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files={"payload": plex}).is_success
        tautulli = sample_json("tautulli", "watched_episode.json")
        del tautulli["server_machine_id"]
        assert httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=tautulli).is_success
        (paired,) = httpx.get(f"{app.url}/api/status").json()["reported_twice"]
        friends = json.loads(sample_bytes("plex", "movie_media_play.json"))
        friends["Server"]["uuid"] = "a-friends-server"
        body = json.dumps(friends).encode()
        assert httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files={"payload": body}).is_success
        assert httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=tautulli).is_success
        (unpaired,) = httpx.get(f"{app.url}/api/status").json()["reported_twice"]
        deadline = time.monotonic() + 10
        while (webhooks._alerting or not receiver.messages) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert (paired["server"], paired["counted_twice"]) == (PLEX_SERVER, False)
    assert unpaired["counted_twice"] is True
    assert '"server_machine_id": "{server_machine_id}"' in unpaired["message"]
    assert receiver.titles() == [doubling_title("me")]
    assert "server_machine_id" in str(receiver.messages[0]["message"])


def test_servers_and_players_made_up_in_every_webhook_fill_neither_memory_nor_the_status(
    tmp_path: Path,
) -> None:
    # A sender with the secret naming a new Plex server and player in each webhook (a broken
    # template, a script): the service remembers a few, as it does unmapped accounts.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {default: true, users: {plex: ['1']}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    servers = senders.DOUBLINGS_KEPT + 10
    with AppThread(build_app(runtime)) as app, httpx.Client(base_url=app.url) as client:
        for n in range(servers):
            tautulli = sample_json("tautulli", "watched_episode.json")
            tautulli |= {"server_machine_id": f"server-{n}", "machine_id": f"player-{n}"}
            assert client.post(f"/webhooks/tautulli/{SECRET}", json=tautulli).status_code == 202
            plex = sample_json("plex", "episode_legacy_media_scrobble.json")
            plex["Server"]["uuid"], plex["Player"]["uuid"] = f"server-{n}", f"player-{n}"
            posted = client.post(f"/webhooks/plex/{SECRET}", files={"payload": json.dumps(plex)})
            assert posted.status_code == 202
        shown = client.get("/api/status").json()["reported_twice"]
    (reports,) = runtime.senders.last_seen.values()  # one item, reported from every server
    assert len(reports) == senders.REPORTS_KEPT
    assert len(runtime.senders.doublings) == len(shown) == senders.DOUBLINGS_KEPT
    assert shown[0]["server"] == f"server-{servers - 1}"  # the latest is shown


def test_a_profile_doubled_on_many_servers_gets_one_alert_naming_the_latest(
    tmp_path: Path, start_fake: Any
) -> None:
    # One condition per profile, not per server the webhooks name: made-up servers would each
    # raise an alert of their own, kept open (it has no "Resolved") for over a year.
    receiver = start_fake(AlertReceiver())
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
        "profiles: {me: {default: true, users: {plex: ['1']}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    app = AppThread(build_app(build_runtime(config)))
    with app, httpx.Client(base_url=app.url) as client:
        for n in range(5):
            tautulli = sample_json("tautulli", "watched_episode.json")
            tautulli["server_machine_id"] = f"server-{n}"
            del tautulli["machine_id"], tautulli["player"]  # no player: each counts twice
            assert client.post(f"/webhooks/tautulli/{SECRET}", json=tautulli).status_code == 202
            plex = sample_json("plex", "episode_legacy_media_scrobble.json")
            plex["Server"]["uuid"] = f"server-{n}"
            posted = client.post(f"/webhooks/plex/{SECRET}", files={"payload": json.dumps(plex)})
            assert posted.status_code == 202
        assert len(client.get("/api/status").json()["reported_twice"]) == 5
        deadline = time.monotonic() + 10
        while (webhooks._alerting or not receiver.messages) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert receiver.titles() == [doubling_title("me")]
    assert "Plex server server-0" in str(receiver.messages[0]["message"])


def test_two_people_on_one_profile_one_through_each_sender_are_not_told(tmp_path: Path) -> None:
    # The owner (Plex's webhook) and a friend (Tautulli) share a profile and watch other
    # titles on the same server: nothing counts twice.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {family: {users: {plex: ['1'], tautulli: ['555']}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    friend = sample_json("tautulli", "watched_episode.json") | {"user_id": "555"}
    friend["machine_id"] = "friends-tv"
    owner = sample_bytes("plex", "movie_media_scrobble.json")
    with AppThread(build_app(build_runtime(config))) as app:
        assert httpx.post(f"{app.url}/webhooks/tautulli/{SECRET}", json=friend).status_code == 202
        posted = httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files={"payload": owner})
        assert posted.status_code == 202
        assert httpx.get(f"{app.url}/api/status").json()["reported_twice"] == []


def test_a_tautulli_trigger_with_an_empty_json_data_box_is_refused_on_the_status(
    tmp_path: Path,
) -> None:
    # Tautulli's Webhook agent keeps one JSON Data box per trigger, empty until filled in, and
    # posts an empty body for a ticked trigger whose box is empty (Playback Stop, Watched):
    # acknowledged, those plays would be lost without a word.
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {default: true}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    with AppThread(build_app(build_runtime(config))) as app:
        response = httpx.post(
            f"{app.url}/webhooks/tautulli/{SECRET}",
            content=b"",
            headers={"content-type": "application/json"},
        )
        refused = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
    assert response.status_code == 400, response.text
    assert "JSON Data box" in response.json()["error"]
    assert [(r["source"], r["outcome"]) for r in refused] == [("tautulli", "malformed")]
    assert "JSON Data box" in refused[0]["reason"]


def test_a_tautulli_webhook_without_a_secret_names_the_trigger_boxes_that_send_it(
    app: AppThread,
) -> None:
    # Tautulli sends the X-Webhook-Secret header from each trigger's own JSON Headers box: a
    # trigger whose boxes were left empty sends no secret, whatever the others do. Copying the
    # URL again, as the plain 401 says, would not help.
    response = httpx.post(
        f"{app.url}/webhooks/tautulli",
        content=b"",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 401
    reason = response.json()["error"]
    assert "JSON Headers box" in reason and "watchbridge webhook-urls" in reason
    wrong = httpx.post(
        f"{app.url}/webhooks/tautulli",
        json=sample_json("tautulli", "play_episode.json"),
        headers={"x-webhook-secret": "change-me"},
    )
    assert (
        wrong.json()["error"] == "missing or wrong webhook secret (see `watchbridge webhook-urls`)"
    )


def _whole_answer(sock: socket.socket) -> bytes:
    """The HTTP answer read from `sock` to its last body byte (its head and body may come in
    two segments), or what came before the socket's timeout."""
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
            head, found, body = answer.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                None,
            )
            if found and length is not None and len(body) >= length:
                break
    except TimeoutError:
        pass
    return answer or b"(no answer in 5 s)"


def test_a_body_that_stops_coming_midway_is_given_up_and_shown_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender that crashed or lost its network mid-body held its connection (and the wait)
    for good; a slow body that keeps coming is still read."""
    # 5x the pieces below: room for a loaded machine.
    monkeypatch.setattr(webhooks, "BODY_IDLE_TIMEOUT", 1.5, raising=False)
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {default: true}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    body = json.dumps(generic_play()).encode()
    head = b"POST /webhooks/generic/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head = head % SECRET.encode() + b"Content-Length: %d\r\n\r\n" % len(body)
    with AppThread(build_app(build_runtime(config))) as app:
        with socket.create_connection(("127.0.0.1", app.port)) as slow:
            slow.sendall(head)
            for start in range(0, len(body), 10):  # 0.3 s between pieces: slow, not stopped
                time.sleep(0.3)
                slow.sendall(body[start : start + 10])
            slow.settimeout(5)
            assert slow.recv(4096).startswith(b"HTTP/1.1 202 ")
        with socket.create_connection(("127.0.0.1", app.port)) as stalled:
            stalled.sendall(head + body[:10])
            stalled.settimeout(5)
            answer = _whole_answer(stalled)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"stopped coming midway" in answer
        (refused,) = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
    assert (refused["source"], refused["outcome"], refused["status"]) == ("generic", "stalled", 408)
    assert "network" in refused["fix"] and SECRET not in str(refused)


def _trickled(port: int, head: bytes, body: bytes, piece: int, every: float) -> bytes:
    """The answer to a POST whose body comes `piece` bytes every `every` seconds, stopping as
    soon as the service answers."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for start in range(0, len(body), piece):
                if select.select([sock], [], [], every)[0]:
                    break  # answered before the body ended
                sock.sendall(body[start : start + piece])
        sock.settimeout(5)
        return _whole_answer(sock)


def test_a_body_that_trickles_is_given_up_and_a_slow_one_that_keeps_pace_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte now and then, each within the idle timeout, held the connection until the
    body's end; a body that keeps the minimum pace is read however long it takes."""
    monkeypatch.setattr(webhooks, "BODY_GRACE", 0.4, raising=False)
    monkeypatch.setattr(webhooks, "BODY_MIN_RATE", 100, raising=False)  # bytes per second
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "profiles: {me: {default: true}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    body = json.dumps(generic_play(), indent=4).encode()  # 150 bytes
    head = b"POST /webhooks/generic/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head = head % SECRET.encode() + b"Content-Length: %d\r\n\r\n" % len(body)
    with AppThread(build_app(build_runtime(config))) as app:
        # 200 bytes a second, twice the minimum: 0.8 s in all, twice the grace, and read.
        kept_pace = _trickled(app.port, head, body, 8, 0.04)
        assert kept_pace.startswith(b"HTTP/1.1 202 "), kept_pace
        trickled = _trickled(app.port, head, body, 1, 0.1)  # 10 bytes a second
        assert trickled.startswith(b"HTTP/1.1 408 "), trickled
        assert b"came too slowly" in trickled
        (refused,) = httpx.get(f"{app.url}/api/status").json()["refused_webhooks"]
        metrics = httpx.get(f"{app.url}/metrics").text
    assert (refused["source"], refused["outcome"], refused["status"]) == ("generic", "stalled", 408)
    assert 'watchbridge_webhook_events_total{outcome="stalled",source="generic"} 1.0' in metrics


def test_a_movie_queues_no_row_for_a_service_that_holds_tv_only(tmp_path: Path) -> None:
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "services: {serializd: {}, anilist: {client_id: '1'}}\n"
        "profiles: {me: {default: true, accounts: "
        "{serializd: {email: a@example.com, password: pw}, anilist: {}}}}\n",
        Path("watchbridge.yaml"),
        {},
    )
    play = generic_play() | {"event": "played"}
    with AppThread(build_app(build_runtime(config))) as thread:
        response = httpx.post(f"{thread.url}/webhooks/generic/{SECRET}", json=play)
    assert (response.status_code, response.json().get("queued")) == (202, 1), response.text
    with sqlite3.connect(tmp_path / "wb.db") as db:
        targets = [target for (target,) in db.execute("SELECT target FROM outbox")]
    assert targets == ["anilist"]  # anime films are AniList's; Serializd would only skip it


class StoppedBeforeThreadsRun(ThreadPoolExecutor):
    """The event loop's threads for blocking work, in a process that stops before any work
    handed to them runs (killed, or the container stopped, right after answering)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return Future()  # never run


def test_an_account_id_learnt_from_an_accepted_webhook_survives_the_process_stopping(
    tmp_path: Path,
) -> None:
    """Bob is listed by name; his webhook teaches watchbridge his Plex id, and is answered
    202. The process stops before anything else runs; after the restart Bob, renamed
    "Robert" in Plex, still gets his own plays, not the default profile's."""
    config = parse_config(
        f"server: {{webhook_secret: {SECRET}}}\nstorage: {{path: {tmp_path / 'wb.db'}}}\n"
        "services: {trakt: {client_id: abc}}\n"
        "profiles:\n"
        "  alice: {default: true, users: {plex: ['1']}, accounts: {trakt: {}}}\n"
        "  bob: {users: {plex: [bob]}, accounts: {trakt: {}}}\n",
        Path("watchbridge.yaml"),
        {},
    )

    def scrobble(name: str, episode: int) -> tuple[bytes, str]:
        payload = sample_json("plex", "episode_legacy_media_scrobble.json")
        payload |= {"event": "media.scrobble", "Account": {"id": 5551234, "title": name}}
        payload["Server"] = {"title": "x", "uuid": PLEX_SERVER}
        payload["Metadata"] |= {"index": episode, "ratingKey": f"7{episode}"}
        return plex_multipart(payload)

    async def post(name: str, episode: int, stops: bool) -> int:
        if stops:
            asyncio.get_running_loop().set_default_executor(StoppedBeforeThreadsRun())
        runtime = build_runtime(config)
        runtime.open()
        try:
            body, content_type = scrobble(name, episode)
            transport = httpx.ASGITransport(app=build_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://wb") as client:
                answer = await client.post(
                    f"/webhooks/plex/{SECRET}", content=body, headers={"content-type": content_type}
                )
            return answer.status_code
        finally:
            runtime.close()

    assert asyncio.run(post("Bob", 14, stops=True)) == 202
    assert asyncio.run(post("Robert", 15, stops=False)) == 202
    with sqlite3.connect(tmp_path / "wb.db") as db:
        profiles = sorted({p for (p,) in db.execute("SELECT profile FROM outbox")})
    assert profiles == ["bob"]
