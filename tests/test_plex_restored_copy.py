"""A backup copy put back over watchbridge.db while a link's play to Plex waited in it: the play
went out after the copy was taken (Plex shows the item watched, with the history row of that
scrobble), and the copy's records of Plex are as old as the copy. The play is neither written
to Plex again nor read back from Plex as a second play "today" and copied to the other side."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.plex import MODERN_VERSION, OLD_VERSION
from tests.harness import put_back
from tests.test_plex_unlanded_writes import Rig, plex_serializd_rig
from tests.test_unnamed_items import BCS
from watchbridge.deliver.worker import DeliveryWorker
from watchbridge.wiring import build_runtime, make_targets

pytestmark = pytest.mark.anyio

S1E2 = "302"
DAY = 24 * 60  # minutes


@pytest.fixture
async def rig(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch) as made:
        yield made


async def put_back_and_started(rig: Rig, copy: Any, folder_copy: Any = None) -> None:
    """The service stopped, the copy copied over its database (none: left as it was), the
    service started again; `folder_copy`: the database copied there as it is while stopped
    (an appdata backup: no `watchbridge backup` stamp in it)."""
    database = rig.runtime.store.path
    for target in rig.worker.targets.values():
        await target.aclose()
    rig.runtime.close()
    if folder_copy is not None:
        shutil.copy(database, folder_copy)
    if copy is not None:
        put_back(copy, database)
    rig.runtime = build_runtime(rig.runtime.config, clock=rig.clock)
    rig.runtime.open()
    rig.worker = DeliveryWorker(make_targets, rig.runtime.config.delivery)
    rig.worker.targets = {t.name: t for t in make_targets(rig.runtime)}


def s1e2_entries(rig: Rig) -> list[tuple[int, str | None]]:
    return [
        (r.id, r.review_text)
        for r in rig.serializd.diary()
        if (r.show_id, r.episode_number) == (BCS, 2)
    ]


# The copy's `plex/written` holds no record of the scrobble made after it was taken: its row,
# marked possibly sent, tells the reader (and the delivery) that a view of S1E2 since the row
# was queued is that scrobble, not a new play "today" nor one still to write.
@pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "delivered-first"])
async def test_a_play_written_to_plex_after_the_backup_is_not_doubled_by_the_copy_put_back(
    rig: Rig, tmp_path: Any, read_first: bool
) -> None:
    # S1E2 logged on Serializd: the link queues its play for Plex; the nightly copy is taken
    # while it waits; the play goes out (Plex marks S1E2 watched now, with a history row) and
    # the link reads it back. Two weeks later the disk dies and the copy is put back.
    # `read_first`: the link's first run after the start reads Plex before the play's row is
    # tried again (Plex shows S1E2 watched since the play's time), or after.
    await rig.run()
    users = rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    copy = tmp_path / "nightly.db"
    rig.runtime.store.backup_to(copy)
    await rig.drain()
    assert rig.plex.user_state(S1E2)["viewCount"] == 1
    rig.at(60)
    assert await rig.run() == 0
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)

    queued = [await rig.run(deliver=False)] if read_first else []
    await rig.drain()  # the copy's row of the play, marked as possibly sent
    for minutes in (30, 60, DAY):
        rig.at(14 * DAY + minutes)
        queued.append(await rig.run())

    assert rig.plex.user_state(S1E2)["viewCount"] == 1  # not written again
    assert len(rig.plex.history_of(S1E2)) == 1
    assert s1e2_entries(rig) == [(users.id, "the user's own")]  # not copied back as new
    # Eleven plays read from Plex at the start, S1E1's rating (an entry of its own on
    # Serializd), and the user's S1E2.
    assert len(rig.serializd.diary()) == 13
    assert set(queued) == {0}


# An appdata backup (the service stopped, the data folder copied as it is) holds no stamp of
# being a copy: put back, its row of the play is not marked possibly sent. Queued before the
# start, it is taken as one all the same (`OutboxItem.links_since`).
@pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "delivered-first"])
async def test_a_play_written_to_plex_after_a_folder_copy_is_not_doubled_by_it_put_back(
    rig: Rig, tmp_path: Any, read_first: bool
) -> None:
    await rig.run()
    users = rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    copy = tmp_path / "appdata.db"
    await put_back_and_started(rig, None, folder_copy=copy)
    await rig.drain()  # the scrobble, made after the copy was taken
    assert rig.plex.user_state(S1E2)["viewCount"] == 1
    rig.at(60)
    assert await rig.run() == 0
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)

    queued = [await rig.run(deliver=False)] if read_first else []
    await rig.drain()  # the copy's row of the play, waiting again
    for minutes in (30, 60, DAY):
        rig.at(14 * DAY + minutes)
        queued.append(await rig.run())

    assert rig.plex.user_state(S1E2)["viewCount"] == 1  # not written again
    assert len(rig.plex.history_of(S1E2)) == 1
    assert s1e2_entries(rig) == [(users.id, "the user's own")]  # not copied back as new
    assert set(queued) == {0}


def s1e2_dates(rig: Rig) -> list[str]:
    return sorted(
        r.watched_at[:10]
        for r in rig.serializd.diary()
        if (r.show_id, r.episode_number) == (BCS, 2)
    )


# The copy's row is tried before any read (or read first), after the user watched S1E2 again
# in Plex: Plex's `lastViewedAt` is that rewatch, and the first view since the row was queued
# is our scrobble. A server since PMS 1.40.0.7998 wrote no history row for our scrobble: the
# rewatch's row is the only one since, and it is the user's, never our write's echo.
@pytest.mark.parametrize("version", [OLD_VERSION, MODERN_VERSION], ids=["pms-1.32", "pms-1.41"])
@pytest.mark.parametrize("read_first", [False, True], ids=["delivered-first", "read-first"])
async def test_a_rewatch_in_plex_before_the_put_back_row_is_tried_is_the_users_own_play(
    rig: Rig, tmp_path: Any, version: str, read_first: bool
) -> None:
    rig.plex.version = version
    await rig.run()
    users = rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    copy = tmp_path / "nightly.db"
    rig.runtime.store.backup_to(copy)
    await rig.drain()  # the scrobble, made after the copy was taken
    rig.at(60)
    assert await rig.run() == 0
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)
    rewatched = rig.clock()
    rig.plex.watch(S1E2, rewatched)  # the user watches S1E2 again, in Plex

    rig.at(14 * DAY + 5)
    if read_first:
        await rig.run(deliver=False)
    await rig.drain()  # the copy's row, possibly sent
    for minutes in (30, 60, DAY):
        rig.at(14 * DAY + minutes)
        await rig.run()

    assert rig.plex.user_state(S1E2)["viewCount"] == 2  # our scrobble and the rewatch
    assert len(rig.plex.history_of(S1E2)) == (2 if version == OLD_VERSION else 1)
    # The user's entry, and the rewatch on its day: our scrobble is not copied back as new.
    assert (users.id, "the user's own") in s1e2_entries(rig)
    rewatch_day = time.strftime("%Y-%m-%d", time.gmtime(rewatched))
    assert s1e2_dates(rig) == sorted(["2024-03-01", rewatch_day])


# The user unwatched S1E2 in Plex after the copy's play went out, and the copy is put back:
# their unwatch is their latest word on it, not undone by the copy's row. Plex keeps the
# scrobble's history row: S1E2 was viewed since the row was queued, and is not now.
@pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "delivered-first"])
async def test_an_unwatch_in_plex_after_the_backup_is_not_undone_by_the_put_back_row(
    rig: Rig, tmp_path: Any, read_first: bool
) -> None:
    await rig.run()
    rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    copy = tmp_path / "nightly.db"
    rig.runtime.store.backup_to(copy)
    await rig.drain()  # the scrobble, made after the copy was taken
    rig.at(60)
    assert await rig.run() == 0
    rig.at(DAY)
    rig.unwatch_in_plex(S1E2)  # the user's word: not watched
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)

    if read_first:
        await rig.run(deliver=False)
    await rig.drain()  # the copy's row of the play, marked as possibly sent
    for minutes in (30, 60, DAY):
        rig.at(14 * DAY + minutes)
        await rig.run()

    assert "viewCount" not in rig.plex.user_state(S1E2)  # left unwatched
    assert len(rig.plex.history_of(S1E2)) == 1  # no second scrobble
    # As the unwatch does with no copy put back: its play is removed from Serializd too.
    assert s1e2_entries(rig) == []
    assert len(rig.serializd.diary()) == 12


# A server that ignores the history's `accountID` filter (an older Plex, a proxy dropping the
# query string) answers the delivery's one-row question with another account's view: a Home
# user's viewing of S1E2 since the row was queued is no unwatch of the profile's.
async def test_another_accounts_view_on_a_server_ignoring_account_id_is_no_unwatch_of_the_users(
    rig: Rig, tmp_path: Any
) -> None:
    await rig.run()
    users = rig.serializd.log_entry(
        None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
    )
    rig.at(30)
    assert await rig.run(deliver=False) == 1
    copy = tmp_path / "nightly.db"
    rig.runtime.store.backup_to(copy)  # the play's row waits in the copy, not sent yet
    rig.plex.filters_history_by_account = False
    rig.at(DAY)
    rig.plex.watch(S1E2, rig.clock(), account=2)  # a Home user watches S1E2
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)

    await rig.drain()  # the copy's row of the play, marked as possibly sent
    for minutes in (30, 60, DAY):
        rig.at(14 * DAY + minutes)
        await rig.run()

    assert rig.plex.user_state(S1E2)["viewCount"] == 1  # the user's play, written
    assert (users.id, "the user's own") in s1e2_entries(rig)  # not removed from Serializd


def days_before(rig: Rig, days: float) -> str:
    """The rig's clock `days` back, as a Serializd diary date."""
    at = rig.clock() - days * DAY * 60
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))


