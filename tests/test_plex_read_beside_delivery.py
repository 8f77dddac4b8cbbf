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
from tests.test_plex_unlanded_writes import Rig, plex_serializd_rig
from tests.test_unnamed_items import BCS
from watchbridge.readers.plex import SERVICE, WRITTEN, ReadBack, Written, read_back, written_back

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch) as made:
        yield made


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


async def test_a_play_unwatched_in_plex_while_a_run_reads_it_is_written_when_logged_again(
    rig: Rig,
) -> None:
    # S1E2 logged on Serializd and played in Plex by the link; the user deletes the entry and
    # its removal waits (Plex down). They log S1E2 again, on the day they watched it. The next
    # run reads Plex while the removal's retry unwatches S1E2 there, and queues the new play.
    # That run wrote back its listing, S1E2 watched: the play was skipped as "already watched
    # in Plex", and the run after read S1E2 unwatched and removed the user's entry.
    await rig.run()
    first = rig.serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z")
    assert await rig.run() == 1
    assert rig.plex.user_state("302")["viewCount"] == 1
    rig.serializd.delete_entry(first)
    rig.at(30)
    rig.plex.fail_next(5, 503, route="/:/unscrobble")
    assert await rig.run() == 1  # the removal, which waits
    rig.plex.clear_knobs()
    assert rig.plex.user_state("302")["viewCount"] == 1
    rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-02-10T20:00:00.000Z", review_text="the user's own"
    )

    rig.at(60)
    method, _, path = HISTORY.partition(" ")
    asked = rig.plex.count(method, path)
    released = rig.plex.hold_next(HISTORY)
    run = asyncio.create_task(rig.run(deliver=False))
    try:
        await until(lambda: rig.plex.count(method, path) > asked)
        await rig.drain()  # the removal's retry (the service's worker, beside the run)
        assert "viewCount" not in rig.plex.user_state("302")
        assert not run.done()
    finally:
        released.set()
    queued = [await run]
    await rig.drain()
    for minutes in (90, 120, 24 * 60):
        rig.at(minutes)
        queued.append(await rig.run())

    assert [text for _, text in rig.s1e2_entries()] == ["the user's own"]
    assert rig.plex.user_state("302")["viewCount"] == 1
    assert queued == [1, 0, 0, 0]


def test_a_read_writes_back_the_keys_and_plays_it_changed_and_leaves_the_deliverers() -> None:
    watched = {"rating_keys": ["302"], "watched_at": 1709323200.0}
    unwatched = {**watched, "watched_at": None}  # the deliverer's unscrobble, while we read
    seen = {"rating_keys": ["301"], "watched_at": 1709000000.0}
    loaded = {
        "s1e1": seen,
        "s1e2": watched,
        "s1e3": {"rating_keys": ["303"], "watched_at": None},
        "s1e4": {"rating_keys": ["304"], "watched_at": None},
        "s1e5": watched,
    }
    read = {
        "s1e1": seen,  # as it was: not written
        "s1e2": watched,  # the listing predates the unscrobble
        "s1e3": {"rating_keys": ["303"], "watched_at": 1709400000.0},  # watched since
        "s1e6": {"rating_keys": ["306"], "watched_at": None},  # new in the library
        # s1e4 and s1e5 left the library
    }
    stored = {**loaded, "s1e2": unwatched, "s1e5": unwatched}

    assert read_back(loaded, read, stored) == ReadBack(
        {"s1e3": read["s1e3"], "s1e6": read["s1e6"]}, ["s1e4"]
    )

    play = {"item": "episode:tmdb:60059:s1e2", "at": 1709323200.0, "rating_key": "302"}
    other = {**play, "item": "episode:tmdb:60059:s1e1", "rating_key": "301"}
    loaded_plays = {"history:7": play, "history:8": other}
    stored_plays = {"history:8": other}  # the deliverer removed history:7
    read_plays = {**loaded_plays, "history:9": other}

    assert read_back(loaded_plays, read_plays, stored_plays) == ReadBack({"history:9": other}, [])
