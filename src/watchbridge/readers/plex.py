"""Plex's side of a link: whole-section listings and the dated history, per person.

Reading (reference §3): the libraries (`services.plex.libraries`, default every movie and show
library), then per library one paged listing per type — movies; shows (their ids key the
episodes); seasons (only for ratings); all episodes in one listing — and the person's history
since the last read. Requests grow with pages, never with items.

Whose state: watched state and ratings are per Plex account, so listings and writes use the
person's own token for this server (`ServerTokens`): `profiles.X.accounts.plex.token` as given,
else the one found through plex.tv for the person `watchbridge auth plex` signed in (plex.md §3:
a friend's from the owner's shared-servers list, a home user's by switching to them and reading
their resources; their plex.tv token is not a server token). A profile with neither is the
server owner (the server token). The history is read with
the server token filtered by the profile's server-local account id (owner = 1): PMS serves it to
the admin. The id comes from the sign-in, a number in `users.plex`, or a username there (or the
sign-in's) looked up in `/accounts` once a week. Without an id or the owner's token a person's
plays come from the watched state alone (one per watched item).

What counts as a play:
- a history row of an item that is watched now (viewCount > 0). Unwatching in Plex keeps the
  rows in history but means "not watched": the item's plays disappear (the removal propagates
  through the baseline rules) and those rows are retired so a later rewatch does not bring them
  back;
- a watched item with no history row (marked watched, history cleared) gives one play at
  `lastViewedAt`, remembered so it keeps its record when history appears later;
- a play we wrote ourselves: Plex stamps a scrobble *now* and cannot back-date, so the
  deliverer records every write (`written`); the history row our scrobble made is recognised
  and the play is read back at the time it came from, never as a new play "today". A server
  since PMS 1.40.0.7998 makes no row for a scrobble (`Written.rowless`): there every row is
  the user's, and a write's landing shows in `lastViewedAt` alone. A write
  whose outcome is unknown (its answer lost, its row waiting) is not undone by the item
  listed unwatched: it did not land, and its retry writes it. Its row given up, the listing
  settles it (`settle_pending`): landed, it is a write like any other; not landed, a dead
  letter still counts as on its way (a retry looks before it writes), and a row discarded
  or pruned never wrote it: no play (`Written.unlanded`), the link copies it again. A row
  marked possibly sent (a backup copy put back, which holds no record of a write made after
  it was taken), or a link's queued before this process opened the database (a data folder
  copied as it is and put back holds no mark: `OutboxItem.links_since`), is taken as
  written where Plex shows its item viewed since the row was queued (`sent_after_the_copy`).

The cheap check (`unchanged`) is one history request of size 1 (total and newest row): it
covers new plays, our own scrobbles and deleted history, in every library at once. On a server
that ignores `accountID` (everyone's rows come back) it is one page of the newest rows instead,
compared by `arrivals`; a read then takes that page alone when it holds every new row. Ratings and
mark-watched without history do not show there; they arrive with the engine's daily full read
(or live through Plex's `media.rate` webhook). Section `updatedAt` was not used: it moves with
library scans, not with a person's watching. A person read without history (no account id,
or no server token) is asked the server's identity and, per library read, how many of their
movies or episodes were viewed after the newest view read (`watched_cursor`): a run with
nothing new reads no listing for them either. A view the server learns of late (offline
downloads synced days later) dated before that newest view is in no such count: a second
count per library, of their watched items (`viewCount>>=0`), kept beside the cursor as the
listing read counted them (`watched_in`), tells it (and unwatching).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from watchbridge import hama, ratings, webhookwatch
from watchbridge.accounts import SERVER_PART, identity_of
from watchbridge.anime import SERVER_ORDER, Forward, Unmatched
from watchbridge.config import Config, Link, PlexConfig, Profile, link_profiles, same_name
from watchbridge.episode_numbers import (
    EpisodeNumbering,
    EpisodeNumbers,
    numbering_for,
    numbers_for,
)
from watchbridge.errors import ConfigError, StoreError
from watchbridge.http import ServiceError
from watchbridge.ingest.common import text
from watchbridge.logs import Repeating
from watchbridge.loose import whole
from watchbridge.metrics import Metrics
from watchbridge.model import Ids, MediaRef, ref_from_dict
from watchbridge.readers import Clock, OnTheirWay, SideRead, some_titles
from watchbridge.reconcile import Play, Rated, Side
from watchbridge.services.plex import (
    HistoryEntry,
    HistoryPage,
    HistoryRow,
    LibraryItem,
    PersonTokenRefused,
    PlexAuthError,
    PlexClient,
    Section,
    ServerTokenRefused,
    library_items,
)
from watchbridge.services.plextv import TOKEN_SERVICE as SIGN_IN
from watchbridge.services.plextv import PlexTvError
from watchbridge.services.refusals import SERVICE_WIDE, note_refused, note_taken
from watchbridge.store import MirrorChange, Store

if TYPE_CHECKING:
    from watchbridge.services.plextv import PlexTvClient

log = logging.getLogger(__name__)
# A server serving its history to the owner only stays so for as long as it is set up so
# (every run, for months): said once per person and server, and again only once it was read
# (a server token set) and is refused again. Readers last one run: this lasts the process.
_OWNER_ONLY = Repeating(log, every=math.inf)
# An account renamed in Plex, still read by the id found for its old name: said at its first
# read, then as a reminder, until `users.plex` names it again.
_RENAMED = Repeating(log)
# A server that ignores the history's `accountID` filter does so at every read: said at the
# first, then as a reminder, until a read gets none but the person's rows.
_UNFILTERED = Repeating(log)

SERVICE = "plex"
OWNER_ACCOUNT = "1"  # the server owner's server-local account id
KEYS = "keys"  # item key -> {"rating_keys": [...], "watched_at": lastViewedAt or None}
KEYS_FROM = "keys_from"  # cursor: the machine id of the server `keys` was read from
# cursor: the server-local account id the last read read the person's history by (none: it
# read none); the deliverer asks the history by it when a view's date must be the first one
HISTORY_ACCOUNT = "history_account"
PLAYS = "plays"  # record -> {"item", "at", "rating_key"}: the plays of the last read
WRITTEN = "written"  # record -> Written, see below
# record -> Written: our writes to the server read before this one (replaced: a new machine id),
# kept through the start over until this server shows their scrobbles (`_carried_over`)
WRITTEN_BEFORE = "written_before"
CARRIED_OVER = {WRITTEN: WRITTEN_BEFORE}  # what a start over keeps of a profile's Plex side
# A server that has not shown those writes half a year after the start over never will (a
# moved server's history is there at once, one imported later within weeks): then they go.
KEEP_WRITTEN_BEFORE = 180 * 86400.0
SYNTHETIC = "synthetic"  # record -> {"rating_key", "at", "removed"}: plays with no history row
# ratingKey -> {"season", "number"}: episodes found in the other side's numbering, per source
RENUMBERED = "renumbered"
RETIRED = "retired"  # history id -> {"rating_key"}: rows of items since unwatched
# history id -> {"rating_key", "at"}: the server's history, cached; rating_key "": a row of an
# item deleted from the library, no play but counted (the server's total counts it)
HISTORY = "history"
WATCHED = "watched"  # link cursor of a person read without history: see `watched_cursor`
ECHO_WINDOW = 900.0  # a history row this close to one of our scrobbles is that scrobble
# The same to a server whose version says it writes no row for a scrobble (`Written.rowless`):
# a row there at the moment of our write is still ours (a build unlike its release notes),
# while a viewing of the user's minutes after it is theirs.
ROWLESS_ECHO = 60.0
DUPLICATE_WINDOW = 120.0  # two copies of one item (4K + HD libraries) watched together
HISTORY_OVERLAP = 86400.0  # delta history reads look back this far past the newest row
ACCOUNTS = "plex-accounts"  # id cache: profile + configured names -> server-local account id
ACCOUNTS_TTL = 7 * 86400.0
ACCOUNTS_NAMED = 20  # the server's account names a message lists; it counts the others
MACHINE = ":machine"  # in ACCOUNTS: this server's machine id (no profile key starts with ":")
# cursor: {"server", "names", "id"}: the account last found on the server by the names
# `users.plex` gives (see `_account_by_name`), kept for as long as those names stay configured
FOUND_BY_NAME = "account_found_by_name"
SERVER_TOKEN = "plex-server"  # store tokens: a person's token for this server, from plex.tv
# id cache: a pasted token's account on plex.tv and whether it is the server owner's, by the
# hash of that token and the server's (`ServerTokens.whose_pasted`)
PASTED = "plex-pasted"
PASTED_TTL = 365 * 86400.0  # a token's account never changes: a new token is a new lookup
UNANSWERED_TTL = 86400.0  # plex.tv did not say (a token for the server only; down): tomorrow
CLOCK_MARGIN = 600.0  # the server's clock may differ from ours by this much
LANDED_SLACK = 2.0  # Plex dates a view to the second, its clock read off a Date header
# history cursor of a server ignoring `accountID`: "all:TOTAL:NEWEST" of everyone's rows
UNFILTERED = "all:"
WATCHED_PREFIX = "watched:"
WRITTEN_PREFIX = "written:"
HISTORY_PREFIX = "history:"


# --------------------------------------------------------------------------- item keys


# Items are keyed by TMDB id, as every other side keys them (Trakt's sides, Serializd, AniList's
# mapping): an item Plex knows by an IMDb or TVDB id only (its legacy agents) would never meet
# its own plays on the other side, and is not linked (see `legacy_titles`).


def movie_key(ids: Ids) -> str | None:
    return f"movie:tmdb:{ids.tmdb}" if ids.tmdb else None


def show_key(ids: Ids, season: int | None = None) -> str | None:
    """A show (or one of its seasons) by TMDB id."""
    if not ids.tmdb:
        return None
    return f"show:tmdb:{ids.tmdb}" + (f":s{season}" if season is not None else "")


def episode_key(show_ids: Ids, season: int | None, number: int | None) -> str | None:
    if season is None or number is None or not show_ids.tmdb:
        return None
    return f"episode:tmdb:{show_ids.tmdb}:s{season}e{number}"


def legacy_titles(library: Library, anime_placed: bool = False) -> list[str]:
    """Movies and shows known by IMDb or TVDB ids only (Plex's legacy agents): not linked.
    `anime_placed`: HAMA's shows are linked through the anime mapping (an AniList link)."""
    return [
        item.title or item.rating_key
        for item in [*library.movies, *library.shows]
        if not item.ids.tmdb
        and (item.ids.imdb or item.ids.tvdb)
        and not (anime_placed and item.hama)
    ]


def unmatched_titles(library: Library, anime_placed: bool = False) -> list[str]:
    """Movies and shows with no TMDB, IMDb or TheTVDB id (unmatched in Plex, a `local://`
    guid, or an agent that gives none of them), outside libraries of personal media, whose
    items never have one: not linked. `anime_placed`: as for `legacy_titles` (HAMA's AniDB
    ids)."""
    return [
        item.title or item.rating_key
        for item in [*library.movies, *library.shows]
        if not (item.ids.tmdb or item.ids.imdb or item.ids.tvdb)
        and item.rating_key not in library.personal
        and not (anime_placed and item.hama)
    ]


def key_for_ref(ref: MediaRef) -> str | None:
    """The canonical key of an outbox row's item (as `sides.ref_for_key` built it)."""
    if ref.kind == "movie":
        return movie_key(ref.ids)
    if ref.kind == "show":
        return show_key(ref.ids)
    if ref.kind == "season":
        return show_key(ref.show_ids, ref.season)
    return episode_key(ref.show_ids, ref.season, ref.number)


@dataclass(frozen=True)
class Listed:
    """One listing a person's movies or episodes came from, and how many of its items they
    have watched (`viewCount` above 0) as it was read."""

    section: str
    kind: str  # "movie" or "episode"
    watched: int


@dataclass(frozen=True)
class Library:
    """The listings of one person's chosen libraries."""

    movies: Sequence[LibraryItem] = ()
    shows: Sequence[LibraryItem] = ()
    seasons: Sequence[LibraryItem] = ()
    episodes: Sequence[LibraryItem] = ()
    # the listings its movies and episodes came from
    listed: tuple[Listed, ...] = ()
    # ratingKeys listed from libraries of personal media (`Section.matches_nothing`)
    personal: frozenset[str] = frozenset()


def item_keys(
    library: Library,
    renumbered: Mapping[str, tuple[int, int]] | None = None,
    placed: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, LibraryItem]]:
    """ratingKey -> (canonical key, item) for every item that can be linked; `renumbered`:
    episodes keyed by the other side's (season, number) rather than Plex's; `placed`:
    episodes keyed by the anime mapping (HAMA's, which have no TMDB id)."""
    shows = {s.rating_key: s for s in library.shows}
    keyed: dict[str, tuple[str, LibraryItem]] = {}
    for movie in library.movies:
        if key := movie_key(movie.ids):
            keyed[movie.rating_key] = (key, movie)
    for show in library.shows:
        if key := show_key(show.ids):
            keyed[show.rating_key] = (key, show)
    for season in library.seasons:
        parent = shows.get(season.parent_rating_key or "")
        if parent is not None and (key := show_key(parent.ids, season.season)):
            keyed[season.rating_key] = (key, season)
    for episode in library.episodes:
        season_number, number = (renumbered or {}).get(
            episode.rating_key, (episode.season, episode.number)
        )
        key = episode_key(_show_ids(episode, shows), season_number, number)
        if key := key or (placed or {}).get(episode.rating_key):
            keyed[episode.rating_key] = (key, episode)
    return keyed


def _show_ids(episode: LibraryItem, shows: Mapping[str, LibraryItem]) -> Ids:
    parent = shows.get(episode.grandparent_rating_key or "")
    if parent is None:
        return episode.show_ids
    # legacy guids name the show too; new-agent episodes only have the listing's
    return parent.ids.merged(episode.show_ids) if episode.show_ids else parent.ids


TVDB_ORDERINGS = frozenset({"aired", "dvd", "absolute"})  # Plex's `showOrdering` values


def tvdb_ordered(library: Library) -> list[LibraryItem]:
    """The shows set to a TheTVDB episode ordering: their season and episode numbers are
    TVDB's, while the other side of a link (Trakt, Serializd) numbers its own way.
    (A library's own default ordering is not in its listing: only shows set one by one.)"""
    return [s for s in library.shows if s.ordering in TVDB_ORDERINGS]


@dataclass(frozen=True)
class Renumbering:
    """Episodes of shows in a TheTVDB ordering, as the other side of a link numbers them.

    `numbers`: ratingKey -> (season, number) there, found by the episode's own ids (or found
    before: an episode once found keeps its numbers while no other episode is found there).
    `since`: when each was first found. `withheld`: episodes not found whose Plex numbers name
    another episode there (one with an id of the same kind and another value); they are not
    linked until found. `placed`: HAMA episodes, keyed through the anime mapping. The other
    episodes keep Plex's numbers."""

    numbers: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    since: Mapping[str, float] = field(default_factory=dict)
    withheld: frozenset[str] = frozenset()
    # ratingKey -> item key: episodes of shows the HAMA anime agent names by AniDB or TheTVDB
    # id only, placed through the anime mapping for an AniList link (`watchbridge.hama`)
    placed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OwnOrder:
    """A show in a TheTVDB ordering that nothing renumbers: its title and Plex's ordering."""

    title: str
    ordering: str  # "aired" | "dvd" | "absolute"


@dataclass(frozen=True)
class Apart:
    """What a read found of the shows in a TheTVDB ordering that nothing renumbers (an
    AniList link with no Trakt or Serializd): the shows by TMDB id; the item keys of the
    episodes Plex lists at numbers that may name another episode on TMDB (`withheld`: not
    linked); of those, the ones watched in Plex, of shows the anime mapping knows."""

    shows: Mapping[str, OwnOrder] = field(default_factory=dict)
    withheld: frozenset[str] = frozenset()
    watched: frozenset[str] = frozenset()


# (TMDB show, TheTVDB show, season, number) -> whether both numberings name one episode there
SameNumbers = Callable[[int, int, int, int], bool]

_ORDERING_WORDS = {"aired": "aired", "dvd": "DVD", "absolute": "absolute"}
_EPISODE = re.compile(r"episode:tmdb:([^:]+):s(\d+)e(\d+)")


def own_orders(library: Library) -> dict[str, OwnOrder]:
    """The shows in a TheTVDB ordering, by TMDB id (those without one are not linked)."""
    return {
        show.ids.tmdb: OwnOrder(show.title or show.rating_key, show.ordering or "")
        for show in tvdb_ordered(library)
        if show.ids.tmdb
    }


