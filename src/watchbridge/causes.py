"""Root causes that have an alert of their own: a sign-in a service refuses, a service down.

A link whose run fails on one of them (a revoked Trakt sign-in fails every link reading
Trakt for that profile) is told of by that alert while it is open: its `sync_failing` alert
would say the same thing again, once per link. Pure: which alert conditions tell of a failure,
and whether every failed part of a run is told so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from watchbridge.errors import WatchbridgeError
from watchbridge.http import ServiceError, Unavailable
from watchbridge.services.anilist import AniListAuthError
from watchbridge.services.jellyfin import MediaServerAuthError
from watchbridge.services.plex import PlexAuthError, ServerTokenRefused
from watchbridge.services.plextv import PlexTvAuthError
from watchbridge.services.serializd import SerializdAuthError
from watchbridge.services.trakt import TraktAuthError

# A person's sign-in refused: the deliveries' and the sign-in upkeep's `credentials` alert.
PERSON_SIGN_IN = (
    TraktAuthError,
    SerializdAuthError,
    AniListAuthError,
    PlexTvAuthError,
    PlexAuthError,
)
# The server's own key refused, whoever's library was read: the lookups' alert (ids.py).
SERVER_KEY = (ServerTokenRefused, MediaServerAuthError)

Condition = tuple[str, str]  # an alert's (kind, key)


@dataclass(frozen=True)
class Cause:
    """Why one part of a run failed, as the alerts that tell of it: any one of `conditions`
    open tells the human of it."""

    conditions: tuple[Condition, ...]


def cause_of(error: WatchbridgeError, profile: str) -> Cause | None:
    """The alerts of the root cause of `profile`'s part failing on `error`; None for a failure
    no alert but the link's tells of (a shape it cannot read, a bug, a config problem)."""
    if not isinstance(error, ServiceError):
        return None
    service = error.service
    if isinstance(error, SERVER_KEY):
        return Cause((("credentials", f"server:{service}"),))
    if isinstance(error, PERSON_SIGN_IN):
        return Cause((("credentials", f"{service}:{profile}"),))
    if isinstance(error, Unavailable):
        # The service's outage as its deliveries tell it (or a media server's lookups), or
        # this profile's own pause (a rate limit, its sign-in host down).
        keys = (service, f"server:{service}", f"{service}:{profile}")
        return Cause(tuple(("service_unreachable", key) for key in keys))
    return None


def told_elsewhere(causes: Sequence[Cause | None], raised: Callable[[str, str], bool]) -> bool:
    """True when every failed part of a run (`causes`, one each) has a root cause whose own
    alert is open (`raised(kind, key)`): a part with none, or with its alert over, is the
    link's to tell."""
    return bool(causes) and all(
        cause is not None and any(raised(kind, key) for kind, key in cause.conditions)
        for cause in causes
    )


_CARRIED = "_watchbridge_causes"


def with_causes(error: WatchbridgeError, causes: tuple[Cause | None, ...]) -> WatchbridgeError:
    """`error`, carrying the causes of every part of the run that failed with it (a run no
    profile of which could be read raises its first profile's error as it is)."""
    setattr(error, _CARRIED, causes)
    return error


def carried_causes(error: BaseException) -> tuple[Cause | None, ...]:
    """What `with_causes` gave `error`; none for any other error."""
    causes: tuple[Cause | None, ...] = getattr(error, _CARRIED, ())
    return causes
