"""Backlog drain: 10,000 plays queued during a Trakt outage, then Trakt comes back.

1. An in-process FakeTrakt holds 10,000 movies (added directly, with a dict index so the fake
   is not the bottleneck) and answers 503 to every request (`down`).
2. `watchbridge serve` (storage.durability full, one profile on Plex account 1 with Trakt)
   gets 10,000 Plex `media.scrobble` webhooks, one per distinct movie (Plex multipart with a
   30 KB thumb, a new connection each, --concurrency at a time).
3. "One hour" of outage is simulated by age, not by waiting: the config sets
   delivery.late_after to 5 s (default 2 min), and the fake stays down until every play is
   older than that. What the outage length changes for delivery is exactly this: plays older
   than late_after are no longer live scrobbles but go to Trakt as dated history adds (up to
   200 per request), so after that point a 1-hour and a 10-second outage look the same to the
   Trakt target. Everything else (retry_after 30 s, backoff, holds) keeps its default, so
   per-row retry times and target holds are real-time and bound the drain time (see below).
4. The fake turns healthy; the bench counts every request it receives until `history()` has
   10,000 plays, then checks each movie is there exactly once.

Prints: requests during the outage, requests after recovery (by route), drain time, plays
landed, duplicates, and the outbox afterwards. Target: <= 50 requests after recovery.

    .venv/bin/python bench/backlog.py [--plays 10000] [--drain-timeout 150] [--retry-after 30s]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.base import JSON_TYPE, Request, Response  # noqa: E402
from tests.fakes.base import _Knob as Knob  # noqa: E402
from tests.fakes.base import _Route as Route  # noqa: E402
from tests.fakes.trakt import CLIENT_ID, FakeTrakt  # noqa: E402
from tests.harness import sign_in_trakt, start_logged  # noqa: E402

SECRET = "bench-secret-123"
THUMB = bytes(range(256)) * 120  # a 30 KB poster, as Plex attaches to a scrobble
SAMPLE = ROOT / "tests" / "fixtures" / "plex" / "movie_media_scrobble.json"
FIRST_MOVIE = 3_000_000
TARGET_REQUESTS = 50


class OutageTrakt(FakeTrakt):
    """FakeTrakt that answers 503 to everything while `down`."""

    def __init__(self) -> None:
        self.down = False
        super().__init__()

    def _answer(
        self, req: Request, found: Route | None, matched: list[Route], knob: Knob | None
    ) -> Response | None:
        if self.down:  # the request is recorded (base _handle) but never reaches Trakt
            return Response(503, b'{"error":"service unavailable"}', {"Content-Type": JSON_TYPE})
        return super()._answer(req, found, matched, knob)

    def play_count(self) -> int:
        with self.lock:
            return len(self.user.history)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plex_body(template: dict[str, Any], movie: int) -> bytes:
    payload = json.loads(json.dumps(template))
    meta = payload["Metadata"]
    meta["ratingKey"] = str(movie)
    meta["key"] = f"/library/metadata/{movie}"
    meta["guid"] = f"plex://movie/{movie:024x}"
    meta["Guid"] = [{"id": f"imdb://tt{movie}"}, {"id": f"tmdb://{movie}"}]
    boundary = "wbboundary"
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
        + json.dumps(payload).encode()
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="thumb"; '
        'filename="t.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + THUMB
        + f"\r\n--{boundary}--\r\n".encode()
    )


def start_service(
    work: Path, fake: FakeTrakt, late_after: str, retry_after: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    from watchbridge.store import Store

    port = free_port()
    db = work / "wb.db"
    config = work / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {db}, durability: full}}
delivery: {{late_after: {late_after}, retry_after: {retry_after}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{fake.url}", auth_url: "{fake.url}"}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{trakt: {{}}}}
""",
        encoding="utf-8",
    )
    store = Store.open(db)
    sign_in_trakt(store, fake, now=time.time())
    store.close()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "watchbridge", "serve", "--config", str(config)]
    return start_logged(argv, url, work / "service.log"), url, db


async def post_all(url: str, plays: int, concurrency: int, limit_s: float) -> dict[int, int]:
    """POST one media.scrobble per movie; returns answers by status (-1: transport error)."""
    template = json.loads(SAMPLE.read_text())
    statuses: collections.Counter[int] = collections.Counter()
    queue = iter(range(plays))
    deadline = time.monotonic() + limit_s
    headers = {"content-type": "multipart/form-data; boundary=wbboundary", "connection": "close"}

    async def worker(client: httpx.AsyncClient) -> None:
        for n in queue:
            if time.monotonic() > deadline:
                return
            try:
                answer = await client.post(
                    f"{url}/webhooks/plex/{SECRET}",
                    content=plex_body(template, FIRST_MOVIE + n),
                    headers=headers,
                )
                statuses[answer.status_code] += 1
            except httpx.TransportError:
                statuses[-1] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return dict(statuses)


