"""Walkthrough: the first day, with years of history on every side.

Alex has used Plex for five years (a few hundred plays: rewatches of one episode on other
days, a movie watched three times, ratings) and has a Trakt account another scrobbler filled
(most of the same plays, some minutes or hours off; plays Plex never saw; other ratings on a
few items), a Serializd diary of part of the shows and an AniList list with an anime. Alex
installs watchbridge with the README's links (Plex ⇄ Trakt, Trakt ⇄ Serializd, AniList ⇄
Trakt), signs in everywhere and starts it: the first syncs wait for review (`first_run`
defaults to `dry-run`), Alex reviews them and runs `watchbridge sync --yes`. What is asserted
is what the fakes hold at the end, what each service was asked, and what the status tells."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.anilist import FakeAniList
from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.fakes.serializd import iso as serializd_iso
from tests.fakes.serializd import parse_iso as serializd_parse
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, Rating, key_of, parse_iso
from tests.fakes.trakt import iso as trakt_iso
from tests.harness import wait_for, watchbridge, write_config
from tests.unpaced import unpaced
from tests.walkthrough import Clock, RunningHouse, anilist_service
from watchbridge import wiring
from watchbridge.scheduler import SyncScheduler

DAY, HOUR, MINUTE = 86400.0, 3600.0, 60.0
YEAR = 365 * DAY
LINKS = ("plex-trakt", "trakt-serializd", "anilist-trakt")
AOT, AOT_P2, AOT_FIRST = 1429, 131681, 16  # AniList's Part 2 is TMDB S4E17-28
# (tmdb, title, year, seasons); the Plex ratingKeys: show "{tmdb}", episodes below
SHOWS = [
    (1396, "Breaking Bad", 2008, {1: 7, 2: 13, 3: 13}),
    (1399, "Game of Thrones", 2011, {1: 10, 2: 10, 3: 10}),
    (60059, "Better Call Saul", 2015, {1: 10, 2: 10}),
    (66732, "Stranger Things", 2016, {1: 8, 2: 9, 3: 8}),
    (95396, "Severance", 2022, {1: 9}),
]
ON_SERIALIZD = (1396, 60059)  # the shows Alex logs on Serializd too
MOVIES = [
    (603, "The Matrix", 1999),
    (329865, "Arrival", 2016),
    (949, "Heat", 1995),
    (27205, "Inception", 2010),
    (680, "Pulp Fiction", 1994),
    (155, "The Dark Knight", 2008),
]
TRIPLE = 329865  # Arrival: watched three times


@dataclass(frozen=True)
class Item:
    key: str  # Plex ratingKey
    tmdb: int  # the movie's, or the show's
    season: int | None = None
    number: int | None = None


@dataclass
class Story:
    """The five years: each viewing (item, when) and where it is recorded."""

    plex: list[tuple[Item, float]] = field(default_factory=list)
    # viewings Trakt holds, at its own time (other scrobblers write it minutes/hours off)
    trakt: list[tuple[Item, float, float]] = field(default_factory=list)  # item, viewing, logged
    trakt_only: list[tuple[Item, float]] = field(default_factory=list)
    serializd: list[tuple[Item, float]] = field(default_factory=list)
    ratings: dict[Item, tuple[tuple[float, float], tuple[float, float] | None]] = field(
        default_factory=dict
    )  # item -> ((plex value 0-10, at), (trakt value, at) or None)

    def viewings(self) -> list[tuple[Item, float]]:
        """Every viewing once: Plex's and Trakt's own."""
        return self.plex + self.trakt_only


def episode_key(tmdb: int, season: int, number: int) -> str:
    return f"{tmdb}{season:02d}{number:03d}"


def build_story(now: float, seed: int = 20260501) -> Story:
    rng = random.Random(seed)
    story = Story()
    episodes = [
        Item(episode_key(tmdb, s, n), tmdb, s, n)
        for tmdb, _, _, seasons in SHOWS
        for s, count in seasons.items()
        for n in range(1, count + 1)
    ]
    films = [Item(str(tmdb), tmdb) for tmdb, _, _ in MOVIES]
    begun = now - 5 * YEAR
    # Each show binged in order from a day in the five years; whole minutes, as Plex keeps.
    for tmdb, *_ in SHOWS:
        at = begun + rng.uniform(0, 4 * YEAR)
        for item in [e for e in episodes if e.tmdb == tmdb]:
            at += rng.uniform(0.5, 30) * HOUR
            story.plex.append((item, float(int(at))))
    for film in films:
        story.plex.append((film, float(int(begun + rng.uniform(0, 5 * YEAR)))))
    # Rewatches on other days: a few episodes, and Arrival twice more.
    for item in rng.sample(episodes, 6):
        first = next(at for i, at in story.plex if i == item)
        story.plex.append((item, float(int(min(first + rng.uniform(40, 300) * DAY, now - DAY)))))
    arrival = next(at for i, at in story.plex if i.tmdb == TRIPLE)
    for later in (arrival - 2 * YEAR, arrival - 400 * DAY):
        story.plex.append((Item(str(TRIPLE), TRIPLE), float(int(later))))
    # Trakt, filled by another scrobbler: 80 % of Plex's plays, some minutes or hours off.
    for item, at in story.plex:
        if rng.random() < 0.8:
            off = rng.choice([0, 0, 0, 2 * MINUTE, -3 * MINUTE, 40 * MINUTE, -2 * HOUR, 5 * HOUR])
            story.trakt.append((item, at, at + off))
    # Plays only on Trakt: watched again elsewhere (on a plane, at a friend's).
    for item in rng.sample(episodes, 3) + rng.sample(films, 2):
        story.trakt_only.append((item, float(int(now - rng.uniform(30, 900) * DAY))))
    # Serializd: the shows Alex logs there, part of their plays (logged the next day, dated).
    for item, at in story.plex:
        if item.tmdb in ON_SERIALIZD and rng.random() < 0.6:
            story.serializd.append((item, at))
    # Ratings: some in Plex only, a few on both sides with another value.
    rated = rng.sample(films, 4) + rng.sample(episodes, 6)
    for n, item in enumerate(rated):
        plex_at = now - rng.uniform(10, 1000) * DAY
        value = float(rng.randint(5, 10))
        trakt_side = None
        if n % 2 == 0:
            trakt_at = now - rng.uniform(10, 1000) * DAY
            trakt_side = (float(rng.randint(3, 10)), trakt_at)
            if trakt_side[0] == value:
                trakt_side = (value - 1, trakt_at)
        story.ratings[item] = ((value, plex_at), trakt_side)
    return story


class House(RunningHouse):
    def __init__(
        self,
        config: Path,
        clock: Clock,
        plex: FakePlex,
        trakt: FakeTrakt,
        serializd: FakeSerializd,
        anilist: FakeAniList,
        story: Story,
    ) -> None:
        # Signed in to Trakt before the start, as the README's set-up goes
        # (`watchbridge auth trakt`): the first runs begin at once.
        super().__init__(config, clock, (trakt, serializd, anilist), trakt=trakt)
        self.plex, self.trakt, self.serializd, self.anilist = plex, trakt, serializd, anilist
        self.story = story

    def requests(self) -> dict[str, Counter[str]]:
        """Requests each fake has had so far, by method."""
        fakes = {"plex": self.plex, "trakt": self.trakt, "serializd": self.serializd}
        fakes |= {"anilist": self.anilist}
        return {name: Counter(r.method for r in fake.requests) for name, fake in fakes.items()}

    def cli(self, *args: str) -> str:
        said = watchbridge(*args, "--config", str(self.config))
        assert said.returncode == 0, said.stdout + said.stderr
        return said.stdout


@pytest.fixture
def house(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], monkeypatch: pytest.MonkeyPatch
) -> Iterator[House]:
    unpaced(monkeypatch, "anilist", "serializd", "trakt")
    monkeypatch.setattr(wiring, "SyncScheduler", lambda: SyncScheduler(first_delay=0))
    clock = Clock()
    now = clock()
    story = build_story(now)
    plex = start_fake(FakePlex())
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    anilist, lists = start_fake(FakeAniList()), start_fake(FakeDatasets())
    assert isinstance(plex, FakePlex) and isinstance(trakt, FakeTrakt)
    assert isinstance(serializd, FakeSerializd) and isinstance(anilist, FakeAniList)
    assert isinstance(lists, FakeDatasets)
    seed(plex, trakt, serializd, anilist, story, now)
    email, password, _ = ALICE
    path = write_config(
        tmp_path,
        "services:\n"
        f'  plex: {{url: "{plex.url}", token: "{TOKEN}"}}\n'
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt.url}", auth_url: "{trakt.url}"}}\n'
        f'  serializd: {{api_url: "{serializd.url}"}}\n'
        f"{anilist_service(anilist, lists)}"
        "profiles:\n"
        "  alex:\n"
        '    users: {plex: ["1"]}\n'
        "    accounts:\n"
        "      plex: {}\n"
        "      trakt: {}\n"
        f'      serializd: {{email: "{email}", password: "{password}"}}\n'
        f'      anilist: {{token: "{anilist.issue_token()}"}}\n'
        "links:\n"
        + "".join(f"  {name}: {{services: [{name.replace('-', ', ')}]}}\n" for name in LINKS),
    )
    with House(path, clock, plex, trakt, serializd, anilist, story) as house:
        yield house


def seed(
    plex: FakePlex,
    trakt: FakeTrakt,
    serializd: FakeSerializd,
    anilist: FakeAniList,
    story: Story,
    now: float,
) -> None:
    trakt_items: dict[Item, Any] = {}
    for tmdb, title, year, seasons in SHOWS:
        plex.add_show(str(tmdb), title, year, [f"tmdb://{tmdb}"])
        show = trakt.add_show(title, year, tmdb=tmdb, seasons=seasons)
        serializd.add_show(tmdb, title, seasons)
        for s, count in seasons.items():
            for n in range(1, count + 1):
                item = Item(episode_key(tmdb, s, n), tmdb, s, n)
                plex.add_episode(item.key, str(tmdb), s, n, [f"tmdb://{tmdb}{s:02d}{n:03d}"])
                trakt_items[item] = show.episode(s, n)
    for tmdb, title, year in MOVIES:
        plex.add_movie(str(tmdb), title, year, [f"tmdb://{tmdb}"])
        trakt_items[Item(str(tmdb), tmdb)] = trakt.add_movie(title, year, tmdb=tmdb)
    aot = trakt.add_show("Attack on Titan", 2013, tmdb=AOT, seasons={4: 28})
    serializd.add_show(AOT, "Attack on Titan", {4: 28})
    anilist.limit = anilist.burst_limit = 100_000
    anilist.add_media(AOT_P2, episodes=12, format="TV")
    # Part 2 finished two years ago; Trakt has its first 6 episodes from then.
    finished = now - 2 * YEAR
    anilist.add_entry(AOT_P2, status="COMPLETED", progress=12, updated_at=int(finished))
    for n in range(1, 7):
        trakt.add_history(aot.episode(4, AOT_FIRST + n), trakt_iso(finished - (12 - n) * HOUR))
    for item, at in story.plex:
        plex.watch(item.key, at)
    for item, _, logged in story.trakt:
        trakt.add_history(trakt_items[item], trakt_iso(logged))
    for item, at in story.trakt_only:
        trakt.add_history(trakt_items[item], trakt_iso(at))
    for item, at in story.serializd:
        assert item.season is not None
        serializd.log_entry(
            None,
            item.tmdb,
            item.season,
            item.number,
            backdate=serializd_iso(at),
            date_added=serializd_iso(at + DAY),
        )
    for item, ((value, at), on_trakt) in story.ratings.items():
        plex.rate(item.key, value, at)
        if on_trakt is not None:
            media = trakt_items[item]
            trakt.user.ratings[key_of(media)] = Rating(
                media, int(on_trakt[0]), trakt_iso(on_trakt[1])
            )


def test_the_first_day_copies_every_viewing_once_with_its_date(house: House) -> None:
    story = house.story
    # Started: each link's first run (a minute after the start; here at once) waits for
    # Alex's review, and the status says how to give it.
    wait_for(lambda: review_waits(house) == set(LINKS), timeout=20)
    status = house.cli("status")
    for link in LINKS:
        assert f"this is the first sync of links.{link}: review the plan" in status, status
    assert written(house) == Counter()
    reviewed = house.cli("sync", "--dry-run")
    assert written(house) == Counter()  # the review writes nothing anywhere
    not_on_trakt = [
        (i, at) for i, at in story.plex if not any(at == v for j, v, _ in story.trakt if j == i)
    ]
    assert f"add {len(not_on_trakt)} play(s) to trakt (new on plex)" in reviewed, reviewed
    house.cli("sync", "--yes")
    house.settle()

    # Trakt: each viewing once (the other scrobbler's play, minutes or hours off, stands for
    # Plex's), a rewatch on another day twice; Plex's copies at Plex's time, never "now".
    trakt = trakt_plays(house)
    for item, at in story.viewings():
        assert len(near(trakt.get(item, []), at, 6 * HOUR)) == 1, (item, at, trakt.get(item))
    for item, at in not_on_trakt:
        assert near(trakt[item], at, MINUTE), (item, at, trakt[item])
    assert sum(len(v) for k, v in trakt.items() if k.tmdb != AOT) == len(story.viewings())
    # Serializd: each viewing of a show once, at its time (Alex's own logs kept, nothing
    # logged beside them), no viewing logged twice.
    shows = [(i, at) for i, at in story.viewings() if i.season is not None]
    diary = diary_plays(house)
    for item, at in shows:
        assert len(near(diary.get(item, []), at, 6 * HOUR)) == 1, (item, at, diary.get(item))
    assert sum(len(v) for k, v in diary.items() if k.tmdb != AOT) == len(shows)
    for item, at in story.serializd:
        assert at in diary[item]
    # Plex: the viewings Trakt alone had are marked watched (Plex dates a mark "now": it
    # cannot back-date); Arrival, watched three times, holds its three views, no fourth.
    for item, at in story.trakt_only:
        views = [v for i, v in story.plex if i == item]
        newer = not views or at > max(views)  # an older one counts as there: not marked
        assert house.plex.user_state(item.key).get("viewCount") == len(views) + newer, item
    assert house.plex.user_state(str(TRIPLE))["viewCount"] == 3
    assert len(house.plex.history_of(str(TRIPLE))) == 3
    # Ratings (README, links: `prefer: newest-wins`): on a first sync the newer rating wins
    # where both sides rated an item; a rating one side alone has is copied.
    for item, want in winning_ratings(story).items():
        assert house.plex.user_state(item.key).get("userRating") == want, item
        assert trakt_rating(house, item) == want, item
        if item.season is not None:
            assert serializd_rating(house, item) == want, item
    # AniList: its whole Part 2 on Trakt (6 plays were there; the other 6 added, the last
    # dated by the entry's last change, the others "date unknown": AniList keeps no dates).
    aot = {k.number: v for k, v in trakt_plays(house).items() if k.tmdb == AOT}
    assert sorted(aot) == list(range(AOT_FIRST + 1, AOT_FIRST + 13))
    assert all(len(v) == 1 for v in aot.values())
    assert sorted(n for n, (at,) in aot.items() if at != at) == list(
        range(AOT_FIRST + 7, AOT_FIRST + 12)
    )
    assert house.anilist.snapshot()[AOT_P2]["progress"] == 12

    # The first day did not flood anyone: Trakt's reads within its 500 per 5 minutes (the
    # whole day's, in seconds here), its writes batched (the client sends one a second).
    asked = house.requests()
    assert asked["trakt"]["GET"] < 450 and asked["trakt"]["POST"] <= 10, asked
    # Serializd: a request per diary entry written, and the reads; AniList: a handful.
    logged = len(house.serializd.diary()) - len(story.serializd)
    assert sum(asked["serializd"].values()) <= logged + 100, asked
    assert sum(asked["anilist"].values()) <= 20, asked

    # The status says what the first sync did, per link, in words.
    status = house.cli("status")
    line = next(t for t in status.splitlines() if t.startswith("  plex-trakt: ok"))
    assert f"trakt: {len(not_on_trakt)} play(s) queued to add" in line, line
    assert f"plex: {len(story.trakt_only)} play(s) queued to add" in line, line

    # A run right after (not the daily full read): what AniList ⇄ Trakt added to Trakt,
    # dated two years back or undated, reaches Serializd, as another link's writes are news
    # to Trakt ⇄ Serializd: the dated play as a diary entry, the undated ones as episodes
    # ticked watched. Nothing more is written anywhere else.
    before, writes = house.requests(), written(house)
    house.cli("sync")
    house.settle()
    logged = {k.number: v for k, v in diary_plays(house).items() if k.tmdb == AOT}
    assert sorted(logged) == [*range(AOT_FIRST + 1, AOT_FIRST + 7), AOT_FIRST + 12]
    assert all(len(v) == 1 for v in logged.values())
    assert logged[AOT_FIRST + 12] == [pytest.approx(aot[AOT_FIRST + 12][0], abs=1)]  # as on Trakt
    ticked = {n for show, _, n in house.serializd.ticks() if show == AOT}
    assert ticked == set(range(AOT_FIRST + 1, AOT_FIRST + 13))
    assert written(house)["trakt"] == writes["trakt"] and written(house)["plex"] == writes["plex"]
    after = house.requests()
    for service, counted in after.items():
        assert sum((counted - before[service]).values()) <= 20, (service, after, before)

    # Then a run writes nothing, a question per side; nor does the daily full read.
    before, writes = house.requests(), written(house)
    again = house.cli("sync")
    quiet = again.count("plan: nothing to do") + again.count("nothing changed on either side")
    assert quiet == len(LINKS), again
    assert written(house) == writes
    after = house.requests()
    for service, counted in after.items():
        assert sum((counted - before[service]).values()) <= 10, (service, after, before)
    house.cli("sync", "--full")
    house.settle()
    assert written(house) == writes


def written(house: House) -> Counter[str]:
    """The writes each fake has had: Trakt's and Serializd's POSTs, Plex's marks and ratings,
    AniList's mutations."""
    counted: Counter[str] = Counter()
    for r in house.trakt.requests:
        if r.method == "POST" and r.path.startswith("/sync/"):
            counted["trakt"] += 1
    for r in house.serializd.requests:
        if (
            r.method == "POST"
            and not r.path.endswith(("/login", "/validatetoken"))
            and "add" in r.path
        ):
            counted["serializd"] += 1
    for r in house.plex.requests:
        if r.path in ("/:/scrobble", "/:/rate"):
            counted["plex"] += 1
    return counted


