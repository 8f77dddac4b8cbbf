"""Two things happening at once to the same item: a delivery landing while a link's run reads,
a webhook's play queued while a run plans. Each interleaving is forced by a fake holding an
answer back while the other step runs; what the fakes hold at the end is the assertion: every
play exactly once, none lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import until
from tests.linkrig import Rig, open_rig, rig_for, use_fast_readers
from tests.test_link_plex_serializd import link_config, plex_and_serializd
from tests.test_sync_scenarios import (
    TraktApp,
    ago,
    diary_plays,
    diary_rating,
    log,
    trakt_episodes,
    trakt_plays,
    trakt_rating,
)
from watchbridge import readers
from watchbridge.app import Runtime
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.model import Account, Ids, MediaEvent, MediaRef
from watchbridge.sync import run_link
from watchbridge.webhooks import ingest_job
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

DIARY = "/api/user/{username}/diary"


async def test_a_copy_delivered_while_a_full_read_reads_the_other_side_is_no_removal(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    # The run read Trakt before the link's copy of S1E5 landed there, and the copy's row was
    # delivered before the run looked at what became of it: the play missing from that read
    # is no removal on Trakt, carried back to Serializd (the user's own diary entry deleted).
    for n in range(1, 5):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    entry = log(serializd, 1, 5, "2024-01-05T20:00:00.000Z")
    assert (await rig.sync()).queued == 1  # S1E5 to Trakt, not delivered yet
    asked = serializd.count("GET", DIARY)
    serializd.delay_next(1, 2.0, route=f"GET {DIARY}")  # Trakt is read first, then Serializd
    run = asyncio.create_task(rig.sync(full=True))
    await until(lambda: serializd.count("GET", DIARY) > asked)
    await rig.deliver()  # the copy lands on Trakt while the run waits for the diary
    assert not run.done()

    assert (await run).queued == 0
    await rig.deliver()
    await rig.sync_and_deliver(full=True)

    expected = [(1, n, f"2024-01-0{n}") for n in range(1, 6)]
    assert trakt_plays(trakt) == expected
    assert diary_plays(serializd) == expected
    assert entry in serializd.diary()  # the user's entry, not a copy of ours in its place


REVIEWS_ADD = "/api/show/reviews/add"


def worker(runtime: Runtime, role: str) -> DeliveryWorker:
    """A process's delivery worker: the service's, or a `watchbridge sync`'s."""
    delivery = DeliveryWorker(make_targets, runtime.config.delivery, role=role)
    delivery.targets = {t.name: t for t in make_targets(runtime)}
    return delivery


async def drain(runtime: Runtime, delivery: DeliveryWorker) -> None:
    while await delivery.pass_once(runtime):
        pass


