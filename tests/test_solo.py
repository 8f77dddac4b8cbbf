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
