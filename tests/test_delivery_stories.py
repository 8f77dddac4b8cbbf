"""Delivery stories through outages, backlogs and restarts: what Trakt ends up holding.

Driven with the worker, the fake Trakt over real HTTP and a hand-moved clock (both clocks moved
together), in the style of test_delivery.py, whose fixtures these stories reuse.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests import test_delivery as delivery
from tests.fakes.receiver import FakeClock
from tests.fakes.trakt import FakeTrakt, iso, to_minute
from tests.ingest_samples import sample_json
from tests.test_delivery import drain
from watchbridge.app import Runtime
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.ingest import parse
from watchbridge.model import Accepted
from watchbridge.webhooks import ingest_job

pytestmark = pytest.mark.anyio

# test_delivery's fixtures: a signed-in profile "me" (max_attempts 3), its worker, the fake Trakt.
trakt = delivery.trakt
runtime = delivery.runtime
worker = delivery.worker

SHOW_TVDB = 424242
EPISODE = 45 * 60


def both_advance(clock: FakeClock, trakt: FakeTrakt, seconds: float) -> None:
    clock.advance(seconds)
    trakt.advance(seconds)


def episode_event(runtime: Runtime, event: str, number: int, offset_ms: int | None = None) -> None:
    """Plex's webhook `event` for episode `number` of season 1 of the test show."""
    payload = sample_json("plex", "episode_legacy_media_scrobble.json")
    payload["event"] = event
    meta: dict[str, Any] = payload["Metadata"]
    meta |= {
        "guid": f"com.plexapp.agents.thetvdb://{SHOW_TVDB}/1/{number}?lang=en",
        "parentGuid": f"com.plexapp.agents.thetvdb://{SHOW_TVDB}/1?lang=en",
        "grandparentGuid": f"com.plexapp.agents.thetvdb://{SHOW_TVDB}?lang=en",
        "grandparentTitle": "Slow Horses",
        "title": f"Episode {number}",
        "index": number,
        "parentIndex": 1,
        "ratingKey": str(1000 + number),
        "key": f"/library/metadata/{1000 + number}",
        "duration": EPISODE * 1000,
    }
    if offset_ms is not None:
        meta["viewOffset"] = offset_ms
    result = parse("plex", json.dumps(payload).encode(), "application/json")
    assert isinstance(result, Accepted)
    for item in result.events:
        runtime.store.ingest(ingest_job(runtime, "me", item, result.document))


@pytest.fixture(autouse=True)
def slow_horses(trakt: FakeTrakt, clock: FakeClock) -> None:
    """The show the stories watch, and one clock on both sides."""
    trakt.add_show("Slow Horses", 2022, tvdb=SHOW_TVDB, seasons={1: 10})
    trakt.advance(clock() - trakt.now())


def watched(trakt: FakeTrakt) -> list[tuple[int, int, str | None]]:
    return sorted(
        (h.item.season, h.item.number, h.watched_at)  # type: ignore[union-attr]
        for h in trakt.history()
    )


async def _asleep_during_the_first_live_stop(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    """One pass whose first live stop Trakt takes, then the machine sleeps 5 hours before the
    answer arrives and the pass goes on."""
    trakt.delay_next(1, 1.0, route="POST /scrobble/stop")
    passing = asyncio.ensure_future(worker.pass_once(runtime))
    while trakt.count("POST", "/scrobble/stop") == 0:
        await asyncio.sleep(0.01)
    both_advance(clock, trakt, 5 * 3600)  # suspended: the monotonic clock stood still
    await passing


async def test_a_start_claimed_before_the_machine_slept_is_not_scrobbled_hours_late(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    episode_event(runtime, "media.scrobble", 1, int(EPISODE * 0.95) * 1000)
    episode_event(runtime, "media.play", 2, 0)  # auto-play: the next episode starts
    await _asleep_during_the_first_live_stop(runtime, worker, trakt, clock)
    await drain(worker, runtime, clock, passes=2, step=30)
    assert trakt.count("POST", "/scrobble/start") == 0
    assert trakt.watching() is None


async def test_a_stop_claimed_before_the_machine_slept_lands_at_its_own_time(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    episode_event(runtime, "media.scrobble", 1, int(EPISODE * 0.95) * 1000)
    both_advance(clock, trakt, 60)
    episode_event(runtime, "media.scrobble", 2, int(EPISODE * 0.95) * 1000)
    second = clock()
    await _asleep_during_the_first_live_stop(runtime, worker, trakt, clock)
    await drain(worker, runtime, clock, passes=2, step=30)
    assert watched(trakt)[1] == (1, 2, iso(to_minute(second)))
