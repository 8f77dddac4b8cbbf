"""Plays the Jellyfin and Emby webhooks missed, caught up from the server.

Neither server sends a webhook again (pitfalls/webhooks.md §7): a play finished while
watchbridge was down (an update, a reboot, the NAS asleep), or while the plugin was off, would
reach no service. So, with `services.jellyfin` (or `services.emby`) set with an API key, every
account a profile's entry takes is read, for the profile its webhooks go to (`resolve`:
`webhooks.route_for`, remembered ids and names included, the default profile excluded), at
start and every EVERY: its movies and episodes whose user data changed since the last read
(`MinDateLastSavedForUser`: one small answer while nothing was watched), each with `Played`,
`PlayCount` and `LastPlayedDate`, put on our clock when the server's is off (`server_offset`).

What the server's user data says (Jellyfin's and Emby's SessionManager): a playback's start
adds one to `PlayCount` and sets `LastPlayedDate` (to the start); `Played` turns false while a
resumable item plays and true once it passes the server's played mark; "mark played" sets both,
"mark unplayed" clears them (count 0). So a play is an item `Played` whose count grew since
the count a read last saw it played with (`State.items`; an item never seen played: any count).
An item under an id never seen that has an identity seen (`identity`: its provider ids) with
the same count and `LastPlayedDate` is that item: a library removed and added again (Emby
numbers its items anew; Jellyfin's ids follow the paths), a file replaced; the server carries
its user data over. One of those ids with user data of its own (a second version of a film in
another library, a special sharing a regular episode's TVDB id) is an item never seen.
A count that grew by more than one is one play: a viewing resumed later is a playback start too.

The decisions are pure (`candidates`, `heard_of`, `decide`); `CatchUp` reads and records:
- The first read of an account is a baseline: the counts of everything played then, and no play
  copied (a newcomer's whole library must not flood Trakt, Serializd, AniList); nor is any play
  dated before it (less CLOCK_MARGIN): a file replaced under a new item id keeps its old date.
- A play found is copied only at a later read, CONFIRM_AFTER on at least: a webhook on its way
  arrives in seconds, and one that did (a stop or a mark of that profile and item, received at
  or after its `LastPlayedDate` less CLOCK_MARGIN: by the server's item id or by the same ids)
  means the webhooks told of it. A playback whose other webhooks came (a start) with no end yet
  is left to them for FOLLOWED: a long film, or a viewing paused for the evening.
- A play copied goes as a webhook's "mark played" does (the same targets, outbox and keys), dated
  at its `LastPlayedDate` (when it began; a mark's date), recorded as an event of its own
  source (`store.CAUGHT_UP`): never taken for a webhook; its viewing ended, for the item's marks,
  by the read (`webhooks.ingest_job`): its own stop, posted late, is not another viewing. Copied
  again after a crash (its state not saved), its key is the same: nothing is added twice.
- A play that was a "mark played" by hand, not a viewing (`by_hand`: what a webhook's
  SaveReason says, the user data tells only by its dates), goes as a webhook's mark by hand
  does (playback.hand_mark): an item the server never had, marked to catch it up (a season,
  what the Plex beside it played), adds nothing where a target holds it watched already.
- The webhook events are kept a week (maintenance.KEEP_DONE): a play dated before the newest
  one pruning reached (`Store.webhooks_pruned_to`: the server unread for longer, the key
  refused for weeks while webhooks came) cannot be checked, so it is not copied (a webhook's
  play a second time) but named in the log and the status (`Decision.unchecked`). While
  watchbridge was off no webhook was taken, none pruned: those plays are all copied.
An account's state no round reads (`unread`: its profile no longer lists it, or the profile
is out of the config) is kept KEPT_UNREAD from the first round that found it so (a typo fixed
at the next restart loses nothing: the plays meanwhile are caught up), then forgotten by the
first round after that which does not read it, whether its server is read or not (deleted on
it, its catch-up off, out of the config): taken out on purpose and put back later, its next
read is a first one, copying none of the gap.
Where the server's webhooks came before, a play they missed raises `webhooks_stopped` for that
server (webhookwatch.py), resolved by its next webhook. Why a read failed, and the accounts
listed that the server has not, are kept for the status (catchupstatus.py, `CatchUp.told`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from watchbridge import queuewords as words
from watchbridge import webhookwatch
from watchbridge.account_ids import KEPT, Key, Learnt, NameKey
from watchbridge.catchupstatus import (
    LEFT,
    SERVERS,
    Failed,
    Left,
    Told,
    left_of,
    unfound_of,
)
from watchbridge.causes import server_key_alert, server_key_works
from watchbridge.config import Config, same_account
from watchbridge.errors import StoreError
from watchbridge.http import CLOCK_WARNING, ServiceError, Unavailable
from watchbridge.ingest.common import (
    air_date,
    integer,
    iso_time,
    make_ids,
    may_be_a_remark,
    obj,
    server_guid,
    text,
    ticks_to_ms,
)
from watchbridge.marked import at_once
from watchbridge.model import (
    Account,
    MediaEvent,
    MediaKind,
    MediaRef,
    item_aliases,
    ref_from_dict,
)
from watchbridge.playback import LEAST_WATCHED
from watchbridge.services.jellyfin import (
    NAMES,
    MediaServerAuthError,
    MediaServerClient,
    MediaServerError,
    Server,
    media_server_client,
)
from watchbridge.store import CATCH_UP_CURSORS, CAUGHT_UP, AccountLearnt
from watchbridge.webhooks import NO_IDS, NO_NAMES, Route, route_for

log = logging.getLogger(__name__)

# A play missed is copied 15-20 minutes after it: soon enough for a diary, and one request
# per account a quarter of an hour (96 a day, an empty list each while nothing is watched).
EVERY = 15 * 60.0
# Between the server's clock and ours, beyond the gap its answers show (`server_offset`): user
# data changed this long before the last read is listed again, and a webhook received this
# long before a play's date may be of it.
CLOCK_MARGIN = 15 * 60.0
# A play found waits this long, to the next read, for a webhook on its way (seconds, usually).
CONFIRM_AFTER = 5 * 60.0
# A playback whose webhooks came (a start, its progress) but no end yet: left to them this long.
FOLLOWED = 6 * 3600.0
# The servers' MinResumeDurationSeconds: an item shorter than this turns played as it starts.
RESUMABLE = 300.0
# A play found that waits (`State.waiting`) and is no longer listed (deleted) is forgotten.
WAITING_KEPT = 86400.0
# (server, profile, "catch_up:<user id>"): the account's `State` but its items (`header`),
# which are rows of store.catch_up_counts: a read writes the items that changed, not all of
# them (some 100 KB for a big library).
CURSOR = CATCH_UP_CURSORS
# (server, profile, "catch_up_at:<user id>"): when the last read that listed something began,
# apart from the header, which is written only when it changed. A read that listed nothing
# writes nothing (`persisted`).
AT_CURSOR = f"{CATCH_UP_CURSORS}_at"
KINDS: dict[str, MediaKind] = {"movie": "movie", "episode": "episode"}
PROVIDERS = ("imdb", "tmdb", "tvdb", "anidb", "anilist")
# The server's accounts are asked for again when a listed one is not among them (an account
# added after the start), at most this often.
USERS_AGAIN_AFTER = 3600.0


@dataclass(frozen=True)
class Listed:
    """A movie or episode as a read lists it, with the account's user data."""

    id: str  # the server's item id, as its webhooks name it
    item: MediaRef
    played: bool
    count: int
    last_played: float | None
    server: str = ""  # the item's ServerId
    duration_ms: int | None = None
    dated: float | None = None  # its `LastPlayedDate` as the server wrote it, on its clock


