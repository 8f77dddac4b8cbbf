"""Our generic JSON schema: the documented examples parse, broken fields name their path."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.ingest_samples import only_event
from watchbridge.ingest import parse as parse_request
from watchbridge.ingest.generic import (
    Reading,
    dated,
    kept,
    learned_from,
    parse,
    taught,
    to_learn,
    zone_sender,
)
from watchbridge.model import Accepted, Account, Ids, Ignored, Rejected
from watchbridge.services.anilist import FuzzyDate

DOCS = Path(__file__).parent.parent / "docs" / "webhooks.md"
MOVIE = {
    "event": "stop",
    "user": "alice",
    "player": "kodi-livingroom",
    "progress": 95.0,
    "played": True,
    "watched_at": "2025-03-14T20:48:02Z",
    "item": {
        "type": "movie",
        "title": "Arrival",
        "year": 2016,
        "ids": {"imdb": "tt2543164", "tmdb": 329865},
    },
}
EPISODE = {
    "event": "start",
    "user": "alice",
    "player": "kodi-livingroom",
    "position_ms": 0,
    "duration_ms": 2856000,
    "item": {
        "type": "episode",
        "title": "Ozymandias",
        "show": {"title": "Breaking Bad", "year": 2008, "ids": {"tvdb": "81189"}},
        "season": 5,
        "number": 14,
    },
}


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def with_item(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = changed(base)
    payload["item"] = changed(payload["item"], **changes)
    return payload


def rejection(payload: dict[str, Any]) -> str:
    result = parse(payload)
    assert isinstance(result, Rejected), result
    return result.reason


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("music", "not_video"),
        ("Track", "not_video"),
        ("channel", "live_tv"),
        ("video", "unsupported_type"),
    ],
)
def test_other_media_a_player_plays_is_acknowledged_and_counted(kind: str, reason: str) -> None:
    # One Home Assistant automation on a player that plays music too: a 400 (and an alert)
    # for every song would drown the refusals that lose plays.
    song = with_item(MOVIE, type=kind, ids=None)
    assert parse(changed(song, event="played")) == Ignored(reason)


def test_a_year_of_0_is_an_unknown_year() -> None:
    # Home Assistant's `{{ year | int }}` renders a missing year as 0.
    assert only_event(parse(with_item(MOVIE, year=0))).item.year is None


def test_documented_movie_example_is_a_played_stop() -> None:
    event = only_event(parse(MOVIE))
    assert event.source == "generic"
    assert (event.action, event.played) == ("stop", True)
    assert event.item.kind == "movie"
    assert event.item.ids == Ids(imdb="tt2543164", tmdb="329865")
    assert (event.item.title, event.item.year) == ("Arrival", 2016)
    assert event.account == Account(name="alice")
    assert event.player == "kodi-livingroom"
    assert event.progress == pytest.approx(95.0)
    assert event.occurred_at == 1741985282


def test_documented_episode_example_is_a_start_with_show_ids() -> None:
    event = only_event(parse(EPISODE))
    assert event.action == "start"
    assert event.item.kind == "episode"
    assert event.item.show_ids == Ids(tvdb="81189")
    assert (event.item.show_title, event.item.year) == ("Breaking Bad", 2008)
    assert (event.item.season, event.item.number) == (5, 14)
    assert (event.position_ms, event.duration_ms) == (0, 2_856_000)


def test_request_through_the_body_reader_parses() -> None:
    result = parse_request("generic", json.dumps(MOVIE).encode(), "application/json")
    assert only_event(result).item.ids.imdb == "tt2543164"


def test_progress_with_duration_gives_the_position() -> None:
    event = only_event(parse(changed(MOVIE, duration_ms=6_960_000)))
    assert (event.position_ms, event.duration_ms) == (6_612_000, 6_960_000)


def test_progress_without_duration_stays_a_percent() -> None:
    event = only_event(parse(MOVIE))
    assert (event.position_ms, event.duration_ms, event.progress) == (None, None, 95.0)


def test_a_progress_under_one_percent_stands_where_it_decides_no_play() -> None:
    # A start (or a report) a few seconds in, and a stop the player counted as watched.
    start = only_event(parse(changed(MOVIE, event="start", played=None, progress=0.4)))
    played_stop = only_event(parse(changed(MOVIE, progress=0.97)))
    assert (start.progress, played_stop.progress, played_stop.played) == (0.4, 0.97, True)


def test_progress_with_a_position_but_no_duration_stays_a_percent() -> None:
    event = only_event(parse(changed(MOVIE, position_ms=6_612_000)))
    assert (event.position_ms, event.duration_ms, event.progress) == (6_612_000, None, 95.0)


def test_a_position_and_a_duration_outweigh_progress() -> None:
    event = only_event(parse(changed(MOVIE, position_ms=600_000, duration_ms=6_000_000)))
    assert event.progress == 10.0


def test_user_and_player_ids_may_be_numbers() -> None:
    event = only_event(parse(changed(MOVIE, user_id=7, player=12, session=99)))
    assert (event.account.id, event.player, event.session_id) == ("7", "12", "99")


def test_a_whole_number_written_as_a_float_is_an_id() -> None:
    assert only_event(parse(changed(MOVIE, user_id=7.0))).account.id == "7"


def test_played_and_unplayed_events_set_played() -> None:
    assert only_event(parse(changed(MOVIE, event="played"))).played is True
    assert only_event(parse(changed(MOVIE, event="unplayed", played=None))).played is False


def test_rate_takes_a_zero_to_ten_rating() -> None:
    event = only_event(parse(changed(MOVIE, event="rate", rating=8)))
    assert (event.action, event.rating) == ("rate", 80)


def test_rate_with_zero_clears_the_rating() -> None:
    event = only_event(parse(changed(MOVIE, event="rate", rating=0)))
    assert (event.action, event.rating) == ("rate", None)


def test_episode_with_only_its_own_ids_is_accepted() -> None:
    payload = with_item(EPISODE, show=None, season=None, number=None, ids={"tvdb": 4637661})
    assert only_event(parse(payload)).item.ids == Ids(tvdb="4637661")


def test_episode_with_absolute_number_needs_no_season() -> None:
    payload = with_item(EPISODE, season=None, number=None, absolute=62)
    assert only_event(parse(payload)).item.absolute == 62


def test_unknown_id_names_are_ignored_with_a_warning() -> None:
    result = parse(with_item(MOVIE, ids={"imdb": "tt2543164", "tvmaze": 1}))
    assert isinstance(result, Accepted)
    assert result.warnings == ["item.ids.tvmaze: unknown id, ignored"]


def test_a_time_without_a_zone_reads_as_utc_until_dated_against_the_clock() -> None:
    event = only_event(parse(changed(MOVIE, watched_at="2025-03-14T20:48:02")))
    assert event.occurred_at == 1741985282


@pytest.mark.parametrize("zone", ["America/New_York", "Pacific/Auckland", "UTC"])
def test_a_day_without_a_time_is_that_day_where_watchbridge_runs(
    time_zone: Callable[[str], None], zone: str
) -> None:
    # Midnight UTC of the 14th is the evening of the 13th in New York: Trakt, Serializd and
    # AniList would all show the day before. Noon of the day in TZ is that day there, and
    # in every zone within 11 hours of it when TZ was left at UTC.
    time_zone(zone)
    event = only_event(parse(changed(MOVIE, watched_at="2025-03-14")))
    assert event.occurred_at is not None
    assert datetime.fromtimestamp(event.occurred_at) == datetime(2025, 3, 14, 12)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (changed(MOVIE, event=None), "event: required"),
        (
            changed(MOVIE, event="scrobble"),
            "event: must be one of start, pause, resume, progress, stop, played, unplayed, rate",
        ),
        (changed(MOVIE, item=None), "item: required"),
        (changed(MOVIE, item=[1]), "item: must be an object"),
        (with_item(MOVIE, type=None), "item.type: required"),
        *[
            (
                with_item(MOVIE, type=kind),
                "item.type: must be movie or episode (an episode with item.show, item.season"
                " and item.number)",
            )
            # Home Assistant's Plex player calls an episode a tvshow: never dropped unseen.
            for kind in ("show", "tvshow", "movei")
        ],
        (with_item(MOVIE, ids=None, title=None), "item: a movie needs ids or a title"),
        (with_item(MOVIE, title=["Arrival"]), "item.title: must be a string"),
        (with_item(MOVIE, year="soon"), "item.year: must be a whole number >= 0"),
        (with_item(MOVIE, ids="tt2543164"), "item.ids: must be an object"),
        (
            with_item(MOVIE, ids={"imdb": "2543164"}),
            "item.ids.imdb: must be an IMDb id like tt2543164",
        ),
        (with_item(MOVIE, ids={"tmdb": "abc"}), "item.ids.tmdb: must be a positive number"),
        (
            with_item(EPISODE, show=None),
            "item.show: an episode without ids needs show ids or a show title",
        ),
        (
            with_item(EPISODE, number=None),
            "item.season, item.number: required for an episode without ids",
        ),
        (with_item(EPISODE, season=-1), "item.season: must be a whole number >= 0"),
        (with_item(EPISODE, show="Breaking Bad"), "item.show: must be an object"),
        (changed(MOVIE, event="rate"), "rating: required for event rate"),
        (changed(MOVIE, event="rate", rating=11), "rating: must be a number from 0 to 10"),
        (changed(MOVIE, progress=120), "progress: must be a number from 0 to 100"),
        (changed(MOVIE, progress="most"), "progress: must be a number from 0 to 100"),
        (changed(MOVIE, position_ms=-5), "position_ms: must be a whole number >= 0"),
        (
            # A Kodi script's getTime() and getTotalTime() are seconds.
            changed(EPISODE, event="stop", position_ms=2_700, duration_ms=2_856),
            "duration_ms: 2856 is under 30 seconds; position_ms and duration_ms are"
            " milliseconds (multiply seconds by 1000)",
        ),
        (
            # position / duration, as a template computes it: read as a percent, 0.97 %.
            changed(MOVIE, played=None, progress=0.97),
            "progress: 0.97 on a stop is under 1 %; progress is a percent from 0 to 100 (multiply a"
            " 0-1 fraction by 100), or send position_ms and duration_ms; a stop in the first 1 %"
            " is no viewing: send 0",
        ),
        (changed(MOVIE, played="maybe"), "played: must be true or false"),
        (changed(MOVIE, user=["alice"]), "user: must be a string or a whole number"),
        (changed(MOVIE, user={"name": "alice"}), "user: must be a string or a whole number"),
        (changed(MOVIE, user_id=True), "user_id: must be a string or a whole number"),
        (changed(MOVIE, player=1.5), "player: must be a string or a whole number"),
        (changed(MOVIE, server=[]), "server: must be a string or a whole number"),
        (changed(MOVIE, session={}), "session: must be a string or a whole number"),
        *[
            (
                changed(MOVIE, watched_at=when),
                "watched_at: must be an ISO-8601 time between 1900 and 2200, e.g."
                " 2025-03-14T20:48:02Z",
            )
            # Words; a .NET minimum date; the year 9999: neither could be sent on to Trakt.
            for when in ("yesterday", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00")
        ],
    ],
)
def test_broken_fields_are_rejected_with_their_path(payload: dict[str, Any], reason: str) -> None:
    assert rejection(payload) == reason


@pytest.mark.parametrize("year", [1899, 1900, 2199, 2200])
def test_a_webhook_time_and_an_anilist_date_may_be_a_viewing_in_the_same_years(year: int) -> None:
    # One bound (model.viewing_year): the years 1900-2199, for a day, a time and AniList's date.
    day = isinstance(parse(changed(MOVIE, watched_at=f"{year}-06-15")), Accepted)
    time = isinstance(parse(changed(MOVIE, watched_at=f"{year}-06-15T20:48:02Z")), Accepted)
    assert day == time == FuzzyDate(year, 6, 15).watched() == (year in (1900, 2199))


def test_every_curl_example_in_the_docs_is_accepted() -> None:
    examples = re.findall(r"-d '(\{.*?\})'", DOCS.read_text(), re.S)
    assert len(examples) >= 4
    for example in examples:
        assert isinstance(parse_request("generic", example.encode(), "application/json"), Accepted)


def test_an_id_sent_as_null_or_empty_is_absent() -> None:
    ids = {"imdb": "tt2543164", "tmdb": None, "tvdb": "", "trakt": 0}  # tojson, templates
    event = only_event(parse({**MOVIE, "item": {"type": "movie", "ids": ids}}))
    assert event.item.ids == Ids(imdb="tt2543164")


def test_an_episode_with_its_own_ids_and_a_null_show_is_accepted() -> None:
    item = {"type": "episode", "ids": {"tvdb": 4637661}, "show": None}
    event = only_event(parse({**MOVIE, "item": item}))
    assert event.item.ids == Ids(tvdb="4637661")


def test_a_position_far_past_the_duration_is_a_unit_mistake() -> None:
    # position in ms, duration in seconds (a Kodi script's getTotalTime()): every stop would
    # read as watched to the end.
    stopped = changed(EPISODE, event="stop", position_ms=696_000, duration_ms=6_960)
    assert rejection(stopped) == "position_ms: larger than duration_ms; both are milliseconds"


def test_a_position_a_little_past_the_duration_is_the_end() -> None:
    stopped = changed(EPISODE, event="stop", position_ms=2_860_000, duration_ms=2_856_000)
    assert only_event(parse(stopped)).progress == 100.0


def test_the_shows_id_copied_among_the_episodes_own_is_left_out() -> None:
    # By it Trakt would find another show's episode: TVDB numbers episodes and shows apart.
    copied = with_item(EPISODE, ids={"tvdb": "81189"})
    result = parse(copied)
    assert isinstance(result, Accepted)
    assert result.events[0].item.ids == Ids()
    assert result.warnings == ["item.ids.tvdb: the show's id, not the episode's; left out"]


def test_a_day_ahead_where_watchbridge_runs_is_refused_naming_its_zone(
    time_zone: Callable[[str], None],
) -> None:
    # Watchbridge left at UTC, a household east of it already on the next day.
    time_zone("UTC")
    now = datetime(2025, 3, 14, 22).timestamp()
    result = parse_request(
        "generic", json.dumps(changed(MOVIE, watched_at="2025-03-15")).encode(), "application/json"
    )
    assert isinstance(result, Accepted)
    refused = dated(result, now)
    assert isinstance(refused, Rejected)
    assert refused.reason == (
        "watched_at: 2025-03-15 has not begun where watchbridge runs (UTC): set TZ to your time"
        " zone, or send a time with its zone (e.g. 2025-03-14T21:48:02+01:00)"
    )


def test_a_time_sent_while_this_machines_clock_is_not_set_stands() -> None:
    # A Raspberry Pi without a real-time clock, booted at 1970 until time sync answers: its
    # clock cannot judge the sender's time, and refusing would lose the play (senders do not
    # send again).
    result = parse_request(
        "generic",
        json.dumps(changed(MOVIE, watched_at="2025-03-14T20:48:02Z")).encode(),
        "application/json",
    )
    assert isinstance(result, Accepted)
    kept = dated(result, 1_000.0)
    assert isinstance(kept, Accepted)
    assert kept.events[0].occurred_at == datetime(2025, 3, 14, 20, 48, 2, tzinfo=UTC).timestamp()


def test_a_time_days_ahead_is_refused_as_a_wrong_clock_not_a_zone_left_out() -> None:
    now = datetime(2025, 3, 12, 20, tzinfo=UTC).timestamp()
    result = parse_request(
        "generic",
        json.dumps(changed(MOVIE, watched_at="2025-03-14T20:48:02Z")).encode(),
        "application/json",
    )
    assert isinstance(result, Accepted)
    refused = dated(result, now)
    assert isinstance(refused, Rejected)
    assert refused.reason == (
        "watched_at: 2.0 days ahead of this server's clock, further than a time zone can be: set"
        " the clock of this machine, or of the sender, right (time sync, NTP)"
    )


def _parsed(watched_at: object) -> Accepted:
    """The webhook's document as the route reads it."""
    body = json.dumps(changed(MOVIE, watched_at=watched_at)).encode()
    result = parse_request("generic", body, "application/json")
    assert isinstance(result, Accepted), result
    return result


