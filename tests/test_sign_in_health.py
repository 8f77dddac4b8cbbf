"""Sign-in health where the user looks: each profile's Trakt, AniList and Serializd sign-in on
the status page, in `/api/status` (`sign_ins`) and as metrics, read from the store (no request
to the services), with what to run, and never a token. Against the fake Trakt and AniList over
real HTTP; the states themselves are pure (`sign_in_states`)."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.receiver import FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import AppThread, quick_refresh_race, sign_in_trakt
from watchbridge import statuspage
from watchbridge.app import create_app
from watchbridge.config import Config, parse_config
from watchbridge.downtime import downtime_notice
from watchbridge.maintenance import housekeeping
from watchbridge.services.anilist import AniListAuthError
from watchbridge.services.refusals import digest
from watchbridge.services.serializd import REFUSAL_KEPT, SerializdAuthError
from watchbridge.signins import Facts, iso, sign_in_states
from watchbridge.wiring import build_runtime, serializd_client

DAY = 86400.0
HOUR = 3600.0
TOKEN_LIFE = 7 * DAY  # what FakeTrakt gives
TRAKT_AUTH = "watchbridge auth trakt --profile me"
ANILIST_AUTH = "watchbridge auth anilist --profile fan"
# The sign-ins table's expiry of an access token the service refused: its expiry is void.
REFUSED_EXPIRY = "refused: sign in again"


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    return fake


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    return fake


@pytest.fixture
def now() -> FakeClock:
    return FakeClock(time.time())


def config_for(
    tmp_path: Path, trakt: FakeTrakt, anilist: FakeAniList, anilist_token: str
) -> Config:
    """`me` signs in to Trakt, `fan` to AniList (the token in the config), `kid` to nothing
    that ends (Plex)."""
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}}}}}
  fan: {{users: {{plex: ["2"]}}, accounts: {{anilist: {{token: "{anilist_token}"}}}}}}
  kid: {{users: {{plex: ["3"]}}, accounts: {{plex: {{}}}}}}
"""
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text)  # for the commands
    return quick_refresh_race(parse_config(text, path, {}))


@pytest.fixture
def config(
    tmp_path: Path, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> Iterator[Config]:
    token = anilist.issue_token(lifetime=10 * DAY, at=now())  # 10 days left
    made = config_for(tmp_path, trakt, anilist, token)
    runtime = build_runtime(made, clock=now)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=now())  # `watchbridge auth trakt`
    runtime.close()
    yield made


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    return fake


def served(config: Config, clock: FakeClock) -> tuple[dict[str, Any], str, str]:
    """/api/status's sign-ins, the page and the metrics of a service on this database."""
    api, page, metrics = served_whole(config, clock)
    return api["sign_ins"], page, metrics


def served_whole(config: Config, clock: FakeClock) -> tuple[dict[str, Any], str, str]:
    """/api/status, the page and the metrics of a service on this database."""
    runtime = build_runtime(config, clock=clock)
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        api = httpx.get(f"{app.url}/api/status")
        page = httpx.get(f"{app.url}/").text
        metrics = httpx.get(f"{app.url}/metrics").text
    assert api.status_code == 200
    sign_ins = api.json()["sign_ins"]
    # The AniList lines kept for scripts say what `sign_ins` says (a refused token included).
    assert api.json()["anilist_sign_ins"] == [
        f"{profile}: {one['message']}"
        for profile, ones in sign_ins.items()
        for one in ones
        if one["service"] == "anilist"
    ]
    return api.json(), page, metrics


def secrets_of(trakt: FakeTrakt, anilist: FakeAniList) -> list[str]:
    """Every token the fakes issued, whole and its first characters."""
    tokens = [t for pair in trakt.tokens.values() for t in (pair.access_token, pair.refresh_token)]
    tokens += list(anilist.tokens)
    assert tokens
    return tokens + [t[:12] for t in tokens] + [t.split(".")[-1][:12] for t in anilist.tokens]


def assert_no_token(trakt: FakeTrakt, anilist: FakeAniList, *texts: str) -> None:
    for secret in secrets_of(trakt, anilist):
        for text in texts:
            assert secret not in text


def metric(text: str, name: str, service: str, profile: str) -> float:
    wanted = f'{name}{{profile="{profile}",service="{service}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(line.split()[-1])


def test_a_fresh_trakt_sign_in_and_an_anilist_one_ending_in_ten_days(
    config: Config, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    sign_ins, page, metrics = served(config, now)
    assert sign_ins["kid"] == []  # Plex tokens have no expiry
    (me,) = sign_ins["me"]
    assert me == {
        "service": "trakt",
        "state": "ok",
        "expires_at": iso(now() + TOKEN_LIFE),
        "refresh_due": False,
        "last_refresh": None,
        "last_refresh_at": None,
        "message": me["message"],
        "refused": False,
    }
    assert "renews itself" in me["message"]
    (fan,) = sign_ins["fan"]
    assert fan["service"] == "anilist" and fan["state"] == "ends_soon"
    assert fan["expires_at"] == iso(int(now() + 10 * DAY))
    assert ANILIST_AUTH in fan["message"] and "in 10 days" in fan["message"]

    assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "me") == 1.0
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "trakt", "me") == pytest.approx(
        TOKEN_LIFE, abs=5
    )
    assert metric(metrics, "watchbridge_sign_in_ok", "anilist", "fan") == 0.0
    # Issued at the test's clock; its `exp` is whole seconds.
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "anilist", "fan") == pytest.approx(
        10 * DAY, abs=1
    )
    assert 'service="plex"' not in metrics

    assert '<p id="sign-ins">Sign-ins:</p>' in page
    assert "<td>me</td><td>trakt</td><td>works</td>" in page
    assert '<td>fan</td><td>anilist</td><td><span class="bad">ends soon</span>' in page
    assert f"{ANILIST_AUTH}`</span>" in page
    assert_no_token(trakt, anilist, str(sign_ins), page, metrics)
    assert trakt.requests == []  # read from the store: nothing asked of Trakt


def test_a_sign_in_that_renews_itself_shows_no_date_to_act_by_and_anilist_keeps_its_end(
    tmp_path: Path, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    # "works | in 6 d (6 Dec 17:24) | ... (the access token ends 2026-12-06 17:24 UTC)" read
    # as a chore due in 6 days, for a sign-in watchbridge renews by itself. AniList's cannot
    # be renewed: its end is the user's to act by.
    config = config_for(tmp_path, trakt, anilist, anilist.issue_token(lifetime=300 * DAY, at=now()))
    runtime = build_runtime(config, clock=now)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=now())
    runtime.close()
    _, page, _ = served(config, now)
    rows = page.split('<p id="sign-ins">')[1].split("</table>")[0].split("<tr>")
    (trakt_row,) = [row for row in rows if row.startswith("<td>me</td>")]
    assert trakt_row.startswith("<td>me</td><td>trakt</td><td>works</td><td>renews itself</td>")
    assert "signed in; renews itself, nothing to do (next renewal before " in trakt_row
    assert " in 6 d" not in trakt_row and "ends" not in trakt_row
    (fan_row,) = [row for row in rows if row.startswith("<td>fan</td>")]
    assert fan_row.startswith("<td>fan</td><td>anilist</td><td>not tried yet</td><td>in 299 d (")


