"""`POST /webhooks/{source}[/{secret}]`: authenticate, read, parse, map, store durably, answer.

Nothing is acknowledged before it is in SQLite: the event, its playback session and one outbox
row per target are written in one transaction, then the delivery worker is woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import sqlite3
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl

import msgspec
from litestar import asgi
from litestar.enums import ScopeType
from litestar.types import Receive, Scope, Send

from watchbridge import forplex, storagewatch, tautulliwatched, webhookwatch
from watchbridge.account_ids import (
    KEPT,
    PLEX_OWNER,
    Key,
    Learnt,
    ListedTwice,
    NameKey,
    NewId,
    Renamed,
    listed_twice,
    name_key,
)
from watchbridge.app import BEFORE_ROUTER, Runtime
from watchbridge.clocksteps import sent_at
from watchbridge.config import (
    TV_ONLY,
    Config,
    link_profiles,
    same_account,
    service_title,
    targets_for,
)
from watchbridge.errors import StoreError
from watchbridge.forplex import ForPlex
from watchbridge.homeassistant import HomeAssistantApp
from watchbridge.ingest import generic, parse
from watchbridge.ingest.body import payload_head
from watchbridge.ingest.common import TEST_EVENT
from watchbridge.logs import Repeating
from watchbridge.model import (
    Accepted,
    Account,
    Ignored,
    MediaEvent,
    Rejected,
    Source,
    ref_to_dict,
)
from watchbridge.offloop import in_thread
from watchbridge.playback import (
    HAND_MARK,
    Intent,
    Session,
    completion_key,
    decide,
    earlier_keys,
    hand_mark,
    marks_itself,
    remembers_rating,
    report_of,
    reported_late,
    session_key,
)
from watchbridge.readers.plex import found_by_name
from watchbridge.redaction import clipped
from watchbridge.refused import (
    LOG_EVERY,
    OVER_AFTER,
    REFUSALS,
    lost,
    lost_earlier,
    refusal_fix,
    sentence,
)
from watchbridge.senders import Doubling, Viewing
from watchbridge.storagefault import STORAGE_ALERT, StorageFault
from watchbridge.store import AccountLearnt, IngestJob, NewOutboxRow, ordering_key
from watchbridge.unlisted import ALERT_KIND as ACCOUNT_ALERT
from watchbridge.unlisted import Unlisted, account_key, server_name
from watchbridge.unmapped import account_label, unmapped_fix
from watchbridge.zone import tz_name

log = logging.getLogger(__name__)

SOURCES = ("plex", "jellyfin", "emby", "tautulli", "generic")
SECRET_HEADER = "x-webhook-secret"
SECRET_HEADER_BYTES = SECRET_HEADER.encode()


class TooLarge(Exception):
    """A body past its limit; the message says which limit, in one line."""


class Stalled(Exception):
    """A body given up before its end; the message says why, in one line."""


# A body whose next bytes do not come for this long is given up: its sender stopped midway
# (it crashed, its network went away), and nothing else would ever end the wait.
BODY_IDLE_TIMEOUT = 30.0

# A body that keeps coming, but too slowly (a byte every 29 s), is given up too: reading it
# may take BODY_GRACE seconds, and BODY_MIN_RATE more per second for each byte read by then.
# A deadline that grows with the bytes read suits a Plex poster up to PAYLOAD_BODY_CAP as well
# as a 2 KB JSON: the slowest link a real sender posts over is a home upload of 1 Mbit/s or so
# (a Plex at home posting to a server elsewhere, while it streams), 128 KiB/s; a quarter of
# that still gives a 128 MiB body 69 minutes. A sender keeping that average never meets the
# deadline (it stays BODY_GRACE ahead); a trickle is given up after BODY_GRACE seconds.
BODY_GRACE = 60.0
BODY_MIN_RATE = 32 * 1024  # bytes per second

# The most of a Plex webhook's body read when it passes server.max_webhook_bytes after its
# payload part came within it: the rest (the poster) is dropped as it comes, never held, so this
# bounds only how long one request keeps reading. Plex's posters are tens of KB (a few MB at the
# very most); 128 MiB takes ~11 s at 100 Mbit/s, and a body longer than that is no webhook.
PAYLOAD_BODY_CAP = 128 * 1024 * 1024


# --------------------------------------------------------------------------- pure decisions


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Where an event goes (`profile`: None when no profile takes it), and what the route
    learnt on the way: an account id to remember for the name an entry matched, or a name
    for the id (`learn`), or that the event went by a remembered id (`renamed`) or name
    (`new_id`): the user is told."""

    profile: str | None
    learn: tuple[Key, Learnt] | None = None
    renamed: Renamed | None = None
    new_id: NewId | None = None
    # The other sender of a Plex server's plays ("plex" or "tautulli") where that one sends
    # this person's to their profile: ignored, and not an account for the user to map.
    sent_by: Source | None = None
    # Taken by the default profile for want of an entry: remembered (defaulted.py).
    defaulted: bool = False
    # An account two profiles list, by its name and by its id: the latter's (the user is told).
    twice: ListedTwice | None = None


SENT_BY: dict[Source, str] = {
    "plex": (
        "Plex's own webhook sends this account's plays to the profile that lists it under "
        "users.plex: Tautulli's report of them is not needed"
    ),
    "tautulli": (
        "Tautulli's webhook sends this account's plays to the profile that lists it under "
        "users.tautulli: Plex's report of them is not needed"
    ),
}
# The answer to Tautulli's report of a play kept in case Plex's webhook does not send it.
SENT_BY_PLEX_KEPT = (
    f"{SENT_BY['plex']}; a play is kept and taken from this report should Plex's webhook not"
    f" tell of it within {forplex.GRACE / 60:.0f} minutes (without Plex Pass it sends none)"
)
NO_IDS: Mapping[Key, Learnt] = {}
NO_NAMES: Mapping[NameKey, tuple[Key, Learnt]] = {}


class Sender(Protocol):
    """Who an event came from, all a route reads of it: a `MediaEvent`, or an account of a
    server the catch-up reads (catchup.py), routed alike."""

    @property
    def source(self) -> str: ...

    @property
    def server(self) -> str: ...

    @property
    def account(self) -> Account: ...


def profile_for(
    config: Config,
    event: Sender,
    known: Mapping[Key, Learnt] = NO_IDS,
    names: Mapping[NameKey, tuple[Key, Learnt]] = NO_NAMES,
) -> str | None:
    """The profile an event belongs to (see `route_for`)."""
    return route_for(config, event, known, names).profile


