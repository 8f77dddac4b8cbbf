"""The reconcile runner: reads both sides of a link through the adapters and plans.

This is where the store and the adapters meet for reconciliation. This release plans and
shows (`watchbridge sync --dry-run`); applying plans through the outbox comes next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from watchbridge.config import Config, Link
from watchbridge.errors import WatchbridgeError
from watchbridge.reconcile import Plan, Side, plan
from watchbridge.services.serializd import SerializdClient
from watchbridge.services.trakt import TraktClient
from watchbridge.sides import serializd_side, trakt_side
from watchbridge.store import Store

SUPPORTED = frozenset({"trakt", "serializd"})


@dataclass(frozen=True)
class ProfilePlan:
    profile: str
    plan: Plan
    sizes: dict[str, int]  # plays each side holds


def link_profiles(config: Config, link: Link) -> list[str]:
    """The profiles a link applies to: those named, else every one with both accounts."""
    names = link.profiles or list(config.profiles)
    return [
        name
        for name in names
        if all(getattr(config.profiles[name].accounts, s) is not None for s in link.services)
    ]


async def plan_link(
    config: Config, store: Store, name: str, clock: Callable[[], float] = time.time
) -> list[ProfilePlan]:
    """Read both sides for every profile of link `name` and plan, writing nothing."""
    if name not in config.links:
        known = ", ".join(config.links) or "none configured"
        raise WatchbridgeError(f"no link {name!r} in {config.source} (links: {known})")
    link = config.links[name]
    if set(link.services) != SUPPORTED:
        raise WatchbridgeError(
            f"links.{name}: only trakt <-> serializd links can be planned in this release"
        )
    assert config.services.trakt is not None and config.services.serializd is not None
    profiles = link_profiles(config, link)
    if not profiles:
        raise WatchbridgeError(f"links.{name}: no profile has both a trakt and a serializd account")
    accounts = {p: account for p in profiles if (account := config.profiles[p].accounts.serializd)}
    trakt = TraktClient(config.services.trakt, store, clock=clock)
    serializd = SerializdClient(config.services.serializd, store, accounts=accounts, clock=clock)
    try:
        plans = []
        for profile in profiles:
            current = {
                "trakt": trakt_side(
                    await trakt.history(profile, "episodes"), await trakt.ratings(profile)
                ),
                "serializd": serializd_side(await serializd.diary(profile)),
            }
            baseline: dict[str, Side] = {}  # first run: nothing known from before
            plans.append(
                ProfilePlan(
                    profile,
                    plan(link, current, baseline),
                    {side: len(state.plays) for side, state in current.items()},
                )
            )
        return plans
    finally:
        await trakt.aclose()
        await serializd.aclose()
