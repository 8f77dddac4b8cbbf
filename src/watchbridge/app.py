"""The Litestar app factory: routes, dependencies and the lifespan that runs background work."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from litestar import Litestar, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import URL, CacheControlHeader
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.handlers.asgi_handlers import ASGIRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import (
    ASGIApp,
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)
from litestar.utils.path import normalize_path

from watchbridge import __version__, clocksteps, rebinding, show_ratings, tautulliwatched
from watchbridge import queuewords as words
from watchbridge.account_ids import AccountIds, Key, Learnt
from watchbridge.accounts import plex_server_of
from watchbridge.alerts import FAILED, SUPPRESSED, Notifier
from watchbridge.backoff import doubled
from watchbridge.beside import Mine, other_writer
from watchbridge.clocksteps import ClockWatch
from watchbridge.config import (
    SECRET_IN_HEADER_ONLY,
    Accounts,
    Config,
    Profile,
    delivered_profiles,
    delivery_targets,
    fits_in_url,
    is_trusted_proxy,
    link_profiles,
    service_title,
    takes_webhooks,
    targets_for,
    trusted_gateways,
)
from watchbridge.defaulted import Gate
from watchbridge.defaulted import fix as defaulted_message
from watchbridge.defaulted import line as defaulted_line
from watchbridge.downtime import (
    DOWNTIME_TITLE,
    RESTORED_TITLE,
    catches_up,
    downtime_notice,
    restore_key,
    restore_notice,
    unread_sources,
)
from watchbridge.errors import StoreError
from watchbridge.filesystems import read_mountinfo, shared_filesystem_warning
from watchbridge.homeassistant import (
    HomeAssistantApp,
    app_from_environment,
    in_options_words,
    port_problems,
)
from watchbridge.ids import SERVER_SETTINGS
from watchbridge.lastwebhooks import LastWebhooks
from watchbridge.logs import Redactor, mask_also, mask_renewed
from watchbridge.metrics import CONTENT_TYPE, Metrics
from watchbridge.offloop import in_thread, to_the_end
from watchbridge.pagereview import PageReviews
from watchbridge.pagesignin import PageSignIns
from watchbridge.rebinding import RefusedHosts
from watchbridge.redaction import WEBHOOK_SECRET, mask_tokens_stored, secret_values
from watchbridge.refused import RefusedMeanwhile, RefusedWebhooks
from watchbridge.senders import ProfileServers, Senders
from watchbridge.servelock import Holder
from watchbridge.storagefault import STORAGE_ALERT, StorageFault, fault_of
from watchbridge.store import (
    ACCOUNT_CURSOR,
    KEPT_OFF_FIX,
    LOCKED_BY_ANOTHER,
    IngestWriter,
    KeptState,
    RunProgress,
    Store,
    StoreStatus,
    backup_path,
    locked_by_another,
    storage_fault,
)
from watchbridge.unlisted import ALERTED, OVER, probably_of
from watchbridge.unmapped import UnmappedAccounts
from watchbridge.zone import zone_in_use, zone_warning

if TYPE_CHECKING:
    from watchbridge.deliver.anilist import SkippedTitle

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# Paths the optional second port (server.webhook_port) serves; everything else is on server.port.
WEBHOOK_PORT_PATHS = ("/webhooks/", "/metrics", "/healthz", "/readyz")


class BackgroundTask(Protocol):
    """Long-running work (delivery worker, sync scheduler) started and stopped by the lifespan."""

    name: str

    async def run(self, runtime: Runtime, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then finish the current item and return."""


