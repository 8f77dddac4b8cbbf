"""Our own JSON schema, for Kodi scripts, Home Assistant automations and anything with curl.

    {
      "event": "start|pause|resume|progress|stop|played|unplayed|rate",     required
      "user": "alice", "user_id": "7", "player": "kodi-livingroom",
      "server": "kodi", "session": "any id of this playback",                optional
      "progress": 95.0 (percent) or "position_ms" + "duration_ms",          optional
      "played": true        on stop: the player counted it as watched         optional
      "rating": 8           0-10, required for rate; 0 clears the rating
      "watched_at": "2025-03-14T20:48:02Z"   ISO-8601 with its zone;          optional
                                             a day alone: that day where watchbridge runs;
                                             no zone: taken near now (dated), or far
                                             from it in the zone its sender was seen
                                             to write near now (learned)
      "item": {                                                               required
        "type": "movie|episode", "title": "…", "year": 2016,
        "ids": {"imdb": "tt…", "tmdb": 1, "tvdb": 1, "trakt": 1, "anilist": 1, "mal": 1,
                "anidb": 1, "slug": "…"},
        "show": {"title": "…", "year": 2008, "ids": {…}},                    episodes
        "season": 5, "number": 14, "absolute": 62                             episodes
      }
    }

A movie needs ids or a title. An episode needs its own ids, or a show (ids or title) with
season and number (or an absolute number). A broken field gives Rejected("<path>: <problem>").
An optional id, number, flag, time or object sent as a template's placeholder for a missing
value (Home Assistant's "None", its states "unknown" and "unavailable", "null") is absent; text
(a title, a user) is taken as sent, since a film may be called "Unknown".
`progress` without `duration_ms` is kept as a percent (MediaEvent.percent): a position made up
from it would pass for a real one.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Literal, NamedTuple

from watchbridge.clocksteps import UNSET_BEFORE
from watchbridge.ingest.common import (
    EARLIEST,
    LATEST,
    LIVE_TV,
    MAX_MS,
    NOT_VIDEO,
    UNSUPPORTED_TYPE,
    Payload,
    accept,
    clean_id,
    flag,
    integer,
    iso_time,
    number,
    obj,
    text,
    wrong_url_hint,
)
from watchbridge.model import (
    END_YEAR,
    FIRST_YEAR,
    Accepted,
    Account,
    Action,
    Ids,
    Ignored,
    MediaEvent,
    MediaKind,
    MediaRef,
    ParseResult,
    Rejected,
    viewing_year,
)
from watchbridge.ratings import from_ten
from watchbridge.zone import iso_offset

ACTIONS: dict[str, Action] = {
    name: name
    for name in ("start", "pause", "resume", "progress", "stop", "played", "unplayed", "rate")
}
KINDS: dict[str, MediaKind] = {"movie": "movie", "episode": "episode"}
# Other media a player plays, as Home Assistant's media_content_type names them: one automation
# may watch a player that also plays music. Acknowledged and counted, like other sources' music
# (`tvshow` is not here: Home Assistant's Plex player says so of an episode).
IGNORED_TYPES = {
    **dict.fromkeys(
        ("music", "track", "album", "artist", "podcast", "audiobook", "image", "photo"), NOT_VIDEO
    ),
    **dict.fromkeys(("channel", "tvchannel"), LIVE_TV),
    **dict.fromkeys(("video", "clip", "trailer", "url", "game", "app"), UNSUPPORTED_TYPE),
}
ID_NAMES = ("trakt", "imdb", "tmdb", "tvdb", "anilist", "mal", "anidb", "slug")
# No movie or episode is shorter: a duration_ms below it was sent in seconds.
SHORTEST_DURATION_MS = 30_000
FUTURE_SLACK = 600.0  # two clocks may differ; a zone left out is hours
# A time sent without its zone is read as UTC, or as watchbridge's TZ, only when that puts it
# this near now: then which one the sender meant is sure.
ZONE_LESS_NEAR = 600.0
# Which zone a sender writes its zone-less times in, as its posts near now showed (`taught`):
# UTC, the time where watchbridge runs (its TZ), or either: seen when the two were the same
# (TZ left at UTC, or a zone at UTC+0 then, as London in winter), which tells only a time
# when they still are.
Reading = Literal["utc", "local", "either"]
READINGS: tuple[Reading, ...] = ("utc", "local", "either")
ZONES_APART = 14 * 3600.0  # no time zone is further from UTC (Kiribati, UTC+14)
# Before this (1971-01-01 UTC), in any zone: a sender's clock never set (a box without a
# real-time clock booted at 1970, its time not yet synced), not a viewing's date.
SENDER_UNSET_BEFORE = 365 * 86400.0
# What a template renders for a missing value: Home Assistant's None, and its entity states.
PLACEHOLDERS = frozenset({"none", "null", "unknown", "unavailable"})


# A body naming no one that no `default` profile takes: the script left `user` out.
NO_USER = "user: required: the name a profile lists under users.generic (no profile is `default`)"


def _absent(value: object) -> bool:
    """Null, or a template's placeholder for a missing value."""
    return value is None or (isinstance(value, str) and value.strip().lower() in PLACEHOLDERS)