def route_for(
    config: Config,
    event: Sender,
    known: Mapping[Key, Learnt] = NO_IDS,
    names: Mapping[NameKey, tuple[Key, Learnt]] = NO_NAMES,
    *,
    to_default: bool = True,
) -> Route:
    """The profile an event belongs to: explicit mapping first, then an account id remembered
    for a name a profile lists (`known`), then an account name remembered for an id a profile
    lists (`names`; see account_ids.py), else the default profile (not `to_default`: none,
    for the catch-up, which reads only the accounts profiles name), but none for an account
    another profile lists for the Plex server's other sender (Plex's own webhook or
    Tautulli's: `sent_by`), which sends its plays. Pure.

    Plex calls each server's owner account 1, so with two servers posting here a plain "1"
    names both owners: an entry naming the event's server ("SERVER:ACCOUNT") wins over one
    naming the account on any server, and any entry naming the account otherwise (its user
    name) wins over a plain "1"; else whichever profile came first took the other's plays.
    An account two profiles list, one by its name and one by its id, goes to the latter
    (`account_ids.listed_twice`)."""
    account = event.account
    twice = listed_twice(config, event.source, event.server, account.id, account.name)
    if twice is not None:
        matched = _matched(event, twice.profile, twice.entry, known)
        return dataclasses.replace(matched, twice=twice)
    anywhere = {same_account(c) for c in (account.id, account.name) if c}
    server = same_account(event.server) if event.server else ""
    here = {f"{server}:{c}" for c in anywhere} if server else set()
    owner = {PLEX_OWNER} if event.source == "plex" and account.id == PLEX_OWNER else set()
    for candidates in (here, anywhere - owner, owner):
        for name, profile in config.profiles.items():
            for entry in getattr(profile.users, event.source, ()):
                if same_account(entry) in candidates:
                    return _matched(event, name, entry, known)
    key = _key(event) if known else None
    learnt = known.get(key) if key is not None else None
    if (
        key is not None
        and learnt is not None
        and not learnt.by_id(key)
        and _still_listed(config, event.source, learnt)
    ):
        taken_by = _listed_name_taken_by(known, key, learnt)
        return Route(learnt.profile, renamed=Renamed(key, account.name or "", learnt, taken_by))
    if names and (new_id := _new_id(config, event, names)) is not None:
        return Route(new_id.learnt.profile, new_id=new_id)
    if not to_default:
        return Route(None)
    default = next((name for name, p in config.profiles.items() if p.default), None)
    if event.source == "tautulli" and (
        _listed_for(config, "plex", anywhere - {PLEX_OWNER}, default)
        or _followed_for_plex(config, known, account.id, default)
        or _owner_for_plex(config, known, event, default)
    ):
        # Tautulli reports Plex accounts: one another profile lists for Plex's own webhook is
        # that person's (whose plays Plex's webhook sends), never the default profile's; so
        # is one renamed in Plex, which Plex's webhook follows by its id.
        return Route(None, sent_by="plex")
    if event.source == "plex" and _listed_for(config, "tautulli", anywhere - {PLEX_OWNER}, default):
        # And the other way round: Plex's webhook (the owner's fires for everyone on the
        # server) of a person another profile lists for Tautulli's, by plex.tv id or name.
        return Route(None, sent_by="tautulli")
    return Route(default, defaulted=default is not None)


def _matched(event: Sender, profile: str, entry: str, known: Mapping[Key, Learnt]) -> Route:
    """The route of an event `entry` of `profile` matched: with what to learn when it is new,
    the account's id when the entry is its name, or its name when the entry is its id."""
    account = event.account
    if not account.id or not account.name:
        return Route(profile)
    key = _key(event)
    if key is None:
        return Route(profile)
    learnt = known.get(key)
    listed = same_account(entry).rpartition(":")[2]
    if listed == key.account_id:
        # Its name, so that a new id with the same name still finds the profile (`_new_id`);
        # a Plex owner's, so that Tautulli's reports of them (by username) are known
        # (`_owner_for_plex`).
        owner = event.source == "plex" and account.id == PLEX_OWNER
        new = owner or name_key(key, account.name) is not None
        new = new and learnt != (profile, entry, account.name)
    else:  # its id, when the entry is its name
        new = listed == same_account(account.name)
        new = new and (learnt is None or learnt.profile != profile or learnt.entry != entry)
    if not new:
        return Route(profile)
    return Route(profile, learn=(key, Learnt(profile, entry, account.name)))


def _listed_name_taken_by(known: Mapping[Key, Learnt], key: Key, learnt: Learnt) -> Key | None:
    """Another account of `key`'s server that the name entry `learnt` came from has matched
    since `key` was renamed: the listed name is that account's now (a guest given the name),
    while `key` still sends webhooks under its new name."""
    for other, other_learnt in known.items():
        if (
            other != key
            and other[:2] == key[:2]
            and other_learnt.profile == learnt.profile
            and other_learnt.entry == learnt.entry
            and not other_learnt.by_id(other)
        ):
            return other
    return None


def _clash_forgets(key: Key, learnt: Learnt) -> tuple[str, str] | None:
    """What the store forgets when a Plex account is learnt for an entry that names it while
    the entry was learnt with another id on the same server (`AccountLearnt.clash_forgets`):
    the accounts the reader found by the profile's names, remembered a week. Its next run asks
    the server's accounts once and refuses two by one name (`same_named`)."""
    if key.source != "plex" or learnt.by_id(key):
        return None
    return found_by_name(learnt.profile)


def _new_id(
    config: Config, event: Sender, names: Mapping[NameKey, tuple[Key, Learnt]]
) -> NewId | None:
    """The account an event no entry matches was, by its name remembered for an id a profile
    still lists on the same server: the account has a new id (made again on the server)."""
    key = _key(event)
    by_name = name_key(key, event.account.name or "") if key is not None else None
    remembered = names.get(by_name) if by_name is not None else None
    if key is None or remembered is None:
        return None
    was, learnt = remembered
    if was == key or not _still_listed(config, event.source, learnt):
        return None
    return NewId(key, event.account.name or "", was, learnt)


def _key(event: Sender) -> Key | None:
    """The event's account as ids are remembered by: per server, since Plex calls every
    server's owner 1 (without a server, the owner's id names no one account)."""
    account_id = event.account.id
    if not account_id or (event.source == "plex" and account_id == PLEX_OWNER and not event.server):
        return None
    server = same_account(event.server) if event.server else ""
    return Key(event.source, server, same_account(account_id))


def _still_listed(config: Config, source: str, learnt: Learnt) -> bool:
    """Whether the profile that listed a name still lists it (taken out: the id goes no more)."""
    profile = config.profiles.get(learnt.profile)
    listed = getattr(profile.users, source, ()) if profile is not None else ()
    return any(same_account(entry) == same_account(learnt.entry) for entry in listed)


def _followed_for_plex(
    config: Config, known: Mapping[Key, Learnt], account_id: str | None, but: str | None
) -> bool:
    """Whether Plex's webhook takes the plex.tv account `account_id` (on any server) to a
    profile other than `but` by the id remembered for a name it still lists (a rename)."""
    if not account_id or not known:
        return False
    wanted = same_account(account_id)
    return wanted != PLEX_OWNER and any(
        key.source == "plex"
        and key.account_id == wanted
        and learnt.profile != but
        and _still_listed(config, "plex", learnt)
        for key, learnt in known.items()
    )


def _owner_for_plex(
    config: Config, known: Mapping[Key, Learnt], event: Sender, but: str | None
) -> bool:
    """Whether a Tautulli report's account is a Plex server's owner whom Plex's webhook took,
    as account 1 under that user name (on the report's server, when it names one), to a
    profile other than `but`: Tautulli names the owner by plex.tv id, never 1."""
    name = same_account(event.account.name) if event.account.name else ""
    server = same_account(event.server) if event.server else ""
    return bool(name) and any(
        key.source == "plex"
        and key.account_id == PLEX_OWNER
        and (not server or key.server == server)
        and same_account(learnt.name) == name
        and learnt.profile != but
        and _still_listed(config, "plex", learnt)
        for key, learnt in known.items()
    )


def _listed_for(config: Config, source: str, candidates: set[str], but: str | None) -> bool:
    """Whether a profile other than `but` lists one of `candidates` for `source`, "plex" or
    "tautulli" (on any server: both name a Plex server's accounts by plex.tv id and name)."""
    return any(
        same_account(entry).rpartition(":")[2] in candidates
        for name, profile in config.profiles.items()
        if name != but
        for entry in getattr(profile.users, source)
    )


# Targets that show what is playing right now; the others take finished plays and ratings.
LIVE_TARGETS = frozenset({"trakt"})


