"""The `storage` alert: the database cannot be written (its disk full, read-only, locked by
another program), said plainly with what to do, and resolved once a write works again.

Woken by whoever meets the fault first (a webhook refused 503, a background task failing), and
every CHECK_EVERY, it tries a real write (`Store.check_writable`): a failure nothing retries
(an idle service, no webhook coming) still ends in a "Resolved" notice once space is freed.
The alert goes out even though the database cannot record it (the notifier keeps it in memory
meanwhile). Webhooks refused for the fault are told by this alert alone once it is out (one
cause, one alert; webhooks.py): its text says which source's, how many and what they cost, and
so does its "Resolved" notice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from watchbridge.alerts import FAILED, SUPPRESSED
from watchbridge.errors import StoreError
from watchbridge.refused import STORE_ERROR, RefusedMeanwhile
from watchbridge.storagefault import STORAGE_ALERT, StorageFault, fault_of, webhooks_meanwhile

if TYPE_CHECKING:
    from watchbridge.app import Runtime

log = logging.getLogger(__name__)

STORAGE = STORAGE_ALERT
KEY = "database"
CHECK_EVERY = 30.0  # seconds between tries while the database failed or its alert is open
RESOLVED = "the database takes writes again"


class StorageWatch:
    name = "storage-watch"

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        woken = asyncio.Event()
        runtime.on_storage_trouble.append(woken.set)
        try:
            while not stop.is_set():
                await checked(runtime)
                await _woken(stop, woken, CHECK_EVERY)
                woken.clear()
        finally:
            runtime.on_storage_trouble.remove(woken.set)


async def checked(runtime: Runtime) -> StorageFault | None:
    """`check`, one at a time: whoever asks while one runs (the watch, a burst of webhooks
    refused) waits for that one, rather than each waiting out the lock with a write of its own."""
    if runtime.storage_check is None or runtime.storage_check.done():
        runtime.storage_check = asyncio.ensure_future(check(runtime))
    return await runtime.storage_check


def told_by_storage(runtime: Runtime) -> bool:
    """True while the `storage` alert tells the human of the fault: found, and its last alert
    reached them (a send that failed, or alerts.kinds without `storage`, tells nothing)."""
    return runtime.storage_fault is not None and runtime.notifier.alerted(STORAGE, KEY)


async def check(runtime: Runtime) -> StorageFault | None:
    """Try a write if the last one failed or the alert is open: alert (the notifier throttles
    and reminds) while it fails, resolve once it works; the fault found, if any."""
    store, refused = runtime.store, runtime.storage_refused
    if store.write_error is None and not _open(runtime):
        refused.clear()  # no storage alert went out for them: each had its own
        return None
    try:
        await asyncio.to_thread(store.check_writable, runtime.clock())
    except StoreError as exc:
        fault = fault_of(exc.__cause__ or exc, str(store.path))
        if fault is None:  # not the disk's: the part that met it tells of it as a bug
            return None
        if fault != runtime.storage_fault:
            log.warning(fault.title, extra={"problem": fault.problem, "fix": fault.fix})
        runtime.storage_fault = fault
        await runtime.notifier.notify(STORAGE, fault.title, told(runtime, fault), KEY)
        return fault
    if runtime.storage_fault is not None:
        log.info(RESOLVED)
    runtime.storage_fault = None
    if runtime.notifier.raised(STORAGE, KEY):
        result = await runtime.notifier.resolve(STORAGE, resolved(refused), KEY)
        if result in (FAILED, SUPPRESSED):
            return None  # the notice, with the webhooks refused, goes out at a later check
    refused.clear()
    return None


def told(runtime: Runtime, fault: StorageFault) -> str:
    """The storage alert's text, as the status page shows it too: what webhooks met as last
    seen (a full disk may still take them), and those refused meanwhile."""
    taken = max((webhook.at for webhook in runtime.last_webhooks.recent()), default=None)
    refused = max(
        (r.last_at for r in runtime.refused.recent() if r.outcome == STORE_ERROR), default=None
    )
    webhooks = webhooks_meanwhile(taken, refused)
    return f"{fault.message_with(webhooks)} {runtime.storage_refused.told()}".strip()


def resolved(refused: RefusedMeanwhile) -> str:
    """The "Resolved" notice's text: the webhooks refused meanwhile are not recorded."""
    return f"{RESOLVED}. {refused.told_over()}".strip() if refused.spells else RESOLVED


def _open(runtime: Runtime) -> bool:
    return runtime.storage_fault is not None or runtime.notifier.raised(STORAGE, KEY)


async def _woken(stop: asyncio.Event, woken: asyncio.Event, timeout: float) -> None:
    """Wait until the stop, a wake-up, or `timeout` seconds."""
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
