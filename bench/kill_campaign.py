"""A kill -9 campaign against delivery: nothing acknowledged is lost or sent twice.

The real service (`python -m watchbridge serve`) delivers to an in-process fake Trakt while
generic webhooks arrive (dated plays of movies and episodes, which go out as
`POST /sync/history` batches, scrobble start/stop pairs, ratings). Each round the fake is made
slow (answers held 0.5-3 s) or drops connections after doing the work, and the service is
stopped at a random moment by one of:

- `kill`: SIGKILL at a random time while webhooks flow;
- `history`: SIGKILL while a `POST /sync/history` is held at the fake (its plays written);
- `startup`: SIGKILL 0.05-1.5 s after the process starts (the recovery of in-flight rows);
- `term`: SIGTERM at a random time (the container stop); afterwards no row may be in flight,
  and with answers held less than the stop's grace no new mark of a send that may have landed.

At the end the fake is healthy, the service drains, and the fake must hold every acknowledged
play exactly once at its time (to the minute; a scrobble's at its stop, within 2 minutes),
every rating, and no dead letter.

`--targets` adds the households without Trakt: Serializd (the show's episodes and an anime's,
one diary entry tagged `#watchbridge` per play, dated to the minute) and AniList (an anime
watched in order by one more sender, twice over and on: its progress reaches the last
episode acknowledged, no save lowers it, each pass completes once and the rewatch count is
the passes finished). Their fakes fail as Trakt's do (slow, dropped after the work), and
answer 429 or 5xx; `history` rounds hold a write at one of them.

`--sync-rounds N` (Trakt and Serializd) adds a link `trakt-serializd` and plays on Trakt only;
N rounds `kill -9` a `watchbridge sync` (and about every other one the service beside it) at
a random moment while webhooks flow. Then, the senders stopped and the service drained
(`--drain-timeout`) and stopped, one sync runs to its end and delivers what it queued: every
Trakt play once on Serializd at its time, nothing copied back (the final check fails on a
play of the link missing, doubled or misdated on either side). A killed run holds the link
for `RUN_LEASE` (5 minutes): syncs started meanwhile are refused (exit 1, said so), and the
last one is tried again until the lease is over.

    .venv/bin/python bench/kill_campaign.py [--rounds 30] [--targets trakt,serializd,anilist]
        [--sync-rounds 8] [--drain-timeout 180] [--seed N] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.anilist import FakeAniList  # noqa: E402
from tests.fakes.anime_datasets import FakeDatasets  # noqa: E402
from tests.fakes.base import FakeServer, Request, _Knob  # noqa: E402
from tests.fakes.serializd import ALICE, FakeSerializd  # noqa: E402
from tests.fakes.trakt import CLIENT_ID, FakeTrakt, parse_iso  # noqa: E402
from tests.harness import free_port, sign_in_trakt  # noqa: E402

from watchbridge.services.serializd import DEFAULT_TAG  # noqa: E402
from watchbridge.store import UNKNOWN_OUTCOME, Store  # noqa: E402

SECRET = "campaign-secret-1"
MOVIES, SEASONS, EPISODES = 800, 8, 40
SHOW_TVDB, SHOW_TMDB = 81189, 1396
# An anime the pinned mapping samples know: AniList 21355 is TMDB 65942 S1E1-25 (Re:ZERO).
ANIME_TMDB, ANIME_ANILIST, ANIME_EPISODES = 65942, 21355, 25
ANIME_PLAYS, ANIME_SPACING = 150, 2400.0  # 40 minutes apart, the first 5 days ago
# Plays on Trakt alone, for the link to copy to Serializd (`--sync-rounds`).
SYNC_TMDB, SYNC_SEASONS, SYNC_EPISODES = 3_000_001, 4, 15
SERIALIZD_WRITE = "/api/show/reviews/add"
ANILIST_SAVE = b"SaveMediaListEntry"


@dataclass
class Expected:
    """What the acknowledged webhooks promise the fakes will hold."""

    plays: list[tuple[str, float, float]] = field(default_factory=list)  # key, at, slack
    ratings: dict[str, int] = field(default_factory=dict)  # key -> rating
    sent_unanswered: set[str] = field(default_factory=set)  # keys: may land at most once
    anime: list[int] = field(default_factory=list)  # episodes acknowledged, in viewing order
    anime_next: int = 0  # the anime sender's next play (an index into its viewing order)
    anime_unanswered: set[int] = field(default_factory=set)  # its plays sent without answer
    webhooks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Fakes:
    """The fakes of the targets asked for (None: not a target) and the mapping's host."""

    trakt: FakeTrakt | None
    serializd: FakeSerializd | None
    anilist: FakeAniList | None
    datasets: FakeDatasets | None

    def all(self) -> list[FakeServer]:
        found = [self.trakt, self.serializd, self.anilist, self.datasets]
        return [f for f in found if f is not None]

    def targets(self) -> list[FakeServer]:
        return [f for f in (self.trakt, self.serializd, self.anilist) if f is not None]


