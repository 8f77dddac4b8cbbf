"""Trakt plays marked "watched on release date": Trakt dates a play added with `watched_at:
"released"` at its episode's air date + runtime (reference trakt-api.md §9), often years
before the viewing the other side of a link holds, so no matching by time pairs the two, not
even a first run's (`reconcile.FIRST_RUN_WINDOW`). Such a play is a mark without a date of its
own: the link reads it undated (`reconcile.UNDATED`), as it reads a Trakt play of unknown date,
and it stands for a play of the episode on the other side.

Only plays that need it are looked at (`release_candidates`): a dated Trakt play of an episode
left without a partner on the other side, where that side also holds a dated play of the
episode without one; per episode no more of them than the other side holds such plays. Of
those, the ones Trakt dates at their episode's release moment, to the minute, are marks
(`found_marks`); for an episode Trakt knows no runtime of, those it dates within the hours
after its air date (UNKNOWN_RUNTIME_SPAN: where Trakt dates a mark then is not documented).
Every other play keeps its date: one with nothing to pair with on the other side (a mark
alone, or a viewing watched live and logged at that very minute) is copied as any play is, and
one the other side holds at its time pairs with it before this is asked. So does a play Trakt
logged by a scrobble or a check-in (`viewings_logged`): a mark is a history add (action
`watch`), never those, so a viewing watched live as it aired (a simulcast, scrobbled minutes
after its air time, of an episode Trakt knows no runtime of yet) is not taken for one.
A play once taken for a mark stays one (its record is kept), so that every later run pairs it
the same way; unless a read tells it was a scrobble or a check-in after all.
Movies are left as they are: Trakt documents `released` for episodes only.

A mark added on Trakt after the link copied its viewing there (dated years back, it is read
by the next full read only, when the viewing is paired with its copy already) is asked about
too, where the other side holds plays of the episode but none left without a partner: found,
it is a second record of that viewing (`second_marks`), neither copied nor removed; the
viewing removed on the other side takes it along (`marks_read`, `reconcile._marks_going_along`).

A show whose season list cannot be had (Trakt failing on it, or answering it without the
episodes of a candidate's season, trakt/trakt-api#799) decides nothing: its candidates and the
other side's plays of their episodes are held (`Side.held`), neither copied nor taken for a
mark, and asked about again at the next run; the other shows sync. Held for LOOKUP_WAIT
(`waited_out`), they are no longer: synced as they are dated (a mark among them copied as a
viewing at its air date), and told on the link's status line (`lookups_told`).
A show's answer is kept for a while (`to_cache`): an episode asked about that it lacks (a
season aired since) has the show asked again, once (`missing_places`), the episodes the new
answer lacks too kept with it.
Pure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from watchbridge.reconcile import EXPECTED, UNDATED, Play, Side, match_plays
from watchbridge.services.trakt import ListedSeason
from watchbridge.sides import ref_for_key

# An episode's place in its show, as `release_moments` keys it ("s1e2").
Moments = Mapping[str, tuple[float, float]]  # place -> release moment: earliest, latest (UTC s)
# An episode Trakt lists with its air date and no runtime (null or 0): where Trakt dates a
# play marked `released` then is not documented (the air date alone, or with the show's
# runtime), so any minute from its air date to this much after is taken for it.
UNKNOWN_RUNTIME_SPAN = 3 * 3600.0
# In a show's cached release moments: the places asked about that its answer did not list
# (not aired yet, or no air date given), not asked about again while the answer is kept.
UNLISTED = "unlisted"
# A show whose lookup keeps failing holds its plays this long at most (a Trakt outage of
# hours passes: they pair once it ends); then they are synced as they are dated, rather than
# wait for good (a show whose season list Trakt never gives whole), and the link's status line
# says so until the record is forgotten.
LOOKUP_WAIT = 86400.0
# A show whose lookup last failed this long ago is no longer asked about (its candidates were
# paired, synced or removed since): forgotten, no longer told.
LOOKUP_FORGOTTEN_AFTER = 2 * 86400.0


def place(season: int, number: int) -> str:
    return f"s{season}e{number}"


def release_moments(seasons: Sequence[ListedSeason]) -> dict[str, tuple[float, float]]:
    """Each listed episode's release moment (`ListedEpisode.released`) by place, as the
    earliest and latest time it may be: that one time, or for an episode without a runtime
    (null or 0) its air date to UNKNOWN_RUNTIME_SPAN after; episodes Trakt gives no air date
    are left out (no play can be told a mark by them)."""
    moments: dict[str, tuple[float, float]] = {}
    for season in seasons:
        for episode in season.episodes:
            aired, released = episode.first_aired, episode.released()
            if aired is not None and not episode.runtime:
                moments[place(season.number, episode.number)] = (
                    aired,
                    aired + UNKNOWN_RUNTIME_SPAN,
                )
            elif released is not None:
                moments[place(season.number, episode.number)] = (released, released)
    return moments


def cached_moments(cached: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Release moments as cached: [earliest, latest] each, or one time (before the span)."""
    moments: dict[str, tuple[float, float]] = {}
    for key, value in cached.items():
        if key == UNLISTED:
            continue
        if isinstance(value, list | tuple) and len(value) == 2:
            moments[str(key)] = (float(value[0]), float(value[1]))
        elif isinstance(value, int | float):
            moments[str(key)] = (float(value), float(value))
    return moments


