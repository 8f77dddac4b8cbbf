"""Apprise alerts for conditions that need a human, throttled so an outage sends one message.

`AlertBook` decides, purely, what one condition's next state is; `Conditions` keeps the
conditions and applies those decisions atomically (in memory, or in the store shared by every
process using the database); `Notifier` owns the Apprise object and sends. Every public call
returns one of the result strings below and never raises on delivery problems: alerting must
not take the sync engine down with it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import apprise

from watchbridge.config import AlertsConfig, Secret
from watchbridge.homeassistant import with_commands_help
from watchbridge.logs import Redactor, Repeating
from watchbridge.storagefault import fault_of
from watchbridge.store import Store

log = logging.getLogger(__name__)

SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
DISABLED = "disabled"
NOT_RAISED = "not_raised"  # resolve() only: nothing was raised, so there is nothing to resolve

DEFAULT_TIMEOUT = 10.0
RETRY_FAILED = 60.0  # after a failed send, the condition's next send waits this long
# While the destinations keep failing, that wait grows with how long they have failed (1 min,
# 1 min, 2, 4, ...) up to this: a wrong URL left for months is tried hourly, not 1,440 times a
# day (a provider may block a sender that keeps failing). The first send that gets through, or
# a restart, makes it a minute again.
RETRY_AT_MOST = 3600.0
# A send not confirmed within its timeout plus this margin was lost (its process died).
LEASE_MARGIN = 30.0
KEEP_OPEN = 400 * 86400.0  # an open alert owes its recovery notice this long
FLAP_GUARD = 600.0  # a condition back after its recovery is told again no sooner than this
# A condition that goes on is told again after the window, then after as long again as it has
# lasted (a weekend's outage: a handful of reminders, not one an hour), at most this far apart.
REMIND_AT_MOST = 86400.0
# One that has lasted this long (a server switched off and left in the config) is no news
# each day: its gaps go on growing as long as it has lasted, up to a week. Only for the kinds
# where waiting loses nothing and leaving it may be the user's choice (a server off, a webhook
# removed on purpose): a sign-in or key refused, a full disk, webhooks refused stop or lose
# plays every day until the user acts, so they are told daily however long they last.
REMIND_DAILY_FOR = 3 * 86400.0
REMIND_LONG_AT_MOST = 7 * 86400.0
REMINDED_WEEKLY = frozenset({"service_unreachable", "webhooks_stopped"})
# Short outages heal themselves: a service (a delivery target, a media server) that stays
# unreachable this long is alerted.
UNREACHABLE_ALERT_AFTER = 900.0
# The most a process's snapshot of the shared conditions lags (see Notifier.raised).
RELOAD_EVERY = 60.0
TEST_TITLE = "watchbridge test alert"
TEST_BODY = "If you can read this, watchbridge alerts reach you."

ALERT, RECOVERY = "alert", "recovery"  # what Condition.sending sends
UNREMEMBERED = "unremembered"  # the log's key for the database failing the conditions' writes
KEPT_MEANWHILE = "each alert's state is kept in memory until a write works again"
NAMESPACE = "alerts"  # the store's id_cache rows: one per condition, lookup "kind\x1fkey"
LEGACY = "reached"  # the previous version's single value holding every condition

_SCHEMA = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_TAG_PREFIX = "watchbridge-url-"

T = TypeVar("T")


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Condition:
    """One condition (kind, key) as the human last heard of it."""

    sent_at: float  # its last alert reached the human then (none yet: first reported then)
    title: str = ""  # that alert's title, for its recovery notice
    suppressed: int = 0  # reports held back since that alert
    open: bool = True  # the last notice the human got was the alert, not its recovery
    failed_at: float | None = None  # when the last send (alert or recovery) failed
    unsent: bool = False  # the last alert failed: the next report after the back-off sends
    sending: str = ""  # ALERT or RECOVERY while a send is unconfirmed, until `until`
    until: float = 0.0
    # An alert owed (its send failed, or runs): its title and body, kept until it is sent or
    # the condition is over, so that a restart meanwhile (even a kill) does not lose it.
    owed_title: str = ""
    owed_body: str = ""
    opened_at: float | None = None  # the first alert of this open spell (None: as sent_at)
    # The send under way is the service's: the service's next start knows it was cut off
    # (one service runs per database) and takes it back at once, rather than after its lease.
    by_service: bool = False


@dataclass(frozen=True)
class Verdict:
    """What to do with one report (or clear) of a condition."""

    send: bool
    suppressed: int = 0  # reports held back since the previous alert (when send is True)
    since: float = 0.0  # seconds since that previous alert
    title: str = ""  # the alert's title
    until: float = 0.0  # the send's lease: it must be confirmed (or taken back) by then
    held: bool = False  # clear only: a recovery is owed but waits (a send failed or is running)


class AlertBook:
    """Throttle decisions for one condition: at most one alert per window, one recovery per
    alert. Pure: each takes the condition's state (None: never seen) and the time.

    After a recovery the condition may come back: its alert is then held back only
    FLAP_GUARD since the last one (a throttled report after a "Resolved" might never be told:
    nothing may report it again), which still keeps a flapping condition to a few an hour.
    A send is unconfirmed until `sent`; `failed` takes it back, so the condition's next report
    or clear sends again, after a back-off of RETRY_FAILED (longer while the destinations keep
    failing: `failing_for`) so a channel that is down is not hammered. A send whose lease ran
    out unconfirmed counts as failed then.
    """

    def __init__(self, window: float, lease: float = DEFAULT_TIMEOUT + LEASE_MARGIN) -> None:
        self.window, self.lease = window, lease
        self.first_backoff = min(RETRY_FAILED, window)
        self.backoff = self.first_backoff

    def failing_for(self, seconds: float) -> None:
        """The destinations have failed every send for `seconds` (0: one got through): a
        failed send waits as long again before it is tried once more, within RETRY_AT_MOST."""
        self.backoff = max(self.first_backoff, min(seconds, RETRY_AT_MOST))

    def current(self, condition: Condition | None, now: float) -> Condition | None:
        """The condition as it stands at `now`: lapsed leases failed, expired ones gone, and
        times ahead of `now` (the clock was set back since) taken as `now`: they would hold
        the next alert back as long as the clock's step."""
        if condition is not None:
            condition = _not_after(condition, now, now + self.lease)
        if condition is not None and condition.sending and now >= condition.until:
            condition = self._taken_back(condition, condition.until)
        if condition is not None and self.keep(condition, now) <= 0:
            return None
        return condition

    def keep(self, condition: Condition, now: float) -> float:
        """How much longer the condition matters: an open one owes its recovery; a closed one
        only throttles until its window has run (keys may be open-ended)."""
        if condition.open or condition.owed_body:
            return KEEP_OPEN
        last = max(condition.sent_at, condition.failed_at or 0.0, condition.until)
        return last + self.window - now

    def report(
        self,
        condition: Condition | None,
        title: str,
        now: float,
        owed: tuple[str, str] | None = None,
        by_service: bool = False,
        kind: str = "",
    ) -> tuple[Condition, Verdict]:
        """The condition (of alert `kind`) is happening at `now`: send an alert (under a
        lease) or suppress it? An alert sent keeps its `owed` title and body until it is
        confirmed: a process killed mid-send leaves them for the next start to send."""
        current = self.current(condition, now)
        if current is None:
            current, held = Condition(sent_at=now, open=False, unsent=True), False
        elif current.sending:
            held = True
        elif current.unsent:
            held = self._held(current, now)
        else:
            recovered = not current.open and bool(current.title)
            held = now - current.sent_at < (
                min(FLAP_GUARD, self.window) if recovered else self._reminder_gap(current, kind)
            )
        if held:
            return replace(current, suppressed=current.suppressed + 1), Verdict(send=False)
        until = now + self.lease
        verdict = Verdict(True, current.suppressed, now - current.sent_at, title, until)
        sending = replace(current, sending=ALERT, until=until, by_service=by_service)
        if owed is not None:
            sending = replace(sending, owed_title=owed[0], owed_body=owed[1])
        return sending, verdict

    def clear(
        self, condition: Condition | None, now: float, notice: bool = True, by_service: bool = False
    ) -> tuple[Condition | None, Verdict]:
        """The condition is over: is a recovery notice due (an alert is open, and no send of it
        runs or failed within the back-off)? Without `notice`, the alert closes at once."""
        current = self.current(condition, now)
        if current is not None and current.owed_body:  # over before it went out: moot
            current = replace(current, owed_title="", owed_body="")
        if current is None or not current.open or current.sending == RECOVERY:
            return current, Verdict(send=False)
        if current.sending or self._held(current, now):
            return current, Verdict(send=False, held=True)
        closed = replace(current, suppressed=0)
        if not notice:
            return replace(closed, open=False), Verdict(send=True, title=current.title)
        until = now + self.lease
        return replace(closed, sending=RECOVERY, until=until, by_service=by_service), Verdict(
            send=True, title=current.title, until=until
        )

    def sent(self, condition: Condition | None, verdict: Verdict, now: float) -> Condition | None:
        """The send `verdict` allowed reached the human."""
        if not _awaited(condition, verdict):
            return condition  # taken back meanwhile: a duplicate, rather than a loss
        assert condition is not None
        if condition.sending == RECOVERY:
            return replace(condition, open=False, sending="", until=0.0)
        suppressed = max(condition.suppressed - verdict.suppressed, 0)  # reports since
        # A reminder of an alert still open keeps its spell's start; else one begins now.
        going_on = condition.open and bool(condition.title)
        opened = condition.sent_at if condition.opened_at is None else condition.opened_at
        opened = opened if going_on else now
        return Condition(sent_at=now, title=verdict.title, suppressed=suppressed, opened_at=opened)

    def failed(
        self, condition: Condition | None, verdict: Verdict, failed_at: float | None
    ) -> Condition | None:
        """The send `verdict` allowed did not get through: the next report (alert) or clear
        (recovery) sends again after the back-off from `failed_at` (None: interrupted, not
        refused, so at once)."""
        if not _awaited(condition, verdict):
            return condition
        assert condition is not None
        return self._taken_back(condition, failed_at)

    def owe(self, condition: Condition | None, title: str, body: str) -> Condition | None:
        """Keep the text of the alert whose send just failed, while it is still owed."""
        if condition is None or not condition.unsent:
            return condition  # sent meanwhile (another process)
        return replace(condition, owed_title=title, owed_body=body)

    def cut_off(self, condition: Condition | None) -> Condition | None:
        """A send the service's previous run had under way (it was killed mid-send): taken
        back as interrupted, so that it goes out again at once (maybe twice, never lost)."""
        if condition is None or not condition.sending or not condition.by_service:
            return condition
        return self._taken_back(condition, None)

    def owes_recovery(self, condition: Condition | None, now: float) -> bool:
        """True when `clear` would send a recovery notice now (and change nothing)."""
        return self.clear(condition, now)[1].send

    def _taken_back(self, condition: Condition, failed_at: float | None) -> Condition:
        unsent = condition.unsent or condition.sending == ALERT
        return replace(
            condition, sending="", until=0.0, failed_at=failed_at, unsent=unsent, by_service=False
        )

    def _reminder_gap(self, condition: Condition, kind: str) -> float:
        """How long after its last alert a condition of `kind` still going on is told again."""
        opened = condition.sent_at if condition.opened_at is None else condition.opened_at
        lasted = condition.sent_at - opened
        weekly = kind in REMINDED_WEEKLY and lasted >= REMIND_DAILY_FOR
        most = REMIND_LONG_AT_MOST if weekly else REMIND_AT_MOST
        return max(self.window, min(lasted, most))

    def _held(self, condition: Condition, now: float) -> bool:
        """True while a condition's last failed send holds its next one back."""
        return condition.failed_at is not None and now - condition.failed_at < self.backoff


