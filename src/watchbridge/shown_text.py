"""Text others wrote (titles, server and account names, services' words) shown to a user,
without letting it rearrange what stands around it. Pure."""

from __future__ import annotations

import re

# Unicode's bidirectional embeddings, overrides and isolates. One in a name (U+202E,
# RIGHT-TO-LEFT OVERRIDE) turns the rest of the line holding it around, the command to run
# included. Right-to-left letters themselves (Arabic, Hebrew names) need none of them.
_BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_TURNING = re.compile(f"[{_BIDI_CONTROLS}]")
# What would also break a row of a terminal's list or drive the terminal: controls (newline,
# ESC) and the line and paragraph separators.
_NOT_ON_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI_CONTROLS}]")


def _as_code(found: re.Match[str]) -> str:
    """A character as Python writes it in a string (`\\n`, `\\x1b`, `\\u202e`)."""
    return repr(found[0])[1:-1]


def on_one_line(text: str) -> str:
    """`text` as (part of) one row of a terminal's list: what would break the line, drive the
    terminal or turn the row around shown as its code."""
    return _NOT_ON_ONE_LINE.sub(_as_code, text)


def unturned(text: str) -> str:
    """`text` with no bidirectional control left to turn what follows it around (a page, where
    line breaks are only spaces): each shown as its code."""
    return _TURNING.sub(_as_code, text)
