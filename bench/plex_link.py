"""Plex <-> Trakt two-way link (history + ratings) at library scale, end to end.

A synthetic library on the fake PMS (bench/plex_read.py's builder: `--movies`, `--shows` x
`--episodes`, 30 % of the movies and episodes watched with one history row each, 5 % rated) and
a partly different Trakt account on the fake Trakt: every other play Plex has, at the same time;
Trakt-only plays of 5 % of the titles Plex has not watched, and of 100 movies Plex does not have;
every other rating Plex has (one in four of those with another value, half of them newer on
Trakt, half older) and Trakt-only ratings of 2 % of the unrated titles. So both directions write.

The link runs through the real engine (`sync.run_link`, the real Plex and Trakt readers with
their own pacing) and the real delivery targets (`wiring.make_targets`) drain the outbox
(`DeliveryWorker.pass_once`). The fakes run in a child process (their CPU and memory are not the
sync's; the peak RSS printed is the sync process's VmHWM). The fake Trakt enforces its documented
limits (`enforce_rate_limits`: 500 GETs per 5 minutes per user, 1 write per second); the Trakt
client paces itself under them (reads: a burst of 20, then 500 per 5 minutes; writes: 1 per
1.1 s) and the time it waits is part of every wall time printed. `--lift-writes` lifts the write
pacing (and the fake's write limit) and projects it instead (1.1 s a write).

Runs: the first full sync; the next run (it reads back our own writes: nothing left to plan); a
run with no change; a run after `--new-plays` new plays (half on Plex, half on Trakt, titles
neither side had watched). Each prints read + plan and drain time, requests by endpoint per
service and what it wrote; duplicates are checked at the end.

    .venv/bin/python bench/plex_link.py [--movies 2000 --shows 1000 --episodes 20]
    .venv/bin/python bench/plex_link.py --movies 5000 --shows 2500 --episodes 20

Targets (issue): Plex and Trakt requests grow with pages and changes, not with items (no
per-title lookups); first sync at the default size under 60 s including the read limit's waits,
writes batched so Trakt's write pacing costs seconds; a no-change run under 2 s with at most one
request per service; the new plays arrive once each.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import random
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from anime import rss_mb  # noqa: E402  (bench/anime.py)
from plex_read import YEAR, build  # noqa: E402  (bench/plex_read.py: the synthetic library)
from sync import TRAKT_WRITE_GAP, _bench_fakes  # noqa: E402  (bench/sync.py: cached pages)

LINK, PROFILE = "plex-trakt", "alex"
ELSEWHERE = 100  # Trakt-only movies Plex does not have (their plays are left out)
TRAKT_ONLY_PLAYS, TRAKT_ONLY_RATINGS = 0.05, 0.02
# Endpoints that name one title: none of them should be needed (ids come with the listings).
PER_TITLE = ("/library/metadata/", "/search/", "/movies/", "/shows/")


# =========================================================================== the fakes (child)


def _fakes() -> tuple[Any, Any]:
    from tests.fakes.plex import FakePlex

    bench_trakt, _ = _bench_fakes()

    class PlexBenchTrakt(bench_trakt):  # type: ignore[misc, valid-type]
        """Show lookups through an index (same rules: ids in order, first added wins)."""

        def index_shows(self) -> None:
            self._shows: dict[tuple[str, str], Any] = {}
            for show in self.shows:
                for key, value in show.ids().items():
                    if value not in (None, ""):
                        self._shows.setdefault((key, str(value)), show)

        def find_show(self, obj: Any) -> Any:
            ids = obj.get("ids") if isinstance(obj, dict) else None
            if not isinstance(ids, dict) or not ids:
                return super().find_show(obj)
            order = ("trakt", "tvdb", "imdb", "tmdb", "slug")
            wanted = [(k, str(ids[k])) for k in order if ids.get(k) not in (None, "")]
            return next((s for key in wanted if (s := self._shows.get(key))), None)

    plex = FakePlex()
    plex.clock = time.time
    return plex, PlexBenchTrakt()


def trakt_item(trakt: Any, rating_key: str) -> Any:
    """The fake Trakt's title for a Plex movie or episode of `build`'s library."""
    number = int(rating_key)
    if number < 1_000_000:
        return trakt.movies[number - 100_000]
    show, episode = int(rating_key[:7]) - 1_000_000, int(rating_key[7:])
    return trakt.shows[show].seasons[1 + episode // 10].episodes[1 + episode % 10]


def seed(plex: Any, trakt: Any, args: argparse.Namespace, now: float) -> dict[str, Any]:
    from tests.fakes.trakt import Rating, iso, key_of

    keys = build(plex, args.movies, args.shows, args.episodes, now)
    rng = random.Random(11)
    for n in range(args.movies):
        trakt.add_movie(f"Movie {n}", 2000 + n % 25, tmdb=500_000 + n)
    seasons = collections.Counter(1 + e // 10 for e in range(args.episodes))
    for s in range(args.shows):
        trakt.add_show(f"Show {s}", 2000 + s % 25, tmdb=900_000 + s, seasons=dict(seasons))
    trakt.index_shows()
    for n in range(ELSEWHERE):
        movie = trakt.add_movie(f"Elsewhere {n}", 1990, tmdb=800_000 + n)
        trakt.add_history(movie, iso(now - rng.random() * 3 * YEAR))
    counts = collections.Counter[str]()
    for key in keys:
        item, state = trakt_item(trakt, key), plex.user_state(key)
        if state.get("viewCount"):
            counts["plex_plays"] += 1
            if counts["plex_plays"] % 2 == 0:
                trakt.add_history(item, iso(state["lastViewedAt"]))
                counts["shared_plays"] += 1
        elif rng.random() < TRAKT_ONLY_PLAYS:
            trakt.add_history(item, iso(now - rng.random() * 3 * YEAR))
            counts["trakt_only_plays"] += 1
        if "userRating" in state:
            counts["plex_ratings"] += 1
            if counts["plex_ratings"] % 2 == 0:
                value, at = int(state["userRating"]), float(state["lastRatedAt"])
                if counts["plex_ratings"] % 8 == 0:  # the same title rated otherwise on Trakt
                    newer = counts["plex_ratings"] % 16 == 0
                    value, at = value % 10 + 1, min(at + 3600, now - 60) if newer else at - 86400
                    counts["conflicts_trakt_newer" if newer else "conflicts_plex_newer"] += 1
                trakt.user.ratings[key_of(item)] = Rating(item, value, iso(at))
                counts["shared_ratings"] += 1
        elif rng.random() < TRAKT_ONLY_RATINGS:
            rated = iso(now - rng.random() * YEAR)
            trakt.user.ratings[key_of(item)] = Rating(item, rng.randint(1, 10), rated)
            counts["trakt_only_ratings"] += 1
    return {"keys": keys, **counts}


def endpoints(fake: Any, since: int) -> dict[str, int]:
    """Requests by method + route template (a listing's `type` too), and 429s apart."""
    with fake.lock:
        requests = fake.requests[since:]
    counted = collections.Counter[str]()
    for r in requests:
        name = f"{r.method} {r.route or r.path}"
        if (r.route or "").endswith("/all") and "type" in r.query:
            name += f"?type={r.query['type']}"
        counted[name] += 1
        if r.status == 429:
            counted["(answered 429)"] += 1
    return dict(counted)


def state(plex: Any, trakt: Any, keys: list[str]) -> dict[str, int]:
    """Where the two sides disagree after a sync, and plays a sync made twice."""
    from tests.fakes.trakt import key_of

    with trakt.lock, plex.lock:
        trakt_plays = collections.Counter(key_of(e.item) for e in trakt.user.history)
        ratings = {k: r.rating for k, r in trakt.user.ratings.items()}
        rows = collections.Counter(row["ratingKey"] for row in plex.history.values())
        out = collections.Counter[str]()
        for key in keys:
            item, mine = key_of(trakt_item(trakt, key)), plex.user_state(key)
            views = mine.get("viewCount", 0)
            out["watched_on_plex"] += views > 0
            out["plex_views_twice"] += views > 1
            out["plex_history_rows_twice"] += rows[key] > 1
            out["trakt_plays_twice"] += trakt_plays[item] > 1
            out["watched_on_one_side_only"] += (views > 0) != (trakt_plays[item] > 0)
            rated = mine.get("userRating")
            out["rated_on_one_side_only"] += (rated is not None) != (item in ratings)
            out["ratings_differ"] += rated is not None and rated != ratings.get(item, rated)
        out["trakt_plays"] = sum(trakt_plays.values())
        out["trakt_ratings"] = len(ratings)
    return dict(out)


def new_plays(plex: Any, trakt: Any, keys: list[str], n: int) -> dict[str, list[str]]:
    """`n` plays of titles neither side has watched: half on Plex, half on Trakt, in the last
    six hours."""
    from tests.fakes.trakt import iso, key_of, to_minute

    rng, now = random.Random(23), time.time()
    with trakt.lock:
        watched = {key_of(e.item) for e in trakt.user.history}
    fresh = [
        k
        for k in keys
        if not plex.user_state(k).get("viewCount") and key_of(trakt_item(trakt, k)) not in watched
    ]
    chosen = rng.sample(fresh, n)
    on_plex, on_trakt = chosen[: n // 2], chosen[n // 2 :]
    for key in on_plex:
        plex.watch(key, now - rng.random() * 6 * 3600)
    with trakt.lock:
        plays = [
            (trakt_item(trakt, k), iso(to_minute(now - rng.random() * 6 * 3600)), "watch")
            for k in on_trakt
        ]
        trakt._add_plays(trakt.user, plays)  # moves last_activities, as a real play does
    return {"plex": on_plex, "trakt": on_trakt}


def arrived(plex: Any, trakt: Any, added: dict[str, list[str]]) -> dict[str, int]:
    """How often each new play arrived on the other side (once is right)."""
    from tests.fakes.trakt import key_of

    with trakt.lock, plex.lock:
        plays = collections.Counter(key_of(e.item) for e in trakt.user.history)
        rows = collections.Counter(row["ratingKey"] for row in plex.history.values())
        on_trakt = collections.Counter(plays[key_of(trakt_item(trakt, k))] for k in added["plex"])
        views = [(plex.user_state(k).get("viewCount", 0), rows[k]) for k in added["trakt"]]
    return {
        "plex_to_trakt_once": on_trakt[1],
        "plex_to_trakt_missing": on_trakt[0],
        "plex_to_trakt_twice_or_more": sum(v for n, v in on_trakt.items() if n > 1),
        "trakt_to_plex_once": sum(1 for v, r in views if v == 1 and r == 1),
        "trakt_to_plex_missing": sum(1 for v, _ in views if v == 0),
        "trakt_to_plex_twice_or_more": sum(1 for v, r in views if v > 1 or r > 1),
    }


def child(conn: Connection, args: argparse.Namespace) -> None:
    from tests.fakes.trakt import RateLimit

    plex, trakt = _fakes()
    began, now = time.monotonic(), time.time()
    seeded = seed(plex, trakt, args, now)
    keys: list[str] = seeded.pop("keys")
    trakt.enforce_rate_limits = True  # 500 GETs per 5 minutes, 1 write per second
    if args.lift_writes:
        trakt.rate_limits["AUTHED_API_POST_LIMIT"] = RateLimit(1, 1_000_000)
    token = trakt.issue_token()
    plex.start()
    trakt.start()
    conn.send(
        {
            "plex": plex.url,
            "trakt": trakt.url,
            "token": {
                "access_token": token.access_token,
                "refresh_token": token.refresh_token,
                "expires_in": token.expires_in,
            },
            "seed_s": time.monotonic() - began,
            "history_rows": len(plex.history),
            "trakt_plays": len(trakt.user.history),
            "trakt_ratings": len(trakt.user.ratings),
            **seeded,
        }
    )
    fakes = {"plex": plex, "trakt": trakt}
    marks = {"plex": 0, "trakt": 0}
    added: dict[str, list[str]] = {"plex": [], "trakt": []}
    while True:
        command, *rest = conn.recv()
        if command == "stop":
            break
        if command == "take":  # requests since the last take
            now_at = {"plex": len(plex.requests), "trakt": len(trakt.requests)}
            conn.send({name: endpoints(fake, marks[name]) for name, fake in fakes.items()})
            marks = now_at
        elif command == "state":
            conn.send(state(plex, trakt, keys))
        elif command == "new_plays":
            added = new_plays(plex, trakt, keys, rest[0])
            conn.send(len(added["plex"]) + len(added["trakt"]))
        elif command == "arrived":
            conn.send(arrived(plex, trakt, added))
    conn.send(rss_mb())
    plex.stop()
    trakt.stop()


# =========================================================================== the sync (parent)

WAITS: collections.Counter[str] = collections.Counter()  # seconds paced, by Trakt bucket


def time_the_pacer() -> None:
    """Count the seconds every Trakt client waits on its pacer (read and write buckets)."""
    from watchbridge.http import Pacer

    original = Pacer.acquire

    async def acquire(self: Pacer, bucket: str | None) -> None:
        began = time.monotonic()
        await original(self, bucket)
        WAITS[bucket or "none"] += time.monotonic() - began

    Pacer.acquire = acquire  # type: ignore[method-assign]


def show(title: str, counts: dict[str, int]) -> None:
    total = sum(n for k, n in counts.items() if not k.startswith("("))
    print(f"    {title}: {total} requests")
    for route, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"      {n:>6} x {route}")


def per_title(*counts: dict[str, int]) -> int:
    return sum(n for c in counts for k, n in c.items() if any(p in k for p in PER_TITLE))


class Bench:
    def __init__(self, conn: Connection, seeded: dict[str, Any], args: argparse.Namespace) -> None:
        from tests.fakes.plex import TOKEN
        from tests.fakes.trakt import CLIENT_ID

        from watchbridge.config import parse_config
        from watchbridge.deliver.worker import DeliveryWorker
        from watchbridge.http import Bucket, Pacer
        from watchbridge.wiring import build_runtime, make_targets

        self.conn, self.args = conn, args
        work = Path(tempfile.mkdtemp(prefix="wb-plexlink-"))
        trakt = seeded["trakt"]
        self.config = parse_config(
            f"""
storage: {{path: {work / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt}", auth_url: "{trakt}"}}
  plex: {{url: "{seeded["plex"]}", token: "{TOKEN}"}}
profiles:
  {PROFILE}:
    accounts: {{trakt: {{}}, plex: {{}}}}
links:
  {LINK}: {{services: [plex, trakt], kinds: [history, ratings]}}
""",
            Path("watchbridge.yaml"),
            {},
        )
        self.runtime = build_runtime(self.config)
        self.runtime.open()
        self.store = self.runtime.store
        token = {**seeded["token"], "created_at": time.time()}
        self.store.put_token("trakt", PROFILE, token, time.time())
        self.targets = {t.name: t for t in make_targets(self.runtime)}
        if args.lift_writes:
            client = self.targets["trakt"].client  # type: ignore[attr-defined]
            client.http.pacers[PROFILE] = Pacer(
                {"write": Bucket(1000, 1000), "read": Bucket(20, 500 / 300)}
            )
        self.worker = DeliveryWorker(lambda _: list(self.targets.values()), self.config.delivery)
        self.worker.targets = dict(self.targets)

    def ask(self, *command: Any) -> Any:
        self.conn.send(command)
        return self.conn.recv()

    async def sync(self, label: str) -> dict[str, Any]:
        from watchbridge.sync import run_link

        self.ask("take")
        waits = dict(WAITS)
        began = time.perf_counter()
        result = await run_link(self.config, self.store, LINK, yes=True)
        planned = time.perf_counter() - began
        read = self.ask("take")
        passes = 0
        while await self.worker.pass_once(self.runtime):
            passes += 1
        drained = time.perf_counter() - began - planned
        wrote = self.ask("take")
        waited = {b: WAITS[b] - waits.get(b, 0.0) for b in WAITS}
        counts = collections.Counter[str]()
        left_out = collections.Counter[str]()
        for p in result.plans:
            counts.update(p.plan.counts())
            left_out.update(p.plan.out_of_catalog)
        print(
            f"{label}: read + plan {planned:.2f} s, outbox drain {drained:.2f} s ({passes} "
            f"passes), total {planned + drained:.2f} s"
        )
        print(f"  plan: {dict(sorted(counts.items())) or 'nothing to do'}")
        if left_out:
            print(f"  left out (not in the target's libraries): {dict(left_out)}")
        print(
            f"  waited on Trakt's pacing: reads {waited.get('read', 0):.1f} s, writes "
            f"{waited.get('write', 0):.1f} s (part of the times above)"
        )
        for phase, got in (("read + plan", read), ("drain", wrote)):
            show(f"Plex, {phase}", got["plex"])
            show(f"Trakt, {phase}", got["trakt"])
        outbox = self.store.outbox_counts()
        print(f"  outbox after the drain: {outbox}")
        return {
            "planned": planned,
            "drained": drained,
            "read": read,
            "wrote": wrote,
            "waited": waited,
            "outbox": outbox,
        }

    async def main(self, seeded: dict[str, Any]) -> None:
        args = self.args
        items = args.movies + args.shows * args.episodes
        first = await self.sync("first full sync")
        rss = rss_mb()
        plex = sum(n for k, n in first["read"]["plex"].items() if not k.startswith("("))
        trakt_reads = sum(n for k, n in first["read"]["trakt"].items() if k.startswith("GET"))
        posts = sum(
            n
            for phase in ("read", "wrote")
            for k, n in first[phase]["trakt"].items()
            if k.startswith("POST")
        )
        lookups = per_title(*(first[p][s] for p in ("read", "wrote") for s in ("plex", "trakt")))
        total = first["planned"] + first["drained"]
        limit_429 = first["read"]["trakt"].get("(answered 429)", 0)
        limit_429 += first["wrote"]["trakt"].get("(answered 429)", 0)
        print("  figures against the targets:")
        print(
            f"    total {total:.1f} s for {items:,} titles (target at 2,000 movies + 20,000 "
            f"episodes: < 60 s, waits included)"
        )
        print(
            f"    Plex reads {plex} requests, Trakt reads {trakt_reads} for {items:,} titles; "
            f"per-title lookups {lookups} (target: 0, requests grow with pages)"
        )
        pacing = (
            f"measured at the real pacing: {first['waited'].get('write', 0):.1f} s waited"
            if not args.lift_writes
            else f"lifted; projected at 1 per {TRAKT_WRITE_GAP} s: {posts * TRAKT_WRITE_GAP:.0f} s"
        )
        print(f"    Trakt writes {posts} POSTs, {pacing} (target: seconds, not minutes)")
        print(f"    Trakt 429 answers {limit_429} (the fake enforces 500 GETs / 5 min, 1 POST/s)")
        print(f"    peak RSS of the sync process (VmHWM; fakes in a child process): {rss:.0f} MB")
        print(f"  after: {self.ask('state')}")

        await self.sync("next run (reads back our own writes)")
        print(f"  after: {self.ask('state')}")

        quiet = await self.sync("no-change run")
        sent = {  # the "(answered 429)" tally counts requests already counted by endpoint
            service: sum(
                n
                for phase in ("read", "wrote")
                for key, n in quiet[phase][service].items()
                if not key.startswith("(")
            )
            for service in ("plex", "trakt")
        }
        took = quiet["planned"] + quiet["drained"]
        print(
            f"  no-change run: {sent} requests, {took:.2f} s (target: <= 1 request per "
            "service, < 2 s)"
        )

        print(f"{self.ask('new_plays', args.new_plays)} new plays (half on Plex, half on Trakt)")
        await self.sync(f"after {args.new_plays} new plays")
        print(f"  the new plays on the other side: {self.ask('arrived')} (target: each once)")
        print(f"  after: {self.ask('state')}")
        print(f"peak RSS of the sync process (VmHWM, fakes excluded): {rss_mb():.0f} MB")

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.aclose()
        self.runtime.close()


async def run(conn: Connection, seeded: dict[str, Any], args: argparse.Namespace) -> None:
    time_the_pacer()
    bench = Bench(conn, seeded, args)
    try:
        await bench.main(seeded)
    finally:
        await bench.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=2000)
    parser.add_argument("--shows", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per show")
    parser.add_argument("--new-plays", type=int, default=100, help="half on each side")
    parser.add_argument(
        "--lift-writes", action="store_true", help="lift Trakt's write pacing and project it"
    )
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    parent, child_end = context.Pipe()
    proc = context.Process(target=child, args=(child_end, args), daemon=True)
    proc.start()
    try:
        seeded = parent.recv()
        counted = collections.Counter[str]({k: v for k, v in seeded.items() if type(v) is int})
        print(  # small libraries may have none of some kinds: the Counter says 0
            f"fakes seeded in {seeded['seed_s']:.1f} s (child process): Plex {args.movies:,} "
            f"movies, {args.shows:,} shows, {args.shows * args.episodes:,} episodes, "
            f"{counted['plex_plays']:,} watched ({counted['history_rows']:,} history rows), "
            f"{counted['plex_ratings']:,} rated; Trakt {counted['trakt_plays']:,} plays "
            f"({counted['shared_plays']:,} also on Plex, {counted['trakt_only_plays']:,} of "
            f"titles Plex has not watched, {ELSEWHERE} of movies Plex does not have), "
            f"{counted['trakt_ratings']:,} ratings ({counted['shared_ratings']:,} also on Plex, "
            f"{counted['conflicts_plex_newer']} differing and older on Trakt, "
            f"{counted['conflicts_trakt_newer']} differing and newer on Trakt, "
            f"{counted['trakt_only_ratings']:,} Trakt only)"
        )
        asyncio.run(run(parent, seeded, args))
    finally:
        parent.send(("stop",))
        if parent.poll(30):
            print(f"peak RSS of the fakes' process: {parent.recv():.0f} MB")
        proc.join(timeout=30)


if __name__ == "__main__":
    main()
