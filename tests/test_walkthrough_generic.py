"""Walkthrough: a Kodi household on the generic webhook, no Plex or Jellyfin.

Two Kodi boxes in the living room post `/webhooks/generic` from a service add-on script, and a
Home Assistant automation posts a `played` when the Blu-ray player finishes a film. Alice's
plays go to Serializd and AniList, Bob's to Serializd and Trakt (he has a Trakt app). The JSON
is what a user writes from docs/webhooks.md's schema; the running app takes it over real HTTP,
and what is asserted is what the fake Serializd, AniList and Trakt hold at the end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.serializd import ALICE, FakeSerializd, User
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import sign_in_trakt, write_config
from tests.test_walkthrough_anime_jellyfin import start_fakes
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, anilist_service

SECRET = "kodi-household-secret-0123456789"
BREAKING_BAD = 1396  # TMDB
BREAKING_BAD_TVDB = 81189
FRIEREN_TMDB, FRIEREN_TVDB, FRIEREN_ANILIST = 209867, 424536, 154587
ARRIVAL = {"imdb": "tt2543164", "tmdb": 329865}
DAY = 86400.0


class House(RunningHouse):
    """The household's watchbridge and the fakes it delivers to, on one clock; `stop` and
    `start` it again (an update, a reboot) on the same config and database."""

    def __init__(
        self,
        config: Path,
        clock: Clock,
        serializd: FakeSerializd,
        anilist: FakeAniList,
        trakt: FakeTrakt,
        bob: User,
    ) -> None:
        super().__init__(config, clock, (serializd, anilist, trakt))
        self.serializd, self.anilist, self.trakt, self.bob = serializd, anilist, trakt, bob

    def send(self, body: Any, **headers: str) -> httpx.Response:
        """POST as the Kodi script does: JSON to the generic URL with the secret in its path."""
        return httpx.post(
            f"{self.app.url}/webhooks/generic/{SECRET}",
            content=body if isinstance(body, bytes) else _json(body),
            headers={"Content-Type": "application/json", **headers},
        )

    def post(self, body: dict[str, Any]) -> httpx.Response:
        answer = self.send(body)
        assert answer.status_code in (200, 202), answer.text
        return answer

    def now_iso(self, hours: int = 1) -> str:
        """`datetime.now().astimezone().isoformat()` on a box `hours` east of UTC."""
        zone = timezone(timedelta(hours=hours))
        return datetime.fromtimestamp(self.clock(), zone).isoformat()

    def diary(self, user: User | None = None) -> list[tuple[int, int, int, str]]:
        """A Serializd diary (Alice's by default): (show, season, episode, date) by date."""
        found = []
        for r in self.serializd.diary(user):
            show = self.serializd.shows[r.show_id]
            season = show.season_by_id(r.season_id) if r.season_id else None
            number = season.number if season else -1
            found.append((r.show_id, number, r.episode_number or 0, r.watched_at))
        return sorted(found, key=lambda row: row[3])


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture
def house(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[House]:
    unpaced(monkeypatch, "anilist", "serializd", "trakt")
    clock = Clock()
    anilist, lists, serializd, _ = start_fakes(start_fake, "jellyfin", clock)
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    anilist.add_media(FRIEREN_ANILIST, episodes=28, format="TV")
    serializd.seed_reference_catalogue()
    serializd.add_show(FRIEREN_TMDB, "Frieren", {1: 38})
    bob = serializd.add_user("bob@example.com", "bobs password", "bob_tv")
    show = trakt.add_show(
        "Breaking Bad", 2008, imdb="tt0903747", tmdb=BREAKING_BAD, tvdb=BREAKING_BAD_TVDB
    )
    for number in range(1, 17):
        trakt.add_episode(show, 5, number, tvdb=4637600 + number)
    trakt.add_movie("Arrival", 2016, **ARRIVAL)
    email, password, _ = ALICE
    path = write_config(
        tmp_path,
        f"services:\n{anilist_service(anilist, lists)}"
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        "profiles:\n"
        "  alice:\n    users: {generic: [alice]}\n"
        f'    accounts: {{anilist: {{token: "{anilist.issue_token()}"}},'
        f' serializd: {{email: "{email}", password: "{password}"}}}}\n'
        "  bob:\n    users: {generic: [bob]}\n"
        f'    accounts: {{trakt: {{}}, serializd: {{token: "{serializd.issue_token(bob)}"}}}}\n',
        secret=SECRET,
    )
    with House(path, clock, serializd, anilist, trakt, bob) as house:
        assert house.runtime is not None
        sign_in_trakt(house.runtime.store, trakt, "bob", now=clock())
        yield house


def kodi(
    event: str, user: str, player: str, number: int, position: float, **extra: Any
) -> dict[str, Any]:
    """What the Kodi add-on posts about Breaking Bad S5E`number` (48 minutes) at `position`
    (0-1) of it: `getTime()` and `getTotalTime()` times 1000, the show's `uniqueid`s."""
    duration = 48 * 60
    show = {"title": "Breaking Bad", "ids": {"tmdb": str(BREAKING_BAD), "tvdb": "81189"}}
    return {
        "event": event,
        "user": user,
        "player": player,
        "position_ms": int(position * duration * 1000),
        "duration_ms": duration * 1000,
        "item": {"type": "episode", "season": 5, "number": number, "show": show},
        **extra,
    }


def near(logged: str, at: float) -> bool:
    """Whether a date Serializd or Trakt keeps is `at`, to the minute Trakt keeps."""
    return abs(datetime.fromisoformat(logged).timestamp() - at) < 61


def test_a_scripts_retries_make_one_play_and_a_rewatch_the_next_day_another(
    house: House,
) -> None:
    house.post(kodi("start", "alice", "kodi-livingroom", 14, 0.0, watched_at=house.now_iso()))
    house.shift(47 * 60)
    finished = house.clock()
    stop = kodi("stop", "alice", "kodi-livingroom", 14, 0.98, watched_at=house.now_iso())
    assert house.post(stop | {"session": "a1"}).json()["queued"] == 2  # Serializd, AniList
    house.shift(30)  # the script timed out waiting for the answer and posts again
    assert house.post(stop | {"session": "a1"}).json()["queued"] == 0
    assert house.post(stop | {"session": "a2"}).json()["queued"] == 0  # a new request id
    house.shift(DAY)
    house.post(kodi("start", "alice", "kodi-livingroom", 14, 0.0))
    house.shift(47 * 60)
    again = house.clock()
    house.post(kodi("stop", "alice", "kodi-livingroom", 14, 0.99))
    house.settle()
    diary = house.diary()
    assert [row[:3] for row in diary] == [(BREAKING_BAD, 5, 14)] * 2, diary
    assert near(diary[0][3], finished) and near(diary[1][3], again), diary
    assert house.anilist.snapshot() == {}  # not an anime: nothing on AniList


def test_kodis_playback_events_scrobble_to_trakt_and_a_stop_at_95_percent_is_a_play(
    house: House,
) -> None:
    box = ("bob", "kodi-livingroom")
    house.post(kodi("start", *box, 14, 0.0))
    house.settle()
    watching = house.trakt.watching()
    assert watching is not None and watching.item.number == 14
    house.shift(10 * 60)
    house.post(kodi("pause", *box, 14, 0.21))
    house.shift(5 * 60)
    house.post(kodi("resume", *box, 14, 0.21))
    house.shift(36 * 60)
    finished = house.clock()
    house.post(kodi("stop", *box, 14, 0.95))  # no `played`: Kodi says nothing of it
    house.settle()
    (play,) = house.trakt.history()
    assert (play.item.season, play.item.number) == (5, 14) and near(play.watched_at, finished)
    assert house.trakt.watching() is None
    ((show, season, number, logged),) = house.diary(house.bob)
    assert (show, season, number) == (BREAKING_BAD, 5, 14) and near(logged, finished)
    # A stop at 60 % is no play: Trakt keeps where it stopped.
    house.shift(DAY)
    house.post(kodi("start", *box, 15, 0.0))
    house.shift(20 * 60)
    house.post(kodi("stop", *box, 15, 0.6))
    house.settle()
    assert len(house.trakt.history()) == 1 and len(house.diary(house.bob)) == 1


def test_the_blu_ray_automations_played_film_lands_once_on_trakt(house: House) -> None:
    # Home Assistant: the Blu-ray player's media_title and nothing else, sent twice (the end,
    # then the player switched off), as `played`.
    for _ in range(2):
        house.post(
            {
                "event": "played",
                "user": "bob",
                "player": "media_player.bluray",
                "watched_at": house.now_iso(-5),
                "item": {"type": "movie", "title": "Arrival (2016)"},
            }
        )
        house.shift(90)
    house.settle()
    (play,) = house.trakt.history()
    assert play.item.title == "Arrival"
    assert house.diary(house.bob) == []  # Serializd keeps shows only


EPISODE = {
    "type": "episode",
    "season": 5,
    "number": 14,
    "show": {"title": "Breaking Bad", "ids": {"tmdb": BREAKING_BAD}},
}
PLAYED = {"event": "played", "user": "alice", "player": "kodi-livingroom", "item": EPISODE}


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        pytest.param(
            PLAYED | {"item": EPISODE | {"season": "five"}},
            "application/json",
            "item.season: must be a whole number >= 0",
            id="a-word-for-a-number",
        ),
        pytest.param(
            PLAYED | {"watched_at": 1741985282000},
            "application/json",
            "watched_at: 1741985282000 is a number, not a time: send an ISO-8601 time with its"
            " zone (as epoch milliseconds it is 2025-03-14T20:48:02Z), or send no watched_at to"
            " date it as it arrives",
            id="epoch-ms",
        ),
        pytest.param(
            # A history script's viewing, dated by Python's datetime.isoformat() without a zone.
            PLAYED | {"watched_at": "2025-03-14T21:48:02"},
            "application/json",
            "watched_at: 2025-03-14T21:48:02 has no time zone: add yours (e.g."
            " 2025-03-14T21:48:02+00:00) or Z, or send no watched_at to date it as it arrives",
            id="no-zone-long-ago",
        ),
        pytest.param(
            PLAYED | {"item": {"type": "episode", "season": 5, "number": 14}},
            "application/json",
            "item.show: an episode without ids needs show ids or a show title",
            id="no-show",
        ),
        pytest.param(
            PLAYED | {"item": {"type": "episode", "title": "Ozymandias"}},
            "application/json",
            "item.show: an episode without ids needs show ids or a show title",
            id="title-only",
        ),
        pytest.param(
            [PLAYED, PLAYED | {"item": EPISODE | {"number": 15}}],
            "application/json",
            "body is a JSON list, not an object: post each event on its own",
            id="a-list",
        ),
        pytest.param(
            {k: v for k, v in PLAYED.items() if k != "user"},
            "application/json",
            "user: required: the name a profile lists under users.generic (no profile is"
            " `default`)",
            id="no-user",
        ),
        pytest.param(
            b"event=played&user=alice&item=type",
            "application/x-www-form-urlencoded",
            "body is form fields, not JSON: post the event as one JSON object (curl -d"
            " '{...}'; Python requests: json=body, not data=body)",
            id="form-fields",
        ),
        pytest.param(
            PLAYED | {"event": "ended"},
            "application/json",
            "event: must be one of start, pause, resume, progress, stop, played, unplayed, rate",
            id="unknown-event",
        ),
    ],
)
def test_a_script_writers_mistake_is_a_400_saying_what_to_fix(
    house: House, body: Any, content_type: str, said: str
) -> None:
    answer = house.send(body, **{"Content-Type": content_type})
    assert (answer.status_code, answer.json()) == (400, {"status": "malformed", "error": said})
    house.settle()
    assert house.diary() == []


