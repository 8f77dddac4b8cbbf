"""The reconcile runner: reads both sides of a link through the adapters, plans, and queues
the plan's writes in the outbox (where retries, dead letters and alerts are the same as for
webhooks). This is where the store and the adapters meet for reconciliation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sqlite3
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchbridge import anime_data
from watchbridge.accounts import (
    READ_EMPTY,
    carried_cursor,
    check_owed,
    kept_plays,
    note_account,
    plex_server_of,
    read_empty,
    read_empty_hold,
    restarted_cursor,
    send_account_alerts,
    start_over_unrecognised,
    unrecognised,
)
from watchbridge.anime_data import MISSING_KEY
from watchbridge.causes import (
    LISTS_READ,
    Cause,
    carried_causes,
    cause_of,
    lists_alert,
    outage_key,
    server_credential,
    server_key_works,
    sign_in_works,
    told_elsewhere,
    with_causes,
)
from watchbridge.config import MEDIA_SERVERS, Config, Link, link_profiles, service_title
from watchbridge.errors import Waits, WatchbridgeError, naming_profile
from watchbridge.guard import BEFORE_CONFIRMING, for_link
from watchbridge.ids import webhook_ref
from watchbridge.marked import at_once
from watchbridge.metrics import Metrics
from watchbridge.model import ref_from_dict, ref_to_dict
from watchbridge.narrow import Narrower, Narrowing, narrow_sides, no_movie
from watchbridge.offloop import in_thread, to_the_end
from watchbridge.plexlink import (
    Alerts,
    ListsRun,
    list_counts,
    list_kinds,
    lists_ran,
    lists_writing,
    note_lists_synced,
    run_lists,
    synced_lists,
    wants_lists,
)
from watchbridge.progress import Both, RunRecorder, SyncProgress, observed
from watchbridge.queuewords import OUT_OF_CATALOG
from watchbridge.readers import (
    READERS,
    Linked,
    Noting,
    SideRead,
    SideReader,
    Waiting,
    reader_for,
)
from watchbridge.readers.plex import WATCHED_PREFIX, key_for_ref
from watchbridge.reconcile import (
    EXPECTED,
    UNDATED,
    Action,
    AddRow,
    Plan,
    Play,
    Rated,
    SameViewing,
    Side,
    carry_expected,
    expect,
    expect_ratings,
    expected_record,
    plan,
    removals_kept,
    settle_expected,
    settle_expected_ratings,
    with_first_seen,
    without_copies_back,
    without_waiting,
    without_webhook_ratings,
)
from watchbridge.review import plan_token, review_command, reviewed
from watchbridge.sides import own_id_aliases, ref_for_key
from watchbridge.store import (
    ACCOUNT_CURSOR,
    DIED,
    DISCARDED_BEFORE,
    ENGINE,
    READ_AT,
    REPLACE_PART,
    RESTORED_LINK,
    KeptOff,
    MirrorChange,
    NewOutboxRow,
    OutboxItem,
    Store,
    SyncRun,
    ordering_key,
)
from watchbridge.webhookwatch import report_stopped
from watchbridge.zone import local, local_time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfilePlan:
    profile: str
    plan: Plan
    sizes: dict[str, int]  # plays each side holds
    current: dict[str, Side]
    first_run: bool
    # per service, saved once the plan is applied
    cursors: dict[str, dict[str, str]] = field(default_factory=dict)
    frozen: frozenset[str] = frozenset()  # sides whose baseline this run must not move
    unchanged: bool = False  # the cheap checks said nothing changed: nothing was read
    listings: Mapping[str, Sequence[Mapping[str, object]]] | None = None  # see SideRead
    narrowed: bool = False  # planned for some AniList entries only: moves no baseline
    restarted: str = ""  # why the link started over (an account changed), until applied
    # The database was put back from a backup copy since the last applied run (RESTORED_LINK):
    # this run paired the plays new since the baseline as a first run does.
    after_restore: bool = False
    tombstones: Tombstones = field(default_factory=dict)  # as the run found them
    baseline: dict[str, Side] = field(default_factory=dict)  # as planned against
    # An unchanged plan's hold, told again: the writes it keeps back per side.
    held_counts: Mapping[str, int] = field(default_factory=dict)
    # Sides that read no play while their account is not checked yet (`_check_accounts`).
    read_empty: tuple[str, ...] = ()
    # Kinds taken into the link's `kinds` since its last applied run for this profile: their
    # first sync, planned as a first run plans them and reviewed like one (`awaiting_review`).
    new_kinds: frozenset[str] = frozenset()
    # The link's watchlist and collection kinds not past their first sync for this profile
    # (`plexlink.synced_lists`): taken into its kinds since, or its first run's.
    new_lists: frozenset[str] = frozenset()
    # The plan without those of `new_kinds` whose first sync would write (`to_review`): what
    # a run applies while they wait for their review (None: none would write).
    settled: Plan | None = None
    # (side, expected record) of the plays queued for a side whose row is gone (its dead
    # letter discarded): copied again, their rows say so (`outbox_rows`).
    discarded: frozenset[tuple[str, str]] = frozenset()
    # Per side, when this run began reading it (our clock): each write to it says so
    # (`outbox_rows`), as its delivery must not undo a view or a rating made there since.
    read_at: Mapping[str, float] = field(default_factory=dict)
    # (side, item) of the rating removals earlier runs queued still to be tried: the baseline
    # expects them as it does this run's (`reconcile.expect_ratings`).
    removals_waiting: frozenset[tuple[str, str]] = frozenset()


HEARTBEAT_EVERY = 60.0  # well inside store.RUN_LEASE
FULL_READ_EVERY = 86400.0  # removals and back-dated plays leave no trace in delta reads
# While removals are held, a run reads in full at least this often: a cheap check sees no
# removal (a hold the user settled by hand on the other side). So does one while a side's
# account check waits for a read holding plays (`_check_accounts`), and no more often while
# the cheap checks see nothing change.
HOLD_FULL_READ_EVERY = 3 * 3600.0
# Engine cursor: why the last applied run held removals for confirmation ("0": it held none;
# "1": it did, why not kept, as releases before the reason was kept wrote it).
HOLDING = "holding"
HELD_FOR = "held_for"  # the link's settings the hold was found under (`_settings`)
HELD_COUNTS = "held_counts"  # JSON: per side, the writes the hold keeps back
# Engine cursor: the kinds of PLANNED_KINDS the last applied run synced (comma-separated).
SYNCED_KINDS = "kinds"
PLANNED_KINDS = frozenset({"history", "ratings"})  # the kinds `reconcile.plan` plans
KIND_OF_ACTION = {
    "add_play": "history",
    "remove_play": "history",
    "set_rating": "ratings",
    "remove_rating": "ratings",
}
STOPPED = "stopped before its end (a shutdown or Ctrl-C); the next run goes on from there"
# A reviewed plan's apply (`run_link`'s `shown`) finding no profile waits for a review now.
APPLIED_MEANWHILE = (
    "its first sync was applied meanwhile (by `watchbridge sync --yes`, or from this page in "
    "another tab): nothing was written again, and it syncs on its own from now on"
)
# Or finding a profile of the link it could not read again (the plan shown anew names it).
NOT_READ_AGAIN = (
    "not every profile could be read again (named below): nothing was written; read both "
    "sides again once it can be"
)


def _unchanged_plan(
    profile: str,
    held: str = "",
    counts: Mapping[str, int] | None = None,
    new_lists: frozenset[str] = frozenset(),
) -> ProfilePlan:
    """Nothing changed since the last run (`held`: why the removals it held still wait, and
    `counts`: how many per side; `new_lists`: as `ProfilePlan` has it)."""
    plan = Plan((), frozenset(), held)
    return ProfilePlan(
        profile,
        plan,
        {},
        {},
        first_run=False,
        unchanged=True,
        held_counts=counts or {},
        new_lists=new_lists,
    )


# --------------------------------------------------------------------------- baseline (store)


def _collection(link: str, what: str) -> str:
    return f"link:{link}:{what}"


# Each side's baseline is kept under a generation of its own (`_baseline_collection`): an
# applied run writes the next one in parts beside it and switches to it in one transaction
# (`applying`), so that a crash halfway leaves the last whole one in use, never a mix; one
# changing a few rows only writes them in place, in that transaction.
# The generations in use: mirror (ENGINE, profile, `link:NAME:generations`), service -> suffix.
GENERATIONS = "generations"
QUEUE_PART = REPLACE_PART  # outbox rows an applied run queues per transaction
BASELINE_PART = REPLACE_PART  # baseline rows an applied run writes (or takes out) per one


def _baseline_collection(link: str, what: str, generation: str) -> str:
    """A side's baseline plays or ratings (`what`) of one generation ("": the one kept before
    generations, and the first)."""
    return f"{_collection(link, what)}{generation}"


def baseline_generations(store: Store, link: str, profile: str) -> dict[str, str]:
    """Per service, the generation of its baseline in use (none: "")."""
    kept = store.mirror_get(ENGINE, profile, _collection(link, GENERATIONS))
    return {str(service): str(suffix) for service, suffix in kept.items()}


def load_baseline(store: Store, link: str, profile: str, services: list[str]) -> dict[str, Side]:
    baseline: dict[str, Side] = {}
    generations = baseline_generations(store, link, profile)
    for service in services:
        generation = generations.get(service, "")
        plays = store.mirror_get(service, profile, _baseline_collection(link, "plays", generation))
        rated = store.mirror_get(
            service, profile, _baseline_collection(link, "ratings", generation)
        )
        if plays or rated:
            baseline[service] = Side(
                tuple(Play(v["item"], v["at"], record) for record, v in plays.items()),
                {
                    item: Rated(v["value"], v["at"], expected=bool(v.get("expected")))
                    for item, v in rated.items()
                },
                first_seen={r: float(v["seen"]) for r, v in plays.items() if "seen" in v},
            )
    return baseline


# Per service: its plays and its ratings as the store keeps them, (key, JSON text) each.
BaselineRows = dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]


def baseline_rows(current: Mapping[str, Side]) -> BaselineRows:
    """`current` encoded as `save_baseline` stores it (a record held twice: its last play).
    Pure."""

    def encoded(items: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
        return [(key, json.dumps(value)) for key, value in items.items()]

    def play_row(play: Play, side: Side) -> dict[str, Any]:
        seen = side.first_seen.get(play.record)
        row: dict[str, Any] = {"item": play.item, "at": play.at}
        return row if seen is None or play.at != UNDATED else row | {"seen": seen}

    def rating_row(rated: Rated) -> dict[str, Any]:
        row: dict[str, Any] = {"value": rated.value, "at": rated.at}
        return row | {"expected": True} if rated.expected else row

    return {
        service: (
            encoded({p.record: play_row(p, side) for p in side.plays}),
            encoded({k: rating_row(r) for k, r in side.ratings.items()}),
        )
        for service, side in current.items()
    }


def save_baseline(
    store: Store, link: str, profile: str, current: dict[str, Side], now: float
) -> None:
    write_baseline(store, link, profile, baseline_rows(current), now)


def write_baseline(store: Store, link: str, profile: str, rows: BaselineRows, now: float) -> None:
    """Replace the sides' baselines in use (one transaction of the caller's, or one each)."""
    generations = baseline_generations(store, link, profile)
    for service, (plays, ratings) in rows.items():
        generation = generations.get(service, "")
        for what, items in (("plays", plays), ("ratings", ratings)):
            collection = _baseline_collection(link, what, generation)
            store.mirror_replace_encoded(service, profile, collection, items, now)


def load_same_viewing(store: Store, link: str, profile: str) -> list[SameViewing]:
    """The plays first runs of `link` took for one viewing (`reconcile.SameViewing`)."""
    kept = store.mirror_get("watchbridge", profile, _collection(link, "same_viewing"))
    return [
        SameViewing(
            str(v["item"]),
            {
                str(service): Play(str(v["item"]), float(play["at"]), str(play["record"]))
                for service, play in v["plays"].items()
            },
        )
        for v in kept.values()
    ]


def save_same_viewing(
    store: Store, link: str, profile: str, pairs: Sequence[SameViewing], now: float
) -> None:
    store.mirror_replace(
        "watchbridge",
        profile,
        _collection(link, "same_viewing"),
        {
            "|".join(f"{s}:{p.record}" for s, p in sorted(pair.plays.items())): {
                "item": pair.item,
                "plays": {s: {"record": p.record, "at": p.at} for s, p in pair.plays.items()},
            }
            for pair in pairs
        },
        now,
    )


# (service, record) of a removal made -> when a run saw it done (its record absent from its
# side), None until then. See reconcile.plan.
Tombstones = dict[tuple[str, str], float | None]
TOMBSTONE_KEEP = 8 * 86400.0  # done: its play's first add key outlives KEEP_DONE, then goes


def load_tombstones(store: Store, link: str, profile: str) -> Tombstones:
    """The link's tombstones for `profile`. One kept by a release that noted no `done_at`
    is taken as not done: its record held again may be a tick ticked again, or the tick
    kept on purpose when one viewing of a watched item went, which must not be copied back;
    nothing tells them apart."""
    stones = store.mirror_get("watchbridge", profile, _collection(link, "tombstones"))
    return {(str(v["service"]), str(v["record"])): v.get("done_at") for v in stones.values()}


def kept_tombstones(
    before: Tombstones,
    plan: Plan,
    current: Mapping[str, Side],
    frozen: frozenset[str],
    now: float,
) -> Tombstones:
    """The tombstones after an applied run: its new ones (not done yet), less those whose
    record came back as a new play (`plan.spent`) or done long ago; one whose record its
    side no longer holds is done now (sides the run moved only). Pure."""
    stones = {**before, **dict.fromkeys(plan.tombstones)}
    held = {side: {p.record for p in read.plays} for side, read in current.items()}
    kept: Tombstones = {}
    for (service, record), done in stones.items():
        if (service, record) in plan.spent:
            continue
        if (
            done is None
            and service in held
            and service not in frozen
            and record not in held[service]
        ):
            done = now
        if done is None or now - done < TOMBSTONE_KEEP:
            kept[service, record] = done
    return kept


def save_tombstones(store: Store, link: str, profile: str, stones: Tombstones, now: float) -> None:
    store.mirror_replace(
        "watchbridge",
        profile,
        _collection(link, "tombstones"),
        {f"{s}:{r}": {"service": s, "record": r, "done_at": d} for (s, r), d in stones.items()},
        now,
    )


# --------------------------------------------------------------------------- plan -> outbox


_OUTBOX_ACTION = {
    "add_play": "play",
    "remove_play": "remove_play",
    "set_rating": "rating",
    "remove_rating": "remove_rating",
}


def sync_key(profile: str, target: str, kind: str = "", item: str = "", at: float = 0) -> str:
    """The start of the idempotency key of a sync's outbox row (all of it that names the
    action, the item and the minute; with defaults, the start shared by a target's rows)."""
    if not kind:
        return f"{profile}:{target}:sync:"
    return f"{profile}:{target}:sync:{kind}:{item}:{int(at // 60)}:"


