"""What every parser shares: lenient value readers, id cleaning and the ignore reasons.

Payloads come from templates, .NET serializers and Python string formatting, so every value
may be missing, a string where a number belongs, or a .NET boolean ("True"). The readers here
return None for anything they cannot read instead of raising.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from watchbridge.model import END_YEAR, FIRST_YEAR, Accepted, Ids, MediaEvent, MediaRef
from watchbridge.ratings import from_ten

Payload = Mapping[str, object]

# Ignore reasons: a small fixed set, because they become a metric label.
NOT_VIDEO = "not_video"  # music, photos, audiobooks
UNSUPPORTED_TYPE = "unsupported_type"  # video that is not a movie or an episode: trailers, extras
LIVE_TV = "live_tv"
# Jellyfin's and Emby's item types of Live TV and DVR: channels, their programmes and the
# recordings of them (lower case).
LIVE_TV_TYPES = frozenset(
    {"tvchannel", "livetvchannel", "livetvprogram", "program", "tvprogram", "recording"}
)
STREAMING_CATALOGUE = "streaming_catalogue"  # Plex's own free movies and shows
LIBRARY_EVENT = "library_event"  # item added/deleted
UNSUPPORTED_EVENT = "unsupported_event"  # any event that is not about watching or rating
NO_RATING = "no_rating"  # a like/favourite change without a numeric rating
USER_DATA_ECHO = "user_data_echo"  # Jellyfin user data saved by playback we already hear about
TEST_EVENT = "test_event"  # the "send test" button of the media server

IGNORE_REASONS = frozenset(
    {
        NOT_VIDEO,
        UNSUPPORTED_TYPE,
        LIVE_TV,
        STREAMING_CATALOGUE,
        LIBRARY_EVENT,
        UNSUPPORTED_EVENT,
        NO_RATING,
        USER_DATA_ECHO,
        TEST_EVENT,
    }
)

TICKS_PER_MS = 10_000  # .NET ticks are 100 ns

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}(?:\.0*)?")
_NUMERIC_ID = re.compile(r"0*([1-9][0-9]{0,11})")
_IMDB_ID = re.compile(r"tt[0-9]{5,10}")
_DOTNET_GUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
_NUMERIC_IDS = frozenset({"trakt", "tmdb", "tvdb", "anilist", "mal", "anidb"})


def obj(value: object) -> Payload:
    """The value if it is a JSON object, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def text(value: object) -> str | None:
    """A non-empty string; integral numbers become their digits (ids often arrive as numbers)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return None


def integer(value: object) -> int | None:
    """A whole number from an int, an integral float or a digit string ("5", "5.0")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip().split(".")[0])
    return None


def number(value: object) -> float | None:
    """A finite number from an int, a float or a numeric string ("9", "9.0"), within ±1e300
    (beyond it, arithmetic on it, a rating's * 10, would overflow)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        result = float(value) if abs(value) < 1e300 else math.inf
    elif isinstance(value, str) and len(value) <= 32:
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if abs(result) < 1e300 else None


def flag(value: object) -> bool | None:
    """A boolean, also from .NET template text ("True"/"False") and 0/1."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


# A played mark whose LastPlayedDate is this much older than the webhook kept an earlier date.
REMARK_DATED_BEFORE = 600.0


def may_be_a_remark(count: int | None, last_played: float | None, sent: float | None) -> bool:
    """Whether a Jellyfin or Emby played mark may mark again an item played (or started)
    before ("mark season played" marks every episode, the watched ones too): their PlayCount
    counts playback starts and dated marks ("mark unplayed" zeroes it), and a mark without a
    date (the apps' multi-select) keeps the last play's date. decide() then asks whether we
    recorded the item watched."""
    if (count or 0) > 1:
        return True
    return last_played is not None and sent is not None and sent - last_played > REMARK_DATED_BEFORE


def unrated(rating: object, likes: object) -> bool:
    """Whether a Jellyfin/Emby item's user data holds no rating at all, no stars and no thumb:
    a rating cleared, or a favourite toggled on an item never rated. Only the rating the
    server sent before of the item tells which (playback's rating session)."""
    value = number(rating)
    return (value is None or value <= 0) and flag(likes) is None


