"""A profile's Trakt sign-in with a device code, whoever shows the code: `watchbridge auth
trakt` prints it; the status page shows it (a Home Assistant app's user has no terminal).

`sign_in` runs the device flow and what follows it: the deliveries that waited for the
sign-in become due, the account signed in is remembered (a change of account starts the
profile's side over, see accounts.py), and a second profile signed in to the first one's
account is warned of. The store is used on a thread: in the service, a link run's apply may
hold it for most of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from watchbridge.accounts import SEP, account_named, account_shown, note_account
from watchbridge.config import Config
from watchbridge.errors import WatchbridgeError
from watchbridge.services.trakt import DeviceCode, TraktClient
from watchbridge.signins import waited_for_sign_in
from watchbridge.store import ACCOUNT_CURSOR, Store


@dataclass(frozen=True)
class SignedIn:
    """What a finished sign-in changed, in words: `notes` to tell, `warning` if any."""

    profile: str
    notes: list[str] = field(default_factory=list)
    warning: str | None = None
    resumed: int = 0  # deliveries that waited for this sign-in, due now
    username: str | None = None  # whose account was approved, as Trakt shows it (if it said)


async def sign_in(
    config: Config,
    store: Store,
    profile: str,
    show: Callable[[DeviceCode], None],
    clock: Callable[[], float] = time.time,
) -> SignedIn:
    """Sign `profile` in to Trakt: `show` gets the code to enter; returns once it is approved
    (raises the sign-in's error: denied, expired, the app refused)."""
    assert config.services.trakt is not None
    client = TraktClient(config.services.trakt, store, clock=clock)

    async def whose() -> str | None:
        """The account signed in now, if Trakt says (else the next link run asks)."""
        with contextlib.suppress(WatchbridgeError):
            if account := await client.account(profile):
                return account_named(account)
        return None

    try:
        # A sign-in of an older release: whose it was, so that another's is noticed.
        known = await asyncio.to_thread(store.get_cursor, "trakt", profile, ACCOUNT_CURSOR)
        stored = await asyncio.to_thread(store.get_token, "trakt", profile)
        earlier = known is None and stored is not None
        before = await whose() if earlier else None
        await client.sign_in(profile, show)
        after = await whose()
    finally:
        await client.aclose()
    # One Trakt no longer answers for (usually the same person signing in again) stays
    # unknown: the next run compares what it reads with what was kept.
    after = None if earlier and before is None else after
    settled = await asyncio.to_thread(_settle, config, store, profile, before, after, clock())
    return replace(settled, username=client.usernames.get(profile))


def _settle(
    config: Config, store: Store, profile: str, before: str | None, after: str | None, now: float
) -> SignedIn:
    notes = []
    if resumed := store.resume_after_sign_in("trakt", profile, now):
        notes.append(waited_for_sign_in(resumed, profile, "Trakt"))
    for seen in (before, after):
        change = note_account(store, config, "trakt", profile, seen or "", now)
        if change is not None:
            notes.append(change.message())
    warning = None
    if after and (twin := signed_in_elsewhere(store, config, "trakt", profile, after)):
        whose = account_shown(store, "trakt", after, now)  # its username, where known
        warning = (
            f"profile {profile} is signed in to the same Trakt account as profile {twin} "
            f"({whose}): {profile}'s plays would land on {twin}'s Trakt. If that is not "
            f"meant, sign in on trakt.tv as {profile}'s account (or sign out there) and run "
            f"`watchbridge auth trakt --profile {profile}` again"
        )
    return SignedIn(profile, notes, warning, resumed)


def signed_in_elsewhere(
    store: Store, config: Config, service: str, profile: str, account: str
) -> str | None:
    """Another profile whose sign-in to `service` is the account `account` (an identity, as
    accounts.note_account keeps it): a household member who approved the code where another
    was signed in gets their plays written to that person's account."""
    for other in config.profiles:
        if other == profile or store.get_token(service, other) is None:
            continue
        kept = store.get_cursor(service, other, ACCOUNT_CURSOR)
        if kept and kept.strip(SEP) and kept == account:
            return other
    return None
