"""The one place ratings change scale. Internally a rating is an integer 0-100.

0-100 loses nothing from any service: Trakt 1-10 (x10), Plex 0-10 in halves (x10),
Jellyfin/Emby 0-10 (x10), Serializd half stars stored as 1-10 (x10), AniList POINT_100 (as is).
"""

from __future__ import annotations

import math


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def from_ten(value: float | None) -> int | None:
    """Any 0-10 scale (Trakt, Plex userRating, Jellyfin/Emby, Serializd) to 0-100; 0 = none."""
    if value is None or value <= 0:
        return None
    return _clamp(_round_half_up(value * 10), 1, 100)


def to_trakt(internal: int) -> int:
    """0-100 to Trakt's whole 1-10 (halves round up: 75 -> 8)."""
    return _clamp(_round_half_up(internal / 10), 1, 10)


def to_ten_halves(internal: int) -> float:
    """0-100 to a 0.5-10 scale in half steps (Plex)."""
    return _clamp(_round_half_up(internal / 5), 1, 20) / 2


def to_serializd(internal: int) -> int:
    """0-100 to Serializd's 1-10 (each step half a star)."""
    return _clamp(_round_half_up(internal / 10), 1, 10)


def from_point_100(value: int) -> int | None:
    """AniList POINT_100 to internal; 0 means unrated."""
    return None if value <= 0 else _clamp(value, 1, 100)


def to_point_100(internal: int) -> int:
    return _clamp(internal, 1, 100)
