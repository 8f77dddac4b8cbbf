"""The Trakt <-> Serializd link's watchlist run: read both sides, plan, write, record.

Planning is `watchlist.plan_watchlist` with Serializd as the peer; this module joins it to I/O.

- Shows only, at show level: a show on Serializd's watchlist with any of its seasons is the
  show on Trakt's watchlist, and the other way round. Trakt's movies (Serializd has none),
  seasons and episodes stay out of the plan: never copied, never removed.
- Adding a show to Serializd watchlists its regular seasons (specials left out) that are not
  marked watched there: a season cannot be both watched and watchlisted on Serializd, so a
  watchlist write could clear its watched state (`serializd.md` §6.1). A show with every such
  season watched is not added at all and is named in the run's summary (`kept_off`); so is a
  show whose watched seasons Serializd lists in a shape watchbridge cannot read (`unresolved`).
- Removing a show from Serializd takes off the seasons its watchlist row lists.
- Both sides are read before anything is written: a failed read raises (a `ServiceError`)
  and nothing is written for that person. Removals go through the mass-removal guard.
- Adding to Trakt respects the account's watchlist limit (`limits.py`, the same pause and
  alert as the plex-trakt link: the limit is the account's, whichever link fills it).

State: the baseline in the mirror table (`link:{link}` / `watchlist`, per profile), season
maps in the id cache (shared with Serializd delivery), the limit pause under (`trakt`,
profile, `limit_pause:watchlist`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from watchbridge.catalogue import season_map
from watchbridge.config import Config, Link
from watchbridge.http import ServiceError, changed_answer
from watchbridge.metrics import Metrics
from watchbridge.model import Ids
from watchbridge.plexlink import (
    Alerts,
    LimitState,
    ListsRun,
    add_to_trakt_watchlist,
    baseline_before_writes,
    note_watchlist_run,
    relisted_on_peer,
    remove_from_trakt_watchlist,
    save_watchlist_baseline,
    taken_off_trakt,
    trakt_watch_items,
    watchlist_baseline,
    watchlist_holding,
    watchlist_room,
    watchlists_per_profile,
)
from watchbridge.services.serializd import (
    SerializdAuthError,
    SerializdClient,
    SerializdItemError,
    SerializdUnavailable,
    WatchlistShow,
)
from watchbridge.services.trakt import TraktClient
from watchbridge.store import Store
from watchbridge.watchlist import (
    WatchItem,
    WatchlistPlan,
    Written,
    baseline_row,
    kept_rows,
    plan_watchlist,
)

PEER = "serializd"
UNREADABLE_MARKS = (
    "not put on Serializd's watchlist: its seasons marked watched there come in a shape "
    "watchbridge cannot read, and watchlisting a watched season could unmark it; "
    "see Troubleshooting in the README"
)
# The alerts of a show kept off for UNREADABLE_MARKS are keyed LINK:PROFILE:this:SHOW (show:
# its TMDB id); they are their own record of what was told, not a cursor, which
# `reset-state` and another account signing in forget while the alerts stay open.
UNREADABLE_KEY = "serializd-watched-seasons"
ALERT_KIND = "sync_failing"


@dataclass(frozen=True)
class SerializdWatchlistResult:
    """What one person's Trakt <-> Serializd watchlist run did (or, dry, would do)."""

    profile: str
    plan: WatchlistPlan
    added_to_serializd: int = 0
    added_to_trakt: int = 0
    removed_from_serializd: int = 0
    removed_from_trakt: int = 0
    unresolved: tuple[str, ...] = ()  # titles a side could not identify or take
    kept_off: tuple[str, ...] = ()  # Trakt shows already watched on Serializd: not added there
    limit: LimitState | None = None
    dry_run: bool = False
    requests: dict[str, int] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """The run's lines for `watchbridge sync` (limit and unresolved lines come after)."""
        return serializd_summary(self.profile, self.plan, self.kept_off, "trakt")