def _dated(watched_at: object, now: float, learned: Reading | None = None) -> Accepted | Rejected:
    """The webhook's document checked against the clock at `now`, its sender seen to write
    a time without its zone as `learned`."""
    return dated(_parsed(watched_at), now, learned)


def _taken_at(watched_at: object, now: float, learned: Reading | None = None) -> float | None:
    taken = _dated(watched_at, now, learned)
    assert isinstance(taken, Accepted), taken
    return taken.events[0].occurred_at


def test_a_time_without_a_zone_near_now_in_utc_is_utc(time_zone: Callable[[str], None]) -> None:
    time_zone("America/New_York")
    now = datetime(2025, 3, 14, 20, 48, 2, tzinfo=UTC).timestamp()
    assert _taken_at("2025-03-14T20:46:02", now) == now - 120


@pytest.mark.parametrize(
    ("zone", "sent", "at"),
    [
        # Python's datetime.now().isoformat(), `date +%FT%T`: the household's clock, no zone.
        ("America/New_York", "2025-03-14T16:48:02", datetime(2025, 3, 14, 20, 48, 2, tzinfo=UTC)),
        ("Europe/Berlin", "2025-07-14T22:50:02.5", datetime(2025, 7, 14, 20, 50, 2, 500000, UTC)),
        ("Asia/Kolkata", "2025-03-15T02:18:02", datetime(2025, 3, 14, 20, 48, 2, tzinfo=UTC)),
    ],
)
def test_a_time_without_a_zone_near_now_where_watchbridge_runs_is_that_local_time(
    time_zone: Callable[[str], None], zone: str, sent: str, at: datetime
) -> None:
    # Read as UTC it would be hours early (west of UTC) or late and refused as future (east).
    time_zone(zone)
    assert _taken_at(sent, at.timestamp() + 30) == at.timestamp()