def seeded_trakt(sync: bool) -> FakeTrakt:
    fake = FakeTrakt()
    for n in range(MOVIES):
        fake.add_movie(f"Campaign {n}", 2000, imdb=f"tt8{n:06d}", tmdb=800000 + n)
    show = fake.add_show("Campaign Show", 2010, tvdb=SHOW_TVDB, imdb="tt0903747", tmdb=SHOW_TMDB)
    for season in range(1, SEASONS + 1):
        for number in range(1, EPISODES + 1):
            fake.add_episode(show, season, number, tvdb=5_000_000 + season * 1000 + number)
    fake.add_show("Re:ZERO", 2016, tmdb=ANIME_TMDB, seasons={1: ANIME_EPISODES})
    if sync:
        fake.add_show(
            "Sync Show",
            2020,
            tmdb=SYNC_TMDB,
            seasons=dict.fromkeys(range(1, SYNC_SEASONS + 1), SYNC_EPISODES),
        )
    return fake


def seeded_serializd(sync: bool) -> FakeSerializd:
    fake = FakeSerializd()
    fake.add_show(SHOW_TMDB, "Campaign Show", dict.fromkeys(range(1, SEASONS + 1), EPISODES))
    fake.add_show(ANIME_TMDB, "Re:ZERO", {1: ANIME_EPISODES})
    if sync:
        fake.add_show(
            SYNC_TMDB, "Sync Show", dict.fromkeys(range(1, SYNC_SEASONS + 1), SYNC_EPISODES)
        )
    return fake


def seeded_anilist() -> FakeAniList:
    fake = FakeAniList()
    fake.add_media(ANIME_ANILIST, episodes=ANIME_EPISODES)
    return fake


def start_fakes(targets: set[str], sync: bool) -> Fakes:
    anilist = seeded_anilist().start() if "anilist" in targets else None
    return Fakes(
        trakt=seeded_trakt(sync).start() if "trakt" in targets else None,
        serializd=seeded_serializd(sync).start() if "serializd" in targets else None,
        anilist=anilist,
        datasets=FakeDatasets().start() if anilist else None,
    )


def config(directory: Path, port: int, fakes: Fakes, sync: bool) -> Path:
    services, accounts = [], []
    if fakes.trakt:
        t = fakes.trakt
        services.append(
            f'trakt: {{client_id: {CLIENT_ID}, api_url: "{t.url}", auth_url: "{t.url}"}}'
        )
        accounts.append("trakt: {}")
    if fakes.serializd:
        services.append(f'serializd: {{api_url: "{fakes.serializd.url}"}}')
        accounts.append(f'serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}')
    if fakes.anilist and fakes.datasets:
        a = fakes.anilist
        urls = ", ".join(f'{k}: "{v}"' for k, v in fakes.datasets.urls().items())
        services.append(
            f'anilist: {{api_url: "{a.url}", auth_url: "{a.auth_url}", mapping_urls: {{{urls}}}}}'
        )
        accounts.append(f'anilist: {{token: "{a.issue_token()}"}}')
    link = ""
    if sync:  # a long interval: the link runs when `watchbridge sync` runs it
        link = (
            "links:\n  trakt-serializd: {services: [trakt, serializd], first_run: apply, "
            "interval: 1d}\n"
        )
    path = directory / "watchbridge.yaml"
    indent = "\n  "
    path.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {directory / "wb.db"}}}
delivery: {{retry_after: 1s, max_backoff: 1m}}
services:
  {indent.join(services)}
