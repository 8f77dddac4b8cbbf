"""Plays finished while watchbridge was not running.

Media servers send each webhook once and never again, and no link reads a generic sender or
(without a Plex link) Plex, nor is Jellyfin or Emby caught up without an API key (catchup.py):
what they played while watchbridge was down reached no service. The service notes that it is
alive every ALIVE_EVERY (and as it stops); the next start says how long it was away and what
to do, in the log, on the status page and in a `downtime` alert.
Pure, but for the caller's reading of the note.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from watchbridge.clocksteps import STEP, UNSET_BEFORE, Reading
from watchbridge.config import Config, service_title
from watchbridge.zone import local_time

ALIVE_EVERY = 300.0
# A restart for an update takes seconds: shorter absences are not worth a word.
WORTH_TELLING = 120.0
# Sources whose plays a link reads back (a play their webhook missed is found there).
READ_BY_LINKS = {"plex": "plex", "tautulli": "plex"}
DOWNTIME_TITLE = "watchbridge was not running: plays finished meanwhile reached no service"
RESTORED_TITLE = "watchbridge started on a backup copy put back: nothing is sent twice"


def unread_sources(config: Config, seen: set[str]) -> list[str]:
    """The webhook sources that sent something lately (`seen`) whose missed plays no link
    reads back, nor the catch-up (catchup.py: Jellyfin and Emby with an API key)."""
    linked = {service for link in config.links.values() for service in link.services}
    caught_up = {s for s in ("jellyfin", "emby") if catches_up(config, s)}
    return sorted(s for s in seen if READ_BY_LINKS.get(s) not in linked and s not in caught_up)


def catches_up(config: Config, server: str) -> bool:
    """Whether the catch-up reads `server` ("jellyfin", "emby"): set with an API key, on, and
    a profile lists accounts of it (a profile taking every webhook lists none to read). Never
    Plex, which it does not read."""
    return server in ("jellyfin", "emby") and not_caught_up(config, server) is None


def not_caught_up(config: Config, server: str) -> str | None:
    """Why the catch-up does not read `server`, in words with the config key in brackets;
    None when it does (`catches_up`)."""
    settings = getattr(config.services, server)
    if settings is None:
        return f"{service_title(server)} is not in the config (services.{server})"
    if not settings.catch_up:
        return f"its catch-up is switched off (services.{server}.catch_up)"
    if not settings.url:
        return f"it has no address (services.{server}.url)"
    if settings.api_key is None or not settings.api_key.reveal():
        return f"it has no API key (services.{server}.api_key)"
    if not any(getattr(profile.users, server, ()) for profile in config.profiles.values()):
        return f"no profile lists its accounts (profiles.NAME.users.{server})"
    return None


@dataclass(frozen=True)
class Away:
    """How long the service was away, as far as the clocks tell: `seconds` (None: they cannot
    tell), timed by the uptime when the wall clock `moved` meanwhile."""

    seconds: float | None
    moved: bool = False


def away(last: Reading, now: Reading) -> Away:
    """The absence since the note `last`, read `now`. One boot: by the uptime, which no one
    sets (a clock fixed before this start is no absence of days, nor a clock that ran fast a
    short one). Across a reboot only the wall clocks can tell, unless they say what cannot
    be: a note by a clock never set (before 2020), or one later than this boot began."""
    wall = now.wall - last.wall
    if now.uptime is not None and last.uptime is not None and last.boot and last.boot == now.boot:
        seconds = now.uptime - last.uptime
        return Away(seconds, moved=abs(wall - seconds) > STEP)
    if last.wall < UNSET_BEFORE <= now.wall:
        return Away(None, moved=True)
    rebooted = bool(last.boot and now.boot and last.boot != now.boot)
    if rebooted and now.uptime is not None and wall < now.uptime - STEP:
        return Away(None, moved=True)
    return Away(wall)


def downtime_notice(
    last: Reading | float | None, now: Reading | float, sources: list[str]
) -> str | None:
    """What to tell of an absence since the service's last note that it was alive (`last`;
    None: a first start), read `now` (a float: the wall clock alone), or None."""
    if last is None or not sources:
        return None
    last = last if isinstance(last, Reading) else Reading(last)
    now = now if isinstance(now, Reading) else Reading(now)
    gone = away(last, now)
    if gone.seconds is None:
        noted = local_time(max(last.wall, 0.0))
        length = (
            f"a time the clocks cannot tell (its last note that it ran says {noted}, by a "
            "clock that was not set or ran ahead, and the machine restarted since)"
        )
    elif gone.seconds < WORTH_TELLING:
        return None
    else:
        since = local_time(now.wall - gone.seconds)
        moved = "; timed by the uptime: the clock was set meanwhile" if gone.moved else ""
        length = f"about {_span(gone.seconds)} (since {since}{moved})"
    return (
        f"watchbridge was not running for {length}: media servers do not send a webhook "
        f"again, so what finished meanwhile on {', '.join(sources)} reached no service (no "
        "link reads it back); mark those items watched again there to send them (an item the "
        "server shows played already: mark it unplayed, then played; a rewatch of something "
        "Trakt or Serializd holds from before is taken for that viewing so: add it there)"
    )


def restore_notice(copied: str) -> str:
    """What a start on a backup copy put back tells once (`copied`: when the copy was taken,
    in epoch seconds, "" unknown: an older release's copy)."""
    when = ""
    with contextlib.suppress(ValueError):
        when = f" taken {local_time(float(copied))}"
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
