"""Delivering a link's plan to Plex: mark watched/unwatched and rate, with each person's token.

Tokens come from the reader's `ServerTokens`: a token the server refuses (401) is found again
through plex.tv once, and the row retried with it; only then are the person's rows held.

Rows (from `sync.outbox_rows`): `play`, `remove_play`, `rating`, `remove_rating`. Items are
found through the reader's map (`plex/keys`: canonical key -> ratingKeys, several when one
title sits in more than one library; all copies are written). A copy Plex answers 404 for has
left the library since the read: it is skipped (the log says so once, as the row is done with
it), and the other copies are written still; with none left, the row is retried an hour later
(the title gone from Plex, or back under a new ratingKey once the libraries are read again).
A 404 is Plex's only when its `/identity` vouches for it (`PlexClient._gone`): a reverse
proxy's 404 while Plex restarts is an outage (`Unavailable`), and the rows wait unspent.

Plays: Plex keeps one watched flag per item and stamps a scrobble *now*. A play is scrobbled
unless Plex already shows the item watched at or after the play's time; either way it is written
down first (`plex/written`, keyed by ratingKey and minute) so the reader recognises the history
row the scrobble makes and reads the play back at its real time, never as a new play "today". A
scrobble is never resent after an ambiguous failure by the HTTP policy; the row is retried, and
sent again only when Plex does not show the item viewed since its last try (each scrobble adds a
view; a view the person's history first holds later than ECHO_WINDOW after it is theirs, the try
made none: `Written.landed`; on a server since PMS 1.40.0.7998, which writes no row for a
scrobble, any view in the history since the try is theirs), and never to a copy an earlier try
of the row wrote that was removed since (`Written.row`: its retry must not undo an unwatch);
every attempt is recorded, so an echo of either is recognised. A row marked possibly sent (a
backup copy put back: our record of its write may be newer than the copy), or queued before this
process opened the database (`OutboxItem.links_since`: a data folder copied as it is and put
back holds no mark), is not scrobbled when Plex shows the item viewed since the row was queued:
the first such view (one history request for the item, by the account the link's last read read
the history by; else `lastViewedAt`) is taken for its write, as the reader takes it
(`sent_after_the_copy`), so a rewatch of the user's after it stays theirs and our scrobble's row
is our echo (on a server whose scrobbles make no row, a history row is the user's viewing: the
play is taken as written with no view of its own, not scrobbled over it). An item Plex shows
unwatched, whose history holds a view since the row was queued, was unwatched since (the user's
latest word): not scrobbled, recorded as written and removed. A write Plex answers with an
error spends the row's attempt (a poison item ends as a dead letter); the profile's other rows
wait without spending.

Ratings: a rating row that waited, or a link's (planned on a read of Plex that may be
minutes old: the run reads the other side before it queues), asks Plex first, and is skipped
when a copy holds another rating given since what planned it last saw Plex
(`OutboxItem.planned_from`) and after the rating it sets: the user's newer word. A rating an
earlier row of ours for the item set since is not taken for the user's. The batch's rating
rows ask together (`details`, a hundred copies a request), not one request each.

Removals: the row names the Plex play (`record`). A history play's row is deleted from the
server's history; a play we wrote or one read from the watched flag is marked removed in our
memory. The item is unscrobbled only when no other play of it remains on the plan's Plex side
(the reader's `plex/plays`): removing one of several viewings must not unwatch the item, and
removing the last one must. Plex is written before our memory, the unwatch before the history
row (a row gone from an item still watched reads back as a play with no row), and the play
stays in `plays` until the last step: a retry after a failure (or a crash) at any step finds
it and does every step again, each harmless twice. All but the unwatch: a view of the user's
since the removal was planned is never taken. A first try asks Plex first: with a copy viewed
since the run that planned it began reading Plex (`OutboxItem.planned_from`: it may have read
the other side for minutes before it queued), the user watched it again: it writes nothing
and changes none of our records (the removal is dropped, the play stays beside the new view,
the link's tombstone keeps it from being copied back). Else it notes its time (`unwatching`)
before the unwatch, and a retry leaves alone a copy Plex shows viewed since then; it only
finishes our records.
That note goes as the removal ends, and with its row however that ends (a dead letter
discarded). A copy that left the library is skipped, as for every row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from watchbridge import ratings
from watchbridge.config import Config, link_profiles, service_title, undeliverable
from watchbridge.deliver.worker import (
    Dead,
    Delivered,
    Hold,
    Outcome,
    Retry,
    Skipped,
    crashed,
    per_profile,
    shows_an_answer,
    unreadable_row,
)
from watchbridge.errors import naming_profile
from watchbridge.http import Unavailable
from watchbridge.ingest.common import number
from watchbridge.model import ref_from_dict
from watchbridge.readers.plex import (
    ECHO_WINDOW,
    HISTORY,
    HISTORY_ACCOUNT,
    HISTORY_PREFIX,
    KEYS,
    KEYS_FROM,
    LANDED_SLACK,
    PLAYS,
    RETIRED,
    ROWLESS_ECHO,
    SERVICE,
    SYNTHETIC,
    WATCHED_PREFIX,
    WRITTEN,
    WRITTEN_PREFIX,
    ServerTokens,
    Written,
    identity,
    key_for_ref,
    known_account_id,
    viewed_by,
    viewed_since,
    written_record,
)
from watchbridge.reconcile import EXPECTED
from watchbridge.services.plex import (
    PlexAuthError,
    PlexClient,
    PlexError,
    PlexItemError,
    ServerTokenRefused,
)
from watchbridge.store import MirrorCopy, OutboxItem, Store

log = logging.getLogger(__name__)

NAME = SERVICE
AUTH_HOLD = 1800.0
NOT_READ_RETRY = 1800.0
# The maps found not whole (`PlexReader._remember` writes them in parts): a write in parts
# ends within seconds, one cut short (a crash) at the link's next read.
PARTIAL_RETRY = 60.0
PARTIAL_MAPS = (
    "a link's read of Plex is writing what it read (or was cut short writing it): written "
    "once it is written whole"
)
GONE_RETRY = 3600.0
# What a play written to a copy now says (a scrobble sent): any other note is no write.
MARKED_WATCHED = "marked watched"
ACTIONS = frozenset({"play", "remove_play", "rating", "remove_rating"})
# record -> {"at", "row"}: when a removal first unwatched its item (our clock), kept for its
# retries; dropped as the removal ends, or once its outbox row is gone (`store.ROW_ENTRIES`)
UNWATCHING = "unwatching"
KEPT = (KEYS, PLAYS, WRITTEN, SYNTHETIC, UNWATCHING)  # the maps a Person holds


@dataclass(frozen=True)
class ViewSinceQueued:
    """A copy's first view (Plex's clock) since a play row was queued, whether the copy is
    still watched since then (False: unwatched after it), and whether that view is a history
    row (else `lastViewedAt` alone)."""

    first: float
    watched: bool
    in_history: bool = False


@dataclass(frozen=True)
class Landing:
    """Whether a write whose outcome was unknown landed (`PlexTarget._landing`), and the
    copy's `lastViewedAt` as Plex answered it then (its clock; None: not watched)."""

    landed: bool
    viewed: float | None