def outbox_rows(
    link: str,
    profile: str,
    actions: tuple[Action, ...],
    discarded: Collection[tuple[str, str]] = (),
    read_at: Mapping[str, float] | None = None,
) -> tuple[list[NewOutboxRow], int]:
    """The outbox rows for a plan's actions (episodes, movies, and ratings of whole shows and
    seasons), and how many actions name an item no row can carry (an unreadable key).
    `discarded`: (target, expected record) of the adds whose earlier row was discarded: their
    rows say so (`OutboxItem.discarded_before`). `read_at`: per side, when the run began
    reading it; each row carries its target's (`READ_AT`): a view or a rating made there since
    is one the plan never saw (a run may read the other side for minutes before it queues)."""
    rows, skipped = [], 0
    for action in actions:
        item = ref_for_key(action.item)
        if item is None:
            skipped += 1
            continue
        payload: dict[str, Any] = {"item": ref_to_dict(item), "at": action.at, "link": link}
        action_key = sync_key(profile, action.target, action.kind, action.item, action.at)
        if action.value is not None:
            payload["rating"] = action.value
        if action.record:
            payload["record"] = action.record
        if read_at and action.target in read_at:
            payload[READ_AT] = read_at[action.target]
        if action.kind == "add_play":
            payload["earlier_plays"] = action.earlier_plays  # a rewatch there when any
            if action.at == UNDATED:  # how to know that it landed
                payload["target_plays"] = action.target_plays
            if (action.target, expected_record(action)) in discarded:
                payload[DISCARDED_BEFORE] = True
        outbox_action = _OUTBOX_ACTION[action.kind]
        rows.append(
            NewOutboxRow(
                target=action.target,
                profile=profile,
                action=outbox_action,
                payload=payload,
                # Keyed as webhook rows of the item are: a sync never overtakes a live play.
                ordering_key=ordering_key(profile, action.target, item.order_key(), outbox_action),
                idempotency_key=f"{action_key}{action.value or ''}:{action.record}:{action.source}",
            )
        )
    return rows, skipped


# The rest of a sync add's idempotency key, after `sync_key(profile, target)` and the kind:
# ITEM:MINUTE, then the value and record (empty for an add), then the source's record of the
# play with the suffix of a play added again (`reconcile._plan_history`).
_ADD_KEY = re.compile(r"(?P<item>.+?):(?P<minute>-?\d+):::(?P<source>.+)", re.DOTALL)
_ADDED_AGAIN = re.compile(r"(?::again)?(?::again:\d+)?$")


def kept_off_of(item: OutboxItem, now: float) -> KeptOff | None:
    """What `deadletters discard --for-good` keeps off for the dead letter `item`: the play
    its link copies to the item's target, by the play's record on the other side (as the
    plan names it). None for any other row (a webhook's play, a rating, a removal)."""
    link = item.payload.get("link")
    start = f"{sync_key(item.profile, item.target)}add_play:"
    key = item.idempotency_key
    if item.action != "play" or not isinstance(link, str) or not key.startswith(start):
        return None
    parts = _ADD_KEY.fullmatch(key.removeprefix(start))
    record = _ADDED_AGAIN.sub("", parts["source"], count=1) if parts else ""
    if not record:
        return None
    at = float(item.payload.get("at") or 0)
    return KeptOff(item.id, link, item.profile, item.target, record, item.describe(), at, now)


@dataclass(frozen=True)
class Applied:
    queued: int
    skipped: int
    held: str


async def plan_link(
    config: Config,
    store: Store,
    name: str,
    clock: Callable[[], float] = time.time,
    full: bool = False,
    direction: str | None = None,
    progress: SyncProgress | None = None,
    narrowing: Narrowing | None = None,
    metrics: Metrics | None = None,
    failures: dict[str, WatchbridgeError] | None = None,
    dry_run: bool = False,
) -> tuple[list[ProfilePlan], int]:
    """Read both sides for every profile of link `name` and plan, writing no plan (a reader
    may write what the delivery goes by, `readers.Noting`, except in a `dry_run`).

    Unless a full read is asked for or due (daily, and on a first run), each side is first
    asked cheaply whether anything changed since the last applied run, and a profile stops
    there when nothing did; otherwise each side reads its delta onto the baseline. Returns the
    plans and how many API requests it took. `direction` overrides the link's for this run
    (`two-way` or `A-to-B`); `narrowing` plans only the items of some AniList entries.
    With `failures`, a profile that cannot be read (its sign-in, its account, its password)
    is left out and named there with why, so the household's others still sync; when no
    profile could be read, the first one's error is raised (carrying every profile's cause:
    `causes_of`). A reader that cannot read yet (`readers.Waiting`: AniList while no anime
    mapping list is downloaded) stops the run before anything is read, for every profile."""
    link = with_direction(link_named(config, name), name, direction)
    profiles = link_profiles(config, link)
    if not profiles:
        raise WatchbridgeError(
            f"links.{name}: no profile has both a {link.services[0]} and a "
            f"{link.services[1]} account"
        )
    frozen = frozen_sides(config.links[name], link)
    readers = [
        _reader(config, store, link, name, service, profiles, clock, metrics)
        for service in link.services
    ]
    for reader in readers:
        if isinstance(reader, Noting):
            reader.dry_run = dry_run
        if isinstance(reader, Linked):
            reader.link_name = name
    narrow = _narrower(readers, name, narrowing)
    waiting = [reader for reader in readers if isinstance(reader, Waiting)]
    readers = observed(readers, progress)  # reports each step to a progress display, if any
    try:
        try:
            for reader in waiting:  # before anything is read: nothing is planned or saved
                await reader.ready()
        except WatchbridgeError as exc:
            raise with_causes(
                exc, tuple(cause_of(exc, profile, config) for profile in profiles)
            ) from None
        plans: list[ProfilePlan] = []
        first_error: WatchbridgeError | None = None
        for profile in profiles:
            try:
                plans.append(
                    await _plan_profile(
                        config, store, link, name, profile, readers, clock, full, frozen, narrow
                    )
                )
            except WatchbridgeError as exc:
                if failures is None:
                    raise
                first_error = first_error or exc
                failures[profile] = exc
        if failures and first_error is not None and not plans:
            # Raised as itself (callers tell a service's errors apart by their type), carrying
            # every profile's cause for `report_run`.
            causes = tuple(cause_of(exc, profile, config) for profile, exc in failures.items())
            raise with_causes(first_error, causes)
        return plans, sum(reader.requests_sent for reader in readers)
    finally:
        for reader in readers:
            await reader.aclose()


def _narrower(
    readers: list[SideReader], name: str, narrowing: Narrowing | None
) -> tuple[Narrower, Narrowing] | None:
    """The reader that tells which items `narrowing` covers (the AniList side)."""
    if narrowing is None:
        return None
    found = next((r for r in readers if isinstance(r, Narrower)), None)
    if found is None:
        raise WatchbridgeError(
            f"links.{name}: --anilist-id and --anilist-status need a link with an anilist side"
        )
    return found, narrowing


def link_named(config: Config, name: str) -> Link:
    """Link `name` of the config; a clear error naming the links there is, for a typo."""
    if name not in config.links:
        known = ", ".join(config.links) or "none configured"
        raise WatchbridgeError(f"no link {name!r} in {config.source} (links: {known})")
    return config.links[name]


def with_direction(link: Link, name: str, direction: str | None) -> Link:
    """`link` as one run of it asked for another direction."""
    a, b = link.services
    if direction is None:
        return link
    if direction == "two-way":
        return replace(link, direction="two-way")
    for source, target in ((a, b), (b, a)):
        if direction == f"{source}-to-{target}":
            return replace(link, services=[source, target], direction="one-way")
    raise WatchbridgeError(
        f"links.{name}: --direction expects two-way, {a}-to-{b} or {b}-to-{a}, got {direction!r}"
    )


def frozen_sides(configured: Link, run: Link) -> frozenset[str]:
    """Sides whose changes a run does not carry across: their baseline and cursors must stay,
    so that a later run still sees those changes (only when a run narrows the direction)."""
    if run.direction == "two-way" or configured.direction == "one-way":
        return frozenset()
    return frozenset({run.services[1]})


def _reader(
    config: Config,
    store: Store,
    link: Link,
    name: str,
    service: str,
    profiles: list[str],
    clock: Callable[[], float],
    metrics: Metrics | None = None,
) -> SideReader:
    reader = reader_for(service, config, store, link, profiles, clock, metrics)
    if reader is None:
        raise WatchbridgeError(f"links.{name}: {service} cannot be synced in this release")
    return reader


def syncable(link: Link) -> bool:
    """Whether every service of `link` has a reader."""
    return all(service in READERS for service in link.services)


