"""Serializd's catalogue, which is TMDB's: season ids, episode counts, episode ids and air
dates per show, cached in the store; and episodes numbered as TMDB numbers them, found by
their own TMDB id, else by their air date (a media server may number them in TVDB's order),
or counted from their absolute number through the show's regular seasons; and whether a
season has an episode of that number at all (`season_end`).

Used by the Serializd target (seasons to write to, episode placement), its watchlist and the
AniList target (TMDB numbering before the anime mapping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from watchbridge.air_dates import aired_on, another_numbering, by_air_date, is_day
from watchbridge.anime import Unmatched
from watchbridge.anime_seasons import serializd_table
from watchbridge.http import ServiceError, Unavailable
from watchbridge.ids import Enricher, ids_from, own_tmdb
from watchbridge.logs import Repeating
from watchbridge.model import MediaRef
from watchbridge.services.serializd import (
    SERVICE,
    SeasonListing,
    SerializdAuthError,
    SerializdClient,
    SerializdError,
    SerializdItemError,
    ShowSeasons,
)
from watchbridge.store import Store

log = logging.getLogger(__name__)

SEASONS_CACHE = "serializd-seasons"  # id cache: TMDB show id -> {"ids", "episodes"} by season
SEASONS_TTL = 7 * 86400.0
UNKNOWN = "unknown"  # in SEASONS_CACHE: why Serializd does not know the show
UNKNOWN_TTL = 86400.0
EPISODES_CACHE = "serializd-episodes"  # id cache: "show:season" -> {"ids", "aired"} by number
EPISODES_TTL = 86400.0
REFRESH_EVERY = 3600.0  # a show's cached season listings are read again at most this often
CATALOGUE_PAUSE = 300.0  # after Serializd failed to answer, other targets leave it alone
NOT_NUMBERED = "could not number an episode as TMDB does"


async def season_map(
    client: SerializdClient,
    store: Store,
    show_id: int,
    clock: Callable[[], float],
    need: int | None = None,
) -> dict[int, int]:
    """Season number -> TMDB season id of a show, cached for days (§4: it changes only when
    TMDB adds seasons); read again when season `need` is missing from the cached map."""
    return (await show_seasons(client, store, show_id, clock, need=need)).ids


async def show_seasons(
    client: SerializdClient,
    store: Store,
    show_id: int,
    clock: Callable[[], float],
    need: int | None = None,
    counts: bool = False,
    fresh: bool = False,
) -> ShowSeasons:
    """A show's season ids (and, with `counts`, episode counts), cached like `season_map`.
    Entries cached before counts were kept hold ids only: one read fills them in. `fresh`:
    read again whatever is cached (a known show)."""
    lookup = str(show_id)
    hit, cached = await asyncio.to_thread(store.cache_get, SEASONS_CACHE, lookup, clock())
    if hit and isinstance(cached, dict) and isinstance(cached.get(UNKNOWN), str):
        raise SerializdItemError(SERVICE, cached[UNKNOWN])  # asked within the day
    known, with_counts = _cached_seasons(cached) if hit and not fresh else (None, False)
    if known is not None and (need is None or need in known.ids) and (with_counts or not counts):
        return known
    try:
        seasons = await client.show_seasons(show_id)
    except SerializdItemError as exc:  # a show it does not know yet: ask again tomorrow
        unknown = {UNKNOWN: exc.message}
        await asyncio.to_thread(
            store.cache_put, SEASONS_CACHE, lookup, unknown, clock(), UNKNOWN_TTL
        )
        raise
    value = {
        "ids": {str(n): season_id for n, season_id in seasons.ids.items()},
        "episodes": {str(n): count for n, count in seasons.episodes.items()},
        "at": clock(),  # when it was read (`season_end` reads it again at most hourly)
    }
    await asyncio.to_thread(store.cache_put, SEASONS_CACHE, lookup, value, clock(), SEASONS_TTL)
    return seasons


def forget_unknown(store: Store, items: Iterable[MediaRef], now: float) -> None:
    """Forget that Serializd did not know the shows of `items` (UNKNOWN, taken as its answer
    for UNKNOWN_TTL): their next delivery asks again. For a retry by hand, the user saying
    "try now" (Serializd lists the show since); automatic retries keep the answer."""
    shows = {(ref.ids.tmdb if ref.kind == "show" else ref.show_ids.tmdb) for ref in items}
    for show in sorted(s for s in shows if s):
        store.cache_update(SEASONS_CACHE, show, now, _unknown_dropped)


def _unknown_dropped(cached: Any) -> tuple[Any, float, None]:
    """`Store.cache_update`'s change: an UNKNOWN entry deleted, any other left as it is."""
    unknown = isinstance(cached, dict) and isinstance(cached.get(UNKNOWN), str)
    return cached, (0.0 if unknown or cached is None else SEASONS_TTL), None


