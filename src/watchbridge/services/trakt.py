"""Trakt: a typed client with its own errors. Knows nothing of routes, the CLI or the database.

Tokens come and go through an injected `TokenStore`; the clock is injected too. Every request
goes through the shared HTTP policy (`watchbridge.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import sqlite3
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx

from watchbridge.config import Secret, TraktConfig
from watchbridge.errors import StoreError
from watchbridge.http import (
    IN_ITS_PLACE_PAUSE,
    Bucket,
    HttpClient,
    Pacer,
    ServiceError,
    Unavailable,
    changed_answer,
    earlier_try_may_have_landed,
)
from watchbridge.ingest.common import iso_time
from watchbridge.limits import DEFAULT_UPGRADE_URL, AccountLimits, LimitHit, parse_settings
from watchbridge.logs import Repeating
from watchbridge.loose import whole
from watchbridge.metrics import Metrics
from watchbridge.model import Ids, MediaRef
from watchbridge.offloop import in_thread, to_the_end
from watchbridge.redaction import clipped
from watchbridge.services.refusals import digest, note_refused, note_taken

SERVICE = "trakt"
HISTORY_BATCH = 200  # Trakt: cost grows with items per call; 100-200 is what works (§9)
UPGRADE_URL = "https://app.trakt.tv/vip"
APPS_URL = "https://app.trakt.tv/settings/apps"  # where an account's API apps are (2026)
ACCOUNT_CACHE = "trakt-account"  # a hash of an access token -> the account it signs in to
ACCOUNT_TTL = 8 * 86400.0  # past a token's life (7 days in 2026 docs): a row or two per profile
# An account (its uuid, else its slug) -> its username, for the status: a uuid tells a user
# nothing. Written when a read of the account (once per access token) finds it new or
# renamed, kept far longer.
USERNAME_CACHE = "trakt-username"
USERNAME_TTL = 400 * 86400.0


class TraktError(ServiceError):
    """Trakt refused or failed a request."""


class TraktAuthError(TraktError):
    """The sign-in for a profile is missing or no longer accepted: a human must sign in again."""


class TraktSignInRefused(TraktAuthError):
    """Trakt answered a token refresh with no (400/401: a spent or revoked refresh token, the
    app's credentials): asking again with that refresh token gets the same answer; a new
    sign-in (or a restart with corrected credentials) is needed."""


class TraktSignInUnavailable(Unavailable):
    """Trakt's sign-in host cannot renew one profile's expiring sign-in now (down, failing):
    only that profile waits; Trakt's API may serve the others."""


class TraktAccountError(TraktError):
    """420 account limit, 423 locked account, 426 VIP only, 403 app refused: no retry helps."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(SERVICE, message)
        self.status = status


class TraktLimitError(TraktAccountError):
    """420: the account's item limit for this kind is reached; `hit` holds what Trakt said."""

    def __init__(self, message: str, hit: LimitHit) -> None:
        super().__init__(message, 420)
        self.hit = hit


class TraktRefused(TraktError):
    """A sync write Trakt refused whole (400 "unparsable request", 422 "validation error",
    §2): nothing in it was written. One entry Trakt will not take refuses the request it came
    in; `answer` is what Trakt said (empty when it said nothing)."""

    def __init__(self, message: str, status: int, answer: str) -> None:
        super().__init__(SERVICE, message)
        self.status = status
        self.answer = answer


REFUSED_WHOLE = (400, 422)  # a sync write refused for what it holds, not for the account
ANSWER_CHARS = 200  # of Trakt's answer kept in a row's error


class TraktItemError(TraktError):
    """The request was about an item Trakt does not know or will not take (404, 422)."""


class TraktScrobbleInvalid(TraktItemError):
    """422 to a scrobble: Trakt's validation error (a progress it will not take, such as
    below 1 % on a stop, §2), not an item it does not know."""


class TokenStore(Protocol):
    def get_token(self, service: str, profile: str) -> dict[str, Any] | None: ...

    def put_token(
        self,
        service: str,
        profile: str,
        data: dict[str, Any],
        now: float,
        *,
        replacing: str | None = None,
    ) -> bool: ...

    def cache_get(self, namespace: str, lookup: str, now: float) -> tuple[bool, Any]: ...

    def cache_put(
        self, namespace: str, lookup: str, value: Any, now: float, ttl: float
    ) -> None: ...

    def cache_claim(
        self, namespace: str, lookup: str, value: Any, now: float, ttl: float
    ) -> bool: ...

    def cache_expires(self, namespace: str, lookup: str, now: float) -> float | None: ...


def username_of(cache: TokenStore, account: str, now: float) -> str | None:
    """The username of the Trakt `account` (its uuid, else its slug), as the last read of
    its settings found it; None when not known."""
    hit, username = cache.cache_get(USERNAME_CACHE, account, now)
    return str(username) if hit and username else None


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str
    created_at: float
    expires_in: float

    @classmethod
    def from_response(cls, data: dict[str, Any], now: float) -> TokenSet:
        """The pair Trakt just gave, its life counted from `now` by our clock: its
        `created_at` is by Trakt's, and a host clock days ahead of it (a bad RTC, time sync
        failing) would take every new pair for one due and refresh it before each call."""
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data.get("refresh_token") or ""),
            created_at=now,
            expires_in=_seconds(data.get("expires_in"), SHORTEST_LIFETIME),
        )

    @property
    def expires_at(self) -> float:
        return self.created_at + self.expires_in

    def due_for_refresh(self, now: float) -> bool:
        """Refresh at 75 % of the lifetime Trakt gave us, never on a fixed timer."""
        return now >= self.created_at + 0.75 * self.expires_in

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "created_at": self.created_at,
            "expires_in": self.expires_in,
        }


# The lifetime taken for a pair whose `expires_in` is missing or no usable number: the
# shortest Trakt has given (24 h in 2025, §6), so it is renewed early rather than too late.
# Never a reason to throw a new pair away: Trakt spent the refresh token that got it, so it is
# the only sign-in left.
SHORTEST_LIFETIME = 86400.0


def _seconds(value: object, default: float) -> float:
    """`value` as seconds if it is a positive finite number (or its text), else `default`."""
    if isinstance(value, bool):
        return default
    try:
        seconds = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds > 0 else default


@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_url: str
    expires_in: float
    interval: float


def device_code_of(answer: dict[str, Any]) -> DeviceCode:
    """The device code request's answer; its waits as documented where it leaves them out."""
    codes = {key: answer.get(key) for key in ("device_code", "user_code", "verification_url")}
    lacking = [key for key, value in codes.items() if not isinstance(value, str) or not value]
    if lacking:
        raise TraktError(
            SERVICE,
            changed_answer(
                "Trakt",
                f"the device code request answered without its {', '.join(lacking)}",
                "no sign-in was started; try again later",
            ),
        )
    return DeviceCode(
        device_code=str(codes["device_code"]),
        user_code=str(codes["user_code"]),
        verification_url=str(codes["verification_url"]),
        expires_in=_seconds(answer.get("expires_in"), 600.0),
        interval=_seconds(answer.get("interval"), 5.0),
    )


DevicePoll = Literal[
    "approved", "pending", "slow_down", "invalid", "already_used", "expired", "denied"
]
# A refresh that failed on an outage while the access token still works is tried again this
# much later; the token is used meanwhile, up to this margin before it expires.
REFRESH_RETRY_SECONDS = 300.0
EXPIRY_MARGIN_SECONDS = 120.0
# Trakt takes its time over batch writes (800 ratings took ~45 s; trakt-api.md §9 asks for a
# read timeout of at least 60 s): a shorter one turns slow successes into unknown outcomes.
READ_TIMEOUT_SECONDS = 60.0
# A process refreshing a sign-in says so in the database (the id cache, as an entry that
# expires), unless another already does (`Store.cache_claim`: one step): that one (a
# `watchbridge sync` beside the service) then waits for its pair instead, as long as Trakt may
# take to answer it; one whose refresh is refused with no such entry looks for a pair stored
# meanwhile for a moment only (TraktConfig.refresh_race_seconds).
REFRESHING = "trakt-refreshing"
REFRESH_LEASE_SECONDS = READ_TIMEOUT_SECONDS + 15.0
UNSAVED_RETRY_SECONDS = 1.0  # between tries to store a refreshed pair kept in memory
# How long a refresh in flight is waited for when its caller is stopped: about the time a
# container is given to stop (docker's 10 s) beyond which it is killed anyway.
REFRESH_FINISH_SECONDS = 10.0
REFRESH_RACE_POLL = 1.0
# The tokens-table entry (beside the profile's pair, kept as sign-ins are) holding the SHA-256 of
# the refresh token pasted into the config that Trakt last answered: once used, it is spent
# (Trakt's refresh tokens are single-use) and never sent again, in any later process either.
PASTED_USED = "trakt-pasted-used"
# The tokens-table entry holding how the profile's last refresh went ("ok", "refused",
# "unreachable"), when, and the SHA-256 of the refresh token of the pair it was about: the
# status page, `/api/status` and the metrics read it (a new sign-in makes it another pair's).
REFRESH_OUTCOME = "trakt-refresh"
REFRESH_OUTCOMES = ("ok", "refused", "unreachable")
_THIS_PROCESS = uuid.uuid4().hex


def _refresher() -> str:
    """Who refreshes: this process's event loop (the refresh lock keeps its clients apart)."""
    return f"{_THIS_PROCESS}:{id(asyncio.get_running_loop())}"


log = logging.getLogger(__name__)
# A renewal failing through an outage of Trakt is tried again at each delivery's probe (every
# 5 minutes) by each client: one warning as it begins, then hourly with a count (per profile).
_RENEWAL_FAILING = Repeating(log)

# One refresh at a time per sign-in in this process, whichever client asks (the delivery
# target and each link's reader have their own): a refresh token is good for one use only.
_REFRESH_LOCKS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, str], asyncio.Lock]
] = weakref.WeakKeyDictionary()


def _refresh_lock(sign_in: tuple[str, str, str]) -> asyncio.Lock:
    """The lock of one (auth URL, client id, profile) on the running event loop."""
    locks = _REFRESH_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(sign_in, asyncio.Lock())


# Pairs Trakt issued that the database could not take yet (locked by another process), with
# the refresh token they replace: that spent token makes them the only sign-in there is, so
# every client in the process uses them and stores them as soon as it can, unless a new
# sign-in was stored meanwhile.
_UNSAVED: dict[tuple[str, str, str], tuple[str, TokenSet]] = {}


# Trakt limits an account, not a client: every client in the process (the delivery worker, a
# link's reader and writer) paces one account's requests together, and a 429 pauses them all.
_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, str], Pacer]] = (
    weakref.WeakKeyDictionary()
)


