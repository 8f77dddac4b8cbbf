"""Start the real service for tests: as a subprocess (signals, crashes) or in a thread."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import itertools
import logging
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn
from litestar import Litestar

if TYPE_CHECKING:
    from watchbridge.config import Config

# Ports for servers the tests start, below Linux's ephemeral range (32768 and up), so that no
# outgoing connection takes one between its pick and its bind, and a band per xdist worker, so
# that workers never pick the same one.
PORT_BAND = 2500
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_FIRST_PORT = 20000 + _WORKER * PORT_BAND
_PORTS = itertools.cycle(range(_FIRST_PORT, _FIRST_PORT + PORT_BAND))
# Each port picked stays bound here (not listening) until this many more are picked: long past
# its server's bind, and past a stop and a restart on the same port within a test.
RESERVED_PORTS = 200
_RESERVED: collections.deque[socket.socket] = collections.deque()


def free_port() -> int:
    """A port of this worker's band that nothing is bound to now, kept bound by this process
    for a while. Other test runs on the machine (another checkout's suite, with the same bands)
    then cannot pick it before our server binds it, nor take it while a test restarts its
    service: a server of theirs on it would answer our readiness wait and our requests. Our
    servers bind it all the same: they set SO_REUSEADDR, and the reservation does not listen."""
    for _ in range(PORT_BAND):
        port = next(_PORTS)
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))  # without SO_REUSEADDR: fails if anyone holds it
        except OSError:
            sock.close()
            continue
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # now ours may bind it too
        _RESERVED.append(sock)
        while len(_RESERVED) > RESERVED_PORTS:
            _RESERVED.popleft().close()
        return port
    raise RuntimeError("no free port in this worker's band")


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a socket listening on `port` (Linux /proc)."""
    listening: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    listening.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError):  # it has exited
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                if os.readlink(fd) in listening:
                    return True
    return False


def write_config(
    directory: Path, body: str = "", port: int | None = None, *, secret: str | None = None
) -> Path:
    """A minimal config in `directory` with its own DB, a free port, webhooks taken with
    `secret` where given, and `body` appended."""
    path = directory / "watchbridge.yaml"
    webhooks = "" if secret is None else f"  webhook_secret: {secret}\n"
    path.write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port or free_port()}\n{webhooks}"
        f"storage:\n  path: {directory / 'watchbridge.db'}\n{body}",
        encoding="utf-8",
    )
    return path


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait (in this thread, as for an app running in another) until `check()` holds; fail
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert check()


def nothing_waits(db: Path) -> bool:
    """Whether the delivery worker has settled every row queued in the database at `db`
    (none pending or in flight): nothing more is on its way to a service."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (waiting,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'inflight')"
        ).fetchone()
    return int(waiting) == 0


def nothing_due(db: Path, now: float) -> bool:
    """Whether no row queued in the database at `db` is in flight or pending with its try due
    by `now`: every row done, given up, or waiting for a later try."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (due,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE status = 'inflight'"
            " OR (status = 'pending' AND next_attempt_at <= ?)",
            (now,),
        ).fetchone()
    return int(due) == 0


def settle(db: Path, clock: Callable[[], float] = time.time) -> None:
    """Wait (for an app running in another thread) until nothing queued in the database at
    `db` is due by `clock`, a second ahead; first a moment for what was just sent to it."""
    time.sleep(0.3)
    wait_for(lambda: nothing_due(db, clock() + 1), timeout=60)