class Invalid(Exception):
    """A field that breaks the schema; the message is `<path>: <problem>`."""


def parse(data: Payload) -> ParseResult:
    """One generic webhook document → Accepted, or Rejected naming the broken field."""
    try:
        return _parse(data)
    except Invalid as problem:
        return Rejected(str(problem))


def _parse(data: Payload) -> ParseResult:
    action = _action(data)
    item_value = data.get("item")
    other_media = IGNORED_TYPES.get(str(obj(item_value).get("type", "")).strip().lower())
    if other_media is not None:
        return Ignored(other_media)
    warnings: list[str] = []
    item = _item(item_value, warnings)
    played = _played(action, data.get("played"))
    position_ms, duration_ms, percent = _position(data, action, played)
    event = MediaEvent(
        source="generic",
        action=action,
        item=item,
        server=_name(data, "server") or "",
        account=Account(id=_name(data, "user_id"), name=_name(data, "user")),
        player=_name(data, "player") or "",
        position_ms=position_ms,
        duration_ms=duration_ms,
        played=played,
        rating=_rating(action, data.get("rating")),
        occurred_at=_time(data.get("watched_at"), "watched_at"),
        session_id=_name(data, "session") or "",
        percent=percent,
    )
    return accept(event, warnings)


def _action(data: Payload) -> Action:
    value = data.get("event")
    if value is None:
        raise Invalid(f"event: required{wrong_url_hint(data, 'generic')}")
    action = ACTIONS.get((text(value) or "").lower())
    if action is None:  # Plex's event names (media.play) give a Plex body away too
        raise Invalid(
            f"event: must be one of {', '.join(ACTIONS)}{wrong_url_hint(data, 'generic')}"
        )
    return action


def _played(action: Action, value: object) -> bool:
    if action in ("played", "unplayed"):
        return action == "played"
    if _absent(value):
        return False
    played = flag(value)
    if played is None:
        raise Invalid("played: must be true or false")
    return played and action == "stop"


def _rating(action: Action, value: object) -> int | None:
    if _absent(value):
        if action == "rate":
            raise Invalid("rating: required for event rate")
        return None
    rating = number(value)
    if rating is None or not 0 <= rating <= 10:
        raise Invalid("rating: must be a number from 0 to 10")
    return from_ten(rating)


def _position(
    data: Payload, action: Action, played: bool
) -> tuple[int | None, int | None, float | None]:
    """(position, duration, percent): a percent without a duration stays a percent, since a
    position made up from it would pass for a real one; a position and a duration make it
    moot."""
    position = _milliseconds(data, "position_ms")
    duration = _milliseconds(data, "duration_ms") or None
    if position is not None and duration is not None and position > duration * 1.05 + 60_000:
        # Far past the end: one of them in seconds (a player's getTotalTime()) would make
        # every stop a completed play.
        raise Invalid("position_ms: larger than duration_ms; both are milliseconds")
    if duration is not None and duration < SHORTEST_DURATION_MS:
        # Both in seconds keep the ratio, but a viewing of a few seconds makes a repeated stop
        # (an automation firing twice) a rewatch: a second play.
        raise Invalid(
            f"duration_ms: {duration} is under {SHORTEST_DURATION_MS // 1000} seconds;"
            " position_ms and duration_ms are milliseconds (multiply seconds by 1000)"
        )
    percent = data.get("progress")
    if _absent(percent) or (position is not None and duration is not None):
        return position, duration, None
    progress = number(percent)
    if progress is None or not 0 <= progress <= 100:
        raise Invalid("progress: must be a number from 0 to 100")
    if action == "stop" and not played and 0 < progress < 1:
        # A 0-1 fraction (position / duration) reads as under 1 %: the stop that decides
        # whether it was watched would end as a pause, and the play would be lost unseen.
        raise Invalid(
            f"progress: {progress:g} on a stop is under 1 %; progress is a percent from 0 to"
            " 100 (multiply a 0-1 fraction by 100), or send position_ms and duration_ms; a stop"
            " in the first 1 % is no viewing: send 0"
        )
    if duration is None:
        return position, None, progress
    return round(duration * progress / 100), duration, None


