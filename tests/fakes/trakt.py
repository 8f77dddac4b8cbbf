"""Stateful fake of the Trakt API v2 and its OAuth endpoints.

Follows ``shared/reference/trakt-api.md`` (section numbers below refer to it). One instance
serves both bases: point ``services.trakt.api_url`` *and* ``auth_url`` at ``fake.url``; the
OAuth routes live under ``/oauth/...`` as on ``auth.trakt.tv``.

Every request passes, in this order (each step can answer instead of the handler):

1. "Cloudflare": no ``User-Agent`` or a Title-Cased ``Trakt-*`` header name -> HTML ``403``
   without ``x-request-id`` (§1; trakt-api#670, #687).
2. API routes: unknown/missing ``trakt-api-key`` -> ``403``; ``trakt-api-version`` != 2 ->
   ``400``; ``fake.vip = False`` (the app's owner lacks VIP) -> ``426``; ``Content-Type`` not
   JSON -> ``412``; bad/expired/revoked bearer token -> ``401`` (also on routes where OAuth is
   optional, when a token is sent); locked account -> ``423``; rate limit -> ``429``.
   OAuth routes: ``Content-Type`` -> ``412``; client checks -> ``401 invalid_client``.
3. The handler; every answer from the application carries ``x-request-id``/``x-runtime``.

Choices made where the reference is silent are marked ``SILENT:`` in comments. Where public
evidence is newer than the reference the fake follows the evidence, citing it: a missing
episode sent under its show is echoed in ``not_found.episodes`` (§9; trakt-api#357), and the
watched snapshot is paginated, with a show's ``seasons`` only on ``extended=progress`` (§10;
trakt-api discussion #775, #835, #844).
Time comes from ``fake.now()`` (wall clock + ``fake.advance(seconds)``), so token expiry,
device-code expiry, the scrobble 409 window and rate-limit windows can be crossed without
sleeping.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from .base import (
    JSON_TYPE,
    FakeServer,
    HeaderMap,
    Request,
    Response,
    Shaped,
    cloudflare_page,
    html_response,
    json_response,
    paginate,
    route,
)

CLIENT_ID = "9b36d8c0db59eff5038aea7a417d73e69aea75b41aac771816d2ef1b3109cc2f"
CLIENT_SECRET = "d6ea27703957b69939b8104ed4524595e210cd2e79af587744a7eb6e58f5b3d2"
OOB = "urn:ietf:wg:oauth:2.0:oob"
INVALID_GRANT = {  # body of samples/trakt/token_refresh_invalid_grant.http.json
    "error": "invalid_grant",
    "error_description": "The provided authorization grant is invalid, expired, revoked, does "
    "not match the redirection URI used in the authorization request, or was issued to "
    "another client.",
}
CLOUDFLARE_BLOCK = (  # body of samples/trakt/error_403_cloudflare.http.json
    "<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head>"
    "<body>Sorry, you have been blocked</body></html>"
)
PROXY_PAGE = (  # what nginx (a reverse proxy, a network's filter) answers of its own
    "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}"
    "</h1></center><hr><center>nginx</center></body></html>"
)
WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


# -- time ------------------------------------------------------------------------------------
def iso(ts: float) -> str:
    """``2014-09-01T09:10:11.000Z`` (Trakt's format, milliseconds)."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def to_minute(ts: float) -> float:
    """Trakt keeps ``watched_at`` and similar only to the minute (§1)."""
    return math.floor(ts / 60) * 60


def parse_iso(value: str) -> float:
    """ISO-8601 to a unix timestamp (naive = UTC); ``ValueError`` when unparsable."""
    dt = datetime.fromisoformat(value)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


# -- catalogue -------------------------------------------------------------------------------
@dataclass(eq=False)
class Movie:
    trakt: int
    title: str
    year: int | None
    slug: str
    imdb: str | None = None
    tmdb: int | None = None
    runtime: int = 120  # minutes: how long a "watching" state lasts after start
    released: str | None = None  # ISO; used for ``watched_at: "released"``
    kind: ClassVar[str] = "movie"

    def ids(self) -> dict[str, Any]:
        return {"trakt": self.trakt, "slug": self.slug, "imdb": self.imdb, "tmdb": self.tmdb}

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "year": self.year, "ids": self.ids()}


@dataclass(eq=False)
class Show:
    trakt: int
    title: str
    year: int | None
    slug: str
    imdb: str | None = None
    tmdb: int | None = None
    tvdb: int | None = None
    seasons: dict[int, Season] = field(default_factory=dict, repr=False)
    kind: ClassVar[str] = "show"

    def ids(self) -> dict[str, Any]:
        return {
            "trakt": self.trakt,
            "slug": self.slug,
            "tvdb": self.tvdb,
            "imdb": self.imdb,
            "tmdb": self.tmdb,
        }

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "year": self.year, "ids": self.ids()}

    def episodes(self) -> list[Episode]:
        return [e for s in sorted(self.seasons) for e in self.seasons[s].sorted_episodes()]

    def episode(self, season: Any, number: Any) -> Episode | None:
        s = self.seasons.get(season) if isinstance(season, int) else None
        return s.episodes.get(number) if s is not None and isinstance(number, int) else None


@dataclass(eq=False)
class Season:
    show: Show = field(repr=False)
    number: int
    trakt: int
    tvdb: int | None = None
    tmdb: int | None = None
    episodes: dict[int, Episode] = field(default_factory=dict, repr=False)
    kind: ClassVar[str] = "season"

    def ids(self) -> dict[str, Any]:
        return {"trakt": self.trakt, "tvdb": self.tvdb, "tmdb": self.tmdb}

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "ids": self.ids()}

    def sorted_episodes(self) -> list[Episode]:
        return [self.episodes[n] for n in sorted(self.episodes)]


@dataclass(eq=False)
class Episode:
    show: Show = field(repr=False)
    season: int
    number: int
    trakt: int
    title: str | None = None
    tvdb: int | None = None
    imdb: str | None = None
    tmdb: int | None = None
    number_abs: int | None = None
    runtime: int | None = 45  # None: Trakt knows none (answered null, trakt-api#868)
    first_aired: str | None = None
    kind: ClassVar[str] = "episode"

    def ids(self) -> dict[str, Any]:
        return {"trakt": self.trakt, "tvdb": self.tvdb, "imdb": self.imdb, "tmdb": self.tmdb}

    def to_json(self) -> dict[str, Any]:
        return {
            "season": self.season,
            "number": self.number,
            "title": self.title,
            "ids": self.ids(),
        }

    @property
    def season_obj(self) -> Season:
        return self.show.seasons[self.season]


Media = Movie | Show | Season | Episode
Playable = Movie | Episode
M = TypeVar("M", Movie, Show, Season, Episode)
PLURAL = {"movie": "movies", "show": "shows", "season": "seasons", "episode": "episodes"}


def key_of(item: Media) -> tuple[str, int]:
    return (item.kind, item.trakt)


def media_json(item: Media) -> dict[str, Any]:
    """Media part of list items: ``movie``, ``show``, ``season``/``episode`` + ``show``."""
    if isinstance(item, Episode | Season):
        return {item.kind: item.to_json(), "show": item.show.to_json()}
    return {item.kind: item.to_json()}


# -- per-user state --------------------------------------------------------------------------
@dataclass
class HistoryEntry:
    id: int
    item: Playable
    watched_at: str | None  # ISO, minute precision; None for ``watched_at: "unknown"``
    action: str  # "scrobble" | "checkin" | "watch"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "watched_at": self.watched_at,
            "action": self.action,
            "type": self.item.kind,
            **media_json(self.item),
        }


@dataclass
class Rating:
    item: Media
    rating: int
    rated_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rated_at": self.rated_at,
            "rating": self.rating,
            "type": self.item.kind,
            **media_json(self.item),
        }


@dataclass
class WatchlistEntry:
    id: int
    item: Media
    listed_at: str
    notes: str | None = None

    def to_json(self, rank: int) -> dict[str, Any]:
        return {
            "rank": rank,
            "id": self.id,
            "listed_at": self.listed_at,
            "notes": self.notes,
            "type": self.item.kind,
            **media_json(self.item),
        }


@dataclass
class CollectionEntry:
    item: Playable
    collected_at: str
    updated_at: str
    metadata: dict[str, Any] = field(default_factory=dict)


# §13 allowed values of collection metadata fields (3d: boolean on write)
COLLECTION_VALUES: dict[str, frozenset[str]] = {
    name: frozenset(values.split())
    for name, values in {
        "media_type": "digital bluray hddvd dvd vcd vhs betamax laserdisc",
        "resolution": "uhd_4k hd_1080p hd_1080i hd_720p sd_480p sd_480i sd_576p sd_576i",
        "hdr": "dolby_vision hdr10 hdr10_plus hlg",
        "audio": "lpcm mp3 mp2 aac ogg ogg_opus wma flac dts dts_ma dts_hr dts_x auro_3d "
        "dolby_digital dolby_digital_plus dolby_digital_plus_atmos dolby_atmos dolby_truehd "
        "dolby_prologic",
        "audio_channels": "1.0 2.0 2.1 3.0 3.1 4.0 4.1 5.0 5.1 5.1.2 5.1.4 6.1 7.1 7.1.2 7.1.4 "
        "9.1 10.1",
    }.items()
}
COLLECTION_FIELDS = frozenset({*COLLECTION_VALUES, "3d", "collected_at"})


@dataclass
class Playback:
    id: int
    item: Playable
    progress: float
    paused_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "paused_at": self.paused_at,
            "id": self.id,
            "type": self.item.kind,
            **media_json(self.item),
        }


@dataclass
class Watching:
    item: Playable
    progress: float
    started_at: float
    expires_at: float


@dataclass
class Scrobbled:
    watched_at: str
    expires_at: str


def _activity_template(stamp: str) -> dict[str, Any]:
    keys = {  # §8 / samples/trakt/last_activities.json
        "movies": "watched_at collected_at rated_at watchlisted_at favorited_at commented_at "
        "paused_at hidden_at",
        "episodes": "watched_at collected_at rated_at watchlisted_at commented_at paused_at",
        "shows": "rated_at watchlisted_at favorited_at commented_at hidden_at dropped_at",
        "seasons": "rated_at watchlisted_at commented_at hidden_at",
        "comments": "liked_at reacted_at blocked_at",
        "lists": "liked_at reacted_at updated_at commented_at",
        "watchlist": "updated_at",
        "favorites": "updated_at",
        "collaborations": "updated_at",
        "account": "settings_at followed_at following_at pending_at requested_at",
        "saved_filters": "updated_at",
        "notes": "updated_at",
    }
    return {"all": stamp} | {s: dict.fromkeys(k.split(), stamp) for s, k in keys.items()}


CONNECTIONS = ("facebook", "twitter", "mastodon", "google", "tumblr", "medium", "slack", "apple")
FREE_LIMITS: dict[str, Any] = {  # samples/trakt/users_settings.json (2026 free tier)
    "list": {"count": 5, "item_count": 250},
    "watchlist": {"item_count": 250},
    "favorites": {"item_count": 50},
    "collection": {"item_count": 1000},
    "notes": {"item_count": 100},
    "search": {"recent_count": 5},
}
VIP_LIMITS: dict[str, Any] = {
    "list": {"count": 100, "item_count": 5000},
    "watchlist": {"item_count": 5000},
    "favorites": {"item_count": 500},
    "collection": {"item_count": 100000},
    "notes": {"item_count": 2000},
    "search": {"recent_count": 20},
}


