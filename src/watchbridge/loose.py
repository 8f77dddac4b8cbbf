"""Lenient reading of values in other services' answers and datasets, where the same field
arrives as a number, a numeric string or something else (pure)."""

from __future__ import annotations

import re
from typing import Any

_WHOLE = re.compile(r"\s*[+-]?\d+\s*")


def whole(value: Any) -> int | None:
    """A whole number from an int, an integral float or a numeric string; None otherwise
    (booleans included: JSON's true is not 1 here)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        return int(value)
    return None


def obj(value: Any) -> dict[str, Any]:
    """An answer's object (a `movie`, `show`, `ids`...) as a dict; empty when it is missing
    or not an object, so a changed answer names nothing there instead of failing the read."""
    return value if isinstance(value, dict) else {}