@dataclass
class Runtime:
    """What routes and background tasks share; built once per app and injected."""

    config: Config
    metrics: Metrics
    notifier: Notifier
    clock: Clock = time.time
    # Seconds on a clock no one sets (clocksteps.uptime), beside `clock` to see it step. None:
    # the machine's for time.time, else `clock` itself (a clock moved by hand never steps).
    uptime: Clock | None = None
    store_factory: Callable[[Config], Store] = field(
        default=lambda c: Store.open(c.storage.path, c.storage.durability, c.storage.busy_timeout)
    )
    task_restart_delay: float = 5.0
    on_enqueued: list[Callable[[], None]] = field(default_factory=list)
    # Woken when a write of the database failed on its disk (storagewatch.StorageWatch).
    on_storage_trouble: list[Callable[[], None]] = field(default_factory=list)
    # Why the database cannot be written, as the storage watch last found it; None: it can.
    storage_fault: StorageFault | None = None
    # The storage watch's write under way, if any: whoever asks meanwhile waits for that one.
    storage_check: asyncio.Task[StorageFault | None] | None = None
    # Webhooks refused for the database while the `storage` alert tells of them (storagewatch).
    storage_refused: RefusedMeanwhile = field(default_factory=RefusedMeanwhile)
    _store: Store | None = None
    _writer: IngestWriter | None = None
    webhook_secret: str = ""
    unmapped: UnmappedAccounts = field(default_factory=UnmappedAccounts)
    # What the webhook route wrote of the accounts the default profile takes (defaulted.py).
    defaulted: Gate = field(default_factory=Gate)
    account_ids: AccountIds = field(default_factory=AccountIds)  # loaded by open()
    refused: RefusedWebhooks = field(default_factory=RefusedWebhooks)
    # Names the page and the API were refused under that the log told of (rebinding.py).
    refused_hosts: RefusedHosts = field(default_factory=RefusedHosts)
    # When each webhook source and server last had a webhook accepted (seeded by open()).
    last_webhooks: LastWebhooks = field(default_factory=LastWebhooks)
    senders: Senders = field(default_factory=Senders)
    # Each profile's Plex server where sure: services.plex's as read at start, then its Plex
    # webhooks' (for Tautulli templates that name none).
    plex_servers: ProfileServers = field(default_factory=ProfileServers)
    # The Plex server each profile's Plex link read, as it recorded it (at start).
    linked_plex_servers: dict[str, str] = field(default_factory=dict)
    downtime: str | None = None  # what this start told of the time the service was away
    # Sign-ins started from the status page (no terminal needed): their codes and outcomes.
    page_sign_ins: PageSignIns = field(default_factory=PageSignIns)
    # First syncs reviewed and applied from the status page: their runs and plans.
    page_reviews: PageReviews = field(default_factory=PageReviews)
    backup_on_stop: bool = False  # refresh the database's .backup copy at a clean stop
    home_assistant: HomeAssistantApp | None = None  # runs as the Home Assistant app
    # The last retry of the dead letters from the status page: when, and what it told.
    page_retried: tuple[float, list[str]] | None = None
    # What the log masks (redaction.secret_values, secret-shaped text): every display of
    # stored error text goes through it, as log lines do.
    redact: Redactor = field(default_factory=Redactor)
    _stop_noted: asyncio.Future[None] | None = None  # see note_stopping
    _background_stop: asyncio.Event | None = None  # see background_stop
    _stop_began: float | None = None  # time.monotonic() when it was set
    clock_watch: ClockWatch = field(init=False)
    # The service's last note that it was alive (downtime.py), as `open` found it.
    alive_before: float | None = None
    # The boot `uptime` counts from (clocksteps.boot_id); None: not known.
    boot: str | None = field(default_factory=clocksteps.boot_id)
    # Whose notes of being alive this service writes, the time of its last one, and the
    # service another note in its place named (beside.py); None: none seen since.
    mine: Mine = field(
        default_factory=lambda: Mine(
            uuid.uuid4().hex[:12], os.getpid(), socket.gethostname(), time.time()
        )
    )
    _last_note: float | None = None
    beside: Holder | None = None
    _noting: Any = field(default_factory=threading.Lock)  # a Lock: DI cannot type one

    def __post_init__(self) -> None:
        if self.uptime is None:
            self.uptime = clocksteps.uptime if self.clock is time.time else lambda: self.clock()
        self.clock_watch = ClockWatch(lambda: self.clock(), self.uptime)
        self.metrics.clocks_agree = self.clock_watch.agreed
        # What refused webhooks of a server the catch-up reads cost: nothing (refused.lost).
        caught_up = frozenset(s for s in ("jellyfin", "emby") if catches_up(self.config, s))
        self.refused.caught_up = self.storage_refused.caught_up = caught_up

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("the store is not open yet")
        return self._store

    @property
    def writer(self) -> IngestWriter:
        """The one thread that records webhook events (group commits under load)."""
        if self._writer is None:
            self._writer = IngestWriter(self.store)
        return self._writer

    def open(self, *, service: bool = False) -> None:
        """Open the store. The notifier keeps its alert conditions there, shared with every
        process using the database (a quick synchronous read of them, at start); the
        `service`'s start also takes back the alerts its previous run was sending."""
        self._store = self.store_factory(self.config)
        self._store.opened_at = self.clock()  # the clock its rows are dated by
        self.alive_before = self._store.alive_at()  # before this run notes itself alive
        self.notifier.remember_in(self._store, service=service)
        self.metrics.alerts_owed.set_function(self.notifier.owed_count)
        self._store.checkpoint_apart()
        store = self._store
        for source, server, account_id, profile, entry, name in store.webhook_account_ids():
            self.account_ids.learn(Key(source, server, account_id), Learnt(profile, entry, name))
        for profile, name, identity in store.cursors_named("plex", ACCOUNT_CURSOR):  # its reader
            if name == ACCOUNT_CURSOR:  # services.plex's server, as the profile's link read it
                self.plex_servers.knew(profile, plex_server_of(identity))
                if server := plex_server_of(identity):
                    self.linked_plex_servers[profile] = server
        self.last_webhooks.seed(store.last_webhooks())
        self.metrics.watch_webhooks(self.last_webhooks.by_source)
        targets = delivery_targets(self.config)
        self.metrics.watch_queue(store.queue_gauges, targets, lambda: self.clock())
        self.metrics.watch_holds(store.holds, targets, delivered_profiles(self.config))
        self.metrics.watch_links(store.last_successes, list(self.config.links))
        from watchbridge.signins import gauges  # the services' modules import much

        self.metrics.watch_sign_ins(
            lambda: gauges(self.config, store, lambda: self.clock()), lambda: self.clock()
        )
        self.webhook_secret = webhook_secret(self.config, self._store, self.clock())
        # A generated secret and the sign-ins' tokens are in no config: from now on the log,
        # the alerts and the status page mask them like the configured ones, and so each token
        # a sign-in keeps from now on (a new sign-in, a renewed token).
        self._mask(secret_values(self.config, self._store))
        mask_tokens_stored(self._store, self._mask_renewed)

    def _mask(self, values: list[str]) -> None:
        mask_also(values)
        self.notifier.mask_also(values)
        self.redact.add(values)

    def _mask_renewed(self, sign_in: Hashable, tokens: list[str]) -> None:
        mask_renewed(sign_in, tokens)
        self.notifier.mask_renewed(sign_in, tokens)
        self.redact.renew(sign_in, tokens)

    def note_stopping(self) -> None:
        """The service is asked to stop (SIGTERM): background work is told at once, to end
        while open connections drain rather than after; and the service is noted alive now,
        before both, which may take docker's whole 10 s before its SIGKILL: a kill then would
        leave the last periodic note (up to ALIVE_EVERY old) for the next start to tell as an
        absence. On a thread, not waited for: the stop goes on meanwhile (`stop_noted` waits
        for it, before the store closes)."""
        self.stop_background()
        if self._store is not None and self._stop_noted is None:
            self._stop_noted = in_thread(self.note_alive)

    def background_stop(self) -> asyncio.Event:
        """A new stop for the background tasks of the lifespan starting now."""
        self._background_stop, self._stop_began = asyncio.Event(), None
        return self._background_stop

    def stop_background(self) -> float:
        """Set the background tasks' stop (the first call); the seconds since it was set."""
        if self._stop_began is None:
            self._stop_began = time.monotonic()
            if self._background_stop is not None:
                self._background_stop.set()
        return time.monotonic() - self._stop_began

    async def stop_noted(self) -> None:
        """Wait for the note `note_stopping` began, if any."""
        if self._stop_noted is not None:
            await to_the_end(self._stop_noted)

    def reading(self) -> clocksteps.Reading:
        """The clock now, beside the uptime and its boot (downtime.py compares two)."""
        assert self.uptime is not None  # set by __post_init__
        return clocksteps.Reading(self.clock(), self.uptime(), self.boot)

    def note_alive(self) -> None:
        """Note the service alive now (downtime.py); a database that fails it only makes the
        next start tell less."""
        with contextlib.suppress(sqlite3.Error, StoreError):
            self.noted_alive()

    def noted_alive(self) -> Holder | None:
        """Note the service alive now; the other service whose note was found in place of
        this one's last (beside.py), if any, kept in `beside` until a note finds its own."""
        with self._noting:
            reading = self.reading()
            replaced = self.store.note_alive(reading.wall, reading, self.mine.fields())
            other = other_writer(self.mine, self._last_note, replaced)
            self._last_note, self.beside = reading.wall, other
            return other

    def storage_trouble(self, exc: BaseException) -> StorageFault | None:
        """A write failed with `exc`: if on the disk's account (full, read-only, locked),
        the storage watch tries a write and alerts; that fault, None for any other error."""
        fault = fault_of(exc, str(self.config.storage.path))
        if fault is not None:
            for wake in self.on_storage_trouble:
                wake()
        return fault

    def store_status(self) -> StoreStatus:
        """The store's status as the page and the API show it (error texts redacted)."""
        return self.store.status().shown(self.redact)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._store is not None:
            self.notifier.forget_store()  # waits for an alert update under way, if any
            self._store.close()
            self._store = None


def webhook_secret(config: Config, store: Store, now: float) -> str:
    """The configured webhook secret, or one generated once and kept in the store."""
    configured = config.server.webhook_secret
    if configured:
        return configured.reveal()
    return store.setting(WEBHOOK_SECRET, lambda: secrets.token_urlsafe(24), now)


MAX_RESTART_DELAY = 300.0
HEALTHY_RUN = 600.0  # a task that ran this long before it crashed starts a new streak


CRASHES_BEFORE_ALERT = 3
# What stops while a background task keeps crashing, for its `internal_error` alert.
STOPPED_WORK = {
    "delivery": "nothing is delivered (plays wait in the queue: nothing is lost)",
    "sync-scheduler": "links do not run",
    "maintenance": "old rows are not pruned and sign-ins are not checked",
}


