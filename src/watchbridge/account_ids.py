"""Media-server account ids learnt for the names profiles list under `users`.

A profile may list a media-server account by its name ("bob"), which the server's owner can
change. Renamed ("Robert"), the account's webhooks would match no entry and go to the default
profile, onto another person's services without a word (or nowhere, without a default). So
when an entry matches a webhook by the account's name, the account's id is remembered with it
(by source and server: Plex calls each server's owner 1), in SQLite and in memory. A webhook
no entry matches, whose account id was remembered, goes to the profile that listed the name
for as long as it still lists it, and the log and the status tell the user to write the id or
the new name there. An entry that matches always wins over a remembered id.

The other way round, a profile may list an account by its id, which changes when the account
is made again on the server (deleted and added back, the server's users reset): its webhooks
would go, under the new id, to the default profile or nowhere. So when an entry matches a
webhook by the account's id, the account's name is remembered with it, in the same table. A
webhook no entry matches, with a new id but the name remembered for a listed id on the same
server, goes to the profile listing the id, and the user is told to write the new id there.
Only where a server's account names are its own and unique (Plex, Jellyfin, Emby), and never
for a webhook that names no one.

One account may be listed by two profiles, by its name in one and by its id in the other
(`ListedTwice`): its plays go to the profile listing its id, which stays while the account
lives (a name is whoever holds it now), never to both; the user is told which line to remove.

Bookkeeping only: the webhook route decides (`webhooks.route_for`), the caller passes the time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

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
    entry: str  # the `users` entry that matched the account's name or id, as written
    name: str  # the account's name then

    def by_id(self, key: Key) -> bool:
        """Whether the entry names the account by its id (else by its name)."""
        return same_account(self.entry).rpartition(":")[2] == key.account_id


class NameKey(NamedTuple):
    """A media-server account by its name on its server (all folded as `Key`)."""

    source: str
    server: str
    name: str


PLEX_OWNER = "1"  # the Account.id of a Plex server's owner, on each server

# Sources whose account names are unique on a server, the server's own: Tautulli may give a
# friendly name Tautulli's user set, and a generic sender names accounts as it likes.
NAMED_UNIQUELY = frozenset({"plex", "jellyfin", "emby"})


def name_key(key: Key, name: str) -> NameKey | None:
    """How an account's name is remembered for its listed id (None: not for this source, or
    no server named: a name is unique on its server only)."""
    if key.source not in NAMED_UNIQUELY or not name or not key.server:
        return None
    return NameKey(key.source, key.server, same_account(name))


@dataclass(frozen=True)
class Renamed:
    """A webhook routed by its account's remembered id: no entry lists its name now."""

    key: Key
    name: str  # the account's name now ("" when the webhook names none)
    learnt: Learnt
    # Another account on the server the entry has matched by name since: the listed name is
    # its name now, so two accounts reach the profile, and only the user knows whose it is.
    name_taken_by: Key | None = None

    @property
    def message(self) -> str:
        source, account_id = self.key.source, self.key.account_id
        shown = SOURCE_NAMES.get(source, source)
        now = f"'{self.name}'" if self.name else "(no name in the webhook)"
        listed = f"profiles.{self.learnt.profile}.users.{source}"
        told = (
            f"{shown} account {now} (id {account_id}) was '{self.learnt.name}', listed in {listed}"
        )
        other = self.name_taken_by
        if other is None:
            return f"{told}: write its id or its new name there"
        return (
            f"{told}; '{self.learnt.name}' is now the name of another {shown} account (id "
            f"{other.account_id}), whose webhooks go to {self.learnt.profile} too: list by id "
            f"the one that is {self.learnt.profile}'s there (and the other under its own "
            "profile, if any)"
        )


@dataclass(frozen=True)
class NewId:
    """A webhook routed by its account's name, remembered for the id a profile lists: no
    entry lists its id now."""

    key: Key  # the account as the webhook names it, with its new id
    name: str  # the account's name (the one remembered, as the webhook gives it)
    was: Key  # the account as it was remembered, with the id the profile lists
    learnt: Learnt

    @property
    def message(self) -> str:
        source, account_id = self.key.source, self.key.account_id
        shown = SOURCE_NAMES.get(source, source)
        return (
            f"{shown} account '{self.name}' now has id {account_id}; "
            f"profiles.{self.learnt.profile}.users.{source} lists {self.learnt.entry}, its id "
            f"before: replace it with {account_id}"
        )


