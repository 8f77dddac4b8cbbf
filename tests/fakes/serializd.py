"""Stateful fake of Serializd's unofficial API (the Render host: ``/api/...`` and ``/mobile/...``).

Follows ``shared/reference/serializd.md`` (section numbers below refer to it); the JSON shapes
are those of ``tests/fixtures/serializd/`` (copies of the reference samples). Point
``services.serializd.api_url`` at ``fake.url``.

Every request passes, in this order (each step can answer instead of the handler):

1. Queued knobs of the base (``fail_next``, ``delay_next``, ``drop_next``) and
   ``checkpoint_next(n)``: the www host's HTML "Vercel Security Checkpoint" ``429`` (§1, §8).
2. App headers: no ``X-Requested-With: serializd_vercel`` -> ``401`` (§1: anibridge saw a 401
   with a valid token when the three headers were left out; only this one is enforced by
   default; ``require_origin_referer = True`` also enforces ``Origin``/``Referer``).
3. Auth (§2): ``Authorization: Bearer <token>`` or the ``tvproject_credentials`` cookie. User
   routes without a valid token -> ``401 {"message": "You must be logged in"}``; tokens die
   with ``expire_tokens()`` or when their ``expiry_time`` passes on the fake's clock.
4. Write bodies (§1): parsed as JSON whatever the ``Content-Type``; a body that is not a JSON
   object, has a camelCase key, misses a required key or has a wrongly typed value answers a
   **plain-text 500** (Django's debug traceback text), never JSON.
5. The handler. Unknown paths answer Django's HTML 404 page; a known path with the wrong
   method answers 405.

User state is kept as **two separate systems** (§5.2, §6): *ticks* (``episode_log/add``,
per episode) plus *season marks* (``watched_v2``), and the *diary* (``show/reviews/add``).
Neither system ever writes the other. The *watchlist* (``watchlist_v2``, per season) is a
third: a season is never both marked watched and watchlisted (§6.1, "the web bundle says"), so
each write takes the season off the other list (``watchlist_clears_watched``).

Choices made where the reference is silent are marked ``SILENT:`` in comments; things the
reference lists as unconfirmed are marked ``UNCONFIRMED:``. Time comes from ``fake.now()``
(wall clock + ``fake.advance(seconds)``).
"""

from __future__ import annotations

import base64
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .base import (
    HTML_TYPE,
    FakeServer,
    Request,
    Response,
    html_response,
    json_response,
    route,
)

APP_ID = "serializd_vercel"
SITE = "https://www.serializd.com"
TEXT_TYPE = "text/plain; charset=utf-8"
NOT_LOGGED_IN = {"message": "You must be logged in"}  # samples: error-401-not-logged-in.json
INCORRECT_PASSWORD = {"message": "Incorrect password."}  # samples: login-error-401.json
CHECKPOINT_HTML = (  # samples: www-checkpoint-429.txt (abbreviated there too)
    '<!DOCTYPE html><html lang="en"><head><title>Vercel Security Checkpoint</title></head>'
    "<body><p>We're verifying your browser</p></body></html>"
)
DJANGO_404 = (  # §1: unknown paths answer Django's HTML 404 page (DEBUG=True lists routes)
    "<!DOCTYPE html><html><head><title>Page not found at {path}</title></head><body>"
    "<h1>Page not found <span>(404)</span></h1><p>Using the URLconf defined in "
    "<code>tvproject.urls</code>, Django tried these URL patterns...</p></body></html>"
)
ALICE = ("alice@example.com", "correct horse battery staple", "alice_tv")  # login samples


# -- time ------------------------------------------------------------------------------------
def iso(ts: float) -> str:
    """``2026-07-02T19:12:44Z``: the samples' format (seconds, ``Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float:
    """ISO-8601 to a unix timestamp (naive = UTC); ``ValueError`` when unparsable."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- catalogue -------------------------------------------------------------------------------
@dataclass(eq=False)
class Season:
    id: int  # the TMDB *season* id (§3)
    number: int
    episode_count: int
    name: str
    first_episode_id: int = 0
    aired: dict[int, str] = field(default_factory=dict)  # episode number -> air date (TMDB's)

    @property
    def empty(self) -> bool:
        return self.episode_count == 0


@dataclass(eq=False)
class Show:
    id: int  # the TMDB tv id (§3)
    name: str
    premiere_date: str | None = None
    seasons: dict[int, Season] = field(default_factory=dict)  # by season number

    def season_by_id(self, season_id: int) -> Season | None:
        return next((s for s in self.seasons.values() if s.id == season_id), None)

    def season_rows(self) -> list[dict[str, Any]]:
        """``showSeasons`` of diary rows (samples: diary-page-1.json)."""
        return [
            {"id": s.id, "seasonNumber": s.number, "name": s.name, "posterPath": None}
            for s in self.sorted_seasons()
        ]

    def sorted_seasons(self) -> list[Season]:
        return [self.seasons[n] for n in sorted(self.seasons)]


# -- per-user state --------------------------------------------------------------------------
@dataclass(eq=False)
class Review:
    """One diary row (a "review" in Serializd's URLs), as ``show/reviews/add`` stores it."""

    id: int
    author: str
    show_id: int
    season_id: int | None  # None: a show-level row
    episode_number: int | None  # None: a season- or show-level row
    date_added: str  # ISO, when it was logged
    backdate: str | None  # ISO, the watch date the user gave
    rating: int  # 0-10 half stars, 0 = none (§7)
    review_text: str = ""
    tags: list[str] = field(default_factory=list)
    is_log: bool = True
    is_rewatch: bool = False
    contains_spoiler: bool = False
    like: bool = False
    allows_comments: bool = True

    @property
    def watched_at(self) -> str:
        return self.backdate or self.date_added


