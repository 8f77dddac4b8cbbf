"""`watchbridge sync --dry-run`: both sides read through their adapters, the plan shown."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.base import running
from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import watchbridge
from tests.linkrig import link_config_file
from tests.unpaced import unpaced_while
from watchbridge.review import FIRST_SYNC_WAITS


@pytest.fixture(autouse=True, scope="module")
def _unpaced() -> Iterator[None]:
    """The clients' pacing lifted: these tests are about
    what a run plans and writes, not the services' pace."""
    with unpaced_while("trakt", "serializd"):
        yield


def setup(tmp_path: Path, start_fake: Any) -> tuple[Path, FakeTrakt, FakeSerializd]:
    trakt, serializd = start_fake(FakeTrakt()), start_fake(FakeSerializd())
    show = trakt.add_show("Breaking Bad", 2008, tmdb=1396, tvdb=81189, seasons={1: 7})
    trakt.add_history(show.seasons[1].episodes[1], "2024-01-01T20:00:00.000Z")
    serializd.add_show(1396, "Breaking Bad", seasons={1: 7})
    serializd.log_entry(None, 1396, 1, 2, backdate="2024-01-02T20:00:00.000Z", rating=8)
    serializd.log_entry(None, 1396, 1, 1, backdate="2024-01-01T21:00:00.000Z")
    path = link_config_file(tmp_path, trakt, serializd)
    return path, trakt, serializd


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return watchbridge(*args)


@dataclass
class DryRun:
    path: Path
    trakt: FakeTrakt
    serializd: FakeSerializd
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DryRun]:
    """One `sync --dry-run` on a fresh setup, shared by the tests that only look at what it
    printed, wrote (nothing: so they can share it) and recorded."""
    with ExitStack() as stack:
        path, trakt, serializd = setup(
            tmp_path_factory.mktemp("dry-run"), lambda fake: stack.enter_context(running(fake))
        )
        result = run("sync", "--link", "trakt-serializd", "--dry-run", "--config", str(path))
        yield DryRun(path, trakt, serializd, result)


def test_dry_run_shows_each_write_with_its_reason(dry_run: DryRun) -> None:
    result = dry_run.result
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "profile me: trakt 1 plays, serializd 2 plays" in out
    assert (
        "add_play trakt episode:tmdb:1396:s1e2 2024-01-02 20:00:00 UTC  (new on serializd)" in out
    )
    assert "set_rating trakt episode:tmdb:1396:s1e2" in out and "= 80/100" in out
    assert "episode:tmdb:1396:s1e1" not in out  # the same viewing on both sides
    assert "dry run: nothing was written" in out


def test_the_plans_header_says_each_write_as_a_sentence(dry_run: DryRun) -> None:
    # It said `plan: trakt:add_play 1, trakt:set_rating 1`, which reads either way.
    header = next(line for line in dry_run.result.stdout.splitlines() if "plan:" in line)
    assert header == (
        "profile me: trakt 1 plays, serializd 2 plays; plan: add 1 play(s) to trakt"
        " (new on serializd), set 1 rating(s) on trakt (from serializd)"
    )


def test_a_dry_run_of_a_first_sync_that_waits_ends_with_the_command_that_applies_it(
    dry_run: DryRun,
) -> None:
    # It ended with "dry run: nothing was written": the next step was in the README only.
    last = dry_run.result.stdout.rstrip().splitlines()[-2:]
    assert last == [
        "dry run: nothing was written",
        f"{FIRST_SYNC_WAITS}: to write it, run `watchbridge sync --link trakt-serializd --yes`",
    ]


def test_a_one_way_dry_run_names_the_one_way_command(tmp_path: Path, start_fake: Any) -> None:
    path, _, _ = setup(tmp_path, start_fake)
    way = ("--link", "trakt-serializd", "--direction", "serializd-to-trakt")
    result = run("sync", *way, "--dry-run", "--config", str(path))
    assert result.returncode == 0, result.stderr
    said = f"run `watchbridge sync {' '.join(way)} --yes`"
    assert result.stdout.rstrip().endswith(said), result.stdout


