"""A profile's account behind a link changes (another Serializd account, another Trakt
account, another Plex server): what watchbridge remembered of the old one must not read as the
user's removals on the new one. The link starts over as on its first run: nothing is removed
because of the change, and what only one side holds is copied to the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.plex import MODERN_VERSION, OLD_VERSION, FakePlex
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import FakeTrakt, Rating, key_of
from tests.linkrig import BB, LINK, PROFILE, Rig, open_rig, rig_config, rig_for, use_fast_readers
from tests.test_sync_plex import setup as setup_plex_link
from tests.test_sync_plex import sync as sync_plex
from tests.test_sync_plex import trakt_plays as plex_trakt_plays
from tests.test_sync_scenarios import (
    TraktApp,
    diary_plays,
    diary_rating,
    entry,
    four_plays_on_both_sides,
    log,
    review,
    trakt_plays,
    trakt_rating,
    unlog,
)
from watchbridge.accounts import (
    NOT_SENT,
    READ_EMPTY,
    check_owed,
    merged,
    note_account,
    read_empty,
    same_account,
    send_account_alerts,
    unrecognised,
)
from watchbridge.alerts import Notifier
from watchbridge.config import AlertsConfig, Config, Secret, parse_config
from watchbridge.deliver.plex import PlexTarget
from watchbridge.errors import WatchbridgeError
from watchbridge.maintenance import housekeeping
from watchbridge.readers.plex import KEEP_WRITTEN_BEFORE, WRITTEN_BEFORE, plex_client
from watchbridge.reconcile import UNDATED, Action, Play, Side
from watchbridge.store import UNKNOWN_OUTCOME, NewOutboxRow, OutboxItem, Store
from watchbridge.sync import NeedsReview, RunResult, outbox_rows, run_link
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

BOB = ("bob@example.com", "another long passphrase", "bob_tv")
RigFactory = Callable[..., Rig]


# --------------------------------------------------------------------------- the rules


def test_an_identity_part_not_known_yet_matches_any() -> None:
    assert same_account("server a|account 1", "server a|")
    assert same_account("server a|", "server a|account 1")
    assert not same_account("server a|account 1", "server b|account 1")
    assert not same_account("server a|account 1", "server a|account 2")
    assert merged("server a|account 1", "server a|") == "server a|account 1"


def plays(*records: str, at: float = 1.7e9) -> Side:
    return Side(tuple(Play(f"episode:tmdb:1:s1e{n}", at, r) for n, r in enumerate(records)))


def test_a_read_holding_no_play_says_nothing_of_whose_account_it_is() -> None:
    kept = plays(*(f"diary {n}" for n in range(400)))

    # An empty history (a library being rebuilt, a glitch) or marks only (undated ticks,
    # named by their item whoever the account): the check waits.
    for read in (Side(), plays("tick", at=UNDATED)):
        assert read_empty(kept, read) and not unrecognised(kept, read)
    # One play of its own, none of the 400: another account's (a record id is one account's).
    assert unrecognised(kept, plays("diary 9001")) and not read_empty(kept, plays("diary 9001"))
    # One of the 400 still there: the account is the one kept; the rest are removals.
    assert not unrecognised(kept, plays("diary 7")) and not read_empty(kept, plays("diary 7"))
    # Too few kept to tell anything by.
    assert not read_empty(plays("a", "b"), Side()) and not unrecognised(plays("a"), plays("c"))


def test_starting_over_forgets_the_profiles_side_and_its_links_only(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "wb.db")
    now = time.time()
    store.set_cursor("serializd", "me", "account", "user alice", now)
    kept = [
        ("serializd", "you", "plays"),  # another profile's
        ("trakt", "me", "plays"),  # the profile's other service (its own memory)
        ("trakt", "me", "link:plex-trakt:plays"),  # a link without serializd
    ]
    gone = [
        ("serializd", "me", "plays"),
        ("serializd", "me", "link:ts:plays"),
        ("trakt", "me", "link:ts:plays"),  # the other side of a link using serializd
        ("watchbridge", "me", "link:ts:tombstones"),
        ("link:ts", "me", "watchlist"),
    ]
    for service, profile, collection in kept + gone:
        store.mirror_put(service, profile, collection, {"k": {}}, now)
    store.set_cursor("trakt", "me", "link:ts", "{}", now)
    store.set_cursor("trakt", "me", "watchlist_check:ts", "x", now)
    store.set_cursor("trakt", "me", "link:plex-trakt", "{}", now)

    change = note_account(store, link_config("ts"), "serializd", "me", "user bob", now)

    assert change is not None and change.links == ("ts",)
    assert all(store.mirror_get(*where) for where in kept)
    assert not any(store.mirror_get(*where) for where in gone)
    assert store.get_cursor("trakt", "me", "link:ts") is None
    assert store.get_cursor("trakt", "me", "watchlist_check:ts") is None
    assert store.get_cursor("trakt", "me", "link:plex-trakt") == "{}"
    assert store.get_cursor("serializd", "me", "account") == "user bob"
    assert note_account(store, link_config("ts"), "serializd", "me", "user bob", now) is None
    store.close()


def test_a_name_the_sign_in_had_before_its_rename_is_the_same_account(tmp_path: Path) -> None:
    """The token answered to alice, then (renamed) to alice2: a run that read alice before the
    rename was learnt, noted after, changes nothing; another sign-in forgets the names."""
    store = Store.open(tmp_path / "wb.db")
    now, config = time.time(), link_config("ts")
    store.put_token("serializd", "me", {"username": "alice2", "formerly": ["alice"]}, now)
    store.set_cursor("serializd", "me", "account", "user alice", now)

    assert note_account(store, config, "serializd", "me", "user alice2", now) is None
    assert note_account(store, config, "serializd", "me", "user alice", now) is None
    assert store.get_cursor("serializd", "me", "account") == "user alice2"

    store.put_token("serializd", "me", {"username": "alice"}, now)  # someone took the name
    change = note_account(store, config, "serializd", "me", "user alice", now)
    assert change is not None and change.before == "user alice2"
    store.close()


def link_config(name: str) -> Config:
    return parse_config(
        f"""services: {{trakt: {{client_id: c}}, serializd: {{}}}}
profiles:
  me: {{accounts: {{trakt: {{}}, serializd: {{email: a@b.c, password: p}}}}}}
links:
  {name}: {{services: [trakt, serializd]}}
