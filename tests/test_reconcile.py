"""Reconciliation planning (pure): adds, removals that stick, rewatches, ratings, the guard."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace

import pytest

from watchbridge.config import Link
from watchbridge.reconcile import (
    ABSORBED,
    EXPECTED,
    UNDATED,
    Action,
    Plan,
    Play,
    Rated,
    SameViewing,
    Side,
    apart_from,
    carry_expected,
    expect,
    match_plays,
    plan,
    removals_kept,
    settle_expected,
    withdraws,
    without_waiting,
)

DAY = 86400.0
TWO_WAY = Link(services=["trakt", "serializd"])
ONE_WAY = Link(services=["trakt", "serializd"], direction="one-way")
EP1, EP2 = "episode:tmdb:1396:s1e1", "episode:tmdb:1396:s1e2"


def side(*plays: Play, ratings: dict[str, Rated] | None = None) -> Side:
    return Side(plays=plays, ratings=ratings or {})


def kinds(result: Plan) -> list[tuple[str, str, str]]:
    return sorted((a.kind, a.target, a.item) for a in result.actions)


def test_a_play_on_one_side_is_added_to_the_other() -> None:
    result = plan(TWO_WAY, {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side()}, {})
    assert kinds(result) == [("add_play", "serializd", EP1)]
    assert result.actions[0].reason == "new on trakt" and result.actions[0].at == 1000


def test_the_same_viewing_on_both_sides_needs_nothing() -> None:
    current = {
        "trakt": side(Play(EP1, 1000, "t1")),
        "serializd": side(Play(EP1, 1000 + 3600, "s1")),
    }
    assert plan(TWO_WAY, current, {}).actions == ()


def test_a_rewatch_is_a_second_play() -> None:
    current = {
        "trakt": side(Play(EP1, 1000, "t1"), Play(EP1, 1000 + 30 * DAY, "t2")),
        "serializd": side(Play(EP1, 1000, "s1")),
    }
    result = plan(TWO_WAY, current, {})
    assert kinds(result) == [("add_play", "serializd", EP1)]
    assert result.actions[0].at == 1000 + 30 * DAY


def test_one_way_never_writes_back_to_the_source() -> None:
    current = {"trakt": side(), "serializd": side(Play(EP1, 1000, "s1"))}
    assert plan(ONE_WAY, current, {}).actions == ()


def test_a_removal_propagates_and_leaves_tombstones() -> None:
    baseline = {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side(Play(EP1, 1000, "s1"))}
    current = {
        "trakt": side(Play(EP2, 5000, "t2")),
        "serializd": side(Play(EP1, 1000, "s1"), Play(EP2, 5000, "s2")),
    }
    result = plan(TWO_WAY, current, baseline)
    assert kinds(result) == [("remove_play", "serializd", EP1)]
    assert result.actions[0].record == "s1" and result.actions[0].reason == "removed on trakt"
    assert ("serializd", "s1") in result.tombstones


def test_a_play_gone_from_anilist_may_be_one_the_anime_mapping_no_longer_places() -> None:
    # A dataset refresh (or a release reading the datasets better) moves or drops an entry's
    # episode: the reason must not claim the user removed it on AniList.
    link = Link(services=["anilist", "trakt"])
    baseline = {"anilist": side(Play(EP1, 1000, "a1")), "trakt": side(Play(EP1, 1000, "t1"))}
    current = {"anilist": side(Play(EP2, 5000, "a2")), "trakt": side(Play(EP1, 1000, "t1"))}
    removal = next(a for a in plan(link, current, baseline).actions if a.kind == "remove_play")
    assert removal.reason == "removed on anilist (or the anime mapping no longer places it there)"


def test_a_removal_is_not_copied_back_from_the_other_side() -> None:
    baseline = {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side(Play(EP1, 1000, "s1"))}
    current = {"trakt": side(), "serializd": side(Play(EP1, 1000, "s1"))}
    assert ("add_play", "trakt", EP1) not in kinds(plan(TWO_WAY, current, baseline))


def test_a_play_whose_removal_is_not_seen_done_is_not_added_back() -> None:
    # Also when the last state lacks it (a narrowed run's, a --direction run's frozen side).
    current = {"trakt": side(), "serializd": side(Play(EP1, 1000, "s1"))}
    result = plan(TWO_WAY, current, {}, tombstones=frozenset({("serializd", "s1")}))
    assert result.actions == ()
    assert result.spent == frozenset()


def test_a_record_read_again_after_its_removal_was_done_is_a_new_play_with_its_own_key() -> None:
    # A Serializd tick (its record names the episode) unticked, carried, then ticked again.
    current = {"trakt": side(), "serializd": side(Play(EP1, UNDATED, "tick:e1"))}
    stone = ("serializd", "tick:e1")
    result = plan(TWO_WAY, current, {}, frozenset({stone}), {stone: 1700000000.5})
    (add,) = result.actions
    assert (add.kind, add.target, add.source) == (
        "add_play",
        "trakt",
        "tick:e1:again:1700000000500",
    )
    assert result.spent == {stone}


def test_a_history_id_read_again_after_its_removal_was_done_is_a_lagging_read() -> None:
    # Trakt's reads lag its writes: a removed history entry (an id never given again) shown
    # once more is not a new play to copy back.
    current = {"trakt": side(Play(EP1, 1000, "5551")), "serializd": side()}
    stone = ("trakt", "5551")
    result = plan(TWO_WAY, current, {}, frozenset({stone}), {stone: 1700000000.5})
    assert result.actions == ()
    assert result.spent == frozenset()


def test_a_play_we_removed_ourselves_takes_no_other_play_back_with_it() -> None:
    # Run 1 carried the user's removal of t1 over to s1; s1 is now gone, and the user has a
    # rewatch of the same episode on Trakt the next day that must stay.
    baseline = {
        "trakt": side(Play(EP1, 1000 + DAY, "t2")),
        "serializd": side(Play(EP1, 1000, "s1")),
    }
    current = {"trakt": side(Play(EP1, 1000 + DAY, "t2")), "serializd": side()}
    result = plan(TWO_WAY, current, baseline, tombstones=frozenset({("serializd", "s1")}))
    assert ("remove_play", "trakt", EP1) not in kinds(result)


def test_a_play_of_an_item_the_target_cannot_hold_is_counted_not_planned() -> None:
    plex = Side(catalog=frozenset({EP2}))  # EP1 is in none of its libraries
    current = {"trakt": side(Play(EP1, 1000, "t1"), Play(EP2, 2000, "t2")), "plex": plex}
    result = plan(Link(services=["trakt", "plex"]), current, {})
    assert kinds(result) == [("add_play", "plex", EP2)]
    assert result.out_of_catalog == {"plex": 1}


def test_a_play_gone_with_its_title_from_the_library_stays_on_the_other_side() -> None:
    # Deleting a file is not unwatching it: the title left Plex's libraries (its catalog).
    link = Link(services=["trakt", "plex"])
    baseline = {"trakt": side(Play(EP1, 1000, "t1")), "plex": side(Play(EP1, 1000, "p1"))}
    current = {"trakt": side(Play(EP1, 1000, "t1")), "plex": Side(catalog=frozenset())}
    result = plan(link, current, baseline)
    assert result.actions == () and ("trakt", "t1") not in result.tombstones


def test_a_rating_gone_with_its_title_from_the_library_stays_on_the_other_side() -> None:
    link = Link(services=["trakt", "plex"])
    rated = {EP1: Rated(80, 1000)}
    baseline = {"trakt": side(ratings=rated), "plex": side(ratings=rated)}
    current = {"trakt": side(ratings=rated), "plex": Side(catalog=frozenset())}
    assert plan(link, current, baseline).actions == ()


def renumbered_plex(play: Play) -> Side:
    return Side((play,), catalog=frozenset({play.item}), renumbered=frozenset({play.record}))


def test_a_play_renumbered_to_another_episode_takes_its_partner_on_the_old_one_with_it() -> None:
    # Plex now keys its play p1 as EP2 (the show was renumbered); Trakt's t1 on EP1 was our copy.
    link = Link(services=["plex", "trakt"])
    baseline = {"plex": side(Play(EP1, 1000, "p1")), "trakt": side(Play(EP1, 1000, "t1"))}
    current = {"plex": renumbered_plex(Play(EP2, 1000, "p1")), "trakt": baseline["trakt"]}
    assert kinds(plan(link, current, baseline)) == [
        ("add_play", "trakt", EP2),
        ("remove_play", "trakt", EP1),
    ]


def test_a_renumbered_play_is_not_tombstoned_under_its_record() -> None:
    link = Link(services=["plex", "trakt"])
    baseline = {"plex": side(Play(EP1, 1000, "p1")), "trakt": side(Play(EP1, 1000, "t1"))}
    plex = Side((Play(EP2, 1000, "p1"),), renumbered=frozenset({"p1"}))
    result = plan(link, {"plex": plex, "trakt": side(Play(EP1, 1000, "t1"))}, baseline)
    assert ("trakt", "t1") in result.tombstones and ("plex", "p1") not in result.tombstones


def test_a_renumbered_play_leaves_an_undated_tick_of_its_old_episode_alone() -> None:
    # The tick was the user's own (matched, so never copied): it may be a real viewing.
    link = Link(services=["plex", "trakt"])
    baseline = {"plex": side(Play(EP1, 1000, "p1")), "trakt": side(Play(EP1, UNDATED, "t1"))}
    current = {"plex": renumbered_plex(Play(EP2, 1000, "p1")), "trakt": baseline["trakt"]}
    assert "remove_play" not in [a.kind for a in plan(link, current, baseline).actions]


def test_a_renumbered_play_leaves_a_viewing_of_its_old_episode_hours_apart_alone() -> None:
    link = Link(services=["plex", "trakt"])
    baseline = {"plex": side(Play(EP1, 1000, "p1")), "trakt": side(Play(EP1, 1000 + 7200, "t1"))}
    current = {"plex": renumbered_plex(Play(EP2, 1000, "p1")), "trakt": baseline["trakt"]}
    assert "remove_play" not in [a.kind for a in plan(link, current, baseline).actions]


def test_a_play_a_side_keys_as_another_item_for_other_reasons_takes_nothing_with_it() -> None:
    # e.g. an AniList entry mapped to another episode after a dataset refresh: t1 may be the
    # real viewing our copy a1 came from.
    link = Link(services=["anilist", "trakt"])
    baseline = {"anilist": side(Play(EP1, 1000, "a1")), "trakt": side(Play(EP1, 1000, "t1"))}
    current = {"anilist": side(Play(EP2, 1000, "a1")), "trakt": side(Play(EP1, 1000, "t1"))}
    assert ("remove_play", "trakt", EP1) not in kinds(plan(link, current, baseline))


def test_a_play_a_side_forgot_is_no_removal_and_is_added_to_it_again_as_a_new_action() -> None:
    link = Link(services=["plex", "trakt"])
    copy = Play(EP1, 1000, "w1")  # our copy of t1, made to an episode renumbered since
    baseline = {"plex": side(copy), "trakt": side(Play(EP1, 1000, "t1"))}
    current = {"plex": Side(forgotten=(copy,)), "trakt": side(Play(EP1, 1000, "t1"))}
    (action,) = plan(link, current, baseline).actions
    assert (action.kind, action.target, action.source) == ("add_play", "plex", "t1:again")


def test_a_rating_a_side_left_out_on_purpose_is_not_removed_from_the_other() -> None:
    link = Link(services=["plex", "trakt"])
    rated = {EP1: Rated(80, 1000)}
    baseline = {"plex": side(ratings=rated), "trakt": side(ratings=rated)}
    current = {"plex": Side(renumbered_ratings=frozenset({EP1})), "trakt": side(ratings=rated)}
    assert plan(link, current, baseline).actions == ()


def test_mass_removal_is_held_until_confirmed() -> None:
    plays = [Play(f"episode:tmdb:1:s1e{n}", 1000 + n, f"t{n}") for n in range(20)]
    mirror = [Play(p.item, p.at, f"s{n}") for n, p in enumerate(plays)]
    baseline = {"trakt": side(*plays), "serializd": side(*mirror)}
    current = {"trakt": side(*plays[:15]), "serializd": side(*mirror)}
    result = plan(TWO_WAY, current, baseline)
    assert "5 of 20 plays on serializd" in result.held
    assert result.writes() == ()


def test_small_removals_are_not_held() -> None:
    plays = [Play(f"episode:tmdb:1:s1e{n}", 1000 + n, f"t{n}") for n in range(20)]
    mirror = [Play(p.item, p.at, f"s{n}") for n, p in enumerate(plays)]
    result = plan(
        TWO_WAY,
        {"trakt": side(*plays[1:]), "serializd": side(*mirror)},
        {"trakt": side(*plays), "serializd": side(*mirror)},
    )
    assert not result.held and len(result.writes()) == 1


def test_mass_rating_removal_is_held_until_confirmed() -> None:
    rated = {f"episode:tmdb:1:s1e{n}": Rated(80, 10) for n in range(20)}
    baseline = {"trakt": side(ratings=rated), "serializd": side(ratings=rated)}
    current = {"trakt": side(), "serializd": side(ratings=rated)}
    result = plan(TWO_WAY, current, baseline)
    assert "20 of 20 ratings on serializd" in result.held
    assert result.writes() == ()


def test_removals_held_with_a_mass_removal_are_named_with_it() -> None:
    plays = [Play(f"episode:tmdb:1:s1e{n}", 1000 + n, f"t{n}") for n in range(20)]
    mirror = [Play(p.item, p.at, f"s{n}") for n, p in enumerate(plays)]
    rated = {f"episode:tmdb:1:s1e{n}": Rated(80, 10) for n in range(20)}
    fewer = {item: r for item, r in rated.items() if not item.endswith("e0")}
    baseline = {"trakt": side(*plays, ratings=rated), "serializd": side(*mirror, ratings=rated)}
    current = {
        "trakt": side(*plays[:15], ratings=fewer),
        "serializd": side(*mirror, ratings=rated),
    }
    held = plan(TWO_WAY, current, baseline).held
    assert held.startswith("5 of 20 plays on serializd would be removed (more than 10%); ")
    assert "; 1 of 20 ratings on serializd with them; confirm with" in held


def test_while_holding_a_single_removal_waits_too() -> None:
    plays = [Play(f"episode:tmdb:1:s1e{n}", 1000 + n, f"t{n}") for n in range(20)]
    mirror = [Play(p.item, p.at, f"s{n}") for n, p in enumerate(plays)]
    current = {"trakt": side(*plays[1:]), "serializd": side(*mirror)}
    baseline = {"trakt": side(*plays), "serializd": side(*mirror)}
    result = plan(TWO_WAY, current, baseline, holding=True)
    assert "1 of 20 plays on serializd would be removed (held since" in result.held
    assert result.writes() == ()


def test_a_few_rating_removals_are_not_held() -> None:
    rated = {f"episode:tmdb:1:s1e{n}": Rated(80, 10) for n in range(20)}
    fewer = {item: r for item, r in rated.items() if not item.endswith("e0")}
    result = plan(
        TWO_WAY,
        {"trakt": side(ratings=fewer), "serializd": side(ratings=rated)},
        {"trakt": side(ratings=rated), "serializd": side(ratings=rated)},
    )
    assert not result.held
    assert [(a.kind, a.target) for a in result.writes()] == [("remove_rating", "serializd")]


def test_rating_on_one_side_is_copied() -> None:
    current = {"trakt": side(ratings={EP1: Rated(80, 10)}), "serializd": side()}
    (action,) = plan(TWO_WAY, current, {}).actions
    assert (action.kind, action.target, action.value) == ("set_rating", "serializd", 80)


def test_conflicting_ratings_newest_wins() -> None:
    current = {
        "trakt": side(ratings={EP1: Rated(80, 10)}),
        "serializd": side(ratings={EP1: Rated(60, 20)}),
    }
    (action,) = plan(TWO_WAY, current, {}).actions
    assert (action.target, action.value) == ("trakt", 60)
    assert "serializd wins (newer)" in action.reason


def ratings_of(trakt: Rated | None, serializd: Rated | None) -> dict[str, Side]:
    return {
        "trakt": side(ratings={EP1: trakt} if trakt else None),
        "serializd": side(ratings={EP1: serializd} if serializd else None),
    }


def rating_writes(result: Plan) -> list[tuple[str, int | None, str]]:
    return [(a.target, a.value, a.reason) for a in result.actions]


def test_the_one_side_whose_rating_changed_since_the_last_run_wins_whatever_the_dates() -> None:
    # Serializd's 8 (a rewatch's log) deleted: the older log's 6 shows again, dated before
    # Trakt's copy of the 8. It is the one change since the last run: it goes to Trakt.
    baseline = ratings_of(Rated(80, 5 * DAY), Rated(80, 5 * DAY))
    current = ratings_of(Rated(80, 5 * DAY), Rated(60, 1 * DAY))
    assert rating_writes(plan(TWO_WAY, current, baseline)) == [
        ("trakt", 60, "ratings differ: serializd wins (changed since the last run)")
    ]
    # ...and the other way round: a change on Trakt dated before Serializd's rating still wins.
    current = ratings_of(Rated(60, 1 * DAY), Rated(80, 5 * DAY))
    assert rating_writes(plan(TWO_WAY, current, baseline)) == [
        ("serializd", 60, "ratings differ: trakt wins (changed since the last run)")
    ]


def test_a_rating_read_with_a_new_date_but_the_same_value_is_no_change() -> None:
    # The same 80 with a new date (an AniList score first read since an older release saved
    # its state, which kept no `score_at`): by value, that side did not change.
    baseline = ratings_of(Rated(80, 5 * DAY), Rated(80, 5 * DAY))
    current = ratings_of(Rated(80, 9 * DAY), Rated(60, 1 * DAY))
    assert [w[:2] for w in rating_writes(plan(TWO_WAY, current, baseline))] == [("trakt", 60)]


def test_a_value_that_moved_without_its_date_is_no_change() -> None:
    # AniList's 70 was held as Trakt's 80 (both 4 stars in POINT_5): the baseline keeps 80, at
    # the score's own date. In POINT_10 it is 70 again, at that date: Trakt's newer 8 wins.
    anilist = Link(services=["anilist", "trakt"])
    baseline = {
        "anilist": side(ratings={EP1: Rated(80, DAY)}),
        "trakt": side(ratings={EP1: Rated(80, 5 * DAY)}),
    }
    current = {
        "anilist": side(ratings={EP1: Rated(70, DAY)}),
        "trakt": side(ratings={EP1: Rated(80, 5 * DAY)}),
    }
    assert rating_writes(plan(anilist, current, baseline)) == [
        ("anilist", 80, "ratings differ: trakt wins (newer)")
    ]


def test_a_value_that_moved_on_a_side_that_gives_no_date_is_a_change() -> None:
    # Plex's listings may leave `lastRatedAt` out (the reader dates such a rating 0): its value
    # is all that tells the user's change, and the dates would set it back to Trakt's 8.
    plex = Link(services=["plex", "trakt"])
    baseline = {
        "plex": side(ratings={EP1: Rated(80, 0.0)}),
        "trakt": side(ratings={EP1: Rated(80, 5 * DAY)}),
    }
    current = {
        "plex": side(ratings={EP1: Rated(60, 0.0)}),
        "trakt": side(ratings={EP1: Rated(80, 5 * DAY)}),
    }
    assert rating_writes(plan(plex, current, baseline)) == [
        ("trakt", 60, "ratings differ: plex wins (changed since the last run)")
    ]


@pytest.mark.parametrize(
    "baseline",
    [
        ratings_of(Rated(70, DAY), Rated(50, DAY)),  # both changed since the last run
        {},  # a first run (or a kind new to the link)
        ratings_of(Rated(80, DAY), None),  # Serializd had no rating of it at the last run
        ratings_of(Rated(80, DAY), Rated(60, DAY)),  # neither changed, no copy waits
    ],
)
def test_without_one_side_alone_changed_the_newer_date_wins(baseline: dict[str, Side]) -> None:
    current = ratings_of(Rated(80, 2 * DAY), Rated(60, 3 * DAY))
    assert rating_writes(plan(TWO_WAY, current, baseline)) == [
        ("trakt", 60, "ratings differ: serializd wins (newer)")
    ]


def test_a_copy_still_waiting_keeps_winning_while_neither_side_changes() -> None:
    # The last run copied Serializd's changed 6 to Trakt; it has not landed. Nothing changed
    # since: the choice stands (the dates would set Serializd back to Trakt's newer 8).
    baseline = current = ratings_of(Rated(80, 5 * DAY), Rated(60, 1 * DAY))
    result = plan(TWO_WAY, current, baseline, copying={("trakt", EP1, 60)})
    assert rating_writes(result) == [
        ("trakt", 60, "ratings differ: serializd wins (its copy still waits)")
    ]
    # A copy of another value (the user changed the rating since) says nothing.
    result = plan(TWO_WAY, current, baseline, copying={("trakt", EP1, 70)})
    assert [w[:2] for w in rating_writes(result)] == [("serializd", 80)]
    # Either side changed: the change wins, not the copy.
    changed = ratings_of(Rated(90, 6 * DAY), Rated(60, 1 * DAY))
    result = plan(TWO_WAY, changed, baseline, copying={("trakt", EP1, 60)})
    assert [w[:2] for w in rating_writes(result)] == [("serializd", 90)]


def test_a_rating_cleared_while_its_copy_waits_takes_the_copy_back() -> None:
    # The last run copied Trakt's 8 to Serializd; it has not landed, and the user cleared the
    # 8 on Trakt since: neither side shows a rating, and the copy must not stay on its way.
    baseline = ratings_of(Rated(80, 5 * DAY), None)
    unrated = ratings_of(None, None)
    result = plan(TWO_WAY, unrated, baseline, copying={("serializd", EP1, 80)})
    assert rating_writes(result) == [
        ("serializd", None, "rating removed on trakt while its copy to serializd waited")
    ]
    assert [withdraws(a) for a in result.actions] == [True]
    # No copy waiting (it was taken back, or never queued): nothing to do.
    assert plan(TWO_WAY, unrated, baseline).actions == ()
    # A copy from a side that never held the rating (nothing cleared): nothing to do either.
    result = plan(TWO_WAY, unrated, ratings_of(None, None), copying={("serializd", EP1, 80)})
    assert result.actions == ()
    # A rating that side could not read is not taken for cleared.
    unread = {**unrated, "trakt": replace(unrated["trakt"], unread_ratings=frozenset({EP1}))}
    assert plan(TWO_WAY, unread, baseline, copying={("serializd", EP1, 80)}).actions == ()
    # One way: only the link's own direction takes a copy back.
    assert kinds(plan(ONE_WAY, unrated, baseline, copying={("serializd", EP1, 80)})) == [
        ("remove_rating", "serializd", EP1)
    ]
    back = ratings_of(None, Rated(80, 5 * DAY))
    assert plan(ONE_WAY, unrated, back, copying={("trakt", EP1, 80)}).actions == ()


def test_taking_back_a_waiting_copy_is_never_held_as_a_mass_removal() -> None:
    # Serializd holds one other rating: a removal of one would be half of its ratings, but a
    # copy taken back removes nothing Serializd shows. Held, the copy would land meanwhile.
    baseline = {
        "trakt": side(ratings={EP1: Rated(80, 5 * DAY), EP2: Rated(70, 5 * DAY)}),
        "serializd": side(ratings={EP2: Rated(70, 5 * DAY)}),
    }
    current = {"trakt": side(ratings={EP2: Rated(70, 5 * DAY)}), "serializd": baseline["serializd"]}
    for holding in (False, True):
        result = plan(TWO_WAY, current, baseline, holding=holding, copying={("serializd", EP1, 80)})
        assert result.writes() == result.actions and len(result.actions) == 1
        assert result.held == ""


def test_a_preferred_side_or_a_one_way_source_wins_whatever_changed() -> None:
    baseline = ratings_of(Rated(80, 5 * DAY), Rated(80, 5 * DAY))
    current = ratings_of(Rated(80, 5 * DAY), Rated(60, 9 * DAY))  # changed, and newer
    preferred = Link(services=["trakt", "serializd"], prefer="trakt")
    assert rating_writes(plan(preferred, current, baseline)) == [
        ("serializd", 80, "ratings differ: trakt wins (preferred)")
    ]
    # The dry run's reason says why: the source of a one-way link, not the newer rating.
    assert rating_writes(plan(ONE_WAY, current, baseline)) == [
        ("serializd", 80, "ratings differ: trakt wins (the link's source)")
    ]


def test_a_half_star_on_plex_and_the_whole_point_trakt_keeps_of_it_are_one_rating() -> None:
    # 7.5 in Plex went to Trakt as 8: writing 8 back would overwrite what the user gave.
    current = {
        "plex": side(ratings={EP1: Rated(75, 10)}),
        "trakt": side(ratings={EP1: Rated(80, 20)}),
    }
    for prefer in ("trakt", "newest-wins"):
        assert plan(Link(services=["plex", "trakt"], prefer=prefer), current, {}).actions == ()


def test_a_rating_changed_to_another_whole_point_on_trakt_still_wins() -> None:
    current = {
        "plex": side(ratings={EP1: Rated(75, 10)}),
        "trakt": side(ratings={EP1: Rated(70, 20)}),
    }
    (action,) = plan(Link(services=["plex", "trakt"]), current, {}).actions
    assert (action.target, action.value) == ("plex", 70)


def test_conflicting_ratings_preferred_side_wins() -> None:
    link = Link(services=["trakt", "serializd"], prefer="trakt")
    current = {
        "trakt": side(ratings={EP1: Rated(80, 10)}),
        "serializd": side(ratings={EP1: Rated(60, 20)}),
    }
    (action,) = plan(link, current, {}).actions
    assert (action.target, action.value) == ("serializd", 80)


def test_removed_rating_propagates() -> None:
    baseline = {
        "trakt": side(ratings={EP1: Rated(80, 10)}),
        "serializd": side(ratings={EP1: Rated(80, 10)}),
    }
    current = {"trakt": side(), "serializd": side(ratings={EP1: Rated(80, 10)})}
    (action,) = plan(TWO_WAY, current, baseline).actions
    assert (action.kind, action.target) == ("remove_rating", "serializd")


def test_history_only_link_ignores_ratings() -> None:
    link = Link(services=["trakt", "serializd"], kinds=["history"])
    current = {"trakt": side(ratings={EP1: Rated(80, 10)}), "serializd": side()}
    assert plan(link, current, {}).actions == ()


def test_matching_pairs_nearest_plays_first() -> None:
    pairs, ours, theirs = match_plays(
        [Play(EP1, 1000, "a"), Play(EP1, 50 * DAY, "b")], [Play(EP1, 50 * DAY + 60, "x")]
    )
    assert [(p.record, q.record) for p, q in pairs] == [("b", "x")]
    assert [p.record for p in ours] == ["a"] and theirs == []


def test_a_viewing_of_the_same_minute_pairs_before_an_earlier_one_within_the_window() -> None:
    """Sunday's viewing is on both sides; Saturday night's, 20 hours earlier, was added later
    to one: Saturday is the new play, not Sunday."""
    saturday, sunday = 10 * DAY, 10 * DAY + 20 * 3600
    pairs, ours, theirs = match_plays(
        [Play(EP1, saturday, "sat"), Play(EP1, sunday, "sun")], [Play(EP1, sunday, "x")]
    )
    assert [(p.record, q.record) for p, q in pairs] == [("sun", "x")]
    assert [p.record for p in ours] == ["sat"] and theirs == []


def test_running_the_plan_twice_changes_nothing_the_second_time() -> None:
    current = {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side()}
    first = plan(TWO_WAY, current, {})
    applied = {
        "trakt": current["trakt"],
        "serializd": side(*[Play(a.item, a.at, "new") for a in first.actions]),
    }
    assert plan(TWO_WAY, applied, applied).actions == ()


def test_each_play_read_back_settles_one_play_we_queued() -> None:
    queued = (
        Action("add_play", "trakt", EP1, "new", UNDATED, source="a:1"),
        Action("add_play", "trakt", EP1, "new", UNDATED, source="a:r1:1"),
    )
    side = expect(Side(), queued)
    assert len(side.plays) == 2  # two expected plays, not one
    one_back = replace(side, plays=(*side.plays, Play(EP1, 5000.0, "t1")))
    assert len([p for p in settle_expected(one_back).plays if p.record != "t1"]) == 1
    both_back = replace(one_back, plays=(*one_back.plays, Play(EP1, UNDATED, "t2")))
    assert {p.record for p in settle_expected(both_back).plays} == {"t1", "t2"}


def adds(*times: float, item: str = EP1) -> Plan:
    actions = tuple(Action("add_play", "serializd", item, "new on trakt", at=t) for t in times)
    return Plan(actions, frozenset())


def test_a_play_waiting_for_delivery_stands_for_the_nearest_add_of_its_item() -> None:
    kept = without_waiting(adds(100 * DAY, 10 * DAY), {("serializd", EP1): [10 * DAY - 7200]})
    assert [a.at for a in kept.actions] == [100 * DAY]


def test_a_waiting_play_stands_for_one_add_only() -> None:
    kept = without_waiting(adds(10 * DAY, 10 * DAY + 60), {("serializd", EP1): [10 * DAY]})
    assert [a.at for a in kept.actions] == [10 * DAY + 60]


def test_a_waiting_play_stands_for_the_add_of_its_own_minute_before_a_nearer_earlier_one() -> None:
    """Saturday night's viewing and Sunday's are to be added; Sunday's webhook play waits: the
    add of Saturday stays, whichever comes first in the plan."""
    saturday, sunday = 10 * DAY, 10 * DAY + 20 * 3600
    kept = without_waiting(adds(saturday, sunday), {("serializd", EP1): [sunday]})
    assert [a.at for a in kept.actions] == [saturday]


def test_a_waiting_play_seconds_off_across_a_minute_stands_for_its_own_add() -> None:
    """Two clocks date one viewing 20:00:59 and 20:01:01."""
    viewing = 10 * DAY + 20 * 3600 + 59
    kept = without_waiting(adds(viewing - 3 * 3600, viewing + 2), {("serializd", EP1): [viewing]})
    assert [a.at for a in kept.actions] == [viewing - 3 * 3600]


def test_plays_seconds_off_across_a_minute_pair_before_an_earlier_one() -> None:
    viewing = 10 * DAY + 20 * 3600 + 59
    pairs, ours, _ = match_plays(
        [Play(EP1, viewing - 3 * 3600, "early"), Play(EP1, viewing, "it")],
        [Play(EP1, viewing + 2, "x")],
    )
    assert [(p.record, q.record) for p, q in pairs] == [("it", "x")]
    assert [p.record for p in ours] == ["early"]


def test_a_waiting_play_of_another_target_or_item_leaves_the_adds() -> None:
    waiting = {("trakt", EP1): [10 * DAY], ("serializd", EP2): [10 * DAY]}
    assert without_waiting(adds(10 * DAY), waiting) == adds(10 * DAY)


def test_an_add_counts_the_targets_plays_from_before_it() -> None:
    trakt = side(Play(EP1, 1 * DAY, "t1"), Play(EP1, 50 * DAY, "t2"), Play(EP1, 90 * DAY, "t3"))
    current = {"trakt": trakt, "serializd": side(Play(EP1, 50 * DAY, "s1"))}
    adds = sorted(plan(TWO_WAY, current, {}).actions, key=lambda a: a.at)
    # The add at day 90 comes after the read day-50 play and the day-1 add planned with it.
    assert [(a.at, a.earlier_plays) for a in adds] == [(1 * DAY, 0), (90 * DAY, 2)]


def test_a_play_the_plan_removes_from_the_target_does_not_count_as_earlier() -> None:
    # The date of the only viewing corrected on Trakt: day 10 removed, day 20 added.
    baseline = {
        "trakt": side(Play(EP1, 10 * DAY, "h1")),
        "serializd": side(Play(EP1, 10 * DAY, "s1")),
    }
    current = {
        "trakt": side(Play(EP1, 20 * DAY, "h2")),
        "serializd": side(Play(EP1, 10 * DAY, "s1")),
    }
    (add,) = [a for a in plan(TWO_WAY, current, baseline).actions if a.kind == "add_play"]
    assert (add.target, add.earlier_plays) == ("serializd", 0)


# --------------------------------------------------------------------------- held removals


NOTHING = Side()


def kept_on_serializd(
    before: Side,
    now: Side,
    other_before: Side = NOTHING,
    other: Side = NOTHING,
    stones: Collection[tuple[str, str]] = (),
) -> Side:
    """What a run holding removals keeps as Serializd's baseline (Trakt is the other side)."""
    baseline = {"serializd": before, "trakt": other_before}
    return removals_kept(baseline, {"serializd": now, "trakt": other}, "serializd", stones)