@dataclass(eq=False)
class User:
    email: str
    password: str
    username: str
    public: bool = False  # public profiles answer user reads without a token (§5)
    ticks: dict[tuple[int, int, int], str] = field(default_factory=dict)  # (show, season, ep)
    marks: dict[tuple[int, int], str] = field(default_factory=dict)  # (show, season id)
    reviews: list[Review] = field(default_factory=list)
    watchlist: dict[tuple[int, int], str] = field(default_factory=dict)  # (show, season id)
    watching: dict[int, str] = field(default_factory=dict)  # "currently watching": show id


@dataclass(eq=False)
class Token:
    value: str
    user: User
    expires_at: float
    expired: bool = False  # forced by ``expire_tokens``


class _Abort(Exception):
    """Raised inside handlers: answer ``resp`` instead."""

    def __init__(self, resp: Response) -> None:
        super().__init__(resp.status)
        self.resp = resp


def _fail(status: int, message: str) -> _Abort:
    """An app error in Serializd's ``{"message": ...}`` shape (§1)."""
    return _Abort(json_response({"message": message}, status))


def _crash(path: str, problem: str) -> _Abort:
    """A Django exception: a plain-text 500 (§1 "Some failures are plain-text 500s")."""
    text = f"{problem} at {path}\n\nRequest Method: POST\nRequest URL: {path}\n"
    return _Abort(Response(500, text.encode(), {"Content-Type": TEXT_TYPE}))


# -- route decorators --------------------------------------------------------------------------
Auth = Literal["none", "required", "profile"]


def _endpoint(method: str, pattern: str, auth: Auth) -> Callable[[Any], Any]:
    """Wrap a handler ``(self, req, user, body)`` with the request gate (module doc)."""

    def wrap(fn: Any) -> Any:
        def handler(self: FakeSerializd, req: Request) -> Response:
            return self._serve(req, auth, fn)

        handler.__name__, handler.__doc__ = fn.__name__, fn.__doc__
        return route(method, pattern)(handler)

    return wrap


def anon(method: str, pattern: str) -> Callable[[Any], Any]:
    """No token needed (login, token check, catalogue); ``user`` is None."""
    return _endpoint(method, pattern, "none")


def authed(method: str, pattern: str) -> Callable[[Any], Any]:
    """A valid token needed; ``user`` is the token's owner."""
    return _endpoint(method, pattern, "required")


def profile(method: str, pattern: str) -> Callable[[Any], Any]:
    """``/api/user/{username}/...`` reads; ``user`` is the profile's owner (§5)."""
    return _endpoint(method, pattern, "profile")


def _int(body: Mapping[str, Any], key: str, path: str, *, nullable: bool = False) -> Any:
    """An int field (digit strings accepted: EthanShoe sends ``episode_number`` as text, §6.2)."""
    if key not in body:
        raise _crash(path, f"KeyError: '{key}'")
    value = body[key]
    if value is None and nullable:
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _crash(path, f"TypeError: {key} must be an integer, not {type(value).__name__}")
    return value


def _int_list(body: Mapping[str, Any], key: str, path: str) -> list[int]:
    values = body.get(key)
    if not isinstance(values, list):
        raise _crash(path, f"KeyError: '{key}'")
    return [_int({key: v}, key, path) for v in values]


def _camel(key: str) -> bool:
    return key != key.lower()


