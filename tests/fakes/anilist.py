"""Stateful fake of AniList's GraphQL API and its OAuth token endpoint.

Follows ``shared/reference/anilist.md`` (sections cited as §n). It does not implement GraphQL:
it recognises the operations watchbridge sends by their content (``Viewer``,
``MediaListCollection``, ``Page``/``mediaList`` sorted by update time, ``Page``/``media`` by
ids, ``SaveMediaListEntry``, ``DeleteMediaListEntry``) and answers in the documented shapes.
Point ``services.anilist.api_url`` at ``fake.url`` and ``services.anilist.auth_url`` at
``fake.auth_url``.

Every GraphQL request passes, in this order (each step can answer instead of the handler):

1. ``fake.disabled`` -> ``403`` with the "API temporarily disabled" body (§3).
2. Rate limits (§3): a 1-minute window of ``fake.limit`` requests, then a 1-minute timeout
   (``429`` + ``Retry-After`` + ``X-RateLimit-Reset``); on top, a burst limiter
   (``burst_limit`` requests within ``burst_window`` seconds) answering ``429`` while
   ``X-RateLimit-Remaining`` still shows room. Successful answers carry ``X-RateLimit-Limit``
   and ``X-RateLimit-Remaining`` (unless ``send_rate_headers`` is False, PlexAniSync#49).
3. Token: a bad or expired bearer token -> ``400 Invalid token``; none where one is needed
   -> ``401 Unauthorized.`` (SILENT: both shapes are what clients report, not the docs).
4. The operation; errors go in ``errors[]`` (with HTTP 200 for ``fail_graphql_next``).

Time comes from ``fake.now()`` (wall clock + ``fake.advance(seconds)``).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .base import FakeServer, Request, Response, _Knob, cloudflare_page, json_response, route

CLIENT_ID = "12345"
CLIENT_SECRET = "fake-anilist-client-secret"
PIN_REDIRECT = "https://anilist.co/api/v2/oauth/pin"
YEAR = 365 * 86400
DISABLED_MESSAGE = (
    "The AniList API has been temporarily disabled due to severe stability issues. "
    "Please check the official AniList Discord for more information."
)
STATUS_GROUPS = {  # forceSingleCompletedList: one "Completed" group (§5.2)
    "CURRENT": "Watching",
    "REPEATING": "Rewatching",
    "COMPLETED": "Completed",
    "PAUSED": "Paused",
    "DROPPED": "Dropped",
    "PLANNING": "Planning",
}
STATUSES = tuple(STATUS_GROUPS)
SMILEY_RAW = {1: 35, 2: 60, 3: 85}  # SILENT: AniList's own smiley mapping is unconfirmed (§8)


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token carrying ``claims`` (AniList tokens are JWTs, §2)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'typ': 'JWT', 'alg': 'RS256'})}.{part(claims)}.{secrets.token_hex(8)}"


def shown_score(raw: int, score_format: str) -> float:
    """A raw 0-100 score as a user of ``score_format`` sees it (PlexAniSync's table, §8)."""
    if raw <= 0:
        return 0
    if score_format == "POINT_10_DECIMAL":
        return raw / 10
    if score_format == "POINT_10":
        return raw // 10  # AniList's display floors (§8: raw 75 shows as 7)
    if score_format == "POINT_5":
        return math.floor((raw + 10) / 20)
    if score_format == "POINT_3":
        return 1 if raw <= 35 else 2 if raw <= 60 else 3
    return raw


def raw_score(score: float, score_format: str) -> int:
    """A score given in the user's format, stored as raw 0-100."""
    if score_format == "POINT_3":
        return SMILEY_RAW.get(int(score), 0)
    factor = {"POINT_10_DECIMAL": 10, "POINT_10": 10, "POINT_5": 20}.get(score_format, 1)
    return round(score * factor)


@dataclass
class Media:
    id: int
    episodes: int | None = 12
    format: str = "TV"
    id_mal: int | None = None
    status: str = "FINISHED"
    title: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idMal": self.id_mal,
            "format": self.format,
            "episodes": self.episodes,
            "status": self.status,
            "title": {"romaji": self.title, "english": self.title or None},
        }


