"""Which Host the status page and the API answer when no `server.api_token` guards them.

DNS rebinding: a web page at `http://attacker.example:8765/` points its own name at this
machine's LAN address; to the browser it then is the same origin as watchbridge's page, so it
can open that in a window, read it and press its buttons. The browser still sends the name it
asked for in `Host`, and that name is the attacker's: a public DNS name. So without a token only
names no public DNS answers for such a page are served: IP addresses, `localhost`, single names
(`tower`, `homeassistant`), names under a suffix public DNS never delegates, and the names the
user lists in `server.allowed_hosts`. Pure but for `RefusedHosts`, which remembers what the log
told.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

# Suffixes no public DNS delegates (RFC 6762, 6761, 8375; ICANN's .internal; .lan and .home by
# habit of home routers, which ICANN will not delegate either).
LOCAL_SUFFIXES = (
    "local",
    "lan",
    "home",
    "home.arpa",
    "internal",
    "localdomain",
    "localhost",
    "test",
)
_DOTTED = tuple(f".{suffix}" for suffix in LOCAL_SUFFIXES)
SUFFIXES_SAID = ", ".join(_DOTTED)


# A name (letters, digits, `-`, `_` as Docker's container names have, dots) or a bracketed IPv6
# address, then a port: what a browser sends. Anything else names nothing (no browser sent it).
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::\d*)?")


def host_name(header: str) -> str | None:
    """The name or address a Host header names, lower case, without its port, brackets or a
    final dot; None when it names none. Pure."""
    found = _HOST.fullmatch(header.strip())
    if found is None:
        return None
    if found["v6"] is not None:
        return found["v6"].lower() if _is_address(found["v6"]) else None
    return found["name"].lower().rstrip(".") or None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _listed(name: str, allowed: Sequence[str]) -> bool:
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*.") and name.endswith(entry[1:]):
            return True
        if name == entry:
            return True
    return False


def answers(header: str | None, allowed: Sequence[str]) -> bool:
    """Whether a request with this Host header (None: it has none, so no browser sent it) may
    read the page or the API with no api_token: a name no rebinding page can have."""
    if header is None:
        return True
    name = host_name(header)
    if not name:
        return False
    if _is_address(name) or "." not in name:
        return True
    return name.endswith(_DOTTED) or _listed(name, allowed)


def refusal(header: str) -> str:
    """What a request under a name that is not answered is told: why, and what to do."""
    name = host_name(header)
    said = f"the name {name}" if name else "this name"
    return (
        f"the status page and API are not answered under {said}, which another web page could "
        "point at this machine (DNS rebinding) to read them and press their buttons: if it is "
        "your own name for watchbridge, add it under server.allowed_hosts and restart "
        "watchbridge; an IP address, a single name (such as tower) and names under "
        f"{SUFFIXES_SAID} always work; or set server.api_token for scripts that send it (a "
        "browser then gets the page only through a proxy that adds it)"
    )


@dataclass
class RefusedHosts:
    """The names refused since the start the log has told of: each once, at most LIMIT (a page
    trying name after name fills no log)."""

    LIMIT = 20
    told: set[str] = field(default_factory=set)

    def first(self, header: str) -> bool:
        """Whether the log should tell of this refusal (its name's first, within the limit)."""
        name = host_name(header) or ""
        if name in self.told or len(self.told) >= self.LIMIT:
            return False
        self.told.add(name)
        return True
