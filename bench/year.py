"""A year of data: what the always-on parts cost on a large database.

Fills one database through the store's own calls (webhooks through `ingest.parse`,
`webhooks.ingest_job` and `Store.ingest_many`; a link's rows through `sync.outbox_rows` and
`Store.enqueue`; outcomes through `claim` and `settle`; `mirror_put`, `cache_put`, sync runs,
alert conditions), then measures, on that database:

  /metrics, /api/status, the status page and one webhook, served by the real app and server
  (`wiring` routes, `server.serve`) in a child process without its background tasks (the
  delivery worker and the hourly housekeeping would change the data under the measurement):
  wall time per request (median) and the child's CPU per request (/proc, over --repeat);
  `watchbridge status` as a process of its own (wall and CPU, median);
  one housekeeping round's database work (`Store.prune`, `release_stale_claims`,
  `reclaim_space`) in-process on a copy;
  the query plan of every statement those run, and of the delivery worker's `claim` and
  `next_due`: a `SCAN` of a table without an index is reported.

Defaults: 100,000 outbox rows, of which 60,000 delivered in the last week (not yet pruned),
2,000 dead, 5,000 pending (held for a sign-in, a fifth unmatched) and the rest a link's
first sync delivered eight days ago (what the next housekeeping prunes); 20,000 playback
sessions from as many webhooks over 390 days; 50,000 mirrored plays; 500 alert conditions.

    .venv/bin/python bench/year.py [--outbox 100000] [--done 60000] [--dead 2000]
        [--pending 5000] [--mirror 50000] [--sessions 20000] [--alerts 500] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from ingest_parts import CONTENT_TYPE, SAMPLE, plex_body  # noqa: E402
from watchbridge.alerts import NAMESPACE, AlertBook, Condition, SharedConditions  # noqa: E402
from watchbridge.config import load_config  # noqa: E402
from watchbridge.ingest import parse  # noqa: E402
from watchbridge.model import Accepted  # noqa: E402
from watchbridge.reconcile import Action  # noqa: E402
from watchbridge.store import Settlement, Store  # noqa: E402
from watchbridge.sync import outbox_rows  # noqa: E402
from watchbridge.webhooks import ingest_job, profile_for  # noqa: E402
from watchbridge.wiring import build_runtime  # noqa: E402

DAY = 86400.0
SECRET = "bench-secret-123"
LINK = "trakt-serializd"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SIGN_IN = "Trakt refused the sign-in: run `watchbridge auth trakt --profile me`"


def write_config(work: Path, port: int) -> Path:
    path = work / "watchbridge.yaml"
    path.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {work / "wb.db"}}}
logging: {{level: warning}}
alerts: {{urls: ["json://127.0.0.1:9/"]}}
services:
  trakt: {{client_id: bench, client_secret: bench, api_url: "http://127.0.0.1:9"}}
  serializd: {{}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts:
      trakt: {{}}
      serializd: {{email: me@example.org, password: bench-password}}
links:
  {LINK}: {{services: [trakt, serializd], kinds: [history], interval: 1h, first_run: apply}}
""",
        encoding="utf-8",
    )
    return path


# --------------------------------------------------------------------------- filling