def server_offset(skew: float) -> float:
    """How far the server's clock is ahead of ours, as its dates are put on ours: the gap its
    answers' `Date` headers measure (http.py's `clock_skew`) once past CLOCK_WARNING, where the
    log says the clocks differ; a smaller one (the header's whole seconds, the network's time)
    is left to CLOCK_MARGIN. Pure."""
    return skew if abs(skew) > CLOCK_WARNING else 0.0


def listed(dto: Mapping[str, Any], server: Server, ahead: float = 0.0) -> Listed | None:
    """An item DTO as `Listed`, named as that server's webhooks name it (ingest/jellyfin.py,
    ingest/emby.py), its `LastPlayedDate` put on our clock (`ahead`: `server_offset`); None
    for another kind of item, or one without an id. Pure."""
    kind = KINDS.get((text(dto.get("Type")) or "").lower())
    raw_id = text(dto.get("Id"))
    if kind is None or raw_id is None:
        return None
    item_id = server_guid(raw_id) if server == "jellyfin" else raw_id
    providers = {str(k).lower(): v for k, v in obj(dto.get("ProviderIds")).items()}
    ids = make_ids({name: providers.get(name) for name in PROVIDERS}, [])
    title = text(dto.get("Name"))
    if kind == "movie":
        ref = MediaRef("movie", ids, title, integer(dto.get("ProductionYear")), source_key=item_id)
    else:
        series = text(dto.get("SeriesId"))
        ref = MediaRef(
            "episode",
            ids,
            title,
            show_title=text(dto.get("SeriesName")),
            season=integer(dto.get("ParentIndexNumber")),
            number=integer(dto.get("IndexNumber")),
            source_key=item_id,
            show_source_key=server_guid(series) if server == "jellyfin" else series,
            aired=air_date(dto.get("PremiereDate")),
        )
    data = obj(dto.get("UserData"))
    last_played = iso_time(data.get("LastPlayedDate"))
    return Listed(
        id=item_id or raw_id,
        item=ref,
        played=data.get("Played") is True,
        count=max(integer(data.get("PlayCount")) or 0, 0),
        last_played=None if last_played is None else last_played - ahead,
        server=server_guid(dto.get("ServerId")) or "",
        duration_ms=ticks_to_ms(dto.get("RunTimeTicks")) or None,
        dated=last_played,
    )


def identity(one: Listed) -> str:
    """The item as its provider ids name it, whatever the server's item id ('' none: a title
    alone may name another item). Pure."""
    return one.item.key() if one.item.ids else ""


# A `Seen` as kept (store.catch_up_counts): its count, identity and date.
Row = tuple[int, str, float | None]


@dataclass(frozen=True, slots=True)
class Seen:
    """An item as the reads last saw it played (or its count cleared by an unmark): its
    `PlayCount`, its `identity` ('' none known), and its `LastPlayedDate` then, as the server
    wrote it (`Listed.dated`; None: none, or kept by a release before it was)."""

    count: int
    identity: str = ""
    dated: float | None = None

    @property
    def row(self) -> Row:
        return (self.count, self.identity, self.dated)


