"""The reconcile runner: reads both sides of a link through the adapters, plans, and queues
the plan's writes in the outbox (where retries, dead letters and alerts are the same as for
webhooks). This is where the store and the adapters meet for reconciliation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchbridge.config import Config, Link
from watchbridge.errors import WatchbridgeError
from watchbridge.model import ref_to_dict
from watchbridge.reconcile import Action, Plan, Play, Rated, Side, plan
from watchbridge.services.serializd import SerializdClient
from watchbridge.services.trakt import TraktClient
from watchbridge.sides import ref_for_key, serializd_side, trakt_side
from watchbridge.store import NewOutboxRow, Store

SUPPORTED = frozenset({"trakt", "serializd"})


@dataclass(frozen=True)
class ProfilePlan:
    profile: str
    plan: Plan
    sizes: dict[str, int]  # plays each side holds
    current: dict[str, Side]
    first_run: bool


# --------------------------------------------------------------------------- baseline (store)


def _collection(link: str, what: str) -> str:
    return f"link:{link}:{what}"


def load_baseline(store: Store, link: str, profile: str, services: list[str]) -> dict[str, Side]:
    baseline: dict[str, Side] = {}
    for service in services:
        plays = store.mirror_get(service, profile, _collection(link, "plays"))
        rated = store.mirror_get(service, profile, _collection(link, "ratings"))
        if plays or rated:
            baseline[service] = Side(
                tuple(Play(v["item"], v["at"], record) for record, v in plays.items()),
                {item: Rated(v["value"], v["at"]) for item, v in rated.items()},
            )
    return baseline


def save_baseline(
    store: Store, link: str, profile: str, current: dict[str, Side], now: float
) -> None:
    for service, side in current.items():
        store.mirror_replace(
            service,
            profile,
            _collection(link, "plays"),
            {p.record: {"item": p.item, "at": p.at} for p in side.plays},
            now,
        )
        store.mirror_replace(
            service,
            profile,
            _collection(link, "ratings"),
            {k: {"value": r.value, "at": r.at} for k, r in side.ratings.items()},
            now,
        )


def load_tombstones(store: Store, link: str, profile: str) -> frozenset[tuple[str, str]]:
    stones = store.mirror_get("watchbridge", profile, _collection(link, "tombstones"))
    return frozenset((v["service"], v["record"]) for v in stones.values())


def save_tombstones(
    store: Store, link: str, profile: str, stones: frozenset[tuple[str, str]], now: float
) -> None:
    store.mirror_put(
        "watchbridge",
        profile,
        _collection(link, "tombstones"),
        {f"{s}:{r}": {"service": s, "record": r} for s, r in stones},
        now,
    )


# --------------------------------------------------------------------------- plan -> outbox


_OUTBOX_ACTION = {
    "add_play": "play",
    "remove_play": "remove_play",
    "set_rating": "rating",
    "remove_rating": "remove_rating",
}


def outbox_rows(
    link: str, profile: str, actions: tuple[Action, ...]
) -> tuple[list[NewOutboxRow], int]:
    """The outbox rows for a plan's actions, and how many actions cannot be written yet
    (ratings of whole shows and seasons)."""
    rows, skipped = [], 0
    for action in actions:
        item = ref_for_key(action.item)
        if item is None:
            skipped += 1
            continue
        payload: dict[str, Any] = {"item": ref_to_dict(item), "at": action.at, "link": link}
        if action.value is not None:
            payload["rating"] = action.value
        if action.record:
            payload["record"] = action.record
        minute = int(action.at // 60)
        rows.append(
            NewOutboxRow(
                target=action.target,
                profile=profile,
                action=_OUTBOX_ACTION[action.kind],
                payload=payload,
                # The same ordering key as webhook rows, so a sync never overtakes a live play.
                ordering_key=f"{profile}:{action.target}:{item.key()}",
                idempotency_key=f"{profile}:{action.target}:sync:{action.kind}:{action.item}:"
                f"{minute}:{action.value or ''}:{action.record}",
            )
        )
    return rows, skipped


@dataclass(frozen=True)
class Applied:
    queued: int
    skipped: int
    held: str


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
) -> tuple[list[ProfilePlan], int]:
    """Read both sides for every profile of link `name` and plan, writing nothing.

    Returns the plans and how many API requests reading took."""
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
            baseline = load_baseline(store, name, profile, list(link.services))
            tombstones = load_tombstones(store, name, profile)
            plans.append(
                ProfilePlan(
                    profile,
                    plan(link, current, baseline, tombstones),
                    {side: len(state.plays) for side, state in current.items()},
                    current,
                    first_run=not baseline,
                )
            )
        return plans, trakt.http.requests_sent + serializd.http.requests_sent
    finally:
        await trakt.aclose()
        await serializd.aclose()


def apply_plan(
    store: Store,
    link: Link,
    name: str,
    result: ProfilePlan,
    confirm_removals: bool,
    now: float,
) -> Applied:
    """Queue a plan's writes and remember this run's state as the next run's baseline."""
    held = "" if confirm_removals else result.plan.held
    actions = result.plan.actions if confirm_removals else result.plan.writes()
    rows, skipped = outbox_rows(name, result.profile, actions)
    queued = store.enqueue(rows, now)
    if not held:
        # With removals held, keep the old baseline so they are found again next time.
        save_baseline(store, name, result.profile, result.current, now)
    save_tombstones(store, name, result.profile, result.plan.tombstones, now)
    return Applied(queued, skipped, held)
