"""A link's first run on a big account, inside the served service (`watchbridge serve`).

A household with a large Plex library turns on a Plex <-> Serializd link for the first time
(`first_run: apply`). The fake PMS holds `--movies` watched movies and `--shows` x `--episodes`
watched episodes (one play each); the fake Serializd knows the same shows (by TMDB id) and holds
`--diary` diary entries of the first shows' episodes: half at the Plex play's time (the same
viewing), half 60 days later (a rewatch, copied to Plex). The fakes run in a child process (their
CPU and memory are not the service's).

The service is started as users start it, with one change: its scheduler's first run comes after
2 s instead of 60 (patched in the child's `-c`), so the window measures the run. For
`--seconds` from the start it:

- posts a Plex webhook (a movie's `media.scrobble`, multipart with its 30 KB thumb) every
  `--webhook-every` seconds and times its answer: the event loop's responsiveness;
- reads `/api/status` every `--status-every` seconds: what the user sees of the run;
- samples the service's RSS (VmRSS; VmHWM at the end) and CPU time.

Then it stops the service and prints requests by endpoint per fake (429s apart), the webhook
answer times, the status seen, and what the run reached. A first run through Serializd's
pacing (2 requests/s, reference §8) takes hours at this size; the bench measures its first
minutes and projects the rest from the requests made.

With `--trakt-plays N` the household links Trakt too: the fake Trakt (in the same child) knows
the same shows and movies and holds N plays (every Plex play at its time, as a scrobbler would
have sent it, then rewatches a year earlier until N), and the service runs the first runs of
`trakt-plex` and/or `trakt-serializd` (`--trakt-links`, `first_run: apply`) beside
`plex-serializd`, all three started together. Trakt's read pacing (500 reads per 5 min) is
lifted in the service (patched in the child's `-c`) unless `--trakt-pacing real`: two links
page through 60,000 plays (~240 pages each, sharing the account's pacer) in ~5 min at the real
pace; lifted, the same reads overlap the same way, minutes sooner.

    .venv/bin/python bench/first_link.py [--shows 2000 --episodes 20 --movies 3000 --diary 2000]
    .venv/bin/python bench/first_link.py --seconds 150
    .venv/bin/python bench/first_link.py --trakt-plays 60000 [--trakt-links plex|serializd|both]

Targets: a webhook answered within its usual few ms while the run goes (p99 <= 50 ms, max
<= 250 ms); the status shows the run as running (and how far it is); RSS within a 512 MB
container; Serializd at most 2 requests/s, no 429 storm.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from latency import free_port, plex_body  # noqa: E402  (bench/latency.py)

LINK, PROFILE, SECRET, API_TOKEN = "plex-serializd", "alex", "bench-secret-123", "bench-api-token"
TRAKT_LINKS = {"plex": ["trakt-plex"], "serializd": ["trakt-serializd"]}
TRAKT_LINKS["both"] = TRAKT_LINKS["plex"] + TRAKT_LINKS["serializd"]
YEAR = 365 * 86400.0
DAY = 86400.0
# The service's first scheduled run after 2 s, not 60: the rest is `python -m watchbridge`.
SERVE = (
    "import sys; from watchbridge.scheduler import SyncScheduler; "
    "SyncScheduler.__init__.__defaults__ = (2.0,); "
    "from watchbridge.__main__ import main; sys.argv[0] = 'watchbridge'; main()"
)
# With Trakt linked: its read pacing lifted (`--trakt-pacing lifted`), writes kept at 1/s.
LIFT_TRAKT_READS = (
    "import watchbridge.services.trakt as trakt; from watchbridge.http import Bucket, Pacer; "
    "trakt._pacer = lambda: Pacer({'write': Bucket(1, 1 / 1.1), 'read': Bucket(1000, 1000.0)}); "
)
WEBHOOK_MOVIE = 7_000_000
CONFIG = "watchbridge.yaml"


# =========================================================================== the fakes (child)


def movie_watched(n: int, now: float) -> float:
    return now - (n % 997) / 997 * 3 * YEAR


def episode_watched(n: int, now: float) -> float:
    """When the n-th episode (show by show) was watched."""
    return now - (n % 9973) / 9973 * 3 * YEAR - DAY


def seasons_of(args: argparse.Namespace) -> dict[int, int]:
    return dict(collections.Counter(1 + e // 10 for e in range(args.episodes)))


def seed(plex: Any, serializd: Any, args: argparse.Namespace, now: float) -> dict[str, int]:
    seasons = seasons_of(args)
    for n in range(args.movies):
        key = str(100_000 + n)
        plex.add_movie(key, f"Movie {n}", 2000 + n % 25, [f"tmdb://{500_000 + n}"])
        plex.watch(key, movie_watched(n, now))
    diary = 0
    for s in range(args.shows):
        show, tmdb = str(1_000_000 + s), 900_000 + s
        plex.add_show(show, f"Show {s}", 2000 + s % 25, [f"tmdb://{tmdb}"])
        serializd.add_show(tmdb, f"Show {s}", seasons)
        for e in range(args.episodes):
            key, season, number = f"{show}{e:04d}", 1 + e // 10, 1 + e % 10
            plex.add_episode(key, show, season, number)
            at = episode_watched(s * args.episodes + e, now)
            plex.watch(key, at)
            if diary < args.diary:
                later = 0.0 if diary % 2 == 0 else 60 * DAY  # same viewing / a rewatch
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at + later))
                if at + later < now:
                    serializd.log_entry(None, tmdb, season, number, backdate=stamp)
                    diary += 1
    return {"plex_plays": len(plex.history), "serializd_diary": diary}


def seed_trakt(trakt: Any, args: argparse.Namespace, now: float) -> dict[str, int]:
    """The same movies and shows as Plex's (by TMDB id); `--trakt-plays` plays: Plex's, at
    their times, then rewatches a year before each, until there are that many."""
    from tests.fakes.trakt import iso

    plays: list[tuple[Any, float]] = []
    seasons = seasons_of(args)
    for n in range(args.movies):
        movie = trakt.add_movie(f"Movie {n}", 2000 + n % 25, tmdb=500_000 + n)
        plays.append((movie, movie_watched(n, now)))
    for s in range(args.shows):
        show = trakt.add_show(f"Show {s}", 2000 + s % 25, tmdb=900_000 + s, seasons=seasons)
        for e in range(args.episodes):
            episode = show.seasons[1 + e // 10].episodes[1 + e % 10]
            plays.append((episode, episode_watched(s * args.episodes + e, now)))
    for k in range(args.trakt_plays if plays else 0):
        item, at = plays[k % len(plays)]
        trakt.add_history(item, iso(at - (k // len(plays)) * YEAR))
    return {"trakt_plays": len(trakt.user.history)}


def endpoints(fake: Any) -> dict[str, int]:
    with fake.lock:
        requests = list(fake.requests)
    counted = collections.Counter[str]()
    for r in requests:
        counted[f"{r.method} {r.route or r.path}"] += 1
        if r.status == 429:
            counted["(answered 429)"] += 1
    return dict(counted)


def busiest_second(fake: Any) -> int:
    """The most requests the fake saw in one wall-clock second (pacing kept or not)."""
    with fake.lock:
        stamps = [r.time for r in fake.requests]
    seconds = collections.Counter(int(t) for t in stamps)
    return max(seconds.values(), default=0)


def child(conn: Connection, args: argparse.Namespace) -> None:
    from tests.fakes.plex import FakePlex

    from sync import _bench_fakes  # bench/sync.py: the cached diary order, indexed ticks

    bench_trakt, bench_serializd = _bench_fakes()

    plex, serializd = FakePlex(), bench_serializd()
    trakt = bench_trakt() if args.trakt_plays else None
    serializd.diary_order = "jittered"
    plex.clock = time.time
    began = time.monotonic()
    now = time.time()
    counts = seed(plex, serializd, args, now)
    serializd.index_ticks()
    fakes = [plex, serializd]
    if trakt is not None:
        counts |= seed_trakt(trakt, args, now)
        fakes.append(trakt)
    for fake in fakes:
        fake.start()
    urls: dict[str, Any] = {"plex": plex.url, "serializd": serializd.url}
    if trakt is not None:
        token = trakt.issue_token()
        urls["trakt"] = trakt.url
        urls["trakt_token"] = {
            "access_token": token.access_token,
            "refresh_token": token.refresh_token,
            "expires_in": token.expires_in,
        }
    conn.send({**urls, "seed_s": time.monotonic() - began, **counts})
    while (command := conn.recv()) != "stop":
        if command == "stats":
            conn.send(
                {
                    "plex": endpoints(plex),
                    "serializd": endpoints(serializd),
                    **({"trakt": endpoints(trakt)} if trakt is not None else {}),
                    "serializd_busiest_second": busiest_second(serializd),
                    "serializd_diary": len(serializd.user.reviews),
                    "plex_history": len(plex.history),
                    "trakt_history": len(trakt.user.history) if trakt is not None else 0,
                }
            )
    for fake in fakes:
        fake.stop()


# =========================================================================== the service (parent)


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (MB), CPU seconds (user + system) of a process."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["cpu"] = (int(fields[11]) + int(fields[12])) / 100
    except OSError:
        pass
    return out


def start_service(
    work: Path, fakes: dict[str, Any], args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str]:
    from tests.fakes.plex import TOKEN
    from tests.fakes.serializd import ALICE
    from tests.fakes.trakt import CLIENT_ID

    from watchbridge.store import Store

    port = free_port()
    config = work / CONFIG
    trakt = "trakt" in fakes
    trakt_service = (
        f'  trakt: {{client_id: {CLIENT_ID}, api_url: "{fakes["trakt"]}", '
        f'auth_url: "{fakes["trakt"]}"}}\n'
        if trakt
        else ""
    )
    trakt_links = "".join(
        f"  {name}: {{services: [trakt, {name.split('-')[1]}], first_run: apply, interval: 6h}}\n"
        for name in (TRAKT_LINKS[args.trakt_links] if trakt else [])
    )
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}, api_token: {API_TOKEN}}}
storage: {{path: {work / "wb.db"}}}
services:
  plex: {{url: "{fakes["plex"]}", token: "{TOKEN}"}}
  serializd: {{api_url: "{fakes["serializd"]}"}}
{trakt_service}profiles:
  {PROFILE}:
    users: {{plex: ["1"]}}
    accounts:
      plex: {{}}
      serializd: {{email: "{ALICE[0]}", password: "{ALICE[1]}"}}
{"      trakt: {}" if trakt else ""}
links:
  {LINK}: {{services: [plex, serializd], first_run: apply, interval: 6h}}
{trakt_links}""",
        encoding="utf-8",
    )
    if trakt:  # signed in, as `watchbridge auth trakt` leaves it
        with Store.open(work / "wb.db") as store:
            now = time.time()
            store.put_token("trakt", PROFILE, {**fakes["trakt_token"], "created_at": now}, now)
    from tests.harness import start_logged

    url = f"http://127.0.0.1:{port}"
    serve = LIFT_TRAKT_READS + SERVE if trakt and args.trakt_pacing == "lifted" else SERVE
    argv = [sys.executable, "-c", serve, "serve", "--config", str(config)]
    return start_logged(argv, url, work / "service.log", timeout=60), url


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))]


