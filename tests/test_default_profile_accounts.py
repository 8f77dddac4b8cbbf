"""Plays of an account no profile lists that the `default: true` profile takes: remembered,
listed with the line to add, and alerted once (`unlisted_account`) when a second person's
account (or a listed person's new one) lands in the default person's history. The first
account it takes, the one it was set up for, is only listed. Over real HTTP against the
running app, alerts as the receiver got them."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import AppThread
from tests.ingest_samples import sample_bytes
from tests.test_unlisted_accounts import SECRET, runtime, scrobble
from tests.test_unlisted_accounts import post as post_only
from tests.test_webhook_route import PLEX_SERVER
from watchbridge import maintenance, webhooks
from watchbridge.app import Runtime, create_app
from watchbridge.defaulted import KEPT_IN_MEMORY, Gate
from watchbridge.statuspage import page_state, render
from watchbridge.unlisted import QUIET, WAIT

DAY = 86400.0
HOUR = 3600.0
KIDDO = "watchbridge: plays of Kiddo on Plex server Basement go to profile me"


def household(tmp_path: Path, receiver: AlertReceiver, me: str = "", kid: str = '["kid"]') -> str:
    """Alex (the owner, id 1), whose profile is the default, and a managed user, kid (id 5),
    on Plex server Basement."""
    users = f", users: {{plex: {me}}}" if me else ""
    return (
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [unlisted_account]}}\n"
        "profiles:\n"
        f"  me: {{default: true{users}}}\n"
        f"  kid: {{users: {{plex: {kid}}}}}\n"
    )


def post(app: AppThread, payload: dict[str, Any]) -> httpx.Response:
    """A webhook, and what the route notes of its account after answering it, done."""
    answer = post_only(app, payload)
    app.settled()
    return answer


def housekeeping(app_runtime: Runtime) -> None:
    asyncio.run(maintenance.check_defaulted_accounts(app_runtime))


def taken_in(app: AppThread) -> list[dict[str, Any]]:
    status = httpx.get(f"{app.url}/api/status").json()
    found: list[dict[str, Any]] = status["default_profile_accounts"]
    return found


def on_server(payload: dict[str, Any], uuid: str, title: str) -> dict[str, Any]:
    payload["Server"] = {"uuid": uuid, "title": title}
    return payload


def test_the_account_the_default_profile_was_set_up_for_is_listed_not_alerted(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    app_runtime = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(1, "alex")).status_code == 202
        assert post(app, scrobble(1, "alex")).status_code == 202  # counted within the hour
        clock.advance(DAY)
        # The same person on a second server of theirs: the same name.
        attic = on_server(scrobble(1, "alex"), "f" * 40, "Attic")
        assert post(app, attic).status_code == 202
        assert post(app, scrobble(5, "kid")).status_code == 202  # listed: nothing noted
        housekeeping(app_runtime)
        clock.advance(WAIT)
        housekeeping(app_runtime)
        found = taken_in(app)
        shown = render(asyncio.run(page_state(app_runtime, clock())), clock())
    assert receiver.messages == []
    assert [(f["server"], f["name"], f["default_profile"], f["alerted"]) for f in found] == [
        ("f" * 40, "alex", "me", False),
        (PLEX_SERVER, "alex", "me", False),
    ]
    assert found[1]["webhooks"] == 1  # the second within the hour: written with the next
    assert found[1]["line"] == f'profiles.me.users.plex: ["{PLEX_SERVER}:1"]'
    assert "<td>alex (id 1) on Plex server Basement</td><td>me</td>" in shown
    assert (
        "its plays go to the default profile me; to keep them there, write"
        f" profiles.me.users.plex: [&quot;{PLEX_SERVER}:1&quot;]; if it is someone else&#x27;s,"
        " list it under their profile"
    ) in shown


def test_a_second_persons_account_taken_by_the_default_profile_is_alerted_once(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    text = household(tmp_path, receiver)
    first = runtime(text, clock)
    with AppThread(create_app(first, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(1, "alex")).status_code == 202
        clock.advance(DAY)
        # Kid's own Plex account now: a new id and a new name at once, no entry matches it.
        assert post(app, scrobble(9101, "Kiddo")).status_code == 202
        housekeeping(first)
        wait_until_told(receiver, 1)
        clock.advance(2 * HOUR)
        assert post(app, scrobble(9101, "Kiddo")).status_code == 202  # its next webhook
        housekeeping(first)
        found = {f["name"]: f for f in taken_in(app)}
    assert receiver.titles() == [KIDDO]
    lead = receiver.messages[0]["message"].split("\n\n")[0]
    assert lead == (
        "Plays of Plex account Kiddo (id 9101) on Plex server Basement go to me's history: no"
        " profile lists the account, so the default profile me takes it. Until 2023-11-15 it"
        " took one account's plays only (alex (id 1) on Plex server Basement). If this one is"
        " someone else's, list it under their profile (profiles.NAME.users.plex) and remove"
        " the plays it sent from me's history; if it is me's or meant to go there, write"
        ' profiles.me.users.plex: ["9101"]: its plays keep going there, and this alert is'
        " resolved."
    )
    kiddo = found["Kiddo"]
    assert (kiddo["alerted"], kiddo["webhooks"], kiddo["plays"]) == (True, 2, 2)
    assert found["alex"]["alerted"] is False
    # Not again after a restart, and the `status` command lists it.
    second = runtime(text, clock)
    with AppThread(create_app(second, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(9101, "Kiddo")).status_code == 202
        housekeeping(second)
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text, encoding="utf-8")
    said = subprocess.run(
        [sys.executable, "-m", "watchbridge", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "default:       plays of plex account Kiddo (id 9101) on Plex server Basement go to the"
        " default profile me (3 webhook(s), 3 play(s)"
    ) in said
    assert receiver.titles() == [KIDDO]
    # Listed under kid: resolved, and no longer remembered.
    third = runtime(household(tmp_path, receiver, kid='["kid", "9101"]'), clock)
    with AppThread(create_app(third, extra_routes=webhooks.ROUTES)) as app:
        housekeeping(third)
        wait_until_told(receiver, 2)
        assert [f["name"] for f in taken_in(app)] == ["alex"]
    assert receiver.titles()[-1] == f"Resolved: {KIDDO}"
    assert receiver.messages[-1]["message"] == (
        "Plays of Kiddo (id 9101) on Plex server Basement go to profile kid now."
    )


def test_a_listed_persons_new_account_as_the_default_profiles_first_is_alerted(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    # The default profile lists its own account: what it takes in is someone else's.
    app_runtime = runtime(household(tmp_path, receiver, me='["alex"]'), clock)
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(5, "kid")).status_code == 202
        assert post(app, scrobble(1, "alex")).status_code == 202
        clock.advance(DAY)
        assert post(app, scrobble(9101, "Kiddo")).status_code == 202
        housekeeping(app_runtime)
        assert receiver.messages == []  # a day of it is no sign yet
        clock.advance(DAY)
        assert post(app, scrobble(1, "alex")).status_code == 202  # the owner keeps playing
        clock.advance(DAY)
        housekeeping(app_runtime)
        wait_until_told(receiver, 1)
        (found,) = taken_in(app)
    assert receiver.titles() == [KIDDO]
    assert (
        "Profile kid's account there has sent nothing since 2023-11-15, when this one began:"
        ' it may be kid\'s new account. If so, write profiles.kid.users.plex: ["kid", "9101"]'
    ) in receiver.messages[0]["message"]
    assert found["profile"] == "kid"
    assert found["line"] == 'profiles.kid.users.plex: ["kid", "9101"]'


def wait_until_told(receiver: AlertReceiver, count: int) -> None:
    from tests.test_app import wait_until

    wait_until(lambda: len(receiver.messages) >= count)


def test_the_owners_own_account_is_never_a_quiet_listed_persons_new_one(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    # The common household: the owner's profile is the default and lists nothing, the kid is
    # listed. The kid last played just before the owner's first webhook (an upgrade, or the
    # first evening), then not for days: the owner's account is no new account of theirs.
    app_runtime = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(5, "kid")).status_code == 202
        clock.advance(HOUR)
        for _ in range(3):
            assert post(app, scrobble(1, "alex")).status_code == 202
            clock.advance(DAY)
            housekeeping(app_runtime)
        (found,) = taken_in(app)
    assert receiver.messages == []
    assert (found["name"], found["alerted"], found["profile"]) == ("alex", False, None)


def test_the_default_persons_own_name_on_another_server_is_never_a_second_person(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    # The owner lists their Plex account under the default profile (as the README advises when
    # others play); a friend's account is the first it takes in. Alex's own Jellyfin account
    # (NotificationUsername "alex") is theirs, no second person's.
    text = household(tmp_path, receiver, me='["alex"]')
    app_runtime = runtime(text, clock)
    jellyfin = sample_bytes("jellyfin", "playback_stop_episode_completed.json")
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(1, "alex")).status_code == 202
        assert post(app, scrobble(48151623, "jamie.r")).status_code == 202
        clock.advance(DAY)
        answer = httpx.post(f"{app.url}/webhooks/jellyfin/{SECRET}", content=jellyfin)
        assert answer.status_code == 202
        housekeeping(app_runtime)
        clock.advance(WAIT)
        housekeeping(app_runtime)
        found = {f["name"]: f for f in taken_in(app)}
    assert receiver.messages == []
    assert sorted(found) == ["alex", "jamie.r"]
    assert found["alex"]["source"] == "jellyfin"
    assert found["alex"]["alerted"] is False


def test_a_default_profile_taking_two_people_on_purpose_is_told_once_and_listing_keeps_them(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    # Upgraded: the default profile has long taken the owner's and the kids' managed account.
    first = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(first, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(1, "alex")).status_code == 202
        clock.advance(HOUR)
        assert post(app, scrobble(7, "Kids")).status_code == 202
        housekeeping(first)
        wait_until_told(receiver, 1)
        clock.advance(WAIT)
        housekeeping(first)
    assert receiver.titles() == [
        "watchbridge: plays of Kids on Plex server Basement go to profile me"
    ]
    assert (
        'if it is me\'s or meant to go there, write profiles.me.users.plex: ["7"]: its plays'
        " keep going there, and this alert is resolved."
    ) in receiver.messages[0]["message"]
    # Listed as the alert says: resolved, and its plays still go to me.
    second = runtime(household(tmp_path, receiver, me='["7"]'), clock)
    with AppThread(create_app(second, extra_routes=webhooks.ROUTES)) as app:
        housekeeping(second)
        wait_until_told(receiver, 2)
        clock.advance(HOUR)
        assert post(app, scrobble(7, "Kids")).status_code == 202
        housekeeping(second)
        assert [f["name"] for f in taken_in(app)] == ["alex"]
        assert second.store.last_from_server("plex", PLEX_SERVER)["me"] == clock()
    assert receiver.messages[-1]["message"] == (
        "Plays of Kids (id 7) on Plex server Basement go to profile me now."
    )
    assert len(receiver.messages) == 2


def test_the_webhook_routes_memory_keeps_the_accounts_seen_most_recently() -> None:
    gate = Gate()
    keys = [("plex", PLEX_SERVER, str(n)) for n in range(KEPT_IN_MEMORY)]
    for key in keys:
        assert gate.saw(key, False, 0.0) == (1, 0)  # each one's first: written
    assert gate.saw(keys[0], True, 60.0) is None  # within the hour: counted, not written
    # One account more: the one seen least recently goes, not the one seen again.
    assert gate.saw(("plex", PLEX_SERVER, "new"), False, 120.0) == (1, 0)
    assert len(gate.seen) == KEPT_IN_MEMORY
    assert keys[1] not in gate.seen
    # The first kept what it counted, written with its next webhook an hour on; the one
    # forgotten is written again as new on its next.
    assert gate.saw(keys[0], True, 60.0 + HOUR) == (2, 2)
    assert gate.saw(keys[1], True, 180.0) == (1, 1)
    assert len(gate.seen) == KEPT_IN_MEMORY


def test_a_yearly_visitor_coming_a_few_days_late_is_not_told_of_again(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    app_runtime = runtime(household(tmp_path, receiver), clock)
    gran = "watchbridge: plays of gran on Plex server Basement go to profile me"
    with AppThread(create_app(app_runtime, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(1, "alex")).status_code == 202
        clock.advance(HOUR)
        assert post(app, scrobble(4242, "gran")).status_code == 202  # Christmas
        housekeeping(app_runtime)
        wait_until_told(receiver, 1)
        clock.advance(QUIET)
        housekeeping(app_runtime)  # over: a month without her
        wait_until_told(receiver, 2)
        # Next Christmas, a few days later than last: the owner played all year.
        for _ in range(10):
            clock.advance(31 * DAY)
            assert post(app, scrobble(1, "alex")).status_code == 202
        clock.advance(30 * DAY)  # 370 days since her last
        app_runtime.store.prune(clock(), maintenance.KEEP_DONE, maintenance.KEEP_SESSIONS)
        assert post(app, scrobble(4242, "gran")).status_code == 202
        housekeeping(app_runtime)
        clock.advance(WAIT)
        housekeeping(app_runtime)
        found = {f["name"]: f for f in taken_in(app)}
    assert receiver.titles() == [gran, f"Resolved: {gran}"]
    assert found["gran"]["alerted"] is True
    assert found["gran"]["webhooks"] == 2


def test_accounts_taken_before_the_upgrade_start_when_their_webhooks_began(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    # Before the upgrade the default profile took alex's, the Kids' and a guest's plays on
    # purpose; kid (listed) played after each began. The upgrade's database remembers none of
    # them, and kid then does not play for two days: the guest's row began at the upgrade, so
    # the guest's account read as "may be kid's new account".
    text = household(tmp_path, receiver)
    before = runtime(text, clock)
    began: dict[str, float] = {}
    with AppThread(create_app(before, extra_routes=webhooks.ROUTES)) as app:
        for account, name in ((1, "alex"), (7, "Kids"), (8, "Guest"), (5, "kid")):
            began[name] = clock()
            assert post(app, scrobble(account, name)).status_code == 202
            clock.advance(DAY)
    with sqlite3.connect(tmp_path / "wb.db") as db:  # as the upgrade finds it
        db.execute("DELETE FROM defaulted_accounts")
    db.close()
    clock.advance(DAY)
    upgraded = runtime(text, clock)
    with AppThread(create_app(upgraded, extra_routes=webhooks.ROUTES)) as app:
        for account, name in ((8, "Guest"), (1, "alex"), (7, "Kids")):
            assert post(app, scrobble(account, name)).status_code == 202
        from tests.test_app import wait_until

        wait_until(lambda: len(taken_in(app)) == 3)  # written after each answer
        housekeeping(upgraded)
        clock.advance(WAIT)
        housekeeping(upgraded)
        found = {f["name"]: f for f in taken_in(app)}
        wait_until_told(receiver, 1)
    # Told once of the second person's (as a household that took two people's already is),
    # never of the guest's as kid's new account.
    assert receiver.titles() == [
        "watchbridge: plays of Kids on Plex server Basement go to profile me"
    ]
    assert "new account" not in receiver.messages[0]["message"]
    assert "(alex (id 1) on Plex server Basement)" in receiver.messages[0]["message"]
    assert (found["Guest"]["alerted"], found["Guest"]["profile"]) == (False, None)
    # Each starts at its first webhook the database still keeps, not at the upgrade.
    assert {name: found[name]["first_at"] for name in ("alex", "Kids", "Guest")} == {
        name: began[name] for name in ("alex", "Kids", "Guest")
    }
