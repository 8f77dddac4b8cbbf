"""Housekeeping that keeps the database small over months: a background task, once an hour."""

from __future__ import annotations

import asyncio
import logging

from watchbridge.app import Runtime

log = logging.getLogger(__name__)

EVERY = 3600.0
KEEP_DONE = 7 * 86400.0  # delivered rows and their events stay a week, for diagnosis
KEEP_SESSIONS = 86400.0  # a playback session idle for a day is over


class Maintenance:
    name = "maintenance"

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pruned = await asyncio.to_thread(
                runtime.store.prune, runtime.clock(), KEEP_DONE, KEEP_SESSIONS
            )
            if any(pruned.values()):
                log.info("pruned old rows", extra=pruned)
            try:
                await asyncio.wait_for(stop.wait(), timeout=EVERY)
            except TimeoutError:
                continue
