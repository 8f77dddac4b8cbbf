"""Housekeeping that keeps the database small over months, takes back deliveries a stopped
process had claimed, renews the Trakt sign-ins due for it, the AniList and Serializd token
checks and the anime datasets' age: a background task, once an hour."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from watchbridge import beside, defaulted, forplex, tautulliwatched, unlisted
from watchbridge.accounts import send_account_alerts
from watchbridge.alerts import DISABLED, SENT
from watchbridge.anime_data import MISSING_KEY
from watchbridge.app import Runtime
from watchbridge.causes import (
    LISTS_READ,
    lists_alert,
    paused_alert,
    paused_title,
    sign_in_works,
)
from watchbridge.config import service_title
from watchbridge.deliver.worker import ENDING, SERVICE_ROLE, ending_title
from watchbridge.downtime import ALIVE_EVERY
from watchbridge.http import Unavailable
from watchbridge.model import Accepted, Account, MediaEvent, MediaRef, Source
from watchbridge.playback import Session, ends_a_viewing
from watchbridge.servelock import Holder
from watchbridge.storagefault import STORAGE_ALERT
from watchbridge.store import CLAIM_LEASE, KEEP_MARKS, IngestJob, NewOutboxRow, Store

if TYPE_CHECKING:
    from watchbridge.account_ids import AccountIds
    from watchbridge.services.trakt import TraktClient

log = logging.getLogger(__name__)

EVERY = 3600.0
KEEP_DONE = 7 * 86400.0  # delivered rows and their events stay a week, for diagnosis
# (a link's delivered add stays while the link still expects the play: `Store.prune`)
# A playback session is kept as long as an item's record of its last viewing: a client left
# paused on the credits reports that viewing again when it wakes up, weeks later maybe, and
# without its session that report would be a second play.
KEEP_SESSIONS = KEEP_MARKS
# Alerts owed are sent as they come due, at most this often: alerts.throttle 0 (no back-off
# after a failed send) must not make a channel that is down be tried in a tight loop.
OWED_AT_MOST_EVERY = 5.0
ALERTED = "alerted"  # cache namespace: alerts already sent, by key
ALERTED_TTL = 400 * 86400.0  # longer than a token lives


class Maintenance:
    name = "maintenance"

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        from watchbridge.scheduler import reported
        from watchbridge.wiring import trakt_client

        # One Trakt client for every round: what Trakt said to a refresh (refused for good, or
        # its sign-in host down) is remembered, so an idle sign-in is not asked about hourly.
        trakt = trakt_client(runtime.config, runtime)
        notifier = runtime.notifier
        # An alert that failed to go out, or that a stopped or killed process was sending, is
        # sent again as it comes due: not an hour later at the next housekeeping, when no
        # other alert comes along to take it. Woken by a new one; else no wake-up for it.
        owed = asyncio.Event()
        notifier.call_when_owed(owed.set)
        kept_at: float | None = None
        noted_at: float | None = None
        resent_at = -OWED_AT_MOST_EVERY
        try:
            while not stop.is_set():
                if noted_at is None or time.monotonic() - noted_at >= ALIVE_EVERY:
                    # What the next start compares with (downtime.py): a write every few minutes.
                    noted_at = time.monotonic()
                    told = runtime.beside
                    other = await asyncio.to_thread(runtime.noted_alive)
                    await tell_beside(runtime, told, other)
                    await _released_for_plex(runtime)
                if kept_at is None or time.monotonic() - kept_at >= EVERY:
                    kept_at = time.monotonic()
                    await housekeeping(runtime, trakt, stop)  # sends the alerts owed too
                elif notifier.owed_due_in() == 0.0:
                    resent_at = time.monotonic()
                    await reported(stop, notifier.send_unsent())
                owed.clear()
                due_in = notifier.owed_due_in()
                wait = ALIVE_EVERY - (time.monotonic() - noted_at)
                if due_in is not None:
                    since = time.monotonic() - resent_at
                    wait = min(wait, max(due_in, OWED_AT_MOST_EVERY - since))
                await _woken(stop, owed, wait)
        finally:
            notifier.call_when_owed(None)
            if trakt is not None:
                await trakt.aclose()


async def _released_for_plex(runtime: Runtime) -> None:
    """`release_for_plex_due` at every note of being alive: a play Plex's webhook did not send
    is taken minutes after forplex.GRACE, not at the next hourly round."""
    try:
        await release_for_plex_due(runtime)
    except Exception as exc:  # the note and the housekeeping go on regardless
        log.warning("tautulli-for-plex failed: %s", type(exc).__name__)
        runtime.metrics.background_errors.labels("tautulli-for-plex").inc()


async def _woken(stop: asyncio.Event, owed: asyncio.Event, timeout: float) -> None:
    """Wait until the stop, an alert newly owed, or `timeout` seconds."""
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(owed.wait())}
    try:
        await asyncio.wait(waits, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def housekeeping(
    runtime: Runtime, trakt: TraktClient | None = None, stop: asyncio.Event | None = None
) -> None:
    """One round of it: old rows pruned, stale claims taken back, the Trakt sign-ins due for it
    renewed (with `trakt`, else a client of its own), the AniList sign-ins and the anime
    datasets checked. The service runs it hourly, `watchbridge sync` after its runs (a setup
    that only runs that from cron has no service to do it).

    Once `stop` is set (the service stopping), the checks that alert are let on their way
    REPORT_GRACE at most, as a link run's alerts are (`scheduler.reported`): a notification
    host that hangs would hold each for Apprise's timeout, past server.shutdown_timeout. An
    alert cut short is kept and sent by the next start; a check not begun runs at the next
    round."""
    from watchbridge.readers import plex
    from watchbridge.scheduler import reported

    carried = {(plex.SERVICE, plex.WRITTEN_BEFORE): plex.KEEP_WRITTEN_BEFORE}
    # A step of the clock the delivery worker has not handled yet (it moves the sessions'
    # times at its next pass): their ages are off by it, so none is forgotten this round.
    stepped = bool(runtime.clock_watch.unhandled())
    pruned = await asyncio.to_thread(
        runtime.store.prune,
        runtime.clock(),
        KEEP_DONE,
        math.inf if stepped else KEEP_SESSIONS,
        keep_marks=math.inf if stepped else KEEP_MARKS,
        keep_carried=carried,
    )
    if any(pruned.values()):
        log.info("pruned old rows", extra=pruned)
    # Not this service's own claims: its worker may be mid-pass (or the clock jumped).
    stale = await asyncio.to_thread(
        runtime.store.release_stale_claims,
        runtime.clock(),
        CLAIM_LEASE,
        f"{SERVICE_ROLE}-",
        runtime.config.delivery.retry_after,
    )
    if stale:
        log.warning("took back deliveries a stopped process had claimed", extra={"rows": stale})
        for wake in runtime.on_enqueued:
            wake()

    async def renew_trakt_sign_ins(runtime: Runtime) -> None:
        await refresh_trakt_sign_ins(runtime, trakt)

    for check, name in (
        (reclaim_space, "reclaim-space"),
        (resend_failed_alerts, "alerts-resend"),
        (send_account_alerts_owed, "account-alerts"),
        (release_for_plex, "tautulli-for-plex"),
        (check_unlisted_accounts, "unlisted-accounts-check"),
        (check_tautulli_watched, "tautulli-watched-check"),
        (check_defaulted_accounts, "defaulted-accounts-check"),
        (check_listed_twice_accounts, "listed-twice-accounts-check"),
        (renew_trakt_sign_ins, "trakt-token-refresh"),
        (check_anilist_tokens, "anilist-token-check"),
        (check_serializd_tokens, "serializd-token-check"),
        (check_anime_datasets, "anime-datasets-check"),
    ):
        runtime.metrics.background_errors.labels(name)  # served at 0: see metrics.Metrics
        try:
            # Giving the disk back runs on a thread, no alert in it: it is waited for.
            if stop is None or check is reclaim_space:
                await check(runtime)
            elif await reported(stop, check(runtime)) is None:
                log.info("housekeeping stopped: the service is stopping")
                return
        except Exception as exc:  # the pruning above must go on hourly regardless
            log.warning("%s failed: %s", name, type(exc).__name__)
            runtime.metrics.background_errors.labels(name).inc()


def _known_accounts(ids: AccountIds) -> list[tuple[str, str, str, str]]:
    """The accounts remembered by id: (source, server, account id, profile)."""
    return [(k.source, k.server, k.account_id, learnt.profile) for k, learnt in ids.known.items()]


def _next_webhook(one: unlisted.Unlisted) -> MediaEvent:
    """A webhook of `one`'s account, to route it as its next one would be routed: by the
    config and the accounts remembered now."""
    account = Account(id=one.account_id or None, name=one.name or None)
    return MediaEvent(cast(Source, one.source), "stop", MediaRef(kind="movie"), one.server, account)


async def check_unlisted_accounts(runtime: Runtime) -> None:
    """The accounts no profile lists (unlisted.py): forgotten once a profile takes their
    webhooks, the `unlisted_account` alert raised for one that likely is a listed person's new
    account, or their own on another server (its name theirs: `unlisted.probably_of`), and
    resolved once it is listed or has sent nothing for unlisted.QUIET."""
    from watchbridge.webhooks import route_for

    store, notifier, config = runtime.store, runtime.notifier, runtime.config
    now = runtime.clock()
    found = await asyncio.to_thread(store.unlisted_accounts)
    if not found:
        return
    ids = runtime.account_ids
    known = _known_accounts(ids)
    for one in found:
        event = _next_webhook(one)
        route = route_for(config, event, ids.known, ids.names)
        if route.profile is not None or route.sent_by:
            if one.state == unlisted.ALERTED:
                if route.sent_by:  # its plays are the other sender's of the server now
                    by = replace(event, source=route.sent_by)
                    other = route_for(config, by, ids.known, ids.names)
                    over = unlisted.listed_for_other_now(one, other.profile, route.sent_by)
                else:
                    over = unlisted.listed_now(one, cast(str, route.profile))
                await notifier.resolve(unlisted.ALERT_KIND, over, key=one.key)
            await asyncio.to_thread(store.forget_unlisted, one)
            continue
        if one.state == unlisted.ALERTED:
            if now - one.last_at >= unlisted.QUIET:
                await notifier.resolve(unlisted.ALERT_KIND, unlisted.quiet_now(one), key=one.key)
                await asyncio.to_thread(store.note_unlisted, replace(one, state=unlisted.OVER))
            continue
        if one.state:
            continue
        own = unlisted.probably_of(config, one, ids.known.values())
        if own is not None:
            # A listed person's account on another server: each play of theirs is lost to
            # them from the first, so told at once (once: the state keeps it), not after WAIT.
            if one.plays > 0:
                body = unlisted.own_alert_body(one, own)
                await notifier.notify(unlisted.ALERT_KIND, unlisted.title(one), body, key=one.key)
                alerted = replace(one, state=unlisted.ALERTED, profile=own)
                await asyncio.to_thread(store.note_unlisted, alerted)
            continue
        last_from = await asyncio.to_thread(store.last_from_server, one.source, one.server)
        on_server = unlisted.profiles_on_server(config, one.source, one.server, known, last_from)
        quiet = unlisted.silent(one, on_server, last_from)
        active = frozenset(on_server - set(quiet))
        if unlisted.alert_due(one, quiet, now):
            profile = quiet[0]
            title = unlisted.title(one)
            body = unlisted.alert_body(one, profile, config)
            await notifier.notify(unlisted.ALERT_KIND, title, body, key=one.key)
            one = replace(one, state=unlisted.ALERTED, profile=profile)
        elif active <= one.active:
            continue
        await asyncio.to_thread(store.note_unlisted, replace(one, active=one.active | active))


async def release_for_plex_due(runtime: Runtime) -> None:
    """`release_for_plex` when a report kept for Plex's webhook waits past forplex.GRACE; else
    nothing but one indexed look (every 5 minutes): the plays taken, kept 6 weeks for the
    status, are read by the hourly round."""
    before = runtime.clock() - forplex.GRACE
    if await asyncio.to_thread(runtime.store.for_plex_due, before):
        await release_for_plex(runtime)


def _read_for_plex(store: Store) -> list[tuple[forplex.ForPlex, Accepted | None]]:
    """The reports kept for Plex's webhook, each with Tautulli's report parsed (None: one this
    release cannot read). Run off the event loop: 6 weeks of plays taken to parse."""
    from watchbridge.ingest import parse

    read = []
    for one in store.for_plex():
        result = parse("tautulli", one.body.encode(), "application/json")
        read.append((one, result if isinstance(result, Accepted) else None))
    return read


def _noting_ends(job: IngestJob, ended: list[bool]) -> IngestJob:
    """`job`, noting in `ended` whether its decision completed a viewing."""
    decide = job.decide

    def noted(
        session: Session | None, marks: Session | None
    ) -> tuple[Session | None, Sequence[NewOutboxRow]]:
        after, rows = decide(session, marks)
        ended.append(after is not None and ends_a_viewing(session, after))
        return after, rows

    return replace(job, decide=noted)


async def release_for_plex(runtime: Runtime) -> None:
    """Tautulli's reports kept for Plex's own webhook (forplex.py), once forplex.GRACE has
    passed: dropped where Plex's webhook told of the same item for that profile, else taken
    for it (dated when Tautulli reported it), with one `unlisted_account` alert per person
    and server; that alert resolved once the config takes Tautulli's reports of them, or
    Plex's webhook is seen sending their plays, or none of their plays taken is kept any more
    (forplex.KEEP after the last)."""
    from watchbridge.webhooks import ingest_job, route_for

    store, notifier, config = runtime.store, runtime.notifier, runtime.config
    now = runtime.clock()
    kept = await asyncio.to_thread(_read_for_plex, store)
    # An alert whose plays taken were all forgotten (forplex.KEEP) has nothing left to resolve
    # it by (the config written, Plex's webhook seen): it is over.
    present = {one.key for one, _ in kept}
    for key in notifier.condition_keys(forplex.ALERT_KIND):
        if key not in present and (lapsed := forplex.lapsed(key)) is not None:
            await notifier.resolve(forplex.ALERT_KIND, lapsed, key=key)
    if not kept:
        return
    ids = runtime.account_ids
    taken: dict[str, tuple[forplex.ForPlex, int]] = {}  # alert key -> a report, plays taken
    sent: set[str] = set()  # alert keys of people Plex's webhook is seen sending for
    new: set[str] = set()  # alert keys of people with a report taken this round
    over: dict[str, forplex.ForPlex] = {}  # alert keys the config takes Tautulli's for now
    for one, accepted in kept:
        events = accepted.events if accepted is not None else ()
        document = accepted.document if accepted is not None else None
        routes = [route_for(config, event, ids.known, ids.names) for event in events]
        if one.state == forplex.TAKEN:
            if any(route.profile is not None for route in routes):
                over[one.key] = one
            else:
                plays = taken.get(one.key, (one, 0))[1]
                taken[one.key] = (one, plays + 1)
            continue
        if now - one.received_at < forplex.GRACE:
            continue
        since = one.received_at - forplex.LOOKBACK
        plex_sent = await asyncio.to_thread(
            store.sent_by_plex, one.profile, one.server, one.item, since, one.received_at
        )
        if plex_sent or one.profile not in config.profiles or not events:
            if plex_sent:
                sent.add(one.key)
            await asyncio.to_thread(store.settle_for_plex, one, None)
            continue
        ended: list[bool] = []
        jobs = [
            _noting_ends(ingest_job(runtime, one.profile, event, document, server=one.server,
                                    dated=one.received_at), ended)
            for event in events
        ]  # fmt: skip
        if await runtime.writer.write_all(jobs):
            for wake in runtime.on_enqueued:
                wake()
        if not any(ended):
            # The other report of a viewing taken already (its Watched, its stop): no play.
            await asyncio.to_thread(store.settle_for_plex, one, None)
            continue
        await asyncio.to_thread(store.settle_for_plex, one, forplex.TAKEN)
        log.warning(
            "Plex's own webhook did not send a play Tautulli reported: taken from Tautulli's",
            extra={"profile": one.profile, "account": one.label, "fix": one.fix(config)},
        )
        plays = taken.get(one.key, (one, 0))[1]
        taken[one.key] = (one, plays + 1)
        new.add(one.key)
    for key, one in over.items():
        taken.pop(key, None)
        await notifier.resolve(forplex.ALERT_KIND, forplex.listed_now(one), key=key)
        await asyncio.to_thread(store.forget_for_plex, one)
    for key, (one, plays) in taken.items():
        if key in sent:  # Plex's webhook sends their plays now (Plex Pass back)
            await notifier.resolve(forplex.ALERT_KIND, forplex.sent_now(one), key=key)
            await asyncio.to_thread(store.forget_for_plex, one)
            continue
        if key not in new:
            continue  # told already: its count grows with the next one taken
        body = forplex.alert_body(one, plays, config)
        await notifier.notify(forplex.ALERT_KIND, forplex.title(one), body, key=key)


async def check_tautulli_watched(runtime: Runtime) -> None:
    """Tautulli servers that send stops and no Watched (tautulliwatched.py): the
    `webhooks_stopped` alert raised for one none of whose stops reached Tautulli's watched
    percent (no finished viewing sends anything), resolved once a Watched came; a server
    that sent nothing for tautulliwatched.KEEP forgotten."""
    store, notifier = runtime.store, runtime.notifier
    now = runtime.clock()
    found = await asyncio.to_thread(store.tautulli_reports)
    kind = tautulliwatched.ALERT_KIND
    present = {seen.key for seen in found}
    for key in notifier.condition_keys(kind):
        if key.startswith(tautulliwatched.KEY_PREFIX) and key not in present:
            await notifier.resolve(kind, tautulliwatched.quiet_now(key), key=key)
    for seen in found:
        if now - seen.seen_at >= tautulliwatched.KEEP:
            await notifier.resolve(kind, tautulliwatched.quiet_now(seen.key), key=seen.key)
            await asyncio.to_thread(store.forget_tautulli_reports, seen.server, seen.seen_at)
        elif seen.nothing_sent:
            title = tautulliwatched.title(seen)
            await notifier.notify(kind, title, tautulliwatched.alert_body(seen), key=seen.key)
        elif notifier.raised(kind, seen.key):
            await notifier.resolve(kind, tautulliwatched.over_now(seen), key=seen.key)


async def check_defaulted_accounts(runtime: Runtime) -> None:
    """The accounts the default profile takes for want of an entry (defaulted.py): forgotten
    once a profile lists them (or no default profile takes them), the `unlisted_account` alert
    raised for one that is a second person's or likely a listed person's new account, and
    resolved once it is listed or has sent nothing for unlisted.QUIET."""
    from watchbridge.webhooks import route_for

    store, notifier, config = runtime.store, runtime.notifier, runtime.config
    now = runtime.clock()
    found = await asyncio.to_thread(store.defaulted_accounts)
    if not found:
        return
    ids = runtime.account_ids
    known = _known_accounts(ids)
    taken: list[unlisted.Unlisted] = []
    for one in found:
        route = route_for(config, _next_webhook(one), ids.known, ids.names)
        if not route.defaulted:
            if one.state == unlisted.ALERTED:
                if route.profile is not None:
                    over = unlisted.listed_now(one, route.profile)
                elif route.sent_by:  # listed for the server's other sender
                    by = replace(_next_webhook(one), source=route.sent_by)
                    other = route_for(config, by, ids.known, ids.names).profile
                    over = unlisted.listed_for_other_now(one, other, route.sent_by)
                else:
                    over = defaulted.left_now(one)
                await notifier.resolve(unlisted.ALERT_KIND, over, key=defaulted.alert_key(one))
            await asyncio.to_thread(store.forget_defaulted, one)
            continue
        taken.append(replace(one, default_profile=cast(str, route.profile)))
    for one in taken:
        key = defaulted.alert_key(one)
        if one.state == unlisted.ALERTED:
            if now - one.last_at >= unlisted.QUIET:
                await notifier.resolve(unlisted.ALERT_KIND, unlisted.quiet_now(one), key=key)
                await asyncio.to_thread(store.note_defaulted, replace(one, state=unlisted.OVER))
            continue
        if one.state:
            continue
        last_from = await asyncio.to_thread(store.last_from_server, one.source, one.server)
        on_server = unlisted.profiles_on_server(config, one.source, one.server, known, last_from)
        quiet = unlisted.silent(one, on_server, last_from)
        active = frozenset(on_server - set(quiet))
        # The default person's own account (by a name it lists, or as the first it took): no
        # second person's, nor a listed person's new one.
        own = unlisted.own_names(config, one.default_profile, ids.known.values())
        theirs = defaulted.person(one) in own or defaulted.set_up_for(config, one, taken)
        moved = unlisted.alert_due(one, quiet, now) and not theirs
        if moved or defaulted.second_person(one, taken, own):
            one = replace(one, state=unlisted.ALERTED, profile=quiet[0] if moved else "")
            was = None if moved else defaulted.first_taken(one, taken)
            body = defaulted.alert_body(one, config, was)
            await notifier.notify(unlisted.ALERT_KIND, defaulted.title(one), body, key=key)
        elif active <= one.active:
            continue
        await asyncio.to_thread(store.note_defaulted, replace(one, active=one.active | active))


async def check_listed_twice_accounts(runtime: Runtime) -> None:
    """The accounts two profiles list, by name and by id (account_ids.ListedTwice): the
    `unlisted_account` alert raised (or reminded of, as the notifier's throttle allows) for
    each seen since the start or remembered with its name, and resolved for each alerted
    that the config lists once now (a start with one of the lines removed)."""
    from watchbridge.account_ids import listed_once_now, listed_twice, listed_twice_account
    from watchbridge.webhooks import route_for

    notifier, config, ids = runtime.notifier, runtime.config, runtime.account_ids
    found = {seen.twice.key: seen.twice for seen in ids.listed_twice(config)}
    for key in notifier.condition_keys(unlisted.ALERT_KIND):
        account = listed_twice_account(key)
        if account is None or key in found:
            continue
        still = listed_twice(config, *account)
        if still is not None:  # not remembered with its name (Tautulli's), still listed twice
            found[key] = still
            continue
        source, server, account_id, name = account
        event = MediaEvent(
            cast(Source, source), "stop", MediaRef(kind="movie"), server, Account(account_id, name)
        )
        route = route_for(config, event, ids.known, ids.names)
        await notifier.resolve(unlisted.ALERT_KIND, listed_once_now(account, route.profile), key)
    for twice in found.values():
        await notifier.notify(unlisted.ALERT_KIND, twice.title, twice.alert_body, key=twice.key)


async def reclaim_space(runtime: Runtime) -> None:
    """The file shrinks back after pruning a big backlog (see `Store.reclaim_space`)."""
    pages = await asyncio.to_thread(runtime.store.reclaim_space)
    if pages:
        log.info("gave the disk back the space of pruned rows", extra={"pages": pages})


async def resend_failed_alerts(runtime: Runtime) -> None:
    """Alerts that failed to go out (the channel was down) are sent again even when no other
    alert comes along to take them: one about refused webhooks must reach the human."""
    await runtime.notifier.send_unsent()


async def send_account_alerts_owed(runtime: Runtime) -> None:
    """The `account_changed` alerts no process with the alerts sent yet: a change
    `watchbridge auth trakt` noticed, or one the throttle held back (`accounts`)."""
    await send_account_alerts(runtime.store, runtime.notifier)


async def check_anilist_tokens(runtime: Runtime) -> list[str]:
    """Alert (kind `credentials`) once per token when an AniList token is 14 days from expiry,
    and once more when it has expired, and log each: AniList tokens cannot be refreshed.
    The expired one is the alert the profile's held deliveries raise (its key and title): one
    alert they remind of, and one "Resolved" once a new sign-in lasts (theirs once one goes
    through; this check's when none waits). One not wanted (no `alerts.urls`, or
    `credentials` not in `alerts.kinds`) is only logged, and sent once it is wanted (a
    channel added while the token still has days left).
    Returns the keys of the alerts dealt with (sent, or logged as not wanted)."""
    from watchbridge.services.anilist import (
        SERVICE,
        expiring_title,
        expiry_alert,
        expiry_condition,
        pick_token,
    )
    from watchbridge.services.refusals import entry, refusal_of

    store, notifier, now = runtime.store, runtime.notifier, runtime.clock()
    sent = []
    for name, profile in runtime.config.profiles.items():
        account = profile.accounts.anilist
        if account is None:
            continue
        paused = paused_alert("credentials", SERVICE, name, "")
        expiring = expiry_condition(name, "expiring")
        # 0.1.0 raised the expired one under a key of its own, beside the deliveries': theirs
        # now, so that it is not left open for good (nothing raises or resolves that key).
        await notifier.take_over("credentials", expiry_condition(name, "expired"), paused.key)
        configured = account.token.reveal() if account.token else None
        token, _ = pick_token(store.get_token(SERVICE, name), configured, now)
        if token is None:
            continue
        alert = expiry_alert(token, now, name)
        if alert is None:  # signed in again: an alert about the old token is over
            over = f"the AniList sign-in of {name} lasts again"
            await notifier.resolve("credentials", over, expiring)
            # Not one AniList refused before its end (revoked): that pause lasts while it is used.
            if refusal_of(store.get_token(entry(SERVICE), name), token.access_token) is None:
                await _sign_in_back(runtime, SERVICE, name)
            continue
        key, title = expiring, expiring_title(name)
        if alert.stage == "expired":
            key, title = paused.key, paused.title
        if await _alert_once(runtime, name, alert.once, key, title, alert.body):
            sent.append(alert.once)
            if key != expiring:  # one cause: the sign-in about to expire has; one "Resolved"
                await notifier.close_quietly("credentials", expiring)
    return sent


async def check_serializd_tokens(runtime: Runtime) -> list[str]:
    """Alert (kind `credentials`, the *sign-in ends soon* alert its deliveries raise too) once
    per token when a token pasted for Serializd is 14 days from its expiry claim, and log it:
    with no password, watchbridge cannot sign in again. Once it has expired, the deliveries'
    *paused* alert tells of it (this one closes without a "Resolved"); a token that lasts
    again (a new one pasted) resolves it. Returns the keys of the alerts dealt with."""
    from watchbridge.services.refusals import digest
    from watchbridge.services.serializd import SERVICE, token_ending, token_expiry

    now = runtime.clock()
    sent = []
    for name, profile in runtime.config.profiles.items():
        account = profile.accounts.serializd
        if account is None or account.token is None:
            continue
        token = account.token.reveal()
        expires = token_expiry(token)
        key = f"{SERVICE}:{name}{ENDING}"
        body = token_ending(name, expires, now)
        if body is None and expires is not None and now >= expires:
            await runtime.notifier.close_quietly("credentials", key)
        elif body is None:
            renewed = f"the {service_title(SERVICE)} sign-in of profile {name} is renewed"
            await runtime.notifier.resolve("credentials", renewed, key=key)
        else:
            once = f"{SERVICE}:{name}:{digest(token)[:32]}:ending"
            if await _alert_once(runtime, name, once, key, ending_title(SERVICE, name), body):
                sent.append(once)
    return sent


async def _alert_once(
    runtime: Runtime, profile: str, once: str, key: str, title: str, body: str
) -> bool:
    """Alert (kind `credentials`, condition `key`) and log (a warning) a problem with
    `profile`'s sign-in, once per `once` (a stage of one stored sign-in): the log is the only
    word without an alert channel, or with `credentials` left out of alerts.kinds. True when
    it was dealt with; a failed or held-back alert is tried again at the next round, and so is
    one not wanted (no alerts.urls, or `credentials` not in alerts.kinds: it costs nothing), so
    that a channel added while the problem lasts still hears of it, once."""
    store, now = runtime.store, runtime.clock()
    logged, done = await asyncio.to_thread(store.cache_get, ALERTED, once, now)
    if logged and done != DISABLED:
        return False
    # A failed send may have gone out since, with another alert (a delivery's): then it is done.
    result = SENT
    if not runtime.notifier.alerted("credentials", key):
        result = await runtime.notifier.notify("credentials", title, body, key)
    if result not in (SENT, DISABLED) or (logged and result == DISABLED):
        return False
    await asyncio.to_thread(store.cache_put, ALERTED, once, result, now, ALERTED_TTL)
    if not logged:
        log.warning(body, extra={"profile": profile})
    return True


async def refresh_trakt_sign_ins(runtime: Runtime, trakt: TraktClient | None = None) -> list[str]:
    """Renew each profile's Trakt sign-in once it is past its refresh point, though no play or
    link run needs it (`TraktClient.refresh_if_due`: the one refresh routine, under the lock a
    delivery refreshing at the same moment takes); a fresh one sends nothing. When Trakt
    refuses the refresh, alert (kind `credentials`, the keys and titles of the deliveries'
    alerts) and log once per sign-in: that it ends soon while its token still works, that the
    profile's deliveries wait once it does not. An outage of Trakt's sign-in host is only
    logged: the refresh is tried again at the next round, and deliveries tell of it if it lasts.
    Returns the keys of the alerts dealt with (sent, or not wanted by `alerts.kinds`)."""
    from watchbridge.services.trakt import SERVICE, TraktAuthError, TraktError
    from watchbridge.wiring import trakt_client

    profiles = [n for n, p in runtime.config.profiles.items() if p.accounts.trakt is not None]
    if not profiles or runtime.config.services.trakt is None:
        return []
    own = trakt is None
    client = trakt_client(runtime.config, runtime) if trakt is None else trakt
    assert client is not None
    told = []
    try:
        for name in profiles:
            key = f"{SERVICE}:{name}"
            try:
                await client.refresh_if_due(name)
            except TraktAuthError as exc:
                title = paused_title("credentials", SERVICE, name)
                body, stage = exc.message, "stopped"
            except (TraktError, Unavailable) as exc:  # tried again at the next round
                log.warning(
                    "the Trakt sign-in could not be renewed now: %s",
                    exc.message,
                    extra={"profile": name},
                )
                continue
            else:
                ending = await client.sign_in_ending(name)
                if ending is None:
                    await _renewed(runtime, client, name, key + ENDING)
                    await _works_again(runtime, client, name, key)
                    continue
                key += ENDING
                title, body, stage = ending_title(SERVICE, name), ending, "ending"
            if await _tell_once(runtime, name, stage, title, body, key):
                told.append(key)
    finally:
        if own:
            await client.aclose()
    return told


async def _renewed(runtime: Runtime, client: TraktClient, profile: str, key: str) -> None:
    """An alert that `profile`'s sign-in ends soon is over once its stored pair is fresh (it
    was refreshed, or signed in again)."""
    if not runtime.notifier.raised("credentials", key):
        return
    if not await client.refresh_due(profile):
        renewed = f"the Trakt sign-in of profile {profile} is renewed"
        await runtime.notifier.resolve("credentials", renewed, key=key)


async def _works_again(runtime: Runtime, client: TraktClient, profile: str, key: str) -> None:
    """An alert that `profile`'s deliveries are paused for its sign-in is over once its stored
    pair is fresh (signed in again) and none of its deliveries waits for a sign-in
    (`_sign_in_back`)."""
    from watchbridge.services.trakt import SERVICE

    if not runtime.notifier.raised("credentials", key) or await client.refresh_due(profile):
        return
    await _sign_in_back(runtime, SERVICE, profile)


async def _sign_in_back(runtime: Runtime, service: str, profile: str) -> None:
    """The alert that `profile`'s deliveries to `service` are paused for its sign-in (raised
    by them, or by a check that found it ended) is over, its sign-in being good again, once
    none of them waits for a sign-in (those end it as they go through): no delivery ends it
    for a profile no play comes for, and left open it would keep the next refusal of its
    sign-in from being told (`_alert_once`)."""
    key = paused_alert("credentials", service, profile, "").key
    if not runtime.notifier.raised("credentials", key):
        return
    if await asyncio.to_thread(runtime.store.waits_for_sign_in, service, profile):
        return
    await runtime.notifier.resolve("credentials", sign_in_works(service, profile), key=key)


async def _tell_once(
    runtime: Runtime, profile: str, stage: str, title: str, body: str, key: str
) -> bool:
    """Alert and log (a warning) that Trakt refused to renew `profile`'s sign-in, once per
    stored sign-in and `stage` (`_alert_once`, as for AniList). True when it was dealt with."""
    from watchbridge.services.trakt import SERVICE

    stored = await asyncio.to_thread(runtime.store.get_token, SERVICE, profile)
    refresh_token = str((stored or {}).get("refresh_token") or "")
    sign_in = hashlib.sha256(refresh_token.encode()).hexdigest()[:32]
    once = f"{SERVICE}:{profile}:{stage}:{sign_in}"
    return await _alert_once(runtime, profile, once, key, title, body)


DATASETS_TITLE = "watchbridge: anime mapping datasets out of date"
# What the datasets' alert says first: what it means, and what to do (a phone's lines).
DATASETS_LEAD = (
    "watchbridge could not refresh the anime mapping datasets that tell which AniList title a"
    " show's episodes are, so some anime plays may not find their AniList title. It tries"
    " again by itself; if this lasts, check that this machine reaches their hosts"
    " (services.anilist.mapping_urls)."
)


async def check_anime_datasets(runtime: Runtime) -> None:
    """Alert (kind `service_unreachable`, throttled like any other) while no anime mapping
    dataset could be downloaded yet, or the copies downloaded none could be read (AniList
    deliveries wait: an alert of its own, the one condition), and while they cannot be
    refreshed and have no copy or one two refresh periods old; send the recovery once one is
    downloaded and read, and once they are current again. Reads their state on disk only:
    refreshing is the deliveries' and link runs' business (the deliveries check at once while
    none gives a mapping). Keeps in the database what their refreshes found and
    datasets.json could not take, for `watchbridge status` and the next start."""
    if runtime.config.services.anilist is None:
        return
    from watchbridge import anime_data

    data = anime_data.from_config(runtime.config, store=runtime.store)
    await asyncio.to_thread(data.keep_unsaved)
    state = await asyncio.to_thread(data.lists_state, runtime.clock())
    # None downloaded while their downloads fail (as a link run waiting for them raises
    # it), or copies on disk none of which gives a mapping (no download ends it).
    alert = lists_alert(state)
    if alert is not None:
        await runtime.notifier.notify(alert.kind, alert.title, alert.body, alert.key)
        return  # one cause, one alert: not "out of date" too
    await runtime.notifier.resolve("service_unreachable", LISTS_READ, MISSING_KEY)
    if problems := state.out_of_date:
        body = DATASETS_LEAD + "\n\n" + "\n".join(problems)
        await runtime.notifier.notify("service_unreachable", DATASETS_TITLE, body, "anime-datasets")
    else:
        message = "The anime mapping datasets are current again."
        await runtime.notifier.resolve("service_unreachable", message, "anime-datasets")


async def tell_beside(runtime: Runtime, told: Holder | None, other: Holder | None) -> None:
    """Another service writing to this database (beside.py), `other` as this note found it,
    `told` as the note before: logged when first found (or another one is), alerted as
    `storage` (the notifier throttles and reminds); resolved once a note finds this
    service's own last one in place again."""
    database = Path(runtime.config.storage.path)
    if other is not None:
        if other != told:
            log.error(beside.message(database, other))
        said = beside.alert_text(database, other)
        await runtime.notifier.notify(STORAGE_ALERT, beside.TITLE, said, beside.BESIDE_KEY)
        return
    if told is not None:
        log.info(beside.OVER)
    if told is not None or runtime.notifier.raised(STORAGE_ALERT, beside.BESIDE_KEY):
        await runtime.notifier.resolve(STORAGE_ALERT, beside.OVER, beside.BESIDE_KEY)