def _account_pacer(account: tuple[str, str, str]) -> Pacer:
    """The pacer of one (API URL, client id, profile or "" for calls without a sign-in) on
    the running event loop."""
    pacers = _PACERS.setdefault(asyncio.get_running_loop(), {})
    if account not in pacers:
        pacers[account] = _pacer()
    return pacers[account]


_DEVICE_STATUS: dict[int, DevicePoll] = {
    200: "approved",
    400: "pending",
    404: "invalid",
    409: "already_used",
    410: "expired",
    418: "denied",
    429: "slow_down",
}


@dataclass(frozen=True)
class ScrobbleResult:
    """Trakt's answer to a scrobble: `action` as Trakt decided it (`scrobble` means a play)."""

    action: str
    history_id: int | None = None
    duplicate: bool = False  # 409: Trakt already recorded a play of the item moments ago
    # With a 409: when that play was watched, if Trakt says (on our clock).
    recorded_at: float | None = None


@dataclass(frozen=True)
class HistoryPlay:
    item: MediaRef
    watched_at: float | None  # None: date unknown, sent as `released` (air date + runtime)


@dataclass(frozen=True)
class RatingWrite:
    item: MediaRef
    rating: int  # Trakt's 1-10
    rated_at: float


@dataclass(frozen=True)
class WriteResult:
    """What a sync write really did: counts added and the items Trakt could not find."""

    added: int
    not_found: list[MediaRef]


@dataclass(frozen=True)
class CollectionWrite:
    """One movie or episode for the collection with its media details (`collection.py`)."""

    item: MediaRef
    metadata: dict[str, str]
    collected_at: float | None = None


@dataclass(frozen=True)
class ListWriteResult:
    """A collection or watchlist write: what Trakt did, and whether the account limit stopped it.

    When `limit_hit` is set, the batches before it were written and the rest were not sent.
    """

    added: int = 0
    updated: int = 0
    existing: int = 0
    deleted: int = 0
    not_found: list[MediaRef] = field(default_factory=list)
    limit_hit: LimitHit | None = None
    item_count: int | None = None  # the watchlist's size after the write, when Trakt says


EPISODE_IDS = ("tvdb", "tmdb", "imdb")  # an episode's ids other services know it by


@dataclass(frozen=True)
class ListedEpisode:
    """One episode of a show's season list: its number, Trakt's absolute number (often
    null, reference trakt-api.md §14), its Trakt, TVDB, TMDB and IMDb ids and its title; and
    when it first aired and its runtime in minutes (either may be null, trakt-api#868)."""

    number: int
    number_abs: int | None = None
    ids: Ids = field(default_factory=Ids)
    title: str | None = None
    first_aired: float | None = None
    runtime: int | None = None

    def released(self) -> float | None:
        """Where Trakt dates a play added `released` (§9: the air date + runtime); None when
        either is unknown."""
        if self.first_aired is None or self.runtime is None:
            return None
        return self.first_aired + self.runtime * 60


@dataclass(frozen=True)
class ListedSeason:
    """One season of `GET /shows/{id}/seasons?extended=full,episodes`. `episode_count` is
    Trakt's count (`full`), there even when the episodes list comes back empty
    (trakt/trakt-api#799)."""

    number: int
    episode_count: int | None
    episodes: tuple[ListedEpisode, ...] = ()


# --------------------------------------------------------------------------- pure shapes


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _conflict_at(response: httpx.Response) -> float | None:
    """The `watched_at` of the play a 409 names, when its body is readable."""
    try:
        return parse_iso(str(response.json()["watched_at"]))
    except (ValueError, KeyError, TypeError):
        return None


def _watched_at(at: float | None) -> str:
    # §9: `released` is the episode's air date + runtime; an item Trakt knows no air date of
    # is stored without one (read back with `watched_at` null).
    return iso(at) if at is not None else "released"


def trakt_ids(ids: Ids) -> dict[str, Any]:
    """Our ids in Trakt's request shape (numbers as numbers, no empty keys)."""
    shaped: dict[str, Any] = {}
    for name in ("trakt", "tmdb", "tvdb"):
        value = getattr(ids, name)
        if value and str(value).isdigit():
            shaped[name] = int(value)
    if ids.imdb:
        shaped["imdb"] = ids.imdb
    if ids.slug:
        shaped["slug"] = ids.slug
    return shaped


def can_send(item: MediaRef) -> bool:
    """Whether Trakt can match this item, as `media_body` sends it, without a lookup first:
    the one rule (ids.trakt_ready is this, for the enricher)."""
    if item.kind == "episode":
        episode_ids = trakt_ids(item.ids)
        by_numbers = bool(trakt_ids(item.show_ids)) and item.season is not None and item.number
        return "trakt" in episode_ids or "tvdb" in episode_ids or bool(by_numbers)
    return bool(trakt_ids(item.ids).keys() - {"tvdb"})  # Trakt finds movies by no TVDB id


def media_body(item: MediaRef) -> dict[str, Any]:
    """The item as a scrobble body: movie by ids; episode by its own ids or show + numbers."""
    if item.kind == "movie":
        return {"movie": {"ids": trakt_ids(item.ids)}}
    episode_ids = {k: v for k, v in trakt_ids(item.ids).items() if k in ("trakt", "tvdb")}
    if "trakt" in episode_ids:
        # Trakt's own id is the one it surely knows: a TVDB id it lost is not sent beside it
        # (which id wins when both are sent is not documented, §5).
        episode_ids = {"trakt": episode_ids["trakt"]}
    if episode_ids:
        return {"episode": {"ids": episode_ids}}
    if item.season is None and item.absolute is not None:
        return {"show": {"ids": trakt_ids(item.show_ids)}, "episode": {"number_abs": item.absolute}}
    return {
        "show": {"ids": trakt_ids(item.show_ids)},
        "episode": {"season": item.season, "number": item.number},
    }