def star_rating(rating: object, likes: object) -> int | None:
    """A Jellyfin/Emby user rating on our 0-100 scale, or None when there is none. The servers
    store a thumbs-up as Rating 10 and a thumbs-down as 1 (and derive Likes from Rating): such
    a pair is a like, not stars. (A real 10/10 set through the API looks the same.)"""
    value = number(rating)
    liked = flag(likes)
    if (liked is True and value == 10) or (liked is False and value == 1):
        return None
    return from_ten(value)


MAX_MS = 10**13  # ~300 years: anything longer is a broken template, not a position or duration


def non_negative(value: object) -> int | None:
    """A position or duration in ms: a whole number from 0 to MAX_MS (ticks: see ticks_to_ms)."""
    result = integer(value)
    return result if result is not None and 0 <= result <= MAX_MS else None


def ticks_to_ms(value: object) -> int | None:
    """.NET ticks (100 ns) to milliseconds."""
    ticks = integer(value)
    if ticks is None or ticks < 0:
        return None
    return non_negative(ticks // TICKS_PER_MS)


# The first and the last instant a time may be a viewing's at (model.FIRST_YEAR, END_YEAR).
EARLIEST, LATEST = (
    datetime(FIRST_YEAR, 1, 1, tzinfo=UTC).timestamp(),
    datetime(END_YEAR, 1, 1, tzinfo=UTC).timestamp(),
)


def air_date(value: object) -> str | None:
    """The day (YYYY-MM-DD) of an ISO date, or of a time that is a server's local midnight
    in UTC (Emby's PremiereDate): "2013-09-15T04:00:00.0000000Z" (a US server) and
    "2013-09-14T23:00:00Z" (a server in Berlin) both give "2013-09-15", as the nearest
    midnight; "2013-09-15" (Jellyfin's template, already a day) stays. None otherwise."""
    raw = text(value) if isinstance(value, str) else None
    if raw is None or not _DAY.match(raw):
        return None
    try:
        day = date.fromisoformat(raw[:10])
    except ValueError:
        return None
    hour = raw[11:13]
    if hour.isdigit() and int(hour) >= 12:  # local midnight east of UTC: the next day
        day += timedelta(days=1)
    return day.isoformat()


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[T ])")


def iso_time(value: object) -> float | None:
    """An ISO-8601 time (7 fractional digits allowed) as epoch seconds; naive means UTC.
    None when it is not one, or falls outside the years a viewing may be in (1900-2200)."""
    raw = text(value) if isinstance(value, str) else None
    if raw is None or len(raw) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        stamp = parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return stamp if EARLIEST <= stamp < LATEST else None


def epoch(value: object) -> float | None:
    """Epoch seconds from a number or a digit string; 0 and negatives mean unknown."""
    result = number(value)
    return result if result is not None and 0 < result < 1e11 else None


def server_guid(value: object) -> str | None:
    """A .NET Guid in one form (32 lower-case hex digits) whether it came with dashes or not."""
    raw = text(value)
    if raw is None:
        return None
    lowered = raw.lower()
    return lowered.replace("-", "") if _DOTNET_GUID.fullmatch(lowered) else raw


def clean_id(name: str, value: object) -> str | None:
    """An external id in canonical form (imdb `tt…`, numeric ids as digits), else None."""
    raw = text(value)
    if raw is None:
        return None
    if name == "imdb":
        return raw.lower() if _IMDB_ID.fullmatch(raw.lower()) else None
    if name in _NUMERIC_IDS:
        match = _NUMERIC_ID.fullmatch(raw)
        return match.group(1) if match else None
    return raw