def unlisted_before(cached: Mapping[str, Any]) -> set[str]:
    """The places a show's cached answer was asked about and did not list (`UNLISTED`)."""
    places = cached.get(UNLISTED)
    return {str(p) for p in places} if isinstance(places, list) else set()


def missing_places(cached: Mapping[str, Any], places: Collection[str]) -> list[str]:
    """The `places` a show's cached release moments neither list nor were asked about before
    (`unlisted_before`): a season aired after the answer was kept, worth asking again."""
    listed, before = cached_moments(cached), unlisted_before(cached)
    return sorted(p for p in places if p not in listed and p not in before)


def to_cache(moments: Moments, places: Collection[str]) -> dict[str, Any]:
    """A show's release moments as kept, with the `places` asked about that they lack."""
    kept: dict[str, Any] = {key: list(value) for key, value in moments.items()}
    unlisted = sorted(set(places) - set(moments))
    return {**kept, UNLISTED: unlisted} if unlisted else kept


def places_asked(candidates: Mapping[str, object]) -> dict[str, set[str]]:
    """Show TMDB id -> the places of the candidates' episodes (`release_candidates`' keys)."""
    asked: defaultdict[str, set[str]] = defaultdict(set)
    for item in candidates:
        if (named := show_of(item)) is not None:
            asked[named[0]].add(named[1])
    return dict(asked)


def release_candidates(own: Side, other: Side) -> dict[str, tuple[list[Play], int]]:
    """Item -> (the dated plays of `own`, Trakt's, left without a partner on `other`, and how
    many dated plays of the item `other` holds without one), for the episodes where both are
    some: the plays that may be marks standing for a viewing the other side holds. Where
    `other` holds plays of the episode but none left without a partner, how many it holds:
    a mark added on Trakt after its viewing was copied there (dated years back, where a read
    of Trakt's recent history does not look, it is read by the next full read only)."""
    _, lonely_own, lonely_other = match_plays(own.plays, other.plays)
    waiting = Counter(p.item for p in lonely_other if p.at != UNDATED)
    holding = Counter(p.item for p in other.plays)
    found: defaultdict[str, list[Play]] = defaultdict(list)
    for play in lonely_own:
        if (
            play.at != UNDATED
            and holding[play.item]
            and play.item.startswith("episode:")
            and not play.record.startswith(EXPECTED)
        ):
            found[play.item].append(play)
    return {item: (plays, waiting[item] or holding[item]) for item, plays in found.items()}


def second_marks(own: Side, other: Side, marks: Collection[str]) -> frozenset[str]:
    """The records of `own`'s marks (`marks`, read undated) left without a partner on `other`
    although it holds plays of their episode: each of those is paired with another play of
    `own` already (a mark added after the viewing was copied to Trakt), so the mark is a
    second record of it, neither copied nor removed (`Side.second_marks`); per episode no
    more of them than `other` holds plays."""
    _, lonely_own, _ = match_plays(own.plays, other.plays)
    room = Counter(p.item for p in other.plays)
    found: set[str] = set()
    for play in sorted(lonely_own, key=lambda p: p.record):
        if play.at == UNDATED and play.record in marks and room[play.item]:
            room[play.item] -= 1
            found.add(play.record)
    return frozenset(found)