def test_a_held_removals_baseline_keeps_the_gone_plays_and_ratings_and_takes_the_new() -> None:
    before = side(Play(EP1, DAY, "r1"), ratings={EP1: Rated(80, DAY)})
    now = side(Play(EP2, 2 * DAY, "r2"), ratings={EP2: Rated(60, 2 * DAY)})
    trakt = side(ratings={EP1: Rated(80, DAY)})  # the removal of the rating waits there
    kept = kept_on_serializd(before, now, trakt, trakt)
    assert kept.plays == (Play(EP2, 2 * DAY, "r2"), Play(EP1, DAY, "r1"))
    assert kept.ratings == {EP1: Rated(80, DAY), EP2: Rated(60, 2 * DAY)}


def test_a_held_removals_baseline_lets_go_of_a_play_we_removed_ourselves() -> None:
    before = side(Play(EP1, DAY, "r1"), Play(EP2, DAY, "r2"))
    kept = kept_on_serializd(before, side(), stones={("serializd", "r1")})
    assert kept.plays == (Play(EP2, DAY, "r2"),)


def test_a_held_removals_baseline_lets_go_of_a_play_logged_again() -> None:
    before = side(Play(EP1, DAY, "r1"), Play(EP1, 5 * DAY, "r2"))
    now = side(Play(EP1, DAY + 600, "r3"))  # r1 logged again as r3; r2 removed
    trakt = side(Play(EP1, DAY, "t1"), Play(EP1, 5 * DAY, "t2"))
    kept = kept_on_serializd(before, now, trakt, trakt)
    assert kept.plays == (Play(EP1, DAY + 600, "r3"), Play(EP1, 5 * DAY, "r2"))


