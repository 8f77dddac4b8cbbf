"""What each service holds, as reconciliation `Side`s. Pure: service answers in, Side out.

Serializd and Trakt both number episodes the TMDB way, so an episode is keyed by the show's
TMDB id, season and number on both sides (`episode_key`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from watchbridge import ratings
from watchbridge.ingest.common import iso_time
from watchbridge.loose import obj
from watchbridge.model import ID_ORDER, Ids, MediaRef
from watchbridge.reconcile import UNDATED, Play, Rated, Side
from watchbridge.services.serializd import DiaryEntry
from watchbridge.services.trakt import parse_iso


def episode_key(show_tmdb: int | str, season: int, number: int) -> str:
    return f"episode:tmdb:{show_tmdb}:s{season}e{number}"


def show_key(show_tmdb: int | str, season: int | None = None) -> str:
    return f"show:tmdb:{show_tmdb}" + (f":s{season}" if season is not None else "")


def trakt_side(history: Iterable[Any], rated: Iterable[Any]) -> Side:
    """Trakt episode history and ratings; entries whose show has no TMDB id cannot be linked.
    A play with `watched_at` null (added as `unknown`, or `released` without an air date) is
    undated; an entry without the field at all is a changed answer, left out (see
    `trakt_unread_entries`)."""
    plays = []
    for entry in history:
        if not isinstance(entry, dict):  # names nothing (see `trakt_unnamed_entries`)
            continue
        key = _trakt_key(entry)
        if key and "watched_at" in entry:
            stamp = entry.get("watched_at")
            at = parse_iso(stamp) if stamp else UNDATED
            plays.append(Play(key, at, str(entry.get("id", ""))))
    scores: dict[str, Rated] = {}
    for entry in rated:
        if not isinstance(entry, dict):
            continue
        key = _trakt_key(entry)
        value = _trakt_rating(entry)
        if key and value is not None:
            scores[key] = Rated(value, _rated_at(entry))
    return Side(tuple(plays), scores)


def trakt_unread_ratings(rated: Iterable[dict[str, Any]]) -> list[str | None]:
    """The item of each rating entry in a shape watchbridge does not know (None when it
    names no item watchbridge can read: its `type`, media object or `ids` renamed or gone;
    else its `rating` gone or no whole number 1-10). Trakt sends every rating with these, so
    such an entry is a changed answer, not a rating removed. An item whose ids lack a TMDB
    id is no changed answer: it cannot be linked, as in the history."""
    unread: list[str | None] = []
    for entry in rated:
        if not trakt_names_item(entry):
            unread.append(None)
        elif _trakt_rating(entry) is None and (key := _trakt_key(entry)):
            unread.append(key)
    return unread


def _trakt_rating(entry: dict[str, Any]) -> int | None:
    value = entry.get("rating")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        return None
    return ratings.from_ten(value)


def _rated_at(entry: dict[str, Any]) -> float:
    """A rating's `rated_at`, UNDATED when gone or unreadable (a changed answer: Trakt dates
    every rating)."""
    at = iso_time(entry.get("rated_at"))
    return UNDATED if at is None else at


_TRAKT_MEDIA = {"movie": "movie", "show": "show", "season": "show", "episode": "show"}


def trakt_names_item(entry: Any) -> bool:
    """Whether a rating entry has the fields that name its item (`_trakt_key` may still find
    no TMDB id in them): its `type`, its media object with `ids`, and its season and
    episode numbers where it rates those. History entries name their item the same way."""
    if not isinstance(entry, dict):
        return False
    kind = entry.get("type")
    media = entry.get(_TRAKT_MEDIA.get(str(kind), ""))
    if not isinstance(media, dict) or not isinstance(media.get("ids"), dict):
        return False
    if kind == "episode":
        episode = entry.get("episode")
        return isinstance(episode, dict) and all(
            isinstance(episode.get(f), int) for f in ("season", "number")
        )
    if kind == "season":
        season = entry.get("season")
        return isinstance(season, dict) and isinstance(season.get("number"), int)
    return True


def trakt_unread_entries(history: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """The item and record (history id) of each history entry that has no `watched_at` field
    (Trakt sends `null` for a play without a date, so the field gone is an answer in another
    shape)."""
    return [
        (key, str(entry.get("id", "")))
        for entry in history
        if isinstance(entry, dict) and "watched_at" not in entry and (key := _trakt_key(entry))
    ]


def trakt_unnamed_entries(history: Iterable[Any]) -> int:
    """How many history entries name no item watchbridge can read (`trakt_names_item`):
    Trakt names every play's item, so such an entry is an answer in another shape, and any
    play missing from the read may be its."""
    return sum(1 for entry in history if not trakt_names_item(entry))


def movie_key(ids: dict[str, Any]) -> str | None:
    """A movie by TMDB id, else IMDb id (None when it has neither)."""
    for name in ("tmdb", "imdb"):
        if ids.get(name):
            return f"movie:{name}:{ids[name]}"
    return None


def own_id_alias(name: str, value: str) -> str:
    """The `SideRead.aliases` key of an episode's own id: a webhook's play may name its
    episode by nothing else (Jellyfin's TVDB id, its series by Jellyfin's own id)."""
    return f"episode-id:{name}:{value}"


# An episode's own ids that name it alone (one IMDb id may name every part of a multi-part one).
_OWN_EPISODE_IDS = ("trakt", "tmdb", "tvdb")


def own_id_aliases(ref: MediaRef) -> list[str]:
    """`own_id_alias` of each of an episode's own ids (none for other kinds)."""
    if ref.kind != "episode":
        return []
    return [
        own_id_alias(name, value) for name in _OWN_EPISODE_IDS if (value := getattr(ref.ids, name))
    ]


