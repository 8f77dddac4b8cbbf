"""Walkthrough: an anime fan's Jellyfin library to AniList and Serializd, no Trakt.

The running app (real HTTP) takes Jellyfin webhooks; the series' ids are read from the fake
Jellyfin, the anime mapping datasets are the pinned samples served by the fake dataset hosts.
Each test asserts what the fake AniList and Serializd hold at the end, not what was sent."""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import watchbridge, write_config
from tests.ingest_samples import sample_json
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, anilist_service
from watchbridge.model import ref_from_dict

SECRET = "anime-walkthrough-secret-01"
ALEX = "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6"
DAY = 86400.0

# Jellyfin series ids, their provider ids, and the TMDB seasons Serializd lists for them.
SERIES: dict[str, tuple[str, dict[str, str], dict[int, int]]] = {
    "aot": ("Attack on Titan", {"Tvdb": "267440", "Tmdb": "1429"}, {1: 25, 2: 12, 3: 22, 4: 28}),
    "spy": ("SPY x FAMILY", {"Tvdb": "405920", "Tmdb": "120089"}, {1: 25, 2: 12}),
    "frieren": ("Frieren", {"Tvdb": "424536", "Tmdb": "209867"}, {1: 38}),
    "rezero": ("Re:ZERO", {"Tvdb": "305089", "Tmdb": "65942"}, {1: 50}),
    "kaguya": ("Kaguya-sama", {"Tvdb": "354198", "Tmdb": "83121"}, {0: 12, 1: 12, 2: 12}),
    "onepiece": ("One Piece", {"Tvdb": "81797", "Tmdb": "37854"}, {0: 50, 1: 61, 2: 16}),
    "dandadan": ("Dan Da Dan", {"Tmdb": "240411"}, {1: 12}),
}
# AniList titles: id -> (episodes, format)
MEDIA = {
    110277: (16, "TV"),  # AoT Final Season Part 1: TVDB/TMDB S4E1-16
    131681: (12, "TV"),  # Part 2: S4E17-28
    146984: (1, "SPECIAL"),  # Final Chapters: TVDB S4E29-30
    140960: (12, "TV"),  # Spy x Family: S1E1-12
    142838: (13, "TV"),  # Spy x Family Part 2: S1E13-25
    154587: (28, "TV"),  # Frieren: S1E1-28
    182255: (10, "TV"),  # Frieren 2026: TVDB S2, TMDB S1E29-
    21355: (25, "TV"),
    108632: (13, "TV"),
    119661: (12, "TV"),  # Re:Zero S2 Part 2: TVDB S2E14-25, TMDB S1E39-50
    164: (1, "MOVIE"),  # Princess Mononoke: TMDB movie 128
    141902: (1, "MOVIE"),  # One Piece Film: Red: TVDB S0E46
    151384: (4, "MOVIE"),  # Kaguya First Kiss: TVDB S0E9-12, TMDB movie 997317
}