def test_json_sent_as_any_content_type_and_numbers_as_digit_strings_are_taken(
    house: House,
) -> None:
    # curl -d without -H, and Python's urllib, say application/x-www-form-urlencoded; Home
    # Assistant's templates render numbers as text.
    for number, content_type in ((1, "application/x-www-form-urlencoded"), (2, "text/plain")):
        digits = PLAYED | {"item": EPISODE | {"season": "5", "number": str(number)}}
        answer = house.send(digits, **{"Content-Type": content_type})
        assert answer.status_code == 202, answer.text
    house.settle()
    assert [row[:3] for row in house.diary()] == [(BREAKING_BAD, 5, 1), (BREAKING_BAD, 5, 2)]


def test_a_box_whose_clock_is_wrong(house: House) -> None:
    # Days ahead: no zone is so far; the answer says to set a clock right.
    ahead = house.send(PLAYED | {"watched_at": "2099-01-01T00:00:00Z"})
    assert ahead.status_code == 400 and "set the clock" in ahead.json()["error"]
    # Minutes ahead (two clocks): dated as it arrives.
    arrived = house.clock()
    soon = datetime.fromtimestamp(arrived + 300, UTC).isoformat()
    house.post(PLAYED | {"watched_at": soon, "item": EPISODE | {"number": 1}})
    # A box without a real-time clock, booted at 1970 and not yet set: dated as it arrives,
    # not in 1970.
    house.shift(DAY)
    booted = house.clock()
    stop = kodi("stop", "alice", "kodi-bedroom", 2, 0.97, watched_at="1970-01-01T00:04:10+01:00")
    house.post(stop)
    house.settle()
    diary = house.diary()
    assert [row[:3] for row in diary] == [(BREAKING_BAD, 5, 1), (BREAKING_BAD, 5, 2)], diary
    assert near(diary[0][3], arrived) and near(diary[1][3], booted), diary


