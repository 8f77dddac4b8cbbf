"""Anime mapping at full dataset size (issue: resolve 1,500 entries < 1 s warm, RSS < 150 MB).

Generates synthetic datasets shaped and sized like the mid-2026 upstream files (anibridge
v3 ~20k AniList keys, Kometa 16.9k AniDB keys, Fribb full ~40k rows with every provider id,
Anime-Lists 16.9k `<anime>` entries with mapping lists), writes them to a temporary data dir,
loads the index the way the service does (`AnimeData.cached_index`, from disk), then maps a
1,500-entry AniList account with 20,000 episodes of progress both ways.

    .venv/bin/python bench/anime.py [--entries 1500] [--episodes 20000] [--anidb 16865]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from watchbridge.anime import AnimeIndex, EpisodeRef
from watchbridge.anime_data import AnimeData


def rss_mb() -> float:
    """Peak RSS of this process image (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(anidb_count: int, seed: int = 7) -> tuple[dict[str, bytes], list[int]]:
    """Four dataset bodies and the AniList ids they map."""
    rng = random.Random(seed)
    kometa: dict[str, dict[str, object]] = {}
    fribb: list[dict[str, object]] = []
    anibridge: dict[str, dict[str, object]] = {}
    xml = ['<?xml version="1.0" encoding="UTF-8"?>\n<anime-list>']
    anilist_ids = []
    for n in range(anidb_count):
        anidb, anilist, mal = 1 + n, 100_000 + n, 50_000 + n
        tvdb, tmdb = 200_000 + n // 3, 300_000 + n // 3
        # Three parts per show: TVDB seasons 1-3, TMDB season 1 with running numbers.
        season, offset = 1 + n % 3, (n % 3) * 26
        kind = rng.random()
        has_anilist = kind < 0.92
        if has_anilist:
            anilist_ids.append(anilist)
        movie = kind > 0.9
        tvdb_text = "movie" if movie else ("" if kind > 0.85 else str(tvdb))
        long = n % 170 == 0  # a long runner with an absolute mapping-list
        xml.append(
            f'  <anime anidbid="{anidb}" tvdbid="{tvdb_text}" '
            f'defaulttvdbseason="{"a" if long else season}" episodeoffset="" '
            f'tmdbtv="{"" if movie else tmdb}" tmdbseason="{"a" if long else 1}" '
            f'tmdboffset="{offset or ""}" tmdbid="{900_000 + n if movie else ""}" '
            f'imdbid="{f"tt{1_000_000 + n}" if movie else ""}">'
        )
        xml.append(f"    <name>Synthetic Anime {n} no Monogatari</name>")
        if long:
            xml.append("    <mapping-list>")
            xml.append(
                '      <mapping anidbseason="0" tvdbseason="0">;1-2;2-3;3-0;4-5+6;</mapping>'
            )
            for s in range(1, 24):
                start, end = (s - 1) * 50 + 1, s * 50
                xml.append(
                    f'      <mapping anidbseason="1" tvdbseason="{s}" start="{start}" '
                    f'end="{end}" offset="{-(start - 1)}"/>'
                )
                xml.append(
                    f'      <mapping anidbseason="1" tmdbseason="{s}" start="{start}" '
                    f'end="{end}" offset="{-(start - 1)}"/>'
                )
            xml.append("    </mapping-list>")
        xml.append("  </anime>")
        row: dict[str, object] = {"tvdb_epoffset": 0}
        if tvdb_text.isdigit():
            row.update(tvdb_id=tvdb, tvdb_season=-1 if long else season)
        if has_anilist:
            row["anilist_id"] = anilist
        row["mal_id"] = f"{mal},{mal + 1}" if n % 50 == 0 else mal
        if movie:
            row["imdb_id"] = f"tt{1_000_000 + n}"
        kometa[str(anidb)] = row
        full: dict[str, object] = {
            "type": "MOVIE" if movie else "TV",
            "anidb_id": anidb,
            "mal_id": mal,
            "kitsu_id": 10_000 + n,
            "simkl_id": 700_000 + n,
            "livechart_id": 5_000 + n,
            "anime-planet_id": f"synthetic-anime-{n}-no-monogatari",
            "anisearch_id": 9_000 + n,
            "animenewsnetwork_id": 20_000 + n,
            "animecountdown_id": 30_000 + n,
        }
        if has_anilist:
            full["anilist_id"] = anilist
        if movie:
            full.update(themoviedb_id={"movie": [900_000 + n]}, imdb_id=[f"tt{1_000_000 + n}"])
        else:
            full["themoviedb_id"] = {"tv": tmdb}
            if tvdb_text.isdigit():
                full["tvdb_id"] = tvdb
            if not long:
                full["season"] = {"tvdb": season, "tmdb": 1}
                if offset:
                    full["episode_offset"] = {"tmdb": offset}
        fribb.append(full)
        if has_anilist and not movie:
            count = 12 + n % 14
            targets: dict[str, object] = {
                f"anidb:{anidb}:R": {f"1-{count}": f"1-{count}"},
                f"mal:{mal}": {f"1-{count}": f"1-{count}"},
                f"tvdb_show:{tvdb}:s{season}": {f"1-{count}": f"1-{count}"},
                f"tmdb_show:{tmdb}:s1": {f"1-{count}": f"{1 + offset}-{count + offset}"},
            }
            anibridge[f"anilist:{anilist}"] = targets
            # v3 also keys the same graph by its other providers (not used by watchbridge).
            anibridge[f"anidb:{anidb}:R"] = {f"anilist:{anilist}": {f"1-{count}": f"1-{count}"}}
            anibridge[f"mal:{mal}"] = {
                f"tvdb_show:{tvdb}:s{season}": {f"1-{count}": f"1-{count}"},
                f"tmdb_show:{tmdb}:s1": {f"1-{count}": f"{1 + offset}-{count + offset}"},
            }
        elif has_anilist:
            anibridge[f"anilist:{anilist}"] = {f"tmdb_movie:{900_000 + n}": {"1": "1"}}
    # Fribb's full file also lists entries AniDB does not have (from the offline database).
    for n in range(anidb_count, int(anidb_count * 2.4)):
        fribb.append(
            {"type": "ONA", "mal_id": 50_000 + n, "kitsu_id": 10_000 + n, "simkl_id": 1 + n}
        )
    xml.append("</anime-list>\n")
    bodies = {
        "anibridge": json.dumps(anibridge, separators=(",", ":")).encode(),
        "kometa": json.dumps(kometa, indent=2).encode(),
        "fribb": json.dumps(fribb, indent=2).encode(),
        "animelists": "\n".join(xml).encode(),
    }
    return bodies, anilist_ids


def account(anilist_ids: list[int], entries: int, episodes: int) -> list[tuple[int, int]]:
    """(AniList id, progress) for an account; progress sums to about `episodes`."""
    rng = random.Random(11)
    chosen = rng.sample(anilist_ids, entries)
    weights = [rng.random() for _ in chosen]
    scale = episodes / sum(weights)
    return [(a, max(1, round(w * scale))) for a, w in zip(chosen, weights, strict=True)]


def resolve_all(index: AnimeIndex, entries: list[tuple[int, int]]) -> tuple[int, int, int]:
    """Forward every episode of progress on both numberings, then reverse the TMDB ones."""
    mapped = unmatched = reversed_ok = 0
    for anilist, progress in entries:
        index.resolve(anilist)
        for episode in range(1, progress + 1):
            for scheme in ("tmdb", "tvdb"):
                ref = index.episode_for(anilist, episode, scheme)  # type: ignore[arg-type]
                if isinstance(ref, EpisodeRef):
                    mapped += 1
                    if scheme == "tmdb" and ref.season is not None:
                        back = index.anilist_for(ref.show, ref.season, ref.number)
                        reversed_ok += back == (anilist, episode)
                else:
                    unmatched += 1
    return mapped, unmatched, reversed_ok


def measure(directory: Path, entries_file: Path) -> None:
    """The measured part, in a fresh process: load from disk, resolve, report RSS."""
    base_rss = rss_mb()
    data = AnimeData(directory)
    entries = [tuple(e) for e in json.loads(entries_file.read_text())]
    started = time.perf_counter()
    index = data.cached_index()
    load = time.perf_counter() - started
    load_rss = rss_mb()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        mapped, unmatched, reversed_ok = resolve_all(index, entries)  # type: ignore[arg-type]
        timings.append(time.perf_counter() - started)
    progress = sum(p for _, p in entries)
    print(f"index build from disk: {load:.2f} s; it holds {len(index)} AniList ids")
    print(
        f"resolving {len(entries)} entries / {progress} episodes x 2 numberings + reverse: "
        f"cold {timings[0]:.2f} s, warm best {min(timings[1:]):.2f} s (target < 1 s warm); "
        f"{mapped} mapped, {unmatched} unmatched, {reversed_ok} TMDB episodes reversed to "
        "the same AniList episode"
    )
    print(
        f"peak RSS: {rss_mb():.0f} MB with the datasets loaded (target < 150 MB); "
        f"{load_rss:.0f} MB right after loading; interpreter + imports {base_rss:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1500)
    parser.add_argument("--episodes", type=int, default=20_000)
    parser.add_argument("--anidb", type=int, default=16_865)
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "ENTRIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), Path(args.measure[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "anime-datasets"
        directory.mkdir()
        data = AnimeData(directory)
        bodies, anilist_ids = synthetic(args.anidb)
        for name, body in bodies.items():
            data.path(name).write_bytes(body)
        print(
            "synthetic datasets (MB): "
            + ", ".join(f"{name} {len(body) / 1e6:.1f}" for name, body in bodies.items())
        )
        entries_file = Path(tmp) / "entries.json"
        entries_file.write_text(json.dumps(account(anilist_ids, args.entries, args.episodes)))
        subprocess.run(
            [sys.executable, __file__, "--measure", str(directory), str(entries_file)], check=True
        )


if __name__ == "__main__":
    main()