""",
        Path("watchbridge.yaml"),
        {},
    )


@pytest.fixture
def app(trakt: FakeTrakt) -> Iterator[TraktApp]:
    app = TraktApp(trakt)
    yield app
    app.http.close()


@pytest.fixture
async def make_rig(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RigFactory]:
    """`make_rig(account=BOB[:2], first_run="dry-run")`: the link on one database, signed in
    to Serializd as `account` (default alice), to Trakt as its default user unless
    `signed_in` (already, with the CLI)."""
    use_fast_readers(monkeypatch)
    rigs: list[Rig] = []

    def make(account: tuple[str, str] = ALICE[:2], signed_in: bool = False, **options: Any) -> Rig:
        if rigs:
            rigs[-1].runtime.close()
        settings = {"first_run": "apply", "max_removal_share": 0.5, **options}
        extra = "".join(f", {k}: {v}" for k, v in settings.items())
        rigs.append(open_rig(tmp_path, trakt, serializd, extra, account, not signed_in))
        return rigs[-1]

    yield make
    for rig in rigs:
        await rig.aclose()


async def test_another_serializd_account_removes_nothing_from_trakt(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z")
    await make_rig().sync_and_deliver()
    assert len(trakt_plays(trakt)) == 2
    bob = serializd.add_user(*BOB)

    rig = make_rig(account=BOB[:2])
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # the daily full read

    assert trakt_plays(trakt) == [(1, 1, "2024-01-01"), (1, 2, "2024-01-02")]
    assert diary_plays_of(serializd, bob) == [(1, 1, "2024-01-01"), (1, 2, "2024-01-02")]


async def test_another_serializd_account_waits_for_review_saying_why(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    await make_rig(first_run="dry-run").sync_and_deliver()
    serializd.add_user(*BOB)
    rig = make_rig(account=BOB[:2], first_run="dry-run")

    with pytest.raises(NeedsReview) as review:
        await run_link(rig.runtime.config, rig.store, LINK, clock=time.time)

    assert "serializd is now user bob_tv (was user alice_tv)" in review.value.message
    assert "nothing is removed because of the change" in review.value.message
    assert rig.store.outbox_counts().get("pending", 0) == 0


def rig_with_alerts(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    account: tuple[str, str] = ALICE[:2],
    first_run: str = "apply",
) -> Rig:
    """The link's rig (`make_rig`'s) with alerts going to `receiver`."""
    text = rig_config(tmp_path, trakt, serializd, f", first_run: {first_run}", account)
    text += f"alerts: {{urls: ['{receiver.apprise_url}']}}\n"
    return rig_for(
        parse_config(text, Path("watchbridge.yaml"), {}), trakt, serializd, {PROFILE: None}
    )


def account_alerts(receiver: AlertReceiver) -> list[dict[str, Any]]:
    return [m for m in receiver.messages if "is another account" in str(m.get("title"))]


async def serializd_signs_in_as_bob(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    first_run: str,
) -> None:
    """Profile me's Serializd, alice_tv, signs in as bob_tv from the link's next runs on."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    first = rig_with_alerts(tmp_path, trakt, serializd, receiver)
    await first.sync_and_deliver(alerts=first.runtime.notifier)
    await first.aclose()
    serializd.add_user(*BOB)
    rig = rig_with_alerts(tmp_path, trakt, serializd, receiver, BOB[:2], first_run)
    try:
        for _ in range(2):
            with contextlib.suppress(NeedsReview):
                await run_link(
                    rig.runtime.config,
                    rig.store,
                    LINK,
                    clock=time.time,
                    alerts=rig.runtime.notifier,
                )
            await rig.deliver()
    finally:
        await rig.aclose()


@pytest.mark.parametrize("first_run", ["apply", "dry-run"])
async def test_another_serializd_account_is_told_in_one_alert(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
    first_run: str,
) -> None:
    """With `first_run: apply` the start over copies everything one side holds, with no
    review to say so: an alert names both accounts, what starts over and how, and what to
    change if the account is not the one meant; once, however many runs follow."""
    use_fast_readers(monkeypatch)
    await serializd_signs_in_as_bob(tmp_path, trakt, serializd, receiver, first_run)

    (alert,) = account_alerts(receiver)
    assert alert["title"] == "watchbridge: profile me's Serializd is another account"
    body = alert["message"]
    assert body.startswith("Profile me's Serializd is now user bob_tv (was user alice_tv).\n")
    if first_run == "apply":
        assert f"links.{LINK} start(s) over for this profile as on a first run" in body
        assert "what only one side holds is copied to the other now" in body
    else:
        assert f"`watchbridge sync --link {LINK} --dry-run`, then" in body
    assert "nothing is removed because of the change" in body
    assert "put me's own email and password back in profiles.me.accounts.serializd" in body
    assert "--confirm-removals is not involved" in body
    assert BOB[1] not in body


@pytest.mark.parametrize(
    ("first_run", "meant"),
    [
        ("apply", "If it is the account meant, there is nothing to do."),
        (
            "dry-run",
            "If it is the account meant, review its first sync:"
            f" `watchbridge sync --link {LINK} --dry-run`, then `--yes`.",
        ),
    ],
)
async def test_an_account_change_alert_leads_with_what_changed_and_what_to_do(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
    first_run: str,
    meant: str,
) -> None:
    # A phone shows the first two lines or so: they were a run-on sentence of how watchbridge
    # starts over, what to do only at the end.
    use_fast_readers(monkeypatch)
    await serializd_signs_in_as_bob(tmp_path, trakt, serializd, receiver, first_run)
    (alert,) = account_alerts(receiver)
    first, second = alert["message"].split("\n\n")[0].split("\n")
    assert first == "Profile me's Serializd is now user bob_tv (was user alice_tv)."
    assert second == (
        f"{meant} If not: put me's own email and password back in"
        " profiles.me.accounts.serializd and restart."
    )