async def season_end(
    client: SerializdClient,
    store: Store,
    show_id: int,
    season: int,
    number: int,
    clock: Callable[[], float],
) -> int | None:
    """How many episodes season `season` of a show has on Serializd (TMDB), when episode
    `number` is past them: Serializd has no such episode. None when the season holds it, or
    its count is not known (nor a season it does not list: `season_map` says so). The count
    is the show answer's (cached like `season_map`), else the season's listing's last
    number; a number past it (a new episode TMDB lists hours after it airs) reads them again,
    at most hourly per show."""
    count: int | None = None
    for fresh in (False, True):
        if fresh and await _read_lately(store, show_id, clock):
            break
        seasons = await show_seasons(client, store, show_id, clock, counts=True, fresh=fresh)
        if season not in seasons.ids:
            return None
        count = seasons.episodes.get(season)
        if count is None:  # no count in the answer: the season's listing says
            listing, _ = await season_listing(client, store, show_id, season, clock, fresh)
            count = max(listing.ids, default=None)  # none read: not known
        if count is None or number <= count:
            return None
    return count


async def absolute_episode(
    client: SerializdClient,
    store: Store,
    show_id: int,
    absolute: int,
    clock: Callable[[], float],
) -> tuple[int, int] | Unmatched:
    """(season, number) of a show's absolute episode `absolute` on its Serializd (TMDB)
    seasons: the episodes of the regular seasons before it counted (`anime.SeasonTable`, the
    rule the anime mapping places absolute numbers by; specials have none). The show answer is
    cached like `season_map`; a season it gives no count for is counted from its listing
    (cached for a day). A number past the last listed episode (a new one) reads the show
    again, at most hourly."""
    refreshed = f"{show_id}:absolute-refreshed"

    async def read_lately() -> bool:
        """Whether the show answer was read within the hour (noted now if not)."""
        hit, _ = await asyncio.to_thread(store.cache_get, EPISODES_CACHE, refreshed, clock())
        if not hit:
            await asyncio.to_thread(
                store.cache_put, EPISODES_CACHE, refreshed, True, clock(), REFRESH_EVERY
            )
        return hit

    held, _ = await asyncio.to_thread(store.cache_get, SEASONS_CACHE, str(show_id), clock())
    if not held:
        await read_lately()  # the read below is a fresh one
    found: tuple[int, int] | Unmatched = Unmatched("not counted yet")
    for fresh in (False, True):
        if fresh and await read_lately():
            break
        seasons = await show_seasons(client, store, show_id, clock, counts=True, fresh=fresh)
        counts: dict[int, int | None] = {}
        for number in sorted(n for n in seasons.ids if n > 0):
            count = seasons.episodes.get(number)
            if count is None:  # no count in the answer: the season's listing says
                listing, _ = await season_listing(client, store, show_id, number, clock)
                count = max(listing.ids, default=None)  # none read: not counted past it
            counts[number] = count
        found = serializd_table(counts).season_of(absolute)
        if not isinstance(found, Unmatched) or found.code != "outside":
            break
    return found


def file_first(item: MediaRef, payload: Mapping[str, Any]) -> MediaRef | None:
    """The first episode of the file a further episode came in (a row's `companion_of`: a
    Jellyfin or Emby file holding E10-E11), as sent: its own ids and number, its show's and
    season's; None for any other row."""
    first = payload.get("companion_of")
    if item.kind != "episode" or not isinstance(first, dict):
        return None
    number, ids = first.get("number"), first.get("ids")
    if not isinstance(number, int) or not isinstance(ids, dict):
        return None
    return replace(item, ids=ids_from(ids), number=number)


