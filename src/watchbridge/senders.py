"""Plex servers whose plays reach a profile through both Plex's and Tautulli's webhooks.

Each of the two reports a viewing at its own completion point (Plex at 90 %, Tautulli at its
"watched" percent), minutes apart: further apart than Trakt's and Serializd's duplicate windows,
so one viewing counts twice. Both sending for one server and profile within TOGETHER_WITHIN of
each other is that mistake; a switch from one sender to the other leaves a longer gap. Pure
bookkeeping: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAIR = ("plex", "tautulli")  # two senders of one Plex server's plays
TOGETHER_WITHIN = 15 * 60.0
SHOWN_FOR = 24 * 3600.0  # a doubling not seen again for this long is over
TELL_AGAIN_AFTER = 6 * 3600.0
KEPT = 20  # (profile, source, server) sightings remembered; the least recently seen goes first

FIX = (
    "keep one of them for this server: remove Tautulli's webhook, or Plex's "
    "(docs/webhooks.md, one sender per server)"
)


@dataclass
class Doubling:
    """A profile getting one Plex server's plays from both Plex's and Tautulli's webhooks."""

    profile: str
    server: str  # Plex's machine id, or "" when a sender named none
    first_at: float
    last_at: float
    told_at: float | None = None
    fix: str = FIX

    @property
    def message(self) -> str:
        server = f"Plex server {self.server}" if self.server else "a Plex server"
        return (
            f"profile {self.profile} gets the plays of {server} from both Plex's and "
            "Tautulli's webhooks: each viewing counts twice (they report it minutes apart)"
        )


@dataclass
class Senders:
    last_seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    doublings: dict[tuple[str, str], Doubling] = field(default_factory=dict)

    def saw(self, profile: str, source: str, server: str, now: float) -> Doubling | None:
        """Note a webhook of `source` taken by `profile` about `server`; the doubling when
        this one shows both senders at work and it is time to tell (first, or again)."""
        if source not in PAIR:
            return None
        key = (profile, source, server)
        self.last_seen.pop(key, None)
        self.last_seen[key] = now  # last in the dict: the most recently seen
        while len(self.last_seen) > KEPT:
            del self.last_seen[next(iter(self.last_seen))]
        other = PAIR[1] if source == PAIR[0] else PAIR[0]
        partner = self._together(profile, other, server, now)
        if partner is None:
            return None
        # A sender that names no server matches any: keep the one that has a name.
        doubling_key = (profile, server or partner)
        doubling = self.doublings.get(doubling_key)
        if doubling is None:
            doubling = self.doublings[doubling_key] = Doubling(profile, server or partner, now, now)
        doubling.last_at = now
        if doubling.told_at is not None and now - doubling.told_at < TELL_AGAIN_AFTER:
            return None
        doubling.told_at = now
        return doubling

    def recent(self, now: float) -> list[Doubling]:
        """The doublings seen in the last SHOWN_FOR, the most recently seen first."""
        shown = [d for d in self.doublings.values() if now - d.last_at < SHOWN_FOR]
        return sorted(shown, key=lambda d: -d.last_at)

    def _together(self, profile: str, source: str, server: str, now: float) -> str | None:
        """The server `source` reported for `profile` within TOGETHER_WITHIN that is (or may
        be, one of them unnamed) `server`; None if none."""
        for (seen_profile, seen_source, seen_server), at in self.last_seen.items():
            if (seen_profile, seen_source) != (profile, source) or now - at > TOGETHER_WITHIN:
                continue
            if seen_server == server or not seen_server or not server:
                return seen_server
        return None