def test_a_held_removals_baseline_keeps_a_play_whose_episode_was_watched_again() -> None:
    before = side(Play(EP1, DAY, "r1"))
    now = side(Play(EP1, 2 * DAY, "r2"))  # r1 removed; a rewatch the next day, on both sides
    trakt = side(Play(EP1, DAY, "t1"), Play(EP1, 2 * DAY, "t2"))
    kept = kept_on_serializd(before, now, side(Play(EP1, DAY, "t1")), trakt)
    assert kept.plays == (Play(EP1, 2 * DAY, "r2"), Play(EP1, DAY, "r1"))


def test_a_held_removals_baseline_lets_go_of_a_rating_the_other_side_changed_or_dropped() -> None:
    before = side(ratings={EP1: Rated(80, DAY), EP2: Rated(60, DAY)})
    trakt_before = side(ratings={EP1: Rated(80, DAY), EP2: Rated(60, DAY)})
    trakt = side(ratings={EP1: Rated(60, 2 * DAY)})  # EP1 rated again, EP2's cleared
    assert kept_on_serializd(before, side(), trakt_before, trakt).ratings == {}


def test_a_held_removals_baseline_keeps_a_rating_whose_copy_the_other_side_holds() -> None:
    # Copied to Trakt by the last run (Trakt's baseline was read before the copy), then
    # removed on Serializd: the removal waits, and the copy is no newer rating on Trakt.
    before = side(ratings={EP1: Rated(80, DAY)})
    trakt = side(ratings={EP1: Rated(80, 2 * DAY)})
    assert kept_on_serializd(before, side(), NOTHING, trakt).ratings == {EP1: Rated(80, DAY)}


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's days are UTC ones."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_second_play_at_one_time_is_copied_three_minutes_later(utc: None) -> None:
    at = 1_700_000_000.0  # 22:13 UTC
    assert apart_from(at, [at]) == at + 180
    assert apart_from(at, [at, at + 180]) == at - 180


