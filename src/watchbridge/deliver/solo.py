"""A delivery suspected of taking the process down goes alone in the whole process.

A row found in flight at store.CRASHES_ALONE kills is sent alone, and only a kill while it goes
alone costs it an attempt: fair only if nothing else of the process was being sent then, to
any service. The service delivers to each service in a loop of its own, side by side; this
gate makes such a row wait for the batches under way, and new batches wait for it. Each wait
is bounded (SOLO_WAIT): past it, they go on together, and a kill meanwhile costs none of them
an attempt (the store charges a row only when it is the one its process holds in flight). It
is rare: only after two kills during one delivery, and only for the moments it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

SOLO_WAIT = 120.0  # seconds a delivery waits for another one to go alone or for it


class Solo:
    """The batches one process sends, and the delivery that goes alone among them."""

    def __init__(self, wait: float = SOLO_WAIT) -> None:
        self.wait = wait
        self._batches: Counter[str] = Counter()  # target -> its batches under way
        self._alone: set[str] = set()  # targets whose row goes alone, or waits to
        self._change = asyncio.Event()  # set, and replaced, at each change

    @contextlib.asynccontextmanager
    async def batch(self, target: str, stop: asyncio.Event | None) -> AsyncIterator[bool]:
        """A batch of `target`'s under way: begun once no delivery goes alone (or waits to).
        Whether it waited."""
        waited = bool(self._alone)
        if waited:
            log.info(
                "deliveries wait: one that may be what took watchbridge down is being sent alone",
                extra={"target": target, "alone": sorted(self._alone)},
            )
            await self._until(lambda: not self._alone, stop, target)
        self._batches[target] += 1
        try:
            yield waited
        finally:
            self._batches[target] -= 1
            self._changed()

    @contextlib.asynccontextmanager
    async def alone(self, target: str, stop: asyncio.Event | None) -> AsyncIterator[bool]:
        """A delivery of `target`'s that goes alone: begun once the batches under way (and
        another one going alone) have ended; no batch begins meanwhile. Whether it waited."""
        waited = bool(self._alone) or self._under_way()
        if self._alone:
            await self._until(lambda: not self._alone, stop, target)
        self._alone.add(target)
        try:
            if self._under_way():
                waited = True
                log.info(
                    "a delivery that may be what took watchbridge down waits for the others "
                    "under way, to be sent alone",
                    extra={"target": target, "under_way": sorted(+self._batches)},
                )
                await self._until(lambda: not self._under_way(), stop, target)
            yield waited
        finally:
            self._alone.discard(target)
            self._changed()

    def _under_way(self) -> bool:
        return any(self._batches.values())

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def _until(
        self, ready: Callable[[], bool], stop: asyncio.Event | None, target: str
    ) -> None:
        """Wait until `ready()`, a stop, or `wait` seconds have passed (said in the log)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not ready():
            if stop is not None and stop.is_set():
                return
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "deliveries go on beside one that may be what took watchbridge down, after"
                    " waiting for it: a crash meanwhile spends an attempt of none of them",
                    extra={"target": target, "seconds": round(self.wait)},
                )
                return
            waiters = [asyncio.ensure_future(self._change.wait())]
            if stop is not None:
                waiters.append(asyncio.ensure_future(stop.wait()))
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
