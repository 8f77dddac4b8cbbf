"""Serializd's watched state (ticks, marked seasons) read only where the sides disagree, and
undated plays ("watched, date unknown") in the planner: matched, copied, never duplicated."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.linkrig import Rig, open_rig, use_fast_readers
from watchbridge.config import Link
from watchbridge.readers.serializd import (
    discovery_seasons,
    make_reader,
    named_seasons,
    season_state,
    unexplained,
    worth_reading,
)
from watchbridge.reconcile import UNDATED, Action, Play, Side, expect, plan, settle_expected

pytestmark = pytest.mark.anyio

LINK = Link(services=["trakt", "serializd"])
SHOW, OTHER_SHOW = 1396, 1399
E1, E2 = "episode:tmdb:1396:s1e1", "episode:tmdb:1396:s1e2"
T = 1_700_000_000.0
SEASON_PAGE = "/mobile/page/show/{id}/season_v2_part_3/{number}"


def kinds(current: dict[str, Side], baseline: dict[str, Side] | None = None) -> list[Any]:
    result = plan(LINK, current, baseline or {})
    return sorted((a.kind, a.target, a.item, a.at) for a in result.actions)


# --------------------------------------------------------------------------- planner


def test_an_undated_play_matches_a_dated_play_of_the_same_item() -> None:
    current = {
        "trakt": Side((Play(E1, T, "t1"),)),
        "serializd": Side((Play(E1, UNDATED, f"tick:{E1}"),)),
    }
    assert kinds(current) == []


def test_an_undated_play_alone_is_copied_undated() -> None:
    current = {"trakt": Side(), "serializd": Side((Play(E1, UNDATED, f"tick:{E1}"),))}
    assert kinds(current) == [("add_play", "trakt", E1, UNDATED)]


def test_dated_plays_pair_first_so_an_undated_one_never_takes_a_real_viewing() -> None:
    current = {
        "trakt": Side((Play(E1, UNDATED, "t0"), Play(E1, T, "t1"))),
        "serializd": Side((Play(E1, T + 60, "s1"), Play(E1, UNDATED, f"tick:{E1}"))),
    }
    assert kinds(current) == []


def test_an_undated_play_explains_one_viewing_not_a_rewatch() -> None:
    current = {
        "trakt": Side((Play(E1, T, "t1"), Play(E1, T + 90 * 86400, "t2"))),
        "serializd": Side((Play(E1, UNDATED, f"tick:{E1}"),)),
    }
    assert kinds(current) == [("add_play", "serializd", E1, T + 90 * 86400)]


def test_a_tick_replaced_by_a_diary_entry_is_no_removal() -> None:
    tick = Play(E1, UNDATED, f"tick:{E1}")
    baseline = {"trakt": Side((Play(E1, T, "t1"),)), "serializd": Side((tick,))}
    current = {"trakt": Side((Play(E1, T, "t1"),)), "serializd": Side((Play(E1, T, "s1"),))}
    assert kinds(current, baseline) == []


def test_an_unticked_episode_takes_every_play_of_it_on_the_other_side() -> None:
    tick = Play(E1, UNDATED, f"tick:{E1}")
    trakt = Side((Play(E1, T, "t1"), Play(E1, T + 90 * 86400, "t2")))
    baseline = {"trakt": trakt, "serializd": Side((tick,))}
    current = {"trakt": trakt, "serializd": Side()}
    result = plan(LINK, current, baseline)
    assert sorted((a.kind, a.record) for a in result.actions) == [
        ("remove_play", "t1"),
        ("remove_play", "t2"),
    ]


def test_an_undated_play_we_queued_is_settled_by_any_play_of_the_item() -> None:
    side = expect(Side(), [Action("add_play", "trakt", E1, "new", UNDATED)])
    read_back = Side((*side.plays, Play(E1, T, "99")))  # Trakt chose the release date
    assert [p.record for p in settle_expected(read_back).plays] == ["99"]


# --------------------------------------------------------------------------- reader, pure


def test_only_seasons_with_plays_the_diary_does_not_explain_are_worth_a_read() -> None:
    own = Side((Play(E1, T, "s1"),))
    other = Side((Play(E1, T, "t1"), Play(E2, UNDATED, "t2"), Play("episode:tmdb:7:s3e4", T, "t3")))
    seasons, undated = unexplained(own, other)
    assert {s: dict(v) for s, v in seasons.items()} == {SHOW: {1: {2}}, 7: {3: {4}}}
    assert undated == {E2}


def test_a_tick_without_a_diary_play_is_an_undated_play() -> None:
    own = Side((Play(E1, T, "s1"),))
    plays, replaced = season_state(SHOW, 1, {1, 2}, {2}, own)
    assert plays == [Play(E2, UNDATED, f"tick:{E2}")]  # E1 has its diary entry
    assert replaced == set()


def test_a_known_tick_keeps_its_play_and_an_unticked_one_is_replaced() -> None:
    own = Side((Play(E1, UNDATED, f"tick:{E1}"), Play(E2, UNDATED, f"tick:{E2}")))
    plays, replaced = season_state(SHOW, 1, {1}, {1}, own)
    assert plays == [Play(E1, UNDATED, f"tick:{E1}")]
    assert replaced == {f"tick:{E1}", f"tick:{E2}"}


def test_a_season_marked_watched_explains_the_episodes_the_other_side_holds() -> None:
    plays, _ = season_state(SHOW, 1, None, {2}, Side())
    assert plays == [Play(E2, UNDATED, f"mark:{E2}")]


def test_a_ticked_season_marked_since_keeps_one_play_per_episode() -> None:
    own = Side((Play(E1, UNDATED, f"tick:{E1}"),))
    plays, replaced = season_state(SHOW, 1, None, {1, 2}, own)
    assert plays == [Play(E1, UNDATED, f"mark:{E1}"), Play(E2, UNDATED, f"mark:{E2}")]
    assert replaced == {f"tick:{E1}"}


def test_a_season_is_worth_a_tick_read_while_an_episode_is_missing_on_both_sides() -> None:
    assert worth_reading(3, {1, 2}, was_marked=False)
    assert not worth_reading(3, {1, 2, 3}, was_marked=False)


def test_a_season_without_an_episode_count_is_worth_a_tick_read() -> None:
    assert worth_reading(None, {1, 2, 3}, was_marked=False)


def test_a_season_no_longer_marked_is_read_again_even_when_both_sides_hold_it() -> None:
    assert worth_reading(3, {1, 2, 3}, was_marked=True)


def test_a_full_read_looks_at_the_seasons_touched_and_the_one_after() -> None:
    assert discovery_seasons({0, 1, 2, 3, 4}, {0, 2}, watching=False) == {0, 2, 3}
    assert discovery_seasons({1, 2}, {2}, watching=False) == {2}  # no season 3 (yet)


def test_an_untouched_show_has_no_season_worth_looking_at() -> None:
    assert discovery_seasons({1, 2}, set(), watching=False) == set()


def test_every_regular_season_of_a_show_being_watched_is_looked_at() -> None:
    assert discovery_seasons({0, 1, 2, 3}, set(), watching=True) == {1, 2, 3}


def test_seasons_touched_are_the_users_own_not_the_entries_we_wrote() -> None:
    own = Side(
        (
            Play(E1, T, "100"),  # the user's diary entry
            Play("episode:tmdb:1396:s2e1", T, "200"),  # one we wrote
            Play("episode:tmdb:1396:s3e1", T, "expect:1"),  # one we queued
            Play("episode:tmdb:7:s4e1", UNDATED, "tick:episode:tmdb:7:s4e1"),
        )
    )
    assert named_seasons(own, {"200"}) == {SHOW: {1}, 7: {4}}


# --------------------------------------------------------------------------- against the fakes


@pytest.fixture
async def rig(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    use_fast_readers(monkeypatch)
    trakt: FakeTrakt = start_fake(FakeTrakt())
    trakt.add_show("Breaking Bad", 2008, tmdb=SHOW, tvdb=81189, seasons={1: 7, 2: 13})
    trakt.add_show("Game of Thrones", 2011, tmdb=OTHER_SHOW, tvdb=121361, seasons={1: 10})
    serializd: FakeSerializd = start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    serializd.add_show(OTHER_SHOW, "Game of Thrones", seasons={1: 10})
    serializd.diary_order = "newest"
    rig = open_rig(tmp_path, trakt, serializd)
    yield rig
    await rig.aclose()


def watch_on_trakt(rig: Rig, show: int, season: int, number: int, when: str) -> None:
    item = next(s for s in rig.trakt.shows if s.tmdb == show).seasons[season].episodes[number]
    with rig.trakt.lock:
        rig.trakt.add_history(item, when)
        rig.trakt._touch(rig.trakt.user, "episodes.watched_at")  # as Trakt's own apps do


def trakt_plays(rig: Rig) -> list[tuple[int, int, str | None]]:
    return sorted(
        ((h.item.season, h.item.number, h.watched_at) for h in rig.trakt.history()),
        key=lambda p: (p[0], p[1], p[2] or ""),
    )


def season_reads(rig: Rig, season: int | None = None) -> list[str]:
    """The paths of the per-season watched-state reads (of one season number, if given)."""
    paths = [r.path for r in rig.serializd.calls("GET", SEASON_PAGE)]
    return [p for p in paths if season is None or p.endswith(f"/season_v2_part_3/{season}")]


def recent(days: float) -> str:
    """An ISO time `days` ago, inside a delta read's window."""
    at = datetime.fromtimestamp(time.time() - days * 86400, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:00.000Z")


async def test_a_ticked_episode_is_not_logged_again_nor_played_again_on_trakt(
    rig: Rig,
) -> None:
    rig.serializd.tick(None, SHOW, 1, 1)
    watch_on_trakt(rig, SHOW, 1, 1, "2024-01-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert rig.serializd.diary() == []
    assert trakt_plays(rig) == [(1, 1, "2024-01-01T20:00:00.000Z")]


async def test_a_tick_trakt_lacks_goes_to_trakt_once_with_its_release_date(rig: Rig) -> None:
    rig.serializd.tick(None, SHOW, 1, 1, 2)
    watch_on_trakt(rig, SHOW, 1, 1, "2024-01-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    posted = rig.trakt.calls("POST", "/sync/history")
    assert [
        e["watched_at"]
        for s in posted[0].json()["shows"]
        for x in s["seasons"]
        for e in x["episodes"]
    ] == ["released"]
    # The fake knows no air date: Trakt keeps the play undated, and it is read back as such.
    assert trakt_plays(rig) == [(1, 1, "2024-01-01T20:00:00.000Z"), (1, 2, None)]
    second = await rig.sync_and_deliver(full=True)
    assert [p.plan.actions for p in second.plans] == [()]
    assert len(rig.trakt.history()) == 2 and rig.serializd.diary() == []


async def test_an_undated_trakt_play_becomes_a_tick_without_a_diary_entry(rig: Rig) -> None:
    item = rig.trakt.shows[0].seasons[1].episodes[3]
    with rig.trakt.lock:
        rig.trakt.add_history(item).watched_at = None  # as `watched_at: unknown` leaves it
    await rig.sync_and_deliver()
    assert rig.serializd.diary() == []
    assert rig.serializd.ticks() == {(SHOW, 3572, 3)}
    second = await rig.sync_and_deliver(full=True)
    assert [p.plan.actions for p in second.plans] == [()]


async def test_a_rewatch_of_a_ticked_episode_is_still_logged(rig: Rig) -> None:
    rig.serializd.log_entry(None, SHOW, 1, 1, backdate="2024-01-01T20:00:00Z")
    rig.serializd.tick(None, SHOW, 1, 1)
    watch_on_trakt(rig, SHOW, 1, 1, "2024-01-01T20:00:00.000Z")
    watch_on_trakt(rig, SHOW, 1, 1, "2024-06-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert sorted(r.backdate or "" for r in rig.serializd.diary()) == [
        "2024-01-01T20:00:00Z",
        "2024-06-01T20:00:00Z",
    ]


async def test_a_season_marked_watched_explains_trakt_plays_of_it(rig: Rig) -> None:
    rig.serializd.mark(None, SHOW, 2)
    watch_on_trakt(rig, SHOW, 2, 5, "2024-01-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert rig.serializd.diary() == [] and rig.serializd.ticks() == set()
    assert season_reads(rig, 2) == []  # a marked season needs no episode read


async def test_a_delta_run_reads_watched_state_only_where_the_sides_disagree(rig: Rig) -> None:
    rig.serializd.log_entry(None, OTHER_SHOW, 1, 1, backdate="2024-01-01T20:00:00Z")
    watch_on_trakt(rig, OTHER_SHOW, 1, 1, "2024-01-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    before = len(season_reads(rig))
    rig.serializd.log_entry(None, OTHER_SHOW, 1, 2, backdate=recent(2))
    watch_on_trakt(rig, OTHER_SHOW, 1, 2, recent(2))  # explained
    watch_on_trakt(rig, SHOW, 2, 3, recent(1))  # not explained
    await rig.sync_and_deliver()
    assert season_reads(rig)[before:] == [f"/mobile/page/show/{SHOW}/season_v2_part_3/2"]


async def test_a_delta_run_where_the_sides_agree_reads_no_watched_state(rig: Rig) -> None:
    rig.serializd.log_entry(None, SHOW, 1, 1, backdate="2024-01-01T20:00:00Z")
    watch_on_trakt(rig, SHOW, 1, 1, "2024-01-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    before = len(rig.serializd.requests)
    rig.serializd.log_entry(None, SHOW, 1, 2, backdate=recent(1))
    watch_on_trakt(rig, SHOW, 1, 2, recent(1))
    result = await rig.sync_and_deliver()
    assert [p.plan.actions for p in result.plans] == [()]
    assert [r.route for r in rig.serializd.requests[before:]] == ["/api/user/{username}/diary"]


async def test_plays_of_one_season_share_one_tick_request(rig: Rig) -> None:
    for number in range(1, 6):
        watch_on_trakt(rig, SHOW, 1, number, f"2024-01-0{number}T20:00:00.000Z")
    watch_on_trakt(rig, SHOW, 2, 1, "2024-02-01T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert len([r for r in rig.serializd.diary() if r.is_log]) == 6
    ticks = [r.json() for r in rig.serializd.calls("POST", "/api/episode_log/add")]
    assert sorted(t["episode_numbers"] for t in ticks) == [[1], [1, 2, 3, 4, 5]]


async def test_a_play_removed_on_trakt_deletes_its_diary_entry_and_unticks(rig: Rig) -> None:
    watch_on_trakt(rig, SHOW, 1, 4, "2024-01-04T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert len(rig.serializd.diary()) == 1 and rig.serializd.ticks() == {(SHOW, 3572, 4)}
    with rig.trakt.lock:
        rig.trakt.user.history.clear()
        rig.trakt._touch(rig.trakt.user, "episodes.watched_at")
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    assert rig.serializd.diary() == [] and rig.serializd.ticks() == set()


async def test_an_undated_play_removed_on_trakt_unticks_the_episode(rig: Rig) -> None:
    rig.serializd.tick(None, SHOW, 1, 2)
    watch_on_trakt(rig, SHOW, 1, 2, "2024-01-02T20:00:00.000Z")
    await rig.sync_and_deliver()
    with rig.trakt.lock:
        rig.trakt.user.history.clear()
        rig.trakt._touch(rig.trakt.user, "episodes.watched_at")
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    assert rig.serializd.ticks() == set()
    assert rig.serializd.count("POST", "/api/show/reviews/delete") == 0


def test_one_viewing_removed_while_others_remain_keeps_the_tick() -> None:
    tick = Play(E1, UNDATED, f"tick:{E1}")
    baseline = {
        "trakt": Side((Play(E1, T, "t1"), Play(E1, T + 90 * 86400, "t2"))),
        "serializd": Side((tick, Play(E1, T + 90 * 86400, "s2"))),
    }
    current = {"trakt": Side((Play(E1, T + 90 * 86400, "t2"),)), "serializd": baseline["serializd"]}
    result = plan(LINK, current, baseline)
    assert result.actions == ()
    assert ("serializd", tick.record) in result.tombstones  # not copied back to Trakt either


async def test_the_run_after_a_backfill_does_not_page_through_our_own_entries(rig: Rig) -> None:
    rig.serializd.diary_page_size = 5
    for number in range(1, 8):
        watch_on_trakt(rig, SHOW, 1, number, f"2024-01-0{number}T20:00:00.000Z")
    await rig.sync_and_deliver()
    assert len(rig.serializd.diary()) == 7  # two pages
    before = rig.serializd.count("GET", "/api/user/{username}/diary")
    after_backfill = await rig.sync()  # takes our entries' ids from the delivery ledger
    assert rig.serializd.count("GET", "/api/user/{username}/diary") - before == 1
    assert [p.plan.actions for p in after_backfill.plans] == [()]
    assert [p.unchanged for p in (await rig.sync()).plans] == [True]
    full = await rig.sync(full=True)  # reads them for real: still nothing to do
    assert [p.plan.actions for p in full.plans] == [()]


async def test_an_entry_we_wrote_and_the_user_deleted_is_removed_on_trakt(rig: Rig) -> None:
    for number in (1, 2):
        watch_on_trakt(rig, SHOW, 1, number, f"2024-01-0{number}T20:00:00.000Z")
    await rig.sync_and_deliver()
    await rig.sync()  # the run after: our entries' ids replace the plays we expected
    with rig.serializd.lock:
        rig.serializd.user.reviews.pop(0)  # the user deletes episode 1's entry
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    assert [(s, n) for s, n, _ in trakt_plays(rig)] == [(1, 2)]


# --------------------------------------------------------------------------- full reads


async def test_a_full_read_finds_ticks_in_the_season_after_the_users_last_logged_one(
    rig: Rig,
) -> None:
    rig.serializd.log_entry(None, SHOW, 1, 7, backdate="2024-01-07T20:00:00Z")
    rig.serializd.tick(None, SHOW, 2, 1, 2, 3)  # no diary entries
    await rig.sync_and_deliver()
    assert trakt_plays(rig) == [
        (1, 7, "2024-01-07T20:00:00.000Z"),
        (2, 1, None),
        (2, 2, None),
        (2, 3, None),
    ]


async def test_a_full_read_reads_no_ticks_of_a_season_both_sides_hold_whole(rig: Rig) -> None:
    for number in range(1, 8):  # all of season 1 (7 episodes), in the diary and on Trakt
        when = f"2024-01-0{number}T20:00:00"
        rig.serializd.log_entry(None, SHOW, 1, number, backdate=f"{when}Z")
        watch_on_trakt(rig, SHOW, 1, number, f"{when}.000Z")
    await rig.sync_and_deliver(full=True)
    assert season_reads(rig, 1) == []
    assert season_reads(rig, 2) != []  # the next season might hold ticks


async def test_ticks_of_a_show_on_the_currently_watching_list_reach_trakt(rig: Rig) -> None:
    rig.serializd.tick(None, OTHER_SHOW, 1, 4, 5)
    rig.serializd.start_watching(None, OTHER_SHOW)
    await rig.sync_and_deliver()
    assert [(s, n) for s, n, _ in trakt_plays(rig)] == [(1, 4), (1, 5)]


async def test_a_marked_season_without_an_episode_count_is_listed_by_its_season_page(
    rig: Rig,
) -> None:
    rig.serializd.show_episode_counts = False
    rig.serializd.mark(None, SHOW, 1)
    await rig.sync_and_deliver()
    assert [(s, n) for s, n, _ in trakt_plays(rig)] == [(1, n) for n in range(1, 8)]
    assert rig.serializd.count("GET", "/api/show/{id}/season/{number}") == 1


async def test_a_season_unmarked_on_serializd_is_removed_from_trakt(rig: Rig) -> None:
    rig.serializd.mark(None, SHOW, 1)
    await rig.sync_and_deliver()
    assert len(trakt_plays(rig)) == 7
    with rig.serializd.lock:
        rig.serializd.user.marks.clear()
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    assert trakt_plays(rig) == []


@pytest.mark.parametrize(
    ("services", "discovers"),
    [(["trakt", "serializd"], False), (["serializd", "trakt"], True)],
)
async def test_only_a_link_carrying_serializd_plays_over_looks_for_ticks(
    rig: Rig, services: list[str], discovers: bool
) -> None:
    link = Link(services=services, direction="one-way")
    reader = make_reader(rig.runtime.config, rig.store, link, ["me"], time.time)
    try:
        assert reader.discover is discovers
    finally:
        await reader.aclose()