def sync_body(entries: Sequence[tuple[MediaRef, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Movies and episodes for /sync/history or /sync/ratings, each with its extra fields.

    Episodes known only by show + numbers are nested under their show, as Trakt requires. A
    whole show or season goes in a show entry of its own: one that also nests seasons or
    episodes names only those (a removal of the show's own rating would remove nothing).
    """
    movies: list[Any] = []
    episodes: list[Any] = []
    shows: dict[tuple[str, str], dict[str, Any]] = {}
    for item, extra in entries:
        if item.kind in ("show", "season"):
            _nest_show_or_season(shows, item, extra)
            continue
        shaped = media_body(item)
        if "movie" in shaped:
            movies.append({**shaped["movie"], **extra})
        elif "show" not in shaped:
            episodes.append({**shaped["episode"], **extra})
        else:
            show_key = ("episode", repr(sorted(shaped["show"]["ids"].items())))
            show = shows.setdefault(show_key, {"ids": shaped["show"]["ids"], "seasons": []})
            season = next((s for s in show["seasons"] if s["number"] == item.season), None)
            if season is None:
                season = {"number": item.season, "episodes": []}
                show["seasons"].append(season)
            season["episodes"].append({"number": item.number, **extra})
    body: dict[str, list[Any]] = {}
    if movies:
        body["movies"] = movies
    if episodes:
        body["episodes"] = episodes
    if shows:
        body["shows"] = [_without_empty(show) for show in shows.values()]
    return body


def _without_empty(show: dict[str, Any]) -> dict[str, Any]:
    """A show item without empty `seasons`/`episodes` lists (a bare show or season names
    itself, not all of its episodes)."""
    seasons = [
        {k: v for k, v in season.items() if k != "episodes" or v} for season in show["seasons"]
    ]
    return {k: v for k, v in show.items() if k != "seasons"} | (
        {"seasons": seasons} if seasons else {}
    )


def _nest_show_or_season(
    shows: dict[tuple[str, str], dict[str, Any]], item: MediaRef, extra: dict[str, Any]
) -> None:
    """A whole show (its own fields, e.g. a rating) or one season nested under its show (an
    entry that nests seasons only, apart from the show's own and its episodes')."""
    ids = trakt_ids(item.ids if item.kind == "show" else item.show_ids)
    show = shows.setdefault((item.kind, repr(sorted(ids.items()))), {"ids": ids, "seasons": []})
    if item.kind == "show":
        show.update(extra)
    else:
        show["seasons"].append({"number": item.season, "episodes": [], **extra})


def not_found_refs(answer: dict[str, Any], sent: Sequence[MediaRef]) -> list[MediaRef]:
    """Match Trakt's echoed `not_found` entries back to the items we sent, by any shared id
    within the group each was sent in: ids are not unique across types (TMDB numbers movies
    and shows apart), so a movie echoed missing says nothing about a show's episode.

    Episodes sent under their show come back as that show narrowed to the seasons and
    episodes it lacks, filed under `episodes` (trakt-api#357), not `shows`; such an entry is
    taken from whichever group it comes in. Only a show echoed bare is missing as a whole.
    """
    missing = answer.get("not_found") or {}
    groups = {
        group: [e for e in missing.get(group) or [] if isinstance(e, dict)]
        for group in ("movies", "shows", "seasons", "episodes")
    }
    echoed = {
        group: [_id_pairs(entry.get("ids")) for entry in groups[group] if not _show_shaped(entry)]
        for group in ("movies", "episodes")
    }
    shows = [
        (_id_pairs(e.get("ids")), _echoed_places(e))
        for group, entries in groups.items()
        for e in entries
        if group == "shows" or _show_shaped(e)
    ]
    if not any(echoed.values()) and not shows:
        return []

    def is_missing(item: MediaRef) -> bool:
        group, ids = _sent_as(item)
        if group != "shows":
            return any(ids & entry for entry in echoed[group])
        for show_ids, places in shows:
            if not ids & show_ids:
                continue
            if places is None:  # the show itself
                return True
            if item.kind == "season" and any(season == item.season for season, _ in places):
                return True
            if item.kind == "episode" and {(item.season, item.number), (item.season, None)} & (
                places
            ):
                return True
        return False

    return [item for item in sent if is_missing(item)]


def _sent_as(item: MediaRef) -> tuple[str, set[tuple[str, str]]]:
    """The body group `item` is sent in ("shows": nested under its show, whose echo may come
    back in another group), and the ids it was sent by."""
    if item.kind in ("show", "season"):
        return "shows", _id_pairs(trakt_ids(item.ids if item.kind == "show" else item.show_ids))
    shaped = media_body(item)
    if "movie" in shaped:
        return "movies", _id_pairs(shaped["movie"]["ids"])
    if "show" not in shaped:
        return "episodes", _id_pairs(shaped["episode"]["ids"])
    return "shows", _id_pairs(shaped["show"]["ids"])


def _id_pairs(ids: object) -> set[tuple[str, str]]:
    return {(k, str(v)) for k, v in ids.items()} if isinstance(ids, dict) else set()


def _show_shaped(entry: dict[str, Any]) -> bool:
    """Whether a `not_found` entry is a show narrowed to seasons (an episode's or a movie's
    echo has no `seasons`)."""
    return isinstance(entry.get("seasons"), list)


def _echoed_places(show: dict[str, Any]) -> set[tuple[object, object]] | None:
    """(season, episode) pairs an echoed show is narrowed to ((season, None): all of that
    season); None when it is echoed bare (the show itself was not found)."""
    seasons = show.get("seasons")
    if not isinstance(seasons, list) or not seasons:
        return None
    places: set[tuple[object, object]] = set()
    for season in seasons:
        if not isinstance(season, dict):
            continue
        episodes = season.get("episodes")
        if isinstance(episodes, list) and episodes:
            places |= {
                (season.get("number"), e.get("number")) for e in episodes if isinstance(e, dict)
            }
        else:
            places.add((season.get("number"), None))
    return places


def _deleted_count(answer: dict[str, Any], path: str, status: int, then: str) -> int:
    """How many of a removal's items Trakt says it deleted. An answer without its `deleted`
    counts, or with a `not_found` in another shape, is not taken as done (read as it was, it
    said every item removed, the ones Trakt did not find too): Unavailable with an unknown
    outcome, and `then`, what happens to the removal meanwhile."""
    deleted = answer.get("deleted")
    if isinstance(deleted, dict) and readable_not_found(answer):
        return sum(int(v) for v in deleted.values() if isinstance(v, int))
    unread = (
        "its `deleted` counts"
        if not isinstance(deleted, dict)
        else "a `not_found` watchbridge can read"
    )
    raise Unavailable(
        SERVICE,
        changed_answer(
            "Trakt",
            f"{path} answered {status} without {unread}",
            then,
        ),
        outcome_unknown=True,
    )


def readable_not_found(answer: dict[str, Any]) -> bool:
    """Whether a write's `not_found` is absent or an object of lists: read in another shape,
    it would say every item was found, and the plays Trakt did not find would be lost."""
    not_found = answer.get("not_found")
    if not_found is None:
        return True
    return isinstance(not_found, dict) and all(
        isinstance(group, list | None) for group in not_found.values()
    )


def added_count(answer: dict[str, Any]) -> int:
    added = answer.get("added") or {}
    return sum(int(v) for v in added.values() if isinstance(v, int))


# --------------------------------------------------------------------------- client


def parse_seasons(data: Any) -> list[ListedSeason]:
    """A show's season list, read loosely: rows or episodes without a number are skipped."""
    seasons: list[ListedSeason] = []
    for row in data if isinstance(data, list) else []:
        number = whole(row.get("number")) if isinstance(row, dict) else None
        if number is None:
            continue
        episodes = tuple(
            ListedEpisode(
                n,
                whole(e.get("number_abs")),
                _episode_ids(e.get("ids")),
                e["title"] if isinstance(e.get("title"), str) else None,
                iso_time(e.get("first_aired")),
                whole(e.get("runtime")),
            )
            for e in row.get("episodes") or []
            if isinstance(e, dict) and (n := whole(e.get("number"))) is not None
        )
        count = whole(row.get("episode_count"))
        if count is None:
            count = whole(row.get("aired_episodes"))
        seasons.append(ListedSeason(number, count, episodes))
    return seasons


def _episode_ids(ids: object) -> Ids:
    if not isinstance(ids, dict):
        return Ids()
    return Ids(**{name: str(ids[name]) for name in ("trakt", *EPISODE_IDS) if ids.get(name)})


def _pacer() -> Pacer:
    # Trakt's documented buckets: 1 write per second, 500 reads per 5 minutes (§3), each with
    # a margin: field clients see 429s at exactly 1/s, and the read burst comes on top.
    return Pacer({"write": Bucket(1, 1 / 1.1), "read": Bucket(20, 450 / 300)})


class TraktClient:
    """One Trakt app, many profiles (each with its own tokens and rate-limit pacer)."""

    def __init__(
        self,
        config: TraktConfig,
        tokens: TokenStore,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        seeded_refresh_tokens: dict[str, Secret] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.clock = clock
        self.sleep = sleep
        self.seeded = dict(seeded_refresh_tokens or {})
        self._storing: dict[str, asyncio.Task[None]] = {}  # see `_store_soon`
        self._refresh_failed_at: dict[str, float] = {}  # profile -> a refresh lost to an outage
        # profile -> (the refresh token Trakt refused, why, when the access token runs out)
        self._refresh_refused: dict[str, tuple[str, str, float]] = {}
        # (profile, a refresh token Trakt said no to for good) -> its answer: not sent again
        self._refresh_spent: dict[tuple[str, str], TraktSignInRefused] = {}
        self.signed_in_as: dict[str, str] = {}  # profile -> the account's uuid (or slug)
        self.usernames: dict[str, str] = {}  # profile -> the account's username, as Trakt shows it
        self.http = HttpClient(
            SERVICE,
            config.api_url,
            metrics=metrics,
            clock=clock,
            timeout=READ_TIMEOUT_SECONDS,
            headers={
                "content-type": "application/json",
                "trakt-api-key": config.client_id,
                "trakt-api-version": "2",
            },
            own_answer=from_trakt,
        )

    @property
    def clock_skew(self) -> float:
        """How far Trakt's clock is ahead of ours: it stamps a scrobbled play by its own."""
        return self.http.clock_skew

    async def aclose(self) -> None:
        storing = list(self._storing.values())
        for task in storing:
            task.cancel()
        await asyncio.gather(*storing, return_exceptions=True)
        await self.http.aclose()
        await asyncio.to_thread(self._store_unsaved)

    def _store_unsaved(self, tries: int = 3) -> None:
        """Before this client goes (a `watchbridge sync` ending), store the refreshed pairs the
        database could not take: their refresh tokens are the only ones left that work."""
        mine = [key for key in _UNSAVED if key[:2] == self._sign_in_key("")[:2]]
        for _, _, profile in mine:
            for _ in range(tries):  # each try waits up to storage.busy_timeout
                with contextlib.suppress(sqlite3.Error, StoreError):
                    self._load(profile)
                if self._sign_in_key(profile) not in _UNSAVED:
                    break
            else:
                log.error(
                    "the refreshed Trakt sign-in could not be stored (the database stayed "
                    "locked): if Trakt deliveries stop with 'sign in again', run `watchbridge "
                    "auth trakt --profile %s`",
                    profile,
                    extra={"profile": profile},
                )

    def _pacer_of(self, account: str) -> Pacer:
        """The account's pacer, shared by every client of this Trakt app in the process; one
        set on this client's `http.pacers` instead (benches and tests lift the pacing)."""
        own = self.http.pacers.get(account)
        if own is not None:
            return own
        return _account_pacer((self.config.api_url, self.config.client_id, account))

    # ------------------------------------------------------------------ sign-in

    def _client_auth(self) -> dict[str, str]:
        auth = {"client_id": self.config.client_id}
        if self.config.client_secret:
            # Deprecated for sign-in since 2026-10 but still accepted; sent only when configured.
            auth["client_secret"] = self.config.client_secret.reveal()
        return auth

    async def _oauth(
        self, path: str, body: dict[str, Any], passthrough: frozenset[int] = frozenset()
    ) -> httpx.Response:
        return await self.http.request(
            "POST",
            f"/oauth/{path}",
            json=body,
            base_url=self.config.auth_url,
            passthrough=passthrough,
            write=False,  # a sign-in's failure is no row's fault
        )

    async def start_device_auth(self) -> DeviceCode:
        response = await self._oauth("device/code", {"client_id": self.config.client_id})
        _raise_if_in_its_place(
            response, "sign-in request", REFUSING, CLIENT_REFUSED, advice=TRY_AGAIN
        )
        if response.status_code in (401, 403, 426):
            raise _app_refused(response.status_code)
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"device code request answered {response.status_code}")
        return device_code_of(_decoded(response, dict))

    async def poll_device_auth(self, device_code: str) -> tuple[DevicePoll, TokenSet | None]:
        response = await self._oauth(
            "device/token", {"code": device_code, **self._client_auth()}, frozenset({429})
        )
        # Whatever a page in Trakt's place says (a ban, a proxy's 410), the sign-in polls on.
        _raise_if_in_its_place(response, "sign-in poll", POLL_ERRORS, POLL_ANSWERS | CLIENT_REFUSED)
        # Not among the poll's statuses: the app's credentials. OAuth servers may answer that
        # with a 400 too (RFC 6749 5.2), which would otherwise read as "pending" until expiry.
        if response.status_code == 401 or _oauth_error(response) == "invalid_client":
            raise TraktAuthError(SERVICE, _client_refused(response))
        if response.status_code in (403, 426):  # Trakt's own (a page in its place: above)
            raise _app_refused(response.status_code)
        status = _DEVICE_STATUS.get(response.status_code)
        if status is None:
            raise TraktError(SERVICE, f"device token poll answered {response.status_code}")
        if status == "approved":
            return status, TokenSet.from_response(_decoded(response, dict), self.clock())
        return status, None

    async def sign_in(self, profile: str, show: Callable[[DeviceCode], None]) -> TokenSet:
        """The whole device flow: show the code, poll per the documented statuses, store tokens."""
        code = await self.start_device_auth()
        show(code)
        interval = code.interval
        # Trakt says when the code has expired (410). Our own count stops polling one that must
        # be dead by now: by the waits and a clock that no time sync sets forward, not by the
        # time of day (a server just started may sync its clock while the code is typed).
        started, waited = time.monotonic(), 0.0
        messages = {
            "invalid": "Trakt did not recognise the device code; run the sign-in again",
            "already_used": "that code was already used; run the sign-in again",
            "expired": "the code expired before it was approved; run the sign-in again",
            "denied": "the sign-in was denied on Trakt",
        }
        unanswered: Unavailable | None = None  # the last poll's, when Trakt gave no answer
        while waited < code.expires_in and time.monotonic() - started < code.expires_in:
            await self.sleep(interval)
            waited += interval
            try:
                status, tokens = await self.poll_device_auth(code.device_code)
            except Unavailable as exc:
                unanswered = exc  # a gateway blip, a proxy's page: keep polling
                continue
            unanswered = None
            if tokens is not None:
                self._save(profile, tokens)
                _UNSAVED.pop(self._sign_in_key(profile), None)
                try:
                    await self.check_vip(profile)
                except (Unavailable, TraktError) as exc:
                    if isinstance(exc, TraktAccountError) and exc.status in (403, 426):
                        # The sign-in is kept: it works once the app is served.
                        raise TraktAccountError(
                            f"profile {profile} is signed in to Trakt, but Trakt does not serve"
                            f" the app of services.trakt.client_id (HTTP {exc.status}): since"
                            f" July 2026 the app must belong to a VIP account ({UPGRADE_URL});"
                            " once it does, this sign-in is used within the hour, without"
                            " signing in again",
                            exc.status,
                        ) from None
                    if isinstance(exc, TraktAccountError | TraktAuthError):
                        raise  # a locked account, a sign-in Trakt does not take
                    log.warning(
                        "signed in; Trakt could not be asked yet whether it serves this app: %s",
                        exc.message,
                        extra={"profile": profile},
                    )
                return tokens
            if status == "slow_down":
                interval += 5
            elif status in messages:
                raise TraktAuthError(SERVICE, messages[status])
        if unanswered is not None:  # whether the code was approved, Trakt could not say
            said = unanswered.said
            if not said.startswith("Trakt"):  # a gateway's error, a timeout
                said = f"Trakt's sign-in host did not answer the sign-in poll ({said})"
            raise Unavailable(
                SERVICE, f"the code ran out: {said}{TRY_AGAIN}", unanswered.retry_after
            )
        raise TraktAuthError(SERVICE, messages["expired"])

    async def account(self, profile: str) -> str | None:
        """The account `profile` is signed in to (its uuid, else its slug): asked of Trakt
        (`/users/settings`) once per access token. The store is read and written on a
        thread: a link run's apply may hold its lock for most of a second."""
        cached = await asyncio.to_thread(self._account_cached, profile)
        if cached is not None:
            return cached
        await self.check_vip(profile)
        account = self.signed_in_as.get(profile)
        if account is not None:
            await asyncio.to_thread(self._cache_account, profile, account)
        return account

    def _cache_account(self, profile: str, account: str) -> None:
        lookup = self._token_hash(profile)  # after a refresh the call may have made
        if lookup is not None:
            self.tokens.cache_put(ACCOUNT_CACHE, lookup, account, self.clock(), ACCOUNT_TTL)
        username = self.usernames.get(profile)
        if username and username_of(self.tokens, account, self.clock()) != username:
            self.tokens.cache_put(USERNAME_CACHE, account, username, self.clock(), USERNAME_TTL)

    def _account_cached(self, profile: str) -> str | None:
        lookup = self._token_hash(profile)
        if lookup is None:
            return None
        hit, cached = self.tokens.cache_get(ACCOUNT_CACHE, lookup, self.clock())
        return str(cached) if hit and cached else None

    def _token_hash(self, profile: str) -> str | None:
        token = (self.tokens.get_token(SERVICE, profile) or {}).get("access_token")
        return hashlib.sha256(str(token).encode()).hexdigest()[:32] if token else None

    async def check_vip(self, profile: str) -> dict[str, Any]:
        """Read /users/settings once: detects an app or account Trakt will not serve."""
        response = await self._call(profile, "GET", "/users/settings")
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"/users/settings answered {response.status_code}")
        try:
            settings = dict(response.json())
            ids = (settings.get("user") or {}).get("ids") or {}
        except (ValueError, TypeError, AttributeError):
            raise TraktError(SERVICE, "/users/settings answered something else than JSON") from None
        if account := str(ids.get("uuid") or ids.get("slug") or ""):
            self.signed_in_as[profile] = account
        if username := (settings.get("user") or {}).get("username"):
            self.usernames[profile] = str(username)
        else:  # not another account's name, left from an earlier read
            self.usernames.pop(profile, None)
        return settings

    def _save(self, profile: str, tokens: TokenSet) -> None:
        self.tokens.put_token(SERVICE, profile, tokens.to_dict(), self.clock())

    def _sign_in_key(self, profile: str) -> tuple[str, str, str]:
        return (self.config.auth_url, self.config.client_id, profile)

    def _keep(self, profile: str, tokens: TokenSet, spent: str) -> TokenSet:
        """Store a pair refreshed with `spent` and return the pair to use: the stored one when
        the profile was signed in again meanwhile (`watchbridge auth trakt`: that sign-in
        wins). If the database cannot take it now, it is kept in memory."""
        key = self._sign_in_key(profile)
        try:
            stored = self.tokens.put_token(
                SERVICE, profile, tokens.to_dict(), self.clock(), replacing=spent
            )
        except (sqlite3.Error, StoreError) as exc:
            if _UNSAVED.get(key) != (spent, tokens):  # said once, not at each try
                log.warning(
                    "the refreshed Trakt sign-in could not be stored yet; it is kept in memory"
                    " and stored as soon as the database takes it: %s",
                    exc,
                    extra={"profile": profile},
                )
            _UNSAVED[key] = (spent, tokens)
            self._store_soon(profile)
            return tokens
        _UNSAVED.pop(key, None)
        if stored:
            return tokens
        log.info("signed in to Trakt again while refreshing: the new sign-in is used")
        return self._load(profile) or tokens

    def _store_soon(self, profile: str) -> None:
        """Try to store a pair kept in memory every second (in a thread: each try may wait
        for the lock), not only at this client's next request: another process (a
        `watchbridge sync` beside an idle service) would refresh with the spent token."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a try of the retry itself (in its thread): that retry goes on
        storing = self._storing.get(profile)
        if storing is None or storing.done():
            self._storing[profile] = loop.create_task(self._store_unsaved_pair(profile))

    async def _store_unsaved_pair(self, profile: str) -> None:
        key = self._sign_in_key(profile)
        while key in _UNSAVED:
            await asyncio.sleep(UNSAVED_RETRY_SECONDS)
            with contextlib.suppress(sqlite3.Error, StoreError):
                await asyncio.to_thread(self._load, profile)  # stores it when it can

    def _load(self, profile: str) -> TokenSet | None:
        data = self.tokens.get_token(SERVICE, profile)
        stored = TokenSet(**data) if data else None
        unsaved = _UNSAVED.get(self._sign_in_key(profile))
        if unsaved is None:
            return stored
        spent, tokens = unsaved
        if stored is not None and stored.refresh_token != spent:
            _UNSAVED.pop(self._sign_in_key(profile), None)  # signed in again meanwhile
            return stored
        return self._keep(profile, tokens, spent)

    def _announce_refresh(self, profile: str, seconds: float, refresher: str) -> None:
        """Say (best effort) that `refresher` (`_refresher()`, as the loop names it) is
        refreshing the sign-in, for `seconds`."""
        with contextlib.suppress(sqlite3.Error, StoreError):
            self.tokens.cache_put(REFRESHING, profile, refresher, self.clock(), seconds)

    def _claim_refresh(self, profile: str, refresher: str) -> bool:
        """Say that `refresher` is refreshing the sign-in unless another says so; whether it
        may (best effort: a database that cannot answer keeps no one from refreshing)."""
        try:
            return self.tokens.cache_claim(
                REFRESHING, profile, refresher, self.clock(), REFRESH_LEASE_SECONDS
            )
        except (sqlite3.Error, StoreError):
            return True

    def _refreshing_elsewhere(self, profile: str, refresher: str) -> bool:
        """Whether another than `refresher` (`_refresher()`) says it is refreshing."""
        try:
            hit, holder = self.tokens.cache_get(REFRESHING, profile, self.clock())
        except (sqlite3.Error, StoreError):
            return False
        return hit and holder != refresher

    async def ensure_signed_in(self, profile: str) -> None:
        """Raise TraktAuthError now, before a write is marked as sent, when `profile` has no
        usable sign-in (never signed in, or its refresh refused)."""
        await self._access_token(profile)

    async def refresh_if_due(self, profile: str) -> bool:
        """Renew `profile`'s stored sign-in once it is past its refresh point, as a request
        would (the same routine and lock, the same handling of a refusal or an outage), though
        no request needs it: a profile that sits idle learns now, not at its next play, that
        Trakt no longer renews it. Nothing is sent while the pair is fresh, nor for a profile
        with no stored sign-in. True when a refresh was due (its outcome: `sign_in_ending`, or
        the TraktAuthError raised, as for a request)."""
        if not await self.refresh_due(profile):
            return False
        await self._access_token(profile)
        return True

    async def refresh_due(self, profile: str) -> bool:
        """True when `profile` has a stored sign-in past its refresh point (75 % of its life)."""
        tokens = await self._loaded(profile)
        return tokens is not None and tokens.due_for_refresh(self.clock())

    async def _loaded(self, profile: str) -> TokenSet | None:
        """`_load` on a thread: it waits for the store's lock, which a link run's apply holds
        for most of a second at a big account; on the event loop every webhook would wait."""
        return await asyncio.to_thread(self._load, profile)

    async def _access_token(self, profile: str, rejected: str | None = None) -> str:
        """A usable access token; `rejected` is one Trakt just answered 401 to."""
        tokens = await self._loaded(profile)
        if (
            tokens is not None
            and tokens.access_token != rejected
            and not tokens.due_for_refresh(self.clock())
        ):
            return tokens.access_token  # fresh, or another process refreshed after the 401
        async with _refresh_lock(self._sign_in_key(profile)):
            current = await self._loaded(profile)
            if (
                current is not None
                and current != tokens
                and current.access_token != rejected
                and not current.due_for_refresh(self.clock())
            ):
                return current.access_token  # another task refreshed while we waited
            refresh_token = await asyncio.to_thread(self._refresh_token, profile, current)
            if not refresh_token:
                raise TraktAuthError(
                    SERVICE,
                    f"profile {profile} is not signed in to Trakt: "
                    f"run `watchbridge auth trakt --profile {profile}`",
                )
            # Refreshing early (at 75 % of the token's life) leaves time to ride out an outage
            # of Trakt's sign-in host: meanwhile the token that still works is used.
            now = self.clock()
            still_works = (
                current.access_token
                if current is not None
                and rejected is None
                and now < current.expires_at - EXPIRY_MARGIN_SECONDS
                else None
            )
            failed_at = self._refresh_failed_at.get(profile)
            if still_works and failed_at is not None and now - failed_at < REFRESH_RETRY_SECONDS:
                return still_works
            refused = self._refresh_refused.get(profile)
            if still_works and refused is not None and refused[0] == refresh_token:
                return still_works  # refused for good: asking again would only be refused
            spent = self._refresh_spent.get((profile, refresh_token))
            if spent is not None:
                raise spent.with_traceback(None)  # until a new sign-in is stored
            # The pair the new one replaces: the stored one, also when the config's token
            # is sent in place of its refused refresh token.
            replacing = current.refresh_token if current is not None else refresh_token
            try:
                fresh = await self._refresh(profile, refresh_token, replacing)
            except Unavailable as exc:
                if not still_works:  # nothing was sent with it: say so, and whose it is
                    raise TraktSignInUnavailable(
                        SERVICE,
                        f"Trakt's sign-in service could not renew the sign-in of profile"
                        f" {profile} ({exc.message})",
                        exc.retry_after,
                    ) from None
                self._refresh_failed_at[profile] = now
                _RENEWAL_FAILING.warning(
                    profile,
                    "Trakt token refresh failed; the current token is used until it is tried"
                    f" again: {exc.message}",
                    now,
                    profile=profile,
                )
                return still_works
            except TraktAuthError as exc:
                if isinstance(exc, TraktSignInRefused):
                    self._refresh_spent[(profile, refresh_token)] = exc
                    pasted = await self._pasted_sign_in(profile, current, bool(still_works))
                    if pasted is not None:
                        return pasted.access_token
                # A refresh token Trakt no longer takes (one from before its 2026 sign-in
                # change, trakt-api#888) may leave the access token working for days: use it
                # to the end; `sign_in_ending` has the targets tell the user meanwhile.
                if not still_works or current is None:
                    raise
                self._refresh_refused[profile] = (refresh_token, exc.message, current.expires_at)
                log.warning(
                    "Trakt refused the token refresh; the current token is used until it runs"
                    " out: %s",
                    exc.message,
                    extra={"profile": profile},
                )
                return still_works
            self._signed_in_again(profile)
            return fresh.access_token

    def _refresh_token(self, profile: str, current: TokenSet | None) -> str:
        """The refresh token to renew `profile`'s sign-in with: the stored pair's, else the
        config's pre-seeded one; the pre-seeded one also when Trakt refused the stored pair's
        for good and it is another (pasted in since), unless it was refused too."""
        stored = current.refresh_token if current is not None else ""
        seeded = self._pasted(profile)
        if not stored or (
            seeded
            and (profile, stored) in self._refresh_spent
            and (profile, seeded) not in self._refresh_spent
        ):
            return seeded or stored
        return stored

    def _seeded(self, profile: str) -> str:
        """The refresh token pasted into the config for `profile`, or ""."""
        return self.seeded[profile].reveal() if profile in self.seeded else ""

    def _pasted(self, profile: str) -> str:
        """The refresh token pasted into the config for `profile`, unless Trakt already
        answered it (here or in an earlier process: see PASTED_USED)."""
        pasted = self._seeded(profile)
        if not pasted:
            return ""
        try:
            used = self.tokens.get_token(PASTED_USED, profile)
        except (sqlite3.Error, StoreError):
            used = None  # this process's own record (_refresh_spent) still holds
        return "" if used is not None and used.get("sha256") == digest(pasted) else pasted

    def _note_pasted_used(self, profile: str, refresh_token: str) -> None:
        """Trakt answered `refresh_token` (a new pair, or refused): when it is the pasted one,
        remember (by its hash, never itself) that it is spent."""
        pasted = self._seeded(profile)
        if not pasted or refresh_token != pasted:
            return
        with contextlib.suppress(sqlite3.Error, StoreError):  # best effort, as the lease
            self.tokens.put_token(PASTED_USED, profile, {"sha256": digest(pasted)}, self.clock())

    async def _pasted_sign_in(
        self, profile: str, current: TokenSet | None, still_works: bool
    ) -> TokenSet | None:
        """A new pair from a refresh token pasted into the config since the stored pair was
        issued, once Trakt refused the stored pair's. None without one, when Trakt refuses it
        too, or when it cannot be tried now while the old access token `still_works` (the
        next request tries it again); without that token, why it cannot be tried is raised."""
        pasted = await asyncio.to_thread(self._refresh_token, profile, current)
        if not pasted or (profile, pasted) in self._refresh_spent:
            return None
        replacing = current.refresh_token if current is not None else pasted  # the dead pair
        try:
            fresh = await self._refresh(profile, pasted, replacing)
        except TraktSignInRefused as exc:
            self._refresh_spent[(profile, pasted)] = exc
            return None
        except Unavailable as outage:
            if still_works:
                return None
            raise TraktSignInUnavailable(
                SERVICE,
                f"Trakt's sign-in service could not take the refresh token pasted for profile"
                f" {profile} ({outage.message})",
                outage.retry_after,
            ) from None
        except TraktError:  # its account locked, its host answering oddly
            if still_works:
                return None
            raise
        self._signed_in_again(profile)
        return fresh

    def _signed_in_again(self, profile: str) -> None:
        """Forget `profile`'s failed and refused refreshes: a new pair is stored."""
        _RENEWAL_FAILING.over(
            profile, "trakt token renewal works again", self.clock(), profile=profile
        )
        self._refresh_failed_at.pop(profile, None)
        self._refresh_refused.pop(profile, None)
        for key in [key for key in self._refresh_spent if key[0] == profile]:
            del self._refresh_spent[key]

    async def sign_in_ending(self, profile: str) -> str | None:
        """Why `profile`'s sign-in stops working soon (Trakt refused to renew it while its
        access token still works), with what to do; None when it renews as it should."""
        refused = self._refresh_refused.get(profile)
        if refused is None:
            return None
        tokens = await self._loaded(profile)
        if tokens is None or tokens.refresh_token != refused[0]:
            return None  # signed in again since (here or by another process)
        until = datetime.fromtimestamp(refused[2], UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"{refused[1]}. Its current sign-in keeps working until {until}, then deliveries wait"
        )

    async def _refresh(self, profile: str, refresh_token: str, replacing: str) -> TokenSet:
        """A new pair for `refresh_token`, stored over the pair holding `replacing` (the same
        refresh token, or the stored pair's for one pasted into the config). The store's
        records of it are written on threads, as in `_refresh_now`."""
        me = _refresher()
        if not await to_the_end(in_thread(self._claim_refresh, profile, me)):
            # Another process refreshes it (the service beside a `watchbridge sync`): its pair
            # is ours too, and our try would spend the refresh token it was given for.
            elsewhere = await self._refreshed_elsewhere(profile, replacing)
            if elsewhere is not None:
                return elsewhere
            await to_the_end(in_thread(self._announce_refresh, profile, REFRESH_LEASE_SECONDS, me))
        refreshing = asyncio.ensure_future(self._refresh_now(profile, refresh_token, replacing))
        try:
            fresh = await asyncio.shield(refreshing)
        except asyncio.CancelledError:
            # Stopped (Ctrl-C, the service's shutdown) after Trakt may have taken the
            # single-use refresh token: its answer is the only pair left, so let it be kept.
            await asyncio.wait({refreshing}, timeout=REFRESH_FINISH_SECONDS)
            if refreshing.done() and not refreshing.cancelled():
                refreshing.exception()  # seen: the caller is gone, not its failure
            raise
        except Unavailable:
            await to_the_end(in_thread(self._note_refresh, profile, "unreachable", replacing))
            raise
        except TraktError:  # refused: the sign-in, the app, the account
            await to_the_end(in_thread(self._note_refresh, profile, "refused", replacing))
            raise
        finally:
            await to_the_end(in_thread(self._announce_refresh, profile, 0.0, me))
        await to_the_end(in_thread(self._note_refresh, profile, "ok", fresh.refresh_token))
        return fresh

    def _note_refresh(self, profile: str, outcome: str, refresh_token: str) -> None:
        """Keep (best effort) how this refresh of the pair holding `refresh_token` went, for the
        sign-in health the status page, `/api/status` and the metrics show (see REFRESH_OUTCOME):
        by the token's hash, never the token."""
        record = {"outcome": outcome, "at": self.clock(), "pair": digest(refresh_token)}
        with contextlib.suppress(sqlite3.Error, StoreError):
            self.tokens.put_token(REFRESH_OUTCOME, profile, record, self.clock())

    async def _refresh_now(self, profile: str, refresh_token: str, replacing: str) -> TokenSet:
        response = await self._oauth(
            "token",
            {
                "refresh_token": refresh_token,
                "grant_type": "refresh_token",
                "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
                **self._client_auth(),
            },
        )
        # A page in Trakt's place has not seen the refresh token: it is not spent, and the
        # sign-in is not refused; the refresh is tried again as after an outage.
        _raise_if_in_its_place(response, "token refresh", REFUSING)
        if _oauth_error(response) == "invalid_client":  # signing in again would fail the same way
            raise TraktSignInRefused(SERVICE, _client_refused(response))
        if response.status_code in (400, 401):
            await to_the_end(in_thread(self._note_pasted_used, profile, refresh_token))
            elsewhere = await self._refreshed_elsewhere(profile, replacing)
            if elsewhere is not None:
                return elsewhere
            raise TraktSignInRefused(
                SERVICE,
                f"Trakt no longer accepts the sign-in of profile {profile} "
                f"({_refusal_words(_oauth_error(response))}): run "
                f"`watchbridge auth trakt --profile {profile}`",
            )
        if response.status_code == 403:  # Trakt's own (a page in its place: above)
            raise _app_refused(403)
        if response.status_code >= 400:
            # Whatever else refuses the refresh (an OAuth host that moved, a locked account)
            # holds this profile's deliveries and asks for a human.
            _raise_for_account(response)
            raise TraktAuthError(
                SERVICE,
                f"Trakt's sign-in service answered {response.status_code} to the token refresh "
                f"of profile {profile}: check services.trakt.auth_url; if it goes on, run "
                f"`watchbridge auth trakt --profile {profile}`",
            )
        try:
            tokens = TokenSet.from_response(response.json(), self.clock())
        except (ValueError, KeyError, TypeError):
            # Not Trakt's answer (a captive portal, a proxy page): nothing to keep; try later.
            raise Unavailable(
                SERVICE, "the token refresh got an answer that is not Trakt's"
            ) from None
        # Refresh tokens are single-use: keep the new pair before anything else can fail. On
        # a thread, waited for to its end: the store's lock may be held for most of a second
        # (a link run's apply), which the event loop, every webhook, must not wait for.
        kept = await to_the_end(in_thread(self._keep, profile, tokens, replacing))
        if self._sign_in_key(profile) in _UNSAVED:
            self._store_soon(profile)  # the thread has no loop to retry on
        await to_the_end(in_thread(self._note_pasted_used, profile, refresh_token))
        return kept

    async def _refreshed_elsewhere(self, profile: str, used: str) -> TokenSet | None:
        """The pair another process stored after using this single-use refresh token first
        (a `watchbridge sync` beside the service): waited for while it says it is refreshing,
        else looked for a moment only."""
        race = self.config.refresh_race_seconds
        # Looks at the race's start, middle and end, however long it is set to be.
        poll = min(REFRESH_RACE_POLL, race / 2) or REFRESH_RACE_POLL
        waited = 0.0
        while True:
            current = await self._loaded(profile)
            if current is not None and current.refresh_token != used:
                return current
            if waited >= REFRESH_LEASE_SECONDS or (
                waited >= race
                and not await asyncio.to_thread(self._refreshing_elsewhere, profile, _refresher())
            ):
                return None
            await self.sleep(poll)
            waited += poll

    # ------------------------------------------------------------------ requests

    async def _call(
        self,
        profile: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        pacer = self._pacer_of(profile)
        bucket = "read" if method == "GET" else "write"
        token: str | None = None
        landed_before_refresh = False
        for attempt in (1, 2):
            try:
                token = await self._access_token(profile, rejected=token if attempt == 2 else None)
                response = await self.http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    pacer=pacer,
                    bucket=bucket,
                    headers={"authorization": f"Bearer {token}"},
                    idempotent=idempotent,
                )
            except Unavailable as exc:
                # A try before the 401 may have written (its answer lost, then sent again):
                # the failure after the refresh does not say it did not.
                exc.outcome_unknown = exc.outcome_unknown or landed_before_refresh
                raise
            except TraktAuthError as exc:
                if token is not None:  # its 401, then its renewal refused (the app revoked)
                    now = self.clock()
                    noted = (self.tokens, SERVICE, profile, token, exc.message, now)
                    await asyncio.to_thread(note_refused, *noted, since_first=True)
                raise
            if response.status_code != 401:
                break
            landed_before_refresh = earlier_try_may_have_landed(response)
        if response.status_code == 420 and path != SETTINGS_PATH:
            raise await self._limit_told(profile, path, response.headers)
        _raise_for_account(response)
        assert token is not None  # `_access_token` gives one or raises
        if response.status_code == 401:
            refused = TraktAuthError(
                SERVICE,
                f"Trakt rejects the sign-in of profile {profile} even after a refresh: "
                f"run `watchbridge auth trakt --profile {profile}`",
            )
            # For the sign-in health: the refresh went through, so the pair looks good.
            await asyncio.to_thread(
                note_refused, self.tokens, SERVICE, profile, token, refused.message, self.clock()
            )
            raise refused
        await asyncio.to_thread(note_taken, self.tokens, SERVICE, profile, token, self.clock())
        return response

    async def scrobble(
        self,
        profile: str,
        action: Literal["start", "pause", "stop"],
        item: MediaRef,
        progress: float,
    ) -> ScrobbleResult:
        # Trakt ignores stops below 1 % with a 422; pauses keep progress under 80 %.
        progress = max(1.0, min(100.0, progress))
        body = {**media_body(item), "progress": round(progress, 2)}
        # Safe to resend: Trakt answers 409 to a repeated stop instead of adding a play.
        response = await self._call(
            profile, "POST", f"/scrobble/{action}", json=body, idempotent=True
        )
        if response.status_code == 409:
            stamped = _conflict_at(response)
            if stamped is None and action == "stop":
                # Taken for this viewing sent before, a rewatch inside Trakt's window would be
                # lost; taken for an earlier one, this play could be doubled: look first.
                raise TraktError(
                    SERVICE,
                    changed_answer(
                        "Trakt",
                        "scrobble stop answered 409 without a `watched_at` watchbridge can read",
                        "the play is looked for in Trakt's history before it is sent again",
                    ),
                )
            recorded_at = None if stamped is None else stamped - self.clock_skew
            return ScrobbleResult(action="scrobble", duplicate=True, recorded_at=recorded_at)
        if response.status_code == 422:
            said = refusal_text(response) or "no reason given"
            raise TraktScrobbleInvalid(
                SERVICE,
                f"Trakt refused the scrobble {action} of {item.describe()} at {body['progress']}%"
                f" as invalid (422, its validation error, e.g. a progress it does not take;"
                f" it said: {said}); this is not an item Trakt does not know: please report it",
            )
        if response.status_code == 404:
            raise TraktItemError(
                SERVICE, f"scrobble {action} of {item.describe()} answered {response.status_code}"
            )
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"scrobble {action} answered {response.status_code}")
        data = _decoded(response, dict, wrote=True)
        answered = str(data.get("action", action))
        if action == "stop" and answered != "pause":
            # A recorded play: `scrobble` in the Apiary docs, `stop` in the 2026 contract.
            history_id = data.get("id")
            return ScrobbleResult("scrobble", history_id if isinstance(history_id, int) else None)
        return ScrobbleResult(action=answered)

    async def add_history(self, profile: str, plays: Sequence[HistoryPlay]) -> WriteResult:
        return await self._sync_write(
            profile,
            "/sync/history",
            [(p.item, {"watched_at": _watched_at(p.watched_at)}) for p in plays],
        )

    async def add_ratings(self, profile: str, ratings: Sequence[RatingWrite]) -> WriteResult:
        return await self._sync_write(
            profile,
            "/sync/ratings",
            [(r.item, {"rating": r.rating, "rated_at": iso(r.rated_at)}) for r in ratings],
        )

    async def remove_history(self, profile: str, history_ids: Sequence[int]) -> int:
        """Remove plays by their Trakt history ids; returns how many Trakt deleted."""
        response = await self._call(
            profile,
            "POST",
            "/sync/history/remove",
            json={"ids": list(history_ids)},
            idempotent=True,
        )
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"/sync/history/remove answered {response.status_code}")
        answer = _decoded(response, dict, wrote=True)
        return _deleted_count(
            answer,
            "/sync/history/remove",
            response.status_code,
            "it is sent again by the same history ids, which remove no play twice",
        )

    async def remove_ratings(self, profile: str, items: Sequence[MediaRef]) -> WriteResult:
        """Remove ratings (a rating written twice is the same rating: safe to resend); `added`
        counts the ratings Trakt deleted, `not_found` the items it could not find."""
        response = await self._call(
            profile,
            "POST",
            "/sync/ratings/remove",
            json=sync_body([(item, {}) for item in items]),
            idempotent=True,
        )
        _raise_if_refused(response, "/sync/ratings/remove")
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"/sync/ratings/remove answered {response.status_code}")
        answer = _decoded(response, dict, wrote=True)
        count = _deleted_count(
            answer,
            "/sync/ratings/remove",
            response.status_code,
            "it is sent again, unless the item is rated on Trakt again meanwhile",
        )
        return WriteResult(added=count, not_found=not_found_refs(answer, items))

    async def _sync_write(
        self, profile: str, path: str, entries: Sequence[tuple[MediaRef, dict[str, Any]]]
    ) -> WriteResult:
        added, missing = 0, []
        for start in range(0, len(entries), HISTORY_BATCH):
            batch = entries[start : start + HISTORY_BATCH]
            # A rating written twice is the same rating; a history add written twice is two
            # plays, so it is never resent blindly (the delivery target checks first).
            response = await self._call(
                profile, "POST", path, json=sync_body(batch), idempotent=path == "/sync/ratings"
            )
            _raise_if_refused(response, path)
            if response.status_code >= 400:
                raise TraktError(SERVICE, f"{path} answered {response.status_code}")
            answer = _decoded(response, dict, wrote=True)
            counted = isinstance(answer.get("added"), dict)
            if not counted or not readable_not_found(answer):
                # Without its counts, its `not_found` cannot be trusted either: an item Trakt
                # did not find would be taken as written, and its play lost.
                unread = "a `not_found` watchbridge can read" if counted else "its `added` counts"
                raise Unavailable(
                    SERVICE,
                    changed_answer(
                        "Trakt",
                        f"{path} answered {response.status_code} without {unread}",
                        "the write is looked for on Trakt before it is sent again",
                    ),
                    outcome_unknown=True,
                )
            added += added_count(answer)
            missing += not_found_refs(answer, [item for item, _ in batch])
        return WriteResult(added=added, not_found=missing)

    async def history(
        self,
        profile: str,
        item_type: str,
        trakt_id: str | None = None,
        start_at: float | None = None,
        end_at: float | None = None,
    ) -> list[dict[str, Any]]:
        """History entries (newest first), every page."""
        path = f"/sync/history/{item_type}" + (f"/{trakt_id}" if trakt_id else "")
        params: dict[str, Any] = {"limit": 250}
        if start_at is not None:
            params["start_at"] = iso(start_at)
        if end_at is not None:
            params["end_at"] = iso(end_at)
        return await self._pages(profile, path, params, shared={})

    async def watched(
        self, profile: str, item_type: str, seasons: bool = True
    ) -> list[dict[str, Any]]:
        """The watched snapshot (§10): every movie, or every show with its seasons and
        episodes (`seasons` False: without them, `extended=noseasons`, each show's own count
        only), with its number of plays; every page. Since mid-2026 Trakt pages it (100
        by default) and gives a show its `seasons` only with `extended=progress`, season 0
        only with `specials=true` (trakt-api discussion #775, #844, #792): asked plainly, the
        first 100 items came back, none with an episode's plays. With `progress` it pages at
        100 shows at most (PlexTraktSync#2518), without at 250."""
        params: dict[str, Any] = {"limit": 250}
        if item_type == "shows":
            params |= (
                {"extended": "progress", "specials": "true"}
                if seasons
                else {"extended": "noseasons"}
            )
        return await self._pages(profile, f"/sync/watched/{item_type}", params)

    async def _pages(
        self,
        profile: str,
        path: str,
        params: dict[str, Any],
        shared: dict[tuple[str, int | str], Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Every entry of a paged listing; with `shared`, equal media objects of its entries
        made one (`share_media`)."""
        entries: list[dict[str, Any]] = []
        page, last = 1, None
        while True:
            response = await self._call(profile, "GET", path, params={**params, "page": page})
            if response.status_code >= 400:
                raise TraktError(SERVICE, f"GET {path} answered {response.status_code}")
            found: list[dict[str, Any]] = _decoded(response, list)
            if found == last:  # the page asked for was not served: this is all there is
                return entries
            if shared is not None:
                share_media(found, shared)
            entries += found
            if not _more_pages(response, page, len(found)):
                return entries
            page, last = page + 1, found

    async def ratings(self, profile: str, item_type: str = "all") -> list[dict[str, Any]]:
        """Every rating of one type (`all`, `movies`, `shows`, `seasons`, `episodes`)."""
        return await self._pages(profile, f"/sync/ratings/{item_type}", {"limit": 250})

    async def search(self, id_type: str, value: str, kind: str) -> list[dict[str, Any]]:
        """`/search/{id_type}/{id}?type=...` (no sign-in needed)."""
        return await self._search(f"/search/{id_type}/{value}", {"type": kind})

    async def search_title(self, kind: str, title: str, year: int | None) -> list[dict[str, Any]]:
        """`/search/{movie|show}?query=...&fields=title[&years=...]`: the items whose title
        matches the text (no sign-in needed). Fifty, not the first page of ten: a title names
        an item only when no other result has it too (ids.title_match), however it ranks."""
        params = {"query": title, "fields": "title", "limit": "50"}
        if year:
            params["years"] = str(year)
        return await self._search(f"/search/{kind}", params)

    async def _search(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.http.request(
            "GET", path, params=params, pacer=self._pacer_of(""), bucket="read"
        )
        _raise_for_account(response)
        if response.status_code == 404:
            return []
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"search answered {response.status_code}")
        try:
            found = response.json()
        except ValueError:
            raise TraktError(SERVICE, "search answered with something other than JSON") from None
        return list(found) if isinstance(found, list) else []

    async def show_id(self, id_type: str, value: str) -> int | None:
        """The Trakt id of the show a TMDB/TVDB/IMDb id names (`/search`), None when Trakt has
        none."""
        for hit in await self.search(id_type, value, "show"):
            show = hit.get("show") if isinstance(hit, dict) else None
            ids = show.get("ids") if isinstance(show, dict) else None
            trakt = whole(ids.get("trakt")) if isinstance(ids, dict) else None
            if trakt is not None:
                return trakt
        return None

    async def show_seasons(self, show: int | str) -> list[ListedSeason]:
        """Every season of a show with its episodes, their absolute numbers, air times and
        runtimes: `/shows/{id}/seasons?extended=full,episodes` (no sign-in; `{id}` is the
        Trakt id, slug or IMDb id). Raises TraktItemError when Trakt does not know the show."""
        response = await self.http.request(
            "GET",
            f"/shows/{show}/seasons",
            params={"extended": "full,episodes"},
            pacer=self._pacer_of(""),
            bucket="read",
        )
        _raise_for_account(response)
        if response.status_code == 404:
            raise TraktItemError(SERVICE, f"Trakt has no show {show}")
        if response.status_code >= 400:
            raise TraktError(
                SERVICE, f"the season list of show {show} answered {response.status_code}"
            )
        try:
            return parse_seasons(response.json())
        except ValueError:
            raise TraktError(SERVICE, f"the season list of show {show} is not JSON") from None

    async def last_activities(self, profile: str) -> dict[str, Any]:
        response = await self._call(profile, "GET", "/sync/last_activities")
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"last_activities answered {response.status_code}")
        return dict(_decoded(response, dict))

    # ------------------------------------------------------------------ account, lists

    async def settings(self, profile: str) -> AccountLimits:
        """`/users/settings` as VIP flag and per-kind item limits (`limits.py`)."""
        response = await self._call(profile, "GET", SETTINGS_PATH)
        if response.status_code >= 400:
            raise TraktError(SERVICE, f"/users/settings answered {response.status_code}")
        return parse_settings(_decoded(response, dict))

    async def _limit_told(self, profile: str, path: str, headers: httpx.Headers) -> TraktLimitError:
        """A 420 on `path` as its error. Where Trakt's answer leaves out the limit or whether
        the account is VIP (its 2026 bare 420), the account's settings tell them (§15), so the
        alert says the way out (upgrade, or make room) and names the limit where they list it;
        when they cannot be read it is told as Trakt said it."""
        hit = LimitHit.from_headers(headers)
        kind = _limited_kind(path)
        if hit.limit is None or hit.vip is None:
            try:
                limits = await self.settings(profile)
            except ServiceError:
                pass
            else:
                listed = limits.limit(_SETTINGS_KINDS.get(kind, ""))
                hit = replace(
                    hit,
                    limit=hit.limit if hit.limit is not None else listed,
                    vip=hit.vip if hit.vip is not None else limits.vip,
                )
        return _limit_error(kind, hit)

    async def collection(self, profile: str, item_type: str) -> list[dict[str, Any]]:
        """The collection (`movies` or `shows`) with media details, every page."""
        return await self._pages(
            profile, f"/sync/collection/{item_type}", {"limit": 250, "extended": "metadata"}
        )

    async def watchlist(self, profile: str, item_type: str | None = None) -> list[dict[str, Any]]:
        """The watchlist (all of it, or `movies`, `shows`, ...), every page."""
        path = "/sync/watchlist" + (f"/{item_type}" if item_type else "")
        return await self._pages(profile, path, {"limit": 250})

    async def add_collection(
        self, profile: str, entries: Sequence[CollectionWrite]
    ) -> ListWriteResult:
        """Add or update collection items; stops at the account limit (see `limit_hit`)."""
        shaped = [(e.item, _collected(e)) for e in entries]
        return await self._list_write(profile, "/sync/collection", shaped, collection_body)

    async def remove_collection(self, profile: str, items: Sequence[MediaRef]) -> ListWriteResult:
        shaped: list[tuple[MediaRef, dict[str, Any]]] = [(item, {}) for item in items]
        return await self._list_write(profile, "/sync/collection/remove", shaped, collection_body)

    async def add_watchlist(self, profile: str, items: Sequence[MediaRef]) -> ListWriteResult:
        """Add movies/shows to the watchlist; stops at the account limit (see `limit_hit`)."""
        shaped: list[tuple[MediaRef, dict[str, Any]]] = [(item, {}) for item in items]
        return await self._list_write(profile, "/sync/watchlist", shaped, watchlist_body)

    async def remove_watchlist(self, profile: str, items: Sequence[MediaRef]) -> ListWriteResult:
        shaped: list[tuple[MediaRef, dict[str, Any]]] = [(item, {}) for item in items]
        return await self._list_write(profile, "/sync/watchlist/remove", shaped, watchlist_body)

    async def _list_write(
        self,
        profile: str,
        path: str,
        entries: Sequence[tuple[MediaRef, dict[str, Any]]],
        shape: Callable[[Sequence[tuple[MediaRef, dict[str, Any]]]], dict[str, list[Any]]],
    ) -> ListWriteResult:
        counts = dict.fromkeys(("added", "updated", "existing", "deleted"), 0)
        missing: list[MediaRef] = []
        item_count = None
        for start in range(0, len(entries), HISTORY_BATCH):
            batch = entries[start : start + HISTORY_BATCH]
            try:
                # Collection and watchlist writes say what they hold, not what to add to:
                # sending one twice changes nothing, so a lost answer may be resent.
                response = await self._call(
                    profile, "POST", path, json=shape(batch), idempotent=True
                )
            except TraktLimitError as exc:
                return _list_result(counts, missing, item_count, exc.hit)
            if response.status_code >= 400:
                raise TraktError(SERVICE, f"{path} answered {response.status_code}")
            answer = _decoded(response, dict, wrote=True)
            if not readable_not_found(answer):
                raise Unavailable(
                    SERVICE,
                    changed_answer(
                        "Trakt",
                        f"{path} answered {response.status_code} without a `not_found`"
                        " watchbridge can read",
                        "it is sent again later: sending it twice changes nothing",
                    ),
                )
            for name in counts:
                counts[name] += _count_of(answer.get(name))
            missing += _list_not_found(answer, [item for item, _ in batch])
            listed_in = answer.get("list")
            listed = listed_in.get("item_count") if isinstance(listed_in, dict) else None
            item_count = int(listed) if isinstance(listed, int) else item_count
        return _list_result(counts, missing, item_count, None)


def _collected(entry: CollectionWrite) -> dict[str, Any]:
    extra: dict[str, Any] = dict(entry.metadata)
    if entry.collected_at is not None:
        extra["collected_at"] = iso(entry.collected_at)
    return extra


def _list_result(
    counts: dict[str, int], missing: list[MediaRef], item_count: int | None, hit: LimitHit | None
) -> ListWriteResult:
    return ListWriteResult(
        added=counts["added"],
        updated=counts["updated"],
        existing=counts["existing"],
        deleted=counts["deleted"],
        not_found=missing,
        limit_hit=hit,
        item_count=item_count,
    )


def _list_not_found(answer: dict[str, Any], sent: Sequence[MediaRef]) -> list[MediaRef]:
    """Items Trakt echoed as not found: movies/shows by their ids, episodes by theirs or by
    their show's (episodes sent under a show come back as that show)."""
    missing = answer.get("not_found") or {}
    echoed = [
        {(k, str(v)) for k, v in entry["ids"].items() if v not in (None, "")}
        for group in ("movies", "shows", "episodes")
        for entry in missing.get(group) or []
        if isinstance(entry, dict) and isinstance(entry.get("ids"), dict)
    ]
    if not echoed:
        return []

    def sent_ids(item: MediaRef) -> set[tuple[str, str]]:
        ids = trakt_ids(item.ids) if item.kind != "episode" else {}
        if item.kind == "episode":
            ids = trakt_ids(item.show_ids) or trakt_ids(item.ids)
        return {(k, str(v)) for k, v in ids.items()}

    return [item for item in sent if any(sent_ids(item) & entry for entry in echoed)]


def _count_of(value: Any) -> int:
    if not isinstance(value, dict):
        return 0
    return sum(int(v) for v in value.values() if isinstance(v, int) and not isinstance(v, bool))


def collection_body(entries: Sequence[tuple[MediaRef, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Movies by ids; episodes under their show by season/number (their own ids otherwise)."""
    return sync_body(entries)


def watchlist_body(entries: Sequence[tuple[MediaRef, dict[str, Any]]]) -> dict[str, list[Any]]:
    """Movies and shows by their ids (the only kinds both watchlists hold)."""
    body: dict[str, list[Any]] = {}
    for item, extra in entries:
        group = "shows" if item.kind == "show" else "movies"
        body.setdefault(group, []).append({"ids": trakt_ids(item.ids), **extra})
    return body


def _app_refused(status: int) -> TraktAccountError:
    """Trakt will not serve the app (401 unknown client, 403 unapproved, 426 its owner lacks
    VIP) at a sign-in: polling on or signing in again cannot help, the app's settings can."""
    if status == 426:  # Trakt's "VIP only": the app is known, its owner is not VIP
        words = (
            "the account that owns the app of services.trakt.client_id must be VIP (since "
            "July 2026): renew that account's VIP, or use an app a VIP account owns"
        )
    elif status == 401:  # OAuth's "invalid_client": a client id it does not know
        words = (
            f"check services.trakt.client_id against your Trakt app's page ({APPS_URL}). "
            "Since July 2026 only a VIP account can own an app, and Trakt deletes the apps "
            "of an account whose VIP ended: if yours is gone, create one on a VIP account"
        )
    else:
        words = "check services.trakt.client_id, and that the app belongs to a VIP account"
    return TraktAccountError(f"Trakt refused the app (HTTP {status}): {words}", status)


def _client_refused(response: httpx.Response) -> str:
    return (
        f"Trakt refused the app's credentials ({_oauth_error(response)}): check "
        "services.trakt.client_id and services.trakt.client_secret against your Trakt app's "
        f"page ({APPS_URL}; or leave client_secret out). Since July 2026 only a VIP account "
        "can own an app, and Trakt deletes the apps of an account whose VIP ended: if yours is "
        "gone, create one on a VIP account. Then run `watchbridge auth trakt` if asked"
    )


def _decoded(response: httpx.Response, kind: type, *, wrote: bool = False) -> Any:
    """The answer's JSON, of the shape asked for. A body cut off or replaced on the way (a
    proxy's page with a 200) is an outage: for a write, one that may have landed."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, kind):
        request = response.request
        raise Unavailable(
            SERVICE,
            f"{request.method} {request.url.path} answered {response.status_code} with an "
            "unreadable body",
            outcome_unknown=wrote,
        )
    return answer


def share_media(entries: list[Any], shared: dict[tuple[str, int | str], Any]) -> None:
    """Make each entry's `show`, `movie` and `episode` object the one an earlier entry holds
    when they are equal (`shared`: by kind and Trakt id, what the entries read so far hold),
    in place. A history repeats its show in every entry of its episodes: at 60,000 plays
    those copies are ~40 MB of a ~90 MB listing, held until the read is done. The entries are
    only read (a change makes a copy, as `with_tmdb_read_before` does), so sharing changes
    nothing of what they say."""
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for kind in ("show", "movie", "episode"):
            media = entry.get(kind)
            ids = media.get("ids") if isinstance(media, dict) else None
            trakt_id = ids.get("trakt") if isinstance(ids, dict) else None
            if not isinstance(trakt_id, int | str):
                continue
            known = shared.get((kind, trakt_id))
            if known is not None and known == media:
                entry[kind] = known
            else:
                shared[(kind, trakt_id)] = media


def _more_pages(response: httpx.Response, page: int, found: int) -> bool:
    """Whether a listing goes on after `page`. Trakt sometimes leaves out its page count or
    sends a wrong one (trakt-api#896), so a full page is read on from and an empty one ends
    the listing, whatever the count says: a short read would take the rest for plays
    removed on Trakt."""
    if found == 0:
        return False
    count = response.headers.get("x-pagination-page-count", "").strip()
    if count.isdigit() and page < int(count):
        return True
    limit = response.headers.get("x-pagination-limit", "").strip()
    asked = response.request.url.params.get("limit", "")
    size = int(limit) if limit.isdigit() else int(asked) if asked.isdigit() else 0
    return size > 0 and found >= size


def _raise_if_refused(response: httpx.Response, path: str) -> None:
    """A sync write Trakt refused for what it holds (REFUSED_WHOLE): TraktRefused, with
    Trakt's answer."""
    status = response.status_code
    if status not in REFUSED_WHOLE:
        return
    answer = refusal_text(response)
    told = f": {answer}" if answer else " (no reason given)"
    raise TraktRefused(f"{path} answered {status}{told}", status, answer)


def refusal_text(response: httpx.Response) -> str:
    """What Trakt said in refusing a request, on one line and short: the `error`,
    `error_description` or `message` of a JSON answer, else its text; an HTML page (a proxy's)
    says nothing of the request."""
    if "html" in response.headers.get("content-type", ""):
        return ""
    try:
        data = response.json()
    except ValueError:
        data = response.text
    if isinstance(data, dict):
        said = [str(data[k]) for k in ("error", "error_description", "message") if data.get(k)]
        data = " - ".join(said) if said else json.dumps(data)
    return clipped(str(data or ""), ANSWER_CHARS)


# What Trakt's refusal of a token refresh means, for the person who reads it (not RFC 6749's
# code): invalid_grant is a sign-in revoked on trakt.tv, or its refresh token spent elsewhere.
_REFUSALS = {"invalid_grant": "it was revoked or used elsewhere"}


def _refusal_words(code: str) -> str:
    """A refused refresh's OAuth error code in words; one we have none for, as Trakt said it."""
    return _REFUSALS.get(code, f"Trakt said {code}")


def _oauth_error(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    error = data.get("error") if isinstance(data, dict) else None
    return str(error or f"HTTP {response.status_code}")


# Headers only Trakt's application sends (trakt-api.md §1, §2): its request id, and what its
# refusals of an app or an account say (426's upgrade page, 420's limit, 423's lock). A page of
# Cloudflare or a proxy in its place carries none of them.
TRAKT_OWN_HEADERS = (
    "x-request-id",
    "x-upgrade-url",
    "x-vip-user",
    "x-account-limit",
    "x-account-locked",
    "x-account-deactivated",
)


def from_trakt(response: httpx.Response) -> bool:
    """Whether Trakt's application gave `response`: its answers carry `x-request-id` (and its
    refusals of the app or account the headers saying why), a page of Cloudflare (or of a
    proxy) in its place does not (trakt-api.md §1). Whether the sign-in host sends
    `x-request-id` is not documented: there a 426 is told Trakt's by its `X-Upgrade-URL`."""
    return any(name in response.headers for name in TRAKT_OWN_HEADERS)


# What Trakt's sign-in host answers when it refuses (the grant, the code, the app): a page of
# Cloudflare or a proxy in place of one is an outage (`_raise_if_in_its_place`), held and
# tried again, not a refusal that asks the user to sign in again.
REFUSING = frozenset({400, 401, 403, 426})
# A device poll's: any error but a 429, which says to slow down whoever says it.
POLL_ERRORS = frozenset(range(400, 600)) - {429}
POLL_ANSWERS = frozenset(_DEVICE_STATUS)  # documented as bare statuses (§6)
# An empty 401 to a device request is Trakt's too: the device routes answer bare statuses (the
# contract declares no error body there), and 401 is OAuth's answer to a client it does not
# know (RFC 6749 5.2): the app's client id or secret, which no poll until the code runs out
# mends. A proxy's 401 is a page (HTML, a line of text), told apart as any other.
CLIENT_REFUSED = frozenset({401})
# What the person at the terminal does about a page in place of the sign-in host's answer.
TRY_AGAIN = ", not a problem of the app's settings: try again in a few minutes"


def from_sign_in_host(response: httpx.Response, bare: frozenset[int] = frozenset()) -> bool:
    """Whether Trakt's sign-in host (`auth_url`) gave the error `response`, not a page of
    Cloudflare or a proxy in its place. The reference does not say whether that host's
    answers carry `x-request-id`, so their shape decides: an OAuth server's error is JSON
    (RFC 6749 5.2: `{"error": ...}`), Trakt's device poll a bare status (`bare`: those it
    documents); an HTML page, or any other body, is not its own unless it carries a header
    only Trakt sends (`from_trakt`)."""
    if "html" in response.headers.get("content-type", "").lower():
        return False  # no OAuth answer, whoever served it
    if not response.content:
        return response.status_code in bare or from_trakt(response)
    try:
        answer = response.json()
    except ValueError:
        return from_trakt(response)
    return (isinstance(answer, dict) and "error" in answer) or from_trakt(response)


def _raise_if_in_its_place(
    response: httpx.Response,
    what: str,
    statuses: frozenset[int],
    bare: frozenset[int] = frozenset(),
    advice: str = "",
) -> None:
    """An answer of the sign-in host with one of `statuses` that is a page in its place
    (`from_sign_in_host`): Unavailable, held as such pages are (IN_ITS_PLACE_PAUSE): they
    pass in minutes, and neither the sign-in nor the app's settings are to blame."""
    status = response.status_code
    if status in statuses and not from_sign_in_host(response, bare):
        raise Unavailable(
            SERVICE,
            f"Trakt's sign-in host did not answer the {what} (a proxy/firewall page "
            f"answered {status} in its place){advice}",
            retry_after=IN_ITS_PLACE_PAUSE,
            status=status,
        )


def _raise_if_firewall(response: httpx.Response) -> None:
    """A 403 of the API without Trakt's request id is Cloudflare's (pitfalls §7), not Trakt
    refusing the app: its bans pass (minutes, not seconds), and the app's settings are not to
    blame. (The HTTP policy sorts most such pages out first, by `own_answer`.)"""
    if response.status_code == 403 and not from_trakt(response):
        raise Unavailable(
            SERVICE,
            "Trakt's firewall blocked the request (403 without a Trakt request id)",
            retry_after=IN_ITS_PLACE_PAUSE,
        )


SETTINGS_PATH = "/users/settings"
# A 420's kind (`_limited_kind`) as `/users/settings` names its limit (`limits.list.item_count`).
_SETTINGS_KINDS = {
    "history": "history",
    "ratings": "ratings",
    "the watchlist": "watchlist",
    "the collection": "collection",
    "lists": "list",
}


def _limited_kind(path: str) -> str:
    """What a 420 on `path` is a limit of, in the words of Trakt's account page."""
    for part, kind in (
        ("/scrobble", "history"),
        ("/sync/history", "history"),
        ("/sync/ratings", "ratings"),
        ("/sync/watchlist", "the watchlist"),
        ("/sync/collection", "the collection"),
        ("/lists", "lists"),
    ):
        if part in path:
            return kind
    return "this kind of item"


# The limits VIP does not raise: Trakt's 2026 limits give watched history 100,000 plays with
# VIP and without (trakt-api.md §15), so upgrading would not make room.
SAME_WITH_VIP = frozenset({"history"})


def _limit_error(kind: str, hit: LimitHit) -> TraktLimitError:
    """A 420 of `kind` (`_limited_kind`) in words: what is paused and the way out."""
    upgrade = f"upgrade to VIP ({hit.upgrade_url or DEFAULT_UPGRADE_URL})"
    if hit.vip:
        fix = "the account is VIP and still at its limit: make room on Trakt"
    elif kind in SAME_WITH_VIP:
        fix = f"make room on Trakt (a VIP account has the same {kind} limit)"
    elif hit.vip is False:
        fix = f"{upgrade} or make room on Trakt"
    else:  # a bare 420 (Trakt's 2026 guide) does not say whether the account is VIP
        fix = f"make room on Trakt, or {upgrade} if the account is not VIP"
    return TraktLimitError(
        f"Trakt account limit reached for {kind}"
        + (f" ({hit.limit} items)" if hit.limit is not None else "")
        + f": {kind} writes are paused; {fix}",
        hit,
    )


def _locked_words(headers: httpx.Headers) -> str:
    """A 423 in words: Trakt's headers tell a locked account (its abuse checks) from a
    deactivated one; both are for Trakt's support to undo."""
    if headers.get("x-account-deactivated", "").lower() == "true":
        return "the Trakt account is deactivated: contact Trakt support to reactivate it"
    if headers.get("x-account-locked", "").lower() == "true":
        return (
            "the Trakt account is locked (Trakt's abuse checks lock accounts that send too "
            "much): contact Trakt support to unlock it"
        )
    return "the Trakt account is locked or deactivated: contact Trakt support"


def _raise_for_account(response: httpx.Response) -> None:
    status = response.status_code
    headers = response.headers
    if status == 420:
        raise _limit_error(_limited_kind(response.request.url.path), LimitHit.from_headers(headers))
    if status == 423:
        raise TraktAccountError(_locked_words(headers), 423)
    if status == 426:
        url = headers.get("x-upgrade-url") or UPGRADE_URL
        raise TraktAccountError(
            f"Trakt answered that this needs VIP (426; {url}): since July 2026 the account "
            "that owns the app of services.trakt.client_id must be VIP, so check that one "
            "first; some features also need the signed-in account's own VIP",
            426,
        )
    if status == 403 and from_trakt(response):
        raise TraktAccountError(
            "Trakt refused the app (403): check services.trakt.client_id and that the app "
            "belongs to a VIP account",
            403,
        )
    _raise_if_firewall(response)
