"""The image's healthcheck (`python -m watchbridge.healthcheck`, the Dockerfile's HEALTHCHECK and
docker-compose.yml's): asks /healthz on $WATCHBRIDGE_PORT (8765 unless set) at the address the
service listens on, then /readyz there: a service that is up but whose database takes no
writes (its disk full, read-only) refuses every webhook, and Docker (Unraid's Docker tab) shows
it unhealthy, saying why. Home Assistant's watchdog asks /healthz alone (addon/config.yaml): it
restarts an app it finds unhealthy, which mends no full disk.

A service listening on every interface is asked on loopback; one listening on one address
(server.host: 192.168.1.20, with host networking on Unraid) answers there only: asked on
127.0.0.1, it never would, and the container would stay unhealthy. Exit 0 when /healthz answers
200 and /readyz does not answer 503.

It runs every 30 s for as long as the container does, so it costs next to nothing: the service,
once listening, notes its host and ports in $WATCHBRIDGE_DATA_DIR/watchbridge.listening, and the
check asks there over a bare socket, importing only what Python starts with, `socket` and this
module. Only without a note of the running service (a first start, a data folder an older
release ran on, a note a killed service left) does it read the config the entrypoint chooses,
which imports the config model and YAML: ten times the CPU.
"""

from __future__ import annotations

import contextlib  # imported by `python -m` itself (runpy)
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence

DEFAULT_PORT = "8765"
HEALTHZ, READYZ = "/healthz", "/readyz"
TIMEOUT = 4.0  # seconds for all addresses together: the HEALTHCHECK's --timeout is 5 s
LISTENING_FILE = "watchbridge.listening"
_MAX_ANSWER_HEAD = 4096
_MAX_NOTE = 4096


class Listening:
    """What a service noted of where it listens: its process (pid, and start time so that
    another process given the same pid is not taken for it), server.host, and its ports."""

    __slots__ = ("host", "pid", "ports", "started")

    def __init__(self, pid: int, started: str, host: str, ports: tuple[str, ...]) -> None:
        self.pid, self.started, self.host, self.ports = pid, started, host, ports


def listening_file(data_dir: str) -> str:
    """The note in the data folder ($WATCHBRIDGE_DATA_DIR) the service and the check share."""
    return os.path.join(data_dir, LISTENING_FILE)


def listening_record(pid: int, started: str, host: str, ports: Sequence[int]) -> str:
    """The note's text: a line per field, read without json's or yaml's import. Pure."""
    return f"pid {pid}\nstarted {started}\nhost {host}\nports {' '.join(str(p) for p in ports)}\n"


def parse_listening(text: str) -> Listening | None:
    """The note `listening_record` wrote; None for anything else (cut short, edited). Pure."""
    fields = dict(line.partition(" ")[::2] for line in text.splitlines())
    pid, started = fields.get("pid", ""), fields.get("started", "")
    ports = tuple(fields.get("ports", "").split())
    numbers = [pid, *ports, *([started] if started else [])]  # no start time without /proc
    if "host" not in fields or not ports or not all(n.isascii() and n.isdigit() for n in numbers):
        return None
    return Listening(int(pid), started, fields["host"], ports)


def process_started(pid: int) -> str:
    """When process `pid` started (clock ticks after boot, from /proc), "" when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # After the command's name in parentheses (which may hold anything): field 22.
            return stat.read().rpartition(b")")[2].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def running(noted: Listening) -> bool:
    """Whether the process that wrote the note still runs (not one given its pid since)."""
    if noted.pid <= 0:
        return False
    if noted.started:
        return process_started(noted.pid) == noted.started
    try:
        os.kill(noted.pid, 0)
    except PermissionError:
        return True  # another user's
    except OSError:
        return False
    return True


def _noted(path: str) -> Listening | None:
    """The note at `path` as written, None if there is none that reads."""
    try:
        with open(path, encoding="utf-8") as note:
            return parse_listening(note.read(_MAX_NOTE))
    except (OSError, UnicodeError):
        return None


def read_listening(path: str) -> Listening | None:
    """The note at `path`, if the service that wrote it still runs."""
    noted = _noted(path)
    return noted if noted is not None and running(noted) else None


def note_listening(path: str, host: str, ports: Sequence[int]) -> None:
    """The service, listening: note where, for the check (owner-only, replaced atomically),
    in a data folder that exists (never made here)."""
    from pathlib import Path

    from watchbridge.entrypoint import write_private

    if not os.path.isdir(os.path.dirname(path) or "."):
        return
    pid = os.getpid()
    write_private(Path(path), listening_record(pid, process_started(pid), host, ports))


def forget_listening(path: str, pid: int | None = None) -> None:
    """Remove the note (only if process `pid` wrote it, when given)."""
    if pid is not None:
        noted = _noted(path)
        if noted is None or noted.pid != pid:
            return
    with contextlib.suppress(OSError):
        os.unlink(path)


def addresses_to_ask(host: str) -> list[str]:
    """Where a service listening on `host` (server.host) answers this machine, in the order
    to ask. Pure."""
    bare = host.split("%", 1)[0]
    if bare in ("", "0.0.0.0"):
        return ["127.0.0.1"]
    if _unspecified_v6(bare):
        # `::` takes IPv4 too unless the system keeps the families apart (bindv6only), and ::1
        # is missing where IPv6 is switched off on loopback: either may be the one that answers.
        return ["::1", "127.0.0.1"]
    return [host]  # one address, or a host name: resolved as the bind did


def _unspecified_v6(address: str) -> bool:
    """Whether `address` is IPv6's every interface however written (`::`, `0::0`, ...);
    without ipaddress, whose import costs the check more than its socket does."""
    try:
        return socket.inet_pton(socket.AF_INET6, address) == bytes(16)
    except (OSError, ValueError):
        return False


def healthz_url(address: str, port: str) -> str:
    shown = f"[{address.replace('%', '%25')}]" if ":" in address else address
    return f"http://{shown}:{port}{HEALTHZ}"


def answers(address: str, port: str, timeout: float) -> str | None:
    """None when /healthz at `address`, `port` answers 200, else what went wrong."""
    try:
        answer = _get(address, port, HEALTHZ, timeout, whole=False)
    except (OSError, ValueError, OverflowError, UnicodeError) as exc:
        return str(exc) or type(exc).__name__
    status = answer.split(b"\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/"):
        return "no HTTP answer" if not answer else "answered something other than HTTP"
    if status[1] != b"200":
        return f"answered {status[1].decode(errors='replace')}"
    return None


def unready(address: str, port: str, timeout: float) -> str | None:
    """What /readyz at `address`, `port` says when it answers 503 (the database takes no
    writes), else None: a service that answered /healthz but not this in time, or not so, is
    taken as up (a database another program holds for a while is waited out)."""
    try:
        answer = _get(address, port, READYZ, timeout, whole=True)
    except (OSError, ValueError, OverflowError, UnicodeError):
        return None
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b"\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"503":
        return None
    return f"answered 503: {not_storing(body)}"


def not_storing(body: bytes) -> str:
    """The words for /readyz's 503 `body` (its JSON `reason`, as the service said it). Pure."""
    import json  # only on this rare path: the check every 30 s imports nothing

    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        reason = None
    said = f" ({reason})" if isinstance(reason, str) and reason else ""
    return (
        f"watchbridge is up but cannot write its database{said}, so it refuses every webhook "
        "(answered 503); see its log and the storage alert for what to do"
    )


