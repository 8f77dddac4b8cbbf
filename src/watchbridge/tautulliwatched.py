"""A Tautulli whose webhook never sends *Watched*: told, as its finished viewings can be lost.

Tautulli sends *Watched* when a viewing passes its watched percent (85 % by default), only
where that trigger is ticked. Without it, a finished viewing is a play by its *Stop* alone, at
or past the profile's completion_threshold (playback.decide, forplex.completes): one stopped in
between (the credits skipped at 88 %) is no play. And with "Allow Consecutive Notifications"
turned off (Tautulli's Settings → Notifications) Tautulli sends no *Stop* at or past its
watched percent at all: without *Watched*, no finished viewing sends anything, and every play
is lost without a word.

So the webhook route counts, per Tautulli server (its Plex server's machine id, "" where the
template names none), the stops of viewings whose plays Tautulli's reports carry, how many of
them reached Tautulli's default watched percent, and the last *Watched* of anyone (which starts
the count again): one upsert in the webhook's own write. The hourly housekeeping decides
(`maintenance.check_tautulli_watched`): STOPS stops over SPAN and no *Watched* since the first
is a status line naming the trigger to tick; if no stop reached WATCHED_PERCENT either, one
`webhooks_stopped` alert per server says to tick *Watched* and to check "Allow Consecutive
Notifications". Resolved with the next *Watched*; forgotten after KEEP without a report.
Pure here: the caller passes what the store holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchbridge.model import MediaEvent
from watchbridge.unlisted import plex_server_shown
from watchbridge.zone import local_time

ALERT_KIND = "webhooks_stopped"
KEY_PREFIX = "tautulli_watched:"  # of the alert's condition keys: KEY_PREFIX + SERVER
DAY = 86400.0
STOPS = 3  # stops without a Watched, over
SPAN = 3 * DAY  # at least this long from the first to the last: no one evening's viewings
# Tautulli's default watched percent (MOVIE_/TV_WATCHED_PERCENT): with consecutive
# notifications off it sends no stop at or past it.
WATCHED_PERCENT = 85.0
KEEP = 42 * DAY  # a server is forgotten after this long without a stop or a Watched
TRIGGER = "Tautulli → Settings → Notification Agents → Webhook → Triggers → Watched"
CONSECUTIVE = "Tautulli → Settings → Notifications → Allow Consecutive Notifications"


@dataclass(frozen=True, slots=True)
class Reports:
    """What one Tautulli webhook adds to its server's count: its stops (of viewings whose
    plays Tautulli's reports carry), those at or past WATCHED_PERCENT, and whether it is a
    Watched (anyone's: the trigger is ticked)."""

    server: str
    name: str  # the server's name as Tautulli gives it ("" where the template names none)
    stops: int = 0
    reached: int = 0
    watched: bool = False


def counted(event: MediaEvent, carried: bool) -> Reports | None:
    """`event`'s count for its server: a Watched always, a stop where `carried` (its plays go
    by Tautulli's reports: a profile takes them, or Plex's own webhook does not send them);
    None for anything else. Pure."""
    if event.source != "tautulli" or event.action != "stop":
        return None
    if event.played:
        return Reports(event.server, "", watched=True)
    if not carried:
        return None
    progress = event.progress
    reached = int(progress is not None and progress >= WATCHED_PERCENT)
    return Reports(event.server, "", stops=1, reached=reached)


def merged(reports: list[Reports], name: str) -> Reports | None:
    """One webhook's reports (a file's several episodes) as one, named `name`. Pure."""
    if not reports:
        return None
    return Reports(
        reports[0].server,
        name,
        sum(one.stops for one in reports),
        sum(one.reached for one in reports),
        any(one.watched for one in reports),
    )


@dataclass(frozen=True, slots=True)
class Seen:
    """A Tautulli server's count, as the store keeps it: the stops since its last Watched
    (`first_stop_at` the first of them, None: none), those at or past WATCHED_PERCENT, and
    when its last Watched came (None: none seen)."""

    server: str
    name: str
    stops: int
    reached: int
    first_stop_at: float | None
    last_stop_at: float | None
    watched_at: float | None

    @property
    def key(self) -> str:
        """The alert's condition key: one per server."""
        return f"{KEY_PREFIX}{self.server}"

    @property
    def server_shown(self) -> str:
        """The server as the user knows it: by its name, else its machine id."""
        return plex_server_shown(self.name or self.server)

    @property
    def seen_at(self) -> float:
        """When its last stop or Watched came."""
        return max(self.last_stop_at or 0.0, self.watched_at or 0.0)

    @property
    def no_watched(self) -> bool:
        """STOPS stops over SPAN at least, and no Watched since the first."""
        first, last = self.first_stop_at, self.last_stop_at
        return (
            self.stops >= STOPS and first is not None and last is not None and last - first >= SPAN
        )

    @property
    def nothing_sent(self) -> bool:
        """No Watched, and no stop reached Tautulli's watched percent either: Tautulli sends
        nothing of a finished viewing ("Allow Consecutive Notifications" off)."""
        return self.no_watched and self.reached == 0


def status_line(seen: Seen) -> str:
    """The status's words for a Tautulli that sent no Watched (`Seen.no_watched`)."""
    line = (
        f"Tautulli sent no Watched for {seen.server_shown}: {seen.stops} stop(s) since"
        f" {local_time(seen.first_stop_at or 0.0)}, no Watched; without it a viewing stopped"
        f" before the profile's completion_threshold (the credits skipped) is no play: tick"
        f" {TRIGGER}"
    )
    if seen.nothing_sent:
        line += (
            f"; and check {CONSECUTIVE}: no stop reached Tautulli's watched percent (85 % by"
            " default), and with it off Tautulli sends no stop of a finished viewing at all"
        )
    return line


def title(seen: Seen) -> str:
    return f"watchbridge: Tautulli sends no finished viewing of {seen.server_shown}"


def alert_body(seen: Seen) -> str:
    """What it means and what to do, as a phone shows the first lines; then what was seen."""
    return (
        f"Tick {TRIGGER}, and check {CONSECUTIVE}. Tautulli's webhook sent no Watched for"
        f" {seen.server_shown}, and none of its stops reached Tautulli's watched percent (85 %"
        " by default): with consecutive notifications off, Tautulli sends no stop of a"
        " finished viewing either, so those plays never reach watchbridge.\n\n"
        f"Seen: {seen.stops} stop(s) since {local_time(seen.first_stop_at or 0.0)}, the last on"
        f" {local_time(seen.last_stop_at or 0.0)}, and no Watched. Plays lost meanwhile are not"
        " sent later (a Plex link, where one runs, copies those Plex marked watched): mark the"
        " others watched by hand."
    )


def watched_now(server: str, name: str) -> str:
    """The "Resolved" notice once a Watched came from `server` (named `name`)."""
    shown = plex_server_shown(name or server)
    return f"Tautulli sent a Watched for {shown}: its finished viewings reach watchbridge."


def over_now(seen: Seen) -> str:
    """The "Resolved" notice of a server whose count no longer says it sends nothing of a
    finished viewing: a Watched came, or a stop past Tautulli's watched percent."""
    if seen.stops == 0 or not seen.reached:
        return watched_now(seen.server, seen.name)
    return (
        f"Tautulli sent a stop past its watched percent for {seen.server_shown}: finished"
        " viewings reach watchbridge by their stop. Without Watched, one stopped before the"
        f" profile's completion_threshold is still no play: tick {TRIGGER}."
    )


def quiet_now(key: str) -> str:
    """The "Resolved" notice of a server forgotten after KEEP without a report."""
    shown = plex_server_shown(key.removeprefix(KEY_PREFIX))
    return (
        f"Tautulli sent nothing for {shown} for {KEEP / DAY:.0f} days; should it send stops"
        " without a Watched again, this is told again."
    )
