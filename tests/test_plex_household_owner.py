"""A Plex Home user's profile not signed in yet is never read or written as the server's owner."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.plextv import FakePlexTv
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import watchbridge, write_config
from tests.test_plex_reader import sign_in, with_plextv
from tests.unpaced import unpaced_while
from watchbridge.config import (
    Accounts,
    Config,
    Link,
    PlexAccount,
    Profile,
    Secret,
    SerializdAccount,
    parse_config,
)
from watchbridge.readers.plex import (
    PlexAuthError,
    ServerTokens,
    known_account_id,
    owner_conflict,
    owner_problem,
    plex_client,
)


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    whose plays go where, not the services' pace."""
    with unpaced_while("trakt", "serializd"):
        yield


BOB = ("bob@example.com", "bobs password", "bob_tv")
SAM = 1002023  # the Home user's plex.tv id, as Plex's webhooks and the server's history name it


def run(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return watchbridge(*args, "--config", str(path))


def test_a_home_users_profile_with_plex_but_no_sign_in_never_gets_the_owners_plays(
    tmp_path: Path, start_fake: Any
) -> None:
    # sam's profile maps his own Plex account (users.plex) and has `accounts.plex: {}` (the
    # link needs an account on both sides); he has not run `auth plex --home-user` yet.
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    bob = serializd.add_user(*BOB)
    plex.add_user("sams-server-token", SAM, "sam")
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    for n in range(1, 4):
        plex.add_episode(str(100 + n), "20", 1, n)
    plex.watch("101", time.time() - 3600)  # the owner watched S1E1
    serializd.log_entry(bob, 1396, 1, 3, backdate="2026-01-10T20:00:00Z")  # sam's own play
    path = write_config(
        tmp_path,
        f"""services:
  serializd: {{api_url: "{serializd.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    users: {{plex: [1]}}
    accounts:
      plex: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
  sam:
    users: {{plex: [{SAM}]}}
    accounts:
      plex: {{}}
      serializd: {{email: {BOB[0]}, password: "{BOB[1]}"}}
links:
  plex-serializd: {{services: [plex, serializd], first_run: apply}}
""",
    )
    checked = run(path, "check-config")
    synced = [run(path, "sync", "--link", "plex-serializd") for _ in range(2)]

    owners_on_sams = [r for r in serializd.diary(bob) if r.episode_number == 1]
    sams_on_owners = [r for r in serializd.diary() if r.episode_number == 3]
    said = checked.stdout + checked.stderr + "".join(s.stdout + s.stderr for s in synced)
    assert not owners_on_sams, f"the owner's S1E1 landed on sam's Serializd:\n{said}"
    assert not sams_on_owners, f"sam's S1E3 landed on the owner's Serializd:\n{said}"
    assert plex.user_state("103") == {}, "sam's Serializd play was written to the owner's Plex"
    assert [r.episode_number for r in serializd.diary()] == [1]  # the owner's, on theirs
    assert "auth plex --profile sam --home-user" in synced[0].stdout + synced[0].stderr


# --------------------------------------------------------------------------- HAMA, no Trakt


def config_with(users: dict[str, str]) -> Config:
    profiles = "".join(
        f"  {name}: {{users: {{plex: [{ids}]}}, accounts: {{plex: {{}}}}}}\n"
        for name, ids in users.items()
    )
    return parse_config(
        f"services: {{plex: {{url: 'http://plex:32400', token: t}}}}\nprofiles:\n{profiles}",
        Path("watchbridge.yaml"),
        {},
    )


def test_a_profile_naming_another_account_by_id_is_not_the_owner() -> None:
    config = config_with({"alex": "alice", "sam": str(SAM)})
    assert owner_conflict(config, "alex", ["alex", "sam"]) is None
    assert "users.plex names other accounts" in str(owner_conflict(config, "sam", ["alex", "sam"]))


def test_an_owner_naming_their_plex_tv_id_beside_their_name_is_the_owner() -> None:
    config = config_with({"alex": f"alice, '{SAM + 1}'"})
    assert owner_conflict(config, "alex", ["alex"]) is None


def test_of_two_profiles_read_as_the_owner_the_one_naming_account_1_is() -> None:
    config = config_with({"alex": "'1'", "kid": "kiddo"})
    assert owner_conflict(config, "alex", ["alex", "kid"]) is None
    assert "profile alex is the server owner" in str(owner_conflict(config, "kid", ["alex", "kid"]))


def test_two_profiles_read_as_the_owner_with_nothing_to_tell_them_apart_are_both_refused() -> None:
    config = config_with({"alex": "alice", "kid": "kiddo"})
    assert owner_conflict(config, "alex", ["alex", "kid"]) is not None
    assert owner_conflict(config, "alex", ["alex"]) is None  # the kid signed in


def test_the_owner_naming_account_1_is_not_refused_for_a_profile_naming_its_own_servers_1() -> None:
    # Two servers in the household (README: `SERVER:ACCOUNT` where ids overlap): alex owns the
    # configured one and names account 1; kid, not signed in yet, names account 1 of the
    # server kid owns. Kid is refused, rightly; alex, plainly the owner of this server, must
    # not be (their whole Plex sync stops with "name the owner's account 1", already done).
    config = config_with({"alex": "'1'", "kid": "'b0b5e7d1f00d:1'"})
    assert owner_conflict(config, "kid", ["alex", "kid"]) is not None
    assert owner_conflict(config, "alex", ["alex", "kid"]) is None


def test_a_profile_no_link_reads_from_plex_does_not_make_the_owner_refused(store: Any) -> None:
    # kid keeps `accounts.plex: {}` but is in no Plex link (kid has no Trakt account; the
    # only link is plex-trakt): kid is never read or written as the owner, so nothing can be
    # swapped. The owner, who names their username as README's table allows, is still refused.
    config = parse_config(
        f"""services:
  plex: {{url: "http://plex:32400", token: "{TOKEN}"}}
  trakt: {{client_id: abc}}
  serializd: {{}}
profiles:
  alex:
    users: {{plex: [alice]}}
    accounts: {{plex: {{}}, trakt: {{}}}}
  kid:
    users: {{plex: [kiddo]}}
    accounts:
      plex: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  plex-trakt: {{services: [plex, trakt]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    assert owner_problem(config, store, "alex") is None


def test_the_owner_naming_their_username_syncs_beside_a_profile_in_no_plex_link(
    tmp_path: Path, start_fake: Any
) -> None:
    # The owner names their username (README: "Account.id ... or username"); kid keeps
    # `accounts.plex: {}` but has no Serializd account, so the plex-serializd link never reads
    # or writes kid. c2fc229 refuses the owner's own run ("profiles alex, kid all have ...").
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    plex.add_episode("101", "20", 1, 1)
    plex.watch("101", time.time() - 3600)  # the owner watched S1E1
    path = write_config(
        tmp_path,
        f"""services:
  serializd: {{api_url: "{serializd.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    users: {{plex: [alice]}}
    accounts:
      plex: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
  kid:
    users: {{plex: [kiddo]}}
    accounts:
      plex: {{}}
links:
  plex-serializd: {{services: [plex, serializd], first_run: apply}}
""",
    )
    synced = run(path, "sync", "--link", "plex-serializd")
    said = synced.stdout + synced.stderr
    assert [r.episode_number for r in serializd.diary()] == [1], said


def test_the_fix_for_profiles_all_read_as_the_owner_does_not_tell_to_sign_in_the_reported_one() -> (
    None
):
    # alex (the owner) and sam both have `accounts.plex: {}`: which is the owner, config cannot
    # tell; "sign in alex" would sign the owner in and leave sam read as the owner.
    config = config_with({"alex": "alice", "sam": "sammy"})
    message = str(owner_conflict(config, "alex", ["alex", "sam"]))
    assert "name the owner's account 1" in message
    assert "--profile alex" not in message
    assert "auth plex --profile PROFILE" in message


def with_serializd(name: str) -> Profile:
    account = SerializdAccount(f"{name}@example.com", Secret("pw"))
    return Profile(accounts=Accounts(plex=PlexAccount(), serializd=account))


@pytest.mark.anyio
@pytest.mark.parametrize("owner_linked", [True, False], ids=["owner-in-the-link", "owner-not"])
async def test_once_the_owner_signed_in_as_themselves_nobody_else_is_read_as_the_owner(
    start_fake: Any, store: Any, owner_linked: bool
) -> None:
    # A Tautulli household (nobody names users.plex): the owner, alex, signs in to plex.tv as
    # themselves; sam, not signed in yet, would be the one profile left without a sign-in and
    # so read as the owner, getting the owner's plays on sam's Serializd. Also when alex has
    # no Serializd account, so that the Plex ⇄ Serializd link reads only sam.
    plex, plextv = start_fake(FakePlex()), start_fake(FakePlexTv())
    plextv.owner.token = TOKEN
    plextv.add_server(plex.machine_id)
    sign_in(store, "alex", plextv.owner)
    alex = (
        with_serializd("alex") if owner_linked else Profile(accounts=Accounts(plex=PlexAccount()))
    )
    config = replace(
        with_plextv(plex, plextv, alex=alex, sam=with_serializd("sam")),
        links={"plex-serializd": Link(["plex", "serializd"])},
    )
    tokens = ServerTokens(config, store, plex_client(config, store, time.time), time.time)
    try:
        assert await tokens.find("alex") == TOKEN
        assert known_account_id(config, store, "alex", TOKEN) == "1"  # read as the owner
        with pytest.raises(PlexAuthError, match=r"profile alex signed in to plex\.tv as"):
            await tokens.token("sam")
    finally:
        await tokens.aclose()
        await tokens.client.aclose()
