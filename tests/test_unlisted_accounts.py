"""Plays of an account no profile lists, where a listed person's plays went silent: a Plex
Home managed user given a Plex account of their own comes back with a new id and a new name
at once. Remembered across restarts, listed with the line to add, and alerted once
(`unlisted_account`) when it likely is that person's; a friend's account is only listed.
Over real HTTP against the running app, alerts as the receiver got them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import AppThread
from tests.ingest_samples import sample_json
from tests.test_app import wait_until
from tests.test_webhook_route import PLEX_SERVER
from watchbridge import maintenance, webhooks
from watchbridge.account_ids import Learnt
from watchbridge.app import Runtime, create_app
from watchbridge.config import parse_config
from watchbridge.statuspage import page_state, render, unlisted_fix
from watchbridge.unlisted import QUIET, Unlisted, probably_of
from watchbridge.wiring import build_runtime

SECRET = "unlisted-secret-5521"
DAY = 86400.0
KIDDO = "watchbridge: plays of Kiddo on Plex server Basement go nowhere"


def household(tmp_path: Path, receiver: AlertReceiver, kid: str = '["kid"]') -> str:
    """Alex (the owner, id 1) and a managed user, kid (id 5), on Plex server Basement."""
    return (
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [unlisted_account]}}\n"
        "profiles:\n"
        '  me: {users: {plex: ["alex"]}}\n'
        f"  kid: {{users: {{plex: {kid}}}}}\n"
    )


def runtime(text: str, clock: FakeClock) -> Runtime:
    return build_runtime(parse_config(text, Path("watchbridge.yaml"), {}), clock=clock)


def scrobble(account_id: int, name: str) -> dict[str, Any]:
    """The sample episode scrobbled on the samples' server by another account."""
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    payload["Account"] = {"id": account_id, "title": name}
    return payload


def post(app: AppThread, payload: dict[str, Any]) -> httpx.Response:
    files = {"payload": (None, json.dumps(payload), "application/json")}
    return httpx.post(f"{app.url}/webhooks/plex/{SECRET}", files=files)


def housekeeping(app_runtime: Runtime) -> None:
    asyncio.run(maintenance.check_unlisted_accounts(app_runtime))


def unlisted(app: AppThread) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{app.url}/api/status").json()["unlisted_accounts"]
    return found


