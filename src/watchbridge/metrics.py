"""Prometheus metrics: one registry per app so tests can run many apps side by side."""

from __future__ import annotations

import platform
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from watchbridge import __version__
from watchbridge.clocksteps import STEP
from watchbridge.ingest import SOURCES
from watchbridge.refused import REFUSALS
from watchbridge.store import HELD_PROFILE, HELD_TARGET, TargetQueue

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `_created` series double the output and Grafana users never chart them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class QueueCollector(Collector):
    """Per target: outbox depth, dead letters, rows waiting for ids or for a sign-in and how
    long the oldest queued row has waited, read from the store at scrape time. Every
    configured target has its series (at 0), so that a dashboard's sum and an alert's
    recovery see a zero rather than no data."""

    def __init__(
        self,
        counts: Callable[[], Mapping[str, TargetQueue]],
        targets: Sequence[str],
        clock: Callable[[], float],
    ) -> None:
        self.counts, self.targets, self.clock = counts, targets, clock

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.counts()
        except sqlite3.Error:  # a damaged or locked database: the other metrics still go out
            return
        now = self.clock() if counts else 0.0
        per_target = ["target"]
        depth = GaugeMetricFamily(
            "watchbridge_outbox_depth",
            "Outbox rows by target and status",
            labels=[*per_target, "status"],
        )
        dead = GaugeMetricFamily(
            "watchbridge_dead_letters", "Deliveries that gave up", labels=per_target
        )
        unmatched = GaugeMetricFamily(
            "watchbridge_unmatched",
            "Queued deliveries waiting for ids a service can use",
            labels=per_target,
        )
        sign_in = GaugeMetricFamily(
            "watchbridge_outbox_waiting_for_sign_in",
            "Queued deliveries held for a profile's sign-in or key that does not work",
            labels=per_target,
        )
        server_key = GaugeMetricFamily(
            "watchbridge_outbox_waiting_for_server_key",
            "Queued deliveries held because a media server refuses its own token or API key",
            labels=per_target,
        )
        oldest = GaugeMetricFamily(
            "watchbridge_outbox_oldest_pending_age_seconds",
            "How long the target's oldest queued delivery has waited (0: none is queued)",
            labels=per_target,
        )
        for target in sorted({*self.targets, *counts}):
            queue = counts.get(target, TargetQueue())
            for status in ("pending", "inflight"):
                depth.add_metric([target, status], getattr(queue, status))
            dead.add_metric([target], queue.dead)
            unmatched.add_metric([target], queue.unmatched)
            sign_in.add_metric([target], queue.waiting_for_sign_in)
            server_key.add_metric([target], queue.waiting_for_server_key)
            at = queue.oldest_pending_at
            oldest.add_metric([target], 0.0 if at is None else max(0.0, now - at))
        yield from (depth, dead, unmatched, sign_in, server_key, oldest)


class HoldCollector(Collector):
    """Whether each configured target is held as a whole, and each configured profile's
    deliveries to it, read from the store at scrape time (the rows keep what holds them): so
    from a restart's first scrape, and as soon as a command beside the service ends a hold.
    Every configured one has its series (at 0), as QueueCollector's."""

    def __init__(
        self,
        holds: Callable[[], Collection[tuple[str, str, str]]],
        targets: Sequence[str],
        profiles: Sequence[tuple[str, str]],
    ) -> None:
        self.holds, self.targets, self.profiles = holds, targets, profiles

    def collect(self) -> Iterator[Metric]:
        try:
            holds = self.holds()
        except sqlite3.Error:  # as QueueCollector
            return
        target = GaugeMetricFamily(
            "watchbridge_target_held",
            "1 while deliveries to the target are held as a whole (it is down, rate-limits or "
            "fails), until one gets through or none of the rows it held is left to try; else 0",
            labels=["target"],
        )
        profile = GaugeMetricFamily(
            "watchbridge_profile_held",
            "1 while the profile's deliveries to the target are held (its sign-in lost, an "
            "account limit, its own rate limit) until none of the rows it held waits; else 0",
            labels=["target", "profile"],
        )
        for name in self.targets:
            held = any(t == name and how == HELD_TARGET for t, _, how in holds)
            target.add_metric([name], 1.0 if held else 0.0)
        for name, whose in self.profiles:
            held = (name, whose, HELD_PROFILE) in holds
            profile.add_metric([name, whose], 1.0 if held else 0.0)
        yield target
        yield profile


