"""What /metrics says of held deliveries (a target held as a whole, one profile's deliveries
held): read from the database, so a restart and the commands run beside the service tell
the truth from the first scrape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import test_delivery as delivery
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import FakeTrakt
from tests.harness import AppThread, sign_in_trakt
from tests.test_delivery import close_targets, drain, restarted, webhook
from watchbridge.app import Runtime, create_app
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

# test_delivery's fixtures: a signed-in profile "me" (max_attempts 3), its worker, the fake Trakt.
trakt = delivery.trakt
storage_settings = delivery.storage_settings
runtime = delivery.runtime
worker = delivery.worker


@pytest.fixture
async def two_people(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> AsyncIterator[tuple[Runtime, DeliveryWorker]]:
    """Profiles me and you, each signed in to a Trakt account of their own (you: bob)."""
    async with delivery.two_people(tmp_path, trakt, receiver, clock) as people:
        yield people


TRAKT_HELD = 'watchbridge_target_held{target="trakt"} 1.0'
PLAY, RATING = "movie_media_scrobble.json", "movie_media_rate.json"


async def sent_once(
    runtime: Runtime, worker: DeliveryWorker, clock: FakeClock, sample: str, profile: str = "me"
) -> None:
    """The Plex webhook `sample` for `profile`, then one delivery pass that tries it."""
    webhook(runtime, sample, profile=profile)
    await drain(worker, runtime, clock, passes=1)


def scraped_after_a_restart(runtime: Runtime, clock: FakeClock) -> str:
    """/metrics' first answer of the service started again (the app factory) on the same
    database and config."""
    runtime.close()
    again = build_runtime(runtime.config, clock=clock)
    with AppThread(create_app(again)) as app:
        return httpx.get(f"{app.url}/metrics").text


async def test_a_target_held_before_a_restart_is_said_held_from_the_first_scrape(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    trakt.fail_next(3, 503)
    await sent_once(runtime, worker, clock, PLAY)
    assert TRAKT_HELD in runtime.metrics.render().decode()
    await close_targets(worker)
    assert TRAKT_HELD in scraped_after_a_restart(runtime, clock)


def gauge(runtime: Runtime, name: str, **labels: str) -> float | None:
    """The value /metrics gives the series (None: it has none)."""
    return value_in(runtime.metrics.render().decode(), name, **labels)


def value_in(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def profile_held(runtime: Runtime, profile: str) -> float | None:
    return gauge(runtime, "watchbridge_profile_held", target="trakt", profile=profile)


async def test_a_profile_held_before_a_restart_is_said_held_from_the_first_scrape(
    two_people: tuple[Runtime, DeliveryWorker], trakt: FakeTrakt, clock: FakeClock
) -> None:
    runtime, worker = two_people
    assert profile_held(runtime, "you") == 0.0  # a series before anything was held
    trakt.revoke_tokens("bob")  # your sign-in is lost; mine works
    webhook(runtime, PLAY, profile="you")
    await sent_once(runtime, worker, clock, RATING, profile="me")
    assert profile_held(runtime, "you") == 1.0
    await close_targets(worker)
    text = scraped_after_a_restart(runtime, clock)
    series = "watchbridge_profile_held"
    assert value_in(text, series, target="trakt", profile="you") == 1.0
    assert value_in(text, series, target="trakt", profile="me") == 0.0
    assert value_in(text, "watchbridge_target_held", target="trakt") == 0.0


async def test_a_profile_is_no_longer_held_once_it_is_signed_in_again(
    two_people: tuple[Runtime, DeliveryWorker], trakt: FakeTrakt, clock: FakeClock
) -> None:
    runtime, worker = two_people
    trakt.revoke_tokens("bob")
    await sent_once(runtime, worker, clock, PLAY, profile="you")
    assert profile_held(runtime, "you") == 1.0
    # `watchbridge auth trakt --profile you`, in a process of its own: the first scrape after
    # it says so, before the service tries the play again.
    sign_in_trakt(runtime.store, trakt, "you", now=clock(), user="bob")
    assert runtime.store.resume_after_sign_in("trakt", "you", clock()) == 1
    assert profile_held(runtime, "you") == 0.0
    await drain(worker, runtime, clock, passes=1)
    assert [h.item.title for h in trakt.history("bob")] == ["Arrival"]
    assert profile_held(runtime, "you") == 0.0


async def test_a_profile_held_by_a_locked_account_is_no_longer_held_once_it_goes_through(
    two_people: tuple[Runtime, DeliveryWorker], trakt: FakeTrakt, clock: FakeClock
) -> None:
    runtime, worker = two_people
    trakt.lock_account("bob")  # 423: tried again hourly
    await sent_once(runtime, worker, clock, PLAY, profile="you")
    assert profile_held(runtime, "you") == 1.0
    await sent_once(runtime, worker, clock, RATING, profile="me")  # mine go on meanwhile
    assert len(trakt.ratings()) == 1
    assert profile_held(runtime, "you") == 1.0
    assert profile_held(runtime, "me") == 0.0
    trakt.unlock_account("bob")
    clock.advance(3601)
    await drain(worker, runtime, clock, passes=1)
    assert [h.item.title for h in trakt.history("bob")] == ["Arrival"]
    assert profile_held(runtime, "you") == 0.0


async def test_a_hold_ends_for_metrics_when_its_rows_are_given_up_and_stays_ended_when_retried(
    two_people: tuple[Runtime, DeliveryWorker], trakt: FakeTrakt, clock: FakeClock
) -> None:
    runtime, worker = two_people
    trakt.revoke_tokens("bob")
    await sent_once(runtime, worker, clock, PLAY, profile="you")
    assert profile_held(runtime, "you") == 1.0
    config = runtime.config
    without_you = replace(config, profiles={"me": config.profiles["me"]})
    # Your profile taken out of the config: its held play becomes a dead letter at the start.
    async with restarted(runtime, worker, clock, without_you) as (again, started):
        assert profile_held(again, "you") is None  # no series for a profile not configured
        await drain(started, again, clock, passes=1)
        assert len(again.store.dead_letters()) == 1
    # Back in the config, `watchbridge deadletters retry`: queued again, not held until a try
    # says so.
    async with restarted(again, started, clock, config) as (back, worker_back):
        assert back.store.retry_dead(None, clock()).queued == 1
        assert profile_held(back, "you") == 0.0
        await drain(worker_back, back, clock, passes=1)
        assert profile_held(back, "you") == 1.0  # still signed out
        # Discarded instead (made a dead letter by the profile's removal again, as above).
        back.store.give_up_waiting("trakt", "you", clock(), "profile you is gone")
        assert back.store.discard_dead(None) == 1
        assert profile_held(back, "you") == 0.0


async def test_a_target_held_is_no_longer_held_once_it_takes_a_delivery_after_a_restart(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    trakt.fail_next(1, 503)
    await sent_once(runtime, worker, clock, PLAY)
    async with restarted(runtime, worker, clock) as (again, started):
        assert gauge(again, "watchbridge_target_held", target="trakt") == 1.0
        # A rating given after the restart goes out at once, before the held play is due:
        # Trakt takes deliveries again, so it is no longer held.
        await sent_once(again, started, clock, RATING)
        assert len(trakt.ratings()) == 1 and trakt.history() == []
        assert gauge(again, "watchbridge_target_held", target="trakt") == 0.0
        clock.advance(600)
        await drain(started, again, clock, passes=1)
        assert [h.item.title for h in trakt.history()] == ["Arrival"]
        assert gauge(again, "watchbridge_target_held", target="trakt") == 0.0


async def test_a_target_removed_from_the_config_is_not_said_held(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    trakt.fail_next(1, 503)
    await sent_once(runtime, worker, clock, PLAY)
    config = runtime.config
    without_trakt = replace(config, services=replace(config.services, trakt=None))
    async with restarted(runtime, worker, clock, without_trakt) as (again, started):
        assert gauge(again, "watchbridge_target_held", target="trakt") is None
        assert gauge(again, "watchbridge_target_held", target="plex") == 0.0
        await drain(started, again, clock, passes=1)
        assert len(again.store.dead_letters()) == 1
        assert again.store.holds() == set()
