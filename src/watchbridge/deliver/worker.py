"""The delivery worker: claims due outbox rows, hands them to their target, records outcomes.

Targets decide per row (pure mapping of what the service said); the worker owns timing:
exponential backoff with jitter, `Retry-After`, target-wide holds, dead letters and alerts.
It sleeps until the next row is due or a webhook wakes it: idle means idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeGuard

from watchbridge import hama
from watchbridge.accounts import AccountNotes, for_the_old_account
from watchbridge.alerts import SENT, UNREACHABLE_ALERT_AFTER, format_span
from watchbridge.app import Runtime
from watchbridge.backoff import doubled
from watchbridge.causes import (
    DELIVERED_TO,
    paused_alert,
    paused_title,
    profile_flowing,
    server_key_alert,
    server_key_unneeded,
    server_key_works,
)
from watchbridge.clocksteps import Step, sent_at
from watchbridge.config import (
    DeliveryConfig,
    service_title,
    services_titled,
    undeliverable,
    unwanted_by_link,
)
from watchbridge.deadletters import retry_dead_letters
from watchbridge.deliver.fence import Fence, as_a_wait, handed_back
from watchbridge.deliver.oncemore import (
    PROBE_FIRST,
    PROBES_FAILED,
    PROBES_KEEP,
    next_probe_at,
    probe_failed,
    probe_words,
)
from watchbridge.deliver.solo import Solo
from watchbridge.downtime import catches_up
from watchbridge.errors import names_profile
from watchbridge.http import ANSWERED, BEFORE_WRITE, RateLimited, Unavailable, changed_answer
from watchbridge.ids import SERVER_OUTAGE_PAUSE, Enricher, Need, Problem
from watchbridge.logs import Repeating
from watchbridge.model import MediaRef, item_aliases, ref_from_dict
from watchbridge.offloop import in_thread, to_the_end
from watchbridge.queuewords import dead_what
from watchbridge.stopping import unless_stopped
from watchbridge.storagefault import of_the_disk
from watchbridge.store import (
    CRASHES_ALONE,
    HELD_PROFILE,
    HELD_TARGET,
    ONCE_MORE_DUE,
    ONCE_MORE_PROBE,
    ONCE_MORE_SPENT,
    RATE_LIMITED,
    RATING_ACTIONS,
    SKIPPED,
    UNKNOWN_OUTCOME,
    Claimed,
    OutboxItem,
    Settlement,
    Store,
    Untold,
    locked_by_another,
)
from watchbridge.zone import clock_time

log = logging.getLogger(__name__)

IDLE_WAKE_SECONDS = 300.0  # rows queued by the CLI (sync, deadletters retry) are seen within 5 min
# While a profile's rows wait for its sign-in to a target, how often the store is asked whether
# a new one came (`watchbridge auth` beside the service counts it there): they go this soon.
SIGN_IN_LOOK_EVERY = 10.0
# The targets a sign-in is made for while the service runs (`watchbridge auth TARGET`, the
# status page's Trakt button), each counted in the store (`Store.resume_after_sign_in`): only
# their holds are looked at that often. Serializd's password is the config's, read at the start,
# as is the Plex server's own token (`Hold.server`).
SIGNED_IN_BESIDE = frozenset({"anilist", "plex", "trakt"})
TARGET_PROBE_MAX = 300.0
# The wall clock set back by more than this (NTP correcting a clock that ran fast) moves the
# waits set by it back as much: they would hold deliveries (and their alerts) that much longer.
CLOCK_STEP_BACK = 60.0
TARGET_PROBE_MIN = 1.0  # the shortest pause of a target that is down
# How often to look for dead letters no alert told of yet (another process's too).
UNTOLD_LOOK_EVERY = 60.0
# While a target delivers, its claims are renewed this often (seconds), so that only a worker
# that stopped running (killed, suspended) loses them to the claim lease (store.CLAIM_LEASE).
CLAIM_RENEW_EVERY = 300.0
# A delivery under way as the service stops gets this long for its answer; then its rows go
# back to the queue as they were (no attempt spent; one whose send may have landed is looked
# for before it is sent again). A slow service, or a 429 waited out inline (up to 15 s), would
# hold the stop until server.shutdown_timeout ran out.
STOP_GRACE = 2.0


class _CutShort(Exception):
    """The service's stop ended a delivery under way (see STOP_GRACE)."""


@dataclass(frozen=True)
class Delivered:
    note: str = ""
    # The sign-in it went through on cannot be renewed and stops working soon: why, what to do.
    sign_in_ending: str = ""
    # False: nothing was written now (found on the service, where an earlier send landed, or
    # nothing there to change). Only a write the service takes shows its writes work again
    # (its reads may work all through an outage of them): see `_wrote`.
    written: bool = True


@dataclass(frozen=True)
class Skipped:
    """Done with nothing sent. Decided here without asking the service (a live status too
    late, not anime), it says nothing about the service or sign-in. `answered`: decided on
    what the service answered just now through the profile's sign-in (it holds a newer
    rating), which proves as a delivery does that the sign-in works and the service answers
    it, so it ends the profile's pause alerts as one does (`sign_in_ending`: as Delivered's)."""

    note: str = ""
    answered: bool = False
    sign_in_ending: str = ""


def skipped_note(outcome: Delivered | Skipped) -> str | None:
    """What a row settled done keeps as its `last_error`: a skip's reason (None: delivered,
    or a skip that gives none)."""
    return f"{SKIPPED}{outcome.note}" if isinstance(outcome, Skipped) and outcome.note else None


def shows_an_answer(outcome: Outcome | None) -> TypeGuard[Delivered | Skipped]:
    """Whether `outcome` shows the service answering the row's profile just now: delivered,
    or skipped on its answer (Skipped.answered)."""
    return isinstance(outcome, Delivered) or (isinstance(outcome, Skipped) and outcome.answered)


def _wrote(row: OutboxItem, outcome: Outcome | None) -> bool:
    """Whether `outcome` shows the service taking `row`'s write, as fires the dead letters of
    its own failures (`DeliveryWorker._once_more`): not a row found there (Delivered.written),
    which proves reads work, not writes. Nor a probe whose send may have landed before (its
    target may not tell a send from a find)."""
    if not isinstance(outcome, Delivered) or not outcome.written:
        return False
    return not (row.once_more == ONCE_MORE_PROBE and row.may_have_landed)


@dataclass(frozen=True)
class Retry:
    """This row failed; try it again later (after `after` seconds if the service said so).
    `service_failed`: the service failed this row's write (a server error, a dropped
    connection), it did not refuse it: as a dead letter, it is queued again by itself once
    the service takes a delivery again (as one a spending Hold ends)."""

    reason: str
    after: float | None = None
    service_failed: bool = False


@dataclass(frozen=True)
class Dead:
    """This row can never succeed as it is. `spends`: False when no try was made now (its
    tries, cut short, were counted as the process stopped)."""

    reason: str
    spends: bool = True


def unreadable_row(row: OutboxItem, target: str, exc: Exception) -> Dead:
    """The dead letter of a row whose stored payload this release cannot read (a field gone,
    or of a type it does not take): no doing of the service nor of the user, so told as the
    bug it is, with what was wrong for the report. Trying again fails the same way."""
    found = f"KeyError {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else None
    found = found or f"{type(exc).__name__}: {exc}"
    return Dead(
        f"an unexpected error in watchbridge, a bug: what it stored of this"
        f" {dead_what(row.action)} for {target} cannot be read ({found}); please report it"
        " (a retry fails the same way)"
    )


@dataclass(frozen=True)
class Hold:
    """The target as a whole cannot take anything now (down, rate-limited, sign-in lost).

    Rows go back without spending an attempt; the target is paused for `after` seconds.
    `alert` names the alert kind to raise, if any. `spends`: the service answered these rows'
    request with an error (a 500), which may be the request's own fault, so they spend an
    attempt and back off as a retry would: a poison batch or an endless outage ends in dead
    letters instead of holding the target forever.
    """

    reason: str
    after: float
    alert: str = ""
    target_wide: bool = True  # False: only this row's profile is affected (e.g. its sign-in)
    spends: bool = False
    sign_in: bool = False  # waits for a sign-in or key: a start with a changed config tries it
    # `after` is the service's own wait (a Retry-After, a rate limit): an alert may say it asks
    # to wait until then. Else it is only when watchbridge looks again.
    asked: bool = False
    # A rate limit: the service is up and asks for fewer requests, which its alert says (no
    # "unreachable": nothing is wrong on the user's side, and it passes by itself).
    limited: bool = False
    # The few words an alert's title gives the cause, where `alert`'s kind would mislead (a
    # Trakt app refused is no "account limit reached"); "": the kind's own words.
    cause: str = ""
    # Of the `sign_in` holds, a media server refusing its own key (the Plex server's token,
    # services.plex.token, the owner's; a Jellyfin or Emby api_key), whoever's rows it holds:
    # the server's name. No profile's sign-in gives that one: a start with the config fixed,
    # or the server taking the key again, tries them (the row's outbox.waits_for_server).
    server: str | None = None


Outcome = Delivered | Skipped | Retry | Dead | Hold


class Target(Protocol):
    """Where outbox rows go: Trakt, Serializd, Plex, AniList."""

    name: str
    batch_size: int

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]: ...

    async def aclose(self) -> None: ...


async def for_the_account(
    accounts: AccountNotes | None,
    service: str,
    profile: str,
    whose: Callable[[], Awaitable[str | None]],
    rows: Sequence[OutboxItem],
    outcomes: dict[int, Outcome],
) -> Sequence[OutboxItem]:
    """`rows` to write once the account they go to (`whose`: its identity, None when the
    service cannot tell) is noted (`accounts.AccountNotes`), less the removals meant for an
    account used before: those are made dead letters, never sent to the new account."""
    if accounts is None:
        return rows
    seen = await whose()
    change = None if seen is None else await accounts.note(service, profile, seen)
    if change is None:
        return rows
    stale = {row.id for row in for_the_old_account(rows)}
    outcomes.update((row_id, Dead(change.not_sent())) for row_id in stale)
    return [row for row in rows if row.id not in stale]


async def per_profile(
    items: Sequence[OutboxItem],
    deliver_profile: Callable[[str, list[OutboxItem], dict[int, Outcome]], Awaitable[None]],
    hold_for: Callable[[Exception, str], Outcome],
    store: Store,
    *,
    live_first: bool = False,
) -> dict[int, Outcome]:
    """Deliver `items` one profile at a time, in the turns `turns` gives them (`live_first`:
    a profile's live scrobbles in a turn of their own, before its backlog). When something
    stops a profile, the rows it already decided keep their outcome (a write the service took
    stays done) and the rest of its rows, in this turn and its later one, get what `hold_for`
    makes of the error, keeping their mark if their send may have landed (see `undecided`)."""
    outcomes: dict[int, Outcome] = {}
    stopped: set[str] = set()
    by_profile: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in items:
        by_profile[item.profile].append(item)
    # Off the loop: a backlog's batch of 200 rows takes milliseconds to put in turns.
    for profile, rows in await asyncio.to_thread(turns, items, live_first):
        if profile in stopped:
            continue
        try:
            await deliver_profile(profile, rows, outcomes)
        except Exception as exc:
            if for_the_supervisor(exc):
                raise
            stopped.add(profile)
            rest = [row for row in by_profile[profile] if row.id not in outcomes]
            wait = as_a_wait(exc, rows[0].target)
            outcomes |= await undecided(store, rest, hold_for(wait, profile))
    return outcomes


def for_the_supervisor(exc: Exception) -> bool:
    """Whether `exc` is a fault of the disk or the database file (full, read-only, damaged),
    neither the service's answer nor a bug: the delivery task stops, its supervisor tells of
    the fault as such (no traceback, no row called a bug), and its restart takes the rows
    back as they were marked, so a send that landed before the write failed is looked for,
    never made twice. Not another process's lock: every target waits that out (as_a_wait)."""
    return of_the_disk(exc) and not locked_by_another(exc)


def turns(items: Sequence[OutboxItem], live_first: bool) -> list[tuple[str, list[OutboxItem]]]:
    """The order a batch is delivered in, as (profile, rows) turns. Pure.

    A profile with a webhook's row (someone watching now) goes before those with only a
    link's, then the fewest rows first: one person's first link run fills the batches that
    another's live scrobble is claimed into (webhooks' rows first, `Store.claim`); their rows
    are independent, so the scrobble need not wait behind it. With `live_first`, each
    profile's live scrobbles (`_goes_live`) go in a turn of their own before every backlog,
    its own too: in one turn, its backlog's lookups (an id search each, paced at Trakt's
    reads) would come first, and its plays would make a live stop a history add. Not a live
    row naming an item another row of the batch names (by any id: a link's play of the same
    viewing, queued under another ordering key): it stays in that row's turn, so it never
    overtakes an earlier row of its item, and the turn sends the one play once."""
    by_profile: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in items:
        by_profile[item.profile].append(item)
    live: list[tuple[str, list[OutboxItem]]] = []
    rest: list[tuple[str, list[OutboxItem]]] = []
    for profile, rows in by_profile.items():
        ahead = _live_alone(rows) if live_first else []
        if ahead:
            live.append((profile, ahead))
        early = {row.id for row in ahead}
        behind = [row for row in rows if row.id not in early]
        if behind:
            rest.append((profile, behind))
    return sorted(live, key=lambda turn: len(turn[1])) + sorted(
        rest, key=lambda turn: _turn(turn[1])
    )