def rows_for(
    profile: str,
    targets: Sequence[str],
    event: MediaEvent,
    intents: Sequence[Intent],
    item: dict[str, object] | None = None,
    order_key: str | None = None,
) -> list[NewOutboxRow]:
    """One outbox row per (intent, target) that takes it; a newer live state supersedes older
    pending ones.

    `item` is `ref_to_dict(event.item)` and `order_key` `event.item.order_key()` when the
    caller has them already."""
    rows = []
    item = ref_to_dict(event.item) if item is None else item
    order_key = event.item.order_key() if order_key is None else order_key
    if event.item.kind == "movie":  # no row that could only be skipped: the answer's count is true
        targets = [target for target in targets if target not in TV_ONLY]
    for intent in intents:
        # `source`: which media server to ask for ids the webhook left out (ids.Enricher).
        payload: dict[str, Any] = {"item": item, "at": intent.at, "source": event.source}
        if event.server and event.source in ("jellyfin", "emby", "plex"):
            payload["server"] = event.server  # see ids.same_server, Enricher._elsewhere
        if event.genres:  # a sign of anime no dataset knows yet (deliver.anilist.likely_anime)
            payload["genres"] = list(event.genres)
        if event.companion and (first := event.companion_of) is not None and first.ids:
            # Its file's first episode: Trakt's search for it names the show.
            payload["companion_of"] = {"ids": first.ids.present(), "number": first.number}
        if intent.kind == "watching":
            payload |= {"scrobble_action": intent.action, "progress": intent.progress}
        elif intent.kind == "play":
            payload |= {"progress": intent.progress, "live": intent.live}
            if event.duration_ms:  # how close a rewatch may be (deliver.trakt)
                payload["duration"] = event.duration_ms / 1000
        elif intent.kind == "rating":
            payload |= {"rating": intent.rating}
        for target in targets:
            if intent.kind == "watching" and target not in LIVE_TARGETS:
                continue
            rows.append(
                NewOutboxRow(
                    target=target,
                    profile=profile,
                    action=intent.kind,
                    payload=payload,
                    ordering_key=ordering_key(profile, target, order_key, intent.kind),
                    idempotency_key=f"{profile}:{target}:{intent.key}",
                    supersedes=("watching",) if _ends_live_state(intent) else (),
                )
            )
    return rows


def _ends_live_state(intent: Intent) -> bool:
    """A newer live state, or a play of the viewing it showed, makes pending ones moot."""
    return intent.kind == "watching" or (intent.kind == "play" and not intent.earlier)


def secret_ok(supplied: str | bytes | None, expected: str) -> bool:
    """The secret from the URL (text) or the header (bytes: UTF-8, or latin-1 as Python's
    http.client sends text headers), compared in constant time."""
    if not supplied or not expected:
        return False
    if isinstance(supplied, str):
        return hmac.compare_digest(supplied.encode(), expected.encode())
    forms = [expected.encode()]
    with contextlib.suppress(UnicodeEncodeError):
        forms.append(expected.encode("latin-1"))
    return any([hmac.compare_digest(supplied, form) for form in forms])


QUERY_SECRET_NAMES = frozenset({"secret", "token"})


def _unauthorized_reason(
    query: bytes, source: str, sent: bool, app: HomeAssistantApp | None = None
) -> str:
    """Why a webhook's secret was refused (`sent`: one came in the path or the header): where
    the secret goes when it came as a query parameter (never its value: media servers log
    answers), and where Tautulli takes it from when it sent none; as the Home Assistant
    `app`, where its user set the secret (no terminal to run `webhook-urls` in)."""
    see = "see `watchbridge webhook-urls`"
    if app is not None:
        see = "the app's webhook_secret option" if app.options_form else "server.webhook_secret"
    names = {name.casefold() for name, _ in parse_qsl(query.decode("latin-1"), True)}
    if names & QUERY_SECRET_NAMES:
        return (
            "the webhook secret goes in the URL's path (/webhooks/SOURCE/SECRET) or an "
            f"X-Webhook-Secret header, not in a query parameter ({see})"
        )
    if source == "tautulli" and not sent:
        # Each trigger has its own JSON Headers box, empty until filled in.
        return (
            "no webhook secret: Tautulli sends the X-Webhook-Secret header from each trigger's "
            "own JSON Headers box; fill in the boxes of every ticked trigger (docs/webhooks.md) "
            f"or put the secret in the URL's path ({see})"
        )
    return f"missing or wrong webhook secret ({see})"


# --------------------------------------------------------------------------- route
#
# The webhook route is a plain ASGI handler mounted at /webhooks: media servers post in bursts
# and every acknowledgement waits for a disk sync, so the request path does only what the
# contract needs (no signature model, dependency injection or response objects per request).


class _ClientGone(Exception):
    pass


def _json(status: int, document: dict[str, Any]) -> tuple[int, bytes]:
    return status, msgspec.json.encode(document)


# A 503's: a full disk freed, a lock let go, takes about this long.
RETRY_AFTER_SECONDS = 60
RETRY_AFTER = (b"retry-after", b"%d" % RETRY_AFTER_SECONDS)
_NOT_FOUND = _json(404, {"error": "Not Found", "status": 404})
# Mostly a browser opening a pasted URL to see whether it works: say what would.
_NOT_ALLOWED = _json(
    405,
    {
        "error": "Method Not Allowed: media servers POST webhooks to this URL, a browser's GET"
        " is none; to check the URL, play something (or send Emby's or Tautulli's test"
        " notification; Jellyfin's webhook plugin has none) and look at the status page: its"
        " last webhook, or why one was refused",
        "status": 405,
    },
)
_INTERNAL_ERROR = _json(500, {"error": "internal error, see the watchbridge log", "status": 500})


async def _send(send: Send, answer: tuple[int, bytes], extra: Sequence[Any] = ()) -> None:
    status, body = answer
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *extra]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(
    receive: Receive,
    declared: bytes | None,
    limit: int,
    idle: float = BODY_IDLE_TIMEOUT,
    multipart_type: str | None = None,
) -> tuple[bytes, int]:
    """The request's body, and how many bytes of it were read and thrown away (0: none).

    A body past `limit` is TooLarge, unless `multipart_type` (its Content-Type) is given and
    its first `limit` bytes hold its whole payload part: then that beginning is the body, and
    the rest (Plex's poster) is read as it comes and dropped, up to PAYLOAD_BODY_CAP.
    Stalled when `idle` seconds pass without more of it, or when it comes too slowly (see
    BODY_MIN_RATE)."""
    cap = limit if multipart_type is None else max(limit, PAYLOAD_BODY_CAP)
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _too_large(limit, cap)
    chunks, size, kept = [], 0, None
    loop = asyncio.get_running_loop()
    grace, rate = BODY_GRACE, BODY_MIN_RATE
    began = loop.time()
    slow = grace < idle  # whether the deadline set is the one for the whole body
    try:
        # One timeout for the whole read, pushed back at each chunk (no task per receive):
        # `idle` after the chunk, or the whole body's deadline if that comes first.
        async with asyncio.timeout_at(began + min(idle, grace)) as deadline:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise _ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= limit:
                    chunks.append(chunk)
                elif kept is None:
                    kept = _payload_head(b"".join([*chunks, chunk]), limit, multipart_type)
                    chunks = []
                elif size > cap:
                    raise _too_large(limit, cap)
                if not message.get("more_body", False):
                    if kept is not None:
                        return kept, size - len(kept)
                    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), 0
                idle_at, whole_at = loop.time() + idle, began + grace + size / rate
                slow = whole_at < idle_at
                deadline.reschedule(whole_at if slow else idle_at)
    except TimeoutError:
        if slow:
            raise Stalled(
                f"its body came too slowly ({size} bytes in {loop.time() - began:.0f} s; a "
                f"body may take {grace:.0f} s and 1 s more per {rate / 1024:g} KiB)"
            ) from None
        raise Stalled(f"its body stopped coming midway (nothing for {idle:.0f} s)") from None


