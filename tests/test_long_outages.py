"""A service down for days while watchbridge keeps running: Serializd answering errors for
three days, with the default delivery settings.

The worker is driven as the service's loop drives it (`serve_for`): a pass, then a sleep to
the next due row, the end of the target's hold or the idle wake, on a hand-moved clock, with
the fake Serializd over real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.test_deliver_serializd import EPISODE_LOG_ADD, REVIEWS_ADD, enqueue, episode
from watchbridge.app import Runtime
from watchbridge.config import Secret, SerializdAccount, parse_config
from watchbridge.deliver.serializd import SerializdTarget
from watchbridge.deliver.worker import IDLE_WAKE_SECONDS, DeliveryWorker
from watchbridge.http import RetryPolicy
from watchbridge.services.serializd import SerializdClient
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

EMAIL, PASSWORD, _ = ALICE
HOUR, DAY = 3600.0, 86400.0
PAUSED = "watchbridge: serializd deliveries paused"


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    fake = FakeSerializd()
    fake.seed_reference_catalogue()
    start_fake(fake)
    return fake


@pytest.fixture
async def runtime(
    tmp_path: Path, fake: FakeSerializd, receiver: AlertReceiver, clock: FakeClock
) -> AsyncIterator[Runtime]:
    config = parse_config(  # `delivery` as it comes: 12 attempts, 7 days, 30 s doubling
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  serializd: {{api_url: "{fake.url}"}}
  trakt: {{client_id: trakt-app}}
profiles:
  me: {{accounts: {{serializd: {{email: "{EMAIL}", password: "{PASSWORD}"}}, trakt: {{}}}}}}
links:
  ts: {{services: [trakt, serializd]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    yield runtime
    runtime.close()


@pytest.fixture
async def worker(runtime: Runtime, clock: FakeClock) -> AsyncIterator[DeliveryWorker]:
    services = runtime.config.services.serializd
    assert services is not None
    client = SerializdClient(
        services,
        runtime.store,
        accounts={"me": SerializdAccount(EMAIL, Secret(PASSWORD))},
        clock=clock,
        requests_per_second=1000,
    )
    client.http.retry = RetryPolicy(attempts=1)  # one request per try: counted as sent
    target = SerializdTarget(client, runtime.store, runtime.config.delivery, clock)
    worker = DeliveryWorker(lambda _: [target], runtime.config.delivery)
    worker.targets = {target.name: target}
    yield worker
    await target.aclose()


async def serve_for(
    worker: DeliveryWorker, runtime: Runtime, clock: FakeClock, fake: FakeSerializd, span: float
) -> list[int]:
    """Run the worker as the service does for `span` seconds; the requests Serializd got in
    each whole hour."""
    end, hour_ends, counted = clock() + span, clock() + HOUR, len(fake.requests)
    per_hour: list[int] = []
    while clock() < end:
        if await worker.pass_once(runtime):
            continue
        now = clock()
        held = [hold.until for hold in worker.holds.values() if hold.until > now]
        due = None if held else runtime.store.next_due(None, worker.worker_id, now)
        wake = min([*held, *([due] if due is not None else []), now + IDLE_WAKE_SECONDS])
        step = max(wake - now, 0.001)
        clock.advance(step)
        fake.advance(step)
        if clock() >= hour_ends:
            per_hour.append(len(fake.requests) - counted)
            counted, hour_ends = len(fake.requests), hour_ends + HOUR
    return per_hour


async def backlog_after_a_first_play(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, fake: FakeSerializd
) -> None:
    """Signed in by a play that went through, then five plays queued as Serializd goes down."""
    fake.advance(clock() - fake.now())  # one clock on both sides
    enqueue(runtime, "play", episode(9), clock() - 2 * HOUR)
    await worker.pass_once(runtime)
    assert len(fake.diary()) == 1
    for number in range(1, 6):
        enqueue(runtime, "play", episode(number), clock() - HOUR + number * 60)


async def test_serializd_down_for_three_days_loses_nothing_and_is_probed_modestly(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    fake: FakeSerializd,
    receiver: AlertReceiver,
) -> None:
    await backlog_after_a_first_play(runtime, worker, clock, fake)
    fake.fail_next(100_000, 502)  # its host answers 502 to everything for three days
    per_hour = await serve_for(worker, runtime, clock, fake, 3 * DAY)
    assert max(per_hour[1:]) <= 12  # a probe every 5 minutes at most, not a retry storm
    assert runtime.store.dead_letters() == []
    told = receiver.titles()
    assert set(told) == {PAUSED}
    assert len(told) <= 8  # one alert, then reminders ever further apart
    fake.clear_knobs()
    await serve_for(worker, runtime, clock, fake, HOUR)
    logged = [entry.episode_number for entry in fake.diary()]
    assert sorted(logged) == [1, 2, 3, 4, 5, 9]  # each play once
    assert receiver.titles()[len(told) :] == [f"Resolved: {PAUSED}"]


async def test_plays_that_gave_up_on_an_outage_leave_no_outage_alert_open(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    fake: FakeSerializd,
    receiver: AlertReceiver,
) -> None:
    # Its reads work, its writes fail with 502 for three days: the plays spend their tries
    # (a write it fails may be the request's own fault) and become dead letters. The outage
    # alert then holds nothing: left open, it would never get a word again (no reminder, no
    # "Resolved" until some later play gets through) and would keep standing for a
    # Serializd outage, which silences the links' own alerts of one (causes.told_elsewhere).
    await backlog_after_a_first_play(runtime, worker, clock, fake)
    for route in (f"POST {REVIEWS_ADD}", f"POST {EPISODE_LOG_ADD}"):
        fake.fail_next(100_000, 502, route=route)
    await serve_for(worker, runtime, clock, fake, 3 * DAY)
    assert len(runtime.store.dead_letters()) == 5
    assert PAUSED in receiver.titles()
    assert not runtime.notifier.raised("service_unreachable", "serializd")
    assert receiver.titles().count(f"Resolved: {PAUSED}") == 1
    assert 'watchbridge_target_held{target="serializd"} 0.0' in runtime.metrics.render().decode()


async def test_the_outage_alert_of_writes_failing_says_they_will_give_up_not_that_nothing_is_lost(
    runtime: Runtime,
    worker: DeliveryWorker,
    clock: FakeClock,
    fake: FakeSerializd,
    receiver: AlertReceiver,
) -> None:
    # Writes answered 502 spend their tries: "Nothing is lost; queued deliveries go out when
    # it is back" would be a promise the dead letters break 14 hours later.
    await backlog_after_a_first_play(runtime, worker, clock, fake)
    for route in (f"POST {REVIEWS_ADD}", f"POST {EPISODE_LOG_ADD}"):
        fake.fail_next(100_000, 502, route=route)
    await serve_for(worker, runtime, clock, fake, HOUR)
    (alert, *_) = [m["message"] for m in receiver.messages if m["title"] == PAUSED]
    assert "Nothing is lost" not in alert
    assert "dead letters after delivery.max_attempts" in alert
