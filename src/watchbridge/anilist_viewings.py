"""When the episodes our own saves put on an AniList entry were watched.

AniList dates an entry by its last change only (reference anilist.md §7), and every save of
ours is one. So with each save the AniList target notes the entry's `updatedAt` and progress
before and after it, and when the viewing it saved was watched (the play's own date; none
known: the save's own time). Several saves in a row chain up: each one's "before" is the
previous one's "after". A link reading the entry walks that chain back from what it reads
(`episode_dates`), so each episode keeps the date of the save that raised the progress past
it: a step of several episodes read at once, or the new last episode after a removal of ours
lowered the progress, is not dated by the last save. Where the chain ends (a change the user
made on AniList), the episodes below it are dated by that change. A save whose answer never
came (a timeout, a crash) is noted once an entry read shows it landed (`SentSave`, `settled`).
Pure: the target keeps the notes in the store, `deliver.anilist.VIEWED` and `VIEWED_SENT`.

The release before the chains kept one note per entry, `{"saved", "at"}`, and reads nothing
else: the chain is kept beside that note (`viewed_to_json`), so that release, run again after a
rollback, still dates the viewing the entry shows as watched (without it, it dated our save's
viewing by the save, and a household's other links copied it again as a second viewing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from watchbridge.reconcile import UNDATED
from watchbridge.services.anilist import EntryWrite, ListEntry

RAISE = "raise"  # watched the episodes past the progress before
PASS = "pass"  # began a viewing of its own (a rewatch, a new entry): its episodes from 1
OTHER = "other"  # watched nothing: a score, a removal lowering the progress
KINDS = (RAISE, PASS, OTHER)
# Enough for every save between two reads of a link; past it, the oldest episodes of a long
# run of saves are undated (`SaveNote.cut`). About 125 bytes a note as stored.
MAX_NOTES = 100


@dataclass(frozen=True)
class SaveNote:
    """One save of ours: the entry's `updatedAt` and progress after it (`saved`, `progress`)
    and before it (`before` None: the save added the entry), what it watched (`kind`), and
    when (`at`; None: no date known). `progress` None: a note of an older release, which
    kept the date of the viewing the entry showed only. `cut`: the notes before it were
    dropped (MAX_NOTES), so its `before` is a save of ours, which dates no episode."""

    saved: float
    progress: int | None
    kind: str
    at: float | None = None
    before: float | None = None
    progress_before: int = 0
    cut: bool = False

    @property
    def when(self) -> float:
        """When its viewing was watched: its date, else the time we wrote it."""
        return self.at if self.at is not None and self.at > UNDATED else self.saved


@dataclass(frozen=True)
class Viewings:
    """When the episodes of the pass an entry's progress counts were watched, as far as the
    notes tell: `dates` by episode, and `below`, the date of the episodes up to `floor` (the
    change the chain of our saves started from)."""

    dates: Mapping[int, float] = field(default_factory=dict)
    floor: int = 0
    below: float = UNDATED

    def date(self, episode: int, otherwise: float) -> float:
        if episode in self.dates:
            return self.dates[episode]
        return self.below if episode <= self.floor else otherwise


def save_note(
    before: ListEntry | None, saved: ListEntry, viewing: float | None, lowered: bool
) -> SaveNote:
    """The note of one save (`before`: the entry as it was, None when the save added it;
    `viewing`: when the play it saved was watched, None for a save of no play; `lowered`: a
    removal)."""
    at = viewing if viewing is not None and viewing > UNDATED else None
    if before is None:
        return SaveNote(saved.updated_at, saved.progress, PASS, at)
    kind = OTHER
    if viewing is not None and not lowered:
        counted = saved.repeat > before.repeat and saved.progress <= before.progress
        if saved.progress < before.progress or counted:
            kind = PASS  # a rewatch begun (or a one-episode one counted)
        elif saved.progress > before.progress:
            kind = RAISE
    return SaveNote(saved.updated_at, saved.progress, kind, at, before.updated_at, before.progress)


def noted(notes: Sequence[SaveNote], note: SaveNote) -> list[SaveNote]:
    """`notes` with `note` after them: only those it chains on to (a change made on AniList
    in between, or a viewing of its own, ends what a walk back can reach)."""
    last = notes[-1] if notes else None
    chained = last is not None and last.saved == note.before
    chained = chained and last is not None and last.progress in (None, note.progress_before)
    kept = list(notes) if chained and note.kind != PASS else []
    chain = [*kept, note]
    if len(chain) <= MAX_NOTES:
        return chain
    oldest, *rest = chain[-MAX_NOTES:]
    return [replace(oldest, cut=True), *rest]


def bridged(notes: Sequence[SaveNote], before: ListEntry | None) -> list[SaveNote]:
    """`notes` with the user's own change between our last save and the next one (`before`:
    the entry as that one found it) where it only ticked more episodes of the same viewing:
    noted as watched when they made it, so the chain goes on to the episodes we wrote before
    it (else the whole chain ended there and they took the user's date). Any other change of
    theirs (a rewatch, a lower progress) still ends the chain (`noted`)."""
    last = notes[-1] if notes else None
    if last is None or last.progress is None or before is None or before.status != "CURRENT":
        return list(notes)
    if before.updated_at < last.saved or before.progress <= last.progress:
        return list(notes)  # ours (`noted` chains it on), or not a tick of later episodes
    users = SaveNote(
        before.updated_at, before.progress, RAISE, before.updated_at, last.saved, last.progress
    )
    return noted(notes, users)


def episode_dates(entry: ListEntry, notes: Sequence[SaveNote]) -> Viewings | None:
    """When the episodes `entry` shows (as read now) were watched, walking our saves back
    from it (see the module doc); None when its last change is not a save of ours."""
    return _walk(entry.updated_at, entry.progress, notes)


def _walk(at: float, progress: int, notes: Sequence[SaveNote]) -> Viewings | None:
    """`episode_dates` of an entry last changed at `at` that shows `progress`."""
    dates: dict[int, float] = {}
    ceiling = progress
    matched = False
    for note in reversed(notes):
        if note.saved != at or note.progress not in (None, progress):
            break
        matched = True
        if note.progress is None:  # an older release's note: one date for the viewing
            return Viewings(dates, ceiling, note.when)
        if note.kind != OTHER:
            start = 0 if note.kind == PASS else note.progress_before
            for episode in range(start + 1, min(note.progress, ceiling) + 1):
                dates.setdefault(episode, note.when)
        ceiling = min(ceiling, note.progress)
        if note.kind == PASS or note.before is None:
            return Viewings(dates)
        if note.cut:  # below it, saves of ours no note is kept of: when, nothing tells
            return Viewings(dates, min(note.progress_before, ceiling), UNDATED)
        at, progress = note.before, note.progress_before
    if not matched:
        return None
    return Viewings(dates, min(progress, ceiling), at)


@dataclass(frozen=True)
class SentSave:
    """A save of ours sent to AniList whose answer has not come (yet): its note, but for the
    entry's `updatedAt` after it, and what it set (None: a field it did not send)."""

    note: SaveNote
    status: str | None = None
    progress: int | None = None
    repeat: int | None = None
    score: int | None = None

    def shown_by(self, entry: ListEntry) -> bool:
        """Whether `entry` holds every value this save set."""
        pairs = (
            (self.status, entry.status),
            (self.progress, entry.progress),
            (self.repeat, entry.repeat),
            (self.score, entry.score),
        )
        return all(wanted is None or wanted == held for wanted, held in pairs)


def sent_save(
    before: ListEntry | None, sent: EntryWrite, viewing: float | None, lowered: bool
) -> SentSave:
    """A save about to send `sent` (only what differs from `before`; see `save_note`)."""
    start = before or ListEntry(0, sent.media_id, sent.status or "CURRENT")
    after = replace(
        start,
        status=sent.status or start.status,
        progress=start.progress if sent.progress is None else sent.progress,
        repeat=start.repeat if sent.repeat is None else sent.repeat,
    )
    note = save_note(before, after, viewing, lowered)
    return SentSave(note, sent.status, sent.progress, sent.repeat, sent.score_raw)


def settled(notes: Sequence[SaveNote], sent: SentSave | None, entry: ListEntry) -> list[SaveNote]:
    """`notes` with the save `sent` noted where `entry`, as read, shows it landed: its answer
    was lost, but its `updatedAt` is ours all the same and dates no viewing."""
    if sent is None or not sent.shown_by(entry) or entry.updated_at == sent.note.before:
        return list(notes)
    if notes and notes[-1].saved == entry.updated_at:
        return list(notes)  # its answer came after all: noted
    return noted(notes, replace(sent.note, saved=entry.updated_at))


def sent_to_json(sent: SentSave) -> dict[str, Any]:
    fields = ("status", "progress", "repeat", "score")
    return {"note": notes_to_json([sent.note])[0], **{f: getattr(sent, f) for f in fields}}


def sent_from_json(raw: Any) -> SentSave | None:
    """A save as `sent_to_json` keeps it; anything unreadable as none."""
    if not isinstance(raw, dict):
        return None
    notes = notes_from_json([raw.get("note")])
    status, score = raw.get("status"), raw.get("score")
    progress, repeat = raw.get("progress"), raw.get("repeat")
    counts = all(v is None or _number(v) for v in (progress, repeat, score))
    if len(notes) != 1 or not counts or not (status is None or isinstance(status, str)):
        return None
    return SentSave(notes[0], status, progress, repeat, score)


def notes_to_json(notes: Sequence[SaveNote]) -> list[dict[str, Any]]:
    return [
        {
            "saved": n.saved,
            "progress": n.progress,
            "kind": n.kind,
            "at": n.at,
            "before": n.before,
            "from": n.progress_before,
            **({"cut": True} if n.cut else {}),  # on one note of a hundred: kept out otherwise
        }
        for n in notes
    ]


def viewed_to_json(notes: Sequence[SaveNote]) -> dict[str, Any]:
    """The notes as VIEWED keeps them: the chain, and beside it the one note the release
    before the chains reads (see the module doc): the entry's `updatedAt` after our last save
    and when the viewing it shows (its last episode) was watched, left out when not known
    (that release then dates it by `updatedAt`, as it did itself)."""
    kept: dict[str, Any] = {"notes": notes_to_json(notes)}
    if not notes:
        return kept
    last = notes[-1]
    if last.progress is None:  # that release's own note, carried over: as it was
        return kept | {"saved": last.saved, "at": last.when}
    viewings = _walk(last.saved, last.progress, notes)
    at = UNDATED if viewings is None else viewings.date(last.progress, UNDATED)
    if at <= UNDATED:
        return kept
    return kept | {"saved": last.saved, "at": at}


def notes_from_json(raw: Any) -> list[SaveNote]:
    """The notes as stored (`viewed_to_json`, or a bare chain); an older release's one note
    (`{"saved", "at"}`, no chain) as a note that dates the whole viewing; anything unreadable
    as none."""
    if isinstance(raw, dict) and "notes" in raw:
        raw = raw["notes"]
    if isinstance(raw, dict):
        saved, at = raw.get("saved"), raw.get("at")
        if isinstance(saved, int | float) and isinstance(at, int | float):
            return [SaveNote(float(saved), None, PASS, float(at))]
        return []
    notes: list[SaveNote] = []
    for item in raw if isinstance(raw, list) else ():
        try:
            saved, before, at = item["saved"], item.get("before"), item.get("at")
            progress, start, kind = item["progress"], item.get("from", 0), item["kind"]
            readable = progress is None or isinstance(progress, int)
            if not _number(saved) or kind not in KINDS or not readable:
                return []
            notes.append(
                SaveNote(
                    float(saved),
                    progress,
                    kind,
                    float(at) if _number(at) else None,
                    float(before) if _number(before) else None,
                    int(start),
                    item.get("cut") is True,
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return []
    return notes


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
