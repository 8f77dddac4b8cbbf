"""A link run reading a person's Plex side while the delivery worker writes to the same person
(the service runs both on one event loop; a `watchbridge sync` beside the service is another
process): the run's reader loaded what we wrote before it listed the libraries, and the
deliverer records a new scrobble meanwhile. Its history row is our echo, in that run and in
every run after it: never a new play "today" copied to the other side."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from tests.harness import until
from tests.test_link_plex_serializd import link_config
from tests.test_plex_unlanded_writes import Minutes, Rig
from tests.test_unnamed_items import BCS, plex_with_two_shows
from watchbridge import readers
from watchbridge.config import load_config
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.readers.plex import SERVICE, WRITTEN, Written, written_back
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    monkeypatch.setitem(readers.READERS, "serializd", "tests.linkrig_serializd")
    plex, serializd = plex_with_two_shows(start_fake)
    clock = Minutes()
    plex.clock = clock
    monkeypatch.setattr(serializd, "date_clock", clock)
    path = link_config(tmp_path, plex, serializd)
    config = load_config(path, {})
    runtime = build_runtime(config, clock=clock)
    runtime.open()
    worker = DeliveryWorker(make_targets, config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    try:
        yield Rig(plex, serializd, clock, path, runtime, worker)
    finally:
        for target in worker.targets.values():
            await target.aclose()
        runtime.close()


LISTING = "GET /library/sections/{key}/all"
HISTORY = "GET /status/sessions/history/all"


async def retried_while_a_run_reads(rig: Rig, held: str) -> int:
    """S1E2 logged on Serializd; the link's scrobble of it in Plex loses its answer (it did
    not land): the row waits. Its retry, 25 minutes on, is delivered while a link run waits
    for Plex's answer to `held`. What that run queued."""
    await rig.run()
    rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.plex.drop_next(1, "/:/scrobble")
    assert await rig.run() == 1
    assert rig.plex.user_state("302") == {}

    rig.at(25)
    method, _, path = held.partition(" ")
    asked = rig.plex.count(method, path)
    released = rig.plex.hold_next(held)
    run = asyncio.create_task(rig.run(deliver=False))
    try:
        await until(lambda: rig.plex.count(method, path) > asked)
        await rig.drain()  # the retry (the service's worker, beside the run)
        assert rig.plex.user_state("302")["viewCount"] == 1
        assert not run.done()
    finally:
        released.set()
    return await run


async def played_once_in_plex_and_the_users_entry_kept(rig: Rig, queued: list[int]) -> None:
    """The runs after: nothing copied or removed either way, S1E2 played once in Plex, and
    the deliverer's record of its two tries kept, the answer in."""
    await rig.drain()
    for minutes in (60, 90, 24 * 60):
        rig.at(minutes)
        queued.append(await rig.run())
    assert [text for _, text in rig.s1e2_entries()] == ["the user's own"]
    assert len(rig.serializd.diary()) == 13
    assert len(rig.plex.history_of("302")) == 1
    assert queued == [0, 0, 0, 0]
    (written,) = [
        w
        for w in rig.runtime.store.mirror_get(SERVICE, "alex", WRITTEN).values()
        if w["rating_key"] == "302"
    ]
    assert (len(written["attempts"]), written["pending"]) == (2, False)


async def test_a_retry_scrobbled_while_a_run_reads_plex_history_is_kept_as_written(
    rig: Rig,
) -> None:
    # The run's reader loaded what we wrote before the retry, and wrote it all back after:
    # the retry's try and answer were lost. The next run read the retry's history row as the
    # user watching S1E2 today (a second diary entry), and the first try as a play beyond
    # Plex's view count (an unwatch: the user's own entry removed from Serializd).
    queued = [await retried_while_a_run_reads(rig, HISTORY)]
    await played_once_in_plex_and_the_users_entry_kept(rig, queued)


async def test_a_retry_scrobbled_while_a_run_lists_plex_is_read_as_our_echo(rig: Rig) -> None:
    # The retry lands between the listing and the history read: that run read its history
    # row as the user watching S1E2 today, and copied it to Serializd as a second entry.
    queued = [await retried_while_a_run_reads(rig, LISTING)]
    await played_once_in_plex_and_the_users_entry_kept(rig, queued)


def test_a_read_writes_back_the_records_it_changed_and_never_over_a_newer_one() -> None:
    item, at = "episode:tmdb:60059:s1e2", 1709323200.0
    tried = Written("302", item, at, (1000.0,), pending=True, row=13)
    retried = replace(tried, attempts=(1000.0, 2500.0), pending=False)  # the deliverer's
    lost = Written("402", item, at, (1000.0,), pending=True, row=13)
    untouched = Written("301", "episode:tmdb:60059:s1e1", at, (900.0,))
    carried = Written("502", item, at, (800.0,))  # a write to the server read before
    scrobbled = Written("602", item, at, (2400.0,), pending=True, row=14)
    loaded = {"302": tried, "402": lost, "301": untouched}
    learnt = {
        **loaded,
        "302": replace(tried, pending=False),  # landed, the read found
        "402": replace(lost, pending=False, unlanded=True),
        "502": carried,
        "602": replace(scrobbled, attempts=()),  # (what the read would make of it)
    }
    stored = {"302": retried, "402": lost, "301": untouched, "602": scrobbled}

    assert written_back(loaded, learnt, stored) == {"402": learnt["402"], "502": carried}
