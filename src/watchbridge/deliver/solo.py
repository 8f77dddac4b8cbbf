"""A delivery suspected of taking the process down goes alone in the whole process.

A row found in flight at store.CRASHES_ALONE kills is sent alone, and only a kill while it goes
alone costs it an attempt: fair only if nothing else of the process was being sent then, to
any service. The service delivers to each service in a loop of its own, side by side; this
gate makes such a row wait for the batches under way, and new batches wait for it. Each wait
is bounded (SOLO_WAIT): past it, they go on together, and a kill meanwhile costs none of them
an attempt (the store charges a row only when it is the one its process holds in flight).
A row alone holds the batches back SOLO_WAIT at most in all, counted from the first it held
back: once past, the others' next passes go on beside it at once, not waiting again each
(a slow service may keep it under way for minutes, within its HTTP timeouts). It is rare:
only after two kills during one delivery, and only for the moments it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

SOLO_WAIT = 120.0  # seconds a delivery waits for another one to go alone or for it


class Solo:
    """The batches one process sends, and the delivery that goes alone among them."""

    def __init__(
        self, wait: float = SOLO_WAIT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.wait = wait
        self.clock = clock
        self._batches: Counter[str] = Counter()  # target -> its batches under way
        # Targets whose row goes alone, or waits to -> until when batches wait for it (None:
        # none has yet).
        self._alone: dict[str, float | None] = {}
        self._change = asyncio.Event()  # set, and replaced, at each change

    @contextlib.asynccontextmanager
    async def batch(self, target: str, stop: asyncio.Event | None) -> AsyncIterator[bool]:
        """A batch of `target`'s under way: begun once no delivery goes alone (or waits to).
        Whether it waited: not once the rows alone held the batches back `wait` seconds."""
        waited = self._holds_until() > self.clock()
        if waited:
            log.info(
                "deliveries wait: one that may be what took watchbridge down is being sent alone",
                extra={"target": target, "alone": sorted(self._alone)},
            )
            await self._until(lambda: not self._alone, stop, target, self._holds_until)
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
            await self._until(lambda: not self._alone, stop, target, self._deadline())
        self._alone[target] = None
        try:
            if self._under_way():
                waited = True
                log.info(
                    "a delivery that may be what took watchbridge down waits for the others "
                    "under way, to be sent alone",
                    extra={"target": target, "under_way": sorted(+self._batches)},
                )
                await self._until(lambda: not self._under_way(), stop, target, self._deadline())
            yield waited
        finally:
            del self._alone[target]
            self._changed()

    def _under_way(self) -> bool:
        return any(self._batches.values())

    def _deadline(self) -> Callable[[], float]:
        """A wait's own deadline, `wait` seconds from now."""
        until = self.clock() + self.wait
        return lambda: until

    def _holds_until(self) -> float:
        """Until when batches wait for the rows going alone (or waiting to): each holds them
        back `wait` seconds from the first batch it held back, however many passes come
        meanwhile; -inf while none does."""
        now = self.clock()
        for target, until in self._alone.items():
            if until is None:
                self._alone[target] = now + self.wait
        held = [until for until in self._alone.values() if until is not None]
        return max(held, default=-math.inf)

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def _until(
        self,
        ready: Callable[[], bool],
        stop: asyncio.Event | None,
        target: str,
        deadline: Callable[[], float],
    ) -> None:
        """Wait until `ready()`, a stop, or `deadline()` has passed (said in the log)."""
        while not ready():
            if stop is not None and stop.is_set():
                return
            left = deadline() - self.clock()
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
