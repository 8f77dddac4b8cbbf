"""Where an episode known only by its air date is in TMDB's numbering (Serializd's), when
the media server numbers it otherwise (TVDB's order): the rules, pure. The catalogue
(`catalogue.find_aired`) reads the season listings they decide over."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

from watchbridge.services.serializd import SeasonListing

# TMDB's episode at the sent numbers aired more than this many days apart: not a date the
# databases disagree on, another episode (see `another_numbering`).
ANOTHER_SEASON_DAYS = 60


def by_air_date(
    listings: dict[int, SeasonListing], season: int, number: int, aired: str
) -> tuple[int, int] | None:
    """Where an episode that first aired on `aired` is in TMDB's numbering, when TMDB splits
    or folds seasons otherwise than the sender (TVDB's order: Re:ZERO's TVDB S2E14 is TMDB's
    S1E39): the one episode of another season of `listings` that aired that day (`_aired`),
    where the sender's season fits. Past the end of TMDB's season, counting on into the next
    seasons must lead there (TVDB runs on a season TMDB splits); else the sender's season
    must start in TMDB's after a break in airing (TMDB folds it in). A date a week off (an
    early streaming release) then matches a neighbour, which neither check lets through.
    None keeps the sent numbers. Within one season, and among specials, each numbers apart:
    never taken. Pure."""
    named = listings.get(season, SeasonListing({}, {}))
    if season == 0 or not another_numbering(named, number, aired):
        return None
    others = {n: listing for n, listing in listings.items() if n not in (0, season)}
    found = _aired(others, aired)
    if found is None:
        return None
    landed = others[found[0]]
    if _days_running(landed) and not _only_one_that_night(landed, found, number, aired):
        return None
    if named.ids and number not in named.ids:
        return found if found == _counted_on(listings, season, number) else None
    return found if _starts_after_a_break(landed, found[1] - number + 1) else None


def aired_on(listings: dict[int, SeasonListing], aired: str) -> tuple[int, int] | None:
    """The one regular episode of `listings` that aired on `aired`, for an episode known by
    that day alone (Plex numbers a daily show's by its air date: no episode number). None when
    none did (not listed yet) or several did (two that night: either could be it); only that
    very day, as the sender's date is the databases' own. Specials never: they share their
    days with regular episodes. Pure."""
    found = [
        (s, e)
        for s, listing in listings.items()
        if s != 0
        for e, day in listing.aired.items()
        if day == aired
    ]
    return found[0] if len(found) == 1 else None


def is_day(value: str) -> bool:
    """Whether a sender's air date is a day of the calendar (Plex's is checked for its shape
    only, on the webhook's path)."""
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _aired(listings: dict[int, SeasonListing], aired: str) -> tuple[int, int] | None:
    """The one episode of `listings` that aired on `aired`, else the one that aired a day
    apart (a time zone away), unless its season has episodes a day apart or fewer (a daily
    show, a two-episode night: a day apart is a neighbour, tonight's not listed yet)."""
    on_the_day = [
        (s, e) for s, listing in listings.items() for e, d in listing.aired.items() if d == aired
    ]
    if on_the_day:
        return on_the_day[0] if len(on_the_day) == 1 else None
    near = [
        (s, e)
        for s, listing in listings.items()
        for e, d in listing.aired.items()
        if _near(d, aired)
    ]
    if len(near) != 1:
        return None
    return None if _days_running(listings[near[0][0]]) else near[0]


def _only_one_that_night(
    listing: SeasonListing, found: tuple[int, int], number: int, aired: str
) -> bool:
    """In a season airing two days running, a date a day off (a server east of UTC sends the
    day before) names a neighbour: the match is taken only with the sent number, and only
    when no episode aired the next day (a date a day early would be that one's)."""
    next_day = (date.fromisoformat(aired) + timedelta(days=1)).isoformat()
    return found[1] == number and next_day not in listing.aired.values()


def _days_running(listing: SeasonListing) -> bool:
    """Whether a season has episodes a day apart or fewer (a daily show, a two-episode night)."""
    days = sorted(date.fromisoformat(day) for day in listing.aired.values())
    return any((later - earlier).days <= 1 for earlier, later in pairwise(days))


# Between two of TVDB's seasons that TMDB runs as one, the broadcast paused (a cour break):
# longer than any delay of one episode.
SEASON_BREAK_DAYS = 21


def _starts_after_a_break(listing: SeasonListing, start: int) -> bool:
    """Whether a season the sender numbers apart can start at episode `start` of this one:
    at its first episode, or after a pause in airing longer than SEASON_BREAK_DAYS."""
    if start == 1:
        return True
    before, first = listing.aired.get(start - 1), listing.aired.get(start)
    if start < 1 or before is None or first is None:
        return False
    return _days_apart(before, first) > SEASON_BREAK_DAYS


def _counted_on(
    listings: dict[int, SeasonListing], season: int, number: int
) -> tuple[int, int] | None:
    """Where episode `number` of `season` falls counting on past the season's end into the
    next seasons TMDB lists (TVDB runs on a season TMDB splits)."""
    later = sorted(n for n in listings if n > season)
    for following in later:
        number -= max(listings[season].ids, default=0)
        season = following
        if number in listings[season].ids:
            return season, number
    return None


def another_numbering(named: SeasonListing, number: int, aired: str) -> bool:
    """Whether the sender's numbers may be another numbering than TMDB's: TMDB's season has
    no such episode, or its episode there aired months apart (the episode some other season
    split or folded in). Days or weeks apart is the databases disagreeing on a date (an early
    streaming release, a time zone), and an undated one tells nothing. Pure."""
    if number not in named.ids:
        return True
    day = named.aired.get(number)
    if day is None:
        return False
    return _days_apart(day, aired) > ANOTHER_SEASON_DAYS


def _near(day: str | None, aired: str) -> bool:
    return day is not None and _days_apart(day, aired) <= 1


def _days_apart(one: str, other: str) -> int:
    return abs((date.fromisoformat(other) - date.fromisoformat(one)).days)
