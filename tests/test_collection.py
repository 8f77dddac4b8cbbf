"""Plex media details -> Trakt collection metadata, and the collection plan (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from watchbridge.collection import (
    CollectionMetadata,
    best_version,
    item_metadata,
    needs_details,
    plan_collection,
    plex_collected,
    trakt_collected,
    version_metadata,
)
from watchbridge.model import Ids


def media(
    *,
    width: int | None = 1920,
    resolution: str | None = "1080",
    video: dict[str, Any] | None = None,
    audio: dict[str, Any] | None = None,
    audio_codec: str | None = None,
    audio_channels: int | None = None,
    extra_audio: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One PMS `Media` element (a version) with a video and an audio stream (plex.md §4)."""
    streams: list[dict[str, Any]] = [{"id": 1, "streamType": 1, "codec": "hevc", **(video or {})}]
    if audio is not None:
        streams.append({"id": 2, "streamType": 2, **audio})
    streams += [{"streamType": 2, **a} for a in extra_audio or []]
    element: dict[str, Any] = {
        "id": 10,
        "videoResolution": resolution,
        "audioCodec": audio_codec,
        "audioChannels": audio_channels,
        "Part": [{"id": 100, "file": "/movies/x.mkv", "Stream": streams}],
    }
    if width is not None:
        element["width"] = width
    return element


# --------------------------------------------------------------------------- HDR


