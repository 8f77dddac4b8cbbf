"""AniList ⇄ Trakt end to end: the real runner reads both fakes, maps anime numbering through
the pinned dataset samples, plans, queues, and the real targets deliver. Pacing is lifted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, Episode, FakeTrakt, Movie, Rating, key_of
from tests.harness import put_back, sign_in_trakt
from tests.linkrig import fast_trakt
from tests.linkrig_anilist import Rig, anilist_target, completed_entry, iso, status_of
from tests.test_sync_scenarios import TraktApp
from watchbridge import readers
from watchbridge.anime_data import unmatched_records
from watchbridge.cli import cli
from watchbridge.config import parse_config
from watchbridge.deliver.trakt import TraktTarget
from watchbridge.deliver.worker import Delivered, DeliveryWorker, Outcome
from watchbridge.narrow import Narrowing
from watchbridge.reconcile import Action
from watchbridge.services.anilist import AniListError, FuzzyDate
from watchbridge.services.trakt import parse_iso
from watchbridge.store import OutboxItem
from watchbridge.sync import RunResult, apply_plan, plan_link
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

LINK = "anilist-trakt"
REZERO, AOT = 65942, 1429  # TMDB shows
REZERO_P2, AOT_P2 = (
    119661,
    131681,
)  # AniList: Re:Zero S2 Part 2 = TMDB S1E38-, AoT FS Part 2 = S4E17-
DAY = 86400.0
BREAKING_BAD = 1396  # TMDB: in no anime dataset
REZERO_P1 = 108632  # Re:Zero S2 Part 1: TMDB S1E26-38, Part 2 (REZERO_P2) goes on from E39
FRIEREN, FRIEREN_2026 = 209867, 182255  # TMDB S1 from E29, open-ended in every dataset


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_show("Re:ZERO", 2016, tmdb=REZERO, seasons={1: 60})
    fake.add_show("Attack on Titan", 2013, tmdb=AOT, seasons={4: 30})
    return fake


@pytest.fixture
def anilist(start_fake: Callable[[FakeServer], FakeServer]) -> FakeAniList:
    fake = start_fake(FakeAniList())
    assert isinstance(fake, FakeAniList)
    fake.limit = fake.burst_limit = 100_000
    fake.add_media(REZERO_P2, episodes=12)
    fake.add_media(AOT_P2, episodes=12)
    return fake


@pytest.fixture
def link_options() -> str:
    """Extra link settings; a test parametrizes it (`prefer: anilist`)."""
    return ""


@pytest.fixture
async def rig(
    tmp_path: Path,
    trakt: FakeTrakt,
    anilist: FakeAniList,
    monkeypatch: pytest.MonkeyPatch,
    link_options: str,
) -> AsyncIterator[Rig]:
    monkeypatch.setitem(readers.READERS, "anilist", "tests.linkrig_anilist")
    monkeypatch.setitem(readers.READERS, "trakt", "tests.linkrig_trakt")
    text = f"""
