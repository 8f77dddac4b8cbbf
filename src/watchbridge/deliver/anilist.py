"""Delivering outbox rows to AniList: plays become progress, ratings become scores.

AniList keeps one entry per cour or part with its highest episode (reference anilist.md §7), so
a play of a TMDB episode goes through the anime mapping (reverse: show, season, episode ->
AniList id and episode; an item with only anime ids, a HAMA `anidb-` guid or a webhook's
`ids.anilist`, by those) and sets progress to max(current, episode): never lower, whatever
order plays arrive in. An episode past the entry's episode count is never written (the
mapping is off there: it is recorded as unmatched). Reaching the episode count completes the
entry (a rewatch pass is counted in `repeat`). A play of a movie is the whole entry: it
completes it (progress = its episode count, usually 1). An entry paused or dropped on AniList
after a play was watched (a link's older history, a play held through an outage) keeps that
status: the play raises its progress only; a later viewing resumes it as watching.

Rewatches: a play that is a new viewing starts a rewatch when it is of episode 1 of a
completed entry (REPEATING; a one-episode entry or a movie counts one more rewatch at once),
advances it (a rewatch paused or dropped is resumed: an entry with rewatches counted, or one a
read saw finished or rewatching before it was set aside; a finish date alone is no sign, as a
drop is often dated), and its last episode completes it (`repeat` + 1). A rewatch a read saw
set to watching (from rewatching, or set aside), or a completed entry a read saw set back to
watching at a lower progress (how AniList users begin a rewatch; not one a removal of ours
set back, `LOWERED`), is advanced by new viewings only, lowered by no removal, and keeps its
label: its end completes it as a watching entry's does. A webhook's play is a new
viewing when it is live (a week at most), and watched after the play of ours that last
finished the entry, if any (one watched before, held until a rewatch began, is the earlier
viewing's); a link's when it is dated after the entry was
finished (`new_viewing`: after the end of its finish date in every time zone, and after its
last update where that is all AniList tells). Any other play of an episode a finished or
rewatched entry holds (an undated one, one older than the finish) is counted already: the
link reader keeps it as an absorbed play once its row is done. A link queues a rewatch in no
particular order, so the rows of a batch go in the order they were watched, and a new
viewing of a later episode of a completed entry waits once (`REWATCH_WAIT`) before it is
counted, letting the episode 1 queued behind it start the rewatch first. What a play's save
sets is noted before it goes out: after a crash or a lost answer, an entry already showing it is
done, so the viewing is not counted again (a first completion would become a rewatch). A new
entry that reaches its episode count is completed by a second save; if that one failed, the
play tried again completes it. A save AniList keeps failing (a 500) spends the row's attempts
and ends as a dead letter; the rows behind it are held without spending.

Scores go as `scoreRaw` and are skipped when the user would see no
difference in their format (raw 70 and 80 are both 4 stars: no flapping), or when a rating that
waited (an outage, an expired sign-in) finds the score changed on AniList after it was given
(AniList dates no score: a read seeing it changed dates it by the entry's `updatedAt`, a
rating since the last read of the list); a season shared by
several entries is scored on its first scored entry on the list (else its first entry on the
list), as the link reader reads it. A score needs an entry: a rating of a title not on the
list waits for it (a play adds it, or the user: no entry is made up for a rating alone, as
how much was watched is unknown), saying so in the row's reason; a batch's ratings go after
its plays. A whole show's rating names no entry and is never written: an anime show's is
recorded for the user to be told what to rate instead, until a season of it is rated
(`watchbridge.show_ratings`). Removals lower progress only when the removed episode is
the highest one (AniList cannot unwatch an episode in the middle).

A play numbered by season of a show some entry maps by absolute number (One Piece, Gintama on
TMDB), where no seasonal range holds it, is counted to its absolute number on a season list
(`watchbridge.anime_seasons`): the list of the other side of the row's link, for a webhook's
row Trakt's, else Serializd's. While no list can be read the row is tried again hourly; with
no list to read at all (neither service configured) daily, its reason saying how to have it
placed. A number past what its season holds that is among the absolute episodes the datasets
place in that season (One Piece's S21E1071 from a media server numbering it so) is that
absolute number, placed without a list (`AnimeIndex.absolute_in_season`).

Items that are not anime (in no mapping dataset) from a webhook are done at once with a note,
but the row is kept aside for a month (`SKIPPED`): fresh anime often reach the datasets only
days or weeks after they air (reference anime-mapping.md), so at most hourly the kept rows are
resolved again and those the mapping (or an override) now places are queued again.
A play waiting for show ids its media server (or Trakt) may know soon is tried again hourly
at first, like any unmatched row; one its server still names nothing for hours after
(`NOTHING_NAMED_AFTER`), or at its last try before that (small delivery limits), is not anime
either: never a dead letter.
Anime that cannot be mapped are recorded for `watchbridge anime unmatched`; where a dataset
refresh may map them (a new season, an episode past every range, two entries claiming it) the
row is tried again a day later, and gives up (a dead letter) after `delivery.max_age`. A row
a link queued is never settled as done without its write: the link would count the play as
delivered and, not finding it on AniList, remove it from the other side.
Every batch starts from a fresh view of the list: the entries updated since the last batch
(one request), or the whole list the first time (a few requests). A list AniList answers in a
shape this release cannot read holds the profile's rows without spending their tries (an alert
if it lasts), looked at again hourly: no fault of theirs, they go once it reads. So does a row
for an entry that does not read whole (what it holds now is unknown: a play could lower its
progress), while the rows for the entries that read go on; the mirror keeps such an entry as
last seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from calendar import monthrange
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeGuard

from watchbridge import hama, ratings, show_ratings
from watchbridge.accounts import AccountNotes, user_named
from watchbridge.anilist_viewings import (
    SaveNote,
    bridged,
    noted,
    notes_from_json,
    save_note,
    sent_from_json,
    sent_save,
    sent_to_json,
    settled,
    viewed_to_json,
)
from watchbridge.anime import PARTIAL, PENDING, SCHEMES, AnimeIndex, Unmatched, anime_signs
from watchbridge.anime_data import MISSING_RETRY
from watchbridge.anime_seasons import AbsoluteSeasons, SeasonSources, Want
from watchbridge.catalogue import file_first
from watchbridge.config import DeliveryConfig
from watchbridge.deliver.worker import (
    Dead,
    Delivered,
    Hold,
    Outcome,
    Retry,
    Skipped,
    at_last_try,
    changed_hold,
    crashed,
    enriched,
    for_the_account,
    per_profile,
    service_hold,
    unreadable_row,
)
from watchbridge.http import RateLimited, Unavailable
from watchbridge.ids import ANIME, Enricher, own_anime_ids
from watchbridge.model import MediaRef, ref_from_dict, ref_to_dict
from watchbridge.reconcile import UNDATED
from watchbridge.services.anilist import (
    FINISHED_STATUSES,
    NOT_RELEASED,
    STOPPED_STATUSES,
    AniListAuthError,
    AniListClient,
    AniListError,
    AniListNotFound,
    AniListValidationError,
    EntryWrite,
    FuzzyDate,
    ListEntry,
    ListUnreadable,
    Title,
    UnreadEntry,
    entry_from_dict,
    entry_to_dict,
    guard_progress,
)
from watchbridge.services.anilist import NAME as SERVICE_NAME
from watchbridge.show_ratings import WEBHOOK, anime_show, season_keys, show_record_key
from watchbridge.store import KEEP_MARKS, NewOutboxRow, OutboxItem, Store
from watchbridge.zone import zone_named

log = logging.getLogger(__name__)

NAME = "anilist"
ENTRIES = "entries"  # mirror: AniList media id -> the entry as last seen
# store cache: a play row's idempotency key -> what its save sets (status, progress, rewatch
# count), noted before the save goes out and kept while the row may be tried again
SENT = "anilist-play-saves"
# When the play that last finished an entry was watched, by profile and media: a later play
# is a new viewing, an earlier one (held through an outage) was counted by it.
FINISHED = "anilist-finished-by"  # kept as long as the item's marks (store.KEEP_MARKS)
# By profile and media: the `updatedAt` of the entry when a read first saw its score changed
# (by the user on AniList: our own saves go into the mirror), or first saw it scored (the
# first read of the list, a title added since: the score may be that recent). AniList dates no
# score, so this is the best "rated at" there is, for a rating that waited (`_scored_since`).
SCORED = "anilist-scored-by"  # kept as long as the item's marks (store.KEEP_MARKS)
# By profile and media: {"at": when the user last changed a paused or dropped entry on AniList,
# "saved": its `updatedAt` after a save of ours (a play's progress, a score) left it so}.
# Our save dates the entry anew; while it still shows "saved", "at" is the time a play must
# be after to resume it (`play_write`'s `changed_at`).
STOPPED = "anilist-stopped-by"  # kept as long as the item's marks (store.KEEP_MARKS)
# By profile and media: the entry id of an entry a read saw set aside on AniList (paused or
# dropped) after the last read saw it finished or rewatching, or set to watching after it saw
# it rewatching (or completed, at a lower progress): a rewatch was paused, relabelled or
# begun by hand, and the next episodes go on with it. Cleared when a read sees the entry
# finished again. A finish date alone tells nothing: list apps (and imports from MAL) date a
# drop so.
REWATCH_SET_ASIDE = "anilist-rewatch-set-aside"  # kept as long as the item's marks
# By profile and media: {"id": entry id, "at": its `updatedAt`} after a removal of ours set a
# completed entry back to watching (the other side unwatched its last episode). A read seeing
# it so is no rewatch begun by the user (`note_set_aside`): further removals still lower it.
LOWERED = "anilist-lowered-by-us"  # kept as long as the item's marks
# By profile and media: our saves in a row, each with the entry's `updatedAt` and progress
# before and after it and when the viewing it saved was watched (`anilist_viewings`). AniList
# dates an entry by its last change, and our save (a score, another link's play of days ago, a
# removal) is one: a link reading the entry walks the saves back from what it reads and dates
# each episode as the user watched it (`readers.anilist`), so every link gives a viewing one
# date (else a link reading it after our save dated it now, and the other services' copies of
# it, days apart, were copied again as a second viewing). Kept with the one note the release
# before the chains reads beside them (`anilist_viewings.viewed_to_json`): a rollback to it
# still dates the viewing each entry shows.
VIEWED = "anilist-viewed-at"  # kept as long as the item's marks
# By profile and media: the save of ours on its way (`anilist_viewings.SentSave`). Its answer
# lost (a timeout, a crash), the retry finds the entry already showing it and saves nothing:
# the next read that sees it landed notes it in VIEWED (else its `updatedAt` dated a viewing).
VIEWED_SENT = "anilist-viewed-sent"  # kept as long as the item's marks
# No rewatch begins with a manual mark this soon after the play that finished the entry: marks
# received together (Jellyfin's "mark season played" posts each episode, in no order) are one
# viewing.
REWATCH_GAP = 600.0
SENT_KEEP = 60 * 86400.0
CURSOR = "entries_updated_at"
# The list is read whole again after this (updates since a time show no deleted entries), and
# before a webhook's play is answered "already counted" when the last whole read is older
# than ENTRIES_RECHECK (the user may have deleted the entry to start over).
ENTRIES_FULL_READ = 86400.0
ENTRIES_RECHECK = 600.0
FULL_CURSOR = "entries_read_whole_at"
AUTH_HOLD = 1800.0
CHANGED_WAITS = "deliveries to it wait, without giving up, until it reads again"
ENTRY_WAITS = "deliveries to that entry wait, without giving up, until it reads again"
# No mapping dataset downloaded yet: tried again as often as their downloads are, so a play
# goes minutes after one arrives (the service's own refresh, or `anime refresh`).
MAPPING_HOLD = MISSING_RETRY
MAPPING_RETRY = 86400.0  # an unmatched anime play: try again after the next dataset refresh
# A play waiting for ids its media server (or Trakt) may know soon: hourly at first, as for
# every target (the enricher asks again after its misses expire, ids.SERIES_MISSING_TTL).
IDS_RETRY = 3600.0
# A webhook play its media server still names nothing for this long after it was queued is no
# item being identified (a home video, an archived YouTube channel): not anime.
NOTHING_NAMED_AFTER = 6 * 3600.0
NOT_ANIME = "not anime (in no mapping dataset): skipped, checked again later"
# Unmatched codes a dataset refresh (or an override) may turn into a mapping.
UNAIRED = "unaired"  # Unmatched code: a play mapped onto a title AniList lists as not aired yet
REFRESHABLE = frozenset(
    {"outside", "new-season", "no-target", "ambiguous", "absolute", PENDING, UNAIRED}
)
SEASONS_RETRY = 3600.0  # a play waiting for a season list that could not be read
# mirror: a skipped webhook row's idempotency key -> the row (see `recheck_skipped`)
# A removal that went out again (a dead letter, by itself or retried) after a later play of its
# episode was delivered: it was decided before that play, the user's latest word, and AniList,
# which keeps only a progress, cannot tell that viewing from the one removed.
PLAYED_SINCE = (
    "not removed: the episode was played again after this removal was decided (a later play,"
    " delivered since): that viewing stands and the progress stays"
)
SKIPPED = "skipped_not_anime"
SKIPPED_KEEP = 30 * 86400.0  # how long a skipped row waits for the datasets to catch up
RECHECK_EVERY = 3600.0  # seconds between two looks at the skipped rows of a profile
LIVE_REWATCH = 7 * 86400.0  # a webhook play this recent of a finished entry is a new viewing
REWATCH_WAIT = 300.0  # a link's later episode of a rewatch waits this long once for episode 1
NOT_LISTED_FIRST_WAIT = 600.0  # a rating of a title not on the list: first for plays behind it
NOT_LISTED_WAIT = 86400.0  # then for the user to add the title
WESTMOST = 12 * 3600.0  # a day ends this long after midnight UTC in the furthest time zone
DAY_SLACK = 3600.0  # a local day's end, give or take a daylight-saving hour

# MediaRef -> (AniList id, AniList episode), or why not
Reverse = Callable[[MediaRef], "tuple[int, int] | Unmatched"]
# An episode (and its file's first, for a further episode of a file) -> as TMDB numbers it.
Renumber = Callable[[MediaRef, MediaRef | None], Awaitable[MediaRef]]


# --------------------------------------------------------------------------- pure decisions


def _day(at: float) -> FuzzyDate | None:
    return FuzzyDate.of(at) if at > UNDATED else None


def finished_by(day: FuzzyDate) -> float | None:
    """The latest moment a finish date can stand for: the end of that day (of the month or
    year when the day or month is missing) where watchbridge runs (its `TZ`: the dates it
    writes are that zone's days), and in the time zone furthest west when that is UTC without
    a zone named, which may only mean that `TZ` was not set."""
    if day.year is None or not day.watched():
        return None
    try:
        if day.month is None:
            end = datetime(day.year + 1, 1, 1)
        else:
            last = day.day or monthrange(day.year, day.month)[1]
            end = datetime(day.year, day.month, last) + timedelta(days=1)
    except ValueError:
        return None
    local = end.astimezone()
    if local.utcoffset() == timedelta(0) and not zone_named():
        return end.replace(tzinfo=UTC).timestamp() + WESTMOST
    return local.timestamp() + DAY_SLACK


def new_viewing(entry: ListEntry, at: float) -> bool:
    """Whether a link's play at `at` is clearly a viewing after the entry was finished, so it
    may start, advance or finish a rewatch: dated, after the finish date (anywhere on Earth),
    and for a finished entry without a finish date, or whose rewatches were counted (AniList
    dates none of them), after its last update."""
    if at <= UNDATED:
        return False
    finished = finished_by(entry.completed_at)
    if finished is not None and at <= finished:
        return False
    if entry.status == "COMPLETED" and (finished is None or entry.repeat > 0):
        return at > entry.updated_at
    return True


def live_rewatch(
    entry: ListEntry | None, at: float, now: float, finished_by_play: float | None, mark: bool
) -> bool:
    """Whether a webhook's play at `at` is a new viewing: at most a week old, and, of an entry
    our play watched at `finished_by_play` finished, watched after that one, whether the entry
    is completed or rewatching since (delivered after the entry's later episodes, or after the
    next rewatch began, held through an AniList outage: that earlier viewing counted it); a
    manual `mark` (not a playback's end) minutes after it belongs with it. To start a rewatch
    of an entry finished on AniList itself: after its finish (`new_viewing`)."""
    if now - at > LIVE_REWATCH:
        return False
    if entry is None:
        return True
    if finished_by_play is not None:
        return at > finished_by_play + (REWATCH_GAP if mark else 0.0)
    # Finished on AniList itself: by its dates, as a link's play.
    return entry.status != "COMPLETED" or new_viewing(entry, at)


def play_write(
    current: ListEntry | None,
    media_id: int,
    episode: int,
    at: float,
    *,
    rewatch: bool,
    whole: bool = False,
    changed_at: float | None = None,
    set_aside: bool = False,
) -> EntryWrite | None:
    """What a play of AniList episode `episode` changes (None: nothing, it is counted).

    `rewatch`: the play is a new viewing (see the module doc), so it may start (episode 1),
    advance and finish a rewatch of a finished entry; any other play of an episode a finished
    or rewatched entry holds is counted. `whole`: the play is of the whole entry (a movie).
    `changed_at`: when the user last changed the entry on AniList, when a save of ours since
    dated it anew (else its `updatedAt`). `set_aside`: a read saw the entry paused or dropped
    after it was finished or rewatching, or set to watching from rewatching, or from completed
    at a lower progress (`set_aside_rewatch`)."""
    day = _day(at)
    if current is None:
        if whole:
            return EntryWrite(
                media_id, status="COMPLETED", progress=episode, started_at=day, completed_at=day
            )
        return EntryWrite(media_id, status="CURRENT", progress=episode, started_at=day)
    total = current.episodes
    if current.status == "COMPLETED":
        if rewatch and (whole or total == 1):
            return EntryWrite(media_id, repeat=current.repeat + 1)
        if rewatch and episode == 1:
            return EntryWrite(media_id, status="REPEATING", progress=1)
        if episode > current.progress:  # finished short of its count: the episode is news
            return EntryWrite(media_id, progress=episode)
        return None
    ends = whole or (total is not None and episode >= total)
    # A new entry is completed by a second save (finish_write): if that one failed, the last
    # episode's play tried again finds it listed with every episode, and completes it. A
    # rewatch the user set to Rewatching without setting its progress back (AniList keeps it
    # at the count) is finished by a new viewing of its last episode, as one we began is:
    # watched after the user set it so (a play held from the first viewing is that one's).
    finishes = current.status == "CURRENT" or (
        current.status == "REPEATING" and rewatch and at > current.updated_at
    )
    if episode <= current.progress and not (ends and finishes):
        return None
    if not rewatch and _watching_rewatch(current, set_aside):
        return None  # an older viewing: the first pass holds it
    if current.status == "REPEATING" or _paused_rewatch(current, set_aside):
        if not rewatch:
            return None  # an older viewing: the first pass holds it
        if ends:
            return EntryWrite(
                media_id, status="COMPLETED", progress=total or episode, repeat=current.repeat + 1
            )
        resumed = None if current.status == "REPEATING" else "REPEATING"
        return EntryWrite(media_id, status=resumed, progress=episode)
    started = None if current.started_at else day
    if _stopped_since(current, at, changed_at):
        # Paused or dropped on AniList after this viewing (a link's older history, a play held
        # through an outage): the user's later word stands, and the episode still counts.
        progress = (total or episode) if ends else episode
        return EntryWrite(media_id, progress=progress, started_at=started)
    if ends:
        completed = None if current.completed_at else day
        return EntryWrite(
            media_id,
            status="COMPLETED",
            progress=total or episode,
            started_at=started,
            completed_at=completed,
        )
    return EntryWrite(media_id, status="CURRENT", progress=episode, started_at=started)


def _paused_rewatch(entry: ListEntry, set_aside_rewatch: bool = False) -> bool:
    """A paused or dropped entry that was finished before (a rewatch counted, or a read saw it
    finished or rewatching before it was set aside: `set_aside_rewatch`): the rewatch was
    paused, and its next episodes go on with it (counting one more rewatch at its end), not
    the first pass. A finish date alone is not enough: a drop is often dated so."""
    return entry.status in STOPPED_STATUSES and (entry.repeat > 0 or set_aside_rewatch)


def _watching_rewatch(entry: ListEntry, set_aside_rewatch: bool) -> bool:
    """A watching entry a read saw go on from a rewatch (`set_aside_rewatch`): set from
    rewatching to watching, a rewatch set aside then set to watching, or a completed entry set
    back to watching at a lower progress (a rewatch begun so). Its progress is the
    rewatch's (as the link reader reads it): a play of an older viewing does not raise it, a
    removal does not lower it (as for one labelled rewatching). A new viewing raises it, and
    its end completes the entry as a watching entry's does (no rewatch counted: the user
    chose Watching)."""
    return entry.status == "CURRENT" and set_aside_rewatch


class LastRead(Protocol):
    """What the last read saw of an entry: the delivery target's mirror (a `ListEntry`) or the
    link reader's cursors (`readers.anilist.EntryState`)."""

    @property
    def status(self) -> str: ...
    @property
    def progress(self) -> int: ...
    @property
    def repeat(self) -> int: ...


def set_aside_rewatch(before: LastRead | None, entry: ListEntry) -> bool | None:
    """What a read tells of whether `entry` (as read now; `before`: what the last read saw of
    the same entry, if anything) is a rewatch set aside: True when it was finished or
    rewatching and is paused or dropped now, or was rewatching and is watching now (the
    rewatch goes on under that label), or was completed and is watching at a lower progress
    with no rewatch counted since (set back to watching: how AniList users begin a rewatch,
    the link reader's `readers.anilist.relogged`); False when it is planned after being set
    aside, or finished again (the rewatch is over); None when it tells nothing new (a rewatch
    set aside and then set to watching goes on, as the link reader reads it:
    `readers.anilist.rewatch_set_aside`)."""
    if before is None or before.status == entry.status:
        return None
    if entry.status in STOPPED_STATUSES and before.status in FINISHED_STATUSES:
        return True
    if entry.status == "CURRENT" and before.status == "REPEATING":
        return True
    if entry.status == "CURRENT" and before.status == "COMPLETED":
        set_back = entry.repeat == before.repeat and entry.progress < before.progress
        return True if set_back else None
    if entry.status == "PLANNING" and before.status in STOPPED_STATUSES:
        return False
    if entry.status == "COMPLETED":
        return False
    return None


def note_set_aside(
    store: Store, profile: str, read: Iterable[tuple[LastRead | None, ListEntry]], now: float
) -> None:
    """Note what a read of the list (each entry with what the last read saw of it)
    tells of rewatches set aside (REWATCH_SET_ASIDE). The delivery target's reads and a link's
    reads note alike: either may be the one that saw the entry finished."""
    for before, entry in read:
        told = set_aside_rewatch(before, entry)
        if told is None:
            continue
        key = f"{profile}:{entry.media_id}"
        if told and before is not None and before.status == "COMPLETED":
            _, ours = store.cache_get(LOWERED, key, now)
            if ours == {"id": entry.id, "at": entry.updated_at}:
                continue  # set back to watching by our removal, not by the user
        store.cache_put(REWATCH_SET_ASIDE, key, entry.id if told else None, now, KEEP_MARKS)


def viewed_marks(
    store: Store, profile: str, entries: Iterable[ListEntry], now: float
) -> dict[int, list[SaveNote]]:
    """VIEWED's notes of `profile`'s entries, by media id (for `anilist_viewings`), with a
    save whose answer was lost noted where an entry read shows it (VIEWED_SENT)."""
    notes = {media: notes_from_json(noted) for media, noted in _marks(store, VIEWED, profile, now)}
    sent = {
        media: sent_from_json(noted) for media, noted in _marks(store, VIEWED_SENT, profile, now)
    }
    for entry in entries:
        if entry.media_id in sent:
            notes[entry.media_id] = settled(
                notes.get(entry.media_id, []), sent[entry.media_id], entry
            )
    return notes


def _marks(store: Store, kind: str, profile: str, now: float) -> list[tuple[int, Any]]:
    """What `kind` keeps of `profile`'s entries, by media id."""
    head = f"{profile}:"
    return [
        (int(key.removeprefix(head)), noted)
        for key, noted in store.cache_items(kind, now)
        if key.startswith(head) and key.removeprefix(head).isdigit() and noted is not None
    ]


def _stopped_since(entry: ListEntry, at: float, changed_at: float | None = None) -> bool:
    """A first viewing paused or dropped on AniList after a play watched at `at` (undated:
    whenever): only a viewing after the user's last change of the entry (`changed_at`, else
    its `updatedAt`) resumes it as watching."""
    changed = entry.updated_at if changed_at is None else changed_at
    return entry.status in STOPPED_STATUSES and at <= changed


def shows(entry: ListEntry, write: EntryWrite) -> bool:
    """Whether `entry` already holds what `write` sets: it is that write's title (the mapping
    may have moved since), with its status, and at least its progress and rewatch count."""
    return (
        entry.media_id == write.media_id
        and (write.status is None or entry.status == write.status)
        and (write.progress is None or entry.progress >= write.progress)
        and (write.repeat is None or entry.repeat >= write.repeat)
    )


def waits_for_start(current: ListEntry | None, episode: int, rewatch: bool) -> bool:
    """Whether a new viewing of a later episode of a completed entry should wait for the
    episode 1 that would start its rewatch (a link queues a rewatch in no particular order)."""
    return current is not None and current.status == "COMPLETED" and rewatch and episode > 1


def past_the_end(media_id: int, episode: int, total: int | None) -> Unmatched | None:
    """An episode the entry does not have: the mapping is off there, so nothing is written
    (clamping it would complete the entry on a guess)."""
    if total is None or episode <= total:
        return None
    return Unmatched(
        f"maps to episode {episode} of AniList {media_id}, which has {total}: a part newer "
        "than the mapping datasets, or a dataset off by some episodes; add an override",
        "outside",
    )


def not_aired(media_id: int, release: str | None) -> Unmatched | None:
    """A play of a title AniList lists as not aired yet: nobody watched it, so the mapping is
    off there (a dataset a season off put one season's plays on the next, pitfalls M4) and
    nothing is written on its word. Tried again daily: written once AniList lists it as
    airing (a stream ahead of the broadcast, a release AniList marked late)."""
    if release != NOT_RELEASED:
        return None
    return Unmatched(
        f"maps to AniList {media_id}, which has not aired yet: a dataset off by a season or a "
        "part; add an override (the play is written if AniList lists the title as airing)",
        UNAIRED,
    )


def season_owner(candidates: Sequence[int], entries: Mapping[int, ListEntry], fallback: int) -> int:
    """The entry a season's rating belongs to: of the entries mapped into the season (in
    episode order), the first scored one on the list, else the first on the list; `fallback`
    (the entry holding the season's first episode) when none is on the list."""
    listed = [media for media in candidates if media in entries]
    scored = [media for media in listed if entries[media].score > 0]
    return (scored or listed or [fallback])[0]


def finish_write(saved: ListEntry, at: float) -> EntryWrite | None:
    """A new entry learns its episode count only from the save: complete it if reached."""
    if saved.episodes is None or saved.progress < saved.episodes:
        return None
    if saved.status == "CURRENT":
        return EntryWrite(saved.media_id, status="COMPLETED", completed_at=_day(at))
    return None


def scored_at(before: ListEntry | None, entry: ListEntry) -> float | None:
    """The latest an entry read now can have been scored, when the read tells (None: it
    does not): its `updatedAt`, when its score changed since the last read (`before`), or when
    it is scored and first seen (the first read of the list, a title added since). A rating
    that waited since before then is not written over it (`_scored_since`)."""
    if before is None:
        return entry.updated_at if entry.score > 0 else None
    return entry.updated_at if before.score != entry.score else None


def not_listed(media_id: int, item: MediaRef | Outcome) -> str:
    """Why a rating of a title not on the list waits, and what the user can do about it."""
    title = ""
    if isinstance(item, MediaRef) and (item.title or item.show_title):
        title = f"{item.title or item.show_title} "
    return (
        f"{title}(AniList {media_id}) is not on your AniList list, and a score needs an entry:"
        " the rating waits for a play of it to add the entry, or for you to add it on"
        " anilist.co (any status); watchbridge adds no entry by itself, as it cannot tell how"
        " much of it you watched. Still not listed when its tries run out (a day apart:"
        " delivery.max_age, delivery.max_attempts), it is a dead letter (`watchbridge"
        " deadletters retry` once the title is listed)"
    )


def listed_wait(row: OutboxItem) -> float:
    """How long a rating of a title not on the list waits for it: briefly at first (plays of
    it queued behind the rating add the entry), then a day at a time."""
    return NOT_LISTED_FIRST_WAIT if row.attempts == 0 else NOT_LISTED_WAIT


def rating_write(current: ListEntry, value: int | None, score_format: str) -> EntryWrite | None:
    """The score write for internal `value` (None: remove), unless the user would see no
    change in their own format."""
    have = current.score or None
    if ratings.anilist_same(have, value, score_format):
        return None
    return EntryWrite(current.media_id, score_raw=value or 0)


def removal_write(
    current: ListEntry | None, episode: int, set_aside: bool = False
) -> EntryWrite | None:
    """An unwatch propagated on purpose: only the highest episode can go (progress - 1); none
    of a rewatch (`set_aside`: one paused, dropped or set to watching, see `play_write`)."""
    if current is None or current.status == "REPEATING" or _paused_rewatch(current, set_aside):
        return None
    if _watching_rewatch(current, set_aside):
        return None
    if episode != current.progress:
        return None
    status = "CURRENT" if current.status == "COMPLETED" else None
    return EntryWrite(current.media_id, status=status, progress=episode - 1)


# What the datasets answer for an episode numbered past what they map of a show (a season
# they do not know yet, an episode past its ranges). A Jellyfin or Emby library in TVDB order
# numbers episodes so too, with the show's TMDB id beside, but nothing in a play says which
# numbering it uses (TMDB folds seasons TVDB splits): TVDB's answer is told, never taken.
ANOTHER_NUMBERING = ("new-season", "outside")


def _in_tvdb_order(why: Unmatched, by_tvdb: tuple[int, int], special: bool = False) -> Unmatched:
    """`why` TMDB's numbering places no entry, with what TVDB's would say of the same numbers.
    A `special` (season 0) is numbered by TMDB and TheTVDB each their own way, which no
    catalogue renumbers: only the override is told."""
    media, number = by_tvdb
    told = (
        f"{why.reason}. If your library numbers episodes in TVDB order, this is AniList {media}"
        f" episode {number}: add an override"
    )
    if special:
        return Unmatched(f"{told} (TMDB and TheTVDB number specials each their own way)", why.code)
    return Unmatched(
        f"{told}. A play naming the episode's own TMDB id (Plex knows it; else Trakt's id search"
        " finds it, with services.trakt) is placed by Serializd's catalogue, with"
        " services.serializd",
        why.code,
    )


def _tmdb_special(item: MediaRef, scheme: str, found: Unmatched) -> bool:
    """Whether TMDB's numbering places no entry for a special (season 0) of a show a dataset
    knows (One Piece's S0E46, which TheTVDB's numbering makes Film Red): what TVDB's says of
    the same numbers is told, never taken, as for `ANOTHER_NUMBERING`."""
    return (
        scheme == "tmdb"
        and item.kind == "episode"
        and item.season == 0
        and found.code not in ("unknown", "ambiguous")
    )


class IndexReverse:
    """`Reverse` from the mapping index (`watchbridge.anime.AnimeIndex`): TMDB, then TVDB
    numbering; an item no dataset range holds falls back to its anime ids (AniList, AniDB,
    MAL: HAMA guids, webhooks), which name the entry itself.

    With `seasons`, a TMDB play numbered by season of a show some entry maps by absolute
    number (One Piece) that no seasonal range holds is placed by its absolute number on the
    show's season list (`prepare` those first: `wants`)."""

    def __init__(self, index: AnimeIndex, seasons: AbsoluteSeasons | None = None) -> None:
        self.index = index
        self.seasons = seasons

    def with_seasons(self, seasons: AbsoluteSeasons | None) -> IndexReverse:
        return self if seasons is self.seasons else IndexReverse(self.index, seasons)

    def wants(self, items: Iterable[MediaRef]) -> dict[int, Want]:
        """The TMDB shows (and the highest season and episode) whose season lists placing
        `items` needs."""
        wants: dict[int, Want] = {}
        for item in items:
            show = _absolute_show(self.index, item)
            place = _place(item)
            if show is None or place is None or item.absolute:
                continue
            if isinstance(self.index.anilist_for(show, *place), tuple):
                continue
            held = wants.get(show)
            wants[show] = place if not isinstance(held, tuple) else max(held, place)
        return wants

    def _by_absolute(self, show: int, item: MediaRef) -> tuple[int, int] | Unmatched:
        """An episode (or a season, by its first episode) of an absolutely mapped show that
        no seasonal range holds, by its absolute number on the season list (its own, when
        the play carries one)."""
        place = _place(item)
        assert place is not None
        absolute: int | Unmatched
        if item.absolute is not None and item.kind == "episode":
            absolute = item.absolute
        elif self.seasons is None:
            return Unmatched(no_season_list(item, show), "absolute")
        else:
            absolute = self.seasons.absolute_of(show, *place)
        if isinstance(absolute, Unmatched):
            return absolute
        return self.index.anilist_for(show, None, absolute)

    def __call__(self, item: MediaRef) -> tuple[int, int] | Unmatched:
        unknown = hama.unplaced(item)  # a HAMA episode numbered in a way not known
        if unknown is not None:
            return unknown
        if item.kind == "movie":
            tmdb, imdb = item.ids.tmdb, item.ids.imdb
            tmdb_id = int(tmdb) if tmdb and tmdb.isdigit() else None
            if tmdb_id is not None or imdb:
                found = self.index.anilist_for_movie(tmdb_id, imdb)
                return found if isinstance(found, tuple) else self._by_anime_ids(item, found)
            why = Unmatched(f"{item.describe()} has no TMDB or IMDb id")
            return self._by_anime_ids(item, why)
        ids = item.ids if item.kind == "show" else item.show_ids
        answer: Unmatched | None = None
        first_said: Unmatched | None = None  # past TMDB's mapped seasons
        for scheme in SCHEMES:
            show = getattr(ids, scheme)
            if not (show and show.isdigit()):
                continue
            if item.kind == "episode":
                # An absolute number where season and number do not both name the episode:
                # a webhook's `item.absolute` (its item.number, if any, without a season), or
                # HAMA's tvdb3/tvdb4 modes (TheTVDB's season, One Piece's absolute number).
                unplaced = item.season is None or item.number is None
                if item.absolute is not None and unplaced and item.season != 0:
                    found = self.index.anilist_for(int(show), None, item.absolute, scheme)
                elif item.season is None or item.number is None:
                    continue
                else:
                    found = self.index.anilist_for(int(show), item.season, item.number, scheme)
                    if isinstance(found, Unmatched) and found.code != "ambiguous":
                        # One Piece's "S21E1071": the number is the absolute one
                        within = self.index.absolute_in_season(
                            int(show), item.season, item.number, scheme
                        )
                        found = within or found
            else:
                found = self.index.anilist_for(int(show), item.season or 1, 1, scheme)
            if (
                scheme == "tmdb"
                and isinstance(found, Unmatched)
                and found.code != "ambiguous"
                and _place(item) is not None
                and _absolute_show(self.index, item) is not None
            ):
                found = self._by_absolute(int(show), item)
            if first_said is not None:  # TVDB's numbering, told only
                if not isinstance(found, tuple):
                    return first_said
                return _in_tvdb_order(first_said, found, special=item.season == 0)
            if isinstance(found, tuple):
                return found
            if found.code in ANOTHER_NUMBERING or _tmdb_special(item, scheme, found):
                first_said = found
            elif found.code != "unknown":
                return found
            else:
                answer = answer or found
        if first_said is not None:
            return first_said
        why = answer or Unmatched(f"{item.describe()} has no TMDB or TVDB show id", "unknown")
        return self._by_anime_ids(item, why)

    def _by_anime_ids(self, item: MediaRef, why: Unmatched) -> tuple[int, int] | Unmatched:
        """The entry an AniList, AniDB or MAL id names, with the episode within it: an
        episode numbered in the entry's own (AniDB season 1 = regular episodes) numbering.
        A later season of an id-named show cannot be placed without the datasets."""
        media: int | Unmatched | None = None
        for ids in (own_anime_ids(item), item.show_ids):
            if ids.anilist and ids.anilist.isdigit():
                media = int(ids.anilist)
                break
            anidb = int(ids.anidb) if ids.anidb and ids.anidb.isdigit() else None
            mal = int(ids.mal) if ids.mal and ids.mal.isdigit() else None
            if anidb is not None or mal is not None:
                media = self.index.anilist_by_ids(anidb=anidb, mal=mal)
                if isinstance(media, int):
                    break
        if media is None:
            return why
        if isinstance(media, Unmatched):
            return media if media.code != "unknown" else why
        if item.kind in ("movie", "show"):
            return media, 1
        if item.kind == "season":
            if item.season in (None, 1):
                return media, 1
        elif item.season in (None, 1) and (number := item.number or item.absolute):
            return media, number
        elif item.season is None and item.absolute:
            return media, item.absolute
        return Unmatched(
            f"{item.describe()} names AniList {media} by its anime id, but season "
            f"{item.season} of it is not that entry's numbering; add an override",
            "unmapped",
        )

    def season_entries(self, item: MediaRef) -> tuple[int, ...]:
        """The entries mapped into a season item's TMDB season, in episode order."""
        tmdb = item.show_ids.tmdb
        if item.kind != "season" or item.season is None or not (tmdb and tmdb.isdigit()):
            return ()
        return tuple(media for media, _ in self.index.season_entries(int(tmdb), item.season))

    def adopt(self, entries: Iterable[ListEntry]) -> None:
        """Titles the datasets know by MAL id only, mapped for the list's entries."""
        for entry in entries:
            self.index.adopt(entry.media_id, entry.mal_id)


def no_season_list(item: MediaRef, show: int) -> str:
    """Why an episode numbered by season of an absolutely numbered show (One Piece) is not
    placed without a season list, and every way the user can have it placed."""
    season = f"season {item.season}" if item.season is not None else "its season"
    return (
        f"{item.describe()}: AniList numbers TMDB show {show} by absolute episode, and nothing"
        f" here counts the episodes of {season} before this one. Any of these places it:"
        " set services.trakt or services.serializd (their season lists count them; no link"
        " needed), have your media server number the show's episodes absolutely (a play"
        " such as S21E1071 carries the absolute number), or add an override for the title"
        " (services.anilist.mapping_overrides); it is tried again daily meanwhile"
    )


def _absolute_show(index: AnimeIndex, item: MediaRef) -> int | None:
    """The TMDB show of an episode or season when some entry maps that show by absolute
    number."""
    tmdb = item.show_ids.tmdb
    if item.kind not in ("episode", "season") or not (tmdb and tmdb.isdigit()):
        return None
    return int(tmdb) if index.has_absolute(int(tmdb)) else None


def _place(item: MediaRef) -> tuple[int, int] | None:
    """(season, episode) an episode names, or a season by its first episode."""
    if item.kind == "season" and item.season is not None:
        return item.season, 1
    if item.kind == "episode" and item.season is not None and item.number is not None:
        return item.season, item.number
    return None


def index_reverse(index: AnimeIndex, seasons: AbsoluteSeasons | None = None) -> IndexReverse:
    return IndexReverse(index, seasons)


def in_no_dataset(found: tuple[int, int] | Unmatched) -> TypeGuard[Unmatched]:
    """A reverse mapping's answer for an item whose show no dataset knows: not anime, or a
    fresh one the datasets have not caught up with."""
    return isinstance(found, Unmatched) and found.code == "unknown"


def renumbers(row: OutboxItem, item: MediaRef, reverse: Reverse) -> bool:
    """Whether to number this episode as TMDB does before mapping it: a webhook's (a link's
    side numbers as its service does), of a show some dataset knows (the others are skipped
    without a request anyway)."""
    if item.kind != "episode" or "link" in row.payload:
        return False
    return not in_no_dataset(reverse(item))


def better_numbered(renumbered: MediaRef, sent: MediaRef, reverse: Reverse) -> MediaRef:
    """The episode as TMDB numbers it, unless only the numbers as sent map: a show the
    datasets (or an override with `tmdb: skip`) map by TVDB only, in a TVDB-ordered library."""
    if renumbered is sent or not isinstance(reverse(renumbered), Unmatched):
        return renumbered
    return sent if not isinstance(reverse(sent), Unmatched) else renumbered


_MAPPABLE = ("trakt", "imdb", "tmdb", "tvdb", "anilist", "mal", "anidb")  # not a server's own


def imdb_will_do(item: MediaRef, waiting: Outcome | None) -> bool:
    """Whether a movie no TMDB id was found for (a Plex legacy agent's, known by its IMDb id)
    goes to the mapping by its IMDb id instead of waiting as unmatched: a hold (a sign-in,
    an outage) still waits, as the TMDB id may come after it."""
    return (
        isinstance(waiting, Retry)
        and item.kind == "movie"
        and bool(item.ids.imdb)
        and waiting.reason.startswith("unmatched:")
    )


def nothing_names(
    item: MediaRef, waiting: Outcome, row: OutboxItem, now: float, last_try: bool = False
) -> bool:
    """Whether a webhook play waiting for ids (`waiting`: a retry, not a hold) that its media
    server was asked about has none at all when tried again NOTHING_NAMED_AFTER or more after
    it was queued (a server identifying a new item is done by then), or at its `last_try`
    (small delivery limits): waiting longer would make a home video a dead letter."""
    named = (getattr(ids, n) for ids in (item.ids, item.show_ids) for n in _MAPPABLE)
    old_enough = row.attempts > 0 and now - row.created_at >= NOTHING_NAMED_AFTER
    return (
        isinstance(waiting, Retry)
        and (old_enough or last_try)
        and "link" not in row.payload
        and not any(named)
    )


def recheck_skipped(
    skipped: Mapping[str, Mapping[str, Any]], reverse: Reverse, now: float
) -> tuple[list[NewOutboxRow], list[str]]:
    """Skipped "not anime" rows (by idempotency key) the mapping places now, as rows to queue
    again, and the keys to forget: those, the expired and the unreadable."""
    again: list[NewOutboxRow] = []
    forget: list[str] = []
    for key, kept in skipped.items():
        try:
            payload = dict(kept["payload"])
            item = ref_from_dict(payload["item"])
            fresh = now - float(payload["skipped_at"]) < SKIPPED_KEEP
            row = NewOutboxRow(
                NAME,
                str(kept["profile"]),
                str(kept["action"]),
                payload,
                str(kept["ordering_key"]),
                f"{key}:mapped",
            )
        except (KeyError, TypeError, ValueError):
            forget.append(key)
            continue
        if not in_no_dataset(reverse(item)):
            again.append(row)  # mapped now, or anime the normal path can report
            forget.append(key)
        elif not fresh:
            forget.append(key)
    # In the order they were made: a changed rating ends as the last one given.
    again.sort(key=lambda row: (float(row.payload.get("at") or 0), row.idempotency_key))
    return again, forget


# Jellyfin's and Emby's genres that say anime: "Anime" (TheTVDB's), "Animation" (TMDB's, and
# Western cartoons too: `likely_anime` says which sign it went by).
def likely_anime(kept: Mapping[str, Any]) -> str | None:
    """Why a play skipped as not anime (a `SKIPPED` record) looks like anime all the same, in
    words (`anime.anime_signs`: its ids, its numbering, its genres; plays kept before genres
    were carry none), or None."""
    try:
        payload = kept["payload"]
        item = ref_from_dict(payload["item"])
    except (KeyError, TypeError, ValueError):
        return None
    genres = payload.get("genres")
    return anime_signs(item, genres if isinstance(genres, list) else ())


@dataclass(frozen=True)
class SkippedTitle:
    """A title of the skipped rows: its ids in words (`tmdb 209867`), its plays, and why it is
    likely anime (`likely_anime` of one of its plays), None when nothing says so."""

    title: str
    ids: str
    plays: int
    why: str | None = None


def skipped_titles(skipped: Mapping[str, Mapping[str, Any]]) -> list[SkippedTitle]:
    """The titles of the skipped rows, by title: those likely anime need an override naming
    those ids (`watchbridge anime unmatched`, the status)."""
    plays: dict[tuple[str, str], int] = {}
    why: dict[tuple[str, str], str] = {}
    for kept in skipped.values():
        try:
            item = ref_from_dict(kept["payload"]["item"])
        except (KeyError, TypeError, ValueError):
            continue
        ids = item.show_ids if item.kind == "episode" else item.ids
        title = (item.show_title if item.kind == "episode" else item.title) or "?"
        named = ", ".join(f"{name} {value}" for name, value in ids.present().items())
        plays[title, named] = plays.get((title, named), 0) + 1
        if (title, named) not in why and (reason := likely_anime(kept)) is not None:
            why[title, named] = reason
    return [
        SkippedTitle(title, named, n, why.get((title, named)))
        for (title, named), n in sorted(plays.items())
    ]


# --------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class Unread:
    """The list entries the batch's read of the list could not read whole: their problem by
    title (AniList media id), and whether one is known by its entry id only, of a title the
    mirror never saw (it may be any title not on the list as read)."""

    media: Mapping[int, str] = field(default_factory=dict)
    untitled: str | None = None

    def why(self, media_ids: Iterable[int], listed: bool) -> str | None:
        """What keeps a write to these titles' entries (a season's, for a rating) waiting, or
        None: the entry did not read, so what it holds now is unknown (a play would lower its
        progress, a rating go to the wrong one); one of a title not `listed` may be the
        untitled entry (a play would write over it, a rating would read as not on the list)."""
        for media_id in media_ids:
            if media_id in self.media:
                return (
                    f"the entry of AniList {media_id} on the anime list has {self.media[media_id]}"
                )
        if self.untitled is not None and not listed:
            return (
                f"an entry on the anime list, known by its id only, has {self.untitled} "
                "and may be this title's"
            )
        return None


class AniListTarget:
    name = NAME
    # A row costs one paced write (~2.3 s at the served 30/min); small batches keep a pass short.
    batch_size = 5

    def __init__(
        self,
        client: AniListClient,
        store: Store,
        config: DeliveryConfig,
        clock: Callable[[], float],
        reverse: Callable[[], Awaitable[Reverse]],
        seasons: SeasonSources | None = None,
        enricher: Enricher | None = None,
        renumber: Renumber | None = None,
        accounts: AccountNotes | None = None,
    ) -> None:
        self.accounts = accounts
        self.client = client
        self.store = store
        self.config = config
        self.clock = clock
        self.reverse = reverse
        self.seasons = seasons
        self.enricher = enricher  # finds the show ids webhooks leave out
        # A webhook's episode as TMDB numbers it (catalogue.tmdb_numbered), when a
        # TMDB-numbered catalogue can be read: the media server's may be TVDB's order.
        self.renumber = renumber
        self._rechecked_at: dict[str, float] = {}  # profile -> last look at its skipped rows
        self._unread: dict[str, Unread] = {}  # profile -> entries its last list read could not

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.seasons is not None:
            await self.seasons.aclose()
        if self.enricher is not None:
            await self.enricher.aclose()

    async def _placing(
        self, reverse: Reverse, rows: Sequence[tuple[OutboxItem, MediaRef]]
    ) -> dict[int, Reverse]:
        """Each row's reverse mapping, with the season lists its absolute plays need read
        (a link's row on its other side's lists, a webhook's on Trakt's, else Serializd's)."""
        if self.seasons is None or not isinstance(reverse, IndexReverse):
            return {}
        groups: dict[int, tuple[AbsoluteSeasons, list[MediaRef]]] = {}
        placing: dict[int, Reverse] = {}
        for row, item in rows:
            seasons = self.seasons.for_payload(row.payload)
            if seasons is None:
                continue
            groups.setdefault(id(seasons), (seasons, []))[1].append(item)
            placing[row.id] = reverse.with_seasons(seasons)
        for seasons, items in groups.values():
            wants = reverse.wants(items)
            if wants:
                await seasons.prepare(wants)
        return placing

    async def deliver(self, items: Sequence[OutboxItem], now: float) -> dict[int, Outcome]:
        return await per_profile(items, self._deliver_profile, self._hold_for, self.store)

    def _hold_for(self, exc: Exception, profile: str) -> Outcome:
        if isinstance(exc, MappingUnavailable):
            # The mapping's own cause, told by its own alert (`index_source`): AniList is fine,
            # so no outage of it is held or alerted.
            return Hold(str(exc), MAPPING_HOLD, target_wide=False)
        if isinstance(exc, AniListAuthError):
            return Hold(exc.message, AUTH_HOLD, "credentials", target_wide=False, sign_in=True)
        if isinstance(exc, Unavailable):  # rate limits, outages, "API disabled"
            wait = exc.retry_after or self.config.retry_after
            limited = isinstance(exc, RateLimited)
            return Hold(exc.message, wait, asked=exc.retry_after is not None, limited=limited)
        if isinstance(exc, ListUnreadable):
            return changed_hold(SERVICE_NAME, exc.what, CHANGED_WAITS)
        if isinstance(exc, AniListError):
            return Retry(exc.message)
        log.error("unexpected error delivering to AniList", exc_info=exc)
        return crashed("anilist", exc)

    async def _deliver_profile(
        self, profile: str, rows: Sequence[OutboxItem], outcomes: dict[int, Outcome]
    ) -> None:
        async def whose() -> str:
            return user_named(await self.client.user_id(profile))

        rows = await for_the_account(self.accounts, NAME, profile, whose, rows, outcomes)
        shared = await self.reverse()
        await self._recheck_skipped(profile, shared)
        entries: dict[int, ListEntry] | None = None
        targets: dict[int, tuple[MediaRef, tuple[int, int]]] = {}
        unknown: list[tuple[OutboxItem, MediaRef, Unmatched]] = []
        decoded_rows = []
        for row in rows:
            decoded = _decode(row)
            if isinstance(decoded, MediaRef) and row.action != "watching":
                source = row.payload.get("source")
                decoded, waiting = await enriched(
                    self.enricher,
                    decoded,
                    ANIME,
                    source,
                    credentials_hold=AUTH_HOLD,
                    unmatched_retry=IDS_RETRY,
                    why="AniList entries are found by the show's TMDB, TVDB, AniList or AniDB"
                    " id, a movie's by its TMDB or IMDb id",
                    from_server=row.payload.get("server"),
                )
                if imdb_will_do(decoded, waiting):
                    waiting = None  # the datasets know films by IMDb id too: ask them
                now = self.clock()
                if (
                    waiting is not None
                    and nothing_names(
                        decoded, waiting, row, now, at_last_try(row, self.config, now)
                    )
                    and self.enricher is not None
                    and self.enricher.asks(decoded, source)
                ):
                    # A home video, a YouTube archive: its server still knows no id for it
                    # hours later, so no dataset can map it. Not anime, like any such play.
                    await self._keep_skipped(profile, row, decoded)
                    waiting = Skipped(NOT_ANIME)
                if waiting is not None:
                    outcomes[row.id] = waiting
                    continue
                if self.renumber is not None and renumbers(row, decoded, shared):
                    first = file_first(decoded, row.payload)
                    renumbered = await self.renumber(decoded, first)
                    decoded = better_numbered(renumbered, decoded, shared)
            decoded_rows.append((row, decoded))
        placing = await self._placing(
            shared,
            [(r, d) for r, d in decoded_rows if isinstance(d, MediaRef) and r.action != "watching"],
        )
        for row, decoded in decoded_rows:
            reverse = placing.get(row.id, shared)
            if not isinstance(decoded, MediaRef):
                outcomes[row.id] = decoded
                continue
            if row.action == "watching":
                outcomes[row.id] = Skipped("AniList counts finished episodes only")
                continue
            if row.action in ("rating", "remove_rating") and decoded.kind == "show":
                # A show's rating cannot say which season's entry it is (it would overwrite
                # season 1's score): AniList scores are season ratings, as the links read them.
                outcomes[row.id] = await self._show_rated(profile, row, decoded, reverse)
                continue
            if row.action in ("rating", "remove_rating") and decoded.kind == "episode":
                outcomes[row.id] = Skipped("AniList has no episode ratings: skipped")
                continue
            if row.action == "rating" and decoded.kind == "season":
                # What the line about the show's own rating asked for (`show_ratings`).
                keys = season_keys(decoded.show_ids)
                await asyncio.to_thread(show_ratings.forget, self.store, profile, keys)
            target = reverse(decoded)
            if in_no_dataset(target) and entries is None:
                unknown.append((row, decoded, target))  # not anime, or known by MAL id only
            elif isinstance(target, Unmatched):
                outcomes[row.id] = await self._unmatched(profile, row, decoded, target)
            else:
                if entries is None:
                    entries = await self._entries(profile)
                    if isinstance(shared, IndexReverse):
                        shared.adopt(entries.values())
                targets[row.id] = (decoded, target)
        for row, decoded, why in unknown:
            target = placing.get(row.id, shared)(decoded) if entries is not None else why
            if isinstance(target, Unmatched):
                outcomes[row.id] = await self._unmatched(profile, row, decoded, target)
            else:
                targets[row.id] = (decoded, target)
        if entries is None:
            return
        # Episode counts of titles a play would add to the list: one request for the batch.
        new = {t[0] for r in rows if (t := targets.get(r.id, (None, None))[1]) is not None}
        titles = await self._titles(profile, new - set(entries))
        # In the order they were watched: a rewatch starts with its episode 1. Scores after
        # plays: a play adds the entry a score of the same title needs.
        for row in sorted(rows, key=_in_order):
            if row.id not in targets:
                continue
            decoded, (media_id, episode) = targets[row.id]
            candidates: tuple[int, ...] = ()
            if row.action in ("rating", "remove_rating") and decoded.kind == "season":
                candidates = (
                    shared.season_entries(decoded) if isinstance(shared, IndexReverse) else ()
                )
                media_id = season_owner(candidates, entries, media_id)
            if row.action == "play":
                current = entries.get(media_id)
                title = (
                    Title(current.episodes, current.release)
                    if current
                    else titles.get(media_id, Title())
                )
                total = title.episodes
                if decoded.kind == "movie" and total:
                    episode = total  # the movie is the whole entry
                beyond = past_the_end(media_id, episode, total)
                if beyond is None and decoded.kind != "movie":
                    beyond = not_aired(media_id, title.release)
                if beyond is not None:
                    outcomes[row.id] = await self._unmatched(profile, row, decoded, beyond)
                    continue
            seasonal = row.action in ("rating", "remove_rating") and decoded.kind == "season"
            touched = {media_id, *candidates} if seasonal else {media_id}
            unread = self._unread.get(profile, Unread()).why(touched, media_id in entries)
            if unread is not None:
                # No fault of the row (see changed_hold): it waits, the rest of the batch goes.
                outcomes[row.id] = changed_hold(SERVICE_NAME, unread, ENTRY_WAITS)
                continue
            try:
                outcomes[row.id] = await self._row(
                    profile, row, (media_id, episode), entries, whole=decoded.kind == "movie"
                )
            except (AniListValidationError, AniListNotFound) as exc:
                outcomes[row.id] = Dead(exc.message)
            except Unavailable as exc:
                # Where AniList answered this row's own write with an error, the row spends an
                # attempt and backs off, so one that always fails ends as a dead letter; the
                # rows after it are held without spending (per_profile) and get through.
                outcomes[row.id] = service_hold(exc, self.config.retry_after)
                raise

    async def _titles(self, profile: str, media_ids: set[int]) -> dict[int, Title]:
        if not media_ids:
            return {}
        return await self.client.titles(profile, media_ids)

    async def _unmatched(
        self, profile: str, row: OutboxItem, item: MediaRef, why: Unmatched
    ) -> Outcome:
        """A row the mapping cannot place. A link's row is never settled as done (see the
        module doc); a webhook's is done when a refresh cannot help, else tried again."""
        link = "link" in row.payload
        if why.code == "unknown" and not link:
            await self._keep_skipped(profile, row, item)
            return Skipped(NOT_ANIME)
        if why.code == PARTIAL:  # counted with the last part (its play, or a link's copy)
            return Skipped(why.reason)
        from watchbridge.anime_data import note_unmatched

        await asyncio.to_thread(
            note_unmatched,
            self.store,
            profile,
            item.key(),
            why,
            self.clock(),
            title=item.show_title or item.title,
        )
        message = f"unmatched: {why.reason} (see `watchbridge anime unmatched`)"
        if why.code == PENDING:
            return Retry(message, after=SEASONS_RETRY)
        if link or why.code in REFRESHABLE:
            return Retry(message, after=MAPPING_RETRY)
        return Delivered(message, written=False)

    async def _row(
        self,
        profile: str,
        row: OutboxItem,
        target: tuple[int, int],
        entries: dict[int, ListEntry],
        whole: bool = False,
    ) -> Outcome:
        media_id, episode = target
        current = entries.get(media_id)
        at = float(row.payload.get("at") or UNDATED)
        if row.action == "play":
            sent = await self._sent(row)
            if sent is not None and current is not None and shows(current, sent):
                # Saved before a crash, or its answer was lost: counting it again would make
                # a first viewing a rewatch (or count a rewatch twice). Only the save that
                # completes a new entry may be missing.
                finish = finish_write(current, at)
                saved = await self._finished(profile, row, current, finish, at, entries)
                if finish is None:
                    return Delivered(
                        f"already saved (AniList progress {current.progress})", written=False
                    )
                return Delivered(f"progress {saved.progress} ({saved.status.lower()})")
            link = "link" in row.payload
            rewatch, write = await self._play(profile, row, current, target, at, whole)
            if write is None and not link and await self._recheck(profile, entries):
                # "Already counted" by an entry the user may have deleted to start over.
                current = entries.get(media_id)
                rewatch, write = await self._play(profile, row, current, target, at, whole)
            first_try = link and row.attempts == 0
            if write is None and first_try and waits_for_start(current, episode, rewatch):
                return Retry("a rewatch on the other side: waiting for its episode 1", REWATCH_WAIT)
            if write is None:
                return Delivered(
                    f"already counted (AniList progress {current and current.progress})",
                    written=False,
                )
            await self._note_sent(row, write)
            try:
                saved = await self._save(
                    profile, write, current, entries, viewing=at, recreate=False
                )
            except EntryGone:  # deleted on AniList since: a first viewing of a new entry
                current = None
                _, write = await self._play(profile, row, current, target, at, whole)
                assert write is not None  # a play always adds to a missing entry
                await self._note_sent(row, write)
                saved = await self._save(profile, write, current, entries, viewing=at)
            finish = finish_write(saved, at) if current is None else None
            saved = await self._finished(profile, row, saved, finish, at, entries)
            await self._clear_unmatched(profile, row)
            return Delivered(f"progress {saved.progress} ({saved.status.lower()})")
        if row.action in ("rating", "remove_rating"):
            if current is None and row.action == "remove_rating":
                return Delivered("not on the AniList list: no score to remove", written=False)
            if current is None:
                return Retry(not_listed(media_id, _decode(row)), after=listed_wait(row))
            value = int(row.payload["rating"]) if row.action == "rating" else None
            viewer = await self.client.viewer(profile)
            write = rating_write(current, value, viewer.score_format)
            if write is None and (current.score or None) != value:
                # The format is cached for an hour and the user may have switched since: a
                # skip must hold in the format they have now (raw 80 and 70 are both 4 stars,
                # but not in POINT_100), or the rating is taken as delivered and never sent.
                viewer = await self.client.viewer(profile, refresh=True)
                write = rating_write(current, value, viewer.score_format)
            if write is None:
                return Delivered("AniList already shows this score", written=False)
            if row.waited(self.clock()) and await self._scored_since(profile, current, row, at):
                return Skipped(
                    "AniList holds a newer score, given there while this one waited (changed,"
                    " or first read by watchbridge, after this rating was given): it stands",
                    answered=True,
                )
            await self._save(profile, write, current, entries, viewing=None)
            return Delivered("score removed" if value is None else "scored")
        if row.action == "remove_play":
            if row.waited(self.clock()) and await asyncio.to_thread(self.store.played_after, row):
                return Skipped(PLAYED_SINCE)
            set_aside = await self._rewatch_set_aside(profile, current)
            write = removal_write(current, episode, set_aside)
            if write is None:
                return Delivered(
                    "AniList keeps only the highest episode: nothing to remove", written=False
                )
            saved = await self._save(
                profile, write, current, entries, viewing=UNDATED, allow_lower=True
            )
            if write.status == "CURRENT":
                await self._note_lowered(profile, saved)
            return Delivered(f"progress lowered to {episode - 1}")
        return Dead(f"unknown action {row.action!r} for AniList")

    async def _show_rated(
        self, profile: str, row: OutboxItem, show: MediaRef, reverse: Reverse
    ) -> Outcome:
        """A whole show's rating (or its clearing): never written; an anime show's is
        recorded for the user to be told what to rate instead (`show_ratings`)."""
        key = show_record_key(show.ids)
        genres = row.payload.get("genres")
        anime = anime_show(show, reverse, genres if isinstance(genres, list) else ())
        if key is None or not anime:
            return Skipped("AniList has no show ratings: skipped")
        if row.action == "remove_rating" or row.payload.get("rating") is None:
            await asyncio.to_thread(show_ratings.forget, self.store, profile, [key])
            return Skipped("AniList has no show ratings: nothing to clear")
        now = self.clock()
        before = await asyncio.to_thread(show_ratings.records_of, self.store, profile)
        where = str(row.payload.get("source") or "plex")
        record = show_ratings.noted(
            before.get(key), int(row.payload["rating"]), show.title, where, WEBHOOK, now
        )
        await asyncio.to_thread(show_ratings.note, self.store, profile, key, record, now)
        return Skipped(
            "AniList rates each season's entry, not a whole show: not written, and told on"
            " the status page and by `watchbridge status` (rate the season instead)"
        )

    async def _keep_skipped(self, profile: str, row: OutboxItem, item: MediaRef) -> None:
        now = self.clock()
        # The item as enriched (its show ids); a row queued again keeps its first skip's time.
        payload = row.payload | {"item": ref_to_dict(item)}
        payload.setdefault("skipped_at", now)
        kept = {
            "profile": profile,
            "action": row.action,
            "payload": payload,
            "ordering_key": row.ordering_key,
        }
        key = row.idempotency_key
        await asyncio.to_thread(self.store.mirror_put, NAME, profile, SKIPPED, {key: kept}, now)

    async def _recheck_skipped(self, profile: str, reverse: Reverse) -> None:
        """At most hourly: queue again the skipped rows whose items the mapping places now."""
        now = self.clock()
        if now - self._rechecked_at.get(profile, -RECHECK_EVERY) < RECHECK_EVERY:
            return
        self._rechecked_at[profile] = now
        skipped = await asyncio.to_thread(self.store.mirror_get, NAME, profile, SKIPPED)
        again, forget = recheck_skipped(skipped, reverse, now)
        if again:
            await asyncio.to_thread(self.store.enqueue, again, now)
            log.info("anime mapped after a dataset refresh", extra={"rows": len(again)})
        if forget:
            await asyncio.to_thread(self.store.mirror_remove, NAME, profile, SKIPPED, forget)

    async def _sent(self, row: OutboxItem) -> EntryWrite | None:
        """What an earlier try of this play row was about to save, if any."""
        # Keyed by the idempotency key: row ids come back after old rows are pruned.
        now = self.clock()
        _, noted = await asyncio.to_thread(self.store.cache_get, SENT, row.idempotency_key, now)
        if not isinstance(noted, dict):
            return None
        return EntryWrite(
            int(noted["media_id"]),
            status=noted["status"],
            progress=noted["progress"],
            repeat=noted["repeat"],
        )

    async def _finished(
        self,
        profile: str,
        row: OutboxItem,
        saved: ListEntry,
        finish: EntryWrite | None,
        at: float,
        entries: dict[int, ListEntry],
    ) -> ListEntry:
        """`saved` after `finish` (the save that completes a new entry, if any); a play that
        leaves the entry completed is noted as the one that finished it."""
        if finish is not None:
            await self._note_sent(row, finish)
            saved = await self._save(profile, finish, saved, entries, viewing=at)
        if saved.status == "COMPLETED":
            await self._note_finished(profile, saved.media_id, at)
        return saved

    async def _finished_by(self, profile: str, media_id: int) -> float | None:
        """When the play watched that last finished this entry (through us), if known."""
        noted = await self._noted(FINISHED, profile, media_id)
        return float(noted) if isinstance(noted, int | float) else None

    async def _noted(self, kind: str, profile: str, media_id: int) -> Any:
        """What this target noted of one of `profile`'s entries (`kind`: FINISHED, SCORED,
        STOPPED), None if nothing."""
        key = f"{profile}:{media_id}"
        _, noted = await asyncio.to_thread(self.store.cache_get, kind, key, self.clock())
        return noted

    async def _scored_since(
        self, profile: str, current: ListEntry, row: OutboxItem, at: float
    ) -> bool:
        """Whether the user changed the entry's score on AniList after this rating was given
        and queued (an outage, an expired sign-in held it): theirs is the newer one."""
        noted = await self._noted(SCORED, profile, current.media_id)
        if not isinstance(noted, int | float):
            return False
        return noted > ratings.overtaken_after(at, row.created_at) + ratings.RATED_SLACK

    def _note_read(
        self, profile: str, mirror: Mapping[int, ListEntry], fresh: Iterable[ListEntry]
    ) -> None:
        """Note what entries read now show changed since the mirror: when a score was seen
        changed (`scored_at`), and a rewatch set aside (or a first viewing again)."""
        now = self.clock()
        seen: list[tuple[LastRead | None, ListEntry]] = []
        scored: dict[str, float] = {}
        for entry in fresh:
            before = mirror.get(entry.media_id)
            at = scored_at(before, entry)
            if at is not None:
                scored[f"{profile}:{entry.media_id}"] = at
            same = before is not None and before.id == entry.id
            seen.append((before if same else None, entry))
        self.store.cache_put_many(SCORED, scored, now, KEEP_MARKS)
        note_set_aside(self.store, profile, seen, now)
        self._settle_sent(profile, fresh, now)

    def _settle_sent(self, profile: str, fresh: Iterable[ListEntry], now: float) -> None:
        """Note the saves of ours whose answers were lost that entries read now show landed
        (VIEWED_SENT), and forget every save on its way to an entry read since."""
        sent = dict(_marks(self.store, VIEWED_SENT, profile, now))
        read = [entry for entry in fresh if entry.media_id in sent]
        if not read:
            return
        notes = viewed_marks(self.store, profile, read, now)
        keys = {entry.media_id: f"{profile}:{entry.media_id}" for entry in read}
        kept = {keys[media]: viewed_to_json(notes[media]) for media in keys if media in notes}
        self.store.cache_put_many(VIEWED, kept, now, KEEP_MARKS)
        self.store.cache_put_many(VIEWED_SENT, dict.fromkeys(keys.values()), now, KEEP_MARKS)

    async def _note_lowered(self, profile: str, saved: ListEntry) -> None:
        """A removal of ours set a completed entry back to watching (see LOWERED)."""
        key = f"{profile}:{saved.media_id}"
        noted = {"id": saved.id, "at": saved.updated_at}
        await asyncio.to_thread(self.store.cache_put, LOWERED, key, noted, self.clock(), KEEP_MARKS)

    async def _note_finished(self, profile: str, media_id: int, at: float) -> None:
        key = f"{profile}:{media_id}"
        await asyncio.to_thread(self.store.cache_put, FINISHED, key, at, self.clock(), KEEP_MARKS)

    async def _play(
        self,
        profile: str,
        row: OutboxItem,
        current: ListEntry | None,
        target: tuple[int, int],
        at: float,
        whole: bool,
    ) -> tuple[bool, EntryWrite | None]:
        """Whether a play is a new viewing of `current`, and what it writes (None: counted)."""
        media_id, episode = target
        # A skipped row queued again (see recheck_skipped) comes late: the entry may have
        # counted this viewing meanwhile (a link), so it is dated like a link's play.
        if "link" in row.payload or "skipped_at" in row.payload:
            rewatch = current is not None and new_viewing(current, at)
        else:
            finished = await self._finished_by(profile, media_id)
            mark = not row.payload.get("live", False)
            rewatch = live_rewatch(current, at, self.clock(), finished, mark)
        changed_at = await self._stopped_by_user(profile, current)
        write = play_write(
            current,
            media_id,
            episode,
            at,
            rewatch=rewatch,
            whole=whole,
            changed_at=changed_at,
            set_aside=await self._rewatch_set_aside(profile, current),
        )
        return rewatch, write

    async def _rewatch_set_aside(self, profile: str, current: ListEntry | None) -> bool:
        """Whether a read saw `current` paused or dropped after it was finished or rewatching,
        or set to watching from rewatching, or from completed at a lower progress (see
        REWATCH_SET_ASIDE)."""
        if current is None or current.status not in (*STOPPED_STATUSES, "CURRENT"):
            return False
        noted = await self._noted(REWATCH_SET_ASIDE, profile, current.media_id)
        return bool(noted == current.id)

    async def _stopped_by_user(self, profile: str, current: ListEntry | None) -> float | None:
        """When the user paused or dropped `current`, if a play of ours raised its progress
        since (its `updatedAt` is then our save's): None when the entry is not so."""
        if current is None or current.status not in STOPPED_STATUSES:
            return None
        noted = await self._noted(STOPPED, profile, current.media_id)
        if not isinstance(noted, dict) or noted.get("saved") != current.updated_at:
            return None  # changed on AniList since (or never by us): its updatedAt tells
        at = noted.get("at")
        return float(at) if isinstance(at, int | float) else None

    async def _note_stopped(
        self, profile: str, current: ListEntry | None, saved: ListEntry
    ) -> None:
        """A save of ours (a play's progress, a score) left a paused or dropped entry so: note
        when the user stopped it, which our save's `updatedAt` no longer tells."""
        if (
            current is None
            or saved.status not in STOPPED_STATUSES
            or saved.status != current.status
        ):
            return
        at = await self._stopped_by_user(profile, current)
        noted = {"at": current.updated_at if at is None else at, "saved": saved.updated_at}
        key = f"{profile}:{saved.media_id}"
        await asyncio.to_thread(self.store.cache_put, STOPPED, key, noted, self.clock(), KEEP_MARKS)

    async def _note_viewed(
        self,
        profile: str,
        current: ListEntry | None,
        saved: ListEntry,
        viewing: float | None,
        lowered: bool,
    ) -> None:
        """Note what `saved` shows and when its viewing was watched (see VIEWED, `_save`), and
        that no save is on its way to it any more (VIEWED_SENT)."""
        key = f"{profile}:{saved.media_id}"
        notes = notes_from_json(await self._noted(VIEWED, profile, saved.media_id))
        kept = noted(bridged(notes, current), save_note(current, saved, viewing, lowered))
        now = self.clock()
        await asyncio.to_thread(
            self.store.cache_put, VIEWED, key, viewed_to_json(kept), now, KEEP_MARKS
        )
        await asyncio.to_thread(self.store.cache_put, VIEWED_SENT, key, None, now, KEEP_MARKS)

    async def _note_sending(
        self,
        profile: str,
        current: ListEntry | None,
        write: EntryWrite,
        viewing: float | None,
        allow_lower: bool,
    ) -> None:
        """Note the save of `write` about to go to `current`'s entry (see VIEWED_SENT)."""
        sent = guard_progress(write, current, allow_lower).changes(current)
        if sent is None:
            return  # nothing to send: `save_entry` answers `current`
        noted = sent_to_json(sent_save(current, sent, viewing, allow_lower))
        key = f"{profile}:{write.media_id}"
        now = self.clock()
        await asyncio.to_thread(self.store.cache_put, VIEWED_SENT, key, noted, now, KEEP_MARKS)

    async def _note_sent(self, row: OutboxItem, write: EntryWrite) -> None:
        noted = {
            "media_id": write.media_id,
            "status": write.status,
            "progress": write.progress,
            "repeat": write.repeat,
        }
        keep = max(SENT_KEEP, 2 * self.config.max_age)
        # Synced whatever storage.durability says: lost in a power cut after the save landed,
        # the next try would count the play again (a second rewatch).
        await asyncio.to_thread(
            self.store.cache_put,
            SENT,
            row.idempotency_key,
            noted,
            self.clock(),
            keep,
            synced="always",
        )

    async def _clear_unmatched(self, profile: str, row: OutboxItem) -> None:
        """A play that maps now is no longer unmatched (after a dataset refresh)."""
        if row.attempts == 0:
            return  # first try: it was never recorded
        from watchbridge.anime_data import clear_unmatched

        item = _decode(row)
        if isinstance(item, MediaRef):
            await asyncio.to_thread(clear_unmatched, self.store, profile, [item.key()])

    async def _save(
        self,
        profile: str,
        write: EntryWrite,
        current: ListEntry | None,
        entries: dict[int, ListEntry],
        *,
        viewing: float | None,
        allow_lower: bool = False,
        recreate: bool = True,
    ) -> ListEntry:
        """Save `write`; when the entry was deleted on AniList since we last saw it, create it
        again with the same write (`recreate`), or raise EntryGone for the caller to decide.
        `viewing`: when the play it saves was watched (UNDATED: unknown, or a removal); None:
        it saves no viewing (a score), so the entry's viewings keep their dates (VIEWED)."""
        added = False  # deleted on AniList since: added again
        await self._note_sending(profile, current, write, viewing, allow_lower)
        try:
            saved = await self.client.save_entry(
                profile, write, current=current, allow_lower=allow_lower
            )
        except AniListValidationError as exc:
            if current is None or "id" not in exc.fields:
                raise
            if not recreate:
                entries.pop(write.media_id, None)
                raise EntryGone from None
            await self._note_sending(profile, None, write, viewing, allow_lower)
            saved = await self.client.save_entry(profile, write, current=None)
            added = True
        assert saved is not None
        await self._note_stopped(profile, current, saved)
        before = None if added else current
        await self._note_viewed(profile, before, saved, viewing, allow_lower)
        entries[saved.media_id] = saved
        await asyncio.to_thread(
            self.store.mirror_put,
            NAME,
            profile,
            ENTRIES,
            {str(saved.media_id): entry_to_dict(saved)},
            self.clock(),
        )
        return saved

    async def _entries(
        self, profile: str, whole_within: float = ENTRIES_FULL_READ
    ) -> dict[int, ListEntry]:
        """The list as AniList has it now: the mirror refreshed with what changed since, or
        read whole when the last whole read is older than `whole_within`."""
        mirror, since, whole_at = await asyncio.to_thread(self._load_mirror, profile)
        replace_all = since is None or self.clock() - whole_at >= whole_within
        if replace_all:
            read = await self.client.read_list(profile)
        else:
            read = await self.client.read_changes(profile, since or 0.0)
        fresh = read.entries
        await asyncio.to_thread(self._note_read, profile, mirror, fresh)
        entries = {} if replace_all else dict(mirror)
        entries.update((e.media_id, e) for e in fresh)
        self._unread[profile] = unread = self._unread_of(read.unread, mirror)
        for media_id in unread.media:  # still on the list: kept as last seen, never as gone
            if media_id in mirror and media_id not in entries:
                entries[media_id] = mirror[media_id]
        newest = max([e.updated_at for e in fresh], default=since or 0.0)
        await asyncio.to_thread(self._save_mirror, profile, entries, fresh, replace_all, newest)
        return entries

    @staticmethod
    def _unread_of(unread: Iterable[UnreadEntry], mirror: Mapping[int, ListEntry]) -> Unread:
        """The entries a read could not read whole, by title: the one it gave, else the
        title the mirror last saw under that entry id."""
        titles = {entry.id: media_id for media_id, entry in mirror.items()}
        media: dict[int, str] = {}
        untitled: str | None = None
        for entry in unread:
            media_id = entry.media_id
            if media_id is None and entry.entry_id is not None:
                media_id = titles.get(entry.entry_id)
            if media_id is None:
                untitled = entry.problem
            else:
                media[media_id] = entry.problem
        return Unread(media, untitled)

    async def _recheck(self, profile: str, entries: dict[int, ListEntry]) -> bool:
        """Read the list whole again unless that happened lately; True when it did (`entries`
        updated in place)."""
        whole_at = await asyncio.to_thread(self.store.get_cursor, NAME, profile, FULL_CURSOR)
        if self.clock() - float(whole_at or 0.0) < ENTRIES_RECHECK:
            return False
        fresh = await self._entries(profile, whole_within=ENTRIES_RECHECK)
        entries.clear()
        entries.update(fresh)
        return True

    def _load_mirror(self, profile: str) -> tuple[dict[int, ListEntry], float | None, float]:
        raw = self.store.mirror_get(NAME, profile, ENTRIES)
        cursor = self.store.get_cursor(NAME, profile, CURSOR)
        whole_at = self.store.get_cursor(NAME, profile, FULL_CURSOR)
        entries = {}
        for key, value in raw.items():
            entry = entry_from_dict(value) if isinstance(value, dict) else None
            if entry is not None and key.isdigit():
                entries[int(key)] = entry
        return entries, float(cursor) if cursor else None, float(whole_at or 0.0)

    def _save_mirror(
        self,
        profile: str,
        entries: dict[int, ListEntry],
        fresh: list[ListEntry],
        replace_all: bool,
        newest: float,
    ) -> None:
        now = self.clock()
        if replace_all:
            values = {str(k): entry_to_dict(e) for k, e in entries.items()}
            self.store.mirror_replace(NAME, profile, ENTRIES, values, now)
            self.store.set_cursor(NAME, profile, FULL_CURSOR, str(now), now)
        elif fresh:
            values = {str(e.media_id): entry_to_dict(e) for e in fresh}
            self.store.mirror_put(NAME, profile, ENTRIES, values, now)
        self.store.set_cursor(NAME, profile, CURSOR, str(newest), now)


def _in_order(row: OutboxItem) -> tuple[bool, float]:
    """A batch's order: plays (and removals) as watched, then ratings as given."""
    rating = row.action in ("rating", "remove_rating")
    return rating, float(row.payload.get("at") or UNDATED)


def _decode(row: OutboxItem) -> MediaRef | Outcome:
    try:
        return ref_from_dict(row.payload["item"])
    except (KeyError, TypeError, ValueError) as exc:
        return unreadable_row(row, "AniList", exc)


class EntryGone(Exception):
    """The entry a write was made for was deleted on AniList since it was read."""


class MappingUnavailable(Exception):
    """No anime mapping dataset gives a mapping (none on disk yet, or none readable): nothing
    can be told apart from anime. Its text says which (`AnimeData.missing_reason`)."""


def index_source(
    config: Any,
    clock: Callable[[], float] = time.time,
    told: Callable[[], Awaitable[None]] | None = None,
) -> Callable[[], Awaitable[Reverse]]:
    """The reverse mapping from the datasets cache, refreshed when due (a failed download
    keeps the cache); raises MappingUnavailable while no dataset gives a mapping. `told`
    (the datasets' alert check) is awaited meanwhile, and once after one does: also
    at the first load that finds one, as an earlier process (before a restart) may have
    raised the alert."""
    from watchbridge import anime_data

    data = anime_data.from_config(config, clock=clock)
    missing: bool | None = None  # not known yet in this process

    async def load() -> Reverse:
        nonlocal missing
        try:
            index = await data.index()
        finally:
            await data.aclose()
        if len(index) == 0:
            missing = True
            if told is not None:
                await told()
            raise MappingUnavailable(data.missing_reason())
        if missing is not False and told is not None:
            await told()  # the alert resolves now, not at the hourly check
        missing = False
        return index_reverse(index)

    return load