def test_a_second_play_just_before_midnight_is_copied_earlier_on_its_own_day(utc: None) -> None:
    midnight = 1_700_006_400.0  # 00:00 UTC
    assert apart_from(midnight - 60, [midnight - 60]) == midnight - 60 - 180


def honolulu_midnight(time_zone: Callable[[str], None]) -> float:
    """Midnight starting 5 March 2024 where watchbridge runs, in Honolulu (10:00 UTC: a
    UTC day would not end there)."""
    time_zone("Pacific/Honolulu")
    return time.mktime((2024, 3, 5, 0, 0, 0, 0, 0, -1))


def test_plays_logged_at_one_time_near_local_midnight_are_all_copied_on_its_day(
    time_zone: Callable[[str], None],
) -> None:
    # Checks a review's "at worst the second copy lands 3 minutes into the next day": with
    # TZ set none does, however many viewings share the minute.
    midnight = honolulu_midnight(time_zone)
    for at in (midnight - 60, midnight, midnight + 60):  # 23:59, 00:00, 00:01
        copies: list[float] = []
        for _ in range(5):
            copies.append(apart_from(at, copies))
        assert {time.localtime(c)[:3] for c in copies} == {time.localtime(at)[:3]}, at
        assert len({int(c // 60) for c in copies}) == 5


def test_a_copy_among_plays_minutes_apart_near_local_midnight_stays_on_its_day(
    time_zone: Callable[[str], None],
) -> None:
    # The target holds the item at 23:43, 23:49 and 23:55 (a player that reported it over
    # and over): the copy of 23:54 goes to the first free minute before them, not past
    # midnight (Serializd would show it on the next day).
    midnight = honolulu_midnight(time_zone)
    at = midnight - 6 * 60
    held = [at - 11 * 60, at - 5 * 60, at + 60]
    assert apart_from(at, held) == at - 15 * 60


def test_a_play_apart_from_the_others_and_an_undated_one_keeps_its_time() -> None:
    assert apart_from(1_700_000_000.0, [1_700_000_000.0 + 180, UNDATED]) == 1_700_000_000.0
    assert apart_from(UNDATED, [UNDATED]) == UNDATED


def test_a_play_under_a_new_record_at_the_same_time_is_no_removal() -> None:
    # An AniList entry deleted and added again: its plays come back under the new entry's id.
    old, new = Play(EP1, 1000, "41:1"), Play(EP1, 1000, "77:1")
    baseline = {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side(old)}
    result = plan(TWO_WAY, {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side(new)}, baseline)
    assert result.actions == ()


def test_an_absorbed_play_gone_on_a_side_a_one_way_link_does_not_read_leaves_no_tombstone() -> None:
    absorbed = Play(EP1, 1000, f"{ABSORBED}{EXPECTED}{EP1}@1000")
    baseline = {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side(absorbed)}
    current = {"trakt": side(Play(EP1, 1000, "t1")), "serializd": side()}
    two_way = plan(TWO_WAY, current, baseline)
    one_way = plan(ONE_WAY, current, baseline)  # trakt to serializd only
    assert ("trakt", "t1") in two_way.tombstones and not two_way.actions
    assert ("trakt", "t1") not in one_way.tombstones


def test_a_confirmed_line_of_plays_and_ratings_says_both_are_removed() -> None:
    # ca52545: as_confirmed turns only the first "would be removed" of a held reason; a run
    # confirming plays and ratings held together says the ratings "would be removed".
    from watchbridge.guard import CONFIRM, as_confirmed, for_link, removals_held

    plays = removals_held(3, 4, "plays on trakt", 0.1).removesuffix(f"; {CONFIRM}")
    ratings = removals_held(2, 2, "ratings on trakt", 0.1).removesuffix(f"; {CONFIRM}")
    held = for_link(f"{plays}; {ratings}; {CONFIRM}", "plex-trakt")
    confirmed = as_confirmed(held)
    assert "would be removed" not in confirmed, confirmed


def test_a_confirmed_line_says_is_of_one_and_are_of_several() -> None:
    from watchbridge.guard import CONFIRM, as_confirmed

    held = (
        "3 of 4 plays on serializd would be removed (trakt read empty); 1 rating from trakt "
        f"would be set on serializd with them; 1 undated play from trakt would be added; {CONFIRM}"
    )
    assert as_confirmed(held) == (
        "3 of 4 plays on serializd are removed (trakt read empty); 1 rating from trakt "
        "is set on serializd with them; 1 undated play from trakt is added"
    )


def test_an_unchecked_accounts_ratings_wait_and_the_checked_sides_still_go() -> None:
    # Trakt read no play while its account is not checked yet (maybe another person's since
    # an upgrade): what it rated is not copied to Serializd, even with no removal to hold it
    # with, and not over the user's own rating (newest-wins); Serializd's own rating still
    # goes to Trakt, as its new plays would. Confirming lets them all go.
    from watchbridge.accounts import read_empty_hold
    from watchbridge.guard import as_confirmed

    EP3 = "episode:tmdb:1396:s1e3"
    why = read_empty_hold(["trakt"])
    current = {
        "trakt": side(ratings={EP1: Rated(30, 5000), EP2: Rated(100, 5000)}),
        "serializd": side(ratings={EP1: Rated(80, 1000), EP3: Rated(60, 1000)}),
    }
    result = plan(TWO_WAY, current, {}, hold=why, unchecked=("trakt",))
    assert [(a.target, a.item) for a in result.writes()] == [("trakt", EP3)]
    assert sorted(a.item for a in result.held_back()) == [EP1, EP2]
    assert result.held == (
        f"2 ratings from trakt would be set on serializd, 1 of them over serializd's own ({why}); "
        "confirm with `watchbridge sync --confirm-removals`"
    )
    assert len(result.writes(confirmed=True)) == 3
    assert as_confirmed(result.held).startswith("2 ratings from trakt are set on serializd")
    assert plan(TWO_WAY, current, {}, unchecked=("trakt",)).held == ""  # no hold: no wait


def test_an_unchecked_accounts_undated_plays_wait_and_the_checked_sides_still_go() -> None:
    # Serializd read ticks only (no diary entry: no dated play) while its account is not
    # checked yet (maybe another person's since an upgrade): its removals wait, and so do its
    # ticks of episodes Trakt never had, with the same reason, even with no removal to hold
    # them with; Trakt's new play still goes to Serializd. Confirming lets them all go.
    from watchbridge.accounts import read_empty_hold
    from watchbridge.guard import as_confirmed

    ep3, ep4, ep5 = (f"episode:tmdb:1396:s1e{n}" for n in (3, 4, 5))
    why = read_empty_hold(["serializd"])
    baseline = {
        "trakt": side(Play(EP1, 1000, "t1"), Play(EP2, 2000, "t2")),
        "serializd": side(Play(EP1, 1000, "s1"), Play(EP2, 2000, "s2")),
    }
    ticks = (Play(item, UNDATED, f"tick:{item}") for item in (EP1, ep3, ep5))
    current = {
        "trakt": side(Play(EP1, 1000, "t1"), Play(EP2, 2000, "t2"), Play(ep4, 9000, "t4")),
        "serializd": side(*ticks),
    }
    result = plan(TWO_WAY, current, baseline, hold=why, unchecked=("serializd",))
    assert [(a.kind, a.target, a.item) for a in result.writes()] == [("add_play", "serializd", ep4)]
    assert sorted((a.kind, a.item) for a in result.held_back()) == [
        ("add_play", ep3),
        ("add_play", ep5),
        ("remove_play", EP1),
        ("remove_play", EP2),
    ]
    assert result.held == (
        f"2 of 3 plays on trakt would be removed ({why}); 2 undated plays from serializd "
        "would be added to trakt with them; confirm with `watchbridge sync --confirm-removals`"
    )
    assert len(result.writes(confirmed=True)) == 5
    assert "; 2 undated plays from serializd are added to trakt" in as_confirmed(result.held)

    nothing_to_remove = plan(TWO_WAY, current, current, hold=why, unchecked=("serializd",))
    assert sorted(a.item for a in nothing_to_remove.held_back()) == [ep3, ep5]
    assert nothing_to_remove.held == (
        f"2 undated plays from serializd would be added to trakt ({why}); "
        "confirm with `watchbridge sync --confirm-removals`"
    )
    assert plan(TWO_WAY, current, current, unchecked=("serializd",)).held == ""  # no hold


# --------------------------------------------------------------------------- a first run: one
# viewing logged days apart on each side (a catch-up log on Serializd) is taken for one


WATCHED = 1_700_000_000.0


def test_a_first_run_takes_plays_logged_days_apart_for_one_viewing() -> None:
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1")),
        "serializd": side(Play(EP1, WATCHED + 4 * DAY, "s1")),
    }
    result = plan(TWO_WAY, current, {}, first_run=True)
    assert result.actions == ()
    (pair,) = result.same_viewing
    assert pair.item == EP1 and {s: p.record for s, p in pair.plays.items()} == {
        "trakt": "t1",
        "serializd": "s1",
    }
    assert pair.describe() == f"{EP1} trakt 2023-11-14 22:13 UTC ~ serializd 2023-11-18 22:13 UTC"
    assert result.paired == (pair,)


def test_a_later_run_takes_plays_days_apart_for_two_viewings() -> None:
    # A rewatch weeks or years later must not be taken for the old viewing.
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1")),
        "serializd": side(Play(EP1, WATCHED + 4 * DAY, "s1")),
    }
    result = plan(TWO_WAY, current, {}, first_run=False)
    assert kinds(result) == [("add_play", "serializd", EP1), ("add_play", "trakt", EP1)]
    assert result.same_viewing == () and result.paired == ()


def test_a_first_run_pairs_one_for_one_the_nearest() -> None:
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 10 * DAY, "t2")),
        "serializd": side(Play(EP1, WATCHED + 12 * DAY, "s1")),
    }
    result = plan(TWO_WAY, current, {}, first_run=True)
    (pair,) = result.same_viewing
    assert (pair.plays["trakt"].record, pair.plays["serializd"].record) == ("t2", "s1")
    (add,) = result.actions
    assert (add.kind, add.target, add.at) == ("add_play", "serializd", WATCHED)