profiles:
  me:
    users: {{generic: [alice]}}
    accounts: {{{", ".join(accounts)}}}
{link}""",
        encoding="utf-8",
    )
    return path


class Sender:
    """Posts webhooks from a thread until told to stop; records what was acknowledged."""

    def __init__(
        self, url: str, expected: Expected, rng: random.Random, pool: list[str], movies: bool
    ) -> None:
        self.url, self.expected, self.rng, self.pool = url, expected, rng, pool
        self.movies = movies  # ratings and scrobbles are of movies: Trakt's alone
        self.stop = threading.Event()

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> bool | None:
        """True acknowledged with something queued, False refused or nothing queued (a
        "played" of an item marked played lately is no new play: docs/webhooks.md), None no
        answer (the service went away)."""
        try:
            response = client.post(f"{self.url}/webhooks/generic/{SECRET}", json=body)
        except httpx.TransportError:
            return None
        if response.status_code >= 400:
            print("refused:", response.status_code, response.text[:200], json.dumps(body))
        return response.status_code == 202 and response.json().get("queued", 0) > 0

    def _take(self) -> str | None:
        """A new item, or (one time in four, and once all are taken) one played before:
        a rewatch, dated hours apart from its other plays."""
        with self.expected.lock:
            if self.pool and self.rng.random() < 0.75:
                return self.pool.pop()
            played = [p for p in self.expected.plays if p[0][0] in "em"]  # not a, s
            if not played:
                return self.pool.pop() if self.pool else None
            return "again:" + self.rng.choice(played)[0]

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                key = self._take()
                if key is None:
                    return
                kind = self.rng.random()
                if key.startswith("again:"):
                    key, kind = key.removeprefix("again:"), 1.0  # a dated play, not live
                item = item_json(key)
                if key.startswith("m") and kind < 0.15:
                    self._rate(client, key, item)
                elif key.startswith("m") and kind < 0.45:
                    self._scrobble(client, key, item)
                else:
                    self._played(client, key, item)
                time.sleep(self.rng.uniform(0.05, 0.4))

    def run_anime(self) -> None:
        """The anime watched in order, twice over and on: each play is sent until it is
        acknowledged (an unanswered one again, as the same play), then the next."""
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set() and self.expected.anime_next < ANIME_PLAYS:
                index = self.expected.anime_next
                number = index % ANIME_EPISODES + 1
                at = ANIME_START + index * ANIME_SPACING
                stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
                item = item_json(f"a{number}")
                body = {"event": "played", "user": "alice", "watched_at": stamp, "item": item}
                answered = self._post(client, body)
                if answered is False and index in self.expected.anime_unanswered:
                    answered = True  # the unanswered post was recorded: this one is its twin
                with self.expected.lock:
                    self.expected.webhooks += 1
                    if answered is None:
                        self.expected.anime_unanswered.add(index)
                    else:
                        self.expected.anime_next += 1
                    if answered:
                        self.expected.anime.append(number)
                        self.expected.plays.append((f"a{number}", at, 60))
                    elif answered is False:
                        print(f"anime play {index} (episode {number}) queued nothing")
                time.sleep(self.rng.uniform(0.2, 0.8))

    def _played(self, client: httpx.Client, key: str, item: dict[str, Any]) -> None:
        # Its own hour: two plays of an item within a minute are one play, rightly.
        at = time.time() - 3600 * self.rng.randint(2, 960) - self.rng.uniform(0, 60)
        with self.expected.lock:
            if any(k == key and abs(t - at) < 3 * 3600 for k, t, _ in self.expected.plays):
                return
        stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
        body = {"event": "played", "user": "alice", "watched_at": stamp, "item": item}
        self._note(key, self._post(client, body), at, 60)

    def _scrobble(self, client: httpx.Client, key: str, item: dict[str, Any]) -> None:
        player = f"kodi-{key}"
        start = {"event": "start", "user": "alice", "player": player, "progress": 0, "item": item}
        if self._post(client, start) is None:
            return
        time.sleep(self.rng.uniform(0.05, 0.3))
        stop = {"event": "stop", "user": "alice", "player": player, "progress": 95, "item": item}
        at = time.time()
        self._note(key, self._post(client, stop), at, 150)

    def _rate(self, client: httpx.Client, key: str, item: dict[str, Any]) -> None:
        value = self.rng.randint(1, 10)
        body = {"event": "rate", "user": "alice", "rating": value, "item": item}
        answered = self._post(client, body)
        with self.expected.lock:
            self.expected.webhooks += 1
            if answered:
                self.expected.ratings[key] = value

    def _note(self, key: str, answered: bool | None, at: float, slack: float) -> None:
        with self.expected.lock:
            self.expected.webhooks += 1
            if answered:
                self.expected.plays.append((key, at, slack))
            elif answered is None:
                self.expected.sent_unanswered.add(key)


ANIME_START = time.time() - 5 * 86400


def item_json(key: str) -> dict[str, Any]:
    if key.startswith("m"):
        return {"type": "movie", "ids": {"imdb": f"tt8{int(key[1:]):06d}"}}
    if key.startswith("a"):
        show = {"title": "Re:ZERO", "ids": {"tmdb": ANIME_TMDB}}
        return {"type": "episode", "season": 1, "number": int(key[1:]), "show": show}
    season, number = (int(x) for x in key[1:].split("x"))
    return {
        "type": "episode",
        "season": season,
        "number": number,
        "show": {"title": "Campaign Show", "ids": {"tvdb": SHOW_TVDB, "tmdb": SHOW_TMDB}},
    }


def key_of(entry: Any) -> str:
    """A Trakt history entry's or rating's key, as the senders name items."""
    item = entry.item
    if item.kind == "movie":
        return f"m{int(item.imdb[3:])}"
    return episode_key(item.show.tmdb, item.season, item.number)


def episode_key(show: int | None, season: int, number: int) -> str:
    if show == ANIME_TMDB:
        return f"a{number}"
    if show == SYNC_TMDB:
        return f"s{season}x{number}"
    return f"e{season}x{number}"


def spawn(path: Path, log: Path, *command: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "watchbridge", *(command or ("serve",)), "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=0.5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def rows(db: Path, where: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(
            f"SELECT id, target, status, attempts, last_error FROM outbox WHERE {where}"
        ).fetchall()


def marked(db: Path) -> set[int]:
    return {r[0] for r in rows(db, "status != 'done'") if (r[4] or "").startswith(UNKNOWN_OUTCOME)}


def is_write(fake: FakeServer, request: Request) -> bool:
    """Whether `request` changes what the fake holds (a Trakt POST, a diary add, a save)."""
    if isinstance(fake, FakeSerializd):
        return request.path == SERIALIZD_WRITE
    if isinstance(fake, FakeAniList):
        return ANILIST_SAVE in request.body
    return request.method == "POST"


def writes(fakes: Fakes) -> list[tuple[str, Request]]:
    found = []
    for fake in fakes.targets():
        with fake.lock:
            found += [(type(fake).__name__, r) for r in fake.requests if is_write(fake, r)]
    return found


def hold_a_write(fakes: Fakes, rng: random.Random) -> tuple[FakeServer, threading.Event]:
    """Hold the answer of the next write at one of the targets (its work done)."""
    fake = rng.choice(fakes.targets())
    released = threading.Event()
    fake._queue(_Knob("hold", 1, None, released=released, when=lambda r: is_write(fake, r)))
    return fake, released


def faults(fakes: Fakes, rng: random.Random, gentle: bool) -> str:
    """This round's misbehaviour, one kind per target fake."""
    told = []
    for fake in fakes.targets():
        fake.clear_knobs()
        kinds = ["slow", "slow", "drop-after", "drop", "none"]
        if not isinstance(fake, FakeTrakt):
            kinds += ["429", "5xx"]
        choice = rng.choice(kinds if not gentle else ["slow"])
        n = rng.randint(1, 6)
        if choice == "slow":
            fake.delay_next(n, rng.uniform(0.5, 1.5 if gentle else 3.0))
        elif choice == "drop-after":
            fake.drop_next(n, after_handler=True)
        elif choice == "drop":
            fake.drop_next(n)
        elif choice == "429":
            fake.fail_next(n, 429, headers={"Retry-After": "2"})
        elif choice == "5xx":
            fake.fail_next(n, rng.choice([500, 502, 503]))
        told.append(f"{type(fake).__name__[4:].lower()} {choice}x{n}")
    return ", ".join(told)