@pytest.mark.parametrize(
    ("video", "expected"),
    [
        ({"DOVIPresent": True, "DOVIProfile": 8, "colorTrc": "smpte2084"}, "dolby_vision"),
        ({"DOVIPresent": "1", "DOVIProfile": "7", "colorTrc": "smpte2084"}, "dolby_vision"),
        ({"DOVIPresent": True, "DOVIProfile": 5}, "dolby_vision"),
        ({"colorTrc": "smpte2084", "colorPrimaries": "bt2020"}, "hdr10"),
        ({"DOVIPresent": False, "DOVIProfile": 0, "colorTrc": "smpte2084"}, "hdr10"),
        ({"colorTrc": "smpte2084", "displayTitle": "4K HDR10+ (HEVC Main 10)"}, "hdr10_plus"),
        ({"colorTrc": "arib-std-b67"}, "hlg"),
        ({"colorTrc": "bt709"}, None),
        ({}, None),
    ],
    ids=[
        "dv-p8-with-hdr10-base",
        "dv-strings",
        "dv-p5",
        "hdr10",
        "dv-flag-false",
        "hdr10plus",
        "hlg",
        "sdr",
        "none",
    ],
)
def test_hdr_format_with_dolby_vision_checked_first(
    video: dict[str, Any], expected: str | None
) -> None:
    assert version_metadata(media(video=video)).hdr == expected


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ({"codec": "aac", "channels": 2}, "aac"),
        ({"codec": "ac3", "channels": 6}, "dolby_digital"),
        ({"codec": "eac3", "channels": 6}, "dolby_digital_plus"),
        (
            {"codec": "eac3", "extendedDisplayTitle": "English (Dolby Digital Plus Atmos 5.1)"},
            "dolby_digital_plus_atmos",
        ),
        ({"codec": "truehd", "channels": 8}, "dolby_truehd"),
        ({"codec": "truehd", "displayTitle": "English (TRUEHD 7.1 Atmos)"}, "dolby_atmos"),
        ({"codec": "dca", "channels": 6}, "dts"),
        ({"codec": "dca", "profile": "ma"}, "dts_ma"),
        ({"codec": "dca-ma"}, "dts_ma"),
        ({"codec": "dca", "profile": "hra"}, "dts_hr"),
        ({"codec": "dca", "profile": "ma", "displayTitle": "English (DTS:X 7.1)"}, "dts_x"),
        ({"codec": "flac", "channels": 2}, "flac"),
        ({"codec": "mp3", "channels": 2}, "mp3"),
        ({"codec": "mp2"}, "mp2"),
        ({"codec": "pcm_s24le", "channels": 6}, "lpcm"),
        ({"codec": "pcm"}, "lpcm"),
        ({"codec": "opus"}, "ogg_opus"),
        ({"codec": "vorbis"}, "ogg"),
        ({"codec": "wmapro"}, "wma"),
        ({"codec": "cook"}, None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_audio_codec_as_trakt_names_it(stream: dict[str, Any], expected: str | None) -> None:
    assert version_metadata(media(audio=stream)).audio == expected


def test_audio_falls_back_to_the_media_codec_when_no_stream_is_listed() -> None:
    listing_item = media(audio=None, audio_codec="eac3", audio_channels=6)
    assert version_metadata(listing_item).audio == "dolby_digital_plus"
    assert version_metadata(listing_item).audio_channels == "5.1"


def test_the_selected_audio_stream_wins_over_the_first() -> None:
    version = media(
        audio={"codec": "ac3", "channels": 2},
        extra_audio=[{"codec": "truehd", "channels": 8, "selected": True}],
    )
    assert version_metadata(version).audio == "dolby_truehd"


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ({"codec": "aac", "channels": 1}, "1.0"),
        ({"codec": "aac", "channels": 2}, "2.0"),
        ({"codec": "aac", "channels": 3}, "2.1"),
        ({"codec": "ac3", "channels": 6}, "5.1"),
        ({"codec": "truehd", "channels": 8}, "7.1"),
        ({"codec": "aac", "audioChannelLayout": "stereo", "channels": 2}, "2.0"),
        ({"codec": "aac", "audioChannelLayout": "mono"}, "1.0"),
        ({"codec": "ac3", "audioChannelLayout": "5.1(side)", "channels": 6}, "5.1"),
        ({"codec": "truehd", "audioChannelLayout": "7.1", "channels": 8}, "7.1"),
        ({"codec": "aac", "channels": 12}, None),
    ],
)
def test_audio_channels_from_the_layout_or_the_count(
    stream: dict[str, Any], expected: str | None
) -> None:
    assert version_metadata(media(audio=stream)).audio_channels == expected


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    ("width", "label", "video", "expected"),
    [
        (3840, "4k", {}, "uhd_4k"),
        (3840, None, {}, "uhd_4k"),
        (3836, "4k", {}, "uhd_4k"),  # scope crop
        (1920, "1080", {}, "hd_1080p"),
        (1920, "1080", {"scanType": "interlaced"}, "hd_1080i"),
        (1280, "720", {}, "hd_720p"),
        (720, "576", {}, "sd_576p"),  # PAL DVD: 720 wide like NTSC
        (720, "480", {}, "sd_480p"),
        (720, None, {"height": 576}, "sd_576p"),
        (1024, None, {}, "sd_576p"),
        (720, "480", {"displayTitle": "480i (MPEG2)"}, "sd_480i"),
        (None, "4k", {}, "uhd_4k"),
        (None, "1080", {}, "hd_1080p"),
        (None, "sd", {}, "sd_480p"),
        (None, None, {}, None),
    ],
)
def test_resolution_prefers_the_width(
    width: int | None, label: str | None, video: dict[str, Any], expected: str | None
) -> None:
    assert version_metadata(media(width=width, resolution=label, video=video)).resolution == (
        expected
    )


# --------------------------------------------------------------------------- versions


def test_the_best_of_several_versions_is_reported() -> None:
    hd = media(width=1920, audio={"codec": "ac3", "channels": 6})
    uhd_dv = media(
        width=3840,
        resolution="4k",
        video={"DOVIPresent": True, "colorTrc": "smpte2084"},
        audio={"codec": "truehd", "channels": 8, "displayTitle": "TrueHD Atmos 7.1"},
    )
    found = item_metadata({"type": "movie", "Media": [hd, uhd_dv]})
    assert found == CollectionMetadata(
        resolution="uhd_4k", hdr="dolby_vision", audio="dolby_atmos", audio_channels="7.1"
    )


def test_same_resolution_versions_are_ranked_by_hdr_then_audio() -> None:
    sdr_atmos = media(width=3840, audio={"codec": "truehd", "displayTitle": "Atmos"})
    hdr_aac = media(width=3840, video={"colorTrc": "smpte2084"}, audio={"codec": "aac"})
    assert best_version([sdr_atmos, hdr_aac]) == version_metadata(hdr_aac)


def test_an_item_without_media_has_no_metadata() -> None:
    assert item_metadata({"type": "movie"}) is None


