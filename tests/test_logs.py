"""Log lines never carry a secret, whatever the format and however the secret is escaped."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchbridge.config import parse_config
from watchbridge.logs import KeyValueFormatter, Redactor, Throttled, setup_logging
from watchbridge.redaction import secret_values
from watchbridge.wiring import build_runtime

SECRETS = ["pässwort-123", 'pa"ss\\word9']


@pytest.fixture(params=["text", "json"])
def logged(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("info", request.param, SECRETS, stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def line(stream: io.StringIO, message: str, **extra: object) -> str:
    logging.getLogger("t").warning(message, extra=extra)
    return stream.getvalue()


def test_a_config_secret_outside_ascii_is_masked(logged: io.StringIO) -> None:
    assert "sswort-123" not in line(logged, "login failed for pässwort-123")


def test_a_config_secret_with_quotes_and_backslashes_is_masked(logged: io.StringIO) -> None:
    written = line(logged, "x", reason='pw pa"ss\\word9')
    assert "word9" not in written and "********" in written


def test_tokens_in_a_json_text_are_masked(logged: io.StringIO) -> None:
    assert "RT_HIDE" not in line(logged, "x", reason='{"refresh_token": "RT_HIDE"}')


def test_a_token_in_a_url_is_masked_and_what_follows_it_kept(logged: io.StringIO) -> None:
    written = line(
        logged,
        "poster (https://nas:32400/thumb?X-Plex-Token=px-9a_b.c), ok",
        reason="see https://nas/a?token=t0k3n-9.z, then https://nas/b?api_key=k3y.",
    )
    assert "px-9a_b" not in written and "t0k3n" not in written and "k3y" not in written
    assert "X-Plex-Token=********), ok" in written
    assert "token=********, then" in written and "api_key=********." in written


def test_a_key_or_signature_in_a_url_query_is_masked(logged: io.StringIO) -> None:
    # A proxy in front of a service may take its key in the query (`?key=`, a signed `&sig=`).
    written = line(logged, "x", reason="https://proxy/trakt/?key=k3y-9z&sig=s1gn4ture&page=2")
    assert "k3y-9z" not in written and "s1gn4ture" not in written
    assert "?key=********&sig=********&page=2" in written


def test_our_own_message_about_a_secret_key_keeps_its_explanation(logged: io.StringIO) -> None:
    message = (
        "config not reloaded: w.yaml:5 services.plex.token: expected text, got a list;"
        " w.yaml:9 profiles.alice.accounts.anilist.token: required;"
        " w.yaml:2 server.api_token: starts or ends with a space or line break"
    )
    written = line(logged, message, reason="services.jellyfin.api_key: required")
    assert "services.plex.token: expected text, got a list" in written
    assert "profiles.alice.accounts.anilist.token: required" in written
    assert "server.api_token: starts or ends with a space" in written
    assert "services.jellyfin.api_key: required" in written
    assert "x-token: hide-me" not in line(logged, "x", reason="x-token: hide-me")


@pytest.mark.parametrize("as_ascii", [True, False])
def test_a_config_secret_escaped_in_a_stored_json_text_is_masked(as_ascii: bool) -> None:
    # A webhook's payload and a delivery's are kept as JSON (`unmatched --payload` shows one):
    # there a secret's `"` and `\` are escaped, and a letter outside ASCII may be (\u00e4).
    stored = json.dumps({"accessKey": SECRETS[1], "title": SECRETS[0]}, ensure_ascii=as_ascii)
    shown = Redactor(SECRETS)(stored)
    assert "word9" not in shown and "sswort-123" not in shown, shown
    assert json.loads(shown) == {"accessKey": "********", "title": "********"}


def test_a_value_that_only_begins_with_a_known_secret_is_masked_whole() -> None:
    masked = Redactor(["known-part"])("token=known-part-AND-MORE, password: known-part.")
    assert "AND-MORE" not in masked
    assert masked == "token=********, password: ********."


def test_a_password_or_token_field_is_masked_and_what_closes_it_kept(logged: io.StringIO) -> None:
    written = line(
        logged,
        "sign-in refused (password: hunt3r.2), try again",
        reason='[token=t0k-9] failed; see token: abc123. Then {"secret": "s p)c"}',
    )
    assert "hunt3r" not in written and "t0k-9" not in written and "abc123" not in written
    assert "s p)c" not in written and " p)c" not in written
    assert "(password: ********), try again" in written
    assert "[token=********] failed" in written and "token: ********. Then" in written


def test_a_bracket_or_dot_within_a_password_is_masked_with_it() -> None:
    assert Redactor([])("password: pa)ss.w0rd next") == "password: ******** next"


def test_basic_credentials_are_masked(logged: io.StringIO) -> None:
    assert "dXNlcjpodW50ZXIy" not in line(
        logged, "x", reason="Authorization: Basic dXNlcjpodW50ZXIy"
    )


def test_the_password_in_a_url_is_masked_and_the_host_kept(logged: io.StringIO) -> None:
    written = line(logged, "x", reason="GET https://bob:hunter2@proxy.lan/api failed")
    assert "hunter2" not in written and "proxy.lan" in written


def test_a_masked_json_line_is_still_one_json_object() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", SECRETS, stream=stream)
    try:
        written = line(stream, "x", reason='pw pa"ss\\word9', count=3)
    finally:
        logging.getLogger().handlers.clear()
    assert json.loads(written) | {"ts": 0} == {
        "ts": 0,
        "level": "warning",
        "logger": "t",
        "msg": "x",
        "reason": "pw ********",
        "count": 3,
    }


def test_a_webhook_secret_the_service_generated_is_masked(
    logged: io.StringIO, tmp_path: Path
) -> None:
    config = parse_config(f"storage: {{path: {tmp_path / 'wb.db'}}}\n", Path("w.yaml"), {})
    runtime = build_runtime(config)
    runtime.open()  # no server.webhook_secret: one is generated and kept in the database
    try:
        secret = runtime.webhook_secret
        assert secret and secret not in line(logged, f"POST /webhooks/plex/{secret}")
    finally:
        runtime.close()


def test_a_warning_uvicorn_gives_per_request_is_told_again_later_with_how_many_were_not() -> None:
    now = [0.0]
    throttled = Throttled(every=600.0, clock=lambda: now[0])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter(Redactor()))
    uvicorn = logging.getLogger("test.uvicorn.error")
    uvicorn.addHandler(handler)
    uvicorn.addFilter(throttled)
    uvicorn.propagate = False
    uvicorn.setLevel(logging.INFO)  # as the service sets it, whatever an earlier test left
    try:
        for second in range(0, 1200, 10):  # a request every 10 s for 20 minutes
            now[0] = float(second)
            uvicorn.warning("Invalid HTTP request received.")
        uvicorn.info("Started server process [%d]", 1)  # not a warning: never held back
        uvicorn.info("Started server process [%d]", 2)
    finally:
        uvicorn.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert [line.count("Invalid HTTP request received.") for line in lines[:2]] == [1, 1]
    assert "more_since_last_line" not in lines[0]
    assert "more_since_last_line=59" in lines[1]
    assert len(lines) == 4


# A webhook secret and a Trakt client_secret a user may well write with a `\` and a quote.
ESCAPABLE_HOOK_SECRET = "wh\\Zq'hook9"
ESCAPABLE_CLIENT_SECRET = "cs\"Yx\\'trakt7"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_with_a_backslash_or_quote_logged_in_a_repr_is_masked(
    fmt: str, tmp_path: Path
) -> None:
    config = parse_config(
        "server: {webhook_secret: 'wh\\Zq''hook9'}\n"
        "services: {trakt: {client_id: c1, client_secret: 'cs\"Yx\\''trakt7'}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n",
        Path("w.yaml"),
        {},
    )
    assert {ESCAPABLE_HOOK_SECRET, ESCAPABLE_CLIENT_SECRET} <= set(secret_values(config))
    stream = io.StringIO()
    setup_logging("info", fmt, secret_values(config), stream=stream)
    log = logging.getLogger("t")
    try:
        for secret in (ESCAPABLE_HOOK_SECRET, ESCAPABLE_CLIENT_SECRET):
            log.warning("in a list %r", [secret])
            log.warning("in a dict %r", {"secret": secret, "note": 'say "hi"'})
            log.warning("in a longer text %r", f'refused "{secret}"')
            log.warning("a repr of a repr %r", [ValueError(f"bad secret {secret!r}")])
            log.warning("as bytes %r", f"s={secret}".encode())
            log.warning("as ascii %a", [f"é {secret}"], extra={"sent": [secret]})
    finally:
        logging.getLogger().handlers.clear()
    written = stream.getvalue()
    assert written.count("********") >= 12, written
    for fragment in ("Zq", "hook9", "Yx", "trakt7"):
        assert fragment not in written, written
