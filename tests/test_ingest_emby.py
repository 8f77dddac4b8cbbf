"""Emby webhooks: JSON and the default multipart form, marks, ratings, missing users."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ingest_samples import only_event, raw_request, sample_json
from watchbridge.ingest import parse as parse_request
from watchbridge.ingest.emby import parse
from watchbridge.model import Account, Ids, Ignored, MediaEvent, Rejected

OZYMANDIAS = Ids(imdb="tt2301451", tvdb="4637661")
ALEX = Account(id="6c1f0a9e2b7d4f3c8e5a1d0b9c8f7e6d", name="alex")
SERVER = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
DEVICE = "4b2e8f1a-7c3d-4e5f-9a0b-1c2d3e4f5a6b"


def sample(name: str, **changes: Any) -> dict[str, Any]:
    payload = sample_json("emby", name)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def assert_ozymandias(event: MediaEvent) -> None:
    assert event.source == "emby"
    assert event.item.kind == "episode"
    assert event.item.ids == OZYMANDIAS
    assert (event.item.show_title, event.item.season, event.item.number) == ("Breaking Bad", 5, 14)
    assert (event.item.source_key, event.item.show_source_key) == ("51873", "51801")
    assert event.account == ALEX
    assert (event.server, event.player) == (SERVER, DEVICE)
    assert event.session_id == "3d2c1b0a9f8e7d6c5b4a39281706f5e4"


def test_playback_start_is_a_start_at_zero() -> None:
    event = only_event(parse(sample("playback_start_episode.json")))
    assert_ozymandias(event)
    assert event.action == "start"
    assert event.progress == 0


def test_playback_pause_is_a_pause_at_its_position() -> None:
    event = only_event(parse(sample("playback_pause_episode.json")))
    assert_ozymandias(event)
    assert event.action == "pause"
    assert event.progress == pytest.approx(48.39, abs=0.01)


def test_playback_unpause_is_a_resume() -> None:
    payload = sample("playback_pause_episode.json", Event="playback.unpause")
    assert only_event(parse(payload)).action == "resume"


def test_playback_stop_played_to_completion_is_a_played_stop() -> None:
    event = only_event(parse(sample("playback_stop_episode_completed.json")))
    assert_ozymandias(event)
    assert (event.action, event.played) == ("stop", True)
    assert event.progress == pytest.approx(98.0, abs=0.01)
    assert event.occurred_at == pytest.approx(1741985282.66, abs=0.01)


def test_multipart_data_part_gives_the_same_stop_as_json() -> None:
    body, content_type = raw_request("emby", "multipart_playback_stop_episode")
    from_form = only_event(parse_request("emby", body, content_type))
    assert from_form == only_event(parse(sample("playback_stop_episode_completed.json")))


def test_mark_played_is_a_played_mark_dated_by_last_played_date() -> None:
    event = only_event(parse(sample("item_markplayed_movie.json")))
    assert (event.action, event.played) == ("played", True)
    assert event.item.kind == "movie"
    assert event.item.ids == Ids(imdb="tt2543164", tmdb="329865")
    assert (event.item.title, event.item.year) == ("Arrival", 2016)
    assert (event.item.source_key, event.item.show_source_key) == ("40127", None)
    assert event.account == ALEX
    assert event.occurred_at == 1742029964
    assert event.sent_at == pytest.approx(1742029964.33, abs=0.01)  # its Date: both the server's


def test_mark_unplayed_is_unplayed() -> None:
    payload = sample("item_markplayed_movie.json", Event="item.markunplayed")
    event = only_event(parse(payload))
    assert (event.action, event.played) == ("unplayed", False)


def test_favourite_toggle_without_rating_is_a_rate_naming_no_rating() -> None:
    # A clear of a rating looks the same: the item's rating sent before tells which.
    event = only_event(parse(sample("item_rate_favorite_movie.json")))
    assert (event.action, event.rating) == ("rate", None)


def test_rate_of_a_like_is_not_a_star_rating() -> None:
    payload = sample("item_rate_favorite_movie.json")
    payload["Item"]["UserData"] |= {"Likes": True, "Rating": 10}
    assert parse(payload) == Ignored("no_rating")


def test_rate_with_numeric_user_data_rating_is_a_rate() -> None:
    payload = sample("item_rate_favorite_movie.json")
    payload["Item"]["UserData"]["Rating"] = 7
    event = only_event(parse(payload))
    assert (event.action, event.rating) == ("rate", 70)


def test_missing_user_gives_an_empty_account() -> None:
    event = only_event(parse(sample("playback_start_episode.json", User=None)))
    assert event.account == Account()


def test_provider_id_keys_are_read_case_insensitively() -> None:
    payload = sample("playback_start_episode.json")
    payload["Item"]["ProviderIds"] = {"TVDB": "4637661", "imdb": "tt2301451"}
    assert only_event(parse(payload)).item.ids == OZYMANDIAS


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("library.new", "library_event"),
        ("library.deleted", "library_event"),
        ("system.notificationtest", "test_event"),
        ("user.authenticated", "unsupported_event"),
    ],
)
def test_other_events_are_ignored(event: str, reason: str) -> None:
    assert parse(sample("playback_start_episode.json", Event=event)) == Ignored(reason)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (
            b'--b\r\nContent-Disposition: form-data; name="data"\r\n\r\n\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
    ],
    ids=["empty body", "empty data part"],
)
def test_an_older_embys_empty_test_notification_is_acknowledged(
    body: bytes, content_type: str
) -> None:
    # Emby before 4.9.0.37 sent its "Send Test" with nothing in it.
    assert parse_request("emby", body, content_type) == Ignored("test_event")


def test_an_empty_body_from_another_source_is_still_malformed() -> None:
    assert parse_request("jellyfin", b"", "application/json") == Rejected("empty body")


def test_empty_test_notification_body_is_ignored_as_test() -> None:
    assert parse({"Event": "system.notificationtest"}) == Ignored("test_event")


@pytest.mark.parametrize(
    ("item_type", "reason"),
    [
        ("Audio", "not_video"),
        ("Series", "unsupported_type"),
        ("TvChannel", "live_tv"),
        ("Recording", "live_tv"),
    ],
)
def test_items_that_are_not_movies_or_episodes_are_ignored(item_type: str, reason: str) -> None:
    payload = sample("playback_start_episode.json")
    payload["Item"]["Type"] = item_type
    assert parse(payload) == Ignored(reason)


def test_missing_event_is_rejected() -> None:
    assert parse(sample("playback_start_episode.json", Event=None)) == Rejected(
        "emby payload has no Event"
    )


def test_missing_item_is_rejected() -> None:
    assert parse(sample("playback_start_episode.json", Item=None)) == Rejected(
        "emby payload has no Item"
    )


def test_an_episodes_premiere_date_is_its_air_date_in_utc() -> None:
    event = only_event(parse(sample("playback_stop_episode_completed.json")))
    assert event.item.aired == "2013-09-15"  # PremiereDate 2013-09-15T04:00:00Z


def test_a_premiere_date_at_local_midnight_east_of_utc_is_that_local_day() -> None:
    # A server in Berlin stores 2013-09-15 as its local midnight: 2013-09-14T23:00:00Z.
    payload = sample("playback_stop_episode_completed.json")
    payload["Item"]["PremiereDate"] = "2013-09-14T23:00:00.0000000Z"
    assert only_event(parse(payload)).item.aired == "2013-09-15"


def test_the_items_genres_are_read_beside_the_item() -> None:
    event = only_event(parse(sample("playback_stop_episode_completed.json")))
    assert event.genres == ("Drama", "Crime")
    assert_ozymandias(event)  # the item, its ids and keys, as without them
