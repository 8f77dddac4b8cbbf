"""CPU of one run of the image's healthcheck (`python -m watchbridge.healthcheck`) against a
running `watchbridge serve`: the HEALTHCHECK runs it every 30 s, so on a small NAS it is most
of what an idle container costs.

Starts the service on a free port with a data folder (as the image does: WATCHBRIDGE_DATA_DIR,
WATCHBRIDGE_PORT), waits for /healthz, then runs the healthcheck --runs times and prints the
median user+sys CPU of each run (rusage of the child) and its wall time, and what that is as a
share of one core at one run every 30 s. `--no-note` deletes the service's `watchbridge.listening`
note first, to measure the fallback that reads the config.

    .venv/bin/python bench/healthcheck.py [--runs 20] [--no-note]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 30.0  # the Dockerfile's HEALTHCHECK --interval


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_healthy(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the service did not answer /healthz")


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-note", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wb-health-"))
    data = work / "data"
    data.mkdir(mode=0o700)
    port = free_port()
    config = work / "watchbridge.yaml"
    config.write_text(
        f"server:\n  host: 127.0.0.1\n  port: {port}\nstorage:\n  path: {data / 'watchbridge.db'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env.update(
        WATCHBRIDGE_CONFIG=str(config),
        WATCHBRIDGE_DATA_DIR=str(data),
        WATCHBRIDGE_PORT=str(port),
        PYTHONDONTWRITEBYTECODE="1",  # as in the image: compiled files, none written
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "watchbridge", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(port)
        time.sleep(1)  # the note is written once the service answers
        note = data / "watchbridge.listening"
        print(f"note written by the service: {note.exists()}")
        if args.no_note:
            note.unlink(missing_ok=True)
        cpu, wall = [], []
        for _ in range(args.runs):
            before, started = child_cpu(), time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "watchbridge.healthcheck"], env=env, capture_output=True
            )
            wall.append(time.perf_counter() - started)
            cpu.append(child_cpu() - before)
            if run.returncode != 0:
                raise SystemExit(f"healthcheck failed: {run.stdout!r} {run.stderr!r}")
        median = statistics.median(cpu)
        print(
            f"healthcheck ({'config fallback' if args.no_note else 'note'}): median CPU "
            f"{median * 1000:.1f} ms (min {min(cpu) * 1000:.1f}, max {max(cpu) * 1000:.1f}), "
            f"median wall {statistics.median(wall) * 1000:.1f} ms, {args.runs} runs"
        )
        print(f"at one run every {INTERVAL:.0f} s: {median / INTERVAL * 100:.3f} % of one core")
    finally:
        service.terminate()
        service.wait(20)


if __name__ == "__main__":
    main()