async def tmdb_numbered(
    client: SerializdClient,
    store: Store,
    enricher: Enricher | None,
    item: MediaRef,
    clock: Callable[[], float],
    first: MediaRef | None = None,
) -> MediaRef:
    """A webhook's episode with TMDB's season and number (Serializd's, and the anime
    mapping's first numbering). A media server numbers episodes in its library's order
    (TVDB's aired, DVD or absolute order, or TMDB's), so the episode's own TMDB id, where the
    webhook, the Plex server or Trakt's id search gives one, is looked up in the show's
    Serializd seasons; without one, its air date (Jellyfin's and Emby's PremiereDate, Plex's
    originallyAvailableAt: `by_air_date`). Else, or when no season holds it, the numbers stay
    as sent. A further episode of a file holding several (`first`: the file's first, see
    `file_first`) has no ids of its own: it is as many places after where the first is found
    (`counted_on`)."""
    show = item.show_ids.tmdb
    if not (show and show.isdigit()) or item.kind != "episode":
        return item
    if item.season is None or item.number is None:
        return await _unnumbered(client, store, enricher, item, int(show), clock)
    if first is not None and first.number is not None:
        return await _after_first(client, store, enricher, item, first, int(show), clock)
    episode_id = await _own_tmdb(enricher, item)
    sent = (item.season, item.number)
    try:
        if episode_id is not None:
            found = await find_episode(client, store, int(show), episode_id, item.season, clock)
        elif item.aired is not None:
            found = await find_aired(client, store, int(show), sent, item.aired, clock)
        else:
            return item
    except SerializdItemError:  # a show Serializd does not know: nothing to number it by
        return item
    if found is None or found == sent:
        return item
    log.info(
        "episode renumbered as TMDB numbers it",
        extra={"item": item.describe(), "season": found[0], "number": found[1]},
    )
    return replace(item, season=found[0], number=found[1])


async def _own_tmdb(enricher: Enricher | None, item: MediaRef) -> int | None:
    """The episode's own TMDB id: the item's (not its series' id copied among its own:
    `ids.own_tmdb`), else what the enricher finds (see `Enricher.episode_tmdb`)."""
    if enricher is not None:
        return await enricher.episode_tmdb(item)
    return own_tmdb(item)


async def _unnumbered(
    client: SerializdClient,
    store: Store,
    enricher: Enricher | None,
    item: MediaRef,
    show: int,
    clock: Callable[[], float],
) -> MediaRef:
    """An episode the server gave no episode number (a daily show in Plex, numbered by its air
    date: its season the year, no `index`), or no season: where its own TMDB id is in the
    show's seasons; without one, the episode TMDB lists as aired on its air date
    (`find_dated`); without either, its absolute number counted through the show's regular
    seasons (`absolute_episode`, as the Serializd target places it: an anime the datasets map
    by TMDB season is placed by no number alone). As sent when none places it."""
    episode_id = await _own_tmdb(enricher, item)
    hint = item.season if item.season is not None else -1
    how = "its TMDB id" if episode_id is not None else "its air date"
    found: tuple[int, int] | Unmatched | None = None
    try:
        if episode_id is not None:
            found = await find_episode(client, store, show, episode_id, hint, clock)
        elif item.aired is not None:
            found = await find_dated(client, store, show, item.aired, clock)
        # A special's absolute number (HAMA names TheTVDB's season 0) counts no regular season.
        if found is None and item.absolute is not None and item.season != 0:
            how = "its absolute number"
            found = await absolute_episode(client, store, show, item.absolute, clock)
    except SerializdItemError:
        return item
    if found is None or isinstance(found, Unmatched):
        return item
    log.info(
        f"episode without a number placed by {how}",
        extra={"item": item.describe(), "season": found[0], "number": found[1]},
    )
    return replace(item, season=found[0], number=found[1])


async def _after_first(
    client: SerializdClient,
    store: Store,
    enricher: Enricher | None,
    item: MediaRef,
    first: MediaRef,
    show: int,
    clock: Callable[[], float],
) -> MediaRef:
    """A file's further episode, counted on from where TMDB has the file's first: in a
    library in TVDB's order the server's numbers would name another episode (TVDB's S2E11
    of Re:ZERO is TMDB's S1E36, and TMDB's S2E11 is one the user never watched). As sent when
    the first has no TMDB id, or TMDB's seasons do not hold it."""
    if item.number is None or first.number is None or item.season is None:
        return item
    episode_id = await _own_tmdb(enricher, first)
    if episode_id is None:
        return item
    try:
        found = await find_episode(client, store, show, episode_id, item.season, clock)
        if found is None:
            return item
        placed = await counted_on(client, store, show, found, item.number - first.number, clock)
    except SerializdItemError:
        return item
    if placed is None or placed == (item.season, item.number):
        return item
    log.info(
        "episode renumbered as TMDB numbers it, after its file's first",
        extra={"item": item.describe(), "season": placed[0], "number": placed[1]},
    )
    return replace(item, season=placed[0], number=placed[1])