class Walk(RunningHouse):
    """The running app with its fakes, on one clock that `shift` moves."""

    def __init__(
        self,
        config: Path,
        anilist: FakeAniList,
        serializd: FakeSerializd,
        jellyfin: FakeJellyfin,
        clock: Clock,
    ) -> None:
        super().__init__(config, clock, (anilist, serializd))
        self.anilist, self.serializd, self.jellyfin = anilist, serializd, jellyfin

    def post(self, body: dict[str, Any]) -> None:
        answer = httpx.post(f"{self.app.url}/webhooks/jellyfin/{SECRET}", json=body)
        assert answer.status_code == 202, answer.text

    def watch(self, show: str, season: int, number: int, **ids: str) -> None:
        """An episode played through in Jellyfin: its start, 24 minutes, its stop."""
        self.post(playback_start(episode_stop(show, season, number, 0, **ids), self.clock()))
        self.shift(24 * 60)
        self.post(episode_stop(show, season, number, self.clock(), **ids))

    def shift(self, seconds: float) -> None:
        """Move the app's and the services' clocks by `seconds` (days pass between viewings)."""
        super().shift(seconds)
        self.jellyfin.ahead += seconds

    def unmatched(self) -> str:
        """What `watchbridge anime unmatched` says."""
        said = watchbridge("anime", "unmatched", "--config", str(self.config))
        assert said.returncode == 0, said.stderr
        return said.stdout

    def waiting(self, target: str) -> dict[str, str]:
        """The plays for `target` waiting for a match: the item as the user sees it -> why."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute(
                "SELECT payload, last_error FROM outbox WHERE target = ? AND status = 'pending'"
                " AND last_error LIKE 'unmatched:%'",
                (target,),
            ).fetchall()
        return {ref_from_dict(json.loads(p)["item"]).describe(): error for p, error in rows}

    def entry(self, media: int) -> tuple[str, int, int] | None:
        found = self.anilist.snapshot().get(media)
        if found is None:
            return None
        return found["status"], found["progress"], found["repeat"]

    def logged(self, show: str) -> list[tuple[int, int]]:
        """Serializd's diary of the show: (season, episode) per entry, in watch order."""
        _, ids, _ = SERIES[show]
        tmdb = int(ids["Tmdb"])
        seasons = {s.id: s.number for s in self.serializd.shows[tmdb].seasons.values()}
        rows = [r for r in self.serializd.diary() if r.show_id == tmdb]
        rows.sort(key=lambda r: r.watched_at)
        return [(seasons[r.season_id], r.episode_number) for r in rows if r.season_id]

    def tmdb_episode_id(self, show: str, season: int, number: int) -> str:
        tmdb = int(SERIES[show][1]["Tmdb"])
        return str(self.serializd.shows[tmdb].seasons[season].first_episode_id + number)

    def outbox(self) -> list[tuple[str, ...]]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return list(
                conn.execute(
                    "SELECT target, action, status, COALESCE(last_error, ''), payload FROM outbox"
                )
            )


def stamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def episode_stop(
    show: str,
    season: int,
    number: int,
    at: float,
    *,
    tmdb: str | None = None,
    tvdb: str | None = None,
    aired: str | None = None,
) -> dict[str, Any]:
    """Jellyfin's PlaybackStop of an episode played to the end at `at`, numbered as the
    library orders it, with the episode's own provider ids as its metadata plugins gave."""
    body = sample_json("jellyfin", "playback_stop_episode_completed.json")
    for key in ("Provider_imdb", "Provider_tmdb", "Provider_tvdb"):
        body.pop(key, None)
    title = SERIES[show][0]
    body |= {
        "ItemId": f"{show}{season:02d}{number:04d}".ljust(32, "0"),
        "Name": f"{title} {season}x{number}",
        "SeriesName": title,
        "SeriesId": f"{show}".ljust(32, "f"),
        "SeasonNumber": season,
        "EpisodeNumber": number,
        "Genres": "Animation, Anime",
        "UtcTimestamp": stamp(at),
        "Timestamp": stamp(at),
        "PremiereDate": aired or "",
    }
    if tmdb:
        body["Provider_tmdb"] = tmdb
    if tvdb:
        body["Provider_tvdb"] = tvdb
    return body


def playback_start(stop: dict[str, Any], at: float) -> dict[str, Any]:
    """The PlaybackStart of the same item at `at`, from its beginning."""
    return stop | {
        "NotificationType": "PlaybackStart",
        "PlaybackPositionTicks": 0,
        "PlayedToCompletion": False,
        "UtcTimestamp": stamp(at),
        "Timestamp": stamp(at),
    }


def mark_played(body: dict[str, Any], at: float) -> dict[str, Any]:
    """The same item marked played by hand (UserDataSaved, TogglePlayed) at `at`."""
    return body | {
        "NotificationType": "UserDataSaved",
        "SaveReason": "TogglePlayed",
        "Played": True,
        "PlayCount": 1,
        "LastPlayedDate": stamp(at),
        "UtcTimestamp": stamp(at),
        "Timestamp": stamp(at),
        "PlayedToCompletion": False,
    }