def genres(value: object) -> tuple[str, ...]:
    """Genre names from a list (Emby's Item.Genres) or one text joined with ", " (the Jellyfin
    plugin's `Genres`)."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list):
        return ()
    return tuple(name for raw in names if (name := text(raw)) is not None)


def make_ids(raw: Mapping[str, object], warnings: list[str]) -> Ids:
    """Ids from provider → value pairs; malformed values are dropped with a warning."""
    found: dict[str, str] = {}
    for name, value in raw.items():
        if value is None or value == "":
            continue
        cleaned = clean_id(name, value)
        if cleaned is None:
            warnings.append(f"ignored malformed {name} id {str(value)[:40]!r}")
        else:
            found.setdefault(name, cleaned)
    return Ids(**found)


def id_warnings(item: MediaRef) -> list[str]:
    """Say what enrichment will have to find, so an unmatched item is explained in the UI."""
    usable = {name for name in (*item.ids.present(), *item.show_ids.present())}
    usable.discard("plex_guid")
    if not usable:
        return ["no external ids: the item needs enrichment or a title lookup"]
    if item.kind == "episode" and not item.show_ids.present().keys() - {"plex_guid"}:
        return ["episode-level ids only: the show's ids need a lookup"]
    return []


def accept(event: MediaEvent, warnings: list[str], last_episode: int | None = None) -> Accepted:
    """The accepted event with the parser's warnings and the id warnings. `last_episode`: the
    end of a multi-episode file (Jellyfin's EpisodeNumberEnd, Emby's IndexNumberEnd)."""
    events = [event, *_following_episodes(event, last_episode)]
    return Accepted(events=events, warnings=[*warnings, *id_warnings(event.item)])


MAX_EPISODES_PER_FILE = 10  # a larger range is a tagging mistake, not a file


def _following_episodes(event: MediaEvent, last: int | None) -> list[MediaEvent]:
    """For a file holding E15-E16, the same event about each further episode, so E16 has a
    session that completes (and restarts) with E15's. Their own ids and air dates are
    unknown; the show's (looked up by the show's server key) with season and number name them."""
    item = event.item
    if event.action == "rate" or item.kind != "episode" or item.number is None:
        return []
    if last is None or not item.number < last < item.number + MAX_EPISODES_PER_FILE:
        return []
    return [
        dataclasses.replace(
            event,
            item=dataclasses.replace(
                item, ids=Ids(), title=None, number=n, source_key=None, aired=None
            ),
            companion=True,
            companion_of=item,
        )
        for n in range(item.number + 1, last + 1)
    ]


class _Telltale(NamedTuple):
    """What gives a source's payload away (docs/webhooks.md): its event-type key, with one of
    `beside` when that key alone is too common a name."""

    source: str
    name: str  # as the hint says it
    key: str
    beside: frozenset[str] = frozenset()

    def fits(self, data: Payload) -> bool:
        return self.key in data and (not self.beside or not self.beside.isdisjoint(data))


_TELLTALES = (
    _Telltale("plex", "a Plex", "event", frozenset({"Metadata", "Account"})),
    _Telltale("jellyfin", "a Jellyfin", "NotificationType"),
    _Telltale("emby", "an Emby", "Event", frozenset({"Item", "Server"})),
    _Telltale(
        "tautulli",
        "a Tautulli",
        "action",
        frozenset({"media_type", "rating_key", "session_key", "server_machine_id"}),
    ),
    _Telltale("generic", "a generic", "event", frozenset({"item"})),
)


def wrong_url_hint(data: Payload, source: str) -> str:
    """`; this looks like an Emby webhook: use the emby URL …` for a payload in another
    source's shape sent to `source`'s URL, else "": a refusal for a missing event type alone
    does not tell a user that the URL is wrong."""
    for telltale in _TELLTALES:
        if telltale.source != source and telltale.fits(data):
            return (
                f"; this looks like {telltale.name} webhook: use the {telltale.source} URL"
                " from watchbridge webhook-urls"
            )
    return ""


def ignored_type(item_type: str, not_video: frozenset[str]) -> str:
    """Why an item type that is neither a movie nor an episode is ignored (a metric label)."""
    if item_type in not_video:
        return NOT_VIDEO
    return LIVE_TV if item_type in LIVE_TV_TYPES else UNSUPPORTED_TYPE
