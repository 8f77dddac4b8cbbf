"""Delivering outbox rows to Serializd: dated diary entries, episode ticks and ratings.

Serializd keeps a play in two separate systems (reference §6): a dated diary entry
(`show/reviews/add`, NOT idempotent) and the episode tick (`episode_log/add`, idempotent).
Exactly-once rules: every entry we create is written to a ledger (the `serializd/plays` and
`serializd/ratings` mirrors) before anything else happens, and the ledger is checked before any
add. The ledger also remembers whether the tick went through, so a failure between the two
steps is finished with a tick only. A row whose add may have landed without us knowing (a
dropped connection, a gateway error, a crash) comes back marked `unknown outcome` and is looked
for in the diary before it is added again. While diary rows it cannot read (Serializd changed
its answers) may hold what that look must see, the row is held without spending its tries (an
alert if it lasts), looked at again hourly, and goes by itself once the diary reads.
The ledger knows what we wrote, not what the user deleted in the app since: before another
play of ours keeps an episode ticked that a removal would untick, the diary must still list
its entry (`_still_listed`). Nor does it know what the user logged in the app: a webhook's play
of a viewing logged there at the credits is not logged again (`_logged_by_hand`), nor a link's
copy of one logged there since the link read the diary (`_logged_since_read`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchbridge import ratings
from watchbridge.accounts import AccountNotes, user_named
from watchbridge.anime import Unmatched
from watchbridge.catalogue import (
    SEASONS_CACHE,
    absolute_episode,
    file_first,
    season_end,
    season_map,
    tmdb_numbered,
)
from watchbridge.clocksteps import SENT_AT, sent_before
from watchbridge.config import DeliveryConfig
from watchbridge.deliver.diary_listing import (
    Listing,
    Verdict,
    first_missed,
    judged,
    merged,
    noted,
    recorded,
    serves,
)
from watchbridge.deliver.trakt import LOOK_MARGIN, nearby_keys, play_key, readings, still_fresh
from watchbridge.deliver.worker import (
    Dead,
    Delivered,
    Hold,
    Outcome,
    Retry,
    Skipped,
    changed_hold,
    crashed,
    enriched,
    for_the_account,
    per_profile,
    service_hold,
    shows_an_answer,
    unplaced_episode,
    unreadable_row,
    unsure,
)
from watchbridge.http import Unavailable, refused_unread
from watchbridge.ids import SHOW_TMDB, Enricher
from watchbridge.logs import Repeating
from watchbridge.model import Ids, MediaRef, ref_from_dict, ref_to_dict
from watchbridge.playback import HAND_MARK
from watchbridge.reconcile import EXPECTED, MATCH_WINDOW, UNDATED, one_play
from watchbridge.services.serializd import (
    DEFAULT_TAG,
    DiaryEntry,
    DiaryListing,
    DiaryRead,
    SerializdAuthError,
    SerializdClient,
    SerializdError,
    SerializdItemError,
)
from watchbridge.services.serializd import (
    NAME as SERVICE_NAME,
)
from watchbridge.sides import holds_logged_stars
from watchbridge.storagefault import of_the_disk
from watchbridge.store import PLACED, UNKNOWN_OUTCOME, OutboxItem, Store, locked_by_another

log = logging.getLogger(__name__)

NAME = "serializd"
TICKS_UNREADABLE = "serializd season ticks unreadable; the play is logged as a first viewing"
LOOK_UNREADABLE = (
    "serializd diary unreadable for a log made in the app; the play is logged (a log of it "
    "made there stays a second entry)"
)
PLAYS = "plays"  # ledger: episode key @ minute -> {"review_id", "ticked", "duration"?} we made
# (a link's removal leaves {"removed", "deleted": its review id, "removed_at", "at"?,
# "duration"?}, see `_carried_removal`; a deletion in the app, {"removed"})
RATINGS = "ratings"  # ledger: item key -> {"rating", "review_id"} of the last rating we sent
RATED_ROWS = "rated-rows"  # ledger: review id -> item key, of every rating row we added
WHOLE_SECONDS = 1.0  # Serializd's `dateAdded` and Date header are to the second
# Ledger key of a link's copy not logged -> {"review_id"} of the log made since the link read
# the diary that it was found as (`_logged_since_read`): that log stands for no other copy;
# "row": the copy's outbox row, with which housekeeping forgets it (store.ROW_KEPT_ENTRIES).
HAND_LOGS = "hand-logs"
# Review id -> when the first whole read of the diary that did not list that entry of ours
# ended (our clock): a second one begun after it proves the entry gone (`diary_listing`).
FIRST_MISSES = "first-misses"
DIARY_WINDOW = 120.0  # seconds: a diary entry this close to a play is that play
UNMATCHED_RETRY = 3600.0
AUTH_HOLD = 1800.0
TV_ONLY = "Serializd is TV-only; skipped"
TICK_RECORD = "tick:"  # a play the reader made of a ticked episode (readers/serializd.py)
MARK_RECORD = "mark:"  # ... of an episode in a season marked watched
# Seconds a look at the diary's newest entries (`diary_added_since`) serves the batches of a
# drain: a link's removals and ratings each ask what changed since its run read Serializd.
# What the diary was seen to list (`diary_listing`) serves as long.
ADDED_READ_KEEP = 300.0
ALREADY_LOGGED = (
    "already on Serializd: its diary holds a log of this episode within 2 minutes of the play "
)
# A Jellyfin or Emby mark by hand of an episode watched before (playback.hand_mark).
MARKED_WATCHED = (
    "already watched on Serializd: a mark by hand in {server} of an episode Serializd holds as"
    " watched is taken for that viewing (the server caught up, a season marked played), not"
    " logged as a viewing of today"
)
# Whose log it is (`_logged_by`), after ALREADY_LOGGED or SINCE_READ.
BY_HAND = "that watchbridge did not write (logged in the Serializd app, or by another app)"
BY_PROFILE = "logged by profile {profile}, which shares this Serializd account"
BY_ANOTHER = (
    f"tagged {DEFAULT_TAG}, not in this profile's records: logged by watchbridge for another "
    "profile, or by another watchbridge, sharing this Serializd account"
)
LOGGED_THERE = ALREADY_LOGGED + BY_HAND
LOGGED_BY_PROFILE = ALREADY_LOGGED + BY_PROFILE
LOGGED_BY_ANOTHER = ALREADY_LOGGED + BY_ANOTHER
SINCE_READ = (
    "already on Serializd (found logged by hand): a log of this episode was added to its diary "
    f"since the link read it, dated within {MATCH_WINDOW / 3600:.0f} hours of the play (the "
    "link takes the two for one viewing), "
)
LOGGED_SINCE = (
    "not removed: the episode was logged on Serializd since the link read it (a rewatch): "
    "that viewing stands and the episode stays ticked"
)
OURS_KEEP_TICK = (
    "not unticked: a play of the episode that watchbridge logged on Serializd (a diary entry) "
    "keeps it ticked"
)
# A removal waiting for a second whole read of the diary comes back this much later: the read
# that missed an entry serves no longer, and the removals of that drain share the next one.
SECOND_READ_AFTER = ADDED_READ_KEEP
MISSED_ONCE = (
    "one read of the Serializd diary did not list a diary entry watchbridge logged of the "
    "episode; a read can miss an entry that is there (entries deleted or added while it "
    "reads), so the entry counts as deleted only if the next read misses it too: the episode "
    "stays ticked until then"
)
CANNOT_DELETE = (
    "Serializd answered that it has no endpoint for deleting diary entries (reviews/delete "
    "is unconfirmed): delete the entry on serializd.com"
)


def forget_first_misses(store: Store, profile: str, listed: Collection[int]) -> None:
    """Forget the first misses (FIRST_MISSES) of the entries of ours a read saw `listed`: they
    were there after that miss, which is then no half of a proof that they are gone. Every
    read of the diary calls it, the link reader's too (`readers/serializd.py`)."""
    missed = store.mirror_get(NAME, profile, FIRST_MISSES)
    seen = [str(review) for review in sorted(listed) if str(review) in missed]
    if seen:
        store.mirror_remove(NAME, profile, FIRST_MISSES, seen)