def _get(address: str, port: str, path: str, timeout: float, *, whole: bool) -> bytes:
    """The answer to one HTTP/1.0 GET of `path` on a bare socket (its first line, or with
    `whole` all of it, up to 4 KB): no proxy (HTTP_PROXY in the container is for the services
    it calls), no redirect, nothing imported."""
    deadline = time.monotonic() + timeout
    shown = f"[{address}]" if ":" in address else address
    # As bytes, an ASCII name or address is looked up without the idna codec's import.
    host: str | bytes = address.encode("ascii") if address.isascii() else address
    # getaddrinfo takes bytes too, which typeshed's create_connection does not say.
    with socket.create_connection((host, int(port)), timeout) as conn:  # type: ignore[arg-type]
        conn.settimeout(max(deadline - time.monotonic(), 0.001))
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {shown}:{port}\r\n\r\n".encode())
        answer = b""
        while not _enough(answer, whole) and len(answer) < _MAX_ANSWER_HEAD:
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(_MAX_ANSWER_HEAD)
            if not chunk:
                break
            answer += chunk
    return answer


def _enough(answer: bytes, whole: bool) -> bool:
    """Whether `answer` holds its first line (or, `whole`, its head and the body its
    Content-Length says: a server keeping the connection open is not waited out). Pure."""
    if not whole:
        return b"\n" in answer
    head, found, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:] if found else ():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return value.strip().isdigit() and len(body) >= int(value)
    return False


def service_host(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The service's server.host, from the config the entrypoint runs it with (its own YAML or
    the one written from the options under Home Assistant); with why the default is assumed
    when that config cannot be read now."""
    # Imported here: they are what makes reading the config costly (see the module's doc).
    from pathlib import Path

    from watchbridge.config import ServerConfig, load_config
    from watchbridge.entrypoint import TOKEN_FILE, Paths, StartError, plan_start, read_options
    from watchbridge.errors import WatchbridgeError

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


def _read_token(path: os.PathLike[str]) -> str:
    """The API token the entrypoint keeps (an own YAML may take it as ${WATCHBRIDGE_API_TOKEN});
    never created here."""
    try:
        with open(path, encoding="utf-8") as token:
            return token.read().strip()
    except OSError:
        return ""


def ask(addresses: Sequence[str], port: str) -> list[str]:
    """Ask each address in turn until one answers, then whether the service there is ready;
    what went wrong at each, [] when one answered and is."""
    deadline = time.monotonic() + TIMEOUT
    failures = []
    for address in addresses:
        problem = answers(address, port, TIMEOUT / len(addresses))
        if problem is None:
            left = deadline - time.monotonic()
            refused = unready(address, port, left) if left > 0 else None
            url = healthz_url(address, port).removesuffix(HEALTHZ) + READYZ
            return [] if refused is None else [f"{url}: {refused}"]
        failures.append(f"{healthz_url(address, port)}: {problem}")
    return failures


def main(environ: Mapping[str, str] = os.environ) -> int:
    port = environ.get("WATCHBRIDGE_PORT") or DEFAULT_PORT
    noted = read_listening(listening_file(environ.get("WATCHBRIDGE_DATA_DIR") or "/data"))
    if noted is not None and port in noted.ports:
        failures = ask(addresses_to_ask(noted.host), port)
    else:
        host, unread = service_host(environ)
        failures = ask(addresses_to_ask(host), port)
        if failures and unread:
            failures.append(
                f"asked as for server.host {host!r}: the config cannot be read ({unread})"
            )
    if not failures:
        return 0
    print("; ".join(failures), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
