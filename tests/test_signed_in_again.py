"""Plays held for a sign-in go as soon as the person signs in again: the delivery worker of a
running service notices a `watchbridge auth` made beside it (the sign-in counted in the
store) and lifts that profile's sign-in holds at once, not at the end of their half hour.
Against the fake AniList and Trakt over real HTTP, the service's own clock standing still."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, until
from tests.test_cli import run
from tests.test_deliver_anilist import (
    PART_2,
    anilist_target,
    enqueue,
    episode,
    start_anilist_with_part_2,
)
from tests.test_delivery import HEAT, _late_play
from watchbridge.app import Runtime
from watchbridge.config import parse_config
from watchbridge.deliver.worker import DeliveryWorker, Target, signed_in_again
from watchbridge.services.anilist import SERVICE, AniListToken
from watchbridge.store import NewOutboxRow, Store
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

PAUSED = "watchbridge: AniList sign-in needed (profile me)"
LOOK = 0.1  # the worker's look for a sign-in (10 s in the service): the test waits no longer


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    return start_anilist_with_part_2(start_fake)


@pytest.fixture
async def runtime(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver
) -> AsyncIterator[Runtime]:
    """A service's runtime whose profile `me` signs in to AniList with the config's token,
    the config also in a file for the commands run beside it."""
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me: {{accounts: {{anilist: {{token: "{anilist.issue_token()}"}}}}}}
"""
    path = tmp_path / "watchbridge.yaml"
    path.write_text(text)
    runtime = build_runtime(parse_config(text, path, {}), clock=FakeClock(anilist.now()))
    runtime.open()
    yield runtime
    runtime.close()


async def serving(
    runtime: Runtime, targets: list[Target], **given: float
) -> tuple[DeliveryWorker, asyncio.Event, asyncio.Task[None]]:
    """The service's delivery worker, running (its idle wake as the service's: 5 minutes)."""
    worker = DeliveryWorker(lambda _: targets, runtime.config.delivery, **given)
    stop = asyncio.Event()
    return worker, stop, asyncio.create_task(worker.run(runtime, stop))


