"""Real viewing sequences, as Plex and Jellyfin post them, through the running app to the fake
Trakt: what Trakt ends up holding (plays and their dates, what it shows as watching).

The app's clock is the fake Trakt's, so "the next day" moves both."""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso
from tests.harness import AppThread, sign_in_trakt
from tests.ingest_samples import sample_json
from tests.test_webhooks_e2e import plex_multipart
from tests.unpaced import unpaced_while
from watchbridge.config import parse_config
from watchbridge.wiring import build_app, build_runtime


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    what a viewing becomes, not Trakt's pace."""
    with unpaced_while("trakt"):
        yield


SECRET = "viewing-sequences-secret"
HOUR = 3600.0
DAY = 24 * HOUR
MOVIE_MS = 6960000  # Arrival in the Plex samples
EPISODE_TICKS = 28560000000  # Ozymandias in the Jellyfin samples


@dataclass
class Home:
    thread: AppThread
    trakt: FakeTrakt
    db: Path

    def plex(self, event: str, percent: float | None, player: str = "tv") -> None:
        body = copy.deepcopy(sample_json("plex", "movie_media_stop.json"))
        body["event"] = event
        body["Player"] = {"local": True, "title": player, "uuid": f"uuid-{player}"}
        if percent is None:
            body["Metadata"].pop("viewOffset", None)
        else:
            body["Metadata"]["viewOffset"] = int(MOVIE_MS * percent / 100)
        content, content_type = plex_multipart(body, thumb=False)
        self._post("plex", content, content_type)

    def jellyfin(self, kind: str, percent: float, episode: int = 14, **fields: Any) -> None:
        name = {
            "start": "playback_start_episode.json",
            "progress": "playback_progress_episode_paused.json",
            "stop": "playback_stop_episode_completed.json",
        }[kind]
        body = copy.deepcopy(sample_json("jellyfin", name))
        body["PlaybackPositionTicks"] = int(EPISODE_TICKS * percent / 100)
        if kind == "progress":
            body["IsPaused"] = False
        if kind == "stop":
            body["PlayedToCompletion"] = False
        if episode != 14:
            body.update(
                ItemId=f"episode-{episode}",
                Name=f"Episode {episode}",
                EpisodeNumber=episode,
                Provider_tvdb=str(4637600 + episode),
                Provider_imdb=None,
                Provider_tmdb=None,
            )
        for key, value in fields.items():
            body[key] = value
        body = {k: v for k, v in body.items() if v is not None}
        self._post("jellyfin", json.dumps(body).encode(), "application/json")

    def generic(self, event: str, percent: float, played: bool = False) -> None:
        """Our own schema (a Kodi script, a Home Assistant automation), for Arrival."""
        body = {
            "event": event,
            "user": "alex",
            "player": "kodi",
            "position_ms": int(MOVIE_MS * percent / 100),
            "duration_ms": MOVIE_MS,
            "item": {"type": "movie", "ids": {"imdb": "tt2543164"}},
        }
        if played:
            body["played"] = True
        self._post("generic", json.dumps(body).encode(), "application/json")

    def _post(self, source: str, content: bytes, content_type: str) -> None:
        response = httpx.post(
            f"{self.thread.url}/webhooks/{source}/{SECRET}",
            content=content,
            headers={"content-type": content_type},
        )
        assert response.status_code in (200, 202), response.text

    def later(self, seconds: float) -> None:
        self.settle()
        self.trakt.advance(seconds)

    def settle(self) -> None:
        """Wait until the app delivered (or gave up on) what it queued."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sqlite3.connect(self.db) as conn:
                (busy,) = conn.execute(
                    "SELECT count(*) FROM outbox WHERE status IN ('pending', 'inflight')"
                ).fetchone()
            if not busy:
                return
            time.sleep(0.05)
        raise AssertionError(f"deliveries still pending: {self.outbox()}")

    def outbox(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(
                "SELECT id, action, status, last_error, payload FROM outbox ORDER BY id"
            ).fetchall()

    def plays(self) -> list[float]:
        self.settle()
        return sorted(parse_iso(h.watched_at) for h in self.trakt.history())


def _home(
    tmp_path: Path, trakt: FakeTrakt, threshold: int, jellyfin_users: str = "alex"
) -> Iterator[Home]:
    config = parse_config(
        f"""