def outbox_status(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        return {status: count for status, count in rows}
    finally:
        conn.close()


def by_route(requests: list[Request]) -> str:
    counts = collections.Counter(f"{r.method} {r.route or r.path} -> {r.status}" for r in requests)
    return ", ".join(f"{n} x {what}" for what, n in counts.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plays", type=int, default=10_000, help="plays queued in the outage")
    parser.add_argument("--concurrency", type=int, default=16, help="webhooks in flight")
    parser.add_argument("--late-after", default="5s", help="delivery.late_after of the service")
    parser.add_argument(
        "--retry-after", default="30s", help="delivery.retry_after of the service (default 30s)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=150.0, help="seconds to wait for the drain"
    )
    parser.add_argument("--ingest-timeout", type=float, default=180.0, help="bound on step 2")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (DB, log)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wb-backlog-"))
    fake = OutageTrakt().start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        began = time.monotonic()
        for n in range(args.plays):
            movie = FIRST_MOVIE + n
            fake.add_movie(f"Backlog {movie}", 1999, trakt=movie, imdb=f"tt{movie}", tmdb=movie)
        print(f"FakeTrakt catalogue: {args.plays} movies in {time.monotonic() - began:.1f} s")
        fake.down = True
        proc, url, db = start_service(work, fake, args.late_after, args.retry_after)
        outage_began = time.monotonic()
        statuses = asyncio.run(post_all(url, args.plays, args.concurrency, args.ingest_timeout))
        ingest_s = time.monotonic() - outage_began
        accepted = statuses.get(202, 0)
        print(
            f"outage: {accepted} of {args.plays} webhooks accepted (answers {statuses}) in "
            f"{ingest_s:.1f} s ({accepted / ingest_s:.0f}/s) while Trakt answered 503"
        )
        # Stay down until the newest play is older than late_after (+1 s of margin).
        time.sleep(parse_duration(args.late_after) + 1)
        with fake.lock:
            fake.down = False
            during = list(fake.requests)
        recovered = time.monotonic()
        outage_s = recovered - outage_began
        print(
            f"Trakt down for {outage_s:.1f} s; the service sent {len(during)} requests meanwhile"
            + (f": {by_route(during)}" if during else "")
        )
        print(f"outbox at recovery: {outbox_status(db)}")

        drained_at: float | None = None
        deadline = recovered + args.drain_timeout
        while time.monotonic() < deadline:
            if fake.play_count() >= accepted:
                drained_at = time.monotonic()
                break
            time.sleep(0.05)
        time.sleep(2.0)  # anything sent right after the last play still counts
        with fake.lock:
            after = fake.requests[len(during) :]
        after_drain = [r for r in after if drained_at is not None and r.time > drained_at]
        plays = fake.history()
        per_movie = collections.Counter(e.item.trakt for e in plays)
        expected = {FIRST_MOVIE + n for n in range(args.plays)}
        duplicates = sum(1 for n in per_movie.values() if n > 1)
        missing = len(expected - set(per_movie))
        counted = [r for r in after if drained_at is None or r.time <= drained_at]
        print()
        if drained_at is None:
            print(
                f"NOT DRAINED within {args.drain_timeout:.0f} s: {len(plays)} of {accepted} "
                f"plays on Trakt; outbox now {outbox_status(db)}"
            )
        else:
            print(f"drain time: {drained_at - recovered:.1f} s from recovery to the last play")
        print(
            f"requests after recovery until "
            f"{'drained' if drained_at else 'the timeout'}: {len(counted)} "
            f"(target <= {TARGET_REQUESTS}) "
            f"{'OK' if drained_at and len(counted) <= TARGET_REQUESTS else 'MISSED'}"
        )
        if counted:
            print(f"  {by_route(counted)}")
        if after_drain:
            print(f"  + {len(after_drain)} more in the 2 s after: {by_route(after_drain)}")
        once = len(plays) == args.plays == len(per_movie) and not missing
        print(
            f"plays on Trakt: {len(plays)} entries, {len(per_movie)} distinct movies, "
            f"{duplicates} movies twice or more, {missing} missing -> "
            f"{'every play exactly once' if once else 'NOT exactly once'}"
        )
        print(f"outbox afterwards: {outbox_status(db)}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        fake.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


if __name__ == "__main__":
    main()
