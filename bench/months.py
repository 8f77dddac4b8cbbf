"""Months of steady use, in minutes: what the database keeps as time goes by.

One household's webhooks through the real code paths (`ingest.parse`, `webhooks.ingest_job`,
`Store.ingest_many`), on a clock of its own (`build_runtime(clock=...)`) that moves through
`--days` simulated days:

- `--sessions` Jellyfin viewings a day, each a PlaybackStart, a PlaybackProgress every
  `--progress-every` seconds (as the webhook plugin sends them) for `--minutes` minutes and a
  completed PlaybackStop, each of an episode not played before;
- `--plays` Plex viewings a day (play, pause, resume, scrobble, stop) of movies not played
  before;
- each row queued delivered at once (claimed and settled as the delivery worker does);
- a link run an hour (`start_run`, `finish_run`);
- the hourly housekeeping's database work as `maintenance.housekeeping` asks for it
  (`Store.prune` with KEEP_DONE and KEEP_SESSIONS, `reclaim_space`).

The database is kept with `storage.durability: normal` (what is kept is the same; a run does
not wait for the disk at every webhook). The WAL's size is not the service's: webhooks come
back to back here, with no idle moment for the checkpointer to catch up in.

Every `--report-every` days it prints the rows of each table, the database's and its WAL's
size and the pages free in the file. What grows from one report to the next at the end of
the run, past every retention period, grows without bound.

    .venv/bin/python bench/months.py [--days 120] [--sessions 3] [--plays 20]
        [--progress-every 10] [--minutes 45] [--report-every 15]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from watchbridge.config import load_config  # noqa: E402
from watchbridge.ingest import parse  # noqa: E402
from watchbridge.maintenance import KEEP_DONE, KEEP_SESSIONS  # noqa: E402
from watchbridge.model import Accepted  # noqa: E402
from watchbridge.store import KEEP_MARKS, Settlement  # noqa: E402
from watchbridge.webhooks import ingest_job, profile_for  # noqa: E402
from watchbridge.wiring import build_runtime  # noqa: E402

DAY, HOUR = 86400.0, 3600.0
FIXTURES = ROOT / "tests" / "fixtures"
TICKS = 10_000_000  # Jellyfin's ticks a second
LINK = "trakt-serializd"


def write_config(work: Path) -> Path:
    path = work / "watchbridge.yaml"
    path.write_text(
        f"""
server: {{host: 127.0.0.1, port: 9, webhook_secret: months-secret-123}}
storage: {{path: {work / "wb.db"}, durability: normal}}
logging: {{level: warning}}
services:
  trakt: {{client_id: months, client_secret: months, api_url: "http://127.0.0.1:9"}}
profiles:
  alex:
    users: {{plex: ["1"], jellyfin: [alex]}}
    accounts: {{trakt: {{}}}}