server: {{webhook_secret: {SECRET}}}
storage: {{path: {tmp_path / "wb.db"}}}
delivery: {{retry_after: 1s}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}
profiles:
  me:
    users: {{plex: ["1"], jellyfin: [{jellyfin_users}], generic: [alex]}}
    completion_threshold: {threshold}
    accounts: {{trakt: {{}}}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config, clock=trakt.now)
    with AppThread(build_app(runtime)) as thread:
        sign_in_trakt(runtime.store, trakt, now=trakt.now())
        yield Home(thread, trakt, tmp_path / "wb.db")


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_movie("Arrival", 2016, imdb="tt2543164", tmdb=329865)
    show = fake.add_show("Breaking Bad", 2008, tvdb=81189, imdb="tt0903747", tmdb=1396)
    fake.add_episode(show, 5, 14, tvdb=4637661, imdb="tt2301451", tmdb=62161)
    for n in (15, 16):
        fake.add_episode(show, 5, n, tvdb=4637600 + n)
    return fake


@pytest.fixture
def home(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Home]:
    yield from _home(tmp_path, trakt, 90)


@pytest.fixture
def couple(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Home]:
    """Two Jellyfin accounts that share one Trakt account (one profile)."""
    yield from _home(tmp_path, trakt, 90, jellyfin_users="alex, sam")


@pytest.fixture
def strict(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Home]:
    yield from _home(tmp_path, trakt, 95)


@pytest.fixture
def lenient(tmp_path: Path, trakt: FakeTrakt) -> Iterator[Home]:
    yield from _home(tmp_path, trakt, 80)


def near(a: float, b: float, within: float = 120.0) -> bool:
    return abs(a - b) <= within


# ------------------------------------------------------------------------------- scenarios


def test_plex_stopped_at_85_then_finished_the_next_day_is_one_play_that_day(home: Home) -> None:
    home.plex("media.play", None)
    home.later(80 * 60)
    home.plex("media.stop", 85)
    assert home.plays() == [] and home.trakt.watching() is None
    home.later(DAY)
    home.plex("media.play", 85)
    home.later(5 * 60)
    home.plex("media.scrobble", None)
    finished = home.trakt.now()
    home.later(60)
    home.plex("media.stop", 99)
    plays = home.plays()
    assert len(plays) == 1 and near(plays[0], finished)
    assert home.trakt.watching() is None


def test_jellyfin_stopped_at_85_then_finished_the_next_day_is_one_play_that_day(
    home: Home,
) -> None:
    home.jellyfin("start", 0)
    for p in range(10, 86, 25):
        home.later(600)
        home.jellyfin("progress", p)
    home.jellyfin("stop", 85)
    home.later(DAY)
    home.jellyfin("start", 85)
    home.later(10)
    home.jellyfin("progress", 86)
    home.later(300)
    home.jellyfin("progress", 97)
    home.later(60)
    finished = home.trakt.now()
    home.jellyfin("stop", 99, PlayedToCompletion=True)
    plays = home.plays()
    assert len(plays) == 1 and near(plays[0], finished)
    assert home.trakt.watching() is None


def test_plex_scrobble_at_the_credits_then_stop_at_88_is_one_play(strict: Home) -> None:
    # Threshold 95: Plex's own scrobble at 90 % still counts.
    strict.plex("media.play", None)
    strict.later(90 * 60)
    strict.plex("media.scrobble", None)
    strict.later(60)
    strict.plex("media.stop", 91)
    assert len(strict.plays()) == 1
    assert strict.trakt.watching() is None


