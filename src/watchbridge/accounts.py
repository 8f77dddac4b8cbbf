"""Whose data a profile's side is (an account, a server), and what a change of it means.

Everything kept of a service for a profile belongs to one account: what its reader saw, what
its target wrote, the records of delivered writes, the link baselines. Read against another
account (the profile's Serializd email changed, Trakt signed in as someone else,
`services.plex.url` pointing at a new server), the old account's plays would read as the user's
removals on the new one, and ids kept for the old one would name other things on the new one.
So when a side names another account than the one on record, all of that is forgotten (but
the records of the plays copied into a Plex server: one moved with its history still shows
them, dated the day of the copy, see `readers.plex.CARRIED_OVER`), and every link using the
service starts over for the profile as on its first run: nothing is removed because of the
change, and what only one side holds is copied across (after a review when the link's
`first_run` is `dry-run`).

Each change is told once in an `account_changed` alert (per service and profile, throttled
like every alert): which account was on record, which one answers now, which links start
over and how, and what to change if that account is not the one meant. The start over notes
it in the same transaction (`alert_cursor`); whichever process with the alerts comes next
sends it (`send_account_alerts`: a link's run, a delivery that noticed, the housekeeping).

The first account seen is only remembered (a new profile, or a database of a release that
kept none). Each link's next full read then checks that the side still holds the plays the
link kept for it: one holding none of them was another account's, and starts over the same
way (`unrecognised`). A read holding no play of the service's at all tells nothing of whose
the account is (a server rebuilding its library, an empty answer, a new account alike): the
check waits for a read that holds some (`read_empty`), and meanwhile every removal of the
link's runs waits for confirmation, its watchlist's and collection's too (`read_empty_hold`),
and so do the plays (undated ones: they tell nothing of whose the account is either),
watchlist titles and ratings that side would copy to the other.

A user renamed on the service is the same account when the same sign-in answers to the new
name (Serializd's token after a rename in its settings, or a new login with the same email:
`sign_in_names`): the identity on record follows it, and nothing starts over.

An identity is `|`-separated parts, each with its label (a Plex server's machine id, then the
profile's account on it); an empty part is one not known yet, and matches any.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Protocol

from watchbridge.config import Config, link_profiles, service_title
from watchbridge.reconcile import ABSORBED, EXPECTED, UNDATED, Side
from watchbridge.shown_text import on_one_line
from watchbridge.store import ACCOUNT_CURSOR, ENGINE, OutboxItem, Store

log = logging.getLogger(__name__)

SEP = "|"
REMOVALS = ("remove_play", "remove_rating")
MIN_KEPT = 5  # fewer records kept say too little of whose they were
NOT_SENT = "not sent: a removal meant for an account used before"  # starts such dead letters
ALERT_KIND = "account_changed"
ALERT_OWED = "account_alert:"  # ENGINE cursors (per profile) + service: an alert to send


def alert_cursor(service: str) -> str:
    """The cursor (ENGINE, profile, this): the alert owed for the last change of `service`'s
    account for the profile, as JSON (title, body), until it is sent."""
    return f"{ALERT_OWED}{service}"


def alert_key(service: str, profile: str) -> str:
    """The alert's condition key: one per service and profile (throttled as such)."""
    return f"{service}:{profile}"


def check_owed(link: str) -> str:
    """The cursor (service, profile, this) saying that `link`'s next full read must still
    find the plays it kept for an account first seen (see `unrecognised`); set when the
    account is first seen, cleared by the first full read holding plays (`OWED`, or
    `READ_EMPTY` once a full read held none and the log said so)."""
    return f"account_check:{link}"


OWED = "owed"
READ_EMPTY = "read empty"


def restarted_cursor(link: str) -> str:
    """The cursor (ENGINE, profile, this) saying why `link` starts over for the profile, kept
    until the link's first run after it is applied (its review says so meanwhile)."""
    return f"restarted:{link}"


def carried_cursor(link: str) -> str:
    """The cursor (ENGINE, profile, this): the sides whose changes `link`'s first run carried
    so far, when it went one way at a time (`sync --direction`)."""
    return f"carried:{link}"