@dataclass(frozen=True)
class WatchedEpisode:
    """An episode Trakt's history holds watched lately: its latest play's time and its own
    ids (`_OWN_EPISODE_IDS`, as text)."""

    at: float
    trakt: str | None = None
    tmdb: str | None = None
    tvdb: str | None = None


def trakt_watched_episodes(history: Iterable[Any], since: float) -> dict[str, WatchedEpisode]:
    """The episodes Trakt's history entries watched since `since`, by key, with the own ids
    the entries name them by. Pure."""
    found: dict[str, WatchedEpisode] = {}
    for entry in history:
        if not isinstance(entry, dict) or entry.get("type") != "episode":
            continue
        stamp = entry.get("watched_at")
        try:
            at = parse_iso(stamp) if isinstance(stamp, str) else None
        except ValueError:
            at = None
        key = _trakt_key(entry) if at is not None and at >= since else None
        if key is None or at is None or (key in found and found[key].at >= at):
            continue
        ids = obj(obj(entry.get("episode")).get("ids"))
        own = {name: str(ids[name]) for name in _OWN_EPISODE_IDS if ids.get(name)}
        found[key] = WatchedEpisode(at, **own)
    return found


def watched_lately(
    kept: Mapping[str, WatchedEpisode], read: Mapping[str, WatchedEpisode], since: float
) -> dict[str, WatchedEpisode]:
    """The episodes kept from earlier reads and those this one read (naming each as it does
    now), watched since `since`. Pure."""
    merged = {**kept, **read}
    return {key: episode for key, episode in merged.items() if episode.at >= since}


def trakt_episode_aliases(episodes: Mapping[str, WatchedEpisode]) -> dict[str, str]:
    """`own_id_alias` of each own id of `episodes` -> that episode's key: a play a webhook
    queued for another side, its episode named by those ids only, is recognised as this one
    while it waits. Pure."""
    return {
        own_id_alias(name, value): key
        for key, episode in episodes.items()
        for name in _OWN_EPISODE_IDS
        if (value := getattr(episode, name))
    }


def _trakt_key(entry: dict[str, Any]) -> str | None:
    kind = entry.get("type")
    if kind == "movie":
        return movie_key(obj(obj(entry.get("movie")).get("ids")))
    show_tmdb = obj(obj(entry.get("show")).get("ids")).get("tmdb")
    if not show_tmdb:
        return None
    if kind == "episode":
        episode = obj(entry.get("episode"))
        if episode.get("season") is None or episode.get("number") is None:
            return None
        return episode_key(show_tmdb, episode["season"], episode["number"])
    if kind == "season":
        return show_key(show_tmdb, obj(entry.get("season")).get("number"))
    if kind == "show":
        return show_key(show_tmdb)
    return None


