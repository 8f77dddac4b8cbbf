from __future__ import annotations

import _sqlite3
import ctypes
import hashlib
import os
import random
import secrets
import shutil
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx._transports.default as httpx_transports
import pytest

from tests.fakes.base import FakeServer, running
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import ServiceProcess, free_port, write_config
from tests.linkrig import BB, Rig, open_rig, use_fast_readers
from watchbridge.config import Config, load_config
from watchbridge.http import tls_context
from watchbridge.store import Store

# Room enough in a RAM filesystem for a whole run's temporary folders (a few tens of MB).
RAM_FOLDER, RAM_ROOM_NEEDED = Path("/dev/shm"), 1 << 30

# The run's seed of Python's `random`: a fresh one each run, or the one this variable names.
SEED_VARIABLE = "WATCHBRIDGE_TEST_SEED"
RUN_SEED = pytest.StashKey[int]()


def run_seed_chosen(config: pytest.Config) -> int:
    """The controller's seed in an xdist worker; else the variable's, or a fresh one."""
    worker_input = getattr(config, "workerinput", None)
    if worker_input is not None:
        return int(worker_input[SEED_VARIABLE])
    given = os.environ.get(SEED_VARIABLE, "").strip()
    if not given:
        return secrets.randbelow(1 << 32)
    try:
        return int(given)
    except ValueError:
        raise pytest.UsageError(
            f"{SEED_VARIABLE}={given!r}: expected a whole number, the run seed a report printed "
            f"('replay with {SEED_VARIABLE}=N')"
        ) from None


