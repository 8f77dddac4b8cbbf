"""Runs every link on its interval, with jitter; alerts when a link keeps failing.

A background task of the service. Never two runs of one link at once (the run history says
when one is going on); runs that fail three times in a row (by the run history, so across
restarts) raise a `sync_failing` alert and the next success sends the recovery notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from dataclasses import fields
from typing import Any, TypeVar

from watchbridge.anime_data import MISSING_KEY
from watchbridge.app import Runtime
from watchbridge.causes import outage_key
from watchbridge.config import (
    MEDIA_SERVERS,
    SYNC_SERVICES,
    Accounts,
    Config,
    link_profiles,
    service_title,
)
from watchbridge.downtime import not_caught_up
from watchbridge.errors import Waits, WatchbridgeError
from watchbridge.logs import Repeating
from watchbridge.plexlink import wants_lists
from watchbridge.serializdlist import UnreadableAlert
from watchbridge.stopping import unless_stopped
from watchbridge.store import LOCKED_BY_ANOTHER, locked_by_another
from watchbridge.sync import (
    WAITED,
    LinkBusy,
    NeedsReview,
    PartsFailed,
    causes_of,
    failure_of,
    report_held,
    report_run,
    report_waiting,
    review_alert_text,
    review_wait,
    run_link,
    syncable,
    unforeseen_failure,
)
from watchbridge.tautulliwatched import KEY_PREFIX as TAUTULLI_WATCHED
from watchbridge.webhookwatch import ALERT_KIND as WEBHOOKS_STOPPED
from watchbridge.webhookwatch import caught_up_source

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RUN_DELAY = 60.0  # let the service settle (and webhooks flow) before the first poll
UNRESOLVED_LOGGED = 20  # list titles a run could not sync, named in the log
# The problems of a link that its log tells once in a while (see logs.Repeating).
FAILED, REVIEW, WAITS = "failed", "review", "waits"
# What a scheduled run counts under (watchbridge_sync_runs_total's `result`).
RUN_RESULTS = ("ok", "held", "failed", "needs-review", "busy", WAITED)
BUSY_MARGIN = 5.0  # after a busy link's lease could have ended, before trying again
WAIT_MARGIN = 1.0  # after what a waiting link waits for is due to be tried again


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.9, 1.1)


class SyncScheduler:
    name = "sync-scheduler"

    def __init__(self, first_delay: float = FIRST_RUN_DELAY) -> None:
        self.first_delay = first_delay

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        links = [name for name, link in runtime.config.links.items() if syncable(link)]
        for name, link in runtime.config.links.items():
            if name not in links:
                log.warning(
                    "link not scheduled: one of its services cannot be synced in this release",
                    extra={"link": name, "services": ",".join(link.services)},
                )
        await resolve_removed(runtime)
        await asyncio.gather(*(self._loop(runtime, stop, name) for name in links))

    async def _loop(self, runtime: Runtime, stop: asyncio.Event, name: str) -> None:
        interval = runtime.config.links[name].interval
        delay = jittered(self.first_delay)
        told_unresolved: tuple[str, ...] = ()  # logged again only once they change
        told_held = False  # a hold is logged once, when it begins: it may wait for weeks
        # A link failing (a service down) or waiting for a review for weeks, run every
        # `interval` (a minute, maybe): a line as it begins, then hourly, and as it ends.
        failing = Repeating(log)
        bug_told = False  # a bug's traceback was logged in this streak of failures
        runs = runtime.metrics.sync_runs
        # Served at 0 from the start: a series that first appears at 1 is no increase to
        # Prometheus, and an alert on failed runs would miss the first one.
        for counted_as in RUN_RESULTS:
            runs.labels(name, counted_as)
        while not await _stopped_within(stop, delay):
            delay = jittered(interval)
            try:
                running = run_link(
                    runtime.config,
                    runtime.store,
                    name,
                    clock=runtime.clock,
                    alerts=runtime.notifier,
                    metrics=runtime.metrics,
                )
                result = await unless_stopped(running, stop)
                if result is None:
                    # Recorded as interrupted: the next start's run picks the link up again.
                    log.info("sync run stopped: the service is stopping", extra={"link": name})
                    return
                if result.queued:
                    for wake in runtime.on_enqueued:
                        wake()
                # Went through, but not for everyone (a sign-in), or not a watchlist/collection.
                if result.failures:
                    # Told all the same; not over while a profile holding some went unread.
                    held = report_held(runtime.notifier, name, result.held, not result.held_unread)
                    if await reported(stop, held) is None:
                        return
                    raise PartsFailed("; ".join(result.failures), result.failure_causes)
            except LinkBusy as busy:
                runs.labels(name, "busy").inc()
                # A long `watchbridge sync` (a first backfill) holds the link: not a failure.
                # Nor a reason to wait a whole interval: the run may be a killed process's,
                # alive only until its lease ends.
                log.info("sync run skipped: the link is busy", extra={"link": name})
                delay = min(delay, max(busy.until - runtime.clock(), 0.0) + BUSY_MARGIN)
                continue
            except Waits as exc:
                # Not begun, for what an alert of its own tells (the anime mapping lists not
                # downloaded yet): no failure, and raised here too, not an hour late. Tried
                # again when what it waits for is (the run downloads what is due).
                runs.labels(name, WAITED).inc()
                failing.warning(
                    WAITS, "sync run waits", runtime.clock(), link=name, reason=exc.message
                )
                if await reported(stop, report_waiting(runtime.notifier, exc)) is None:
                    return
                if exc.until is not None:
                    delay = min(delay, max(exc.until - runtime.clock(), 0.0) + WAIT_MARGIN)
                continue
            except NeedsReview as exc:
                # As the run history says: a profile that failed beside the review is a failure.
                runs.labels(name, "failed" if failure_of(exc) else "needs-review").inc()
                failing.warning(
                    REVIEW,
                    f"sync waits for {review_wait(exc.waiting)}",
                    runtime.clock(),
                    link=name,
                    hint=exc.message,
                )
                for wake in runtime.on_enqueued:  # the link's other profiles may have queued
                    wake()
                told = await reported(
                    stop,
                    runtime.notifier.notify(
                        "sync_failing",
                        f"watchbridge: link {name} waits for your review",
                        review_alert_text(
                            name, runtime.config.links[name].services, exc.waiting, exc.message
                        ),
                        key=f"{name}:review",
                    ),
                    report_held(runtime.notifier, name, exc.held, not exc.held_unread),
                    # Someone else's side could not be read meanwhile, or all went through.
                    report_run(runtime.store, runtime.notifier, name, failure_of(exc), exc.causes),
                )
                if told is None:
                    return
                continue
            except Exception as exc:
                runs.labels(name, "failed").inc()
                message = getattr(exc, "message", None)
                if not isinstance(message, str):
                    message = unforeseen_failure(exc)
                if locked := locked_by_another(exc):
                    message = LOCKED_BY_ANOTHER
                told = await reported(
                    stop, report_run(runtime.store, runtime.notifier, name, message, causes_of(exc))
                )
                # A failure we did not foresee (a bug) keeps its traceback, once per streak,
                # also when the streak began with a foreseen one (a service down) told lately.
                unforeseen = not isinstance(exc, WatchbridgeError) and not locked and not bug_told
                if unforeseen:
                    bug_told = True
                    failing.forget(FAILED)
                failing.warning(
                    FAILED,
                    "sync run failed",
                    runtime.clock(),
                    exc_info=exc if unforeseen else None,
                    link=name,
                    # Not counted when a stop cut the counting short.
                    **({} if told is None else {"failures": told[0]}),
                    reason=message,
                )
                if told is None:
                    return
                continue
            failing.over(FAILED, "sync runs work again", runtime.clock(), link=name)
            failing.over(WAITS, "sync runs no longer wait", runtime.clock(), link=name)
            bug_told = False
            failing.over(REVIEW, "sync no longer waits for a review", runtime.clock(), link=name)
            runs.labels(name, result.outcome).inc()
            log.info(
                "sync run",
                extra={"link": name, "queued": result.queued, "api_calls": result.api_calls},
            )
            for applied in result.plans:  # what `watchbridge sync` lists: nothing else tells
                if applied.plan.same_viewing:
                    restore = applied.after_restore and not applied.first_run
                    which = "first sync since a restore" if restore else "first sync"
                    log.info(
                        f"{which} took plays days apart for one viewing (nothing written; "
                        "watched twice? add the play by hand)",
                        extra={
                            "link": name,
                            "profile": applied.profile,
                            "plays": "; ".join(p.describe() for p in applied.plan.same_viewing),
                        },
                    )
            unresolved = tuple(sorted(t for r in result.lists.results for t in r.unresolved))
            if unresolved and unresolved != told_unresolved:  # what `watchbridge sync` prints
                log.warning(
                    "list titles not synced",
                    extra={"link": name, "titles": "; ".join(unresolved[:UNRESOLVED_LOGGED])},
                )
            told_unresolved = unresolved
            if result.held and not told_held:  # also where no alert URL is set
                log.warning(
                    "sync holds removals for your confirmation",
                    extra={"link": name, "held": "; ".join(result.held)},
                )
            told_held = bool(result.held)
            await reported(  # cut short by a stop, the loop ends next
                stop,
                # Also when the failures came before a restart: the notifier remembers the alert.
                report_run(runtime.store, runtime.notifier, name, None),
                runtime.notifier.resolve(
                    "sync_failing", f"link {name} syncs every profile again", key=f"{name}:review"
                ),
                report_held(runtime.notifier, name, result.held),
            )


LINK_ALERT_SUFFIXES = (":review", ":removals")  # the keys of a link's alerts: name, name:...


def link_of_alert(key: str) -> str:
    """The link a `sync_failing` alert's key names (see sync.report_run, report_held, and
    serializdlist.UnreadableAlert: `LINK:PROFILE:serializd-watched-seasons:SHOW`)."""
    if (kept_off := UnreadableAlert.of(key)) is not None:
        return kept_off.link
    for suffix in LINK_ALERT_SUFFIXES:
        if key.endswith(suffix):
            return key.removesuffix(suffix)
    return key


# The kinds of alert about one service (its outage, a sign-in, an account limit), and the
# keys of those that do not start with the service's name (see service_of_alert).
SERVICE_ALERT_KINDS = ("service_unreachable", "credentials", "account_limit")
SERVICE_OF_KEY = {"anime-datasets": "anilist", MISSING_KEY: "anilist", "plextv:watchlist": "plex"}
# The services a profile has an account of (profiles.NAME.accounts.SERVICE).
ACCOUNT_SERVICES = tuple(f.name for f in fields(Accounts))


def service_of_alert(key: str) -> str | None:
    """The service an alert of SERVICE_ALERT_KINDS is about, by its key: `serializd` (its
    outage), `trakt:me` (a profile's), `server:jellyfin` (a media server's lookups),
    `anilist:me:expiring`, `anime-datasets`; None for a key of no one service."""
    if key in SERVICE_OF_KEY:
        return SERVICE_OF_KEY[key]
    name = key.removeprefix("server:").partition(":")[0]
    return name if name in SYNC_SERVICES else None


def profile_of_alert(key: str) -> str | None:
    """The profile an alert of SERVICE_ALERT_KINDS is about, by its key: `me` of `trakt:me`
    (a delivery's sign-in, account limit or rate limit), `trakt:me:ending`,
    `trakt:me:watchlist` (a list full) and `anilist:me:expiring`; None for one about a whole
    service (`trakt`, `server:jellyfin`, `plextv:watchlist`). Names have no colon (config)."""
    if key in SERVICE_OF_KEY or key.startswith("server:") or service_of_alert(key) is None:
        return None
    return key.split(":")[1] if ":" in key else None


def no_longer_configured(config: Config, kind: str, key: str) -> str | None:
    """Why alert (`kind`, `key`) is over for good: what it is about is no longer in the
    config (a link; a service; a profile, or its account of the service), so nothing will
    ever resolve it: in a person's words, services by name, the config key in brackets (the
    "Resolved" text). None while it still is."""
    if kind == "sync_failing":
        name = link_of_alert(key)
        if name not in config.links:
            return (
                f"link {name} is no longer in the config, so it does not sync any more"
                f" (links.{name})"
            )
        kept_off = UnreadableAlert.of(key)  # about one profile of the link's watchlist
        if kept_off is None:
            return None
        link = config.links[name]
        # In the words of a dead letter's reason (config.unwanted_by_link): the key in brackets.
        if kept_off.profile not in link_profiles(config, link):
            return f"link {name} no longer syncs profile {kept_off.profile} (links.{name}.profiles)"
        # The watchlist goes to Serializd from Trakt's or Plex's: a link of Serializd and
        # either may go on with it (one whose other side cannot has no watchlist part).
        if "serializd" not in link.services:
            return f"link {name} no longer syncs Serializd (links.{name}.services)"
        if not wants_lists(link):
            return f"link {name} no longer syncs the watchlist (links.{name}.kinds)"
        return None
    if kind == WEBHOOKS_STOPPED and (server := caught_up_source(key)) is not None:
        name = service_title(server)
        if getattr(config.services, server) is None:
            return (
                f"{name} is no longer in the config, so its plays are not read any more"
                f" (services.{server})"
            )
        why = not_caught_up(config, server)
        return f"watchbridge no longer reads {name}'s plays: {why}" if why else None
    if kind == WEBHOOKS_STOPPED and key.startswith(TAUTULLI_WATCHED):
        return None  # found in Tautulli's webhooks, whatever the config (tautulliwatched.py)
    if kind == WEBHOOKS_STOPPED:  # else found by a Plex link's read of the Plex history
        if config.services.plex is None:
            return (
                "Plex is no longer in the config, so its play history is not read any more"
                " (services.plex)"
            )
        if not any("plex" in link.services for link in config.links.values()):
            return (
                "no link syncs Plex any more, so nothing tells whether its webhooks come"
                " (links.NAME.services)"
            )
        return None
    if kind not in SERVICE_ALERT_KINDS or (service := service_of_alert(key)) is None:
        return None
    if getattr(config.services, service) is None:
        return (
            f"{service_title(service)} is no longer in the config, so it is not used any more"
            f" (services.{service})"
        )
    # A media server's outage, raised by the links reading it (causes.server_unreachable), or
    # its lookups and deliveries, which tell it again if they still fail.
    server_outage = service in MEDIA_SERVERS and key == outage_key(service)
    if server_outage and not any(service in link.services for link in config.links.values()):
        return (
            f"no link reads {service_title(service)} any more, so its outage holds nothing"
            " up (links.NAME.services)"
        )
    profile = profile_of_alert(key)
    if profile is None:
        return None
    if profile not in config.profiles:
        return (
            f"profile {profile} is no longer in the config, so nothing is synced for it any more"
            f" (profiles.{profile})"
        )
    accounts = config.profiles[profile].accounts
    if service in ACCOUNT_SERVICES and getattr(accounts, service) is None:
        account = f"profiles.{profile}.accounts.{service}"
        return f"profile {profile} no longer uses {service_title(service)} ({account})"
    return None


async def resolve_removed(runtime: Runtime) -> None:
    """What is taken out of the config never runs or answers again to resolve its alerts: a
    link (often because it kept failing), a service (given up), a profile or its account of a
    service (a sign-in, an account limit). Those alerts are over now: "Resolved" when the alert
    reached the user, closed quietly when it was still owed (telling it now would be news of
    nothing). The delivery worker resolves some too, but only where deliveries still waited.
    At the service's start, and after each `watchbridge sync` (a setup that only runs that from
    cron has no service to start)."""
    notifier = runtime.notifier
    for kind in ("sync_failing", WEBHOOKS_STOPPED, *SERVICE_ALERT_KINDS):
        for key in notifier.condition_keys(kind):
            over = no_longer_configured(runtime.config, kind, key)
            if over is None:
                continue
            if notifier.alerted(kind, key):
                await notifier.resolve(kind, over, key=key)
            else:
                await notifier.close_quietly(kind, key)


# A stop lets a run's alerts on their way this long to end: cut short once answered, an alert
# is kept and sent again at the next start (twice, then).
REPORT_GRACE = 1.0


async def reported(stop: asyncio.Event, *reports: Coroutine[Any, Any, Any]) -> list[Any] | None:
    """What a run's `reports` (its alerts, and the run history they read) return, awaited in
    turn; None once `stop` is set first and REPORT_GRACE has not seen them end: the one
    going is cut short (see `unless_stopped`), those not begun never run. A stop must not
    wait for them: a notification host that hangs holds each alert for Apprise's timeout,
    past server.shutdown_timeout. Nothing is lost: an alert cut short on its way is kept for
    the next start (`Notifier`), and the next run reports again what the run history holds
    (a failing streak, removals held, a review)."""

    async def in_turn() -> list[Any]:
        return [await report for report in reports]

    try:
        return None if stop.is_set() else await unless_stopped(in_turn(), stop, REPORT_GRACE)
    finally:
        for report in reports:  # those never begun, or it would be warned about
            report.close()


async def _stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
