"""A link's first sync reviewed and applied from the status page: what `watchbridge sync --link
NAME --dry-run` then `--yes` do, for those with no terminal (a Home Assistant app's users, an
Unraid household). Each is a run of the link as the scheduler runs one, in the background: a
full read may take minutes (Serializd), and the page must answer meanwhile.

The page shows the plan read (`ShownPlan`, in the CLI's words: review.py) with a token of
it; its button applies that plan only: the apply run reads both sides again and, when they
make another plan, writes nothing and shows the new one (`sync.PlanChanged`). One run per
link at a time; what it came to stays on the page. Nothing here holds a secret: error texts
pass through the runtime's redaction, as every display of them does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from watchbridge import queuewords as words
from watchbridge.errors import WatchbridgeError
from watchbridge.plexlink import list_counts, lists_summary
from watchbridge.review import plan_lines, plan_token, reviewed
from watchbridge.stopping import cancel_all
from watchbridge.sync import (
    LinkBusy,
    PlanChanged,
    RunResult,
    causes_of,
    counted_with,
    failure_of,
    plan_counts,
    report_held,
    report_run,
    run_link,
    unforeseen_failure,
)

if TYPE_CHECKING:
    from watchbridge.app import Runtime

log = logging.getLogger(__name__)

SHOWN_ACTIONS = 50  # writes listed per profile, as `watchbridge sync`'s --limit default


@dataclass(frozen=True)
class ShownPlan:
    """A plan read for the page: per profile its changes in words, the CLI's lines, and the
    token the apply button carries."""

    read_at: float
    changes: tuple[tuple[str, tuple[str, ...]], ...]  # (profile, its counts in words)
    lines: tuple[str, ...]
    token: str
    covers: tuple[str, ...]  # the profiles waiting for this review (`review.reviewed`)
    unread: tuple[str, ...] = ()  # "profile: why" of the parts that could not be read


def shown_plan(name: str, result: RunResult, now: float) -> ShownPlan:
    """A dry run's result as the page shows it (pure)."""
    changes = tuple(
        (
            p.profile,
            tuple(
                words.change(key, count)
                for key, count in sorted(
                    counted_with(plan_counts([p]), list_counts(result.lists, p.profile)).items()
                )
                if count
            ),
        )
        for p in result.plans
    )
    lines = [*plan_lines(result.plans, name, SHOWN_ACTIONS), *lists_summary(result.lists)]
    return ShownPlan(
        read_at=now,
        changes=changes,
        lines=tuple(lines),
        token=plan_token(result.plans, result.lists),
        covers=tuple(sorted(reviewed(result.plans))),
        unread=result.failures,
    )


@dataclass
class PageReview:
    """One link's review on the page: the run going on (or the last), and the plan shown."""

    link: str
    started_at: float
    applying: bool = False  # the run applies the plan shown (else it reads one)
    finished_at: float | None = None
    plan: ShownPlan | None = None  # the plan shown, once read (none once applied)
    outcome: str | None = None  # once a run is over: what it came to, in words
    failed: bool = False

    @property
    def running(self) -> bool:
        return self.finished_at is None


# What a run of the page does: the review to fill in as it ends.
Run = Callable[[PageReview], Awaitable[None]]