@dataclass(frozen=True)
class AccountChange:
    service: str
    profile: str
    before: str
    after: str
    links: tuple[str, ...]  # the links using the service: each starts over for the profile
    cursors: tuple[str, ...]  # cursors of those links kept under any service's name
    # The account is the one on record, but the side holds none of the plays kept for it:
    # they were another account's (kept by a release that did not record whose).
    unrecognised: bool = False
    reviewed: tuple[str, ...] = ()  # of `links`, those whose first run waits for a review
    # `before` and `after` as a user knows them (`account_shown`); empty: as `shown` says.
    before_shown: str = ""
    after_shown: str = ""

    def describe(self) -> str:
        before = self.before_shown or shown(self.before)
        after = self.after_shown or shown(self.after)
        if self.unrecognised:
            return (
                f"profile {self.profile}: {self.service} ({after}) holds none of "
                "the plays watchbridge kept for it: they were another account's"
            )
        return f"profile {self.profile}: {self.service} is now {after} (was {before})"

    def message(self) -> str:
        links = ", ".join(self.links) or "no link"
        return (
            f"{self.describe()}; what watchbridge kept of the old one is forgotten, and "
            f"{links} start(s) over for this profile as on a first run: nothing is removed "
            "because of the change, and what only one side holds is copied to the other"
        )

    def notes(self, dead: int = 0) -> tuple[tuple[str, str, str], ...]:
        """(service, name, value) of the cursors the start over leaves: why each link starts
        over, and the alert owed (`dead`: the removals for the old account not sent)."""
        owed = json.dumps({"title": self.alert_title(), "body": self.alert_body(dead)})
        return (
            *((ENGINE, restarted_cursor(link), self.message()) for link in self.links),
            (ENGINE, alert_cursor(self.service), owed),
        )

    def alert_title(self) -> str:
        service = service_title(self.service)
        return f"watchbridge: profile {self.profile}'s {service} is another account"

    def alert_body(self, dead: int = 0) -> str:
        """What the `account_changed` alert tells: first what changed and what to do (the
        lines a phone shows), then what starts over and how, what was not sent, and more on
        the fix if that account is not the one meant."""
        name, profile = service_title(self.service), self.profile
        before = self.before_shown or shown(self.before)
        after = self.after_shown or shown(self.after)
        if self.unrecognised:
            what = (
                f"Profile {profile}'s {name} ({after}) holds none of the plays watchbridge kept"
                " for it: they were another account's."
            )
        else:
            what = f"Profile {profile}'s {name} is now {after} (was {before})."
        act, aside = self.fix_parts()
        if len(self.reviewed) > 1:
            meant = "If it is the account meant, review the first sync of each link below."
        elif self.reviewed:
            link = self.reviewed[0]
            meant = (
                "If it is the account meant, review its first sync: "
                f"`watchbridge sync --link {link} --dry-run`, then `--yes`."
            )
        else:
            meant = "If it is the account meant, there is nothing to do."
        parts = [f"{what}\n{meant} If not: {act}."]
        parts.append("What watchbridge kept of the old account is forgotten.")
        copied = [link for link in self.links if link not in self.reviewed]
        if copied:
            parts.append(
                f"{_links(copied)} start(s) over for this profile as on a first run "
                "(first_run: apply): what only one side holds is copied to the other now; "
                "nothing is removed because of the change."
            )
        for link in self.reviewed:
            parts.append(
                f"links.{link} starts over for this profile as on a first run, and waits for "
                f"your review: `watchbridge sync --link {link} --dry-run`, then "
                f"`watchbridge sync --link {link} --yes`; nothing is removed because of the "
                "change."
            )
        if not self.links:
            parts.append(f"No link syncs {name} for this profile: deliveries go to it.")
        if dead > 0:
            parts.append(
                f"{dead} removal(s) queued for the old account were not sent (dead letters): "
                "discard them (`watchbridge deadletters discard`)."
            )
        again = ""
        if self.links:
            kept = " (what was copied to this one meanwhile stays there)" if copied else ""
            again = f" The links then start over once more, removing nothing{kept}."
        parts.append(
            f"If that is not the account meant: {act}{aside}.{again} No removal waits for "
            "you: --confirm-removals is not involved."
        )
        return "\n\n".join(parts)

    def fix(self) -> str:
        """What to change if the account answering now is not the profile's."""
        act, aside = self.fix_parts()
        return f"{act}{aside}"

    def fix_parts(self) -> tuple[str, str]:
        """`fix` as what to do, in short, and what more to know (" (...)", or "")."""
        profile = self.profile
        if self.service == "trakt":
            return (
                f"sign in on trakt.tv as {profile}'s own account and run "
                f"`watchbridge auth trakt --profile {profile}`",
                "",
            )
        if self.service == "serializd":
            return (
                f"put {profile}'s own email and password back in "
                f"profiles.{profile}.accounts.serializd and restart",
                f" (or, as its token, a token copied while signed in as {profile}'s own "
                "Serializd account; a username changed in Serializd's settings that watchbridge "
                "first saw at a sign-in with another email, or with a pasted token, counts as "
                "another account too: then nothing is wrong)",
            )
        if self.service == "anilist":
            return (
                f"sign in as {profile}'s own AniList user: `watchbridge auth anilist --profile "
                f"{profile}`",
                f" (or the token in profiles.{profile}.accounts.anilist)",
            )
        if self.service == "plex":
            server_before, server_after = (
                account.split(SEP)[0] for account in (self.before, self.after)
            )
            if server_before and server_after and server_before != server_after:
                return (
                    "point services.plex.url back at the server used before and restart",
                    " (a Plex reinstalled or moved to new hardware is a new server: then "
                    "nothing is wrong)",
                )
            return (
                f"fix whose account {profile} is on the server: profiles.{profile}.users.plex, "
                f"or its sign-in (`watchbridge auth plex --profile {profile}`)",
                "",
            )
        return (
            f"fix profiles.{profile}.accounts.{self.service} (or services.{self.service})",
            "",
        )

    def not_sent(self) -> str:
        return (
            f"{NOT_SENT} ({self.service}, {self.before_shown or shown(self.before)}, of profile "
            f"{self.profile}); "
            "sent, it would remove from the account used now: discard it "
            "(`watchbridge deadletters discard`)"
        )