@dataclass(frozen=True)
class State:
    """What the reads of one account know: when the first (`baseline`) and the last (`at`)
    began, by our clock; each item as last seen played (`items`: item id -> `Seen`); and the
    plays found that wait for a later read (item id -> when first found, and from when the
    read that found it listed changes: later reads list from there, so that it is listed
    again). Kept as its `header` (all but the items) and a row per item (`Saved`)."""

    baseline: float
    at: float
    items: Mapping[str, Seen] = field(default_factory=dict)
    waiting: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @functools.cached_property
    def _by_identity(self) -> dict[str, list[tuple[int, float | None]]]:
        found: dict[str, list[tuple[int, float | None]]] = {}
        for seen in self.items.values():
            if seen.identity:
                found.setdefault(seen.identity, []).append((seen.count, seen.dated))
        return found

    def seen(self, one: Listed) -> int | None:
        """The count `one` was last seen played with (None: never seen played): by its id,
        else, under an id never seen, by its identity: where an item of that identity was
        seen with the same count and date, the server carried that item's user data over to
        a new id (a library added again, a file replaced); an item of the same ids with user
        data of its own (a second version, a special sharing a TVDB id) was never seen. Rows
        kept before the dates were: the most of their counts, as then."""
        if (before := self.items.get(one.id)) is not None:
            return before.count
        if not (known := identity(one)):
            return None
        found = self._by_identity.get(known, [])
        if one.dated is not None and any(
            n == one.count and at is not None and abs(at - one.dated) < 1.0 for n, at in found
        ):
            return one.count
        undated = [n for n, at in found if at is None]
        return max(undated) if undated else None

    def header(self) -> str:
        return json.dumps(
            {"baseline": self.baseline, "at": self.at, "waiting": self.waiting},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_header(cls, value: str | None, counts: Mapping[str, Row]) -> State | None:
        """The state of a `header` and the rows kept with it (`counts`: item id -> `Row`);
        None for none."""
        if value is None:
            return None
        try:
            found = json.loads(value)
            return cls(
                float(found["baseline"]),
                float(found["at"]),
                {key: Seen(*row) for key, row in counts.items()},
                {str(k): (float(v[0]), float(v[1])) for k, v in found["waiting"].items()},
            )
        except (ValueError, TypeError, KeyError, AttributeError):  # not one this release wrote
            return None


def loaded(header: str | None, at: str | None, counts: Mapping[str, Row]) -> State | None:
    """The account's `State` from its two cursors, the later of their `at`, and its counts.
    Pure."""
    found = State.from_header(header, counts)
    if found is None or at is None:
        return found
    try:
        return dataclasses.replace(found, at=max(found.at, float(at)))
    except ValueError:  # not one this release wrote
        return found


@dataclass(frozen=True)
class Saved:
    """What a read writes: the state's `header` (None: unchanged), or else its `at` alone
    (None: not moved); and the `counts` that changed (or whose identity or date did), each
    with its identity and date, all of them at a baseline (`whole`: the account's other
    counts dropped, kept of a state no longer read)."""

    header: str | None = None
    at: str | None = None
    counts: Mapping[str, Row] = field(default_factory=dict)
    whole: bool = False


def persisted(before: State | None, after: State, listed_any: bool) -> Saved:
    """What a read writes: the header and the items that changed (a read never drops one)
    when anything but `at` changed; else `at` when the read listed something (were it not
    moved, the next read would list it again); else nothing, and the next read lists from the
    same time: what it lists more is what changed since this read listed nothing, the same.
    Pure."""
    if before is None:
        rows = {key: seen.row for key, seen in after.items.items()}
        return Saved(after.header(), counts=rows, whole=True)
    was = before.items
    counts = {key: seen.row for key, seen in after.items.items() if was.get(key) != seen}
    if counts or (before.baseline, before.waiting) != (after.baseline, after.waiting):
        return Saved(after.header(), counts=counts)
    return Saved(at=repr(after.at) if listed_any and after.at != before.at else None)


def since(state: State | None) -> float | None:
    """From when the next read lists changed user data (None: a first read, of every played
    item): the last read, or the first found of the plays that wait, less CLOCK_MARGIN. Pure."""
    if state is None:
        return None
    return min([state.at - CLOCK_MARGIN, *(listed for _, listed in state.waiting.values())])


def _a_play(state: State, one: Listed) -> bool:
    """Whether the read lists `one` played more times than it was last seen played, dated
    after the baseline."""
    if not one.played or one.last_played is None or one.count < 1:
        return False
    if one.last_played < state.baseline - CLOCK_MARGIN:
        return False
    before = state.seen(one)
    return before is None or one.count > before


def candidates(state: State | None, items: Iterable[Listed]) -> list[Listed]:
    """The plays a read found (none at a first read): what webhooks are looked up for. Pure."""
    if state is None:
        return []
    return [one for one in items if _a_play(state, one)]


@dataclass(frozen=True)
class Heard:
    """What the webhooks told of one item's play: its end (a stop played to the end, or a
    mark), and when the last of its events came."""

    completed: bool
    last_at: float


def _ended(event: Mapping[str, Any], threshold: float) -> bool:
    """Whether a recorded webhook event ends a viewing as the webhooks' sessions count one
    (playback.decide): a mark, or a stop the server flagged played or past `threshold` percent
    (a stop without PlayedToCompletion: a template without it)."""
    action = event.get("action")
    if action not in ("stop", "played"):
        return False
    if event.get("played") is True:
        return True
    position, duration, percent = (event.get(k) for k in ("position_ms", "duration_ms", "percent"))
    if isinstance(position, int | float) and isinstance(duration, int | float) and duration > 0:
        percent = 100.0 * position / duration
    return action == "stop" and isinstance(percent, int | float) and percent >= threshold


def heard_of(
    plays: Iterable[Listed],
    events: Iterable[tuple[float, Mapping[str, Any]]],
    threshold: float,
) -> dict[str, Heard]:
    """For each of `plays` (by item id), what webhook `events` ((received_at, event as
    recorded)) told of it at or after its `LastPlayedDate` less CLOCK_MARGIN: the same item
    by the server's item id, or by the same ids; `threshold`: the profile's completion
    threshold (percent). Pure."""
    found: dict[str, Heard] = {}
    wanted = list(plays)
    keys = {one.id: set(item_aliases(one.item)) for one in wanted}
    for received_at, event in events:
        raw = event.get("item")
        try:
            ref = ref_from_dict(raw) if isinstance(raw, dict) else None
        except (TypeError, ValueError):  # not an item this release recorded
            ref = None
        if ref is None:
            continue
        aliases = set(item_aliases(ref))
        done = _ended(event, threshold)
        for one in wanted:
            if received_at < (one.last_played or 0.0) - CLOCK_MARGIN:
                continue
            if ref.source_key != one.id and not aliases & keys[one.id]:
                continue
            was = found.get(one.id)
            found[one.id] = Heard(
                completed=done or (was is not None and was.completed),
                last_at=max(received_at, was.last_at if was is not None else received_at),
            )
    return found


def marked_together(items: Iterable[Listed]) -> set[str]:
    """The ids of the items a read lists played whose `LastPlayedDate`s run within
    MARKED_TOGETHER of each other (`marked.at_once`), two items or more (not one under two
    ids: a server keeping user data by provider ids shows a viewing on each version of a
    film): marked played at once. Pure."""
    return at_once(
        (one.last_played, identity(one) or one.id, one.id)
        for one in items
        if one.played and one.last_played is not None
    )


def by_hand(state: State, one: Listed, found_at: float, together: Collection[str]) -> bool:
    """Whether a play a read first found at `found_at` was a "mark played" by hand, not a
    viewing: of an item the server had no record of (PlayCount 1: no start or mark before it,
    not a `may_be_a_remark`; no count the reads saw), and either marked with others at once
    (`together`: `marked_together`) or found played sooner after its `LastPlayedDate` than a
    viewing of it lasts (a viewing is dated when it began, and played only once past the
    server's played mark; LEAST_WATCHED of it, less a clock gap not put right: CLOCK_WARNING).
    A webhook's SaveReason says so; the user data tells only by these dates, so a lone mark
    found later (watchbridge down) is taken for a viewing. Whether it catches the server up
    is playback.hand_mark's to decide, as for a webhook's mark. Pure."""
    if one.last_played is None or may_be_a_remark(one.count, None, None):
        return False
    if state.seen(one) is not None:
        return False
    if one.id in together:
        return True
    duration = (one.duration_ms or 0) / 1000
    if duration < RESUMABLE:
        return False
    return found_at - one.last_played < LEAST_WATCHED * duration - CLOCK_WARNING


@dataclass(frozen=True)
class Decision:
    """A read's outcome: the account's state after it, the plays to copy (of them, the ids
    of those that were marks by hand: `by_hand`), how many plays the webhooks told of
    (`reported`) or may still (`waiting`), and the plays not copied because what the
    webhooks told of their time is pruned (`unchecked`)."""

    state: State
    missed: list[Listed]
    reported: int = 0
    waiting: int = 0
    unchecked: list[Listed] = field(default_factory=list)
    by_hand: frozenset[str] = frozenset()


def cannot_check(one: Listed, pruned_to: float | None) -> bool:
    """Whether the webhook events that could tell of `one` may be pruned: it is dated (less
    CLOCK_MARGIN, as `heard_of` looks) before the newest webhook event pruning reached
    (`pruned_to`, None: none). Only after the reads failed for longer than events are kept
    (the API key refused for weeks while webhooks kept coming): when watchbridge itself was
    off, no event of that time was taken, so none was pruned and `pruned_to` is older. Pure."""
    return pruned_to is not None and (one.last_played or 0.0) - CLOCK_MARGIN < pruned_to


def decide(
    state: State | None,
    items: Sequence[Listed],
    heard: Mapping[str, Heard],
    now: float,
    pruned_to: float | None = None,
) -> Decision:
    """What a read begun at `now` that listed `items` means, given what the webhooks told of
    its plays (`heard_of`) and when the newest webhook event pruning reached was received
    (`pruned_to`): a play dated before then that no event kept told of is not copied (it may
    have been a webhook's, its event gone: a second play), but `unchecked`. Pure."""
    if state is None:
        played = {one.id: Seen(one.count, identity(one), one.dated) for one in items if one.played}
        return Decision(State(now, now, played), [])
    seen, waiting = dict(state.items), dict(state.waiting)

    def count(one: Listed) -> None:
        # An identity once known stays when the server lists the item without provider ids.
        was = seen.get(one.id)
        known = identity(one) or (was.identity if was is not None else "")
        seen[one.id] = Seen(one.count, known, one.dated)

    listed_from = since(state) or now
    together = marked_together(items)
    marks: set[str] = set()
    missed: list[Listed] = []
    skipped: list[Listed] = []
    reported = waits = 0
    # (identity, date) of the plays copied or left unchecked: another item of the same ids
    # with the same date is the same viewing, a server keeping user data by provider ids
    # showing it on every version of the film.
    viewings: set[tuple[str, float | None]] = set()
    for one in items:
        if not _a_play(state, one):
            waiting.pop(one.id, None)
            if one.played or one.count == 0:  # a count seen played, or cleared by an unmark
                count(one)
            continue  # not played now (a rewatch under way): the count it was played with stays
        told = heard.get(one.id)
        first = waiting.get(one.id, (now, listed_from))
        viewing = (identity(one), one.last_played)
        if told is not None and told.completed:
            reported += 1
        elif viewing in viewings:
            pass  # copied, or left unchecked, as an item of the same ids: counted alone
        elif cannot_check(one, pruned_to):
            skipped.append(one)
        elif now - first[0] < CONFIRM_AFTER or (told is not None and now - told.last_at < FOLLOWED):
            waiting[one.id] = first
            waits += 1
            continue
        else:
            missed.append(one)
            if by_hand(state, one, first[0], together):
                marks.add(one.id)
        if viewing[0]:
            viewings.add(viewing)
        waiting.pop(one.id, None)
        count(one)
    waiting = {key: at for key, at in waiting.items() if now - at[0] < WAITING_KEPT}
    after = State(state.baseline, now, seen, waiting)
    return Decision(after, missed, reported, waits, skipped, frozenset(marks))


def event_of(one: Listed, server: Server, account: tuple[str, str]) -> MediaEvent:
    """A missed play as the event a webhook's "mark played" of it would be (no player: it
    joins the item's marks, where a webhook's completion of it is recorded too)."""
    return MediaEvent(
        source=server,
        action="played",
        item=one.item,
        server=one.server,
        account=Account(id=account[0], name=account[1]),
        duration_ms=one.duration_ms,
        played=True,
        occurred_at=one.last_played,
    )


def accounts_listed(config: Config, server: Server) -> dict[str, list[str]]:
    """Each profile's entries for `server` (names, ids, SERVER:ACCOUNT) that have somewhere to
    go (a target), by profile."""
    from watchbridge.config import targets_for

    found: dict[str, list[str]] = {}
    for name, profile in config.profiles.items():
        entries = list(getattr(profile.users, server, ()))
        if entries and targets_for(config, profile):
            found[name] = entries
    return found


@dataclass(frozen=True)
class ServerAccount:
    """An account of a server, as its webhooks name who sent them (`webhooks.Sender`)."""

    source: Server
    server: str  # the server's id ("" while not known)
    account: Account


@dataclass(frozen=True)
class Reading:
    """An account a round reads: the profile its webhooks go to, and how (`Route`: by an entry,
    or by the id or name remembered for one, with what it learnt)."""

    profile: str
    user_id: str
    name: str
    route: Route


def resolve(
    config: Config,
    server: Server,
    users: Sequence[tuple[str, str]],
    server_id: str,
    known: Mapping[Key, Learnt] = NO_IDS,
    names: Mapping[NameKey, tuple[Key, Learnt]] = NO_NAMES,
) -> list[Reading]:
    """Each of the server's accounts (`users`: id, name; `server_id`: the server's id) whose
    webhooks go to a profile with somewhere to send them, as `webhooks.route_for` routes them:
    an entry naming it on this server ("SERVER:ACCOUNT") before one naming it on any; else
    the id remembered for a name a profile lists (renamed on the server), or the name for an
    id (made again). Never to the default profile for want of an entry: it would read every
    account of the server (guests', children's), each every EVERY, for plays no one chose to
    send anywhere. Pure."""
    listed_by = accounts_listed(config, server)
    found = []
    for user_id, name in users:
        sender = ServerAccount(server, server_id, Account(id=user_id, name=name))
        route = route_for(config, sender, known, names, to_default=False)
        if route.profile is not None and route.profile in listed_by:
            found.append(Reading(route.profile, user_id, name, route))
    return found


def followed(readings: Iterable[Reading]) -> list[str]:
    """The entries an account of `readings` was found by through the id or name remembered for
    them: an entry that names no account now, but is not missing. Pure."""
    found = []
    for reading in readings:
        told = reading.route.renamed or reading.route.new_id
        if told is not None:
            found.append(told.learnt.entry)
    return found


@dataclass(frozen=True)
class Unread:
    """What a round does of the states kept of accounts it did not read (`unread`): each
    found unread for the first time noted (`noted`, with its `Left`), each read again
    un-noted (`again`), each unread for KEPT_UNREAD forgotten (`forget`); and how many are
    kept, unread, meanwhile (`kept`). (profile, user id) each."""

    noted: dict[tuple[str, str], Left] = field(default_factory=dict)
    again: dict[tuple[str, str], Left] = field(default_factory=dict)
    forget: dict[tuple[str, str], Left] = field(default_factory=dict)
    kept: int = 0


def unread(
    states: Iterable[tuple[str, str]],
    left: Mapping[tuple[str, str], Left],
    read: Collection[tuple[str, str]],
    taken_out: Callable[[str, str], bool],
    names: Mapping[str, str],
    now: float,
) -> Unread:
    """For the accounts whose catch-up state is kept (`states`: profile, user id; `left`:
    those found unread before, since when), those a round did not read (`read`) because
    their profile no longer lists them (`taken_out`): noted the first time, forgotten once
    unread for KEPT_UNREAD, so that put back later, the account starts over with a first read
    (copying none of the plays of the gap, which the user took it out not to have synced),
    while a typo fixed before then loses nothing. `names`: user id -> name, the server's. One
    read again is no longer noted. One neither read nor taken out (the server has no such
    account now while its profile lists entries: deleted, or missing for a while; or the
    server not read at all while its profile lists entries) is not noted; but one noted
    already is forgotten on time all the same: still unread, whatever became of it since
    (deleted on the server, its server's catch-up switched off or taken out of the config),
    its note would otherwise stay, due forever. Pure."""
    found = Unread()
    kept = 0
    for key in dict.fromkeys([*states, *left]):
        was = left.get(key)
        if key in read:
            if was is not None:
                found.again[key] = was
            continue
        if was is not None and now >= was.until():
            found.forget[key] = was
        elif was is not None:
            kept += 1
        elif taken_out(*key):
            found.noted[key] = Left(now, names.get(key[1], ""))
            kept += 1
    return dataclasses.replace(found, kept=kept)


def unfound(
    listed_by: Mapping[str, Sequence[str]],
    users: Sequence[tuple[str, str]],
    server_id: str,
    found: Iterable[str] = (),
) -> list[str]:
    """The entries of `listed_by` for this server (`server_id`) that name none of `users`,
    by id or name, as `resolve` matches them, but for those `found` otherwise (`followed`).
    Pure."""
    names = {same_account(one) for user in users for one in user}
    elsewhere = {same_account(one) for one in found}
    missing = []
    for entries in listed_by.values():
        for entry in entries:
            server, _, account = same_account(entry).rpartition(":")
            if server and server != same_account(server_id):
                continue
            if account not in names and same_account(entry) not in elsewhere:
                missing.append(entry)
    return missing


def told(server: Server, count: int) -> str:
    """The log's and status page's words for a read that copied `count` plays."""
    plays = "play" if count == 1 else "plays"
    return f"caught up from {NAMES[server]}: {count} {plays} the webhooks missed"


def not_checked(server: Server, count: int) -> str:
    """The log's words for a read that left `count` plays uncopied (`Decision.unchecked`)."""
    plays = "play" if count == 1 else "plays"
    name = NAMES[server]
    return (
        f"{count} {plays} on {name} older than the webhook events kept (a week) not copied: "
        f"{name} could not be read for longer than that, and the webhooks may have told of "
        "them already (copied again, they would count twice); add any a service is missing "
        "by hand"
    )


def described(plays: Sequence[Listed], shown: int = 10) -> str:
    """`plays` for a log line, dated: the first `shown`, and how many more."""
    found = [
        one.item.describe()
        + (f" played {webhookwatch.utc_date(one.last_played)}" if one.last_played else "")
        for one in plays[:shown]
    ]
    more = f"; and {len(plays) - shown} more" if len(plays) > shown else ""
    return "; ".join(found) + more


def stopped_alert(
    server: Server, server_id: str, last_webhook_at: float, plays: Sequence[Listed]
) -> tuple[str, str]:
    """The `webhooks_stopped` alert's title and text for plays of `server` caught up, the
    server's last webhook received at `last_webhook_at`."""
    name = NAMES[server]
    newest = max(plays, key=lambda one: one.last_played or 0.0)
    when = f" at {webhookwatch.utc_date(newest.last_played)}" if newest.last_played else ""
    more = f" and {len(plays) - 1} more" if len(plays) > 1 else ""
    title = f"watchbridge: webhooks from {name} server {server_id} stopped"
    check = (
        "Check that the Webhook plugin is still installed and enabled (Dashboard > Plugins: an "
        "update of Jellyfin may disable it), and that its Generic destination still has the "
        "URL and X-Webhook-Secret header `watchbridge webhook-urls` prints (a changed "
        "webhook_secret or address changes them)."
        if server == "jellyfin"
        else "Check that Emby Premiere has not lapsed (Emby sends webhooks only with it), and "
        "that the webhook in Emby's notifications still has the URL `watchbridge webhook-urls` "
        "prints (a changed webhook_secret or address changes it)."
    )
    body = (
        f"{name} server {server_id} sent its last webhook on "
        f"{webhookwatch.utc_date(last_webhook_at)}, but {name} shows plays since that no "
        f"webhook told of, such as {newest.item.describe()}{when}{more}. They were caught up "
        f"from {name} itself, so nothing is lost, only later than a webhook would bring them. "
        f"{check}"
    )
    return title, body


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- I/O


class CatchUp:
    """The background task: each configured server's listed accounts read every `every`."""

    name = "catch-up"

    def __init__(self, every: float = EVERY) -> None:
        self.every = every
        self.users: dict[Server, list[tuple[str, str]]] = {}  # asked at start, and
        self.users_at: dict[Server, float] = {}  # again when a listed one is not found
        self.last: dict[Server, tuple[float, int]] = {}  # the last read that copied plays
        self.told = Told()  # what the status says of each server (catchupstatus.py)
        # The server's id, asked with its accounts: what "SERVER:ACCOUNT" entries name.
        self.server_ids: dict[Server, str] = {}
        self.followed_told: set[str] = set()  # accounts followed by a remembered id or name
        # How far the server's clock is ahead of ours (`server_offset`), as its last answer said.
        self.ahead: dict[Server, float] = {}

    async def run(self, runtime: Any, stop: asyncio.Event) -> None:
        clients = _clients(runtime)
        try:
            while not stop.is_set():
                kept = 0
                for server in SERVERS:
                    if server in clients:
                        await self.read(runtime, server, clients[server])
                    else:
                        # Not read (off, or out of the config): the states kept of its
                        # accounts no profile lists, and those noted already, go on time.
                        kept += await self.unread_alone(runtime, server)
                if not clients and not kept:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.every)
        finally:
            for client in clients.values():
                await client.aclose()

    async def read(self, runtime: Any, server: Server, client: MediaServerClient) -> int:
        """One round for `server`: each listed account read, its missed plays recorded; how
        many were. A server down or refusing the key is told and tried again next round."""
        listed_by = accounts_listed(runtime.config, server)
        copied = 0
        try:
            now = runtime.clock()
            readings = self._resolve(runtime, server, client) if server in self.users else None
            asked = readings is None or bool(
                unfound(
                    listed_by,
                    self.users[server],
                    self._server_id(server, client),
                    followed(readings),
                )
                and not 0 <= now - self.users_at[server] < USERS_AGAIN_AFTER
            )
            if asked:
                if client.vouch.known is None:
                    await client.answers()  # the server's id, which its answers may not carry
                self.users[server], self.users_at[server] = await client.users(), now
                self.server_ids[server] = client.vouch.known or self.server_ids.get(server, "")
                self.ahead[server] = server_offset(client.http.clock_skew)
                readings = self._resolve(runtime, server, client)
            assert readings is not None
            users, server_id = self.users[server], self._server_id(server, client)
            elsewhere = followed(readings)
            missing = {
                p: unfound({p: e}, users, server_id, elsewhere) for p, e in listed_by.items()
            }
            found = unfound_of(missing, users, server_id)
            await self.told.accounts(runtime.store, server, found, asked, now)
            for reading in readings:
                profile, user_id, name = reading.profile, reading.user_id, reading.name
                await self._followed(runtime, server, reading.route)
                try:
                    copied += await self._account(runtime, server, client, profile, (user_id, name))
                except MediaServerAuthError:
                    raise
                except MediaServerError as exc:
                    # This account's listing refused (a 404: deleted, perhaps made again under
                    # a new id): the others are read all the same, and the accounts asked for
                    # again next round.
                    self.users.pop(server, None)
                    log.warning(
                        f"{NAMES[server]} could not be read for plays its webhooks missed by "
                        f"{name}; its accounts are asked for again at the next round",
                        extra={"profile": profile, "error": exc.message},
                    )
            await self.unread(runtime, server, readings)
        except MediaServerAuthError as exc:
            await _key_refused(runtime, server, exc.message)
            await self._failed(runtime, server, client, "refused", exc.message)
            return copied
        except Unavailable as exc:
            log.info(
                f"{NAMES[server]} could not be read for plays its webhooks missed; trying again"
                " at the next round",
                extra={"error": exc.message},
            )
            await self._failed(runtime, server, client, "unreachable", exc.message)
            return copied
        except ServiceError as exc:
            log.warning(
                f"{NAMES[server]} could not be read for plays its webhooks missed",
                extra={"error": exc.message},
            )
            await self._failed(runtime, server, client, "failed", exc.message)
            return copied
        except (sqlite3.Error, StoreError) as exc:  # the disk's trouble: told by its own alert
            runtime.storage_trouble(exc)
            log.warning(
                f"plays {NAMES[server]}'s webhooks missed could not be recorded; trying again"
                " at the next round",
                extra={"error": str(exc)[:200]},
            )
            return copied
        await _key_accepted(runtime, server)
        await self.told.worked(runtime.store, server, now)
        return copied

    async def _failed(
        self, runtime: Any, server: Server, client: MediaServerClient, kind: Failed, cause: str
    ) -> None:
        """Keep for the status why the read of `server` failed (`kind`, `cause`)."""
        known = client.vouch.known or ""
        await self.told.failed(runtime.store, server, kind, cause, known, runtime.clock())

    async def unread_alone(self, runtime: Any, server: Server) -> int:
        """`unread` for a server the catch-up does not read (no profile lists its accounts,
        its catch-up is off, or it is not in the config): the states of profiles listing none
        of its accounts, and of accounts noted already. How
        many are kept, unread, meanwhile; the disk's trouble is told by its own alert."""
        try:
            return await self.unread(runtime, server, None)
        except (sqlite3.Error, StoreError) as exc:
            runtime.storage_trouble(exc)
            log.warning(
                "the catch-up could not check the accounts no profile lists any more; trying "
                "again at the next round",
                extra={"error": str(exc)[:200]},
            )
            return 1

    async def unread(self, runtime: Any, server: Server, readings: Sequence[Reading] | None) -> int:
        """The states kept of `server`'s accounts this round did not read (`readings`; None:
        none read), noted, noted no more or forgotten as `unread` decides, each told in the
        log; how many are kept unread meanwhile. An account is taken out where its profile
        lists no account of the server any more, or, the server read, where the server has it
        but no profile's entry takes it for that profile."""
        store, now = runtime.store, runtime.clock()
        prefix = f"{CURSOR}:"
        kept = await asyncio.to_thread(store.cursors_named, server, prefix)
        states = [(profile, name.removeprefix(prefix)) for profile, name, _ in kept]
        left = await asyncio.to_thread(left_of, store, server)
        if not states and not left:
            return 0
        listed_by = accounts_listed(runtime.config, server)
        users = self.users.get(server, []) if readings is not None else []
        on_server = {user_id for user_id, _ in users}

        def taken_out(profile: str, user_id: str) -> bool:
            return profile not in listed_by or user_id in on_server

        read = {(one.profile, one.user_id) for one in readings or ()}
        names = dict(users) or {
            key.account_id: learnt.name
            for key, learnt in runtime.account_ids.known.items()
            if key.source == server
        }
        found = unread(states, left, read, taken_out, names, now)
        for (profile, user_id), was in found.noted.items():
            value = was.to_json()
            await asyncio.to_thread(
                store.set_cursor, server, profile, f"{LEFT}:{user_id}", value, now
            )
            since, until = webhookwatch.utc_date(was.since), webhookwatch.utc_date(was.until())
            line = words.catch_up_starts_over_at(
                profile, server, was.account(user_id), since, until
            )
            log.warning(line, extra={"profile": profile})
        for (profile, user_id), was in found.again.items():
            await asyncio.to_thread(store.forget_cursor, server, profile, f"{LEFT}:{user_id}")
            log.info(
                f"{server} account {was.account(user_id)} is read for profile {profile} again:"
                " the plays it missed meanwhile are caught up",
                extra={"profile": profile},
            )
        for (profile, user_id), was in found.forget.items():
            await asyncio.to_thread(store.forget_catch_up, server, profile, user_id)
            line = words.catch_up_starts_over(
                profile, server, was.account(user_id), webhookwatch.utc_date(was.since)
            )
            log.warning(line, extra={"profile": profile})
        return found.kept

    def _server_id(self, server: Server, client: MediaServerClient) -> str:
        return client.vouch.known or self.server_ids.get(server, "")

    def _resolve(self, runtime: Any, server: Server, client: MediaServerClient) -> list[Reading]:
        """The accounts to read, as the webhooks route them (`resolve`)."""
        ids = runtime.account_ids
        server_id = self._server_id(server, client)
        return resolve(runtime.config, server, self.users[server], server_id, ids.known, ids.names)

    async def _followed(self, runtime: Any, server: Server, route: Route) -> None:
        """Remember what the route learnt (an account's id for the name an entry lists, or its
        name for the id), as a webhook's does: a rename is followed by both, also before any
        webhook came. Tell, once per start, of an account found by what was remembered."""
        if route.learn is not None:
            # No `clash_forgets`: only a Plex account's lookups are kept by name.
            learnt = AccountLearnt(*route.learn, KEPT)
            await asyncio.to_thread(runtime.store.remember_account, learnt, runtime.clock())
            runtime.account_ids.learn(*route.learn)
        told = route.renamed or route.new_id
        if told is not None and told.message not in self.followed_told:
            self.followed_told.add(told.message)
            log.warning(told.message, extra={"source": server, "profile": told.learnt.profile})

    async def _account(
        self,
        runtime: Any,
        server: Server,
        client: MediaServerClient,
        profile: str,
        account: tuple[str, str],
    ) -> int:
        store = runtime.store
        name, at_name = f"{CURSOR}:{account[0]}", f"{AT_CURSOR}:{account[0]}"
        header = await asyncio.to_thread(store.get_cursor, server, profile, name)
        at = await asyncio.to_thread(store.get_cursor, server, profile, at_name)
        state = loaded(header, at, {})  # from when to list needs no counts
        now = runtime.clock()
        start = since(state)
        # A server behind ours saved the changes since `start` at an earlier time by its clock.
        start = None if start is None else start + min(self.ahead.get(server, 0.0), 0.0)
        rows = await client.played(account[0], None if start is None else _iso(start))
        if rows and state is not None:  # an idle read, listing nothing, never loads them
            counted = await asyncio.to_thread(store.catch_up_counts, server, profile, account[0])
            state = loaded(header, at, counted)
        ahead = self.ahead[server] = server_offset(client.http.clock_skew)
        items = [one for row in rows if (one := listed(row, server, ahead)) is not None]
        found = candidates(state, items)
        events: list[tuple[float, dict[str, Any]]] = []
        pruned_to = None
        if found:
            earliest = min(one.last_played or now for one in found) - CLOCK_MARGIN
            events = await asyncio.to_thread(store.events_since, (server,), profile, earliest)
            pruned_to = await asyncio.to_thread(store.webhooks_pruned_to, server)
        threshold = float(runtime.config.profiles[profile].completion_threshold)
        decision = decide(state, items, heard_of(found, events, threshold), now, pruned_to)
        if decision.missed:
            await _record(runtime, server, profile, account, decision.missed, decision.by_hand)
        saved = persisted(state, decision.state, bool(rows))
        if saved.header is not None:
            where = (server, profile, account[0])
            await asyncio.to_thread(
                store.save_catch_up, where, saved.header, saved.counts, saved.whole, now
            )
        elif saved.at is not None:
            await asyncio.to_thread(store.set_cursor, server, profile, at_name, saved.at, now)
        if state is None:
            log.info(
                f"{NAMES[server]}'s plays are caught up from now on: the first read of an "
                "account copies nothing",
                extra={"profile": profile, "account": account[1], "played": len(items)},
            )
        if decision.unchecked:
            named, count = described(decision.unchecked), len(decision.unchecked)
            log.warning(
                not_checked(server, count),
                extra={"profile": profile, "account": account[1], "items": named},
            )
            known = decision.unchecked[0].server or client.vouch.known or ""
            await self.told.not_copied(store, server, known, count, named, now)
        if decision.missed:
            self.last[server] = (now, len(decision.missed))
            log.warning(
                told(server, len(decision.missed)),
                extra={
                    "profile": profile,
                    "account": account[1],
                    "items": ", ".join(one.item.describe() for one in decision.missed[:5]),
                },
            )
            await _tell_stopped(runtime, server, decision.missed)
        return len(decision.missed)