def _not_after(condition: Condition, now: float, lease_end: float) -> Condition:
    failed_at = None if condition.failed_at is None else min(condition.failed_at, now)
    sent_at, until = min(condition.sent_at, now), min(condition.until, lease_end)
    if (sent_at, failed_at, until) == (condition.sent_at, condition.failed_at, condition.until):
        return condition
    return replace(condition, sent_at=sent_at, failed_at=failed_at, until=until)


def _awaited(condition: Condition | None, verdict: Verdict) -> bool:
    """True when the condition still waits for the send `verdict` allowed."""
    return condition is not None and condition.sending != "" and condition.until == verdict.until


# --------------------------------------------------------------------------- storage

Ident = tuple[str, str]
Transition = Callable[[Condition | None], tuple[Condition | None, T]]


class Conditions:
    """The conditions, in this process's memory: where they live without a store (tests,
    `watchbridge test-alert`). Each `update` applies a pure transition atomically."""

    def __init__(self, book: AlertBook) -> None:
        self.book = book
        self._known: dict[Ident, Condition] = {}

    def known(self, kind: str, key: str) -> Condition | None:
        """The condition as this process last saw it (no I/O: for hot paths)."""
        return self._known.get((kind, key))

    def keys(self, kind: str) -> list[str]:
        """The keys of the conditions of `kind` this process last saw."""
        return [key for known_kind, key in self._known if known_kind == kind]

    def owed(self) -> list[tuple[Ident, Condition]]:
        """The conditions whose alert is owed still: it failed to go out, or its send is under
        way (or was, in a process that died). Also asked from another thread (/metrics is
        rendered off the loop): the conditions are copied in one step before they are looked
        through, as the loop may add one meanwhile."""
        known = list(self._known.items())
        return [(ident, condition) for ident, condition in known if condition.owed_body]

    async def update(self, kind: str, key: str, now: float, transition: Transition[T]) -> T:
        """Apply `transition` to condition (kind, key) and keep its outcome; its result."""
        return self.update_now(kind, key, now, transition)

    async def report(
        self,
        kind: str,
        key: str,
        title: str,
        now: float,
        owed: tuple[str, str] | None = None,
        by_service: bool = False,
    ) -> Verdict:
        """`AlertBook.report` applied to condition (kind, key)."""
        book = self.book
        return await self.update(
            kind, key, now, lambda known: book.report(known, title, now, owed, by_service, kind)
        )

    def update_now(self, kind: str, key: str, now: float, transition: Transition[T]) -> T:
        """`update`, blocking (off the event loop, or with nothing to wait for)."""
        condition, result = transition(self._known.get((kind, key)))
        self._keep((kind, key), condition, now)
        return result

    def update_soon(self, kind: str, key: str, now: float, transition: Transition[None]) -> None:
        """`update` without awaiting it (a cancelled send: there may be no later await) and
        without holding the event loop; done before `close` returns."""
        self.update_now(kind, key, now, transition)

    async def reload(self, now: float) -> None:
        """Read again what other processes changed, if due."""

    def reload_soon(self, now: float) -> None:
        """`reload` in the background, if due."""

    def close(self) -> None:
        """Stop using the storage behind (before it closes)."""

    def _keep(self, ident: Ident, condition: Condition | None, now: float) -> None:
        if condition is None:
            self._known.pop(ident, None)
        else:
            self._known[ident] = condition
        stale = [i for i, known in self._known.items() if self.book.keep(known, now) <= 0]
        for each in stale:
            del self._known[each]


