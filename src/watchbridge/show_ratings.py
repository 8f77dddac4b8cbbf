"""Ratings of a whole anime show, which AniList cannot take: told to the user, once per show.

AniList scores each list entry: a season, a cour, a movie. A show's own rating (Plex, Trakt and
Serializd rate shows) names no entry, and a show maps to several: written to one, a guess
would overwrite that season's score. So it is never written; the AniList target (a webhook's
rating) and an AniList link's reader (the other side's ratings) record it here instead, in the
AniList mirror's `SHOW_RATINGS` (per profile, by show), and `watchbridge status` and the status
page say, one calm line per show, what to rate instead: the season where the rating was given,
or the entry on AniList. Nothing is broken, so nothing is alerted.

A record goes once the show has a season rated after it (a webhook's season rating, or a
link seeing one on either side), or once its rating is cleared; it is told TOLD_FOR after it
was noted, then kept silent for as long as the show stays rated so (a link reading the same
rating again does not tell it again; a new value is told again). What is no anime at all (in
no mapping dataset, with no anime id or genre) is none of AniList's business: not recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from watchbridge.anime import Unmatched, anime_signs
from watchbridge.config import service_title
from watchbridge.model import Ids, MediaRef
from watchbridge.ratings import to_ten_halves

SERVICE = "anilist"  # the AniList target's mirror (`deliver.anilist.NAME`)
SHOW_RATINGS = "show_ratings"  # its collection of these records
TOLD_FOR = 30 * 86400.0
WEBHOOK = "webhook"  # a record's `source` when a webhook's rating made it (else a link's)

Reverse = Callable[[MediaRef], "tuple[int, int] | Unmatched"]


def show_record_key(ids: Ids) -> str | None:
    """The key a show's record has, whoever saw its rating: by TMDB id (as links key shows),
    else TheTVDB's."""
    return next(iter(season_keys(ids)), None)


def season_keys(ids: Ids) -> tuple[str, ...]:
    """Every key a record of the show of a season with these show ids may have."""
    return tuple(
        f"show:{name}:{value}" for name in ("tmdb", "tvdb") if (value := getattr(ids, name))
    )


def anime_show(show: MediaRef, reverse: Reverse, genres: Iterable[object] = ()) -> bool:
    """Whether a show (or a season, or a film) is anime: something marks it so (an anime id,
    its genres: `anime.anime_signs`), or a mapping dataset knows it (its first episode is
    placed, or told unplaced for a reason other than being unknown). Pure."""
    if anime_signs(show, genres) is not None:
        return True
    ref = show
    if show.kind in ("show", "season", "episode"):  # as the show's first episode places
        ids = show.ids if show.kind == "show" else show.show_ids
        ref = MediaRef("episode", show_ids=ids, season=show.season or 1, number=1)
    hit = reverse(ref)
    return not (isinstance(hit, Unmatched) and hit.code == "unknown")


@dataclass(frozen=True)
class ShowRated:
    """One record: a profile's rating of a whole show, not on AniList."""

    profile: str
    show: str  # its key (`show_record_key`)
    title: str | None
    rating: int  # 0-100
    where: str  # the service it was given on (a config name: plex, trakt, ...)
    noted_at: float

    @property
    def message(self) -> str:
        name = repr(self.title) if self.title else _named(self.show)
        given = _given_on(self.where)
        stars = f"{to_ten_halves(self.rating):g}/10"
        return (
            f"{self.profile}: {name} is rated as a whole show in {given} ({stars}), which AniList "
            f"cannot take: AniList rates each season's entry, and a guess could overwrite "
            f"another season's score; to have it there, rate the season in {given}, or the "
            f"entry on AniList (told for {TOLD_FOR / 86400:.0f} days at most)"
        )


def _named(key: str) -> str:
    _, scheme, value = [*key.split(":"), "", ""][:3]
    return f"{'TMDB' if scheme == 'tmdb' else 'TheTVDB'} show {value}"


