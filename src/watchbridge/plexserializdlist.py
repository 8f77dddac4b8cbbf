"""The Plex <-> Serializd link's watchlist run: read both sides, plan, write, record.

For households without Trakt. Planning is `watchlist.plan_watchlist`, the same decision as the
plex-trakt and trakt-serializd links, with Serializd as the peer and Plex as the other side;
Plex's side is read and written as the plex-trakt link does it (`plexlink`), Serializd's as
the trakt-serializd link does it (`serializdlist`):

- Shows only, at show level: a show on Serializd's watchlist with any of its seasons is the
  show on Plex's watchlist. Movies on Plex's watchlist stay there (Serializd has none): never
  copied, never removed, named with the run's titles not synced (a scheduled run logs them
  once, as they change). A Plex show without a TMDB id (Serializd knows shows by it) too.
- A show added on Serializd is added with its regular seasons not marked watched there, and
  not at all when every one is (`serializdlist.serializd_additions`); Serializd takes a season
  off its watchlist once it is marked watched, so a show watched to the end leaves it, and
  then Plex's watchlist, as Trakt's own removal of a watched title does on the other links.
- Both sides are read before anything is written: a failed read raises (a `ServiceError`)
  and nothing is written for that person. Removals go through the mass-removal guard.

State: the baseline in the mirror table (`link:{link}` / `watchlist`, per profile), as the
other links; discover matches and season maps in the id cache.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from watchbridge.config import Config, Link
from watchbridge.metrics import Metrics
from watchbridge.plexlink import (
    Alerts,
    LimitState,
    ListsRun,
    add_to_plex_watchlist,
    baseline_before_writes,
    plextv_client,
    read_plex_watchlist,
    remove_from_plex_watchlist,
    save_watchlist_baseline,
    watchlist_baseline,
    watchlist_holding,
    watchlists_per_profile,
)
from watchbridge.serializdlist import (
    add_to_serializd_watchlist,
    remove_from_serializd_watchlist,
    serializd_additions,
    serializd_client,
    serializd_summary,
    serializd_watch_items,
    tell_unreadable_marks,
)
from watchbridge.services.plextv import PlexTvClient
from watchbridge.services.serializd import SerializdClient
from watchbridge.store import Store
from watchbridge.watchlist import WatchItem, WatchlistPlan, plan_watchlist

PEER, OTHER = "serializd", "plex"
NO_MOVIES = "a movie: Serializd has none, so it stays on Plex's watchlist only"
NO_TMDB = "no TMDB id on Plex, which Serializd knows shows by: it stays on Plex's watchlist only"


@dataclass(frozen=True)
class PlexSerializdWatchlistResult:
    """What one person's Plex <-> Serializd watchlist run did (or, dry, would do)."""

    profile: str
    plan: WatchlistPlan
    added_to_serializd: int = 0
    added_to_plex: int = 0
    removed_from_serializd: int = 0
    removed_from_plex: int = 0
    unresolved: tuple[str, ...] = ()  # titles a side could not identify or take
    kept_off: tuple[str, ...] = ()  # Plex shows already watched on Serializd: not added there
    limit: LimitState | None = None  # no list limit on either side
    dry_run: bool = False
    requests: dict[str, int] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """The run's lines for `watchbridge sync` (unresolved lines come after)."""
        return serializd_summary(self.profile, self.plan, self.kept_off, OTHER)


def plex_show_items(items: Iterable[WatchItem]) -> tuple[list[WatchItem], list[str]]:
    """The Plex watchlist's shows Serializd can know (a TMDB id), and why each other title
    stays out of the plan (movies, shows without one). Pure."""
    shows, left_out = [], []
    for item in items:
        if item.kind == "movie":
            left_out.append(f"{item.describe()} ({NO_MOVIES})")
        elif not item.ids.tmdb:
            left_out.append(f"{item.describe()} ({NO_TMDB})")
        else:
            shows.append(item)
    return shows, left_out