def _milliseconds(data: Payload, key: str) -> int | None:
    """An optional position or duration: whole milliseconds up to MAX_MS (~300 years); more
    is a broken template, and would overflow the arithmetic on it."""
    value = _whole(data, key, key)
    if value is not None and value > MAX_MS:
        raise Invalid(f"{key}: must be a whole number of milliseconds from 0 to {MAX_MS}")
    return value


def dated(result: Accepted, now: float, learned: Reading | None = None) -> Accepted | Rejected:
    """`result` checked against the clock (`dated_and_taught`)."""
    return dated_and_taught(result, now, learned)[0]


def dated_and_taught(
    result: Accepted, now: float, learned: Reading | None = None
) -> tuple[Accepted | Rejected, Reading | None]:
    """`result` checked against the clock (`now`): a day sent without a time that is today
    where watchbridge runs stands for now when its noon is still ahead (a play logged this
    morning); a time sent without its zone is the reading of it near now, or else the one its
    sender was seen to write (`learned`; `_zone_less`); an event dated more than FUTURE_SLACK
    after `now` (an offset that is not the sender's) is refused, since it would be the play's
    date. One dated in 1970 is the sender's clock never set: it is dated as it arrives. With
    what a `watched_at` without its zone teaches of its sender (`taught`), read once."""
    document = result.document or {}
    sent = document.get("watched_at")
    read = _zone_less_read(sent, now)
    if read is not None:
        zoned = _zone_less(result, read, str(sent).strip(), now, learned)
        if isinstance(zoned, Rejected):
            return zoned, read.seen
        result = zoned
    return _checked(result, sent, now), None if read is None else read.seen


def _checked(result: Accepted, sent: object, now: float) -> Accepted | Rejected:
    """`result` (its zone-less time read) against the clock (see `dated_and_taught`)."""
    day = _day(sent)
    today = day is not None and day == datetime.fromtimestamp(now).date()
    events = [
        replace(e, occurred_at=now)
        if e.occurred_at is not None
        and ((today and e.occurred_at > now) or _epoch_year(e.occurred_at))
        else e
        for e in result.events
    ]
    if events != result.events:
        result = replace(result, events=events)
    ahead = max((e.occurred_at - now for e in result.events if e.occurred_at), default=0.0)
    # A clock never set (a board booted at 1970) cannot judge: the sender's time stands.
    if ahead <= FUTURE_SLACK or now < UNSET_BEFORE:
        return result
    if ahead > ZONES_APART:  # not a zone left out: one of the two clocks is wrong
        return Rejected(
            f"watched_at: {ahead / 86400:.1f} days ahead of this server's clock, further than"
            " a time zone can be: set the clock of this machine, or of the sender, right"
            " (time sync, NTP)"
        )
    if day is not None:
        zone = datetime.fromtimestamp(now).astimezone().tzname()
        return Rejected(
            f"watched_at: {day} has not begun where watchbridge runs ({zone}): set TZ to your "
            "time zone, or send a time with its zone (e.g. 2025-03-14T21:48:02+01:00)"
        )
    return Rejected(
        f"watched_at: {ahead / 3600:.1f} hours ahead of this server's clock: send it with the"
        " sender's own zone (e.g. 2025-03-14T21:48:02+01:00; a local time with Z is read as"
        " UTC), or set the clock of this machine, or of the sender, right"
    )


def _naive(value: object) -> datetime | None:
    """A `watched_at` time sent without its zone (a day alone is not one), else None."""
    raw = text(value) if isinstance(value, str) else None
    if raw is None or len(raw) > 64 or _day(raw) is not None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is None else None


class _ZoneLess(NamedTuple):
    """A `watched_at` sent without its zone, read both ways."""

    as_utc: float  # as the parser read it
    local: datetime  # on this process's clock (TZ)
    seen: Reading | None  # the reading near now it teaches (`taught`)


