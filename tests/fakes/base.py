"""A small, stateful fake HTTP server base for adapter tests ("Fakes, not mocks").

A fake subclasses :class:`FakeServer`, declares routes with :func:`route` and keeps its state on
the instance. It serves real HTTP/1.1 on ``127.0.0.1`` from a background thread, records every
request, and can be told to misbehave with queued knobs (:meth:`FakeServer.fail_next`,
:meth:`FakeServer.delay_next`, :meth:`FakeServer.drop_next`).

Knob rules: each request consumes at most one knob, the oldest queued one that applies to it
(route-scoped or global). ``fail_next`` and ``drop_next`` act *before* the handler, so a failed
request never changes the fake's state (``after_handler=True`` is the exception: the work is
done, then the connection is dropped or the failure answered). ``delay_next`` runs the handler
at once and holds the answer back, like a slow server that did the work; ``hold_next`` too, until
the test releases it (an interleaving that does not hang on a clock). ``reshape_next`` runs
the handler and changes its JSON answer (a field renamed or removed, a number sent as text, a
list wrapped in an object): a service that changed the shape of its answers. ``cut_next`` runs
the handler and sends half its answer's body, then closes: an answer cut off mid-way.

Behind a reverse proxy: ``proxy_lost_server()`` answers every request as a proxy (Traefik,
nginx, SWAG) does once the server container it routes to is gone (restarting): by default
Traefik's ``404`` text/plain ``404 page not found`` (``PROXY_BAD_GATEWAY``: nginx's 502 page);
``since=`` a route: from the first request to it on (the server stops mid-run).
``proxy_found_server()`` ends it. Queued knobs wait meanwhile.
"""

from __future__ import annotations

import json
import math
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeVar, overload
from urllib.parse import parse_qs, unquote, urlsplit

HeaderMap = Mapping[str, str] | None
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=UTF-8"
# Traefik's answer (Go's http.NotFound) for a path no router serves: the server's container gone.
PROXY_NOT_FOUND = b"404 page not found\n"
PROXY_BAD_GATEWAY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad "
    b"Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_REASONS = {
    420: "Account Limit Exceeded",
    423: "Locked User Account",
    426: "VIP Only",
    520: "Unknown Error",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    524: "A Timeout Occurred",
}


class FakeServerError(AssertionError):
    """Raised when a fake's handler crashed during a test (a bug in the fake, not the client)."""


