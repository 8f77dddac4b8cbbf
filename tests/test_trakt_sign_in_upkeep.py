"""The hourly housekeeping keeps Trakt sign-ins fresh though no play needs them: against the
fake Trakt over real HTTP (token lifetimes, single-use refresh tokens), on a hand-moved clock."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlite_utils

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import quick_refresh_race, sign_in_trakt, until
from tests.test_delivery import drain, webhook, worker_for
from tests.test_store import outbox_before
from watchbridge.app import Runtime
from watchbridge.config import Config, parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.maintenance import Maintenance, housekeeping, refresh_trakt_sign_ins
from watchbridge.services.trakt import TraktClient
from watchbridge.wiring import build_runtime, trakt_client

pytestmark = pytest.mark.anyio

TOKEN_LIFE = 7 * 86400  # what FakeTrakt gives
HOUR = 3600.0
ENDS_SOON = "watchbridge: Trakt sign-in of profile me ends soon"
PAUSED = "watchbridge: Trakt sign-in needed (profile me)"
AUTH = "watchbridge auth trakt --profile me"


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    return fake


@pytest.fixture
async def runtime(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> AsyncIterator[Runtime]:
    """`me` signed in to Trakt (and the profile webhooks come for); `guest` has Trakt in its
    accounts but never signed in; `kid` has no Trakt at all."""
    runtime = build_runtime(service_config(tmp_path, trakt, receiver), clock=clock)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=clock())
    yield runtime
    runtime.close()


def service_config(tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver) -> Config:
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
  me: {{users: {{plex: ["1"]}}, accounts: {{trakt: {{}}, plex: {{}}}}}}
  guest: {{users: {{plex: ["2"]}}, accounts: {{trakt: {{}}}}}}
  kid: {{users: {{plex: ["3"]}}, accounts: {{plex: {{}}}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    return quick_refresh_race(config)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TraktClient]:
    """The client the service's housekeeping keeps from round to round."""
    made = trakt_client(runtime.config, runtime)
    assert made is not None
    yield made
    await made.aclose()


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[DeliveryWorker]:
    made = worker_for(runtime)
    yield made
    for target in made.targets.values():
        await target.aclose()


def refreshes(trakt: FakeTrakt) -> int:
    return trakt.count("POST", "/oauth/token")


def stored_access(runtime: Runtime) -> str:
    return str((runtime.store.get_token("trakt", "me") or {})["access_token"])


