"""The image's healthcheck (`python -m watchbridge.healthcheck`), asked every 30 s: where the
running service noted it listens, it asks there without reading the config (cheap); with no
such note from a running service, it reads the config as before. Real sockets throughout."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.harness import START_TIMEOUT, ServiceProcess, free_port, wait_ready, write_config
from watchbridge.healthcheck import LISTENING_FILE, main, note_listening

# What a healthcheck that reads the config imports; the one asking where the service noted
# it listens needs none of them.
HEAVY = ("yaml", "pydantic", "watchbridge.config", "watchbridge.entrypoint", "urllib.request")


@contextlib.contextmanager
def answering(
    host: str, status: int = 200, ready: tuple[int, bytes] = (200, b'{"status":"ready"}')
) -> Iterator[int]:
    """An HTTP server on `host` answering every GET with `status`, and /readyz with `ready`
    (its status and body); yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer, body = ready if self.path == "/readyz" else (status, b'{"status":"ok"}')
            self.send_response(answer)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def unserved_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing listens (held bound meanwhile, so nothing will)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def environ(tmp_path: Path, port: int, host_in_config: str = "127.0.0.1") -> dict[str, str]:
    """The image's environment for a service whose config says `host_in_config` and `port`."""
    config = write_config(tmp_path, port=port)
    config.write_text(config.read_text().replace("host: 127.0.0.1", f"host: {host_in_config}"))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env.update(
        WATCHBRIDGE_CONFIG=str(config), WATCHBRIDGE_DATA_DIR=str(data), WATCHBRIDGE_PORT=str(port)
    )
    return env


def noted(env: dict[str, str]) -> Path:
    return Path(env["WATCHBRIDGE_DATA_DIR"]) / LISTENING_FILE


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The healthcheck as the image runs it, listing the modules it imported on stderr."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "watchbridge.healthcheck"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def imported(result: subprocess.CompletedProcess[str]) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_it_asks_where_the_service_noted_it_listens_without_reading_the_config(
    tmp_path: Path,
) -> None:
    with answering("127.0.0.2") as port:
        # The config names an address where nothing answers: only the note leads to the service.
        env = environ(tmp_path, port, host_in_config="127.0.0.3")
        note_listening(str(noted(env)), "127.0.0.2", [port])
        result = run_check(env)
    assert result.returncode == 0, result.stdout
    assert not imported(result) & set(HEAVY), imported(result) & set(HEAVY)


def test_every_interface_noted_is_asked_on_loopback_in_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with answering("127.0.0.1") as port:
        env = environ(tmp_path, port, host_in_config="127.0.0.3")
        note_listening(str(noted(env)), "::", [port + 1, port])  # ::1 refuses, 127.0.0.1 answers
        assert main(env) == 0, capsys.readouterr().out


def test_the_service_noted_but_not_answering_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with unserved_port() as port:
        env = environ(tmp_path, port)
        note_listening(str(noted(env)), "127.0.0.1", [port])  # by this (running) process
        assert main(env) == 1
    assert capsys.readouterr().out.startswith(f"http://127.0.0.1:{port}/healthz: ")


def test_an_answer_other_than_200_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with answering("127.0.0.1", status=503) as port:
        env = environ(tmp_path, port)
        note_listening(str(noted(env)), "127.0.0.1", [port])
        assert main(env) == 1
    assert capsys.readouterr().out == f"http://127.0.0.1:{port}/healthz: answered 503\n"


def test_a_service_up_whose_database_takes_no_writes_is_unhealthy_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its disk full: every webhook is refused 503, so Docker (Unraid) must not show it healthy.
    full = b'{"status":"unavailable","reason":"database not writable (database or disk is full)"}'
    with answering("127.0.0.1", ready=(503, full)) as port:
        env = environ(tmp_path, port)
        note_listening(str(noted(env)), "127.0.0.1", [port])
        assert main(env) == 1
    assert capsys.readouterr().out == (
        f"http://127.0.0.1:{port}/readyz: answered 503: watchbridge is up but cannot write its "
        "database (database not writable (database or disk is full)), so it refuses every "
        "webhook (answered 503); see its log and the storage alert for what to do\n"
    )


@pytest.mark.parametrize("ready", [(404, b"{}"), (500, b"{}")], ids=["no-readyz", "500"])
def test_only_a_database_that_takes_no_writes_makes_a_service_up_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ready: tuple[int, bytes]
) -> None:
    with answering("127.0.0.1", ready=ready) as port:
        env = environ(tmp_path, port)
        note_listening(str(noted(env)), "127.0.0.1", [port])
        assert main(env) == 0, capsys.readouterr().out


def _by_a_process_gone(env: dict[str, str], port: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from watchbridge.healthcheck import note_listening;"
            " note_listening(sys.argv[1], '127.0.0.3', [int(sys.argv[2])])",
            str(noted(env)),
            str(port),
        ],
        check=True,
    )


def _by_another_process_of_this_pid(env: dict[str, str], port: int) -> None:
    # A container restarted gives its new service the old one's pid: the start time differs.
    note_listening(str(noted(env)), "127.0.0.3", [port])
    text = noted(env).read_text()
    started = next(ln for ln in text.splitlines() if ln.startswith("started "))
    noted(env).write_text(text.replace(started, f"started {int(started.split()[1]) + 1}"))


def _for_another_port(env: dict[str, str], port: int) -> None:
    note_listening(str(noted(env)), "127.0.0.3", [port + 1])


def _garbled(env: dict[str, str], port: int) -> None:
    noted(env).write_text("pid x\nports\n")


@pytest.mark.parametrize(
    "note",
    [
        None,  # a data folder a service of an older release ran on, or a first start
        _by_a_process_gone,
        _by_another_process_of_this_pid,
        _for_another_port,
        _garbled,
    ],
    ids=["missing", "writer-gone", "pid-reused", "other-port", "garbled"],
)
def test_without_a_note_of_a_running_service_it_reads_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], note: object
) -> None:
    with answering("127.0.0.2") as port:
        env = environ(tmp_path, port, host_in_config="127.0.0.2")
        if callable(note):
            note(env, port)  # pointing at 127.0.0.3, where nothing answers
        assert main(env) == 0, capsys.readouterr().out


def test_the_service_notes_where_it_listens_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    env = environ(tmp_path, port, host_in_config="127.0.0.2")
    _by_a_process_gone(env, port)  # a note a killed service left
    service = ServiceProcess(
        Path(env["WATCHBRIDGE_CONFIG"]),
        port,
        env={"WATCHBRIDGE_DATA_DIR": env["WATCHBRIDGE_DATA_DIR"]},
    )
    service.start(wait=False)
    try:
        wait_ready(f"http://127.0.0.2:{port}", START_TIMEOUT, serving=service._listening)
        assert stat.S_IMODE(noted(env).stat().st_mode) == 0o600
        running = run_check(env)
    finally:
        service.terminate()
    assert running.returncode == 0, running.stdout
    assert not imported(running) & set(HEAVY)  # the note's address, not the config's
    assert not noted(env).exists()  # a clean stop takes it away
    stopped = run_check(env)
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(f"http://127.0.0.2:{port}/healthz: ")
