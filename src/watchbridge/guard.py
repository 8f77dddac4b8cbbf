"""The mass-removal guard: one rule for plays, ratings, watchlists and the collection.

A side that reads (nearly) empty for one run (an unmounted NAS share, an expired session, an
endpoint that moved) must not take the other side's entries with it: removing more than a
link's `max_removal_share` of a side waits for `watchbridge sync --confirm-removals`.
"""

from __future__ import annotations

import re

CONFIRM = "confirm with `watchbridge sync --confirm-removals`"
# Said with every held removal: confirming a side that only reads empty wipes the other.
BEFORE_CONFIRMING = (
    "Before confirming, check that the other side really lost them: a new or replaced server, "
    "an unmounted library, another account or a changed anime mapping reads as them gone, "
    "and confirming would remove them for good."
)
# Removing one or two titles from a short watchlist or collection is ordinary; the guard is
# for mass removals.
LIST_MIN_HELD = 3


def removals_held(
    removals: int,
    size: int,
    what: str,
    share: float,
    minimum: int = 1,
    holding: bool = False,
    hold: str = "",
) -> str:
    """Why `removals` of the `size` entries `what` describes (e.g. "plays on trakt") must wait
    for confirmation; empty when they may go. Fewer than `minimum` removals always may; while
    `holding` (an earlier run held removals), or given a reason every removal waits (`hold`),
    any other may not."""
    if removals < max(minimum, 1) or not size:
        return ""
    if hold or holding:
        why = hold or "held since an earlier run found too many removed, until confirmed or undone"
        return f"{removals} of {size} {what} would be removed ({why}); {CONFIRM}"
    if removals / size <= share:
        return ""
    return f"{removals} of {size} {what} would be removed (more than {share:.0%}); {CONFIRM}"


_WOULD_BE = re.compile(r"(?P<count>\d+)(?P<what>[^;]*?) would be (?P<verb>removed|set|added)")


def as_confirmed(held: str) -> str:
    """`held`, said of a run that confirmed it: what goes, without the command to confirm
    ("2 ratings ... are set", "1 rating ... is set")."""
    text = held.split("; confirm with ", 1)[0]

    def confirmed(said: re.Match[str]) -> str:
        verb = "is" if said["count"] == "1" else "are"
        return f"{said['count']}{said['what']} {verb} {said['verb']}"

    return _WOULD_BE.sub(confirmed, text)


def for_link(held: str, link: str) -> str:
    """`held` (a reason removals wait) with the command confirming that link's only: without
    `--link`, `watchbridge sync --confirm-removals` confirms every link's held removals."""
    return held.replace(
        CONFIRM, f"confirm with `watchbridge sync --link {link} --confirm-removals`"
    )
