"""Media-server account ids learnt for the names profiles list under `users`.

A profile may list a media-server account by its name ("bob"), which the server's owner can
change. Renamed ("Robert"), the account's webhooks would match no entry and go to the default
profile, onto another person's services without a word (or nowhere, without a default). So
when an entry matches a webhook by the account's name, the account's id is remembered with it
(by source and server: Plex calls each server's owner 1), in SQLite and in memory. A webhook
no entry matches, whose account id was remembered, goes to the profile that listed the name
for as long as it still lists it, and the log and the status tell the user to write the id or
the new name there. An entry that matches always wins over a remembered id.

Bookkeeping only: the webhook route decides (`webhooks.route_for`), the caller passes the time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from watchbridge.config import Config, same_account

KEPT = 200  # ids remembered; the least recently learnt goes first
RENAMES_KEPT = 20  # renamed accounts the status lists

SOURCE_NAMES = {"plex": "Plex", "jellyfin": "Jellyfin", "emby": "Emby", "tautulli": "Tautulli"}


class Key(NamedTuple):
    """A media-server account: its source, its server (as `config.same_account` folds it; ""
    when the webhook names none) and its id (folded alike)."""

    source: str
    server: str
    account_id: str


class Learnt(NamedTuple):
    profile: str
    entry: str  # the `users` entry that matched the account's name, as written
    name: str  # the account's name then


@dataclass(frozen=True)
class Renamed:
    """A webhook routed by its account's remembered id: no entry lists its name now."""

    key: Key
    name: str  # the account's name now ("" when the webhook names none)
    learnt: Learnt

    @property
    def message(self) -> str:
        source, account_id = self.key.source, self.key.account_id
        shown = SOURCE_NAMES.get(source, source)
        now = f"'{self.name}'" if self.name else "(no name in the webhook)"
        return (
            f"{shown} account {now} (id {account_id}) was '{self.learnt.name}', listed in "
            f"profiles.{self.learnt.profile}.users.{source}: write its id or its new name there"
        )


@dataclass
class RenameSighting:
    renamed: Renamed
    webhooks: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


@dataclass
class AccountIds:
    """The ids remembered (loaded at start, `known`), and the renamed accounts seen since."""

    known: dict[Key, Learnt] = field(default_factory=dict)  # the least recently learnt first
    renames: dict[tuple[Key, str], RenameSighting] = field(default_factory=dict)

    def learn(self, key: Key, learnt: Learnt) -> None:
        self.known.pop(key, None)
        self.known[key] = learnt
        while len(self.known) > KEPT:
            del self.known[next(iter(self.known))]

    def saw(self, renamed: Renamed, now: float) -> bool:
        """Count one webhook routed by a remembered id; True the first time since the start
        for this account and name (the log tells it then)."""
        key = (renamed.key, renamed.name)
        sighting = self.renames.pop(key, None)
        first = sighting is None
        sighting = sighting or RenameSighting(renamed, first_at=now)
        self.renames[key] = sighting  # last in the dict: the most recently seen
        sighting.renamed = renamed  # what the profile listed may have changed
        sighting.webhooks += 1
        sighting.last_at = now
        while len(self.renames) > RENAMES_KEPT:
            del self.renames[next(iter(self.renames))]
        return first

    def recent(self) -> list[RenameSighting]:
        """The renamed accounts seen since the start, the most recently seen first."""
        return sorted(self.renames.values(), key=lambda s: -s.last_at)


# Sources whose accounts have ids a user can list instead of a name: Plex and Tautulli
# number them, Jellyfin and Emby give 32 hex digits.
_ID = re.compile(r"\d+|[0-9a-f]{32}")


def names_beside_default(config: Config) -> list[str]:
    """A hint per `users` list naming media-server accounts by name while a default profile
    takes the webhooks no entry matches: a renamed account is followed by the id remembered
    with its name, but one never seen under it goes to the default profile's services. Pure."""
    default = next((name for name, p in config.profiles.items() if p.default), None)
    if default is None:
        return []
    hints = []
    for name, profile in config.profiles.items():
        if name == default:
            continue
        for source in SOURCE_NAMES:
            entries = getattr(profile.users, source, ())
            names = [e for e in entries if not _ID.fullmatch(same_account(e).rpartition(":")[2])]
            if names:
                hints.append(
                    f"profiles.{name}.users.{source} lists {', '.join(names)} by name beside "
                    f"the default profile {default}: watchbridge follows a renamed account by "
                    "the id it saw with the name, but one renamed before watchbridge saw it "
                    f"would go to {default}'s services; an id never changes: list it instead"
                )
    return hints
