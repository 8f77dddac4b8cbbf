"""Delivering outbox rows to Serializd: dated diary entries, episode ticks and ratings.

Serializd keeps a play in two separate systems (reference §6): a dated diary entry
(`show/reviews/add`, NOT idempotent) and the episode tick (`episode_log/add`, idempotent).
Exactly-once rules: every entry we create is written to a ledger (the `serializd/plays` and
`serializd/ratings` mirrors) before anything else happens, and the ledger is checked before any
add. The ledger also remembers whether the tick went through, so a failure between the two
steps is finished with a tick only. A row whose add may have landed without us knowing (a
dropped connection, a gateway error, a crash) comes back marked `unknown outcome` and is looked
for in the diary before it is added again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from watchbridge import ratings
from watchbridge.config import DeliveryConfig
from watchbridge.deliver.trakt import nearby_keys, play_key
from watchbridge.deliver.worker import Dead, Delivered, Hold, Outcome, Retry
from watchbridge.http import Unavailable
from watchbridge.model import Ids, MediaRef, ref_from_dict
from watchbridge.services.serializd import (
    DiaryEntry,
    SerializdAuthError,
    SerializdClient,
    SerializdError,
    SerializdItemError,
)
from watchbridge.store import OutboxItem, Store

log = logging.getLogger(__name__)

NAME = "serializd"
PLAYS = "plays"  # ledger: episode key @ minute -> {"review_id", "ticked"} of entries we made
RATINGS = "ratings"  # ledger: item key -> {"rating", "review_id"} of the last rating we sent
SEASONS_CACHE = "serializd-seasons"  # id cache: TMDB show id -> {season number: season id}
SEASONS_TTL = 7 * 86400.0
UNKNOWN_OUTCOME = "unknown outcome"
DIARY_WINDOW = 120.0  # seconds: a diary entry this close to a play is that play
UNMATCHED_RETRY = 3600.0
AUTH_HOLD = 1800.0
TV_ONLY = "Serializd is TV-only; skipped"


@dataclass(frozen=True)
class Place:
    """Where an item lives on Serializd: show, season id, episode (None: a wider scope)."""

    ref: MediaRef  # keyed by the TMDB ids Serializd uses, whatever else the source sent
    show_id: int
    season_id: int | None = None
    episode_number: int | None = None

    def holds(self, entry: DiaryEntry) -> bool:
        return (entry.show_id, entry.season_id, entry.episode_number) == (
            self.show_id,
            self.season_id,
            self.episode_number,
        )


@dataclass
class Ledger:
    """One profile's ledgers for one batch, read once and kept in step with every write."""

    profile: str
    plays: dict[str, Any]
    rated: dict[str, Any]
    diary: list[DiaryEntry] | None = None  # read only when a row's outcome is unknown