@pytest.mark.parametrize(
    ("zone", "sent", "reason"),
    [
        (
            "Europe/Berlin",
            "2025-03-12T21:48:02",
            "watched_at: 2025-03-12T21:48:02 has no time zone: add yours (e.g."
            " 2025-03-12T21:48:02+01:00) or Z, or send no watched_at to date it as it arrives",
        ),
        (
            # The zone's offset at that time: summer time in July.
            "Europe/Berlin",
            "2025-07-12 21:48:02",
            "watched_at: 2025-07-12 21:48:02 has no time zone: add yours (e.g."
            " 2025-07-12 21:48:02+02:00) or Z, or send no watched_at to date it as it arrives",
        ),
        (
            "America/New_York",
            "2025-03-16T21:48:02",
            "watched_at: 2025-03-16T21:48:02 has no time zone: add yours (e.g."
            " 2025-03-16T21:48:02-04:00) or Z, or send no watched_at to date it as it arrives",
        ),
        (
            # TZ at UTC, whose +00:00 says nothing over Z: the offset that puts it at now, the
            # sender's if it was sent live (New York's, not UTC's: that would date it 4 hours
            # early without a word).
            "UTC",
            "2025-03-14T16:48:02",
            "watched_at: 2025-03-14T16:48:02 has no time zone: add yours (e.g."
            " 2025-03-14T16:48:02-04:00 if it was sent as it happened) or Z, or send no"
            " watched_at to date it as it arrives",
        ),
        (
            "UTC",
            "2025-03-15T02:18:02",
            "watched_at: 2025-03-15T02:18:02 has no time zone: add yours (e.g."
            " 2025-03-15T02:18:02+05:30 if it was sent as it happened) or Z, or send no"
            " watched_at to date it as it arrives",
        ),
        (
            # Days from now: no offset puts it at now; UTC's, as TZ's.
            "UTC",
            "2025-03-12T18:48:02",
            "watched_at: 2025-03-12T18:48:02 has no time zone: add yours (e.g."
            " 2025-03-12T18:48:02+00:00) or Z, or send no watched_at to date it as it arrives",
        ),
    ],
)
def test_a_time_without_a_zone_far_from_now_is_refused_asking_for_its_zone(
    time_zone: Callable[[str], None], zone: str, sent: str, reason: str
) -> None:
    # Days before (a history script), or hours from now in both readings: which zone the
    # sender meant cannot be told, and a guess would date the play wrong without a word.
    time_zone(zone)
    now = datetime(2025, 3, 14, 20, 48, 2, tzinfo=UTC).timestamp()
    refused = _dated(sent, now)
    assert isinstance(refused, Rejected)
    assert refused.reason == reason