async def stopped(worker: DeliveryWorker, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    worker.notify()
    await asyncio.wait_for(task, 10)


def held_for_sign_in(runtime: Runtime, target: str) -> bool:
    return runtime.store.waits_for_sign_in(target, "me")


async def test_a_play_held_for_a_refused_anilist_token_goes_once_auth_anilist_runs_beside(
    runtime: Runtime, anilist: FakeAniList, receiver: AlertReceiver, tmp_path: Path
) -> None:
    # AniList no longer takes the token (revoked, or it ran out there): a play for it waits
    # half an hour at a time, told as one alert.
    assert isinstance(runtime.clock, FakeClock)
    anilist.expire_tokens()
    worker, stop, task = await serving(runtime, [anilist_target(runtime, runtime.clock)])
    worker.sign_in_look = LOOK
    try:
        enqueue(runtime, "play", episode(40), runtime.clock() - 60)
        worker.notify()
        await until(lambda: held_for_sign_in(runtime, "anilist"))
        await until(lambda: receiver.titles() == [PAUSED])

        # The person signs in again while the service runs: the play goes now, the alert is
        # resolved, though the service's clock never reached the end of the hold.
        signed = await asyncio.to_thread(
            run,
            "auth",
            "anilist",
            "--config",
            str(tmp_path / "watchbridge.yaml"),
            "--token",
            anilist.issue_token(),
        )
        assert signed.returncode == 0, signed.stderr
        await until(lambda: anilist.snapshot().get(PART_2, {}).get("progress") == 3, timeout=5)
        await until(lambda: receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"], timeout=5)
        assert runtime.store.outbox_counts()["pending"] == 0
    finally:
        await stopped(worker, stop, task)


async def test_a_sign_in_while_the_refused_try_was_under_way_lifts_the_hold_it_set(
    runtime: Runtime, anilist: FakeAniList, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `watchbridge auth anilist` ran while the play was in flight with the old token: the
    # command found nothing held to make due, and the refusal then held the play. The
    # sign-in came after the try's claim, so the worker lifts the hold that refusal set.
    assert isinstance(runtime.clock, FakeClock)
    anilist.expire_tokens()
    caplog.set_level(logging.INFO, "watchbridge.deliver.worker")
    worker, stop, task = await serving(
        runtime, [anilist_target(runtime, runtime.clock)], sign_in_look=LOOK
    )
    try:
        sent = len(anilist.requests)
        answer = anilist.hold_operation("ListChunk")  # the refused try waits for its answer
        enqueue(runtime, "play", episode(40), runtime.clock() - 60)
        worker.notify()
        await until(lambda: len(anilist.requests) > sent)
        with Store.open(tmp_path / "wb.db") as beside:  # the command's own
            fresh = AniListToken.from_access_token(anilist.issue_token(), runtime.clock())
            beside.put_token(SERVICE, "me", fresh.to_dict(), runtime.clock())
            assert beside.resume_after_sign_in("anilist", "me", runtime.clock()) == 0
        answer.set()  # refused: held for half an hour, the sign-in it waits for made already
        await until(lambda: anilist.snapshot().get(PART_2, {}).get("progress") == 3, timeout=5)
        assert "profile me signed in to AniList again" in caplog.text
    finally:
        await stopped(worker, stop, task)


async def test_a_play_an_earlier_start_held_goes_once_the_sign_in_comes_after_a_restart(
    runtime: Runtime, anilist: FakeAniList, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The play was held before the service restarted; the person signs in after that.
    assert isinstance(runtime.clock, FakeClock)
    caplog.set_level(logging.INFO, "watchbridge.deliver.worker")
    anilist.expire_tokens()
    before = DeliveryWorker(lambda _: [], runtime.config.delivery)
    target = anilist_target(runtime, runtime.clock)
    before.targets = {target.name: target}
    enqueue(runtime, "play", episode(40), runtime.clock() - 60)
    await before.pass_once(runtime)
    await target.aclose()
    assert held_for_sign_in(runtime, "anilist")
    worker, stop, task = await serving(
        runtime, [anilist_target(runtime, runtime.clock)], sign_in_look=LOOK
    )
    try:
        await asyncio.sleep(LOOK * 3)  # started, and asleep until the hold or its next look
        with Store.open(tmp_path / "wb.db") as beside:  # `watchbridge auth anilist`'s own
            fresh = AniListToken.from_access_token(anilist.issue_token(), runtime.clock())
            beside.put_token(SERVICE, "me", fresh.to_dict(), runtime.clock())
            assert beside.resume_after_sign_in("anilist", "me", runtime.clock()) == 1
        await until(lambda: anilist.snapshot().get(PART_2, {}).get("progress") == 3, timeout=5)
        # The command made the play due (and said so): the service lifted nothing itself, and
        # its log does not tell of a lift of none.
        assert "signed in to AniList again" not in caplog.text
    finally:
        await stopped(worker, stop, task)


async def test_a_trakt_play_held_for_its_sign_in_goes_once_auth_trakt_runs_beside(
    tmp_path: Path, trakt: FakeTrakt
) -> None:
    # The same for Trakt: a sign-in beside the service (`watchbridge auth trakt`) counts in
    # the store as AniList's does.
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}}}}}
"""
    trakt.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    clock = FakeClock()
    runtime = build_runtime(parse_config(text, tmp_path / "watchbridge.yaml", {}), clock=clock)
    runtime.open()
    worker, stop, task = await serving(runtime, list(make_targets(runtime)), sign_in_look=LOOK)
    try:
        runtime.store.enqueue([_late_play(HEAT, clock() - 3600, "p1")], clock())
        worker.notify()
        await until(lambda: held_for_sign_in(runtime, "trakt"))  # not signed in yet
        with Store.open(tmp_path / "wb.db") as beside:  # `watchbridge auth trakt`'s own
            sign_in_trakt(beside, trakt, "me", now=clock())
            assert beside.resume_after_sign_in("trakt", "me", clock()) == 1
        await until(lambda: [h.item.title for h in trakt.history()] == ["Heat"], timeout=5)
    finally:
        await stopped(worker, stop, task)
        runtime.close()


def test_a_hold_is_lifted_only_once_its_profile_signed_in_since_its_last_try() -> None:
    held = {("anilist", "me"): "2", ("trakt", "me"): None, ("trakt", "you"): "1"}
    kept = {("anilist", "me"): "2", ("trakt", "me"): "1", ("trakt", "you"): "1"}
    assert signed_in_again(held, kept) == [("trakt", "me")]
    assert signed_in_again(held, {}) == []  # not read: nothing is known to have changed


def test_a_sign_in_lifts_its_own_holds_only(tmp_path: Path) -> None:
    # A rate limit, a Trakt lockout, an outage, a media server's missing key and the Plex
    # server's own token keep their waits; the profile's own sign-in hold (by its flag, or by
    # what its reason asks) goes.
    from watchbridge.store import HELD_PROFILE, HELD_TARGET, Settlement

    with Store.open(tmp_path / "wb.db") as store:
        rows = [NewOutboxRow("trakt", "me", "play", {}, f"k{n}", f"i{n}") for n in range(6)]
        rows.append(NewOutboxRow("plex", "you", "play", {}, "k6", "i6"))
        store.enqueue(rows, 0.0)
        claimed = store.claim("test", 0.0, 7, ["trakt", "plex"])
        auth = "not signed in: run `watchbridge auth trakt --profile me`"
        held = [
            ("refused", True, HELD_PROFILE),
            (auth, False, None),  # held by a release before the flag
            ("rate limited", False, HELD_PROFILE),
            ("account locked (423)", False, HELD_PROFILE),
            ("Trakt is down", False, HELD_TARGET),
            ("the Plex server refuses our key", True, None),
            ("the Plex server refuses services.plex.token", True, HELD_PROFILE),
        ]
        store.settle(
            0.0,
            [
                Settlement(
                    item.id,
                    "pending",
                    900.0,
                    reason,
                    False,
                    sign_in,
                    where,
                    waits_for_server="plex" if item.target == "plex" else None,
                )
                for item, (reason, sign_in, where) in zip(claimed, held, strict=True)
            ],
        )
        assert store.held_for_sign_in() == [("trakt", "me")]
        # The Plex server's own token holds no sign-in of profile you, nor does one lift it.
        assert not store.waits_for_sign_in("plex", "you")
        assert store.resume_after_sign_in("plex", "you", 10.0) == 0
        assert store.signed_in_marks([("trakt", "me")]) == {("trakt", "me"): None}
        assert store.resume_after_sign_in("trakt", "me", 10.0) == 2
        assert store.signed_in_marks([("trakt", "me")]) == {("trakt", "me"): "1"}
        store.resume_after_sign_in("trakt", "me", 11.0)
        assert store.signed_in_marks([("trakt", "me")]) == {("trakt", "me"): "2"}
        due = store._query("SELECT last_error, held FROM outbox WHERE next_attempt_at <= 10.0")
        assert sorted(r["last_error"] for r in due) == [auth, "refused"]
        assert [r["held"] for r in due] == [None, None]  # held no more (/metrics)
