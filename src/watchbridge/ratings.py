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


# AniList: every score format, as the user sees it (reference anilist.md §8). Reading should
# ask for `score(format: POINT_100)` (the raw value, lossless) and writing should use
# `scoreRaw`; these conversions exist to compare in the user's visible format (no flapping:
# raw 70 and 80 are both 4 stars) and for the rare answer given in the user's format.
# A rating given less than this after another is not taken for the newer: two clocks.
RATED_SLACK = 60.0


def overtaken_after(given_at: float, planned_from: float) -> float:
    """When a rating change is overtaken by a rating the target holds: one given after this
    time (and RATED_SLACK) is the user's newer one. `planned_from`: when what planned the
    change last saw the target (`OutboxItem.planned_from`: a link's read of it, else the
    row's queuing).

    A link's row rates over the target's rating its plan read (`prefer`, one-way), which is
    older than that read even where it is newer than the source's rating: only a rating given
    after the read overtakes it. (A removal has no time of its own.)
    """
    return max(given_at, planned_from)


ANILIST_SCORE_FORMATS = ("POINT_100", "POINT_10_DECIMAL", "POINT_10", "POINT_5", "POINT_3")
# POINT_3 smileys (1 = sad, 2 = neutral, 3 = happy) as the 1-10 values 3, 6, 9 (§8 table);
# the cut-offs on raw are Mihon's (<= 35 sad, <= 60 neutral).
_SMILEY_RAW = {1: 30, 2: 60, 3: 90}


def to_anilist(internal: int, score_format: str) -> float:
    """0-100 (1..100) to a score in an AniList format: what a user of that format sees."""
    value = _clamp(internal, 1, 100)
    if score_format == "POINT_100":
        return value
    if score_format == "POINT_10_DECIMAL":
        return value / 10
    if score_format == "POINT_10":
        # What AniList shows a POINT_10 user of a raw score: tenths dropped (raw 75 is a 7).
        return _clamp(value // 10, 1, 10)
    if score_format == "POINT_5":
        return _clamp(_round_half_up(value / 20), 1, 5)
    if score_format == "POINT_3":
        return 1 if value <= 35 else 2 if value <= 60 else 3
    raise ValueError(f"unknown AniList score format {score_format!r}")


def from_anilist(score: float | None, score_format: str) -> int | None:
    """A score in an AniList format to 0-100; 0 (or none) means unrated in every format."""
    if score is None or score <= 0:
        return None
    if score_format == "POINT_100":
        return _clamp(_round_half_up(score), 1, 100)
    if score_format == "POINT_10_DECIMAL":
        return _clamp(_round_half_up(score * 10), 1, 100)
    if score_format == "POINT_10":
        return _clamp(_round_half_up(score) * 10, 1, 100)
    if score_format == "POINT_5":
        return _clamp(_round_half_up(score) * 20, 1, 100)
    if score_format == "POINT_3":
        return _SMILEY_RAW[_clamp(_round_half_up(score), 1, 3)]
    raise ValueError(f"unknown AniList score format {score_format!r}")


def anilist_values(score_format: str) -> list[float]:
    """Every non-zero score a user of `score_format` can give (for tests and validation)."""
    if score_format == "POINT_100":
        return list(range(1, 101))
    if score_format == "POINT_10_DECIMAL":
        return [n / 10 for n in range(1, 101)]
    top = {"POINT_10": 10, "POINT_5": 5, "POINT_3": 3}.get(score_format)
    if top is None:
        raise ValueError(f"unknown AniList score format {score_format!r}")
    return list(range(1, top + 1))


def anilist_same(a: int | None, b: int | None, score_format: str) -> bool:
    """Whether two 0-100 ratings look the same to a user of `score_format` (None = unrated)."""
    if a is None or b is None:
        return a is None and b is None
    return to_anilist(a, score_format) == to_anilist(b, score_format)


# What each service keeps of a 0-100 rating, on the 0-100 scale: Trakt whole points, Plex and
# Serializd half stars (AniList sides are compared in the user's score format already).
_KEPT = {
    "trakt": lambda v: to_trakt(v) * 10,
    "serializd": lambda v: to_serializd(v) * 10,
    "plex": lambda v: round(to_ten_halves(v) * 10),
}


def kept_by(service: str, internal: int) -> int:
    """`internal` as `service` would store it: 75 on Trakt is 80."""
    keep = _KEPT.get(service)
    return keep(internal) if keep is not None else internal


def whole_point(internal: int) -> int:
    """`internal` as the whole-point services (Trakt, Serializd) keep it: 75 is 80."""
    return to_trakt(internal) * 10


def rounded_from(coarse: int, fine: int) -> bool:
    """Whether `coarse` is `fine` (another value) as the whole-point services keep it: what a
    finer rating (AniList's 75, Plex's 7.5) becomes on its way round a household through
    Trakt or Serializd (Trakt's 8, then 8.0 on the Plex of a Plex-Trakt link)."""
    return coarse != fine and whole_point(fine) == coarse


def same_on_both(a: str, value_a: int, b: str, value_b: int) -> bool:
    """Whether two sides' ratings are one rating: equal, or one is what the other became on a
    coarser side (Plex's 7.5 is 8 on Trakt; writing 8 back to Plex would change the user's)."""
    return kept_by(b, value_a) == value_b or kept_by(a, value_b) == value_a
