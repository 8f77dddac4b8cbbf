"""The canonical model every source is translated into and every target is written from."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Literal

MediaKind = Literal["movie", "episode", "show", "season"]
Source = Literal["plex", "jellyfin", "emby", "tautulli", "generic"]

# Webhook actions, after each parser has mapped its own event names:
#   start/resume/pause/progress/stop: playback; played/unplayed: a manual mark; rate: a rating.
Action = Literal["start", "resume", "pause", "progress", "stop", "played", "unplayed", "rate"]

# The years a time may be a viewing's in, from FIRST_YEAR up to (not into) END_YEAR: one
# outside them is no one's (a .NET minimum date, 9999-12-31, a list app's year 1) and could
# not even be written out for a service again. Webhook times and AniList's dates are held to it.
FIRST_YEAR, END_YEAR = 1900, 2200


def viewing_year(year: int) -> bool:
    """Whether a time in `year` could be a viewing's (see FIRST_YEAR, END_YEAR)."""
    return FIRST_YEAR <= year < END_YEAR


# Strongest first: the order ids are trusted when two sources disagree (design: ids).
ID_ORDER = ("trakt", "imdb", "tmdb", "tvdb", "anilist", "mal", "anidb", "plex_guid", "slug")


@dataclass(frozen=True)
class Ids:
    """External ids of one item; any may be missing. Numeric ids are kept as digit strings."""

    trakt: str | None = None
    imdb: str | None = None
    tmdb: str | None = None
    tvdb: str | None = None
    anilist: str | None = None
    mal: str | None = None
    anidb: str | None = None
    plex_guid: str | None = None
    slug: str | None = None

    def present(self) -> dict[str, str]:
        """The ids that are known, strongest first."""
        return {name: value for name in ID_ORDER if (value := getattr(self, name))}

    def merged(self, other: Ids) -> Ids:
        """These ids, with gaps filled from `other` (ours win where both have one)."""
        # Positional and without dataclasses.replace: called for every item of a library read.
        return Ids(*[getattr(self, n) or getattr(other, n) for n in _ID_FIELDS])

    def __bool__(self) -> bool:
        return bool(self.present())


_ID_FIELDS = tuple(f.name for f in fields(Ids))