def test_a_time_without_a_zone_is_read_in_the_zone_that_puts_it_near_now(
    house: House, time_zone: Callable[[str], None]
) -> None:
    # Python's datetime.now().isoformat() and `date +%FT%T` write the household's clock
    # without its zone: read as UTC, a play in New York would be dated 4-5 hours early.
    time_zone("America/New_York")
    utc_now = house.clock()
    as_utc = datetime.fromtimestamp(utc_now, UTC).replace(tzinfo=None).isoformat()
    house.post(PLAYED | {"user": "bob", "watched_at": as_utc, "item": EPISODE | {"number": 1}})
    house.shift(3600)
    local_now = house.clock()
    as_local = datetime.fromtimestamp(local_now).isoformat()  # New York's clock, no zone
    house.post(PLAYED | {"user": "bob", "watched_at": as_local, "item": EPISODE | {"number": 2}})
    # Two days before, from a history script never seen posting a time near now: neither
    # reading is near now, and which one it writes is not known, so it asks for the zone.
    days_ago = datetime.fromtimestamp(local_now - 2 * DAY).isoformat(timespec="seconds")
    history_script = {"user": "bob", "player": "history-script"}
    refused = house.send(PLAYED | history_script | {"watched_at": days_ago})
    zoned = datetime.fromisoformat(days_ago).replace(tzinfo=ZoneInfo("America/New_York"))
    assert (refused.status_code, refused.json()["error"]) == (
        400,
        f"watched_at: {days_ago} has no time zone: add yours (e.g. {zoned.isoformat()}) or Z,"
        " or send no watched_at to date it as it arrives",
    )
    # With its zone, a time days before is taken as sent.
    then = local_now - 2 * DAY
    with_zone = datetime.fromtimestamp(then).astimezone().isoformat()
    house.post(PLAYED | {"user": "bob", "watched_at": with_zone, "item": EPISODE | {"number": 3}})
    house.settle()
    history = sorted(house.trakt.history(), key=lambda play: play.item.number)
    assert [play.item.number for play in history] == [1, 2, 3]
    assert all(
        near(play.watched_at, at)
        for play, at in zip(history, (utc_now, local_now, then), strict=True)
    )
    diary = sorted(house.diary(house.bob), key=lambda row: row[2])
    assert [row[:3] for row in diary] == [(BREAKING_BAD, 5, n) for n in (1, 2, 3)], diary
    assert all(
        near(row[3], at) for row, at in zip(diary, (utc_now, local_now, then), strict=True)
    ), diary