def test_watchbridge_status_lists_every_sign_in_and_what_to_run(
    config: Config, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "watchbridge", "status", "--config", str(config.source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index("sign-ins:")
    trakt_line, anilist_line = lines[at + 1 : at + 3]
    assert trakt_line.startswith("  trakt/me: signed in; renews itself")
    assert anilist_line.startswith("  anilist/fan: ends soon: ends ")
    assert ANILIST_AUTH in anilist_line
    assert "kid" not in result.stdout  # Plex tokens have no expiry
    assert_no_token(trakt, anilist, result.stdout)


@pytest.mark.anyio
async def test_a_sign_in_past_expiry_whose_renewal_trakt_refused_says_refused_and_what_to_run(
    config: Config, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    trakt.refuse_refresh_tokens()  # invalid_grant: the app removed on Trakt, an old token
    now.advance(TOKEN_LIFE + HOUR)  # the service was off; its first round tries the refresh
    runtime = build_runtime(config, clock=now)
    runtime.open()
    try:
        await housekeeping(runtime)
    finally:
        runtime.close()
    assert trakt.count("POST", "/oauth/token") == 1
    asked = len(trakt.requests)

    sign_ins, page, metrics = served(config, now)
    (me,) = sign_ins["me"]
    assert me["state"] == "refused" and me["last_refresh"] == "refused"
    assert me["expires_at"] == iso(now() - HOUR)
    assert TRAKT_AUTH in me["message"] and "deliveries wait" in me["message"]
    assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "me") == 0.0
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "trakt", "me") == pytest.approx(
        -HOUR, abs=5
    )
    assert '<td>me</td><td>trakt</td><td><span class="bad">refused</span>' in page
    assert f"{TRAKT_AUTH}`</span>" in page
    assert_no_token(trakt, anilist, str(sign_ins), page, metrics)
    assert len(trakt.requests) == asked  # the page, the API and the metrics asked nothing

    # Signed in again: the refusal was about the old pair.
    runtime = build_runtime(config, clock=now)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=now())
    runtime.close()
    sign_ins, _, metrics = served(config, now)
    assert [s["state"] for s in sign_ins["me"]] == ["ok"]
    assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "me") == 1.0


def status_command(config: Config) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "watchbridge", "status", "--config", str(config.source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.anyio
async def test_a_serializd_password_not_used_yet_reads_not_tried_then_what_the_login_said(
    tmp_path: Path, serializd: FakeSerializd, now: FakeClock
) -> None:
    # A household without Trakt, just set up: nothing was delivered yet, so no login was
    # tried. The page said "works" for both, and the wrong password showed only after the
    # first delivery.
    user = serializd.user
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  tv: {{users: {{plex: ["1"]}}, accounts: {{serializd: {{email: {user.email}, password: {user.password}}}}}}}
  typo: {{users: {{plex: ["2"]}}, accounts: {{serializd: {{email: {user.email}, password: wrong}}}}}}
"""  # noqa: E501
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text)
    config = parse_config(text, path, {})
    fresh = build_runtime(config, clock=now)
    fresh.open()  # as the service's first start leaves the database
    fresh.close()

    sign_ins, page, metrics = served(config, now)
    for profile in ("tv", "typo"):
        (one,) = sign_ins[profile]
        assert one["state"] == "not_tried" and one["expires_at"] is None
        assert one["message"] == (
            f"the email and password in profiles.{profile}.accounts.serializd are first used "
            "when watchbridge first delivers to Serializd or a link syncs it; a wrong one "
            "shows here then"
        )
        assert f"<td>{profile}</td><td>serializd</td><td>not tried yet</td>" in page
        # Not a failure either: no alert rule on `watchbridge_sign_in_ok == 0` fires.
        assert metric(metrics, "watchbridge_sign_in_ok", "serializd", profile) == 1.0
    assert (
        '<span class="bad">'
        not in page.split('<p id="sign-ins">Sign-ins:</p>')[1].split("</table>")[0]
    )
    assert "  serializd/typo: not tried yet: the email and password in profiles.typo." in (
        status_command(config)
    )
    assert serializd.requests == []  # the page, the API and the metrics asked nothing

    runtime = build_runtime(config, clock=now)
    runtime.open()
    client = serializd_client(config, runtime)
    assert client is not None
    try:
        assert await client.login("tv") == user.username
        with pytest.raises(SerializdAuthError):
            await client.login("typo")
    finally:
        await client.aclose()
        runtime.close()

    sign_ins, page, metrics = served(config, now)
    assert [s["state"] for s in sign_ins["tv"]] == ["ok"]
    assert [s["state"] for s in sign_ins["typo"]] == ["refused"]
    assert "<td>tv</td><td>serializd</td><td>works</td>" in page
    assert '<td>typo</td><td>serializd</td><td><span class="bad">refused</span>' in page
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "tv") == 1.0
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "typo") == 0.0
    shown = status_command(config)
    assert "  serializd/tv: signed in; logs in again with the email and password in " in shown
    assert "  serializd/typo: refused: Serializd refused the email or password at the " in shown
    # The service reads the config at its start: a password put right waits for a restart.
    assert "check profiles.typo.accounts.serializd, then restart watchbridge\n" in shown


@pytest.mark.anyio
@pytest.mark.parametrize("later", [60.0, REFUSAL_KEPT + HOUR], ids=["at-once", "hours-later"])
async def test_a_refused_serializd_password_reads_refused_until_a_login_or_another_password(
    tmp_path: Path, serializd: FakeSerializd, now: FakeClock, later: float
) -> None:
    """A login refused (the password changed on serializd.com) read `ok` again with the old
    token's expiry once the refusal's 6 hours were over, with nothing tried since; and after
    the new password was put into the config, it read `refused` until a login went through."""
    user = serializd.user
    path = tmp_path / "watchbridge.yaml"

    def config_with(password: str) -> Config:
        text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{serializd: {{email: {user.email}, password: "{password}"}}}}}}
"""  # noqa: E501
        path.write_text(text)  # for `watchbridge status`
        return parse_config(text, path, {})

    async def read_diary(config: Config) -> None:
        runtime = build_runtime(config, clock=now)
        runtime.open()
        client = serializd_client(config, runtime)
        assert client is not None
        try:
            await client.diary("me")
        finally:
            await client.aclose()
            runtime.close()

    def serializd_of(config: Config) -> tuple[dict[str, Any], str, str]:
        sign_ins, page, metrics = served(config, now)
        (me,) = sign_ins["me"]
        return me, page, metrics

    first_password = user.password
    config = config_with(first_password)
    await read_diary(config)  # signed in: a token good for a year
    user.password = NEW_PASSWORD = "changed on serializd.com"
    serializd.expire_tokens()
    with pytest.raises(SerializdAuthError, match="refused the email or password"):
        await read_diary(config)
    refused = '<td>me</td><td>serializd</td><td><span class="bad">refused</span></td>'

    now.advance(later)  # no link run nor delivery since: nothing was tried
    me, page, metrics = serializd_of(config)
    assert (me["state"], me["refused"]) == ("refused", True)
    assert me["message"].startswith("Serializd refused the email or password at the last login")
    assert f"{refused}<td>{REFUSED_EXPIRY}</td>" in page
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "me") == 0.0
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "serializd", "me") == 0.0
    assert "  serializd/me: refused: Serializd refused the email " in status_command(config)

    # The new password put into the config and watchbridge restarted: not refused, not tried.
    fixed = config_with(NEW_PASSWORD)
    me, page, metrics = serializd_of(fixed)
    assert (me["state"], me["refused"], me["expires_at"]) == ("not_tried", False, None)
    assert me["message"] == (
        "the email or password in profiles.me.accounts.serializd changed since Serializd "
        "refused them; they are first used when watchbridge first delivers to Serializd or a "
        "link syncs it; a wrong one shows here then"
    )
    assert "<td>me</td><td>serializd</td><td>not tried yet</td>" in page
    assert metric(metrics, "watchbridge_sign_in_ok", "serializd", "me") == 1.0
    assert "  serializd/me: not tried yet: the email or password " in status_command(fixed)
    assert (serializd_of(config)[0]["state"]) == "refused"  # the one refused, still

    await read_diary(fixed)  # its first use logs in
    me, page, metrics = serializd_of(fixed)
    assert (me["state"], me["refused"]) == ("ok", False)
    assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "serializd", "me") > 300 * DAY
    assert REFUSED_EXPIRY not in page
    for kept in tmp_path.glob("wb.db*"):  # the passwords' fingerprints only, never them
        assert NEW_PASSWORD.encode() not in kept.read_bytes()
        assert first_password.encode() not in kept.read_bytes()