def _payload_head(head: bytes, limit: int, multipart_type: str | None) -> bytes:
    """The beginning of a body past `limit` that holds its whole payload part within `limit`
    bytes (see `_read_body`), else TooLarge."""
    if multipart_type is None:
        raise _too_large(limit, limit)
    end = payload_head(head, multipart_type)
    if end is None or end > limit:
        # Only the payload part is held to the limit (a poster after it is dropped): this
        # limit is the one to raise, should the sender's payload parts be that large.
        raise TooLarge(
            "payload part (with what came before it) larger than server.max_webhook_bytes "
            f"({limit} bytes); only what comes after the payload part may go past it"
        )
    return head[:end]


def _too_large(limit: int, cap: int) -> TooLarge:
    """A body past `limit`, or, for a body whose payload part alone is held to `limit`, past
    `cap` (PAYLOAD_BODY_CAP)."""
    if cap == limit:
        return TooLarge(f"body larger than server.max_webhook_bytes ({limit} bytes)")
    return TooLarge(
        f"body larger than {cap // (1024 * 1024)} MiB, the most read of a webhook whose payload"
        " part comes within server.max_webhook_bytes: no poster is that large"
    )


def _dropped(runtime: Runtime, source: str, dropped: int, limit: int) -> None:
    """Count the bytes of a body read past the limit and thrown away after its payload part."""
    runtime.metrics.webhook_dropped_bytes.labels(source).inc(dropped)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "webhook body past server.max_webhook_bytes: kept its payload part, dropped the rest",
            extra={"source": source, "dropped_bytes": dropped, "max_webhook_bytes": limit},
        )


def _count(runtime: Runtime, source: str, outcome: str, started: float) -> None:
    seconds = time.monotonic() - started
    runtime.metrics.webhook_answered(source, outcome, seconds)
    if log.isEnabledFor(logging.DEBUG):  # one line per webhook at `logging.level: debug`
        log.debug("webhook", extra={"source": source, "outcome": outcome, "ms": seconds * 1000})


def _tested(runtime: Runtime, source: str) -> None:
    """A media server's test button: no play, but the proof that its URL and secret work,
    told where the user looks after pressing it (the log, the status page's Webhooks)."""
    runtime.last_webhooks.tested(source, runtime.clock())
    log.info(
        "webhook test notification received: the URL and secret work",
        extra={"source": source},
    )


async def _answer(
    runtime: Runtime,
    send: Send,
    source: str,
    outcome: str,
    status: int,
    started: float,
    headers: Sequence[tuple[bytes, bytes]] = (),
    fault: StorageFault | None = None,
    **body: Any,
) -> None:
    _count(runtime, source, outcome, started)
    await _send(send, _json(status, {"status": outcome, **body}), headers)
    if outcome in REFUSALS:
        _refused(runtime, source, outcome, status, str(body.get("error", "")), fault)


def _refused(
    runtime: Runtime,
    source: str,
    outcome: str,
    status: int,
    reason: str,
    fault: StorageFault | None = None,
) -> None:
    """Note a refused webhook (`reason`: our own one-line message; `fault`: the disk's, when
    the database could not take it) on the status, in the log (once in a while:
    runtime.refused) and as an alert."""
    # Not runtime.clock: the internal-error path must survive its bugs.
    untold = runtime.refused.saw(source, outcome, status, reason, time.time())
    if untold is not None:
        fix = refusal_fix(outcome, runtime.home_assistant)
        extra = {"source": source, "status": status, "reason": reason, "fix": fix}
        if untold:
            extra["more_refused_since_last_line"] = untold
        log.warning("webhook refused", extra=extra)
    elif log.isEnabledFor(logging.DEBUG):
        log.debug("webhook refused", extra={"source": source, "reason": reason})
    if fault is not None and runtime.notifier.sends(STORAGE_ALERT):
        runtime.storage_refused.saw(source, time.time())  # told by the storage alert's texts
        if not storagewatch.told_by_storage(runtime):
            _in_background(_alert_refused_unless_storage(runtime, source, outcome, reason))
        return
    _alert_refused(runtime, source, outcome, reason)


async def _alert_refused_unless_storage(
    runtime: Runtime, source: str, outcome: str, reason: str
) -> None:
    """A webhook refused for the disk's fault before the `storage` alert is out: told by that
    alert alone if the storage watch's write finds the fault too and the alert gets through
    (its text says which webhooks, how many, what they cost); else by its own
    `webhook_rejects` alert, as any refusal (the watch's small write may work where the
    webhook's failed, or the fault be over already)."""
    await storagewatch.checked(runtime)
    if not storagewatch.told_by_storage(runtime):
        _alert_refused(runtime, source, outcome, reason)


_alerting: set[asyncio.Task[object]] = set()  # alerts being sent (and more), referenced until done


def _alert_refused(runtime: Runtime, source: str, outcome: str, reason: str) -> None:
    """Raise a `webhook_rejects` alert (throttled per source and outcome) after answering."""
    name = service_title(source)
    title = f"watchbridge is refusing {name} webhooks"
    fix = refusal_fix(outcome, runtime.home_assistant)
    caught_up = source in runtime.refused.caught_up
    article = "An" if name[:1] in "AEIOU" else "A"
    body = (
        f"{article} {name} webhook was refused: {reason}. {fix} {sentence(lost(source, caught_up))}"
    )
    key = f"{source}:{outcome}"
    _refused_at[key] = time.monotonic()  # not runtime.clock: this path must survive its bugs
    _after_answering(runtime.notifier.notify("webhook_rejects", title, body, key=key))


def _after_answering(alert: Coroutine[Any, Any, str]) -> None:
    """Send an alert in the background, kept referenced until it is sent."""
    _in_background(alert)


def _in_background(work: Coroutine[Any, Any, object]) -> None:
    """Run `work` in the background, kept referenced until it is done."""
    task = asyncio.get_running_loop().create_task(work)
    _alerting.add(task)
    task.add_done_callback(_alerting.discard)


# The `webhook_rejects` keys of each source, when each was last refused, and those with a
# "Resolved" notice being sent.
_REFUSAL_KEYS = {source: tuple(f"{source}:{outcome}" for outcome in REFUSALS) for source in SOURCES}
_refused_at: dict[str, float] = {}
_resolving: dict[str, asyncio.Task[str]] = {}
# When a refusal is over (see refused.OVER_AFTER: the status page uses the same), for the alert.
REFUSALS_OVER_AFTER = OVER_AFTER


def _resolve_refused(runtime: Runtime, source: str) -> None:
    """A webhook of `source` was accepted: resolve its `webhook_rejects` alerts after answering,
    unless one was refused within REFUSALS_OVER_AFTER.

    On the hot path: a few lookups in memory unless a refusal alert is open."""
    notifier = runtime.notifier
    for key in _REFUSAL_KEYS[source]:
        if not notifier.raised("webhook_rejects", key) or notifier.unsent("webhook_rejects", key):
            continue  # nothing to resolve, or its alert not out yet: webhooks (plays) were
            # refused, which stays worth telling; it goes out first (`Notifier.send_unsent`)
        if time.monotonic() - _refused_at.get(key, -REFUSALS_OVER_AFTER) < REFUSALS_OVER_AFTER:
            continue  # refused moments ago: another server of this source may still be
        if key in _resolving and not _resolving[key].done():
            continue  # already on its way
        earlier = lost_earlier(source, source in runtime.refused.caught_up)
        body = f"watchbridge takes {service_title(source)} webhooks again; {earlier}."
        task = asyncio.get_running_loop().create_task(
            notifier.resolve("webhook_rejects", body, key=key)
        )
        _resolving[key] = task  # also keeps it referenced until it finishes