async def _supervise(task: BackgroundTask, runtime: Runtime, stop: asyncio.Event) -> None:
    """Run a background task; if it crashes, count it, log it and start it again. A task that
    keeps crashing (a full disk) waits twice as long each time, up to MAX_RESTART_DELAY, and
    logs its traceback once per streak: the log must not fill the disk it is failing on. A
    streak of CRASHES_BEFORE_ALERT is an `internal_error` alert (each later crash reports it
    again: the notifier reminds while it lasts), resolved once a restart has run HEALTHY_RUN
    (also one raised before the service itself restarted)."""
    crashes, alerted = 0, runtime.notifier.raised("internal_error", task.name)
    runtime.metrics.background_errors.labels(task.name)  # served at 0: see metrics.Metrics
    while not stop.is_set():
        started = time.monotonic()
        run = asyncio.ensure_future(task.run(runtime, stop))
        try:
            if alerted:
                alerted = await _resolve_once_healthy(runtime, task.name, run)
            await run
            return
        except asyncio.CancelledError:
            run.cancel()  # and let it finish its way out (it closes its clients)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run
            raise
        except Exception as exc:
            crashes = 1 if time.monotonic() - started >= HEALTHY_RUN else crashes + 1
            runtime.metrics.background_errors.labels(task.name).inc()
            fault = runtime.storage_trouble(exc)
            if locked_by_another(exc):  # no fault of ours: the log says what, not where
                log.warning(
                    f"{LOCKED_BY_ANOTHER}; restarting",
                    extra={"task": task.name, "crashes": crashes},
                )
            elif fault is not None:  # the disk's trouble, not a bug: no traceback
                log.warning(
                    f"{fault.title}; restarting",
                    extra={"task": task.name, "crashes": crashes, "problem": fault.problem},
                )
            elif crashes == 1:
                log.exception("background task crashed; restarting", extra={"task": task.name})
            else:
                log.warning(
                    "background task crashed again; restarting",
                    extra={"task": task.name, "crashes": crashes, "error": type(exc).__name__},
                )
            # The storage alert tells of a fault of the disk while it is open: one cause, one
            # alert (a write this task needs may fail where the watch's small one works). Not
            # when alerts.kinds leaves `storage` out: then this one is all the user gets.
            told = (
                fault is not None
                and runtime.storage_fault is not None
                and runtime.notifier.sends(STORAGE_ALERT)
            )
            if crashes >= CRASHES_BEFORE_ALERT and not told:
                error = f"{type(exc).__name__}: {exc}"
                alerted = await _tell(runtime, task.name, error, crashes)
            delay = min(doubled(runtime.task_restart_delay, crashes - 1), MAX_RESTART_DELAY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


async def _resolve_once_healthy(runtime: Runtime, name: str, run: asyncio.Future[None]) -> bool:
    """Once `run` has lasted HEALTHY_RUN, resolve task `name`'s crash alert, again after the
    notifier's back-off while the notice does not get through; whether still alerted (`run`
    ended first)."""
    wait = HEALTHY_RUN
    while not (await asyncio.wait({run}, timeout=wait))[0]:
        if await _tell(runtime, name, None):
            return False
        wait = runtime.notifier.retry_wait
    return True


async def _tell(
    runtime: Runtime, name: str, error: str | None, crashes: int = CRASHES_BEFORE_ALERT
) -> bool:
    """Alert that the background task `name` keeps crashing with `error`, or (None) resolve
    that alert; True once done (a notice that did not get through is not). Never raises: the
    disk it fails on may fail this too."""
    try:
        if error is None:
            over = f"its {name} works again"
            return await runtime.notifier.resolve("internal_error", over, name) not in (
                FAILED,
                SUPPRESSED,
            )
        else:
            work = STOPPED_WORK.get(name, "part of watchbridge does not run")
            # What stops and what to do first: a phone shows the first lines; the error after.
            body = (
                f"watchbridge's {name} failed {crashes} times in a row: until it works, {work}."
                " It restarts on its own, waiting longer each time; if this alert keeps coming"
                f" back, the watchbridge log has the details.\n\nThe error: {error[:300]}"
            )
            title = f"watchbridge: its {name} keeps failing"
            await runtime.notifier.notify("internal_error", title, body, name)
        return True
    except Exception as exc:
        log.warning("alert about a failing task not sent", extra={"error": type(exc).__name__})
        return False


# Anyone who can reach the webhook port and guesses the secret can post plays.
MIN_WEBHOOK_SECRET = 16
SHORT_SECRET = (
    f"shorter than {MIN_WEBHOOK_SECRET} characters: anyone who can reach the webhook port and "
    "guesses it can post plays to your accounts; use a long random one (`openssl rand -hex "
    "24`), or leave it empty and one is generated"
)


def storage_warnings(config: Config, store: Store | None, mountinfo: str) -> list[str]:
    """What a user must hear of where the database is kept: on a filesystem SQLite cannot
    trust (`mountinfo`: this process's mount table, empty when unknown), and, the database
    open (`store`), kept by SQLite out of WAL mode."""
    warnings = []
    database = os.path.realpath(config.storage.path)  # where a symlink leads: the files go there
    if problem := shared_filesystem_warning("storage.path", database, mountinfo):
        warnings.append(problem)
    if store is not None and (problem := store.journal_problem):
        warnings.append(problem)
    return warnings


def start_warnings(
    config: Config,
    invalid_alert_urls: Sequence[str],
    environ: Mapping[str, str] = os.environ,
    mountinfo: str = "",
) -> list[str]:
    """What a user must hear about at start-up though the service can run (`environ`: the
    process's, which says whether it runs in our image; `mountinfo`: its mount table, which
    says what filesystem holds the database, empty when unknown)."""
    warnings = [f"alerts are not sent to {problem}" for problem in invalid_alert_urls]
    warnings += storage_warnings(config, None, mountinfo)
    warnings += _port_problems(config, environ)
    if problem := zone_warning(environ):
        warnings.append(problem)
    secret = config.server.webhook_secret
    if secret and not fits_in_url(secret.reveal()):
        warnings.append(f"server.webhook_secret is set, but {SECRET_IN_HEADER_ONLY}")
    if secret and len(secret.reveal()) < MIN_WEBHOOK_SECRET:
        warnings.append(f"server.webhook_secret is {SHORT_SECRET}")
    app = app_from_environment(environ)
    if app is not None and not app.options_form and not secret and config.profiles:
        # The form's start says it of its option (entrypoint.option_warnings); the made-up
        # secret is shown only by a command the app's user may have no terminal for.
        warnings.append(
            "server.webhook_secret is not set: the webhook URLs hold a secret the app made up, "
            "which only the webhook-urls command shows (in a terminal, see the Documentation "
            "tab); set the app's webhook_secret option to a long random string, write "
            "server.webhook_secret: ${WATCHBRIDGE_WEBHOOK_SECRET} in your YAML and put it in "
            "your media servers' webhook URLs"
        )
    if config.server.api_token:
        for entry, gateway in trusted_gateways(config.server.trusted_proxies):
            warnings.append(
                f"server.trusted_proxies: {entry} holds {gateway}, the address of a Docker "
                "network's gateway: connections Docker forwards to a published port itself "
                "(clients over IPv6, the host) come from it, so they skip server.api_token; "
                "list your proxy's own address instead (Home Assistant ingress: 172.30.32.2)"
            )
    if not config.profiles and not (app is not None and app.options_form):
        # The form's start says it of media_users (entrypoint.option_warnings).
        warnings.append(
            "no profiles are configured: every webhook is answered and ignored; map your "
            "media-server accounts under `profiles` (see the README)"
        )
    # Warnings, not refusals: the last release ran these, and an upgrade must keep starting.
    if config.alerts.urls and not config.alerts.kinds:
        warnings.append(
            "alerts.kinds is empty: no alert is sent at all; write [all] or the kinds you want"
            " (to send none, leave alerts.urls empty instead)"
        )
    for name, link in config.links.items():
        if not link.kinds:
            warnings.append(
                f"links.{name}.kinds is empty: the link syncs nothing; name what it syncs"
                " (history, ratings, watchlist, collection) or remove the link"
            )
        if link.collection_removals and "collection" not in link.kinds:
            warnings.append(
                f"links.{name}.collection_removals does nothing: it works only with collection"
                " in the link's kinds (plex-trakt links); add it there, or remove the line"
            )
    logins: dict[str, str] = {}  # Serializd email -> the first profile signing in with it
    for name, profile in config.profiles.items():
        serializd = profile.accounts.serializd
        if serializd is not None and serializd.token is not None:
            first = logins.setdefault(f"token:{serializd.token.reveal()}", name)
            if first != name:
                warnings.append(
                    f"profiles.{name}.accounts.serializd.token is profile {first}'s token too: "
                    f"{name}'s plays would land on {first}'s Serializd; paste each person's own"
                )
        elif serializd is not None and serializd.email is not None:
            first = logins.setdefault(serializd.email.casefold(), name)
            if first != name:
                warnings.append(
                    f"profiles.{name}.accounts.serializd.email is the Serializd login of "
                    f"profile {first} too: {name}'s plays would land on {first}'s Serializd; "
                    "give each person their own login (a block copied for a second person "
                    "keeps the first one's ${SERIALIZD_EMAIL})"
                )
        if profile.users.plex and profile.users.tautulli:
            warnings.append(
                f"profile {name} takes both Plex's and Tautulli's webhooks: if both report the "
                "same Plex server, each viewing is reported twice, minutes apart (counted once "
                "only when both name the player); use one of them per server (docs/webhooks.md)"
            )
        if not takes_webhooks(profile) and not any(
            name in link_profiles(config, link) for link in config.links.values()
        ):
            warnings.append(
                f"profile {name} lists no media-server account under users and is not "
                "default: true, and no link syncs it: no play reaches it (webhooks of accounts "
                f"no profile lists are ignored); list your accounts under profiles.{name}.users "
                "(the ids or names the status page shows under ignored webhooks), or make it "
                "default: true"
            )
        targets = targets_for(config, profile)
        if not targets:
            warnings.append(
                f"profile {name} has no account to deliver to (trakt, serializd or anilist, "
                "with its service configured): its webhooks are answered and dropped"
            )
        elif "trakt" not in targets:
            warnings.extend(_unreadable_servers(config, name, profile))
        if any(entry.split(":")[-1].strip() == "1" for entry in profile.users.tautulli):
            warnings.append(
                f"profiles.{name}.users.tautulli lists '1', which Tautulli never sends: Plex's "
                "own webhook calls the server owner 1, Tautulli sends the owner's plex.tv "
                "account id; list the owner's user name or that id instead (docs/webhooks.md)"
            )
    if app is not None and app.options_form:
        # Each key the options form filled in, by its option: the user never saw the file.
        return [in_options_words(warning, app.alert_url_entries) for warning in warnings]
    return warnings


@dataclass(frozen=True)
class ClientIdNotice:
    """What a start (and `check-config`) says of the profiles with an AniList account and no
    token in the config while services.anilist.client_id is not set, without which `watchbridge
    auth anilist` cannot sign them in."""

    warning: str | None = None  # those not signed in, or whose sign-in ended, ends within 30
    # days or was refused: they need a client id (or a pasted token) now
    info: str | None = None  # those signed in for now: they will once that token ends


def anilist_client_id_notice(config: Config, store: Store | None, now: float) -> ClientIdNotice:
    """Said once per start: a warning for the profiles that need a sign-in now or soon, an
    info line for those whose stored token works for more than 30 days yet (still true: they
    cannot sign in again once it ends, but nothing is wrong today; `watchbridge status` and the
    expiry alerts warn 30 and 14 days ahead). `store`: None when there is no database yet."""
    from watchbridge.services.anilist import CREATE_CLIENT

    anilist = config.services.anilist
    if anilist is None or anilist.client_id:
        return ClientIdNotice()
    names = [
        name
        for name, profile in config.profiles.items()
        if profile.accounts.anilist is not None and profile.accounts.anilist.token is None
    ]
    if not names:
        return ClientIdNotice()
    working: set[str] = set()
    if store is not None:
        from watchbridge.signins import current_sign_ins

        working = {
            s.profile
            for s in current_sign_ins(config, store, now)
            if s.service == "anilist" and s.ok
        }
    needing = [name for name in names if name not in working]
    signed_in = [name for name in names if name in working]
    warning = info = None
    if needing:
        whom, key = (
            (f"profile {needing[0]}", f"profiles.{needing[0]}")
            if len(needing) == 1
            else (f"profiles {', '.join(needing)}", "profiles.NAME")
        )
        warning = (
            f"services.anilist.client_id is not set, and `watchbridge auth anilist` needs it to "
            f"sign in {whom}: {CREATE_CLIENT} and put its id in services.anilist.client_id, or "
            f"paste a token into {key}.accounts.anilist.token"
        )
    if signed_in:
        whom = (
            f"profile {signed_in[0]} is"
            if len(signed_in) == 1
            else f"profiles {', '.join(signed_in)} are"
        )
        info = (
            f"services.anilist.client_id is not set: {whom} signed in to AniList for now, but "
            f"`watchbridge auth anilist` needs it to sign in again once that token ends "
            f"(`watchbridge status` says so 30 days ahead): {CREATE_CLIENT} and put its id in "
            f"services.anilist.client_id"
        )
    return ClientIdNotice(warning, info)


def _unreadable_servers(config: Config, name: str, profile: Profile) -> list[str]:
    """For a profile without Trakt: the media servers whose webhooks it takes that cannot be
    asked for a show's ids. Jellyfin, Emby and Plex's current agents name an episode by its
    own ids only, and Serializd and AniList find shows by the show's TMDB (or TVDB) id: with
    no Trakt to search, every episode of theirs would wait as unmatched."""
    services = config.services
    readable = {
        "plex": services.plex is not None and bool(services.plex.url),
        "jellyfin": services.jellyfin is not None,
        "emby": services.emby is not None,
    }
    agents = {"plex": " (from a library with a current Plex agent)"}
    return [
        f"profile {name} takes {service_title(source)}'s webhooks, which{agents.get(source, '')}"
        " name an episode by its own ids only; Serializd and AniList find shows by the"
        " show's TMDB or TVDB id, which watchbridge reads from the server: set"
        f" {SERVER_SETTINGS[source]}, or its episodes wait as unmatched"
        for source, can_read in readable.items()
        if getattr(profile.users, source) and not can_read
    ]


def _port_problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """In our image, whether its healthcheck asks a port the service does not listen on (it
    asks $WATCHBRIDGE_PORT, 8765 by default): the container would show as unhealthy. The
    Home Assistant app has no environment to set: its ports are fixed (homeassistant.py)."""
    if not environ.get("WATCHBRIDGE_IMAGE"):
        return []
    if app_from_environment(environ) is not None:
        return port_problems(config.server.port, config.server.webhook_port)
    asked = environ.get("WATCHBRIDGE_PORT") or "8765"
    ports = {str(config.server.port), str(config.server.webhook_port)}
    if asked in ports:
        return []
    return [
        f"server.port: the container's healthcheck asks port {asked}, where nothing listens: "
        f"set WATCHBRIDGE_PORT={config.server.port} in its environment (or keep server.port "
        f"at {asked} and map another port on the host)"
    ]


def renamed_profiles(config: Config, with_state: set[str]) -> list[str]:
    """Warnings for profiles that look renamed: new in the config (nothing kept for them yet)
    while the database keeps the state of others the config no longer has. Pure."""
    gone = sorted(with_state - set(config.profiles))
    # Only profiles with an account ever get state: one without is no rename.
    accounts = {name for name, p in config.profiles.items() if p.accounts != Accounts()}
    new = sorted(accounts - with_state)
    if not gone or not new:
        return []
    command = (
        f"`watchbridge rename-profile {gone[0]} {new[0]}`"
        if len(gone) == len(new) == 1
        else "`watchbridge rename-profile OLD NEW`"
    )
    return [
        f"profile {', '.join(new)} is new to the database, which keeps the sign-ins and sync "
        f"state of profile {', '.join(gone)}, no longer in the config: if you renamed a "
        f"profile, run {command} before the new name is used (it keeps all of it under the "
        "new name, and sends the deliveries the service's start gave up for the old one "
        "meanwhile), or give it its old name back, then `watchbridge deadletters retry` "
        "(the ids `deadletters list` shows, or --all) sends its deliveries given up "
        "meanwhile. Under a new name otherwise it starts over without the records of what "
        "watchbridge wrote for it, and its links would copy those plays again"
    ]


def renamed_links(config: Config, with_state: set[str]) -> list[str]:
    """Warnings for links that look renamed: new in the config (no run of theirs applied yet)
    while the database keeps the state of others the config no longer has. Pure."""
    gone = sorted(with_state - set(config.links))
    new = sorted(set(config.links) - with_state)
    if not gone or not new:
        return []
    return [
        f"links.{', links.'.join(new)} is new to the database, which keeps the sync state of "
        f"links.{', links.'.join(gone)}, no longer in the config: if you renamed a link, give "
        "it its old name back, then `watchbridge deadletters retry` (the ids `deadletters "
        "list` shows, or --all) sends the writes it had queued (the service's start gives up "
        "those of a link the config lacks). Under a new name it starts over as on a first "
        "run: a full read of both sides, reviewed again when its first_run is dry-run"
    ]


@dataclass(frozen=True)
class Leftover:
    """State the database keeps for a profile or a link the config no longer has (renamed,
    or taken out), and what to do about it."""

    kind: str  # "profile" or "link"
    name: str
    kept: str  # what the database keeps for it, in words
    fix: str

    @property
    def message(self) -> str:
        what = f"profile {self.name}" if self.kind == "profile" else f"links.{self.name}"
        return f"{what} is no longer in the config, and the database keeps {self.kept}: {self.fix}"


def numbered_apart(config: Config, store: Store) -> list[dict[str, Any]]:
    """`/api/status`'s `anime_numbered_apart`: per profile and show, the AniList episodes the
    media server numbers its own way, with what to do."""
    if config.services.anilist is None:
        return []
    from watchbridge.anime_data import numbered_apart_message, numbered_apart_titles

    return [
        {
            "profile": group.profile,
            "show": group.key,
            "title": group.title,
            "episodes": group.episodes,
            "message": numbered_apart_message(group),
            "fix": group.fix,
        }
        for group in numbered_apart_titles(store, list(config.profiles) or ["default"])
    ]


@dataclass(frozen=True)
class AnimeNotSent:
    """A profile's titles likely anime that no mapping dataset knows, their plays kept off
    AniList (`deliver.anilist.SKIPPED`): what `message` says to do."""

    profile: str
    titles: Sequence[SkippedTitle]

    @property
    def message(self) -> str:
        shows = [(t.title, t.ids, t.why or "") for t in self.titles]
        return words.anime_not_sent(self.profile, shows)


def anime_not_sent(config: Config, store: Store) -> list[AnimeNotSent]:
    """Per profile, the titles of plays skipped for AniList as not anime that look like anime
    all the same (`deliver.anilist.likely_anime`); the other skipped titles are left out."""
    if config.services.anilist is None:
        return []
    from watchbridge.deliver.anilist import NAME, SKIPPED, skipped_titles

    found = []
    for profile in list(config.profiles) or ["default"]:
        titles = skipped_titles(store.mirror_get(NAME, profile, SKIPPED))
        if likely := [title for title in titles if title.why]:
            found.append(AnimeNotSent(profile, likely))
    return found


def anime_lines(config: Config, store: Store, now: float) -> list[str]:
    """What needs the user about anime, one line each, as `watchbridge status` and the status
    page say them: each mapping dataset whose last refresh failed, each show the media server
    numbers its own way, the likely anime kept off AniList per profile, and each anime show
    rated as a whole, which AniList cannot take (`show_ratings`)."""
    if config.services.anilist is None:
        return []
    from watchbridge.anime_data import from_config, numbered_apart_message, numbered_apart_titles

    lines = [s.error for s in from_config(config, store=store).status() if s.error]
    profiles = list(config.profiles) or ["default"]
    lines += [numbered_apart_message(group) for group in numbered_apart_titles(store, profiles)]
    lines += [kept.message for kept in anime_not_sent(config, store)]
    return lines + [rated.message for rated in show_ratings.told_now(store, profiles, now)]


def anime_calm(config: Config, store: Store, now: float) -> frozenset[str]:
    """The lines of `anime_lines` that need nobody yet: a mapping dataset whose refresh failed
    while its cached copy serves, before the hourly check would alert of it; a show rated as
    a whole (nothing is broken: the user rates the season when they like)."""
    if config.services.anilist is None:
        return frozenset()
    from watchbridge.anime_data import from_config

    profiles = list(config.profiles) or ["default"]
    shows = [rated.message for rated in show_ratings.told_now(store, profiles, now)]
    return frozenset([*from_config(config, store=store).serving_meanwhile(now), *shows])


def leftovers(config: Config, store: Store) -> list[Leftover]:
    """What the database keeps for profiles and links the config no longer has, for as long
    as it keeps it (`watchbridge status`, the status page, `/api/status`)."""
    found = []
    for profile in sorted(store.profiles_with_state() - set(config.profiles)):
        kept = store.kept_for_profile(profile)
        what = _queue_kept(kept)
        what += [f"its sign-in to {', '.join(kept.sign_ins)}"] if kept.sign_ins else []
        what += [f"the sync state of links.{', links.'.join(kept.links)}"] if kept.links else []
        found.append(
            Leftover(
                "profile",
                profile,
                ", ".join(what) or "the records of what watchbridge wrote for it",
                f"if a profile of the config is this one renamed, give it its old name back "
                f"(profiles.{profile}: under another name it starts over without them, and its "
                f"links copy its plays again){_retry(kept)}; if it is gone for good, nothing "
                f"is sent for it{_discard(kept)}",
            )
        )
    # A link's plays kept off its target outlast its sync state (`reset-state` keeps them).
    kept_off_links = {entry.link for entry in store.kept_off_counts()}
    for link in sorted((store.links_with_state() | kept_off_links) - set(config.links)):
        kept = store.kept_for_link(link)
        what = [
            *_queue_kept(kept),
            *([f"{kept.kept_off} play(s) kept off its target for good"] if kept.kept_off else []),
            *([f"its sync state for {', '.join(kept.profiles)}"] if kept.profiles else []),
        ]
        found.append(
            Leftover(
                "link",
                link,
                ", ".join(what),
                f"if a link of the config is this one renamed, give it its old name back "
                f"(links.{link}: under another name it starts over as on a first run, and the "
                "writes it had queued become dead letters at the service's start"
                + (", and it copies again the plays kept off" if kept.kept_off else "")
                + f"){_retry(kept)}; if it is gone for good, nothing is synced for it"
                f"{_discard(kept)}{_allow(kept)}",
            )
        )
    return found


def _retry(kept: KeptState) -> str:
    """Queued writes of a profile or link the config lacks become dead letters at the start."""
    if not (kept.queued or kept.dead_letters):
        return ""
    return ", then `watchbridge deadletters retry` its dead letters (ids in `deadletters list`)"


def _discard(kept: KeptState) -> str:
    if not (kept.queued or kept.dead_letters):
        return "" if kept.kept_off else ": nothing to do"
    return ": `watchbridge deadletters discard` its dead letters, and nothing else is to do"


def _allow(kept: KeptState) -> str:
    """A link gone for good: its plays kept off are remembered (and told) until allowed."""
    if not kept.kept_off:
        return ""
    then = ";" if kept.queued or kept.dead_letters else ":"
    return (
        f"{then} to forget the plays it keeps off, `watchbridge deadletters allow` their ids "
        "(`watchbridge deadletters list --for-good` lists them)"
    )


def _queue_kept(kept: KeptState) -> list[str]:
    return [
        *([f"{kept.queued} queued write(s) (not sent)"] if kept.queued else []),
        *([f"{kept.dead_letters} dead letter(s)"] if kept.dead_letters else []),
    ]


def _backup_at_stop(store: Store) -> None:
    """Copy the database to its .backup file: a Home Assistant backup taken while the app is
    stopped holds that copy (its `backup_pre` copy is made only while the app runs)."""
    if store.path is None:
        return
    started = time.monotonic()
    try:
        store.backup_to(backup_path(store.path))
    except StoreError as exc:
        log.warning(f"no backup copy at stop: {exc.message}")
        return
    log.info("backup copy written", extra={"seconds": round(time.monotonic() - started, 2)})


def _mask_kept_errors(store: Store) -> None:
    """Mask the secrets in error texts an earlier release kept as the services said them
    (`Store.mask_kept_errors`), and tell how many there were."""
    started = time.monotonic()
    try:
        masked = store.mask_kept_errors()
    except (sqlite3.Error, StoreError) as exc:  # a full disk, a lock held long: not fatal
        log.warning(f"kept error texts not masked this time, the next start tries again: {exc}")
        return
    if masked:
        log.info(
            "kept error texts masked: they quoted a secret the log masks",
            extra={"texts": masked, "seconds": round(time.monotonic() - started, 2)},
        )


def _lifespan(runtime: Runtime, tasks: Sequence[BackgroundTask]) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        runtime.open(service=True)
        # With every secret the log masks known now (the database's sign-ins' too).
        await asyncio.to_thread(_mask_kept_errors, runtime.store)
        # Read before the maintenance task notes this start as alive (a quick read).
        sources = unread_sources(runtime.config, runtime.store.recent_sources())
        last = runtime.store.alive_reading()
        alive_at = None if last is None else last.wall
        runtime.downtime = downtime_notice(last, runtime.reading(), sources)
        absence = f"{alive_at or 0:.0f}"
        # A backup copy put back: the copy's alive note is as old as the copy, but the
        # service ran after it, so "was not running" would be untrue (and marking plays
        # watched again would send them twice); the restore is told instead, once: by this
        # start, or by a `watchbridge sync` that took it first (then nothing is told here).
        store = runtime.store
        if (copied := await asyncio.to_thread(store.tell_restore, by_service=True)) is not None:
            runtime.downtime = restore_notice(copied)
            absence = restore_key(copied)
        elif await asyncio.to_thread(runtime.store.restore_told_elsewhere):
            runtime.downtime = None
        stop = runtime.background_stop()
        running = [asyncio.create_task(_supervise(t, runtime, stop), name=t.name) for t in tasks]
        log.info(
            "watchbridge started",
            extra={
                "version": __version__,
                "config": str(runtime.config.source),
                "tasks": ",".join(t.name for t in tasks) or "none",
                "time_zone": zone_in_use(),
            },
        )
        mountinfo = read_mountinfo()
        for problem in start_warnings(
            runtime.config, runtime.notifier.invalid_urls, mountinfo=mountinfo
        ):
            log.warning(problem)
        if journal := runtime.store.journal_problem:
            log.warning(journal)
        notice = await asyncio.to_thread(
            anilist_client_id_notice, runtime.config, runtime.store, runtime.clock()
        )
        if notice.warning:
            log.warning(notice.warning)
        if notice.info:
            log.info(notice.info)
        from watchbridge.anime_data import overrides_problem

        if overrides := await asyncio.to_thread(overrides_problem, runtime.config):
            log.warning(
                f"{overrides}; until then every use of the anime mapping fails on it (AniList "
                "deliveries, links with AniList)"
            )
        told: asyncio.Task[str] | None = None
        if runtime.downtime:
            log.warning(runtime.downtime)
            # Sent beside the start, not before it: Apprise may take its timeout. Each
            # absence is its own condition (by when it began), told once, never "resolved".
            title = DOWNTIME_TITLE if copied is None else RESTORED_TITLE
            told = asyncio.create_task(
                runtime.notifier.notify("downtime", title, runtime.downtime, absence)
            )
        with_state = await asyncio.to_thread(runtime.store.profiles_with_state)
        links_kept = await asyncio.to_thread(runtime.store.links_with_state)
        renamed = renamed_profiles(runtime.config, with_state)
        for problem in renamed + renamed_links(runtime.config, links_kept):
            log.warning(problem)
        try:
            yield
        finally:
            # Set when the stop began (`note_stopping`), its time counted from then.
            stopping_for = runtime.stop_background()
            if told is not None and not told.done():
                told.cancel()
            if running:
                left = max(runtime.config.server.shutdown_timeout - stopping_for, 0.0)
                _finished, late = await asyncio.wait(running, timeout=left)
                for pending in late:
                    log.warning(
                        "background task did not stop in time", extra={"task": pending.get_name()}
                    )
                    pending.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            await runtime.page_sign_ins.close()
            await runtime.page_reviews.close()
            await runtime.stop_noted()
            runtime.note_alive()  # alive to the stop's end: noted again, later
            if runtime.backup_on_stop:
                _backup_at_stop(runtime.store)
            runtime.close()
            log.info("watchbridge stopped")

    return lifespan


# --------------------------------------------------------------------------- routes


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@get("/readyz")
async def readyz(runtime: NamedDependency[Runtime]) -> Response[dict[str, str]]:
    """Ready when the config is loaded and the store takes writes."""
    try:
        await asyncio.to_thread(runtime.store.check_writable, runtime.clock())
    except StoreError as exc:
        return Response({"status": "unavailable", "reason": exc.message}, status_code=503)
    return Response({"status": "ready"})


@get("/metrics")
async def metrics(runtime: NamedDependency[Runtime]) -> Response[bytes]:
    body = await asyncio.to_thread(runtime.metrics.render)
    # As a header: Litestar adds its own charset to a text/* media_type, saying it twice.
    return Response(body, headers={"content-type": CONTENT_TYPE})


# What a browser fetches into a frame: a page of the same origin can read what is in it.
FRAMES = frozenset({"iframe", "frame", "embed", "object"})
READ_BY_A_PAGE = (
    "the status page and API open in the browser's own tab or window, not in a script or frame "
    "of another page (a web page reaching this port through DNS rebinding could read them); "
    "behind a reverse proxy, list its address under server.trusted_proxies"
)


def read_by_a_page(headers: Mapping[str, str]) -> bool:
    """Whether a browser fetched this for a script or a frame of a page of the same origin
    (its Fetch Metadata headers). Our page has neither, so that page is another one served
    under our host and port: one whose DNS name now points at this machine (DNS rebinding),
    which could read what the answer says. Tabs, links, curl and other sites are not. Pure."""
    if headers.get("sec-fetch-site") != "same-origin":
        return False
    return headers.get("sec-fetch-mode") != "navigate" or headers.get("sec-fetch-dest") in FRAMES


class HostRefused(PermissionDeniedException):
    """A request for the page or the API under a name a DNS-rebinding page could have: a
    browser gets the refusal as a page (`_host_refused`)."""


def require_api_token(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    """The status page and the API: a trusted proxy's requests pass; with no api_token,
    any other's under a name no DNS-rebinding page can have (rebinding.py) but those a script
    or frame of a web page makes; else those with the token."""
    runtime: Runtime = connection.app.state.runtime
    server = runtime.config.server
    client = connection.client.host if connection.client else ""
    if is_trusted_proxy(client, server.trusted_proxies):
        return
    if server.api_token is None or not server.api_token:
        host = connection.headers.get("host")
        if host is not None and not rebinding.answers(host, server.allowed_hosts):
            refusal = rebinding.refusal(host)
            if runtime.refused_hosts.first(host):
                log.warning("request refused: " + refusal, extra={"path": connection.url.path})
            raise HostRefused(refusal)
        if read_by_a_page(connection.headers):
            raise PermissionDeniedException(READ_BY_A_PAGE)
        return
    scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
    supplied = credentials.strip(" \t") if scheme.lower() == "bearer" else ""  # any case
    # Header bytes come decoded as Latin-1: back to the bytes sent, which a token holding a
    # letter outside ASCII (a proxy's, curl's) has in UTF-8, as the config does.
    if not hmac.compare_digest(supplied.encode("latin-1"), server.api_token.reveal().encode()):
        raise NotAuthorizedException(
            "missing or wrong API token (Authorization: Bearer ...)",
            headers={"www-authenticate": 'Bearer realm="watchbridge"'},
        )


@get(
    "/api/status",
    guards=[require_api_token],
    cache_control=CacheControlHeader(no_store=True),  # as the page: sign-in codes, names
)
async def api_status(runtime: NamedDependency[Runtime]) -> dict[str, Any]:
    """Queue, dead letters, last sync runs and sign-ins (as the page has them)."""
    from watchbridge.statuspage import page_state, unlisted_fix

    now = runtime.clock()
    # The page's reads of the store, shaped for scripts here.
    page = await page_state(runtime, now)
    status, health, kept = page.status, page.sign_ins, page.kept
    apart = await asyncio.to_thread(numbered_apart, runtime.config, runtime.store)
    not_sent = await asyncio.to_thread(anime_not_sent, runtime.config, runtime.store)
    # The AniList lines of `sign_ins`, in the shape kept for scripts (PROFILE: in words).
    anilist = [f"{one.profile}: {one.message}" for one in health if one.service == "anilist"]
    by_profile: dict[str, list[dict[str, Any]]] = {name: [] for name in runtime.config.profiles}
    for one in health:
        if not one.service_wide:
            by_profile[one.profile].append(one.as_json())
    return {
        "version": __version__,
        # Each profile's Trakt, AniList and Serializd sign-in: state, expiry, what to run.
        "sign_ins": by_profile,
        # No profile's: a refused Plex server token (services.plex.token).
        "service_sign_ins": [one.as_json() for one in health if one.service_wide],
        "anilist_sign_ins": anilist,  # the same AniList lines as before, kept for scripts
        "outbox": status.outbox,
        "dead_letters": status.dead_letters,
        "unmatched": status.unmatched,
        # Rows with no reason of their own, behind an earlier one of their item (in order).
        "behind": status.behind,
        "held": [
            {
                "target": w.target,
                "profile": w.profile,
                "rows": w.rows,
                "reason": w.reason,
                "next_at": w.next_at,
            }
            for w in status.waiting
        ],
        "held_left_out": status.waiting_left_out,
        # Plays `deadletters discard --for-good` keeps off a link's target, per link and profile.
        "kept_off": [
            {
                "link": k.link,
                "profile": k.profile,
                "target": k.target,
                "plays": k.plays,
                "fix": KEPT_OFF_FIX,
            }
            for k in status.kept_off
        ],
        "oldest_pending_at": status.oldest_pending_at,
        # Titles whose AniList episodes the media server numbers its own way (a TheTVDB
        # ordering nothing renumbers): never written there until the fix is made.
        "anime_numbered_apart": apart,
        # Per profile, shows likely anime (an anime id, absolute numbering, the genre Anime or
        # Animation) whose plays were kept off AniList as no mapping dataset knows them.
        "anime_not_sent": [
            {
                "profile": one.profile,
                "titles": [asdict(title) for title in one.titles],
                "message": one.message,
            }
            for one in not_sent
        ],
        # The status page's anime lines, as `watchbridge status` says them (`anime:`).
        "anime": list(page.anime),
        # Jellyfin's and Emby's plays the webhooks missed (catchup.py), per server: those
        # caught up in the last week, why its last read failed, accounts listed it has not
        # (`needs_you`), as `watchbridge status` says them (`catch-up:`).
        "catch_up": [line.as_json() for line in page.catch_up],
        # Whether alerts reach anyone (the page's Alerts): entries not loaded, failed sends.
        "alerts": asdict(runtime.notifier.health()),
        # How far each service's clock is ahead of this machine's (seconds, its Date header).
        "clock_skew": {service: round(skew) for service, skew in runtime.metrics.clocks.items()},
        # Profiles whose last Plex history read got rows of other accounts (dropped): the
        # server ignores the accountID filter.
        "plex_history_unfiltered": [
            {"profile": u.profile, "rows": u.rows, "at": u.at, "message": u.message}
            for u in runtime.metrics.unfiltered.values()
        ],
        "downtime": runtime.downtime,
        "unmapped_accounts": [
            {
                "source": s.source,
                "server": s.server,
                "account": s.account,
                "webhooks": s.webhooks,
                "last_at": s.last_at,
                "fix": s.fix,
            }
            for s in runtime.unmapped.recent()
        ],
        # Accounts no profile lists that sent webhooks, as the database remembers them
        # (unlisted.py): the config line that lists each, and its `unlisted_account` alert.
        "unlisted_accounts": [
            {
                "source": u.source,
                "server": u.server,
                "server_name": u.server_name,
                "account_id": u.account_id,
                "name": u.name,
                "first_at": u.first_at,
                "last_at": u.last_at,
                "webhooks": u.webhooks,
                "plays": u.plays,
                "alerted": u.state in (ALERTED, OVER),
                "profile": u.profile or None,
                # The profile whose person it probably is: the name of an account it lists
                # on another server (unlisted.probably_of); `line` then lists it there.
                "probably_of": (own := probably_of(runtime.config, u, page.learnt)),
                "line": u.line(runtime.config, u.profile or own),
                "fix": unlisted_fix(runtime.config, u, page.learnt),
            }
            for u in page.unlisted
        ],
        # People listed for Plex's own webhook whose plays it did not send, taken from
        # Tautulli's reports (forplex.py): the config line that lists them for Tautulli's.
        "not_sent_by_plex": [
            {
                "profile": one.profile,
                "server": one.server,
                "server_name": one.server_name,
                "account_id": one.account_id,
                "name": one.name,
                "plays": plays,
                "last_at": one.received_at,
                "line": one.line(runtime.config),
            }
            for one, plays in page.not_sent_by_plex
        ],
        # Tautulli servers that sent stops and no Watched (tautulliwatched.py): what to tick;
        # `nothing_sent`: no stop reached its watched percent either (the alert's case).
        "tautulli_without_watched": [
            {
                "server": seen.server,
                "server_name": seen.name,
                "stops": seen.stops,
                "first_stop_at": seen.first_stop_at,
                "last_stop_at": seen.last_stop_at,
                "watched_at": seen.watched_at,
                "nothing_sent": seen.nothing_sent,
                "fix": tautulliwatched.status_line(seen),
            }
            for seen in page.no_watched
        ],
        # Accounts no profile lists whose webhooks the default profile takes (defaulted.py):
        # the config line that lists each there, and its `unlisted_account` alert.
        "default_profile_accounts": [
            {
                "source": u.source,
                "server": u.server,
                "server_name": u.server_name,
                "account_id": u.account_id,
                "name": u.name,
                "default_profile": u.default_profile,
                "first_at": u.first_at,
                "last_at": u.last_at,
                "webhooks": u.webhooks,
                "plays": u.plays,
                "alerted": u.state in (ALERTED, OVER),
                "profile": u.profile or None,
                "line": defaulted_line(runtime.config, u, u.profile or None),
                "message": defaulted_message(runtime.config, u),
            }
            for u in page.defaulted
        ],
        # Accounts two profiles list, one by name and one by id (account_ids.ListedTwice):
        # whose plays go where, and the line to remove; webhooks since the start.
        "listed_twice_accounts": [
            {
                "source": t.twice.source,
                "server": t.twice.server,
                "account_id": t.twice.account_id,
                "name": t.twice.name,
                "profile": t.twice.profile,
                "also_listed_by": t.twice.other_profile,
                "remove": t.twice.remove,
                "webhooks": t.webhooks,
                "last_at": t.last_at,
                "message": t.twice.message,
            }
            for t in page.listed_twice
        ],
        # Accounts whose webhooks went to a profile by an id remembered for a name it lists:
        # renamed on the media server (account_ids.py), since the start.
        "renamed_accounts": [
            {
                "source": r.renamed.key.source,
                "server": r.renamed.key.server,
                "account_id": r.renamed.key.account_id,
                "name": r.renamed.name,
                "was": r.renamed.learnt.name,
                "profile": r.renamed.learnt.profile,
                "webhooks": r.webhooks,
                "last_at": r.last_at,
                "message": r.renamed.message,
            }
            for r in runtime.account_ids.recent()
        ],
        # Accounts whose webhooks went to a profile by a name remembered for an id it lists:
        # made again on the media server with a new id (account_ids.py), since the start.
        "new_account_ids": [
            {
                "source": n.new_id.key.source,
                "server": n.new_id.key.server,
                "account_id": n.new_id.key.account_id,
                "name": n.new_id.name,
                "was": n.new_id.was.account_id,
                "profile": n.new_id.learnt.profile,
                "webhooks": n.webhooks,
                "last_at": n.last_at,
                "message": n.new_id.message,
            }
            for n in runtime.account_ids.recent_new_ids()
        ],
        # Why the database cannot be written (its disk full, read-only, locked), while so.
        "storage": None
        if runtime.storage_fault is None
        else {
            "kind": runtime.storage_fault.kind,
            "problem": runtime.storage_fault.problem,
            "error": runtime.storage_fault.said,
            "fix": runtime.storage_fault.fix,
        },
        # When each source (and server it names; "" none) last had a webhook accepted, and
        # the server's own name ("" where its webhooks give none).
        "last_webhooks": [
            {"source": w.source, "server": w.server, "server_name": w.name, "at": w.at}
            for w in runtime.last_webhooks.recent()
        ],
        # When each source last sent its test notification (no play), since the start.
        "test_notifications": [
            {"source": t.source, "at": t.at} for t in runtime.last_webhooks.tests()
        ],
        "refused_webhooks": [
            {
                "source": r.source,
                "outcome": r.outcome,
                "status": r.status,
                "webhooks": r.webhooks,
                "last_at": r.last_at,
                "reason": r.reason,
                "fix": r.fix(runtime.home_assistant),
                "taken_again_at": r.taken_at if r.over(now) else None,
                "warning": r.warning(now),  # the plays refused stay lost, even once over
            }
            for r in runtime.refused.recent()
        ],
        "reported_twice": [
            {
                "profile": d.profile,
                "server": d.server,
                "first_at": d.first_at,
                "last_at": d.last_at,
                "counted_twice": d.counted_twice,
                "message": d.message,
                "fix": d.fix,
            }
            for d in runtime.senders.recent(now)
        ],
        "links": [
            {
                "link": r.link,
                "outcome": r.outcome,
                "error": r.error,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "counts": r.counts,
                # While it runs: its requests so far, as its last heartbeat recorded them.
                "api_calls": r.progress.requests if r.progress else r.api_calls,
                "last_success_at": status.last_success_at.get(r.link),
                "progress": _run_progress(r.progress),
            }
            for r in (run.as_seen(now) for run in status.last_runs)
        ],
        # Profiles and links the config no longer has (renamed?), whose state is kept.
        "no_longer_in_the_config": [
            {"kind": k.kind, "name": k.name, "kept": k.kept, "fix": k.fix} for k in kept
        ],
    }


def _run_progress(progress: RunProgress | None) -> dict[str, Any] | None:
    """How far a running run has got, for `/api/status` (None: not running, or nothing
    recorded yet: a run records it at each heartbeat, every minute)."""
    if progress is None:
        return None
    return {**asdict(progress), "text": progress.words()}


# --------------------------------------------------------------------------- middleware


class WebhookPortMiddleware(ASGIMiddleware):
    """On server.webhook_port, serve only webhooks, metrics and health; hide the API and UI."""

    def __init__(self, webhook_port: int | None) -> None:
        self.webhook_port = webhook_port

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if self.webhook_port is not None and scope["type"] == ScopeType.HTTP:
            server = scope.get("server")
            if (
                server
                and server[1] == self.webhook_port
                and not scope["path"].startswith(WEBHOOK_PORT_PATHS)
            ):
                raise NotFoundException()
        await next_app(scope, receive, send)


UNREADABLE_HOST = (
    "the request's Host header is no host name or address with a port number from 0 to 65535 "
    "after it (host or host:port)"
)


class HostHeaderMiddleware(ASGIMiddleware):
    """A Host header whose port is no number is a 400: Litestar makes the request's URL of it
    for some answers (a query parameter missing) and would fail there, a 500. A request with
    none (HTTP/1.0: a load balancer's health check) gets one naming the address it came in on,
    bracketed where it is IPv6 (`server.host: ::`): Litestar's own reading of that address
    takes the address's last part for a port."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] == ScopeType.HTTP:
            headers = scope.get("headers", ())
            if any(name == b"host" for name, _ in headers):
                try:
                    URL.from_scope(scope)
                except ValueError:
                    raise ClientException(UNREADABLE_HOST) from None
            elif (server := scope.get("server")) and ":" in server[0]:
                host = f"[{server[0]}]:{server[1]}".encode("ascii")
                scope["headers"] = [*headers, (b"host", host)]
        await next_app(scope, receive, send)


def _plain_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Every error answer is one JSON object with a one-line message, no secret in it (Litestar's
    own quote the request's query, which may carry the API token); never a traceback. Its
    headers stay: a 405's Allow (with HEAD wherever GET is, see App._head), a 401's
    WWW-Authenticate."""
    runtime: Runtime = request.app.state.runtime
    headers = {name.lower(): value for name, value in (exc.headers or {}).items()}
    allow = [method.strip() for method in headers.get("allow", "").split(",") if method.strip()]
    if "GET" in allow and "HEAD" not in allow:
        headers["allow"] = ", ".join([*allow, "HEAD"])
    return Response(
        {"error": runtime.redact.known(exc.detail), "status": exc.status_code},
        status_code=exc.status_code,
        headers=headers,
    )


def _host_refused(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A name the page is not answered under: a browser (it asks for HTML) gets a page saying
    what to do, in the status page's style; a script the one JSON line of every error."""
    if "text/html" not in request.headers.get("accept", ""):
        return _plain_error(request, exc)
    from watchbridge.statuspage import render_refused

    runtime: Runtime = request.app.state.runtime
    return Response(
        render_refused(runtime.redact.known(exc.detail)),
        status_code=exc.status_code,
        media_type="text/html",
    )


def _storage_error(request: Request[Any, Any, Any], exc: sqlite3.Error) -> Response[dict[str, Any]]:
    """The database failed a read of the page or the API (damaged, or held by another process):
    a 503 saying so in one line, and a warning without a traceback (the disk's trouble, not a
    bug)."""
    if not isinstance(exc, sqlite3.DatabaseError) or not storage_fault(exc):
        return _internal_error(request, exc)  # our SQL (a constraint, a closed connection)
    if locked_by_another(exc):
        reason = f"{LOCKED_BY_ANOTHER}; try again in a minute"
    else:
        reason = (
            f"the database (storage.path) could not be read ({' '.join(str(exc).split())}): "
            "check the disk that holds it (full? read-only? failing?); /readyz says when the "
            "database works again"
        )
    log.warning("request refused: " + reason, extra={"path": request.url.path})
    return Response({"error": reason, "status": 503}, status_code=503)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unexpected error", exc_info=exc, extra={"path": request.url.path})
    return Response(
        {"error": "internal error, see the watchbridge log", "status": 500}, status_code=500
    )


BEFORE_ROUTER = "before_router"


class App(Litestar):
    """Litestar, except that mounted ASGI handlers with `opt={BEFORE_ROUTER: True}` get their
    requests before the exception middleware, router and middleware stack, with the scope
    the mount would give them. They answer their own errors.

    Webhooks (the one such handler) come in bursts and each waits for a disk sync; Litestar's
    per-request path (about 30 us) was the largest cost left that the answer does not need.
    """

    before_router: tuple[tuple[str, ASGIApp], ...] = ()

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            http = cast("HTTPScope", scope)
            path = http["path"]
            for prefix, handler in self.before_router:
                if path.startswith(prefix):
                    http["app"] = http["litestar_app"] = self
                    http["path"] = normalize_path(path)[len(prefix) - 1 :] + "/"
                    await handler(http, cast("Receive", receive), cast("Send", send))
                    return
            if http["method"] == "HEAD":
                await self._head(http, cast("Receive", receive), cast("Send", send))
                return
        await super().__call__(scope, receive, send)

    async def _head(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """HEAD is GET without the body (RFC 9110), which Litestar's routes do not answer:
        uptime monitors and `curl -I` ask /healthz so. The copy of the scope keeps the
        server's own saying HEAD."""

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await super().__call__({**scope, "method": "GET"}, receive, headers_only)


def _before_router(routes: Sequence[Any]) -> tuple[tuple[str, ASGIApp], ...]:
    return tuple(
        (path.rstrip("/") + "/", route.fn)
        for route in routes
        if isinstance(route, ASGIRouteHandler) and route.is_mount and route.opt.get(BEFORE_ROUTER)
        for path in route.paths
    )


def create_app(
    runtime: Runtime,
    tasks: Sequence[BackgroundTask] = (),
    extra_routes: Sequence[Any] = (),
) -> Litestar:
    """Build the app around an injected runtime (config, store factory, clock, notifier)."""
    app = App(
        route_handlers=[healthz, readyz, metrics, api_status, *extra_routes],
        dependencies={"runtime": Provide(lambda: runtime, use_cache=True, sync_to_thread=False)},
        lifespan=[_lifespan(runtime, tasks)],
        middleware=[
            WebhookPortMiddleware(runtime.config.server.webhook_port),
            HostHeaderMiddleware(),
        ],
        exception_handlers={
            HostRefused: _host_refused,
            HTTPException: _plain_error,
            sqlite3.Error: _storage_error,
            Exception: _internal_error,
        },
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.state.runtime = runtime
    app.before_router = _before_router(extra_routes)
    return app
