"""Delivering outbox rows to Trakt: live scrobbles when fresh, batched history when late.

Exactly-once rules: a completed play is checked against what we know Trakt holds (the
`trakt/plays` mirror, keyed by item and minute) before any history add, a webhook's play
against Trakt's history too (another app may have scrobbled it), and an episode placed by its
numbers against Trakt's history of that episode (`_placed_on_trakt`); a 409 on a scrobble
means Trakt already has it; a history add whose outcome is unknown (timeout, dropped
connection) is verified against Trakt's history before it is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from watchbridge import ratings
from watchbridge.accounts import AccountNotes, account_named, for_the_old_account
from watchbridge.clocksteps import SENT_AT, sent_before
from watchbridge.config import DeliveryConfig
from watchbridge.deliver.watching import SentStart, same_item, to_send_again
from watchbridge.deliver.worker import (
    Dead,
    Delivered,
    Hold,
    Outcome,
    Retry,
    Skipped,
    changed_hold,
    crashed,
    for_the_account,
    is_start,
    is_unmatched,
    per_profile,
    rate_limit_hold,
    service_hold,
    shows_an_answer,
    unplaced_episode,
    unsure,
    waiting_on,
)
from watchbridge.episode_numbers import trakt_listing
from watchbridge.http import RateLimited, ServiceError, Unavailable, rows_unread
from watchbridge.ids import (
    TRAKT,
    TRAKT_ID_NAMES,
    Enricher,
    Problem,
    TraktEpisodes,
    TraktResolver,
    copied_series_ids,
    distrusted,
    has_trakt_ids,
    ids_from,
    keyed_as_a_link,
    lookups,
    own_ids_may_be_written,
    series_id_reason,
    show_ids_also,
    title_unmatched,
    without_ids,
)
from watchbridge.ingest.common import iso_time
from watchbridge.loose import obj
from watchbridge.model import Ids, MediaRef, item_aliases, ref_from_dict
from watchbridge.playback import HAND_MARK, shortest_viewing
from watchbridge.reconcile import DUPLICATE_WINDOW_MINUTES, EXPECTED, UNDATED, one_play
from watchbridge.services.trakt import (
    HISTORY_BATCH,
    HistoryPlay,
    RatingWrite,
    ScrobbleResult,
    TraktAccountError,
    TraktAuthError,
    TraktClient,
    TraktError,
    TraktItemError,
    TraktRefused,
    TraktScrobbleInvalid,
    TraktSignInUnavailable,
    WriteResult,
    can_send,
    parse_iso,
    trakt_ids,
)
from watchbridge.sides import trakt_names_item
from watchbridge.store import UNKNOWN_OUTCOME, OutboxItem, Store

log = logging.getLogger(__name__)

NAME = "trakt"
PLAYS = "plays"  # mirror collection: item key @ minute of every play we know Trakt holds
HISTORY_ID = "history_id"  # payload: the Trakt play a removal of an expected play looked up
LIVE_STOP_PROGRESS = 90.0  # a completion with no usable progress is sent at this progress
LIVE_SCROBBLES_PER_BATCH = 3
UNMATCHED_RETRY = 3600.0  # an item Trakt cannot match yet is tried again hourly
AUTH_HOLD = 1800.0  # a media server refusing our key: its rows wait (the enricher alerts)
SIGN_IN_RETRY = 120.0  # a profile whose sign-in Trakt's sign-in host cannot renew now
# A profile at an account limit (420), locked (423) or without VIP (426) is tried hourly: an
# upgrade or some room made goes on within the hour.
ACCOUNT_HOLD = 3600.0
# An account hold's alert title, by Trakt's answer, where "account limit reached" (420's) would
# send the user to make room on Trakt: the app deleted or its owner's VIP over (403, 426; every
# profile's Trakt stops), the account locked (423).
ACCOUNT_CAUSES = {403: "refused the app", 423: "account locked", 426: "needs VIP"}
# Requests the rows of a write Trakt refused whole (400/422) may spend, sent apart, to find the
# rows it refuses: one among 200 takes 16, a few among fewer rows no more. Rows left past it
# share the refusal (an attempt each), as one refusal of every row (our request's shape) would.
SPLIT_REQUESTS = 32
# Payload: how many seconds after its play the row's live stop went out, noted as it is sent
# and dropped when nothing went (`_sent_nothing`); 0 for a history add of a row never sent
# before (`_sent_after`). Trakt dates a live stop when it gets it: a check of one whose answer
# was lost looks that far after the play, whatever delivery.late_after says by then (a user
# may have lowered it since).
LIVE_SENT_AFTER = "live_sent_after"
# How long after its play a live stop of ours may be dated where no row tells when it went:
# one sent by a release that did not note it, or by a restored copy's row after the copy was
# taken, under delivery.late_after (10 minutes by default then), or the webhook's stop a link's
# removal of the play it expected meets. A longer late_after set now widens it.
UNRECORDED_LIVE_AFTER = 600.0
# How much later than it went out Trakt may date a live stop: the call's own tries (three of up
# to a minute each, one more after a sign-in renewed between them).
LIVE_STOP_MARGIN = 300.0


def _an_earlier_viewing(result: ScrobbleResult, row: Row) -> bool:
    """Whether a 409 names a play from before this viewing (a rewatch inside Trakt's scrobble
    window), not this stop sent before: that one is recorded after the play. The margin is a
    viewing's least length, and it absorbs a server clock some minutes off Trakt's."""
    if not result.duplicate or result.recorded_at is None:
        return False
    return result.recorded_at < row.at - _viewing_margin(row)


def _viewing_margin(row: Row) -> float:
    """How long before a play Trakt may have dated this very viewing: its least length (an
    earlier play of the item is another viewing), which absorbs our clock minutes ahead of
    Trakt's (it dates a live stop by its own clock)."""
    return shortest_viewing(row.outbox.duration)


def live_reach(payload: Mapping[str, Any], late_after: float) -> float:
    """How long after its play Trakt may date a play we wrote for an outbox row with
    `payload`: as its sends went out (LIVE_SENT_AFTER: a live stop's delay, 0 for a history
    add at the play's own time); where the row does not tell (a send by an earlier release),
    as late as a live stop could go by default before it was noted, or by `late_after`, the
    setting now, if longer: never nearer for a setting lowered. Pure."""
    sent = payload.get(LIVE_SENT_AFTER)
    if isinstance(sent, (int, float)) and not isinstance(sent, bool):
        return max(0.0, float(sent)) + LIVE_STOP_MARGIN
    return max(UNRECORDED_LIVE_AFTER, late_after) + LIVE_STOP_MARGIN


def _sent_after(row: Row, now: float, live: bool, marked: Collection[int]) -> dict[str, float]:
    """What a send of `row` at `now` notes of when Trakt may date it (LIVE_SENT_AFTER): a
    `live` stop as late after the play as it goes; a history add at the play (0), unless an
    earlier send may have landed (a note of its own, or the row `marked` in the store with
    none: a live stop of a release that noted nothing, looked for as far as it may be). Pure."""
    if live:
        return {LIVE_SENT_AFTER: now - row.at}
    if LIVE_SENT_AFTER in row.payload or row.outbox.may_have_landed or row.outbox.id in marked:
        return {}
    return {LIVE_SENT_AFTER: 0.0}


def _may_have_landed(exc: Unavailable) -> Outcome:
    """A write whose answer was lost: marked to be checked before it goes again; when Trakt
    answered (a gateway error asking us to wait) the target is held as well."""
    reason = f"{UNKNOWN_OUTCOME}: {exc.message}"
    if exc.retry_after is not None:
        return Hold(reason, exc.retry_after, asked=True)
    return Retry(reason, service_failed=True)


