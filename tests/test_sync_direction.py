"""`watchbridge sync --direction`: one run in another direction than the link's."""

from __future__ import annotations

import pytest

from watchbridge.config import Link
from watchbridge.errors import WatchbridgeError
from watchbridge.reconcile import Plan, Play, Side, plan
from watchbridge.store import Store
from watchbridge.sync import ProfilePlan, apply_plan, frozen_sides, load_baseline, with_direction

LINK = Link(["trakt", "serializd"])
E1 = "episode:tmdb:1396:s1e1"


def test_a_run_can_go_one_way_in_either_direction() -> None:
    run = with_direction(LINK, "ts", "serializd-to-trakt")
    assert (run.services, run.direction) == (["serializd", "trakt"], "one-way")
    assert with_direction(LINK, "ts", None) is LINK


def test_an_unknown_direction_names_the_choices() -> None:
    with pytest.raises(WatchbridgeError, match="two-way, trakt-to-serializd or serializd-to-trakt"):
        with_direction(LINK, "ts", "sideways")


def test_a_narrowed_run_leaves_the_target_side_for_a_later_run() -> None:
    assert frozen_sides(LINK, with_direction(LINK, "ts", "trakt-to-serializd")) == {"serializd"}
    assert frozen_sides(LINK, LINK) == frozenset()


def test_the_frozen_side_keeps_its_baseline(store: Store) -> None:
    current = {"trakt": Side((Play(E1, 1.0, "1"),)), "serializd": Side((Play(E1, 2.0, "9"),))}
    result = ProfilePlan(
        "me", Plan((), frozenset()), {}, current, first_run=True, frozen=frozenset({"serializd"})
    )
    apply_plan(store, LINK, "ts", result, confirm_removals=False, now=10.0)
    assert set(load_baseline(store, "ts", "me", ["trakt", "serializd"])) == {"trakt"}


def test_a_removal_a_one_way_run_does_not_carry_leaves_no_tombstone() -> None:
    run = with_direction(LINK, "ts", "serializd-to-trakt")
    baseline = {"trakt": Side((Play(E1, 1.0, "1"),)), "serializd": Side((Play(E1, 2.0, "9"),))}
    current = {"trakt": Side(), "serializd": baseline["serializd"]}
    result = plan(run, current, baseline)
    assert (result.actions, result.tombstones) == ((), frozenset())  # a later run carries it
