"""AniList sign-in expiry alerts (the hourly maintenance check) and the rate-limit wait metric,
against the fakes over real HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.test_deliver_anilist import PART_2, anilist_target, drain, enqueue, episode
from watchbridge.alerts import SENT, Notifier
from watchbridge.app import Runtime
from watchbridge.config import AniListConfig, Secret, parse_config
from watchbridge.deliver.anilist import AUTH_HOLD
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.maintenance import ALERTED, ALERTED_TTL, check_anilist_tokens
from watchbridge.metrics import Metrics
from watchbridge.services.anilist import SERVICE, AniListClient, AniListToken
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

DAY = 86400.0
# An expired token holds the profile's AniList deliveries: the hourly check and the deliveries
# tell it as one alert, the deliveries' pause.
PAUSED = "watchbridge: AniList sign-in needed (profile me)"
# What the previous release's hourly check raised instead, under a key of its own.
OLD_TITLE = "watchbridge: the AniList sign-in of me has expired"
OLD_KEY = "anilist:me:expired"


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    return fake


def runtime_for(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver, days: float
) -> Iterator[Runtime]:
    token = anilist.issue_token(lifetime=days * DAY)
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me: {{accounts: {{anilist: {{token: "{token}"}}}}}}
""",
        tmp_path / "watchbridge.yaml",
        {},
    )
    clock = FakeClock(anilist.now())
    notifier = Notifier(config.alerts, clock=clock, timeout=2.0)
    runtime = Runtime(config=config, metrics=Metrics(), notifier=notifier, clock=clock)
    runtime.open()
    yield runtime
    runtime.close()


@pytest.fixture
def expiring(tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver) -> Iterator[Runtime]:
    yield from runtime_for(tmp_path, anilist, receiver, days=10)


async def test_a_token_two_weeks_from_expiry_raises_one_alert(
    expiring: Runtime, receiver: AlertReceiver
) -> None:
    for _ in range(3):  # three hourly checks
        await check_anilist_tokens(expiring)
        assert isinstance(expiring.clock, FakeClock)
        expiring.clock.advance(3600)
    (alert,) = receiver.messages
    assert "expires soon" in alert["title"]
    assert "watchbridge auth anilist --profile me" in alert["message"]


async def test_an_expired_token_raises_one_more_alert(
    expiring: Runtime, receiver: AlertReceiver
) -> None:
    await check_anilist_tokens(expiring)
    assert isinstance(expiring.clock, FakeClock)
    expiring.clock.advance(11 * DAY)
    await check_anilist_tokens(expiring)
    await check_anilist_tokens(expiring)
    assert ["expires soon" in t for t in receiver.titles()] == [True, False]
    assert receiver.titles()[1] == PAUSED
    said = str(receiver.messages[1]["message"])
    assert "expired on" in said and "watchbridge auth anilist --profile me" in said