async def logged_and_written_after_the_copy(rig: Rig, tmp_path: Any) -> tuple[Any, Any]:
    """The nightly copy taken, then S1E2 logged on Serializd, dated five days back: the link
    writes it to Plex (a view dated now) and reads it back. Returns (copy, the user's entry)."""
    await rig.run()
    copy = tmp_path / "nightly.db"
    rig.runtime.store.backup_to(copy)
    users = rig.serializd.log_entry(
        None, BCS, 1, 2, backdate=days_before(rig, 5), review_text="the user's own"
    )
    rig.at(30)
    assert await rig.run() == 1
    assert rig.plex.user_state(S1E2)["viewCount"] == 1
    rig.at(60)
    assert await rig.run() == 0
    return copy, users


# Plex dates the link's write the day it was made, days from the diary entry it copied, and
# the copy put back knows neither: its first run pairs them as a link's first run does.
async def test_a_play_the_link_wrote_to_plex_after_the_backup_is_not_doubled_by_the_copy(
    rig: Rig, tmp_path: Any
) -> None:
    copy, users = await logged_and_written_after_the_copy(rig, tmp_path)
    entries = len(rig.serializd.diary())
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)

    queued = []
    for minutes in (0, 30, 60, DAY):
        rig.at(14 * DAY + minutes)
        queued.append(await rig.run())

    assert rig.plex.user_state(S1E2)["viewCount"] == 1  # not written again
    assert len(rig.plex.history_of(S1E2)) == 1
    assert s1e2_entries(rig) == [(users.id, "the user's own")]  # not copied back as new
    assert len(rig.serializd.diary()) == entries  # nothing removed either
    assert set(queued) == {0}