def test_metadata_for_trakt_leaves_unknown_fields_out() -> None:
    found = CollectionMetadata(resolution="hd_1080p", audio="aac", audio_channels="2.0")
    assert found.to_trakt() == {
        "media_type": "digital",
        "resolution": "hd_1080p",
        "audio": "aac",
        "audio_channels": "2.0",
    }


# --------------------------------------------------------------------------- plan

ARRIVAL = {
    "ratingKey": "48213",
    "type": "movie",
    "title": "Arrival",
    "year": 2016,
    "guid": "plex://movie/5d776b59ad5437001f79c6f8",
    "Guid": [{"id": "imdb://tt2543164"}, {"id": "tmdb://329865"}, {"id": "tvdb://1204"}],
    "addedAt": 1691115281,
    "Media": [media(width=3840, audio={"codec": "eac3", "channels": 6})],
}
BREAKING_BAD = {
    "ratingKey": "72962",
    "type": "show",
    "title": "Breaking Bad",
    "guid": "plex://show/5d9c086c46115600200aa2fe",
    "Guid": [{"id": "imdb://tt0903747"}, {"id": "tmdb://1396"}, {"id": "tvdb://81189"}],
}
FELINA = {
    "ratingKey": "73155",
    "type": "episode",
    "title": "Felina",
    "grandparentTitle": "Breaking Bad",
    "grandparentRatingKey": "72962",
    "guid": "plex://episode/5d9c1276e9d5a1001f4ff2fa",
    "Guid": [{"id": "imdb://tt2322158"}, {"id": "tmdb://62161"}, {"id": "tvdb://4639463"}],
    "parentIndex": 5,
    "index": 16,
    "addedAt": 1691115300,
    "Media": [media(width=1920, audio={"codec": "aac", "channels": 2})],
}


def test_new_agent_episodes_take_their_show_ids_from_the_show_listing() -> None:
    items, skipped = plex_collected([ARRIVAL], [FELINA], [BREAKING_BAD])
    assert skipped == []
    assert [i.key for i in items] == ["movie:tmdb:329865", "episode:tmdb:1396:s5e16"]
    episode = items[1].ref
    assert (episode.show_ids.tmdb, episode.season, episode.number) == ("1396", 5, 16)
    assert not episode.ids  # sent by show + numbers, as Trakt lists its collection


def test_items_without_usable_ids_are_skipped_and_named() -> None:
    personal = {"ratingKey": "9", "type": "movie", "title": "Holiday 2019", "guid": "local://9"}
    items, skipped = plex_collected([personal], [], [])
    assert items == [] and skipped == ["Holiday 2019"]


def test_movies_never_match_by_tvdb_id() -> None:
    items, _ = plex_collected([ARRIVAL], [], [])
    assert "movie:tvdb:1204" not in items[0].aliases
    assert items[0].ref.ids == Ids(tmdb="329865", imdb="tt2543164")


