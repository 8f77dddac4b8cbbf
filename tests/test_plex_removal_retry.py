"""A play the user made in Plex, removed by the link because the user took it back on the other
side, when Plex fails the unwatch (a 503: the row waits for its retry). The retry finishes the
removal: Plex ends unwatched (the item's last play gone), its history row deleted once, and the
play is never read back from Plex and copied to the other side again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from tests.test_plex_unlanded_writes import Rig, plex_serializd_rig
from tests.test_unnamed_items import BCS

pytestmark = pytest.mark.anyio

HOUR = 3600.0
S1E1 = "301"  # Better Call Saul S1E1 in Plex, watched by the user 50 hours ago
DELETE_HISTORY = ("DELETE", "/status/sessions/history/{id}")
UNWATCH = "/:/unscrobble"


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    # Two plays of twelve removed at once are above the default share the guard holds. Plays
    # only: the entries the user deletes on Serializd carry the rating the link copied there
    # from Plex (S1E1's 8), whose removal from Plex (1 of 1 ratings) the guard would hold.
    async with plex_serializd_rig(
        tmp_path, start_fake, monkeypatch, ", max_removal_share: 0.5, kinds: [history]"
    ) as made:
        yield made


def s1e1_entries(rig: Rig) -> list[int]:
    return [r.id for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]


async def removed_on_serializd_while_plex_fails(rig: Rig, route: str = UNWATCH) -> int:
    """The link's first run copies the user's plays in Plex to Serializd; the user deletes
    S1E1's entries there. The link removes its plays from Plex, and Plex answers `route` with
    a 503 (every try the HTTP policy makes): the removal waits. What that run queued."""
    await rig.run()
    entries = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]
    assert entries
    for entry in entries:
        rig.serializd.delete_entry(entry)
    rig.at(30)
    rig.plex.fail_next(10, 503, route=route)
    queued = await rig.run()
    rig.plex.clear_knobs()  # Plex is back
    return queued


async def later_runs(rig: Rig, queued: list[int]) -> None:
    await rig.drain()
    for minutes in (90, 120, 24 * 60):
        rig.at(minutes)
        queued.append(await rig.run())


@pytest.mark.parametrize("history", [True, False], ids=["history-row", "marked-watched"])
@pytest.mark.parametrize("read_first", [False, True], ids=["retried", "read-before-retry"])
async def test_a_users_play_whose_unwatch_failed_is_removed_from_plex_by_the_retry(
    rig: Rig, history: bool, read_first: bool
) -> None:
    # `history`: S1E1's play in Plex is a history row; or the user marked it watched, which
    # leaves none. `read_first`: a link run reads Plex before the removal's retry.
    if not history:
        del rig.plex.history[max(rig.plex.history)]  # S1E1's row (the last one made)
        assert rig.plex.history_of(S1E1) == []
    assert await removed_on_serializd_while_plex_fails(rig) == 1
    assert rig.plex.user_state(S1E1).get("viewCount") == 1  # not unwatched yet
    rig.at(60)
    queued = [await rig.run(deliver=False)] if read_first else []
    await rig.drain()  # the removal's retry
    assert "viewCount" not in rig.plex.user_state(S1E1)
    await later_runs(rig, queued)

    assert "viewCount" not in rig.plex.user_state(S1E1)
    assert rig.plex.history_of(S1E1) == []
    assert s1e1_entries(rig) == []  # not copied back
    assert len(rig.serializd.diary()) == 10  # Breaking Bad's, untouched
    assert rig.plex.count(*DELETE_HISTORY) == (1 if history else 0)
    assert set(queued) == {0}


async def test_the_last_of_two_plays_removed_unwatches_plex_after_a_failed_try(rig: Rig) -> None:
    # S1E1 watched twice in Plex: two entries on Serializd, both deleted. The first removal
    # leaves S1E1 watched (the other play remains); the second unwatches it, and fails.
    rig.plex.watch(S1E1, rig.clock() - 30 * HOUR)
    assert await removed_on_serializd_while_plex_fails(rig) == 2
    assert rig.plex.user_state(S1E1).get("viewCount") == 2  # not unwatched yet
    rig.at(60)
    await rig.drain()
    queued: list[int] = []
    await later_runs(rig, queued)

    assert "viewCount" not in rig.plex.user_state(S1E1)
    assert rig.plex.history_of(S1E1) == []
    assert s1e1_entries(rig) == []
    assert rig.plex.count(*DELETE_HISTORY) == 2  # each row deleted once
    assert set(queued) == {0}


@pytest.mark.parametrize("read_first", [False, True], ids=["retried", "read-before-retry"])
async def test_a_users_play_whose_history_row_plex_failed_to_delete_is_removed_by_the_retry(
    rig: Rig, read_first: bool
) -> None:
    # Plex unwatches S1E1, then fails the deletion of its history row.
    assert await removed_on_serializd_while_plex_fails(rig, " ".join(DELETE_HISTORY)) == 1
    assert "viewCount" not in rig.plex.user_state(S1E1)
    rig.at(60)
    queued = [await rig.run(deliver=False)] if read_first else []
    await rig.drain()
    await later_runs(rig, queued)

    assert "viewCount" not in rig.plex.user_state(S1E1)
    assert rig.plex.history_of(S1E1) == []  # deleted, as the removal asked
    assert s1e1_entries(rig) == []
    assert len(rig.serializd.diary()) == 10
    assert set(queued) == {0}


@pytest.mark.parametrize("read_first", [False, True], ids=["retried", "read-before-retry"])
async def test_a_retry_of_a_removal_leaves_alone_a_view_the_user_made_since_its_first_try(
    rig: Rig, read_first: bool
) -> None:
    # Plex unwatches S1E1, then fails the deletion of its history row. Before the retry, the
    # user watches S1E1 again in Plex: that view is theirs, and the retry must not unwatch it.
    assert await removed_on_serializd_while_plex_fails(rig, " ".join(DELETE_HISTORY)) == 1
    assert "viewCount" not in rig.plex.user_state(S1E1)
    rig.at(45)
    rig.plex.watch(S1E1, rig.clock())
    rig.at(60)
    queued = [await rig.run(deliver=False)] if read_first else []
    await rig.drain()
    assert rig.plex.user_state(S1E1)["viewCount"] == 1  # the user's view stands
    await later_runs(rig, queued)

    assert rig.plex.user_state(S1E1)["viewCount"] == 1
    assert len(rig.plex.history_of(S1E1)) == 1  # the removed play's row deleted, theirs kept
    # Serializd still shows S1E1 ticked (undated), a tick read before the new view: that
    # view is a viewing of its own, copied once.
    assert len(s1e1_entries(rig)) == 1
    assert len(rig.serializd.diary()) == 11
    assert sorted(queued) == [0] * (len(queued) - 1) + [1], queued


@pytest.mark.parametrize("read_first", [False, True], ids=["delivered", "read-before-delivery"])
async def test_a_removal_leaves_alone_a_view_the_user_made_after_the_run_that_planned_it(
    rig: Rig, caplog: pytest.LogCaptureFixture, read_first: bool
) -> None:
    # The user deletes S1E1's entries on Serializd; the link plans the removal of its play
    # from Plex. Before the removal's first try, the user watches S1E1 again in Plex: that
    # view is theirs, and the removal must not unwatch it. `read_first`: a link run reads
    # Plex before the removal goes (it finds the new view: one of two plays is removed).
    await rig.run()
    for entry in [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]:
        rig.serializd.delete_entry(entry)
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    rig.at(45)
    rewatched_at = rig.clock()
    rig.plex.watch(S1E1, rewatched_at)
    rig.at(60)
    queued = [await rig.run(deliver=False)] if read_first else []
    with caplog.at_level(logging.INFO, "watchbridge.deliver.plex"):
        await rig.drain()
    assert rig.plex.user_state(S1E1)["viewCount"] == 2  # the user's view stands
    assert rig.plex.count("GET", UNWATCH) == 0
    # Delivered first, the removal is dropped (one log line) and the play left in Plex;
    # after a read, the play removed is one of two, its history row deleted.
    assert rig.plex.count(*DELETE_HISTORY) == (1 if read_first else 0)
    dropped = [r for r in caplog.records if "watched there again" in r.getMessage()]
    assert len(dropped) == (0 if read_first else 1)
    await later_runs(rig, queued)

    # The next runs see S1E1 watched in Plex: they neither remove the play again nor copy it
    # back; the new view is copied to Serializd, at its own time.
    assert rig.plex.user_state(S1E1)["viewCount"] == 2
    assert rig.plex.count("GET", UNWATCH) == 0
    assert rig.plex.count(*DELETE_HISTORY) == (1 if read_first else 0)
    (entry,) = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]
    assert abs(datetime.fromisoformat(entry.watched_at).timestamp() - rewatched_at) < 60
    assert len(rig.serializd.diary()) == 11
    assert queued == ([1, 0, 0, 0] if read_first else [1, 0, 0])
    assert rig.runtime.store.mirror_get("plex", "alex", "unwatching") == {}


async def test_a_dead_removal_discarded_leaves_no_note_of_its_first_try_behind(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One try per delivery: Plex unwatches S1E1, then fails the deletion of its history row,
    # and the removal gives up. Its first try's time is kept for a `deadletters retry`; once
    # the user discards the dead letter, nothing is left of it.
    async with plex_serializd_rig(
        tmp_path,
        start_fake,
        monkeypatch,
        ", kinds: [history]",  # as `rig` says: plays only
        config_extra="delivery: {max_attempts: 1}\n",
    ) as rig:
        assert await removed_on_serializd_while_plex_fails(rig, " ".join(DELETE_HISTORY)) == 1
        (dead,) = rig.dead_letters()
        store = rig.runtime.store
        assert len(store.mirror_get("plex", "alex", "unwatching")) == 1
        rig.at(60)
        await rig.run()  # a link run and housekeeping leave a dead letter's note alone
        store.prune(rig.clock(), keep_done=0.0, keep_sessions=0.0)
        assert len(store.mirror_get("plex", "alex", "unwatching")) == 1

        assert "1 dead letter(s) discarded" in rig.deadletters("discard", str(dead))
        assert store.mirror_get("plex", "alex", "unwatching") == {}


# --------------------------------------------------------------------------- copies of a title
# A title in two libraries (an HD and a 4K copy) has two ratingKeys; a removal unwatches each.

S1E2_HD, S1E2_4K = "302", "402"


async def test_a_removal_unwatches_the_copies_left_when_one_has_left_the_library(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # The user watched the 4K copy of S1E2 in Plex; the link copies the play to Serializd.
    rig.plex.add_section("3", "TV 4K", "show")
    rig.plex.add_show(
        "40", "Better Call Saul", 2015, ["tmdb://60059", "tvdb://273181"], section="3"
    )
    rig.plex.add_episode(S1E2_4K, "40", 1, 2)
    rig.plex.watch(S1E2_4K, rig.clock() - 20 * HOUR)
    await rig.run()
    (entry,) = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 2)]
    keys = rig.runtime.store.mirror_get("plex", "alex", "keys")
    (copies,) = [v["rating_keys"] for v in keys.values() if S1E2_4K in v["rating_keys"]]
    assert copies == [S1E2_HD, S1E2_4K]  # the HD copy is unwatched first
    # The user deletes the entry on Serializd; the HD copy is deleted from Plex after the
    # link read the libraries, before the removal reaches Plex.
    rig.serializd.delete_entry(entry)
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    rig.plex.delete_item(S1E2_HD)
    with caplog.at_level(logging.INFO, "watchbridge.deliver.plex"):
        await rig.drain()
    assert "viewCount" not in rig.plex.user_state(S1E2_4K)
    assert f"Plex has no copy {S1E2_HD} any more (it left the library)" in caplog.text
    queued: list[int] = []
    await later_runs(rig, queued)

    assert "viewCount" not in rig.plex.user_state(S1E2_4K)
    assert rig.plex.history_of(S1E2_4K) == []
    assert [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 2)] == []
    assert set(queued) == {0}


# --------------------------------------------------------------------------- the run's read of Plex
# A link run reads Plex, then Serializd (paced at 2 requests a second: minutes on a first or
# full read of a big diary), and queues its writes only then.

SERIALIZD_DIARY = "GET /api/user/{username}/diary"


async def test_a_removal_leaves_alone_a_view_the_user_made_after_the_run_read_plex(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # The user deletes S1E1's entries on Serializd. The next run reads Plex at minute 30; while
    # it reads Serializd, the user watches S1E1 again in Plex (minute 35), and the run queues
    # the removal of S1E1's play from Plex at minute 40. That view is theirs: the read that
    # planned the removal never saw it, and the removal must not unwatch it.
    await rig.run()
    for entry in [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]:
        rig.serializd.delete_entry(entry)
    rig.at(30)
    rewatched: list[float] = []

    def rewatch_while_serializd_is_read(answer: Any) -> None:
        rig.at(35)
        rewatched.append(rig.clock())
        rig.plex.watch(S1E1, rewatched[0])
        rig.at(40)  # Serializd's pace: the run queues its writes minutes after it read Plex

    rig.serializd.reshape_next(1, rewatch_while_serializd_is_read, route=SERIALIZD_DIARY)
    assert await rig.run(deliver=False) == 1
    assert rewatched  # the view came between the run's read of Plex and its writes
    with caplog.at_level(logging.INFO, "watchbridge.deliver.plex"):
        await rig.drain()
    assert rig.plex.user_state(S1E1)["viewCount"] == 2  # the user's view stands
    assert rig.plex.count("GET", UNWATCH) == 0
    assert rig.plex.count(*DELETE_HISTORY) == 0
    assert "watched there again" in caplog.text
    queued: list[int] = []
    await later_runs(rig, queued)

    # The next runs see S1E1 watched in Plex: the new view is copied to Serializd, at its time.
    assert rig.plex.user_state(S1E1)["viewCount"] == 2
    assert rig.plex.count("GET", UNWATCH) == 0
    (entry,) = [r for r in rig.serializd.diary() if (r.show_id, r.episode_number) == (BCS, 1)]
    assert abs(datetime.fromisoformat(entry.watched_at).timestamp() - rewatched[0]) < 60
    assert len(rig.serializd.diary()) == 11
    assert queued == [1, 0, 0]
