"""What the catch-up of the plays Jellyfin's and Emby's webhooks missed (catchup.py) tells where
a household looks: the status page, `/api/status` and `watchbridge status` (a process of its
own: only the database): the plays it caught up in the last week, why its last read failed
(until one works), and an account a profile lists that the server does not have. Read over real
HTTP from the fake server."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.fakes.receiver import FakeClock
from tests.harness import AppThread, watchbridge
from tests.test_catch_up import ALEX, MOVIE, SAM, Clock, read
from watchbridge.app import Runtime
from watchbridge.catchup import CatchUp
from watchbridge.catchupstatus import CAUSE_KEPT
from watchbridge.config import load_config
from watchbridge.statuspage import page_state, render
from watchbridge.wiring import build_app, build_runtime
from watchbridge.zone import local_time

LABEL = "catch-up:      "


@pytest.fixture(params=["jellyfin", "emby"])
def server(
    request: pytest.FixtureRequest, start_fake: Callable[[FakeServer], FakeServer], clock: Clock
) -> FakeJellyfin:
    flavour: Literal["jellyfin", "emby"] = request.param
    fake = FakeJellyfin(flavour)
    fake.clock = clock  # its Date header: the clocks agree (the test's runs a day behind)
    start_fake(fake)
    fake.add_movie(MOVIE, "Arrival", 2016, Imdb="tt2543164", Tmdb="329865")
    fake.add_user(ALEX[flavour], "alex")
    fake.add_user(SAM, "sam")
    return fake


def config_file(tmp_path: Path, server: FakeJellyfin, listed: str = "alex") -> Path:
    path = tmp_path / "watchbridge.yaml"
    path.write_text(
        "server: {webhook_secret: catch-up-secret-0123456789}\n"
        f"storage: {{path: {tmp_path / 'wb.db'}}}\n"
        "services:\n"
        '  trakt: {client_id: abc, api_url: "http://127.0.0.1:9", auth_url: "http://127.0.0.1:9"}\n'
        f'  {server.flavour}: {{url: "{server.url}", api_key: {API_KEY}}}\n'
        "profiles:\n"
        f"  me: {{users: {{{server.flavour}: [{listed}]}}, accounts: {{trakt: {{}}}}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def clock() -> Clock:
    found = Clock()
    found.now = float(int(time.time()) - 86400)  # a day ago: within the status's week
    return found


@pytest.fixture
def path(tmp_path: Path, server: FakeJellyfin) -> Path:
    return config_file(tmp_path, server)


@pytest.fixture
def runtime(path: Path, clock: Clock) -> Iterator[Runtime]:
    built = build_runtime(load_config(path, {}), clock=clock)
    built.open()
    yield built
    built.close()


def status(path: Path) -> list[str]:
    """`watchbridge status`'s catch-up lines."""
    said = watchbridge("status", "--config", str(path))
    assert said.returncode == 0, said.stderr
    return [line.removeprefix(LABEL) for line in said.stdout.splitlines() if line.startswith(LABEL)]


def page(runtime: Runtime) -> str:
    now = runtime.clock()
    return render(asyncio.run(page_state(runtime, now)), now)


def summary(shown: str) -> str:
    """The page's "Needs you" list ("" when all is well)."""
    start = shown.find('<div class="summary needs">')
    return "" if start < 0 else shown[start : shown.index("</div>", start)]


def api(path: Path, at: float) -> list[dict[str, object]]:
    """`/api/status`'s catch_up, from the service started on `path` at `at`."""
    with AppThread(build_app(build_runtime(load_config(path, {}), clock=FakeClock(at)))) as app:
        found = httpx.get(f"{app.url}/api/status").json()["catch_up"]
    assert isinstance(found, list)
    return found


def name(server: FakeJellyfin) -> str:
    return "Jellyfin" if server.flavour == "jellyfin" else "Emby"


def test_plays_caught_up_are_counted_with_the_last_one_s_time_once_there_are_any(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, path: Path
) -> None:
    task = CatchUp()
    read(runtime, task, server)  # the baseline
    assert status(path) == []  # none caught up: nothing said
    server.play(ALEX[server.flavour], MOVIE, clock.now + 600)  # no webhook told of it
    clock.now += 3 * 3600
    read(runtime, task, server)
    clock.now += 15 * 60
    assert read(runtime, task, server) == 1
    told = (
        f"{name(server)} server {server.server_id}: 1 play the webhooks missed was caught up "
        f"in the last week (the last at {local_time(clock.now)})"
    )
    assert status(path) == [told]
    shown = page(runtime)
    assert f"<p>{told}.</p>" in shown  # not in red: nothing to do, nothing lost
    assert "caught up" not in summary(shown)
    (line,) = api(path, clock.now)
    assert line["message"] == told and line["kind"] == "caught_up" and not line["needs_you"]


