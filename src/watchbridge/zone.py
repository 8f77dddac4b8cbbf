"""The time zone watchbridge runs in (`TZ`): whose days AniList's start and finish dates (and
a generic webhook's `watched_at` sent as a day) are.

glibc takes a `TZ` it has no file for (a misspelt name, an image without tzdata) for UTC and
says nothing; `unknown_zone` tells that apart from a zone it knows. Pure but for the look at
the zone files."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

# Names of UTC itself: set so, TZ may only mean "not set" (London is UTC+0 in winter too).
UTC_NAMES = frozenset({"", "utc", "etc/utc", "gmt", "etc/gmt", "utc0", "gmt0", "z"})
# A POSIX rule (EST5EDT, <+03>-3, CET-1CEST,M3.5.0,M10.5.0/3) needs no zone file.
_POSIX_RULE = re.compile(r"(?:[A-Za-z]{3,}|<[^>]+>)[+-]?\d")
ZONE_FILES = "/usr/share/zoneinfo"


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
    bare = environ.get("TZ", "").strip().lstrip(":")
    return bare.casefold() not in UTC_NAMES and unknown_zone(environ) is None


def zone_warning(environ: Mapping[str, str] = os.environ) -> str | None:
    """What to tell the user of a `TZ` this machine does not know, or None."""
    name = unknown_zone(environ)
    if name is None:
        return None
    return (
        f"TZ={name} is no time zone this machine knows, so it keeps UTC: AniList's start and "
        "finish dates (and a webhook's watched_at sent as a day alone) are UTC days; set an "
        "IANA name such as Europe/Berlin or America/New_York"
    )
