"""tests.harness.watchbridge runs a command in this process: it must leave the process as a
command in a process of its own would (nothing), or the tests after it test something else.
And a service a test starts is the one that answers it, also while other test runs share the
machine and the same ports."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer, Request, route
from tests.harness import ServiceProcess, free_port, watchbridge, write_config
from watchbridge import anime_data


def test_a_command_leaves_the_logging_of_the_test_as_it_found_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # serve sets up logging at its config's level (info) on the stderr it was given, then
    # stops at the storage.path it cannot write: without the harness putting it back, the
    # root logger kept that handler (pytest's own gone) and level for every later test.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    (tmp_path / "blocker").write_text("x")
    path = write_config(tmp_path)
    text = path.read_text().replace(
        str(tmp_path / "watchbridge.db"), str(tmp_path / "blocker" / "db.sqlite")
    )
    path.write_text(text)
    result = watchbridge("serve", "--config", str(path))
    assert result.returncode != 0 and "storage.path:" in result.stderr, result.stderr
    assert (root.handlers, root.level) == (handlers, level)
    assert logging.getLogger("httpx").level == httpx_level
    logging.getLogger("watchbridge.tests").warning("logged after the command")
    assert "logged after the command" in caplog.text


def test_a_command_keeps_nothing_in_memory_for_the_next_one(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # A new process builds the anime index from the files again: one kept from the command
    # before would hide a refresh that never reached the disk.
    fake = start_fake(FakeDatasets())
    assert isinstance(fake, FakeDatasets)
    urls = "".join(f"      {name}: {url}\n" for name, url in fake.urls().items())
    path = write_config(tmp_path, f"services:\n  anilist:\n    mapping_urls:\n{urls}")
    before = dict(anime_data._BUILT)  # what tests run earlier in this worker built
    result = watchbridge("anime", "explain", "119661", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "AniList 119661" in result.stdout
    assert before == anime_data._BUILT


def test_a_picked_port_is_not_picked_by_another_test_run_but_our_server_binds_it() -> None:
    # Another checkout's suite picks from the same band: it must not take the port between our
    # pick and our server's bind, nor while a test restarts its service on it.
    port = free_port()
    with socket.socket() as theirs, pytest.raises(OSError):
        theirs.bind(("127.0.0.1", port))
    with socket.socket() as ours:  # as the service and uvicorn bind
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ours.bind(("127.0.0.1", port))
        ours.listen()


class AnotherWatchbridge(FakeServer):
    """A server another test run started on the port: ready, and not ours."""

    @route("GET", "/readyz")
    def readyz(self, req: Request) -> dict[str, str]:
        return {"status": "ready"}


def test_a_service_whose_port_another_server_holds_fails_to_start_rather_than_pass_for_ready(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    other = start_fake(AnotherWatchbridge())
    port = int(other.url.rsplit(":", 1)[1])
    service = ServiceProcess(write_config(tmp_path, port=port), port)
    with pytest.raises(AssertionError, match=f"server.port {port}: address already in use"):
        service.start()
