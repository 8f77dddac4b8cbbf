"""Ratings of whole shows and seasons over a Trakt <-> Serializd link, both ways, against both
fakes: planned, queued, delivered by the real targets, removed again, and never flapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.trakt import Rating, key_of
from tests.fakes.trakt import iso as trakt_iso
from tests.linkrig import Rig, ratings_rig
from watchbridge.model import Ids, MediaRef
from watchbridge.reconcile import Action
from watchbridge.services.trakt import sync_body
from watchbridge.sync import outbox_rows

pytestmark = pytest.mark.anyio

SHOW, SEASON_2_ID = 1396, 3573  # Breaking Bad and its season 2 (TMDB ids)
RATINGS_ADD = "/api/show/reviews/add"


@pytest.fixture
async def rig(
    tmp_path: Path, start_fake: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    async with ratings_rig(tmp_path, start_fake, monkeypatch) as rig:
        yield rig


def rate_on_trakt(rig: Rig, value: int, season: int | None = None) -> None:
    show = rig.trakt.shows[0]
    item = show if season is None else show.seasons[season]
    with rig.trakt.lock:
        rig.trakt.user.ratings[key_of(item)] = Rating(item, value, trakt_iso(time.time() - 600))
        rig.trakt._touch(rig.trakt.user, f"{'shows' if season is None else 'seasons'}.rated_at")


def trakt_ratings(rig: Rig) -> dict[tuple[str, int | None], int]:
    return {
        (r.item.kind, getattr(r.item, "number", None) if r.item.kind == "season" else None): (
            r.rating
        )
        for r in rig.trakt.ratings()
    }


def serializd_ratings(rig: Rig) -> list[tuple[int | None, int | None, int, bool]]:
    return [
        (r.season_id, r.episode_number, r.rating, r.is_log)
        for r in rig.serializd.diary()
        if r.rating
    ]


# --------------------------------------------------------------------------- pure parts


def test_show_and_season_ratings_become_outbox_rows() -> None:
    actions = (
        Action("set_rating", "trakt", f"show:tmdb:{SHOW}", "rated on serializd", 10.0, 90),
        Action("set_rating", "serializd", f"show:tmdb:{SHOW}:s2", "rated on trakt", 10.0, 70),
    )
    rows, skipped = outbox_rows("l", "me", actions)
    assert skipped == 0
    assert [(r.target, r.action, r.payload["item"]["kind"]) for r in rows] == [
        ("trakt", "rating", "show"),
        ("serializd", "rating", "season"),
    ]


def test_trakt_rates_a_show_bare_and_a_season_nested_under_its_show() -> None:
    show = MediaRef("show", ids=Ids(tmdb=str(SHOW)))
    season = MediaRef("season", show_ids=Ids(tmdb=str(SHOW)), season=2)
    body = sync_body([(show, {"rating": 9}), (season, {"rating": 7})])
    assert body == {
        "shows": [
            {"ids": {"tmdb": SHOW}, "rating": 9},
            {"ids": {"tmdb": SHOW}, "seasons": [{"number": 2, "rating": 7}]},
        ]
    }
    assert sync_body([(show, {})]) == {"shows": [{"ids": {"tmdb": SHOW}}]}  # only the show


# --------------------------------------------------------------------------- Trakt -> Serializd


async def test_a_show_rating_on_trakt_reaches_serializd_without_any_episode_data(
    rig: Rig,
) -> None:
    rate_on_trakt(rig, 9)
    await rig.sync_and_deliver()
    assert serializd_ratings(rig) == [(None, None, 9, False)]
    assert rig.serializd.ticks() == set()


async def test_a_season_rating_on_trakt_is_written_to_the_tmdb_season_id(rig: Rig) -> None:
    rate_on_trakt(rig, 7, season=2)
    await rig.sync_and_deliver()
    assert serializd_ratings(rig) == [(SEASON_2_ID, None, 7, False)]


async def test_a_show_rating_removed_on_trakt_is_deleted_on_serializd(rig: Rig) -> None:
    rate_on_trakt(rig, 9)
    await rig.sync_and_deliver()
    with rig.trakt.lock:
        rig.trakt.user.ratings.clear()
        rig.trakt._touch(rig.trakt.user, "shows.rated_at")
    await rig.sync_and_deliver(full=True)
    assert serializd_ratings(rig) == []
    assert rig.serializd.count("POST", "/api/show/reviews/delete") == 1


# --------------------------------------------------------------------------- Serializd -> Trakt


async def test_a_show_rating_on_serializd_reaches_trakt_without_any_episode_data(
    rig: Rig,
) -> None:
    rig.serializd.log_entry(None, SHOW, None, None, rating=8, is_log=False)
    await rig.sync_and_deliver()
    assert trakt_ratings(rig) == {("show", None): 8}
    assert rig.trakt.history() == []


async def test_a_season_rating_on_serializd_reaches_trakt_as_that_season(rig: Rig) -> None:
    rig.serializd.log_entry(None, SHOW, 2, None, rating=6, is_log=False)
    await rig.sync_and_deliver()
    assert trakt_ratings(rig) == {("season", 2): 6}


async def test_a_season_rating_removed_on_serializd_is_removed_on_trakt(rig: Rig) -> None:
    entry = rig.serializd.log_entry(None, SHOW, 2, None, rating=6, is_log=False)
    await rig.sync_and_deliver()
    with rig.serializd.lock:
        rig.serializd.user.reviews.remove(entry)
    await rig.sync_and_deliver(full=True)
    assert trakt_ratings(rig) == {}


async def test_a_rating_removal_still_queued_is_not_undone_by_the_next_run(rig: Rig) -> None:
    entry = rig.serializd.log_entry(None, SHOW, 2, None, rating=6, is_log=False)
    await rig.sync_and_deliver()
    with rig.serializd.lock:
        rig.serializd.user.reviews.remove(entry)
    await rig.sync(full=True)  # the removal from Trakt is queued (Trakt slow, say)
    again = await rig.sync(full=True)  # Trakt still shows the rating
    assert [a for p in again.plans for a in p.plan.actions] == []
    await rig.deliver()
    assert (serializd_ratings(rig), trakt_ratings(rig)) == ([], {})


async def test_a_copy_of_a_rating_queued_for_serializd_survives_a_delta_run(rig: Rig) -> None:
    rate_on_trakt(rig, 9)
    await rig.sync()  # the copy to Serializd is queued
    with rig.trakt.lock:  # something else moves on Trakt: the next run reads a delta
        rig.trakt._touch(rig.trakt.user, "episodes.watched_at")
    await rig.sync()
    result = await rig.sync(full=True)  # the daily full read; the copy still queued
    assert ("remove_rating", "trakt") not in [
        (a.kind, a.target) for p in result.plans for a in p.plan.actions
    ]
    await rig.deliver()
    assert trakt_ratings(rig) == {("show", None): 9}


async def test_show_and_season_ratings_once_in_sync_are_not_written_again(rig: Rig) -> None:
    rate_on_trakt(rig, 9)
    rig.serializd.log_entry(None, SHOW, 2, None, rating=6, is_log=False)
    await rig.sync_and_deliver()
    writes = rig.serializd.count("POST", RATINGS_ADD), rig.trakt.count("POST", "/sync/ratings")
    second = await rig.sync_and_deliver(full=True)
    assert [p.plan.actions for p in second.plans] == [()]
    assert (
        rig.serializd.count("POST", RATINGS_ADD),
        rig.trakt.count("POST", "/sync/ratings"),
    ) == writes


async def test_a_rating_removed_on_trakt_deletes_the_users_rows_without_a_full_diary_read(
    rig: Rig,
) -> None:
    rig.serializd.diary_page_size = 1
    rig.serializd.log_entry(None, SHOW, None, None, rating=8, is_log=False)  # the user's
    rig.serializd.log_entry(None, SHOW, 1, 1, backdate="2024-01-01T20:00:00Z")
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()  # the run after learns the rating it wrote to Trakt
    assert trakt_ratings(rig) == {("show", None): 8}
    with rig.trakt.lock:
        rig.trakt.user.ratings.clear()
        rig.trakt._touch(rig.trakt.user, "shows.rated_at")
    pages = rig.serializd.count("GET", "/api/user/{username}/diary")
    await rig.sync_and_deliver()  # a delta read: the rows come from the cursors
    assert serializd_ratings(rig) == []
    assert rig.serializd.count("GET", "/api/user/{username}/diary") - pages == 1


async def test_a_rating_cleared_on_trakt_does_not_come_back_from_a_serializd_logs_stars(
    rig: Rig,
) -> None:
    # Logged with 4 stars (8), re-rated 6 on Trakt (a rating row on Serializd), then cleared.
    rig.serializd.log_entry(
        None, SHOW, 2, None, rating=8, is_log=True, date_added="2025-01-01T20:00:00.000Z"
    )
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    rate_on_trakt(rig, 6, season=2)
    await rig.sync_and_deliver()
    await rig.sync_and_deliver()
    assert serializd_ratings(rig)[-1][2] == 6
    with rig.trakt.lock:
        rig.trakt.user.ratings.clear()
        rig.trakt._touch(rig.trakt.user, "seasons.rated_at")
    await rig.sync_and_deliver(full=True)  # the 6 goes; the log's 8 shows again
    (dead,) = rig.store.dead_letters()  # clear the log's stars on serializd.com
    assert "is on a diary log on Serializd" in (dead.last_error or "")
    await rig.sync_and_deliver(full=True)
    assert trakt_ratings(rig) == {}  # not copied back while the dead letter waits
    assert serializd_ratings(rig) == [(SEASON_2_ID, None, 8, True)]


async def _a_dead_removal_the_user_then_does_as_told(rig: Rig) -> None:
    await test_a_rating_cleared_on_trakt_does_not_come_back_from_a_serializd_logs_stars(rig)
    with rig.serializd.lock:  # clears the log's stars on serializd.com
        for review in rig.serializd.user.reviews:
            review.rating = 0 if review.is_log else review.rating


async def test_the_dead_removal_names_the_season_whose_stars_to_clear(rig: Rig) -> None:
    await test_a_rating_cleared_on_trakt_does_not_come_back_from_a_serializd_logs_stars(rig)
    (dead,) = rig.store.dead_letters()
    assert "the rating of tmdb 1396 season 2 is on a diary log" in (dead.last_error or "")


async def test_the_dead_removal_retried_once_the_stars_are_cleared_is_done(rig: Rig) -> None:
    await _a_dead_removal_the_user_then_does_as_told(rig)
    rig.store.retry_dead(None, time.time())  # `watchbridge deadletters retry`
    await rig.deliver()
    assert rig.store.dead_letters() == []


async def test_a_rating_given_after_the_dead_removal_is_copied(rig: Rig) -> None:
    await _a_dead_removal_the_user_then_does_as_told(rig)
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    rig.serializd.log_entry(None, SHOW, 2, None, rating=9, is_log=False, date_added=later)
    await rig.sync_and_deliver(full=True)
    await rig.sync_and_deliver(full=True)
    assert trakt_ratings(rig) == {("season", 2): 9}