@dataclass(eq=False)
class User:
    username: str
    name: str
    vip: bool
    created: float
    private: bool = False
    limits: dict[str, Any] = field(default_factory=dict)
    uuid: str = field(default_factory=lambda: secrets.token_hex(20))
    locked: bool = False
    deactivated: bool = False
    history: list[HistoryEntry] = field(default_factory=list)
    ratings: dict[tuple[str, int], Rating] = field(default_factory=dict)
    watchlist: dict[tuple[str, int], WatchlistEntry] = field(default_factory=dict)
    collection: dict[tuple[str, int], CollectionEntry] = field(default_factory=dict)
    playback: dict[tuple[str, int], Playback] = field(default_factory=dict)
    watching: Watching | None = None
    scrobbled: dict[tuple[str, int], Scrobbled] = field(default_factory=dict)
    activities: dict[str, Any] = field(default_factory=dict)

    def settings_json(self) -> dict[str, Any]:
        """Shape of samples/trakt/users_settings.json."""
        return {
            "user": {
                "username": self.username,
                "private": self.private,
                "name": self.name,
                "vip": self.vip,
                "vip_ep": False,
                "vip_og": False,
                "vip_years": 1 if self.vip else 0,
                "director": False,
                "ids": {"slug": self.username, "uuid": self.uuid},
                "joined_at": iso(to_minute(self.created)),
                "location": None,
                "about": None,
                "gender": None,
                "age": None,
                "images": {"avatar": {"full": "https://walter-r2.trakt.tv/images/avatar.jpg"}},
            },
            "account": {
                "timezone": "Europe/Berlin",
                "date_format": "dmy",
                "time_24hr": True,
                "cover_image": None,
            },
            "connections": dict.fromkeys((*CONNECTIONS, "dropbox", "microsoft"), False),
            "sharing_text": {
                "watching": "I'm watching [item]",
                "watched": "I just watched [item]",
                "rated": "[item] [stars]",
            },
            "permissions": {"commenting": True, "liking": True, "following": True},
            "limits": copy.deepcopy(self.limits),
        }


# -- auth state ------------------------------------------------------------------------------
@dataclass(eq=False)
class Token:
    access_token: str
    refresh_token: str
    user: User
    created_at: int
    expires_in: int
    expired: bool = False  # forced by ``expire_tokens``
    access_revoked: bool = False  # old access token after a refresh
    refresh_used: bool = False  # single-use refresh tokens (§6)
    refresh_refused: bool = False  # refused without being used (`refuse_refresh_tokens`)
    revoked: bool = False  # /oauth/revoke or ``revoke_tokens``: both dead

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": "public",
            "created_at": self.created_at,
        }


@dataclass(eq=False)
class DeviceCode:
    device_code: str
    user_code: str
    created: float
    expires_in: int
    interval: int
    state: Literal["pending", "approved", "denied", "used"] = "pending"
    user: User | None = None
    expired: bool = False
    last_poll: float | None = None
    slow_down: int = 0  # next polls answering 429
    token: Token | None = None


@dataclass(eq=False)
class AuthCode:
    code: str
    user: User
    redirect_uri: str
    code_challenge: str | None = None
    used: bool = False


@dataclass
class RateLimit:
    period: float  # seconds
    limit: int


@dataclass
class _Window:
    start: float
    count: int = 0


class _Abort(Exception):
    """Raised inside handlers: answer ``resp`` instead."""

    def __init__(self, resp: Response) -> None:
        super().__init__(resp.status)
        self.resp = resp