# --------------------------------------------------------------------------- pure states

NOW = 1_800_000_000.0


def trakt_pair(created_at: float, refresh: str = "r1") -> dict[str, object]:
    return {
        "access_token": "a1",
        "refresh_token": refresh,
        "created_at": created_at,
        "expires_in": TOKEN_LIFE,
    }


def outcome(what: str, refresh: str = "r1") -> dict[str, object]:
    import hashlib

    return {"outcome": what, "at": NOW - 60, "pair": hashlib.sha256(refresh.encode()).hexdigest()}


@pytest.mark.parametrize(
    ("stored", "last", "state"),
    [
        (None, None, "not_signed_in"),
        (trakt_pair(NOW - DAY), None, "ok"),
        (trakt_pair(NOW - 6 * DAY), None, "ok"),  # due for its refresh: the next round renews
        (trakt_pair(NOW - 6 * DAY), outcome("refused"), "refused"),  # still works, for a day
        (trakt_pair(NOW - 6 * DAY), outcome("unreachable"), "ends_soon"),
        (trakt_pair(NOW - 8 * DAY), outcome("unreachable"), "expired"),
        (trakt_pair(NOW - 8 * DAY), None, "expired"),
        (trakt_pair(NOW - DAY, "r2"), outcome("refused"), "ok"),  # signed in again since
        (trakt_pair(NOW - DAY), outcome("ok"), "ok"),
    ],
)
def test_the_states_of_a_trakt_sign_in(
    stored: dict[str, object] | None, last: dict[str, object] | None, state: str
) -> None:
    (sign_in,) = sign_in_states([Facts("me", "trakt", stored, last_refresh=last)], NOW)
    assert sign_in.state == state
    assert sign_in.ok is (state == "ok")
    if state in ("not_signed_in", "refused"):
        assert TRAKT_AUTH in sign_in.message
    assert "a1" not in sign_in.message and "r1" not in sign_in.message


def test_a_refresh_token_pasted_into_the_config_is_not_tried_until_trakt_answered_it() -> None:
    import hashlib

    unused = Facts("me", "trakt", None, configured="pasted-refresh-1")
    used = Facts(
        "me",
        "trakt",
        None,
        configured="pasted-refresh-1",
        pasted_used=hashlib.sha256(b"pasted-refresh-1").hexdigest(),
    )
    states = sign_in_states([unused, used], NOW)
    assert [s.state for s in states] == ["not_tried", "not_signed_in"]
    assert "first used when watchbridge first delivers to Trakt" in states[0].message
    assert TRAKT_AUTH in states[0].message
    assert not states[0].needs_you and states[1].needs_you


def test_a_serializd_login_refused_says_so_and_one_that_works_is_ok() -> None:
    refused = Facts("me", "serializd", None, refused="Serializd refused the email or password")
    fine = Facts("me", "serializd", {"token": "jwt", "username": "me", "expires_at": NOW + DAY})
    first = Facts("me", "serializd", None)
    stored = {"token": "jwt", "username": "me", "expires_at": NOW + DAY, "email": "Me@x.org"}
    same = Facts("me", "serializd", stored, configured="me@x.org")
    moved = Facts("me", "serializd", stored, configured="other@x.org")
    pasted = Facts("me", "serializd", stored, configured="me@x.org ")  # a space pasted after it
    states = sign_in_states([refused, fine, first, same, moved, pasted], NOW)
    assert [s.state for s in states] == ["refused", "ok", "not_tried", "ok", "not_tried", "ok"]
    assert [s.token_refused for s in states] == [True, False, False, False, False, False]
    assert states[0].works_until(NOW) == NOW  # no time left, as a refused token's
    assert states[1].expires_at == NOW + DAY
    assert "changed since the last login" in states[4].message
    assert all("jwt" not in s.message for s in states)


