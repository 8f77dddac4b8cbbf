"""The Plex <-> Trakt link's watchlist and collection runs: read both sides, plan, write, record.

Callable units for the scheduler/link runner: each takes the clients, the store and one profile
and returns what it did. Planning is pure (`watchlist.py`, `collection.py`, `limits.py`); this
module only joins it to I/O.

- `sync_watchlist`: two-way (or one-way, `only_to`) through plex.tv discover, titles in no
  library included. A failed or 404 Plex read raises `WatchlistUnavailable` before anything is
  written (a 404 also sends a `service_unreachable` alert: the endpoint moved).
- `sync_collection`: Plex -> Trakt with media details, from PMS listing items; HDR and the
  audio stream's details come from the items' own answers where the listing has no streams
  (`media_details`, fetched in batches, cached by ratingKey and `updatedAt`).
- Both respect Trakt account limits: a full watchlist/collection pauses adding to it for that
  person (one `account_limit` alert with the upgrade URL) until there is room again (the
  account's limit changes, or the list as read holds fewer items than it); everything else
  keeps running.
- Both take the run's `/sync/last_activities` (`activities`) when the caller has it: an
  unchanged collection then costs no request, an unchanged watchlist one Plex list read.

State kept in the store: baselines in the mirror table (`link:{link}` / `watchlist`,
`collection`); cursors under (`trakt`, profile): `limit_pause:{kind}` (a pause),
`watchlist_check:{link}` / `collection_check:{link}` (what the last run saw); discover details
and negative matches in the id cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from watchbridge import limits
from watchbridge.accounts import read_empty_hold, reading_empty
from watchbridge.collection import (
    Collected,
    CollectionMetadata,
    CollectionPlan,
    item_metadata,
    needs_details,
    plan_collection,
    plex_collected,
)
from watchbridge.collection import trakt_collected as trakt_collection_items
from watchbridge.config import Config, Link, Secret
from watchbridge.errors import naming_profile
from watchbridge.http import ServiceError, changed_answer, rows_unread
from watchbridge.ids import TRAKT_ID_NAMES
from watchbridge.ingest.common import integer, iso_time, obj, text
from watchbridge.limits import AccountLimits, Decision, LimitHit, Pause
from watchbridge.metrics import Metrics
from watchbridge.model import Ids, MediaRef, ref_from_dict
from watchbridge.services.plex import PlexAuthError, PlexClient
from watchbridge.services.plextv import (
    DiscoverItem,
    PlexTvAuthError,
    PlexTvClient,
    WatchlistUnavailable,
)
from watchbridge.services.trakt import SERVICE as TRAKT
from watchbridge.services.trakt import CollectionWrite, TraktClient, TraktError
from watchbridge.store import Store
from watchbridge.watchlist import (
    WatchItem,
    WatchlistPlan,
    Written,
    baseline_row,
    kept_rows,
    plan_watchlist,
    relisted_titles,
)

if TYPE_CHECKING:
    from watchbridge.plexserializdlist import PlexSerializdWatchlistResult
    from watchbridge.serializdlist import SerializdWatchlistResult

log = logging.getLogger(__name__)
T = TypeVar("T")

DETAILS_TTL = 30 * 86400.0  # a discover title's external ids hardly ever change
NO_MATCH_TTL = 86400.0  # titles discover does not know yet: ask again tomorrow
ALERT_KIND = "account_limit"
MEDIA = "media"  # mirror ("plex", profile): ratingKey -> {"stamp", "metadata"} from item details
UNREACHABLE = "service_unreachable"
WATCHLIST_ALERT_KEY = "plextv:watchlist"
# Mirror ("trakt", profile): alias -> when a link's run took that title off Trakt's watchlist
# (`taken_off_trakt`). A week covers the other links' runs after it, however far apart.
TAKEN_OFF = "watchlist_taken_off"
TAKEN_OFF_KEPT = 7 * 86400.0


class Alerts(Protocol):
    """What the runs need of `alerts.Notifier`."""

    async def notify(self, kind: str, title: str, body: str, key: str = "") -> str: ...

    async def resolve(self, kind: str, body: str, key: str = "") -> str: ...

    def sends(self, kind: str) -> bool: ...

    def would_send(self, kind: str, key: str = "") -> bool: ...

    def condition_keys(self, kind: str) -> list[str]: ...

    def raised(self, kind: str, key: str = "") -> bool: ...


@dataclass(frozen=True)
class LimitState:
    """Where a limited kind stands for a person after a run."""

    kind: str
    paused: bool
    alert: str | None = None  # sent when a pause started in this run
    resolved: str | None = None  # sent when a pause ended in this run
    not_sent: int = 0  # items left for later because of the limit


@dataclass(frozen=True)
class WatchlistResult:
    profile: str
    plan: WatchlistPlan
    added_to_plex: int = 0
    added_to_trakt: int = 0
    removed_from_plex: int = 0
    removed_from_trakt: int = 0
    unresolved: tuple[str, ...] = ()  # titles the other side could not identify
    limit: LimitState | None = None
    dry_run: bool = False
    requests: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionResult:
    profile: str
    plan: CollectionPlan
    added: int = 0
    updated: int = 0
    removed: int = 0
    unresolved: tuple[str, ...] = ()  # Trakt could not identify (not_found)
    skipped: tuple[str, ...] = ()  # no usable ids in Plex
    limit: LimitState | None = None
    dry_run: bool = False
    requests: dict[str, int] = field(default_factory=dict)


def plextv_client(
    config: Config,
    store: Store,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
) -> PlexTvClient | None:
    """The plex.tv/discover client for the config (None without `services.plex`).

    Each profile's plex.tv token: the one `watchbridge auth plex` stored, else
    `accounts.plex.token` (a plex.tv token works; a token for the server gets a 401 that says
    to sign in); a profile with `accounts.plex: {}` is the owner and falls back to
    `services.plex.token`. The client identifier is the install's one (shared with the server
    adapter): plex.tv binds tokens to it.
    """
    from watchbridge.readers.plex import owner_problem

    plex = config.services.plex
    if plex is None:
        return None
    tokens: dict[str, Secret] = {}
    owners: set[str] = set()
    for name, person in config.profiles.items():
        account = person.accounts.plex
        if account is not None and account.token:
            tokens[name] = account.token
        elif (
            account is not None
            and plex.token
            and not store.get_token("plex", name)
            and owner_problem(config, store, name) is None
        ):
            tokens[name] = plex.token
            owners.add(name)
    identifier = store.setting("plex_client_identifier", lambda: uuid.uuid4().hex, clock())
    return PlexTvClient(
        plex,
        store,
        client_identifier=identifier,
        account_tokens=tokens,
        owners=owners,
        metrics=metrics,
        clock=clock,
    )


# --------------------------------------------------------------------------- in a link run

LIST_KINDS = ("watchlist", "collection")
Listings = Mapping[str, Sequence[Mapping[str, Any]]]  # raw PMS listings by kind


@dataclass(frozen=True)
class ListsRun:
    """What a link run's watchlist and collection parts did, per person (the Serializd
    watchlist of a trakt-serializd link: `serializdlist.py`; of a plex-serializd link:
    `plexserializdlist.py`)."""

    results: tuple[
        WatchlistResult
        | CollectionResult
        | SerializdWatchlistResult
        | PlexSerializdWatchlistResult,
        ...,
    ] = ()
    # "profile: what went wrong" (or the error as it is, when it names the profile already);
    # nothing was written for those.
    errors: tuple[str, ...] = ()
    # "profile: collection: why" (or watchlist) of removals an earlier run held, for profiles
    # whose list this run did not plan (no listing read, or that part failed): still held.
    still_held: tuple[str, ...] = ()

    @property
    def held(self) -> tuple[str, ...]:
        """`profile: list: why` of the watchlists and collections whose removals the guard
        held back."""
        held = []
        for result in self.results:
            plan = result.plan
            if isinstance(plan, WatchlistPlan) and plan.held:
                held.append(f"{result.profile}: watchlist: {plan.held}")
            elif isinstance(plan, CollectionPlan) and plan.held_reason:
                held.append(f"{result.profile}: collection: {plan.held_reason}")
        return (*held, *self.still_held)


# How many titles `lists_summary` names per list and side: a removal the user approves in a
# first sync's review must be seen (they are few: the guard holds many); adds, a sample.
REMOVALS_NAMED = 20
ADDS_NAMED = 10


def lists_summary(run: ListsRun) -> list[str]:
    """Per person and list, a line of counts, then the titles it removes and adds (the first
    `REMOVALS_NAMED` and `ADDS_NAMED`, by name), for `watchbridge sync` and the status page's
    review."""
    lines = []
    for result in run.results:
        plan = result.plan
        if isinstance(result, WatchlistResult):
            assert isinstance(plan, WatchlistPlan)
            added = f"+{len(plan.add_to_plex)} to plex, +{len(plan.add_to_trakt)} to trakt"
            removed = f"-{len(plan.remove_from_plex)} from plex, -{len(plan.remove_from_trakt)}"
            counts = f"{added}, {removed} from trakt"
            held = f" (held: {plan.held})" if plan.held else ""
            lines.append(f"watchlist {result.profile}: {counts}{held}")
        elif isinstance(result, CollectionResult):
            assert isinstance(plan, CollectionPlan)
            held = f" (held: {plan.held_reason})" if plan.held_reason else ""
            lines.append(
                f"collection {result.profile}: +{len(plan.add)} to trakt, "
                f"{len(plan.update)} with better details, -{len(plan.remove)} from trakt, "
                f"{plan.unchanged} unchanged{held}"
            )
        else:  # a trakt-serializd or plex-serializd link's watchlist
            lines += result.summary()
        lines += _titles_written(plan)
        if result.limit is not None and result.limit.paused:
            lines.append(f"  paused at the Trakt account's limit: {result.limit.not_sent} wait")
        for title in result.unresolved:
            lines.append(f"  not identified: {title}")
    return lines


def _titles_written(plan: WatchlistPlan | CollectionPlan) -> list[str]:
    """The titles `plan` removes (`- from trakt: Heat (1995)`), then those it adds (`+ to
    plex: ...`), by name within each side, as many as `lists_summary` names."""
    if isinstance(plan, WatchlistPlan):
        removes = [(plan.peer, plan.remove_from_peer), (plan.other, plan.remove_from_other)]
        adds = [(plan.peer, plan.add_to_peer), (plan.other, plan.add_to_other)]
        named = [
            *((f"- from {side}", [i.describe() for i in items]) for side, items in removes),
            *((f"+ to {side}", [i.describe() for i in items]) for side, items in adds),
        ]
    else:
        named = [
            ("- from trakt", [c.ref.describe() for c in plan.remove]),
            ("+ to trakt", [c.ref.describe() for c in plan.add]),
        ]
    lines = []
    for what, titles in named:
        limit = REMOVALS_NAMED if what.startswith("-") else ADDS_NAMED
        titles = sorted(titles, key=lambda title: (title.casefold(), title))
        lines += [f"  {what}: {title}" for title in titles[:limit]]
        if len(titles) > limit:
            lines.append(f"  ... and {len(titles) - limit} more {what[2:]}")
    return lines


def list_counts(run: ListsRun, profile: str | None = None) -> dict[str, int]:
    """What a run's record counts of its watchlist and collection parts (of `profile` alone,
    when given): the writes each planned (or, dry, would make) per target and kind, in the
    keys `queuewords.change` says. Pure."""
    counts: dict[str, int] = {}

    def count(key: str, items: Sequence[object]) -> None:
        if items:
            counts[key] = counts.get(key, 0) + len(items)

    for result in run.results:
        if profile is not None and result.profile != profile:
            continue
        plan = result.plan
        if isinstance(plan, WatchlistPlan):
            count(f"{plan.peer}:watchlist_add", plan.add_to_peer)
            count(f"{plan.other}:watchlist_add", plan.add_to_other)
            count(f"{plan.peer}:watchlist_remove", plan.remove_from_peer)
            count(f"{plan.other}:watchlist_remove", plan.remove_from_other)
        else:
            count(f"{TRAKT}:collection_add", plan.add)
            count(f"{TRAKT}:collection_update", plan.update)
            count(f"{TRAKT}:collection_remove", plan.remove)
    return counts


# The links with a watchlist part and no collection part (Serializd's is shows only).
WATCHLIST_ONLY = (frozenset({"trakt", "serializd"}), frozenset({"plex", "serializd"}))


def wants_lists(link: Link) -> bool:
    """Whether a link run has watchlist or collection parts: plex-trakt links (both kinds),
    trakt-serializd and plex-serializd links (the watchlist)."""
    if frozenset(link.services) in WATCHLIST_ONLY:
        return "watchlist" in link.kinds
    return set(link.services) == {"plex", "trakt"} and any(k in link.kinds for k in LIST_KINDS)


def list_kinds(link: Link) -> frozenset[str]:
    """The watchlist and collection kinds whose parts a run of `link` runs (the collection not
    on a link one way into Plex: nothing goes into its library). Pure."""
    kinds = frozenset(link.kinds)
    if frozenset(link.services) in WATCHLIST_ONLY:
        return kinds & {"watchlist"}
    if set(link.services) != {"plex", "trakt"}:
        return frozenset()
    into_plex = link.direction == "one-way" and link.services[1] == "plex"
    return kinds & frozenset(LIST_KINDS) - ({"collection"} if into_plex else set())


def lists_ran(run: ListsRun, profile: str) -> frozenset[str]:
    """The list kinds whose part `run` planned (or, dry, would plan) for `profile`. Pure."""
    return frozenset(_kind(r) for r in run.results if r.profile == profile)


def lists_writing(run: ListsRun) -> frozenset[str]:
    """The list kinds whose part `run` planned writes in (or, dry, would). Pure."""
    return frozenset(_kind(r) for r in run.results if list_counts(ListsRun((r,))))


def _kind(
    result: WatchlistResult
    | CollectionResult
    | SerializdWatchlistResult
    | PlexSerializdWatchlistResult,
) -> str:
    return "collection" if isinstance(result, CollectionResult) else "watchlist"


async def run_lists(
    config: Config,
    store: Store,
    name: str,
    link: Link,
    listings: Mapping[str, Listings | None],
    *,
    dry_run: bool = False,
    confirm_removals: bool = False,
    clock: Callable[[], float] = time.time,
    alerts: Alerts | None = None,
    metrics: Metrics | None = None,
    kinds: Mapping[str, Collection[str]] | None = None,
) -> ListsRun:
    """The watchlist and collection parts of one run of a plex-trakt link, for each profile in
    `listings`. The collection is planned from the listings the Plex reader took for the
    history (None: Plex was not read this run, so there is nothing new to collect).
    A trakt-serializd link's watchlist part runs in `serializdlist.run_serializd_lists`, a
    plex-serializd link's in `plexserializdlist.run_plex_serializd_lists`.
    `kinds`: per profile, the list kinds to run (the others wait for the review of their first
    sync); a profile not in it runs all of the link's."""
    from watchbridge.readers.plex import ServerTokens, plex_client
    from watchbridge.wiring import seeded_trakt_tokens

    def part(profile: str) -> frozenset[str]:
        wanted = link.kinds if kinds is None or profile not in kinds else kinds[profile]
        return frozenset(wanted) & frozenset(link.kinds)

    services = set(link.services)
    if services in ({"trakt", "serializd"}, {"plex", "serializd"}):
        from watchbridge.plexserializdlist import run_plex_serializd_lists
        from watchbridge.serializdlist import run_serializd_lists

        run = run_serializd_lists if "trakt" in services else run_plex_serializd_lists
        return await run(
            config,
            store,
            name,
            link,
            [profile for profile in listings if "watchlist" in part(profile)],
            dry_run=dry_run,
            confirm_removals=confirm_removals,
            clock=clock,
            alerts=alerts,
            metrics=metrics,
        )
    assert config.services.trakt is not None
    trakt = TraktClient(
        config.services.trakt,
        store,
        metrics=metrics,
        clock=clock,
        seeded_refresh_tokens=seeded_trakt_tokens(config),
    )
    only_to: Literal["plex", "trakt"] | None = None
    if link.direction == "one-way":
        only_to = "plex" if link.services[1] == "plex" else "trakt"
    plextv = plextv_client(config, store, metrics=metrics, clock=clock)
    collecting = (
        "collection" in link.kinds
        and only_to != "plex"
        and any(rows is not None for rows in listings.values())
    )
    plex = plex_client(config, store, clock, metrics) if collecting else None
    tokens = ServerTokens(config, store, plex, clock, plextv) if plex is not None else None
    results: list[WatchlistResult | CollectionResult] = []
    errors: list[str] = []

    async def attempt(profile: str, part: Awaitable[WatchlistResult | CollectionResult]) -> None:
        try:
            results.append(await part)
        # Nothing of that part was written (a service down included: the rest goes on).
        except ServiceError as exc:
            errors.append(naming_profile(profile, exc.message))

    async def collect(profile: str, rows: Listings) -> CollectionResult:
        assert plex is not None and tokens is not None
        # Item details are the same for everyone: the server token reads them all.
        token = None if plex.token else await tokens.token(profile)
        items = [*rows.get("movie", ()), *rows.get("episode", ())]
        try:
            details = await media_details(plex, store, profile, items, token, clock())
        except PlexAuthError as refused:
            # The server's own token, read for everyone, is kept service-wide, not as theirs.
            raise await tokens.refused(profile, token, refused) from None
        return await sync_collection(
            trakt,
            store,
            profile,
            movies=rows.get("movie", ()),
            episodes=rows.get("episode", ()),
            shows=rows.get("show", ()),
            details=details,
            link=name,
            remove_missing=link.collection_removals,
            max_removal_share=link.max_removal_share,
            confirm_removals=confirm_removals,
            clock=clock,
            dry_run=dry_run,
            alerts=alerts,
            activities=activities,
            hold=lists_hold(store, name, link, profile, confirm_removals),
        )

    try:
        for profile, rows in listings.items():
            wanted = part(profile)
            if not wanted & frozenset(LIST_KINDS):
                continue
            try:
                activities = await trakt.last_activities(profile)
            except ServiceError as exc:
                errors.append(naming_profile(profile, exc.message))
                continue
            if "watchlist" in wanted and plextv is not None:
                watchlist = sync_watchlist(
                    plextv,
                    trakt,
                    store,
                    profile,
                    link=name,
                    clock=clock,
                    dry_run=dry_run,
                    confirm_removals=confirm_removals,
                    max_removal_share=link.max_removal_share,
                    only_to=only_to,
                    alerts=alerts,
                    activities=activities,
                    hold=lists_hold(store, name, link, profile, confirm_removals),
                    unchecked=unchecked_sides(store, name, link, profile, confirm_removals),
                )
                await attempt(profile, watchlist)
            if collecting and rows is not None and "collection" in wanted:
                await attempt(profile, collect(profile, rows))
    finally:
        await trakt.aclose()
        if plextv is not None:
            await plextv.aclose()
        if plex is not None:
            await plex.aclose()
    planned = {r.profile for r in results if isinstance(r, CollectionResult)}
    removing = "collection" in link.kinds and only_to != "plex" and link.collection_removals
    watched = {r.profile for r in results if isinstance(r, WatchlistResult)}
    watching = "watchlist" in link.kinds and plextv is not None
    still_held = [
        *lists_still_held(store, name, "watchlist", set(listings) - watched, watching, clock()),
        *lists_still_held(store, name, "collection", set(listings) - planned, removing, clock()),
    ]
    return ListsRun(tuple(results), tuple(errors), tuple(sorted(still_held)))