@dataclass(frozen=True)
class Place:
    """Where an item lives on Serializd: show, season id, episode (None: a wider scope)."""

    ref: MediaRef  # keyed by the TMDB ids Serializd uses, whatever else the source sent
    show_id: int
    season_id: int | None = None
    episode_number: int | None = None
    season: int | None = None  # a season's number (its ref names its TMDB season id only)

    def holds(self, entry: DiaryEntry) -> bool:
        return (entry.show_id, entry.season_id, entry.episode_number) == (
            self.show_id,
            self.season_id,
            self.episode_number,
        )

    def named(self) -> MediaRef:
        """The item as a link's read keys its diary rows (`sides.diary_key`): an episode, a
        season by its number or the whole show, by the show's TMDB id."""
        if self.ref.kind == "season":
            return MediaRef("season", show_ids=Ids(tmdb=str(self.show_id)), season=self.season)
        return self.ref


@dataclass
class Ledger:
    """The ledger entries of the items one batch touches (loaded per item, never the whole
    ledger: a backfill grows it to every play), kept in step with every write."""

    profile: str
    plays: dict[str, Any] = field(default_factory=dict)
    rated: dict[str, Any] = field(default_factory=dict)
    loaded: set[tuple[str, str]] = field(default_factory=set)  # (collection, key prefix)
    # When each play's record was last written (our clock; by this process or another beside
    # it): a read begun before cannot prove its entry gone (`diary_listing.proven_gone`).
    recorded: dict[str, float] = field(default_factory=dict)
    diary: list[DiaryEntry] | None = None  # read only when a row's outcome is unknown
    unreadable: frozenset[int] = frozenset()  # ids of the diary's rows it could not read


@dataclass(frozen=True)
class Standing:
    """Which of our diary entries (ledger keys) Serializd still lists, and whether any other
    is not proven gone yet (one whole read missed it, or no whole read was made after it)."""

    keys: set[str]
    unproven: bool


class DiaryUnread(Exception):
    """Diary rows watchbridge cannot read (Serializd changed its answers) may hold what a row's
    step must see: the row waits as `hold` says, its tries unspent (`changed_hold`)."""

    def __init__(self, hold: Hold) -> None:
        super().__init__(hold.reason)
        self.hold = hold


class AddUncertain(Exception):
    """A diary add may have landed without the ledger knowing (see `_add`)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class AddRefused(Exception):
    """A diary add refused before it was written (`cause`: a 429, a try the delivery's check
    kept from going, a sign-in refused): its row's outcome is a plain wait (see `_add`)."""

    def __init__(self, cause: Unavailable | SerializdAuthError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True)
class Tick:
    """A play whose diary part is done (or not needed) and whose episode still needs its
    tick: ticks of one season go out together in one `episode_log/add`."""

    place: Place
    key: str  # ledger key of the play
    value: dict[str, Any]  # its ledger value (ticked: false until the tick lands)
    done: str  # the outcome's reason once ticked


