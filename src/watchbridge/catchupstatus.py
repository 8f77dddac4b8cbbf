"""What the catch-up (catchup.py) tells of each server it reads, where the household looks: the
status page, `/api/status` and `watchbridge status` (a process of its own, which has only the
database). The plays it caught up in the last week are its events (`store.CAUGHT_UP`); why its
last read failed, and the accounts a profile lists that the server does not have, it keeps in
cursors of no profile's (`Told`), written only when they change (a read like the last writes
nothing) and cleared by a read that works; since when an account no profile lists any more
is unread (`Left`), under its profile, until it is read again or forgotten. The words are
queuewords.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from watchbridge import queuewords as words
from watchbridge.config import Config
from watchbridge.downtime import catches_up
from watchbridge.errors import StoreError
from watchbridge.redaction import clipped
from watchbridge.services.jellyfin import NAMES, Server
from watchbridge.store import CATCH_UP_CURSORS, Store
from watchbridge.zone import local_time

log = logging.getLogger(__name__)

# (server, "", FAILED): why the last read failed, until one works (`Failure` as JSON).
FAILED = "catch_up_failed"
# (server, "", UNFOUND): the entries profiles list that name no account of it (`Unfound`).
UNFOUND = "catch_up_unfound"
# (server, "", UNCHECKED): the plays a read found but did not copy, its webhooks' events of
# their time pruned (`Unchecked`): said for a WEEK.
UNCHECKED = "catch_up_unchecked"
WEEK = 7 * 86400.0
# (server, profile, LEFT + ":<user id>"): since when no round reads an account whose catch-up
# state the database keeps (`Left`): the profile no longer lists it (taken out of `users`, the
# profile taken out of the config or left without a target). Under the account's profile, so
# that `watchbridge rename-profile` moves it with the state.
LEFT = f"{CATCH_UP_CURSORS}_left"
# How long such a state is kept, from the first round that found it unread: a config typo
# fixed within a restart or two, or the next day, loses nothing (the plays it missed
# meanwhile are caught up, as after watchbridge was off); an account taken out on purpose
# (a guest's, a child's moved to another profile) and put back later starts over with a
# first read, copying none of its plays of the gap. A day: long enough to notice an
# account's plays missing on Trakt the same evening, short enough that a removal undone
# the next week never floods a profile's history.
KEPT_UNREAD = 86400.0
SERVERS: tuple[Server, ...] = ("jellyfin", "emby")
Failed = Literal["refused", "unreachable", "failed"]
# A failure's own words (an error message, already without the key) are cut to this, at a
# word (`clipped`: never a secret's first half).
CAUSE_KEPT = 200


def server_name(server: str) -> str:
    """`Jellyfin` for "jellyfin", `Emby` for "emby"."""
    return next((name for kind, name in NAMES.items() if kind == server), server)


@dataclass(frozen=True)
class Failure:
    """How the catch-up's reads of a server fail (`kind`), since when, and the failure's own
    words (`cause`)."""

    kind: Failed
    since: float
    server_id: str = ""
    cause: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"kind": self.kind, "since": self.since, "server": self.server_id, "cause": self.cause},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, value: str | None) -> Failure | None:
        if not value:
            return None
        try:
            found = json.loads(value)
            kind = found["kind"]
            if kind not in ("refused", "unreachable", "failed"):
                return None
            return cls(kind, float(found["since"]), str(found["server"]), str(found["cause"]))
        except (ValueError, TypeError, KeyError):  # not one this release wrote
            return None


def failure_after(
    before: Failure | None, kind: Failed, cause: str, server_id: str, now: float
) -> Failure:
    """What a read that failed so leaves: failing the same way since `before`'s time. Pure."""
    since = before.since if before is not None and before.kind == kind else now
    return Failure(
        kind, since, server_id or (before.server_id if before else ""), clipped(cause, CAUSE_KEPT)
    )


@dataclass(frozen=True)
class Unfound:
    """The entries each profile lists for a server that name none of its accounts (by
    profile), and the accounts it has (their names)."""

    server_id: str
    accounts: tuple[str, ...]
    listed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "server": self.server_id,
                "accounts": list(self.accounts),
                "listed": {k: list(v) for k, v in self.listed.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, value: str | None) -> Unfound | None:
        if not value:
            return None
        try:
            found = json.loads(value)
            listed = {str(k): tuple(str(e) for e in v) for k, v in found["listed"].items()}
            accounts = tuple(str(a) for a in found["accounts"])
            return cls(str(found["server"]), accounts, listed)
        except (ValueError, TypeError, KeyError, AttributeError):  # not one this release wrote
            return None

    def lines(self, server: str) -> list[tuple[str, str, str]]:
        """(profile, entry, what to tell) of each entry. Pure."""
        return [
            (profile, entry, words.account_not_on_server(profile, server, entry, self.accounts))
            for profile, entries in self.listed.items()
            for entry in entries
        ]


