"""The ingest entry point: one parser per source, the body reader first, bounded reasons."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

from tests.ingest_samples import (
    SOURCES_WITH_SAMPLES,
    only_event,
    payload_names,
    raw_request,
    sample_bytes,
)
from watchbridge.ingest import IGNORE_REASONS, PARSERS, SOURCES, parse
from watchbridge.ingest.common import (
    clean_id,
    flag,
    integer,
    iso_time,
    server_guid,
    wrong_url_hint,
)
from watchbridge.model import Ignored, Rejected, Source


def test_there_is_a_parser_for_every_source_of_the_model() -> None:
    assert set(PARSERS) == set(get_args(Source)) == set(SOURCES)


def test_unknown_source_is_rejected() -> None:
    assert parse("kodi", b"{}", "application/json") == Rejected("unknown webhook source 'kodi'")


def test_body_reader_runs_before_the_parser() -> None:
    assert parse("plex", b"<xml/>", "application/xml") == Rejected(
        "body is not JSON: Expecting value at line 1 column 1"
    )


def test_each_source_parser_takes_the_raw_body_and_content_type() -> None:
    body = sample_bytes("plex", "movie_media_play.json")
    assert PARSERS["plex"](body, "application/json") == parse("plex", body, "application/json")


@pytest.mark.parametrize(
    ("source", "name"),
    [(source, name) for source in SOURCES_WITH_SAMPLES for name in payload_names(source)],
)
def test_every_sample_fixture_parses_to_accepted_or_ignored(source: str, name: str) -> None:
    result = parse(source, sample_bytes(source, name), "application/json")
    assert not isinstance(result, Rejected), result
    if isinstance(result, Ignored):
        assert result.reason in IGNORE_REASONS


def test_json_object_of_the_wrong_source_is_rejected_not_misread() -> None:
    body = sample_bytes("jellyfin", "playback_start_episode.json")
    assert parse("plex", body, "application/json") == Rejected(
        "plex payload has no event; this looks like a Jellyfin webhook:"
        " use the jellyfin URL from watchbridge webhook-urls"
    )


GENERIC_PLAY = json.dumps(
    {"event": "played", "user": "alice", "item": {"type": "movie", "ids": {"imdb": "tt2543164"}}}
).encode()


def as_sent(source: str, name: str) -> tuple[bytes, str]:
    """A sample body with the Content-Type it comes with."""
    if name.endswith(".bin"):
        return raw_request(source, name.removesuffix(".bin"))
    return sample_bytes(source, name), "application/json"


@pytest.mark.parametrize(
    ("url", "sender", "name", "refusal"),
    [
        (
            "jellyfin",
            "emby",
            "playback_start_episode.json",
            "jellyfin payload has no NotificationType",
        ),
        ("tautulli", "plex", "multipart_movie_media_play.bin", "tautulli payload has no action"),
        ("plex", "tautulli", "play_episode.json", "plex payload has no event"),
        ("emby", "jellyfin", "template_rendered_playback_stop.json", "emby payload has no Event"),
        ("generic", "emby", "multipart_playback_stop_episode.bin", "event: required"),
        (
            "generic",
            "plex",
            "movie_media_play.json",
            "event: must be one of start, pause, resume, progress, stop, played, unplayed, rate",
        ),
    ],
)
def test_a_webhook_sent_to_another_sources_url_is_refused_naming_the_url_to_use(
    url: str, sender: str, name: str, refusal: str
) -> None:
    body, content_type = as_sent(sender, name)
    article = "an" if sender == "emby" else "a"
    assert parse(url, body, content_type) == Rejected(
        f"{refusal}; this looks like {article} {sender.capitalize()} webhook:"
        f" use the {sender} URL from watchbridge webhook-urls"
    )


def test_a_generic_body_sent_to_the_jellyfin_url_is_named_generic() -> None:
    assert parse("jellyfin", GENERIC_PLAY, "application/json") == Rejected(
        "jellyfin payload has no NotificationType; this looks like a generic webhook:"
        " use the generic URL from watchbridge webhook-urls"
    )


def test_a_generic_body_sent_to_the_plex_url_is_refused_naming_the_generic_url() -> None:
    # Its `event` is a key Plex has too: not Plex's kind of event, so not just ignored.
    assert parse("plex", GENERIC_PLAY, "application/json") == Rejected(
        "plex payload event 'played' is not Plex's; this looks like a generic webhook:"
        " use the generic URL from watchbridge webhook-urls"
    )


def test_a_plex_event_we_do_not_use_is_still_acknowledged() -> None:
    body = b'{"event": "admin.database.backup", "Account": {"id": 1}, "Server": {}}'
    assert parse("plex", body, "application/json") == Ignored("unsupported_event")


def test_a_payload_of_no_known_shape_is_refused_without_a_hint() -> None:
    body = b'{"Event": "playback.start", "Metadata": {}, "action": "play"}'
    assert parse("jellyfin", body, "application/json") == Rejected(
        "jellyfin payload has no NotificationType"
    )


def test_the_hint_never_names_the_url_the_webhook_came_to() -> None:
    assert wrong_url_hint({"event": True, "Metadata": {}}, "plex") == ""


def test_ignore_reasons_are_short_metric_labels() -> None:
    assert all(reason.isidentifier() and len(reason) <= 24 for reason in IGNORE_REASONS)


def test_same_pause_from_plex_and_tautulli_agrees_on_show_episode_and_position() -> None:
    plex_body = sample_bytes("plex", "episode_legacy_media_pause.json")
    tautulli_body = sample_bytes("tautulli", "pause_episode.json")
    from_plex = only_event(parse("plex", plex_body, "application/json"))
    from_tautulli = only_event(parse("tautulli", tautulli_body, "application/json"))
    for event in (from_plex, from_tautulli):
        assert (event.item.show_ids.tvdb, event.item.season, event.item.number) == ("81189", 5, 16)
    assert from_plex.position_ms == from_tautulli.position_ms


DOCS = Path(__file__).parent.parent / "docs" / "webhooks.md"


@pytest.mark.parametrize(
    ("source", "name"),
    [("jellyfin", "recommended_template.handlebars"), ("tautulli", "template_data.json")],
)
def test_docs_carry_the_templates_we_parse(source: str, name: str) -> None:
    docs = DOCS.read_text()
    assert all(line.strip() in docs for line in sample_bytes(source, name).decode().splitlines())


def test_the_jellyfin_template_sends_raw_only_the_item_fields_the_plugin_escapes() -> None:
    # The plugin escapes `"` only in the item's fields: a device named `Samsung 65" TV` would
    # break the JSON (a lost play: the plugin never retries). The user name, raw too, is what
    # profiles map by; a body it breaks is rescued (body.py).
    template = sample_bytes("jellyfin", "recommended_template.handlebars").decode()
    raw = set(re.findall(r"\{\{\{(\w+)\}\}\}", template))
    assert raw == {"Name", "SeriesName", "NotificationUsername"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("True", True),
        ("true", True),
        ("1", True),
        (1, True),
        ("False", False),
        (0, False),
        ("", None),
        ("maybe", None),
        (None, None),
        (2, None),
    ],
)
def test_flags_read_dotnet_text(value: object, expected: bool | None) -> None:
    assert flag(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5),
        ("5", 5),
        (" 16 ", 16),
        ("5.0", 5),
        (5.0, 5),
        (5.5, None),
        ("5.5", None),
        (True, None),
        ("", None),
        ("9" * 40, None),
        (float("nan"), None),
        (None, None),
    ],
)
def test_integers_are_read_leniently(value: object, expected: int | None) -> None:
    assert integer(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-14T20:48:02.8817769Z", 1741985282.881776),
        ("2025-03-14T21:48:02+01:00", 1741985282.0),
        ("2025-03-14T20:48:02", 1741985282.0),
        ("03/14/2025 20:48:02", None),
        ("", None),
        (1741985282, None),
    ],
)
def test_iso_times_with_dotnet_precision_are_read(value: object, expected: float | None) -> None:
    assert iso_time(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("A3F1C9E2-7B5D-4C08-B6E2-F1D0C9B8A7E6", "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6"),
        ("a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6", "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6"),
        ("not-a-guid", "not-a-guid"),
    ],
)
def test_dotnet_guids_are_normalised(value: str, expected: str) -> None:
    assert server_guid(value) == expected


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("imdb", "TT0113277", "tt0113277"),
        ("imdb", "0113277", None),
        ("tmdb", 329865, "329865"),
        ("tmdb", "0042", "42"),
        ("tvdb", "0", None),
        ("tvdb", "12a", None),
        ("slug", "arrival-2016", "arrival-2016"),
    ],
)
def test_ids_are_cleaned_to_canonical_form(name: str, value: object, expected: str | None) -> None:
    assert clean_id(name, value) == expected