def serializd_side(diary: Iterable[DiaryEntry], ours: Collection[int] = ()) -> Side:
    """Diary entries as plays (episode entries) and ratings (episode, season and show).

    A rating's record lists the rating-only rows (not diary logs) holding a rating for the
    item, oldest first: what removing the rating deletes (a log is a play; it stays), then
    each diary log holding stars for it as `log:<id>`, so a read can tell a log deleted (an
    older log's stars showing again) from stars edited on the same rows. A rating
    is dated when it was added, except one of the rows `ours` (ids of ratings watchbridge
    copied there): those carry the copied rating's own time (their backdate), not when the
    copy landed, which may be after the user changed the original (it would win back)."""
    plays = []
    scores: dict[str, Rated] = {}
    rows: dict[str, list[DiaryEntry]] = {}
    for entry in diary:
        key = diary_key(entry)
        if key is None:
            continue  # a season this row does not name: nothing to key it by
        episode = entry.season_number is not None and entry.episode_number is not None
        if episode and (entry.is_log or entry.internal_rating is None):
            plays.append(Play(key, entry.watched_at, str(entry.id)))
        value = entry.internal_rating
        if value is None:
            continue
        rows.setdefault(key, []).append(entry)
        rated_at = entry.watched_at if entry.id in ours else entry.date_added
        if key not in scores or scores[key].at < rated_at:
            scores[key] = Rated(value, rated_at)
    for key, held in rows.items():
        ordered = sorted(held, key=lambda e: (e.date_added, e.id))
        ids = [str(e.id) for e in ordered if not e.is_log]
        # A log's stars are the log's (a play), never deleted: a removal must know of them.
        logged = [f"{RATED_LOG}:{e.id}" for e in ordered if e.is_log]
        scores[key] = replace(scores[key], record=",".join(ids + logged))
    return Side(tuple(plays), scores)


def diary_key(entry: DiaryEntry) -> str | None:
    """The item a diary row is of: an episode, a season or a whole show (None: a season the
    row does not name)."""
    if entry.season_number is not None and entry.episode_number is not None:
        return episode_key(entry.show_id, entry.season_number, entry.episode_number)
    if entry.season_id is None:
        return show_key(entry.show_id)
    if entry.season_number is not None:
        return show_key(entry.show_id, entry.season_number)
    return None


RATED_LOG = "log"  # in a Serializd rating's record: a diary log of the item holds stars too


def holds_logged_stars(record: str) -> bool:
    """Whether a Serializd rating's record names a diary log holding stars: `log:<id>`, or
    the bare `log` of records kept before logs were named (cursors, queued removals)."""
    return any(part.partition(":")[0] == RATED_LOG for part in record.split(","))


def ref_for_key(key: str) -> MediaRef | None:
    """The MediaRef a canonical item key names: `episode:ID:SHOW:sSeN`, `show:ID:SHOW`,
    `show:ID:SHOW:sN` (a season), `movie:ID:MOVIE` (ID: tmdb, tvdb, imdb, ...)."""
    parts = key.split(":")
    if len(parts) < 3 or parts[1] not in ID_ORDER or not parts[2]:
        return None
    kind, id_name, value, rest = parts[0], parts[1], parts[2], parts[3:]
    ids = Ids(**{id_name: value})
    if kind == "movie" and not rest:
        return MediaRef("movie", ids=ids)
    if kind == "show" and not rest:
        return MediaRef("show", ids=ids)
    if kind == "show" and len(rest) == 1 and rest[0][1:].isdigit() and rest[0][0] == "s":
        return MediaRef("season", show_ids=ids, season=int(rest[0][1:]))
    if kind == "episode" and len(rest) == 1:
        season, _, number = rest[0].removeprefix("s").partition("e")
        if season.isdigit() and number.isdigit():
            return MediaRef("episode", show_ids=ids, season=int(season), number=int(number))
    return None