@dataclass(frozen=True)
class Unchecked:
    """The plays reads of a server found but did not copy in the week since `since`: how
    many, and the first of them described (`items`)."""

    since: float
    server_id: str
    plays: int
    items: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "since": self.since,
                "server": self.server_id,
                "plays": self.plays,
                "items": self.items,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, value: str | None) -> Unchecked | None:
        if not value:
            return None
        try:
            found = json.loads(value)
            return cls(
                float(found["since"]),
                str(found["server"]),
                int(found["plays"]),
                str(found["items"]),
            )
        except (ValueError, TypeError, KeyError):  # not one this release wrote
            return None


@dataclass(frozen=True)
class Left:
    """Since when no round has read an account whose catch-up state is kept, and its name
    then ('' not known)."""

    since: float
    name: str = ""

    def to_json(self) -> str:
        return json.dumps({"since": self.since, "name": self.name}, sort_keys=True)

    @classmethod
    def from_json(cls, value: str | None) -> Left | None:
        if not value:
            return None
        try:
            found = json.loads(value)
            return cls(float(found["since"]), str(found["name"]))
        except (ValueError, TypeError, KeyError):  # not one this release wrote
            return None

    def account(self, user_id: str) -> str:
        """The account as the log and the status name it: its name, else its id."""
        return self.name or f"id {user_id}"

    def until(self) -> float:
        """When the state is forgotten, should the account stay unread."""
        return self.since + KEPT_UNREAD


def left_of(store: Store, server: str) -> dict[tuple[str, str], Left]:
    """(profile, user id) -> `Left` of each account of `server` no round reads."""
    found = {}
    for profile, name, value in store.cursors_named(server, f"{LEFT}:"):
        if (left := Left.from_json(value)) is not None:
            found[profile, name.removeprefix(f"{LEFT}:")] = left
    return found


# The plays an `Unchecked` names, at most (the log names them all, by read).
ITEMS_KEPT = 1000


def unchecked_after(
    before: Unchecked | None, server_id: str, plays: int, items: str, now: float
) -> Unchecked:
    """What a read that left `plays` (`items`) uncopied leaves: added to `before` when it is
    of the last week. Pure."""
    if before is None or not 0 <= now - before.since < WEEK:
        return Unchecked(now, server_id, plays, items[:ITEMS_KEPT])
    joined = f"{before.items}; {items}"[:ITEMS_KEPT]
    return Unchecked(before.since, server_id or before.server_id, before.plays + plays, joined)


def unfound_of(
    missing: Mapping[str, Sequence[str]], users: Sequence[tuple[str, str]], server_id: str
) -> Unfound | None:
    """`missing` (profile -> its entries naming no account of `users`) as kept, None when
    there is none. Pure."""
    listed = {profile: tuple(entries) for profile, entries in missing.items() if entries}
    if not listed:
        return None
    names = tuple(sorted({name for _, name in users}, key=str.casefold))
    return Unfound(server_id, names, listed)


class Told:
    """The catch-up's cursors of each server, as last read or written: a read that leaves
    them as they are writes nothing. The disk's trouble is told by its own alert: a write
    that fails is tried again at the next read."""

    def __init__(self) -> None:
        self.failures: dict[Server, str | None] = {}
        self.unfound: dict[Server, str | None] = {}
        self.unchecked: dict[Server, str | None] = {}

    async def not_copied(
        self, store: Store, server: Server, server_id: str, plays: int, items: str, now: float
    ) -> None:
        """A read of `server` left `plays` (`items`) uncopied (catchup.py `Decision.unchecked`)."""
        before = Unchecked.from_json(await self._known(store, server, UNCHECKED, self.unchecked))
        after = unchecked_after(before, server_id, plays, items, now)
        await self._write(store, server, UNCHECKED, self.unchecked, after.to_json(), now)

    async def failed(
        self, store: Store, server: Server, kind: Failed, cause: str, server_id: str, now: float
    ) -> None:
        """A read of `server` failed so."""
        before = Failure.from_json(await self._known(store, server, FAILED, self.failures))
        after = failure_after(before, kind, cause.removeprefix(f"{server}: "), server_id, now)
        if before is None or (before.kind, before.cause) != (after.kind, after.cause):
            await self._write(store, server, FAILED, self.failures, after.to_json(), now)

    async def worked(self, store: Store, server: Server, now: float) -> None:
        """A read of `server` worked: a failure kept is cleared."""
        if await self._known(store, server, FAILED, self.failures) is not None:
            await self._write(store, server, FAILED, self.failures, None, now)

    async def accounts(
        self, store: Store, server: Server, found: Unfound | None, asked: bool, now: float
    ) -> None:
        """The entries naming no account of `server` (`found`), kept; logged when the
        server's accounts were asked for (`asked`: at the start, then hourly while so)."""
        if asked and found is not None:
            for profile, entry, line in found.lines(server):
                log.warning(line, extra={"profile": profile, "account": entry})
        value = None if found is None else found.to_json()
        if await self._known(store, server, UNFOUND, self.unfound) != value:
            await self._write(store, server, UNFOUND, self.unfound, value, now)

    @staticmethod
    async def _known(
        store: Store, server: Server, name: str, memory: dict[Server, str | None]
    ) -> str | None:
        if server not in memory:
            with contextlib.suppress(sqlite3.Error, StoreError):
                memory[server] = await asyncio.to_thread(store.get_cursor, server, "", name)
        return memory.get(server)

    @staticmethod
    async def _write(
        store: Store,
        server: Server,
        name: str,
        memory: dict[Server, str | None],
        value: str | None,
        now: float,
    ) -> None:
        try:
            if value is None:
                await asyncio.to_thread(store.forget_cursor, server, "", name)
            else:
                await asyncio.to_thread(store.set_cursor, server, "", name, value, now)
        except (sqlite3.Error, StoreError):
            memory.pop(server, None)  # read again, and written, at the next read
            return
        memory[server] = value