class Headers(Mapping[str, str]):
    """Case-insensitive read-only headers; ``raw`` keeps the names exactly as sent."""

    def __init__(self, raw: Sequence[tuple[str, str]]) -> None:
        self.raw = list(raw)
        self._map = {k.lower(): v for k, v in reversed(self.raw)}  # first value wins

    def __getitem__(self, key: str) -> str:
        return self._map[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"


@dataclass
class Request:
    """One request as received; also the record kept in ``FakeServer.requests``."""

    method: str
    path: str
    query: dict[str, str]  # first value of each key
    headers: Headers
    body: bytes
    time: float  # time.monotonic() at arrival
    route: str | None = None  # matched pattern, e.g. "/search/{id_type}/{id}"
    params: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # status answered; None if the connection was dropped

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    """What a handler (or a knob) answers."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200, headers: HeaderMap = None) -> Response:
    """``data`` as a JSON answer."""
    return Response(
        status, json.dumps(data).encode(), {"Content-Type": JSON_TYPE, **(headers or {})}
    )


def html_response(html: str, status: int = 200, headers: HeaderMap = None) -> Response:
    """``html`` as an HTML answer (Cloudflare error pages, WAF checkpoints)."""
    return Response(status, html.encode(), {"Content-Type": HTML_TYPE, **(headers or {})})


def cloudflare_page(status: int) -> str:
    """A Cloudflare-style HTML error page (no ``x-request-id``: not from the application)."""
    reason = _REASONS.get(status, "Error")
    return (
        f"<!DOCTYPE html><html><head><title>{status}: {reason} | Cloudflare</title></head>"
        f"<body><h1>Error {status}</h1><p>{reason}</p></body></html>"
    )


class Shaped(Sequence[Any]):
    """`items`, each answered as `shape` makes it, made only for the page `paginate` serves:
    made whole for each page, a history of 60,000 entries took minutes to page through."""

    def __init__(self, items: Sequence[Any], shape: Callable[[Any], Any]) -> None:
        self.items, self.shape = items, shape

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self.shape(item) for item in self.items[index]]
        return self.shape(self.items[index])


def paginate(
    req: Request,
    items: Sequence[Any],
    *,
    default_limit: int = 10,
    max_limit: int = 250,
    headers: HeaderMap = None,
) -> Response:
    """Answer one page of ``items`` with Trakt-style ``X-Pagination-*`` headers.

    ``page`` is 1-based; ``limit`` above ``max_limit`` is clamped (not rejected) and the
    effective value is reported; a page past the end is an empty list.
    """

    def _int(name: str, default: int) -> int:
        try:
            return max(1, int(req.query.get(name, default)))
        except ValueError:
            return default

    page, limit = _int("page", 1), min(_int("limit", default_limit), max_limit)
    page_count = max(1, math.ceil(len(items) / limit))
    pagination = {
        "X-Pagination-Page": str(page),
        "X-Pagination-Limit": str(limit),
        "X-Pagination-Page-Count": str(page_count),
        "X-Pagination-Item-Count": str(len(items)),
    }
    chunk = list(items[(page - 1) * limit : page * limit])
    return json_response(chunk, headers={**pagination, **(headers or {})})


Handler = Callable[[Any, Request], "Response | dict[str, Any] | list[Any] | None"]
H = TypeVar("H", bound=Handler)
F = TypeVar("F", bound="FakeServer")


def route(method: str, pattern: str) -> Callable[[H], H]:
    """Mark a ``FakeServer`` method as the handler of ``METHOD pattern`` (``{name}`` = param)."""

    def mark(fn: H) -> H:
        fn.__dict__.setdefault("_fake_routes", []).append((method.upper(), pattern))
        return fn

    return mark


@dataclass
class _Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Callable[[Request], Any]


@dataclass
class _Knob:
    kind: str  # "fail" | "delay" | "stall" | "hold" | "drop" | "cut" | "reshape"
    remaining: int
    route: str | None
    response: Response | None = None
    seconds: float = 0.0
    after_handler: bool = False
    change: Callable[[Any], Any] | None = None
    released: threading.Event | None = None
    when: Callable[[Request], bool] | None = None  # only requests it says yes to

    def applies(self, req: Request) -> bool:
        if self.route is not None:
            method, _, path = self.route.rpartition(" ")
            if method.upper() not in ("", req.method) or path not in (req.path, req.route):
                return False
        return self.when is None or self.when(req)


class FakeServer:
    """Base of all fakes; see the module docstring. Subclass, add ``@route`` methods, go."""

    default_headers: dict[str, str] = {}  # added to handler answers, never to knob answers

    def date_clock(self) -> float:
        """The time of this server's clock, for its Date header."""
        return time.time()

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._knobs: list[_Knob] = []
        # A reverse proxy in front, whose server is gone (`proxy_lost_server`): None, not lost;
        # True, lost; a route: lost from the first request to it on. Its answer meanwhile.
        self._proxy_lost: bool | str | None = None
        self._proxy_answer = Response(404)
        self._routes: list[_Route] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # Set before `start` to serve https with it (a media server's own certificate).
        self.tls: ssl.SSLContext | None = None
        for name in dir(type(self)):
            fn = getattr(type(self), name, None)
            for method, pattern in getattr(fn, "_fake_routes", ()):
                self.add_route(method, pattern, getattr(self, name))

    # -- lifecycle ---------------------------------------------------------------------------
    def add_route(self, method: str, pattern: str, handler: Callable[[Request], Any]) -> None:
        """Register a route at run time (bound handler taking only the request)."""
        regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        self._routes.append(_Route(method.upper(), pattern, re.compile(regex), handler))

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), _Handler, self)
            if self.tls is not None:  # a refused handshake fails that accept alone
                self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.01,), name=f"{type(self).__name__}"
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and join every thread. Never raises."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        server.stopping.set()
        for conn in list(server.conns):
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()  # closes the listener, joins handler threads

    def check(self) -> None:
        """Raise ``FakeServerError`` if a handler crashed."""
        if self.errors:
            raise FakeServerError(f"{len(self.errors)} fake handler error(s)") from self.errors[0]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stop()
        if exc_type is None:
            self.check()

    # -- inspection --------------------------------------------------------------------------
    def calls(self, method: str, path: str) -> list[Request]:
        """Recorded requests for ``method`` whose concrete path or route pattern is ``path``."""
        with self.lock:
            return [
                r for r in self.requests if r.method == method.upper() and path in (r.path, r.route)
            ]

    def count(self, method: str, path: str) -> int:
        return len(self.calls(method, path))

    @property
    def knobs_pending(self) -> int:
        with self.lock:
            return sum(k.remaining for k in self._knobs)

    # -- misbehaviour knobs ------------------------------------------------------------------
    def fail_next(
        self,
        n: int,
        status: int,
        headers: HeaderMap = None,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        route: str | None = None,
        content_type: str | None = None,
        *,
        after_handler: bool = False,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` instead of running the handler.

        ``body``: dict/list are sent as JSON, str as HTML, bytes as is, None as empty.
        ``route``: ``"/path"``, ``"/pattern/{x}"`` or ``"POST /path"``; None means any request.
        ``after_handler``: run the handler first (the service did the work, then failed).
        ``when``: only requests it says yes to (one item's write the service always fails).
        """
        if isinstance(body, dict | list):
            resp = json_response(body, status)
        elif isinstance(body, str):
            resp = html_response(body, status)
        else:
            resp = Response(status, body or b"")
        if content_type is not None:
            resp.headers["Content-Type"] = content_type
        resp.headers.update(headers or {})
        self._queue(_Knob("fail", n, route, response=resp, after_handler=after_handler, when=when))

    def delay_next(
        self,
        n: int,
        seconds: float,
        route: str | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Hold back the answer of the next ``n`` requests (the handler already ran); with
        ``when``, only of requests it says yes to."""
        self._queue(_Knob("delay", n, route, seconds=seconds, when=when))

    def stall_next(
        self,
        n: int,
        seconds: float,
        route: str | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Take the next ``n`` requests (``when``: those it says yes to) and leave them
        unanswered for ``seconds``, their handler never run (nothing written), then close the
        connection: a client killed while it waits has sent a write that never landed."""
        self._queue(_Knob("stall", n, route, seconds=seconds, when=when))

    def hold_next(self, route: str | None = None) -> threading.Event:
        """Hold back the answer of the next request (the handler already ran) until the
        returned event is set: an interleaving forced by the test, not by a clock."""
        released = threading.Event()
        self._queue(_Knob("hold", 1, route, released=released))
        return released

    def drop_next(self, n: int, route: str | None = None, *, after_handler: bool = False) -> None:
        """Close the connection of the next ``n`` requests without answering."""
        self._queue(_Knob("drop", n, route, after_handler=after_handler))

    def cut_next(self, n: int, route: str | None = None) -> None:
        """Run the handler of the next ``n`` requests, then send their answer's status, headers
        (its whole Content-Length) and half its body, and close the connection: an answer cut
        off on its way (a proxy or a server restarting mid-answer)."""
        self._queue(_Knob("cut", n, route))

    def reshape_next(self, n: int, change: Callable[[Any], Any], route: str | None = None) -> None:
        """Run the handler of the next ``n`` requests, then answer ``change(its JSON)`` instead
        (same status and headers): the service did the work and answered in another shape.
        ``change`` may alter the decoded JSON in place and return None, or return a new value."""
        self._queue(_Knob("reshape", n, route, change=change))

    def reshape_always(self, change: Callable[[Any], Any], route: str | None = None) -> None:
        """``reshape_next`` for every request from now on (a service that changed for good)."""
        self.reshape_next(10**9, change, route)

    def proxy_lost_server(self, since: str | None = None, *, bad_gateway: bool = False) -> None:
        """Every request answered by a proxy whose server is gone (see the module docstring):
        Traefik's 404, or nginx's 502 page with `bad_gateway`; `since`: a route
        (``"/:/scrobble"``), from the first request to it on."""
        if bad_gateway:
            answer = Response(502, PROXY_BAD_GATEWAY, {"Content-Type": "text/html"})
        else:
            answer = Response(404, PROXY_NOT_FOUND, {"Content-Type": "text/plain; charset=utf-8"})
        with self.lock:
            self._proxy_lost, self._proxy_answer = since or True, answer

    def proxy_found_server(self) -> None:
        """The server answers behind the proxy again."""
        with self.lock:
            self._proxy_lost = None

    def clear_knobs(self) -> None:
        """Forget the misbehaviour still queued (the outage is over)."""
        with self.lock:
            self._knobs.clear()

    def _queue(self, knob: _Knob) -> None:
        if knob.route is not None:
            path = knob.route.rpartition(" ")[2]
            if not any(r.pattern == path or r.regex.fullmatch(path) for r in self._routes):
                raise ValueError(f"knob for unknown route {knob.route!r}")
        with self.lock:
            self._knobs.append(knob)

    # -- dispatch (runs on a handler thread) -------------------------------------------------
    def _take_knob(self, req: Request) -> _Knob | None:
        if self._proxy_lost is not None and self._proxy_lost in (True, req.path, req.route):
            self._proxy_lost = True
            return _Knob("fail", 1, None, response=self._proxy_answer)  # not queued: the proxy
        for knob in self._knobs:
            if knob.applies(req):
                knob.remaining -= 1
                if knob.remaining <= 0:
                    self._knobs.remove(knob)
                return knob
        return None

    def _handle(self, req: Request) -> tuple[_Knob | None, Response | None]:
        """Record ``req``, apply a knob, run the handler; a None response means drop."""
        with self.lock:
            matched = [r for r in self._routes if r.regex.fullmatch(req.path)]
            found = next((r for r in matched if r.method == req.method), None)
            if found is not None:
                req.route = found.pattern
                m = found.regex.fullmatch(req.path)
                req.params = {k: unquote(v) for k, v in m.groupdict().items()} if m else {}
            self.requests.append(req)
            knob = self._take_knob(req)
            resp = self._answer(req, found, matched, knob)
            req.status = resp.status if resp is not None else None
            return knob, resp

    def _answer(
        self, req: Request, found: _Route | None, matched: list[_Route], knob: _Knob | None
    ) -> Response | None:
        kind = knob.kind if knob is not None else None
        if knob is not None and knob.response is not None and not knob.after_handler:
            return knob.response  # fail_next
        if kind == "drop" and not (knob and knob.after_handler):
            return None
        if kind == "stall":  # never sent: the connection closes unanswered (`_dispatch`)
            return json_response({"error": "stalled"}, 504)
        if found is None:
            status = 405 if matched else 404
            return json_response({"error": "not found", "path": req.path}, status)
        try:
            resp = _to_response(found.handler(req))
        except Exception as exc:
            self.errors.append(exc)
            return json_response({"error": f"fake crashed: {exc!r}"}, 500)
        resp.headers = {**self.default_headers, **resp.headers}
        if knob is not None and knob.response is not None:
            return knob.response  # fail_next(after_handler=True)
        if knob is not None and knob.change is not None:
            return _reshaped(resp, knob.change)
        return None if kind == "drop" else resp


def _reshaped(resp: Response, change: Callable[[Any], Any]) -> Response:
    """``resp`` with its JSON body passed through ``change`` (see ``reshape_next``)."""
    data = json.loads(resp.body) if resp.body else None
    changed = change(data)
    body = json.dumps(data if changed is None else changed).encode()
    return Response(resp.status, body, {**resp.headers, "Content-Type": JSON_TYPE})


def _to_response(result: Response | dict[str, Any] | list[Any] | None) -> Response:
    if result is None:
        return Response(204)
    return result if isinstance(result, Response) else json_response(result)


@contextmanager
def running(fake: F) -> Iterator[F]:
    """Start ``fake``, yield it, stop it; raises ``FakeServerError`` if a handler crashed."""
    with fake:
        yield fake


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # joined in server_close()

    def __init__(self, addr: tuple[str, int], handler: type[_Handler], fake: FakeServer) -> None:
        self.fake = fake
        self.conns: set[socket.socket] = set()
        self.stopping = threading.Event()
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients going away (timeouts, drops, stop()); record anything else."""
        exc = sys.exception()
        if (
            exc
            and not self.stopping.is_set()
            and not isinstance(exc, ConnectionError | TimeoutError)
        ):
            self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls
    server: _Server

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        req = Request(
            method=self.command,
            path=split.path,
            query={k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()},
            headers=Headers(list(self.headers.items())),
            body=self.rfile.read(length) if length else b"",
            time=time.monotonic(),
        )
        knob, resp = self.server.fake._handle(req)
        if resp is None:  # dropped: close without a single byte
            self.close_connection = True
            return
        if knob is not None and knob.kind == "delay" and self.server.stopping.wait(knob.seconds):
            self.close_connection = True
            return
        if knob is not None and knob.kind == "stall":
            self.server.stopping.wait(knob.seconds)
            self.close_connection = True
            return
        if knob is not None and knob.released is not None and not self._released(knob.released):
            self.close_connection = True
            return
        self.send_response(resp.status, _REASONS.get(resp.status))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if knob is not None and knob.kind == "cut":
            self.wfile.write(resp.body[: len(resp.body) // 2])
            self.close_connection = True
            return
        self.wfile.write(resp.body)

    def _released(self, released: threading.Event) -> bool:
        """Wait for the test to release a held answer; False when the fake stops first."""
        while not released.wait(0.05):
            if self.server.stopping.is_set():
                return False
        return True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, by the fake's own clock (a server's may be off)."""
        return formatdate(self.server.fake.date_clock(), usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        pass
