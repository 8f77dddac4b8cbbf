"""Months of steady use, in minutes: what the database keeps as time goes by.

One household's webhooks through the real code paths (`ingest.parse`, `webhooks.ingest_job`,
`Store.ingest_many`), on a clock of its own (`build_runtime(clock=...)`) that moves through
`--days` simulated days:

- `--sessions` Jellyfin viewings a day from 19:00, each a PlaybackStart, a PlaybackProgress
  every `--progress-every` seconds (as the webhook plugin sends them) for `--minutes` minutes
  and a completed PlaybackStop, each of an episode not played before;
- `--plays` Plex viewings a day from 08:00, one every 40 minutes (play, pause, resume,
  scrobble, stop five minutes apart) of movies not played before;
- each viewing's rows delivered as it ends (claimed and settled as the delivery worker does);
- a link run at the start of each hour (`start_run`, then `finish_run` 5 s later);
- the service's hourly housekeeping itself at half past each hour (`maintenance.housekeeping`:
  its prune with the product's retention, stale claims, `reclaim_space` and the rest).

Everything happens in time order, on a clock that only moves forward: each hour's webhooks,
deliveries, link run and housekeeping at their own times.

The database is kept with `storage.durability: normal` (what is kept is the same; a run does
not wait for the disk at every webhook). The WAL's size is not the service's: webhooks come
back to back here, with no idle moment for the checkpointer to catch up in.

Every `--report-every` days it prints the rows of each table, the database's and its WAL's
size and the pages free in the file; then each table's retention and whether the run went
past it (a table not yet past its retention still grows, and says nothing yet), and the
tables that grew between the last two reports though past their retention: those grow
without bound. The default `--days` (430) goes past the longest retention (sessions and
items' last completions, 400 days). `--keep` keeps the work folder (its database) and prints
where it is.

    .venv/bin/python bench/months.py [--days 430] [--sessions 3] [--plays 20]
        [--progress-every 10] [--minutes 45] [--report-every 15] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from watchbridge.app import Runtime  # noqa: E402
from watchbridge.config import load_config  # noqa: E402
from watchbridge.ingest import parse  # noqa: E402
from watchbridge.maintenance import KEEP_DONE, KEEP_SESSIONS, housekeeping  # noqa: E402
from watchbridge.model import Accepted  # noqa: E402
from watchbridge.store import KEEP_MARKS, KEEP_RUNS, Settlement  # noqa: E402
from watchbridge.webhooks import ingest_job, profile_for  # noqa: E402
from watchbridge.wiring import build_runtime, trakt_client  # noqa: E402

DAY, HOUR = 86400.0, 3600.0
FIXTURES = ROOT / "tests" / "fixtures"
TICKS = 10_000_000  # Jellyfin's ticks a second
LINK = "trakt-serializd"
# What each table keeps, as the housekeeping prunes it: past this, a table must stop growing.
RETENTION = {
    "events": KEEP_DONE,
    "outbox": KEEP_DONE,
    "sync_runs": KEEP_RUNS,
    "playback_sessions": max(KEEP_SESSIONS, KEEP_MARKS),
}
# One thing the simulation does at a time: a webhook (source, body, content type), a
# delivery pass, a link run's start or end, or a round of housekeeping.
Action = (
    tuple[Literal["post"], str, bytes, str] | tuple[Literal["deliver", "run", "finish", "keep"]]
)


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


def day_plan(
    args: argparse.Namespace,
    midnight: float,
    day: int,
    jellyfin: dict[str, Any],
    plex: dict[str, Any],
) -> list[tuple[float, Action]]:
    """Day `day`'s actions and their times (in no order), each viewing of an episode or a
    movie not played before."""
    plan: list[tuple[float, Action]] = []
    for hour in range(24):
        plan.append((midnight + hour * HOUR, ("run",)))
        plan.append((midnight + hour * HOUR + 5, ("finish",)))
        plan.append((midnight + hour * HOUR + HOUR / 2, ("keep",)))
    json_type = "application/json"
    length = args.minutes * 60
    for s in range(args.sessions):
        n = day * args.sessions + s
        at = midnight + 19 * HOUR + s * (length + 600)
        plan.append(
            (at, ("post", "jellyfin", jellyfin_body(jellyfin, n, "PlaybackStart", 0), json_type))
        )
        played = 0.0
        while played + args.progress_every < length:
            played += args.progress_every
            body = jellyfin_body(jellyfin, n, "PlaybackProgress", played)
            plan.append((at + played, ("post", "jellyfin", body, json_type)))
        body = jellyfin_body(jellyfin, n, "PlaybackStop", length)
        plan.append((at + played + args.progress_every, ("post", "jellyfin", body, json_type)))
        plan.append((at + played + args.progress_every, ("deliver",)))
    for p in range(args.plays):
        n = 1_000_000 + day * args.plays + p
        at = midnight + 8 * HOUR + p * 2400.0
        events = ("media.play", "media.pause", "media.resume", "media.scrobble", "media.stop")
        for i, event in enumerate(events):
            plan.append((at + i * 300.0, ("post", "plex", *plex_body(plex, n, event))))
        plan.append((at + 4 * 300.0, ("deliver",)))
    return plan


async def simulate(
    args: argparse.Namespace, work: Path, clock: list[float]
) -> tuple[int, list[tuple[int, dict[str, int]]]]:
    """Feed `args.days` days through the service, in time order; the webhooks posted and
    each report (day, figures)."""
    db = work / "wb.db"
    runtime = build_runtime(load_config(write_config(work)), clock=lambda: clock[0])
    runtime.open()
    store = runtime.store
    trakt = trakt_client(runtime.config, runtime)  # one for every round, as Maintenance
    jellyfin = json.loads((FIXTURES / "jellyfin" / "playback_start_episode.json").read_text())
    plex = json.loads((FIXTURES / "plex" / "movie_media_scrobble.json").read_text())
    webhooks = 0
    began = time.monotonic()
    reports: list[tuple[int, dict[str, int]]] = []
    # Actions due, by time (ties in the order planned): a day's viewings running past its
    # midnight are done in the next day's turn, in time order with it.
    due: list[tuple[float, int, Action]] = []
    planned = 0
    run: int | None = None
    start = clock[0]
    try:
        for day in range(args.days):
            midnight = start + day * DAY
            for at, action in day_plan(args, midnight, day, jellyfin, plex):
                heapq.heappush(due, (at, planned, action))
                planned += 1
            while due and due[0][0] < midnight + DAY:
                at, _, action = heapq.heappop(due)
                assert at >= clock[0], "the simulated clock went back"
                clock[0] = at
                if action[0] == "post":
                    _, source, body, content_type = action
                    webhooks += post(runtime, source, body, content_type)
                elif action[0] == "deliver":
                    while batch := store.claim("months-worker", clock[0], limit=500):
                        store.settle(clock[0], [Settlement(item.id, "done") for item in batch])
                elif action[0] == "run":
                    run = store.start_run(LINK, clock[0])
                elif action[0] == "finish":
                    if run is not None:
                        store.finish_run(run, clock[0], "ok", {"plays": 0}, 2)
                    run = None
                else:
                    await housekeeping(runtime, trakt)
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
        if trakt is not None:
            await trakt.aclose()
        runtime.close()
    return webhooks, reports


def post(runtime: Runtime, source: str, body: bytes, content_type: str) -> int:
    """One webhook through parse, ingest_job and Store.ingest_many: 1 when accepted."""
    result = parse(source, body, content_type)
    if not isinstance(result, Accepted):
        return 0
    jobs = []
    for event in result.events:
        profile = profile_for(runtime.config, event)
        if profile is not None:
            jobs.append(ingest_job(runtime, profile, event, result.document))
    runtime.store.ingest_many(jobs)
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=430)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--plays", type=int, default=20)
    parser.add_argument("--progress-every", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=45.0)
    parser.add_argument("--report-every", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its database)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wb-months-"))
    clock = [time.time() - args.days * DAY]
    webhooks, reports = asyncio.run(simulate(args, work, clock))
    names = sorted({name for _, found in reports for name in found})
    width = max(len(name) for name in names)
    print(f"{'day':<{width}} " + " ".join(f"{day:>9}" for day, _ in reports))
    for name in names:
        values = [found.get(name, 0) for _, found in reports]
        print(f"{name:<{width}} " + " ".join(f"{v:>9}" for v in values))
    print(f"\nwebhooks: {webhooks}; retention, and whether {args.days} days went past it:")
    for name, keep in RETENTION.items():
        past = "past it" if args.days * DAY > keep else "NOT YET: still grows, tells nothing"
        print(f"  {name}: {keep / DAY:.0f} d, {past}")
    if len(reports) >= 2:
        (then, before), (_, last) = reports[-2], reports[-1]
        grew = [
            name
            for name, keep in RETENTION.items()
            if then * DAY > keep and last.get(name, 0) > before.get(name, 0)
        ]
        print(f"grew between the last two reports though past its retention: {grew or 'none'}")
    if args.keep:
        print(f"kept: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
