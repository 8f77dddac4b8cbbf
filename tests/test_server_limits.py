"""Connections that never finish their request head are closed (slowloris, crashed clients)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from litestar import Litestar, get
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.harness import ServiceProcess, free_port
from watchbridge.server import HEAD_TIMEOUT, head_deadline


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closed `sock` (sending `trickle` a byte at a time, one every
    half second, meanwhile), or None if it was still open after `seconds`."""
    started = time.monotonic()
    sock.settimeout(0.5)
    sent = 0
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
            sent += 1
    return None


def test_the_service_closes_a_silent_or_trickling_connection(service: ServiceProcess) -> None:
    endless = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 100
    with (
        socket.create_connection(("127.0.0.1", service.port)) as silent,
        socket.create_connection(("127.0.0.1", service.port)) as trickling,
    ):
        results: list[float | None] = []
        other = threading.Thread(
            target=lambda: results.append(closed_within(trickling, HEAD_TIMEOUT + 10, endless))
        )
        other.start()
        silent_for = closed_within(silent, HEAD_TIMEOUT + 10)
        other.join()
    assert silent_for is not None and silent_for >= HEAD_TIMEOUT - 1, silent_for
    assert results[0] is not None and results[0] >= HEAD_TIMEOUT - 1, results
    # The service still answers, and keeps a well-behaved connection's requests coming.
    with httpx.Client(base_url=service.url) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


@get("/slow")
async def slow() -> str:
    await asyncio.sleep(1.0)  # twice the deadline: a handler's time is not the head's
    return "done"


@get("/fast", sync_to_thread=False)
def fast() -> str:
    return "ok"


@pytest.fixture(params=[H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def short_deadline(request: pytest.FixtureRequest) -> Iterator[int]:
    """A Litestar app served with a 0.5 s head deadline, by each of uvicorn's HTTP parsers."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Litestar([slow, fast]),
            host="127.0.0.1",
            port=port,
            log_config=None,
            http=head_deadline(request.param, 0.5),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_ready_path(f"http://127.0.0.1:{port}")
    yield port
    server.should_exit = True
    thread.join(10)


def wait_ready_path(url: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/fast", timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.02)
    raise TimeoutError(url)


def test_each_parser_closes_a_connection_whose_head_does_not_come(short_deadline: int) -> None:
    with socket.create_connection(("127.0.0.1", short_deadline)) as silent:
        assert closed_within(silent, 3) is not None
    with socket.create_connection(("127.0.0.1", short_deadline)) as trickling:
        assert closed_within(trickling, 3, b"GET /fast HTTP/1.1\r\nHost: x\r\n" * 20) is not None


def test_the_deadline_spares_slow_answers_and_kept_alive_connections(short_deadline: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{short_deadline}") as client:
        assert client.get("/slow").text == "done"
        time.sleep(0.2)
        assert client.get("/fast").text == "ok"  # the same connection, kept alive
        assert client.get("/slow").text == "done"
    with socket.create_connection(("127.0.0.1", short_deadline)) as sock:
        # Two requests in one packet (pipelined): the second's head is in, it waits its turn.
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(6)
        answers = b""
        while answers.count(b"done") < 2:
            chunk = sock.recv(4096)
            assert chunk, f"closed after {answers!r}"
            answers += chunk


def test_the_service_refuses_a_request_head_of_endless_headers(service: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sock.settimeout(5)
        answer, sent = b"", 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            while sent < 64 and not answer:  # 64 MiB, a MiB at a time, until it answers
                sock.sendall(b"a" * (1 << 20))
                sent += 1
                with contextlib.suppress(BlockingIOError):
                    answer = sock.recv(4096, socket.MSG_DONTWAIT)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(4096):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"larger than 64 KiB" in answer
    assert sent < 4


def test_large_cookies_and_a_large_body_sent_with_the_head_pass(service: ServiceProcess) -> None:
    cookies = "; ".join(f"app{i}={'c' * 900}" for i in range(40))  # 36 KB of cookies
    assert httpx.get(f"{service.url}/", headers={"Cookie": cookies}).status_code == 200
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        body = b"x" * (1 << 20)
        head = b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        sock.sendall(head % len(body) + body)  # one write: head and body arrive together
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")  # read, and its secret checked