def play_problems(
    where: str, landed: dict[str, list[float]], expected: Expected, keys: Callable[[str], bool]
) -> list[str]:
    """Every acknowledged play of the items `keys` takes is in `landed` once, at its time."""
    problems = []
    wanted = [p for p in expected.plays if keys(p[0])]
    acked = collections.Counter(k for k, _, _ in wanted)
    unmatched = {key: list(times) for key, times in landed.items()}
    for key, at, slack in sorted(wanted, key=lambda p: p[2]):
        times = unmatched.get(key, [])
        near = [t for t in times if abs(t - at) <= slack]
        if near:
            times.remove(min(near, key=lambda t: abs(t - at)))
        elif not landed.get(key):
            problems.append(f"{where}: lost: {key} at {at:.0f}")
        else:
            got = [round(t) for t in landed[key]]
            problems.append(f"{where}: lost or misdated: {key} wanted {at:.0f}, got {got}")
    for key, times in landed.items():
        allowed = acked[key] + (1 if key in expected.sent_unanswered else 0)
        if len(times) > max(allowed, 1) or (acked[key] and len(times) > acked[key]):
            problems.append(f"{where}: doubled: {key} x{len(times)} (acked {acked[key]})")
    return problems


def anime_state(episodes: Iterable[int]) -> tuple[str, int, int]:
    """AniList's (status, progress, repeat) after these plays in viewing order."""
    status, progress, repeat = "", 0, 0
    for number in episodes:
        if status == "COMPLETED" and number == 1:
            status, progress = "REPEATING", 1
        elif status in ("", "CURRENT", "REPEATING") and number > progress:
            progress = number
            if number == ANIME_EPISODES:
                repeat += status == "REPEATING"
                status = "COMPLETED"
            else:
                status = status or "CURRENT"
    return status, progress, repeat


