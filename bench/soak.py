"""Soak: does `watchbridge serve` keep its memory, files and tables bounded under steady use?

A household of three profiles on one service (started as users start it, `python -m
watchbridge serve`), the fakes in this process:

- alex: Plex owner (account 1) and Jellyfin `alex`; Trakt, Serializd, and the Plex server
  itself for the `plex-trakt` link;
- bea: Plex account 2 and Jellyfin `bea`; Trakt, Serializd;
- kid: Jellyfin `kid`; Trakt, Serializd;
- links `plex-trakt` (alex) and `trakt-serializd` (everyone), two-way, history + ratings,
  `first_run: apply`, `interval: 60s` (the shortest the config takes): a run of each every
  minute, where a household's default is every 30 minutes.

For `--minutes` it sends `--rate` webhooks a second, round-robin over five viewers (alex and
bea on Plex, alex, bea and kid on Jellyfin). Each viewer goes through whole viewings, each of
an item not played before in the run (so sessions, id lookups and caches keep meeting new
items, as months of use would): Plex `media.play`, `media.pause`, `media.resume`,
`media.scrobble` (the fake PMS marks it watched, as the server does), `media.stop` of a movie;
Jellyfin `PlaybackStart`, two `PlaybackProgress`, `PlaybackStop` (completed) of an episode.
One viewing in eight is abandoned (stopped at 30 %: no play). Besides: a Plex `media.rate`
of a movie just watched every `--rate-every` seconds, a malformed webhook every
`--malformed-every` seconds (a wrong secret, a body that is not JSON, a Plex payload without
`Metadata`, an unknown source), and Trakt answering 503 to everything for `--outage`
seconds from the middle of the run.

Every `--sample-every` seconds it samples the service: RSS (VmRSS), peak RSS (VmHWM), open
file descriptors, threads, the database's and its WAL's size, and the rows of each table
(a read-only connection). It prints the samples, the growth per hour over the run's second
half (least squares; the first half is warm-up, the outage and the first link runs), and
the end figures: webhooks sent and their answers, plays on the fake Trakt (each viewing once:
duplicates counted), diary entries on the fake Serializd (duplicates counted), link runs done,
outbox rows by status.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 5] [--sample-every 20]

Growth that housekeeping bounds (delivered rows and events kept a week, playback sessions
KEEP_MARKS, sync runs KEEP_RUNS: `maintenance.py`) shows here as growth: a run of minutes
never reaches a retention period. What matters is growth of what has no such bound.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.fakes.plex import OWNER_ID, TOKEN, FakePlex  # noqa: E402
from tests.fakes.serializd import FakeSerializd  # noqa: E402
from tests.fakes.trakt import CLIENT_ID  # noqa: E402
from tests.harness import sign_in_trakt, start_logged  # noqa: E402
from tests.ingest_samples import sample_json  # noqa: E402
from tests.test_webhooks_e2e import plex_multipart  # noqa: E402

from backlog import OutageTrakt  # noqa: E402  (bench/backlog.py: answers 503 while `down`)
from latency import free_port  # noqa: E402

SECRET = "bench-secret-123"
PROFILES = ("alex", "bea", "kid")
PLEX_ACCOUNTS = {"alex": OWNER_ID, "bea": 2}
VIEWERS = (("alex", "plex"), ("bea", "plex"), ("alex", "jellyfin"), ("bea", "jellyfin"))
VIEWERS += (("kid", "jellyfin"),)
FIRST_MOVIE = 8_000_000
FIRST_SHOW_TMDB = 700_000
EPISODES_PER_SEASON = 10
SEASONS = 3
PLEX_STEPS = ("media.play", "media.pause", "media.resume", "media.scrobble", "media.stop")
JELLYFIN_STEPS = ("PlaybackStart", "PlaybackProgress", "PlaybackProgress", "PlaybackStop")
ABANDON_EVERY = 8  # one viewing in this many stops at 30 %: no play
TICKS = 10_000_000  # Jellyfin ticks a second
RUNTIME_TICKS = 45 * 60 * TICKS
SERVER_ID = "5b6f0e3a2c1d4e8f9a7b6c5d4e3f2a1b"


# =========================================================================== the household


@dataclass
class Household:
    trakt: OutageTrakt
    serializd: FakeSerializd
    plex: FakePlex
    movies: int  # movies in every catalogue, FIRST_MOVIE + n
    shows: list[Any]  # the fake Trakt's shows (episodes carry their TVDB ids)


def household(viewings: int) -> Household:
    """The fakes, each knowing enough items that no viewing of the run repeats one."""
    trakt, serializd, plex = OutageTrakt(), FakeSerializd(), FakePlex()
    plex.clock = time.time
    movies = viewings + 10
    for n in range(movies):
        movie = FIRST_MOVIE + n
        trakt.add_movie(f"Soak {movie}", 2000 + n % 25, trakt=movie, imdb=f"tt{movie}", tmdb=movie)
        plex.add_movie(
            str(movie), f"Soak {movie}", 2000 + n % 25, [f"imdb://tt{movie}", f"tmdb://{movie}"]
        )
    shows = []
    per_show = SEASONS * EPISODES_PER_SEASON
    for s in range(viewings // per_show + 2):
        tmdb = FIRST_SHOW_TMDB + s
        seasons = dict.fromkeys(range(1, SEASONS + 1), EPISODES_PER_SEASON)
        shows.append(trakt.add_show(f"Soak show {s}", 2010, tmdb=tmdb, tvdb=tmdb, seasons=seasons))
        serializd.add_show(tmdb, f"Soak show {s}", seasons)
    for profile in PROFILES:
        trakt.add_user(profile)
        serializd.add_user(f"{profile}@example.com", f"pw-{profile}", f"{profile}_tv")
    return Household(trakt, serializd, plex, movies, shows)


def write_config(work: Path, house: Household, port: int) -> Path:
    profiles = ""
    for profile in PROFILES:
        users = {"jellyfin": [profile]}
        if profile in PLEX_ACCOUNTS:
            users["plex"] = [str(PLEX_ACCOUNTS[profile])]
        plex_account = "plex: {}, " if profile == "alex" else ""
        profiles += (
            f"  {profile}:\n    users: {json.dumps(users)}\n"
            f"    accounts: {{{plex_account}trakt: {{}}, serializd: "
            f'{{email: {profile}@example.com, password: "pw-{profile}"}}}}\n'
        )
    config = work / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {work / "wb.db"}}}
delivery: {{retry_after: 5s}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{house.trakt.url}", auth_url: "{house.trakt.url}"}}
  serializd: {{api_url: "{house.serializd.url}"}}
  plex: {{url: "{house.plex.url}", token: "{TOKEN}"}}
profiles:
{profiles}links:
  plex-trakt: {{services: [plex, trakt], profiles: [alex], first_run: apply, interval: 60s}}
  trakt-serializd: {{services: [trakt, serializd], first_run: apply, interval: 60s}}
""",
        encoding="utf-8",
    )
    return config