""",
        encoding="utf-8",
    )
    return path


def jellyfin_body(template: dict[str, Any], n: int, kind: str, seconds: float) -> bytes:
    body = dict(template)
    body["NotificationType"] = kind
    body["ItemId"] = f"{n:032x}"
    body["Provider_tmdb"] = str(500_000 + n // 10)
    body["Provider_tvdb"] = str(900_000 + n)
    body["Provider_imdb"] = f"tt9{n:07d}"
    body["SeasonNumber"], body["EpisodeNumber"] = 1 + n % 10 // 5, 1 + n % 10
    body["PlaybackPositionTicks"] = int(seconds * TICKS)
    body["IsPaused"] = False
    if kind == "PlaybackStop":
        body["PlayedToCompletion"] = True
    return json.dumps(body).encode()


def plex_body(template: dict[str, Any], n: int, event: str) -> tuple[bytes, str]:
    payload = json.loads(json.dumps(template))
    payload["event"] = event
    meta = payload["Metadata"]
    meta["ratingKey"], meta["key"] = str(n), f"/library/metadata/{n}"
    meta["guid"] = f"plex://movie/{n:024x}"
    meta["Guid"] = [{"id": f"imdb://tt{n}"}, {"id": f"tmdb://{n}"}]
    boundary = "monthsboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\n'
        "Content-Type: application/json\r\n\r\n"
        f"{json.dumps(payload)}\r\n--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


def tables(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != '_migrations' ORDER BY name"
            )
        ]
        found = {name: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0] for name in names}
        found["(free pages)"] = conn.execute("PRAGMA freelist_count").fetchone()[0]
        found["(pages)"] = conn.execute("PRAGMA page_count").fetchone()[0]
        namespaces = conn.execute(
            "SELECT namespace, COUNT(*) FROM id_cache GROUP BY 1 ORDER BY 1"
        ).fetchall()
        for namespace, count in namespaces:
            found[f"id_cache:{namespace}"] = count
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--plays", type=int, default=20)
    parser.add_argument("--progress-every", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--report-every", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wb-months-"))
    db = work / "wb.db"
    start = time.time() - args.days * DAY
    clock = [start]
    runtime = build_runtime(load_config(write_config(work)), clock=lambda: clock[0])
    runtime.open()
    store = runtime.store
    jellyfin = json.loads((FIXTURES / "jellyfin" / "playback_start_episode.json").read_text())
    plex = json.loads((FIXTURES / "plex" / "movie_media_scrobble.json").read_text())
    episode = movie = 0
    webhooks = 0
    began = time.monotonic()
    reports: list[tuple[int, dict[str, int]]] = []

    def post(source: str, body: bytes, content_type: str) -> None:
        nonlocal webhooks
        result = parse(source, body, content_type)
        if not isinstance(result, Accepted):
            return
        jobs = []
        for event in result.events:
            profile = profile_for(runtime.config, event)
            if profile is not None:
                jobs.append(ingest_job(runtime, profile, event, result.document))
        store.ingest_many(jobs)
        webhooks += 1

    def deliver() -> None:
        while batch := store.claim("months-worker", clock[0], limit=500):
            store.settle(clock[0], [Settlement(item.id, "done") for item in batch])

    def housekeeping() -> None:
        store.prune(clock[0], KEEP_DONE, KEEP_SESSIONS, keep_marks=KEEP_MARKS)
        store.reclaim_space()

    try:
        for day in range(args.days):
            midnight = start + day * DAY
            # The evening's viewings: Jellyfin sessions from 19:00, Plex plays through the day.
            for hour in range(24):
                clock[0] = midnight + hour * HOUR
                run = store.start_run(LINK, clock[0])
                if run is not None:
                    store.finish_run(run, clock[0] + 5, "ok", {"plays": 0}, 2)
                housekeeping()
            for s in range(args.sessions):
                clock[0] = midnight + 19 * HOUR + s * (args.minutes * 60 + 600)
                length = args.minutes * 60
                post(
                    "jellyfin",
                    jellyfin_body(jellyfin, episode, "PlaybackStart", 0),
                    "application/json",
                )
                at = 0.0
                while at + args.progress_every < length:
                    at += args.progress_every
                    clock[0] += args.progress_every
                    body = jellyfin_body(jellyfin, episode, "PlaybackProgress", at)
                    post("jellyfin", body, "application/json")
                clock[0] += args.progress_every
                body = jellyfin_body(jellyfin, episode, "PlaybackStop", length)
                post("jellyfin", body, "application/json")
                deliver()
                episode += 1
            for p in range(args.plays):
                clock[0] = midnight + 8 * HOUR + p * 2400.0
                for event in ("media.play", "media.pause", "media.resume", "media.scrobble"):
                    post("plex", *plex_body(plex, 1_000_000 + movie, event))
                    clock[0] += 300.0
                post("plex", *plex_body(plex, 1_000_000 + movie, "media.stop"))
                deliver()
                movie += 1
            if (day + 1) % args.report_every == 0 or day + 1 == args.days:
                found = tables(db)
                found["db MB x100"] = int(db.stat().st_size / 2**20 * 100)
                wal = db.with_name(db.name + "-wal")
                found["wal MB x100"] = int(wal.stat().st_size / 2**20 * 100) if wal.exists() else 0
                reports.append((day + 1, found))
                print(
                    f"day {day + 1}: {webhooks} webhooks, {time.monotonic() - began:.0f} s",
                    file=sys.stderr,
                )
    finally:
        runtime.close()
    names = sorted({name for _, found in reports for name in found})
    width = max(len(name) for name in names)
    print(f"{'day':<{width}} " + " ".join(f"{day:>9}" for day, _ in reports))
    for name in names:
        values = [found.get(name, 0) for _, found in reports]
        print(f"{name:<{width}} " + " ".join(f"{v:>9}" for v in values))
    print(
        f"\nwebhooks: {webhooks}; retention: done {KEEP_DONE / DAY:.0f} d, sessions "
        f"{KEEP_SESSIONS / DAY:.0f} d, marks {KEEP_MARKS / DAY:.0f} d"
    )
    if args.keep:
        print(f"kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