async def test_a_trakt_sign_in_as_someone_else_is_told_by_the_next_housekeeping(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`watchbridge auth trakt` has no alerts of its own: the change waits in the database
    for the service (or the next `watchbridge sync`), which sends it once."""
    use_fast_readers(monkeypatch)
    rig = rig_with_alerts(tmp_path, trakt, serializd, receiver)
    try:
        config, store = rig.runtime.config, rig.store
        assert note_account(store, config, "trakt", PROFILE, "account alice", time.time()) is None
        change = note_account(store, config, "trakt", PROFILE, "account bob", time.time())
        assert change is not None
        assert account_alerts(receiver) == []
        await housekeeping(rig.runtime)
        await housekeeping(rig.runtime)
    finally:
        await rig.aclose()
    (alert,) = account_alerts(receiver)
    assert "Profile me's Trakt is now account bob (was account alice)." in alert["message"]
    assert "run `watchbridge auth trakt --profile me`" in alert["message"]


async def test_the_alert_names_the_trakt_accounts_by_their_usernames_as_text_others_wrote(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Trakt account's uuid tells a user nothing: the alert names both accounts by the
    usernames their reads found, a character that would turn the line around shown as its
    code."""
    use_fast_readers(monkeypatch)
    rig = rig_with_alerts(tmp_path, trakt, serializd, receiver)
    try:
        await rig.sync_and_deliver()  # its read notes the account, sean
        robin = trakt.add_user("robin\u202e")
        said = sign_in_with_the_cli(cli_config(tmp_path, trakt, serializd), trakt, robin)
        await housekeeping(rig.runtime)
    finally:
        await rig.aclose()
    told = "profile me: trakt is now user robin\\u202e (was user sean)"
    assert told in said
    (alert,) = account_alerts(receiver)
    assert "Profile me's Trakt is now user robin\\u202e (was user sean)." in alert["message"]
    assert robin.uuid not in alert["message"] and "\u202e" not in alert["message"]


async def test_a_side_changed_again_within_the_throttle_window_is_told_after_it(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, receiver: AlertReceiver
) -> None:
    """One alert per service and profile per `alerts.throttle`: a change back within the
    window is held, not lost, and told once the window has passed (not counted as
    suppressed at every try meanwhile)."""
    config = parse_config(rig_config(tmp_path, trakt, serializd), Path("watchbridge.yaml"), {})
    clock = FakeClock()
    notifier = Notifier(AlertsConfig(urls=[Secret(receiver.apprise_url)]), clock=clock)
    with Store.open(tmp_path / "alerts.db") as store:
        notifier.remember_in(store)
        for seen in ("account alice", "account bob"):
            note_account(store, config, "trakt", PROFILE, seen, clock())
        await send_account_alerts(store, notifier)
        note_account(store, config, "trakt", PROFILE, "account alice", clock())  # fixed
        clock.advance(600)
        await send_account_alerts(store, notifier)
        await send_account_alerts(store, notifier)
        assert len(account_alerts(receiver)) == 1
        clock.advance(3000)
        await send_account_alerts(store, notifier)
        await send_account_alerts(store, notifier)
        notifier.forget_store()
    first, second = account_alerts(receiver)
    assert "Trakt is now account bob (was account alice)" in first["message"]
    assert "Trakt is now account alice (was account bob)" in second["message"]
    assert "suppressed" not in second["message"]


async def one_way_then_both_ways(rig: Rig) -> NeedsReview:
    """A `--direction trakt-to-serializd --yes` run, delivered, then a two-way run: the
    review it asks for."""
    config = rig.runtime.config
    await run_link(config, rig.store, LINK, direction="trakt-to-serializd", yes=True)
    await rig.deliver()
    with pytest.raises(NeedsReview) as review:
        await run_link(config, rig.store, LINK, clock=time.time)
    return review.value


async def test_a_run_one_way_after_a_start_over_leaves_the_other_way_to_review(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """The user copies Trakt's plays to the new Serializd account (`--direction ... --yes`):
    the new account's own plays still wait for the review of the way back."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    await make_rig().sync_and_deliver()
    bob = serializd.add_user(*BOB)
    log_as(serializd, bob, 1, 5, "2024-02-05T20:00:00.000Z")  # someone else's play
    rig = make_rig(account=BOB[:2], first_run="dry-run")
    review = await one_way_then_both_ways(rig)

    assert "serializd is now user bob_tv" in review.message
    assert trakt_plays(trakt) == [(1, 1, "2024-01-01")]
    assert diary_plays_of(serializd, bob) == [(1, 1, "2024-01-01"), (1, 5, "2024-02-05")]


async def test_a_first_sync_made_one_way_leaves_the_other_way_to_review(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Not an account change: the same rule for a new link's first run."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    app.watch(1, 2, "2024-01-02T20:00:00.000Z")
    rig = make_rig(first_run="dry-run")
    review = await one_way_then_both_ways(rig)

    assert "went one way only" in review.message
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 2)]


async def test_a_first_sync_made_both_ways_one_at_a_time_is_over(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    app.watch(1, 2, "2024-01-02T20:00:00.000Z")
    rig = make_rig(first_run="dry-run")
    config = rig.runtime.config
    for direction in ("trakt-to-serializd", "serializd-to-trakt"):
        await run_link(config, rig.store, LINK, direction=direction, yes=True)
    await rig.deliver()
    app.watch(1, 3, "2024-01-03T20:00:00.000Z")

    result = await run_link(config, rig.store, LINK, clock=time.time)  # no review asked

    assert not result.plans[0].first_run and not result.plans[0].restarted


async def test_the_first_account_seen_is_only_remembered(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """A database from a release that kept no account: the link goes on from its state."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    rig = make_rig()
    await rig.sync_and_deliver()
    with rig.store.transaction() as conn:
        conn.execute("DELETE FROM cursors WHERE name = 'account'")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z")

    result = await rig.sync_and_deliver()

    assert not result.plans[0].restarted and not result.plans[0].first_run
    assert [a.reason for a in result.plans[0].plan.actions] == ["new on serializd"]
    assert rig.store.get_cursor("serializd", PROFILE, "account") == "user alice_tv"


async def test_a_removal_queued_for_the_old_account_is_not_sent_to_the_new_one(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    rig = make_rig()
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    app.unwatch(entry(trakt, 2))
    await rig.sync()  # queues the diary entry's removal, not delivered before the switch
    assert [r.action for r in pending(rig)] == ["remove_play"]
    bob = serializd.add_user(*BOB)

    rig = make_rig(account=BOB[:2])
    await rig.sync_and_deliver()

    assert [p[:2] for p in diary_plays_of(serializd, bob)] == [(1, 1), (1, 3), (1, 4)]
    [dead] = rig.store.dead_letters()
    assert dead.action == "remove_play"
    assert (dead.last_error or "").startswith("not sent: a removal meant for an account used")


async def test_a_username_changed_on_serializd_is_the_same_account(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """Renamed in Serializd's settings: the same sign-in token answers to the new name, which
    proves the account the same. The link goes on (no start-over, no review): nothing is
    copied again and nothing removed, and a play logged after the rename is copied once."""
    rig = make_rig(first_run="dry-run")
    await four_plays_on_both_sides(rig, app, serializd, origin="serializd")
    before = trakt_plays(trakt)
    serializd.user.username = "alice_renamed"  # the token still works
    log(serializd, 2, 1, "2024-03-01T20:00:00.000Z")
    config = rig.runtime.config

    results = []
    for full in (False, True, False):  # the rename is learnt by a read, then noted
        results.append(await run_link(config, rig.store, LINK, clock=time.time, full=full))
        await rig.deliver()

    assert all(not p.restarted and not p.first_run for r in results for p in r.plans)
    assert trakt_plays(trakt) == [*before, (2, 1, "2024-03-01")]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]
    assert rig.store.get_cursor("serializd", PROFILE, "account") == "user alice_renamed"
    assert rig.store.dead_letters() == []


async def renamed_while_the_token_expired(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    app: TraktApp,
    account: tuple[str, str],
) -> tuple[list[RunResult], list[tuple[int, int, str]]]:
    """alice's four plays synced; then she renames herself on Serializd and the token expires
    (yearly) before any read met the rename; the link runs three times signed in as `account`
    (alerts to `receiver`). The runs' results, and Trakt's plays before the rename."""
    first = rig_with_alerts(tmp_path, trakt, serializd, receiver)
    try:
        await four_plays_on_both_sides(first, app, serializd, origin="serializd")
    finally:
        await first.aclose()
    before = trakt_plays(trakt)
    serializd.user.username = "alice_renamed"
    serializd.expire_tokens()  # the next request signs in again, with the config's email
    log(serializd, 2, 1, "2024-03-01T20:00:00.000Z")
    rig = rig_with_alerts(tmp_path, trakt, serializd, receiver, account)
    results = []
    try:
        for full in (False, True, False):
            with contextlib.suppress(NeedsReview):
                results.append(await rig.sync(full=full, alerts=rig.runtime.notifier))
            await rig.deliver()
    finally:
        await rig.aclose()
    return results, before


async def test_a_username_changed_on_serializd_met_first_at_a_new_sign_in_is_the_same_account(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    app: TraktApp,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token expired before any read met the rename: the sign-in with the same email (the
    login Serializd knows the account by) answers to the new name, which proves the account
    the same. The link goes on: no start over, no alert, nothing copied again or removed."""
    use_fast_readers(monkeypatch)
    caplog.set_level(logging.INFO, logger="watchbridge.accounts")

    results, before = await renamed_while_the_token_expired(
        tmp_path, trakt, serializd, receiver, app, ALICE[:2]
    )

    assert len(results) == 3
    assert all(not p.restarted and not p.first_run for r in results for p in r.plans)
    assert account_alerts(receiver) == []
    assert trakt_plays(trakt) == [*before, (2, 1, "2024-03-01")]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]
    store = Store.open(tmp_path / "wb.db")
    try:
        assert store.get_cursor("serializd", PROFILE, "account") == "user alice_renamed"
        assert store.dead_letters() == []
    finally:
        store.close()
    said = [r.getMessage() for r in caplog.records if "renamed on the service" in r.getMessage()]
    assert said == [
        f"profile {PROFILE}: serializd is now user alice_renamed (was user alice_tv), renamed "
        "on the service: the same sign-in answers to it, so it is the same account, and its "
        "links carry on"
    ]


async def test_a_new_sign_in_with_another_email_after_a_rename_is_another_account(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    receiver: AlertReceiver,
    app: TraktApp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same rename and expiry, but the config now signs in with bob's email: another
    Serializd account, whatever alice's old sign-in was called. It is told in an alert and
    the link starts over."""
    use_fast_readers(monkeypatch)
    serializd.add_user(*BOB)

    results, _ = await renamed_while_the_token_expired(
        tmp_path, trakt, serializd, receiver, app, BOB[:2]
    )

    assert results[0].plans[0].restarted
    (alert,) = account_alerts(receiver)
    assert "Profile me's Serializd is now user bob_tv (was user alice_tv)." in alert["message"]


def diary_plays_of(serializd: FakeSerializd, user: Any) -> list[tuple[int, int, str]]:
    saved, serializd.user = serializd.user, user
    try:
        return diary_plays(serializd)
    finally:
        serializd.user = saved


def log_as(serializd: FakeSerializd, user: Any, season: int, number: int, at: str) -> None:
    serializd.log_entry(user, BB, season, number, backdate=at)


def pending(rig: Rig) -> list[OutboxItem]:
    with rig.store.transaction() as conn:
        rows = conn.execute("SELECT * FROM outbox WHERE status = 'pending'").fetchall()
    return [OutboxItem.from_row(row) for row in rows]


# --------------------------------------------------------------------------- another Trakt account


async def test_signing_in_to_trakt_as_someone_else_removes_nothing_from_serializd(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    config = cli_config(tmp_path, trakt, serializd)
    assert "is now" not in sign_in_with_the_cli(config, trakt, trakt.user)  # remembered
    rig = make_rig(signed_in=True)
    await rig.sync_and_deliver()
    rig.runtime.close()
    robin = trakt.add_user("robin")

    said = sign_in_with_the_cli(config, trakt, robin)
    rig = make_rig(signed_in=True)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)

    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]
    assert [(e.item.season, e.item.number) for e in trakt.history(robin)] == [(1, 1)]
    assert len(trakt.history()) == 1  # the first account's play stays where it is
    # By the usernames the sign-ins read: a uuid tells a user nothing.
    assert "trakt is now user robin (was user sean)" in said


async def test_signing_in_as_someone_else_over_an_older_releases_sign_in_starts_over(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """A database from a release that kept no account: the sign-in asks whose the old token
    was before replacing it."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    robin = trakt.add_user("robin")

    printed = sign_in_with_the_cli(cli_config(tmp_path, trakt, serializd), trakt, robin)
    rig = make_rig(signed_in=True)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)

    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]
    assert len(trakt.history(robin)) == 1
    assert "trakt is now user robin (was user sean)" in printed  # the old token's, asked


async def test_signing_in_again_over_an_older_releases_revoked_sign_in_goes_on_as_before(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """The usual reason to sign in again: the old sign-in stopped working. Whose it was Trakt
    no longer says, so the new one is the first account seen, not another: a play removed on
    Serializd meanwhile is removed on Trakt, not copied back by a start-over."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    log(serializd, 1, 2, "2024-01-02T20:00:00.000Z")
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    trakt.revoke_tokens()
    unlog(serializd, review(serializd, 2))

    printed = sign_in_with_the_cli(cli_config(tmp_path, trakt, serializd), trakt, trakt.user)
    rig = make_rig(signed_in=True)
    result = await rig.sync_and_deliver(full=True)

    assert "is now" not in printed and not result.plans[0].restarted
    assert [p[:2] for p in trakt_plays(trakt)] == [(1, 1)]
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]


async def test_another_serializd_account_since_an_older_release_is_recognised_by_its_plays(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """Upgraded from a release that kept no account, with the email changed before the first
    run: the new account is the first one seen, but it holds none of the plays kept."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    bob = bob_with_a_play_of_his_own(serializd)

    result = await make_rig(account=BOB[:2]).sync_and_deliver()

    assert len(trakt_plays(trakt)) == 6
    assert len(diary_plays_of(serializd, bob)) == 6
    assert "holds none of the plays watchbridge kept for it" in result.plans[0].restarted


async def test_another_serializd_account_answering_no_count_is_recognised_by_its_plays(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """As above, Serializd answering no diary count (§5.1): a read missing entries it cannot
    prove gone keeps their plays for the next run's read, but one listing none of the entries
    kept reads another diary (no shifting page hides them all): the plays kept are not the new
    account's, and the check sees that."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    bob = bob_with_a_play_of_his_own(serializd)
    serializd.diary_total_reviews = "null"

    result = await make_rig(account=BOB[:2]).sync_and_deliver()

    assert len(trakt_plays(trakt)) == 6
    assert len(diary_plays_of(serializd, bob)) == 6
    assert "holds none of the plays watchbridge kept for it" in result.plans[0].restarted


async def test_another_trakt_account_over_an_older_releases_revoked_sign_in_is_recognised(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # reads the copies back: their Trakt ids kept
    forget_the_accounts(rig)
    trakt.revoke_tokens()
    robin = trakt.add_user("robin")
    trakt.log_play(episode_of(trakt, 2, 1), "2024-02-01T20:00:00.000Z", user=robin)

    sign_in_with_the_cli(cli_config(tmp_path, trakt, serializd), trakt, robin)
    await make_rig(signed_in=True).sync_and_deliver()

    assert len(diary_plays(serializd)) == 6
    assert len(trakt.history(robin)) == 6


async def test_another_trakt_accounts_ratings_wait_with_the_removals_while_its_account_is_unchecked(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """Upgraded, and Trakt signed in again as robin (the old sign-in revoked: whose it was
    Trakt no longer says). Robin's history is empty, so whose account it is waits for a play;
    but he rated episodes. His ratings are no more the user's than his empty history is the
    user's removals: copied, his newer rating would overwrite the user's own on Serializd
    (newest-wins). They wait with the removals, said with them, and go once confirmed."""
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z", rating=8, date_added="2024-01-02T20:00:00Z")
    for number in range(2, 6):
        log(serializd, 1, number, f"2024-01-0{number}T20:00:00.000Z")
    kinds = {"kinds": "[history, ratings]"}
    rig = make_rig(**kinds)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # reads the copies back: their Trakt ids kept
    assert trakt_rating(trakt, 1, 1) == 8
    forget_the_accounts(rig)
    trakt.revoke_tokens()
    robin = trakt.add_user("robin")
    for number, rating in ((1, 3), (2, 10)):
        episode = episode_of(trakt, 1, number)
        robin.ratings[key_of(episode)] = Rating(episode, rating, "2024-06-01T20:00:00.000Z")
    sign_in_with_the_cli(cli_config(tmp_path, trakt, serializd), trakt, robin)
    rig = make_rig(signed_in=True, **kinds)

    for _ in range(2):  # read in full, then the cheap checks: held all the same
        result = await rig.sync_and_deliver()
        assert (diary_rating(serializd, 1, 1), diary_rating(serializd, 1, 2)) == (8, None)
        assert len(diary_plays(serializd)) == 5
        assert (
            "me: 5 of 5 plays on serializd would be removed (trakt read empty, and its account "
            "is not checked yet: an outage or another account; held until trakt reads plays "
            "again); 2 ratings from trakt would be set on serializd with them, 1 of them over "
            f"serializd's own; confirm with `watchbridge sync --link {LINK} --confirm-removals`"
        ) in result.held

    await rig.sync_and_deliver(confirm_removals=True)

    assert (diary_rating(serializd, 1, 1), diary_rating(serializd, 1, 2)) == (3, 10)


async def test_another_trakt_accounts_undated_plays_wait_with_the_removals_while_it_is_unchecked(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """Upgraded, and Trakt signed in again as robin, whose history holds undated plays only
    (added with "unknown" dates). An undated play is made from its episode, whoever's account
    it is in: it tells nothing of whose the account is, so the check still waits. Nor is it
    the user's play: his undated plays of episodes the user never logged wait with the
    removals, said with them, over runs that plan the same, and go once confirmed."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # reads the copies back: their Trakt ids kept
    forget_the_accounts(rig)
    trakt.revoke_tokens()
    robin = trakt.add_user("robin")
    for season, number in ((1, 1), (2, 1), (2, 2)):
        trakt.log_play(episode_of(trakt, season, number), None, user=robin)
    sign_in_with_the_cli(cli_config(tmp_path, trakt, serializd), trakt, robin)
    rig = make_rig(signed_in=True)
    second_season = serializd.shows[BB].seasons[2].id

    # Read in full, again (the baseline moved: robin's plays kept in it), then the cheap
    # checks: held all the same, the same plan each time.
    for _ in range(3):
        result = await rig.sync_and_deliver()
        assert len(diary_plays(serializd)) == 5
        assert not any(season == second_season for _, season, _ in serializd.ticks())
        assert (
            "me: 5 of 5 plays on serializd would be removed (trakt read empty, and its account "
            "is not checked yet: an outage or another account; held until trakt reads plays "
            "again); 2 undated plays from trakt would be added to serializd with them; confirm "
            f"with `watchbridge sync --link {LINK} --confirm-removals`"
        ) in result.held
    assert len(trakt.history(robin)) == 3  # nothing of the user's copied to robin either

    await rig.sync_and_deliver(confirm_removals=True)

    assert diary_plays(serializd) == []
    assert {(season, number) for _, season, number in serializd.ticks()} >= {
        (second_season, 1),
        (second_season, 2),
    }


async def test_a_delivery_before_the_first_run_after_upgrading_leaves_the_check_owed(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, app: TraktApp
) -> None:
    """The service's worker delivers a row queued before the upgrade (and so sees the new
    Serializd account first) before the link's first run."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    app.watch(1, 6, "2024-01-06T20:00:00.000Z")
    await rig.sync(full=True)  # queues its copy to Serializd; not sent before the upgrade
    forget_the_accounts(rig)
    bob = serializd.add_user(*BOB)

    rig = make_rig(account=BOB[:2], max_removal_share=1.0)
    await rig.deliver()
    result = await rig.sync_and_deliver()

    assert len(trakt_plays(trakt)) == 6
    assert "holds none of the plays watchbridge kept for it" in result.plans[0].restarted
    assert len(diary_plays_of(serializd, bob)) == 6


async def test_a_first_run_after_upgrading_that_fails_leaves_the_check_owed(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log_five(serializd)
    await make_rig().sync_and_deliver()
    forget_the_accounts(make_rig())
    bob = bob_with_a_play_of_his_own(serializd)
    rig = make_rig(account=BOB[:2], max_removal_share=1.0)
    trakt.fail_next(100, 503, route="GET /sync/history/{type}")
    with pytest.raises(WatchbridgeError):
        await rig.sync()
    trakt.clear_knobs()

    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)

    assert len(trakt_plays(trakt)) == 6
    assert len(diary_plays_of(serializd, bob)) == 6


async def test_a_season_marked_watched_by_the_old_account_does_not_hide_the_switch(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """Marked seasons are read as undated plays named by their item, the same whoever the
    account: only records the service gave tell whose the plays were."""
    log_five(serializd)
    serializd.mark(None, BB, 2)
    rig = make_rig()
    await rig.sync_and_deliver(full=True)
    await rig.sync_and_deliver(full=True)
    before = len(trakt.history())
    forget_the_accounts(rig)
    bob_with_a_play_of_his_own(serializd)

    result = await make_rig(account=BOB[:2], max_removal_share=1.0).sync_and_deliver()

    assert "holds none of the plays watchbridge kept for it" in result.plans[0].restarted
    assert len(trakt.history()) == before + 1  # bob's own play, and nothing removed


@pytest.mark.parametrize("share", [0.5, 1.0])
async def test_an_empty_read_of_an_account_first_seen_starts_nothing_over(
    make_rig: RigFactory,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    caplog: pytest.LogCaptureFixture,
    share: float,
) -> None:
    """Upgraded from a release that kept no account, and Serializd answers an empty diary on
    the first run (a glitch): it must not start over and copy Trakt's plays back to it (they
    would stand twice there once the diary reads again), nor remove them from Trakt, even
    with the mass-removal guard turned off (`share` 1.0)."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    rig = make_rig(max_removal_share=share)
    with serializd.lock:
        diary, serializd.user.reviews = serializd.user.reviews, []

    empty = await rig.sync_and_deliver()
    again = await rig.sync_and_deliver()

    for result in (empty, again):
        assert not result.plans[0].restarted and not result.plans[0].plan.writes()
        [held] = result.held
        assert "5 of 5 plays on trakt would be removed (serializd read empty" in held
    assert len(trakt_plays(trakt)) == 5 and not diary_plays(serializd)
    assert rig.store.get_cursor("serializd", PROFILE, check_owed(LINK)) == READ_EMPTY
    said = [r.getMessage() for r in caplog.records if "read empty" in r.getMessage()]
    assert said == [
        f"links.{LINK}: serializd read empty for profile {PROFILE}, and its account is not "
        "checked yet (5 plays kept for it): not taken as another account, nothing copied "
        "again; the check waits for a read holding dated plays, and meanwhile the removals, "
        "and what only serializd holds (undated plays, ratings, watchlist titles), wait for "
        "confirmation"
    ]

    with serializd.lock:
        serializd.user.reviews = diary
    back = await rig.sync_and_deliver()

    assert not back.plans[0].restarted and not back.plans[0].plan.actions and not back.held
    assert len(trakt_plays(trakt)) == 5 and len(diary_plays(serializd)) == 5
    assert rig.store.get_cursor("serializd", PROFILE, check_owed(LINK)) is None


async def test_a_new_account_first_seen_empty_starts_over_once_it_holds_a_play(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """The email changed to a new, empty Serializd account in the upgrade: an empty read
    cannot tell it from an outage, so nothing is copied or removed until it holds a play of
    its own; then it is another account's, and starts over."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    bob = serializd.add_user(*BOB)
    rig = make_rig(account=BOB[:2])

    empty = await rig.sync_and_deliver()

    assert not empty.plans[0].restarted and "serializd read empty" in empty.held[0]
    assert len(trakt_plays(trakt)) == 5 and not diary_plays_of(serializd, bob)
    status = [sys.executable, "-m", "watchbridge", "status", "--config"]
    shown = subprocess.run(
        [*status, str(cli_config(tmp_path, trakt, serializd))], capture_output=True, text=True
    ).stdout
    assert (
        "5 of 5 plays on trakt would be removed (serializd read empty, and its account is not "
        "checked yet: an outage or another account; held until serializd reads plays again)"
    ) in shown

    log_as(serializd, bob, 1, 7, "2024-02-07T20:00:00.000Z")
    started = await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)

    assert "holds none of the plays watchbridge kept for it" in started.plans[0].restarted
    assert not started.held
    assert len(trakt_plays(trakt)) == 6 and len(diary_plays_of(serializd, bob)) == 6


async def test_a_new_account_that_stays_empty_is_not_read_in_full_every_run(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """The new, empty account may get no play for months while its check waits: a run every
    30 minutes asks each side its one cheap question, and reads both in full only as often as
    held removals are (every 3 hours), not every run. A play logged there between those full
    reads is still seen by the next run, which reads in full and starts over (a delta merged
    onto the plays kept would have taken it for the same account)."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    bob = serializd.add_user(*BOB)
    rig = make_rig(account=BOB[:2])
    now = [time.time() - 8 * 3600]  # (in the past: the deliveries go at the real time)

    async def every_half_hour(full: bool = False) -> tuple[Any, list[str], list[str]]:
        """One run, half an hour after the last; the paths it asked of Trakt and Serializd."""
        asked = len(trakt.requests), len(serializd.requests)
        config, clock = rig.runtime.config, lambda: now[0]
        result = await run_link(config, rig.store, LINK, yes=True, full=full, clock=clock)
        await rig.deliver()
        now[0] += 1800
        return (
            result,
            [r.path for r in trakt.requests[asked[0] :]],
            [r.path for r in serializd.requests[asked[1] :]],
        )

    runs = [await every_half_hour() for _ in range(12)]  # six hours

    full_reads = [n for n, (_, to_trakt, _) in enumerate(runs) if HISTORY in to_trakt]
    assert full_reads == [0, 1, 7]  # the first, the hold's own, then three hours on
    for n, (result, to_trakt, to_serializd) in enumerate(runs):
        assert "serializd read empty" in result.held[0]
        if n not in full_reads:
            assert (to_trakt, to_serializd) == (["/sync/last_activities"], [DIARY])
    assert len(trakt_plays(trakt)) == 5 and not diary_plays_of(serializd, bob)

    log_as(serializd, bob, 1, 7, "2024-02-07T20:00:00.000Z")  # no full read due next run
    started, to_trakt, _ = await every_half_hour()
    await every_half_hour(full=True)

    assert HISTORY in to_trakt
    assert "holds none of the plays watchbridge kept for it" in started.plans[0].restarted
    assert len(trakt_plays(trakt)) == 6 and len(diary_plays_of(serializd, bob)) == 6
    assert rig.store.get_cursor("serializd", PROFILE, check_owed(LINK)) is None


async def test_a_side_read_empty_with_nothing_held_keeps_its_check_for_a_read_holding_plays(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """One-way to Serializd, upgraded, now signed in to a new, empty account: its empty read
    plans no removal (a one-way link carries none from its target), so nothing is held. The
    next full read must not find the check with nothing to check by, let it go, and copy
    Trakt's plays to a side that may still hold them (doubled once an outage ends): the
    check waits for a read holding plays, and the account starts over once a play is logged
    there (Trakt's plays copied to it then)."""
    log_five(serializd)
    rig = make_rig()
    await rig.sync_and_deliver()  # (two-way then: Trakt holds the five too)
    forget_the_accounts(rig)
    bob = serializd.add_user(*BOB)
    rig = make_rig(account=BOB[:2], direction="one-way")

    for _ in range(2):
        result = await rig.sync_and_deliver(full=True)
        assert not result.held and not result.plans[0].plan.writes()
        assert rig.store.get_cursor("serializd", PROFILE, check_owed(LINK)) == READ_EMPTY

    log_as(serializd, bob, 1, 7, "2024-02-07T20:00:00.000Z")
    started = await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)

    assert "holds none of the plays watchbridge kept for it" in started.plans[0].restarted
    assert len(diary_plays_of(serializd, bob)) == 6 and len(trakt_plays(trakt)) == 5


@pytest.mark.parametrize(("share", "shows"), [(0.1, 2), (1.0, 4)])
async def test_an_empty_watchlist_of_an_account_first_seen_removes_nothing_from_trakt(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd, share: float, shows: int
) -> None:
    """Upgraded, and signed in to a new, empty Serializd account: its empty watchlist is no
    more the user's removals than its empty diary. The titles synced to Trakt stay, however
    few (the guard lets two go by themselves) and whatever `max_removal_share`, until a play
    there tells whose the account is."""
    log_five(serializd)
    for name, tmdb in list(WATCHLISTED.items())[:shows]:
        trakt.add_show(name, tmdb=tmdb, seasons={1: 8})
        serializd.add_show(tmdb, name, seasons={1: 8})
        serializd.add_to_watchlist(None, tmdb)
    lists = {"kinds": "[history, watchlist]", "max_removal_share": share}
    rig = make_rig(**lists)
    await rig.sync_and_deliver()
    assert len(trakt.watchlist()) == shows
    forget_the_accounts(rig)
    bob = serializd.add_user(*BOB)
    rig = make_rig(account=BOB[:2], **lists)

    for _ in range(2):  # read in full, then the cheap checks: held all the same
        result = await rig.sync_and_deliver()
        assert len(trakt.watchlist()) == shows
        assert (
            f"me: watchlist: {shows} of {shows} watchlist titles on Trakt would be removed "
            "(serializd read empty, and its account is not checked yet: an outage or another "
            "account; held until serializd reads plays again); confirm with `watchbridge sync "
            f"--link {LINK} --confirm-removals`"
        ) in result.held

    log_as(serializd, bob, 1, 7, "2024-02-07T20:00:00.000Z")
    started = await rig.sync_and_deliver()

    assert "holds none of the plays watchbridge kept for it" in started.plans[0].restarted
    assert len(trakt.watchlist()) == shows and not started.lists.held


async def test_another_accounts_watchlist_waits_with_the_removals_while_its_account_is_unchecked(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """Upgraded, and the profile's Serializd email is now bob's, whose diary is empty: whose
    account it is waits for a play. His own watchlist titles are no more the user's additions
    than his empty watchlist is the user's removals: they wait with the removals, said with
    them, and go once confirmed (`--confirm-removals`), as the removals do."""
    log_five(serializd)
    names = list(WATCHLISTED.items())
    for name, tmdb in names:
        trakt.add_show(name, tmdb=tmdb, seasons={1: 8})
        serializd.add_show(tmdb, name, seasons={1: 8})
    for _, tmdb in names[:2]:
        serializd.add_to_watchlist(None, tmdb)
    lists = {"kinds": "[history, watchlist]"}
    rig = make_rig(**lists)
    await rig.sync_and_deliver()
    assert len(trakt.watchlist()) == 2
    forget_the_accounts(rig)
    bob = serializd.add_user(*BOB)
    for _, tmdb in names[2:]:
        serializd.add_to_watchlist(bob, tmdb)
    rig = make_rig(account=BOB[:2], **lists)

    for _ in range(2):  # read in full, then the cheap checks: held all the same
        result = await rig.sync_and_deliver()
        assert sorted(i.title for i in trakt_watchlist(trakt)) == ["Severance", "The Bear"]
        assert (
            "me: watchlist: 2 of 2 watchlist titles on Trakt would be removed, and 2 watchlist "
            "titles only on Serializd would be added to Trakt (serializd read empty, and its "
            "account is not checked yet: an outage or another account; held until serializd "
            "reads plays again); confirm with `watchbridge sync --link "
            f"{LINK} --confirm-removals`"
        ) in result.held

    await rig.sync_and_deliver(confirm_removals=True)

    assert sorted(i.title for i in trakt_watchlist(trakt)) == ["Andor", "Shogun"]


def trakt_watchlist(trakt: FakeTrakt) -> list[Any]:
    return [row.item for row in trakt.watchlist()]


WATCHLISTED = {"Severance": 95396, "The Bear": 136315, "Andor": 83867, "Shogun": 126308}

HISTORY = "/sync/history/episodes"  # Trakt's, read by a full read (or a delta after a play)
DIARY = f"/api/user/{BOB[2]}/diary"  # Serializd's first diary page: its cheap question


async def test_a_links_first_run_leaves_the_account_check_another_link_owes(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgraded, now signed in to Serializd as bob, and a second link added in the same edit:
    it runs first with nothing kept, and the first link still checks what it kept."""
    use_fast_readers(monkeypatch)
    log_five(serializd)
    options = ", first_run: apply, max_removal_share: 1.0"
    config = parse_config(rig_config(tmp_path, trakt, serializd, options), PATH, {})
    rig = rig_for(config, trakt, serializd, {PROFILE: None})
    await rig.sync_and_deliver()
    forget_the_accounts(rig)
    await rig.aclose()
    bob = bob_with_a_play_of_his_own(serializd)
    text = rig_config(tmp_path, trakt, serializd, options, BOB[:2])
    text += f"  other: {{services: [serializd, trakt], direction: one-way{options}}}\n"
    rig = rig_for(parse_config(text, PATH, {}), trakt, serializd, {})
    try:
        await run_link(rig.runtime.config, rig.store, "other", yes=True, clock=time.time)
        result = await rig.sync_and_deliver()
    finally:
        await rig.aclose()

    assert len(trakt_plays(trakt)) == 6  # bob's play, copied once
    assert "holds none of the plays watchbridge kept for it" in result.plans[0].restarted
    assert len(diary_plays_of(serializd, bob)) == 6


PATH = Path("watchbridge.yaml")


def bob_with_a_play_of_his_own(serializd: FakeSerializd) -> Any:
    """Another Serializd account, as one used before reads: with a play logged there (one
    holding none says nothing of whose it is: `test_an_empty_read_...`)."""
    bob = serializd.add_user(*BOB)
    log_as(serializd, bob, 1, 7, "2024-02-07T20:00:00.000Z")
    return bob


def episode_of(trakt: FakeTrakt, season: int, number: int) -> Any:
    show = next(s for s in trakt.shows if s.tmdb == BB)
    return show.seasons[season].episodes[number]


def log_five(serializd: FakeSerializd) -> None:
    """Five diary plays: enough kept for the first-seen account check (accounts.MIN_KEPT)."""
    for number in range(1, 6):
        log(serializd, 1, number, f"2024-01-0{number}T20:00:00.000Z")


def forget_the_accounts(rig: Rig) -> None:
    """What an older release's database lacks: the accounts and Trakt's per-token cache."""
    with rig.store.transaction() as conn:
        conn.execute("DELETE FROM cursors WHERE name = 'account'")
    rig.store.cache_forget("trakt-account")
    rig.runtime.close()


async def test_another_trakt_account_is_noticed_by_the_next_read_when_the_sign_in_could_not_ask(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    config = cli_config(tmp_path, trakt, serializd)
    rig = make_rig()
    await rig.sync_and_deliver()  # its read notes the account
    rig.runtime.close()
    robin = trakt.add_user("robin")
    trakt.fail_next(100, 503, route="/users/settings")

    said = sign_in_with_the_cli(config, trakt, robin)
    trakt.clear_knobs()
    rig = make_rig(signed_in=True)
    result = await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)

    assert "is now" not in said
    assert "trakt is now user robin (was user sean)" in result.plans[0].restarted
    assert [p[:2] for p in diary_plays(serializd)] == [(1, 1)]
    assert len(trakt.history(robin)) == 1


async def test_every_review_after_a_start_over_says_why_until_it_is_applied(
    make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    log(serializd, 1, 1, "2024-01-01T20:00:00.000Z")
    await make_rig(first_run="dry-run").sync_and_deliver()
    serializd.add_user(*BOB)
    rig = make_rig(account=BOB[:2], first_run="dry-run")
    for _ in range(2):
        with pytest.raises(NeedsReview) as review:
            await run_link(rig.runtime.config, rig.store, LINK, clock=time.time)
        assert "serializd is now user bob_tv" in review.value.message

    applied = await rig.sync_and_deliver()  # --yes
    again = await rig.sync_and_deliver(full=True)

    assert "serializd is now user bob_tv" in applied.plans[0].restarted
    assert again.plans[0].restarted == ""


def cli_config(tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd) -> Path:
    """The rig's config as a file, for the CLI (same database, same profile)."""
    path = tmp_path / "watchbridge.yaml"
    text = rig_config(tmp_path, trakt, serializd, ", first_run: apply")
    path.write_text(text, encoding="utf-8")
    return path


def sign_in_with_the_cli(config: Path, trakt: FakeTrakt, user: Any) -> str:
    """`watchbridge auth trakt`, the code approved on Trakt as `user`; what it printed."""
    trakt.device_interval = 0
    command = [sys.executable, "-m", "watchbridge", "auth", "trakt", "--config", str(config)]
    waiting = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiting.stdout is not None
    code = waiting.stdout.readline().rsplit(" ", 1)[-1].strip()
    trakt.approve_device(code, user)
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    return out


# --------------------------------------------------------------------------- another Plex server


def test_a_new_plex_server_removes_nothing_from_trakt(tmp_path: Path, start_fake: Any) -> None:
    """The old server retired, a fresh one set up with the same library and no watch history:
    Trakt keeps every play, and the new server gets them."""
    path, trakt, old = setup_plex_link(tmp_path, start_fake)
    sync_plex(path)
    assert len(trakt.history()) == 2
    new = start_fake(FakePlex(machine_id="ab" * 20))
    new.add_movie("100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    new.add_show("200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    new.add_episode("201", "200", 1, 1)
    new.add_episode("202", "200", 1, 2)
    path.write_text(path.read_text(encoding="utf-8").replace(old.url, new.url), encoding="utf-8")

    second = sync_plex(path)
    sync_plex(path, "--full")

    assert "plex is now server abab" in second.stdout
    assert plex_trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Movie", "2024-01-01T20:00:00.000Z"),
    ]
    assert new.user_state("100")["viewCount"] == 1
    assert new.user_state("201")["viewCount"] == 1


def moved_with_its_database(old: FakePlex, start_fake: Any, path: Path) -> FakePlex:
    """Plex moved to new hardware with its database (and `services.plex.url` pointed there):
    a new machine id, every ratingKey and history id renumbered, the same history rows and
    each account's view counts and last-viewed dates as they were."""
    new = start_fake(FakePlex(machine_id="ab" * 20, version=old.version))
    new.add_movie("1100", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    new.add_show("1200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    new.add_episode("1201", "1200", 1, 1)
    new.add_episode("1202", "1200", 1, 2)
    new._next_history = 500  # the migrated rows get other ids
    renumbered = {"100": "1100", "201": "1201", "202": "1202"}
    for row in sorted(old.history.values(), key=lambda r: r["viewedAt"]):
        new.watch(renumbered[row["ratingKey"]], row["viewedAt"], row["accountID"])
    for (account, rating_key), state in old.state.items():
        new.state[account, renumbered[rating_key]] = dict(state)
    path.write_text(path.read_text(encoding="utf-8").replace(old.url, new.url), encoding="utf-8")
    return new


# A server since PMS 1.40.0.7998 wrote no history row for that copy: Arrival moves with its view
# count and last-viewed date alone, which is the copy all the same, never a play of its own.
@pytest.mark.parametrize("version", [OLD_VERSION, MODERN_VERSION], ids=["pms-1.32", "pms-1.41"])
def test_a_plex_server_moved_with_its_history_adds_no_play_for_the_ones_copied_into_it(
    tmp_path: Path, start_fake: Any, version: str
) -> None:
    """Plex moved to new hardware with its database: new machine id, every ratingKey and
    history id renumbered, the same viewing times. Trakt's Arrival, copied into the old server
    (Plex dated it the day of the copy), is in the new server's history at that time: it is
    the copy, not a second viewing to give Trakt, nor does Trakt's play go to Plex again."""
    path, trakt, old = setup_plex_link(tmp_path, start_fake)
    old.version = version
    sync_plex(path)  # Trakt's Arrival scrobbled into the old server, dated now
    assert len(old.history_of("100")) == (1 if version == OLD_VERSION else 0)
    new = moved_with_its_database(old, start_fake, path)

    moved = sync_plex(path)
    sync_plex(path, "--full")

    assert "plex is now server abab" in moved.stdout
    assert plex_trakt_plays(trakt) == [
        ("Episode", "2024-02-01T21:00:00.000Z"),
        ("Movie", "2024-01-01T20:00:00.000Z"),
    ]
    assert new.count("GET", "/:/scrobble") == 0
    assert new.user_state("1100")["viewCount"] == 1


# On a server since 1.40 the copy leaves no row, and a rewatch in Plex after it moves Arrival's
# last-viewed date off it: nothing on the new server shows the copy. The rewatch, copied to
# Trakt before the move, is that play still; Trakt's play is not written again, nor is
# anything copied twice.
@pytest.mark.parametrize("version", [OLD_VERSION, MODERN_VERSION], ids=["pms-1.32", "pms-1.41"])
def test_a_plex_server_moved_after_a_rewatch_of_a_copied_play_adds_no_play(
    tmp_path: Path, start_fake: Any, version: str
) -> None:
    path, trakt, old = setup_plex_link(tmp_path, start_fake)
    old.version = version
    old.clock = lambda: time.time() - 3600  # an hour slow: the copy is dated an hour back
    sync_plex(path)
    old.clock = time.time  # set right; the user watches Arrival again in Plex
    rewatched = time.time() - 60
    old.watch("100", rewatched)
    sync_plex(path)  # the rewatch, copied to Trakt
    on_trakt = plex_trakt_plays(trakt)
    assert len(on_trakt) == 3
    new = moved_with_its_database(old, start_fake, path)

    sync_plex(path)
    sync_plex(path, "--full")

    assert plex_trakt_plays(trakt) == on_trakt
    assert new.count("GET", "/:/scrobble") == 0
    assert new.user_state("1100")["viewCount"] == 2


def test_writes_a_new_plex_server_never_shows_are_forgotten_half_a_year_after_the_switch(
    tmp_path: Path, start_fake: Any
) -> None:
    """The new server has no Arrival, so Trakt's Arrival written into the old one never shows
    there: its record waits (a history imported later would show it), until the housekeeping
    half a year after the switch."""
    path, _, old = setup_plex_link(tmp_path, start_fake)
    sync_plex(path)  # Trakt's Arrival scrobbled into the old server
    new = start_fake(FakePlex(machine_id="ab" * 20))
    new.add_show("1200", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    new.add_episode("1201", "1200", 1, 1)
    path.write_text(path.read_text(encoding="utf-8").replace(old.url, new.url), encoding="utf-8")
    switched = time.time()
    sync_plex(path)
    sync_plex(path, "--full")  # a run after the switch keeps the record's date

    assert waiting_writes(path, switched + KEEP_WRITTEN_BEFORE - 86400) == 1
    assert waiting_writes(path, switched + KEEP_WRITTEN_BEFORE + 86400) == 0


def waiting_writes(path: Path, at: float) -> int:
    """After a housekeeping round at `at`: the old server's writes waiting to be shown."""

    async def housekeeping_at() -> int:
        runtime = build_runtime(parse_config(path.read_text("utf-8"), path, {}), clock=lambda: at)
        runtime.open()
        try:
            await housekeeping(runtime)
            return len(runtime.store.mirror_get("plex", "alex", WRITTEN_BEFORE))
        finally:
            runtime.close()

    return asyncio.run(housekeeping_at())


def test_a_play_queued_for_plex_waits_while_the_server_is_another_than_its_items_came_from(
    tmp_path: Path, start_fake: Any
) -> None:
    """Pointed at a new server before the link read it: the old server's ratingKeys name other
    items there (Tron where Arrival was)."""
    path, _, old = setup_plex_link(tmp_path, start_fake)
    sync_plex(path)  # reads the old server: Arrival is its item 100
    new = start_fake(FakePlex(machine_id="ab" * 20))
    new.add_movie("100", "Tron", 1982, ["imdb://tt0084827", "tmdb://97"])
    new.add_movie("300", "Arrival", 2016, ["imdb://tt2543164", "tmdb://329865"])
    store = Store.open(tmp_path / "watchbridge.db")
    config = parse_config(path.read_text(encoding="utf-8").replace(old.url, new.url), path, {})
    store.enqueue(outbox_rows("plex-trakt", "alex", (arrival_play(),))[0], time.time())

    delivered = asyncio.run(deliver_to_plex(config, store))
    store.close()

    assert new.user_state("100") == {}
    assert delivered[0].startswith("Hold(") and "the Plex server is now abab" in delivered[0]


def test_a_play_queued_for_a_replaced_plex_server_no_link_reads_any_more_is_a_dead_letter(
    tmp_path: Path, start_fake: Any
) -> None:
    path, _, old = setup_plex_link(tmp_path, start_fake)
    sync_plex(path)
    new = start_fake(FakePlex(machine_id="ab" * 20))
    store = Store.open(tmp_path / "watchbridge.db")
    config = parse_config(path.read_text(encoding="utf-8").replace(old.url, new.url), path, {})
    store.enqueue(outbox_rows("plex-trakt", "alex", (arrival_play(),))[0], time.time())

    delivered = asyncio.run(deliver_to_plex(replace(config, links={}), store))  # link removed
    store.close()

    assert delivered[0].startswith("Dead(") and "which no link in the config does" in delivered[0]


def test_retry_leaves_an_old_accounts_removal_whatever_marks_precede_its_reason(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """A restored database (or a send that may have landed) puts its own mark in front."""
    config = cli_config(tmp_path, trakt, serializd)
    store = Store.open(tmp_path / "wb.db")
    store.enqueue([NewOutboxRow("trakt", PROFILE, "remove_rating", {"item": {}}, "k", "i")], 1.0)
    [row] = store.claim("test", 2.0, 1, ["trakt"])
    store.mark_dead(row.id, 3.0, f"{UNKNOWN_OUTCOME}: {NOT_SENT} (trakt, account a, of me)")
    store.close()

    command = [sys.executable, "-m", "watchbridge", "deadletters", "retry", "--all"]
    said = subprocess.run(
        [*command, "--config", str(config)], capture_output=True, text=True, timeout=60
    )

    assert "1 left as dead letter(s): removals meant for an account" in said.stdout
    with Store.open(tmp_path / "wb.db") as store:
        assert [item.id for item in store.dead_letters()] == [row.id]


def arrival_play() -> Action:
    return Action("add_play", "plex", "movie:tmdb:329865", "new on trakt", time.time() - 3600)


async def deliver_to_plex(config: Config, store: Store) -> list[str]:
    """Claim the Plex rows and deliver them with a target for `config`; their outcomes."""
    target = PlexTarget(plex_client(config, store, time.time), config, store, time.time)
    try:
        rows = store.claim("test", time.time(), 10, ["plex"])
        outcomes = await target.deliver(rows, time.time())
    finally:
        await target.aclose()
    return [str(outcome) for outcome in outcomes.values()]


async def a_rating_removal_queued(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> tuple[Path, Any]:
    """Signed in to Trakt with the CLI, the show's rating removed on Serializd and its
    removal queued for Trakt; robin, the partner, rated the show on their own account.
    The CLI's config, and robin."""
    rated = serializd.log_entry(None, BB, None, None, rating=7, is_log=False)
    config = cli_config(tmp_path, trakt, serializd)
    sign_in_with_the_cli(config, trakt, trakt.user)
    rig = make_rig(signed_in=True, max_removal_share=1.0)
    await rig.sync_and_deliver()
    robin = trakt.add_user("robin")
    with trakt.lock:
        robin.ratings.update(trakt.user.ratings)
    with serializd.lock:
        serializd.user.reviews.remove(rated)
    await rig.sync(full=True)
    assert [r.action for r in pending(rig)] == ["remove_rating"]
    rig.runtime.close()
    return config, robin


@pytest.mark.parametrize("retried", [False, True])
async def test_a_rating_removal_queued_for_the_old_trakt_account_spares_the_new_ones_rating(
    tmp_path: Path,
    make_rig: RigFactory,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    retried: bool,
) -> None:
    """A rating removal names no record (Trakt ratings have none): it is the old account's
    all the same, and `deadletters retry --all` leaves it a dead letter."""
    config, robin = await a_rating_removal_queued(tmp_path, make_rig, trakt, serializd)

    sign_in_with_the_cli(config, trakt, robin)
    if retried:
        command = [sys.executable, "-m", "watchbridge", "deadletters", "retry", "--all"]
        said = subprocess.run(
            [*command, "--config", str(config)], capture_output=True, text=True, timeout=60
        )
        assert "1 left as dead letter(s): removals meant for an account" in said.stdout
    await make_rig(signed_in=True, max_removal_share=1.0).deliver()

    assert [(r.item.kind, r.rating) for r in trakt.ratings(robin)] == [("show", 7)]


async def test_the_trakt_target_notices_a_sign_in_as_someone_else_that_could_not_ask(
    tmp_path: Path, make_rig: RigFactory, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    """Deliveries alone (webhooks, no link run yet) ask whose account they write to."""
    config, robin = await a_rating_removal_queued(tmp_path, make_rig, trakt, serializd)
    trakt.fail_next(100, 503, route="/users/settings")
    sign_in_with_the_cli(config, trakt, robin)  # could not ask whose the new sign-in is
    trakt.clear_knobs()

    rig = make_rig(signed_in=True, max_removal_share=1.0)
    await rig.deliver()

    assert [(r.item.kind, r.rating) for r in trakt.ratings(robin)] == [("show", 7)]
    assert [r.last_error.startswith(NOT_SENT) for r in rig.store.dead_letters()] == [True]
