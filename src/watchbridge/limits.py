"""Trakt account limits: when to pause a data kind for a person, and when to try it again. Pure.

Free Trakt accounts have item limits per kind (watchlist, collection, ...; `trakt-api.md` §15).
Once a kind is full, every further add answers 420: retrying cannot help, so that kind is paused
for that person with one alert (naming the upgrade URL), the rest of the link keeps running, and
the kind is tried again when there is room: the account's limit changes (an upgrade, or Trakt
changing the limits), or the list as read holds fewer items than the limit (and than when Trakt
last refused). Data over the limit stays readable; only writes fail.

`decide` is the whole policy: stored pause state + what we know now in, a `Decision` out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from watchbridge.ingest.common import flag, integer, obj, text

DEFAULT_UPGRADE_URL = "https://app.trakt.tv/vip"  # 2026 guide: when X-Upgrade-URL is absent
LimitedKind = Literal["watchlist", "collection"]
Action = Literal["run", "pause", "stay_paused", "retry", "resume"]


@dataclass(frozen=True)
class AccountLimits:
    """`/users/settings` reduced to what limits decisions need."""

    vip: bool
    item_limits: Mapping[str, int]  # kind -> items allowed ("watchlist", "collection", "list")

    def limit(self, kind: str) -> int | None:
        return self.item_limits.get(kind)


def parse_settings(settings: Mapping[str, Any]) -> AccountLimits:
    """`/users/settings` leniently: limit keys vary by account and over time."""
    user = obj(settings.get("user"))
    vip = bool(flag(user.get("vip")) or flag(user.get("vip_ep")) or flag(user.get("vip_og")))
    item_limits: dict[str, int] = {}
    for kind, raw in obj(settings.get("limits")).items():
        count = integer(obj(raw).get("item_count"))
        if count is not None:
            item_limits[str(kind)] = count
    return AccountLimits(vip=vip, item_limits=item_limits)


@dataclass(frozen=True)
class LimitHit:
    """What a 420 said; every field may be missing (the 2026 bare 420 has no headers)."""

    limit: int | None = None
    vip: bool | None = None
    upgrade_url: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> LimitHit:
        lowered = {k.lower(): v for k, v in headers.items()}
        return cls(
            limit=integer(lowered.get("x-account-limit")),
            vip=flag(lowered.get("x-vip-user")),
            upgrade_url=text(lowered.get("x-upgrade-url")),
        )


@dataclass(frozen=True)
class Pause:
    """A paused kind for one person, as stored between runs."""

    kind: str
    profile: str
    limit: int | None  # the limit in force when paused: a different one ends the pause
    vip: bool
    upgrade_url: str
    since: float
    count: int | None = None  # items the kind held when Trakt last refused: fewer end the pause

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "profile": self.profile,
            "limit": self.limit,
            "vip": self.vip,
            "upgrade_url": self.upgrade_url,
            "since": self.since,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pause:
        return cls(
            kind=str(data["kind"]),
            profile=str(data["profile"]),
            limit=integer(data.get("limit")),
            vip=bool(data.get("vip")),
            upgrade_url=str(data.get("upgrade_url") or DEFAULT_UPGRADE_URL),
            since=float(data.get("since") or 0.0),
            count=integer(data.get("count")),
        )

    def alert_text(self) -> str:
        """The one alert a pause sends: what waits and what to do, the details after."""
        unit = _UNITS.get(self.kind, "items")
        most = "the most Trakt allows even with VIP" if self.vip else _FREE_MOST
        held = (
            f"it holds {_count(self.limit, unit)}, {most}"
            if self.limit is not None
            else f"it holds {most}"
        )
        todo = _MAKE_ROOM.get(self.kind, f"Remove {unit} from the Trakt {self.kind} to make room")
        if not self.vip:
            todo += f", or upgrade to Trakt VIP at {self.upgrade_url}"
        also = _GO_ON.get(self.kind, "taking items off it goes on")
        return (
            f"{_waits(self.kind, self.profile)}: {held}. {todo}; everything else keeps syncing."
            f"\n\nOnly adding to Trakt's {self.kind} waits: {also}. watchbridge reads Trakt's"
            f" {self.kind} and the account's limit at each sync and adds the {unit} that waited"
            f" as soon as there is room ({unit} taken off it, or a higher limit), as many as fit."
        )


def full_title(kind: str, profile: str) -> str:
    """The title of the alert that Trakt's `kind` of `profile` is full."""
    return f"watchbridge: Trakt {kind} full (profile {profile})"


_UNITS = {"watchlist": "titles", "collection": "items"}
_FREE_MOST = "the most a free Trakt account may hold"
# The collection part adds to Trakt what the Plex libraries have: only taking off what they
# lack makes room that stays.
_MAKE_ROOM = {
    "collection": "Make room by removing from the Trakt collection items that are not in the"
    " Plex libraries (collected elsewhere: one that is in them is added back at the next sync)"
}
_GO_ON = {
    "watchlist": "taking titles off it, and copying it the other way, go on",
    "collection": "taking items off it goes on",
}