def test_a_first_run_takes_plays_more_than_30_days_apart_for_two_viewings() -> None:
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1")),
        "serializd": side(Play(EP1, WATCHED + 31 * DAY, "s1")),
    }
    result = plan(TWO_WAY, current, {}, first_run=True)
    assert kinds(result) == [("add_play", "serializd", EP1), ("add_play", "trakt", EP1)]
    assert result.same_viewing == ()


def test_plays_a_first_run_took_for_one_viewing_stay_one_on_later_runs() -> None:
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1")),
        "serializd": side(Play(EP1, WATCHED + 4 * DAY, "s1")),
    }
    first = plan(TWO_WAY, current, {}, first_run=True)
    later = plan(TWO_WAY, current, current, paired=first.paired)
    assert later.actions == () and later.same_viewing == ()
    assert later.paired == first.paired  # still remembered


def test_copies_other_links_made_of_plays_a_first_run_took_for_one_viewing_are_not_new() -> None:
    # Trakt's day 0 and Serializd's day 4 were taken for one viewing; the household's other
    # links (through a third service) copied each to the other side at its own time. Copied
    # back, each was set a few minutes apart there and went round the other links again.
    before = {
        "trakt": side(Play(EP1, WATCHED, "t1")),
        "serializd": side(Play(EP1, WATCHED + 4 * DAY, "s1")),
    }
    paired = plan(TWO_WAY, before, {}, first_run=True).paired
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 4 * DAY + 30, "t2")),
        "serializd": side(Play(EP1, WATCHED + 4 * DAY, "s1"), Play(EP1, WATCHED - 20, "s2")),
    }
    assert plan(TWO_WAY, current, before, paired=paired).actions == ()
    # Not pairs of their own: a rewatch a day later is still a second viewing.
    rewatch = Play(EP1, WATCHED + 5 * DAY, "t3")
    current["trakt"] = replace(current["trakt"], plays=(*current["trakt"].plays, rewatch))
    result = plan(TWO_WAY, current, before, paired=paired)
    assert [(a.kind, a.target, a.at) for a in result.actions] == [
        ("add_play", "serializd", WATCHED + 5 * DAY)
    ]