def test_a_refused_api_key_is_said_with_what_to_do_until_a_read_works(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, path: Path
) -> None:
    server.api_key = "another-key"
    task = CatchUp()
    read(runtime, task, server)
    refused = clock.now
    clock.now += 15 * 60
    read(runtime, task, server)  # refused again: since the first
    (line,) = status(path)
    assert line.startswith(
        f"{name(server)} server {server.server_id}: the API key was refused (since "
        f"{local_time(refused)}): set services.{server.flavour}.api_key to a key created in "
        f"{name(server)}'s dashboard (API Keys)"
    )
    assert API_KEY not in line and "another-key" not in line
    shown = page(runtime)
    assert f'<p class="bad">{line}' in shown.replace("&#x27;", "'")
    assert f"{name(server)} does not accept watchbridge&#x27;s API key" in summary(shown)
    (said,) = api(path, clock.now)
    assert said["kind"] == "refused" and said["needs_you"] and said["message"] == line

    server.api_key = API_KEY
    clock.now += 15 * 60
    read(runtime, task, server)
    assert status(path) == []
    shown = page(runtime)
    assert "API key" not in shown and "API key" not in summary(shown)


def test_a_server_not_reached_says_since_when_and_is_cleared_when_it_answers(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, path: Path
) -> None:
    task = CatchUp()
    read(runtime, task, server)  # the accounts known, the baseline
    server.fail_next(2, 503)  # both tries of a read
    clock.now += 15 * 60
    down = clock.now
    read(runtime, task, server)
    server.fail_next(2, 503)
    clock.now += 15 * 60
    read(runtime, task, server)
    (line,) = status(path)
    assert line.startswith(f"{name(server)}: could not be reached since {local_time(down)} (")
    assert f"services.{server.flavour}.url" in line and "none is lost" in line
    assert f"{name(server)} could not be read for the plays its webhooks missed" in summary(
        page(runtime)
    )
    clock.now += 15 * 60
    read(runtime, task, server)
    assert status(path) == []


def test_a_listed_account_the_server_does_not_have_is_said_then_hourly_until_it_is_there(
    tmp_path: Path, server: FakeJellyfin, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    path = config_file(tmp_path, server, listed="alx")  # misspelt
    runtime = build_runtime(load_config(path, {}), clock=clock)
    runtime.open()
    told = (
        f"profile me lists {server.flavour} account alx, which the server does not have: its "
        "plays are not caught up; the server's accounts are: alex, sam"
    )
    try:
        task = CatchUp()
        with caplog.at_level(logging.WARNING):
            read(runtime, task, server)
            assert caplog.messages.count(told) == 1
            clock.now += 15 * 60
            read(runtime, task, server)
            assert caplog.messages.count(told) == 1  # once, not every 15 minutes
            clock.now += 3600
            read(runtime, task, server)
            assert caplog.messages.count(told) == 2  # hourly, as the accounts are asked for
        assert status(path) == [told]
        shown = page(runtime).replace("&#x27;", "'")
        assert f'<p class="bad">{told}.</p>' in shown
        assert "account alx, which the server does not have</a>" in summary(shown)

        server.add_user("0123456789abcdef0123456789abcdef", "alx")  # made on the server
        clock.now += 3600
        read(runtime, task, server)
        assert status(path) == []
    finally:
        runtime.close()


def test_a_failure_whose_answer_quotes_the_api_key_shows_it_nowhere(
    runtime: Runtime, server: FakeJellyfin, clock: Clock, path: Path
) -> None:
    # A proxy's redirect carrying the key in its path and query, and a 500 quoting it.
    task = CatchUp()
    read(runtime, task, server)
    where = f"http://127.0.0.1:9/{API_KEY}/web?api_key={API_KEY}&X-Emby-Token={API_KEY}"
    for status_code, headers in ((302, {"location": where}), (500, {})):
        server.fail_next(4, status_code, headers, {"error": API_KEY})
        clock.now += 15 * 60
        read(runtime, task, server)
        server.clear_knobs()
        (line,) = status(path)
        shown = page(runtime) + str(api(path, clock.now)) + line
        assert "could not be reached" in line and API_KEY not in shown, shown


def test_a_long_failure_is_kept_cut_at_a_word_with_the_marker(
    runtime: Runtime,
    server: FakeJellyfin,
    clock: Clock,
    path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two answers a proxy gives while the server restarts: the failure's words run past what
    # is kept. Cut as every other text is (redaction.clipped): before a word, with "...",
    # not mid-word ("services.jellyfi"), which could also keep a secret's first half.
    task = CatchUp()
    read(runtime, task, server)
    server.fail_next(4, 400)
    clock.now += 15 * 60
    with caplog.at_level(logging.INFO):
        read(runtime, task, server)
    (full,) = {
        str(r.error) for r in caplog.records if "answered 400" in str(getattr(r, "error", ""))
    }
    assert len(full) > CAUSE_KEPT, full
    (line,) = status(path)
    found = re.search(r"since \d\d\d\d-\d\d-\d\d \d\d:\d\d \S+ \((.*)\): check that", line)
    assert found is not None, line
    cause = found.group(1)
    assert cause.endswith("...") and len(cause) <= CAUSE_KEPT, cause
    kept = cause.removesuffix("...")
    assert full.startswith(kept) and full[len(kept)] == " ", (cause, full)
