"""Playback sessions end to end: real webhook bodies through the route and the store, and the
outbox rows they leave (tests/playback_rig.py)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.playback_rig import (
    HOUR,
    JELLYFIN_TICKS,
    Rig,
    emby,
    emby_marked_played,
    jellyfin,
    jellyfin_progress,
    jellyfin_stop,
    jellyfin_toggle_played,
    plex,
    running_rig,
    tautulli,
)
from watchbridge.accounts import SERVER_PART, identity_of
from watchbridge.ingest import parse
from watchbridge.model import Accepted
from watchbridge.playback import earlier_keys
from watchbridge.store import ACCOUNT_CURSOR, TAUTULLI_SERVER_LAPSES, Store

# --------------------------------------------------------------------------- rewatches whose
# start never arrived (no server retries a webhook; watchbridge may be restarting)


def test_a_jellyfin_rewatch_whose_playbackstart_was_lost_is_a_second_play(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        rig.advance(20 * HOUR)
        for percent in (1, 2, 10, 30, 60, 90):
            rig.post("jellyfin", jellyfin_progress(percent))
            rig.advance(5 * 60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        assert len(rig.plays()) == 2, rig.live()


def test_a_plex_rewatch_whose_media_play_was_lost_is_a_second_play(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_play.json"))
        rig.advance(105 * 60)
        rig.post("plex", plex("movie_media_scrobble.json"))
        rig.advance(5 * 60)
        rig.post("plex", plex("movie_media_stop.json"))
        rig.advance(20 * HOUR)
        rig.post("plex", plex("movie_media_pause.json", viewOffset=600_000))  # 8.6 %
        rig.advance(10 * 60)
        rig.post("plex", plex("movie_media_resume.json", viewOffset=600_000))
        rig.advance(95 * 60)
        rig.post("plex", plex("movie_media_scrobble.json"))
        rig.advance(5 * 60)
        rig.post("plex", plex("movie_media_stop.json"))
        assert len(rig.plays()) == 2, rig.live()


def test_a_tautulli_watched_a_day_after_the_last_is_a_second_play(tmp_path: Path) -> None:
    # An agent with only the Watched trigger, or whose `play` was lost.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli("watched_episode.json"))
        rig.advance(20 * HOUR)
        rig.post("tautulli", tautulli("watched_episode.json"))
        assert len(rig.plays()) == 2, rig.live()


# --------------------------------------------------------------------------- another player


def tautulli_at(percent: float, action: str, player: str) -> dict[str, object]:
    """Tautulli's body for the sample episode (55 min) at `percent` on `player`."""
    body = tautulli("watched_episode.json")
    offset = int(3_315_000 * percent / 100)
    return body | {"action": action, "machine_id": player, "player": player,
                   "view_offset": str(offset), "progress_percent": str(int(percent))}  # fmt: skip


def watched_through(rig: Rig, player: str, watched_at: float) -> None:
    """A whole viewing on `player`: play, 50 minutes, Tautulli's watched, then stop."""
    rig.post("tautulli", tautulli_at(0, "play", player))
    rig.advance(50 * 60)
    rig.post("tautulli", tautulli_at(watched_at, "watched", player))
    rig.post("tautulli", tautulli_at(100, "stop", player))


def test_watching_again_from_the_start_on_another_player_the_next_day_is_a_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        watched_through(rig, "tv", 95)
        rig.advance(20 * HOUR)
        rig.post("tautulli", tautulli_at(0, "play", "phone"))
        rig.advance(50 * 60)
        rig.post("tautulli", tautulli_at(95, "watched", "phone"))
        assert len(rig.plays()) == 2, rig.live()


def test_a_same_evening_rewatch_moved_to_another_player_is_a_second_play(tmp_path: Path) -> None:
    # Finished on the TV; an hour later watched again from the start on the tablet, stopped
    # half way, and finished in the bedroom two hours later.
    with running_rig(tmp_path) as rig:
        watched_through(rig, "tv", 90)
        rig.advance(1 * HOUR)
        rig.post("tautulli", tautulli_at(0, "play", "tablet"))
        rig.advance(30 * 60)
        rig.post("tautulli", tautulli_at(55, "stop", "tablet"))
        rig.advance(2 * HOUR)
        rig.post("tautulli", tautulli_at(55, "play", "bedroom"))
        rig.advance(20 * 60)
        rig.post("tautulli", tautulli_at(90, "watched", "bedroom"))
        rig.post("tautulli", tautulli_at(100, "stop", "bedroom"))
        assert len(rig.plays()) == 2, rig.live()


def test_a_same_evening_rewatch_resumed_on_a_third_player_soon_after_is_a_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        watched_through(rig, "tv", 90)
        rig.advance(30 * 60)
        rig.post("tautulli", tautulli_at(0, "play", "tablet"))
        rig.advance(30 * 60)
        rig.post("tautulli", tautulli_at(55, "stop", "tablet"))
        rig.advance(20 * 60)
        rig.post("tautulli", tautulli_at(55, "play", "bedroom"))
        rig.advance(25 * 60)
        rig.post("tautulli", tautulli_at(90, "watched", "bedroom"))
        assert len(rig.plays()) == 2, rig.live()


# --------------------------------------------------------------------------- one viewing
# finished on another player


TABLET_PLEX = {"Player": {"local": True, "publicAddress": "192.0.2.7", "title": "Tablet",
                          "uuid": "tablet-uuid"}}  # fmt: skip
TABLET_JELLYFIN = {"DeviceId": "tablet-1", "DeviceName": "Tablet"}


def test_the_credits_finished_on_the_tablet_after_the_tv_scrobbled_are_no_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_play.json"))
        rig.advance(105 * 60)
        rig.post("plex", plex("movie_media_scrobble.json"))
        rig.advance(60)
        rig.post("plex", plex("movie_media_pause.json", viewOffset=6_300_000))  # 90.5 %
        rig.advance(3 * 60)
        rig.post("plex", plex("movie_media_play.json", viewOffset=6_300_000) | TABLET_PLEX)
        rig.advance(8 * 60)
        rig.post("plex", plex("movie_media_stop.json", viewOffset=6_950_000) | TABLET_PLEX)
        assert rig.live() == ["start", "play"]  # nor is the tablet shown watching


def test_the_tvs_paused_session_ending_after_the_tablet_finished_is_no_second_play(
    tmp_path: Path,
) -> None:
    at_92 = int(JELLYFIN_TICKS * 0.92)
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(44 * 60)
        rig.post("jellyfin", jellyfin_progress(92, paused=True))
        rig.advance(2 * 60)
        start = jellyfin("playback_start_episode.json", PlaybackPositionTicks=at_92)
        rig.post("jellyfin", start | TABLET_JELLYFIN)
        rig.advance(4 * 60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json") | TABLET_JELLYFIN)
        rig.advance(60)
        rig.post("jellyfin", jellyfin_progress(92, paused=True))  # the TV repeats its report
        rig.advance(4 * HOUR)
        # The TV, paused all evening, is switched off: Jellyfin ends its session at 92 %, past
        # its resume limit.
        stop = jellyfin("playback_stop_episode_completed.json", PlaybackPositionTicks=at_92)
        rig.post("jellyfin", stop)
        assert len(rig.plays()) == 1, rig.live()


def test_the_tv_paused_at_the_credits_woken_days_after_the_tablet_finished_is_no_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(44 * 60)
        rig.post("jellyfin", jellyfin_progress(93, paused=True))
        rig.advance(10 * 60)
        rig.post("jellyfin", jellyfin_progress(93) | TABLET_JELLYFIN)
        rig.advance(5 * 60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json") | TABLET_JELLYFIN)
        rig.advance(10 * 24 * HOUR)
        rig.housekeeping()
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))  # the TV wakes
        assert len(rig.plays()) == 1


