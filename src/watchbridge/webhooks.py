"""`POST /webhooks/{source}[/{secret}]`: authenticate, read, parse, map, store durably, answer.

Nothing is acknowledged before it is in SQLite: the event, its playback session and one outbox
row per target are written in one transaction, then the delivery worker is woken.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Sequence
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from watchbridge.app import Runtime
from watchbridge.config import Config, Profile
from watchbridge.ingest import parse
from watchbridge.model import Accepted, Ignored, MediaEvent, ref_to_dict
from watchbridge.playback import Intent, Session, decide, session_key
from watchbridge.store import IngestJob, NewOutboxRow

SOURCES = ("plex", "jellyfin", "emby", "tautulli", "generic")
SECRET_HEADER = "x-webhook-secret"


class TooLarge(Exception):
    pass


# --------------------------------------------------------------------------- pure decisions


def profile_for(config: Config, event: MediaEvent) -> str | None:
    """The profile an event belongs to: explicit mapping first, else the default profile."""
    account = event.account
    candidates = {_same(c) for c in (account.id, account.name) if c}
    candidates |= {f"{_same(event.server)}:{c}" for c in list(candidates) if event.server}
    for name, profile in config.profiles.items():
        configured = getattr(profile.users, event.source, [])
        if any(_same(entry) in candidates for entry in configured):
            return name
    return next((name for name, p in config.profiles.items() if p.default), None)


def _same(name: str) -> str:
    """User names match case-insensitively; Jellyfin/Emby ids with or without dashes."""
    return name.lower().replace("-", "")


def targets_for(config: Config, profile: Profile) -> list[str]:
    """Which services this profile's plays go to."""
    targets = []
    if profile.accounts.trakt is not None and config.services.trakt is not None:
        targets.append("trakt")
    # A household without Trakt still gets its plays logged on Serializd (episodes only;
    # the target skips movies).
    if profile.accounts.serializd is not None and config.services.serializd is not None:
        targets.append("serializd")
    return targets


def rows_for(
    profile: str, targets: Sequence[str], event: MediaEvent, intents: Sequence[Intent]
) -> list[NewOutboxRow]:
    """One outbox row per (intent, target); a newer live state supersedes older pending ones."""
    rows = []
    item = ref_to_dict(event.item)
    for intent in intents:
        payload: dict[str, Any] = {"item": item, "at": intent.at}
        if intent.kind == "watching":
            payload |= {"scrobble_action": intent.action, "progress": intent.progress}
        elif intent.kind == "play":
            payload |= {"progress": intent.progress, "live": intent.live}
        else:
            payload |= {"rating": intent.rating}
        for target in targets:
            rows.append(
                NewOutboxRow(
                    target=target,
                    profile=profile,
                    action=intent.kind,
                    payload=payload,
                    ordering_key=f"{profile}:{target}:{event.item.key()}",
                    idempotency_key=f"{profile}:{target}:{intent.key}",
                    supersedes=("watching",) if intent.kind != "rating" else (),
                )
            )
    return rows


def secret_ok(supplied: str | None, expected: str) -> bool:
    if not supplied or not expected:
        return False
    return hmac.compare_digest(supplied.encode(), expected.encode())


# --------------------------------------------------------------------------- route


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(
    runtime: Runtime, source: str, outcome: str, status: int, started: float, **body: Any
) -> Response[dict[str, Any]]:
    runtime.metrics.webhook_events.labels(source, outcome).inc()
    runtime.metrics.webhook_seconds.labels(source).observe(time.monotonic() - started)
    return Response({"status": outcome, **body}, status_code=status)


async def _webhook(
    runtime: Runtime, request: Request[Any, Any, Any], source: str, secret: str | None
) -> Response[dict[str, Any]]:
    started = time.monotonic()
    if source not in SOURCES:
        return _answer(
            runtime,
            "unknown",
            "unknown_source",
            404,
            started,
            error=f"unknown webhook source {source!r}; use one of {', '.join(SOURCES)}",
        )
    supplied = secret or request.headers.get(SECRET_HEADER)
    if not secret_ok(supplied, runtime.webhook_secret):
        return _answer(
            runtime,
            source,
            "unauthorized",
            401,
            started,
            error="missing or wrong webhook secret (see `watchbridge webhook-urls`)",
        )
    limit = runtime.config.server.max_webhook_bytes
    try:
        body = await _read_body(request, limit)
    except TooLarge:
        return _answer(
            runtime,
            source,
            "too_large",
            413,
            started,
            error=f"body larger than server.max_webhook_bytes ({limit} bytes)",
        )
    result = parse(source, body, request.headers.get("content-type", ""))
    if isinstance(result, Ignored):
        return _answer(
            runtime, source, f"ignored_{result.reason}", 200, started, reason=result.reason
        )
    if not isinstance(result, Accepted):
        return _answer(runtime, source, "malformed", 400, started, error=result.reason)
    queued, unmapped = 0, 0
    for event in result.events:
        name = profile_for(runtime.config, event)
        if name is None:
            unmapped += 1
            continue
        queued += await runtime.writer.write(ingest_job(runtime, name, event))
    if unmapped == len(result.events):
        return _answer(
            runtime,
            source,
            "ignored_unmapped_account",
            200,
            started,
            reason="this media-server account is not mapped to any profile",
        )
    if queued:
        for wake in runtime.on_enqueued:
            wake()
    return _answer(runtime, source, "accepted", 202, started, queued=queued)


def ingest_job(runtime: Runtime, profile_name: str, event: MediaEvent) -> IngestJob:
    """What to record for one event: the event, and a pure decision over its session."""
    if event.source != "generic":
        # Media servers post as it happens; their timestamps (Plex lastViewedAt) can describe
        # an earlier viewing. Only our generic schema may carry an explicit time.
        event = dataclasses.replace(event, occurred_at=None)
    profile = runtime.config.profiles[profile_name]
    targets = targets_for(runtime.config, profile)
    now = runtime.clock()
    threshold = float(profile.completion_threshold)

    def plan(session: Session | None) -> tuple[Session | None, list[NewOutboxRow]]:
        new_session, intents = decide(session, event, threshold, now)
        return new_session, rows_for(profile_name, targets, event, intents)

    return IngestJob(
        source=event.source,
        kind=event.action,
        profile=profile_name,
        payload=_event_record(event),
        now=now,
        session_key=session_key(event),
        decide=plan,
    )


def _event_record(event: MediaEvent) -> dict[str, Any]:
    record = dataclasses.asdict(event)
    record["item"] = ref_to_dict(event.item)
    return record


@post("/webhooks/{source:str}", status_code=202)
async def webhook(
    runtime: NamedDependency[Runtime], request: Request[Any, Any, Any], source: FromPath[str]
) -> Response[dict[str, Any]]:
    return await _webhook(runtime, request, source, None)


@post("/webhooks/{source:str}/{secret:str}", status_code=202)
async def webhook_with_secret(
    runtime: NamedDependency[Runtime],
    request: Request[Any, Any, Any],
    source: FromPath[str],
    secret: FromPath[str],
) -> Response[dict[str, Any]]:
    return await _webhook(runtime, request, source, secret)


ROUTES: list[Any] = [webhook, webhook_with_secret]