def numbered_alike(show: LibraryItem, season: int, number: int, same: SameNumbers) -> bool:
    """Whether Plex's `season` and `number` of an episode of `show` (in a TheTVDB ordering)
    are TMDB's for the same episode. Absolute: season 1 is the show's episodes counted from
    its first, as TMDB's season 1 counts them. Aired: where the anime mapping places one
    AniList episode at both. DVD: nothing tells where TheTVDB's DVD order puts an episode."""
    if show.ordering == "absolute":
        return season == 1
    tmdb, tvdb = whole(show.ids.tmdb), whole(show.ids.tvdb)
    if show.ordering != "aired" or tmdb is None or tvdb is None:
        return False
    return same(tmdb, tvdb, season, number)


def numbered_apart_items(library: Library, same: SameNumbers) -> frozenset[str]:
    """The ratingKeys of the episodes and seasons of shows in a TheTVDB ordering whose Plex
    numbers may name another episode or season on TMDB (`numbered_alike`): linked by those
    numbers, AniList's episode would be written to another one, and Plex's play would be
    counted for another AniList episode. A season is alike only in an aired order, where its
    every episode is. Pure."""
    shows = {show.rating_key: show for show in tvdb_ordered(library)}
    apart: set[str] = set()
    seasons: dict[tuple[str, int], bool] = {}
    for episode in library.episodes:
        show = shows.get(episode.grandparent_rating_key or "")
        if show is None or episode.season is None or episode.number is None:
            continue
        alike = numbered_alike(show, episode.season, episode.number, same)
        if not alike:
            apart.add(episode.rating_key)
        where = (show.rating_key, episode.season)
        seasons[where] = seasons.get(where, True) and alike
    for season in library.seasons:
        show = shows.get(season.parent_rating_key or "")
        if show is None or season.season is None:
            continue
        alike = show.ordering == "aired" and seasons.get((show.rating_key, season.season), False)
        if not alike:
            apart.add(season.rating_key)
    return frozenset(apart)


def numbered_apart(other: Side, catalog: AbstractSet[str], apart: Apart) -> dict[str, Unmatched]:
    """The episodes of `apart.shows` (Plex numbers them in a TheTVDB ordering, and nothing
    renumbers them) the link cannot link: the other side's plays of those Plex has no episode
    at, or one that may be another episode (`apart.withheld`), and Plex's plays of the
    latter. By item key. Pure."""
    found: dict[str, Unmatched] = {}
    items = ({play.item for play in other.plays} - catalog) | apart.watched
    for item in items:
        match = _EPISODE.fullmatch(item)
        show = apart.shows.get(match.group(1)) if match else None
        if match is None or show is None:
            continue
        ordering = _ORDERING_WORDS.get(show.ordering, show.ordering)
        numbers = f"S{match.group(2)}E{match.group(3)}"
        if item in apart.withheld:
            why = {
                "dvd": "nothing places TMDB's episodes in TheTVDB's DVD order",
                "absolute": "only its season 1 counts episodes as TMDB's does",
            }.get(show.ordering, "the anime mapping does not place one AniList episode at both")
            reason = (
                f"Plex numbers {show.title!r} in TheTVDB's {ordering} order, whose {numbers} "
                f"may be another episode than TMDB's {numbers} ({why}): with no Trakt or "
                "Serializd to look it up in, its plays are not linked between AniList and Plex"
            )
        else:
            reason = (
                f"Plex numbers {show.title!r} in TheTVDB's {ordering} order, which has no "
                f"{numbers}: that is TMDB's number of the episode, and with no Trakt or "
                "Serializd to look its number up in, it is not written to Plex"
            )
        found[item] = Unmatched(reason, SERVER_ORDER)
    return found


def renumbering(
    library: Library,
    numbers: Mapping[str, EpisodeNumbers],
    remembered: Mapping[str, tuple[int, int, float]],
    now: float,
) -> Renumbering:
    """The Renumbering of the episodes of the shows in `numbers` (by the show's ratingKey).
    `remembered`: ratingKey -> (season, number, since) found by earlier reads. Pure."""
    episodes = [e for e in library.episodes if (e.grandparent_rating_key or "") in numbers]
    found: dict[str, tuple[int, int]] = {}
    for episode in episodes:
        if where := numbers_for(numbers[episode.grandparent_rating_key or ""], episode.ids):
            found[episode.rating_key] = where
    taken = {
        (e.grandparent_rating_key or "", found[e.rating_key])
        for e in episodes
        if e.rating_key in found
    }
    withheld: set[str] = set()
    for episode in episodes:
        rk, show = episode.rating_key, episode.grandparent_rating_key or ""
        if rk in found:
            continue
        kept = remembered.get(rk)
        if kept is not None and (show, kept[:2]) not in taken:
            found[rk] = kept[:2]
        elif _names_another(numbers[show], episode):
            withheld.add(rk)
    since = {rk: remembered[rk][2] if rk in remembered else now for rk in found}
    return Renumbering(found, since, frozenset(withheld))


def _names_another(numbers: EpisodeNumbers, episode: LibraryItem) -> bool:
    """Whether the other side lists an episode at this one's Plex numbers that is another
    episode: it has an id of a kind this one has too, with another value."""
    there = {
        name: value
        for (name, value), at in numbers.items()
        if at == (episode.season, episode.number)
    }
    return any(getattr(episode.ids, name) not in (None, value) for name, value in there.items())


def numbered_listings(
    listings: Mapping[str, Sequence[Mapping[str, object]]], renumbering: Renumbering
) -> Mapping[str, Sequence[Mapping[str, object]]]:
    """The raw listings with episodes numbered as the link numbers them, withheld ones left
    out: what the collection run sends to Trakt by show, season and number."""
    if not renumbering.numbers and not renumbering.withheld:
        return listings
    episodes: list[Mapping[str, object]] = []
    for row in listings.get("episode", ()):
        rating_key = str(row.get("ratingKey"))
        if rating_key in renumbering.withheld:
            continue
        if rating_key in renumbering.numbers:
            season, number = renumbering.numbers[rating_key]
            row = {**row, "parentIndex": season, "index": number}
        episodes.append(row)
    return {**listings, "episode": episodes}


# --------------------------------------------------------------------------- plays (pure)


@dataclass(frozen=True)
class Written:
    """A play we put into Plex: the time it came from, when we scrobbled (every attempt, by
    our clock; empty when Plex already showed it watched after that time), how far the
    server's clock was ahead of ours then (`skew`: it dates the scrobble's history row),
    whether the last scrobble's outcome is still unknown (`pending`), whether the play was
    removed since, whether its row was given up before it landed (`unlanded`: never
    written, no play of the item; a later row of the play writes it), the outbox row
    that wrote it (`row`; None: written by a release that kept none), and whether its last
    try went to a server whose scrobbles write no history row (`rowless`: PMS 1.40.0.7998 on,
    `PlexClient.rowless_scrobbles`): no row is then its echo, and its landing shows in
    `lastViewedAt` alone."""

    rating_key: str
    item: str
    at: float
    attempts: tuple[float, ...] = ()
    pending: bool = False
    removed: bool = False
    forgotten: bool = False  # copied to an episode since renumbered: no play of it (build_side)
    skew: float | None = None  # None: written by a release that kept none
    unlanded: bool = False
    row: int | None = None
    rowless: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rating_key": self.rating_key,
            "item": self.item,
            "at": self.at,
            "attempts": list(self.attempts),
            "pending": self.pending,
            "removed": self.removed,
            "forgotten": self.forgotten,
            "skew": self.skew,
            "unlanded": self.unlanded,
            "row": self.row,
            "rowless": self.rowless,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Written:
        return cls(
            str(data["rating_key"]),
            str(data["item"]),
            float(data["at"]),
            tuple(float(t) for t in data.get("attempts") or ()),
            bool(data.get("pending")),
            bool(data.get("removed")),
            bool(data.get("forgotten")),
            None if data.get("skew") is None else float(data["skew"]),
            bool(data.get("unlanded")),
            None if data.get("row") is None else int(data["row"]),
            bool(data.get("rowless")),
        )

    def landed(self, viewed_at: float | None, skew: float, first_row: float | None = None) -> bool:
        """Whether a scrobble of this write took, by the item's `lastViewedAt` (the server's
        clock, `skew` ahead of ours now): viewed since its last try. `first_row`: the
        person's first history row of the copy since that try (`tried_at`), where the history
        tells (None: not asked, or no history to ask): a scrobble that took made its row at
        the try, so a first view later than ECHO_WINDOW after it is a viewing of the user's
        (a dead letter tried again days after they watched the item in Plex), not ours. On a
        server whose scrobbles make no row (`rowless`) a row since the try, unless at the try
        itself (ROWLESS_ECHO), is the user's: the item is watched since by them, and the play
        is not scrobbled over it (its retry finds it "already watched in Plex"), while a view
        since with no row is ours."""
        if not viewed_since(viewed_at, self.tried_at(skew), 0.0):
            return False
        window = ROWLESS_ECHO if self.rowless else ECHO_WINDOW
        return first_row is None or first_row <= self.tried_at(skew) + window

    def tried_at(self, skew: float) -> float:
        """The last try (else the play's time) on the server's clock as it was at the write
        (`skew`: as it is now, for a write of a release that kept none)."""
        at_write = skew if self.skew is None else self.skew
        return (self.attempts[-1] if self.attempts else self.at) + at_write


def viewed_since(viewed_at: float | None, since: float, skew: float) -> bool:
    """Whether an item's `lastViewedAt` (the server's clock, `skew` ahead of ours) is at or
    after `since` (our clock), within the second Plex dates a view to. Pure."""
    return viewed_at is not None and viewed_at - skew >= since - LANDED_SLACK


def viewed_by(viewed_at: float, until: float | None, skew: float) -> bool:
    """Whether a view (the server's clock) is at or before `until` (ours; None: no bound),
    within the second Plex dates a view to. Pure."""
    return until is None or viewed_at - skew <= until + LANDED_SLACK


def written_record(rating_key: str, at: float) -> str:
    return f"{WRITTEN_PREFIX}{rating_key}:{int(at // 60)}"


def written_back(
    loaded: Mapping[str, Written], learnt: Mapping[str, Written], stored: Mapping[str, Written]
) -> dict[str, Written]:
    """The records of our writes a read writes back (pure): those it changed or added
    (`learnt`, from what it `loaded`), each only while the store still holds it as loaded.
    The deliverer writes a record down before and after each scrobble, also while a link run
    reads (the service runs both; a `watchbridge sync` beside it is another process): one
    `stored` since the read loaded it is newer than the read's and stands (the next read
    judges it). Put back, the read's would take away a try (its history row read as a new
    play "today") or the answer (a write left pending)."""
    # The rule of `read_back`; a record left out of `learnt` is not taken out here.
    back: dict[str, Written] = read_back(loaded, learnt, stored).put
    return back


@dataclass(frozen=True)
class ReadBack:
    """The entries of a mirror collection a read writes (`put`) and takes out (`taken`)."""

    put: dict[str, Any]
    taken: list[str]


def read_back(
    loaded: Mapping[str, Any], read: Mapping[str, Any], stored: Mapping[str, Any]
) -> ReadBack:
    """What a read writes back of a map the deliverer writes too (`plex/keys`, `plex/plays`)
    (pure): the entries its read (`read`) changed, added or left out, from what it `loaded`
    before it listed, each only while the store still holds it as loaded. The deliverer
    unwatches an item (its `watched_at` cleared) and takes out the play it removed, also
    while a link run reads (the service runs both; a `watchbridge sync` beside it is another
    process): what it `stored` since is newer than a listing that may predate it, and stands
    until the next read. Put back, an item shown watched made a later play of it skip as
    "already watched in Plex" (the next read finds it unwatched and removes that play on the
    other side); a removed play put back kept its item watched when the last other play of
    it was removed."""
    as_loaded = {key for key in {*loaded, *read} if stored.get(key) == loaded.get(key)}
    return ReadBack(
        {
            key: entry
            for key, entry in read.items()
            if entry != loaded.get(key) and key in as_loaded
        },
        [key for key in loaded if key not in read and key in as_loaded],
    )


@dataclass(frozen=True)
class MaybeSent:
    """A play row to Plex marked possibly sent (a backup copy put back: it may have gone out
    after the copy was taken, and the copy holds no record of the write), or queued before
    this process opened the database (`QueuedPlay.may_have_landed`): its item key, the play's
    time, the row, when it was queued and the latest a view of its write can be (our clock;
    None: any view since it was queued, `QueuedPlay.landed_by`)."""

    item: str
    at: float
    row: int
    queued_at: float
    landed_by: float | None = None


@dataclass(frozen=True)
class PlayRows:
    """The plays (item key, time to the second) whose rows to Plex may still be sent: waiting
    (pending or in flight) or dead letters, which `deadletters retry` may send; and those of
    them marked possibly sent (`maybe_sent`)."""

    waiting: frozenset[tuple[str, int]] = frozenset()
    dead: frozenset[tuple[str, int]] = frozenset()
    maybe_sent: tuple[MaybeSent, ...] = ()

    @staticmethod
    def play(item: str, at: float) -> tuple[str, int]:
        return item, round(at)


def settle_pending(
    written: Written,
    rows: PlayRows,
    keyed: Mapping[str, tuple[str, LibraryItem]],
    skew: float,
    views: Mapping[str, Sequence[float]] | None = None,
) -> Written:
    """A write whose outcome is unknown, settled by the listing once its row is no longer
    waiting: the item viewed since its last try (and, by its history, `views`: ratingKey ->
    the person's rows, first at the try: `Written.landed`), it landed (a write like any
    other, which an unwatch undoes); not, a dead letter still counts as on its way (its retry
    looks before it writes), and a row gone (discarded, pruned) never wrote it: `unlanded`. A
    write of an item not listed (its library left out for a while) tells nothing, and waits."""
    play = PlayRows.play(written.item, written.at)
    if not written.pending or play in rows.waiting or written.rating_key not in keyed:
        return written
    since = written.tried_at(skew) - LANDED_SLACK
    seen = (views or {}).get(written.rating_key, ())
    first_row = min((v for v in seen if v >= since), default=None)
    if written.landed(keyed[written.rating_key][1].last_viewed_at, skew, first_row):
        return replace(written, pending=False)
    if play in rows.dead:
        return written
    return replace(written, pending=False, unlanded=True)


def sent_after_the_copy(
    written: Mapping[str, Written],
    maybe_sent: Iterable[MaybeSent],
    keyed: Mapping[str, tuple[str, LibraryItem]],
    history: Iterable[HistoryEntry],
    skew: float,
    rowless: bool = False,
) -> dict[str, Written]:
    """Our writes with those of rows marked possibly sent that Plex shows landed: a copy of
    the item watched now, viewed at or after the row was queued (the earliest such view, a
    history row or else `lastViewedAt`), is taken for the row's scrobble, made after the
    backup copy was taken (its record is not in the copy). Recorded as a write made at that
    view, its history row is our echo and the play reads back at the time it came from, never
    as a new play "today". A view the user made in Plex after the row was queued is taken
    for ours too (merged into the play, not copied); for a row queued before this process
    opened the database, only one made before then (`MaybeSent.landed_by`). A record that
    knows the view already, or that was removed or forgotten since, is left as it is.
    `rowless`: the server writes no history row for a scrobble (PMS 1.40.0.7998 on), so a
    row since the row was queued is the user's viewing, never ours: the write is taken as
    made (not sent over their viewing, as "already watched in Plex") with no view of its
    own, and their row stays their play; only a `lastViewedAt` with no row since is ours. Pure."""
    copies: dict[str, list[str]] = defaultdict(list)
    for rk, (key, item) in keyed.items():
        if item.view_count > 0:
            copies[key].append(rk)
    views: dict[str, list[float]] = defaultdict(list)
    for h in history:
        views[h.rating_key].append(h.viewed_at)
    found = dict(written)
    for sent in maybe_sent:
        for rk in copies.get(sent.item, ()):
            seen = [*views.get(rk, ()), keyed[rk][1].last_viewed_at]
            since = [
                v
                for v in seen
                if viewed_since(v, sent.queued_at, skew) and viewed_by(v, sent.landed_by, skew)
            ]
            if not since:
                continue
            view = min(v for v in since if v is not None)
            # On a rowless server the first view since is a row only when it is the user's.
            theirs = rowless and any(v in since for v in views.get(rk, ()))
            record = written_record(rk, sent.at)
            known = found.get(record)
            if known is not None and (known.removed or known.forgotten):
                continue
            if theirs and known is not None and not known.unlanded and known.item == sent.item:
                continue  # no view of ours to add: the record stands as it is
            if theirs:
                found[record] = Written(
                    rk, sent.item, sent.at, skew=skew, row=sent.row, rowless=True
                )
                continue
            if known is not None and not known.unlanded and known.item == sent.item:
                at_write = skew if known.skew is None else known.skew
                if any(abs(view - (t + at_write)) <= ECHO_WINDOW for t in known.attempts):
                    continue
                # Dated as its other attempts are (`at_write`): its echo is this view.
                attempts = tuple(sorted((*known.attempts, view - at_write)))
                found[record] = replace(known, attempts=attempts, pending=False)
                continue
            found[record] = Written(
                rk, sent.item, sent.at, (view - skew,), skew=skew, row=sent.row, rowless=rowless
            )
    return found


