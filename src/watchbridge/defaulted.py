"""Media-server accounts no profile lists whose webhooks go to the `default: true` profile,
remembered in the database, and the `unlisted_account` alert when one is likely someone
else's.

A default profile is meant for one person's accounts ("webhooks from unmapped accounts count
as this person's"): the first account it takes in is what it was set up for, and so is one
with that account's name on another server (the same person). A listed person whose account
changes (a Plex Home user given a Plex account of their own, a Jellyfin account made again
under another name, a server reinstalled) falls to it too, and their plays land in the
default person's Trakt, Serializd and AniList history, which nothing in a webhook's answer
shows. So the alert tells, once per account, when a second person's account appears while
the default profile took only one person's until then, or when one looks like a listed
person's new account (unlisted.py's test: that person's account on the server went silent
since it began; never the first person's, whose account was there before it was
remembered, unless the default profile lists that source's accounts). A household whose
default profile already takes several people's accounts (friends, on purpose) is not told
of one more: each is only listed, with the line to add.

The webhook route writes at most one upsert per account per process, then once an hour
while it keeps sending (`Gate`); the hourly housekeeping decides
(`maintenance.check_defaulted_accounts`). Pure here but the gate's memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from watchbridge.account_ids import SOURCE_NAMES
from watchbridge.config import Config, same_account, service_title, targets_for
from watchbridge.unlisted import Unlisted, utc_day

DAY = 86400.0
# An account the default profile takes is written again at most this often while it sends:
# the webhook route of a one-person install is nearly all such webhooks.
WRITE_EVERY = 3600.0
# A row goes after this long without a webhook (`Store.prune`): the first account the
# default profile took is what tells a second one apart, also after a season's pause; and a
# yearly visitor's, told of once, is not told of again (as new) for coming a few weeks late.
KEEP = 400 * DAY
KEPT_IN_MEMORY = 200  # accounts the gate remembers; the one seen least recently goes first


def alert_key(one: Unlisted) -> str:
    """The alert's condition key, apart from the same account's while it went nowhere."""
    return f"default:{one.key}"


def person(one: Unlisted) -> str:
    """Who an account is, as far as a household's names tell: one person has the same name
    on each of their servers (and in Tautulli's reports of Plex)."""
    return same_account(one.name) if one.name else one.key


def second_person(
    one: Unlisted, taken: Sequence[Unlisted], own: frozenset[str] = frozenset()
) -> bool:
    """Whether `one` is a new person's account the default profile takes in after it took one
    other person's accounts only (`taken`: the accounts it takes now, `one` among them).
    Never for an account with one of `own` names (the default person's, `own_names`), for
    webhooks naming no one (a sender's setting), nor twice. Pure."""
    if one.state or not one.entry or person(one) in own:
        return False
    before = {person(other) for other in _taken_beside(one, taken) if _order(other) < _order(one)}
    return len(before) == 1 and person(one) not in before


def set_up_for(config: Config, one: Unlisted, taken: Sequence[Unlisted]) -> bool:
    """Whether `one` is of the person the default profile took first (`taken`: the accounts
    it takes now, `one` among them), while that profile lists none of `one`'s source's
    accounts: the person it is for, whose account was there before it was remembered, so
    another's going quiet since tells nothing. One it lists is its person's: then what it
    takes in is someone else's. Pure."""
    profile = config.profiles.get(one.default_profile)
    listed = tuple(getattr(profile.users, one.source, ())) if profile is not None else ()
    if not one.entry or profile is None or listed:
        return False
    first = min(_taken_beside(one, taken), key=_order, default=None)
    return first is not None and person(first) == person(one)


def first_taken(one: Unlisted, taken: Sequence[Unlisted]) -> Unlisted | None:
    """The account the default profile took first, the one it was set up for."""
    earlier = [other for other in _taken_beside(one, taken) if other.key != one.key]
    return min(earlier, key=_order, default=None)


def _taken_beside(one: Unlisted, taken: Sequence[Unlisted]) -> list[Unlisted]:
    """The accounts of `taken` (`one` among them) its default profile takes, that name
    someone."""
    return [o for o in taken if o.default_profile == one.default_profile and o.entry]


def _order(one: Unlisted) -> tuple[float, str]:
    """In the order the default profile took them in."""
    return one.first_at, one.key


def line(config: Config, one: Unlisted, profile: str | None = None) -> str:
    """The config line that lists the account under `profile` (by default the default
    profile, where its plays go now)."""
    return one.line(config, profile or one.default_profile or None)


def fix(config: Config, one: Unlisted) -> str:
    """What the status says to do: list it where it belongs."""
    to = one.default_profile
    if not one.entry:
        return f"its plays go to the default profile {to}; {line(config, one)}"
    yours = line(config, one, to)
    if one.profile and one.profile != to:
        return (
            f"its plays go to the default profile {to}; if it is {one.profile}'s new account,"
            f" write {line(config, one, one.profile)}; if it is {to}'s, write {yours}"
        )
    return (
        f"its plays go to the default profile {to}; to keep them there, write {yours};"
        f" if it is someone else's, list it under their profile"
    )


def title(one: Unlisted) -> str:
    who = one.name or one.entry
    return f"watchbridge: plays of {who} on {one.server_shown} go to profile {one.default_profile}"


def _services(config: Config, profile: str) -> str:
    found = config.profiles.get(profile)
    names = [service_title(t) for t in targets_for(config, found)] if found else []
    if not names:
        return f"{profile}'s history"
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    return f"{profile}'s {listed} history"


def alert_body(one: Unlisted, config: Config, was: Unlisted | None) -> str:
    """What it means and what to do, as a phone shows the first lines; then what was seen.
    `one.profile`: the listed profile whose account went silent, if that is why; `was`: the
    account the default profile took before, if that is why."""
    source = SOURCE_NAMES.get(one.source, one.source)
    to = one.default_profile
    since = utc_day(one.first_at)
    where = _services(config, to)
    lead = (
        f"Plays of {source} account {one.label} on {one.server_shown} go to {where}: no"
        f" profile lists the account, so the default profile {to} takes it."
    )
    if one.profile:
        why = (
            f" Profile {one.profile}'s account there has sent nothing since {since}, when this"
            f" one began: it may be {one.profile}'s new account. If so, write"
            f" {line(config, one, one.profile)} in the config"
        )
    else:
        before = f" ({was.label} on {was.server_shown})" if was is not None else ""
        why = (
            f" Until {since} it took one account's plays only{before}. If this one is someone"
            f" else's, list it under their profile (profiles.NAME.users.{one.source})"
        )
    fix_it = (
        f" and remove the plays it sent from {where}; if it is {to}'s or meant to go there,"
        f" write {line(config, one, to)}: its plays keep going there, and this alert is"
        " resolved."
    )
    seen = (
        f"Since {since}: {one.webhooks} webhook(s), {one.plays} completed play(s) went to"
        f" profile {to} (counted hourly)."
    )
    return f"{lead}{why}{fix_it}\n\n{seen}"


def left_now(one: Unlisted) -> str:
    """The "Resolved" notice once no default profile takes the account's plays."""
    return (
        f"Plays of {one.label} on {one.server_shown} no longer go to profile {one.default_profile}."
    )


@dataclass
class Gate:
    """What the webhook route wrote of each account the default profile takes, in this
    process: the first webhook of each is written, later ones once per WRITE_EVERY with what
    came meanwhile."""

    # (source, server, account) -> [when last written, webhooks since, completed plays since]
    seen: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def saw(self, key: tuple[str, str, str], played: bool, now: float) -> tuple[int, int] | None:
        """Count one webhook; the webhooks and plays to write now, or None: not yet."""
        kept = self.seen.pop(key, None)
        if kept is None:
            kept = [now, 1, int(played)]
            due = True
        else:
            kept[1] += 1
            kept[2] += int(played)
            due = now - kept[0] >= WRITE_EVERY
        self.seen[key] = kept  # last: the most recently seen
        while len(self.seen) > KEPT_IN_MEMORY:
            del self.seen[next(iter(self.seen))]
        if not due:
            return None
        counted = int(kept[1]), int(kept[2])
        kept[:] = [now, 0, 0]
        return counted

    def failed(self, key: tuple[str, str, str]) -> None:
        """The write did not go through: the next webhook tries again."""
        self.seen.pop(key, None)