def identity_of(*parts: str) -> str:
    return SEP.join(parts)


SERVER_PART = "server "  # labels a Plex identity's first part: the server's machine id


def plex_server_of(identity: str) -> str:
    """The Plex server's machine id in a Plex side's identity ("" when it names none)."""
    first = identity.split(SEP, 1)[0]
    return first.removeprefix(SERVER_PART) if first.startswith(SERVER_PART) else ""


def user_named(name: object) -> str:
    """A service's user (Serializd's username, AniList's user id) as an identity."""
    return identity_of(f"user {name}")


ACCOUNT_PART = "account "  # labels a Trakt identity: the account's uuid, else its slug


def account_named(account: str) -> str:
    """A Trakt account (its uuid, else its slug) as an identity."""
    return identity_of(f"{ACCOUNT_PART}{account}")


def trakt_account_of(identity: str) -> str | None:
    """The Trakt account (its uuid, else its slug) an identity names (None: it names none)."""
    first = identity.split(SEP, 1)[0]
    return first.removeprefix(ACCOUNT_PART) if first.startswith(ACCOUNT_PART) else None


def shown(account: str) -> str:
    return ", ".join(part for part in account.split(SEP) if part) or "unknown"


def username_shown(store: Store, service: str, identity: str, now: float) -> str | None:
    """The username of the account `identity` names, where it is only an id that tells a
    user nothing (a Trakt account's uuid, an AniList user's number) and a read of its
    settings left the name in the store's cache (shown as text others wrote); else None."""
    from watchbridge.services import anilist, trakt  # heavy; readers import this module

    name = None
    if service == "trakt" and (account := trakt_account_of(identity)):
        name = trakt.username_of(store, account, now)
    elif service == anilist.SERVICE and (user := anilist_user_of(identity)):
        name = anilist.username_of(store, user, now)
    return on_one_line(name) if name else None


def anilist_user_of(identity: str) -> str | None:
    """The AniList user id an identity (`user_named`) names (None: it names none)."""
    first = identity.split(SEP, 1)[0].removeprefix("user ")
    return first if first.isdigit() else None


def account_shown(store: Store, service: str, identity: str, now: float) -> str:
    """An account as a user knows it: by its username where `username_shown` knows it, else
    as `shown` names it (a Trakt account's uuid: it tells a user nothing, but it is all
    there is)."""
    username = username_shown(store, service, identity, now)
    return f"user {username}" if username else shown(identity)


def same_account(before: str, after: str) -> bool:
    """Whether two identities can name one account: equal in every part both know. Pure."""
    pairs = zip_longest(before.split(SEP), after.split(SEP), fillvalue="")
    return all(not old or not new or old == new for old, new in pairs)


def merged(before: str, after: str) -> str:
    """`after`, with the parts it does not know taken from `before`. Pure."""
    pairs = zip_longest(before.split(SEP), after.split(SEP), fillvalue="")
    return SEP.join(new or old for old, new in pairs)


def links_using(config: Config, service: str, profile: str) -> tuple[str, ...]:
    """The links that sync `service` for `profile`."""
    return tuple(
        sorted(
            name
            for name, link in config.links.items()
            if service in link.services and profile in link_profiles(config, link)
        )
    )


