"""Plex ⇄ Serializd without Trakt. Serializd is TV only: the link carries episodes, and a
movie watched in Plex stays where it is."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.fakes.plex import TOKEN, FakePlex
from tests.fakes.serializd import ALICE, FakeSerializd
from tests.harness import write_config

HOUR = 3600.0


def setup(tmp_path: Path, start_fake: Any) -> tuple[Path, FakePlex, FakeSerializd]:
    """Ten episodes watched in Plex, and a movie in its library (1 play of 11 once watched:
    under the default removal guard)."""
    plex, serializd = start_fake(FakePlex()), start_fake(FakeSerializd())
    serializd.seed_reference_catalogue()
    plex.add_movie("10", "Heat", 1995, ["imdb://tt0113277", "tmdb://949"])
    plex.add_show("20", "Breaking Bad", 2008, ["tmdb://1396", "tvdb://81189"])
    for n in range(1, 11):
        plex.add_episode(str(100 + n), "20", 2, n)
        plex.watch(str(100 + n), time.time() - 40 * HOUR + n * HOUR)
    return link_config(tmp_path, plex, serializd), plex, serializd


def link_config(
    tmp_path: Path, plex: FakePlex, serializd: FakeSerializd, options: str = ""
) -> Path:
    """Profile alex's plex-serializd link (`first_run: apply`, and `options`)."""
    return write_config(
        tmp_path,
        f"""services:
  serializd: {{api_url: "{serializd.url}"}}
  plex: {{url: "{plex.url}", token: "{TOKEN}"}}
profiles:
  alex:
    accounts:
      plex: {{}}
      serializd: {{email: {ALICE[0]}, password: "{ALICE[1]}"}}
links:
  plex-serializd: {{services: [plex, serializd], first_run: apply{options}}}
""",
    )


def sync(path: Path) -> str:
    command = [sys.executable, "-m", "watchbridge", "sync", "--link", "plex-serializd"]
    result = subprocess.run(
        [*command, "--config", str(path), "--full"], capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_movie_watched_in_plex_stays_watched_there(tmp_path: Path, start_fake: Any) -> None:
    path, plex, serializd = setup(tmp_path, start_fake)
    sync(path)
    assert len(serializd.diary()) == 10
    plex.watch("10", time.time() - 2 * HOUR)

    said = [sync(path) for _ in range(2)]

    assert plex.user_state("10").get("viewCount") == 1
    assert "movie" not in "".join(said)  # nothing planned for it, either way