class SharedConditions(Conditions):
    """The conditions in the store, one id_cache row each, shared by every process using the
    database (the service, `watchbridge sync` runs). Each update is one transaction under the
    database's write lock, run in a thread: atomic across processes.

    When the database fails (locked past busy_timeout, read-only), the transition applies to
    this process's copy instead, which stays the condition's truth here until a write of it
    succeeds and carries it into the store: a decision taken meanwhile is never undone.
    `known` answers from a snapshot, reloaded at most every RELOAD_EVERY."""

    def __init__(self, store: Store, book: AlertBook, now: float) -> None:
        super().__init__(book)
        self.store = store
        self._lock = threading.Lock()  # one update or reload at a time; close waits for it
        self._unsaved: set[Ident] = set()  # decided while the database failed
        self._held_back: dict[Ident, int] = {}  # reports suppressed here, not yet counted there
        self._closed = False
        self._loaded_at = now
        self._reloading: asyncio.Task[None] | None = None
        self._writing: set[threading.Thread] = set()  # see update_soon
        self._failing = Repeating(log)  # a full disk meets every alert of a burst
        self._failing_said: str | None = None  # what the log said of it, until a write works
        try:
            self._upgrade(now)
        except (sqlite3.Error, OSError) as exc:
            self._database_failed(exc, now)
        self._reload_now(now)

    async def update(self, kind: str, key: str, now: float, transition: Transition[T]) -> T:
        return await asyncio.to_thread(self.update_now, kind, key, now, transition)

    async def report(
        self,
        kind: str,
        key: str,
        title: str,
        now: float,
        owed: tuple[str, str] | None = None,
        by_service: bool = False,
    ) -> Verdict:
        """As `Conditions.report`; a report the snapshot already throttles writes nothing (a
        condition may be reported for every webhook refused): it is counted here and added to
        the condition's count at its next write."""
        ident, book = (kind, key), self.book
        quick, verdict = book.report(self.known(kind, key), title, now, kind=kind)
        if not verdict.send:
            self._known[ident] = quick
            self._held_back[ident] = self._held_back.get(ident, 0) + 1
            return verdict
        return await self.update(
            kind, key, now, lambda known: book.report(known, title, now, owed, by_service, kind)
        )

    def update_now(self, kind: str, key: str, now: float, transition: Transition[T]) -> T:
        ident = (kind, key)
        with self._lock:
            if not self._closed:
                try:
                    outcome: tuple[Condition | None, T] = self.store.cache_update(
                        NAMESPACE, _lookup(kind, key), now, self._change(ident, now, transition)
                    )
                except (sqlite3.Error, OSError) as exc:
                    self._database_failed(exc, now)
                else:
                    self._database_works(now)
                    self._unsaved.discard(ident)
                    self._keep(ident, outcome[0], now)
                    return outcome[1]
            self._unsaved.add(ident)
            return super().update_now(kind, key, now, transition)

    def sending_by_service(self) -> list[Ident]:
        """The conditions whose send the service had under way, as last read."""
        return [ident for ident, known in self._known.items() if known.sending and known.by_service]

    def update_soon(self, kind: str, key: str, now: float, transition: Transition[None]) -> None:
        """On a thread of its own: another process may hold the database for its whole
        busy_timeout, and the event loop (webhooks, a stop) must not wait for it. `close`
        waits for it, so that an alert owed is in the store before it closes."""
        self._writing = {thread for thread in self._writing if thread.is_alive()}
        writing = threading.Thread(
            target=self.update_now, args=(kind, key, now, transition), name="alert-state"
        )
        self._writing.add(writing)
        writing.start()

    def _change(
        self, ident: Ident, now: float, transition: Transition[T]
    ) -> Callable[[Any], tuple[Any, float, tuple[Condition | None, T]]]:
        replay = ident in self._unsaved

        def change(value: Any) -> tuple[Any, float, tuple[Condition | None, T]]:
            stored = self._known.get(ident) if replay else _parsed(value)
            held_back = self._held_back.pop(ident, 0)
            if stored is not None and held_back and not replay:
                stored = replace(stored, suppressed=stored.suppressed + held_back)
            condition, result = transition(stored)
            if condition is None:
                return None, 0.0, (None, result)
            return asdict(condition), self.book.keep(condition, now), (condition, result)

        return change

    async def reload(self, now: float) -> None:
        if self._due(now):
            self._loaded_at = now
            await asyncio.to_thread(self._reload_now, now)

    def reload_soon(self, now: float) -> None:
        if self._reloading is not None or not self._due(now):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to run it: the next call in one reloads
            return
        self._loaded_at = now
        self._reloading = loop.create_task(asyncio.to_thread(self._reload_now, now))
        self._reloading.add_done_callback(self._reloaded)

    def close(self) -> None:
        if self._reloading is not None:
            self._reloading.cancel()
        for writing in list(self._writing):  # each ends within the database's busy_timeout
            writing.join()
        with self._lock:  # a reload or update under way ends first; none starts after
            self._closed = True

    def _database_failed(self, exc: BaseException, now: float) -> None:
        """Alerting must not fail on the database; the process's own copy decides meanwhile.
        Logged once a fault (every alert of a burst meets it), in the `storage` alert's words,
        then hourly while it lasts."""
        fault = fault_of(exc, str(self.store.path))
        said = type(exc).__name__ if fault is None else f"{fault.title}; {KEPT_MEANWHILE}"
        if said != self._failing_said:
            self._failing.reminders.ended(UNREMEMBERED)  # another fault: told at once
            self._failing_said = said
        self._failing.warning(UNREMEMBERED, f"alerts could not be remembered: {said}", now)

    def _database_works(self, now: float) -> None:
        if self._failing_said is not None:
            self._failing.over(UNREMEMBERED, "alerts are remembered again", now)
            self._failing_said = None

    def _due(self, now: float) -> bool:
        return not 0 <= now - self._loaded_at < RELOAD_EVERY

    def _reloaded(self, _: asyncio.Task[None]) -> None:
        self._reloading = None

    def _reload_now(self, now: float) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                rows = self.store.cache_items(NAMESPACE, now)
            except (sqlite3.Error, OSError) as exc:
                self._database_failed(exc, now)
                return
            known = {}
            for lookup, value in rows:
                kind, separator, key = lookup.partition("\x1f")
                condition = _parsed(value)
                if separator and condition is not None:
                    known[kind, key] = condition
            for ident in self._unsaved:  # this process's copy is the truth for those
                if ident in self._known:
                    known[ident] = self._known[ident]
                else:
                    known.pop(ident, None)
            self._known = known

    def _upgrade(self, now: float) -> None:
        """Give each condition the previous version kept in one value a row of its own (a row
        already there is newer), then drop that value. Done again if interrupted."""
        found, legacy = self.store.cache_get(NAMESPACE, LEGACY, now)
        if not found:
            return
        for entry in legacy if isinstance(legacy, list) else []:
            try:
                ident = (str(entry["kind"]), str(entry["key"]))
                old = Condition(float(entry["sent_at"]), str(entry["title"]), open=entry["open"])
            except (TypeError, KeyError, ValueError):
                continue
            self.update_now(*ident, now, _unless_there(old))
        self.store.cache_update(NAMESPACE, LEGACY, now, lambda _: (None, 0.0, None))