def serializd_summary(
    profile: str, plan: WatchlistPlan, kept_off: Iterable[str], other: str
) -> list[str]:
    """A Serializd watchlist run's lines for `watchbridge sync`: its counts with `other` (the
    other side's name), then the shows kept off Serializd's watchlist as watched there."""
    counts = (
        f"+{len(plan.add_to_peer)} to serializd, +{len(plan.add_to_other)} to {other}, "
        f"-{len(plan.remove_from_peer)} from serializd, "
        f"-{len(plan.remove_from_other)} from {other}"
    )
    held = f" (held: {plan.held})" if plan.held else ""
    lines = [f"watchlist {profile}: {counts}{held}"]
    lines += [
        f"  already watched on Serializd, not put on its watchlist: {title}" for title in kept_off
    ]
    return lines


# --------------------------------------------------------------------------- pure helpers


def serializd_watch_items(shows: Iterable[WatchlistShow]) -> list[WatchItem]:
    """Serializd's watchlist as show items, known by their TMDB id."""
    return [
        WatchItem(kind="show", ids=Ids(tmdb=str(s.show_id)), title=s.name, listed_at=s.date_added)
        for s in shows
    ]


def trakt_show_items(rows: Sequence[Mapping[str, Any]]) -> tuple[list[WatchItem], list[str]]:
    """Trakt's watchlist shows that Serializd can know (a TMDB id), and the names of those
    without one. Movies, seasons and episodes are not returned: this link leaves them alone."""
    shows = [item for item in trakt_watch_items(rows) if item.kind == "show"]
    return [i for i in shows if i.ids.tmdb], [i.describe() for i in shows if not i.ids.tmdb]


def seasons_to_watchlist(seasons: Mapping[int, int], watched: Iterable[int]) -> list[int]:
    """The season ids to watchlist for a show: its regular seasons (number -> id) not marked
    watched (`watched`: season ids), so the write never touches watched state."""
    done = set(watched)
    return sorted(sid for number, sid in seasons.items() if number > 0 and sid not in done)


def only_to_for(link: Link) -> Literal["serializd", "trakt"] | None:
    """The one side a one-way link writes (its second service), None when two-way."""
    if link.direction != "one-way":
        return None
    return "serializd" if link.services[1] == PEER else "trakt"


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Addition:
    item: WatchItem
    show_id: int
    season_ids: tuple[int, ...]


@dataclass(frozen=True)
class _Additions:
    """What the Trakt shows add to Serializd, and which they cannot, and why."""

    additions: list[_Addition] = field(default_factory=list)
    kept_off: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    unreadable: dict[int, str] = field(default_factory=dict)  # show id -> title: UNREADABLE_MARKS


async def serializd_additions(
    serializd: SerializdClient,
    store: Store,
    profile: str,
    items: Sequence[WatchItem],
    clock: Callable[[], float],
) -> _Additions:
    """What each show of the other side (Trakt's, or Plex's) adds to Serializd. Reads only."""
    if not items:
        return _Additions()
    read = await serializd.watched_read(profile)
    watched = {show: set(ids) for show, ids in read.shows}
    found = _Additions()
    additions, kept_off, unresolved = found.additions, found.kept_off, found.unresolved
    for item in items:
        show_id = int(str(item.ids.tmdb))
        if show_id in read.unreadable:
            # Its watched seasons are unknown, and watchlisting a watched one may unmark it.
            unresolved.append(f"{item.describe()} ({UNREADABLE_MARKS})")
            found.unreadable[show_id] = item.describe()
            continue
        try:
            seasons = await season_map(serializd, store, show_id, clock)
        except SerializdItemError as exc:
            unresolved.append(f"{item.describe()} (Serializd does not know it: {exc.quoted(PEER)})")
            continue
        season_ids = seasons_to_watchlist(seasons, watched.get(show_id, ()))
        if season_ids:
            additions.append(_Addition(item, show_id, tuple(season_ids)))
        elif any(number > 0 for number in seasons):
            kept_off.append(item.describe())
        else:
            unresolved.append(f"{item.describe()} (Serializd lists no seasons for it)")
    return found


