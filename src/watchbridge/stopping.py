"""Work a stop must not wait for to its end: a link run, an alert on its way, a delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def unless_stopped(
    work: Coroutine[Any, Any, T], stop: asyncio.Event, grace: float = 0.0
) -> T | None:
    """What `work` returns (or raises); None once `stop` is set first (and `grace` seconds
    more have not seen it end), `work` then cancelled and waited for. A link run waits for
    Serializd's pacing or a 429's Retry-After for seconds at a time, and a first run goes on
    for hours; a delivery may wait on a slow service or a 429: left running, each would hold
    a stop (`docker stop`, an update) until server.shutdown_timeout ran out, and then be
    cancelled all the same. Cancelled, a run records itself as interrupted (`run_link`)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and grace > 0:
            await asyncio.wait({task}, timeout=grace)
    except asyncio.CancelledError:  # cancelled ourselves: the run goes with us
        task.cancel()
        await asyncio.wait({task})
        raise
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    return None if task.cancelled() else task.result()  # or it ended before the cancel


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for each to end: a page's work under way when the service
    stops (a sign-in waiting for its approval, a review's read)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
