"""Tautulli's webhook set up without its *Watched* trigger (Playback Start and Stop ticked
only), or with a watched percent above where people stop: a stop at or past the profile's
completion_threshold is the viewing's completion, as Plex's and Jellyfin's stops are
(playback.decide), for people listed under `users.tautulli` and for a household without Plex
Pass that lists them under `users.plex` (forplex.py); a *Watched* of the same viewing, before
or after the stop, is never a second play. Through the running app to the fakes (the Plex
Home of test_walkthrough_plex_home.py)."""

from __future__ import annotations

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
    open_home,
    tautulli,
)

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
