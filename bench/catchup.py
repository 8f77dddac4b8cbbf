"""The Jellyfin/Emby catch-up's cost: the reads catchup.py makes of each account at start and
every 15 minutes (`CatchUp.read`, the background task's round, on the service's own client).

A fake Jellyfin on 127.0.0.1 in a child process (its CPU and memory are not ours) holds one
account's library of `--items` played movies and episodes (ten episodes to a movie; default
10,000 + 1,000), their user data dated over the past year, and 20 episodes never played. Against
it, on a fresh database, with the service's clock and the fake's moved on together:

1. the first read (the baseline: every played item's count, nothing copied);
2. an idle read 15 minutes later (nothing changed: one small answer, nothing written);
3. 20 episodes played while no webhook came, then the read that finds them (they wait
   CONFIRM_AFTER for a webhook on its way) and, 15 minutes later, the one that copies them.

Each read: wall time, requests to the fake (by route), CPU time of this process (all its
threads), peak RSS growth (VmHWM reset before the read), the database file + WAL size
before/after and the commits made (`PRAGMA data_version` seen from another connection), plays
copied (and the outbox rows they queued). `--repeat` does it all again on a new database (the
20 episodes are marked unplayed between): each repeat's figures, then the medians.

    .venv/bin/python bench/catchup.py [--items 11000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USER = "a3f1c9e27b5d4c08b6e2f1d0c9b8a7e6"
DAY = 86400.0
EPISODES_PER_SERIES = 50  # 5 seasons of 10
MISSED = 20
ROUND = 15 * 60.0  # catchup.EVERY


# =========================================================================== the fake (child)


def _bench_jellyfin() -> type:
    """FakeJellyfin listing an account's items once per query (the fake builds every item's
    answer for each page: fine for tests, a second of the fake's own time per first read at
    11,000 items), pages sliced from it; any change of user data starts over."""
    from tests.fakes.base import Response, json_response
    from tests.fakes.jellyfin import FakeJellyfin

    class BenchJellyfin(FakeJellyfin):
        def __init__(self) -> None:
            super().__init__()
            self.version = 0
            self._listed: tuple[Any, list[Any], int] = ((), [], 0)

        def play(self, user_id: str, item_id: str, at: float, *, finished: bool = True) -> None:
            super().play(user_id, item_id, at, finished=finished)
            self.version += 1

        def mark_unplayed(self, user_id: str, item_id: str, at: float) -> None:
            super().mark_unplayed(user_id, item_id, at)
            self.version += 1

        def _listing(self, user_id: str, query: dict[str, str]) -> Response:
            paging = ("startindex", "limit")
            asked = tuple(sorted((k, v) for k, v in query.items() if k not in paging))
            key = (user_id, asked, self.version)
            if self._listed[0] != key:
                every = {**query, "startindex": "0", "limit": str(len(self.items))}
                whole = super()._listing(user_id, every)
                if whole.status != 200:
                    return whole
                answer = json.loads(whole.body)
                self._listed = (key, answer["Items"], answer["TotalRecordCount"])
            _, items, total = self._listed
            start, limit = int(query.get("startindex", 0)), int(query.get("limit", 10_000))
            return json_response({"Items": items[start : start + limit], "TotalRecordCount": total})

    return BenchJellyfin


def seed(fake: Any, items: int, now: float) -> list[str]:
    """The library: `items` played (ten episodes to a movie), and MISSED episodes never
    played; the ids of those."""
    movies = max(1, round(items / 11))
    episodes = items - movies
    for n in range(movies):
        item = f"{0x1000_0000 + n:032x}"
        fake.add_movie(item, f"Film {n}", 1990 + n % 35, Tmdb=str(100_000 + n), Imdb=f"tt{n:07d}")
        fake.play(USER, item, now - (1 + n % 365) * DAY)
    spare: list[str] = []
    for n in range(episodes + MISSED):
        series_no, index = divmod(n, EPISODES_PER_SERIES)
        series = f"{0x2000_0000 + series_no:032x}"
        if index == 0:
            fake.add_series(series, f"Show {series_no}", Tmdb=str(200_000 + series_no))
        item = f"{0x3000_0000 + n:032x}"
        season, number = divmod(index, 10)
        fake.add_episode(item, series, season + 1, number + 1, Tvdb=str(5_000_000 + n))
        if n < episodes:
            fake.play(USER, item, now - (1 + n % 365) * DAY + n % 86_400)
        else:
            spare.append(item)
    return spare


def child(conn: Connection, items: int) -> None:
    fake = _bench_jellyfin()()
    shift = [0.0]  # the parent's clock: time.time() + this
    fake.clock = lambda: time.time() + shift[0]
    fake.add_user(USER, "alex")
    began = time.monotonic()
    spare = seed(fake, items, fake.clock())
    fake.start()
    conn.send({"url": fake.url, "seed_s": time.monotonic() - began, "spare": spare})
    mark = 0
    while True:
        command, *args = conn.recv()
        if command == "stop":
            break
        if command == "shift":
            shift[0] = args[0]
        elif command == "mark":
            mark = len(fake.requests)
        elif command == "stats":
            with fake.lock:
                done = fake.requests[mark:]
            conn.send(dict(collections.Counter(f"{r.method} {r.route or r.path}" for r in done)))
            continue
        elif command == "play":
            for n, item in enumerate(spare):
                fake.play(USER, item, args[0] + 60.0 * n)
        elif command == "unplay":
            for item in spare:
                fake.mark_unplayed(USER, item, args[0])
        conn.send("ok")
    fake.stop()


# =========================================================================== the reads (parent)


class Clock:
    """The service's clock and the fake's: now, moved on by `shift`."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