# --------------------------------------------------------------------------- pure helpers


def plex_watch_items(items: Iterable[DiscoverItem]) -> list[WatchItem]:
    return [
        WatchItem(
            kind="movie" if i.kind == "movie" else "show",
            ids=i.ids,
            title=i.title,
            year=i.year,
            plex_key=i.rating_key,
            listed_at=i.watchlisted_at,
        )
        for i in items
    ]


_WATCHLIST_TYPES = ("movie", "show", "season", "episode")


def trakt_watchlist_problem(row: Mapping[str, Any]) -> str | None:
    """What watchbridge cannot read in one row of Trakt's watchlist, or None. Trakt sends
    every row with its `type`, and a movie or show with its ids: such a row left out, or
    known by its title, would read as gone from the watchlist, and be removed on the other
    side."""
    kind = text(row.get("type"))
    if kind not in _WATCHLIST_TYPES:
        return "no `type` watchbridge knows"
    if kind not in ("movie", "show"):
        return None  # not read: seasons and episodes have no counterpart
    media = row.get(kind)
    if not isinstance(media, Mapping):
        return f"no `{kind}`"
    ids = media.get("ids")
    if not isinstance(ids, Mapping) or not any(text(ids.get(n)) for n in TRAKT_ID_NAMES):
        return f"a `{kind}` without ids"
    return None