def _clients(runtime: Any) -> dict[Server, MediaServerClient]:
    """A client of each server configured with an API key and catch_up on whose accounts a
    profile lists."""
    config = runtime.config
    clients: dict[Server, MediaServerClient] = {}
    server: Server
    for server in ("jellyfin", "emby"):
        settings = getattr(config.services, server)
        if settings is None or not settings.catch_up or not accounts_listed(config, server):
            continue
        client = media_server_client(settings, metrics=runtime.metrics, clock=runtime.clock)
        if client is not None:
            clients[server] = client
    return clients


async def _record(
    runtime: Any,
    server: Server,
    profile: str,
    account: tuple[str, str],
    missed: Sequence[Listed],
    marks: Collection[str] = frozenset(),
) -> None:
    """Record the missed plays as a webhook's marks are, in one transaction; those of `marks`
    (item ids: `by_hand`) as marks by hand."""
    from watchbridge.webhooks import ingest_job

    jobs = []
    for one in missed:
        event = event_of(one, server, account)
        marked = one.id in marks
        job = ingest_job(runtime, profile, event, dated=one.last_played, by_hand=marked)
        job.payload["caught_up"] = True
        jobs.append(dataclasses.replace(job, source=CAUGHT_UP))
    if await runtime.writer.write_all(jobs):
        for wake in runtime.on_enqueued:
            wake()