async def test_signing_in_again_resolves_the_expiry_alert(
    expiring: Runtime, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    await check_anilist_tokens(expiring)
    assert isinstance(expiring.clock, FakeClock)
    expiring.clock.advance(2 * DAY)
    # `watchbridge auth anilist --profile me` stores a fresh one-year token.
    fresh = AniListToken.from_access_token(anilist.issue_token(lifetime=365 * DAY), 0)
    expiring.store.put_token(SERVICE, "me", fresh.to_dict(), expiring.clock())
    await check_anilist_tokens(expiring)
    assert receiver.titles() == [
        "watchbridge: the AniList sign-in of me expires soon",
        "Resolved: watchbridge: the AniList sign-in of me expires soon",
    ]


async def test_signing_in_after_the_token_expired_resolves_once(
    expiring: Runtime, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    await check_anilist_tokens(expiring)  # expires soon
    assert isinstance(expiring.clock, FakeClock)
    expiring.clock.advance(11 * DAY)
    await check_anilist_tokens(expiring)  # has expired
    fresh = AniListToken.from_access_token(anilist.issue_token(lifetime=365 * DAY), 0)
    expiring.store.put_token(SERVICE, "me", fresh.to_dict(), expiring.clock())
    await check_anilist_tokens(expiring)
    assert receiver.titles()[2:] == [f"Resolved: {PAUSED}"]


async def test_a_token_with_a_month_left_raises_no_alert(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    for runtime in runtime_for(tmp_path, anilist, receiver, days=30):
        assert await check_anilist_tokens(runtime) == []
    assert receiver.messages == []


async def test_time_spent_waiting_on_the_anilist_pacer_is_a_metric(
    tmp_path: Path, anilist: FakeAniList
) -> None:
    # Served: 600 a minute, above the client's own 300, so the client sets the pace (under the
    # fake's default 30 a minute the six requests would take 7 s; the waits are measured all
    # the same).
    anilist.limit = 600
    metrics = Metrics()
    store = Store.open(tmp_path / "wb.db")
    client = AniListClient(
        AniListConfig(api_url=anilist.url, auth_url=anilist.auth_url),
        store,
        seeded_tokens={"me": Secret(anilist.issue_token())},
        metrics=metrics,
        per_minute=300,  # a burst of 3, then one every 0.2 s
    )
    try:
        for _ in range(6):
            await client.viewer("me", refresh=True)
    finally:
        await client.aclose()
        store.close()
    seconds = metrics.registry.get_sample_value(
        "watchbridge_rate_limit_wait_seconds_total", {"service": "anilist"}
    )
    assert seconds is not None and seconds >= 0.2
    assert seconds == pytest.approx(client.waited, abs=0.05)


async def test_an_expiry_alert_held_back_after_a_failed_send_goes_out_at_a_later_check(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    for runtime in runtime_for(tmp_path, anilist, receiver, days=10):
        assert isinstance(runtime.clock, FakeClock)
        receiver.fail_next(1, 500)
        await check_anilist_tokens(runtime)  # the alert channel is down
        runtime.clock.advance(30)
        await check_anilist_tokens(runtime)  # held back: the channel failed moments ago
        runtime.clock.advance(3600)
        await check_anilist_tokens(runtime)
    assert ["expires soon" in title for title in receiver.titles()] == [True]


async def test_an_expiry_alert_that_went_out_late_with_another_alert_is_not_sent_again(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    for runtime in runtime_for(tmp_path, anilist, receiver, days=10):
        assert isinstance(runtime.clock, FakeClock)
        receiver.fail_next(1, 500)
        await check_anilist_tokens(runtime)  # the alert channel is down
        runtime.clock.advance(120)
        await runtime.notifier.notify("sync_failing", "link failing", "body", key="ts")
        await runtime.notifier.resent()  # the failed one goes out beside it
        for _ in range(3):  # hourly checks, past the throttle window
            runtime.clock.advance(3600)
            await check_anilist_tokens(runtime)
    assert sorted("expires soon" in title for title in receiver.titles()) == [False, True]


async def test_without_an_alert_channel_the_log_tells_of_each_expiry_stage_once(
    tmp_path: Path, anilist: FakeAniList, caplog: pytest.LogCaptureFixture
) -> None:
    # A webhook-only AniList profile (no link run to log it) and no alerts.urls: the log is
    # where the service can say that the sign-in is about to end, and that it has.
    token = anilist.issue_token(lifetime=10 * DAY)
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me: {{accounts: {{anilist: {{token: "{token}"}}}}}}
""",
        tmp_path / "watchbridge.yaml",
        {},
    )
    clock = FakeClock(anilist.now())
    notifier = Notifier(config.alerts, clock=clock, timeout=2.0)
    runtime = Runtime(config=config, metrics=Metrics(), notifier=notifier, clock=clock)
    runtime.open()
    caplog.set_level(logging.INFO, logger="watchbridge.maintenance")
    try:
        for _ in range(3):  # hourly checks
            await check_anilist_tokens(runtime)
            clock.advance(3600)
        clock.advance(11 * DAY)
        for _ in range(3):
            await check_anilist_tokens(runtime)
            clock.advance(3600)
    finally:
        runtime.close()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2
    assert "expires on" in said[0] and "expired on" in said[1]
    assert all("watchbridge auth anilist --profile me" in line for line in said)
    assert token not in caplog.text


@pytest.mark.parametrize(
    "alerts_before",
    [
        "",  # no alerts.urls
        'alerts: {{urls: ["{url}"], kinds: [dead_letter]}}\n',  # credentials not wanted
    ],
)
async def test_an_expiry_alert_not_wanted_before_goes_out_once_an_alert_channel_is_added(
    tmp_path: Path,
    anilist: FakeAniList,
    receiver: AlertReceiver,
    caplog: pytest.LogCaptureFixture,
    alerts_before: str,
) -> None:
    # The log said the sign-in expires soon (nothing to send it to); days later, still before
    # it expires, the user adds an alert channel (or `credentials` to alerts.kinds) and
    # restarts: the warning, still true, reaches them once; the log does not repeat it.
    token = anilist.issue_token(lifetime=10 * DAY)
    clock = FakeClock(anilist.now())
    caplog.set_level(logging.INFO, logger="watchbridge.maintenance")

    async def checks(alerts: str) -> None:
        config = parse_config(
            f"""
storage: {{path: {tmp_path / "wb.db"}}}
{alerts}services:
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me: {{accounts: {{anilist: {{token: "{token}"}}}}}}
""",
            tmp_path / "watchbridge.yaml",
            {},
        )
        notifier = Notifier(config.alerts, clock=clock, timeout=2.0)
        runtime = Runtime(config=config, metrics=Metrics(), notifier=notifier, clock=clock)
        runtime.open()
        try:
            for _ in range(3):  # hourly checks
                await check_anilist_tokens(runtime)
                clock.advance(3600)
        finally:
            runtime.close()

    await checks(alerts_before.format(url=receiver.apprise_url))
    assert receiver.messages == []
    clock.advance(3 * DAY)
    await checks(f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n')
    assert receiver.titles() == ["watchbridge: the AniList sign-in of me expires soon"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "expires on" in said[0]


def delivering(runtime: Runtime, anilist: FakeAniList) -> DeliveryWorker:
    """The AniList deliveries of `runtime`'s profile, against the fake."""
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(PART_2, episodes=12)
    assert isinstance(runtime.clock, FakeClock)
    target = anilist_target(runtime, runtime.clock)
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    return worker


def sign_in_again(runtime: Runtime, anilist: FakeAniList) -> None:
    """`watchbridge auth anilist --profile me`: a fresh one-year token stored."""
    fresh = AniListToken.from_access_token(anilist.issue_token(lifetime=365 * DAY), 0)
    runtime.store.put_token(SERVICE, "me", fresh.to_dict(), runtime.clock())


@pytest.mark.parametrize("check_first", [True, False])
async def test_an_expired_token_holding_a_play_is_one_alert_and_one_resolved(
    expiring: Runtime, anilist: FakeAniList, receiver: AlertReceiver, check_first: bool
) -> None:
    # The token ran out (no check saw it end soon); a play for AniList comes meanwhile. The
    # hourly check and the held delivery both meet it: one cause, one alert.
    worker = delivering(expiring, anilist)
    assert isinstance(expiring.clock, FakeClock)
    expiring.clock.advance(11 * DAY)
    if check_first:
        await check_anilist_tokens(expiring)
    enqueue(expiring, "play", episode(40), expiring.clock() - 60)
    await drain(worker, expiring, passes=2)
    await check_anilist_tokens(expiring)
    assert receiver.titles() == [PAUSED]
    assert expiring.store.outbox_counts()["pending"] == 1  # held, not lost

    sign_in_again(expiring, anilist)
    await check_anilist_tokens(expiring)  # the held play will end it: not "Resolved" yet
    expiring.clock.advance(AUTH_HOLD + 60)
    await drain(worker, expiring, passes=2)
    await check_anilist_tokens(expiring)
    assert anilist.snapshot()[PART_2]["progress"] == 3
    assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"]
    for target in worker.targets.values():
        await target.aclose()


async def test_signing_in_after_the_token_expired_with_no_play_held_resolves_once(
    expiring: Runtime, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    assert isinstance(expiring.clock, FakeClock)
    expiring.clock.advance(11 * DAY)
    await check_anilist_tokens(expiring)
    await check_anilist_tokens(expiring)
    sign_in_again(expiring, anilist)
    for _ in range(2):  # no delivery waits to end it: the check does, once
        await check_anilist_tokens(expiring)
        expiring.clock.advance(3600)
    assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"]
    assert "works again" in str(receiver.messages[1]["message"])


async def raised_by_the_previous_release(runtime: Runtime) -> None:
    """The expiry alert as the release before this one raised it: under a key of its own,
    and noted as told for this token (so this release does not tell it again)."""
    stored = runtime.store.get_token(SERVICE, "me")
    configured = runtime.config.profiles["me"].accounts.anilist
    assert configured is not None and configured.token is not None
    token = AniListToken.from_access_token(configured.token.reveal(), 0)
    assert stored is None and token.expires_at is not None
    body = "the AniList token of profile me expired on ...: run `watchbridge auth anilist`"
    said = await runtime.notifier.notify("credentials", OLD_TITLE, body, key=OLD_KEY)
    assert said == SENT
    once = f"anilist:me:{int(token.expires_at)}:expired"
    runtime.store.cache_put(ALERTED, once, SENT, runtime.clock(), ALERTED_TTL)


@pytest.mark.parametrize(
    ("play_held", "paused_before"),
    [
        (True, False),
        (False, False),
        (True, True),  # the previous release's held play had raised the second alert too
    ],
)
async def test_an_expiry_alert_of_the_previous_release_is_taken_over_and_resolves_once(
    expiring: Runtime,
    anilist: FakeAniList,
    receiver: AlertReceiver,
    play_held: bool,
    paused_before: bool,
) -> None:
    # Upgraded while the previous release's "has expired" was open: this release's check
    # and deliveries tell the same cause under the deliveries' key, so that alert is theirs
    # now, not left open for good beside a second one.
    worker = delivering(expiring, anilist)
    assert isinstance(expiring.clock, FakeClock)
    expiring.clock.advance(11 * DAY)
    await raised_by_the_previous_release(expiring)
    told = [OLD_TITLE]
    if paused_before:
        enqueue(expiring, "play", episode(40), expiring.clock() - 60)
        await drain(worker, expiring, passes=2)
        told.append(PAUSED)
    await check_anilist_tokens(expiring)
    if play_held and not paused_before:
        enqueue(expiring, "play", episode(40), expiring.clock() - 60)
        await drain(worker, expiring, passes=2)
    await check_anilist_tokens(expiring)
    assert receiver.titles() == told

    sign_in_again(expiring, anilist)
    await check_anilist_tokens(expiring)
    expiring.clock.advance(AUTH_HOLD + 60)
    await drain(worker, expiring, passes=2)
    await check_anilist_tokens(expiring)
    assert receiver.titles() == [*told, f"Resolved: {told[-1]}"]
    for key in (OLD_KEY, "anilist:me"):
        assert not expiring.notifier.raised("credentials", key)
    for target in worker.targets.values():
        await target.aclose()


async def test_a_token_anilist_refused_before_its_end_stays_told_with_no_play_waiting(
    tmp_path: Path, anilist: FakeAniList, receiver: AlertReceiver
) -> None:
    # Revoked on AniList (the app removed), months before its end: the held play's alert is
    # the same one. It lasts while that token is used, also once no play waits any more (given
    # up): the hourly check, for which the token has not expired, must not resolve it.
    for runtime in runtime_for(tmp_path, anilist, receiver, days=200):
        worker = delivering(runtime, anilist)
        anilist.expire_tokens()  # refused by AniList; its own expiry months ahead
        enqueue(runtime, "play", episode(40), runtime.clock() - 60)
        await drain(worker, runtime, passes=2)
        assert receiver.titles() == [PAUSED]
        assert runtime.store.give_up_waiting("anilist", "me", runtime.clock(), "given up") == 1
        for _ in range(2):
            await check_anilist_tokens(runtime)
            assert isinstance(runtime.clock, FakeClock)
            runtime.clock.advance(3600)
        assert receiver.titles() == [PAUSED]
        sign_in_again(runtime, anilist)  # a new token: that one lasts
        await check_anilist_tokens(runtime)
        assert receiver.titles() == [PAUSED, f"Resolved: {PAUSED}"]
        for target in worker.targets.values():
            await target.aclose()