async def _plan_profile(
    config: Config,
    store: Store,
    link: Link,
    name: str,
    profile: str,
    readers: list[SideReader],
    clock: Callable[[], float],
    full: bool,
    frozen: frozenset[str],
    narrow: tuple[Narrower, Narrowing] | None = None,
) -> ProfilePlan:
    # First: a side read as another account (its cheap check may say "unchanged") starts over.
    services = [reader.service for reader in readers]
    await _note_accounts(config, store, profile, readers, clock, reading=False)
    saved = await asyncio.to_thread(_all_cursors, store, name, profile, services)
    # No engine cursor: no run of this link was applied yet (or it started over): read all.
    # Nor while an account first seen is to be checked (see `_check_accounts`); but one whose
    # full read held no play (a new account may stay empty for months) is read in full again
    # only as often as held removals are, or once a cheap check sees anything change (below).
    full_at = float(saved[ENGINE].get("full_at", 0))
    owed = await asyncio.to_thread(_checks_owed, store, name, profile, services)
    # Removals held for confirmation may have been found by a full read only: while they
    # wait, a run reads in full once anything changed (or the reason they wait is not known).
    holding = await asyncio.to_thread(is_holding, store, name, profile, saved[ENGINE])
    told = held_reason(saved[ENGINE], link) if holding else ""
    # A full read "ahead" of now: the clock was set back since, and the read's age is unknown.
    since_full = clock() - full_at
    recent = 0.0 <= since_full < HOLD_FULL_READ_EVERY
    unread = any(state != READ_EMPTY for state in owed.values())  # no full read held none yet
    synced = await asyncio.to_thread(synced_kinds, store, name, profile, services, saved[ENGINE])
    # A kind taken into the link since: nothing may have changed, but it has all to sync.
    adding = frozenset(link.kinds) & PLANNED_KINDS - synced
    listed = await asyncio.to_thread(synced_lists, store, name, profile)
    new_lists = list_kinds(config.links[name]) - listed
    full = full or not 0.0 <= since_full < FULL_READ_EVERY or unread or (bool(owed) and not recent)
    # So for a collection: it is planned from the library's listings, which a read takes.
    full = full or bool(adding) or "collection" in new_lists
    full = full or (holding and not (told and recent))
    if not full:
        # Every side is asked, even after one said "changed": the reads reuse the answers.
        checks = [await r.unchanged(profile, saved[r.service]) for r in readers]
        if all(checks):
            counts = json.loads(saved[ENGINE].get(HELD_COUNTS) or "{}") if told else {}
            return _unchanged_plan(profile, told, counts, new_lists)
        full = holding
    if await _note_accounts(config, store, profile, readers, clock, reading=True):
        # The link's state is gone: read everything, as on a first run.
        saved = await asyncio.to_thread(_all_cursors, store, name, profile, services)
        full, holding = True, False
    owed = await asyncio.to_thread(_checks_owed, store, name, profile, services)
    # A check is decided on a full read only: a delta merged onto the baseline holds the
    # plays kept (the same account, wrongly), and a delta alone none of them (another's).
    full = full or bool(owed)
    baseline = await asyncio.to_thread(load_baseline, store, name, profile, services)
    full = full or not baseline
    # The rating copies the baseline expects stand once delivered, as taken before the reads
    # (one delivered during them may have landed after its side was read: not yet there).
    delivered = await asyncio.to_thread(_delivered_rating_copies, store, profile, name)
    baseline = {
        s: settle_expected_ratings(side, s, [(i, v, at) for t, i, v, at in delivered if t == s])
        for s, side in baseline.items()
    }
    # What became of the rows adding the plays the baseline expects, taken before either side
    # is read: a row delivered during the reads may have landed after its side was read, and
    # taken as delivered, its play missing from that read would count as removed there.
    discarded: set[tuple[str, str]] = set()
    add_rows = {
        s: await asyncio.to_thread(_add_rows, store, profile, s, discarded)
        for s in (baseline if full else ())
    }
    # So for the rating copies and removals on their way (and again after the reads, for
    # those queued meanwhile): one landing after its side was read is still on its way there.
    copying = await asyncio.to_thread(_copying_ratings, store, profile, name)
    removing = await asyncio.to_thread(_removing_ratings, store, profile, clock())
    # And for the plays webhooks queued: one landing after its target was read, missing from
    # that read, is still on its way there (not a play to copy to it again).
    webhook_plays = await asyncio.to_thread(store.waiting_webhook_plays, profile)
    webhook_ratings = await asyncio.to_thread(store.waiting_webhook_ratings, profile)
    reads: dict[str, SideRead] = {}
    read_at: dict[str, float] = {}
    for r in readers:
        read_at[r.service] = clock()
        reads[r.service] = await r.read(profile, saved[r.service], baseline.get(r.service), full)
    # A delta read that saw its side change where it does not look, and cannot tell where
    # (`SideRead.missed`, a play backdated on Trakt): that side is read again in full now,
    # before the plan would copy the other side's record of that viewing to it, and settled
    # as a full read is.
    whole = set(reads) if full else set()
    for r in readers:
        if not full and reads[r.service].missed and r.service in baseline:
            add_rows[r.service] = await asyncio.to_thread(
                _add_rows, store, profile, r.service, discarded
            )
            read_at[r.service] = clock()
            reads[r.service] = await r.read(profile, saved[r.service], baseline[r.service], True)
            whole.add(r.service)
    checked = await _check_accounts(config, store, name, profile, owed, baseline, reads, clock)
    if checked.started:
        baseline, holding = {}, False  # started over: as on a first run
    why = restarted_cursor(name)
    restarted = await asyncio.to_thread(store.get_cursor, ENGINE, profile, why) or ""
    first_run = bool(restarted) or not any(_holds_state(side) for side in baseline.values())
    restore = RESTORED_LINK + name
    after_restore = await asyncio.to_thread(store.get_cursor, ENGINE, profile, restore) is not None
    adding = frozenset() if first_run else adding  # a first run is new in every kind
    a, b = readers
    # The steps between the reads and the writes go over every play (at 100,000 plays each
    # takes ~0.1-0.5 s of CPU): on a thread, so that the event loop answers webhooks.
    reads, baseline = await asyncio.to_thread(settled_reads, reads, baseline, add_rows, whole)
    # The webhook plays on their way, as the plan leaves them out below (those waiting now
    # stay in `webhook_plays`, landed or not by then): a reader looks closer for none of them.
    aliases = {old: new for read in reads.values() for old, new in read.aliases.items()}
    webhook_plays += await asyncio.to_thread(store.waiting_webhook_plays, profile)
    waiting = await asyncio.to_thread(_waiting, store, profile, aliases, clock(), webhook_plays)
    current = {
        a.service: await a.refine(profile, reads[a.service].side, reads[b.service].side, waiting),
        b.service: await b.refine(profile, reads[b.service].side, reads[a.service].side, waiting),
    }
    if not link.movies:  # a movie is read on one side only: it is no part of this link
        current, baseline = narrow_sides(current, no_movie), narrow_sides(baseline, no_movie)
    if narrow is not None:  # the one place a narrowed run is narrowed: both sides, both ways
        narrower, wanted = narrow
        keep = await narrower.selection(profile, wanted, current[narrower.service])
        current, baseline = narrow_sides(current, keep), narrow_sides(baseline, keep)
    stones = await asyncio.to_thread(load_tombstones, store, name, profile)
    done_at = {stone: done for stone, done in stones.items() if done is not None}
    paired = await asyncio.to_thread(load_same_viewing, store, name, profile)
    kept_off = await asyncio.to_thread(store.kept_off, profile, name)
    copying |= await asyncio.to_thread(_copying_ratings, store, profile, name)
    # A kind new to the link meets the other side for the first time: what its baseline holds
    # was read, never synced (a rating cleared on one side meanwhile is no removal to copy).
    baseline = without_kinds(baseline, adding)
    current = with_first_seen(current, baseline, read_at)

    def planned_for(kinds: Link) -> Plan:
        planned = plan(
            kinds,
            current,
            baseline,
            frozenset(stones),
            done_at,
            holding,
            checked.hold(),
            first_run or "history" in adding,
            paired,
            kept_off={(k.target, k.record) for k in kept_off},
            unchecked=checked.read_empty,
            copying=copying,
            restored=after_restore,
            on_their_way=waiting,
        )
        return ticked_marks(planned, current)

    planned = await asyncio.to_thread(planned_for, link)
    waiting = await asyncio.to_thread(_waiting, store, profile, aliases, clock(), webhook_plays)
    planned = await asyncio.to_thread(without_waiting, planned, waiting)
    rated = await asyncio.to_thread(
        _waiting_ratings, store, profile, aliases, clock(), webhook_ratings
    )
    planned = await asyncio.to_thread(without_webhook_ratings, planned, rated)
    removing |= await asyncio.to_thread(_removing_ratings, store, profile, clock())
    planned = await asyncio.to_thread(without_copies_back, planned, removing)
    # The first sync of a kind taken in since waits for its review when it would write
    # (`awaiting_review`): meanwhile the link's other kinds go on, planned without it.
    waits = to_review(planned, adding)

    def without_waits() -> Plan:
        others = planned_for(replace(link, kinds=[k for k in link.kinds if k not in waits]))
        others = without_webhook_ratings(without_waiting(others, waiting), rated)
        return without_copies_back(others, removing)

    settled = await asyncio.to_thread(without_waits) if waits else None
    removals_waiting = await asyncio.to_thread(_removals_on_their_way, store, profile, name)
    cursors = {service: read.cursors for service, read in reads.items()}
    cursors[ENGINE] = {"full_at": str(clock() if full else full_at)}
    # A run one way only (`--direction`) leaves a new kind's other way to review.
    kinds = frozenset(link.kinds) & PLANNED_KINDS - (adding if frozen else frozenset())
    cursors[ENGINE][SYNCED_KINDS] = ",".join(sorted(kinds))
    if frozen:  # a run one way only may not have carried the held removals
        carried = {k: saved[ENGINE][k] for k in (HELD_FOR, HELD_COUNTS) if k in saved[ENGINE]}
        cursors[ENGINE] |= carried if holding else {}
        cursors[ENGINE][HOLDING] = saved[ENGINE].get(HOLDING, "1") if holding else "0"
    return ProfilePlan(
        profile,
        planned,
        {side: len(state.plays) for side, state in current.items()},
        current,
        first_run=first_run,
        cursors={s: c for s, c in cursors.items() if s not in frozen},
        frozen=frozen,
        listings=next((r.listings for r in reads.values() if r.listings is not None), None),
        narrowed=narrow is not None,
        restarted=restarted,
        after_restore=after_restore,
        tombstones=stones,
        baseline=baseline,
        read_empty=checked.read_empty,
        new_kinds=adding,
        new_lists=new_lists,
        settled=settled,
        discarded=frozenset(discarded),
        read_at=read_at,
        removals_waiting=frozenset(removals_waiting),
    )


def synced_kinds(
    store: Store, link: str, profile: str, services: list[str], engine: Mapping[str, str]
) -> frozenset[str]:
    """The kinds of PLANNED_KINDS the link's last applied run for `profile` synced, as its
    `engine` cursors keep them. A database of a release that kept no such record: the kinds
    its baseline holds state of (a link whose baseline holds ratings has synced them, most
    likely for months, and is not asked to review them again)."""
    recorded = engine.get(SYNCED_KINDS)
    if recorded is not None:
        return frozenset(recorded.split(",")) - {""}
    generations = baseline_generations(store, link, profile)
    held = {
        kind
        for kind, what in (("history", "plays"), ("ratings", "ratings"))
        if any(
            store.mirror_any(s, profile, _baseline_collection(link, what, generations.get(s, "")))
            for s in services
        )
    }
    return frozenset(held)


def without_kinds(baseline: Mapping[str, Side], kinds: frozenset[str]) -> dict[str, Side]:
    """`baseline` without what it holds of `kinds` (a kind's first sync plans against none,
    as a first run does). Pure."""
    return {
        service: replace(
            side,
            plays=() if "history" in kinds else side.plays,
            ratings={} if "ratings" in kinds else side.ratings,
        )
        for service, side in baseline.items()
    }


def is_holding(
    store: Store, link: str, profile: str, engine: Mapping[str, str] | None = None
) -> bool:
    """Whether `link`'s last applied run for `profile` held removals for confirmation
    (`engine`: the link's engine cursors for the profile, when loaded already)."""
    engine = load_cursors(store, link, ENGINE, profile) if engine is None else engine
    if HOLDING in engine or not engine:
        return engine.get(HOLDING, "0") not in ("", "0")
    return held_by_an_older_release(store.recent_runs(link, 100), profile)


def held_reason(engine: Mapping[str, str], link: Link) -> str:
    """Why the removals held for a profile wait, as its engine cursors keep it ("" when no
    run kept it: nothing held, held by a release that kept no reason, or found under other
    settings of the link)."""
    reason = engine.get(HOLDING, "")
    if reason in ("0", "1") or engine.get(HELD_FOR) != _settings(link):
        return ""
    return reason


def _settings(link: Link) -> str:
    """What of a link's settings shapes its plans (a hold found under others may not be)."""
    return json.dumps([list(link.services), sorted(link.kinds), link.direction, link.movies])


def held_by_an_older_release(runs: Sequence[SyncRun], profile: str) -> bool:
    """Whether one of the link's recent `runs` held removals of `profile`, as its error says:
    a release before the `holding` cursor kept no other record of it, and a run since (one
    that failed, or a delta run that did not read them) says nothing of them. Holding when
    unsure costs one confirmation. Pure."""
    held = re.compile(rf"(^|; ){re.escape(profile)}: \d+ of \d+ \w+ on \w+ would be removed")
    return any(held.search(run.error or "") for run in runs)