def _turn(rows: Sequence[OutboxItem]) -> tuple[bool, int]:
    """A profile's turn in a batch: one with a webhook's row before those with only a link's,
    then the fewest rows first (see `turns`)."""
    return all("link" in row.payload for row in rows), len(rows)


def _goes_live(row: OutboxItem) -> bool:
    """Whether `row` is a live scrobble: a webhook's live status, or the end of a viewing a
    webhook followed. Either is worth sending only within delivery.late_after."""
    if "link" in row.payload:
        return False
    return row.action == "watching" or (row.action == "play" and bool(row.payload.get("live")))


def _live_alone(rows: Sequence[OutboxItem]) -> list[OutboxItem]:
    """The live scrobbles of one profile's rows that name no item another of its rows names
    (ratings aside: they take turns apart from an item's plays, see store.ordering_key).
    A start goes ahead only if no live row stays behind: Trakt shows one item as watching,
    and a stop of another item sent after the start would end it (in one turn,
    deliver.trakt.starts_last sends the start last)."""
    names = {row.id: _item_names(row) for row in rows if row.action not in RATING_ACTIONS}
    # How many rows name each key: not each row compared with every other (40,000 compares
    # in a backlog's batch of 200 live rows).
    naming = Counter(name for row_names in names.values() for name in row_names)
    alone = []
    behind = False
    for row in rows:
        if not _goes_live(row):
            continue
        mine = names.get(row.id, set())
        if mine and all(naming[name] == 1 for name in mine):
            alone.append(row)
        else:
            behind = True
    return [row for row in alone if not (behind and is_start(row))]


def is_start(row: OutboxItem) -> bool:
    """Whether `row` is a live status that makes Trakt show its item as watching."""
    return row.action == "watching" and row.payload.get("scrobble_action", "start") == "start"


def _item_names(row: OutboxItem) -> set[str]:
    """Every key the row's item may be known by (model.item_aliases); none for a row whose
    item this release cannot read (its target tells why)."""
    try:
        return set(item_aliases(ref_from_dict(row.payload["item"])))
    except (KeyError, TypeError, ValueError, AttributeError):
        return set()


async def undecided(
    store: Store, rows: Sequence[OutboxItem], outcome: Outcome
) -> dict[int, Outcome]:
    """`outcome` for rows an error left undecided; one whose send may have landed keeps that
    mark. The store says which: this attempt may have marked a row and sent it before the
    error (a history add that landed, then a store write that failed)."""
    marked = await asyncio.to_thread(store.marked, [row.id for row in rows])
    return {row.id: unsure(outcome) if row.id in marked else outcome for row in rows}


async def enriched(
    enricher: Enricher | None,
    item: MediaRef,
    need: Need,
    source: str | None,
    *,
    credentials_hold: float,
    unmatched_retry: float,
    why: str,
    from_server: str | None = None,
) -> tuple[MediaRef, Outcome | None]:
    """`item` with the ids `need` asks for, found through the enricher (the media server the
    play came from, then Trakt); or what the row should do while they cannot be known: hold on
    a refused key (one alert, no attempts spent), retry soon after an outage, and otherwise wait
    as unmatched with the enricher's actionable reason (`why`: what the target keys items by)."""
    if enricher is None or need.met(item):
        return item, None
    asked = enricher.asked
    found = await enricher.enrich(item, need, source, from_server=from_server)
    if found.problem is None:
        return found.item, None
    outcome = waiting_on(found.problem, credentials_hold, unmatched_retry, why)
    if is_unmatched(outcome):
        outcome = replace(outcome, after=enricher.retry_after(asked, unmatched_retry))
    return found.item, outcome


def is_unmatched(outcome: Outcome) -> TypeGuard[Retry]:
    """Whether the row waits for ids a service can use (`watchbridge unmatched` lists it)."""
    return isinstance(outcome, Retry) and outcome.reason.startswith("unmatched:")


# A HAMA play whose numbers place nothing waits without end (spending no attempts: no dead
# letter, no alert; `watchbridge unmatched` lists it with the fix). Read again from Plex hourly
# on its first day (the user refreshes metadata once told), daily after; a play that cannot be
# read again is only looked at daily (services.plex may be set meanwhile).
UNPLACED_REREAD = 3600.0
UNPLACED_WAIT = 86400.0


async def unplaced_episode(
    enricher: Enricher | None, row: OutboxItem, item: MediaRef, now: float
) -> tuple[MediaRef, Outcome | None]:
    """A HAMA episode whose numbers place nothing (`hama.unplaced`: its show's mode numbers
    them in a way not known, or its guid and its show's disagree): sent by those numbers, it
    would be a play of another episode. Where services.plex can read it again, the episode
    as Plex holds it now (after the user's refresh or new match) goes out in its place once
    it is placed; until then the row waits as unmatched, with why and what to do, for good
    rather than as a dead letter and its alert (a retry cannot place it; the user is told by
    the listing). Its live status is skipped (it would never be sent). Any other item comes
    back as it is, with no outcome: a `tvdb-` episode, say, goes by its numbers as before."""
    why = hama.unplaced(item)
    if why is None:
        return item, None
    if row.action == "watching":
        return item, Skipped(f"not shown as watching: {why.reason}")
    source, server = row.payload.get("source"), row.payload.get("server")
    now_held = None if enricher is None else await enricher.plex_now(item, source, server)
    if isinstance(now_held, Problem):  # Plex down or refusing: asked again soon, no try spent
        wait = now_held.retry_after or SERVER_OUTAGE_PAUSE
        refused = now_held.refused_by
        return item, Hold(
            now_held.message, wait, "", False, sign_in=now_held.credentials, server=refused
        )
    if now_held is not None:
        again = hama.unplaced(now_held)
        if again is None:
            return now_held, None
        why = again
        young = now - row.created_at < UNPLACED_WAIT
        after = UNPLACED_REREAD if young else UNPLACED_WAIT
        then = "it goes out once Plex's metadata places it (read again hourly, daily after a day)"
    else:
        after = UNPLACED_WAIT
        then = (
            "this play cannot be read again from Plex (services.plex not set, or played on "
            "another server), so only the plays after the fix go out"
        )
    told = f"unmatched: {why.reason}; to fix: {hama.FIXES[why.code]}; {then}"
    return item, Hold(told, after, "", target_wide=False)


def waiting_on(
    problem: Problem, credentials_hold: float, unmatched_retry: float, why: str
) -> Outcome:
    """What a row does while the enricher's `problem` keeps its ids unknown (see `enriched`)."""
    if problem.credentials:  # the worker alerts once per server, naming whose rows wait
        server = problem.refused_by
        return Hold(problem.message, credentials_hold, "", False, sign_in=True, server=server)
    # The media server is down, or Trakt's id search (Trakt's outage alert tells, or the
    # enricher's own): no attempt spent, nor delivery.max_age, however long it lasts.
    if problem.outage or problem.search_down:
        return Hold(problem.message, problem.retry_after or SERVER_OUTAGE_PAUSE, "", False)
    if problem.transient:  # Trakt's id search failing (a 500), or a server on this item
        return Retry(problem.message, problem.retry_after)
    if problem.own_id_conflict:  # its fix is in the episode's metadata, whatever the target
        return Retry(f"unmatched: {problem.message}", after=unmatched_retry)
    return Retry(f"unmatched: {problem.message} ({why})", after=unmatched_retry)


SERVICE_ROLE = "service"


ENDING = ":ending"  # the `credentials` key of a sign-in that works but cannot be renewed
# The alerts a profile's held deliveries raise (see Hold.alert).
PROFILE_ALERTS = ("credentials", "account_limit", "service_unreachable")


def for_a_sign_in(target: str, hold: Hold) -> bool:
    """Whether `hold` of a row for `target` waits for the profile's own sign-in there (its
    credentials alert), which a new sign-in made beside the service lifts (SIGNED_IN_BESIDE):
    not a lockout's, a rate limit's, an outage's, a Serializd password's, nor a media server's
    own key's (Hold.server: a config change at the next start, or the server taking it
    again, tries those)."""
    return (
        hold.sign_in
        and hold.server is None
        and held_as(hold) == HELD_PROFILE
        and target in SIGNED_IN_BESIDE
    )


def signed_in_again(
    held: Mapping[tuple[str, str], str | None], kept: Mapping[tuple[str, str], str | None]
) -> list[tuple[str, str]]:
    """The (target, profile) sign-in holds to lift: the store's sign-in mark (`kept`) is no
    longer the one their last try went with (`held`), so a sign-in came since."""
    return sorted(pair for pair, mark in held.items() if pair in kept and kept[pair] != mark)


def held_as(hold: Hold) -> str | None:
    """What a row `hold` keeps waiting is held by, as /metrics tells it (outbox.held): the
    target as a whole, or the profile's deliveries to it for what its pause alert tells of.
    None for a hold of the row alone (its play's media server down, ids not read yet)."""
    if hold.target_wide:
        return HELD_TARGET
    return HELD_PROFILE if hold.alert in PROFILE_ALERTS else None


def _dead_letter_line(row: OutboxItem) -> str:
    """A dead letter as its alert lists it: its title first, naming the profile once (a
    reason may name it: "profile kid is no longer in the config"). A reason stored by an
    earlier release heads what a service said with its config name ("trakt: ..."): titled."""
    told = services_titled(_told(row.last_error or "gave up"))
    whose = "" if names_profile(row.profile, told) else f" for profile {row.profile}"
    again = f" ({row.discarded_before()})" if row.discarded_before() else ""
    if row.once_more == ONCE_MORE_SPENT:
        again += " (it gave up again after going once more by itself: it stays a dead letter)"
    return f"{row.describe()}: {dead_what(row.action)}{whose} (#{row.id}): {told}{again}"


def _told(reason: str) -> str:
    """A row's reason as an alert tells it: without our mark of a send that may have landed."""
    return reason.removeprefix(UNKNOWN_OUTCOME).removeprefix(": ")


def unsure(outcome: Outcome) -> Outcome:
    """`outcome` for a row whose last send may have landed: anything but success keeps that
    mark, so the next send (or `deadletters retry`) checks the target first."""
    if isinstance(outcome, Hold | Retry | Dead) and not outcome.reason.startswith(UNKNOWN_OUTCOME):
        return replace(outcome, reason=f"{UNKNOWN_OUTCOME}: {outcome.reason}")
    return outcome


def crashed(target: str, exc: BaseException) -> Retry:
    """The retry of rows a target's own bug failed (no service answered it), told as the
    person reading the status page needs it: whose fault, and that the log has the rest."""
    return Retry(
        f"watchbridge failed while sending to {service_title(target)} (a bug: "
        f"{type(exc).__name__}); it tries again later, and its log says what to report"
    )


def service_hold(exc: Unavailable, retry_after: float) -> Hold:
    """The hold for a service that cannot take deliveries now. A write it answered with a
    server error (possibly after writing) may be the request's own fault: its rows spend."""
    return Hold(
        exc.message,
        exc.retry_after or retry_after,
        spends=exc.answered and exc.outcome_unknown,
        asked=exc.retry_after is not None,
        limited=isinstance(exc, RateLimited),
    )


# A service answering in a shape this release cannot read: its rows are looked at again hourly.
CHANGED_HOLD = 3600.0


def changed_hold(service: str, what: str, then: str) -> Hold:
    """The hold of one profile's rows while `service` (as a user knows it) answers `what` in a
    shape this release cannot read, and `then` is what waits. No fault of the rows: spending
    their tries would turn a lasting change into dead letters, each to be sent again by hand
    after the update. They wait without spending (a `service_unreachable` alert if it lasts)
    and go by themselves once it reads again."""
    reason = changed_answer(service, what, then)
    return Hold(reason, CHANGED_HOLD, "service_unreachable", target_wide=False)


