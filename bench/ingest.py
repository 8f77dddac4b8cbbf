"""Sustained Plex webhook ingest of `watchbridge serve`, next to a bare Litestar endpoint.

Both servers run as their own process under the same uvicorn setup (`watchbridge.server.serve`)
and get the same load in the same run: `wrk` (C, epoll) with N connections, each posting Plex
multipart bodies (the payload sample `movie_media_scrobble.json` plus a 30 KB thumb part). Every
connection plays its own distinct movies on its own player: `media.play`, then `media.scrobble`
of the same item, so the session state machine opens and completes one viewing per two webhooks
and writes one `watching` and one `play` outbox row.

The service runs with storage.durability full and one profile (Plex account 1) with a Trakt
account, so every 202 means an event row, a playback session and an outbox row were committed.
By default services.trakt points at an in-process FakeTrakt (its catalogue holds every movie
posted) rather than a closed port: then the delivery worker runs alongside ingest as it does in
production (woken by every webhook, claiming rows, committing outcomes, all on the same SQLite
connection and CPU), and the figure is what a household actually gets. `--trakt unreachable`
points it at a closed port instead, to see ingest with delivery reduced to failing fast.

After the run the service is stopped and the `events` rows in its SQLite file are counted: they
must equal the 2xx answers wrk saw (wrk stops each connection after an exact request budget, so
nothing is in flight when a run ends).

Prints, per server: requests/s, p50/p90/p99/max latency under load and on one connection, and the
CPU used by the server and by wrk. Targets: ingest >= 0.5 x bare requests/s, ingest p99 <= 15 ms.

    .venv/bin/python bench/ingest.py [--seconds 20] [--connections 16] [--trakt fake|unreachable]

Diagnostics (not the target configuration): `--durability normal`, `--profile FILE
[--profile-gil]` (py-spy of the service's timed run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.trakt import CLIENT_ID, FakeTrakt  # noqa: E402
from tests.harness import sign_in_trakt, start_logged  # noqa: E402

SECRET = "bench-secret-123"
THUMB = bytes(range(256)) * 120  # a 30 KB poster, as Plex attaches to play and scrobble
SAMPLE = ROOT / "tests" / "fixtures" / "plex" / "movie_media_scrobble.json"
BOUNDARY = "wbboundary"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ITEMS_PER_CONNECTION = 1_000_000  # item numbers: connection * this + index
TARGET_RATIO = 0.5
TARGET_P99_MS = 15.0

# Each wrk thread has one connection; it builds distinct bodies from the template and stops
# after exactly `budget` answers, so no request is in flight when the run ends. wrk's main
# thread sleeps for the whole -d duration, so each thread says WBDONE on stderr and the bench
# sends SIGINT (wrk's own "stop now") once every thread is done.
WRK_SCRIPT = r"""
local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

local head, tail, tmpl, path, start, budget
local counter, answered = 0, 0
ok, bad = 0, 0  -- globals: done() reads them with thread:get()
local hdrs = {}