@dataclass
class Entry:
    id: int
    user_id: int
    media: Media
    status: str = "CURRENT"
    progress: int = 0
    repeat: int = 0
    score: int = 0  # raw 0-100
    updated_at: int = 0
    created_at: int = 0
    started_at: dict[str, int | None] = field(default_factory=dict)
    completed_at: dict[str, int | None] = field(default_factory=dict)
    custom_lists: list[str] = field(default_factory=list)
    hidden: bool = False
    private: bool = False
    notes: str | None = None

    def to_json(self, score_format: str, raw: bool) -> dict[str, Any]:
        empty = {"year": None, "month": None, "day": None}
        return {
            "id": self.id,
            "mediaId": self.media.id,
            "status": self.status,
            "progress": self.progress,
            "repeat": self.repeat,
            "score": float(self.score if raw else shown_score(self.score, score_format)),
            "private": self.private,
            "hiddenFromStatusLists": self.hidden,
            "notes": self.notes,
            "startedAt": {**empty, **self.started_at},
            "completedAt": {**empty, **self.completed_at},
            "updatedAt": self.updated_at,
            "createdAt": self.created_at,
            "media": self.media.to_json(),
        }


@dataclass
class User:
    id: int
    name: str
    score_format: str = "POINT_100"
    custom_lists: list[str] = field(default_factory=list)
    private: bool = False
    entries: dict[int, Entry] = field(default_factory=dict)  # by list entry id

    def by_media(self, media_id: int) -> Entry | None:
        return next((e for e in self.entries.values() if e.media.id == media_id), None)


@dataclass
class Token:
    user: User
    expires_at: float