async def remove_from_serializd_watchlist(
    serializd: SerializdClient,
    profile: str,
    items: Sequence[WatchItem],
    listed: Iterable[WatchlistShow],
    baseline: Mapping[str, Sequence[str]],
) -> Written:
    """Take each show off Serializd's watchlist with the seasons its row there lists (of
    `listed`, the watchlist as read). A show Serializd refuses keeps its baseline rows, so
    the next run tries again; a sign-in or an outage raises."""
    seasons_of = {show.show_id: show.season_ids for show in listed}
    count = 0
    kept: dict[str, Any] = {}
    failed: list[str] = []
    for item in items:
        show_id = int(str(item.ids.tmdb))
        try:
            await serializd.remove_from_watchlist(profile, show_id, seasons_of.get(show_id, ()))
        except (SerializdAuthError, SerializdUnavailable):
            raise
        except ServiceError as exc:
            failed.append(f"{item.describe()} (not removed from Serializd: {exc.quoted(PEER)})")
            kept |= kept_rows(baseline, item)
            continue
        count += 1
    return Written(count, kept, failed)


async def add_to_serializd_watchlist(
    serializd: SerializdClient, profile: str, additions: Sequence[_Addition]
) -> Written:
    """Put each show on Serializd's watchlist with its seasons (`serializd_additions`). A show
    Serializd refuses is named; a sign-in or an outage raises."""
    count = 0
    rows: dict[str, Any] = {}
    failed: list[str] = []
    for addition in additions:
        try:
            await serializd.add_to_watchlist(profile, addition.show_id, addition.season_ids)
        except (SerializdAuthError, SerializdUnavailable):
            raise
        except ServiceError as exc:
            name = addition.item.describe()
            failed.append(f"{name} (not added to Serializd: {exc.quoted(PEER)})")
            continue
        key, row = baseline_row(addition.item)
        rows[key] = row
        count += 1
    return Written(count, rows, failed)


def unreadable_marks_alert(link: str, profile: str, title: str, source: str = "Trakt") -> str:
    """The alert body for a show kept off Serializd's watchlist for UNREADABLE_MARKS: what
    that means and whether to do anything first, as a phone shows the first lines, then what
    Serializd answered. `source`: the service whose watchlist holds the show."""
    lead = (
        f"{title} stays on {source}'s watchlist of profile {profile} but is not put on"
        " Serializd's: watchbridge cannot read which of its seasons are marked watched there,"
        " and watchlisting a watched season could unmark it. It goes on Serializd's watchlist"
        " by itself once they read again; if this lasts, update watchbridge."
    )
    details = f"Link {link}, profile {profile}: " + changed_answer(
        "Serializd",
        f"the seasons of {title} marked watched on Serializd come in a shape watchbridge "
        "cannot read",
        f"{title} is kept off Serializd's watchlist until they read again.",
    )
    return f"{lead}\n\n{details}"


def unreadable_marks_title(profile: str, title: str) -> str:
    """The title of the alert of show `title` kept off Serializd's watchlist: its cause."""
    return f"watchbridge: {title}'s watched seasons on Serializd cannot be read (profile {profile})"


@dataclass(frozen=True)
class UnreadableAlert:
    """What the alert of a show kept off for UNREADABLE_MARKS is about, by its key."""

    link: str
    profile: str
    show: int

    @property
    def key(self) -> str:
        return f"{self.link}:{self.profile}:{UNREADABLE_KEY}:{self.show}"

    @classmethod
    def of(cls, key: str) -> UnreadableAlert | None:
        """The alert `key` names, None for a key of another alert (names have no colon)."""
        parts = key.split(":")
        if len(parts) != 4 or parts[2] != UNREADABLE_KEY or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[3]))


