"""The suite's draws from Python's `random` replay: a run prints its seed, and a run given it
draws the same numbers in every test, in another order and on an xdist worker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each test records its draws; one fails, so the run says how to replay it.
PROBES = """
import json, os, random
from pathlib import Path


def record(name):
    draws = [random.random() for _ in range(3)]
    Path(os.environ["DRAWS"], name).write_text(json.dumps(draws))


def test_first():
    record("first")


def test_second():
    record("second")


def test_fails():
    record("fails")
    assert False
"""


def run_probes(folder: Path, draws: Path, *args: str, seed: str | None) -> str:
    draws.mkdir()
    env = {**os.environ, "DRAWS": str(draws), "PYTHONPATH": str(ROOT)}
    env.pop("WATCHBRIDGE_TEST_SEED", None)
    if seed is not None:
        env["WATCHBRIDGE_TEST_SEED"] = seed
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # test_fails, nothing else
    return done.stdout


def drawn(draws: Path) -> dict[str, list[float]]:
    return {path.name: json.loads(path.read_text()) for path in draws.iterdir()}


def test_a_run_replays_with_the_seed_its_failure_printed(tmp_path: Path) -> None:
    folder = tmp_path / "probes"
    folder.mkdir()
    (folder / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (folder / "test_probes.py").write_text(PROBES)

    first = run_probes(folder, tmp_path / "one", "-n", "0", seed=None)
    hints = set(re.findall(r"replay with WATCHBRIDGE_TEST_SEED=(\d+)", first))
    assert len(hints) == 1, first  # under the failure and in the summary, the same seed
    (seed,) = hints
    reversed_order = [f"test_probes.py::test_{name}" for name in ("fails", "second", "first")]
    again = run_probes(folder, tmp_path / "two", "-n", "1", *reversed_order, seed=seed)

    assert f"replay with WATCHBRIDGE_TEST_SEED={seed}" in again
    assert drawn(tmp_path / "two") == drawn(tmp_path / "one")
    assert drawn(tmp_path / "one")["first"] != drawn(tmp_path / "one")["second"]