def start_fakes(
    start_fake: Callable[[FakeServer], FakeServer],
    server: Literal["jellyfin", "emby"],
    clock: Clock,
) -> tuple[FakeAniList, FakeDatasets, FakeSerializd, FakeJellyfin]:
    """AniList without its rate limit, the mapping datasets' hosts, Serializd and the media
    `server`, started; AniList's and the datasets' Date headers on the app's `clock`, as the
    fakes' own clocks are when a test moves it."""
    anilist = start_fake(FakeAniList())
    lists = start_fake(FakeDatasets())
    serializd = start_fake(FakeSerializd())
    media = start_fake(FakeJellyfin(server))
    assert isinstance(anilist, FakeAniList) and isinstance(lists, FakeDatasets)
    assert isinstance(serializd, FakeSerializd) and isinstance(media, FakeJellyfin)
    anilist.limit = anilist.burst_limit = 100_000
    anilist.date_clock = anilist.now  # type: ignore[method-assign]
    lists.date_clock = clock  # type: ignore[method-assign]
    return anilist, lists, serializd, media


@pytest.fixture
def walk(
    tmp_path: Path,
    start_fake: Callable[[FakeServer], FakeServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Walk]:
    unpaced(monkeypatch, "anilist", "serializd")
    clock = Clock()
    anilist, lists, serializd, jellyfin = start_fakes(start_fake, "jellyfin", clock)
    for media, (episodes, kind) in MEDIA.items():
        anilist.add_media(media, episodes=episodes, format=kind)
    serializd.diary_order = "newest"
    for key, (title, ids, seasons) in SERIES.items():
        jellyfin.add_series(key.ljust(32, "f"), title, **ids)
        serializd.add_show(int(ids["Tmdb"]), title, seasons)
    email, password, _ = ALICE
    path = write_config(
        tmp_path,
        f"services:\n{anilist_service(anilist, lists)}"
        f'  jellyfin: {{url: "{jellyfin.url}", api_key: "{API_KEY}", catch_up: false}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        "profiles:\n  me:\n    users: {jellyfin: [alex]}\n"
        f'    accounts: {{anilist: {{token: "{anilist.issue_token()}"}},'
        f' serializd: {{email: "{email}", password: "{password}"}}}}\n',
        secret=SECRET,
    )
    with Walk(path, anilist, serializd, jellyfin, clock) as walk:
        yield walk


def test_a_multi_cour_season_watched_across_its_cour_boundary(walk: Walk) -> None:
    # Spy x Family: one TVDB/TMDB season 1 of 25, two AniList entries (12 + 13).
    now = time.time()
    for number in range(1, 15):
        at = now - (15 - number) * 3600
        tmdb = walk.tmdb_episode_id("spy", 1, number)
        walk.post(episode_stop("spy", 1, number, at, tmdb=tmdb))
    walk.settle()
    assert walk.entry(140960) == ("COMPLETED", 12, 0)
    assert walk.entry(142838) == ("CURRENT", 2, 0)
    assert walk.logged("spy") == [(1, n) for n in range(1, 15)]


def weekly(walk: Walk, show: str, season: int, start: str, first: int = 1) -> None:
    """TMDB's air dates of the season on Serializd: weekly from `start`, from episode `first`."""
    began = datetime.fromisoformat(start).timestamp()
    tmdb = int(SERIES[show][1]["Tmdb"])
    listed = walk.serializd.shows[tmdb].seasons[season]
    for n in range(first, listed.episode_count + 1):
        day = datetime.fromtimestamp(began + (n - first) * 7 * DAY, UTC)
        listed.aired[n] = day.date().isoformat()


def test_a_season_in_tvdb_order_reaches_the_entry_and_tmdb_episode_it_is(walk: Walk) -> None:
    # Frieren in a TheTVDB-ordered library: TVDB S1 is one entry (28), TVDB S2 the next
    # (TMDB runs it on as S1E29-). The TVDB plugin gives episodes their TVDB id only.
    weekly(walk, "frieren", 1, "2023-09-29")
    weekly(walk, "frieren", 1, "2026-01-16", first=29)  # TVDB's S2, two years on
    now = time.time()
    for number in (27, 28):
        aired = walk.serializd.shows[209867].seasons[1].aired[number]
        walk.post(
            episode_stop(
                "frieren", 1, number, now - 3 * DAY + number, tvdb=f"9{number}", aired=aired
            )
        )
    for number in (1, 2, 3):
        aired = walk.serializd.shows[209867].seasons[1].aired[28 + number]
        walk.post(
            episode_stop(
                "frieren", 2, number, now - 3600 + number * 60, tvdb=f"8{number}", aired=aired
            )
        )
    walk.settle()
    assert walk.entry(154587) == ("COMPLETED", 28, 0)  # a new entry at its last episode
    assert walk.entry(182255) == ("CURRENT", 3, 0)
    assert walk.logged("frieren") == [(1, 27), (1, 28), (1, 29), (1, 30), (1, 31)]


def test_attack_on_titan_final_season_across_its_parts_and_final_chapters(walk: Walk) -> None:
    # One TVDB/TMDB season 4 of 28 for two AniList parts (16 + 12), watched across the cour
    # boundary; Part 1 already on the list at 13.
    walk.anilist.add_entry(110277, status="CURRENT", progress=13)
    for number in (14, 15, 16, 17, 18):
        walk.watch("aot", 4, number, tmdb=walk.tmdb_episode_id("aot", 4, number))
        walk.settle()
        walk.shift(3600)
    assert walk.entry(110277) == ("COMPLETED", 16, 0)
    assert walk.entry(131681) == ("CURRENT", 2, 0)
    # The Final Chapters, TheTVDB's S4E29-30 (one AniList episode), which the TVDB plugin
    # names by their TVDB ids only, with no air date: TMDB's S4 ends at 28, so Serializd has
    # no such episodes. They wait as unmatched, saying why, and are never logged as sent.
    for number in (29, 30):
        walk.watch("aot", 4, number, tvdb=f"{9000 + number}")
    walk.settle()
    assert set(walk.anilist.snapshot()) == {110277, 131681, 146984}
    assert walk.entry(146984) == ("COMPLETED", 1, 0)
    assert walk.entry(131681) == ("CURRENT", 2, 0)
    assert walk.logged("aot") == [(4, n) for n in (14, 15, 16, 17, 18)]
    assert not any(show == 1429 and n > 28 for (show, _, n) in walk.serializd.ticks())
    waiting = walk.waiting("serializd")
    assert sorted(waiting) == ["Attack on Titan S04E29", "Attack on Titan S04E30"], waiting
    for said in waiting.values():
        assert said.startswith("unmatched: Attack on Titan S04E"), said
        assert "past the end of season 4 as TMDB (and so Serializd) numbers it" in said, said
        assert "(28 episodes)" in said and "log it on Serializd by hand" in said, said
    listed = watchbridge("unmatched", "--config", str(walk.config))
    assert listed.returncode == 0, listed.stderr
    assert "Attack on Titan S04E29" in listed.stdout, listed.stdout
    assert "past the end of season 4" in listed.stdout, listed.stdout


def test_specials_and_movies(walk: Walk) -> None:
    now = time.time()
    walk.post(
        episode_stop("onepiece", 0, 46, now - 7200, tmdb=walk.tmdb_episode_id("onepiece", 0, 46))
    )
    for number in (9, 10, 11, 12):
        walk.post(
            episode_stop(
                "kaguya",
                0,
                number,
                now - 3600 + number * 60,
                tmdb=walk.tmdb_episode_id("kaguya", 0, number),
            )
        )
    movie = sample_json("jellyfin", "playback_stop_episode_completed.json")
    for key in (
        "Provider_imdb",
        "Provider_tmdb",
        "Provider_tvdb",
        "SeriesId",
        "SeriesName",
        "SeasonNumber",
        "EpisodeNumber",
    ):
        movie.pop(key, None)
    movie |= {
        "ItemType": "Movie",
        "Name": "Princess Mononoke",
        "Year": 1997,
        "ItemId": "m" * 32,
        "Provider_tmdb": "128",
        "Provider_imdb": "tt0119698",
        "UtcTimestamp": stamp(now - 600),
        "Timestamp": stamp(now - 600),
        "Genres": "Animation, Anime",
    }
    walk.post(movie)
    walk.settle()
    assert walk.entry(164) == ("COMPLETED", 1, 0)
    assert walk.entry(151384) == ("COMPLETED", 4, 0)
    # Film Red is TheTVDB's One Piece S0E46; TMDB numbers One Piece's specials otherwise and
    # nothing in the play says which: listed, never guessed.
    assert walk.entry(141902) is None
    listed = walk.unmatched()
    assert "'One Piece'  [unmapped]  show 37854: S0E46" in listed
    # ... with the entry TheTVDB's numbering would make it, as for other unmapped plays.
    assert "If your library numbers episodes in TVDB order, this is AniList 141902" in listed, (
        listed
    )
    assert walk.logged("kaguya") == [(0, n) for n in (9, 10, 11, 12)]
    assert walk.logged("onepiece") == [(0, 46)]


def test_a_rewatch_out_of_order_plays_and_a_batch_marked_played(walk: Walk) -> None:
    tmdb = {n: walk.tmdb_episode_id("spy", 1, n) for n in range(1, 26)}
    # The first viewing, an episode a day, episode 5 before 4.
    walk.shift(-30 * DAY)
    order = [1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11, 12]
    for number in order:
        walk.watch("spy", 1, number, tmdb=tmdb[number])
        walk.settle()
        walk.shift(DAY)
    assert walk.entry(140960) == ("COMPLETED", 12, 0)
    # A rewatch a week later, two episodes an evening.
    walk.shift(7 * DAY)
    for number in range(1, 13):
        walk.watch("spy", 1, number, tmdb=tmdb[number])
        walk.settle()
        assert walk.entry(140960) == (
            ("REPEATING", number, 0) if number < 12 else ("COMPLETED", 12, 1)
        )
        walk.shift(DAY / 2 if number % 2 else 3600)
    # Part 2 marked played at once in Jellyfin: the webhooks come in a burst, in no order.
    marks = list(range(13, 26))
    random.Random(3).shuffle(marks)
    now = walk.clock()
    for number in marks:
        walk.post(mark_played(episode_stop("spy", 1, number, now, tmdb=tmdb[number]), now))
    walk.settle()
    assert walk.entry(142838) == ("COMPLETED", 13, 0)
    logged = walk.logged("spy")
    assert logged[:24] == [(1, n) for n in order] + [(1, n) for n in range(1, 13)]
    assert sorted(logged[24:]) == [(1, n) for n in range(13, 26)]  # one diary entry each
    rewatches = [r for r in walk.serializd.diary() if r.is_rewatch]
    assert len(rewatches) == 12


def test_what_the_datasets_cannot_map_is_listed_never_written(walk: Walk) -> None:
    now = time.time()
    walk.post(
        episode_stop("dandadan", 1, 1, now - 600, tmdb=walk.tmdb_episode_id("dandadan", 1, 1))
    )
    walk.post(episode_stop("spy", 2, 1, now - 300, tmdb=walk.tmdb_episode_id("spy", 2, 1)))
    walk.settle()
    assert walk.anilist.snapshot() == {}
    listed = walk.unmatched()
    assert "S2E1" in listed and "'Dan Da Dan' (tmdb 240411): 1 play" in listed, listed
    assert walk.logged("spy") == [(2, 1)]
    assert walk.logged("dandadan") == [(1, 1)]