class LinkCollector(Collector):
    """When each configured link's last run went through (ok, or held for a confirmation),
    read from the run history at scrape time: a link that has not for days needs a human."""

    def __init__(self, last_ok: Callable[[], dict[str, float]], links: Sequence[str]) -> None:
        self.last_ok, self.links = last_ok, links

    def collect(self) -> Iterator[Metric]:
        try:
            last_ok = self.last_ok()
        except sqlite3.Error:  # as QueueCollector
            return
        family = GaugeMetricFamily(
            "watchbridge_sync_last_success_timestamp_seconds",
            "When the link's last run that went through ended (Unix time)",
            labels=["link"],
        )
        for link in self.links:
            if link in last_ok:
                family.add_metric([link], last_ok[link])
        yield family


class WebhookCollector(Collector):
    """When each webhook source last had a webhook accepted (Unix time), from memory: a
    source that has never sent one has no sample. Idleness is no fault, so no alert of ours
    says "no webhook for N days"; a user who knows their household's habits can have one."""

    def __init__(self, last: Callable[[], dict[str, float]]) -> None:
        self.last = last

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "watchbridge_webhook_last_received_timestamp_seconds",
            "When the source's last webhook was accepted (Unix time)",
            labels=["source"],
        )
        for source, at in sorted(self.last().items()):
            family.add_metric([source], at)
        yield family


class SignInCollector(Collector):
    """Each profile's Trakt, AniList and Serializd sign-in (and its Plex one while the server
    refuses its token: 0, no expiry; the server's own token, no profile's: `profile=""`),
    read from the store at scrape time
    (no request to the services): seconds until its access token expires (0 for one the
    service refuses, or less once past its expiry), and whether it works without the user
    (Trakt's and Serializd's renew themselves: alert on `sign_in_ok`)."""

    def __init__(
        self,
        sign_ins: Callable[[], Sequence[tuple[str, str, float | None, bool]]],
        clock: Callable[[], float],
    ) -> None:
        self.sign_ins, self.clock = sign_ins, clock

    def collect(self) -> Iterator[Metric]:
        try:
            sign_ins = self.sign_ins()
        except (sqlite3.Error, ValueError):  # as QueueCollector; a damaged entry too
            return
        expiry = GaugeMetricFamily(
            "watchbridge_sign_in_expiry_seconds",
            "Seconds until the sign-in's access token expires (negative: it has; 0 at most "
            "while the service refuses it)",
            labels=["service", "profile"],
        )
        ok = GaugeMetricFamily(
            "watchbridge_sign_in_ok",
            "1 while the sign-in works without the user (or was not tried yet), else 0",
            labels=["service", "profile"],
        )
        now = self.clock() if sign_ins else 0.0
        for service, profile, works_until, works in sign_ins:
            if works_until is not None:
                expiry.add_metric([service, profile], round(works_until - now))
            ok.add_metric([service, profile], 1.0 if works else 0.0)
        yield expiry
        yield ok


@dataclass(frozen=True)
class UnfilteredHistory:
    """A read of one profile's Plex history that got rows of other accounts (`rows`, dropped)
    at `at`, and what to tell of it."""

    profile: str
    rows: int
    message: str
    at: float


