"""The pure planning step of reconciliation at scale (issue: <= 2 s for 100k plays).

Synthetic history: 100,000 episode plays over 2,000 shows and 5,000 ratings on one side, half
of it already on the other side (times shifted by up to an hour, as Serializd backdates are).

    .venv/bin/python bench/plan.py [--plays 100000] [--shows 2000] [--ratings 5000] [--first-run]

`--first-run`: as a link's first run plans it (no baseline, the sides meet for the first time:
leftover plays are also paired within reconcile.FIRST_RUN_WINDOW).
"""

from __future__ import annotations

import argparse
import random
import resource
import time

from watchbridge.config import Link
from watchbridge.reconcile import Play, Rated, Side, plan


def synthetic(plays: int, shows: int, ratings: int) -> tuple[Side, Side]:
    rng = random.Random(7)
    per_show = plays // shows
    trakt_plays, serializd_plays = [], []
    for n in range(plays):
        show, episode = divmod(n, per_show)
        item = f"episode:tmdb:{1000 + show}:s{episode // 20 + 1}e{episode % 20 + 1}"
        at = 1_600_000_000 + n * 600.0
        trakt_plays.append(Play(item, at, f"t{n}"))
        if n % 2 == 0:
            serializd_plays.append(Play(item, at + rng.uniform(-3600, 3600), f"s{n}"))
    trakt_ratings = {
        f"episode:tmdb:{1000 + n % shows}:s1e{n // shows + 1}": Rated(
            rng.randrange(10, 101, 10), 1_700_000_000.0 + n
        )
        for n in range(ratings)
    }
    serializd_ratings = dict(list(trakt_ratings.items())[: ratings // 2])
    return Side(tuple(trakt_plays), trakt_ratings), Side(tuple(serializd_plays), serializd_ratings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plays", type=int, default=100_000)
    parser.add_argument("--shows", type=int, default=2_000)
    parser.add_argument("--ratings", type=int, default=5_000)
    parser.add_argument("--first-run", action="store_true", help="plan as a link's first run")
    args = parser.parse_args()
    trakt, serializd = synthetic(args.plays, args.shows, args.ratings)
    link = Link(services=["trakt", "serializd"])
    current = {"trakt": trakt, "serializd": serializd}
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        if args.first_run:
            result = plan(link, current, {}, first_run=True)
        else:
            result = plan(link, current, current)
        timings.append(time.perf_counter() - started)
    counts = result.counts()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'first run: ' if args.first_run else ''}planning {args.plays} plays / "
        f"{args.shows} shows / {args.ratings} ratings: "
        f"best {min(timings):.2f} s, worst {max(timings):.2f} s of 3 (target <= 2 s)"
    )
    print(f"plan: {counts}; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