# =========================================================================== the webhooks


@dataclass
class Viewer:
    profile: str
    source: str
    step: int = 0
    item: int = -1  # a movie number (Plex) or an episode's index (Jellyfin)
    viewings: int = 0


@dataclass
class Sent:
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    completed: collections.Counter[str] = field(default_factory=collections.Counter)  # per profile
    watched_movies: list[tuple[str, int]] = field(default_factory=list)
    ratings: int = 0
    malformed: int = 0
    slow: list[tuple[float, float]] = field(default_factory=list)  # (at, took) over 250 ms

    @property
    def total(self) -> int:
        return sum(self.answers.values())


class Load:
    """The webhooks: viewings round-robin, ratings and malformed ones now and then."""

    def __init__(self, house: Household, url: str) -> None:
        self.house, self.url = house, url
        self.viewers = [Viewer(profile, source) for profile, source in VIEWERS]
        self.turn = 0
        self.next_movie = 0
        self.next_episode = 0
        self.sent = Sent()
        self.client = httpx.Client(timeout=30)
        self.began = time.monotonic()

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, **kwargs: Any) -> int:
        began = time.perf_counter()
        try:
            status = self.client.post(f"{self.url}{path}", **kwargs).status_code
        except httpx.TransportError:
            status = 0
        took = time.perf_counter() - began
        if took > 0.25:
            self.sent.slow.append((time.monotonic() - self.began, took))
        self.sent.answers[status] += 1
        return status

    def viewing_step(self) -> None:
        viewer = self.viewers[self.turn % len(self.viewers)]
        self.turn += 1
        steps = PLEX_STEPS if viewer.source == "plex" else JELLYFIN_STEPS
        if viewer.step == 0:
            if viewer.source == "plex":
                viewer.item, self.next_movie = self.next_movie, self.next_movie + 1
            else:
                viewer.item, self.next_episode = self.next_episode, self.next_episode + 1
        abandoned = viewer.viewings % ABANDON_EVERY == ABANDON_EVERY - 1
        if viewer.source == "plex":
            self.plex_step(viewer, steps[viewer.step], abandoned)
        else:
            self.jellyfin_step(viewer, steps[viewer.step], viewer.step, abandoned)
        viewer.step = (viewer.step + 1) % len(steps)
        if viewer.step == 0:
            viewer.viewings += 1

    def plex_payload(self, event: str, profile: str, movie: int, offset: float) -> dict[str, Any]:
        payload: dict[str, Any] = sample_json("plex", "movie_media_scrobble.json")
        payload["event"] = event
        account = PLEX_ACCOUNTS[profile]
        payload["Account"] = {"id": account, "title": f"viewer{account}"}
        payload["Player"]["uuid"] = f"soakplayer{account}"
        meta = payload["Metadata"]
        key = FIRST_MOVIE + movie
        meta |= {"ratingKey": str(key), "key": f"/library/metadata/{key}"}
        meta |= {"guid": f"plex://movie/{key:024x}", "title": f"Soak {key}"}
        meta["Guid"] = [{"id": f"imdb://tt{key}"}, {"id": f"tmdb://{key}"}]
        meta["viewOffset"] = int(offset * meta.get("duration", 6_960_000))
        meta["lastViewedAt"] = int(time.time())
        return payload

    def plex_step(self, viewer: Viewer, event: str, abandoned: bool) -> None:
        if abandoned and event == "media.scrobble":
            event = "media.pause"  # never reaches 90 %
        offset = {"media.play": 0.0, "media.pause": 0.4, "media.resume": 0.4}.get(event, 0.95)
        if abandoned and event in ("media.pause", "media.stop"):
            offset = 0.3
        key = FIRST_MOVIE + viewer.item
        if event == "media.scrobble" and viewer.profile == "alex":
            self.house.plex.watch(str(key), time.time(), OWNER_ID)  # the server marks it
        payload = self.plex_payload(event, viewer.profile, viewer.item, offset)
        body, kind = plex_multipart(payload)
        status = self.post(f"/webhooks/plex/{SECRET}", content=body, headers={"content-type": kind})
        if event == "media.scrobble" and status < 300:
            self.sent.completed[viewer.profile] += 1
            self.sent.watched_movies.append((viewer.profile, viewer.item))

    def jellyfin_step(self, viewer: Viewer, event: str, step: int, abandoned: bool) -> None:
        show = self.house.shows[viewer.item // (SEASONS * EPISODES_PER_SEASON)]
        within = viewer.item % (SEASONS * EPISODES_PER_SEASON)
        season, number = 1 + within // EPISODES_PER_SEASON, 1 + within % EPISODES_PER_SEASON
        episode = show.seasons[season].episodes[number]
        position = (0.0, 0.3, 0.6, 1.0)[step] if not abandoned else (0.0, 0.1, 0.2, 0.3)[step]
        completed = event == "PlaybackStop" and not abandoned
        payload: dict[str, Any] = sample_json("jellyfin", "playback_stop_episode_completed.json")
        payload |= {
            "NotificationType": event,
            "UserId": hashlib.md5(viewer.profile.encode()).hexdigest(),
            "NotificationUsername": viewer.profile,
            "ItemId": f"{episode.ids()['trakt']:032x}",
            "SeriesId": f"{show.ids()['trakt']:032x}",
            "SeriesName": show.title,
            "Name": episode.title,
            "SeasonNumber": season,
            "EpisodeNumber": number,
            "Provider_tvdb": str(episode.tvdb),
            "Provider_imdb": "",
            "Provider_tmdb": "",
            "RunTimeTicks": RUNTIME_TICKS,
            "PlaybackPositionTicks": int(position * RUNTIME_TICKS),
            "PlayedToCompletion": completed,
            "IsPaused": False,
            "DeviceId": f"soak-{viewer.profile}",
            "UtcTimestamp": time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime()),
        }
        status = self.post(f"/webhooks/jellyfin/{SECRET}", json=payload)
        if completed and status < 300:
            self.sent.completed[viewer.profile] += 1

    def rating(self) -> None:
        """A Plex `media.rate` of a movie watched in this run (the fake PMS rates it too)."""
        if not self.sent.watched_movies:
            return
        profile, movie = self.sent.watched_movies[self.sent.ratings % len(self.sent.watched_movies)]
        value = 2 + 2 * (self.sent.ratings % 5)  # 2..10: Plex's 0-10 scale
        if profile == "alex":
            self.house.plex.rate(str(FIRST_MOVIE + movie), float(value), time.time(), OWNER_ID)
        payload = self.plex_payload("media.rate", profile, movie, 1.0)
        payload["rating"] = value
        body, kind = plex_multipart(payload, thumb=False)
        self.post(f"/webhooks/plex/{SECRET}", content=body, headers={"content-type": kind})
        self.sent.ratings += 1

    def malformed(self) -> None:
        """One of four bad webhooks in turn: each answered 4xx, none a play."""
        kind = self.sent.malformed % 4
        self.sent.malformed += 1
        if kind == 0:
            self.post(
                "/webhooks/jellyfin/not-the-secret", json={"NotificationType": "PlaybackStop"}
            )
        elif kind == 1:
            self.post(
                f"/webhooks/jellyfin/{SECRET}",
                content=b'{"NotificationType": "Playback',
                headers={"content-type": "application/json"},
            )
        elif kind == 2:
            body, ctype = plex_multipart({"event": "media.scrobble", "Account": {"id": 1}})
            self.post(f"/webhooks/plex/{SECRET}", content=body, headers={"content-type": ctype})
        else:
            self.post(f"/webhooks/kodi/{SECRET}", json={"event": "stop"})