def _unless_there(old: Condition) -> Transition[None]:
    return lambda condition: (condition or old, None)


def _lookup(kind: str, key: str) -> str:
    return f"{kind}\x1f{key}"


def _parsed(value: Any) -> Condition | None:
    try:
        return Condition(**value) if isinstance(value, dict) else None
    except TypeError:  # written by another version: as if not there
        return None


def not_sent_yet(store: Store, config: AlertsConfig, now: float) -> list[Condition]:
    """The alerts kept because no destination took them (each sent again once one does), of
    the kinds `config` still sends, as the database holds them; reads only (`watchbridge
    status`)."""
    found = []
    for lookup, value in store.cache_items(NAMESPACE, now):
        kind, separator, _ = lookup.partition("\x1f")
        condition = _parsed(value)
        if not separator or condition is None or not config.wants(kind):
            continue
        if condition.owed_body and condition.failed_at is not None:  # not one being sent
            found.append(condition)
    return sorted(found, key=lambda condition: condition.failed_at or 0.0)


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class Failing:
    """Sends that did not get through since the last one that did (this process's)."""

    since: float  # the first of them
    sends: int
    to: str  # the alerts.urls entries that failed the last one, by index (never a URL)


@dataclass(frozen=True)
class Health:
    """Whether alerts can reach anyone, for the status page: the alerts cannot tell of it."""

    destinations: int  # alerts.urls entries loaded
    problems: list[str]  # entries not loaded, by index (never their text)
    failing: Failing | None