@dataclass(frozen=True)
class MediaRef:
    """A movie or an episode (or a show/season, for ratings), identified as well as we can.

    Episodes carry their own ids (often missing or episode-level only) and the show's ids with
    season and number; `absolute` where the source numbers anime that way.

    `source_key` is the source server's own key for the item (Plex ratingKey, Jellyfin/Emby
    ItemId) and `show_source_key` the show's (Plex grandparentRatingKey, Jellyfin/Emby
    SeriesId): what enrichment asks the server about. Neither is an identity: `key()` ignores
    them, so ordering and idempotency keys do not depend on them. Nor is `aired`, an
    episode's first air date (YYYY-MM-DD) as the sender says: what places an episode in
    TMDB's numbering when nothing gives its own TMDB id.
    """

    kind: MediaKind
    ids: Ids = field(default_factory=Ids)
    title: str | None = None
    year: int | None = None
    show_ids: Ids = field(default_factory=Ids)
    show_title: str | None = None
    season: int | None = None
    number: int | None = None
    absolute: int | None = None
    source_key: str | None = None
    show_source_key: str | None = None
    aired: str | None = None
    # Why the numbers place no episode on AniList (a Plex HAMA episode in a mode whose
    # numbering is not known, or whose guid and its show's disagree: `hama.numbering_unknown`).
    unplaced: str | None = None

    @property
    def _numbered(self) -> bool:
        return self.season is not None or self.absolute is not None

    def key(self) -> str:
        """A stable identity for de-duplication (idempotency and session keys): strongest id,
        else title. Delivery order goes by `order_key`."""
        numbered = self._numbered
        if self.kind == "episode" and self.show_ids and numbered:
            name, value = next(iter(self.show_ids.present().items()))
            return f"episode:{name}:{value}:{self._numbers()}"
        if self.kind == "season" and self.show_ids and self.season is not None:
            name, value = next(iter(self.show_ids.present().items()))
            return f"season:{name}:{value}:s{self.season}"
        if self.ids:
            name, value = next(iter(self.ids.present().items()))
            if self.kind == "episode" and name == "imdb" and numbered:
                # One IMDb id may name both parts of a two-part episode (or its whole series).
                return f"episode:imdb:{value}:{self._numbers()}"
            return f"{self.kind}:{name}:{value}"
        if self.kind == "episode":
            return f"episode:title:{self.show_title}:{self._numbers()}"
        return f"{self.kind}:title:{self.title}:{self.year}"

    def order_key(self) -> str:
        """The item's identity for delivery order (`store.ordering_key`): the key a link gives
        it, so that a webhook's rows and a link's rows of one item take turns. Links key a
        movie by its TMDB id, else its IMDb id; a show by its TMDB id; an episode or a season
        by its show's TMDB id and its numbers. An item without those is keyed as `key()` keys
        it: no link's row can be of it.

        Only the ids the item carries count, never ones a cache learnt since: a key that
        changed while an earlier row of the item waits would let a later row go first."""
        kind, ids, show = self.kind, self.ids, self.show_ids.tmdb
        if kind == "movie" and (ids.tmdb or ids.imdb):
            return f"movie:tmdb:{ids.tmdb}" if ids.tmdb else f"movie:imdb:{ids.imdb}"
        if kind == "show" and ids.tmdb:
            return f"show:tmdb:{ids.tmdb}"
        if kind == "episode" and show and self._numbered:
            return f"episode:tmdb:{show}:{self._numbers()}"
        if kind == "season" and show and self.season is not None:
            return f"season:tmdb:{show}:s{self.season}"
        return self.key()

    def earlier_key(self) -> str | None:
        """The key releases before 2026-11-26 gave this item, where it differs (an episode
        named by its IMDb id had no numbers in it): what they recorded is found under it."""
        if self.kind != "episode" or not self._numbered or self.show_ids or not self.ids:
            return None
        name, value = next(iter(self.ids.present().items()))
        return f"episode:imdb:{value}" if name == "imdb" else None

    def _numbers(self) -> str:
        # The absolute number only where it is all there is: every other key stays as it was,
        # and an episode numbered both ways is the same item as one numbered by season only.
        absolute = f"a{self.absolute}" if self.number is None and self.absolute is not None else ""
        return f"s{self.season}e{self.number}{absolute}"

    def describe(self) -> str:
        """A short human label for logs and the UI; without a title, the ids name it."""
        show = self.show_title or _named(self.show_ids)
        if self.kind == "episode" and self.number is None and self.absolute is not None:
            return f"{show} absolute episode {self.absolute}"  # a season with it is TVDB's
        if self.kind == "episode" and self.number is None:
            # Not "S00E00", a special's name: a daily show's episode in Plex has no number.
            season = f" season {self.season}," if self.season is not None else ""
            return f"{show}{season} an episode without a number"
        if self.kind == "episode":
            return f"{show} S{self.season or 0:02d}E{self.number:02d}"
        if self.kind == "season":
            return f"{show} season {self.season}"
        title = self.title or _named(
            self.ids if self.kind == "movie" else self.ids.merged(self.show_ids)
        )
        return title + (f" ({self.year})" if self.year else "")


@functools.lru_cache(maxsize=1024)
def item_aliases(item: MediaRef) -> tuple[str, ...]:
    """Every key an item may be known by: its `key()` and one per id (an episode's show ids
    with its numbers, and its own ids but IMDb's). A webhook's row and a link's row of one
    play name it by different ids (Plex's IMDb id, the link's TMDB id).

    Cached: a delivery batch asks it of each of its rows several times."""
    keys = [item.key()]
    for name, value in item.show_ids.present().items():
        keys.append(replace(item, show_ids=Ids(**{name: value})).key())
    for name, value in item.ids.present().items():
        if name == "imdb" and item.kind == "episode":
            continue  # one IMDb id may name every part of a multi-part episode
        keys.append(MediaRef(item.kind, Ids(**{name: value})).key())  # the id alone
    return tuple(dict.fromkeys(keys))