# =========================================================================== sampling


@dataclass
class Sample:
    at: float  # seconds since the load began
    rss_mb: float
    hwm_mb: float
    fds: int
    threads: int
    db_mb: float
    wal_mb: float
    rows: dict[str, int]
    load: float


def proc_figures(pid: int) -> tuple[float, float, int, int]:
    """VmRSS and VmHWM (MB), open file descriptors, threads."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    rss, hwm = (int(status[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))
    return rss, hwm, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def table_rows(db: Path) -> dict[str, int]:
    """Rows per table, read on a read-only connection (a reader never blocks the service's
    writer in WAL mode)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            name: conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in names
        }


def sample(pid: int, db: Path, at: float) -> Sample:
    rss, hwm, fds, threads = proc_figures(pid)
    wal = db.with_name(db.name + "-wal")
    return Sample(
        at,
        rss,
        hwm,
        fds,
        threads,
        db.stat().st_size / 1e6,
        wal.stat().st_size / 1e6 if wal.exists() else 0.0,
        table_rows(db),
        os.getloadavg()[0],
    )


def per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600


# =========================================================================== the run


def run(args: argparse.Namespace) -> None:
    seconds = args.minutes * 60
    viewings = int(seconds * args.rate / len(PLEX_STEPS)) + 50
    began_setup = time.monotonic()
    house = household(viewings)
    for fake in (house.trakt, house.serializd, house.plex):
        fake.start()
    work = Path(tempfile.mkdtemp(prefix="wb-soak-"))
    port = free_port()
    config = write_config(work, house, port)
    from watchbridge.store import Store

    with Store.open(work / "wb.db") as store:
        for profile in PROFILES:
            sign_in_trakt(store, house.trakt, profile, now=time.time(), user=profile)
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "watchbridge", "serve", "--config", str(config)]
    proc = start_logged(argv, url, work / "service.log", timeout=60)
    print(
        f"household ready in {time.monotonic() - began_setup:.1f} s: {house.movies:,} movies, "
        f"{len(house.shows)} shows x {SEASONS * EPISODES_PER_SEASON} episodes; service pid "
        f"{proc.pid}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
        "(a shared machine: other work's load shows in the timing, not in the counts)"
    )
    load = Load(house, url)
    samples: list[Sample] = []
    outage = (seconds / 2, seconds / 2 + args.outage)
    trakt_before = {p: len(house.trakt.history(p)) for p in PROFILES}
    try:
        began = load.began = time.monotonic()
        next_hook = next_sample = began
        next_rating = began + args.rate_every
        next_bad = began + args.malformed_every
        interval = 1 / args.rate
        while (now := time.monotonic()) - began < seconds:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited:\n{(work / 'service.log').read_text()}")
            house.trakt.down = outage[0] <= now - began < outage[1]
            if now >= next_sample:
                samples.append(sample(proc.pid, work / "wb.db", now - began))
                print(row(samples[-1], house.trakt.down), flush=True)
                next_sample += args.sample_every
            if now >= next_hook:
                load.viewing_step()
                next_hook += interval
                if time.monotonic() > next_hook + 1:  # a second behind: go on, no burst
                    next_hook = time.monotonic()
            if now >= next_rating:
                load.rating()
                next_rating += args.rate_every
            if now >= next_bad:
                load.malformed()
                next_bad += args.malformed_every
            time.sleep(
                max(0.0, min(next_hook, next_sample, next_rating, next_bad) - time.monotonic())
            )
        house.trakt.down = False
        settle_until = time.monotonic() + args.settle
        while time.monotonic() < settle_until and pending(work / "wb.db") > 0:
            time.sleep(1)
        samples.append(sample(proc.pid, work / "wb.db", time.monotonic() - began))
        print(row(samples[-1], False) + "  (after settling)")
    finally:
        load.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for fake in (house.trakt, house.serializd, house.plex):
            fake.stop()
    report(args, samples, load.sent, house, trakt_before, work)
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def pending(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'inflight')"
        ).fetchone()
    return int(count)