_NOT_DELIVERED = "alerts not delivered"  # the log's one problem for every failed send


class Notifier:
    """Sends alerts, recoveries and test messages to every configured Apprise URL."""

    def __init__(
        self,
        config: AlertsConfig,
        clock: Callable[[], float] = time.time,
        on_sent: Callable[[str, str], None] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        secrets: Iterable[str] = (),
        commands_help: bool = False,
    ) -> None:
        self.config = config
        # The Home Assistant app: an alert naming a command says where running one is told.
        self._commands_help = commands_help
        # Alert texts quote services' error messages: mask the config's secrets and anything
        # shaped like a credential, as the logs do.
        self._redact = Redactor(secrets)
        self._clock = clock
        self._on_sent = on_sent
        self._timeout = timeout
        self._book = AlertBook(config.throttle, timeout + LEASE_MARGIN)
        self._conditions = Conditions(self._book)
        self._by_service = False  # this process is the service (see remember_in)
        # Failed alerts by condition: when they failed, their title and body (see notify).
        self._unsent: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._resending: asyncio.Task[None] | None = None  # see _send_unsent_soon
        self._on_owed: Callable[[], None] | None = None  # see call_when_owed
        self._apprise, self.invalid_urls = _build_apprise(config.urls, timeout)
        self._failing: Failing | None = None
        # A notifier down for hours fails every alert tried (and each owed one again): the log
        # tells it once, then hourly with how many since, and once it works again.
        self._failed_log = Repeating(log)

    def health(self) -> Health:
        """How the alerts fare: destinations loaded, entries that are not, failed sends."""
        return Health(len(self._apprise), list(self.invalid_urls), self._failing)

    def mask_also(self, secrets: Iterable[str]) -> None:
        """Mask these values too in every alert from now on (see logs.mask_also)."""
        self._redact.add(secrets)

    def mask_renewed(self, sign_in: Hashable, secrets: Iterable[str]) -> None:
        """A sign-in's tokens as it keeps them, in every alert from now on (see
        logs.mask_renewed)."""
        self._redact.renew(sign_in, secrets)

    def remember_in(self, store: Store, *, service: bool = False) -> None:
        """Keep the conditions in `store`, shared with every process using its database (the
        service, `watchbridge sync` runs): one process sends each alert and each recovery,
        also across restarts. Reads them now, synchronously (one quick query).

        The alerts owed are sent again: those that failed, those a stop cut short, and those
        a process was sending when it was killed. The `service`'s start takes back at once
        the sends its previous run had under way (one service runs per database: that one is
        gone; a write, only when there are some); another process's are left to their lease,
        then go out after the back-off, as a failed send does."""
        if not self.enabled:  # no alert or recovery can go out: leave them be
            return
        now, book = self._clock(), self._book
        conditions = SharedConditions(store, book, now)
        self._conditions, self._by_service = conditions, service
        if service:
            for ident in conditions.sending_by_service():
                conditions.update_now(*ident, now, lambda known: (book.cut_off(known), None))
        for ident, known in conditions.owed():
            owed = book.current(known, now)
            if owed is None or not self.config.wants(ident[0]):
                continue  # the kind was switched off since
            if owed.sending:  # another process sends it: due once its lease has lapsed
                failed_at = owed.until
            elif owed.failed_at is None:  # cut short (a stop, a kill): nothing refused it
                failed_at = now - book.backoff
            else:
                failed_at = owed.failed_at
            self._unsent.setdefault(ident, (failed_at, owed.owed_title, owed.owed_body))

    def forget_store(self) -> None:
        """Stop using the store, before it closes: waits for an update or reload under way
        (one database call at most), and for the writes of sends cut short (an alert owed).
        Later decisions stay in this process's memory. Failed alerts being sent again are
        left to the next start (the store keeps them)."""
        if self._resending is not None:
            self._resending.cancel()
        self._conditions.close()

    @property
    def enabled(self) -> bool:
        """True when at least one URL loaded, so alerts can go somewhere."""
        return len(self._apprise) > 0

    async def notify(
        self, kind: str, title: str, body: str, key: str = "", *, retry_failed: bool = True
    ) -> str:
        """Raise an alert for condition (kind, key), throttled per `alerts.throttle`.

        A failed alert does not count as sent: the condition's next report sends it again
        after RETRY_FAILED, and so does the next notifier call for one never reported again,
        unless `retry_failed` is False (the caller keeps what it owes and reports it again)."""
        if not self.config.wants(kind) or not self._can_send(kind):
            return self._count(kind, DISABLED)
        self._send_unsent_soon(skip=(kind, key))
        if self._commands_help:
            body = with_commands_help(body)
        return await self._notify(kind, title, body, key, retry_failed)

    def sends(self, kind: str) -> bool:
        """True when alerts of `kind` go somewhere (a URL loaded, the kind in alerts.kinds)."""
        return self.enabled and self.config.wants(kind)

    def would_send(self, kind: str, key: str = "") -> bool:
        """True when a report of condition (kind, key) now would be sent, not held back by the
        throttle or a failed send's back-off (as this process last knew it; cheap)."""
        if not self.enabled or not self.config.wants(kind):
            return False
        now = self._clock()
        self._conditions.reload_soon(now)
        return self._book.report(self._conditions.known(kind, key), "", now, kind=kind)[1].send

    async def _notify(
        self, kind: str, title: str, body: str, key: str, retry_failed: bool = True
    ) -> str:
        now = self._clock()
        # Kept with the send's mark: a process killed mid-send leaves it for the next start.
        owed = (self._redact(title), self._redact(body)) if retry_failed else None
        verdict = await self._conditions.report(kind, key, title, now, owed, self._by_service)
        if not verdict.send:
            log.debug("alert %s [%s] suppressed by throttle", kind, key)
            return self._count(kind, SUPPRESSED)
        text = body
        if verdict.suppressed:
            text += (
                f"\n\n({_similar(verdict.suppressed)} suppressed"
                f" in the last {format_span(verdict.since)})"
            )
        result = await self._deliver(
            kind, key, verdict, title, text, apprise.NotifyType.WARNING, owed
        )
        if result == FAILED and owed is not None:  # kept in the database (`retry_failed`)
            self._unsent[kind, key] = (self._clock(), title, body)
            if self._on_owed is not None:
                self._on_owed()
            await self._conditions.update(
                kind, key, self._clock(), lambda known: (self._book.owe(known, *owed), None)
            )
        else:
            self._unsent.pop((kind, key), None)
        return self._count(kind, result)

    async def send_unsent(self, skip: tuple[str, str] | None = None) -> None:
        """Send again the failed alerts whose back-off has passed (but `skip`: its own call
        is about to report it). Every report and resolve does; the service's maintenance too,
        as each comes due (`owed_due_in`), for a setup where nothing else comes along."""
        now = self._clock()
        due = [
            ident
            for ident, (failed_at, _, _) in self._unsent.items()
            if ident != skip and now - failed_at >= self._book.backoff
        ]
        for kind, key in due:
            entry = self._unsent.pop((kind, key), None)
            if entry is not None:  # not sent meanwhile by a concurrent call
                await self._notify(kind, entry[1], entry[2], key)

    def owed_due_in(self) -> float | None:
        """Seconds until the first failed alert is due to be sent again (0: it is); None when
        none is owed."""
        if not self._unsent:
            return None
        first = min(failed_at for failed_at, _, _ in self._unsent.values())
        return max(first + self._book.backoff - self._clock(), 0.0)

    def call_when_owed(self, wake: Callable[[], None] | None) -> None:
        """Have `wake` called each time an alert fails to go out (None: no longer): the
        service's maintenance then sets its timer by `owed_due_in`."""
        self._on_owed = wake

    def _send_unsent_soon(self, skip: tuple[str, str] | None = None) -> None:
        """`send_unsent` in the background, one at a time: a notification host that hangs
        (each URL waits out its timeout) must not hold up the delivery or webhook that
        reported something else."""
        if not self._unsent or (self._resending is not None and not self._resending.done()):
            return
        now = self._clock()
        if all(now - failed_at < self._book.backoff for failed_at, _, _ in self._unsent.values()):
            return  # none due: no task
        self._resending = asyncio.get_running_loop().create_task(self.send_unsent(skip))

    async def resent(self) -> None:
        """Wait for the failed alerts being sent again in the background, if any."""
        if self._resending is not None:
            await asyncio.wait({self._resending})

    @property
    def retry_wait(self) -> float:
        """How long an alert or notice that did not get through waits before it is sent again."""
        return self._book.backoff

    def raised(self, kind: str, key: str = "") -> bool:
        """True when `resolve(kind, key)` has something to do now: a recovery notice is due, or
        a failed alert waits to be sent again. In memory and cheap, for hot paths.

        With a store it answers from this process's snapshot, which a call finding it older
        than RELOAD_EVERY reloads in the background: another process's alert or recovery shows
        here at most RELOAD_EVERY (plus one reload) after it, once calls keep coming. `resolve`
        decides in the store, so a stale answer delays a recovery notice, never repeats it."""
        if not self.enabled or not self.config.wants(kind):
            return False
        now = self._clock()
        self._conditions.reload_soon(now)
        if (kind, key) in self._unsent:
            return True
        return self._book.owes_recovery(self._conditions.known(kind, key), now)

    def owed_count(self) -> int:
        """How many alerts have not got through yet: their send failed (they go out again
        after the back-off) or is under way. In memory, as this process last saw them."""
        return len({ident for ident, _ in self._conditions.owed()} | set(self._unsent))

    def unsent(self, kind: str, key: str = "") -> bool:
        """True while the last alert of (kind, key) failed and waits to be sent again."""
        return (kind, key) in self._unsent

    def condition_keys(self, kind: str) -> list[str]:
        """The keys of every condition of `kind` this process knows: open, owed or over."""
        return self._conditions.keys(kind)

    def alerted_keys(self, kind: str) -> list[str]:
        """The keys of the conditions of `kind` whose last alert reached the human (see
        `alerted`): also of things no longer configured (a service removed)."""
        return [key for key in self._conditions.keys(kind) if self.alerted(kind, key)]

    def alerted(self, kind: str, key: str = "") -> bool:
        """True when the last alert of condition (kind, key) reached the human (as this
        process last knew it): also one that went out later with another alert."""
        known = self._book.current(self._conditions.known(kind, key), self._clock())
        return known is not None and known.open and not known.unsent and not known.sending

    async def close_quietly(self, kind: str, key: str = "") -> None:
        """Condition (kind, key) gave way to another that tells the user more (an AniList
        token about to expire, now expired): closed without a "Resolved" of its own."""
        self._unsent.pop((kind, key), None)
        if not self.enabled or not self.config.wants(kind):
            return
        now = self._clock()
        await self._conditions.reload(now)
        known = self._conditions.known(kind, key)
        if known is None or not (known.open or known.owed_body):
            return
        book = self._book
        await self._conditions.update(
            kind, key, now, lambda condition: book.clear(condition, now, notice=False)
        )

    async def take_over(self, kind: str, old: str, new: str) -> bool:
        """Condition (kind, `old`) is told as (kind, `new`) from now on (a release moved it
        under the key of another that tells the same cause): an alert open or owed under `old`
        becomes `new`'s, unless one is open there already, and `old` is gone without a
        "Resolved". Nothing is sent: the next report of `new` is its reminder, its "Resolved"
        the one the human is owed. True when there was one to take over."""
        unsent = self._unsent.pop((kind, old), None)
        if unsent is not None:
            self._unsent.setdefault((kind, new), unsent)
        if not self.enabled or not self.config.wants(kind):
            return False
        now, book = self._clock(), self._book
        await self._conditions.reload(now)
        moved = book.current(self._conditions.known(kind, old), now)
        if moved is None or moved.sending or not (moved.open or moved.owed_body):
            return False  # none, or a send of it under way: taken over at the next call

        def unless_open(there: Condition | None) -> tuple[Condition | None, None]:
            there = book.current(there, now)
            return (there if there is not None and there.open else moved), None

        # Written there before it goes from `old`: a stop between leaves it twice, not lost.
        await self._conditions.update(kind, new, now, unless_open)
        await self._conditions.update(kind, old, now, lambda _: (None, None))
        return True

    async def resolve(self, kind: str, body: str, key: str = "") -> str:
        """Condition (kind, key) is over: send "Resolved: <alert title>" once, if one was raised.

        A failed recovery notice is owed still: the next resolve() after RETRY_FAILED sends it.
        Only a condition this process's snapshot (reloaded first when older than RELOAD_EVERY)
        has open is decided in the store: the one process that closes it there sends."""
        self._unsent.pop((kind, key), None)  # over before its failed alert went out: moot
        self._send_unsent_soon()
        if not self.enabled or not self.config.wants(kind):
            return NOT_RAISED
        now = self._clock()
        await self._conditions.reload(now)
        known = self._conditions.known(kind, key)
        if known is None or not (known.open or known.owed_body):  # no write per batch
            return NOT_RAISED
        book, notice, by_service = self._book, self.config.recovery, self._by_service
        verdict = await self._conditions.update(
            kind, key, now, lambda condition: book.clear(condition, now, notice, by_service)
        )
        if not verdict.send:
            if verdict.held:  # its last send failed moments ago, or one is running
                log.debug("recovery %s [%s] held back after a failed send", kind, key)
                return self._count(kind, SUPPRESSED)
            return NOT_RAISED
        if not notice:
            return self._count(kind, DISABLED)
        title = f"Resolved: {verdict.title or kind}"
        result = await self._deliver(kind, key, verdict, title, body, apprise.NotifyType.SUCCESS)
        return self._count(kind, result)

    async def _deliver(
        self,
        kind: str,
        key: str,
        verdict: Verdict,
        title: str,
        body: str,
        notify_type: str,
        owed: tuple[str, str] | None = None,
    ) -> str:
        """Send what `verdict` allowed, then confirm it, or take it back if it failed or was
        interrupted (a shutdown, Ctrl-C), so that it is sent again. An alert interrupted
        keeps its `owed` title and body (masked), as a failed one does: the next start sends
        it (a stop does not wait for a notification host that hangs)."""
        book = self._book

        def taken_back(condition: Condition | None) -> tuple[Condition | None, None]:
            condition = book.failed(condition, verdict, None)
            return (condition if owed is None else book.owe(condition, *owed)), None

        try:
            result = await self._send(kind, title, body, notify_type)
        except BaseException:
            # Cancelled: there may be no later await, so taken back now, its write left to a
            # thread (the database may be held by another process: the loop must not wait).
            self._conditions.update_soon(kind, key, self._clock(), taken_back)
            raise
        now = self._clock()
        if result == FAILED:
            await self._conditions.update(
                kind, key, now, lambda condition: (book.failed(condition, verdict, now), None)
            )
        else:
            await self._conditions.update(
                kind, key, now, lambda condition: (book.sent(condition, verdict, now), None)
            )
        return result

    async def send_test(self) -> str:
        """A test message for `watchbridge test-alert`; never throttled."""
        if not self._can_send("test"):
            return self._count("test", DISABLED)
        result = await self._send("test", TEST_TITLE, TEST_BODY, apprise.NotifyType.INFO)
        return self._count("test", result)

    def _can_send(self, kind: str) -> bool:
        if not self.enabled:
            log.debug("alert %s not sent: no usable alerts.urls configured", kind)
        return self.enabled

    async def _send(self, kind: str, title: str, body: str, notify_type: str) -> str:
        try:
            # Apprise's own lines are muted (see _mute_apprise_logging): the line below names
            # the entry that failed instead.
            result = await self._apprise.async_notify(
                body=self._redact(body),
                title=self._redact(title),
                notify_type=notify_type,
                timeout=self._timeout,
            )
        except Exception as exc:  # Apprise reports failures in its result; this is a backstop
            self._failed_log.warning(
                _NOT_DELIVERED, f"alert {kind} not delivered: {type(exc).__name__}", self._clock()
            )
            return self._failed("alerts.urls")
        if result:
            if self._failing is not None:
                self._failed_log.over(_NOT_DELIVERED, "alerts delivered again", self._clock())
            self._failing = None
            self._book.failing_for(0.0)
            return SENT
        failures = [
            f"{_entry_name(service.tag)} ({service.name}: {service.status.name.lower()})"
            for service in result
            if not service
        ]
        # Never the URL, even masked: generic webhook paths carry tokens unmasked.
        to = ", ".join(failures) or result.status.name.lower()
        self._failed_log.warning(
            _NOT_DELIVERED, f"alert {kind} not delivered to {to}", self._clock()
        )
        return self._failed(", ".join(failures) or "alerts.urls")

    def _failed(self, to: str) -> str:
        since = self._clock() if self._failing is None else self._failing.since
        sends = 1 if self._failing is None else self._failing.sends + 1
        self._failing = Failing(since, sends, to)
        self._book.failing_for(self._clock() - since)
        return FAILED

    def _count(self, kind: str, result: str) -> str:
        if self._on_sent is not None:
            self._on_sent(kind, result)
        return result


