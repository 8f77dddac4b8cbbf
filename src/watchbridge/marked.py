"""Items marked played at once ("mark played" of a season, or of items picked together): the
one rule that tells such marks from viewings, by the dates a server gives them. Jellyfin's
catch-up reads it (`catchup.marked_together`), and so does a Plex ⇄ Serializd link
(`sync.ticked_marks`). Pure."""

from __future__ import annotations

from collections.abc import Iterable

# A server's "mark played" of a season (or of items picked together) dates each item alike, or
# within this many seconds of the next: no two viewings on one account begin that close.
MARKED_TOGETHER = 2.0


def at_once(dated: Iterable[tuple[float, str, str]]) -> set[str]:
    """The ids of the (time, item, id) `dated` whose times run within MARKED_TOGETHER of each
    other, naming two items or more (not one item under two ids): marked played at once."""
    found: set[str] = set()
    run: list[tuple[float, str, str]] = []
    for entry in [*sorted(dated), None]:
        if entry is not None and run and entry[0] - run[-1][0] <= MARKED_TOGETHER:
            run.append(entry)
            continue
        if len({key for _, key, _ in run}) > 1:
            found.update(item_id for _, _, item_id in run)
        run = [] if entry is None else [entry]
    return found
