"""Tautulli's webhook set up without its *Watched* trigger (Playback Start and Stop ticked
only), or with a watched percent above where people stop: a stop at or past the profile's
completion_threshold is the viewing's completion, as Plex's and Jellyfin's stops are
(playback.decide), for people listed under `users.tautulli` and for a household without Plex
Pass that lists them under `users.plex` (forplex.py); a *Watched* of the same viewing, before
or after the stop, is never a second play. Through the running app to the fakes (the Plex
Home of test_walkthrough_plex_home.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from tests.fakes.base import FakeServer
from tests.fakes.receiver import AlertReceiver
from tests.test_app import wait_until
from tests.test_tautulli_without_plex_pass import Opens, home_on_tautulli, no_grace, release
from tests.test_walkthrough_plex_home import (
    OWNER_PLEX_TV,
    SAM,
    SPY_FAMILY,
    SPY_TAUTULLI,
    Home,
    open_home,
    plex,
    tautulli,
)
from watchbridge import clocksteps, maintenance
from watchbridge.tautulliwatched import CONSECUTIVE, TRIGGER

__all__ = ["home_on_tautulli", "no_grace"]  # fixtures

# Stopped at 95 % (the credits skipped), of the samples' 55-minute episode.
AT_95 = {"view_offset": "3149000", "progress_percent": "95"}
AT_50 = {"view_offset": "1657000", "progress_percent": "50"}


def test_a_stop_past_the_threshold_is_a_play_of_a_tautulli_user_once(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    users = {"alex": "{tautulli: [alex]}", "sam": "{tautulli: [Sam]}", "jamie": "{plex: []}"}
    with open_home(tmp_path, start_fake, users) as home:
        # No Watched: the stop at 95 % is the play.
        home.tautulli(tautulli("play_episode.json", OWNER_PLEX_TV, "alex"))
        home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_95))
        # Tautulli's Watched after its stop (each trigger is its own post): the same viewing.
        home.tautulli(tautulli("play_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        home.tautulli(tautulli("stop_episode.json", SAM, "Sam", **SPY_TAUTULLI, **AT_95))
        home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}


def test_a_stop_past_the_threshold_plex_never_sends_is_taken_from_tautulli_once(
    home_on_tautulli: Opens, receiver: AlertReceiver
) -> None:
    # No Plex Pass, everyone under users.plex, Tautulli's Watched not ticked: the stop at
    # 95 % was answered `ignored_sent_by_plex` and dropped, the play lost without a word.
    with home_on_tautulli() as home:
        home.tautulli(tautulli("play_episode.json", OWNER_PLEX_TV, "alex"))
        told = home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_95))
        assert told["status"] == "ignored_sent_by_plex"
        assert "a play is kept and taken from this report" in told["reason"], told
        # A stop half way is no play, and nothing is kept of it.
        told = home.tautulli(tautulli("stop_episode.json", SAM, "Sam", **SPY_TAUTULLI, **AT_50))
        assert "a play is kept" not in told["reason"], told
        home.settle()
        assert home.trakt_plays() == [] and home.logged() == []  # Plex's webhook may come
        release(home)
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        assert home.sams_anime() == {}
        wait_until(lambda: len(receiver.messages) == 1)
        assert "1 play(s) were taken from Tautulli's reports" in receiver.messages[0]["message"]


def test_a_watched_and_a_stop_of_one_viewing_plex_never_sends_are_one_play(
    home_on_tautulli: Opens, receiver: AlertReceiver
) -> None:
    # Both kept, in either order (Tautulli posts each trigger on its own): one play each,
    # and each alert counts one play taken.
    with home_on_tautulli() as home:
        home.tautulli(tautulli("watched_episode.json", OWNER_PLEX_TV, "alex"))
        home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_95))
        home.tautulli(tautulli("stop_episode.json", SAM, "Sam", **SPY_TAUTULLI, **AT_95))
        release(home)  # the stop, before its Watched came
        home.tautulli(tautulli("watched_episode.json", SAM, "Sam", **SPY_TAUTULLI))
        release(home)
        home.settle()
        assert home.trakt_plays() == ["Felina"] and home.logged() == [(1396, 16)]
        assert home.sams_anime() == {SPY_FAMILY: ("CURRENT", 3, 0)}
        wait_until(lambda: len(receiver.messages) == 2)
        listed = home.api_status()["not_sent_by_plex"]
    assert sorted((one["profile"], one["plays"]) for one in listed) == [("alex", 1), ("sam", 1)]
    for message in receiver.messages:
        assert "1 play(s) were taken from Tautulli's reports" in message["message"], message


# Tautulli's webhook without its Watched trigger, on a server whose stops count (tautulliwatched).
DAY = 86400.0
AT_88 = {"view_offset": "2917000", "progress_percent": "88"}  # past 85 %, short of 90 %


def stopped_alerts(receiver: AlertReceiver) -> str:
    return f"alerts: {{urls: ['{receiver.apprise_url}'], kinds: [webhooks_stopped]}}\n"


def moved(home: Home, at: float) -> None:
    """The app's clock at `at` (moved, not slept): time passing, the uptime moving with it.
    The wall clock moved alone is a step of the clock, which moves the times counted before
    it (clocksteps)."""
    runtime = home.runtime
    assert runtime is not None
    ahead = at - time.time()
    runtime.clock = lambda: at
    runtime.clock_watch.uptime = lambda: clocksteps.uptime() + ahead


def check(home: Home) -> None:
    """The housekeeping's hourly look at Tautulli's stops and Watched."""
    assert home.runtime is not None
    asyncio.run(maintenance.check_tautulli_watched(home.runtime))


def stops_over_days(home: Home, start: float, user_id: str, name: str, **at: str) -> None:
    """Three viewings stopped (at `at`) over more than three days, and no Watched."""
    for day in (0.0, 1.5, 3.1):
        moved(home, start + day * DAY)
        home.tautulli(tautulli("play_episode.json", user_id, name))
        home.tautulli(tautulli("stop_episode.json", user_id, name, **at))


def test_a_tautulli_sending_no_watched_nor_a_finished_stop_is_told_until_a_watched_comes(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    # Watched not ticked and "Allow Consecutive Notifications" off: Tautulli drops every stop
    # at or past 85 %, so only the stops of viewings left half way come: each finished one
    # was lost without a word.
    users = {"alex": "{tautulli: [alex]}", "sam": "{plex: []}", "jamie": "{plex: []}"}
    with open_home(tmp_path, start_fake, users, stopped_alerts(receiver)) as home:
        start = time.time()
        moved(home, start)
        home.tautulli(tautulli("play_episode.json", OWNER_PLEX_TV, "alex"))
        home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_50))
        moved(home, start + 1.5 * DAY)
        home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_50))
        check(home)
        assert "no watched:" not in home.status()  # two stops, a day and a half: too soon
        moved(home, start + 3.1 * DAY)
        home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_50))
        check(home)
        wait_until(lambda: len(receiver.messages) == 1)
        status = home.status()  # from the database, as after a restart
        listed = home.api_status()["tautulli_without_watched"]
        check(home)  # hourly again: one alert, reminded only as throttled
        # A Watched comes (the trigger ticked): over.
        home.tautulli(tautulli("watched_episode.json", OWNER_PLEX_TV, "alex"))
        wait_until(lambda: len(receiver.messages) == 2)
        check(home)
        assert "no watched:" not in home.status()
        assert home.api_status()["tautulli_without_watched"] == []
    (line,) = [one for one in status.splitlines() if one.startswith("no watched:")]
    assert "Plex server Basement: 3 stop(s) since" in line, line
    assert TRIGGER in line and CONSECUTIVE in line, line
    assert [(one["stops"], one["nothing_sent"]) for one in listed] == [(3, True)]
    alert, resolved = receiver.messages
    title = "watchbridge: Tautulli sends no finished viewing of Plex server Basement"
    assert alert["title"] == title and resolved["title"] == f"Resolved: {title}"
    assert alert["message"].startswith(f"Tick {TRIGGER}, and check {CONSECUTIVE}")
    assert "Tautulli sent a Watched for Plex server Basement" in resolved["message"]


def test_stops_past_tautullis_watched_percent_without_a_watched_are_a_status_line_only(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], receiver: AlertReceiver
) -> None:
    # Consecutive notifications on, Watched not ticked: Tautulli's stops at 88 % come, and
    # are no play short of the 90 % threshold. Said on the status; no alert (stops that
    # reach the threshold are plays).
    users = {"alex": "{tautulli: [alex]}", "sam": "{plex: []}", "jamie": "{plex: []}"}
    with open_home(tmp_path, start_fake, users, stopped_alerts(receiver)) as home:
        start = time.time()
        stops_over_days(home, start, OWNER_PLEX_TV, "alex", **AT_88)
        check(home)
        status = home.status()
        (listed,) = home.api_status()["tautulli_without_watched"]
        home.settle()
        assert home.trakt_plays() == []
        moved(home, start + 46 * DAY)  # Tautulli's webhook removed: forgotten after 42 days
        check(home)
        assert home.api_status()["tautulli_without_watched"] == []
    (line,) = [one for one in status.splitlines() if one.startswith("no watched:")]
    assert TRIGGER in line and CONSECUTIVE not in line, line
    assert listed["stops"] == 3 and not listed["nothing_sent"]
    assert receiver.messages == []


def test_a_household_without_plex_pass_under_users_plex_is_told_its_stops_send_no_play(
    home_on_tautulli: Opens, receiver: AlertReceiver, tmp_path: Path
) -> None:
    # Everyone under users.plex, no Plex Pass: Tautulli's stops half way are answered
    # `ignored_sent_by_plex` and kept nowhere, yet counted; a Watched of anyone, even of an
    # account no profile lists, tells the trigger is ticked.
    with home_on_tautulli() as home:
        stops_over_days(home, time.time(), OWNER_PLEX_TV, "alex", **AT_50)
        check(home)
        assert "no watched:" in home.status()
        friend = home.tautulli(tautulli("watched_episode.json", "99999999", "a friend"))
        assert friend["status"] == "ignored_unmapped_account"
        check(home)
        assert "no watched:" not in home.status()


def test_stops_plex_own_webhook_sends_are_not_counted(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Plex Pass: Plex's own webhook sends the plays of people under users.plex, so Tautulli
    # set up with Start and Stop only loses nothing of theirs.
    users = {"alex": '{plex: ["1"]}', "sam": "{plex: []}", "jamie": "{plex: []}"}
    with open_home(tmp_path, start_fake, users) as home:
        start = time.time()
        for day in (0.0, 1.5, 3.1):
            moved(home, start + day * DAY)
            home.plex(plex("episode_legacy_media_play.json", 1, "alex"))
            told = home.tautulli(tautulli("stop_episode.json", OWNER_PLEX_TV, "alex", **AT_50))
            assert told["status"] == "ignored_sent_by_plex", told
        check(home)
        assert "no watched:" not in home.status()
