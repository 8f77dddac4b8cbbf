"""When each webhook source (and each server it names) last had a webhook accepted.

Nothing else tells a user that a media server stopped sending (Plex Pass lapsed, the URL
removed, the Jellyfin plugin disabled by an update): the status shows these times and
/metrics has them for an alert of the user's own ("no webhook for N days": only the household
knows how long it goes without watching).

Kept in memory (the webhook route adds no SQL statement for it), seeded at start from the store
(`Store.last_webhooks`: its events, and what its pruning kept of the events it deleted).

Beside them, when each source last sent its test notification (Emby's and Tautulli's test
buttons): no play, so no webhook taken, yet the one thing a user sends to see that the URL and
secret work. Since the start only.

Of each source, the SERVERS_KEPT servers seen most recently, here and in the store: a generic
sender naming a new `server` in each webhook (a session id, a time) would otherwise grow both
for as long as it sends, and a household's own servers of one source are a handful.

Each server by its own name where its webhooks give one (Plex's Server.title: `unlisted.
server_name`): three Plex servers are three 40-digit machine ids otherwise. Written to the
store only when a server's name is new to the service or changed (`named`), not per webhook.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from watchbridge.clocksteps import Step

# The servers of one source whose last webhook is kept (the most recently seen).
SERVERS_KEPT = 20


@dataclass(frozen=True, slots=True)
class LastWebhook:
    """The last webhook accepted from one source and server ("": the source named none), and
    the server's own name ("": none given)."""

    source: str
    server: str
    at: float
    name: str = ""


class LastWebhooks:
    """The last accepted webhook per (source, server), in memory: of each source, the
    `kept` servers seen most recently."""

    def __init__(self, kept: int = SERVERS_KEPT) -> None:
        self.kept = kept
        self._at: dict[str, dict[str, float]] = {}
        self._tested: dict[str, float] = {}  # source -> its last test notification
        self._names: dict[tuple[str, str], str] = {}  # (source, server) -> its name

    def seed(self, found: Iterable[LastWebhook]) -> None:
        """Take what the store holds (at start), keeping any later time seen meanwhile."""
        for one in found:
            self.saw(one.source, one.server, one.at)
            if one.name:
                self._names.setdefault((one.source, one.server), one.name)

    def named(self, source: str, server: str, name: str) -> bool:
        """`source`'s `server` gave its name as `name`: True when that is new (to be stored)."""
        if not server or not name or self._names.get((source, server)) == name:
            return False
        self._names[(source, server)] = name
        return True

    def forget_name(self, source: str, server: str) -> None:
        """The name could not be stored: the next webhook tries again."""
        self._names.pop((source, server), None)

    def saw(self, source: str, server: str, at: float) -> None:
        """A webhook of `source` from `server` was accepted at `at`."""
        servers = self._at.setdefault(source, {})
        if at > servers.get(server, float("-inf")):
            servers[server] = at
            if len(servers) > self.kept:
                del servers[min(servers, key=servers.__getitem__)]

    def tested(self, source: str, at: float) -> None:
        """A test notification of `source` came at `at` (answered, and ignored)."""
        self._tested[source] = max(at, self._tested.get(source, at))

    def tests(self) -> list[LastWebhook]:
        """The last test notification of each source that sent one since the start."""
        return [LastWebhook(source, "", at) for source, at in sorted(self._tested.items())]

    def restamp(self, step: Step) -> None:
        """Move the times stamped within the frame a step of the clock ended (clocksteps), as
        `Store.restamp` moves the plays': a webhook taken while a Raspberry Pi still said a
        day before is no day-old webhook (nor, after a step back, one still to come, which
        no later webhook would replace)."""
        for servers in self._at.values():
            for server, at in servers.items():
                if step.stamped_in_frame(at):
                    servers[server] = at + step.seconds
        for source, at in self._tested.items():
            if step.stamped_in_frame(at):
                self._tested[source] = at + step.seconds

    def of_server(self, source: str, server: str) -> float | None:
        """When `server` last had a webhook of `source` accepted (None: never, as far as the
        store remembers)."""
        return self._at.get(source, {}).get(server)

    def by_source(self) -> dict[str, float]:
        """The last accepted webhook of each source that has sent any, whatever its server."""
        return {source: max(servers.values()) for source, servers in self._at.items() if servers}

    def recent(self) -> list[LastWebhook]:
        """Every (source, server) kept, by source, then the latest first."""
        return sorted(
            (
                LastWebhook(source, server, at, self._names.get((source, server), ""))
                for source, servers in self._at.items()
                for server, at in servers.items()
            ),
            key=lambda one: (one.source, -one.at, one.server),
        )


def servers_shown(last: Iterable[LastWebhook]) -> dict[tuple[str, str], str]:
    """(source, server) -> the server as the status names it: by its name, with its id where
    another server of the source has that name too (Plex names each new server after its
    machine), by its id where it gave none. Pure."""
    found = list(last)
    names = Counter((one.source, one.name) for one in found if one.name)

    def shown(one: LastWebhook) -> str:
        if not one.name:
            return one.server
        if names[one.source, one.name] == 1:
            return one.name
        return f"{one.name} ({one.server})"

    return {(one.source, one.server): shown(one) for one in found}