@pytest.mark.parametrize(
    "sent",
    ["2025-03-12T21:48:02Z", "2025-03-12T21:48:02+01:00", "2025-03-14T20:48:02-04:00"],
)
def test_a_time_with_its_zone_is_taken_as_sent(time_zone: Callable[[str], None], sent: str) -> None:
    time_zone("America/New_York")
    now = datetime(2025, 3, 15, 20, 48, 2, tzinfo=UTC).timestamp()
    assert _taken_at(sent, now) == datetime.fromisoformat(sent).timestamp()


def test_a_time_without_a_zone_in_1970_is_still_a_clock_not_set() -> None:
    # A Kodi box booted at 1970, its time not synced yet: dated as it arrives, not refused.
    now = datetime(2025, 3, 14, 20, 48, 2, tzinfo=UTC).timestamp()
    assert _taken_at("1970-01-01T00:04:10", now) == now


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (
            1741985282,
            "watched_at: 1741985282 is a number, not a time: send an ISO-8601 time with its"
            " zone (as epoch seconds it is 2025-03-14T20:48:02Z), or send no watched_at to date"
            " it as it arrives",
        ),
        (
            1741985282000,
            "watched_at: 1741985282000 is a number, not a time: send an ISO-8601 time with its"
            " zone (as epoch milliseconds it is 2025-03-14T20:48:02Z), or send no watched_at to"
            " date it as it arrives",
        ),
        (
            # Home Assistant's `{{ as_timestamp(now()) }}` renders as text.
            "1741985282.61",
            "watched_at: 1741985282.61 is a number, not a time: send an ISO-8601 time with its"
            " zone (as epoch seconds it is 2025-03-14T20:48:02Z), or send no watched_at to date"
            " it as it arrives",
        ),
        (
            -5,
            "watched_at: -5 is a number, not a time: send an ISO-8601 time with its zone (e.g."
            " 2025-03-14T20:48:02Z), or send no watched_at to date it as it arrives",
        ),
    ],
)
def test_an_epoch_number_is_refused_saying_what_to_send(sent: object, reason: str) -> None:
    assert rejection(changed(MOVIE, watched_at=sent)) == reason


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