def test_a_managed_users_new_plex_account_is_alerted_once_and_resolved_once_listed(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    text = household(tmp_path, receiver)
    first = runtime(text, clock)
    with AppThread(create_app(first, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(5, "kid")).status_code == 202
        clock.advance(DAY)
        # Kid's own Plex account now: a new id and a new name at once.
        answer = post(app, scrobble(9101, "Kiddo"))
        assert answer.json()["status"] == "ignored_unmapped_account"
        clock.advance(DAY)
        assert post(app, scrobble(1, "alex")).status_code == 202  # the owner keeps playing
        housekeeping(first)
        assert receiver.messages == []  # a day of it is no sign yet
    # Remembered across a restart, with the line to add.
    clock.advance(2 * DAY)
    second = runtime(text, clock)
    with AppThread(create_app(second, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(9101, "Kiddo")).status_code == 200
        (seen,) = unlisted(app)
        assert (seen["account_id"], seen["name"], seen["webhooks"], seen["plays"]) == (
            "9101",
            "Kiddo",
            2,
            2,
        )
        assert seen["line"] == 'profiles.NAME.users.plex: ["9101"]'
        shown = render(asyncio.run(page_state(second, clock())), clock())
        assert "<td>Kiddo (id 9101)</td>" in shown
        assert "write profiles.NAME.users.plex: [&quot;9101&quot;]" in shown
        housekeeping(second)
        housekeeping(second)  # once per account
        wait_until(lambda: bool(receiver.messages))
    (alert,) = receiver.messages
    assert alert["title"] == KIDDO
    lead = alert["message"].split("\n\n")[0]
    assert lead == (
        "Plays of Plex account Kiddo (id 9101) on Plex server Basement go nowhere: no profile"
        " lists it. Profile kid's account there has sent nothing since 2023-11-15, when this one"
        ' began: it may be kid\'s new account. If so, write profiles.kid.users.plex: ["kid",'
        ' "9101"] in the config; if it is a friend\'s, nothing to do.'
    )
    # Listed: resolved, and no longer remembered as unlisted.
    third = runtime(household(tmp_path, receiver, '["kid", "9101"]'), clock)
    with AppThread(create_app(third, extra_routes=webhooks.ROUTES)) as app:
        housekeeping(third)
        wait_until(lambda: len(receiver.messages) == 2)
        assert unlisted(app) == []
    assert receiver.titles()[-1] == f"Resolved: {KIDDO}"
    assert receiver.messages[-1]["message"] == (
        "Plays of Kiddo (id 9101) on Plex server Basement go to profile kid now."
    )


def test_a_friends_account_while_the_household_keeps_playing_is_only_listed(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    app_runtime = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(5, "kid")).status_code == 202
        assert post(app, scrobble(1, "alex")).status_code == 202
        clock.advance(DAY)
        assert post(app, scrobble(4242, "Sam")).status_code == 200  # a friend
        clock.advance(DAY)
        assert post(app, scrobble(5, "kid")).status_code == 202
        assert post(app, scrobble(1, "alex")).status_code == 202
        housekeeping(app_runtime)
        clock.advance(3 * DAY)
        assert post(app, scrobble(4242, "Sam")).status_code == 200
        housekeeping(app_runtime)
        (seen,) = unlisted(app)
    assert seen["name"] == "Sam" and seen["server"] == PLEX_SERVER
    assert receiver.messages == []


def test_an_alert_is_over_once_the_account_sends_nothing_for_a_month(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    app_runtime = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(5, "kid")).status_code == 202
        clock.advance(DAY)
        assert post(app, scrobble(9101, "Kiddo")).status_code == 200
        clock.advance(3 * DAY)
        housekeeping(app_runtime)
        wait_until(lambda: bool(receiver.messages))
        clock.advance(QUIET)
        housekeeping(app_runtime)
        wait_until(lambda: len(receiver.messages) == 2)
    assert receiver.titles() == [KIDDO, f"Resolved: {KIDDO}"]
    assert receiver.messages[-1]["message"].startswith(
        "Kiddo (id 9101) on Plex server Basement has sent nothing for 30 days"
    )


def test_watchbridge_status_lists_an_unlisted_account_with_the_line_to_add(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    text = household(tmp_path, receiver)
    with AppThread(create_app(runtime(text, FakeClock()), extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(9101, "Kiddo")).status_code == 200
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text, encoding="utf-8")
    said = subprocess.run(
        [sys.executable, "-m", "watchbridge", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "unlisted:      plex account Kiddo (id 9101) on Plex server Basement: 1 webhook(s),"
        " 1 play(s) ignored"
    ) in said
    assert 'write profiles.NAME.users.plex: ["9101"] (or ignore it: a friend\'s account)' in said


def tautulli_household(tmp_path: Path, receiver: AlertReceiver, kid_plex: str = "[]") -> str:
    """A household whose plays come by Tautulli (alex, kid); kid's Plex accounts, if any."""
    return (
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [unlisted_account]}}\n"
        "profiles:\n"
        '  me: {users: {tautulli: ["alex"]}}\n'
        f'  kid: {{users: {{tautulli: ["kid"], plex: {kid_plex}}}}}\n'
    )


def tautulli_watched(username: str, user_id: str) -> dict[str, Any]:
    payload = sample_json("tautulli", "watched_episode.json")
    payload |= {"username": username, "user": username, "user_id": user_id}
    return payload


def test_an_alert_is_resolved_once_plex_webhook_takes_the_accounts_plays(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    """Tautulli's reports of an account a profile lists for Plex are Plex's webhook's to send
    (sent_by_plex): listing the new account there ends its alert, as listing it for Tautulli
    does, rather than leaving it open with its row gone."""
    clock = FakeClock()
    first = runtime(tautulli_household(tmp_path, receiver), clock)
    url = f"/webhooks/tautulli/{SECRET}"
    with AppThread(create_app(first, extra_routes=webhooks.ROUTES)) as app:
        assert httpx.post(f"{app.url}{url}", json=tautulli_watched("kid", "5")).is_success
        clock.advance(DAY)
        answer = httpx.post(f"{app.url}{url}", json=tautulli_watched("kiddo", "9101"))
        assert answer.json()["status"] == "ignored_unmapped_account"
        clock.advance(3 * DAY)
        housekeeping(first)
        wait_until(lambda: bool(receiver.messages))
    title = receiver.titles()[0]
    assert "kiddo" in title.lower()
    second = runtime(tautulli_household(tmp_path, receiver, '["9101"]'), clock)
    with AppThread(create_app(second, extra_routes=webhooks.ROUTES)) as app:
        housekeeping(second)
        wait_until(lambda: len(receiver.messages) == 2, 5.0)
        assert unlisted(app) == []
    assert receiver.titles()[-1] == f"Resolved: {title}"
    assert receiver.messages[-1]["message"] == (
        "Plays of kiddo (id 9101) on Tautulli server Basement go to profile kid now, by Plex's"
        " own webhook."
    )


def test_an_alert_is_resolved_once_tautullis_webhook_takes_the_accounts_plays(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    """The other way round: Plex's webhook (fired for everyone on the owner's server) of an
    account a profile then lists for Tautulli's is that sender's (sent_by): its alert ends
    saying so, and it is no longer listed as an account to map."""
    clock = FakeClock()
    first = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(first, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(5, "kid")).status_code == 202
        clock.advance(DAY)
        assert post(app, scrobble(9101, "Kiddo")).json()["status"] == "ignored_unmapped_account"
        clock.advance(3 * DAY)
        housekeeping(first)
        wait_until(lambda: bool(receiver.messages))
    title = receiver.titles()[0]
    assert title == KIDDO
    listed = household(tmp_path, receiver).replace(
        'plex: ["kid"]', 'plex: [kid], tautulli: ["9101"]'
    )
    second = runtime(listed, clock)
    with AppThread(create_app(second, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(9101, "Kiddo")).json()["status"] == "ignored_sent_by_tautulli"
        housekeeping(second)
        wait_until(lambda: len(receiver.messages) == 2, 5.0)
        assert unlisted(app) == []
    assert receiver.titles()[-1] == f"Resolved: {title}"
    assert receiver.messages[-1]["message"] == (
        "Plays of Kiddo (id 9101) on Plex server Basement go to profile kid now,"
        " by Tautulli's webhook."
    )


def test_ignored_webhooks_are_answered_while_the_database_is_locked_and_told_once(
    tmp_path: Path, receiver: AlertReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """An account no profile lists still gets its 200 when its webhook cannot be counted (a
    sqlite3 shell in the middle of a write); a friend's Jellyfin progress reports every few
    seconds through a long lock make one warning, not one per webhook."""
    text = household(tmp_path, receiver).replace("storage: {", "storage: {busy_timeout: 0.2s, ")
    app_runtime = runtime(text, FakeClock())
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        shell = sqlite3.connect(tmp_path / "wb.db", isolation_level=None)
        try:
            shell.execute("BEGIN IMMEDIATE")
            for _ in range(3):
                answer = post(app, scrobble(4242, "Sam"))
                assert answer.status_code == 200
                assert answer.json()["status"] == "ignored_unmapped_account"
        finally:
            shell.close()
    said = [
        r for r in caplog.records if r.getMessage().startswith("could not note an unlisted account")
    ]
    assert [r.levelname for r in said if r.levelname == "WARNING"] == ["WARNING"]


def seen_on(server: str, account_id: str, name: str, source: str = "plex") -> Unlisted:
    """An unlisted account as the store remembers it, with one completed play."""
    return Unlisted(source, server, account_id, account_id, name, "", 0.0, 0.0, 1, 1)


def test_an_account_named_as_a_listed_persons_elsewhere_is_probably_theirs() -> None:
    # Remembered from webhooks: alex's owner account 1 on server home came named "alex"; sam
    # is listed by id on home, named "Sam" there.
    config = parse_config(
        'profiles: {alex: {users: {plex: ["home:1"]}}, sam: {users: {plex: ["77"]}}}',
        Path("watchbridge.yaml"),
        {},
    )
    learnt = [Learnt("alex", "home:1", "alex"), Learnt("sam", "77", "Sam")]
    friends = seen_on("friends", "1001", "Alex")  # alex's plex.tv id on a friend's server
    assert probably_of(config, friends, learnt) == "alex"
    assert unlisted_fix(config, friends, learnt) == (
        'probably alex\'s own account on another server: add "Alex" (or "1001") to'
        " profiles.alex.users.plex"
    )
    # The holiday house's server of alex's own: its owner is 1 there too.
    pi = seen_on("pi", "1", "alex")
    assert unlisted_fix(config, pi, learnt).endswith(
        'add "alex" (or "pi:1") to profiles.alex.users.plex'
    )
    # Nobody's name; a name two profiles have; Tautulli's friendly names: no guess.
    assert probably_of(config, seen_on("friends", "1002", "jordan"), learnt) is None
    both = [*learnt, Learnt("sam", "77", "alex")]
    assert probably_of(config, friends, both) is None
    assert probably_of(config, seen_on("friends", "1001", "alex", "tautulli"), learnt) is None
    assert unlisted_fix(config, seen_on("friends", "1002", "jordan"), learnt).endswith(
        "(or ignore it: a friend's account)"
    )