def test_tonights_second_viewing_in_another_room_paused_and_resumed_is_a_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(0, "play", "bedroom"))
        rig.advance(5 * 60)
        rig.post("tautulli", tautulli_at(9, "pause", "bedroom"))  # dinner
        watched_through(rig, "tv", 95)  # meanwhile, the whole episode on the TV
        rig.advance(30 * 60)
        rig.post("tautulli", tautulli_at(9, "resume", "bedroom"))
        rig.advance(30 * 60)
        rig.post("tautulli", tautulli_at(64, "pause", "bedroom"))
        rig.advance(5 * 60)
        rig.post("tautulli", tautulli_at(64, "resume", "bedroom"))
        rig.advance(18 * 60)
        rig.post("tautulli", tautulli_at(95, "watched", "bedroom"))
        assert len(rig.plays()) == 2, rig.live()


BEDROOM_PLEX = {"Player": {"local": True, "publicAddress": "192.0.2.8", "title": "Bedroom",
                           "uuid": "bedroom-uuid"}}  # fmt: skip


def test_two_rooms_playing_one_movie_without_a_pause_are_two_plays(tmp_path: Path) -> None:
    # Plex sends nothing while playing: the bedroom's last event is before the TV's scrobble.
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_play.json"))
        rig.advance(30 * 60)
        rig.post("plex", plex("movie_media_play.json") | BEDROOM_PLEX)
        rig.advance(75 * 60)
        rig.post("plex", plex("movie_media_scrobble.json"))
        rig.advance(30 * 60)
        rig.post("plex", plex("movie_media_scrobble.json") | BEDROOM_PLEX)
        assert len(rig.plays()) == 2, rig.live()