class PageReviews:
    """The reviews started from the page, by link."""

    def __init__(self) -> None:
        self._shown: dict[str, PageReview] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def get(self, link: str) -> PageReview | None:
        return self._shown.get(link)

    def recent(self) -> list[PageReview]:
        return list(self._shown.values())

    def read(self, runtime: Runtime, link: str) -> PageReview:
        """Read both sides of `link` and plan, writing nothing (`sync --dry-run`)."""

        async def run(review: PageReview) -> None:
            result = await run_link(
                runtime.config,
                runtime.store,
                link,
                dry_run=True,
                clock=runtime.clock,
                alerts=runtime.notifier,
                metrics=runtime.metrics,
            )
            review.plan = await _shown(runtime, link, result)
            review.outcome = "read: nothing was written"

        return self._start(runtime, link, run, applying=False)

    def apply(self, runtime: Runtime, link: str, token: str) -> PageReview:
        """Apply the plan shown, whose token is `token` (`sync --yes`), if the sides still make
        it; else show the plan they make now."""

        async def run(review: PageReview) -> None:
            try:
                result = await run_link(
                    runtime.config,
                    runtime.store,
                    link,
                    yes=True,
                    clock=runtime.clock,
                    alerts=runtime.notifier,
                    metrics=runtime.metrics,
                    shown=token,
                )
            except PlanChanged as changed:
                review.plan = await _shown(runtime, link, changed.result)
                # Applied meanwhile (no profile waits for a review now): nothing is amiss.
                review.outcome, review.failed = changed.message, bool(review.plan.covers)
                return
            review.plan = None
            review.outcome = runtime.redact(applied(result))
            review.failed = bool(result.failures)
            if result.queued:
                for wake in runtime.on_enqueued:  # delivered by the service, now
                    wake()
            # As a scheduled run that went through tells it: the review's alert is over.
            error = "; ".join(result.failures) or None
            await report_run(runtime.store, runtime.notifier, link, error, result.failure_causes)
            await runtime.notifier.resolve(
                "sync_failing", f"link {link} syncs every profile again", key=f"{link}:review"
            )
            await report_held(runtime.notifier, link, result.held, not result.held_unread)

        return self._start(runtime, link, run, applying=True)

    def _start(self, runtime: Runtime, link: str, run: Run, applying: bool) -> PageReview:
        """Start `run` unless a run of the page for `link` goes on already."""
        shown = self._shown.get(link)
        if shown is not None and shown.running:
            return shown
        review = PageReview(
            link, runtime.clock(), applying, plan=None if shown is None else shown.plan
        )

        async def task() -> None:
            try:
                await run(review)
            except asyncio.CancelledError:
                review.outcome, review.failed = "the service stopped before the run's end", True
                raise
            except LinkBusy as busy:  # the scheduler's run of it, or `watchbridge sync`
                review.outcome, review.failed = busy.message, True
            except WatchbridgeError as exc:
                review.outcome, review.failed = runtime.redact(exc.message), True
                if applying:  # a failed run, told as the CLI's is
                    await report_run(
                        runtime.store, runtime.notifier, link, failure_of(exc), causes_of(exc)
                    )
            except Exception as exc:  # a bug: its traceback in the log, never on the page
                log.exception("sync run from the status page failed", extra={"link": link})
                review.outcome, review.failed = unforeseen_failure(exc), True
            finally:
                review.finished_at = runtime.clock()
                self._tasks.pop(link, None)

        self._shown[link] = review
        self._tasks[link] = asyncio.create_task(task(), name=f"page review {link}")
        return review

    def refused(self, link: str, why: str, now: float) -> None:
        """A press the page did not act on (a plan other than the one shown, or one read
        before a restart, which no review here holds): told there."""
        shown = self._shown.get(link)
        if shown is None:
            self._shown[link] = PageReview(link, now, finished_at=now, outcome=why, failed=True)
        elif not shown.running:
            self._shown[link] = replace(shown, outcome=why, failed=True, finished_at=now)

    async def close(self) -> None:
        """The service stops: a run under way ends as a shutdown ends the scheduler's (the
        next one goes on from there)."""
        await cancel_all(self._tasks.values())


async def _shown(runtime: Runtime, link: str, result: RunResult) -> ShownPlan:
    """`shown_plan` now, what it says of the parts not read passed through the redaction (a
    service's message may quote a URL with a key in it). On a thread: its counts and token go
    over every play (20,000 on a big first run), and the loop answers the webhooks."""
    plan = await asyncio.to_thread(shown_plan, link, result, runtime.clock())
    return replace(plan, unread=tuple(runtime.redact(why) for why in plan.unread))


def applied(result: RunResult) -> str:
    """What applying the plan did, in words."""
    said = [f"applied: {result.queued} change(s) queued; the service sends them now"]
    if result.skipped:
        said.append(f"{result.skipped} planned write(s) name items no service can take yet")
    said += [f"held: {held}" for held in result.held]
    said += [f"not done for {failure}" for failure in result.failures]
    return "; ".join(said)
