"""What a user reads when a request gets no HTTP answer (a dropped connection, a timeout,
nothing listening): what happened and what to check, in plain words; httpx's class names
are for the debug log only."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.echo import EchoFake
from tests.harness import free_port
from watchbridge.http import HttpClient, RetryPolicy, Unavailable, request_failure

pytestmark = pytest.mark.anyio

QUICK = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)
DROPPED = (
    "the server closed the connection without answering after 2 attempt(s): if it keeps "
    "happening, look at the server's log, and at what sits on the way (a reverse proxy, a "
    "firewall, a VPN)"
)
CLASS_NAMES = ("Error", "Timeout", "Exception", "httpx", "httpcore")


@pytest.fixture
def echo(start_fake: Callable[[FakeServer], FakeServer]) -> EchoFake:
    fake = start_fake(EchoFake())
    assert isinstance(fake, EchoFake)
    return fake


@pytest.fixture
async def client(echo: EchoFake) -> AsyncIterator[HttpClient]:
    http = HttpClient("echo", echo.url, timeout=1.0, retry=QUICK)
    yield http
    await http.aclose()


async def failed(http: HttpClient, path: str = "/items") -> str:
    with pytest.raises(Unavailable) as raised:
        await http.request("GET", path)
    return raised.value.message


async def test_a_dropped_connection_is_told_as_closed_without_an_answer_with_what_to_check(
    client: HttpClient, echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    echo.drop_next(2)
    with caplog.at_level(logging.WARNING, logger="watchbridge.http"):
        message = await failed(client)
    assert message == f"echo: {DROPPED}"
    (line,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert line.problem == DROPPED.replace(" after 2 attempt(s)", "")  # type: ignore[attr-defined]


async def test_an_answer_cut_off_midway_is_told_as_such_not_as_something_else_than_http(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.cut_next(2)
    message = await failed(client)
    assert message == (
        "echo: the connection broke while the answer came in (it was cut off) after 2 "
        "attempt(s): if it keeps happening, look at the server's log, and at what sits on the "
        "way (a reverse proxy, a firewall, a VPN)"
    )


async def test_a_write_whose_answer_was_cut_off_may_have_landed_and_is_not_sent_again(
    client: HttpClient, echo: EchoFake
) -> None:
    echo.cut_next(1, route="POST /items")
    with pytest.raises(Unavailable) as raised:
        await client.request("POST", "/items", json={"n": 1})
    assert raised.value.outcome_unknown
    assert echo.count("POST", "/items") == 1 and len(echo.items) == 1


async def test_an_answer_that_does_not_come_is_told_as_a_timeout_of_the_answer_with_its_time(
    echo: EchoFake,
) -> None:
    echo.delay_next(1, 0.5)
    http = HttpClient("echo", echo.url, timeout=0.1, retry=RetryPolicy(attempts=1))
    try:
        message = await failed(http)
    finally:
        await http.aclose()
    assert message == (
        "echo: the answer timed out (none came within 0.1 s) after 1 attempt(s): the service "
        "is slow or busy (a library scan, an overloaded server): if it keeps happening, look "
        "at its load and its log"
    )


async def test_nothing_listening_at_an_online_service_is_told_as_refused_with_what_to_check() -> (
    None
):
    http = HttpClient("trakt", f"http://127.0.0.1:{free_port()}", retry=QUICK)
    try:
        message = await failed(http, "/users/settings")
    finally:
        await http.aclose()
    assert message == (
        "Trakt: the connection was refused after 2 attempt(s): nothing listens at that address "
        "and port: is the service running, and its address right?"
    )


async def test_the_kind_of_failure_is_in_the_debug_line_and_not_in_the_words(
    client: HttpClient, echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    echo.drop_next(2)
    with caplog.at_level(logging.DEBUG, logger="watchbridge.http"):
        message = await failed(client)
    tries = [r for r in caplog.records if r.getMessage() == "request try failed"]
    assert [(r.error, r.attempt) for r in tries] == [  # type: ignore[attr-defined]
        ("RemoteProtocolError", 1),
        ("RemoteProtocolError", 2),
    ]
    assert "Server disconnected" in tries[0].detail  # type: ignore[attr-defined]
    assert "RemoteProtocolError" not in message


async def test_a_token_in_a_failed_requests_query_is_in_neither_the_words_nor_the_log(
    client: HttpClient, echo: EchoFake, caplog: pytest.LogCaptureFixture
) -> None:
    token = "Zq8xTokenOfTheServer42"
    echo.drop_next(2)
    with caplog.at_level(logging.DEBUG, logger="watchbridge.http"):
        message = await failed(client, f"/items?X-Plex-Token={token}")
    assert token not in message
    logged = [str(value) for r in caplog.records for value in vars(r).values()]
    assert logged and not [text for text in logged if token in text]


def timed_out(kind: type[httpx.TimeoutException]) -> httpx.TimeoutException:
    timeouts = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    request = httpx.Request("GET", "http://192.168.1.10:8096/", extensions={"timeout": timeouts})
    return kind("", request=request)


def caused(error: httpx.RequestError, cause: BaseException) -> httpx.RequestError:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (timed_out(httpx.ConnectTimeout), "connecting timed out (no connection within 10 s)"),
        (timed_out(httpx.ReadTimeout), "the answer timed out (none came within 30 s)"),
        (timed_out(httpx.WriteTimeout), "sending the request timed out (not taken within 30 s)"),
        (
            timed_out(httpx.PoolTimeout),
            "waiting for a free connection timed out (none was free within 30 s)",
        ),
        (httpx.ReadTimeout(""), "the answer timed out"),  # its request unknown
        (
            caused(
                httpx.ConnectError("All connection attempts failed"),
                ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            ),
            "the connection was refused",
        ),
        (
            caused(httpx.ConnectError("x"), socket.gaierror(socket.EAI_NONAME, "not known")),
            "the name could not be looked up (DNS)",
        ),
        (
            caused(httpx.ConnectError("x"), OSError(errno.EHOSTUNREACH, "No route to host")),
            "no route to the server",
        ),
        (
            caused(httpx.ConnectError("x"), ssl.SSLError(1, "[SSL] sslv3 alert handshake failure")),
            "the secure (TLS) connection could not be set up",
        ),
        (
            caused(httpx.ReadError(""), ConnectionResetError(errno.ECONNRESET, "reset by peer")),
            "the server closed the connection without answering",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "the server closed the connection without answering",
        ),
        (httpx.RemoteProtocolError("illegal status line: b'SSH-2.0'"), "the answer was not HTTP"),
        (
            httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (incomplete "
                "chunked read)"
            ),
            "the connection broke while the answer came in (it was cut off)",
        ),
        (httpx.WriteError(""), "the connection broke while the request was sent"),
        (
            httpx.ProxyError("407 Proxy Authentication Required"),
            "the proxy did not connect to the service",
        ),
        (
            httpx.DecodingError("Error -3 while decompressing"),
            "the answer could not be decoded (its compression or character set is broken)",
        ),
    ],
)
def test_each_failure_below_http_has_its_own_words_and_what_to_check(
    error: httpx.RequestError, what: str
) -> None:
    failure = request_failure(error)
    assert failure.what == what
    assert failure.check
    said = f"{failure.what} {failure.check}"
    assert not [name for name in CLASS_NAMES if name in said], said
