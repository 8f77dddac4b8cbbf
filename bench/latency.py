"""Webhook -> Trakt latency: a Plex webhook posted to `watchbridge serve` until FakeTrakt has it.

One webhook at a time, no backlog: each is a new viewing step of a distinct movie
(`media.play` -> `POST /scrobble/start`, then `media.scrobble` of the same movie ->
`POST /scrobble/stop`), and the clock runs from just before the webhook is sent until the
in-process FakeTrakt has answered the matching scrobble (its state changed). The fake runs in
this process, so both ends read the same `time.perf_counter()`.

Pacing: the Trakt client spaces one profile's writes >= 1.1 s apart (Trakt allows 1 write/s), so
webhooks of one profile closer than that would measure the pacer, not the service. The bench maps
`--profiles` Plex accounts to as many profiles (each its own Trakt user, token and pacer) and
sends round-robin: one webhook every `--spacing / --profiles` seconds overall, each profile
every `--spacing` (1.25 s) seconds. 200 samples take ~50 s instead of 250 s.

Also prints the webhook's own answer time (ack) and the share after it (ack -> Trakt).
Targets: p50 <= 50 ms, p99 <= 250 ms.

    .venv/bin/python bench/latency.py [--samples 200] [--profiles 5] [--spacing 1.25]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.base import Request, Response  # noqa: E402
from tests.fakes.base import _Knob as Knob  # noqa: E402
from tests.fakes.trakt import CLIENT_ID, FakeTrakt  # noqa: E402
from tests.harness import sign_in_trakt, start_logged  # noqa: E402

SECRET = "bench-secret-123"
THUMB = bytes(range(256)) * 120  # a 30 KB poster, as Plex attaches to play and scrobble
SAMPLE = ROOT / "tests" / "fixtures" / "plex" / "movie_media_scrobble.json"
TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
FIRST_MOVIE = 7_000_000


class TimedTrakt(FakeTrakt):
    """FakeTrakt that notes when each scrobble was answered, keyed by (action, imdb id)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[tuple[str, str], float] = {}
        self.changed = threading.Condition()

    def _handle(self, req: Request) -> tuple[Knob | None, Response | None]:
        knob, resp = super()._handle(req)
        if req.route in ("/scrobble/start", "/scrobble/stop") and resp and resp.status < 300:
            at = time.perf_counter()
            imdb = str(((req.json().get("movie") or {}).get("ids") or {}).get("imdb"))
            with self.changed:
                self.seen[(req.path.rsplit("/", 1)[1], imdb)] = at
                self.changed.notify_all()
        return knob, resp

    def wait_for(self, key: tuple[str, str], timeout: float) -> float | None:
        with self.changed:
            self.changed.wait_for(lambda: key in self.seen, timeout)
            return self.seen.get(key)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plex_body(event: str, account: int, movie: int) -> tuple[bytes, str]:
    payload: dict[str, Any] = json.loads(SAMPLE.read_text())
    payload["event"] = event
    payload["Account"]["id"] = account
    payload["Account"]["title"] = f"viewer{account}"
    payload["Player"]["uuid"] = f"benchplayer{account}"
    meta = payload["Metadata"]
    meta["ratingKey"] = str(movie)
    meta["key"] = f"/library/metadata/{movie}"
    meta["guid"] = f"plex://movie/{movie:024x}"
    meta["Guid"] = [{"id": f"imdb://tt{movie}"}, {"id": f"tmdb://{movie}"}]
    boundary = "wbboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
        + json.dumps(payload).encode()
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="thumb"; '
        'filename="t.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + THUMB
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def start_service(
    work: Path, fake: FakeTrakt, profiles: int
) -> tuple[subprocess.Popen[bytes], str]:
    from watchbridge.store import Store

    port = free_port()
    db = work / "wb.db"
    lines = [
        f"server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}",
        f"storage: {{path: {db}, durability: full}}",
        "services:",
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{fake.url}", auth_url: "{fake.url}"}}',
        "profiles:",
    ]
    store = Store.open(db)
    for k in range(1, profiles + 1):
        lines.append(f'  p{k}: {{users: {{plex: ["{k}"]}}, accounts: {{trakt: {{}}}}}}')
        sign_in_trakt(store, fake, f"p{k}", now=time.time(), user=fake.add_user(f"viewer{k}"))
    store.close()
    config = work / "watchbridge.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "watchbridge", "serve", "--config", str(config)]
    return start_logged(argv, url, work / "service.log"), url