def fill(config_path: Path, args: argparse.Namespace, now: float) -> dict[str, int]:
    clock = [now]
    runtime = build_runtime(load_config(config_path), clock=lambda: clock[0])
    runtime.open()
    store, rng = runtime.store, random.Random(7)
    try:
        store.put_token(
            "trakt",
            "me",
            {"access_token": "a", "refresh_token": "r", "created_at": now, "expires_in": 7776000},
            now,
        )
        # Webhooks over 390 days, one movie each: its playback session, event and rows.
        template = json.loads(SAMPLE.read_text())
        # Each play makes two sessions: its own and its item's marks (the last completion).
        webhooks = args.sessions // 2
        start = now - 390 * DAY
        step = 389 * DAY / max(webhooks, 1)
        for first in range(0, webhooks, 64):
            jobs = []
            for n in range(first, min(first + 64, webhooks)):
                clock[0] = start + n * step
                result = parse("plex", plex_body(template, n, "media.scrobble"), CONTENT_TYPE)
                assert isinstance(result, Accepted), result
                event = result.events[0]
                profile = profile_for(runtime.config, event)
                assert profile is not None
                jobs.append(ingest_job(runtime, profile, event, result.document))
            store.ingest_many(jobs)
        clock[0] = now
        # A link's first sync fills the rest of the outbox: plays for Serializd.
        webhook_rows = sum(store.outbox_counts().values())
        missing = max(0, args.outbox - webhook_rows)
        for first in range(0, missing, 5000):
            actions = tuple(
                Action(
                    kind="add_play",
                    target="serializd",
                    item=f"episode:tmdb:{100000 + n // 200}:s{1 + n // 20 % 10}e{1 + n % 20}",
                    reason="only on trakt",
                    at=now - 400 * DAY + n * 300.0,
                    source=f"trakt-{n}",
                )
                for n in range(first, min(first + 5000, missing))
            )
            rows, _ = outbox_rows(LINK, "me", actions)
            store.enqueue(rows, now - 9 * DAY)
        # Outcomes: every row is claimed as the worker would, then settled.
        claimed = []
        while batch := store.claim("bench-filler", now + DAY, limit=2000):
            claimed += [item.id for item in batch]
        rng.shuffle(claimed)
        pending = claimed[: args.pending]
        dead = claimed[args.pending : args.pending + args.dead]
        done = claimed[args.pending + args.dead : args.pending + args.dead + args.done]
        old = claimed[args.pending + args.dead + args.done :]
        unmatched = len(pending) // 5
        settle = [
            Settlement(i, "pending", now + 30 * DAY, "unmatched: no TMDB id Serializd knows")
            for i in pending[:unmatched]
        ]
        settle += [
            Settlement(i, "pending", now + 30 * DAY, SIGN_IN, False, True)
            for i in pending[unmatched:]
        ]
        settle += [
            Settlement(i, "dead", None, "Serializd answered 400: no such show") for i in dead
        ]
        store.settle(now - DAY, settle)
        for first in range(0, len(done), 5000):
            for i in done[first : first + 5000]:
                store.settle(now - rng.uniform(0, 6.5 * DAY), [Settlement(i, "done")])
        store.settle(now - 8 * DAY, [Settlement(i, "done") for i in old])
        for target in store.untold_dead_targets():
            store.told_dead(target, store.untold_dead(target, now), now)
        # What the link's baseline keeps: Trakt's plays.
        for first in range(0, args.mirror, 5000):
            plays = {
                str(9_000_000 + n): {
                    "item": f"episode:tmdb:{200000 + n // 200}:s1e{n % 200}",
                    "at": now - 400 * DAY + n * 600.0,
                }
                for n in range(first, min(first + 5000, args.mirror))
            }
            store.mirror_put("trakt", "me", f"link:{LINK}:plays", plays, now - DAY)
        for n in range(args.lookups):
            store.cache_put(
                "tmdb-show", f"tvdb:{n}", {"tmdb": n}, now - rng.uniform(0, 30 * DAY), 30 * DAY
            )
        # A month of hourly runs (older ones are pruned), one link.
        for hour in range(30 * 24, 0, -1):
            at = now - hour * 3600.0
            run = store.start_run(LINK, at)
            assert run is not None
            store.finish_run(run, at + 4, "ok", {"plays": 0}, 1)
        # Alert conditions: closed ones, each kept for its window.
        conditions = SharedConditions(store, AlertBook(365 * DAY), now)
        for n in range(args.alerts):
            sent = now - rng.uniform(0, 300 * DAY)
            kind = ("webhook_rejects", "service_unreachable", "dead_letter")[n % 3]
            closed = Condition(sent, f"problem {n}", open=False)
            conditions.update_now(kind, f"key-{n}", sent, lambda _, c=closed: (c, None))
        conditions.close()
        counts = store.outbox_counts()
    finally:
        runtime.close()
    with sqlite3.connect(config_path.parent / "wb.db") as db:
        sizes = {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in (
                "events",
                "outbox",
                "playback_sessions",
                "mirror",
                "id_cache",
                "sync_runs",
            )
        }
        sizes["alerts"] = db.execute(
            "SELECT COUNT(*) FROM id_cache WHERE namespace = ?", (NAMESPACE,)
        ).fetchone()[0]
    db_file = config_path.parent / "wb.db"
    sizes["file MB"] = db_file.stat().st_size // 2**20
    return {**{f"outbox {k}": v for k, v in counts.items()}, **sizes}


# --------------------------------------------------------------------------- query plans


@contextmanager
def traced(store: Store) -> Iterator[list[str]]:
    """Every statement the store's connections run meanwhile (bound values expanded)."""
    seen: list[str] = []
    connections = [store._conn]
    store._overview("SELECT 1")
    # The store's read connections (opened at their first use): the overview's is open now.
    for reads in (store._overview_reads, store._mirror_reads, store._collection_reads):
        if reads._conn is not None:
            connections.append(reads._conn)
    for conn in connections:
        conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        for conn in connections:
            conn.set_trace_callback(None)


SKIP = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA|VACUUM)\b", re.I)