def rate_limit_hold(wait: float, now: float) -> Hold:
    """The hold of one profile's rows while the service rate-limits its account for `wait`
    seconds: told (a `service_unreachable` alert) once it lasts, or is known to last, as long
    as an outage would before its alert (the worker adds up limits in a row)."""
    until = datetime.fromtimestamp(now + wait, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Hold(
        f"{RATE_LIMITED}{until}",
        wait,
        "service_unreachable",
        target_wide=False,
        asked=True,
        limited=True,
    )


def held_for(seconds: float) -> str:
    """How long deliveries have been held, in words a reminder days into an outage reads at
    a glance: 45 minutes, 30 hours, 5 days and 8 hours."""
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours"
    days, hours = divmod(hours, 24)
    return f"{days} days" + (f" and {hours} hour{'s' * (hours != 1)}" if hours else "")


def unreachable_alert(
    target: str,
    reason: str,
    since: float,
    now: float,
    until: float,
    spends: bool = False,
    asked: bool = False,
    limited: bool = False,
    named_for: Sequence[str] = (),
) -> str | None:
    """The `service_unreachable` alert's text for a target held since `since` and known to be
    held until `until` (`now` when nothing more is known), or None while it is not due: once
    deliveries have been held UNREACHABLE_ALERT_AFTER, or as soon as a hold known to last that
    long begins (a long Retry-After), saying until when. `asked`: `until` is what the service
    asked for (Hold.asked), which a reminder tells; watchbridge's own pace of looking again is
    no word of the service's. `spends`: the service answers writes with errors (Hold.spends),
    so they give up in time, and it says so. `limited`: a rate limit (Hold.limited), told as
    the service limiting requests, which passes by itself. `named_for`: the other targets
    whose plays may wait for its id search (Trakt's, for Serializd and AniList), told too."""
    if max(now, until) - since < UNREACHABLE_ALERT_AFTER:
        return None
    name = service_title(target)
    at = clock_time(until, now, zone=True)
    reason = reason.removeprefix(f"{name}: ")  # the text names it first already
    # A media server's lookups share its outage's alert (causes.outage_key): told here too.
    also = f" (and plays that need {name} to name their show)" if target in DELIVERED_TO else ""
    if named_for and not limited:  # they wait without giving up (ids.search_failed)
        others = " and ".join(service_title(other) for other in named_for)
        also = f" (and those for {others} that need its id search to name their show)"
    if limited:
        if now - since >= UNREACHABLE_ALERT_AFTER:
            text = f"{name} has been limiting watchbridge's requests for {held_for(now - since)}"
            text += f", until {at} as it asks." if until > now and asked else "."
        else:
            wait = format_span(until - now)
            text = f"{name} is limiting watchbridge's requests until {at} (in {wait})."
        text += (
            f" Your plays and ratings for {name}{also} are held and go out by themselves when"
            " the limit passes. Nothing is lost, and there is nothing for you to do."
        )
        return f"{text} {_spending()}." if spends else text
    # What it means for the household first, a phone's lines; the service's answer after.
    waiting = f"Plays and ratings for {name}{also}"
    if now - since >= UNREACHABLE_ALERT_AFTER:
        lead = f"{waiting} are waiting since {clock_time(since, now, zone=True)}"
        lead += f" ({held_for(now - since)})"
        answer = f"{name}: {reason}."
        if until > now and asked:
            answer += f" It asks to wait until {at}."
    else:
        lead = f"{waiting} wait until {at} (in {format_span(until - now)})"
        lead += f", as {name} asks" if asked else ""
        answer = f"{name}: {reason}."
    lead += f"; they go by themselves when {name} answers"
    if spends:  # some may give up first: the lead must not promise every one goes
        lead += " (any it keeps failing for about 14 hours are set aside, and sent once more then)"
        answer += f" {_spending()}."
    return f"{lead}. Nothing to do unless it lasts.\n\n{answer}"


def _spending() -> str:
    """What an alert says of a service answering writes with server errors (Hold.spends)."""
    return (
        "It answers writes with server errors, which may be their own fault: those it keeps"
        " failing spend their tries and become dead letters after delivery.max_attempts (about"
        " 14 hours with the defaults), which go again by themselves, once, when it takes a"
        " delivery again"
    )


@dataclass
class TargetHold:
    """A target whose deliveries are held as a whole (down, rate-limited): until when and why,
    since when the outage lasts, how many holds in a row (probes grow rarer), and whether the
    log has told of it being a long one."""

    until: float
    reason: str
    since: float
    streak: int = 0
    told: bool = False
    spends: bool = False  # its last hold spent tries (the service answers writes with errors)
    limited: bool = False  # its last hold is a rate limit (Hold.limited)


PROFILE_HOLDS = "profile-hold"  # cache namespace: ProfileHold, by alert key `target:profile`
# How long a ProfileHold is kept in the store after it was last written: each new hold of its
# rows (hourly at least, while they wait) writes it again.
PROFILE_HOLD_KEEP = 30 * 86400.0


@dataclass
class ProfileHold:
    """A profile's rows a `service_unreachable` hold keeps (a rate limit, its sign-in host
    down, answers watchbridge cannot read): since when, and which rows it held. It lasts while
    any of them still waits, whatever other rows of the profile go through meanwhile. Kept in
    the store (PROFILE_HOLDS): a restart while it lasts neither ends its alert at the
    profile's next delivery nor counts its time anew. The store's is the hold: the service
    and a `watchbridge sync` beside it each add and take out their rows there in one
    transaction (`held_in_store`, `released_in_store`), never writing over the other's."""

    since: float
    rows: set[int]

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "rows": sorted(self.rows)}

    @classmethod
    def from_json(cls, value: Any) -> ProfileHold | None:
        """The hold as kept; None for a value this release cannot read (it is forgotten)."""
        if not isinstance(value, dict):
            return None
        since, rows = value.get("since"), value.get("rows")
        if not isinstance(since, int | float) or not isinstance(rows, list):
            return None
        return cls(float(since), {row for row in rows if isinstance(row, int)})


def _waiting(store: Store, value: Any) -> ProfileHold | None:
    """The hold kept as `value` while any of its rows still waits; None once none does."""
    hold = ProfileHold.from_json(value)
    if hold is None or not store.pending_among(sorted(hold.rows)):
        return None
    return hold


def held_in_store(
    store: Store, key: str, rows: set[int], now: float, left: frozenset[int] = frozenset()
) -> ProfileHold:
    """The profile hold `key` with `rows` added and `left` taken out, in the store and in one
    transaction: to the hold kept there while any of its rows still waits (whichever process
    held them), else to a new hold from `now`. `left`: rows of the hold that left it in the
    pass that holds `rows` (gone out, failed otherwise); they waited when the pass began, so
    the pause never ended for a whole pass and goes on from its first start, not from `now`."""

    def change(value: Any) -> tuple[Any, float, ProfileHold]:
        hold = ProfileHold.from_json(value)
        if hold is None or not (hold.rows & left or store.pending_among(sorted(hold.rows))):
            hold = ProfileHold(now, set())
        hold.rows = (hold.rows - left) | rows
        return hold.to_json(), PROFILE_HOLD_KEEP, hold

    held: ProfileHold = store.cache_update(PROFILE_HOLDS, key, now, change, renew=True)
    return held


def released_in_store(store: Store, key: str, rows: set[int], now: float) -> ProfileHold | None:
    """The profile hold `key` without `rows` (held no more), in the store and in one
    transaction; None, and forgotten, once none of its rows waits."""

    def change(value: Any) -> tuple[Any, float, ProfileHold | None]:
        hold = _waiting(store, value)
        if hold is not None:
            hold.rows -= rows
        if hold is None or not store.pending_among(sorted(hold.rows)):
            return None, 0.0, None
        return hold.to_json(), PROFILE_HOLD_KEEP, hold

    released: ProfileHold | None = store.cache_update(PROFILE_HOLDS, key, now, change)
    return released


def kept_in_store(store: Store, key: str, now: float) -> ProfileHold | None:
    """The profile hold `key` while any of its rows still waits; None, and forgotten, once
    none does. A hold going on is only read: no write at each delivery of the profile."""
    hit, value = store.cache_get(PROFILE_HOLDS, key, now)
    if not hit:
        return None
    if (hold := _waiting(store, value)) is not None:
        return hold

    def change(value: Any) -> tuple[Any, float, ProfileHold | None]:
        hold = _waiting(store, value)  # another process may have held rows since the read
        return (None, 0.0, None) if hold is None else (hold.to_json(), PROFILE_HOLD_KEEP, hold)

    kept: ProfileHold | None = store.cache_update(PROFILE_HOLDS, key, now, change)
    return kept


def moved_in_store(
    store: Store, key: str, since: float, step: float, now: float
) -> ProfileHold | None:
    """The profile hold `key` begun `step` seconds later (the clock stepped that far: back
    when negative), if it still begins at `since`, as this process knew it: else another
    process moved it already (both saw the clock step), or a new hold began."""

    def change(value: Any) -> tuple[Any, float, ProfileHold | None]:
        hold = ProfileHold.from_json(value)
        if hold is None:
            return None, 0.0, None
        if hold.since == since:
            hold.since += step
        return hold.to_json(), PROFILE_HOLD_KEEP, hold

    moved: ProfileHold | None = store.cache_update(PROFILE_HOLDS, key, now, change)
    return moved


def restamped(runtime: Runtime, step: Step) -> int:
    """Move the stamps of `step` (Store.restamp) and mark it handled as soon as that is
    committed, in one go: a failure or a cancelled wait after it cannot move them twice (a
    second restamp moves the failing_since and sessions' times still within the frame).
    How many plays moved."""
    moved = runtime.store.restamp(step)
    runtime.clock_watch.handled(step)
    return moved


LIMITED_ROWS = "account-limit"  # cache namespace: _LimitedRows, by alert key `target:profile`


class _LimitedRows:
    """The rows an account limit holds, kept in the store (across restarts): the limit is over
    when they have gone out, not when any other row did (a play does not empty a full ratings
    list)."""

    NAMESPACE, KEEP = LIMITED_ROWS, 30 * 86400.0

    def __init__(self, store: Store, key: str) -> None:
        self.store, self.key = store, key

    def add(self, ids: set[int], now: float) -> None:
        """Remember these rows beside those still waiting (the list stays bounded by them)."""
        rows = self.store.pending_among(self._known(now)) | ids
        self.store.cache_put(self.NAMESPACE, self.key, sorted(rows), now, self.KEEP)

    def still_waiting(self, now: float) -> bool:
        """Whether any of the rows is still waiting; forgets those that are not."""
        known = self._known(now)
        waiting = self.store.pending_among(known)
        if waiting != set(known):  # a write only when a row went out
            self.store.cache_put(self.NAMESPACE, self.key, sorted(waiting), now, self.KEEP)
        return bool(waiting)

    def _known(self, now: float) -> list[int]:
        _, known = self.store.cache_get(self.NAMESPACE, self.key, now)
        return list(known or [])


DEAD_LETTERS_LISTED = 5  # the most an alert names; it counts the rest


def dead_letter_alert(target: str, untold: Untold) -> tuple[str, str]:
    """The title and text of the alert telling of `target`'s dead letters `untold`: what did
    not reach the service (a lone one by its title) and what to do, then each one's reason."""
    count, rows = untold.count, untold.latest[-DEAD_LETTERS_LISTED:]
    name = service_title(target)
    one = count == 1
    it, them = ("it", "itself") if one else ("them", "themselves")
    if one and rows:
        row = rows[-1]
        what = f"a {dead_what(row.action)}"
        lead = f"{row.describe()}: the {dead_what(row.action)} for profile {row.profile}"
    else:
        # Named by what they were to do when the alert lists them all ("plays and ratings").
        kinds = sorted({dead_what(row.action, many=True) for row in rows})
        named = " and ".join(kinds) if count == len(rows) and len(kinds) <= 2 else "changes"
        what = f"{count} {named}" if count > 1 else "a change"
        lead = what[0].upper() + what[1:]
    lead += f" did not reach {name}: watchbridge gave up sending {it}."
    # What to do next: a phone shows the first two lines or so.
    if untold.once_more and untold.once_more == count:
        lead += (
            f" {'It goes' if one else 'They go'} once more by {them} when {name} takes a play"
            f" or rating again: nothing to do unless {it} {'gives' if one else 'give'} up again."
        )
    else:
        lead += (
            f" Send {it} again with {_retry_command(count, rows)};"
            f" `watchbridge deadletters list` shows {it}."
        )
    lines = [lead, ""]
    if count > len(rows):
        lines.append(f"... and {count - len(rows)} more, the latest:")
    lines.extend(_dead_letter_line(row) for row in rows)
    if untold.once_more:
        which = "It" if one else f"{untold.once_more} of them"
        lines.append(
            f"{which} failed on {name}'s own server errors or dropped connections, so"
            f" {'it goes' if untold.once_more == 1 else 'they go'} once more by"
            f" {'itself' if untold.once_more == 1 else 'themselves'} when {name} takes a"
            f" play or rating again (a new play, a link's run; {probe_words(name)}); one that"
            " gives up again stays a dead letter."
        )
    return f"watchbridge: gave up sending {what} to {name}", "\n".join(lines)