async def until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait (on the event loop) until `check()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@dataclass
class _LoggerState:
    level: int
    handlers: list[logging.Handler]
    filters: list[Any]
    propagate: bool
    disabled: bool


# The loggers setup_logging sets besides the root: known before a command, so that it is
# put back too when a command is the first to make one.
_SET_UP = (
    *("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"),
    *("httpx", "httpcore", "apprise", "urllib3"),
)


def _loggers() -> dict[str, logging.Logger]:
    for name in _SET_UP:
        logging.getLogger(name)
    known = logging.Logger.manager.loggerDict.items()
    return {"": logging.getLogger()} | {
        name: logger for name, logger in known if isinstance(logger, logging.Logger)
    }


@contextlib.contextmanager
def _as_a_process_of_its_own() -> Iterator[None]:
    """Run a command as if in a new process, and leave this one as it was: what a command
    sets for its process (setup_logging's handler on the captured stderr and its levels,
    environment, working directory, signal handlers, serve's gc.freeze and switch interval)
    and what it keeps for the rest of its process (the Trakt pairs not stored yet, the built
    anime index) would otherwise reach the tests run after it in this worker, and let a
    second command see what the first one left in memory, which a new process never does."""
    from watchbridge import anime_data
    from watchbridge.services import trakt

    loggers = {
        name: _LoggerState(
            logger.level,
            list(logger.handlers),
            list(logger.filters),
            logger.propagate,
            logger.disabled,
        )
        for name, logger in _loggers().items()
    }
    environment, folder = dict(os.environ), os.getcwd()
    main_thread = threading.current_thread() is threading.main_thread()
    signals = {
        number: signal.getsignal(number)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    switch, frozen = sys.getswitchinterval(), gc.get_freeze_count()
    caches: tuple[dict[Any, Any], ...] = (trakt._UNSAVED, anime_data._BUILT, anime_data._UNSAVED)
    kept = [dict(cache) for cache in caches]
    for cache in caches:
        cache.clear()  # a new process starts with none
    try:
        yield
    finally:
        for cache, before in zip(caches, kept, strict=True):
            cache.clear()  # the command's process ends with them
            cache.update(before)
        for name, logger in _loggers().items():
            state = loggers.get(name)
            if state is None:  # made by a module the command imported first: as it is
                continue
            logger.setLevel(state.level)
            logger.handlers, logger.filters = state.handlers, state.filters
            logger.propagate, logger.disabled = state.propagate, state.disabled
        if dict(os.environ) != environment:
            os.environ.clear()
            os.environ.update(environment)
        if os.getcwd() != folder:
            os.chdir(folder)
        if main_thread:
            for number, handler in signals.items():
                if signal.getsignal(number) is not handler and handler is not None:
                    signal.signal(number, handler)
        sys.setswitchinterval(switch)
        if gc.get_freeze_count() and not frozen:
            gc.unfreeze()


def watchbridge(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`watchbridge ARGS` as a user or cron runs it (`watchbridge.cli.main`: the command and
    its turning of errors into a line and an exit code), in this process: a new Python for
    each run would spend ~1 s importing. `stdin` is what it reads; its exit code, stdout and
    stderr. What the command leaves in the process is undone (`_as_a_process_of_its_own`)."""
    from click.testing import CliRunner

    from watchbridge.cli import main

    with _as_a_process_of_its_own(), CliRunner().isolation(input=stdin) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
        except Exception:  # what Python does with one the command lets out (--debug)
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        said, told = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess(list(args), code, said, told)


def wait_ready(
    base_url: str, timeout: float = 10.0, serving: Callable[[], bool] | None = None
) -> float:
    """Poll /readyz until 200, asked once `serving()` (if given) says the server that would
    answer is the one the test started (it may raise to say that server is gone); returns
    seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if serving is None or serving():
            try:
                if httpx.get(f"{base_url}/readyz", timeout=0.5).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
        time.sleep(0.02)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


def start_logged(
    argv: list[str], url: str, log: Path, timeout: float = 15.0
) -> subprocess.Popen[bytes]:
    """Start a server writing to `log` and wait for its /readyz (benches: long runs, big logs)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{argv[-1]}: the server exited during start-up:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=0.5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    proc.kill()
    raise SystemExit(f"the server was not ready after {timeout:.0f} s:\n{log.read_text()}")


# Starting takes ~1 s, and much longer on a machine busy with other work: a wait that only ends
# early when the service has exited or is not ours.
START_TIMEOUT = 60.0


@dataclass
class ServiceProcess:
    """`watchbridge serve` as a real child process."""

    config: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    seen: list[str] = field(default_factory=list)  # lines read by wait_for_output
    options: list[str] = field(default_factory=list)  # serve's own, after --config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "watchbridge",
                "serve",
                "--config",
                str(self.config),
                *self.options,
            ],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if wait:
            try:
                wait_ready(self.url, START_TIMEOUT, serving=self._listening)
            except TimeoutError:
                self.kill()
                raise AssertionError(f"service did not start:\n{self.output()}") from None
        return self

    def _listening(self) -> bool:
        """Whether this process listens on its port: an answer from a server another test run
        started there must not pass for ours; raises if it has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"service exited during start-up:\n{self.output()}")
        return listens(self.proc.pid, self.port)

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        """Everything it printed (it is stopped first, if still running)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.kill()
        return "".join(self.seen) + (self.proc.stdout.read() if self.proc.stdout else "")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait while it runs until it has printed `text`."""
        assert self.proc is not None and self.proc.stdout is not None
        pipe = self.proc.stdout.fileno()  # read raw: the text wrapper would buffer ahead
        deadline = time.monotonic() + timeout
        while text not in "".join(self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"not printed in {timeout:.0f} s: {text!r}\n{''.join(self.seen)}"
            ready, _, _ = select.select([pipe], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(pipe, 65536)
                assert chunk, f"it exited first:\n{''.join(self.seen)}"
                self.seen.append(chunk.decode(errors="replace"))


class AppThread:
    """Serve a Litestar app built in the test (with injected fakes) on a real loopback port."""

    def __init__(self, app: Litestar) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> AppThread:
        self.thread.start()
        wait_ready(self.url, START_TIMEOUT, serving=self._serving)
        return self

    def _serving(self) -> bool:
        """Whether our server has bound its port (not another test run's answering there)."""
        if not self.thread.is_alive():
            raise AssertionError(f"the app's server on port {self.port} stopped while starting")
        return self.server.started

    def settled(self, timeout: float = 10.0) -> None:
        """Wait until no request is in flight: what the app does after its answer is done."""
        deadline = time.monotonic() + timeout
        while self.server.server_state.tasks:
            if time.monotonic() > deadline:
                raise AssertionError(f"requests still in flight after {timeout} s")
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


# How long the tests' Trakt clients look for a pair another process stored after Trakt refused
# their refresh: the same three looks as the service's 2 s, over sooner.
QUICK_REFRESH_RACE = 0.05


def quick_refresh_race(config: Config) -> Config:
    """`config`, the Trakt clients built from it (by the code under test, too) looking for
    another process's pair over QUICK_REFRESH_RACE seconds."""
    if config.services.trakt is None:
        return config
    trakt = dataclasses.replace(config.services.trakt, refresh_race_seconds=QUICK_REFRESH_RACE)
    services = dataclasses.replace(config.services, trakt=trakt)
    return dataclasses.replace(config, services=services)


def sign_in_trakt(
    store: Any, trakt: Any, profile: str = "me", now: float | None = None, user: Any = None
) -> None:
    """Give `profile` a Trakt sign-in the fake Trakt accepts (as fake `user`), as
    `watchbridge auth trakt` would."""
    token = trakt.issue_token(user)
    store.put_token(
        "trakt",
        profile,
        {
            "access_token": token.access_token,
            "refresh_token": token.refresh_token,
            "created_at": token.created_at if now is None else now,
            "expires_in": token.expires_in,
        },
        token.created_at if now is None else now,
    )


def three_unmatched_plays_and_a_rating_behind_one(directory: Path) -> Path:
    """A household without Trakt: three episodes played on a Plex library whose items carry
    no TMDB id (Serializd needs one), then one of them rated; the rating queues behind its
    episode's play, which waits for ids. Built with the store's own calls."""
    from watchbridge.store import NewOutboxRow, Store, ordering_key

    path = write_config(
        directory,
        "services: {serializd: {}}\n"
        "profiles: {me: {accounts: {serializd: {email: a@b.c, password: pw}}}}\n",
    )
    with Store.open(directory / "watchbridge.db") as store:
        store.enqueue(
            [
                NewOutboxRow(
                    "serializd", "me", "play", {}, ordering_key("me", "serializd", item, "play"),
                    f"play-{item}",
                )
                for item in ("ep1", "ep2", "ep3")
            ],
            1.0,
        )  # fmt: skip
        for play in store.claim("w", 1.0, 10, ["serializd"]):
            store.retry_later(play.id, 2.0, 3600.0, "unmatched: no TMDB show id for ep")
        store.enqueue(
            [
                NewOutboxRow(
                    "serializd", "me", "rating", {"rating": 8},
                    ordering_key("me", "serializd", "ep1", "rating"), "rating-ep1",
                )
            ],
            3.0,
        )  # fmt: skip
    return path


def put_back(copy: Path, database: Path) -> None:
    """What a restore by hand does: the copy (`watchbridge backup`'s) copied over the database
    file, the old one's journal files deleted; nothing else beside it changes."""
    for journal in (
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
    ):
        journal.unlink(missing_ok=True)
    database.write_bytes(copy.read_bytes())


@contextlib.asynccontextmanager
async def loop_held(*, collecting: bool = False) -> AsyncIterator[list[float]]:
    """The CPU the event loop's thread spends between two of its turns while the block runs
    (CPU, not wall time: fakes serving in this process's other threads, and the machine's
    load, do not count). Unless `collecting`, garbage collection is off meanwhile: a
    collection lands in whichever thread allocates and holds every thread, the
    interpreter's doing, not the code's under test."""
    held: list[float] = []

    async def tick() -> None:
        while True:
            began = time.thread_time()
            await asyncio.sleep(0.002)
            held.append(time.thread_time() - began)

    if not collecting:
        gc.collect()
        gc.disable()
    ticker = asyncio.create_task(tick())
    try:
        yield held
    finally:
        ticker.cancel()
        gc.enable()


class PausedRead:
    """Stops a statement of this process that reads `what` (a piece of its SQL, with its
    values in; the first such, or the one after the first `after`) until `release` is set,
    on whichever SQLite connection runs it: the store's own (opened before, given to
    `paused_read`) or one opened since. The thread running it waits there, holding whatever
    it holds: a read under the store's lock holds up every other use of that lock. SQLite's
    progress handler, not our code's, does it. `steps`: the statement's steps (virtual
    machine instructions) let run first, so that it stops with its read begun (its locks
    taken) rather than at its start."""

    def __init__(self, what: str | re.Pattern[str], after: int = 0, steps: int = 0) -> None:
        self.what = what  # a piece of its SQL, or a pattern the SQL matches somewhere
        self.after = after  # statements reading `what` let through before the one stopped
        self.steps = steps
        self.started = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def watch(self, conn: sqlite3.Connection) -> None:
        running = [False]  # whether the connection's statement now is the one to stop
        steps = [0]

        def started(sql: str) -> None:
            reads = self.what in sql if isinstance(self.what, str) else bool(self.what.search(sql))
            running[0] = reads and self.started == self.after
            self.started += reads

        def step() -> int:
            if not running[0] or self.reached.is_set():
                return 0
            steps[0] += 1
            if steps[0] > self.steps:
                self.reached.set()
                self.release.wait(PAUSE_BOUND)
            return 0  # go on

        conn.set_trace_callback(started)
        conn.set_progress_handler(step, 1)


PAUSE_BOUND = 10.0  # seconds: only bounds a test that fails (nothing releases the read)


@contextlib.contextmanager
def paused_read(
    what: str | re.Pattern[str], *opened: sqlite3.Connection, after: int = 0, steps: int = 0
) -> Iterator[PausedRead]:
    """A `PausedRead` of `what` (the one after the first `after` such statements, once it
    ran `steps` steps) on the connections `opened` and on every one opened in the block;
    released at its end, if not before."""
    paused = PausedRead(what, after, steps)
    for conn in opened:
        paused.watch(conn)
    connect = sqlite3.connect

    def connect_watched(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        paused.watch(conn)
        return conn

    sqlite3.connect = connect_watched  # type: ignore[assignment]
    try:
        yield paused
    finally:
        sqlite3.connect = connect
        # The hooks stay (they pause once only): taking one off a connection waits for its
        # statement, which may be the paused one, waiting for the GIL this thread holds.
        paused.release.set()


def store_connections(store: Any) -> list[sqlite3.Connection]:
    """The SQLite connections `store` has open: its own, and those of its reads beside the
    lock opened so far (`store.ReadConnection`, opened at first use), for `paused_read` and
    `statements_run` to watch."""
    from watchbridge.store import ReadConnection

    reads = [r for r in vars(store).values() if isinstance(r, ReadConnection)]
    return [store.db.conn, *(r._conn for r in reads if r._conn is not None)]


@contextlib.contextmanager
def statements_run(what: str, *opened: sqlite3.Connection) -> Iterator[list[str]]:
    """The statements run in the block that hold `what` (a piece of their SQL, with their
    values in), on the connections `opened` and on every one opened in the block: SQLite's
    trace tells, not our code."""
    seen: list[str] = []

    def watch(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(lambda sql: seen.append(sql) if what in sql else None)

    for conn in opened:
        watch(conn)
    connect = sqlite3.connect

    def connect_watched(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        watch(conn)
        return conn

    sqlite3.connect = connect_watched  # type: ignore[assignment]
    try:
        yield seen
    finally:
        sqlite3.connect = connect


async def loop_free_at_every_wait_for_the_store(store: Any, work: Awaitable[object]) -> bool:
    """`loop_free_while_the_store_is_locked` for every use of the store `work` makes, not only
    its first: another thread holds the store's lock from before `work` starts to its end,
    letting go only when the loop tells it to (once something waits for the lock), and
    taking it again as soon as that waiter has it. A use made on the event loop blocks it:
    nothing tells the thread, which lets go by itself after PAUSE_BOUND seconds."""
    asking, let_go, over = threading.Event(), threading.Event(), threading.Event()
    taken = threading.Event()
    told: list[bool] = []

    def hold() -> None:
        while not over.is_set():
            with store.transaction():
                asking.clear()  # a round's waiters and the loop's answer are its own
                let_go.clear()
                taken.set()
                while not asking.wait(0.005):
                    if over.is_set():
                        return
                told.append(let_go.wait(PAUSE_BOUND))
            # The waiter polls the lock every LOCK_POLL: long enough for it to get it first.
            time.sleep(0.02)

    def waited() -> None:
        asking.set()

    holder = threading.Thread(target=hold, name="holds-the-store", daemon=True)
    before, store.before_waiting = store.before_waiting, waited
    holder.start()
    try:
        assert await asyncio.to_thread(taken.wait, PAUSE_BOUND)
        working = asyncio.ensure_future(work)
        while not working.done():
            if asking.is_set():
                asking.clear()
                let_go.set()
            await asyncio.sleep(0.002)
        await working
    finally:
        over.set()
        let_go.set()
        store.before_waiting = before
        await asyncio.to_thread(holder.join)
    return bool(told) and all(told)


async def loop_free_while_the_store_is_locked(store: Any, work: Awaitable[object]) -> bool:
    """Whether the event loop stays free while `work` waits for the store's lock, which
    another thread holds meanwhile (as a link run's apply does, for most of a second at a
    big account). That thread lets go when the loop tells it to, once `work` waits for the
    lock (the store's `before_waiting`); a loop blocked inside `work` cannot tell it, and
    the thread lets go by itself after PAUSE_BOUND seconds."""
    taken, waiting, let_go = threading.Event(), threading.Event(), threading.Event()
    told: list[bool] = []

    def hold() -> None:
        with store.transaction():
            taken.set()
            told.append(let_go.wait(PAUSE_BOUND))

    holder = threading.Thread(target=hold, name="holds-the-store", daemon=True)
    before, store.before_waiting = store.before_waiting, waiting.set
    holder.start()
    try:
        assert await asyncio.to_thread(taken.wait, PAUSE_BOUND)
        working = asyncio.ensure_future(work)
        await asyncio.to_thread(waiting.wait, PAUSE_BOUND)
        let_go.set()
        await working
    finally:
        let_go.set()
        store.before_waiting = before
        await asyncio.to_thread(holder.join)
    return told == [True]
