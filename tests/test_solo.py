"""A delivery suspected of taking the process down goes alone among all its target loops
(deliver.solo): it waits for the batches under way, new ones wait for it, each wait bounded."""

from __future__ import annotations

import asyncio

import pytest

from watchbridge.deliver.solo import Solo

pytestmark = pytest.mark.anyio


async def test_a_row_alone_waits_for_the_batches_under_way_and_new_ones_wait_for_it() -> None:
    solo, said = Solo(wait=30.0), []
    trakt_sends, lone_sends = asyncio.Event(), asyncio.Event()

    async def trakt_batch() -> None:
        async with solo.batch("trakt", None):
            said.append("trakt batch")
            await trakt_sends.wait()
        said.append("trakt batch done")

    async def serializd_alone() -> None:
        async with solo.alone("serializd", None) as waited:
            said.append(f"serializd alone (waited: {waited})")
            await lone_sends.wait()
        said.append("serializd alone done")

    async def anilist_batch() -> None:
        async with solo.batch("anilist", None) as waited:
            said.append(f"anilist batch (waited: {waited})")

    tasks = [asyncio.create_task(trakt_batch())]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(serializd_alone()))
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(anilist_batch()))
    await asyncio.sleep(0.01)
    assert said == ["trakt batch"]  # the lone row waits, and AniList behind it
    trakt_sends.set()
    await asyncio.sleep(0.01)
    assert said[1:] == ["trakt batch done", "serializd alone (waited: True)"]
    lone_sends.set()
    await asyncio.gather(*tasks)
    assert said[3:] == ["serializd alone done", "anilist batch (waited: True)"]


async def test_a_batch_goes_on_beside_a_row_alone_that_takes_too_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    solo = Solo(wait=0.05)
    async with solo.alone("trakt", None), solo.batch("serializd", None) as waited:
        assert waited
    assert "a crash meanwhile spends an attempt of none of them" in caplog.text


async def test_a_stop_ends_a_wait_at_once() -> None:
    solo, stop = Solo(wait=30.0), asyncio.Event()
    async with solo.alone("trakt", None):
        stop.set()
        async with asyncio.timeout(1.0), solo.batch("serializd", stop) as waited:
            assert waited


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_others_wait_for_a_row_alone_once_not_again_at_each_pass() -> None:
    """A lone delivery that takes longer than the wait (a slow service, within its HTTP
    timeouts): the other targets' batches wait for it once, up to the wait; their next
    passes go on beside it at once, instead of each waiting the 2 minutes again. A later
    row alone holds them back again."""
    ticks = Ticks()
    solo = Solo(wait=120.0, clock=ticks)
    anilist_sends, lone_sends = asyncio.Event(), asyncio.Event()
    said: list[str] = []

    async def anilist_batch() -> None:
        async with solo.batch("anilist", None):
            await anilist_sends.wait()

    async def trakt_alone() -> None:
        async with solo.alone("trakt", None):
            said.append("trakt alone")
            await lone_sends.wait()

    async def serializd_batch() -> bool:
        async with solo.batch("serializd", None) as waited:
            said.append(f"serializd batch (waited: {waited})")
            return waited

    anilist = asyncio.create_task(anilist_batch())
    await asyncio.sleep(0.01)
    lone = asyncio.create_task(trakt_alone())  # waits for AniList's batch under way
    await asyncio.sleep(0.01)
    first = asyncio.create_task(serializd_batch())  # waits for the row alone
    await asyncio.sleep(0.01)
    assert said == []
    ticks.now += 121.0  # past the wait, then AniList's batch ends: the lone row goes
    anilist_sends.set()
    async with asyncio.timeout(1.0):
        await anilist
        assert await first  # it waited, up to the wait: it goes beside the lone row now
    assert said == ["trakt alone", "serializd batch (waited: True)"]

    ticks.now += 5.0  # Serializd's next passes, the lone row still under way
    async with asyncio.timeout(1.0):
        assert not await serializd_batch()
        assert not await serializd_batch()

    lone_sends.set()
    await lone
    ticks.now += 60.0
    later = asyncio.Event()

    async def trakt_alone_again() -> None:
        async with solo.alone("trakt", None):
            await later.wait()

    again = asyncio.create_task(trakt_alone_again())
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(serializd_batch())
    await asyncio.sleep(0.01)
    assert not waiting.done()  # a new row alone: held back again
    later.set()
    async with asyncio.timeout(1.0):
        await again
        assert await waiting