def test_two_viewings_logged_with_one_time_are_still_copied_as_two() -> None:
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED, "t2")),
        "serializd": side(),
    }
    assert kinds(plan(TWO_WAY, current, current)) == [("add_play", "serializd", EP1)] * 2


# --------------------------------------------------------------------------- switching from
# another tool: a viewing it recorded twice on one side (posted again), once on the other


@pytest.mark.parametrize("first_run", [True, False])
@pytest.mark.parametrize("apart", [0.0, 60.0, 120.0])
@pytest.mark.parametrize("other_at", [WATCHED + 30, WATCHED + 5 * 3600, WATCHED - 4 * DAY])
def test_a_viewing_recorded_twice_on_one_side_and_once_on_the_other_is_not_copied(
    first_run: bool, apart: float, other_at: float
) -> None:
    # The old tool's duplicate: the other side holds the viewing already (at its own time: the
    # scrobble's, an hour's offset, a log days later); a second copy there doubles it.
    if other_at < WATCHED - DAY and not first_run:
        return  # days apart: one viewing on a first run only
    twice = side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + apart, "t2"))
    for held, current in (
        ("trakt", {"trakt": twice, "serializd": side(Play(EP1, other_at, "s1"))}),
        ("serializd", {"trakt": side(Play(EP1, other_at, "s1")), "serializd": twice}),
    ):
        result = plan(TWO_WAY, current, {} if first_run else current, first_run=first_run)
        assert result.actions == ()
        assert result.held_twice == {held: 1}  # left as it is, and said (review.py)


MIDNIGHT = WATCHED // DAY * DAY  # a Serializd log dated by the day alone (the app's date)


@pytest.mark.parametrize(
    ("second_logged", "two"),
    [
        (MIDNIGHT + 23 * 3600, True),  # logged after a second viewing that evening
        (MIDNIGHT + DAY + 3600, True),  # after midnight, or logged the next morning
        (MIDNIGHT + 20 * 3600 + 90, False),  # within 2 minutes of the first: posted twice
        (MIDNIGHT + 5 * DAY, False),  # days later: an import of such dates, run again?
    ],
)
def test_two_logs_dated_by_the_day_alone_are_two_viewings_when_logged_apart_on_that_day(
    second_logged: float, two: bool
) -> None:
    # Watched twice one day, each logged by hand in the Serializd app, dated by the day alone:
    # both at its midnight, so within two minutes. They were taken for an old tool's duplicate
    # (one viewing: the second was never copied to Trakt, which had the first from a scrobble).
    # What tells them apart is when each was logged, which only a tool posts within minutes.
    first = Play(EP1, MIDNIGHT, "s1")
    second = Play(EP1, MIDNIGHT, "s2")
    logged = {"s1": MIDNIGHT + 20 * 3600, "s2": second_logged}
    before = {
        "trakt": side(Play(EP1, MIDNIGHT + 19 * 3600, "t1")),
        "serializd": Side(plays=(first,), logged={"s1": logged["s1"]}),
    }
    current = {
        "trakt": before["trakt"],
        "serializd": Side(plays=(first, second), logged=logged),
    }
    result = plan(TWO_WAY, current, before)
    if two:
        assert [(a.kind, a.target, a.at) for a in result.actions] == [
            ("add_play", "trakt", MIDNIGHT)
        ]
        assert result.held_twice == {}
    else:
        assert result.actions == ()
        assert result.held_twice == {"serializd": 1}
    # Dated to the minute (a tool's copy of a scrobble), they stay one viewing, whenever logged.
    dated = {
        "trakt": before["trakt"],
        "serializd": Side(plays=(replace(first, at=WATCHED), replace(second, at=WATCHED))),
    }
    assert plan(TWO_WAY, dated, dated).held_twice == {"serializd": 1}


def test_two_logs_dated_by_the_day_alone_pair_with_two_viewings_the_other_side_holds() -> None:
    # Whenever they were logged: with two viewings of that day on the other side, neither is
    # a second record of the other (nothing to copy either way, nothing left unsaid).
    for logged in ({"s1": MIDNIGHT + 60, "s2": MIDNIGHT + 90}, {}):
        current = {
            "trakt": side(
                Play(EP1, MIDNIGHT + 19 * 3600, "t1"), Play(EP1, MIDNIGHT + 22 * 3600, "t2")
            ),
            "serializd": Side(
                plays=(Play(EP1, MIDNIGHT, "s1"), Play(EP1, MIDNIGHT, "s2")), logged=logged
            ),
        }
        result = plan(TWO_WAY, current, current)
        assert (result.actions, result.held_twice) == ((), {})


def test_a_second_viewing_three_minutes_later_is_still_copied() -> None:
    current = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 180, "t2")),
        "serializd": side(Play(EP1, WATCHED, "s1")),
    }
    result = plan(TWO_WAY, current, current)
    assert [(a.kind, a.target, a.at) for a in result.actions] == [
        ("add_play", "serializd", WATCHED + 180)
    ]


