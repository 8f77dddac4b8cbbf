"""Apprise alerts for conditions that need a human, throttled so an outage sends one message.

`AlertBook` decides (pure, clock passed in); `Notifier` owns the Apprise object and sends.
Every public call returns one of the result strings below and never raises on delivery
problems: alerting must not take the sync engine down with it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import apprise

from watchbridge.config import AlertsConfig, Secret
from watchbridge.logs import Redactor
from watchbridge.store import Store

log = logging.getLogger(__name__)

SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
DISABLED = "disabled"
NOT_RAISED = "not_raised"  # resolve() only: nothing was raised, so there is nothing to resolve

DEFAULT_TIMEOUT = 10.0
RETRY_FAILED = 60.0  # after a failed send, the condition's next send waits this long
TEST_TITLE = "watchbridge test alert"
TEST_BODY = "If you can read this, watchbridge alerts reach you."

_SCHEMA = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_TAG_PREFIX = "watchbridge-url-"


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Verdict:
    """What to do with one report of a condition."""

    send: bool
    suppressed: int = 0  # reports held back since the previous alert (when send is True)
    since: float = 0.0  # seconds since that previous alert
    was_open: bool = False  # an earlier alert reached the human, with no recovery since


@dataclass
class _Condition:
    sent_at: float
    suppressed: int = 0
    open: bool = True  # the last notice the human got was the alert, not its recovery
    failed_at: float | None = None  # when the last send (alert or recovery) failed
    unsent: bool = False  # the last alert failed: the next report after the back-off sends


class AlertBook:
    """Throttle state per (kind, key): at most one alert per window, one recovery per alert.

    The window also spans recoveries, so a flapping condition cannot bypass the throttle.
    A send that failed is taken back (`failed`, `reopen`): the condition's next report or
    clear sends again, after a back-off of RETRY_FAILED so a channel that is down is not
    hammered.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self.backoff = min(RETRY_FAILED, window)
        self._conditions: dict[tuple[str, str], _Condition] = {}

    def report(self, kind: str, key: str, now: float) -> Verdict:
        """The condition (kind, key) is happening at `now`: send an alert or suppress it?"""
        self._forget_closed(now)
        condition = self._conditions.get((kind, key))
        if condition is None:
            self._conditions[kind, key] = _Condition(sent_at=now)
            return Verdict(send=True)
        if condition.unsent:
            held = _held(condition, self.backoff, now)
        else:
            held = now - condition.sent_at < self.window
        if held:
            condition.suppressed += 1
            return Verdict(send=False)
        verdict = Verdict(
            send=True,
            suppressed=condition.suppressed,
            since=now - condition.sent_at,
            was_open=condition.open,
        )
        self._conditions[kind, key] = _Condition(sent_at=now)
        return verdict

    def failed(self, kind: str, key: str, verdict: Verdict, now: float) -> None:
        """The alert `verdict` allowed was not delivered: take it back, so that the next report
        after the back-off sends it (still counting what was suppressed before)."""
        condition = self._conditions.get((kind, key))
        if condition is None:
            return
        condition.failed_at, condition.unsent = now, True
        condition.open = verdict.was_open
        condition.sent_at -= verdict.since
        condition.suppressed += verdict.suppressed

    def clear(self, kind: str, key: str, now: float | None = None) -> bool:
        """The condition is over: True when a recovery notice is due (an alert is still open,
        and no send for it failed within the back-off)."""
        condition = self._conditions.get((kind, key))
        if condition is None or not condition.open:
            return False
        if now is not None and _held(condition, self.backoff, now):
            return False
        condition.open = False
        condition.suppressed = 0
        return True

    def reopen(self, kind: str, key: str, now: float) -> None:
        """The recovery notice `clear` allowed was not delivered: the alert is still open, and
        the next clear after the back-off owes the recovery again."""
        condition = self._conditions.setdefault((kind, key), _Condition(sent_at=now))
        condition.open, condition.failed_at = True, now

    def is_open(self, kind: str, key: str) -> bool:
        """True when the last notice the human got for the condition is its alert."""
        condition = self._conditions.get((kind, key))
        return condition is not None and condition.open

    def owes_recovery(self, kind: str, key: str, now: float) -> bool:
        """True when `clear` would say a recovery notice is due (and change nothing)."""
        condition = self._conditions.get((kind, key))
        return condition is not None and condition.open and not _held(condition, self.backoff, now)

    def reached(self) -> list[tuple[str, str, float, bool]]:
        """(kind, key, sent_at, open) of each condition whose last notice reached the human."""
        return [
            (kind, key, condition.sent_at, condition.open)
            for (kind, key), condition in self._conditions.items()
            if not condition.unsent
        ]

    def restore(self, kind: str, key: str, sent_at: float, is_open: bool) -> None:
        """A condition as `reached` gave it (kept across a restart)."""
        self._conditions[kind, key] = _Condition(sent_at=sent_at, open=is_open)

    def _forget_closed(self, now: float) -> None:
        # Closed conditions only matter while their window runs; keys may be open-ended.
        stale = [
            ident
            for ident, condition in self._conditions.items()
            if not condition.open
            and now - max(condition.sent_at, condition.failed_at or 0) >= self.window
        ]
        for ident in stale:
            del self._conditions[ident]