def anilist_problems(anilist: FakeAniList, expected: Expected) -> list[str]:
    problems = []
    entry = anilist.snapshot().get(ANIME_ANILIST)
    want = anime_state(expected.anime)
    got = (entry["status"], entry["progress"], entry["repeat"]) if entry else None
    if got != want and want[0]:
        problems.append(f"anilist: wanted (status, progress, repeat) {want}, got {got}")
    progress, finished = 0, 0
    with anilist.lock:
        saves = [r for r in anilist.requests if ANILIST_SAVE in r.body and r.status == 200]
    for request in saves:
        variables = request.json().get("variables") or {}
        new = variables.get("progress")
        if variables.get("status") == "COMPLETED":
            finished += 1
        if new is None:
            continue
        if new < progress and not (variables.get("status") == "REPEATING" and new == 1):
            problems.append(f"anilist: a save set progress back from {progress} to {new}")
        progress = new
    passes = sum(1 for n in expected.anime if n == ANIME_EPISODES)
    if finished > passes:
        problems.append(f"anilist: completed {finished} times for {passes} passes acknowledged")
    return problems


def serializd_problems(serializd: FakeSerializd, expected: Expected, sync: bool) -> list[str]:
    landed = collections.defaultdict(list)
    problems = []
    for review in serializd.diary():
        show = serializd.shows[review.show_id]
        season = show.season_by_id(review.season_id) if review.season_id else None
        if season is None or review.episode_number is None:
            problems.append(f"serializd: an entry not of an episode: {review}")
            continue
        landed[episode_key(review.show_id, season.number, review.episode_number)].append(
            parse_iso(review.watched_at)
        )
        if DEFAULT_TAG not in review.tags:
            problems.append(f"serializd: entry {review.id} without {DEFAULT_TAG}: {review.tags}")
    problems += play_problems("serializd", landed, expected, lambda k: k[0] in "eas")
    return problems


def trakt_problems(trakt: FakeTrakt, expected: Expected) -> list[str]:
    landed = collections.defaultdict(list)
    for entry in trakt.history():
        landed[key_of(entry)].append(parse_iso(entry.watched_at))
    problems = play_problems("trakt", landed, expected, lambda k: True)
    ratings = {key_of(r): r.rating for r in trakt.ratings()}
    for key, value in expected.ratings.items():
        if ratings.get(key) != value:
            problems.append(f"trakt: rating: {key} wanted {value}, got {ratings.get(key)}")
    return problems