@dataclass
class Sample:
    kind: str  # "start" (media.play) or "stop" (media.scrobble)
    total: float | None  # seconds, webhook sent -> fake answered; None: not seen in time
    ack: float  # seconds until the webhook's answer


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def line(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<27} no samples"
    ms = [v * 1000 for v in values]
    return (
        f"  {label:<27} p50 {statistics.median(ms):7.1f} ms  p90 {percentile(ms, 90):7.1f} ms  "
        f"p99 {percentile(ms, 99):7.1f} ms  max {max(ms):7.1f} ms  (n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="measured webhooks")
    parser.add_argument("--profiles", type=int, default=5, help="profiles sent round-robin")
    parser.add_argument(
        "--spacing", type=float, default=1.25, help="seconds between two webhooks of a profile"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="give up on one sample after")
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse one connection for all webhooks (default: a new one each, as Plex does)",
    )
    args = parser.parse_args()
    if args.spacing < 1.15:
        print("warning: --spacing below 1.15 s measures the client's write pacing too")

    work = Path(tempfile.mkdtemp(prefix="wb-latency-"))
    fake = TimedTrakt().start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        warmup = 2 * args.profiles  # one whole viewing per profile: connections, tokens, caches
        total = warmup + args.samples
        for n in range((total + 1) // 2 + 1):
            movie = FIRST_MOVIE + n
            fake.add_movie(f"Latency {movie}", 2001, trakt=movie, imdb=f"tt{movie}", tmdb=movie)
        proc, url = start_service(work, fake, args.profiles)
        interval = args.spacing / args.profiles
        samples: list[Sample] = []
        began = time.monotonic()
        next_at = time.perf_counter()
        close = {} if args.keep_alive else {"connection": "close"}
        with httpx.Client(timeout=10) as client:
            for i in range(total):
                # Webhook i goes to profile i % P; each profile alternates play, scrobble on
                # the same movie, then moves on to a new one.
                profile = i % args.profiles + 1
                step = i // args.profiles  # how many webhooks this profile has had
                movie = FIRST_MOVIE + (step // 2) * args.profiles + profile - 1
                event, kind = (
                    ("media.play", "start") if step % 2 == 0 else ("media.scrobble", "stop")
                )
                body, content_type = plex_body(event, profile, movie)
                time.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval
                sent = time.perf_counter()
                answer = client.post(
                    f"{url}/webhooks/plex/{SECRET}",
                    content=body,
                    headers={"content-type": content_type, **close},
                )
                acked = time.perf_counter()
                if answer.status_code != 202:
                    raise SystemExit(f"webhook {i} answered {answer.status_code}: {answer.text}")
                seen = fake.wait_for((kind, f"tt{movie}"), args.timeout)
                if i >= warmup:
                    samples.append(
                        Sample(kind, None if seen is None else seen - sent, acked - sent)
                    )
                if time.perf_counter() > next_at:  # the previous one was slow: keep the spacing
                    next_at = time.perf_counter() + interval
        elapsed = time.monotonic() - began
        plays = [e for k in range(1, args.profiles + 1) for e in fake.history(f"viewer{k}")]
        history = len(plays)
        distinct = len({e.item.trakt for e in plays})
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)

    done = [s for s in samples if s.total is not None]
    lost = len(samples) - len(done)
    totals = [s.total for s in done if s.total is not None]
    print(
        f"{len(samples)} webhooks measured ({warmup} warm-up left out) in {elapsed:.0f} s: "
        f"{args.profiles} profiles round-robin, one webhook every {interval * 1000:.0f} ms, "
        f"each profile every {args.spacing:.2f} s; Plex multipart with a 30 KB thumb, "
        f"{'keep-alive connection' if args.keep_alive else 'new connection per webhook'}; "
        "storage.durability full"
    )
    print("webhook sent -> FakeTrakt answered the scrobble:")
    print(line("all", totals))
    print(line("play -> /scrobble/start", [s.total for s in done if s.kind == "start" and s.total]))
    print(
        line("scrobble -> /scrobble/stop", [s.total for s in done if s.kind == "stop" and s.total])
    )
    print("of which:")
    print(line("webhook answered (ack)", [s.ack for s in samples]))
    print(line("ack -> Trakt", [s.total - s.ack for s in done if s.total is not None]))
    if lost:
        print(f"  {lost} webhooks never reached the fake within {args.timeout:.0f} s")
    p50, p99 = statistics.median(totals) * 1000, percentile(totals, 99) * 1000
    print(
        f"p50 {p50:.1f} ms (target <= {TARGET_P50_MS:.0f} ms) "
        f"{'OK' if p50 <= TARGET_P50_MS else 'MISSED'}; p99 {p99:.1f} ms (target <= "
        f"{TARGET_P99_MS:.0f} ms) {'OK' if p99 <= TARGET_P99_MS and not lost else 'MISSED'}"
    )
    stops = sum(1 for i in range(total) if (i // args.profiles) % 2)
    exact = history == stops == distinct
    print(
        f"Trakt history: {history} plays ({distinct} distinct movies) for {stops} media.scrobble "
        f"webhooks: {'OK, each exactly once' if exact else 'MISMATCH'}"
    )


if __name__ == "__main__":
    main()