def _named(ids: Ids) -> str:
    """An untitled item's label: its strongest id (`tmdb 1396`), else `?`."""
    return next((f"{name} {value}" for name, value in ids.present().items()), "?")


@dataclass(frozen=True)
class Account:
    """Who played it on the media server: the server-local id and/or the user name."""

    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class MediaEvent:
    """One thing a media server told us, in canonical form.

    `played` is the server's own completion signal (Plex media.scrobble, Jellyfin
    PlayedToCompletion, Tautulli watched, a manual mark), trusted even without progress.
    `rating` is on the internal 0-100 scale (see ratings.py). `companion`: a further episode
    of a multi-episode file, following the first one's playback without live state of its own;
    `companion_of`: that first episode (Trakt's search for its ids names the show).
    """

    source: Source
    action: Action
    item: MediaRef
    server: str = ""
    account: Account = field(default_factory=Account)
    player: str = ""
    position_ms: int | None = None
    duration_ms: int | None = None
    played: bool = False
    rating: int | None = None
    occurred_at: float | None = None
    session_id: str = ""
    companion: bool = False
    companion_of: MediaRef | None = None
    percent: float | None = None  # progress a source gave without a position (generic schema)
    # A mark that may re-mark what was watched before (Jellyfin's "mark season played" marks
    # every episode, counting each again): no new play of an item completed before.
    remark: bool = False
    # The player's name as the Plex server shows it (Plex's Player.title, Tautulli's {player}),
    # beside `player`, its id ("" when a Tautulli template names no {machine_id}): the two
    # senders' reports of one viewing are paired by name when one names no id.
    player_name: str = ""
    # When the server sent it, by the server's own clock (Jellyfin's UtcTimestamp, Emby's
    # Date): against `occurred_at` on that clock, how long after a play it was reported,
    # whatever that clock's error (playback.reported_late).
    sent_at: float | None = None
    # The item's genres as Jellyfin or Emby name them ("Animation", "Anime"): for a library on
    # TMDB metadata the only sign that a show no anime dataset knows is anime all the same
    # (`deliver.anilist.likely_anime`). Not part of the item: no key depends on them.
    genres: tuple[str, ...] = ()

    @property
    def progress(self) -> float | None:
        """Percent watched, from position and duration when both are known."""
        return percent_watched(self.position_ms, self.duration_ms, self.percent)


def percent_watched(
    position_ms: float | None, duration_ms: float | None, percent: float | None
) -> float | None:
    """An event's percent watched (`MediaEvent.progress`), also of one as stored."""
    if position_ms is None or not duration_ms:
        return percent
    return max(0.0, min(100.0, 100.0 * position_ms / duration_ms))


@dataclass(frozen=True)
class Accepted:
    """The payload is about something we track."""

    events: list[MediaEvent]
    warnings: list[str] = field(default_factory=list)
    # The JSON object the server sent (the thumbnail of a multipart body left out), kept with
    # the events that queue deliveries so an unmatched one can be explained.
    document: Mapping[str, object] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Ignored:
    """Well-formed, but not for us (music, trailers, library events): 2xx, counted by reason."""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """Malformed: 400 with this one-line reason."""

    reason: str


ParseResult = Accepted | Ignored | Rejected


# Worked out once: `fields()` on each call cost a third of building a webhook's job.
_REF_FIELDS_AFTER_KIND = tuple(f.name for f in fields(MediaRef) if f.name != "kind")


def ref_to_dict(item: MediaRef) -> dict[str, object]:
    """A MediaRef as plain JSON data for the outbox (empty fields left out)."""
    data: dict[str, object] = {"kind": item.kind}
    for name in _REF_FIELDS_AFTER_KIND:
        value = getattr(item, name)
        if isinstance(value, Ids):
            value = value.present()
        if value is not None and value != "" and value != {}:
            data[name] = value
    return data


def ref_from_dict(data: dict[str, object]) -> MediaRef:
    values = dict(data)
    for name in ("ids", "show_ids"):
        raw = values.get(name)
        values[name] = Ids(**raw) if isinstance(raw, dict) else Ids()
    return MediaRef(**values)  # type: ignore[arg-type]
