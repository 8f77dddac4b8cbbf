"""Media-server accounts no profile lists that send webhooks, remembered in the database: the
`unlisted_account` alert.

A managed Plex Home user given a Plex account of their own comes back with a new Account.id
and a new name at once, which neither rename nor new-id following can tie to their profile
(account_ids.py); a Jellyfin or Emby account made again under another name alike. From then on
each of their plays is answered and ignored: their plays go nowhere. Friends sharing a server
are unlisted on purpose, so an unlisted account alone is no alarm. What tells the two apart is
the profile: one whose account on that server has sent nothing since the unlisted account
first did (`WAIT` later, while it sent completed plays) has likely moved to it. Then one alert
per account says so and names the config line to add; it is resolved when the account is
listed (or goes to a default profile), or after it sent nothing for `QUIET`. A friend's
account while the household keeps playing is only listed (the status page, `watchbridge
status`, /api/status), each row with the line to add.

The webhook route writes one upsert per ignored webhook (none for a listed account); the
hourly housekeeping decides (`maintenance.check_unlisted_accounts`). Pure here: the caller
passes the time and what the store holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from watchbridge.account_ids import NAMED_UNIQUELY, PLEX_OWNER, SOURCE_NAMES, Learnt
from watchbridge.config import Config, MediaUsers, same_account
from watchbridge.unmapped import NO_ACCOUNT, account_label, unmapped_fix

ALERT_KIND = "unlisted_account"
DAY = 86400.0
# How long a profile's account has to stay silent while the unlisted one plays: a friend's
# first evening on the server is no sign of anyone's new account.
WAIT = 2 * DAY
QUIET = 30 * DAY  # an alert is over once its account has sent nothing this long
KEEP = 42 * DAY  # a row goes after this long without a webhook (`Store.prune`)
# States of a row: the alert was sent for it; that alert is over (its account went quiet).
ALERTED, OVER = "alerted", "over"


@dataclass(frozen=True, slots=True)
class Unlisted:
    """An account no profile lists, as the store remembers it: `account` is its key (its id
    folded, else its name folded; "" for webhooks naming no one), `active` the profiles whose
    accounts on the server sent webhooks since `first_at` (seen by the housekeeping),
    `profile` the profile the alert named; `default_profile` the default profile its webhooks
    go to, for an account only that one takes (defaulted.py, a table of its own)."""

    source: str
    server: str
    account: str
    account_id: str
    name: str
    server_name: str
    first_at: float
    last_at: float
    webhooks: int
    plays: int
    state: str = ""
    profile: str = ""
    active: frozenset[str] = frozenset()
    default_profile: str = ""

    @property
    def label(self) -> str:
        return account_label(self.name or None, self.account_id or None)

    @property
    def key(self) -> str:
        """The alert's condition key: one per account of a server."""
        return f"{self.source}:{self.server}:{self.account}"

    @property
    def entry(self) -> str:
        """What to write under `users`: the id (renames keep it), the owner's with its
        server (Plex calls each server's owner 1), else the name."""
        if self.source == "plex" and self.account_id == PLEX_OWNER and self.server:
            return f"{same_account(self.server)}:{PLEX_OWNER}"
        return self.account_id or self.name

    @property
    def server_shown(self) -> str:
        source = SOURCE_NAMES.get(self.source, self.source)
        server = self.server_name or self.server
        return f"{source} server {server}" if server else source

    def line(self, config: Config, profile: str | None = None) -> str:
        """The config line that lists the account under `profile` (NAME when not known),
        with the entries it lists already."""
        if not self.entry:
            return unmapped_fix(self.source, NO_ACCOUNT)
        listed = ()
        if profile is not None and profile in config.profiles:
            listed = tuple(getattr(config.profiles[profile].users, self.source, ()))
        entries = ", ".join(
            json.dumps(entry, ensure_ascii=False) for entry in (*listed, self.entry)
        )
        return f"profiles.{profile or 'NAME'}.users.{self.source}: [{entries}]"


