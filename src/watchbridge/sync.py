"""The reconcile runner: reads both sides of a link through the adapters, plans, and queues
the plan's writes in the outbox (where retries, dead letters and alerts are the same as for
webhooks). This is where the store and the adapters meet for reconciliation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    cursors: dict[str, str] = field(default_factory=dict)  # saved once the plan is applied
    unchanged: bool = False  # the cheap checks said nothing changed: nothing was read


FULL_READ_EVERY = 86400.0  # removals on Serializd leave no trace in a cheap check


def _unchanged_plan(profile: str) -> ProfilePlan:
    return ProfilePlan(profile, Plan((), frozenset()), {}, {}, first_run=False, unchanged=True)


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
    config: Config,
    store: Store,
    name: str,
    clock: Callable[[], float] = time.time,
    full: bool = False,
) -> tuple[list[ProfilePlan], int]:
    """Read both sides for every profile of link `name` and plan, writing nothing.

    Unless `full`, each profile first asks each side cheaply whether anything changed since
    the last applied run (Trakt `last_activities`, Serializd's newest diary page) and stops
    there when nothing did. Returns the plans and how many API requests it took."""
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
            baseline = await asyncio.to_thread(
                load_baseline, store, name, profile, list(link.services)
            )
            cursor = _Cursors(store, name, profile)
            stamp = str((await trakt.last_activities(profile)).get("all", ""))
            if not full and baseline and clock() - cursor.full_at() < FULL_READ_EVERY:
                fresh = await serializd.diary_until(profile, cursor.diary_ids())
                if stamp == cursor.get("trakt_all") and not fresh:
                    plans.append(_unchanged_plan(profile))
                    continue
            diary = await serializd.diary(profile)
            current = {
                "trakt": trakt_side(
                    await trakt.history(profile, "episodes"), await trakt.ratings(profile)
                ),
                "serializd": serializd_side(diary),
            }
            tombstones = load_tombstones(store, name, profile)
            planned = await asyncio.to_thread(plan, link, current, baseline, tombstones)
            plans.append(
                ProfilePlan(
                    profile,
                    planned,
                    {side: len(state.plays) for side, state in current.items()},
                    current,
                    first_run=not baseline,
                    cursors={
                        "trakt_all": stamp,
                        "diary_ids": json.dumps(sorted(e.id for e in diary)),
                        "full_at": str(clock()),
                    },
                )
            )
        return plans, trakt.http.requests_sent + serializd.http.requests_sent
    finally:
        await trakt.aclose()
        await serializd.aclose()


class _Cursors:
    """A link's cursors for one profile, kept in the store's cursors table."""

    def __init__(self, store: Store, link: str, profile: str) -> None:
        self.store, self.link, self.profile = store, link, profile

    def get(self, name: str) -> str | None:
        return self.store.get_cursor("watchbridge", self.profile, f"link:{self.link}:{name}")

    def full_at(self) -> float:
        return float(self.get("full_at") or 0)

    def diary_ids(self) -> set[int]:
        return set(json.loads(self.get("diary_ids") or "[]"))

    def save(self, values: dict[str, str], now: float) -> None:
        for name, value in values.items():
            self.store.set_cursor(
                "watchbridge", self.profile, f"link:{self.link}:{name}", value, now
            )


def apply_plan(
    store: Store,
    link: Link,
    name: str,
    result: ProfilePlan,
    confirm_removals: bool,
    now: float,
) -> Applied:
    """Queue a plan's writes and remember this run's state as the next run's baseline."""
    if result.unchanged:
        return Applied(0, 0, "")
    held = "" if confirm_removals else result.plan.held
    actions = result.plan.actions if confirm_removals else result.plan.writes()
    rows, skipped = outbox_rows(name, result.profile, actions)
    queued = store.enqueue(rows, now)
    if not held:
        # With removals held, keep the old baseline (and cursors) so they are found again.
        save_baseline(store, name, result.profile, result.current, now)
        _Cursors(store, name, result.profile).save(result.cursors, now)
    save_tombstones(store, name, result.profile, result.plan.tombstones, now)
    return Applied(queued, skipped, held)


class NeedsReview(WatchbridgeError):
    """A first run that would write, on a link whose `first_run` is `dry-run`."""


@dataclass(frozen=True)
class RunResult:
    plans: list[ProfilePlan]
    api_calls: int
    queued: int = 0
    held: tuple[str, ...] = ()
    skipped: int = 0

    @property
    def outcome(self) -> str:
        return "held" if self.held else "ok"


def plan_counts(plans: list[ProfilePlan]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in plans:
        for key, value in result.plan.counts().items():
            counts[key] = counts.get(key, 0) + value
    return counts


async def run_link(
    config: Config,
    store: Store,
    name: str,
    *,
    dry_run: bool = False,
    yes: bool = False,
    confirm_removals: bool = False,
    full: bool = False,
    clock: Callable[[], float] = time.time,
) -> RunResult:
    """One run of a link, recorded in the run history: plan, then (unless a dry run) queue."""
    running = [r for r in store.last_runs() if r.link == name and r.outcome == "running"]
    if running and clock() - running[0].started_at < 3600:
        raise WatchbridgeError(f"links.{name}: another sync of this link is still running")
    run_id = await asyncio.to_thread(store.start_run, name, clock())
    try:
        plans, calls = await plan_link(config, store, name, clock, full=full)
        if dry_run:
            store.finish_run(run_id, clock(), "dry-run", plan_counts(plans), calls)
            return RunResult(plans, calls)
        link = config.links[name]
        if (
            link.first_run == "dry-run"
            and not yes
            and any(p.first_run and p.plan.actions for p in plans)
        ):
            raise NeedsReview(
                f"this is the first sync of links.{name}: review the plan "
                f"(`watchbridge sync --link {name} --dry-run`), then run "
                f"`watchbridge sync --link {name} --yes` (or set links.{name}.first_run: apply)"
            )
        queued, skipped, held = 0, 0, []
        for result in plans:
            applied = await asyncio.to_thread(
                apply_plan, store, link, name, result, confirm_removals, clock()
            )
            queued += applied.queued
            skipped += applied.skipped
            if applied.held:
                held.append(f"{result.profile}: {applied.held}")
        outcome = RunResult(plans, calls, queued, tuple(held), skipped)
        store.finish_run(run_id, clock(), outcome.outcome, plan_counts(plans), calls)
        return outcome
    except BaseException as exc:
        outcome_name = "needs-review" if isinstance(exc, NeedsReview) else "failed"
        error = exc.message if isinstance(exc, WatchbridgeError) else type(exc).__name__
        store.finish_run(run_id, clock(), outcome_name, {}, 0, error)
        raise