def run(args: argparse.Namespace, conn: Connection, fakes: dict[str, Any]) -> None:
    work = Path(tempfile.mkdtemp(prefix="wb-firstlink-"))
    proc, url = start_service(work, fakes, args)
    spy = None
    if args.py_spy:  # the loop thread's stacks, to name what holds it
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(proc.pid),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                args.py_spy,
                "-d",
                str(int(args.seconds)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    began = time.monotonic()
    acks: list[tuple[float, float]] = []  # (seconds since start, answer time)
    statuses: list[tuple[float, float, str]] = []  # (since start, answer time, the link's line)
    samples: list[tuple[float, dict[str, float]]] = []
    next_hook, next_status, next_sample, n = began, began, began, 0
    auth = {"authorization": f"Bearer {API_TOKEN}"}
    try:
        with httpx.Client(timeout=30) as client:
            while (now := time.monotonic()) - began < args.seconds:
                if proc.poll() is not None:
                    raise SystemExit(f"the service exited:\n{(work / 'service.log').read_text()}")
                if now >= next_sample:
                    samples.append((now - began, proc_status(proc.pid)))
                    next_sample += 1.0
                if now >= next_hook:
                    body, kind = plex_body("media.scrobble", 1, WEBHOOK_MOVIE + n)
                    n += 1
                    sent = time.perf_counter()
                    answer = client.post(
                        f"{url}/webhooks/plex/{SECRET}",
                        content=body,
                        headers={"content-type": kind, "connection": "close"},
                    )
                    acks.append((now - began, time.perf_counter() - sent))
                    if answer.status_code != 202:
                        print(f"webhook answered {answer.status_code}: {answer.text[:200]}")
                    next_hook += args.webhook_every
                if now >= next_status:
                    sent = time.perf_counter()
                    got = client.get(f"{url}/api/status", headers=auth).json()
                    took = time.perf_counter() - sent
                    links = [
                        f"{x['outcome']} started {x['started_at'] and round(x['started_at'])} "
                        f"api_calls={x['api_calls']} counts={json.dumps(x['counts'])}"
                        f"{' error=' + x['error'] if x['error'] else ''}"
                        for x in got["links"]
                    ] or ["(no run yet)"]
                    line = f"{'; '.join(links)}; outbox {got['outbox']}"
                    statuses.append((now - began, took, line))
                    next_status += args.status_every
                time.sleep(max(0.0, min(next_hook, next_status, next_sample) - time.monotonic()))
        final = proc_status(proc.pid)
        cli = subprocess.run(
            [sys.executable, "-m", "watchbridge", "status", "--config", str(work / CONFIG)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        if spy is not None:
            spy.wait(60)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    conn.send("stats")
    stats = conn.recv()
    elapsed = time.monotonic() - began
    report(args, acks, statuses, samples, final, stats, elapsed, cli.stdout + cli.stderr)
    log = (work / "service.log").read_text(errors="replace")
    print(f"service log: {len(log.splitlines())} lines; its last 8:")
    for line in log.splitlines()[-8:]:
        print(f"    {line[:240]}")
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    acks: list[tuple[float, float]],
    statuses: list[tuple[float, float, str]],
    samples: list[tuple[float, dict[str, float]]],
    final: dict[str, float],
    stats: dict[str, Any],
    elapsed: float,
    cli: str,
) -> None:
    ms = [a * 1000 for _, a in acks]
    print(
        f"window {elapsed:.0f} s; the service's peak RSS (VmHWM) {final.get('VmHWM', 0):.0f} MB, "
        f"CPU {final.get('cpu', 0):.1f} s"
    )
    rss = [(t, s.get("VmRSS", 0), s.get("cpu", 0)) for t, s in samples]
    for t, mb, cpu in rss[:: max(1, len(rss) // 12)]:
        print(f"    t={t:5.0f} s  RSS {mb:6.0f} MB  CPU {cpu:6.1f} s")
    if ms:
        slow = [(round(t), round(a * 1000)) for t, a in acks if a > 0.05]
        print(
            f"webhooks during the run: {len(ms)}, answer p50 {statistics.median(ms):.1f} ms, "
            f"p90 {percentile(ms, 90):.1f}, p99 {percentile(ms, 99):.1f}, max {max(ms):.1f} ms "
            f"(target p99 <= 50, max <= 250); over 50 ms at (s, ms): {slow[:20]}"
        )
    print(
        f"status seen (/api/status, every {args.status_every:.0f} s; answer time, the link's line):"
    )
    shown = ""
    for t, took, line in statuses:
        if line != shown:
            print(f"    t={t:5.0f} s ({took * 1000:5.0f} ms) {line[:300]}")
            shown = line
    print(f"    /api/status answer max {max(t for _, t, _ in statuses) * 1000:.0f} ms")
    for name in ("plex", "serializd", "trakt"):
        if name not in stats:
            continue
        got = stats[name]
        total = sum(v for k, v in got.items() if not k.startswith("("))
        print(f"{name}: {total} requests ({total / elapsed:.2f}/s over the window)")
        for route, count in sorted(got.items(), key=lambda kv: -kv[1])[:12]:
            print(f"      {count:>6} x {route}")
    print(
        f"serializd busiest second: {stats['serializd_busiest_second']} requests "
        "(reference §8: about 1-2 per second)"
    )
    print(
        f"after the window: serializd diary {stats['serializd_diary']}, plex history "
        f"{stats['plex_history']}"
        + (f", trakt history {stats['trakt_history']}" if "trakt" in stats else "")
    )
    print("watchbridge status (at the window's end):")
    for line in cli.splitlines()[:40]:
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=3000)
    parser.add_argument("--shows", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=20, help="per show, all watched")
    parser.add_argument("--diary", type=int, default=2000, help="Serializd diary entries")
    parser.add_argument(
        "--trakt-plays", type=int, default=0, help="link Trakt too, its history this many plays"
    )
    parser.add_argument(
        "--trakt-links",
        choices=sorted(TRAKT_LINKS),
        default="both",
        help="with --trakt-plays: Trakt linked with plex, serializd or both",
    )
    parser.add_argument(
        "--trakt-pacing",
        choices=("lifted", "real"),
        default="lifted",
        help="with --trakt-plays: Trakt's read pacing in the service",
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="the measured window")
    parser.add_argument("--webhook-every", type=float, default=0.5)
    parser.add_argument("--status-every", type=float, default=5.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record the service's stacks (py-spy in the venv)"
    )
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    parent, child_end = context.Pipe()
    fakes_proc = context.Process(target=child, args=(child_end, args), daemon=True)
    fakes_proc.start()
    try:
        fakes = parent.recv()
        print(
            f"fakes seeded in {fakes['seed_s']:.1f} s: Plex {args.movies:,} movies and "
            f"{args.shows * args.episodes:,} episodes watched ({fakes['plex_plays']:,} plays), "
            f"Serializd {args.shows:,} shows, {fakes['serializd_diary']:,} diary entries "
            "(half the same viewings as Plex's, half rewatches 60 days later)"
            + (
                f"; Trakt {fakes['trakt_plays']:,} plays, links {args.trakt_links} "
                f"(read pacing {args.trakt_pacing})"
                if args.trakt_plays
                else ""
            )
        )
        run(args, parent, fakes)
    finally:
        parent.send("stop")
        fakes_proc.join(timeout=30)


if __name__ == "__main__":
    main()
