"""Run the app under uvicorn on server.port (and server.webhook_port), one process, one lifespan."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from h11 import SEND_BODY
from litestar import Litestar
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol

from watchbridge import healthcheck, stopsignal
from watchbridge.config import Config
from watchbridge.errors import WatchbridgeError

log = logging.getLogger(__name__)

# Open connections get this long after SIGTERM; background work, told at once, gets
# shutdown_timeout from the signal (the drain is inside it).
CONNECTION_DRAIN_SECONDS = 2
GIL_SWITCH_SECONDS = 0.0005
# A request's line and headers must have come in full this long after its connection opened or
# its previous answer went out (media servers and browsers send them in one packet).
HEAD_TIMEOUT = 10.0
# And be no larger than this (browsers send a few KB at most, with their cookies).
MAX_HEAD_BYTES = 64 * 1024
_TOO_LARGE_BODY = b'{"error":"request line and headers larger than 64 KiB","status":431}'
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


def head_deadline(
    protocol: type[Any], seconds: float, max_bytes: int = MAX_HEAD_BYTES
) -> type[Any]:
    """uvicorn's HTTP `protocol`, closing a connection whose request head has not come in full
    `seconds` after it opened or after its last answer, or that has sent more than `max_bytes`
    without ending it. uvicorn has neither limit: a connection that sends nothing, or a header a
    byte at a time, stays open for good, and a few hundred of them (a scanner, a crashed
    client, one hostile device on the network) use up the process's file descriptors, so
    webhooks, which media servers do not send again, are refused; and with httptools, a header
    of any size is kept in memory until it ends."""

    h11 = issubclass(protocol, H11Protocol)

    class HeadDeadline(protocol):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None
        _waiting_after: object = None  # the request cycle answered last, when waiting
        _head_bytes = 0  # received since, the head still not in full
        _in_body = False  # httptools: a request's head has come, its body not all of it

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:  # httptools' parser calls these two
            super().on_headers_complete()
            self._in_body = True

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_body = False

        def _body_coming(self) -> bool:
            """Whether the bytes coming now are the body of a request, not a head."""
            return bool(self.conn.their_state is SEND_BODY) if h11 else self._in_body

        def data_received(self, data: bytes) -> None:
            # The rest of a body answered before it was read (a webhook refused unread: 401,
            # 413) comes after the answer, and is read and dropped: no head to count.
            head = not self._body_coming()
            super().data_received(data)
            if self.cycle is not self._waiting_after or self.transport.get_protocol() is not self:
                self._disarm()  # a new request's head is in (or a websocket took the connection)
            elif self._deadline is not None and head:
                self._head_bytes += len(data)
                if self._head_bytes > max_bytes and not self.transport.is_closing():
                    self._disarm()
                    self.transport.write(TOO_LARGE)
                    self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.cycle is None or self.cycle.response_complete:  # none pipelined
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._waiting_after, self._head_bytes = self.cycle, 0
                self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    HeadDeadline.__name__ = f"HeadDeadline{protocol.__name__}"
    return HeadDeadline


class QuietServer(uvicorn.Server):
    """uvicorn wakes ten times a second to check for a stop; this one wakes when the signal
    comes, and else once a second (the Date header's refresh).

    Idle means idle on a small home server: polling halved the service's idle CPU, and a
    stop waited up to that second to be seen. Once asked to stop, it calls `on_stopping`
    first, before connections drain (see `serve`).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_stopping: Callable[[], None],
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self.on_stopping = on_stopping
        self.on_started = on_started
        self._wake: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._wake is not None:
            self._wake()

    async def main_loop(self) -> None:
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not asked.done():
                asked.set_result(None)

        def from_the_signal() -> None:
            # The signal's handler runs between two bytecodes of the loop's own thread: the
            # thread-safe call is what wakes a loop waiting for I/O.
            loop.call_soon_threadsafe(wake)

        self._wake = from_the_signal
        lost = stopsignal.noted()
        if lost is not None:  # came before uvicorn took the signals over, and may be lost
            self.handle_exit(lost, None)
        self.on_started()  # the lifespan has started and the sockets accept: answering now
        ticks = 0
        try:
            while not await self.on_tick(ticks):
                # on_tick refreshes the Date header when the counter is a multiple of 10.
                ticks = (ticks + 10) % 864000
                await asyncio.wait({asked}, timeout=1.0)
        finally:
            self._wake = None
        self.on_stopping()


def bind(host: str, port: int, key: str) -> socket.socket:
    """A listening socket, or one clear error naming the config key."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections: without it every
    # keep-alive answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise WatchbridgeError(
                f"{key} {port}: address already in use on {host} "
                "(another watchbridge or program is listening; pick another port)"
            ) from None
        raise WatchbridgeError(f"{key} {port}: cannot listen on {host} ({exc.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    app: Litestar,
    config: Config,
    on_stopping: Callable[[], None] = lambda: None,
    listening_file: str | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; `on_stopping` is called then (it must not block: a quick
    note of the stop), uvicorn drains connections, then the lifespan drains tasks. Once it
    answers, where it listens is noted in `listening_file` for the healthcheck, until the stop
    begins."""
    server_config = config.server
    if listening_file is not None:
        healthcheck.forget_listening(listening_file)  # a killed run's: this one is not there yet
    sockets = [bind(server_config.host, server_config.port, "server.port")]
    if server_config.webhook_port is not None:
        sockets.append(bind(server_config.host, server_config.webhook_port, "server.webhook_port"))
    uv_config = uvicorn.Config(
        app,
        # uvloop and httptools (pinned dependencies) when importable, else asyncio and h11:
        # together they cut the webhook path's CPU per request by about a quarter.
        loop="auto",
        http=head_deadline(AutoHTTPProtocol, HEAD_TIMEOUT),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=CONNECTION_DRAIN_SECONDS,
        proxy_headers=False,
    )
    ports = [server_config.port, *filter(None, [server_config.webhook_port])]

    def note_listening() -> None:
        if listening_file is None:
            return
        try:
            healthcheck.note_listening(listening_file, server_config.host, ports)
        except OSError as exc:  # the healthcheck reads the config instead: slower, as right
            log.debug("cannot note where it listens", extra={"error": exc.strerror})

    def stopping() -> None:
        # Now: uvicorn ends the process with the signal once it has drained (no `finally`).
        if listening_file is not None:
            healthcheck.forget_listening(listening_file, os.getpid())
        on_stopping()

    server = QuietServer(uv_config, stopping, note_listening)
    log.info(
        "listening",
        extra={
            "port": server_config.port,
            "host": server_config.host,
            "webhook_port": server_config.webhook_port or "-",
        },
    )
    # Everything imported and built so far lives as long as the process; without this, each
    # full garbage collection walks it all and stalls the event loop for ~60 ms under load.
    gc.freeze()
    # The ingest writer thread needs the GIL back after each disk sync; by default a busy event
    # loop keeps it for up to 5 ms first, and every webhook in that group waits as long.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
        if listening_file is not None:  # stopped by an error rather than a signal
            healthcheck.forget_listening(listening_file, os.getpid())
    if not server.started:
        raise WatchbridgeError("the service did not start; see the log lines above")
