"""A token a service refused when it was used (AniList's 401; Trakt's 401 even after a refresh
went through: revoked, the app removed), kept so the sign-in health (the status page,
`/api/status`, `watchbridge status`, the metrics) says so instead of "works".

Kept in the tokens table beside the sign-in, by the refused token's SHA-256, never the token:
a token stored since (a new `watchbridge auth`, a token pasted into the config) is another, so
the refusal no longer reads as current. (Each later Trakt try refreshes once more and keeps
the refusal of the new access token.) A refusal of a service's own token, no profile's (the
Plex server's `services.plex.token`), is kept once under `SERVICE_WIDE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from watchbridge.errors import StoreError

if TYPE_CHECKING:  # the Trakt client keeps its refusals here too
    from watchbridge.services.trakt import TokenStore


# The profile a service-wide refusal is kept under: no profile is named "" (config names
# start with a letter or a digit), so it is nobody's and nobody's leftover.
SERVICE_WIDE = ""


def entry(service: str) -> str:
    """The tokens-table entry holding `service`'s last refused token (per profile)."""
    return f"{service}-refused"


def digest(token: str) -> str:
    """What the database keeps of a token to know it again: its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def note_refused(
    store: TokenStore,
    service: str,
    profile: str,
    token: str,
    reason: str,
    now: float,
    *,
    since_first: bool = False,
) -> None:
    """Keep (best effort: the refusal itself is what the caller deals with) that `service`
    refused `token` of `profile`, and why (`reason`: the error's message, which says what
    to run and holds no token). With `since_first`, a refusal of the same token already on
    record is kept as it is: its time says since when the token is refused."""
    record = {"sha256": digest(token), "at": now, "reason": reason}
    with contextlib.suppress(sqlite3.Error, StoreError):
        if since_first and refusal_of(store.get_token(entry(service), profile), token) is not None:
            return
        store.put_token(entry(service), profile, record, now)


def note_taken(store: TokenStore, service: str, profile: str, token: str, now: float) -> None:
    """`service` took `token` of `profile` again: a refusal of it on record is over (best
    effort, as `note_refused`). Without this a one-off refusal would read as current again
    whenever deliveries wait for a sign-in for another reason (a media server's key)."""
    with contextlib.suppress(sqlite3.Error, StoreError):
        if refusal_of(store.get_token(entry(service), profile), token) is not None:
            store.put_token(entry(service), profile, {}, now)


def refusal_of(record: Mapping[str, Any] | None, token: str | None) -> tuple[float, str] | None:
    """(when, why) `token` was refused, when `record` is about it; None for another token."""
    if record is None or token is None or record.get("sha256") != digest(token):
        return None
    at = record.get("at")
    return (float(at) if isinstance(at, int | float) else 0.0), str(record.get("reason") or "")
