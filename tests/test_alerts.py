"""Alerts: delivered through Apprise to a real local webhook, throttled, resolved, never leaked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import ServiceProcess, free_port, write_config
from watchbridge.alerts import (
    DEFAULT_TIMEOUT,
    LEASE_MARGIN,
    RELOAD_EVERY,
    AlertBook,
    Condition,
    Notifier,
    format_span,
    sends_left_running,
)
from watchbridge.config import AlertKind, AlertsConfig, Duration, Secret
from watchbridge.store import Store

pytestmark = pytest.mark.anyio

HOUR = 3600.0
TOKEN = "s3cr3t-hook-token"
PASSWORD = "hunter2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Receiver = AlertReceiver


def notifier_for(
    *urls: str,
    clock: FakeClock | None = None,
    kinds: list[AlertKind] | None = None,
    recovery: bool = True,
    results: list[tuple[str, str]] | None = None,
    timeout: float = 2.0,
) -> Notifier:
    config = AlertsConfig(
        urls=[Secret(url) for url in urls],
        kinds=kinds or ["all"],
        throttle=Duration(HOUR),
        recovery=recovery,
    )
    on_sent = None if results is None else lambda kind, result: results.append((kind, result))
    return Notifier(config, clock=clock or FakeClock(), on_sent=on_sent, timeout=timeout)


def titles(receiver: Receiver) -> list[str]:
    return [message["title"] for message in receiver.messages]


# --------------------------------------------------------------------------- delivery


async def test_notify_delivers_title_body_and_warning_type(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url)

    result = await notifier.notify("credentials", "Trakt login rejected", "Run watchbridge auth")

    assert result == "sent"
    [message] = receiver.messages
    assert message["title"] == "Trakt login rejected"
    assert message["message"] == "Run watchbridge auth"
    assert message["type"] == "warning"


async def test_an_alert_never_carries_a_secret(receiver: Receiver) -> None:
    config = AlertsConfig(urls=[Secret(receiver.apprise_url)], throttle=Duration(HOUR))
    notifier = Notifier(config, clock=FakeClock(), timeout=2.0, secrets=["my-client-secret"])
    body = "Trakt said: invalid_client my-client-secret (GET /x?access_token=abc123)"
    await notifier.notify("credentials", "Trakt login rejected", body)
    [message] = receiver.messages
    assert "my-client-secret" not in message["message"] and "abc123" not in message["message"]
    assert message["message"].startswith("Trakt said: invalid_client ********")


async def test_on_sent_hears_every_outcome_for_metrics(receiver: Receiver) -> None:
    results: list[tuple[str, str]] = []
    notifier = notifier_for(receiver.apprise_url, kinds=["credentials"], results=results)

    await notifier.notify("credentials", "Trakt login rejected", "body")
    await notifier.notify("credentials", "Trakt login rejected", "body")
    await notifier.notify("dead_letter", "3 items parked", "body")

    assert results == [
        ("credentials", "sent"),
        ("credentials", "suppressed"),
        ("dead_letter", "disabled"),
    ]


# --------------------------------------------------------------------------- throttling


async def test_second_alert_for_same_condition_within_window_is_suppressed(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)

    first = await notifier.notify("sync_failing", "trakt<->plex failing", "body", key="main")
    clock.advance(HOUR - 1)
    second = await notifier.notify("sync_failing", "trakt<->plex failing", "body", key="main")

    assert (first, second) == ("sent", "suppressed")
    assert len(receiver.messages) == 1


async def test_alert_after_window_is_sent_and_counts_what_was_suppressed(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    await notifier.notify("sync_failing", "trakt<->plex failing", "Still failing.", key="main")
    for _ in range(3):
        clock.advance(HOUR / 4)
        await notifier.notify("sync_failing", "trakt<->plex failing", "Still failing.", key="main")

    clock.advance(HOUR / 4)
    result = await notifier.notify("sync_failing", "trakt<->plex failing", "Still failing.", "main")

    assert result == "sent"
    assert len(receiver.messages) == 2
    assert receiver.messages[1]["message"] == (
        "Still failing.\n\n(3 similar alerts suppressed in the last 1h)"
    )


async def test_different_keys_are_throttled_separately(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url)

    trakt = await notifier.notify("credentials", "Trakt login rejected", "body", key="trakt/ann")
    plex = await notifier.notify("credentials", "Plex login rejected", "body", key="plex/ann")

    assert (trakt, plex) == ("sent", "sent")
    assert titles(receiver) == ["Trakt login rejected", "Plex login rejected"]


async def test_alert_that_returns_soon_after_recovery_stays_throttled(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    await notifier.notify("service_unreachable", "Plex unreachable", "body", key="plex")
    await notifier.resolve("service_unreachable", "Plex is back", key="plex")

    clock.advance(60)
    flapped = await notifier.notify("service_unreachable", "Plex unreachable", "body", key="plex")

    assert flapped == "suppressed"
    assert titles(receiver) == ["Plex unreachable", "Resolved: Plex unreachable"]


async def test_a_condition_back_a_while_after_its_recovery_is_told_again_within_the_window(
    receiver: Receiver, clock: FakeClock
) -> None:
    # A webhook refused after a "Resolved": nothing may ever report it again, so a throttled
    # report would leave "Resolved" as the last word on a lost play.
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    await notifier.notify("webhook_rejects", "plex webhooks refused", "body", key="plex")
    clock.advance(600)
    await notifier.resolve("webhook_rejects", "plex webhooks accepted again", key="plex")
    clock.advance(1200)  # well inside the hour's throttle
    again = await notifier.notify("webhook_rejects", "plex webhooks refused", "body", key="plex")
    assert again == "sent"
    assert titles(receiver) == [
        "plex webhooks refused",
        "Resolved: plex webhooks refused",
        "plex webhooks refused",
    ]


# --------------------------------------------------------------------------- recovery


async def test_resolve_sends_recovery_after_a_raised_alert(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url)
    await notifier.notify("credentials", "Trakt login rejected", "body", key="trakt")

    result = await notifier.resolve("credentials", "Trakt accepts the login again.", key="trakt")

    assert result == "sent"
    recovery = receiver.messages[-1]
    assert recovery["title"] == "Resolved: Trakt login rejected"
    assert recovery["message"] == "Trakt accepts the login again."
    assert recovery["type"] == "success"


async def test_resolve_sends_recovery_only_once(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url)
    await notifier.notify("credentials", "Trakt login rejected", "body", key="trakt")
    await notifier.resolve("credentials", "ok", key="trakt")

    again = await notifier.resolve("credentials", "ok", key="trakt")

    assert again == "not_raised"
    assert len(receiver.messages) == 2


async def test_resolve_without_a_raised_alert_sends_nothing(receiver: Receiver) -> None:
    results: list[tuple[str, str]] = []
    notifier = notifier_for(receiver.apprise_url, results=results)
    await notifier.notify("credentials", "Trakt login rejected", "body", key="trakt")

    other_key = await notifier.resolve("credentials", "ok", key="plex")
    other_kind = await notifier.resolve("dead_letter", "ok", key="trakt")

    assert (other_key, other_kind) == ("not_raised", "not_raised")
    assert len(receiver.messages) == 1
    assert results == [("credentials", "sent")]


async def test_recovery_disabled_sends_no_recovery(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url, recovery=False)
    await notifier.notify("credentials", "Trakt login rejected", "body", key="trakt")

    result = await notifier.resolve("credentials", "ok", key="trakt")

    assert result == "disabled"
    assert titles(receiver) == ["Trakt login rejected"]


# --------------------------------------------------------------------------- what is wanted


async def test_kinds_not_listed_are_disabled(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url, kinds=["credentials", "dead_letter"])

    wanted = await notifier.notify("dead_letter", "3 items parked", "body")
    unwanted = await notifier.notify("sync_failing", "trakt<->plex failing", "body")

    assert (wanted, unwanted) == ("sent", "disabled")
    assert titles(receiver) == ["3 items parked"]


async def test_no_urls_means_disabled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="watchbridge.alerts")
    notifier = notifier_for()

    assert await notifier.notify("credentials", "Trakt login rejected", "body") == "disabled"
    assert await notifier.send_test() == "disabled"
    assert "no usable alerts.urls" in caplog.text


async def test_send_test_ignores_throttle(receiver: Receiver) -> None:
    notifier = notifier_for(receiver.apprise_url)

    results = [await notifier.send_test() for _ in range(3)]

    assert results == ["sent", "sent", "sent"]
    assert titles(receiver) == ["watchbridge test alert"] * 3
    assert receiver.messages[0]["type"] == "info"


# --------------------------------------------------------------------------- failures


def assert_no_secrets_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing of ours at any level, and nothing from anyone at warning or above."""
    for record in caplog.records:
        if record.name.startswith("watchbridge") or record.levelno >= logging.WARNING:
            text = record.getMessage()
            assert TOKEN not in text, text
            assert PASSWORD not in text, text
            assert "json://" not in text and "http://" not in text, text


