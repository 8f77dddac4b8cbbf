"""Plex webhooks that stopped coming, told when it is true: the `webhooks_stopped` alert.

No webhook for days is no fault (a household may not watch for two weeks). But where a Plex
link reads a profile's Plex history, a view Plex shows after the last Plex webhook from that
server (plus MARGIN) means the server watched without telling us: Plex Pass lapsed, the
webhook URL removed or changed, PMS not restarted after adding it. Only for a server that has
sent webhooks before: a setup relying on the link alone is never told. One alert per server
(its key), resolved when a webhook from that server comes again. A Tautulli webhook naming the
server counts as its webhook (`SENDERS`); one naming none cannot say which server it watches.

A view synced late is no evidence: a play of an offline download reaches Plex's history when
the device is online again, dated when it was watched, days after the last webhook perhaps.
So a view a read lists for the first time though it is dated before the previous read (it was
not there then) is left out (`synced_late`), at that read and after.

The reader finds it (`stopped`, pure) and keeps it as a cursor of the profile; the link run
sends it (`report_stopped`), as the other alerts a read finds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Protocol

from watchbridge.store import Store

ALERT_KIND = "webhooks_stopped"
CURSOR = "webhooks_stopped"  # ("plex", profile): the finding of the profile's last read
READ = "webhooks_read"  # ("plex", profile): its last read's `PreviousRead`
SERVICE = "plex"
# The webhooks that tell of a Plex server's plays: its own, and Tautulli's naming it (a
# household that moved to Tautulli's has its plays at once still).
SENDERS = ("plex", "tautulli")
# The servers whose plays the catch-up reads (catchup.py), raising this alert too.
CAUGHT_UP_SOURCES = ("jellyfin", "emby")
# A view this long after the last webhook is no scrobble delivered late or a clock apart:
# Plex's webhook for it never came.
MARGIN = 2 * 3600.0


@dataclass(frozen=True, slots=True)
class Stopped:
    """Plex shows `title` viewed at `viewed_at`, after the last webhook from `server` (its
    machine id), received at `last_webhook_at`; `url`: where the link reads the server."""

    server: str
    url: str
    last_webhook_at: float
    viewed_at: float
    title: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, value: str) -> Stopped | None:
        try:
            found = json.loads(value)
            return cls(
                str(found["server"]),
                str(found["url"]),
                float(found["last_webhook_at"]),
                float(found["viewed_at"]),
                str(found["title"]),
            )
        except (ValueError, TypeError, KeyError):  # not one this release wrote
            return None

    @property
    def title_line(self) -> str:
        return f"watchbridge: webhooks from Plex server {self.url} stopped"

    @property
    def body(self) -> str:
        return (
            f"Plex server {self.url} sent its last webhook on "
            f"{utc_date(self.last_webhook_at)}, but Plex shows views since, such as "
            f"{self.title} at {utc_date(self.viewed_at)}. Check that the server owner's Plex "
            "Pass is active, that Plex's Settings > Webhooks lists the URL "
            "`watchbridge webhook-urls` prints (with its secret), and restart Plex Media "
            "Server after adding it. Nothing is lost meanwhile: the Plex link copies those "
            "plays at its runs, only later than a webhook would."
        )


@dataclass(frozen=True, slots=True)
class PreviousRead:
    """When a read of the profile's history began (our clock), and the history ids of the
    views found synced late so far."""

    at: float
    late: frozenset[str] = frozenset()

    def to_json(self) -> str:
        return json.dumps({"at": self.at, "late": sorted(self.late)})

    @classmethod
    def from_json(cls, value: str | None) -> PreviousRead | None:
        if value is None:
            return None
        try:
            found = json.loads(value)
            return cls(float(found["at"]), frozenset(str(one) for one in found["late"]))
        except (ValueError, TypeError, KeyError):  # not one this release wrote
            return None


def synced_late(previous: PreviousRead | None, new: Mapping[str, float] | None) -> frozenset[str]:
    """The ids of the views synced late: those found so before, and those of `new` (the views
    this read lists for the first time, id -> viewed_at on our clock; None: not known) dated
    before the previous read. Nothing is new to a first read. Pure."""
    if previous is None:
        return frozenset()
    late = {number for number, at in (new or {}).items() if at < previous.at}
    return previous.late | late


def stopped(
    server: str,
    url: str,
    last_webhook_at: float | None,
    views: Iterable[tuple[float, str]],
    margin: float = MARGIN,
) -> Stopped | None:
    """The newest of `views` ((viewed_at, title), our own writes left out) after the last
    webhook from `server` plus `margin`; None when there is none, or the server never sent a
    webhook (`last_webhook_at` None). Pure."""
    if last_webhook_at is None:
        return None
    newest = max(views, default=None)
    if newest is None or newest[0] <= last_webhook_at + margin:
        return None
    return Stopped(server, url, last_webhook_at, newest[0], newest[1])


class Alerts(Protocol):
    async def notify(self, kind: str, title: str, body: str, key: str = "") -> str: ...


async def report_stopped(store: Store, alerts: Alerts, profiles: Iterable[str]) -> None:
    """Alert (one per server: its key) for each of `profiles` whose last Plex read found its
    server's webhooks stopped; the throttle keeps a second profile's finding to one alert."""
    wanted = set(profiles)
    found = await asyncio.to_thread(store.cursors_named, SERVICE, CURSOR)
    for profile, name, value in sorted(found):
        if name != CURSOR or profile not in wanted:
            continue
        one = Stopped.from_json(value)
        if one is not None:
            await alerts.notify(ALERT_KIND, one.title_line, one.body, key=one.server)


# The "Resolved" notice's title names the server as its alert did; its machine id, all a
# webhook gives, means nothing to the person reading it.
RESOLVED = "A webhook came from this Plex server again: its plays reach watchbridge at once."


def alert_key(source: str, server: str) -> str:
    """The alert's key for `server`, whose webhooks are of `source`: a Plex server's machine
    id (its webhooks and Tautulli's); "jellyfin:ID" or "emby:ID" for the catch-up's
    (catchup.py), which says which part of the config finds it."""
    return f"{source}:{server}" if source in CAUGHT_UP_SOURCES else server


def caught_up_source(key: str) -> str | None:
    """The source ("jellyfin", "emby") of an alert key the catch-up raised; None: Plex's."""
    source, colon, _ = key.partition(":")
    return source if colon and source in CAUGHT_UP_SOURCES else None


def resolved(source: str) -> str:
    """The "Resolved" notice of a server whose webhook of `source` came again."""
    if source in CAUGHT_UP_SOURCES:
        name = "Jellyfin" if source == "jellyfin" else "Emby"
        return f"A webhook came from this {name} server again: its plays reach watchbridge at once."
    return RESOLVED


def utc_date(at: float) -> str:
    """A time as the alerts write it (`2026-05-28 20:26 UTC`)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