def sends_left_running() -> bool:
    """True while an alert send Apprise gave up on (cut short by a stop, or past its timeout)
    still runs on Apprise's worker thread, which the process's exit would wait for. Apprise's
    own CLI asks so before its exit; a release without the question: as if none ran."""
    still_running = getattr(apprise.apprise, "any_abandoned_calls_still_running", None)
    return still_running is not None and bool(still_running())


def _build_apprise(urls: list[Secret], timeout: float) -> tuple[apprise.Apprise, list[str]]:
    """An Apprise loaded with every valid URL, and a message per invalid one (never its text)."""
    asset = apprise.AppriseAsset(
        app_id="watchbridge", app_desc="watchbridge alerts", service_timeout=timeout
    )
    notifier = apprise.Apprise(asset=asset)
    problems: list[str] = []
    _mute_apprise_logging()
    for index, url in enumerate(urls):
        problem = _add_url(notifier, url.reveal(), tag=f"{_TAG_PREFIX}{index}")
        if problem is not None:
            problems.append(f"alerts.urls[{index}]: {problem} (URL hidden: it may hold secrets)")
    return notifier, problems


def url_problem(url: str) -> str | None:
    """What is wrong with one alert URL (never its text), or None when Apprise takes it: the
    check the notifier makes of each `alerts.urls` entry, for one written elsewhere (the Home
    Assistant app's options)."""
    _mute_apprise_logging()
    return _add_url(apprise.Apprise(), url, tag=f"{_TAG_PREFIX}check")