NOW = _utc(2025, 3, 14, 20, 48, 2)


@pytest.mark.parametrize(
    ("zone", "sent", "learned", "at"),
    [
        # Sent again 3 hours late by a script seen to write New York's clock, or UTC.
        ("America/New_York", "2025-03-14T13:48:02", "local", NOW - 3 * 3600),
        ("America/New_York", "2025-03-14T17:48:02", "utc", NOW - 3 * 3600),
        # Days before, in summer time: the offset then, not now's.
        ("Europe/Berlin", "2024-07-12T21:48:02", "local", _utc(2024, 7, 12, 19, 48, 2)),
        # TZ at UTC: the two readings are one, and a sender seen near now wrote it.
        ("UTC", "2025-03-14T17:48:02", "either", NOW - 3 * 3600),
        ("UTC", "2025-03-14T17:48:02", "utc", NOW - 3 * 3600),
        ("Europe/London", "2025-01-14T17:48:02", "either", _utc(2025, 1, 14, 17, 48, 2)),
    ],
)
def test_a_time_without_a_zone_far_from_now_is_read_as_its_sender_was_seen_to_write(
    time_zone: Callable[[str], None], zone: str, sent: str, learned: Reading, at: float
) -> None:
    time_zone(zone)
    assert _taken_at(sent, NOW, learned) == at


