"""`watchbridge auth anilist`: the pin-page code or token ends up stored for the profile."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.anilist import CLIENT_ID, CLIENT_SECRET, FakeAniList
from tests.harness import watchbridge, write_config
from watchbridge.accounts import AccountNotes, user_named
from watchbridge.config import load_config
from watchbridge.store import NewOutboxRow, Store


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return watchbridge(*args, stdin=stdin)


def config(tmp_path: Path, fake: FakeAniList, secret: bool) -> Path:
    return write_config(
        tmp_path,
        f"services:\n  anilist:\n    api_url: {fake.url}\n    auth_url: {fake.auth_url}\n"
        f"    client_id: '{CLIENT_ID}'\n"
        + (f"    client_secret: {CLIENT_SECRET}\n" if secret else "")
        + "profiles:\n  me:\n    accounts:\n      anilist: {}\n",
    )


def stored(tmp_path: Path) -> dict[str, Any] | None:
    store = Store.open(tmp_path / "watchbridge.db")
    try:
        return store.get_token("anilist", "me")
    finally:
        store.close()


def test_auth_anilist_trades_the_pin_code_for_a_token(tmp_path: Path, start_fake: Any) -> None:
    fake = start_fake(FakeAniList())
    path = config(tmp_path, fake, secret=True)
    result = run("auth", "anilist", "--config", str(path), "--token", fake.authorize())
    assert result.returncode == 0, result.stderr
    assert "profile me is signed in to AniList as alice_tv" in result.stdout
    assert "expires in 36" in result.stdout
    token = stored(tmp_path)
    assert token is not None and token["user_id"] == fake.viewer.id


def test_auth_anilist_stores_a_pasted_token_from_the_pin_page_url(
    tmp_path: Path, start_fake: Any
) -> None:
    fake = start_fake(FakeAniList())
    path = config(tmp_path, fake, secret=False)
    token = fake.issue_token()
    url = f"https://anilist.co/api/v2/oauth/pin#access_token={token}&token_type=Bearer"
    result = run("auth", "anilist", "--config", str(path), "--token", url)
    assert result.returncode == 0, result.stderr
    assert stored(tmp_path) is not None
    assert token.split(".")[1] not in result.stdout + result.stderr  # never echoed


@pytest.mark.parametrize("pasted", ["", "   ", "{token}\u200b"], ids=["empty", "spaces", "zwsp"])
def test_auth_anilist_refuses_a_badly_pasted_token_as_such(
    tmp_path: Path, start_fake: Any, pasted: str
) -> None:
    fake = start_fake(FakeAniList())
    path = config(tmp_path, fake, secret=False)
    token = pasted.format(token=fake.issue_token())
    result = run("auth", "anilist", "--config", str(path), "--token", token)
    assert result.returncode == 1
    assert "copy it again" in result.stderr  # not an unexpected error, nor a network one
    assert stored(tmp_path) is None


def test_auth_anilist_shows_the_link_to_open(tmp_path: Path, start_fake: Any) -> None:
    fake = start_fake(FakeAniList())
    path = config(tmp_path, fake, secret=False)
    result = run("auth", "anilist", "--config", str(path), stdin="not-a-token\n")
    assert f"{fake.auth_url}/authorize?client_id={CLIENT_ID}&response_type=token" in result.stdout
    assert result.returncode != 0
    assert "not accepted" in result.stderr
    assert stored(tmp_path) is None


def test_auth_anilist_refusing_a_token_says_what_to_do(tmp_path: Path, start_fake: Any) -> None:
    # A token cut short when copied (or from another client): AniList answers "Invalid token",
    # which alone leaves the user guessing.
    fake = start_fake(FakeAniList())
    path = config(tmp_path, fake, secret=False)
    result = run("auth", "anilist", "--config", str(path), "--token", fake.issue_token()[:-8])
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith(
        "error: AniList: the token is not accepted (Invalid token): copy it again, whole, from "
        "the page AniList shows once you approve, or open the link again for a new one\n"
    )
    assert stored(tmp_path) is None


def test_status_and_the_account_alert_name_the_anilist_user_as_auth_did(
    tmp_path: Path, start_fake: Any
) -> None:
    # `auth anilist` said "signed in as alice_tv", then `watchbridge status` showed
    # `anilist/me is user 5678901`, a number the user never sees on AniList.
    fake = start_fake(FakeAniList())
    bob = fake.add_user(7777001, "bob_tv")
    path = config(tmp_path, fake, secret=False)
    signed_in = run("auth", "anilist", "--config", str(path), "--token", fake.issue_token())
    assert "signed in to AniList as alice_tv" in signed_in.stdout, signed_in.stderr
    with Store.open(tmp_path / "watchbridge.db") as store:
        # As the AniList target notes whose account it delivers to, before it writes.
        notes = AccountNotes(store, load_config(path, {}), time.time)
        assert asyncio.run(notes.note("anilist", "me", user_named(fake.viewer.id))) is None
    shown = run("status", "--config", str(path)).stdout
    assert "account:       anilist/me is user alice_tv\n" in shown
    assert str(fake.viewer.id) not in shown
    # Signed in as someone else: the account_changed alert names both by their names.
    again = run("auth", "anilist", "--config", str(path), "--token", fake.issue_token(bob))
    assert "signed in to AniList as bob_tv" in again.stdout, again.stderr
    with Store.open(tmp_path / "watchbridge.db") as store:
        notes = AccountNotes(store, load_config(path, {}), time.time)
        change = asyncio.run(notes.note("anilist", "me", user_named(bob.id)))
    assert change is not None
    assert "AniList is now user bob_tv (was user alice_tv)" in change.alert_body()


def test_auth_anilist_without_the_service_configured_says_so(tmp_path: Path) -> None:
    result = run("auth", "anilist", "--config", str(write_config(tmp_path)))
    assert result.returncode != 0
    assert "services.anilist is not configured" in result.stderr


def test_auth_anilist_without_a_client_id_says_so_and_leaves_no_database(
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path, "services:\n  anilist: {}\nprofiles: {me: {accounts: {anilist: {}}}}\n"
    )
    result = run("auth", "anilist", "--config", str(path))
    assert result.returncode != 0
    assert "services.anilist.client_id is not set" in result.stderr
    assert not (tmp_path / "watchbridge.db").exists()


def test_status_warns_a_month_before_the_anilist_token_expires(
    tmp_path: Path, start_fake: Any
) -> None:
    fake = start_fake(FakeAniList())
    soon = fake.issue_token(lifetime=20 * 86400)
    path = write_config(
        tmp_path,
        f"services:\n  anilist:\n    api_url: {fake.url}\n"
        f"profiles:\n  me:\n    accounts:\n      anilist: {{token: '{soon}'}}\n",
    )
    Store.open(tmp_path / "watchbridge.db").close()
    result = run("status", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "  anilist/me: ends soon: ends " in result.stdout
    assert "in 20 days" in result.stdout and "auth anilist --profile me" in result.stdout


def test_auth_anilist_makes_the_deliveries_its_missing_sign_in_held_due_now(
    tmp_path: Path, start_fake: Any
) -> None:
    fake = start_fake(FakeAniList())
    path = config(tmp_path, fake, secret=True)
    now = time.time()
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("anilist", "me", "play", {}, "k1", "i1")], now)
        (item,) = store.claim("test", now, 1, ["anilist"])
        store.hold(
            item.id, now, now + 1800, "not signed in: run `watchbridge auth anilist --profile me`"
        )
    result = run("auth", "anilist", "--config", str(path), "--token", fake.authorize())
    assert "1 deliveries of profile me to AniList waited for this sign-in" in result.stdout
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.next_due(["anilist"]) <= time.time()
