"""When each webhook source (and each server it names) last had a webhook accepted.

Nothing else tells a user that a media server stopped sending (Plex Pass lapsed, the URL
removed, the Jellyfin plugin disabled by an update): the status shows these times and
/metrics has them for an alert of the user's own ("no webhook for N days": only the household
knows how long it goes without watching).

Kept in memory (the webhook route adds no SQL statement for it), seeded at start from the store
(`Store.last_webhooks`: its events, and what its pruning kept of the events it deleted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from watchbridge.clocksteps import Step


@dataclass(frozen=True, slots=True)
class LastWebhook:
    """The last webhook accepted from one source and server ("": the source named none)."""

    source: str
    server: str
    at: float


class LastWebhooks:
    """The last accepted webhook per (source, server), in memory."""

    def __init__(self) -> None:
        self._at: dict[tuple[str, str], float] = {}

    def seed(self, found: Iterable[LastWebhook]) -> None:
        """Take what the store holds (at start), keeping any later time seen meanwhile."""
        for one in found:
            self.saw(one.source, one.server, one.at)

    def saw(self, source: str, server: str, at: float) -> None:
        """A webhook of `source` from `server` was accepted at `at`."""
        key = (source, server)
        if at > self._at.get(key, float("-inf")):
            self._at[key] = at

    def restamp(self, step: Step) -> None:
        """Move the times stamped within the frame a step of the clock ended (clocksteps), as
        `Store.restamp` moves the plays': a webhook taken while a Raspberry Pi still said a
        day before is no day-old webhook (nor, after a step back, one still to come, which
        no later webhook would replace)."""
        for key, at in self._at.items():
            if step.stamped_in_frame(at):
                self._at[key] = at + step.seconds

    def of_server(self, source: str, server: str) -> float | None:
        """When `server` last had a webhook of `source` accepted (None: never, as far as the
        store remembers)."""
        return self._at.get((source, server))

    def by_source(self) -> dict[str, float]:
        """The last accepted webhook of each source that has sent any, whatever its server."""
        latest: dict[str, float] = {}
        for (source, _), at in self._at.items():
            latest[source] = max(at, latest.get(source, at))
        return latest

    def recent(self) -> list[LastWebhook]:
        """Every (source, server) seen, by source, then the latest first."""
        return sorted(
            (LastWebhook(source, server, at) for (source, server), at in self._at.items()),
            key=lambda one: (one.source, -one.at, one.server),
        )
