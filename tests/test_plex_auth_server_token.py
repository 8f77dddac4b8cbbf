"""`watchbridge auth plex` with a Plex server configured: the person's token for that server is
found through plex.tv and kept next to their plex.tv token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.plextv import FakePlexTv
from tests.harness import write_config
from tests.test_cli_auth_plex import auth_plex
from watchbridge.store import Store


def sign_in_kid(tmp_path: Path, start_fake: Any, shared: bool) -> tuple[str, str, str | None]:
    """`auth plex --home-user kid`; (stdout, stderr, kid's token for the server if shared)."""
    plextv: FakePlexTv = start_fake(FakePlexTv())
    plex: FakePlex = start_fake(FakePlex())
    plextv.owner.token = TOKEN  # the owner's one token, for the server and plex.tv
    plextv.add_server(plex.machine_id)
    kid = plextv.add_account("Kid", managed=True)
    server_token = plextv.share_on(plex, kid) if shared else None
    path = write_config(
        tmp_path,
        f"services:\n  plex:\n    url: {plex.url}\n    token: {TOKEN}\n"
        f"    account_url: {plextv.url}\n"
        "profiles:\n  kid:\n    accounts:\n      plex: {}\n",
    )
    result = auth_plex(path, "--home-user", "kid")
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr, server_token


def kept_server_token(tmp_path: Path) -> str | None:
    store = Store.open(tmp_path / "watchbridge.db")
    try:
        return (store.get_token("plex-server", "kid") or {}).get("token")
    finally:
        store.close()


def test_signing_a_home_user_in_keeps_their_token_for_the_server(
    tmp_path: Path, start_fake: Any
) -> None:
    out, _, server_token = sign_in_kid(tmp_path, start_fake, shared=True)
    assert "their token for the Plex server was found through plex.tv and kept" in out
    assert server_token is not None and kept_server_token(tmp_path) == server_token


def test_a_sign_in_without_access_to_the_server_says_so_and_still_signs_in(
    tmp_path: Path, start_fake: Any
) -> None:
    out, err, _ = sign_in_kid(tmp_path, start_fake, shared=False)
    assert "profile kid is signed in to plex.tv as Kid" in out
    assert "no token for the Plex server yet" in err
    assert "profile kid: plex.tv gives no token of theirs for this Plex server" in err
    assert kept_server_token(tmp_path) is None
