"""An applied run writes its plan in parts (`sync.applying`): a webhook's record waits for one
part, not for all of a first run's 100,000 rows. Killed between any two parts (a crash, a
power cut), the next run reads a whole state and queues each row once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from watchbridge.config import Link
from watchbridge.reconcile import Play, Side, plan
from watchbridge.store import Store
from watchbridge.sync import (
    ProfilePlan,
    apply_plan,
    applying,
    baseline_generations,
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


# Baseline rows a part: Trakt's baseline changes by 3 rows (one play gone, two copied to it),
# Serializd's by 2. At 2 Trakt's is written under a new generation and Serializd's in place in
# the switch; at 50 both are written in place.
@pytest.mark.parametrize(("baseline_part", "moved"), [(2, {"trakt"}), (50, set())])
def test_a_run_killed_between_any_two_parts_leaves_a_whole_state_and_each_row_once(
    tmp_path: Path, baseline_part: int, moved: set[str]
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
            last, generations = state(store), baseline_generations(store, "ts", "me")
            run = next_run(store, now, 20.0)
            actions = run.plan.writes(False)
            new_rows, _ = outbox_rows("ts", "me", actions)
            kept = kept_state(run, actions, "", False, 20.0)
            parts = applying(store, LINK, "ts", run, new_rows, "", 20.0, kept, 1, baseline_part)
            # Fewer parts than `stop`: the run went through (the last round).
            finished = sum(1 for _ in itertools.islice(parts, stop)) < stop
            parts.close()  # killed here
            if finished:
                now_in_use = baseline_generations(store, "ts", "me")
                assert {
                    s for s in SERVICES if now_in_use.get(s, "") != generations.get(s, "")
                } == moved
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
    assert stop > (10 if moved else 3)  # the parts were many: rows one a part


def test_a_run_finding_nothing_new_killed_anywhere_keeps_the_baseline_and_writes_none(
    tmp_path: Path,
) -> None:
    # A daily full read finding what the last run left: the baseline in use is kept as it
    # is, under its generation, not one of its rows written again.
    read = both_sides(ITEMS[:20])
    stop, finished = 0, False
    while not finished:
        path = tmp_path / f"killed-after-{stop}.db"
        with Store.open(path) as store:
            apply_plan(store, LINK, "ts", next_run(store, read, 10.0), False, 10.0)
            last, generations = state(store), baseline_generations(store, "ts", "me")
            versions = {s: store.mirror_versions(s, "me") for s in SERVICES}
            rows = store.db.execute("SELECT * FROM mirror WHERE collection LIKE 'link:ts:%'")
            written = sorted(tuple(row) for row in rows)
            run = next_run(store, read, 20.0)
            assert run.plan.writes(False) == ()
            kept = kept_state(run, (), "", False, 20.0)
            parts = applying(store, LINK, "ts", run, [], "", 20.0, kept, 1, 2)
            finished = sum(1 for _ in itertools.islice(parts, stop)) < stop
            parts.close()  # killed here
        with Store.open(path) as restarted:
            assert state(restarted) == last, f"killed after {stop} parts"
            assert baseline_generations(restarted, "ts", "me") == generations
            assert {s: restarted.mirror_versions(s, "me") for s in SERVICES} == versions
            rows = restarted.db.execute("SELECT * FROM mirror WHERE collection LIKE 'link:ts:%'")
            assert sorted(tuple(row) for row in rows) == written  # their times too
        stop += 1
    assert stop == 3  # one part: the switch (the cursors and the rest), nothing before it


def test_a_baseline_written_by_another_before_the_switch_is_written_whole_not_mixed(
    tmp_path: Path,
) -> None:
    # The rows are compared with the baseline in use before the plan's rows are queued; until
    # the switch, another process's write may take that baseline out (as a start over takes
    # out a link's state): the few rows changed, written alone, would leave a mix.
    before = both_sides(ITEMS[:20])
    now = both_sides(ITEMS, skip={"trakt": {ITEMS[1], ITEMS[20], ITEMS[21]}})
    with Store.open(tmp_path / "reference.db") as reference:
        apply_plan(reference, LINK, "ts", next_run(reference, before, 10.0), False, 10.0)
        apply_plan(reference, LINK, "ts", next_run(reference, now, 20.0), False, 20.0)
        after = state(reference)
    with Store.open(tmp_path / "wb.db") as store:
        apply_plan(store, LINK, "ts", next_run(store, before, 10.0), False, 10.0)
        generations = baseline_generations(store, "ts", "me")
        run = next_run(store, now, 20.0)
        actions = run.plan.writes(False)
        new_rows, _ = outbox_rows("ts", "me", actions)
        kept = kept_state(run, actions, "", False, 20.0)
        parts = applying(store, LINK, "ts", run, new_rows, "", 20.0, kept, 1, 50)
        next(parts)  # the first row queued
        collection = f"link:ts:plays{generations.get('serializd', '')}"
        taken = list(store.mirror_get("serializd", "me", collection))
        store.mirror_remove("serializd", "me", collection, taken[:5])
        for _ in parts:
            pass
        assert baseline_generations(store, "ts", "me") == generations  # kept, written in place
        assert state(store)[0] == after[0]


def test_a_baseline_kept_before_collections_had_versions_is_written_anew(
    tmp_path: Path,
) -> None:
    # Without a version nothing tells a write to it before the switch, and making it whole in
    # the switch may hold the store's lock for long: it goes to a new generation, in parts.
    read = both_sides(ITEMS[:20])
    with Store.open(tmp_path / "wb.db") as store:
        apply_plan(store, LINK, "ts", next_run(store, read, 10.0), False, 10.0)
        store.db.execute("DELETE FROM mirror_versions WHERE collection LIKE 'link:ts:plays%'")
        last, generations = state(store), baseline_generations(store, "ts", "me")
        apply_plan(store, LINK, "ts", next_run(store, read, 20.0), False, 20.0)
        assert state(store) == last
        now_in_use = baseline_generations(store, "ts", "me")
        assert all(now_in_use[s] != generations.get(s, "") for s in SERVICES)
