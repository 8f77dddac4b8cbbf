"""Jellyfin webhook plugin: Send All Properties and template bodies, user data events."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ingest_samples import only_event, sample_bytes, sample_json
from watchbridge.ingest import parse as parse_request
from watchbridge.ingest.jellyfin import NO_ITEM_TYPE, parse
from watchbridge.model import Accepted, Account, Ids, Ignored, MediaEvent, Rejected

OZYMANDIAS = Ids(imdb="tt2301451", tmdb="62161", tvdb="4637661")
ALEX = Account(id="a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6", name="alex")
SERVER = "5b6f0e3a2c1d4e8f9a7b6c5d4e3f2a1b"
ITEM = "c7d2a91e4b3f4e6a8d0b1c2e3f4a5b6c"
SERIES = "1f0e2d3c4b5a69788796a5b4c3d2e1f0"
DEVICE = (
    "TW96aWxsYS81LjAgKFgxMTsgTGludXggeDg2XzY0OyBydjoxMjguMCkgR2Vja28vMjAxMDAxMDEgRmlyZWZveC8x"
    "MjguMHwxNzQxOTgxNjAwMDAw"
)


def sample(name: str, **changes: Any) -> dict[str, Any]:
    payload = sample_json("jellyfin", name)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def assert_ozymandias(event: MediaEvent) -> None:
    assert event.source == "jellyfin"
    assert event.item.kind == "episode"
    assert event.item.ids == OZYMANDIAS
    assert event.item.show_ids == Ids()
    assert (event.item.show_title, event.item.season, event.item.number) == ("Breaking Bad", 5, 14)
    assert (event.item.source_key, event.item.show_source_key) == (ITEM, SERIES)
    assert event.account == ALEX
    assert (event.server, event.player) == (SERVER, DEVICE)


def test_playback_start_is_a_start_at_zero() -> None:
    event = only_event(parse(sample("playback_start_episode.json")))
    assert_ozymandias(event)
    assert event.action == "start"
    assert event.progress == 0
    assert event.session_id == "f0e1d2c3b4a5968778695a4b3c2d1e0f"


def test_paused_progress_report_is_a_pause_with_ticks_converted_to_ms() -> None:
    event = only_event(parse(sample("playback_progress_episode_paused.json")))
    assert_ozymandias(event)
    assert event.action == "pause"
    assert (event.position_ms, event.duration_ms) == (1_382_000, 2_856_000)
    assert event.progress == pytest.approx(48.39, abs=0.01)


def test_unpaused_progress_report_is_progress() -> None:
    event = only_event(parse(sample("playback_progress_episode_paused.json", IsPaused=False)))
    assert event.action == "progress"


def test_stop_played_to_completion_is_a_played_stop() -> None:
    event = only_event(parse(sample("playback_stop_episode_completed.json")))
    assert_ozymandias(event)
    assert (event.action, event.played) == ("stop", True)
    assert event.progress == pytest.approx(98.0, abs=0.01)
    assert event.occurred_at == pytest.approx(1741985282.88, abs=0.01)


def test_stop_not_played_to_completion_is_a_plain_stop() -> None:
    payload = sample("playback_stop_episode_completed.json", PlayedToCompletion=False)
    assert only_event(parse(payload)).played is False


def test_template_body_sent_as_text_plain_gives_the_same_event_as_send_all_properties() -> None:
    body = sample_bytes("jellyfin", "template_rendered_playback_stop.json")
    event = only_event(parse_request("jellyfin", body, "text/plain; charset=utf-8"))
    assert_ozymandias(event)
    assert (event.action, event.played) == ("stop", True)
    assert (event.position_ms, event.duration_ms) == (2_799_000, 2_856_000)
    assert event.item.year == 2008


def test_older_template_broken_by_a_quote_in_the_device_name_still_gives_the_play() -> None:
    body = sample_bytes("jellyfin", "template_rendered_playback_stop.json").replace(
        b'  "UtcTimestamp"', b'  "DeviceName": "Samsung 65" TV",\n  "UtcTimestamp"'
    )
    event = only_event(parse_request("jellyfin", body, "text/plain; charset=utf-8"))
    assert_ozymandias(event)
    assert (event.action, event.played) == ("stop", True)


def test_template_title_ending_in_a_backslash_is_read_as_it_is() -> None:
    body = sample_bytes("jellyfin", "template_rendered_playback_stop.json").replace(
        b'"Ozymandias"', b'"Ozymandias\\"'
    )
    event = only_event(parse_request("jellyfin", body, "text/plain; charset=utf-8"))
    assert event.item.title == "Ozymandias\\"


def test_template_date_in_culture_text_leaves_the_time_unknown() -> None:
    event = only_event(parse(sample("template_rendered_playback_stop.json")))
    assert event.occurred_at is None


def test_template_boolean_text_false_is_read_as_false() -> None:
    payload = sample("template_rendered_playback_stop.json", PlayedToCompletion="False")
    assert only_event(parse(payload)).played is False


def test_template_paused_text_true_gives_a_pause() -> None:
    payload = sample(
        "template_rendered_playback_stop.json", NotificationType="PlaybackProgress", IsPaused="True"
    )
    assert only_event(parse(payload)).action == "pause"


def test_template_rating_text_gives_a_rating() -> None:
    template = sample_bytes("jellyfin", "recommended_template.handlebars").decode()
    assert '"Rating": "{{Rating}}"' in template  # the template in docs/webhooks.md carries it
    payload = sample(
        "template_rendered_playback_stop.json",
        NotificationType="UserDataSaved",
        SaveReason="UpdateUserRating",
        Rating="8",
        Likes="False",
    )
    event = only_event(parse(payload))
    assert (event.action, event.rating) == ("rate", 80)


def test_user_and_server_guids_with_dashes_match_the_send_all_properties_form() -> None:
    template = only_event(parse(sample("template_rendered_playback_stop.json")))
    typed = only_event(parse(sample("playback_stop_episode_completed.json")))
    assert (template.account, template.server) == (typed.account, typed.server)
    assert (template.item.source_key, template.item.show_source_key) == (ITEM, SERIES)


def test_toggle_played_is_a_manual_played_mark_dated_by_last_played_date() -> None:
    event = only_event(parse(sample("user_data_saved_toggle_played_movie.json")))
    assert (event.action, event.played) == ("played", True)
    assert event.item.kind == "movie"
    assert event.item.ids == Ids(imdb="tt2543164", tmdb="329865")
    assert (event.item.title, event.item.year) == ("Arrival", 2016)
    assert event.occurred_at == pytest.approx(1742029964.20, abs=0.01)
    assert event.sent_at == pytest.approx(1742029964.20, abs=0.01)  # its UtcTimestamp
    assert event.position_ms is None
    assert (event.item.source_key, event.item.show_source_key) == (
        "0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4",
        None,
    )


@pytest.mark.parametrize(("count", "remark"), [(1, False), (2, True), ("3", True), ("", False)])
def test_a_played_mark_counting_the_item_again_may_be_a_re_mark(
    count: object, remark: bool
) -> None:
    payload = sample("user_data_saved_toggle_played_movie.json", PlayCount=count)
    assert only_event(parse(payload)).remark is remark


def test_a_played_mark_keeping_an_earlier_date_may_be_a_remark() -> None:
    # Jellyfin's multi-select "mark played" sends no date: the item keeps its last play's.
    payload = sample(
        "user_data_saved_toggle_played_movie.json",
        PlayCount=1,
        LastPlayedDate="2025-03-01T20:00:00.0000000Z",
        UtcTimestamp="2025-03-15T09:12:44.2011912Z",
    )
    assert only_event(parse(payload)).remark is True


def test_toggle_played_off_is_unplayed() -> None:
    payload = sample("user_data_saved_toggle_played_movie.json", Played=False)
    event = only_event(parse(payload))
    assert (event.action, event.played) == ("unplayed", False)


def test_toggle_played_without_played_value_is_rejected() -> None:
    payload = sample("user_data_saved_toggle_played_movie.json", Played=None)
    assert parse(payload) == Rejected("jellyfin UserDataSaved (TogglePlayed) has no Played value")


def test_like_or_favourite_without_rating_is_ignored() -> None:
    assert parse(sample("user_data_saved_update_rating_movie.json")) == Ignored("no_rating")


@pytest.mark.parametrize(("likes", "stored"), [(True, 10), (False, 1)])
def test_a_thumbs_up_or_down_is_not_a_star_rating(likes: bool, stored: int) -> None:
    # Jellyfin stores a like as Rating 10 and a dislike as 1; Trakt must not get 10/10 or 1/10.
    payload = sample("user_data_saved_update_rating_movie.json", Likes=likes, Rating=stored)
    assert parse(payload) == Ignored("no_rating")


def test_numeric_rating_is_a_rate() -> None:
    payload = sample("user_data_saved_update_rating_movie.json", Rating=8)
    event = only_event(parse(payload))
    assert (event.action, event.rating) == ("rate", 80)


def test_a_user_data_update_is_not_taken_for_a_rating() -> None:
    # POST /UserItems/{id}/UserData saves UpdateUserData with the item's Rating whatever it
    # changed (a resume position, a play count): an old rating must not be sent again.
    payload = sample(
        "user_data_saved_update_rating_movie.json", SaveReason="UpdateUserData", Rating=8
    )
    assert parse(payload) == Ignored("unsupported_event")


@pytest.mark.parametrize("reason", ["PlaybackStart", "PlaybackProgress", "PlaybackFinished", "3"])
def test_user_data_saved_by_playback_is_an_echo(reason: str) -> None:
    payload = sample("user_data_saved_toggle_played_movie.json", SaveReason=reason)
    assert parse(payload) == Ignored("user_data_echo")


def test_numeric_save_reason_is_understood() -> None:
    payload = sample("user_data_saved_toggle_played_movie.json", SaveReason="4")
    assert only_event(parse(payload)).action == "played"


@pytest.mark.parametrize(
    ("notification", "reason"),
    [
        ("ItemAdded", "library_event"),
        ("ItemDeleted", "library_event"),
        ("AuthenticationSuccess", "unsupported_event"),
        ("TaskCompleted", "unsupported_event"),
    ],
)
def test_other_notification_types_are_ignored(notification: str, reason: str) -> None:
    payload = sample("playback_start_episode.json", NotificationType=notification)
    assert parse(payload) == Ignored(reason)


@pytest.mark.parametrize(
    ("item_type", "reason"),
    [
        ("Audio", "not_video"),
        ("AudioBook", "not_video"),
        ("Series", "unsupported_type"),
        ("Season", "unsupported_type"),
        ("Video", "unsupported_type"),
        ("Trailer", "unsupported_type"),
        ("TvChannel", "live_tv"),
        ("Program", "live_tv"),
        ("Recording", "live_tv"),
    ],
)
def test_items_that_are_not_movies_or_episodes_are_ignored(item_type: str, reason: str) -> None:
    payload = sample("playback_start_episode.json", ItemType=item_type)
    assert parse(payload) == Ignored(reason)


def test_missing_notification_type_is_rejected() -> None:
    payload = sample("playback_start_episode.json", NotificationType=None)
    assert parse(payload) == Rejected("jellyfin payload has no NotificationType")


def test_missing_item_type_is_rejected() -> None:
    payload = sample("playback_start_episode.json", ItemType=None)
    assert parse(payload) == Rejected(NO_ITEM_TYPE)


def test_send_all_properties_double_escaped_quotes_are_unescaped() -> None:
    payload = sample("playback_start_episode.json", Name='Say \\"Hi\\"')
    assert only_event(parse(payload)).item.title == 'Say "Hi"'


def test_each_episode_of_a_multi_episode_file_follows_its_playback() -> None:
    result = parse(sample("playback_start_episode.json", EpisodeNumberEnd=15))
    assert isinstance(result, Accepted)
    assert [(e.item.number, e.companion) for e in result.events] == [(14, False), (15, True)]


def test_a_multi_episode_file_stopped_completes_each_of_its_episodes() -> None:
    result = parse(sample("playback_stop_episode_completed.json", EpisodeNumberEnd=16))
    assert isinstance(result, Accepted)
    first, *rest = result.events
    assert [e.item.number for e in result.events] == [14, 15, 16]
    for event in rest:
        assert (event.action, event.played, event.position_ms) == ("stop", True, first.position_ms)
        assert event.item.ids == Ids() and event.item.season == 5
        assert event.item.show_source_key == first.item.show_source_key


def test_an_implausible_episode_range_is_ignored() -> None:
    result = parse(sample("playback_stop_episode_completed.json", EpisodeNumberEnd=140))
    assert isinstance(result, Accepted) and len(result.events) == 1


def test_malformed_provider_id_is_dropped_with_a_warning() -> None:
    result = parse(sample("playback_start_episode.json", Provider_tmdb="abc"))
    assert isinstance(result, Accepted)
    assert result.events[0].item.ids == Ids(imdb="tt2301451", tvdb="4637661")
    assert "ignored malformed tmdb id 'abc'" in result.warnings


def test_missing_user_gives_an_empty_account() -> None:
    payload = sample("playback_start_episode.json", UserId=None, NotificationUsername=None)
    assert only_event(parse(payload)).account == Account()


def test_an_episodes_premiere_date_is_its_air_date() -> None:
    event = only_event(parse(sample("template_rendered_playback_stop.json")))
    assert event.item.aired == "2013-09-15"


def test_a_premiere_date_left_unfilled_is_no_air_date() -> None:
    payload = sample("template_rendered_playback_stop.json", PremiereDate="{{PremiereDate}}")
    assert only_event(parse(payload)).item.aired is None


DOCS_TEMPLATE = re.search(
    r"```handlebars\n(.+?)```",
    (Path(__file__).parent.parent / "docs" / "webhooks.md").read_text(encoding="utf-8"),
    flags=re.S,
)


def rendered_docs_template(**values: str) -> bytes:
    """The template in docs/webhooks.md as the plugin renders it: each variable as the server
    writes it (`values`, .NET text), `{{x}}` HTML-escaped, `{{{x}}}` raw, a missing one ""."""
    assert DOCS_TEMPLATE, "the Jellyfin template in docs/webhooks.md"

    def value(name: re.Match[str], escaped: bool) -> str:
        text = values.get(name[1], "")
        if not escaped:
            return text
        return html.escape(text).replace("`", "&#x60;").replace("=", "&#x3D;")

    raw = re.sub(r"\{\{\{(\w+)\}\}\}", lambda m: value(m, escaped=False), DOCS_TEMPLATE[1])
    return re.sub(r"\{\{(\w+)\}\}", lambda m: value(m, escaped=True), raw).encode()


def test_a_rating_a_server_writes_with_a_decimal_comma_is_read_from_the_docs_template() -> None:
    # Handlebars.Net writes a double in the server's culture: 7.5 is "7,5" on a German server.
    body = rendered_docs_template(
        NotificationType="UserDataSaved",
        SaveReason="UpdateUserRating",
        ServerId="5b6f0e3a-2c1d-4e8f-9a7b-6c5d4e3f2a1b",
        UserId="a3f1c9e2-7b5d-4c08-b6e2-f1d0c9b8a7e6",
        NotificationUsername="alex",
        ItemId="c7d2a91e-4b3f-4e6a-8d0b-1c2e3f4a5b6c",
        ItemType="Movie",
        Name="Arrival",
        Year="2016",
        Provider_imdb="tt2543164",
        Rating="7,5",
        Likes="False",
        Favorite="False",
        Played="True",
    )
    event = only_event(parse_request("jellyfin", body, "text/plain; charset=utf-8"))
    assert (event.action, event.rating, event.item.ids.imdb) == ("rate", 75, "tt2543164")


def test_genres_are_read_from_send_all_properties_and_from_the_docs_template() -> None:
    # The only sign of anime no dataset knows yet in a library on TMDB metadata.
    typed = only_event(parse(sample("playback_stop_episode_completed.json")))
    assert typed.genres == ("Drama", "Crime")
    body = rendered_docs_template(
        NotificationType="PlaybackStop",
        ServerId="5b6f0e3a-2c1d-4e8f-9a7b-6c5d4e3f2a1b",
        UserId="a3f1c9e2-7b5d-4c08-b6e2-f1d0c9b8a7e6",
        NotificationUsername="alex",
        ItemId="c7d2a91e-4b3f-4e6a-8d0b-1c2e3f4a5b6c",
        ItemType="Episode",
        Name="That's How Love Starts, Ya Know!",
        SeriesName="Dan Da Dan",
        SeasonNumber="1",
        EpisodeNumber="1",
        Genres="Animation, Action & Adventure",
        PlayedToCompletion="True",
    )
    event = only_event(parse_request("jellyfin", body, "text/plain; charset=utf-8"))
    assert event.genres[0] == "Animation"
    assert (
        event.item
        == only_event(
            parse_request(
                "jellyfin", body.replace(b"Animation, ", b""), "text/plain; charset=utf-8"
            )
        ).item
    )
