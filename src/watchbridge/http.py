"""The one HTTP policy for every adapter: headers, pacing, retries, Retry-After, metrics, redaction.

Adapters get an `HttpClient` per service and turn its answers into their own typed errors.
Transient trouble (5xx, Cloudflare 52x, timeouts, dropped connections, short 429s) is retried
here; anything that needs a decision (401, 403, 420, 423, 426, long 429s) is returned or raised
for the adapter and the delivery worker to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import functools
import ipaddress
import json
import logging
import math
import random
import re
import socket
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.request import getproxies

import httpx

# The proxies httpx takes from the environment, read its own way (NO_PROXY included). A
# private module: httpx is pinned exactly in pyproject.toml, and tests/test_http_network.py
# fails if an upgrade moves it.
from httpx._utils import URLPattern, get_environment_proxies

from watchbridge import __version__
from watchbridge.backoff import doubled
from watchbridge.config import service_title
from watchbridge.errors import WatchbridgeError
from watchbridge.logs import REMINDER_EVERY, Redactor, Repeating
from watchbridge.metrics import Metrics

log = logging.getLogger(__name__)

USER_AGENT = f"watchbridge/{__version__}"
# A machine clock this far off a service's is worth a warning: plays are matched by the minute.
CLOCK_WARNING = 120.0
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# A write answered so may have been done first: the web's "post, then redirect" pattern.
REDIRECT_AFTER_WORK = frozenset({302, 303})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504, 520, 521, 522, 523, 524, 525, 526, 527, 530})
# A proxy's answer: the origin may have done the work before the gateway gave up. A 500 is the
# service failing mid-request, possibly after it wrote; a 503 is the service refusing work.
AMBIGUOUS_STATUS = frozenset({500, 502, 504, 520, 522, 523, 524, 530})
# Answers that say the service is down (its gateway speaks for it), not that this request
# failed: a 500 is the service failing on the request itself.
DOWN_STATUS = TRANSIENT_STATUS - {500}
R = TypeVar("R")  # a row of an answer (`rows_unread`)
UNSENDABLE = (
    "the request could not be sent: a token or key it carries holds a character HTTP does "
    "not allow (pasted with a space or an invisible character?): set it, or sign in, again"
)


class ServiceError(WatchbridgeError):
    """A service could not do what we asked; `retry_after` says when trying again makes sense."""

    def __init__(self, service: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(said_by(service, message))
        self.service = service
        self.said = message  # without the service's name in front
        self.retry_after = retry_after

    def quoted(self, named: str) -> str:
        """The message for a text that names `named` (a config name) before it: without the
        service's name in front again when it is that service's own."""
        return self.said if named == self.service else self.message


def said_by(service: str, message: str) -> str:
    """`message` as a line of `service` (a config name), headed by the service's own written
    name: "Trakt: answered 503 ...", but one that begins by naming the service ("Trakt no
    longer accepts ...") as it is, not "Trakt: Trakt ..."."""
    name = service_title(service)
    if re.match(rf"{re.escape(name)}\b", message, re.IGNORECASE):
        return message
    return f"{name}: {message}"


NOTHING_TAKEN = "nothing is synced from it until it reads again"


def changed_answer(name: str, what: str, then: str = NOTHING_TAKEN) -> str:
    """The one way every client says that `name` (the service as a user knows it) answered
    `what` in a shape watchbridge does not know (a field renamed or gone, a number sent as
    text, a list wrapped in an object), and `then`, what watchbridge does meanwhile. What
    could not be read is never taken as gone: that would remove it from the other side."""
    return (
        f"{what}: {name} may have changed its answers, and watchbridge may need an update "
        f"(see Troubleshooting in the README); {then}"
    )


def rows_unread(rows: Sequence[R], problem: Callable[[R], str | None], noun: str = "rows") -> str:
    """How many of an answer's `rows` have each `problem` watchbridge cannot read them for,
    "N of M rows have P; K of M rows have Q" ("" when none): the one way clients count
    them, for `changed_answer`. Such a row left out would read as an item gone."""
    problems: dict[str, int] = {}
    count_problems(rows, problem, problems)
    return problems_said(problems, len(rows), noun)


def count_problems(
    rows: Iterable[R], problem: Callable[[R], str | None], problems: dict[str, int]
) -> None:
    """Add each row's `problem` (if any) to `problems` (problem -> rows having it): the count
    `rows_unread` makes, page by page for an answer read in pages."""
    for row in rows:
        if (found := problem(row)) is not None:
            problems[found] = problems.get(found, 0) + 1


def problems_said(problems: Mapping[str, int], total: int, noun: str = "rows") -> str:
    """`count_problems`' counts of `total` rows as `rows_unread` says them."""
    return "; ".join(f"{n} of {total} {noun} have {p}" for p, n in problems.items())


class Unavailable(ServiceError):
    """Down, overloaded, timing out or unreachable: try again later.

    `outcome_unknown` is True when a try may have reached the service (a timeout, a dropped
    connection, a 500 or a gateway's error), so a write may have happened after all.
    `answered` is True when the last try of a write got an HTTP error: the service is failing,
    or this request makes it fail, not only a connection. A read or a sign-in that fails says
    nothing about any one row, so it is never `answered`. `status`: the last try's HTTP
    status (None: no answer at all, a timeout or a connection that failed).
    """

    def __init__(
        self,
        service: str,
        message: str,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        answered: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(service, message, retry_after)
        self.outcome_unknown = outcome_unknown
        self.answered = answered
        self.status = status


# Awaited before each try of a write, after all its waits (pacing, a 429's, a token refresh):
# a delivery's check that its worker still holds the rows being written (deliver.fence), which
# raises to send nothing. Set for the run of one delivery batch; None elsewhere.
BEFORE_WRITE: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "before_write", default=None
)
# The services that gave an answer no outage gives (anything but a server error, a gateway's
# error or a rate limit) from their own base URL, not their sign-in host, and of their own, not
# a proxy's page in their place (`HttpClient.own_answer`): a sign-in refused there shows the
# service is back. Set for the run of one delivery batch; None elsewhere.
ANSWERED: ContextVar[set[str] | None] = ContextVar("answered", default=None)


class Withheld(Unavailable):
    """A write the delivery's check (BEFORE_WRITE) kept from going: that try sent nothing
    (`outcome_unknown` says whether a try before it may have landed)."""


def refused_unread(exc: Unavailable) -> bool:
    """Whether `exc` proves its write was not taken: the last try was answered 429 (a rate
    limit, or a bot checkpoint in its place), which a service gives before it processes a
    request, or was kept from going (`Withheld`), and no try before it may have landed."""
    return (exc.status == 429 or isinstance(exc, Withheld)) and not exc.outcome_unknown


class RateLimited(Unavailable):
    """429 with a wait longer than we are willing to sleep inline."""


class Redirected(Unavailable):
    """A redirect answered in place of the service's answer: not followed, since the token or
    key a request carries would go with it wherever it points. Held like an outage (the
    request was not the service's to take) until the URL in the config is set to where it
    points, or the redirect passes."""


class Unsendable(Unavailable):
    """Not sent at all: a header value (a pasted token or key) holds a character HTTP does
    not allow. Held like an outage (trying again cannot help) until someone sets it again."""


def _unsendable(*header_sets: Any) -> bool:
    """Whether a header value holds a character a request cannot carry."""
    return any(
        isinstance(value, str) and not (value.isascii() and value.isprintable())
        for headers in header_sets
        if headers
        for value in headers.values()
    )


@dataclass
class Bucket:
    """A token bucket: `capacity` requests at once, refilled at `per_second`."""

    capacity: float
    per_second: float
    tokens: float = -1.0
    updated: float = 0.0

    def wait_time(self, now: float) -> float:
        """Seconds until a token is free (0 when one is), taking it when free."""
        if self.tokens < 0:
            self.tokens, self.updated = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


PAUSE_CHECK = 1.0  # seconds: how often a request waiting for its turn looks for a new pause


class Paused(Exception):
    """A 429 pauses the account longer than the request may wait (`Pacer.acquire`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"paused for {seconds:.0f}s")
        self.seconds = seconds


@dataclass
class Pause:
    """Until when a 429 holds requests (a `time.monotonic()` moment). One per pacer, or one
    shared by the pacers of a host that may limit by address rather than by account: a 429
    on any of them then holds them all."""

    until: float = 0.0
    # 429s in a row that said no wait (see `HttpClient.request`): each doubles our own.
    unsaid: int = 0


@dataclass
class Pacer:
    """Keeps one account under a service's rate limits; a 429 pauses every bucket (and every
    pacer sharing its `pause`).

    Requests of one bucket take turns in order; those of another bucket do not wait behind
    them (a live scrobble is not held up by a sync's reads waiting for the read bucket)."""

    buckets: dict[str, Bucket] = field(default_factory=dict)
    pause: Pause = field(default_factory=Pause)
    queues: dict[str | None, asyncio.Lock] = field(default_factory=dict)

    @property
    def blocked_until(self) -> float:
        return self.pause.until

    async def acquire(self, bucket: str | None, give_up_after: float = math.inf) -> None:
        """Wait for a request's turn; raises Paused when a 429 (this request's or another's,
        also one arriving while it waits) pauses the account longer than `give_up_after`."""
        # Pacing is about real elapsed time, never an injected (possibly frozen) clock.
        async with self.queues.setdefault(bucket, asyncio.Lock()):
            while True:
                now = time.monotonic()
                wait = max(0.0, self.blocked_until - now)
                if wait > give_up_after:
                    raise Paused(wait)
                if not wait and bucket in self.buckets:
                    wait = self.buckets[bucket].wait_time(now)
                if not wait:
                    return
                # Woken early by a block that begins meanwhile (see `block`).
                await asyncio.sleep(min(wait, PAUSE_CHECK))

    def block(self, seconds: float) -> None:
        self.pause.until = max(self.pause.until, time.monotonic() + seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Inline retries for transient failures within one call."""

    attempts: int = 3
    backoff: float = 0.5
    max_inline_wait: float = 15.0  # longer Retry-After values go back to the caller


# The longest wait a service's `Retry-After` or `X-Ratelimit` is taken for: 6 hours, the default
# `delivery.max_backoff`. Trakt's observed waits reach ~2850 s; far longer ones (99999999, a
# date years ahead) are a proxy's or a service's bug, which would otherwise park rows for years
# (their due time is stored) and put a pacer to sleep for as long.
MAX_RETRY_AFTER = 6 * 3600.0


# How long a service is held after a page a firewall (Cloudflare's) or a proxy answered in its
# place (`HttpClient.own_answer`): such blocks pass in minutes, and asking sooner may only
# lengthen them (pitfalls/trakt.md §7).
IN_ITS_PLACE_PAUSE = 600.0


# The longest wait of our own after 429s in a row that say no wait (an abuse filter's, with
# neither Retry-After nor X-Ratelimit, or a wait of 0 or a date past): Trakt's trip blocks
# every call for minutes (trakt-api#827), and asking sooner may only lengthen it.
UNSAID_LIMIT_MAX = 600.0


def shown_url(url: str) -> str:
    """`url` fit for a message a user may paste anywhere: without a password (a proxy's
    `user:password@`) and without its query (a signed URL's token)."""
    parts = httpx.URL(url)
    return str(parts.copy_with(userinfo=b"", query=None, fragment=None))


def http_date(value: str) -> float | None:
    """An HTTP date as a Unix time (whole seconds), or None when it is not one."""
    try:
        said = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP dates are GMT; one without a zone (or "-0000") is too, not this machine's local time.
    return (said if said.tzinfo else said.replace(tzinfo=UTC)).timestamp()


def date_header_time(headers: Mapping[str, str]) -> float | None:
    """The time an answer's Date header gives, or None."""
    value = headers.get("date")
    return http_date(value) if value else None


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """`Retry-After` as seconds, whether given as seconds or as an HTTP date, at most
    MAX_RETRY_AFTER; None when absent or not a usable number (one too large for a float)."""
    value = (headers.get("retry-after") or "").strip()
    if value.isascii() and value.replace(".", "", 1).isdigit():
        return _service_wait(float(value))
    moment = http_date(value) if value else None
    return None if moment is None else _service_wait(moment - now)


def ratelimit_until_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the `until` of Trakt's `X-Ratelimit` (JSON naming the bucket that ran out),
    at most MAX_RETRY_AFTER."""
    value = headers.get("x-ratelimit")
    try:
        until = json.loads(value)["until"] if value else None
        moment = datetime.fromisoformat(str(until).replace("Z", "+00:00")) if until else None
    except (ValueError, TypeError, KeyError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _service_wait(moment.timestamp() - now)


def _rate_limited(service: str, wait: float, maybe_written: bool, write: bool) -> RateLimited:
    """The error for a rate limit that asks for `wait` seconds: to wait a second more, never
    more than MAX_RETRY_AFTER; one whose earlier try may have landed says so (a write's, in
    its message too). A rate limit still, whatever came before it: a service limiting each
    account (Trakt) holds that account's deliveries only, not everyone's as an outage would."""
    after = min(wait + 1, MAX_RETRY_AFTER)
    landed = " after a try that may have landed" if maybe_written and write else ""
    return RateLimited(
        service, f"rate limited for {wait:.0f}s{landed}", after, maybe_written, status=429
    )


def _service_wait(seconds: float) -> float | None:
    """A wait a service asked for, within 0..MAX_RETRY_AFTER; None if it is no number (inf, NaN)."""
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.8, 1.2)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one trust store every client uses (httpx's default: certifi, or SSL_CERT_FILE):
    loading the CA bundle costs ~40 ms of CPU and some memory per client otherwise."""
    return httpx.create_ssl_context()


# OpenSSL's reasons a certificate is refused (X509_V_ERR_*), in words a user can act on.
_CERTIFICATE_REASONS = {
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed",
    19: "it is signed by a certificate authority this machine does not trust",
    20: "it is signed by a certificate authority this machine does not trust",
    21: "it is signed by a certificate authority this machine does not trust",
    62: "it is not made out to {host}",
    64: "it is not made out to {host}",
}
NAME_CODES = frozenset({62, 64})
CLOCK_CODES = frozenset({9, 10})  # a wrong clock on this machine reads as either
# What OpenSSL says when the other end answers a TLS hello in plain HTTP (an https:// URL
# at a server's plain http port), across OpenSSL versions.
_PLAIN_HTTP_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)


# What a web server answers (a 400) to a plain http request at its https port, as a reverse
# proxy in front of a media server does: nginx's page, Go's net/http (Caddy, Traefik), and
# Apache's mod_ssl.
PLAIN_AT_HTTPS_PORT = (
    "The plain HTTP request was sent to HTTPS port",
    "Client sent an HTTP request to an HTTPS server",
    "You're speaking plain HTTP to an SSL-enabled server port",
)


def plain_at_https_port(response: httpx.Response) -> str | None:
    """What the server said, of those above, when `response` is its refusal of a plain http
    request at a port that speaks https; None for any other answer."""
    if response.status_code != 400 or response.request.url.scheme != "http":
        return None
    body = response.text.lower()
    return next((said for said in PLAIN_AT_HTTPS_PORT if said.lower() in body), None)


@dataclass(frozen=True)
class ConnectProblem:
    """Why no connection was made, when it is not that nothing listens: the name not looked
    up (`dns`), the server's certificate refused (`certificate`), a server speaking plain
    HTTP to an https:// URL (`plain_http`) or https to an http:// URL (`https_port`), or an
    address only IPv6 reaches from a machine without IPv6 (`no_ipv6`). `what` says it in
    plain words, `why` what is known of the reason ("" when nothing more)."""

    kind: Literal["dns", "certificate", "plain_http", "https_port", "no_ipv6"]
    what: str
    why: str = ""
    verify_code: int = 0


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def connect_problem(error: BaseException, host: str) -> ConnectProblem | None:
    """What `error` (a failed connection to `host`) was, from its cause chain; None when it
    is none of ConnectProblem's kinds (nothing listens, a connection dropped)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            if cause.errno == socket.EAI_AGAIN:
                why = "no DNS server answered"
            else:
                why = "the DNS has no address for it"
            return ConnectProblem("dns", f"the name {host} could not be looked up (DNS)", why)
        if isinstance(cause, ssl.SSLCertVerificationError):
            code = cause.verify_code
            reason = _CERTIFICATE_REASONS.get(code, str(cause.verify_message)).format(host=host)
            what = f"the TLS certificate of {host} was refused"
            return ConnectProblem("certificate", what, reason, code)
        if isinstance(cause, ssl.SSLError) and cause.reason in _PLAIN_HTTP_REASONS:
            return ConnectProblem("plain_http", f"{host} answered https:// in plain HTTP")
        cause = cause.__cause__ or cause.__context__
    return None


# What connecting to an IPv6 address gives on a machine (or in a container) without IPv6:
# no route at all, no IPv6 address to send from, no IPv6 in the kernel.
NO_IPV6_ERRNOS = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


def causes(error: BaseException) -> list[BaseException]:
    """`error` and everything behind it: its causes, and each error of a group (the tries of
    each address of a name)."""
    found: list[BaseException] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        found.append(cause)
        if isinstance(cause, BaseExceptionGroup):
            pending.extend(cause.exceptions)
        pending.extend(c for c in (cause.__cause__, cause.__context__) if c is not None)
    return found


def _errnos(error: BaseException) -> set[int]:
    return {c.errno for c in causes(error) if isinstance(c, OSError) and c.errno is not None}


def no_route(error: BaseException) -> bool:
    """Whether every connection `error` holds (its causes, the tries of each address) failed
    for want of a route or an address to send from, as a machine without IPv6 fails."""
    found = _errnos(error)
    return bool(found) and found <= NO_IPV6_ERRNOS


@dataclass(frozen=True)
class RequestFailure:
    """A request that got no answer watchbridge could read, in words a user can act on:
    `what` happened, and `check`, what to look at when nothing more is known (a media
    server's setting, a proxy, a name the DNS does not know say more, and say it instead)."""

    what: str
    check: str


DROPPED_CHECK = (
    "if it keeps happening, look at the server's log, and at what sits on the way (a reverse "
    "proxy, a firewall, a VPN)"
)
CONNECT_CHECK = "is the address right, the server on, and no firewall dropping the connection?"
REFUSED = RequestFailure(
    "the connection was refused",
    "nothing listens at that address and port: is the service running, and its address right?",
)
DROPPED = RequestFailure("the server closed the connection without answering", DROPPED_CHECK)
CUT_OFF = RequestFailure(
    "the connection broke while the answer came in (it was cut off)", DROPPED_CHECK
)
# Each timeout by the phase it ends (httpx's name for it in a request's `timeout`): what
# timed out, what did not happen within the time allowed, and what to check.
_TIMEOUTS: dict[type[httpx.TimeoutException], tuple[str, str, str, str]] = {
    httpx.ConnectTimeout: ("connect", "connecting timed out", "no connection", CONNECT_CHECK),
    httpx.ReadTimeout: (
        "read",
        "the answer timed out",
        "none came",
        "the service is slow or busy (a library scan, an overloaded server): if it keeps "
        "happening, look at its load and its log",
    ),
    httpx.WriteTimeout: (
        "write",
        "sending the request timed out",
        "not taken",
        "the network to the service is stalled or very slow",
    ),
    httpx.PoolTimeout: (
        "pool",
        "waiting for a free connection timed out",
        "none was free",
        "the service answers too slowly for the requests waiting for it",
    ),
}
_UNREACHABLE_HOST = frozenset({errno.EHOSTUNREACH, errno.EHOSTDOWN})


def request_failure(error: httpx.RequestError) -> RequestFailure:
    """What `error` (a request that failed below HTTP, or an answer that could not be
    decoded) means for a user, from its kind and what caused it. Never its class name nor
    its text, which may quote a URL or what the server sent: those are for the debug log."""
    if isinstance(error, httpx.TimeoutException):
        phase, what, missed, check = next(
            (said for kind, said in _TIMEOUTS.items() if isinstance(error, kind)),
            ("", "the request timed out", "no answer", CONNECT_CHECK),
        )
        seconds = _timeout_of(error, phase)
        return RequestFailure(f"{what} ({missed} within {seconds:g} s)" if seconds else what, check)
    found = causes(error)
    numbers = _errnos(error)
    if isinstance(error, httpx.ConnectError):
        if any(isinstance(c, socket.gaierror) for c in found):
            return RequestFailure(
                "the name could not be looked up (DNS)",
                "is the name right, and does the DNS this machine (or its container) uses answer?",
            )
        if errno.ECONNREFUSED in numbers:
            return REFUSED
        if numbers & _UNREACHABLE_HOST:
            return RequestFailure("no route to the server", CONNECT_CHECK)
        if numbers & NO_IPV6_ERRNOS:
            return RequestFailure(
                "this machine has no route to that network",
                "check the network settings of this machine (or its container)",
            )
        if errno.ETIMEDOUT in numbers:
            return RequestFailure("connecting timed out", CONNECT_CHECK)
        if any(isinstance(c, ssl.SSLCertVerificationError) for c in found):
            return RequestFailure(
                "the TLS certificate of the server was refused",
                "see Certificates, DNS and proxies in the README",
            )
        if any(isinstance(c, ssl.SSLError) for c in found):
            return RequestFailure(
                "the secure (TLS) connection could not be set up",
                "does that address speak TLS, and does nothing on the way (a proxy, a filter "
                "that reads secure connections) break it?",
            )
        if errno.ECONNRESET in numbers:
            return DROPPED
        return RequestFailure("the connection could not be made", CONNECT_CHECK)
    if isinstance(error, httpx.ReadError):
        return DROPPED
    if isinstance(error, httpx.RemoteProtocolError):
        # httpcore's own words for a connection closed before any answer, and h11's for one
        # closed within the body of an answer that had begun; any other is the HTTP parser
        # refusing what came.
        said = str(error).lower()
        if "disconnected" in said:
            return DROPPED
        if "complete message body" in said:
            return CUT_OFF
        return RequestFailure(
            "the answer was not HTTP",
            "something else answers at that address and port (another program, a proxy): is "
            "the address right?",
        )
    if isinstance(error, httpx.WriteError):
        return RequestFailure("the connection broke while the request was sent", DROPPED_CHECK)
    if isinstance(error, httpx.ProxyError):
        return RequestFailure(
            "the proxy did not connect to the service",
            "check HTTP_PROXY, HTTPS_PROXY and ALL_PROXY in the environment of this machine "
            "(or its container)",
        )
    if isinstance(error, httpx.UnsupportedProtocol):
        return RequestFailure(
            "the URL does not start with http:// or https://",
            "check the service's URL in the config",
        )
    if isinstance(error, httpx.DecodingError):
        return RequestFailure(
            "the answer could not be decoded (its compression or character set is broken)",
            "if it keeps happening, check what sits on the way (a proxy, a filter) that may "
            "change answers",
        )
    return RequestFailure("the connection failed", CONNECT_CHECK)


def _timeout_of(error: httpx.RequestError, phase: str) -> float | None:
    """The seconds `error`'s request allowed for `phase` ("read", ...); None when unknown."""
    try:
        timeouts = error.request.extensions.get("timeout") or {}
    except RuntimeError:  # an error made without its request
        return None
    seconds = timeouts.get(phase)
    return float(seconds) if isinstance(seconds, int | float) and seconds > 0 else None


def failure_detail(error: BaseException) -> str:
    """`error` as a maintainer reads it: its class and what caused it, outermost first
    ("ConnectError: All connection attempts failed <- ConnectionRefusedError: ...")."""
    said = (
        f"{type(c).__name__}: {c}" if str(c) else type(c).__name__
        for c in causes(error)
        if not isinstance(c, asyncio.CancelledError)  # the timeout's own machinery
    )
    return " <- ".join(dict.fromkeys(said))  # httpx repeats httpcore's words


async def ipv6_only(host: str, port: int) -> list[str] | None:
    """The addresses of `host` when all are IPv6 (an IPv6 address itself: that one); None
    when it has an IPv4 address, or cannot be looked up now."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host] if address.version == 6 else None
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None
    if not found or any(family != socket.AF_INET6 for family, *_ in found):
        return None
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


# Names only a home network knows (a dotless one is another container's, or `localhost`).
LAN_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal")


def on_home_network(host: str) -> bool:
    """Whether `host` is on the user's own network: a private, link-local or loopback
    address, a name without a dot, or a name ending in a suffix only home networks use."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host or host.lower().endswith(LAN_SUFFIXES)
    return address.is_private or address.is_link_local or address.is_loopback


def environment_proxies() -> list[tuple[URLPattern, str | None]]:
    """The proxies from HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY (None: sent
    directly), the most specific first, as an httpx client made now takes them."""
    return sorted(
        ((URLPattern(pattern), proxy) for pattern, proxy in get_environment_proxies().items()),
        key=lambda mount: mount[0],
    )


# How long the check of whether a port speaks https may take: a server that reset a plain
# request answers a TLS hello at once.
TLS_PROBE_TIMEOUT = 5.0


async def speaks_tls(host: str, port: int) -> bool:
    """Whether the server at `host`:`port` completes a TLS handshake: a plain http request it
    dropped (a ReadError) came to a port that speaks https. Its certificate is not checked
    (only whether it speaks TLS: nothing is sent after the handshake)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(TLS_PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):  # ssl.SSLError is an OSError
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(TLS_PROBE_TIMEOUT):
            await writer.wait_closed()
    return True


# Requests failing through an outage (each probe, each queued row's lookup, each scheduled
# run's new client) are a line once, then hourly, per service and host (a sign-in host apart).
_FAILING = Repeating(log)
# The clocks off for days (the client of each run, each answer of a kept client): a line
# once, then hourly, per service and host, and when they agree again.
_CLOCKS = Repeating(log)
CLOCKS_DIFFER = (
    "the clocks of this machine and of the service differ: plays may be dated or matched wrong"
)
CLOCKS_AGREE = "the clocks of this machine and of the service agree again"


EARLIER_TRY_MAY_HAVE_LANDED = "watchbridge.earlier_try_may_have_landed"


def earlier_try_may_have_landed(response: httpx.Response) -> bool:
    """Whether a try `HttpClient.request` made before this answer may have reached the
    service (a timeout, a dropped connection): a write it then sent again may have landed
    whatever this answer says."""
    return bool(response.extensions.get(EARLIER_TRY_MAY_HAVE_LANDED))


# Seconds a media server's identity check (Plex's /identity, Jellyfin's and Emby's
# /System/Info/Public) vouches that an answer a reverse proxy could give in its place is its own.
IDENTITY_VOUCHES = 60.0


def identity_answer(response: httpx.Response) -> object | None:
    """The JSON of a media server's identity check when it succeeded; None for an error, or a
    body that is no JSON (a proxy's 404, a login page). The server's own shape is each
    service's to read (`Vouch`). Pure."""
    if not response.is_success:
        return None
    try:
        answer: object = response.json()
    except ValueError:
        return None
    return answer


class Vouch:
    """Which server answers at a media server's URL, as its identity check last named it, and
    whether that check vouches for its answers now.

    Behind a reverse proxy (Traefik, nginx, SWAG), a restarting server's container leaves the
    proxy answering 404 or an error page for every path: such an answer is the server's own
    ("no such item", "key refused") only once the check names the server known (any, while
    none is). One check vouches for IDENTITY_VOUCHES seconds: a run meeting many missing items
    does not double its requests."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.known: str | None = None  # the server's id, as a check (or its items) named it
        self._at: float | None = None  # when a check last named it

    def fresh(self) -> bool:
        """Whether a check named the known server within IDENTITY_VOUCHES."""
        at = self._at
        return at is not None and 0 <= self.clock() - at < IDENTITY_VOUCHES

    def named(self, server_id: str | None) -> bool:
        """Take a check's answer: the id it names, None when it named none (a proxy's page).
        True when that is the server known (any, while none is), which it then vouches for."""
        if server_id is None or (self.known is not None and server_id != self.known):
            self._at = None
            return False
        self.known, self._at = server_id, self.clock()
        return True

    def renamed(self, server_id: str) -> None:
        """The server at the URL is `server_id`, as its own answer said (one carrying the id
        only it gives: an item read with its key): another since, such as one reinstalled."""
        if server_id != self.known:
            self.known, self._at = server_id, None

    def not_vouched(self, check: str, kind: str, named: str | None, answer: httpx.Response) -> str:
        """What the `check`'s `answer` (naming server `named`, None: none) said that makes it
        not the known `kind` server's: the start of an outage's reason."""
        if named is not None:
            return f"{check} names another server ({named}, not {self.known})"
        if answer.is_success:
            return f"{check} answered {answer.status_code} with no {kind} server's identity"
        return f"{check} answered {answer.status_code}"


class HttpClient:
    """An httpx client for one service with the shared policy applied to every request."""

    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        metrics: Metrics | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        setting: str | None = None,
        own_answer: Callable[[httpx.Response], bool] | None = None,
        in_its_place: Callable[[httpx.Response], str] | None = None,
    ) -> None:
        self.service = service
        # Whether an answer is the service's own, not a page of a proxy or firewall in front of
        # it (None: any answer is): only its own says its outage is over (ANSWERED).
        self.own_answer = own_answer
        # What to say of an error page answered in the service's place (None: the words below),
        # when the service knows what may answer for it and what to check.
        self.in_its_place = in_its_place
        self.base_url = base_url.rstrip("/")
        # The config key of `base_url` (a server on the user's network): when nothing answers
        # there, a failure names it, as a server moved to another address or port looks so.
        self.setting = setting
        self.metrics = metrics
        self.retry = retry
        self.clock = clock
        self.redact = redactor or Redactor()
        self.pacers: dict[str, Pacer] = {}
        self._unpaced_limits = Pause()  # the 429s in a row of requests without a pacer
        self.requests_sent = 0  # for sync run records: API calls per run
        # How far the service's clock is ahead of ours, from its last Date header: it stamps
        # what happens there (a scrobble, a play) by its own clock.
        self.clock_skew = 0.0
        self._skew_noted_at: float | None = None  # when this client last told _CLOCKS
        # Read when the client below reads them: which proxy a request takes, and from where.
        self._proxies = environment_proxies()
        self._proxy_schemes = {scheme for scheme, proxy in getproxies().items() if proxy}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"user-agent": USER_AGENT, **(headers or {})},
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            follow_redirects=False,
            verify=tls_context(),
        )

    def pacer(self, account: str, make: Callable[[], Pacer]) -> Pacer:
        if account not in self.pacers:
            self.pacers[account] = make()
        return self.pacers[account]

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        pacer: Pacer | None = None,
        bucket: str | None = None,
        base_url: str | None = None,
        passthrough: frozenset[int] = frozenset(),
        inspect: Callable[[httpx.Response], None] | None = None,
        idempotent: bool | None = None,
        write: bool | None = None,
    ) -> httpx.Response:
        """Send one request; retries transient failures; returns any final HTTP answer.

        Raises Unavailable when transient failures outlast the retries, RateLimited on a 429
        that asks for a longer wait than `max_inline_wait`. Statuses in `passthrough` are
        returned as they are (a 429 on Trakt's device poll means "slow down", not a limit).
        `inspect` sees every answer first and may raise the adapter's own error (an HTML bot
        checkpoint is not a rate limit). A request that is not `idempotent` (POST by default)
        is not sent again after a timeout or a dropped connection: it may have landed, so
        the caller gets Unavailable with `outcome_unknown` and decides. `write` (by default
        anything but GET, HEAD and OPTIONS; False for a sign-in) says whether the request
        changes what the service holds for the rows being delivered (see Unavailable).
        """
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        if write is None:
            write = method.upper() not in ("GET", "HEAD", "OPTIONS")
        url = f"{base_url.rstrip('/')}{path}" if base_url else path
        last_problem = "no attempt made"
        problem: ConnectProblem | None = None  # the last try's, when it was one
        check = ""  # what to look at for the last try's failure, when nothing says more
        unknown = False
        unreached = False  # the last try found nothing listening at the address
        maybe_written = False  # some try may have reached the service, whatever came after
        probed = False  # whether a dropped plain request's port was checked for https
        # A server on the user's network reached through a proxy: a failure is the proxy's.
        proxy = self._home_proxy(url)
        for attempt in range(1, self.retry.attempts + 1):
            maybe_written = maybe_written or unknown
            if pacer is not None:
                paced = time.monotonic()
                try:
                    # A pause longer than we wait inline (a 429, maybe another client's) is
                    # handed back as it was to the request that got it; +1: the margin
                    # `block` adds to a wait this request takes inline.
                    await pacer.acquire(bucket, self.retry.max_inline_wait + 1)
                except Paused as paused:
                    raise _rate_limited(
                        self.service, paused.seconds, maybe_written, write
                    ) from None
                self._waited(time.monotonic() - paced)
            if write and (fence := BEFORE_WRITE.get()) is not None:
                try:
                    await fence()
                except Unavailable as refused:
                    # Nothing more goes, but an earlier try (a timeout, a 502) may have
                    # landed: said otherwise, the target takes back the row's mark.
                    refused.outcome_unknown = refused.outcome_unknown or maybe_written
                    raise
            started = time.monotonic()
            self.requests_sent += 1
            retry_after: float | None = None
            answered, status, unreached, problem, check = False, None, False, None, ""
            try:
                response = await self._client.request(
                    method, url, json=json, params=params, headers=headers
                )
            except (httpx.LocalProtocolError, UnicodeEncodeError):
                self._count(method, "error", started)
                if not _unsendable(self._client.headers, headers):
                    raise  # a body or a parameter: no secret's fault, a bug to see whole
                # The value is a secret: never in the message.
                raise Unsendable(self.service, UNSENDABLE) from None
            except httpx.TimeoutException as exc:
                self._count(method, "timeout", started)
                last_problem, check = self._failed(method, path, attempt, exc)
                unknown = not isinstance(exc, httpx.ConnectTimeout)
                unreached = isinstance(exc, httpx.ConnectTimeout)
            except httpx.TransportError as exc:
                self._count(method, "error", started)
                last_problem, check = self._failed(method, path, attempt, exc)
                unknown = not isinstance(exc, httpx.ConnectError)
                unreached = isinstance(exc, httpx.ConnectError)
                host = httpx.URL(url).host or httpx.URL(self.base_url).host
                problem = connect_problem(exc, host) if unreached and not proxy else None
                if unreached and not proxy and problem is None and no_route(exc):
                    problem = await self._without_ipv6(url)
                dropped = isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError)
                if dropped and not probed and not proxy:
                    probed = True
                    problem = await self._https_port(url)
                    # The server took the request for a TLS hello it could not read.
                    unknown = unknown and problem is None
                if problem is not None:
                    last_problem = problem.what
                    if problem.kind != "dns":  # a certificate does not change in a second
                        break
            except httpx.RequestError as exc:  # e.g. an answer whose body cannot be decoded
                self._count(method, "error", started)
                last_problem, check = self._failed(method, path, attempt, exc)
                unknown = True  # the service answered: a write may have happened
            else:
                unknown, answered, status = False, True, response.status_code
                if maybe_written:  # the caller may try again (a refresh): it must know
                    response.extensions[EARLIER_TRY_MAY_HAVE_LANDED] = True
                self._count(method, str(response.status_code), started)
                if (said := plain_at_https_port(response)) is not None:
                    # A reverse proxy's https port, not the service: as a server that drops
                    # the plain request (see `_https_port`), and it will not change in a second.
                    host = self._target(url).host
                    problem = ConnectProblem("https_port", f'{host} answered http:// with "{said}"')
                    last_problem, answered = problem.what, False
                    break
                if base_url is None:  # another host (a sign-in service) keeps its own clock
                    self._note_clock(response.headers)
                if inspect is not None:
                    inspect(response)
                limits = pacer.pause if pacer is not None else self._unpaced_limits
                if response.status_code != 429:
                    limits.unsaid = 0
                if response.status_code in passthrough:
                    self._answered(base_url, response)
                    return response
                if response.status_code in REDIRECT_STATUS:
                    self._answered(base_url, response)  # the host answers: no outage of its network
                    raise self._redirected(response, url, base_url, maybe_written, write)
                if response.status_code == 429:
                    said_at = self._service_now(response.headers)
                    wait = retry_after_seconds(response.headers, said_at)
                    if not wait:
                        # Abuse filters send no Retry-After (or one of 0), Trakt's limiter
                        # sometimes only its X-Ratelimit (whose `until` may be a second away):
                        # back off on our own, longer at each such 429 in a row, whichever
                        # call of the account gets it, and at least until then.
                        limits.unsaid += 1
                        until = ratelimit_until_seconds(response.headers, said_at) or 0.0
                        own = doubled(self.retry.backoff * 8, limits.unsaid - 1)
                        wait = max(until, jittered(min(own, UNSAID_LIMIT_MAX)))
                    if pacer is not None:
                        pacer.block(wait + 1)
                    if wait > self.retry.max_inline_wait or attempt == self.retry.attempts:
                        raise _rate_limited(self.service, wait, maybe_written, write)
                    last_problem = "rate limited"
                    if pacer is None:
                        await asyncio.sleep(wait)
                        self._waited(wait)
                    continue
                if response.status_code not in TRANSIENT_STATUS:
                    if base_url is None and response.is_error and not self._own(response):
                        # Not the service refusing this request: a page of a firewall or a
                        # proxy in its place, no row's failure (nor a 401 to refresh for).
                        said = (
                            self.in_its_place(response)
                            if self.in_its_place is not None
                            else f"answered {response.status_code} with a page of a firewall "
                            "or proxy in its place, not its own answer"
                        )
                        raise Unavailable(
                            self.service,
                            said,
                            IN_ITS_PLACE_PAUSE,
                            outcome_unknown=maybe_written,
                            status=response.status_code,
                        )
                    self._answered(base_url, response)
                    return response
                last_problem = f"answered {response.status_code}"
                unknown = response.status_code in AMBIGUOUS_STATUS
                retry_after = retry_after_seconds(
                    response.headers, self._service_now(response.headers)
                )
                if retry_after is not None and retry_after > self.retry.max_inline_wait:
                    # A gateway's 502/504 may come after the service wrote: say so.
                    raise Unavailable(
                        self.service,
                        last_problem,
                        retry_after,
                        unknown or maybe_written,
                        write,
                        status,
                    )
            if unknown and not idempotent:
                break
            if attempt < self.retry.attempts:
                pause = jittered(doubled(self.retry.backoff, attempt - 1))
                await asyncio.sleep(max(pause, retry_after or 0.0))
        hint = self._unreached(base_url, unreached, problem) or (f": {check}" if check else "")
        if proxy and (status is None or status in DOWN_STATUS):  # a gateway's answer
            hint = f": {proxy}"
        _FAILING.warning(
            (self.service, base_url or self.base_url),
            "request failed",
            self.clock(),
            service=self.service,
            method=method,
            path=self.redact(path),
            problem=f"{last_problem}{hint}",
        )
        raise Unavailable(
            self.service,
            f"{last_problem} after {attempt} attempt(s){hint}",
            outcome_unknown=unknown or maybe_written,
            answered=answered and write,
            status=status,
        )

    def _redirected(
        self,
        response: httpx.Response,
        url: str,
        base_url: str | None,
        maybe_written: bool,
        write: bool,
    ) -> Redirected:
        """The error for a redirect answered to `url`: where it points (without a query,
        which may carry a token) and what to set for it."""
        status = response.status_code
        where = response.request.url.join(response.headers.get("location", ""))
        pointed = shown_url(str(where))
        if self.setting is not None and base_url is None:
            # The base it points to: its address less the path asked for under ours (a
            # reverse proxy's path kept), else its scheme, host and port.
            asked, base = httpx.URL(url).path, pointed
            if not (asked.strip("/") and base.endswith(asked)):
                asked, base = "", shown_url(str(where.copy_with(path="/")))
            fix = f"set {self.setting} to {base.removesuffix(asked).rstrip('/')}"
        else:
            fix = "if the service answers there now, set its URL in the config to it"
        return Redirected(
            self.service,
            self.redact(
                f"answered {status}, a redirect to {pointed}: watchbridge does not follow "
                f"redirects (its token or key would go with it); {fix}"
            ),
            outcome_unknown=maybe_written or (write and status in REDIRECT_AFTER_WORK),
            status=status,
        )

    def _service_now(self, headers: Mapping[str, str]) -> float:
        """Now by the service's clock (its Date header; ours without one): the dates of its
        Retry-After and X-Ratelimit are by it, and ours may be minutes off."""
        return date_header_time(headers) or self.clock()

    def _failed(
        self, method: str, path: str, attempt: int, error: httpx.RequestError
    ) -> tuple[str, str]:
        """`request_failure`'s words for a try that failed; its class and causes go to the
        debug log, for whoever looks into it."""
        log.debug(
            "request try failed",
            extra={
                "service": self.service,
                "method": method,
                "path": self.redact(path),
                "attempt": attempt,
                "error": type(error).__name__,
                "detail": self.redact(failure_detail(error)),
            },
        )
        failure = request_failure(error)
        return failure.what, failure.check

    def _target(self, url: str) -> httpx.URL:
        """Where a request for `url` (a path under `base_url`, or a whole URL) goes."""
        return httpx.URL(url) if httpx.URL(url).host else httpx.URL(self.base_url)

    def _home_proxy(self, url: str) -> str | None:
        """What to say when `url` is on the user's network and its requests go through a
        proxy the environment sets (one out on the internet seldom reaches it); None when
        it is not, or they go directly."""
        target = self._target(url)
        if not target.host or not on_home_network(target.host):
            return None
        proxy = next((p for pattern, p in self._proxies if pattern.matches(target)), None)
        if proxy is None:
            return None
        scheme = target.scheme if target.scheme in self._proxy_schemes else "all"
        return (
            f"the request went through the proxy {shown_url(proxy).rstrip('/')} "
            f"({scheme.upper()}_PROXY), which may not reach {target.host} on your network: "
            f"add {target.host} to NO_PROXY"
        )

    async def _without_ipv6(self, url: str) -> ConnectProblem | None:
        """`no_ipv6` when `url`'s host has only IPv6 addresses (a connection to it found no
        route): None when it has an IPv4 one too."""
        where = self._target(url)
        addresses = await ipv6_only(where.host, where.port or 80)
        if addresses is None:
            return None
        what = f"no route to {where.host} over IPv6"
        without = "this machine (or its container) has no IPv6 route"
        if addresses == [where.host]:
            return ConnectProblem("no_ipv6", what, without)
        shown = ", ".join(addresses[:2]) + (", ..." if len(addresses) > 2 else "")
        return ConnectProblem(
            "no_ipv6", what, f"the name has only IPv6 addresses ({shown}), and {without}"
        )

    async def _https_port(self, url: str) -> ConnectProblem | None:
        """`https_port` when `url` is http:// and its port speaks https (a server that drops
        a plain request, as Jellyfin's and Emby's https port does): None otherwise."""
        where = self._target(url)
        if where.scheme != "http" or not await speaks_tls(where.host, where.port or 80):
            return None
        return ConnectProblem("https_port", f"{where.host} answered http:// in https (TLS)")

    def _unreached(
        self, base_url: str | None, unreached: bool, problem: ConnectProblem | None
    ) -> str:
        """What to check when no connection was made ("" otherwise): `problem`'s fix, or,
        when nothing listened at the configured address, that address."""
        if problem is not None:
            said = "; ".join(part for part in (problem.why, self._fix(base_url, problem)) if part)
            return f": {said}" if said else ""
        if not unreached or self.setting is None or base_url is not None:
            return ""
        where = httpx.URL(self.base_url)
        port = f":{where.port}" if where.port else ""
        host = f"[{where.host}]" if ":" in where.host else where.host  # an IPv6 address
        return (
            f": nothing answers at {where.scheme}://{host}{port} ({self.setting}); "
            f"is the server running, or did its address or port change?"
        )

    def _fix(self, base_url: str | None, problem: ConnectProblem) -> str:
        """What to do about `problem`: a server on the user's network (`setting`) has fixes
        of its own."""
        setting = self.setting if base_url is None else None
        if problem.kind == "dns":
            if setting:
                return (
                    f"is the name in {setting} spelt right, and does the DNS this machine (or "
                    "its container) uses know it? the server's address (such as 192.168.1.10) "
                    "needs no DNS"
                )
            return (
                "does the DNS this machine (or its container) uses answer, and does it let "
                "the name through (a Pi-hole's block list)?"
            )
        where = httpx.URL(base_url or self.base_url)
        port = where.port or (443 if where.scheme == "https" else 80)
        plain = shown_url(str(where.copy_with(scheme="http", port=port, path="/"))).rstrip("/")
        if problem.kind == "plain_http":
            if setting:
                return f"the server speaks plain http on that port: use {plain} in {setting}"
            return "the server at that port speaks plain http: check the address and its port"
        if problem.kind == "no_ipv6":
            ipv6 = "turn on IPv6 for its network (Docker: `enable_ipv6: true` on the network)"
            if setting:
                return f"use the server's IPv4 address in {setting}, or {ipv6}"
            return f"{ipv6}, or have the DNS it uses answer with IPv4 addresses too"
        if problem.kind == "https_port":
            secure = shown_url(str(where.copy_with(scheme="https", port=port, path="/")))
            if setting:
                return (
                    f"the server speaks https on that port: use {secure.rstrip('/')} in {setting}"
                )
            return "the server at that port speaks https: check the address and its scheme"
        code = problem.verify_code
        if code in CLOCK_CODES:
            clock = "is this machine's clock right (turn on NTP time sync)?"
            if setting:
                return f"{clock} If so, renew the server's certificate, or use http:// in {setting}"
            return clock
        if setting and self.service == "plex":
            dashed = where.host.replace(".", "-") if _is_ipv4(where.host) else "192-168-1-10"
            return (
                f"on your network, use {plain} in {setting}, or the server's own plex.direct "
                f"address (https://{dashed}.SERVER-HASH.plex.direct:{port}), to which Plex's "
                "certificates are made out"
            )
        if setting and code in NAME_CODES:
            return (
                f"use the name its certificate is made out to in {setting}, or http:// and the "
                "server's plain port (Jellyfin's and Emby's: 8096)"
            )
        if setting:
            return (
                f"use http:// and the server's plain port in {setting} (Jellyfin's and Emby's: "
                "8096), or set SSL_CERT_FILE to a file holding the public certificate "
                "authorities and yours (or that self-signed certificate): see Troubleshooting "
                "in the README"
            )
        if code in NAME_CODES:
            return (
                "something else answers for that name (a DNS or a proxy sending it elsewhere, "
                "such as a blocked name's page): check this machine's DNS and HTTPS_PROXY"
            )
        return (
            "something between this machine and the service answers for it (a proxy or a "
            "filter that reads https): let it through, or set SSL_CERT_FILE to a file holding "
            "its certificate authority with the public ones: see Troubleshooting in the README"
        )

    def _answered(self, base_url: str | None, response: httpx.Response) -> None:
        """The host answered: requests failing to reach it, if they were, are over; and the
        service's outage too when the answer is its own (`own_answer`)."""
        host = (self.service, base_url or self.base_url)
        _FAILING.over(host, "requests answered again", self.clock(), service=self.service)
        if base_url is None and self._own(response) and (answered := ANSWERED.get()) is not None:
            answered.add(self.service)

    def _own(self, response: httpx.Response) -> bool:
        """Whether `response` is the service's own answer (`own_answer`)."""
        return self.own_answer is None or self.own_answer(response)

    def _note_clock(self, headers: Mapping[str, str]) -> None:
        said = date_header_time(headers)
        if said is None:
            return  # the last skew stands
        now = self.clock()
        self.clock_skew = said - now
        if self.metrics is not None:
            self.metrics.note_clock(self.service, self.clock_skew, outside=not self.setting)
        key, ahead = (self.service, self.base_url), round(self.clock_skew)
        if abs(self.clock_skew) <= CLOCK_WARNING:
            self._skew_noted_at = None
            _CLOCKS.over(
                key, CLOCKS_AGREE, now, service=self.service, service_ahead_by_seconds=ahead
            )
            return
        # Each answer carries the Date: a client says so once an hour, not a line per answer.
        if self._skew_noted_at is not None and 0 <= now - self._skew_noted_at < REMINDER_EVERY:
            return
        self._skew_noted_at = now
        _CLOCKS.warning(
            key,
            CLOCKS_DIFFER,
            now,
            service=self.service,
            service_ahead_by_seconds=ahead,
            fix="set the time right on this machine (or on the service's, if it is a server "
            "of yours): turn on NTP time sync",
        )

    def _waited(self, seconds: float) -> None:
        """Time spent waiting for the rate limit, apart from the requests' own latency."""
        if self.metrics is not None and seconds > 0:
            self.metrics.rate_limit_wait.labels(self.service).inc(seconds)

    def _count(self, method: str, status: str, started: float) -> None:
        if self.metrics is None:
            return
        self.metrics.http_requests.labels(self.service, method, status).inc()
        self.metrics.http_seconds.labels(self.service).observe(time.monotonic() - started)


Shared = TypeVar("Shared")


class PerLoop(Generic[Shared]):
    """Objects shared by every client of one event loop, one per key: pacers and locks (asyncio
    locks belong to one loop). A lock that ever made a task wait refers to its loop, so the
    weak key alone would keep every finished loop (each `asyncio.run`, each test) alive:
    closed loops' objects are dropped when a new loop first asks."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Hashable, Shared]
        ] = weakref.WeakKeyDictionary()

    def get(self, key: Hashable, make: Callable[[], Shared]) -> Shared:
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            for closed in [other for other in self._loops if other.is_closed()]:
                del self._loops[closed]
        shared = self._loops.setdefault(loop, {})
        if key not in shared:
            shared[key] = make()
        return shared[key]