def winning_ratings(story: Story) -> dict[Item, float]:
    """What each rated item is rated everywhere after the first sync: the newer rating."""
    won = {}
    for item, ((value, at), on_trakt) in story.ratings.items():
        won[item] = on_trakt[0] if on_trakt is not None and on_trakt[1] > at else value
    return won


def trakt_rating(house: House, item: Item) -> float | None:
    for rating in house.trakt.ratings():
        media = rating.item
        tmdb = media.tmdb if media.kind == "movie" else media.show.tmdb
        if media.kind == "movie" and item.season is None and tmdb == item.tmdb:
            return float(rating.rating)
        if media.kind == "episode" and (tmdb, media.season, media.number) == (
            item.tmdb,
            item.season,
            item.number,
        ):
            return float(rating.rating)
    return None


def serializd_rating(house: House, item: Item) -> float | None:
    """The episode's rating on Serializd: its newest rated diary row's (0-10 half stars)."""
    season = house.serializd.shows[item.tmdb].seasons[item.season].id
    rated = [
        r
        for r in house.serializd.diary()
        if (r.show_id, r.season_id, r.episode_number) == (item.tmdb, season, item.number)
        and r.rating
    ]
    return float(rated[-1].rating) if rated else None


def near(times: list[float], at: float, within: float) -> list[float]:
    return [t for t in times if abs(t - at) <= within]


