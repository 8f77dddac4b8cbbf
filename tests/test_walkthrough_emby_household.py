"""Walkthrough: an Emby household without Trakt, two people to Serializd, one also to AniList.

The running app (real HTTP) takes Emby's own webhooks (multipart, as Emby sends them by
default, or JSON); show ids and the catch-up are read from the fake Emby; what is asserted is
what the fake Serializd and AniList hold at the end."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, BREAKING_BAD_PROVIDER_IDS, EMBY_SERIES, FakeJellyfin
from tests.fakes.serializd import ALICE, FakeSerializd, User
from tests.harness import wait_for, write_config
from tests.ingest_samples import sample_json
from tests.test_walkthrough_anime_jellyfin import start_fakes
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, anilist_service, read_afresh
from watchbridge import wiring
from watchbridge.catchup import CatchUp

SECRET = "emby-household-secret-0123456789"
ALEX = "6c1f0a9e2b7d4f3c8e5a1d0b9c8f7e6d"  # the samples' Emby user
SAM = "2e4a6c8e0b1d3f5a7c9e1b3d5f7a9c0b"
BREAKING_BAD = 1396
FRIEREN_SERIES = "61001"
FRIEREN_TMDB = 209867
DAY = 86400.0


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


class House(RunningHouse):
    """The household's watchbridge with its fakes; `stop` and `start` it again (an update, a
    reboot) on the same config and database."""

    def __init__(
        self,
        config: Path,
        anilist: FakeAniList,
        serializd: FakeSerializd,
        emby: FakeJellyfin,
        sam: User,
        clock: Clock,
    ) -> None:
        super().__init__(config, clock, (anilist, serializd))
        self.anilist, self.serializd, self.emby, self.sam = anilist, serializd, emby, sam

    def post(self, body: dict[str, Any], *, multipart: bool = True) -> httpx.Response:
        """Post as Emby does: its default multipart form (the JSON in part `data`), or JSON."""
        url = f"{self.app.url}/webhooks/emby/{SECRET}"
        if multipart:
            boundary = f"----EmbyBoundary{uuid.uuid4().hex[:16]}"
            raw = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="data"\r\n'
                f"Content-Type: application/json\r\n\r\n{json.dumps(body)}\r\n--{boundary}--\r\n"
            ).encode()
            headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
            return httpx.post(url, content=raw, headers=headers)
        return httpx.post(url, json=body)

    def diary(self, user: User | None = None) -> list[tuple[int, int, int, str]]:
        """A Serializd diary (alex's by default): (show, season, episode, date) by date."""
        found = []
        for r in self.serializd.diary(user):
            show = self.serializd.shows[r.show_id]
            season = show.season_by_id(r.season_id) if r.season_id else None
            found.append(
                (r.show_id, season.number if season else -1, r.episode_number or 0, r.watched_at)
            )
        return sorted(found, key=lambda row: row[3])


def episode(
    event: str,
    user: tuple[str, str],
    at: float,
    *,
    series: str = EMBY_SERIES,
    show: str = "Breaking Bad",
    season: int = 5,
    number: int = 14,
    ids: dict[str, str] | None = None,
    position: float = 0.98,
    session: str = "3d2c1b0a9f8e7d6c5b4a39281706f5e4",
    aired: str = "",
    genres: list[str] | None = None,
    playlist: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """An Emby webhook about an episode, from the samples' stop."""
    body = copy.deepcopy(sample_json("emby", "playback_stop_episode_completed.json"))
    item = body["Item"]
    item.update(
        Id=f"{series}{season:02d}{number:03d}",
        Name=f"{show} {season}x{number}",
        SeriesName=show,
        SeriesId=series,
        ParentIndexNumber=season,
        IndexNumber=number,
        ProviderIds=ids if ids is not None else {"Tvdb": f"46{season:02d}{number:03d}"},
        PremiereDate=aired,
        Genres=genres or ["Drama"],
    )
    body.update(Event=event, Date=stamp(at), User={"Name": user[0], "Id": user[1]})
    body["Session"]["Id"] = session
    info: dict[str, Any] = {
        "PositionTicks": int(position * item["RunTimeTicks"]),
        "PlaylistIndex": playlist[0],
        "PlaylistLength": playlist[1],
    }
    if event == "playback.stop":
        info["PlayedToCompletion"] = position >= 0.9
    body["PlaybackInfo"] = info
    if event.startswith("item."):
        del body["Session"], body["PlaybackInfo"]
    return body


@pytest.fixture
def house(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[House]:
    unpaced(monkeypatch, "anilist", "serializd")
    clock = Clock()
    anilist, lists, serializd, emby = start_fakes(start_fake, "emby", clock)
    emby.clock = clock  # Emby reads the app's clock: `shift` moves it too
    anilist.add_media(154587, episodes=28, format="TV")
    anilist.add_media(182255, episodes=10, format="TV")
    serializd.seed_reference_catalogue()
    serializd.add_show(FRIEREN_TMDB, "Frieren", {1: 38})
    sam = serializd.add_user("sam@example.com", "sams password", "sam_tv")
    emby.add_series(EMBY_SERIES, "Breaking Bad", **BREAKING_BAD_PROVIDER_IDS)
    emby.add_series(FRIEREN_SERIES, "Frieren", Tvdb="424536", Tmdb=str(FRIEREN_TMDB))
    emby.add_user(ALEX, "alex")
    emby.add_user(SAM, "sam")
    email, password, _ = ALICE
    path = write_config(
        tmp_path,
        f"services:\n{anilist_service(anilist, lists)}"
        f'  emby: {{url: "{emby.url}", api_key: "{API_KEY}"}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        "profiles:\n"
        "  alex:\n    users: {emby: [alex]}\n"
        f'    accounts: {{anilist: {{token: "{anilist.issue_token()}"}},'
        f' serializd: {{email: "{email}", password: "{password}"}}}}\n'
        "  sam:\n    users: {emby: [sam]}\n"
        f'    accounts: {{serializd: {{token: "{serializd.issue_token(sam)}"}}}}\n',
        secret=SECRET,
    )
    # The catch-up's rounds every tenth of a second, not every 15 minutes: the test moves the
    # clock, and waits for the rounds it needs (`read_afresh`).
    monkeypatch.setattr(wiring, "CatchUp", lambda: CatchUp(every=0.1))
    with House(path, anilist, serializd, emby, sam, clock) as house:
        yield house


ALEX_USER = ("alex", ALEX)
SAM_USER = ("sam", SAM)


def frieren_aired(house: House) -> dict[int, str]:
    """TMDB's air dates of Frieren on Serializd: weekly from 2023-09-29 (TVDB's and AniList's
    first season, E1-28), and again from 2026-01-16 (TVDB's S2, which TMDB runs on as E29-)."""
    listed = house.serializd.shows[FRIEREN_TMDB].seasons[1]
    for first, start in ((1, "2023-09-29"), (29, "2026-01-16")):
        began = datetime.fromisoformat(start).timestamp()
        for n in range(first, first + (28 if first == 1 else 10)):
            day = datetime.fromtimestamp(began + (n - first) * 7 * DAY, UTC)
            listed.aired[n] = day.date().isoformat()
    return listed.aired


def mark(
    user: tuple[str, str], at: float, count: int, *, played: bool = True, **kw: Any
) -> dict[str, Any]:
    """Emby's item.markplayed (or markunplayed) of an episode, with the user data it leaves."""
    body = episode("item.markplayed" if played else "item.markunplayed", user, at, **kw)
    data: dict[str, Any] = {
        "PlaybackPositionTicks": 0,
        "PlayCount": count,
        "IsFavorite": False,
        "Played": played,
    }
    if played:
        data["LastPlayedDate"] = stamp(at)
    body["Item"]["UserData"] = data
    return body


def near(logged: str, at: float) -> bool:
    """Whether a Serializd date is `at`, to the seconds it keeps."""
    return abs(datetime.fromisoformat(logged).timestamp() - at) < 5


def test_two_people_each_land_once_on_their_own_serializd_dated_when_they_finished(
    house: House,
) -> None:
    clock = house.clock
    # alex: an episode started, paused, resumed and played to the end (Emby's default
    # multipart form), and the next one auto-played: its start before the first one's stop,
    # in the same session.
    house.post(episode("playback.start", ALEX_USER, clock(), position=0.0, playlist=(0, 2)))
    house.shift(1200)
    house.post(episode("playback.pause", ALEX_USER, clock(), position=0.42, playlist=(0, 2)))
    house.shift(300)
    house.post(episode("playback.unpause", ALEX_USER, clock(), position=0.42, playlist=(0, 2)))
    house.shift(1500)
    finished = clock()
    house.post(
        episode("playback.start", ALEX_USER, clock(), number=15, position=0.0, playlist=(1, 2))
    )
    house.post(episode("playback.stop", ALEX_USER, clock(), playlist=(0, 2)))
    house.shift(2800)
    then = clock()
    house.post(episode("playback.stop", ALEX_USER, then, number=15, playlist=(1, 2)))
    # sam, on another device (JSON, Emby 4.9's other content type): a play, then marks by
    # hand: played (Emby's own after the play), unplayed, played again, and a favourite.
    sam = {"session": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", "number": 10}
    house.post(episode("playback.start", SAM_USER, clock(), position=0.0, **sam), multipart=False)
    house.shift(2880)
    sams = clock()
    house.post(episode("playback.stop", SAM_USER, sams, **sam), multipart=False)
    for count, played in ((1, True), (0, False), (1, True)):
        house.shift(60)
        house.post(mark(SAM_USER, clock(), count, played=played, number=10))
    favourite = mark(SAM_USER, clock(), 1, number=10)
    favourite["Event"] = "item.rate"
    favourite["Item"]["UserData"]["IsFavorite"] = True
    assert house.post(favourite).json()["queued"] == 0  # no stars: nothing to send
    house.settle()
    alex = house.diary()
    assert [row[:3] for row in alex] == [(BREAKING_BAD, 5, 14), (BREAKING_BAD, 5, 15)]
    assert near(alex[0][3], finished) and near(alex[1][3], then), (alex, stamp(finished))
    sams_diary = house.diary(house.sam)
    assert [row[:3] for row in sams_diary] == [(BREAKING_BAD, 5, 10)]
    assert near(sams_diary[0][3], sams)


def test_an_anime_episode_emby_numbers_by_tvdb_season_reaches_its_anilist_entry(
    house: House,
) -> None:
    # Frieren in a TheTVDB-ordered Emby library: TVDB's S2 is AniList's second entry and
    # TMDB's (Serializd's) S1E29-; Emby names the episodes by their TVDB ids alone.
    aired = frieren_aired(house)
    for number in (1, 2):
        numbered = {
            "series": FRIEREN_SERIES,
            "show": "Frieren",
            "season": 2,
            "number": number,
            "ids": {"Tvdb": f"8{number}"},
            "genres": ["Animation", "Anime"],
            "aired": f"{aired[28 + number]}T00:00:00.0000000Z",
            "session": f"{number}" * 32,
        }
        house.post(episode("playback.start", ALEX_USER, house.clock(), position=0.0, **numbered))
        house.shift(1440)
        house.post(episode("playback.stop", ALEX_USER, house.clock(), **numbered))
        house.shift(600)
    house.settle()
    entries = house.anilist.snapshot()
    assert list(entries) == [182255]
    assert (entries[182255]["status"], entries[182255]["progress"]) == ("CURRENT", 2)
    assert [row[:3] for row in house.diary()] == [(FRIEREN_TMDB, 1, 29), (FRIEREN_TMDB, 1, 30)]


def test_plays_while_watchbridge_was_down_are_caught_up_from_emby_once(house: House) -> None:
    aired = frieren_aired(house)
    wait_for(lambda: _read_accounts(house) == 2)  # the first reads: a baseline
    house.stop()
    began = house.clock() + 60
    house.emby.add_episode("5180513", EMBY_SERIES, 5, 13, Tvdb="4637660")
    house.emby.play(SAM, "5180513", began)
    house.emby.add_episode("6100201", FRIEREN_SERIES, 2, 1, Tvdb="81")
    house.emby.items["6100201"]["PremiereDate"] = f"{aired[29]}T00:00:00.0000000Z"
    house.emby.play(ALEX, "6100201", began + 1800)
    house.shift(3600)
    house.start()
    read_afresh(house.emby, SAM)  # the plays found
    house.shift(16 * 60)  # a play found waits a read for a webhook on its way
    wait_for(lambda: len(house.serializd.diary(house.sam)) == 1)
    house.settle()
    read_afresh(house.emby, SAM)  # later rounds copy nothing more
    house.settle()
    sams = house.diary(house.sam)
    assert [row[:3] for row in sams] == [(BREAKING_BAD, 5, 13)] and near(sams[0][3], began)
    alex = house.diary()
    assert [row[:3] for row in alex] == [(FRIEREN_TMDB, 1, 29)] and near(alex[0][3], began + 1800)
    assert house.anilist.snapshot()[182255]["progress"] == 1


def _read_accounts(house: House) -> int:
    """How many accounts the catch-up has read (its cursor of each)."""
    with contextlib.closing(sqlite3.connect(house.db)) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM cursors WHERE name LIKE 'catch_up:%'"
        ).fetchone()
    return int(count)


EMBY_TEST = {  # Emby 4.9's Send Test (before 4.9.0.37 the body was empty)
    "Title": "Test Notification",
    "Description": "Test Notification Description",
    "Event": "system.notificationtest",
    "Severity": "Info",
    "Server": {"Name": "emby-nas", "Id": "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "Version": "4.9.1.80"},
}


@pytest.mark.parametrize("empty", [False, True], ids=["emby-4.9", "empty-body"])
def test_embys_send_test_shows_on_the_status_page(house: House, empty: bool) -> None:
    # Step 6 of Emby's setup: Send Test. It carries no play; the page (and the 405 a browser
    # gets at the URL) tells the user to look there for it.
    url = f"{house.app.url}/webhooks/emby/{SECRET}"
    if empty:
        answer = httpx.post(url, content=b"", headers={"content-type": "application/json"})
    else:
        answer = house.post(EMBY_TEST | {"Date": stamp(house.clock())})
    assert answer.status_code == 200, answer.text
    page = httpx.get(f"{house.app.url}/").text
    assert "Test notification from emby received" in page, page
    assert "its URL and secret work" in page
    assert re.search(
        r"All is well: no webhook accepted yet; test notification \d+ s ago \(from emby\)", page
    )
    status = httpx.get(f"{house.app.url}/api/status").json()
    (tested,) = status["test_notifications"]
    assert tested["source"] == "emby" and abs(tested["at"] - house.clock()) < 60
    assert status["last_webhooks"] == []  # no play came: not taken for a webhook