async def test_a_webhook_play_and_a_link_copy_of_it_sent_by_two_processes_are_one_entry(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `watchbridge sync` (a process of its own, with its own worker) queued the copy of S2E1
    # that Plex shows, and sends it; the webhook of that viewing reaches the service meanwhile.
    # While Serializd's answer to the sync's entry is on its way, the service's worker must
    # not log the same viewing beside it.
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    plex, serializd = plex_and_serializd(start_fake)
    config = load_config(link_config(tmp_path, plex, serializd), {})
    service, cli = build_runtime(config), build_runtime(config)
    service.open()
    cli.open()
    serving, syncing = worker(service, "service"), worker(cli, "cli")
    try:
        await run_link(config, cli.store, "plex-serializd", yes=True)  # S1E1: the baseline
        await drain(cli, syncing)
        watched = time.time() // 60 * 60
        plex.watch("111", watched)
        assert (await run_link(config, cli.store, "plex-serializd", yes=True)).queued == 1
        serializd.delay_next(1, 2.0, route=f"POST {REVIEWS_ADD}")
        sending = asyncio.create_task(drain(cli, syncing))  # the link's copy
        await until(lambda: serializd.count("POST", REVIEWS_ADD) > 1)
        item = MediaRef("episode", show_ids=Ids(imdb="tt0903747", tmdb="1396"), season=2, number=1)
        event = MediaEvent(
            "generic", "played", item, account=Account("alex"), played=True, occurred_at=watched
        )
        assert service.store.ingest(ingest_job(service, "alex", event))
        await drain(service, serving)  # the webhook's entry, while that answer is held back
        await sending
        await drain(service, serving)  # the webhook's play: the sync's entry is that play

        assert [(r.season_id, r.episode_number) for r in serializd.diary()] == [
            (3572, 1),
            (3573, 1),
        ]
        assert service.store.outbox_counts() == {"pending": 0, "inflight": 0, "done": 3, "dead": 0}
    finally:
        for delivery in (serving, syncing):
            for target in delivery.targets.values():
                await target.aclose()
        cli.close()
        service.close()


async def test_a_rating_copy_delivered_while_a_run_reads_the_other_side_keeps_winning(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Logged with 3 stars (6), rewatched with 4 (8): Trakt got the 8. The user deletes the
    # rewatch's log, so the first log's 6 shows again and is copied to Trakt. The next run
    # read Trakt's 8 before that copy landed, and looked at the copies waiting after it
    # landed: the copy still wins, not Trakt's 8 by its newer date (sent back to Serializd).
    use_fast_readers(monkeypatch)
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply, max_removal_share: 1")
    try:
        log(serializd, 1, 1, ago(10), rating=6, date_added=ago(10))
        rewatch = log(serializd, 1, 1, ago(5), rating=8, is_rewatch=True, date_added=ago(5))
        await rig.sync_and_deliver()
        await rig.sync_and_deliver()
        assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (8, 8)
        serializd.delete_entry(rewatch)
        # The 6 to Trakt (and the rewatch's removal), not delivered yet.
        assert (await rig.sync(full=True)).queued == 2
        asked = serializd.count("GET", DIARY)
        serializd.delay_next(1, 2.0, route=f"GET {DIARY}")
        run = asyncio.create_task(rig.sync(full=True))
        await until(lambda: serializd.count("GET", DIARY) > asked)
        await rig.deliver()  # the copy lands on Trakt while the run waits for the diary
        assert not run.done()

        assert (await run).queued == 0
        for full in (True, False, True):
            await rig.sync_and_deliver(full=full)

        assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (6, 6)
        assert [e.rating for e in serializd.diary()] == [6]
    finally:
        await rig.aclose()


async def test_a_rating_removal_delivered_while_a_run_reads_it_is_not_copied_back(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user clears S1E1's rating on Trakt; the link removes it from Serializd. The next run
    # read Serializd's answer from before that removal landed, and looked at the removals on
    # their way after it landed: the rating it still read is not copied back to Trakt.
    use_fast_readers(monkeypatch)
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply, max_removal_share: 1")
    app = TraktApp(trakt)
    try:
        app.watch(1, 1, ago(10))
        app.rate(1, 1, 8, ago(10))
        await rig.sync_and_deliver()
        assert diary_rating(serializd, 1, 1) == 8
        app.post("/sync/ratings/remove", {"episodes": [app.episode(1, 1)]})
        assert (await rig.sync(full=True)).queued == 1  # the removal, not delivered yet
        asked = serializd.count("GET", DIARY)
        serializd.delay_next(1, 2.0, route=f"GET {DIARY}")  # answered as it was asked
        run = asyncio.create_task(rig.sync(full=True))
        await until(lambda: serializd.count("GET", DIARY) > asked)
        await rig.deliver()  # the removal lands on Serializd while that answer is held
        assert not run.done()

        assert (await run).queued == 0
        for full in (True, False, True):
            await rig.sync_and_deliver(full=full)

        assert (trakt_rating(trakt, 1, 1), diary_rating(serializd, 1, 1)) == (None, None)
    finally:
        app.http.close()
        await rig.aclose()


# The Serializd answers a full run reads in this order; the webhook's entry lands while one is
# held: after the diary read; after the run checked the delivery ledger for entries written
# since (before the ticks read); after the ticks read (only the rows waiting tell).
RUN_READS = {
    "diary": f"GET {DIARY}",
    "ledger check": "GET /api/user/{username}/watchedpage_v2/{page}",
    "ticks": "GET /mobile/page/show/{id}/season_v2_part_3/{number}",
}


@pytest.mark.parametrize("held", list(RUN_READS))
async def test_a_webhook_play_landing_while_a_run_reads_is_not_copied_to_its_target_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd, held: str
) -> None:
    # A player's stop of S1E5 queued for both targets. Trakt got it first, dated by Trakt's
    # clock, three minutes ahead of ours; Serializd's row, waiting when the run began, landed
    # while the run read Serializd. Missing from the diary read, it is neither a play to copy
    # there from Trakt (too far from the webhook's entry for the target to take it as the
    # same: a second diary entry), nor is its tick a play of its own beside the entry (the
    # next run copied it to Trakt as a second, undated play).
    for n in range(1, 5):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    trakt.advance(180)
    item = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=5)
    stop = MediaEvent("generic", "stop", item, position_ms=57 * 60_000, duration_ms=60 * 60_000)
    assert rig.store.ingest(ingest_job(rig.runtime, "me", stop))
    await deliver_to(rig, "trakt")  # scrobbled live: Trakt dates it by its own clock
    assert [e.item.number for e in trakt.history() if e.item.season == 1] == [5, 4, 3, 2, 1]
    route = RUN_READS[held]
    method, _, path = route.partition(" ")
    asked = len(serializd.calls(method, path))
    released = serializd.hold_next(route)
    run = asyncio.create_task(rig.sync(full=True))
    try:
        await until(lambda: len(serializd.calls(method, path)) > asked)
        # The service's worker (another process: Serializd's one-request-at-a-time lane is
        # its own) delivers the webhook's entry while that answer is held.
        await asyncio.to_thread(deliver_elsewhere, rig, "serializd")
        assert [number for _, number, _ in diary_plays(serializd)].count(5) == 1
        assert not run.done()
    finally:
        released.set()

    result = await run
    await rig.deliver()
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)

    assert [number for _, number in trakt_episodes(trakt)].count(5) == 1
    assert [number for _, number, _ in diary_plays(serializd)].count(5) == 1
    assert result.queued == 0


