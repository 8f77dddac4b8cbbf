"""Sign-in health: for each profile and each service it signs in to with a token that ends
(Trakt, AniList, Serializd), whether the sign-in works, when its access token expires and what
to run when it does not. One computation for the status page, `/api/status` and the metrics.

`sign_in_states` is pure (what the store holds and the clock in, states out); `read_facts` reads
the store, never the network. Nothing here returns a token or any part of one. Plex and
Jellyfin tokens have no expiry: they are not listed, save a Plex token the server refused (at
a delivery or a link's read) while it is still the token in use (a new token in the config, a
new `watchbridge auth plex`, or a delivery or a link's read that goes through with it, ends it).
The server's own `services.plex.token` is the household's, no profile's: its refusal is one
service-wide sign-in (`SignIn.service_wide`), whether or not the owner is a profile.

An AniList token refused when it was used, a Trakt access token refused even after a refresh
went through, or a Serializd token pasted into the config that Serializd's check refused
(`services.refusals`: revoked, the app removed, signed out), is `refused` while it is
still the token in use, whether a delivery or a link's sync met the refusal (a link's own
reads and writes queue nothing that could wait): a new sign-in, or a request with it that goes
through (a delivery, a link's read), ends it. A Serializd login with email and password that
Serializd refused (the password changed on its website) is `refused` the same way, with the
same flag (`SignIn.token_refused`), until a login goes through, however long none is tried;
the config's credentials changed since (told by their fingerprint, never kept) are
`not_tried` instead, until their first login says.

A sign-in watchbridge has not used yet (a Serializd password before its first login, a token
or refresh token pasted into the config before its first request) is `not_tried`: whether
the service takes it is not known until then, so it reads neither as working nor as failed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from watchbridge.config import Config
from watchbridge.readers.plex import identity, refusal_fix, token_in_use
from watchbridge.services.anilist import EXPIRY_WARNING_DAYS, pick_token
from watchbridge.services.refusals import SERVICE_WIDE, entry, refusal_of
from watchbridge.services.serializd import EXPIRY_WARNING_DAYS as SERIALIZD_WARNING_DAYS
from watchbridge.services.serializd import FORBIDDEN as SERIALIZD_FORBIDDEN
from watchbridge.services.serializd import NEW_TOKEN as SERIALIZD_NEW_TOKEN
from watchbridge.services.serializd import Session as SerializdSession
from watchbridge.services.serializd import login_refusal, same_email
from watchbridge.services.serializd import token_expiry as serializd_token_expiry
from watchbridge.services.trakt import PASTED_USED, REFRESH_OUTCOME, TokenSet
from watchbridge.store import Store
from watchbridge.zone import local_time

State = Literal["ok", "not_tried", "ends_soon", "expired", "refused", "not_signed_in"]
SERVICES = ("trakt", "anilist", "serializd")  # those whose sign-in ends; in this order

# Each state in words, as the status page and `watchbridge status` show it.
STATE_WORDS: dict[str, str] = {
    "ok": "works",
    "not_tried": "not tried yet",
    "ends_soon": "ends soon",
    "expired": "expired",
    "refused": "refused",
    "not_signed_in": "not signed in",
}
FIRST_USED = "when watchbridge first delivers to {service} or a link syncs it"
# The expiry shown of an access token the service refused (`SignIn.token_refused`).
REFUSED_EXPIRY = "refused: sign in again"


@dataclass(frozen=True)
class Facts:
    """What the store (and the config) hold about one profile's sign-in to one service.
    `stored` is the stored sign-in, tokens included: read here, never shown."""

    profile: str
    service: str
    stored: Mapping[str, Any] | None = None
    configured: str | None = None  # AniList: the config's token; Trakt: a pasted refresh token;
    # Serializd: the configured email, or its pasted token (`pasted`); Plex: whose token it is
    # ("owner", "pasted", "signed_in")
    pasted: bool = False  # Serializd: `configured` is a token pasted into the config
    pasted_used: str | None = None  # Trakt: the hash of the pasted refresh token Trakt answered
    last_refresh: Mapping[str, Any] | None = None  # Trakt: REFRESH_OUTCOME's entry
    refused: str | None = None  # Serializd: why its last login was refused, if it was
    # Serializd: a login was refused, with credentials other than the config's (changed since)
    refused_others: bool = False
    # AniList, Trakt, Plex: the service's last refused token (`services.refusals`); a refusal
    # of the token in use, of an earlier one, or of one stored since.
    refused_token: Mapping[str, Any] | None = None
    waiting: bool = False  # whether the profile's deliveries to the service wait for a sign-in


@dataclass(frozen=True)
class SignIn:
    """One profile's sign-in to one service, as the page, the API and the metrics show it."""

    profile: str
    service: str
    state: State
    expires_at: float | None  # the access token's expiry (Unix time), when known
    message: str  # in words, with what to run when the user must act
    refresh_due: bool | None = None  # Trakt: past its refresh point (75 % of its life)
    last_refresh: str | None = None  # Trakt: "ok", "refused" or "unreachable", if one was tried
    last_refresh_at: float | None = None
    # The service refuses the access token itself (revoked, the app removed), or Serializd
    # the login that would replace it: its expiry, perhaps months away, no longer says how
    # long it works.
    token_refused: bool = False
    # Renewed without the user (Trakt's refresh, Serializd's login with the config's password):
    # its expiry is no date to act by, so the page says "renews itself" in its place.
    renews: bool = False

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def service_wide(self) -> bool:
        """Whether it is the service's own sign-in, no profile's (the Plex server's token)."""
        return self.profile == SERVICE_WIDE

    @property
    def needs_you(self) -> bool:
        """Whether the user must act (or soon will): not while it works, nor before it was
        first tried (nothing says yet that it will not work)."""
        return self.state not in ("ok", "not_tried")

    def works_until(self, now: float) -> float | None:
        """Until when its access token works, as far as the store knows: its expiry, but
        `now` at the latest for one the service refuses (whatever its expiry, or none)."""
        if self.token_refused:
            return now if self.expires_at is None else min(self.expires_at, now)
        return self.expires_at

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "state": self.state,
            "expires_at": iso(self.expires_at),
            "refresh_due": self.refresh_due,
            "last_refresh": self.last_refresh,
            "last_refresh_at": iso(self.last_refresh_at),
            "message": self.message,
            "refused": self.token_refused,
        }