def test_a_serializd_token_in_the_config_reads_by_its_own_expiry_claim(
    serializd: FakeSerializd,
) -> None:
    serializd.token_lifetime = 300 * DAY
    token = serializd.issue_token()  # its claim: 300 days from the fake's now (the real time)
    now = serializd.now()
    unused = Facts("me", "serializd", None, configured=token, pasted=True)
    stored = {"token": token, "username": "alice_tv", "pasted": True}
    used = Facts("me", "serializd", stored, configured=token, pasted=True)
    refused_record = {"sha256": digest(token), "at": now - 60, "reason": "refused"}
    refused = Facts(
        "me", "serializd", stored, configured=token, pasted=True, refused_token=refused_record
    )
    states = sign_in_states([unused, used, refused], now)
    assert [s.state for s in states] == ["not_tried", "ok", "refused"]
    assert all(s.expires_at == pytest.approx(now + 300 * DAY, abs=5) for s in states)
    assert "the token in profiles.me.accounts.serializd.token is first used" in states[0].message
    assert "signed in with the pasted token until " in states[1].message
    assert "tvproject_credentials" in states[2].message
    assert all(token not in s.message for s in states)
    ending = sign_in_states([used], now + 290 * DAY)[0]
    ended = sign_in_states([used], now + 301 * DAY)[0]
    assert (ending.state, ended.state) == ("ends_soon", "expired")
    assert "(in 10 days; a pasted token cannot be renewed)" in ending.message


def test_an_anilist_token_in_the_config_is_not_tried_until_it_was_used(
    anilist: FakeAniList,
) -> None:
    token = anilist.issue_token(lifetime=300 * DAY)
    unused = Facts("fan", "anilist", None, configured=token)
    stored = {"access_token": token, "obtained_at": NOW, "expires_at": NOW + 300 * DAY}
    used = Facts("fan", "anilist", stored, configured=token)
    states = sign_in_states([unused, used], NOW)
    assert [s.state for s in states] == ["not_tried", "ok"]
    assert "first used when watchbridge first delivers to AniList" in states[0].message
    assert ANILIST_AUTH in states[0].message and token not in states[0].message


def test_an_anilist_sign_in_missing_or_ended_says_what_to_run() -> None:
    ended = {"access_token": "t", "obtained_at": NOW - 400 * DAY, "expires_at": NOW - DAY}
    states = sign_in_states([Facts("fan", "anilist", None), Facts("fan", "anilist", ended)], NOW)
    assert [s.state for s in states] == ["not_signed_in", "expired"]
    assert all(ANILIST_AUTH in s.message for s in states)


# --------------------------------------------------------------------------- refused in use

ANIME = 101


@pytest.mark.anyio
async def test_an_anilist_token_refused_at_delivery_reads_refused_until_signed_in_again(
    tmp_path: Path, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    # AniList stops taking the token (revoked, the app removed) while its expiry is months
    # away: the rows were held as "refused" but the sign-in read "signed in until ..." and
    # `watchbridge_sign_in_ok` stayed 1, so no alert rule on it fired.
    from watchbridge.deliver.anilist import AniListTarget
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.model import Ids, MediaRef, ref_to_dict
    from watchbridge.store import NewOutboxRow
    from watchbridge.wiring import anilist_client

    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(ANIME, episodes=12)
    config = config_for(tmp_path, trakt, anilist, anilist.issue_token(lifetime=300 * DAY, at=now()))
    runtime = build_runtime(config, clock=now)
    runtime.open()

    async def reverse() -> Callable[[MediaRef], tuple[int, int]]:
        return lambda item: (ANIME, item.number or 1)

    target = AniListTarget(
        anilist_client(config, runtime.store, now), runtime.store, config.delivery, now, reverse
    )
    worker = DeliveryWorker(lambda _: [target], config.delivery)
    worker.targets = {target.name: target}

    async def deliver_play(number: int) -> None:
        item = MediaRef("episode", show_ids=Ids(tmdb="5"), season=1, number=number)
        payload = {"item": ref_to_dict(item), "at": now() - 60}
        key = f"fan:anilist:{item.key()}"
        row = NewOutboxRow("anilist", "fan", "play", payload, key, f"{key}:{now()}")
        assert runtime.store.enqueue([row], now()) == 1
        for _ in range(3):
            await worker.pass_once(runtime)

    try:
        await deliver_play(1)
        assert runtime.store.outbox_counts()["done"] == 1
        (fan,) = served(config, now)[0]["fan"]
        assert fan["state"] == "ok"

        anilist.expire_tokens()  # AniList no longer takes it; its own expiry says 300 days
        await deliver_play(2)
        assert runtime.store.waits_for_sign_in("anilist", "fan")
        sign_ins, page, metrics = served(config, now)
        (fan,) = sign_ins["fan"]
        assert fan["state"] == "refused"
        assert fan["message"].startswith("AniList refused the token ")
        assert ANILIST_AUTH in fan["message"] and "deliveries wait" in fan["message"]
        assert metric(metrics, "watchbridge_sign_in_ok", "anilist", "fan") == 0.0
        # Its expiry column agrees: not "in 300 d" for a token AniList no longer takes.
        row = '<td>fan</td><td>anilist</td><td><span class="bad">refused</span></td>'
        assert f"{row}<td>{REFUSED_EXPIRY}</td>" in page
        # /api/status and the metric too: the shipped "AniList sign-in ends within two weeks"
        # rule (expiry < 14 days) fires for it, not 300 days from now.
        assert fan["refused"] is True and fan["expires_at"] is not None
        assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "anilist", "fan") == 0.0
        shown = status_command(config)
        assert "  anilist/fan: refused: AniList refused the token " in shown
        assert "on hold:       anilist for fan: 1 waiting" in shown
        assert_no_token(trakt, anilist, str(sign_ins), page, metrics, shown)

        # `watchbridge auth anilist` again: the held row is still flagged until it is tried,
        # but the refusal was of the old token. Issued at the test's clock, which stood still
        # while the deliveries above took their (real) time.
        await anilist_client(config, runtime.store, now).use_token(
            "fan", anilist.issue_token(lifetime=300 * DAY, at=now())
        )
        assert runtime.store.waits_for_sign_in("anilist", "fan")
        sign_ins, _, metrics = served(config, now)
        assert [s["state"] for s in sign_ins["fan"]] == ["ok"]
        assert metric(metrics, "watchbridge_sign_in_ok", "anilist", "fan") == 1.0
        assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "anilist", "fan") == (
            pytest.approx(300 * DAY, abs=1)  # its `exp`: whole seconds
        )
    finally:
        await target.aclose()
        runtime.close()