def _zone_less_read(sent: object, now: float) -> _ZoneLess | None:
    """`sent` read as UTC and as the time where watchbridge runs, and which of the two (or
    either, the same then) is within ZONE_LESS_NEAR of `now`; None for a time with its zone
    (or none), or when a clock is not set (this one: it cannot judge; UTC stands)."""
    naive = _naive(sent)
    if naive is None or now < UNSET_BEFORE:
        return None
    as_utc = naive.replace(tzinfo=UTC).timestamp()
    local = _local(naive, now)
    at = local.timestamp()
    seen: Reading | None
    if _epoch_year(as_utc):
        seen = None
    elif abs(as_utc - now) <= ZONE_LESS_NEAR:
        seen = "either" if at == as_utc else "utc"
    else:
        seen = "local" if abs(at - now) <= ZONE_LESS_NEAR else None
    return _ZoneLess(as_utc, local, seen)


def _zone_less(
    result: Accepted, read: _ZoneLess, sent: str, now: float, learned: Reading | None
) -> Accepted | Rejected:
    """A time sent without its zone (`datetime.now().isoformat()`, `date +%FT%T`), which the
    parser read as UTC: UTC when that is within ZONE_LESS_NEAR of `now`, else the time where
    watchbridge runs (its TZ) when that is; further off (a post sent again after watchbridge
    was down, a stop sent late), the reading its sender was seen to write near now
    (`learned`). Otherwise which zone was meant cannot be told, and a guess would date the
    play hours off without a word: refused, asking for the zone. One in 1970 is left to
    `dated` (a sender's clock not set)."""
    if read.seen in ("utc", "either") or _epoch_year(read.as_utc):
        return result
    at = read.local.timestamp()
    if read.seen is None and (learned == "utc" or (learned == "either" and at == read.as_utc)):
        return result
    if read.seen == "local" or learned == "local":
        return replace(result, events=[replace(e, occurred_at=at) for e in result.events])
    return Rejected(
        f"watched_at: {sent} has no time zone: add yours (e.g. {sent}"
        f"{_suggested(read.local, read.as_utc - now)}) or Z, or send no watched_at to date it"
        " as it arrives"
    )


def _suggested(local: datetime, ahead: float) -> str:
    """The offset a refused time without its zone is shown with: TZ's at that time (a
    household's clocks are on one zone); with TZ at UTC, whose +00:00 says nothing over Z, the
    one that puts it at now (`ahead`: how far it is ahead of now read as UTC), which is the
    sender's when it was sent live (watchbridge in a container left at UTC): +00:00 copied
    from the example would date a play from New York 4 hours early without a word."""
    if local.utcoffset() or abs(ahead) > ZONES_APART:
        return _offset(local)
    quarters = round(ahead / 900) * 15
    return f"{iso_offset(quarters)} if it was sent as it happened"


def _local(naive: datetime, now: float) -> datetime:
    """`naive` read on this process's clock (TZ). In the hour a clock goes back, which comes
    twice, the second one when that is near `now` (a post sent live then); else the first."""
    second = naive.replace(fold=1).astimezone()
    if abs(second.timestamp() - now) <= ZONE_LESS_NEAR:
        return second
    return naive.astimezone()


def zone_sender(result: Accepted) -> str | None:
    """Who sent a `watched_at` without its zone, as its reading is remembered by: the
    webhook's `user` (and `user_id`) and `player` (two scripts of one user may run on clocks
    apart); None when the webhook has no such time."""
    document = result.document or {}
    if _naive(document.get("watched_at")) is None or not result.events:
        return None
    event = result.events[0]
    return json.dumps([event.account.name or "", event.account.id or "", event.player])


def taught(result: Accepted, now: float) -> Reading | None:
    """Which zone the sender writes, as a `watched_at` without its zone near `now` in one
    reading tells (`_zone_less`): UTC, the time where watchbridge runs, or either when the
    two are the same then; None when neither is near `now`, or a clock is not set."""
    read = _zone_less_read((result.document or {}).get("watched_at"), now)
    return None if read is None else read.seen


def to_learn(learned: Reading | None, seen: Reading | None) -> Reading | None:
    """What to remember of a sender that wrote `seen` now, having been seen to write
    `learned`; None when nothing changes. Either (UTC and TZ's time the same then) tells
    nothing over UTC or local."""
    if seen is None or seen == learned or (seen == "either" and learned is not None):
        return None
    return seen