def _all_cursors(
    store: Store, link: str, profile: str, services: list[str]
) -> dict[str, dict[str, str]]:
    """The link's cursors for `profile`: each side's, and the engine's own."""
    return {s: load_cursors(store, link, s, profile) for s in [*services, ENGINE]}


def _checks_owed(store: Store, link: str, profile: str, services: list[str]) -> dict[str, str]:
    """The sides whose account check `link` still owes, each with its state (`OWED`, or
    `READ_EMPTY` once a full read held no play)."""
    states = {s: store.get_cursor(s, profile, check_owed(link)) for s in services}
    return {s: state for s, state in states.items() if state is not None}


@dataclass(frozen=True)
class AccountChecks:
    """What a run's checks of the accounts first seen found (`_check_accounts`)."""

    started: bool = False  # a side held none of the plays kept for it: the link started over
    read_empty: tuple[str, ...] = ()  # sides that read no play while their check is owed

    def hold(self) -> str:
        """Why this run's removals wait whatever their share (`accounts.read_empty_hold`)."""
        return read_empty_hold(self.read_empty)


async def _check_accounts(
    config: Config,
    store: Store,
    link: str,
    profile: str,
    owed: Mapping[str, str],
    baseline: Mapping[str, Side],
    reads: Mapping[str, SideRead],
    clock: Callable[[], float],
) -> AccountChecks:
    """Check the sides whose account was first seen (`owed`) on their full read: one that
    holds none of the plays the link kept for it starts over (a database of an older release,
    which kept no account, and another account since: `accounts.unrecognised`). One that
    holds no play at all tells nothing: its check stays owed, said once in the log, and the
    run's removals wait (`accounts.read_empty`). Each link checks what it kept itself (one
    without a baseline has nothing to lose)."""
    started, empty = False, []
    for service in sorted(owed):
        kept, read = baseline.get(service), reads[service].side
        if kept is not None and read_empty(kept, read):
            empty.append(service)
            await asyncio.to_thread(_note_read_empty, store, link, profile, service, kept, clock())
            continue
        if kept is not None and unrecognised(kept, read):
            now = clock()
            await asyncio.to_thread(start_over_unrecognised, store, config, service, profile, now)
            started = True
        await asyncio.to_thread(store.forget_cursor, service, profile, check_owed(link))
    return AccountChecks(started, tuple(empty))


def _note_read_empty(
    store: Store, link: str, profile: str, service: str, kept: Side, now: float
) -> None:
    """Say once (per check owed) that `service` read empty, and that this is not taken as
    another account."""
    owed = check_owed(link)
    if store.get_cursor(service, profile, owed) == READ_EMPTY:
        return
    store.set_cursor(service, profile, owed, READ_EMPTY, now)
    message = (
        f"links.{link}: {service} read empty for profile {profile}, and its account is not "
        f"checked yet ({kept_plays(kept)} plays kept for it): not taken as another account, "
        "nothing copied again; the check waits for a read holding dated plays, and meanwhile "
        f"the removals, and what only {service} holds (undated plays, ratings, watchlist "
        "titles), wait for confirmation"
    )
    log.warning(message, extra={"profile": profile, "link": link, "service": service})


async def _note_accounts(
    config: Config,
    store: Store,
    profile: str,
    readers: list[SideReader],
    clock: Callable[[], float],
    reading: bool,
) -> bool:
    """Ask each side whose account it is, and start over where it changed (`accounts.py`);
    whether any did."""
    changed = False
    for reader in readers:
        seen = await reader.account(profile, reading)
        if seen is None:
            continue
        change = await asyncio.to_thread(
            note_account, store, config, reader.service, profile, seen, clock()
        )
        changed = changed or change is not None
    return changed


MARKED_ALONG = "; marked played in Plex with others at once: ticked, no diary entry"


def ticked_marks(planned: Plan, current: Mapping[str, Side]) -> Plan:
    """`planned` with its adds to Serializd of plays Plex holds no history row of, marked
    played together (`marked.at_once`: a season marked played on a current server dates each
    episode "now"), undated: ticks, as Serializd's own season mark is, and no diary entry
    dated the day of the mark for each (Plex keeps no other date). A lone mark (or a play
    whose history Plex cleared) keeps its date. The ticks read back undated, paired with
    those plays. Pure."""
    plex = current.get("plex")
    if plex is None or "serializd" not in current:
        return planned
    marks = at_once(
        (play.at, play.item, play.record)
        for play in plex.plays
        if play.record.startswith(WATCHED_PREFIX)
    )
    if not marks:
        return planned

    def ticked(action: Action) -> Action:
        if action.kind != "add_play" or action.target != "serializd":
            return action
        if _ADDED_AGAIN.sub("", action.source, count=1) not in marks:
            return action
        return replace(action, at=UNDATED, reason=action.reason + MARKED_ALONG)

    return replace(planned, actions=tuple(ticked(action) for action in planned.actions))


def _waiting(
    store: Store,
    profile: str,
    aliases: Mapping[str, str],
    now: float,
    before: Sequence[tuple[str, dict[str, Any], float, str | None, str | None]] = (),
) -> dict[tuple[str, str], list[float]]:
    """Plays webhooks queued that have not landed, by (target, item key): a side's read does
    not show them yet, and the link must not add them a second time. `aliases`: see
    SideRead.aliases. `before`: those waiting before the reads (Store.waiting_webhook_plays),
    waiting as well: one that landed meanwhile may have landed after its target was read (a
    play waiting both times counts once)."""
    waiting: dict[tuple[str, str], list[float]] = {}
    plays = [*before, *store.waiting_webhook_plays(profile)]
    unique = {json.dumps(play, sort_keys=True): play for play in plays}
    plex_server = _linked_plex_server(store, profile)
    for target, item, at, source, server in unique.values():
        keyed_here = _keyed_as_linked_plex(source, server, plex_server)
        key = _waiting_key(store, item, source, aliases, now, keyed_here)
        if key is not None:
            waiting.setdefault((target, key), []).append(at)
    return waiting


def _linked_plex_server(store: Store, profile: str) -> str:
    """The machine id of the Plex server the profile's link reads, as its last read noted it
    ("" while none did)."""
    return plex_server_of(store.get_cursor("plex", profile, ACCOUNT_CURSOR) or "")


def _keyed_as_linked_plex(source: str | None, server: str | None, plex_server: str) -> bool:
    """Whether a queued webhook row's item key (`source_key`) is a ratingKey of the Plex server
    the link reads: a Plex or Tautulli webhook's (or an older release's row, naming no source)
    of that server, where both are known. An Emby or Jellyfin item id, or the ratingKey of
    another Plex server (the owner's second one, a friend's), names another item by the same
    key."""
    if source not in (None, "plex", "tautulli"):
        return False
    return not server or not plex_server or server.casefold() == plex_server.casefold()


def _waiting_key(
    store: Store,
    item: dict[str, Any],
    source: str | None,
    aliases: Mapping[str, str],
    now: float,
    keyed_here: bool = True,
) -> str | None:
    """The link's key of a queued webhook row's item (see SideRead.aliases); None: none, or a
    row the target will make a dead letter of. `keyed_here`: the item's own key is one of the
    link's Plex server (`_keyed_as_linked_plex`)."""
    # Jellyfin and Emby name an episode's show by their own id: its ids were looked up when
    # the play went to another target, if it did.
    ref = webhook_ref(store, item, source, now)
    if ref is None:
        return None
    return (
        (aliases.get(ref.source_key or "") if keyed_here else None)
        or aliases.get(ref.ids.plex_guid or "")
        or key_for_ref(ref)
        # Its show's TMDB id not known yet (its lookup failed): a side that holds the
        # episode names it by the episode's own ids too.
        or next((aliases[a] for a in own_id_aliases(ref) if a in aliases), None)
    )


def _waiting_ratings(
    store: Store,
    profile: str,
    aliases: Mapping[str, str],
    now: float,
    before: Sequence[tuple[str, dict[str, Any], int, str | None, str | None]] = (),
) -> set[tuple[str, str, int]]:
    """(target, item key, value) of the ratings webhooks queued that have not landed, keyed as
    `_waiting` keys plays; `before`: those waiting before the reads (one landing meanwhile may
    have landed after its target was read)."""
    waiting = set()
    plex_server = _linked_plex_server(store, profile)
    ratings = [*before, *store.waiting_webhook_ratings(profile)]
    for target, item, value, source, server in ratings:
        keyed_here = _keyed_as_linked_plex(source, server, plex_server)
        key = _waiting_key(store, item, source, aliases, now, keyed_here)
        if key is not None:
            waiting.add((target, key, value))
    return waiting


def _removing_ratings(store: Store, profile: str, now: float) -> set[tuple[str, str, float | None]]:
    """(target, item key, queued at) of the rating removals queued and not delivered yet, or
    delivered so lately that a read may not show it (queued at: of a dead letter; None for
    the others)."""
    return _keyed(store.pending_rating_removals(profile, now))


def _delivered_rating_copies(
    store: Store, profile: str, link: str
) -> set[tuple[str, str, int, float]]:
    """(target, item key, value, rated at) of the rating copies `link` queued that their
    target took."""
    return _keyed(store.delivered_rating_copies(profile, link))


def _removals_on_their_way(store: Store, profile: str, link: str) -> set[tuple[str, str]]:
    """(target, item key) of the rating removals `link` queued and not tried to the end yet."""
    return _keyed(store.rating_removals_on_their_way(profile, link))


def _copying_ratings(store: Store, profile: str, link: str) -> set[tuple[str, str, int]]:
    """(target, item key, value) of the ratings `link` queued and not delivered yet (see
    `reconcile._winner`)."""
    return _keyed(store.waiting_rating_copies(profile, link))


