"""What `watchbridge rename-profile` renames beyond the tables' profile columns: the rows
kept by a key that names the profile (alert conditions, sign-in notes, AniList saves, ...)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from watchbridge.accounts import ALERT_KIND as ACCOUNT_CHANGED
from watchbridge.config import SYNC_SERVICES
from watchbridge.scheduler import SERVICE_ALERT_KINDS, profile_of_alert
from watchbridge.serializdlist import ALERT_KIND as KEPT_OFF_KIND
from watchbridge.serializdlist import UnreadableAlert

# The alert kinds keyed `service:profile...` when about one profile (see profile_of_alert).
PROFILE_ALERT_KINDS = (*SERVICE_ALERT_KINDS, ACCOUNT_CHANGED)


def alert_key_renamed(kind: str, key: str, old: str, new: str) -> str | None:
    """The key of alert (`kind`, `key`) once profile `old` is renamed `new` (`watchbridge
    rename-profile`): `trakt:me:ending` becomes `trakt:myself:ending`, and
    `LINK:me:serializd-watched-seasons:SHOW` `LINK:myself:...`. None for an alert
    about no profile, or another one."""
    if kind == "reported_twice":  # one condition per profile, keyed by its name alone
        return new if key == old else None
    kept_off = UnreadableAlert.of(key) if kind == KEPT_OFF_KIND else None
    if kept_off is not None:  # a show kept off Serializd's watchlist: LINK:PROFILE:...
        return replace(kept_off, profile=new).key if kept_off.profile == old else None
    if kind not in PROFILE_ALERT_KINDS or profile_of_alert(key) != old:
        return None
    service, _, rest = key.partition(":")
    return ":".join([service, new, *rest.split(":")[1:]])


def profile_keyed_cache(old: str, new: str) -> dict[str, Callable[[str], str | None]]:
    """How `watchbridge rename-profile` renames the cache rows that name profile `old` in
    their lookup, by namespace (None: a row not about `old`): the alert conditions (their
    throttles, alerts still open or owed), the alerts about a sign-in told once
    (maintenance.ALERTED: `trakt:me:stopped:...`), the rows an account limit holds
    (`trakt:me`) and those a rate limit holds (deliver.worker.ProfileHold), the AniList
    saves a play was about to make (by its row's idempotency key, which the move renames:
    `me:anilist:...`) and the entries a play finished (`me:ID`), and
    a Serializd sign-in refused or forbidden for a while (`me`). Left under the old name, a
    start would resolve the open alerts as of a profile taken out (while the sign-in is as
    broken as it was) and tell again what was told, a play whose save landed unconfirmed
    would count a second viewing, and a refused password would be tried again."""
    from watchbridge.alerts import NAMESPACE as ALERTS
    from watchbridge.deliver.anilist import FINISHED, SENT
    from watchbridge.deliver.worker import LIMITED_ROWS, PROFILE_HOLDS
    from watchbridge.maintenance import ALERTED
    from watchbridge.services.serializd import FORBIDDEN, REFUSED

    def alert(lookup: str) -> str | None:
        kind, separator, key = lookup.partition("\x1f")
        moved = alert_key_renamed(kind, key, old, new) if separator else None
        return None if moved is None else f"{kind}\x1f{moved}"

    def service_then_profile(lookup: str) -> str | None:
        service, _, rest = lookup.partition(":")
        name, colon, tail = rest.partition(":")
        if service not in SYNC_SERVICES or name != old:
            return None
        return f"{service}:{new}{colon}{tail}"

    def profile_first(lookup: str) -> str | None:
        return new + lookup.removeprefix(old) if lookup.startswith(f"{old}:") else None

    def profile_alone(lookup: str) -> str | None:
        return new if lookup == old else None

    return {
        ALERTS: alert,
        ALERTED: service_then_profile,
        LIMITED_ROWS: service_then_profile,
        PROFILE_HOLDS: service_then_profile,
        SENT: profile_first,
        FINISHED: profile_first,
        REFUSED: profile_alone,
        FORBIDDEN: profile_alone,
    }


def queued_later() -> tuple[tuple[str, str], ...]:
    """The mirror collections (service, collection) keeping outbox rows to queue again later,
    by idempotency key, that `watchbridge rename-profile` must rename inside too (see
    `Store.move_profile`): the AniList target's plays skipped as not anime."""
    from watchbridge.deliver.anilist import NAME, SKIPPED

    return ((NAME, SKIPPED),)