async def counted_on(
    client: SerializdClient,
    store: Store,
    show: int,
    start: tuple[int, int],
    steps: int,
    clock: Callable[[], float],
) -> tuple[int, int] | None:
    """The episode `steps` after `start` in TMDB's numbering: on in its season, past its
    last episode into the next season's first ones (specials count among themselves); None
    when TMDB lists no such episode."""
    season, number = start
    if steps < 0:
        return None
    listing, _ = await season_listing(client, store, show, season, clock)
    if number + steps in listing.ids:
        return season, number + steps
    last = max(listing.ids, default=None)
    if season == 0 or last is None or number + steps <= last:
        return None
    later = sorted(n for n in await season_map(client, store, show, clock) if n > season)
    if not later:
        return None
    following, _ = await season_listing(client, store, show, later[0], clock)
    into = number + steps - last
    return (later[0], into) if into in following.ids else None


class CatalogueNumbering:
    """`tmdb_numbered` for a target other than Serializd (AniList): best effort, and never
    waiting for Serializd. While its catalogue is rate-limited, or for a while after it failed
    to answer, the numbers stay as sent."""

    def __init__(
        self,
        client: SerializdClient,
        store: Store,
        enricher: Enricher | None,
        clock: Callable[[], float],
    ) -> None:
        self.client, self.store, self.enricher, self.clock = client, store, enricher, clock
        self.paused_until = 0.0  # monotonic
        # Serializd down for days fails a play every CATALOGUE_PAUSE, a broken answer each
        # play: a line once, then hourly, and when it works again.
        self._failing = Repeating(log)

    async def __call__(self, item: MediaRef, first: MediaRef | None = None) -> MediaRef:
        now = time.monotonic()
        if now < max(self.paused_until, self.client.catalogue_lane().pacer.blocked_until):
            return item
        try:
            numbered = await tmdb_numbered(
                self.client, self.store, self.enricher, item, self.clock, first
            )
        except ServiceError as exc:
            problem, described = exc.message, item.describe()
            self._failing.warning(
                NOT_NUMBERED, NOT_NUMBERED, self.clock(), item=described, problem=problem
            )
            if isinstance(exc, Unavailable):
                self.paused_until = now + (exc.retry_after or CATALOGUE_PAUSE)
            return item
        self._failing.over(NOT_NUMBERED, "episodes numbered as TMDB does again", self.clock())
        return numbered


async def find_episode(
    client: SerializdClient,
    store: Store,
    show_id: int,
    episode_id: int,
    season: int,
    clock: Callable[[], float],
) -> tuple[int, int] | None:
    """(season, number) of a TMDB episode id in a show's Serializd seasons: the season the
    sender named first, then the others. Each season's listing is cached for a day; when only
    cached listings were searched (a new episode airs), they are read again, at most hourly
    per show. An id no season holds is remembered for a day: its plays cost no more reads."""
    missing, refreshed = f"{show_id}:missing:{episode_id}", f"{show_id}:refreshed"

    async def cached(lookup: str) -> bool:
        return (await asyncio.to_thread(store.cache_get, EPISODES_CACHE, lookup, clock()))[0]

    async def remember(lookup: str, ttl: float) -> None:
        await asyncio.to_thread(store.cache_put, EPISODES_CACHE, lookup, True, clock(), ttl)

    if await cached(missing):
        return None
    seasons = await season_map(client, store, show_id, clock)
    order = sorted(seasons, key=lambda n: (n != season, n == 0, n))  # specials last
    for fresh in (False, True):
        if fresh:
            if await cached(refreshed):
                break
            await remember(refreshed, REFRESH_EVERY)
        cached_any = False
        for number in order:
            listing, was_cached = await season_listing(client, store, show_id, number, clock, fresh)
            cached_any |= was_cached
            where = episode_at(listing.ids, episode_id)
            if where is not None:
                return number, where
        if not cached_any:
            break
    await remember(missing, EPISODES_TTL)
    return None