@pytest.mark.anyio
async def test_an_anilist_refusal_of_a_token_that_works_again_is_forgotten(
    tmp_path: Path, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    # AniList answered 401 once for a token it then took again: the refusal stayed on record,
    # so the day AniList deliveries waited for another sign-in (a media server's key refused,
    # which holds them "for a sign-in" too) the AniList sign-in read "refused" weeks late.
    from watchbridge.services.refusals import entry, refusal_of
    from watchbridge.wiring import anilist_client

    anilist.limit = anilist.burst_limit = 100_000
    token = anilist.issue_token(lifetime=300 * DAY)
    config = config_for(tmp_path, trakt, anilist, token)
    runtime = build_runtime(config, clock=now)
    runtime.open()
    client = anilist_client(config, runtime.store, now)
    try:
        anilist.fail_next(1, 401, body={"errors": [{"message": "Invalid token", "status": 401}]})
        with pytest.raises(AniListAuthError):
            await client.viewer("fan")
        assert refusal_of(runtime.store.get_token(entry("anilist"), "fan"), token) is not None
        await client.viewer("fan", refresh=True)  # the same token, taken
        assert refusal_of(runtime.store.get_token(entry("anilist"), "fan"), token) is None
    finally:
        await client.aclose()
        runtime.close()


@pytest.mark.anyio
async def test_a_trakt_sign_in_refused_even_after_a_refresh_reads_refused_until_signed_in_again(
    config: Config, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    # Trakt renews the sign-in but refuses the new access token too: the rows were held as
    # "rejects the sign-in ... even after a refresh" while the sign-in read "signed in; renews
    # itself" (its refresh went through) and `watchbridge_sign_in_ok` stayed 1.
    from watchbridge.deliver.trakt import TraktTarget
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.model import Ids, MediaRef, ref_to_dict
    from watchbridge.store import NewOutboxRow
    from watchbridge.wiring import trakt_client

    trakt.add_movie("The Matrix", 1999, tmdb=603)
    trakt.add_movie("Heat", 1995, tmdb=949)
    runtime = build_runtime(config, clock=now)
    runtime.open()
    client = trakt_client(config, runtime)
    assert client is not None
    target = TraktTarget(client, runtime.store, config.delivery, now)
    worker = DeliveryWorker(lambda _: [target], config.delivery)
    worker.targets = {target.name: target}

    async def deliver_play(tmdb: str) -> None:
        item = MediaRef("movie", ids=Ids(tmdb=tmdb))
        payload = {"item": ref_to_dict(item), "at": now() - 60}
        key = f"me:trakt:{item.key()}"
        row = NewOutboxRow("trakt", "me", "play", payload, key, f"{key}:{now()}")
        assert runtime.store.enqueue([row], now()) == 1
        for _ in range(3):
            await worker.pass_once(runtime)

    try:
        await deliver_play("603")
        assert runtime.store.outbox_counts()["done"] == 1
        (me,) = served(config, now)[0]["me"]
        assert me["state"] == "ok"

        trakt.refuse_access_tokens = True  # refreshes still give new pairs
        await deliver_play("949")
        assert runtime.store.waits_for_sign_in("trakt", "me")
        sign_ins, page, metrics = served(config, now)
        (me,) = sign_ins["me"]
        assert me["state"] == "refused"
        assert me["message"].startswith("Trakt refused the sign-in ")
        assert "even after renewing it" in me["message"] and "deliveries wait" in me["message"]
        assert TRAKT_AUTH in me["message"]
        row = '<td>me</td><td>trakt</td><td><span class="bad">refused</span></td>'
        assert f"{row}<td>{REFUSED_EXPIRY}</td>" in page
        assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "me") == 0.0
        assert '<td>me</td><td>trakt</td><td><span class="bad">refused</span>' in page
        shown = status_command(config)
        assert "  trakt/me: refused: Trakt refused the sign-in " in shown
        assert "on hold:       trakt for me: 1 waiting" in shown
        assert_no_token(trakt, anilist, str(sign_ins), page, metrics, shown)

        # `watchbridge auth trakt` again: another pair, so the refusal no longer reads current.
        trakt.refuse_access_tokens = False
        sign_in_trakt(runtime.store, trakt, "me", now=now())
        assert runtime.store.waits_for_sign_in("trakt", "me")
        sign_ins, _, metrics = served(config, now)
        assert [s["state"] for s in sign_ins["me"]] == ["ok"]
        assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "me") == 1.0
    finally:
        await target.aclose()
        runtime.close()


@pytest.mark.anyio
async def test_a_revoked_trakt_sign_in_does_not_read_as_working_until_its_expiry(
    config: Config, trakt: FakeTrakt, anilist: FakeAniList, now: FakeClock
) -> None:
    # The app removed on trakt.tv (or the password changed): the access token is refused,
    # then its renewal. Deliveries wait at once, yet the sign-in read "its access token works
    # until (a week later), then deliveries wait" on the page, in /api/status and `status`.
    from watchbridge.deliver.trakt import TraktTarget
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.model import Ids, MediaRef, ref_to_dict
    from watchbridge.store import NewOutboxRow
    from watchbridge.wiring import trakt_client

    trakt.add_movie("Heat", 1995, tmdb=949)
    runtime = build_runtime(config, clock=now)
    runtime.open()
    client = trakt_client(config, runtime)
    assert client is not None
    target = TraktTarget(client, runtime.store, config.delivery, now)
    worker = DeliveryWorker(lambda _: [target], config.delivery)
    worker.targets = {target.name: target}
    try:
        trakt.revoke_tokens()
        item = MediaRef("movie", ids=Ids(tmdb="949"))
        key = f"me:trakt:{item.key()}"
        payload = {"item": ref_to_dict(item), "at": now() - 60}
        row = NewOutboxRow("trakt", "me", "play", payload, key, f"{key}:{now()}")
        assert runtime.store.enqueue([row], now()) == 1
        for _ in range(3):
            await worker.pass_once(runtime)
        assert runtime.store.waits_for_sign_in("trakt", "me")

        sign_ins, page, metrics = served(config, now)
        (me,) = sign_ins["me"]
        assert me["state"] == "refused"
        assert "works until" not in me["message"]
        assert me["message"].startswith("Trakt refused the sign-in ")
        assert "deliveries wait" in me["message"] and TRAKT_AUTH in me["message"]
        # The sign-ins table's expiry agrees: not "in 6 d" for an access token Trakt refuses.
        row = '<td>me</td><td>trakt</td><td><span class="bad">refused</span></td>'
        assert f"{row}<td>{REFUSED_EXPIRY}</td>" in page
        # So do scripts and Grafana: the token's own expiry stays, flagged refused, and the
        # seconds left are none (a "days until it expires" panel read 6 days, no alert fired).
        assert me["refused"] is True and me["expires_at"] == iso(now() + TOKEN_LIFE)
        assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "trakt", "me") == 0.0
        shown = status_command(config)
        assert "  trakt/me: refused: Trakt refused the sign-in " in shown
        assert "works until" not in shown
        assert_no_token(trakt, anilist, str(sign_ins), page, metrics, shown)

        sign_in_trakt(runtime.store, trakt, "me", now=now())  # `watchbridge auth trakt`
        sign_ins, _, metrics = served(config, now)
        (me,) = sign_ins["me"]
        assert me["state"] == "ok" and me["refused"] is False
        assert metric(metrics, "watchbridge_sign_in_expiry_seconds", "trakt", "me") == (
            pytest.approx(TOKEN_LIFE, abs=5)
        )
    finally:
        await target.aclose()
        runtime.close()