def test_a_rewatch_on_another_player_whose_start_was_lost_is_a_second_play(
    tmp_path: Path,
) -> None:
    # Only a start that says where it resumes carries a counted viewing on.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(48 * 60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        rig.advance(20 * HOUR)
        phone = {"DeviceId": "phone-1", "DeviceName": "Phone"}
        for percent in (10, 30, 60, 90):  # its PlaybackStart lost (watchbridge restarting)
            rig.post("jellyfin", jellyfin_progress(percent, **phone))
            rig.advance(10 * 60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json", **phone))
        assert len(rig.plays()) == 2, rig.live()


# --------------------------------------------------------------------------- two senders of one
# Plex server (Plex's webhook and Tautulli's, set up from two guides)


def plex_on(player: str, event: str, percent: float | None) -> dict[str, Any]:
    """Plex's webhook for the sample episode (the one Tautulli's samples name) on `player`."""
    name = event.removeprefix("media.")
    body = plex(f"episode_legacy_media_{name}.json")
    body["Player"]["uuid"] = player
    if percent is not None:
        body["Metadata"]["viewOffset"] = int(3_315_000 * percent / 100)
    return body


def reported_by_both(
    rig: Rig, player: str, template: Callable[[dict[str, object]], dict[str, object]] = dict
) -> None:
    """One viewing on `player` as both senders report it: each starts it, Tautulli's Watched
    at 85 %, Plex's scrobble at 90 % (2 3/4 minutes later: beyond Trakt's duplicate window),
    both stops at the end. `template`: Tautulli's body as its template fills it in."""
    rig.post("plex", plex_on(player, "media.play", None))
    rig.post("tautulli", template(tautulli_at(0, "play", player)))
    rig.advance(47 * 60)
    rig.post("tautulli", template(tautulli_at(85, "watched", player)))
    rig.advance(166)
    rig.post("plex", plex_on(player, "media.scrobble", 90))
    rig.advance(330)
    rig.post("plex", plex_on(player, "media.stop", 100))
    rig.post("tautulli", template(tautulli_at(100, "stop", player)))


def test_one_viewing_reported_by_both_plex_and_tautulli_is_one_play(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        reported_by_both(rig, "tv")
        assert len(rig.plays()) == 1, rig.live()


def test_a_rewatch_reported_by_both_senders_is_a_second_play(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        reported_by_both(rig, "tv")
        rig.advance(4 * HOUR)
        reported_by_both(rig, "tv")
        assert len(rig.plays()) == 2, rig.live()


def test_reports_of_the_two_senders_further_apart_than_a_quarter_hour_are_two_plays(
    tmp_path: Path,
) -> None:
    # A household switching from Tautulli to Plex's webhook, a short episode seen again.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(85, "watched", "tv"))
        rig.advance(20 * 60)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        assert len(rig.plays()) == 2, rig.live()


def test_the_same_episode_on_two_players_one_through_each_sender_is_two_plays(
    tmp_path: Path,
) -> None:
    # Two people sharing a profile: one on the TV (Plex's webhook), one on a tablet that only
    # Tautulli reports; nothing says they are one viewing.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(85, "watched", "tablet"))
        rig.advance(60)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        assert len(rig.plays()) == 2, rig.live()


def test_a_rewatch_begun_on_plex_soon_after_tautullis_watched_shows_as_playing(
    tmp_path: Path,
) -> None:
    # Only the credits after the other sender's report are left out of Trakt's live state
    # (tests/test_plex_and_tautulli_to_trakt.py): a start from the beginning is a rewatch's.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(85, "watched", "tv"))
        rig.advance(5 * 60)
        rig.post("plex", plex_on("tv", "media.play", None))
        rig.advance(60)
        rig.post("plex", plex_on("tv", "media.pause", 2))
        assert rig.live() == ["play", "start", "pause"]


def report_notes(rig: Rig) -> list[str]:
    """The states of the notes of Plex senders' reports (playback.report_keys) in the store."""
    with sqlite3.connect(rig.db) as conn:
        found = conn.execute(
            "SELECT state FROM playback_sessions WHERE state IN ('reported', 'paired')"
        ).fetchall()
    return [state for (state,) in found]


def test_plex_webhooks_of_a_server_tautulli_never_reported_note_no_reports(
    tmp_path: Path,
) -> None:
    # Most households have no Tautulli: their Plex completions need no note for its reports
    # to pair with (one write less a viewing).
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex_on("tv", "media.play", None))
        rig.advance(50 * 60)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        rig.post("plex", plex_on("tv", "media.stop", 100))
        assert len(rig.plays()) == 1
        assert report_notes(rig) == []


def test_plex_reporting_first_on_the_day_tautulli_is_set_up_still_counts_once(
    tmp_path: Path,
) -> None:
    # Tautulli's first report of the server comes after Plex's (set up midway through the
    # viewing): Plex's webhook noted nothing, so Tautulli's looks for Plex's among the events.
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex_on("tv", "media.play", None))
        rig.advance(50 * 60)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        rig.advance(120)
        rig.post("tautulli", tautulli_at(93, "watched", "tv"))
        assert len(rig.plays()) == 1, rig.live()
        # From then on Plex's webhook notes its reports of that server.
        rig.advance(4 * HOUR)
        reported_by_both(rig, "tv")
        assert len(rig.plays()) == 2, rig.live()


def test_a_server_tautulli_reported_is_remembered_across_a_restart(tmp_path: Path) -> None:
    # After a restart Plex's webhook reports a viewing's end before Tautulli says anything:
    # its report is noted, so Tautulli's pause in the credits after it stays off Trakt.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(0, "play", "tv"))
    with running_rig(tmp_path) as rig:
        rig.advance(HOUR)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        assert report_notes(rig) == ["reported"]
        rig.advance(60)
        rig.post("tautulli", tautulli_at(95, "pause", "tv"))
        assert rig.live() == ["start", "play"]


def plex_viewing(rig: Rig, player: str) -> None:
    """One viewing on `player` as only Plex's webhook reports it."""
    rig.post("plex", plex_on(player, "media.play", None))
    rig.advance(50 * 60)
    rig.post("plex", plex_on(player, "media.scrobble", 90))
    rig.post("plex", plex_on(player, "media.stop", 100))


def test_a_server_tautulli_stopped_reporting_lapses_and_plex_notes_no_more(
    tmp_path: Path,
) -> None:
    # A household that removed Tautulli: after the lapse, Plex's completions cost no note.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(0, "play", "tv"))
        rig.advance(TAUTULLI_SERVER_LAPSES + HOUR)
        rig.housekeeping()
        plex_viewing(rig, "tv")
        assert report_notes(rig) == []
        # Tautulli set up again: its first report remembers the server, nothing is lost.
        rig.advance(4 * HOUR)
        reported_by_both(rig, "tv")
        assert len(rig.plays()) == 2, rig.live()


def test_a_server_tautulli_keeps_reporting_does_not_lapse(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        for _ in range(4):  # a viewing a month, Tautulli's play first
            rig.post("tautulli", tautulli_at(0, "play", "tv"))
            rig.advance(30 * 86400.0)
        rig.housekeeping()
        plex_viewing(rig, "tv")
        assert report_notes(rig) == ["reported"]


def without_machine_id(body: dict[str, object], name: str) -> dict[str, object]:
    """Tautulli's body from a template naming the player by {player} only."""
    return {k: v for k, v in body.items() if k != "machine_id"} | {"player": name}


def test_a_tautulli_template_without_machine_id_pairs_reports_by_the_players_name(
    tmp_path: Path,
) -> None:
    # Tautulli's {player} is the name Plex's webhook gives as Player.title.
    with running_rig(tmp_path) as rig:
        name = plex_on("tv", "media.play", None)["Player"]["title"]
        rig.post("plex", plex_on("tv", "media.play", None))
        rig.post("tautulli", without_machine_id(tautulli_at(0, "play", "tv"), name))
        rig.advance(47 * 60)
        rig.post("tautulli", without_machine_id(tautulli_at(85, "watched", "tv"), name))
        rig.advance(166)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        assert len(rig.plays()) == 1, rig.live()


def test_a_tautulli_template_without_machine_id_naming_another_player_pairs_nothing(
    tmp_path: Path,
) -> None:
    # Two people on one profile: the tablet only Tautulli names (by name), the TV Plex's.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", without_machine_id(tautulli_at(85, "watched", "x"), "Tablet"))
        rig.advance(60)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        assert len(rig.plays()) == 2, rig.live()


def without_server_machine_id(body: dict[str, object]) -> dict[str, object]:
    """Tautulli's body from a template that leaves out {server_machine_id}."""
    return {k: v for k, v in body.items() if k != "server_machine_id"}


def test_a_tautulli_template_without_server_machine_id_pairs_with_the_profiles_plex_server(
    tmp_path: Path,
) -> None:
    # A Tautulli watches one server; Plex's webhooks name the profile's one: it is that.
    with running_rig(tmp_path) as rig:
        reported_by_both(rig, "tv", without_server_machine_id)
        assert len(rig.plays()) == 1, rig.live()


def test_a_tautulli_template_without_server_machine_id_pairs_nothing_of_two_plex_servers(
    tmp_path: Path,
) -> None:
    # The profile also watches on a friend's server: which one Tautulli watches is not sure.
    with running_rig(tmp_path) as rig:
        friends = plex_on("tv", "media.play", None)
        friends["Server"]["uuid"] = "a-friends-server"
        friends["Metadata"]["ratingKey"] = "9999"
        rig.post("plex", friends)
        rig.advance(HOUR)
        reported_by_both(rig, "tv", without_server_machine_id)
        assert len(rig.plays()) == 2, rig.live()


def test_a_tautulli_template_without_server_machine_id_pairs_with_services_plex_server(
    tmp_path: Path,
) -> None:
    # After a restart Tautulli reports first: services.plex's server, as the profile's Plex
    # link recorded it, is the profile's one.
    server = plex_on("tv", "media.play", None)["Server"]["uuid"]
    with Store.open(tmp_path / "wb.db") as store:
        store.set_cursor(
            "plex", "me", ACCOUNT_CURSOR, identity_of(SERVER_PART + server, "account 1"), 0.0
        )
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", without_server_machine_id(tautulli_at(85, "watched", "tv")))
        rig.advance(166)
        rig.post("plex", plex_on("tv", "media.scrobble", 90))
        assert len(rig.plays()) == 1, rig.live()


# --------------------------------------------------------------------------- live state


def test_a_progress_report_overtaken_by_the_stop_leaves_trakt_paused(tmp_path: Path) -> None:
    # Jellyfin posts each event from its own handler: the last progress report (sent 2 s
    # before the stop) arrives just after it.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(19 * 60)
        rig.post("jellyfin", jellyfin_stop(40, UtcTimestamp="2025-03-14T20:20:00.0000000Z"))
        rig.advance(1)
        rig.post("jellyfin", jellyfin_progress(39.9, UtcTimestamp="2025-03-14T20:19:58.0000000Z"))
        assert rig.live() == ["start", "pause"]


def test_pause_resume_pause_within_a_second_leaves_a_pause_to_send(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(600.1)
        rig.post("jellyfin", jellyfin_progress(30, paused=True))
        rig.advance(0.3)
        rig.post("jellyfin", jellyfin_progress(30))
        rig.advance(0.3)
        rig.post("jellyfin", jellyfin_progress(30, paused=True))
        assert rig.to_send()[-1:] == ["pause"], rig.rows()


def test_a_pause_then_a_stop_within_a_second_leaves_a_pause_to_send(tmp_path: Path) -> None:
    # Pausing, then leaving the player: the stop's pause must not be dropped as the pause's.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(19 * 60 + 0.2)
        rig.post("jellyfin", jellyfin_progress(40, paused=True))
        rig.advance(0.5)
        rig.post("jellyfin", jellyfin_stop(40))
        assert rig.to_send()[-1:] == ["pause"], rig.rows()


# --------------------------------------------------------------------------- manual marks


def watched_to_the_end(rig: Rig, source: str = "jellyfin") -> None:
    """The Jellyfin (or Emby) sample episode played from the start to a completed stop."""
    sample = emby if source == "emby" else jellyfin
    rig.post(source, sample("playback_start_episode.json"))
    rig.advance(48 * 60)
    rig.post(source, sample("playback_stop_episode_completed.json"))


def marked_played(rig: Rig, play_count: int) -> None:
    """Jellyfin's "mark played" of the sample episode, counting it `play_count` times."""
    rig.post("jellyfin", jellyfin_toggle_played(True) | {"PlayCount": play_count})


def days_later(rig: Rig, days: int) -> None:
    """`days` pass, with the hourly housekeeping."""
    rig.advance(days * 24 * HOUR)
    rig.housekeeping()


@pytest.mark.parametrize("days", [2, 10])
def test_a_client_left_paused_on_the_credits_for_days_is_one_play(
    tmp_path: Path, days: int
) -> None:
    # The server times the paused session out (the play); days later the TV wakes up (past
    # the week after which idle sessions were once forgotten).
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(46 * 60)
        rig.post("jellyfin", jellyfin_progress(97, paused=True))
        rig.advance(1.5 * HOUR)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        days_later(rig, days)
        rig.post("jellyfin", jellyfin_progress(97, paused=True))
        rig.advance(60)
        rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
        assert len(rig.plays()) == 1


def test_a_jellyfin_played_mark_minutes_after_watching_to_the_end_is_no_second_play(
    tmp_path: Path,
) -> None:
    # "Mark season played" after finishing an episode re-saves that episode too; the mark
    # names no device, the playback does.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        rig.advance(10 * 60)
        rig.post("jellyfin", jellyfin_toggle_played(True))
        assert len(rig.plays()) == 1


def test_marking_a_season_played_weeks_after_watching_one_of_its_episodes_is_no_second_play(
    tmp_path: Path,
) -> None:
    # Jellyfin's play-state button on a season marks every episode, those watched too,
    # counting each again (PlayCount 2).
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 20)
        marked_played(rig, play_count=2)
        assert len(rig.plays()) == 1


def test_marking_a_season_played_after_marking_one_of_its_episodes_is_no_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        marked_played(rig, play_count=1)
        days_later(rig, 2)
        marked_played(rig, play_count=2)
        assert len(rig.plays()) == 1


def test_an_emby_season_marked_played_weeks_after_watching_one_episode_is_no_second_play(
    tmp_path: Path,
) -> None:
    # Emby's season play-state button sends item.markplayed for every episode, the watched
    # one too, counting it again (PlayCount 2) with the earlier viewing's date.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig, "emby")
        days_later(rig, 20)
        rig.post("emby", emby_marked_played(2, "2025-03-14T20:48:02.0000000Z"))
        assert len(rig.plays()) == 1


def test_an_emby_mark_of_an_episode_not_watched_before_is_a_play(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        date = emby("playback_stop_episode_completed.json")["Date"]
        rig.post("emby", emby_marked_played(1, date))
        assert len(rig.plays()) == 1


def test_marking_played_without_a_date_weeks_after_watching_is_no_second_play(
    tmp_path: Path,
) -> None:
    # Jellyfin's multi-select "mark played" sends no date: the count stays, the date is old.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 20)
        dateless = {"PlayCount": 1, "LastPlayedDate": "2025-02-20T20:48:02.0000000Z"}
        rig.post("jellyfin", jellyfin_toggle_played(True) | dateless)
        assert len(rig.plays()) == 1


def test_marking_played_hours_after_marking_unplayed_is_a_rewatch(tmp_path: Path) -> None:
    # "Mark unplayed" zeroes the count: marked played again, it is 1 and means it.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 20)
        rig.post("jellyfin", jellyfin_toggle_played(False) | {"PlayCount": 0})
        rig.advance(3 * HOUR)
        marked_played(rig, play_count=1)
        assert len(rig.plays()) == 2


def test_a_played_flag_clicked_twice_weeks_after_watching_is_one_play(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 20)
        rig.post("jellyfin", jellyfin_toggle_played(False) | {"PlayCount": 0})
        rig.advance(1)
        marked_played(rig, play_count=1)
        assert len(rig.plays()) == 1


def test_a_stray_start_of_a_watched_episode_leaves_a_later_season_mark_no_new_play(
    tmp_path: Path,
) -> None:
    # Auto-play-next starts an episode watched weeks ago; it is stopped after seconds.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 20)
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(30)
        rig.post("jellyfin", jellyfin_stop(0.5))
        days_later(rig, 10)
        marked_played(rig, play_count=3)
        assert len(rig.plays()) == 1


def test_a_mark_minutes_after_watching_to_the_end_stays_one_play_after_a_brief_restart(
    tmp_path: Path,
) -> None:
    # Opened again by mistake for a few seconds, then the season marked played.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        rig.advance(2 * 60)
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(20)
        rig.post("jellyfin", jellyfin_stop(0.5))
        rig.advance(8 * 60)
        marked_played(rig, play_count=3)
        assert len(rig.plays()) == 1


def test_a_rewatch_stopped_before_the_end_then_marked_played_is_a_second_play(
    tmp_path: Path,
) -> None:
    # Jellyfin counts the rewatch's start and the mark: PlayCount 3, as a season re-mark.
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 30)
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(30 * 60)
        rig.post("jellyfin", jellyfin_stop(70))
        rig.advance(60)
        marked_played(rig, play_count=3)
        assert len(rig.plays()) == 2


def test_an_episode_stopped_before_the_end_then_marked_played_is_a_play(tmp_path: Path) -> None:
    # Jellyfin's PlayCount counts playback starts (SessionManager.OnPlaybackStart) and a dated
    # mark adds one: a count of 2 does not mean it was counted played before.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(40 * 60)
        rig.post("jellyfin", jellyfin_stop(85))
        rig.advance(60)
        marked_played(rig, play_count=2)
        assert len(rig.plays()) == 1


def test_a_jellyfin_played_flag_toggled_off_and_on_after_watching_is_one_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        rig.advance(5 * 60)
        rig.post("jellyfin", jellyfin_toggle_played(False))
        rig.advance(30)
        rig.post("jellyfin", jellyfin_toggle_played(True))
        assert len(rig.plays()) == 1


def test_a_jellyfin_client_left_paused_sending_its_completed_stop_again_is_one_play(
    tmp_path: Path,
) -> None:
    # Clients left paused on the credits report the stop again every hour or two
    # (jesseward/jellyfin-plugin-lastfm#59), each past 90 %: PlayedToCompletion.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(45 * 60)
        rig.post("jellyfin", jellyfin_progress(98, paused=True))
        rig.advance(20 * 60)
        for _ in range(3):
            rig.post("jellyfin", jellyfin("playback_stop_episode_completed.json"))
            rig.advance(1.5 * HOUR)
        assert len(rig.plays()) == 1, rig.live()


# --------------------------------------------------------------------------- two devices


def generic(
    event: str, progress: float | None = None, player: str | None = None, **extra: object
) -> dict[str, object]:
    movie = {"type": "movie", "title": "Arrival", "year": 2016, "ids": {"imdb": "tt2543164"}}
    body: dict[str, object] = {"event": event, "user": "alex", "item": movie}
    body |= {"progress": progress} if progress is not None else {}
    return body | ({"player": player} if player is not None else {}) | extra


def test_a_viewing_that_ends_on_one_device_leaves_another_devices_alone(tmp_path: Path) -> None:
    # A script that names no player beside Kodi, one account, the same film.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0))
        rig.advance(30 * 60)
        rig.post("generic", generic("pause", 30))
        rig.post("generic", generic("start", 0, player="kodi-livingroom"))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 96, player="kodi-livingroom"))
        rig.advance(5 * 60)
        rig.post("generic", generic("resume", 30))
        assert rig.live()[-1] == "start"  # Trakt shows the script's device playing again
        rig.advance(60 * 60)
        rig.post("generic", generic("stop", 97))
        assert len(rig.plays()) == 2, rig.live()