def _held(condition: _Condition, backoff: float, now: float) -> bool:
    """True while a condition's last failed send holds its next one back."""
    return condition.failed_at is not None and now - condition.failed_at < backoff


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Remembered:
    """An alert that reached the human, kept across restarts: its recovery notice is still
    owed (`open`) and its throttle window still runs."""

    kind: str
    key: str
    title: str
    sent_at: float
    open: bool


class AlertMemory:
    """The alerts that reached the human, in the store's cache (one small JSON value)."""

    NAMESPACE, LOOKUP, KEEP = "alerts", "reached", 400 * 86400.0

    def __init__(self, cache: Store, clock: Callable[[], float] = time.time) -> None:
        self.cache, self.clock = cache, clock

    def load(self) -> list[Remembered]:
        _, value = self.cache.cache_get(self.NAMESPACE, self.LOOKUP, self.clock())
        try:
            return [Remembered(**entry) for entry in value or []]
        except TypeError:  # written by another version: start afresh
            return []

    def save(self, alerts: list[Remembered]) -> None:
        entries = [asdict(alert) for alert in alerts]
        self.cache.cache_put(self.NAMESPACE, self.LOOKUP, entries, self.clock(), self.KEEP)


# --------------------------------------------------------------------------- sending


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
    ) -> None:
        self.config = config
        # Alert texts quote services' error messages: mask the config's secrets and anything
        # shaped like a credential, as the logs do.
        self._redact = Redactor(secrets)
        self._clock = clock
        self._on_sent = on_sent
        self._timeout = timeout
        self._book = AlertBook(config.throttle)
        self._titles: dict[tuple[str, str], str] = {}
        # Failed alerts by condition: when they failed, their title and body (see notify).
        self._unsent: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._apprise, self.invalid_urls = _build_apprise(config.urls, timeout)
        self._memory: AlertMemory | None = None

    def remember_in(self, memory: AlertMemory) -> None:
        """Keep the alerts that reached the human in `memory` and take back those kept
        there: after a restart a condition still open gets its recovery notice, and one
        still going on stays throttled."""
        self._memory = memory
        for alert in memory.load():
            if self.enabled and self.config.wants(alert.kind):  # else no recovery can go out
                self._book.restore(alert.kind, alert.key, alert.sent_at, alert.open)
                self._titles[alert.kind, alert.key] = alert.title

    async def _remember(self) -> None:
        if self._memory is None:
            return
        alerts = [
            Remembered(kind, key, self._titles.get((kind, key), kind), sent_at, is_open)
            for kind, key, sent_at, is_open in self._book.reached()
        ]
        try:
            await asyncio.to_thread(self._memory.save, alerts)
        except (sqlite3.Error, OSError) as exc:  # alerting must not fail on the database
            log.warning("alerts could not be remembered: %s", type(exc).__name__)

    @property
    def enabled(self) -> bool:
        """True when at least one URL loaded, so alerts can go somewhere."""
        return len(self._apprise) > 0

    async def notify(self, kind: str, title: str, body: str, key: str = "") -> str:
        """Raise an alert for condition (kind, key), throttled per `alerts.throttle`.

        A failed alert does not count as sent: the condition's next report sends it again
        after RETRY_FAILED, and so does the next notifier call for one never reported again
        (a dead letter)."""
        if not self.config.wants(kind) or not self._can_send(kind):
            return self._count(kind, DISABLED)
        if self._unsent:
            await self._send_unsent(skip=(kind, key))
        return await self._notify(kind, title, body, key)

    async def _notify(self, kind: str, title: str, body: str, key: str) -> str:
        now = self._clock()
        verdict = self._book.report(kind, key, now)
        if not verdict.send:
            log.debug("alert %s [%s] suppressed by throttle", kind, key)
            return self._count(kind, SUPPRESSED)
        self._titles[kind, key] = title
        text = body
        if verdict.suppressed:
            text += (
                f"\n\n({_similar(verdict.suppressed)} suppressed"
                f" in the last {format_span(verdict.since)})"
            )
        result = await self._send(kind, title, text, apprise.NotifyType.WARNING)
        if result == FAILED:
            self._book.failed(kind, key, verdict, self._clock())
            self._unsent[kind, key] = (self._clock(), title, body)
        else:
            self._unsent.pop((kind, key), None)
            await self._remember()
        return self._count(kind, result)

    async def _send_unsent(self, skip: tuple[str, str] | None = None) -> None:
        """Send again the failed alerts whose back-off has passed (but `skip`: its own call
        is about to report it)."""
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

    def raised(self, kind: str, key: str = "") -> bool:
        """True when `resolve(kind, key)` has something to do now: a recovery notice is due, or
        a failed alert waits to be sent again. In memory and cheap, for hot paths."""
        return (kind, key) in self._unsent or self._book.owes_recovery(kind, key, self._clock())

    async def resolve(self, kind: str, body: str, key: str = "") -> str:
        """Condition (kind, key) is over: send "Resolved: <alert title>" once, if one was raised.

        A failed recovery notice is owed still: the next resolve() after RETRY_FAILED sends it."""
        self._unsent.pop((kind, key), None)  # over before its failed alert went out: moot
        if self._unsent:
            await self._send_unsent()
        if not self._book.clear(kind, key, self._clock()):
            if self._book.is_open(kind, key):  # its last send failed moments ago
                log.debug("recovery %s [%s] held back after a failed send", kind, key)
                return self._count(kind, SUPPRESSED)
            self._titles.pop((kind, key), None)  # an alert that never went out, if any
            return NOT_RAISED
        alert_title = self._titles.get((kind, key), kind)
        if not self.config.recovery:
            self._titles.pop((kind, key), None)
            await self._remember()
            return self._count(kind, DISABLED)
        title = f"Resolved: {alert_title}"
        result = await self._send(kind, title, body, apprise.NotifyType.SUCCESS)
        if result == FAILED:
            self._book.reopen(kind, key, self._clock())
        else:
            self._titles.pop((kind, key), None)
            await self._remember()
        return self._count(kind, result)

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
            result = await self._apprise.async_notify(
                body=self._redact(body),
                title=self._redact(title),
                notify_type=notify_type,
                timeout=self._timeout,
            )
        except Exception as exc:  # Apprise reports failures in its result; this is a backstop
            log.warning("alert %s not delivered: %s", kind, type(exc).__name__)
            return FAILED
        if result:
            return SENT
        failures = [
            f"{_entry_name(service.tag)} ({service.name}: {service.status.name.lower()})"
            for service in result
            if not service
        ]
        # Never the URL, even masked: generic webhook paths carry tokens unmasked.
        log.warning(
            "alert %s not delivered to %s", kind, ", ".join(failures) or result.status.name.lower()
        )
        return FAILED

    def _count(self, kind: str, result: str) -> str:
        if self._on_sent is not None:
            self._on_sent(kind, result)
        return result


def _build_apprise(urls: list[Secret], timeout: float) -> tuple[apprise.Apprise, list[str]]:
    """An Apprise loaded with every valid URL, and a message per invalid one (never its text)."""
    asset = apprise.AppriseAsset(
        app_id="watchbridge", app_desc="watchbridge alerts", service_timeout=timeout
    )
    notifier = apprise.Apprise(asset=asset)
    problems: list[str] = []
    with _apprise_logging_muted():
        for index, url in enumerate(urls):
            problem = _add_url(notifier, url.reveal(), tag=f"{_TAG_PREFIX}{index}")
            if problem is not None:
                problems.append(
                    f"alerts.urls[{index}]: {problem} (URL hidden: it may hold secrets)"
                )
    return notifier, problems


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


@contextmanager
def _apprise_logging_muted() -> Iterator[None]:
    # Apprise logs rejected URLs with partial masking (a malformed Telegram URL shows its bot
    # token as the host); we report rejected entries by index instead.
    apprise_logger = logging.getLogger(apprise.LOGGER_NAME)

    def drop(record: logging.LogRecord) -> bool:
        return False

    apprise_logger.addFilter(drop)
    try:
        yield
    finally:
        apprise_logger.removeFilter(drop)


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
