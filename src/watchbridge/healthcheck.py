"""The image's healthcheck (`python -m watchbridge.healthcheck`, the Dockerfile's HEALTHCHECK and
docker-compose.yml's): asks /healthz on $WATCHBRIDGE_PORT (8765 unless set) at the address the
service listens on, read from the config the entrypoint chooses for it.

A service listening on every interface is asked on loopback; one listening on one address
(server.host: 192.168.1.20, with host networking on Unraid) answers there only: asked on
127.0.0.1, it never would, and the container would stay unhealthy. Exit 0 when it answers.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from watchbridge.config import ServerConfig, load_config
from watchbridge.entrypoint import TOKEN_FILE, Paths, StartError, plan_start, read_options
from watchbridge.errors import WatchbridgeError

DEFAULT_PORT = "8765"
TIMEOUT = 4.0  # seconds for all addresses together: the HEALTHCHECK's --timeout is 5 s


def addresses_to_ask(host: str) -> list[str]:
    """Where a service listening on `host` (server.host) answers this machine, in the order
    to ask. Pure."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return [host] if host else ["127.0.0.1"]  # a host name resolves as the bind did
    if not address.is_unspecified:
        return [host]
    if address.version == 4:
        return ["127.0.0.1"]
    # `::` takes IPv4 too unless the system keeps the families apart (bindv6only), and ::1
    # is missing where IPv6 is switched off on loopback: either may be the one that answers.
    return ["::1", "127.0.0.1"]


def healthz_url(address: str, port: str) -> str:
    shown = f"[{address.replace('%', '%25')}]" if ":" in address else address
    return f"http://{shown}:{port}/healthz"


def service_host(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The service's server.host, from the config the entrypoint runs it with (its own YAML or
    the one written from the options under Home Assistant); with why the default is assumed
    when that config cannot be read now."""
    default = ServerConfig().host
    paths = Paths.from_env(environ)
    try:
        options = read_options(paths.ha_options)
        token = _read_token(paths.data / TOKEN_FILE) if options is not None else ""
        plan = plan_start([], paths, options, token)
    except StartError as exc:
        return default, str(exc)
    try:
        config = load_config(Path(plan.env["WATCHBRIDGE_CONFIG"]), {**environ, **plan.env})
    except WatchbridgeError as exc:
        return default, exc.message.splitlines()[0]
    return config.server.host, None


def _read_token(path: Path) -> str:
    """The API token the entrypoint keeps (an own YAML may take it as ${WATCHBRIDGE_API_TOKEN});
    never created here."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def answers(url: str, timeout: float) -> str | None:
    """None when `url` answers 2xx, else what went wrong."""
    # No proxy: HTTP_PROXY in the container's environment is for the services it calls.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"answered {exc.code}"
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or exc)


def main(environ: Mapping[str, str] = os.environ) -> int:
    host, unread = service_host(environ)
    port = environ.get("WATCHBRIDGE_PORT") or DEFAULT_PORT
    addresses = addresses_to_ask(host)
    failures = []
    for address in addresses:
        url = healthz_url(address, port)
        problem = answers(url, TIMEOUT / len(addresses))
        if problem is None:
            return 0
        failures.append(f"{url}: {problem}")
    if unread:
        failures.append(f"asked as for server.host {host!r}: the config cannot be read ({unread})")
    print("; ".join(failures), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
