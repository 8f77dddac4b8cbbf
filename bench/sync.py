"""Trakt <-> Serializd sync at scale: a first full sync, then incremental runs.

Synthetic history (full size): 100,000 episode plays over 2,000 shows (5 seasons x 10
episodes each, one play per episode, ten minutes apart) and 5,000 ratings (2,000 shows,
1,000 seasons, 2,000 episodes) on the fake Trakt; half of it already on the fake Serializd:
the older half of the plays (the first 1,000 shows) as dated diary entries plus ticks, as our
own writes leave them, and every other rating as a rating-only diary row. The fakes run in a
child process (their memory and CPU are not ours; the peak RSS printed is the sync's own), with
indexed lookups so the fakes are not the bottleneck.

1. First full sync: the real engine (`sync.run_link`: both readers, refine, the pure planner)
   queues the plan; the real delivery targets drain the outbox against the fakes. Pacing is
   lifted to `--rate` requests/s (the fakes need no politeness); the bench also projects the
   wall time at the real pacing (Serializd 2 requests/s one at a time, Trakt reads 500 per
   5 min after a burst of 20, Trakt writes 1 per 1.1 s) from the requests actually made.
2. The next run (it sees our own writes on Serializd), then a run with no change: its requests
   per service (target: exactly one each) and its time.

    .venv/bin/python bench/sync.py [--scale 0.25] [--rate 2000]

The default runs a quarter of everything (25,000 plays, 500 shows, 1,250 ratings) in about
two minutes; `--scale 1` is the full size (about ten minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import resource
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEASONS, EPISODES = 5, 10  # per show
T0 = 1_600_000_000.0
SPACING = 600.0  # seconds between plays
SERIALIZD_RPS = 2.0  # services/serializd.py REQUESTS_PER_SECOND
TRAKT_READ_BURST, TRAKT_READS_PER_S = 20, 500 / 300
TRAKT_WRITE_GAP = 1.1


# =========================================================================== the fakes (child)


def _bench_fakes() -> tuple[type, type]:
    """FakeTrakt / FakeSerializd with cached or indexed versions of the handlers that scan
    the whole history per request (fine for tests, quadratic at 100,000 plays)."""
    from tests.fakes import serializd as fs
    from tests.fakes import trakt as ft
    from tests.fakes.base import paginate

    class BenchTrakt(ft.FakeTrakt):
        def __init__(self) -> None:
            super().__init__()
            self._pages: dict[Any, list[Any]] = {}

        @ft.api("GET", "/sync/history")
        @ft.api("GET", "/sync/history/{type}")
        def sync_history(self, req: Any, user: Any) -> Any:
            kind = req.params.get("type")
            start, end = ft._query_time(req, "start_at"), ft._query_time(req, "end_at")
            key = (id(user), len(user.history), kind, start, end)
            if key not in self._pages:
                entries = ft._newest_first(user.history)
                if kind is not None:
                    entries = [e for e in entries if ft._history_matches(e, kind, None)]
                if start is not None or end is not None:
                    entries = [
                        e
                        for e in entries
                        if e.watched_at is not None
                        and (start is None or ft.parse_iso(e.watched_at) >= start)
                        and (end is None or ft.parse_iso(e.watched_at) <= end)
                    ]
                # a few answers kept: two links may page through movies and episodes at once
                self._pages = dict(list(self._pages.items())[-3:])
                self._pages[key] = [e.to_json() for e in entries]
            return paginate(req, self._pages[key], default_limit=100)

    class BenchSerializd(fs.FakeSerializd):
        def __init__(self) -> None:
            super().__init__()
            self._order: tuple[Any, list[Any]] = ((), [])
            self._by_season: dict[tuple[int, int], set[int]] = collections.defaultdict(set)

        def _diary_order(self, reviews: list[Any]) -> list[Any]:
            key = (id(reviews), len(reviews), self.diary_order)
            if self._order[0] != key:
                self._order = (key, super()._diary_order(reviews))
            return self._order[1]

        def index_ticks(self) -> None:
            for show, season, number in self.user.ticks:
                self._by_season[(show, season)].add(number)

        @fs.authed("GET", "/mobile/page/show/{id}/season_v2_part_3/{number}")
        def season_page(self, req: Any, user: Any, body: dict[str, Any]) -> Any:
            show = self._show(self._path_int(req, "id"))
            season = show.season_by_id(int(req.query["season_id"]))
            if season is None:
                raise fs._fail(404, "Season not found")
            numbers = sorted(self._by_season.get((show.id, season.id), ()))
            logs = [{"episodeNumber": n, "dateAdded": fs.iso(self.now())} for n in numbers]
            return {"episodeLogs": logs}

        @fs.authed("POST", "/api/episode_log/add")
        def episode_log_add(self, req: Any, user: Any, body: dict[str, Any]) -> Any:
            show = self._show(fs._int(body, "show_id", req.path))
            season = self._season_of(show, fs._int(body, "season_id", req.path))
            for n in fs._int_list(body, "episode_numbers", req.path):
                user.ticks[(show.id, season.id, n)] = fs.iso(self.now())
                self._by_season[(show.id, season.id)].add(n)
            return {"message": "Successfully added episode"}

    return BenchTrakt, BenchSerializd


def seed(trakt: Any, serializd: Any, shows: int, ratings: int) -> dict[str, int]:
    from tests.fakes.trakt import Rating, key_of
    from tests.fakes.trakt import iso as trakt_iso

    half = shows // 2
    per_show = SEASONS * EPISODES
    for n in range(shows):
        tmdb = 100_000 + n
        show = trakt.add_show(
            f"Show {n}",
            2000,
            tmdb=tmdb,
            tvdb=500_000 + n,
            seasons=dict.fromkeys(range(1, SEASONS + 1), EPISODES),
        )
        serializd.add_show(tmdb, f"Show {n}", dict.fromkeys(range(1, SEASONS + 1), EPISODES))
        for e in range(per_show):
            season, number = e // EPISODES + 1, e % EPISODES + 1
            at = T0 + (n * per_show + e) * SPACING
            trakt.add_history(show.seasons[season].episodes[number], trakt_iso(at))
            if n < half:
                # the same viewing, logged a few minutes apart (Serializd keeps the second)
                serializd.log_entry(
                    None, tmdb, season, number, backdate=trakt_iso(at + 180)[:19] + "Z"
                )
                serializd.tick(None, tmdb, season, number)
    rated = 0
    for r in range(ratings):
        n = r % shows
        show = trakt.shows[n]
        tmdb = 100_000 + n
        value = r % 10 + 1
        season_no = number = None
        if r < shows:
            item: Any = show
        elif r < shows + shows // 2:
            season_no = 1 + (r // shows) % SEASONS
            item = show.seasons[season_no]
        else:
            season_no, number = 1, 1 + (r // shows) % EPISODES
            item = show.seasons[season_no].episodes[number]
        if key_of(item) in trakt.user.ratings:
            continue
        trakt.user.ratings[key_of(item)] = Rating(item, value, trakt_iso(T0 + r))
        rated += 1
        if r % 2 == 0:
            serializd.log_entry(None, tmdb, season_no, number, rating=value, is_log=False)
    serializd.index_ticks()
    return {"trakt_plays": len(trakt.user.history), "trakt_ratings": rated}


def summary(fake: Any, since: int) -> dict[str, int]:
    with fake.lock:
        requests = fake.requests[since:]
    return dict(collections.Counter(f"{r.method} {r.route or r.path}" for r in requests))


def child(conn: Connection, shows: int, ratings: int) -> None:
    bench_trakt, bench_serializd = _bench_fakes()
    trakt, serializd = bench_trakt(), bench_serializd()
    serializd.diary_order = "jittered"
    began = time.monotonic()
    counts = seed(trakt, serializd, shows, ratings)
    counts["serializd_diary"] = len(serializd.user.reviews)
    token = trakt.issue_token()
    trakt.start()
    serializd.start()
    conn.send(
        {
            "trakt": trakt.url,
            "serializd": serializd.url,
            "token": {
                "access_token": token.access_token,
                "refresh_token": token.refresh_token,
                "expires_in": token.expires_in,
            },
            "seed_s": time.monotonic() - began,
            **counts,
        }
    )
    marks = {"trakt": 0, "serializd": 0}
    while True:
        command = conn.recv()
        if command == "stop":
            break
        if command == "mark":
            marks = {"trakt": len(trakt.requests), "serializd": len(serializd.requests)}
            conn.send(marks)
        elif command == "stats":
            conn.send(
                {
                    "trakt": summary(trakt, marks["trakt"]),
                    "serializd": summary(serializd, marks["serializd"]),
                    "state": state(trakt, serializd),
                }
            )
    trakt.stop()
    serializd.stop()


def state(trakt: Any, serializd: Any) -> dict[str, int]:
    with serializd.lock:
        reviews = list(serializd.user.reviews)
        ticks = len(serializd.user.ticks)
    logs = [(r.show_id, r.season_id, r.episode_number, r.backdate) for r in reviews if r.is_log]
    episodes = collections.Counter((s, season, e) for s, season, e, _ in logs)
    return {
        "diary_logs": len(logs),
        "duplicate_logs": len(logs) - len(set(logs)),
        "episodes_logged_twice": sum(1 for n in episodes.values() if n > 1),
        "rating_rows": sum(1 for r in reviews if not r.is_log and r.rating),
        "ticks": ticks,
        "trakt_plays": len(trakt.user.history),
        "trakt_ratings": len(trakt.user.ratings),
    }


# =========================================================================== the sync (parent)


def projected(trakt: dict[str, int], serializd: dict[str, int]) -> tuple[float, float, float]:
    """Seconds at the real pacing: Trakt reads, Trakt writes, Serializd (one at a time)."""
    reads = sum(n for k, n in trakt.items() if k.startswith("GET"))
    writes = sum(n for k, n in trakt.items() if not k.startswith("GET"))
    trakt_reads = max(0, reads - TRAKT_READ_BURST) / TRAKT_READS_PER_S
    return trakt_reads, writes * TRAKT_WRITE_GAP, sum(serializd.values()) / SERIALIZD_RPS


def show(title: str, counts: dict[str, int]) -> None:
    print(f"  {title}: {sum(counts.values())} requests")
    for route, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"    {n:>7} x {route}")


async def run(conn: Connection, seeded: dict[str, Any], args: argparse.Namespace) -> None:
    from tests import linkrig

    from watchbridge import readers
    from watchbridge.config import parse_config
    from watchbridge.deliver.serializd import SerializdTarget
    from watchbridge.deliver.trakt import TraktTarget
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.sync import run_link
    from watchbridge.wiring import build_runtime

    work = Path(tempfile.mkdtemp(prefix="wb-sync-"))
    config = parse_config(
        f"""
