"""A plan's outbox rows: one row per logical write, none lost to a shared idempotency key."""

from __future__ import annotations

import sqlite3
import threading
import time

from watchbridge.config import Link
from watchbridge.reconcile import UNDATED, Plan, Play, Rated, Side, plan
from watchbridge.store import Store, SyncRun
from watchbridge.sync import (
    held_by_an_older_release,
    kept_tombstones,
    load_baseline,
    load_tombstones,
    outbox_rows,
)

EP1 = "episode:tmdb:1396:s1e1"
TWO_WAY = Link(services=["trakt", "serializd"])


def queue(store: Store, link: Link, current: dict[str, Side], now: float = 1.0) -> int:
    rows, skipped = outbox_rows("ts", "me", plan(link, current, {}).actions)
    assert skipped == 0
    return store.enqueue(rows, now)


def test_two_undated_plays_of_one_episode_are_two_writes(store: Store) -> None:
    rewatched = Side(plays=(Play(EP1, UNDATED, "t1"), Play(EP1, UNDATED, "t2")))
    assert queue(store, TWO_WAY, {"trakt": rewatched, "serializd": Side()}) == 2


def test_planning_the_same_play_again_queues_nothing_new(store: Store) -> None:
    current = {"trakt": Side(plays=(Play(EP1, 1000.0, "t1"),)), "serializd": Side()}
    assert queue(store, TWO_WAY, current) == 1
    assert queue(store, TWO_WAY, current, now=2.0) == 0


def test_a_preferred_rating_is_written_again_after_the_other_side_changes_it(
    store: Store,
) -> None:
    link = Link(services=["trakt", "serializd"], prefer="trakt")
    trakt = Side(ratings={EP1: Rated(80, 10.0)})
    assert queue(store, link, {"trakt": trakt, "serializd": Side(ratings={EP1: Rated(60, 20.0)})})
    # Delivered; later the user changes it on Serializd, and Trakt (preferred) wins again.
    changed = Side(ratings={EP1: Rated(40, 30.0)})
    assert queue(store, link, {"trakt": trakt, "serializd": changed}, now=2.0) == 1


def test_an_undated_add_carries_the_plays_its_target_held_when_planned() -> None:
    # Trakt's one dated play pairs with Serializd's dated one; the tick is a second viewing.
    # A play only queued on Trakt (expected, not read back) is not counted as held.
    trakt = Side(plays=(Play(EP1, 1000.0, "t1"), Play("episode:tmdb:1396:s1e2", 5.0, "expect:9")))
    serializd = Side(plays=(Play(EP1, 1000.0, "s1"), Play(EP1, UNDATED, "s2")))
    link = Link(services=["serializd", "trakt"], direction="one-way")
    rows, _ = outbox_rows(
        "st", "me", plan(link, {"serializd": serializd, "trakt": trakt}, {}).actions
    )
    (row,) = rows
    assert row.payload["target_plays"] == 1


def test_each_undated_add_of_an_item_counts_the_adds_planned_before_it() -> None:
    rewatched = Side(plays=(Play(EP1, UNDATED, "a1"), Play(EP1, UNDATED, "a2")))
    link = Link(services=["anilist", "trakt"], direction="one-way")
    rows, _ = outbox_rows(
        "at", "me", plan(link, {"anilist": rewatched, "trakt": Side()}, {}).actions
    )
    assert [r.payload["target_plays"] for r in rows] == [0, 1]


# --------------------------------------------------------------------------- tombstones

DAY = 86400.0
STONE = ("serializd", "tick:e1")


def sides(*records: str) -> dict[str, Side]:
    plays = tuple(Play("episode:tmdb:1:s1e1", UNDATED, r) for r in records)
    return {"trakt": Side(), "serializd": Side(plays)}


def test_a_tombstone_whose_record_a_moved_side_no_longer_holds_is_done_now() -> None:
    kept = kept_tombstones({STONE: None}, Plan((), frozenset()), sides(), frozenset(), 5.0)
    assert kept == {STONE: 5.0}