storage: {{path: {tmp_path / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
  anilist: {{api_url: "{anilist.url}", auth_url: "{anilist.auth_url}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      anilist: {{token: "{anilist.issue_token()}"}}
links:
  {LINK}: {{services: [anilist, trakt]{", " + link_options if link_options else ""}}}
"""
    config_path = tmp_path / "watchbridge.yaml"
    config_path.write_text(text)
    config = parse_config(text, config_path, {})
    runtime = build_runtime(config)
    runtime.open()
    sign_in_trakt(runtime.store, trakt, "me", now=time.time())

    targets: dict[str, Any] = {
        "trakt": TraktTarget(
            fast_trakt(config, runtime.store), runtime.store, config.delivery, time.time
        ),
        "anilist": anilist_target(config, runtime.store, LINK),
    }
    rig = Rig(runtime, targets, LINK, config_path)
    yield rig
    await rig.aclose()


def rate_on_trakt(trakt: FakeTrakt, item: Any, value: int, ago: float = 600) -> None:
    with trakt.lock:
        trakt.user.ratings[key_of(item)] = Rating(item, value, iso(time.time() - ago))
        trakt._touch(trakt.user, f"{item.kind}s.rated_at")


def trakt_plays(trakt: FakeTrakt, show: int) -> list[tuple[int, int, float | None]]:
    plays = []
    for entry in trakt.history():
        item = entry.item
        if isinstance(item, Episode) and item.show.tmdb == show:
            at = parse_iso(entry.watched_at) if entry.watched_at else None
            plays.append((item.season, item.number, at))
    return sorted(plays, key=lambda p: (p[0], p[1]))


async def test_trakt_plays_become_anilist_progress_and_anilist_steps_become_trakt_plays(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == REZERO)
    watched = time.time() - 30 * DAY
    for number in (39, 40, 41):  # Re:Zero S2 Part 2 episodes 1-3 on TMDB
        trakt.add_history(show.seasons[1].episodes[number], iso(watched + number * 60))
    updated = int(time.time() - 2 * DAY)
    aot = anilist.add_entry(AOT_P2, status="CURRENT", progress=1, updated_at=updated)

    await rig.sync_and_deliver()

    assert anilist.snapshot()[REZERO_P2]["progress"] == 3
    assert trakt_plays(trakt, AOT) == [(4, 17, float(updated // 60 * 60))]

    quiet = await rig.sync_and_deliver()
    assert quiet.queued == 0  # nothing echoes back

    aot.progress, aot.updated_at = 3, int(anilist.now()) + 5  # the user watched two more
    await rig.sync_and_deliver()
    assert [(s, n) for s, n, _ in trakt_plays(trakt, AOT)] == [(4, 17), (4, 18), (4, 19)]
    assert (await rig.sync_and_deliver()).queued == 0


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo"])
async def test_an_anilist_finish_date_no_one_watched_on_is_no_date(
    rig: Rig,
    trakt: FakeTrakt,
    anilist: FakeAniList,
    time_zone: Callable[[str], None],
    zone: str,
) -> None:
    # A list app wrote year 1 as the finish date (AniList takes any FuzzyDateInput). Taken for
    # a date, the last episode's play was dated year 1: Trakt refused the history add, and
    # every play queued with it; east of UTC the read itself failed. It is no date: the entry's
    # last update dates the play, as for an entry without one.
    time_zone(zone)
    updated = int(time.time() - 2 * DAY)
    anilist.add_entry(
        AOT_P2,
        status="COMPLETED",
        progress=12,
        updated_at=updated,
        started_at={"year": 1, "month": 1, "day": 1},
        completed_at={"year": 1, "month": 12, "day": 31},
    )
    anilist.add_entry(REZERO_P2, status="CURRENT", progress=2, updated_at=updated)
    await rig.sync_and_deliver()
    assert trakt_plays(trakt, AOT)[-1] == (4, 28, float(updated // 60 * 60))
    assert len(trakt_plays(trakt, AOT)) == 12
    assert trakt_plays(trakt, REZERO) == [(1, 39, None), (1, 40, float(updated // 60 * 60))]
    assert (await rig.sync_and_deliver()).queued == 0


async def test_a_back_dated_trakt_play_sent_to_anilist_does_not_come_back_as_a_new_play(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    trakt.add_history(show.seasons[4].episodes[17], iso(time.time() - 400 * DAY))
    await rig.sync_and_deliver()
    assert anilist.snapshot()[AOT_P2]["progress"] == 1
    for _ in range(2):
        assert (await rig.sync_and_deliver()).queued == 0
    assert len(trakt_plays(trakt, AOT)) == 1


async def test_a_first_sync_sends_earlier_episodes_undated_rather_than_inventing_dates(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    updated = int(time.time() - 2 * DAY)
    anilist.add_entry(AOT_P2, status="CURRENT", progress=3, updated_at=updated)
    await rig.sync_and_deliver()
    assert trakt_plays(trakt, AOT) == [
        (4, 17, None),
        (4, 18, None),
        (4, 19, float(updated // 60 * 60)),
    ]
    assert (await rig.sync_and_deliver()).queued == 0


async def test_an_anilist_score_becomes_the_trakt_rating_of_its_season_and_back(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    from tests.fakes.trakt import Season

    entry = anilist.add_entry(AOT_P2, status="COMPLETED", progress=12, score=85)
    await rig.sync_and_deliver()
    (rating,) = trakt.ratings()
    assert isinstance(rating.item, Season) and rating.item.show.tmdb == AOT
    assert (rating.item.number, rating.rating) == (4, 9)  # raw 85 is 8.5: halves up
    quiet = await rig.sync_and_deliver()  # 9 on Trakt reads back as 90: no flap
    assert [a for p in quiet.plans for a in p.plan.actions] == []

    entry.score = 40  # the user lowers it on AniList
    entry.updated_at = int(anilist.now()) + 5
    await rig.sync_and_deliver()
    assert [r.rating for r in trakt.ratings()] == [4]


# --------------------------------------------------------------------------- score conflicts


async def rated_both_ways(trakt: FakeTrakt, anilist: FakeAniList, rig: Rig) -> Any:
    """AoT Final Season Part 2 scored 60 on AniList, synced to Trakt's S4 as 6; then the user
    rates S4 9 on Trakt and, later, watches an episode on AniList (its updatedAt moves)."""
    entry = anilist.add_entry(
        AOT_P2, status="CURRENT", progress=3, score=60, updated_at=int(time.time() - 3 * DAY)
    )
    await rig.sync_and_deliver()
    assert [r.rating for r in trakt.ratings()] == [6]
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    rate_on_trakt(trakt, show.seasons[4], 9)
    entry.progress, entry.updated_at = 4, int(anilist.now()) + 5
    return entry


async def test_a_duplicate_trakt_play_of_the_last_episode_removed_leaves_anilist_completed(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    completed_entry(anilist, AOT_P2, 12, time.time() - 30 * DAY)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    extra = trakt.log_play(show.seasons[4].episodes[28], iso(time.time() - 40 * DAY))
    for full in (False, True):  # AniList counts it within its progress, without a write
        await rig.sync_and_deliver(full=full)
    app = TraktApp(trakt)
    app.unwatch(extra)  # tidied away on Trakt: S4E28 is still watched once
    app.http.close()
    for full in (False, True, True):
        await rig.sync_and_deliver(full=full)
    assert status_of(anilist, AOT_P2) == ("COMPLETED", 12, 0)
    assert len(trakt_plays(trakt, AOT)) == 12


async def a_paused_rewatch_finished_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> Any:
    """AoT Final Season Part 2 completed; a rewatch started on AniList (2 episodes) and
    paused; weeks later its other ten episodes watched and logged on Trakt."""
    entry = completed_entry(anilist, AOT_P2, 12, time.time() - 30 * DAY)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    anilist.advance(60)
    entry.status, entry.progress, entry.updated_at = "REPEATING", 2, int(anilist.now())
    await rig.sync_and_deliver()
    anilist.advance(60)
    entry.status, entry.updated_at = "PAUSED", int(anilist.now())
    await rig.sync_and_deliver()
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    start = time.time() - 5 * 3600
    for n, number in enumerate(range(19, 29)):
        trakt.log_play(show.seasons[4].episodes[number], iso(start + n * 1500))
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    return entry


async def test_a_paused_rewatch_finished_on_trakt_counts_one_more_rewatch(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await a_paused_rewatch_finished_on_trakt(rig, trakt, anilist)
    assert status_of(anilist, AOT_P2) == ("COMPLETED", 12, 1)
    assert len(trakt_plays(trakt, AOT)) == 24


async def test_the_rewatch_after_a_paused_one_finished_on_trakt_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    entry = await a_paused_rewatch_finished_on_trakt(rig, trakt, anilist)
    anilist.advance(3600)
    entry.status, entry.progress, entry.updated_at = "REPEATING", 3, int(anilist.now())
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert len(trakt_plays(trakt, AOT)) == 27


@pytest.mark.parametrize("progress", [3, 0])
async def test_a_rewatch_begun_and_paused_on_anilist_between_two_reads_unwatches_nothing(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, progress: int
) -> None:
    entry = completed_entry(anilist, AOT_P2, 12, time.time() - 30 * DAY)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert len(trakt_plays(trakt, AOT)) == 12
    # Between two reads the user starts a rewatch (REPEATING), watches `progress` episodes of
    # it, and pauses it: the reader never sees it rewatching, only PAUSED with less progress.
    anilist.advance(3600)
    entry.status, entry.progress, entry.updated_at = "PAUSED", progress, int(anilist.now())
    for full in (False, True, False, True):  # confirmed: no guard would stop a removal
        result = await rig.sync_and_deliver(full=full, confirm_removals=True)
        assert [k for k, _ in actions_for(result, "trakt") if k.startswith("remove")] == []
        assert result.held == ()
    played = [(s, n) for s, n, _ in trakt_plays(trakt, AOT)]
    assert sorted(set(played)) == [(4, n) for n in range(17, 29)]  # the first viewing stays
    assert len(played) == 12 + progress  # and the rewatch's episodes are watched again
    assert status_of(anilist, AOT_P2) == ("PAUSED", progress, 0)  # nothing written back


async def test_a_rewatch_begun_after_one_completed_uncounted_unwatches_nothing_of_it(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await completed_on_both(rig, trakt, anilist)
    entry = anilist.user().by_media(AOT_P2)
    assert entry is not None

    async def logged(status: str, progress: int, repeat: int, plays: int) -> None:
        anilist.advance(3600)
        entry.status, entry.progress, entry.repeat = status, progress, repeat
        entry.updated_at = int(anilist.now())
        for full in (False, True):  # confirmed: no guard would stop a removal
            result = await rig.sync_and_deliver(full=full, confirm_removals=True)
            assert [k for k, _ in actions_for(result, "trakt") if k.startswith("remove")] == []
        assert trakt.count("POST", "/sync/history/remove") == 0
        assert len(trakt_plays(trakt, AOT)) == plays

    # A rewatch logged to 5 and completed with its count left at 0 (a client that does not
    # raise it): a pass of 12. Started again, it must not take that pass back, and its
    # episodes are plays of their own.
    await logged("REPEATING", 5, 0, 17)
    await logged("COMPLETED", 12, 0, 24)
    await logged("REPEATING", 0, 0, 24)
    await logged("REPEATING", 2, 0, 26)
    await logged("COMPLETED", 12, 1, 36)  # finished and counted this time
    await logged("COMPLETED", 12, 2, 36)  # the first one counted by hand later: no more
    await logged("REPEATING", 1, 2, 37)
    assert status_of(anilist, AOT_P2) == ("REPEATING", 1, 2)  # nothing written back


async def test_the_last_two_episodes_unwatched_on_trakt_lower_a_completed_entry_twice(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await completed_on_both(rig, trakt, anilist)
    # The first removal sets the entry back to Watching at 11: that is ours, not the user
    # beginning a rewatch there, so the second removal still lowers it.
    for number, progress in ((28, 11), (27, 10)):
        app = TraktApp(trakt)
        for played in trakt.history():
            item = played.item
            if isinstance(item, Episode) and item.show.tmdb == AOT and item.number == number:
                app.unwatch(played)
        app.http.close()
        for full in (False, True):
            await rig.sync_and_deliver(full=full, confirm_removals=True)
        assert status_of(anilist, AOT_P2) == ("CURRENT", progress, 0)
    assert len(trakt_plays(trakt, AOT)) == 10


@pytest.mark.parametrize("progress", [3, 0])
async def test_a_completed_entry_set_back_to_watching_is_a_rewatch_not_an_unwatch(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, progress: int
) -> None:
    show = await completed_on_both(rig, trakt, anilist)
    # The user starts a rewatch (or resets the entry) the usual AniList way: back to
    # Watching, at a lower progress. That watched nothing again, and unwatched nothing.
    anilist.advance(3600)
    entry = anilist.user().by_media(AOT_P2)
    assert entry is not None
    entry.status, entry.progress, entry.updated_at = "CURRENT", progress, int(anilist.now())
    for full in (False, True, False):  # confirmed: no guard would stop a removal
        result = await rig.sync_and_deliver(full=full, confirm_removals=True)
        assert [p.plan.actions for p in result.plans] == [()]
    assert len(trakt_plays(trakt, AOT)) == 12
    # Episodes logged on AniList since are the rewatch's: watched again on Trakt
    anilist.advance(3600)
    entry.progress, entry.updated_at = progress + 2, int(anilist.now())
    await rig.sync_and_deliver()
    assert len(trakt_plays(trakt, AOT)) == 14
    # One watched and logged on Trakt goes to AniList once, and does not come back
    rewatch_on_trakt(trakt, show, range(17 + progress + 2, 18 + progress + 2), time.time() - 600)
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert status_of(anilist, AOT_P2) == ("CURRENT", progress + 3, 0)
    assert len(trakt_plays(trakt, AOT)) == 15
    # Finished on AniList: the rest of the rewatch reaches Trakt, nothing twice
    anilist.advance(3600)
    entry.status, entry.progress, entry.updated_at = "COMPLETED", 12, int(anilist.now())
    for full in (False, True, False):
        await rig.sync_and_deliver(full=full, confirm_removals=True)
    assert len(trakt_plays(trakt, AOT)) == 12 + 12 - progress
    assert status_of(anilist, AOT_P2) == ("COMPLETED", 12, 0)


async def test_episodes_watched_again_after_progress_was_lowered_reach_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    aot = anilist.add_entry(
        AOT_P2, status="CURRENT", progress=3, updated_at=int(time.time() - 2 * DAY)
    )
    await rig.sync_and_deliver()
    aot.progress, aot.updated_at = 1, int(anilist.now()) + 5  # set too far: back to 1
    await rig.sync_and_deliver(full=True, confirm_removals=True)
    assert [(s, n) for s, n, _ in trakt_plays(trakt, AOT)] == [(4, 17)]
    aot.progress, aot.updated_at = 3, int(anilist.now()) + 10  # days later: watched
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert [(s, n) for s, n, _ in trakt_plays(trakt, AOT)] == [(4, 17), (4, 18), (4, 19)]


async def test_newest_wins_a_later_trakt_rating_beats_an_old_score_after_a_progress_step(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await rated_both_ways(trakt, anilist, rig)
    await rig.sync_and_deliver()
    assert anilist.snapshot()[AOT_P2]["score"] == 90
    assert [r.rating for r in trakt.ratings()] == [9]


@pytest.mark.parametrize("link_options", ["prefer: anilist"])
async def test_prefer_anilist_keeps_the_anilist_score_over_a_later_trakt_rating(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    entry = await rated_both_ways(trakt, anilist, rig)
    entry.score = 40  # changed on AniList an hour ago, before the Trakt rating
    entry.updated_at = int(time.time() - 3600)
    await rig.sync_and_deliver()
    assert anilist.snapshot()[AOT_P2]["score"] == 40
    assert [r.rating for r in trakt.ratings()] == [4]


@pytest.mark.parametrize("link_options", ["prefer: trakt"])
async def test_prefer_trakt_keeps_the_trakt_rating_over_a_later_anilist_score(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    entry = await rated_both_ways(trakt, anilist, rig)
    entry.score = 40  # and the user changes the score on AniList too, after the Trakt rating
    await rig.sync_and_deliver()
    assert anilist.snapshot()[AOT_P2]["score"] == 90
    assert [r.rating for r in trakt.ratings()] == [9]


async def test_a_season_shared_by_several_entries_rates_by_its_first_scored_entry(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    for media in (REZERO_P1, REZERO_P2):
        anilist.add_media(media, episodes=13 if media == REZERO_P1 else 12)
    earlier = int(time.time() - 3 * DAY)
    anilist.add_entry(REZERO_P1, status="COMPLETED", progress=13, score=70, updated_at=earlier)
    anilist.add_entry(REZERO_P2, status="COMPLETED", progress=12, score=90, updated_at=earlier)
    await rig.sync_and_deliver()
    assert [r.rating for r in trakt.ratings()] == [7]  # S1 is Part 1's score, not Part 2's

    show = next(s for s in trakt.shows if s.tmdb == REZERO)
    rate_on_trakt(trakt, show.seasons[1], 5)
    await rig.sync_and_deliver()
    assert (anilist.snapshot()[REZERO_P1]["score"], anilist.snapshot()[REZERO_P2]["score"]) == (
        50,
        90,
    )
    assert (await rig.sync_and_deliver()).queued == 0


# --------------------------------------------------------------------------- what AniList can hold


def actions_for(result: RunResult, target: str) -> list[tuple[str, str]]:
    return [(a.kind, a.item) for p in result.plans for a in p.plan.actions if a.target == target]


async def test_full_runs_never_plan_a_non_anime_show_to_anilist_nor_remove_it_from_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    anime = next(s for s in trakt.shows if s.tmdb == AOT)
    other = trakt.add_show("Breaking Bad", 2008, tmdb=BREAKING_BAD, seasons={1: 7})
    for number in range(17, 29):
        trakt.add_history(anime.seasons[4].episodes[number], iso(time.time() - DAY + number))
    trakt.add_history(other.seasons[1].episodes[1], iso(time.time() - 2 * DAY))
    rate_on_trakt(trakt, other.seasons[1], 9)

    for _ in range(3):
        result = await rig.sync_and_deliver(full=True)
        assert not any(str(BREAKING_BAD) in item for _, item in actions_for(result, "anilist"))
        assert actions_for(result, "trakt") == []
    assert anilist.snapshot()[AOT_P2]["status"] == "COMPLETED"
    assert [(s, n) for s, n, _ in trakt_plays(trakt, BREAKING_BAD)] == [(1, 1)]
    assert len(trakt.ratings()) == 1


class SkipEverything:
    """The AniList target of earlier releases, as far as this matters: every link row it
    could not map was settled as done ("not anime: skipped")."""

    name = "anilist"
    batch_size = 50

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]:
        return {item.id: Delivered("not anime (in no mapping dataset): skipped") for item in items}

    async def aclose(self) -> None:
        return None


async def test_a_non_anime_play_an_earlier_release_settled_as_done_is_not_removed_later(
    rig: Rig, trakt: FakeTrakt
) -> None:
    other = trakt.add_show("Breaking Bad", 2008, tmdb=BREAKING_BAD, seasons={1: 7})
    watched = float(int(time.time() - 2 * DAY) // 60 * 60)
    trakt.add_history(other.seasons[1].episodes[1], iso(watched))
    config, store = rig.runtime.config, rig.runtime.store
    (planned,), _ = await plan_link(config, store, LINK, full=True)
    add = Action(
        "add_play", "anilist", f"episode:tmdb:{BREAKING_BAD}:s1e1", "new on trakt", watched
    )
    old = replace(planned, plan=replace(planned.plan, actions=(*planned.plan.actions, add)))
    apply_plan(store, config.links[LINK], LINK, old, False, time.time())
    worker = DeliveryWorker(lambda _: [], config.delivery)
    worker.targets = {"anilist": SkipEverything()}
    await worker.pass_once(rig.runtime)

    for _ in range(2):
        result = await rig.sync_and_deliver(full=True)
        assert actions_for(result, "trakt") == []
    assert [(s, n) for s, n, _ in trakt_plays(trakt, BREAKING_BAD)] == [(1, 1)]


async def test_a_play_past_the_episode_count_of_a_listed_entry_is_listed_and_not_planned(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = trakt.add_show("Frieren", 2023, tmdb=FRIEREN, seasons={1: 45})
    anilist.add_entry(FRIEREN_2026, episodes=10, status="CURRENT", progress=9)
    trakt.add_history(show.seasons[1].episodes[28 + 11], iso(time.time() - DAY))  # "episode 11"
    result = await rig.sync_and_deliver()
    assert actions_for(result, "anilist") == []
    assert anilist.snapshot()[FRIEREN_2026]["progress"] == 9
    records = unmatched_records(rig.runtime.store, ["me"])
    assert [(r.key, r.code) for r in records] == [(f"episode:tmdb:{FRIEREN}:s1e39", "outside")]


async def test_plays_of_a_season_the_datasets_do_not_know_yet_are_listed_and_not_planned(
    rig: Rig, trakt: FakeTrakt
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    trakt.add_season(show, 5)
    trakt.add_episode(show, 5, 1)
    trakt.add_history(show.seasons[5].episodes[1], iso(time.time() - DAY))
    result = await rig.sync_and_deliver()
    assert actions_for(result, "anilist") == []
    records = unmatched_records(rig.runtime.store, ["me"])
    assert [(r.key, r.code) for r in records] == [(f"episode:tmdb:{AOT}:s5e1", "new-season")]


async def anime_unmatched(rig: Rig) -> str:
    """What `watchbridge anime unmatched --all` prints now (every episode on its own line)."""
    args = ["anime", "unmatched", "--all", "--config", str(rig.config_path)]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_an_entry_deleted_from_anilist_leaves_the_unmatched_list_at_the_next_full_read(
    rig: Rig, anilist: FakeAniList
) -> None:
    gone = anilist.add_entry(999, status="CURRENT", progress=2)  # in no mapping dataset
    anilist.add_entry(998, status="CURRENT", progress=1)
    await rig.sync_and_deliver()
    listed = await anime_unmatched(rig)
    assert "anilist:999" in listed and "anilist:998" in listed
    with anilist.lock:  # the user deletes the entry on AniList
        del anilist.viewer.entries[gone.id]
    await rig.sync_and_deliver(full=True)  # the daily full read: deletions show up there
    listed = await anime_unmatched(rig)
    assert "anilist:999" not in listed
    assert "anilist:998" in listed  # still on the list and still unmatched


async def test_a_play_removed_from_trakt_leaves_the_unmatched_list_at_the_next_run(
    rig: Rig, trakt: FakeTrakt
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    trakt.add_season(show, 5)
    trakt.add_episode(show, 5, 1)
    trakt.add_episode(show, 5, 2)
    played = trakt.add_history(show.seasons[5].episodes[1], iso(time.time() - DAY))
    trakt.add_history(show.seasons[5].episodes[2], iso(time.time() - DAY))
    await rig.sync_and_deliver()
    listed = await anime_unmatched(rig)
    assert f"episode:tmdb:{AOT}:s5e1" in listed and f"episode:tmdb:{AOT}:s5e2" in listed
    with trakt.lock:  # the user removes the play on Trakt
        trakt.user.history = [e for e in trakt.user.history if e.id != played.id]
        trakt._touch(trakt.user, "episodes.watched_at")
    await rig.sync_and_deliver()
    listed = await anime_unmatched(rig)
    assert f"episode:tmdb:{AOT}:s5e1" not in listed
    assert f"episode:tmdb:{AOT}:s5e2" in listed


# --------------------------------------------------------------------------- narrowed runs


def two_titles(trakt: FakeTrakt, anilist: FakeAniList) -> None:
    """AoT on AniList only (CURRENT, 2 episodes); Re:Zero on Trakt only (episodes 1-2 of the
    part AniList keeps apart) and on AniList as a COMPLETED entry of another part."""
    show = next(s for s in trakt.shows if s.tmdb == REZERO)
    for number in (39, 40):
        trakt.add_history(show.seasons[1].episodes[number], iso(time.time() - 3600 + number))
    anilist.add_entry(AOT_P2, status="CURRENT", progress=2, updated_at=int(time.time() - DAY))


async def test_a_run_narrowed_to_one_anilist_id_writes_only_that_title(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    two_titles(trakt, anilist)
    result = await rig.sync_and_deliver(Narrowing(anilist_ids=frozenset({AOT_P2})))
    assert {a.item.split(":")[2] for p in result.plans for a in p.plan.actions} == {str(AOT)}
    assert [(s, n) for s, n, _ in trakt_plays(trakt, AOT)] == [(4, 17), (4, 18)]
    assert REZERO_P2 not in anilist.snapshot()


async def test_a_run_narrowed_to_an_anilist_id_also_carries_that_title_from_the_other_side(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    two_titles(trakt, anilist)
    await rig.sync_and_deliver(Narrowing(anilist_ids=frozenset({REZERO_P2})))
    assert anilist.snapshot()[REZERO_P2]["progress"] == 2
    assert trakt_plays(trakt, AOT) == []


async def test_a_run_narrowed_to_a_status_writes_only_entries_in_that_status(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    anilist.add_entry(AOT_P2, status="CURRENT", progress=1, updated_at=int(time.time() - DAY))
    anilist.add_entry(REZERO_P2, status="COMPLETED", progress=12, updated_at=int(time.time()))
    await rig.sync_and_deliver(Narrowing(statuses=frozenset({"COMPLETED"})))
    assert len(trakt_plays(trakt, REZERO)) == 12
    assert trakt_plays(trakt, AOT) == []


async def test_after_a_narrowed_run_the_next_run_sees_everything_and_removes_nothing(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await rig.sync_and_deliver()  # a normal run first: the link has a baseline
    two_titles(trakt, anilist)
    await rig.sync_and_deliver(Narrowing(anilist_ids=frozenset({AOT_P2})))

    after = await rig.sync_and_deliver()
    kinds = {a.kind for p in after.plans for a in p.plan.actions}
    assert kinds == {"add_play"}  # the rest of the changes, and no removal
    assert anilist.snapshot()[REZERO_P2]["progress"] == 2
    assert [(s, n) for s, n, _ in trakt_plays(trakt, AOT)] == [(4, 17), (4, 18)]
    assert (await rig.sync_and_deliver()).queued == 0


async def test_a_back_dated_play_a_narrowed_run_sent_to_anilist_is_not_copied_back_later(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await rig.sync_and_deliver()
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    trakt.add_history(show.seasons[4].episodes[17], iso(time.time() - 3 * DAY))
    anilist.add_entry(REZERO_P2, status="PLANNING")  # the seeded play moves no Trakt activity
    await rig.sync_and_deliver(Narrowing(anilist_ids=frozenset({AOT_P2})))
    assert anilist.snapshot()[AOT_P2]["progress"] == 1
    for _ in range(2):
        assert (await rig.sync_and_deliver()).queued == 0
    assert len(trakt_plays(trakt, AOT)) == 1


@pytest.mark.parametrize("link_options", ["max_removal_share: 0.5"])
async def test_a_score_given_again_after_a_narrowed_run_removed_its_rating_reaches_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    """AoT FS Part 2 scored 80 on AniList, synced to Trakt's S4 as 8. The user clears the
    score and runs the link narrowed to that title (removals confirmed): Trakt's 8 is
    removed. Then the user scores it 70 on AniList. Trakt's 8 went by the narrowed run's own
    removal, not the user's: the next run copies the 70, it does not delete it from AniList."""
    entry = anilist.add_entry(
        AOT_P2, status="COMPLETED", progress=12, score=80, updated_at=int(time.time() - DAY)
    )
    anilist.add_entry(  # one removal of two is no mass one (at most half)
        REZERO_P2, status="COMPLETED", progress=12, score=60, updated_at=int(time.time() - DAY)
    )
    await rig.sync_and_deliver()
    assert sorted(r.rating for r in trakt.ratings()) == [6, 8]
    entry.score, entry.updated_at = 0, int(anilist.now()) + 5
    narrowed = Narrowing(anilist_ids=frozenset({AOT_P2}))
    await rig.sync_and_deliver(narrowed, confirm_removals=True)
    assert [r.rating for r in trakt.ratings()] == [6]
    entry.score, entry.updated_at = 70, int(anilist.now()) + 10
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert anilist.snapshot()[AOT_P2]["score"] == 70
    assert sorted(r.rating for r in trakt.ratings()) == [6, 7]


@pytest.mark.parametrize("link_options", ["max_removal_share: 0.5"])
async def test_a_rating_a_narrowed_run_copied_and_the_user_cleared_there_is_not_copied_back(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    """AoT FS Part 2 scored 80 on AniList; a run narrowed to that title copies it to the
    unrated Trakt S4 as 8. The user clears it on Trakt before the next run: that clear is the
    user's (the copy landed), so the next run removes the score from AniList, it does not
    copy the 8 back to Trakt."""
    entry = anilist.add_entry(
        AOT_P2, status="COMPLETED", progress=12, updated_at=int(time.time() - DAY)
    )
    anilist.add_entry(  # one removal of two is no mass one (at most half)
        REZERO_P2, status="COMPLETED", progress=12, score=60, updated_at=int(time.time() - DAY)
    )
    await rig.sync_and_deliver()
    assert [r.rating for r in trakt.ratings()] == [6]
    entry.score, entry.updated_at = 80, int(anilist.now()) + 5
    await rig.sync_and_deliver(Narrowing(anilist_ids=frozenset({AOT_P2})))
    assert sorted(r.rating for r in trakt.ratings()) == [6, 8]
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    with trakt.lock:  # the user clears it on Trakt
        del trakt.user.ratings[key_of(show.seasons[4])]
        trakt._touch(trakt.user, "seasons.rated_at")
    for full in (False, True):
        await rig.sync_and_deliver(full=full)
    assert anilist.snapshot()[AOT_P2]["score"] == 0
    assert [r.rating for r in trakt.ratings()] == [6]


async def test_a_narrowed_first_run_does_not_count_as_the_links_first_run(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    two_titles(trakt, anilist)
    await rig.sync_and_deliver(Narrowing(anilist_ids=frozenset({REZERO_P2})))
    plans, _ = await plan_link(rig.runtime.config, rig.runtime.store, LINK)
    assert all(p.first_run for p in plans)


async def test_sync_narrowed_by_anilist_id_shows_only_that_title(
    rig: Rig, anilist: FakeAniList
) -> None:
    anilist.add_entry(AOT_P2, status="CURRENT", progress=1, updated_at=int(time.time() - DAY))
    anilist.add_entry(REZERO_P2, status="CURRENT", progress=1, updated_at=int(time.time() - DAY))
    args = ["sync", "--config", str(rig.config_path), "--dry-run", "--anilist-id", str(AOT_P2)]
    result = await asyncio.to_thread(CliRunner().invoke, cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"episode:tmdb:{AOT}:s4e17" in result.stdout
    assert f"tmdb:{REZERO}:" not in result.stdout
    assert f"narrowed to AniList {AOT_P2}" in result.stdout


async def test_a_second_viewing_anilist_already_counts_is_not_removed_from_trakt_later(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    episode = show.seasons[4].episodes[17]
    trakt.add_history(episode, iso(time.time() - 400 * DAY))
    trakt.add_history(episode, iso(time.time() - 10 * DAY))
    anilist.add_entry(AOT_P2, status="CURRENT", progress=1, updated_at=int(time.time() - 2 * DAY))
    await rig.sync_and_deliver()
    for _ in range(2):
        result = await rig.sync_and_deliver(full=True)
        assert [k for k, _ in actions_for(result, "trakt")] == []
    assert len(trakt_plays(trakt, AOT)) >= 2
    assert anilist.snapshot()[AOT_P2]["progress"] == 1


# --------------------------------------------------------------------------- absolute numbering

ONE_PIECE, GINTAMA = 37854, 57041  # TMDB shows the datasets map by absolute number
OP, GIN = 21, 918  # AniList: One Piece (ongoing), Gintama (201 episodes)
# TMDB-shaped seasons (S1 = 1-61, S2 = 62-77 as the sample anibridge ranges have them; the
# later ones made up): absolute 1100 is S23E12.
OP_SEASONS = (61, 16, 14, 39, 13, 52, 33, 35, 73, 45, 26, 14, 101, 56, 100, 35, 62, 50, 118, 33,
              98, 14, 194)  # fmt: skip


def add_one_piece(trakt: FakeTrakt, seasons: Sequence[tuple[int, int]] = ()) -> Any:
    """One Piece on Trakt with `number_abs` on every episode: `seasons` as (season, first
    episode number) overrides where a season's numbering starts (1 by default)."""
    show = trakt.add_show("One Piece", 1999, tmdb=ONE_PIECE)
    starts = dict(seasons)
    absolute = 0
    for season, count in enumerate(OP_SEASONS, 1):
        first = starts.get(season, 1)
        for number in range(first, first + count):
            absolute += 1
            trakt.add_episode(show, season, number, number_abs=absolute)
    return show


def add_gintama(trakt: FakeTrakt) -> Any:
    """Gintama on Trakt in TVDB's four seasons, with specials and no `number_abs`."""
    return trakt.add_show("Gintama", 2006, tmdb=GINTAMA, seasons={0: 3, 1: 49, 2: 50, 3: 51, 4: 51})


def dated(plays: list[tuple[int, int, float | None]]) -> list[tuple[int, int]]:
    return [(season, number) for season, number, at in plays if at is not None]


def season_lists_read(trakt: FakeTrakt) -> int:
    return trakt.count("GET", "/shows/{id}/seasons") + trakt.count("GET", "/search/{id_type}/{id}")


async def test_one_piece_episode_1100_on_anilist_becomes_trakts_s23e12(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    add_one_piece(trakt)
    anilist.add_entry(
        OP, episodes=None, status="CURRENT", progress=1100, updated_at=int(time.time())
    )
    await rig.sync_and_deliver()
    plays = trakt_plays(trakt, ONE_PIECE)
    assert dated(plays) == [(23, 12)]
    assert len(plays) == 1100
    assert unmatched_records(rig.runtime.store, ["me"]) == []
    assert (await rig.sync_and_deliver()).queued == 0


async def test_a_trakt_play_of_one_piece_s23e12_becomes_anilist_progress_1100(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = add_one_piece(trakt)
    anilist.add_media(OP, episodes=None)
    trakt.add_history(show.seasons[23].episodes[12], iso(time.time() - DAY))
    await rig.sync_and_deliver()
    assert anilist.snapshot()[OP]["progress"] == 1100


async def test_gintama_episode_120_on_anilist_is_trakts_s3e21_counted_without_number_abs(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    add_gintama(trakt)
    anilist.add_entry(
        GIN, episodes=201, status="CURRENT", progress=120, updated_at=int(time.time())
    )
    await rig.sync_and_deliver()
    plays = trakt_plays(trakt, GINTAMA)
    assert dated(plays) == [(3, 21)]
    expected = {(1, n) for n in range(1, 50)} | {(2, n) for n in range(1, 51)}
    assert {(s, n) for s, n, _ in plays} == expected | {(3, n) for n in range(1, 22)}


async def test_an_override_to_absolute_numbers_wins_over_the_datasets_seasonal_ranges(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.linkrig_anilist as linkrig_anilist
    from tests.fakes.anime_datasets import sample_bodies
    from watchbridge.anime import load_index

    overridden = load_index(sample_bodies(), "21: {tmdb: {show: 37854, absolute: true}}")
    monkeypatch.setattr(linkrig_anilist, "_INDEX", [overridden])
    add_one_piece(trakt, seasons=[(2, 62)])  # Trakt numbers season 2 on from 62 (§6 D)
    anilist.add_entry(OP, episodes=None, status="CURRENT", progress=66, updated_at=int(time.time()))
    await rig.sync_and_deliver()
    plays = trakt_plays(trakt, ONE_PIECE)
    assert dated(plays) == [(2, 66)]  # the sample anibridge ranges alone say S2E5
    assert len(plays) == 66


async def test_when_trakts_season_list_cannot_be_read_the_title_waits_and_the_next_run_retries(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    add_gintama(trakt)
    anilist.add_entry(GIN, episodes=201, status="CURRENT", progress=3, updated_at=int(time.time()))
    anilist.add_entry(AOT_P2, status="CURRENT", progress=1, updated_at=int(time.time()))
    trakt.fail_next(2, 503, route="/shows/{id}/seasons")  # the request and its one retry
    await rig.sync_and_deliver()
    assert trakt.knobs_pending == 0
    assert trakt_plays(trakt, GINTAMA) == []
    assert [(s, n) for s, n, _ in trakt_plays(trakt, AOT)] == [(4, 17)]  # the rest went on
    records = unmatched_records(rig.runtime.store, ["me"])
    assert [(r.key, r.code) for r in records] == [(f"anilist:{GIN}", "seasons")]

    await rig.sync_and_deliver()  # nothing changed on either side: tried again all the same
    assert dated(trakt_plays(trakt, GINTAMA)) == [(1, 3)]
    assert unmatched_records(rig.runtime.store, ["me"]) == []


async def test_later_runs_even_full_ones_read_no_season_list_again(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    add_gintama(trakt)
    anilist.add_entry(GIN, episodes=201, status="CURRENT", progress=5, updated_at=int(time.time()))
    await rig.sync_and_deliver()
    assert season_lists_read(trakt) == 2  # the TMDB-id search and the list
    assert (await rig.sync_and_deliver()).queued == 0
    assert (await rig.sync_and_deliver(full=True)).queued == 0
    assert season_lists_read(trakt) == 2


async def test_a_webhook_play_of_gintama_s3e21_sets_anilist_progress_120(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    from watchbridge.model import Ids, MediaRef, ref_to_dict
    from watchbridge.store import NewOutboxRow

    add_gintama(trakt)
    anilist.add_media(GIN, episodes=201)
    item = MediaRef("episode", show_ids=Ids(tmdb=str(GINTAMA)), season=3, number=21)
    payload = {"item": ref_to_dict(item), "at": time.time() - 60}
    row = NewOutboxRow("anilist", "me", "play", payload, f"me:anilist:{item.key()}", "webhook-1")
    assert rig.runtime.store.enqueue([row], time.time()) == 1
    worker = DeliveryWorker(lambda _: [], rig.runtime.config.delivery)
    worker.targets = {"anilist": rig.targets["anilist"]}
    await worker.pass_once(rig.runtime)
    assert anilist.snapshot()[GIN]["progress"] == 120


async def test_a_gintama_score_is_the_rating_of_trakts_first_season_and_back(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    from tests.fakes.trakt import Season

    show = add_gintama(trakt)
    entry = anilist.add_entry(
        GIN, episodes=201, status="CURRENT", progress=2, score=80, updated_at=int(time.time() - DAY)
    )
    await rig.sync_and_deliver()
    (rating,) = trakt.ratings()
    assert isinstance(rating.item, Season) and (rating.item.number, rating.rating) == (1, 8)

    rate_on_trakt(trakt, show.seasons[1], 5)
    await rig.sync_and_deliver()
    assert entry.score == 50


async def test_a_rewatch_in_progress_on_a_first_sync_is_a_second_play_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    anilist.add_entry(
        AOT_P2, status="REPEATING", progress=2, repeat=0, updated_at=int(time.time() - DAY)
    )
    await rig.sync_and_deliver()
    played = [(s, n) for s, n, _ in trakt_plays(trakt, AOT)]
    assert played.count((4, 17)) == 2 and played.count((4, 18)) == 2  # watched, and again
    assert len(played) == 12 + 2
    second = await rig.sync_and_deliver()
    assert [p.plan.actions for p in second.plans] == [()]


# --------------------------------------------------------------------------- rewatches on Trakt


async def completed_on_both(rig: Rig, trakt: FakeTrakt, anilist: FakeAniList) -> Any:
    """AoT Final Season Part 2 finished on AniList a month ago and synced to Trakt (episodes
    1-11 undated, 12 dated), then read back whole: its Trakt show."""
    finished = time.time() - 30 * DAY
    completed_entry(anilist, AOT_P2, 12, finished)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)  # a delta read never sees Trakt's undated plays
    assert len(trakt_plays(trakt, AOT)) == 12
    return next(s for s in trakt.shows if s.tmdb == AOT)


def rewatch_on_trakt(trakt: FakeTrakt, show: Any, numbers: range, start: float) -> None:
    for n, number in enumerate(numbers):
        trakt.log_play(show.seasons[4].episodes[number], iso(start + n * 1500))


async def test_a_trakt_rewatch_of_episodes_1_and_2_of_a_completed_entry_starts_one_on_anilist(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = await completed_on_both(rig, trakt, anilist)
    rewatch_on_trakt(trakt, show, range(17, 19), time.time() - 3 * 3600)
    await rig.sync_and_deliver()
    assert status_of(anilist, AOT_P2) == ("REPEATING", 2, 0)


async def test_a_rewatch_started_from_trakt_is_not_copied_back_and_then_plans_nothing(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = await completed_on_both(rig, trakt, anilist)
    rewatch_on_trakt(trakt, show, range(17, 19), time.time() - 3 * DAY)  # logged late
    await rig.sync_and_deliver()
    for full in (False, True):
        result = await rig.sync_and_deliver(full=full)
        assert [p.plan.actions for p in result.plans] == [()]
    assert len(trakt_plays(trakt, AOT)) == 14


async def test_finishing_a_rewatch_on_trakt_completes_it_on_anilist_with_one_more_rewatch(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = await completed_on_both(rig, trakt, anilist)
    rewatch_on_trakt(trakt, show, range(17, 19), time.time() - 4 * DAY)
    await rig.sync_and_deliver()
    rewatch_on_trakt(trakt, show, range(19, 29), time.time() - 3 * DAY)
    await rig.sync_and_deliver()
    assert status_of(anilist, AOT_P2) == ("COMPLETED", 12, 1)
    for full in (False, True):
        result = await rig.sync_and_deliver(full=full)
        assert [p.plan.actions for p in result.plans] == [()]
    assert len(trakt_plays(trakt, AOT)) == 24


@pytest.mark.parametrize(
    "days_ago",
    [pytest.param(40, id="older-than-the-completion"), pytest.param(None, id="undated")],
)
async def test_a_second_trakt_play_that_is_no_rewatch_stays_absorbed(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, days_ago: int | None
) -> None:
    show = await completed_on_both(rig, trakt, anilist)
    watched_at = None if days_ago is None else iso(time.time() - days_ago * DAY)
    trakt.log_play(show.seasons[4].episodes[17], watched_at)
    for full in (False, True, True):
        result = await rig.sync_and_deliver(full=full)
        assert actions_for(result, "trakt") == []
    assert status_of(anilist, AOT_P2) == ("COMPLETED", 12, 0)
    assert len(trakt_plays(trakt, AOT)) == 13


async def test_a_rewatch_starting_keeps_an_older_absorbed_second_play_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = await completed_on_both(rig, trakt, anilist)
    trakt.log_play(show.seasons[4].episodes[19], iso(time.time() - 40 * DAY))
    await rig.sync_and_deliver()
    rewatch_on_trakt(trakt, show, range(17, 19), time.time() - 3 * DAY)
    for full in (False, True, True):
        result = await rig.sync_and_deliver(full=full)
        assert actions_for(result, "trakt") == []
    assert status_of(anilist, AOT_P2) == ("REPEATING", 2, 0)
    assert len(trakt_plays(trakt, AOT)) == 15


# --------------------------------------------------------------------------- anime movies

MONONOKE, MONONOKE_TMDB = 164, 128  # AniList entry, TMDB movie (worked examples)
KAGUYA, KAGUYA_TMDB = 151384, 997317  # AniList 1-4 make one TMDB movie (anime-mapping §6 F)
FIGHT_CLUB = 550  # TMDB movie in no anime dataset


def movie_plays(trakt: FakeTrakt, tmdb: int) -> list[float | None]:
    return [
        parse_iso(e.watched_at) if e.watched_at else None
        for e in trakt.history()
        if isinstance(e.item, Movie) and e.item.tmdb == tmdb
    ]


async def test_a_completed_anime_movie_on_anilist_is_one_movie_play_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    trakt.add_movie("Princess Mononoke", 1997, tmdb=MONONOKE_TMDB)
    anilist.add_media(MONONOKE, episodes=1, format="MOVIE")
    finished = FuzzyDate.of(time.time() - 10 * DAY)
    anilist.add_entry(MONONOKE, status="COMPLETED", progress=1, completed_at=finished.to_input())
    await rig.sync_and_deliver()
    assert movie_plays(trakt, MONONOKE_TMDB) == [finished.timestamp()]
    for full in (False, True):
        assert (await rig.sync_and_deliver(full=full)).queued == 0
    assert len(movie_plays(trakt, MONONOKE_TMDB)) == 1


def a_zone_where_it_is_morning() -> str:
    """A fixed-offset zone where it is about 06:00 now (Etc/GMT-3 is UTC+3)."""
    offset = (6 - datetime.now(UTC).hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/UTC"


async def test_an_anime_movie_finished_this_morning_is_no_trakt_play_in_the_afternoon(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, time_zone: Callable[[str], None]
) -> None:
    time_zone(a_zone_where_it_is_morning())  # the finish day's noon is hours away
    trakt.add_movie("Princess Mononoke", 1997, tmdb=MONONOKE_TMDB)
    anilist.add_media(MONONOKE, episodes=1, format="MOVIE")
    logged = time.time() - 300
    today = FuzzyDate.of(logged).to_input()
    anilist.add_entry(
        MONONOKE, status="COMPLETED", progress=1, completed_at=today, updated_at=logged
    )
    await rig.sync_and_deliver()
    (played,) = movie_plays(trakt, MONONOKE_TMDB)
    assert played == pytest.approx(logged, abs=60)  # when it was logged, at the latest


async def test_an_anime_score_given_this_morning_is_older_than_a_trakt_rating_given_since(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, time_zone: Callable[[str], None]
) -> None:
    time_zone(a_zone_where_it_is_morning())
    movie = trakt.add_movie("Princess Mononoke", 1997, tmdb=MONONOKE_TMDB)
    anilist.add_media(MONONOKE, episodes=1, format="MOVIE")
    logged = time.time() - 600
    today = FuzzyDate.of(logged).to_input()
    entry = anilist.add_entry(
        MONONOKE, status="COMPLETED", progress=1, score=90, completed_at=today, updated_at=logged
    )
    rate_on_trakt(trakt, movie, 7, ago=120)  # newest wins (the default)
    await rig.sync_and_deliver()
    assert [(r.item, r.rating) for r in trakt.ratings()] == [(movie, 7)]
    assert entry.score == 70


async def test_a_trakt_play_of_an_anime_movie_completes_its_anilist_entry(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    movie = trakt.add_movie("Princess Mononoke", 1997, tmdb=MONONOKE_TMDB)
    anilist.add_media(MONONOKE, episodes=1, format="MOVIE")
    trakt.add_history(movie, iso(time.time() - 2 * DAY))
    await rig.sync_and_deliver()
    assert status_of(anilist, MONONOKE) == ("COMPLETED", 1, 0)
    for full in (False, True):
        assert (await rig.sync_and_deliver(full=full)).queued == 0
    assert len(movie_plays(trakt, MONONOKE_TMDB)) == 1


async def test_an_anime_movie_watched_short_of_its_episode_count_is_not_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    trakt.add_movie("Kaguya-sama: The First Kiss Never Ends", 2022, tmdb=KAGUYA_TMDB)
    anilist.add_media(KAGUYA, episodes=4, format="MOVIE")
    entry = anilist.add_entry(KAGUYA, status="CURRENT", progress=3)
    await rig.sync_and_deliver()
    assert movie_plays(trakt, KAGUYA_TMDB) == []
    assert unmatched_records(rig.runtime.store, ["me"]) == []
    entry.status, entry.progress, entry.updated_at = "COMPLETED", 4, int(anilist.now()) + 5
    await rig.sync_and_deliver()
    assert len(movie_plays(trakt, KAGUYA_TMDB)) == 1


async def test_an_anime_movies_score_and_its_trakt_rating_sync_both_ways(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    movie = trakt.add_movie("Princess Mononoke", 1997, tmdb=MONONOKE_TMDB)
    anilist.add_media(MONONOKE, episodes=1, format="MOVIE")
    entry = anilist.add_entry(
        MONONOKE, status="COMPLETED", progress=1, score=90, updated_at=int(time.time() - DAY)
    )
    await rig.sync_and_deliver()
    assert [(r.item, r.rating) for r in trakt.ratings()] == [(movie, 9)]
    rate_on_trakt(trakt, movie, 7)
    await rig.sync_and_deliver()
    assert entry.score == 70


async def test_full_runs_never_plan_a_non_anime_movie_to_anilist_nor_touch_it_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    movie = trakt.add_movie("Fight Club", 1999, tmdb=FIGHT_CLUB)
    trakt.add_history(movie, iso(time.time() - 2 * DAY))
    rate_on_trakt(trakt, movie, 8)
    anilist.add_entry(AOT_P2, status="CURRENT", progress=1, updated_at=int(time.time() - DAY))
    for _ in range(3):
        result = await rig.sync_and_deliver(full=True)
        assert not any("movie" in item for _, item in actions_for(result, "anilist"))
        assert not any("movie" in item for _, item in actions_for(result, "trakt"))
    assert len(movie_plays(trakt, FIGHT_CLUB)) == 1 and len(trakt.ratings()) == 1
    assert list(anilist.snapshot()) == [AOT_P2]


async def test_a_new_trakt_viewing_of_a_finished_anime_movie_counts_one_more_rewatch(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    movie = trakt.add_movie("Princess Mononoke", 1997, tmdb=MONONOKE_TMDB)
    anilist.add_media(MONONOKE, episodes=1, format="MOVIE")
    finished = time.time() - 30 * DAY
    completed_entry(anilist, MONONOKE, 1, finished)
    trakt.add_history(movie, iso(finished))
    await rig.sync_and_deliver()
    trakt.log_play(movie, iso(time.time() - 3 * DAY))
    await rig.sync_and_deliver()
    assert status_of(anilist, MONONOKE) == ("COMPLETED", 1, 1)
    for full in (False, True):
        assert (await rig.sync_and_deliver(full=full)).queued == 0
    assert len(movie_plays(trakt, MONONOKE_TMDB)) == 2


async def test_trakts_movie_history_costs_one_request_on_runs_that_read_history_and_none_else(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    await rig.sync_and_deliver()
    assert trakt.count("GET", "/sync/history/movies") == 1  # the first, full read
    await rig.sync_and_deliver()  # nothing changed: the cheap checks end the run
    assert trakt.count("GET", "/sync/history/movies") == 1
    trakt.log_play(show.seasons[4].episodes[17], iso(time.time() - 3600))
    await rig.sync_and_deliver()  # plays moved: one delta read of each history
    assert trakt.count("GET", "/sync/history/movies") == 2


async def test_an_entry_deleted_on_anilist_takes_its_viewing_from_trakt_not_the_others(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    now = time.time()
    completed_entry(anilist, REZERO_P2, 12, now - 150 * DAY)  # under the removal guard's share
    aot = next(s for s in trakt.shows if s.tmdb == AOT).seasons[4].episodes[17]
    for ago in (100, 50, 10):  # AoT's Part 2 episode 1 watched three times (on Trakt)
        trakt.add_history(aot, iso(now - ago * DAY))
    await rig.sync_and_deliver()
    await rig.sync_and_deliver(full=True)
    assert status_of(anilist, AOT_P2)[1] == 1  # AniList counts it once
    with anilist.lock:  # the user deletes the entry on AniList
        (entry,) = [e for e in anilist.viewer.entries.values() if e.media.id == AOT_P2]
        del anilist.viewer.entries[entry.id]
    for full in (True, False, True):
        assert (await rig.sync_and_deliver(full=full)).held == ()
    assert len(trakt_plays(trakt, AOT)) == 2  # the viewing AniList counted, only
    assert AOT_P2 not in anilist.snapshot()  # nor are the others copied back to it


async def test_an_entry_deleted_and_added_again_on_anilist_keeps_its_plays_once_on_trakt(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    entry = anilist.add_entry(
        AOT_P2, status="CURRENT", progress=3, updated_at=int(time.time() - 20 * DAY)
    )
    await rig.sync_and_deliver()
    before = trakt_plays(trakt, AOT)
    assert len(before) == 3
    with anilist.lock:  # deleted and added again (to start over), between two full reads
        del anilist.viewer.entries[entry.id]
    anilist.add_entry(AOT_P2, status="CURRENT", progress=3, updated_at=int(anilist.now()))
    for full in (False, True, False):
        result = await rig.sync_and_deliver(full=full)
        assert [p.plan.actions for p in result.plans if not p.unchanged] in ([], [()])
    assert trakt_plays(trakt, AOT) == before


async def test_an_anilist_token_refused_during_the_links_sync_reads_refused_until_signed_in_again(
    rig: Rig, anilist: FakeAniList
) -> None:
    # AniList stopped taking the token (revoked, the app removed) while its own expiry is a year
    # off: the link's sync failed on it, nothing was queued to wait for a sign-in, and the
    # sign-in kept reading "signed in until ..." (the status page, /api/status, the metric).
    from watchbridge.errors import WatchbridgeError
    from watchbridge.signins import current_sign_ins
    from watchbridge.wiring import anilist_client

    config, store = rig.runtime.config, rig.runtime.store

    def anilist_sign_in() -> tuple[str, str]:
        (found,) = [
            s for s in current_sign_ins(config, store, time.time()) if s.service == "anilist"
        ]
        return found.state, found.message

    await rig.sync_and_deliver()
    assert anilist_sign_in()[0] == "ok"

    anilist.expire_tokens()
    with pytest.raises(WatchbridgeError, match="AniList no longer accepts the token"):
        await rig.sync_and_deliver(full=True)
    assert not store.waits_for_sign_in("anilist", "me")
    state, message = anilist_sign_in()
    assert state == "refused"
    assert message.startswith("AniList refused the token ")
    assert message.endswith(
        "; reads and writes with it fail: run `watchbridge auth anilist --profile me`"
    )

    client = anilist_client(config, store, time.time)
    try:
        await client.use_token("me", anilist.issue_token())  # `watchbridge auth anilist`
    finally:
        await client.aclose()
    assert anilist_sign_in()[0] == "ok"
    await rig.sync_and_deliver()
    assert anilist_sign_in()[0] == "ok"


# --------------------------------------------------------------------------- score format changes


async def test_switching_the_score_format_back_and_forth_changes_no_rating_anywhere(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    anilist.viewer.score_format = "POINT_100"
    anilist.add_entry(
        AOT_P2, status="COMPLETED", progress=12, score=75, updated_at=int(time.time() - 3 * DAY)
    )
    await rig.sync_and_deliver()
    assert [r.rating for r in trakt.ratings()] == [8]
    for score_format in ("POINT_10_DECIMAL", "POINT_5", "POINT_3", "POINT_10", "POINT_100"):
        anilist.viewer.score_format = score_format  # the raw score stays 75 (§8)
        result = await rig.sync_and_deliver()
        assert [a for p in result.plans for a in p.plan.actions] == [], score_format
        assert [r.rating for r in trakt.ratings()] == [8], score_format
        assert anilist.snapshot()[AOT_P2]["score"] == 75, score_format


async def test_a_trakt_rating_after_a_switch_to_point_100_is_written_though_4_stars_showed_same(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await rated_both_ways(trakt, anilist, rig)  # a POINT_5 user; the target reads the format
    await rig.sync_and_deliver()
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    rate_on_trakt(trakt, show.seasons[4], 8, ago=-1)
    await rig.sync_and_deliver()
    assert anilist.snapshot()[AOT_P2]["score"] == 80  # 4 stars
    anilist.viewer.score_format = "POINT_100"  # within the hour the target keeps the format
    rate_on_trakt(trakt, show.seasons[4], 7, ago=-2)  # 70: 4 stars too, but not 80 any more
    await rig.sync_and_deliver()
    assert anilist.snapshot()[AOT_P2]["score"] == 70
    assert [r.rating for r in trakt.ratings()] == [7]


async def test_a_trakt_rating_hidden_by_a_coarser_format_wins_once_the_format_shows_it(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    """7/10 on AniList reached Trakt as 7. In POINT_5 (4 stars for both 70 and 80) the user
    rates it 8 on Trakt: nothing to write. Back in POINT_10, AniList shows 7 again: its score
    did not change (the last run held it as Trakt's 80, the value it looked the same as), so
    Trakt's newer 8 wins, as the dates say, and is not set back to the older 7."""
    anilist.viewer.score_format = "POINT_10"
    anilist.add_entry(
        AOT_P2, status="COMPLETED", progress=12, score=70, updated_at=int(time.time() - 3 * DAY)
    )
    await rig.sync_and_deliver()
    assert [r.rating for r in trakt.ratings()] == [7]
    anilist.viewer.score_format = "POINT_5"
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    rate_on_trakt(trakt, show.seasons[4], 8)
    await rig.sync_and_deliver()
    assert (anilist.snapshot()[AOT_P2]["score"], [r.rating for r in trakt.ratings()]) == (70, [8])
    anilist.viewer.score_format = "POINT_10"
    await rig.sync_and_deliver(full=True)  # (AniList says nothing changed: the daily full read)
    assert (anilist.snapshot()[AOT_P2]["score"], [r.rating for r in trakt.ratings()]) == (80, [8])


# --------------------------------------------------------------------------- changed answers
# AniList changing the shape of its answers (see `tests.test_answer_shapes`): a list entry
# watchbridge cannot read whole is never read as one that is gone or has no progress, which
# would remove its plays from the other side. Still known by one of its ids, it keeps what
# was read of it before and the rest of the list syncs; with neither, the read fails.

GRAPHQL = "POST /"
UPDATE = "AniList may have changed its answers, and watchbridge may need an update"
KEPT = "what was read of them before is kept (their plays, their score)"


# Removals unguarded: one entry of a long list is far below any share the guard holds.
UNGUARDED = pytest.mark.parametrize("link_options", ["max_removal_share: 1.0"])


def list_entries(body: Any) -> list[dict[str, Any]]:
    """The list entries of a MediaListCollection or Page answer (none in other answers)."""
    data = body.get("data") or {}
    groups = (data.get("MediaListCollection") or {}).get("lists") or []
    return [e for g in groups for e in g["entries"]] + (data.get("Page") or {}).get("mediaList", [])


def entry_of_media(media: int, change: Callable[[dict[str, Any]], object]) -> Callable[[Any], None]:
    """A reshape of the list entries of AniList title `media`, wherever an answer has them."""

    def reshape(body: Any) -> None:
        for entry in list_entries(body):
            if media in (entry.get("mediaId"), (entry.get("media") or {}).get("id")):
                change(entry)

    return reshape


ENTRY_CHANGES = {
    "have no `id`": lambda e: e.pop("id"),
    "have no `mediaId` nor `media.id`": lambda e: (e.pop("mediaId"), e["media"].pop("id")),
    "have no `progress` as a whole number": lambda e: e.update(progress=None),
    "have no `repeat` as a whole number": lambda e: e.pop("repeat"),
    "have a `status` watchbridge does not know": lambda e: e.update(status="completed"),
    "have no `score` as a number": lambda e: e.update(score=None),
}


def warned(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and words in r.getMessage()
    ]


async def two_completed_on_trakt(rig: Rig, trakt: FakeTrakt, anilist: FakeAniList) -> None:
    completed_entry(anilist, REZERO_P2, 12, time.time() - 20 * DAY)
    completed_entry(anilist, AOT_P2, 12, time.time() - 10 * DAY).score = 80
    await rig.sync_and_deliver()
    assert (len(trakt_plays(trakt, REZERO)), len(trakt_plays(trakt, AOT))) == (12, 12)
    assert [r.rating for r in trakt.ratings()] == [8]


@UNGUARDED
@pytest.mark.parametrize("said", list(ENTRY_CHANGES))
async def test_a_list_entry_anilist_answers_in_another_shape_keeps_its_plays_and_the_rest_syncs(
    rig: Rig,
    trakt: FakeTrakt,
    anilist: FakeAniList,
    caplog: pytest.LogCaptureFixture,
    said: str,
) -> None:
    await two_completed_on_trakt(rig, trakt, anilist)
    anilist.reshape_always(entry_of_media(AOT_P2, ENTRY_CHANGES[said]), route=GRAPHQL)
    rezero = anilist.user().by_media(REZERO_P2)
    assert rezero is not None
    rezero.score, rezero.updated_at = 70, int(anilist.now())
    await rig.sync_and_deliver(full=True)
    # The entry read: its new score reached Trakt. The one not read: its plays and score stay.
    assert sorted(r.rating for r in trakt.ratings()) == [7, 8]
    assert (len(trakt_plays(trakt, REZERO)), len(trakt_plays(trakt, AOT))) == (12, 12)
    (told,) = warned(caplog, f"1 of 2 entries of the anime list {said}")
    assert UPDATE in told and KEPT in told


@UNGUARDED
async def test_a_list_entry_without_any_id_still_fails_the_read_and_removes_nothing(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await two_completed_on_trakt(rig, trakt, anilist)

    def no_ids(entry: dict[str, Any]) -> None:
        entry.pop("id"), entry.pop("mediaId"), entry["media"].pop("id")

    anilist.reshape_always(entry_of_media(AOT_P2, no_ids), route=GRAPHQL)
    with pytest.raises(AniListError) as failed:
        await rig.sync_and_deliver(full=True)
    assert "1 of 2 entries have no `id` nor `mediaId`" in failed.value.message
    assert UPDATE in failed.value.message
    assert (len(trakt_plays(trakt, REZERO)), len(trakt_plays(trakt, AOT))) == (12, 12)


@UNGUARDED
async def test_a_changed_entry_in_a_read_of_the_latest_changes_waits_and_is_not_skipped(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, caplog: pytest.LogCaptureFixture
) -> None:
    await two_completed_on_trakt(rig, trakt, anilist)
    entry = anilist.user().by_media(AOT_P2)
    assert entry is not None
    entry.status, entry.progress, entry.updated_at = "REPEATING", 1, int(anilist.now()) + 5
    anilist.reshape_always(entry_of_media(AOT_P2, lambda e: e.update(progress=None)), GRAPHQL)
    await rig.sync_and_deliver()
    assert (len(trakt_plays(trakt, REZERO)), len(trakt_plays(trakt, AOT))) == (12, 12)
    assert warned(caplog, "1 of 2 entries on the first page of the anime list's latest changes")
    anilist.clear_knobs()  # AniList answers as before (or watchbridge was updated)
    await rig.sync_and_deliver()
    assert (len(trakt_plays(trakt, REZERO)), len(trakt_plays(trakt, AOT))) == (12, 13)


def groups_renamed(body: Any) -> None:
    collection = (body.get("data") or {}).get("MediaListCollection")
    if collection is not None:
        collection["groups"] = collection.pop("lists")


@UNGUARDED
async def test_an_anime_list_without_its_groups_is_not_read_as_an_empty_list(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    await two_completed_on_trakt(rig, trakt, anilist)
    anilist.reshape_always(groups_renamed, route=GRAPHQL)
    with pytest.raises(AniListError) as failed:
        await rig.sync_and_deliver(full=True)
    assert "the anime list has no `lists` of groups" in failed.value.message
    assert UPDATE in failed.value.message
    assert (len(trakt_plays(trakt, REZERO)), len(trakt_plays(trakt, AOT))) == (12, 12)


async def test_a_save_anilist_answers_in_another_shape_is_sent_again_and_says_so(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == REZERO)
    trakt.add_history(show.seasons[1].episodes[39], iso(time.time() - DAY))  # Part 2 ep 1

    renamed: list[int] = []

    def first_save_without_id(body: Any) -> None:
        saved = (body.get("data") or {}).get("SaveMediaListEntry")
        if saved is not None and not renamed:
            renamed.append(saved["id"])
            saved["entryId"] = saved.pop("id")

    anilist.reshape_always(first_save_without_id, route=GRAPHQL)
    await rig.sync_and_deliver()
    assert renamed
    (status, error) = rig.runtime.store.db.execute(
        "SELECT status, last_error FROM outbox WHERE target = 'anilist'"
    ).fetchone()
    assert status == "pending"
    assert "SaveMediaListEntry answered with an entry with no `id`" in error
    assert UPDATE in error and "sent again later" in error
    assert anilist.snapshot()[REZERO_P2]["progress"] == 1


def anilist_row(rig: Rig) -> tuple[str, int, str | None]:
    (row,) = rig.runtime.store.db.execute(
        "SELECT status, attempts, last_error FROM outbox WHERE target = 'anilist'"
    ).fetchall()
    return row[0], row[1], row[2]


async def test_a_delivery_that_cannot_read_the_anime_list_waits_without_spending_its_tries(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == REZERO)
    trakt.add_history(show.seasons[1].episodes[39], iso(time.time() - DAY))  # Part 2 ep 1
    await rig.sync()
    anilist.reshape_always(groups_renamed, route=GRAPHQL)
    await rig.deliver()
    # Held, not retried: a change that lasts would end it as a dead letter to send by hand.
    status, attempts, error = anilist_row(rig)
    assert (status, attempts) == ("pending", 0)
    assert error is not None and "the anime list has no `lists` of groups" in error
    assert UPDATE in error and "deliveries to it wait, without giving up" in error
    anilist.clear_knobs()  # AniList answers as before (or watchbridge was updated)
    rig.runtime.store.db.execute("UPDATE outbox SET next_attempt_at = 0")  # the hour is over
    await rig.deliver()
    assert anilist_row(rig)[0] == "done"
    assert anilist.snapshot()[REZERO_P2]["progress"] == 1


@UNGUARDED
async def test_a_delivery_to_an_entry_anilist_answers_in_another_shape_waits_and_the_rest_goes(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    anilist.add_media(REZERO_P1, episodes=13)
    anilist.add_entry(REZERO_P2, status="CURRENT", progress=1, updated_at=int(time.time() - DAY))
    await rig.sync_and_deliver()
    rezero = next(s for s in trakt.shows if s.tmdb == REZERO)
    assert [e for _, e, _ in trakt_plays(trakt, REZERO)] == [39]
    anilist.reshape_always(entry_of_media(REZERO_P2, lambda e: e.update(progress=None)), GRAPHQL)
    trakt.add_history(rezero.seasons[1].episodes[40], iso(time.time() - 600))  # Part 2 ep 2
    trakt.add_history(rezero.seasons[1].episodes[26], iso(time.time() - 600))  # Part 1 ep 1
    await rig.sync_and_deliver()
    # Part 1 reads: its play goes. Part 2 does not: written blind, its progress could drop.
    assert status_of(anilist, REZERO_P1) == ("CURRENT", 1, 0)
    assert status_of(anilist, REZERO_P2) == ("CURRENT", 1, 0)
    (status, attempts, error), *_ = rig.runtime.store.db.execute(
        "SELECT status, attempts, last_error FROM outbox WHERE target = 'anilist' "
        "AND status = 'pending'"
    ).fetchall()
    assert (status, attempts) == ("pending", 0)
    assert f"the entry of AniList {REZERO_P2} on the anime list has no `progress`" in error
    assert UPDATE in error and "deliveries to that entry wait, without giving up" in error
    anilist.clear_knobs()  # AniList answers as before (or watchbridge was updated)
    rig.runtime.store.db.execute("UPDATE outbox SET next_attempt_at = 0")  # the hour is over
    await rig.deliver()
    assert status_of(anilist, REZERO_P2) == ("CURRENT", 2, 0)


async def test_a_season_rated_and_watched_on_trakt_reaches_anilist_with_its_score(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == AOT)
    for number in range(17, 29):  # AoT Final Season Part 2, not on the AniList list
        trakt.add_history(show.seasons[4].episodes[number], iso(time.time() - DAY + number))
    rate_on_trakt(trakt, show.seasons[4], 9, ago=DAY + 600)  # rated before the plays' dates
    await rig.sync_and_deliver()
    entry = anilist.snapshot()[AOT_P2]
    assert (entry["status"], entry["progress"], entry["score"]) == ("COMPLETED", 12, 90)
    assert [r.rating for r in trakt.ratings()] == [9]


async def put_back_and_started(rig: Rig, copy: Path) -> None:
    """The service stopped, the `watchbridge backup` copy put back over its database, started
    again with its targets."""
    config, database = rig.runtime.config, rig.runtime.store.path
    await rig.aclose()
    put_back(copy, database)
    rig.runtime = build_runtime(config)
    rig.runtime.open()
    rig.targets = {
        "trakt": TraktTarget(
            fast_trakt(config, rig.runtime.store), rig.runtime.store, config.delivery, time.time
        ),
        "anilist": anilist_target(config, rig.runtime.store, LINK),
    }


# AniList dates the link's progress step the moment it is written, days from the Trakt play it
# copied, and the copy put back knows neither: its first run pairs them as a first run does,
# rather than copying the step to Trakt as a second play of the episode.
async def test_a_step_the_link_wrote_to_anilist_after_the_backup_is_not_doubled_by_the_copy(
    rig: Rig, trakt: FakeTrakt, anilist: FakeAniList, tmp_path: Path
) -> None:
    show = next(s for s in trakt.shows if s.tmdb == REZERO)
    for number in (39, 40):  # Re:Zero S2 Part 2 episodes 1-2 on TMDB
        trakt.add_history(show.seasons[1].episodes[number], iso(time.time() - 30 * DAY))
    await rig.sync_and_deliver()
    copy = tmp_path / "nightly.db"
    rig.runtime.store.backup_to(copy)
    watched = time.time() - 5 * DAY  # logged on Trakt after the copy was taken
    trakt.log_play(show.seasons[1].episodes[41], iso(watched))
    await rig.sync_and_deliver()
    assert anilist.snapshot()[REZERO_P2]["progress"] == 3
    assert (await rig.sync_and_deliver()).queued == 0
    await put_back_and_started(rig, copy)

    queued = [(await rig.sync_and_deliver(full=full)).queued for full in (False, True, False)]

    assert [n for _, n, _ in trakt_plays(trakt, REZERO)] == [39, 40, 41]  # none doubled
    assert trakt_plays(trakt, REZERO)[-1] == (1, 41, float(watched // 60 * 60))
    assert anilist.snapshot()[REZERO_P2]["progress"] == 3
    assert queued == [0, 0, 0]