@dataclass
class Kept:
    """One profile's maps as the last batch left them (`PlexTarget._person`): the store's
    copy, and its `written` decoded as `Written`s (from the copy's `written` map `decoded`)."""

    copy: MirrorCopy
    decoded: dict[str, Any]
    written: dict[str, Written]


@dataclass
class Person:
    """One profile's token and the reader's memory, kept in step with every write."""

    profile: str
    token: str | None  # None: the server token
    keys: dict[str, Any]
    plays: dict[str, Any]
    written: dict[str, Written]
    synthetic: dict[str, Any]
    unwatching: dict[str, Any]
    # The copies the batch's checked rating rows name (`_rating_checked`), and their details
    # once asked (`PlexTarget._rated_now`).
    to_check: list[str] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)
    details: dict[str, Any] = field(default_factory=dict)


class PlexTarget:
    name = NAME
    batch_size = 200  # a local server, one or two requests per row; the maps load per batch
    # Seconds the maps kept after a full batch wait for the next one: a backlog whose last
    # batch comes full gets no batch less than full to let them go (the worker delivers no
    # empty claim), and the next row may come hours later.
    kept_idle = 60.0

    def __init__(
        self, client: PlexClient, config: Config, store: Store, clock: Callable[[], float]
    ) -> None:
        self.client = client
        self.config = config
        self.store = store
        self.clock = clock
        self.tokens = ServerTokens(config, store, client, clock)
        self._machine: str | None = None  # the server's machine id, asked once per round
        # Per profile: the maps kept between full batches (a backlog), read again only where
        # written since.
        self._kept: dict[str, Kept] = {}
        self._letting_go: asyncio.TimerHandle | None = None

    async def aclose(self) -> None:
        if self._letting_go is not None:
            self._letting_go.cancel()
        await self.tokens.aclose()
        await self.client.aclose()

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]:
        self.tokens.new_round()  # a token revoked tomorrow is found again tomorrow
        self._machine = None
        if self._letting_go is not None:
            self._letting_go.cancel()
            self._letting_go = None
        try:
            return await per_profile(items, self._deliver_profile, self._hold_for, self.store)
        finally:
            if len(items) < self.batch_size:
                # A backlog is through: the maps (tens of MB at a big library) are not kept
                # for a webhook's row that may come hours later; read again then.
                self._kept.clear()
            elif self._kept:
                loop = asyncio.get_running_loop()
                self._letting_go = loop.call_later(self.kept_idle, self._kept.clear)

    async def _deliver_profile(
        self, profile: str, rows: list[OutboxItem], outcomes: dict[int, Outcome]
    ) -> None:
        why = undeliverable(self.config, NAME, profile)
        if why is not None:
            # No token of theirs: the owner's would be used, writing to the owner's account.
            # (The service gives such rows up at start; a `watchbridge sync` may claim them.)
            gone = Dead(
                f"profile {profile} has no Plex account in the config ({why}): not written, "
                "as it would land in the server owner's account"
            )
            outcomes.update((row.id, gone) for row in rows)
            return
        replaced = await self._replaced(profile)
        if replaced is not None and not self._read_by_a_link(profile):
            gone = Dead(f"{replaced}, which no link in the config does for profile {profile}")
            outcomes.update((row.id, gone) for row in rows)
            return
        if replaced is not None:
            # Not the rows' fault: they wait (no attempt spent) for the link to read it.
            wait = Hold(replaced, NOT_READ_RETRY, target_wide=False)
            outcomes.update((row.id, wait) for row in rows)
            return
        token = await self.tokens.token(profile, self._machine)
        await self._refuse_pasted(profile, token)
        person = await asyncio.to_thread(self._person, profile, token)
        if person is None:
            # A mix of two reads' ratingKeys and plays: a write by it could go to the wrong
            # item, or take a play for one already there. Not the rows' fault: they wait.
            wait = Hold(PARTIAL_MAPS, PARTIAL_RETRY, target_wide=False)
            outcomes.update((row.id, wait) for row in rows)
            return
        person.to_check = _copies_to_check(person, rows, self.clock())
        for row in rows:
            try:
                outcomes[row.id] = await self._row(person, row)
            except Unavailable as exc:
                if exc.answered:  # Plex failed this row's write: it spends, the rest wait
                    outcomes[row.id] = Retry(exc.message, service_failed=True)
                raise
            except PlexAuthError as refused:
                # The server's own token (a history row goes with it) is no fault of theirs.
                if person.token is None or isinstance(refused, ServerTokenRefused):
                    raise await self.tokens.refused(profile, None, refused) from None
                # Nothing was written with a refused token: retry the row with a new one.
                try:
                    person.token = await self.tokens.renew(profile, person.token)
                    outcomes[row.id] = await self._row(person, row)
                except PlexAuthError as again:
                    raise await self.tokens.refused(profile, person.token, again) from None
        # Delivered, or skipped on what the server answered with this token: it works, so a
        # refusal of it on record (the status page's "refused") is over.
        if any(shows_an_answer(outcomes.get(row.id)) for row in rows):
            await self.tokens.taken(profile, person.token)

    async def _refuse_pasted(self, profile: str, token: str | None) -> None:
        """The read's refusal of a Home member's token pasted for the owner
        (`ServerTokens.refuse_pasted`), for the writes: the account the profile is read as is
        the one its config names by id, else the one the last read read the history by."""
        person = await asyncio.to_thread(identity, self.config, self.store, profile)
        if person.kind != "pasted":
            return

        def read_as() -> str | None:
            named = known_account_id(self.config, self.store, profile, token, self._machine)
            return named or self.store.get_cursor(SERVICE, profile, HISTORY_ACCOUNT)

        account = await asyncio.to_thread(read_as)
        await self.tokens.refuse_pasted(profile, person, account)

    def _hold_for(self, exc: Exception, profile: str) -> Outcome:
        if isinstance(exc, PlexAuthError):
            message = naming_profile(profile, exc.message, service=service_title(SERVICE))
            server = isinstance(exc, ServerTokenRefused)
            return Hold(
                message,
                AUTH_HOLD,
                "credentials",
                target_wide=False,
                sign_in=True,
                server=SERVICE if server else None,
            )
        if isinstance(exc, Unavailable):
            wait = exc.retry_after or self.config.delivery.retry_after
            return Hold(exc.message, wait, asked=exc.retry_after is not None)
        if isinstance(exc, PlexError):
            return Retry(exc.message)
        log.error("unexpected error delivering to Plex", exc_info=exc)
        return crashed("plex", exc)

    def _read_by_a_link(self, profile: str) -> bool:
        return any(
            "plex" in link.services and profile in link_profiles(self.config, link)
            for link in self.config.links.values()
        )

    async def _replaced(self, profile: str) -> str | None:
        """Why nothing may be written for `profile` now: the server is another than the one
        its items were last read from (their ratingKeys name other items there). The server
        is asked once per round, and only when that one is known."""
        read_from = await asyncio.to_thread(self.store.get_cursor, SERVICE, profile, KEYS_FROM)
        if read_from is None:
            return None
        if self._machine is None:
            self._machine = await self.client.identity()
        if read_from == self._machine:
            return None
        return (
            f"the Plex server is now {self._machine} (its items were read from {read_from}): "
            "written once the link's next run has read its libraries"
        )

    def _person(self, profile: str, token: str | None) -> Person | None:
        """The profile's maps, or None while a link's read writes them in parts (or left
        them cut short): not whole."""
        # Read beside the store's lock: at a big library these are ~100,000 rows, which
        # webhooks recorded meanwhile would wait for; and read again only where written
        # since the last batch (by the reader, another process, or a write of ours cut
        # short): decoding them all for every batch of 200 rows took most of a CPU.
        kept = self._kept.get(profile)
        copy = self.store.mirror_copy(SERVICE, profile, KEPT, kept.copy if kept else None)
        if copy.partial:
            self._kept.pop(profile, None)
            return None
        decoded = copy.collections[WRITTEN]
        if kept is None or kept.decoded is not decoded:
            written = {r: Written.from_dict(v) for r, v in decoded.items()}
            kept = Kept(copy, decoded, written)
        kept.copy = copy
        self._kept[profile] = kept
        return Person(
            profile,
            token,
            copy.collections[KEYS],
            copy.collections[PLAYS],
            kept.written,
            copy.collections[SYNTHETIC],
            copy.collections[UNWATCHING],
        )

    async def _row(self, person: Person, row: OutboxItem) -> Outcome:
        if row.action not in ACTIONS:
            return Dead(f"unknown action {row.action!r} for Plex")
        try:
            item = ref_from_dict(row.payload["item"])
            at = float(row.payload.get("at") or 0.0)
            value = int(row.payload["rating"]) if row.action == "rating" else None
        except (KeyError, TypeError, ValueError) as exc:
            return unreadable_row(row, "Plex", exc)
        if not person.keys:
            return Retry(
                "the Plex libraries of this profile have not been read yet", NOT_READ_RETRY
            )
        key = key_for_ref(item)
        entry = person.keys.get(key or "")
        if row.action == "remove_play":
            return await self._remove_play(person, row, str(row.payload.get("record") or ""))
        if entry is None:
            return Skipped(f"{item.describe()} is in none of the synced Plex libraries: skipped")
        rating_keys = [str(rk) for rk in entry["rating_keys"]]
        if row.action == "play":
            watched_at = entry.get("watched_at")
            return await self._play(person, row, str(key), rating_keys, watched_at, at)
        stars = None if value is None else ratings.to_ten_halves(value)
        unrated = rating_keys
        if _rating_checked(row, self.clock()):  # the user may have rated it since
            found = await self._rated_now(person, rating_keys)
            if await self._rated_by_the_user(row, found, stars, at):
                return Skipped(  # read just now, with the person's token
                    "Plex holds a newer rating of it, given there since this one was planned",
                    answered=True,
                )
            # An earlier try may have rated some copies: the others still need it.
            unrated = [rk for rk in rating_keys if _rating(found.get(rk, {})) != stars]

        async def rate(rk: str) -> None:
            await self.client.rate(rk, stars, person.token)

        writes = await _each_copy(unrated, rate)
        if writes.none_left(rating_keys):
            return writes.retry()
        writes.log_skipped(f"rating {key}", "rated")
        note = writes.noted("rated" if value is not None else "rating cleared")
        return Delivered(note, written=bool(writes.written))

    async def _rated_now(self, person: Person, rating_keys: list[str]) -> dict[str, Any]:
        """The details of these copies, as Plex shows them now. The first rating row of a
        batch to ask asks for every copy its checked rating rows name (`Person.to_check`), a
        hundred a request: a link's first run may queue thousands of ratings."""
        if any(rk not in person.asked for rk in rating_keys):
            ask = [*rating_keys, *(rk for rk in person.to_check if rk not in person.asked)]
            person.details.update(await self.client.details(ask, person.token))
            person.asked.update(ask)
        return {rk: person.details[rk] for rk in rating_keys if rk in person.details}

    async def _rated_by_the_user(
        self,
        row: OutboxItem,
        found: Mapping[str, Mapping[str, object]],
        stars: float | None,
        at: float,
    ) -> bool:
        """Whether a copy holds another rating than `stars` that the user gave since what
        planned the row last saw Plex (a link's read of it, else the row's queuing), unless
        it came after `at` (the rating this row sets: the newer). A rating an earlier row of
        ours for the item set since is no rating of the user's."""
        since = ratings.overtaken_after(at, row.planned_from)
        rated = _rated_since(found, stars, since + self.client.clock_skew)
        if not rated:
            return False
        sent = await asyncio.to_thread(self.store.ratings_sent_since, row, since)
        ours = {None if v is None else ratings.to_ten_halves(v) for v in sent}
        return any(value not in ours for value in rated.values())

    async def _play(
        self,
        person: Person,
        row: OutboxItem,
        key: str,
        rating_keys: list[str],
        watched_at: Any,
        at: float,
    ) -> Outcome:
        notes: set[str] = set()

        async def write(rk: str) -> None:
            notes.add(await self._play_copy(person, row, key, rk, watched_at, at))

        writes = await _each_copy(rating_keys, write)
        if writes.none_left(rating_keys):
            return writes.retry()
        writes.log_skipped(f"writing a play of {key}", "written")
        return Delivered(writes.noted(", ".join(sorted(notes))), written=MARKED_WATCHED in notes)

    async def _play_copy(
        self, person: Person, outbox: OutboxItem, key: str, rk: str, watched_at: Any, at: float
    ) -> str:
        """Writes the play to one copy of the title; what it did, for the outcome."""
        row, record = outbox.id, written_record(rk, at)
        before = known = person.written.get(record)
        # Our scrobbles so far, whose history rows are echoes of ours.
        earlier = known.attempts if known is not None else ()
        if known is not None and known.item != key:
            known = None  # another item's write (renumbered since): this one is written
        made_no_view = False
        if known is not None and known.unlanded:
            # Its row was given up before it landed (discarded, pruned): never written, and
            # its tries made no view.
            known, made_no_view = None, True
        if known is not None and known.removed and known.row == row:
            # An earlier try of this row wrote it (or may have), and it was removed since:
            # unwatched in Plex, or the play it copied removed. Its retry must not undo that.
            return "removed since an earlier try: not written again"
        if known is not None and not known.pending and not known.removed:
            return "already written"
        if known is not None and known.pending:
            landing = await self._landing(person, known)
            if landing.landed:
                await self._remember(person, record, replace(known, pending=False), synced=False)
                return "already written (its answer was lost)"
            # Its tries made no view: Plex as it is now says whether the item is watched.
            made_no_view, watched_at = True, landing.viewed
        skew = self.client.clock_skew  # Plex dates by its clock
        put_back = outbox.may_have_landed or not outbox.links_since(self.store.outbox_at_open)
        if known is None and put_back:
            # A backup copy put back (our record of the write is not in it), or a data folder
            # copied as it is (queued before this process opened it): the first view since
            # the row was queued is its scrobble, made after the copy was taken (the reader's
            # rule, `sent_after_the_copy`). `watched_at` is as old as the copy. Not marked,
            # only a view made before this process opened the database can be it.
            seen = await self._first_view_since_queued(person, rk, outbox.created_at)
            until = None if outbox.may_have_landed else self.store.opened_at
            if seen is not None and viewed_by(seen.first, until, skew):
                # A server that writes no row for a scrobble: a row is the user's viewing, not
                # ours (the reader's rule): taken as written, with no view of its own.
                rowless = await self._rowless()
                theirs = rowless and seen.in_history
                tried = earlier if theirs else (*earlier, seen.first - skew)
                # Unwatched in Plex since: the user's latest word, which a scrobble would undo.
                unwatched = not seen.watched
                landed = Written(
                    rk, key, at, tried, removed=unwatched, skew=skew, row=row, rowless=rowless
                )
                await self._remember(person, record, landed)
                if unwatched:
                    return (
                        "written before the backup copy was put back, and marked unwatched "
                        "in Plex since: not written again"
                    )
                return "already written (before the backup copy was put back)"
        unwritten = known is None or made_no_view
        if unwritten and watched_at is not None and float(watched_at) - skew >= at:
            # Watched at or after this play: a scrobble would only add a view "today". Tries
            # that made no view are left out: the listing counts a write with tries among the
            # item's views, and with the user's viewing (a dead letter tried again, or discarded
            # and copied again, after they watched the item in Plex) one too many, it would read
            # ours as unwatched since and remove the play it copied (the user's own entry on the
            # other side). Without, the write pairs with that play and the user's viewing stays
            # theirs, copied as usual.
            tries = () if made_no_view else earlier
            await self._remember(person, record, Written(rk, key, at, tries, skew=skew, row=row))
            return "already watched in Plex"
        # Written down before the scrobble, synced whatever storage.durability says: a
        # crash or a power cut after it still knows its echo, and asks Plex (`_landed`).
        attempts = (*earlier, self.clock())
        rowless = await self._rowless()
        written = Written(rk, key, at, attempts, pending=True, skew=skew, row=row, rowless=rowless)
        await self._remember(person, record, written, synced="always")
        try:
            await self.client.scrobble(rk, person.token)
        except PlexItemError:
            # No such item (a 404): nothing was written, and nothing is left pending.
            await self._put_back(person, record, before)
            raise
        # Not waiting for the disk (one sync per play instead of two: a first sync of
        # thousands on an SD card): lost in a power cut, the write stays pending, and the
        # next try asks Plex whether it landed (`_landed`) instead of scrobbling again.
        await self._remember(person, record, replace(written, pending=False), synced=False)
        return MARKED_WATCHED

    async def _rowless(self) -> bool:
        """Whether this server's scrobbles write no history row (`PlexClient.rowless_scrobbles`),
        by its version as `/identity` named it this round: asked (with its machine id) once a
        round at most, also of a server whose answer names none (an unknown version)."""
        if self._machine is None:
            self._machine = await self.client.identity()
        return self.client.rowless_scrobbles

    async def _put_back(self, person: Person, record: str, before: Written | None) -> None:
        """Our record of a write as it was before a try Plex answered with "no such item"."""
        if before is not None:
            await self._remember(person, record, before)
            return
        person.written.pop(record, None)
        await self._remove(person.profile, WRITTEN, [record])

    async def _first_view_since_queued(
        self, person: Person, rating_key: str, queued_at: float
    ) -> ViewSinceQueued | None:
        """The person's first view of the copy (Plex's clock) at or after `queued_at` (ours):
        the earliest history row since then, else (no history to ask) its `lastViewedAt`;
        whether the copy is still watched since then, and whether that view is a row. The
        reader takes that view for the row's too (`sent_after_the_copy`): a later one, the
        user's rewatch, stays the user's play, and our scrobble's history row is our echo, not
        a new play. None: no view since."""
        found = await self.client.details([rating_key], person.token)
        viewed = number(found.get(rating_key, {}).get("lastViewedAt"))
        skew = self.client.clock_skew
        watched = viewed is not None and viewed_since(viewed, queued_at, skew)
        first = await self._first_in_history(person, rating_key, queued_at + skew - LANDED_SLACK)
        if viewed is not None and watched:
            if first is not None and first <= viewed:
                return ViewSinceQueued(first, True, in_history=True)
            return ViewSinceQueued(viewed, True)
        # Viewed since (the history keeps its row) and no longer: unwatched since.
        return None if first is None else ViewSinceQueued(first, False, in_history=True)

    async def _first_in_history(
        self, person: Person, rating_key: str, since: float
    ) -> float | None:
        """The person's first history row of the copy at or after `since` (Plex's clock): one
        request, by the account the link's last read read their history by. None: no such
        row, or no history to ask (none read: no account id, or served to the owner only)."""
        profile = person.profile
        account = await asyncio.to_thread(self.store.get_cursor, SERVICE, profile, HISTORY_ACCOUNT)
        if not account:
            return None
        history_token = None if self.client.token else person.token
        try:
            first = await self.client.first_view_since(account, rating_key, since, history_token)
        except PlexAuthError:
            if history_token is None:  # the server's own token: the owner's to fix
                raise
            return None  # the server serves its history to the owner only
        if history_token is None and person.token is not None:
            await self.tokens.server_taken()
        return first

    async def _landing(self, person: Person, written: Written) -> Landing:
        """Whether a scrobble whose answer was lost took: Plex shows the item viewed since its
        last try, and, when that view is too late to be the try's own, the person's history
        holds a view at the try. Scrobbled again, it would add another view. The reader's
        rule (`Written.landed`): the view is dated by Plex's clock as it was at that try. On a
        server whose scrobbles make no row (`Written.rowless`), a row since is the user's
        viewing unless at the try itself (ROWLESS_ECHO): the history is asked for a view since
        later than that."""
        found = await self.client.details([written.rating_key], person.token)
        viewed = number(found.get(written.rating_key, {}).get("lastViewedAt"))
        skew = self.client.clock_skew
        tried = written.tried_at(skew)
        window = ROWLESS_ECHO if written.rowless else ECHO_WINDOW
        own = viewed is not None and viewed <= tried + window
        if not viewed_since(viewed, tried, 0.0) or own:  # no view since, or the try's own
            return Landing(written.landed(viewed, skew), viewed)
        first = await self._first_in_history(person, written.rating_key, tried - LANDED_SLACK)
        return Landing(written.landed(viewed, skew, first), viewed)

    async def _remove_play(self, person: Person, row: OutboxItem, record: str) -> Outcome:
        if record.startswith(EXPECTED):
            record = _written_for(person, record.removeprefix(EXPECTED)) or record
        play = person.plays.get(record)
        if play is None and record in person.written:  # written after the last read
            w = person.written[record]
            play = {"item": w.item, "at": w.at, "rating_key": w.rating_key}
        if play is None and await self._retired_row(person, record):
            # Unwatched by an earlier try, whose deletion of the row failed, and read since
            # (the reader took the row out): the row is deleted still, as the removal asked.
            await self._delete_history(person, record.removeprefix(HISTORY_PREFIX))
            await self._unwatching_done(person, record)
            return Delivered("play removed (the item was unwatched already)")
        if play is None:
            await self._unwatching_done(person, record)
            return Delivered("no such play on Plex (already gone)", written=False)
        rk, item = str(play["rating_key"]), str(play["item"])
        # Plex first, our memory after, the play kept in `plays` until the last step: a retry
        # (Plex failed a write, a refused token renewed, a crash) finds the play and does each
        # step again, all of which repeat harmlessly. The unwatch goes before the history row:
        # a row deleted from an item left watched is read back as a play with no row (the
        # user's "watched"), which would stay in Plex for good; a row left on an item already
        # unwatched is read as removed, as the link means it.
        copies = [str(c) for c in (person.keys.get(item) or {"rating_keys": [rk]})["rating_keys"]]
        # Each copy of the title (a 4K edition beside the HD one) keeps its own plays and view
        # count: one left watched with no play would read back as this one, dated its last
        # view. Never unwatch a copy that holds another play (renumbered: under another key).
        held = {str(p["rating_key"]) for r, p in person.plays.items() if r != record}
        copies = [c for c in copies if c not in held]
        first_try = record not in person.unwatching
        rewatched = await self._rewatched(person, row, record, copies)
        if first_try and rewatched:
            # Nothing written yet: the removal is dropped whole, our records left as read. The
            # play stays in Plex beside the new view (the item is watched: unwatching would
            # take that view, and a history row deleted from an item left watched reads back
            # as a play with no row); the link's tombstone keeps it from being copied back.
            log.info(
                "removing a play of %s from Plex: not done, watched there again since the "
                "removal was planned (copies %s); the new view stands",
                item,
                ", ".join(sorted(rewatched)),
            )
            return Skipped(
                "not removed: watched again in Plex since the removal was planned "
                "(that view stands)",
                answered=True,
            )

        async def unwatch(copy: str) -> None:
            await self.client.unscrobble(copy, person.token)

        # A copy deleted from Plex since the read has no view left to take.
        writes = await _each_copy([c for c in copies if c not in rewatched], unwatch)
        writes.log_skipped(f"removing a play of {item}", "unwatched")
        unwatched = writes.written
        entry = person.keys.get(item)
        if (
            unwatched
            and not rewatched
            and entry is not None
            and entry.get("watched_at") is not None
        ):
            # Unwatched now: a play of it queued after this removal (a diary entry moved to
            # another day on Serializd) is scrobbled, not taken as "already watched in Plex".
            person.keys[item] = {**entry, "watched_at": None}
            await self._put(person.profile, KEYS, {item: person.keys[item]})
        if record.startswith(HISTORY_PREFIX):
            await self._delete_history(person, record.removeprefix(HISTORY_PREFIX))
        elif record.startswith(WRITTEN_PREFIX) and record in person.written:
            await self._remember(person, record, replace(person.written[record], removed=True))
        elif record.startswith(WATCHED_PREFIX) and record in person.synthetic:
            person.synthetic[record] = {**person.synthetic[record], "removed": True}
            await self._put(person.profile, SYNTHETIC, {record: person.synthetic[record]})
        person.plays.pop(record, None)
        await self._remove(person.profile, PLAYS, [record])
        await self._unwatching_done(person, record)
        return Delivered(_removal_note(bool(copies), writes, rewatched))

    async def _rewatched(
        self, person: Person, row: OutboxItem, record: str, copies: list[str]
    ) -> set[str]:
        """The copies this removal must leave watched: viewed in Plex, by the user, since the
        read that planned it (a first try) or since its first try (a retry: an unwatch of ours only
        clears the view). A first try that finds none notes its time before it unwatches."""
        if not copies:
            return set()
        noted = number((person.unwatching.get(record) or {}).get("at"))
        # The row carries when the link's run began reading Plex: a view since is one the
        # plan never saw, however long the run then read the other side before it queued
        # (Serializd's pace: minutes). A view during the read is taken for the user's too, the
        # safe side. A row of an older release goes by its queuing.
        since = row.planned_from if noted is None else noted
        found = await self.client.details(copies, person.token)
        skew = self.client.clock_skew
        viewed = {c for c in copies if _viewed_since(found.get(c, {}), since, skew)}
        if noted is None:
            # The scrobble of the very play removed is no view of the user's: sent a moment
            # before the plan (within the second Plex dates a view to), or after it (its row
            # waited behind a Plex outage).
            viewed -= _our_scrobble(person.written.get(record), found, skew)
        if noted is None and not viewed:
            person.unwatching[record] = {"at": self.clock(), "row": row.id}
            await self._put(person.profile, UNWATCHING, {record: person.unwatching[record]})
        return viewed

    async def _unwatching_done(self, person: Person, record: str) -> None:
        if person.unwatching.pop(record, None) is not None:
            await self._remove(person.profile, UNWATCHING, [record])

    async def _retired_row(self, person: Person, record: str) -> bool:
        """Whether `record` is a history row the reader retired (its item unwatched) that the
        server may still hold."""
        number, profile = record.removeprefix(HISTORY_PREFIX), person.profile

        def held() -> bool:
            has = self.store.mirror_has
            return bool(has(SERVICE, profile, RETIRED, [number])) and bool(
                has(SERVICE, profile, HISTORY, [number])
            )

        return record.startswith(HISTORY_PREFIX) and await asyncio.to_thread(held)

    async def _delete_history(self, person: Person, number: str) -> None:
        history_token = None if self.client.token else person.token
        await self.client.delete_history(number, history_token)  # gone already: fine
        if history_token is None and person.token is not None:
            # The server took its own token for a person's row: its refusal is over (the
            # batch's end clears only the person's token).
            await self.tokens.server_taken()
        await self._put(person.profile, RETIRED, {number: {}})
        # The reader's copy of the server's history must lose it too: its row count is what
        # the cheap "anything new?" check compares with the server's.
        await asyncio.to_thread(
            self.store.mirror_remove, SERVICE, person.profile, HISTORY, [number]
        )

    async def _remember(
        self,
        person: Person,
        record: str,
        written: Written,
        synced: bool | Literal["always"] = True,
    ) -> None:
        person.written[record] = written
        await self._put(person.profile, WRITTEN, {record: written.to_dict()}, synced)

    async def _put(
        self,
        profile: str,
        collection: str,
        values: dict[str, Any],
        synced: bool | Literal["always"] = True,
    ) -> None:
        """Write `values` to one of the profile's maps, whose kept copy holds them already."""
        copy = self._kept[profile].copy if profile in self._kept else None
        was = copy.following(collection) if copy is not None else None
        written = await asyncio.to_thread(
            self.store.mirror_put, SERVICE, profile, collection, values, self.clock(), synced=synced
        )
        if copy is not None:
            copy.wrote(collection, was, written)

    async def _remove(self, profile: str, collection: str, keys: list[str]) -> None:
        """Remove `keys` from one of the profile's maps, whose kept copy lacks them already."""
        copy = self._kept[profile].copy if profile in self._kept else None
        was = copy.following(collection) if copy is not None else None
        written = await asyncio.to_thread(
            self.store.mirror_remove, SERVICE, profile, collection, keys
        )
        if copy is not None:
            copy.wrote(collection, was, written)


