"""Plex side of the Plex <-> Trakt link: a full read, the change check, a delta read and writes.

Builds a synthetic library on the fake PMS (tests/fakes/plex.py, in this process), 30 % of it
watched (with history rows) and 5 % rated, then measures through the link's reader and target:

- full read: wall time, requests by endpoint, peak RSS of the process;
- no-change check (`unchanged`): requests and time;
- 100 new plays, then the change check and a delta read;
- 100 plays written to Plex (the deliverer's scrobbles) and read back at their own time.

    .venv/bin/python bench/plex_read.py [--movies 2000] [--shows 1000] [--episodes 20]

Targets (issue 5): requests grow with pages, not items; a no-change run asks one request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.plex import TOKEN, FakePlex

from watchbridge.config import (
    Accounts,
    Config,
    Link,
    PlexAccount,
    PlexConfig,
    Profile,
    Secret,
    ServicesConfig,
)
from watchbridge.deliver.plex import PlexTarget
from watchbridge.model import ref_to_dict
from watchbridge.readers.plex import make_reader, plex_client
from watchbridge.sides import ref_for_key
from watchbridge.store import NewOutboxRow, Store

YEAR = 365 * 86400


def build(plex: FakePlex, movies: int, shows: int, episodes: int, now: float) -> list[str]:
    rng = random.Random(5)
    keys: list[str] = []
    for n in range(movies):
        plex.add_movie(str(100_000 + n), f"Movie {n}", 2000 + n % 25, [f"tmdb://{500_000 + n}"])
    for s in range(shows):
        show = str(1_000_000 + s)
        plex.add_show(show, f"Show {s}", 2000 + s % 25, [f"tmdb://{900_000 + s}"])
        for e in range(episodes):
            plex.add_episode(f"{show}{e:04d}", show, 1 + e // 10, 1 + e % 10)
    for key, item in plex.items.items():
        if item["type"] not in ("movie", "episode"):
            continue
        keys.append(key)
        if rng.random() < 0.30:
            plex.watch(key, now - rng.random() * 3 * YEAR)
        if rng.random() < 0.05:
            plex.rate(key, rng.randint(1, 10), now - rng.random() * YEAR)
    return keys


def by_endpoint(plex: FakePlex, since: int) -> str:
    counted = Counter(f"{r.method} {r.route or r.path}" for r in plex.requests[since:])
    return ", ".join(f"{k} x{v}" for k, v in sorted(counted.items())) or "none"


async def main(args: argparse.Namespace) -> None:
    now = time.time()
    plex = FakePlex().start()
    try:
        started = time.perf_counter()
        keys = build(plex, args.movies, args.shows, args.episodes, now)
        # The fake PMS lives in this process; its objects would make every garbage collection
        # of ours walk a library the real service never holds.
        gc.collect()
        gc.freeze()
        print(
            f"library: {args.movies} movies, {args.shows} shows, {args.shows * args.episodes} "
            f"episodes, {len(plex.history)} history rows; built in "
            f"{time.perf_counter() - started:.1f} s"
        )
        config = Config(
            services=ServicesConfig(plex=PlexConfig(url=plex.url, token=Secret(TOKEN))),
            profiles={"alex": Profile(accounts=Accounts(plex=PlexAccount()))},
        )
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.db")
            link = Link(["plex", "trakt"])
            reader = make_reader(config, store, link, ["alex"], time.time)

            mark, t = len(plex.requests), time.perf_counter()
            first = await reader.read("alex", {}, None, True)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"full read: {time.perf_counter() - t:.2f} s, {len(plex.requests) - mark} "
                f"requests ({by_endpoint(plex, mark)}); {len(first.side.plays)} plays, "
                f"{len(first.side.ratings)} ratings; peak RSS {rss:.0f} MB"
            )

            mark, t = len(plex.requests), time.perf_counter()
            same = await reader.unchanged("alex", first.cursors)
            print(
                f"no-change check: unchanged={same}, {len(plex.requests) - mark} request(s), "
                f"{(time.perf_counter() - t) * 1000:.0f} ms"
            )

            rng = random.Random(7)
            for key in rng.sample(keys, 100):
                plex.watch(key, now + rng.random() * 3600)
            mark, t = len(plex.requests), time.perf_counter()
            moved = not await reader.unchanged("alex", first.cursors)
            delta = await reader.read("alex", first.cursors, first.side, False)
            print(
                f"after 100 new plays: change seen={moved}, check + delta read "
                f"{time.perf_counter() - t:.2f} s, {len(plex.requests) - mark} requests "
                f"({by_endpoint(plex, mark)}); plays {len(first.side.plays)} -> "
                f"{len(delta.side.plays)}"
            )

            target = PlexTarget(plex_client(config, store, time.time), config, store, time.time)
            unwatched = [p for p, item in plex.items.items() if item["type"] == "movie"]
            plays = [k for k in unwatched if not plex.user_state(k)][:100]
            rows = []
            for n, rk in enumerate(plays):
                ref = ref_for_key(f"movie:tmdb:{500_000 + int(rk) - 100_000}")
                assert ref is not None
                rows.append(
                    NewOutboxRow(
                        "plex",
                        "alex",
                        "play",
                        {"item": ref_to_dict(ref), "at": now - YEAR - n * 60, "link": "bench"},
                        f"o{n}",
                        f"i{n}",
                    )
                )
            store.enqueue(rows, time.time())
            claimed = store.claim("bench", time.time(), 100, ["plex"])
            mark, t = len(plex.requests), time.perf_counter()
            outcomes = await target.deliver(claimed, time.time())
            wrote = time.perf_counter() - t
            sent = by_endpoint(plex, mark)
            read_back = await reader.read("alex", delta.cursors, delta.side, False)
            dated = sum(1 for p in read_back.side.plays if p.record.startswith("written:"))
            print(
                f"100 plays written: {wrote:.2f} s ({sent}); delivered "
                f"{sum(1 for o in outcomes.values() if type(o).__name__ == 'Delivered')}; "
                f"read back at their own time: {dated}"
            )
            await target.aclose()
            await reader.aclose()
            store.close()
    finally:
        plex.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=2000)
    parser.add_argument("--shows", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=20, help="episodes per show")
    asyncio.run(main(parser.parse_args()))
