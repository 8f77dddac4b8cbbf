"""Media-server accounts whose webhooks no profile takes, as this process has seen them.

A media server never shows what watchbridge answered, so a user name typed differently in
`profiles.NAME.users` looks like plays that silently go nowhere. The status page and
`/api/status` list the accounts seen here, and the log tells each account once (again after
LOG_AGAIN_AFTER). Friends on a shared Plex server are unmapped on purpose: shown, not alarmed.
Pure bookkeeping: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEPT = 20  # accounts remembered; the least recently seen goes first
LOG_AGAIN_AFTER = 6 * 3600.0


@dataclass
class Sighting:
    source: str
    server: str
    account: str  # as a user would write it under `users`: the name, else the id
    webhooks: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    logged_at: float | None = None


@dataclass
class UnmappedAccounts:
    seen: dict[tuple[str, str, str], Sighting] = field(default_factory=dict)

    def saw(self, source: str, server: str, account: str, now: float) -> bool:
        """Count one ignored webhook of this account; True when the log should tell of it."""
        key = (source, server, account)
        sighting = self.seen.pop(key, None) or Sighting(source, server, account, first_at=now)
        self.seen[key] = sighting  # last in the dict: the most recently seen
        sighting.webhooks += 1
        sighting.last_at = now
        while len(self.seen) > KEPT:
            del self.seen[next(iter(self.seen))]
        if sighting.logged_at is not None and now - sighting.logged_at < LOG_AGAIN_AFTER:
            return False
        sighting.logged_at = now
        return True

    def recent(self) -> list[Sighting]:
        """The accounts seen, the most recently seen first."""
        return sorted(self.seen.values(), key=lambda s: -s.last_at)


def account_label(name: str | None, account_id: str | None) -> str:
    """How the account reads in the status: its name (what `users` usually lists), and its
    id beside it when both are known (Plex's owner is id 1)."""
    if name and account_id and name != account_id:
        return f"{name} (id {account_id})"
    return name or account_id or "(no account in the webhook)"