def trakt_watch_items(rows: Sequence[Mapping[str, Any]]) -> list[WatchItem]:
    """Trakt watchlist rows: movies and shows (seasons and episodes have no Plex counterpart).
    TraktError when a row cannot be read (`trakt_watchlist_problem`): the read fails, as
    Serializd's does, and nothing is synced from it until it reads again."""
    if said := rows_unread(rows, trakt_watchlist_problem):
        raise TraktError(TRAKT, changed_answer("Trakt", f"the watchlist: {said}"))
    found = []
    for row in rows:
        kind = text(row.get("type"))
        if kind not in ("movie", "show"):
            continue
        media = obj(row.get(kind))
        raw = obj(media.get("ids"))
        ids = Ids(
            trakt=text(raw.get("trakt")),
            imdb=text(raw.get("imdb")),
            tmdb=text(raw.get("tmdb")),
            tvdb=text(raw.get("tvdb")) if kind == "show" else None,
            slug=text(raw.get("slug")),
        )
        found.append(
            WatchItem(
                kind="movie" if kind == "movie" else "show",
                ids=ids,
                title=text(media.get("title")),
                year=integer(media.get("year")),
                listed_at=_trakt_listed_at(row),
            )
        )
    return found


def _trakt_listed_at(row: Mapping[str, Any]) -> float | None:
    """When a Trakt watchlist row was listed; None when missing or unreadable. No decision
    reads it (the adds that fit on Trakt's list are chosen by the other side's dates), so a
    date in another form fails no read."""
    return iso_time(row.get("listed_at"))


