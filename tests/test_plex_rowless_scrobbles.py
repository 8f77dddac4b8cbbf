"""Plex servers since PMS 1.40.0.7998 write no history row when an item is marked played
(python-plexapi PR #1366 quoting Plex's release note; its tests against a real server find
no history after `markPlayed()`, and `viewCount` 1): our scrobble makes none there. Every
history row is then the user's own viewing, and whether our scrobble landed shows in the
item's `lastViewedAt` alone. Older servers (and unknown versions) keep the echo window: a row
near a scrobble of ours is taken for its own (the side of not duplicating)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.plex import MODERN_VERSION, OLD_VERSION
from tests.test_plex_unlanded_writes import Rig, plex_trakt_rig

pytestmark = pytest.mark.anyio

S1E2 = "302"  # Better Call Saul S1E2 in the fake Plex
LOGGED = "2024-03-01T20:00:00.000Z"  # the user's own Trakt play the link writes to Plex


@contextlib.asynccontextmanager
async def rig_on(tmp_path: Any, start_fake: Any, version: str) -> AsyncIterator[Rig]:
    async with plex_trakt_rig(tmp_path, start_fake) as rig:
        rig.plex.version = version
        await rig.run()
        yield rig


def s1e2_plays(rig: Rig) -> list[str]:
    s1e2 = rig.trakt.shows[1].episode(1, 2)
    return sorted(str(h.watched_at)[:10] for h in rig.trakt.history() if h.item is s1e2)


def logged_on_trakt(rig: Rig) -> None:
    rig.trakt.log_play(rig.trakt.shows[1].episode(1, 2), LOGGED)


async def runs_after(rig: Rig, start: float) -> list[int]:
    queued = []
    for minutes in (30, 60, 90, 24 * 60):
        rig.at(start + minutes)
        queued.append(await rig.run())
    return queued


def today(rig: Rig) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(rig.clock()))


async def test_our_write_to_a_current_server_is_not_copied_back(
    tmp_path: Any, start_fake: Any
) -> None:
    async with rig_on(tmp_path, start_fake, MODERN_VERSION) as rig:
        logged_on_trakt(rig)
        assert await rig.run() == 1
        assert rig.plex.user_state(S1E2)["viewCount"] == 1
        assert rig.plex.history_of(S1E2) == []  # a current server writes no row for it

        assert await runs_after(rig, 0) == [0, 0, 0, 0]
        assert s1e2_plays(rig) == ["2024-03-01"]
        assert rig.plex.user_state(S1E2)["viewCount"] == 1
        assert rig.dead_letters() == []


# The link's scrobble is lost before Plex did anything; the user then watches S1E2 in Plex
# themselves, 3 or 20 minutes after that try, before the row is tried again. On a current
# server that view's row can only be theirs: it is copied to Trakt, once, and the retry
# writes nothing (Plex shows the item watched since the play).
@pytest.mark.parametrize("after", [3, 20])
async def test_a_users_view_after_a_failed_try_on_a_current_server_is_copied_once(
    tmp_path: Any, start_fake: Any, after: int
) -> None:
    async with rig_on(tmp_path, start_fake, MODERN_VERSION) as rig:
        logged_on_trakt(rig)
        rig.plex.drop_next(1, "/:/scrobble")  # lost on its way: Plex did nothing
        assert await rig.run() == 1
        assert rig.plex.user_state(S1E2) == {}
        rig.at(after)
        rig.plex.watch(S1E2, rig.clock())  # the user's own viewing, with its history row
        viewed = today(rig)
        rig.at(25)
        await rig.drain()  # the retry
        queued = await runs_after(rig, 25)

        assert s1e2_plays(rig) == ["2024-03-01", viewed]
        assert rig.plex.user_state(S1E2)["viewCount"] == 1  # the user's: not written again
        assert rig.dead_letters() == []
        assert queued[1:] == [0, 0, 0]


# Our scrobble lands (no row on a current server); the user watches S1E2 in Plex 3 minutes
# later: their row is no echo of ours, and is copied.
async def test_a_users_view_soon_after_our_write_on_a_current_server_is_copied_once(
    tmp_path: Any, start_fake: Any
) -> None:
    async with rig_on(tmp_path, start_fake, MODERN_VERSION) as rig:
        logged_on_trakt(rig)
        assert await rig.run() == 1
        rig.at(3)
        rig.plex.watch(S1E2, rig.clock())
        viewed = today(rig)
        queued = await runs_after(rig, 3)

        assert s1e2_plays(rig) == ["2024-03-01", viewed]
        assert rig.plex.user_state(S1E2)["viewCount"] == 2
        assert queued[1:] == [0, 0, 0]


# The same on a server before 1.40: a row 3 minutes after a try of ours may be that try's own
# (its answer lost after it landed), so it is taken for it, as before: not copied. 20
# minutes after, it is the user's.
@pytest.mark.parametrize(("after", "copied"), [(3, False), (20, True)])
async def test_a_view_after_a_failed_try_on_an_older_server_keeps_the_echo_window(
    tmp_path: Any, start_fake: Any, after: int, copied: bool
) -> None:
    async with rig_on(tmp_path, start_fake, OLD_VERSION) as rig:
        logged_on_trakt(rig)
        rig.plex.drop_next(1, "/:/scrobble")
        assert await rig.run() == 1
        rig.at(after)
        rig.plex.watch(S1E2, rig.clock())
        viewed = today(rig)
        rig.at(25)
        await rig.drain()
        await runs_after(rig, 25)

        assert s1e2_plays(rig) == ["2024-03-01", viewed] if copied else ["2024-03-01"]
        assert rig.plex.user_state(S1E2)["viewCount"] == 1
        assert rig.dead_letters() == []


# A try lost on its way (Plex did nothing), or whose answer was lost after Plex marked the
# item watched: the retry scrobbles once in all, and the row ends delivered.
@pytest.mark.parametrize("landed", [False, True])
async def test_a_failed_try_retried_on_a_current_server_lands_once(
    tmp_path: Any, start_fake: Any, landed: bool
) -> None:
    async with rig_on(tmp_path, start_fake, MODERN_VERSION) as rig:
        logged_on_trakt(rig)
        rig.plex.drop_next(1, "/:/scrobble", after_handler=landed)
        assert await rig.run() == 1
        rig.at(25)
        await rig.drain()
        queued = await runs_after(rig, 25)

        assert rig.plex.user_state(S1E2)["viewCount"] == 1
        assert rig.plex.count("GET", "/:/scrobble") == 2 - landed
        assert rig.dead_letters() == []
        assert rig.runtime.store.outbox_counts().get("pending", 0) == 0
        assert s1e2_plays(rig) == ["2024-03-01"]
        assert queued == [0, 0, 0, 0]


# A play written while the server was older made a history row; the server is then updated.
# That row stays the write's echo (the rule goes with each write): never copied as a play of
# the day it was written.
async def test_a_write_made_before_the_server_was_updated_keeps_its_echo(
    tmp_path: Any, start_fake: Any
) -> None:
    async with rig_on(tmp_path, start_fake, OLD_VERSION) as rig:
        logged_on_trakt(rig)
        assert await rig.run() == 1
        assert len(rig.plex.history_of(S1E2)) == 1  # an older server's row for our write
        rig.plex.version = MODERN_VERSION
        queued = await runs_after(rig, 0)

        assert s1e2_plays(rig) == ["2024-03-01"]
        assert queued == [0, 0, 0, 0]


# A server whose version says its scrobbles write no row, but whose scrobble writes one all the
# same (a build unlike its release notes; the reference holds it unconfirmed): that row, at the
# very moment of our write, is still its echo, never a second play "today" on Trakt.
async def test_a_row_at_our_write_on_a_server_said_to_write_none_is_its_echo(
    tmp_path: Any, start_fake: Any
) -> None:
    async with rig_on(tmp_path, start_fake, MODERN_VERSION) as rig:
        rig.plex.scrobble_rows = True
        logged_on_trakt(rig)
        assert await rig.run() == 1
        assert len(rig.plex.history_of(S1E2)) == 1

        assert await runs_after(rig, 0) == [0, 0, 0, 0]
        assert s1e2_plays(rig) == ["2024-03-01"]
        assert rig.plex.user_state(S1E2)["viewCount"] == 1


# The same with the write's answer lost after it landed: its retry finds the row at its try
# and writes nothing again.
async def test_a_lost_answer_on_a_server_said_to_write_no_row_that_wrote_one_lands_once(
    tmp_path: Any, start_fake: Any
) -> None:
    async with rig_on(tmp_path, start_fake, MODERN_VERSION) as rig:
        rig.plex.scrobble_rows = True
        logged_on_trakt(rig)
        rig.plex.drop_next(1, "/:/scrobble", after_handler=True)
        assert await rig.run() == 1
        rig.at(25)
        await rig.drain()
        queued = await runs_after(rig, 25)

        assert rig.plex.count("GET", "/:/scrobble") == 1
        assert rig.plex.user_state(S1E2)["viewCount"] == 1
        assert s1e2_plays(rig) == ["2024-03-01"]
        assert queued == [0, 0, 0, 0]


# Whether the server writes rows is asked of `/identity` at most once a delivery round (the
# round asks it anyway, for the server's machine id), also of one whose answer names no version.
@pytest.mark.parametrize("version", [MODERN_VERSION, ""], ids=["pms-1.41", "no-version"])
async def test_the_servers_version_costs_no_request_per_play(
    tmp_path: Any, start_fake: Any, version: str
) -> None:
    async with rig_on(tmp_path, start_fake, version) as rig:
        for number in range(3, 7):
            rig.plex.add_episode(str(300 + number), "30", 1, number)
        rig.at(1)
        await rig.run()  # reads the new episodes
        for number in range(2, 7):
            rig.trakt.log_play(rig.trakt.shows[1].episode(1, number), LOGGED)
        asked = rig.plex.count("GET", "/identity")
        rig.at(2)
        assert await rig.run(deliver=False) == 5
        asked_by_the_run = rig.plex.count("GET", "/identity") - asked

        await rig.drain()

        assert rig.plex.count("GET", "/:/scrobble") == 5
        delivery_asked = rig.plex.count("GET", "/identity") - asked - asked_by_the_run
        assert delivery_asked == 1
