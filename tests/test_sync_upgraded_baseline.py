"""A database kept before generations and collection versions (one baseline, `link:NAME:plays`,
no `mirror_versions` row) read right after the upgrade, its first applied run killed after the
switch while it takes the old one out: the next runs take it out."""

from __future__ import annotations

from pathlib import Path

from tests.test_sync_apply_parts import ITEMS, LINK, both_sides, next_run, queued_keys, state
from watchbridge.store import Store
from watchbridge.sync import (
    apply_plan,
    applying,
    baseline_generations,
    kept_state,
    outbox_rows,
    save_baseline,
)


def test_a_baseline_kept_before_generations_is_taken_out_even_when_killed_meanwhile(
    tmp_path: Path,
) -> None:
    before = both_sides(ITEMS[:20])
    now = both_sides(ITEMS, skip={"trakt": {ITEMS[1], ITEMS[20], ITEMS[21]}})
    path = tmp_path / "upgraded.db"
    with Store.open(path) as store:
        save_baseline(store, "ts", "me", before, 10.0)  # as a version before generations did
        store.db.execute("DELETE FROM mirror_versions")  # and before versions (m022)
        assert baseline_generations(store, "ts", "me") == {}
        read = state(store)[0]  # read as it was, right after the upgrade
        assert {s: {p.item for p in side.plays} for s, side in read.items()} == {
            s: {p.item for p in side.plays} for s, side in before.items()
        }
        run = next_run(store, now, 20.0)
        actions = run.plan.writes(False)
        rows, _ = outbox_rows("ts", "me", actions)
        kept = kept_state(run, actions, "", False, 20.0)
        parts = applying(store, LINK, "ts", run, rows, "", 20.0, kept, 1, 2)
        for _ in parts:
            if baseline_generations(store, "ts", "me"):
                break  # switched: killed while the first generation ("") is taken out
        parts.close()
    with Store.open(path) as restarted:
        queued = sorted(queued_keys(restarted))
        for at in (30.0, 40.0):  # the next runs go through
            apply_plan(restarted, LINK, "ts", next_run(restarted, now, at), False, at)
        assert sorted(queued_keys(restarted)) == queued
        in_use = baseline_generations(restarted, "ts", "me")  # "" (the first) unless named
        wanted = {
            (s, f"link:ts:{what}{in_use.get(s, '')}")
            for s in ("trakt", "serializd")
            for what in ("plays", "ratings")
        }
        left = restarted.db.execute(
            "SELECT service, collection, COUNT(*) FROM mirror WHERE collection LIKE"
            " 'link:ts:plays%' OR collection LIKE 'link:ts:ratings%' GROUP BY 1, 2"
        ).fetchall()
        assert {(s, c) for s, c, _ in left} <= wanted, f"left behind: {[tuple(r) for r in left]}"