def kept(reading: Reading, zone: str) -> str:
    """A reading learned as it is stored, with the `TZ` it was learned under (`zone`)."""
    return json.dumps({"reads": reading, "tz": zone})


def learned_from(value: str | None, zone: str) -> Reading | None:
    """The reading stored (`kept`), None when there is none, or when it is the time where
    watchbridge runs under another `TZ` (`zone`) than the one it was learned under: the
    sender's clock is not that TZ's."""
    try:
        stored = json.loads(value) if value else None
    except ValueError:
        return None
    if not isinstance(stored, dict):
        return None
    reading = next((r for r in READINGS if r == stored.get("reads")), None)
    if reading == "local" and stored.get("tz") != zone:
        return None
    return reading


def learned_line(reading: Reading, sender: str, zone: str) -> str:
    """What the log tells once of a sender whose zone-less `watched_at` was seen near now
    (`sender`: `zone_sender`; `zone`: where watchbridge runs, its `TZ`)."""
    name, user_id, player = json.loads(sender)
    who = (name or user_id or "a sender without a user") + (f" on {player}" if player else "")
    read, kept_while = {
        "utc": ("UTC", "even hours old (a post sent again)"),
        "local": (
            f"the time where watchbridge runs ({zone})",
            "even hours old (a post sent again)",
        ),
        "either": (f"UTC, the time where watchbridge runs ({zone}) too", "while the two agree"),
    }[reading]
    return (
        f"generic webhook: {who} sends watched_at without a time zone in {read}: such a time"
        f" it sends later is read so, {kept_while}"
    )