class FakeSerializd(FakeServer):
    """A stateful Serializd. Default user ``fake.user`` (alice_tv, the samples' account).

    Seed: ``add_show(tmdb_id, name, seasons={1: 10})`` (auto season ids), ``seed_reference_
    catalogue()`` (Breaking Bad as in show-1396.json), ``add_user``, ``log_entry`` (a diary
    row), ``tick`` / ``mark`` (watched state), ``add_to_watchlist``, ``start_watching`` (the
    "currently watching" list), ``issue_token``.
    The user in the app: ``edit_entry`` (a diary row's watch date or rating), ``delete_entry``.
    Inspect: ``diary(user)``, ``ticks(user)``, ``season_marks(user)``, ``watchlisted(user)``
    (plus the base's ``requests``/``calls``/``count``).
    Misbehave: ``expire_tokens``, ``checkpoint_next``, ``require_origin_referer``,
    ``diary_order``, ``diary_total_reviews``, ``deleted_before_page``, ``logged_before_page``,
    ``flag_spelling``, ``season_row_keys``, ``show_episode_counts``, ``reviews_add_answer``,
    ``accept_null_rating``, ``watchlist_clears_watched`` (plus the base's
    ``fail_next``/``delay_next``/``drop_next``).
    Clock: ``now``, ``advance``.
    """

    def __init__(self, *, token_lifetime: float = 365 * 86400) -> None:
        super().__init__()
        # SILENT: one project says tokens last about a year (§2, single source).
        self.token_lifetime = token_lifetime
        self.require_origin_referer = False  # §1: [unconfirmed] whether these are enforced
        self.diary_page_size = 24  # §5.1: "one source says a page holds 24 entries"
        # Failures of an unofficial API: this diary page answers empty once (a glitch), and
        # every diary page answers page 1 (`page` ignored).
        self.empty_diary_page: int | None = None
        self.diary_ignores_page = False
        # The user deletes this entry in the app just before this diary page is answered.
        self.deleted_before_page: tuple[int, Review] | None = None
        # The user logs this entry, or these (made by ``log_entry``, then taken out of the
        # diary), in the app just before this diary page is answered; with a deletion of one,
        # one logged keeps the count.
        self.logged_before_page: tuple[int, Review | list[Review]] | None = None
        # §5.1: `totalReviews` is an int or null ("null": every diary page answers null).
        self.diary_total_reviews: Literal["count", "null"] = "count"
        # Diary rows answered with a `showSeasons` list lacking their own season (TMDB
        # re-keyed it): the row cannot be placed.
        self.rows_without_their_season: set[int] = set()
        # Episode numbers a diary add answers with a plain-text 500 every time (§1: Django's
        # bare 500s, e.g. an episode TMDB renumbered away).
        self.episodes_that_crash: set[int] = set()
        # Episode numbers a diary add refuses with a 400 every time (an item the target never
        # takes; SILENT: status and text).
        self.episodes_refused: set[int] = set()
        # §5.1: order is not guaranteed. "jittered": newest first, each row displaced by up to
        # ``diary_jitter`` places (deterministic per ``diary_seed``); "shuffled": any order;
        # "newest": strictly newest first by dateAdded (for tests that need exact pages).
        self.diary_order: Literal["jittered", "shuffled", "newest"] = "jittered"
        self.diary_jitter = 36.0
        self.diary_seed = 7
        # §5.1 [unconfirmed]: isLog/isRewatch/containsSpoiler ("short", as in the samples and
        # most clients) or isLogged/isRewatched/containsSpoilers ("long", Skyth3r's diary).
        self.flag_spelling: Literal["short", "long"] = "short"
        # §3: show ``seasons[]`` rows carry ``id`` (confirmed) and ``seasonId`` (anibridge).
        self.season_row_keys: tuple[str, ...] = ("id", "seasonId")
        # §4: show ``seasons[]`` rows carry ``episodeCount`` [confirmed]; False leaves it out,
        # for clients that must cope with a row without it (fields "can be null", §4).
        self.show_episode_counts = True
        # §6.2: the answer is the created review (single source); "message" answers only
        # ``{"message": ...}`` for clients that must cope without an id.
        self.reviews_add_answer: Literal["review", "message"] = "review"
        # §6.2: ``"rating": null`` is [unconfirmed]; SILENT: rejected like a missing rating.
        self.accept_null_rating = False
        self.watched_page_size = 24  # SILENT: no source gives the watchedpage_v2 page size
        self.watchlist_page_size = 24  # SILENT: nor the watchlistpage_v2 one
        # UNCONFIRMED (§6.1): "a season cannot be both Watched and Watchlisted, so a watchlist
        # write may clear watched state". True: watchlisting a watched season unmarks it, and
        # marking a watchlisted season watched takes it off the watchlist.
        self.watchlist_clears_watched = True
        # state
        self._offset = 0.0
        self._next_review_id = 53_121_777  # samples: reviews-add-response.json
        self._next_season_id = 900_000
        self._next_episode_id = 7_000_000
        self._token_serial = 0
        self.shows: dict[int, Show] = {}
        self.users: dict[str, User] = {}  # by email (lower case)
        self.tokens: dict[str, Token] = {}
        self.user = self.add_user(*ALICE)

    # ======================================================================================
    # public helpers: clock, catalogue, users, tokens, state
    # ======================================================================================
    def now(self) -> float:
        return time.time() + self._offset

    def date_clock(self) -> float:
        return self.now()  # its Date header tells the clock it stamps `dateAdded` by

    def advance(self, seconds: float) -> None:
        with self.lock:
            self._offset += seconds

    def add_show(
        self,
        tmdb_id: int,
        name: str,
        seasons: Mapping[int, int] | None = None,
        *,
        season_ids: Mapping[int, int] | None = None,
        premiere_date: str | None = None,
    ) -> Show:
        """A show; ``seasons={1: 10}`` is season 1 with 10 episodes (0 = announced, empty).

        Season ids are generated unless given in ``season_ids`` (season number -> TMDB id).
        """
        with self.lock:
            show = Show(tmdb_id, name, premiere_date)
            for number, count in (seasons if seasons is not None else {1: 10}).items():
                sid = (season_ids or {}).get(number)
                if sid is None:
                    self._next_season_id += 1
                    sid = self._next_season_id
                label = "Specials" if number == 0 else f"Season {number}"
                show.seasons[number] = Season(sid, number, count, label, self._next_episode_id)
                self._next_episode_id += count
            self.shows[tmdb_id] = show
            return show

    def seed_reference_catalogue(self) -> Show:
        """Breaking Bad exactly as in show-1396.json (season ids and episode counts)."""
        return self.add_show(
            1396,
            "Breaking Bad",
            {0: 11, 1: 7, 2: 13, 3: 13, 4: 13, 5: 16},
            season_ids={0: 3577, 1: 3572, 2: 3573, 3: 3575, 4: 3576, 5: 3578},
            premiere_date="2008-01-20",
        )

    def add_user(self, email: str, password: str, username: str, *, public: bool = False) -> User:
        with self.lock:
            user = User(email, password, username, public)
            self.users[email.lower()] = user
            return user

    def issue_token(self, user: User | None = None) -> str:
        """A fresh token for ``user`` (default ``fake.user``), as a login would give."""
        with self.lock:
            user = user or self.user
            self._token_serial += 1
            expires = self.now() + self.token_lifetime
            header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            claims = {"username": user.username, "expiry_time": iso(expires)}
            payload = _b64(json.dumps({**claims, "n": self._token_serial}).encode())
            value = f"{header}.{payload}.{_b64(b'signature-not-real')}"
            self.tokens[value] = Token(value, user, expires)
            return value

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (tokens issued later work)."""
        with self.lock:
            for token in self.tokens.values():
                token.expired = True

    def checkpoint_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with the www host's HTML bot checkpoint (429)."""
        self.fail_next(n, 429, body=CHECKPOINT_HTML, content_type=HTML_TYPE)

    def log_entry(
        self,
        user: User | None,
        show_id: int,
        season_number: int | None,
        episode_number: int | None,
        *,
        backdate: str | None = None,
        date_added: str | None = None,
        rating: int = 0,
        is_rewatch: bool = False,
        review_text: str = "",
        tags: Iterable[str] = (),
        is_log: bool = True,
    ) -> Review:
        """Seed a diary row (season by *number*; ``None`` for a show-level row)."""
        with self.lock:
            show = self.shows[show_id]
            season_id = None if season_number is None else show.seasons[season_number].id
            return self._add_review(
                user or self.user,
                show_id,
                season_id,
                episode_number,
                backdate=backdate,
                date_added=date_added or iso(self.now()),
                rating=rating,
                is_rewatch=is_rewatch,
                review_text=review_text,
                tags=list(tags),
                is_log=is_log,
            )

    def tick(self, user: User | None, show_id: int, season_number: int, *episodes: int) -> None:
        """Seed ticked episodes (the per-episode watched state)."""
        with self.lock:
            season = self.shows[show_id].seasons[season_number]
            for number in episodes:
                (user or self.user).ticks[(show_id, season.id, number)] = iso(self.now())

    def mark(self, user: User | None, show_id: int, *season_numbers: int) -> None:
        """Seed whole seasons marked watched."""
        with self.lock:
            for number in season_numbers:
                season = self.shows[show_id].seasons[number]
                (user or self.user).marks[(show_id, season.id)] = iso(self.now())

    def add_to_watchlist(self, user: User | None, show_id: int, *season_numbers: int) -> None:
        """Seed seasons on the watchlist (by number; none given: every regular season)."""
        with self.lock:
            show = self.shows[show_id]
            numbers = season_numbers or tuple(n for n in show.seasons if n > 0)
            for number in numbers:
                season = show.seasons[number]
                (user or self.user).watchlist[(show_id, season.id)] = iso(self.now())

    def start_watching(self, user: User | None, *show_ids: int) -> None:
        """Seed shows on the "currently watching" list (SILENT: ticking an episode does not
        put its show there; the reference does not say whether it does)."""
        with self.lock:
            for show_id in show_ids:
                (user or self.user).watching[show_id] = iso(self.now())

    def edit_entry(
        self,
        review: Review,
        *,
        backdate: str | None = None,
        rating: int | None = None,
        new_id: bool = False,
    ) -> Review:
        """The user edits a diary entry in the app: a new watch date and/or rating.

        SILENT: the reference does not say what an edit does to the row. By default it keeps
        its id and `dateAdded`; ``new_id`` makes the edit a new row (a new id, `dateAdded`
        now) in place of the old one, as an app that deletes and adds again would."""
        with self.lock:
            user = next(u for u in self.users.values() if u.username == review.author)
            if new_id:
                user.reviews.remove(review)
                self._next_review_id += 1
                review = Review(
                    **{**review.__dict__, "id": self._next_review_id, "date_added": iso(self.now())}
                )
                user.reviews.append(review)
            if backdate is not None:
                review.backdate = backdate
            if rating is not None:
                review.rating = rating
            return review

    def delete_entry(self, review: Review, *, untick: bool = False) -> None:
        """The user deletes a diary entry in the app. SILENT: whether that unticks the
        episode too (the two systems are separate, §6); ``untick`` does both."""
        with self.lock:
            user = next(u for u in self.users.values() if u.username == review.author)
            user.reviews.remove(review)
            if untick:
                user.ticks.pop((review.show_id, review.season_id, review.episode_number), None)

    def watchlisted(self, user: User | None = None) -> dict[int, set[int]]:
        """Show id -> the season ids on the watchlist."""
        with self.lock:
            shows: dict[int, set[int]] = {}
            for show_id, season_id in (user or self.user).watchlist:
                shows.setdefault(show_id, set()).add(season_id)
            return shows

    def diary(self, user: User | None = None) -> list[Review]:
        """Diary rows in the order they were created."""
        with self.lock:
            return list((user or self.user).reviews)

    def ticks(self, user: User | None = None) -> set[tuple[int, int, int]]:
        """``(show_id, season_id, episode_number)`` of every ticked episode."""
        with self.lock:
            return set((user or self.user).ticks)

    def season_marks(self, user: User | None = None) -> set[tuple[int, int]]:
        """``(show_id, season_id)`` of every season marked watched."""
        with self.lock:
            return set((user or self.user).marks)

    # ======================================================================================
    # the gate
    # ======================================================================================
    def _serve(self, req: Request, auth: Auth, fn: Any) -> Response:
        try:
            self._check_app_headers(req)
            user = self._authenticate(req, auth)
            body = self._body(req) if req.method == "POST" else {}
            result = fn(self, req, user, body)
        except _Abort as abort:
            return abort.resp
        return result if isinstance(result, Response) else json_response(result)

    def _check_app_headers(self, req: Request) -> None:
        # SILENT: the body of the header-check 401 is not recorded; the "not logged in" one
        # is used, as anibridge saw it "even with a valid token".
        if req.headers.get("x-requested-with") != APP_ID:
            raise _Abort(json_response(NOT_LOGGED_IN, 401))
        if self.require_origin_referer and not all(
            (req.headers.get(h) or "").startswith(SITE) for h in ("origin", "referer")
        ):
            raise _Abort(json_response(NOT_LOGGED_IN, 401))

    def _token_user(self, req: Request) -> User | None:
        """The owner of the request's token; None without one; 401 when it is not valid."""
        value = None
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            value = auth[7:].strip()
        else:
            for part in req.headers.get("cookie", "").split(";"):
                name, _, cookie = part.strip().partition("=")
                if name == "tvproject_credentials":
                    value = cookie
        if not value:
            return None
        token = self.tokens.get(value)
        # SILENT: an expired or unknown token answers like a missing one.
        if token is None or token.expired or self.now() >= token.expires_at:
            raise _Abort(json_response(NOT_LOGGED_IN, 401))
        return token.user

    def _authenticate(self, req: Request, auth: Auth) -> User | None:
        if auth == "none":
            return None  # SILENT: catalogue and login routes ignore any token sent
        viewer = self._token_user(req)
        if auth == "required":
            if viewer is None:
                raise _Abort(json_response(NOT_LOGGED_IN, 401))
            return viewer
        owner = next((u for u in self.users.values() if u.username == req.params["username"]), None)
        if owner is None:
            raise _fail(404, "User not found")  # SILENT: status and text
        if not owner.public and viewer is None:
            raise _Abort(json_response(NOT_LOGGED_IN, 401))
        if not owner.public and viewer is not owner:
            raise _fail(403, "This profile is private")  # SILENT
        return owner

    def _body(self, req: Request) -> dict[str, Any]:
        # §1: serializd-py posts JSON without a content type, mwsmws22 used text/plain: both
        # work, so the body is parsed whatever the Content-Type says.
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            raise _crash(req.path, "JSONDecodeError: Expecting value") from None
        if not isinstance(body, dict):
            # SILENT: a double-encoded body (a JSON string, trakt-to-serializd#1) "failed";
            # the status is not recorded. Django's .get on a str would crash: 500.
            raise _crash(req.path, f"AttributeError: '{type(body).__name__}' has no 'get'")
        camel = sorted(k for k in body if _camel(k))
        if camel:  # §1 [confirmed]: camelCase request keys answer HTTP 500, not JSON
            raise _crash(req.path, f"KeyError: {camel[0]!r} is not a field")
        return body

    def _show(self, show_id: int) -> Show:
        show = self.shows.get(show_id)
        if show is None:
            raise _fail(404, "Show not found")  # SILENT: status and text for unknown shows
        return show

    def _season_of(self, show: Show, season_id: int) -> Season:
        season = show.season_by_id(season_id)
        if season is None:
            # SILENT: a season id that is not one of the show's (e.g. a season *number* sent
            # by mistake) answers 400; the real server's behaviour is not recorded.
            raise _fail(400, "Season not found")
        return season

    def _answer(self, req: Any, found: Any, matched: Any, knob: Any) -> Response | None:
        resp = super()._answer(req, found, matched, knob)
        unknown_path = found is None and not matched
        if unknown_path and resp is not None and (knob is None or knob.response is None):
            return html_response(DJANGO_404.format(path=req.path), 404)
        return resp

    # ======================================================================================
    # auth (§2)
    # ======================================================================================
    @anon("POST", "/api/login")
    def login(self, req: Request, _: None, body: dict[str, Any]) -> Any:
        email, password = body.get("email"), body.get("password")
        if not isinstance(email, str) or not isinstance(password, str):
            raise _crash(req.path, "KeyError: 'email'")  # SILENT
        user = self.users.get(email.lower())  # SILENT: emails compared case-insensitively
        if user is None:
            raise _fail(401, "User does not exist.")  # SILENT: status and text
        if password != user.password:
            return json_response(INCORRECT_PASSWORD, 401)
        return {"username": user.username, "token": self.issue_token(user)}

    @anon("POST", "/api/validateauthtoken")
    def validate_token(self, req: Request, _: None, body: dict[str, Any]) -> Any:
        token = self.tokens.get(str(body.get("token") or ""))
        if token is None or token.expired or self.now() >= token.expires_at:
            return {"isValid": False, "username": None}  # SILENT: shape of a "no"
        return {"isValid": True, "username": token.user.username}

    # ======================================================================================
    # catalogue (§4)
    # ======================================================================================
    @anon("GET", "/api/show/{id}")
    def show(self, req: Request, _: None, body: dict[str, Any]) -> Any:
        show = self._show(self._path_int(req, "id"))
        seasons = show.sorted_seasons()
        rows = []
        for s in seasons:
            keys = dict.fromkeys(self.season_row_keys, s.id)
            row = {
                **keys,
                "seasonNumber": s.number,
                "name": s.name,
                "episodeCount": s.episode_count,
                "airDate": None,
                "overview": "",
                "posterPath": None,
            }
            if not self.show_episode_counts:
                del row["episodeCount"]
            rows.append(row)
        regular = [s for s in seasons if s.number > 0]
        return {
            "id": show.id,
            "name": show.name,
            "tagline": "",
            "summary": "",
            "status": "Returning Series",
            "bannerImage": None,
            "premiereDate": show.premiere_date,
            "lastAirDate": None,
            "networks": [{"id": 1, "name": "Network", "logo_path": None, "origin_country": "US"}],
            "genres": [],
            "seasons": rows,
            "numSeasons": len(regular),
            "numEpisodes": sum(s.episode_count for s in regular),
            "nextEpisodeToAir": None,
            "episodeToPreview": None,
            "episodeRunTime": [45],
            "nextEpisodeForUser": None,
        }

    @anon("GET", "/api/show/{id}/season/{number}")
    def season(self, req: Request, _: None, body: dict[str, Any]) -> Any:
        show = self._show(self._path_int(req, "id"))
        season = show.seasons.get(self._path_int(req, "number"))
        if season is None:
            raise _fail(404, "Season not found")  # SILENT
        if season.empty:  # §3: an announced season without episodes (season-empty-response)
            return {
                "seasonId": None,
                "seasonNumber": season.number,
                "name": None,
                "overview": "",
                "airDate": None,
                "posterPath": None,
                "episodes": [],
            }
        episodes = [
            {
                "episodeId": season.first_episode_id + n,
                "episodeNumber": n,
                "seasonNumber": season.number,
                "name": f"Episode {n}",
                "overview": "",
                "airDate": season.aired.get(n),
                "stillPath": None,
                "runtime": 45,
            }
            for n in range(1, season.episode_count + 1)
        ]
        return {
            "seasonId": season.id,
            "id": season.id,
            "seasonNumber": season.number,
            "name": season.name,
            "overview": "",
            "airDate": None,
            "posterPath": None,
            "episodes": episodes,
        }

    # ======================================================================================
    # user reads (§5)
    # ======================================================================================
    @profile("GET", "/api/user/{username}/diary")
    def user_diary(self, req: Request, owner: User, body: dict[str, Any]) -> Any:
        try:
            page = max(1, int(req.query.get("page", "1")))  # §5.1: page may be omitted for 1
        except ValueError:
            page = 1  # SILENT: a non-numeric page reads page 1
        if self.deleted_before_page is not None and self.deleted_before_page[0] == page:
            owner.reviews.remove(self.deleted_before_page[1])
            self.deleted_before_page = None
        if self.logged_before_page is not None and self.logged_before_page[0] == page:
            logged = self.logged_before_page[1]
            owner.reviews.extend(logged if isinstance(logged, list) else [logged])
            self.logged_before_page = None
        rows = self._diary_order(owner.reviews)
        size = self.diary_page_size
        page = 1 if self.diary_ignores_page else page
        shown = rows[(page - 1) * size : page * size]
        if page == self.empty_diary_page:
            shown, self.empty_diary_page = [], None
        # SILENT: an empty diary reports totalPages 1 (Django's paginator default).
        return {
            "reviews": [self._review_json(r) for r in shown],
            "totalPages": max(1, math.ceil(len(rows) / size)),
            "totalReviews": len(rows) if self.diary_total_reviews == "count" else None,
        }

    def _diary_order(self, reviews: list[Review]) -> list[Review]:
        newest = sorted(reviews, key=lambda r: (r.date_added, r.id), reverse=True)
        rng = random.Random(self.diary_seed)
        if self.diary_order == "shuffled":
            rng.shuffle(newest)
        elif self.diary_order == "jittered":
            keyed = [(i + rng.uniform(0, self.diary_jitter), r) for i, r in enumerate(newest)]
            newest = [r for _, r in sorted(keyed, key=lambda pair: pair[0])]
        return newest

    def _review_json(self, r: Review) -> dict[str, Any]:
        show = self.shows.get(r.show_id)
        season = show.season_by_id(r.season_id) if show and r.season_id is not None else None
        long = self.flag_spelling == "long"
        return {
            "id": r.id,
            "showId": r.show_id,
            "seasonId": r.season_id,
            "episodeNumber": r.episode_number,
            "episodeName": None if r.episode_number is None else f"Episode {r.episode_number}",
            "seasonName": season.name if season else None,
            "showName": show.name if show else None,
            "showBannerImage": None,
            "showPremiereDate": show.premiere_date if show else None,
            "showSeasons": [
                row
                for row in (show.season_rows() if show else [])
                if r.id not in self.rows_without_their_season or row.get("id") != r.season_id
            ],
            "dateAdded": r.date_added,
            "backdate": r.backdate,
            "rating": r.rating,
            "reviewText": r.review_text,
            "like": r.like,
            "tags": list(r.tags),
            "isLogged" if long else "isLog": r.is_log,
            "isRewatched" if long else "isRewatch": r.is_rewatch,
            "containsSpoilers" if long else "containsSpoiler": r.contains_spoiler,
            "author": r.author,
        }

    _WATCHED_SORTS: dict[str, tuple[Callable[[tuple[Show, str]], Any], bool]] = {
        "date_added_desc": (lambda p: p[1], True),
        "date_added_asc": (lambda p: p[1], False),
        "name_asc": (lambda p: p[0].name.lower(), False),
        "name_desc": (lambda p: p[0].name.lower(), True),
    }

    def _show_page(
        self, req: Request, pairs: list[tuple[Show, str]], size: int
    ) -> tuple[list[tuple[Show, str]], int]:
        """The requested page of (show, date added) pairs in the order `sort_by` asks, and the
        number of pages. §5.2 (Shinobu, live): without sort_by watchlistpage_v2 answers a
        bare-text 500; SILENT: the fake answers so on every show page, and for values it does
        not know."""
        sort_by = req.query.get("sort_by")
        if sort_by not in self._WATCHED_SORTS:
            raise _crash(req.path, f"KeyError: sort_by {sort_by!r}")
        page = self._path_int(req, "page")
        key, reverse = self._WATCHED_SORTS[sort_by]
        ordered = sorted(pairs, key=key, reverse=reverse)
        return ordered[(page - 1) * size : page * size], max(1, math.ceil(len(pairs) / size))

    @profile("GET", "/api/user/{username}/watchedpage_v2/{page}")
    def watched_page(self, req: Request, owner: User, body: dict[str, Any]) -> Any:
        by_show: dict[int, list[tuple[int, str]]] = {}
        for (show_id, season_id), added in owner.marks.items():
            by_show.setdefault(show_id, []).append((season_id, added))
        pairs = [(self.shows[s], max(a for _, a in marks)) for s, marks in by_show.items()]
        shown, pages = self._show_page(req, pairs, self.watched_page_size)
        items = [
            {
                "showId": show.id,
                "seasonIds": sorted(sid for sid, _ in by_show[show.id]),
                "dateAdded": added,
                "showName": show.name,
                "bannerImage": None,
                "numSeasons": len([s for s in show.seasons if s > 0]),
                "numEpisodes": sum(s.episode_count for s in show.seasons.values()),
                "premierDate": show.premiere_date,  # sic (§5.2)
            }
            for show, added in shown
        ]
        return {
            "items": items,
            "totalPages": pages,
            "numberOfShows": len(pairs),
            "numberOfSeasons": len(owner.marks),
        }

    @profile("GET", "/api/user/{username}/currently_watching_page/{page}")
    def currently_watching_page(self, req: Request, owner: User, body: dict[str, Any]) -> Any:
        pairs = [(self.shows[s], added) for s, added in owner.watching.items()]
        # SILENT: no source gives this page's size either
        shown, pages = self._show_page(req, pairs, self.watched_page_size)
        # §5.2 (samples: currently_watching_page-page-1.json): rows and envelope.
        items = [
            {"showId": show.id, "dateAdded": added, "showName": show.name, "bannerImage": None}
            for show, added in shown
        ]
        return {"items": items, "totalItems": len(pairs), "totalPages": pages}

    @profile("GET", "/api/user/{username}/watchlistpage_v2/{page}")
    def watchlist_page(self, req: Request, owner: User, body: dict[str, Any]) -> Any:
        by_show: dict[int, list[tuple[int, str]]] = {}
        for (show_id, season_id), added in owner.watchlist.items():
            by_show.setdefault(show_id, []).append((season_id, added))
        pairs = [(self.shows[s], max(a for _, a in rows)) for s, rows in by_show.items()]
        shown, pages = self._show_page(req, pairs, self.watchlist_page_size)
        # §5.2 [Skyth3r only]: rows like the watched page's, without ``premierDate``.
        items = [
            {
                "showId": show.id,
                "seasonIds": sorted(sid for sid, _ in by_show[show.id]),
                "dateAdded": added,
                "showName": show.name,
                "bannerImage": None,
                "numSeasons": len([s for s in show.seasons if s > 0]),
                "numEpisodes": sum(s.episode_count for s in show.seasons.values()),
            }
            for show, added in shown
        ]
        return {
            "items": items,
            "totalPages": pages,
            "numberOfShows": len(pairs),
            "numberOfSeasons": len(owner.watchlist),
        }

    @authed("GET", "/mobile/page/show/{id}/season_v2_part_3/{number}")
    def season_page(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        show = self._show(self._path_int(req, "id"))
        if req.query.get("season_id"):  # §5.2: one client sends number 0 and relies on this
            try:
                season_id = int(req.query["season_id"])
            except ValueError:
                raise _crash(req.path, "ValueError: season_id") from None
            season = show.season_by_id(season_id)
        else:  # SILENT: without season_id the number in the path picks the season
            season = show.seasons.get(self._path_int(req, "number"))
        if season is None:
            raise _fail(404, "Season not found")  # SILENT
        logs = sorted(
            (ep, added)
            for (s, sid, ep), added in user.ticks.items()
            if (s, sid) == (show.id, season.id)
        )
        # SILENT: only ``episodeLogs`` is known of this answer (samples README); nothing else.
        return {"episodeLogs": [{"episodeNumber": ep, "dateAdded": a} for ep, a in logs]}

    # ======================================================================================
    # writes (§6)
    # ======================================================================================
    @authed("POST", "/api/episode_log/add")
    def episode_log_add(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        show = self._show(_int(body, "show_id", req.path))
        season = self._season_of(show, _int(body, "season_id", req.path))
        numbers = _int_list(body, "episode_numbers", req.path)
        # SILENT: episode numbers are not checked against the season (TMDB renumbering leaves
        # logs on episodes that no longer exist, §3). ``is_rewatch`` is accepted, ignored.
        for n in numbers:
            user.ticks[(show.id, season.id, n)] = iso(self.now())
        ticked = {ep for (s, sid, ep) in user.ticks if (s, sid) == (show.id, season.id)}
        after = max(numbers, default=0)
        unticked = [n for n in range(after + 1, season.episode_count + 1) if n not in ticked]
        complete = all(n in ticked for n in range(1, season.episode_count + 1))
        # §6.1: response keys from anibridge, text from a fixture; logging every episode does
        # NOT mark the season (the answer only hints at it).
        return {
            "message": "Successfully added episode",
            "nextEpisode": unticked[0] if unticked else None,
            "shouldMarkSeasonAsWatched": complete and (show.id, season.id) not in user.marks,
        }

    @authed("POST", "/api/episode_log/remove")
    def episode_log_remove(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        show = self._show(_int(body, "show_id", req.path))
        season = self._season_of(show, _int(body, "season_id", req.path))
        for n in _int_list(body, "episode_numbers", req.path):
            user.ticks.pop((show.id, season.id, n), None)
        return {"message": "Successfully removed episode"}  # SILENT: text

    @authed("POST", "/api/watched_v2")
    def watched_add(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        show = self._show(_int(body, "show_id", req.path))
        seasons = [self._season_of(show, sid) for sid in _int_list(body, "season_ids", req.path)]
        # SILENT: marking a season does not tick its episodes (the systems stay separate).
        for season in seasons:
            user.marks.setdefault((show.id, season.id), iso(self.now()))
            if self.watchlist_clears_watched:  # UNCONFIRMED: see the knob
                user.watchlist.pop((show.id, season.id), None)
        return {"message": "Successfully added to watched"}  # samples (text invented there)

    @authed("POST", "/api/watched/remove_v2")
    def watched_remove(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        show = self._show(_int(body, "show_id", req.path))
        for sid in _int_list(body, "season_ids", req.path):
            user.marks.pop((show.id, sid), None)
        return {"message": "Successfully removed from watched"}  # SILENT: text

    @authed("POST", "/api/watchlist_v2")
    def watchlist_add(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        # §6.1 [confirmed body]: {show_id, season_ids}.
        show = self._show(_int(body, "show_id", req.path))
        seasons = [self._season_of(show, sid) for sid in _int_list(body, "season_ids", req.path)]
        for season in seasons:
            user.watchlist.setdefault((show.id, season.id), iso(self.now()))
            if self.watchlist_clears_watched:  # UNCONFIRMED: see the knob
                user.marks.pop((show.id, season.id), None)
        return {"message": "Successfully added to watchlist"}  # SILENT: text

    @authed("POST", "/api/watchlist/remove_v2")
    def watchlist_remove(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        # §6.1: {show_id, season_ids, async}; SILENT: ``async`` may be left out (the site's
        # bundle defaults it to false); season ids not on the watchlist are ignored.
        show = self._show(_int(body, "show_id", req.path))
        season_ids = _int_list(body, "season_ids", req.path)
        if "async" in body and not isinstance(body["async"], bool):
            raise _crash(req.path, "TypeError: async must be a boolean")
        for season_id in season_ids:
            user.watchlist.pop((show.id, season_id), None)
        return {"message": "Successfully removed from watchlist"}  # SILENT: text

    @authed("POST", "/api/show/reviews/add")
    def reviews_add(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        show = self._show(_int(body, "show_id", req.path))
        # SILENT: a missing season_id / episode_number is taken as null; only a missing
        # ``rating`` is recorded as a 500 (§6.2, single source, tested live).
        season_id = _int({"season_id": None, **body}, "season_id", req.path, nullable=True)
        episode = _int({"episode_number": None, **body}, "episode_number", req.path, nullable=True)
        if "rating" not in body or (body["rating"] is None and not self.accept_null_rating):
            raise _crash(req.path, "KeyError: 'rating'")
        # SILENT: an episode number past the season's episode count is stored as sent (the
        # reference records no answer to one; its §3 only says TMDB renumbering leaves logs
        # on episodes that no longer exist). ``episodes_that_crash``/``episodes_refused``
        # stand for a server that refuses one.
        if episode in self.episodes_that_crash:
            raise _crash(req.path, "Episode.DoesNotExist")
        if episode in self.episodes_refused:
            raise _fail(400, "Invalid episode")  # SILENT
        rating = body["rating"] or 0
        if isinstance(rating, bool) or not isinstance(rating, int) or not 0 <= rating <= 10:
            raise _fail(400, "Invalid rating")  # SILENT: status and text
        if season_id is not None:
            self._season_of(show, season_id)
        elif episode is not None:
            raise _fail(400, "Episode without a season")  # SILENT
        backdate = body.get("backdate")
        if backdate is not None:
            try:
                backdate = iso(parse_iso(str(backdate)))
            except ValueError:
                raise _fail(400, "Invalid backdate") from None  # SILENT
        tags = body.get("tags") or []
        review = self._add_review(
            user,
            show.id,
            season_id,
            episode,
            backdate=backdate,
            date_added=iso(self.now()),
            rating=rating,
            review_text=str(body.get("review_text") or ""),
            tags=[str(t) for t in tags] if isinstance(tags, list) else [],
            # SILENT: flags default to false; ``review_text`` is kept whatever ``is_log``
            # says (§6.2 lists the coupling as conflicting). The diary lists every row,
            # ``is_log`` false included (samples: diary-page-1.json row 4).
            is_log=bool(body.get("is_log", False)),
            is_rewatch=bool(body.get("is_rewatch", False)),
            contains_spoiler=bool(body.get("contains_spoiler", False)),
            like=bool(body.get("like", False)),
            allows_comments=bool(body.get("allows_comments", True)),
        )
        # §6.2: a diary row never ticks the episode, nor does a show-level row mark seasons
        # (one source says it does; SILENT: the fake follows "not reliably").
        if self.reviews_add_answer == "message":
            return {"message": "Successfully added review"}
        long = self.flag_spelling == "long"
        return {  # samples: reviews-add-response.json
            "id": review.id,
            "showId": review.show_id,
            "seasonId": review.season_id,
            "episodeNumber": review.episode_number,
            "dateAdded": review.date_added,
            "backdate": review.backdate,
            "rating": review.rating,
            "reviewText": review.review_text,
            "like": review.like,
            "author": review.author,
            "isLogged" if long else "isLog": review.is_log,
            "isRewatched" if long else "isRewatch": review.is_rewatch,
            "tags": list(review.tags),
        }

    @authed("POST", "/api/show/reviews/delete")
    def reviews_delete(self, req: Request, user: User, body: dict[str, Any]) -> Any:
        # UNCONFIRMED: §6.3, seen only in an AI-written fork. SILENT: answers and statuses.
        review_id = _int(body, "review_id", req.path)
        owned = next((r for r in user.reviews if r.id == review_id), None)
        if owned is None:
            raise _fail(404, "Review not found")
        user.reviews.remove(owned)
        return {"message": "Successfully deleted review"}

    # ======================================================================================
    # helpers
    # ======================================================================================
    def _add_review(
        self,
        user: User,
        show_id: int,
        season_id: int | None,
        episode_number: int | None,
        **fields: Any,
    ) -> Review:
        self._next_review_id += 1
        review = Review(
            self._next_review_id, user.username, show_id, season_id, episode_number, **fields
        )
        user.reviews.append(review)
        return review

    @staticmethod
    def _path_int(req: Request, name: str) -> int:
        try:
            return int(req.params[name])
        except ValueError:
            # SILENT: Django's int converters would not match: the HTML 404 page
            raise _Abort(html_response(DJANGO_404.format(path=req.path), 404)) from None
