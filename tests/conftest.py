from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer, running
from tests.fakes.receiver import AlertReceiver, FakeClock
from tests.harness import ServiceProcess, free_port, write_config
from watchbridge.config import Config, load_config
from watchbridge.store import Store


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A minimal valid config with a fresh DB and a free port."""
    return write_config(tmp_path)


@pytest.fixture
def config(config_file: Path) -> Config:
    return load_config(config_file, {})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh database per test."""
    db = Store.open(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ServiceProcess]:
    """The real service as a child process on a free port, ready to take requests."""
    port = free_port()
    proc = ServiceProcess(write_config(tmp_path, port=port), port).start()
    yield proc
    proc.kill()


@pytest.fixture
def start_fake() -> Iterator[Callable[[FakeServer], FakeServer]]:
    """Start any fake: `trakt = start_fake(FakeTrakt())`; stopped and checked at teardown."""
    with ExitStack() as stack:
        yield lambda fake: stack.enter_context(running(fake))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver(start_fake: Callable[[FakeServer], FakeServer]) -> AlertReceiver:
    """A local endpoint that records the alerts Apprise sends to `receiver.apprise_url`."""
    fake = start_fake(AlertReceiver())
    assert isinstance(fake, AlertReceiver)
    return fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
