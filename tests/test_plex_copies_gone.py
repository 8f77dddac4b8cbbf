"""A title in two libraries (an HD and a 4K copy) has two ratingKeys, and the link writes a play
or a rating to each. A copy deleted from Plex after the link read the libraries answers 404:
it is skipped (the log says so once), and the copy left is written still. With no copy left,
the row waits for the libraries' next read, as before."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.test_plex_unlanded_writes import Rig, plex_serializd_rig
from tests.test_unnamed_items import BCS

pytestmark = pytest.mark.anyio

S1E2_HD, S1E2_4K = "302", "402"
GONE = "Plex has no copy {} any more (it left the library)"


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch) as made:
        yield made


async def rated_on_serializd_with_a_4k_copy(rig: Rig) -> None:
    """S1E2 sits in a 4K library too; the link reads both. The user logs S1E2 on Serializd,
    rated 8: the link's next run queues its play and its rating for Plex, not delivered yet."""
    rig.plex.add_section("3", "TV 4K", "show")
    rig.plex.add_show(
        "40", "Better Call Saul", 2015, ["tmdb://60059", "tvdb://273181"], section="3"
    )
    rig.plex.add_episode(S1E2_4K, "40", 1, 2)
    await rig.run()
    keys = rig.runtime.store.mirror_get("plex", "alex", "keys")
    (copies,) = [v["rating_keys"] for v in keys.values() if S1E2_4K in v["rating_keys"]]
    assert copies == [S1E2_HD, S1E2_4K]  # the HD copy is written first
    rig.serializd.log_entry(None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", rating=8)
    rig.at(30)
    assert await rig.run(deliver=False) == 2  # the play and the rating


def s1e2_entries(rig: Rig) -> list[int]:
    return [r.id for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 2)]


async def test_a_play_and_a_rating_reach_the_copy_left_when_one_has_left_the_library(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rated_on_serializd_with_a_4k_copy(rig)
    rig.plex.delete_item(S1E2_HD)  # after the read, before the deliveries
    with caplog.at_level(logging.INFO, "watchbridge.deliver.plex"):
        await rig.drain()
    assert rig.plex.user_state(S1E2_4K)["viewCount"] == 1
    assert rig.plex.user_state(S1E2_4K)["userRating"] == 8.0
    assert caplog.text.count(GONE.format(S1E2_HD)) == 2  # once for the play, once the rating
    written = rig.runtime.store.mirror_get("plex", "alex", "written").values()
    assert [w["rating_key"] for w in written] == [S1E2_4K]  # none left pending for the HD one
    assert rig.runtime.store.outbox_counts().get("pending", 0) == 0
    queued = []
    for minutes in (60, 120, 24 * 60):
        rig.at(minutes)
        queued.append(await rig.run())

    assert queued == [0, 0, 0]
    assert rig.plex.user_state(S1E2_4K)["viewCount"] == 1  # written once
    assert len(rig.plex.history_of(S1E2_4K)) == 1
    assert len(s1e2_entries(rig)) == 1  # the user's, not copied back
    assert caplog.text.count(GONE.format(S1E2_HD)) == 2


async def test_a_play_and_a_rating_of_a_title_with_no_copy_left_wait_for_the_next_read(
    rig: Rig,
) -> None:
    # Unchanged by the skipping of a gone copy: both copies deleted, nothing is written and
    # the rows wait an hour (the title gone from Plex, or back under a new ratingKey).
    await rated_on_serializd_with_a_4k_copy(rig)
    rig.plex.delete_item(S1E2_HD)
    rig.plex.delete_item(S1E2_4K)
    await rig.drain()

    waiting = rig.runtime.store.db.execute(
        "SELECT action, last_error FROM outbox WHERE status = 'pending' ORDER BY action"
    ).fetchall()
    gone = f"Plex: marking watched: the server has no item {S1E2_HD} (it left the library?)"
    # (The rating waits behind the play of its title.)
    assert [(action, error) for action, error in waiting] == [("play", gone), ("rating", None)]
    assert rig.plex.user_state(S1E2_HD) == rig.plex.user_state(S1E2_4K) == {}
    assert rig.runtime.store.mirror_get("plex", "alex", "written") == {}
