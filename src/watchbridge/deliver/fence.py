"""A delivery batch's fence: just before each write goes out (after its waits: pacing, a 429's,
a token refresh), the worker checks that it still holds the batch's rows, renewing their lease
in the same statement (`Store.fence`). A worker that stopped running past its claim lease (a
`watchbridge sync` on a laptop that slept, a container paused, a SIGSTOP) lost its rows to
another, which may have delivered them: it sends nothing, and hands back what it still holds.

The HTTP policy awaits the check (http.BEFORE_WRITE); the check costs no statement while the
last one (or the claim) is recent: nobody can have taken the rows back within CLAIM_LEASE.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from watchbridge.http import Unavailable
from watchbridge.store import LOCKED_BY_ANOTHER, UNKNOWN_OUTCOME, Store, locked_by_another

# Seconds, by both the wall clock and the monotonic one, that a check (or the claim) holds:
# far inside store.CLAIM_LEASE. A process suspended longer sees one of them jump.
FENCE_FRESH = 60.0
# Why rows a fenced delivery did not send go back (found in the outcome the target made of it).
CLAIMS_LOST = (
    "another watchbridge process took these deliveries back while this one was not running "
    "(suspended past its claim lease): not sent from here"
)
# Why a write whose check could not be made waits (a wait, no attempt spent: nothing went).
UNCHECKED = (
    f"not sent: {LOCKED_BY_ANOTHER}, so this delivery could not check that it still holds"
    " its rows; tried again shortly"
)
# Why a row goes back whose write went out in the fenced batch, answer unknown (see `handed_back`).
MAYBE_SENT = (
    f"{UNKNOWN_OUTCOME}: sent before another watchbridge process took rows of its batch back;"
    " it may have landed"
)


class ClaimsLost(Unavailable):
    """The worker no longer holds some of its batch's rows: the write was not sent. An
    `Unavailable` that wrote nothing, so targets take back their marks of it and stop."""


@dataclass
class Fence:
    """The check of one delivery batch: `rows` claimed by `worker` at `claimed_at` (the clock
    the claim stamped them by)."""

    store: Store
    worker: str
    rows: Sequence[int]
    clock: Callable[[], float]
    service: str
    claimed_at: float
    lost: set[int] = field(default_factory=set)  # rows found held by this worker no more
    _monotonic: float = field(default_factory=time.monotonic)

    async def check(self) -> None:
        """Raise ClaimsLost unless every row is still this worker's (its lease renewed); an
        `Unavailable` that sent nothing (UNCHECKED) when another process holds the database
        past storage.busy_timeout: a wait for the target, as a service down is, not a crash."""
        if self.lost:
            raise ClaimsLost(self.service, CLAIMS_LOST)
        now, monotonic = self.clock(), time.monotonic()
        if 0.0 <= now - self.claimed_at < FENCE_FRESH and monotonic - self._monotonic < FENCE_FRESH:
            return
        try:
            held = await asyncio.to_thread(self.store.fence, self.worker, self.rows, now)
        except sqlite3.OperationalError as exc:
            if not locked_by_another(exc):
                raise
            raise Unavailable(self.service, UNCHECKED) from None
        self.lost = set(self.rows) - held
        if self.lost:
            raise ClaimsLost(self.service, CLAIMS_LOST)
        self.claimed_at, self._monotonic = now, monotonic

    def fenced_off(self, reason: str) -> bool:
        """Whether a row's outcome `reason` is this fence's refusal (the try it stopped was
        not sent; an earlier one may have been, which `reason` then says: `handed_back`)."""
        return bool(self.lost) and CLAIMS_LOST in reason


def handed_back(claimed: str | None, outcome: str) -> str | None:
    """The reason a row a fenced batch did not finish goes back with: as it was claimed
    (`claimed`), unless this batch's `outcome` for it says a try may have landed (a scrobble
    answered 502, its try again fenced off; a write-ahead note made before the send). Then
    it stays marked, and the next send checks the service first: handed back unmarked, it
    would go again unchecked (a second play). Pure."""
    if not outcome.startswith(UNKNOWN_OUTCOME) or (claimed or "").startswith(UNKNOWN_OUTCOME):
        return claimed
    return MAYBE_SENT