async def tell_unreadable_marks(
    alerts: Alerts | None,
    link: str,
    profile: str,
    unreadable: Mapping[int, str],
    source: str = "Trakt",
) -> None:
    """Alert of each show (`unreadable`: show id -> title) a run kept off Serializd's
    watchlist because its watched seasons cannot be read (one condition per link, profile and
    show: throttled like every alert), and resolve those alerted before that are not any more
    (they read again and went on the watchlist, or left Trakt's: `source`, the service whose
    watchlist holds them). Without `alerts` nothing is told: the next run with them tells,
    and resolves."""
    if alerts is None:
        return
    for show, title in sorted(unreadable.items()):
        body = unreadable_marks_alert(link, profile, title, source)
        title_line = unreadable_marks_title(profile, title)
        key = UnreadableAlert(link, profile, show).key
        await alerts.notify(ALERT_KIND, title_line, body, key=key)
    for key in sorted(alerts.condition_keys(ALERT_KIND)):
        alerted = UnreadableAlert.of(key)
        if alerted is None or (alerted.link, alerted.profile) != (link, profile):
            continue
        if alerted.show not in unreadable:
            # The title, told again in the "Resolved", names the show.
            over = (
                f"The show is no longer kept off Serializd's watchlist for profile {profile}:"
                f" its watched seasons read again and it went on there, or it left {source}'s"
                " watchlist."
            )
            await alerts.resolve(ALERT_KIND, over, key=key)


async def sync_serializd_watchlist(
    serializd: SerializdClient,
    trakt: TraktClient,
    store: Store,
    profile: str,
    *,
    link: str = "trakt-serializd",
    clock: Callable[[], float] = time.time,
    dry_run: bool = False,
    confirm_removals: bool = False,
    max_removal_share: float = 0.10,
    only_to: Literal["serializd", "trakt"] | None = None,
    alerts: Alerts | None = None,
    hold: str = "",
    unchecked: tuple[str, ...] = (),
) -> SerializdWatchlistResult:
    """One watchlist run for one person; see the module docstring. Two-way unless `only_to`
    names the one side to write (a one-way link). `hold`: why every removal waits, and the
    titles only on the `unchecked` sides with them (`watchlist.plan_watchlist`).

    Raises a `ServiceError` (Serializd or Trakt) when a side cannot be read, before anything is
    written; also when Serializd stops taking writes (sign-in, checkpoint). Single titles a
    side will not take are reported in `unresolved`.
    """
    now = clock()
    serializd_before, trakt_before = serializd.http.requests_sent, trakt.http.requests_sent
    listed = await serializd.watchlist(profile)
    trakt_rows = await trakt.watchlist(profile)
    serializd_items = serializd_watch_items(listed)
    trakt_items, unidentified = trakt_show_items(trakt_rows)
    stored, baseline = watchlist_baseline(store, link, profile)
    plan = plan_watchlist(
        serializd_items,
        trakt_items,
        baseline,
        max_removal_share=max_removal_share,
        confirm_removals=confirm_removals,
        only_to=only_to,
        peer=PEER,
        holding=watchlist_holding(store, link, profile),
        hold=hold,
        unchecked=unchecked,
        relisted=relisted_on_peer(store, link, profile, serializd_items, trakt_items, stored),
        taken_off_trakt=taken_off_trakt(store, profile, trakt_items, now, dry_run=dry_run),
    )
    found = await serializd_additions(serializd, store, profile, plan.add_to_peer, clock)
    additions, kept_off = found.additions, found.kept_off
    unresolved = [f"{name} (Trakt has no TMDB id for it)" for name in unidentified]
    unresolved += found.unresolved

    room = await watchlist_room(trakt, store, profile, plan, len(trakt_rows), now)
    if dry_run:
        limit = await room.settle(store, alerts, now, dry_run=True)
        return SerializdWatchlistResult(
            profile,
            plan,
            unresolved=tuple(unresolved),
            kept_off=tuple(kept_off),
            limit=limit,
            dry_run=True,
        )

    new_baseline = baseline_before_writes(plan, baseline)
    removed_trakt = await remove_from_trakt_watchlist(trakt, store, profile, plan, now)
    removed = await remove_from_serializd_watchlist(
        serializd, profile, plan.remove_from_peer, listed, baseline
    )
    new_baseline |= removed.baseline
    unresolved += removed.unresolved
    removed_serializd = removed.count

    added = await add_to_trakt_watchlist(trakt, plan, room, now)
    new_baseline |= added.baseline
    unresolved += added.unknown
    added_trakt = added.count

    to_serializd = await add_to_serializd_watchlist(serializd, profile, additions)
    new_baseline |= to_serializd.baseline
    unresolved += to_serializd.unresolved
    added_serializd = to_serializd.count

    save_watchlist_baseline(store, link, profile, new_baseline, plan.held, now)
    note_watchlist_run(store, link, profile, now)
    limit = await added.room.settle(store, alerts, now, dry_run=False)
    await tell_unreadable_marks(alerts, link, profile, found.unreadable)
    return SerializdWatchlistResult(
        profile,
        plan,
        added_to_serializd=added_serializd,
        added_to_trakt=added_trakt,
        removed_from_serializd=removed_serializd,
        removed_from_trakt=removed_trakt,
        unresolved=tuple(unresolved),
        kept_off=tuple(kept_off),
        limit=limit,
        requests={
            "serializd": serializd.http.requests_sent - serializd_before,
            "trakt": trakt.http.requests_sent - trakt_before,
        },
    )