def trakt_plays(house: House) -> dict[Item, list[float]]:
    """Trakt's plays by item: their watched_at (NaN: unknown)."""
    found: dict[Item, list[float]] = {}
    for entry in house.trakt.history():
        media = entry.item
        if media.kind == "movie":
            item = Item(str(media.tmdb), media.tmdb)
        else:
            tmdb = media.show.tmdb
            item = Item(
                episode_key(tmdb, media.season, media.number), tmdb, media.season, media.number
            )
        at = parse_iso(entry.watched_at) if entry.watched_at else float("nan")
        found.setdefault(item, []).append(at)
    return found


def diary_plays(house: House) -> dict[Item, list[float]]:
    """Serializd's diary entries of episodes by item: their watch dates."""
    found: dict[Item, list[float]] = {}
    for review in house.serializd.diary():
        if not review.is_log:  # a rating alone: no viewing
            continue
        show = house.serializd.shows[review.show_id]
        season = show.season_by_id(review.season_id) if review.season_id else None
        assert season is not None and review.episode_number is not None
        item = Item(
            episode_key(show.id, season.number, review.episode_number),
            show.id,
            season.number,
            review.episode_number,
        )
        found.setdefault(item, []).append(serializd_parse(review.watched_at))
    return found


def review_waits(house: House) -> set[str]:
    """The links whose last run waits for the first sync's review."""
    status = httpx.get(f"{house.app.url}/api/status").json()
    return {r["link"] for r in status["links"] if r["outcome"] == "needs-review"}