@pytest.mark.parametrize("apart", [0.0, 60.0, 120.0])
@pytest.mark.parametrize("row_at", [WATCHED, WATCHED + 30, WATCHED + 120, WATCHED + 3600])
@pytest.mark.parametrize("twice_on", ["trakt", "serializd"])
def test_a_viewing_recorded_twice_on_one_side_and_on_its_way_to_the_other_is_not_copied(
    apart: float, row_at: float, twice_on: str
) -> None:
    # The old tool's duplicate, the other side not holding the viewing yet: a webhook's play
    # of it waits to be delivered there (the service down or limiting). That row is the
    # viewing's one record there; neither of the two is copied beside it.
    once_on = "serializd" if twice_on == "trakt" else "trakt"
    current = {
        twice_on: side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + apart, "t2")),
        once_on: side(),
    }
    on_their_way = {(once_on, EP1): [row_at]}
    result = plan(TWO_WAY, current, current, on_their_way=on_their_way)
    assert without_waiting(result, on_their_way).actions == ()
    assert result.held_twice == {twice_on: 1}  # left as it is, and said (review.py)


def test_two_viewings_each_on_its_way_are_neither_a_second_record() -> None:
    current = {"trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 60, "t2"))}
    current["serializd"] = side()
    on_their_way = {("serializd", EP1): [WATCHED, WATCHED + 60]}
    result = plan(TWO_WAY, current, current, on_their_way=on_their_way)
    assert len(result.actions) == 2 and result.held_twice == {}
    assert without_waiting(result, on_their_way).actions == ()


def test_two_day_dated_logs_beside_a_play_on_its_way_are_two_viewings() -> None:
    # Watched twice one day, each logged by hand in the Serializd app (dated by its midnight,
    # logged apart that day); the webhook's play of the evening viewing waits to reach Trakt.
    # That row stands for one of the logs; the other is the morning's viewing, no old tool's
    # duplicate: copied now, and not told as held twice.
    logged = {"s1": MIDNIGHT + 9 * 3600, "s2": MIDNIGHT + 21 * 3600}
    current = {
        "trakt": side(),
        "serializd": Side(
            plays=(Play(EP1, MIDNIGHT, "s1"), Play(EP1, MIDNIGHT, "s2")), logged=logged
        ),
    }
    on_their_way = {("trakt", EP1): [MIDNIGHT + 20 * 3600]}
    result = plan(TWO_WAY, current, current, on_their_way=on_their_way)
    assert result.held_twice == {}
    copies = without_waiting(result, on_their_way).actions
    assert [(a.kind, a.target) for a in copies] == [("add_play", "trakt")]
    # Logged within two minutes of each other, they are one viewing: its row is that record.
    posted_twice = {"s1": MIDNIGHT + 9 * 3600, "s2": MIDNIGHT + 9 * 3600 + 60}
    current["serializd"] = replace(current["serializd"], logged=posted_twice)
    result = plan(TWO_WAY, current, current, on_their_way=on_their_way)
    assert result.held_twice == {"serializd": 1}
    assert without_waiting(result, on_their_way).actions == ()


def test_a_play_on_its_way_stands_for_its_own_viewing_not_the_first_one_listed() -> None:
    # Trakt: an old tool's late catch-up of last night's viewing (x1, and x2 a minute later)
    # and this morning's scrobble (y); the webhook's play of this morning waits to reach
    # Serializd, dated 90 s before y (Trakt dated the live stop on arrival). That row is
    # y's viewing, the nearest, not x1 (the first within 36 hours): taken for x1, last
    # night's viewing never reached Serializd (x2 held as its second record, x1 paired with
    # the row's play the next run) and this morning's got there twice (the row and y's copy).
    x1, x2 = Play(EP1, WATCHED, "x1"), Play(EP1, WATCHED + 60, "x2")
    y = Play(EP1, WATCHED + 14 * 3600 + 90, "y")
    current = {"trakt": side(x1, x2, y), "serializd": side()}
    on_their_way = {("serializd", EP1): [WATCHED + 14 * 3600]}
    result = plan(TWO_WAY, current, current, on_their_way=on_their_way)
    copies = without_waiting(result, on_their_way).actions
    assert "y" not in {a.source for a in copies}
    assert "x1" in {a.source for a in copies}
    assert result.held_twice == {}


def test_a_viewing_three_minutes_after_one_on_its_way_is_still_copied() -> None:
    current = {"trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 180, "t2"))}
    current["serializd"] = side()
    on_their_way = {("serializd", EP1): [WATCHED]}
    result = without_waiting(
        plan(TWO_WAY, current, current, on_their_way=on_their_way), on_their_way
    )
    assert [(a.target, a.at) for a in result.actions] == [("serializd", WATCHED + 180)]
    assert result.held_twice == {}


def test_without_a_row_on_its_way_both_records_of_a_viewing_are_copied() -> None:
    # Nothing tells them one viewing: the other side holds none of it (`apart_from`).
    current = {"trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 60, "t2"))}
    current["serializd"] = side()
    result = plan(TWO_WAY, current, current, on_their_way={("serializd", EP2): [WATCHED]})
    assert len(result.actions) == 2 and result.held_twice == {}


@pytest.mark.parametrize("other_at", [WATCHED + 30, WATCHED + 5 * 3600, WATCHED - 4 * DAY])
@pytest.mark.parametrize("twice_on", ["trakt", "serializd"])
@pytest.mark.parametrize("kept", ["t1", "t2"])
def test_the_old_tools_duplicate_tidied_away_takes_nothing_from_the_other_side(
    other_at: float, twice_on: str, kept: str
) -> None:
    # Whichever of the two records is deleted, and however far the other side dates the
    # viewing (the scrobble's time, a time zone's hours, a Serializd log by its date, a log
    # days later that a first run took for it): it stays there, and nothing is copied back.
    once_on = "serializd" if twice_on == "trakt" else "trakt"
    first_run = other_at < WATCHED - DAY
    before = {
        twice_on: side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 60, "t2")),
        once_on: side(Play(EP1, other_at, "s1")),
    }
    met = plan(TWO_WAY, before, {} if first_run else before, first_run=first_run)
    assert met.actions == ()
    # As read again (other objects than the baseline's).
    current = {twice_on: side(*(replace(p) for p in before[twice_on].plays if p.record == kept))}
    current[once_on] = side(*(replace(p) for p in before[once_on].plays))
    tidied = plan(TWO_WAY, current, before, paired=met.paired)
    assert tidied.actions == ()
    assert plan(TWO_WAY, current, current, paired=tidied.paired).actions == ()
    # The viewing removed later takes the record left.
    gone = {twice_on: current[twice_on], once_on: side()}
    removal = plan(TWO_WAY, gone, current, paired=tidied.paired)
    assert [(a.kind, a.target, a.record) for a in removal.actions] == [
        ("remove_play", twice_on, kept)
    ]


def test_one_of_two_viewings_at_one_minute_removed_takes_one_of_the_two_the_other_side_holds() -> (
    None
):
    # Not an old tool's duplicate: the other side holds two viewings as well.
    before = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED, "t2")),
        "serializd": side(Play(EP1, WATCHED + 5 * 3600, "s1"), Play(EP1, WATCHED + 5 * 3600, "s2")),
    }
    assert plan(TWO_WAY, before, before).actions == ()
    current = {"trakt": side(Play(EP1, WATCHED, "t2")), "serializd": before["serializd"]}
    result = plan(TWO_WAY, current, before)
    assert [(a.kind, a.target) for a in result.actions] == [("remove_play", "serializd")]


def test_a_viewing_removed_takes_the_second_record_of_it_along() -> None:
    # Unwatched on Serializd: both of Trakt's records of it go, or the one left would be
    # copied back as a viewing of its own.
    before = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 60, "t2")),
        "serializd": side(Play(EP1, WATCHED + 30, "s1")),
    }
    current = {"trakt": before["trakt"], "serializd": side()}
    result = plan(TWO_WAY, current, before)
    assert sorted((a.kind, a.record) for a in result.actions) == [
        ("remove_play", "t1"),
        ("remove_play", "t2"),
    ]
    assert result.held_twice == {}  # not left: it goes with the viewing


def test_one_of_two_viewings_copied_at_one_time_removed_takes_only_its_partner() -> None:
    # Two viewings logged with one time, both copied (the second set three minutes apart):
    # one removed takes one.
    before = {
        "trakt": side(Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED, "t2")),
        "serializd": side(Play(EP1, WATCHED, "s1"), Play(EP1, WATCHED + 180, "s2")),
    }
    for gone in ("s1", "s2"):
        current = {
            "trakt": before["trakt"],
            "serializd": side(*(p for p in before["serializd"].plays if p.record != gone)),
        }
        result = plan(TWO_WAY, current, before)
        assert [(a.kind, a.target) for a in result.actions] == [("remove_play", "trakt")]


