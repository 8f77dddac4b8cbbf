"""What a user reads when the home network misbehaves: a certificate refused, a name the DNS
does not know, an https:// URL at a plain http port; told apart from a server gone."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.base import FakeServer
from tests.fakes.https_port import PlainAtHttpsPort
from tests.fakes.jellyfin import API_KEY, JELLYFIN_SERIES, sample_server
from tests.fakes.plex import TOKEN, FakePlex
from tests.harness import free_port
from watchbridge.config import EmbyConfig, JellyfinConfig, PlexConfig, Secret
from watchbridge.http import HttpClient, RetryPolicy, Unavailable, tls_context
from watchbridge.services.jellyfin import MediaServerClient
from watchbridge.services.plex import PlexClient

pytestmark = pytest.mark.anyio

CLIENT_ID = "0f9e8d7c-watchbridge-test"
QUICK = RetryPolicy(attempts=2, backoff=0.01, max_inline_wait=0.5)


def certificate(folder: Path, name: str, alt_names: str) -> ssl.SSLContext:
    """A server's TLS context with a self-signed certificate for `alt_names` (as openssl's
    subjectAltName takes them), its certificate kept at `folder/name.pem`."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    subprocess.run(
        [
            *command.split(),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName={alt_names}"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@contextlib.contextmanager
def trusting(cafile: Path) -> Iterator[None]:
    """The service's one trust store as `SSL_CERT_FILE=cafile` makes it at start."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_CERT_FILE", str(cafile))
        tls_context.cache_clear()
        try:
            yield
        finally:
            tls_context.cache_clear()


def over_tls(
    start_fake: Callable[[FakeServer], FakeServer], context: ssl.SSLContext
) -> Callable[[FakeServer], FakeServer]:
    def start(fake: FakeServer) -> FakeServer:
        fake.tls = context
        return start_fake(fake)

    return start


async def failure(client: MediaServerClient | PlexClient) -> str:
    client.http.retry = QUICK
    try:
        with pytest.raises(Unavailable) as raised:
            if isinstance(client, PlexClient):
                await client.identity()
            else:
                await client.series(JELLYFIN_SERIES)
    finally:
        await client.aclose()
    return raised.value.message


async def test_a_self_signed_certificate_is_told_with_its_fixes_not_as_a_server_gone(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    context = certificate(tmp_path, "jellyfin", "IP:127.0.0.1")
    jellyfin = sample_server(over_tls(start_fake, context), "jellyfin")
    client = MediaServerClient(JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)))
    message = await failure(client)
    assert message.startswith(
        "Jellyfin: the TLS certificate of 127.0.0.1 was refused after 1 attempt(s): it is "
        "self-signed; use http:// and the server's plain port in services.jellyfin.url "
        "(Jellyfin's and Emby's: 8096), or set SSL_CERT_FILE to a file holding the public "
        "certificate authorities and yours"
    )
    assert "nothing answers" not in message
    assert client.http.requests_sent == 1  # a certificate does not change in a second


async def test_a_certificate_authority_in_ssl_cert_file_is_trusted(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    context = certificate(tmp_path, "jellyfin", "IP:127.0.0.1")
    jellyfin = sample_server(over_tls(start_fake, context), "jellyfin")
    with trusting(tmp_path / "jellyfin.pem"):
        client = MediaServerClient(JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)))
    try:
        series = await client.series(JELLYFIN_SERIES)
    finally:
        await client.aclose()
    assert series is not None and series.title == "Breaking Bad"


async def test_plex_at_its_address_with_its_plex_direct_certificate_is_told_the_urls_that_work(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Plex's certificate, from a public authority, is made out to its plex.direct names.
    context = certificate(tmp_path, "plex", "DNS:*.0123abcd.plex.direct")
    plex = over_tls(start_fake, context)(FakePlex())
    port = plex.url.rsplit(":", 1)[1]
    with trusting(tmp_path / "plex.pem"):
        client = PlexClient(
            PlexConfig(url=plex.url, token=Secret(TOKEN)), client_identifier=CLIENT_ID
        )
    message = await failure(client)
    assert message == (
        "Plex: the TLS certificate of 127.0.0.1 was refused after 1 attempt(s): it is not "
        f"made out to 127.0.0.1; on your network, use http://127.0.0.1:{port} in "
        "services.plex.url, or the server's own plex.direct address "
        f"(https://127-0-0-1.SERVER-HASH.plex.direct:{port}), to which Plex's certificates "
        "are made out"
    )


async def test_an_https_url_at_a_plain_http_port_says_to_use_http(
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    emby = sample_server(start_fake, "emby")
    port = emby.url.rsplit(":", 1)[1]
    url = f"https://127.0.0.1:{port}"
    message = await failure(MediaServerClient(EmbyConfig(url=url, api_key=Secret(API_KEY))))
    assert message == (
        "Emby: 127.0.0.1 answered https:// in plain HTTP after 1 attempt(s): the server "
        f"speaks plain http on that port: use http://127.0.0.1:{port} in services.emby.url"
    )


async def test_an_http_url_at_an_https_port_says_to_use_https(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    context = certificate(tmp_path, "jellyfin", "IP:127.0.0.1")
    jellyfin = sample_server(over_tls(start_fake, context), "jellyfin")
    port = jellyfin.url.rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}"  # the server resets a plain request: a ReadError
    client = MediaServerClient(JellyfinConfig(url=url, api_key=Secret(API_KEY)))
    message = await failure(client)
    assert message == (
        "Jellyfin: 127.0.0.1 answered http:// in https (TLS) after 1 attempt(s): the server "
        f"speaks https on that port: use https://127.0.0.1:{port} in services.jellyfin.url"
    )
    assert client.http.requests_sent == 1  # a port's scheme does not change in a second


@pytest.mark.parametrize(
    ("server", "said"),
    [
        ("nginx", "The plain HTTP request was sent to HTTPS port"),
        ("caddy", "Client sent an HTTP request to an HTTPS server"),  # Traefik's too (Go's)
        ("apache", "You're speaking plain HTTP to an SSL-enabled server port"),
    ],
)
async def test_an_http_url_at_a_reverse_proxys_https_port_says_to_use_https(
    server: str, said: str
) -> None:
    # A reverse proxy answers the plain request with a 400 of its own rather than dropping it:
    # it read as Jellyfin refusing the request ("answered 400").
    with PlainAtHttpsPort(server) as proxy:
        port = proxy.url.rsplit(":", 1)[1]
        client = MediaServerClient(JellyfinConfig(url=proxy.url, api_key=Secret(API_KEY)))
        message = await failure(client)
    assert message == (
        f'Jellyfin: 127.0.0.1 answered http:// with "{said}" after 1 attempt(s): the server '
        f"speaks https on that port: use https://127.0.0.1:{port} in services.jellyfin.url"
    )
    assert proxy.requests == 1  # a port's scheme does not change in a second


async def test_a_plain_server_dropping_a_request_is_not_told_as_an_https_port(
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    jellyfin = sample_server(start_fake, "jellyfin")
    jellyfin.drop_next(2)
    message = await failure(
        MediaServerClient(JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)))
    )
    assert "https" not in message and "after 2 attempt(s)" in message, message


def unreachable_over_ipv6(address: str) -> bool:
    """Whether connecting to `address` fails as on a machine without IPv6 ("Network is
    unreachable"): Linux refuses a TCP connection to a multicast address with that error."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.settimeout(2)
        try:
            probe.connect((address, 32400))
        except OSError as error:
            return error.errno == errno.ENETUNREACH
    return False


async def test_an_ipv6_address_without_an_ipv6_route_is_told_as_such_not_as_a_server_gone() -> None:
    if not unreachable_over_ipv6("ff02::1"):
        pytest.skip("this machine does not answer a connection to ff02::1 with ENETUNREACH")
    config = PlexConfig(url="http://[ff02::1]:32400", token=Secret(TOKEN))
    message = await failure(PlexClient(config, client_identifier=CLIENT_ID))
    assert message == (
        "Plex: no route to ff02::1 over IPv6 after 1 attempt(s): this machine (or its "
        "container) has no IPv6 route; use the server's IPv4 address in services.plex.url, or "
        "turn on IPv6 for its network (Docker: `enable_ipv6: true` on the network)"
    )


def resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, 80)
    except OSError:
        return False
    return True


async def test_a_server_name_the_dns_does_not_know_is_told_as_dns_in_the_error_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if resolves("plex.nothing.invalid"):  # a DNS answering every name (some ISPs' do)
        pytest.skip("this machine's DNS answers for names that do not exist")
    config = PlexConfig(url="http://plex.nothing.invalid:32400", token=Secret(TOKEN))
    with caplog.at_level(logging.DEBUG, logger="watchbridge.http"):
        message = await failure(PlexClient(config, client_identifier=CLIENT_ID))
    assert message.startswith(
        "Plex: the name plex.nothing.invalid could not be looked up (DNS) after 2 attempt(s): "
    )
    assert "is the name in services.plex.url spelt right" in message
    assert "nothing answers" not in message
    (line,) = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert line.problem == message.removeprefix("Plex: ").replace(  # type: ignore[attr-defined]
        " after 2 attempt(s)", ""
    )


async def test_a_service_name_the_dns_does_not_know_asks_about_this_machines_dns() -> None:
    if resolves("api.nothing.invalid"):
        pytest.skip("this machine's DNS answers for names that do not exist")
    http = HttpClient("trakt", "https://api.nothing.invalid", retry=QUICK)
    try:
        with pytest.raises(Unavailable) as raised:
            await http.request("GET", "/users/settings")
    finally:
        await http.aclose()
    assert raised.value.message.startswith(
        "Trakt: the name api.nothing.invalid could not be looked up (DNS) after 2 attempt(s): "
    )
    assert "does the DNS this machine (or its container) uses answer" in raised.value.message


@contextlib.contextmanager
def proxied(proxy: str, no_proxy: str = "") -> Iterator[None]:
    """The environment of a container with `HTTP_PROXY=proxy` (and `NO_PROXY=no_proxy`), as
    clients made meanwhile read it."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            patch.delenv(name, raising=False)
            patch.delenv(name.lower(), raising=False)
        patch.delenv("http_proxy", raising=False)
        patch.setenv("HTTP_PROXY", proxy)
        if no_proxy:
            patch.setenv("NO_PROXY", no_proxy)
        yield


@contextlib.asynccontextmanager
async def gateway_failing() -> AsyncIterator[str]:
    """A proxy that cannot reach the home network: every request answers 502 (its URL)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_on_the_network_behind_a_proxy_that_does_not_answer_points_to_no_proxy(
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    plex = start_fake(FakePlex())
    port = free_port()  # the proxy is down: nothing listens there
    with proxied(f"http://squid:s3cret@127.0.0.1:{port}"):
        client = PlexClient(
            PlexConfig(url=plex.url, token=Secret(TOKEN)), client_identifier=CLIENT_ID
        )
    message = await failure(client)
    assert message == (
        "Plex: the connection was refused after 2 attempt(s): the request went through "
        f"the proxy http://127.0.0.1:{port} (HTTP_PROXY), which may not reach 127.0.0.1 on "
        "your network: add 127.0.0.1 to NO_PROXY"
    )
    assert "s3cret" not in message


async def test_a_server_on_the_network_a_proxy_cannot_reach_points_to_no_proxy() -> None:
    async with gateway_failing() as proxy:
        with proxied(proxy):
            config = JellyfinConfig(url="http://192.168.1.10:8096", api_key=Secret(API_KEY))
            client = MediaServerClient(config)
        message = await failure(client)
    assert message == (
        f"Jellyfin: answered 502 after 2 attempt(s): the request went through the proxy {proxy} "
        "(HTTP_PROXY), which may not reach 192.168.1.10 on your network: add 192.168.1.10 to "
        "NO_PROXY"
    )


async def test_a_server_in_no_proxy_is_reached_directly_and_a_service_out_there_is_not_told_of(
    start_fake: Callable[[FakeServer], FakeServer],
) -> None:
    jellyfin = sample_server(start_fake, "jellyfin")
    async with gateway_failing() as proxy:
        with proxied(proxy, no_proxy="127.0.0.1"):
            client = MediaServerClient(JellyfinConfig(url=jellyfin.url, api_key=Secret(API_KEY)))
            online = HttpClient("trakt", "http://api.trakt.example", retry=QUICK)
        try:
            series = await client.series(JELLYFIN_SERIES)
            with pytest.raises(Unavailable) as raised:
                await online.request("GET", "/users/settings")
        finally:
            await client.aclose()
            await online.aclose()
    assert series is not None and series.title == "Breaking Bad"
    # Not on the home network: a proxy is how it is reached, not a mistake.
    assert raised.value.message == "Trakt: answered 502 after 2 attempt(s)"
