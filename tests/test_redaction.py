"""A secret is masked in every output, wherever the config holds it: the log, the alerts, the
commands' stored error texts and the status page and API all take it from one place
(redaction.secret_values)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.anilist import CLIENT_ID as ANILIST_CLIENT_ID
from tests.fakes.anilist import CLIENT_SECRET as ANILIST_CLIENT_SECRET
from tests.fakes.anilist import FakeAniList
from tests.fakes.receiver import AlertReceiver
from tests.fakes.serializd import ALICE as SERIALIZD_USER
from tests.fakes.serializd import FakeSerializd
from tests.harness import AppThread, ServiceProcess, free_port, watchbridge, write_config
from tests.ingest_samples import sample_json
from tests.test_deliver_serializd import kept_texts
from tests.test_webhooks_e2e import SECRET as HOOK_SECRET
from tests.test_webhooks_e2e import plex_multipart, wait_for
from watchbridge import statuspage
from watchbridge.app import Runtime, create_app
from watchbridge.config import load_config
from watchbridge.logs import Redactor, setup_logging
from watchbridge.redaction import clipped, secret_values
from watchbridge.services.trakt import ANSWER_CHARS, refusal_text
from watchbridge.store import NewOutboxRow, Store
from watchbridge.wiring import build_runtime

# Secrets in a place no other redaction test writes one: a profile's accounts.
ANILIST_TOKEN = "al-tok-9182736450"
SERIALIZD_PASSWORD = "sz-pw-27182818"
SECRETS = (ANILIST_TOKEN, SERIALIZD_PASSWORD)
QUOTED = f"answered 401 for {ANILIST_TOKEN} and {SERIALIZD_PASSWORD}"


def config_with_account_secrets(directory: Path, alert_url: str = "json://127.0.0.1:9/x") -> Path:
    return write_config(
        directory,
        "services: {anilist: {}, serializd: {}}\n"
        "profiles:\n  me:\n    users: {plex: ['1']}\n"
        f"    accounts: {{anilist: {{token: {ANILIST_TOKEN}}},"
        f" serializd: {{email: a@b.c, password: {SERIALIZD_PASSWORD}}}}}\n"
        f"alerts: {{urls: ['{alert_url}']}}\n",
    )


def stored_errors_quoting_the_secrets(path: Path) -> None:
    with Store.open(path.parent / "watchbridge.db") as store:
        rows = [NewOutboxRow("anilist", "me", "play", {}, f"k{n}", f"i{n}") for n in range(3)]
        store.enqueue(rows, 1.0)
        dead, held, waiting = store.claim("w", 2.0)
        store.mark_dead(dead.id, 3.0, f"gave up: {QUOTED}")
        store.hold(held.id, 3.0, 4.0, f"held: {QUOTED}")
        store.retry_later(waiting.id, 3.0, 9.0, f"unmatched: {QUOTED}")
        link_run = store.start_run("a", 1.0)
        assert link_run is not None
        store.finish_run(link_run, 2.0, "failed", {}, 3, f"run: {QUOTED}")


def shows_none(text: str) -> bool:
    return "********" in text and not [s for s in SECRETS if s in text]


def test_an_account_secret_is_masked_in_the_log(tmp_path: Path) -> None:
    config = load_config(config_with_account_secrets(tmp_path), {})
    stream = io.StringIO()
    setup_logging("info", "text", secret_values(config), stream=stream)
    try:
        logging.getLogger("t").warning(f"sync failed: {QUOTED}", extra={"reason": QUOTED})
    finally:
        logging.getLogger().handlers.clear()
    assert shows_none(stream.getvalue())


def test_an_account_secret_is_masked_in_the_commands_output(tmp_path: Path) -> None:
    path = config_with_account_secrets(tmp_path)
    stored_errors_quoting_the_secrets(path)
    for command in (("deadletters", "list"), ("status",), ("unmatched",)):
        result = subprocess.run(
            [sys.executable, "-m", "watchbridge", *command, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert QUOTED.split()[0] in result.stdout, (command, result.stdout, result.stderr)
        assert shows_none(result.stdout + result.stderr), command


def test_an_account_secret_is_masked_on_the_status_page_and_api(tmp_path: Path) -> None:
    path = config_with_account_secrets(tmp_path)
    stored_errors_quoting_the_secrets(path)
    runtime = build_runtime(load_config(path, {}))
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        api = httpx.get(f"{app.url}/api/status").text
        page = httpx.get(f"{app.url}/").text
    assert shows_none(api) and shows_none(page)


def test_an_account_secret_is_masked_in_an_alert(tmp_path: Path, receiver: AlertReceiver) -> None:
    path = config_with_account_secrets(tmp_path, receiver.apprise_url)
    runtime = build_runtime(load_config(path, {}))
    runtime.open()
    try:
        asyncio.run(runtime.notifier.notify("credentials", f"AniList {QUOTED}", f"body {QUOTED}"))
    finally:
        runtime.close()
    [message] = receiver.messages
    assert shows_none(str(message["title"])) and shows_none(str(message["message"]))


# Tokens a sign-in keeps in the database, in no config: Trakt's pair (`auth trakt`), a
# Serializd login's, a Plex server token found through plex.tv. A service's message may quote
# one in words no secret-shaped pattern knows.
TRAKT_ACCESS = "tr-acc-5550123456"
TRAKT_REFRESH = "tr-ref-5550654321"
SERIALIZD_TOKEN = "sz-jwt-8675309000"
PLEX_SERVER_TOKEN = "px-srv-1123581321"
KEPT_TOKENS = (TRAKT_ACCESS, TRAKT_REFRESH, SERIALIZD_TOKEN, PLEX_SERVER_TOKEN)
QUOTING_TOKENS = "refused: " + " and ".join(KEPT_TOKENS)


def shows_no_token(text: str) -> bool:
    return "********" in text and not [t for t in KEPT_TOKENS if t in text]


def trakt_pair(access: str, refresh: str) -> dict[str, object]:
    return {"access_token": access, "refresh_token": refresh, "created_at": 1.0, "expires_in": 9e9}


def sign_ins_kept_and_quoted(path: Path) -> None:
    with Store.open(path.parent / "watchbridge.db") as store:
        store.put_token("trakt", "me", trakt_pair(TRAKT_ACCESS, TRAKT_REFRESH), 1.0)
        store.put_token("serializd", "me", {"token": SERIALIZD_TOKEN, "username": "me"}, 1.0)
        store.put_token("plex-server", "me", {"token": PLEX_SERVER_TOKEN, "machine_id": "m"}, 1.0)
        rows = [NewOutboxRow("serializd", "me", "play", {}, f"k{n}", f"i{n}") for n in range(3)]
        store.enqueue(rows, 1.0)
        dead, held, waiting = store.claim("w", 2.0)
        store.mark_dead(dead.id, 3.0, f"gave up: {QUOTING_TOKENS}")
        store.hold(held.id, 3.0, 4.0, f"held: {QUOTING_TOKENS}")
        store.retry_later(waiting.id, 3.0, 9.0, f"unmatched: {QUOTING_TOKENS}")
        link_run = store.start_run("a", 1.0)
        assert link_run is not None
        store.finish_run(link_run, 2.0, "failed", {}, 3, f"run: {QUOTING_TOKENS}")


def test_a_token_kept_in_the_database_is_masked_in_the_commands_output(tmp_path: Path) -> None:
    path = config_with_account_secrets(tmp_path)
    sign_ins_kept_and_quoted(path)
    for command in (("deadletters", "list"), ("status",), ("unmatched",)):
        result = subprocess.run(
            [sys.executable, "-m", "watchbridge", *command, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert "refused: " in result.stdout, (command, result.stdout, result.stderr)
        assert shows_no_token(result.stdout + result.stderr), command


def test_a_token_kept_in_the_database_is_masked_on_the_status_page_and_api(
    tmp_path: Path,
) -> None:
    path = config_with_account_secrets(tmp_path)
    sign_ins_kept_and_quoted(path)
    runtime = build_runtime(load_config(path, {}))
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        api = httpx.get(f"{app.url}/api/status").text
        page = httpx.get(f"{app.url}/").text
    assert shows_no_token(api) and shows_no_token(page)


@contextlib.contextmanager
def served(
    tmp_path: Path, receiver: AlertReceiver
) -> Iterator[tuple[Runtime, io.StringIO, Redactor]]:
    """The service's runtime on a config with account secrets and kept sign-ins, opened and
    logging as `serve` does: the runtime, its log's text and the log's redactor."""
    path = config_with_account_secrets(tmp_path, receiver.apprise_url)
    sign_ins_kept_and_quoted(path)
    config = load_config(path, {})
    stream = io.StringIO()
    logged = setup_logging("info", "text", secret_values(config), stream=stream)
    runtime = build_runtime(config)
    runtime.open()
    try:
        yield runtime, stream, logged
    finally:
        runtime.close()
        logging.getLogger().handlers.clear()


def test_a_token_kept_before_or_after_the_start_is_masked_in_the_log_and_alerts(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    renewed = trakt_pair("tr-acc-renewed-777", "tr-ref-renewed-777")
    with served(tmp_path, receiver) as (runtime, stream, _):
        runtime.store.put_token("trakt", "me", renewed, 5.0)  # as a Trakt refresh does
        said = f"{QUOTING_TOKENS} and {renewed['access_token']} and {renewed['refresh_token']}"
        logging.getLogger("t").warning(f"sync failed: {said}", extra={"reason": said})
        asyncio.run(runtime.notifier.notify("credentials", f"Trakt {said}", f"body {said}"))
    [message] = receiver.messages
    for text in (stream.getvalue(), str(message["title"]), str(message["message"])):
        assert shows_no_token(text) and "renewed" not in text, text


def test_a_token_another_process_kept_is_masked_once_the_service_reads_it(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    # `watchbridge auth trakt` run while the service runs keeps the new pair through its own
    # Store on the same file; the service reads it from the database before its first use.
    signed_in = trakt_pair("tr-acc-elsewhere-42", "tr-ref-elsewhere-42")
    with served(tmp_path, receiver) as (runtime, stream, _):
        with Store.open(runtime.store.path) as other:  # the `auth` command's
            other.put_token("trakt", "me", signed_in, 5.0)
        assert runtime.store.get_token("trakt", "me") == signed_in  # as the Trakt client does
        said = f"refused: {signed_in['access_token']} and {signed_in['refresh_token']}"
        logging.getLogger("t").warning(f"sync failed: {said}", extra={"reason": said})
        asyncio.run(runtime.notifier.notify("credentials", f"Trakt {said}", f"body {said}"))
        shown = runtime.redact(said)
    [message] = receiver.messages
    for text in (stream.getvalue(), str(message["title"]), str(message["message"]), shown):
        assert "refused: ********" in text and "elsewhere" not in text, text


def test_a_sign_in_renewed_for_months_masks_its_latest_tokens_and_no_more_every_line(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    # Trakt's tokens last a day: the service renews a profile's pair every day or so for as
    # long as it runs. Each log line, alert and status text goes through every masked value.
    pairs = [trakt_pair(f"tr-acc-day-{day:04d}", f"tr-ref-day-{day:04d}") for day in range(400)]
    with served(tmp_path, receiver) as (runtime, stream, logged):
        redactors = {"log": logged, "alerts": runtime.notifier._redact, "status": runtime.redact}
        at_start = {name: len(redact.secrets) for name, redact in redactors.items()}
        for day, pair in enumerate(pairs):
            runtime.store.put_token("trakt", "me", pair, 86400.0 * day)  # as a refresh does
        latest = [
            str(pair[field]) for pair in pairs[-2:] for field in ("access_token", "refresh_token")
        ]
        said = f"{QUOTING_TOKENS} and {' and '.join(latest)}"
        logging.getLogger("t").warning(f"sync failed: {said}", extra={"reason": said})
        asyncio.run(runtime.notifier.notify("credentials", f"Trakt {said}", f"body {said}"))
    # The pair in use and the one it replaced, beside those kept at the start: no more.
    grown = {name: len(redact.secrets) - at_start[name] for name, redact in redactors.items()}
    assert grown == {"log": 4, "alerts": 4, "status": 4}
    [message] = receiver.messages
    for text in (stream.getvalue(), str(message["title"]), str(message["message"])):
        assert shows_no_token(text) and "tr-acc-day" not in text and "tr-ref-day" not in text, text


# A secret of the config (Jellyfin's API key, in a household with both servers), and a token
# in no config but in a URL (`X-Plex-Token=`, `access_token=`).
CONFIG_SECRET = "jf-key-3141592653"
URL_TOKEN = "px-url-2718281828"


def test_a_webhook_payload_shown_by_unmatched_masks_its_tokens(
    tmp_path: Path, start_fake: Any
) -> None:
    # A Plex scrobble whose show carries only a TheTVDB id: with no Trakt and no Plex server
    # to ask, Serializd (which needs TMDB's) waits as unmatched. The payload Plex sent holds a
    # thumbnail URL with a token, and a secret of the config in a key no pattern knows;
    # `unmatched --payload` prints that payload as Plex sent it.
    serializd = start_fake(FakeSerializd())
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    thumb = f"https://nas.local:32400/library/metadata/73155/thumb/1?X-Plex-Token={URL_TOKEN}"
    payload["Metadata"]["thumb"] = thumb
    payload["Server"]["accessKey"] = CONFIG_SECRET
    port = free_port()
    email, password, _ = SERIALIZD_USER
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        f"server: {{host: 127.0.0.1, port: {port}, webhook_secret: {HOOK_SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'watchbridge.db'}}}\n"
        f"services:\n  serializd: {{api_url: '{serializd.url}'}}\n"
        f"  jellyfin: {{url: 'http://127.0.0.1:9', api_key: {CONFIG_SECRET}}}\n"
        "profiles:\n  me:\n    users: {plex: ['1']}\n"
        f"    accounts: {{serializd: {{email: '{email}', password: '{password}'}}}}\n",
        encoding="utf-8",
    )
    service = ServiceProcess(path, port).start()
    try:
        body, content_type = plex_multipart(payload)
        url = f"{service.url}/webhooks/plex/{HOOK_SECRET}"
        answer = httpx.post(url, content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 202, answer.text
        wait_for(lambda: "S05E16" in watchbridge("unmatched", "--config", str(path)).stdout)
    finally:
        service.kill()
    result = watchbridge("unmatched", "--payload", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "sent:" in result.stdout and "/thumb/1?X-Plex-Token=********" in result.stdout
    assert '"accessKey":"********"' in result.stdout.replace(" ", ""), result.stdout
    for token in (URL_TOKEN, CONFIG_SECRET):
        assert token not in result.stdout + result.stderr


def anilist_signing_in(
    tmp_path: Path, start_fake: Any, client_secret: str = ""
) -> tuple[FakeAniList, Path]:
    """A fake AniList and a config whose profile `me` signs in to it (`auth anilist`)."""
    anilist = start_fake(FakeAniList())
    assert isinstance(anilist, FakeAniList)
    secret = f"    client_secret: {client_secret}\n" if client_secret else ""
    path = write_config(
        tmp_path,
        f"services:\n  anilist:\n    api_url: {anilist.url}\n    auth_url: {anilist.auth_url}\n"
        f"    client_id: '{ANILIST_CLIENT_ID}'\n{secret}"
        "profiles:\n  me:\n    accounts:\n      anilist: {}\n",
    )
    return anilist, path


def test_a_commands_error_line_masks_what_it_quotes(tmp_path: Path, start_fake: Any) -> None:
    # AniList's answer to a sign-in, quoted in the error, names the app's client secret (the
    # config's) and a URL with a token in it.
    anilist, path = anilist_signing_in(tmp_path, start_fake, ANILIST_CLIENT_SECRET)
    quoted = (
        f"Invalid token for client {ANILIST_CLIENT_SECRET}, "
        f"see https://anilist.co/help?access_token={URL_TOKEN}"
    )
    anilist.fail_graphql_next(quoted, 401)
    token = anilist.issue_token()
    result = watchbridge("auth", "anilist", "--config", str(path), "--token", token)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "Invalid token for client ********" in line, line
    assert "access_token=********" in line, line
    assert ANILIST_CLIENT_SECRET not in result.stderr and URL_TOKEN not in result.stderr


def test_a_pasted_anilist_token_the_service_refuses_is_masked_in_the_error_line(
    tmp_path: Path, start_fake: Any
) -> None:
    # The token pasted to `auth anilist` is in no config and, refused, never kept in the
    # database: AniList's answer quoting it must not put it on the terminal (or a cron mail).
    anilist, path = anilist_signing_in(tmp_path, start_fake)
    token = anilist.issue_token()
    anilist.fail_graphql_next(f"Invalid token {token} for this client", 401)
    result = watchbridge("auth", "anilist", "--config", str(path), "--token", f" {token}\n")
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "Invalid token ******** for this client" in line, line
    assert token not in result.stdout + result.stderr


def test_a_trakt_refusal_cut_short_shows_no_part_of_a_token_it_quoted() -> None:
    # The masking knows each token whole: a cut through one would show its first half.
    token = "9f8e7d6c5b4a39281706f5e4d3c2b1a0" * 2
    said = "invalid_grant - " + "the token " * ((ANSWER_CHARS - 40) // 10) + token + " expired"
    text = refusal_text(httpx.Response(400, json={"error": said}))
    assert len(text) <= ANSWER_CHARS and text.endswith("the token...")
    assert token[:6] not in text


def test_a_text_cut_within_its_only_word_is_dropped_whole() -> None:
    assert clipped("x" * 300, 200) == "..."
    assert clipped("short  and\nplain", 200) == "short and plain"


def test_a_secret_an_error_text_quotes_is_kept_masked_in_the_database(tmp_path: Path) -> None:
    # A delivery's error (held, waiting, given up) and a link run's: what a process writes
    # there with its log set up (`serve`, the commands) keeps no secret the log masks.
    path = config_with_account_secrets(tmp_path)
    config = load_config(path, {})
    setup_logging("info", "text", secret_values(config), stream=io.StringIO())
    try:
        stored_errors_quoting_the_secrets(path)
    finally:
        logging.getLogger().handlers.clear()
    with contextlib.closing(sqlite3.connect(tmp_path / "watchbridge.db")) as conn:
        kept = [str(row) for row in conn.execute("SELECT last_error FROM outbox")]
        kept += [str(row) for row in conn.execute("SELECT error FROM sync_runs")]
    assert len(kept) == 4 and all(shows_none(text) for text in kept), kept


# What an earlier release kept unmasked (before error texts were stored masked): a dead
# letter's reason and a link run's error quoting the Serializd password, AniList's token and
# a Serializd sign-in's token; beside texts quoting no secret, which stay as they are.
EARLIER_QUOTING = f"Incorrect password: {SERIALIZD_PASSWORD} (token {ANILIST_TOKEN})"
EARLIER_PLAIN = ("gave up: 404 not found", "superseded", "unmatched: no TMDB show id for ep")


def kept_by_an_earlier_release(database: Path) -> None:
    """A database an earlier release left: its error texts written as the services said them."""
    with Store.open(database) as store:
        store.put_token("serializd", "me", {"token": SERIALIZD_TOKEN, "username": "me"}, 1.0)
    texts = [
        ("dead", f"gave up: {EARLIER_QUOTING}"),
        ("done", f"sent once more after: login refused for {SERIALIZD_TOKEN}"),
        ("dead", EARLIER_PLAIN[0]),
        ("done", EARLIER_PLAIN[1]),
        ("dead", EARLIER_PLAIN[2]),
        ("done", None),
    ]
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.executemany(
            "INSERT INTO outbox (target, profile, action, payload, ordering_key,"
            " idempotency_key, status, attempts, next_attempt_at, created_at, updated_at,"
            " last_error) VALUES ('serializd', 'me', 'play', '{}', ?, ?, ?, 3, 1, 1, ?, ?)",
            [
                (f"earlier-k{n}", f"earlier-i{n}", status, time.time(), error)
                for n, (status, error) in enumerate(texts)
            ],
        )
        conn.executemany(
            "INSERT INTO sync_runs (link, started_at, finished_at, outcome, error)"
            " VALUES ('a', ?, ?, 'failed', ?)",
            [
                (time.time(), time.time(), error)
                for error in (f"run: {EARLIER_QUOTING}", "run: 503")
            ],
        )


def test_an_upgrade_masks_the_secrets_an_earlier_release_kept_in_error_texts(
    tmp_path: Path,
) -> None:
    # The README promises a backup or a `sqlite3` dump of the database holds no secret the log
    # masks; texts an earlier release kept would otherwise hold them until discarded or pruned.
    port = free_port()
    path = write_config(
        tmp_path,
        "services:\n  anilist: {api_url: 'http://127.0.0.1:9'}\n"
        "  serializd: {api_url: 'http://127.0.0.1:9'}\n"
        "profiles:\n  me:\n    users: {plex: ['1']}\n"
        f"    accounts: {{anilist: {{token: {ANILIST_TOKEN}}},"
        f" serializd: {{email: a@b.c, password: {SERIALIZD_PASSWORD}}}}}\n",
        port=port,
    )
    database = tmp_path / "watchbridge.db"
    kept_by_an_earlier_release(database)
    service = ServiceProcess(path, port).start()
    try:
        service.wait_for_output("Application startup complete")
    finally:
        service.terminate()  # a clean stop: the log copied into the file, the file alone
    # The sign-in's token itself is kept, in its table (the service signs in with it).
    kept = "\n".join(
        line for line in kept_texts(database).splitlines() if 'INTO "tokens"' not in line
    )
    for secret in (SERIALIZD_PASSWORD, ANILIST_TOKEN, SERIALIZD_TOKEN):
        assert secret not in kept
    for secret in (SERIALIZD_PASSWORD, ANILIST_TOKEN):
        assert secret.encode() not in database.read_bytes()  # nor in a page SQLite freed
    assert "gave up: Incorrect password: ******** (token ********)" in kept
    assert "login refused for ********" in kept and "run: Incorrect password: ********" in kept
    with contextlib.closing(sqlite3.connect(database)) as conn:
        errors = {row[0] for row in conn.execute("SELECT last_error FROM outbox")}
        errors |= {row[0] for row in conn.execute("SELECT error FROM sync_runs")}
    assert {*EARLIER_PLAIN, None, "run: 503"} < errors
    assert "kept error texts masked" in service.output() and "texts=3" in service.output()


def test_texts_masked_once_are_not_rewritten_at_the_next_start(tmp_path: Path) -> None:
    # Every start looks: what it (or a write since) masked is left as it is, untouched.
    path = config_with_account_secrets(tmp_path)
    kept_by_an_earlier_release(tmp_path / "watchbridge.db")
    config = load_config(path, {})
    setup_logging("info", "text", secret_values(config), stream=io.StringIO())
    try:
        with Store.open(tmp_path / "watchbridge.db", busy_timeout=0.1) as store:
            first = store.mask_kept_errors()
            stored_errors_quoting_the_secrets(path)  # this release's writes: masked already
            # Nor does it wait for a command writing beside it (nothing to write).
            with contextlib.closing(sqlite3.connect(store.path or "")) as command:
                command.execute("BEGIN IMMEDIATE")
                again = store.mask_kept_errors()
    finally:
        logging.getLogger().handlers.clear()
    assert (first, again) == (2, 0)