async def sync_plex_serializd_watchlist(
    plextv: PlexTvClient,
    serializd: SerializdClient,
    store: Store,
    profile: str,
    *,
    link: str = "plex-serializd",
    clock: Callable[[], float] = time.time,
    dry_run: bool = False,
    confirm_removals: bool = False,
    max_removal_share: float = 0.10,
    only_to: str | None = None,
    alerts: Alerts | None = None,
    hold: str = "",
    unchecked: tuple[str, ...] = (),
) -> PlexSerializdWatchlistResult:
    """One watchlist run for one person; see the module docstring. Two-way unless `only_to`
    ("plex" or "serializd") names the one side to write. `hold`: why every removal waits, and
    the titles only on the `unchecked` sides with them (`watchlist.plan_watchlist`).

    Raises a `ServiceError` (plex.tv or Serializd) when a side cannot be read, before anything
    is written; also when a side stops taking writes (a sign-in). Single titles a side will
    not take are reported in `unresolved`.
    """
    now = clock()
    plex_before, serializd_before = plextv.requests_sent, serializd.http.requests_sent
    plex_listed, unidentified = await read_plex_watchlist(plextv, store, profile, now, alerts)
    listed = await serializd.watchlist(profile)
    plex_items, left_out = plex_show_items(plex_listed)
    serializd_items = serializd_watch_items(listed)
    _, baseline = watchlist_baseline(store, link, profile)
    plan = plan_watchlist(
        serializd_items,
        plex_items,
        baseline,
        max_removal_share=max_removal_share,
        confirm_removals=confirm_removals,
        only_to=only_to,
        peer=PEER,
        other=OTHER,
        holding=watchlist_holding(store, link, profile),
        hold=hold,
        unchecked=unchecked,
    )
    found = await serializd_additions(serializd, store, profile, plan.add_to_peer, clock)
    unresolved = [f"{name} (Plex knows no external id for it)" for name in unidentified]
    unresolved += left_out + found.unresolved
    if dry_run:
        return PlexSerializdWatchlistResult(
            profile,
            plan,
            unresolved=tuple(unresolved),
            kept_off=tuple(found.kept_off),
            dry_run=True,
        )

    new_baseline = baseline_before_writes(plan, baseline)
    off_plex = await remove_from_plex_watchlist(plextv, profile, plan.remove_from_other, baseline)
    new_baseline |= off_plex.baseline
    unresolved += off_plex.unresolved
    off_serializd = await remove_from_serializd_watchlist(
        serializd, profile, plan.remove_from_peer, listed, baseline
    )
    new_baseline |= off_serializd.baseline
    unresolved += off_serializd.unresolved

    on_plex = await add_to_plex_watchlist(plextv, store, profile, plan.add_to_other, now)
    new_baseline |= on_plex.baseline
    unresolved += on_plex.unresolved

    on_serializd = await add_to_serializd_watchlist(serializd, profile, found.additions)
    new_baseline |= on_serializd.baseline
    unresolved += on_serializd.unresolved

    save_watchlist_baseline(store, link, profile, new_baseline, plan.held, now)
    await tell_unreadable_marks(alerts, link, profile, found.unreadable, source="Plex")
    return PlexSerializdWatchlistResult(
        profile,
        plan,
        added_to_serializd=on_serializd.count,
        added_to_plex=on_plex.count,
        removed_from_serializd=off_serializd.count,
        removed_from_plex=off_plex.count,
        unresolved=tuple(unresolved),
        kept_off=tuple(found.kept_off),
        requests={
            "plextv": plextv.requests_sent - plex_before,
            "serializd": serializd.http.requests_sent - serializd_before,
        },
    )


async def run_plex_serializd_lists(
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
    """The watchlist part of one run of a plex-serializd link, for each of `profiles`. A
    person whose run fails is named in `errors` (nothing was written for them if a read
    failed); the others still run."""
    plextv = plextv_client(config, store, metrics=metrics, clock=clock)
    assert plextv is not None  # a plex link has services.plex
    serializd = serializd_client(config, store, clock, metrics)
    only_to = link.services[1] if link.direction == "one-way" else None

    def sync(
        profile: str, hold: str, unchecked: tuple[str, ...]
    ) -> Awaitable[PlexSerializdWatchlistResult]:
        return sync_plex_serializd_watchlist(
            plextv,
            serializd,
            store,
            profile,
            link=name,
            clock=clock,
            dry_run=dry_run,
            confirm_removals=confirm_removals,
            max_removal_share=link.max_removal_share,
            only_to=only_to,
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
        (plextv, serializd),
        confirm_removals=confirm_removals,
        clock=clock,
    )