# --------------------------------------------------------------------------- in a link run


def serializd_client(
    config: Config, store: Store, clock: Callable[[], float], metrics: Metrics | None = None
) -> SerializdClient:
    """The link run's Serializd client: each profile's configured sign-in, the store's tokens."""
    assert config.services.serializd is not None
    accounts = {
        name: person.accounts.serializd
        for name, person in config.profiles.items()
        if person.accounts.serializd is not None
    }
    return SerializdClient(
        config.services.serializd, store, accounts=accounts, clock=clock, metrics=metrics
    )


async def run_serializd_lists(
    config: Config,
    store: Store,
    name: str,
    link: Link,
    profiles: Iterable[str],
    *,
    dry_run: bool = False,
    confirm_removals: bool = False,
    clock: Callable[[], float] = time.time,
    alerts: Alerts | None = None,
    metrics: Metrics | None = None,
) -> ListsRun:
    """The watchlist part of one run of a trakt-serializd link, for each of `profiles`. A
    person whose run fails is named in `errors` (nothing was written for them if a read
    failed); the others still run."""
    from watchbridge.wiring import seeded_trakt_tokens

    assert config.services.trakt is not None
    trakt = TraktClient(
        config.services.trakt,
        store,
        metrics=metrics,
        clock=clock,
        seeded_refresh_tokens=seeded_trakt_tokens(config),
    )
    serializd = serializd_client(config, store, clock, metrics)

    def sync(
        profile: str, hold: str, unchecked: tuple[str, ...]
    ) -> Awaitable[SerializdWatchlistResult]:
        return sync_serializd_watchlist(
            serializd,
            trakt,
            store,
            profile,
            link=name,
            clock=clock,
            dry_run=dry_run,
            confirm_removals=confirm_removals,
            max_removal_share=link.max_removal_share,
            only_to=only_to_for(link),
            alerts=alerts,
            hold=hold,
            unchecked=unchecked,
        )

    return await watchlists_per_profile(
        store,
        name,
        link,
        profiles,
        sync,
        (trakt, serializd),
        confirm_removals=confirm_removals,
        clock=clock,
    )