def test_a_tombstone_of_a_side_the_run_did_not_move_is_not_seen_done() -> None:
    frozen = frozenset({"serializd"})
    assert kept_tombstones({STONE: None}, Plan((), frozenset()), sides(), frozen, 5.0) == {
        STONE: None
    }


def test_a_tombstone_whose_play_is_still_there_waits_for_its_removal() -> None:
    kept = kept_tombstones({}, Plan((), frozenset({STONE})), sides("tick:e1"), frozenset(), 5.0)
    assert kept == {STONE: None}


def test_a_tombstone_whose_record_came_back_as_a_new_play_or_done_long_ago_goes() -> None:
    spent = Plan((), frozenset(), spent=frozenset({STONE}))
    assert kept_tombstones({STONE: 1.0}, spent, sides("tick:e1"), frozenset(), 5.0) == {}
    old = {STONE: 1.0}
    assert kept_tombstones(old, Plan((), frozenset()), sides(), frozenset(), 9 * DAY) == {}


def test_an_older_releases_tombstone_is_taken_as_not_done(store: Store) -> None:
    # Its record held again may be a tick kept on purpose (one viewing of a watched item
    # went): copied back, the removed viewing would return.
    old = {"serializd:tick:e1": {"service": "serializd", "record": "tick:e1"}}
    store.mirror_put("watchbridge", "me", "link:ts:tombstones", old, 1.0)
    assert load_tombstones(store, "ts", "me") == {STONE: None}


def ran(outcome: str, error: str | None = None) -> SyncRun:
    return SyncRun(1, "ts", 0.0, 1.0, outcome, {}, 0, error)


def test_an_older_releases_recent_held_run_says_which_profiles_it_held() -> None:
    runs = [
        ran("running"),
        ran("failed", "bob: no sign-in; me: 3 of 4 plays on trakt would be removed"),
    ]
    assert held_by_an_older_release(
        [ran("held", "me: 3 of 4 plays on trakt would be removed")], "me"
    )
    assert held_by_an_older_release([*runs, ran("ok")], "me")
    assert not held_by_an_older_release(runs, "bob")
    assert held_by_an_older_release(
        [ran("ok"), ran("held", "me: 1 of 4 plays on trakt would be removed")], "me"
    )
    assert not held_by_an_older_release([ran("ok"), ran("held", "me: 3 of 4 plays")], "me")


def test_a_dead_add_names_the_play_its_link_would_copy_again() -> None:
    # What `deadletters discard --for-good` keeps off: the play by its record on the other
    # side, as the plan names it, also for a record with colons in it and a play added again.
    from watchbridge.reconcile import Action
    from watchbridge.store import OutboxItem
    from watchbridge.sync import kept_off_of

    def dead(action: Action) -> OutboxItem:
        (row,) = outbox_rows("ts", "me", (action,))[0]
        return OutboxItem(
            7, row.target, row.profile, row.action, row.payload, row.ordering_key,
            row.idempotency_key, "dead", 1, 0.0, "gave up", 1.0, 2.0,
        )  # fmt: skip

    for source in ("t1", "plex:123:4", "tick:1396:1:1:again", "t1:again:again:1700000000000"):
        add = Action("add_play", "serializd", EP1, "new on trakt", 1000.0, source=source)
        kept = kept_off_of(dead(add), now=5.0)
        assert kept is not None
        assert (kept.row, kept.link, kept.target, kept.at, kept.since) == (
            7, "ts", "serializd", 1000.0, 5.0,
        )  # fmt: skip
        assert kept.record == source.removesuffix(":again:1700000000000").removesuffix(":again")
    rating = Action("set_rating", "serializd", EP1, "rated on trakt", 1000.0, value=80)
    assert kept_off_of(dead(rating), now=5.0) is None