def test_a_played_mark_that_names_its_player_is_that_players_viewing(tmp_path: Path) -> None:
    # A Kodi script forwards the playback and the watched flag Kodi sets at the end; the flag
    # may arrive first.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player="kodi-livingroom"))
        rig.advance(110 * 60)
        rig.post("generic", generic("played", player="kodi-livingroom"))
        rig.advance(1)
        rig.post("generic", generic("stop", 96, player="kodi-livingroom"))
        assert len(rig.plays()) == 1, rig.live()


@pytest.mark.parametrize(
    ("second", "after", "plays"),
    [
        ("media_player.bedroom", 30 * 60, 2),  # two devices: two viewings
        # One device, its automation firing when the film ends and when the TV is switched off.
        ("media_player.living_room", 20 * 60, 1),
    ],
)
def test_home_assistants_played_counts_per_player(
    tmp_path: Path, second: str, after: float, plays: int
) -> None:
    # docs/webhooks.md's example sends `played` with the player that finished.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("played", player="media_player.living_room"))
        rig.advance(after)
        rig.post("generic", generic("played", player=second))
        assert len(rig.plays()) == plays, rig.live()


def test_a_short_episode_a_script_reports_only_the_end_of_twice_is_two_plays(
    tmp_path: Path,
) -> None:
    episode = {"type": "episode", "season": 1, "number": 1, "show": {"ids": {"tvdb": 353750}}}
    stop = {
        "event": "stop",
        "user": "alex",
        "player": "kodi-kids",
        "played": True,
        "position_ms": 410_000,
        "duration_ms": 420_000,
        "item": episode,
    }
    with running_rig(tmp_path) as rig:
        rig.post("generic", stop)
        rig.advance(8 * 60)
        rig.post("generic", stop)
        assert len(rig.plays()) == 2, rig.live()