async def test_receiver_error_is_failed_and_logged_without_url(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = notifier_for(receiver.apprise_url)
    receiver.fail_next(1, 500)

    result = await notifier.notify("credentials", "Trakt login rejected", "body")

    assert result == "failed"
    assert "alert credentials not delivered to alerts.urls[0] (JSON: failure)" in caplog.text
    assert_no_secrets_logged(caplog)


async def test_unreachable_receiver_is_failed_and_logged_without_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    notifier = notifier_for(f"json://alerts:{PASSWORD}@127.0.0.1:{free_port()}/hook/{TOKEN}")

    result = await notifier.notify("credentials", "Trakt login rejected", "body")

    assert result == "failed"
    assert "not delivered to alerts.urls[0]" in caplog.text
    assert_no_secrets_logged(caplog)


async def test_a_notifier_down_is_logged_once_then_hourly_then_when_it_works_again(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # During an outage of the notifier every alert tried logged its own warning: many alerts
    # (each link, profile and service that failed meanwhile) flooded the log.
    caplog.set_level(logging.DEBUG, logger="watchbridge.alerts")
    clock = FakeClock()
    notifier = notifier_for(receiver.apprise_url, clock=clock)

    def lines(level: int, text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == level and text in r.getMessage()]

    receiver.fail_next(1000, 500)  # down until it is cleared
    for number in range(5):  # each alert tried, and those owed sent again, fail
        result = await notifier.notify("service_unreachable", "down", "body", key=f"s{number}")
        assert result == "failed"
        await notifier.resent()
        clock.advance(60)
    (first,) = lines(logging.WARNING, "not delivered to alerts.urls[0]")
    assert first.getMessage() == (
        "alert service_unreachable not delivered to alerts.urls[0] (JSON: failure)"
    )
    assert len(lines(logging.DEBUG, "not delivered to alerts.urls[0]")) >= 4

    clock.advance(HOUR)
    assert await notifier.notify("credentials", "refused", "body", key="c") == "failed"
    await notifier.resent()
    first, reminder = lines(logging.WARNING, "not delivered")
    assert reminder.__dict__["more_since_last_line"] >= 4

    receiver.clear_knobs()  # the notifier works again
    assert await notifier.notify("credentials", "refused again", "body", key="d") == "sent"
    (again,) = lines(logging.INFO, "alerts delivered again")
    assert again.__dict__["times"] >= 6
    await notifier.resent()
    assert len(lines(logging.WARNING, "not delivered")) == 2
    assert_no_secrets_logged(caplog)


def test_a_failed_alert_never_logs_its_ntfy_topic(receiver: Receiver, tmp_path: Path) -> None:
    # The topic is the whole secret of an ntfy.sh URL (anyone knowing it reads the alerts); the
    # log masks the URL as configured, not the parts Apprise quotes when a send fails.
    topic = "wb-alerts-7f3c9e21d4"
    port = free_port()
    path = write_config(tmp_path, f'alerts:\n  urls: ["{receiver.ntfy_url(topic)}"]\n', port)
    service = ServiceProcess(path, port).start()
    receiver.fail_next(1, 500)
    try:
        httpx.post(f"{service.url}/webhooks/plex/wrong-secret-0123456789", content=b"{}")
        service.wait_for_output("not delivered to alerts.urls[0]")
        service.terminate()
    finally:
        output = service.output()
    assert "alert webhook_rejects not delivered to alerts.urls[0] (ntfy: failure)" in output
    assert topic not in output


async def test_an_alert_send_given_up_on_never_logs_its_ntfy_topic_when_it_ends_later(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # A slow ntfy server answers after the alert's timeout: Apprise gives the send up, and its
    # worker thread logs the failure (naming the topic) once the answer comes, after
    # `notify` has returned.
    topic = "wb-alerts-5e8a1c04b7"
    answer = threading.Event()
    receiver.refuse_next(answer.wait)
    config = AlertsConfig(urls=[Secret(receiver.ntfy_url(topic))])
    notifier = Notifier(config, clock=FakeClock(), timeout=0.3)
    caplog.set_level(logging.DEBUG)
    assert await notifier.notify("credentials", "signed out", "body") == "failed"
    assert sends_left_running()
    answer.set()
    deadline = time.monotonic() + 10
    while sends_left_running() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not sends_left_running()
    assert [r for r in caplog.records if r.name == "watchbridge.alerts"]
    assert topic not in caplog.text


async def test_one_failing_destination_fails_the_send_but_others_still_receive(
    receiver: Receiver,
) -> None:
    dead = f"json://127.0.0.1:{free_port()}/hook/x"
    notifier = notifier_for(dead, receiver.apprise_url)

    result = await notifier.notify("credentials", "Trakt login rejected", "body")

    assert result == "failed"
    assert titles(receiver) == ["Trakt login rejected"]


async def test_a_failed_alert_is_sent_again_by_its_next_report_after_a_minute(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    receiver.fail_next(1, 500)
    results = [await notifier.notify("sync_failing", "trakt<->plex failing", "body", "main")]
    for _ in range(2):
        clock.advance(30)
        results.append(
            await notifier.notify("sync_failing", "trakt<->plex failing", "body", "main")
        )

    assert results == ["failed", "suppressed", "sent"]
    assert titles(receiver) == ["trakt<->plex failing"]


async def test_a_destination_failing_for_days_is_tried_ever_further_apart_then_at_once_again(
    receiver: Receiver, clock: FakeClock
) -> None:
    # A wrong alerts.urls entry nobody fixes for months: its owed alert was sent to it every
    # minute, 1,440 requests a day (a provider may block a sender that keeps failing).
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    receiver.fail_next(100_000, 500)
    hook = "/hook/{token}"
    assert await notifier.notify("credentials", "Trakt sign-in needed", "body", "trakt") == "failed"
    day_ends = clock() + 24 * HOUR
    while clock() < day_ends:  # the service's maintenance: each owed alert as it comes due
        due_in = notifier.owed_due_in()
        assert due_in is not None
        clock.advance(max(due_in, 5.0))
        await notifier.send_unsent()
        # Reported again meanwhile (a delivery pass meets the same sign-in): no sooner either.
        await notifier.notify("credentials", "Trakt sign-in needed", "body", "trakt")
    assert 24 <= receiver.count("POST", hook) <= 36  # a minute apart at first, then hourly
    assert notifier.retry_wait == HOUR

    receiver.clear_knobs()  # fixed: a new alert goes at once, and the owed one a minute on
    assert await notifier.notify("dead_letter", "gave up", "body", "trakt") == "sent"
    assert notifier.retry_wait == 60.0
    clock.advance(60)
    await notifier.send_unsent()
    assert titles(receiver) == ["gave up", "Trakt sign-in needed"]


async def test_failed_sends_are_kept_for_the_status_page_until_one_gets_through(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    receiver.fail_next(2, 500)
    await notifier.notify("sync_failing", "trakt<->plex failing", "body", "main")
    clock.advance(60)
    await notifier.notify("sync_failing", "trakt<->plex failing", "body", "main")
    failing = notifier.health().failing
    assert failing is not None and failing.sends == 2 and failing.since == clock() - 60
    assert failing.to.startswith("alerts.urls[0]") and "hunter2" not in failing.to
    clock.advance(60)
    assert await notifier.notify("sync_failing", "trakt<->plex failing", "body", "main") == "sent"
    assert notifier.health().failing is None


async def test_a_failed_one_off_alert_goes_out_with_the_next_alert(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    receiver.fail_next(1, 500)
    await notifier.notify("dead_letter", "a trakt delivery gave up", "body", key="trakt")

    clock.advance(60)
    await notifier.notify("credentials", "Trakt login rejected", "body", key="trakt")
    await notifier.resent()  # beside it, in the background

    assert sorted(titles(receiver)) == ["Trakt login rejected", "a trakt delivery gave up"]


async def test_a_failed_recovery_is_sent_by_a_resolve_after_a_minute(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    await notifier.notify("service_unreachable", "Plex unreachable", "body", key="plex")
    receiver.fail_next(1, 500)
    results = [await notifier.resolve("service_unreachable", "Plex is back", key="plex")]
    for _ in range(2):
        clock.advance(30)
        results.append(await notifier.resolve("service_unreachable", "Plex is back", key="plex"))

    assert results == ["failed", "suppressed", "sent"]
    assert titles(receiver) == ["Plex unreachable", "Resolved: Plex unreachable"]


async def test_no_recovery_is_sent_for_an_alert_that_never_got_through(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    receiver.fail_next(1, 500)
    await notifier.notify("service_unreachable", "Plex unreachable", "body", key="plex")

    clock.advance(60)
    result = await notifier.resolve("service_unreachable", "Plex is back", key="plex")

    assert result == "not_raised"
    assert receiver.messages == []


async def test_a_failed_alert_whose_condition_cleared_is_not_sent_again(
    receiver: Receiver, clock: FakeClock
) -> None:
    notifier = notifier_for(receiver.apprise_url, clock=clock)
    receiver.fail_next(1, 500)
    await notifier.notify("service_unreachable", "Plex unreachable", "body", key="plex")
    await notifier.resolve("service_unreachable", "Plex is back", key="plex")

    clock.advance(60)
    await notifier.notify("dead_letter", "a trakt delivery gave up", "body", key="trakt")

    assert titles(receiver) == ["a trakt delivery gave up"]


# --------------------------------------------------------------------------- invalid URLs


# --------------------------------------------------------------------------- across restarts


def remembering(store: Store, clock: FakeClock, *urls: str, timeout: float = 2.0) -> Notifier:
    """A notifier (one start of the service) keeping its alerts in `store`."""
    notifier = notifier_for(*urls, clock=clock, timeout=timeout)
    notifier.remember_in(store)
    return notifier


async def test_an_alert_raised_before_a_restart_gets_its_recovery_after_it(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    before = remembering(store, clock, receiver.apprise_url)
    await before.notify("sync_failing", "link ts keeps failing", "3 runs failed", key="ts")
    after = remembering(store, clock, receiver.apprise_url)
    assert after.raised("sync_failing", "ts")
    assert await after.resolve("sync_failing", "link ts syncs again", key="ts") == "sent"
    assert titles(receiver) == ["link ts keeps failing", "Resolved: link ts keeps failing"]


async def an_alert_that_failed(receiver: Receiver, store: Store, clock: FakeClock) -> Notifier:
    """A service whose `sync_failing` alert for link ts failed to go out (the channel down)."""
    before = remembering(store, clock, receiver.apprise_url)
    receiver.fail_next(1, 500)
    await before.notify("sync_failing", "link ts keeps failing", "3 runs failed", key="ts")
    return before


async def test_an_alert_that_failed_to_go_out_is_still_sent_after_a_restart(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    before = remembering(store, clock, receiver.apprise_url)
    receiver.fail_next(1, 500)  # the channel is down a moment
    title = "watchbridge is refusing Jellyfin webhooks"
    await before.notify("webhook_rejects", title, "a wrong secret", key="jellyfin:unauthorized")
    clock.advance(60)
    after = remembering(store, clock, receiver.apprise_url)  # restarted before the retry
    clock.advance(3600)
    await after.send_unsent()  # the hourly housekeeping
    assert titles(receiver) == [title]
    assert receiver.messages[-1]["message"] == "a wrong secret"


async def test_watchbridge_status_names_the_alerts_that_did_not_get_through_until_they_do(
    receiver: Receiver, tmp_path: Path
) -> None:
    # The alert URL failing for days: the page said so, `watchbridge status` said nothing,
    # and a household that never got the alert had no other place to learn of it.
    from tests.harness import watchbridge

    config = write_config(tmp_path, f'alerts: {{urls: ["{receiver.apprise_url}"]}}\n')
    store = Store.open(tmp_path / "watchbridge.db")
    clock = FakeClock(time.time())
    try:
        notifier = remembering(store, clock, receiver.apprise_url)
        receiver.fail_next(1, 500)
        title = "watchbridge: Trakt sign-in needed (profile me)"
        await notifier.notify("credentials", title, "run `watchbridge auth trakt`", key="me")
        shown = watchbridge("status", "--config", str(config)).stdout
        (line,) = [line for line in shown.splitlines() if line.startswith("alerts:")]
        assert line.startswith("alerts:        1 not sent yet: alerts.urls did not take them")
        assert line.endswith(f": {title}") and "watchbridge test-alert" in line
        assert PASSWORD not in shown and TOKEN not in shown

        clock.advance(120)
        await notifier.send_unsent()  # the destination works again
        assert titles(receiver) == [title]
        shown = watchbridge("status", "--config", str(config)).stdout
        assert "alerts:" not in shown
    finally:
        store.close()


async def test_an_owed_alert_of_a_kind_switched_off_before_a_restart_is_not_sent(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    await an_alert_that_failed(receiver, store, clock)
    after = notifier_for(receiver.apprise_url, clock=clock, kinds=["dead_letter"])
    after.remember_in(store)
    clock.advance(3600)
    await after.send_unsent()
    assert titles(receiver) == []


async def test_an_owed_alert_of_a_condition_over_before_a_restart_is_not_sent(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    before = await an_alert_that_failed(receiver, store, clock)
    await before.resolve("sync_failing", "link ts syncs again", key="ts")
    after = remembering(store, clock, receiver.apprise_url)
    clock.advance(3600)
    await after.send_unsent()
    assert titles(receiver) == []


async def test_a_condition_going_on_across_a_restart_stays_throttled(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    before = remembering(store, clock, receiver.apprise_url)
    await before.notify("credentials", "sign in again", "refused", key="trakt:me")
    clock.advance(600)
    after = remembering(store, clock, receiver.apprise_url)
    assert await after.notify("credentials", "sign in again", "refused", key="trakt:me") == (
        "suppressed"
    )
    assert titles(receiver) == ["sign in again"]


async def test_a_recovery_sent_before_a_restart_is_not_sent_again(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    before = remembering(store, clock, receiver.apprise_url)
    await before.notify("sync_failing", "link ts keeps failing", "3 runs failed", key="ts")
    await before.resolve("sync_failing", "link ts syncs again", key="ts")
    after = remembering(store, clock, receiver.apprise_url)
    assert await after.resolve("sync_failing", "link ts syncs again", key="ts") == "not_raised"


async def test_alerts_switched_off_before_a_restart_owe_no_recovery(
    receiver: Receiver, store: Store
) -> None:
    clock = FakeClock()
    before = remembering(store, clock, receiver.apprise_url)
    await before.notify("sync_failing", "link ts keeps failing", "3 runs failed", key="ts")
    after = remembering(store, clock)  # alerts.urls emptied
    assert not after.raised("sync_failing", "ts")
    assert await after.resolve("sync_failing", "link ts syncs again", key="ts") == "not_raised"


# --------------------------------------------------------------------------- across processes
# Each Store is one process's connection (the service, a `watchbridge sync` run) to one file.


def both(store: Store, other: Store, clock: FakeClock, *urls: str) -> tuple[Notifier, Notifier]:
    """The service's notifier and a `watchbridge sync` run's, each on its own connection."""
    return remembering(store, clock, *urls), remembering(other, clock, *urls)


@pytest.fixture
def other(store: Store) -> Iterator[Store]:
    """A second connection to the database of `store`, as another process has."""
    assert store.path is not None
    db = Store.open(store.path)
    yield db
    db.close()


async def test_a_condition_another_process_alerted_within_the_throttle_is_not_sent_again(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service, run = both(store, other, clock, receiver.apprise_url)
    await run.notify("sync_failing", "link ts holds removals", "1 of 2 plays", key="ts:removals")
    clock.advance(600)
    again = await service.notify("sync_failing", "link ts holds removals", "1 of 2", "ts:removals")
    assert again == "suppressed"
    assert titles(receiver) == ["link ts holds removals"]


async def test_two_processes_reporting_a_condition_at_once_send_one_alert(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    notifiers = [remembering(db, clock, receiver.apprise_url) for db in (store, other)]
    results = await asyncio.gather(
        *(n.notify("account_limit", "Trakt limit", "body", key="trakt:me") for n in notifiers)
    )
    assert sorted(results) == ["sent", "suppressed"]
    assert titles(receiver) == ["Trakt limit"]


async def test_the_next_alert_counts_what_another_process_held_back(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service, run = both(store, other, clock, receiver.apprise_url)
    await service.notify("sync_failing", "link ts failing", "Still failing.", key="ts")
    clock.advance(HOUR / 2)
    await run.notify("sync_failing", "link ts failing", "Still failing.", key="ts")
    clock.advance(HOUR / 2)
    assert await service.notify("sync_failing", "link ts failing", "Still failing.", "ts") == "sent"
    assert receiver.messages[-1]["message"] == (
        "Still failing.\n\n(1 similar alert suppressed in the last 1h)"
    )


async def test_reports_a_process_knows_to_be_throttled_write_nothing_but_are_counted(
    receiver: Receiver, store: Store, clock: FakeClock
) -> None:
    # A condition may be reported for every webhook refused: a flood must not write each.
    service = remembering(store, clock, receiver.apprise_url)
    await service.notify("webhook_rejects", "refusing plex webhooks", "Wrong secret.", "plex")
    stored = store.cache_get("alerts", "webhook_rejects\x1fplex", clock())
    for _ in range(50):
        await service.notify("webhook_rejects", "refusing plex webhooks", "Wrong secret.", "plex")
    assert store.cache_get("alerts", "webhook_rejects\x1fplex", clock()) == stored
    clock.advance(HOUR)
    await service.notify("webhook_rejects", "refusing plex webhooks", "Wrong secret.", "plex")
    assert receiver.messages[-1]["message"] == (
        "Wrong secret.\n\n(50 similar alerts suppressed in the last 1h)"
    )


async def test_an_alert_one_process_raised_is_resolved_by_another_once(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service, run = both(store, other, clock, receiver.apprise_url)  # running before the run starts
    await run.notify("sync_failing", "link ts holds removals", "1 of 2 plays", key="ts:removals")
    clock.advance(RELOAD_EVERY)
    resolved = await service.resolve("sync_failing", "no removals held", key="ts:removals")
    assert resolved == "sent"
    assert await run.resolve("sync_failing", "no removals held", key="ts:removals") == (
        "not_raised"
    )
    assert titles(receiver) == ["link ts holds removals", "Resolved: link ts holds removals"]


async def test_raised_sees_another_processes_alert_once_its_snapshot_is_reloaded(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service, run = both(store, other, clock, receiver.apprise_url)
    await run.notify("account_limit", "Trakt limit", "body", key="trakt:me")
    assert not service.raised("account_limit", "trakt:me")  # younger than the bound
    clock.advance(RELOAD_EVERY)
    for _ in range(200):  # the first call past the bound starts a reload in the background
        if service.raised("account_limit", "trakt:me"):
            break
        await asyncio.sleep(0.01)
    assert service.raised("account_limit", "trakt:me")


async def test_two_processes_resolving_the_same_alert_send_one_recovery(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service = remembering(store, clock, receiver.apprise_url)
    await service.notify("credentials", "Serializd paused", "body", key="serializd:me")
    run = remembering(other, clock, receiver.apprise_url)
    results = await asyncio.gather(
        service.resolve("credentials", "flowing again", key="serializd:me"),
        run.resolve("credentials", "flowing again", key="serializd:me"),
    )
    assert sorted(results) == ["not_raised", "sent"]
    assert titles(receiver) == ["Serializd paused", "Resolved: Serializd paused"]


async def test_an_alert_one_process_resolved_is_not_brought_back_by_another(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service = remembering(store, clock, receiver.apprise_url)
    await service.notify("sync_failing", "link ts keeps failing", "3 runs failed", key="ts")
    run = remembering(other, clock, receiver.apprise_url)
    await run.resolve("sync_failing", "link ts syncs again", key="ts")
    await service.notify("dead_letter", "a trakt delivery gave up", "body", key="trakt")
    restarted = remembering(store, clock, receiver.apprise_url)
    assert not restarted.raised("sync_failing", "ts")
    assert await restarted.resolve("sync_failing", "link ts syncs again", key="ts") == (
        "not_raised"
    )
    assert titles(receiver) == [
        "link ts keeps failing",
        "Resolved: link ts keeps failing",
        "a trakt delivery gave up",
    ]


async def test_an_alert_that_failed_in_one_process_is_sent_by_another_after_the_back_off(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service, run = both(store, other, clock, receiver.apprise_url)
    receiver.fail_next(1, 500)
    results = [await run.notify("account_limit", "Trakt limit", "body", key="trakt:me")]
    for _ in range(2):
        results.append(await service.notify("account_limit", "Trakt limit", "body", "trakt:me"))
        clock.advance(RELOAD_EVERY)
    assert results == ["failed", "suppressed", "sent"]
    assert titles(receiver) == ["Trakt limit"]


async def test_a_recovery_that_failed_in_one_process_waits_out_the_back_off_in_every_process(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    service = remembering(store, clock, receiver.apprise_url)
    await service.notify("service_unreachable", "Plex unreachable", "body", key="plex")
    run = remembering(other, clock, receiver.apprise_url)
    receiver.fail_next(1, 500)
    results = [await service.resolve("service_unreachable", "Plex is back", key="plex")]
    for _ in range(2):
        results.append(await run.resolve("service_unreachable", "Plex is back", key="plex"))
        clock.advance(RELOAD_EVERY)
    results.append(await service.resolve("service_unreachable", "Plex is back", key="plex"))
    assert results == ["failed", "suppressed", "sent", "not_raised"]
    assert titles(receiver) == ["Plex unreachable", "Resolved: Plex unreachable"]


async def test_open_alerts_the_previous_version_kept_are_owed_once_after_an_upgrade(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    earlier = clock() - 300  # the previous version kept every alert in one value:
    kept = [
        {"kind": "sync_failing", "key": "ts", "title": "link ts keeps failing",
         "sent_at": earlier, "open": True},
        {"kind": "credentials", "key": "trakt:me", "title": "sign in again",
         "sent_at": earlier, "open": False},
    ]  # fmt: skip
    store.cache_put("alerts", "reached", kept, clock(), 400 * 86400.0)
    service, run = both(store, other, clock, receiver.apprise_url)
    assert service.raised("sync_failing", "ts") and run.raised("sync_failing", "ts")
    assert await run.resolve("sync_failing", "link ts syncs again", key="ts") == "sent"
    assert await service.resolve("sync_failing", "link ts syncs again", key="ts") == "not_raised"
    assert await service.notify("credentials", "sign in again", "body", "trakt:me") == (
        "suppressed"
    )
    assert titles(receiver) == ["Resolved: link ts keeps failing"]
    assert store.cache_get("alerts", "reached", clock()) == (False, None)


async def test_alerts_still_go_out_when_the_store_fails(
    receiver: Receiver, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert store.path is not None
    broken = Store.open(store.path)
    notifier = remembering(broken, clock, receiver.apprise_url)
    broken.close()  # every read and write of the conditions fails from here on
    assert await notifier.notify("credentials", "Trakt login rejected", "body", "trakt") == "sent"
    assert await notifier.resolve("credentials", "ok", key="trakt") == "sent"
    assert titles(receiver) == ["Trakt login rejected", "Resolved: Trakt login rejected"]
    assert "alerts could not be remembered: ProgrammingError" in caplog.text


@contextlib.contextmanager
def disk_full(store: Store) -> Iterator[None]:
    """The disk holding `store` full for every write of the alerts' conditions (SQLite's own
    limit on its connection: a real "database or disk is full"), and with room again after."""
    conn = store._conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (room,) = conn.execute("PRAGMA max_page_count").fetchone()
    conn.execute("CREATE TABLE ballast (filler BLOB)")
    for when in ("INSERT", "UPDATE", "DELETE"):
        conn.execute(
            f"CREATE TRIGGER fills_on_{when.lower()} BEFORE {when} ON id_cache"
            " BEGIN INSERT INTO ballast VALUES (zeroblob(1048576)); END"
        )
    conn.execute(f"PRAGMA max_page_count = {pages + 64}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA max_page_count = {room}")
        for when in ("insert", "update", "delete"):
            conn.execute(f"DROP TRIGGER fills_on_{when}")
        conn.execute("DROP TABLE ballast")


async def test_a_full_disk_is_logged_once_in_the_storage_alerts_words_not_at_every_alert(
    receiver: Receiver, store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = remembering(store, clock, receiver.apprise_url)
    caplog.set_level(logging.INFO, logger="watchbridge.alerts")

    def unremembered() -> list[str]:
        return [r.getMessage() for r in caplog.records if "could not be remembered" in r.msg]

    with disk_full(store):
        for n in range(6):  # a burst: each alert meets the full disk
            assert await notifier.notify("unreachable", f"trakt down {n}", "b", f"t{n}") == "sent"
    assert unremembered() == [
        "alerts could not be remembered: watchbridge cannot write its database: the disk is "
        "full; each alert's state is kept in memory until a write works again"
    ]
    assert "OperationalError" not in caplog.text
    await notifier.resolve("unreachable", "trakt is back", key="t0")  # written: room again
    assert "alerts are remembered again" in caplog.text
    caplog.clear()
    with disk_full(store):  # the disk full again later: a fault of its own, told again
        await notifier.notify("unreachable", "serializd down", "b", "s")
        await notifier.notify("unreachable", "anilist down", "b", "a")
    assert len(unremembered()) == 1
    assert len(titles(receiver)) == 9


# --------------------------------------------------------------------------- interrupted sends


# A send the test cancels itself: its timeout must not run out first on a loaded machine.
UNHURRIED = 10.0


async def cancelled_while_sending(receiver: Receiver, call: Coroutine[Any, Any, str]) -> None:
    """Run `call` (a notify/resolve) and cancel it while Apprise waits for the receiver's
    answer, as a service shutdown or Ctrl-C in `watchbridge sync` does."""
    receiver.delay_next(1, 3600)
    asked = len(receiver.requests)
    task = asyncio.ensure_future(call)
    while len(receiver.requests) == asked:
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_an_alert_cancelled_while_sending_is_sent_again_right_after_a_restart(
    receiver: Receiver, store: Store, clock: FakeClock
) -> None:
    service = remembering(store, clock, receiver.apprise_url, timeout=UNHURRIED)
    await cancelled_while_sending(
        receiver, service.notify("sync_failing", "link ts keeps failing", "body", key="ts")
    )
    clock.advance(1)  # not a failed send: no back-off, and no lease left to run out
    restarted = remembering(store, clock, receiver.apprise_url)
    assert await restarted.notify("sync_failing", "link ts keeps failing", "body", "ts") == "sent"
    assert titles(receiver) == ["link ts keeps failing"] * 2  # maybe twice, never lost


async def test_a_recovery_cancelled_while_sending_is_still_owed_after_a_restart(
    receiver: Receiver, store: Store, clock: FakeClock
) -> None:
    service = remembering(store, clock, receiver.apprise_url, timeout=UNHURRIED)
    await service.notify("credentials", "Trakt login rejected", "body", key="trakt")
    await cancelled_while_sending(
        receiver, service.resolve("credentials", "flowing again", key="trakt")
    )
    restarted = remembering(store, clock, receiver.apprise_url)
    assert restarted.raised("credentials", "trakt")
    assert await restarted.resolve("credentials", "flowing again", key="trakt") == "sent"


async def test_an_alert_whose_process_died_while_sending_is_sent_after_the_back_off(
    receiver: Receiver, store: Store, other: Store, clock: FakeClock
) -> None:
    dead = remembering(store, clock, receiver.apprise_url)
    book = dead._book
    await dead._conditions.update(  # the send was decided, then the process was killed
        "sync_failing", "ts", clock(), lambda c: book.report(c, "link ts failing", clock())
    )
    run = remembering(other, clock, receiver.apprise_url)
    results = [await run.notify("sync_failing", "link ts failing", "body", "ts")]
    clock.advance(2.0 + 30 + 60)  # its lease, then the back-off of a failed send
    results.append(await run.notify("sync_failing", "link ts failing", "body", "ts"))
    assert results == ["suppressed", "sent"]
    assert titles(receiver) == ["link ts failing"]


# --------------------------------------------------------------------------- a locked database


class WriteLock:
    """Another process holding the database's write lock (a long transaction), against a
    notifier whose connection waits for it only briefly (its busy_timeout runs out)."""

    def __init__(self, store: Store) -> None:
        assert store.path is not None
        self.impatient = Store.open(store.path, busy_timeout=0.1)
        self._holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)

    def take(self) -> None:
        self._holder.execute("BEGIN IMMEDIATE")

    def give_back(self) -> None:
        self._holder.execute("COMMIT")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.take()
        try:
            yield
        finally:
            self.give_back()


@pytest.fixture
def lock(store: Store) -> Iterator[WriteLock]:
    lock = WriteLock(store)
    yield lock
    lock.impatient.close()


async def test_a_recovery_sent_while_the_database_was_locked_is_not_sent_again(
    receiver: Receiver, lock: WriteLock, clock: FakeClock
) -> None:
    service = remembering(lock.impatient, clock, receiver.apprise_url)
    await service.notify("credentials", "Trakt login rejected", "body", key="trakt")
    with lock.held():
        assert await service.resolve("credentials", "flowing again", key="trakt") == "sent"
    clock.advance(RELOAD_EVERY)
    assert await service.resolve("credentials", "flowing again", key="trakt") == "not_raised"
    assert not service.raised("credentials", "trakt")
    assert titles(receiver) == ["Trakt login rejected", "Resolved: Trakt login rejected"]


async def test_an_alert_sent_while_the_database_was_locked_still_throttles(
    receiver: Receiver, lock: WriteLock, clock: FakeClock
) -> None:
    service = remembering(lock.impatient, clock, receiver.apprise_url)
    await service.notify("sync_failing", "link ts keeps failing", "body", key="ts")
    clock.advance(HOUR + 1)  # the window ran out; the condition goes on
    with lock.held():
        assert await service.notify("sync_failing", "link ts keeps failing", "body", "ts") == (
            "sent"
        )
    clock.advance(RELOAD_EVERY)  # well within the new window
    assert await service.notify("sync_failing", "link ts keeps failing", "body", "ts") == (
        "suppressed"
    )
    assert titles(receiver) == ["link ts keeps failing"] * 2


async def test_an_alert_cancelled_while_another_process_holds_the_database_does_not_hold_the_loop(
    receiver: Receiver, store: Store, clock: FakeClock
) -> None:
    """A stop cuts an alert short while a `watchbridge sync` holds the database: the alert
    owed is written without the event loop waiting for the database (up to its
    busy_timeout: webhooks go unanswered meanwhile), and it is in the store once the
    notifier lets it go, for the next start to send."""
    assert store.path is not None
    patient = Store.open(store.path, busy_timeout=2.0)
    holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    try:
        service = remembering(patient, clock, receiver.apprise_url, timeout=UNHURRIED)
        holder.execute("BEGIN IMMEDIATE")
        gaps: list[float] = []

        async def tick() -> None:
            while True:
                began = time.monotonic()
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - began)

        ticker = asyncio.create_task(tick())
        try:
            await cancelled_while_sending(
                receiver, service.notify("sync_failing", "link ts keeps failing", "body", "ts")
            )
            await asyncio.sleep(0.3)
        finally:
            ticker.cancel()
            holder.execute("COMMIT")
        assert max(gaps) < 1.0, f"the event loop was held {max(gaps):.1f} s"
        service.forget_store()  # as the runtime closes: the write under way ends first
    finally:
        holder.close()
        patient.close()
    restarted = remembering(store, clock, receiver.apprise_url)
    assert restarted.unsent("sync_failing", "ts")
    await restarted.send_unsent()
    assert titles(receiver) == ["link ts keeps failing"] * 2  # maybe twice, never lost


async def test_an_alert_a_killed_sync_was_sending_goes_out_once_its_lease_has_lapsed(
    receiver: Receiver, store: Store, clock: FakeClock
) -> None:
    """A `watchbridge sync` from cron is sending an alert when it is killed, and the service
    starts. The service cannot tell that sync from one still sending (its own previous run's
    sends it takes back at once: test_downtime), so it waits for the send's lease (Apprise's
    timeout and a margin), then the back-off, and sends it: maybe twice, never lost."""
    sync = remembering(store, clock, receiver.apprise_url)
    answer = receiver.hold_next()
    sending = asyncio.ensure_future(
        sync.notify("sync_failing", "link ts keeps failing", "3 runs failed", "ts")
    )
    try:
        while not receiver.messages:  # on its way, its answer held: as if its sync were killed
            await asyncio.sleep(0.01)
        service = notifier_for(receiver.apprise_url, clock=clock)
        service.remember_in(store, service=True)
        assert service.unsent("sync_failing", "ts")
        await service.send_unsent()
        assert titles(receiver) == ["link ts keeps failing"]  # its sync may be sending still
        clock.advance(2.0 + LEASE_MARGIN + service.retry_wait)
        await service.send_unsent()
        assert titles(receiver) == ["link ts keeps failing"] * 2
        assert [m["message"] for m in receiver.messages] == ["3 runs failed"] * 2
    finally:
        answer.set()
        await sending


# A `watchbridge sync` from cron sending an alert: its clock set back by its first argument,
# as if its send had begun that long ago (the lease of a send runs Apprise's timeout and a
# margin: a test must not wait it out).
A_SYNC_SENDING = """
import asyncio
import sys
import time
from pathlib import Path
from watchbridge.alerts import Notifier
from watchbridge.config import load_config
from watchbridge.store import Store
config = load_config(Path(sys.argv[1]))
notifier = Notifier(config.alerts, clock=lambda: time.time() - float(sys.argv[2]))
notifier.remember_in(Store.open(config.storage.path))
asyncio.run(notifier.notify("service_unreachable", "Serializd unreachable", "15m", "serializd"))
"""


def test_the_service_sends_an_alert_a_killed_sync_was_sending_as_soon_as_it_is_due(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The sync is killed mid-send; the service, started meanwhile, sends the alert once the
    send's lease and the back-off are over: not at the next hourly housekeeping (as before:
    nothing else sent it in a setup where no other alert comes along)."""
    port = free_port()
    config = write_config(
        tmp_path,
        f"alerts: {{urls: ['{receiver.apprise_url}'], throttle: 2s}}\n"
        "services: {serializd: {}}\n",
        port,
    )
    on_its_way, let_go = threading.Event(), threading.Event()
    receiver.refuse_next(lambda: (on_its_way.set(), let_go.wait(30)))
    sync = subprocess.Popen(
        [sys.executable, "-c", A_SYNC_SENDING, str(config), str(DEFAULT_TIMEOUT + LEASE_MARGIN - 2)]
    )
    try:
        assert on_its_way.wait(30), "the sync sent nothing"
        sync.kill()  # mid-send: its lease ends in 2 s
        sync.wait()
    finally:
        let_go.set()  # its refusal goes to no one
    service = ServiceProcess(config, port).start()  # before the lease ends: not due yet
    try:
        deadline = time.monotonic() + 15  # 2 s of lease, 2 s of back-off, and a busy machine
        while not receiver.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        service.terminate()
    assert titles(receiver) == ["Serializd unreachable"], service.output()
    assert receiver.messages[0]["message"] == "15m"


async def test_a_failed_alert_whose_take_back_hit_a_locked_database_is_retried(
    receiver: Receiver, lock: WriteLock, clock: FakeClock
) -> None:
    service = remembering(lock.impatient, clock, receiver.apprise_url)
    receiver.refuse_next(meanwhile=lock.take)  # locked while the alert is on its way
    assert await service.notify("account_limit", "Trakt limit", "body", key="trakt:me") == (
        "failed"
    )
    lock.give_back()
    clock.advance(RELOAD_EVERY)  # the back-off is over
    assert await service.notify("account_limit", "Trakt limit", "body", "trakt:me") == "sent"
    assert titles(receiver) == ["Trakt limit"]


async def test_a_recovery_that_failed_while_the_database_was_locked_is_still_sent(
    receiver: Receiver, lock: WriteLock, clock: FakeClock
) -> None:
    service = remembering(lock.impatient, clock, receiver.apprise_url)
    await service.notify("credentials", "Trakt login rejected", "body", key="trakt")
    receiver.refuse_next(meanwhile=lock.take)
    assert await service.resolve("credentials", "flowing again", key="trakt") == "failed"
    lock.give_back()
    clock.advance(RELOAD_EVERY)
    assert await service.resolve("credentials", "flowing again", key="trakt") == "sent"
    assert titles(receiver) == ["Trakt login rejected", "Resolved: Trakt login rejected"]


def test_invalid_urls_are_reported_by_index_without_their_text(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = [f"discord://{TOKEN}", f"nosuchservice://{TOKEN}", TOKEN, ""]

    notifier = notifier_for(receiver.apprise_url, *bad)

    assert [problem.split(":")[0] for problem in notifier.invalid_urls] == [
        "alerts.urls[1]",
        "alerts.urls[2]",
        "alerts.urls[3]",
        "alerts.urls[4]",
    ]
    assert "not a valid discord:// URL" in notifier.invalid_urls[0]
    assert "unknown Apprise service nosuchservice://" in notifier.invalid_urls[1]
    assert all(TOKEN not in problem for problem in notifier.invalid_urls)
    assert TOKEN not in caplog.text
    assert notifier.enabled


def test_all_urls_valid_means_no_problems(receiver: Receiver) -> None:
    assert notifier_for(receiver.apprise_url, "ntfys://ntfy.example/topic").invalid_urls == []


# --------------------------------------------------------------------------- pure parts


def test_book_sends_first_report_then_suppresses_until_the_window_passes() -> None:
    book = AlertBook(window=60)
    condition: Condition | None

    condition, first = book.report(None, "k", now=0)
    condition = book.sent(condition, first, now=0)
    condition, held = book.report(condition, "k", now=59)
    _, later = book.report(condition, "k", now=60)

    assert first.send and not held.send
    assert later.send and later.suppressed == 1 and later.since == 60


def reminders(
    book: AlertBook, hours: int, since: Condition | None = None, kind: str = "service_unreachable"
) -> list[float]:
    """When a condition of `kind` reported every ten minutes for `hours` is told (hours from
    0)."""
    condition, told = since, []
    for minute in range(0, hours * 60, 10):
        now = minute * 60.0
        condition, verdict = book.report(condition, "down", now, kind=kind)
        if verdict.send:
            condition = book.sent(condition, verdict, now)
            told.append(now / 3600)
    return told


def test_book_tells_a_condition_going_on_again_after_ever_longer_gaps_at_most_a_day() -> None:
    # A weekend's outage: a handful of reminders, not one an hour.
    assert reminders(AlertBook(window=3600), 72) == [0, 1, 2, 4, 8, 16, 32, 56]


def test_book_tells_a_condition_going_on_for_weeks_about_once_a_week() -> None:
    # A server switched off for good and left in the config: daily reminders would be 28
    # messages in four weeks about the same thing; after three days they keep growing.
    told = reminders(AlertBook(window=3600), 28 * 24)
    assert told == [0, 1, 2, 4, 8, 16, 32, 56, 80, 160, 320, 488, 656]
    stopped = reminders(AlertBook(window=3600), 28 * 24, kind="webhooks_stopped")
    assert stopped == told


@pytest.mark.parametrize("kind", ["credentials", "storage", "account_limit", "webhook_rejects"])
def test_book_tells_a_lost_sign_in_or_a_full_disk_going_on_for_weeks_daily(kind: str) -> None:
    # Only the user ends these (a Trakt refresh refused, a Jellyfin key revoked: its catch-up
    # reaches back a week; a disk full refuses webhooks): a week between reminders is a week
    # of plays not synced, or lost, after the first three days' reminders went unseen.
    told = reminders(AlertBook(window=3600), 28 * 24, kind=kind)
    assert told[:9] == [0, 1, 2, 4, 8, 16, 32, 56, 80]
    assert [b - a for a, b in pairwise(told[8:])] == [24] * 24


def test_book_starts_the_gaps_over_once_the_condition_recovered() -> None:
    book = AlertBook(window=3600)
    condition: Condition | None
    condition, alert = book.report(None, "down", now=0)
    condition = book.sent(condition, alert, now=0)
    for now in (3600.0, 7200.0):  # reminded at 1h and 2h, the next one due at 4h
        condition, reminder = book.report(condition, "down", now)
        condition = book.sent(condition, reminder, now)
    condition, recovery = book.clear(condition, now=7300)
    condition = book.sent(condition, recovery, now=7300)
    condition, again = book.report(condition, "down", now=7300 + 600)
    condition = book.sent(condition, again, now=7900)
    _, reminder = book.report(condition, "down", now=7900 + 3600)  # a new spell: 1h gaps
    assert again.send and reminder.send


def test_book_takes_times_ahead_of_the_clock_as_now_when_it_was_set_back() -> None:
    book = AlertBook(window=3600)
    condition: Condition | None
    condition, alert = book.report(None, "k", now=7200)  # a clock two hours fast
    condition = book.sent(condition, alert, now=7200)
    condition, recovery = book.clear(condition, now=7300)
    condition = book.sent(condition, recovery, now=7300)
    condition, held = book.report(condition, "k", now=100)  # set right; it comes back
    _, later = book.report(condition, "k", now=100 + 600)

    assert not held.send and later.send  # after the flap guard, not the clock's step


def test_book_owes_a_recovery_only_for_an_alert_still_open() -> None:
    book = AlertBook(window=60)
    condition: Condition | None
    condition, verdict = book.report(None, "k", now=0)
    condition = book.sent(condition, verdict, now=0)

    condition, first = book.clear(condition, now=0)
    condition = book.sent(condition, first, now=0)
    _, again = book.clear(condition, now=0)

    assert first.send and not again.send
    assert not book.clear(None, now=0)[1].send


def test_book_counts_a_send_whose_lease_ran_out_as_failed() -> None:
    book = AlertBook(window=3600, lease=40)
    condition, _ = book.report(None, "k", now=0)  # its process died while sending

    _, during_back_off = book.report(condition, "k", now=99)
    _, after = book.report(condition, "k", now=100)

    assert not during_back_off.send and after.send


def test_book_owes_a_recovery_whose_lease_ran_out() -> None:
    book = AlertBook(window=3600, lease=40)
    condition: Condition | None
    condition, verdict = book.report(None, "k", now=0)
    condition = book.sent(condition, verdict, now=0)
    condition, _ = book.clear(condition, now=0)  # its process died while sending

    assert not book.owes_recovery(condition, now=99)
    assert book.owes_recovery(condition, now=100)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (90, "1m 30s"), (3600, "1h"), (3612, "1h"), (90000, "1d 1h")],
)
def test_spans_read_as_at_most_two_units(seconds: float, text: str) -> None:
    assert format_span(seconds) == text


@pytest.fixture
def hanging_host() -> Iterator[int]:
    """A notification host that takes connections and never answers (a firewall that drops,
    a switched-off box behind a proxy): its port."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def test_failed_alerts_sent_again_to_a_hanging_host_do_not_hold_up_the_caller(
    hanging_host: int,
) -> None:
    # The delivery worker reports and resolves between batches: waiting out each owed
    # alert's timeout there held every play back by seconds, once a minute.
    clock = FakeClock()
    config = AlertsConfig(urls=[Secret(f"json://127.0.0.1:{hanging_host}/hook")])
    notifier = Notifier(config, clock=clock, timeout=0.5)
    for key in ("plex:unauthorized", "jellyfin:unauthorized"):
        await notifier.notify("webhook_rejects", "refusing webhooks", "body", key=key)
    assert notifier.unsent("webhook_rejects", "plex:unauthorized")
    clock.advance(HOUR)  # both due to be sent again
    started = time.monotonic()
    await notifier.resolve("credentials", "flowing again", key="trakt:me")
    assert time.monotonic() - started < 0.3
    await notifier.resent()  # tried again meanwhile, in the background: still owed
    assert notifier.unsent("webhook_rejects", "plex:unauthorized")
