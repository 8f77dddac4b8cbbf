"""The "datasets out of date" alert counts the copy's age from when upstream last confirmed it
current: a 304 (not modified) answer does, without a new download."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes.anime_datasets import FakeDatasets
from tests.fakes.base import FakeServer
from tests.fakes.receiver import FakeClock
from watchbridge.anime_data import AnimeData
from watchbridge.http import HttpClient, RetryPolicy

pytestmark = pytest.mark.anyio

DAY = 86400.0


@pytest.fixture
def fake(start_fake: Callable[[FakeServer], FakeServer]) -> FakeDatasets:
    server = start_fake(FakeDatasets())
    assert isinstance(server, FakeDatasets)
    return server


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient("anime-datasets", "", retry=RetryPolicy(attempts=2, backoff=0.01))
    yield client
    await client.aclose()


@pytest.fixture
def problems() -> list[str]:
    return []


@pytest.fixture
def data(
    tmp_path: Path, fake: FakeDatasets, http: HttpClient, clock: FakeClock, problems: list[str]
) -> AnimeData:
    async def on_problem(message: str) -> None:
        problems.append(message)

    return AnimeData(
        tmp_path / "anime-datasets",
        urls=fake.urls(),
        refresh=DAY,
        clock=clock,
        http=http,
        on_problem=on_problem,
    )


async def test_a_copy_upstream_keeps_confirming_raises_no_alert_for_one_failed_check(
    data: AnimeData, fake: FakeDatasets, clock: FakeClock, problems: list[str]
) -> None:
    await data.index()
    for _ in range(2):  # 304 Not Modified: the copy is upstream's latest
        clock.advance(DAY)
        await data.index()
    clock.advance(DAY)
    fake.fail_next(8, 503)  # every dataset host is down (2 tries each)
    await data.index()
    assert problems == []


async def test_the_out_of_date_alert_says_when_the_copy_was_last_confirmed_current(
    data: AnimeData, fake: FakeDatasets, clock: FakeClock, problems: list[str]
) -> None:
    await data.index()  # 2023-11-14
    clock.advance(DAY)
    await data.index()  # 304 Not Modified on 2023-11-15
    clock.advance(2 * DAY)
    fake.fail_next(8, 503)
    await data.index()
    assert len(problems) == 4
    assert problems[0].endswith(
        "using the cached copy from 2023-11-14, last confirmed current on 2023-11-15"
    )