def note_account(
    store: Store, config: Config, service: str, profile: str, seen: str, now: float
) -> AccountChange | None:
    """Remember that `profile`'s `service` is the account `seen`; when the one on record is
    another, start the side over (see the module; once, however many runs saw it) and return
    the change. The first account seen is only remembered, and each link owes it a check."""
    if not seen.strip(SEP):
        return None
    before = store.get_cursor(service, profile, ACCOUNT_CURSOR)
    if before is None:  # whose each link's state was is not known: its next full read tells
        for link in links_using(config, service, profile):
            store.set_cursor(service, profile, check_owed(link), OWED, now)
    if before is None or same_account(before, seen):
        kept = seen if before is None else merged(before, seen)
        if kept != before:
            store.set_cursor(service, profile, ACCOUNT_CURSOR, kept, now)
        return None
    names = sign_in_names(store, service, profile)
    if before in names and seen in names:
        if seen == names[0]:  # not a name read before the rename was learnt
            store.set_cursor(service, profile, ACCOUNT_CURSOR, seen, now)
            log.info(
                f"profile {profile}: {service} is now {shown(seen)} (was {shown(before)}), "
                "renamed on the service: the same sign-in answers to it, so it is the same "
                "account, and its links carry on",
                extra={"profile": profile, "service": service},
            )
        return None
    return _start_over(store, config, service, profile, before, seen, now)


def sign_in_names(store: Store, service: str, profile: str) -> tuple[str, ...]:
    """The identities the profile's sign-in to `service` answers to now (first) and answered
    to before, when it was renamed: Serializd's token keeps working after a rename in its
    settings and says the new username, and so does a new login with the same email (one
    email is one account); the sign-in's `formerly` keeps the old ones, all one account.
    Empty when never renamed; a new sign-in with another email, or a pasted token, forgets
    them."""
    stored = store.get_token(service, profile)
    formerly = stored.get("formerly") if isinstance(stored, dict) else None
    if not isinstance(stored, dict) or not isinstance(formerly, list) or not formerly:
        return ()
    names = [stored.get("username"), *formerly]
    return tuple(user_named(n) for n in names if isinstance(n, str) and n)


def start_over_unrecognised(
    store: Store, config: Config, service: str, profile: str, now: float
) -> AccountChange | None:
    """Start a side over whose account is the one on record (first seen by this release)
    but whose full read holds none of the plays the links kept for it (`unrecognised`)."""
    account = store.get_cursor(service, profile, ACCOUNT_CURSOR)
    if account is None:
        return None
    return _start_over(store, config, service, profile, account, account, now, unrecognised=True)


def unrecognised(kept: Side, read: Side) -> bool:
    """Whether a side's full read holds plays, but none of those the link kept for it (at
    least MIN_KEPT): records the account's service gave (dated plays; not those a reader makes
    from an item, like an undated tick, or carries over from the baseline). Pure.

    However few it holds (one of 400 kept): a service gives its record ids to one account's
    plays only, so another account never shares one, and the same account does only while it
    still holds them. A read answering with plays of its own, but none of the 400, is not an
    outage; whether another account or the same one emptied, what was kept says nothing
    true of it, and starting over removes nothing. A read holding one kept play is
    recognised: the account is the one kept, and the plays it lost are removals, for the
    mass-removal guard to weigh."""
    kept_records, read_records = _own_records(kept), _own_records(read)
    return (
        len(kept_records) >= MIN_KEPT
        and bool(read_records)
        and kept_records.isdisjoint(read_records)
    )


def read_empty(kept: Side, read: Side) -> bool:
    """Whether a side's full read holds no play its service gave while the link kept enough
    (MIN_KEPT) to check whose the account is: it tells nothing (a server rebuilding its
    library, an empty history answered, a new account alike), and starting over on it would
    copy everything again to a side that may still hold it. The check waits for a read that
    holds plays. Undated plays it holds do not count (see `unrecognised`): a tick of an
    episode reads the same in any account; those it would copy wait with the removals
    (`reconcile.plan`'s `unchecked`). Pure."""
    return len(_own_records(kept)) >= MIN_KEPT and not _own_records(read)


def read_empty_hold(services: Iterable[str]) -> str:
    """Why every removal of a link's run waits, whatever its share, while `services` read
    empty and their accounts are not checked yet (`read_empty`): an empty read of a new
    account looks like an outage, and removing the other side's plays, ratings, watchlist or
    collection because of it would take them from the user's own account."""
    return "; ".join(
        f"{service} read empty, and its account is not checked yet: an outage or another "
        f"account; held until {service} reads plays again"
        for service in services
    )