KODI = "kodi-livingroom"
IN_2020 = {"watched_at": "2020-01-01T21:00:00Z"}  # a history script's old viewing


def test_an_old_viewing_a_script_sends_after_tonights_leaves_tonights_alone(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 96, player=KODI) | {"played": True})
        rig.post("generic", generic("played", player=KODI) | IN_2020)
        rig.advance(30)
        rig.post("generic", generic("stop", 96, player=KODI) | {"played": True})  # repeated
        played_at = sorted(row["payload"]["at"] for row in rig.plays())
        assert len(played_at) == 2 and played_at[0] == 1577912400.0


def test_an_old_viewing_a_script_sends_leaves_tonights_queued_start_to_go_out(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(60)
        rig.post("generic", generic("played", player=KODI) | IN_2020)
        assert rig.to_send() == ["start"]


def test_an_old_viewing_on_another_player_keeps_a_mark_after_tonights_the_same_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player="kodi-bedroom"))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 96, player="kodi-bedroom") | {"played": True})
        rig.post("generic", generic("played", player=KODI) | IN_2020)
        rig.advance(10 * 60)
        rig.post("generic", generic("played"))  # names no player: the item's marks
        assert len(rig.plays()) == 2


def test_marked_unplayed_then_half_rewatched_then_marked_played_is_a_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 20)
        rig.post("jellyfin", jellyfin_toggle_played(False) | {"PlayCount": 0})
        rig.advance(2 * 60)
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(25 * 60)
        rig.post("jellyfin", jellyfin_stop(50))
        rig.advance(60)
        marked_played(rig, play_count=2)  # the rewatch's start and the mark
        assert len(rig.plays()) == 2


def test_a_generic_unplayed_naming_the_player_leaves_its_viewing_alone(tmp_path: Path) -> None:
    # Then a rewatch five hours after the first viewing, its start without a position.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 97, player=KODI) | {"played": True})
        rig.advance(5 * HOUR)
        rig.post("generic", generic("unplayed", player=KODI))
        rig.advance(60)
        rig.post("generic", generic("start", player=KODI))
        rig.advance(115 * 60)
        rig.post("generic", generic("stop", 97, player=KODI) | {"played": True})
        assert len(rig.plays()) == 2


def test_a_rewatch_an_hour_later_from_a_start_without_position_is_a_second_play(
    tmp_path: Path,
) -> None:
    # A script whose start has no position and whose stop has `played` and only a percent.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 97, player=KODI) | {"played": True})
        rig.advance(HOUR)
        rig.post("generic", generic("start", player=KODI))
        rig.advance(115 * 60)
        rig.post("generic", generic("stop", 97, player=KODI) | {"played": True})
        assert len(rig.plays()) == 2


@pytest.mark.parametrize("progress", [None, 97])
def test_home_assistant_played_twice_around_a_start_without_position_is_one_play(
    tmp_path: Path, progress: float | None
) -> None:
    # `played` when the film ends and when the TV is switched off; between them the player
    # shows "playing" on the credits screen for a moment (a start without a position).
    ha = "media_player.living_room"
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", player=ha))
        rig.advance(110 * 60)
        rig.post("generic", generic("played", progress, player=ha))
        rig.advance(5 * 60)
        rig.post("generic", generic("start", player=ha))
        rig.advance(20 * 60)
        rig.post("generic", generic("played", progress, player=ha))
        assert len(rig.plays()) == 1


# --------------------------------------------------------------------------- sessions kept long
# A player's session outlives weeks of silence (a device left paused on the credits): an old
# one must not turn tonight's viewing into two plays, nor hide a rewatch.

BEDROOM_PLEX = {"Player": {"local": True, "publicAddress": "192.0.2.8", "title": "Bedroom",
                           "uuid": "bedroom-uuid"}}  # fmt: skip
MOVIE_MS = 6_960_000  # the Plex sample movie's duration


def at_percent(percent: float) -> int:
    return int(MOVIE_MS * percent / 100)


def test_the_credits_on_a_tablet_that_played_the_film_weeks_ago_are_no_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_play.json") | TABLET_PLEX)
        rig.advance(30 * 60)
        rig.post("plex", plex("movie_media_stop.json", viewOffset=at_percent(25)) | TABLET_PLEX)
        days_later(rig, 30)
        rig.post("plex", plex("movie_media_play.json"))
        rig.advance(105 * 60)
        rig.post("plex", plex("movie_media_scrobble.json"))
        rig.advance(60)
        rig.post("plex", plex("movie_media_pause.json", viewOffset=6_300_000))
        rig.advance(3 * 60)
        rig.post("plex", plex("movie_media_play.json", viewOffset=6_300_000) | TABLET_PLEX)
        rig.advance(8 * 60)
        rig.post("plex", plex("movie_media_stop.json", viewOffset=6_950_000) | TABLET_PLEX)
        assert len(rig.plays()) == 1


def test_a_plex_rewatch_weeks_after_a_viewing_finished_in_another_room_is_a_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_play.json"))
        rig.advance(58 * 60)
        rig.post("plex", plex("movie_media_stop.json", viewOffset=at_percent(50)))
        rig.advance(60 * 60)
        resumed = plex("movie_media_play.json", viewOffset=at_percent(50))
        rig.post("plex", resumed | BEDROOM_PLEX)
        rig.advance(55 * 60)
        rig.post("plex", plex("movie_media_scrobble.json") | BEDROOM_PLEX)
        days_later(rig, 30)
        rig.post("plex", plex("movie_media_scrobble.json"))  # its media.play was lost
        rig.advance(5 * 60)
        rig.post("plex", plex("movie_media_stop.json", viewOffset=at_percent(99)))
        assert len(rig.plays()) == 2


def test_a_stop_only_scripts_rewatch_weeks_after_another_room_finished_is_a_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("stop", 50, player="kodi-livingroom"))
        rig.advance(HOUR)
        rig.post("generic", generic("stop", 97, player="kodi-bedroom", played=True))
        days_later(rig, 30)
        rig.post("generic", generic("stop", 97, player="kodi-livingroom", played=True))
        assert len(rig.plays()) == 2


