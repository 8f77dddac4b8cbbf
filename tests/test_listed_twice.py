"""One media-server account listed by two profiles, once by its name and once by its id: its
plays go to the profile listing its id (never both, never the first in the file without a
word), one `unlisted_account` alert names the account, both profiles and the line to remove,
the status lists it, and it is resolved once the config lists it once. Over real HTTP against
the running app, alerts as the receiver got them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import AppThread, watchbridge
from tests.test_app import wait_until
from tests.test_unlisted_accounts import SECRET, post, runtime, scrobble
from tests.test_webhook_route import PLEX_SERVER
from watchbridge import maintenance, webhooks
from watchbridge.account_ids import listed_twice
from watchbridge.app import create_app
from watchbridge.config import parse_config
from watchbridge.statuspage import page_state, render

SAM = 28374651
TITLE = "watchbridge: Plex account Sam is listed by two profiles"
TOLD = (
    'Plex account Sam (id 28374651) is listed by two profiles: as "Sam" in'
    ' profiles.alex.users.plex and as "28374651" in profiles.sam.users.plex. Its plays go to'
    " profile sam only, the one listing its id (a rename keeps an id, not a name): remove"
    ' "Sam" from profiles.alex.users.plex (or, if they are alex\'s plays, "28374651" from'
    " profiles.sam.users.plex)."
)


def household(tmp_path: Path, receiver: AlertReceiver, alex: str = '["1", "Sam"]') -> str:
    """Alex (the owner) lists Sam by name, first in the file; sam lists her Plex id."""
    return (
        f"server: {{webhook_secret: {SECRET}}}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [unlisted_account]}}\n"
        "profiles:\n"
        f"  alex: {{users: {{plex: {alex}}}}}\n"
        f'  sam: {{users: {{plex: ["{SAM}"]}}}}\n'
    )


def profiles_of_events(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "wb.db") as db:
        return [p for (p,) in db.execute("SELECT profile FROM events ORDER BY id")]


def test_an_account_listed_by_name_and_by_id_goes_to_the_id_and_is_told_until_listed_once(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    clock = FakeClock()
    first = runtime(household(tmp_path, receiver), clock)
    with AppThread(create_app(first, extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(SAM, "Sam")).status_code == 202
        assert post(app, scrobble(SAM, "Sam")).status_code == 202  # told once
        wait_until(lambda: bool(receiver.messages))
        status = httpx.get(f"{app.url}/api/status").json()
        shown = render(asyncio.run(page_state(first, clock())), clock())
        asyncio.run(maintenance.housekeeping(first))  # still listed twice: not resolved
    # Sam's plays reach sam, not alex, who comes first in the file.
    assert profiles_of_events(tmp_path) == ["sam", "sam"]
    (alert,) = receiver.messages
    assert alert["title"] == TITLE
    assert alert["message"].split("\n\n")[0] == TOLD
    (seen,) = status["listed_twice_accounts"]
    assert seen == {
        "source": "plex",
        "server": PLEX_SERVER,
        "account_id": str(SAM),
        "name": "Sam",
        "profile": "sam",
        "also_listed_by": "alex",
        "remove": 'remove "Sam" from profiles.alex.users.plex',
        "webhooks": 2,
        "last_at": clock(),
        "message": TOLD,
    }
    assert "<td>Sam (id 28374651)</td>" in shown
    assert "remove &quot;Sam&quot; from profiles.alex.users.plex" in shown

    # The line removed: resolved at the start's housekeeping, no longer listed.
    second = runtime(household(tmp_path, receiver, '["1"]'), clock)
    with AppThread(create_app(second, extra_routes=webhooks.ROUTES)) as app:
        asyncio.run(maintenance.housekeeping(second))
        wait_until(lambda: len(receiver.messages) == 2)
        assert httpx.get(f"{app.url}/api/status").json()["listed_twice_accounts"] == []
        assert post(app, scrobble(SAM, "Sam")).status_code == 202
    assert receiver.titles() == [TITLE, f"Resolved: {TITLE}"]
    assert receiver.messages[-1]["message"] == (
        "Plex account Sam (id 28374651) is listed by one profile now: its plays go to profile sam."
    )
    assert profiles_of_events(tmp_path) == ["sam", "sam", "sam"]


def test_check_config_warns_of_an_account_the_database_knows_by_both(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    """The account's id is remembered with its name (from a webhook before): check-config
    says which profiles list it twice, and which line to remove, before the service starts."""
    clock = FakeClock()
    text = household(tmp_path, receiver)
    with AppThread(create_app(runtime(text, clock), extra_routes=webhooks.ROUTES)) as app:
        assert post(app, scrobble(SAM, "Sam")).status_code == 202
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text, encoding="utf-8")
    said = watchbridge("check-config", "--config", str(path))
    assert said.returncode == 0, said.stderr
    assert f"warning: {TOLD} (Named as watchbridge last saw it.)" in said.stdout
    status = watchbridge("status", "--config", str(path))
    assert f"twice:         {TOLD}" in status.stdout
    path.write_text(household(tmp_path, receiver, '["1"]'), encoding="utf-8")
    said = watchbridge("check-config", "--config", str(path))
    assert "listed by two profiles" not in said.stdout


def test_only_a_name_and_an_id_of_one_account_in_two_profiles_are_listed_twice() -> None:
    """Not two people sharing a name on two servers (SERVER:NAME), nor the owner's plain 1
    beside the owner's name (each server's owner is 1): those are as meant."""

    def config(alex: str, sam: str) -> Any:
        text = (
            f"profiles:\n  alex: {{users: {{plex: {alex}}}}}\n  sam: {{users: {{plex: {sam}}}}}\n"
        )
        return parse_config(text, Path("watchbridge.yaml"), {})

    def twice(alex: str, sam: str, account: str = str(SAM), name: str = "Sam") -> str | None:
        found = listed_twice(config(alex, sam), "plex", PLEX_SERVER, account, name)
        return None if found is None else f"{found.profile} over {found.other_profile}"

    assert twice('["Sam"]', f'["{SAM}"]') == "sam over alex"
    assert twice(f'["{SAM}"]', '["sam"]') == "alex over sam"
    assert twice(f'["{PLEX_SERVER}:Sam"]', f'["{SAM}"]') == "sam over alex"
    assert twice(f'["{PLEX_SERVER}:Sam"]', '["Sam"]') is None  # two servers' Sams
    assert twice('["other:Sam"]', f'["{SAM}"]') is None  # another server's Sam
    assert twice('["1"]', '["alex"]', "1", "alex") is None  # the owner of any server
    assert twice(f'["{PLEX_SERVER}:1"]', '["alex"]', "1", "alex") == "alex over sam"
    assert twice('["Sam", "x"]', '["y"]') is None
    assert twice('["Sam"]', f'["{SAM}"]', name="") is None