class AddUncertain(Exception):
    """A diary add may have landed without the ledger knowing (see `_add`)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SerializdTarget:
    name = NAME
    # Each play costs 2-4 paced requests (~2/s); a small batch keeps one pass short.
    batch_size = 5

    def __init__(
        self,
        client: SerializdClient,
        store: Store,
        config: DeliveryConfig,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.store = store
        self.config = config
        self.clock = clock

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        by_profile: dict[str, list[OutboxItem]] = defaultdict(list)
        for item in items:
            by_profile[item.profile].append(item)
        for profile, rows in by_profile.items():
            try:
                await self._deliver_profile(profile, rows, outcomes)
            except Exception as exc:
                # Rows already decided keep their outcome (an entry Serializd took stays
                # done); the rest wait for whatever stopped this profile.
                undecided = [r for r in rows if r.id not in outcomes]
                outcomes.update({r.id: self._hold_for(exc) for r in undecided})
        return outcomes

    def _hold_for(self, exc: Exception) -> Outcome:
        if isinstance(exc, SerializdAuthError):
            return Hold(exc.message, AUTH_HOLD, "credentials", target_wide=False)
        if isinstance(exc, Unavailable):  # SerializdUnavailable (bot checkpoint) included
            return Hold(exc.message, exc.retry_after or self.config.retry_after)
        if isinstance(exc, SerializdError):
            return Retry(exc.message)
        log.error("unexpected error delivering to Serializd", exc_info=exc)
        return Retry(f"internal error: {type(exc).__name__}")

    async def _deliver_profile(
        self, profile: str, rows: Sequence[OutboxItem], outcomes: dict[int, Outcome]
    ) -> None:
        ledger = Ledger(
            profile,
            plays=await asyncio.to_thread(self.store.mirror_get, NAME, profile, PLAYS),
            rated=await asyncio.to_thread(self.store.mirror_get, NAME, profile, RATINGS),
        )
        for row in rows:
            try:
                outcomes[row.id] = await self._deliver_row(ledger, row)
            except AddUncertain as exc:
                # The row keeps the `unknown outcome` mark whatever happens next, so the
                # diary is read before this entry is ever sent again.
                cause = exc.cause
                if isinstance(cause, Unavailable) and cause.outcome_unknown:
                    # A dropped connection says nothing about the service: go on.
                    reason = f"{UNKNOWN_OUTCOME}: {cause.message}"
                    outcomes[row.id] = Retry(reason, cause.retry_after)
                    continue
                outcomes[row.id] = _unsure(self._hold_for(cause))
                if isinstance(cause, Unavailable):
                    raise cause from None  # the service answered with errors: hold it

    async def _deliver_row(self, ledger: Ledger, row: OutboxItem) -> Outcome:
        try:
            item = ref_from_dict(row.payload["item"])
            at = float(row.payload["at"])
            rating = int(row.payload["rating"]) if row.action == "rating" else None
        except (KeyError, TypeError, ValueError) as exc:
            return Dead(f"unreadable {row.action} row for Serializd: {exc!r}")
        if row.action not in ("play", "rating"):
            return Dead(f"unknown action {row.action!r} for Serializd")
        if item.kind == "movie":
            return Delivered(TV_ONLY)
        if row.action == "play" and item.kind != "episode":
            return Dead(f"a play of a whole {item.kind} cannot be logged on Serializd")
        try:
            place = await self._place(item)
            if isinstance(place, Retry):
                return place
            if rating is None:
                return await self._play(ledger, row, place, at)
            return await self._rating(ledger, row, place, ratings.to_serializd(rating), at)
        except SerializdItemError as exc:
            # A 400/404 on a write: the show or season is unknown to Serializd, or our cached
            # season map is stale (TMDB renumbers). Both can change, so retry with a fresh
            # map; the worker turns a lasting refusal into a dead letter with an alert.
            await self._forget_seasons(item)
            return Retry(exc.message, after=UNMATCHED_RETRY)
        except (SerializdAuthError, Unavailable, AddUncertain):
            raise
        except SerializdError as exc:
            return Retry(exc.message)

    # ------------------------------------------------------------------ plays

    async def _play(self, ledger: Ledger, row: OutboxItem, place: Place, at: float) -> Outcome:
        key = play_key(place.ref, at)
        known = _near(ledger.plays, place.ref, at)
        if known is None and _is_unsure(row):
            entry = await self._find_in_diary(ledger, place, at, is_log=True)
            if entry is not None:
                known = key, {"review_id": entry.id, "ticked": False}
                await self._record(ledger, PLAYS, {key: known[1]})
        if known is not None:
            found_key, value = known
            if value.get("ticked"):
                return Delivered("already on Serializd")
            await self._tick(ledger.profile, place)
            await self._record(ledger, PLAYS, {found_key: {**value, "ticked": True}})
            return Delivered("ticked; the diary entry was already there")

        rewatch = _watched_before(ledger.plays, place.ref, at)
        review = await self._add(
            ledger, row, place, at, rating=None, rewatch=rewatch, into=(PLAYS, key)
        )
        await self._tick(ledger.profile, place)
        await self._record(ledger, PLAYS, {key: {"review_id": review, "ticked": True}})
        return Delivered("rewatch logged" if rewatch else "logged")

    async def _tick(self, profile: str, place: Place) -> None:
        if place.season_id is not None and place.episode_number is not None:
            await self.client.log_episodes(
                profile, place.show_id, place.season_id, [place.episode_number]
            )

    # ------------------------------------------------------------------ ratings

    async def _rating(
        self, ledger: Ledger, row: OutboxItem, place: Place, value: int, at: float
    ) -> Outcome:
        key = place.ref.key()
        # Keyed by item, not by (item, value): rating 7, then 8, then 7 again must send the
        # last 7, and only a repeat of the rating Serializd shows now is skipped.
        if (ledger.rated.get(key) or {}).get("rating") == value:
            return Delivered("already rated on Serializd")
        if _is_unsure(row):
            entry = await self._find_in_diary(ledger, place, at, is_log=False, rating=value)
            if entry is not None:
                await self._record(ledger, RATINGS, {key: {"rating": value, "review_id": entry.id}})
                return Delivered("already rated on Serializd")
        await self._add(ledger, row, place, at, rating=value, rewatch=False, into=(RATINGS, key))
        return Delivered("rated")

    # ------------------------------------------------------------------ shared steps

    async def _add(
        self,
        ledger: Ledger,
        row: OutboxItem,
        place: Place,
        at: float,
        *,
        rating: int | None,
        rewatch: bool,
        into: tuple[str, str],
    ) -> int | None:
        """Add a diary entry (a play when `rating` is None) and write it to the ledger
        `into` (collection, key) as one step: a failure anywhere in it raises AddUncertain.
        """
        # If we crash before the ledger has this entry, the row comes back marked like this
        # and the diary is read before the entry is sent again.
        await asyncio.to_thread(
            self.store.note, [row.id], f"{UNKNOWN_OUTCOME}: diary entry sent", self.clock()
        )
        try:
            review = await self.client.add_diary_entry(
                ledger.profile,
                place.show_id,
                place.season_id,
                place.episode_number,
                at,
                rating,
                rewatch,
                is_log=rating is None,
            )
        except Unavailable as exc:
            # Past the inline retries: a dropped connection or a gateway error may hide an
            # entry that landed. A 4xx answer (other errors) proves nothing was written.
            raise AddUncertain(exc) from exc
        collection, key = into
        value = {"ticked": False} if rating is None else {"rating": rating}
        try:
            await self._record(ledger, collection, {key: value | {"review_id": review}})
        except Exception as exc:
            raise AddUncertain(exc) from exc  # the entry exists; only the diary can tell
        return review

    async def _record(self, ledger: Ledger, collection: str, values: dict[str, Any]) -> None:
        await asyncio.to_thread(
            self.store.mirror_put, NAME, ledger.profile, collection, values, self.clock()
        )
        (ledger.plays if collection == PLAYS else ledger.rated).update(values)

    async def _find_in_diary(
        self,
        ledger: Ledger,
        place: Place,
        at: float,
        *,
        is_log: bool,
        rating: int | None = None,
    ) -> DiaryEntry | None:
        if ledger.diary is None:
            ledger.diary = await self.client.diary(ledger.profile)
        taken = {
            v.get("review_id") for v in (*ledger.plays.values(), *ledger.rated.values())
        }  # an entry already accounted for is another play of the same episode
        for entry in ledger.diary:
            if (
                place.holds(entry)
                and entry.is_log == is_log
                and abs(entry.watched_at - at) <= DIARY_WINDOW
                and (rating is None or entry.rating == rating)
                and entry.id not in taken
            ):
                return entry
        return None

    async def _place(self, item: MediaRef) -> Place | Retry:
        """The item's Serializd coordinates, or a Retry when they cannot be known yet."""
        tmdb = item.ids.tmdb if item.kind == "show" else item.show_ids.tmdb
        show_id = int(tmdb) if tmdb and tmdb.isdigit() else None
        if show_id is None:
            return Retry(
                f"unmatched: no TMDB show id for {item.describe()} (Serializd needs one)",
                after=UNMATCHED_RETRY,
            )
        if item.kind == "show":
            return Place(MediaRef("show", ids=Ids(tmdb=str(show_id))), show_id)
        if item.kind == "season" and item.season is not None:
            season_id = await self._season_or_retry(show_id, item.season)
            if isinstance(season_id, Retry):
                return season_id
            # Seasons are keyed by their TMDB season id: a season ref has no key of its own.
            return Place(MediaRef("season", ids=Ids(tmdb=str(season_id))), show_id, season_id)
        if item.season is None or item.number is None:
            return Retry(
                f"unmatched: {item.describe()} has no TMDB season and episode number",
                after=UNMATCHED_RETRY,
            )
        season_id = await self._season_or_retry(show_id, item.season)
        if isinstance(season_id, Retry):
            return season_id
        ref = MediaRef(
            "episode", show_ids=Ids(tmdb=str(show_id)), season=item.season, number=item.number
        )
        return Place(ref, show_id, season_id, item.number)

    async def _season_or_retry(self, show_id: int, number: int) -> int | Retry:
        try:
            season_id = await self._season_id(show_id, number)
        except SerializdItemError as exc:
            return Retry(f"unmatched: {exc.message}", after=UNMATCHED_RETRY)
        if season_id is None:
            return Retry(
                f"unmatched: Serializd has no season {number} of show {show_id}",
                after=UNMATCHED_RETRY,
            )
        return season_id

    async def _season_id(self, show_id: int, number: int) -> int | None:
        lookup = str(show_id)
        hit, cached = await asyncio.to_thread(
            self.store.cache_get, SEASONS_CACHE, lookup, self.clock()
        )
        if hit and isinstance(cached, dict) and str(number) in cached:
            return int(cached[str(number)])
        # Not cached, or a season that aired after the map was cached: read it again.
        seasons = await self.client.season_map(show_id)
        await asyncio.to_thread(
            self.store.cache_put,
            SEASONS_CACHE,
            lookup,
            {str(n): season_id for n, season_id in seasons.items()},
            self.clock(),
            SEASONS_TTL,
        )
        return seasons.get(number)

    async def _forget_seasons(self, item: MediaRef) -> None:
        tmdb = item.ids.tmdb if item.kind == "show" else item.show_ids.tmdb
        if tmdb:
            await asyncio.to_thread(
                self.store.cache_put, SEASONS_CACHE, tmdb, None, self.clock(), 0.0
            )


def _is_unsure(row: OutboxItem) -> bool:
    return (row.last_error or "").startswith(UNKNOWN_OUTCOME)


def _unsure(outcome: Outcome) -> Outcome:
    if isinstance(outcome, Hold | Retry):
        return replace(outcome, reason=f"{UNKNOWN_OUTCOME}: {outcome.reason}")
    return outcome


def _near(plays: dict[str, Any], ref: MediaRef, at: float) -> tuple[str, dict[str, Any]] | None:
    """The ledger entry of this play (within the duplicate window), if we made one."""
    for key in nearby_keys(ref, at):
        value = plays.get(key)
        if isinstance(value, dict):
            return key, value
    return None


def _watched_before(plays: dict[str, Any], ref: MediaRef, at: float) -> bool:
    """Whether the ledger holds an earlier play of this episode (this one is a rewatch)."""
    prefix, minute = f"{ref.key()}@", int(at // 60)
    earlier = (key[len(prefix) :] for key in plays if key.startswith(prefix))
    return any(m.isdigit() and int(m) < minute for m in earlier)