async def test_an_idle_sign_in_past_its_refresh_point_is_renewed_by_housekeeping(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    before = stored_access(runtime)
    clock.advance(0.75 * TOKEN_LIFE + 60)  # no play for five days and a quarter
    await housekeeping(runtime)
    assert refreshes(trakt) == 1
    assert [r.route for r in trakt.requests] == ["/oauth/token"]  # nothing for guest or kid
    renewed = stored_access(runtime)
    assert renewed != before and trakt._token_valid(trakt.tokens[renewed])
    for _ in range(3):  # the next hours: the new pair is fresh
        clock.advance(HOUR)
        await housekeeping(runtime)
    assert refreshes(trakt) == 1
    assert receiver.messages == []


async def test_a_fresh_sign_in_sends_nothing(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, client: TraktClient
) -> None:
    for _ in range(24):  # a day of hourly rounds, half way through the token's life
        await housekeeping(runtime, client)
        await housekeeping(runtime)  # a `watchbridge sync` from cron too
        clock.advance(HOUR)
    clock.advance(0.5 * TOKEN_LIFE)
    await housekeeping(runtime, client)
    assert trakt.requests == []


async def test_a_refused_renewal_is_told_once_with_the_command_and_not_asked_again(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    client: TraktClient,
    receiver: AlertReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trakt.refuse_refresh_tokens()  # invalid_grant: the app revoked, a pre-2026 refresh token
    clock.advance(0.8 * TOKEN_LIFE)
    with caplog.at_level(logging.WARNING, logger="watchbridge.maintenance"):
        for _ in range(5):
            await housekeeping(runtime, client)
            clock.advance(HOUR)
    assert refreshes(trakt) == 1
    assert receiver.titles() == [ENDS_SOON]
    told = str(receiver.messages[0]["message"])
    assert "profile me" in told and AUTH in told and "keeps working until" in told
    said = [r for r in caplog.records if r.name == "watchbridge.maintenance"]
    assert len(said) == 1 and AUTH in said[0].getMessage()


async def test_a_refused_renewal_is_told_once_by_each_sync_run_too(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    trakt.refuse_refresh_tokens()
    clock.advance(0.8 * TOKEN_LIFE)
    for _ in range(3):  # `watchbridge sync` from cron: a client of its own each run
        await housekeeping(runtime)
        clock.advance(HOUR)
    assert receiver.titles() == [ENDS_SOON]


async def test_after_a_refused_renewal_plays_wait_for_a_sign_in_and_are_not_dropped(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    client: TraktClient,
    worker: DeliveryWorker,
    receiver: AlertReceiver,
) -> None:
    trakt.refuse_refresh_tokens()
    clock.advance(0.8 * TOKEN_LIFE)
    await housekeeping(runtime, client)
    assert receiver.titles() == [ENDS_SOON]
    clock.advance(0.2 * TOKEN_LIFE)  # the token has run out
    await housekeeping(runtime, client)
    assert refreshes(trakt) == 1  # Trakt's no is not asked for again
    assert receiver.titles() == [ENDS_SOON, PAUSED]
    assert AUTH in str(receiver.messages[1]["message"])
    webhook(runtime, "movie_media_scrobble.json")  # the household member watches at last
    await drain(worker, runtime, clock, passes=6, step=1000)  # past each 15-minute hold
    for _ in range(3):
        await housekeeping(runtime, client)
        clock.advance(HOUR)
    assert trakt.history() == []
    assert runtime.store.outbox_counts()["pending"] == 1
    assert runtime.store.dead_letters() == []
    told = len(receiver.titles())  # the held deliveries' reminders, if any, are of the pause
    assert receiver.titles()[:2] == [ENDS_SOON, PAUSED] and set(receiver.titles()[1:]) == {PAUSED}

    sign_in_trakt(runtime.store, trakt, "me", now=clock())  # `watchbridge auth trakt`
    await housekeeping(runtime, client)
    await drain(worker, runtime, clock, passes=3, step=1000)
    assert [h.item.title for h in trakt.history()] == ["Arrival"]
    assert sorted(receiver.titles()[told:]) == [f"Resolved: {PAUSED}", f"Resolved: {ENDS_SOON}"]


async def test_a_sign_in_that_ran_out_while_nothing_ran_is_told_at_the_first_round(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    client: TraktClient,
    receiver: AlertReceiver,
) -> None:
    trakt.revoke_tokens()  # the user removed the app on Trakt, while the server was off
    clock.advance(TOKEN_LIFE + HOUR)
    await housekeeping(runtime, client)
    await housekeeping(runtime, client)
    assert refreshes(trakt) == 1
    assert receiver.titles() == [PAUSED]
    assert AUTH in str(receiver.messages[0]["message"])


async def test_a_delivery_and_housekeeping_refreshing_at_once_use_the_refresh_token_once(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    worker: DeliveryWorker,
    receiver: AlertReceiver,
) -> None:
    clock.advance(0.8 * TOKEN_LIFE)
    webhook(runtime, "movie_media_scrobble.json")
    trakt.delay_next(1, 0.5, route="POST /oauth/token")  # both ask while Trakt answers
    await asyncio.gather(refresh_trakt_sign_ins(runtime), worker.pass_once(runtime))
    assert refreshes(trakt) == 1
    assert [h.item.title for h in trakt.history()] == ["Arrival"]
    assert trakt._token_valid(trakt.tokens[stored_access(runtime)])
    assert receiver.messages == []


async def test_the_service_housekeeping_renews_an_idle_sign_in_as_it_starts(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock
) -> None:
    clock.advance(0.75 * TOKEN_LIFE + 60)
    stop = asyncio.Event()
    task = asyncio.create_task(Maintenance().run(runtime, stop))
    try:
        await until(lambda: refreshes(trakt) == 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert trakt._token_valid(trakt.tokens[stored_access(runtime)])


async def test_an_idle_profile_signed_in_again_gets_its_resolved_and_a_later_refusal_is_told(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    client: TraktClient,
    receiver: AlertReceiver,
) -> None:
    # No play comes for the profile: only the housekeeping can end the pause it told of.
    trakt.revoke_tokens()
    clock.advance(TOKEN_LIFE + HOUR)
    await housekeeping(runtime, client)
    assert receiver.titles() == [PAUSED]
    sign_in_trakt(runtime.store, trakt, "me", now=clock())  # `watchbridge auth trakt`
    for _ in range(2):
        clock.advance(HOUR)
        await housekeeping(runtime, client)
    assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"]
    # Months on, the app is removed on Trakt again, the profile still idle: told again.
    trakt.revoke_tokens()
    clock.advance(60 * 86400.0)
    await housekeeping(runtime, client)
    assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}", PAUSED]
    assert runtime.store.outbox_counts().get("pending", 0) == 0


async def test_a_pause_deliveries_hold_plays_for_is_left_to_them(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    client: TraktClient,
    worker: DeliveryWorker,
    receiver: AlertReceiver,
) -> None:
    # Trakt refuses the sign-in of a pair that is not due for renewal yet (the app removed on
    # Trakt): the play waits, and the housekeeping, whose check sends nothing for a fresh
    # pair, does not take the pause for over.
    trakt.revoke_tokens()
    webhook(runtime, "movie_media_scrobble.json")
    await drain(worker, runtime, clock, passes=2, step=60)
    assert receiver.titles() == [PAUSED]
    for _ in range(3):
        clock.advance(HOUR)
        await housekeeping(runtime, client)
    assert receiver.titles() == [PAUSED]
    assert runtime.store.outbox_counts()["pending"] == 1


async def test_a_pause_a_release_before_the_sign_in_mark_held_plays_for_stays_after_the_upgrade(
    tmp_path: Path, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    # Releases before m012 kept a play held for a sign-in with only its error, and the pause
    # they told of as an open condition. The first housekeeping after the upgrade found no row
    # marked as waiting, took the pair (fresh, but refused) for working and sent "Resolved:
    # ... the trakt sign-in of profile me works again" while the play still waited for it.
    refused = f"trakt: Trakt no longer accepts the sign-in of profile me: run `{AUTH}`"
    held = {"target": "trakt", "idempotency_key": "held", "last_error": refused}
    outbox_before(tmp_path / "wb.db", "m012_outbox_waits_for_sign_in", [held])
    told = {"sent_at": clock() - HOUR, "title": PAUSED, "open": True, "opened_at": clock() - HOUR}
    old = sqlite_utils.Database(tmp_path / "wb.db")
    old["id_cache"].insert(
        {"namespace": "alerts", "lookup": "credentials\x1ftrakt:me", "result": json.dumps(told)}
        | {"fetched_at": clock() - HOUR, "expires_at": clock() + 30 * 86400}
    )
    old.close()
    runtime = build_runtime(service_config(tmp_path, trakt, receiver), clock=clock)
    runtime.open()
    try:
        sign_in_trakt(runtime.store, trakt, "me", now=clock())  # the pair the release kept
        trakt.revoke_tokens()
        made = trakt_client(runtime.config, runtime)
        assert made is not None
        for _ in range(3):
            await housekeeping(runtime, made)
            clock.advance(HOUR)
        await made.aclose()
        assert receiver.titles() == []
        assert runtime.store.waits_for_sign_in("trakt", "me")
    finally:
        runtime.close()


# Seconds: the stop took Apprise's timeout (10 s) before its fix.
QUICK_STOP = 2.0


async def test_a_stop_cuts_short_a_housekeeping_alert_on_its_way_and_the_next_start_sends_it(
    runtime: Runtime, trakt: FakeTrakt, clock: FakeClock, receiver: AlertReceiver
) -> None:
    """The notification host hangs as the hourly housekeeping tells of a sign-in Trakt
    refused, and the service stops: the stop waits for it REPORT_GRACE, not Apprise's
    timeout, and the alert is kept for the next start, which sends it."""
    trakt.revoke_tokens()
    clock.advance(TOKEN_LIFE + HOUR)
    answering = receiver.hold_next()
    stop = asyncio.Event()
    task = asyncio.create_task(Maintenance().run(runtime, stop))
    try:
        await until(lambda: bool(receiver.messages))  # on its way, its answer held
        stopping = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        took = time.monotonic() - stopping
    finally:
        answering.set()
    assert took < QUICK_STOP, f"the stop took {took:.1f} s"
    runtime.close()  # as the stop ends: the alert cut short is written (a thread) first

    later = build_runtime(runtime.config, clock=clock)
    later.open()
    try:
        assert later.notifier.unsent("credentials", "trakt:me")
        await later.notifier.send_unsent()
    finally:
        later.close()
    assert receiver.titles() == [PAUSED, PAUSED]  # maybe twice, never lost


async def test_a_renewal_failing_through_a_long_outage_is_a_warning_then_hourly(
    runtime: Runtime,
    trakt: FakeTrakt,
    clock: FakeClock,
    worker: DeliveryWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Trakt down for three hours once the sign-in is past its refresh point, a play waiting:
    # each probe (every 5 minutes) tried the renewal again and logged a warning of it, 36
    # lines where the log's rule is a warning as it begins, then one an hour with a count.
    clock.advance(0.75 * TOKEN_LIFE + 60)
    trakt.fail_next(10**6, 503)
    webhook(runtime, "movie_media_scrobble.json")
    caplog.set_level(logging.INFO, logger="watchbridge.services.trakt")
    ends = clock() + 3 * HOUR
    while clock() < ends:
        await worker.pass_once(runtime)
        clock.advance(max(worker.holds["trakt"].until - clock(), 60.0))
    failed = [r for r in caplog.records if r.getMessage().startswith("Trakt token refresh failed")]
    assert refreshes(trakt) >= 30  # tried at each probe, as before
    assert [r.levelno for r in failed] == [logging.WARNING] * len(failed)
    assert 3 <= len(failed) <= 4  # its first time, then hourly
    assert [getattr(r, "more_since_last_line", 0) > 0 for r in failed[1:]] == [True] * (
        len(failed) - 1
    )
    trakt.clear_knobs()  # back: renewed at the next probe, and the log says so once
    await worker.pass_once(runtime)
    assert len(trakt.history()) == 1
    over = [r for r in caplog.records if r.getMessage() == "trakt token renewal works again"]
    assert len(over) == 1 and getattr(over[0], "times", 0) >= 30