@pytest.mark.parametrize(
    ("zone", "sent", "learned"),
    [
        # Never seen with a time near now: which zone it meant cannot be told.
        ("America/New_York", "2025-03-14T13:48:02", None),
        ("UTC", "2025-03-14T17:48:02", None),
        # Seen when UTC and London's time were one (winter): in summer they are not.
        ("Europe/London", "2024-07-12T21:48:02", "either"),
        ("America/New_York", "2025-03-14T13:48:02", "either"),
    ],
)
def test_a_time_without_a_zone_far_from_now_of_a_sender_not_known_to_write_it_is_refused(
    time_zone: Callable[[str], None], zone: str, sent: str, learned: Reading | None
) -> None:
    time_zone(zone)
    refused = _dated(sent, NOW, learned)
    assert isinstance(refused, Rejected)
    assert refused.reason.startswith(f"watched_at: {sent} has no time zone: add yours (e.g.")


def test_a_time_near_now_is_read_so_whatever_its_sender_was_seen_to_write(
    time_zone: Callable[[str], None],
) -> None:
    # The script changed (its container's TZ set): its live posts are dated right.
    time_zone("America/New_York")
    assert _taken_at("2025-03-14T16:46:02", NOW, "utc") == NOW - 120
    assert _taken_at("2025-03-14T20:46:02", NOW, "local") == NOW - 120


