"""A household on one watchbridge: one person's trouble (a rate limit, a locked account, a
first link run's backlog) holds only that person's deliveries, and the others' plays go out
promptly; `status` names everyone held."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, until
from tests.test_delivery import INLINE_RETRIES, close_targets, webhook, worker_for
from watchbridge.app import Runtime
from watchbridge.config import parse_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.http import Pacer
from watchbridge.ids import RETRY_LOOKUP_SPACING
from watchbridge.model import Ids, MediaRef, ref_to_dict
from watchbridge.store import NewOutboxRow, Store
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

PEOPLE = {"me": "sean", "you": "bob", "kid": "kim"}  # profile: their own Trakt account


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Heat", 1995, imdb="tt0113277", tmdb=949)
    for account in PEOPLE.values():
        if account not in fake.users:
            fake.add_user(account)
    return fake


@contextlib.asynccontextmanager
async def household(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: Callable[[], float]
) -> AsyncIterator[Runtime]:
    """Three people (Plex accounts 1-3), each signed in to a Trakt account of their own, and
    the link whose first run queues a backlog."""
    profiles = "".join(
        f'  {name}: {{users: {{plex: ["{n}"]}}, accounts: {{trakt: {{}}, plex: {{}}}}}}\n'
        for n, name in enumerate(PEOPLE, 1)
    )
    config = parse_config(
        f"""
