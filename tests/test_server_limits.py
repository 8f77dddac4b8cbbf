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
from litestar import Litestar, get, post
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


@post("/early", status_code=200, sync_to_thread=False)
def early() -> str:
    return "early"  # answered without reading the body, as a refused webhook is


@pytest.fixture(params=[H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def short_deadline(request: pytest.FixtureRequest) -> Iterator[int]:
    """A Litestar app served with a 0.5 s head deadline, by each of uvicorn's HTTP parsers."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Litestar([slow, fast, early]),
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


def answer(sock: socket.socket) -> bytes:
    """One answer read off `sock` (its head, and its body by Content-Length), or what came
    before the server closed the connection."""
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line[15:])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        while len(body) < length and (chunk := sock.recv(65536)):
            body += chunk
        data = head + b"\r\n\r\n" + body
    return data


def answer_after_a_body_sent_past_its_answer(
    port: int, path: str, then: bytes
) -> tuple[bytes, bytes]:
    """The answers to a POST of 1 MiB to `path` whose body is sent only after it answered (as
    a refused webhook's is, answered unread), and to a GET of `then` sent next on the same
    connection."""
    body = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path, len(body))
        )
        first = answer(sock)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body)
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % then)
        return first, answer(sock)


def test_a_webhook_refused_unread_leaves_its_connection_to_the_next_request(
    service: ServiceProcess,
) -> None:
    # A sender's connection pool sends the next webhook on the same connection: the rest of the
    # refused one's body is no request head to refuse with 431.
    first, second = answer_after_a_body_sent_past_its_answer(
        service.port, b"/webhooks/generic/wrong", b"/healthz"
    )
    assert first.startswith(b"HTTP/1.1 401 "), first[:100]
    assert second.startswith(b"HTTP/1.1 200 ") and b'"ok"' in second, second[:200]


def test_each_parser_reads_past_the_body_of_a_request_answered_unread(short_deadline: int) -> None:
    first, second = answer_after_a_body_sent_past_its_answer(short_deadline, b"/early", b"/fast")
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"early"), first[:100]
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"ok"), second[:200]