def _copies_to_check(person: Person, rows: Sequence[OutboxItem], now: float) -> list[str]:
    """The copies named by the rating rows among `rows` that ask Plex first."""
    copies: list[str] = []
    for row in rows:
        if not _rating_checked(row, now):
            continue
        try:
            key = key_for_ref(ref_from_dict(row.payload["item"]))
        except (KeyError, TypeError, ValueError):
            continue  # its own delivery says why
        entry = person.keys.get(key or "")
        if entry is not None:
            copies.extend(str(rk) for rk in entry["rating_keys"])
    return copies


def _written_for(person: Person, expected: str) -> str | None:
    """The play we wrote for an expected play (`ITEM@AT[#SOURCE]`) the engine has not seen
    read back."""
    item, _, at = expected.split("#", 1)[0].rpartition("@")  # ITEM@AT[#SOURCE]
    try:
        when = float(at)
    except ValueError:
        return None
    return next(
        (
            record
            for record, w in person.written.items()
            if w.item == item and abs(w.at - when) < 60 and not (w.removed or w.unlanded)
        ),
        None,
    )


def _our_scrobble(
    written: Written | None, found: Mapping[str, Mapping[str, object]], skew: float
) -> set[str]:
    """The copy whose last view (in `found`, its details) is a scrobble of ours (`written`'s
    tries, within the second Plex dates a view to), if any."""
    if written is None:
        return set()
    viewed = number(found.get(written.rating_key, {}).get("lastViewedAt"))
    at_write = skew if written.skew is None else written.skew
    if viewed is None or not any(
        abs(viewed - at_write - tried) <= LANDED_SLACK for tried in written.attempts
    ):
        return set()
    return {written.rating_key}