GROWING = ("events", "outbox", "playback_sessions", "id_cache", "mirror", "sync_runs")


def row(s: Sample, down: bool) -> str:
    tables = " ".join(f"{name[:10]}={s.rows.get(name, 0)}" for name in GROWING)
    return (
        f"  t={s.at:5.0f}s RSS {s.rss_mb:6.1f} MB HWM {s.hwm_mb:6.1f} fds {s.fds:3d} "
        f"threads {s.threads:3d} db {s.db_mb:6.2f} MB wal {s.wal_mb:5.2f} MB load "
        f"{s.load:4.1f} {tables}{'  [Trakt down]' if down else ''}"
    )


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    sent: Sent,
    house: Household,
    trakt_before: dict[str, int],
    work: Path,
) -> None:
    last = samples[-1]
    half = [s for s in samples[:-1] if s.at >= args.minutes * 30]
    print(f"\ngrowth per hour over the second half ({len(half)} samples, least squares):")
    figures = {
        "RSS MB": [(s.at, s.rss_mb) for s in half],
        "fds": [(s.at, float(s.fds)) for s in half],
        "threads": [(s.at, float(s.threads)) for s in half],
        "db MB": [(s.at, s.db_mb) for s in half],
    }
    for name in sorted(last.rows):
        figures[f"table {name}"] = [(s.at, float(s.rows.get(name, 0))) for s in half]
    for name, points in figures.items():
        if points:
            print(
                f"  {name:<28} {per_hour(points):+12.1f} / h   "
                f"(from {points[0][1]:,.1f} to {points[-1][1]:,.1f})"
            )
    print(
        f"\nend: RSS {last.rss_mb:.1f} MB, peak {last.hwm_mb:.1f} MB, {last.fds} fds, "
        f"{last.threads} threads, db {last.db_mb:.2f} MB + wal {last.wal_mb:.2f} MB"
    )
    answers = ", ".join(f"{code}: {n}" for code, n in sorted(sent.answers.items()))
    print(
        f"webhooks sent: {sent.total} (answers {answers}); {sent.ratings} ratings, "
        f"{sent.malformed} malformed; {len(sent.slow)} answers over 250 ms"
        + (
            f" (at s, ms: {[(round(t), round(took * 1000)) for t, took in sent.slow[:12]]})"
            if sent.slow
            else ""
        )
    )
    with contextlib.closing(sqlite3.connect(f"file:{work / 'wb.db'}?mode=ro", uri=True)) as conn:
        by_status = dict(conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY 1").fetchall())
        runs = conn.execute(
            "SELECT link, COUNT(*), MAX(id) FROM sync_runs GROUP BY link ORDER BY link"
        ).fetchall()
        (run_total,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM sync_runs").fetchone()
    print(f"outbox by status: {by_status}")
    print(f"link runs: {run_total} in all ({', '.join(f'{link} {n}' for link, n, _ in runs)})")
    for profile in PROFILES:
        history = house.trakt.history(profile)[trakt_before[profile] :]
        items = collections.Counter(e.item.trakt for e in history)
        doubled = sum(n - 1 for n in items.values() if n > 1)
        diary = house.serializd.diary(house.serializd.users[f"{profile}@example.com"])
        places = collections.Counter((r.show_id, r.season_id, r.episode_number) for r in diary)
        diary_doubled = sum(n - 1 for n in places.values() if n > 1)
        print(
            f"  {profile}: {sent.completed[profile]} viewings completed; Trakt {len(history)} "
            f"plays ({len(items)} items, {doubled} duplicates), "
            f"{len(house.trakt.ratings(profile))} ratings; Serializd {len(diary)} diary entries "
            f"({diary_doubled} duplicates)"
        )
        for trakt_id in [i for i, n in items.items() if n > 1][: args.show_duplicates]:
            seen = [(e.watched_at, e.action) for e in history if e.item.trakt == trakt_id]
            print(f"      Trakt item {trakt_id} doubled: {seen}")
    log = (work / "service.log").read_text(errors="replace").splitlines()
    levels = collections.Counter(
        word for line in log for word in ("level=warning", "level=error") if word in line
    )
    print(f"service log: {len(log)} lines, {dict(levels)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--rate", type=float, default=5.0, help="viewing webhooks a second")
    parser.add_argument("--sample-every", type=float, default=20.0, help="seconds")
    parser.add_argument("--rate-every", type=float, default=15.0, help="a rating every N s")
    parser.add_argument("--malformed-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--outage", type=float, default=60.0, help="Trakt down, seconds")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds to let the queue drain at the end"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--show-duplicates", type=int, default=3, help="doubled Trakt plays shown per profile"
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