storage: {{path: {tmp_path / "wb.db"}}}
alerts: {{urls: ["{receiver.apprise_url}"]}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  plex: {{url: "http://127.0.0.1:9", token: plex-owner-token}}
profiles:
{profiles}links:
  plex-trakt: {{services: [plex, trakt]}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    for profile, account in PEOPLE.items():
        sign_in_trakt(runtime.store, trakt, profile, now=clock(), user=account)
    try:
        yield runtime
    finally:
        runtime.close()


@contextlib.asynccontextmanager
async def by_hand(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> AsyncIterator[tuple[Runtime, DeliveryWorker]]:
    """The household and a worker driven pass by pass, Trakt's pacing lifted (the hand-moved
    clock times it)."""
    async with household(tmp_path, trakt, receiver, clock) as runtime:
        worker = worker_for(runtime)
        worker.targets["trakt"].client.http.retry = INLINE_RETRIES  # type: ignore[attr-defined]
        lift_the_pacers(worker)
        try:
            yield runtime, worker
        finally:
            await close_targets(worker)


def lift_the_pacers(worker: DeliveryWorker) -> None:
    """Fresh pacers: a 429 pauses one in real time, which the hand-moved clock has passed."""
    for profile in PEOPLE:
        worker.targets["trakt"].client.http.pacers[profile] = Pacer()  # type: ignore[attr-defined]


def first_link_run(trakt: FakeTrakt, runtime: Runtime, profile: str, plays: int) -> None:
    """The backlog a first run of the link queues for `profile`: a play a day of films
    Trakt knows."""
    now = runtime.clock()
    rows = []
    for n in range(plays):
        imdb = f"tt{5_000_000 + n}"
        trakt.add_movie(f"Film {n}", 2000, imdb=imdb)
        item = MediaRef("movie", Ids(imdb=imdb), title=f"Film {n}", year=2000)
        at = now - 86400 * (plays - n)
        key = f"{profile}:trakt:{item.key()}"
        payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "link": "plex-trakt"}
        rows.append(NewOutboxRow("trakt", profile, "play", payload, key, f"link:{key}:{at}"))
    runtime.store.enqueue(rows, now)


def waited_play(profile: str, item: MediaRef, at: float) -> NewOutboxRow:
    """A play a webhook queued that waited: looked for in the person's Trakt history first."""
    payload = {"item": ref_to_dict(item), "at": at, "source": "plex", "progress": 95.0}
    key = f"{profile}:trakt:{item.key()}"
    return NewOutboxRow("trakt", profile, "play", payload, key, f"{key}:{at}")


HEAT = MediaRef("movie", Ids(imdb="tt0113277"), title="Heat", year=1995)


async def test_a_rate_limit_met_after_a_lost_read_holds_only_that_persons_deliveries(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        # My play waited; its look at my Trakt history loses its answer, then Trakt
        # limits my account for 5 minutes. A read lands nothing: a rate limit, no outage.
        runtime.store.enqueue([waited_play("me", HEAT, clock() - 3600)], clock())
        trakt.drop_next(1, route="GET /sync/history/movies")
        trakt.throttle_next(1, retry_after=300, route="GET /sync/history/movies")
        await worker.pass_once(runtime)
        clock.advance(5)
        webhook(runtime, "movie_media_play.json", profile="you")
        await worker.pass_once(runtime)
        assert trakt.count("POST", "/scrobble/start") == 1
        (held,) = [w for w in runtime.store.status().waiting if w.profile == "me"]
        assert held.reason.startswith("rate limited until")  # not "may have landed"
        clock.advance(301)
        lift_the_pacers(worker)
        await worker.pass_once(runtime)
        assert [h.item.title for h in trakt.history("sean")] == ["Heat"]


async def test_status_names_each_held_person_before_anothers_further_reasons(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        trakt.revoke_tokens("bob")
        webhook(runtime, "movie_media_play.json", profile="you")
        await worker.pass_once(runtime)
        # My backlog, rate limited minute after minute: each hold says its own "until".
        trakt.throttle_next(1, retry_after=600)
        for n in range(6):
            film = MediaRef("movie", Ids(imdb=f"tt{7_000_000 + n}"), title=f"F{n}", year=1995)
            runtime.store.enqueue([waited_play("me", film, clock() - 3600)], clock())
            await worker.pass_once(runtime)
            clock.advance(61)
        status = runtime.store.status()
        shown = [(w.profile, w.reason.split(" ")[0]) for w in status.waiting]
        assert ("you", "Trakt") in shown  # "Trakt no longer accepts the sign-in ..."
        assert [p for p, _ in shown[:2]] == ["me", "you"] and status.waiting_left_out == 2


def posts(trakt: FakeTrakt) -> list[str]:
    return [r.path for r in trakt.requests if r.method == "POST"]


async def test_a_live_scrobble_goes_before_the_rest_of_anothers_first_run_backlog(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        first_link_run(trakt, runtime, "me", 300)  # two batches
        await worker.pass_once(runtime)
        assert posts(trakt) == ["/sync/history"]
        webhook(runtime, "movie_media_play.json", profile="you")  # you press play meanwhile
        await worker.pass_once(runtime)  # your start and the rest of my backlog
        assert posts(trakt) == ["/sync/history", "/scrobble/start", "/sync/history"]
        assert len(trakt.history("sean")) == 300


# Trakt takes seconds over a history add of 200 plays (its cost grows with the items, §9).
SLOW_ADD = 2.0


async def test_anothers_first_run_backlog_delays_a_live_scrobble_by_one_batch_at_most(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver
) -> None:
    # The service as it runs: its own loops, Trakt's real pacing, the real clock.
    async with household(tmp_path, trakt, receiver, time.time) as runtime:
        first_link_run(trakt, runtime, "me", 400)  # two batches of 200
        trakt.delay_next(2, SLOW_ADD, route="POST /sync/history")
        worker = DeliveryWorker(make_targets, runtime.config.delivery)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(runtime, stop))
        try:
            await until(lambda: trakt.count("POST", "/sync/history") == 1)  # a batch under way
            pressed = time.monotonic()
            webhook(runtime, "movie_media_play.json", profile="you")
            worker.notify()  # as the webhook route does
            await until(lambda: trakt.count("POST", "/scrobble/start") == 1, timeout=30)
            waited = time.monotonic() - pressed
            # The batch under way, then the scrobble: not the rest of the backlog first.
            assert waited < SLOW_ADD + 1.5, f"the live scrobble waited {waited:.1f}s"
            await until(lambda: len(trakt.history("sean")) == 400, timeout=30)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_one_persons_locked_account_holds_only_their_plays_until_it_is_unlocked(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        trakt.lock_account("sean")
        for profile in PEOPLE:
            runtime.store.enqueue([waited_play(profile, HEAT, clock() - 3600)], clock())
        await worker.pass_once(runtime)
        assert [len(trakt.history(account)) for account in PEOPLE.values()] == [0, 1, 1]
        (held,) = [w for w in runtime.store.status().waiting if w.profile == "me"]
        assert "locked" in held.reason and runtime.store.outbox_counts()["dead"] == 0
        await until(lambda: bool(receiver.titles()))
        assert receiver.titles() == ["watchbridge: Trakt account locked (profile me)"]
        trakt.unlock_account("sean")
        clock.advance(3601)  # tried again hourly
        await worker.pass_once(runtime)
        assert [len(trakt.history(account)) for account in PEOPLE.values()] == [1, 1, 1]


def unmatched_jellyfin_plays(runtime: Runtime, profile: str, count: int) -> None:
    """`count` plays Jellyfin's webhooks queued for `profile` (services.jellyfin not set), of
    episodes known by their TMDB id only, which Trakt's id search does not know: each waits as
    unmatched and is tried again, hourly at first."""
    now = runtime.clock()
    with runtime.store.transaction() as conn:
        for n in range(count):
            item = MediaRef("episode", Ids(tmdb=str(9_000_000 + n)), season=1, number=n + 1)
            payload = {"item": ref_to_dict(item), "at": now - 60, "source": "jellyfin"}
            key = f"{profile}:trakt:{item.key()}"
            event = conn.execute(
                "INSERT INTO events (received_at, source, kind, profile, payload)"
                " VALUES (?, 'jellyfin', 'scrobble', ?, '{}')",
                (now, profile),
            ).lastrowid
            row = NewOutboxRow("trakt", profile, "play", payload, key, f"{key}:{now}")
            Store._insert_outbox(conn, [row], now, event)


def searches(trakt: FakeTrakt) -> int:
    return sum(1 for r in trakt.requests if r.method == "GET" and r.path.startswith("/search/"))


async def test_one_persons_unmatched_retries_spend_trakts_lookups_apart_from_a_live_scrobble(
    tmp_path: Path, trakt: FakeTrakt, receiver: AlertReceiver, clock: FakeClock
) -> None:
    async with by_hand(tmp_path, trakt, receiver, clock) as (runtime, worker):
        # The app's lookups share one bucket (unsigned): its pacing lifted, searches counted.
        worker.targets["trakt"].client.http.pacers[""] = Pacer()  # type: ignore[attr-defined]
        unmatched_jellyfin_plays(runtime, "me", 300)
        await worker.pass_once(runtime)
        await worker.pass_once(runtime)
        assert searches(trakt) == 300 and runtime.store.unmatched_count() == 300
        clock.advance(3601)  # my hourly retries come round; you press play just then
        webhook(runtime, "movie_media_play.json", profile="you")
        sent = len(trakt.requests)
        await worker.pass_once(runtime)
        assert trakt.count("POST", "/scrobble/start") == 1
        # Not 200 searches first (a batch of my retries: two minutes of Trakt's pacing).
        assert searches(trakt) - 300 <= 2, [r.path for r in trakt.requests[sent:]]
        per_pass = []
        for _ in range(25):  # my round, spread over its ten minutes
            before = searches(trakt)
            clock.advance(30)
            await worker.pass_once(runtime)
            per_pass.append(searches(trakt) - before)
        assert searches(trakt) == 600  # one search per item and round
        assert max(per_pass) <= 30 / RETRY_LOOKUP_SPACING + 1
        assert runtime.store.unmatched_count() == 300