def _given_on(where: str) -> str:
    if where == "generic":
        return "your media server"
    return service_title("plex" if where == "tautulli" else where)


def noted(
    before: object,
    rating: int,
    title: str | None,
    where: str,
    source: str,
    now: float,
) -> dict[str, Any]:
    """A show's record as `before` (the record kept, if any) becomes with this rating: noted
    now, unless it is the same rating told already (then its first noting stands, so it is
    told once). Pure."""
    kept = before if isinstance(before, dict) else {}
    same = kept.get("rating") == rating and isinstance(kept.get("noted_at"), (int, float))
    return {
        "rating": rating,
        "title": title or kept.get("title"),
        "where": where,
        "source": source,
        "noted_at": float(kept["noted_at"]) if same else now,
    }


def told(profile: str, records: Mapping[str, Any], now: float) -> list[ShowRated]:
    """The records still told at `now` (noted less than TOLD_FOR ago), by title. Pure."""
    found = []
    for key, record in records.items():
        try:
            rated = ShowRated(
                profile,
                key,
                str(record["title"]) if record.get("title") else None,
                int(record["rating"]),
                str(record["where"]),
                float(record["noted_at"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if now - rated.noted_at < TOLD_FOR:
            found.append(rated)
    return sorted(found, key=lambda r: ((r.title or r.show).casefold(), r.show))


@dataclass(frozen=True)
class LinkShows:
    """What a link's read changes in the records: those to write, and the keys to forget."""

    put: dict[str, dict[str, Any]]
    forget: list[str]


def from_link(
    records: Mapping[str, Any],
    shows: Mapping[str, tuple[int, float]],
    seasons_rated: Mapping[str, float],
    titles: Mapping[str, str],
    where: str,
    source: str,
    now: float,
) -> LinkShows:
    """The records after a link's read (`source`) of the other side's anime show ratings
    (`shows`: key -> value, rated at), given when each show last had a season rated on
    either side (`seasons_rated`): a show rated by season since is told no more, nor one
    this link recorded that is no longer rated. Pure."""
    put: dict[str, dict[str, Any]] = {}
    forget: list[str] = []
    for key, (value, at) in shows.items():
        if seasons_rated.get(key, float("-inf")) >= at:
            if key in records:
                forget.append(key)
            continue
        record = noted(records.get(key), value, titles.get(key), where, source, now)
        if record != records.get(key):
            put[key] = record
    for key, record in records.items():
        mine = isinstance(record, dict) and record.get("source") == source
        if mine and key not in shows:
            forget.append(key)
    return LinkShows(put, forget)


def seasons_rated_at(ratings: Iterable[tuple[str, float]]) -> dict[str, float]:
    """When each show (by key) last had one of its seasons rated, from (item key, rated at)
    pairs: a season's key is its show's with `:sN` after it. Pure."""
    latest: dict[str, float] = {}
    for key, at in ratings:
        show, _, season = key.rpartition(":")
        if show.count(":") == 2 and season[:1] == "s" and season[1:].isdigit():
            latest[show] = max(at, latest.get(show, float("-inf")))
    return latest


# --------------------------------------------------------------------------- the records


def note(store: Any, profile: str, key: str, record: dict[str, Any], now: float) -> None:
    store.mirror_put(SERVICE, profile, SHOW_RATINGS, {key: record}, now)


def records_of(store: Any, profile: str) -> dict[str, Any]:
    found: dict[str, Any] = store.mirror_get(SERVICE, profile, SHOW_RATINGS)
    return found


def forget(store: Any, profile: str, keys: Iterable[str]) -> None:
    if keys := list(keys):
        store.mirror_remove(SERVICE, profile, SHOW_RATINGS, keys)


def told_now(store: Any, profiles: Iterable[str], now: float) -> list[ShowRated]:
    """Every profile's show ratings told at `now` (`watchbridge status`, the status page)."""
    return [rated for p in profiles for rated in told(p, records_of(store, p), now)]