async def find_aired(
    client: SerializdClient,
    store: Store,
    show_id: int,
    sent: tuple[int, int],
    aired: str,
    clock: Callable[[], float],
) -> tuple[int, int] | None:
    """(season, number) of an episode known by its air date only, in a show's Serializd
    seasons; None to keep the `sent` numbers. The other seasons are read (and cached) only
    when TMDB's episode at the sent numbers aired another day; a search that found nothing is
    remembered for a day."""
    season, number = sent
    if season == 0:
        return None  # specials: TVDB and TMDB number them apart, and share air days
    if not is_day(aired):
        return None  # Plex's is checked for its shape only, on the webhook's path
    named, _ = await season_listing(client, store, show_id, season, clock)
    if not another_numbering(named, number, aired):
        return None
    missed = f"{show_id}:aired:{season}:{number}:{aired}"
    if (await asyncio.to_thread(store.cache_get, EPISODES_CACHE, missed, clock()))[0]:
        return None
    listings = {season: named}
    for other in await season_map(client, store, show_id, clock):
        if other not in listings:
            listings[other], _ = await season_listing(client, store, show_id, other, clock)
    found = by_air_date(listings, season, number, aired)
    if found is None:
        await asyncio.to_thread(
            store.cache_put, EPISODES_CACHE, missed, True, clock(), EPISODES_TTL
        )
    return found


async def find_dated(
    client: SerializdClient,
    store: Store,
    show_id: int,
    aired: str,
    clock: Callable[[], float],
) -> tuple[int, int] | None:
    """(season, number) of an episode known by its air date alone, no number (`aired_on`),
    in a show's Serializd seasons, each listing read once a day; a day that found nothing
    is remembered for a day."""
    if not is_day(aired):
        return None
    missed = f"{show_id}:dated:{aired}"
    if (await asyncio.to_thread(store.cache_get, EPISODES_CACHE, missed, clock()))[0]:
        return None
    listings: dict[int, SeasonListing] = {}
    for season in await season_map(client, store, show_id, clock):
        if season != 0:
            listings[season], _ = await season_listing(client, store, show_id, season, clock)
    found = aired_on(listings, aired)
    if found is None:
        await asyncio.to_thread(
            store.cache_put, EPISODES_CACHE, missed, True, clock(), EPISODES_TTL
        )
    return found


def episode_at(episodes: dict[int, int | None], episode_id: int) -> int | None:
    return next((n for n, found in episodes.items() if found == episode_id), None)


async def season_listing(
    client: SerializdClient,
    store: Store,
    show_id: int,
    number: int,
    clock: Callable[[], float],
    fresh: bool = False,
) -> tuple[SeasonListing, bool]:
    """One season's episodes with their TMDB ids and air dates, cached for a day, and whether
    they came from the cache (entries of older versions, ids only, are read again)."""
    lookup = f"{show_id}:{number}"
    if not fresh:
        hit, cached = await asyncio.to_thread(store.cache_get, EPISODES_CACHE, lookup, clock())
        if hit and isinstance(cached, dict) and isinstance(cached.get("ids"), dict):
            ids = {int(n): (int(i) if i is not None else None) for n, i in cached["ids"].items()}
            aired = {int(n): str(day) for n, day in dict(cached.get("aired") or {}).items()}
            return SeasonListing(ids, aired), True
    try:
        listing = await client.season_listing(show_id, number)
    except (SerializdAuthError, Unavailable):
        raise
    except SerializdError:  # unknown to Serializd, or an answer we cannot read: no listing
        listing = SeasonListing({}, {})
    value = {
        "ids": {str(n): i for n, i in listing.ids.items()},
        "aired": {str(n): day for n, day in listing.aired.items()},
    }
    await asyncio.to_thread(store.cache_put, EPISODES_CACHE, lookup, value, clock(), EPISODES_TTL)
    return listing, False


async def _read_lately(store: Store, show_id: int, clock: Callable[[], float]) -> bool:
    """Whether a show's answer was read within the hour (its cached entry says when; those
    of older versions do not: not lately)."""
    hit, cached = await asyncio.to_thread(store.cache_get, SEASONS_CACHE, str(show_id), clock())
    at = cached.get("at") if hit and isinstance(cached, dict) else None
    return isinstance(at, int | float) and clock() - at < REFRESH_EVERY


def _cached_seasons(cached: Any) -> tuple[ShowSeasons | None, bool]:
    """A cached season map, and whether it holds episode counts: `{"ids", "episodes"}`, or
    the older `{number: season id}` (ids only)."""
    if not isinstance(cached, dict):
        return None, False
    with_counts = "ids" in cached
    ids, episodes = (cached.get("ids"), cached.get("episodes")) if with_counts else (cached, {})
    if not isinstance(ids, dict) or not isinstance(episodes, dict):
        return None, False
    seasons = ShowSeasons(
        {int(n): int(v) for n, v in ids.items()},
        {int(n): int(v) for n, v in episodes.items()},
    )
    return seasons, with_counts