@dataclass(frozen=True)
class Memory:
    """What the reader remembers between reads about one person's plays."""

    written: Mapping[str, Written] = field(default_factory=dict)
    synthetic: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    retired: frozenset[str] = frozenset()
    before: Mapping[str, Written] = field(default_factory=dict)  # WRITTEN_BEFORE


@dataclass(frozen=True)
class LastRead:
    """What the last read of one person's side kept: its plays (record -> {"item", "at",
    "rating_key", and "row_key": the ratingKey the play's history row still names after a
    rescan replaced it}) and the ratingKeys the libraries listed."""

    plays: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    listed: AbstractSet[str] = frozenset()

    def items(self) -> dict[str, str]:
        """record -> the item it was a play of."""
        return {record: str(v.get("item")) for record, v in self.plays.items()}

    def items_by_key(self) -> dict[str, str]:
        """ratingKey -> the item it was."""
        return {
            str(v["rating_key"]): str(v["item"]) for v in self.plays.values() if "rating_key" in v
        }

    def moved(self) -> dict[str, str]:
        """old ratingKey -> new, of the history rows naming a key a rescan replaced."""
        return {
            str(v["row_key"]): str(v["rating_key"]) for v in self.plays.values() if "row_key" in v
        }


@dataclass(frozen=True)
class Mirrored:
    """`plex/keys` and `plex/plays` as a read loads them, before it lists the libraries: what
    the last read kept, and what the deliverer changes in them while this one reads
    (`read_back`)."""

    keys: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    plays: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Those found not whole (a write of them cut short), loaded as empty: the last read's
    # record is not known.
    partial: frozenset[str] = frozenset()

    def last_read(self) -> LastRead:
        listed = {str(rk) for v in self.keys.values() for rk in v.get("rating_keys", [])}
        return LastRead(self.plays, listed)


@dataclass(frozen=True)
class Built:
    side: Side
    memory: Memory
    plays: dict[str, dict[str, Any]]  # record -> {"item", "at", "rating_key"}
    keys: dict[str, dict[str, Any]]  # item key -> {"rating_keys", "watched_at"}
    # ratingKey, plex:// guid -> key: SideRead.aliases
    aliases: dict[str, str] = field(default_factory=dict)


def build_side(
    library: Library,
    history: Iterable[HistoryEntry],
    memory: Memory,
    with_ratings: bool,
    listed_at: float | None = None,
    renumbering: Renumbering | None = None,
    last: LastRead | None = None,
    skew: float = 0.0,
    on_their_way: PlayRows | None = None,
    rowless: bool = False,
) -> Built:
    """One person's Plex side from their listings, history and what we remember. Pure.

    `listed_at`: when the listings were taken; a history row after it (less a margin for the
    server's clock) may be a play the listing missed, so it is never retired. `renumbering`:
    episodes keyed by the other side's numbers, or withheld (see `Renumbering`). `last`: what
    the last read kept; a play of a record now of another item (Fix Match in Plex: same
    ratingKey and history, new guid) moves like a renumbered one. `skew`: how far the
    server's clock (which dates its rows) is ahead of ours (which dates our writes and
    `listed_at`); the plays of its rows are dated on ours (`on_our_clock`). `on_their_way`:
    the plays whose rows may still be sent, read before `memory` (None: not known, as if
    all were waiting): a write whose outcome is unknown is settled once its row is not
    (`settle_pending`). `rowless`: the server writes no history row for a scrobble now
    (`PlexClient.rowless_scrobbles`), for the rows marked possibly sent
    (`sent_after_the_copy`)."""
    renumbering, last = renumbering or Renumbering(), last or LastRead()
    keyed = item_keys(library, renumbering.numbers, renumbering.placed)
    keys_before, record_items = last.items_by_key(), last.items()
    # A rescan that re-added an item (a replaced file) gave it a new ratingKey: what we knew
    # by the old one is the new one's.
    moved = {old: new for old, new in last.moved().items() if new in keyed}
    moved |= _moved_keys(keyed, {**_written_items(memory), **keys_before}, last.listed)
    row_keys = {HISTORY_PREFIX + h.id: h.rating_key for h in history if h.rating_key in moved}
    if moved:
        history = [replace(h, rating_key=moved.get(h.rating_key, h.rating_key)) for h in history]
        memory = _rekeyed(memory, moved)
    memory = _carried_over(memory, keyed, history, skew)
    # A copy of a title gone while another is listed (a 4K edition deleted): the plays its
    # history rows hold are still the title's (the count and unwatches of the copy left are
    # its own).
    listed_items = {key for key, _ in keyed.values()}
    gone_copies = {
        old: item
        for old, item in keys_before.items()
        if old not in keyed and old not in moved and item in listed_items
    }
    # Episodes not keyed by Plex's numbers now: their plays may have been keyed otherwise
    # before (by Plex's numbers then, which may have been other numbers than today's; a
    # HAMA episode by what the anime mapping said then).
    renumbered = {*renumbering.numbers, *renumbering.withheld, *renumbering.placed} & set(keyed)
    plex_numbered = _plex_numbered(library, renumbered)
    watched = {rk for rk, (_, item) in keyed.items() if item.view_count > 0}
    # Only unwatching undoes a write of ours: an item unmatched in Plex (listed, no TMDB id)
    # is still watched, and one not listed (a library left out for a while) tells nothing.
    unwatched = {i.rating_key for i in (*library.movies, *library.episodes) if i.view_count == 0}
    rows = [h for h in history if h.rating_key in keyed]
    plays: list[tuple[Play, str]] = []

    # Retire what an unwatch took away: those rows and writes never come back. (Rows are
    # dated by the server's clock, our writes by ours.)
    settled = float("inf") if listed_at is None else listed_at - CLOCK_MARGIN
    retired = set(memory.retired) | {
        h.id for h in rows if h.rating_key not in watched and h.viewed_at < settled + skew
    }
    if on_their_way is not None and on_their_way.maybe_sent:
        found = sent_after_the_copy(
            memory.written, on_their_way.maybe_sent, keyed, history, skew, rowless
        )
        memory = replace(memory, written=found)
    if on_their_way is not None:
        views: dict[str, list[float]] = defaultdict(list)
        for h in rows:
            views[h.rating_key].append(h.viewed_at)
        settled_writes = {
            r: settle_pending(w, on_their_way, keyed, skew, views)
            for r, w in memory.written.items()
        }
        memory = replace(memory, written=settled_writes)
    written = {
        record: _forget(
            replace(w, removed=True) if _unwatched(w, unwatched, settled) else w,
            keyed,
            renumbering,
        )
        for record, w in memory.written.items()
    }
    echoes = _echoes(rows, written.values(), skew)
    # Unwatched and watched again since the last read: the plays before the unwatch are the
    # oldest of more than the item's view count.
    counted = [h for h in rows if h.id not in retired and h.viewed_at < settled + skew]
    old_rows, old_writes = _before_the_count(keyed, counted, written, echoes, settled, skew)
    retired |= old_rows
    written = {r: replace(w, removed=True) if r in old_writes else w for r, w in written.items()}
    for record, w in written.items():
        if not w.removed and not w.forgotten and not w.unlanded and w.rating_key in keyed:
            plays.append((Play(keyed[w.rating_key][0], w.at, record), w.rating_key))
    ahead = on_our_clock(skew)
    for h in rows:
        if h.rating_key in watched and h.id not in retired and h.id not in echoes:
            item = keyed[h.rating_key][0]
            plays.append((Play(item, h.viewed_at - ahead, HISTORY_PREFIX + h.id), h.rating_key))
    for h in history:
        if h.rating_key in gone_copies and h.id not in retired:
            item = gone_copies[h.rating_key]
            plays.append((Play(item, h.viewed_at - ahead, HISTORY_PREFIX + h.id), h.rating_key))

    synthetic: dict[str, Mapping[str, Any]] = {
        record: s for record, s in memory.synthetic.items() if s["rating_key"] in watched
    }
    # (A write that never landed accounts for nothing: the item's views are the user's own.)
    accounted = {rk for _, rk in plays}
    accounted |= {w.rating_key for w in written.values() if not w.unlanded}
    accounted |= {s["rating_key"] for s in synthetic.values()}
    for rk in sorted(watched - accounted):
        at = keyed[rk][1].last_viewed_at
        if at is not None:
            synthetic[f"{WATCHED_PREFIX}{rk}:{int(at)}"] = {"rating_key": rk, "at": at}
    for record, s in synthetic.items():
        if not s.get("removed"):
            at = float(s["at"]) - ahead  # `lastViewedAt`, by the server's clock
            plays.append((Play(keyed[s["rating_key"]][0], at, record), s["rating_key"]))

    # Plays of withheld episodes wait until the other side lists them.
    linked = _without_copies([(p, rk) for p, rk in plays if rk not in renumbering.withheld])
    listed = [entry for rk, entry in keyed.items() if rk not in renumbering.withheld]
    unsure = _unsure_ratings([keyed[rk][1] for rk in renumbered], renumbering.since)
    side = Side(
        tuple(p for p, _ in linked),
        _ratings((e for e in listed if e[1].rating_key not in unsure), skew)
        if with_ratings
        else {},
        catalog=frozenset(key for key, _ in listed),
        show_titles={
            key: item.title
            for key, item in listed
            if item.type == "show" and item.title and item.user_rating is not None
        },
        renumbered=frozenset(
            p.record
            for p, rk in plays
            if rk in renumbered or record_items.get(p.record, p.item) != p.item
        ),
        # Not removals: the play each copied is copied again.
        forgotten=tuple(
            Play(w.item, w.at, r)
            for r, w in written.items()
            if w.forgotten or (w.unlanded and not w.removed)
        ),
        renumbered_ratings=frozenset(
            key for rk in unsure for key in (plex_numbered.get(rk, ""), keyed[rk][0]) if key
        ),
    )
    return Built(
        side,
        Memory(written, synthetic, frozenset(retired), memory.before),
        {  # `row_key`: the ratingKey the play's history row still names, if another
            p.record: {"item": p.item, "at": p.at, "rating_key": rk}
            | ({"row_key": row_keys[p.record]} if p.record in row_keys else {})
            for p, rk in linked
        },
        _key_map(listed),
        {**_guid_aliases(listed), **_rating_key_aliases(listed)},
    )


def on_our_clock(skew: float) -> float:
    """What to take off a time the server dated (a history row, `lastViewedAt`) to date it
    on our clock, as a webhook's play of the same viewing is, and the plays we wrote: `skew`
    to the minute (plays are matched by the minute; a skew read a second apart from one run
    to the next leaves the times as they were)."""
    return 60.0 * round(skew / 60.0)


def _guid_aliases(listed: Iterable[tuple[str, LibraryItem]]) -> dict[str, str]:
    """plex:// guid -> key of every movie and episode: a webhook play still waiting to be
    delivered names an episode by its own ids and guid only (the show's ids are looked up
    when it is delivered), on whichever server it was played."""
    return {
        item.ids.plex_guid: key
        for key, item in listed
        if item.ids.plex_guid and item.type in ("movie", "episode")
    }


def _rating_key_aliases(listed: Iterable[tuple[str, LibraryItem]]) -> dict[str, str]:
    """ratingKey -> key of every movie and episode: a webhook play still waiting to be
    delivered names its item by this server's ratingKey (`source_key`) and the ids Plex gave
    it then, which may not be the key the link reads it under now: an episode renumbered as
    the other side numbers it, or a title whose library left a legacy agent since (the play
    names it by its TheTVDB or IMDb id, the link by its TMDB id; Plex keeps its ratingKey)."""
    return {item.rating_key: key for key, item in listed if item.type in ("movie", "episode")}


def _plex_numbered(library: Library, rating_keys: AbstractSet[str]) -> dict[str, str]:
    """The keys Plex's own numbers give these episodes (only these: a library holds tens of
    thousands of episodes, a renumbered show a few hundred)."""
    shows = {s.rating_key: s for s in library.shows}
    return {
        e.rating_key: key
        for e in library.episodes
        if e.rating_key in rating_keys
        and (key := episode_key(_show_ids(e, shows), e.season, e.number))
    }


def _unsure_ratings(episodes: Iterable[LibraryItem], since: Mapping[str, float]) -> set[str]:
    """The renumbered episodes rated before they were renumbered: such a rating may be one we
    copied from the other side's old episode, so it is not linked (nor read as removed) until
    the episode is rated again."""
    return {
        e.rating_key
        for e in episodes
        if e.user_rating is not None
        and (e.last_rated_at or 0.0) < since.get(e.rating_key, float("inf"))
    }


def _forget(
    written: Written, keyed: Mapping[str, tuple[str, LibraryItem]], renumbering: Renumbering
) -> Written:
    """A write of ours to an item keyed otherwise since it was made (it names another item
    than the item's key now: an episode renumbered, a HAMA episode placed elsewhere or matched
    away from HAMA by a Fix Match, any title matched again; or the episode is withheld)
    copied the other side's play of another item: it is no play of this one, and is left out
    from then on, even if the item goes back to its old key's numbers (not read as removed:
    the play it copied is added again, to the right item). Never re-keyed: a play we wrote
    stays the play of the item it was written for. A forgotten write naming the item's key
    again is its play."""
    rk = written.rating_key
    if rk in renumbering.withheld:
        return written if written.forgotten else replace(written, forgotten=True)
    now = keyed.get(rk)
    if now is None:
        return written
    if now[0] == written.item:
        return replace(written, forgotten=False) if written.forgotten else written
    return written if written.forgotten else replace(written, forgotten=True)


def _unwatched(written: Written, unwatched: AbstractSet[str], settled: float) -> bool:
    """A write of ours whose item the listing shows unwatched (`unwatched`: ratingKeys), keyed
    or not, and not one the listing may predate. A write whose last scrobble's outcome is
    unknown (`pending`: its answer lost, its row waiting to be tried again) is no unwatch,
    however long ago it was tried: unwatched, it did not land, and its retry writes it (read
    as removed, the link would remove the play it copied from the other side first)."""
    recent = bool(written.attempts) and written.attempts[-1] >= settled
    unknown = written.pending or written.unlanded  # no write of ours that the user undid
    return written.rating_key in unwatched and not (written.removed or unknown or recent)


def _written_items(memory: Memory) -> dict[str, str]:
    return {w.rating_key: w.item for w in memory.written.values()}


def _moved_keys(
    keyed: Mapping[str, tuple[str, LibraryItem]],
    items_before: Mapping[str, str],
    listed_before: AbstractSet[str],
) -> dict[str, str]:
    """Old ratingKey -> new one, for items the last read listed (`listed_before`) under the key
    they had (`items_before`: ratingKey -> item key) and this one lists under exactly one
    other, new since: one listed then is another copy of the title (a 4K edition in another
    library), whose plays and view count are its own; a key gone before the last read is a
    deleted copy's, not the new one's."""
    listed: dict[str, list[str]] = defaultdict(list)
    for rk, (key, _) in keyed.items():
        if rk not in listed_before:
            listed[key].append(rk)
    return {
        old: listed[item][0]
        for old, item in items_before.items()
        if old not in keyed and old in listed_before and len(listed.get(item, ())) == 1
    }


def _rekeyed(memory: Memory, moved: Mapping[str, str]) -> Memory:
    def new(rk: str) -> str:
        return moved.get(rk, rk)

    return Memory(
        {r: replace(w, rating_key=new(w.rating_key)) for r, w in memory.written.items()},
        {r: {**s, "rating_key": new(str(s["rating_key"]))} for r, s in memory.synthetic.items()},
        memory.retired,
        memory.before,
    )