_resolving_stopped: dict[str, asyncio.Task[str]] = {}


def _resolve_stopped(runtime: Runtime, server: str, source: str = "plex") -> None:
    """A webhook from `server` (a Plex server's, or Tautulli's naming it; a Jellyfin or Emby
    server's) was accepted: resolve its `webhooks_stopped` alert (a Plex link, or the
    catch-up, found its plays without webhooks) after answering. On the hot path: a lookup in
    memory unless that alert is open."""
    key = webhookwatch.alert_key(source, server)
    if not server or not runtime.notifier.raised(webhookwatch.ALERT_KIND, key):
        return
    if key in _resolving_stopped and not _resolving_stopped[key].done():
        return  # already on its way
    _resolving_stopped[key] = asyncio.get_running_loop().create_task(
        runtime.notifier.resolve(webhookwatch.ALERT_KIND, webhookwatch.resolved(source), key=key)
    )


def _plex_sends(runtime: Runtime, server: str) -> bool:
    """Whether Plex's own webhook is seen sending `server`'s plays ("": any server's): one
    came within forplex.LOOKBACK (it tells of a playback as it begins, before Tautulli's
    stop). In memory."""
    last = (
        runtime.last_webhooks.of_server("plex", server)
        if server
        else runtime.last_webhooks.by_source().get("plex")
    )
    return last is not None and runtime.clock() - last <= forplex.LOOKBACK


_TAUTULLI_NOT_COUNTED = Repeating(log, every=LOG_EVERY)


async def _count_tautulli_reports(runtime: Runtime, counted: tautulliwatched.Reports) -> None:
    """Count a Tautulli webhook that records nothing else (tautulliwatched.py): one upsert,
    off the loop. Answered all the same should it fail."""
    try:
        await in_thread(runtime.store.count_tautulli_reports, counted, runtime.clock())
    except (sqlite3.Error, StoreError) as exc:
        _TAUTULLI_NOT_COUNTED.warning(
            "tautulli",
            "could not count Tautulli's stop or Watched (answered all the same)",
            time.monotonic(),
            error=_one_line(exc),
        )


def _resolve_no_watched(runtime: Runtime, counted: tautulliwatched.Reports) -> None:
    """A Watched came from Tautulli: resolve its server's alert that none did
    (tautulliwatched.py) after answering. In memory unless that alert is open."""
    key = tautulliwatched.KEY_PREFIX + counted.server
    if not runtime.notifier.raised(tautulliwatched.ALERT_KIND, key):
        return
    if key in _resolving_stopped and not _resolving_stopped[key].done():
        return  # already on its way
    said = tautulliwatched.watched_now(counted.server, counted.name)
    _resolving_stopped[key] = asyncio.get_running_loop().create_task(
        runtime.notifier.resolve(tautulliwatched.ALERT_KIND, said, key=key)
    )


def _one_line(exc: Exception) -> str:
    return clipped(str(exc), 200) or type(exc).__name__


@asgi("/webhooks", is_mount=True, copy_scope=False, opt={BEFORE_ROUTER: True})
async def webhooks_app(scope: Scope, receive: Receive, send: Send) -> None:
    """`POST /webhooks/{source}` and `POST /webhooks/{source}/{secret}`.

    Served before Litestar's router (see app.App), so it answers its own errors."""
    if scope["type"] != ScopeType.HTTP:
        return  # no websockets here: closing is the answer
    # The mount gives the rest of the normalised path, with a trailing slash.
    rest = scope["path"]
    segments = rest.strip("/").split("/") if rest.startswith("/") else []
    if not 1 <= len(segments) <= 2 or not segments[0]:
        await _send(send, _NOT_FOUND)
        if scope["method"] == "POST":
            _tell_no_webhook_url()
        return
    if scope["method"] != "POST":
        await _send(send, _NOT_ALLOWED, [(b"allow", b"POST")])
        return
    runtime: Runtime = scope["litestar_app"].state.runtime
    try:
        await _webhook(runtime, scope, receive, send, *segments)
    except _ClientGone:
        return  # nothing was acknowledged, nothing to answer
    except Exception as exc:
        # The path may hold the secret: name only the source.
        log.exception("unexpected error", extra={"path": f"/webhooks/{segments[0]}"})
        with contextlib.suppress(Exception):  # the answer may have started already
            await _send(send, _INTERNAL_ERROR)
        source = segments[0] if segments[0] in SOURCES else "unknown"
        runtime.metrics.webhook_events.labels(source, "internal_error").inc()
        _refused(runtime, source, "internal_error", 500, f"internal error ({type(exc).__name__})")


# A POST under /webhooks/ that names no webhook URL: once, then once per LOG_EVERY with how
# many came since (the path is never logged: it may hold the secret).
_NO_WEBHOOK_URL = Repeating(log, every=LOG_EVERY)


def _tell_no_webhook_url() -> None:
    """Log a POST under /webhooks/ that names no webhook URL: a source mistyped in the pasted
    URL, or a segment added after the secret. Media servers do not send it again, so each is
    a play lost; the answer's 404 is all the sender sees."""
    _NO_WEBHOOK_URL.warning(
        "no-webhook-url",
        "a webhook was posted to no webhook URL of watchbridge (404; the path is not shown: it"
        " may hold the secret), so its play is lost: the URL is /webhooks/SOURCE/SECRET, with"
        f" SOURCE one of {', '.join(SOURCES)}; paste the URL `watchbridge webhook-urls` prints",
        time.monotonic(),
        status=404,
    )