# Only plays without a partner on both sides pair: a rewatch in Plex after the restore, days
# after the link's write, is a viewing of its own, copied to Serializd on its day.
async def test_a_rewatch_in_plex_after_the_copy_is_put_back_is_still_copied(
    rig: Rig, tmp_path: Any
) -> None:
    copy, users = await logged_and_written_after_the_copy(rig, tmp_path)
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)
    rewatched = rig.clock()
    rig.plex.watch(S1E2, rewatched)

    for minutes in (5, 30, 60, DAY):
        rig.at(14 * DAY + minutes)
        await rig.run()

    assert rig.plex.user_state(S1E2)["viewCount"] == 2  # the link's write and the rewatch
    assert (users.id, "the user's own") in s1e2_entries(rig)
    rewatch_day = time.strftime("%Y-%m-%d", time.gmtime(rewatched))
    assert s1e2_dates(rig) == sorted([users.watched_at[:10], rewatch_day])


# The pairing is the restore's first run's only: then back to normal, where plays of an item
# new on each side days apart are two viewings, each copied to the other side.
async def test_after_the_first_run_since_the_restore_plays_days_apart_pair_no_more(
    rig: Rig, tmp_path: Any
) -> None:
    copy, users = await logged_and_written_after_the_copy(rig, tmp_path)
    rig.at(14 * DAY)
    await put_back_and_started(rig, copy)
    assert await rig.run() == 0
    logged_again = rig.serializd.log_entry(
        None, BCS, 1, 2, backdate=days_before(rig, 5), is_rewatch=True
    )
    rig.at(14 * DAY + 30)
    viewed = rig.clock()
    rig.plex.watch(S1E2, viewed)

    for minutes in (60, 90, DAY):
        rig.at(14 * DAY + minutes)
        await rig.run()

    # The user's two entries, and the view's copy on its day (Plex, viewed since, takes the
    # log dated before its last view for a play it holds).
    view_day = time.strftime("%Y-%m-%d", time.gmtime(viewed))
    assert s1e2_dates(rig) == sorted(
        [users.watched_at[:10], logged_again.watched_at[:10], view_day]
    )
    assert {users.id, logged_again.id} < {entry for entry, _ in s1e2_entries(rig)}