def play_key(item: MediaRef, watched_at: float) -> str:
    return _at_minute(item.key(), int(watched_at // 60))


def nearby_keys(item: MediaRef, watched_at: float) -> list[str]:
    """`play_key` for each minute of the duplicate window."""
    return _in_window([item.key()], watched_at)


def _in_window(item_keys: Sequence[str], watched_at: float) -> list[str]:
    """Each of `item_keys` at each minute of the duplicate window around `watched_at`."""
    minute = int(watched_at // 60)
    window = range(-DUPLICATE_WINDOW_MINUTES, DUPLICATE_WINDOW_MINUTES + 1)
    return [_at_minute(key, minute + offset) for key in item_keys for offset in window]


def _at_minute(item_key: str, minute: int) -> str:
    return f"{item_key}@{minute}"


def remembered_keys(item: MediaRef, watched_at: float) -> list[str]:
    """The keys a play we know Trakt holds is recorded under: each alias at its minute."""
    minute = int(watched_at // 60)
    return [_at_minute(alias, minute) for alias in item_aliases(item)]


def forget_plays(
    store: Store,
    profile: str,
    plays: Sequence[tuple[MediaRef, float]],
    before: float = 0.0,
    kept: Sequence[tuple[MediaRef, float]] = (),
) -> None:
    """Plays gone from Trakt (removed by a link, or on Trakt itself) are no longer known to be
    there: one added back (a diary entry deleted by mistake and logged again) is sent, not
    skipped as already on Trakt. `before`: how many seconds before its time a play may be
    remembered (a live scrobble is remembered at its play's time, and Trakt dates it when
    sent); `kept`: plays Trakt still holds, whose keys stay."""
    keys = {
        _at_minute(alias, minute)
        for item, at in plays
        for alias in item_aliases(item)
        for minute in range(int((at - before) // 60), int(at // 60) + 1)
    }
    keys -= {key for item, at in kept for key in keys_near(item, at)}
    if keys:
        store.mirror_remove(NAME, profile, PLAYS, sorted(keys))


def keys_near(item: MediaRef, watched_at: float) -> list[str]:
    """Each alias at each minute of the duplicate window."""
    return _in_window(item_aliases(item), watched_at)


def _as_twin(outcome: Outcome, sent: int) -> Outcome:
    """A left-out row's outcome: its play went out with row `sent`."""
    return (
        Skipped(f"the same play as outbox row {sent}")
        if isinstance(outcome, Delivered)
        else outcome
    )


def one_per_play(rows: Sequence[Row]) -> tuple[list[Row], dict[int, int]]:
    """The rows to send, and for each row left out, the sent row of the same play (an alias
    within the duplicate window): a webhook's row and a link's row of one play can meet in a
    batch. Undated rows are all sent (each is a play of its own). Pure."""
    sent: list[Row] = []
    seen: dict[str, Row] = {}
    twins: dict[int, int] = {}
    for row in rows:
        if row.at == UNDATED:
            sent.append(row)
            continue
        twin = next((seen[k] for k in keys_near(row.item, row.at) if k in seen), None)
        if twin is not None:
            twins[row.outbox.id] = twin.outbox.id
            continue
        sent.append(row)
        seen.update(dict.fromkeys(remembered_keys(row.item, row.at), row))
    return sent, twins


def _known_as(row: Row, searched: Mapping[int, MediaRef]) -> list[MediaRef]:
    """The row's item, and the same item with the ids Trakt's id search found for it: a
    webhook's episode named by its TVDB id alone shares no key with a link's copy of that
    play, named by its show's TMDB id."""
    wider = searched.get(row.outbox.id)
    return [row.item] if wider is None or wider == row.item else [row.item, wider]


def newest_ratings(
    rated: Sequence[Row], unrated: Sequence[Row]
) -> tuple[list[Row], list[Row], dict[int, int]]:
    """Of the ratings and rating removals of one item in a batch, only the newest is sent (a
    link's row and a webhook's row name it by different ids, so they do not take turns; the
    adds go out before the removals). Returns the ratings and removals to send, and each row
    left out with the row that supersedes it. Pure."""
    seen: dict[str, Row] = {}
    kept: set[int] = set()
    superseded: dict[int, int] = {}

    def when(row: Row) -> tuple[float, int]:
        # A link's removal carries no time of its own (0): it is as new as its queueing.
        return (row.at or row.outbox.created_at, row.outbox.id)

    for row in sorted([*rated, *unrated], key=when, reverse=True):
        newer = next((seen[k] for k in item_aliases(row.item) if k in seen), None)
        if newer is not None:
            superseded[row.outbox.id] = newer.outbox.id
            continue
        kept.add(row.outbox.id)
        seen.update(dict.fromkeys(item_aliases(row.item), row))
    return (
        [r for r in rated if r.outbox.id in kept],
        [r for r in unrated if r.outbox.id in kept],
        superseded,
    )


def can_rate(item: MediaRef) -> bool:
    """A show's or season's rating can go to Trakt: the show has an id Trakt matches by."""
    return bool(trakt_ids(item.ids if item.kind == "show" else item.show_ids))


def _unmatched(
    item: MediaRef, source: str | None, problem: Problem | None, doubt: str | None = None
) -> Outcome:
    """A row Trakt cannot be sent yet: held while its media server refuses our key, retried
    soon after the server's outage, else unmatched with what the user can do (`doubt`: why
    an own id of the episode was left out; then the reason is that and its fix, in its
    metadata, and briefly what else would help: `ids.series_id_reason`)."""
    if problem is not None and (problem.credentials or problem.transient):
        return waiting_on(problem, AUTH_HOLD, UNMATCHED_RETRY, "")
    if doubt is not None:
        also = show_ids_also(item, source) if problem is None else problem.also
        return Retry(f"unmatched: {series_id_reason(doubt, also)}", after=UNMATCHED_RETRY)
    why = title_unmatched(item, source)
    known = f" ({problem.message})" if problem else ""
    why = why or f"Trakt has no id for {item.describe()} yet{known}"
    return Retry(f"unmatched: {why}", after=UNMATCHED_RETRY)


def _untold(row: Row) -> Outcome:
    """An undated add that may have landed whose play count Trakt's answer did not give."""
    why = (
        f"Trakt's play counts do not tell whether the add of {row.item.describe()} landed; "
        "not sent again until they do"
    )
    return unsure(Retry(why))


def _not_found(item: MediaRef, why: str | None = None) -> Outcome:
    """A row whose item Trakt answered "not found" to: unmatched, tried again hourly; `why`:
    what kept it from being placed otherwise."""
    because = f" ({why})" if why else ""
    return Retry(f"unmatched: Trakt could not find {item.describe()}{because}", UNMATCHED_RETRY)


def _is_start(row: Row) -> bool:
    return is_start(row.outbox)


def starts_last(rows: Sequence[Row]) -> list[Row]:
    """`rows` in order, but a "watching" start goes after the rows of other items: Trakt shows
    one item as watching, and a stop of another item sent after the start would end it
    (auto-play posts the next episode's start and this one's stop in either order; a stop
    in a later turn sends the start again, `_shown_again`). Pure."""
    items = [row.item.key() for row in rows]
    last = {key: n for n, key in enumerate(items)}
    moved = [n for n, row in enumerate(rows) if _is_start(row) and last[items[n]] == n]
    return [row for n, row in enumerate(rows) if n not in moved] + [rows[n] for n in moved]


def stale_statuses(rows: Sequence[Row]) -> dict[int, int]:
    """Of the starts among `rows` in the order they go out, each one before the last live
    status (start or pause), with that status's outbox id: Trakt shows one item as watching,
    so a start followed by another status in the same turn would show for a second and cost
    a write (a burst of starts after an outage, someone zapping between films while Trakt was
    held). A pause always goes: it saves its item's progress on Trakt (what "continue
    watching" resumes from), which no status of another item replaces. Pure."""
    statuses = [row for row in rows if row.outbox.action == "watching"]
    if len(statuses) < 2:
        return {}
    last = statuses[-1].outbox.id
    return {row.outbox.id: last for row in statuses[:-1] if _is_start(row)}


@dataclass
class Splits:
    """What is left of SPLIT_REQUESTS for the refused writes of one batch."""

    left: int = SPLIT_REQUESTS

    def take(self, requests: int) -> bool:
        """Spend `requests` if that many are left."""
        if requests > self.left:
            return False
        self.left -= requests
        return True


def halves(rows: Sequence[Row]) -> list[Sequence[Row]]:
    """`rows` in two, to be sent apart after Trakt refused them together. Pure."""
    middle = len(rows) // 2
    return [rows[:middle], rows[middle:]]


def refused(rows: Sequence[Row], what: str, exc: TraktRefused) -> dict[int, Outcome]:
    """The outcome of rows whose `what` Trakt refused whole (nothing was written): retried, so
    one it keeps refusing ends as a dead letter naming the item and Trakt's answer. Pure."""
    said = exc.answer or "no reason given"
    if len(rows) == 1:
        why = (
            f"Trakt refused the {what} of {rows[0].item.describe()} with {exc.status} ({said}), "
            "sent alone: check its date and ids where it came from"
        )
        return {rows[0].outbox.id: Retry(why)}
    why = (
        f"Trakt refused a {what} of {len(rows)} items with {exc.status} ({said}); too many of "
        "them were refused to send each apart in one try"
    )
    return _all([r.outbox for r in rows], Retry(why))


@dataclass(frozen=True)
class Row:
    """An outbox row decoded for Trakt."""

    outbox: OutboxItem
    item: MediaRef
    at: float
    # Its Trakt episode id was found by its numbers (now or before): another row of its
    # viewing may have gone by ids it shares no key with (see `_placed_on_trakt`).
    placed: bool = False

    @property
    def payload(self) -> dict[str, Any]:
        return self.outbox.payload


class TraktTarget:
    name = NAME
    batch_size = HISTORY_BATCH  # one claim, at most one history and one ratings request

    def __init__(
        self,
        client: TraktClient,
        store: Store,
        config: DeliveryConfig,
        clock: Callable[[], float],
        enricher: Enricher | None = None,
        accounts: AccountNotes | None = None,
    ) -> None:
        self.enricher = enricher
        self.accounts = accounts
        self.client = client
        self.store = store
        self.config = config
        self.clock = clock
        # The enricher's resolver asks the same Trakt app: both space their retries together.
        shared = enricher.trakt if enricher is not None else None
        slots = shared.retry_slots if shared is not None else None
        self.resolver = TraktResolver(client.search, store, clock, client.search_title, slots)
        self.episodes = TraktEpisodes(trakt_listing(client), store, clock)
        # (profile, kind) -> (read at, Trakt's ratings): one read serves a backlog's batches.
        self._ratings_read: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        # (profile, kind) -> Trakt's history around a backlog's plays (`_added_elsewhere`).
        self._history_reads: dict[tuple[str, str], HistoryRead] = {}
        # (profile, kind) -> (read at, Trakt's play counts): for marks by hand (`_watched_read`).
        self._watched_reads: dict[tuple[str, str], tuple[float, list[Any]]] = {}
        # Profile -> the last start Trakt took and nothing ended since (deliver.watching):
        # lost in a restart, it is missed for seconds at most.
        self._shown: dict[str, SentStart] = {}

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.enricher is not None:
            await self.enricher.aclose()

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]:
        async def deliver_profile(
            profile: str, rows: list[OutboxItem], outcomes: dict[int, Outcome]
        ) -> None:
            await self._deliver_profile(profile, rows, now, outcomes)

        self._forget_stale_reads()
        # A hold keeps the mark of a row whose send may have landed (per_profile's `undecided`).
        # Live scrobbles first, each profile's before its own backlog: Trakt shows them as
        # they happen, and skips them once they are late.
        outcomes = await per_profile(
            items, deliver_profile, self._hold_for, self.store, live_first=True
        )
        return await self._told_of_ending_sign_ins(items, outcomes)

    def _forget_stale_reads(self) -> None:
        """Let go of the reads kept for a drain that can serve no more: an account's ratings
        or two days of its history are megabytes a service idle for months would hold."""
        now = self.clock()
        self._history_reads = {
            key: read
            for key, read in self._history_reads.items()
            if still_fresh(read.read_at, now, HISTORY_READ_KEEP)
        }
        self._ratings_read = {
            key: (read_at, entries)
            for key, (read_at, entries) in self._ratings_read.items()
            if still_fresh(read_at, now, RATINGS_READ_KEEP)
        }
        self._watched_reads = {
            key: (read_at, watched)
            for key, (read_at, watched) in self._watched_reads.items()
            if still_fresh(read_at, now, HISTORY_READ_KEEP)
        }

    async def _told_of_ending_sign_ins(
        self, items: Sequence[OutboxItem], outcomes: dict[int, Outcome]
    ) -> dict[int, Outcome]:
        """The deliveries made on a sign-in Trakt refused to renew, and the skips decided on
        its answers, carry why (an alert)."""
        profiles = {i.profile for i in items}
        ending = {p: why for p in profiles if (why := await self.client.sign_in_ending(p))}
        for item in items:
            outcome = outcomes.get(item.id)
            if shows_an_answer(outcome) and item.profile in ending:
                outcomes[item.id] = replace(outcome, sign_in_ending=ending[item.profile])
        return outcomes

    async def _after_first(self, item: MediaRef, first: Ids, first_number: int | None) -> MediaRef:
        """A further episode of a file holding several (no ids of its own): the episode as
        many places after the one Trakt's search gives for the file's first, on Trakt's own
        list, whatever ids its show is known by. The server's numbers would name another
        episode in another episode order (DVD order, one long anime season). As it was when
        Trakt does not know the first."""
        found = await self.resolver.first_of_file(item, first, first_number)
        if found is None or item.number is None or first_number is None:
            return item
        show_ids, season, number = found
        steps = item.number - first_number
        following = await self.episodes.following(show_ids, season, number, steps)
        season, number = following or (season, number + steps)
        return replace(item, show_ids=item.show_ids.merged(show_ids), season=season, number=number)

    def _at_its_own_moment(self, outcome: Outcome, asked: int) -> Outcome:
        """An unmatched row tried again at a moment of its own (`asked`: the resolver's count
        of searches as its lookups began), not with the rest of its round (ids.RetrySlots)."""
        if not is_unmatched(outcome):
            return outcome
        return replace(outcome, after=self.resolver.retry_after(asked, UNMATCHED_RETRY))

    def _hold_for(self, exc: Exception, profile: str = "") -> Outcome:
        if isinstance(exc, TraktAuthError):
            return Hold(exc.message, 900, "credentials", target_wide=False, sign_in=True)
        if isinstance(exc, TraktAccountError):
            cause = ACCOUNT_CAUSES.get(exc.status, "")
            return Hold(exc.message, ACCOUNT_HOLD, "account_limit", target_wide=False, cause=cause)
        if isinstance(exc, TraktSignInUnavailable):
            # Trakt's API may well serve the other profiles meanwhile.
            wait, asked = exc.retry_after or SIGN_IN_RETRY, exc.retry_after is not None
            return Hold(exc.message, wait, "service_unreachable", target_wide=False, asked=asked)
        if isinstance(exc, RateLimited):
            # Trakt limits each signed-in user: this profile waits, the others go on.
            return rate_limit_hold(exc.retry_after or 60, self.clock())
        if isinstance(exc, Unavailable):
            return service_hold(exc, self.config.retry_after)
        if isinstance(exc, TraktError):
            return Retry(exc.message)
        log.error("unexpected error delivering to Trakt", exc_info=exc)
        return crashed("trakt", exc)

    async def _deliver_profile(
        self, profile: str, rows: Sequence[OutboxItem], now: float, outcomes: dict[int, Outcome]
    ) -> None:
        if for_the_old_account(rows):  # removals: to the account they were meant for only
            rows = await for_the_account(
                self.accounts, NAME, profile, self._whose(profile), rows, outcomes
            )
        resolved: list[Row] = []
        for outbox in rows:
            searched = self.resolver.asked
            item = ref_from_dict(outbox.payload["item"])
            item, unplaced = await unplaced_episode(self.enricher, outbox, item, now)
            if unplaced is not None:
                outcomes[outbox.id] = unplaced
                continue
            if item.kind in ("show", "season"):
                # Ratings of a whole show or season (reconcile plans them, Plex's webhook
                # sends them), by the show's ids.
                if outbox.action not in ("rating", "remove_rating"):
                    outcomes[outbox.id] = Dead(f"a {item.kind} can only be rated on Trakt here")
                    continue
                held: Problem | None = None
                if item.kind == "season" and self.enricher is not None and not can_rate(item):
                    # A Plex season names its show by a plex:// guid: the show's item has ids.
                    enriched = await self.enricher.enrich(
                        item,
                        TRAKT,
                        outbox.payload.get("source"),
                        search_trakt=False,
                        from_server=outbox.payload.get("server"),
                    )
                    item, held = enriched.item, enriched.problem
                if can_rate(item):
                    resolved.append(Row(outbox, item, float(outbox.payload["at"])))
                elif held is not None:
                    waiting = _unmatched(item, outbox.payload.get("source"), held)
                    outcomes[outbox.id] = self._at_its_own_moment(waiting, searched)
                else:
                    outcomes[outbox.id] = Dead(f"no Trakt-usable id for {item.key()}")
                continue
            problem: Problem | None = None
            if first := outbox.payload.get("companion_of"):
                item = await self._after_first(item, ids_from(first["ids"]), first["number"])
            # Its own TMDB or IMDb id (Trakt takes episodes by none): Trakt's search names the
            # very episode, where its show and the server's numbers may name another (a show
            # in TheTVDB's order on the server). Its own ids that are its series' are left out.
            source = outbox.payload.get("source")
            played, (item, doubt) = item, await self._vetted(item, source)
            if self.enricher is not None and not can_send(item):
                # Ask the media server it came from; Trakt's search (below) is ours to make.
                enriched = await self.enricher.enrich(
                    item,
                    TRAKT,
                    source,
                    search_trakt=False,
                    from_server=outbox.payload.get("server"),
                )
                item, problem = enriched.item, enriched.problem
                if doubt is not None and item.show_ids != played.show_ids:
                    # Its show named now: a result judged by titles and numbers alone may be
                    # of that very show after all (a localised title, TheTVDB's numbers).
                    # Asked again whatever it could go by now: sendable by its show and the
                    # server's numbers, it may go to another episode (TheTVDB's order).
                    again = replace(played, show_ids=item.show_ids)
                    vetted, doubt = await self._vetted(again, source, judge_again=True)
                    item = vetted if doubt is None else item
            numbered = self.episodes.placed(item)  # a Trakt id found by its numbers before
            placed, item = numbered is not item, numbered
            if not can_send(item):
                item = await self.episodes.place(item)  # known by its absolute number only
            if not can_send(item):
                found = await self.resolver.resolve(item, source)
                if found is None or not can_send(found):
                    waiting = _unmatched(item, source, problem, doubt)
                    outcomes[outbox.id] = self._at_its_own_moment(waiting, searched)
                    continue
                item = found
            resolved.append(Row(outbox, item, float(outbox.payload["at"]), placed))

        history: list[Row] = []
        rated: list[Row] = []
        removed_plays: list[Row] = []
        removed_ratings: list[Row] = []
        # One fresh completion is scrobbled live; a burst of them goes out as one history add
        # (each scrobble costs a second of Trakt's 1 write/s budget).
        plays = [r for r in resolved if r.outbox.action == "play"]
        live_allowed = len(plays) <= LIVE_SCROBBLES_PER_BATCH
        ordered = starts_last(resolved)
        stale = stale_statuses(ordered)
        for row in ordered:
            action = row.outbox.action
            if row.outbox.id in stale:
                newer = stale[row.outbox.id]
                outcomes[row.outbox.id] = Skipped(
                    f"superseded by the newer live status of outbox row {newer}"
                )
                continue
            if action == "rating":
                rated.append(row)
            elif action == "remove_play":
                removed_plays.append(row)
            elif action == "remove_rating":
                removed_ratings.append(row)
            elif action == "watching":
                outcomes[row.outbox.id] = await self._watching(profile, row)
            elif action == "play":
                # Judged as it goes, not as the batch began: the machine may have slept
                # meanwhile (suspended waiting for Trakt's answer to the row before), and
                # Trakt dates a live stop by when it gets it.
                fresh = self.clock() - row.at <= self.config.late_after
                # A stop that may have landed goes the way that reads Trakt's history first
                # (Trakt's 409 window for a repeated scrobble is not documented).
                if (
                    live_allowed
                    and row.payload.get("live")
                    and fresh
                    and not row.outbox.may_have_landed
                ):
                    outcome = await self._live_stop(profile, row)
                    if outcome is not None:
                        outcomes[row.outbox.id] = outcome
                        continue
                history.append(row)
            else:
                outcomes[row.outbox.id] = Dead(f"unknown action {action!r} for Trakt")
        outcomes.update(await self._history(profile, history, now))
        rated, removed_ratings, superseded = newest_ratings(rated, removed_ratings)
        for older, newer in superseded.items():
            outcomes[older] = Skipped(
                f"superseded by the newer rating change of outbox row {newer}"
            )
        since, unread, asked = await self._rated_since(profile, [*rated, *removed_ratings])
        for row in since:
            outcomes[row.outbox.id] = Skipped(
                "Trakt holds a newer rating of it, given there since this one was planned",
                answered=row in asked,
            )
        for row, hold in unread:
            outcomes[row.outbox.id] = hold
            since.append(row)
        rated = [r for r in rated if r not in since]
        removed_ratings = [r for r in removed_ratings if r not in since]
        outcomes.update(await self._ratings(profile, rated))
        outcomes.update(await self._removals(profile, removed_plays, removed_ratings))

    def _whose(self, profile: str) -> Callable[[], Awaitable[str | None]]:
        """The account `profile` signs in to, asked of Trakt once per sign-in token before
        a batch with removals: a sign-in as someone else must not get the removals meant for
        the old account. (Asked before every batch, it would cost a live scrobble or a
        backlog's drain a request; the link runs ask before their reads.)"""

        async def whose() -> str | None:
            try:
                account = await self.client.account(profile)
            except (TraktAuthError, TraktAccountError):
                raise  # the writes would meet it too: the profile is held
            except TraktError as exc:  # an odd answer: the writes go on, as they did before
                log.warning("could not tell whose Trakt account: %s", exc.message)
                return None
            return account_named(account) if account else None

        return whose

    async def _watching(self, profile: str, row: Row) -> Outcome:
        if self.clock() - row.at > self.config.late_after:  # now, as it would go out
            return Skipped("too late for a live status; skipped")
        action = row.payload.get("scrobble_action", "start")
        progress = row.payload.get("progress") or 1.0
        sent = row.item
        if action != "start" and row.outbox.may_have_landed:
            shown = self._shown.get(profile)
            if shown is not None and not same_item(shown.item, sent):
                # Sent again, it would end what Trakt shows now, and a pause is no play.
                return Skipped(
                    f"superseded by the start of {shown.item.describe()} sent since its answer"
                    f" was lost: sent again, this {action} would end it"
                )
        sent_at = self.clock()
        try:
            try:
                await self.client.scrobble(profile, action, sent, progress)
            except TraktScrobbleInvalid:
                raise  # the item is known: placing it by its numbers changes nothing
            except TraktItemError:
                placed, _ = await self._by_numbers([row])
                if not placed:
                    raise
                sent = placed[0].item
                await self.client.scrobble(profile, action, sent, progress)
        except TraktScrobbleInvalid as exc:
            return Dead(exc.message)  # sent again, it is refused again (trakt-api.md §2)
        except TraktItemError:
            return Delivered("Trakt does not know this item; live status skipped", written=False)
        except Unavailable as exc:
            if action == "start" or not exc.outcome_unknown or exc.answered:
                raise
            # A pause (or a stop under 80 %, one to Trakt) whose answer was lost changes no
            # history, so sending it again is harmless: no hold of the target, which would keep
            # the next start waiting. Landed, it ended what Trakt showed (`_live_stop`).
            await self._shown_again(profile, sent, sent_at)
            return _may_have_landed(exc)
        except (TraktAuthError, TraktAccountError):
            raise
        except TraktError as exc:
            return Retry(exc.message)
        if action == "start":
            self._shown[profile] = SentStart(sent, progress, self.clock())
        else:
            await self._shown_again(profile, sent)
        return Delivered()

    async def _shown_again(
        self, profile: str, ended: MediaRef, sent_at: float | None = None
    ) -> None:
        """After Trakt took a pause or stop of `ended` (or may have: its answer was lost),
        which ends whatever it shows as watching: the start of another item sent a moment
        before goes again, as it was sent (deliver.watching). `sent_at`: when the stop went
        out (by default now), which is when Trakt ended it, however long its answer took.
        Best effort: the row that ended it is delivered all the same, and a start that fails
        is not tried again (the watching state is a courtesy)."""
        at = self.clock() if sent_at is None else sent_at
        again = to_send_again(self._shown.pop(profile, None), ended, at)
        if again is None:
            return
        try:
            await self.client.scrobble(profile, "start", again.item, again.progress)
        except ServiceError as exc:
            log.info(
                "could not show %s as watching on Trakt again after a stop of %s: %s",
                again.item.describe(),
                ended.describe(),
                exc.message,
            )
            return
        log.debug("showing %s as watching on Trakt again", again.item.describe())
        self._shown[profile] = again

    async def _live_stop(self, profile: str, row: Row) -> Outcome | None:
        """Scrobble a fresh completion; None means 'fall back to a history add'."""
        if await self._known_on_trakt(profile, [row]):
            return Skipped("already on Trakt")
        progress = row.payload.get("progress")
        if progress is None or progress < 80:
            progress = LIVE_STOP_PROGRESS  # the server said it was watched; Trakt needs >= 80
        await self.client.ensure_signed_in(profile)  # else nothing goes: not "may have landed"
        await self._note_sending([row], live=True)
        sent_at = self.clock()
        try:
            result = await self.client.scrobble(profile, "stop", row.item, progress)
        # The mark stays for a refusal: the client tries a scrobble again by itself (and once
        # more after a token refresh), so a refusal may follow a try that landed. It costs one
        # history read before the next send.
        except TraktItemError:
            return None
        except Unavailable as exc:
            if not exc.outcome_unknown:
                # No try reached Trakt's writes (it said it is down), nor did one before a
                # token refresh (the client counts those in): nothing to look for.
                await self._sent_nothing([row], exc.message)
                raise
            if exc.answered:
                raise  # Trakt is failing: the target is held (the mark stays)
            # A dropped connection or a timeout; it may have landed: a later live stop meets
            # Trakt's 409, a later history add reads Trakt's history first. Landed, it ended
            # the next episode's watching (auto-play): that start goes again now, not held
            # behind this row's check (a start sent again where it did not land changes nothing).
            await self._shown_again(profile, row.item, sent_at)
            return _may_have_landed(exc)
        except (TraktAuthError, TraktAccountError):
            raise
        except TraktError as exc:
            return unsure(Retry(exc.message))
        await self._shown_again(profile, row.item, sent_at)
        if result.action != "scrobble" or _an_earlier_viewing(result, row):
            return None
        await self._remember(profile, [row])
        if result.duplicate:
            return Delivered("already on Trakt (409)", written=False)
        return Delivered("scrobbled")

    async def _history(self, profile: str, rows: Sequence[Row], now: float) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        # An undated play (a link's "watched, date unknown") has no minute to recognise it
        # by: a second one of the same episode (a rewatch) is a play of its own, counted by
        # the planner and kept once by its outbox key, so only dated plays are looked up.
        known = await self._known_on_trakt(profile, [r for r in rows if r.at != UNDATED])
        outcomes.update(
            _all([r.outbox for r in rows if r.outbox.id in known], Skipped("already on Trakt"))
        )
        fresh = [r for r in rows if r.outbox.id not in known]
        # A play another app scrobbled to the same account (Trakt's own Plex scrobbler, Kodi's
        # add-on) while this one waited is on Trakt already, and Trakt takes it again.
        # Also one made while Trakt answered us 503: that says nothing of another app's try
        # (another node may have taken it) nor of a sync or a hand that added it since.
        looked_for = [r for r in fresh if _look_first(r, self.store.outbox_at_open)]
        elsewhere = await self._added_elsewhere(profile, looked_for)
        outcomes |= {id: replace(ELSEWHERE, answered=asked) for id, asked in elsewhere.items()}
        fresh = [r for r in fresh if r.outbox.id not in elsewhere]
        if elsewhere:
            # A link's copy of such a play (not looked for itself) is its twin in the mirror
            # now: sent, it would be the play a second time.
            known = await self._known_on_trakt(profile, [r for r in fresh if r.at != UNDATED])
            outcomes.update(
                _all([r.outbox for r in fresh if r.outbox.id in known], Skipped("already on Trakt"))
            )
            fresh = [r for r in fresh if r.outbox.id not in known]
        if any(r.outbox.may_have_landed for r in fresh):
            dated = [r for r in fresh if r.at != UNDATED]
            # Only a row that may have landed is looked for in Trakt's history: the span read
            # for it (a live stop is dated when it was sent) would take another play of a row
            # never sent (a rewatch minutes later) for its own. Every row marks itself before
            # it goes (`_note_sending`, taken back only for a refusal: `_sent_nothing`).
            unsure_dated = [r for r in dated if r.outbox.may_have_landed]
            unread = await self._learn_history(profile, unsure_dated) if unsure_dated else {}
            # A step of the clock since moved their times: looked for as they went out too,
            # in a read of its own (not one spanning the step, days or decades).
            as_sent = [a for a in map(_as_sent, unsure_dated) if a is not None]
            if as_sent:
                unread |= await self._learn_history(profile, as_sent)
            # All of them against the mirror: a row whose play went out with its twin (the
            # same play within the duplicate window, `one_per_play`) is not marked itself.
            confirmed_ids = await self._known_on_trakt(profile, dated + as_sent)
            landed, untold = await self._undated_on_trakt(profile, fresh)
            confirmed_ids |= landed
            confirmed = [r for r in fresh if r.outbox.id in confirmed_ids]
            outcomes.update(
                _all([r.outbox for r in confirmed], Delivered("already on Trakt", written=False))
            )
            # Trakt's counts did not tell whether it landed: not sent blindly (a second play),
            # checked again at the next try; the mark stays.
            outcomes.update({r.outbox.id: _untold(r) for r in fresh if r.outbox.id in untold})
            # History entries it cannot read may hold the play: it waits, the mark stays, and
            # so does a twin of it (a row of the same play queued after the lost answer).
            unread = {i: why for i, why in unread.items() if i not in confirmed_ids}
            waits = [r for r in fresh if r.outbox.id in unread]
            outcomes.update({r.outbox.id: unsure(unread[r.outbox.id]) for r in waits})
            twins_waiting = _twins_held([r for r in fresh if r not in waits], waits, unread)
            outcomes |= twins_waiting
            fresh = [
                r
                for r in fresh
                if r not in confirmed
                and r.outbox.id not in untold
                and r.outbox.id not in unread
                and r.outbox.id not in twins_waiting
            ]
        fresh = await self._unless_placed_on_trakt(profile, fresh, outcomes)
        watched = await self._watched_before_marks(profile, fresh)
        outcomes |= _all([r.outbox for r in fresh if r.outbox.id in watched], MARKED_WATCHED)
        fresh = [r for r in fresh if r.outbox.id not in watched]
        by_id = {r.outbox.id: r for r in fresh}
        unfound: set[int] = set()
        fresh, twins = one_per_play(fresh)
        while fresh:
            sent, not_found = await self._send_history(profile, fresh)
            outcomes |= sent
            unfound |= not_found
            # Trakt may find a twin by its own ids where its sent row's were not found.
            again = [by_id[twin] for twin, row in twins.items() if row in not_found]
            for twin, row in twins.items():
                if row not in not_found:
                    outcomes[twin] = _as_twin(outcomes[row], row)
            fresh, twins = one_per_play(again)
        # Once, not in the loop: a row placed by its numbers that Trakt still does not find
        # stays unmatched.
        placed, unplaced = await self._by_numbers([by_id[row] for row in sorted(unfound)])
        outcomes |= unplaced
        known = await self._known_on_trakt(profile, placed)
        # Each placed row was sent in this try and Trakt answered it ("not found"): a skip of
        # it shows this sign-in works (Skipped.answered), as a delivery would.
        on_trakt = Skipped("already on Trakt", answered=True)
        outcomes |= _all([r.outbox for r in placed if r.outbox.id in known], on_trakt)
        placed = [r for r in placed if r.outbox.id not in known]
        fresh, twins = one_per_play(await self._unless_placed_on_trakt(profile, placed, outcomes))
        if fresh:
            outcomes |= (await self._send_history(profile, fresh))[0]
            for twin, row in twins.items():
                outcomes[twin] = _as_twin(outcomes[row], row)
        return outcomes

    async def _added_elsewhere(self, profile: str, rows: Sequence[Row]) -> dict[int, bool]:
        """Outbox ids of the dated `rows` whose play Trakt's history holds within the duplicate
        window, written by another app (or by hand), each with whether that history was read
        just now through the profile's sign-in (a skip of it then shows the sign-in works:
        Skipped.answered). One read per kind of item, from the oldest play of `rows` to the
        newest play webhooks queued for the profile: it serves the next batches of a backlog
        (HISTORY_READ_KEEP), as our own writes are in the mirror. Entries it cannot read are
        not taken for the play (sent, as before)."""
        if not rows:
            return {}
        start = min(r.at for r in rows) - LOOK_MARGIN
        end = max(r.at for r in rows) + LOOK_MARGIN
        # A row falls due no sooner than its last try ended: a read older than that was made
        # before a try that failed, and another app may have added the play since.
        tried = max(r.outbox.next_attempt_at for r in rows)
        skew = self.client.clock_skew
        found: dict[int, bool] = {}
        rows_found: list[Row] = []
        for kind in sorted({_history_kind(r.item) for r in rows}):
            read, asked = await self._history_read(profile, kind, start, end, tried)
            of_kind = [r for r in rows if _history_kind(r.item) == kind]
            here = [
                r for r in of_kind if any(_same_play(e, r, skew) for e in read.entries_of(r.item))
            ]
            found |= {r.outbox.id: asked for r in here}
            rows_found += here
        await self._remember(profile, rows_found)
        return found

    async def _watched_before_marks(self, profile: str, rows: Sequence[Row]) -> set[int]:
        """Outbox ids of the Jellyfin or Emby marks by hand among `rows` (playback.hand_mark)
        whose item Trakt holds a play of before the mark: the server caught up (a season
        marked played, what the Plex beside it played), not a viewing of that day. What we
        know Trakt holds (the mirror: our writes, the plays we read) answers first; the rest
        are looked up in Trakt's play counts (`/sync/watched`, one paged read per kind kept
        HISTORY_READ_KEEP: a season or a library's import costs a read, not one per mark),
        by the show's ids and the episode's numbers too. Only one whose counts cannot tell
        (its last play after the mark, its show's episodes not counted) reads its own history,
        by its Trakt id; without one it is sent as before. A read that fails raises: the
        batch is held (nothing sent) and tried again, as for every read before a send."""
        marks = [r for r in rows if r.payload.get(HAND_MARK) and r.at != UNDATED]
        if not marks:
            return set()
        found = await asyncio.to_thread(self._marked_after_known_plays, profile, marks)
        skew = max(0.0, self.client.clock_skew)
        end = {r.outbox.id: r.at + LOOK_MARGIN + skew for r in marks}
        untold: list[Row] = []
        rest = [r for r in marks if r.outbox.id not in found]
        for kind in sorted({_watched_kind(r.item) for r in rest}):
            watched = await self._watched_read(profile, kind)
            for row in (r for r in rest if _watched_kind(r.item) == kind):
                said = watched_by(watched, row.item, end[row.outbox.id])
                if said:
                    found.add(row.outbox.id)
                elif said is None:
                    untold.append(row)
        for row in untold:
            if not row.item.ids.trakt:
                continue
            kind = _history_kind(row.item)
            entries = await self.client.history(
                profile, kind, str(row.item.ids.trakt), end_at=end[row.outbox.id]
            )
            if any(isinstance(e, dict) and history_entry_is(e, row.item) for e in entries):
                found.add(row.outbox.id)
        return found

    def _marked_after_known_plays(self, profile: str, rows: Sequence[Row]) -> set[int]:
        """Outbox ids of `rows` whose item the mirror knows Trakt holds a play of before
        (within LOOK_MARGIN after) the row's time."""
        aliases = sorted({alias for r in rows for alias in item_aliases(r.item)})
        earliest = earliest_plays(self.store.mirror_keys_of(NAME, profile, PLAYS, aliases))
        return {r.outbox.id for r in rows if played_by(earliest, r.item, r.at + LOOK_MARGIN)}

    async def _watched_read(self, profile: str, kind: str) -> list[Any]:
        """Trakt's play counts of `kind` (`movies`, `shows`): one read within HISTORY_READ_KEEP
        serves a backlog's batches (our own writes since are in the mirror)."""
        now = self.clock()
        kept = self._watched_reads.get((profile, kind))
        if kept is not None and still_fresh(kept[0], now, HISTORY_READ_KEEP):
            return kept[1]
        watched = await self.client.watched(profile, kind)
        self._watched_reads[profile, kind] = (now, watched)
        return watched

    async def _history_read(
        self, profile: str, kind: str, start: float, end: float, tried: float
    ) -> tuple[HistoryRead, bool]:
        """Trakt's history of `kind` from `start` to `end`: an earlier read spanning them made
        within HISTORY_READ_KEEP and not before the rows' last try (`tried`: when they fell
        due, no sooner than it ended), else a read over every play webhooks queued for the
        profile that waits (a backlog's later batches, claimed in the order their tries came
        due, not their plays'); and whether Trakt was asked now. Another app writes its plays
        as they happen: a read minutes old still holds those of the backlog's past minutes,
        but not a play another app caught up on after our try failed (Trakt coming back)."""
        read = self._history_reads.get((profile, kind))
        now = self.clock()
        if (
            read is not None
            and read.start <= start
            and end <= read.end
            and tried <= read.read_at
            and still_fresh(read.read_at, now, HISTORY_READ_KEEP)
        ):
            return read, False
        waiting = await asyncio.to_thread(self.store.waiting_plays_span, NAME, profile)
        if waiting is not None:
            # Not back to a play that has waited for months (unmatched): a read that long
            # would page through all of the account's history at each late play.
            start = min(start, max(waiting[0] - LOOK_MARGIN, start - HISTORY_LOOK_BACK))
            if waiting[1] <= now:
                end = max(end, waiting[1] + LOOK_MARGIN)
        entries = await self._history_around(profile, kind, start, end)
        read = HistoryRead(now, start, end, by_item_ids(entries))
        self._history_reads[profile, kind] = read
        return read, True

    async def _by_numbers(self, rows: Sequence[Row]) -> tuple[list[Row], dict[int, Outcome]]:
        """Episodes Trakt did not find by their own ids, with the Trakt id of the episode its
        season list has at their numbers, where that is the same episode (ids.same_episode):
        Trakt lost many episodes' TVDB ids, often all a Jellyfin or Emby episode carries. And
        the outcomes of others that a setting would place (the server's url and API key not
        set: its show is not known): unmatched, saying so. One its numbers do not place (its
        show unknown, or Trakt numbering it elsewhere) is looked up by its other own ids (its
        TMDB or IMDb id) in Trakt's id search, which names the very episode."""
        placed: list[Row] = []
        unplaced: dict[int, Outcome] = {}
        for row in rows:
            item = row.item
            if item.kind != "episode" or "trakt" in item.ids.present():
                continue
            if not has_trakt_ids(item.show_ids) and self.enricher is not None:
                source = row.payload.get("source")
                bare = replace(item, ids=Ids())  # what the enricher makes sendable: the show
                shown = await self.enricher.enrich(
                    bare, TRAKT, source, search_trakt=False, from_server=row.payload.get("server")
                )
                item = replace(item, show_ids=shown.item.show_ids)
                if shown.problem is not None and shown.problem.unconfigured:
                    unplaced[row.outbox.id] = _not_found(row.item, shown.problem.message)
            found = await self.episodes.by_numbers(item)
            if found is None:
                try:
                    found = await self._by_own_ids(item)
                except Unavailable as exc:
                    # After a write, whose outcomes stand: the row is tried again as unmatched.
                    self.resolver.failed(item, exc)
            if found is not None:
                placed.append(replace(row, item=found, placed=True))
                unplaced.pop(row.outbox.id, None)
        return placed, unplaced

    async def _vetted(
        self, item: MediaRef, source: str | None, judge_again: bool = False
    ) -> tuple[MediaRef, str | None]:
        """An episode without the own ids that are its series' (ids.distrusted), with the Trakt
        id its own ids find, and why ids were left out (None: none was). One Trakt can take
        by its TVDB id without a lookup is looked up only while no show id can tell its own
        ids from its series' and those ids may be a user's metadata (`source`: see
        ids.own_ids_may_be_written): that TVDB id may be its series'.
        `judge_again`: its search result (cached) is judged whatever the episode could go by
        (its show named since an earlier judgement refused that result).
        Raises Unavailable when Trakt cannot be asked now and the episode cannot go without
        the lookup (see `_by_own_ids`); one that can goes as it is."""
        if item.kind != "episode" or item.ids.trakt:
            return item, None
        copied = copied_series_ids(item)
        doubt = distrusted(item, copied[0], {}) if copied else None
        item = without_ids(item, copied)
        sendable = can_send(item)
        vouched = has_trakt_ids(item.show_ids) or not own_ids_may_be_written(item, source)
        if not lookups(item) or (sendable and vouched and not judge_again):
            return item, doubt
        try:
            vetted, why = await self.resolver.vetted(item)
        except Unavailable as exc:
            if not sendable:
                raise
            self.resolver.failed(item, exc)
            return item, doubt
        except ServiceError as exc:
            self.resolver.failed(item, exc)
            return item, doubt
        if not vetted.ids.trakt:  # nothing found: as it was, without the ids left out
            left_out = [n for n, v in item.ids.present().items() if not getattr(vetted.ids, n)]
            vetted = without_ids(item, left_out)
        return vetted, why or doubt

    async def _by_own_ids(self, item: MediaRef) -> MediaRef | None:
        """The episode with the Trakt id the id search finds for its own ids; None when it
        finds none, or the search failed (the row is tried again as unmatched). Raises
        Unavailable when Trakt cannot be asked now (rate limited, down): going on without it
        would send the episode by the server's numbers, which may name another one."""
        try:
            found = await self.resolver.resolve(item)
        except Unavailable:
            raise
        except ServiceError as exc:
            self.resolver.failed(item, exc)
            return None
        return found if found is not None and found.ids.trakt else None

    async def _send_history(
        self, profile: str, fresh: Sequence[Row], splits: Splits | None = None
    ) -> tuple[dict[int, Outcome], set[int]]:
        """Each row's outcome, and the rows Trakt did not find. Rows Trakt refuses together
        (400/422: nothing was written) go again in halves, until the ones it refuses are
        alone (`splits` bounds the requests that takes)."""
        # An undated play (reconcile.UNDATED, e.g. a Serializd tick) goes out as `released`.
        plays = [HistoryPlay(r.item, r.at if r.at != UNDATED else None) for r in fresh]
        await self._note_sending(fresh)
        try:
            result = await self.client.add_history(profile, plays)
        except Unavailable as exc:
            if not exc.outcome_unknown:
                await self._sent_nothing(fresh, exc.message)
                raise  # the service said no: the target is held, nothing was written
            if exc.answered:
                raise  # a 500 or a gateway's error: held, the marks stay for the check
            # A dropped connection; the add may have landed: look before sending it again.
            return _all([r.outbox for r in fresh], _may_have_landed(exc)), set()
        except (TraktAuthError, TraktAccountError) as exc:
            await self._sent_nothing(fresh, exc.message)
            raise
        except TraktRefused as exc:
            await self._sent_nothing(fresh, exc.message)  # refused whole: nothing landed
            splits = splits or Splits()
            if len(fresh) == 1 or not splits.take(2):
                return refused(fresh, "history add", exc), set()
            outcomes: dict[int, Outcome] = {}
            unfound: set[int] = set()
            for half in halves(fresh):
                sent, not_found = await self._send_history(profile, half, splits)
                outcomes |= sent
                unfound |= not_found
            return outcomes, unfound
        except TraktError as exc:
            return _all([r.outbox for r in fresh], Retry(exc.message)), set()
        missing = {id(ref) for ref in result.not_found}
        added = [r for r, play in zip(fresh, plays, strict=True) if id(play.item) not in missing]
        await self._remember(profile, added)
        not_found = {r.outbox.id for r in fresh} - {r.outbox.id for r in added}
        return {
            row.outbox.id: (
                _not_found(row.item)
                if row.outbox.id in not_found
                else Delivered("added to history")
            )
            for row in fresh
        }, not_found

    async def _ratings(self, profile: str, rows: Sequence[Row]) -> dict[int, Outcome]:
        async def rate(rows: Sequence[Row]) -> WriteResult:
            writes = [
                RatingWrite(r.item, ratings.to_trakt(int(r.payload["rating"])), r.at) for r in rows
            ]
            return await self.client.add_ratings(profile, writes)

        return await self._rating_writes(rows, rate, "rated")

    async def _rated_since(
        self, profile: str, rows: Sequence[Row]
    ) -> tuple[list[Row], list[tuple[Row, Hold]], list[Row]]:
        """The rating changes among `rows` that waited (an outage, a pause, a sign-in), or
        that a link's run planned on its read of Trakt (it may then read the other side for
        minutes before it queues), whose item the user rated on Trakt after them: sent, they
        would undo that (Trakt keeps the last rating written, whatever its date). A rating an
        earlier row of ours for the item set since is not the user's. One read per kind of
        item, for those only, serving the batches of a drain (RATINGS_READ_KEEP).
        Also those Trakt may hold a newer rating of, in an answer in a shape watchbridge does
        not know (a rating of the item without a readable `rated_at`, or one naming no item
        it can read), each with its hold: they wait until it reads again (`changed_hold`).
        And the rows whose kind Trakt was asked for now, not served from an earlier read: a
        skip of theirs rests on Trakt answering this sign-in now (Skipped.answered)."""
        now = self.clock()
        waited = [r for r in rows if r.outbox.waited(now) or r.outbox.planned_on_a_read]
        kinds = sorted({_RATING_KINDS.get(r.item.kind, "") for r in waited} - {""})
        # Not `updated_at`: the claim sets it, so each batch of a drain would read again. A
        # row falls due no sooner than its last try ended (each try sets its next one then or
        # later), and its claim only after that.
        tried = max((r.outbox.next_attempt_at for r in waited), default=0.0)
        entries: list[dict[str, Any]] = []
        asked_kinds: set[str] = set()
        for kind in kinds:
            read, asked = await self._trakt_ratings(profile, kind, tried)
            entries += read
            if asked:
                asked_kinds.add(kind)
        asked_rows = [r for r in waited if _RATING_KINDS.get(r.item.kind) in asked_kinds]
        unnamed = sum(1 for e in entries if not trakt_names_item(e))
        newer: list[Row] = []
        unread: list[tuple[Row, Hold]] = []
        for row in waited:
            at = ratings.overtaken_after(row.at, row.outbox.planned_from)
            given = [(_rated_at(e), e.get("rating")) for e in entries if rating_is(e, row.item)]
            times = [t for t, _ in given]
            since = [value for t, value in given if t is not None and t > at + ratings.RATED_SLACK]
            if since and not await self._ours(row.outbox, at, since):
                newer.append(row)
            # An unreadable row naming no item holds only rows that waited: a link's fresh
            # rows would all wait on one odd row for as long as Trakt sends it (the link's own
            # read keeps the ratings read before for it, answer shapes in README).
            elif None in times or (unnamed and row.outbox.waited(now)):
                what = (
                    "a rating of the item on Trakt has no `rated_at` watchbridge can read"
                    if None in times
                    else f"{unnamed} of {len(entries)} ratings name no item watchbridge can read"
                )
                then = "this rating waits, without giving up, as Trakt may hold a newer one"
                unread.append((row, changed_hold("Trakt", what, then)))
        return newer, unread, asked_rows

    async def _ours(self, row: OutboxItem, since: float, values: list[Any]) -> bool:
        """Whether every rating Trakt shows given since `since` (`values`) is one an earlier
        row of ours for the item set then (a retry landing while a link's run read the other
        side), not the user's."""
        sent = await asyncio.to_thread(self.store.ratings_sent_since, row, since)
        ours = {ratings.to_trakt(v) for v in sent if v is not None}
        return all(value in ours for value in values)

    async def _trakt_ratings(
        self, profile: str, kind: str, tried: float
    ) -> tuple[list[dict[str, Any]], bool]:
        """Trakt's ratings of one kind, as read within RATINGS_READ_KEEP and after the rows'
        last try (`tried`: when they fell due, no sooner than it): a read before a try that
        failed may miss a rating given since; and whether Trakt was asked now (False: an
        earlier read served them)."""
        read_at, entries = self._ratings_read.get((profile, kind), (0.0, []))
        if still_fresh(read_at, self.clock(), RATINGS_READ_KEEP) and read_at > tried:
            return entries, False
        entries = await self.client.ratings(profile, kind)
        self._ratings_read[profile, kind] = (self.clock(), entries)
        return entries, True

    async def _rating_writes(
        self,
        rows: Sequence[Row],
        send: Callable[[Sequence[Row]], Awaitable[WriteResult]],
        done: str,
        splits: Splits | None = None,
    ) -> dict[int, Outcome]:
        """Rating writes (`send`), each row `done` unless Trakt did not find its item; an
        episode it did not find by its own ids goes once more, placed by its numbers. Rows
        Trakt refuses together (400/422) go again in halves, as history adds do."""
        outcomes: dict[int, Outcome] = {}
        while rows:
            try:
                result = await send(rows)
            except (TraktAuthError, TraktAccountError, Unavailable):
                raise
            except TraktRefused as exc:
                splits = splits or Splits()
                what = "rating" if done == "rated" else "rating removal"
                if len(rows) == 1 or not splits.take(2):
                    return outcomes | refused(rows, what, exc)
                for half in halves(rows):
                    outcomes |= await self._rating_writes(half, send, done, splits)
                return outcomes
            except TraktError as exc:
                return outcomes | _all([r.outbox for r in rows], Retry(exc.message))
            missing = {id(ref) for ref in result.not_found}
            unfound = [r for r in rows if id(r.item) in missing]
            outcomes |= {r.outbox.id: _not_found(r.item) for r in unfound}
            outcomes |= _all([r.outbox for r in rows if r not in unfound], Delivered(done))
            rows, unplaced = await self._by_numbers(unfound)  # those placed: once more
            outcomes |= unplaced
        return outcomes

    async def _removals(
        self, profile: str, plays: Sequence[Row], rated: Sequence[Row]
    ) -> dict[int, Outcome]:
        """Removals a reconcile plan decided (a play or rating removed on the other side)."""
        outcomes: dict[int, Outcome] = {}
        ids: dict[int, int] = {}  # outbox id -> Trakt history id
        found: dict[int, int] = {}  # those looked up by this try
        for row in plays:
            record = str(row.payload.get("record", ""))
            pinned = row.payload.get(HISTORY_ID)
            if record.isdigit():
                ids[row.outbox.id] = int(record)
            elif isinstance(pinned, int):
                # An earlier try looked its play up, and may have removed it: that play again
                # (if gone, Trakt removes nothing), never the nearest one left (a rewatch).
                ids[row.outbox.id] = pinned
            elif record.startswith(EXPECTED):
                # A play we wrote and the engine has not read back yet: find its id.
                history_id = await self._history_id(profile, row)
                if history_id is None:
                    outcomes[row.outbox.id] = Delivered(
                        "no such play on Trakt (already gone)", written=False
                    )
                elif isinstance(history_id, Hold):
                    outcomes[row.outbox.id] = history_id
                else:
                    ids[row.outbox.id] = found[row.outbox.id] = history_id
            else:
                message = f"no Trakt history id in the removal of {row.item.describe()}"
                outcomes[row.outbox.id] = Dead(message)
        named = [r for r in plays if r.outbox.id in ids]
        looked_up = [r for r in named if r.outbox.id in found]
        if named:
            await self._note_removing(looked_up, found)
            # The play counts kept for marks (`_watched_read`) may count a play it removes.
            self._watched_reads = {k: w for k, w in self._watched_reads.items() if k[0] != profile}
            try:
                await self.client.remove_history(profile, sorted(set(ids.values())))
            except (TraktAuthError, TraktAccountError, Unavailable) as exc:
                if not isinstance(exc, Unavailable) or not exc.outcome_unknown:
                    # Refused outright: not marked as sent (the id stays pinned all the same).
                    await self._sent_nothing(looked_up, exc.message)
                raise
            outcomes |= _all([r.outbox for r in named], Delivered("removed from history"))
            await self._forget(profile, named)
        if rated:

            async def unrate(rows: Sequence[Row]) -> WriteResult:
                return await self.client.remove_ratings(profile, [r.item for r in rows])

            outcomes |= await self._rating_writes(rated, unrate, "rating removed")
        return outcomes

    async def _history_id(self, profile: str, row: Row) -> int | Hold | None:
        """The id of the play of `row.item` we wrote for `row.at`: the nearest one where our
        write may have put it (see `_written_span`). A play further off is not ours: the
        user's rewatch, with ours never landed or already gone (None). None readable, but
        history entries there watchbridge cannot read may be it (`_may_be_play`): held
        (`changed_hold`), as taken for gone the removal would be dropped and the play stay."""
        span = self._written_span(row)
        kind = _history_kind(row.item)
        entries = await self._history_around(profile, kind, row.at - span[0], row.at + span[1])
        skew = self.client.clock_skew
        plays = [
            (min(abs(at - row.at) for at in near), int(e["id"]))
            for e in entries
            if isinstance(e, dict)
            and history_entry_is(e, row.item)
            and str(e.get("id", "")).isdigit()
            and _time_problem(e) is None
            and e["watched_at"]
            and (near := _near(parse_iso(str(e["watched_at"])), row.at, span, skew))
        ]
        if plays:
            return min(plays)[1]
        if any(_may_be_play(e, kind, row, span, skew) for e in entries):
            said = unread_history(entries, kind)
            return changed_hold(
                "Trakt",
                f"{said}, and the play to remove may be one of them",
                "it is not taken as gone, without giving up, until the history reads again",
            )
        return None

    def _written_span(self, row: Row) -> tuple[float, float]:
        """How long before and after `row.at` a play we wrote for it can be on Trakt: a
        history add at its own time, one that was there already within the duplicate window
        (a viewing's least length before: our clock ahead of Trakt's), a live stop dated when
        it was sent (`live_reach`: as the row noted, not by delivery.late_after now)."""
        return max(120.0, _viewing_margin(row)), live_reach(row.payload, self.config.late_after)

    async def _history_around(
        self, profile: str, kind: str, start: float, end: float, trakt_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Trakt's history of `kind` (of the one item `trakt_id` names, if given) from `start`
        to `end` (our clock), read wide enough for the plays Trakt dated by its own clock (see
        `readings`)."""
        # The skew is known by now: a delivery asks whose account it is first.
        skew = self.client.clock_skew
        return await self.client.history(
            profile, kind, trakt_id, start_at=start + min(0.0, skew), end_at=end + max(0.0, skew)
        )

    async def _known_on_trakt(self, profile: str, rows: Sequence[Row]) -> set[int]:
        """Outbox ids of the rows whose play we know Trakt already holds (one query)."""
        # Off the loop: a backlog's batch names thousands of keys.
        return await asyncio.to_thread(self._known_in_mirror, profile, rows)

    def _known_in_mirror(self, profile: str, rows: Sequence[Row]) -> set[int]:
        # A key may name several rows: twins of one play share keys.
        keys: dict[str, set[int]] = {}
        for row in rows:
            for key in keys_near(row.item, row.at):
                keys.setdefault(key, set()).add(row.outbox.id)
        if not keys:
            return set()
        found = self.store.mirror_has(NAME, profile, PLAYS, list(keys))
        return {outbox_id for key in found for outbox_id in keys[key]}

    async def _searched(self, rows: Sequence[Row]) -> dict[int, MediaRef]:
        """By outbox id, each row's item with the TMDB id an earlier Trakt id search found
        (`ids.keyed_as_a_link`; the cache only, no one is asked)."""
        now = self.clock()
        return await asyncio.to_thread(
            lambda: {r.outbox.id: keyed_as_a_link(self.store, r.item, now) for r in rows}
        )

    async def _note_sending(self, rows: Sequence[Row], live: bool = False) -> None:
        """If we crash before Trakt's answer is recorded, these rows come back marked, and are
        checked against Trakt's history before being sent again: at the time each went out as
        (SENT_AT) too, which a step of the clock can take its `at` away from, and a `live` stop
        as far after its play as it goes now (LIVE_SENT_AFTER), where Trakt dates it. A history
        add of a row never sent before is noted as sent at its play (0): Trakt dates it there,
        and the check looks no later for it (`live_reach`)."""
        now = self.clock()

        def note() -> None:
            # Marked in the store: an earlier send (this attempt's live stop falling back to
            # a history add, or one by a release that noted nothing) may be what landed.
            marked = set() if live else self.store.marked([r.outbox.id for r in rows])
            sent = [(r.outbox, {SENT_AT: r.at} | _sent_after(r, now, live, marked)) for r in rows]
            self.store.note_resolved(sent, f"{UNKNOWN_OUTCOME}: sent", now)

        await asyncio.to_thread(note)

    async def _note_removing(self, looked_up: Sequence[Row], found: dict[int, int]) -> None:
        """Pin the Trakt history ids just looked up for removals (`found`: outbox id ->
        history id) to their rows (`looked_up`), marked as sent, before the removal goes: a
        try after a lost answer or a crash removes that play or nothing, not the play nearest
        its time then."""
        if looked_up:
            pins = [(r.outbox, {HISTORY_ID: found[r.outbox.id]}) for r in looked_up]
            message = f"{UNKNOWN_OUTCOME}: sent"
            await asyncio.to_thread(self.store.note_resolved, pins, message, self.clock())

    async def _sent_nothing(self, rows: Sequence[Row], why: str) -> None:
        """Take back `_note_sending` for rows Trakt refused outright (nothing was written), so
        the hold that follows does not keep them marked. A row marked before this attempt
        stays marked: an earlier send may have landed."""
        # Nor is a live stop of theirs to look for: a later send notes its own.
        unmarked = [
            (r.outbox, {LIVE_SENT_AFTER: None}) for r in rows if not r.outbox.may_have_landed
        ]
        if unmarked:
            message = f"not sent: {why}"
            await asyncio.to_thread(self.store.note_resolved, unmarked, message, self.clock())

    async def _remember(self, profile: str, rows: Sequence[Row]) -> None:
        if rows:
            # Under the ids Trakt's search found too: a link's copy of the play names it so.
            searched = await self._searched(rows)
            plays = {
                key: {"watched_at": r.at}
                for r in rows
                for ref in _known_as(r, searched)
                for key in remembered_keys(ref, r.at)
            }
            await asyncio.to_thread(
                self.store.mirror_put, NAME, profile, PLAYS, plays, self.clock()
            )

    async def _forget(self, profile: str, rows: Sequence[Row]) -> None:
        await asyncio.to_thread(forget_plays, self.store, profile, [(r.item, r.at) for r in rows])

    async def _undated_on_trakt(
        self, profile: str, rows: Sequence[Row]
    ) -> tuple[set[int], set[int]]:
        """Outbox ids of the unsure undated adds among `rows` that Trakt's play counts show
        landed, and of those whose count they do not tell. An undated play has no time to
        look for, so the count of the item's plays is compared with the count the sync
        planned against (one snapshot read per kind)."""
        undated = [
            r
            for r in rows
            if r.at == UNDATED and r.outbox.may_have_landed and "target_plays" in r.payload
        ]
        if not undated:
            return set(), set()
        kinds = sorted({_watched_kind(r.item) for r in undated})
        snapshot = [entry for kind in kinds for entry in await self.client.watched(profile, kind)]
        return undated_landed(undated, snapshot), undated_untold(undated, snapshot)

    async def _learn_history(self, profile: str, rows: Sequence[Row]) -> dict[int, Hold]:
        """Read Trakt's history around these plays into the mirror (after an unknown outcome).
        Returns the rows whose play may be in history entries watchbridge cannot read (outbox
        id -> its hold, `changed_hold`): taken as absent, it would be sent again, a second play."""
        # A live stop is stamped when it was sent (`_written_span`).
        span = {r.outbox.id: self._written_span(r) for r in rows}
        start = min(r.at - span[r.outbox.id][0] for r in rows)
        end = max(r.at + span[r.outbox.id][1] for r in rows)
        entries: dict[str, list[dict[str, Any]]] = {}
        for kind in sorted({_history_kind(r.item) for r in rows}):
            entries[kind] = await self._history_around(profile, kind, start, end)
        skew = self.client.clock_skew
        seen: list[Row] = []
        unread: dict[int, Hold] = {}
        for row in rows:
            kind = _history_kind(row.item)
            found, maybe = plays_in(entries[kind], kind, [row], span, skew)
            seen += found
            if maybe:
                said = unread_history(entries[kind], kind)
                unread[row.outbox.id] = changed_hold(
                    "Trakt",
                    f"{said}, and the play sent before may be one of them",
                    "it is not sent again, without giving up, until the history reads again",
                )
        await self._remember(profile, seen)
        return unread

    async def _unless_placed_on_trakt(
        self, profile: str, rows: Sequence[Row], outcomes: dict[int, Outcome]
    ) -> list[Row]:
        """`rows` to send, but those placed by their numbers whose play Trakt's history of the
        episode already holds (skipped), or may hold in entries it cannot read (held, and so
        is a twin of one). `rows` are not known to be on Trakt (the mirror)."""
        placed = [r for r in rows if r.placed and r.at != UNDATED]
        if not placed:
            return list(rows)
        seen, unread = await self._placed_on_trakt(profile, placed)
        # Trakt's history, read now through this sign-in, settles them (Skipped.answered).
        outcomes |= _all([r.outbox for r in seen], Skipped("already on Trakt", answered=True))
        waits = [r for r in rows if r.outbox.id in unread]
        # One whose own earlier send may have landed keeps that mark (Trakt answering "not
        # found" to this try's send landed nothing: no mark).
        outcomes |= {
            r.outbox.id: unsure(unread[r.outbox.id])
            if r.outbox.may_have_landed
            else unread[r.outbox.id]
            for r in waits
        }
        rest = [r for r in rows if r not in seen and r not in waits]
        twins_waiting = _twins_held(rest, waits, unread)
        outcomes |= twins_waiting
        return [r for r in rest if r.outbox.id not in twins_waiting]

    async def _placed_on_trakt(
        self, profile: str, rows: Sequence[Row]
    ) -> tuple[list[Row], dict[int, Hold]]:
        """Of the dated `rows`, placed by their numbers and not known to be on Trakt, those
        whose episode Trakt's history holds a play of within the duplicate window, and those
        held as history entries watchbridge cannot read may be that play (`changed_hold`).
        Another row of the viewing may have gone out by its show's other ids and numbers,
        remembered without Trakt's episode id: the two share no key. One read per episode,
        by the Trakt id the placing found (its plays only, near theirs)."""
        window = DUPLICATE_WINDOW_MINUTES * 60.0
        span = {r.outbox.id: (window, window) for r in rows}
        skew = self.client.clock_skew
        by_episode: dict[str, list[Row]] = {}
        for row in rows:
            by_episode.setdefault(str(row.item.ids.trakt), []).append(row)
        seen: list[Row] = []
        unread: dict[int, Hold] = {}
        for trakt_id, plays in by_episode.items():
            start = min(r.at for r in plays) - window
            end = max(r.at for r in plays) + window
            entries = await self._history_around(profile, "episodes", start, end, trakt_id)
            found, maybe = plays_in(entries, "episodes", plays, span, skew)
            seen += found
            said = unread_history(entries, "episodes")
            unread |= {
                row.outbox.id: changed_hold(
                    "Trakt",
                    f"{said}, and a play of this viewing sent before may be one of them",
                    "it is not sent, without giving up, until the history reads again",
                )
                for row in maybe
            }
        await self._remember(profile, seen)
        return seen, unread


def _as_sent(row: Row) -> Row | None:
    """`row` dated as its last send went out (SENT_AT), when a step of the clock has moved
    its time since (Store.restamp, redate_ahead); None when it has not."""
    sent = sent_before(row.payload, row.at)
    if sent is None or UNDATED in (sent, row.at):
        return None
    return replace(row, at=sent)


def plays_in(
    entries: Sequence[Any],
    kind: str,
    rows: Sequence[Row],
    span: dict[int, tuple[float, float]],
    skew: float,
) -> tuple[list[Row], list[Row]]:
    """Of `rows`, those whose play Trakt's history `entries` of `kind` hold within their
    `span` (outbox id -> seconds before and after; see `_near`), and those whose play may be
    among entries watchbridge cannot read (`_may_be_play`). Pure."""
    seen: list[Row] = []
    maybe: list[Row] = []
    for row in rows:
        near = span[row.outbox.id]
        if any(_play_near(e, kind, row, near, skew) for e in entries):
            seen.append(row)
        elif any(_may_be_play(e, kind, row, near, skew) for e in entries):
            maybe.append(row)
    return seen, maybe


ELSEWHERE = Skipped(
    "already on Trakt: its history holds a play of this item within 2 minutes of it that "
    "watchbridge did not write (another app scrobbling to the account, or marked by hand)"
)
MARKED_WATCHED = Skipped(
    "already watched on Trakt: a mark by hand in Jellyfin or Emby of an item Trakt's history"
    " holds a play of is taken for that play (the server caught up, a season marked played),"
    " not added as a viewing of today",
    answered=True,
)
HISTORY_READ_KEEP = 300.0  # seconds a history read serves the batches of a backlog's drain
HISTORY_LOOK_BACK = 2 * 86400.0  # how far before its batch such a read goes for waiting plays
# Seconds a look reads around its plays: the duplicate window and a minute for its edges.
LOOK_MARGIN = (DUPLICATE_WINDOW_MINUTES + 1) * 60.0


def still_fresh(read_at: float, now: float, keep: float) -> bool:
    """Whether a read made at `read_at` may serve at `now`: at most `keep` seconds old, and
    not made after `now` (the clock was set back since: its age is unknown)."""
    return 0.0 <= now - read_at <= keep


# (`movie`, `episode` or `show`, id name, id value) -> the history entries naming it so
HistoryByIds = dict[tuple[str, str, str], list[dict[str, Any]]]


@dataclass(frozen=True)
class HistoryRead:
    """Trakt's history of one kind from `start` to `end` (our clock), as read at `read_at`,
    by the ids its entries name (`by_item_ids`)."""

    read_at: float
    start: float
    end: float
    by_ids: HistoryByIds

    def entries_of(self, item: MediaRef) -> list[dict[str, Any]]:
        """The entries that may be plays of `item`: those sharing an id with it, or for an
        episode with its show (`history_entry_is` tells which are)."""
        named = [("movie", item.ids)] if item.kind == "movie" else []
        if item.kind == "episode":
            named = [("episode", item.ids), ("show", item.show_ids)]
        found: dict[int, dict[str, Any]] = {}
        for field, ids in named:
            for name, value in ids.present().items():
                found |= {id(entry): entry for entry in self.by_ids.get((field, name, value), ())}
        return list(found.values())


def by_item_ids(entries: Sequence[Any]) -> HistoryByIds:
    """History `entries` by each id their movie, episode and show name, so that a row is
    compared only with the entries that may be its play: a backlog's read holds its earlier
    batches' plays (thousands after a flood of webhooks), and each batch compared each of
    its rows with every entry, seconds on the event loop. Pure."""
    found: HistoryByIds = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for field in ("movie", "episode", "show"):
            for name, value in obj(obj(entry.get(field)).get("ids")).items():
                if value is not None:
                    found.setdefault((field, name, str(value)), []).append(entry)
    return found


def _look_first(row: Row, outbox_at_open: int) -> bool:
    """Whether a history add is looked for in Trakt's history before it goes (`_added_elsewhere`):
    a dated webhook's play never sent, or a link's queued before this start (a link's copy is
    planned on a read of Trakt: `links_since`). One that may have landed is looked for wider
    (`_learn_history`)."""
    planned = row.outbox.links_since(outbox_at_open)
    return row.at != UNDATED and not planned and not row.outbox.may_have_landed


def _same_play(entry: Any, row: Row, skew: float) -> bool:
    """Whether a history entry is a play of `row`'s item within the duplicate window of its
    minute, its time read either way it may have been written (`readings`)."""
    if not isinstance(entry, dict) or _time_problem(entry) or entry["watched_at"] is None:
        return False
    if not history_entry_is(entry, row.item):
        return False
    return any(
        one_play(reading, row.at) for reading in readings(parse_iso(entry["watched_at"]), skew)
    )


def _history_kind(item: MediaRef) -> str:
    return "movies" if item.kind == "movie" else "episodes"


def _twins_held(
    rows: Sequence[Row], waits: Sequence[Row], unread: Mapping[int, Hold]
) -> dict[int, Outcome]:
    """The holds of those of `rows` that are the play of a row among `waits` (held for
    `unread` history), each as the row it waits on: retried, it would die while that row
    waits on. Pure."""
    held = next(iter(unread.values()), None)
    if held is None:
        return {}
    return {twin: replace(held, reason=why) for twin, why in same_play_as(rows, waits).items()}


def same_play_as(rows: Sequence[Row], waiting: Sequence[Row]) -> dict[int, str]:
    """Of the dated `rows`, those of the play of a row among `waiting` (an alias within the
    duplicate window), with what to say. Pure."""
    keys = {key: row for row in waiting for key in remembered_keys(row.item, row.at)}
    found: dict[int, str] = {}
    for row in rows:
        twin = next((keys[k] for k in keys_near(row.item, row.at) if k in keys), None)
        if row.at != UNDATED and twin is not None:
            found[row.outbox.id] = f"the same play as outbox row {twin.outbox.id}, which waits"
    return found


def _ids_readable(media: Any) -> bool:
    """Whether a movie, show or episode object of Trakt's answer has `ids` with an id Trakt
    matches items by."""
    ids = media.get("ids") if isinstance(media, dict) else None
    return isinstance(ids, dict) and any(ids.get(name) is not None for name in TRAKT_ID_NAMES)


def _item_problem(entry: dict[str, Any], kind: str) -> str | None:
    """What of a history entry of `kind` (movies, episodes) naming its item watchbridge
    cannot read: a movie with ids; an episode with ids and its numbers, and its show with
    ids (a row may name the episode by either). None: nothing."""
    if kind == "movies":
        return None if _ids_readable(entry.get("movie")) else "no `movie` with ids"
    episode = entry.get("episode")
    numbered = isinstance(episode, dict) and all(
        isinstance(episode.get(field), int) for field in ("season", "number")
    )
    if not _ids_readable(episode) or not numbered:
        return "no `episode` with ids and numbers"
    return None if _ids_readable(entry.get("show")) else "no `show` with ids"


def _time_problem(entry: dict[str, Any]) -> str | None:
    """What of a history entry's `watched_at` watchbridge cannot read: Trakt sends an ISO
    time, or null for a play without a date. None: nothing."""
    if "watched_at" not in entry:
        return "no `watched_at`"
    stamp = entry["watched_at"]
    if stamp is None or (isinstance(stamp, str) and _is_iso(stamp)):
        return None
    return "a `watched_at` that is no ISO time"


def _is_iso(stamp: str) -> bool:
    try:
        parse_iso(stamp)
    except ValueError:
        return False
    return True


def history_entry_problem(entry: Any, kind: str) -> str | None:
    """What of one `/sync/history/{kind}` entry watchbridge cannot read to look for a play in
    it (None: nothing). Pure."""
    if not isinstance(entry, dict):
        return "no fields"
    return _item_problem(entry, kind) or _time_problem(entry)


def unread_history(entries: Sequence[Any], kind: str) -> str:
    """How many of the `/sync/history/{kind}` `entries` have each problem watchbridge cannot
    read them for (`http.rows_unread`). Pure."""
    return rows_unread(entries, lambda entry: history_entry_problem(entry, kind), "history entries")


def _play_near(entry: Any, kind: str, row: Row, span: tuple[float, float], skew: float) -> bool:
    """Whether a history entry is a play of `row` (see `_near`) by what it says: its item
    named by an id or numbers it shares with the row's, at a time it can read (the rest of
    it may be unreadable)."""
    if not isinstance(entry, dict) or _time_problem(entry) or entry["watched_at"] is None:
        return False
    at = parse_iso(entry["watched_at"])
    return history_entry_is(entry, row.item) and bool(_near(at, row.at, span, skew))


def _may_be_play(entry: Any, kind: str, row: Row, span: tuple[float, float], skew: float) -> bool:
    """Whether a history entry watchbridge cannot read all of may be a play of `row`: what it
    can read (its item, its time) does not tell it is another play."""
    if history_entry_problem(entry, kind) is None:
        return False
    if not isinstance(entry, dict):
        return True
    if _item_problem(entry, kind) is None and not history_entry_is(entry, row.item):
        return False  # another item's
    if _time_problem(entry) is not None:
        return True
    stamp = entry["watched_at"]
    return stamp is not None and bool(_near(parse_iso(stamp), row.at, span, skew))


def readings(watched_at: float, skew: float) -> tuple[float, float]:
    """A history entry's time on our clock, read both ways it may have been written: as we
    sent it (a history add carries our time) and as Trakt stamped it (a scrobble: by its own
    clock, `skew` ahead of ours)."""
    return watched_at, watched_at - skew


def _near(watched_at: float, at: float, span: tuple[float, float], skew: float) -> list[float]:
    """The readings of a history entry's time (see `readings`) from span[0] seconds before
    `at` to span[1] after it."""
    before, after = span
    return [reading for reading in readings(watched_at, skew) if -before <= reading - at <= after]


def undated_landed(undated: Sequence[Row], watched: Sequence[Any]) -> set[int]:
    """Which undated adds landed, from Trakt's watched snapshot: one whose item now has more
    plays than the `target_plays` the sync planned it against. (A batch holds one row per item:
    the adds of an item go out one after the other, each counted in the next one's
    `target_plays`.) Pure."""
    counts = {row.outbox.id: plays_in_snapshot(watched, row.item) for row in undated}
    return {
        row.outbox.id
        for row in undated
        if (plays := counts[row.outbox.id]) is not None and plays > int(row.payload["target_plays"])
    }


def undated_untold(undated: Sequence[Row], watched: Sequence[Any]) -> set[int]:
    """Which undated adds the watched snapshot cannot tell landed or not (their show's entry
    counts no episode's plays). Pure."""
    return {row.outbox.id for row in undated if plays_in_snapshot(watched, row.item) is None}


def plays_in_snapshot(watched: Sequence[Any], item: MediaRef) -> int | None:
    """How many plays of `item` a `/sync/watched/{movies|shows}` snapshot counts (§10); None
    when it cannot tell: its show's entry has no `seasons` (Trakt gives them only with
    `extended=progress`, and left them out for a while even then, trakt-api#844). A show
    with no entry has no plays."""
    counts = _snapshot_counts(watched, item)
    return None if counts is None else sum(int(c.get("plays") or 0) for c in counts)


def watched_by(watched: Sequence[Any], item: MediaRef, end: float) -> bool | None:
    """Whether a `/sync/watched` snapshot shows a play of `item` at `end` or before: False
    when it counts none at all, None when it cannot tell (its show's entry counts no
    episode's plays, or the episode has no show ids and numbers to look for; its last play
    is after `end`, and so may be the only one). Pure."""
    if item.kind != "movie" and not (item.show_ids and item.season is not None and item.number):
        return None
    counts = _snapshot_counts(watched, item)
    if counts is None:
        return None
    played = [c for c in counts if int(c.get("plays") or 0) > 0]
    if not played:
        return False
    last = [iso_time(c.get("last_watched_at")) for c in played]
    if any(at is not None and at <= end for at in last):
        return True
    return None


def earliest_plays(keys: Collection[str]) -> dict[str, int]:
    """The minute of the earliest play each alias has among the mirror's play `keys` (an
    alias at its minute, `remembered_keys`). Pure."""
    earliest: dict[str, int] = {}
    for key in keys:
        alias, _, minute = key.rpartition("@")
        if alias and minute.lstrip("-").isdigit():
            earliest[alias] = min(int(minute), earliest.get(alias, int(minute)))
    return earliest


def played_by(earliest: Mapping[str, int], item: MediaRef, end: float) -> bool:
    """Whether `earliest` (`earliest_plays`) holds a play of `item` at `end` or before. Pure."""
    last = int(end // 60)
    return any(earliest.get(alias, last + 1) <= last for alias in item_aliases(item))


def _snapshot_counts(watched: Sequence[Any], item: MediaRef) -> list[dict[str, Any]] | None:
    """The counts of `item` in a `/sync/watched` snapshot: its movie's entries, or its
    episode's under its show's entries; None when a show's entry has no `seasons`."""
    counts: list[dict[str, Any]] = []
    for entry in watched:
        if not isinstance(entry, dict):
            continue
        if item.kind == "movie":
            if _shares_id(obj(entry.get("movie")).get("ids"), item.ids):
                counts.append(entry)
            continue
        if not _shares_id(obj(entry.get("show")).get("ids"), item.show_ids):
            continue
        seasons = entry.get("seasons")
        if not isinstance(seasons, list):
            return None
        for season in seasons:
            if not isinstance(season, dict) or season.get("number") != item.season:
                continue
            for episode in season.get("episodes") or ():
                if isinstance(episode, dict) and episode.get("number") == item.number:
                    counts.append(episode)
    return counts


def _watched_kind(item: MediaRef) -> str:
    return "movies" if item.kind == "movie" else "shows"


def _shares_id(raw: Any, ids: Ids) -> bool:
    return isinstance(raw, dict) and any(
        raw.get(name) is not None and str(raw[name]) == value
        for name, value in ids.present().items()
    )


_RATING_KINDS = {"movie": "movies", "show": "shows", "season": "seasons", "episode": "episodes"}
RATINGS_READ_KEEP = 300.0  # seconds a read of Trakt's ratings serves the batches of a drain


def rating_is(entry: dict[str, Any], item: MediaRef) -> bool:
    """Whether one `/sync/ratings` entry rates `item`."""
    if item.kind in ("movie", "episode"):
        return history_entry_is(entry, item)
    show = obj(obj(entry.get("show")).get("ids"))
    if item.kind == "show":
        return _shares_id(show, item.ids)
    return _shares_id(show, item.show_ids) and obj(entry.get("season")).get("number") == item.season


def _rated_at(entry: dict[str, Any]) -> float | None:
    """A rating entry's `rated_at` (None when missing or unreadable: a changed answer, as
    Trakt dates every rating, and it may be newer than anything)."""
    return iso_time(entry.get("rated_at"))


def history_entry_is(entry: dict[str, Any], item: MediaRef) -> bool:
    """Whether one Trakt history entry is a play of `item`."""
    if item.kind == "movie":
        return _shares_id(obj(entry.get("movie")).get("ids"), item.ids)
    episode = obj(entry.get("episode"))
    if _shares_id(episode.get("ids"), item.ids):
        return True
    return (
        _shares_id(obj(entry.get("show")).get("ids"), item.show_ids)
        and episode.get("season") == item.season
        and episode.get("number") == item.number
    )


def _all(rows: Sequence[OutboxItem], outcome: Outcome) -> dict[int, Outcome]:
    return {row.id: outcome for row in rows}
