"""An applied run writes its plan in parts (`sync.applying`): a webhook's record waits for one
part, not for all of a first run's 100,000 rows. Killed between any two parts (a crash, a
power cut), the next run reads a whole state and queues each row once."""

from __future__ import annotations

import itertools
from pathlib import Path

from watchbridge.config import Link
from watchbridge.reconcile import Play, Side, plan
from watchbridge.store import Store
from watchbridge.sync import (
    ProfilePlan,
    apply_plan,
    applying,
    kept_state,
    load_baseline,
    load_tombstones,
    outbox_rows,
)

LINK = Link(services=["trakt", "serializd"])
SERVICES = ["trakt", "serializd"]
ITEMS = [f"episode:tmdb:1396:s1e{n}" for n in range(1, 23)]


def both_sides(items: list[str], skip: dict[str, set[str]] | None = None) -> dict[str, Side]:
    skip = skip or {}
    return {
        service: Side(
            tuple(
                Play(item, 1e9 + n * 3600, f"{service[0]}{n}")
                for n, item in enumerate(items)
                if item not in skip.get(service, set())
            )
        )
        for service in SERVICES
    }


def state(store: Store) -> tuple[dict[str, Side], dict[tuple[str, str], float | None]]:
    return load_baseline(store, "ts", "me", SERVICES), load_tombstones(store, "ts", "me")


def undated(stones: dict[tuple[str, str], float | None]) -> dict[tuple[str, str], bool]:
    return {key: done is not None for key, done in stones.items()}


def queued_keys(store: Store) -> list[str]:
    return [str(r[0]) for r in store.db.execute("SELECT idempotency_key FROM outbox")]


def next_run(store: Store, current: dict[str, Side], now: float) -> ProfilePlan:
    """What a run plans from the state the store holds, `current` read."""
    baseline, stones = state(store)
    done = {k: v for k, v in stones.items() if v is not None}
    made = plan(LINK, current, baseline, frozenset(stones), done)
    return ProfilePlan(
        "me", made, {}, current, False, baseline=baseline, tombstones=stones, read_at={}
    )


def test_a_run_killed_between_any_two_parts_leaves_a_whole_state_and_each_row_once(
    tmp_path: Path,
) -> None:
    # Last run: twenty plays on both sides. Since: one removed on Trakt (its removal from
    # Serializd and a tombstone), two added on Serializd (copied to Trakt).
    before = both_sides(ITEMS[:20])
    now = both_sides(ITEMS, skip={"trakt": {ITEMS[1], ITEMS[20], ITEMS[21]}})
    reference = Store.open(tmp_path / "reference.db")
    with reference:
        apply_plan(reference, LINK, "ts", next_run(reference, before, 10.0), False, 10.0)
        whole_run = next_run(reference, now, 20.0)
        assert {a.kind for a in whole_run.plan.writes(False)} == {"add_play", "remove_play"}
        apply_plan(reference, LINK, "ts", whole_run, False, 20.0)
        after = state(reference)
        rows = sorted(queued_keys(reference))
        apply_plan(reference, LINK, "ts", next_run(reference, now, 30.0), False, 30.0)
        settled = state(reference)  # the run after it (a tombstone seen done)
        assert sorted(queued_keys(reference)) == rows

    stop, finished = 0, False
    while not finished:
        path = tmp_path / f"killed-after-{stop}.db"
        with Store.open(path) as store:
            apply_plan(store, LINK, "ts", next_run(store, before, 10.0), False, 10.0)
            last = state(store)
            run = next_run(store, now, 20.0)
            actions = run.plan.writes(False)
            new_rows, _ = outbox_rows("ts", "me", actions)
            kept = kept_state(run, actions, "", False, 20.0)
            parts = applying(store, LINK, "ts", run, new_rows, "", 20.0, kept, 1, 2)
            # Fewer parts than `stop`: the run went through (the last round).
            finished = sum(1 for _ in itertools.islice(parts, stop)) < stop
            parts.close()  # killed here
        with Store.open(path) as restarted:
            seen = state(restarted)
            # The last run's baseline with its tombstones, or this one's: never a mix.
            assert seen in (last, after), f"killed after {stop} parts"
            if seen == after:  # every row its baseline expects is queued
                assert sorted(queued_keys(restarted)) == rows
            # The next run (nothing changed since) queues what is missing, nothing twice.
            apply_plan(restarted, LINK, "ts", next_run(restarted, now, 30.0), False, 30.0)
            assert sorted(queued_keys(restarted)) == rows, f"killed after {stop} parts"
            # As a run that went through leaves it (the tombstones dated by the run that
            # saw their removal done).
            baseline, stones = state(restarted)
            assert baseline == settled[0]
            assert undated(stones) == undated(settled[1])
            # Nothing left of a baseline not in use.
            kept_rows = restarted.db.execute(
                "SELECT COUNT(*) FROM mirror WHERE collection LIKE 'link:ts:plays%'"
            ).fetchone()[0]
            assert kept_rows == sum(len(side.plays) for side in settled[0].values())
        stop += 1
    assert stop > 10  # the parts were many: rows one a part, baseline rows two