def _viewed_since(details: Mapping[str, object], since: float, skew: float) -> bool:
    """Whether Plex shows the item viewed at or after `since` (our clock; `skew`: how far the
    server's is ahead of ours)."""
    return viewed_since(number(details.get("lastViewedAt")), since, skew)


@dataclass(frozen=True)
class CopyWrites:
    """A write to each copy of a title (a 4K edition beside the HD one): the copies written,
    and those Plex answered "no such item" (404) for, with its answer: deleted from Plex since
    the link read the libraries."""

    written: list[str]
    gone: dict[str, str]

    def none_left(self, copies: Sequence[str]) -> bool:
        """Whether every copy of the title has left the library: the row waits for the next
        read of the libraries (the title gone from Plex, or in it under another ratingKey)."""
        return bool(copies) and set(copies) <= set(self.gone)

    def retry(self) -> Retry:
        return Retry(f"{next(iter(self.gone.values()))} (it left the library?)", GONE_RETRY)

    def noted(self, note: str) -> str:
        """The outcome's `note`, with the copies skipped."""
        if not self.gone:
            return note
        return f"{note}; {len(self.gone)} of its copies had left the library (skipped)"

    def log_skipped(self, doing: str, done: str) -> None:
        """Says once which copies were skipped, as the row is done with them."""
        if self.gone:
            log.info(
                "%s: Plex has no copy %s any more (it left the library), skipped; "
                "%d other copies %s",
                doing,
                ", ".join(self.gone),
                len(self.written),
                done,
            )