def plans(path: Path, statements: list[str]) -> list[tuple[str, list[str]]]:
    """(statement, its plan's lines) of each distinct statement, on a connection of its own."""
    found, done = [], set()
    with sqlite3.connect(path) as db:
        for sql in statements:
            shape = re.sub(r"'[^']*'|\b\d+(\.\d+)?\b", "?", " ".join(sql.split()))
            if SKIP.match(sql) or shape in done:
                continue
            done.add(shape)
            try:
                rows = db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            except sqlite3.Error as exc:
                found.append((shape, [f"(no plan: {exc})"]))
                continue
            found.append((shape, [row[3] for row in rows]))
    return found


def scans(lines: list[str]) -> list[str]:
    """The plan lines that read a whole table without an index."""
    return [line for line in lines if re.match(r"SCAN \w+( AS \w+)?$", line.strip())]


def probe(config_path: Path, now: float, label: str) -> dict[str, tuple[float, float]]:
    """Query plans of the overview, ingest, claim and housekeeping, and the housekeeping
    round's database work timed (wall, CPU), in-process on a copy of the database."""
    work = config_path.parent
    copy = Path(tempfile.mkdtemp(prefix="wb-year-probe-", dir=work))
    shutil.copy(work / "wb.db", copy / "wb.db")
    probe_config = copy / "watchbridge.yaml"
    probe_config.write_text(
        config_path.read_text().replace(str(work / "wb.db"), str(copy / "wb.db"))
    )
    runtime = build_runtime(load_config(probe_config), clock=lambda: now)
    runtime.open()
    store, timings = runtime.store, {}
    from watchbridge.signins import current_sign_ins, gauges

    template = json.loads(SAMPLE.read_text())
    groups: dict[str, list[str]] = {}
    try:
        with traced(store) as seen:
            runtime.metrics.render()
        groups["/metrics"] = list(seen)
        with traced(store) as seen:
            runtime.store_status()
            current_sign_ins(runtime.config, store, now)
            gauges(runtime.config, store, lambda: now)
        groups["status (page, API, command)"] = list(seen)
        result = parse("plex", plex_body(template, 7_777_777, "media.play"), CONTENT_TYPE)
        assert isinstance(result, Accepted)
        event = result.events[0]
        job = ingest_job(runtime, "me", event, result.document)
        stop = parse("plex", plex_body(template, 7_777_777, "media.stop"), CONTENT_TYPE)
        assert isinstance(stop, Accepted)
        with traced(store) as seen:
            store.ingest_many([job])
            store.ingest_many([ingest_job(runtime, "me", stop.events[0], stop.document)])
        groups["webhook ingest (play, then stop: supersede)"] = list(seen)
        for target in ("trakt", "serializd"):  # each target's loop, at every wake
            began, cpu = time.perf_counter(), time.process_time()
            store.claim("bench-worker", now, 10, [target])
            store.next_due([target])
            timings[f"worker wake: {target}"] = (
                time.perf_counter() - began,
                time.process_time() - cpu,
            )
        store.release_claims(now, "bench-worker", spend=False)
        with traced(store) as seen:
            store.next_due()
            store.next_due(["trakt"])
            store.claim("bench-worker", now, 10, ["trakt", "serializd"])
            store.claim("bench-worker", now, 10)
            store.release_claims(now, "bench-worker", spend=False)
        groups["delivery worker (next_due, claim)"] = list(seen)
        with traced(store) as seen:
            began, cpu = time.perf_counter(), time.process_time()
            pruned = store.prune(now, 7 * DAY, 400 * DAY)
            timings["housekeeping: prune"] = (
                time.perf_counter() - began,
                time.process_time() - cpu,
            )
            began, cpu = time.perf_counter(), time.process_time()
            store.release_stale_claims(now, 30 * 60.0, "service-")
            timings["housekeeping: stale claims"] = (
                time.perf_counter() - began,
                time.process_time() - cpu,
            )
            size = (copy / "wb.db").stat().st_size
            began, cpu = time.perf_counter(), time.process_time()
            reclaimed = store.reclaim_space()
            timings["housekeeping: reclaim space"] = (
                time.perf_counter() - began,
                time.process_time() - cpu,
            )
        groups["housekeeping (prune, stale claims, reclaim)"] = list(seen)
        print(
            f"housekeeping pruned {pruned}; reclaimed {reclaimed} pages "
            f"({size // 2**20} MB -> {(copy / 'wb.db').stat().st_size // 2**20} MB)"
        )
    finally:
        runtime.close()
    print(f"\nquery plans ({label}); a SCAN of a table without an index is marked !!")
    for name, statements in groups.items():
        print(f"  {name}:")
        for sql, lines in plans(copy / "wb.db", statements):
            bad = scans(lines)
            mark = "!!" if bad else "  "
            print(f"   {mark} {sql[:150]}")
            for line in lines:
                print(f"         {line}")
    shutil.rmtree(copy)
    return timings