def test_a_viewing_removed_takes_its_second_release_date_mark_along() -> None:
    # Copied to Trakt, then marked there "watched on release date" (read undated, a second
    # record of it while Serializd held it): deleted on Serializd, the copy and the mark go,
    # or the mark left alone would be copied back as a tick. The guard counts both.
    mark = Play(EP1, UNDATED, "t1")
    other = tuple(Play(EP2, WATCHED + n * DAY, f"o{n}") for n in range(18))
    before = {
        "trakt": side(mark, Play(EP1, WATCHED + 30, "t2"), *other),
        "serializd": side(
            Play(EP1, WATCHED, "s1"), *(replace(p, record="s" + p.record) for p in other)
        ),
    }
    current = {
        "trakt": replace(before["trakt"], marks=frozenset({"t1"})),
        "serializd": side(*before["serializd"].plays[1:]),
    }
    result = plan(TWO_WAY, current, before)
    assert sorted((a.kind, a.target, a.record) for a in result.actions) == [
        ("remove_play", "trakt", "t1"),
        ("remove_play", "trakt", "t2"),
    ]
    assert {a.record: a.reason for a in result.actions} == {  # as the plan lists them
        "t1": "its 'watched on release date' mark, a second record of the viewing removed on"
        " serializd",
        "t2": "removed on serializd",
    }
    assert not result.held  # 2 of 20: within the share
    fewer = {"trakt": replace(current["trakt"], plays=current["trakt"].plays[:-1])}
    held = plan(TWO_WAY, {**current, **fewer}, before).held
    assert "2 of 19 plays on trakt would be removed (more than 10%)" in held


def test_a_second_release_date_mark_stays_while_the_episode_is_still_watched() -> None:
    # One of two viewings deleted on Serializd: its copy goes, the mark stands for the one
    # left (a second record of it), neither removed nor copied.
    mark = Play(EP1, UNDATED, "t1")
    before = {
        "trakt": side(Play(EP1, WATCHED - 30 * DAY, "t0"), mark, Play(EP1, WATCHED, "t2")),
        "serializd": side(Play(EP1, WATCHED - 30 * DAY, "s0"), Play(EP1, WATCHED, "s1")),
    }
    marks = frozenset({"t1"})
    current = {
        "trakt": replace(before["trakt"], marks=marks, second_marks=marks),
        "serializd": side(before["serializd"].plays[0]),
    }
    result = plan(TWO_WAY, current, before)
    assert [(a.kind, a.target, a.record) for a in result.actions] == [
        ("remove_play", "trakt", "t2")
    ]


def test_an_undated_play_not_taken_for_a_mark_is_not_removed_with_a_viewing() -> None:
    # Only a mark is the viewing's second record: another undated play (Trakt's "unknown
    # date") is none of its business.
    before = {
        "trakt": side(Play(EP1, UNDATED, "t1"), Play(EP1, WATCHED, "t2")),
        "serializd": side(Play(EP1, WATCHED, "s1")),
    }
    current = {"trakt": before["trakt"], "serializd": side()}
    result = plan(TWO_WAY, current, before)
    assert ("remove_play", "trakt", "t1") not in [
        (a.kind, a.target, a.record) for a in result.actions
    ]


def test_a_play_removed_after_a_first_run_took_it_for_one_viewing_takes_its_partner() -> None:
    before = {
        "trakt": side(Play(EP1, WATCHED, "t1")),
        "serializd": side(Play(EP1, WATCHED + 4 * DAY, "s1")),
    }
    paired = plan(TWO_WAY, before, {}, first_run=True).paired
    current = {"trakt": side(), "serializd": before["serializd"]}
    result = plan(TWO_WAY, current, before, paired=paired)
    assert kinds(result) == [("remove_play", "serializd", EP1)]
    assert result.actions[0].record == "s1"
    # Kept while its removal is on its way; forgotten once neither side held its plays.
    assert result.paired == paired
    gone = {"trakt": side(), "serializd": side()}
    assert plan(TWO_WAY, gone, gone, paired=paired).paired == ()


def test_a_remembered_pair_keeps_its_partner_from_an_earlier_play_logged_beside_it() -> None:
    # A first run took Serializd's catch-up log (day 4) for Trakt's viewing (day 0); a later
    # Serializd entry logged within a minute of Trakt's play must not take Trakt's play away.
    trakt = Play("episode:tmdb:1:s1e1", 1_700_000_000.0, "t1")
    logged_later = Play("episode:tmdb:1:s1e1", 1_700_000_000.0 + 4 * 86400, "s-catch-up")
    beside = Play("episode:tmdb:1:s1e1", 1_700_000_000.0 + 30, "s-beside")
    pairs, ours, theirs = match_plays([logged_later, beside], [trakt], known={"s-catch-up": "t1"})
    assert pairs == [(logged_later, trakt)]
    # Dated as Trakt's play, it is that viewing too (another link's copy of it, or the user's
    # backdated log): not a new play to copy to Trakt.
    assert (ours, theirs) == ([], [])


def test_a_play_removed_after_a_first_run_paired_it_takes_another_links_copy_of_it_too() -> None:
    # Trakt's day-0 viewing, paired with Serializd's catch-up log (day 4); another link since
    # wrote Serializd a copy of the day-0 viewing, dated as Trakt's play. The user removes the
    # viewing on Trakt: both go. Before, the copy stayed, and was copied back to Trakt.
    trakt, catch_up = Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 4 * DAY, "s1")
    paired = plan(
        TWO_WAY, {"trakt": side(trakt), "serializd": side(catch_up)}, {}, first_run=True
    ).paired
    copy = Play(EP1, WATCHED + 30, "s-copy")
    before = {"trakt": side(trakt), "serializd": side(catch_up, copy)}
    current = {"trakt": side(), "serializd": before["serializd"]}
    result = plan(TWO_WAY, current, before, paired=paired)
    assert sorted((a.kind, a.target, a.record) for a in result.actions) == [
        ("remove_play", "serializd", "s-copy"),
        ("remove_play", "serializd", "s1"),
    ]


def test_a_pair_days_apart_held_as_two_viewings_on_each_side_is_taken_as_two() -> None:
    # Other links copied each play of the pair to the other side: Serializd holds a copy of
    # Trakt's day-0 play, Trakt one of Serializd's day-4. Removing Trakt's day-0 play removes
    # its copy on Serializd, not the day-4 play Trakt still holds a copy of.
    trakt, catch_up = Play(EP1, WATCHED, "t1"), Play(EP1, WATCHED + 4 * DAY, "s1")
    paired = plan(
        TWO_WAY, {"trakt": side(trakt), "serializd": side(catch_up)}, {}, first_run=True
    ).paired
    on_trakt = Play(EP1, catch_up.at, "t-copy")
    on_serializd = Play(EP1, trakt.at, "s-copy")
    before = {"trakt": side(trakt, on_trakt), "serializd": side(catch_up, on_serializd)}
    assert plan(TWO_WAY, before, before, paired=paired).actions == ()
    current = {"trakt": side(on_trakt), "serializd": before["serializd"]}
    result = plan(TWO_WAY, current, before, paired=paired)
    assert [(a.kind, a.target, a.record) for a in result.actions] == [
        ("remove_play", "serializd", "s-copy")
    ]


@pytest.mark.parametrize(
    ("stones", "planned"),
    [
        (frozenset(), [("add_play", "serializd", EP1)]),
        # The link is taking the play off Trakt itself (a removal on Serializd carried back):
        # that its copy's row is gone does not bring it back.
        (frozenset({("trakt", "t1")}), []),
    ],
)
def test_a_play_whose_queued_copy_was_discarded_is_copied_again_unless_we_remove_it(
    stones: frozenset[tuple[str, str]], planned: list[tuple[str, str, str]]
) -> None:
    play = Play(EP1, 1000, "t1")
    queued = expect(side(), [Action("add_play", "serializd", EP1, "new on trakt", 1000)])
    baseline = {"trakt": side(play), "serializd": queued}
    current = {"trakt": side(play), "serializd": side()}  # read in full: not there
    baseline["serializd"], current["serializd"] = carry_expected(
        baseline["serializd"], current["serializd"], row_of=lambda p: "gone"
    )
    assert kinds(plan(TWO_WAY, current, baseline, tombstones=stones)) == planned


def test_a_play_kept_off_its_target_is_not_added_there_and_others_are() -> None:
    # `deadletters discard --for-good`: that play, by its record on the other side, only.
    kept, other = Play(EP1, 1000, "t1"), Play(EP2, 2000, "t2")
    current = {"trakt": side(kept, other), "serializd": side()}
    planned = plan(TWO_WAY, current, {}, kept_off={("serializd", "t1")})
    assert kinds(planned) == [("add_play", "serializd", EP2)]
    # Kept off Serializd is not kept off Trakt: a play of that record there is no concern.
    assert kinds(plan(TWO_WAY, current, {}, kept_off={("trakt", "t1")})) == [
        ("add_play", "serializd", EP1),
        ("add_play", "serializd", EP2),
    ]


def test_plays_taken_for_one_viewing_are_dated_on_the_households_clock(
    time_zone: Callable[[str], None],
) -> None:
    # `watchbridge sync` listed them in UTC: a New York evening read as the next day.
    time_zone("America/New_York")
    at = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC
    pair = SameViewing(EP1, {"trakt": Play(EP1, at, "t1"), "serializd": Play(EP1, at + DAY, "s1")})
    assert pair.describe() == f"{EP1} trakt 2026-09-21 10:13 EDT ~ serializd 2026-09-22 10:13 EDT"