class SerializdTarget:
    name = NAME
    # A play costs one diary entry plus its share of one tick per season. A batch holds about
    # a season (rows of one season are queued together) yet keeps one pass near 7 s at 2
    # requests/s: a shutdown waits for the pass under way.
    batch_size = 12

    def __init__(
        self,
        client: SerializdClient,
        store: Store,
        config: DeliveryConfig,
        clock: Callable[[], float],
        enricher: Enricher | None = None,
        accounts: AccountNotes | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.config = config
        self.clock = clock
        self.enricher = enricher  # finds the show's TMDB id webhooks leave out
        self.accounts = accounts
        # A season page broken for weeks fails each webhook play: per profile, a line once,
        # then hourly, and when it reads again.
        self._ticks_log = Repeating(log)
        # So is a diary that cannot be read for a log made in the app (`_logged_by_hand`).
        self._look_log = Repeating(log)
        # Per profile: (since, on our clock; read at) of the last look at the diary's
        # newest entries, and what it found (`_added_since`).
        self._added: dict[str, tuple[float, float, DiaryRead]] = {}
        # Per profile: which diary entries the reads of the run saw listed (`_listed`), and
        # how many entries we have added (a read one was added during proves nothing gone).
        self._listings: dict[str, Listing] = {}
        self._adds: Counter[str] = Counter()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.enricher is not None:
            await self.enricher.aclose()

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]:
        outcomes = await per_profile(items, self._deliver_profile, self._hold_for, self.store)
        # Delivered on a pasted token that ends soon: the worker tells of it (and does not
        # take the delivery for a sign-in renewed).
        profiles = {i.profile for i in items}
        ending = {p: why for p in profiles if (why := self.client.sign_in_ending(p))}
        for item in items:
            outcome = outcomes.get(item.id)
            if shows_an_answer(outcome) and item.profile in ending:
                outcomes[item.id] = replace(outcome, sign_in_ending=ending[item.profile])
        return outcomes

    def _hold_for(self, exc: Exception, profile: str = "") -> Outcome:
        if isinstance(exc, SerializdAuthError):  # a refused password: until it is tried again
            wait = exc.retry_after or AUTH_HOLD
            return Hold(exc.message, wait, "credentials", target_wide=False, sign_in=True)
        if isinstance(exc, Unavailable):  # SerializdUnavailable (bot checkpoint) included
            return service_hold(exc, self.config.retry_after)
        if isinstance(exc, SerializdError):
            return Retry(exc.message)
        log.error("unexpected error delivering to Serializd", exc_info=exc)
        return crashed("serializd", exc)

    async def _deliver_profile(
        self, profile: str, rows: Sequence[OutboxItem], outcomes: dict[int, Outcome]
    ) -> None:
        async def whose() -> str:
            return user_named(await self.client.username(profile))

        rows = await for_the_account(self.accounts, NAME, profile, whose, rows, outcomes)
        ledger = Ledger(profile)
        ticks: dict[tuple[int, int], list[tuple[OutboxItem, Tick]]] = defaultdict(list)
        # A failure that stops the batch leaves the plays waiting for their tick undecided:
        # held with the rest, they come back and (their diary entry in the ledger) only tick.
        await self._deliver_rows(ledger, rows, outcomes, ticks)
        await self._send_ticks(ledger, ticks, outcomes)

    async def _deliver_rows(
        self,
        ledger: Ledger,
        rows: Sequence[OutboxItem],
        outcomes: dict[int, Outcome],
        ticks: dict[tuple[int, int], list[tuple[OutboxItem, Tick]]],
    ) -> None:
        for row in rows:
            try:
                outcome = await self._deliver_row(ledger, row)
                if isinstance(outcome, Tick):
                    season = outcome.place.season_id
                    ticks[(outcome.place.show_id, season or 0)].append((row, outcome))
                else:
                    outcomes[row.id] = outcome
            except AddUncertain as exc:
                # The row keeps the `unknown outcome` mark whatever happens next, so the
                # diary is read before this entry is ever sent again.
                cause = exc.cause
                if of_the_disk(cause):
                    raise cause from None  # the disk's fault, not a bug: see per_profile
                if (
                    isinstance(cause, Unavailable)
                    and cause.outcome_unknown
                    and not cause.answered
                    and cause.retry_after is None
                ):
                    # A dropped connection says nothing about the service: go on.
                    reason = f"{UNKNOWN_OUTCOME}: {cause.message}"
                    outcomes[row.id] = Retry(reason, cause.retry_after, service_failed=True)
                    continue
                outcomes[row.id] = unsure(self._hold_for(cause))
                if isinstance(cause, Unavailable):
                    self._rest_wait(rows, outcomes, cause)
                    raise cause from None
            except AddRefused as exc:
                # Nothing went: the row waits unmarked (unless claimed marked), also when the
                # database stayed locked past the note taking `_add`'s mark back. The batch's
                # record of this outcome takes it back then (per_profile's would keep it).
                cause = exc.cause
                if of_the_disk(cause):
                    raise cause from None  # the disk's fault, not a bug: see per_profile
                outcomes[row.id] = self._hold_for(cause)
                if isinstance(cause, Unavailable):
                    self._rest_wait(rows, outcomes, cause)
                raise cause from None
            except Unavailable as exc:  # this row's own outcome: per_profile's (its marks)
                self._rest_wait([other for other in rows if other is not row], outcomes, exc)
                raise

    def _rest_wait(
        self, rows: Sequence[OutboxItem], outcomes: dict[int, Outcome], exc: Unavailable
    ) -> None:
        """The service answered one row's request with errors: it is held. Only that row's
        request failed (a poison row spends its own tries): the rows not sent wait without
        spending."""
        waits = replace(service_hold(exc, self.config.retry_after), spends=False)
        for other in rows:
            if other.id not in outcomes:
                outcomes[other.id] = unsure(waits) if other.may_have_landed else waits

    async def _send_ticks(
        self,
        ledger: Ledger,
        ticks: dict[tuple[int, int], list[tuple[OutboxItem, Tick]]],
        outcomes: dict[int, Outcome],
    ) -> None:
        """One `episode_log/add` per season for every play of the batch waiting for its tick.
        A failure leaves those plays `ticked: false` in the ledger: a retry only ticks."""
        for (show_id, season_id), waiting in ticks.items():
            numbers = [t.place.episode_number for _, t in waiting]
            try:
                await self.client.log_episodes(
                    ledger.profile, show_id, season_id, [n for n in numbers if n is not None]
                )
            except SerializdItemError as exc:
                await self._forget_seasons(waiting[0][1].place.ref)
                outcomes.update({row.id: Retry(exc.message, UNMATCHED_RETRY) for row, _ in waiting})
                continue
            except (SerializdAuthError, Unavailable):
                raise
            except SerializdError as exc:
                outcomes.update({row.id: Retry(exc.message) for row, _ in waiting})
                continue
            await self._record(
                ledger, PLAYS, {t.key: {**t.value, "ticked": True} for _, t in waiting}
            )
            outcomes.update({row.id: Delivered(t.done) for row, t in waiting})

    async def _deliver_row(self, ledger: Ledger, row: OutboxItem) -> Outcome | Tick:
        try:
            item = ref_from_dict(row.payload["item"])
            at = float(row.payload["at"])
            rating = int(row.payload["rating"]) if row.action == "rating" else None
        except (KeyError, TypeError, ValueError) as exc:
            return unreadable_row(row, "Serializd", exc)
        if row.action == "watching":  # queued by versions that sent live state to every target
            return Skipped("Serializd logs finished episodes only")
        if row.action not in ("play", "rating", "remove_play", "remove_rating"):
            return Dead(f"unknown action {row.action!r} for Serializd")
        if item.kind == "movie":
            return Skipped(TV_ONLY)
        if row.action in ("play", "remove_play") and item.kind != "episode":
            return Dead(f"a play of a whole {item.kind} cannot be logged on Serializd")
        item, unplaced = await unplaced_episode(self.enricher, row, item, self.clock())
        if unplaced is not None:
            return unplaced
        item, waiting = await enriched(
            self.enricher,
            item,
            SHOW_TMDB,
            row.payload.get("source"),
            credentials_hold=AUTH_HOLD,
            unmatched_retry=UNMATCHED_RETRY,
            why="Serializd keys shows by TMDB id",
            from_server=row.payload.get("server"),
        )
        if waiting is not None:
            return waiting
        try:
            if item.kind == "episode" and "link" not in row.payload:
                first = file_first(item, row.payload)
                item = await tmdb_numbered(
                    self.client, self.store, self.enricher, item, self.clock, first
                )
            # A removal goes by the numbers it was sent with: it finds what was written so.
            place = await self._place(item, row.action in ("play", "rating"))
            if isinstance(place, Retry):
                return place
            if row.action == "remove_play":
                return await self._remove_play(ledger, row, place)
            if row.action == "remove_rating":
                return await self._remove_rating(ledger, row, place)
            if rating is None:
                return await self._play(ledger, row, place, at)
            return await self._rating(ledger, row, place, ratings.to_serializd(rating), at)
        except SerializdItemError as exc:
            # A 400/404 on a write: the show or season is unknown to Serializd, or our cached
            # season map is stale (TMDB renumbers). Both can change, so retry with a fresh
            # map; the worker turns a lasting refusal into a dead letter with an alert.
            await self._forget_seasons(item)
            return Retry(exc.message, after=UNMATCHED_RETRY)
        except DiaryUnread as exc:
            return exc.hold
        except (SerializdAuthError, Unavailable, AddUncertain, AddRefused):
            raise
        except SerializdError as exc:
            return Retry(exc.message)

    # ------------------------------------------------------------------ plays

    async def _play(
        self, ledger: Ledger, row: OutboxItem, place: Place, at: float
    ) -> Outcome | Tick:
        key = play_key(place.ref, at)
        await self._load(ledger, PLAYS, f"{place.ref.key()}@")
        known = _near(ledger.plays, place.ref, at)
        if known is None and row.may_have_landed:
            entry = await self._find_in_diary(ledger, place, _sent(row.payload, at), is_log=True)
            if entry is not None:
                known = key, _played(row) | {"review_id": entry.id}
                await self._record(ledger, PLAYS, {key: known[1]})
        if known is not None and known[1].get("removed"):
            known = None  # we deleted that entry: this is a new viewing
        if known is not None:
            found_key, value = known
            if value.get("ticked"):
                return Delivered("already on Serializd", written=False)
            return Tick(place, found_key, value, "ticked; the diary entry was already there")
        if at == UNDATED:
            # Watched, date unknown (e.g. a Trakt play without a date): the tick says exactly
            # that; a diary entry would need a date we do not have.
            return Tick(place, key, {"review_id": None, "ticked": False}, "ticked (no date)")
        # A link's copy was planned on a read of both sides: only a log made since is news.
        if "link" in row.payload:
            there = await self._logged_since_read(ledger, row, place, key, at)
            lead = SINCE_READ
        else:
            there = await self._logged_by_hand(ledger, row, place, at)
            lead = ALREADY_LOGGED
        if there is not None:
            reason = await self._logged_by(ledger.profile, place, there, lead)
            log.info(
                "a play not logged on Serializd: the diary holds a log of it",
                extra={
                    "profile": row.profile,
                    "item": place.ref.describe(),
                    "row": row.id,
                    "reason": reason,
                },
            )
            return Skipped(reason, answered=True)

        rewatch = _watched_before(ledger.plays, place.ref, at) or await self._seen(row, place)
        if rewatch and row.payload.get(HAND_MARK):
            server = "Emby" if row.payload.get("source") == "emby" else "Jellyfin"
            return Skipped(MARKED_WATCHED.format(server=server), answered=True)
        review = await self._add(
            ledger, row, place, at, rating=None, rewatch=rewatch, into=(PLAYS, key)
        )
        value = _played(row) | {"review_id": review}
        return Tick(place, key, value, "rewatch logged" if rewatch else "logged")

    async def _logged_by_hand(
        self, ledger: Ledger, row: OutboxItem, place: Place, at: float
    ) -> DiaryEntry | None:
        """The diary's log of this viewing that this profile did not write (made in
        Serializd's app at the credits, before the webhook came, or by another profile
        signed in to the account, watching together), if any: a log of the episode
        logged or dated within the duplicate window of `at` (`one_play`, Trakt's rule). When
        it was logged counts: the app may date a log by the day alone. A log of ours is the
        ledger's (its time is when it was sent, not the viewing's), one tagged ours whose
        answer was lost counts by its date only. From the batch's whole read of the diary
        when it made one (a row whose add may have landed), else the look at its newest pages
        (`_newest`), shared by a burst of plays; rows it cannot read are not taken for a log
        (the play is logged, as Trakt's look does)."""
        entries = await self._look(ledger, row, place, at - LOOK_MARGIN)
        if entries is None:
            return None
        skew = self.client.http.clock_skew
        ours = set(_logged_by_us(ledger.plays, place.ref).values())
        for entry in entries:
            if not place.holds(entry) or not entry.is_log or entry.id in ours:
                continue
            times = [entry.watched_at]
            if DEFAULT_TAG not in entry.tags:
                times.append(entry.date_added)
            if any(one_play(reading, at) for time in times for reading in readings(time, skew)):
                return entry
        return None

    async def _logged_since_read(
        self, ledger: Ledger, row: OutboxItem, place: Place, key: str, at: float
    ) -> DiaryEntry | None:
        """For a link's copy of a play (ledger key `key`): the log of the episode added to the
        diary since the link's read of Serializd began (`OutboxItem.planned_from`), which the
        plan did not see, dated within MATCH_WINDOW of `at` (the nearest): the link's next run
        takes it for this play (`reconcile`), so the copy would be a second entry of one
        viewing. One log stands for one copy (HAND_LOGS: a rewatch copied beside it is still
        sent). Not one of ours (the ledger's); one tagged ours the ledger cannot name (an add
        answered without its id) only as the same play (`_stands_for`). From the look at the
        diary's newest pages shared by the batch's rows (`_look`), or its whole read when the
        batch made one."""
        # The look shared with the drain's removals and ratings (`_added_since`). What the read
        # saw is left out, by when it began on Serializd's clock and a second more (`dateAdded`
        # and the Date header the skew comes from are whole seconds): a log it saw may stand
        # for another play of the episode (a rewatch), and the copy would be lost.
        entries = await self._look(ledger, row, place, row.planned_from - ratings.RATED_SLACK)
        if not entries:
            return None
        since = row.planned_from + self.client.http.clock_skew + WHOLE_SECONDS
        ours = set(_logged_by_us(ledger.plays, place.ref).values())
        found = [
            entry
            for entry in entries
            if place.holds(entry)
            and entry.is_log
            and entry.id not in ours
            and entry.date_added > since
            and _stands_for(entry, at)
        ]
        if not found:
            return None
        prefix = f"{place.ref.key()}@"
        stood = await asyncio.to_thread(
            self.store.mirror_get_prefixed, NAME, ledger.profile, HAND_LOGS, prefix
        )
        taken = {v.get("review_id") for k, v in stood.items() if k != key}
        found = [entry for entry in found if entry.id not in taken]
        if not found:
            return None
        entry = min(found, key=lambda e: (abs(e.watched_at - at), e.id))
        await asyncio.to_thread(
            self.store.mirror_put,
            NAME,
            ledger.profile,
            HAND_LOGS,
            {key: {"review_id": entry.id, "row": row.id}},
            self.clock(),
        )
        return entry

    async def _look(
        self, ledger: Ledger, row: OutboxItem, place: Place, since: float
    ) -> list[DiaryEntry] | None:
        """The diary entries a play's check for a log made by hand reads: the batch's whole
        read of the diary when it made one (a row whose add may have landed), else the look
        at its newest pages for those added since `since` (`_newest`), shared by the rows of a
        drain. None when the diary cannot be read (rows answering otherwise, a page renamed):
        only a second entry hangs on it, so the play is logged rather than not at all."""
        if ledger.diary is not None:
            return ledger.diary
        try:
            entries = (await self._newest(ledger.profile, row, since)).entries
        except (SerializdAuthError, Unavailable):
            raise
        except SerializdError as exc:
            self._look_log.warning(
                row.profile,
                LOOK_UNREADABLE,
                self.clock(),
                profile=row.profile,
                item=place.ref.describe(),
                error=exc.message,
            )
            return None
        self._look_log.over(
            row.profile, "serializd diary read again", self.clock(), profile=row.profile
        )
        return entries

    async def _logged_by(
        self, profile: str, place: Place, entry: DiaryEntry, lead: str = ALREADY_LOGGED
    ) -> str:
        """Why a play is not logged over `entry` (`_logged_by_hand`, `_logged_since_read`,
        `lead` saying which): whose log it is. Another profile signed in to the account wrote
        it when its ledger holds it (read from the store: no request); one tagged ours that
        none holds is another profile's whose answer was lost, or another watchbridge's; else
        the user's, made in the app."""
        prefix = f"{place.ref.key()}@"
        for other in sorted(self.client.accounts.keys() - {profile}):
            plays = await asyncio.to_thread(
                self.store.mirror_get_prefixed, NAME, other, PLAYS, prefix
            )
            if any(v.get("review_id") == entry.id for v in plays.values()):
                return lead + BY_PROFILE.format(profile=other)
        return lead + (BY_ANOTHER if DEFAULT_TAG in entry.tags else BY_HAND)

    async def _seen(self, row: OutboxItem, place: Place) -> bool:
        """Whether Serializd held this episode as watched before this play (its diary entry is
        then a rewatch, §6.2), though we logged nothing of it: a sync read the side and says
        so; for a webhook's play the season's ticks are read."""
        if "earlier_plays" in row.payload:
            return int(row.payload["earlier_plays"]) > 0
        if place.season_id is None or place.episode_number is None or place.ref.season is None:
            return False
        try:
            ticked = await self.client.episode_logs(
                row.profile, place.show_id, place.ref.season, place.season_id
            )
        except (SerializdAuthError, Unavailable):
            raise
        except SerializdError as exc:
            # Only the rewatch flag hangs on this page (a mobile one, renamed now and then):
            # the play is logged without it rather than not at all.
            self._ticks_log.warning(
                row.profile,
                TICKS_UNREADABLE,
                self.clock(),
                profile=row.profile,
                item=place.ref.describe(),
                error=exc.message,
            )
            return False
        self._ticks_log.over(
            row.profile, "serializd season ticks read again", self.clock(), profile=row.profile
        )
        return place.episode_number in ticked

    async def _remove_play(self, ledger: Ledger, row: OutboxItem, place: Place) -> Outcome:
        """A play removed on the other side: its tick (`tick:` records), or its diary entry
        (a review id; `reviews/delete` is unconfirmed, reference §6.3)."""
        record = str(row.payload.get("record") or "")
        if record.startswith(MARK_RECORD):
            return Delivered(
                "the season stays marked watched on Serializd (unmarking it would unwatch "
                "every episode of it): unmark it there if it should go",
                written=False,
            )
        if place.season_id is None or place.episode_number is None:
            return Dead(f"no Serializd episode for {place.ref.key()}")
        if record.startswith(EXPECTED):  # queued by the link, not read back yet
            record = await self._written_for(ledger, place, record)
            if not record:
                return Delivered("it never reached Serializd: nothing to remove", written=False)
        if await self._logged_since(ledger, row, place, record):
            log.info(
                "removing a play from Serializd: not done, logged there again since the link "
                "read it; the new log stands and the episode stays ticked",
                extra={"profile": row.profile, "item": place.ref.describe(), "row": row.id},
            )
            return Skipped(LOGGED_SINCE, answered=True)
        if record.startswith(TICK_RECORD):
            return await self._untick(ledger, row, place, place.season_id, place.episode_number)
        if not record.isdigit():
            return Dead(f"no Serializd diary entry id in the removal of {place.ref.key()}")
        if not await self._delete_review(ledger.profile, int(record)):
            return Dead(CANNOT_DELETE)
        prefix = f"{place.ref.key()}@"
        await self._load(ledger, PLAYS, prefix)
        plays = {k: v for k, v in ledger.plays.items() if k.startswith(prefix)}
        mine = [k for k, v in plays.items() if v.get("review_id") == int(record)]
        now = self.clock()
        gone = {
            k: _carried_removal(plays[k], int(record), row.payload.get("at"), now) for k in mine
        }
        await self._record(ledger, PLAYS, gone)
        others = {k: v for k, v in plays.items() if k not in gone and not v.get("removed")}
        standing = await self._still_listed(ledger, row, _entries_of(others))
        if standing.keys or any(not isinstance(v.get("review_id"), int) for v in others.values()):
            return Delivered("diary entry deleted; other plays keep the episode ticked")
        if standing.unproven:
            return Hold(f"diary entry deleted; {MISSED_ONCE}", SECOND_READ_AFTER, target_wide=False)
        await self.client.unlog_episodes(
            ledger.profile, place.show_id, place.season_id, [place.episode_number]
        )
        return Delivered("deleted, unticked")

    async def _untick(
        self, ledger: Ledger, row: OutboxItem, place: Place, season_id: int, number: int
    ) -> Outcome:
        """A play read as the episode's tick removed: the tick goes, unless a diary entry of
        ours of the episode stands (the tick is the episode's, not that play's alone: a
        webhook play we logged after the link read Serializd would read as unwatched), one
        Serializd still lists: the user may have deleted it in the app since. One whose id
        the add's answer left out cannot be looked for, and keeps the tick."""
        prefix = f"{place.ref.key()}@"
        await self._load(ledger, PLAYS, prefix)
        standing = None
        if not _without_id(ledger.plays, place.ref):
            standing = await self._still_listed(ledger, row, _logged_by_us(ledger.plays, place.ref))
        if standing is None or standing.keys:
            log.info(
                "removing a play from Serializd: not unticked, a play watchbridge logged of "
                "the episode keeps it ticked",
                extra={"profile": row.profile, "item": place.ref.describe(), "row": row.id},
            )
            return Skipped(OURS_KEEP_TICK, answered=True)
        if standing.unproven:
            return Hold(f"not unticked yet: {MISSED_ONCE}", SECOND_READ_AFTER, target_wide=False)
        await self.client.unlog_episodes(ledger.profile, place.show_id, season_id, [number])
        # Undated plays of ours were that tick: gone with it, so that one queued again ticks
        # again instead of reading as already on Serializd.
        undated = {
            key: {"review_id": None, "removed": True}
            for key, value in ledger.plays.items()
            if key.startswith(prefix) and isinstance(value, dict) and not value.get("removed")
        }
        if undated:
            await self._record(ledger, PLAYS, undated)
        return Delivered("unticked")

    async def _still_listed(
        self, ledger: Ledger, row: OutboxItem, entries: dict[str, int]
    ) -> Standing:
        """Which of our diary entries `entries` (ledger key -> review id) Serializd still
        lists. The ledger knows what we wrote, not what the user deleted in the app since:
        an entry proven deleted there is forgotten (marked removed), and keeps no tick. Free
        without entries to look for; else see `_listed`. A diary that cannot be read raises:
        the row waits, the tick and the ledger as they are."""
        if not entries:
            return Standing(set(), unproven=False)
        # Review id -> when its record was written (the latest, should two keys name it).
        wanted: dict[int, float] = {}
        for key, review in entries.items():
            wanted[review] = max(wanted.get(review, 0.0), ledger.recorded.get(key, math.inf))
        verdict = await self._listed(ledger.profile, row, wanted)
        deleted = {key for key, review in entries.items() if review in verdict.gone}
        if deleted:
            log.info(
                "serializd diary entries watchbridge logged were deleted on Serializd since: "
                "forgotten, they keep the episode ticked no longer",
                extra={"profile": row.profile, "row": row.id, "entries": len(deleted)},
            )
            gone = {key: {"review_id": None, "removed": True} for key in deleted}
            await self._record(ledger, PLAYS, gone)
        listed = {key for key, review in entries.items() if review in verdict.listed}
        return Standing(listed, unproven=bool(verdict.missed_once | verdict.unread))

    async def _listed(self, profile: str, row: OutboxItem, wanted: Mapping[int, float]) -> Verdict:
        """What the run's reads (`diary_listing`) say of the diary entries `wanted` (review id
        -> when our ledger recorded it), when they settle it: free once the diary was read
        whole in the run, or when they saw every one (the look at the newest pages often
        did). Else the pages until each is seen, all of them for one deleted (`diary_lists`:
        no cheaper read proves an entry gone, §5.1), kept for the checks after it. An entry
        a whole read misses is gone only once a second one, begun after it, misses it too."""
        since = max(row.planned_from, row.next_attempt_at)
        kept = self._listings.get(profile)
        listed: frozenset[int] = frozenset()
        if kept is not None and serves(kept, since, self.clock(), ADDED_READ_KEEP):
            misses = await self._first_misses(profile)
            verdict = judged(kept, wanted, misses)
            if verdict.settled:
                return await self._remember(profile, kept, verdict, misses)
            listed = verdict.listed
        rest = {review: at for review, at in wanted.items() if review not in listed}
        started, adds = self.clock(), self._adds[profile]
        read = await self.client.diary_lists(profile, set(rest))
        seen = await self._note_listing(profile, started, adds, read)
        misses = await self._first_misses(profile)
        verdict = await self._remember(profile, seen, judged(seen, rest, misses), misses)
        return replace(verdict, listed=verdict.listed | listed)

    async def _first_misses(self, profile: str) -> dict[int, float]:
        """When the first whole read that missed each entry of ours ended (FIRST_MISSES)."""
        kept = await asyncio.to_thread(self.store.mirror_get, NAME, profile, FIRST_MISSES)
        return {
            int(review): float(at)
            for review, at in kept.items()
            if review.isdigit() and isinstance(at, int | float)
        }

    async def _remember(
        self, profile: str, listing: Listing, verdict: Verdict, misses: Mapping[int, float]
    ) -> Verdict:
        """Keep when `listing` ended for the entries it was the first whole read to miss (none
        in `misses`, as `_first_misses` read them), and forget those it proved gone;
        `verdict` as given."""
        first = first_missed(listing, verdict, misses)
        if first:
            log.info(
                "serializd diary entries watchbridge logged were not listed by a read of the "
                "whole diary: they count as deleted only if the next read misses them too",
                extra={"profile": profile, "entries": len(first)},
            )
            values = {str(review): at for review, at in first.items()}
            await asyncio.to_thread(
                self.store.mirror_put, NAME, profile, FIRST_MISSES, values, self.clock()
            )
            kept = self._listings.get(profile)
            if kept is not None:
                self._listings[profile] = recorded(kept, listing, first)
        if verdict.gone:
            await asyncio.to_thread(
                self.store.mirror_remove,
                NAME,
                profile,
                FIRST_MISSES,
                [str(review) for review in sorted(verdict.gone)],
            )
        return verdict

    async def _note_listing(
        self, profile: str, started: float, adds: int, read: DiaryListing
    ) -> Listing:
        """Keep what a read begun at `started` (after `adds` entries of ours) saw listed, and
        forget the first misses of the entries it lists (they were there); that read's
        listing."""
        whole = read.whole and self._adds[profile] == adds
        seen = Listing(started, read.ids, whole, self.clock())
        self._listings[profile] = merged(
            self._listings.get(profile), seen, self.clock(), ADDED_READ_KEEP
        )
        await asyncio.to_thread(forget_first_misses, self.store, profile, read.ids)
        return seen

    def _note_ours(
        self, profile: str, *, added: int | None = None, deleted: int | None = None
    ) -> None:
        """A diary entry of ours added (there since) or deleted, in what the run saw listed."""
        kept = self._listings.get(profile)
        if kept is not None:
            self._listings[profile] = noted(kept, added=added, deleted=deleted)

    async def _logged_since(
        self, ledger: Ledger, row: OutboxItem, place: Place, record: str
    ) -> bool:
        """Whether the episode was logged on Serializd since the run that planned its removal
        read it (`OutboxItem.planned_from`), in a diary entry watchbridge did not write (the
        user's rewatch): unticked, that viewing would read as unwatched. Our own logs of it
        are the ledger's (a removal keeps the tick while another of them remains)."""
        entries = await self._added_since(ledger.profile, row)
        prefix = f"{place.ref.key()}@"
        await self._load(ledger, PLAYS, prefix)
        ours = set(_logged_by_us(ledger.plays, place.ref).values())
        if record.isdigit():
            ours.add(int(record))
        # Two clocks: a log near the read stands.
        since = self._added_cut(row.planned_from - ratings.RATED_SLACK)
        if any(
            place.holds(entry)
            and entry.is_log
            and entry.id not in ours
            and DEFAULT_TAG not in entry.tags  # ours, its answer lost: not a rewatch
            and entry.date_added > since
            for entry in entries.entries
        ):
            return True
        _unread_may_hold(
            entries.unreadable - ours,
            "a log of the episode given since the link read Serializd",
            "its removal waits",
        )
        return False

    def _added_cut(self, since: float) -> float:
        """The `dateAdded` after which a diary entry may have been added after `since` (our
        clock). `dateAdded` is Serializd's clock: an entry counts when either reading of it
        (`readings`: as is, or moved by the clock skew) is after `since`; else a log made on a
        clock behind ours is read as older than it is."""
        return min(since, since + self.client.http.clock_skew)

    async def _added_since(self, profile: str, row: OutboxItem) -> DiaryRead:
        """The diary entries added since the run that planned `row` read Serializd (see
        `_newest`)."""
        return await self._newest(profile, row, row.planned_from - ratings.RATED_SLACK)

    async def _newest(self, profile: str, row: OutboxItem, since: float) -> DiaryRead:
        """The diary entries added since `since` (our clock), from one look at the diary's
        newest pages (`diary_added_since`, about two requests), made after `row` was planned
        (a link's read, a webhook's queuing) and after its last try, and within
        ADDED_READ_KEEP: the rows of a drain (removals, ratings, webhook plays) share it.
        Never a read of the whole diary; `since` is cut on Serializd's clock (`_added_cut`)."""
        after = max(row.planned_from, row.next_attempt_at)
        now = self.clock()
        kept = self._added.get(profile)
        if kept is not None:
            read_since, read_at, read = kept
            # Compared on our clock: the skew, read off each answer's Date header (whole
            # seconds), moves the cut by a fraction of a second from one request to the next.
            if (
                read_since <= since
                and read_at >= after
                and still_fresh(read_at, now, ADDED_READ_KEEP)
            ):
                return read
        adds = self._adds[profile]
        read = await self.client.diary_added_since(profile, self._added_cut(since))
        self._added[profile] = (since, now, read)
        await self._note_listing(profile, now, adds, DiaryListing(read.listed, whole=False))
        return read

    async def _written_for(self, ledger: Ledger, place: Place, expected: str) -> str:
        """What our delivery of the play a link expected (`expect:item@time#source`) left on
        Serializd: its diary entry's id, or a tick; "" when it made neither."""
        stamp = expected.removeprefix(EXPECTED).partition("#")[0].rpartition("@")[2]
        at = float(stamp) if stamp.isdigit() else UNDATED
        await self._load(ledger, PLAYS, f"{place.ref.key()}@")
        found = _near(ledger.plays, place.ref, at)
        if found is None or found[1].get("removed"):
            return ""
        review = found[1].get("review_id")
        if isinstance(review, int):
            return str(review)
        return f"{TICK_RECORD}{place.ref.key()}" if found[1].get("ticked") else ""

    async def _delete_review(self, profile: str, review: int) -> bool:
        """Delete one diary row; False when Serializd has no delete endpoint (§6.3)."""
        try:
            await self.client.delete_review(profile, review)
        except SerializdItemError:
            pass  # already gone
        except SerializdError as exc:
            if "is not a Serializd endpoint" in exc.message:
                return False
            raise
        self._note_ours(profile, deleted=review)
        return True

    # ------------------------------------------------------------------ ratings

    async def _rating(
        self, ledger: Ledger, row: OutboxItem, place: Place, value: int, at: float
    ) -> Outcome:
        key = place.ref.key()
        await self._load(ledger, RATINGS, key)
        await self._look_for_unfound(ledger, row, place, key)
        # Keyed by item, not by (item, value): rating 7, then 8, then 7 again must send the
        # last 7, and only a repeat of the rating we sent last is skipped. A link's row was
        # planned from what Serializd shows now, which the user may have changed since.
        sent_last = (ledger.rated.get(key) or {}).get("rating")
        if sent_last == value and not row.payload.get("link"):
            return Delivered("already rated on Serializd", written=False)
        if row.may_have_landed:
            # The send may be what the ledger holds for the item: its entry is not another's.
            own = (ledger.rated.get(key) or {}).get("review_id")
            entry = await self._find_in_diary(
                ledger, place, _sent(row.payload, at), is_log=False, rating=value, own=own
            )
            if entry is not None:
                await self._record(ledger, RATINGS, {key: {"rating": value, "review_id": entry.id}})
                await self._rated_row(ledger.profile, entry.id, key)
                return Delivered("already rated on Serializd", written=False)
        # Our own send that landed unanswered is found above, not taken for a newer rating.
        since = ratings.overtaken_after(at, row.planned_from)
        if row.waited(self.clock()):
            diary = DiaryRead(await self._diary(ledger), ledger.unreadable)
        elif row.planned_on_a_read:  # a link's row: the user may have rated it since the read
            diary = await self._added_since(ledger.profile, row)
        else:
            diary = None
        if diary is not None and await self._rated_since(ledger, diary, place, since, key):
            # The diary was read just now, through this profile's sign-in.
            return Skipped("a newer rating was given on Serializd since", answered=True)
        await self._add(ledger, row, place, at, rating=value, rewatch=False, into=(RATINGS, key))
        return Delivered("rated")

    async def _remove_rating(self, ledger: Ledger, row: OutboxItem, place: Place) -> Outcome:
        """Delete the rating-only diary rows holding the item's rating: those the plan named
        (a sync read them), else every one the diary holds for the item (a rating cleared in
        a media server: each earlier change is a row of its own, and Serializd shows the
        newest left), and those we wrote."""
        key = place.ref.key()
        await self._load(ledger, RATINGS, key)
        recorded = str(row.payload.get("record") or "")
        record = recorded.split(",")
        ids = {int(i) for i in record if i.isdigit()}
        ids |= await self._look_for_unfound(ledger, row, place, key)
        ours = (ledger.rated.get(key) or {}).get("review_id")
        if isinstance(ours, int):
            ids.add(ours)
        if record == [""]:
            diary = await self._diary(ledger)
            _unread_may_hold(ledger.unreadable, "a rating of the item", "its removal waits")
            ids |= {e.id for e in diary if place.holds(e) and not e.is_log and e.rating}
        logged = False
        # Stars on a diary log: a link's read saw them (the record says), or nothing else
        # holds the rating. Read now: the user may have cleared them since (a retry).
        if holds_logged_stars(recorded) or not ids:
            diary = await self._diary(ledger)
            _unread_may_hold(ledger.unreadable, "a rating of the item", "its removal waits")
            logged = any(place.holds(e) and e.is_log and e.rating for e in diary)
        for review in sorted(ids):
            if not await self._delete_review(ledger.profile, review):
                return Dead(CANNOT_DELETE)
        if ids:
            await self._record(ledger, RATINGS, {key: {"rating": None, "review_id": None}})
        if logged:
            # Stars given with a diary log are that log's: deleting it would take the play,
            # and Serializd shows them once the rating rows are gone.
            return Dead(
                f"the rating of {row.describe()} is on a diary log on Serializd, "
                "which watchbridge does not change (the log is a play): clear its stars "
                "on serializd.com, then discard this dead letter"
            )
        if not ids:
            return Delivered("no rating on Serializd to remove", written=False)
        return Delivered(f"rating removed ({len(ids)} diary row(s) deleted)")

    async def _look_for_unfound(
        self, ledger: Ledger, row: OutboxItem, place: Place, key: str
    ) -> set[int]:
        """Find the item's earlier ratings whose send may have landed and that this newer row
        settled before their retry looked for them (store.UNFOUND), as that retry would: each
        found is recorded as ours and as the last rating sent (what Serializd shows until this
        row's lands). Unknown, a landed one reads as a rating the user gave when it landed (a
        link copies it back over this one), and a rating equal to the one sent before it is
        taken as already there. Returns the ids of their diary rows."""
        unfound = await asyncio.to_thread(self.store.unfound_ratings, row)
        found: set[int] = set()
        for _, payload in unfound:
            try:
                value, at = ratings.to_serializd(int(payload["rating"])), float(payload["at"])
            except (KeyError, TypeError, ValueError):
                continue  # never sent: its delivery made a dead letter of it
            sent = _sent(payload, at)
            entry = await self._find_in_diary(ledger, place, sent, is_log=False, rating=value)
            if entry is not None:
                await self._record(ledger, RATINGS, {key: {"rating": value, "review_id": entry.id}})
                await self._rated_row(ledger.profile, entry.id, key)
                found.add(entry.id)
        if unfound:
            await asyncio.to_thread(self.store.looked_for, [i for i, _ in unfound], self.clock())
        return found

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
        `into` (collection, key) as one step: a failure anywhere in it raises AddUncertain,
        a refusal that proves nothing was written (but an item's) AddRefused.
        """
        # If we crash before the ledger has this entry, the row comes back marked like this
        # and the diary is read before the entry is sent again. A rating keeps the item as
        # sent (by TMDB ids): a link's read knows its row by it until then (PLACED).
        placed = {} if rating is None else {PLACED: ref_to_dict(place.named())}
        await asyncio.to_thread(
            self.store.note_resolved,
            [(row, placed | {SENT_AT: at})],
            f"{UNKNOWN_OUTCOME}: diary entry sent",
            self.clock(),
        )
        self._adds[ledger.profile] += 1
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
            # A 429 (waited out), or a try the delivery's check kept from going (the stop,
            # claims taken back): nothing was written, so the next send goes without a look.
            if refused_unread(exc):
                await self._not_sent(row)
                raise AddRefused(exc) from exc
            # Past the inline retries: a dropped connection or a gateway error may hide an
            # entry that landed. A 4xx answer (other errors) proves nothing was written.
            raise AddUncertain(exc) from exc
        except SerializdError as exc:
            # Answered with a refusal (a sign-in refused, an unknown show): nothing was
            # written, so the row is not marked as maybe logged (unless an earlier send was).
            await self._not_sent(row)
            if isinstance(exc, SerializdAuthError):
                raise AddRefused(exc) from exc
            raise
        self._note_ours(ledger.profile, added=review)
        collection, key = into
        value = _played(row) if rating is None else {"rating": rating}
        try:
            # Not waiting for the disk (one sync per entry instead of two): lost in a power
            # cut, with all after it, the row keeps its synced `unknown outcome` note, and
            # the next try finds the entry in the diary (`_find_in_diary`) instead of adding
            # it again. A later synced commit (the rating's row record just below, the
            # season's tick record, the next entry's note, the batch's outcomes) keeps it.
            await self._record(
                ledger, collection, {key: value | {"review_id": review}}, synced=False
            )
            if rating is not None and review is not None:
                await self._rated_row(ledger.profile, review, key)
        except Exception as exc:
            raise AddUncertain(exc) from exc  # the entry exists; only the diary can tell
        return review

    async def _not_sent(self, row: OutboxItem) -> None:
        """Take back the mark `_add` put on `row` before a send that wrote nothing; one
        marked before this attempt stays marked (an earlier send may have landed). With the
        database locked by another process past storage.busy_timeout, the row's outcome (a
        plain one: `AddRefused`, or the refusal's Retry) takes the mark back when the batch's
        outcomes are written: a mark left would read the whole diary before the next try."""
        if row.may_have_landed:
            return
        try:
            await asyncio.to_thread(self.store.note, [row], row.last_error or "", self.clock())
        except Exception as exc:
            if not locked_by_another(exc):
                raise

    async def _rated_row(self, profile: str, review: int, key: str) -> None:
        """Remember a rating row as ours for good: the reader dates every copy of ours by what
        it copied (its backdate), also once a newer rating replaces it in `ratings`. Dated by
        when it landed, a copy that landed late would read as the user's newer rating."""
        await asyncio.to_thread(
            self.store.mirror_put, NAME, profile, RATED_ROWS, {str(review): key}, self.clock()
        )

    async def _load(self, ledger: Ledger, collection: str, prefix: str) -> None:
        """Bring the ledger entries under `prefix` (one item's) into `ledger`, once."""
        if (collection, prefix) in ledger.loaded:
            return
        found = await asyncio.to_thread(
            self.store.mirror_get_prefixed_dated, NAME, ledger.profile, collection, prefix
        )
        if collection == RATINGS:
            found = {k: v for k, v in found.items() if k == prefix}
        for key, (value, written_at) in found.items():
            if collection == PLAYS:
                if key not in ledger.plays:
                    ledger.plays[key] = value
                    ledger.recorded[key] = written_at
            else:
                ledger.rated.setdefault(key, value)
        ledger.loaded.add((collection, prefix))

    async def _record(
        self, ledger: Ledger, collection: str, values: dict[str, Any], synced: bool = True
    ) -> None:
        await asyncio.to_thread(
            self.store.mirror_put,
            NAME,
            ledger.profile,
            collection,
            values,
            self.clock(),
            synced=synced,
        )
        if collection == PLAYS:
            ledger.recorded.update(dict.fromkeys(values, self.clock()))
        (ledger.plays if collection == PLAYS else ledger.rated).update(values)

    async def _rated_since(
        self, ledger: Ledger, diary: DiaryRead, place: Place, at: float, key: str
    ) -> bool:
        """Whether the user rated the item on Serializd after `at` (a rating that waited, an
        outage or a dead letter retried, or a link's, planned on a read the user rated after,
        would undo that: Serializd shows the newest row). `diary`: the whole diary, or its
        entries added since the link's read. A rating row of ours is not the user's."""
        own = (ledger.rated.get(key) or {}).get("review_id")
        newer = {
            entry.id
            for entry in diary.entries
            if place.holds(entry)
            and entry.rating
            and entry.id != own
            and entry.date_added > self._added_cut(at + ratings.RATED_SLACK)
        }
        if newer:
            ours = await asyncio.to_thread(
                self.store.mirror_has,
                NAME,
                ledger.profile,
                RATED_ROWS,
                [str(review) for review in sorted(newer)],
            )
            newer -= {int(review) for review in ours}
        if newer:
            newer -= await self._unanswered_copies(ledger.profile, diary, place, newer)
            if newer:
                return True
        _unread_may_hold(
            diary.unreadable - {own}, "a newer rating given on Serializd", "this rating waits"
        )
        return False

    async def _unanswered_copies(
        self, profile: str, diary: DiaryRead, place: Place, ids: set[int]
    ) -> set[int]:
        """Which of the diary rows `ids` are ratings of ours whose answer was lost (backdated
        to a rating queued for the item whose send may have landed, of its value), before
        their retry records them: dated by when they landed, they are no rating of the
        user's (as a link's read takes them, `unanswered_ratings`)."""
        key = place.named().key()
        sends = []
        for item, at, value in await asyncio.to_thread(
            self.store.unanswered_ratings, profile, NAME
        ):
            try:
                if ref_from_dict(item).key() == key:
                    sends.append((at, ratings.to_serializd(value)))
            except (KeyError, TypeError, ValueError):
                continue
        return {
            entry.id
            for entry in diary.entries
            if entry.id in ids
            and any(
                entry.rating == stars and abs(entry.watched_at - at) <= DIARY_WINDOW
                for at, stars in sends
            )
        }

    async def _find_in_diary(
        self,
        ledger: Ledger,
        place: Place,
        times: Sequence[float],
        *,
        is_log: bool,
        rating: int | None = None,
        own: object = None,
    ) -> DiaryEntry | None:
        """The diary entry an earlier send (of a play, or of `rating`) may have added, at
        one of `times` (`_sent`); None when none is seen. A play's must carry our tag: a log
        the user made in the app near that time is theirs (taken for ours, a link's removal
        of the play would delete it), and counts as logged by hand (`_logged_by_hand`)."""
        diary = await self._diary(ledger)
        # An entry already accounted for is another play of the same item (whose ledger
        # entries the caller loaded).
        taken = {v.get("review_id") for v in (*ledger.plays.values(), *ledger.rated.values())}
        taken.discard(own)
        for entry in diary:
            if (
                place.holds(entry)
                and entry.is_log == is_log
                and (not is_log or DEFAULT_TAG in entry.tags)
                and any(abs(entry.watched_at - at) <= DIARY_WINDOW for at in times)
                and (rating is None or entry.rating == rating)
                and entry.id not in taken
            ):
                return entry
        # Not seen is not absent: sent again, an entry that landed unread would be doubled.
        what = "the play" if is_log else "the rating"
        _unread_may_hold(ledger.unreadable - taken, f"{what} sent before", "it is not sent again")
        return None

    async def _diary(self, ledger: Ledger) -> list[DiaryEntry]:
        """The account's diary, read once per batch (with the ids of the rows it could not
        read, in `ledger.unreadable`)."""
        if ledger.diary is None:
            started, adds = self.clock(), self._adds[ledger.profile]
            read = await self.client.diary_read(ledger.profile)
            ledger.diary, ledger.unreadable = read.entries, read.unreadable
            listing = DiaryListing(read.listed, True)
            await self._note_listing(ledger.profile, started, adds, listing)
        return ledger.diary

    async def _place(self, item: MediaRef, listed_only: bool = False) -> Place | Retry:
        """The item's Serializd coordinates, or a Retry when they cannot be known yet;
        `listed_only`: also when its numbers, as sent, are past the end of TMDB's season
        (`_past_end`)."""
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
            ref = MediaRef("season", ids=Ids(tmdb=str(season_id)))
            return Place(ref, show_id, season_id, season=item.season)
        if item.season is not None and item.number is not None:
            placed: tuple[int, int] | Retry = item.season, item.number
        else:
            placed = await self._by_absolute(show_id, item)
        if isinstance(placed, Retry):
            return placed
        season, number = placed
        season_id = await self._season_or_retry(show_id, season)
        if isinstance(season_id, Retry):
            return season_id
        if listed_only and item.number is not None:  # (an absolute number is counted within)
            past = await self._past_end(show_id, item, season, number)
            if past is not None:
                return past
        ref = MediaRef("episode", show_ids=Ids(tmdb=str(show_id)), season=season, number=number)
        return Place(ref, show_id, season_id, number)

    async def _past_end(
        self, show_id: int, item: MediaRef, season: int, number: int
    ) -> Retry | None:
        """A Retry as unmatched when the episode's numbers are past the end of TMDB's season
        (`catalogue.season_end`): logged so, the diary entry would name an episode Serializd
        does not have. Numbers the library gives otherwise than TMDB that neither the
        episode's own TMDB id nor its air date placed (`tmdb_numbered`), or an episode TMDB
        does not list yet: tried again as other unmatched rows are."""
        count = await season_end(self.client, self.store, show_id, season, number, self.clock)
        if count is None:
            return None
        return Retry(
            f"unmatched: {item.describe()} is past the end of season {season} as TMDB "
            f"(and so Serializd) numbers it ({count} episodes): TMDB numbers this show "
            "otherwise than your library (no TMDB id of the episode's own, nor its air date, "
            "placed it elsewhere), or does not list the episode yet; log it on Serializd by "
            "hand, or wait for TMDB to list it (tried again, hourly at first)",
            after=UNMATCHED_RETRY,
        )

    async def _by_absolute(self, show_id: int, item: MediaRef) -> tuple[int, int] | Retry:
        """An episode known by its absolute number only (a generic webhook's `item.absolute`,
        HAMA's tvdb3/tvdb4 modes, whose season is TheTVDB's) placed on Serializd's seasons."""
        hint = (
            "a play naming TMDB's season and episode number (a generic webhook's item.season "
            "and item.number) is placed as sent"
        )
        if item.absolute is None or item.season == 0:
            return Retry(
                f"unmatched: {item.describe()} has no TMDB season and episode number ({hint})",
                after=UNMATCHED_RETRY,
            )
        try:
            found = await absolute_episode(
                self.client, self.store, show_id, item.absolute, self.clock
            )
        except SerializdItemError as exc:
            return Retry(f"unmatched: {exc.message}", after=UNMATCHED_RETRY)
        if isinstance(found, Unmatched):
            return Retry(
                f"unmatched: {item.describe()} cannot be placed on Serializd: {found.reason} "
                f"({hint})",
                after=UNMATCHED_RETRY,
            )
        season, number = found
        log.info(
            "absolute episode placed on Serializd's seasons",
            extra={"item": item.describe(), "season": season, "number": number},
        )
        return season, number

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
        seasons = await season_map(self.client, self.store, show_id, self.clock, need=number)
        return seasons.get(number)

    async def _forget_seasons(self, item: MediaRef) -> None:
        tmdb = item.ids.tmdb if item.kind == "show" else item.show_ids.tmdb
        if tmdb:
            await asyncio.to_thread(
                self.store.cache_put, SEASONS_CACHE, tmdb, None, self.clock(), 0.0
            )


def _sent(payload: dict[str, Any], at: float) -> tuple[float, ...]:
    """The times a row dated `at` may have gone out as: `at`, and the time its last send
    went out as, when a step of the clock has moved it since (clocksteps.sent_before)."""
    before = sent_before(payload, at)
    return (at,) if before is None else (at, before)


def _played(row: OutboxItem) -> dict[str, Any]:
    """A new play's ledger value: not ticked yet, and the length of the item played when the
    webhook told it (how soon a log of it made again in the app may be a rewatch, see
    readers.serializd.late_log_window)."""
    duration = row.duration
    return {"ticked": False} if duration is None else {"ticked": False, "duration": duration}


def _carried_removal(value: dict[str, Any], review: int, at: object, now: float) -> dict[str, Any]:
    """The ledger value of a play of ours whose diary entry a link deleted carrying a removal
    from the other side: removed, and what the reader needs to keep a log of that viewing the
    user made in the app from counting as a play once ours is gone (the viewing was removed;
    see readers.serializd.logged_after_ours): the entry's id (`deleted`), when it was deleted
    (`removed_at`: a log made after that is the user's new one), its date and the episode's
    length when known."""
    gone: dict[str, Any] = {
        "review_id": None,
        "removed": True,
        "deleted": review,
        "removed_at": now,
    }
    if isinstance(at, int | float) and not isinstance(at, bool) and at != UNDATED:
        gone["at"] = float(at)
    if "duration" in value:
        gone["duration"] = value["duration"]
    return gone


def _unread_may_hold(unread: frozenset[int], what: str, then: str) -> None:
    """DiaryUnread (the row is held, keeping its marks) when diary rows watchbridge could not
    read (`unread`, their ids) may hold `what`, which the step deciding `then` must see."""
    if unread:
        raise DiaryUnread(
            changed_hold(
                SERVICE_NAME,
                f"{len(unread)} diary entries have no show or date watchbridge can read, "
                f"and {what} may be one of them",
                f"{then}, without giving up, until the diary reads again",
            )
        )


def _near(plays: dict[str, Any], ref: MediaRef, at: float) -> tuple[str, dict[str, Any]] | None:
    """The ledger entry of this play (within the duplicate window), if we made one."""
    for key in nearby_keys(ref, at):
        value = plays.get(key)
        if isinstance(value, dict):
            return key, value
    return None


def _stands_for(entry: DiaryEntry, at: float) -> bool:
    """Whether a log added since a link read the diary stands for its copy of the play at `at`
    (`_logged_since_read`). One made by hand, dated as the user chose, within MATCH_WINDOW (the
    link pairs them so). One tagged ours carries its play's own date: a copy whose answer left
    out its id, or another profile's, only within the duplicate window (`one_play`), or the
    copy of a rewatch that evening would be taken for the other copy's entry and lost."""
    if DEFAULT_TAG in entry.tags:
        return one_play(entry.watched_at, at)
    return abs(entry.watched_at - at) <= MATCH_WINDOW


def _logged_by_us(plays: dict[str, Any], ref: MediaRef) -> dict[str, int]:
    """The diary entries of ours of this episode the ledger holds, not removed since (ledger
    key -> review id; an undated play of ours is the tick itself, no entry of its own)."""
    prefix = f"{ref.key()}@"
    return _entries_of(
        {
            key: value
            for key, value in plays.items()
            if key.startswith(prefix) and isinstance(value, dict) and not value.get("removed")
        }
    )


def _without_id(plays: dict[str, Any], ref: MediaRef) -> bool:
    """Whether the ledger holds a dated play of ours of this episode, not removed since, whose
    diary entry's id the add's answer left out (an undated play is the tick itself)."""
    prefix = f"{ref.key()}@"
    return any(
        key.startswith(prefix)
        and key != play_key(ref, UNDATED)
        and isinstance(value, dict)
        and not value.get("removed")
        and not isinstance(value.get("review_id"), int)
        for key, value in plays.items()
    )


def _entries_of(plays: dict[str, Any]) -> dict[str, int]:
    """Ledger key -> review id of the plays among `plays` that made a diary entry."""
    return {
        key: value["review_id"]
        for key, value in plays.items()
        if isinstance(value.get("review_id"), int)
    }


def _watched_before(plays: dict[str, Any], ref: MediaRef, at: float) -> bool:
    """Whether the ledger holds an earlier play of this episode (this one is a rewatch)."""
    prefix, minute = f"{ref.key()}@", int(at // 60)
    earlier = (key[len(prefix) :] for key in plays if key.startswith(prefix))
    return any(m.isdigit() and int(m) < minute for m in earlier)