async def test_a_webhook_play_landing_on_the_side_read_first_is_not_copied_there_again(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    # The same stop of S1E5, Serializd's row delivered first: the run read Trakt, then the
    # Trakt row (waiting when the run began) landed while the run read the diary. Only the
    # rows waiting before the reads tell that Trakt's play is on its way, not missing there.
    for n in range(1, 5):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    trakt.advance(180)
    item = MediaRef("episode", show_ids=Ids(tmdb="1396"), season=1, number=5)
    stop = MediaEvent("generic", "stop", item, position_ms=57 * 60_000, duration_ms=60 * 60_000)
    assert rig.store.ingest(ingest_job(rig.runtime, "me", stop))
    await deliver_to(rig, "serializd")
    assert [number for _, number, _ in diary_plays(serializd)].count(5) == 1
    asked = serializd.count("GET", DIARY)
    released = serializd.hold_next(f"GET {DIARY}")
    run = asyncio.create_task(rig.sync(full=True))
    try:
        await until(lambda: serializd.count("GET", DIARY) > asked)
        await asyncio.to_thread(deliver_elsewhere, rig, "trakt")  # scrobbled live, meanwhile
        assert [number for _, number in trakt_episodes(trakt)].count(5) == 1
        assert not run.done()
    finally:
        released.set()

    result = await run
    await rig.deliver()
    for full in (True, False, True):
        await rig.sync_and_deliver(full=full)

    assert result.queued == 0
    assert [number for _, number in trakt_episodes(trakt)].count(5) == 1
    assert [number for _, number, _ in diary_plays(serializd)].count(5) == 1


def deliver_elsewhere(rig: Rig, target: str) -> None:
    """Drain one target's rows from another process: its own runtime and event loop."""

    async def drain_there() -> None:
        there = rig_for(rig.runtime.config, rig.trakt, rig.serializd, {})
        try:
            await deliver_to(there, target)
        finally:
            await there.aclose()

    asyncio.run(drain_there())


async def deliver_to(rig: Rig, target: str) -> None:
    """Drain one target's rows only (the other's wait)."""
    delivery = DeliveryWorker(lambda _: [rig.targets[target]], rig.runtime.config.delivery)
    delivery.targets = {target: rig.targets[target]}
    while await delivery.pass_once(rig.runtime):
        pass