async def _webhook(
    runtime: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    source: str,
    secret: str | None = None,
) -> None:
    started = time.monotonic()
    if source not in SOURCES:
        await _answer(
            runtime,
            send,
            "unknown",
            "unknown_source",
            404,
            started,
            # Not the segment itself: a URL with the source left out has the secret there.
            error=f"unknown webhook source; use one of {', '.join(SOURCES)}",
        )
        _tell_no_webhook_url()
        return
    content_type, declared, header_secret = "", None, None
    for header, value in scope["headers"]:
        if header == b"content-type" and not content_type:
            content_type = value.decode("latin-1")
        elif header == b"content-length" and declared is None:
            declared = value
        elif header == SECRET_HEADER_BYTES and header_secret is None:
            header_secret = value.strip()  # Tautulli sends a pasted trailing space as is
    # A space or line break pasted with the URL arrives decoded (`%20`): no secret has one
    # around it (the config refuses that), so it is the paste's, as in the header.
    if not secret_ok((secret or "").strip() or header_secret, runtime.webhook_secret):
        sent = bool(secret or header_secret)
        reason = _unauthorized_reason(scope["query_string"], source, sent, runtime.home_assistant)
        await _answer(runtime, send, source, "unauthorized", 401, started, error=reason)
        return
    limit = runtime.config.server.max_webhook_bytes
    try:
        # Plex never sends a webhook again: a poster past the limit must not lose the play.
        keeps_payload = content_type if source == "plex" else None
        body, dropped = await _read_body(receive, declared, limit, BODY_IDLE_TIMEOUT, keeps_payload)
    except Stalled as stalled:
        await _answer(runtime, send, source, "stalled", 408, started, error=str(stalled))
        return
    except TooLarge as too_large:
        await _answer(runtime, send, source, "too_large", 413, started, error=str(too_large))
        return
    if dropped:
        _dropped(runtime, source, dropped, limit)
    result = parse(source, body, content_type)
    del body  # a 30 KB thumb need not live until the disk sync
    if isinstance(result, Ignored):
        if result.reason == TEST_EVENT:
            _tested(runtime, source)
        await _answer(
            runtime, send, source, f"ignored_{result.reason}", 200, started, reason=result.reason
        )
        return
    zone_learnt: tuple[str, generic.Reading] | None = None
    if isinstance(result, Accepted) and source == "generic":
        try:
            result, zone_learnt = await _generic_dated(runtime, result)
        except (sqlite3.Error, StoreError) as exc:
            said = "could not read the time zone this sender writes from the database"
            await _store_failed(runtime, send, source, started, exc, said)
            return
    if not isinstance(result, Accepted):
        await _answer(runtime, send, source, "malformed", 400, started, error=result.reason)
        return
    unmapped = sent_by = 0
    unmapped_played = False
    for_plex: list[ForPlex] = []  # Tautulli's plays of people listed for Plex's webhook
    known, names = runtime.account_ids.known, runtime.account_ids.names
    taken: list[tuple[MediaEvent, str, str]] = []  # each event its route takes: profile, server
    learnt: list[tuple[Key, Learnt]] = []
    jobs: list[IngestJob] = []
    # An event the default profile takes for want of an entry, and that profile.
    defaulted: tuple[MediaEvent, str] | None = None
    defaulted_played = False
    counts: list[tautulliwatched.Reports] = []  # Tautulli's stops and Watched, for its server
    for event in result.events:
        route = route_for(runtime.config, event, known, names)
        if source == "tautulli":
            carried = route.profile is not None or (
                route.sent_by == "plex" and not _plex_sends(runtime, event.server)
            )
            if (count := tautulliwatched.counted(event, carried)) is not None:
                counts.append(count)
        if route.defaulted and route.profile is not None:
            defaulted = defaulted or (event, route.profile)
            defaulted_played = defaulted_played or event.played
        if route.renamed is not None or route.new_id is not None or route.twice is not None:
            _account_seen(runtime, route)
        name = route.profile
        if name is None:
            if route.sent_by == "plex" and (kept := _for_plex(runtime, event, result)):
                for_plex.append(kept)
            sent_by += bool(route.sent_by)
            unmapped += not route.sent_by
            unmapped_played = unmapped_played or (not route.sent_by and event.played)
            continue
        server = _plex_server(runtime, name, event)
        learn = route.learn
        if learn in learnt:  # a file's further episodes: the same account, learnt once
            learn = None
        elif learn is not None:
            learnt.append(learn)
        jobs.append(ingest_job(runtime, name, event, result.document, learn, server))
        taken.append((event, name, server))
    if (
        source == "generic"
        and unmapped == len(result.events)
        and result.events[0].account == Account()
    ):
        await _answer(runtime, send, source, "malformed", 400, started, error=generic.NO_USER)
        return
    # Only Tautulli's webhooks count (`counts`): no other reads its server's name here.
    counted = (
        tautulliwatched.merged(counts, server_name(source, result.document)) if counts else None
    )
    if counted is not None and jobs:  # counted in the same write
        jobs[0] = dataclasses.replace(jobs[0], tautulli_reports=counted)
    # The server's own name for the status (lastwebhooks.py), when new to this process: noted
    # in the same write, no statement of its own.
    sent_from, named = result.events[0].server, server_name(source, result.document)
    if jobs and runtime.last_webhooks.named(source, sent_from, named):
        jobs[0] = dataclasses.replace(jobs[0], server_named=(sent_from, named))
    try:
        # All or none: a webhook refused halfway and sent again would record its first
        # events twice.
        queued = await runtime.writer.write_all(jobs) if jobs else 0
        if for_plex:  # kept before the answer: taken should Plex's webhook not send them
            await in_thread(runtime.store.keep_for_plex, for_plex, None if jobs else counted)
    except (sqlite3.Error, StoreError) as exc:
        if jobs and jobs[0].server_named is not None:  # noted with the next webhook then
            runtime.last_webhooks.forget_name(source, sent_from)
        await _store_failed(runtime, send, source, started, exc, "could not store the event")
        return
    if counted is not None and not jobs and not for_plex:
        await _count_tautulli_reports(runtime, counted)
    if counted is not None and counted.watched:
        _resolve_no_watched(runtime, counted)
    for learn in learnt:  # stored with the events (a 503: learnt when sent again)
        runtime.account_ids.learn(*learn)
    if zone_learnt is not None and jobs:
        await _learn_zone(runtime, *zone_learnt)
    if jobs:  # as the events stored say it (Store.last_webhooks), in memory: no SQL here
        runtime.last_webhooks.saw(source, result.events[0].server, jobs[0].now)
    for event, name, server in taken:
        item = event.item.source_key or ""
        viewing = Viewing(name, server, event.player, item, event.player_name)
        doubling = runtime.senders.saw(event.source, viewing, runtime.clock())
        if doubling is not None:
            _tell_doubling(runtime, doubling)
    if unmapped:  # one webhook, however many episodes its file holds
        _unmapped(runtime, result.events[0])
        await _remember_unlisted(runtime, result.events[0], unmapped_played, result.document)
    if unmapped + sent_by == len(result.events):
        other: Source = "tautulli" if source == "plex" else "plex"
        outcome, reason = (
            ("ignored_unmapped_account", "this media-server account is not mapped to any profile")
            if unmapped
            else (f"ignored_sent_by_{other}", SENT_BY_PLEX_KEPT if for_plex else SENT_BY[other])
        )
        await _answer(runtime, send, source, outcome, 200, started, reason=reason)
        return
    if queued:
        for wake in runtime.on_enqueued:
            wake()
    _count(runtime, source, "accepted", started)
    await _send(send, _json(202, {"status": "accepted", "queued": queued}))
    if runtime.refused.seen:
        runtime.refused.taken(source, time.time())
    _resolve_refused(runtime, source)
    if source in (*webhookwatch.SENDERS, "jellyfin", "emby") and jobs:
        _resolve_stopped(runtime, result.events[0].server, source)
    if defaulted is not None:  # after answering: its sender need not wait for it
        first, to = defaulted
        await _remember_defaulted(runtime, first, to, defaulted_played, result.document)


async def _store_failed(
    runtime: Runtime, send: Send, source: str, started: float, exc: Exception, what: str
) -> None:
    """Answer a webhook the database failed: 503, not 500: the request was fine and nothing
    was acknowledged. Retry-After for the senders that try again (a generic one, a proxy's
    queue)."""
    fault = runtime.storage_trouble(exc)
    said = f" ({_one_line(exc)})" + (f": {fault.problem}" if fault is not None else "")
    await _answer(
        runtime,
        send,
        source,
        "store_error",
        503,
        started,
        (RETRY_AFTER,),
        fault,
        error=f"{what}{said}",
    )


# The cursor (service generic, no profile) that keeps, per sender, which zone its
# `watched_at` without one is in (generic.Reading), learnt from its posts near now.
ZONE_CURSOR = "zone_less"