def watch_ref(item: WatchItem) -> MediaRef:
    return MediaRef(item.kind, ids=item.ids, title=item.title, year=item.year)


# --------------------------------------------------------------------------- limits state


def _pause_cursor(kind: str) -> str:
    return f"limit_pause:{kind}"


def load_pause(store: Store, profile: str, kind: str) -> Pause | None:
    raw = store.get_cursor("trakt", profile, _pause_cursor(kind))
    return Pause.from_dict(json.loads(raw)) if raw else None


def save_pause(store: Store, profile: str, kind: str, pause: Pause | None, now: float) -> None:
    value = json.dumps(pause.to_dict()) if pause is not None else ""
    store.set_cursor("trakt", profile, _pause_cursor(kind), value, now)


@dataclass(frozen=True)
class Room(Generic[T]):
    """What of a run's additions to one of Trakt's lists fits the account's limit for it."""

    kind: str  # "watchlist" or "collection"
    profile: str
    items: list[T]  # what fits, to send
    decision: Decision
    settings: AccountLimits | None
    count: int  # the list once the run's removals are made
    not_sent: int  # additions the limit leaves for a later run
    retried: Pause | None = None  # the pause this run tries again, for the room read

    def after_hit(self, hit: LimitHit, not_sent: int, now: float, written: int = 0) -> Room[T]:
        """Trakt refused additions for the limit after all (`written` of them taken before):
        the kind pauses; a pause tried again goes on, its alert already sent."""
        decision = limits.decide(
            self.kind,
            self.profile,
            paused=self.retried,
            limits=self.settings,
            count=self.count + written,
            hit=hit,
            now=now,
        )
        return replace(self, decision=decision, not_sent=not_sent)

    def landed(self, added: int) -> Room[T]:
        """Trakt took the additions (`added`: how many were new to it): a pause tried again
        for the room read, with all that waited fitting, ends with its recovery notice."""
        if self.retried is None or self.decision.action != "retry":
            return self
        resolved = limits.room_text(self.kind, self.profile, added)
        return replace(self, decision=Decision("resume", None, resolved=resolved))

    async def settle(
        self, store: Store, alerts: Alerts | None, now: float, dry_run: bool
    ) -> LimitState:
        """Store the pause state the run leaves, and send its alert or recovery notice once.
        A dry run tells what the run would do: the additions that fit as if taken."""
        room = self.landed(len(self.items)) if dry_run else self
        decision, kind, profile = room.decision, self.kind, self.profile
        if not dry_run:
            save_pause(store, profile, kind, decision.pause, now)
            key = f"trakt:{profile}:{kind}"
            if alerts is not None and decision.alert:
                title = limits.full_title(kind, profile)
                await alerts.notify(ALERT_KIND, title, decision.alert, key)
            if alerts is not None and decision.resolved:
                await alerts.resolve(ALERT_KIND, decision.resolved, key)
            if decision.alert:
                log.warning("trakt limit reached", extra={"profile": profile, "kind": kind})
        return LimitState(
            kind=kind,
            paused=decision.pause is not None,
            alert=decision.alert,
            resolved=decision.resolved,
            not_sent=self.not_sent,
        )


async def room_on_trakt(
    trakt: TraktClient,
    store: Store,
    profile: str,
    kind: str,
    wanted: Sequence[T],
    count: int,
    now: float,
    first: Callable[[T], float] | None = None,
) -> Room[T]:
    """Which of `wanted` fit the account's limit for `kind` (`count`: the list's size once the
    run's removals are made; they happen first and make room). When not all fit, those that
    sort first by `first` go, else the first ones in `wanted`'s order."""
    paused = load_pause(store, profile, kind)
    # The limits matter only with something to add, or to see whether a pause can end.
    needed = bool(wanted) or paused is not None
    settings = await trakt.settings(profile) if needed else None
    decision = limits.decide(
        kind, profile, paused=paused, limits=settings, count=count, wanted=len(wanted), now=now
    )
    retried = paused if decision.action == "retry" else None
    items = list(wanted) if decision.may_write else []
    if decision.capacity is not None and len(items) > decision.capacity:
        items = (sorted(items, key=first) if first else items)[: decision.capacity]
    not_sent = len(wanted) - len(items)
    if decision.may_write and not_sent:  # only part fits: the kind is full once it is in
        full = count + len(items)
        # A pause tried again goes on with its one alert; else this is a pause of its own.
        decision = limits.decide(
            kind, profile, paused=retried, limits=settings, count=full, wanted=not_sent, now=now
        )
    return Room(kind, profile, items, decision, settings, count, not_sent, retried)


# --------------------------------------------------------------------------- watchlist


async def watchlist_room(
    trakt: TraktClient, store: Store, profile: str, plan: WatchlistPlan, listed: int, now: float
) -> Room[WatchItem]:
    """The plan's additions to Trakt's watchlist that fit (`listed`: its size as read); when
    not all do, the longest listed go first."""
    count = listed - len(plan.remove_from_trakt)
    wanted = plan.add_to_trakt
    return await room_on_trakt(
        trakt, store, profile, "watchlist", wanted, count, now, first=lambda i: i.listed_at or 0.0
    )


def baseline_before_writes(
    plan: WatchlistPlan, baseline: Mapping[str, list[str]]
) -> dict[str, Any]:
    """The titles already on both sides; with removals held, also the old rows, so that a
    confirmed run can still do them."""
    new_baseline: dict[str, Any] = {}
    if plan.held:
        forgotten = set(plan.forgotten)
        new_baseline = {k: {"aliases": v} for k, v in baseline.items() if k not in forgotten}
    for peer_item, trakt_item in plan.on_both:
        key, row = baseline_row(peer_item, trakt_item)
        new_baseline[key] = row
    return new_baseline


async def remove_from_trakt_watchlist(
    trakt: TraktClient, store: Store, profile: str, plan: WatchlistPlan, now: float
) -> int:
    """The plan's removals from Trakt's watchlist, in one request: how many Trakt deleted.
    Each is noted as taken off by us (`taken_off_trakt`)."""
    if not plan.remove_from_trakt:
        return 0
    result = await trakt.remove_watchlist(profile, [watch_ref(i) for i in plan.remove_from_trakt])
    noted = {alias: now for item in plan.remove_from_trakt for alias in item.aliases}
    store.mirror_put(TRAKT, profile, TAKEN_OFF, noted, now)
    return result.deleted


def taken_off_trakt(
    store: Store, profile: str, trakt: Sequence[WatchItem], now: float, *, dry_run: bool = False
) -> frozenset[str]:
    """Aliases of the titles a link's run took off Trakt's watchlist (any link of the
    profile's), within TAKEN_OFF_KEPT and not listed there since (`trakt`: the watchlist as
    read now): the other links that carry Trakt's watchlist to a peer weigh their removal
    there no more (`watchlist.plan_watchlist`). Those listed again or older are forgotten
    (not by a dry run, which writes nothing)."""
    noted = store.mirror_get(TRAKT, profile, TAKEN_OFF)
    listed = {alias for item in trakt for alias in item.aliases}
    stale = [
        alias
        for alias, at in noted.items()
        if alias in listed or not isinstance(at, int | float) or at < now - TAKEN_OFF_KEPT
    ]
    if stale and not dry_run:
        store.mirror_remove(TRAKT, profile, TAKEN_OFF, stale)
    return frozenset(noted.keys() - set(stale))


