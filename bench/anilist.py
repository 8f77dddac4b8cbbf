"""AniList at scale against the fake: a 1,500-entry list with 20,000 episodes of progress.

Prints, for the real pacing (the served 30/min, a burst of 3): the requests and wall time of a
full read through the link reader (Viewer + MediaListCollection chunks) and the time spent
waiting for the rate limit; the cheap change check and a delta read after a few changes; the
conversion of every entry into plays; paced writes (SaveMediaListEntry) with the waiting
reported apart; peak RSS.

    .venv/bin/python bench/anilist.py [--entries 1500] [--episodes 20000] [--writes 10]

The mapping is a synthetic table (every entry maps to its own TMDB show, season 1), so this
measures the adapter and the conversion, not the datasets (see bench/anime.py for those).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.anilist import FakeAniList

from watchbridge.anime import EpisodeRef, Forward
from watchbridge.config import AniListConfig, Secret
from watchbridge.readers.anilist import AniListReader, Mapper
from watchbridge.services.anilist import AniListClient, EntryWrite
from watchbridge.store import Store


def table(anilist: int, episode: int, total: int | None) -> Forward:
    return EpisodeRef("tmdb", anilist, 1, episode, False, "bench")


async def mapper() -> Mapper:
    return table


async def run(entries: int, episodes: int, writes: int) -> None:
    fake = FakeAniList().start()  # the served limits: 30/min, burst limiter at 10/s
    try:
        fake.generate_list(entries, episodes)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "bench.db")
            config = AniListConfig(api_url=fake.url, auth_url=fake.auth_url)
            client = AniListClient(config, store, seeded_tokens={"me": Secret(fake.issue_token())})
            reader = AniListReader(client, mapper, store=store, clock=fake.now)
            try:
                started = time.perf_counter()
                first = await reader.read("me", {}, None, full=True)
                full_wall = time.perf_counter() - started
                full_requests, full_waited = reader.requests_sent, client.waited
                print(
                    f"full read: {len(first.side.plays)} plays from {entries} entries in "
                    f"{full_requests} requests ({fake.operations.count('MediaListCollection')} "
                    f"chunks), {full_wall:.2f} s wall of which {full_waited:.2f} s waiting for "
                    "the rate limit  [target: a handful of requests]"
                )

                convert_started = time.perf_counter()
                from watchbridge.readers.anilist import anilist_side, states_from

                list_entries = await client.entries("me")
                fetch = time.perf_counter() - convert_started
                started = time.perf_counter()
                anilist_side(list_entries, states_from(first.cursors), first.side, table)
                print(
                    f"conversion: {len(list_entries)} entries -> plays in "
                    f"{time.perf_counter() - started:.3f} s (the list fetched again first: "
                    f"{fetch:.1f} s at the served pace)"
                )

                before = client.requests_sent
                unchanged = await reader.unchanged("me", first.cursors)
                for stored in list(fake.viewer.entries.values())[:5]:
                    stored.progress += 1
                    stored.updated_at = int(fake.now()) + 60
                changed = not await reader.unchanged("me", first.cursors)
                delta = await reader.read("me", first.cursors, first.side, full=False)
                print(
                    f"change check: unchanged={unchanged}; after 5 steps changed={changed}; "
                    f"check + delta read: {client.requests_sent - before - 1} requests, "
                    f"{len(delta.side.plays) - len(first.side.plays)} new plays"
                )

                current = {e.media_id: e for e in await client.entries("me")}
                waited, started = client.waited, time.perf_counter()
                targets = list(current.values())[:writes]
                for entry in targets:
                    await client.save_entry(
                        "me", EntryWrite(entry.media_id, progress=entry.progress + 1), current=entry
                    )
                wall = time.perf_counter() - started
                print(
                    f"writes: {writes} SaveMediaListEntry in {wall:.1f} s "
                    f"({60 * writes / wall:.1f}/min; served limit {fake.limit}/min), "
                    f"{client.waited - waited:.1f} s of it waiting for the rate limit; "
                    f"429s from the fake: {len(fake.rate_limited)}"
                )
                print(
                    f"total requests: {client.requests_sent}, total waiting {client.waited:.1f} s"
                )
            finally:
                await reader.aclose()
                store.close()
    finally:
        fake.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss:.0f} MB (bench process, fake included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1500)
    parser.add_argument("--episodes", type=int, default=20000)
    parser.add_argument("--writes", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.entries, args.episodes, args.writes))


if __name__ == "__main__":
    main()