def test_a_dry_run_after_the_first_sync_names_no_command(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, _ = setup(tmp_path, start_fake)
    run("sync", "--link", "trakt-serializd", "--yes", "--config", str(path))
    trakt.add_history(trakt.shows[0].seasons[1].episodes[4], "2024-01-05T20:00:00.000Z")
    result = run("sync", "--link", "trakt-serializd", "--dry-run", "--full", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "add_play serializd" in result.stdout  # a plan, which the next run writes by itself
    assert result.stdout.rstrip().endswith("dry run: nothing was written"), result.stdout


def test_dry_run_writes_nothing(dry_run: DryRun) -> None:
    trakt, serializd = dry_run.trakt, dry_run.serializd
    assert len(trakt.history()) == 1 and trakt.ratings() == []
    assert not [r for r in serializd.requests if r.method == "POST" and r.path != "/api/login"]


def test_a_first_run_asks_for_a_review_before_writing(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, _ = setup(tmp_path, start_fake)
    result = run("sync", "--link", "trakt-serializd", "--config", str(path))
    assert result.returncode != 0
    assert "--yes" in result.stderr and "first_run: apply" in result.stderr
    assert len(trakt.history()) == 1


def test_sync_writes_what_the_other_side_lacks(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, _ = setup(tmp_path, start_fake)
    result = run("sync", "--link", "trakt-serializd", "--yes", "--config", str(path))
    assert result.returncode == 0, result.stderr
    episodes = sorted((h.item.season, h.item.number) for h in trakt.history())
    assert episodes == [(1, 1), (1, 2)]
    assert [r.rating for r in trakt.ratings()] == [8]


def test_a_second_sync_writes_nothing_more(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, _ = setup(tmp_path, start_fake)
    run("sync", "--link", "trakt-serializd", "--yes", "--config", str(path))
    writes_before = [r for r in trakt.requests if r.method == "POST"]
    result = run("sync", "--link", "trakt-serializd", "--config", str(path))
    assert result.returncode == 0, result.stderr
    header = result.stdout.split("plan:")[1].splitlines()[0]
    assert not any(f"{to} trakt (" in header for to in ("to", "on", "from")), header
    assert [r for r in trakt.requests if r.method == "POST"] == writes_before


def test_runs_are_recorded_for_status(dry_run: DryRun) -> None:
    status = run("status", "--config", str(dry_run.path))
    assert "trakt-serializd: dry-run" in status.stdout


def test_unknown_link_is_named(dry_run: DryRun) -> None:
    result = run("sync", "--link", "nope", "--dry-run", "--config", str(dry_run.path))
    assert "no link 'nope'" in result.stderr and "trakt-serializd" in result.stderr


def test_two_way_sync_fills_both_sides(tmp_path: Path, start_fake: Any) -> None:
    path, trakt, serializd = setup(tmp_path, start_fake)
    show = trakt.shows[0]
    trakt.add_history(show.seasons[1].episodes[3], "2024-01-03T20:00:00.000Z")
    result = run("sync", "--link", "trakt-serializd", "--yes", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert sorted(r.episode_number or 0 for r in serializd.diary() if r.is_log) == [1, 2, 3]
    assert sorted((h.item.season, h.item.number) for h in trakt.history()) == [
        (1, 1),
        (1, 2),
        (1, 3),
    ]


def test_a_sync_with_no_changes_makes_one_cheap_request_per_service(
    tmp_path: Path, start_fake: Any
) -> None:
    path, trakt, serializd = setup(tmp_path, start_fake)
    run("sync", "--link", "trakt-serializd", "--yes", "--config", str(path))
    run("sync", "--link", "trakt-serializd", "--config", str(path))  # sees our own writes
    trakt_before, serializd_before = len(trakt.requests), len(serializd.requests)
    result = run("sync", "--link", "trakt-serializd", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "nothing changed on either side" in result.stdout
    assert [r.path for r in trakt.requests[trakt_before:]] == ["/sync/last_activities"]
    assert len(serializd.requests) - serializd_before == 1