@dataclass(frozen=True)
class TraktAdded:
    """What adding to Trakt's watchlist did: how many titles it took (with their baseline
    rows), those it does not know, and the limit as it stands after."""

    count: int
    baseline: dict[str, Any]
    unknown: list[str]
    room: Room[WatchItem]


async def add_to_trakt_watchlist(
    trakt: TraktClient, plan: WatchlistPlan, room: Room[WatchItem], now: float
) -> TraktAdded:
    """The additions that fit, in one request. A limit Trakt reports holds all of them back."""
    if not room.items:
        return TraktAdded(0, {}, [], room.landed(0))
    refs = [watch_ref(i) for i in room.items]
    written = await trakt.add_watchlist(room.profile, refs)
    if written.limit_hit is not None:
        return TraktAdded(0, {}, [], room.after_hit(written.limit_hit, len(plan.add_to_trakt), now))
    missing = {id(ref) for ref in written.not_found}
    baseline: dict[str, Any] = {}
    unknown: list[str] = []
    for item, ref in zip(room.items, refs, strict=True):
        if id(ref) in missing:
            unknown.append(f"{item.describe()} (Trakt does not know it)")
            continue
        key, row = baseline_row(item)
        baseline[key] = row
    count = len(room.items) - len(unknown)
    return TraktAdded(count, baseline, unknown, room.landed(count))


async def read_plex_watchlist(
    plextv: PlexTvClient, store: Store, profile: str, now: float, alerts: Alerts | None
) -> tuple[list[WatchItem], list[str]]:
    """The Plex watchlist (`_plex_watchlist`), and the names of titles without external ids.
    Raises `WatchlistUnavailable` when it cannot be read; a moved endpoint (404) also sends a
    `service_unreachable` alert, resolved once it answers again."""
    try:
        found = await _plex_watchlist(plextv, store, profile, now)
    except WatchlistUnavailable as exc:
        if exc.moved and alerts is not None:  # a moved endpoint needs a human now
            title = "watchbridge: Plex watchlist not found"
            await alerts.notify(UNREACHABLE, title, exc.message, WATCHLIST_ALERT_KEY)
        raise
    if alerts is not None:
        await alerts.resolve(UNREACHABLE, "the Plex watchlist answers again", WATCHLIST_ALERT_KEY)
    return found


async def _plex_watchlist(
    plextv: PlexTvClient, store: Store, profile: str, now: float
) -> tuple[list[WatchItem], list[str]]:
    """The Plex watchlist; entries without external ids get them from the metadata host."""
    entries = await plextv.watchlist(profile)
    complete: list[DiscoverItem] = []
    for entry in entries:
        if entry.ids:
            complete.append(entry)
            continue
        hit, cached = store.cache_get("plex-discover", entry.rating_key, now)
        if not hit:
            details = await plextv.details(profile, entry.rating_key)
            cached = details.ids.present() if details is not None else None
            # A title discover has no ids for yet (announced, not released) may have some soon.
            ttl = DETAILS_TTL if cached else NO_MATCH_TTL
            store.cache_put("plex-discover", entry.rating_key, cached, now, ttl)
        ids = Ids(**cached) if isinstance(cached, dict) else Ids()
        complete.append(
            DiscoverItem(
                entry.rating_key,
                entry.kind,
                entry.title,
                entry.year,
                entry.guid,
                ids,
                entry.watchlisted_at,
            )
        )
    items = plex_watch_items(complete)
    # Without an external id a title cannot be matched on Trakt: left out of the plan (so
    # never removed anywhere either) and named in the run's summary.
    return [i for i in items if i.ids], [i.describe() for i in items if not i.ids]


async def resolve_on_plex(
    plextv: PlexTvClient, store: Store, profile: str, item: WatchItem, now: float
) -> str | None:
    """The discover ratingKey of a Trakt title (match by external id, negative answers cached)."""
    lookup = f"{item.kind}:{sorted(item.aliases)}"
    hit, cached = store.cache_get("plex-match", lookup, now)
    if hit:
        return str(cached) if cached else None
    found = await plextv.match(profile, item.kind, item.ids)
    key = found.rating_key if found is not None else None
    store.cache_put("plex-match", lookup, key, now, DETAILS_TTL if key else NO_MATCH_TTL)
    return key


async def remove_from_plex_watchlist(
    plextv: PlexTvClient,
    profile: str,
    items: Sequence[WatchItem],
    baseline: Mapping[str, Sequence[str]],
) -> Written:
    """Take each title off Plex's watchlist. One plex.tv refuses, or fails to answer for, keeps
    its baseline rows, so the next run tries again; a sign-in raises."""
    count = 0
    kept: dict[str, Any] = {}
    failed: list[str] = []
    for item in items:
        try:
            if item.plex_key and await plextv.remove_from_watchlist(profile, item.plex_key):
                count += 1
        except PlexTvAuthError:
            raise
        except ServiceError as exc:  # refused, or plex.tv failing: the next run tries again
            failed.append(f"{item.describe()} (not removed from Plex: {exc.message})")
            kept |= kept_rows(baseline, item)
    return Written(count, kept, failed)


async def add_to_plex_watchlist(
    plextv: PlexTvClient, store: Store, profile: str, items: Sequence[WatchItem], now: float
) -> Written:
    """Put each title on Plex's watchlist, found on discover by its ids (`resolve_on_plex`).
    One discover does not know, or plex.tv will not take, is named; a sign-in raises."""
    count = 0
    rows: dict[str, Any] = {}
    failed: list[str] = []
    for item in items:
        rating_key = await resolve_on_plex(plextv, store, profile, item, now)
        if rating_key is None:
            failed.append(f"{item.describe()} (Plex discover does not know it)")
            continue
        try:
            await plextv.add_to_watchlist(profile, rating_key)
        except PlexTvAuthError:
            raise
        except ServiceError as exc:
            failed.append(f"{item.describe()} (not added to Plex: {exc.message})")
            continue
        key, row = baseline_row(item)
        rows[key] = row
        count += 1
    return Written(count, rows, failed)


def _baseline_store(link: str) -> str:
    return f"link:{link}"