def _retry_command(count: int, listed: Sequence[OutboxItem]) -> str:
    """The command that queues the alert's `count` dead letters again, as it can be pasted:
    by their ids while the alert lists them all, else every dead letter (the rest unnamed)."""
    if count > len(listed):
        return "`watchbridge deadletters retry --all` (every dead letter)"
    return f"`watchbridge deadletters retry {' '.join(str(row.id) for row in listed)}`"


def ending_title(target: str, profile: str) -> str:
    """The title of the alert that says a profile's sign-in works but cannot be renewed."""
    return f"watchbridge: {service_title(target)} sign-in of profile {profile} ends soon"


def _gave_up(attempts: int, reason: str, failing_for: float | None = None) -> str:
    """A dead letter's reason (`failing_for`: it gave up by delivery.max_age, after failing
    this long); a row whose last send may have landed keeps that mark in front, so
    `watchbridge deadletters retry` checks before it sends."""
    marked = reason.startswith(UNKNOWN_OUTCOME)
    if marked:
        reason = reason.removeprefix(UNKNOWN_OUTCOME).removeprefix(": ")
    if failing_for is None:
        given_up = f"gave up after {attempts} attempts: {reason}"
    else:
        span = format_span(failing_for)
        given_up = (
            f"gave up after failing for {span}, past delivery.max_age ({attempts} attempts):"
            f" {reason}"
        )
    return f"{UNKNOWN_OUTCOME}: {given_up}" if marked else given_up


def _gave_up_interrupted(item: OutboxItem) -> Dead:
    """The dead letter of a row whose last try a crash cut short, at its last attempt: only a
    crash while it went alone spends one (store.CRASHES_ALONE), so it may be what takes the
    process down. Past the crashes of its batches, it took it down at each try."""
    if item.crashes >= item.attempts + CRASHES_ALONE:
        why = "watchbridge went down each time it was sent alone"
    else:
        why = "watchbridge went down as it was being sent, the last time alone"
    times = "once" if item.crashes == 1 else f"{item.crashes} times"
    last = (
        f"{why} ({times} in all: killed or crashed, out of memory?), so it may be what takes"
        " the service down; the last cut short by the process stopping"
    )
    if item.may_have_landed:
        last = f"{UNKNOWN_OUTCOME}: {last}"
    return Dead(_gave_up(item.attempts, last), spends=False)


def _not_allowed(why: str) -> str:
    """The reason of a row the config no longer allows (`why`), saying what to do with it."""
    return (
        f"{why}: `watchbridge deadletters retry` sends these once it is again;"
        " `watchbridge deadletters discard` drops them"
    )


def _log_given_up(target: str, profile: str, rows: int, why: str) -> None:
    log.warning(
        "deliveries the config no longer allows given up",
        extra={"target": target, "profile": profile, "rows": rows, "reason": why},
    )


def at_last_try(item: OutboxItem, config: DeliveryConfig, now: float) -> bool:
    """Whether a failure of this try makes the row a dead letter: its last attempt
    (`delivery.max_attempts`), or it has kept failing past `delivery.max_age`."""
    if item.attempts + 1 >= config.max_attempts:
        return True
    since = item.failing_since
    return since is not None and now - since > config.max_age


Jitter = Callable[[float, float], float]  # a number between its two (random.uniform)


def backoff(
    attempts: int,
    config: DeliveryConfig,
    retry_after: float | None,
    jitter: Jitter = random.uniform,
) -> float:
    """Seconds until the next try: exponential from `retry_after`, jittered, capped at
    `max_backoff` (the service's own Retry-After may ask for longer)."""
    base = doubled(config.retry_after, attempts - 1)
    # Jittered below the cap too: rows that reach it together must not all come back at once.
    cap = config.max_backoff * jitter(0.75, 1.0)
    wait = min(cap, float(base * jitter(0.75, 1.25)))
    return max(wait, retry_after or 0.0)


