"""What Trakt shows as one profile's "watching", as far as the starts we sent tell, and when a
start must go again.

Trakt shows one item as watching per user, and a pause or stop of any item ends it. Auto-play
posts the next episode's start and this episode's stop from separate handlers, in either order;
one turn puts the start last (`trakt.starts_last`), but a stop that comes a moment after the
start was delivered goes in a later turn and ends the next episode's watching for its whole
runtime (a progress report sends no start). So the start we sent last is kept, and sent again
after such a stop. Pure: the target keeps the state and sends.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchbridge.model import MediaRef, item_aliases
from watchbridge.playback import LATE_REPORT

# Jellyfin's handlers post one moment's events at most this far apart (playback.LATE_REPORT):
# a stop of another item later than that is no part of an auto-play, and the start it ends
# may well be over (its own stop lost, or the user moved on).
RESTART_WITHIN = LATE_REPORT


@dataclass(frozen=True)
class SentStart:
    """A start Trakt took: the item as sent, its progress as sent, and when (our clock)."""

    item: MediaRef
    progress: float
    sent_at: float


def same_item(one: MediaRef, other: MediaRef) -> bool:
    """Whether two refs name one item by any key (a webhook's row and a link's row name it by
    different ids)."""
    return not set(item_aliases(one)).isdisjoint(item_aliases(other))


def to_send_again(last: SentStart | None, ended: MediaRef, now: float) -> SentStart | None:
    """The start to send again after a pause or stop of `ended` that Trakt took: the last
    start sent (`last`), when it is of another item and was sent less than RESTART_WITHIN
    before `now` (not after: the clock was set back since, its age unknown). None: nothing
    shows as watching now (that stop ended it, or it was the start's own item)."""
    if last is None or same_item(last.item, ended):
        return None
    return last if 0.0 <= now - last.sent_at < RESTART_WITHIN else None