@pytest.mark.anyio
async def test_a_trakt_refusal_of_an_access_token_that_works_again_is_forgotten(
    config: Config, trakt: FakeTrakt, now: FakeClock
) -> None:
    # As AniList's: a refusal on record of the token in use would read "refused" weeks late
    # the day Trakt deliveries waited for a sign-in for another reason.
    from watchbridge.services.refusals import entry, refusal_of
    from watchbridge.services.trakt import TraktAuthError
    from watchbridge.wiring import trakt_client

    runtime = build_runtime(config, clock=now)
    runtime.open()
    client = trakt_client(config, runtime)
    assert client is not None

    def refused_in_use() -> bool:
        in_use = (runtime.store.get_token("trakt", "me") or {}).get("access_token")
        return refusal_of(runtime.store.get_token(entry("trakt"), "me"), in_use) is not None

    try:
        trakt.refuse_access_tokens = True
        with pytest.raises(TraktAuthError, match="even after a refresh"):
            await client.last_activities("me")
        assert refused_in_use()
        trakt.refuse_access_tokens = False
        await client.last_activities("me")  # the same (renewed) pair, taken
        assert not refused_in_use()
    finally:
        await client.aclose()
        runtime.close()


KID_TOKEN = "kid-plex-token-7f6e5d4c"


def plex_config(tmp_path: Path, plex: Any, kid_token: str = KID_TOKEN) -> Config:
    """`alex` is read as the Plex server's owner (its token in services.plex), `kid` with a
    token pasted into the config; neither signs in to a service whose sign-in ends."""
    from tests.fakes.plex import TOKEN

    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  plex: {{url: "{plex.url}", token: {TOKEN}}}
profiles:
  alex: {{accounts: {{plex: {{}}}}}}
  kid: {{users: {{plex: ["kid"]}}, accounts: {{plex: {{token: {kid_token}}}}}}}
"""
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text)
    return parse_config(text, path, {})


@pytest.mark.anyio
async def test_a_plex_token_refused_at_delivery_is_listed_as_refused_until_another_is_given(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], now: FakeClock
) -> None:
    # The server stops taking the token pasted for `kid`: the rows were held ("the Plex server
    # refuses accounts.plex.token") but Plex was in no sign-in list and no
    # `watchbridge_sign_in_ok` series went to 0, so an alert rule on it never fired.
    from tests.fakes.plex import TOKEN, FakePlex
    from watchbridge.config import Link
    from watchbridge.deliver.plex import PlexTarget
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.model import Ids, MediaRef, ref_to_dict
    from watchbridge.readers.plex import make_reader, plex_client
    from watchbridge.store import NewOutboxRow

    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_show("200", "Breaking Bad", 2008, ["tmdb://1396"])
    for number in (1, 2):
        plex.add_episode(f"20{number}", "200", 1, number)
    plex.add_user(KID_TOKEN, 7, "kid")
    config = plex_config(tmp_path, plex)
    runtime = build_runtime(config, clock=now)
    runtime.open()
    reader = make_reader(config, runtime.store, Link(["plex", "trakt"]), ["kid"], now)
    await reader.read("kid", {}, None, True)  # the library map deliveries write by
    await reader.aclose()
    target = PlexTarget(plex_client(config, runtime.store, now), config, runtime.store, now)
    worker = DeliveryWorker(lambda _: [target], config.delivery)
    worker.targets = {target.name: target}

    async def deliver_play(number: int) -> None:
        item = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=number)
        payload = {"item": ref_to_dict(item), "at": now() - 60}
        key = f"kid:plex:{item.key()}"
        row = NewOutboxRow("plex", "kid", "play", payload, key, f"{key}:{now()}")
        assert runtime.store.enqueue([row], now()) == 1
        for _ in range(3):
            await worker.pass_once(runtime)

    def assert_no_plex_token(*texts: str) -> None:
        for text in texts:
            assert KID_TOKEN not in text and TOKEN not in text and KID_TOKEN[:12] not in text

    try:
        await deliver_play(1)
        assert runtime.store.outbox_counts()["done"] == 1
        sign_ins, _, metrics = served(config, now)
        assert sign_ins.get("kid", []) == [] and "watchbridge_sign_in_ok{" not in metrics

        del plex.users[KID_TOKEN]  # revoked on the server
        await deliver_play(2)
        assert runtime.store.waits_for_sign_in("plex", "kid")
        sign_ins, page, metrics = served(config, now)
        assert sign_ins.get("alex", []) == []
        (kid,) = sign_ins["kid"]
        assert (kid["service"], kid["state"], kid["expires_at"]) == ("plex", "refused", None)
        assert kid["message"].startswith(
            "the Plex server refused profiles.kid.accounts.plex.token "
        )
        assert (
            "deliveries wait: paste a current token for this server there, or run "
            in (kid["message"])
        )
        assert "`watchbridge auth plex --profile kid`" in kid["message"]
        assert metric(metrics, "watchbridge_sign_in_ok", "plex", "kid") == 0.0
        assert '<td>kid</td><td>plex</td><td><span class="bad">refused</span>' in page
        shown = status_command(config)
        assert "  plex/kid: refused: the Plex server refused profiles.kid.accounts.plex.token" in (
            shown
        )
        assert "on hold:       plex for kid: 1 waiting" in shown
        assert_no_plex_token(str(sign_ins), page, metrics, shown)

        # A new token pasted into the config: another token, so the refusal is no longer
        # current, though the held row stays flagged until it is tried.
        plex.add_user("kid-new-token-0a1b2c", 7, "kid")
        pasted = plex_config(tmp_path, plex, kid_token="kid-new-token-0a1b2c")
        assert runtime.store.waits_for_sign_in("plex", "kid")
        sign_ins, _, metrics = served(pasted, now)
        assert sign_ins.get("kid", []) == []
        assert "watchbridge_sign_in_ok{" not in metrics
    finally:
        await target.aclose()
        runtime.close()


@pytest.mark.anyio
async def test_a_plex_refusal_of_a_token_the_server_takes_again_is_forgotten(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], now: FakeClock
) -> None:
    # `watchbridge auth plex` may hand back the very server token refused once (a share
    # restored): only a delivery that goes through with it says it works again, else the
    # refusal would read as current whenever Plex deliveries waited for a sign-in later.
    from tests.fakes.plex import FakePlex
    from watchbridge.config import Link
    from watchbridge.deliver.plex import PlexTarget
    from watchbridge.model import Ids, MediaRef, ref_to_dict
    from watchbridge.readers.plex import make_reader, plex_client
    from watchbridge.services.refusals import entry, refusal_of
    from watchbridge.store import NewOutboxRow

    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_show("200", "Breaking Bad", 2008, ["tmdb://1396"])
    plex.add_episode("201", "200", 1, 1)
    plex.add_user(KID_TOKEN, 7, "kid")
    config = plex_config(tmp_path, plex)
    runtime = build_runtime(config, clock=now)
    runtime.open()
    reader = make_reader(config, runtime.store, Link(["plex", "trakt"]), ["kid"], now)
    await reader.read("kid", {}, None, True)
    await reader.aclose()
    target = PlexTarget(plex_client(config, runtime.store, now), config, runtime.store, now)

    async def deliver_play(at: float) -> None:
        item = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=1)
        payload = {"item": ref_to_dict(item), "at": at}
        key = f"kid:plex:{item.key()}:{at}"
        runtime.store.enqueue([NewOutboxRow("plex", "kid", "play", payload, key, key)], now())
        (claimed,) = runtime.store.claim("test", now(), 1, ["plex"])
        await target.deliver([claimed], now())

    def refused() -> bool:
        return refusal_of(runtime.store.get_token(entry("plex"), "kid"), KID_TOKEN) is not None

    try:
        del plex.users[KID_TOKEN]
        await deliver_play(now() - 120)
        assert refused()
        plex.add_user(KID_TOKEN, 7, "kid")  # the server takes the same token again
        await deliver_play(now() - 60)
        assert not refused()
    finally:
        await target.aclose()
        runtime.close()


def kid_only_config(tmp_path: Path, plex: Any, server_token: str) -> Config:
    """A household whose only profile, `kid`, is read with their own token: the server's
    owner is no profile."""
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  plex: {{url: "{plex.url}", token: {server_token}}}
profiles:
  kid: {{users: {{plex: ["kid"]}}, accounts: {{plex: {{token: {KID_TOKEN}}}}}}}
"""
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text)
    return parse_config(text, path, {})


