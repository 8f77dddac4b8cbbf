"""Air dates a day off (a server east of UTC) or a week off (an early streaming release)
never place a play on a neighbouring episode."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from tests.fakes.base import FakeServer
from tests.test_episode_air_dates import emby_stop, listing, start_household, wait_for, weekly
from tests.test_episode_air_dates_ordinary_shows import weekdays
from watchbridge.air_dates import by_air_date


def day_before(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def test_a_daily_episode_dated_the_day_before_is_not_the_previous_nights() -> None:
    # Emby stores TVDB's air date as the server's local midnight in UTC (the project's own
    # fixture: Ozymandias, 2013-09-15, is "2013-09-15T04:00:00Z" on a US server); Jellyfin
    # does the same (jellyfin#18067) and its template prints the UTC day. On a server in
    # Europe, Asia or Australia every PremiereDate is the day before. TMDB lists Tuesday's
    # S29E34; the sender's S2024E34 comes dated Monday, the day of S29E33.
    tmdb = weekdays("2024-01-08", 40)
    assert by_air_date({29: listing(tmdb)}, 2024, 34, day_before(tmdb[34])) in (None, (29, 34))


def test_a_weekend_drama_episode_dated_the_day_before_is_not_saturdays() -> None:
    # A Sat/Sun K-drama: TMDB one season of 16, TVDB splits it in two of 8 (S2E4 is TMDB
    # S1E12, a Sunday). A server in Seoul (UTC+9) dates it Saturday, the day of S1E11.
    start, aired = date(2024, 1, 6), {}
    for n in range(1, 17):
        week, second = divmod(n - 1, 2)
        aired[n] = (start + timedelta(weeks=week, days=second)).isoformat()
    assert by_air_date({1: listing(aired)}, 2, 4, day_before(aired[12])) in (None, (1, 12))


def test_an_emby_server_east_of_utc_logs_tuesdays_daily_episode_not_mondays(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    tmdb = weekdays("2024-01-08", 40)
    home = start_household(tmp_path, start_fake, {29: tmdb})
    try:
        payload = emby_stop(2024, 34, tmdb[34])
        # Berlin (UTC+1): Tuesday 2024-03-05 00:00 local is Monday 23:00 UTC.
        payload["Item"]["PremiereDate"] = f"{day_before(tmdb[34])}T23:00:00.0000000Z"
        assert home.post(payload).status_code == 202

        def row() -> tuple[str, int] | None:
            with sqlite3.connect(home.db) as db:
                found = db.execute(
                    "SELECT status, attempts FROM outbox WHERE target = 'serializd'"
                ).fetchone()
            return None if found is None else (found[0], found[1])

        # Logged, or kept as S2024E34 (waiting as unmatched): never Monday's S29E33.
        wait_for(lambda: (r := row()) is not None and r != ("pending", 0) and r[0] != "inflight")
        assert (29, 33) not in home.logged()
    finally:
        home.service.kill()


def test_a_folded_season_tmdb_dates_a_week_off_is_not_placed_on_the_next_episode() -> None:
    # Re:ZERO's shape (TVDB S2 folded into TMDB S1), TMDB's dates a week early against the
    # sender's (an advance streaming release, or a broadcast delayed a week that one database
    # has not caught up with). The split-season version of this is guarded by counting on;
    # the fold has no counting to check against.
    tmdb = {1: weekly("2016-04-04", 50), 2: weekly("2024-10-02", 16)}
    broadcast = (date.fromisoformat(tmdb[1][39]) + timedelta(weeks=1)).isoformat()
    listings = {n: listing(days) for n, days in tmdb.items()}
    assert by_air_date(listings, 2, 14, broadcast) in (None, (1, 39))  # not (1, 40)


def test_a_day_early_date_is_not_the_previous_nights_episode_of_the_same_number() -> None:
    # A Mon-Thu talk show; TVDB numbers it by year (S2024), TMDB as S29 and counts one more
    # episode (a special TVDB files under S0), so TVDB S2024E34 is TMDB S29E35 (a Tuesday).
    # Jellyfin east of UTC (Europe) sends the day before: Monday, TMDB S29E34's day.
    tmdb = weekdays("2024-01-08", 40)
    assert by_air_date({29: listing(tmdb)}, 2024, 34, day_before(tmdb[35])) in (None, (29, 35))