def reading_empty(store: Store, link: str, profile: str, services: Iterable[str]) -> list[str]:
    """The `services` of `link` whose last full read for `profile` held no play while their
    account check waits (`READ_EMPTY`): what `read_empty_hold` names."""
    owed = check_owed(link)
    return [s for s in sorted(services) if store.get_cursor(s, profile, owed) == READ_EMPTY]


def kept_plays(side: Side) -> int:
    """How many plays of its service's a link kept for a side (what the check weighs)."""
    return len(_own_records(side))


def _own_records(side: Side) -> set[str]:
    carried = (EXPECTED, ABSORBED)
    return {p.record for p in side.plays if p.at != UNDATED and not p.record.startswith(carried)}


def _start_over(
    store: Store,
    config: Config,
    service: str,
    profile: str,
    before: str,
    after: str,
    now: float,
    unrecognised: bool = False,
) -> AccountChange:
    from watchbridge.plexlink import list_cursors  # heavy; readers import this module
    from watchbridge.readers import plex

    links = links_using(config, service, profile)
    cursors: Sequence[str] = [
        c for link in links for c in (f"link:{link}", carried_cursor(link), *list_cursors(link))
    ]
    reviewed = tuple(link for link in links if config.links[link].first_run == "dry-run")
    change = AccountChange(
        service,
        profile,
        before,
        after,
        links,
        tuple(cursors),
        unrecognised,
        reviewed,
        before_shown=account_shown(store, service, before, now),
        after_shown=account_shown(store, service, after, now),
    )
    # Plex stamps our copies "now": moved to a new server with its history, they would read
    # as new plays; its reader keeps the records of them to tell (`readers.plex`).
    carried = plex.CARRIED_OVER if service == plex.SERVICE else None
    dead = store.start_over(change, now, carried)
    if dead >= 0:  # else another run saw the change first and started over
        log.warning(change.message(), extra={"profile": profile, "removals_not_sent": dead})
    return change


class AccountNotes:
    """`note_account` for the delivery targets, which see only the delivery settings: a
    target that learns whose account it writes to (a Serializd sign-in's username, an AniList
    token's user) notes it before it writes, so a setup with webhooks only notices too."""

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Callable[[], float],
        alerts: ChangeAlerts | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.alerts = alerts

    async def note(self, service: str, profile: str, seen: str) -> AccountChange | None:
        now = self.clock()
        change = await asyncio.to_thread(
            note_account, self.store, self.config, service, profile, seen, now
        )
        if change is not None and self.alerts is not None:
            await send_account_alerts(self.store, self.alerts)
        return change


class ChangeAlerts(Protocol):
    """What `send_account_alerts` needs of `alerts.Notifier`."""

    def sends(self, kind: str) -> bool: ...

    def would_send(self, kind: str, key: str = "") -> bool: ...

    async def notify(self, kind: str, title: str, body: str, key: str = "") -> str: ...


async def send_account_alerts(store: Store, alerts: ChangeAlerts) -> None:
    """Send the `account_changed` alerts owed (see `alert_cursor`), each forgotten once it
    went out (a failed one the notifier keeps and sends again) or alerts of the kind go
    nowhere. One the throttle holds back (the same side changed again within
    `alerts.throttle`, or keeps changing: the condition stays open, so its alerts go ever
    further apart, as reminders do) waits for a call after that, not counted as suppressed
    at each."""
    owed = await asyncio.to_thread(store.cursors_named, ENGINE, ALERT_OWED)
    for profile, name, value in owed:
        key = alert_key(name.removeprefix(ALERT_OWED), profile)
        if alerts.sends(ALERT_KIND) and not alerts.would_send(ALERT_KIND, key):
            continue
        try:
            alert = json.loads(value)
            title, body = str(alert["title"]), str(alert["body"])
        except (ValueError, TypeError, KeyError):  # not one this release wrote: as if sent
            pass
        else:
            await alerts.notify(ALERT_KIND, title, body, key=key)
        await asyncio.to_thread(store.forget_cursor, ENGINE, profile, name, value)


def _links(links: Sequence[str]) -> str:
    return ", ".join(f"links.{link}" for link in links)


def for_the_old_account(rows: Sequence[OutboxItem]) -> list[OutboxItem]:
    """The rows of a batch meant for the account used before: its removals (of its plays
    and ratings), not to be sent to the new one. Pure."""
    return [row for row in rows if row.action in REMOVALS]