def account_key(account_id: str | None, name: str | None) -> str:
    """How the store keys an account: its id, else its name (both folded as `users` match)."""
    return same_account(account_id or name or "")


def profiles_on_server(
    config: Config,
    source: str,
    server: str,
    known: Iterable[tuple[str, str, str, str]],
    sent: Iterable[str],
) -> set[str]:
    """The profiles with an account on `source`'s `server` that still list accounts of it:
    those an entry of matched there (`known`: source, server, account id, profile, as
    account_ids.py remembers them) and those whose plays came from it (`sent`)."""
    folded = same_account(server) if server else ""
    found = {profile for src, srv, _, profile in known if (src, srv) == (source, folded)}
    found |= set(sent)
    return {
        name
        for name in found
        if name in config.profiles and bool(getattr(config.profiles[name].users, source, ()))
    }


def silent(unlisted: Unlisted, on_server: set[str], last_from: Mapping[str, float]) -> list[str]:
    """The profiles of `on_server` whose accounts there have sent nothing since the unlisted
    account first did (`last_from`: each profile's last webhook from that server). Pure."""
    active = unlisted.active | {
        profile for profile, at in last_from.items() if at >= unlisted.first_at
    }
    return sorted(on_server - active)


def alert_due(unlisted: Unlisted, quiet_profiles: list[str], now: float) -> bool:
    """Whether the account likely is a listed person's new one: it sent completed plays,
    WAIT has passed since its first webhook, and a profile's account on that server has been
    silent since. Never for webhooks naming no one (a sender's setting), nor twice. Pure."""
    return (
        not unlisted.state
        and bool(unlisted.entry)
        and unlisted.plays > 0
        and now - unlisted.first_at >= WAIT
        and bool(quiet_profiles)
    )


def own_names(config: Config, profile: str, learnt: Iterable[Learnt]) -> frozenset[str]:
    """The names of `profile`'s own accounts, its person's: those it lists under `users` (any
    source) and those remembered for the ids it lists (`learnt`, account_ids.py). Pure."""
    found = config.profiles.get(profile)
    if found is None:
        return frozenset()
    listed = [e for source in fields(MediaUsers) for e in getattr(found.users, source.name)]
    remembered = [one.name for one in learnt if one.profile == profile and one.name]
    return frozenset(same_account(name).rpartition(":")[2] for name in (*listed, *remembered))


def probably_of(config: Config, unlisted: Unlisted, learnt: Iterable[Learnt]) -> str | None:
    """The profile whose person the account probably is: its name is one of that profile's
    own (`own_names`: an account it lists on another server came with it). A Plex user is one
    plex.tv account, named alike, on every server they play on, and their webhooks "travel with
    them": on a friend's shared server they come with their plex.tv id, not the 1 listed for
    their own server. None for a sender naming accounts its own way (Tautulli's friendly
    names, a generic sender's), an account of no name, or a name two profiles have. Pure."""
    if unlisted.source not in NAMED_UNIQUELY or not unlisted.name:
        return None
    name = same_account(unlisted.name)
    remembered = list(learnt)
    found = [p for p in config.profiles if name in own_names(config, p, remembered)]
    return found[0] if len(found) == 1 else None


def own_fix(unlisted: Unlisted, profile: str) -> str:
    """What to add where for an account that is probably `profile`'s own (`probably_of`): its
    name (a rename is followed by the id it came with) or its id."""
    named = json.dumps(unlisted.name, ensure_ascii=False)
    entry = json.dumps(unlisted.entry, ensure_ascii=False)
    either = named if unlisted.entry in ("", unlisted.name) else f"{named} (or {entry})"
    return f"add {either} to profiles.{profile}.users.{unlisted.source}"


def own_hint(unlisted: Unlisted, profile: str) -> str:
    """The status's "what to do" for an account that is probably `profile`'s own."""
    return f"probably {profile}'s own account on another server: {own_fix(unlisted, profile)}"