def seed_sync_plays(trakt: FakeTrakt, expected: Expected, rng: random.Random) -> None:
    """Plays logged on Trakt alone, for the link to copy to Serializd."""
    show = next(s for s in trakt.shows if s.tmdb == SYNC_TMDB)
    for season in range(1, SYNC_SEASONS + 1):
        for number in range(1, SYNC_EPISODES + 1):
            at = time.time() - 86400 * rng.uniform(2, 300)
            entry = trakt.log_play(
                show.episode(season, number), dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
            )
            expected.plays.append((f"s{season}x{number}", parse_iso(entry.watched_at), 60))


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.targets = set(args.targets.split(","))
        self.sync = args.sync_rounds > 0
        self.directory = Path(tempfile.mkdtemp(prefix="wb-kill-"))
        self.db = self.directory / "wb.db"
        self.fakes = start_fakes(self.targets, self.sync)
        self.port = free_port()
        self.path = config(self.directory, self.port, self.fakes, self.sync)
        if self.fakes.trakt:
            with Store.open(self.db) as store:
                sign_in_trakt(store, self.fakes.trakt, "me", now=time.time())
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.directory / "service.log"
        self.expected = Expected()
        self.pool = [f"e{s}x{n}" for s in range(1, SEASONS + 1) for n in range(1, EPISODES + 1)]
        if self.fakes.trakt:
            self.pool += [f"m{n}" for n in range(MOVIES)]
        if not self.fakes.trakt and not self.fakes.serializd:
            self.pool = []  # AniList alone: the anime sender only
        self.rng.shuffle(self.pool)
        self.kills = self.terms = self.sync_kills = 0
        self.problems: list[str] = []
        self.modes = collections.Counter[str]()

    def senders(self) -> tuple[list[Sender], list[threading.Thread]]:
        movies = self.fakes.trakt is not None
        senders = [
            Sender(self.url, self.expected, random.Random(self.rng.random()), self.pool, movies)
            for _ in range(2 if self.pool else 0)
        ]
        threads = [threading.Thread(target=s.run) for s in senders]
        if self.fakes.anilist or self.fakes.serializd:
            anime = Sender(self.url, self.expected, random.Random(self.rng.random()), [], movies)
            senders.append(anime)
            threads.append(threading.Thread(target=anime.run_anime))
        for thread in threads:
            thread.start()
        return senders, threads

    def service_round(self, round_: int) -> bool:
        mode = self.rng.choice(["kill", "kill", "history", "startup", "term"])
        self.modes[mode] += 1
        told = faults(self.fakes, self.rng, gentle=mode == "term")
        before = marked(self.db)
        proc = spawn(self.path, self.log)
        if mode == "startup":
            time.sleep(self.rng.uniform(0.05, 1.5))
            proc.kill()
            proc.wait()
            self.kills += 1
            print(f"round {round_}: startup kill ({told})", flush=True)
            return True
        if not ready(self.url, proc):
            self.problems.append(f"round {round_}: not ready (exit {proc.poll()})")
            proc.kill()
            proc.wait()
            return False
        senders, threads = self.senders()
        held = None
        if mode == "history":
            fake, held = hold_a_write(self.fakes, self.rng)
            told += f", {type(fake).__name__[4:].lower()} write held"
            deadline = time.monotonic() + 15
            while fake.knobs_pending and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(self.rng.uniform(0.0, 0.3))
        else:
            time.sleep(self.rng.uniform(0.3, 5.0))
        asked = time.monotonic()
        code = self.stop(proc, round_, term=mode == "term")
        for sender in senders:
            sender.stop.set()
        for thread in threads:
            thread.join()
        if held is not None:
            held.set()
        acked = len(self.expected.plays)
        print(f"round {round_}: {mode} ({told}) exit {code}, acked {acked}", flush=True)
        if mode == "term":
            self.after_term(round_, asked, before)
        return True

    def stop(self, proc: subprocess.Popen[bytes], round_: int, term: bool) -> int:
        if not term:
            proc.kill()
            self.kills += 1
            return proc.wait()
        proc.send_signal(signal.SIGTERM)
        self.terms += 1
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            self.problems.append(f"round {round_}: SIGTERM did not stop it in 15 s")
            proc.kill()
            return proc.wait()

    def after_term(self, round_: int, asked: float, before: set[int]) -> None:
        inflight = rows(self.db, "status = 'inflight'")
        if inflight:
            self.problems.append(f"round {round_}: SIGTERM left rows in flight: {inflight[:5]}")
        sent = writes(self.fakes)
        after = [f"{name} {r.path} +{r.time - asked:.2f}s" for name, r in sent if r.time >= asked]
        if after:
            self.problems.append(f"round {round_}: writes begun after SIGTERM: {after}")
        on_its_way = [(name, r) for name, r in sent if asked - 10 < r.time < asked]
        new_marks = marked(self.db) - before
        if new_marks and not on_its_way:
            ids = ", ".join(map(str, new_marks))
            shown = rows(self.db, f"id IN ({ids})")[:5]
            self.problems.append(f"round {round_}: SIGTERM marked rows, no write sent: {shown}")
        elif new_marks:
            cut = [f"{name} {r.path} -{asked - r.time:.2f}s" for name, r in on_its_way]
            print(f"  {len(new_marks)} marked: writes on their way at the stop {cut}")

    def sync_round(self, round_: int) -> None:
        """A `watchbridge sync` of the link beside the service, while the senders post
        webhooks: killed at a random moment (the service with it every other round)."""
        told = faults(self.fakes, self.rng, gentle=True)
        service = spawn(self.path, self.log)
        if not ready(self.url, service):
            self.problems.append(f"sync round {round_}: service not ready")
        senders, threads = self.senders()
        sync = spawn(self.path, self.log, "sync", "--link", "trakt-serializd", "--yes")
        time.sleep(self.rng.uniform(0.3, 6.0))  # a run takes a few seconds here
        both = self.rng.random() < 0.5
        sync.kill()
        code = sync.wait()
        self.sync_kills += code == -signal.SIGKILL  # else it had finished
        for sender in senders:
            sender.stop.set()
        for thread in threads:
            thread.join()
        if both:
            service.kill()
            self.kills += 1
        else:
            self.stop(service, round_, term=True)
        service.wait()
        what = "ran to its end" if code == 0 else "killed"
        what += " (the service killed)" if both else ""
        print(f"sync round {round_}: sync {what} ({told}), exit {code}", flush=True)

    def last_sync(self, round_: int) -> None:
        """The sync run to its end, once every sender has stopped and the service has
        delivered what they sent, and stopped: what the link then finds is what it must copy,
        and this run copies it (the service's own scheduled run of the link, a minute after
        its start, would otherwise take it over once a killed run's lease ends). With
        webhooks still flowing, every play the service delivered to Serializd grew the diary
        under the link's whole read."""
        for fake in self.fakes.all():
            fake.clear_knobs()
        service = spawn(self.path, self.log)
        if not ready(self.url, service):
            self.problems.append(f"sync round {round_}: service not ready")
        waiting = self.drained("before the last sync")
        self.stop(service, round_, term=True)
        copied = self.link_copies()
        log = self.directory / "last-sync.log"
        sync = spawn(self.path, log, "sync", "--link", "trakt-serializd", "--yes")
        code = sync.wait(900)
        while code != 0 and self.lease_held(log):  # a killed run holds the link a while
            time.sleep(10)
            sync = spawn(self.path, log, "sync", "--link", "trakt-serializd", "--yes")
            code = sync.wait(900)
        said = [line for line in log.read_text(errors="replace").splitlines() if "queued" in line]
        print(
            f"sync round {round_}: sync ran to its end after the drain ({len(waiting)} waiting; "
            f"{copied} of the link's {SYNC_SEASONS * SYNC_EPISODES} plays on Serializd before "
            f"it, {self.link_copies()} after), exit {code}: {said[-1] if said else '?'}",
            flush=True,
        )
        if code != 0:
            self.problems.append(f"the last sync exited {code}")

    def link_copies(self) -> int:
        """The diary entries of the show whose plays are on Trakt only (the link's to copy)."""
        assert self.fakes.serializd is not None
        return sum(1 for r in self.fakes.serializd.diary() if r.show_id == SYNC_TMDB)

    def lease_held(self, log: Path) -> bool:
        """Whether a killed sync still holds the link (its run counts as over after
        `RUN_LEASE`: "another sync of this link is still running"), as the sync logging to
        `log` said last."""
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        return bool(lines) and "another sync of this link is still running" in lines[-1]

    def drained(self, when: str) -> list[tuple[Any, ...]]:
        """Wait while the running service delivers: until nothing waits, or nothing was
        delivered for `--drain-timeout` seconds (Serializd's pace, 2 requests a second,
        drains a campaign's plays in many minutes). The rows still waiting, each a problem."""
        done, moved = -1, time.monotonic()
        while time.monotonic() - moved < self.args.drain_timeout:
            if not rows(self.db, "status IN ('pending', 'inflight')"):
                break
            now_done = len(rows(self.db, "status = 'done'"))
            if now_done != done:
                done, moved = now_done, time.monotonic()
            time.sleep(2)
        time.sleep(3)
        waiting = rows(self.db, "status IN ('pending', 'inflight')")
        if waiting:
            self.problems.append(f"still waiting {when}: {waiting[:5]}")
        return waiting

    def drain(self) -> None:
        for fake in self.fakes.all():
            fake.clear_knobs()
        proc = spawn(self.path, self.log)
        ready(self.url, proc)
        self.drained("after the drain")
        dead = rows(self.db, "status = 'dead'")
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        for row in dead:
            self.problems.append(f"dead letter: {row}")

    def run(self) -> int:
        started = time.monotonic()
        if self.sync and self.fakes.trakt:
            seed_sync_plays(self.fakes.trakt, self.expected, self.rng)
        for round_ in range(self.args.rounds):
            if not self.service_round(round_):
                break
        for round_ in range(self.args.sync_rounds):
            self.sync_round(round_)
        if self.sync:
            self.last_sync(self.args.sync_rounds)
        self.drain()
        self.check()
        minutes = (time.monotonic() - started) / 60
        print(
            f"\n{self.args.rounds} rounds {dict(self.modes)}, {self.args.sync_rounds} sync "
            f"rounds: {self.kills} kills, {self.terms} SIGTERMs, {self.sync_kills} syncs "
            f"killed; targets {sorted(self.targets)}; {self.expected.webhooks} webhooks, "
            f"{len(self.expected.plays)} plays ({len(self.expected.anime)} of the anime) and "
            f"{len(self.expected.ratings)} ratings acknowledged, {minutes:.1f} min"
        )
        for fake in self.fakes.targets():
            requests = collections.Counter(f"{r.method} {r.route}" for r in fake.requests)
            if isinstance(fake, FakeAniList):
                requests = collections.Counter(
                    "save" if ANILIST_SAVE in r.body else f"{r.method} {r.route}"
                    for r in fake.requests
                )
            print(f"{type(fake).__name__}: {dict(requests)}")
        print(f"problems: {len(self.problems)}")
        for problem in self.problems[:80]:
            print(" ", problem)
        for fake in self.fakes.all():
            fake.stop()
        if self.args.keep or self.problems:
            print("kept:", self.directory)
        else:
            shutil.rmtree(self.directory)
        return 1 if self.problems else 0

    def check(self) -> None:
        if self.fakes.trakt:
            self.problems += trakt_problems(self.fakes.trakt, self.expected)
        if self.fakes.serializd:
            self.problems += serializd_problems(self.fakes.serializd, self.expected, self.sync)
        if self.fakes.anilist:
            self.problems += anilist_problems(self.fakes.anilist, self.expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--targets", default="trakt", help="trakt,serializd,anilist (any)")
    parser.add_argument("--sync-rounds", type=int, default=0)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "1")))
    parser.add_argument("--drain-timeout", type=float, default=180, help="seconds without progress")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    targets = set(args.targets.split(","))
    if not targets or not targets <= {"trakt", "serializd", "anilist"}:
        parser.error("--targets: a comma-separated list of trakt, serializd, anilist")
    if args.sync_rounds and not {"trakt", "serializd"} <= targets:
        parser.error("--sync-rounds needs --targets with trakt and serializd")
    raise SystemExit(Campaign(args).run())


if __name__ == "__main__":
    main()