async def _generic_dated(
    runtime: Runtime, result: Accepted
) -> tuple[Accepted | Rejected, tuple[str, generic.Reading] | None]:
    """A generic webhook dated against the clock (generic.dated), a `watched_at` without its
    zone in the one its sender was seen to write; with what it teaches of that (the sender
    and its reading) when that is new, to keep once the events are stored."""
    now = runtime.clock()
    sender = generic.zone_sender(result)
    if sender is None:
        return generic.dated(result, now), None
    name = f"{ZONE_CURSOR}:{sender}"
    stored = await in_thread(runtime.store.get_cursor, "generic", "", name)
    learned = generic.learned_from(stored, tz_name())
    checked, seen = generic.dated_and_taught(result, now, learned)
    learn = generic.to_learn(learned, seen)
    return checked, (None if learn is None else (sender, learn))


async def _learn_zone(runtime: Runtime, sender: str, reading: generic.Reading) -> None:
    """Keep which zone `sender` writes its `watched_at` without one in, and log it (once per
    sender, and again should it change). Not kept (the database failing since the events
    were stored): learnt at its next post near now."""
    name = f"{ZONE_CURSOR}:{sender}"
    value = generic.kept(reading, tz_name())
    try:
        await in_thread(runtime.store.set_cursor, "generic", "", name, value, runtime.clock())
    except (sqlite3.Error, StoreError):
        return
    log.info(
        generic.learned_line(reading, sender, tz_name() or "TZ not set"),
        extra={"source": "generic"},
    )


def _for_plex(runtime: Runtime, event: MediaEvent, result: Accepted) -> ForPlex | None:
    """Tautulli's report of a play of a person a profile lists for Plex's own webhook, to keep
    for that profile (forplex.py): its Watched, or a stop at or past that profile's
    completion_threshold (a Tautulli without its Watched trigger ticked, or whose watched
    percent is above where they stopped, sends no Watched); None for any other report, or one
    of no item or no such profile (the owner, known by Plex's webhook naming them)."""
    if event.source != "tautulli" or not (event.played or event.action == "stop"):
        return None
    item = event.item.source_key
    if not item or result.document is None:
        return None
    config, ids = runtime.config, runtime.account_ids
    route = route_for(config, dataclasses.replace(event, source="plex"), ids.known, ids.names)
    if route.profile is None or route.defaulted:
        return None
    if not event.played and not forplex.completes(event, config.profiles[route.profile]):
        return None
    account = event.account
    return ForPlex(
        id=0,
        profile=route.profile,
        server=event.server or runtime.plex_servers.only(route.profile),
        account=account_key(account.id, account.name),
        account_id=account.id or "",
        name=account.name or "",
        item=item,
        received_at=runtime.clock(),
        body=msgspec.json.encode(result.document).decode(),
    )


def _plex_history_read(runtime: Runtime, profile: str, server: str) -> bool:
    """Whether a Plex link reads `profile`'s history from `server` (one it has not read yet:
    any). Only there is a scrobble dated by its `lastViewedAt` (playback.reported_late): the
    link would pair it with its history row, and should that `lastViewedAt` be an earlier
    view, the link's read of the new one still brings it; with no link that reading would
    take a rewatch for its earlier view, lost."""
    config = runtime.config
    linked = any(
        "plex" in link.services
        and "history" in link.kinds
        and profile in link_profiles(config, link)
        for link in config.links.values()
    )
    read = runtime.linked_plex_servers.get(profile)
    return linked and (read is None or not server or read == server)


def _plex_server(runtime: Runtime, profile: str, event: MediaEvent) -> str:
    """The server the event names (a Plex webhook's is noted as one of the profile's); for a
    Tautulli template that names none, the profile's one Plex server where that is sure
    (a Tautulli watches one server): its reports then pair with Plex's webhook's."""
    if event.source == "plex":
        runtime.plex_servers.knew(profile, event.server)
    elif event.source == "tautulli" and not event.server:
        return runtime.plex_servers.only(profile)
    return event.server


def _account_seen(runtime: Runtime, route: Route) -> None:
    """Tell of an event that went by a remembered id or name, or of an account two profiles
    list (the log once per start, and its alert then; the status)."""
    now = runtime.clock()
    renamed = route.renamed
    if renamed is not None and runtime.account_ids.saw(renamed, now):
        log.warning(
            renamed.message,
            extra={"source": renamed.key.source, "profile": renamed.learnt.profile},
        )
    new_id = route.new_id
    if new_id is not None and runtime.account_ids.saw_new_id(new_id, now):
        log.warning(
            new_id.message,
            extra={"source": new_id.key.source, "profile": new_id.learnt.profile},
        )
    twice = route.twice
    if twice is not None and runtime.account_ids.saw_twice(twice, now):
        log.warning(twice.message, extra={"source": twice.source, "profile": twice.profile})
        alert = runtime.notifier.notify(ACCOUNT_ALERT, twice.title, twice.alert_body, key=twice.key)
        _after_answering(alert)


def _unmapped(runtime: Runtime, event: MediaEvent) -> None:
    """Note a webhook of an account no profile lists (the status shows it; logged once)."""
    account = account_label(event.account.name, event.account.id)
    if runtime.unmapped.saw(event.source, event.server, account, runtime.clock()):
        log.info(
            "webhooks of an account no profile lists are ignored",
            extra={
                "source": event.source,
                "account": account,
                "fix": unmapped_fix(event.source, account),
            },
        )


_UNLISTED_NOT_NOTED = Repeating(log, every=LOG_EVERY)


async def _remember_unlisted(
    runtime: Runtime, event: MediaEvent, played: bool, document: Mapping[str, object] | None
) -> None:
    """Count a webhook of an account no profile lists in the database (unlisted.py): one
    upsert, off the loop. An ignored webhook is answered all the same should it fail."""
    account = event.account
    now = runtime.clock()
    seen = Unlisted(
        source=event.source,
        server=event.server,
        account=account_key(account.id, account.name),
        account_id=account.id or "",
        name=account.name or "",
        server_name=server_name(event.source, document),
        first_at=now,
        last_at=now,
        webhooks=1,
        plays=int(played),
    )
    try:
        await in_thread(runtime.store.saw_unlisted, seen, played)
    except (sqlite3.Error, StoreError) as exc:
        # Once in a while: a friend's Jellyfin reports progress every few seconds, and a full
        # disk or a long lock lasts (the storage alert tells of those).
        _UNLISTED_NOT_NOTED.warning(
            "unlisted",
            "could not note an unlisted account's webhook (answered all the same)",
            time.monotonic(),
            error=_one_line(exc),
        )


_DEFAULTED_NOT_NOTED = Repeating(log, every=LOG_EVERY)


async def _remember_defaulted(
    runtime: Runtime,
    event: MediaEvent,
    profile: str,
    played: bool,
    document: Mapping[str, object] | None,
) -> None:
    """Note in the database an account whose webhook the default profile took for want of an
    entry (defaulted.py): its first webhook in this process, then at most hourly."""
    account = event.account
    key = (event.source, event.server, account_key(account.id, account.name))
    now = runtime.clock()
    counted = runtime.defaulted.saw(key, played, now)
    if counted is None:
        return
    seen = Unlisted(
        source=event.source,
        server=event.server,
        account=key[2],
        account_id=account.id or "",
        name=account.name or "",
        server_name=server_name(event.source, document),
        first_at=now,
        last_at=now,
        webhooks=counted[0],
        plays=counted[1],
        default_profile=profile,
    )
    try:
        await in_thread(runtime.store.saw_defaulted, seen)
    except (sqlite3.Error, StoreError) as exc:
        runtime.defaulted.failed(key)
        _DEFAULTED_NOT_NOTED.warning(
            "defaulted",
            "could not note an account the default profile takes (its play is stored)",
            time.monotonic(),
            error=_one_line(exc),
        )


def doubling_title(profile: str) -> str:
    """The `reported_twice` alert's title: one per profile, so it names the profile."""
    return f"watchbridge: both Plex and Tautulli report profile {profile}'s plays"