class _Abort(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _errors(message: str, status: int, http: int | None = None, **extra: Any) -> _Abort:
    error = {"message": message, "status": status, "locations": [{"line": 1, "column": 1}]}
    body = {"data": None, "errors": [{**error, **extra}]}
    return _Abort(json_response(body, http if http is not None else status))


class FakeAniList(FakeServer):
    """A stateful AniList. Seed with ``add_user``, ``add_media``, ``add_entry``,
    ``generate_list``; sign in with ``issue_token`` / ``authorize`` (pin-page code).
    Inspect: ``user(...).entries``, ``operations`` (names of the GraphQL operations served).
    Misbehave: ``limit``, ``burst_limit``/``burst_window``/``burst_retry_after``,
    ``send_rate_headers``, ``disabled``, ``fail_graphql_next``, ``fail_operation``,
    ``cloudflare_next``, ``lose_answers``, ``expire_tokens`` (plus the base's knobs). Clock:
    ``now``, ``advance``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.limit = 30  # §3: served 30/min ("degraded"; nominal 90)
        self.burst_limit = 10  # PlexAniSync#49: ~10 requests per second trip it
        self.burst_window = 1.0
        self.burst_retry_after = 2
        self.timeout = 60  # §3: going over the limit gives a 1-minute timeout
        self.send_rate_headers = True
        self.disabled = False
        self.operations: list[str] = []
        self.rate_limited: list[str] = []  # "window" or "burst", per 429 answered
        self.users: dict[int, User] = {}
        self.media: dict[int, Media] = {}
        self.tokens: dict[str, Token] = {}
        self.codes: dict[str, User] = {}
        self._offset = 0.0
        self._window_start = -math.inf
        self._window_count = 0
        self._blocked_until = 0.0
        self._recent: list[float] = []
        self._graphql_failures: list[tuple[str, int]] = []
        self._next_entry = 401_300_000
        self.viewer = self.add_user(5678901, "alice_tv", "POINT_5", ["Rewatch queue"])

    # ======================================================================================
    # clock, seeding, inspection
    # ======================================================================================
    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self.lock:
            self._offset += seconds

    @property
    def auth_url(self) -> str:
        return f"{self.url}/api/v2/oauth"

    def add_user(
        self,
        user_id: int,
        name: str,
        score_format: str = "POINT_100",
        custom_lists: list[str] | None = None,
    ) -> User:
        with self.lock:
            user = self.users[user_id] = User(user_id, name, score_format, custom_lists or [])
            return user

    def add_media(self, media_id: int, episodes: int | None = 12, **kwargs: Any) -> Media:
        with self.lock:
            media = self.media.setdefault(media_id, Media(media_id, episodes, **kwargs))
            return media

    def add_entry(
        self, media_id: int, user: User | None = None, *, episodes: int | None = 12, **fields: Any
    ) -> Entry:
        with self.lock:
            user = user or self.viewer
            media = self.media.get(media_id) or self.add_media(media_id, episodes)
            self._next_entry += 1
            stamp = int(fields.pop("updated_at", self.now()))
            entry = Entry(self._next_entry, user.id, media, updated_at=stamp, created_at=stamp)
            for name, value in fields.items():
                setattr(entry, name, value)
            user.entries[entry.id] = entry
            return entry

    def generate_list(self, n: int, progress_total: int, user: User | None = None) -> None:
        """``n`` entries with mixed statuses and ``progress_total`` episodes of progress."""
        with self.lock:
            user = user or self.viewer
            per = progress_total // n
            extra = progress_total - per * n
            base = self.now() - n * 3600
            for i in range(n):
                progress = per + (1 if i < extra else 0)
                status = STATUSES[i % len(STATUSES)]
                if status == "PLANNING":
                    status = "CURRENT"
                episodes = progress if status == "COMPLETED" else progress + 3
                self.add_entry(
                    100_000 + i,
                    user,
                    episodes=episodes,
                    status=status,
                    progress=progress,
                    score=(i * 7) % 101,
                    updated_at=base + i * 3600,
                    custom_lists=["Rewatch queue"] if i % 50 == 0 else [],
                )

    def user(self, user_id: int | None = None) -> User:
        return self.users[user_id] if user_id is not None else self.viewer

    def issue_token(
        self, user: User | None = None, lifetime: float = YEAR, *, at: float | None = None
    ) -> str:
        """A token for ``user`` (default: the viewer), as `watchbridge auth anilist` gets,
        issued at ``at`` (a test's own clock: its expiry then does not drift with the time
        the test took to get there), else at ``now()``."""
        with self.lock:
            user = user or self.viewer
            expires = (self.now() if at is None else at) + lifetime
            token = jwt({"aud": CLIENT_ID, "sub": str(user.id), "exp": int(expires)})
            self.tokens[token] = Token(user, expires)
            return token

    def authorize(self, user: User | None = None) -> str:
        """The code the pin page shows once ``user`` approves the app (§2)."""
        with self.lock:
            code = secrets.token_urlsafe(24)
            self.codes[code] = user or self.viewer
            return code

    def expire_tokens(self) -> None:
        with self.lock:
            for token in self.tokens.values():
                token.expires_at = self.now() - 1

    def fail_graphql_next(self, message: str = "Internal Server Error", status: int = 500) -> None:
        """The next GraphQL request answers HTTP 200 with an ``errors`` array (§1)."""
        with self.lock:
            self._graphql_failures.append((message, status))

    def fail_operation(
        self,
        operation: str,
        n: int,
        status: int = 500,
        *,
        media_id: int | None = None,
        skip: int = 0,
    ) -> None:
        """Answer the next ``n`` requests of ``operation`` (``SaveMediaListEntry``, ``Viewer``,
        ...; of title ``media_id`` if given; after letting ``skip`` through) with HTTP
        ``status`` and an error page, without running them (AniList's bad moments, §3)."""
        error = Response(status, b"<html><body>Internal Server Error</body></html>")
        error.headers["Content-Type"] = "text/html"
        self._queue(
            _OperationKnob(
                "fail",
                n,
                None,
                error,
                owner=self,
                operation=operation,
                media_id=media_id,
                skip=skip,
            )
        )

    def cloudflare_next(self, n: int = 1, *, status: int = 403) -> None:
        """The next ``n`` GraphQL requests get a Cloudflare HTML error page in AniList's place:
        AniList's own answers, errors too, are JSON with ``data`` or ``errors`` (§1)."""
        self.fail_next(n, status, {"server": "cloudflare"}, cloudflare_page(status), route="POST /")

    def lose_answers(self, operation: str, n: int) -> None:
        """Run the next ``n`` requests of ``operation``, then close the connection without
        answering: AniList did the work, the client never hears of it."""
        self._queue(
            _OperationKnob("drop", n, None, after_handler=True, owner=self, operation=operation)
        )

    def hold_operation(self, operation: str) -> threading.Event:
        """Hold back the answer of the next request of ``operation`` (it already ran) until
        the returned event is set (``hold_next`` for one GraphQL operation)."""
        released = threading.Event()
        self._queue(
            _OperationKnob("hold", 1, None, released=released, owner=self, operation=operation)
        )
        return released

    # ======================================================================================
    # OAuth
    # ======================================================================================
    @route("POST", "/api/v2/oauth/token")
    def token_endpoint(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return json_response({"error": "invalid_request"}, 400)
        if body.get("client_id") != CLIENT_ID or body.get("client_secret") != CLIENT_SECRET:
            return json_response({"error": "invalid_client"}, 401)
        if body.get("grant_type") != "authorization_code":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if body.get("redirect_uri") != PIN_REDIRECT:  # must match the registered URL (§2)
            return json_response({"error": "invalid_request", "hint": "redirect_uri"}, 400)
        with self.lock:
            user = self.codes.pop(str(body.get("code")), None)
        if user is None:
            return json_response({"error": "invalid_grant"}, 400)
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": YEAR,
                "access_token": self.issue_token(user),
                "refresh_token": secrets.token_hex(16),  # present, but unusable (§2)
            }
        )

    # ======================================================================================
    # GraphQL
    # ======================================================================================
    @route("POST", "/")
    def graphql(self, req: Request) -> Response:
        with self.lock:
            try:
                headers = self._gate()
                body = self._body(req)
                query = str(body.get("query") or "")
                variables = body.get("variables") or {}
                if self._graphql_failures:
                    message, status = self._graphql_failures.pop(0)
                    raise _errors(message, status, 200)
                data = self._operation(req, query, variables)
                response = json_response({"data": data})
            except _Abort as abort:
                response = abort.response
                headers = {**self._rate_headers(), **response.headers}
            response.headers = {**headers, **response.headers}
            return response

    def _rate_headers(self) -> dict[str, str]:
        if not self.send_rate_headers:
            return {}
        remaining = max(0, self.limit - self._window_count)
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(remaining)}

    def _gate(self) -> dict[str, str]:
        now = self.now()
        if self.disabled:
            raise _errors(DISABLED_MESSAGE, 403)
        if now < self._blocked_until:
            raise self._too_many(now, self._blocked_until, "window")
        if now >= self._window_start + 60:
            self._window_start, self._window_count = now, 0
        self._recent = [t for t in self._recent if t > now - self.burst_window]
        if len(self._recent) >= self.burst_limit:
            raise self._too_many(now, now + self.burst_retry_after, "burst")
        if self._window_count >= self.limit:
            self._blocked_until = now + self.timeout
            raise self._too_many(now, self._blocked_until, "window")
        self._window_count += 1
        self._recent.append(now)
        return self._rate_headers()

    def _too_many(self, now: float, until: float, kind: str) -> _Abort:
        self.rate_limited.append(kind)
        body = {"data": None, "errors": [{"message": "Too Many Requests.", "status": 429}]}
        remaining = 0 if kind == "window" else max(0, self.limit - self._window_count)
        headers = {
            "Retry-After": str(max(1, math.ceil(until - now))),
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),  # the burst limiter ignores this (§3)
            "X-RateLimit-Reset": str(math.ceil(until)),
        }
        return _Abort(json_response(body, 429, headers))

    def _body(self, req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise _errors("Must provide query string.", 400)
        return body

    def _caller(self, req: Request, required: bool) -> User | None:
        header = req.headers.get("authorization")
        if header is None:
            if required:
                raise _errors("Unauthorized.", 401)
            return None
        scheme, _, value = header.partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or self.now() >= token.expires_at:
            raise _errors("Invalid token", 400)
        return token.user

    def _operation(self, req: Request, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        text = re.sub(r"#[^\n]*", "", query).strip()
        if "SaveMediaListEntry" in text or "DeleteMediaListEntry" in text:
            if not text.startswith("mutation"):  # §1: mutations need the keyword
                raise _errors("Mutations must start with the mutation keyword", 400)
            user = self._caller(req, required=True)
            assert user is not None
            if "SaveMediaListEntry" in text:
                self.operations.append("SaveMediaListEntry")
                return {"SaveMediaListEntry": self._save(user, variables, text)}
            self.operations.append("DeleteMediaListEntry")
            return {"DeleteMediaListEntry": self._delete(user, variables)}
        if "MediaListCollection" in text:
            self.operations.append("MediaListCollection")
            return {"MediaListCollection": self._collection(req, variables, text)}
        if "mediaList(" in text and "Page" in text:
            self.operations.append("Page.mediaList")
            return {"Page": self._page(req, variables, text)}
        if "media(" in text and "Page" in text:
            self.operations.append("Page.media")
            return {"Page": self._media_page(variables)}
        if "Viewer" in text:
            self.operations.append("Viewer")
            user = self._caller(req, required=True)
            assert user is not None
            return {"Viewer": self._viewer(user)}
        # Like samples/anilist/error-graphql-200.json: an unknown field, answered with 200.
        raise _errors('Cannot query field "unknown" on type "Query".', 400, 200)

    @staticmethod
    def _viewer(user: User) -> dict[str, Any]:
        return {
            "id": user.id,
            "name": user.name,
            "mediaListOptions": {
                "scoreFormat": user.score_format,
                "animeList": {"customLists": user.custom_lists, "advancedScoringEnabled": False},
            },
        }

    def _list_owner(self, req: Request, variables: dict[str, Any]) -> tuple[User, User | None]:
        caller = self._caller(req, required=False)
        user_id = variables.get("userId")
        if not isinstance(user_id, int):  # §1: the user is never inferred from the token
            raise _errors("validation", 400, validation={"userId": ["userId is required."]})
        owner = self.users.get(user_id)
        if owner is None:
            raise _errors("Not Found.", 404)
        if owner.private and caller is not owner:
            raise _errors("Private User", 404)  # SILENT: exact message for private lists
        return owner, caller

    def _collection(self, req: Request, variables: dict[str, Any], text: str) -> dict[str, Any]:
        owner, _ = self._list_owner(req, variables)
        chunk = max(1, int(variables.get("chunk") or 1))
        per_chunk = min(500, max(1, int(variables.get("perChunk") or 500)))  # §5.2: max 500
        raw = "format: POINT_100" in text
        ordered = sorted(
            owner.entries.values(), key=lambda e: (STATUSES.index(e.status), -e.updated_at, e.id)
        )
        part = ordered[(chunk - 1) * per_chunk : chunk * per_chunk]
        groups: list[dict[str, Any]] = []
        for status, name in STATUS_GROUPS.items():
            entries = [e for e in part if e.status == status and not e.hidden]
            if entries:
                groups.append(
                    {
                        "name": name,
                        "status": status,
                        "isCustomList": False,
                        "isSplitCompletedList": False,
                        "entries": [e.to_json(owner.score_format, raw) for e in entries],
                    }
                )
        for custom in owner.custom_lists:  # §5.2: an entry shows up in every list it is in
            entries = [e for e in part if custom in e.custom_lists]
            if entries:
                groups.append(
                    {
                        "name": custom,
                        "status": None,
                        "isCustomList": True,
                        "isSplitCompletedList": False,
                        "entries": [e.to_json(owner.score_format, raw) for e in entries],
                    }
                )
        return {"hasNextChunk": chunk * per_chunk < len(ordered), "lists": groups}

    def _page(self, req: Request, variables: dict[str, Any], text: str) -> dict[str, Any]:
        owner, _ = self._list_owner(req, variables)
        page = max(1, int(variables.get("page") or 1))
        found = re.search(r"perPage:\s*(\d+)", text)
        per_page = min(50, int(variables.get("perPage") or (found.group(1) if found else 50)))
        raw = "format: POINT_100" in text
        ordered = sorted(owner.entries.values(), key=lambda e: (-e.updated_at, -e.id))
        part = ordered[(page - 1) * per_page : page * per_page]
        return {
            "pageInfo": {"hasNextPage": page * per_page < len(ordered)},
            "mediaList": [e.to_json(owner.score_format, raw) for e in part],
        }

    def _media_page(self, variables: dict[str, Any]) -> dict[str, Any]:
        """`Page { media(id_in: $ids) }`: titles whether on a list or not (no token needed)."""
        ids = variables.get("ids") or variables.get("id_in") or []
        if not isinstance(ids, list) or len(ids) > 50:
            raise _errors("validation", 400, validation={"ids": ["at most 50 ids per page"]})
        found = [self.media[i].to_json() for i in ids if isinstance(i, int) and i in self.media]
        return {"pageInfo": {"hasNextPage": False}, "media": found}

    def _save(self, user: User, variables: dict[str, Any], text: str) -> dict[str, Any]:
        validation: dict[str, list[str]] = {}
        status = variables.get("status")
        if status is not None and status not in STATUSES:
            validation["status"] = ["The selected status is invalid."]
        score_raw = variables.get("scoreRaw")
        if score_raw is not None and not (isinstance(score_raw, int) and 0 <= score_raw <= 100):
            validation["score"] = ["The score may not be greater than 100."]
        progress = variables.get("progress")
        if progress is not None and not (isinstance(progress, int) and progress >= 0):
            validation["progress"] = ["The progress must be at least 0."]
        entry: Entry | None = None
        if variables.get("id") is not None:
            entry = user.entries.get(variables["id"])
            if entry is None:
                validation["id"] = ["The selected id is invalid."]
        if validation:
            raise _errors("validation", 400, validation=validation)
        if entry is None:
            media_id = variables.get("mediaId")
            media = self.media.get(media_id) if isinstance(media_id, int) else None
            if media is None:
                raise _errors("Not Found.", 404)
            entry = user.by_media(media.id)
            if entry is None:
                self._next_entry += 1
                stamp = int(self.now())
                entry = Entry(self._next_entry, user.id, media, created_at=stamp)
                user.entries[entry.id] = entry
        if status is not None:
            entry.status = status
        if progress is not None:
            entry.progress = progress  # SILENT (§6): progress past `episodes` is not refused
        if variables.get("repeat") is not None:
            entry.repeat = int(variables["repeat"])
        if score_raw is not None:
            entry.score = score_raw
        elif variables.get("score") is not None:
            entry.score = raw_score(float(variables["score"]), user.score_format)
        for name, attr in (("startedAt", "started_at"), ("completedAt", "completed_at")):
            if isinstance(variables.get(name), dict):
                setattr(entry, attr, dict(variables[name]))
        entry.updated_at = int(self.now())
        return entry.to_json(user.score_format, "format: POINT_100" in text)

    def _delete(self, user: User, variables: dict[str, Any]) -> dict[str, Any]:
        entry_id = variables.get("id")
        if entry_id not in user.entries:
            return {"deleted": False}  # SILENT: AniList's answer for an unknown id
        del user.entries[entry_id]
        return {"deleted": True}

    def snapshot(self, user: User | None = None) -> dict[int, dict[str, Any]]:
        """The list as ``{media_id: entry json (raw score)}`` for assertions."""
        with self.lock:
            owner = user or self.viewer
            return {
                e.media.id: copy.deepcopy(e.to_json(owner.score_format, True))
                for e in owner.entries.values()
            }


@dataclass
class _OperationKnob(_Knob):
    """A base-fake knob for one GraphQL operation (see ``FakeAniList.fail_operation``)."""

    owner: FakeAniList | None = None
    operation: str = ""
    media_id: int | None = None
    skip: int = 0

    def applies(self, req: Request) -> bool:
        try:
            body = req.json()
        except ValueError:
            return False
        if not isinstance(body, dict) or self.operation not in str(body.get("query")):
            return False
        if (
            self.media_id is not None
            and self._media_of(body.get("variables") or {}) != self.media_id
        ):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def _media_of(self, variables: dict[str, Any]) -> int | None:
        if "mediaId" in variables:
            return int(variables["mediaId"])
        assert self.owner is not None
        for user in self.owner.users.values():
            entry = user.entries.get(variables.get("id"))
            if entry is not None:
                return entry.media.id
        return None