def _waits(kind: str, profile: str) -> str:
    """What a pause of `kind` holds back, in the household's words."""
    if kind == "collection":
        return (
            "What is added to the Plex libraries is not added to the Trakt collection of"
            f" profile {profile}"
        )
    return f"Titles added to the {kind} of profile {profile} elsewhere are not added to Trakt's"


def _count(amount: int, unit: str) -> str:
    return f"{amount} {unit.removesuffix('s') if amount == 1 else unit}"


def resumed_text(kind: str, profile: str, paused: Pause, limits: AccountLimits) -> str:
    """The "Resolved" of a pause the account's limit changing ended: why, and what now."""
    unit = _UNITS.get(kind, "items")
    before, now = paused.limit, limits.limit(kind)
    said = []
    if limits.vip != paused.vip:
        said.append("the account is Trakt VIP now" if limits.vip else "the account is not VIP now")
    if now is not None and now != before:
        was = f" instead of {before}" if before is not None else ""
        said.append(f"its limit {_count(now, unit)}{was}")
    why = ", ".join(said) or "the account's limit changed"
    return (
        f"Trakt takes {unit} for the {kind} of profile {profile} again: {why}. Those that"
        " waited are added from this sync on."
    )


def room_text(kind: str, profile: str, added: int) -> str:
    """The "Resolved" of a pause that room on Trakt's list ended, once the adds went through."""
    unit = _UNITS.get(kind, "items")
    what = f"{_count(added, unit)} added" if added else "nothing waits to be added any more"
    return f"There is room again in the Trakt {kind} of profile {profile}: {what}."


@dataclass(frozen=True)
class Decision:
    """What to do with one kind for one person in this run.

    `pause` is the state to store afterwards (None: no pause). `alert` is sent once, when a
    pause starts; `resolved` is the recovery notice when a pause ends. `capacity` is how many
    more items fit (None: no known limit). A `retry` keeps its pause (stored as it was) until
    the adds it allows went through: only then is there a recovery to tell (`room_text`).
    """

    action: Action
    pause: Pause | None
    alert: str | None = None
    resolved: str | None = None
    capacity: int | None = None

    @property
    def may_write(self) -> bool:
        return self.action in ("run", "retry", "resume")


def decide(
    kind: str,
    profile: str,
    *,
    paused: Pause | None,
    limits: AccountLimits | None,
    count: int | None = None,
    wanted: int = 0,
    hit: LimitHit | None = None,
    now: float,
) -> Decision:
    """The policy, given the stored pause (if any), the account's limits (if read this run),
    how many items the kind holds on Trakt and how many we want to add, or a 420 just received.
    """
    resolved = None
    if paused is not None and hit is None:
        if limits is None:
            return Decision("stay_paused", paused)
        if not _limit_changed(paused, limits, kind):
            room = _room(paused, limits.limit(kind), count)
            if room is None:
                return Decision("stay_paused", paused)
            return Decision("retry", paused, capacity=room)
        resolved = resumed_text(kind, profile, paused, limits)
        paused = None
    limit = limits.limit(kind) if limits is not None else None
    if hit is not None:
        vip = hit.vip if hit.vip is not None else bool(limits and limits.vip)
        pause = Pause(
            kind=kind,
            profile=profile,
            limit=hit.limit if hit.limit is not None else limit,
            vip=vip,
            upgrade_url=hit.upgrade_url or DEFAULT_UPGRADE_URL,
            since=now,
            count=count,
        )
        if paused is not None:  # already paused and alerted: keep the first pause and alert,
            # noting the count Trakt refused at: the same room read again is no reason to retry
            kept = paused if count is None else replace(paused, count=count)
            return Decision("stay_paused", kept)
        return Decision("pause", pause, alert=pause.alert_text())
    capacity = max(0, limit - count) if limit is not None and count is not None else None
    if capacity == 0 and wanted > 0 and limits is not None:
        pause = Pause(
            kind=kind,
            profile=profile,
            limit=limit,
            vip=limits.vip,
            upgrade_url=DEFAULT_UPGRADE_URL,
            since=now,
            count=count,
        )
        # Full again at the changed limit: no recovery to tell (it would close the alert
        # that is still true); the new pause holds the limit a later change is seen against.
        return Decision("pause", pause, alert=pause.alert_text())
    return Decision("resume" if resolved else "run", None, resolved=resolved, capacity=capacity)


def _room(paused: Pause, limit: int | None, count: int | None) -> int | None:
    """How many items fit again in a paused kind whose limit stands (None: none): the list
    holds fewer than its limit, and fewer than when Trakt last refused (Trakt may count it
    otherwise than its listing reads)."""
    if limit is None or count is None or count >= limit:
        return None
    if paused.count is not None and count >= paused.count:
        return None
    return limit - count


def _limit_changed(paused: Pause, limits: AccountLimits, kind: str) -> bool:
    # A bare 420 names no limit: the first limit read afterwards is the one that was hit.
    limit_moved = paused.limit is not None and limits.limit(kind) != paused.limit
    return limit_moved or limits.vip != paused.vip
