"""Writes a stop must not lose, done off the event loop and waited for to their end: another
process (a `watchbridge sync` from cron) may hold the database for seconds, and the loop (the
stop itself, every webhook) must not wait for it meanwhile."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def in_thread(work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """`work(*args)` in the default executor, as `asyncio.to_thread` runs it, but as a plain
    future, not a task: a loop shutting down cancels every task, and would cancel the waiting
    for a write that goes on all the same."""
    call = functools.partial(contextvars.copy_context().run, work, *args)
    return asyncio.get_running_loop().run_in_executor(None, call)


async def to_the_end(writing: asyncio.Future[T]) -> T:
    """What `writing` (a record a stop must not lose) returns, waited for to its end even when
    the caller is cancelled meanwhile: a stop cancels a run, and the shutdown may cancel it
    once more (server.shutdown_timeout ran out, the loop closing) while its record waits for
    the database; the store closes as soon as the run is over. Such a cancel is raised after."""
    cancelled = False
    while not writing.done():
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            cancelled = True
    result = writing.result()
    if cancelled:
        raise asyncio.CancelledError
    return result