def test_jellyfin_skipping_the_credits_at_88_with_threshold_90_is_no_play(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(40 * 60)
    home.jellyfin("progress", 88)
    home.jellyfin("stop", 88)
    assert home.plays() == []
    assert home.trakt.watching() is None


def test_lenient_profile_counts_a_stop_at_85(lenient: Home) -> None:
    lenient.plex("media.play", None)
    lenient.later(80 * 60)
    lenient.plex("media.stop", 85)
    assert len(lenient.plays()) == 1
    assert lenient.trakt.watching() is None


def test_finished_then_seek_to_start_and_watch_again_is_two_plays(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("progress", 95)
    home.jellyfin("stop", 98, PlayedToCompletion=True)
    home.later(60)
    home.jellyfin("start", 0)
    for p in (20, 50, 80, 95):
        home.later(11 * 60)
        home.jellyfin("progress", p)
    home.jellyfin("stop", 99, PlayedToCompletion=True)
    assert len(home.plays()) == 2


def test_jellyfin_seek_back_a_few_minutes_near_the_end_is_one_play(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("progress", 93)
    home.later(20)
    home.jellyfin("progress", 85)  # seek back to rewatch a scene
    home.later(5 * 60)
    home.jellyfin("progress", 96)
    home.jellyfin("stop", 98, PlayedToCompletion=True)
    assert len(home.plays()) == 1
    assert home.trakt.watching() is None


def test_plex_paused_overnight_at_95_then_stopped_is_one_play_at_the_stop(home: Home) -> None:
    home.plex("media.play", None)
    home.later(90 * 60)
    home.plex("media.scrobble", None)
    home.later(5 * 60)
    home.plex("media.pause", 95)
    home.later(9 * HOUR)
    home.plex("media.stop", 95)
    plays = home.plays()
    assert len(plays) == 1
    assert home.trakt.watching() is None


def test_jellyfin_paused_overnight_at_95_then_stopped_is_one_play(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("progress", 95, IsPaused=True)
    for _ in range(3):
        home.later(3 * HOUR)
        home.jellyfin("progress", 95, IsPaused=True)
    home.later(HOUR)
    stopped = home.trakt.now()
    home.jellyfin("stop", 95, PlayedToCompletion=True)
    plays = home.plays()
    assert len(plays) == 1 and near(plays[0], stopped)
    assert home.trakt.watching() is None


def test_auto_play_next_with_the_first_stop_after_the_second_start_is_two_plays(
    home: Home,
) -> None:
    home.jellyfin("start", 0)
    for p in (30, 60, 90, 97):
        home.later(12 * 60)
        home.jellyfin("progress", p)
    home.jellyfin("start", 0, episode=15)
    home.jellyfin("progress", 0.2, episode=15)
    home.jellyfin("stop", 100, PlayedToCompletion=True)
    home.jellyfin("progress", 0.4, episode=15)
    home.later(10)
    home.jellyfin("progress", 0.8, episode=15)
    for p in (30, 60, 90, 97):
        home.later(12 * 60)
        home.jellyfin("progress", p, episode=15)
    home.jellyfin("stop", 100, episode=15, PlayedToCompletion=True)
    assert len(home.plays()) == 2
    numbers = sorted(h.item.number for h in home.trakt.history())  # type: ignore[union-attr]
    assert numbers == [14, 15]
    assert home.trakt.watching() is None


def test_auto_play_next_stopped_moments_into_the_next_leaves_nothing_watching(
    home: Home,
) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("progress", 97)
    home.jellyfin("start", 0, episode=15)
    home.jellyfin("stop", 100, PlayedToCompletion=True)
    home.later(20)
    home.jellyfin("progress", 1, episode=15)
    home.jellyfin("stop", 1, episode=15)
    assert len(home.plays()) == 1
    assert home.trakt.watching() is None


def test_plex_scrobble_after_its_stop_is_one_play(home: Home) -> None:
    home.plex("media.play", None)
    home.later(90 * 60)
    home.plex("media.stop", 96)
    home.plex("media.scrobble", None)
    assert len(home.plays()) == 1
    assert home.trakt.watching() is None


def test_jellyfin_stop_before_the_last_progress_leaves_nothing_watching(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("stop", 98, PlayedToCompletion=True)
    home.jellyfin("progress", 97)
    assert len(home.plays()) == 1
    assert home.trakt.watching() is None


def test_jellyfin_stop_below_the_end_before_its_last_progress_leaves_trakt_paused(
    home: Home,
) -> None:
    home.jellyfin("start", 0)
    home.later(20 * 60)
    home.jellyfin("stop", 40)
    home.jellyfin("progress", 40)
    assert home.plays() == []
    assert home.trakt.watching() is None


def test_jellyfin_player_crash_at_92_then_resumed_the_next_day_is_one_play(home: Home) -> None:
    home.jellyfin("start", 0)
    for p in (30, 60, 92):
        home.later(14 * 60)
        home.jellyfin("progress", p)
    # the client crashes: no stop. Next day it resumes where it was and finishes.
    home.later(DAY)
    home.jellyfin("start", 92)
    home.later(3 * 60)
    finished = home.trakt.now()
    home.jellyfin("stop", 99, PlayedToCompletion=True)
    plays = home.plays()
    assert len(plays) == 1 and near(plays[0], finished)
    assert home.trakt.watching() is None


def test_plex_crash_after_the_scrobble_is_one_play(home: Home) -> None:
    home.plex("media.play", None)
    home.later(90 * 60)
    home.plex("media.scrobble", None)
    home.later(DAY)
    home.plex("media.play", 93)
    home.later(5 * 60)
    home.plex("media.stop", 99)
    assert len(home.plays()) == 1
    assert home.trakt.watching() is None


def test_jellyfin_mark_played_right_after_watching_is_one_play(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("stop", 98, PlayedToCompletion=True)
    home.later(30)
    home.jellyfin(
        "stop",
        0,
        NotificationType="UserDataSaved",
        SaveReason="TogglePlayed",
        Played=True,
        PlayedToCompletion=None,
        IsPaused=None,
        DeviceId=None,
        DeviceName=None,
        ClientName=None,
        Id=None,
    )
    assert len(home.plays()) == 1


def test_jellyfin_mark_unplayed_then_played_right_after_watching_is_one_play(home: Home) -> None:
    home.jellyfin("start", 0)
    home.later(45 * 60)
    home.jellyfin("stop", 98, PlayedToCompletion=True)
    for played in (False, True):
        home.later(30)
        home.jellyfin(
            "stop",
            0,
            NotificationType="UserDataSaved",
            SaveReason="TogglePlayed",
            Played=played,
            PlayedToCompletion=None,
            IsPaused=None,
            DeviceId=None,
            DeviceName=None,
            ClientName=None,
            Id=None,
        )
    assert len(home.plays()) == 1


def test_plex_counted_at_82_by_an_80_profile_then_finished_the_next_day_is_one_play(
    lenient: Home,
) -> None:
    lenient.plex("media.play", None)
    lenient.later(95 * 60)
    lenient.plex("media.stop", 82)
    (counted,) = lenient.plays()
    lenient.later(DAY)
    lenient.plex("media.play", 82)
    lenient.later(12 * 60)  # Plex's scrobble as this playback passes 90 %
    lenient.plex("media.scrobble", None)
    lenient.later(10 * 60)
    lenient.plex("media.stop", 100)
    assert lenient.plays() == [counted]
    assert lenient.trakt.watching() is None


def test_jellyfins_own_played_at_93_counts_for_a_95_profile(strict: Home) -> None:
    strict.jellyfin("start", 0)
    strict.later(44 * 60)
    strict.jellyfin("stop", 93, PlayedToCompletion=True)
    assert len(strict.plays()) == 1


def test_a_stop_at_93_the_server_did_not_count_is_no_play_for_a_95_profile(strict: Home) -> None:
    strict.jellyfin("start", 0)
    strict.later(44 * 60)
    strict.jellyfin("stop", 93)
    assert strict.plays() == []
    assert strict.trakt.playback() and strict.trakt.playback()[0].progress < 80


def test_plex_resumed_hours_after_a_pause_is_one_play_when_finished(home: Home) -> None:
    home.plex("media.play", None)
    home.later(40 * 60)
    home.plex("media.pause", 40)
    home.later(6 * HOUR)
    home.plex("media.resume", 40)
    home.settle()
    assert home.trakt.watching() is not None
    home.later(60 * 60)
    finished = home.trakt.now()
    home.plex("media.scrobble", None)
    home.later(8 * 60)
    home.plex("media.stop", 99)
    plays = home.plays()
    assert len(plays) == 1 and near(plays[0], finished)
    assert home.trakt.watching() is None


def test_plex_resumed_at_82_then_watched_again_from_the_start_is_a_second_play(
    lenient: Home,
) -> None:
    # The day after a viewing counted at 82 %, Plex offers to resume there: the user does,
    # seeks back to the start (Plex posts nothing for a seek) and watches it all again. The
    # scrobble's own position, a whole viewing's time after the start, says it was played.
    lenient.plex("media.play", None)
    lenient.later(95 * 60)
    lenient.plex("media.stop", 82)
    (counted,) = lenient.plays()
    lenient.later(DAY)
    lenient.plex("media.play", 82)
    lenient.later(105 * 60)
    again = lenient.trakt.now()
    lenient.plex("media.scrobble", 90)
    lenient.later(10 * 60)
    lenient.plex("media.stop", 100)
    plays = lenient.plays()
    assert len(plays) == 2 and plays[0] == counted and near(plays[1], again)
    assert lenient.trakt.watching() is None


def test_plex_resumed_at_82_then_watched_again_from_the_start_with_a_pause_is_a_second_play(
    lenient: Home,
) -> None:
    # As above, with a pause midway through the second viewing: a viewing's time is counted
    # from the resumed playback's start, not from its last pause or resume.
    lenient.plex("media.play", None)
    lenient.later(95 * 60)
    lenient.plex("media.stop", 82)
    (counted,) = lenient.plays()
    lenient.later(DAY)
    lenient.plex("media.play", 82)
    lenient.later(30 * 60)
    lenient.plex("media.pause", 25)
    lenient.later(5 * 60)
    lenient.plex("media.resume", 25)
    lenient.later(75 * 60)
    again = lenient.trakt.now()
    lenient.plex("media.scrobble", 90)
    lenient.later(10 * 60)
    lenient.plex("media.stop", 100)
    plays = lenient.plays()
    assert len(plays) == 2 and plays[0] == counted and near(plays[1], again)


def test_plex_sought_back_to_the_start_in_the_credits_and_watched_again_is_a_second_play(
    home: Home,
) -> None:
    # Scrobbled, then sought back to the beginning during the credits (Plex posts nothing for
    # a seek) and watched again, paused once midway: the second scrobble is a second play.
    home.plex("media.play", None)
    home.later(105 * 60)
    home.plex("media.scrobble", 91)
    (first,) = home.plays()
    home.later(26 * 60)
    home.plex("media.pause", 20)
    home.later(5 * 60)
    home.plex("media.resume", 20)
    home.later(82 * 60)
    again = home.trakt.now()
    home.plex("media.scrobble", 91)
    home.later(8 * 60)
    home.plex("media.stop", 99)
    plays = home.plays()
    assert len(plays) == 2 and plays[0] == first and near(plays[1], again)
    assert home.trakt.watching() is None


def test_a_generic_player_paused_for_hours_in_the_credits_it_resumed_is_one_play(
    home: Home,
) -> None:
    # Stopped in the credits (played), resumed there a minute later, paused for the evening,
    # then resumed and stopped at the end (played again): one viewing. The hours it stood
    # paused are no time spent playing it again from the start.
    home.generic("start", 0)
    home.later(105 * 60)
    home.generic("stop", 91, played=True)
    (first,) = home.plays()
    home.later(60)
    home.generic("start", 91)
    home.later(60)
    home.generic("pause", 92)
    home.later(3 * HOUR)
    home.generic("resume", 92)
    home.later(4 * 60)
    home.generic("stop", 99, played=True)
    assert home.plays() == [first]


def test_one_jellyfin_playback_shared_by_two_accounts_of_one_profile_is_one_play(
    couple: Home,
) -> None:
    # pitfalls/webhooks.md §1: the plugin sends one request per user of a shared session
    # (SyncPlay, or a second user added to the playback): the same device and item, twice.
    sam = {"UserId": "5b0c7d2e9f3a4e61b8d7c6a5f4e3d2c1", "NotificationUsername": "sam"}
    for user in ({}, sam):
        couple.jellyfin("start", 0, **user)
    for p in (30, 60, 95):
        couple.later(15 * 60)
        for user in ({}, sam):
            couple.jellyfin("progress", p, **user)
    couple.settle()
    finished = couple.trakt.now()
    # Trakt is down as it ends: both completions reach it late, as history adds, where
    # Trakt's own scrobble window no longer turns the second one away.
    couple.trakt.fail_next(3, 503, route="POST /scrobble/stop")  # one call and its retries
    for user in ({}, sam):
        couple.jellyfin("stop", 98, PlayedToCompletion=True, **user)
    deadline = time.monotonic() + 10
    while not any(r.path == "/scrobble/stop" for r in couple.trakt.requests):
        assert time.monotonic() < deadline, "no stop was tried"
        time.sleep(0.02)
    couple.trakt.advance(20 * 60)
    plays = couple.plays()
    assert len(plays) == 1 and near(plays[0], finished)
    assert couple.trakt.watching() is None


# A stop that overtakes its own start: Plex's media.play carries a poster and Jellyfin posts
# each event from its own handler, so a playback stopped seconds after it began may arrive
# stop first. The late start must not show on Trakt as watching for the item's whole runtime.


def test_plex_stop_overtaking_its_play_leaves_nothing_watching(home: Home) -> None:
    home.plex("media.stop", 0.5)
    home.plex("media.play", None)
    home.settle()
    assert home.trakt.watching() is None
    assert home.plays() == []


def test_jellyfin_stop_overtaking_its_start_leaves_nothing_watching(home: Home) -> None:
    home.jellyfin("stop", 0.3)
    home.jellyfin("start", 0)
    home.settle()
    assert home.trakt.watching() is None
    assert home.plays() == []


def test_a_resume_stopped_at_once_whose_play_comes_after_the_stop_leaves_nothing_watching(
    home: Home,
) -> None:
    home.plex("media.play", None)
    home.later(40 * 60)
    home.plex("media.stop", 40)
    home.later(HOUR)
    home.plex("media.stop", 40.1)  # resumed, stopped seconds later: its play still on its way
    home.plex("media.play", 40)
    home.settle()
    assert home.trakt.watching() is None
    assert home.plays() == []


def test_playing_again_from_the_start_seconds_after_a_stop_shows_as_watching(home: Home) -> None:
    home.plex("media.play", None)
    home.later(30)
    home.plex("media.stop", 0.4)
    home.later(5)
    home.plex("media.play", None)  # the wrong version picked, played again from the start
    home.settle()
    assert home.trakt.watching() is not None


def test_a_jellyfin_playback_going_on_after_an_overtaken_start_shows_as_watching(
    home: Home,
) -> None:
    home.jellyfin("stop", 0.3)
    home.jellyfin("start", 0)
    home.later(5)
    home.jellyfin("start", 0.3)  # played again where it stopped
    home.settle()
    assert home.trakt.watching() is not None


def test_a_resume_overtaken_by_the_stop_seconds_later_leaves_nothing_watching(home: Home) -> None:
    home.plex("media.play", None)
    home.later(40 * 60)
    home.plex("media.pause", 40)
    home.later(HOUR)
    home.plex("media.stop", 40.1)  # resumed, then stopped seconds later
    home.plex("media.resume", 40)  # sent before the stop
    home.settle()
    assert home.trakt.watching() is None
    assert home.plays() == []