def trakt_rows(metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [
        {
            "collected_at": "2026-08-30T18:12:00.000Z",
            "movie": {"title": "Arrival", "ids": {"trakt": 1, "imdb": "tt2543164"}},
            "metadata": metadata,
        }
    ]


def test_missing_items_are_added_and_matched_by_any_shared_id() -> None:
    plex, _ = plex_collected([ARRIVAL], [FELINA], [BREAKING_BAD])
    current = item_metadata(ARRIVAL)
    assert current is not None
    trakt = trakt_collected(trakt_rows(current.to_trakt()), [])
    plan = plan_collection(plex, trakt, [])
    assert [i.key for i in plan.add] == ["episode:tmdb:1396:s5e16"]
    assert plan.unchanged == 1 and plan.update == ()


def test_items_trakt_describes_differently_are_updated() -> None:
    plex, _ = plex_collected([ARRIVAL], [], [])
    stale = {"media_type": "digital", "resolution": "hd_1080p", "audio": "aac"}
    plan = plan_collection(plex, trakt_collected(trakt_rows(stale), []), [])
    assert [i.key for i in plan.update] == ["movie:tmdb:329865"]
    no_details = plan_collection(plex, trakt_collected(trakt_rows(None), []), [])
    assert len(no_details.update) == 1


def test_only_items_this_link_added_are_removed_and_only_when_asked() -> None:
    ours = trakt_collected(trakt_rows(None), [])
    theirs = trakt_collected(
        [{"movie": {"title": "Heat", "ids": {"trakt": 2, "imdb": "tt0113277"}}}], []
    )
    trakt = ours + theirs
    baseline = ["movie:imdb:tt2543164"]
    assert plan_collection([], trakt, baseline).remove == ()
    removed = plan_collection([], trakt, baseline, remove_missing=True).remove
    assert [r.key for r in removed] == ["movie:imdb:tt2543164"]


def test_an_emptied_movie_library_is_held_however_many_episodes_are_collected() -> None:
    # The movie share unmounted during a scan, the TV library fine: 3 of 43 entries is under
    # the share, but it is every movie.
    movies = [
        {"movie": {"title": f"M{n}", "ids": {"trakt": n, "tmdb": 100 + n}}} for n in (1, 2, 3)
    ]
    season = {"number": 5, "episodes": [{"number": n} for n in range(1, 41)]}
    show = {"title": "Breaking Bad", "ids": {"trakt": 1, "tmdb": 1396}}
    trakt = trakt_collected(movies, [{"show": show, "seasons": [season]}])
    episodes = [entry for entry in trakt if entry.ref.kind == "episode"]
    ours = [entry.key for entry in trakt]
    plan = plan_collection(episodes, trakt, ours, remove_missing=True, max_removal_share=0.1)
    assert plan.remove == () and len(plan.held) == 3
    assert "3 of 3 movies in the Trakt collection would be removed" in plan.held_reason


def test_trakt_episodes_are_read_from_the_nested_show_listing() -> None:
    shows = [
        {
            "show": {"title": "Breaking Bad", "ids": {"trakt": 1, "tmdb": 1396, "tvdb": 81189}},
            "seasons": [
                {"number": 5, "episodes": [{"number": 16, "metadata": {"resolution": "hd_720p"}}]}
            ],
        }
    ]
    (episode,) = trakt_collected([], shows)
    assert episode.key == "episode:tmdb:1396:s5e16"
    assert "episode:tvdb:81189:s5e16" in episode.aliases
    assert episode.metadata is not None and episode.metadata.resolution == "hd_720p"


def test_only_listing_items_without_a_video_stream_need_their_details() -> None:
    with_streams = {"ratingKey": "1", "Media": [media(video={"colorTrc": "smpte2084"})]}
    listed = media()
    listed["Part"][0].pop("Stream")
    audio_only = media()
    audio_only["Part"][0]["Stream"] = [{"streamType": 2, "codec": "aac"}]
    assert not needs_details(with_streams)
    assert needs_details({"ratingKey": "2", "Media": [listed]})
    assert needs_details({"ratingKey": "3", "Media": [audio_only]})
    assert needs_details({"ratingKey": "4"})


def test_an_items_details_stand_in_for_its_listing() -> None:
    movie = {
        "ratingKey": "7",
        "type": "movie",
        "title": "Arrival",
        "Guid": [{"id": "tmdb://329865"}],
        "Media": [media()],
    }
    better = CollectionMetadata(resolution="uhd_4k", hdr="dolby_vision")
    (found,), _ = plex_collected([movie], [], [], {"7": better})
    assert found.metadata == better


def test_a_title_in_two_libraries_is_one_entry_described_by_its_best_copy() -> None:
    # A 4K and an HD library: matching both to Trakt's one entry flip-flopped it every run.
    def copy(key: str, width: int, added: int) -> dict[str, object]:
        return {"ratingKey": key, "type": "movie", "title": "Arrival", "addedAt": added,
                "Guid": [{"id": "tmdb://329865"}], "Media": [media(width=width)]}  # fmt: skip

    plex, _ = plex_collected([copy("7", 1920, 2000), copy("8", 3840, 1000)], [], [])
    hd = CollectionMetadata(resolution="hd_1080p", audio="aac", audio_channels="2.0")
    trakt = [replace(plex[0], metadata=hd)]
    result = plan_collection(plex, trakt, [])
    (update,) = result.update
    assert update.metadata is not None and update.metadata.resolution == "uhd_4k"
    assert update.added_at == 1000
    again = plan_collection(plex, [replace(trakt[0], metadata=update.metadata)], [])
    assert (again.add, again.update, again.unchanged) == ((), (), 1)