async def _tell_stopped(runtime: Any, server: Server, missed: Sequence[Listed]) -> None:
    """Alert `webhooks_stopped` for each server of `missed` that sent webhooks before."""
    by_server: dict[str, list[Listed]] = {}
    for one in missed:
        by_server.setdefault(one.server, []).append(one)
    for server_id, plays in by_server.items():
        last = runtime.last_webhooks.of_server(server, server_id) if server_id else None
        if last is None:
            continue
        title, body = stopped_alert(server, server_id, last, plays)
        key = webhookwatch.alert_key(server, server_id)
        await runtime.notifier.notify(webhookwatch.ALERT_KIND, title, body, key=key)


async def _key_refused(runtime: Any, server: Server, message: str) -> None:
    """The server refused the API key: the one alert of that, as the deliveries and links
    raise it (`causes.server_key_alert`), naming the profiles whose plays wait for it or are
    not caught up meanwhile."""
    name = NAMES[server]
    log.warning(f"{name} could not be read for plays its webhooks missed: {message}")
    waiting = await asyncio.to_thread(runtime.store.waiting_for_server, server)
    whose = sorted({*waiting, *accounts_listed(runtime.config, server)})
    alert = server_key_alert(server, message, whose, catch_up=True)
    await runtime.notifier.notify(alert.kind, alert.title, alert.body, key=alert.key)


async def _key_accepted(runtime: Any, server: Server) -> None:
    """The server took the API key: the deliveries it held (their ids asked of it) go now,
    not at the end of their half hour, and its alert is over."""
    if await asyncio.to_thread(runtime.store.lift_server_holds, server, runtime.clock()):
        for wake in runtime.on_enqueued:
            wake()
    key = f"server:{server}"
    if runtime.notifier.raised("credentials", key):
        await runtime.notifier.resolve("credentials", server_key_works(server), key=key)
