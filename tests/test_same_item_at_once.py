"""Two things happening at once to the same item: a delivery landing while a link's run reads,
a webhook's play queued while a run plans. Each interleaving is forced by a fake holding an
answer back while the other step runs; what the fakes hold at the end is the assertion: every
play exactly once, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.serializd import FakeSerializd
from tests.fakes.trakt import FakeTrakt
from tests.harness import until
from tests.linkrig import Rig, open_rig, use_fast_readers
from tests.test_sync_scenarios import (
    breaking_bad_on_serializd,
    breaking_bad_on_trakt,
    diary_plays,
    log,
    trakt_plays,
)

pytestmark = pytest.mark.anyio

DIARY = "/api/user/{username}/diary"


@pytest.fixture
def trakt(start_fake: Callable[[Any], Any]) -> FakeTrakt:
    return breaking_bad_on_trakt(start_fake)


@pytest.fixture
def serializd(start_fake: Callable[[Any], Any]) -> FakeSerializd:
    return breaking_bad_on_serializd(start_fake)


@pytest.fixture
async def rig(
    tmp_path: Path, trakt: FakeTrakt, serializd: FakeSerializd, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Rig]:
    use_fast_readers(monkeypatch)
    rig = open_rig(tmp_path, trakt, serializd, ", first_run: apply, max_removal_share: 0.5")
    yield rig
    await rig.aclose()


async def test_a_copy_delivered_while_a_full_read_reads_the_other_side_is_no_removal(
    rig: Rig, trakt: FakeTrakt, serializd: FakeSerializd
) -> None:
    # The run read Trakt before the link's copy of S1E5 landed there, and the copy's row was
    # delivered before the run looked at what became of it: the play missing from that read
    # is no removal on Trakt, carried back to Serializd (the user's own diary entry deleted).
    for n in range(1, 5):
        log(serializd, 1, n, f"2024-01-0{n}T20:00:00.000Z")
    await rig.sync_and_deliver()
    entry = log(serializd, 1, 5, "2024-01-05T20:00:00.000Z")
    assert (await rig.sync()).queued == 1  # S1E5 to Trakt, not delivered yet
    asked = serializd.count("GET", DIARY)
    serializd.delay_next(1, 2.0, route=f"GET {DIARY}")  # Trakt is read first, then Serializd
    run = asyncio.create_task(rig.sync(full=True))
    await until(lambda: serializd.count("GET", DIARY) > asked)
    await rig.deliver()  # the copy lands on Trakt while the run waits for the diary
    assert not run.done()

    assert (await run).queued == 0
    await rig.deliver()
    await rig.sync_and_deliver(full=True)

    expected = [(1, n, f"2024-01-0{n}") for n in range(1, 6)]
    assert trakt_plays(trakt) == expected
    assert diary_plays(serializd) == expected
    assert entry in serializd.diary()  # the user's entry, not a copy of ours in its place