def own_alert_body(unlisted: Unlisted, profile: str) -> str:
    """The alert of an account that is probably `profile`'s own (`probably_of`): its plays go
    nowhere from the first, lost to that person, so told without waiting; then what was seen."""
    source = SOURCE_NAMES.get(unlisted.source, unlisted.source)
    lead = (
        f"Plays of {source} account {unlisted.label} on {unlisted.server_shown} go nowhere: no"
        f" profile lists it. Profile {profile} has an account of that name, {unlisted.name}, on"
        f" another server: this is probably {profile}'s own account, playing on a server the"
        " config does not list it for (a friend's shared server, say). If so,"
        f" {own_fix(unlisted, profile)} in the config; if it is someone else's, nothing to do."
    )
    return f"{lead}\n\n{_seen(unlisted)}"


def title(unlisted: Unlisted) -> str:
    who = unlisted.name or unlisted.entry
    return f"watchbridge: plays of {who} on {unlisted.server_shown} go nowhere"


def alert_body(unlisted: Unlisted, profile: str, config: Config) -> str:
    """What it means and what to do, as a phone shows the first lines; then what was seen."""
    source = SOURCE_NAMES.get(unlisted.source, unlisted.source)
    since = utc_day(unlisted.first_at)
    lead = (
        f"Plays of {source} account {unlisted.label} on {unlisted.server_shown} go nowhere: no"
        f" profile lists it. Profile {profile}'s account there has sent nothing since"
        f" {since}, when this one began: it may be {profile}'s new account. If so, write"
        f" {unlisted.line(config, profile)} in the config; if it is a friend's, nothing to do."
    )
    return f"{lead}\n\n{_seen(unlisted)}"


def _seen(unlisted: Unlisted) -> str:
    return (
        f"Since {utc_day(unlisted.first_at)}: {unlisted.webhooks} webhook(s), {unlisted.plays}"
        " completed play(s), answered and ignored. Plays before the change reach no service by"
        " themselves: a link's sync copies those its media server shows once the account is"
        " listed."
    )


def listed_now(unlisted: Unlisted, profile: str) -> str:
    """The "Resolved" notice once a profile takes the account's webhooks."""
    return f"Plays of {unlisted.label} on {unlisted.server_shown} go to profile {profile} now."


def listed_for_other_now(unlisted: Unlisted, profile: str | None, sender: str) -> str:
    """The "Resolved" notice once a profile lists an account one sender reported for the
    other sender of the server's plays (`sender`: "plex" or "tautulli"): its plays go by that
    one's webhook (`profile`: the one it goes to, when known)."""
    to = f" to profile {profile}" if profile else ""
    by = "Plex's own webhook" if sender == "plex" else "Tautulli's webhook"
    return f"Plays of {unlisted.label} on {unlisted.server_shown} go{to} now, by {by}."


def quiet_now(unlisted: Unlisted) -> str:
    """The "Resolved" notice once the account has sent nothing for QUIET."""
    return (
        f"{unlisted.label} on {unlisted.server_shown} has sent nothing for"
        f" {QUIET / DAY:.0f} days (last on {utc_day(unlisted.last_at)})."
    )


def utc_day(at: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def plex_server_shown(server: str) -> str:
    """A Plex server as the user knows it (`server`: its name, else its machine id), or
    "your Plex server" when neither is known."""
    return f"Plex server {server}" if server else "your Plex server"


def server_name(source: str, document: Mapping[str, object] | None) -> str:
    """The server's own name in a webhook's JSON, where its sender gives one (Plex's
    Server.title, Jellyfin's ServerName, Emby's Server.Name, Tautulli's {server_name} where
    its template names it), for the user to know it by."""
    if not document:
        return ""
    if source == "plex":
        named = document.get("Server")
        found = named.get("title") if isinstance(named, dict) else None
    elif source == "jellyfin":
        found = document.get("ServerName")
    elif source == "emby":
        named = document.get("Server")
        found = named.get("Name") if isinstance(named, dict) else None
    elif source == "tautulli":
        found = document.get("server_name")
        if isinstance(found, str) and found.startswith("{") and found.endswith("}"):
            return ""  # left unfilled: a Tautulli without the parameter
    else:
        return ""
    return found[:200] if isinstance(found, str) else ""
