"""Placement by air date never moves a play to another episode: a special, a show out on
consecutive days, a daily show's episode TMDB does not list yet, a season TMDB dates a week
early (split or not), a two-episode file; nor does it read every season of a long show for
one play."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.test_episode_air_dates import (
    REZERO_TMDB,
    Household,
    emby_stop,
    listing,
    start_household,
    wait_for,
    weekly,
)
from watchbridge.air_dates import by_air_date


def test_a_special_is_not_placed_on_a_regular_episode_of_its_air_date() -> None:
    # TVDB and TMDB number specials differently (very common): TMDB's S00E03 is another
    # special of another day. TVDB's S00E03 ("Inside the episode", a recap) aired the day
    # regular episode S01E10 did.
    regular = weekly("2011-04-17", 10)
    specials = {1: "2011-03-01", 2: "2011-03-02", 3: "2012-03-01"}
    listings = {0: listing(specials), 1: listing(regular)}
    assert by_air_date(listings, 0, 3, regular[10]) is None  # not S01E10, never watched


def test_a_new_episode_of_a_show_aired_on_consecutive_days_is_not_the_day_befores() -> None:
    # Two episodes a week, on consecutive days (K-dramas: Sat/Sun; two-night events). The
    # season listing (cached for a day) does not hold tonight's episode 6 yet.
    start = date(2024, 1, 6)
    aired = {}
    for n in range(1, 6):
        week, second = divmod(n - 1, 2)
        aired[n] = (start + timedelta(weeks=week, days=second)).isoformat()
    tonight = (date.fromisoformat(aired[5]) + timedelta(days=1)).isoformat()  # E6, Sunday
    assert by_air_date({1: listing(aired)}, 1, 6, tonight) is None  # not (1, 5)


# --------------------------------------------------------------------------- end to end

TMDB_SEASONS = {1: weekly("2016-04-04", 50), 2: weekly("2024-10-02", 16)}
TMDB_SPECIALS = {1: "2016-03-01", 2: "2017-03-01", 3: "2018-03-01"}


@pytest.fixture
def household(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> Iterator[Household]:
    home = start_household(tmp_path, start_fake, {0: TMDB_SPECIALS, **TMDB_SEASONS})
    yield home
    home.service.kill()


def test_an_emby_special_is_not_logged_as_the_regular_episode_of_its_day(
    household: Household,
) -> None:
    # Emby's S00E03 (TVDB's specials numbering) aired the day of TMDB's S01E10.
    assert household.post(emby_stop(0, 3, TMDB_SEASONS[1][10])).status_code == 202
    wait_for(household.settled)
    assert household.logged() == [(0, 3)]


def test_a_season_tmdb_dates_a_week_earlier_keeps_its_numbers() -> None:
    # An ordinary weekly show whose episodes came out a week early on a streaming service
    # (AMC+, say): TMDB dates them by the early release, TVDB (Emby, Jellyfin) by the
    # broadcast. Same numbering on both: no play is logged as the next episode.
    tmdb = weekly("2023-06-11", 6)
    broadcast = weekly("2023-06-18", 6)
    assert by_air_date({1: listing(tmdb)}, 1, 2, broadcast[2]) is None  # not (1, 3)


def test_both_episodes_of_a_two_episode_emby_file_are_logged(household: Household) -> None:
    # An ordinary TMDB-ordered library: one file holds S01E03-E04 (IndexNumberEnd), episodes
    # that aired a week apart. Emby's PremiereDate is the file's first episode's, not E04's.
    payload = emby_stop(1, 3, TMDB_SEASONS[1][3])
    payload["Item"]["IndexNumberEnd"] = 4
    assert household.post(payload).status_code == 202
    wait_for(household.settled)
    assert household.logged() == [(1, 3), (1, 4)]


def test_an_ordinary_show_whose_tmdb_date_differs_costs_one_season_read(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # A long-running show (30 seasons) in a TMDB-ordered Emby library, named by TVDB ids only:
    # TMDB dates S05E03 three days from TVDB: the databases disagree, nothing moves, and the
    # play costs the sent season's listing, not every season's.
    seasons = {number: weekly(f"{1990 + number}-01-07", 10) for number in range(1, 31)}
    home = start_household(tmp_path, start_fake, seasons)
    serializd = home.serializd
    try:
        off = (date.fromisoformat(seasons[5][3]) + timedelta(days=3)).isoformat()
        assert home.post(emby_stop(5, 3, off)).status_code == 202
        started = time.monotonic()
        wait_for(home.settled, timeout=120)
        took = time.monotonic() - started
        assert home.logged() == [(5, 3)]
        reads = serializd.calls("GET", "/api/show/{id}/season/{number}")
        assert len(reads) <= 2, f"{len(reads)} season listings read for one play, {took:.0f}s"
    finally:
        home.service.kill()


def weekdays(first: str, count: int) -> dict[int, str]:
    """A talk show: one episode Monday to Thursday."""
    day, out = date.fromisoformat(first), {}
    while len(out) < count:
        if day.weekday() < 4:
            out[len(out) + 1] = day.isoformat()
        day += timedelta(days=1)
    return out


def test_a_daily_shows_new_episode_tmdb_does_not_list_yet_is_not_yesterdays() -> None:
    # TVDB numbers talk shows by year (Emby/Jellyfin send S2024E34), TMDB by its own season
    # (S29). Tonight's episode is not on TMDB yet (or Serializd's day-cached listing predates
    # it); yesterday's is. Keeping S2024E34 retries as unmatched; yesterday's is never taken.
    tmdb = weekdays("2024-01-08", 33)  # E33 is Monday 2024-03-04... and no E34 yet
    tonight = (date.fromisoformat(tmdb[33]) + timedelta(days=1)).isoformat()
    assert by_air_date({29: listing(tmdb)}, 2024, 34, tonight) != (29, 33)


def test_a_split_season_tmdb_dates_a_week_early_is_not_placed_on_the_next_episode() -> None:
    # TVDB runs one 24-episode season; TMDB splits it at 12 and dates every episode by an
    # advance streaming release a week before the broadcast TVDB (Emby) dates it by: the same
    # disagreement test_a_season_tmdb_dates_a_week_earlier_keeps_its_numbers guards within a
    # season. TVDB S1E14 is TMDB S2E2; the date alone would give S2E3 (the next episode).
    broadcast = weekly("2019-01-13", 24)
    early = weekly("2019-01-06", 24)
    listings = {
        1: listing({n: early[n] for n in range(1, 13)}),
        2: listing({n - 12: early[n] for n in range(13, 25)}),
    }
    assert by_air_date(listings, 1, 14, broadcast[14]) in (None, (2, 2))  # not (2, 3)


def test_tonights_daily_episode_is_not_logged_as_yesterdays_from_a_stale_listing(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    tmdb = weekdays("2024-01-08", 33)  # ends on Monday 2024-03-04
    home = start_household(tmp_path, start_fake, {29: tmdb})
    try:
        monday = emby_stop(2024, 33, tmdb[33])
        assert home.post(monday).status_code == 202
        wait_for(home.settled)
        assert home.logged() == [(29, 33)]  # Monday: the only episode within a day
        # Tuesday afternoon TMDB lists Tuesday's episode; Serializd's listing of season 29,
        # read last night, is still cached when Tuesday's episode is watched that evening.
        season = home.serializd.shows[REZERO_TMDB].seasons[29]
        season.episode_count = 34
        season.aired[34] = (date.fromisoformat(tmdb[33]) + timedelta(days=1)).isoformat()
        assert home.post(emby_stop(2024, 34, season.aired[34])).status_code == 202

        def tuesday() -> tuple[str, int, str | None]:
            with sqlite3.connect(home.db) as db:
                return db.execute(
                    "SELECT status, attempts, last_error FROM outbox WHERE target = 'serializd'"
                    " AND payload LIKE '%\"number\":34%'"
                ).fetchone()

        wait_for(lambda: tuesday() is not None and tuple(tuple(tuesday())[:2]) != ("pending", 0))
        wait_for(lambda: tuesday()[0] != "inflight")
        # Tuesday's play is on Serializd as Tuesday's episode, or waits (numbers as sent,
        # retried as unmatched): never marked done as Monday's "already on Serializd" (here,
        # seconds apart) or a rewatch entry of Monday's (a day apart, as for a real user).
        status = tuesday()[0]
        assert (29, 34) in home.logged() or status == "pending", (status, home.logged())
    finally:
        home.service.kill()
