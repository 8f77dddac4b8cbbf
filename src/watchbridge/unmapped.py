"""Media-server accounts whose webhooks no profile takes, as this process has seen them.

A media server never shows what watchbridge answered, so a user name typed differently in
`profiles.NAME.users` looks like plays that silently go nowhere. The status page and
`/api/status` list the accounts seen here, and the log tells each account once (again after
LOG_AGAIN_AFTER), also one the list has let go (a server shared with more friends than KEPT),
and at most TOLD_AT_MOST accounts in that while (a sender naming a new account in every
webhook does not fill the log). Friends on a shared Plex server are unmapped on purpose:
shown, not alarmed. Pure bookkeeping: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEPT = 20  # accounts remembered; the least recently seen goes first
LOG_AGAIN_AFTER = 6 * 3600.0
TOLD_AT_MOST = 200  # accounts the log tells of within LOG_AGAIN_AFTER


@dataclass
class Sighting:
    source: str
    server: str
    account: str  # as a user would write it under `users`: the name, else the id
    webhooks: int = 0
    first_at: float = 0.0
    last_at: float = 0.0

    @property
    def fix(self) -> str:
        return unmapped_fix(self.source, self.account)


@dataclass
class UnmappedAccounts:
    seen: dict[tuple[str, str, str], Sighting] = field(default_factory=dict)
    # When the log last told of each account, within LOG_AGAIN_AFTER: the oldest first.
    told: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def saw(self, source: str, server: str, account: str, now: float) -> bool:
        """Count one ignored webhook of this account; True when the log should tell of it."""
        key = (source, server, account)
        sighting = self.seen.pop(key, None) or Sighting(source, server, account, first_at=now)
        self.seen[key] = sighting  # last in the dict: the most recently seen
        sighting.webhooks += 1
        sighting.last_at = now
        while len(self.seen) > KEPT:
            del self.seen[next(iter(self.seen))]
        while self.told:
            oldest, at = next(iter(self.told.items()))
            if now - at < LOG_AGAIN_AFTER:
                break
            del self.told[oldest]
        if key in self.told or len(self.told) >= TOLD_AT_MOST:
            return False
        self.told[key] = now
        return True

    def recent(self) -> list[Sighting]:
        """The accounts seen, the most recently seen first."""
        return sorted(self.seen.values(), key=lambda s: -s.last_at)


def account_label(name: str | None, account_id: str | None) -> str:
    """How the account reads in the status: its name (what `users` usually lists), and its
    id beside it when both are known (Plex's owner is id 1)."""
    if name and account_id and name != account_id:
        return f"{name} (id {account_id})"
    return name or account_id or NO_ACCOUNT


NO_ACCOUNT = "(no account in the webhook)"

# Where a webhook without any account comes from: a setting of the sender, not a profile.
_NO_ACCOUNT_FIX = {
    "emby": "in Emby's webhook settings, set *Limit user events to* your users: without it "
    "Emby sends no user (docs/webhooks.md, Emby step 5)",
    "jellyfin": "the webhook template sends no NotificationUsername or UserId: paste the "
    "template from docs/webhooks.md, and send only playback and user-data events",
    "tautulli": "the JSON data sends no user_id or username: paste the body from docs/webhooks.md",
    "generic": "send user (or user_id) in the JSON (docs/webhooks.md), or make a profile default",
}


def unmapped_fix(source: str, account: str) -> str:
    """What to do about webhooks no profile takes from `account` (as `account_label` reads)."""
    if account == NO_ACCOUNT:
        return _NO_ACCOUNT_FIX.get(source, "the webhook names no account: check its settings")
    return f"add it under profiles.NAME.users.{source} (or ignore it: a friend's account)"