def _keyed(rows: Iterable[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Outbox rows read as (target, item as stored, ...) with the item's canonical key in its
    place; a row whose item has none is left out."""
    keyed = set()
    for target, item, *rest in rows:
        key = key_for_ref(ref_from_dict(item))
        if key is not None:
            keyed.add((target, key, *rest))
    return keyed


def _holds_state(side: Side) -> bool:
    """Whether a baseline side comes from an applied run (not only plays a narrowed run
    queued for it)."""
    return bool(side.ratings) or any(not p.record.startswith(EXPECTED) for p in side.plays)


def load_cursors(store: Store, link: str, service: str, profile: str) -> dict[str, str]:
    """A side's cursors for one link and profile (one JSON value in the cursors table)."""
    value = store.get_cursor(service, profile, f"link:{link}")
    return dict(json.loads(value)) if value else {}


def save_cursors(
    store: Store, link: str, profile: str, cursors: dict[str, dict[str, str]], now: float
) -> None:
    for service, values in cursors.items():
        store.set_cursor(service, profile, f"link:{link}", json.dumps(values, sort_keys=True), now)


def apply_plan(
    store: Store,
    link: Link,
    name: str,
    result: ProfilePlan,
    confirm_removals: bool,
    now: float,
) -> Applied:
    """Queue a plan's writes and remember this run's state as the next run's baseline.

    A narrowed run saw only some items: it keeps the baseline and cursors as they are (the
    next run compares everything against the last full state), adding only the plays it
    queued as expected (so they are recognised when read back) and its tombstones."""
    if result.unchanged:  # removals held before still wait (a confirming run reads in full)
        return Applied(0, 0, "" if confirm_removals else result.plan.held)
    held = "" if confirm_removals else result.plan.held
    actions = result.plan.writes(confirm_removals)
    rows, skipped = outbox_rows(name, result.profile, actions, result.discarded, result.read_at)
    # Worked out and encoded before the transaction: it holds the store's lock, which every
    # webhook's record waits for (at 100,000 plays this is ~0.5 s of CPU, the SQL as much).
    if result.narrowed:
        with store.transaction():
            queued = _apply_narrowed(store, link, name, result, actions, rows, held, now)
        return Applied(queued, skipped, held)
    kept = kept_state(result, actions, held, confirm_removals, now)
    queued = 0
    for so_far in applying(store, link, name, result, rows, held, now, kept):
        queued = so_far
    return Applied(queued, skipped, held)


def applying(
    store: Store,
    link: Link,
    name: str,
    result: ProfilePlan,
    rows: list[NewOutboxRow],
    held: str,
    now: float,
    kept: KeptState,
    queue_part: int = QUEUE_PART,
    baseline_part: int = BASELINE_PART,
) -> Iterator[int]:
    """Apply a run's plan (not narrowed) in transactions of `REPLACE_PART` rows, a webhook's
    record waiting for one of them, not for all (a first run of 60,000 Trakt plays beside
    43,000 Plex plays: 17,000 rows queued, 100,000 baseline rows, 0.6 s and more of the
    store's lock in one); yields after each, the rows queued so far. Killed between two:
    - the rows go first: queued again by the next run (it plans from the same baseline, the
      same idempotency keys), never twice; a row queued by a baseline that expects its play
      and was then lost would never be queued again (the play taken for a discarded row's);
    - the next baseline is written beside the one in use, under a generation of its own, and
      taken into use with the tombstones, cursors and the rest in one transaction: killed
      before it, the next run reads the last whole baseline with its tombstones (never part
      of one: a play missing from it is taken for a new one and copied back), and what was
      written of the next one is taken out; after it, the last one is taken out in parts;
    - but a side whose next baseline differs from the one in use by one part of rows at most
      (a daily full read finding nothing new: by none) keeps its generation, those rows
      written in place in that one transaction: rewriting a whole baseline wrote 4 rows a
      play a day, and on an SD card each is wear for nothing."""
    profile = result.profile
    before = baseline_generations(store, name, profile)
    # Compared before the rows are queued (reads, beside the lock): the switch writes them
    # only if nothing wrote the baseline in use since (`_write_in_place`).
    in_place: dict[str, list[InPlace]] = {}
    budget = baseline_part  # the switch's transaction writes one part of baseline rows at most
    for service, saved in kept.baseline.items():
        changes = _in_place(store, name, profile, service, before.get(service, ""), saved)
        size = sum(len(c.change.put) + len(c.change.taken) for c in changes or ())
        if changes is not None and size <= budget:
            in_place[service], budget = changes, budget - size
    moved = [service for service in kept.baseline if service not in in_place]
    queued = 0
    for start in range(0, len(rows), queue_part):
        queued += store.enqueue(rows[start : start + queue_part], now)
        yield queued
    for service in kept.baseline:
        for collection in _left_over(store, name, profile, service, before.get(service, "")):
            while not store.mirror_drop_part(service, profile, collection, baseline_part):
                yield queued
            yield queued
    generation = f"@{random.getrandbits(48):012x}"
    for service in moved:
        plays, ratings = kept.baseline[service]
        for what, items in (("plays", plays), ("ratings", ratings)):
            collection = _baseline_collection(name, what, generation)
            for start in range(0, len(items), baseline_part):
                part = items[start : start + baseline_part]
                # Not waiting for the disk: the switch below does, and a power cut takes the
                # last commits (WAL), never one before them.
                store.mirror_put_encoded(service, profile, collection, part, now, synced=False)
                yield queued
    with store.transaction():
        now_in_use = {**before, **dict.fromkeys(moved, generation)}
        store.mirror_replace(ENGINE, profile, _collection(name, GENERATIONS), now_in_use, now)
        for service, changes in in_place.items():
            _write_in_place(store, service, profile, changes, now)
        _kept_beside(store, link, name, result, held, now, kept)
    yield queued
    for service in moved:
        for what in ("plays", "ratings"):
            collection = _baseline_collection(name, what, before.get(service, ""))
            while not store.mirror_drop_part(service, profile, collection, baseline_part):
                yield queued


@dataclass(frozen=True)
class InPlace:
    """A baseline collection in use (`collection`), the rows to hold (`rows`), what makes it
    hold them (`change`), worked out from what it held at `version`."""

    collection: str
    rows: list[tuple[str, str]]
    change: MirrorChange
    version: int | None


def rows_change(stored: Mapping[str, str], rows: Sequence[tuple[str, str]]) -> MirrorChange:
    """What makes a collection holding `stored` (key -> JSON text) hold exactly `rows`.
    Pure."""
    wanted = dict(rows)
    put = [(key, data) for key, data in wanted.items() if stored.get(key) != data]
    return MirrorChange(put, [key for key in stored if key not in wanted])


def _in_place(
    store: Store,
    link: str,
    profile: str,
    service: str,
    generation: str,
    rows: tuple[list[tuple[str, str]], list[tuple[str, str]]],
) -> list[InPlace] | None:
    """What makes a side's baseline in use (of `generation`) hold `rows` (plays, ratings);
    None for one kept by a release before collections had versions: a write to it before the
    switch could not be told, and making it whole there may take the store's lock for long."""
    found = []
    for what, items in zip(("plays", "ratings"), rows, strict=True):
        collection = _baseline_collection(link, what, generation)
        stored = store.mirror_encoded(service, profile, collection)
        if stored.version is None and stored.rows:
            return None
        found.append(InPlace(collection, items, rows_change(stored.rows, items), stored.version))
    return found


def _write_in_place(
    store: Store, service: str, profile: str, changes: list[InPlace], now: float
) -> None:
    """Write `changes` (in the caller's transaction). A collection written since they were
    worked out (a start over by another process took the link's state out), or never
    versioned (empty then: nothing would tell), is made to hold its rows here whole: the
    change alone would leave a mix of it and whatever that write left."""
    versions = store.mirror_versions(service, profile)
    for c in changes:
        if c.version is None or versions.get(c.collection) != c.version:
            store.mirror_replace_encoded(service, profile, c.collection, c.rows, now)
            continue
        if c.change.put:
            store.mirror_put_encoded(service, profile, c.collection, c.change.put, now)
        if c.change.taken:
            store.mirror_remove(service, profile, c.collection, c.change.taken)


def _left_over(store: Store, link: str, profile: str, service: str, in_use: str) -> list[str]:
    """The baseline collections of a side an apply cut short wrote (any generation but the
    one in use): the next one before its switch, or the last one left after it. That may be
    the first generation (""): a side written in place keeps it until its baseline changes
    by more than a part. A first generation kept by a release before collection versions
    has no version to be found by: it is looked for in the mirror itself."""
    found = []
    for what in ("plays", "ratings"):
        start = _collection(link, what)
        found += [
            c
            for c in store.mirror_collections(service, profile, start)
            if (c == start or c.startswith(f"{start}@")) and c != f"{start}{in_use}"
        ]
        if in_use and start not in found and store.mirror_any(service, profile, start):
            found.append(start)
    return found


@dataclass(frozen=True)
class KeptState:
    """What an applied run (not narrowed) keeps for the next one: its baseline, encoded
    (`baseline_rows`); the plan as made (without tombstones while removals are held); the
    tombstones; and whether it left the baseline and tombstones as it found them."""

    baseline: BaselineRows
    made: Plan
    tombstones: Tombstones
    settled: bool


def kept_state(
    result: ProfilePlan, actions: tuple[Action, ...], held: str, confirming: bool, now: float
) -> KeptState:
    """The `KeptState` of applying `result` (its `actions`, `held`: the hold's message).
    Pure."""
    moved = {s: v for s, v in result.current.items() if s not in result.frozen}
    made = result.plan
    known, paired = frozenset(result.tombstones), made.paired
    if held:
        # Held removals were not made: their plays stay in the baseline (and the next runs
        # read in full) so that they are found again, and their tombstones are not kept.
        moved = {s: removals_kept(result.baseline, result.current, s, known, paired) for s in moved}
        made = replace(made, tombstones=frozenset())
    elif not confirming:
        # Nothing held (a one-way link plans no removal from its target), yet a side read
        # empty keeps the plays kept for its account's check: without them, the next full
        # read would find nothing to check by, let the check go, and copy everything to it.
        for s in set(result.read_empty) & set(moved):
            moved[s] = removals_kept(result.baseline, result.current, s, known, paired)
    saved = _with_expected(moved, actions, result.removals_waiting)
    stones = kept_tombstones(result.tombstones, made, result.current, result.frozen, now)
    # A hold is told again without a read only once a run left all as it found it (the next
    # run, with nothing changed on either side, would plan the same); else "1": read in full.
    settled = not result.frozen and _same_state(result.baseline, saved, result.tombstones, stones)
    return KeptState(baseline_rows(saved), made, stones, settled)


def _apply_narrowed(
    store: Store,
    link: Link,
    name: str,
    result: ProfilePlan,
    actions: tuple[Action, ...],
    rows: list[NewOutboxRow],
    held: str,
    now: float,
) -> int:
    queued = store.enqueue(rows, now)
    # The baseline moves only by what this run's writes will leave on their targets (as a
    # full run's does): a rating it removes is no removal of the user's at the next run, one it
    # copies to a side holding none (as read now) is there once delivered.
    writes = tuple(
        a
        for a in actions
        if a.kind in ("add_play", "remove_rating")
        or (a.kind == "set_rating" and a.item not in result.current[a.target].ratings)
    )
    if writes:
        services: list[str] = [str(s) for s in link.services]
        stored = load_baseline(store, name, result.profile, services)
        sides = {s: stored.get(s, Side()) for s in services}
        save_baseline(store, name, result.profile, _with_expected(sides, writes), now)
    if not held:  # a narrowed read holds some records only: none is seen done
        stones = {**result.tombstones, **dict.fromkeys(result.plan.tombstones)}
        save_tombstones(store, name, result.profile, stones, now)
    return queued


def _kept_beside(
    store: Store, link: Link, name: str, result: ProfilePlan, held: str, now: float, kept: KeptState
) -> None:
    """What an applied run keeps with its baseline, in the transaction that takes it into use:
    killed between them, a removal's tombstone would be lost while its baseline moved on, and
    the next run would copy the play back."""
    save_same_viewing(store, name, result.profile, kept.made.paired, now)
    engine = {HOLDING: "0", **result.cursors.get(ENGINE, {})}  # a one-way run carries it
    if held:
        engine[HOLDING] = held if kept.settled else "1"
        engine[HELD_FOR] = _settings(link)
        engine[HELD_COUNTS] = json.dumps(dict(Counter(a.target for a in result.plan.held_back())))
    save_cursors(store, name, result.profile, {**result.cursors, ENGINE: engine}, now)
    if result.after_restore:  # its pairs are kept (`Plan.paired`): later runs pair no more
        store.forget_cursor(ENGINE, result.profile, RESTORED_LINK + name)
    if result.first_run and not held:
        _first_run_applied(store, link, name, result, now)
    save_tombstones(store, name, result.profile, kept.tombstones, now)


def _same_state(
    before: Mapping[str, Side], after: Mapping[str, Side], stones: Tombstones, kept: Tombstones
) -> bool:
    """Whether a run leaves the baseline and tombstones as it found them (as saved). Pure."""

    def saved(side: Side) -> tuple[dict[str, tuple[str, float]], dict[str, tuple[float, float]]]:
        plays = {p.record: (p.item, p.at) for p in side.plays}
        return plays, {item: (r.value, r.at) for item, r in side.ratings.items()}

    empty = Side()
    services = set(before) | set(after)
    same = all(saved(before.get(s, empty)) == saved(after.get(s, empty)) for s in services)
    return same and stones == kept


def _first_run_applied(
    store: Store, link: Link, name: str, result: ProfilePlan, now: float
) -> None:
    """A first run (or a start-over) is over once applied both ways; one way only (a
    `--direction` run) leaves the other way to review: the link's first run still, its
    reason kept (`restarted:LINK`), and the ways applied so far (`carried:LINK`)."""
    why, ways = restarted_cursor(name), carried_cursor(name)
    done = set(filter(None, (store.get_cursor(ENGINE, result.profile, ways) or "").split(",")))
    done |= set(link.services) - result.frozen  # the sides whose changes this run carried
    if done >= set(link.services):
        store.forget_cursor(ENGINE, result.profile, why)
        store.forget_cursor(ENGINE, result.profile, ways)
        return
    store.set_cursor(ENGINE, result.profile, ways, ",".join(sorted(done)), now)
    if not result.restarted:
        message = f"the first sync of links.{name} went one way only (--direction)"
        store.set_cursor(ENGINE, result.profile, why, message, now)


def _add_rows(
    store: Store, profile: str, service: str, gone: set[tuple[str, str]]
) -> Callable[[Play], AddRow]:
    """What became of the sync's row adding an (expected) play to `service`, as the outbox
    says now: delivered, waiting (or a dead letter), or gone (discarded, pruned: added to
    `gone`, as (`service`, its record))."""
    start = sync_key(profile, service)
    delivered, undelivered = store.keys_by_delivery(profile, service, start)

    def row_of(play: Play) -> AddRow:
        prefix = sync_key(profile, service, "add_play", play.item, play.at)
        if _any_starts(delivered, prefix):
            return "delivered"
        if _any_starts(undelivered, prefix):
            return "waiting"
        gone.add((service, play.record))
        return "gone"

    return row_of


def settled_reads(
    reads: Mapping[str, SideRead],
    baseline: Mapping[str, Side],
    add_rows: Mapping[str, Callable[[Play], AddRow]],
    full: Collection[str],
) -> tuple[dict[str, SideRead], dict[str, Side]]:
    """The reads without the expected plays a real play now stands for (`settle_expected`)
    and, for the sides read in full (`full`), the baseline and reads with the baseline's
    expected plays the reads lack accounted for (`carry_expected`, by `add_rows`: what became
    of each play's row, as taken before the read)."""
    settled = {s: replace(r, side=settle_expected(r.side)) for s, r in reads.items()}
    kept = dict(baseline)
    for s, side in baseline.items():
        if s in full:
            kept[s], read = carry_expected(side, settled[s].side, add_rows[s])
            settled[s] = replace(settled[s], side=read)
    return settled, kept


def _any_starts(keys: list[str], prefix: str) -> bool:
    """Whether one of the sorted `keys` starts with `prefix`."""
    at = bisect_left(keys, prefix)
    return at < len(keys) and keys[at].startswith(prefix)


def _with_expected(
    current: dict[str, Side],
    actions: tuple[Action, ...],
    removals_waiting: Collection[tuple[str, str]] = (),
) -> dict[str, Side]:
    """The sides with the plays and ratings our queued writes will leave there (`actions`,
    and the rating removals of earlier runs still to be tried, `removals_waiting`)."""
    expected = {}
    for service, side in current.items():
        adds = [a for a in actions if a.kind == "add_play" and a.target == service]
        waiting = [item for target, item in removals_waiting if target == service]
        expected[service] = expect_ratings(expect(side, adds), service, actions, waiting)
    return expected


class NeedsReview(WatchbridgeError):
    """A first run that would write, on a link whose `first_run` is `dry-run` (or the first
    sync of kinds new to it); `held`: the removals the run's other profiles hold for
    confirmation meanwhile; `waiting`: as `awaiting_review` answers."""

    def __init__(
        self,
        message: str,
        held: tuple[str, ...] = (),
        failures: tuple[str, ...] = (),
        held_unread: bool = False,
        waiting: Mapping[str, frozenset[str]] | None = None,
        causes: tuple[Cause | None, ...] = (),
    ) -> None:
        super().__init__(message)
        self.waiting = dict(waiting or {})
        self.held = held
        self.failures = failures  # "profile: why" of profiles whose sides could not be read
        self.causes = causes  # theirs, one each (see PartsFailed)
        self.held_unread = held_unread  # as RunResult's


class PlanChanged(WatchbridgeError):
    """A run asked to apply a reviewed plan (`run_link`'s `shown`) found the sides make
    another: nothing was applied; `result` is the new plan, as a dry run's."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


class PartsFailed(WatchbridgeError):
    """A run that failed for some or all of the link's profiles (or parts): `causes`, one per
    failed part, names the alerts of its own each has (None: none but the link's), so that
    `report_run` leaves one cause to its own alert."""

    def __init__(self, message: str, causes: tuple[Cause | None, ...], exit_code: int = 1) -> None:
        super().__init__(message)
        self.causes = causes
        self.exit_code = exit_code


def causes_of(exc: BaseException) -> tuple[Cause | None, ...]:
    """The causes of a failed run's parts, for `report_run` (none known: the link tells)."""
    if isinstance(exc, PartsFailed | NeedsReview):
        return exc.causes
    return carried_causes(exc)


def failure_of(exc: WatchbridgeError) -> str | None:
    """What a run that ended with `exc` failed at, for `report_run` (None: it went through
    for every profile it could run: one waiting for its first-run review is no failure)."""
    if isinstance(exc, NeedsReview):
        return "; ".join(exc.failures) or None
    return exc.message


class LinkBusy(WatchbridgeError):
    """Another run of the link is alive (this process or another: `watchbridge sync`), or
    seems to until `until` (a process killed mid-run leaves its run alive until its lease
    ends)."""

    def __init__(self, message: str, until: float) -> None:
        super().__init__(message)
        self.until = until


@dataclass(frozen=True)
class RunResult:
    plans: list[ProfilePlan]
    api_calls: int
    queued: int = 0
    held: tuple[str, ...] = ()
    skipped: int = 0
    lists: ListsRun = field(default_factory=ListsRun)  # the watchlist and collection parts
    errors: tuple[str, ...] = ()  # "profile: why" of profiles whose sides could not be read
    # A profile not read, or waiting for its review, held removals: their alert is not over.
    held_unread: bool = False
    causes: tuple[Cause | None, ...] = ()  # of `errors`, one each (see PartsFailed)

    @property
    def failures(self) -> tuple[str, ...]:
        """What failed in a run that went through for the others, "profile: why" each."""
        return (*self.errors, *self.lists.errors)

    @property
    def failure_causes(self) -> tuple[Cause | None, ...]:
        """The causes of `failures`, one each: a watchlist or collection part has none known."""
        return (*self.causes, *(None for _ in self.lists.errors))

    @property
    def outcome(self) -> str:
        return "failed" if self.failures else "held" if self.held else "ok"


SAME_VIEWING = "same_viewing"  # a run record's count of plays taken for one viewing
SKIPPED = "skipped"  # a run record's count of planned writes no outbox row can carry


def plan_counts(plans: list[ProfilePlan], confirm_removals: bool = False) -> dict[str, int]:
    """What a run's record counts: the writes it queued (or, dry, would queue) per target and
    kind, those a hold keeps back as `held`, the pairs of plays a first run took for one
    viewing although days apart (no write) as `same_viewing`, the writes planned for an
    item no row can carry (`outbox_rows`) as `skipped`, and the plays and ratings a side's
    catalog cannot hold (`Plan.out_of_catalog`) as `SIDE:out_of_catalog`."""
    counts: dict[str, int] = {}
    for result in plans:
        plan = result.plan
        writes = plan.writes(confirm_removals)
        # Queued: those a row can carry; the others are planned again at each full read, and
        # counted apart (a run that queued nothing does not read as one that queued them).
        carried = tuple(a for a in writes if ref_for_key(a.item) is not None)
        for key, value in replace(plan, actions=carried).counts().items():
            counts[key] = counts.get(key, 0) + value
        if len(carried) < len(writes):
            counts[SKIPPED] = counts.get(SKIPPED, 0) + len(writes) - len(carried)
        held = len(plan.held_back(confirm_removals)) + sum(result.held_counts.values())
        if held:
            counts["held"] = counts.get("held", 0) + held
        if plan.same_viewing:  # a first run's plays days apart taken for one viewing
            counts[SAME_VIEWING] = counts.get(SAME_VIEWING, 0) + len(plan.same_viewing)
        for side, count in plan.out_of_catalog.items():  # not in its libraries, say
            key = f"{side}:{OUT_OF_CATALOG}"
            counts[key] = counts.get(key, 0) + count
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
    direction: str | None = None,
    clock: Callable[[], float] = time.time,
    progress: SyncProgress | None = None,
    alerts: Alerts | None = None,
    narrowing: Narrowing | None = None,
    metrics: Metrics | None = None,
    shown: str | None = None,
) -> RunResult:
    """One run of a link, recorded in the run history: plan, then (unless a dry run) queue;
    then the link's watchlist and collection parts (if any), which write directly. A run
    with a `narrowing` plans only those AniList entries' items (see `apply_plan`).
    `metrics`: the runtime's, counting the run's requests with the service's others.
    `shown`: the token (`review.plan_token`) of the plan the user reviewed (the status page):
    the run applies only that plan, and raises `PlanChanged`, writing nothing and recorded
    as a dry run, when the sides make another (their watchlists read dry first, to compare)."""
    with_direction(link_named(config, name), name, direction)  # a typo records no run
    run_id = await _started(store, name, clock)
    if run_id is None:
        until = await asyncio.to_thread(store.run_lease_ends, name)
        ends = local(until).strftime("%H:%M %Z")
        raise LinkBusy(
            f"links.{name}: another sync of this link is still running (if it was stopped "
            f"mid-run, it counts as over at {ends})",
            until,
        )
    recorder = RunRecorder()
    heartbeat = asyncio.create_task(_heartbeat(store, run_id, clock, recorder))
    try:
        await report_deaths(store, alerts, name)  # no end of theirs can tell them
        # Removals held by an earlier run may have been found by a full read only.
        full = full or confirm_removals
        failures: dict[str, WatchbridgeError] = {}
        plans, calls = await plan_link(
            config,
            store,
            name,
            clock,
            full=full,
            direction=direction,
            progress=Both(recorder, progress),
            narrowing=narrowing,
            metrics=metrics,
            failures=failures,
            dry_run=dry_run,
        )
        if alerts is not None:  # a side that answered as another account started over
            await send_account_alerts(store, alerts)
            read = [plan.profile for plan in plans]
            await report_sign_ins_read(store, alerts, config.links[name].services, read)
            if read:
                await report_servers_read(store, alerts, config.links[name].services)
            await report_lists_read(config, store, alerts, config.links[name].services, clock)
            if "plex" in config.links[name].services:
                await report_stopped(store, alerts, read)
        unread = tuple(naming_profile(profile, exc.message) for profile, exc in failures.items())
        causes = tuple(cause_of(exc, profile, config) for profile, exc in failures.items())
        link = with_direction(config.links[name], name, direction)
        if shown is not None:
            await _as_shown(
                config,
                store,
                name,
                link,
                plans,
                (calls, run_id),
                shown,
                (unread, causes),
                clock,
                alerts,
                metrics,
            )
        # A profile's first run may wait for a review (with no kinds: whole); the link's
        # other profiles go on. The first sync of a kind taken into the link's kinds since
        # waits alone (with its kinds): the profile's other kinds go on.
        reviewing = {} if dry_run else awaiting_review(link, plans, yes)
        whole = {profile for profile, kinds in reviewing.items() if not kinds}
        lists_failed: tuple[str, ...] = ()  # the list parts of profiles waiting for a review
        # So for a watchlist or collection (a first run's, or taken in since): a first run's
        # profile waits whole, another only for those kinds.
        lists_waiting: dict[str, frozenset[str]] = {}
        first = [p for p in plans if p.new_lists and p.profile not in whole]
        if first and not dry_run and narrowing is None and reviews(link, yes) and wants_lists(link):
            recorder.doing("reading watchlists")
            listing, lists_failed = await _lists_to_review(
                config, store, name, link, first, confirm_removals, clock, alerts, metrics
            )
            firsts = {p.profile for p in first if p.first_run}
            whole |= {profile for profile in listing if profile in firsts}
            lists_waiting = {p: kinds for p, kinds in listing.items() if p not in firsts}
        waiting = {profile: frozenset[str]() for profile in whole}
        for profile, kinds in [*reviewing.items(), *lists_waiting.items()]:
            if profile not in whole:
                waiting[profile] = waiting.get(profile, frozenset()) | kinds
        held_unread = any(  # not read, or waiting whole for a review: not applied either way
            [
                await asyncio.to_thread(is_holding, store, name, profile)
                for profile in {*failures, *whole}
            ]
        )
        applying = [waiting_alone(p, waiting.get(p.profile, frozenset())) for p in plans]
        applying = [p for p in applying if p.profile not in whole]

        async def lists() -> ListsRun:
            if narrowing is not None or not wants_lists(link):
                return ListsRun()
            listings = {p.profile: p.listings for p in applying}
            return await run_lists(
                config,
                store,
                name,
                link,
                listings,
                dry_run=dry_run,
                confirm_removals=confirm_removals,
                clock=clock,
                alerts=alerts,
                metrics=metrics,
                kinds={p: frozenset(link.kinds) - kinds for p, kinds in lists_waiting.items()},
            )

        if dry_run:
            listed = await lists()
            counts = await asyncio.to_thread(plan_counts, plans, confirm_removals)
            counts = counted_with(counts, list_counts(listed))
            await asyncio.to_thread(store.finish_run, run_id, clock(), "dry-run", counts, calls)
            return RunResult(plans, calls, lists=listed, errors=unread, causes=causes)
        queued, skipped, held = 0, 0, []
        for result in applying:
            recorder.doing("writing", result.profile)  # queueing the plan's writes
            applied = await asyncio.to_thread(
                apply_plan, store, link, name, result, confirm_removals, clock()
            )
            queued += applied.queued
            skipped += applied.skipped
            if applied.held:
                held.append(for_link(f"{result.profile}: {applied.held}", name))
        if narrowing is None and wants_lists(link):
            recorder.doing("writing watchlists")
        listed = await lists()
        if narrowing is None:
            # A run one way only (`--direction`) leaves a new kind's other way to review.
            both_ways = not frozen_sides(config.links[name], link)
            for result in applying:
                ran = lists_ran(listed, result.profile) if both_ways else frozenset()
                await asyncio.to_thread(
                    note_lists_synced, store, name, config.links[name], result.profile, ran, clock()
                )
        held += [for_link(why, name) for why in listed.held]  # a scheduled run alerts too
        if waiting:
            everyone = not applying and not unread
            partly = any(waiting.values())
            message = review_message(name, waiting, everyone, bool(unread), partly)
            why = [p.restarted for p in plans if p.profile in whole and p.restarted]
            message = "; ".join([*why, message])
            # A profile that failed beside the review is a failure all the same (counted), as
            # is the watchlist or collection part of one waiting (it could not be planned).
            failed = (*unread, *lists_failed)
            counts = await asyncio.to_thread(plan_counts, applying, confirm_removals)
            counts = counted_with(counts, list_counts(listed))
            await asyncio.to_thread(
                store.finish_run,
                run_id,
                clock(),
                "failed" if failed else "needs-review",
                counts,
                calls,
                "; ".join([message, *failed]),
            )
            causes = (*causes, *(None for _ in lists_failed))  # none known: the link tells
            raise NeedsReview(message, tuple(held), failed, held_unread, waiting, causes)
        outcome = RunResult(
            plans, calls, queued, tuple(held), skipped, listed, unread, held_unread, causes
        )
        # What failed, and what waits for the user (held removals, with the command).
        error = "; ".join([*outcome.failures, *held]) or None
        counts = await asyncio.to_thread(plan_counts, plans, confirm_removals)
        counts = counted_with(counts, list_counts(listed))
        await asyncio.to_thread(
            store.finish_run, run_id, clock(), outcome.outcome, counts, calls, error
        )
        return outcome
    except (NeedsReview, PlanChanged):
        raise  # recorded above, with what the other profiles queued
    except Waits as exc:  # not begun, for what an alert of its own tells: no failure
        await to_the_end(in_thread(store.finish_run, run_id, clock(), WAITED, {}, 0, exc.message))
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        # A shutdown (a restart, an update) or Ctrl-C: nothing failed; the next run goes on.
        await _interrupted(store, run_id, clock)
        raise
    except Exception as exc:
        error = exc.message if isinstance(exc, WatchbridgeError) else type(exc).__name__
        await to_the_end(in_thread(store.finish_run, run_id, clock(), "failed", {}, 0, error))
        raise
    except BaseException as exc:  # the coroutine closed unfinished (GeneratorExit): no await
        store.finish_run(run_id, clock(), "failed", {}, 0, type(exc).__name__)
        raise
    finally:
        heartbeat.cancel()


async def _as_shown(
    config: Config,
    store: Store,
    name: str,
    link: Link,
    plans: list[ProfilePlan],
    run: tuple[int, int],
    shown: str,
    failed: tuple[tuple[str, ...], tuple[Cause | None, ...]],
    clock: Callable[[], float],
    alerts: Alerts | None,
    metrics: Metrics | None,
) -> None:
    """Raise `PlanChanged` (the run recorded as a dry run) unless `plans`, with their
    watchlist and collection parts planned dry as a dry run plans them, are the plan whose
    token is `shown`; `run`: the run's API requests so far, and its id; `failed`: the
    profiles that could not be read ("profile: why"), and their causes."""
    unread, causes = failed
    calls, run_id = run
    listed = ListsRun()
    if wants_lists(link):
        listed = await run_lists(
            config,
            store,
            name,
            link,
            {p.profile: p.listings for p in plans},
            dry_run=True,
            clock=clock,
            alerts=alerts,
            metrics=metrics,
        )
    # On a thread: the token goes over every play of the plan, and the loop answers webhooks.
    if await asyncio.to_thread(plan_token, plans, listed) == shown:
        return
    counts = await asyncio.to_thread(plan_counts, plans)
    counts = counted_with(counts, list_counts(listed))
    await asyncio.to_thread(store.finish_run, run_id, clock(), "dry-run", counts, calls)
    # The new plan names the profiles not read: left out silently, they would seem to have
    # nothing to sync.
    result = RunResult(plans, calls, lists=listed, errors=unread, causes=causes)
    if unread:
        raise PlanChanged(f"links.{name}: {NOT_READ_AGAIN}", result)
    # Every profile read, none waiting for a review: the first sync shown was applied since
    # (a press of the plan shown waits for none: `apply_reviewed`), not the sides changed.
    if not reviewed(plans):
        raise PlanChanged(f"links.{name}: {APPLIED_MEANWHILE}", result)
    raise PlanChanged(
        f"links.{name}: the sides changed since the plan shown was read: nothing was written; "
        "review the new plan",
        result,
    )


async def _started(store: Store, name: str, clock: Callable[[], float]) -> int | None:
    """`store.start_run`; a shutdown landing while it writes closes the record it made as
    interrupted (left running, the next start would count a killed run)."""
    starting = in_thread(store.start_run, name, clock())
    try:
        return await asyncio.shield(starting)
    except asyncio.CancelledError:
        made = await to_the_end(starting)
        if made is not None:
            await _interrupted(store, made, clock)
        raise


async def _interrupted(store: Store, run_id: int, clock: Callable[[], float]) -> None:
    """Record run `run_id` as stopped by a shutdown (or Ctrl-C), the run being cancelled: the
    write waits for the database in a thread (another process may hold it for seconds), not
    on the event loop. One that fails leaves the run to count as killed once its lease ends."""
    try:
        await to_the_end(
            in_thread(store.finish_run, run_id, clock(), "interrupted", {}, 0, STOPPED)
        )
    except sqlite3.Error as exc:
        log.warning(
            "the stopped sync run could not be recorded as stopped",
            extra={"run": run_id, "error": str(exc)},
        )


FAILURES_BEFORE_ALERT = 3
# A run that did not begin for something outside the link (errors.Waits: the anime mapping
# lists not downloaded yet), told by that thing's own alert.
WAITED = "waiting"
# Runs that say nothing of whether the link works: passed over when failures are counted.
_NOT_COUNTED = ("running", "interrupted", "dry-run", "needs-review", WAITED)
MAX_RUNS_READ = 3072  # a failure streak is counted this far back at most (a run history's
# worth at the default half-hour interval: runs are pruned after a month)


def failures_in_a_row(runs: Sequence[SyncRun]) -> int:
    """How many of a link's latest runs (newest first) failed in a row (a run whose watchlist
    or collection failed counts). Pure."""
    return len(_failed_in_a_row(runs)[0])


def _failed_in_a_row(runs: Sequence[SyncRun]) -> tuple[list[SyncRun], bool]:
    """The latest runs (newest first) that failed in a row, and whether a run that went
    through ends them within `runs`. Pure."""
    failed: list[SyncRun] = []
    for run in runs:
        if run.outcome in _NOT_COUNTED:
            continue
        # A held run went through (its error says what waits for the user).
        if run.outcome == "held" or (run.outcome != "failed" and not run.error):
            return failed, True
        failed.append(run)
    return failed, False


async def _failure_streak(store: Store, name: str) -> tuple[int, float | None]:
    """The link's failed runs in a row and when the first of them began: read further back
    while every run read failed (up to MAX_RUNS_READ runs, or as far as runs are kept)."""
    limit = 4 * FAILURES_BEFORE_ALERT
    while True:
        runs = await asyncio.to_thread(store.recent_runs, name, limit)
        failed, ended = _failed_in_a_row(runs)
        if ended or len(runs) < limit or limit >= MAX_RUNS_READ:
            return len(failed), failed[-1].started_at if failed else None
        limit *= 4


async def report_run(
    store: Store,
    alerts: Alerts,
    name: str,
    error: str | None,
    causes: Sequence[Cause | None] = (),
) -> int:
    """After a run of link `name` (`error`: why it failed; None: it went through): alert once
    the run history shows FAILURES_BEFORE_ALERT failures in a row, across restarts and for
    `watchbridge sync` runs from cron alike; resolve that alert when a run goes through.
    Not while every failed part's root cause (`causes`, one each) has an alert of its own
    open (a revoked sign-in, a service down): one cause reaches the phone once, not once more
    per link; the failures count all the same, and the link tells once that alert is over
    (or a part fails for something else); a person's sign-in refused raises its alert at
    once (`Cause.raises`). Returns the failures in a row."""
    if error is None:
        await alerts.resolve("sync_failing", f"link {name} syncs again", key=name)
        return 0
    try:
        failures, since = await _failure_streak(store, name)
    except sqlite3.Error:  # the database may be what failed: counted once it answers
        failures, since = 0, None
    failures = max(1, failures)
    # A person's sign-in refused is told at once, by whoever meets it first: this run, or a
    # held delivery (the same alert; reported again, it is a throttled reminder); a media
    # server down once the link alerts, as the one alert of every link reading it.
    began = "" if since is None else f" since {local_time(since)}"
    streak = f"({failures} runs of link {name} in a row failed{began})"
    await raise_own(alerts, causes, streak if failures >= FAILURES_BEFORE_ALERT else None)
    answered = {cause.answered for cause in causes if cause is not None and cause.answered}
    for server in sorted(answered):  # refusing its key: not down
        await server_answers(store, alerts, server, refusing=True)
    if failures >= FAILURES_BEFORE_ALERT and not told_elsewhere(causes, alerts.raised):
        # Why first: a phone shows the first line or so, and the reason carries the fix.
        await alerts.notify(
            "sync_failing",
            f"watchbridge: link {name} keeps failing",
            f"{error}\n({failures} runs in a row failed{began})",
            key=name,
        )
    return failures


async def raise_own(
    alerts: Alerts, causes: Sequence[Cause | None], streak: str | None = None
) -> None:
    """Raise the alerts of their own that `causes` raise when a run meets them first
    (`Cause.raises`): the same condition as the others meeting them raise, so reported
    again it is a throttled reminder, not a second alert. Those raised only once the link
    alerts (`Cause.when_failing`) are, with the link's `streak` (None: not yet)."""
    raising: dict[tuple[str, str], tuple[str, str]] = {}
    for cause in causes:
        if cause is None or cause.raises is None or (cause.when_failing and streak is None):
            continue
        alert = cause.raises
        body = f"{alert.body}\n{streak}" if cause.when_failing else alert.body
        raising[(alert.kind, alert.key)] = (alert.title, body)
    for (kind, key), (title, body) in sorted(raising.items(), key=lambda item: item[0][1]):
        await alerts.notify(kind, title, body, key=key)


async def report_waiting(alerts: Alerts, exc: Waits) -> None:
    """After a run of a link that waited (`exc`): raise the alert of what it waits for (the
    anime mapping lists' while their downloads fail), as a failed run's cause would be; the
    link's own alert is neither raised nor resolved (a wait says nothing of the link)."""
    await raise_own(alerts, causes_of(exc))


async def report_sign_ins_read(
    store: Store, alerts: Alerts, services: Sequence[str], profiles: Collection[str]
) -> None:
    """The sign-ins of `profiles` to `services` that a run just read with: an alert that one
    was refused (raised by a link or a delivery) is over, unless deliveries of that profile
    still wait for a sign-in (those end it as they go through). Without this, no one would end
    the alert a link raised for a service no play is delivered to meanwhile."""
    for profile in profiles:
        for service in services:
            key = f"{service}:{profile}"
            if not alerts.raised("credentials", key):
                continue
            if await asyncio.to_thread(store.waits_for_sign_in, service, profile):
                continue
            await alerts.resolve("credentials", sign_in_works(service, profile), key=key)


async def report_servers_read(store: Store, alerts: Alerts, services: Sequence[str]) -> None:
    """A run read the media servers among `services`: an outage alert of one that a link
    raised (`causes.server_unreachable`) is over, unless deliveries to it still wait (they
    end it as they go through). Without this, nothing would end it while no play goes there."""
    for server in services:
        if server not in MEDIA_SERVERS:
            continue
        await server_answers(store, alerts, server)
        key = f"server:{server}"  # its own key works: the alert of its refusal is over
        if not alerts.raised("credentials", key):
            continue
        if await asyncio.to_thread(store.waiting_for_server, server):
            continue  # their deliveries and lookups end it as they go through
        await alerts.resolve("credentials", server_key_works(server), key=key)


async def server_answers(
    store: Store, alerts: Alerts, server: str, *, refusing: bool = False
) -> None:
    """Media server `server` answered a link's read (`refusing`: only to refuse its own key):
    an outage alert of it is over, unless deliveries to it still wait (they end it as they go
    through, or as it answers them)."""
    key = outage_key(server)
    if not alerts.raised("service_unreachable", key):
        return
    if await asyncio.to_thread(store.waits_to_go, server):
        return
    name = service_title(server)
    over = (
        f"{name} answers again, but refuses watchbridge's {server_credential(server)[1]}:"
        " that is told in its own alert."
        if refusing
        else f"{name} answers again: the links read and write it as before."
    )
    await alerts.resolve("service_unreachable", over, key=key)


async def report_lists_read(
    config: Config,
    store: Store,
    alerts: Alerts,
    services: Sequence[str],
    clock: Callable[[], float],
) -> None:
    """After a run of a link with AniList got through its reads, the anime mapping lists
    gave it a mapping: their alert (not downloaded yet, or could not be read) is over once
    the hourly check's rule says so. Without this, a household with no play for AniList
    heard "Resolved" only at the hourly check. Their out-of-date alert stays that check's."""
    if "anilist" not in services or not alerts.raised("service_unreachable", MISSING_KEY):
        return
    data = anime_data.from_config(config, store=store)
    if lists_alert(await asyncio.to_thread(data.lists_state, clock())) is None:
        await alerts.resolve("service_unreachable", LISTS_READ, key=MISSING_KEY)


def unforeseen_failure(exc: BaseException) -> str:
    """What a run that failed on an error watchbridge did not foresee (a bug) tells, in its
    alert and log line: that it is a bug, where its traceback is, what to do. The error's text
    stays in the log's traceback: it may quote whatever the bug met (a body, a row)."""
    return (
        f"an unexpected error in watchbridge ({type(exc).__name__}), a bug: the log's `sync run"
        " failed` line has its traceback; please report it. The link tries again at each run"
    )


async def report_deaths(store: Store, alerts: Alerts | None, name: str) -> None:
    """When the run before this one (just begun) was killed before its end: say so in the
    log, and alert as `report_run` does once FAILURES_BEFORE_ALERT failed in a row."""
    runs = await asyncio.to_thread(store.recent_runs, name, 4 * FAILURES_BEFORE_ALERT)
    if len(runs) < 2 or runs[1].outcome != "failed" or runs[1].error != DIED:
        return
    log.warning(
        "the last sync run was killed before its end",
        extra={"link": name, "failures": failures_in_a_row(runs), "reason": DIED},
    )
    if alerts is not None:
        await report_run(store, alerts, name, DIED)


async def report_held(alerts: Alerts, name: str, held: Sequence[str], resolve: bool = True) -> None:
    """Alert about the removals a run holds for confirmation (every profile's in one alert:
    one key, so a second would be throttled away), or resolve that alert once none are held
    (confirmed, or the plays are back): only after a run that planned both ways every profile
    that held some (`resolve`): one that could not read it knows nothing of its removals."""
    key = f"{name}:removals"
    if held:
        title = f"watchbridge: link {name} holds removals"
        await alerts.notify("sync_failing", title, held_alert_text(name, held), key=key)
    elif resolve:
        await alerts.resolve("sync_failing", f"link {name} holds no removals any more", key=key)


def held_alert_text(name: str, held: Sequence[str]) -> str:
    """The text of link `name`'s alert of removals it holds (`held`): what it means and what to
    do first, as a phone shows the first lines, then each one held."""
    lead = (
        f"Link {name} holds back removals it would copy from one side to the other: so many at"
        " once may mean a side only reads empty. Nothing is removed until you confirm. If you"
        f" removed them yourself, run `watchbridge sync --link {name} --confirm-removals`; if"
        " not, there is nothing to do: they stay, and this ends by itself once that side reads"
        " them again."
    )
    return "\n\n".join([lead, "\n".join([*held, BEFORE_CONFIRMING])])


def review_alert_text(
    name: str, services: Sequence[str], waiting: Mapping[str, frozenset[str]], message: str
) -> str:
    """The text of link `name`'s alert that `waiting` profiles wait for a review (each with
    the kinds that wait, none: all of it; `message`: what the run said of it,
    `review_message`'s): what is not copied meanwhile and the commands first, then why."""
    between = " and ".join(service_title(service) for service in services)
    groups: dict[frozenset[str], list[str]] = {}
    for profile in sorted(waiting):
        groups.setdefault(waiting[profile], []).append(profile)
    said = []
    for kinds, profiles in sorted(groups.items(), key=lambda group: sorted(group[0])):
        whom = f"profile{'s' if len(profiles) > 1 else ''} {' and '.join(profiles)}"
        what = f"no {' and '.join(sorted(kinds))}" if kinds else "nothing"
        said.append(f"copies {what} between {between} for {whom}")
    rest = " (the rest goes on syncing)" if any(waiting.values()) else ""
    lead = (
        f"Link {name} {', and '.join(said)} until you review what it would write{rest}: see it"
        f" with `watchbridge sync --link {name} --dry-run`, then run"
        f" `watchbridge sync --link {name} --yes`."
    )
    why = message[:1].upper() + message[1:]
    return f"{lead}\n\n{why}{'' if why.endswith('.') else '.'}"


def counted_with(counts: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """A run record's counts with `more` added (its watchlist and collection parts'). Pure."""
    summed = dict(counts)
    for key, value in more.items():
        summed[key] = summed.get(key, 0) + value
    return summed


def reviews(link: Link, yes: bool) -> bool:
    """Whether a run of `link` waits for a review of what its first sync would write."""
    return link.first_run == "dry-run" and not yes


async def _lists_to_review(
    config: Config,
    store: Store,
    name: str,
    link: Link,
    plans: Sequence[ProfilePlan],
    confirm_removals: bool,
    clock: Callable[[], float],
    alerts: Alerts | None,
    metrics: Metrics | None,
) -> tuple[dict[str, frozenset[str]], tuple[str, ...]]:
    """The profiles of `plans` whose watchlist or collection kinds not past their first sync
    (`ProfilePlan.new_lists`) would write, planned dry, each alone, with those kinds: they
    wait for the review as a first run's plays do. So do those whose part could not be
    planned (its errors are returned): nothing of a first sync is written before the user saw
    it all."""
    waiting: dict[str, frozenset[str]] = {}
    errors: list[str] = []
    for first in plans:
        looked = await run_lists(
            config,
            store,
            name,
            link,
            {first.profile: first.listings},
            dry_run=True,
            confirm_removals=confirm_removals,
            clock=clock,
            alerts=alerts,
            metrics=metrics,
            kinds={first.profile: first.new_lists},
        )
        writing = lists_writing(looked)
        if writing or looked.errors:
            waiting[first.profile] = first.new_lists if looked.errors else writing
            errors += looked.errors
    return waiting, tuple(errors)


def awaiting_review(
    link: Link, plans: Sequence[ProfilePlan], yes: bool
) -> dict[str, frozenset[str]]:
    """Profiles whose first run would write, or take plays days apart for one viewing (a
    decision about their history all the same), on a link whose `first_run` is `dry-run`;
    likewise the first sync of a kind taken into the link's `kinds` since its last run. Each
    with the kinds new to it (none: its first run)."""
    if not reviews(link, yes):
        return {}
    return {p.profile: to_review(p.plan, p.new_kinds) for p in plans if _to_review(p)}


def _to_review(result: ProfilePlan) -> bool:
    if result.first_run:
        return bool(result.plan.actions or result.plan.same_viewing)
    return bool(to_review(result.plan, result.new_kinds))


def dry_run_waits(link: Link, result: RunResult) -> bool:
    """Whether what a dry run of `link` planned waits for a review, as a run without `--yes`
    would find (`awaiting_review`; a watchlist or collection new to a profile that would
    write): that run writes none of it. Pure."""
    if not reviews(link, False):
        return False
    if awaiting_review(link, result.plans, False):
        return True
    for profile in result.plans:
        mine = tuple(r for r in result.lists.results if r.profile == profile.profile)
        if profile.new_lists & lists_writing(replace(result.lists, results=mine)):
            return True
    return False


def to_review(made: Plan, new_kinds: frozenset[str]) -> frozenset[str]:
    """The kinds of `new_kinds` (taken into the link's kinds since) whose first sync `made`
    would write, or (history) take plays days apart for one viewing in: a decision about
    them all the same. Pure."""
    kinds = {KIND_OF_ACTION[a.kind] for a in made.actions}
    kinds |= {"history"} if made.same_viewing else set()
    return frozenset(kinds) & new_kinds


def waiting_alone(result: ProfilePlan, kinds: frozenset[str]) -> ProfilePlan:
    """`result` as a run applies it while `kinds`, new to the link, wait for the review of
    their first sync: planned without those of them the plan plans (`ProfilePlan.settled`),
    and those not counted as synced, so the next run plans their first sync again. Pure."""
    waiting = kinds & PLANNED_KINDS
    if not waiting or result.settled is None:
        return result
    engine = dict(result.cursors.get(ENGINE, {}))
    synced = frozenset(engine.get(SYNCED_KINDS, "").split(",")) - {""} - waiting
    engine[SYNCED_KINDS] = ",".join(sorted(synced))
    return replace(result, plan=result.settled, cursors={**result.cursors, ENGINE: engine})


def review_wait(waiting: Mapping[str, frozenset[str]]) -> str:
    """What a link's run waits for, in short (the log line): a first run's review, the review
    of the first sync of kinds newly taken into the link's `kinds`, or both."""
    new_kinds = sorted(set().union(*waiting.values()))
    reviews = ["a first-run review"] if any(not kinds for kinds in waiting.values()) else []
    if new_kinds:
        reviews.append(
            f"a review of the first sync of {' and '.join(new_kinds)}, new in the link's kinds"
        )
    return " and ".join(reviews) or "a review"


def review_message(
    name: str,
    profiles: Mapping[str, frozenset[str]],
    everyone: bool,
    others_fail: bool = False,
    partly: bool = False,
) -> str:
    """What the profiles waiting for a review wait for (each with the kinds new to it; none:
    its first run), and the commands; `everyone`: all the link's profiles wait; `partly`:
    some wait for those kinds only, their others syncing meanwhile."""
    groups: dict[frozenset[str], list[str]] = {}
    for profile in sorted(profiles):
        groups.setdefault(profiles[profile], []).append(profile)
    leads = []
    for kinds, whom in sorted(groups.items(), key=lambda group: sorted(group[0])):
        whose = "" if everyone and len(groups) == 1 else f" for {', '.join(whom)}"
        if not kinds:
            leads.append(f"the first sync of links.{name}{whose}")
            continue
        its = " and ".join(sorted(kinds))
        them = "them" if len(kinds) > 1 else "it"
        leads.append(f"the first sync of {its} since links.{name}.kinds took {them} in{whose}")
    others = (
        ""
        if everyone or others_fail
        else "; the rest of the link syncs as usual meanwhile"
        if partly
        else "; the link's other profiles sync as usual meanwhile"
    )
    return (
        f"this is {'; and '.join(leads)}: review the plan "
        f"(`watchbridge sync --link {name} --dry-run`), then run "
        f"{review_command(name)} (or set links.{name}.first_run: apply){others}"
    )


def waits_for_review(run: SyncRun) -> bool:
    """Whether a link's last run that went any way (`Store.last_decided_runs`) waits for the
    review of a first sync (also beside a profile that failed)."""
    if run.outcome == "needs-review":
        return True
    return run.outcome == "failed" and review_command(run.link) in (run.error or "")


async def _heartbeat(
    store: Store, run_id: int, clock: Callable[[], float], recorder: RunRecorder | None = None
) -> None:
    """Keep the run's lease while it works (a first backfill can take an hour of reads), and
    record how far it has got (`recorder`) in the same write: the status shows it. A stamp
    that fails (the database locked by another process, a full disk) is tried again at the
    next beat: were the loop to end, a second run could start beside this one."""
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY)
        now = clock()
        progress = recorder.snapshot(now) if recorder is not None else None
        try:
            await asyncio.to_thread(store.heartbeat_run, run_id, now, progress)
        except sqlite3.Error as exc:
            log.warning("could not renew the sync run's lease", extra={"error": str(exc)})