def doubling_alert(doubling: Doubling, targets: Sequence[str]) -> str:
    """The `reported_twice` alert's text of `doubling` (counted twice), for a profile whose
    plays go to `targets`: where each play goes twice and what to change first, as a phone
    shows the first lines; then what was seen (its log and status words). Pure."""
    counted = [service_title(target) for target in targets if target in COUNTED_TWICE_ON]
    where = " and ".join(counted)
    goes = f"goes to {where} twice" if counted else "counts twice"
    keep_both = (
        f"add {doubling.lacks} to Tautulli's JSON Data box of each trigger (the template of"
        " docs/webhooks.md has it)"
        if doubling.lacks
        else "paste the Tautulli template of docs/webhooks.md, which names the server and the"
        " player"
    )
    lead = (
        f"Each play of profile {doubling.profile} {goes}, minutes apart: Plex's and Tautulli's"
        " webhooks both report it, and watchbridge cannot pair their reports. Remove"
        f" Tautulli's webhook or Plex's for that server; or, to keep both, {keep_both}."
    )
    seen = doubling.message[:1].upper() + doubling.message[1:]
    removed = f" The plays counted twice meanwhile can be removed on {where}." if counted else ""
    return f"{lead}\n\n{seen}.{removed}"


# The services a viewing reported twice, unpaired, reaches twice: AniList takes the second
# play of an episode its progress already holds as "already counted".
COUNTED_TWICE_ON = ("trakt", "serializd")


def _tell_doubling(runtime: Runtime, doubling: Doubling) -> None:
    """Log (once in a while; the status shows it too) that both Plex's and Tautulli's
    webhooks report one server's plays to a profile, and alert (`reported_twice`, after
    answering; throttled by the notifier) when their reports cannot be matched, so that each
    viewing counts twice. Matched, each counts once: nothing needs a hand, an alert would be
    noise every household with both senders gets."""
    if runtime.senders.log_due(doubling, runtime.clock()):
        extra = {"profile": doubling.profile, "server": doubling.server, "fix": doubling.fix}
        if doubling.counted_twice:
            log.warning(doubling.message, extra=extra)
        else:
            log.info(doubling.message, extra=extra)
    if not doubling.counted_twice:
        return
    # One condition per profile: a key per server the webhooks name would let a sender naming
    # a new one each time raise an alert apiece, each kept open (none is resolved) for a year.
    key = doubling.profile
    profile = runtime.config.profiles.get(doubling.profile)
    targets = [] if profile is None else targets_for(runtime.config, profile)
    body = doubling_alert(doubling, targets)
    _after_answering(runtime.notifier.notify("reported_twice", doubling_title(key), body, key=key))


def ingest_job(
    runtime: Runtime,
    profile_name: str,
    event: MediaEvent,
    document: Mapping[str, object] | None = None,
    learnt: tuple[Key, Learnt] | None = None,
    server: str = "",
    dated: float | None = None,
    by_hand: bool = False,
) -> IngestJob:
    """What to record for one event (and the JSON it came in): the event, a pure decision
    over its session, and the account id its route learnt (`learnt`, kept with it). `server`:
    the Plex server of a Tautulli event naming none, where sure (`_plex_server`). `dated`: when
    a play no webhook told of happened, by the server's own record (catchup.py), or when
    Tautulli reported one taken in Plex's webhook's stead (forplex.py); `by_hand`: such a play
    of the catch-up's was a mark by hand, not a viewing (`catchup.by_hand`): `hand_mark`
    decides it as a webhook's mark."""
    item = ref_to_dict(event.item)
    record = event_record(event, item)
    profile = runtime.config.profiles[profile_name]
    targets = targets_for(runtime.config, profile)
    frame = runtime.clock_watch.look()
    now = runtime.clock()
    at = now
    if dated is not None:
        at, frame = dated, ""  # the server's date: no step of this clock moves it
    elif event.source == "generic" and event.occurred_at:
        # The sender's time (no step of ours moves it), never after now: a sender's clock
        # ahead by a few minutes passes the check of its time (generic.dated).
        at, frame = sent_at(event.occurred_at, now), ""
    elif event.source != "generic":
        # Media servers post as it happens; their timestamps (Plex lastViewedAt) can describe
        # an earlier viewing. Only our generic schema may carry an explicit time, and a
        # server's report of a viewing days before (`reported_late`, in `plan`) its own.
        record["occurred_at"] = None
    threshold = float(profile.completion_threshold)
    # Each worked out once: the decision and the rows would otherwise again.
    item_key = event.item.key()
    own_key = session_key(event, item_key)
    # As a link keys the item, so that a link's rows of it wait their turn behind ours.
    order_key = event.item.order_key()

    plex = event.source == "plex"
    # Looked up only for a scrobble that names a time: no other can be a late report.
    paired_by_a_link = (
        plex
        and event.played
        and event.occurred_at is not None
        and _plex_history_read(runtime, profile_name, event.server)
    )

    def plan(
        session: Session | None, marks: Session | None
    ) -> tuple[Session | None, list[NewOutboxRow]]:
        # A Plex scrobble only where a Plex link reads that history: were its lastViewedAt the
        # item's earlier view, that link reads the rewatch back.
        late = (
            reported_late(event, session, now)
            if dated is None and (paired_by_a_link or not plex)
            else None
        )
        when = at if late is None else late.at
        new_session, intents = decide(session, event, threshold, now, marks, at=when, key=own_key)
        if dated is not None and new_session is not None and new_session.state == "completed":
            # A play the catch-up found is dated when its viewing began, but had ended by the
            # read that saw it played (`now`): its end is timed from there, so that its own
            # stop, posted late, is taken for that viewing, not for one after it.
            new_session = dataclasses.replace(
                new_session, updated_at=max(new_session.updated_at, now)
            )
        rows = rows_for(profile_name, targets, event, intents, item, order_key)
        if (dated is None or by_hand) and hand_mark(event, late, session):
            for row in rows:
                if row.action == "play":
                    row.payload[HAND_MARK] = True
        if frame and (late is None or late.ours):  # a step of this clock moves `at` (clocksteps)
            for row in rows:
                row.payload["frame"] = frame
        return new_session, rows

    return IngestJob(
        source=event.source,
        kind=event.action,
        profile=profile_name,
        payload=record,
        now=now,
        session_key=own_key,
        completion_key=completion_key(event, item_key),
        marks=marks_itself(event) or remembers_rating(event),
        earlier_keys=earlier_keys(event),
        decide=plan,
        document=document,
        learnt=None if learnt is None else AccountLearnt(*learnt, KEPT, _clash_forgets(*learnt)),
        report=report_of(event, profile_name, server),
        # Only a Tautulli report taken in Plex's webhook's stead is dated (forplex.py).
        taken_at=dated if event.source == "tautulli" else None,
        progress=event.progress,
    )


_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(MediaEvent))
_ACCOUNT_FIELDS = tuple(f.name for f in dataclasses.fields(Account))


def event_record(event: MediaEvent, item: dict[str, object] | None = None) -> dict[str, Any]:
    """The event as stored: `dataclasses.asdict` with the item as `ref_to_dict` gives it.

    Written out field by field because asdict's deep copy costs more than the rest of the
    request's Python work together.
    """
    record: dict[str, Any] = {name: getattr(event, name) for name in _EVENT_FIELDS}
    record["item"] = ref_to_dict(event.item) if item is None else item
    record["account"] = {name: getattr(event.account, name) for name in _ACCOUNT_FIELDS}
    return record


ROUTES: list[Any] = [webhooks_app]