def _carried_over(
    memory: Memory,
    keyed: Mapping[str, tuple[str, LibraryItem]],
    history: Iterable[HistoryEntry],
    skew: float,
) -> Memory:
    """Our writes to the server read before (`memory.before`), taken as writes to this one
    where it shows their scrobble: a copy of the same title viewed within ECHO_WINDOW of one
    (a history row, else `lastViewedAt`; dated by the old server's clock, as a migration keeps
    them). A server moved to new hardware keeps its history under new ratingKeys and ids, and
    the plays we copied into it would read as new plays dated the day we copied them (a
    second play on the other side): they read back at the time they came from, as before.
    Each write takes one copy (a 4K and an HD copy were written apart). Writes it does not
    show wait for a read that does (a history imported later); only a scrobble is ever
    shown, so a write that made none is dropped."""
    if not memory.before:
        return memory
    copies: dict[str, list[str]] = defaultdict(list)
    viewed: dict[str, set[float]] = defaultdict(set)
    for rk, (key, item) in sorted(keyed.items()):
        copies[key].append(rk)
        if item.last_viewed_at is not None:
            viewed[rk].add(item.last_viewed_at)
    for h in history:
        viewed[h.rating_key].add(h.viewed_at)
    written, waiting = dict(memory.written), {}
    taken: dict[tuple[str, float], set[str]] = defaultdict(set)  # the copies each play took
    for w in written.values():
        taken[w.item, w.at].add(w.rating_key)
    for record, w in sorted(memory.before.items()):
        at_write = skew if w.skew is None else w.skew
        made = [t + at_write for t in w.attempts]
        shown = next(
            (
                rk
                for rk in copies.get(w.item, ())
                if rk not in taken[w.item, w.at]
                and any(abs(v - t) <= ECHO_WINDOW for v in viewed[rk] for t in made)
            ),
            None,
        )
        if shown is not None:
            written[written_record(shown, w.at)] = replace(w, rating_key=shown, pending=False)
            taken[w.item, w.at].add(shown)
        elif made:
            waiting[record] = w
    return replace(memory, written=written, before=waiting)


def _before_the_count(
    keyed: Mapping[str, tuple[str, LibraryItem]],
    rows: Iterable[HistoryEntry],
    written: Mapping[str, Written],
    echoes: AbstractSet[str],
    settled: float,
    skew: float,
) -> tuple[set[str], set[str]]:
    """History rows and writes of ours (records) beyond a watched item's view count, oldest
    first: an unwatch resets the count and keeps the rows, so with the item watched again
    they are the plays it took away. On the server's clock; only `rows` and writes the
    listing counted (before `settled`, on our clock)."""
    plays: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for h in rows:
        if h.id not in echoes:
            plays[h.rating_key].append((h.viewed_at, "row", h.id))
    for record, w in written.items():
        counted = w.attempts and w.attempts[-1] < settled and not w.pending
        if counted and not w.removed and not w.forgotten and not w.unlanded:
            at_write = skew if w.skew is None else w.skew
            plays[w.rating_key].append((w.attempts[-1] + at_write, "write", record))
    old_rows: set[str] = set()
    old_writes: set[str] = set()
    for rk, seen in plays.items():
        count = keyed[rk][1].view_count if rk in keyed else len(seen)
        if 0 < count < len(seen):
            for _, kind, ident in sorted(seen)[: len(seen) - count]:
                (old_rows if kind == "row" else old_writes).add(ident)
    return old_rows, old_writes


def _echoes(rows: Iterable[HistoryEntry], written: Iterable[Written], skew: float) -> set[str]:
    """History rows our own scrobbles made: near a scrobble on the server's clock, as it was
    when we wrote (or, for a write of an older release, which kept none, as it is now). A
    scrobble to a server that writes no row for it (`Written.rowless`) made none: a row minutes
    from it is the user's own viewing; one at the moment of it (ROWLESS_ECHO) is still ours."""
    attempts: dict[str, set[tuple[float, float]]] = defaultdict(set)
    for w in written:
        at_write = skew if w.skew is None else w.skew
        window = ROWLESS_ECHO if w.rowless else ECHO_WINDOW
        attempts[w.rating_key] |= {(t + at_write, window) for t in w.attempts}
    return {
        h.id
        for h in rows
        if any(abs(h.viewed_at - t) <= near for t, near in attempts.get(h.rating_key, ()))
    }


def _view_titles(library: Library) -> dict[str, str]:
    """A title for each movie and episode of `library` by ratingKey (an episode's with its
    show's and numbers), as an alert names an example view."""
    shows = {show.rating_key: show.title or "" for show in library.shows}
    titles = {m.rating_key: m.title or f"movie {m.rating_key}" for m in library.movies}
    for episode in library.episodes:
        show = shows.get(episode.grandparent_rating_key or "", "") or "a show"
        numbered = (
            f" S{episode.season:02d}E{episode.number:02d}"
            if episode.season is not None and episode.number is not None
            else ""
        )
        titles[episode.rating_key] = f"{show}{numbered}"
    return titles


def _without_copies(plays: list[tuple[Play, str]]) -> list[tuple[Play, str]]:
    """One play where copies of one item (several libraries) were watched at the same time,
    or where a history row turned up for a play first read from the watched flag: the play we
    knew first keeps its record (a changed record would look like a removal)."""

    def rank(play: Play) -> tuple[int, str]:
        first_known = (WRITTEN_PREFIX, WATCHED_PREFIX)
        return next((n for n, p in enumerate(first_known) if play.record.startswith(p)), 2), (
            play.record
        )

    kept: list[tuple[Play, str]] = []
    cluster: list[tuple[Play, str]] = []
    for entry in sorted(plays, key=lambda x: (x[0].item, x[0].at, x[0].record)):
        play = entry[0]
        if cluster and (
            cluster[0][0].item != play.item or play.at - cluster[0][0].at > DUPLICATE_WINDOW
        ):
            kept.append(min(cluster, key=lambda x: rank(x[0])))
            cluster = []
        cluster.append(entry)
    if cluster:
        kept.append(min(cluster, key=lambda x: rank(x[0])))
    return kept


def _ratings(keyed: Iterable[tuple[str, LibraryItem]], skew: float) -> dict[str, Rated]:
    """The ratings of the listed items, dated on our clock (`skew`: the server's is ahead by
    that): the newer rating wins a conflict, and a server hours ahead made ours win it."""
    scores: dict[str, Rated] = {}
    for key, item in keyed:
        value = ratings.from_ten(item.user_rating)
        if value is None:
            continue
        at = item.last_rated_at - skew if item.last_rated_at else 0.0
        if key not in scores or scores[key].at < at:
            scores[key] = Rated(value, at)
    return scores