def marks_read(side: Side, marks: Collection[str]) -> frozenset[str]:
    """The records of `side`'s plays taken for marks (`marks`) and read undated
    (`as_marks`): `Side.marks`, by which a viewing removed on the other side takes its second
    mark along."""
    return frozenset(p.record for p in side.plays if p.at == UNDATED and p.record in marks)


def unread_seasons(seasons: Sequence[ListedSeason], wanted: Collection[int]) -> list[int]:
    """The `wanted` seasons (of candidates) Trakt's season list cannot tell release moments
    of: listed without episodes (trakt/trakt-api#799), or every season when the answer lists
    none at all (a show whose history holds plays has some)."""
    if not seasons:
        return sorted(wanted)
    empty = {season.number for season in seasons if not season.episodes}
    return sorted(empty & set(wanted))


def complete(seasons: Sequence[ListedSeason]) -> bool:
    """Whether a season list may be kept for later runs: some season listed, and none that
    counts episodes listed without them (#799: asked again, the next answer may list them)."""
    return bool(seasons) and not any(
        not season.episodes and (season.episode_count or 0) > 0 for season in seasons
    )


def seasons_asked(candidates: Mapping[str, object]) -> dict[str, set[int]]:
    """Show TMDB id -> the seasons of the candidates' episodes (`release_candidates`' keys)."""
    asked: defaultdict[str, set[int]] = defaultdict(set)
    for item in candidates:
        ref = ref_for_key(item)
        if show_of(item) is not None and ref is not None and ref.season is not None:
            asked[ref.show_ids.tmdb or ""].add(ref.season)
    return dict(asked)


def held_items(
    candidates: Mapping[str, tuple[Sequence[Play], int]], failing: Collection[str]
) -> frozenset[str]:
    """The candidates' items of the shows (TMDB ids) whose release moments could not be had:
    their plays wait, on both sides."""
    return frozenset(
        item for item in candidates if (named := show_of(item)) and named[0] in failing
    )


def waited_out(record: Mapping[str, Any], failing: Collection[str], now: float) -> frozenset[str]:
    """The `failing` shows whose lookup has failed for LOOKUP_WAIT or longer by the record
    (`failed_lookups`): their plays no longer wait."""
    return frozenset(show for show in failing if now - _since(record.get(show), now) >= LOOKUP_WAIT)


def holding(entry: Any) -> bool:
    """Whether a show's record (`failed_lookups`) holds plays still: its last failure was
    within LOOKUP_WAIT of its first (after that, its plays were synced as they are dated)."""
    if not isinstance(entry, dict):
        return False
    last = float(entry.get("last", 0))
    return last - _since(entry, last) < LOOKUP_WAIT


def _since(entry: Any, now: float) -> float:
    """Since when a show's lookup fails by its record, as of `now`: now for a failure anew,
    where the record says its failing had stopped (LOOKUP_FORGOTTEN_AFTER, the machine off
    since) or dates it after now (the clock was set ahead then): its plays wait a day from
    now, never for as long as the clock was off."""
    if not isinstance(entry, dict) or "since" not in entry:
        return now
    if now - float(entry.get("last", now)) > LOOKUP_FORGOTTEN_AFTER:
        return now
    return min(float(entry["since"]), now)


def failed_lookups(
    before: Mapping[str, Any],
    failing: Mapping[str, tuple[str, Sequence[str]]],
    answered: Collection[str],
    now: float,
) -> tuple[dict[str, Any], list[str]]:
    """The record of failing lookups (show TMDB id -> {"since", "last", "reason", "held"})
    after a run: the shows `failing` now (show -> (reason, the places held)), since when the
    record says they failed; less the shows `answered` now and those not failing for
    LOOKUP_FORGOTTEN_AFTER. Returns the entries to write and the shows to forget."""
    put: dict[str, Any] = {}
    for show, (reason, places) in failing.items():
        since = _since(before.get(show), now)
        put[show] = {"since": since, "last": now, "reason": reason, "held": sorted(places)}
    gone = [
        show
        for show, entry in before.items()
        if show not in put
        and (
            show in answered
            or not isinstance(entry, dict)
            or now - float(entry.get("last", 0)) > LOOKUP_FORGOTTEN_AFTER
        )
    ]
    return put, gone