local function slurp(name)
  local f = assert(io.open(name, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local dir = args[1]
  start = tonumber(args[2])
  budget = tonumber(args[3])
  path = args[4]
  head = slurp(dir .. "/head.bin")
  tail = slurp(dir .. "/tail.bin")
  tmpl = slurp(dir .. "/payload.json")
  hdrs["Content-Type"] = "multipart/form-data; boundary=__BOUNDARY__"
  hdrs["Connection"] = "keep-alive"
end

function request()
  local index = start + math.floor(counter / 2)
  local event = (counter % 2 == 0) and "media.play" or "media.scrobble"
  counter = counter + 1
  local n = tid * __PER__ + index
  local values = {
    EVENT = event,
    RK = tostring(n),
    GUID = string.format("%024x", n),
    IMDB = "tt" .. tostring(n),
    TMDB = tostring(n),
    PLAYER = "benchplayer" .. tostring(tid),
  }
  local payload = tmpl:gsub("@(%u+)@", values)
  return wrk.format("POST", path, hdrs, head .. payload .. tail)
end

function response(status, headers, body)
  answered = answered + 1
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
  if answered >= budget then
    wrk.thread:stop()
    io.stderr:write("WBDONE\n")
    io.stderr:flush()
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_bad = total_bad + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'WBJSON {"requests":%d,"duration_us":%d,"ok":%d,"bad":%d,"p50":%d,"p90":%d,"p99":%d,' ..
    '"max":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, total_ok, total_bad,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout))
end
"""


# --------------------------------------------------------------------------- bare endpoint


def serve_bare(config_path: str) -> None:
    """The baseline: one route that reads the body and answers 202, under the same server."""
    from litestar import Request, post

    from watchbridge.config import load_config

    @post("/webhooks/{source:str}/{secret:str}", status_code=202)
    async def webhook(request: Request[Any, Any, Any], source: str, secret: str) -> dict[str, str]:
        await request.body()
        return {"status": "accepted"}

    serve_route(webhook, load_config(Path(config_path)))


def serve_floor(config_path: str) -> None:
    """The durable floor: the bare route plus the least any acknowledged-is-durable design does.

    It cuts the payload part out of the body (no parsing) and answers only once that part is
    committed to SQLite (WAL, synchronous FULL), group-committed on one writer thread like the
    service. No validation, no playback decision, no outbox: the ceiling of what one process
    that keeps "in SQLite before the answer" can reach on this machine.
    """
    import asyncio
    import threading

    from litestar import Request, post

    from watchbridge.config import load_config

    config = load_config(Path(config_path))
    db = sqlite3.connect(str(config.storage.path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB)")
    waiting: list[tuple[bytes, asyncio.Future[None]]] = []
    wake = threading.Condition()

    def writer(loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with wake:
                while not waiting:
                    wake.wait()
                group = waiting[:]
                waiting.clear()
            db.execute("BEGIN")
            db.executemany("INSERT INTO events (body) VALUES (?)", [(b,) for b, _ in group])
            db.execute("COMMIT")
            loop.call_soon_threadsafe(_answer, [f for _, f in group])

    def _answer(futures: list[asyncio.Future[None]]) -> None:
        for future in futures:
            future.set_result(None)

    started: list[bool] = []

    @post("/webhooks/{source:str}/{secret:str}", status_code=202)
    async def webhook(request: Request[Any, Any, Any], source: str, secret: str) -> dict[str, str]:
        body = await request.body()
        start = body.index(b"\r\n\r\n") + 4
        payload = body[start : body.index(b"\r\n--", start)]
        loop = asyncio.get_running_loop()
        if not started:
            started.append(True)
            threading.Thread(target=writer, args=(loop,), daemon=True).start()
        future: asyncio.Future[None] = loop.create_future()
        with wake:
            waiting.append((payload, future))
            wake.notify()
        await future
        return {"status": "accepted"}

    serve_route(webhook, config)


def serve_route(webhook: Any, config: Any) -> None:
    """Serve `webhook` and a /readyz under the service's own uvicorn setup."""
    from litestar import Litestar, get

    from watchbridge.server import serve

    @get("/readyz", sync_to_thread=False)
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    app = Litestar(
        route_handlers=[webhook, readyz], openapi_config=None, logging_config=None, debug=False
    )
    serve(app, config)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int, thread: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, or of one of its threads."""
    stat = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(name: str, argv: list[str], port: int, log: Path) -> Server:
    url = f"http://127.0.0.1:{port}"
    return Server(name, start_logged(argv, url, log), url, log)


def write_body_parts(directory: Path) -> None:
    """head.bin + payload.json (with @FIELD@ markers) + tail.bin = one Plex multipart body."""
    payload = json.loads(SAMPLE.read_text())
    payload["event"] = "@EVENT@"
    payload["Player"]["uuid"] = "@PLAYER@"
    meta = payload["Metadata"]
    meta["ratingKey"] = "@RK@"
    meta["key"] = "/library/metadata/@RK@"
    meta["guid"] = "plex://movie/@GUID@"
    meta["Guid"] = [{"id": "imdb://@IMDB@"}, {"id": "tmdb://@TMDB@"}]
    meta["thumb"] = "/library/metadata/@RK@/thumb/1741990122"
    meta["art"] = "/library/metadata/@RK@/art/1741990122"
    text = json.dumps(payload)
    assert "%" not in text
    (directory / "payload.json").write_text(text)
    (directory / "head.bin").write_bytes(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="payload"\r\n'
        "Content-Type: application/json\r\n\r\n".encode()
    )
    (directory / "tail.bin").write_bytes(
        f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="thumb"; filename="t.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + THUMB
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    (directory / "load.lua").write_text(
        WRK_SCRIPT.replace("__BOUNDARY__", BOUNDARY).replace("__PER__", str(ITEMS_PER_CONNECTION))
    )


@dataclass
class Run:
    requests: int
    seconds: float
    ok: int
    bad: int
    p50: float
    p90: float
    p99: float
    max: float
    errors: dict[str, int]
    server_user: float
    server_sys: float
    loop_cpu: float  # the main thread's, which runs the event loop
    wrk_cpu: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    work: Path, server: Server, connections: int, start: int, budget: int, max_seconds: float
) -> Run:
    """wrk with one connection per thread, each stopping after `budget` answers."""
    path = f"/webhooks/plex/{SECRET}"
    cpu_server = cpu_seconds(server.proc.pid)
    cpu_loop = sum(cpu_seconds(server.proc.pid, server.proc.pid))
    cpu_children = children_cpu()
    argv = [
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{max(1, int(max_seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(work / "load.lua"),
        f"{server.url}{path}",
        "--",
        str(work),
        str(start),
        str(budget),
        path,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + max_seconds + 30
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while seen.count(b"WBDONE") < connections and time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 65536)  # raw reads: a buffered readline could hide lines
            if not chunk:
                break
            seen += chunk
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    stdout, stderr = out.decode(errors="replace"), (seen + err).decode(errors="replace")
    line = next((ln for ln in stdout.splitlines() if ln.startswith("WBJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
    data = json.loads(line.removeprefix("WBJSON "))
    expected = connections * budget
    if data["requests"] != expected:
        print(
            f"  warning: wrk answered {data['requests']} of {expected} budgeted requests "
            f"(time bound {max_seconds:.0f} s hit?)"
        )
    return Run(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        ok=data["ok"],
        bad=data["bad"],
        p50=data["p50"] / 1000,
        p90=data["p90"] / 1000,
        p99=data["p99"] / 1000,
        max=data["max"] / 1000,
        errors={k: data[k] for k in ("connect", "read", "write", "timeout") if data[k]},
        server_user=cpu_seconds(server.proc.pid)[0] - cpu_server[0],
        server_sys=cpu_seconds(server.proc.pid)[1] - cpu_server[1],
        loop_cpu=sum(cpu_seconds(server.proc.pid, server.proc.pid)) - cpu_loop,
        wrk_cpu=children_cpu() - cpu_children,
    )


def describe(label: str, run: Run) -> str:
    errors = f", socket errors {run.errors}" if run.errors else ""
    return (
        f"  {label:<12} {run.rate:8.1f} req/s  p50 {run.p50:6.2f} ms  p90 {run.p90:6.2f} ms  "
        f"p99 {run.p99:6.2f} ms  max {run.max:7.2f} ms  ({run.requests} requests in "
        f"{run.seconds:.1f} s, {run.ok} 2xx, {run.bad} other{errors}; server CPU "
        f"{(run.server_user + run.server_sys) / run.seconds * 100:.0f} % of a core "
        f"({run.server_user / run.seconds * 100:.0f} user "
        f"+ {run.server_sys / run.seconds * 100:.0f} sys; event loop's thread "
        f"{run.loop_cpu / run.seconds * 100:.0f} %), "
        f"{(run.server_user + run.server_sys) / run.requests * 1e3:.2f} ms CPU/request; wrk "
        f"{run.wrk_cpu / run.seconds * 100:.0f} %)"
    )


@dataclass
class Measured:
    warm: Run
    load: Run
    single: Run
    budget: int


def measure(
    work: Path,
    server: Server,
    connections: int,
    seconds: float,
    seed: Callable[[int, int, int], None],
    profile: Path | None = None,
    profile_gil: bool = False,
) -> Measured:
    """Warm-up (also calibrates the budget), the timed run, then one connection alone.

    Every phase posts items no earlier phase used (every pair of webhooks is a new viewing);
    `seed(connections, first_item, items)` is called before each phase.
    """
    start = 0
    warm_budget = 60
    rates = []
    warm: Run | None = None
    for _ in range(2):  # two warm-ups: the first one on fresh connections can be off
        seed(connections, start, warm_budget // 2)
        run = run_wrk(work, server, connections, start, warm_budget, 60)
        start += warm_budget // 2
        rates.append(run.rate)
        if warm is not None:
            run.ok, run.bad = run.ok + warm.ok, run.bad + warm.bad
        warm = run
    assert warm is not None
    budget = max(100, int(max(rates) * seconds / connections) // 2 * 2)
    seed(connections, start, budget // 2)
    spy = start_profile(profile, server, seconds, profile_gil) if profile else None
    load = run_wrk(work, server, connections, start, budget, seconds * 4 + 30)
    if spy is not None:
        spy.wait(timeout=seconds * 4 + 60)
    start += budget // 2
    # One connection alone: unloaded latency; its length is calibrated like the timed run.
    seed(1, start, 25)
    probe = run_wrk(work, server, 1, start, 50, 60)
    start += 25
    single_budget = min(20_000, max(200, int(probe.rate * seconds / 4) // 2 * 2))
    seed(1, start, single_budget // 2)
    single = run_wrk(work, server, 1, start, single_budget, seconds * 4 + 30)
    warm.ok, warm.bad = warm.ok + probe.ok, warm.bad + probe.bad
    return Measured(warm, load, single, budget)


def start_profile(out: Path, server: Server, seconds: float, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy on the server during the timed run (collapsed stacks; idle frames left out).

    py-spy pauses the process 100 times a second to sample it (--nonblocking fails here), so
    the timed figures of a profiled run are a little lower than an unprofiled one's.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--pid", str(server.proc.pid), "--format", "raw", "--rate", "100"]
    argv += ["--duration", str(max(1, int(seconds * 0.8))), "--output", str(out)]
    if gil:
        argv.append("--gil")  # only the thread holding the GIL: where Python CPU time goes
    log = out.with_name(out.name + ".log").open("wb")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


FRAMEWORK_FRAMES = (
    "H11Protocol.data_received (h11_impl.py)",
    "RequestResponseCycle.run_asgi (h11_impl.py)",
    "RequestResponseCycle.send (h11_impl.py)",
    "Litestar.__call__ (app.py)",
    "to_thread (threads.py)",
)


def _frame_name(frame: str) -> str:
    """`fn (/path/to/module.py:123)` -> `fn (module.py)`, `fn (watchbridge/store.py)`."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    path = where.rsplit(":", 1)[0].rstrip(")")
    path = "/" + path  # py-spy shortens some paths to `watchbridge/store.py`
    if "/watchbridge/" in path and "site-packages" not in path:
        return f"{name} (watchbridge/{path.split('/watchbridge/', 1)[1]})"
    return f"{name} ({path.rsplit('/', 1)[-1]})"


def by_route(requests: list[Any]) -> str:
    counts: dict[str, int] = {}
    for r in requests:
        what = f"{r.method} {r.route or r.path} -> {r.status}"
        counts[what] = counts.get(what, 0) + 1
    return ", ".join(f"{n} x {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def summarize_profile(path: Path, top: int = 20) -> None:
    """Share of samples per frame (inclusive), from py-spy's collapsed stacks."""
    if not path.exists():
        print(f"  (no profile written to {path}; is py-spy installed and allowed to ptrace?)")
        return
    total = 0
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    print(f"  {total} samples ({path}); inclusive share of watchbridge frames:")
    ours = [(f, n) for f, n in inclusive.items() if " (watchbridge/" in f]
    for frame, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"    {n / total * 100:5.1f} %  {frame}")
    print("  inclusive share of server/framework entry points:")
    for frame in FRAMEWORK_FRAMES:
        print(f"    {inclusive.get(frame, 0) / total * 100:5.1f} %  {frame}")
    print("  self time:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
        print(f"    {n / total * 100:5.1f} %  {frame}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each timed run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument(
        "--trakt",
        choices=("fake", "unreachable"),
        default="fake",
        help="fake: deliveries go to an in-process FakeTrakt; unreachable: to a closed port",
    )
    parser.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="storage.durability of the service (the target is for full; normal: diagnostic)",
    )
    parser.add_argument("--dir", help="where the database goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="py-spy the service during its timed run (collapsed stacks to FILE) and summarize",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the GIL holder (CPU), not every busy thread (wall)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the durable floor: the bare route plus a group-committed SQLite "
        "append of the payload part, nothing else (what any one-process design could reach)",
    )
    parser.add_argument("--serve-bare", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")

    work = Path(tempfile.mkdtemp(prefix="wb-ingest-", dir=args.dir))
    write_body_parts(work)
    fake: FakeTrakt | None = None
    servers: list[Server] = []
    try:
        trakt_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        if args.trakt == "fake":
            fake = FakeTrakt().start()
            trakt_url = fake.url
        service, db = start_service(work, trakt_url, fake, args.durability)
        servers.append(service)
        bare = start_bare(work)
        servers.append(bare)
        floor = start_bare(work, "floor") if args.floor else None
        if floor is not None:
            servers.append(floor)
        fs = subprocess.run(
            ["df", "--output=fstype", str(work)], capture_output=True, text=True
        ).stdout.split()[-1]
        print(
            f"load: wrk {args.connections} connections (one per wrk thread), Plex multipart "
            f"{len(THUMB) // 1024} KB thumb, distinct movie per play+scrobble pair; "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"service: storage.durability {args.durability} on {fs} ({work}), Trakt: "
            f"{'in-process FakeTrakt' if fake else 'unreachable port'}"
        )
        print(f"disk: {fsync_latency(work)}; load average {os.getloadavg()[0]:.1f}")

        results = {
            "bare": measure(work, bare, args.connections, args.seconds, lambda *_: None),
            "ingest": measure(
                work,
                service,
                args.connections,
                args.seconds,
                seed_catalogue(fake),
                Path(args.profile).resolve() if args.profile else None,
                args.profile_gil,
            ),
        }
        if floor is not None:
            results["floor"] = measure(work, floor, args.connections, args.seconds, lambda *_: None)
        delivered = by_route(fake.requests) if fake is not None else ""
        refused = [r for r in fake.requests if (r.status or 0) >= 400] if fake is not None else []
        service.stop()
        bare.stop()
        if floor is not None:
            floor.stop()
        events, outbox, sessions = count_rows(db)

        print()
        for name, m in results.items():
            print(f"{name}:")
            print(describe(f"{args.connections} conns", m.load))
            print(describe("1 conn", m.single))
        ratio = results["ingest"].load.rate / results["bare"].load.rate
        p99 = results["ingest"].load.p99
        print()
        print(
            f"ingest/bare throughput: {ratio:.2f} (target >= {TARGET_RATIO}) "
            f"{'OK' if ratio >= TARGET_RATIO else 'MISSED'}"
        )
        if "floor" in results:
            print(
                f"durable floor/bare throughput: "
                f"{results['floor'].load.rate / results['bare'].load.rate:.2f} (the most a "
                "one-process design that answers after the commit could reach here)"
            )
        print(
            f"ingest p99 under load: {p99:.2f} ms (target <= {TARGET_P99_MS:.0f} ms) "
            f"{'OK' if p99 <= TARGET_P99_MS else 'MISSED'}; on one connection: "
            f"{results['ingest'].single.p99:.2f} ms"
        )
        acked = sum(
            r.ok for r in (results["ingest"].warm, results["ingest"].load, results["ingest"].single)
        )
        not_ok = sum(
            r.bad
            for r in (results["ingest"].warm, results["ingest"].load, results["ingest"].single)
        )
        print(
            f"durability: {events} events rows in SQLite, {acked} 2xx answers ({not_ok} other) "
            f"-> {'OK, equal' if events == acked else 'MISMATCH'}; {outbox} outbox rows, "
            f"{sessions} playback sessions"
        )
        if args.profile:
            print("profile of the service during its timed run:")
            summarize_profile(Path(args.profile).resolve())
        if fake is not None:
            print(f"delivery during the run, requests the FakeTrakt got: {delivered or 'none'}")
            for r in refused[:3]:
                print(f"  refused: {r.method} {r.path} -> {r.status}: {r.body[:200]!r}")
    finally:
        for server in servers:
            server.stop()
        if fake is not None:
            fake.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def seed_catalogue(fake: FakeTrakt | None) -> Callable[[int, int, int], None]:
    """Add the movies a phase will post to the FakeTrakt, so deliveries find them."""

    def seed(connections: int, first: int, items: int) -> None:
        if fake is None:
            return
        for conn in range(1, connections + 1):
            for index in range(first, first + items):
                n = conn * ITEMS_PER_CONNECTION + index
                fake.add_movie(f"Bench {n}", 2000, trakt=n, imdb=f"tt{n}", tmdb=n)

    return seed


def start_service(
    work: Path, trakt_url: str, fake: FakeTrakt | None, durability: str
) -> tuple[Server, Path]:
    from watchbridge.store import Store

    port = free_port()
    db = work / "wb.db"
    config = work / "watchbridge.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, webhook_secret: {SECRET}}}
storage: {{path: {db}, durability: {durability}}}
services:
  trakt: {{client_id: {CLIENT_ID}, api_url: "{trakt_url}", auth_url: "{trakt_url}"}}
profiles:
  me:
    users: {{plex: ["1"]}}
    accounts: {{trakt: {{}}}}
""",
        encoding="utf-8",
    )
    store = Store.open(db)
    # With Trakt unreachable the sign-in only has to exist; any fake can mint it.
    sign_in_trakt(store, fake or FakeTrakt(), now=time.time())
    store.close()
    argv = [sys.executable, "-m", "watchbridge", "serve", "--config", str(config)]
    return start_server("ingest", argv, port, work / "service.log"), db


def start_bare(work: Path, name: str = "bare") -> Server:
    """The bare endpoint, or with name "floor" the durable floor."""
    port = free_port()
    config = work / f"{name}.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\nstorage: {{path: {work / name}.db}}\n",
        encoding="utf-8",
    )
    argv = [sys.executable, str(Path(__file__).resolve()), f"--serve-{name}", str(config)]
    return start_server(name, argv, port, work / f"{name}.log")


def fsync_latency(directory: Path, samples: int = 100) -> str:
    """fsync of an 8 KB append where the database lives: what each group commit waits for.

    Other work on the machine shows up here first; ingest p99 cannot beat the disk's."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    times = []
    try:
        for _ in range(samples):
            os.write(fd, b"x" * 8192)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return (
        f"fsync p50 {times[samples // 2]:.2f} ms, p99 {times[samples * 99 // 100]:.2f} ms, "
        f"max {times[-1]:.2f} ms"
    )


def count_rows(db: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return tuple(  # type: ignore[return-value]
            conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("events", "outbox", "playback_sessions")
        )
    finally:
        conn.close()


if __name__ == "__main__":
    main()
