"""Two watchbridge services on one database that the lock file cannot keep apart (another
machine over a share carrying no locks, or a release from before the lock): each finds the
other's note of being alive in place of its own, logs it and alerts, until it is alone again."""

from __future__ import annotations

import logging
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.receiver import AlertReceiver, FakeClock
from watchbridge.app import Runtime
from watchbridge.beside import TITLE, Mine
from watchbridge.config import parse_config
from watchbridge.maintenance import tell_beside
from watchbridge.wiring import build_runtime

pytestmark = pytest.mark.anyio

ALERT = TITLE
OVER = f"Resolved: {TITLE}"


@pytest.fixture
def services(
    tmp_path: Path, receiver: AlertReceiver, clock: FakeClock
) -> Iterator[tuple[Runtime, Runtime]]:
    """Two services' runtimes on one database: `here` (this machine's, pid 41) and `there`
    (a machine of its own, pid 1 in its container)."""
    config = parse_config(
        f'storage: {{path: {tmp_path / "wb.db"}}}\nalerts: {{urls: ["{receiver.apprise_url}"]}}\n',
        Path("watchbridge.yaml"),
        {},
    )
    opened = []
    for mine in (
        Mine("aaaa", 41, socket.gethostname(), clock()),
        Mine("bbbb", 1, "nas-container", clock() - 86400.0),
    ):
        runtime = build_runtime(config, clock=clock)
        runtime.mine = mine
        runtime.open(service=True)
        opened.append(runtime)
    yield opened[0], opened[1]
    for runtime in opened:
        runtime.close()


async def test_a_service_told_of_another_writing_to_its_database_and_when_it_is_gone(
    services: tuple[Runtime, Runtime],
    receiver: AlertReceiver,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    here, there = services
    database = here.config.storage.path
    assert here.noted_alive() is None  # its first note: any earlier one is expected
    clock.advance(120)
    assert there.noted_alive() is None
    clock.advance(180)  # here's next note (every 5 minutes) finds there's in place of its own
    other = here.noted_alive()
    assert other is not None and (other.pid, other.host) == (1, "nas-container")
    with caplog.at_level(logging.INFO, logger="watchbridge.maintenance"):
        await tell_beside(here, None, other)
        clock.advance(120)
        assert there.noted_alive() is not None  # and there's finds here's
    assert receiver.titles() == [ALERT]
    said = str(receiver.messages[0]["message"])
    assert said.startswith(f"Stop one of the two watchbridge services writing to {database}")
    assert "The other one (pid 1 on host nas-container, started 2023-11-13 22:13:20 UTC)" in said
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert (
        caplog.records[0]
        .getMessage()
        .startswith(  # one line, as the README quotes it
            f"storage.path {database}: another watchbridge service is writing to this database "
            "(pid 1 on host nas-container, started 2023-11-13 22:13:20 UTC). Its lock file could "
            "not keep it out"
        )
    )
    # `there` is stopped: its stop's note is the last; here's next one still finds it, the
    # one after finds its own again.
    there.note_alive()
    for _ in range(2):
        clock.advance(300)
        told = here.beside
        await tell_beside(here, told, here.noted_alive())
    assert receiver.titles() == [ALERT, OVER]
    assert here.beside is None


async def test_an_older_release_beside_it_is_told_though_its_note_names_no_one(
    services: tuple[Runtime, Runtime], receiver: AlertReceiver, clock: FakeClock
) -> None:
    here, _ = services
    here.noted_alive()
    clock.advance(200)
    # What a build from before the lock (after 0.1.0, which notes nothing) wrote: the time alone.
    with sqlite3.connect(here.config.storage.path) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO settings (name, value, updated_at) VALUES ('alive_at', ?, ?)",
            (repr(clock()), clock()),
        )
    clock.advance(100)
    await tell_beside(here, None, here.noted_alive())
    assert receiver.titles() == [ALERT]
    assert "The other one (an older release, which does not say who it is) got past" in str(
        receiver.messages[0]["message"]
    )


async def test_a_restart_or_a_clock_set_back_tells_nothing(
    services: tuple[Runtime, Runtime], receiver: AlertReceiver, clock: FakeClock
) -> None:
    here, there = services
    there.noted_alive()
    there.note_alive()  # its clean stop's note; then `here` starts on the database
    for step in (300, 300, -3600, 300):  # the clock set back an hour between two notes
        here.noted_alive()
        await tell_beside(here, here.beside, here.beside)
        clock.advance(step)
    assert here.beside is None
    assert receiver.messages == []
