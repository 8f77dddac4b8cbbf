"""Writes to Plex for a person whose server token comes from plex.tv: a refused (rotated or
revoked) token is found again once, and the write goes through with the new one."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.plextv import Account, FakePlexTv
from tests.fakes.receiver import FakeClock
from tests.test_deliver_plex import BB_S1E1, LINK, NOW, T0, row
from tests.test_plex_reader import sign_in, with_plextv
from watchbridge.config import Accounts, Config, MediaUsers, PlexAccount, Profile, Secret
from watchbridge.deliver.plex import PlexTarget
from watchbridge.deliver.worker import Delivered, Hold
from watchbridge.readers.plex import make_reader, plex_client
from watchbridge.services.plex import PlexAuthError
from watchbridge.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def plex(start_fake: Any) -> FakePlex:
    fake: FakePlex = start_fake(FakePlex())
    fake.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    fake.add_episode("201", "200", 1, 1)
    fake.clock = lambda: NOW
    return fake


@pytest.fixture
def plextv(start_fake: Any) -> FakePlexTv:
    fake: FakePlexTv = start_fake(FakePlexTv())
    fake.owner.token = TOKEN  # the owner's one token, for the server and plex.tv
    return fake


@pytest.fixture
def friend(plex: FakePlex, plextv: FakePlexTv, store: Store) -> Account:
    sam = plextv.add_account("sam.k")
    plextv.share_on(plex, sam)
    sign_in(store, "sam", sam)
    return sam


@pytest.fixture
def config(plex: FakePlex, plextv: FakePlexTv) -> Config:
    return with_plextv(plex, plextv, sam=Profile(accounts=Accounts(plex=PlexAccount())))


async def read_sam(config: Config, store: Store) -> None:
    """The reader lists sam's libraries (with the token plex.tv gave) and keeps the token."""
    reader = make_reader(config, store, LINK, ["sam"], FakeClock(NOW))
    try:
        await reader.read("sam", {}, None, True)
    finally:
        await reader.aclose()


async def deliver_play(config: Config, store: Store) -> object:
    target = PlexTarget(plex_client(config, store, FakeClock(NOW)), config, store, FakeClock(NOW))
    try:
        item = row(store, "play", BB_S1E1, T0, profile="sam")
        return (await target.deliver([item], NOW))[item.id]
    finally:
        await target.aclose()


async def test_a_write_refused_for_a_rotated_token_is_retried_with_the_new_one(
    config: Config, store: Store, plex: FakePlex, plextv: FakePlexTv, friend: Account
) -> None:
    await read_sam(config, store)
    asked = plextv.count("GET", "/api/servers/{machine}/shared_servers")
    new_token = plextv.share_on(plex, friend)  # the kept token is refused from now on
    assert isinstance(await deliver_play(config, store), Delivered)
    assert plex.user_state("201", friend.id)["viewCount"] == 1
    scrobbles = plex.calls("GET", "/:/scrobble")
    assert [(r.status, r.headers["x-plex-token"] == new_token) for r in scrobbles] == [
        (401, False),
        (200, True),
    ]
    assert plextv.count("GET", "/api/servers/{machine}/shared_servers") == asked + 1


async def test_a_person_no_longer_shared_with_is_held_with_a_credentials_alert(
    config: Config, store: Store, plex: FakePlex, plextv: FakePlexTv, friend: Account
) -> None:
    await read_sam(config, store)
    plextv.servers[plex.machine_id].shares.clear()  # the owner stopped sharing
    plex.users.clear()
    outcome = await deliver_play(config, store)
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    assert "profile sam: plex.tv gives no token of theirs for this Plex server" in outcome.reason
    assert len(plex.calls("GET", "/:/scrobble")) == 1  # one refused try, no loop


async def test_a_token_refused_even_after_plex_tv_gave_a_new_one_names_the_profiles_command(
    config: Config, store: Store, plex: FakePlex, plextv: FakePlexTv, friend: Account
) -> None:
    # plex.tv hands out a new token for sam, yet the server refuses it too: the held row and
    # the sign-in said `watchbridge auth plex --profile NAME`, literally.
    await read_sam(config, store)
    new_token = plextv.share_on(plex, friend)
    del plex.users[new_token]  # refused as well
    outcome = await deliver_play(config, store)
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    assert outcome.reason.endswith(
        ": the Plex server does not accept the token plex.tv gave for them (401): run "
        "`watchbridge auth plex --profile sam` (and check the server is still shared with them)"
    )
    assert "NAME" not in outcome.reason and new_token not in outcome.reason
    # The sign-in says the same of the profile's token now in use.
    from watchbridge.services.refusals import entry

    kept = store.get_token(entry("plex"), "sam") or {}
    assert "--profile sam" in str(kept.get("reason")) and "NAME" not in str(kept.get("reason"))