@dataclass
class Figures:
    wall: float
    cpu: float
    rss_mb: float
    before: int
    after: int
    commits: int
    copied: int
    requests: dict[str, int] = field(default_factory=dict)
    queued: int | None = None  # the outbox's play rows after the read


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name}")


def _reset_peak() -> bool:
    """VmHWM back to the current RSS (Linux 4.0+); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _db_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())


def ask(conn: Connection, *command: Any) -> Any:
    conn.send(command)
    return conn.recv()


async def measured(
    conn: Connection, db: Path, watcher: sqlite3.Connection, read: Callable[[], Awaitable[int]]
) -> Figures:
    def version() -> int:
        return int(watcher.execute("PRAGMA data_version").fetchone()[0])

    ask(conn, "mark")
    before, commits = _db_bytes(db), version()
    rss = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    cpu, began = time.process_time(), time.perf_counter()
    copied = await read()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    grown = (_status_kb("VmHWM") - rss) / 1024 if peak_reset else float("nan")
    return Figures(
        wall,
        cpu,
        grown,
        before,
        _db_bytes(db),
        version() - commits,
        copied,
        ask(conn, "stats"),
    )


async def one_repeat(conn: Connection, url: str, clock: Clock) -> dict[str, Figures]:
    from tests.fakes.jellyfin import API_KEY

    from watchbridge.catchup import CatchUp
    from watchbridge.config import parse_config
    from watchbridge.services.jellyfin import media_server_client
    from watchbridge.wiring import build_runtime

    found: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="wb-catchup-") as work:
        db = Path(work) / "wb.db"
        config = parse_config(
            f"""
server: {{webhook_secret: catch-up-bench-secret-0123456789}}
storage: {{path: {db}}}
services:
  trakt: {{client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}}
  jellyfin: {{url: "{url}", api_key: {API_KEY}}}
profiles:
  me: {{users: {{jellyfin: [alex]}}, accounts: {{trakt: {{}}}}}}