def test_plexs_stop_at_the_credits_the_morning_after_a_position_less_start_is_no_second_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_play.json"))
        rig.advance(105 * 60)
        rig.post("plex", plex("movie_media_scrobble.json"))
        rig.advance(3 * 60)
        rig.post("plex", plex("movie_media_play.json"))  # no viewOffset (pitfalls/webhooks #1)
        rig.advance(9 * HOUR)
        rig.post("plex", plex("movie_media_stop.json", viewOffset=at_percent(97)))
        assert len(rig.plays()) == 1


@pytest.mark.parametrize("paused_hours", [2, 20])
def test_a_viewing_resumed_where_it_was_left_after_another_room_watched_it_is_a_play(
    tmp_path: Path, paused_hours: int
) -> None:
    # One account, two people: the bedroom paused at 60 %; the living room then watches the
    # whole episode; the bedroom resumes its own viewing where it left it and finishes it.
    with running_rig(tmp_path) as rig:
        rig.post("tautulli", tautulli_at(0, "play", "bedroom"))
        rig.advance(33 * 60)
        rig.post("tautulli", tautulli_at(60, "pause", "bedroom"))
        rig.advance(paused_hours * HOUR)
        watched_through(rig, "tv", 95)
        rig.advance(30 * 60)
        rig.post("tautulli", tautulli_at(60, "resume", "bedroom"))
        rig.advance(20 * 60)
        rig.post("tautulli", tautulli_at(95, "watched", "bedroom"))
        rig.post("tautulli", tautulli_at(100, "stop", "bedroom"))
        assert len(rig.plays()) == 2


def two_part(part: int, body: dict[str, Any]) -> dict[str, Any]:
    """Part `part` of a two-part episode (S05E12/E13) as Jellyfin's TMDB metadata often has
    it: each part its own TVDB and TMDB ids, both one IMDb id."""
    return body | {
        "EpisodeNumber": 11 + part,
        "ItemId": f"d7d2a91e4b3f4e6a8d0b1c2e3f4a5b{part:02d}",
        "Provider_tvdb": str(1000 + part),
        "Provider_tmdb": str(2000 + part),
        "Provider_imdb": "tt1205438",
        "Name": f"Two-parter ({part})",
    }


