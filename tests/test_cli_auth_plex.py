"""`watchbridge auth plex`: the PIN sign-in from the command line, against the fake plex.tv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.plextv import FakePlexTv
from tests.harness import watchbridge, write_config
from watchbridge.store import Store


def auth_plex(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`watchbridge auth plex --config CONFIG ARGS…` run to the end, output captured."""
    return watchbridge("auth", "plex", "--config", str(config), *args)


def plex_config(tmp_path: Path, plextv: FakePlexTv) -> Path:
    return write_config(
        tmp_path,
        f"services:\n  plex:\n    account_url: {plextv.url}\n    discover_url: {plextv.url}\n"
        "profiles:\n  me:\n    accounts:\n      plex: {}\n",
    )


def test_auth_plex_shows_the_link_polls_and_stores_the_token(
    tmp_path: Path, start_fake: Any
) -> None:
    plextv = start_fake(FakePlexTv())
    path = plex_config(tmp_path, plextv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchbridge", "auth", "plex", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("Open https://app.plex.tv/auth#?")
    query = parse_qs(urlsplit(first.split(" ", 1)[1].strip()).fragment.lstrip("?"))
    plextv.approve_pin(query["code"][0])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "profile me is signed in to plex.tv as alex" in out
    store = Store.open(tmp_path / "watchbridge.db")
    try:
        assert store.get_token("plex", "me") == {
            "token": plextv.owner.token,
            "plextv_id": plextv.owner.id,
            "username": "alex",
        }
        # The identifier the PIN was made with is the one the Plex adapter will keep using.
        identifier = store.setting("plex_client_identifier", lambda: "new", 0.0)
    finally:
        store.close()
    assert query["clientID"] == [identifier]


def test_auth_plex_without_the_service_configured_says_so(tmp_path: Path) -> None:
    result = auth_plex(write_config(tmp_path))
    assert result.returncode != 0
    assert "services.plex is not configured" in result.stderr


def test_auth_plex_signs_a_managed_home_user_in_with_the_owners_token(
    tmp_path: Path, start_fake: Any
) -> None:
    plextv = start_fake(FakePlexTv())
    kid = plextv.add_account("Kid", managed=True, pin="4321")
    path = write_config(
        tmp_path,
        f"services:\n  plex:\n    token: {plextv.owner.token}\n"
        f"    account_url: {plextv.url}\n"
        "profiles:\n  kid:\n    accounts:\n      plex: {}\n",
    )
    result = auth_plex(path, "--home-user", "kid", "--pin", "4321")
    assert result.returncode == 0, result.stderr
    assert "profile kid is signed in to plex.tv as Kid" in result.stdout
    store = Store.open(tmp_path / "watchbridge.db")
    try:
        assert store.get_token("plex", "kid") == {
            "token": kid.token,
            "plextv_id": kid.id,
            "username": "Kid",
        }
    finally:
        store.close()
    wrong = auth_plex(path, "--home-user", "nobody")
    assert wrong.returncode != 0 and "no Plex Home user 'nobody' (home users: Kid)" in wrong.stderr
