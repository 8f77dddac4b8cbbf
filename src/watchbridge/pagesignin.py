"""Sign-ins started from the status page (its "Sign in to Trakt" button): the code to enter
shows on the page and in the log, for those who have no terminal to run `watchbridge auth
trakt` in (a Home Assistant app's users look at its sidebar page and its log tab only).

One sign-in per profile at a time, run by the service as the command would run it; what it
came to stays on the page a while. Nothing here holds a token: only the code the user types
on Trakt's site, which is of no use once it is approved or expired.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from watchbridge.stopping import cancel_all

log = logging.getLogger(__name__)

# A finished sign-in's outcome stays on the page this long (the user reloads it to see).
OUTCOME_SHOWN_FOR = 900.0

# What a sign-in shows: the code, where to enter it, and for how many seconds it is valid.
Show = Callable[[str, str, float], None]


@dataclass
class PageSignIn:
    """One sign-in started from the page, as the page shows it."""

    profile: str
    service: str
    started_at: float
    code: str | None = None  # the code to enter, once Trakt gave one
    url: str | None = None  # where to enter it
    expires_at: float | None = None
    outcome: str | None = None  # once over: what it came to, in words
    failed: bool = False
    finished_at: float | None = None
    # Until when the service asked (429, Retry-After) that no sign-in be started again.
    retry_at: float | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None


class PageSignIns:
    """The sign-ins started from the page, by profile and service."""

    def __init__(self) -> None:
        self._shown: dict[tuple[str, str], PageSignIn] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        # By service: Trakt limits the app's code requests by app and address, not by profile.
        self._paused_until: dict[str, float] = {}

    def start(
        self,
        service: str,
        profile: str,
        flow: Callable[[Show], Awaitable[list[str]]],
        clock: Callable[[], float],
        redact: Callable[[str], str],
    ) -> PageSignIn:
        """Start `flow` (it shows the code, then returns what to tell of the sign-in, or
        raises its error) unless that profile's sign-in to `service` runs already, or the
        service asked for a pause that lasts yet (presses then ask it nothing). What it came
        to is shown through `redact` (the runtime's): a refusal may quote the app's secret."""
        key = (service, profile)
        running = self._shown.get(key)
        if running is not None and running.running:
            return running
        now, paused_until = clock(), self._paused_until.get(service, 0.0)
        if now < paused_until:
            if running is not None and running.retry_at == paused_until:
                return running
            paused = PageSignIn(profile, service, now, failed=True, finished_at=now)
            paused.outcome = f"not signed in: {service} asked for a pause in sign-ins"
            paused.retry_at = paused_until
            self._shown[key] = paused
            return paused
        one = PageSignIn(profile, service, now)

        def show(code: str, url: str, valid_for: float) -> None:
            one.code, one.url, one.expires_at = code, url, clock() + valid_for
            log.info(
                f"{service} sign-in of profile {profile} (from the status page): open {url} "
                f"and enter the code {code} (valid for {int(valid_for // 60)} minutes)",
                extra={"profile": profile},
            )

        async def run() -> None:
            try:
                notes = await flow(show)
            except asyncio.CancelledError:
                one.outcome, one.failed = "the service stopped before it was approved", True
                raise
            except Exception as exc:  # an error of the flow: shown, never raised further
                message = redact(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
                one.outcome, one.failed = f"not signed in: {message}", True
                log.warning(f"{service} sign-in of profile {profile} failed: {message}")
                if retry_after := getattr(exc, "retry_after", None):
                    one.retry_at = clock() + retry_after
                    paused = max(self._paused_until.get(service, 0.0), one.retry_at)
                    self._paused_until[service] = paused
            else:
                one.outcome = redact(" ".join([f"profile {profile} is signed in.", *notes]))
                log.info(f"profile {profile} is signed in to {service} (from the status page)")
            finally:
                one.finished_at = clock()
                self._tasks.pop(key, None)

        self._shown[key] = one
        self._tasks[key] = asyncio.create_task(run(), name=f"sign-in {service} {profile}")
        return one

    def recent(self, now: float) -> list[PageSignIn]:
        """Those running, and those that ended in the last OUTCOME_SHOWN_FOR seconds."""
        return [
            one
            for one in self._shown.values()
            if one.finished_at is None or now - one.finished_at < OUTCOME_SHOWN_FOR
        ]

    async def close(self) -> None:
        """The service stops: a sign-in waiting for its approval ends (the next start asks
        for a new code)."""
        await cancel_all(self._tasks.values())