def waited_for_sign_in(resumed: int, profile: str, service: str) -> str:
    """The note for deliveries a sign-in made due again (a running service's worker sees the
    sign-in within its SIGN_IN_LOOK_EVERY; at once when the service made it)."""
    return (
        f"{resumed} deliveries of profile {profile} to {service} waited for this sign-in:"
        " the service sends them within a minute"
    )


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _when(timestamp: float) -> str:
    return local_time(timestamp)


def _held(fact: Facts) -> str:
    """What a refused token stops, said after the refusal."""
    return "deliveries wait" if fact.waiting else "reads and writes with it fail"


def _digest(text: str) -> str:
    """As the Trakt client keeps a refresh token to know it again: its SHA-256."""
    return hashlib.sha256(text.encode()).hexdigest()


def sign_in_states(facts: Sequence[Facts], now: float) -> list[SignIn]:
    """The state of each sign-in (pure)."""
    states = []
    for fact in facts:
        if fact.service == "trakt":
            states.append(_trakt(fact, now))
        elif fact.service == "anilist":
            states.append(_anilist(fact, now))
        elif fact.service == "serializd":
            states.append(_serializd(fact, now))
        elif fact.service == "plex" and (plex := _plex(fact)) is not None:
            states.append(plex)
    return states


def _trakt(fact: Facts, now: float) -> SignIn:
    auth = f"run `watchbridge auth trakt --profile {fact.profile}`"
    pair = _token_set(fact.stored)
    if pair is None:
        pasted = fact.configured
        if pasted and fact.pasted_used != _digest(pasted):
            return SignIn(
                fact.profile,
                "trakt",
                "not_tried",
                None,
                f"the refresh token in profiles.{fact.profile}.accounts.trakt is first used "
                f"{FIRST_USED.format(service='Trakt')}; if Trakt refuses it, {auth}",
            )
        return SignIn(fact.profile, "trakt", "not_signed_in", None, f"not signed in: {auth}")
    last = fact.last_refresh
    if last is not None and last.get("pair") != _digest(pair.refresh_token):
        last = None  # about an earlier pair: signed in again since
    outcome = str(last["outcome"]) if last is not None else None
    at = float(last["at"]) if last is not None and isinstance(last.get("at"), int | float) else None
    expires = pair.expires_at
    due = pair.due_for_refresh(now)

    def sign_in(
        state: State, message: str, token_refused: bool = False, renews: bool = False
    ) -> SignIn:
        return SignIn(
            fact.profile, "trakt", state, expires, message, due, outcome, at, token_refused, renews
        )

    refused = refusal_of(fact.refused_token, pair.access_token)
    if outcome == "refused" and refused is not None:
        # Its access token was refused first (revoked, the app removed): nothing works now.
        return sign_in(
            "refused",
            f"Trakt refused the sign-in {_when(refused[0])} and would not renew it; "
            f"{_held(fact)}: {auth}",
            token_refused=True,
        )
    if outcome == "refused":
        still = (
            f"its access token works until {_when(expires)}, then deliveries wait"
            if now < expires
            else f"it ended {_when(expires)}: deliveries wait"
        )
        return sign_in("refused", f"Trakt refused to renew the sign-in ({still}): {auth}")
    if refused is not None:
        # Renewed, yet Trakt refuses the new access token too (the account's access cut).
        return sign_in(
            "refused",
            f"Trakt refused the sign-in {_when(refused[0])}, even after renewing it; "
            f"{_held(fact)}: {auth}",
            token_refused=True,
        )
    if now >= expires:
        reason = (
            "Trakt's sign-in service could not be reached to renew it"
            if outcome == "unreachable"
            else "it was not renewed in time (the service was stopped?)"
        )
        return sign_in(
            "expired",
            f"the access token ended {_when(expires)}: {reason}; it is renewed at the next "
            f"request to Trakt; if that is refused, {auth}",
        )
    if due and outcome == "unreachable":
        return sign_in(
            "ends_soon",
            f"Trakt's sign-in service could not be reached to renew it; tried again, the "
            f"access token works until {_when(expires)}",
        )
    # Its expiry is no chore: the renewal comes before it (at 75 % of its life).
    return sign_in(
        "ok",
        f"signed in; renews itself, nothing to do (next renewal before {_when(expires)})",
        renews=True,
    )