class DeliveryWorker:
    """A background task (see app.BackgroundTask) delivering outbox rows to targets."""

    name = "delivery"

    def __init__(
        self,
        make_targets: Callable[[Runtime], Sequence[Target]],
        config: DeliveryConfig,
        role: str = SERVICE_ROLE,
        idle_wake: float = IDLE_WAKE_SECONDS,
        judge_config: bool | None = None,
        jitter: Jitter = random.uniform,
        sign_in_look: float = SIGN_IN_LOOK_EVERY,
    ) -> None:
        self.make_targets = make_targets
        self.jitter = jitter  # of retry waits (`backoff`); a test's may be none
        self.idle_wake = idle_wake
        self.sign_in_look = sign_in_look
        self.targets: dict[str, Target] = {}
        self.config = config
        self._wakes: dict[str, asyncio.Event] = {}  # per target loop (see `_target_loop`)
        self._stop: asyncio.Event | None = None  # the service's (see `run`); none for a CLI run
        self._telling = asyncio.Lock()  # dead-letter alerts, whichever loop finds them
        # A row a crash may be due to goes alone in this process: its target loops wait.
        self._solo = Solo()
        # The role says whose claims a restart may take back: only one service runs per
        # database, but a `watchbridge sync` (role "cli") may be delivering beside it.
        self.worker_id = f"{role}-{uuid.uuid4().hex[:8]}"
        # The service's config, as it starts, says what the rows queued so far may still go
        # to. Not a CLI run's while a service runs (it may use another config file), nor
        # later: a sync run may queue rows under a config the service has not loaded yet.
        # With no service running (syncs from cron only), the CLI run's config is the one.
        self._judge_config = role == SERVICE_ROLE if judge_config is None else judge_config
        self.holds: dict[str, TargetHold] = {}  # kept after `until` to the next delivery
        # "target:profile" -> the rows its rate limit (or the like) holds, and since when: told
        # once it has lasted as long as an outage would before its alert. As the store kept it
        # when this worker last wrote or read it there (the store's is the hold).
        self._paused: dict[str, ProfileHold] = {}
        self._paused_restored = False  # read back from the store once, before any pass
        # (target, profile) whose rows wait for its sign-in (`for_a_sign_in`) -> the store's
        # sign-in mark their last try went with: one since lifts them (`_lift_signed_in`).
        self._sign_in_holds: dict[tuple[str, str], str | None] = {}
        # Targets with rows waiting for a media server's own key (Hold.server): the server
        # taking it again (a link's read, an id lookup, here or in another process) lifts them
        # in the store (`Store.lift_server_holds`), which the target's loop looks at as often.
        self._server_holds: set[str] = set()
        # A target down for weeks is probed every 5 minutes, a lost sign-in's rows come back
        # every 15: the log tells each once, then hourly, and when it is over.
        self._held_log = Repeating(log)
        # The latest time the clock said (at first, the service's last note that it was
        # alive: a clock set back across a restart): a step back is seen.
        self._latest_now: float | None = None
        self._restamping = asyncio.Lock()  # one target loop moves the stamps of a step
        # "target:profile" -> (its hold's start as this process knew it when the clock stepped,
        # how far to move it): moves decided and not yet in the store, tried until they are.
        self._owed_moves: dict[str, tuple[float, float]] = {}
        # Rows dated ahead of the clock are looked for at the first pass and after each step:
        # only an earlier process's stamps (its clock ahead, set back since) can be.
        self._ahead_looked = False
        self.claim_renew_every = CLAIM_RENEW_EVERY
        # When to look for dead letters no alert told of (any process's): at once at start.
        self._look_for_untold_at = 0.0
        # Per target, when to look whether a probe of its dead letters waiting to go once
        # more is due (`_probe_once_more`): at once at start, and when rows die.
        self._probe_look_at: dict[str, float] = {}
        # Per target, its dead letters that went once more alone (probes through) since its
        # dead-letter alert was last resolved: its "Resolved" counts them.
        self._alone: dict[str, int] = {}
        # Targets none of whose dead letters waits to go once more, their count of failed
        # probes seen at 0 since (`_none_waits`).
        self._probes_cleared: set[str] = set()
        # Per target, its `once_more_latest` when none of its dead letters waiting to go once
        # more could go (this config no longer delivers them: a profile taken out). They are
        # not looked through again (in a write transaction, at every idle wake) until that
        # changes: one more dies, or a probe fails. The config is read at start only; a clock
        # set back may date a new one earlier: forgotten then.
        self._none_can_go: dict[str, float] = {}

    def notify(self) -> None:
        """New rows were queued: deliver them now rather than at the next timer."""
        for wake in self._wakes.values():
            wake.set()

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        self.targets = {t.name: t for t in self.make_targets(runtime)}
        self._stop = stop
        try:
            await self._loop(runtime, stop)
            if stop.is_set():  # deliveries it cut short (STOP_GRACE) left their claims
                await self._release_claims(runtime)
        except asyncio.CancelledError:
            await self._release_claims(runtime)
            raise
        except Exception as exc:
            # The disk failed a write (for_the_supervisor): no crash of the process, nor the
            # rows' fault. Their claims go back now as at a stop, no try spent; the restart's
            # release would count a crash and spend a lone row's try at every such fault.
            if of_the_disk(exc):
                await self._release_claims(runtime)
            raise
        finally:
            for target in self.targets.values():
                await target.aclose()

    async def _release_claims(self, runtime: Runtime) -> None:
        """Stopped (a shutdown) mid-delivery: the rows go back as they were, their marks of a
        send that may have landed kept, no attempt spent. In a thread, waited for to its end
        (the store closes after this run): another process may hold the database for
        seconds, and the loop (the stop, webhooks) must not wait for it."""
        releasing = in_thread(
            runtime.store.release_claims,
            runtime.clock(),
            self.worker_id,
            False,
            self.config.retry_after,
        )
        with contextlib.suppress(sqlite3.Error, OSError):
            await to_the_end(releasing)

    async def _loop(self, runtime: Runtime, stop: asyncio.Event) -> None:
        store = runtime.store
        released = 0
        # "worker-": claims of a service that ran a version before claims had roles.
        for claimer in (f"{SERVICE_ROLE}-", "worker-"):
            released += await asyncio.to_thread(
                store.release_claims, runtime.clock(), claimer, True, self.config.retry_after
            )
        if released:
            log.info("resuming deliveries claimed before a restart", extra={"rows": released})
        fingerprint = await asyncio.to_thread(runtime.config.delivery_fingerprint)
        moved = await asyncio.to_thread(store.due_after_config_change, fingerprint, runtime.clock())
        if moved:
            log.info("the config changed: waiting deliveries are tried now", extra={"rows": moved})
        await self._judge_queued(runtime)
        await self._restore_profile_holds(runtime)
        self._wakes = {name: asyncio.Event() for name in self.targets}
        # One loop crashing (a locked database) stops the others before `run` closes the
        # targets they use: the supervisor starts them all again, told what went wrong.
        try:
            async with asyncio.TaskGroup() as loops:
                for name in self.targets:
                    loops.create_task(self._target_loop(runtime, name, stop))
                if not self.targets:
                    loops.create_task(self._dead_letters_loop(runtime, stop))
        except ExceptionGroup as crashed:
            raise crashed.exceptions[0] from None

    async def _dead_letters_loop(self, runtime: Runtime, stop: asyncio.Event) -> None:
        """Without any target (the last service removed from the config, its rows given up at
        the start), no pass tells of dead letters: tell of them, and of their handling, here."""
        while not stop.is_set():
            async with self._telling:
                await self._tell_dead_letters(runtime)
                await self._server_keys_unneeded(runtime)
            await self._sleep(asyncio.Event(), UNTOLD_LOOK_EVERY, stop)

    async def _target_loop(self, runtime: Runtime, name: str, stop: asyncio.Event) -> None:
        """One target's deliveries, beside the others': a slow one (Serializd's 2 requests/s
        through a backlog, AniList's 30 a minute) never holds up a live Trakt scrobble."""
        store, wake = runtime.store, self._wakes[name]
        while not stop.is_set():
            wake.clear()
            try:
                if await self._pass(runtime, [name]):
                    continue
            except _CutShort:  # its claims are released once every target loop has ended
                return
            now = runtime.clock()
            held = self.holds.get(name)
            held_until = held.until if held is not None and held.until > now else None
            # While held, a webhook's wake-up has nothing to look up.
            due = None
            if held_until is None:
                due = await asyncio.to_thread(store.next_due, [name], self.worker_id, now)
            # Even with rows due far ahead (an unmatched play, an AniList hold), look again
            # within idle_wake: the CLI queues rows this process is not told about.
            probe_at = self._probe_look_at.get(name)
            # Rows waiting for a sign-in go soon after one beside this process (the CLI).
            signing = any(target == name for target, _ in self._sign_in_holds)
            wait_until = min(
                [
                    *([due] if due is not None else []),
                    *([held_until] if held_until is not None else []),
                    *([probe_at] if probe_at is not None and probe_at > now else []),
                    now + (self.sign_in_look if signing else self.idle_wake),
                ]
            )
            await self._sleep_looking(runtime, name, max(0.0, wait_until - now), stop)

    async def _sleep_looking(
        self, runtime: Runtime, name: str, seconds: float, stop: asyncio.Event
    ) -> None:
        """Sleep `seconds` or until woken; while rows of target `name` wait for a media
        server's key, look every `sign_in_look` whether the server taking it again lifted
        them (`Store.lift_server_holds`: a link's read, an id lookup, the catch-up, here or in
        another process) and end the sleep once one is due: a read, no claim until then."""
        wake = self._wakes[name]
        while True:
            looking = name in self._server_holds
            step = min(seconds, self.sign_in_look) if looking else seconds
            await self._sleep(wake, step, stop)
            seconds -= step
            if not looking or seconds <= 0 or wake.is_set() or stop.is_set():
                return
            now = runtime.clock()
            due = await asyncio.to_thread(runtime.store.next_due, [name], self.worker_id, now)
            if due is not None and due <= now:
                return

    async def _sleep(self, wake: asyncio.Event, seconds: float, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _after_a_step_back(self, runtime: Runtime) -> None:
        """Move the waits the clock set back by more than CLOCK_STEP_BACK has made longer (the
        holds here, the rows' next tries in the store) back as much, and the starts of the
        target-wide and profile holds (their alerts count from them)."""
        now = runtime.clock()
        if self._latest_now is None:
            self._latest_now = runtime.alive_before or 0.0
        step = self._latest_now - now
        if step <= CLOCK_STEP_BACK:
            self._latest_now = max(self._latest_now, now)
            return
        self._latest_now = now
        self._none_can_go.clear()
        self._move_holds(-step)
        await self._pay_owed_moves(runtime)
        moved = await asyncio.to_thread(runtime.store.bring_forward, step, now)
        log.warning(
            "the clock went back: deliveries waiting keep their waits",
            extra={"seconds": round(step), "rows": moved},
        )

    def _move_holds(self, step: float) -> None:
        """Move the holds here (until when, since when) by a step of the clock (`step`: back
        when negative), and owe the profile holds' starts (their alerts count from them) the
        same move: decided at once, without waiting, so a failure after it cannot move any
        twice (`_pay_owed_moves` writes them)."""
        for held in self.holds.values():
            held.until, held.since = held.until + step, held.since + step
        for key, paused in self._paused.items():
            since, owed = self._owed_moves.get(key, (paused.since, 0.0))
            self._owed_moves[key] = (since, owed + step)

    async def _pay_owed_moves(self, runtime: Runtime) -> None:
        """Write the profile holds' moves owed (`_move_holds`), each once: the store moves a
        hold only if it still begins where it did when the move was decided."""
        now = runtime.clock()
        for key, (since, step) in list(self._owed_moves.items()):
            moved = await asyncio.to_thread(moved_in_store, runtime.store, key, since, step, now)
            del self._owed_moves[key]
            self._mirror(key, moved)

    async def _restamp(self, runtime: Runtime) -> None:
        """Date the plays received before a step of the clock by the clock as it is now
        (clocksteps), before any is claimed: a play received while a Raspberry Pi's clock
        still said 1970 is not sent as a play of 1970, nor one received a day before a
        forward step sent as a day late. A forward step also moves the holds (a step back
        moves them once `_after_a_step_back` sees it, also across a restart): an outage of
        minutes is not told as one of days."""
        async with self._restamping:
            steps = runtime.clock_watch.unhandled()
            for step in steps:
                moved = await asyncio.to_thread(restamped, runtime, step)
                runtime.last_webhooks.restamp(step)
                if step.seconds > 0:
                    self._move_holds(step.seconds)
                if moved:
                    log.info(
                        "plays received before the clock jumped dated by the clock as it is now",
                        extra={"seconds": round(step.seconds), "rows": moved},
                    )
            await self._pay_owed_moves(runtime)
            if not self._ahead_looked or steps:
                self._ahead_looked = True
                now = runtime.clock()
                ahead = await asyncio.to_thread(runtime.store.redate_ahead, now, sent_at)
                if ahead:
                    log.warning(
                        "plays dated ahead of this clock (stamped while a clock ran ahead, set "
                        "back since) go out dated now: no target is sent a time in the future",
                        extra={"rows": ahead},
                    )

    def _open_targets(self, now: float, names: Sequence[str]) -> list[str]:
        return [name for name in names if name not in self.holds or self.holds[name].until <= now]

    async def pass_once(self, runtime: Runtime) -> bool:
        """Claim and deliver one batch per open target, one target after the other (the
        service runs a loop per target instead); True if anything was claimed."""
        await self._judge_queued(runtime)
        await self._restore_profile_holds(runtime)
        return await self._pass(runtime, list(self.targets))

    async def _restore_profile_holds(self, runtime: Runtime) -> None:
        """The profiles' `service_unreachable` holds as the store keeps them (ProfileHold), once,
        before this worker settles anything."""
        if self._paused_restored:
            return
        self._paused_restored = True
        kept = await asyncio.to_thread(runtime.store.cache_items, PROFILE_HOLDS, runtime.clock())
        for key, value in kept:
            if (hold := ProfileHold.from_json(value)) is not None:
                self._paused.setdefault(key, hold)
        # Rows an earlier process held for a sign-in: one from now on lifts them (one made
        # while none ran lifted them already).
        held = [
            pair
            for pair in await asyncio.to_thread(runtime.store.held_for_sign_in)
            if pair[0] in SIGNED_IN_BESIDE
        ]
        marks = await asyncio.to_thread(runtime.store.signed_in_marks, held) if held else {}
        for pair, mark in marks.items():
            self._sign_in_holds.setdefault(pair, mark)
        self._server_holds |= await asyncio.to_thread(runtime.store.held_for_servers)

    async def _judge_queued(self, runtime: Runtime) -> None:
        if self._judge_config:  # once, before anything is claimed
            self._judge_config = False
            await self._give_up_unconfigured(runtime)

    async def _pass(self, runtime: Runtime, names: Sequence[str]) -> bool:
        """One batch for each of the targets `names` that is open; True if any was claimed."""
        await self._restamp(runtime)
        await self._after_a_step_back(runtime)
        now = runtime.clock()
        await self._still_held(runtime, now, names)
        await self._lift_signed_in(runtime, now, names)
        await self._server_holds_left(runtime, names)
        claimed_any = False
        for name in self._open_targets(now, names):
            target = self.targets[name]
            await self._probe_once_more(runtime, name, now)
            async with self._solo.batch(name, self._stop) as waited:
                at = self._after_waiting(runtime) if waited else now
                claimed = await self._claim(runtime, target, at, alone=False)
                if claimed.items:
                    await self._send(runtime, target, claimed.items, at, claimed.signed_in)
            if not claimed.items and claimed.alone_next:
                async with self._solo.alone(name, self._stop) as waited:
                    at = self._after_waiting(runtime) if waited else now
                    claimed = await self._claim(runtime, target, at, alone=True)
                    if claimed.items:
                        await self._send(runtime, target, claimed.items, at, claimed.signed_in)
            claimed_any = claimed_any or bool(claimed.items)
        if runtime.clock() >= self._look_for_untold_at and not self._telling.locked():
            async with self._telling:  # one target loop at a time: each alert goes out once
                self._look_for_untold_at = runtime.clock() + UNTOLD_LOOK_EVERY
                await self._tell_dead_letters(runtime)
                await self._server_keys_unneeded(runtime)
        return claimed_any

    async def _server_holds_left(self, runtime: Runtime, names: Sequence[str]) -> None:
        """Forget the targets of `names` none of whose rows waits for a server's key any more
        (they went out, were lifted and tried, or discarded): no more looks for them."""
        if not self._server_holds.intersection(names):
            return
        held = await asyncio.to_thread(runtime.store.held_for_servers)
        self._server_holds -= set(names) - held

    async def _lift_signed_in(self, runtime: Runtime, now: float, names: Sequence[str]) -> None:
        """Lift the sign-in holds of targets `names` whose profile signed in again since their
        last try (`signed_in_again`): their rows are claimed in this pass, not at the end of
        their hold. The sign-in may come from another process (`watchbridge auth`, which
        lifts them too, but not the rows this worker held meanwhile). A hold none of whose rows
        waits any more (all went out, lifted or discarded) is forgotten: no more looks for it."""
        held = {pair: mark for pair, mark in self._sign_in_holds.items() if pair[0] in names}
        if not held:
            return
        store = runtime.store

        def look() -> tuple[dict[tuple[str, str], str | None], set[tuple[str, str]]]:
            waiting = store.held_for_sign_in()
            return store.signed_in_marks(list(held)), set(waiting)

        kept, waiting = await asyncio.to_thread(look)
        lift = signed_in_again(held, kept)
        for pair in held.keys() - waiting - set(lift):
            self._sign_in_holds.pop(pair, None)
        for target, profile in lift:
            self._sign_in_holds.pop((target, profile), None)
            lifted = await asyncio.to_thread(store.lift_sign_in_holds, target, profile, now)
            if not lifted:  # `watchbridge auth` lifted them already (or they went)
                continue
            log.info(
                f"profile {profile} signed in to {service_title(target)} again: the deliveries"
                " its sign-in held go now",
                extra={"target": target, "profile": profile, "rows": lifted},
            )

    def _after_waiting(self, runtime: Runtime) -> float:
        """The time after a wait for a row going alone (deliver.solo); a stop that came
        meanwhile ends the pass, nothing more claimed."""
        if self._stop is not None and self._stop.is_set():
            raise _CutShort
        return runtime.clock()

    async def _claim(self, runtime: Runtime, target: Target, now: float, alone: bool) -> Claimed:
        """A batch of `target`'s rows due at `now`, claimed; a row that goes alone only if
        `alone` (nothing else of this process is under way: deliver.solo)."""
        return await asyncio.to_thread(
            runtime.store.claim_turn,
            self.worker_id,
            now,
            target.batch_size,
            [target.name],
            alone=alone,
        )

    async def _send(
        self,
        runtime: Runtime,
        target: Target,
        items: list[OutboxItem],
        now: float,
        signed_in: Mapping[tuple[str, str], str | None],
    ) -> None:
        """Deliver a batch claimed for `target` at `now`, and record its outcomes (`signed_in`:
        the sign-in marks as the claim read them, `Claimed.signed_in`)."""
        store, name = runtime.store, target.name
        # A row a crash cut short at its last attempt keeps taking the process down: it
        # gives up here, untried. If its last send may have landed, the dead letter says
        # so (a retry checks first). One past a lowered max_attempts is tried once more.
        interrupted = {
            i.id: _gave_up_interrupted(i)
            for i in items
            if i.attempts >= self.config.max_attempts and i.cut_short
        }
        todo = [i for i in items if i.id not in interrupted]
        fence = Fence(
            store, self.worker_id, [i.id for i in todo], runtime.clock, name, now, self._stop
        )
        answered: set[str] = set()  # the services that answered (http.ANSWERED)
        try:
            outcomes = (
                await self._deliver(runtime, target, todo, now, fence, answered) if todo else {}
            )
        except _CutShort:
            raise
        except Exception as exc:  # a target bug must not lose rows: retry them
            if for_the_supervisor(exc):
                raise
            log.exception("target crashed", extra={"target": name})
            crashed_rows = crashed(name, exc)
            outcomes = await undecided(store, todo, crashed_rows)
        outcomes |= interrupted
        back: list[Settlement] = []
        if fence.refused:
            items, back = self._hand_back_fenced(runtime, target, items, outcomes, fence)
        await self._record(runtime, target, items, outcomes, name in answered, back, signed_in)

    async def _deliver(
        self,
        runtime: Runtime,
        target: Target,
        items: list[OutboxItem],
        now: float,
        fence: Fence,
        answered: set[str],
    ) -> dict[int, Outcome]:
        """`target.deliver(items)`, renewing this worker's claims while it takes (a slow
        server, a long pacing wait) so another worker never takes them back meanwhile, and
        checking before each write that it still holds them (`fence`): renewals stop while the
        process does, and another worker may have taken them back and delivered them. The
        services that answered meanwhile are added to `answered`."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.claim_renew_every)
                try:
                    await asyncio.to_thread(
                        runtime.store.renew_claims, self.worker_id, runtime.clock()
                    )
                except Exception as exc:  # a locked database: the next renewal will do
                    log.warning("claims not renewed", extra={"error": str(exc)})

        renewing = asyncio.create_task(renew())
        fencing = BEFORE_WRITE.set(fence.check)
        hearing = ANSWERED.set(answered)
        try:
            if self._stop is None:
                return await target.deliver(items, now)
            outcomes = await unless_stopped(target.deliver(items, now), self._stop, STOP_GRACE)
            if outcomes is None:
                raise _CutShort
            return outcomes
        finally:
            BEFORE_WRITE.reset(fencing)
            ANSWERED.reset(hearing)
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    def _hand_back_fenced(
        self,
        runtime: Runtime,
        target: Target,
        items: Sequence[OutboxItem],
        outcomes: dict[int, Outcome],
        fence: Fence,
    ) -> tuple[list[OutboxItem], list[Settlement]]:
        """The rows a fenced write left unsent that this worker still holds go back as they
        were claimed (their reason, their mark; no attempt spent, due now): no hold, retry
        nor alert of a failure that was none. A row whose outcome says a try of this batch
        may have landed goes back marked (`handed_back`), due as after a lost answer (the
        service may still be writing it), as a stop mid-delivery leaves it. Returns the
        rest, to record as usual (the rows another worker took are left to it there), and
        the settlements that hand those rows back, written with the rest's (`_record`): a
        kill between two writes would leave the rest in flight as if alone in their batch,
        and a crash spends the try of a row in flight alone (store.CRASHES_ALONE)."""
        back = {
            item.id: (item, outcome.reason)
            for item in items
            if item.id not in fence.lost
            and isinstance(outcome := outcomes.get(item.id), Hold | Retry | Dead)
            and fence.fenced_off(outcome.reason)
        }
        if fence.lost:
            log.warning(
                "deliveries not sent: another worker took rows of this batch back",
                extra={"target": target.name, "rows": len(fence.lost), "handed_back": len(back)},
            )
        else:
            log.info(
                "deliveries not begun: watchbridge is stopping; they go at the next start",
                extra={"target": target.name, "rows": len(back)},
            )
        now = runtime.clock()
        settled = []
        for item, reason in back.values():
            error = handed_back(item.last_error, reason, fence.maybe_sent)
            due = (
                now + self.config.retry_after if (error or "").startswith(UNKNOWN_OUTCOME) else now
            )
            settled.append(Settlement(item.id, "pending", due, error, False, handed_back=True))
        return [item for item in items if item.id not in back], settled

    async def _record(
        self,
        runtime: Runtime,
        target: Target,
        items: Sequence[OutboxItem],
        outcomes: dict[int, Outcome],
        answered: bool,
        handed_back: Sequence[Settlement] = (),
        signed_in: Mapping[tuple[str, str], str | None] | None = None,
    ) -> None:
        """Settle a batch's `outcomes` and tell what they mean (holds, alerts, recoveries).
        `answered`: the target's service answered meanwhile (http.ANSWERED), also if only to
        refuse a sign-in: its outage is over, whatever holds a profile's rows. The batch's
        rows a fence handed back (`_hand_back_fenced`) are settled in the same write.
        `signed_in`: the sign-in marks the batch's tries went with (`Claimed.signed_in`)."""
        store, now = runtime.store, runtime.clock()
        # A worker stalled past its claims' lease (a suspended `watchbridge sync`) lost them to
        # another, whose outcome stands: its own would only mislead (logs, alerts, holds).
        ours = await asyncio.to_thread(store.claimed_by, self.worker_id, [i.id for i in items])
        if len(ours) < len(items):
            log.warning(
                "outcomes dropped: another worker took these rows back",
                extra={"target": target.name, "rows": len(items) - len(ours)},
            )
            items = [item for item in items if item.id in ours]
        dead: list[tuple[OutboxItem, str]] = []
        # Every hold, not one per reason: rows waiting behind the write that failed share its
        # reason ("unknown outcome" marks alike), and must not hide that that write spends.
        holds: list[Hold] = []
        # A target-wide hold spent on its row's last try: that row left the holds as a dead
        # letter, but the rows behind it will spend theirs as it did.
        spent_wide = False
        alerts: dict[tuple[str, str, str | None], str] = {}  # (kind, key, profile): reason
        causes: dict[tuple[str, str, str | None], str] = {}  # the same: its title's words
        rate_limited: set[str] = set()  # of their keys, those a rate limit holds
        # Profiles with a row through, or done on what the service answered (Skipped.answered)
        delivered_for: set[str] = set()
        held_for: set[str] = set()  # profiles with a row held
        sign_in_held: set[str] = set()  # of those, the profiles held for their sign-in
        server_held: dict[str, str] = {}  # servers whose own key held rows: the first reason
        ending: dict[str, str] = {}  # profile: why its sign-in stops working soon
        skipped = 0  # rows settled without a write (`Skipped`)
        limited: dict[str, set[int]] = {}  # rows an account limit held, by alert key
        # A profile's `service_unreachable` holds, by alert key: the first, its rows, the profile
        paused: dict[str, tuple[Hold, set[int], str]] = {}
        # Rows of a ProfileHold that are held no more, by alert key: its rows, the profile
        unpaused: dict[str, tuple[set[int], str]] = {}
        settled: list[Settlement] = list(handed_back)
        probes_failed: list[OutboxItem] = []
        for item in items:
            outcome = outcomes.get(item.id, Retry("the target gave no answer for this row"))
            if item.may_have_landed:  # until it is through, whatever this attempt ran into
                outcome = unsure(outcome)
            if item.once_more == ONCE_MORE_PROBE and not isinstance(outcome, Delivered | Skipped):
                # A probe not through: no outage, hold nor alert of its own (it is the dead
                # letter told of already, waiting again); final only if it can never succeed.
                if isinstance(outcome, Dead) and outcome.spends:
                    settled.append(
                        Settlement(item.id, "dead", None, outcome.reason, probe_end=ONCE_MORE_SPENT)
                    )
                    dead.append((item, outcome.reason))
                else:
                    reason = probe_failed(item.last_error, outcome.reason, target.name)
                    settled.append(
                        Settlement(item.id, "dead", None, reason, False, probe_end=ONCE_MORE_DUE)
                    )
                    probes_failed.append(item)
                continue
            # A spending hold ends by attempts only: by age, a backlog held through a week-long
            # outage would die at its first error after it.
            last_try = item.attempts + 1 >= self.config.max_attempts
            spent_hold = isinstance(outcome, Hold) and outcome.spends and last_try
            if spent_hold and isinstance(outcome, Hold) and outcome.target_wide:
                spent_wide = True
            key = f"{target.name}:{item.profile}"  # its profile's alerts'
            # A hold spent on the row's last try makes it a dead letter, not a paused row: its
            # dead-letter alert tells of it.
            if (
                isinstance(outcome, Hold)
                and outcome.alert == "service_unreachable"
                and not spent_hold
            ):
                paused.setdefault(key, (outcome, set(), item.profile))[1].add(item.id)
            elif key in self._paused:
                unpaused.setdefault(key, (set(), item.profile))[0].add(item.id)
            if isinstance(outcome, Delivered | Skipped):
                if shows_an_answer(outcome):
                    delivered_for.add(item.profile)
                    if outcome.sign_in_ending:
                        ending[item.profile] = outcome.sign_in_ending
                settled.append(Settlement(item.id, "done", error=skipped_note(outcome)))
                if isinstance(outcome, Skipped):
                    skipped += 1
            elif isinstance(outcome, Hold) and not spent_hold:
                held_for.add(item.profile)
                holds.append(outcome)
                if for_a_sign_in(target.name, outcome):
                    sign_in_held.add(item.profile)
                if outcome.server is not None:  # one alert per server, not per profile
                    server_held.setdefault(outcome.server, outcome.reason)
                after = outcome.after
                if outcome.spends:
                    after = max(after, backoff(item.attempts + 1, self.config, None, self.jitter))
                settled.append(
                    Settlement(
                        item.id,
                        "pending",
                        now + after,
                        outcome.reason,
                        outcome.spends,
                        outcome.sign_in,
                        held_as(outcome),
                        waits_for_server=outcome.server,
                    )
                )
                if outcome.alert not in ("", "service_unreachable") and outcome.server is None:
                    # A service_unreachable pause: see `paused`.
                    alerts[(outcome.alert, key, item.profile)] = _told(outcome.reason)
                    if outcome.cause:
                        causes[(outcome.alert, key, item.profile)] = outcome.cause
                if outcome.alert == "account_limit":
                    limited.setdefault(key, set()).add(item.id)
            elif isinstance(outcome, Dead) or spent_hold or self._exhausted(item, now):
                if isinstance(outcome, Dead):
                    reason, spends = outcome.reason, outcome.spends
                else:
                    by_age = self._failing_too_long(item, now)
                    reason, spends = _gave_up(item.attempts + 1, outcome.reason, by_age), True
                once_more = spent_hold or (isinstance(outcome, Retry) and outcome.service_failed)
                settled.append(
                    Settlement(item.id, "dead", None, reason, spends, once_more=once_more)
                )
                dead.append((item, reason))
            else:
                wait = backoff(item.attempts + 1, self.config, outcome.after, self.jitter)
                settled.append(Settlement(item.id, "pending", now + wait, outcome.reason))
        superseded = await asyncio.to_thread(store.settle, now, settled, self.worker_id)
        if server_held:
            self._server_holds.add(target.name)
        for server, reason in server_held.items():
            held_whose = await asyncio.to_thread(store.waiting_for_server, server)
            caught_up = catches_up(runtime.config, server)  # which the refusal stops too
            alert = server_key_alert(server, _told(reason), held_whose, catch_up=caught_up)
            await runtime.notifier.notify(alert.kind, alert.title, alert.body, alert.key)
            self._held_log.warning(
                ("credentials", alert.key),
                "deliveries wait for a server's key",
                now,
                server=server,
                reason=reason,
            )
        for whose in delivered_for | sign_in_held:
            pair = (target.name, whose)
            if whose in sign_in_held:  # a sign-in since the claim's mark lifts it
                self._sign_in_holds[pair] = (signed_in or {}).get(pair)
            else:  # its sign-in works
                self._sign_in_holds.pop(pair, None)
        if skipped:
            runtime.metrics.deliveries_skipped.labels(target.name).inc(skipped)
        for key, ids in limited.items():
            await asyncio.to_thread(_LimitedRows(store, key).add, ids, now)
        done = {s.item_id for s in settled if s.status == "done"}
        # Profile holds whose last waiting row left them here: the profile, whether all went out
        over: dict[str, tuple[str, bool]] = {}
        left: dict[str, frozenset[int]] = {}  # rows leaving a hold that holds others anew
        for key, (ids, whose) in unpaused.items():
            kept = self._paused.get(key)
            if kept is None or not ids & kept.rows:  # written only when the hold loses a row
                continue
            if key in paused:  # one pause going on: taken out as its new rows are added
                left[key] = frozenset(ids)
                continue
            released = await asyncio.to_thread(released_in_store, store, key, ids, now)
            self._mirror(key, released)
            if released is None:
                over[key] = (whose, (ids & kept.rows) <= done)
        for key, (hold, ids, whose) in paused.items():  # told once they are settled
            gone = left.get(key, frozenset())
            if text := await self._profile_hold_told(store, target.name, key, hold, ids, gone, now):
                alerts[("service_unreachable", key, whose)] = text
                if hold.limited:
                    rate_limited.add(key)
        dead = [(item, reason) for item, reason in dead if item.id not in superseded]
        wide = [h for h in holds if h.target_wide]
        if wide:
            hold = max(wide, key=lambda h: h.after)
            held = self.holds.get(target.name)
            if held is None or now > held.until + TARGET_PROBE_MAX:
                # None held, or the last hold ran out long ago and passes went on since: a new
                # outage.
                held = self.holds[target.name] = TargetHold(now, hold.reason, now)
                self._held_log.forget(target.name)
            # Probe a target that stays down less and less often, up to every 5 minutes.
            held.streak += 1
            first = max(hold.after, TARGET_PROBE_MIN)  # a Retry-After of 0 is no reason to spin
            pause = max(first, min(TARGET_PROBE_MAX, doubled(first, held.streak - 1)))
            held.until, held.reason = now + pause, hold.reason
            held.spends = spent_wide or any(h.spends for h in wide)
            held.limited = hold.limited
            self._held_log.warning(
                target.name,
                "deliveries held",
                now,
                target=target.name,
                reason=hold.reason,
                seconds=round(pause),
            )
            told = _told(hold.reason)
            until = now + hold.after
            text = unreachable_alert(
                target.name,
                told,
                held.since,
                now,
                until,
                held.spends,
                asked=hold.asked,
                limited=hold.limited,
                named_for=self._searched_for(target.name),
            )
            if text is not None:
                alerts[("service_unreachable", target.name, None)] = text
                if hold.limited:
                    rate_limited.add(target.name)
        for (kind, key, profile), reason in alerts.items():
            cause = causes.get((kind, key, profile), "")
            slowed = key in rate_limited
            alert = paused_alert(kind, target.name, profile, reason, limited=slowed, cause=cause)
            sent = await runtime.notifier.notify(kind, alert.title, alert.body, alert.key) == SENT
            extra: dict[str, Any] = {"target": target.name, "key": key, "reason": reason}
            outage = self.holds.get(target.name) if profile is None else None
            if outage is None:
                self._held_log.warning((kind, key), "deliveries paused", now, **extra)
            elif sent or not outage.told:  # the target's: once a long one, and with each alert
                log.warning("deliveries paused", extra=extra)
                outage.told = True
        for profile, reason in ending.items():  # flowing, but not for long: tell it now
            key = f"{target.name}:{profile}"
            self._held_log.warning(
                (ENDING, key), "sign-in ends soon", now, target=target.name, reason=reason
            )
            title = ending_title(target.name, profile)
            # Its own condition: the pause when the sign-in does end is a new alert, not a
            # reminder of this one held back by its throttle.
            await runtime.notifier.notify("credentials", title, reason, key=key + ENDING)
        # A row through, or an answer, beside a target-wide hold: still held.
        if (delivered_for or answered) and not wide:
            await self._reachable(runtime, target, flowing=bool(delivered_for))
        died = {item.id for item, _ in dead}
        await self._dead_letters_after(
            runtime, target, items, outcomes, done, died, probes_failed, bool(wide), now
        )
        gave_up = {item.profile for item, _ in dead}
        await self._accepted(runtime, target, delivered_for - held_for, set(ending), gave_up)
        # A target that is itself a media server (causes.DELIVERED_TO): its own key held rows.
        if delivered_for and target.name in DELIVERED_TO and target.name not in server_held:
            await self._server_key_works(runtime, target.name)
        for profile in gave_up:
            await self._gave_up(runtime, target, profile, now)
        if dead and not wide:
            await self._outage_holds_nothing(runtime, target)
        for key, (profile, went_out) in over.items():  # unless a delivery or dead letter did
            await self._pause_over(runtime, target, key, profile, went_out, now)
        for item, reason in dead:
            log.error(
                "delivery gave up",
                extra={
                    "target": target.name,
                    "row": item.id,
                    "action": item.action,
                    "reason": reason,
                },
            )
        if dead:
            self._look_for_untold_at = 0.0  # tell of them now

    async def _give_up_unconfigured(self, runtime: Runtime) -> None:
        """Rows waiting for a service, profile or account the config no longer has (Trakt
        given up, a profile removed) would wait for ever, or go to the wrong account; rows a
        link queued that it no longer asks for (the link removed, or what it syncs narrowed)
        would write what the user took out of the config: they become dead letters, told of
        like any, to retry once it is configured again or to discard."""
        store, now = runtime.store, runtime.clock()
        for target, profile in await asyncio.to_thread(store.waiting_for):
            why = undeliverable(runtime.config, target, profile)
            if why is None:
                continue
            given_up = await asyncio.to_thread(
                store.give_up_waiting, target, profile, now, _not_allowed(why)
            )
            _log_given_up(target, profile, given_up, why)
            # Nothing of theirs waits any more: a sign-in, account-limit or rate-limit alert
            # about them is over (no delivery of that profile would ever close it), and so is
            # an outage of a service no target delivers to any more.
            over = f"{why}: its waiting deliveries are dead letters now"
            for kind in PROFILE_ALERTS:
                await runtime.notifier.resolve(kind, over, key=f"{target}:{profile}")
            if target not in self.targets:
                await runtime.notifier.resolve("service_unreachable", over, key=target)
        # Of the rest (their service and account are there), those their link no longer wants.
        for target, profile, link, action in await asyncio.to_thread(store.waiting_from_links):
            why = unwanted_by_link(runtime.config, link, target, profile, action)
            if why is None:
                continue
            given_up = await asyncio.to_thread(
                store.give_up_waiting, target, profile, now, _not_allowed(why), link, action
            )
            _log_given_up(target, profile, given_up, why)

    async def _tell_dead_letters(self, runtime: Runtime) -> None:
        """Alert the dead letters no alert has told of, whichever process's rows they are: as
        they die, and those whose alert was throttled, failed, or cut short by a restart (the
        store keeps what was told; rows stay owed until an alert about them got through)."""
        notifier, store = runtime.notifier, runtime.store
        if not notifier.enabled:
            return
        for name in await asyncio.to_thread(store.untold_dead_targets):
            if not notifier.would_send("dead_letter", name):
                continue  # throttled or backing off: still owed
            untold = await asyncio.to_thread(
                store.untold_dead, name, runtime.clock(), DEAD_LETTERS_LISTED
            )
            if not untold.count:  # retried or discarded meanwhile
                continue
            title, body = dead_letter_alert(name, untold)
            # Not retried by the notifier: the rows stay owed here until told.
            sent = await notifier.notify("dead_letter", title, body, name, retry_failed=False)
            if sent == SENT:
                await asyncio.to_thread(store.told_dead, name, untold, runtime.clock())
        # Retried and delivered, or discarded (`watchbridge deadletters`): the alert is over,
        # also for a target no longer configured. Those that went alone before are counted
        # in no "Resolved": a later outage's counts its own.
        told = notifier.alerted_keys("dead_letter")
        if told or self._alone:
            dead = await asyncio.to_thread(store.dead_targets)
            for name in [name for name in self._alone if name not in dead]:
                del self._alone[name]
            for name in told:
                if name not in dead:
                    over = (
                        f"no {service_title(name)} delivery is a dead letter any more"
                        " (retried or discarded)"
                    )
                    await notifier.resolve("dead_letter", over, key=name)

    async def _still_held(self, runtime: Runtime, now: float, names: Sequence[str]) -> None:
        """Alert for targets held long enough meanwhile: while one is held no delivery is tried,
        so `_record` does not see it (one 47-minute Retry-After; the wait for the next probe)."""
        for name, held in list(self.holds.items()):
            if name not in names or held.until <= now:
                continue
            text = unreachable_alert(
                name,
                held.reason,
                held.since,
                now,
                now,
                held.spends,
                limited=held.limited,
                named_for=self._searched_for(name),
            )
            if text is None:
                continue
            title = paused_title("service_unreachable", name, limited=held.limited)
            result = await runtime.notifier.notify("service_unreachable", title, text, key=name)
            # Passes come with every webhook: the log tells once a hold (and of each alert).
            if result == SENT or not held.told:
                log.warning("deliveries paused", extra={"target": name, "reason": text})
                held.told = True

    def _searched_for(self, name: str) -> list[str]:
        """For Trakt's outage alert (`name`): the other targets whose plays may wait for its
        id search, which failed when last asked (ids.SearchPause). None for another target."""
        if name != "trakt":
            return []
        return [
            other
            for other in ("serializd", "anilist")
            if isinstance(enricher := getattr(self.targets.get(other), "enricher", None), Enricher)
            and enricher.search_pause.failure is not None
        ]

    async def _profile_hold_told(
        self,
        store: Store,
        target: str,
        key: str,
        hold: Hold,
        rows: set[int],
        left: frozenset[int],
        now: float,
    ) -> str | None:
        """The alert text for a profile's hold of `rows` (`key`: a rate limit, its sign-in
        host down, answers it cannot read), once it has lasted UNREACHABLE_ALERT_AFTER or is
        known to. It lasts from the first of its rows held while any of them still waits, also
        while other rows of the profile go through, and while rows of it that `left` it in
        this pass give way to `rows` held in the same pass; once none waits for a whole pass,
        it is over and a hold after it is a new one."""
        held = self._paused[key] = await asyncio.to_thread(
            held_in_store, store, key, rows, now, left
        )
        told = _told(hold.reason)
        return unreachable_alert(
            target,
            told,
            held.since,
            now,
            now + hold.after,
            asked=hold.asked,
            limited=hold.limited,
            named_for=self._searched_for(target),
        )

    async def _reachable(self, runtime: Runtime, target: Target, *, flowing: bool) -> None:
        """The target took a delivery (`flowing`), or only answered (refusing a profile's
        sign-in, say): forget its outage and say it is over. What holds a profile's rows has
        an alert of its own."""
        self.holds.pop(target.name, None)
        await asyncio.to_thread(runtime.store.unhold_target, target.name)  # for /metrics
        name = service_title(target.name)
        if flowing:
            over = "deliveries flowing again"
            message = f"{name} is taking plays and ratings again; " + (
                "those still waiting go out in turn (what holds a profile's own has an alert"
                " of its own)."
                if runtime.notifier.raised("service_unreachable", target.name)  # a read, if so
                and await asyncio.to_thread(runtime.store.waits_to_go, target.name)
                else "those that waited have gone out."
            )
        else:
            over = "service answers again"
            message = f"{name} answers again: its outage is over. " + (
                "What still holds some plays and ratings for it, such as a profile's sign-in,"
                " is told in its own alert."
                if not runtime.notifier.raised("service_unreachable", target.name)  # a read, if so
                or await asyncio.to_thread(runtime.store.waits_to_go, target.name)
                else f"Nothing waits to go to {name}."
            )
        self._held_log.over(target.name, over, runtime.clock(), target=target.name)
        await runtime.notifier.resolve("service_unreachable", message, key=target.name)

    async def _accepted(
        self,
        runtime: Runtime,
        target: Target,
        profiles: set[str],
        ending: set[str],
        gave_up: set[str],
    ) -> None:
        """These profiles' deliveries went through and none was held: their sign-in problems
        are over (unless it is `ending`: it cannot be renewed), and a rate limit (or the like)
        or an account limit once the rows it held are no longer waiting (gone out, or dead
        letters in this pass for the profiles in `gave_up`). The log says a pause is over when
        its alert is: not while rows it holds still wait."""
        now = runtime.clock()
        name = service_title(target.name)
        for profile in profiles:
            died = profile in gave_up
            key = f"{target.name}:{profile}"
            self._flowing_again(target, "credentials", key, now)
            if profile not in ending:
                over = "sign-in renewed"
                self._held_log.over((ENDING, key), over, now, target=target.name, key=key)
                left = runtime.notifier.raised("credentials", key) and (  # a read, if so
                    await asyncio.to_thread(runtime.store.waits_to_go, target.name, profile)
                )
                message = profile_flowing("credentials", target.name, profile, waiting=left)
                await runtime.notifier.resolve("credentials", message, key=key)
                if runtime.notifier.raised("credentials", key + ENDING):
                    renewed = f"{name} sign-in of profile {profile} is renewed"
                    await runtime.notifier.resolve("credentials", renewed, key=key + ENDING)
            # Its rate limit (or answers it cannot read) is over once none of its rows waits.
            paused = runtime.notifier.raised("service_unreachable", key)
            known = paused or key in self._paused  # else no hold of its rows is known here
            if not (known and await self._still_paused(runtime.store, key, now)):
                self._flowing_again(target, "service_unreachable", key, now)
                if paused:
                    message = profile_flowing(
                        "service_unreachable", target.name, profile, gave_up=died
                    )
                    await runtime.notifier.resolve("service_unreachable", message, key=key)
            # Its account limit is over once the rows it held are no longer waiting.
            limited = runtime.notifier.raised("account_limit", key)
            known = limited or self._held_log.going_on(("account_limit", key))
            waiting = _LimitedRows(runtime.store, key).still_waiting
            if not (known and await asyncio.to_thread(waiting, now)):
                self._flowing_again(target, "account_limit", key, now)
                if limited:
                    message = profile_flowing("account_limit", target.name, profile, gave_up=died)
                    await runtime.notifier.resolve("account_limit", message, key=key)

    async def _server_key_works(self, runtime: Runtime, target: str) -> None:
        """A delivery to a target that is itself a media server (Plex) went through, none held
        for the server's own token: once none of its rows waits for that token any more, its
        alert is over, said as what got fixed (the server takes the token again)."""
        key = f"server:{target}"
        if not runtime.notifier.raised("credentials", key):  # a read, if so
            return
        if await asyncio.to_thread(runtime.store.waiting_for_server, target, target):
            return
        self._held_log.over(("credentials", key), "server key works", runtime.clock())
        await runtime.notifier.resolve("credentials", server_key_works(target), key=key)

    async def _server_keys_unneeded(self, runtime: Runtime) -> None:
        """End the alert of a media server refusing its own key once nothing needs the key: no
        row waits for it any more (those it held gave up, or were discarded by `watchbridge
        deadletters discard`) and nothing reads the server (`server_key_unneeded`). No
        delivery or read would end it then, and it stayed open for good, saying plays wait."""
        notifier = runtime.notifier
        for key in notifier.condition_keys("credentials"):
            server = key.removeprefix("server:")
            if server == key or not notifier.raised("credentials", key):
                continue
            over = server_key_unneeded(runtime.config, server)
            if over is None or await asyncio.to_thread(runtime.store.waits_for_server_key, server):
                continue
            self._held_log.over(
                ("credentials", key), "nothing waits for a server's key", runtime.clock()
            )
            await notifier.resolve("credentials", over, key=key)

    async def _gave_up(self, runtime: Runtime, target: Target, profile: str, now: float) -> None:
        """Rows of the profile became dead letters: its pause by a rate limit (or the like)
        is over once none of the rows it held waits any more, whether they went out or gave
        up. With no delivery of the profile to follow, its alert would stay open, for rows the
        dead-letter alert tells of."""
        key = f"{target.name}:{profile}"
        paused = runtime.notifier.raised("service_unreachable", key)
        if not (paused or key in self._paused) or await self._still_paused(runtime.store, key, now):
            return
        self._held_log.forget(("service_unreachable", key))  # "delivery gave up" tells
        name = service_title(target.name)
        if paused:
            over = (
                f"no {name} delivery of profile {profile} waits on this any more: those"
                " it held went out or gave up (dead letters, told of in their own alert)"
            )
            await runtime.notifier.resolve("service_unreachable", over, key=key)

    async def _dead_letters_after(
        self,
        runtime: Runtime,
        target: Target,
        items: Sequence[OutboxItem],
        outcomes: dict[int, Outcome],
        done: set[int],
        died: set[int],
        probes_failed: Sequence[OutboxItem],
        held_wide: bool,
        now: float,
    ) -> None:
        """What a settled batch means for the target's dead letters waiting to go once more:
        a write the service took (and no outage beside it) sends them all (`_once_more`);
        probes through are counted, and without such a write the rest wait their turn (each
        goes alone: found there, or sent with no proof it was); probes not through wait
        again, later; rows that died now may be the next probe, so it is looked for again."""
        wrote = any(_wrote(item, outcomes.get(item.id)) for item in items)
        went_alone = [i for i in items if i.once_more == ONCE_MORE_PROBE and i.id in done]
        if went_alone:
            await self._went_alone(runtime, target, len(went_alone), now)
        if wrote and not held_wide:
            await self._once_more(runtime, target, died)
        elif went_alone:
            await self._once_more_over(runtime, target, 0, 0, wrote=False)
        if probes_failed:
            await self._probe_failed(runtime, target, probes_failed, now)
        if died:
            self._probe_look_at.pop(target.name, None)

    async def _once_more(self, runtime: Runtime, target: Target, just_died: set[int]) -> None:
        """The target took a write: the dead letters of its own failures (server errors
        answered to their writes, dropped connections: an outage outlasting their tries, or a
        write it keeps failing) go again by themselves, once: a user who never looks loses
        nothing to an outage of days, and one that dies again stays a dead letter (no loop).
        Not those dying in this very pass: the service just took another write beside them.
        Those marked `unknown outcome` are looked for on the service before they are sent, as
        after `watchbridge deadletters retry`. The dead-letter alert's "Resolved" (when none
        is left) says how many."""
        due = await asyncio.to_thread(runtime.store.once_more_due, target.name)
        due = [item_id for item_id in due if item_id not in just_died]
        if not due and not self._alone.get(target.name):
            return
        now = runtime.clock()
        retried = await asyncio.to_thread(
            retry_dead_letters, runtime.config, runtime.store, due, now, by_itself=True
        )
        if due:  # a later outage's probes start an hour after its dead letters again
            await asyncio.to_thread(
                runtime.store.cache_put, PROBES_FAILED, target.name, 0, now, PROBES_KEEP
            )
        if retried.queued or retried.removed:
            log.info(
                "dead letters of the service's own failures queued again once",
                extra={
                    "target": target.name,
                    "rows": retried.queued,
                    "removed": retried.removed,
                },
            )
        await self._once_more_over(runtime, target, retried.queued, retried.removed, wrote=True)

    async def _went_alone(self, runtime: Runtime, target: Target, count: int, now: float) -> None:
        """Probes went through (or were found on the service): counted for the "Resolved",
        and the next probe, if any dead letter still waits, comes an hour after the last
        failure, not as far apart as the failed probes before had set."""
        self._alone[target.name] = self._alone.get(target.name, 0) + count
        await asyncio.to_thread(
            runtime.store.cache_put, PROBES_FAILED, target.name, 0, now, PROBES_KEEP
        )

    async def _once_more_over(
        self, runtime: Runtime, target: Target, queued: int, removed: int, *, wrote: bool
    ) -> None:
        """The dead-letter alert's "Resolved" once none of the target's is left, counting
        those queued again by themselves now (`queued`), those that went alone before
        (probes), and the plays settled as removed since (`removed`). Only a write the
        service was seen to take now (`wrote`) shows that it takes deliveries again."""
        left = await asyncio.to_thread(runtime.store.dead_targets)
        if target.name in left:
            return
        queued += self._alone.pop(target.name, 0)
        if runtime.notifier.raised("dead_letter", target.name) and (queued or removed):
            name = service_title(target.name)
            over = f"{queued} {name} dead letter(s) queued again by themselves, once: " + (
                f"{name} takes deliveries again"
                if wrote
                else f"none is left, the last done without a write {name} was seen to take"
                " (found there already, nothing to change, or an earlier send of it may have"
                f" landed): whether {name} takes writes again is not shown"
            )
            if removed:
                over += (
                    f"; {removed} play(s) not sent again: removed since, by a removal"
                    " that went through after they gave up"
                )
            await runtime.notifier.resolve("dead_letter", over, key=target.name)

    async def _probe_once_more(self, runtime: Runtime, name: str, now: float) -> None:
        """With dead letters of the target's own failures waiting to go once more and no
        delivery to it showing it takes writes again, send the oldest alone once its time
        has come (oncemore): queued here, claimed by the pass that follows."""
        if now < self._probe_look_at.get(name, 0.0):
            return
        self._probe_look_at[name] = now + self.idle_wake  # rows may die in another process
        store = runtime.store
        latest = await asyncio.to_thread(store.once_more_latest, name)
        if latest is None:
            await self._none_waits(runtime, name, now)
            return
        self._probes_cleared.discard(name)  # a probe may fail, in any process
        if self._none_can_go.get(name) == latest:
            return
        _, failed = await asyncio.to_thread(store.cache_get, PROBES_FAILED, name, now)
        at = next_probe_at(latest, int(failed or 0))
        if now < at:
            self._probe_look_at[name] = min(at, now + self.idle_wake)
            return
        # Rows of the target tried soon show soon enough whether it takes writes (and a probe
        # failing beside them would hold them back, unspent, as a failing write does).
        soon = await asyncio.to_thread(store.next_due, [name], self.worker_id, now)
        if soon is not None and soon <= now + PROBE_FIRST:
            return

        def stays(row: OutboxItem) -> bool:
            link = row.payload.get("link")
            return (
                undeliverable(runtime.config, row.target, row.profile, link, row.action) is not None
            )

        probe = await asyncio.to_thread(store.queue_probe, name, now, stays)
        if probe is None:
            self._none_can_go[name] = latest
            return
        log.info(
            "a dead letter of the service's own failures sent alone, to see whether it"
            " takes writes again",
            extra={"target": name, "row": probe, "probes_failed": int(failed or 0)},
        )

    async def _none_waits(self, runtime: Runtime, name: str, now: float) -> None:
        """None of the target's dead letters waits to go once more (gone by themselves, or
        retried or discarded by hand): a later outage's first probe comes an hour after its
        dead letters gave up, as the alerts say, whatever probes of this one failed. Read once
        while none waits; written only when failed probes were counted."""
        if name in self._probes_cleared:
            return
        self._probes_cleared.add(name)
        store = runtime.store
        _, failed = await asyncio.to_thread(store.cache_get, PROBES_FAILED, name, now)
        if failed:
            await asyncio.to_thread(store.cache_put, PROBES_FAILED, name, 0, now, PROBES_KEEP)

    async def _probe_failed(
        self, runtime: Runtime, target: Target, rows: Sequence[OutboxItem], now: float
    ) -> None:
        """Probes that did not get through: their dead letters wait again, and the next probe
        comes later than this one did."""
        store = runtime.store
        _, failed = await asyncio.to_thread(store.cache_get, PROBES_FAILED, target.name, now)
        failed = int(failed or 0) + 1
        await asyncio.to_thread(
            store.cache_put, PROBES_FAILED, target.name, failed, now, PROBES_KEEP
        )
        self._probe_look_at.pop(target.name, None)
        log.info(
            "the service still fails writes: its dead letters wait to go once more",
            extra={
                "target": target.name,
                "rows": [row.id for row in rows],
                "next_probe_in": round(next_probe_at(now, failed) - now),
            },
        )

    async def _outage_holds_nothing(self, runtime: Runtime, target: Target) -> None:
        """Rows became dead letters: once none of the target's rows waits any more (those its
        outage held all gave up, spending their tries on its server errors), the outage holds
        nothing. Its alert would stay open without a word (no reminder, no "Resolved" until a
        later delivery gets through), and still stand for the service's outage, which keeps
        the links' own alerts of one unsent (causes.told_elsewhere). A later delivery the
        service still fails is a new outage, told again."""
        raised = runtime.notifier.raised("service_unreachable", target.name)
        if target.name not in self.holds and not raised:
            return
        if await asyncio.to_thread(runtime.store.waits_to_go, target.name):
            return
        self.holds.pop(target.name, None)
        self._held_log.forget(target.name)  # "delivery gave up" tells
        name = service_title(target.name)
        if raised:
            over = (
                f"no {name} delivery waits on this any more: those it held gave up"
                " (dead letters, told of in their own alert; they go again by themselves, once,"
                f" when {name} takes a delivery again;"
                f" {probe_words(name)})"
            )
            await runtime.notifier.resolve("service_unreachable", over, key=target.name)

    async def _pause_over(
        self, runtime: Runtime, target: Target, key: str, profile: str, went_out: bool, now: float
    ) -> None:
        """The profile's pause by a rate limit (or the like) is over: the last of the rows it
        held left it in this pass. Gone out (beside another row of the profile held, so
        `_accepted` did not end it), or failed otherwise (Trakt answered "not found", a server
        error once the limit lifted) and waits on that, retried as any failure is. Without
        a delivery of the profile to follow, its alert would stay open for a hold that is gone.
        Nothing to do when `_accepted` or `_gave_up` ended it already."""
        extra = {"target": target.name, "key": key, "alert": "service_unreachable"}
        name = service_title(target.name)
        if went_out:
            self._flowing_again(target, "service_unreachable", key, now)
            over = profile_flowing("service_unreachable", target.name, profile)
        else:
            self._held_log.over(
                ("service_unreachable", key), "deliveries no longer paused", now, **extra
            )
            over = (
                f"no {name} delivery of profile {profile} waits on this any more: those"
                " it held failed otherwise since, and are tried again as any failed delivery is"
                " (a dead letter, told of in its own alert, if they keep failing)"
            )
        await runtime.notifier.resolve("service_unreachable", over, key=key)

    def _flowing_again(self, target: Target, kind: str, key: str, now: float) -> None:
        """The log's line that the profile's pause of `kind` (its alert's) is over."""
        extra = {"target": target.name, "key": key, "alert": kind}
        self._held_log.over((kind, key), "deliveries flowing again", now, **extra)

    async def _still_paused(self, store: Store, key: str, now: float) -> bool:
        """Whether rows the profile's `service_unreachable` hold kept still wait (also rows a
        `watchbridge sync` beside the service held: the store keeps them); forgets the hold
        once none does."""
        kept = await asyncio.to_thread(kept_in_store, store, key, now)
        self._mirror(key, kept)
        return kept is not None

    def _mirror(self, key: str, hold: ProfileHold | None) -> None:
        """Note the profile hold `key` as the store keeps it now (None: there is none)."""
        if hold is None:
            self._paused.pop(key, None)
        else:
            self._paused[key] = hold

    def _exhausted(self, item: OutboxItem, now: float) -> bool:
        return at_last_try(item, self.config, now)

    def _failing_too_long(self, item: OutboxItem, now: float) -> float | None:
        """How long the row has kept failing, when that is past delivery.max_age (while its
        attempts last: else it gave up by them); None otherwise. Age counts from the row's first
        real failure: neither time held (an outage, a lost sign-in) nor a try a restart cut
        short is one, so a backlog that waited a week does not turn into dead letters at its
        first blip after."""
        since = item.failing_since
        if item.attempts + 1 >= self.config.max_attempts or since is None:
            return None
        return now - since if now - since > self.config.max_age else None