def test_an_add_whose_earlier_row_was_discarded_says_so_in_its_row() -> None:
    from watchbridge.reconcile import Action, expected_record

    again = Action("add_play", "serializd", EP1, "new on trakt", 1000.0, source="t1")
    other = Action("add_play", "serializd", EP1, "new on trakt", 9000.0, source="t2")
    rows, _ = outbox_rows("ts", "me", (again, other), {("serializd", expected_record(again))})
    assert [row.payload.get("discarded_before") for row in rows] == [True, None]


def test_a_run_record_counts_a_write_no_row_can_carry_as_skipped_not_queued() -> None:
    # Such an add is planned again at each full read: the run record must not say, daily,
    # that it was queued.
    from watchbridge.sync import ProfilePlan, plan_counts

    odd = "episode:tmdb:1396:s-1e2"  # a key no row can name (ref_for_key: None)
    current = {"trakt": Side(plays=(Play(odd, 1000.0, "t1"), Play(EP1, 2000.0, "t2"))),
               "serializd": Side()}  # fmt: skip
    planned = plan(TWO_WAY, current, {})
    assert outbox_rows("ts", "me", planned.actions)[1] == 1
    counts = plan_counts([ProfilePlan("me", planned, {}, current, first_run=False)])
    assert counts == {"serializd:add_play": 1, "skipped": 1}


def test_a_big_baseline_is_worked_out_before_the_store_is_locked(store: Store) -> None:
    """Applying a run holds the store's lock, which every webhook's record (and a token read
    on the event loop) waits for: what the run keeps for the next one (its baseline, encoded,
    and its tombstones) is worked out before the lock is taken, so that the lock is held for
    the SQL alone. Measured with another process writing meanwhile: the run does all it can
    before it waits for the database (CPU of its thread, not wall time: the machine's load
    does not count)."""
    from watchbridge.sync import ProfilePlan, apply_plan

    plays = [
        (f"episode:tmdb:{1000 + k % 500}:s1e{1 + k // 500}", 1e9 + k * 600) for k in range(20_000)
    ]
    current = {
        "trakt": Side(plays=tuple(Play(item, at, f"t{n}") for n, (item, at) in enumerate(plays))),
        "serializd": Side(
            plays=tuple(Play(item, at, f"s{n}") for n, (item, at) in enumerate(plays))
        ),
    }
    result = ProfilePlan(
        "me", plan(TWO_WAY, current, current), {}, current, False, baseline=current
    )
    assert store.path is not None
    writer = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another process writing: the run waits for it
    spent: list[float] = []
    failed: list[BaseException] = []

    def apply() -> None:
        try:
            apply_plan(store, TWO_WAY, "ts", result, confirm_removals=False, now=2e9)
            spent.append(time.thread_time())
        except BaseException as exc:
            failed.append(exc)

    applying = threading.Thread(target=apply)
    applying.start()
    assert applying.ident is not None
    cpu = time.pthread_getcpuclockid(applying.ident)
    # Until the run waits: its CPU time stands still for 0.2 s (within the database's busy
    # timeout of 5 s, after which the run would fail).
    samples = [time.clock_gettime(cpu)]
    while len(samples) < 3 or samples[-1] - samples[-3] > 0.001:
        time.sleep(0.1)
        samples.append(time.clock_gettime(cpu))
    waiting = samples[-1]
    writer.execute("ROLLBACK")
    applying.join()
    writer.close()
    assert not failed and spent, failed
    locked = spent[0] - waiting
    assert len(load_baseline(store, "ts", "me", ["trakt", "serializd"])["trakt"].plays) == 20_000
    # About half of it before the lock now, the SQL after; before, all of it after (the run
    # took the lock with everything to do: 0.2 s, with 0.5 ms before).
    share = waiting / (waiting + locked)
    assert share > 0.25, f"{waiting:.3f} s of CPU before the lock, {locked:.3f} s with it held"
