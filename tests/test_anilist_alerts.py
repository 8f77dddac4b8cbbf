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
from watchbridge.alerts import Notifier
from watchbridge.app import Runtime
from watchbridge.config import AniListConfig, Secret, parse_config
from watchbridge.maintenance import check_anilist_tokens
from watchbridge.metrics import Metrics
from watchbridge.services.anilist import SERVICE, AniListClient, AniListToken
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

DAY = 86400.0


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
    assert "has expired" in receiver.titles()[1]


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
    assert receiver.titles()[2:] == ["Resolved: watchbridge: the AniList sign-in of me has expired"]


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