def watchlist_baseline(
    store: Store, link: str, profile: str
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The baseline of `link`'s watchlist for `profile`: its rows as stored, and each row's
    aliases by key (as `watchlist.plan_watchlist` weighs them)."""
    stored = store.mirror_get(_baseline_store(link), profile, "watchlist")
    return stored, {key: list(value.get("aliases") or []) for key, value in stored.items()}


def save_watchlist_baseline(
    store: Store, link: str, profile: str, baseline: dict[str, Any], held: str, now: float
) -> None:
    """Record a run of `link`'s watchlist part: the baseline it leaves, and why it held
    removals ("": none)."""
    store.mirror_replace(_baseline_store(link), profile, "watchlist", baseline, now)
    hold_watchlist(store, link, profile, held, now)


async def sync_watchlist(
    plextv: PlexTvClient,
    trakt: TraktClient,
    store: Store,
    profile: str,
    *,
    link: str = "plex-trakt",
    clock: Callable[[], float] = time.time,
    dry_run: bool = False,
    confirm_removals: bool = False,
    max_removal_share: float = 0.10,
    only_to: Literal["plex", "trakt"] | None = None,
    alerts: Alerts | None = None,
    activities: Mapping[str, Any] | None = None,
    hold: str = "",
    unchecked: tuple[str, ...] = (),
) -> WatchlistResult:
    """One watchlist run for one person; see the module docstring. Two-way unless `only_to`
    names the one side to write (a one-way link).

    Raises `WatchlistUnavailable` (Plex) or a `TraktError` when a side cannot be read; nothing
    is written then. Write failures of single titles are reported in `unresolved`.

    `activities`: Trakt's `/sync/last_activities` as the run already read it. With it, a run
    whose Plex watchlist and Trakt watchlist stamps are as the last run left them stops after
    reading the Plex watchlist (Plex has no cheaper change check).

    `hold`: why every removal waits (`lists_hold`), and the titles only on the `unchecked`
    sides (`unchecked_sides`) with them.
    """
    now = clock()
    plex_before, trakt_before = plextv.requests_sent, trakt.http.requests_sent
    plex_items, unidentified = await read_plex_watchlist(plextv, store, profile, now, alerts)
    check_name = list_cursor("watchlist_check", link)
    check = json.dumps([watchlist_fingerprint(plex_items, only_to), watchlist_stamps(activities)])
    if (
        activities is not None
        and not dry_run
        and store.get_cursor("trakt", profile, check_name) == check
    ):
        unchanged = WatchlistPlan(counts={"plex": len(plex_items)})
        requests = {"plextv": plextv.requests_sent - plex_before, "trakt": 0}
        return WatchlistResult(profile, unchanged, requests=requests)
    trakt_rows = await trakt.watchlist(profile)
    trakt_items = trakt_watch_items(trakt_rows)
    stored, baseline = watchlist_baseline(store, link, profile)
    plan = plan_watchlist(
        plex_items,
        trakt_items,
        baseline,
        max_removal_share=max_removal_share,
        confirm_removals=confirm_removals,
        only_to=only_to,
        holding=watchlist_holding(store, link, profile),
        hold=hold,
        unchecked=unchecked,
        relisted=relisted_on_peer(store, link, profile, plex_items, trakt_items, stored),
        taken_off_trakt=taken_off_trakt(store, profile, trakt_items, now, dry_run=dry_run),
    )
    room = await watchlist_room(trakt, store, profile, plan, len(trakt_rows), now)
    if dry_run:
        limit = await room.settle(store, alerts, now, dry_run=True)
        return WatchlistResult(profile, plan, limit=limit, dry_run=True)

    unresolved = [f"{name} (Plex knows no external id for it)" for name in unidentified]
    new_baseline = baseline_before_writes(plan, baseline)
    removed_trakt = await remove_from_trakt_watchlist(trakt, store, profile, plan, now)
    off_plex = await remove_from_plex_watchlist(plextv, profile, plan.remove_from_plex, baseline)
    new_baseline |= off_plex.baseline
    unresolved += off_plex.unresolved

    added = await add_to_trakt_watchlist(trakt, plan, room, now)
    new_baseline |= added.baseline
    unresolved += added.unknown
    added_trakt = added.count

    on_plex = await add_to_plex_watchlist(plextv, store, profile, plan.add_to_plex, now)
    new_baseline |= on_plex.baseline
    unresolved += on_plex.unresolved

    save_watchlist_baseline(store, link, profile, new_baseline, plan.held, now)
    note_watchlist_run(store, link, profile, now)
    if activities is not None:
        wrote = on_plex.count or added_trakt or off_plex.count or removed_trakt
        # Held removals and titles a side could not take are worth a full look next run; so
        # is every run that wrote: stamps read after our writes would hide a change someone
        # else (the user, another link) made meanwhile, for good.
        settled = not wrote and not plan.held and len(unresolved) == len(unidentified)
        store.set_cursor("trakt", profile, check_name, check if settled else "", now)
    limit = await added.room.settle(store, alerts, now, dry_run=False)
    return WatchlistResult(
        profile,
        plan,
        added_to_plex=on_plex.count,
        added_to_trakt=added_trakt,
        removed_from_plex=off_plex.count,
        removed_from_trakt=removed_trakt,
        unresolved=tuple(unresolved),
        limit=limit,
        requests={
            "plextv": plextv.requests_sent - plex_before,
            "trakt": trakt.http.requests_sent - trakt_before,
        },
    )


# --------------------------------------------------------------------------- collection


async def sync_collection(
    trakt: TraktClient,
    store: Store,
    profile: str,
    *,
    movies: Sequence[Mapping[str, Any]],
    episodes: Sequence[Mapping[str, Any]] = (),
    shows: Sequence[Mapping[str, Any]] = (),
    details: Mapping[str, CollectionMetadata | None] | None = None,
    link: str = "plex-trakt",
    remove_missing: bool = False,
    max_removal_share: float = 1.0,
    confirm_removals: bool = False,
    clock: Callable[[], float] = time.time,
    dry_run: bool = False,
    alerts: Alerts | None = None,
    activities: Mapping[str, Any] | None = None,
    hold: str = "",
) -> CollectionResult:
    """Plex -> Trakt collection for one person, from PMS listing items.

    `movies`/`episodes`/`shows`: `Metadata` items of `/library/sections/{key}/all` (types 1, 4
    and 2, `includeGuids=1`) with their `Media` elements; `shows` supply the show ids of
    new-agent episodes. `details`: what `media_details` found for items whose listing has no
    streams. `remove_missing` removes from Trakt what this link once added and the server no
    longer has (never anything added to Trakt some other way), unless they are more than
    `max_removal_share` of the Trakt collection and not `confirm_removals`: those are held.

    `activities`: Trakt's `/sync/last_activities` as the run already read it. With it, a run
    whose Plex items (ids and details) and Trakt stamps (collected, account settings) are as
    the last run left them makes no request at all.

    `hold`: why every removal waits (`lists_hold`).
    """
    now = clock()
    trakt_before = trakt.http.requests_sent
    check_name = list_cursor("collection_check", link)
    fingerprint = collection_fingerprint(movies, episodes, shows, remove_missing, details)
    if activities is not None and not dry_run:
        last = store.get_cursor("trakt", profile, check_name)
        if last == json.dumps([fingerprint, collection_stamps(activities)]):
            # Nothing to parse or plan: the same listings gave nothing to do last time.
            unchanged = CollectionPlan(unchanged=len(movies) + len(episodes))
            return CollectionResult(profile, unchanged, requests={"trakt": 0})
    plex_items, skipped = plex_collected(movies, episodes, shows, details)
    trakt_items = trakt_collection_items(
        await trakt.collection(profile, "movies"),
        await trakt.collection(profile, "shows") if episodes else [],
    )
    stored = store.mirror_get(_baseline_store(link), profile, "collection")
    ours = {a for key, value in stored.items() for a in (key, *(value.get("aliases") or []))}
    share = 1.0 if confirm_removals else max_removal_share
    holding = not confirm_removals and bool(store.get_cursor("trakt", profile, _held_name(link)))
    plan = plan_collection(
        plex_items,
        trakt_items,
        ours,
        remove_missing=remove_missing,
        max_removal_share=share,
        holding=holding,
        hold=hold,
    )
    # The library's order: the oldest in it go first when not all fit.
    room = await room_on_trakt(
        trakt, store, profile, "collection", plan.add, len(trakt_items) - len(plan.remove), now
    )
    if dry_run:
        limit = await room.settle(store, alerts, now, dry_run=True)
        return CollectionResult(profile, plan, skipped=tuple(skipped), limit=limit, dry_run=True)

    removed = 0
    if plan.remove:
        result = await trakt.remove_collection(profile, [c.ref for c in plan.remove])
        removed = result.deleted
    updated = 0
    if plan.update:
        result = await trakt.add_collection(profile, [_write(c) for c in plan.update])
        updated = result.updated + result.added
    added = 0
    unresolved: list[str] = []
    sent: list[Collected] = []
    if room.items:
        result = await trakt.add_collection(profile, [_write(c) for c in room.items])
        added = result.added
        missing = {ref.key() for ref in result.not_found}
        unresolved = [c.ref.describe() for c in room.items if c.ref.key() in missing]
        sent = [c for c in room.items if c.ref.key() not in missing]
        if result.limit_hit is not None:
            written = result.added + result.existing + result.updated
            sent = sent[:written]
            room = room.after_hit(result.limit_hit, len(plan.add) - written, now, written)
    room = room.landed(added)
    # Ours: what Trakt now holds because of this link (kept across runs for removals).
    pending = {c.key for c in plan.add} - {c.key for c in sent}
    baseline = {c.key: {"aliases": sorted(c.aliases)} for c in plan.synced if c.key not in pending}
    # Held removals stay ours, so that a confirmed run can still make them.
    held = {a for entry in plan.held for a in entry.aliases}
    for key, value in stored.items():
        if key not in baseline and {key, *(value.get("aliases") or [])} & held:
            baseline[key] = value
    store.mirror_replace(_baseline_store(link), profile, "collection", baseline, now)
    # Told again by the runs that read no listing, until a run plans the collection anew.
    store.set_cursor("trakt", profile, _held_name(link), plan.held_reason, now)
    if activities is not None:
        # A run that wrote leaves the next one a full look: stamps read after our own writes
        # would hide a change someone else made meanwhile, for good.
        # So does one that held removals: a confirmed run must plan them again.
        wrote = added or updated or removed or sent or plan.held
        check = "" if wrote else json.dumps([fingerprint, collection_stamps(activities)])
        store.set_cursor("trakt", profile, check_name, check, now)
    limit = await room.settle(store, alerts, now, dry_run=False)
    return CollectionResult(
        profile,
        plan,
        added=added,
        updated=updated,
        removed=removed,
        unresolved=tuple(unresolved),
        skipped=tuple(skipped),
        limit=limit,
        requests={"trakt": trakt.http.requests_sent - trakt_before},
    )


class _Closing(Protocol):
    async def aclose(self) -> None: ...


async def watchlists_per_profile(
    store: Store,
    name: str,
    link: Link,
    profiles: Iterable[str],
    sync: Callable[
        [str, str, tuple[str, ...]],
        Awaitable[SerializdWatchlistResult | PlexSerializdWatchlistResult],
    ],
    clients: Sequence[_Closing],
    *,
    confirm_removals: bool,
    clock: Callable[[], float],
) -> ListsRun:
    """A Serializd link's watchlist part: `sync(profile, hold, unchecked)` for each of
    `profiles` (`lists_hold`, `unchecked_sides`), then `clients` closed. A person whose run
    fails is named in `errors` (nothing was written for them if a read failed); the others
    still run."""
    results: list[SerializdWatchlistResult | PlexSerializdWatchlistResult] = []
    errors: list[str] = []
    unplanned: list[str] = []
    try:
        for profile in profiles:
            try:
                result = await sync(
                    profile,
                    lists_hold(store, name, link, profile, confirm_removals),
                    unchecked_sides(store, name, link, profile, confirm_removals),
                )
            except ServiceError as exc:
                errors.append(naming_profile(profile, f"watchlist: {exc.message}"))
                unplanned.append(profile)
                continue
            results.append(result)
    finally:
        for client in clients:
            await client.aclose()
    still_held = lists_still_held(store, name, "watchlist", unplanned, True, clock())
    return ListsRun(tuple(results), tuple(errors), tuple(still_held))


def lists_hold(store: Store, name: str, link: Link, profile: str, confirming: bool) -> str:
    """Why every watchlist and collection removal of `link` for `profile` waits this run,
    however few: a side read empty while its account is not checked yet (the same hold as its
    plays', `accounts.read_empty_hold`); "" when none does, or the run confirms removals."""
    return read_empty_hold(unchecked_sides(store, name, link, profile, confirming))


def unchecked_sides(
    store: Store, name: str, link: Link, profile: str, confirming: bool
) -> tuple[str, ...]:
    """The sides of `link` that read empty for `profile` while their account is not checked
    yet (`lists_hold` says why): their watchlist titles wait with the removals; none when the
    run confirms removals."""
    return () if confirming else tuple(reading_empty(store, name, profile, link.services))


def _held_name(link: str) -> str:
    """The cursor keeping why a link's collection removals are held."""
    return list_cursor("collection_held", link)


def watchlist_holding(store: Store, link: str, profile: str) -> bool:
    """Whether the last run of `link`'s watchlist part held removals for confirmation."""
    return bool(store.get_cursor("trakt", profile, list_cursor("watchlist_held", link)))


def hold_watchlist(store: Store, link: str, profile: str, held: str, now: float) -> None:
    """Remember why this run held watchlist removals ("": it held none)."""
    store.set_cursor("trakt", profile, list_cursor("watchlist_held", link), held, now)


def note_watchlist_run(store: Store, link: str, profile: str, now: float) -> None:
    """Remember when this run of `link`'s watchlist part began (`relisted_on_peer`). Not when
    no play went to Trakt since the last run began: the plays since either are the same (one
    delivered meanwhile was delivered after this run began), and an idle run writes nothing."""
    name = list_cursor("watchlist_run", link)
    last_run = store.get_cursor("trakt", profile, name)
    if last_run and not store.plays_delivered_since(profile, "trakt", float(last_run)):
        return
    store.set_cursor("trakt", profile, name, repr(now), now)


def relisted_on_peer(
    store: Store,
    link: str,
    profile: str,
    peer: Sequence[WatchItem],
    trakt: Sequence[WatchItem],
    stored: Mapping[str, Mapping[str, Any]],
) -> frozenset[str]:
    """The peer's titles that go back on Trakt's watchlist (`watchlist.relisted_titles`),
    judged by the plays delivered to Trakt since the last run of `link`'s watchlist part
    began: any link's or webhook's, as Trakt drops a title for each."""
    last_run = store.get_cursor("trakt", profile, list_cursor("watchlist_run", link))
    if not last_run or not stored:
        return frozenset()
    plays = store.plays_delivered_since(profile, "trakt", float(last_run))
    refs = [(ref_from_dict(item), at) for item, at in plays]
    return relisted_titles(peer, trakt, stored, refs)


def lists_still_held(
    store: Store, link: str, part: str, unplanned: Iterable[str], keeping: bool, now: float
) -> list[str]:
    """ "PROFILE: PART: why" of the removals an earlier run held in `part` ("watchlist",
    "collection"), for the `unplanned` profiles (this run did not plan it: no listing read,
    or that part failed): still held, not over. A link whose removals there stopped
    (`keeping` False: the part or its removals switched off) forgets them."""
    held = []
    name = list_cursor(f"{part}_held", link)
    for profile in sorted(unplanned):
        why = store.get_cursor("trakt", profile, name)
        if why and keeping:
            held.append(f"{profile}: {part}: {why}")
        elif why:
            store.set_cursor("trakt", profile, name, "", now)
    return held


# Cursors a link's watchlist and collection parts keep under the profile's Trakt account.
LIST_CURSORS = (
    "watchlist_check",
    "collection_check",
    "collection_held",
    "watchlist_held",
    "watchlist_run",
    "list_kinds",  # the list kinds past their first sync (`synced_lists`)
)
SYNCED_LISTS = "list_kinds"
# The cursors each list kind's part keeps; an applied run of it sets the first ones at least.
_PART_CURSORS = {
    "watchlist": ("watchlist_held", "watchlist_run", "watchlist_check"),
    "collection": ("collection_held", "collection_check"),
}


def synced_lists(store: Store, link: str, profile: str) -> frozenset[str]:
    """The list kinds of `link` past their first sync for `profile` (applied: reviewed, or
    with nothing to review): a kind not among them has its first sync reviewed as a first
    run's is. A database of a release that kept no such record: the kinds whose part an
    applied run left its cursors of (every one does), as a link that synced its watchlist for
    months is not asked to review it again."""
    recorded = store.get_cursor(TRAKT, profile, list_cursor(SYNCED_LISTS, link))
    if recorded is not None:
        return frozenset(recorded.split(",")) - {""}
    return frozenset(
        kind
        for kind, names in _PART_CURSORS.items()
        if store.get_cursor(TRAKT, profile, list_cursor(names[0], link)) is not None
    )


def note_lists_synced(
    store: Store, name: str, link: Link, profile: str, ran: Collection[str], now: float
) -> None:
    """After an applied run of `link` for `profile`: the list kinds past their first sync are
    those that were and are still in its kinds, and those whose part this run applied (`ran`).
    A kind taken out of its kinds is forgotten with what its part kept: taken in again, its
    old baseline would be stale, and its first sync is reviewed and planned against none, as
    a first run's is."""
    with store.transaction():
        before = synced_lists(store, name, profile)
        kinds = list_kinds(link)
        if not before and not kinds:
            return  # no list part, then or now: nothing to keep
        for kind in before - kinds:
            store.mirror_replace(_baseline_store(name), profile, kind, {}, now)
            for cursor in _PART_CURSORS.get(kind, ()):
                store.forget_cursor(TRAKT, profile, list_cursor(cursor, name))
        synced = before & kinds | frozenset(ran) & kinds
        store.set_cursor(
            TRAKT, profile, list_cursor(SYNCED_LISTS, name), ",".join(sorted(synced)), now
        )


def list_cursor(kind: str, link: str) -> str:
    return f"{kind}:{link}"


def list_cursors(link: str) -> tuple[str, ...]:
    """Every cursor the watchlist and collection parts of `link` keep."""
    return tuple(list_cursor(kind, link) for kind in LIST_CURSORS)


def watchlist_fingerprint(items: Sequence[WatchItem], only_to: str | None) -> str:
    """What the Plex side of a watchlist run depends on: the titles listed."""
    keys = sorted("|".join(sorted(item.aliases)) for item in items)
    return hashlib.sha256(f"{only_to}:{keys}".encode()).hexdigest()


def watchlist_stamps(activities: Mapping[str, Any] | None) -> str:
    """The Trakt stamps a watchlist run depends on (the limits move `account.settings_at`)."""
    if activities is None:
        return ""
    fields = (
        ("watchlist", "updated_at"),
        ("movies", "watchlisted_at"),
        ("shows", "watchlisted_at"),
        ("account", "settings_at"),
    )
    return ",".join(str(obj(activities.get(s)).get(f) or "") for s, f in fields)


# The listing fields `collection.plex_collected` reads: equal projections, equal items.
FINGERPRINT_FIELDS = (
    "type",
    "ratingKey",
    "guid",
    "Guid",
    "grandparentGuid",
    "grandparentRatingKey",
    "parentIndex",
    "index",
    "addedAt",
    "Media",
)


def collection_fingerprint(
    movies: Iterable[Mapping[str, Any]],
    episodes: Iterable[Mapping[str, Any]],
    shows: Iterable[Mapping[str, Any]],
    remove_missing: bool,
    details: Mapping[str, CollectionMetadata | None] | None = None,
) -> str:
    """What the Plex side of a collection run depends on, hashed from the raw listings (far
    cheaper than parsing them; watched state and other per-account fields are left out) and
    the items' details."""
    digest = hashlib.sha256(b"remove" if remove_missing else b"keep")
    for rows in (movies, episodes, shows):
        projected = [[row.get(f) for f in FINGERPRINT_FIELDS] for row in rows]
        digest.update(json.dumps(projected, separators=(",", ":"), default=str).encode())
        digest.update(b"\x00")
    found = sorted((k, m.to_trakt() if m else None) for k, m in (details or {}).items())
    digest.update(json.dumps(found, separators=(",", ":")).encode())
    return digest.hexdigest()


def media_stamp(row: Mapping[str, Any]) -> str:
    """When a listing item's details were last valid: its `updatedAt` and its versions'
    listing (a replaced file has new Media/Part ids)."""
    media = json.dumps(row.get("Media"), sort_keys=True, separators=(",", ":"), default=str)
    return f"{row.get('updatedAt')}:{hashlib.sha256(media.encode()).hexdigest()[:16]}"


async def media_details(
    plex: PlexClient,
    store: Store,
    profile: str,
    rows: Iterable[Mapping[str, Any]],
    token: str | None,
    now: float,
) -> dict[str, CollectionMetadata | None]:
    """Collection details (by ratingKey) of the listing items without streams, from their own
    `/library/metadata` answers in batches. Kept per person by ratingKey and `media_stamp`:
    a run asks only about items new or changed since, and forgets items gone from the
    listing."""
    wanted = {
        key: media_stamp(row)
        for row in rows
        if needs_details(row) and (key := text(row.get("ratingKey")))
    }
    cached = await asyncio.to_thread(store.mirror_get, "plex", profile, MEDIA)
    found: dict[str, CollectionMetadata | None] = {}
    missing: list[str] = []
    for key, stamp in wanted.items():
        entry = cached.get(key)
        if entry is not None and entry.get("stamp") == stamp:
            found[key] = CollectionMetadata.from_trakt(entry.get("metadata"))
        else:
            missing.append(key)
    answers = await plex.details(missing, token) if missing else {}
    fresh: dict[str, Any] = {}
    for key in missing:
        if key in answers:  # else gone since the listing: the listing's Media stand
            found[key] = metadata = item_metadata(answers[key])
            fresh[key] = {
                "stamp": wanted[key],
                "metadata": metadata.to_trakt() if metadata else None,
            }
    gone = [key for key in cached if key not in wanted]
    if fresh:
        await asyncio.to_thread(store.mirror_put, "plex", profile, MEDIA, fresh, now)
    if gone:
        await asyncio.to_thread(store.mirror_remove, "plex", profile, MEDIA, gone)
    return found


def collection_stamps(activities: Mapping[str, Any]) -> str:
    """The Trakt stamps a collection run depends on (the limits move `account.settings_at`)."""
    fields = (("movies", "collected_at"), ("episodes", "collected_at"), ("account", "settings_at"))
    return ",".join(str(obj(activities.get(s)).get(f) or "") for s, f in fields)


def _write(item: Collected) -> CollectionWrite:
    metadata = item.metadata.to_trakt() if item.metadata is not None else {}
    return CollectionWrite(item.ref, metadata, item.added_at)