@dataclass(frozen=True)
class CatchUpLine:
    """One thing the status tells of the catch-up: `kind` is `caught_up` (plays copied in the
    last week), `refused`, `unreachable` or `failed` (its last read), `unchecked` (plays not
    copied in the last week, to check by hand), `unfound` (an account `profile` lists that
    the server has not), or `starts_over` (an account `profile` no longer lists, its state
    kept a while); all but `caught_up` and `starts_over` need the user."""

    server: str
    server_id: str
    kind: str
    message: str
    profile: str = ""

    @property
    def needs_you(self) -> bool:
        return self.kind not in ("caught_up", "starts_over")

    def as_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "server_id": self.server_id,
            "kind": self.kind,
            "profile": self.profile or None,
            "message": self.message,
            "needs_you": self.needs_you,
        }


def status_lines(config: Config, store: Store, now: float) -> list[CatchUpLine]:
    """What the status says of the catch-up, by server: why its last read failed and the
    accounts listed it has not (while the catch-up reads it: for an entry the config still
    lists), then each account's state kept while no profile lists it, and the plays it
    caught up in the last week (where there were any)."""
    found: list[CatchUpLine] = []
    for server in SERVERS:
        if not catches_up(config, server):
            continue
        name = NAMES[server]
        failure = Failure.from_json(store.get_cursor(server, "", FAILED))
        if failure is not None:
            found.append(_failure_line(server, name, failure))
        unchecked = Unchecked.from_json(store.get_cursor(server, "", UNCHECKED))
        if unchecked is not None and 0 <= now - unchecked.since < WEEK:
            line = words.catch_up_unchecked(
                name,
                unchecked.server_id,
                unchecked.plays,
                local_time(unchecked.since),
                unchecked.items,
            )
            found.append(CatchUpLine(server, unchecked.server_id, "unchecked", line))
        unfound = Unfound.from_json(store.get_cursor(server, "", UNFOUND))
        if unfound is None:
            continue
        for profile, entry, line in unfound.lines(server):
            settings = config.profiles.get(profile)
            if settings is not None and entry in getattr(settings.users, server, ()):
                found.append(CatchUpLine(server, unfound.server_id, "unfound", line, profile))
    for server in SERVERS:  # read by the catch-up or not: the state is the database's
        for (profile, user_id), left in sorted(left_of(store, server).items()):
            # Past its time (the service stopped, the server unreachable): never a time gone by.
            until = local_time(left.until()) if now < left.until() else None
            line = words.catch_up_starts_over_at(
                profile, server, left.account(user_id), local_time(left.since), until
            )
            found.append(CatchUpLine(server, "", "starts_over", line, profile))
    for kind, server_id, plays, last in store.caught_up_since(now - WEEK):
        line = words.caught_up(server_name(kind), server_id, plays, local_time(last))
        found.append(CatchUpLine(kind, server_id, "caught_up", line))
    return found


def _failure_line(server: str, name: str, failure: Failure) -> CatchUpLine:
    since = local_time(failure.since)
    if failure.kind == "refused":
        line = words.catch_up_refused(server, name, failure.server_id, since)
    elif failure.kind == "unreachable":
        line = words.catch_up_unreachable(server, name, failure.server_id, since, failure.cause)
    else:
        line = words.catch_up_failed(server, name, failure.server_id, since, failure.cause)
    return CatchUpLine(server, failure.server_id, failure.kind, line)
