"""The shared body reader: multipart (field or file part), JSON under any label, forms."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest

from tests.ingest_samples import (
    SOURCES_WITH_SAMPLES,
    payload_names,
    raw_request,
    sample_bytes,
    sample_json,
)
from watchbridge.ingest.body import parse_header, payload_head, read_body, split_multipart
from watchbridge.model import Rejected

BOUNDARY = "------------------------Q3mVbN8sLw2XtZ7pKc4RdE"
DOC = {"event": "media.play", "Metadata": {"title": "Arrival"}}


def multipart(*parts: bytes, boundary: str = BOUNDARY, closed: bool = True) -> bytes:
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (delimiter + b"--\r\n" if closed else b"")


def field(name: str, content: bytes, *extra_headers: str) -> bytes:
    headers = [f'Content-Disposition: form-data; name="{name}"', *extra_headers]
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + content


def content_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


def test_plex_multipart_with_payload_file_part_and_thumb_gives_the_payload() -> None:
    body, declared = raw_request("plex", "multipart_movie_media_play")
    assert read_body(body, declared) == sample_json("plex", "movie_media_play.json")


def test_plex_multipart_with_payload_as_plain_field_gives_the_payload() -> None:
    body, declared = raw_request("plex", "multipart_episode_media_pause_plain_field")
    assert read_body(body, declared) == sample_json("plex", "episode_legacy_media_pause.json")


def test_emby_multipart_data_part_gives_the_document() -> None:
    body, declared = raw_request("emby", "multipart_playback_stop_episode")
    assert read_body(body, declared) == sample_json("emby", "playback_stop_episode_completed.json")


def test_payload_part_sent_as_a_named_file_is_found() -> None:
    part = field(
        "payload",
        json.dumps(DOC).encode(),
        'Content-Disposition: form-data; name="payload"; filename="payload.json"',
        "Content-Type: application/json",
    )
    assert read_body(multipart(part), content_type()) == DOC


def test_thumb_before_payload_is_skipped() -> None:
    thumb = field("thumb", sample_bytes("plex", "thumb_1x1.jpg"), "Content-Type: image/jpeg")
    body = multipart(thumb, field("payload", json.dumps(DOC).encode()))
    assert read_body(body, content_type()) == DOC


# payload_head: how much of a body cut short (past server.max_webhook_bytes) holds the payload.


@pytest.mark.parametrize(
    "stem", ["multipart_movie_media_play", "multipart_episode_media_pause_plain_field"]
)
def test_a_plex_body_cut_anywhere_after_its_payload_part_keeps_the_same_payload(stem: str) -> None:
    body, declared = raw_request("plex", stem)
    expected = read_body(body, declared)
    ends = [payload_head(body[:cut], declared) for cut in range(len(body) + 1)]
    first = next(cut for cut, end in enumerate(ends) if end is not None)
    # Up to the delimiter after the payload part: no beginning shorter holds the whole part.
    assert body[:first].endswith(b"\r\n--" + declared.split("boundary=")[1].encode())
    assert set(ends[first:]) == {first}
    assert read_body(body[:first], declared) == expected


def test_a_body_cut_inside_its_payload_part_holds_no_payload() -> None:
    body = multipart(field("payload", json.dumps(DOC).encode()), field("thumb", b"\xff" * 500))
    cut = body.index(b"Arrival")
    assert payload_head(body[:cut], content_type()) is None


def test_a_poster_before_the_payload_part_holds_it_up_until_the_payload_part_ends() -> None:
    thumb = field("thumb", b"\xff" * 5000, "Content-Type: image/jpeg")
    body = multipart(thumb, field("payload", json.dumps(DOC).encode()), field("x", b"y" * 900))
    assert payload_head(body[:4000], content_type()) is None  # cut inside the poster
    end = payload_head(body[: len(body) - 500], content_type())
    assert end is not None and read_body(body[:end], content_type()) == DOC


@pytest.mark.parametrize(
    ("body", "declared"),
    [
        (json.dumps(DOC).encode() + b" " * 100, "application/json"),
        (multipart(field("thumb", b"\xff" * 100), field("other", b"{}")), content_type()),
        (b"--" + b"x" * 500, content_type()),
    ],
    ids=["json", "no-payload-part", "no-parts"],
)
def test_a_body_without_a_payload_part_has_no_payload_head(body: bytes, declared: str) -> None:
    assert payload_head(body, declared) is None


def test_payload_head_reads_lf_line_ends_and_a_boundary_missing_from_the_content_type() -> None:
    body = multipart(field("payload", json.dumps(DOC).encode()), field("thumb", b"\xff" * 50))
    body = body.replace(b"\r\n", b"\n")
    end = payload_head(body[:-20], "multipart/form-data")
    assert end is not None and read_body(body[:end], "multipart/form-data") == DOC


def test_multipart_with_only_a_thumb_is_rejected_for_missing_payload() -> None:
    thumb = field("thumb", sample_bytes("plex", "thumb_1x1.jpg"), "Content-Type: image/jpeg")
    assert read_body(multipart(thumb), content_type()) == Rejected(
        "multipart body has no payload part"
    )


def test_quoted_boundary_parameter_is_understood() -> None:
    body = multipart(field("payload", json.dumps(DOC).encode()), boundary="a b;c")
    assert read_body(body, 'multipart/form-data; boundary="a b;c"') == DOC


def test_missing_final_boundary_is_tolerated() -> None:
    body = multipart(field("payload", json.dumps(DOC).encode()), closed=False)
    assert read_body(body, content_type()) == DOC


def test_lf_only_line_ends_are_tolerated() -> None:
    body = multipart(field("payload", json.dumps(DOC).encode())).replace(b"\r\n", b"\n")
    assert read_body(body, content_type()) == DOC


def test_missing_boundary_parameter_is_taken_from_the_body() -> None:
    body = multipart(field("data", json.dumps(DOC).encode()))
    assert read_body(body, "multipart/form-data") == DOC


def test_multipart_body_labelled_as_json_is_still_read_as_multipart() -> None:
    body = multipart(field("payload", json.dumps(DOC).encode()))
    assert read_body(body, "application/json") == DOC


def test_multipart_part_content_keeps_its_own_line_breaks() -> None:
    parts = split_multipart(multipart(field("note", b"line 1\r\nline 2\r\n")), BOUNDARY)
    assert parts[0].content == b"line 1\r\nline 2\r\n"


def test_multipart_payload_that_is_not_json_is_rejected_naming_the_part() -> None:
    body = multipart(field("payload", b"not json"))
    assert read_body(body, content_type()) == Rejected(
        "payload part is not JSON: Expecting value at line 1 column 1"
    )


def test_json_labelled_text_plain_is_read_as_json() -> None:
    body = sample_bytes("jellyfin", "playback_start_episode.json")
    expected = {key: value for key, value in json.loads(body).items() if value != ""}
    assert read_body(body, "text/plain; charset=utf-8") == expected


def test_json_without_content_type_is_read_as_json() -> None:
    assert read_body(json.dumps(DOC).encode(), "") == DOC


def test_raw_newlines_inside_strings_are_accepted() -> None:
    body = b'{"NotificationType": "PlaybackStop", "Overview": "line 1\nline 2"}'
    assert read_body(body, "text/plain") == {
        "NotificationType": "PlaybackStop",
        "Overview": "line 1\nline 2",
    }


def test_a_backslash_that_starts_no_json_escape_stands_for_itself() -> None:
    # Jellyfin's template plugin escapes only quotes: {{{Name}}} puts a title's backslash raw.
    body = b'{"Name": "AC\\DC: Let There Be Rock", "Path": "C:\\\\films", "Line": "a\\nb"}'
    assert read_body(body, "application/json") == {
        "Name": "AC\\DC: Let There Be Rock",
        "Path": "C:\\films",
        "Line": "a\nb",
    }


@pytest.mark.parametrize("title", [b"C:\\users", b"Dir\\u12", b"x\\user\\u00e9"])
def test_a_backslash_u_that_starts_no_unicode_escape_stands_for_itself(title: bytes) -> None:
    body = b'{"Name": "' + title + b'"}'
    expected = title.decode().replace("\\u00e9", "\u00e9")
    assert read_body(body, "application/json") == {"Name": expected}


def test_empty_strings_are_treated_as_absent_at_any_depth() -> None:
    body = b'{"a": "", "b": "x", "c": {"d": "", "e": [{"f": ""}]}}'
    assert read_body(body, "application/json") == {"b": "x", "c": {"e": [{}]}}


def the_standard_library_reading(raw: bytes) -> object:
    """What json.loads(strict=False) gives, with empty strings dropped: the reading we promise."""

    def without_empty_strings(node: dict[str, object]) -> dict[str, object]:
        return {key: value for key, value in node.items() if value != ""}

    return json.loads(raw, strict=False, object_hook=without_empty_strings)


@pytest.mark.parametrize(
    ("source", "name"),
    [(source, name) for source in SOURCES_WITH_SAMPLES for name in payload_names(source)],
)
def test_every_sample_reads_as_the_standard_library_reads_it(source: str, name: str) -> None:
    raw = sample_bytes(source, name)
    assert read_body(raw, "application/json") == the_standard_library_reading(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',  # duplicate keys: the last wins
        b'{"a": 1e400, "b": -1e400, "c": NaN}',  # out-of-range numbers and NaN
        b'{"a": 12345678901234567890123, "b": 0.1, "c": -0.0, "d": 1E5}',
        b'{"a": "say \\"\\"", "b": "\\u00e9\\ud83c\\udfac"}',  # escapes (lone surrogates: below)
        b'{"a": "line 1\nline 2\ttab"}',  # raw control characters
        b'{"a": {"b": ""}, "": "empty key", "c": ["", {"d": ""}]}',
        '{"a": "caf\u00e9"}'.encode("utf-16"),
        b'\xef\xbb\xbf{"a": true}',
    ],
)
def test_odd_but_valid_json_reads_as_the_standard_library_reads_it(raw: bytes) -> None:
    assert read_body(raw, "application/json") == the_standard_library_reading(raw)


def test_dotnet_boolean_text_is_left_for_the_parsers_to_read() -> None:
    assert read_body(b'{"IsPaused": "True"}', "text/plain") == {"IsPaused": "True"}


def test_utf8_byte_order_mark_is_accepted() -> None:
    assert read_body(b"\xef\xbb\xbf" + json.dumps(DOC).encode(), "application/json") == DOC


def test_form_with_payload_field_is_read() -> None:
    body = urlencode({"payload": json.dumps(DOC)}).encode()
    assert read_body(body, "application/x-www-form-urlencoded") == DOC


def test_form_with_plain_fields_gives_the_fields() -> None:
    body = b"action=play&media_type=movie&user_rating="
    assert read_body(body, "application/x-www-form-urlencoded") == {
        "action": "play",
        "media_type": "movie",
    }


def test_not_json_is_rejected_with_the_parser_position() -> None:
    assert read_body(b"hello", "application/json") == Rejected(
        "body is not JSON: Expecting value at line 1 column 1"
    )


def test_not_json_is_rejected_naming_the_key_of_the_line_it_broke_on() -> None:
    body = b'{\n  "NotificationType": "PlaybackStop",\n  "DeviceName": "Samsung 65" TV",\n}'
    assert read_body(body, "text/plain") == Rejected(
        "body is not JSON: Expecting ',' delimiter at line 3 column 30 (the \"DeviceName\" line)"
    )


def our_jellyfin_template(**raw_values: str) -> bytes:
    """A body as the plugin renders our template: each value inserted as given."""
    lines = [
        '"schema": "watchbridge-jellyfin-1"',
        *(f'"{k}": "{v}"' for k, v in raw_values.items()),
    ]
    return ("{\n  " + ",\n  ".join(lines) + "\n}\n").encode()


def test_our_jellyfin_template_broken_by_a_raw_quote_is_read_line_by_line() -> None:
    body = our_jellyfin_template(NotificationType="PlaybackStop", DeviceName='Samsung 65" TV')
    assert read_body(body, "text/plain") == {
        "schema": "watchbridge-jellyfin-1",
        "NotificationType": "PlaybackStop",
        "DeviceName": 'Samsung 65" TV',
    }


def test_a_title_ending_in_a_backslash_is_read_from_our_jellyfin_template() -> None:
    body = our_jellyfin_template(Name="Trailing\\", SeriesName="AC\\DC")
    assert read_body(body, "text/plain") == {
        "schema": "watchbridge-jellyfin-1",
        "Name": "Trailing\\",
        "SeriesName": "AC\\DC",
    }


def test_a_rescued_template_reads_the_plugins_quote_escape_and_no_other() -> None:
    # Name alone would be JSON (read by JSON's escapes); SeriesName breaks it.
    body = our_jellyfin_template(Name='Say \\"Hi\\" \\n \\u00e9 \\\\', SeriesName="End\\")
    decoded = read_body(body, "text/plain")
    assert isinstance(decoded, dict)
    assert decoded["Name"] == 'Say "Hi" \\n \\u00e9 \\\\'


def test_empty_values_of_a_rescued_template_are_absent() -> None:
    body = our_jellyfin_template(Name="Trailing\\", Rating="", Likes="")
    assert read_body(body, "text/plain") == {
        "schema": "watchbridge-jellyfin-1",
        "Name": "Trailing\\",
    }


def test_a_template_in_crlf_lines_is_rescued_alike() -> None:
    body = our_jellyfin_template(Name="Trailing\\").replace(b"\n", b"\r\n")
    assert read_body(body, "text/plain") == {
        "schema": "watchbridge-jellyfin-1",
        "Name": "Trailing\\",
    }


def test_a_body_without_our_template_line_is_not_rescued() -> None:
    body = our_jellyfin_template(Name="Trailing\\").replace(b"jellyfin-1", b"jellyfin-2")
    assert read_body(body, "text/plain") == Rejected(
        'body is not JSON: Unterminated string starting at line 3 column 11 (the "Name" line)'
    )


def test_our_template_with_a_line_of_another_shape_is_not_rescued() -> None:
    body = our_jellyfin_template(Name="Trailing\\", Overview="line 1\nline 2")
    result = read_body(body, "text/plain")
    assert isinstance(result, Rejected)
    assert result.reason.startswith("body is not JSON: ")


def test_our_jellyfin_template_broken_beyond_reading_names_the_value_and_send_all_properties() -> (
    None
):
    # A title with a line break and a backslash: neither JSON nor one value per line. Marking
    # the item played again would send the same body: only Send All Properties gets it through.
    body = our_jellyfin_template(Name="Part 1\nPart 2\\", Year="2008")
    assert read_body(body, "text/plain") == Rejected(
        "body is not JSON: Expecting ',' delimiter at line 5 column 4; our Jellyfin template"
        ' cannot carry its "Name" value: tick Send All Properties in the plugin\'s destination'
    )


def test_an_unterminated_string_is_refused_saying_where_it_starts() -> None:
    assert read_body(b'{\n  "Name": "Trailing\\"\n}', "application/json") == Rejected(
        'body is not JSON: Unterminated string starting at line 2 column 11 (the "Name" line)'
    )


def test_truncated_json_is_rejected_in_one_line() -> None:
    result = read_body(b'{"event": "media.play",\n "Metadata": {', "application/json")
    assert isinstance(result, Rejected)
    assert result.reason.startswith("body is not JSON: ")
    assert "\n" not in result.reason


def test_json_array_is_rejected() -> None:
    assert read_body(b"[1, 2]", "application/json") == Rejected(
        "body is a JSON list, not an object: post each event on its own"
    )
    assert read_body(b'"x"', "application/json") == Rejected("body is JSON but not an object")


def test_empty_body_is_rejected() -> None:
    assert read_body(b"  \r\n", "application/json") == Rejected("empty body")


def test_bytes_that_are_not_utf8_are_read_as_windows_1252() -> None:
    # Latin-1 sent without saying so (Windows PowerShell 5.1): refused before, the play lost.
    body = b'{"user": "J\xf6rg", "title": "Pok\xe9mon \x93Hi\x94 \x81", "show": "Sh\xc5\x8dgun"}'
    read = read_body(body, "application/json")
    assert read == {"user": "Jörg", "title": "Pokémon “Hi” \x81", "show": "Shōgun"}


def test_form_fields_escaping_latin_1_without_saying_so_keep_their_letters() -> None:
    read = read_body(
        b"action=play&user=J%F6rg&title=Sh%C5%8Dgun", "application/x-www-form-urlencoded"
    )
    assert read == {"action": "play", "user": "Jörg", "title": "Shōgun"}


def test_deeply_nested_json_is_rejected_not_raised() -> None:
    result = read_body(b"[" * 100_000, "application/json")
    assert isinstance(result, Rejected)


def test_deeply_nested_json_holding_a_lone_surrogate_is_rejected_not_raised() -> None:
    body = b'{"a": ' + b"[" * 900 + b'"\\ud800"' + b"]" * 900 + b"}"
    assert read_body(body, "application/json") == Rejected(
        "body is not JSON we accept: nested too deeply"
    )


def test_a_number_of_thousands_of_digits_is_rejected_in_words_a_template_writer_can_act_on() -> (
    None
):
    body = b'{"duration_ms": ' + b"9" * 5000 + b"}"
    assert read_body(body, "application/json") == Rejected(
        "body is not JSON we accept: a number has too many digits"
    )


def test_content_type_header_parameters_are_parsed_with_quotes() -> None:
    assert parse_header('Multipart/Form-Data; boundary="x;y"; charset=utf-8') == (
        "multipart/form-data",
        {"boundary": "x;y", "charset": "utf-8"},
    )


def test_json_body_mislabelled_as_multipart_is_read_as_json() -> None:
    assert read_body(json.dumps(DOC).encode(), content_type()) == DOC


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "Am\\u00e9lie \\ud83d"}',
        '{"title": "Amélie \ud83d"}'.encode(errors="surrogatepass"),
    ],
    ids=["escaped", "raw-bytes"],
)
def test_a_lone_surrogate_becomes_a_replacement_character(raw: bytes) -> None:
    # A title cut mid-emoji: no text SQLite or UTF-8 can hold.
    assert read_body(raw, "application/json") == {"title": "Amélie \ufffd"}


def test_a_surrogate_pair_is_the_character_it_encodes() -> None:
    assert read_body(b'{"title": "\\ud83d\\ude00 \\\\"}', "application/json") == {
        "title": "\U0001f600 \\"
    }


AMELIE = {"event": "played", "item": {"type": "movie", "title": "Amélie", "year": 2001}}


def test_a_json_body_in_the_charset_it_declares_is_read_in_it() -> None:
    # Windows PowerShell 5.1 sends Latin-1 and says so.
    body = json.dumps(AMELIE, ensure_ascii=False).encode("latin-1")
    read = read_body(body, "application/json; charset=ISO-8859-1")
    assert isinstance(read, dict) and read["item"]["title"] == "Amélie"  # type: ignore[index]


def test_a_form_body_in_the_charset_it_declares_keeps_its_letters() -> None:
    body = ("payload=" + quote(json.dumps(AMELIE, ensure_ascii=False), encoding="latin-1")).encode()
    read = read_body(body, "application/x-www-form-urlencoded; charset=ISO-8859-1")
    assert isinstance(read, dict) and read["item"]["title"] == "Amélie"  # type: ignore[index]


@pytest.mark.parametrize("charset", ["base64", "rot13", "idna", "punycode", "undefined"])
def test_a_body_labelled_with_a_codec_that_is_no_charset_is_read_as_utf8(charset: str) -> None:
    body = json.dumps(AMELIE, ensure_ascii=False).encode("utf-8")
    read = read_body(body, f"application/json; charset={charset}")
    assert isinstance(read, dict) and read["item"]["title"] == "Amélie"  # type: ignore[index]


def test_a_utf8_body_labelled_ascii_keeps_its_letters() -> None:
    body = json.dumps(AMELIE, ensure_ascii=False).encode("utf-8")
    read = read_body(body, "application/json; charset=us-ascii")
    assert isinstance(read, dict) and read["item"]["title"] == "Amélie"  # type: ignore[index]


@pytest.mark.parametrize("charset", ["unicode_escape", "raw_unicode_escape"])
def test_an_escape_codec_named_as_charset_is_read_as_utf8_not_a_500(
    charset: str,
) -> None:
    # Like base64 or rot13, these are codecs, not charsets: they turned the JSON escape \ud800
    # into a lone surrogate that the re-encoding to UTF-8 could not hold (a 500 and an alert).
    read = read_body(b'{"event": "x", "a": "\\ud800"}', f"application/json; charset={charset}")
    assert read == {"event": "x", "a": "\ufffd"}
