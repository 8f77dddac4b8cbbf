"""Plex episodes matched by the HAMA anime agent, placed where an AniList link reads them. Pure.

HAMA names a show by its AniDB id (`anidb-`, or a bare number) or its TheTVDB id (`tvdb-` ..
`tvdb5-`), never by TMDB, and numbers episodes the way its mode does (reference plex.md, "HAMA
numbers depend on the mode"): `anidb-` in AniDB's own numbering (season 1 the regular
episodes, 0 the specials), `tvdb-` and `tvdb2-` by TheTVDB's seasons, `tvdb3-` and `tvdb4-`
by absolute number within any season. The reference names `tvdb5-` (and `anidb2-` ..
`anidb4-`) but not their numbering: those are not placed. An
AniList link keys its plays by TMDB episode, through the anime mapping, so an episode of such
a show is placed the same way: to the AniList entry and episode its ids and numbers name (the
resolver deliveries use), then on to the TMDB episode AniList's plays of it are keyed by.

An episode with no such place (a special no dataset maps, an AniDB id the datasets do not
know yet, one AniList episode that is several TMDB episodes, a mode whose numbering
watchbridge does not know) is never keyed by a guess: it is not linked, and its plays are
listed by `watchbridge anime unmatched` with the reason.

Whether an episode's numbers can be placed at all is decided here for both paths: the link's
read of the library (`hama_episodes`) and a Plex webhook's episode (`ingest.plex`) note it in
the episode's `MediaRef.unplaced` (`numbering_unknown`), and the reverse mapping answers such
an episode with why (`unplaced`), for the link and the AniList delivery target alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watchbridge.anime import HAMA_MIXED, HAMA_MODE, PARTIAL, Unmatched
from watchbridge.model import Ids, MediaRef

if TYPE_CHECKING:  # services.plex parses guids with ingest.plex, which asks this module
    from watchbridge.services.plex import LibraryItem

# The modes whose numbers are known: AniDB's own, TheTVDB's seasons, or absolute.
PLACED_MODES = frozenset({"anidb", "tvdb", "tvdb2", "tvdb3", "tvdb4"})

# What the user can do about an episode `unplaced` answers, by its code.
FIXES = {
    HAMA_MODE: (
        "match the show in HAMA's `anidb-` mode or one of its `tvdb-` to `tvdb4-` modes (or with "
        "the Plex TV Series agent)"
    ),
    HAMA_MIXED: (
        "refresh the show's metadata in Plex (its ... menu > Refresh Metadata), so that its "
        "episodes are matched as the show is"
    ),
}

# an episode -> (AniList id, AniList episode), as the delivery target maps it
Reverse = Callable[[MediaRef], tuple[int, int] | Unmatched]
# (AniList id, AniList episode) -> the item keys AniList's plays of that episode have
Forward = Callable[[int, int], list[str] | Unmatched]


@dataclass(frozen=True)
class Placed:
    """Where a read's HAMA episodes go: `keys` by ratingKey; `unplaced`: the watched ones
    that go nowhere, by ratingKey, with the episode and why."""

    keys: Mapping[str, str] = field(default_factory=dict)
    unplaced: Mapping[str, tuple[MediaRef, Unmatched]] = field(default_factory=dict)


@dataclass(frozen=True)
class HamaEpisode:
    mode: str  # the HAMA mode of its guid: `anidb`, `tvdb3`, ...
    # The episode its guid names: the show's anime ids, its numbers (`unplaced` where they
    # place nothing: `numbering_unknown`).
    ref: MediaRef


def hama_episodes(
    shows: Iterable[LibraryItem], episodes: Iterable[LibraryItem]
) -> dict[str, HamaEpisode]:
    """The episodes HAMA matched by an AniDB or TheTVDB id, by ratingKey, as their guids name
    them: the show's ids (the show's listing first), the season and the number, or the
    absolute number in the absolute modes. (HAMA's `tmdb-` mode gives TMDB ids: such an
    episode is keyed as any other.)"""
    by_key = {show.rating_key: show for show in shows}
    found: dict[str, HamaEpisode] = {}
    for episode in episodes:
        mode = episode.hama or ""
        if not mode.startswith(("anidb", "tvdb")):
            continue
        show = by_key.get(episode.grandparent_rating_key or "")
        show_ids = show.ids.merged(episode.show_ids) if show is not None else episode.show_ids
        if show is None:
            unknown = numbering_unknown(mode, episode.show_ids, mode, episode.show_ids)
        else:
            unknown = numbering_unknown(mode, episode.show_ids, show.hama, show.ids)
        ref = MediaRef(
            "episode",
            title=episode.title,
            show_ids=show_ids,
            show_title=show.title if show is not None else None,
            season=episode.season,
            number=episode.number,
            absolute=episode.absolute,
            source_key=episode.rating_key,
            unplaced=unknown,
        )
        found[episode.rating_key] = HamaEpisode(mode, ref)
    return found


_SHOW_IDS = ("anidb", "tvdb", "tmdb", "imdb")


def _named(ids: Ids) -> set[tuple[str, str]]:
    return {(name, value) for name in _SHOW_IDS if (value := getattr(ids, name))}


def _matched_apart(mode: str, episode_ids: Ids, show_mode: str | None, show_ids: Ids) -> str | None:
    """How the guids of an episode (`episode_ids`: its guid's show id and its
    `grandparentGuid`'s) and of its show (its mode, None for another agent's, and ids)
    disagree, when they do: a show matched again (another mode or id) whose episodes Plex
    has not matched again yet. Their numbers are in their own guid's mode, which no longer
    names the show's numbering: which one they are in is not known. None when all name one
    show in one mode."""
    source = "anidb" if mode.startswith("anidb") else "tvdb"
    own = _named(episode_ids)
    show_named = _named(show_ids)
    if show_mode == mode and own == show_named and {name for name, _ in own} == {source}:
        return None
    modes = sorted({f"`{m}-`" for m in (mode, show_mode) if m})
    ids = sorted(own | show_named)
    return f"{' and '.join(modes)}, {', '.join(f'{name} {value}' for name, value in ids)}"


def numbering_unknown(
    mode: str, episode_ids: Ids, show_mode: str | None, show_ids: Ids
) -> str | None:
    """Why the numbers of an episode HAMA matched in `mode` (an `anidb` or `tvdb` one) place
    nothing, as `MediaRef.unplaced` notes it (`unplaced` reads it): its guids and its show's
    disagree (`_matched_apart`), or its mode's numbering is not known. None when they are
    AniDB's own, TheTVDB's seasons or absolute (`PLACED_MODES`)."""
    apart = _matched_apart(mode, episode_ids, show_mode, show_ids)
    if apart is not None:
        return f"{HAMA_MIXED}: {apart}"
    return None if mode in PLACED_MODES else f"{HAMA_MODE}: {mode}"


def unplaced(ref: MediaRef) -> Unmatched | None:
    """Why a HAMA episode's numbers place nothing (`numbering_unknown`), for the user (what
    to do about it: `FIXES`); None for any other item."""
    code, _, detail = (ref.unplaced or "").partition(": ")
    if code == HAMA_MIXED:
        return Unmatched(
            f"{ref.describe()}: HAMA's guids of the episode and of its show disagree "
            f"({detail}), as after a show is matched again: which numbering the "
            "episode's numbers are in is not known until Plex matches its episodes alike, "
            "so no episode is guessed from them",
            HAMA_MIXED,
        )
    if code == HAMA_MODE:
        return Unmatched(
            f"{ref.describe()} is matched by HAMA's `{detail}-` mode, whose episode numbers "
            "watchbridge does not know (it knows `anidb-` and `tvdb-` to `tvdb4-`): no episode "
            "is guessed from them",
            HAMA_MODE,
        )
    return None


def entry_episodes(
    episodes: Mapping[str, HamaEpisode], reverse: Reverse
) -> dict[str, tuple[int, int] | Unmatched]:
    """The AniList entry and episode of each episode, by ratingKey (`reverse` answers one
    whose numbers place nothing with why: `unplaced`)."""
    found: dict[str, tuple[int, int] | Unmatched] = {}
    for rating_key, episode in episodes.items():
        ref, mode = episode.ref, episode.mode
        hit = unplaced(ref) or reverse(ref)
        if isinstance(hit, Unmatched) and hit.code == "unknown":
            hit = Unmatched(
                f"{ref.describe()} (HAMA's `{mode}-` mode) is in no mapping dataset range: new "
                "titles reach the datasets days or weeks after they air",
                "unknown",
            )
        found[rating_key] = hit
    return found


def place(
    episodes: Mapping[str, HamaEpisode],
    entries: Mapping[str, tuple[int, int] | Unmatched],
    forward: Forward,
    watched: Iterable[str],
) -> Placed:
    """Each episode keyed where AniList's play of its entry's episode is; the `watched` ones
    (ratingKeys) with no such key, with why. A part of a longer AniList episode is no play on
    its own (its last part counts it), as on AniList's side: unkeyed, not listed."""
    keys: dict[str, str] = {}
    why: dict[str, Unmatched] = {}
    for rating_key, hit in entries.items():
        if isinstance(hit, Unmatched):
            why[rating_key] = hit
            continue
        media, number = hit
        found = forward(media, number)
        if isinstance(found, Unmatched):
            why[rating_key] = found
        elif len(found) == 1:
            keys[rating_key] = found[0]
        elif found:
            why[rating_key] = Unmatched(
                f"{episodes[rating_key].ref.describe()} is AniList {media} episode {number}, which "
                f"is {len(found)} TMDB episodes: one Plex episode cannot be linked to all of "
                "them; an override with one TMDB episode per AniList episode links it",
                "unmapped",
            )
    unplaced = {
        rk: (episodes[rk].ref, why[rk]) for rk in watched if rk in why and why[rk].code != PARTIAL
    }
    return Placed(keys, unplaced)
