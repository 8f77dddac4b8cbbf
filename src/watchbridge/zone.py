"""The time zone watchbridge runs in (`TZ`): whose days AniList's start and finish dates (and
a generic webhook's `watched_at` sent as a day) are, whose clock a generic webhook's
`watched_at` sent as a time without its zone may be read on, and whose clock the times it
shows the user are told by (the status page, `watchbridge status`, sign-in messages).

glibc takes a `TZ` it has no file for (a misspelt name, an image without tzdata) for UTC and
says nothing; `unknown_zone` tells that apart from a zone it knows. Pure but for the look at
the zone files."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

# Names of UTC itself: set so, TZ may only mean "not set" (London is UTC+0 in winter too).
UTC_NAMES = frozenset({"", "utc", "etc/utc", "gmt", "etc/gmt", "utc0", "gmt0", "z"})
# A POSIX rule (EST5EDT, <+03>-3, CET-1CEST,M3.5.0,M10.5.0/3) needs no zone file.
_POSIX_RULE = re.compile(r"(?:[A-Za-z]{3,}|<[^>]+>)[+-]?\d")
ZONE_FILES = "/usr/share/zoneinfo"


def tz_name(environ: Mapping[str, str] = os.environ) -> str:
    """The `TZ` watchbridge runs under, as set ('' unset), without a leading ':'."""
    return environ.get("TZ", "").strip().lstrip(":")


def unknown_zone(environ: Mapping[str, str] = os.environ) -> str | None:
    """`TZ` as set when it names a zone this machine has no file of (the machine then keeps
    UTC), else None."""
    name = environ.get("TZ", "").strip()
    bare = name.lstrip(":")
    if bare.casefold() in UTC_NAMES or _POSIX_RULE.match(bare):
        return None
    path = bare if bare.startswith("/") else os.path.join(environ.get("TZDIR") or ZONE_FILES, bare)
    return None if os.path.isfile(path) else name


def zone_named(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether watchbridge was told a time zone it knows other than UTC itself."""
    bare = tz_name(environ)
    return bare.casefold() not in UTC_NAMES and unknown_zone(environ) is None


def zone_warning(environ: Mapping[str, str] = os.environ) -> str | None:
    """What to tell the user of a `TZ` this machine does not know, or None."""
    name = unknown_zone(environ)
    if name is None:
        return None
    return (
        f"TZ={name} is no time zone this machine knows, so it keeps UTC: AniList's start and "
        "finish dates (and a generic webhook's watched_at sent as a day alone) are UTC days, "
        "and a generic webhook's watched_at sent as a time without its zone is read as UTC "
        "(or refused); set an IANA name such as Europe/Berlin or America/New_York"
    )


def zone_in_use(environ: Mapping[str, str] = os.environ, at: float | None = None) -> str:
    """The zone whose days AniList's dates are, as `check-config` and the start's log show it:
    its name and offset (at `at`, default now), or UTC with what that means. UTC is also what
    a `TZ` left unset (or the image's default) gives, and nothing else would tell the user.
    With `TZ` unset the machine's own zone (/etc/localtime) is in use: UTC only when its
    offset is 0 the whole year, not a zone at UTC+0 in winter only (Europe/London)."""
    now = time.time() if at is None else at
    minutes = _offset_minutes(now)
    shift = _shift(minutes)
    name = environ.get("TZ", "").strip()
    if (unknown := unknown_zone(environ)) is not None:
        return f"UTC (TZ={unknown} is no zone this machine knows)"
    if zone_named(environ):
        return f"{name.lstrip(':')} ({shift} now)"
    others = sorted(_offsets_in_the_year(now) - {minutes})
    if minutes or others:  # TZ unset: the machine's own zone (/etc/localtime)
        rest = "".join(f", {_shift(other)} part of the year" for other in others)
        return f"this machine's, {shift} now{rest} (TZ not set)"
    return (
        f"UTC ({f'TZ={name}' if name else 'TZ not set'}): AniList's start and finish dates and "
        "a generic webhook's watched_at sent as a day are UTC days, and one sent as a time "
        "without its zone is read as UTC (or refused); if you live elsewhere, set TZ to your "
        "time zone (e.g. Europe/Berlin, Pacific/Honolulu)"
    )


