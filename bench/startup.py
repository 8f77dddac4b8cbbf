"""Start-up and idle cost of `watchbridge serve` on the example config.

Prints: seconds from process start to /readyz 200, RSS after the idle period, and CPU used
during the idle period as a share of one core. Targets: <= 1.5 s, <= 80 MB, <= 0.5 %.

    .venv/bin/python bench/startup.py [--idle 60] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(directory: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    env = {**os.environ, "WATCHBRIDGE_DATA_DIR": str(directory), "WATCHBRIDGE_PORT": str(port)}
    began = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watchbridge",
            "serve",
            "--config",
            str(ROOT / "config" / "watchbridge.example.yaml"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=0.5) as client:
        while True:
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return proc, url, time.monotonic() - began
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the service exited during start-up")
            time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds to measure")
    parser.add_argument("--runs", type=int, default=5, help="start-ups to time")
    args = parser.parse_args()

    ready_times = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            proc, _, ready = start(Path(tmp))
            ready_times.append(ready)
            proc.terminate()
            proc.wait()
    print(
        f"ready: median {statistics.median(ready_times):.3f} s, "
        f"max {max(ready_times):.3f} s over {args.runs} starts (target <= 1.5 s)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        proc, url, _ = start(Path(tmp))
        httpx.get(f"{url}/metrics")  # one scrape, as Prometheus would, before going idle
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(args.idle)
        cpu_share = (cpu_seconds(proc.pid) - cpu_before) / args.idle
        rss = rss_mb(proc.pid)
        proc.terminate()
        proc.wait()
    print(f"idle RSS after {args.idle:.0f} s: {rss:.1f} MB (target <= 80 MB)")
    print(f"idle CPU over {args.idle:.0f} s: {cpu_share * 100:.3f} % of one core (target <= 0.5 %)")


if __name__ == "__main__":
    main()