def test_a_learnt_reading_three_hours_ahead_is_still_refused_as_ahead(
    time_zone: Callable[[str], None],
) -> None:
    time_zone("America/New_York")
    refused = _dated("2025-03-14T23:48:02", NOW, "utc")
    assert isinstance(refused, Rejected) and "3.0 hours ahead" in refused.reason


@pytest.mark.parametrize(
    ("zone", "sent", "seen"),
    [
        ("America/New_York", "2025-03-14T16:46:02", "local"),
        ("America/New_York", "2025-03-14T20:46:02", "utc"),
        ("Asia/Kolkata", "2025-03-15T02:18:02", "local"),
        ("UTC", "2025-03-14T20:46:02", "either"),
        ("Europe/London", "2025-03-14T20:46:02", "either"),  # UTC+0 in March
        ("America/New_York", "2025-03-14T13:48:02", None),  # hours off in both: tells nothing
        ("America/New_York", "1970-01-01T00:04:10", None),  # a sender's clock not set
        ("America/New_York", "2025-03-14T20:46:02Z", None),  # with its zone
        ("America/New_York", "2025-03-14", None),  # a day alone
    ],
)
def test_a_time_without_a_zone_near_now_tells_which_zone_its_sender_writes(
    time_zone: Callable[[str], None], zone: str, sent: str, seen: Reading | None
) -> None:
    time_zone(zone)
    assert taught(_parsed(sent), NOW) == seen
    assert taught(_parsed(sent), 1000.0) is None  # this machine's clock not set


@pytest.mark.parametrize(
    ("learned", "seen", "learn"),
    [
        (None, "local", "local"),
        (None, "utc", "utc"),
        (None, "either", "either"),
        ("either", "local", "local"),  # the two readings apart now tell which
        ("local", "utc", "utc"),  # the script changed
        ("local", "local", None),
        ("local", "either", None),  # the two the same: nothing to learn
        ("utc", "either", None),
        ("utc", None, None),
    ],
)
def test_what_a_post_near_now_teaches(
    learned: Reading | None, seen: Reading | None, learn: Reading | None
) -> None:
    assert to_learn(learned, seen) == learn


def test_a_learnt_reading_is_kept_with_its_tz_and_local_time_is_forgotten_when_tz_changes() -> None:
    assert learned_from(kept("local", "America/New_York"), "America/New_York") == "local"
    assert learned_from(kept("local", "America/New_York"), "Europe/Berlin") is None
    assert learned_from(kept("utc", ""), "Europe/Berlin") == "utc"
    assert learned_from(kept("either", ""), "Europe/Berlin") == "either"
    for broken in (None, "", "not json", "[]", '{"reads": "mars"}'):
        assert learned_from(broken, "") is None


def test_a_sender_is_its_user_and_player_and_only_of_a_time_without_a_zone() -> None:
    sender = zone_sender(_parsed("2025-03-14T20:46:02"))
    assert sender is not None and json.loads(sender) == ["alice", "", "kodi-livingroom"]
    assert zone_sender(_parsed("2025-03-14T20:46:02Z")) is None
    assert zone_sender(_parsed("2025-03-14")) is None


def test_a_time_without_a_zone_in_the_hour_a_clock_goes_back_is_the_one_near_now(
    time_zone: Callable[[str], None],
) -> None:
    # Berlin, 25 October 2026: 02:00-03:00 comes twice (CEST, then CET). A post sent live in
    # the second was read in the first, an hour before: refused (asking for +02:00, the wrong
    # offset then), or dated an hour early for a sender known to write Berlin's clock.
    time_zone("Europe/Berlin")
    now = _utc(2026, 10, 25, 1, 35, 0)  # 02:35 CET
    sent = "2026-10-25T02:33:00"
    assert _taken_at(sent, now) == now - 120
    assert _taken_at(sent, now, "local") == now - 120
    assert taught(_parsed(sent), now) == "local"
    # The first 02:33 (CEST), sent live then, stays that one.
    first = _utc(2026, 10, 25, 0, 35, 0)
    assert _taken_at(sent, first) == first - 120
    # Queued from the summer side and sent after the change: its summer time's offset.
    assert _taken_at("2026-10-24T22:00:00", now, "local") == _utc(2026, 10, 24, 20, 0, 0)