# --------------------------------------------------------------------------- the service


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def serve(config_path: str) -> None:
    """The child: the service's app and server without its background tasks."""
    from watchbridge import statuspage, webhooks
    from watchbridge.app import create_app
    from watchbridge.server import serve as run

    config = load_config(Path(config_path))
    runtime = build_runtime(config)
    run(create_app(runtime, extra_routes=[*webhooks.ROUTES, *statuspage.ROUTES]), config)


def measure_service(config_path: Path, port: int, repeat: int) -> dict[str, tuple[float, float]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    url = f"http://127.0.0.1:{port}"
    template = json.loads(SAMPLE.read_text())
    bodies = iter(
        plex_body(template, 8_000_000 + n, "media.scrobble") for n in range(10 * repeat + 10)
    )
    results: dict[str, tuple[float, float]] = {}
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(600):
                try:
                    if client.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                raise SystemExit("the bench's server did not start")
            requests: dict[str, Callable[[], httpx.Response]] = {
                "/metrics": lambda: client.get(f"{url}/metrics"),
                "/api/status": lambda: client.get(f"{url}/api/status"),
                "status page": lambda: client.get(f"{url}/"),
                "one webhook": lambda: client.post(
                    f"{url}/webhooks/plex/{SECRET}",
                    content=next(bodies),
                    headers={"content-type": CONTENT_TYPE},
                ),
            }
            for name, request in requests.items():
                for _ in range(3):  # warm up
                    request().raise_for_status()
                walls = []
                cpu = cpu_seconds(proc.pid)
                for _ in range(repeat):
                    began = time.perf_counter()
                    request().raise_for_status()
                    walls.append(time.perf_counter() - began)
                results[name] = (statistics.median(walls), (cpu_seconds(proc.pid) - cpu) / repeat)
    finally:
        proc.terminate()
        proc.wait()
    return results


def measure_command(config_path: Path, runs: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "watchbridge", "status", "--config", str(config_path)],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outbox", type=int, default=100_000)
    parser.add_argument("--done", type=int, default=60_000, help="delivered in the last week")
    parser.add_argument("--dead", type=int, default=2_000)
    parser.add_argument("--pending", type=int, default=5_000)
    parser.add_argument("--mirror", type=int, default=50_000, help="mirrored Trakt plays")
    parser.add_argument("--sessions", type=int, default=20_000, help="webhooks, one session each")
    parser.add_argument("--lookups", type=int, default=5_000, help="id cache entries")
    parser.add_argument("--alerts", type=int, default=500, help="alert conditions")
    parser.add_argument("--repeat", type=int, default=20, help="requests per measurement")
    parser.add_argument("--keep", type=Path, help="fill (or reuse) the database in this folder")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from startup import free_port

    # The filled database stays in --keep (filled once, measured again on a fresh copy of
    # it each run: the same data before and after a change).
    kept = args.keep or Path(tempfile.mkdtemp(prefix="wb-year-filled-"))
    kept.mkdir(parents=True, exist_ok=True)
    if not (kept / "wb.db").exists():
        now = time.time()
        began = time.perf_counter()
        sizes = fill(write_config(kept, 9), args, now)
        (kept / "now").write_text(repr(now))
        print(
            f"filled in {time.perf_counter() - began:.0f} s: "
            + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        )
    now = float((kept / "now").read_text())
    work = Path(tempfile.mkdtemp(prefix="wb-year-"))
    shutil.copy(kept / "wb.db", work / "wb.db")
    port = free_port()
    config_path = write_config(work, port)
    try:
        timings = probe(config_path, now, "on a copy")
        service = measure_service(config_path, port, args.repeat)
        command = measure_command(config_path, 3)
    finally:
        shutil.rmtree(work)
        if args.keep is None:
            shutil.rmtree(kept)
    print(f"\nper request, the server's CPU over {args.repeat} requests (median wall):")
    for name, (wall, cpu) in service.items():
        print(f"  {name:16s} {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms CPU")
    wall, cpu = command
    print(
        f"  {'watchbridge status':16s} {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms CPU"
        " (a process of its own, start-up included)"
    )
    for name, (wall, cpu) in timings.items():
        print(f"  {name:16s} {wall * 1000:8.1f} ms wall {cpu * 1000:8.1f} ms CPU (in-process)")
    scrape = service["/metrics"][1]
    print(f"\na scrape every 15 s: {scrape / 15 * 100:.3f} % of a core (target well under 1 %)")


if __name__ == "__main__":
    main()
