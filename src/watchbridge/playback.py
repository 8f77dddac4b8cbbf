"""Playback sessions: the pure state machine that turns webhook noise into one play per viewing.

One session per (source, server, account, player, item). Repeated stops, scrobble + stop pairs,
progress storms and auto-play-next never make a second play: only the first move into
`completed` does. A completed session followed by a start at <= 5 % is a rewatch; so is a start
with no position (Plex leaves it out when playback begins at the start) that hours pass before,
or that the next position or a second Plex scrobble a viewing later confirms, and a `played`
mark hours after the last one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Literal

from watchbridge.model import MediaEvent

# `restarting`: completed, then a start without a position; the next position decides.
State = Literal["playing", "paused", "stopped", "completed", "restarting"]
REWATCH_MAX_PROGRESS = 5.0
REWATCH_AFTER_IDLE = 3 * 3600.0  # a position-less start this long after a viewing starts anew
RESTART_MAX_PROGRESS = 50.0  # after a position-less start: below this, a new viewing
SHORTEST_VIEWING = 10 * 60.0  # no two viewings of one item are closer (shorter items: 80 %)
PAUSE_CAP = 79.9  # Trakt turns a stop at >= 80 % into a play; pauses must stay below it


@dataclass(frozen=True)
class Session:
    key: str
    state: State
    progress: float | None
    # Counts viewings in this session; part of every idempotency key. A new session starts at
    # the current second, not 0: sessions idle for a day are forgotten while delivered rows
    # (and their keys) are kept a week, and a rewatch must not reuse a finished play's key.
    generation: int
    updated_at: float


@dataclass(frozen=True)
class Intent:
    """Something a target should hear about, before target-specific shaping.

    kind `watching`: live state for scrobblers (action start or pause, with progress).
    kind `play`: a completed viewing at `at`. kind `rating`: `rating` on the 0-100 scale.
    kind `remove_rating`: the user cleared the item's rating.
    """

    kind: Literal["watching", "play", "rating", "remove_rating"]
    key: str  # idempotency key, unique per logical action
    at: float
    action: Literal["start", "pause", ""] = ""
    progress: float | None = None
    rating: int | None = None
    live: bool = False  # a play that ended a playback we followed (vs. a manual mark)


def session_key(event: MediaEvent) -> str:
    raw = "|".join(
        [
            event.source,
            event.server,
            event.account.id or event.account.name or "",
            event.player,
            event.item.key(),
        ]
    )
    # surrogatepass: a device name cut mid-emoji arrives as a lone surrogate from JSON.
    return hashlib.sha256(raw.encode(errors="surrogatepass")).hexdigest()[:24]


def decide(
    session: Session | None, event: MediaEvent, threshold: float, now: float
) -> tuple[Session | None, list[Intent]]:
    """The next session state and the intents this event produces. Pure."""
    new_session, intents = _decide(session, event, threshold, now)
    if event.companion:  # what is playing now is the file's first episode
        intents = [i for i in intents if i.kind != "watching"]
    return new_session, intents


def _decide(
    session: Session | None, event: MediaEvent, threshold: float, now: float
) -> tuple[Session | None, list[Intent]]:
    at = event.occurred_at or now
    if event.action == "rate":
        # To the second: rate 8, clear, rate 8 within a minute are three changes, not two.
        second = int(at)
        if event.rating is None:  # Plex's media.rate without stars, our generic rating 0
            return session, [Intent("remove_rating", f"unrate:{event.item.key()}:{second}", at)]
        key = f"rate:{event.item.key()}:{event.rating}:{second}"
        return session, [Intent("rating", key, at, rating=event.rating)]
    if event.action == "unplayed":
        return session, []

    key = session_key(event)
    if session is None:
        session = Session(key, "stopped", None, int(at), at)
    if session.state in ("completed", "restarting"):
        settled = _after_completion(session, event, at)
        if settled is not None:
            return settled, []
        session = replace(
            session, state="stopped", progress=None, generation=session.generation + 1
        )
    progress = event.progress if event.progress is not None else session.progress

    gen = f"{key}:{session.generation}"
    reached = progress is not None and progress >= threshold
    # Only a stop (or the server's own completion signal) ends a viewing: someone paused at
    # 95 % may still be watching the credits.
    completes = event.played or (event.action == "stop" and reached)
    if completes:
        done = replace(session, state="completed", progress=progress, updated_at=at)
        live = event.action != "played"  # a manual mark is history, not a scrobble
        return done, [Intent("play", f"play:{gen}", at, progress=progress, live=live)]

    if event.action in ("start", "resume") or (
        event.action == "progress" and session.state != "playing"
    ):
        if session.state == "playing":
            return replace(session, progress=progress, updated_at=at), []
        playing = replace(session, state="playing", progress=progress, updated_at=at)
        return playing, [
            Intent("watching", f"start:{gen}:{int(at)}", at, action="start", progress=progress)
        ]
    if event.action in ("pause", "stop"):
        state: State = "paused" if event.action == "pause" else "stopped"
        if session.state == state:
            return replace(session, progress=progress, updated_at=at), []
        capped = min(progress, PAUSE_CAP) if progress is not None else None
        return replace(session, state=state, progress=progress, updated_at=at), [
            Intent("watching", f"pause:{gen}:{int(at)}", at, action="pause", progress=capped)
        ]
    return replace(session, progress=progress, updated_at=at), []


def shortest_viewing(duration: float | None) -> float:
    """How long a viewing of an item of `duration` seconds (None: unknown) takes at least."""
    return SHORTEST_VIEWING if not duration else min(SHORTEST_VIEWING, 0.8 * duration)


def _after_completion(session: Session, event: MediaEvent, at: float) -> Session | None:
    """An event after a completed viewing: the session it leaves when it still belongs to that
    viewing, or None when it begins a new one (a rewatch)."""
    idle = abs(at - session.updated_at) >= REWATCH_AFTER_IDLE
    if session.state == "restarting":
        # A position-less start came after the viewing (`updated_at` stays its time): the next
        # position tells a restart from the start (a rewatch) from a return to the credits.
        since = at - session.updated_at
        if event.progress is not None:
            played_to_it = event.position_ms is not None and since >= 0.8 * event.position_ms / 1000
            if event.progress <= RESTART_MAX_PROGRESS or played_to_it:
                return None
            return replace(session, state="completed", progress=event.progress, updated_at=at)
        # Plex scrobbles once a viewing: a second scrobble a viewing's length after the
        # restart is a new one.
        duration = event.duration_ms / 1000 if event.duration_ms else None
        if (event.played and since >= shortest_viewing(duration)) or (
            event.action == "start" and idle
        ):
            return None
        return session
    if event.action == "start" and event.progress is None:
        # Plex leaves viewOffset out of a media.play from the beginning, but also sends one
        # minutes after its scrobble (skipped credits, pitfalls/webhooks #1).
        return None if idle else replace(session, state="restarting", updated_at=at)
    if event.action in ("start", "resume"):
        # The event's own position: the session's may be a stale early one.
        if event.progress is not None and event.progress <= REWATCH_MAX_PROGRESS:
            return None
        return replace(session, updated_at=at)
    if event.action == "played" and idle:
        return None  # marked watched again hours later (dated ones: hours apart)
    progress = event.progress if event.progress is not None else session.progress
    return replace(session, updated_at=at, progress=progress)