def _token_set(stored: Mapping[str, Any] | None) -> TokenSet | None:
    if not stored:
        return None
    try:
        return TokenSet(
            str(stored["access_token"]),
            str(stored.get("refresh_token") or ""),
            float(stored["created_at"]),
            float(stored["expires_in"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _anilist(fact: Facts, now: float) -> SignIn:
    auth = f"run `watchbridge auth anilist --profile {fact.profile}`"
    token, unused = pick_token(fact.stored, fact.configured, now)
    if token is None:
        return SignIn(fact.profile, "anilist", "not_signed_in", None, f"not signed in: {auth}")
    expires = token.expires_at
    if (refused := refusal_of(fact.refused_token, token.access_token)) is not None:
        # Its expiry may be months away: AniList no longer takes it (revoked, the app removed).
        return SignIn(
            fact.profile,
            "anilist",
            "refused",
            expires,
            f"AniList refused the token {_when(refused[0])}; {_held(fact)}: {auth}",
            token_refused=True,
        )
    # `unused`: the config's token, not yet stored, so never sent to AniList.
    untried = (
        f"the token in profiles.{fact.profile}.accounts.anilist is first used "
        f"{FIRST_USED.format(service='AniList')}; if AniList refuses it, {auth}"
    )
    if expires is None:
        if unused:
            return SignIn(fact.profile, "anilist", "not_tried", None, untried)
        return SignIn(fact.profile, "anilist", "ok", None, "signed in (no expiry known)")
    days = (expires - now) / 86400
    if days <= 0:
        return SignIn(
            fact.profile, "anilist", "expired", expires, f"ended {_when(expires)}: {auth}"
        )
    if days <= EXPIRY_WARNING_DAYS:
        return SignIn(
            fact.profile,
            "anilist",
            "ends_soon",
            expires,
            f"ends {_when(expires)} (in {math.ceil(days)} days; AniList sign-ins cannot be "
            f"renewed): {auth}",
        )
    if unused:
        return SignIn(fact.profile, "anilist", "not_tried", expires, untried)
    return SignIn(
        fact.profile,
        "anilist",
        "ok",
        expires,
        f"signed in until {_when(expires)} ({int(days)} more days)",
    )


def _serializd(fact: Facts, now: float) -> SignIn:
    if fact.pasted:
        return _serializd_pasted(fact, now)
    where = f"profiles.{fact.profile}.accounts.serializd"
    data = fact.stored or {}
    expires = data.get("expires_at")
    expires_at = float(expires) if isinstance(expires, int | float) else None
    if fact.refused is not None:
        # A login is only tried once the stored token is no use (run out, or refused): its
        # expiry, perhaps months away, no longer says how long it works.
        return SignIn(
            fact.profile, "serializd", "refused", expires_at, fact.refused, token_refused=True
        )
    first_used = f"first used {FIRST_USED.format(service='Serializd')}"
    if fact.refused_others:
        # Whether Serializd takes them is up to their first login, as for a new pasted token.
        return SignIn(
            fact.profile,
            "serializd",
            "not_tried",
            None,
            f"the email or password in {where} changed since Serializd refused them; they "
            f"are {first_used}; a wrong one shows here then",
        )
    if not data.get("token"):
        return SignIn(
            fact.profile,
            "serializd",
            "not_tried",
            None,
            f"the email and password in {where} are {first_used}; a wrong one shows here then",
        )
    signed_in_as = data.get("email")
    if (
        fact.configured
        and isinstance(signed_in_as, str)
        and not same_email(signed_in_as, fact.configured)
    ):
        return SignIn(
            fact.profile,
            "serializd",
            "not_tried",
            None,
            f"the email in {where} changed since the last login; it and its password are "
            f"{first_used}",
        )
    return SignIn(
        fact.profile,
        "serializd",
        "ok",
        expires_at,
        f"signed in; logs in again with the email and password in {where} when it ends",
        renews=True,
    )


def _serializd_pasted(fact: Facts, now: float) -> SignIn:
    """A token pasted for Serializd: used until Serializd refuses it, and not renewable."""
    token = fact.configured or ""
    where = f"profiles.{fact.profile}.accounts.serializd.token"
    todo = SERIALIZD_NEW_TOKEN.format(where=where)
    expires = serializd_token_expiry(token)

    def sign_in(state: State, message: str, token_refused: bool = False) -> SignIn:
        return SignIn(
            fact.profile, "serializd", state, expires, message, token_refused=token_refused
        )

    if (refused := refusal_of(fact.refused_token, token)) is not None:
        # Its claim may be months away: Serializd's check no longer takes it (signed out).
        return sign_in(
            "refused",
            f"Serializd refused the token {_when(refused[0])}; {_held(fact)}: {todo}",
            token_refused=True,
        )
    stored = SerializdSession.from_dict(fact.stored or {})
    if (
        expires is not None
        and stored is not None
        and stored.token == token
        and stored.outlived_claim
    ):
        return sign_in(
            "ok",
            f"signed in with the pasted token (Serializd took it after {_when(expires)}, the "
            "end it claims: it works until Serializd refuses it)",
        )
    if expires is not None and now >= expires:
        return sign_in("expired", f"the token ended {_when(expires)}: {todo}")
    if expires is not None and (expires - now) / 86400 <= SERIALIZD_WARNING_DAYS:
        days = math.ceil((expires - now) / 86400)
        return sign_in(
            "ends_soon",
            f"the token ends {_when(expires)} (in {days} days; a pasted token cannot be "
            f"renewed): {todo}",
        )
    until = f"until {_when(expires)}" if expires is not None else "(no expiry known)"
    if (fact.stored or {}).get("token") != token:
        return sign_in(
            "not_tried",
            f"the token in {where} is first used {FIRST_USED.format(service='Serializd')}; it "
            f"works {until} by its own claim",
        )
    return sign_in("ok", f"signed in with the pasted token {until}")


def _plex(fact: Facts) -> SignIn | None:
    """A Plex sign-in, listed only while the server refuses the token in use (none ends)."""
    refused = refusal_of(fact.refused_token, (fact.stored or {}).get("token"))
    if refused is None:
        return None
    whose, todo = refusal_fix(fact.profile, fact.configured or "")
    if fact.profile == SERVICE_WIDE:
        # Every read goes with it (which libraries exist, the history), whoever's it is for.
        return SignIn(
            fact.profile,
            "plex",
            "refused",
            None,
            f"the Plex server refuses {whose} since {_when(refused[0])}: {todo}",
        )
    return SignIn(
        fact.profile,
        "plex",
        "refused",
        None,
        f"the Plex server refused {whose} {_when(refused[0])}; {_held(fact)}: {todo}",
    )


def _plex_server_facts(config: Config, store: Store) -> Facts | None:
    """A refusal of the Plex server's own token (`services.plex.token`), service-wide."""
    plex = config.services.plex
    server = plex.token.reveal() if plex is not None and plex.token else None
    refused = _refused_token(store, "plex", SERVICE_WIDE) if server is not None else None
    if refused is None:
        return None
    return Facts(SERVICE_WIDE, "plex", {"token": server}, configured="owner", refused_token=refused)


def _plex_facts(config: Config, store: Store, profile: str) -> Facts | None:
    """A refused Plex token of `profile` (a refusal on record, of whichever token). Not the
    owner's: read with the server's own token, whose refusal is service-wide."""
    refused = _refused_token(store, "plex", profile) if config.services.plex else None
    if refused is None:
        return None
    person = identity(config, store, profile)
    if person.owner:
        return None
    in_use = token_in_use(config, store, profile)
    stored = {"token": in_use} if in_use is not None else None
    waiting = _waiting(store, "plex", profile, refused)
    return Facts(
        profile, "plex", stored, configured=person.kind, refused_token=refused, waiting=waiting
    )


def _token_facts(store: Store, profile: str, service: str, **given: Any) -> Facts:
    """The facts of a sign-in by a token: the stored one, its refusal on record and whether
    deliveries wait for it, with what the caller `given` of the config."""
    refused = _refused_token(store, service, profile)
    return Facts(
        profile,
        service,
        store.get_token(service, profile),
        refused_token=refused,
        waiting=_waiting(store, service, profile, refused),
        **given,
    )


def _refused_token(store: Store, service: str, profile: str) -> Mapping[str, Any] | None:
    """`service`'s last refused token of `profile`, if one is on record. Whether deliveries
    wait is no part of it: a link's sync refused queues nothing, and a request the token gets
    through (or another token) is what ends a refusal."""
    return store.get_token(entry(service), profile) or None


def _waiting(store: Store, service: str, profile: str, refused: Mapping[str, Any] | None) -> bool:
    """Whether `profile`'s deliveries to `service` wait for a sign-in (asked only when a
    refusal is on record: the words of a refused sign-in depend on it)."""
    return refused is not None and store.waits_for_sign_in(service, profile)


def read_facts(config: Config, store: Store, now: float) -> list[Facts]:
    """What the store holds about every configured profile's Trakt, AniList and Serializd
    sign-in, and a Plex token the server refused, the server's own first (reads only; no
    network)."""
    facts = [server] if (server := _plex_server_facts(config, store)) is not None else []
    for name, profile in config.profiles.items():
        accounts = profile.accounts
        if accounts.trakt is not None:
            pasted = accounts.trakt.refresh_token
            used = store.get_token(PASTED_USED, name) or {}
            facts.append(
                _token_facts(
                    store,
                    name,
                    "trakt",
                    configured=pasted.reveal() if pasted else None,
                    pasted_used=used.get("sha256"),
                    last_refresh=store.get_token(REFRESH_OUTCOME, name),
                )
            )
        if accounts.anilist is not None:
            token = accounts.anilist.token
            configured = token.reveal() if token else None
            facts.append(_token_facts(store, name, "anilist", configured=configured))
        if accounts.serializd is not None and accounts.serializd.token is not None:
            configured = accounts.serializd.token.reveal()
            facts.append(_token_facts(store, name, "serializd", configured=configured, pasted=True))
        elif accounts.serializd is not None:
            where = f"profiles.{name}.accounts.serializd"
            refusal = login_refusal(store, name, now)
            # Worked out (slowly) only while a refusal is on record.
            refused = refusal is not None and refusal.of(accounts.serializd)
            forbidden, _ = store.cache_get(SERIALIZD_FORBIDDEN, name, now)
            why = None
            if refused:
                why = (
                    "Serializd refused the email or password at the last login: "
                    f"check {where}, then restart watchbridge"
                )
            elif forbidden:
                why = (
                    f"Serializd refused the last login (403); it is tried again in a while: "
                    f"check {where} if this lasts"
                )
            facts.append(
                Facts(
                    name,
                    "serializd",
                    store.get_token("serializd", name),
                    configured=accounts.serializd.email,
                    refused=why,
                    refused_others=refusal is not None and why is None,
                )
            )
        if accounts.plex is not None and (plex := _plex_facts(config, store, name)) is not None:
            facts.append(plex)
    return facts


def current_sign_ins(config: Config, store: Store, now: float) -> list[SignIn]:
    """Every profile's sign-ins now, from the store."""
    return sign_in_states(read_facts(config, store, now), now)


def gauges(
    config: Config, store: Store, clock: Callable[[], float]
) -> list[tuple[str, str, float | None, bool]]:
    """(service, profile, works_until, ok) of each sign-in, for the metrics (nothing read, not
    even the clock, when no profile signs in to a service whose sign-in ends, nor to Plex, and
    there is no Plex server token). `ok` is False only for one that needs the user: one not
    tried yet is no failure. A service-wide one has the profile "" (Prometheus: no profile).
    `works_until` is the access token's expiry, but now for one the service refuses: an alert
    on its seconds left fires, not one on its own expiry, perhaps months away."""
    plex = config.services.plex
    if not (plex is not None and plex.token) and not any(
        p.accounts.trakt or p.accounts.anilist or p.accounts.serializd or p.accounts.plex
        for p in config.profiles.values()
    ):
        return []
    now = clock()
    return [
        (s.service, s.profile, s.works_until(now), not s.needs_you)
        for s in current_sign_ins(config, store, now)
    ]
