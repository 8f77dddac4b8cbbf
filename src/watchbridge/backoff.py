"""Waits that double with every failure in a row."""

from __future__ import annotations

import math

# Every caller caps its wait far below this; an exponent past 1023 would not fit a float.
MAX_DOUBLINGS = 64


def doubled(base: float, times: int) -> float:
    """`base` doubled `times` times (none for 0 or less, at most MAX_DOUBLINGS)."""
    return math.ldexp(base, min(max(0, times), MAX_DOUBLINGS))
