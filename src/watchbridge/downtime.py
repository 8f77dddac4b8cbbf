"""Plays finished while watchbridge was not running.

Media servers send each webhook once and never again, and no link reads Jellyfin, Emby, a
generic sender or (without a Plex link) Plex: what they played while watchbridge was down
reached no service. The service notes that it is alive every ALIVE_EVERY (and as it stops);
the next start says how long it was away and what to do, in the log, on the status page and
in a `downtime` alert.
Pure, but for the caller's reading of the note.
"""

from __future__ import annotations

import contextlib
import time

from watchbridge.config import Config

ALIVE_EVERY = 300.0
# A restart for an update takes seconds: shorter absences are not worth a word.
WORTH_TELLING = 120.0
# Sources whose plays a link reads back (a play their webhook missed is found there).
READ_BY_LINKS = {"plex": "plex", "tautulli": "plex"}
DOWNTIME_TITLE = "watchbridge was not running: plays finished meanwhile reached no service"
RESTORED_TITLE = "watchbridge started on a backup copy put back: nothing is sent twice"


def unread_sources(config: Config, seen: set[str]) -> list[str]:
    """The webhook sources that sent something lately (`seen`) whose missed plays no link
    reads back."""
    linked = {service for link in config.links.values() for service in link.services}
    return sorted(s for s in seen if READ_BY_LINKS.get(s) not in linked)


def downtime_notice(alive_at: float | None, now: float, sources: list[str]) -> str | None:
    """What to tell of an absence since `alive_at` (None: a first start), or None."""
    if alive_at is None or not sources or now - alive_at < WORTH_TELLING:
        return None
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(alive_at))
    return (
        f"watchbridge was not running for about {_span(now - alive_at)} (since {since}): media "
        f"servers do not send a webhook again, so what finished meanwhile on "
        f"{', '.join(sources)} reached no service (no link reads it back); mark those items "
        "watched again there to send them (an item the server shows played already: mark it "
        "unplayed, then played)"
    )


def restore_notice(copied: str) -> str:
    """What a start on a backup copy put back tells once (`copied`: when the copy was taken,
    in epoch seconds, "" unknown: an older release's copy)."""
    when = ""
    with contextlib.suppress(ValueError):
        when = time.strftime(" taken %Y-%m-%d %H:%M UTC", time.gmtime(float(copied)))
    return (
        f"the database is a backup copy{when}, put back in its place: what watchbridge did "
        "after it was taken is not in it. Deliveries the copy still had waiting are looked up "
        "on each service before they go (any that went out since are not sent again). A "
        "sign-in refreshed since the copy was taken fails (Trakt takes each refresh token "
        "once): its deliveries wait, and `watchbridge status` says which to do again with "
        "`watchbridge auth`"
    )


def restore_key(copied: str) -> str:
    """The `downtime` alert's key for the restore of the copy taken at `copied`: told once."""
    return f"restored:{copied}"


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"