@pytest.mark.anyio
async def test_the_plex_servers_own_token_refused_is_one_line_though_no_profile_is_the_owner(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], now: FakeClock
) -> None:
    # The server's token was kept as refused only for the profiles read with it, the owner's:
    # with the owner no profile, the status page, /api/status, `watchbridge status` and the
    # metric said nothing; only the link's error did.
    from tests.fakes.plex import TOKEN, FakePlex
    from watchbridge.config import Link
    from watchbridge.readers.plex import make_reader
    from watchbridge.services.plex import PlexAuthError
    from watchbridge.signins import current_sign_ins
    from watchbridge.store import Store

    plex = start_fake(FakePlex())
    assert isinstance(plex, FakePlex)
    plex.add_show("200", "Breaking Bad", 2008, ["tmdb://1396"])
    plex.add_episode("201", "200", 1, 1)
    plex.add_user(KID_TOKEN, 7, "kid")
    config = kid_only_config(tmp_path, plex, TOKEN)
    store = Store.open(config.storage.path)

    async def read() -> None:
        reader = make_reader(config, store, Link(["plex", "trakt"]), ["kid"], now)
        try:
            await reader.read("kid", {}, None, True)
        finally:
            await reader.aclose()

    try:
        await read()
        assert current_sign_ins(config, store, now()) == []

        plex.token = "the-owners-new-token"  # services.plex.token is refused from now on
        refused_at = now()
        with pytest.raises(PlexAuthError, match=r"does not accept services\.plex\.token"):
            await read()
        now.advance(HOUR)
        with pytest.raises(PlexAuthError):
            await read()  # refused again: still since the first refusal
        line = (
            f"the Plex server refuses services.plex.token since "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(refused_at))}: "
            "set the server owner's current token there"
        )
        assert [(s.profile, s.message) for s in current_sign_ins(config, store, now())] == [
            ("", line)
        ]
        api, page, metrics = served_whole(config, now)
        assert api["sign_ins"] == {"kid": []}
        (server,) = api["service_sign_ins"]
        assert (server["service"], server["state"], server["message"]) == (
            "plex",
            "refused",
            line,
        )
        assert metric(metrics, "watchbridge_sign_in_ok", "plex", "") == 0.0
        assert '<td>(server)</td><td>plex</td><td><span class="bad">refused</span>' in page
        assert f'<span class="bad">{html.escape(line)}</span>' in page
        shown = status_command(config)
        assert f"  plex (server): refused: {line}\n" in shown
        assert "kept:" not in shown  # the service-wide record is no profile's leftover
        for text in (str(api), page, metrics, shown):
            assert TOKEN not in text and KID_TOKEN not in text

        # The owner's current token in the config: another token, the refusal is not current.
        changed = kid_only_config(tmp_path, plex, "the-owners-new-token")
        api, _, metrics = served_whole(changed, now)
        assert api["service_sign_ins"] == []
        assert 'service="plex"' not in metrics
        assert "sign-ins:" not in status_command(changed)

        # The same token taken again: the next read that goes through with it ends it.
        kid_only_config(tmp_path, plex, TOKEN)
        assert current_sign_ins(config, store, now()) != []
        plex.token = TOKEN
        await read()
        assert current_sign_ins(config, store, now()) == []
        api, _, metrics = served_whole(config, now)
        assert api["service_sign_ins"] == []
        assert 'service="plex"' not in metrics
    finally:
        store.close()


def test_a_refused_plex_token_says_what_to_do_by_whose_it_is() -> None:
    from watchbridge.services.refusals import digest

    record = {"sha256": digest("t"), "at": NOW, "reason": "r"}

    def plex(whose: str, token: str = "t") -> Facts:
        return Facts("kid", "plex", {"token": token}, configured=whose, refused_token=record)

    states = sign_in_states(
        [plex("owner"), plex("pasted"), plex("signed_in"), plex("signed_in", "another")], NOW
    )
    # A refusal of another token than the one in use is not listed.
    assert [s.state for s in states] == ["refused"] * 3
    owner, pasted, signed_in = states
    assert "refused services.plex.token" in owner.message
    assert "set the server owner's current token there" in owner.message
    assert "paste a current token for this server there" in pasted.message
    assert "run `watchbridge auth plex --profile kid`" in signed_in.message
    assert all(not s.ok and s.needs_you for s in states)


# --------------------------------------------------------------------------- refused at a sync


