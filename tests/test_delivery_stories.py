"""Delivery stories through outages, backlogs and restarts: what Trakt ends up holding.

Driven with the worker, the fake Trakt over real HTTP and a hand-moved clock (both clocks moved
together), in the style of test_delivery.py, whose fixtures these stories reuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests import test_delivery as delivery
from tests.fakes.base import cloudflare_page
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import FakeTrakt, iso, parse_iso, to_minute
from tests.ingest_samples import sample_json
from tests.test_delivery import _lift_the_pacer, drain, restarted, two_people, worker_for
from watchbridge.app import Runtime
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.ingest import parse
from watchbridge.model import Accepted, Ids, MediaRef, ref_to_dict
from watchbridge.store import NewOutboxRow, ordering_key
from watchbridge.webhooks import ingest_job

pytestmark = pytest.mark.anyio

# test_delivery's fixtures: a signed-in profile "me" (max_attempts 3), its worker, the fake Trakt.
trakt = delivery.trakt
storage_settings = delivery.storage_settings
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


async def test_a_binge_through_a_three_hour_outage_lands_each_episode_at_its_own_time(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
) -> None:
    trakt.fail_next(10_000, 503)  # Trakt is down for the whole evening
    ended: dict[int, float] = {}
    for number in range(1, 9):  # 8 episodes, with a pause in each
        episode_event(runtime, "media.play", number, 0)
        await drain(worker, runtime, clock, passes=1)
        both_advance(clock, trakt, 600)
        episode_event(runtime, "media.pause", number, 600_000)
        await drain(worker, runtime, clock, passes=1)
        both_advance(clock, trakt, 120)
        episode_event(runtime, "media.resume", number, 600_000)
        await drain(worker, runtime, clock, passes=1)
        both_advance(clock, trakt, EPISODE - 720)
        episode_event(runtime, "media.scrobble", number, int(EPISODE * 0.95) * 1000)
        ended[number] = clock()
        await drain(worker, runtime, clock, passes=1)
        both_advance(clock, trakt, 60)
    both_advance(clock, trakt, 3 * 3600 - (clock() - ended[1]))
    trakt.clear_knobs()  # Trakt is back
    sent_before = len(trakt.requests)
    await drain(worker, runtime, clock, passes=10, step=310)
    after = trakt.requests[sent_before:]
    assert [r.path for r in after if r.path.startswith("/scrobble/")] == []
    history = sorted(trakt.history(), key=lambda h: h.item.number)  # type: ignore[union-attr]
    assert [h.item.number for h in history] == list(range(1, 9))  # type: ignore[union-attr]
    assert [h.watched_at for h in history] == [iso(to_minute(ended[n])) for n in range(1, 9)]
    assert sum(1 for r in after if r.path == "/sync/history" and r.method == "POST") <= 2
    assert runtime.store.outbox_counts().get("pending", 0) == 0
    assert runtime.store.dead_letters() == []


def late_episode(number: int, at: float, key: str, season: int = 1) -> NewOutboxRow:
    """A completed play of the test show's episode, queued for Trakt (as a webhook's stop)."""
    item = MediaRef(
        "episode",
        show_ids=Ids(tvdb=str(SHOW_TVDB)),
        show_title="Slow Horses",
        season=season,
        number=number,
    )
    payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "progress": 95.0}
    return NewOutboxRow("trakt", "me", "play", payload, f"me:trakt:{item.key()}", key)


def rating_of_episode(number: int, at: float, key: str, value: int) -> NewOutboxRow:
    item = MediaRef(
        "episode",
        show_ids=Ids(tvdb=str(SHOW_TVDB)),
        show_title="Slow Horses",
        season=1,
        number=number,
    )
    payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "rating": value}
    order = ordering_key("me", "trakt", item.key(), "rating")
    return NewOutboxRow("trakt", "me", "rating", payload, order, key)


def watched(trakt: FakeTrakt) -> list[tuple[int, int, str | None]]:
    return sorted(
        (h.item.season, h.item.number, h.watched_at)  # type: ignore[union-attr]
        for h in trakt.history()
    )


async def test_a_rating_given_during_an_outage_lands_with_its_play_each_at_its_time(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    trakt.fail_next(10_000, 503)
    episode_event(runtime, "media.scrobble", 1, int(EPISODE * 0.95) * 1000)
    played = clock()
    await drain(worker, runtime, clock, passes=1)
    both_advance(clock, trakt, 120)
    runtime.store.enqueue([rating_of_episode(1, clock(), "r1", 80)], clock())
    rated = clock()
    both_advance(clock, trakt, 3 * 3600)
    trakt.clear_knobs()
    await drain(worker, runtime, clock, passes=6, step=310)
    assert watched(trakt) == [(1, 1, iso(to_minute(played)))]
    ((rating),) = trakt.ratings()
    assert rating.rating == 8
    assert abs(parse_iso(rating.rated_at) - rated) < 60


async def test_a_429_on_the_ratings_of_a_batch_keeps_its_plays_and_sends_the_ratings_once(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    rows = [late_episode(n, clock() - 4 * 3600 + n * EPISODE, f"p{n}") for n in range(1, 5)]
    rows += [rating_of_episode(n, clock() - 3600, f"r{n}", 80) for n in range(1, 5)]
    runtime.store.enqueue(rows, clock())
    trakt.throttle_next(1, retry_after=120, route="POST /sync/ratings")
    await worker.pass_once(runtime)
    assert len(trakt.history()) == 4
    _lift_the_pacer(worker)
    await drain(worker, runtime, clock, passes=4, step=130)
    assert len(trakt.history()) == 4
    assert len(trakt.ratings()) == 4
    assert trakt.count("POST", "/sync/history") == 1
    assert trakt.count("POST", "/sync/ratings") == 2


async def test_a_batch_cloudflare_answered_502_after_trakt_wrote_it_lands_once(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    times = {n: to_minute(clock() - 7 * 3600 + n * EPISODE) for n in range(1, 9)}
    runtime.store.enqueue([late_episode(n, at, f"p{n}") for n, at in times.items()], clock())
    trakt.fail_next(
        1, 502, body=cloudflare_page(502), route="POST /sync/history", after_handler=True
    )
    await worker.pass_once(runtime)
    assert len(trakt.history()) == 8
    await drain(worker, runtime, clock, passes=6, step=400)
    assert watched(trakt) == [(1, n, iso(at)) for n, at in times.items()]
    assert runtime.store.outbox_counts().get("pending", 0) == 0


async def test_plays_trakt_finds_land_and_only_those_it_cannot_find_wait(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    # Episodes 9..12 of a 10-episode season: Trakt lists 9 and 10, not 11 and 12 (new ones).
    times = {n: to_minute(clock() - 5 * 3600 + n * 600) for n in range(9, 13)}
    runtime.store.enqueue([late_episode(n, at, f"p{n}") for n, at in times.items()], clock())
    await drain(worker, runtime, clock, passes=3, step=60)
    assert watched(trakt) == [(1, 9, iso(times[9])), (1, 10, iso(times[10]))]
    unmatched = runtime.store.unmatched()
    assert sorted(u.item.payload["item"]["number"] for u in unmatched) == [11, 12]
    # The next day Trakt lists them: they land, and 9 and 10 are not added again.
    trakt.add_episode(trakt.shows[-1], 1, 11, tvdb=9911)
    trakt.add_episode(trakt.shows[-1], 1, 12, tvdb=9912)
    both_advance(clock, trakt, 86400)
    await drain(worker, runtime, clock, passes=4, step=3700)
    assert watched(trakt) == [(1, n, iso(at)) for n, at in times.items()]


async def test_a_backlog_larger_than_one_request_goes_in_batches_each_play_once(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    trakt.add_show("Long", 2000, tvdb=777, seasons={1: 250, 2: 250})
    rows = []
    for season in (1, 2):
        for n in range(1, 226):
            item = MediaRef("episode", show_ids=Ids(tvdb="777"), season=season, number=n)
            at = clock() - 30 * 86400 + season * 100_000 + n * 300
            payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "progress": 95.0}
            rows.append(
                NewOutboxRow(
                    "trakt", "me", "play", payload, f"me:trakt:{item.key()}", f"b{season}-{n}"
                )
            )
    runtime.store.enqueue(rows, clock())
    await drain(worker, runtime, clock, passes=6, step=2)
    adds = trakt.calls("POST", "/sync/history")
    sizes = [
        sum(len(season["episodes"]) for show in r.json()["shows"] for season in show["seasons"])
        for r in adds
    ]
    assert sorted(sizes) == [50, 200, 200]
    assert len(trakt.history()) == 450
    assert runtime.store.outbox_counts().get("pending", 0) == 0


async def test_a_play_that_gives_up_is_one_alert_and_lands_once_when_retried(
    runtime: Runtime,
    worker: DeliveryWorker,
    trakt: FakeTrakt,
    clock: FakeClock,
    receiver: AlertReceiver,
) -> None:
    at = to_minute(clock() - 3600)
    runtime.store.enqueue([late_episode(1, at, "p1")], clock())
    trakt.fail_next(3, 400, route="POST /sync/history")  # max_attempts is 3 here
    await drain(worker, runtime, clock, passes=8, step=7 * 3600)
    (dead,) = runtime.store.dead_letters()
    titles = [t for t in receiver.titles() if "gave up" in t]
    assert len(titles) == 1
    runtime.store.retry_dead([dead.id], clock())
    await drain(worker, runtime, clock, passes=3, step=60)
    assert watched(trakt) == [(1, 1, iso(at))]
    await drain(worker, runtime, clock, passes=3, step=3600)
    assert watched(trakt) == [(1, 1, iso(at))]


async def test_a_stop_queued_as_the_machine_went_to_sleep_lands_at_its_time_on_waking(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    episode_event(runtime, "media.play", 1, 0)
    await worker.pass_once(runtime)
    both_advance(clock, trakt, EPISODE)
    episode_event(runtime, "media.scrobble", 1, int(EPISODE * 0.95) * 1000)
    ended = clock()
    episode_event(runtime, "media.play", 2, 0)  # auto-play, then the NAS suspends
    both_advance(clock, trakt, 5 * 3600)
    await drain(worker, runtime, clock, passes=3, step=30)
    assert watched(trakt) == [(1, 1, iso(to_minute(ended)))]
    assert trakt.count("POST", "/scrobble/start") == 1  # episode 1's, before the sleep
    assert trakt.count("POST", "/scrobble/stop") == 0


async def test_one_profiles_held_backlog_does_not_keep_anothers_plays_waiting(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with two_people(tmp_path, trakt, receiver, clock) as (runtime, worker):
        bob = trakt.users["bob"]
        trakt.revoke_tokens(bob)  # Bob's sign-in is lost; his month away is queued
        rows = []
        for n in range(1, 10):
            for k in range(60):
                item = MediaRef("episode", show_ids=Ids(tvdb=str(SHOW_TVDB)), season=1, number=n)
                payload = {
                    "item": ref_to_dict(item),
                    "at": clock() - 86400 * 30 + k * 3600 + n * 60,
                    "source": "plex",
                    "progress": 95.0,
                }
                rows.append(
                    NewOutboxRow(
                        "trakt", "you", "play", payload, f"you:trakt:{item.key()}:{k}", f"y{n}-{k}"
                    )
                )
        runtime.store.enqueue(rows, clock() - 600)
        runtime.store.enqueue([late_episode(1, clock() - 3600, "me1")], clock())
        await drain(worker, runtime, clock, passes=6, step=5)
        assert len(trakt.history()) == 1
        # One refused try per claim of 200 of Bob's rows (540: three, each refused at its look
        # in Trakt's history for plays another app scrobbled), then mine (its look, its add).
        assert trakt.count("GET", "/sync/history/episodes") == 4
        assert trakt.count("POST", "/sync/history") == 1


async def test_a_service_killed_mid_drain_sends_each_play_of_the_backlog_once(
    runtime: Runtime, worker: DeliveryWorker, trakt: FakeTrakt, clock: FakeClock
) -> None:
    trakt.add_show("Long", 2000, tvdb=777, seasons={1: 250})
    rows = []
    for n in range(1, 251):
        item = MediaRef("episode", show_ids=Ids(tvdb="777"), season=1, number=n)
        at = to_minute(clock() - 30 * 86400 + n * 3000)
        payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "progress": 95.0}
        rows.append(NewOutboxRow("trakt", "me", "play", payload, f"me:trakt:{item.key()}", f"b{n}"))
    runtime.store.enqueue(rows, clock())
    trakt.delay_next(1, 5.0, route="POST /sync/history")  # Trakt writes; the answer is slow
    passing = asyncio.ensure_future(worker.pass_once(runtime))
    while trakt.count("POST", "/sync/history") == 0:
        await asyncio.sleep(0.01)
    passing.cancel()  # kill -9 before the answer
    with contextlib.suppress(asyncio.CancelledError):
        await passing
    async with restarted(runtime, worker, clock) as (again, worker2):
        stop = asyncio.Event()
        stop.set()
        await worker_for(again).run(again, stop)  # its first steps take the claims back
        both_advance(clock, trakt, 60)
        await drain(worker2, again, clock, passes=6, step=60)
        assert len(trakt.history()) == 250
        assert again.store.outbox_counts().get("pending", 0) == 0


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
