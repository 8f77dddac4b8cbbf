"""Ctrl-C and `docker stop` in the first second of `watchbridge serve`: a quiet stop, no traceback.

Each signal is sent when the real process has printed a given line, so each lands in one
moment of its start-up whatever the machine's speed: `-X importtime` prints a line as each
module is imported, which marks the import of the command itself (before the config is read).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.harness import write_config

# (moment, the line printed just before it)
MOMENTS = [
    ("importing the command", " watchbridge.errors\n"),
    ("opening the database", "watchbridge: a new database at"),
    ("starting the server", "msg=listening"),
    ("starting the background work", 'msg="Waiting for application startup."'),
]

# A signal the process lost never ends it: this only bounds that failure. One it took ends it in
# under a second on an idle machine (docker stop waits 10 s), but that second is CPU work (the
# interpreter's exit with the whole app imported) that a loaded test machine stretches to 9 s.
STOP_DEADLINE = 60


def signalled_at(
    tmp_path: Path, line: str, sig: signal.Signals, prefix: tuple[str, ...] = ()
) -> tuple[int, str]:
    """`watchbridge serve` sent `sig` once it printed `line`: (exit code, all it printed)."""
    config = write_config(tmp_path)
    command = [sys.executable, "-X", "importtime", "-m", "watchbridge", "serve", "--config"]
    proc = subprocess.Popen(
        [*prefix, *command, str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.stdout is not None
    printed = []
    watchdog = threading.Timer(60, proc.kill)  # the line never printed: the loop below ends
    watchdog.start()
    try:
        for printed_line in proc.stdout:
            printed.append(printed_line)
            if line in printed_line:
                target = proc.pid if not prefix else _child_of(proc.pid)
                os.kill(target, sig)
                break
        else:
            pytest.fail(f"never printed {line!r}:\n{''.join(printed)}")
        watchdog.cancel()
        try:
            rest, _ = proc.communicate(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{sig.name} did not stop it (lost?):\n{''.join(printed)}")
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(printed) + rest


def _child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "the service has not started"
    return int(children[0])


@pytest.mark.parametrize(("moment", "line"), MOMENTS, ids=[m for m, _ in MOMENTS])
def test_ctrl_c_during_start_up_stops_quietly_with_exit_130(
    tmp_path: Path, moment: str, line: str
) -> None:
    code, printed = signalled_at(tmp_path, line, signal.SIGINT)
    assert "Traceback" not in printed, f"{moment}:\n{printed}"
    # Interrupted: 130, or ended by SIGINT itself (what a shell shows as 130).
    assert code in (130, -signal.SIGINT), f"{moment}: exit {code}\n{printed}"
    assert printed.rstrip().endswith("aborted"), printed


def _as_first_process() -> tuple[str, ...]:
    """The command prefix that runs a process as PID 1 of a new PID namespace (as in a
    container), or skip where this user may not make one."""
    prefix = ("unshare", "--pid", "--fork", "--kill-child")
    try:
        subprocess.run([*prefix, "true"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no new PID namespace for this user (unshare)")
    return prefix


@pytest.mark.parametrize(("moment", "line"), MOMENTS, ids=[m for m, _ in MOMENTS])
def test_docker_stop_during_start_up_stops_it_at_once(
    tmp_path: Path, moment: str, line: str
) -> None:
    # As a container's PID 1 (the entrypoint execs the command): the kernel drops a signal
    # for which PID 1 has no handler, so a SIGTERM before the server's own was lost.
    code, printed = signalled_at(tmp_path, line, signal.SIGTERM, prefix=_as_first_process())
    assert "Traceback" not in printed, f"{moment}:\n{printed}"
    assert code == 0, f"{moment}: exit {code}\n{printed}"


@pytest.mark.parametrize(("moment", "line"), MOMENTS, ids=[m for m, _ in MOMENTS])
def test_sigterm_during_start_up_stops_it_quietly(tmp_path: Path, moment: str, line: str) -> None:
    code, printed = signalled_at(tmp_path, line, signal.SIGTERM)
    assert "Traceback" not in printed, f"{moment}:\n{printed}"
    assert code in (0, -signal.SIGTERM), f"{moment}: exit {code}\n{printed}"


# The process sends itself SIGTERM from a weakref callback run as the server binds its socket,
# after the CLI's handler is in place and before uvicorn's: Python ignores (prints) what a
# callback raises, so the handler's SystemExit is dropped there, as CI once saw it dropped in an
# import's module-lock callback.
SIGTERM_IN_A_CALLBACK = """
import os, signal, sys, weakref
from watchbridge.__main__ import main

class Held:
    pass

def sigterm_here(ref):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):  # the handler runs between these bytecodes
        pass

def at_bind(event, args):
    if event == "socket.bind" and not sent:
        sent.append(True)
        held = Held()
        ref = weakref.ref(held, sigterm_here)
        del held

sent = []
sys.addaudithook(at_bind)
main()
"""


def test_docker_stop_dropped_where_python_ignores_exceptions_still_stops_it(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    command = [sys.executable, "-c", SIGTERM_IN_A_CALLBACK, "serve", "--config", str(config)]
    try:
        done = subprocess.run(
            [*_as_first_process(), *command],
            capture_output=True,
            text=True,
            timeout=STOP_DEADLINE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the SIGTERM was lost:\n{exc.stdout}{exc.stderr}")
    printed = done.stdout + done.stderr
    assert "msg=listening" in printed, printed  # the signal came at the moment meant
    assert "Traceback" not in printed, printed
    assert done.returncode == 0, printed
