"""Plex -> Trakt collection and the two-way watchlist at library scale.

Synthetic PMS listings (movies, shows, episodes with `Media`/`Part`/`Stream` as PMS lists them)
go through `plexlink.sync_collection` against the fake Trakt (a VIP account, so no limit stops
it); a watchlist of `--watchlist` titles on each side goes through `plexlink.sync_watchlist`
against the fake plex.tv and the fake Trakt. The fakes run in a child process (the peak RSS
printed is the sync's own). Pacing is lifted (the fakes need no politeness); the wall time at
Trakt's real pacing (reads: 500 per 5 min after a burst of 20; writes: 1 per 1.1 s) is projected
from the requests actually made.

    .venv/bin/python bench/plexlink.py [--movies 2000 --shows 1000 --episodes 20]

Runs: first sync, a run with no change, a run after 100 new library items.
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

TRAKT_READ_BURST, TRAKT_READS_PER_S, TRAKT_WRITE_GAP = 20, 500 / 300, 1.1


def media(n: int) -> list[dict[str, Any]]:
    """One or two versions with a spread of resolutions, HDR and audio."""
    hdr = [{}, {"colorTrc": "smpte2084"}, {"DOVIPresent": True, "colorTrc": "smpte2084"}][n % 3]
    audio = [("aac", 2), ("eac3", 6), ("truehd", 8), ("dca", 6)][n % 4]
    versions = [
        {
            "width": [1920, 3840, 1280][n % 3],
            "audioCodec": audio[0],
            "audioChannels": audio[1],
            "Part": [
                {
                    "file": f"/media/{n}.mkv",
                    "Stream": [
                        {"streamType": 1, "codec": "hevc", **hdr},
                        {"streamType": 2, "codec": audio[0], "channels": audio[1]},
                    ],
                }
            ],
        }
    ]
    if n % 10 == 0:
        versions.append({"width": 1280, "audioCodec": "aac", "audioChannels": 2, "Part": []})
    return versions


def listings(movies: int, shows: int, episodes: int) -> tuple[list[Any], list[Any], list[Any]]:
    movie_rows = [
        {
            "ratingKey": str(100000 + n),
            "type": "movie",
            "title": f"Movie {n}",
            "guid": f"plex://movie/{n:024x}",
            "Guid": [{"id": f"tmdb://{500000 + n}"}, {"id": f"imdb://tt{9000000 + n}"}],
            "addedAt": 1_700_000_000 + n,
            "Media": media(n),
        }
        for n in range(movies)
    ]
    show_rows = [
        {
            "ratingKey": str(200000 + s),
            "type": "show",
            "title": f"Show {s}",
            "Guid": [{"id": f"tmdb://{800000 + s}"}],
        }
        for s in range(shows)
    ]
    episode_rows = [
        {
            "ratingKey": str(300000 + s * episodes + e),
            "type": "episode",
            "title": f"Episode {e}",
            "grandparentTitle": f"Show {s}",
            "grandparentRatingKey": str(200000 + s),
            "guid": f"plex://episode/{s * episodes + e:024x}",
            "parentIndex": 1,
            "index": e + 1,
            "addedAt": 1_700_000_000 + e,
            "Media": media(s + e),
        }
        for s in range(shows)
        for e in range(episodes)
    ]
    return movie_rows, show_rows, episode_rows


# =========================================================================== the fakes (child)


def serve(conn: Connection, movies: int, shows: int, episodes: int, watchlist: int) -> None:
    from tests.fakes.plextv import FakePlexTv
    from tests.fakes.trakt import VIP_LIMITS, FakeTrakt, WatchlistEntry, key_of

    trakt = FakeTrakt()
    trakt.user.vip, trakt.user.limits = True, dict(VIP_LIMITS)
    for n in range(movies + 200):
        trakt.add_movie(f"Movie {n}", 2000, tmdb=500000 + n, imdb=f"tt{9000000 + n}")
    for s in range(shows):
        trakt.add_show(f"Show {s}", 2000, tmdb=800000 + s, seasons={1: episodes})
    plextv = FakePlexTv()
    for n in range(watchlist):  # half on each side, the other half to copy over
        title = plextv.add_title("movie", f"Movie {n}", 2000, [f"tmdb://{500000 + n}"])
        if n % 2 == 0:
            plextv.watchlist_add(plextv.owner, title)
        else:
            movie = trakt.movies[n]
            entry = WatchlistEntry(n, movie, "2026-09-01T08:00:00.000Z")
            trakt.user.watchlist[key_of(movie)] = entry
    trakt.start()
    plextv.start()
    token = trakt.issue_token()
    conn.send((trakt.url, plextv.url, token.access_token, token.refresh_token, plextv.owner.token))
    conn.recv()  # until the parent is done
    counts = collections.Counter(f"{r.method} {r.route or r.path}" for r in trakt.requests)
    plex_counts = collections.Counter(f"{r.method} {r.route or r.path}" for r in plextv.requests)
    conn.send((dict(counts), dict(plex_counts)))
    trakt.stop()
    plextv.stop()


# =========================================================================== the sync (parent)


def projected(requests: dict[str, int]) -> float:
    reads = sum(v for k, v in requests.items() if k.startswith("GET"))
    writes = sum(v for k, v in requests.items() if not k.startswith("GET"))
    read_wait = max(0, reads - TRAKT_READ_BURST) / TRAKT_READS_PER_S
    return read_wait + max(0, writes - 1) * TRAKT_WRITE_GAP


async def run(args: argparse.Namespace, urls: tuple[str, str, str, str, str]) -> None:
    from watchbridge.config import PlexConfig, Secret, TraktConfig
    from watchbridge.http import Pacer
    from watchbridge.plexlink import sync_collection, sync_watchlist
    from watchbridge.services.plextv import PlexTvClient
    from watchbridge.services.trakt import TraktClient
    from watchbridge.store import Store

    trakt_url, plex_url, access, refresh, plex_token = urls
    from tests.fakes.trakt import CLIENT_ID

    store = Store.open(Path(tempfile.mkdtemp()) / "bench.db")
    store.put_token(
        "trakt",
        "me",
        {
            "access_token": access,
            "refresh_token": refresh,
            "created_at": time.time(),
            "expires_in": 7 * 86400,
        },
        time.time(),
    )
    trakt = TraktClient(TraktConfig(CLIENT_ID, None, api_url=trakt_url, auth_url=trakt_url), store)
    trakt.http.pacers["me"] = Pacer()  # lifted; projected below
    movies, shows, episodes = listings(args.movies, args.shows, args.episodes)

    async def collection_run(label: str, rows: list[Any]) -> None:
        before = trakt.http.requests_sent
        started = time.perf_counter()
        # The change check a link run makes anyway (one GET), handed to the collection run.
        activities = await trakt.last_activities("me")
        result = await sync_collection(
            trakt, store, "me", movies=rows, episodes=episodes, shows=shows, activities=activities
        )
        took = time.perf_counter() - started
        print(
            f"collection {label}: {took:.2f}s, +{result.added} ~{result.updated} "
            f"={result.plan.unchanged}, {trakt.http.requests_sent - before} Trakt requests "
            "(incl. the last_activities check)"
        )

    await collection_run("first sync", movies)
    await collection_run("no change", movies)
    extra, _, _ = listings(args.movies + 100, 0, 0)
    await collection_run("after 100 new movies", extra)

    plextv = PlexTvClient(
        PlexConfig(account_url=plex_url, discover_url=plex_url, metadata_url=plex_url),
        store,
        client_identifier="bench",
        account_tokens={"me": Secret(plex_token)},
    )
    for label in ("first sync", "no change"):
        started = time.perf_counter()
        activities = await trakt.last_activities("me")
        result = await sync_watchlist(plextv, trakt, store, "me", activities=activities)
        print(
            f"watchlist {label}: {time.perf_counter() - started:.2f}s, "
            f"to Plex {result.added_to_plex}, to Trakt {result.added_to_trakt}, "
            f"requests {result.requests} (+1 Trakt last_activities check)"
        )
    await plextv.aclose()
    await trakt.aclose()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--movies", type=int, default=2000)
    parser.add_argument("--shows", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=20, help="per show")
    parser.add_argument("--watchlist", type=int, default=400, help="titles, half on each side")
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(
        target=serve, args=(child, args.movies, args.shows, args.episodes, args.watchlist)
    )
    proc.start()
    urls = parent.recv()
    started = time.perf_counter()
    asyncio.run(run(args, urls))
    total = time.perf_counter() - started
    parent.send("done")
    trakt_counts, plex_counts = parent.recv()
    proc.join()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"total {total:.1f}s, peak RSS {rss:.0f} MiB (the sync's process)")
    print("Trakt requests by endpoint:", dict(sorted(trakt_counts.items())))
    print("plex.tv requests by endpoint:", dict(sorted(plex_counts.items())))
    print(f"projected extra wait at Trakt's real pacing: {projected(trakt_counts):.0f}s")


if __name__ == "__main__":
    main()
