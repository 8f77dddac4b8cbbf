"""Tautulli webhook agent with our JSON Data template: string values, show-level ids."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ingest_samples import only_event, sample_json
from watchbridge.ingest import parse as parse_request
from watchbridge.ingest.tautulli import parse
from watchbridge.model import Accepted, Account, Ids, Ignored, MediaEvent, Rejected

BREAKING_BAD = Ids(imdb="tt0903747", tmdb="1396", tvdb="81189")
ALEX = Account(id="27160034", name="alex")


def sample(name: str, **changes: Any) -> dict[str, Any]:
    return sample_json("tautulli", name) | changes


def assert_felina(event: MediaEvent) -> None:
    assert event.source == "tautulli"
    assert event.item.kind == "episode"
    assert event.item.show_ids == BREAKING_BAD
    assert event.item.ids == Ids()
    assert (event.item.show_title, event.item.title) == ("Breaking Bad", "Felina")
    assert (event.item.season, event.item.number, event.item.year) == (5, 16, 2008)
    assert event.account == ALEX
    assert event.server == "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"
    assert event.player == "w7h3n9d2f5j8s1a4q6e0t2y5"
    assert event.session_id == "mjz8rfq1y2x3c4v5b6n7m8k9"


@pytest.mark.parametrize(
    ("name", "action", "played", "progress", "unixtime"),
    [
        ("play_episode.json", "start", False, 45.85, 1742069700),
        ("pause_episode.json", "pause", False, 67.57, 1742070140),
        ("watched_episode.json", "stop", True, 85.01, 1742071052),
        ("stop_episode.json", "stop", False, 99.25, 1742071560),
    ],
)
def test_episode_events_give_show_ids_and_position(
    name: str, action: str, played: bool, progress: float, unixtime: int
) -> None:
    event = only_event(parse(sample(name)))
    assert_felina(event)
    assert (event.action, event.played) == (action, played)
    assert event.progress == pytest.approx(progress, abs=0.01)
    assert event.occurred_at == unixtime


def test_resume_is_a_resume() -> None:
    assert only_event(parse(sample("play_episode.json", action="resume"))).action == "resume"


def test_watched_movie_carries_movie_ids_and_the_users_rating() -> None:
    event = only_event(parse(sample("watched_movie.json")))
    assert event.item.kind == "movie"
    assert event.item.ids == Ids(
        imdb="tt2543164", tmdb="329865", plex_guid="plex://movie/5d776b59ad5437001f79c6f8"
    )
    assert (event.item.title, event.item.year) == ("Arrival", 2016)
    assert (event.action, event.played, event.rating) == ("stop", True, 90)


def test_body_posted_as_json_parses_through_the_body_reader() -> None:
    body = json.dumps(sample("watched_episode.json")).encode()
    assert only_event(parse_request("tautulli", body, "application/json")).played is True


def test_new_agent_episode_guid_is_the_episodes_plex_guid() -> None:
    payload = sample("play_episode.json", guid="plex://episode/5d9c1276e9d5a1001f4ff2fa")
    item = only_event(parse(payload)).item
    assert item.ids == Ids(plex_guid="plex://episode/5d9c1276e9d5a1001f4ff2fa")
    assert item.show_ids == BREAKING_BAD


def test_unfilled_placeholder_is_absent_and_warned() -> None:
    result = parse(sample("play_episode.json", thetvdb_id="{thetvdb_id}"))
    assert isinstance(result, Accepted)
    assert result.events[0].item.show_ids == Ids(imdb="tt0903747", tmdb="1396", tvdb="81189")
    assert "thetvdb_id: Tautulli did not fill in {thetvdb_id}" in result.warnings


def test_missing_view_offset_falls_back_to_progress_percent() -> None:
    event = only_event(parse(sample("pause_episode.json", view_offset="")))
    assert event.position_ms == round(3_315_000 * 0.68)


def test_a_duration_in_minutes_gives_way_to_progress_percent_with_a_warning() -> None:
    # `{duration}` (55 minutes) pasted where `{duration_ms}` goes: every stop read as watched.
    body = sample("stop_episode.json", duration_ms="55", view_offset="1326000")
    body["progress_percent"] = "40"
    result = parse(body)
    event = only_event(result)
    assert event.progress == pytest.approx(40.0)
    assert isinstance(result, Accepted)
    assert any("duration_ms disagrees" in w for w in result.warnings)


def test_a_view_offset_of_zero_beside_a_percent_goes_by_the_percent() -> None:
    # A view_offset of 0 at 68 %: the position says nothing of the duration (it made one of 0).
    event = only_event(parse(sample("pause_episode.json", view_offset=0)))
    assert event.duration_ms == 3_315_000
    assert event.position_ms == round(3_315_000 * 0.68)


def test_empty_strings_mean_absent() -> None:
    event = only_event(parse(sample("play_episode.json", user_id="", user_rating="")))
    assert event.account == Account(name="alex")
    assert event.rating is None


@pytest.mark.parametrize(
    ("action", "reason"),
    [("created", "library_event"), ("buffer", "unsupported_event"), ("error", "unsupported_event")],
)
def test_other_triggers_are_ignored(action: str, reason: str) -> None:
    assert parse(sample("play_episode.json", action=action)) == Ignored(reason)


@pytest.mark.parametrize(
    ("media_type", "reason"), [("track", "not_video"), ("clip", "unsupported_type")]
)
def test_media_that_is_not_a_movie_or_episode_is_ignored(media_type: str, reason: str) -> None:
    assert parse(sample("play_episode.json", media_type=media_type)) == Ignored(reason)


def test_missing_action_is_rejected() -> None:
    assert parse(sample("play_episode.json", action="")) == Rejected(
        "tautulli payload has no action"
    )


def test_unfilled_action_placeholder_is_rejected() -> None:
    assert parse(sample("play_episode.json", action="{action}")) == Rejected(
        "tautulli payload has no action"
    )


def test_the_test_button_sends_the_template_unfilled_and_is_acknowledged() -> None:
    template = sample_json("tautulli", "template_data.json")
    assert parse(template) == Ignored("test_event")


def test_an_empty_body_is_refused_naming_the_trigger_box_left_empty() -> None:
    # A new Webhook agent's JSON Data box is empty for every trigger, and Tautulli posts an
    # empty body for a ticked trigger whose box is empty: Stop or Watched left so loses every
    # play. Its Test Notifications with an empty box looks the same.
    result = parse_request("tautulli", b"", "application/json")
    assert isinstance(result, Rejected)
    assert "JSON Data box" in result.reason
    assert "docs/webhooks.md" in result.reason


def test_missing_media_type_is_rejected() -> None:
    assert parse(sample("play_episode.json", media_type="")) == Rejected(
        "tautulli payload has no media_type"
    )


def test_template_data_file_is_the_one_documented() -> None:
    template = sample_json("tautulli", "template_data.json")
    assert template["action"] == "{action}"
    assert set(template) == set(sample_json("tautulli", "play_episode.json"))


def test_an_absurd_duration_is_ignored_not_a_crash() -> None:
    # A broken template can send any number; the position then comes from nowhere.
    payload = sample("play_episode.json", duration_ms=10**400)
    payload.pop("view_offset", None)
    event = only_event(parse(payload))
    assert event.duration_ms is None and event.progress is None


HAMA_TVDB3 = "com.plexapp.agents.hama://tvdb3-81797/2/100?lang=en"


def test_a_hama_tvdb3_episode_is_numbered_absolutely_as_plex_numbers_it() -> None:
    payload = sample("watched_episode.json", guid=HAMA_TVDB3, season_num="2", episode_num="100")
    item = only_event(parse(payload)).item
    assert (item.season, item.number, item.absolute) == (2, None, 100)


def test_a_hama_guid_numbers_an_episode_tautulli_left_unnumbered() -> None:
    payload = sample("watched_episode.json", guid=HAMA_TVDB3)
    del payload["season_num"], payload["episode_num"]
    item = only_event(parse(payload)).item
    assert (item.season, item.number, item.absolute) == (2, None, 100)


HAMA = "com.plexapp.agents.hama://"
NO_SHOW_IDS = {"imdb_id": "", "themoviedb_id": "", "thetvdb_id": ""}  # a HAMA show: no Guid[]


@pytest.mark.parametrize(
    ("guid", "show_ids", "unplaced"),
    [
        # the modes whose numbers are known: placed by them, as before
        ("tvdb3-81797/2/100", {}, None),
        ("tvdb-305089/1/4", {}, None),
        ("anidb-15593/1/3", {}, None),
        # numbered in a way not known: listed, as a Plex webhook's (hama.numbering_unknown)
        ("tvdb5-81797/22/1100", {}, "hama-mode: tvdb5"),
        ("anidb2-15593/1/5", {}, "hama-mode: anidb2"),
        # show ids from the show's Guid[]: its show was matched again by another agent
        (
            "anidb-15593/1/3",
            {"themoviedb_id": "65942"},
            "hama-mixed: `anidb-`, anidb 15593, tmdb 65942",
        ),
    ],
)
def test_a_hama_episode_is_unplaced_as_a_plex_webhooks_is(
    guid: str, show_ids: dict[str, str], unplaced: str | None
) -> None:
    payload = sample("watched_episode.json", guid=f"{HAMA}{guid}?lang=en", **NO_SHOW_IDS)
    item = only_event(parse(payload | show_ids)).item
    assert item.unplaced == unplaced


def test_tautullis_anidb_id_of_a_hama_tvdb_guid_is_no_anidb_id() -> None:
    # Tautulli takes the number after any HAMA mode's dash for `anidb_id`: here TheTVDB's.
    payload = sample(
        "watched_episode.json", guid=f"{HAMA}tvdb-305089/1/4?lang=en", anidb_id="305089"
    )
    item = only_event(parse(payload | NO_SHOW_IDS)).item
    assert item.show_ids == Ids(tvdb="305089") and item.unplaced is None


@pytest.mark.parametrize(
    "changes",
    [{"guid": "tv.plex.xmltv://episode/5f2c1e0a9b8c7d6e5f4a3b2c"}, {"live": "1"}],
)
def test_live_tv_is_acknowledged_and_ignored(changes: dict[str, str]) -> None:
    assert parse(sample("watched_episode.json", **changes)) == Ignored("live_tv")


def test_a_recording_that_is_not_live_is_a_play() -> None:
    assert isinstance(parse(sample("watched_episode.json", live="0")), Accepted)
