"""Housekeeping that keeps the database small over months, takes back deliveries a stopped
process had claimed, the AniList sign-in check and the anime datasets' age: a background
task, once an hour."""

from __future__ import annotations

import asyncio
import logging
import time

from watchbridge.alerts import DISABLED, SENT
from watchbridge.app import Runtime
from watchbridge.deliver.worker import SERVICE_ROLE
from watchbridge.downtime import ALIVE_EVERY
from watchbridge.store import CLAIM_LEASE, KEEP_MARKS

log = logging.getLogger(__name__)

EVERY = 3600.0
KEEP_DONE = 7 * 86400.0  # delivered rows and their events stay a week, for diagnosis
# (a link's delivered add stays while the link still expects the play: `Store.prune`)
# A playback session is kept as long as an item's record of its last viewing: a client left
# paused on the credits reports that viewing again when it wakes up, weeks later maybe, and
# without its session that report would be a second play.
KEEP_SESSIONS = KEEP_MARKS
ALERTED = "alerted"  # cache namespace: alerts already sent, by key
ALERTED_TTL = 400 * 86400.0  # longer than a token lives


class Maintenance:
    name = "maintenance"

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        kept_at: float | None = None
        while not stop.is_set():
            # What the next start compares with (downtime.py): a write every few minutes.
            await asyncio.to_thread(runtime.store.note_alive, runtime.clock())
            if kept_at is None or time.monotonic() - kept_at >= EVERY:
                kept_at = time.monotonic()
                await housekeeping(runtime)
            try:
                await asyncio.wait_for(stop.wait(), timeout=ALIVE_EVERY)
            except TimeoutError:
                continue


async def housekeeping(runtime: Runtime) -> None:
    """One round of it: old rows pruned, stale claims taken back, the AniList sign-ins and the
    anime datasets checked. The service runs it hourly, `watchbridge sync` after its runs (a
    setup that only runs that from cron has no service to do it)."""
    pruned = await asyncio.to_thread(runtime.store.prune, runtime.clock(), KEEP_DONE, KEEP_SESSIONS)
    if any(pruned.values()):
        log.info("pruned old rows", extra=pruned)
    # Not this service's own claims: its worker may be mid-pass (or the clock jumped).
    stale = await asyncio.to_thread(
        runtime.store.release_stale_claims, runtime.clock(), CLAIM_LEASE, f"{SERVICE_ROLE}-"
    )
    if stale:
        log.warning("took back deliveries a stopped process had claimed", extra={"rows": stale})
        for wake in runtime.on_enqueued:
            wake()
    for check, name in (
        (reclaim_space, "reclaim-space"),
        (resend_failed_alerts, "alerts-resend"),
        (check_anilist_tokens, "anilist-token-check"),
        (check_anime_datasets, "anime-datasets-check"),
    ):
        try:
            await check(runtime)
        except Exception as exc:  # the pruning above must go on hourly regardless
            log.warning("%s failed: %s", name, type(exc).__name__)
            runtime.metrics.background_errors.labels(name).inc()


async def reclaim_space(runtime: Runtime) -> None:
    """The file shrinks back after pruning a big backlog (see `Store.reclaim_space`)."""
    pages = await asyncio.to_thread(runtime.store.reclaim_space)
    if pages:
        log.info("gave the disk back the space of pruned rows", extra={"pages": pages})


async def resend_failed_alerts(runtime: Runtime) -> None:
    """Alerts that failed to go out (the channel was down) are sent again even when no other
    alert comes along to take them: one about refused webhooks must reach the human."""
    await runtime.notifier.send_unsent()


async def check_anilist_tokens(runtime: Runtime) -> list[str]:
    """Alert (kind `credentials`) once per token when an AniList token is 14 days from expiry,
    and once more when it has expired, and log each: AniList tokens cannot be refreshed.
    Returns the keys of the alerts dealt with (sent, or not wanted by `alerts.kinds`)."""
    from watchbridge.services.anilist import (
        EXPIRY_STAGES,
        SERVICE,
        expiry_alert,
        expiry_condition,
        pick_token,
    )

    store, now = runtime.store, runtime.clock()
    sent = []
    for name, profile in runtime.config.profiles.items():
        account = profile.accounts.anilist
        if account is None:
            continue
        configured = account.token.reveal() if account.token else None
        token, _ = pick_token(store.get_token(SERVICE, name), configured, now)
        if token is None:
            continue
        alert = expiry_alert(token, now, name)
        if alert is None:  # signed in again: an alert about the old token is over
            for stage in EXPIRY_STAGES:
                over = f"the AniList sign-in of {name} lasts again"
                await runtime.notifier.resolve("credentials", over, expiry_condition(name, stage))
            continue
        if (await asyncio.to_thread(store.cache_get, ALERTED, alert.once, now))[0]:
            continue
        # A failed send may have gone out since, with another alert: then it is done.
        result = SENT
        if not runtime.notifier.alerted("credentials", alert.key):
            result = await runtime.notifier.notify(
                "credentials", alert.title, alert.body, alert.key
            )
        # Failed, or suppressed (held back after a failed send): tried again at the next check.
        if result in (SENT, DISABLED):
            await asyncio.to_thread(store.cache_put, ALERTED, alert.once, result, now, ALERTED_TTL)
            # The log too, once per stage: without an alert channel (or with `credentials` left
            # out of alerts.kinds) it is the only word a webhook-only profile gets of it.
            log.warning(alert.body, extra={"profile": name})
            sent.append(alert.once)
            # One cause: the sign-in that was about to expire has; a later sign-in resolves once.
            for stage in EXPIRY_STAGES[: EXPIRY_STAGES.index(alert.stage)]:
                await runtime.notifier.close_quietly("credentials", expiry_condition(name, stage))
    return sent


DATASETS_TITLE = "Anime mapping datasets out of date"


async def check_anime_datasets(runtime: Runtime) -> None:
    """Alert (kind `service_unreachable`, throttled like any other) while the anime mapping
    datasets cannot be refreshed and have no copy or one two refresh periods old; send the
    recovery once they are current again. Reads their state on disk only: refreshing is the
    deliveries' and link runs' business."""
    if runtime.config.services.anilist is None:
        return
    from watchbridge import anime_data

    data = anime_data.from_config(runtime.config)
    problems = await asyncio.to_thread(data.out_of_date, runtime.clock())
    if problems:
        body = "\n".join(problems)
        await runtime.notifier.notify("service_unreachable", DATASETS_TITLE, body, "anime-datasets")
    else:
        message = "The anime mapping datasets are current again."
        await runtime.notifier.resolve("service_unreachable", message, "anime-datasets")