@pytest.mark.parametrize("error_names_sam", [False, True])
async def test_a_held_rows_message_names_the_profile_once(
    config: Config,
    store: Store,
    plex: FakePlex,
    plextv: FakePlexTv,
    friend: Account,
    error_names_sam: bool,
) -> None:
    # It read "profile sam: plex: profile sam: plex.tv gives no token ..." when the error
    # named the profile already, and "profile sam: plex: reading ..." otherwise.
    await read_sam(config, store)
    if error_names_sam:  # no longer shared
        plextv.servers[plex.machine_id].shares.clear()
        plex.users.clear()
        said = "plex.tv gives no token of theirs for this Plex server"
    else:  # refused even after plex.tv gave a new one
        del plex.users[plextv.share_on(plex, friend)]
        said = "reading the details of 1 item(s): the Plex server does not accept the token"
    outcome = await deliver_play(config, store)
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    assert outcome.reason.startswith(f"Plex: profile sam: {said}")
    assert outcome.reason.count("profile sam:") == 1


async def test_a_removal_refused_for_a_rotated_token_is_finished_with_the_new_one(
    config: Config, store: Store, plex: FakePlex, plextv: FakePlexTv, friend: Account
) -> None:
    # sam's only play of S1E1 leaves Plex (its row goes with the server's token, its unwatch
    # with sam's). The retry with the renewed token found the play taken out by the refused
    # try: "already gone", and S1E1 stayed watched in sam's Plex, with no play accounted.
    only = plex.watch("201", NOW - 3600, account=friend.id)
    await read_sam(config, store)
    plextv.share_on(plex, friend)  # the kept token is refused from now on
    target = PlexTarget(plex_client(config, store, FakeClock(NOW)), config, store, FakeClock(NOW))
    try:
        removal = row(
            store, "remove_play", BB_S1E1, NOW - 3600, record=f"history:{only}", profile="sam"
        )
        outcome = (await target.deliver([removal], NOW))[removal.id]
    finally:
        await target.aclose()

    assert outcome == Delivered("marked unwatched (its last play was removed)")
    assert "viewCount" not in plex.user_state("201", friend.id)
    assert plex.history_of("201", friend.id) == []


async def test_a_home_members_token_pasted_for_the_owner_holds_the_writes_too(
    store: Store, plex: FakePlex, plextv: FakePlexTv
) -> None:
    """The read refuses it (plex.tv said whose the token is); the writes would otherwise go on
    with it, into the member's Plex, with the owner's plays. They are held with the read's
    message and a credentials alert, on the answer plex.tv gave the read: not asked again."""
    kid = plextv.add_account("kid", home=True)
    plex.add_user(kid.token, kid.id, "kid")

    def config(token: str) -> Config:
        owner = PlexAccount(token=Secret(token))
        sam = Profile(users=MediaUsers(plex=["1"]), accounts=Accounts(plex=owner))
        return with_plextv(plex, plextv, sam=sam)

    await read_sam(config(TOKEN), store)  # the owner's own token: read, the items known
    pasted = config(kid.token)
    with pytest.raises(PlexAuthError, match="belongs to Plex account"):
        await read_sam(pasted, store)
    asked = plextv.count("GET", "/api/v2/user")
    outcome = await deliver_play(pasted, store)
    assert isinstance(outcome, Hold) and outcome.alert == "credentials"
    told = f"profiles.sam.accounts.plex.token belongs to Plex account {kid.id} (kid), not the"
    assert told in outcome.reason and kid.token not in outcome.reason
    assert plex.calls("GET", "/:/scrobble") == []
    assert plextv.count("GET", "/api/v2/user") == asked
    owner = config(TOKEN)
    target = PlexTarget(plex_client(owner, store, FakeClock(NOW)), owner, store, FakeClock(NOW))
    try:  # the owner's own token pasted back: written
        item = row(store, "play", BB_S1E1, T0 + 60, profile="sam")
        assert isinstance((await target.deliver([item], NOW))[item.id], Delivered)
    finally:
        await target.aclose()


async def test_a_row_tried_between_auth_plexs_lift_and_its_server_token_goes_through(
    config: Config, store: Store, plex: FakePlex, plextv: FakePlexTv, friend: Account
) -> None:
    # `watchbridge auth plex` lifts the held rows before it asks plex.tv for the person's
    # server token: a running service may try them in between, with the new sign-in kept and
    # the stale server token (or none) still in the store. The try finds the token itself.
    await read_sam(config, store)
    plextv.servers[plex.machine_id].shares.clear()  # the owner stopped sharing
    plex.users.clear()
    held = await deliver_play(config, store)
    assert isinstance(held, Hold) and held.alert == "credentials"
    plextv.share_on(plex, friend)  # shared again; sam signs in again, as told
    sign_in(store, "sam", friend)
    target = PlexTarget(plex_client(config, store, FakeClock(NOW)), config, store, FakeClock(NOW))
    try:
        item = row(store, "play", BB_S1E1, T0 + 60, profile="sam")  # the held row, tried
        assert isinstance((await target.deliver([item], NOW))[item.id], Delivered)
    finally:
        await target.aclose()
    assert plex.user_state("201", friend.id)["viewCount"] == 1