storage: {{path: {work / "wb.db"}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{seeded["trakt"]}", auth_url: "{seeded["trakt"]}"}}
  serializd: {{api_url: "{seeded["serializd"]}"}}
profiles:
  me:
    accounts:
      trakt: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  trakt-serializd: {{services: [trakt, serializd], max_removal_share: 1.0}}
""",
        Path("watchbridge.yaml"),
        {},
    )
    runtime = build_runtime(config)
    runtime.open()
    token = seeded["token"]
    runtime.store.put_token("trakt", "me", {**token, "created_at": time.time()}, time.time())
    readers.READERS["trakt"] = "tests.linkrig_trakt"
    readers.READERS["serializd"] = "tests.linkrig_serializd"
    linkrig.READ_RATE["rate"] = args.rate
    targets = {
        "trakt": TraktTarget(
            linkrig.fast_trakt(config, runtime.store, args.rate),
            runtime.store,
            config.delivery,
            time.time,
        ),
        "serializd": SerializdTarget(
            linkrig.fast_serializd(config, runtime.store, args.rate),
            runtime.store,
            config.delivery,
            time.time,
        ),
    }
    worker = DeliveryWorker(lambda _: list(targets.values()), config.delivery)
    worker.targets = dict(targets)

    def stats() -> dict[str, Any]:
        conn.send("stats")
        answer: dict[str, Any] = conn.recv()
        return answer

    async def sync_run(label: str, full: bool = False) -> tuple[float, float, Any]:
        conn.send("mark")
        conn.recv()
        linkrig.LAST_READERS.clear()
        began = time.perf_counter()
        result = await run_link(config, runtime.store, "trakt-serializd", yes=True, full=full)
        planned = time.perf_counter() - began
        passes = 0
        while await worker.pass_once(runtime):
            passes += 1
        drained = time.perf_counter() - began - planned
        refined = sum(getattr(r, "seasons_read", 0) for r in linkrig.LAST_READERS)
        counts = collections.Counter[str]()
        for p in result.plans:
            counts.update(p.plan.counts())
        print(
            f"{label}: read + plan {planned:.1f} s, outbox drain {drained:.1f} s "
            f"({passes} passes), total {planned + drained:.1f} s; queued {result.queued}; "
            f"plan {dict(counts) or 'nothing to do'}; seasons whose ticks were read: {refined}"
        )
        return planned, drained, result

    try:
        await sync_run("first full sync")
        first = stats()
        show("Trakt", first["trakt"])
        show("Serializd", first["serializd"])
        trakt_reads, trakt_writes, serializd_s = projected(first["trakt"], first["serializd"])
        total = trakt_reads + trakt_writes + serializd_s
        print(
            f"  projected at the real pacing: Trakt reads {trakt_reads / 60:.1f} min, Trakt "
            f"writes {trakt_writes / 60:.1f} min, Serializd {serializd_s / 3600:.2f} h "
            f"(2 requests/s): {total / 3600:.2f} h"
        )
        print(f"  after: {first['state']}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS of the sync process (fakes excluded): {rss:.0f} MB")

        await sync_run("next run (reads back our writes)")
        second = stats()
        show("Trakt", second["trakt"])
        show("Serializd", second["serializd"])
        print(f"  after: {second['state']}")

        _, _, _ = await sync_run("no-change run")
        third = stats()
        per_service = {s: sum(third[s].values()) for s in ("trakt", "serializd")}
        print(f"  requests: {per_service} (target: exactly one per service)")
        show("Trakt", third["trakt"])
        show("Serializd", third["serializd"])
    finally:
        for target in targets.values():
            await target.aclose()
        runtime.close()


CLIENT_ID = ""
ALICE: tuple[str, str, str] = ("", "", "")


def main() -> None:
    global CLIENT_ID, ALICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.25, help="fraction of the full size")
    parser.add_argument("--rate", type=float, default=2000.0, help="requests/s to the fakes")
    args = parser.parse_args()
    from tests.fakes.serializd import ALICE as alice
    from tests.fakes.trakt import CLIENT_ID as client_id

    CLIENT_ID, ALICE = client_id, alice
    shows, ratings = max(2, round(2000 * args.scale)), max(1, round(5000 * args.scale))
    parent, child_end = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=child, args=(child_end, shows, ratings), daemon=True
    )
    proc.start()
    try:
        seeded = parent.recv()
        print(
            f"fakes seeded in {seeded['seed_s']:.1f} s: Trakt {seeded['trakt_plays']} plays over "
            f"{shows} shows, {seeded['trakt_ratings']} ratings; Serializd "
            f"{seeded['serializd_diary']} diary rows (half the plays, with ticks, and half the "
            "ratings)"
        )
        asyncio.run(run(parent, seeded, args))
    finally:
        parent.send("stop")
        proc.join(timeout=30)


if __name__ == "__main__":
    main()
