"""What the user does in Plex while a link's run reads the other side: the run read Plex first,
then Serializd (paced at 2 requests a second: minutes on a first or full read of a big diary),
and queues its writes only then. A change made in Plex in that gap is one the plan never saw:
a write planned from the older read must not undo it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.serializd import iso
from tests.test_plex_unlanded_writes import Rig, plex_serializd_rig
from tests.test_unnamed_items import BCS

pytestmark = pytest.mark.anyio

S1E1 = "301"  # Better Call Saul S1E1 in Plex: watched and rated 8 by the user, 50 hours ago
SERIALIZD_DIARY = "GET /api/user/{username}/diary"


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch) as made:
        yield made


def s1e1_ratings(rig: Rig) -> list[int]:
    """S1E1's ratings on Serializd (0-10 half stars), newest row last."""
    rows = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]
    return [r.rating for r in sorted(rows, key=lambda r: (r.date_added, r.id)) if r.rating]


def while_serializd_is_read(rig: Rig, minutes: float, change: Any) -> list[float]:
    """`change(now)` made at `minutes`, while the next run reads Serializd (after it read
    Plex); the run then queues its writes 5 minutes later (Serializd's pace). When it was."""
    made: list[float] = []

    def hook(answer: Any) -> None:
        rig.at(minutes)
        made.append(rig.clock())
        change(made[0])
        rig.at(minutes + 5)

    rig.serializd.reshape_next(1, hook, route=SERIALIZD_DIARY)
    return made


async def test_a_rating_given_in_plex_while_the_run_reads_serializd_is_not_overwritten(
    rig: Rig,
) -> None:
    # The first run copies S1E1's rating (8) to Serializd. The user then rates S1E1 6 on
    # Serializd. The next run reads Plex at minute 30 (8 there, unchanged) and plans to set
    # Plex to Serializd's 6; while it reads Serializd, the user rates S1E1 9 in Plex (minute
    # 35). That 9 is the user's latest word: the 6, planned from an older read, must not
    # overwrite it.
    await rig.run()
    assert s1e1_ratings(rig) == [8]
    rig.serializd.log_entry(None, BCS, 1, 1, rating=6, is_log=False)
    rig.at(30)
    rated = while_serializd_is_read(rig, 35, lambda now: rig.plex.rate(S1E1, 9.0, now))
    assert await rig.run(deliver=False) == 1
    assert rated  # the rating came between the run's read of Plex and its writes
    await rig.drain()
    assert rig.plex.user_state(S1E1)["userRating"] == 9.0  # the user's rating stands
    assert rig.plex.count("PUT", "/:/rate") == 0

    # The next runs see the 9 in Plex, newer than Serializd's 6: it is copied there.
    queued = []
    for minutes in (60, 90, 24 * 60):
        rig.at(minutes)
        queued.append(await rig.run())
    assert rig.plex.user_state(S1E1)["userRating"] == 9.0
    assert s1e1_ratings(rig)[-1] == 9
    assert queued == [1, 0, 0]


async def test_a_runs_ratings_ask_plex_for_the_users_ratings_together(rig: Rig) -> None:
    # Two ratings given on Serializd: the link's rows for Plex ask, before they write, what
    # Plex holds of both in one request (a first run may queue thousands of ratings).
    await rig.run()
    rig.serializd.log_entry(None, BCS, 1, 1, rating=6, is_log=False)
    rig.serializd.log_entry(None, BCS, 1, 2, rating=4, is_log=False)
    rig.at(30)
    assert await rig.run(deliver=False) == 2
    asked = rig.plex.count("GET", "/library/metadata/{key}")
    await rig.drain()
    assert rig.plex.count("GET", "/library/metadata/{key}") - asked == 1
    assert rig.plex.user_state(S1E1)["userRating"] == 6.0
    assert rig.plex.user_state("302")["userRating"] == 4.0


async def test_a_rating_of_ours_that_lands_while_the_run_reads_serializd_is_no_rating_of_the_users(
    rig: Rig,
) -> None:
    # The user rates S1E1 6 on Serializd; Plex fails the link's write of it (a 503: the row
    # waits for its retry). The user then rates it 7 there. The next run reads Plex at minute
    # 60 (still 8); while it reads Serializd, the retry sets Plex to 6 (minute 62), and the
    # run queues the 7. That 6 is ours, not a rating the user gave in Plex: the 7 goes out.
    await rig.run()
    rig.serializd.log_entry(None, BCS, 1, 1, rating=6, is_log=False, date_added=iso(rig.clock()))
    rig.at(30)
    rig.plex.fail_next(10, 503, route="/:/rate")
    assert await rig.run() == 1
    rig.plex.clear_knobs()  # Plex is back
    assert rig.plex.user_state(S1E1)["userRating"] == 8.0
    rig.at(40)
    rig.serializd.log_entry(None, BCS, 1, 1, rating=7, is_log=False, date_added=iso(rig.clock()))
    rig.at(60)
    reading, read = threading.Event(), threading.Event()

    def retry_while_serializd_is_read(answer: Any) -> None:
        rig.at(62)
        reading.set()
        assert read.wait(60)
        rig.at(65)

    rig.serializd.reshape_next(1, retry_while_serializd_is_read, route=SERIALIZD_DIARY)
    run = asyncio.create_task(rig.run(deliver=False))
    while not reading.is_set():
        await asyncio.sleep(0.05)
    await rig.drain()  # the retry
    assert rig.plex.user_state(S1E1)["userRating"] == 6.0
    read.set()
    assert await run == 1
    await rig.drain()
    assert rig.plex.user_state(S1E1)["userRating"] == 7.0  # the user's latest rating

    queued = []
    for minutes in (90, 120, 24 * 60):
        rig.at(minutes)
        queued.append(await rig.run())
    assert rig.plex.user_state(S1E1)["userRating"] == 7.0
    assert s1e1_ratings(rig)[-1] == 7
    assert queued == [0, 0, 0]