def lookups_told(record: Mapping[str, Any], now: float) -> list[str]:
    """What the link's status line says of the shows (`failed_lookups`' record) whose plays
    were synced as they are dated after their lookup failed for LOOKUP_WAIT (`waited_out`),
    while the record is kept. One still waiting is not told: the log says it at each run."""
    told = []
    for show, entry in sorted(record.items()):
        if not isinstance(entry, dict) or holding(entry):
            continue
        if now - float(entry.get("last", 0)) > LOOKUP_FORGOTTEN_AFTER:
            continue
        told.append(synced_as_dated(show, entry))
    return told


def synced_as_dated(show: str, entry: Mapping[str, Any]) -> str:
    """What is said (log and status line) of a show's plays synced as they are dated after
    its lookup failed for LOOKUP_WAIT (`failed_lookups`' entry)."""
    places = [str(p).upper() for p in entry.get("held") or []]
    shown = ", ".join(places[:5]) + (f" and {len(places) - 5} more" if len(places) > 5 else "")
    last = float(entry.get("last", 0))
    days = int((last - _since(entry, last)) // 86400)
    waited = "a day" if days <= 1 else f"{days} days"
    return (
        f"the plays of {shown or 'its episodes'} of the show with TMDB id {show} were synced "
        f"as they are dated after Trakt's episode dates of the show could not be read for "
        f"{waited} ({entry.get('reason', 'unknown')}): if the play on Trakt was marked "
        "'watched on release date', it was copied to the other side as a viewing at the "
        "episode's air date (and the viewing it stood for to Trakt): remove the mark on "
        "trakt.tv, and the link removes its copy"
    )


def show_of(item: str) -> tuple[str, str] | None:
    """(the show's TMDB id, the episode's place) of an episode's item key; None when the key
    names no episode by a TMDB show id (Trakt's items all do, `sides.trakt_side`)."""
    ref = ref_for_key(item)
    if ref is None or ref.kind != "episode" or not ref.show_ids.tmdb:
        return None
    if ref.season is None or ref.number is None:
        return None
    return ref.show_ids.tmdb, place(ref.season, ref.number)


# Trakt's history actions of a play logged as it was watched (trakt-api.md §9); a history add,
# such as a mark, is `watch`.
WATCHED_LIVE = ("scrobble", "checkin")


def viewings_logged(history: Iterable[Any]) -> dict[str, str]:
    """History id -> `watched_at` of the episodes' entries Trakt logged by a scrobble or a
    check-in (WATCHED_LIVE): viewings of their own, never a mark (a movie's is none). Pure."""
    return {
        str(entry["id"]): str(entry.get("watched_at"))
        for entry in history
        if isinstance(entry, dict)
        and entry.get("action") in WATCHED_LIVE
        and entry.get("type") == "episode"
        and entry.get("id")
    }


def found_marks(
    candidates: Mapping[str, tuple[Sequence[Play], int]],
    moments: Mapping[str, Moments],
    viewings: Collection[str] = (),
) -> dict[str, float]:
    """Record -> time of the candidates (`release_candidates`) dated at their episode's
    release moment to the minute (`moments`: show TMDB id -> `release_moments`; within its
    span, for an episode without a runtime), earliest first and per item no more than the
    other side's plays left to pair with; none of the records of `viewings`
    (`viewings_logged`)."""
    marks: dict[str, float] = {}
    for item, (plays, room) in candidates.items():
        named = show_of(item)
        if named is None:
            continue
        released = moments.get(named[0], {}).get(named[1])
        if released is None:
            continue
        first, last = int(released[0] // 60), int(released[1] // 60)
        at_release = [
            p for p in plays if first <= int(p.at // 60) <= last and p.record not in viewings
        ]
        for play in sorted(at_release, key=lambda p: (p.at, p.record))[:room]:
            marks[play.record] = play.at
    return marks


def as_marks(side: Side, marks: Mapping[str, float]) -> Side:
    """`side` with the plays `marks` names (record -> time, the same minute) read undated."""
    if not marks:
        return side

    def marked(play: Play) -> bool:
        at = marks.get(play.record)
        return play.at != UNDATED and at is not None and int(at // 60) == int(play.at // 60)

    if not any(marked(p) for p in side.plays):
        return side
    plays = tuple(Play(p.item, UNDATED, p.record) if marked(p) else p for p in side.plays)
    return replace(side, plays=plays)