def _offset_minutes(at: float) -> int:
    """The offset from UTC of the zone this process runs in, at `at`, in minutes."""
    offset = datetime.fromtimestamp(at).astimezone().utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _offsets_in_the_year(at: float) -> set[int]:
    """The zone's offsets over the year from `at`, looked at every 30 days: summer time lasts
    months, so none is missed."""
    return {_offset_minutes(at + day * 86400) for day in range(0, 366, 30)}


def _shift(minutes: int) -> str:
    return f"UTC{iso_offset(minutes)}"


def iso_offset(minutes: int) -> str:
    """An offset from UTC in minutes as ISO-8601 writes it: +01:00, -04:00, +05:30."""
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def local(timestamp: float, environ: Mapping[str, str] = os.environ) -> datetime:
    """`timestamp` on the clock of the zone watchbridge runs in. Where `TZ` names a zone this
    machine does not know, glibc keeps UTC under that name's first part ("Europe"): UTC,
    named so."""
    if unknown_zone(environ) is not None:
        return datetime.fromtimestamp(timestamp, UTC)
    return datetime.fromtimestamp(timestamp).astimezone()


def local_time(
    timestamp: float, environ: Mapping[str, str] = os.environ, seconds: bool = False
) -> str:
    """`timestamp` as the user's clock shows it, with the zone's short name (`2026-05-01
    22:14 CEST`; `UTC` where that is the zone): a time alone in a message or a line."""
    return local(timestamp, environ).strftime(f"%Y-%m-%d %H:%M{':%S' if seconds else ''} %Z")


def clock_time(
    timestamp: float, now: float, environ: Mapping[str, str] = os.environ, zone: bool = False
) -> str:
    """When, on the user's clock, as short as `now` lets it be told: `14:02` the same day,
    `yesterday 14:02`, `Mon 14:02` within the week, `12 Aug 14:02` within about a year,
    `12 Aug 2025` before or after. `zone`: with the zone's short name after a time (`14:02
    CEST`), for a text that stands alone (an alert), not one that names the zone once."""
    at, today = local(timestamp, environ), local(now, environ)
    days = (today.date() - at.date()).days
    minute = f"{at:%H:%M}" + (f" {at:%Z}" if zone else "")
    if days == 0:
        return minute
    if days in (1, -1):
        return f"{'yesterday' if days == 1 else 'tomorrow'} {minute}"
    if abs(days) < 7:
        return f"{at:%a} {minute}"
    if abs(days) < 300:
        return f"{at.day} {at:%b} {minute}"
    return f"{at.day} {at:%b %Y}"


def zone_shown(environ: Mapping[str, str] = os.environ, at: float | None = None) -> str:
    """The zone the times shown to the user are in, as the status page names it once:
    `Europe/Berlin`, `this machine's time zone (UTC+01:00 now)`, or UTC with how to have
    the user's own (also for a `TZ` of UTC: the packagings' default, left as it came)."""
    name = tz_name(environ)
    if (unknown := unknown_zone(environ)) is not None:
        return f"UTC (TZ={unknown} is no time zone this machine knows)"
    if zone_named(environ):
        return name
    now = time.time() if at is None else at
    minutes = _offset_minutes(now)
    if minutes or _offsets_in_the_year(now) != {minutes}:  # TZ unset: /etc/localtime's
        return f"this machine's time zone ({_shift(minutes)} now)"
    if name:  # TZ=Etc/UTC: chosen, or left at the compose file's default
        return f"UTC (TZ={name}; if you live elsewhere, {_SET_YOURS})"
    return f"UTC ({_SET_YOURS})"


_SET_YOURS = "set TZ to your time zone, e.g. Europe/Berlin, to see your own"