def _offset(at: datetime) -> str:
    """`at`'s offset from UTC as ISO-8601 writes it: +01:00, -04:00, +05:30."""
    offset = at.utcoffset()
    return iso_offset(int(offset.total_seconds() // 60) if offset is not None else 0)


def _epoch_year(at: float) -> bool:
    """Whether `at` is in 1970 in some zone: a sender's clock never set."""
    return -ZONES_APART <= at < SENDER_UNSET_BEFORE


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(value: object) -> date | None:
    """The day of a `watched_at` sent as a day alone (YYYY-MM-DD), else None."""
    raw = text(value) if isinstance(value, str) else None
    if raw is None or not _DAY.fullmatch(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def _day_time(day: date) -> float | None:
    """Noon of `day` where watchbridge runs (its `TZ`), as AniList's dates are read: that day
    there, and in every zone within 11 hours of it (TZ left at UTC); None in a year no viewing
    is in (model.viewing_year).
    Midnight UTC would be the evening before in the Americas."""
    if not viewing_year(day.year):
        return None
    at = datetime(day.year, day.month, day.day, 12).timestamp()
    return at if EARLIEST <= at < LATEST else None


def _time(value: object, path: str) -> float | None:
    if _absent(value):
        return None
    day = _day(value)
    parsed = _day_time(day) if day is not None else iso_time(value)
    if parsed is None and (seconds := number(value)) is not None:
        raise Invalid(_epoch_number(value, seconds, path))
    if parsed is None:
        raise Invalid(
            f"{path}: must be an ISO-8601 time between {FIRST_YEAR} and {END_YEAR}, "
            "e.g. 2025-03-14T20:48:02Z"
        )
    return parsed


def _epoch_number(value: object, seconds: float, path: str) -> str:
    """What to tell of a time sent as a number (`time.time()`, JavaScript's `Date.now()`,
    Home Assistant's `as_timestamp(now())`): what to send instead, with the time it would be
    as epoch seconds or milliseconds where one of them is a viewing's."""
    example = "e.g. 2025-03-14T20:48:02Z"
    for unit, scale in (("seconds", 1), ("milliseconds", 1000)):
        at = seconds / scale
        if max(SENDER_UNSET_BEFORE, EARLIEST) <= at < LATEST:
            iso = datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            example = f"as epoch {unit} it is {iso}"
            break
    shown = text(value) or repr(value)
    return (
        f"{path}: {shown} is a number, not a time: send an ISO-8601 time with its zone"
        f" ({example}), or send no {path} to date it as it arrives"
    )


# --------------------------------------------------------------------------- item


def _item(value: object, warnings: list[str]) -> MediaRef:
    if value is None:
        raise Invalid("item: required")
    item = _object(value, "item")
    if item.get("type") is None:
        raise Invalid("item.type: required")
    kind = KINDS.get((text(item.get("type")) or "").lower())
    if kind is None:
        raise Invalid(
            "item.type: must be movie or episode (an episode with item.show, item.season and"
            " item.number)"
        )
    ids = _ids(item.get("ids"), "item.ids", warnings)
    if kind == "movie":
        return _movie(item, ids)
    return _episode(item, ids, warnings)


def _movie(item: Payload, ids: Ids) -> MediaRef:
    title = _text(item, "title", "item.title")
    if not ids and title is None:
        raise Invalid("item: a movie needs ids or a title")
    return MediaRef(kind="movie", ids=ids, title=title, year=_year(item, "item.year"))


def _episode(item: Payload, ids: Ids, warnings: list[str]) -> MediaRef:
    show_value = item.get("show")
    # null (or "None"): absent, like any other field
    show = _object({} if _absent(show_value) else show_value or {}, "item.show")
    show_ids = _ids(show.get("ids"), "item.show.ids", warnings)
    show_title = _text(show, "title", "item.show.title")
    # The show's id copied among the episode's own: by it Trakt finds another show's episode
    # (TVDB and TMDB number episodes and shows apart).
    copied = [
        n
        for n in ("trakt", "tvdb", "tmdb", "imdb")
        if (v := getattr(ids, n)) and v == getattr(show_ids, n)
    ]
    if copied:
        ids = replace(ids, **dict.fromkeys(copied))
        warnings.append(
            f"item.ids.{', item.ids.'.join(copied)}: the show's id, not the episode's; left out"
        )
    season = _whole(item, "season", "item.season")
    number_ = _whole(item, "number", "item.number")
    absolute = _whole(item, "absolute", "item.absolute")
    if not ids:
        if not show_ids and show_title is None:
            raise Invalid("item.show: an episode without ids needs show ids or a show title")
        if absolute is None and (season is None or number_ is None):
            raise Invalid("item.season, item.number: required for an episode without ids")
    return MediaRef(
        kind="episode",
        ids=ids,
        title=_text(item, "title", "item.title"),
        year=_year(show, "item.show.year"),
        show_ids=show_ids,
        show_title=show_title,
        season=season,
        number=number_,
        absolute=absolute,
    )


def _year(data: Payload, path: str) -> int | None:
    # 0 is unknown: Home Assistant's `{{ year | int }}` renders a missing year so.
    return _whole(data, "year", path) or None


def _ids(value: object, path: str, warnings: list[str]) -> Ids:
    if _absent(value):
        return Ids()
    raw = _object(value, path)
    found: dict[str, str] = {}
    for name, id_value in raw.items():
        if name not in ID_NAMES:
            warnings.append(f"{path}.{name}: unknown id, ignored")
            continue
        # Absent: null, and what templates render for a missing value ("", `| int`'s 0, "None").
        if _absent(id_value) or id_value in ("", 0, "0"):
            continue
        cleaned = clean_id(name, id_value)
        if cleaned is None:
            expected = "an IMDb id like tt2543164" if name == "imdb" else "a positive number"
            raise Invalid(f"{path}.{name}: must be {expected}")
        found[name] = cleaned
    return Ids(**found)


def _object(value: object, path: str) -> Payload:
    if not isinstance(value, dict):
        raise Invalid(f"{path}: must be an object")
    return value


def _name(data: Payload, key: str) -> str | None:
    """A name or an id: a string, or a whole number (ids often arrive as numbers)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # 7.0 from a template's number
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"{key}: must be a string or a whole number")
    return text(value)


def _text(data: Payload, key: str, path: str) -> str | None:
    """A title: a string, or a number. Home Assistant hands on a template's text that reads as
    a number as that number, so its automation sends the film *1917* as `1917`."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**64:
        return str(value)
    if not isinstance(value, str):
        raise Invalid(f"{path}: must be a string")
    return value.strip() or None


def _whole(data: Payload, key: str, path: str) -> int | None:
    """An optional whole number >= 0 ("5" is accepted too)."""
    value = data.get(key)
    if _absent(value):
        return None
    result = integer(value)
    if result is None or result < 0:
        raise Invalid(f"{path}: must be a whole number >= 0")
    return result
