"""Where a webhook's durable part spends its CPU, measured in-process (no HTTP, no wrk).

The same Plex multipart bodies as `ingest.py` (a movie's media.play then media.scrobble, 30 KB
thumb) go through the three steps the route runs, timed apart:
  parse     `ingest.parse` (multipart, JSON, the Plex mapping)
  job       `webhooks.profile_for` + `webhooks.ingest_job`
  record    `Store.ingest_jobs` in transactions of --group webhooks (the playback decision
            and its SQL), as the ingest writer runs them
  commit    BEGIN IMMEDIATE and COMMIT (the disk sync) of each group
and the record step's statements are timed one by one. Prints microseconds per webhook, the
median of --rounds rounds. `--cpu-time` counts the process's CPU time (all its threads: the
checkpointer's too) instead of the wall clock: what other processes take of the cores no
longer counts, so before/after runs on a loaded machine compare, and the commit shows the CPU
of the disk sync, not the wait for it.

    .venv/bin/python bench/ingest_parts.py [--webhooks 1000] [--rounds 5] [--group 32] [--cpu-time]
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from watchbridge.alerts import Notifier  # noqa: E402
from watchbridge.app import Runtime  # noqa: E402
from watchbridge.config import load_config  # noqa: E402
from watchbridge.ingest import parse  # noqa: E402
from watchbridge.metrics import Metrics  # noqa: E402
from watchbridge.model import Accepted  # noqa: E402
from watchbridge.store import IngestJob  # noqa: E402
from watchbridge.webhooks import ingest_job, profile_for  # noqa: E402

SAMPLE = ROOT / "tests" / "fixtures" / "plex" / "movie_media_scrobble.json"
THUMB = bytes(range(256)) * 120
BOUNDARY = "wbboundary"
Clock = Callable[[], float]
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def plex_body(template: dict[str, Any], n: int, event: str) -> bytes:
    """The body `ingest.py`'s wrk script posts for movie `n`."""
    payload = json.loads(json.dumps(template))
    payload["event"] = event
    payload["Player"]["uuid"] = "benchplayer1"
    meta = payload["Metadata"]
    meta["ratingKey"], meta["key"] = str(n), f"/library/metadata/{n}"
    meta["guid"] = f"plex://movie/{n:024x}"
    meta["Guid"] = [{"id": f"imdb://tt{n}"}, {"id": f"tmdb://{n}"}]
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="payload"\r\n'
        "Content-Type: application/json\r\n\r\n"
    )
    tail = (
        f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="thumb"; filename="t.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    body = head.encode() + json.dumps(payload).encode() + tail.encode() + THUMB
    return body + f"\r\n--{BOUNDARY}--\r\n".encode()


class TimedConnection:
    """Times each statement the record step runs (a bench-only view of the connection)."""

    def __init__(self, conn: Any, seconds: dict[str, float], clock: Clock) -> None:
        self._conn, self._seconds, self._clock = conn, seconds, clock

    def execute(self, sql: str, *args: Any) -> Any:
        started = self._clock()
        try:
            return self._conn.execute(sql, *args)
        finally:
            self._seconds[" ".join(sql.split()[:4])] += self._clock() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def start_runtime(work: Path) -> Runtime:
    config_path = work / "watchbridge.yaml"
    config_path.write_text(
        f"""
server: {{host: 127.0.0.1, port: 8080, webhook_secret: bench-secret-123}}
storage: {{path: {work / "wb.db"}}}
services:
  trakt: {{client_id: bench}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{trakt: {{}}}}
""",
        encoding="utf-8",
    )
    config = load_config(config_path)
    runtime = Runtime(config=config, metrics=Metrics(), notifier=Notifier(config.alerts))
    runtime.open()
    return runtime


def one_round(
    runtime: Runtime,
    bodies: Sequence[bytes],
    group: int,
    statements: dict[str, float],
    clock: Clock,
) -> tuple[float, float, float, float]:
    """Seconds (of `clock`) spent in parse, job, record and commit for `bodies`."""
    started = clock()
    results = [parse("plex", body, CONTENT_TYPE) for body in bodies]
    parsed = clock()
    jobs: list[IngestJob] = []
    for result in results:
        assert isinstance(result, Accepted), result
        event = result.events[0]
        profile = profile_for(runtime.config, event)
        assert profile is not None
        jobs.append(ingest_job(runtime, profile, event, result.document))
    built = clock()
    store, recording = runtime.store, 0.0
    for first in range(0, len(jobs), group):
        with store.transaction() as conn:
            began = clock()
            timed = cast(sqlite3.Connection, TimedConnection(conn, statements, clock))
            store.ingest_jobs(timed, jobs[first : first + group])
            recording += clock() - began
    committed = clock()
    return parsed - started, built - parsed, recording, committed - built - recording


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=1000, help="webhooks per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--group", type=int, default=32, help="webhooks per transaction")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="count the process's CPU time, not the wall clock (for a loaded machine)",
    )
    args = parser.parse_args()
    clock: Clock = time.process_time if args.cpu_time else time.perf_counter

    template = json.loads(SAMPLE.read_text())
    total = args.webhooks * (args.rounds + 1)  # the first round warms up and is not counted
    bodies = [
        plex_body(template, 1_000_000 + i // 2, "media.play" if i % 2 == 0 else "media.scrobble")
        for i in range(total)
    ]
    with tempfile.TemporaryDirectory(prefix="wb-ingest-parts-") as work:
        runtime = start_runtime(Path(work))
        # As `serve` does once started: else each full collection walks every module and
        # object of the start (~50 ms), a stall the service does not have.
        gc.collect()
        gc.freeze()
        try:
            rounds = []
            statements: dict[str, float] = collections.defaultdict(float)
            for index in range(args.rounds + 1):
                chunk = bodies[index * args.webhooks : (index + 1) * args.webhooks]
                if index == 0:
                    one_round(runtime, chunk, args.group, collections.defaultdict(float), clock)
                    continue
                rounds.append(one_round(runtime, chunk, args.group, statements, clock))
        finally:
            runtime.close()

    per_webhook = 1e6 / args.webhooks
    print(
        f"{args.webhooks} Plex multipart webhooks x {args.rounds} rounds, "
        f"{args.group} per transaction (storage.durability full); "
        f"us of {'CPU time' if args.cpu_time else 'wall clock'} per webhook, median:"
    )
    for name, index in (("parse", 0), ("job", 1), ("record", 2), ("commit", 3)):
        print(f"  {name:8s} {statistics.median(r[index] for r in rounds) * per_webhook:7.1f}")
    print(f"  {'total':8s} {statistics.median(sum(r) for r in rounds) * per_webhook:7.1f}")
    counted = args.webhooks * args.rounds
    print("record's statements (us per webhook, all rounds):")
    for sql, seconds in sorted(statements.items(), key=lambda item: -item[1]):
        print(f"  {seconds / counted * 1e6:7.1f}  {sql}")
    print(f"  {sum(statements.values()) / counted * 1e6:7.1f}  all statements")


if __name__ == "__main__":
    main()
