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

from watchbridge.http import Unavailable, Withheld
from watchbridge.store import LOCKED_BY_ANOTHER, UNKNOWN_OUTCOME, Store, locked_by_another

# Seconds, by both the wall clock and the monotonic one, that a check (or the claim) holds:
# far inside store.CLAIM_LEASE. A process suspended longer sees one of them jump.
FENCE_FRESH = 60.0
# Why rows a fenced delivery did not send go back (found in the outcome the target made of it).
CLAIMS_LOST = (
    "another watchbridge process took these deliveries back while this one was not running "
    "(suspended past its claim lease): not sent from here"
)
# Why a profile's rows wait when a store write of their delivery met another process's lock:
# the fence's check, a target's note just before a send, after a refusal, or of what a send
# did. A wait, not an attempt spent; a row whose send may have landed keeps that mark.
STORE_LOCKED = (
    f"{LOCKED_BY_ANOTHER}, so this delivery could not write down what it was doing or check"
    " that it still holds its rows: nothing more was sent, and it is tried again shortly"
    " (if it keeps happening, close that process or let it finish)"
)
# Why rows wait whose write had not gone when the service was asked to stop (SIGTERM): a
# write begun in the stop's grace and cut short there would leave them marked as maybe sent.
STOPPING = "not sent: watchbridge was stopping; it goes at the next start"
# Why a row goes back whose write went out in the fenced batch, answer unknown (see `handed_back`).
MAYBE_SENT = (
    f"{UNKNOWN_OUTCOME}: sent before another watchbridge process took rows of its batch back;"
    " it may have landed"
)
# The same, for a write that went out in a batch the stop then kept from writing more.
SENT_BEFORE_THE_STOP = f"{UNKNOWN_OUTCOME}: sent before watchbridge stopped; it may have landed"


def as_a_wait(exc: Exception, service: str) -> Exception:
    """`exc`, or for a store write that met another process's lock past storage.busy_timeout
    an `Unavailable` that sent nothing (STORE_LOCKED): every target holds on it as on a
    service down (delivery.retry_after, no attempt spent), not as its own crash."""
    if locked_by_another(exc):
        return Unavailable(service, STORE_LOCKED)
    return exc


class ClaimsLost(Withheld):
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
    stop: asyncio.Event | None = None  # the service's: once set, no write begins
    lost: set[int] = field(default_factory=set)  # rows found held by this worker no more
    stopped: bool = False  # a write was refused for the stop (STOPPING)
    _monotonic: float = field(default_factory=time.monotonic)

    async def check(self) -> None:
        """Raise ClaimsLost unless every row is still this worker's (its lease renewed); a
        `Withheld` (STORE_LOCKED: the try sent nothing) when another process holds the
        database past storage.busy_timeout: a wait for the target, as a service down is, not
        a crash."""
        if self.lost:
            raise ClaimsLost(self.service, CLAIMS_LOST)
        if self.stop is not None and self.stop.is_set():
            self.stopped = True
            raise Withheld(self.service, STOPPING)
        now, monotonic = self.clock(), time.monotonic()
        if 0.0 <= now - self.claimed_at < FENCE_FRESH and monotonic - self._monotonic < FENCE_FRESH:
            return
        try:
            held = await asyncio.to_thread(self.store.fence, self.worker, self.rows, now)
        except sqlite3.OperationalError as exc:
            # Made the wait here, not left to the worker's catch (per_profile): this runs
            # inside the HTTP client's write, which adds to an Unavailable that an earlier
            # try may have landed, and targets take an Unavailable that says nothing went as
            # the cue to take back their note of the send (`_sent_nothing`). The bare error
            # passes both: the row would stay marked for a send that never went (a history
            # read before the next, a live stop turned into a history add). Withheld, as the
            # stop's refusal: Serializd's diary add takes back its note only for a try known
            # kept from going (`refused_unread`), else its next try reads the whole diary.
            if locked_by_another(exc):
                raise Withheld(self.service, STORE_LOCKED) from None
            raise
        self.lost = set(self.rows) - held
        if self.lost:
            raise ClaimsLost(self.service, CLAIMS_LOST)
        self.claimed_at, self._monotonic = now, monotonic

    @property
    def refused(self) -> bool:
        """Whether it kept a write from going (claims lost, or the stop)."""
        return bool(self.lost) or self.stopped

    def fenced_off(self, reason: str) -> bool:
        """Whether a row's outcome `reason` is this fence's refusal (the try it stopped was
        not sent; an earlier one may have been, which `reason` then says: `handed_back`)."""
        return (bool(self.lost) and CLAIMS_LOST in reason) or (self.stopped and STOPPING in reason)

    @property
    def maybe_sent(self) -> str:
        """The mark a row goes back with whose write of this batch may have landed."""
        return MAYBE_SENT if self.lost else SENT_BEFORE_THE_STOP


def handed_back(claimed: str | None, outcome: str, maybe_sent: str = MAYBE_SENT) -> str | None:
    """The reason a row a fenced batch did not finish goes back with: as it was claimed
    (`claimed`), unless this batch's `outcome` for it says a try may have landed (a scrobble
    answered 502, its try again fenced off; a write-ahead note made before the send). Then
    it stays marked, and the next send checks the service first: handed back unmarked, it
    would go again unchecked (a second play). Pure."""
    if not outcome.startswith(UNKNOWN_OUTCOME) or (claimed or "").startswith(UNKNOWN_OUTCOME):
        return claimed
    return maybe_sent
