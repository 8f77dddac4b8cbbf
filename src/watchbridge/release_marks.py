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
(`found_marks`). Every other play keeps its date: one with nothing to pair with on the other
side (a mark alone, or a viewing watched live and logged at that very minute) is copied as any
play is, and one the other side holds at its time pairs with it before this is asked. A play
once taken for a mark stays one (its record is kept), so that every later run pairs it the
same way. Movies are left as they are: Trakt documents `released` for episodes only. Pure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from watchbridge.reconcile import EXPECTED, UNDATED, Play, Side, match_plays
from watchbridge.services.trakt import ListedSeason
from watchbridge.sides import ref_for_key

# An episode's place in its show, as `release_moments` keys it ("s1e2").
Moments = Mapping[str, float]  # place -> release moment (UTC seconds)


def place(season: int, number: int) -> str:
    return f"s{season}e{number}"


def release_moments(seasons: Sequence[ListedSeason]) -> dict[str, float]:
    """Each listed episode's release moment (`ListedEpisode.released`), by place; episodes
    Trakt gives no air date or runtime are left out (no play can be told a mark by them)."""
    return {
        place(season.number, episode.number): released
        for season in seasons
        for episode in season.episodes
        if (released := episode.released()) is not None
    }


def release_candidates(own: Side, other: Side) -> dict[str, tuple[list[Play], int]]:
    """Item -> (the dated plays of `own`, Trakt's, left without a partner on `other`, and how
    many dated plays of the item `other` holds without one), for the episodes where both are
    some: the plays that may be marks standing for a viewing the other side holds."""
    _, lonely_own, lonely_other = match_plays(own.plays, other.plays)
    waiting = Counter(p.item for p in lonely_other if p.at != UNDATED)
    found: defaultdict[str, list[Play]] = defaultdict(list)
    for play in lonely_own:
        if (
            play.at != UNDATED
            and waiting[play.item]
            and play.item.startswith("episode:")
            and not play.record.startswith(EXPECTED)
        ):
            found[play.item].append(play)
    return {item: (plays, waiting[item]) for item, plays in found.items()}


def show_of(item: str) -> tuple[str, str] | None:
    """(the show's TMDB id, the episode's place) of an episode's item key; None when the key
    names no episode by a TMDB show id (Trakt's items all do, `sides.trakt_side`)."""
    ref = ref_for_key(item)
    if ref is None or ref.kind != "episode" or not ref.show_ids.tmdb:
        return None
    if ref.season is None or ref.number is None:
        return None
    return ref.show_ids.tmdb, place(ref.season, ref.number)


def found_marks(
    candidates: Mapping[str, tuple[Sequence[Play], int]], moments: Mapping[str, Moments]
) -> dict[str, float]:
    """Record -> time of the candidates (`release_candidates`) dated at their episode's
    release moment to the minute (`moments`: show TMDB id -> `release_moments`), earliest
    first and per item no more than the other side's plays left to pair with."""
    marks: dict[str, float] = {}
    for item, (plays, room) in candidates.items():
        named = show_of(item)
        if named is None:
            continue
        released = moments.get(named[0], {}).get(named[1])
        if released is None:
            continue
        at_release = [p for p in plays if int(p.at // 60) == int(released // 60)]
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
