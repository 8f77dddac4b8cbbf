"""Plex webhooks: every sample to its canonical event, ignored kinds, guid forms, ratings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.ingest_samples import only_event, raw_request, sample_json
from watchbridge.ingest import parse as parse_request
from watchbridge.ingest.plex import Guid, hama_mode, parse, parse_guid
from watchbridge.model import (
    Accepted,
    Account,
    Ids,
    Ignored,
    MediaRef,
    Rejected,
    ref_from_dict,
    ref_to_dict,
)

SERVER = "d3a1f0c2b4e5968778695a4b3c2d1e0f9a8b7c6d"
SHIELD = "k2m9x4q7b1z8c3v6n5l0p2r4"
CHROME = "w7h3n9d2f5j8s1a4q6e0t2y5"
ARRIVAL = Ids(imdb="tt2543164", tmdb="329865", plex_guid="plex://movie/5d776b59ad5437001f79c6f8")
BREAKING_BAD = Ids(tvdb="81189")
OWNER = Account(id="1", name="alex")


def sample(name: str) -> dict[str, Any]:
    return sample_json("plex", name)


def with_metadata(name: str, **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(sample_json("plex", name))
    for key, value in changes.items():
        if value is None:
            payload["Metadata"].pop(key, None)
        else:
            payload["Metadata"][key] = value
    return payload


# --------------------------------------------------------------------------- movies


def test_movie_play_is_a_start_with_new_agent_ids_and_unknown_progress() -> None:
    event = only_event(parse(sample("movie_media_play.json")))
    assert event.source == "plex"
    assert event.action == "start"
    assert event.item.kind == "movie"
    assert event.item.ids == ARRIVAL
    assert (event.item.title, event.item.year) == ("Arrival", 2016)
    assert (event.item.source_key, event.item.show_source_key) == ("48213", None)
    assert event.account == OWNER
    assert (event.server, event.player) == (SERVER, SHIELD)
    assert event.position_ms is None
    assert event.progress is None
    assert event.played is False
    assert event.occurred_at is None


def test_movie_pause_carries_position_and_duration() -> None:
    event = only_event(parse(sample("movie_media_pause.json")))
    assert event.action == "pause"
    assert (event.position_ms, event.duration_ms) == (2_712_000, 6_960_000)
    assert event.progress == pytest.approx(38.97, abs=0.01)


def test_movie_resume_is_a_resume_at_the_paused_offset() -> None:
    event = only_event(parse(sample("movie_media_resume.json")))
    assert event.action == "resume"
    assert event.progress == pytest.approx(38.97, abs=0.01)


def test_movie_scrobble_is_a_played_stop_dated_by_last_viewed_at() -> None:
    event = only_event(parse(sample("movie_media_scrobble.json")))
    assert event.action == "stop"
    assert event.played is True
    assert event.occurred_at == 1741985460
    assert event.item.ids == ARRIVAL


def test_movie_stop_after_scrobble_is_a_plain_stop() -> None:
    event = only_event(parse(sample("movie_media_stop.json")))
    assert event.action == "stop"
    assert event.played is False
    assert event.progress == pytest.approx(96.4, abs=0.01)


def test_movie_rate_takes_user_rating_on_the_internal_scale() -> None:
    event = only_event(parse(sample("movie_media_rate.json")))
    assert event.action == "rate"
    assert event.rating == 90
    assert event.occurred_at == 1741986012


def test_legacy_imdb_movie_gets_its_imdb_id_from_the_guid() -> None:
    event = only_event(parse(sample("movie_legacy_imdb_media_scrobble.json")))
    assert event.item.ids == Ids(imdb="tt0113277")
    assert (event.action, event.played) == ("stop", True)


def test_new_agent_movie_without_guid_array_keeps_plex_guid_and_warns() -> None:
    result = parse(sample("movie_new_agent_no_guid_array_media_scrobble.json"))
    assert isinstance(result, Accepted)
    assert result.events[0].item.ids == Ids(plex_guid="plex://movie/5d7768a696b655001fdc0e5c")
    assert result.events[0].item.source_key == "8372"  # what enrichment reads from PMS
    assert any("enrichment" in warning for warning in result.warnings)


# --------------------------------------------------------------------------- episodes


@pytest.mark.parametrize(
    ("name", "action", "played", "progress"),
    [
        ("episode_legacy_media_play.json", "start", False, 45.85),
        ("episode_legacy_media_pause.json", "pause", False, 67.57),
        ("episode_legacy_media_resume.json", "resume", False, 67.57),
        ("episode_legacy_media_scrobble.json", "stop", True, None),
        ("episode_legacy_media_stop.json", "stop", False, 99.25),
    ],
)
def test_legacy_episode_events_give_show_tvdb_id_season_and_number(
    name: str, action: str, played: bool, progress: float | None
) -> None:
    event = only_event(parse(sample_json("plex", name)))
    assert event.action == action
    assert event.played is played
    assert event.item.kind == "episode"
    assert event.item.show_ids == BREAKING_BAD
    assert event.item.ids == Ids()
    assert (event.item.season, event.item.number) == (5, 16)
    assert (event.item.show_title, event.item.title) == ("Breaking Bad", "Felina")
    assert (event.item.source_key, event.item.show_source_key) == ("73155", "72962")
    assert event.account == OWNER
    assert event.player == CHROME
    assert event.progress == (None if progress is None else pytest.approx(progress, abs=0.01))


def test_legacy_episode_scrobble_is_dated_by_last_viewed_at() -> None:
    event = only_event(parse(sample_json("plex", "episode_legacy_media_scrobble.json")))
    assert event.occurred_at == 1742071810


def test_episode_rate_ignores_the_critic_rating() -> None:
    event = only_event(parse(sample_json("plex", "episode_legacy_media_rate.json")))
    assert event.action == "rate"
    assert event.rating == 100


def test_new_agent_episode_ids_are_the_episodes_and_the_show_is_its_plex_guid() -> None:
    result = parse(sample_json("plex", "episode_new_agent_friend_media_scrobble.json"))
    event = only_event(result)
    assert event.item.ids == Ids(
        imdb="tt14765720",
        tmdb="3087250",
        tvdb="8530933",
        plex_guid="plex://episode/615580a9fa828e7f1a0caabd",
    )
    assert event.item.show_ids == Ids(plex_guid="plex://show/60e81fd8d8000e002d7d2976")
    assert (event.item.season, event.item.number) == (1, 1)
    assert (event.item.source_key, event.item.show_source_key) == ("40294", "40275")
    assert event.account == Account(id="48151623", name="jamie.r")
    assert (event.action, event.played) == ("stop", True)
    assert isinstance(result, Accepted)
    assert result.warnings == ["episode-level ids only: the show's ids need a lookup"]


def test_source_keys_take_no_part_in_the_item_key_and_survive_the_outbox() -> None:
    item = only_event(parse(sample("episode_new_agent_friend_media_scrobble.json"))).item
    bare = MediaRef(
        "episode",
        item.ids,
        title=item.title,
        show_ids=item.show_ids,
        show_title=item.show_title,
        season=item.season,
        number=item.number,
    )
    assert item.key() == bare.key()
    stored = ref_to_dict(item)
    assert (stored["source_key"], stored["show_source_key"]) == ("40294", "40275")
    assert ref_from_dict(stored) == item
    assert "source_key" not in ref_to_dict(bare)
    assert ref_from_dict(ref_to_dict(bare)) == bare  # rows written before the fields existed


def test_missing_rating_keys_leave_the_source_keys_empty() -> None:
    payload = with_metadata(
        "episode_new_agent_friend_media_scrobble.json", ratingKey=None, grandparentRatingKey=None
    )
    item = only_event(parse(payload)).item
    assert (item.source_key, item.show_source_key) == (None, None)


@pytest.mark.parametrize(
    ("sent", "aired"),
    [
        ("2021-09-30", "2021-09-30"),
        (None, None),
        ("", None),
        ("2021-09-30T00:00:00Z", None),  # not what Plex sends for an episode: not guessed at
        ("Sep 30, 2021", None),
        (20210930, None),
    ],
)
def test_an_episodes_air_date_is_its_originally_available_at(sent: Any, aired: str | None) -> None:
    # What places an episode without a TMDB id of its own in TMDB's numbering (Serializd's,
    # AniList's), as Jellyfin's and Emby's PremiereDate do.
    payload = with_metadata("episode_new_agent_friend_media_scrobble.json")
    if sent is not None:
        payload["Metadata"]["originallyAvailableAt"] = sent
    else:
        del payload["Metadata"]["originallyAvailableAt"]
    assert only_event(parse(payload)).item.aired == aired


def test_a_movie_has_no_air_date() -> None:
    assert only_event(parse(sample("movie_media_scrobble.json"))).item.aired is None


# --------------------------------------------------------------------------- raw requests


def test_multipart_request_with_file_part_and_thumb_parses_to_a_start() -> None:
    body, content_type = raw_request("plex", "multipart_movie_media_play")
    event = only_event(parse_request("plex", body, content_type))
    assert (event.action, event.item.ids) == ("start", ARRIVAL)


def test_multipart_request_with_plain_field_parses_to_a_pause() -> None:
    body, content_type = raw_request("plex", "multipart_episode_media_pause_plain_field")
    event = only_event(parse_request("plex", body, content_type))
    assert (event.action, event.item.show_ids, event.item.season) == ("pause", BREAKING_BAD, 5)


# --------------------------------------------------------------------------- ignored


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("track_media_play.json", "not_video"),
        ("trailer_clip_media_play.json", "unsupported_type"),
        ("vod_catalog_media_stop.json", "streaming_catalogue"),
        ("movie_library_new.json", "library_event"),
        ("owner_playback_started_friend.json", "unsupported_event"),
    ],
)
def test_samples_that_are_not_for_us_are_ignored_with_a_reason(name: str, reason: str) -> None:
    assert parse(sample_json("plex", name)) == Ignored(reason)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("library.on.deck", "library_event"),
        ("admin.database.backup", "unsupported_event"),
        ("admin.database.corrupted", "unsupported_event"),
        ("device.new", "unsupported_event"),
        ("media.something.new", "unsupported_event"),
    ],
)
def test_non_playback_events_are_ignored(event: str, reason: str) -> None:
    payload = sample("movie_media_play.json") | {"event": event}
    assert parse(payload) == Ignored(reason)


def test_photo_is_not_video() -> None:
    assert parse(with_metadata("movie_media_play.json", type="photo")) == Ignored("not_video")


def test_catalogue_item_outside_any_library_is_ignored_even_on_a_real_server() -> None:
    payload = with_metadata(
        "movie_media_play.json",
        ratingKey="6015de7207408f002dcee048",
        librarySectionID=None,
        librarySectionType=None,
    )
    assert parse(payload) == Ignored("streaming_catalogue")


def test_live_tv_xmltv_guid_is_ignored() -> None:
    payload = with_metadata("movie_media_play.json", guid="tv.plex.xmltv://abc", Guid=None)
    assert parse(payload) == Ignored("live_tv")


def test_local_extra_typed_as_movie_is_ignored() -> None:
    payload = with_metadata("movie_media_play.json", subtype="trailer")
    assert parse(payload) == Ignored("unsupported_type")


@pytest.mark.parametrize(
    "guid",
    ["com.plexapp.agents.none://5d7768?lang=xn", "tv.plex.agents.none://68178", "local://1234"],
)
def test_a_home_video_is_ignored(guid: str) -> None:
    # Plex's Personal Media agent: nothing any service knows, so never a dead letter later.
    payload = with_metadata("movie_media_play.json", guid=guid, Guid=None)
    assert parse(payload) == Ignored("unsupported_type")


def test_a_local_episode_of_a_matched_show_is_kept() -> None:
    payload = with_metadata("episode_legacy_media_scrobble.json", guid="local://1234", Guid=None)
    assert only_event(parse(payload)).item.show_ids


def test_a_local_episode_of_a_show_the_payload_does_not_name_is_kept() -> None:
    # Its show may still be matched: the server is asked (ids.Enricher).
    payload = with_metadata(
        "episode_legacy_media_scrobble.json", guid="local://1234", Guid=None, grandparentGuid=None
    )
    assert only_event(parse(payload)).item.kind == "episode"


def test_a_home_video_episode_is_ignored() -> None:
    payload = with_metadata(
        "episode_legacy_media_scrobble.json",
        guid="local://1234",
        Guid=None,
        grandparentGuid="com.plexapp.agents.none://9f2c?lang=xn",
    )
    assert parse(payload) == Ignored("unsupported_type")


# --------------------------------------------------------------------------- ratings


def test_rate_falls_back_to_top_level_rating_string() -> None:
    payload = with_metadata("movie_media_rate.json", userRating=None)
    assert payload["rating"] == "9"
    assert only_event(parse(payload)).rating == 90


@pytest.mark.parametrize("cleared", [-1, -1.0, "-1", 0])
def test_rate_with_minus_one_or_zero_is_a_cleared_rating(cleared: object) -> None:
    payload = with_metadata("movie_media_rate.json", userRating=cleared) | {"rating": cleared}
    event = only_event(parse(payload))
    assert (event.action, event.rating) == ("rate", None)


def test_rate_without_any_rating_is_a_cleared_rating() -> None:
    payload = with_metadata("movie_media_rate.json", userRating=None)
    del payload["rating"]
    event = only_event(parse(payload))
    assert (event.action, event.rating) == ("rate", None)


def test_half_star_rating_keeps_its_half() -> None:
    payload = with_metadata("movie_media_rate.json", userRating=7.5)
    assert only_event(parse(payload)).rating == 75


# --------------------------------------------------------------------------- leniency


def test_numbers_sent_as_strings_are_read() -> None:
    payload = with_metadata("movie_media_pause.json", viewOffset="2712000", duration="6960000")
    assert only_event(parse(payload)).progress == pytest.approx(38.97, abs=0.01)


def test_guid_array_as_a_single_string_is_read() -> None:
    payload = with_metadata("movie_media_play.json", Guid="imdb://tt2543164")
    assert only_event(parse(payload)).item.ids.imdb == "tt2543164"


def test_missing_event_is_rejected() -> None:
    payload = sample("movie_media_play.json")
    del payload["event"]
    assert parse(payload) == Rejected("plex payload has no event")


def test_missing_metadata_is_rejected() -> None:
    payload = sample("movie_media_play.json")
    del payload["Metadata"]
    assert parse(payload) == Rejected("plex payload has no Metadata")


def test_missing_type_is_rejected() -> None:
    payload = with_metadata("movie_media_play.json", type=None)
    assert parse(payload) == Rejected("plex payload has no Metadata.type")


def test_missing_account_server_and_player_give_empty_values() -> None:
    payload = sample("movie_media_play.json")
    for key in ("Account", "Server", "Player"):
        del payload[key]
    event = only_event(parse(payload))
    assert (event.account, event.server, event.player) == (Account(), "", "")


# --------------------------------------------------------------------------- guid forms


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "plex://movie/5d776b59ad5437001f79c6f8",
            Guid("plex", "plex://movie/5d776b59ad5437001f79c6f8"),
        ),
        ("com.plexapp.agents.imdb://tt0113277?lang=en", Guid("imdb", "tt0113277")),
        ("com.plexapp.agents.themoviedb://949?lang=en", Guid("tmdb", "949")),
        ("com.plexapp.agents.themoviedb://1396/5/16?lang=en", Guid("tmdb", "1396", 5, 16)),
        ("com.plexapp.agents.thetvdb://81189/5/16?lang=en", Guid("tvdb", "81189", 5, 16)),
        ("com.plexapp.agents.thetvdbdvdorder://81189/5/16?lang=en", Guid("tvdb", "81189", 5, 16)),
        ("com.plexapp.agents.hama://anidb-12345/1/7?lang=en", Guid("anidb", "12345", 1, 7)),
        ("com.plexapp.agents.hama://12345/1/71?lang=en", Guid("anidb", "12345", 1, 71)),
        ("com.plexapp.agents.hama://tvdb2-81189/2/3", Guid("tvdb", "81189", 2, 3)),
        ("com.plexapp.agents.hama://tvdb3-81797/2/100", Guid("tvdb", "81797", 2, 100, True)),
        ("tv.plex.agents.nfo.movie://movie/tmdb_383498", Guid("tmdb", "383498")),
        ("tv.plex.agents.nfo.series://show/tvdb_121361", Guid("tvdb", "121361")),
        ("tt0096895", Guid("imdb", "tt0096895")),
        ("local://1234", Guid("local", "1234")),
        ("tv.plex.xmltv://abc", Guid("xmltv", "abc")),
    ],
)
def test_guid_forms_are_parsed(raw: str, expected: Guid) -> None:
    assert parse_guid(raw) == expected


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ("com.plexapp.agents.hama://anidb-12345/1/7?lang=en", "anidb"),
        ("com.plexapp.agents.hama://12345/1/71?lang=en", "anidb"),  # a bare number: AniDB
        ("com.plexapp.agents.hama://anidb2-12345?lang=en", "anidb2"),
        ("com.plexapp.agents.hama://tvdb-81189/2/3", "tvdb"),
        ("com.plexapp.agents.hama://tvdb4-81797/2?lang=en", "tvdb4"),
        ("com.plexapp.agents.thetvdb://81189/5/16?lang=en", None),
        ("plex://episode/5d9c0b7f", None),
    ],
)
def test_the_hama_mode_of_a_guid_is_read(raw: str, mode: str | None) -> None:
    assert hama_mode(raw) == mode


@pytest.mark.parametrize(
    "raw", ["", "no scheme", "://x", "tv.plex.agents.nfo.movie://movie/383498"]
)
def test_guids_that_name_nothing_give_none(raw: str) -> None:
    assert parse_guid(raw) is None


def test_legacy_tmdb_tv_episode_gives_show_tmdb_id() -> None:
    payload = with_metadata(
        "episode_legacy_media_play.json",
        guid="com.plexapp.agents.themoviedb://1396/5/16?lang=en",
        grandparentGuid="com.plexapp.agents.themoviedb://1396?lang=en",
    )
    assert only_event(parse(payload)).item.show_ids == Ids(tmdb="1396")


def test_hama_tvdb3_episode_number_is_absolute() -> None:
    payload = with_metadata(
        "episode_legacy_media_play.json",
        guid="com.plexapp.agents.hama://tvdb3-81797/2/100?lang=en",
        grandparentGuid="com.plexapp.agents.hama://tvdb3-81797?lang=en",
        index=None,
        parentIndex=None,
    )
    item = only_event(parse(payload)).item
    assert (item.show_ids, item.season, item.number, item.absolute) == (
        Ids(tvdb="81797"),
        2,
        None,
        100,
    )


def test_a_hama_tvdb3_special_keeps_its_season_0_number() -> None:
    payload = with_metadata(
        "episode_legacy_media_play.json",
        guid="com.plexapp.agents.hama://tvdb3-74796/0/3?lang=en",
        grandparentGuid="com.plexapp.agents.hama://tvdb3-74796?lang=en",
        index=None,
        parentIndex=None,
    )
    item = only_event(parse(payload)).item
    assert (item.season, item.number, item.absolute) == (0, 3, None)


def test_dvd_order_agent_is_flagged_in_warnings() -> None:
    payload = with_metadata(
        "episode_legacy_media_play.json",
        guid="com.plexapp.agents.thetvdbdvdorder://81189/5/16?lang=en",
    )
    result = parse(payload)
    assert isinstance(result, Accepted)
    assert any("DVD order" in warning for warning in result.warnings)


def test_rating_image_strings_are_not_taken_for_ids() -> None:
    payload = with_metadata(
        "movie_media_play.json", Guid=None, audienceRatingImage="imdb://image.rating"
    )
    assert only_event(parse(payload)).item.ids == Ids(plex_guid=ARRIVAL.plex_guid)