def _key_map(keyed: Iterable[tuple[str, LibraryItem]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for key, item in keyed:
        entry = found.setdefault(key, {"rating_keys": [], "watched_at": None})
        entry["rating_keys"].append(item.rating_key)
        if item.view_count > 0 and item.last_viewed_at is not None:
            entry["watched_at"] = max(entry["watched_at"] or 0.0, item.last_viewed_at)
    return found


def choose_sections(
    sections: Sequence[Section],
    names: Sequence[str],
    profile: str,
    on_server: Sequence[Section] | None = None,
    owner: bool = True,
) -> list[Section]:
    """The libraries named in config (every movie and show library when none are named), as
    `profile` sees them (`sections`). A name the server does not have is a config error (the
    owner sees every library; for anyone else `on_server`, what the server's own token sees,
    tells, when known); one it did not share with this person is left out for them alone."""
    usable = [s for s in sections if s.type in ("movie", "show")]
    if not names:
        return usable
    by_title = {same_name(s.title): s for s in usable}
    server = usable if owner else [s for s in on_server or () if s.type in ("movie", "show")]
    if owner or on_server is not None:
        known = {same_name(s.title) for s in server}
        unknown = [n for n in names if same_name(n) not in known]
        if unknown:
            seen = ", ".join(s.title for s in server) or "none"
            raise ConfigError(
                f"services.plex.libraries: the Plex server has no movie or show library named "
                f"{', '.join(repr(n) for n in unknown)} (libraries: {seen})"
            )
    unshared = [n for n in names if same_name(n) not in by_title]
    if unshared:
        log.warning(
            "plex libraries not shared with this person are left out for them",
            extra={"profile": profile, "libraries": ", ".join(unshared)},
        )
    return [by_title[same_name(n)] for n in names if same_name(n) in by_title]


# --------------------------------------------------------------------------- who is reading


@dataclass(frozen=True)
class Access:
    """How one profile reaches its own Plex state."""

    token: str | None  # None: the server token (the owner)
    account_id: str | None  # server-local id for the history; None: unknown


TokenKind = Literal["owner", "pasted", "signed_in"]  # whose token a profile's requests go with


@dataclass(frozen=True)
class Identity:
    """What config and sign-in say about a profile's Plex tokens (no request made).

    `pasted`: `accounts.plex.token`, a token for this server, used as is. `signed_in`: the
    plex.tv token `watchbridge auth plex` stored (for a home user, the one switching gave),
    never sent to the server: their server token is found through plex.tv.
    """

    pasted: str | None = field(default=None, repr=False)
    signed_in: str | None = field(default=None, repr=False)
    plextv_id: str | None = None

    @property
    def owner(self) -> bool:
        return not self.pasted and not self.signed_in

    @property
    def kind(self) -> TokenKind:
        """Whose token the server gets: the owner's, one pasted, or one plex.tv gave."""
        return "owner" if self.owner else "pasted" if self.signed_in is None else "signed_in"

    def source(self) -> str:
        """What a found server token belongs to: a new paste or a sign-in as someone else
        makes the stored one stale."""
        return hashlib.sha256(f"{self.pasted or ''}\0{self.plextv_id or ''}".encode()).hexdigest()


def refusal_fix(profile: str, kind: str) -> tuple[str, str]:
    """(whose token, what to do) when the Plex server refuses the token `profile`'s requests
    go with, by its kind (`Identity.kind`: "owner", "pasted", else one plex.tv gave): one
    wording for the held rows, a link's error and the sign-in health."""
    auth = f"`watchbridge auth plex --profile {profile}`"
    if kind == "owner":
        return "services.plex.token", "set the server owner's current token there"
    if kind == "pasted":
        return (
            f"profiles.{profile}.accounts.plex.token",
            f"paste a current token for this server there, or run {auth}",
        )
    return (
        "the token plex.tv gave for them",
        f"run {auth} (and check the server is still shared with them)",
    )


def identity(config: Config, store: Store, profile: str) -> Identity:
    person = config.profiles.get(profile)
    account = person.accounts.plex if person else None
    pasted = account.token.reveal() if account is not None and account.token else None
    stored = store.get_token(SIGN_IN, profile) or {}
    plextv_id = stored.get("plextv_id")
    return Identity(
        pasted,
        str(stored["token"]) if stored.get("token") else None,
        str(plextv_id) if plextv_id not in (None, "") else None,
    )


def owner_problem(config: Config, store: Store, profile: str) -> str | None:
    """Why `profile`, read as the server's owner (`accounts.plex` without a token or a
    sign-in), may not be: see `owner_conflict`."""
    linked = {
        name
        for link in config.links.values()
        if SERVICE in link.services
        for name in link_profiles(config, link)
    }
    # Only the profiles a link reads or writes on Plex are ever read as the owner.
    owners = [name for name in linked | {profile} if identity(config, store, name).owner]
    # The owner signed in as themselves may be in no Plex link (no account on its other side).
    signed_in_owner = next(
        (
            n
            for n in sorted(config.profiles)
            if n != profile and _signed_in_as_owner(config, store, n)
        ),
        None,
    )
    return owner_conflict(config, profile, owners, signed_in_owner)


def _signed_in_as_owner(config: Config, store: Store, profile: str) -> bool:
    """Whether the profile's own plex.tv sign-in is the server owner's account."""
    person = identity(config, store, profile)
    found = store.get_token(SERVER_TOKEN, profile) or {}
    return not person.owner and bool(found.get("owner")) and found.get("source") == person.source()


def _sign_in_fix(who: str) -> str:
    return (
        f"(`watchbridge auth plex --profile {who} --home-user NAME` for a member of the Plex "
        f"Home, `--profile {who}` for another account) or give profiles.{who}.accounts.plex.token"
    )


def owner_conflict(
    config: Config, profile: str, owners: Sequence[str], signed_in_owner: str | None = None
) -> str | None:
    """Why `profile` may not be the server's owner, among the profiles `owners` that config
    and sign-ins make the owner (`signed_in_owner`: a profile signed in to plex.tv as the
    owner); None when it may. Read as the owner, a person gets the owner's plays and
    watchlist, and their plays are written into the owner's Plex: a Plex Home user's profile
    not signed in yet would swap plays with the owner's. So a profile whose `users.plex`
    names accounts by id only, never 1 (the owner's), may not, nor any once the owner signed
    in as themselves, and of several left, only the one naming account 1. Pure."""
    if profile not in owners:
        return None
    fix = f"sign them in {_sign_in_fix(profile)}"

    def others_by_id(name: str) -> bool:
        # Ids only, none of them 1: the owner names account 1, or their name (beside their
        # plex.tv id, for their plays on friends' servers).
        users = this_servers(config.profiles[name], None)
        return bool(users) and all(u.isdigit() and u != OWNER_ACCOUNT for u in users)

    def names_account_1(name: str) -> bool:
        # Plainly: "SERVER:1" may be the owner of another server of the household.
        return OWNER_ACCOUNT in [u.strip() for u in config.profiles[name].users.plex]

    if others_by_id(profile):
        return (
            f"profile {profile}: users.plex names other accounts than the server owner's (1), "
            f"but accounts.plex has no token and no sign-in, which means the owner: {fix}"
        )
    if signed_in_owner is not None:
        return (
            f"profile {profile}: profile {signed_in_owner} signed in to plex.tv as the server "
            f"owner, and accounts.plex without a token or sign-in would read the owner's Plex "
            f"as {profile}'s too: {fix}"
        )
    candidates = [name for name in owners if not others_by_id(name)]
    if len(candidates) == 1:
        return None
    claiming = [n for n in candidates if names_account_1(n)]
    if claiming == [profile]:
        return None
    if len(claiming) == 1:
        return (
            f"profile {profile}: profile {claiming[0]} is the server owner (users.plex: 1), "
            f"and accounts.plex without a token or sign-in would read the owner's Plex as "
            f"{profile}'s: {fix}"
        )
    return (
        f"profile {profile}: profiles {', '.join(candidates)} all have accounts.plex without a "
        f"token or sign-in, which means the server owner, whose plays would be each of "
        f"theirs: name the owner's account 1 under users.plex, and sign in each of the others "
        f"{_sign_in_fix('PROFILE')}"
    )


def token_in_use(config: Config, store: Store, profile: str) -> str | None:
    """The token `profile`'s requests to the server go with now, as the config and the store
    know it (no request made): the owner's `services.plex.token`, the server token plex.tv
    gave for this person, or their `accounts.plex.token`; None while one is yet to be found."""
    person = identity(config, store, profile)
    if person.owner:
        plex = config.services.plex
        return plex.token.reveal() if plex is not None and plex.token else None
    found = store.get_token(SERVER_TOKEN, profile) or {}
    if found.get("token") and found.get("source") == person.source():
        return str(found["token"])
    return person.pasted


class ServerTokens:
    """Each person's token for this server (None: the owner's, the client's own token).

    In order: a token plex.tv gave for the person before (kept 0600 in the store like every
    token, under `plex-server`), `accounts.plex.token`, else one found now through plex.tv with
    the owner's `services.plex.token` (`server_token_for`), or failing that with the person's
    own plex.tv sign-in (their resources). When the server refuses a token (401: revoked,
    rotated), `renew` finds it again, once per profile for the life of this object.

    A token plex.tv gave is for one server, kept with its machine id: once another server
    answers at services.plex.url (Plex reinstalled or moved), it is not sent there; the
    person's token for that server is asked of plex.tv instead.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        client: PlexClient,
        clock: Clock,
        plextv: PlexTvClient | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.clock = clock
        self._plextv = plextv
        self._own_plextv = plextv is None
        self._renewed: set[str] = set()
        self._machine: str | None = None  # the server's machine id, asked once per round

    async def token(self, profile: str, machine: str | None = None) -> str | None:
        """`machine`: the server's machine id when the caller asked it (else it is asked
        here, once per round, if a token plex.tv gave is to be checked against it)."""
        person = await asyncio.to_thread(identity, self.config, self.store, profile)
        if person.owner:
            problem = await asyncio.to_thread(owner_problem, self.config, self.store, profile)
            if problem is not None:
                raise PlexAuthError(SERVICE, problem)
            return None
        found = await asyncio.to_thread(self.store.get_token, SERVER_TOKEN, profile) or {}
        found_for = str(found.get("machine_id") or "")
        other_server = ""
        if found.get("token") and found.get("source") == person.source():
            here = (machine or await self._server_machine()) if found_for else ""
            if found_for.casefold() == here.casefold():
                return str(found["token"])
            other_server = found_for  # not sent to another server than it was found for
            log.info(
                "services.plex.url answers as another server than the one plex.tv gave this "
                "person's token for (Plex reinstalled or moved?): asking plex.tv for their "
                "token for it",
                extra={"profile": profile, "server": here, "token_for": found_for},
            )
        if person.pasted:
            return person.pasted
        return await self._find(profile, person, machine, other_server)

    async def renew(self, profile: str, refused: str | None) -> str:
        """A new token after the server refused `refused`; PlexAuthError when there is none."""
        person = await asyncio.to_thread(identity, self.config, self.store, profile)
        if profile in self._renewed or person.owner or person.signed_in is None:
            where = (
                "accounts.plex.token"
                if person.signed_in is None
                else "the token plex.tv gave for them"
            )
            raise PlexAuthError(
                SERVICE,
                f"profile {profile}: the Plex server refuses {where} (401); paste a current "
                f"token for this server, or sign them in: `watchbridge auth plex --profile "
                f"{profile}` (their server token is then found through plex.tv)",
            )
        self._renewed.add(profile)
        found = await self._find(profile, person)
        if found == refused:
            raise PlexAuthError(
                SERVICE,
                f"profile {profile}: the Plex server refuses the token plex.tv gives for them "
                "(401); check that the server is still shared with them",
            )
        return found

    async def find(self, profile: str) -> str:
        """Ask plex.tv for the person's server token now (after a sign-in)."""
        person = await asyncio.to_thread(identity, self.config, self.store, profile)
        return await self._find(profile, person)

    def new_round(self) -> None:
        """Allow each profile one more renewal, and ask the server's machine id again (a
        long-lived deliverer, per batch)."""
        self._renewed.clear()
        self._machine = None

    async def _server_machine(self) -> str:
        if self._machine is None:
            self._machine = await self.client.identity()
        return self._machine

    async def refused(self, profile: str, token: str | None, exc: PlexAuthError) -> PlexAuthError:
        """Keep that the server refused `token` of `profile` (None: the owner's
        `services.plex.token`) for the sign-in health, whether a delivery or a link's read
        met it: a Plex token has no expiry to tell it by. Returns the error to raise: the
        client's refusal of a person's token, with what this profile is to do.

        A refusal of the server's own token (it also reads a person's history, and which
        libraries exist) is kept once, for the whole service: never as the person's, whose
        token the server may well take, and whether or not the owner is a profile."""
        if isinstance(exc, ServerTokenRefused):
            await self.server_refused(exc.message)
            return exc
        if isinstance(exc, PersonTokenRefused):
            exc = PlexAuthError(SERVICE, await self._person_refused(profile, exc.what))
        if (sent := await self._sent(profile, token)) is not None:
            reason = f"profile {profile}: {exc.message}"
            await asyncio.to_thread(
                note_refused, self.store, SERVICE, profile, sent, reason, self.clock()
            )
        return exc

    async def _person_refused(self, profile: str, what: str) -> str:
        person = await asyncio.to_thread(identity, self.config, self.store, profile)
        whose, todo = refusal_fix(profile, person.kind)
        return f"{what}: the Plex server does not accept {whose} (401): {todo}"

    async def taken(self, profile: str, token: str | None) -> None:
        """The server took `token` of `profile` (None: its own): a refusal of it on record is
        over (`auth plex` may hand back the very server token it refused once)."""
        if token is None:
            await self.server_taken()
        elif (sent := await self._sent(profile, token)) is not None:
            await asyncio.to_thread(note_taken, self.store, SERVICE, profile, sent, self.clock())

    async def server_refused(self, reason: str) -> None:
        """The server refused its own token (`reason`: the error's message, which holds no
        token): kept once, service-wide (see `refused`)."""
        await asyncio.to_thread(self._note_server_token, reason)

    async def server_taken(self) -> None:
        """The server took its own token: a refusal of it on record is over."""
        await asyncio.to_thread(self._note_server_token, None)

    def _note_server_token(self, refusal: str | None) -> None:
        """Keep (`refusal`: why) or end (None) a refusal of the server's own token, service-wide
        (`SERVICE_WIDE`): it is the owner's to fix, and the owner may be no profile at all. A
        refusal already on record for this token keeps its time: the sign-in health says
        since when."""
        server, now = self.client.token, self.clock()
        if server is None:
            return
        if refusal is None:
            note_taken(self.store, SERVICE, SERVICE_WIDE, server, now)
            # What it held goes now (a running worker looks within seconds), not at the end
            # of its half hour.
            with contextlib.suppress(sqlite3.Error, StoreError):
                if lifted := self.store.lift_server_holds(SERVICE, now):
                    log.info(
                        "the Plex server takes its token again: the deliveries it held go now",
                        extra={"rows": lifted},
                    )
        else:
            note_refused(self.store, SERVICE, SERVICE_WIDE, server, refusal, now, since_first=True)

    async def _sent(self, profile: str, token: str | None) -> str | None:
        """The token a request went with (None: the owner's, which the config holds)."""
        return token or await asyncio.to_thread(token_in_use, self.config, self.store, profile)

    async def _find(
        self, profile: str, person: Identity, machine: str | None = None, replaced: str = ""
    ) -> str:
        """The person's token for this server (machine id `machine`, else asked now), through
        plex.tv; stored for the next runs. `replaced`: the server their stored token was for,
        when another answers now."""
        plex = self.config.services.plex
        owner = plex.token.reveal() if plex is not None and plex.token else None
        machine = self._machine = machine or await self.client.identity()
        plextv = self._client()
        who, own = person.plextv_id, person.signed_in
        reasons: list[str] = []
        if who is None and own is not None:  # a sign-in from before plextv_id was kept
            who = str((await plextv.account(own)).id)
        token: str | None = None
        owns = False
        if owner and who:
            try:
                token = await plextv.server_token_for(owner, machine, who)
            except PlexTvError as exc:  # not a friend or home user, or the owner token refused
                reasons.append(exc.message)
        if token is None and own is not None:
            try:
                access = await plextv.server_access(own, machine)
                token, owns = (access.token, access.owned) if access else (None, False)
            except PlexTvError as exc:
                reasons.append(exc.message)
            if token is None and not reasons:
                reasons.append("their plex.tv resources do not list this server")
        if not token:
            why = "; ".join(reasons) or "no plex.tv sign-in"
            if replaced:  # signed in: the next run asks plex.tv again
                raise PlexAuthError(
                    SERVICE,
                    f"profile {profile}: the Plex server is now {machine}, and plex.tv gives "
                    f"no token of theirs for it (the one kept was for server {replaced}; "
                    f"{why}): share the server with them or add them to your Plex Home; the "
                    "next run asks plex.tv again",
                )
            raise PlexAuthError(
                SERVICE,
                f"profile {profile}: plex.tv gives no token of theirs for this Plex server "
                f"({why}): share the server with them or add them to your Plex Home, then "
                f"sign them in with `watchbridge auth plex --profile {profile}`",
            )
        data = {
            "token": token,
            "machine_id": machine,
            "plextv_id": who,
            "source": person.source(),
            # The owner signed in as themselves: nobody else is read as the owner (`owner_problem`).
            "owner": owns,
        }
        await asyncio.to_thread(self.store.put_token, SERVER_TOKEN, profile, data, self.clock())
        log.info("found the Plex server token through plex.tv", extra={"profile": profile})
        return token

    async def whose_pasted(self, pasted: str) -> PastedAccount | None:
        """The plex.tv account of a pasted token, and whether it is the server owner's (the
        one of services.plex.token): asked once per pair of tokens, kept by their hash. None
        when that is not known: no server token, or plex.tv does not say (a token for the
        server alone, which plex.tv does not take; plex.tv down: asked again a day later)."""
        server = self.client.token
        if not server:
            return None
        lookup = hashlib.sha256(f"{pasted}\0{server}".encode()).hexdigest()[:32]
        hit, cached = await asyncio.to_thread(self.store.cache_get, PASTED, lookup, self.clock())
        if hit:
            return PastedAccount(**cached) if isinstance(cached, dict) and cached else None
        try:
            plextv = self._client()
            person = await plextv.account(pasted)
            owner = await plextv.account(server)
        except ServiceError as unanswered:
            log.info("whose accounts.plex.token is, plex.tv did not say: %s", unanswered.message)
            await asyncio.to_thread(
                self.store.cache_put, PASTED, lookup, {}, self.clock(), UNANSWERED_TTL
            )
            return None
        name = person.username or person.title
        found = PastedAccount(str(person.id), name, person.id == owner.id)
        kept = {"id": found.id, "name": found.name, "owner": found.owner}
        await asyncio.to_thread(
            self.store.cache_put, PASTED, lookup, kept, self.clock(), PASTED_TTL
        )
        return found

    async def refuse_pasted(self, profile: str, person: Identity, account: str | None) -> None:
        """PlexAuthError (`pasted_not_owner`) when `profile` is read as the owner (`account`
        1) with a pasted token plex.tv says is another account's: a Home member's watched
        state would be read with the owner's history, and the owner's plays written into the
        member's Plex. Asks plex.tv only when `whose_pasted` has no answer kept."""
        if account != OWNER_ACCOUNT or person.kind != "pasted" or not person.pasted:
            return
        pasted = await self.whose_pasted(person.pasted)
        if pasted is not None and not pasted.owner:
            raise PlexAuthError(SERVICE, pasted_not_owner(profile, pasted))

    def _client(self) -> PlexTvClient:
        if self._plextv is None:
            from watchbridge.plexlink import plextv_client

            self._plextv = plextv_client(
                self.config, self.store, metrics=self.client.http.metrics, clock=self.clock
            )
            if self._plextv is None:
                raise PlexAuthError(SERVICE, "services.plex is needed to find server tokens")
        return self._plextv

    async def aclose(self) -> None:
        if self._own_plextv and self._plextv is not None:
            await self._plextv.aclose()
            self._plextv = None


@dataclass(frozen=True)
class PastedAccount:
    """Whose a pasted `accounts.plex.token` is, as plex.tv tells (`/api/v2/user`)."""

    id: str
    name: str
    owner: bool  # the account of services.plex.token, the server owner's


def pasted_not_owner(profile: str, found: PastedAccount) -> str:
    """Why `profile`, read as the server owner (account 1), is not read with the token pasted
    in its `accounts.plex.token`, which is another account's (`found`). Pure."""
    who = f"Plex account {found.id}" + (f" ({found.name})" if found.name else "")
    return (
        f"profile {profile}: profiles.{profile}.accounts.plex.token belongs to {who}, not the "
        f"server owner, but {profile}'s Plex history is read as account 1, the owner's: read "
        f"together, one person's watched state would go with the other's plays, so "
        f"{profile}'s Plex is not read. Paste the owner's token there (or leave "
        f"accounts.plex without a token: the owner is read with services.plex.token), or, "
        f"when the profile is that member's, write their id {found.id} in "
        f"profiles.{profile}.users.plex in place of the owner's 1 (or name)"
    )


def known_account_id(
    config: Config, store: Store, profile: str, token: str | None, machine: str | None = None
) -> str | None:
    """The server-local account id when it is known without asking the server. The owner
    (read with the server's own token, or signed in as themselves) is always account 1,
    whatever else `users.plex` lists (their plex.tv id, for their plays on friends' servers)."""
    stored = store.get_token(SERVICE, profile) or {}
    if stored.get("account_id") not in (None, ""):
        return str(stored["account_id"])
    if token is None or _signed_in_as_owner(config, store, profile):
        return OWNER_ACCOUNT
    person = config.profiles.get(profile)
    return next((u for u in this_servers(person, machine) if u.isdigit()), None)


@dataclass(frozen=True)
class ByName:
    """A profile's account looked up by name in the server's account list: its id, or, when
    the server lists none by those names, what to tell (`not_listed`)."""

    account: str | None
    not_listed: str = ""


def not_listed(profile: str, names: Sequence[str], listed: Iterable[str]) -> str:
    """What to tell when the server lists no account by any of `names` (the profile's
    `users.plex` entries for this server and its sign-in's username): the names it does list,
    never more (no token, no id). Pure."""
    wanted = " or ".join(dict.fromkeys(names))
    shown = list(dict.fromkeys(name for name in listed if name))
    return (
        f"the server lists no account named {wanted}; it lists: "
        f"{some_titles(shown, ACCOUNTS_NAMED) if shown else 'none'}: write one of those, or "
        f"the account's id, in profiles.{profile}.users.plex"
    )


def found_by_name(profile: str) -> tuple[str, str]:
    """Where the accounts found for `profile` by name are remembered: the id cache namespace
    and the prefix of their lookups (profile, then the names). Pure."""
    return ACCOUNTS, f"{profile}:"


def same_named(accounts: Mapping[str, str], matching: Sequence[str]) -> list[str]:
    """The accounts of `matching` (ids) whose name, ignoring case, another of them has too.
    Pure."""
    names = [same_name(accounts[n]) for n in matching]
    return [n for n, name in zip(matching, names, strict=True) if names.count(name) > 1]


def same_names(profile: str, accounts: Mapping[str, str], matching: Sequence[str]) -> str:
    """Why `profile`'s account is not known when the server lists several accounts
    (`matching`, ids) by the names its `users.plex` (or sign-in) gives, ignoring case. Pure."""
    found = ", ".join(f"{accounts[n]} (id {n})" for n in matching)
    return (
        f"profile {profile}: the Plex server lists {len(matching)} accounts by the name(s) "
        f"profiles.{profile}.users.plex (or its plex.tv sign-in) gives, ignoring case: {found}; "
        f"whose history to read is not known, so {profile}'s Plex is not read: write the id "
        f"of theirs ({' or '.join(matching)}) in profiles.{profile}.users.plex in place of "
        "the name"
    )


def sign_in_is_owner(store: Store, profile: str, person: Identity) -> bool | None:
    """Whether `profile`'s plex.tv sign-in is the server owner's account, as plex.tv told
    when it gave their token for this server (their resources list the server as owned);
    None when not known: not signed in, no server token found for this sign-in yet (or one
    pasted is used), or found by a version that did not keep it."""
    found = store.get_token(SERVER_TOKEN, profile) or {}
    if person.signed_in is None or found.get("source") != person.source():
        return None
    owner = found.get("owner")
    return owner if isinstance(owner, bool) else None


def signed_in_as_another(
    profile: str,
    person: Identity,
    account: str | None,
    signed_in: Mapping[str, Any],
    owner: bool | None = None,
) -> str | None:
    """Why `profile`'s Plex may not be read: its plex.tv sign-in (`person`; `signed_in`, what
    the store keeps of it; `owner`: whether it is the server owner's, see `sign_in_is_owner`)
    is another account than the server account `users.plex` names by its id (`account`; a
    home user's or friend's server-local id is their plex.tv id, the owner's is 1). Read so,
    the listings (watched state, ratings) would be the signed-in account's and the history the
    named one's: one person's plays credited to the other. None when they agree, or when
    either is not known (the owner's 1: whether the sign-in is the owner's). Pure."""
    if account is None or person.signed_in is None or not person.plextv_id:
        return None
    name = text(signed_in.get("username"))
    who = f"account {person.plextv_id}" + (f" ({name})" if name else "")
    if account == OWNER_ACCOUNT:
        if owner is not False:
            return None
        return (
            f"profile {profile}: users.plex names Plex account 1, the server owner's, but its "
            f"plex.tv sign-in is {who}, not the owner: read together, one person's plays would "
            f"be credited to the other, so {profile}'s Plex is not read. Sign them in with the "
            f"owner's own plex.tv login (`watchbridge auth plex --profile {profile}`), or, when "
            f"the profile is that member's, write their id {person.plextv_id} in place of 1 in "
            f"profiles.{profile}.users.plex"
        )
    if account == person.plextv_id:
        return None
    return (
        f"profile {profile}: users.plex names Plex account {account}, but its plex.tv sign-in "
        f"is {who}: read together, one person's plays would be credited to the other, so "
        f"{profile}'s Plex is not read. Sign them in as the account users.plex names "
        f"(`watchbridge auth plex --profile {profile} --home-user NAME` for a member of the "
        f"Plex Home, `--profile {profile}` for another account), or fix "
        f"profiles.{profile}.users.plex"
    )


def _by_server(person: Profile) -> bool:
    """Whether `users.plex` names accounts as `SERVER:ACCOUNT`."""
    return any(":" in user for user in person.users.plex)


def this_servers(person: Profile | None, machine: str | None) -> list[str]:
    """The `users.plex` entries meant for this server (machine id `machine`): plain ones, and
    `SERVER:ACCOUNT` ones of this server (of any server while `machine` is unknown), each
    without its server."""
    kept = []
    for user in person.users.plex if person else ():
        server, _, account = user.strip().rpartition(":")
        mine = not server or machine is None or server.casefold() == machine.casefold()
        if account.strip() and mine:
            kept.append(account.strip())
    return kept


def servers_named_instead(profile: str, person: Profile | None, machine: str | None) -> str:
    """What to change when `users.plex` names the profile's account only as `SERVER:ACCOUNT`
    of other servers than this one (machine id `machine`): a Plex reinstalled or moved to new
    hardware has a new machine id, and the entry still names the old one. "" when that is not
    why (an entry for this server, or a plain one, or the server not asked). Pure."""
    if person is None or machine is None or this_servers(person, machine):
        return ""
    named = (user.strip().rpartition(":")[0].strip() for user in person.users.plex)
    others = list(dict.fromkeys(server for server in named if server))
    if not others:
        return ""
    where = f"users.plex of profile {profile}"
    if len(others) == 1:
        return (
            f"{where} names server {others[0]}; services.plex.url answers as server {machine}: "
            f"replace {others[0]} with {machine} (or drop the SERVER: part)"
        )
    return (
        f"{where} names servers {', '.join(others)}; services.plex.url answers as server "
        f"{machine}: replace the one this server was with {machine}, or add {machine}:ACCOUNT"
    )


def plex_client(
    config: Config, store: Store, clock: Clock, metrics: Metrics | None = None
) -> PlexClient:
    plex: PlexConfig | None = config.services.plex
    if plex is None or not plex.url:
        raise ConfigError("services.plex.url is needed to sync with the Plex server")
    identifier = store.setting("plex_client_identifier", lambda: uuid.uuid4().hex, clock())
    return PlexClient(plex, metrics=metrics, clock=clock, client_identifier=identifier)


# --------------------------------------------------------------------------- the reader


class PlexReader:
    service = SERVICE

    def __init__(
        self,
        client: PlexClient,
        config: Config,
        store: Store,
        link: Link,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.store = store
        self.link = link
        self.clock = clock
        self.tokens = ServerTokens(config, store, client, clock)
        self.metrics = metrics
        other = next((name for name in link.services if name != SERVICE), "")
        self.numbering: EpisodeNumbering | None = numbering_for(
            config, store, other, clock, metrics
        )
        self._access: dict[str, Access] = {}
        self._server_accounts: dict[str, str] | None = None
        self._machine: str | None = None  # asked this run (`account`)
        # The server's machine id as asked this run by anyone (`_identity`): asked once.
        self._machine_asked: str | None = None
        # Per profile, as the last read found them: shows in a TheTVDB ordering that nothing
        # renumbers (no Trakt or Serializd for an AniList link), and their episodes held apart.
        self._apart: dict[str, Apart] = {}
        self.dry_run = False  # see readers.Noting

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    async def access(self, profile: str) -> Access:
        if profile not in self._access:
            found = await asyncio.to_thread(self.store.get_token, SERVER_TOKEN, profile) or {}
            # A token plex.tv gave is for one server: checked against the one asked this run,
            # else the one remembered (`account` asks before a read, and forgets this).
            machine = self._machine
            if machine is None and found.get("machine_id"):
                machine = await self._machine_id()
            token = await self.tokens.token(profile, machine)
            person = self.config.profiles.get(profile)
            if token is not None and machine is None and person and _by_server(person):
                machine = await self._machine_id()
            account = await asyncio.to_thread(
                known_account_id, self.config, self.store, profile, token, machine
            )
            stored = await asyncio.to_thread(self.store.get_token, SERVICE, profile) or {}
            plextv_id = stored.get("plextv_id") or found.get("plextv_id")
            by_name = ByName(None)
            if account is None:
                by_name = await self._account_by_name(
                    profile, stored.get("username"), machine, text(plextv_id)
                )
                account = by_name.account
            signed_in = await asyncio.to_thread(identity, self.config, self.store, profile)
            owner = await asyncio.to_thread(sign_in_is_owner, self.store, profile, signed_in)
            listed = this_servers(person, machine)
            if signed_in.plextv_id in listed and (account != OWNER_ACCOUNT or owner is False):
                account = signed_in.plextv_id  # of the ids listed, the one signed in
            named = account if account in listed else None  # an id users.plex gives
            problem = signed_in_as_another(profile, signed_in, named, stored, owner)
            if problem is not None:
                raise PlexAuthError(SERVICE, problem)
            await self.tokens.refuse_pasted(profile, signed_in, account)
            if account is None and plextv_id not in (None, ""):
                # A shared or managed user's server-local id is their plex.tv id (reference
                # §2); only the owner differs (1), and the owner is found by name above.
                account = str(plextv_id)
            if account is None:
                log.warning(
                    "no Plex account id for this profile: plays come from watched state only; "
                    + (
                        servers_named_instead(profile, person, machine)
                        or by_name.not_listed
                        or "name the account (id or username) in profiles.<name>.users.plex"
                    ),
                    extra={"profile": profile},
                )
            self._access[profile] = Access(token, account)
        return self._access[profile]

    async def account(self, profile: str, reading: bool) -> str | None:
        """The server, asked afresh (a new server may answer at the old address), and the
        profile's account on it. Only before a read: a new server's history differs from the
        old one's, so the cheap check reads it as a change."""
        if not reading:
            return None
        machine = self._machine = self._machine_asked = await self.client.identity()
        # Also in a dry run: a cache of the server's answers; dropping the old server's
        # lookups only costs the next run requests.
        _, cached = await asyncio.to_thread(self.store.cache_get, ACCOUNTS, MACHINE, self.clock())
        if machine != cached:
            if cached is not None:  # the accounts found by name were the old server's
                await asyncio.to_thread(self.store.cache_forget, ACCOUNTS)
                self._access.clear()
                self._server_accounts = None
            await asyncio.to_thread(
                self.store.cache_put, ACCOUNTS, MACHINE, machine, self.clock(), ACCOUNTS_TTL
            )
        account = (await self.access(profile)).account_id
        return identity_of(SERVER_PART + machine, f"account {account}" if account else "")

    async def _machine_id(self) -> str:
        """This server's machine id: as asked this run, else remembered (for a week, like
        its accounts), else asked now."""
        if self._machine_asked is not None:
            return self._machine_asked
        hit, cached = await asyncio.to_thread(self.store.cache_get, ACCOUNTS, MACHINE, self.clock())
        if hit and isinstance(cached, str):
            return cached
        machine = await self._identity()
        await asyncio.to_thread(
            self.store.cache_put, ACCOUNTS, MACHINE, machine, self.clock(), ACCOUNTS_TTL
        )
        return machine

    async def _identity(self) -> str:
        """This server's machine id, asked of it once per run (a run's reader): the cheap
        check of a person whose token plex.tv gave checks that token against it too, and an
        idle run is one request per question. `account` asks afresh before a read."""
        if self._machine_asked is None:
            self._machine_asked = await self.client.identity()
        return self._machine_asked

    async def _account_by_name(
        self,
        profile: str,
        signed_in_as: object = None,
        machine: str | None = None,
        signed_in_id: str | None = None,
    ) -> ByName:
        """The id of the account named in `users.plex` (or the sign-in's username), from the
        server's `/accounts` (remembered for a week, so the cheap check stays one request);
        else what to tell. Names are compared ignoring case: two accounts they name (but the
        one signed in, `signed_in_id`) leave whose history it is unknown, and the read is
        refused (PlexAuthError) saying which ids to write instead."""
        person = self.config.profiles.get(profile)
        configured = [*this_servers(person, machine), str(signed_in_as or "")]
        names = sorted({same_name(n.strip()) for n in configured if n.strip()})
        if not names or not self.client.token:
            return ByName(None)
        lookup = f"{found_by_name(profile)[1]}{','.join(names)}"
        hit, cached = await asyncio.to_thread(self.store.cache_get, ACCOUNTS, lookup, self.clock())
        if hit and isinstance(cached, dict):
            return ByName(None, str(cached.get("not_listed") or ""))
        if hit and cached is not None:
            return ByName(str(cached))
        # Not a hit, or a miss an earlier version cached without its message: ask again.
        if self._server_accounts is None:
            try:
                self._server_accounts = await self.client.accounts()
            except PlexAuthError as refused:  # the server's own token, not the profile's
                raise await self.tokens.refused(profile, None, refused) from None
        accounts = self._server_accounts
        matching = [n for n, name in accounts.items() if same_name(name) in names]
        if signed_in_id in matching:
            matching = [signed_in_id]
        # Several names may each find their own account (one person's two accounts, as a
        # profile's webhooks take them): the first found is read, as always. Only one name
        # that finds two accounts leaves whose history it is unknown.
        if clashing := same_named(accounts, matching):
            raise PlexAuthError(SERVICE, same_names(profile, accounts, clashing))
        if matching:
            result = ByName(matching[0])
        elif (renamed := await self._renamed(profile, names, machine)) is not None:
            return ByName(renamed)  # not kept in the cache: asked again each read until named
        else:
            shown = [n.strip() for n in configured if n.strip()]
            result = ByName(None, not_listed(profile, shown, accounts.values()))
        if self.dry_run:
            # The account found is remembered for a rename (`_remember_found`) only when it is
            # not in the cache, so a dry run keeps neither: the next run asks once more.
            return result
        if result.account is not None:
            await self._remember_found(profile, names, result.account, machine)
        kept = result.account or {"not_listed": result.not_listed}
        await asyncio.to_thread(
            self.store.cache_put, ACCOUNTS, lookup, kept, self.clock(), ACCOUNTS_TTL
        )
        return result

    async def _remember_found(
        self, profile: str, names: list[str], found: str, machine: str | None
    ) -> None:
        """Keep the account `names` found (beyond the week of the cache): renamed in Plex,
        it is still the profile's (`_renamed`)."""
        server = machine or await self._machine_id()
        value = json.dumps({"server": server, "names": names, "id": found})
        kept = await asyncio.to_thread(self.store.get_cursor, SERVICE, profile, FOUND_BY_NAME)
        if kept != value:
            await asyncio.to_thread(
                self.store.set_cursor, SERVICE, profile, FOUND_BY_NAME, value, self.clock()
            )

    async def _renamed(self, profile: str, names: list[str], machine: str | None) -> str | None:
        """The account the same `names` found on this server before, when none of the server's
        accounts has those names now: renamed in Plex (a Home user's name is the owner's to
        change). Read without it, the person's history would be left unread, and their
        rewatches removed from the other side as if unwatched. None when no account was."""
        kept = await asyncio.to_thread(self.store.get_cursor, SERVICE, profile, FOUND_BY_NAME)
        try:
            before = json.loads(kept) if kept else {}
        except ValueError:
            return None
        server = machine or await self._machine_id()
        found = str(before.get("id") or "") if isinstance(before, dict) else ""
        if not found or before.get("server") != server or before.get("names") != names:
            return None
        now_named = (self._server_accounts or {}).get(found)
        shown = ", ".join(names)
        _RENAMED.warning(
            (profile, server, found),
            f"Plex account {found} of profile {profile} is no longer named {shown} on the "
            f"server{f' (now {now_named!r})' if now_named else ''}: renamed in Plex? Its plays "
            f"are still read by its id; write {found} (or its new name) in "
            f"profiles.{profile}.users.plex",
            self.clock(),
            profile=profile,
            account_id=found,
        )
        return found

    async def unchanged(self, profile: str, cursors: Mapping[str, str]) -> bool:
        access = await self.access(profile)
        if "history" not in cursors:
            return False
        if access.account_id is None or not cursors["history"]:
            # The last read had no history (no account id, or the server serves it to the
            # owner only): ask the watched state, unless the history can be read now.
            if access.account_id is not None and self.client.token:
                return False
            return await self._watched_unchanged(profile, access, cursors.get(WATCHED, ""))
        token = self._history_token(access)
        unfiltered = cursors["history"].startswith(UNFILTERED)
        try:
            if unfiltered:
                page = await self.client.history_page(access.account_id, token)
            else:
                total, newest = await self.client.history_head(access.account_id, token)
        except PlexAuthError as refused:
            if token is None:  # the server's own token
                raise await self.tokens.refused(profile, None, refused) from None
            return False  # only the owner may read the history: read the listings instead
        if token is None:
            await self.tokens.server_taken()
        if unfiltered:
            new = arrivals(page, cursors["history"])
            return new is not None and not any(r.owned_by(access.account_id) for r in new)
        return _history_cursor(total, newest) == cursors["history"]

    async def _watched_unchanged(self, profile: str, access: Access, cursor: str) -> bool:
        """The cheap check of a person read without history: whether the server is the one
        read last (`/identity`) and, in each listing their plays came from, none of its items
        was viewed after the newest view read then and as many are watched as then (two
        requests each, counting, no rows). The second sees a view the server learns of late
        dated before that newest view (a phone's downloads watched offline), and unwatching;
        not ratings, nor an unwatch and such a late view in one library between two runs."""
        watched = parse_watched_cursor(cursor)
        if watched is None:
            return False
        machine, since, listed = watched
        if await self._identity() != machine:
            return False  # another server at this address: the read notes it
        token = access.token
        for entry in listed:
            section, kind = entry.section, entry.kind
            try:
                if await self.client.viewed_since(section, kind, since, token) != 0:
                    return False
                if await self.client.watched_count(section, kind, token) != entry.watched:
                    return False
            except PlexAuthError as refused:
                if token is None:  # the server's own token
                    raise await self.tokens.refused(profile, None, refused) from None
                return False  # the read asks plex.tv for the person's token again, or says
        if token is None:
            await self.tokens.server_taken()
        return True

    async def read(
        self, profile: str, cursors: Mapping[str, str], baseline: Side | None, full: bool
    ) -> SideRead:
        access = await self.access(profile)
        # The rows that may still send a write, before the listing: a row given up by then
        # cannot land after it (see `settle_pending`).
        rows = await asyncio.to_thread(self._play_rows, profile)
        # The maps the deliverer writes too, before the listing: an item it unwatches while we
        # read, or a play it removes, is newer than our listing and stands (`read_back`).
        mirrored = await asyncio.to_thread(self._mirrored, profile)
        listed_at = self.clock()
        try:
            library, listings = await self._library(profile, access.token)
        except PlexAuthError as refused:
            # The server's own token (which libraries exist) is no fault of the person's.
            if access.token is None or isinstance(refused, ServerTokenRefused):
                raise await self.tokens.refused(profile, None, refused) from None
            # Revoked or rotated: find the person's token again (once), then read with it.
            tried: str | None = access.token
            try:
                await self.tokens.renew(profile, tried)
                del self._access[profile]
                access = await self.access(profile)
                tried = access.token
                library, listings = await self._library(profile, tried)
            except PlexAuthError as again:
                raise await self.tokens.refused(profile, tried, again) from None
        await self.tokens.taken(profile, access.token)
        numbered = await self._renumbered(profile, library, full)
        anime_placed = "anilist" in self.link.services
        if anime_placed:
            numbered = replace(numbered, placed=await self._anime_placed(profile, library))
        legacy = legacy_titles(library, anime_placed)
        if full and legacy:
            log.warning(
                "plex titles known by IMDb or TheTVDB ids only (Plex's legacy agents) are not "
                "linked: switch their libraries to the Plex Movie / Plex TV Series agent and "
                "refresh their metadata (their plays still go out by webhook)",
                extra={"profile": profile, "titles": len(legacy), "first": ", ".join(legacy[:5])},
            )
        unmatched = unmatched_titles(library, anime_placed)
        if full and unmatched:
            log.warning(
                "plex titles without a TMDB, IMDb or TheTVDB id (unmatched) are not synced: "
                "%s. Match them in Plex (Fix Match, or Refresh Metadata once their agent finds "
                "them); home videos belong in a library of the Other Videos type, which is not "
                "warned about",
                some_titles(unmatched),
                extra={"profile": profile, "titles": len(unmatched)},
            )
        history_at = self.clock()
        history, cursor, first_listed = await self._history(
            profile, access, full, cursors.get("history", "")
        )
        # What we wrote is loaded after the history: a scrobble delivered while we read (the
        # service delivers beside its link runs) is known with its try, so its history row is
        # our echo, not a play "today". The listing may predate that write: a write tried
        # since `listed_at` (less CLOCK_MARGIN) is never read as unwatched (`_unwatched`).
        memory = await asyncio.to_thread(self._memory, profile)
        kinds = self.link.kinds
        # Off the event loop: at 40,000 plays it takes the loop's thread for most of a
        # second, and webhooks wait behind it.
        built = await asyncio.to_thread(
            build_side,
            library,
            history,
            memory,
            "ratings" in kinds,
            listed_at,
            numbered,
            mirrored.last_read(),
            skew=self.client.clock_skew,
            on_their_way=rows,
            rowless=self.client.rowless_scrobbles,  # as `account` asked /identity
        )
        if cursor and not self.dry_run:  # the history was read; a dry run writes nothing
            await self._note_webhooks_stopped(
                profile, library, history, memory, first_listed, history_at
            )
        history_account = access.account_id if cursor else None  # "": history not read
        if not self.dry_run:  # what the deliverer and the next read go by
            await asyncio.to_thread(
                self._remember,
                profile,
                built,
                mirrored,
                memory.written,
                self._machine,
                history_account,
            )
        listed = numbered_listings(listings, numbered) if "collection" in kinds else None
        cursors = {"history": cursor}
        if not cursor:  # no history to ask what changed: the watched state tells
            machine = self._machine or await self._machine_id()
            cursors[WATCHED] = watched_cursor(machine, library)
        return SideRead(built.side, cursors, listed, built.aliases)

    async def refine(
        self, profile: str, own: Side, other: Side, waiting: OnTheirWay | None = None
    ) -> Side:
        if "anilist" in self.link.services and profile in self._apart:
            found = numbered_apart(other, own.catalog or frozenset(), self._apart[profile])
            await asyncio.to_thread(self._report_apart, profile, found)
        return own

    def _report_apart(self, profile: str, found: Mapping[str, Unmatched]) -> None:
        """AniList's episodes Plex numbers apart, for `watchbridge anime unmatched` and
        `watchbridge status`: all of them, each run (those settled since are forgotten)."""
        from watchbridge.anime_data import UnmatchedRecord, link_source, replace_unmatched

        now, source = self.clock(), link_source(SERVICE, "numbering")
        shows = self._apart[profile].shows
        records = [
            UnmatchedRecord(
                profile,
                item,
                why.reason,
                why.code,
                shows[item.split(":")[2]].title,
                None,
                now,
                source,
            )
            for item, why in sorted(found.items())
        ]
        replace_unmatched(self.store, profile, source, records, now, lambda *_: False)

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self.client.aclose()
        if self.numbering is not None:
            await self.numbering.aclose()

    async def _renumbered(self, profile: str, library: Library, full: bool) -> Renumbering:
        """The episodes of shows in a TheTVDB ordering, numbered as the other side does."""
        shows = tvdb_ordered(library)
        self._apart[profile] = Apart()
        if not shows:
            return Renumbering()
        titles = ", ".join(sorted(s.title or s.rating_key for s in shows))
        if self.numbering is None:
            if full:
                log.warning(
                    "plex shows in a TheTVDB episode ordering are linked only where Plex's "
                    "numbers are known to be the other side's (see `watchbridge anime "
                    "unmatched`): set them to The Movie Database ordering in Plex (Edit > "
                    "Advanced)",
                    extra={"profile": profile, "shows": titles},
                )
            return await self._held_apart(profile, library)
        watched: dict[str, list[Ids]] = defaultdict(list)
        for episode in library.episodes:
            if episode.view_count > 0:
                watched[episode.grandparent_rating_key or ""].append(episode.ids)
        numbers = {
            show.rating_key: await self.numbering.numbers(show.ids, watched[show.rating_key])
            for show in shows
        }
        collection = f"{RENUMBERED}:{self.numbering.source.key}"
        stored = await asyncio.to_thread(self.store.mirror_get, SERVICE, profile, collection)
        now = self.clock()
        remembered = {
            rk: (int(v["season"]), int(v["number"]), float(v.get("since", now)))
            for rk, v in stored.items()
        }
        found = renumbering(library, numbers, remembered, now)
        values = {
            rk: {"season": s, "number": n, "since": found.since[rk]}
            for rk, (s, n) in found.numbers.items()
        }
        # Not in a dry run: numbers kept are used once the other side no longer gives them.
        if values != stored and not self.dry_run:
            await asyncio.to_thread(
                self.store.mirror_replace, SERVICE, profile, collection, values, self.clock()
            )
        if full:
            log.info(
                "plex shows in a TheTVDB episode ordering are linked by %s's episode numbers",
                self.numbering.name,
                extra={
                    "profile": profile,
                    "shows": titles,
                    "episodes": len(found.numbers),
                    "withheld": len(found.withheld),
                },
            )
        return found

    async def _held_apart(self, profile: str, library: Library) -> Renumbering:
        """With nothing to renumber them by, the episodes (and seasons) of shows in a TheTVDB
        ordering whose Plex numbers may name others on TMDB are withheld: a wrong write is
        worse than none. Which ones the anime mapping tells (refreshed when due, as the
        AniList side's read would: that read then finds it current); with no dataset yet,
        every episode but an absolute order's season 1."""
        from watchbridge import anime_data

        data = anime_data.from_config(self.config)
        try:
            index = await data.index()
        finally:
            await data.aclose()
        withheld = numbered_apart_items(library, index.same_numbers)
        shows = {s.rating_key: s for s in tvdb_ordered(library)}
        withheld_keys: set[str] = set()
        watched: set[str] = set()
        for episode in library.episodes:
            show = shows.get(episode.grandparent_rating_key or "")
            if episode.rating_key not in withheld or show is None:
                continue
            key = episode_key(_show_ids(episode, shows), episode.season, episode.number)
            if key is None:
                continue
            withheld_keys.add(key)
            tmdb, tvdb = whole(show.ids.tmdb), whole(show.ids.tvdb)
            anime = (tmdb is not None and index.knows_show(tmdb, "tmdb")) or (
                tvdb is not None and index.knows_show(tvdb, "tvdb")
            )
            if anime and episode.view_count > 0:
                watched.add(key)
        self._apart[profile] = Apart(
            own_orders(library), frozenset(withheld_keys), frozenset(watched)
        )
        return Renumbering(withheld=withheld)

    async def _anime_placed(self, profile: str, library: Library) -> dict[str, str]:
        """The episodes the HAMA agent names by AniDB or TheTVDB id, keyed where this AniList
        link's AniList side keys the plays of their entries' episodes (`watchbridge.hama`:
        through the anime mapping, absolute numbers placed on the season list AniList's side
        uses); the watched ones that go nowhere are listed (`watchbridge anime unmatched`),
        those listed before and placed now forgotten. With no HAMA episode, no dataset is
        loaded."""
        from watchbridge import anime_data
        from watchbridge.anime_seasons import for_link, forward_wants, placed
        from watchbridge.deliver.anilist import index_reverse
        from watchbridge.readers.anilist import play_keys, tv_only

        episodes = hama.hama_episodes(library.shows, library.episodes)
        found = hama.Placed()
        if episodes:
            data = anime_data.from_config(self.config)
            try:
                index = await data.index()
            finally:
                await data.aclose()
            entries = await asyncio.to_thread(hama.entry_episodes, episodes, index_reverse(index))
            hits = [hit for hit in entries.values() if isinstance(hit, tuple)]

            def raw(media: int, number: int, total: int | None) -> Forward:
                return index.episode_for(media, number, "tmdb", total)

            seasons = for_link(self.config, self.store, self.link, self.clock, self.metrics)
            try:
                if seasons is not None:
                    wants = forward_wants(raw, [(m, n, index.episode_count(m)) for m, n in hits])
                    if wants:
                        await seasons.prepare(wants)
                mapper = placed(raw, seasons)
                mapper = mapper if self.link.movies else tv_only(mapper)

                def forward(media: int, number: int) -> list[str] | Unmatched:
                    total = index.episode_count(media)
                    return play_keys(mapper(media, number, total), number, total)

                watched = [e.rating_key for e in library.episodes if e.view_count > 0]
                found = await asyncio.to_thread(hama.place, episodes, entries, forward, watched)
            finally:
                if seasons is not None:
                    await seasons.aclose()
        await asyncio.to_thread(self._report_unplaced, profile, found)
        return dict(found.keys)

    def _report_unplaced(self, profile: str, found: hama.Placed) -> None:
        """HAMA's watched episodes this link cannot place, for `watchbridge anime unmatched`:
        all of them, each run (those placed since are forgotten)."""
        from watchbridge.anime_data import UnmatchedRecord, link_source, replace_unmatched

        now, source = self.clock(), link_source(SERVICE, "anime ids")
        records = [
            UnmatchedRecord(
                profile, ref.key(), why.reason, why.code, ref.show_title, None, now, source
            )
            for ref, why in sorted(found.unplaced.values(), key=lambda pair: pair[0].key())
        ]
        replace_unmatched(self.store, profile, source, records, now, lambda *_: False)

    # ------------------------------------------------------------------ reads

    async def _library(
        self, profile: str, token: str | None
    ) -> tuple[Library, dict[str, list[Mapping[str, object]]]]:
        """The chosen libraries' items, and the raw listings they were read from when the
        link syncs the collection (which sends them on); else none: each page's rows are made
        items as it comes, and dropped (at 40,000 episodes ~100 MB, the items ~15)."""
        plex = self.config.services.plex
        names = plex.libraries if plex else []
        sections = await self.client.sections(token)
        # A library this person does not see may exist unshared: the server's own token tells
        # (without it, a name is taken to exist).
        seen = {same_name(s.title) for s in sections}
        unseen = any(same_name(n) not in seen for n in names)
        owner = token is None
        ask = not owner and unseen and self.client.token is not None
        on_server = await self.client.sections(None) if ask else None
        chosen = choose_sections(sections, names, profile, on_server, owner=owner)
        rows: dict[str, list[Mapping[str, object]]] = defaultdict(list)
        items: dict[str, list[LibraryItem]] = defaultdict(list)
        personal: set[str] = set()
        listed: list[Listed] = []
        for section in chosen:
            kinds = ["movie"] if section.type == "movie" else ["show", "episode"]
            if section.type == "show" and "ratings" in self.link.kinds:
                kinds.append("season")
            for kind in kinds:
                if "collection" in self.link.kinds:
                    listed_rows = await self.client.listing_rows(section.key, kind, token)
                    rows[kind] += listed_rows
                    # Off the event loop, as `build_side`: ~1 s of the loop's thread at
                    # 43,000 items.
                    found = await asyncio.to_thread(library_items, listed_rows)
                else:
                    found = await self.client.listing(section.key, kind, token)
                items[kind] += found
                if section.matches_nothing:
                    personal |= {item.rating_key for item in found if item.rating_key}
                if kind in ("movie", "episode"):
                    listed.append(Listed(section.key, kind, watched_in(found)))
        library = Library(
            items["movie"],
            items["show"],
            items["season"],
            items["episode"],
            tuple(listed),
            frozenset(personal),
        )
        return library, rows

    def _history_token(self, access: Access) -> str | None:
        """History is the admin's view: the server token, else the profile's own."""
        return None if self.client.token else access.token

    async def _history(
        self, profile: str, access: Access, full: bool, previous: str = ""
    ) -> tuple[list[HistoryEntry], str, set[str] | None]:
        """The account's whole history: read whole on a full read (or the first), else the rows
        since the newest cached one merged onto the cache. From a server known to ignore
        `accountID` (`previous`, the last read's cursor, says so), the newest page of everyone's
        rows first: when it accounts for every row since the last read (`arrivals`), its rows
        of the account are all that is new, and nothing more is read. With the ids of the rows
        the cache did not hold (None: no whole cache to tell)."""
        ordered, cursor, known = await self._history_read(profile, access, full, previous)
        first = None if known is None else {h.id for h in ordered if h.id not in known}
        return ordered, cursor, first

    async def _history_read(
        self, profile: str, access: Access, full: bool, previous: str
    ) -> tuple[list[HistoryEntry], str, AbstractSet[str] | None]:
        """`_history`, with the ids the cache held before instead of those new to it."""
        account, token = access.account_id, self._history_token(access)
        if account is None:
            return [], "", None
        # None: a replace of it was cut halfway, or writes it now: no cache to read on from.
        kept = await asyncio.to_thread(self.store.mirror_get_if_whole, SERVICE, profile, HISTORY)
        cached = kept or {}
        known = None if kept is None else cached.keys()
        rows = {
            number: HistoryEntry(number, str(v["rating_key"]), float(v["at"]), account)
            for number, v in cached.items()
            if v["rating_key"]
        }
        gone = {number: float(v["at"]) for number, v in cached.items() if not v["rating_key"]}
        dates = [*(h.viewed_at for h in rows.values()), *gone.values()]
        since = None if full or not dates else max(dates)
        owner_only = (self.client.config.url, account, profile)
        page: HistoryPage | None = None
        arrived: list[HistoryRow] | None = None
        try:
            if previous.startswith(UNFILTERED):
                # Taken before the rows are read: a row arriving meanwhile is new to the next
                # check, never taken as seen.
                page = await self.client.history_page(account, token)
                arrived = arrivals(page, previous) if since is not None else None
                if arrived is None:
                    since = None  # rows deleted, or arrived late: only a whole read can tell
            if arrived is None:
                fresh = await self.client.history(
                    account, None if since is None else since - HISTORY_OVERLAP, token
                )
        except PlexAuthError as refused:
            if token is None:  # the server's own token
                raise await self.tokens.refused(profile, None, refused) from None
            # The listings just took this token: the server keeps its history for the owner.
            _OWNER_ONLY.warning(
                owner_only,
                "the Plex server serves its watch history to the owner only; set "
                "services.plex.token for dated plays (until then: one play per watched item)",
                self.clock(),
                profile=profile,
            )
            return [], "", None
        _OWNER_ONLY.over(
            owner_only, "the Plex watch history is read again", self.clock(), profile=profile
        )
        if token is None:
            await self.tokens.server_taken()
        if arrived is not None and page is not None:
            ordered, cursor = await self._arrived(profile, account, rows, page, arrived)
            return ordered, cursor, known
        foreign = fresh.foreign
        replaced = since is None
        if replaced:
            rows, gone = {h.id: h for h in fresh.entries}, dict(fresh.gone)
        else:
            # A row read before may have lost its item since (within the overlap), or not.
            for h in fresh.entries:
                gone.pop(h.id, None)
            for number in fresh.gone:
                rows.pop(number, None)
            rows.update({h.id: h for h in fresh.entries})
            gone.update(fresh.gone)
            total, _ = await self.client.history_head(account, token)
            if total != len(rows) + len(gone):
                # Rows were deleted on the server ("Remove from history"): a delta read cannot
                # see which; the cache would keep them, and each poll would read everything.
                whole = await self.client.history(account, None, token)
                rows, foreign = {h.id: h for h in whole.entries}, foreign + whole.foreign
                gone, replaced = dict(whole.gone), True
        self._note_foreign(profile, account, foreign)
        # Written in a dry run too: the cache only saves requests. A read onto it asks for the
        # rows since its newest and reads everything again when the server's count differs,
        # so it comes to the same rows as one onto the cache before; the cursor that says
        # whether anything changed is the engine's, saved only once a run is applied.
        values = {h.id: {"rating_key": h.rating_key, "at": h.viewed_at} for h in rows.values()}
        values |= {number: {"rating_key": "", "at": at} for number, at in gone.items()}
        now = self.clock()
        if replaced:
            await asyncio.to_thread(
                self.store.mirror_replace_in_parts, SERVICE, profile, HISTORY, values, now
            )
        else:
            fresh_ids = [*(h.id for h in fresh.entries), *fresh.gone]
            new = {number: values[number] for number in fresh_ids}
            await asyncio.to_thread(self.store.mirror_put, SERVICE, profile, HISTORY, new, now)
        ordered = sorted(rows.values(), key=lambda h: (h.viewed_at, h.id), reverse=True)
        if foreign:
            # Compared against the newest page of everyone's rows from now on; a server found
            # ignoring the filter only now is compared from the next read's page.
            return ordered, unfiltered_cursor(page), known
        return ordered, counted_cursor(rows.values(), gone), known

    async def _arrived(
        self,
        profile: str,
        account: str,
        rows: dict[str, HistoryEntry],
        page: HistoryPage,
        new: Sequence[HistoryRow],
    ) -> tuple[list[HistoryEntry], str]:
        """The cached history with the account's rows of `new` (every row that arrived since
        the last read, on a server ignoring `accountID`) merged on: nothing else changed."""
        fresh = [r.entry for r in new if r.entry is not None and r.owned_by(account)]
        if foreign := sum(not r.owned_by(account) for r in page.rows):
            # A page of the account's rows alone tells nothing: its newest rows may all be
            # theirs. Only a whole read says the server filters again.
            self._note_foreign(profile, account, foreign)
        rows.update({h.id: h for h in fresh})
        if fresh:
            values = {h.id: {"rating_key": h.rating_key, "at": h.viewed_at} for h in fresh}
            await asyncio.to_thread(
                self.store.mirror_put, SERVICE, profile, HISTORY, values, self.clock()
            )
        ordered = sorted(rows.values(), key=lambda h: (h.viewed_at, h.id), reverse=True)
        return ordered, unfiltered_cursor(page)

    async def _note_webhooks_stopped(
        self,
        profile: str,
        library: Library,
        history: Sequence[HistoryEntry],
        memory: Memory,
        first_listed: AbstractSet[str] | None,
        history_at: float,
    ) -> None:
        """Keep (a cursor of the profile, sent by the link run: webhookwatch.py) whether Plex
        shows a view of the profile's after the last webhook this server sent (its own, or
        Tautulli's naming it), or forget it.
        Only movies and episodes of the chosen libraries count (a track's webhook is ignored,
        never recorded) and never a view our own writes made, nor one synced late (listed
        first by this read, `first_listed`, or an earlier one, though dated before the read
        before it). Asks the server's machine id (cached a week) only when a view is newer
        than every Plex server's last webhook. `history_at`: when this read's began."""
        titles = _view_titles(library)
        skew = self.client.clock_skew
        ours = _echoes(history, [*memory.written.values(), *memory.before.values()], skew)
        dated = {
            h.id: (h.viewed_at - skew, titles[h.rating_key])
            for h in history
            if h.rating_key in titles and h.id not in ours
        }
        senders = webhookwatch.SENDERS
        last = await asyncio.to_thread(self.store.last_webhooks, senders)
        last = [one for one in last if one.server]  # a Tautulli's naming none: which server?
        read = webhookwatch.READ
        before = await asyncio.to_thread(self.store.get_cursor, SERVICE, profile, read)
        first = {n: dated[n][0] for n in first_listed or () if n in dated}
        late = webhookwatch.synced_late(webhookwatch.PreviousRead.from_json(before), first)
        # Kept while they could still be taken for evidence: after some server's last webhook.
        oldest = min((one.at for one in last), default=float("inf"))
        late = frozenset(n for n in late if n in dated and dated[n][0] > oldest)
        now = webhookwatch.PreviousRead(history_at, late).to_json()
        await asyncio.to_thread(self.store.set_cursor, SERVICE, profile, read, now, self.clock())
        views = [view for number, view in dated.items() if number not in late]
        found = None
        if views and last:
            newest_anywhere = max(one.at for one in last)
            if webhookwatch.stopped("", "", newest_anywhere, views) is not None:
                machine = await self._machine_id()
                here = max((one.at for one in last if one.server == machine), default=None)
                url = self.client.config.url or "services.plex.url"
                found = webhookwatch.stopped(machine, url, here, views)
        kept = await asyncio.to_thread(self.store.get_cursor, SERVICE, profile, webhookwatch.CURSOR)
        if found is None and kept is not None:
            await asyncio.to_thread(self.store.forget_cursor, SERVICE, profile, webhookwatch.CURSOR)
        elif found is not None and kept != found.to_json():
            await asyncio.to_thread(
                self.store.set_cursor,
                SERVICE,
                profile,
                webhookwatch.CURSOR,
                found.to_json(),
                self.clock(),
            )

    def _note_foreign(self, profile: str, account: str, foreign: int) -> None:
        """Tell (log, status page, `/api/status`, metrics) when the server sent history rows
        of other accounts though asked for `account`'s alone: they were dropped, but the
        server ignores the filter (an older one, or a proxy dropping the query), and without
        this a person would silently depend on every row naming its account."""
        key = (self.client.config.url, profile)
        if not foreign:
            _UNFILTERED.over(
                key,
                "the Plex server filters its watch history by account again",
                self.clock(),
                profile=profile,
            )
            if self.metrics is not None:
                self.metrics.plex_history_filtered(profile)
            return
        message = unfiltered_history(profile, account, foreign)
        _UNFILTERED.warning(key, message, self.clock(), profile=profile, foreign_rows=foreign)
        if self.metrics is not None:
            self.metrics.plex_history_unfiltered(profile, foreign, message, self.clock())

    # ------------------------------------------------------------------ memory (store)

    def _memory(self, profile: str) -> Memory:
        written = self.store.mirror_get(SERVICE, profile, WRITTEN)
        before = self.store.mirror_get(SERVICE, profile, WRITTEN_BEFORE)
        return Memory(
            {record: Written.from_dict(v) for record, v in written.items()},
            self.store.mirror_get(SERVICE, profile, SYNTHETIC),
            frozenset(self.store.mirror_get(SERVICE, profile, RETIRED)),
            {record: Written.from_dict(v) for record, v in before.items()},
        )

    def _play_rows(self, profile: str) -> PlayRows:
        waiting: set[tuple[str, int]] = set()
        dead: set[tuple[str, int]] = set()
        maybe_sent: list[MaybeSent] = []
        for queued in self.store.plays_not_given_up(SERVICE, profile):
            try:
                key = key_for_ref(ref_from_dict(queued.item))
            except (KeyError, TypeError, ValueError):
                continue  # its delivery makes a dead letter of it, saying why
            if key is None:
                continue
            (dead if queued.given_up else waiting).add(PlayRows.play(key, queued.at))
            if queued.may_have_landed:
                maybe_sent.append(
                    MaybeSent(key, queued.at, queued.row, queued.queued_at, queued.landed_by)
                )
        return PlayRows(frozenset(waiting), frozenset(dead), tuple(maybe_sent))

    def _mirrored(self, profile: str) -> Mirrored:
        get = self.store.mirror_get_if_whole
        keys, plays = get(SERVICE, profile, KEYS), get(SERVICE, profile, PLAYS)
        partial = {c for c, got in ((KEYS, keys), (PLAYS, plays)) if got is None}
        return Mirrored(keys or {}, plays or {}, frozenset(partial))

    def _remember(
        self,
        profile: str,
        built: Built,
        mirrored: Mirrored,
        loaded: Mapping[str, Written],
        machine: str | None,
        history_account: str | None,
    ) -> None:
        """`mirrored`: the maps the deliverer writes too, as the read loaded them before it
        listed; `loaded`: our writes as it loaded them; `machine`: the server read, when this
        run asked (`account`); `history_account`: the account whose history was read, if
        any."""
        now, store, memory = self.clock(), self.store, built.memory
        synthetic = [(record, json.dumps(v)) for record, v in memory.synthetic.items()]

        def the_rest(changes: Mapping[str, MirrorChange]) -> Callable[[object], None]:
            """What goes with the maps' last part, in its transaction: a write cut before it
            leaves the maps marked not whole, never this read's server id and small maps
            beside the last read's plays, which the next run reads against."""

            def write(_: object) -> None:
                if machine is None:
                    store.forget_cursor(SERVICE, profile, KEYS_FROM)
                else:
                    store.set_cursor(SERVICE, profile, KEYS_FROM, machine, now)
                if history_account is None:
                    store.forget_cursor(SERVICE, profile, HISTORY_ACCOUNT)
                else:
                    store.set_cursor(SERVICE, profile, HISTORY_ACCOUNT, history_account, now)
                store.mirror_replace_encoded(SERVICE, profile, SYNTHETIC, synthetic, now)
                store.mirror_put(SERVICE, profile, RETIRED, {h: {} for h in memory.retired}, now)
                # Each written, if with nothing (as always): that gives it a version, and the
                # deliverer's kept copy of one never versioned is read again for every batch.
                for collection in (WRITTEN, WRITTEN_BEFORE):
                    store.mirror_put_encoded(
                        SERVICE, profile, collection, changes[collection].put, now
                    )
                    store.mirror_remove(SERVICE, profile, collection, changes[collection].taken)

            return write

        # Worked out and encoded beside the store's lock, from its maps as they are now (read
        # on a connection of their own): at 40,000 plays decoding and comparing them took
        # most of a second, which every webhook's record waited for behind the lock. The
        # big maps go in parts (`Store.mirror_change_in_parts`); one written meanwhile by
        # another (the deliverer writes as it goes, also while a run reads) has what is left
        # worked out again from what the store holds then: `read_back` leaves what we wrote
        # already as it is.
        for _ in range(WRITE_BACK_TRIES):
            stored = store.mirror_copy(SERVICE, profile, _REMEMBERED)
            changes = _remembered(stored.collections, built, mirrored, loaded)
            in_parts = {c: changes[c] for c in _IN_PARTS}
            was = {c: stored.versions.get(c) for c in _REMEMBERED}
            with_them = {c: changes[c] for c in _REMEMBERED if c not in _IN_PARTS}
            if store.mirror_change_in_parts(
                SERVICE, profile, in_parts, was, the_rest(with_them), now
            ):
                return
        # Written again and again meanwhile: what the store holds decides, in one transaction.
        with store.transaction():
            now_held = {c: store.mirror_get(SERVICE, profile, c) for c in _REMEMBERED}
            changes = _remembered(now_held, built, mirrored, loaded)
            store.mirror_change_in_parts(
                SERVICE,
                profile,
                {c: changes[c] for c in _IN_PARTS},
                {},
                the_rest(changes),
                now,
            )


# The maps a read writes back over what the store holds (`PlexReader._remember`), and those
# of them written in parts (the big ones: an entry per item and per play).
_REMEMBERED = (KEYS, PLAYS, WRITTEN, WRITTEN_BEFORE)
_IN_PARTS = (KEYS, PLAYS)
WRITE_BACK_TRIES = 3  # writes in parts cut by another's write, before one transaction does it


def _remembered(
    stored: Mapping[str, Mapping[str, Any]],
    built: Built,
    mirrored: Mirrored,
    loaded: Mapping[str, Written],
) -> dict[str, MirrorChange]:
    """What a read writes to the maps of `_REMEMBERED`, given what the store holds of them
    (`stored`): `read_back` of the maps the deliverer writes too, as the read `loaded` them
    (`mirrored`, our writes); the records of written-before the read's memory no longer
    holds (only ever taken from, by `_carried_over`: the rows left keep the start over's
    date, which `Store.prune` goes by, KEEP_WRITTEN_BEFORE). Pure."""

    def encoded(items: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [(key, json.dumps(value)) for key, value in items.items()]

    writes: dict[str, MirrorChange] = {}
    for collection, loaded_map, read in (
        (KEYS, mirrored.keys, built.keys),
        (PLAYS, mirrored.plays, built.plays),
    ):
        # A map loaded not whole (a write of it cut short) is no record of what the last
        # read kept: the read's map replaces it whole.
        as_loaded = stored[collection] if collection in mirrored.partial else loaded_map
        changes = read_back(as_loaded, read, stored[collection])
        writes[collection] = MirrorChange(encoded(changes.put), changes.taken)
    held = {r: Written.from_dict(v) for r, v in stored[WRITTEN].items()}
    back = written_back(loaded, built.memory.written, held)
    writes[WRITTEN] = MirrorChange(encoded({r: w.to_dict() for r, w in back.items()}))
    before = built.memory.before
    writes[WRITTEN_BEFORE] = MirrorChange(
        (), [record for record in stored[WRITTEN_BEFORE] if record not in before]
    )
    return writes


def unfiltered_history(profile: str, account: str, foreign: int) -> str:
    """What to tell when the server sent `foreign` history rows of other accounts while
    asked for `account`'s (profile `profile`). Pure."""
    return (
        f"the Plex server ignored the accountID filter of its watch history: reading profile "
        f"{profile}'s (account {account}) it also sent {foreign} play(s) of other accounts, "
        "which were dropped; an older Plex Media Server, or a proxy in front of it dropping "
        "the query string, does this: update Plex, or let the proxy pass the query (until "
        "then the check for news reads the newest 100 plays of everyone's, and a read the "
        "whole history when plays were deleted or arrived late)"
    )


def _history_cursor(total: int, newest: str) -> str:
    return f"{total}:{newest}"


def counted_cursor(entries: Iterable[HistoryEntry], gone: Mapping[str, float]) -> str:
    """The history cursor of a read (see `PlexClient.history_head`): how many rows the server
    counts, the rows of items deleted from the library (`gone`, id -> viewedAt) with them, and
    the newest's id. Pure."""
    dated = [(h.viewed_at, h.id) for h in entries] + [(at, n) for n, at in gone.items()]
    return _history_cursor(len(dated), max(dated)[1] if dated else "")


def unfiltered_cursor(page: HistoryPage | None) -> str:
    """The history cursor of a read from a server that ignores `accountID`: how many rows of
    everyone's the page taken before the read counted, and the newest's id ("all:TOTAL:ID");
    without such a page, one that matches nothing ("all:"): the next check reads. Pure."""
    if page is None:
        return UNFILTERED
    return f"{UNFILTERED}{page.total}:{page.rows[0].id if page.rows else ''}"


def arrivals(page: HistoryPage, cursor: str) -> list[HistoryRow] | None:
    """The rows (everyone's) that arrived since the read that left `cursor`
    (`unfiltered_cursor`): those above the row that was newest then, when they make up the
    whole difference in the total. None when the page cannot tell: that row is gone or
    beyond the page (deleted, or more arrived than the page holds), or the total moved by
    more or less than those rows (a row deleted; one arriving late, dated before that row,
    sorts below it). A deletion and a late row between two reads cancel out, as in the
    filtered check's count; the daily full read makes up for it. Pure."""
    total, _, newest = cursor.removeprefix(UNFILTERED).partition(":")
    if not cursor.startswith(UNFILTERED) or not total.isdigit():
        return None
    ids = [row.id for row in page.rows]
    if newest:
        if newest not in ids:
            return None
        count = ids.index(newest)
    elif int(total) == 0:
        count = len(ids)
    else:
        return None
    if page.total - int(total) != count:
        return None
    return list(page.rows[:count])


def watched_cursor(machine: str, library: Library) -> str:
    """What the cheap check of a person read without history asks about: the server, the
    newest view of their movies and episodes (the server's `lastViewedAt`; 0: none), and
    the listings they came from with how many of their items were watched
    ("MACHINE SINCE 1/movie:3 2/episode:40"). Pure."""
    viewed = [
        int(item.last_viewed_at)
        for item in (*library.movies, *library.episodes)
        if item.view_count > 0 and item.last_viewed_at
    ]
    listed = " ".join(f"{entry.section}/{entry.kind}:{entry.watched}" for entry in library.listed)
    return f"{machine} {max(viewed, default=0)} {listed}".strip()


def watched_in(listing: Iterable[LibraryItem]) -> int:
    """How many items of one listing are watched: what the server counts for `viewCount>>=0`
    (`PlexClient.watched_count`), so an idle server agrees with the cursor. Pure."""
    return sum(1 for item in listing if item.view_count > 0)


def parse_watched_cursor(cursor: str) -> tuple[str, int, list[Listed]] | None:
    """`watched_cursor`'s parts; None when it names no listing to ask (or is not one: "",
    as a link run by a version before this check left it, or one without the watched
    counts, which a version before them left). Pure."""
    machine, since, *entries = [*cursor.split(" "), ""]
    listed: list[Listed] = []
    for entry in filter(None, entries):
        section, _, counted = entry.partition("/")
        kind, _, watched = counted.partition(":")
        if not section or kind not in ("movie", "episode") or not watched.isdigit():
            return None
        listed.append(Listed(section, kind, int(watched)))
    if not machine or not since.isdigit() or not listed:
        return None
    return machine, int(since), listed


def make_reader(
    config: Config,
    store: Store,
    link: Link,
    profiles: list[str],
    clock: Clock,
    metrics: Metrics | None = None,
) -> PlexReader:
    client = plex_client(config, store, clock, metrics)
    return PlexReader(client, config, store, link, clock, metrics)