@dataclass(frozen=True)
class ListedTwice:
    """A media-server account two profiles list, one by its name, the other by its id (or
    any two entries naming it two ways): `profile` takes its plays, by the `entry` naming its
    id; `other_profile` lists it too, as `other_entry` (the line to remove)."""

    source: str
    server: str  # folded, as `Key`
    account_id: str  # folded, as `Key`
    name: str  # the account's name, as the webhook gave it
    profile: str
    entry: str
    other_profile: str
    other_entry: str

    @property
    def key(self) -> str:
        """The alert's condition key: the account, with what it takes to look again
        (`listed_twice_account`)."""
        return TWICE_KEY + json.dumps([self.source, self.server, self.account_id, self.name])

    @property
    def shown(self) -> str:
        return f"{SOURCE_NAMES.get(self.source, self.source)} account {self.name}"

    @property
    def remove(self) -> str:
        return f'remove "{self.other_entry}" from profiles.{self.other_profile}.users.{self.source}'

    @property
    def title(self) -> str:
        return f"watchbridge: {self.shown} is listed by two profiles"

    @property
    def message(self) -> str:
        """What it means and what to do, in one line (log, status, alert, check-config)."""
        users, profile, other = f"users.{self.source}", self.profile, self.other_profile
        listed = (
            f'as "{self.other_entry}" in profiles.{other}.{users} and as "{self.entry}" in'
            f" profiles.{profile}.{users}"
        )
        instead = (
            f'(or, if they are {other}\'s plays, "{self.entry}" from profiles.{profile}.{users})'
        )
        return (
            f"{self.shown} (id {self.account_id}) is listed by two profiles: {listed}. Its plays"
            f" go to profile {profile} only, the one listing its id (a rename keeps an id, not a"
            f" name): {self.remove} {instead}."
        )

    @property
    def alert_body(self) -> str:
        return (
            f"{self.message}\n\nEach account's plays go to one profile: watchbridge sends none"
            f' of this account\'s to {self.other_profile} while both list it. "Resolved" follows'
            " once the service runs with one of the two lines removed."
        )


TWICE_KEY = "listed-twice:"


def listed_twice_account(key: str) -> tuple[str, str, str, str] | None:
    """The account (source, server, account id, name) a `ListedTwice.key` names; None for a
    key of another alert."""
    if not key.startswith(TWICE_KEY):
        return None
    try:
        found = json.loads(key.removeprefix(TWICE_KEY))
    except ValueError:
        return None
    if not isinstance(found, list) or len(found) != 4 or not all(isinstance(f, str) for f in found):
        return None
    return found[0], found[1], found[2], found[3]


def listed_once_now(account: tuple[str, str, str, str], profile: str | None) -> str:
    """The "Resolved" notice of `account` (`listed_twice_account`) once the config lists it
    once (`profile`: the one its plays go to now, if any)."""
    source, _, account_id, name = account
    shown = f"{SOURCE_NAMES.get(source, source)} account {name} (id {account_id})"
    if profile is None:
        return f"{shown} is listed by no profile now: its plays go nowhere."
    return f"{shown} is listed by one profile now: its plays go to profile {profile}."


def listed_twice(
    config: Config, source: str, server: str, account_id: str | None, name: str | None
) -> ListedTwice | None:
    """Whether two profiles list the account (`account_id`, `name`) on `server`, one by its
    id and one by its name: then its plays go to the one naming its id (an entry naming the
    server first, then the first in the file), whose entry stays true while the account lives.
    Entries naming it one way in two profiles are meant (two servers' accounts of one name, a
    SERVER:ACCOUNT entry before a plain one), and so is Plex's plain 1 beside an owner's name
    (each server's owner is 1). Pure."""
    if not account_id or not name:
        return None
    folded_id, folded_name = same_account(account_id), same_account(name)
    if folded_id == folded_name:
        return None
    here = same_account(server) if server else ""
    listed = config.listings.get(source, {})
    # (any server, profile, entry), in the file's order
    by_id = [
        (not on, profile_name, entry)
        for on, profile_name, entry in listed.get(folded_id, ())
        if on in ("", here) and (on or source != "plex" or folded_id != PLEX_OWNER)
    ]
    by_name = [
        (not on, profile_name, entry)
        for on, profile_name, entry in listed.get(folded_name, ())
        if on in ("", here)
    ]
    if not by_id or not by_name:
        return None
    _, profile, entry = min(by_id, key=lambda found: found[0])  # stable: the file's order
    others = [found for found in by_name if found[1] != profile]
    if not others:
        return None
    _, other_profile, other_entry = min(others, key=lambda found: found[0])
    return ListedTwice(source, here, folded_id, name, profile, entry, other_profile, other_entry)


def listed_twice_known(config: Config, known: Mapping[Key, Learnt]) -> list[ListedTwice]:
    """The accounts remembered with their name (`known`) that two profiles list (see
    `listed_twice`), as they were named when last seen. Pure."""
    found = (
        listed_twice(config, key.source, key.server, key.account_id, learnt.name)
        for key, learnt in known.items()
    )
    return list({twice.key: twice for twice in found if twice is not None}.values())


@dataclass
class TwiceSighting:
    twice: ListedTwice
    webhooks: int = 0
    last_at: float | None = None


@dataclass
class RenameSighting:
    renamed: Renamed
    webhooks: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


@dataclass
class NewIdSighting:
    new_id: NewId
    webhooks: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