def _add_url(notifier: apprise.Apprise, url: str, tag: str) -> str | None:
    """Load one URL; None when it loaded, else what is wrong, naming at most its schema."""
    if not url.strip():
        return "empty"
    match = _SCHEMA.match(url)
    if match is None:
        return "not an Apprise URL; expected schema://..., e.g. ntfys://host/topic"
    schema = match.group(1).lower()
    plugins = apprise.NotificationManager()  # type: ignore[no-untyped-call]  # a singleton
    if schema not in plugins:
        return f"unknown Apprise service {schema}://"
    if not notifier.add(url, tag=tag):
        return f"not a valid {schema}:// URL (missing or malformed parts)"
    return None


def _dropped(record: logging.LogRecord) -> bool:
    return False


def _mute_apprise_logging() -> None:
    """Apprise's own lines quote parts of the URL the log cannot tell for secrets (an ntfy
    topic, a webhook path, a malformed Telegram URL's bot token as its host): we name the
    entry by its index instead. Muted for good, not around each call: a send Apprise gave up
    on (past its timeout) goes on in its worker thread and logs how it failed when it ends,
    after the call returned. The same filter is added once, however often this runs."""
    logging.getLogger(apprise.LOGGER_NAME).addFilter(_dropped)


def _entry_name(tags: tuple[str, ...]) -> str:
    for tag in tags:
        if tag.startswith(_TAG_PREFIX):
            return f"alerts.urls[{tag.removeprefix(_TAG_PREFIX)}]"
    return "alerts.urls"


def _similar(count: int) -> str:
    return f"{count} similar alert{'s' if count != 1 else ''}"


def format_span(seconds: float) -> str:
    """A coarse duration for humans: 45s, 1m 30s, 1h, 2h 5m, 1d 3h."""
    rest = max(int(seconds), 0)
    parts: list[tuple[int, str]] = []
    for name, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, rest = divmod(rest, size)
        parts.append((amount, name))
    first = next((i for i, (amount, _) in enumerate(parts) if amount), len(parts) - 1)
    return (
        " ".join(f"{amount}{name}" for amount, name in parts[first : first + 2] if amount) or "0s"
    )
