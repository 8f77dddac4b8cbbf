"""A household on one Trakt <-> Serializd link: one person's broken account (a revoked
Trakt sign-in, a changed Serializd password) is theirs alone; the others keep syncing, and
the run says whose it is."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt
from tests.linkrig import BB, LINK, Rig, rig_for, use_fast_readers
from tests.test_sync_scenarios import ago
from watchbridge.cli import cli
from watchbridge.config import parse_config
from watchbridge.errors import WatchbridgeError
from watchbridge.store import Store
from watchbridge.sync import NeedsReview, failure_of, run_link

pytestmark = pytest.mark.anyio

BOB = ("bob@example.com", "bobs password", "bob_tv")


@pytest.fixture
def trakt(start_fake: Callable[[Any], Any]) -> FakeTrakt:
    fake: FakeTrakt = start_fake(FakeTrakt())
    fake.add_show("Breaking Bad", 2008, tmdb=BB, tvdb=81189, seasons={1: 7})
    fake.add_user("alice")
    fake.add_user("bob")
    return fake


@pytest.fixture
def serializd(start_fake: Callable[[Any], Any]) -> FakeSerializd:
    fake: FakeSerializd = start_fake(FakeSerializd())
    fake.add_show(BB, "Breaking Bad", seasons={1: 7})
    fake.add_user(*BOB)
    return fake


@pytest.fixture
async def household(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    """alice and bob, each with their own Trakt and Serializd accounts, on one link."""
    use_fast_readers(monkeypatch)
    rig = household_rig(tmp_path, trakt, serializd, "apply")
    yield rig
    await rig.aclose()


def household_rig(
    tmp_path: Path,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    first_run: str,
    signed_in: tuple[str, ...] = ("alice", "bob"),
) -> Rig:
    config = parse_config(
        household_yaml(tmp_path, trakt, serializd, first_run), tmp_path / "watchbridge.yaml", {}
    )
    return rig_for(config, trakt, serializd, {person: person for person in signed_in})


def household_yaml(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, first_run: str
) -> str:
    return f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  serializd: {{api_url: "{serializd.url}"}}
profiles:
  alice: {{accounts: {{trakt: {{}}, serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}}}}}
  bob: {{accounts: {{trakt: {{}}, serializd: {{email: {BOB[0]}, password: "{BOB[1]}"}}}}}}
links:
  {LINK}: {{services: [trakt, serializd], first_run: {first_run}}}
"""


def plays_of(trakt: FakeTrakt, user: str) -> list[tuple[int, int]]:
    return [(e.item.season, e.item.number) for e in trakt.history(user)]  # type: ignore[union-attr]


async def test_one_persons_revoked_trakt_sign_in_does_not_stop_the_others_sync(
    household: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    await household.sync_and_deliver()
    trakt.revoke_tokens("bob")  # bob revoked the app on Trakt
    serializd.log_entry(None, BB, 1, 1, backdate=ago(1))  # alice logs S1E1 on her phone
    result = await household.sync_and_deliver()
    assert plays_of(trakt, "alice") == [(1, 1)]
    (failure,) = result.errors
    # Named once: it read "bob: trakt: Trakt no longer accepts the sign-in of profile bob".
    assert failure.startswith("Trakt no longer accepts the sign-in of profile bob ")
    assert failure.endswith("run `watchbridge auth trakt --profile bob`")
    assert result.outcome == "failed"  # counted: after three runs, the link alerts


async def test_one_persons_changed_serializd_password_does_not_stop_the_others_sync(
    household: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    serializd.users[BOB[0]].password = "changed on the website"
    serializd.log_entry(None, BB, 1, 2, backdate=ago(1))  # alice's play
    result = await household.sync_and_deliver()
    assert plays_of(trakt, "alice") == [(1, 2)]
    (failure,) = result.errors  # "bob: serializd: ... of profile bob" named him twice
    assert failure.startswith("Serializd refused the email or password of profile bob ")


async def test_a_link_nobody_can_read_fails_as_before(
    household: Rig, serializd: FakeSerializd
) -> None:
    for user in serializd.users.values():
        user.password = "changed on the website"
    with pytest.raises(WatchbridgeError, match="alice"):
        await household.sync()


async def test_a_persons_failure_beside_anothers_first_run_review_is_recorded_and_counted(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_readers(monkeypatch)
    rig = household_rig(tmp_path, trakt, serializd, "dry-run", signed_in=("alice",))
    try:
        await rig.sync_and_deliver()  # alice reviewed (`sync --yes`); bob not signed in yet
        sign_in_trakt(rig.store, trakt, "bob", now=time.time(), user="bob")  # his review next
        serializd.log_entry(serializd.users[BOB[0]], BB, 1, 3, backdate=ago(1))  # to copy
        trakt.revoke_tokens("alice")  # meanwhile alice's sign-in lapses
        with pytest.raises(NeedsReview) as raised:
            await run_link(rig.runtime.config, rig.store, LINK, clock=time.time)
        (run,) = rig.store.recent_runs(LINK, 1)
    finally:
        await rig.aclose()
    (failure,) = raised.value.failures
    assert failure.startswith("Trakt no longer accepts the sign-in of profile alice ")
    assert "for bob" in raised.value.message  # not "the first sync" of everyone
    assert run.outcome == "failed" and failure in (run.error or "")  # counted, said


def test_sync_from_cron_says_who_failed_beside_anothers_review(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fast_readers(monkeypatch)
    serializd.users[ALICE[0].lower()].password = "changed on the website"  # alice fails
    serializd.log_entry(serializd.users[BOB[0]], BB, 1, 3, backdate=ago(1))  # bob's to review
    rig = household_rig(tmp_path, trakt, serializd, "dry-run")
    rig.runtime.close()
    config = tmp_path / "watchbridge.yaml"
    config.write_text(household_yaml(tmp_path, trakt, serializd, "dry-run"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["sync", "--config", str(config)])
    assert result.exit_code == 1
    # Not only "the first sync ... for bob"; and alice named once (not "alice: serializd: ...").
    said = "error: Serializd refused the email or password of profile alice ("
    assert said in result.stderr
    assert "other profiles sync as usual" not in result.stderr
    with Store.open(tmp_path / "wb.db") as store:
        (run,) = store.recent_runs(LINK, 1)
    assert run.outcome == "failed"  # counted towards the "keeps failing" alert


def test_what_a_run_ending_in_a_review_reports_is_only_who_failed_beside_it() -> None:
    # The "keeps failing" alert counts these, and a run with none resolves it.
    assert failure_of(NeedsReview("review bob's first sync")) is None
    assert failure_of(NeedsReview("review", failures=("alice: x",))) == "alice: x"
    assert failure_of(WatchbridgeError("links.ts: all failed")) == "links.ts: all failed"
