"""Identity resolution: turn what a source gave us into ids a target can use, with a cache.

Pure rules decide which lookups to try; the lookup itself and the cache are injected.

`Enricher` is the one place every delivery target fills in ids a webhook left out: it asks the
media server the item came from (Plex by ratingKey, Jellyfin/Emby by SeriesId), then, where
services.trakt is configured, Trakt's id search. Each target says what it needs (`Need`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from watchbridge.alerts import UNREACHABLE_ALERT_AFTER, Notifier, format_span
from watchbridge.backoff import doubled
from watchbridge.causes import DELIVERED_TO, outage_key, server_credential, server_key_works
from watchbridge.config import service_title
from watchbridge.http import DOWN_STATUS, ServiceError, Unavailable
from watchbridge.ingest.common import server_guid
from watchbridge.logs import Repeating
from watchbridge.model import Ids, MediaRef, ref_from_dict
from watchbridge.services.jellyfin import MediaServerAuthError, Series
from watchbridge.services.plex import PlexAuthError, PlexItem, ServerTokenRefused
from watchbridge.services.trakt import can_send

log = logging.getLogger(__name__)

FOUND_TTL = 30 * 86400.0
# Under the hourly retry of an unmatched row: each retry asks again (a fresh episode may be
# added on Trakt an hour after it aired).
MISSING_TTL = 3000.0
# Trakt's lookups without a sign-in (id search, season lists) share one bucket per app and
# address: 500 per 5 minutes (reference §3). The retries of unmatched rows take at most 150 of
# them, one every RETRY_LOOKUP_SPACING seconds (see RetrySlots): the rest stays free for the
# lookups of plays going out now and for link runs.
RETRY_LOOKUP_SPACING = 2.0
PLEX_FOUND_TTL = 7 * 86400.0
PLEX_MISSING_TTL = 3600.0  # PMS may still be matching a freshly added file
SERIES_FOUND_TTL = 7 * 86400.0
SERIES_MISSING_TTL = 3600.0  # a series the server is still identifying gets its ids soon
# After a media server failed to answer (down, timing out, 5xx), the rows that need it wait
# this long (or the server's Retry-After) without asking: a hanging server would otherwise cost
# every row of a pass its own timeouts and hold up every other delivery behind them.
SERVER_OUTAGE_PAUSE = 60.0
# Trakt's id search down: the searches after a failed one fail at once, without asking, for
# SERVER_OUTAGE_PAUSE, doubled while it stays down up to this. The plays that wait for it are
# held without giving up (a Serializd play of a Plex legacy agent's show waits out a Trakt
# outage as Trakt's own plays do); each asking would cost every pass their requests' retries.
SEARCH_PAUSE_MAX = 300.0
# Trakt's id search down this long is told in an alert of its own (SEARCH_OUTAGE_KEY) unless
# an outage alert of Trakt's own deliveries is open, which tells of these plays too and comes
# first (UNREACHABLE_ALERT_AFTER) where Trakt has plays waiting: told once, not twice.
SEARCH_ALERT_AFTER = 3600.0
# While plays wait for it the search is asked every few minutes (SEARCH_PAUSE_MAX): failures
# further apart than this were not one outage (nothing asked between), so a new one starts.
SEARCH_OUTAGE_GAP = 2 * SEARCH_ALERT_AFTER
SEARCH_OUTAGE_KEY = "trakt-search"

Search = Callable[[str, str, str], Awaitable[list[dict[str, Any]]]]
TitleSearch = Callable[[str, str, int | None], Awaitable[list[dict[str, Any]]]]
PlexMetadata = Callable[[str], Awaitable[PlexItem | None]]
# Plex's catalogue (services.plex.metadata_url): a plex:// guid's key -> its external ids.
PlexCatalogue = Callable[[str], Awaitable[Ids | None]]
Answers = Callable[[], Awaitable[bool]]  # whether a media server answers at all


class MediaServerItems(Protocol):
    """What a Jellyfin or Emby client reads for the enricher (services.jellyfin)."""

    async def series(self, series_id: str) -> Series | None: ...

    async def movie(self, movie_id: str) -> Series | None: ...

    async def answers(self) -> bool: ...


TRAKT_ID_NAMES = ("trakt", "imdb", "tmdb", "tvdb", "slug")  # what Trakt matches items by


class ServerTokenHealth(Protocol):
    """Keeps whether the Plex server takes its own token, services.plex.token, for the
    sign-in health (`readers.plex.ServerTokens`, as a link's read and a delivery keep it)."""

    async def server_refused(self, reason: str) -> None: ...

    async def server_taken(self) -> None: ...


class IdCache(Protocol):
    def cache_get(self, namespace: str, lookup: str, now: float) -> tuple[bool, Any]: ...

    def cache_put(
        self, namespace: str, lookup: str, value: Any, now: float, ttl: float
    ) -> None: ...


def lookups(item: MediaRef) -> list[tuple[str, str, str]]:
    """(id_type, id, type) searches worth trying for an item, strongest first."""
    kind = "episode" if item.kind == "episode" else item.kind
    # One IMDb id may name both parts of a two-part episode: an episode's own TMDB or TVDB
    # id is asked first.
    order = ("tmdb", "tvdb", "imdb") if item.kind == "episode" else ("imdb", "tmdb", "tvdb")
    return [(name, str(value), kind) for name in order if (value := getattr(item.ids, name))]


# An episode's show ids searched on Trakt, strongest first (a show's TMDB id is what is sought).
_SHOW_SEARCH_NAMES = ("trakt", "tvdb", "imdb")


def show_lookups(item: MediaRef) -> list[tuple[str, str, str]]:
    """(id_type, id, "show") searches of an episode's show, for an episode whose show has no
    TMDB id (the one Serializd keys shows by): a Plex legacy agent names an episode by its
    show's TheTVDB id alone, and its own ids find nothing. Pure."""
    if item.kind != "episode" or item.show_ids.tmdb:
        return []
    ids = item.show_ids
    return [
        (name, str(value), "show") for name in _SHOW_SEARCH_NAMES if (value := getattr(ids, name))
    ]


def one_show(results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The show an id search of a show's id names: the only one (two would be a guess). Pure."""
    shows = [r for r in results if r.get("type") == "show" and isinstance(r.get("show"), dict)]
    return shows[0] if len(shows) == 1 else None


def with_show_match(item: MediaRef, result: Mapping[str, Any]) -> MediaRef:
    """An episode with its show's ids from a show search result added (ours kept). Pure."""
    found = ids_from((result.get("show") or {}).get("ids") or {})
    return replace(item, show_ids=item.show_ids.merged(found))


def title_lookup(item: MediaRef) -> tuple[str, str, int | None] | None:
    """(type, title, year) to search Trakt by for an item no id of ours can name: a movie by
    its title, an episode by its show's title (its numbers then place it). Only for our generic
    webhook, whose sender may know no ids: a media server's item without ids is one Trakt
    cannot know (home videos) or one its server will name (see Enricher)."""
    if lookups(item):
        return None
    if item.kind == "movie" and item.title:
        title, year = split_year(item.title)
        return "movie", title, item.year or year
    numbered = item.number is not None or item.absolute is not None
    if item.kind == "episode" and item.show_title and numbered and not has_trakt_ids(item.show_ids):
        title, year = split_year(item.show_title)
        return "show", title, item.year or year
    return None


# "Doctor Who (2005)": a year in brackets ending a title, as Sonarr and Radarr name folders.
_YEAR_IN_TITLE = re.compile(r"^(.*\S)\s*\((\d{4})\)$")


def split_year(title: str) -> tuple[str, int | None]:
    """A title without the year in brackets that ends it, and that year (None when it has
    none): that year tells a remake from the original. Pure."""
    found = _YEAR_IN_TITLE.match(title.strip())
    return (found.group(1), int(found.group(2))) if found else (title, None)


# The webhook sources whose rows no id names are searched on Trakt by title (see title_lookup).
TITLE_SEARCH_SOURCES = frozenset({"generic"})


def title_unmatched(item: MediaRef, source: str | None) -> str | None:
    """Why a row from `source` stays unmatched after Trakt was searched for its title; None
    when its title is not searched."""
    if source not in TITLE_SEARCH_SOURCES or title_lookup(item) is None:
        return None
    return (
        f"Trakt has no single title matching {item.describe()}: add its ids to the webhook "
        "(item.ids, or item.show.ids for an episode)"
    )


def show_ids_also(item: MediaRef, source: str | None) -> str | None:
    """What else would place an episode from a webhook whose sender sends what it is given
    (the generic webhook), told after a more pressing fix (`with_doubt`)."""
    if source not in TITLE_SEARCH_SOURCES or item.kind != "episode":
        return None
    return "sending its show's ids in the webhook's item.show.ids would also help"


def title_key(title: str) -> str:
    """A title as compared across sources: case, accents, punctuation and spacing ignored."""
    folded = unicodedata.normalize("NFKD", title).casefold()
    return "".join(char for char in folded if char.isalnum())


def title_match(
    results: Sequence[dict[str, Any]], kind: str, title: str, year: int | None
) -> dict[str, Any] | None:
    """The one result of `kind` titled `title` (and of `year`, when known). A title names an
    item only when exactly one answers to it: two shows called The Office match neither. A
    year in brackets ending a title is no part of it (`split_year`)."""
    wanted = title_key(split_year(title)[0])
    same = [
        result
        for result in results
        if result.get("type") == kind
        and isinstance(media := result.get(kind), dict)
        and title_key(split_year(str(media.get("title") or ""))[0]) == wanted
        and (not year or media.get("year") == year)
    ]
    return same[0] if len(same) == 1 else None


def one_result(item: MediaRef, results: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The search result that is `item`: the only one, or among several (IMDb gives every
    part of a multi-part episode one id) the episode at the item's season and number; None
    when those do not single one out (it would be a guess). Without numbers to compare (a
    movie Trakt holds twice), the first."""
    if item.kind != "episode" or item.season is None or item.number is None or len(results) < 2:
        return results[0] if results else None
    at_numbers = [
        result
        for result in results
        if isinstance(episode := result.get("episode"), dict)
        and (episode.get("season"), episode.get("number")) == (item.season, item.number)
    ]
    return at_numbers[0] if len(at_numbers) == 1 else None


# What Trakt's id search cannot be trusted with: an episode id that is really its series' id
# (a wrong NFO, some metadata agents). TVDB and TMDB number episodes and series apart, so a
# series' id searched as an episode's names an episode of some other show.
SERIES_ID_FAULT = "put there by an NFO or metadata agent: refresh the episode's metadata"
_SERIES_ID_SAID = f"its series' id {SERIES_ID_FAULT}"
_EPISODE_ID_NAMES = {"tmdb": "TMDB", "tvdb": "TVDB", "imdb": "IMDb"}
_SHOW_ID_NAMES = ("trakt", "tvdb", "tmdb", "imdb")


def copied_series_ids(item: MediaRef) -> list[str]:
    """The kinds of an episode's own ids that equal its show's id of the same kind: those
    are its series' ids, copied among its own. Pure."""
    if item.kind != "episode":
        return []
    own = item.ids
    return [
        n
        for n in _EPISODE_ID_NAMES
        if getattr(own, n) and getattr(own, n) == getattr(item.show_ids, n)
    ]


# Webhook sources whose episode ids may be ones a user wrote (an NFO, a metadata plugin's
# guess), so may be its series' ids: Jellyfin's and Emby's provider ids ("occasionally series
# ids, depending on metadata providers", reference jellyfin-emby-tautulli.md) and whatever a
# generic webhook's sender read. Plex's own agents take an episode's ids from Plex's metadata
# servers (a plex:// guid), and a legacy agent's guid names the show (reference plex.md).
LOCAL_METADATA_SOURCES = frozenset({"jellyfin", "emby", "generic"})


def own_ids_may_be_written(item: MediaRef, source: str | None) -> bool:
    """Whether an episode's own ids may come from local metadata a user wrote, so are worth
    an id search before it goes by its TVDB id alone: from Jellyfin, Emby or the generic
    webhook (or a row of an older release a Jellyfin series key names); from Plex only
    without a plex:// episode guid (an NFO agent's episode: its `Guid[]` is the NFO's). Pure."""
    if source in LOCAL_METADATA_SOURCES:
        return True
    if source == "plex":
        return not item.ids.plex_guid
    return source is None and origin(item, source) == "jellyfin"


def distrusted(
    item: MediaRef, id_type: str, result: Mapping[str, Any], names_a_show: bool = True
) -> str | None:
    """Why the search result for an episode's own `id_type` id is not that episode, in words
    a user can act on; None when nothing the item says contradicts it. It contradicts when
    the id is the show's own id; when the item names its show by an id of a kind the
    result's show has too, and none of those agrees (one agreeing is the same show listed
    under an old TVDB id); or, without show ids, when both its numbers and its show's title
    differ (either alone is anime's absolute numbering, or a localised title) and the id
    names a show on Trakt as well (`names_a_show`, see `judged_by_titles`): both differ for
    a localised title in TheTVDB's order too, whose own id names no show. Pure."""
    value = getattr(item.ids, id_type, None)
    if item.kind != "episode" or id_type not in _EPISODE_ID_NAMES or not value:
        return None
    said = f"the episode's {_EPISODE_ID_NAMES[id_type]} id {value}"
    if id_type in copied_series_ids(item):
        return f"{said} is its series' id, {SERIES_ID_FAULT}"
    show = result.get("show") or {}
    theirs = ids_from(show.get("ids") or {})
    named = str(show.get("title") or "another show")
    kinds = [n for n in _SHOW_ID_NAMES if getattr(item.show_ids, n)]
    if kinds:
        shared = [n for n in kinds if getattr(theirs, n)]
        if shared and all(getattr(item.show_ids, n) != getattr(theirs, n) for n in shared):
            return f"{said} names an episode of {named} on Trakt, likely {_SERIES_ID_SAID}"
        return None
    episode = result.get("episode") or {}
    at = (episode.get("season"), episode.get("number"))
    numbers_differ = (
        item.season is not None and item.number is not None and at != (item.season, item.number)
    )
    ours, title = item.show_title or "", str(show.get("title") or "")
    titles_differ = bool(ours and title) and _show_key_title(ours) != _show_key_title(title)
    if numbers_differ and titles_differ and names_a_show:
        theirs_at = f"S{at[0]:02d}E{at[1]:02d}" if all(isinstance(n, int) for n in at) else ""
        where = f"names {named} {theirs_at} on Trakt".replace("  ", " ")
        return f"{said} {where}, likely {_SERIES_ID_SAID}"
    return None


def judged_by_titles(item: MediaRef) -> bool:
    """Whether `distrusted` judges a search answer for this episode by its show's title and
    its numbers alone (it names its show by no id), so needs to know whether the id names a
    show on Trakt too. Pure."""
    return item.kind == "episode" and not any(getattr(item.show_ids, n) for n in _SHOW_ID_NAMES)


def _show_key_title(title: str) -> str:
    return title_key(split_year(title)[0])


def own_tmdb(item: MediaRef) -> int | None:
    """An item's own TMDB id as a number; for an episode not its series' id copied among its
    own (`copied_series_ids`): looked up in its show's TMDB seasons, that id finds nothing, and
    stands in the way of what would place it (its air date, Trakt's id search). Pure."""
    if not _digits(item.ids.tmdb) or "tmdb" in copied_series_ids(item):
        return None
    return int(item.ids.tmdb or 0)


def without_ids(item: MediaRef, names: Sequence[str]) -> MediaRef:
    """The item without its own ids of these kinds. Pure."""
    return replace(item, ids=replace(item.ids, **dict.fromkeys(names))) if names else item


def ids_from(found: dict[str, Any]) -> Ids:
    return Ids(**{k: str(v) for k, v in found.items() if k in Ids.__dataclass_fields__ and v})


def apply_match(item: MediaRef, result: dict[str, Any]) -> MediaRef:
    """The item with the ids of one search result added (ours kept where both have one)."""
    media = result.get(result.get("type", item.kind)) or {}
    show = result.get("show") or {}
    return replace(
        item,
        ids=item.ids.merged(ids_from(media.get("ids") or {})),
        show_ids=item.show_ids.merged(ids_from(show.get("ids") or {})),
    )


async def remembered(
    cache: IdCache,
    namespace: str,
    lookup: str,
    clock: Callable[[], float],
    ask: Callable[[], Awaitable[Any]],
) -> Any:
    """The cached answer to `lookup`, else what `ask` answers, kept FOUND_TTL (an empty answer
    MISSING_TTL: the service may know it soon)."""
    hit, answer = cache.cache_get(namespace, lookup, clock())
    if not hit:
        answer = await ask()
        cache.cache_put(namespace, lookup, answer, clock(), FOUND_TTL if answer else MISSING_TTL)
    return answer


# A show's season list on Trakt: (season, number, number_abs, title, ids) of each episode.
ListedRow = tuple[int, int, int | None, str | None, dict[str, str]]
ShowListing = Callable[[Ids], Awaitable[list[ListedRow]]]
LISTING_TTL = 7 * 86400.0
# A listing lacking the episode asked for is read again after this: a new episode is listed on
# Trakt some hours after it aired, and an unmatched row is tried hourly.
LISTING_RECHECK = 3000.0
# Placeholder titles ("Episode 14", "Folge 3") say nothing about which episode it is.
_PLACEHOLDER_TITLE = re.compile(r"^\D*\d+$")


def same_episode(ours: MediaRef, ids: Ids, title: str | None) -> bool:
    """Whether the episode Trakt lists at our season and number (its `ids` and `title`) is
    ours. Numbers alone prove nothing (a TVDB order numbers episodes unlike Trakt): no id of
    both may differ, and an id or a real title must agree. Pure."""
    shared = [n for n in ("tvdb", "tmdb", "imdb") if getattr(ours.ids, n) and getattr(ids, n)]
    if any(getattr(ours.ids, n) != getattr(ids, n) for n in shared):
        return False
    if shared:
        return True
    if not ours.title or not title:
        return False
    key = title_key(ours.title)
    return key == title_key(title) and not _PLACEHOLDER_TITLE.match(key)


class TraktEpisodes:
    """Places episodes on Trakt's season list of their show (cached per show; `/sync/history`
    takes no `number_abs`, and Trakt lost many episodes' TVDB ids in its move to TMDB):
    - `place`: an episode known only by its absolute number (HAMA tvdb3/tvdb4, a generic
      webhook's `item.absolute`) gets Trakt's season and number;
    - `by_numbers`: an episode Trakt did not find by its own ids gets the Trakt id of the
      episode at its numbers, when that is the same episode (`same_episode`)."""

    namespace = "trakt-episodes"

    def __init__(self, listing: ShowListing, cache: IdCache, clock: Callable[[], float]) -> None:
        self.listing = listing
        self.cache = cache
        self.clock = clock

    async def place(self, item: MediaRef) -> MediaRef:
        if item.kind != "episode" or item.number is not None or item.absolute is None:
            return item
        found = await self._find(item, lambda row: row[0] > 0 and row[2] == item.absolute)
        return item if found is None else replace(item, season=found[0], number=found[1])

    async def by_numbers(self, item: MediaRef) -> MediaRef | None:
        if item.kind != "episode" or item.season is None or item.number is None:
            return None

        def ours(row: ListedRow) -> bool:
            at_numbers = row[:2] == (item.season, item.number)
            return (
                at_numbers
                and bool(row[4].get("trakt"))
                and same_episode(item, Ids(**row[4]), row[3])
            )

        # A listed episode not confirmed yet (a new one, "Episode 14") reads the list again
        # later like a missing one: Trakt names new episodes hours after they air.
        found = await self._find(item, ours)
        if found is None:
            return None
        trakt = found[4]["trakt"]
        now = self.clock()
        self.cache.cache_put(self.namespace, _own_ids(item), trakt, now, FOUND_TTL)
        return replace(item, ids=Ids(trakt=trakt).merged(item.ids))

    async def following(
        self, show_ids: Ids, season: int, number: int, steps: int
    ) -> tuple[int, int] | None:
        """The episode `steps` after (season, number) in Trakt's list of the show's regular
        episodes (into the next season after a season's last); None when the list does not
        have both."""
        probe = MediaRef("episode", show_ids=show_ids, season=season, number=number)
        if await self._find(probe, lambda row: row[:2] == (season, number)) is None:
            return None
        hit, cached = self.cache.cache_get(self.namespace, _show_key(show_ids), self.clock())
        if not hit:
            return None
        listed = sorted((int(r[0]), int(r[1])) for r in cached["episodes"] if int(r[0]) > 0)
        if (season, number) not in listed:
            return None
        at = listed.index((season, number)) + steps
        return listed[at] if 0 <= at < len(listed) else None

    def placed(self, item: MediaRef) -> MediaRef:
        """The episode with the Trakt id `by_numbers` found for its ids before (no request):
        later tries, and the check of a send whose answer was lost, name it as it was sent."""
        if item.kind != "episode" or not item.ids or item.ids.trakt:
            return item
        hit, trakt = self.cache.cache_get(self.namespace, _own_ids(item), self.clock())
        return replace(item, ids=Ids(trakt=trakt).merged(item.ids)) if hit and trakt else item

    async def _find(self, item: MediaRef, wanted: Callable[[ListedRow], bool]) -> ListedRow | None:
        if not has_trakt_ids(item.show_ids):
            return None
        show = _show_key(item.show_ids)
        now = self.clock()
        hit, cached = self.cache.cache_get(self.namespace, show, now)
        if hit and (found := _first(cached["episodes"], wanted)) is not None:
            return found
        if hit and now - cached["at"] < LISTING_RECHECK:
            return None
        episodes = await self.listing(item.show_ids)
        self.cache.cache_put(
            self.namespace, show, {"at": now, "episodes": episodes}, now, LISTING_TTL
        )
        return _first(episodes, wanted)


def _show_key(show_ids: Ids) -> str:
    """A show's listing in the cache, by its strongest id."""
    return ":".join(next(iter(show_ids.present().items())))


def _own_ids(item: MediaRef) -> str:
    """All of an episode's own ids as one cache key (an IMDb id alone may name every part of a
    multi-part episode)."""
    return "episode:" + ",".join(f"{name}:{value}" for name, value in item.ids.present().items())


def _first(rows: Sequence[Sequence[Any]], wanted: Callable[[ListedRow], bool]) -> ListedRow | None:
    """The first listed row `wanted` takes (rows read back from the cache are JSON lists)."""
    listed = ((int(s), int(n), a, t, dict(ids)) for s, n, a, t, ids in rows)
    return next((row for row in listed if wanted(row)), None)


SEARCH_FAILED = "trakt id search failed"


@dataclass
class RetrySlots:
    """Moments for unmatched rows to be tried again, one after the other: a row that made
    `lookups` requests now keeps that many RETRY_LOOKUP_SPACINGs of its next round to itself.
    Rows that went unmatched together (one person's backlog, all retried hourly) would come
    back together, and their lookups would hold up every delivery behind them. Pure: times are
    passed in."""

    next_free: float = 0.0

    def take(self, earliest: float, lookups: int) -> float:
        """The moment, not before `earliest`, for a row that made `lookups` requests now."""
        at = max(earliest, self.next_free)
        self.next_free = at + max(1, lookups) * RETRY_LOOKUP_SPACING
        return at


LOOKUP = "lookup"  # the one problem a media server's lookups log (see logs.Repeating)


def search_lookup(id_type: str, value: str, kind: str) -> str:
    """The cache key of Trakt's id search results for one id (TraktResolver.namespace)."""
    return f"all:{kind}:{id_type}:{value}"


def with_searched_ids(cache: IdCache, item: MediaRef, now: float) -> MediaRef:
    """`item` with the ids an earlier Trakt id search by its own ids found (the cache only: no
    one is asked). A Jellyfin episode named by its TVDB id gets its show's TMDB id this way
    once any target's delivery looked it up, and an episode named by its show's ids alone (a
    Plex legacy agent's) once its show was searched (`show_lookups`)."""
    for id_type, value, kind in lookups(item):
        hit, found = cache.cache_get(
            TraktResolver.namespace, search_lookup(id_type, value, kind), now
        )
        chosen = one_result(item, found) if hit and isinstance(found, list) else None
        if not isinstance(chosen, dict):
            continue
        shows: Any = None
        if judged_by_titles(item):
            lookup = search_lookup(id_type, value, "show")
            hit, shows = cache.cache_get(TraktResolver.namespace, lookup, now)
            shows = shows if hit else True  # not asked yet: as if it named one
        if distrusted(item, id_type, chosen, names_a_show=bool(shows)) is None:
            return apply_match(item, chosen)
    for id_type, value, kind in show_lookups(item):
        lookup = search_lookup(id_type, value, kind)
        hit, found = cache.cache_get(TraktResolver.namespace, lookup, now)
        show = one_show(found) if hit and isinstance(found, list) else None
        if show is not None:
            return with_show_match(item, show)
    return item


class TraktResolver:
    """Finds Trakt ids for items by searching their other ids, or (where no id names them) their
    title; remembers answers."""

    namespace = "trakt-search"

    def __init__(
        self,
        search: Search,
        cache: IdCache,
        clock: Callable[[], float],
        title_search: TitleSearch | None = None,
        retry_slots: RetrySlots | None = None,
    ) -> None:
        self.search = search
        self.title_search = title_search
        self.cache = cache
        self.clock = clock
        # Shared by every resolver asking the same Trakt app (the targets' and the enricher's).
        self.retry_slots = retry_slots if retry_slots is not None else RetrySlots()
        self.asked = 0  # searches sent (not answered from the cache)
        # Searched for each queued row: through an outage, a line once, then hourly.
        self._failing = Repeating(log)

    def retry_after(self, asked_before: int, wait: float) -> float:
        """Seconds until an unmatched row is tried again, at least `wait`, at a moment of its
        own (RetrySlots); `asked_before`: `asked` as its lookups began."""
        now = self.clock()
        return self.retry_slots.take(now + wait, self.asked - asked_before) - now

    async def resolve(self, item: MediaRef, source: str | None = None) -> MediaRef | None:
        """The item with the Trakt ids its other ids find, or (for a row of a webhook source
        in TITLE_SEARCH_SOURCES) its title; else an episode with its show's ids that its
        show's ids find (`show_lookups`: its own ids placed nothing). An own id whose result
        is `distrusted` found nothing: it is left out of what is returned."""
        found, doubted = await self._search(item)
        item = without_ids(item, list(doubted))
        if found:
            resolved: MediaRef | None = apply_match(item, found)
        else:
            resolved = await self._by_title(item) if source in TITLE_SEARCH_SOURCES else None
        if resolved is None:
            resolved = await self._by_show(item)
        self._failing.over(SEARCH_FAILED, "trakt id search works again", self.clock())
        return resolved

    async def vetted(self, item: MediaRef) -> tuple[MediaRef, str | None]:
        """An episode with the Trakt ids its own ids find (as `resolve`), without those of its
        own ids Trakt's search says are not its own (`distrusted`: sent, they would name
        another show's episode), and why they were left out (None: none was)."""
        if item.kind != "episode" or item.ids.trakt:
            return item, None
        found, doubted = await self._search(item)
        item = without_ids(item, list(doubted))
        self._failing.over(SEARCH_FAILED, "trakt id search works again", self.clock())
        return apply_match(item, found) if found else item, next(iter(doubted.values()), None)

    def failed(self, item: MediaRef, exc: ServiceError) -> None:
        """Log that a search for `item` failed (the caller decides what its row does)."""
        problem, described = exc.message, item.describe()
        self._failing.warning(
            SEARCH_FAILED, SEARCH_FAILED, self.clock(), item=described, problem=problem
        )

    async def first_of_file(
        self, item: MediaRef, first: Ids, first_number: int | None = None
    ) -> tuple[Ids, int, int] | None:
        """Where Trakt has the first episode of the file `item` is a further episode of
        (`first`: that one's ids, `first_number` its number on the server): its show's Trakt
        ids, season and number; None when Trakt's search does not know it. An episode's IMDb
        id is asked last: one may name every part of a multi-part episode, and Trakt has lost
        many episodes' TVDB ids."""
        found = None
        probe = replace(item, kind="episode", number=first_number)
        for ids in (replace(first, imdb=None), Ids(imdb=first.imdb)):
            if ids and found is None:
                found, _ = await self._search(replace(probe, ids=ids))
        episode = (found or {}).get("episode") or {}
        season, number = episode.get("season"), episode.get("number")
        if not isinstance(season, int) or not isinstance(number, int):
            return None
        return ids_from(((found or {}).get("show") or {}).get("ids") or {}), season, number

    async def _search(self, item: MediaRef) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """Trakt's search result for the first of the item's ids that names one (cached), and
        the kinds of its own ids passed over before it as `distrusted`, each with why. A
        series' id copied among an episode's own is not asked about."""
        doubted: dict[str, str] = {}
        for id_type, value, kind in lookups(item):
            if id_type in copied_series_ids(item):
                doubted[id_type] = distrusted(item, id_type, {}) or ""
                continue

            async def ask(id_type: str = id_type, value: str = value, kind: str = kind) -> Any:
                self.asked += 1
                results = await self.search(id_type, value, kind)
                return [r for r in results if r.get("type") == kind]

            # Every result is kept: which one is ours depends on the item (its numbers).
            lookup = search_lookup(id_type, value, kind)
            found = await remembered(self.cache, self.namespace, lookup, self.clock, ask)
            chosen = one_result(item, found or [])
            if chosen is None:
                continue
            why = distrusted(item, id_type, chosen)
            if why and judged_by_titles(item) and not await self._names_a_show(id_type, value):
                why = None  # e.g. a localised title in TheTVDB's order: its own id is no show's
            if not why:
                return dict(chosen), doubted
            doubted[id_type] = why
        return None, doubted

    async def _names_a_show(self, id_type: str, value: str) -> bool:
        """Whether Trakt's id search finds a show by this id (cached as a show's lookup): asked
        only where titles and numbers alone doubt an episode's own id (`judged_by_titles`)."""
        return bool(await self._shows(id_type, value))

    async def _shows(self, id_type: str, value: str) -> list[dict[str, Any]]:
        """The shows Trakt's id search finds by this id (cached)."""

        async def ask() -> Any:
            self.asked += 1
            results = await self.search(id_type, value, "show")
            return [r for r in results if r.get("type") == "show"]

        lookup = search_lookup(id_type, value, "show")
        found = await remembered(self.cache, self.namespace, lookup, self.clock, ask)
        return found if isinstance(found, list) else []

    async def _by_show(self, item: MediaRef) -> MediaRef | None:
        """An episode with its show's ids (its TMDB id) that Trakt's id search of its show's
        ids finds (`show_lookups`); None when none names one show."""
        for id_type, value, _ in show_lookups(item):
            show = one_show(await self._shows(id_type, value))
            if show is not None:
                return with_show_match(item, show)
        return None

    async def _by_title(self, item: MediaRef) -> MediaRef | None:
        wanted = title_lookup(item) if self.title_search is not None else None
        if wanted is None or self.title_search is None:
            return None
        kind, title, year = wanted
        search = self.title_search

        async def ask() -> Any:
            self.asked += 1
            return title_match(await search(kind, title, year), kind, title, year)

        lookup = f"title:{kind}:{title_key(title)}:{year or ''}"
        cached = await remembered(self.cache, self.namespace, lookup, self.clock, ask)
        if not cached:
            return None
        if kind == "show":  # the episode's show: its numbers place the episode
            show_ids = ids_from((cached.get("show") or {}).get("ids") or {})
            return replace(item, show_ids=item.show_ids.merged(show_ids))
        return apply_match(item, cached)


# --------------------------------------------------------------------------- Plex enrichment


def has_trakt_ids(ids: Ids) -> bool:
    """Any id Trakt can match a show (or a movie) by."""
    return any(getattr(ids, name) for name in TRAKT_ID_NAMES)


def trakt_ready(item: MediaRef) -> bool:
    """Trakt can take it as we would send it (services.trakt.can_send decides). A season
    goes by its show's ids: a Plex season names its show by a plex:// guid only, whose ids
    the show's Plex item gives; a show's rating comes with its own."""
    if item.kind in ("movie", "episode"):
        return can_send(item)
    if item.kind == "season":
        return has_trakt_ids(item.show_ids)
    return True


def _digits(value: str | None) -> bool:
    return bool(value and value.isdigit())


def show_tmdb_ready(item: MediaRef) -> bool:
    """Serializd can place it: it keys shows by TMDB id (movies it skips need nothing)."""
    if item.kind == "movie":
        return True
    return _digits(item.ids.tmdb if item.kind == "show" else item.show_ids.tmdb)


def _anime_ids(ids: Ids) -> bool:
    return any(_digits(getattr(ids, name)) for name in ("anilist", "anidb", "mal"))


def own_anime_ids(item: MediaRef) -> Ids:
    """The item's own ids that can name an anime: an episode's AniDB and MAL ids are episode
    ids (AniDB's eid, from Jellyfin's and Emby's AniDB plugins); only its AniList id (AniList
    has no episode ids) names its anime."""
    return Ids(anilist=item.ids.anilist) if item.kind == "episode" else item.ids


def anime_ready(item: MediaRef) -> bool:
    """The anime mapping can place it: by TMDB/TVDB show ids (TMDB for a movie) or anime ids.
    (A movie known by its IMDb id only is asked about first: a dataset may name it by TMDB id
    alone; see deliver.anilist for what happens when no TMDB id is found.)"""
    if _anime_ids(own_anime_ids(item)) or _anime_ids(item.show_ids):
        return True
    if item.kind == "movie":
        return _digits(item.ids.tmdb)
    ids = item.ids if item.kind == "show" else item.show_ids
    return _digits(ids.tmdb) or _digits(ids.tvdb)


@dataclass(frozen=True)
class Need:
    """What a target must know of an item before it can write it (pure predicates).

    `show_met`: a show's ids are enough (its show item need not be read). `episode_ids_help`:
    an episode's own ids can meet the need, so reading the episode itself is worth it."""

    label: str
    met: Callable[[MediaRef], bool]
    show_met: Callable[[Ids], bool]
    episode_ids_help: bool


TRAKT = Need("an id Trakt can match", trakt_ready, has_trakt_ids, episode_ids_help=True)
SHOW_TMDB = Need(
    "the show's TMDB id", show_tmdb_ready, lambda ids: _digits(ids.tmdb), episode_ids_help=False
)
EPISODE_TMDB = Need(
    "the episode's own TMDB id",
    lambda item: item.kind != "episode" or _digits(item.ids.tmdb),
    lambda ids: True,
    episode_ids_help=True,
)
ANIME = Need(
    "the show's TMDB, TVDB, AniList or AniDB id (a movie's TMDB or IMDb id)",
    anime_ready,
    lambda ids: _digits(ids.tmdb) or _digits(ids.tvdb) or _anime_ids(ids),
    episode_ids_help=False,
)


def from_plex(item: MediaRef) -> bool:
    """Only items Plex identified (a plex:// guid) are looked up on Plex: Emby's item ids are
    numeric strings too, and the same key on the Plex server is a different item."""
    return bool(item.ids.plex_guid or item.show_ids.plex_guid)


def needs_plex_ids(item: MediaRef, need: Need = TRAKT) -> bool:
    """A Plex movie, episode or (rated) season with a key to read and without what `need`
    asks for yet."""
    if not (item.source_key or item.show_source_key) or not from_plex(item):
        return False
    return item.kind in ("movie", "episode", "season") and not need.met(item)


def item_key_to_read(item: MediaRef, need: Need = TRAKT) -> str | None:
    """The item itself to read: a movie, or an episode whose own ids may help (or whose
    show key only the episode can tell); never a season (its ids are not its show's)."""
    if item.kind == "season":
        return None
    if item.kind == "episode" and item.show_source_key and not need.episode_ids_help:
        return None
    return item.source_key


def show_key_to_read(item: MediaRef, need: Need = TRAKT) -> str | None:
    """The show to read: an episode's or a season's, while its show ids do not meet `need`."""
    if item.kind not in ("episode", "season") or need.show_met(item.show_ids):
        return None
    return item.show_source_key


def merge_plex_item(item: MediaRef, found: PlexItem) -> MediaRef:
    """The item with what PMS says about it filled into its gaps (ours win).

    Only the very item the webhook named adds anything: its plex:// guid must be the same. The
    key may name something else on this server: the webhook came from another server (a
    user's webhook fires on a friend's server too), or PMS reused the key after a rebuild."""
    if found.type != item.kind or not _same_plex_guid(item.ids, found.ids):
        return item
    if item.kind == "episode":
        return replace(
            item,
            ids=item.ids.merged(found.ids),
            show_ids=item.show_ids.merged(found.show_ids),
            title=item.title or found.title,
            show_title=item.show_title or found.show_title,
            season=item.season if item.season is not None else found.season,
            number=item.number if item.number is not None else found.number,
            absolute=item.absolute if item.absolute is not None else found.absolute,
            show_source_key=item.show_source_key or found.grandparent_rating_key,
        )
    return replace(
        item,
        ids=item.ids.merged(found.ids),
        title=item.title or found.title,
        year=item.year or found.year,
    )


def merge_plex_show(item: MediaRef, show: PlexItem) -> MediaRef:
    """An episode with its show's ids (read from the show's own Plex item) filled in, if it
    is the show the webhook named (see merge_plex_item)."""
    if show.type != "show" or not _same_plex_guid(item.show_ids, show.ids):
        return item
    return replace(
        item,
        show_ids=item.show_ids.merged(show.ids),
        show_title=item.show_title or show.title,
    )


def names_more_than_plex(ids: Ids) -> bool:
    """Whether `ids` hold an id besides Plex's own guid (one another service can know)."""
    return any(name != "plex_guid" for name in ids.present())


def _same_plex_guid(ours: Ids, found: Ids) -> bool:
    return ours.plex_guid is not None and ours.plex_guid == found.plex_guid


class PlexEnricher:
    """Fills in the ids Plex webhooks leave out by reading the items from the Plex server.

    A new-agent movie from an older PMS has only its plex:// guid; a new-agent episode has
    only the episode's ids and a plex://show guid. The item (by ratingKey) and, for episodes
    still without show ids, the show (by grandparentRatingKey) are read once and cached.
    A failing server leaves the item as it is (nothing cached): the caller's retry asks again.
    """

    namespace = "plex-metadata"

    def __init__(
        self, client_metadata: PlexMetadata, cache: IdCache, clock: Callable[[], float]
    ) -> None:
        self.metadata = client_metadata
        self.cache = cache
        self.clock = clock
        self.answered = 0  # reads PMS answered (found or not): its token works
        self._failing = Repeating(log)  # a server down: a line once, then hourly

    async def enrich(self, item: MediaRef, need: Need = TRAKT) -> MediaRef:
        return (await self.lookup(item, need))[0]

    async def lookup(
        self, item: MediaRef, need: Need = TRAKT
    ) -> tuple[MediaRef, ServiceError | None]:
        """The item with what PMS told us, and the error that stopped a read (if one did)."""
        if not needs_plex_ids(item, need):
            return item, None
        try:
            item_key = item_key_to_read(item, need)
            if item_key:
                found = await self._read(item_key, item.ids.plex_guid)
                if found is not None:
                    item = merge_plex_item(item, found)
            show_key = show_key_to_read(item, need)
            if show_key:
                show = await self._read(show_key, item.show_ids.plex_guid)
                if show is not None:
                    item = merge_plex_show(item, show)
        except ServiceError as exc:
            problem, described = exc.message, item.describe()
            self._failing.warning(
                LOOKUP, "plex lookup failed", self.clock(), item=described, problem=problem
            )
            return item, exc
        self._failing.over(LOOKUP, "plex lookups work again", self.clock())
        return item, None

    async def _read(self, rating_key: str, guid: str | None) -> PlexItem | None:
        """The item PMS holds under `rating_key`; a cached one naming another guid than the
        webhook's (`guid`) is read again: "Fix Match" or a rebuild changed what the key holds."""
        hit, cached = self.cache.cache_get(self.namespace, rating_key, self.clock())
        if hit and cached is None:
            return None
        if hit and isinstance(cached, dict):
            try:
                item = PlexItem.from_dict(cached)
            except TypeError:
                item = None  # written by another version: read the item again
            if item is not None and (guid is None or item.ids.plex_guid == guid):
                return item
        found = await self.metadata(rating_key)
        self.answered += 1
        # An item Plex names no external id for yet (matched, its ids still to come; the user
        # told to refresh its metadata) is read again as soon as a miss: the row's next try.
        named = found is not None and names_more_than_plex(found.ids)
        ttl = PLEX_FOUND_TTL if named else PLEX_MISSING_TTL
        value = None if found is None else found.to_dict()
        self.cache.cache_put(self.namespace, rating_key, value, self.clock(), ttl)
        return found


def with_cached_plex_ids(
    cache: IdCache, item: MediaRef, now: float, need: Need = SHOW_TMDB
) -> MediaRef:
    """A Plex item with the ids a delivery already read of it (and of its show) from the
    server (PlexEnricher; the cache only: no server is asked)."""
    if not needs_plex_ids(item, need):
        return item
    found = _cached_plex_item(cache, item_key_to_read(item, need), now)
    if found is not None:
        item = merge_plex_item(item, found)
    show = _cached_plex_item(cache, show_key_to_read(item, need), now)
    return item if show is None else merge_plex_show(item, show)


def _cached_plex_item(cache: IdCache, rating_key: str | None, now: float) -> PlexItem | None:
    if not rating_key:
        return None
    hit, cached = cache.cache_get(PlexEnricher.namespace, rating_key, now)
    if hit and isinstance(cached, dict):
        with contextlib.suppress(TypeError):
            return PlexItem.from_dict(cached)
    return None


# --------------------------------------------------------------------------- Jellyfin / Emby


def same_server(answered: str | None, asked_for: str | None) -> bool:
    """Whether an item a server answered with can be the one a webhook of `asked_for` named
    (either unknown: trusted, as an older server may leave `ServerId` out)."""
    return answered is None or asked_for is None or server_guid(answered) == server_guid(asked_for)


def merge_series(item: MediaRef, series: Series) -> MediaRef:
    """An episode with its series' ids (read from the Jellyfin/Emby server) filled in."""
    return replace(
        item,
        show_ids=item.show_ids.merged(series.ids),
        show_title=item.show_title or series.title,
    )


def cached_series(
    cache: IdCache, server: str, series_id: str, now: float
) -> tuple[bool, Series | None]:
    """(hit, series) from what an earlier read of the series on `server` left in the cache;
    a hit with None: the server did not know it. An entry of another version is no hit."""
    hit, cached = cache.cache_get(SeriesEnricher.namespace, f"{server}:{series_id}", now)
    if not hit or cached is None:
        return hit, None
    if isinstance(cached, dict) and isinstance(cached.get("ids"), dict):
        with contextlib.suppress(TypeError):
            ids = Ids(**cached["ids"])
            return True, Series(series_id, cached.get("title"), ids, cached.get("server"))
    return False, None


def webhook_ref(
    cache: IdCache, item: Mapping[str, Any], source: str | None, now: float
) -> MediaRef | None:
    """A queued webhook play's item as a reference, with the show ids a delivery already read
    (see `with_cached_show_ids`) or found through Trakt's id search (`with_searched_ids`):
    the ids a link keys items by; None for a row a target will make a dead letter of."""
    try:
        ref = ref_from_dict(dict(item))
    except (KeyError, TypeError, ValueError):
        return None
    return keyed_as_a_link(cache, with_cached_show_ids(cache, ref, source, now), now)


def keyed_as_a_link(cache: IdCache, ref: MediaRef, now: float) -> MediaRef:
    """`ref` with the TMDB id a link keys it by (its show's, for an episode), from an earlier
    Trakt id search (`with_searched_ids`) where it does not carry it."""
    tmdb = ref.show_ids.tmdb if ref.kind == "episode" else ref.ids.tmdb
    return ref if tmdb else with_searched_ids(cache, ref, now)


def with_cached_show_ids(
    cache: IdCache, item: MediaRef, source: str | None, now: float
) -> MediaRef:
    """A Jellyfin or Emby episode with its show's ids, if a delivery read them already (the
    cache only: no server is asked)."""
    if source not in ("jellyfin", "emby") or item.kind != "episode" or not item.show_source_key:
        return item
    _, series = cached_series(cache, source, item.show_source_key, now)
    return item if series is None else merge_series(item, series)


MOVIE_KEY = "movie:"  # cache lookups of movies (by their server id) start with this


class SeriesEnricher:
    """Fills in an episode's show ids, or a movie's own, from the Jellyfin or Emby server it
    came from.

    Their webhooks carry the episode's provider ids only, and the series by its server id
    (`SeriesId` = `show_source_key`); a movie played before the server identified it has no
    ids until it is (`ItemId` = `source_key`). Each item is read once and cached (misses for an
    hour: the server may still be identifying it). A failing read caches nothing.
    """

    namespace = "media-server-series"

    def __init__(
        self, server: str, client: MediaServerItems, cache: IdCache, clock: Callable[[], float]
    ) -> None:
        self.server = server
        self.client = client
        self.cache = cache
        self.clock = clock
        self.answered = 0  # reads the server answered (found or not): its key works
        self._failing = Repeating(log)  # a server down: a line once, then hourly
        self.answers_as: str | None = None  # the configured server's ServerId, once it said

    async def lookup(
        self, item: MediaRef, need: Need, from_server: str | None = None
    ) -> tuple[MediaRef, ServiceError | None]:
        """`item` with what its server says of its series (or movie). `from_server`: the
        `ServerId` of the webhook's server, when it said: another server of this kind names
        other items by the same ids (Emby's are small numbers), so its answer is not taken."""
        movie = item.kind == "movie" and item.source_key is not None and not need.met(item)
        key = item.source_key if movie else item.show_source_key
        if not movie and (item.kind != "episode" or need.show_met(item.show_ids)):
            return item, None
        if not key:
            return item, None
        try:
            found = await self._read(key, movie, from_server)
        except ServiceError as exc:
            problem, described = exc.message, item.describe()
            self._failing.warning(
                LOOKUP,
                "series lookup failed",
                self.clock(),
                server=self.server,
                item=described,
                problem=problem,
            )
            return item, exc
        self._failing.over(LOOKUP, "series lookups work again", self.clock(), server=self.server)
        if found is None or not same_server(found.server, from_server):
            return item, None
        if movie:  # played before the server identified it, perhaps: its ids now
            return replace(
                item, ids=item.ids.merged(found.ids), title=item.title or found.title
            ), None
        return merge_series(item, found), None

    def another_server(self, from_server: str | None) -> str | None:
        """The configured server's `ServerId` when a webhook's `from_server` is known to be
        another server of this kind, whose items cannot be read here; else None."""
        if from_server is None or self.answers_as is None:
            return None
        return None if same_server(self.answers_as, from_server) else self.answers_as

    async def _read(self, item_id: str, movie: bool, from_server: str | None) -> Series | None:
        """The series (or the movie) with this server id, cached. A cached answer of a server
        other than the webhook's is read again, unless the configured server gave it (the
        webhook is then another server's): it may be the old server's, since replaced."""
        cached_id = f"{MOVIE_KEY}{item_id}" if movie else item_id
        lookup = f"{self.server}:{cached_id}"
        hit, cached = cached_series(self.cache, self.server, cached_id, self.clock())
        if hit and (
            cached is None
            or same_server(cached.server, from_server)
            or same_server(cached.server, self.answers_as or "")
        ):
            return cached
        read = self.client.movie if movie else self.client.series
        found = await read(item_id)
        self.answered += 1
        if found is not None and found.server:
            self.answers_as = found.server
        # A series without a TMDB id is usually one the server is still identifying.
        ttl = SERIES_FOUND_TTL if found is not None and found.ids.tmdb else SERIES_MISSING_TTL
        value = (
            None
            if found is None
            else {"title": found.title, "ids": found.ids.present(), "server": found.server}
        )
        self.cache.cache_put(self.namespace, lookup, value, self.clock(), ttl)
        return found


# --------------------------------------------------------------------------- one enricher

SERVER_SETTINGS = {
    "plex": "services.plex.url and services.plex.token",
    "jellyfin": "services.jellyfin.url and services.jellyfin.api_key",
    "emby": "services.emby.url and services.emby.api_key",
}
_JELLYFIN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Problem:
    """Why an item still lacks what a target needs, in words the user can act on.

    `credentials`: a server refused our key or token (hold the row and alert; retrying will
    not help until it is fixed). `transient`: the server was down or failing (try again soon).
    `outage`: a media server that does not answer, or whose gateway says it is down (hold the
    row without spending its attempts; the enricher alerts), not one failing on this item (a
    500: the row spends its attempts, and ends as a dead letter if it keeps failing).
    `rate_limited`: an outage of the server's own choosing (a 429): held the same way, and
    not alerted as a server that cannot be reached.
    """

    message: str
    credentials: bool = False
    transient: bool = False
    # The server is not configured: its settings would let watchbridge ask it.
    unconfigured: bool = False
    retry_after: float | None = None
    outage: bool = False
    rate_limited: bool = False
    # The Plex server refused its own token (services.plex.token): the enricher keeps that
    # refusal service-wide for the sign-in health, as a link's read or a delivery does.
    server_token_refused: bool = False
    # The server whose own key (services.plex.token, a Jellyfin or Emby api_key) was refused,
    # of a `credentials` problem: the rows it holds wait for that key (outbox.waits_for_server).
    refused_by: str | None = None
    # What else would help, in a few words, told after a more pressing fix (`with_doubt`).
    also: str | None = None
    # The message names an episode's own id that is its series' and says the whole fix:
    # no target's note follows it.
    own_id_conflict: bool = False
    # Trakt's id search, the one that would name the ids, does not answer (down, a gateway's
    # error, a 429): the row waits for it as for a media server's outage, spending no attempts
    # and no delivery.max_age, as Trakt's own deliveries are held through its outage.
    search_down: bool = False


@dataclass(frozen=True)
class Enriched:
    """The item with every id found; `problem` is set while the need is still unmet."""

    item: MediaRef
    problem: Problem | None = None


def origin(item: MediaRef, source: str | None) -> str | None:
    """The media server to ask about an item: the webhook source it came from, when known.

    Plex only for items Plex identified (plex:// guids) with a ratingKey to read, whatever the
    source: Emby's numeric item ids look like Plex ratingKeys. Rows queued without a source
    (older releases, reconcile plans) are Jellyfin's only when the series key is a Jellyfin
    Guid (32 hex digits), a shape no other server uses."""
    if source in ("jellyfin", "emby"):
        return source
    if from_plex(item) and (item.source_key or item.show_source_key):
        return "plex"
    key = item.show_source_key
    if source is None and key and _JELLYFIN_ID.fullmatch(key):
        return "jellyfin"
    return None


def with_doubt(problem: Problem | None, doubt: str | None) -> Problem | None:
    """Why an episode stays unmatched when one of its own ids was left out as its series' id
    (`doubt`, see `distrusted`), as one sentence: that and its fix (its metadata), then only
    what else would help (`Problem.also`), not the rest of what `problem` says (no id Trakt
    can match: the doubt is why). A key refused or a server down is told as it is (its row
    is held, not unmatched). Pure."""
    if doubt is None or (problem is not None and (problem.credentials or problem.transient)):
        return problem
    also = problem.also if problem is not None else None
    return Problem(series_id_reason(doubt, also), own_id_conflict=True)


def series_id_reason(doubt: str, also: str | None) -> str:
    """One sentence: an own id of an episode left out as its series' (`doubt`, naming the fix),
    then briefly what else would help. Pure."""
    return f"{doubt} ({also})" if also else doubt


def is_down(exc: Unavailable) -> bool:
    """Whether a lookup's failure says its service is down (no answer, a gateway's error, a
    429), not that it failed on this one request (a 500)."""
    return exc.status is None or exc.status in DOWN_STATUS or exc.status == 429


def search_failed(exc: Unavailable, retry_after: float | None) -> Problem:
    """Why an item waits while Trakt's id search fails (`retry_after`: when it is asked again)."""
    said = f"Trakt's id search failed: {exc.quoted('trakt')}"
    if not is_down(exc):  # a 500: this search's own failure, perhaps, tried as a retry
        return Problem(f"{said}; it is tried again soon", transient=True, retry_after=retry_after)
    return Problem(
        f"{said}; it waits for Trakt's id search to answer, without giving up, and is tried"
        " again every few minutes",
        transient=True,
        retry_after=retry_after,
        search_down=True,
    )


class SearchPause:
    """Trakt's id search while it is down (SEARCH_PAUSE_MAX): after a search that got no
    answer, the next ones fail at once, as it did, until the pause is over."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.until = 0.0
        self.streak = 0  # failures in a row
        self.failure: Unavailable | None = None

    def left(self) -> float | None:
        """Seconds until Trakt is asked again (None: it is asked now)."""
        left = self.until - self.clock()
        return left if self.failure is not None and left > 0 else None

    def search(self, search: Search) -> Search:
        async def paused(id_type: str, value: str, kind: str) -> list[dict[str, Any]]:
            return await self._asked(lambda: search(id_type, value, kind))

        return paused

    def title_search(self, search: TitleSearch) -> TitleSearch:
        async def paused(kind: str, title: str, year: int | None) -> list[dict[str, Any]]:
            return await self._asked(lambda: search(kind, title, year))

        return paused

    async def _asked(
        self, ask: Callable[[], Awaitable[list[dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        failure, left = self.failure, self.left()
        if failure is not None and left is not None:
            # A new error each time: one raised again and again keeps every traceback.
            raise Unavailable(
                failure.service, failure.said, retry_after=left, status=failure.status
            )
        try:
            found = await ask()
        except Unavailable as exc:
            if is_down(exc):
                self.streak += 1
                pause = min(SEARCH_PAUSE_MAX, doubled(SERVER_OUTAGE_PAUSE, self.streak - 1))
                self.until = self.clock() + max(pause, exc.retry_after or 0.0)
                self.failure = exc
            raise
        self.streak, self.failure = 0, None
        return found


def problem_from(server: str, exc: ServiceError) -> Problem:
    name = service_title(server)
    if isinstance(exc, MediaServerAuthError | PlexAuthError):
        server_token = isinstance(exc, ServerTokenRefused)
        return Problem(
            exc.message, credentials=True, server_token_refused=server_token, refused_by=server
        )
    if isinstance(exc, Unavailable):
        rate_limited = exc.status == 429
        return Problem(
            f"{name} could not be asked for the show's ids: {exc.quoted(server)}",
            transient=True,
            retry_after=exc.retry_after,
            outage=is_down(exc),
            rate_limited=rate_limited,
        )
    return Problem(f"{name} could not be asked for the show's ids: {exc.quoted(server)}")


def not_configured(server: str, item: MediaRef, need: Need) -> Problem:
    name = service_title(server)
    settings = SERVER_SETTINGS.get(server, f"services.{server}")
    return Problem(
        f"{item.describe()} came from {name} without {need.label}; set "
        f"{settings} so watchbridge can read it there",
        unconfigured=True,
        also=f"setting {settings} would also help, to read its show there",
    )


def not_known(server: str | None, item: MediaRef, need: Need) -> Problem:
    if server is None:
        return Problem(f"nothing names {need.label} for {item.describe()}")
    name = service_title(server)
    show = item.show_title or item.title or "the show"
    if server == "plex":
        # Plex's Fix Match gives the item another plex:// guid, which a queued play is never
        # taken for (after a library rebuild the same key may hold another film).
        return Problem(
            f"Plex does not know {need.label} for {show}: refresh its metadata there (Refresh"
            " Metadata) and the next try will find it; after a Fix Match, only the plays"
            " after it go out (this one can be discarded)"
        )
    return Problem(
        f"{name} does not know {need.label} for {show}: identify it there (Identify / "
        "Refresh metadata) and the next try will find it",
        also=f"identifying {show} in {name} would also help",
    )


def agent_hint(item: MediaRef, source: str | None, searched: bool) -> str:
    """What else could find the ids of an item no server can be asked about (`searched`:
    Trakt's id search was asked and did not find them): for the reason an unmatched row
    gives. A legacy agent's item is told to switch its agent, and where Trakt was not
    searched (by its ids or its show's, `show_lookups`) that services.trakt would find it.
    Trakt's search knows no AniDB ids, so a HAMA item is told to switch its agent either
    way."""
    ids = item.show_ids if item.kind == "episode" else item.ids
    known = [name for name, value in (("TheTVDB", ids.tvdb), ("IMDb", ids.imdb)) if value]
    if source == "generic":  # a script or automation: it sends what it is given
        where = "item.show.ids" if item.kind == "episode" else "item.ids"
        return f": send it in the webhook's {where}"
    if source not in ("plex", "tautulli"):
        return ""
    if not known and ids.anidb:
        return (
            " (it is known by its AniDB id only, as the HAMA anime agent names shows): switch "
            "its library to the Plex TV Series agent and refresh its metadata"
        )
    if not known:
        return ""
    switch = (
        f" (it is known by its {' and '.join(known)} id only, as Plex's legacy agents name "
        "items): switch its library to the Plex Movie / Plex TV Series agent and refresh its "
        "metadata"
    )
    return switch if searched else f"{switch}, or {TRAKT_FINDS_IT}"


def played_elsewhere(item: MediaRef, searched: bool, catalogue: str = "") -> str:
    """Why a Plex play from another server than services.plex.url has no ids (`catalogue`:
    what Plex's catalogue said of its plex:// guid, when it was asked)."""
    then = ", and Trakt's id search did not find it" if searched else f": {TRAKT_FINDS_IT}"
    return (
        f"{item.describe()} was played on another Plex server than services.plex.url (a "
        f"friend's?), whose items watchbridge cannot read{catalogue}{then}"
    )


def identity_unknown(item: MediaRef, failed: str) -> Problem:
    """Why a Plex play waits while services.plex.url cannot be asked which server it is
    (`failed`: why): whether the play is from it or another server is not known, and the
    ids it lacks say nothing yet. Tried again on the identity's schedule, not as unmatched."""
    return Problem(
        f"the Plex server at services.plex.url could not be asked which server it is "
        f"({failed}), so whether {item.describe()} was played on it or on another Plex server "
        "is not known yet; tried again shortly",
        transient=True,
        retry_after=PLEX_IDENTITY_RETRY,
    )


TRAKT_FINDS_IT = "add services.trakt, whose id search finds it by its other ids"
# A webhook of another Plex server than the one services.plex.url answered as has that server's
# identity asked again (it may have been replaced) at most this often per server named...
PLEX_IDENTITY_AGAIN = 3600.0
# ...or this often while the ask fails (a reinstalled Plex still starting, a timeout): its new
# machine id is learnt within a minute, not an hour, without an ask per webhook meanwhile.
PLEX_IDENTITY_RETRY = 60.0
PLEX_SERVERS_REMEMBERED = 64  # servers named lately, each with when it had the identity asked
CATALOGUE = "plex-catalogue"  # cache namespace: a plex:// guid's ids from Plex's catalogue


class Enricher:
    """The one place delivery targets fill in ids: the media server the item came from, then
    (when services.trakt is configured) Trakt's id search, all cached in the store.

    `enrich` never raises for a lookup that failed: the failure comes back as a Problem for
    the target to turn into its outcome (hold, retry or unmatched)."""

    def __init__(
        self,
        cache: IdCache,
        clock: Callable[[], float],
        *,
        plex: PlexMetadata | None = None,
        plex_answers: Answers | None = None,
        plex_identity: Callable[[], Awaitable[str]] | None = None,
        jellyfin: MediaServerItems | None = None,
        emby: MediaServerItems | None = None,
        search: Search | None = None,
        title_search: TitleSearch | None = None,
        plex_catalogue: PlexCatalogue | None = None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        notifier: Notifier | None = None,
        plex_token_health: ServerTokenHealth | None = None,
        lift_server_holds: Callable[[str, float], int] | None = None,
        trakt_told: Callable[[], bool] | None = None,
        server_named: Mapping[str, str] | None = None,
    ) -> None:
        self.plex = PlexEnricher(plex, cache, clock) if plex is not None else None
        # Each media server as its outage alert names it (causes.server_named: by its address,
        # for a household with several Plex servers); else by its kind alone.
        self.server_named = dict(server_named or {})
        # Whether an outage alert of Trakt's own deliveries is open (see SEARCH_ALERT_AFTER).
        self.trakt_told = trakt_told
        self._search_down_since: float | None = None
        self._search_failed_at: float | None = None
        # Store.lift_server_holds: a server taking its key again sends what that key held now.
        self.lift_server_holds = lift_server_holds
        self.plex_token_health = plex_token_health
        self.plex_catalogue = plex_catalogue
        self.cache = cache
        self.plex_identity = plex_identity
        self._plex_machine: str | None = None
        # Each server a webhook named, other than `_plex_machine`: when it last had the identity
        # asked, how long that ask stands, and why it failed ("": answered; see `_elsewhere`).
        self._plex_machine_asked: dict[str, tuple[float, float, str]] = {}
        self.series = {
            server: SeriesEnricher(server, client, cache, clock)
            for server, client in (("jellyfin", jellyfin), ("emby", emby))
            if client is not None
        }
        # Trakt's id search for the plays of every target: paused while it is down.
        self.search_pause = SearchPause(clock)
        self.trakt = (
            TraktResolver(
                self.search_pause.search(search),
                cache,
                clock,
                self.search_pause.title_search(title_search) if title_search else None,
            )
            if search is not None
            else None
        )
        self.clock = clock
        self._closers = list(closers)
        self._down_until: dict[str, tuple[float, Problem]] = {}  # server -> (until, problem)
        self._down_since: dict[str, float] = {}  # server -> its first failure of this outage
        self._answers: dict[str, Answers] = {s: e.client.answers for s, e in self.series.items()}
        if plex_answers is not None:
            self._answers["plex"] = plex_answers
        self.notifier = notifier
        self._refused: set[str] = set()  # servers whose key or token was refused
        self._failing = Repeating(log)  # Plex's catalogue down: a line once, then hourly

    @property
    def asked(self) -> int:
        """Trakt id searches sent so far (TraktResolver.asked)."""
        return self.trakt.asked if self.trakt is not None else 0

    def retry_after(self, asked_before: int, wait: float) -> float:
        """Seconds until an unmatched row is tried again (TraktResolver.retry_after): `wait`
        where Trakt is not searched."""
        return wait if self.trakt is None else self.trakt.retry_after(asked_before, wait)

    def asks(self, item: MediaRef, source: str | None) -> bool:
        """Whether the media server `item` came from can be asked about it (configured)."""
        server = origin(item, source)
        return server is not None and self._lookup(server) is not None

    def _lookup(self, server: str) -> PlexEnricher | SeriesEnricher | None:
        """What reads `server`'s items (None: it is not configured)."""
        return self.plex if server == "plex" else self.series.get(server)

    async def aclose(self) -> None:
        """Close the media server clients (once, whichever target asks first)."""
        closers, self._closers = self._closers, []
        for close in closers:
            await close()

    async def enrich(
        self,
        item: MediaRef,
        need: Need,
        source: str | None = None,
        *,
        search_trakt: bool = True,
        from_server: str | None = None,
    ) -> Enriched:
        """`item` with what `need` asks for, if anyone knows it. `source` is the webhook
        source the row came from (the outbox payload's `source`), `from_server` its server's
        id when the webhook said (the payload's `server`); `search_trakt=False` for a caller
        that searches Trakt itself."""
        if need.met(item):
            return Enriched(item)
        server = origin(item, source)
        problem: Problem | None = None
        if server is not None:
            item, problem = await self._ask(server, item, need, from_server)
            if need.met(item):
                return Enriched(item)
        doubt: str | None = None
        if search_trakt and self.trakt is not None:
            try:
                item, doubt = await self.trakt.vetted(item)
                # An episode its own ids placed needs no second search (`resolve` would make
                # the same one, from the cache).
                found = item if need.met(item) else await self.trakt.resolve(item, source)
            except ServiceError as exc:
                self.trakt.failed(item, exc)
                # The search that would have found the ids failed: that is the reason, not a
                # media server left unset (the row waits as unmatched for an hour on that).
                unset = problem is not None and problem.unconfigured
                if (problem is None or unset) and isinstance(exc, Unavailable):
                    problem = search_failed(exc, self.search_pause.left() or exc.retry_after)
                    if problem.search_down:
                        await self._search_unreachable()
            else:
                if self.search_pause.failure is None:  # not only answered from the cache
                    await self._search_answers()
                if found is not None and need.met(found):
                    return Enriched(found)
                unmatched = title_unmatched(item, source)
                if problem is None and unmatched is not None:
                    problem = Problem(unmatched, also=show_ids_also(item, source))
        problem = with_doubt(problem, doubt)
        plex = server == "plex" or source == "plex"  # a legacy-agent item has no origin
        # services.plex.url down (or a proxy answering in its place): its items cannot be read,
        # and a play of another server's may still be named by the catalogue.
        down = plex and problem is not None and problem.outage
        asked = plex and (problem is None or down)
        elsewhere = await self._elsewhere(from_server) if asked else False
        if elsewhere:
            # Plex's catalogue names the ids whichever server played it: asked first even
            # while services.plex.url cannot say whether it was this one.
            found, said = await self._from_catalogue(item)
            if need.met(found):
                return Enriched(found)
            if down:  # the outage stands: the play waits for services.plex.url to answer
                pass
            elif isinstance(elsewhere, str):
                problem = identity_unknown(item, elsewhere)
            else:
                problem = Problem(played_elsewhere(item, self.trakt is not None, said))
        if problem is None and server is not None:
            problem = self._from_another_server(server, item, from_server)
        if problem is None:
            problem = not_known(server, item, need)
            searched = self.trakt is not None
            hint = agent_hint(item, source, searched) if server is None else ""
            problem = replace(problem, message=problem.message + hint)
        return Enriched(item, problem)

    def _from_another_server(
        self, server: str, item: MediaRef, from_server: str | None
    ) -> Problem | None:
        """Why a Jellyfin or Emby play from another server than the configured one has no
        ids: only the server at its URL is asked, and it answered as another, so no renaming
        or identifying there can help (None while that is not known)."""
        lookup = self.series.get(server)
        configured = None if lookup is None else lookup.another_server(from_server)
        if configured is None or from_server is None:
            return None
        name = service_title(server)
        then = ", and Trakt's id search did not find it" if self.trakt else f": {TRAKT_FINDS_IT}"
        return Problem(
            f"{item.describe()} was played on another {name} server ({server_guid(from_server)})"
            f" than the one at services.{server}.url ({configured}), whose items watchbridge "
            f"cannot read{then}"
        )

    async def _from_catalogue(self, item: MediaRef) -> tuple[MediaRef, str]:
        """A movie, or an episode's show, with the external ids Plex's catalogue gives its
        plex:// guid (cached): for a play on another server than services.plex.url, whose
        items cannot be read. With it, what to tell when the catalogue did not name them
        ("" when it was not asked)."""
        episode = item.kind == "episode"
        guid = item.show_ids.plex_guid if episode else item.ids.plex_guid
        prefix = f"plex://{'show' if episode else 'movie'}/"
        if self.plex_catalogue is None or not guid or not guid.startswith(prefix):
            return item, ""
        now = self.clock()
        hit, cached = self.cache.cache_get(CATALOGUE, guid, now)
        ids: Ids | None = None
        if hit and isinstance(cached, dict):
            with contextlib.suppress(TypeError):
                ids = Ids(**cached)
        elif not hit:
            try:
                ids = await self.plex_catalogue(guid.removeprefix(prefix))
            except ServiceError as exc:
                problem, described = exc.message, item.describe()
                self._failing.warning(
                    CATALOGUE, "plex catalogue lookup failed", now, item=described, problem=problem
                )
                return item, f", and Plex's catalogue could not be asked ({exc.message})"
            self._failing.over(CATALOGUE, "plex catalogue lookups work again", now)
            value = None if ids is None else ids.present()
            # A title the catalogue names no id for yet is asked again as soon as a miss.
            named = ids is not None and names_more_than_plex(ids)
            ttl = PLEX_FOUND_TTL if named else PLEX_MISSING_TTL
            self.cache.cache_put(CATALOGUE, guid, value, self.clock(), ttl)
        if ids is None:
            return item, ", and Plex's catalogue does not know its plex:// guid"
        if episode:
            return replace(item, show_ids=item.show_ids.merged(ids)), ""
        return replace(item, ids=item.ids.merged(ids)), ""

    async def _elsewhere(self, from_server: str | None) -> bool | str:
        """Whether a Plex webhook came from another server than services.plex.url (a
        friend's): its ratingKeys name other items here, or none. The server may have been
        replaced since its identity was asked (a reinstall at the same address has a new
        machine id): a webhook naming another server has it asked again, at most every
        PLEX_IDENTITY_AGAIN per server named (a friend's plays ask hourly at most), or every
        PLEX_IDENTITY_RETRY while the ask fails. While it fails (and no id known before names
        the server the webhook names), it is not known: why the ask failed."""
        if from_server is None or self.plex_identity is None:
            return False
        named = from_server.casefold()
        mine = self._plex_machine
        if mine is None or mine.casefold() != named:
            mine = await self._plex_machine_for(named, self.plex_identity)
        if mine is not None and mine.casefold() == named:
            return False
        failed = self._plex_machine_asked.get(named, (0.0, 0.0, ""))[2]
        return failed or mine is not None

    async def _plex_machine_for(
        self, named: str, identity: Callable[[], Awaitable[str]]
    ) -> str | None:
        """services.plex.url's machine id, asked again for a webhook naming server `named`
        unless that was done lately: an answer naming another server stands for
        PLEX_IDENTITY_AGAIN, a failed ask for PLEX_IDENTITY_RETRY (the id known before, if
        any, is used meanwhile)."""
        now = self.clock()
        asked = self._plex_machine_asked.get(named)
        if asked is not None and 0 <= now - asked[0] < asked[1]:
            return self._plex_machine
        if len(self._plex_machine_asked) >= PLEX_SERVERS_REMEMBERED:
            self._plex_machine_asked.clear()
        try:
            self._plex_machine = mine = await identity()
        except ServiceError as exc:
            self._plex_machine_asked[named] = (now, PLEX_IDENTITY_RETRY, exc.message)
            return self._plex_machine
        if mine.casefold() == named:
            self._plex_machine_asked.pop(named, None)
        else:
            self._plex_machine_asked[named] = (now, PLEX_IDENTITY_AGAIN, "")
        return mine

    async def plex_now(
        self, item: MediaRef, source: str | None, from_server: str | None
    ) -> MediaRef | Problem | None:
        """A Plex play's episode as services.plex.url holds it now, read past the cache: a
        metadata refresh or a new match since the play gives it other guids and numbers
        (`MediaRef.unplaced` decided on them again), its ids and numbers replacing the play's.
        A Problem when the server could not be asked; None when it cannot tell: not configured,
        the play came from another server, or the key holds no episode of the play's show
        any more (deleted, or reused after a rebuild)."""
        key = item.source_key
        if self.plex is None or source not in ("plex", "tautulli") or not key:
            return None
        elsewhere = await self._elsewhere(from_server)
        if isinstance(elsewhere, str):  # which server it is cannot be asked now
            return identity_unknown(item, elsewhere)
        if elsewhere:
            return None
        try:
            found = await self.plex.metadata(key)
        except ServiceError as exc:
            problem = problem_from("plex", exc)
            why = exc.quoted("plex")
            said = f"Plex could not be asked how it matches {item.describe()} now: {why}"
            return replace(problem, message=problem.message if problem.credentials else said)
        if found is None or found.type != "episode":
            return None
        if found.grandparent_rating_key != item.show_source_key:
            return None
        return replace(
            item,
            ids=found.ids,
            show_ids=found.show_ids,
            title=found.title or item.title,
            show_title=found.show_title or item.show_title,
            season=found.season,
            number=found.number,
            absolute=found.absolute,
            unplaced=found.unplaced,
        )

    async def episode_tmdb(self, item: MediaRef) -> int | None:
        """An episode's own TMDB id: from the item, else (best effort, cached) from the Plex
        server it came from (Tautulli's ids are the show's), else from Trakt's id search by
        the episode's other ids (judged as `TraktResolver` does); None when nobody says. An
        own id that is its series' (`copied_series_ids`) says nothing."""
        if (own := own_tmdb(item)) is not None or item.kind != "episode":
            return own
        item = without_ids(item, copied_series_ids(item))
        if self.plex is not None and origin(item, None) == "plex":
            item, _ = await self._ask("plex", item, EPISODE_TMDB, None)
            if (own := own_tmdb(item)) is not None:
                return own
            item = without_ids(item, copied_series_ids(item))
        if self.trakt is None or not lookups(item):
            return None
        try:
            found = await self.trakt.resolve(item)
        except ServiceError as exc:
            self.trakt.failed(item, exc)
            return None
        tmdb = found.ids.tmdb if found is not None else None
        return int(tmdb) if tmdb is not None and _digits(tmdb) else None

    async def _ask(
        self, server: str, item: MediaRef, need: Need, from_server: str | None
    ) -> tuple[MediaRef, Problem | None]:
        """Ask `server` unless it failed to answer moments ago (see SERVER_OUTAGE_PAUSE)."""
        now = self.clock()
        until, problem = self._down_until.get(server, (0.0, None))
        if problem is not None and now < until:
            return item, replace(problem, retry_after=until - now)
        lookup = self._lookup(server)
        answered = lookup.answered if lookup is not None else 0
        item, problem = await self._ask_now(server, lookup, item, need, from_server)
        if problem is not None and problem.outage:  # not one item's 500: others still ask
            pause = max(SERVER_OUTAGE_PAUSE, problem.retry_after or 0.0)
            self._down_until[server] = (self.clock() + pause, problem)
            if not problem.rate_limited and await self._up(server):
                message = f"{problem.message} (the server answers otherwise: this item fails)"
                return item, replace(problem, message=message, outage=False)
            await self._unreachable(server, problem)
        elif problem is not None and problem.credentials:
            await self._key_refused(server, problem)
            await self._reachable(server, refusing=True)  # it answered: not down
            if problem.server_token_refused and self.plex_token_health is not None:
                await self.plex_token_health.server_refused(problem.message)
        elif lookup is not None and lookup.answered > answered:
            if self._was_refused(server):
                await self._key_accepted(server)
            await self._key_works(server)
            if server == "plex" and self.plex_token_health is not None:
                await self.plex_token_health.server_taken()  # its lookups go with that token
            await self._reachable(server)
        return item, problem

    async def _up(self, server: str) -> bool:
        """Whether `server` answers its cheap "are you there" request, right after a lookup
        got no answer: then the failure is that item's (its row spends an attempt and ends as
        a dead letter if it keeps failing; held as an outage it would wait for ever, told as
        "cannot be reached", while the server answers everything else). Its lookups may still
        fail (a long library scan): only one answering ends an outage told of."""
        answers = self._answers.get(server)
        return answers is not None and await answers()

    async def _unreachable(self, server: str, problem: Problem) -> None:
        """One `service_unreachable` alert once the server has failed to answer for a while:
        the plays that need it wait (spending no attempts) and would otherwise wait unsaid."""
        now = self.clock()
        since = self._down_since.setdefault(server, now)
        if self.notifier is None or now - since < UNREACHABLE_ALERT_AFTER:
            return
        name = service_title(server)
        named = self.server_named.get(server, name)
        minutes = int((now - since) // 60)
        said = problem.message
        waiting = "Plays that need it to name their show wait (nothing is lost)"
        if server in DELIVERED_TO:  # told once for both (see outage_key)
            waiting = (
                "Plays that need it to name their show, and deliveries to it, wait (nothing is "
                "lost)"
            )
        if problem.rate_limited:  # it answers, refusing: a proxy's or firewall's limit, often
            body = (
                f"{named} has been telling watchbridge to slow down (429) for {minutes} minutes: "
                f"{said}. {waiting} and go out once it lets lookups through; "
                f"check a rate limit in front of {name} (a reverse proxy, a firewall)."
            )
            title = f"watchbridge: {name} keeps rate-limiting watchbridge"
        else:
            body = (
                f"{named} has not answered for {minutes} minutes: {said}. {waiting} "
                f"and go out once it answers."
            )
            title = f"watchbridge: {name} cannot be reached"
        await self.notifier.notify("service_unreachable", title, body, key=outage_key(server))

    async def _search_unreachable(self) -> None:
        """One alert once Trakt's id search has failed as down for SEARCH_ALERT_AFTER, while
        no alert of Trakt's own outage tells: the plays that need it wait without giving up,
        and would otherwise wait unsaid (services.trakt set for its id search alone)."""
        now = self.clock()
        last, self._search_failed_at = self._search_failed_at, now
        if last is not None and now - last > SEARCH_OUTAGE_GAP:
            self._search_down_since = None
        since = self._search_down_since = self._search_down_since or now
        if self.notifier is None or now - since < SEARCH_ALERT_AFTER:
            return
        if self.trakt_told is not None and self.trakt_told():
            return
        failure = self.search_pause.failure
        said = failure.quoted("trakt") if failure is not None else "it does not answer"
        body = (
            f"Trakt's id search has not answered for {format_span(now - since)} ({said})."
            " Plays and ratings that need it to name their show (for Serializd or AniList: a"
            " Plex legacy agent's show, a Jellyfin episode known by its TheTVDB id) wait for it"
            " without giving up, and go out once it answers. Nothing is lost, and there is"
            " nothing to do unless it lasts."
        )
        title = "watchbridge: Trakt's id search cannot be reached"
        await self.notifier.notify("service_unreachable", title, body, key=SEARCH_OUTAGE_KEY)

    async def _search_answers(self) -> None:
        """Trakt's id search answered: its outage, and the alert of it, are over."""
        if self._search_down_since is None:
            return
        self._search_down_since = None
        if self.notifier is not None and self.notifier.raised(
            "service_unreachable", SEARCH_OUTAGE_KEY
        ):
            message = "Trakt's id search answers again; the plays that waited for it go out"
            await self.notifier.resolve("service_unreachable", message, key=SEARCH_OUTAGE_KEY)

    async def _reachable(self, server: str, *, refusing: bool = False) -> None:
        """`server` answered a lookup (`refusing`: only to refuse its own key): its outage, and
        the alert of it, are over."""
        self._down_since.pop(server, None)
        if self.notifier is None:
            return
        name, credential = server_credential(server)
        message = (
            f"{name} answers again, but refuses watchbridge's {credential}: that is told in its"
            " own alert, and the plays that need it wait for it"
            if refusing
            else f"{name} answers again; waiting plays go out"
        )
        # An alert an earlier release raised under the server's own key is resolved too.
        for key in dict.fromkeys([outage_key(server), f"server:{server}"]):
            if self.notifier.raised("service_unreachable", key):
                await self.notifier.resolve("service_unreachable", message, key=key)

    async def _ask_now(
        self,
        server: str,
        lookup: PlexEnricher | SeriesEnricher | None,
        item: MediaRef,
        need: Need,
        from_server: str | None,
    ) -> tuple[MediaRef, Problem | None]:
        if lookup is None:
            readable = (
                not need.show_met(item.show_ids)
                if item.kind == "episode"
                else bool(item.source_key) and not lookups(item)  # identified there since?
            )
            if server != "plex" and not readable:
                return item, None  # nothing a read of the server could add
            return item, not_configured(server, item, need)
        if isinstance(lookup, SeriesEnricher):
            item, error = await lookup.lookup(item, need, from_server)
        else:
            item, error = await lookup.lookup(item, need)
        return item, (problem_from(server, error) if error is not None else None)

    async def _key_refused(self, server: str, problem: Problem) -> None:
        """Keep that the server refused its key. Its one alert (per server, not per row or
        target: the fix is in the server's key) is the delivery worker's, raised once the rows
        it holds are settled, naming whose wait (`causes.server_key_alert`)."""
        self._refused.add(server)

    async def _key_works(self, server: str) -> None:
        """The server answered a lookup with its key: the rows that key held (a refusal met
        before, in this process or another) go now, not at the end of their half hour."""
        if self.lift_server_holds is None:
            return
        lifted = await asyncio.to_thread(self.lift_server_holds, server, self.clock())
        if lifted:
            log.info(
                f"{service_title(server)} takes its key again: the deliveries it held go now",
                extra={"server": server, "rows": lifted},
            )

    def _was_refused(self, server: str) -> bool:
        """Whether the server refused our key before: in this process, or an alert about it
        is open (the user fixed the key and restarted, so this process never saw it refused)."""
        if server in self._refused:
            return True
        return self.notifier is not None and self.notifier.raised("credentials", f"server:{server}")

    async def _key_accepted(self, server: str) -> None:
        self._refused.discard(server)
        if self.notifier is not None:
            message = server_key_works(server)
            await self.notifier.resolve("credentials", message, key=f"server:{server}")