def test_a_season_marked_played_counts_both_parts_of_a_two_part_episode(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        for part in (1, 2):
            rig.post("jellyfin", two_part(part, jellyfin_toggle_played(True) | {"PlayCount": 1}))
        assert len(rig.plays()) == 2


def test_both_parts_of_a_two_part_episode_watched_with_auto_play_next_are_two_plays(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", two_part(1, jellyfin("playback_start_episode.json")))
        rig.advance(45 * 60)
        rig.post("jellyfin", two_part(2, jellyfin("playback_start_episode.json")))
        rig.post("jellyfin", two_part(1, jellyfin("playback_stop_episode_completed.json")))
        for percent in range(10, 95, 10):
            rig.advance(4 * 60)
            rig.post("jellyfin", two_part(2, jellyfin_progress(percent)))
        rig.advance(3 * 60)
        rig.post("jellyfin", two_part(2, jellyfin("playback_stop_episode_completed.json")))
        assert len(rig.plays()) == 2


IMDB_ONLY = {"Provider_tvdb": None, "Provider_tmdb": None}  # an episode named by IMDb alone


def as_an_earlier_release_kept_them(rig: Rig, *bodies: dict[str, Any]) -> None:
    """Move the sessions of these webhooks' events to the keys releases before 2026-11-26
    gave them (an IMDb-named episode's key had no numbers)."""
    with sqlite3.connect(rig.db) as conn:
        for body in bodies:
            parsed = parse("jellyfin", json.dumps(body).encode(), "application/json")
            assert isinstance(parsed, Accepted)
            for new, earlier in earlier_keys(parsed.events[0]).items():
                conn.execute("UPDATE playback_sessions SET key = ? WHERE key = ?", (earlier, new))


def test_a_season_remark_of_an_episode_an_earlier_release_saw_watched_is_no_new_play(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        start = jellyfin("playback_start_episode.json", **IMDB_ONLY)
        stop = jellyfin("playback_stop_episode_completed.json", **IMDB_ONLY)
        rig.post("jellyfin", start)
        rig.advance(48 * 60)
        rig.post("jellyfin", stop)
        as_an_earlier_release_kept_them(rig, start, stop)
        days_later(rig, 10)
        mark = jellyfin(
            "playback_stop_episode_completed.json",
            **IMDB_ONLY,
            **{k: v for k, v in jellyfin_toggle_played(True).items() if k not in IMDB_ONLY},
        )
        rig.post("jellyfin", mark | {"PlayCount": 3})
        assert len(rig.plays()) == 1


# --------------------------------------------------------------------------- ratings that
# Jellyfin and Emby send again (a favourite or like saves the item's stored rating with it)


def jellyfin_rating(rating: int, **fields: Any) -> dict[str, Any]:
    return jellyfin("user_data_saved_update_rating_movie.json", Rating=rating, **fields)


def ratings_queued(rig: Rig) -> list[int]:
    return [r["payload"]["rating"] for r in rig.rows() if r["action"] == "rating"]


def test_a_jellyfin_rating_sent_again_with_a_favourite_is_no_new_rating(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin_rating(8))
        rig.advance(3 * 24 * HOUR)
        rig.post("jellyfin", jellyfin_rating(8, Favorite=True))
        assert ratings_queued(rig) == [80]


def rating_changes(rig: Rig) -> list[str]:
    return [r["action"] for r in rig.rows() if r["action"] in ("rating", "remove_rating")]


def test_a_jellyfin_rating_cleared_is_removed_once(tmp_path: Path) -> None:
    # Jellyfin's user data after a clear holds no rating, as after a favourite toggled on an
    # item never rated: the rating it sent before tells them apart.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin_rating(8, Likes=None))
        rig.advance(HOUR)
        rig.post("jellyfin", jellyfin_rating(0, Likes=None))
        rig.advance(HOUR)
        rig.post("jellyfin", jellyfin_rating(0, Likes=None, Favorite=True))
        assert rating_changes(rig) == ["rating", "remove_rating"]


def test_a_favourite_of_an_item_never_rated_removes_no_rating(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin_rating(0, Likes=None, Favorite=True))
        rig.post("emby", emby("item_rate_favorite_movie.json"))
        assert rating_changes(rig) == []


def test_a_jellyfin_rating_that_changed_is_a_new_rating(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin_rating(8))
        rig.advance(60)
        rig.post("jellyfin", jellyfin_rating(6))
        rig.advance(60)
        rig.post("jellyfin", jellyfin_rating(8))
        assert ratings_queued(rig) == [80, 60, 80]


def test_plex_setting_the_same_stars_again_is_a_new_rating(tmp_path: Path) -> None:
    # Plex sends media.rate only when the user rates: the same stars again mean it (a rating
    # changed on Trakt meanwhile is set back).
    with running_rig(tmp_path) as rig:
        rig.post("plex", plex("movie_media_rate.json"))
        rig.advance(3 * 24 * HOUR)
        rig.post("plex", plex("movie_media_rate.json"))
        assert len(ratings_queued(rig)) == 2


def test_a_plex_rating_cleared_again_within_the_week_is_a_removal_of_its_own(
    tmp_path: Path,
) -> None:
    # Delivered rows are kept a week (their keys with them): the second clearing must not
    # share the first one's key, or it is dropped and the target keeps the second rating.
    cleared = plex("movie_media_rate.json")
    del cleared["rating"], cleared["Metadata"]["userRating"], cleared["Metadata"]["lastRatedAt"]
    with running_rig(tmp_path) as rig:
        for _ in range(2):
            rig.post("plex", plex("movie_media_rate.json", lastRatedAt=int(rig.clock())))
            rig.advance(HOUR)
            rig.post("plex", cleared)
            rig.advance(HOUR)
        changes = [r["action"] for r in rig.rows() if r["action"] in ("rating", "remove_rating")]
        assert changes == ["rating", "remove_rating"] * 2


def test_an_emby_rating_sent_again_with_a_favourite_is_no_new_rating(tmp_path: Path) -> None:
    def rated(rating: int, favourite: bool) -> dict[str, Any]:
        body = emby("item_rate_favorite_movie.json")
        body["Item"]["UserData"] |= {"Rating": rating, "IsFavorite": favourite}
        return body

    with running_rig(tmp_path) as rig:
        rig.post("emby", rated(7, favourite=False))
        rig.advance(HOUR)
        rig.post("emby", rated(7, favourite=True))
        assert ratings_queued(rig) == [70]


def test_rating_a_watched_episode_leaves_a_later_season_remark_no_new_play(
    tmp_path: Path,
) -> None:
    # A rating is no viewing: its value is not progress that got a new viewing going.
    rated = jellyfin_toggle_played(True) | {
        "SaveReason": "UpdateUserRating",
        "Rating": 8,
        "Likes": None,
        "Favorite": False,
    }
    with running_rig(tmp_path) as rig:
        watched_to_the_end(rig)
        days_later(rig, 5)
        rig.post("jellyfin", rated)
        assert ratings_queued(rig) == [80]
        days_later(rig, 5)
        marked_played(rig, play_count=2)
        assert len(rig.plays()) == 1


def test_a_resume_the_day_after_a_lost_emby_stop_shows_as_watching_again(tmp_path: Path) -> None:
    def started_at(percent: float) -> dict[str, Any]:
        body = emby("playback_start_episode.json")
        body["PlaybackInfo"]["PositionTicks"] = int(JELLYFIN_TICKS * percent / 100)  # one runtime
        return body

    with running_rig(tmp_path) as rig:
        rig.post("emby", started_at(0))
        rig.advance(20 * HOUR)  # Emby restarted 20 minutes in: its stop never came
        rig.post("emby", started_at(42))  # the same TV resumes the episode
        assert rig.live() == ["start", "start"]


def test_a_jellyfin_resume_the_day_after_a_lost_stop_shows_as_watching_again(
    tmp_path: Path,
) -> None:
    # Jellyfin reported progress up to 40 %: the TV resumes right there.
    resumed = jellyfin_progress(40) | {"NotificationType": "PlaybackStart", "IsPaused": None}
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        for percent in range(5, 45, 5):
            rig.advance(2 * 60)
            rig.post("jellyfin", jellyfin_progress(percent))
        rig.advance(20 * HOUR)  # the server restarted at 40 %: its stop never came
        rig.post("jellyfin", resumed)
        assert rig.live() == ["start", "start"]


# --------------------------------------------------------------------------- the rest of a viewing
# A viewing stopped past the threshold and its rest (the credits) watched hours later ends with
# that rest: marks are timed from there. An earlier viewing's date and another player's pause
# are still timed from its completion.


def counted_then_its_rest(rig: Rig, player: str = KODI) -> None:
    """A generic player stops at 92 % (counted), then four hours later plays the rest."""
    rig.post("generic", generic("start", 0, player=player))
    rig.advance(110 * 60)
    rig.post("generic", generic("stop", 92, player=player))
    rig.advance(4 * HOUR)
    rig.post("generic", generic("start", 92, player=player))
    rig.advance(10 * 60)
    rig.post("generic", generic("stop", 100, player=player, played=True))


@pytest.mark.parametrize(("after", "plays"), [(5 * 60, 1), (3 * HOUR, 2)])
def test_home_assistants_played_after_the_rest_of_a_viewing_is_timed_from_its_end(
    tmp_path: Path, after: float, plays: int
) -> None:
    # Home Assistant's automation sends `played` naming no player: minutes after the rest
    # ended it is that viewing's; three hours or more after, marked again.
    with running_rig(tmp_path) as rig:
        counted_then_its_rest(rig)
        rig.advance(after)
        rig.post("generic", generic("played"))
        assert len(rig.plays()) == plays, rig.live()


@pytest.mark.parametrize("player", [None, KODI], ids=["no player", "the player of the rest"])
@pytest.mark.parametrize(("old", "plays"), [(False, 1), (True, 2)])
def test_a_history_scripts_mark_after_the_rest_of_a_viewing_is_dated_by_its_completion(
    tmp_path: Path, player: str | None, old: bool, plays: int
) -> None:
    # The script dates the viewing when it was counted (hours before its rest ended): the same
    # play, whether it names no player or the one that played the rest (its viewing ended with
    # the rest). Dated years before, it is an old viewing: a play of its own.
    with running_rig(tmp_path) as rig:
        counted_then_its_rest(rig)
        counted_at = datetime.fromtimestamp(rig.plays()[0]["payload"]["at"], UTC)
        rig.advance(10 * 60)
        dated = IN_2020 if old else {"watched_at": counted_at.isoformat()}
        rig.post("generic", generic("played", player=player) | dated)
        assert len(rig.plays()) == plays, rig.live()


def test_a_history_scripts_mark_naming_the_player_while_it_plays_the_rest_is_one_play(
    tmp_path: Path,
) -> None:
    # Sent while the player plays the rest, four hours after it counted the viewing, dated then.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 92, player=KODI))
        counted_at = datetime.fromtimestamp(rig.plays()[0]["payload"]["at"], UTC)
        rig.advance(4 * HOUR)
        rig.post("generic", generic("start", 92, player=KODI))
        rig.advance(5 * 60)
        rig.post("generic", generic("played", player=KODI, watched_at=counted_at.isoformat()))
        rig.advance(5 * 60)
        rig.post("generic", generic("stop", 100, player=KODI, played=True))
        assert len(rig.plays()) == 1, rig.live()


def test_home_assistants_played_after_the_rest_of_a_viewing_and_a_brief_restart_is_one_play(
    tmp_path: Path,
) -> None:
    # Started again from the beginning 20 minutes after the rest ended, stopped at 10 %.
    with running_rig(tmp_path) as rig:
        counted_then_its_rest(rig)
        rig.advance(20 * 60)
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(10 * 60)
        rig.post("generic", generic("stop", 10, player=KODI))
        rig.advance(60)
        rig.post("generic", generic("played"))
        assert len(rig.plays()) == 1, rig.live()


def jellyfin_started_at(percent: float, **fields: Any) -> dict[str, Any]:
    ticks = int(JELLYFIN_TICKS * percent / 100)
    return jellyfin("playback_start_episode.json", PlaybackPositionTicks=ticks, **fields)


def jellyfin_completed_at(percent: float) -> dict[str, Any]:
    ticks = int(JELLYFIN_TICKS * percent / 100)
    return jellyfin("playback_stop_episode_completed.json", PlaybackPositionTicks=ticks)


@pytest.mark.parametrize(("restarted", "plays"), [(20 * 60, 1), (3 * HOUR, 2)])
def test_a_season_remark_after_the_rest_of_an_episode_and_a_restart_is_timed_from_its_end(
    tmp_path: Path, restarted: float, plays: int
) -> None:
    # Counted at 92 %, the credits watched four hours later, then started again from the
    # beginning and stopped at 10 %; then the season is marked played (Jellyfin counts the
    # episode once more). Started again soon after the rest, it is the same play; hours
    # after, a viewing stopped before the end, then marked played.
    with running_rig(tmp_path) as rig:
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(44 * 60)
        rig.post("jellyfin", jellyfin_completed_at(92))
        rig.advance(4 * HOUR)
        rig.post("jellyfin", jellyfin_started_at(92))
        rig.advance(4 * 60)
        rig.post("jellyfin", jellyfin_completed_at(100))
        rig.advance(restarted)
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(5 * 60)
        rig.post("jellyfin", jellyfin_progress(10))
        rig.post("jellyfin", jellyfin_stop(10))
        rig.advance(60)
        marked_played(rig, play_count=4)
        assert len(rig.plays()) == plays, rig.live()


def test_home_assistants_played_after_the_rest_of_a_viewing_another_player_began_is_one_play(
    tmp_path: Path,
) -> None:
    # The bedroom started the film from the beginning three and a half hours after the living
    # room counted it; the living room then played its rest. The `played` after it may be
    # the bedroom's (stopped before the end) or the living room's: taken as one play, not two
    # (the bedroom's own completion, if it comes, is a play of its own).
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 92, player=KODI))
        rig.advance(3.5 * HOUR)
        rig.post("generic", generic("start", 0, player="kodi-bedroom"))
        rig.advance(10 * 60)
        rig.post("generic", generic("pause", 10, player="kodi-bedroom"))
        rig.advance(10 * 60)
        rig.post("generic", generic("start", 92, player=KODI))
        rig.advance(10 * 60)
        rig.post("generic", generic("stop", 100, player=KODI, played=True))
        rig.advance(5 * 60)
        rig.post("generic", generic("played"))
        assert len(rig.plays()) == 1, rig.live()


def test_the_tvs_paused_session_ending_after_the_tablet_played_its_rest_hours_later_is_one_play(
    tmp_path: Path,
) -> None:
    # The TV paused at the credits; the tablet finished the viewing (92 %) and played its
    # last minutes the next morning; the TV's paused session then ends as played.
    with running_rig(tmp_path) as rig:
        tablet = {"DeviceId": "tablet-id", "DeviceName": "Tablet"}
        rig.post("jellyfin", jellyfin("playback_start_episode.json"))
        rig.advance(40 * 60)
        rig.post("jellyfin", jellyfin_progress(85, paused=True))
        rig.advance(10 * 60)
        rig.post("jellyfin", jellyfin_started_at(85, **tablet))
        rig.advance(4 * 60)
        rig.post("jellyfin", jellyfin_completed_at(92) | tablet)
        rig.advance(10 * HOUR)
        rig.post("jellyfin", jellyfin_started_at(92, **tablet))
        rig.advance(4 * 60)
        rig.post("jellyfin", jellyfin_completed_at(100) | tablet)
        rig.advance(30 * 60)
        rig.post("jellyfin", jellyfin_completed_at(85))
        assert len(rig.plays()) == 1, rig.live()


# ------------------------------------------------------------------- a mark after a completion
# A mark naming no player soon after a completion is that viewing's: it leaves the viewing's
# completion where it was. A history script's mark is dated by that completion; a player
# paused before it ends as part of it. The mark still keeps the viewing open for what is timed
# from its end: another mark, a player first seen past half way.


@pytest.mark.parametrize(
    ("marked_after", "dated_before"),
    [
        (2 * HOUR + 50 * 60, 15 * 60),  # dated a little before the completion
        (90 * 60, 110 * 60),  # dated at the viewing's start
    ],
)
def test_a_history_scripts_mark_after_home_assistants_played_is_the_same_play(
    tmp_path: Path, marked_after: float, dated_before: float
) -> None:
    # Kodi counts the film; Home Assistant's `played` (naming no player) follows within three
    # hours; then a history script sends the viewing, dated by when it ended or began.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 96, player=KODI, played=True))
        counted_at = rig.plays()[0]["payload"]["at"]
        rig.advance(marked_after)
        rig.post("generic", generic("played"))
        rig.advance(10 * 60)
        dated = datetime.fromtimestamp(counted_at - dated_before, UTC).isoformat()
        rig.post("generic", generic("played", watched_at=dated))
        rig.post("generic", generic("played") | IN_2020)  # an old viewing: a play of its own
        assert len(rig.plays()) == 2, rig.live()


def test_the_tv_paused_before_the_tablet_finished_ends_as_part_of_it_after_a_later_mark(
    tmp_path: Path,
) -> None:
    # The TV paused at the credits, the tablet finished the film, Home Assistant's `played`
    # followed near three hours later; the TV, switched off after, ends its paused session.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(100 * 60)
        rig.post("generic", generic("pause", 88, player=KODI))
        rig.advance(5 * 60)
        rig.post("generic", generic("start", 88, player="kodi-tablet"))
        rig.advance(10 * 60)
        rig.post("generic", generic("stop", 97, player="kodi-tablet", played=True))
        rig.advance(2 * HOUR + 55 * 60)
        rig.post("generic", generic("played"))
        rig.advance(HOUR)
        rig.post("generic", generic("stop", 88, player=KODI, played=True))
        assert len(rig.plays()) == 1, rig.live()


def test_a_player_first_seen_past_half_way_soon_after_a_mark_of_a_viewing_plays_its_rest(
    tmp_path: Path,
) -> None:
    # Counted in the living room, marked played two hours later; the tablet, never seen
    # playing the film, plays its last part four hours after the completion: no second play.
    with running_rig(tmp_path) as rig:
        rig.post("generic", generic("start", 0, player=KODI))
        rig.advance(110 * 60)
        rig.post("generic", generic("stop", 96, player=KODI, played=True))
        rig.advance(2 * HOUR)
        rig.post("generic", generic("played"))
        rig.advance(2 * HOUR)
        rig.post("generic", generic("start", 60, player="kodi-tablet"))
        rig.advance(40 * 60)
        rig.post("generic", generic("stop", 100, player="kodi-tablet"))
        assert len(rig.plays()) == 1, rig.live()


def test_plex_ratings_changed_back_within_one_second_end_as_the_last_one(tmp_path: Path) -> None:
    # 4 stars, 3.5, 4 again within a second (a slider dragged): the third is the first's stars
    # at the first's second, and must not be taken for it, or Trakt keeps the 3.5.
    with running_rig(tmp_path) as rig:
        given = int(rig.clock())
        for stars in ("8", "7", "8"):
            body = plex("movie_media_rate.json", userRating=float(stars), lastRatedAt=given)
            rig.post("plex", body | {"rating": stars})
        assert ratings_queued(rig) == [80, 70, 80]


def test_a_plex_rating_cleared_twice_within_one_second_ends_cleared(tmp_path: Path) -> None:
    cleared = plex("movie_media_rate.json")
    del cleared["rating"], cleared["Metadata"]["userRating"], cleared["Metadata"]["lastRatedAt"]
    with running_rig(tmp_path) as rig:
        given = int(rig.clock())
        for _ in range(2):
            rig.post("plex", plex("movie_media_rate.json", lastRatedAt=given))
            rig.post("plex", cleared)
        changes = [r["action"] for r in rig.rows() if r["action"] in ("rating", "remove_rating")]
        assert changes == ["rating", "remove_rating"] * 2