@pytest.mark.anyio
async def test_tokens_refused_during_a_links_sync_read_refused_until_taken_or_signed_in_again(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # A link's sync met the refusal (nothing queued that could wait for a sign-in): the status
    # page, /api/status, `watchbridge status` and the metrics kept saying the sign-in works.
    from tests.test_sync_plex import JAMIE, JAMIE_TOKEN, setup
    from watchbridge.config import load_config
    from watchbridge.errors import WatchbridgeError
    from watchbridge.store import Store
    from watchbridge.sync import run_link

    path, trakt, plex = setup(tmp_path, start_fake, jamie=True)
    config = load_config(path, {})
    clock = FakeClock(time.time())

    async def sync() -> tuple[str, ...]:
        store = Store.open(config.storage.path)
        try:
            # In full: the cheap check reads Plex's history with the owner's token alone.
            try:
                result = await run_link(config, store, "plex-trakt", yes=True, full=True)
            except WatchbridgeError as exc:  # no profile could be read: the run failed
                return (exc.message,)
            for service in ("plex", "trakt"):
                for profile in ("alex", "jamie"):
                    assert not store.waits_for_sign_in(service, profile)
            return result.errors
        finally:
            store.close()

    def states(sign_ins: dict[str, Any], profile: str) -> dict[str, str]:
        return {s["service"]: s["state"] for s in sign_ins.get(profile, [])}

    assert await sync() == ()
    sign_ins, _, metrics = served(config, clock)
    assert states(sign_ins, "alex") == states(sign_ins, "jamie") == {"trakt": "ok"}

    del plex.users[JAMIE_TOKEN]  # the server no longer takes the token pasted for jamie
    (error,) = await sync()
    assert "jamie: the Plex server refuses accounts.plex.token" in error
    sign_ins, page, metrics = served(config, clock)
    assert states(sign_ins, "jamie") == {"trakt": "ok", "plex": "refused"}
    (jamie,) = [s for s in sign_ins["jamie"] if s["service"] == "plex"]
    assert jamie["message"].startswith(
        "the Plex server refused profiles.jamie.accounts.plex.token "
    )
    assert jamie["message"].endswith(
        "; reads and writes with it fail: paste a current token for this server there, or run "
        "`watchbridge auth plex --profile jamie`"
    )
    assert metric(metrics, "watchbridge_sign_in_ok", "plex", "jamie") == 0.0
    assert '<td>jamie</td><td>plex</td><td><span class="bad">refused</span>' in page
    assert JAMIE_TOKEN not in str(sign_ins) + page + metrics

    plex.add_user(JAMIE_TOKEN, JAMIE, "jamie")  # taken again: the next read ends the refusal
    assert await sync() == ()
    sign_ins, _, metrics = served(config, clock)
    assert states(sign_ins, "jamie") == {"trakt": "ok"}
    assert 'service="plex"' not in metrics

    trakt.refuse_access_tokens = True  # Trakt cut the accounts' API access; refreshes work
    (error,) = await sync()  # every profile failed: the run did, with the first's error
    assert "Trakt rejects the sign-in of profile alex even after a refresh" in error
    sign_ins, page, metrics = served(config, clock)
    assert states(sign_ins, "alex") == states(sign_ins, "jamie") == {"trakt": "refused"}
    (alex,) = sign_ins["alex"]
    assert alex["message"].startswith("Trakt refused the sign-in ")
    assert alex["message"].endswith(
        ", even after renewing it; reads and writes with it fail: "
        "run `watchbridge auth trakt --profile alex`"
    )
    assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "alex") == 0.0
    shown = status_command(config)
    assert "  trakt/alex: refused: Trakt refused the sign-in " in shown
    assert "`watchbridge auth trakt --profile jamie`" in shown

    # `watchbridge auth trakt` for alex: another pair, which reads as working at once.
    trakt.refuse_access_tokens = False
    store = Store.open(config.storage.path)
    try:
        sign_in_trakt(store, trakt, "alex", now=time.time())
    finally:
        store.close()
    sign_ins, _, metrics = served(config, clock)
    assert states(sign_ins, "alex") == {"trakt": "ok"}
    assert metric(metrics, "watchbridge_sign_in_ok", "trakt", "alex") == 1.0
    assert states(sign_ins, "jamie") == {"trakt": "refused"}  # until a request gets through
    assert await sync() == ()
    assert states(served(config, clock)[0], "jamie") == {"trakt": "ok"}


def test_a_sign_ins_time_is_told_on_the_households_clock(
    time_zone: Callable[[str], None],
) -> None:
    # On the status page (whose times are Berlin's) it said "2027-01-21 08:00 UTC".
    time_zone("Europe/Berlin")
    (sign_in,) = sign_in_states([Facts("me", "trakt", trakt_pair(NOW - DAY))], NOW)
    ends = datetime.fromtimestamp(NOW - DAY + TOKEN_LIFE, ZoneInfo("Europe/Berlin"))
    assert sign_in.message.endswith(f"next renewal before {ends:%Y-%m-%d %H:%M} CET)")


# A time of day in a text, and what follows it: ISO UTC (`Z`, `+00:00`) or a zone's name
# (`CET`, `UTC`, `-03` where a zone has no letters).
TIME_OF_DAY = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?(?P<after>\S*(?: \S+)?)")
ZONE_NAMED = re.compile(r"^(?:Z|\+00:00)|^ (?:[A-Z]{2,5}|[+-]\d{2}(?::?\d{2})?)\b")


def texts_of(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for one in value.values():
            yield from texts_of(one)
    elif isinstance(value, list):
        for one in value:
            yield from texts_of(one)


@pytest.mark.anyio
async def test_every_time_in_an_api_status_text_is_utc_or_names_its_zone(
    config: Config, trakt: FakeTrakt, now: FakeClock, time_zone: Callable[[str], None]
) -> None:
    # A script reading /api/status gets the page's texts, on the household's clock: a time
    # there without its zone (14:02) would be a different moment on every install.
    time_zone("Europe/Berlin")
    trakt.refuse_refresh_tokens()
    now.advance(TOKEN_LIFE + HOUR)
    runtime = build_runtime(config, clock=now)
    runtime.open()
    try:
        await housekeeping(runtime)
    finally:
        runtime.close()
    runtime = build_runtime(config, clock=now)
    with AppThread(create_app(runtime, extra_routes=statuspage.ROUTES)) as app:
        # What a start 2 hours after the last note it was alive tells (its start found none).
        runtime.downtime = downtime_notice(now() - 2 * HOUR, now(), ["plex"])
        api = httpx.get(f"{app.url}/api/status").json()
        page = httpx.get(f"{app.url}/").text
    (me,) = api["sign_ins"]["me"]
    assert me["expires_at"] == iso(now() - HOUR)  # the JSON's own times stay UTC
    times = [(text, m) for text in texts_of(api) for m in TIME_OF_DAY.finditer(text)]
    told = [text for text, _ in times]
    assert me["message"] in told and api["downtime"] in told  # both tell a time
    for text, found in times:
        assert ZONE_NAMED.match(found["after"]), f"a time without its zone in {text!r}"
    # They are the page's texts, word for word.
    assert html.escape(me["message"]) in page and html.escape(api["downtime"]) in page