class Metrics:
    """Every metric watchbridge exports; names prefixed `watchbridge_`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        build = Gauge(
            "watchbridge_build_info",
            "Build information",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.webhook_events = Counter(
            "watchbridge_webhook_events",
            "Webhook requests by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.webhook_dropped_bytes = Counter(
            "watchbridge_webhook_dropped_bytes",
            "Bytes of webhook bodies past server.max_webhook_bytes read and thrown away after "
            "a payload part that came within it (a large Plex poster)",
            ["source"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "watchbridge_webhook_handling_seconds",
            "Time from webhook request to acknowledgement",
            ["source"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.http_requests = Counter(
            "watchbridge_http_requests",
            "Requests to external services",
            ["service", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "watchbridge_http_request_seconds",
            "Latency of requests to external services",
            ["service"],
            registry=self.registry,
        )
        self.rate_limit_wait = Counter(
            "watchbridge_rate_limit_wait_seconds",
            "Seconds requests waited for a service's rate limit (pacing and 429 timeouts)",
            ["service"],
            registry=self.registry,
        )
        self.clock_skew = Gauge(
            "watchbridge_clock_skew_seconds",
            "How far a service's clock is ahead of this machine's (its last answer's Date)",
            ["service"],
            registry=self.registry,
        )
        self.clocks: dict[str, float] = {}  # the same, for the status page
        # Told when an internet service's clock agrees with this machine's (the runtime's
        # ClockWatch.agreed): a later step of the clock moves no stamp made before.
        self.clocks_agree: Callable[[], None] | None = None
        self.plex_foreign_rows = Counter(
            "watchbridge_plex_history_foreign_rows",
            "Plex history rows of other accounts the server sent though asked for one "
            "account's (it ignored the accountID filter); dropped",
            ["profile"],
            registry=self.registry,
        )
        # Profiles whose last Plex history read got rows of other accounts, for the status
        # page and /api/status; a read with none takes the profile out.
        self.unfiltered: dict[str, UnfilteredHistory] = {}
        self.alerts = Counter(
            "watchbridge_alerts",
            "Alerts by kind and result (sent, failed, suppressed, disabled)",
            ["kind", "result"],
            registry=self.registry,
        )
        self.alerts_owed = Gauge(
            "watchbridge_alerts_owed",
            "Alerts that have not got through yet (their send failed, or is under way)",
            registry=self.registry,
        )
        self.deliveries_skipped = Counter(
            "watchbridge_deliveries_skipped",
            "Deliveries settled without a write, by target (the reason is kept on the row)",
            ["target"],
            registry=self.registry,
        )
        self.sync_runs = Counter(
            "watchbridge_sync_runs",
            "Scheduled link runs by result (ok, held, failed, needs-review, busy, waiting)",
            ["link", "result"],
            registry=self.registry,
        )
        self.background_errors = Counter(
            "watchbridge_background_task_errors",
            "Unexpected errors in background tasks",
            ["task"],
            registry=self.registry,
        )
        # Each webhook's answer is counted by its children, kept here: `labels()` checks and
        # looks them up again on every call. (source, outcome) and source: a few dozen at most.
        self._webhook_counted: dict[tuple[str, str], Counter] = {}
        self._webhook_timed: dict[str, Histogram] = {}
        # Refusals served at 0 from the start: a series that first appears at 1 is no
        # increase to Prometheus, so the alert rule would miss the one refused webhook.
        for source in SOURCES:
            for outcome in REFUSALS:
                self._webhook_counted[source, outcome] = self.webhook_events.labels(source, outcome)

    def webhook_answered(self, source: str, outcome: str, seconds: float) -> None:
        """Count one webhook's answer (`outcome`) and the seconds it took."""
        counted = self._webhook_counted.get((source, outcome))
        if counted is None:
            counted = self._webhook_counted[source, outcome] = self.webhook_events.labels(
                source, outcome
            )
        counted.inc()
        timed = self._webhook_timed.get(source)
        if timed is None:
            timed = self._webhook_timed[source] = self.webhook_seconds.labels(source)
        timed.observe(seconds)

    def plex_history_unfiltered(self, profile: str, rows: int, message: str, at: float) -> None:
        """The Plex server sent `rows` history rows of other accounts reading `profile`'s."""
        self.plex_foreign_rows.labels(profile).inc(rows)
        self.unfiltered[profile] = UnfilteredHistory(profile, rows, message, at)

    def plex_history_filtered(self, profile: str) -> None:
        """A read of `profile`'s Plex history got their rows alone."""
        self.unfiltered.pop(profile, None)

    def note_clock(self, service: str, skew: float, outside: bool = False) -> None:
        """`service`'s clock is `skew` seconds ahead of this machine's; `outside`: an internet
        service's (a server on the user's network may share this machine's wrong clock)."""
        self.clock_skew.labels(service).set(round(skew))
        self.clocks[service] = skew
        if outside and abs(skew) <= STEP and self.clocks_agree is not None:
            self.clocks_agree()

    def watch_queue(
        self,
        counts: Callable[[], Mapping[str, TargetQueue]],
        targets: Sequence[str],
        clock: Callable[[], float],
    ) -> None:
        self.registry.register(QueueCollector(counts, targets, clock))

    def watch_holds(
        self,
        holds: Callable[[], Collection[tuple[str, str, str]]],
        targets: Sequence[str],
        profiles: Sequence[tuple[str, str]],
    ) -> None:
        self.registry.register(HoldCollector(holds, targets, profiles))

    def watch_links(self, last_ok: Callable[[], dict[str, float]], links: Sequence[str]) -> None:
        self.registry.register(LinkCollector(last_ok, links))

    def watch_webhooks(self, last: Callable[[], dict[str, float]]) -> None:
        self.registry.register(WebhookCollector(last))

    def watch_sign_ins(
        self,
        sign_ins: Callable[[], Sequence[tuple[str, str, float | None, bool]]],
        clock: Callable[[], float],
    ) -> None:
        self.registry.register(SignInCollector(sign_ins, clock))

    def render(self) -> bytes:
        return generate_latest(self.registry)