# A link's play to Plex given up (a dead letter, which stays) before an ordinary restart was
# queued before the start, as a folder copy's row is; but a view made after the start is no
# write of an earlier process: the user's viewing of S1E2 then is a play of their own.
async def test_a_view_in_plex_after_a_restart_is_not_taken_for_a_dead_letter_queued_before_it(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_try = "delivery: {max_attempts: 1}\n"
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch, config_extra=one_try) as rig:
        await rig.run()
        users = rig.serializd.log_entry(
            None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
        )
        rig.plex.fail_next(1, 500, route="/:/scrobble")
        assert await rig.run() == 1
        assert len(rig.dead_letters()) == 1  # the play did not go to Plex
        rig.at(DAY)
        await put_back_and_started(rig, None)  # an ordinary restart, nothing put back
        rig.at(2 * DAY)
        viewed = rig.clock()
        rig.plex.watch(S1E2, viewed)  # the user watches S1E2 in Plex

        rig.at(2 * DAY + 30)
        assert await rig.run() == 1  # the view, copied to Serializd

        view_day = time.strftime("%Y-%m-%d", time.gmtime(viewed))
        assert s1e2_dates(rig) == sorted([users.watched_at[:10], view_day])


# The same without a restart: the dead letter goes once more by itself (`deliver/oncemore`),
# after the link read the view (`read_first`) or before, and Plex shows S1E2 viewed since its
# try. Its scrobble made no view (the history's first since is days later): the view is the
# user's, copied to Serializd, and the dead letter is closed as already watched in Plex,
# paired with the user's entry; neither is read as unwatched and removed.
@pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "delivered-first"])
async def test_a_view_in_plex_after_a_dead_letter_neither_lands_it_nor_removes_the_users_entry(
    tmp_path: Any, start_fake: Any, monkeypatch: pytest.MonkeyPatch, read_first: bool
) -> None:
    one_try = "delivery: {max_attempts: 1}\n"
    async with plex_serializd_rig(tmp_path, start_fake, monkeypatch, config_extra=one_try) as rig:
        await rig.run()
        users = rig.serializd.log_entry(
            None, BCS, 1, 2, backdate="2024-03-01T20:00:00.000Z", review_text="the user's own"
        )
        rig.plex.fail_next(1, 500, route="/:/scrobble")
        assert await rig.run() == 1
        assert len(rig.dead_letters()) == 1  # the play did not go to Plex
        rig.at(2 * DAY)
        viewed = rig.clock()
        rig.plex.watch(S1E2, viewed)  # the user watches S1E2 in Plex

        if not read_first:
            await rig.drain()  # the dead letter, once more by itself
        for minutes in (30, 60, 90):
            rig.at(2 * DAY + minutes)
            await rig.run()

        assert rig.dead_letters() == []  # closed
        assert rig.plex.user_state(S1E2)["viewCount"] == 1  # not written again
        assert (users.id, "the user's own") in s1e2_entries(rig)  # never removed
        view_day = time.strftime("%Y-%m-%d", time.gmtime(viewed))
        assert s1e2_dates(rig) == sorted([users.watched_at[:10], view_day])