""",
            Path("watchbridge.yaml"),
            {},
        )
        runtime = build_runtime(config, clock=clock)
        runtime.open()
        watcher = sqlite3.connect(db)
        client = media_server_client(config.services.jellyfin, metrics=runtime.metrics, clock=clock)
        assert client is not None
        task = CatchUp()

        async def read() -> int:
            return await task.read(runtime, "jellyfin", client)

        def later(seconds: float) -> None:
            clock.shift += seconds
            ask(conn, "shift", clock.shift)

        try:
            found["baseline"] = await measured(conn, db, watcher, read)
            later(ROUND)
            found["idle"] = await measured(conn, db, watcher, read)
            ask(conn, "play", clock() + 60.0)  # one a minute, no webhook
            later(ROUND + MISSED * 60.0)
            found["missed: found"] = await measured(conn, db, watcher, read)
            later(ROUND)
            found["missed: copied"] = await measured(conn, db, watcher, read)
            rows = watcher.execute("SELECT count(*) FROM outbox WHERE action = 'play'")
            found["missed: copied"].queued = int(rows.fetchone()[0])
        finally:
            await client.aclose()
            watcher.close()
            runtime.close()
    later(ROUND)
    ask(conn, "unplay", clock())  # the next repeat's baseline: the same played items
    later(ROUND)
    return found


def _mb(n: float) -> str:
    return f"{n / 1_048_576:.2f} MB"


def line(label: str, f: Figures) -> str:
    routes = ", ".join(f"{n} {r}" for r, n in sorted(f.requests.items(), key=lambda kv: -kv[1]))
    queued = "" if f.queued is None else f" ({f.queued} play rows in the outbox)"
    return (
        f"  {label}: {f.wall:.3f} s wall, {f.cpu:.3f} s CPU, peak RSS +{f.rss_mb:.1f} MB\n"
        f"    {sum(f.requests.values())} requests: {routes}\n"
        f"    database + WAL {_mb(f.before)} -> {_mb(f.after)} ({f.after - f.before:+,} bytes), "
        f"{f.commits} commits; plays copied {f.copied}{queued}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=11_000, help="played movies + episodes")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a new database")
    args = parser.parse_args()
    # The copy's warning ("N plays ... caught up") is the expected outcome here, not news.
    logging.getLogger("watchbridge").setLevel(logging.ERROR)

    context = multiprocessing.get_context("spawn")
    parent, child_end = context.Pipe()
    proc = context.Process(target=child, args=(child_end, args.items), daemon=True)
    proc.start()
    try:
        seeded = parent.recv()
        movies = max(1, round(args.items / 11))
        print(
            f"fake Jellyfin seeded in {seeded['seed_s']:.1f} s: one account, "
            f"{args.items - movies} episodes + {movies} movies played, {MISSED} episodes not"
        )
        clock = Clock()
        runs: list[dict[str, Figures]] = []
        for n in range(args.repeat):
            found = asyncio.run(one_repeat(parent, seeded["url"], clock))
            runs.append(found)
            print(f"repeat {n + 1} of {args.repeat}:")
            for label, figures in found.items():
                print(line(label, figures))
        if args.repeat > 1:
            print(f"medians over {args.repeat} repeats:")
            for label in runs[0]:
                all_of = [run[label] for run in runs]
                print(
                    f"  {label:<15} {statistics.median(f.wall for f in all_of):6.3f} s wall, "
                    f"{statistics.median(f.cpu for f in all_of):6.3f} s CPU, peak RSS "
                    f"+{statistics.median(f.rss_mb for f in all_of):.1f} MB, "
                    f"{statistics.median(sum(f.requests.values()) for f in all_of):.0f} "
                    f"requests, {statistics.median(f.after - f.before for f in all_of):+,.0f} "
                    f"bytes, {statistics.median(f.commits for f in all_of):.0f} commits, "
                    f"{statistics.median(f.copied for f in all_of):.0f} plays copied"
                )
    finally:
        parent.send(("stop",))
        proc.join(timeout=30)
    print(f"(load average {os.getloadavg()[0]:.1f}: a shared machine's timings measure it too)")


if __name__ == "__main__":
    main()