def seed_of_test(run_seed: int, nodeid: str) -> int:
    """The same for a test in every run with this run seed, whichever process runs it and
    whatever ran before it there."""
    digest = hashlib.sha256(f"{run_seed} {nodeid}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def replay_hint(config: pytest.Config) -> str:
    return f"replay with {SEED_VARIABLE}={config.stash[RUN_SEED]}"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[RUN_SEED] = run_seed_chosen(config)
    tmp_paths_in_ram(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's workers draw as the controller says (each process would choose its own)."""
    node.workerinput[SEED_VARIABLE] = str(node.config.stash[RUN_SEED])


# Files with tests of 15 s or more (real processes, real-time backoffs, walks of months): run
# first, so that xdist's four workers end together on short tests rather than three waiting
# for the one that drew a long one last (about a minute of the whole run's wall time).
LONG_FIRST = (
    "test_walkthrough_", "test_plex_outage", "test_account_switch", "test_alert_texts",
    "test_sync_loop", "test_random_seed", "test_downtime", "test_deploy", "test_cli",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long files first, the rest in their usual order (the same on every worker)."""
    items.sort(key=lambda item: not item.path.name.startswith(LONG_FIRST))


def pytest_report_header(config: pytest.Config) -> str:
    return f"random: {SEED_VARIABLE}={config.stash[RUN_SEED]} (set it to replay this run)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:  # `-q` shows no header: each failure says how to replay it
        report.sections.append(("random seed", replay_hint(item.config)))
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    if terminalreporter.stats.get("failed") or terminalreporter.stats.get("error"):
        terminalreporter.write_line(replay_hint(config))


@pytest.fixture(autouse=True)
def random_seeded_for_the_test(request: pytest.FixtureRequest) -> None:
    """Python's global `random` (the delivery worker's and scheduler's default jitter, the
    HTTP retries' and store's draws) starts each test from the test's own seed, so a failure
    that hangs on a draw replays with the run seed its report prints. Hypothesis seeds and
    restores `random` around its examples itself, and keeps its own seeds (`--hypothesis-seed`).
    Fixtures of a wider scope set up before this one, and threads that draw concurrently, still
    draw as they come."""
    random.seed(seed_of_test(request.config.stash[RUN_SEED], request.node.nodeid))


def tmp_paths_in_ram(config: pytest.Config) -> None:
    """`tmp_path`s in RAM where the machine has room there: every fresh database's migrations
    and every commit at `synchronous=FULL` wait for the disk otherwise (~100 ms a new database
    on a busy disk against ~10 ms), thousands of times a run; SQLite, its WAL and its locks
    behave the same on tmpfs (a local filesystem to `watchbridge.filesystems` too). A root
    the caller chose (PYTEST_DEBUG_TEMPROOT, --basetemp) wins; xdist's workers get theirs
    from this process."""
    if os.environ.get("PYTEST_DEBUG_TEMPROOT") or config.option.basetemp:
        return
    try:
        room = shutil.disk_usage(RAM_FOLDER).free
    except OSError:  # no /dev/shm on this machine
        return
    if room >= RAM_ROOM_NEEDED and os.access(RAM_FOLDER, os.W_OK):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(RAM_FOLDER)


@pytest.fixture(scope="session", autouse=True)
def utc_unless_a_test_says_otherwise() -> Iterator[None]:
    """Calendar days (AniList's dates) are the local time zone's: the same on every machine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_reaches_the_processes_tests_start() -> Iterator[None]:
    """The processes a test starts take SIGINT as a terminal's do, however this run began: a
    script's `pytest &` (a background job without job control) ignores SIGINT, every child
    inherits that, and each Ctrl-C test's signal was lost; it waited out its deadline
    (60 s) and failed. A handler of ours is reset to the default in a child."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(autouse=True)
def failing_requests_told_afresh() -> None:
    """Which hosts' requests fail, and whose clocks differ, is the process's record
    (`watchbridge.http._FAILING`, `_CLOCKS`; Serializd's unreadable diary rows,
    `_UNREAD_ROWS`; Trakt's history entries and ratings, `_UNREAD_HISTORY`; AniList's
    unreadable list entries, `_UNREAD_ENTRIES`): each test starts with none, as a new process
    does, whatever a fake an earlier test ran on the same port left there (else its first
    warning is a DEBUG line, by test order)."""
    from watchbridge import http
    from watchbridge.readers import trakt
    from watchbridge.services import anilist, serializd

    http._FAILING.forget_all()
    http._CLOCKS.forget_all()
    serializd._UNREAD_ROWS.forget_all()
    trakt._UNREAD_HISTORY.forget_all()
    anilist._UNREAD_ENTRIES.forget_all()


@pytest.fixture
def time_zone() -> Iterator[Callable[[str], None]]:
    """Run the test in a time zone of its choice: `time_zone("America/Los_Angeles")`."""
    with pytest.MonkeyPatch.context() as patch:

        def use(name: str) -> None:
            patch.setenv("TZ", name)
            time.tzset()

        yield use
    time.tzset()


@pytest.fixture(scope="session", autouse=True)
def one_tls_context_per_session() -> Iterator[None]:
    """Every default httpx client in the tests gets the service's one TLS context
    (`watchbridge.http.tls_context`), as the service's own clients do.

    Each `httpx.get` or client a test makes would otherwise load the whole CA bundle into a new
    context (~40 ms, many hundreds of times). Clients asking for anything but the default
    (`verify=False`, their own context, `cert=`, no trust_env) still get httpx's own answer.
    The few tests of https (tests/test_http_network.py) only make httpcore set the same ALPN
    on it, which plain HTTP never reads; one trusting another SSL_CERT_FILE makes its own."""
    original = httpx_transports.create_ssl_context

    def create_ssl_context(
        verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return tls_context()
        return original(verify=verify, cert=cert, trust_env=trust_env)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx_transports, "create_ssl_context", create_ssl_context)
        yield


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A minimal valid config with a fresh DB and a free port."""
    return write_config(tmp_path)


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file, {})


@pytest.fixture
def no_shared_memory() -> Iterator[None]:
    """SQLite's default VFS made `unix-none` for the test, in the very library Python's sqlite3
    module calls: it has no shared memory, so `PRAGMA journal_mode=WAL` answers with the
    rollback journal SQLite keeps, as where the files of a database cannot share memory.
    Ask for it before any fixture that opens a database (a WAL database would not open)."""
    try:
        library = ctypes.CDLL(_sqlite3.__file__)  # its sqlite3, linked in or loaded beside it
        find, register = library.sqlite3_vfs_find, library.sqlite3_vfs_register
    except (OSError, AttributeError) as exc:  # a Python whose sqlite3 hides its symbols
        pytest.skip(f"SQLite's VFS cannot be switched from here: {exc}")
    find.restype, find.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    register.argtypes = [ctypes.c_void_p, ctypes.c_int]
    default, without = find(None), find(b"unix-none")
    if not (default and without):
        pytest.skip("this SQLite build has no `unix-none` VFS")
    assert register(without, 1) == 0  # the default from now on
    try:
        yield
    finally:
        register(default, 1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh database per test."""
    db = Store.open(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The real service as a child process on a free port, ready to take requests."""
    port = free_port()
    proc = ServiceProcess(write_config(tmp_path, port=port), port).start()
    yield proc
    proc.kill()


@pytest.fixture
def start_fake() -> Iterator[Callable[[FakeServer], FakeServer]]:
    """Start any fake: `trakt = start_fake(FakeTrakt())`; stopped and checked at teardown."""
    with ExitStack() as stack:
        yield lambda fake: stack.enter_context(running(fake))


@pytest.fixture
def trakt(start_fake: Callable[[FakeServer], FakeServer]) -> FakeTrakt:
    """Trakt knowing Breaking Bad's first two seasons, as the Trakt <-> Serializd link's tests
    start it; a test file whose Trakt knows other things defines its own `trakt`."""
    fake = start_fake(FakeTrakt())
    assert isinstance(fake, FakeTrakt)
    fake.add_show("Breaking Bad", 2008, tmdb=BB, tvdb=81189, seasons={1: 7, 2: 13})
    return fake


@pytest.fixture
def serializd(start_fake: Callable[[FakeServer], FakeServer]) -> FakeSerializd:
    """Serializd knowing Breaking Bad's first two seasons, its diary strictly newest first (so
    that pages are exact); a test file whose Serializd knows other things defines its own."""
    fake = start_fake(FakeSerializd())
    assert isinstance(fake, FakeSerializd)
    fake.add_show(BB, "Breaking Bad", seasons={1: 7, 2: 13})
    fake.diary_order = "newest"
    return fake


@pytest.fixture
async def rig(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    """The Trakt <-> Serializd link over `trakt` and `serializd`, applying its first run,
    removals held above half (`tests.linkrig`); many files define a `rig` of their own."""
    use_fast_readers(monkeypatch)
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply, max_removal_share: 0.5")
    yield rig
    await rig.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver(start_fake: Callable[[FakeServer], FakeServer]) -> AlertReceiver:
    """A local endpoint that records the alerts Apprise sends to `receiver.apprise_url`."""
    fake = start_fake(AlertReceiver())
    assert isinstance(fake, AlertReceiver)
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