_Sighting = TypeVar("_Sighting", RenameSighting, NewIdSighting)
_SightingKey = TypeVar("_SightingKey", tuple[Key, str], tuple[Key, str, str])


def _seen(
    seen: dict[_SightingKey, _Sighting],
    key: _SightingKey,
    first: Callable[[], _Sighting],
) -> tuple[_Sighting, bool]:
    """The sighting of `key` (made by `first` if new), counted and moved last (the most
    recently seen); the oldest go beyond RENAMES_KEPT. True when it is new."""
    sighting = seen.pop(key, None)
    new = sighting is None
    sighting = first() if sighting is None else sighting
    seen[key] = sighting
    sighting.webhooks += 1
    while len(seen) > RENAMES_KEPT:
        del seen[next(iter(seen))]
    return sighting, new


@dataclass
class AccountIds:
    """The ids remembered (loaded at start, `known`; `names`: the names remembered for the ids
    profiles list, by name), and the renamed accounts and new ids seen since."""

    known: dict[Key, Learnt] = field(default_factory=dict)  # the least recently learnt first
    names: dict[NameKey, tuple[Key, Learnt]] = field(default_factory=dict)
    renames: dict[tuple[Key, str, str], RenameSighting] = field(default_factory=dict)
    new_ids: dict[tuple[Key, str], NewIdSighting] = field(default_factory=dict)
    twice: dict[str, TwiceSighting] = field(default_factory=dict)  # by alert key

    def learn(self, key: Key, learnt: Learnt) -> None:
        self._forget(key)
        self.known[key] = learnt
        # A Plex owner's name is kept only to know them in Tautulli's reports: the owner is 1
        # on their server for good, no new id to follow by that name.
        owner = key.source == "plex" and key.account_id == PLEX_OWNER
        by_name = None if owner or not learnt.by_id(key) else name_key(key, learnt.name)
        if by_name is not None:
            self.names[by_name] = (key, learnt)  # the most recently learnt wins a name
        while len(self.known) > KEPT:
            self._forget(next(iter(self.known)))

    def _forget(self, key: Key) -> None:
        learnt = self.known.pop(key, None)
        by_name = name_key(key, learnt.name) if learnt is not None else None
        if by_name is not None and self.names.get(by_name, (None,))[0] == key:
            del self.names[by_name]

    def saw(self, renamed: Renamed, now: float) -> bool:
        """Count one webhook routed by a remembered id; True the first time since the start
        for this account and name (the log tells it then)."""
        taken_by = renamed.name_taken_by.account_id if renamed.name_taken_by else ""
        key = (renamed.key, renamed.name, taken_by)  # a name taken since is told anew
        if taken_by:  # and replaces, in the status, the plain rename it adds to
            self.renames.pop((renamed.key, renamed.name, ""), None)
        sighting, first = _seen(self.renames, key, lambda: RenameSighting(renamed, first_at=now))
        sighting.renamed = renamed  # what the profile listed may have changed
        sighting.last_at = now
        return first

    def saw_new_id(self, new_id: NewId, now: float) -> bool:
        """Count one webhook routed by a remembered name; True the first time since the start
        for this account and name (the log tells it then)."""
        key = (new_id.key, new_id.name)
        sighting, first = _seen(self.new_ids, key, lambda: NewIdSighting(new_id, first_at=now))
        sighting.new_id = new_id  # what the profile listed may have changed
        sighting.last_at = now
        return first

    def saw_twice(self, twice: ListedTwice, now: float) -> bool:
        """Count one webhook of an account two profiles list; True the first time since the
        start (the log and the alert tell it then)."""
        sighting = self.twice.pop(twice.key, None)
        first = sighting is None
        sighting = TwiceSighting(twice) if sighting is None else sighting
        self.twice[twice.key] = sighting  # the most recently seen last
        sighting.webhooks += 1
        sighting.last_at = now
        while len(self.twice) > RENAMES_KEPT:
            del self.twice[next(iter(self.twice))]
        return first

    def listed_twice(self, config: Config) -> list[TwiceSighting]:
        """The accounts two profiles list: those whose webhooks came since the start, the
        most recently seen first, then those remembered (`known`) by the name they had."""
        seen = sorted(self.twice.values(), key=lambda s: -(s.last_at or 0.0))
        told = {sighting.twice.key for sighting in seen}
        known = listed_twice_known(config, self.known)
        return seen + [TwiceSighting(twice) for twice in known if twice.key not in told]

    def recent(self) -> list[RenameSighting]:
        """The renamed accounts seen since the start, the most recently seen first."""
        return sorted(self.renames.values(), key=lambda s: -s.last_at)

    def recent_new_ids(self) -> list[NewIdSighting]:
        """The accounts seen with a new id since the start, the most recently seen first."""
        return sorted(self.new_ids.values(), key=lambda s: -s.last_at)


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
                    f"would go to {default}'s services; an id stays while the account lives (a "
                    "rename keeps it): list it instead"
                )
    return hints