def _fail(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> _Abort:
    """An ``_Abort``; ``body=None`` gives an empty body (undocumented error bodies, samples)."""
    if body is not None:
        return _Abort(json_response(body, status, headers))
    return _Abort(Response(status, b"", {"Content-Type": JSON_TYPE, **(headers or {})}))


# -- route decorators --------------------------------------------------------------------------
Auth = Literal["required", "optional", "oauth"]


def _endpoint(method: str, pattern: str, auth: Auth) -> Callable[[Any], Any]:
    """Wrap a handler with the request gate (see module doc) and register its route.

    Stacking is allowed (one handler for several routes): the gate is applied once.
    """

    def wrap(fn: Any) -> Any:
        if getattr(fn, "_trakt_gated", False):
            return route(method, pattern)(fn)

        def handler(self: FakeTrakt, req: Request) -> Response:
            return self._serve(req, auth, fn)

        handler.__name__, handler.__doc__ = fn.__name__, fn.__doc__
        handler.__dict__["_trakt_gated"] = True
        return route(method, pattern)(handler)

    return wrap


def api(method: str, pattern: str) -> Callable[[Any], Any]:
    """API route that needs a user token; handler ``(self, req, user: User)``."""
    return _endpoint(method, pattern, "required")


def public(method: str, pattern: str) -> Callable[[Any], Any]:
    """API route where OAuth is optional; handler ``(self, req, user: User | None)``."""
    return _endpoint(method, pattern, "optional")


def oauth(method: str, pattern: str) -> Callable[[Any], Any]:
    """OAuth route (``auth.trakt.tv``); handler ``(self, req, body: dict)``."""
    return _endpoint(method, pattern, "oauth")


def _names(obj: Any, wanted: Mapping[str, str]) -> bool:
    """Whether ``obj`` (a request body, at any depth) holds an entry whose ``ids`` carry
    every one of ``wanted``."""
    if isinstance(obj, list):
        return any(_names(o, wanted) for o in obj)
    if not isinstance(obj, dict):
        return False
    ids = obj.get("ids")
    if isinstance(ids, dict) and all(str(ids.get(k)) == v for k, v in wanted.items()):
        return True
    return any(_names(v, wanted) for k, v in obj.items() if k != "ids")


def _items(body: Mapping[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(400)
    return value


MOVIE_ID_ORDER = ("trakt", "imdb", "tmdb", "slug")


def _same(have: Any, want: Any) -> bool:
    # SILENT: ids are compared as strings, so "272" matches tmdb 272.
    return have not in (None, "") and str(have) == str(want)


class FakeTrakt(FakeServer):
    """A stateful Trakt (API + OAuth). Default user ``fake.user`` ("sean", free tier).

    Seed: ``add_movie``, ``add_show(seasons={1: 10})``, ``add_season``, ``add_episode``,
    ``seed_reference_catalogue()`` (the samples' items), ``add_user``, ``add_history``.
    The user's own changes (moving last_activities): ``log_play``, ``unlog_play``.
    Auth: ``issue_token``, ``expire_tokens``, ``revoke_tokens``, ``approve_device``,
    ``deny_device``, ``expire_device``, ``slow_down_device``, ``authorize``, ``delete_app``.
    Inspect: ``history``, ``ratings``, ``watchlist``, ``watching``, ``playback``,
    ``last_activities`` (plus the base's ``requests``/``calls``/``count``).
    Misbehave: ``vip``, ``enforce_rate_limits``/``rate_limits``/``trip_block_seconds``,
    ``throttle_next``, ``lock_account``, ``account_limit``, ``cloudflare_next``,
    ``proxy_page_next``, ``auth_request_id``, ``bare_client_refusal``, ``refuse_entries``,
    ``refuse_access_tokens``
    (plus the base's ``fail_next``/``delay_next``/``drop_next``; ``fail_next`` answers as
    Trakt's application, with its ``x-request-id``, unless ``from_trakt=False``). Clock:
    ``now``, ``advance``.
    """

    def __init__(
        self,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        *,
        token_lifetime: int = 7 * 24 * 3600,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime  # ``expires_in`` of new tokens (§6: 7 days)
        # app-level switches
        self.vip = True  # False: the app owner lacks VIP -> every API call answers 426
        # True with vip False: the device-code request answers 426 too (not in the reference;
        # a client must say "VIP" whichever route refuses first)
        self.vip_gates_sign_in = False
        self.app_deleted = False  # True: client_id unknown -> 403 / 401 invalid_client
        self.require_client_secret = False  # §6: secret optional since 2026-10
        self.refresh_error_status = 400  # §6: 400 (2026 docs); older docs/clients saw 401
        self.refresh_revokes_old_access = True
        # True: every access token answers 401 while refreshes still work and give new pairs
        # (Trakt's "rejects the sign-in even after a refresh": the account's API access cut)
        self.refuse_access_tokens = False
        self.reject_title_case_headers = True  # §1, trakt-api#687
        # "real", or what X-Pagination-Page-Count says instead (None: left out; trakt-api#896)
        self.page_count_header: str | None = "real"
        self.ignore_page = False  # True: every listing answers its first page, whatever asked
        # False: /sync/watched/shows leaves out `seasons` even with extended=progress (#844)
        self.watched_seasons = True
        # Show Trakt id -> ISO `reset_at` of a rewatch the user started on it (§10, VIP). As
        # the reference sample has it (Game of Thrones: 3 plays of its episodes, `plays` 2),
        # the show's own `plays` then counts the plays from then on only; its episodes' counts
        # stay whole. SILENT: trakt-api#661 shows a count that looks like every play.
        self.rewatching: dict[int, str] = {}
        self.upgrade_url = "https://trakt.tv/vip"
        # UNDOCUMENTED (the reference says only "air date + runtime", §9): the minutes after
        # its air date a play marked `released` is dated at when Trakt knows no runtime of the
        # episode (null or 0): 0 takes the air date alone; a show's runtime is the other guess.
        self.runtime_when_unknown = 0
        # device flow
        self.verification_url = "https://trakt.tv/activate"  # as in device_code_response.json
        # SILENT (§1 tells it of the API's answers): whether auth.trakt.tv's own answers carry
        # x-request-id. False: the OAuth routes answer without it (JSON errors, the device
        # poll's bare statuses), so only their shape tells them from a proxy's page.
        self.auth_request_id = True
        # SILENT: how the device routes refuse a client (an unknown client_id, a wrong
        # secret). False: 401 invalid_client in JSON, as /oauth/token. True: a bare 401 with
        # an empty body, as their other answers (the contract declares no error body there).
        self.bare_client_refusal = False
        self.device_expires_in = 600
        self.device_interval = 5
        self.enforce_poll_interval = False  # True: polls closer than ``interval`` -> 429
        # scrobble
        self.scrobble_threshold = 80.0
        self.scrobble_threshold_inclusive = True  # stop at exactly 80 % scrobbles (§7: unspecified)
        self.scrobble_window = 3600.0  # 409 window after a scrobble (§7: docs example, +1 h)
        # §7: the Apiary docs answer a stop that recorded a play with `scrobble`, the 2026 TS
        # contract lists `stop`
        self.recorded_stop_action = "scrobble"
        # §5: the 2026 contract accepts only trakt/tvdb as episode keys in requests
        self.episode_request_ids: tuple[str, ...] = ("trakt", "tvdb")
        # rate limits (§3); off by default so unrelated tests stay fast
        self.enforce_rate_limits = False
        self.rate_limits: dict[str, RateLimit] = {
            "AUTHED_API_POST_LIMIT": RateLimit(1, 1),
            "AUTHED_API_GET_LIMIT": RateLimit(300, 500),
            "UNAUTHED_API_GET_LIMIT": RateLimit(300, 500),
        }
        self.trip_block_seconds = 0.0  # >0: a trip blocks every bucket that long (trakt-api#827)
        # (ids, status, body): a sync write naming an entry with these ids is refused whole
        self._refused_entries: list[tuple[dict[str, str], int, Any]] = []
        self._windows: dict[tuple[str, str], _Window] = {}
        self._blocked_until: dict[str, float] = {}
        # state
        self._offset = 0.0
        self._last_stamp = 0.0
        self._next_id = 1_000_000
        self._next_history_id = 9_876_543_300_000
        self.movies: list[Movie] = []
        self._movie_index: dict[tuple[str, str], Movie] = {}
        self.shows: list[Show] = []
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}  # by access token
        self._by_refresh: dict[str, Token] = {}
        self.devices: dict[str, DeviceCode] = {}  # by device_code
        self._auth_codes: dict[str, AuthCode] = {}
        self.user = self.add_user("sean", name="Sean Rudford")

    # ======================================================================================
    # public helpers: clock, catalogue, users, tokens
    # ======================================================================================
    def now(self) -> float:
        return time.time() + self._offset

    def date_clock(self) -> float:
        return self.now()  # its Date header tells the clock it stamps scrobbles by

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (token/device expiry, 409 window, rate limits)."""
        with self.lock:
            self._offset += seconds

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_movie(
        self,
        title: str,
        year: int | None = None,
        *,
        trakt: int | None = None,
        slug: str | None = None,
        imdb: str | None = None,
        tmdb: int | None = None,
        runtime: int = 120,
        released: str | None = None,
    ) -> Movie:
        with self.lock:
            slug = slug or _slugify(title, year)
            movie = Movie(trakt or self._new_id(), title, year, slug, imdb, tmdb, runtime, released)
            self.movies.append(movie)
            for key, value in movie.ids().items():
                if value not in (None, ""):
                    self._movie_index.setdefault((key, str(value)), movie)
            return movie

    def add_show(
        self,
        title: str,
        year: int | None = None,
        *,
        trakt: int | None = None,
        slug: str | None = None,
        imdb: str | None = None,
        tmdb: int | None = None,
        tvdb: int | None = None,
        seasons: Mapping[int, int] | None = None,
    ) -> Show:
        """A show; ``seasons={1: 10}`` generates season 1 with episodes 1..10 (auto ids)."""
        with self.lock:
            slug = slug or _slugify(title, None)
            show = Show(trakt or self._new_id(), title, year, slug, imdb, tmdb, tvdb)
            self.shows.append(show)
            for number, count in (seasons or {}).items():
                for ep in range(1, count + 1):
                    self.add_episode(show, number, ep, tvdb=self._new_id())
            return show

    def add_season(
        self,
        show: Show,
        number: int,
        *,
        trakt: int | None = None,
        tvdb: int | None = None,
        tmdb: int | None = None,
    ) -> Season:
        with self.lock:
            season = show.seasons.get(number)
            if season is None:
                season = Season(show, number, trakt or self._new_id(), tvdb, tmdb)
                show.seasons[number] = season
            return season

    def add_episode(
        self,
        show: Show,
        season: int,
        number: int,
        *,
        title: str | None = None,
        trakt: int | None = None,
        tvdb: int | None = None,
        imdb: str | None = None,
        tmdb: int | None = None,
        number_abs: int | None = None,
        runtime: int | None = 45,
        first_aired: str | None = None,
    ) -> Episode:
        with self.lock:
            s = self.add_season(show, season)
            ep = Episode(
                show,
                season,
                number,
                trakt or self._new_id(),
                title or f"Episode {number}",
                tvdb,
                imdb,
                tmdb,
                number_abs,
                runtime,
                first_aired,
            )
            s.episodes[number] = ep
            return ep

    def seed_reference_catalogue(self) -> None:
        """The docs' example items used by ``samples/trakt/*`` (ids exactly as there)."""
        self.add_movie(
            "Batman Begins", 2005, trakt=1, slug="batman-begins-2005", imdb="tt0372784", tmdb=272
        )
        self.add_movie(
            "TRON: Legacy", 2010, trakt=12601, slug="tron-legacy-2010", imdb="tt1104001", tmdb=20526
        )
        self.add_movie(
            "Guardians of the Galaxy",
            2014,
            trakt=28,
            slug="guardians-of-the-galaxy-2014",
            imdb="tt2015381",
            tmdb=118340,
        )
        bb = self.add_show("Breaking Bad", 2008, trakt=1, imdb="tt0903747", tmdb=1396, tvdb=81189)
        self.add_episode(
            bb, 1, 1, title="Pilot", trakt=16, tvdb=349232, imdb="tt0959621", tmdb=62085
        )
        # trakt 49 / tvdb 2639411 is S4E1 in sync_history_add_request + sync_watched_shows
        self.add_episode(bb, 4, 1, title="Box Cutter", trakt=49, tvdb=2639411)
        self.add_episode(
            bb, 4, 8, title="Hermanos", trakt=56, tvdb=4127161, imdb="tt1683095", tmdb=62127
        )
        got = self.add_show(
            "Game of Thrones", 2011, trakt=1390, imdb="tt0944947", tmdb=1399, tvdb=121361
        )
        self.add_season(got, 0, trakt=2145, tvdb=137481, tmdb=3627)
        self.add_season(got, 1, trakt=2146, tvdb=364731, tmdb=3624)
        self.add_episode(
            got, 0, 7, title="A Gathering Storm", trakt=36436, tvdb=4517457, imdb="", tmdb=63092
        )
        self.add_episode(
            got,
            1,
            1,
            title="Winter Is Coming",
            trakt=36440,
            tvdb=3254641,
            imdb="tt1480055",
            tmdb=63056,
        )
        self.add_episode(
            got,
            1,
            2,
            title="The Kingsroad",
            trakt=36441,
            tvdb=3436411,
            imdb="tt1668746",
            tmdb=63057,
        )
        op = self.add_show("One Piece", 1999, trakt=37696, imdb="tt0388629", tmdb=37854, tvdb=81797)
        self.add_episode(
            op,
            9,
            21,
            title="Light the Fire of Shandia! Wiper the Warrior",
            trakt=856373,
            tvdb=362082,
            number_abs=164,
        )
        parks = self.add_show(
            "Parks and Recreation", 2009, trakt=4, imdb="tt1266020", tmdb=8592, tvdb=84912
        )
        self.add_episode(parks, 2, 1, title="Pawnee Zoo", trakt=251, tvdb=797571, tmdb=397629)

    def add_user(
        self,
        username: str,
        *,
        name: str | None = None,
        vip: bool = False,
        private: bool = False,
        limits: Mapping[str, Any] | None = None,
    ) -> User:
        with self.lock:
            now = self._tick()
            user = User(
                username,
                name or username.title(),
                vip,
                now,
                private,
                copy.deepcopy(dict(limits or (VIP_LIMITS if vip else FREE_LIMITS))),
            )
            user.activities = _activity_template(iso(now))
            self.users[username] = user
            return user

    def _user(self, user: User | str | None) -> User:
        if user is None:
            return self.user
        return user if isinstance(user, User) else self.users[user]

    def issue_token(self, user: User | str | None = None) -> Token:
        """A fresh token pair for ``user`` (skip the device flow in adapter tests)."""
        with self.lock:
            return self._issue(self._user(user))

    def _issue(self, user: User) -> Token:
        tok = Token(
            secrets.token_hex(32), secrets.token_hex(32), user, int(self.now()), self.token_lifetime
        )
        self.tokens[tok.access_token] = tok
        self._by_refresh[tok.refresh_token] = tok
        return tok

    def expire_tokens(self, user: User | str | None = None) -> None:
        """Expire every access token (of ``user``, or of everyone); refresh tokens stay valid."""
        with self.lock:
            for tok in self.tokens.values():
                if user is None or tok.user is self._user(user):
                    tok.expired = True

    def revoke_tokens(self, user: User | str | None = None) -> None:
        """The user revoked the app: access and refresh tokens die."""
        with self.lock:
            for tok in self.tokens.values():
                if user is None or tok.user is self._user(user):
                    tok.revoked = True

    def refuse_refresh_tokens(self) -> None:
        """Refresh tokens issued so far are refused (`invalid_grant`), as Trakt did with
        those from before its 2026 sign-in change (trakt-api#888); access tokens keep working
        until they expire."""
        with self.lock:
            for tok in self.tokens.values():
                tok.refresh_refused = True

    def _token_valid(self, tok: Token) -> bool:
        alive = not (tok.expired or tok.revoked or tok.access_revoked)
        return alive and self.now() < tok.created_at + tok.expires_in

    def delete_app(self) -> None:
        """Trakt deleted the app (2026: free owners, inactive apps): the client_id is unknown."""
        self.app_deleted = True

    # -- device flow helpers -----------------------------------------------------------------
    def _device(self, user_code: str) -> DeviceCode:
        for dc in self.devices.values():
            if dc.user_code == user_code:
                return dc
        raise KeyError(user_code)

    def approve_device(self, user_code: str, user: User | str | None = None) -> None:
        with self.lock:
            dc = self._device(user_code)
            dc.state, dc.user = "approved", self._user(user)

    def deny_device(self, user_code: str) -> None:
        with self.lock:
            self._device(user_code).state = "denied"

    def expire_device(self, user_code: str) -> None:
        with self.lock:
            self._device(user_code).expired = True

    def use_device(self, user_code: str) -> None:
        """The code was already exchanged for tokens (another client got there first)."""
        with self.lock:
            self._device(user_code).state = "used"

    def forget_device(self, user_code: str) -> None:
        """Trakt no longer knows the code at all."""
        with self.lock:
            del self.devices[self._device(user_code).device_code]

    def slow_down_device(self, user_code: str, n: int = 1) -> None:
        """The next ``n`` polls of this code answer 429 (polling too fast)."""
        with self.lock:
            self._device(user_code).slow_down += n

    def authorize(
        self,
        user: User | str | None = None,
        *,
        redirect_uri: str = OOB,
        code_challenge: str | None = None,
    ) -> str:
        """The user approved the app in the browser: an authorization code to exchange."""
        with self.lock:
            code = secrets.token_hex(32)
            self._auth_codes[code] = AuthCode(code, self._user(user), redirect_uri, code_challenge)
            return code

    # -- state helpers ---------------------------------------------------------------------
    def history(self, user: User | str | None = None) -> list[HistoryEntry]:
        """What Trakt holds as plays, newest first (as ``GET /sync/history`` orders them)."""
        with self.lock:
            return _newest_first(self._user(user).history)

    def add_history(
        self,
        item: Playable,
        watched_at: str | None = None,
        *,
        user: User | str | None = None,
        action: str = "watch",
        id: int | None = None,
    ) -> HistoryEntry:
        """Seed a play (``watched_at`` ISO, default now; ``"released"``: stored as a history
        add stores it, at the episode's air date + runtime, §9); does not move
        last_activities."""
        with self.lock:
            if watched_at == "released":
                stamp = self._stamp(watched_at, _released(item, self.runtime_when_unknown))
            else:
                stamp = iso(to_minute(parse_iso(watched_at) if watched_at else self.now()))
            entry = HistoryEntry(id or self._history_id(), item, stamp, action)
            self._user(user).history.append(entry)
            return entry

    def log_play(
        self, item: Playable, watched_at: str | None, *, user: User | str | None = None
    ) -> HistoryEntry:
        """A play the user adds in an app: moves last_activities (``watched_at`` None: a play
        of unknown date, as ``"unknown"`` adds one; ``"released"``: marked "watched on release
        date", stored as a history add stores it)."""
        with self.lock:
            owner = self._user(user)
            if watched_at == "released":
                stamp = self._stamp(watched_at, _released(item, self.runtime_when_unknown))
            else:
                stamp = iso(to_minute(parse_iso(watched_at))) if watched_at else None
            (entry,) = self._add_plays(owner, [(item, stamp, "watch")])
            return entry

    def unlog_play(self, entry: HistoryEntry, *, user: User | str | None = None) -> None:
        """A play the user removes in an app: moves last_activities (trakt-api#472)."""
        with self.lock:
            owner = self._user(user)
            owner.history = [e for e in owner.history if e.id != entry.id]
            self._touch(owner, f"{PLURAL[entry.item.kind]}.watched_at")

    def ratings(self, user: User | str | None = None) -> list[Rating]:
        with self.lock:
            return sorted(self._user(user).ratings.values(), key=lambda r: r.rated_at, reverse=True)

    def watchlist(self, user: User | str | None = None) -> list[WatchlistEntry]:
        with self.lock:
            return list(self._user(user).watchlist.values())

    def collection(self, user: User | str | None = None) -> list[CollectionEntry]:
        with self.lock:
            return list(self._user(user).collection.values())

    def watching(self, user: User | str | None = None) -> Watching | None:
        with self.lock:
            return self._current_watching(self._user(user))

    def playback(self, user: User | str | None = None) -> list[Playback]:
        with self.lock:
            return list(self._user(user).playback.values())

    def last_activities(self, user: User | str | None = None) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._user(user).activities)

    # -- misbehaviour helpers ------------------------------------------------------------------
    def lock_account(self, user: User | str | None = None, *, deactivated: bool = False) -> None:
        """Every API call with this user's token answers 423 (§15)."""
        with self.lock:
            u = self._user(user)
            u.locked, u.deactivated = True, deactivated

    def unlock_account(self, user: User | str | None = None) -> None:
        with self.lock:
            u = self._user(user)
            u.locked = u.deactivated = False

    def set_limits(
        self,
        user: User | str | None = None,
        *,
        vip: bool | None = None,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        """Change a user's VIP status and/or item limits, as an upgrade or a Trakt change would;
        moves ``account.settings_at`` (§8)."""
        with self.lock:
            u = self._user(user)
            if vip is not None:
                u.vip = vip
            if limits is not None:
                u.limits = copy.deepcopy(dict(limits))
            self._touch(u, "account.settings_at")

    def account_limit(
        self, n: int = 1, *, route: str | None = None, limit: int = 250, headers: bool = True
    ) -> None:
        """The next ``n`` requests answer 420; ``headers=False``: the 2026 bare variant (§15)."""
        extra = self._limit_headers(self.user, limit) if headers else {}
        self.fail_next(n, 420, headers=extra, route=route, content_type=JSON_TYPE)

    def refuse_entries(self, status: int = 400, body: Any = None, **ids: Any) -> None:
        """Every ``/sync/history``, ``/sync/ratings`` (or ``/remove``) request naming an entry
        with these ids (``trakt=123``, ``imdb="tt..."``) is answered ``status`` (400 "unparsable
        request" or 422 "validation error", §2) with ``body`` (None: empty), and nothing in it
        is written, as for an unparsable ``watched_at`` or a rating out of 1-10 here: one entry
        Trakt will not take (a malformed id, an odd value) refuses the request it came in.
        SILENT: §2 gives the statuses, not whether the good entries of the request are written
        anyway; nothing is, as for the fake's other refusals."""
        with self.lock:
            wanted = {name: str(value) for name, value in ids.items()}
            self._refused_entries.append((wanted, status, body))

    def _refuse_named(self, body: Any) -> None:
        """Raise the answer of ``refuse_entries`` when ``body`` names a refused entry."""
        for wanted, status, answer in self._refused_entries:
            if _names(body, wanted):
                raise _fail(status, answer)

    def throttle_next(
        self, n: int = 1, *, retry_after: int = 1, route: str | None = None, headers: bool = True
    ) -> None:
        """The next ``n`` requests answer 429; ``headers=False``: the abuse-filter variant (§3)."""
        extra: dict[str, str] = {}
        if headers:
            info = {
                "name": "AUTHED_API_POST_LIMIT",
                "period": 1,
                "limit": 1,
                "remaining": 0,
                "until": _iso_s(self.now() + retry_after),
            }
            extra = {"Retry-After": str(retry_after), "X-Ratelimit": _compact(info)}
        self.fail_next(n, 429, headers=extra, route=route, content_type=JSON_TYPE)

    def fail_next(
        self,
        n: int,
        status: int,
        headers: HeaderMap = None,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        route: str | None = None,
        content_type: str | None = None,
        *,
        after_handler: bool = False,
        when: Callable[[Request], bool] | None = None,
        from_trakt: bool = True,
    ) -> None:
        """The base's ``fail_next``, answered by Trakt's application (§1: its answers carry
        ``x-request-id``/``x-runtime``); ``from_trakt=False``: by something in its place (a
        proxy's or Cloudflare's page), without them."""
        own = {"x-request-id": str(uuid.uuid4()), "x-runtime": "0.001"} if from_trakt else {}
        super().fail_next(
            n,
            status,
            {**own, **(headers or {})},
            body,
            route,
            content_type,
            after_handler=after_handler,
            when=when,
        )

    def cloudflare_next(self, n: int = 1, *, status: int = 522, route: str | None = None) -> None:
        """The next ``n`` requests get a Cloudflare HTML error page (no ``x-request-id``)."""
        self.fail_next(
            n,
            status,
            body=cloudflare_page(status),
            route=route,
            headers={"server": "cloudflare"},
            from_trakt=False,
        )

    def proxy_page_next(
        self, n: int = 1, *, status: int = 403, route: str | None = None, html: bool = True
    ) -> None:
        """The next ``n`` requests get a page of a proxy in front of Trakt (nginx's error
        page; ``html=False``: a line of plain text), without ``x-request-id``: on the sign-in
        routes, what a network's filter or a reverse proxy answers in place of Trakt."""
        reason = {400: "Bad Request", 401: "Authorization Required", 403: "Forbidden"}.get(
            status, "Error"
        )
        page = PROXY_PAGE.format(status=status, reason=reason)
        body = page if html else f"{status} {reason}\n".encode()
        kind = None if html else "text/plain"
        self.fail_next(n, status, {"server": "nginx"}, body, route, kind, from_trakt=False)

    # ======================================================================================
    # request gate
    # ======================================================================================
    def _serve(self, req: Request, auth: Auth, fn: Callable[..., Any]) -> Response:
        t0 = time.perf_counter()
        edge = self._edge(req)
        if edge is not None:
            return edge
        rate_headers: dict[str, str] = {}
        if self.ignore_page and "page" in req.query:
            req = replace(req, query={**req.query, "page": "1"})
        try:
            if auth == "oauth":
                self._check_content_type(req)
                resp = fn(self, req, self._body(req) if req.method == "POST" else {})
            else:
                user, rate_headers = self._gate(req, auth)
                resp = fn(self, req, user)
        except _Abort as abort:
            resp = abort.resp
        if not isinstance(resp, Response):
            resp = Response(204) if resp is None else json_response(resp)
        own = {"x-request-id": str(uuid.uuid4()), "x-runtime": f"{time.perf_counter() - t0:.6f}"}
        if auth == "oauth" and not self.auth_request_id:
            own = {}
        resp.headers = {**rate_headers, **own, **resp.headers}
        if self.page_count_header != "real" and "X-Pagination-Page-Count" in resp.headers:
            # Broken page headers (trakt-api#896): dropped (None) or some other value.
            del resp.headers["X-Pagination-Page-Count"]
            if self.page_count_header is not None:
                resp.headers["X-Pagination-Page-Count"] = self.page_count_header
        return resp

    def _edge(self, req: Request) -> Response | None:
        """Cloudflare in front of Trakt: HTML 403 for what its WAF blocks."""
        title_cased = self.reject_title_case_headers and any(
            name.lower().startswith("trakt-") and name != name.lower()
            for name, _ in req.headers.raw
        )
        if not req.headers.get("user-agent") or title_cased:
            headers = {"server": "cloudflare", "cf-ray": f"{secrets.token_hex(8)}-FRA"}
            return html_response(CLOUDFLARE_BLOCK, 403, headers)
        return None

    def _check_content_type(self, req: Request) -> None:
        # §1: "every call"; SILENT whether Trakt checks it on GETs: the fake does.
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _fail(412)

    def _gate(self, req: Request, auth: Auth) -> tuple[User | None, dict[str, str]]:
        if self.app_deleted or req.headers.get("trakt-api-key") != self.client_id:
            raise _fail(403)  # §2: invalid API key; SILENT: empty body
        if req.headers.get("trakt-api-version") != "2":
            raise _fail(400)  # SILENT: status for a missing/wrong version; empty body
        if not self.vip:
            # §2/§15 426 "VIP Only"; app-wide VIP requirement is not in the reference
            # (2026 reports: app creation is VIP-only, shortlist#73 sees 426).
            raise _fail(426, headers={"X-Upgrade-URL": self.upgrade_url})
        self._check_content_type(req)
        user: User | None = None
        header = req.headers.get("authorization")
        if header is not None or auth == "required":
            # SILENT: a bad token on an optional-OAuth route is a 401 too; body invented.
            scheme, _, value = (header or "").partition(" ")
            tok = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
            if tok is None or not self._token_valid(tok) or self.refuse_access_tokens:
                raise _fail(401, {"error": "invalid_token", "error_description": "unauthorized"})
            user = tok.user
        if user is not None and user.locked:
            raise _fail(
                423,
                headers={
                    "X-Account-Locked": "true",
                    "X-Account-Deactivated": str(user.deactivated).lower(),
                },
            )
        return user, self._rate_limit(req, user)

    def _rate_limit(self, req: Request, user: User | None) -> dict[str, str]:
        """§3 buckets; fixed windows starting at the first call. Returns headers for success."""
        if not self.enforce_rate_limits:
            return {}
        now = self.now()
        if req.method in WRITE_METHODS:
            name = "AUTHED_API_POST_LIMIT"
        else:
            name = "AUTHED_API_GET_LIMIT" if user else "UNAUTHED_API_GET_LIMIT"
        who = f"user:{user.username}" if user else f"app:{self.client_id}"
        blocked = self._blocked_until.get(who, 0.0)
        if now < blocked:  # trakt-api#827: blocked everywhere, X-Ratelimit missing
            raise _fail(429, headers={"Retry-After": str(max(1, math.ceil(blocked - now)))})
        cfg = self.rate_limits[name]
        window = self._windows.get((name, who))
        if window is None or now >= window.start + cfg.period:
            window = self._windows[(name, who)] = _Window(now)
        until = window.start + cfg.period
        info: dict[str, Any] = {
            "name": name,
            "period": int(cfg.period) if float(cfg.period).is_integer() else cfg.period,
            "limit": cfg.limit,
            "remaining": 0,
            "until": _iso_s(until),
        }
        if window.count >= cfg.limit:
            if self.trip_block_seconds > 0:
                self._blocked_until[who] = now + self.trip_block_seconds
            retry = str(max(1, math.ceil(until - now)))
            raise _fail(429, headers={"Retry-After": retry, "X-Ratelimit": _compact(info)})
        window.count += 1
        info["remaining"] = cfg.limit - window.count
        return {"X-Ratelimit": _compact(info)}

    def _body(self, req: Request) -> dict[str, Any]:
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            raise _fail(400) from None
        if not isinstance(body, dict):
            raise _fail(400)
        return body

    def _limit_headers(self, user: User, limit: int) -> dict[str, str]:
        return {
            "X-Upgrade-URL": self.upgrade_url,
            "X-VIP-User": str(user.vip).lower(),
            "X-Account-Limit": str(limit),
        }

    # ======================================================================================
    # OAuth (§6)
    # ======================================================================================
    def _check_client(
        self, body: Mapping[str, Any], *, secret: bool = True, device: bool = False
    ) -> None:
        # SILENT: 401 invalid_client for an unknown client_id (trakt-api#902 saw
        # "invalid_client / client_id is required" for a deleted app).
        bare = device and self.bare_client_refusal
        bad = (
            None
            if bare
            else {"error": "invalid_client", "error_description": "client_id is required"}
        )
        if self.app_deleted or body.get("client_id") != self.client_id:
            raise _fail(401, bad)
        if not secret:
            return
        sent = body.get("client_secret")
        if (sent is not None and sent != self.client_secret) or (
            sent is None and self.require_client_secret
        ):
            wrong = None if bare else {"error": "invalid_client", "error_description": "bad secret"}
            raise _fail(401, wrong)

    @oauth("POST", "/oauth/device/code")
    def oauth_device_code(self, req: Request, body: dict[str, Any]) -> Response:
        self._check_client(body, secret=False, device=True)
        if not self.vip and self.vip_gates_sign_in:
            raise _fail(426, headers={"X-Upgrade-URL": self.upgrade_url})
        dc = DeviceCode(
            secrets.token_hex(32),
            secrets.token_hex(4).upper(),
            self.now(),
            self.device_expires_in,
            self.device_interval,
        )
        self.devices[dc.device_code] = dc
        return json_response(
            {
                "device_code": dc.device_code,
                "user_code": dc.user_code,
                "verification_url": self.verification_url,
                "expires_in": dc.expires_in,
                "interval": dc.interval,
            }
        )

    @oauth("POST", "/oauth/device/token")
    def oauth_device_token(self, req: Request, body: dict[str, Any]) -> Response:
        # SILENT: precedence of the poll answers; bodies of non-200 answers are empty.
        self._check_client(body, device=True)
        dc = self.devices.get(str(body.get("code")))  # §6: the key is "code", not "device_code"
        if dc is None:
            raise _fail(404)
        now = self.now()
        if dc.state == "used":
            raise _fail(409)
        if dc.expired or now >= dc.created + dc.expires_in:
            raise _fail(410)
        if dc.state == "denied":
            raise _fail(418)
        too_fast = dc.slow_down > 0 or (
            self.enforce_poll_interval
            and dc.last_poll is not None
            and now - dc.last_poll < dc.interval
        )
        dc.last_poll = now
        if too_fast:
            dc.slow_down = max(0, dc.slow_down - 1)
            raise _fail(429)
        if dc.state == "pending" or dc.user is None:
            raise _fail(400)
        dc.state = "used"
        dc.token = self._issue(dc.user)
        return json_response(dc.token.to_json())

    @oauth("POST", "/oauth/token")
    def oauth_token(self, req: Request, body: dict[str, Any]) -> Response:
        self._check_client(body)
        grant = body.get("grant_type")
        if grant == "refresh_token":
            old = self._by_refresh.get(body.get("refresh_token") or "")
            if old is None or old.refresh_used or old.revoked or old.refresh_refused:
                raise _fail(self.refresh_error_status, INVALID_GRANT)
            # SILENT: redirect_uri is not checked on refresh.
            old.refresh_used = True
            # SILENT: the old access token dies with its refresh token (knob to keep it).
            old.access_revoked = self.refresh_revokes_old_access
            return json_response(self._issue(old.user).to_json())
        if grant == "authorization_code":
            code = self._auth_codes.get(body.get("code") or "")
            if code is None or code.used or body.get("redirect_uri") != code.redirect_uri:
                raise _fail(400, INVALID_GRANT)
            if code.code_challenge is not None:
                verifier = str(body.get("code_verifier") or "").encode()
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest())
                if digest.rstrip(b"=").decode() != code.code_challenge:
                    raise _fail(400, INVALID_GRANT)
            code.used = True
            return json_response(self._issue(code.user).to_json())
        raise _fail(400, {"error": "unsupported_grant_type", "error_description": str(grant)})

    @oauth("POST", "/oauth/revoke")
    def oauth_revoke(self, req: Request, body: dict[str, Any]) -> Response:
        self._check_client(body)
        token = body.get("token") or ""
        tok = self.tokens.get(token) or self._by_refresh.get(token)
        if tok is not None:
            tok.revoked = True
        return Response(200)  # §6: no documented body

    @route("GET", "/oauth/authorize")
    def oauth_authorize(self, req: Request) -> Response:
        """Browser step: auto-approves as ``fake.user``; 302 to ``redirect_uri`` with the code."""
        q = req.query
        if self.app_deleted or q.get("client_id") != self.client_id:
            return json_response({"error": "invalid_client"}, 401)
        if q.get("code_challenge") and q.get("code_challenge_method") != "S256":
            return json_response({"error": "invalid_request"}, 400)
        redirect = q.get("redirect_uri", OOB)
        code = self.authorize(redirect_uri=redirect, code_challenge=q.get("code_challenge"))
        if redirect == OOB:
            return html_response(f"<html><body><code>{code}</code></body></html>")
        sep = "&" if "?" in redirect else "?"
        state = f"&state={q['state']}" if "state" in q else ""
        return Response(302, b"", {"Location": f"{redirect}{sep}code={code}{state}"})

    # ======================================================================================
    # lookups
    # ======================================================================================
    def _lookup(
        self, pool: Iterable[M], obj: Any, keys: Sequence[str], *, titles: bool = False
    ) -> M | None:
        # SILENT (§5 unconfirmed): ids tried in ``keys`` order; when ids are sent but none
        # matches there is no title fallback; title+year only for items sent without ids.
        if not isinstance(obj, dict):
            return None
        ids: dict[str, Any] = obj["ids"] if isinstance(obj.get("ids"), dict) else {}
        wanted = [(k, ids[k]) for k in keys if ids.get(k) not in (None, "")]
        items = list(pool)
        for k, v in wanted:
            for item in items:
                if _same(item.ids().get(k), v):
                    return item
        if wanted or not titles or not obj.get("title"):
            return None
        title, year = str(obj["title"]).lower(), obj.get("year")
        for item in items:
            if str(getattr(item, "title", "")).lower() == title and year in (
                None,
                getattr(item, "year", None),
            ):
                return item
        return None

    def _all_seasons(self) -> list[Season]:
        return [s for show in self.shows for s in show.seasons.values()]

    def _all_episodes(self) -> list[Episode]:
        return [e for show in self.shows for e in show.episodes()]

    def find_movie(self, obj: Any) -> Movie | None:
        # Same rules as _lookup (ids in this order, first added wins), through an index so
        # benches with 10,000 movies stay fast.
        ids = obj.get("ids") if isinstance(obj, dict) else None
        if isinstance(ids, dict):
            wanted = [(k, str(ids[k])) for k in MOVIE_ID_ORDER if ids.get(k) not in (None, "")]
            if wanted:
                return next((m for key in wanted if (m := self._movie_index.get(key))), None)
        return self._lookup(self.movies, obj, MOVIE_ID_ORDER, titles=True)

    def find_show(self, obj: Any) -> Show | None:
        keys = ("trakt", "tvdb", "imdb", "tmdb", "slug")
        return self._lookup(self.shows, obj, keys, titles=True)

    def find_season(self, obj: Any) -> Season | None:
        return self._lookup(self._all_seasons(), obj, ("trakt", "tvdb", "tmdb"))

    def find_episode(self, obj: Any) -> Episode | None:
        return self._lookup(self._all_episodes(), obj, self.episode_request_ids)

    def _show_by_path_id(self, value: str) -> Show:
        for show in self.shows:  # §14: trakt id, slug or IMDb id
            if value in (str(show.trakt), show.slug, show.imdb):
                return show
        raise _fail(404)

    def _walk_show(
        self, show: Show, obj: dict[str, Any]
    ) -> tuple[list[tuple[Media, list[dict[str, Any]]]], dict[str, Any] | None]:
        """Targets named by a ``shows[]`` item as (target, [obj, season obj, episode obj]).

        Nested seasons/episodes that do not exist come back as the show item narrowed to the
        missing parts (the echo); the callers file it under ``not_found.episodes``, as Trakt
        does for episodes sent under their show (trakt-api#357, 2022: "a series/season/episode
        structure under the episodes element"; jellyfin-plugin-trakt#157). Only a show that is
        not found itself is echoed under ``not_found.shows``. SILENT: a missing season sent
        under its show (no ``episodes``) is echoed the same way, in the same group.
        """
        found: list[tuple[Media, list[dict[str, Any]]]] = [(show, [obj])]
        missing: list[Any] = []
        for sobj in obj.get("seasons") or []:
            season = _child(show.seasons, sobj)
            if season is None:
                missing.append(sobj)
                continue
            found.append((season, [obj, sobj]))
            missing_eps = []
            for eobj in sobj.get("episodes") or []:
                ep = _child(season.episodes, eobj)
                if ep is None:
                    missing_eps.append(eobj)
                else:
                    found.append((ep, [obj, sobj, eobj]))
            if missing_eps:
                missing.append({**sobj, "episodes": missing_eps})
        return found, ({**obj, "seasons": missing} if missing else None)

    def _episodes_named(
        self, body: Mapping[str, Any], not_found: dict[str, list[Any]]
    ) -> list[tuple[Playable, list[dict[str, Any]]]]:
        """Plays named by a history add/remove body, with the objects whose fields they inherit.

        A bare show names all its episodes, a season without ``episodes`` all of its episodes.
        """
        out: list[tuple[Playable, list[dict[str, Any]]]] = []
        for obj in _items(body, "movies"):
            movie = self.find_movie(obj)
            if movie is None:
                not_found["movies"].append(obj)
            else:
                out.append((movie, [obj]))
        for obj in _items(body, "shows"):
            show = self.find_show(obj)
            if show is None:
                not_found["shows"].append(obj)
                continue
            found, echo = self._walk_show(show, obj)
            if echo is not None:
                not_found["episodes"].append(echo)  # trakt-api#357: not under "shows"
            for target, path in found:
                if isinstance(target, Episode):
                    out.append((target, path))
                elif isinstance(target, Season) and not path[-1].get("episodes"):
                    out.extend((e, path) for e in target.sorted_episodes())
                elif isinstance(target, Show) and not obj.get("seasons"):
                    out.extend((e, path) for e in target.episodes())
        for obj in _items(body, "seasons"):
            season = self.find_season(obj)
            if season is None:
                not_found["seasons"].append(obj)
            else:
                out.extend((e, [obj]) for e in season.sorted_episodes())
        for obj in _items(body, "episodes"):
            ep = self.find_episode(obj)
            if ep is None:
                not_found["episodes"].append(obj)
            else:
                out.append((ep, [obj]))
        return out

    # ======================================================================================
    # state changes
    # ======================================================================================
    def _touch(self, user: User, *stamps: str) -> None:
        """Move ``section.key`` stamps of last_activities (and ``all``) to now.

        SILENT: activity stamps have millisecond precision and strictly increase, so two
        changes within a second (or minute) are still visible.
        """
        now = self._tick()
        for stamp in stamps:
            section, _, name = stamp.partition(".")
            user.activities[section][name] = iso(now)
        user.activities["all"] = iso(now)

    def _tick(self) -> float:
        """Now, but strictly later than the previous activity stamp."""
        self._last_stamp = max(self.now(), self._last_stamp + 0.001)
        return self._last_stamp

    def _history_id(self) -> int:
        self._next_history_id += 1
        return self._next_history_id

    def _add_plays(
        self, user: User, plays: Sequence[tuple[Playable, str | None, str]]
    ) -> list[HistoryEntry]:
        entries = [HistoryEntry(self._history_id(), i, w, a) for i, w, a in plays]
        user.history.extend(entries)
        if entries:
            self._touch(user, *{f"{PLURAL[e.item.kind]}.watched_at" for e in entries})
        for entry in entries:  # §12 auto-removal from the watchlist once watched
            item = entry.item
            gone = [key_of(item)]
            if isinstance(item, Episode):
                gone += [key_of(item.season_obj), key_of(item.show)]
            removed = [user.watchlist.pop(k) for k in gone if k in user.watchlist]
            if removed:
                stamps = {f"{PLURAL[w.item.kind]}.watchlisted_at" for w in removed}
                self._touch(user, *stamps, "watchlist.updated_at")
        return entries

    def _stamp(self, value: Any, released: float | None) -> str | None:
        """``watched_at`` of a history add (§9): ISO, ``released``, ``unknown`` or omitted."""
        if value is None:
            return iso(to_minute(self.now()))
        if value == "released":
            # SILENT: an item without a known release date gets an unknown date.
            return iso(to_minute(released)) if released is not None else None
        if value == "unknown":
            return None  # SILENT: stored and answered as null
        try:
            return iso(to_minute(parse_iso(str(value))))
        except ValueError:
            raise _fail(400) from None  # SILENT: an unparsable date rejects the request

    def _current_watching(self, user: User) -> Watching | None:
        if user.watching is not None and self.now() >= user.watching.expires_at:
            user.watching = None
        return user.watching

    # ======================================================================================
    # /users
    # ======================================================================================
    @api("GET", "/users/settings")
    def users_settings(self, req: Request, user: User) -> Response:
        return json_response(user.settings_json())

    @public("GET", "/users/{id}/watching")
    def users_watching(self, req: Request, user: User | None) -> Response:
        """SILENT: not in the reference; shape of the public Trakt docs, 204 when idle."""
        if req.params["id"] == "me" and user is None:
            raise _fail(401)
        target = user if req.params["id"] == "me" else self.users.get(req.params["id"])
        if target is None:
            raise _fail(404)
        w = self._current_watching(target)
        if w is None:
            return Response(204)
        return json_response(
            {
                "expires_at": iso(w.expires_at),
                "started_at": iso(w.started_at),
                "action": "scrobble",
                "type": w.item.kind,
                **media_json(w.item),
            }
        )

    # ======================================================================================
    # scrobble (§7)
    # ======================================================================================
    def _scrobble_item(self, body: Mapping[str, Any]) -> Playable:
        if isinstance(body.get("movie"), dict):
            movie = self.find_movie(body["movie"])
            if movie is None:
                raise _fail(404)
            return movie
        ep_obj = body.get("episode")
        if not isinstance(ep_obj, dict):
            raise _fail(400)
        ep: Episode | None
        if isinstance(body.get("show"), dict):
            show = self.find_show(body["show"])
            if show is None:
                raise _fail(404)
            if "season" in ep_obj and "number" in ep_obj:
                ep = show.episode(ep_obj["season"], ep_obj["number"])
            elif "number_abs" in ep_obj:
                ep = next(
                    (e for e in show.episodes() if e.number_abs == ep_obj["number_abs"]), None
                )
            else:
                ep = self.find_episode(ep_obj)
                ep = ep if ep is not None and ep.show is show else None
        else:
            ep = self.find_episode(ep_obj)
        if ep is None:
            raise _fail(404)
        return ep

    @api("POST", "/scrobble/start")
    @api("POST", "/scrobble/pause")
    @api("POST", "/scrobble/stop")
    def scrobble(self, req: Request, user: User) -> Response:
        action = req.path.rsplit("/", 1)[-1]
        body = self._body(req)
        item = self._scrobble_item(body)
        progress = body.get("progress")
        # SILENT: progress outside 0..100 (or missing) is 422 on every action; < 1 only on stop.
        if not isinstance(progress, int | float) or isinstance(progress, bool):
            raise _fail(422)
        if not 0 <= progress <= 100 or (action == "stop" and progress < 1):
            raise _fail(422)
        progress = float(progress)
        now, key = self.now(), key_of(item)
        if action == "start":
            user.playback.pop(key, None)
            remaining = (item.runtime or 0) * 60 * (1 - progress / 100)
            user.watching = Watching(item, progress, now, now + remaining)
            return self._scrobble_answer(0, "start", progress, item)
        watched = progress > self.scrobble_threshold or (
            self.scrobble_threshold_inclusive and progress == self.scrobble_threshold
        )
        if action == "stop" and watched:
            recent = user.scrobbled.get(key)
            if recent is not None and now < parse_iso(recent.expires_at):
                # SILENT: only scrobbles open the window (not history adds); state untouched.
                raise _fail(409, {"watched_at": recent.watched_at, "expires_at": recent.expires_at})
            user.watching = None
            user.playback.pop(key, None)
            stamp = to_minute(now)
            (entry,) = self._add_plays(user, [(item, iso(stamp), "scrobble")])
            user.scrobbled[key] = Scrobbled(iso(stamp), iso(stamp + self.scrobble_window))
            return self._scrobble_answer(entry.id, self.recorded_stop_action, progress, item)
        # pause, or stop below the threshold: saved as playback progress (§7)
        user.watching = None
        pb = user.playback.get(key) or Playback(self._new_id(), item, progress, iso(now))
        pb.progress, pb.paused_at = progress, iso(now)
        user.playback[key] = pb
        self._touch(user, f"{PLURAL[item.kind]}.paused_at")
        return self._scrobble_answer(pb.id, "pause", progress, item)

    def _scrobble_answer(self, id: int, action: str, progress: float, item: Playable) -> Response:
        body = {
            "id": id,
            "action": action,
            "progress": progress,
            "sharing": {"twitter": False, "mastodon": False, "tumblr": False},
            **media_json(item),
        }
        return json_response(body, 201)

    @api("GET", "/sync/playback")
    @api("GET", "/sync/playback/{type}")
    def sync_playback(self, req: Request, user: User) -> Response:
        kind = {"movies": "movie", "episodes": "episode"}.get(req.params.get("type", ""))
        if "type" in req.params and kind is None:
            raise _fail(404)
        items = sorted(user.playback.values(), key=lambda p: p.paused_at, reverse=True)
        return json_response([p.to_json() for p in items if kind in (None, p.item.kind)])

    @api("DELETE", "/sync/playback/{id}")
    def sync_playback_remove(self, req: Request, user: User) -> Response:
        for key, pb in list(user.playback.items()):
            if str(pb.id) == req.params["id"]:
                del user.playback[key]
                return Response(204)
        raise _fail(404)

    # ======================================================================================
    # history (§9) and watched (§10)
    # ======================================================================================
    @api("POST", "/sync/history")
    def sync_history_add(self, req: Request, user: User) -> Response:
        body = self._body(req)
        self._refuse_named(body)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        plays: list[tuple[Playable, str | None, str]] = []
        for item, path in self._episodes_named(body, not_found):
            value = next((o["watched_at"] for o in reversed(path) if "watched_at" in o), None)
            plays.append(
                (item, self._stamp(value, _released(item, self.runtime_when_unknown)), "watch")
            )
        entries = self._add_plays(user, plays)  # §9: no de-duplication
        added = {
            k: sum(1 for e in entries if PLURAL[e.item.kind] == k) for k in ("movies", "episodes")
        }
        body_out = {"added": added, "updated": {"movies": 0, "episodes": 0}, "not_found": not_found}
        return json_response(body_out, 201)  # Apiary 201 (2026 contract: 200)

    @api("GET", "/sync/history")
    @api("GET", "/sync/history/{type}")
    @api("GET", "/sync/history/{type}/{id}")
    def sync_history(self, req: Request, user: User) -> Response:
        entries = _newest_first(user.history)
        kind, item_id = req.params.get("type"), req.params.get("id")
        if kind is not None:
            if kind not in ("movies", "shows", "seasons", "episodes"):
                raise _fail(404)
            entries = [e for e in entries if _history_matches(e, kind, item_id)]
        start, end = _query_time(req, "start_at"), _query_time(req, "end_at")
        if start is not None or end is not None:  # SILENT: bounds inclusive; unknown dates out
            entries = [
                e
                for e in entries
                if e.watched_at is not None
                and (start is None or parse_iso(e.watched_at) >= start)
                and (end is None or parse_iso(e.watched_at) <= end)
            ]
        # §4 [obs] history defaults to 100 per page, 250 max, clamped
        return paginate(req, Shaped(entries, HistoryEntry.to_json), default_limit=100)

    @api("POST", "/sync/history/remove")
    def sync_history_remove(self, req: Request, user: User) -> Response:
        body = self._body(req)
        not_found: dict[str, list[Any]] = {
            "movies": [],
            "shows": [],
            "seasons": [],
            "episodes": [],
            "ids": [],
        }
        doomed: dict[int, HistoryEntry] = {}
        by_id = {e.id: e for e in user.history}
        for hid in _items(body, "ids"):
            if hid in by_id:
                doomed[hid] = by_id[hid]
            else:
                not_found["ids"].append(hid)
        # SILENT: an item that resolves but has no plays is neither deleted nor not_found.
        named = {key_of(item) for item, _ in self._episodes_named(body, not_found)}
        doomed.update({e.id: e for e in user.history if key_of(e.item) in named})
        user.history = [e for e in user.history if e.id not in doomed]
        deleted = {
            k: sum(1 for e in doomed.values() if PLURAL[e.item.kind] == k)
            for k in ("movies", "episodes")
        }
        if doomed:  # trakt-api#472: removals move watched_at too
            self._touch(user, *{f"{PLURAL[e.item.kind]}.watched_at" for e in doomed.values()})
        return json_response({"deleted": deleted, "not_found": not_found})

    @api("GET", "/sync/watched/{type}")
    def sync_watched(self, req: Request, user: User) -> Response:
        """The watched snapshot (§10) as Trakt serves it since mid-2026 (trakt-api
        discussion #775, issues #835, #844, #875): paginated like history (100 a page by
        default, 250 at most; jellyfin-plugin-trakt#299 got 100 movies and 100 shows), and a
        show's ``seasons`` (the per-episode play counts) only with ``?extended=progress``,
        which pages at 100 at most (PlexTraktSync#2518) and leaves out season 0 without
        ``specials=true`` (trakt-api#792). ``extended=noseasons`` is gone with it.
        ``fake.watched_seasons = False`` leaves ``seasons`` out whatever is asked, as Trakt
        did for a while (trakt-api#844). A show's own ``plays`` counts its specials too, and
        only the plays since a rewatch started (``fake.rewatching``).
        """
        kind = req.params["type"]
        if kind == "movies":
            movies: dict[int, list[HistoryEntry]] = {}
            for e in user.history:
                if isinstance(e.item, Movie):
                    movies.setdefault(e.item.trakt, []).append(e)
            rows = [_watched_json(es, movie=es[0].item.to_json()) for es in movies.values()]
            return paginate(req, rows, default_limit=100)
        if kind != "shows":
            raise _fail(404)
        shows: dict[int, tuple[Show, list[HistoryEntry]]] = {}
        for e in user.history:
            if isinstance(e.item, Episode):
                shows.setdefault(e.item.show.trakt, (e.item.show, []))[1].append(e)
        progress = "progress" in req.query.get("extended", "").split(",")
        specials = req.query.get("specials") == "true"
        rows = []
        for show, es in shows.values():
            reset_at = self.rewatching.get(show.trakt)
            since = [e for e in es if reset_at is None or (e.watched_at or "") >= reset_at]
            row = {**_watched_json(es, reset_at=reset_at, show=show.to_json()), "plays": len(since)}
            if progress and self.watched_seasons:
                row["seasons"] = [
                    season for season in _watched_seasons(es) if specials or season["number"] != 0
                ]
            rows.append(row)
        return paginate(req, rows, default_limit=100, max_limit=100 if progress else 250)

    # ======================================================================================
    # ratings (§11)
    # ======================================================================================
    def _rating_targets(
        self, body: Mapping[str, Any], not_found: dict[str, list[Any]], *, rating: bool
    ) -> list[tuple[Media, dict[str, Any]]]:
        """(target, the object carrying its rating) for a ratings add/remove body.

        A bare show names only the show, nested seasons/episodes name those (§11).
        """
        out: list[tuple[Media, dict[str, Any]]] = []
        finders: dict[str, Callable[[Any], Media | None]] = {
            "movies": self.find_movie,
            "seasons": self.find_season,
            "episodes": self.find_episode,
        }
        for name, find in finders.items():
            for obj in _items(body, name):
                item = find(obj)
                if item is None:
                    not_found[name].append(obj)
                else:
                    out.append((item, obj))
        for obj in _items(body, "shows"):
            show = self.find_show(obj)
            if show is None:
                not_found["shows"].append(obj)
                continue
            found, echo = self._walk_show(show, obj)
            if echo is not None:
                not_found["episodes"].append(echo)  # trakt-api#357: not under "shows"
            for target, path in found:
                own = path[-1]
                narrowed = (isinstance(target, Show) and bool(obj.get("seasons"))) or (
                    isinstance(target, Season) and bool(own.get("episodes"))
                )
                if rating and "rating" in own:
                    out.append((target, own))
                elif rating and not narrowed:
                    raise _fail(422)  # SILENT: a named item without a rating
                elif not rating and not narrowed:
                    out.append((target, own))
        return out

    @api("POST", "/sync/ratings")
    def sync_ratings_add(self, req: Request, user: User) -> Response:
        body = self._body(req)
        self._refuse_named(body)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        targets = self._rating_targets(body, not_found, rating=True)
        new: list[Rating] = []
        for item, obj in targets:
            value = obj.get("rating")
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10:
                raise _fail(422)  # SILENT: invalid rating rejects the whole request
            rated = obj.get("rated_at")
            try:
                stamp = to_minute(parse_iso(str(rated))) if rated else to_minute(self.now())
            except ValueError:
                raise _fail(400) from None
            new.append(Rating(item, value, iso(stamp)))
        for r in new:  # SILENT: re-rating replaces the rating and counts as added
            user.ratings[key_of(r.item)] = r
        if new:
            self._touch(user, *{f"{PLURAL[r.item.kind]}.rated_at" for r in new})
        added = {k: sum(1 for r in new if PLURAL[r.item.kind] == k) for k in not_found}
        return json_response({"added": added, "not_found": not_found}, 201)

    @api("GET", "/sync/ratings")
    @api("GET", "/sync/ratings/{type}")
    @api("GET", "/sync/ratings/{type}/{rating}")
    def sync_ratings(self, req: Request, user: User) -> Response:
        kind = req.params.get("type", "all")
        if kind not in ("all", "movies", "shows", "seasons", "episodes"):
            raise _fail(404)
        wanted: set[int] | None = None
        if "rating" in req.params:
            try:
                wanted = {int(v) for v in req.params["rating"].split(",")}
            except ValueError:
                raise _fail(400) from None
        rows = [
            r.to_json()
            for r in sorted(user.ratings.values(), key=lambda r: r.rated_at, reverse=True)
            if kind in ("all", PLURAL[r.item.kind]) and (wanted is None or r.rating in wanted)
        ]
        if "page" in req.query or "limit" in req.query:  # "pagination optional"
            return paginate(req, rows)
        return json_response(rows)

    @api("POST", "/sync/ratings/remove")
    def sync_ratings_remove(self, req: Request, user: User) -> Response:
        body = self._body(req)
        self._refuse_named(body)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        targets = self._rating_targets(body, not_found, rating=False)
        gone = [user.ratings.pop(key_of(i)) for i, _ in targets if key_of(i) in user.ratings]
        if gone:
            self._touch(user, *{f"{PLURAL[r.item.kind]}.rated_at" for r in gone})
        deleted = {k: sum(1 for r in gone if PLURAL[r.item.kind] == k) for k in not_found}
        return json_response({"deleted": deleted, "not_found": not_found})

    # ======================================================================================
    # watchlist (§12) — top-level items only (nested show seasons are not modelled)
    # ======================================================================================
    def _watchlist_targets(
        self, body: Mapping[str, Any], not_found: dict[str, list[Any]]
    ) -> list[tuple[Media, dict[str, Any]]]:
        finders: dict[str, Callable[[Any], Media | None]] = {
            "movies": self.find_movie,
            "shows": self.find_show,
            "seasons": self.find_season,
            "episodes": self.find_episode,
        }
        out: list[tuple[Media, dict[str, Any]]] = []
        for name, find in finders.items():
            for obj in _items(body, name):
                item = find(obj)
                if item is None:
                    not_found[name].append(obj)
                else:
                    out.append((item, obj))
        return out

    def _watchlist_info(self, user: User) -> dict[str, Any]:
        return {
            "updated_at": user.activities["watchlist"]["updated_at"],
            "item_count": len(user.watchlist),
        }

    @api("POST", "/sync/watchlist")
    def sync_watchlist_add(self, req: Request, user: User) -> Response:
        body = self._body(req)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        targets = self._watchlist_targets(body, not_found)
        if any(obj.get("notes") for _, obj in targets):
            if not user.vip:
                raise _fail(426, headers={"X-Upgrade-URL": self.upgrade_url})
            if any(len(str(obj.get("notes") or "")) > 500 for _, obj in targets):
                raise _fail(422)  # SILENT: status for notes over 500 characters
        fresh = [(i, o) for i, o in targets if key_of(i) not in user.watchlist]
        fresh = list({key_of(i): (i, o) for i, o in fresh}.values())
        limit = int(user.limits.get("watchlist", {}).get("item_count", 10**9))
        if len(user.watchlist) + len(fresh) > limit:  # SILENT: all-or-nothing
            raise _fail(420, headers=self._limit_headers(user, limit))
        stamp = iso(to_minute(self.now()))
        for item, obj in fresh:
            entry = WatchlistEntry(self._new_id(), item, stamp, obj.get("notes"))
            user.watchlist[key_of(item)] = entry
        if fresh:
            stamps = {f"{PLURAL[i.kind]}.watchlisted_at" for i, _ in fresh}
            self._touch(user, *stamps, "watchlist.updated_at")
        fresh_keys = {key_of(i) for i, _ in fresh}
        counts = dict.fromkeys(not_found, 0)
        existing = dict.fromkeys(not_found, 0)
        for item, _ in targets:
            (counts if key_of(item) in fresh_keys else existing)[PLURAL[item.kind]] += 1
        out = {
            "added": counts,
            "existing": existing,
            "not_found": not_found,
            "list": self._watchlist_info(user),
        }
        return json_response(out, 201)

    @api("POST", "/sync/watchlist/remove")
    def sync_watchlist_remove(self, req: Request, user: User) -> Response:
        body = self._body(req)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        targets = self._watchlist_targets(body, not_found)
        gone = [user.watchlist.pop(key_of(i)) for i, _ in targets if key_of(i) in user.watchlist]
        if gone:
            stamps = {f"{PLURAL[w.item.kind]}.watchlisted_at" for w in gone}
            self._touch(user, *stamps, "watchlist.updated_at")
        deleted = {k: sum(1 for w in gone if PLURAL[w.item.kind] == k) for k in not_found}
        out = {"deleted": deleted, "not_found": not_found, "list": self._watchlist_info(user)}
        return json_response(out)

    @api("GET", "/sync/watchlist")
    @api("GET", "/sync/watchlist/{type}")
    @api("GET", "/sync/watchlist/{type}/{sort_by}")
    @api("GET", "/sync/watchlist/{type}/{sort_by}/{sort_how}")
    def sync_watchlist(self, req: Request, user: User) -> Response:
        kind = req.params.get("type", "all")
        sort_by = req.params.get("sort_by", "rank")
        sort_how = req.params.get("sort_how", "asc")
        if kind not in ("all", "movies", "shows", "seasons", "episodes"):
            raise _fail(404)
        ranked = [(n, e) for n, e in enumerate(user.watchlist.values(), start=1)]
        keys: dict[str, Callable[[tuple[int, WatchlistEntry]], Any]] = {
            "rank": lambda r: r[0],
            "added": lambda r: (r[1].listed_at, r[1].id),
            "title": lambda r: str(getattr(r[1].item, "title", "") or ""),
        }
        if sort_by not in keys or sort_how not in ("asc", "desc"):
            raise _fail(400)  # SILENT: unsupported sort values
        ranked.sort(key=keys[sort_by], reverse=sort_how == "desc")
        rows = [e.to_json(n) for n, e in ranked if kind in ("all", PLURAL[e.item.kind])]
        headers = {
            "X-Sort-By": "rank",
            "X-Sort-How": "asc",
            "X-Applied-Sort-By": sort_by,
            "X-Applied-Sort-How": sort_how,
        }
        return paginate(req, rows, default_limit=100, headers=headers)

    # ======================================================================================
    # collection (§13) — movies and episodes; a bare show or season names all its episodes
    # ======================================================================================
    def _collection_targets(
        self, body: Mapping[str, Any], not_found: dict[str, list[Any]]
    ) -> list[tuple[Playable, dict[str, Any]]]:
        """(item, its fields: metadata and collected_at, inherited show -> season -> episode)."""
        out = []
        for item, path in self._episodes_named(body, not_found):
            fields: dict[str, Any] = {}
            for level in path:
                fields.update({k: v for k, v in level.items() if k in COLLECTION_FIELDS})
            for name, allowed in COLLECTION_VALUES.items():
                if name in fields and fields[name] is not None and fields[name] not in allowed:
                    raise _fail(422)  # SILENT: an unknown metadata value rejects the request
            out.append((item, fields))
        return out

    def _collection_limit(self, user: User) -> int:
        return int(user.limits.get("collection", {}).get("item_count", 10**9))

    @api("POST", "/sync/collection")
    def sync_collection_add(self, req: Request, user: User) -> Response:
        body = self._body(req)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        targets = self._collection_targets(body, not_found)
        fresh = {key_of(i) for i, _ in targets if key_of(i) not in user.collection}
        limit = self._collection_limit(user)
        # §15: library items count movies + episodes; SILENT: all-or-nothing, like the watchlist
        if fresh and len(user.collection) + len(fresh) > limit:
            raise _fail(420, headers=self._limit_headers(user, limit))
        counts = {
            name: dict.fromkeys(("movies", "episodes"), 0)
            for name in ("added", "updated", "existing")
        }
        stamp = iso(to_minute(self.now()))
        for item, fields in targets:
            collected = fields.get("collected_at")
            try:
                when = iso(to_minute(parse_iso(str(collected)))) if collected else stamp
            except ValueError:
                raise _fail(400) from None
            metadata = {k: v for k, v in fields.items() if k != "collected_at"}
            old = user.collection.get(key_of(item))
            group = PLURAL[item.kind]
            if old is None:
                user.collection[key_of(item)] = CollectionEntry(item, when, stamp, metadata)
                counts["added"][group] += 1
            elif old.metadata != metadata or (collected and old.collected_at != when):
                old.metadata, old.updated_at = metadata, stamp
                old.collected_at = when if collected else old.collected_at
                counts["updated"][group] += 1
            else:
                counts["existing"][group] += 1
        if any(counts["added"].values()) or any(counts["updated"].values()):
            kinds = {PLURAL[i.kind] for i, _ in targets}
            self._touch(user, *{f"{k}.collected_at" for k in kinds})
        return json_response({**counts, "not_found": not_found}, 201)

    @api("POST", "/sync/collection/remove")
    def sync_collection_remove(self, req: Request, user: User) -> Response:
        body = self._body(req)
        not_found: dict[str, list[Any]] = {"movies": [], "shows": [], "seasons": [], "episodes": []}
        named = {key_of(item) for item, _ in self._episodes_named(body, not_found)}
        gone = [user.collection.pop(k) for k in named if k in user.collection]
        if gone:
            self._touch(user, *{f"{PLURAL[e.item.kind]}.collected_at" for e in gone})
        deleted = {
            k: sum(1 for e in gone if PLURAL[e.item.kind] == k) for k in ("movies", "episodes")
        }
        return json_response({"deleted": deleted, "not_found": not_found})

    @api("GET", "/sync/collection/{type}")
    def sync_collection(self, req: Request, user: User) -> Response:
        kind = req.params["type"]
        with_metadata = "metadata" in req.query.get("extended", "")
        entries = sorted(user.collection.values(), key=lambda e: e.collected_at, reverse=True)

        def meta(e: CollectionEntry) -> dict[str, Any]:
            return {"metadata": dict(e.metadata) or None} if with_metadata else {}

        if kind == "movies":
            rows = [
                {
                    "collected_at": e.collected_at,
                    "updated_at": e.updated_at,
                    "movie": e.item.to_json(),
                    **meta(e),
                }
                for e in entries
                if isinstance(e.item, Movie)
            ]
        elif kind == "shows":
            shows: dict[int, list[CollectionEntry]] = {}
            for e in entries:
                if isinstance(e.item, Episode):
                    shows.setdefault(e.item.show.trakt, []).append(e)
            rows = []
            for es in shows.values():
                seasons: dict[int, list[dict[str, Any]]] = {}
                for e in es:
                    ep = e.item
                    assert isinstance(ep, Episode)
                    seasons.setdefault(ep.season, []).append(
                        {"number": ep.number, "collected_at": e.collected_at, **meta(e)}
                    )
                first = es[0].item
                assert isinstance(first, Episode)
                rows.append(
                    {
                        "last_collected_at": max(e.collected_at for e in es),
                        "last_updated_at": max(e.updated_at for e in es),
                        "show": first.show.to_json(),
                        "seasons": [
                            {"number": n, "episodes": sorted(eps, key=lambda x: x["number"])}
                            for n, eps in sorted(seasons.items())
                        ],
                    }
                )
        else:
            raise _fail(404)
        # trakt-api.md §4: library endpoints require pagination since 2026
        return paginate(req, rows, default_limit=100)

    # ======================================================================================
    # last activities (§8)
    # ======================================================================================
    @api("GET", "/sync/last_activities")
    def sync_last_activities(self, req: Request, user: User) -> Response:
        return json_response(user.activities)

    # ======================================================================================
    # lookups (§14)
    # ======================================================================================
    @public("GET", "/search/{id_type}/{id}")
    def search_id(self, req: Request, user: User | None) -> Response:
        id_type, value = req.params["id_type"], req.params["id"]
        if id_type not in ("trakt", "imdb", "tmdb", "tvdb"):
            raise _fail(400)  # SILENT: status for an unknown id_type
        types = req.query.get("type", "movie,show,episode").split(",")
        pools: list[tuple[str, Sequence[Media]]] = [
            ("movie", self.movies),
            ("show", self.shows),
            ("episode", self._all_episodes()),
        ]
        rows = [
            {"type": kind, "score": None, **media_json(item)}
            for kind, pool in pools
            if kind in types
            for item in pool
            if _same(item.ids().get(id_type), value)
        ]
        return paginate(req, rows, default_limit=50)  # §4 [obs] /search defaults to 50

    @public("GET", "/search/{type}")
    def search_text(self, req: Request, user: User | None) -> Response:
        """Text search, `?query=...[&fields=title][&years=YYYY]`. Not in trakt-api.md; as
        Trakt's public docs describe it: results by relevance, each with its `score`. SILENT:
        Trakt's matching is fuzzier than this case-insensitive substring of the title."""
        query = req.query.get("query", "").casefold()
        if not query:
            raise _fail(400)  # SILENT: status for a missing query
        types = req.params["type"].split(",")
        years = req.query.get("years")
        rows = []
        for kind, pool in (("movie", self.movies), ("show", self.shows)):
            for item in pool if kind in types else ():
                if query in item.title.casefold() and years in (None, str(item.year)):
                    exact = item.title.casefold() == query
                    rows.append(
                        {"type": kind, "score": 1000.0 if exact else 100.0, **media_json(item)}
                    )
        rows.sort(key=lambda row: -row["score"])
        return paginate(req, rows, default_limit=10)

    @public("GET", "/movies/{id}")
    def movie_summary(self, req: Request, user: User | None) -> Response:
        for m in self.movies:
            if req.params["id"] in (str(m.trakt), m.slug, m.imdb):
                return json_response(m.to_json())
        raise _fail(404)

    @public("GET", "/shows/{id}")
    def show_summary(self, req: Request, user: User | None) -> Response:
        return json_response(self._show_by_path_id(req.params["id"]).to_json())

    @public("GET", "/shows/{id}/seasons")
    def show_seasons(self, req: Request, user: User | None) -> Response:
        show = self._show_by_path_id(req.params["id"])
        extended = req.query.get("extended", "").split(",")
        with_eps, full = "episodes" in extended, "full" in extended
        rows = []
        for n in sorted(show.seasons):
            season = show.seasons[n]
            row = season.to_json()
            if full:  # §14: counts; trakt/trakt-api#424: number_abs on listed episodes
                count = len(season.episodes)
                row |= {"episode_count": count, "aired_episodes": count}
            if with_eps:  # full: listed episodes as full (trakt-api#424, #868)
                row["episodes"] = [
                    e.to_json()
                    | (
                        {
                            "number_abs": e.number_abs,
                            "first_aired": e.first_aired,
                            "runtime": e.runtime,
                        }
                        if full
                        else {}
                    )
                    for e in season.sorted_episodes()
                ]
            rows.append(row)
        return json_response(rows)

    @public("GET", "/shows/{id}/seasons/{season}/episodes/{episode}")
    def show_episode(self, req: Request, user: User | None) -> Response:
        show = self._show_by_path_id(req.params["id"])
        try:
            ep = show.episode(int(req.params["season"]), int(req.params["episode"]))
        except ValueError:
            ep = None
        if ep is None:
            raise _fail(404)
        row = ep.to_json()
        if "full" in req.query.get("extended", ""):
            row |= {
                "number_abs": ep.number_abs,
                "first_aired": ep.first_aired,
                "runtime": ep.runtime,
                "episode_type": "standard",
                "updated_at": iso(to_minute(self.now())),
            }
        return json_response(row)


# -- small helpers -----------------------------------------------------------------------------
def _child(children: Mapping[int, M], obj: Any) -> M | None:
    """The season/episode a nested ``{"number": n}`` object names."""
    number = obj.get("number") if isinstance(obj, dict) else None
    return children.get(number) if isinstance(number, int) else None


def _slugify(title: str, year: int | None) -> str:
    base = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    while "--" in base:
        base = base.replace("--", "-")
    return f"{base}-{year}" if year else base


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _iso_s(ts: float) -> str:
    """``2026-09-12T20:41:02Z`` (the ``until`` format of samples/trakt/error_429)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _released(item: Playable, when_unknown: int = 0) -> float | None:
    if isinstance(item, Movie):
        return parse_iso(item.released) if item.released else None
    if item.first_aired is None:
        return None
    runtime = item.runtime or when_unknown  # FakeTrakt.runtime_when_unknown
    return parse_iso(item.first_aired) + runtime * 60  # §9: air date + runtime


def _newest_first(entries: Iterable[HistoryEntry]) -> list[HistoryEntry]:
    return sorted(entries, key=lambda e: (e.watched_at or "", e.id), reverse=True)


def _query_time(req: Request, name: str) -> float | None:
    value = req.query.get(name)
    if not value:
        return None
    try:
        return parse_iso(value)
    except ValueError:
        raise _fail(400) from None


def _history_matches(entry: HistoryEntry, kind: str, item_id: str | None) -> bool:
    item = entry.item
    if kind == "movies":
        return isinstance(item, Movie) and item_id in (None, str(item.trakt))
    if not isinstance(item, Episode):
        return False
    if kind == "shows":
        return item_id in (None, str(item.show.trakt))
    if kind == "seasons":
        return item_id in (None, str(item.season_obj.trakt))
    return item_id in (None, str(item.trakt))


def _watched_json(entries: Sequence[HistoryEntry], **extra: Any) -> dict[str, Any]:
    last = max((e.watched_at or "" for e in entries), default="") or None
    return {"plays": len(entries), "last_watched_at": last, "last_updated_at": last, **extra}


def _watched_seasons(entries: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    tree: dict[int, dict[int, list[HistoryEntry]]] = {}
    for e in entries:
        assert isinstance(e.item, Episode)
        tree.setdefault(e.item.season, {}).setdefault(e.item.number, []).append(e)
    return [
        {
            "number": s,
            "episodes": [
                {
                    "number": n,
                    "plays": len(es),
                    "last_watched_at": max((x.watched_at or "" for x in es), default="") or None,
                }
                for n, es in sorted(tree[s].items())
            ],
        }
        for s in sorted(tree)
    ]