def test_a_sender_seen_writing_its_time_without_a_zone_has_its_late_posts_read_so(
    house: House, time_zone: Callable[[str], None], caplog: pytest.LogCaptureFixture
) -> None:
    # A script that queues its posts and sends them again once watchbridge is back (or posts
    # a stop late) sends a time without its zone hours old: neither reading is near now, but
    # its posts near now told which zone it writes, and that outlives a restart.
    time_zone("America/New_York")
    caplog.set_level("INFO", logger="watchbridge.webhooks")
    kodi_box = {"user": "bob", "player": "kodi-livingroom"}  # datetime.now().isoformat()
    laptop = {"user": "bob", "player": "laptop"}  # a script in a container left at UTC

    def local(at: float) -> str:
        return datetime.fromtimestamp(at).isoformat(timespec="seconds")

    def utc(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat(timespec="seconds")

    def played(sender: dict[str, str], number: int, watched_at: str) -> dict[str, Any]:
        return PLAYED | sender | {"watched_at": watched_at, "item": EPISODE | {"number": number}}

    now = house.clock()
    house.post(played(kodi_box, 1, local(now)))
    house.post(played(kodi_box, 2, local(now - 3 * 3600)))
    house.post(played(laptop, 3, utc(now)))
    house.post(played(laptop, 4, utc(now - 3 * 3600)))
    house.post(played(laptop, 5, utc(now - 2 * 3600)))  # learnt already: told once
    # Alice's script was never seen with a time near now: which zone it meant is not known.
    hours_ago = local(now - 3 * 3600)
    refused = house.send(PLAYED | {"watched_at": hours_ago})
    zoned = datetime.fromisoformat(hours_ago).replace(tzinfo=ZoneInfo("America/New_York"))
    assert (refused.status_code, refused.json()["error"]) == (
        400,
        f"watched_at: {hours_ago} has no time zone: add yours (e.g. {zoned.isoformat()}) or Z,"
        " or send no watched_at to date it as it arrives",
    )
    told = [r.getMessage() for r in caplog.records if "without a time zone in" in r.getMessage()]
    assert told == [
        "generic webhook: bob on kodi-livingroom sends watched_at without a time zone in the"
        " time where watchbridge runs (America/New_York): such a time it sends later is read"
        " so, even hours old (a post sent again)",
        "generic webhook: bob on laptop sends watched_at without a time zone in UTC: such a"
        " time it sends later is read so, even hours old (a post sent again)",
    ]
    house.stop()
    house.start()
    house.shift(3600)
    later = house.clock()
    house.post(played(kodi_box, 6, local(later - 3 * 3600)))
    house.post(played(laptop, 7, utc(later - 4 * 3600)))
    house.settle()
    dated = {
        1: now,
        2: now - 3 * 3600,
        3: now,
        4: now - 3 * 3600,
        5: now - 2 * 3600,
        6: later - 3 * 3600,
        7: later - 4 * 3600,
    }
    history = sorted(house.trakt.history(), key=lambda play: play.item.number)
    assert [play.item.number for play in history] == list(dated)
    assert all(near(play.watched_at, dated[play.item.number]) for play in history), history
    diary = sorted(house.diary(house.bob), key=lambda row: row[2])
    assert [row[:3] for row in diary] == [(BREAKING_BAD, 5, n) for n in dated], diary
    assert all(near(row[3], dated[row[2]]) for row in diary), diary