async def _each_copy(copies: Sequence[str], write: Callable[[str], Awaitable[None]]) -> CopyWrites:
    """`write` to each copy in turn. A copy Plex has no item for any more is skipped: the
    others are written still (one deleted must not keep the title from the copies left)."""
    written: list[str] = []
    gone: dict[str, str] = {}
    for copy in copies:
        try:
            await write(copy)
        except PlexItemError as exc:
            gone[copy] = exc.message
        else:
            written.append(copy)
    return CopyWrites(written, gone)


def _removal_note(had_copies: bool, writes: CopyWrites, rewatched: set[str]) -> str:
    """What a removal of a play did in Plex, for its outcome."""
    if not had_copies:
        return "play removed; other plays of the item remain, it stays watched"
    if rewatched and not writes.written:
        return "play removed; left watched in Plex: watched again there since the first try"
    if not writes.written:
        return "play removed; the item has left the library"
    note = writes.noted("marked unwatched (its last play was removed)")
    if rewatched:
        note += f"; {len(rewatched)} left watched (watched again since the first try)"
    return note


def _rating(details: Mapping[str, object]) -> float | None:
    """A copy's rating, in Plex's stars (None: not rated)."""
    return number(details.get("userRating"))


def _rated_since(
    found: Mapping[str, Mapping[str, object]], stars: float | None, at: float
) -> dict[str, float | None]:
    """The copies that hold another rating than `stars`, given after `at` (on Plex's clock),
    with that rating. A copy an earlier try rated holds `stars`."""
    rated: dict[str, float | None] = {}
    for copy, details in found.items():
        given = number(details.get("lastRatedAt"))
        if given is not None and given > at + ratings.RATED_SLACK and _rating(details) != stars:
            rated[copy] = _rating(details)
    return rated


def _rating_checked(row: OutboxItem, now: float) -> bool:
    """Whether a rating row asks Plex first for a rating given since it was planned: one that
    waited, or a link's (planned on a read of Plex that may be minutes old)."""
    return row.action in ("rating", "remove_rating") and (row.waited(now) or row.planned_on_a_read)
