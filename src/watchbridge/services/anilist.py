"""AniList: a typed GraphQL client with its own errors. Knows nothing of routes, the CLI or the
database.

Facts are from `shared/reference/anilist.md` (sections cited as §n). In short: one endpoint
(`services.anilist.api_url`), POST only; errors come in an `errors` array even with HTTP 200
(§1); the user is never inferred, so list queries pass the viewer's id; the whole list is one
chunked `MediaListCollection` (§5.2), changes since a time are entries sorted by `updatedAt`
(§5.4); `SaveMediaListEntry` sends only what changes and scores go as `scoreRaw` 0-100 (§6).
Tokens are one-year JWTs without refresh (§2): expiry is read from the token and warned about.
The limit is per IP, so one pacer serves every profile (§3).

Tokens come and go through an injected `TokenStore` (service "anilist", per profile); the
clock is injected too. Every request goes through the shared HTTP policy (`watchbridge.http`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

from watchbridge.config import AniListConfig, Secret
from watchbridge.http import (
    Bucket,
    HttpClient,
    Pacer,
    PerLoop,
    RetryPolicy,
    ServiceError,
    Unavailable,
    changed_answer,
    rows_unread,
    shown_url,
)
from watchbridge.logs import Repeating
from watchbridge.loose import whole
from watchbridge.metrics import Metrics
from watchbridge.model import viewing_year
from watchbridge.services.refusals import note_refused, note_taken
from watchbridge.services.trakt import TokenStore

log = logging.getLogger(__name__)
# Entries a read cannot read whole come back at every read (a delta read every few minutes, a
# delivery's) until watchbridge is updated: a warning at first, then hourly with the count since.
_UNREAD_ENTRIES = Repeating(log)

SERVICE = "anilist"
NAME = "AniList"  # as a user knows it, in messages
PIN_REDIRECT = "https://anilist.co/api/v2/oauth/pin"
CREATE_CLIENT = (
    f"create a client at https://anilist.co/settings/developer with the redirect URL {PIN_REDIRECT}"
)
SERVED_PER_MINUTE = 30  # §3: "currently degraded: 30 per minute" (nominal 90)
BURST = 3  # requests at once; the burst limiter trips at ~10/s or ~30 quick calls (§3)
# Kept back from the served limit per minute, so a burst plus a minute of pacing stays under it.
MARGIN = BURST + 1
DISABLED_HOLD = 900.0  # §3: API disabled: pause the link, look again in 15 minutes
RATE_LIMIT_WAIT = 60.0  # §3: "a 1-minute timeout" when a 429 says nothing else
EXPIRY_WARNING_DAYS = 30  # §2: re-prompt about 30 days before `exp`
EXPIRY_ALERT_DAYS = 14  # one Apprise alert this long before `exp` (and one once it passed)
TOKEN_LIFETIME = 365 * 86400.0  # §2: tokens last a year
VIEWER_TTL = 3600.0  # §5.1: re-read the score format from time to time
USERNAME_CACHE = "anilist-username"  # user id -> name, as the last `Viewer` read said
USERNAME_TTL = 400 * 86400.0  # longer than a token lasts: a sign-in reads it again
PER_CHUNK = 500  # §5.2: perChunk max 500
PER_PAGE = 50  # §1: perPage max 50
OVERLAP = 5.0  # seconds of overlap when polling by updatedAt (§5.4)

STATUSES: tuple[str, ...] = ("CURRENT", "PLANNING", "COMPLETED", "DROPPED", "PAUSED", "REPEATING")
NOT_RELEASED = "NOT_YET_RELEASED"  # `media.status` of a title that has not aired yet
STOPPED_STATUSES = ("PAUSED", "DROPPED")  # an entry the user set aside on AniList
FINISHED_STATUSES = ("COMPLETED", "REPEATING")  # the first viewing was finished

VIEWER_QUERY = """query Viewer {
  Viewer {
    id name
    mediaListOptions { scoreFormat animeList { customLists advancedScoringEnabled } }
  }
}"""

_ENTRY_FIELDS = """id mediaId status progress repeat score(format: POINT_100) private
        hiddenFromStatusLists notes startedAt { year month day } completedAt { year month day }
        updatedAt createdAt media { id idMal format episodes status title { romaji english } }"""

COLLECTION_QUERY = f"""query ListChunk($userId: Int!, $chunk: Int, $perChunk: Int) {{
  MediaListCollection(userId: $userId, type: ANIME, chunk: $chunk, perChunk: $perChunk,
                      forceSingleCompletedList: true) {{
    hasNextChunk
    lists {{ name status isCustomList entries {{ {_ENTRY_FIELDS} }} }}
  }}
}}"""

UPDATED_SINCE_QUERY = f"""query UpdatedSince($userId: Int!, $page: Int) {{
  Page(page: $page, perPage: {PER_PAGE}) {{
    pageInfo {{ hasNextPage }}
    mediaList(userId: $userId, type: ANIME, sort: UPDATED_TIME_DESC) {{ {_ENTRY_FIELDS} }}
  }}
}}"""

SAVE_MUTATION = """mutation Save($id: Int, $mediaId: Int, $status: MediaListStatus, $progress: Int,
              $repeat: Int, $scoreRaw: Int, $startedAt: FuzzyDateInput,
              $completedAt: FuzzyDateInput) {
  SaveMediaListEntry(id: $id, mediaId: $mediaId, status: $status, progress: $progress,
                     repeat: $repeat, scoreRaw: $scoreRaw, startedAt: $startedAt,
                     completedAt: $completedAt) {
    id mediaId status progress repeat score(format: POINT_100) private hiddenFromStatusLists
    notes startedAt { year month day } completedAt { year month day } updatedAt createdAt
    media { id idMal format episodes status title { romaji english } }
  }
}"""

# Episode counts of titles not on the list (before a play creates an entry): 50 per request.
MEDIA_QUERY = f"""query Media($ids: [Int]) {{
  Page(page: 1, perPage: {PER_PAGE}) {{
    media(id_in: $ids, type: ANIME) {{ id idMal format episodes status }}
  }}
}}"""

DELETE_MUTATION = """mutation Delete($id: Int!) {
  DeleteMediaListEntry(id: $id) { deleted }
}"""


# --------------------------------------------------------------------------- errors


class AniListError(ServiceError):
    """AniList refused or failed a request (an `errors` array, with any HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(SERVICE, message)
        self.status = status


class ListUnreadable(AniListError):
    """The list (or a page of its latest changes) came in a shape watchbridge cannot read:
    `what` names what changed (`the anime list has no `lists` of groups`)."""

    def __init__(self, what: str) -> None:
        super().__init__(changed_answer(NAME, what))
        self.what = what


class AniListAuthError(AniListError):
    """No usable token for a profile (missing, expired, revoked): a human must sign in again."""


class AniListValidationError(AniListError):
    """AniList rejected the values of a write (`message: "validation"`, §1)."""

    def __init__(self, message: str, fields: Mapping[str, list[str]]) -> None:
        super().__init__(message, 400)
        self.fields = dict(fields)


class AniListNotFound(AniListError):
    """The media or list entry does not exist (404 inside the answer)."""


class AniListDisabled(AniListError, Unavailable):
    """403 "API temporarily disabled" (§3): the whole service is paused, not the sign-in."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 403)  # on through Unavailable to ServiceError
        self.retry_after = DISABLED_HOLD


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class FuzzyDate:
    """AniList's date with optional parts (§5.2); all None means "not set"."""

    year: int | None = None
    month: int | None = None
    day: int | None = None

    def __bool__(self) -> bool:
        return self.year is not None

    def timestamp(self) -> float | None:
        """Noon of the date where watchbridge runs (its `TZ`, as `of`: in UTC+13 noon UTC is
        already the next day), missing month/day: the first; None when not set, or no one's
        viewing (`watched`: a list app's year 1 or 9999)."""
        if self.year is None or not self.watched():
            return None
        try:
            return datetime(self.year, self.month or 1, self.day or 1, 12).timestamp()
        except (ValueError, OverflowError):
            return None

    def watched(self) -> bool:
        """Whether the date is set and could be a viewing's (model.viewing_year: the years
        1900-2199), as a webhook's times must be (AniList takes any FuzzyDateInput a list app
        writes)."""
        return self.year is not None and viewing_year(self.year)

    def to_input(self) -> dict[str, int | None]:
        return {"year": self.year, "month": self.month, "day": self.day}

    @classmethod
    def of(cls, timestamp: float) -> FuzzyDate:
        """The calendar day of `timestamp` where watchbridge runs (its `TZ`): the person's
        own day, as AniList shows it (a film finished at 8 pm in Los Angeles is not
        finished the next day)."""
        day = datetime.fromtimestamp(timestamp)
        return cls(day.year, day.month, day.day)

    @classmethod
    def parse(cls, raw: Any) -> FuzzyDate:
        if not isinstance(raw, Mapping):
            return cls()
        return cls(whole(raw.get("year")), whole(raw.get("month")), whole(raw.get("day")))


@dataclass(frozen=True)
class Viewer:
    id: int
    name: str
    score_format: str
    custom_lists: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListEntry:
    """One anime list entry. `score` is raw 0-100 (0 = unscored), whatever the user's format."""

    id: int
    media_id: int
    status: str
    progress: int = 0
    repeat: int = 0
    score: int = 0
    updated_at: float = 0.0
    started_at: FuzzyDate = field(default_factory=FuzzyDate)
    completed_at: FuzzyDate = field(default_factory=FuzzyDate)
    episodes: int | None = None  # None while airing with no final count (§9)
    format: str | None = None
    mal_id: int | None = None
    title: str = ""
    hidden: bool = False
    private: bool = False
    release: str | None = None  # the title's `media.status` (NOT_YET_RELEASED: not aired yet)


@dataclass(frozen=True)
class Title:
    """What AniList says of a title whatever any list holds: its episode count (None while
    unknown, e.g. still airing) and its release status (`media.status`)."""

    episodes: int | None = None
    release: str | None = None


@dataclass(frozen=True)
class EntryWrite:
    """What to change on one entry: fields left None are not sent, so AniList leaves them."""

    media_id: int
    status: str | None = None
    progress: int | None = None
    score_raw: int | None = None  # 0-100 whatever the user's format (§6); 0 clears
    repeat: int | None = None
    started_at: FuzzyDate | None = None
    completed_at: FuzzyDate | None = None

    def variables(self, entry_id: int | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {"mediaId": self.media_id}
        if entry_id is not None:
            values = {"id": entry_id}
        for name, value in (
            ("status", self.status),
            ("progress", self.progress),
            ("scoreRaw", self.score_raw),
            ("repeat", self.repeat),
        ):
            if value is not None:
                values[name] = value
        if self.started_at is not None:
            values["startedAt"] = self.started_at.to_input()
        if self.completed_at is not None:
            values["completedAt"] = self.completed_at.to_input()
        return values

    def changes(self, current: ListEntry | None) -> EntryWrite | None:
        """Only what differs from `current` (None: nothing to send)."""
        if current is None:
            return self
        same = replace(
            self,
            status=None if self.status == current.status else self.status,
            progress=None if self.progress == current.progress else self.progress,
            score_raw=None if self.score_raw == current.score else self.score_raw,
            repeat=None if self.repeat == current.repeat else self.repeat,
            started_at=None if self.started_at == current.started_at else self.started_at,
            completed_at=None if self.completed_at == current.completed_at else self.completed_at,
        )
        return None if same == EntryWrite(self.media_id) else same


@dataclass(frozen=True)
class AniListToken:
    """A profile's stored token. No refresh exists (§2): when it expires, sign in again."""

    access_token: str
    obtained_at: float
    expires_at: float | None = None  # from the JWT's `exp`, else the token answer's expires_in
    user_id: int | None = None  # the JWT's `sub`

    def expires_in_days(self, now: float) -> float | None:
        return None if self.expires_at is None else (self.expires_at - now) / 86400

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "obtained_at": self.obtained_at,
            "expires_at": self.expires_at,
            "user_id": self.user_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AniListToken | None:
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            return None
        expires = data.get("expires_at")
        return cls(
            token,
            float(data.get("obtained_at") or 0.0),
            float(expires) if isinstance(expires, int | float) else None,
            whole(data.get("user_id")),
        )

    @classmethod
    def from_access_token(
        cls, token: str, now: float, expires_in: float | None = None
    ) -> AniListToken:
        claims = jwt_claims(token)
        expires = _number(claims.get("exp"))
        if expires is None and expires_in:
            expires = now + expires_in
        return cls(token, now, expires, whole(claims.get("sub")))


# --------------------------------------------------------------------------- pure helpers


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT; {} when the token is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def expiry_warning(token: AniListToken, now: float, profile: str) -> str | None:
    """A message when the token expires within EXPIRY_WARNING_DAYS (or has), else None."""
    days = token.expires_in_days(now)
    if days is None or days > EXPIRY_WARNING_DAYS:
        return None
    when = datetime.fromtimestamp(token.expires_at or now, UTC).strftime("%Y-%m-%d")
    if days <= 0:
        return (
            f"the AniList token of profile {profile} expired on {when}: "
            f"run `watchbridge auth anilist --profile {profile}`"
        )
    return (
        f"the AniList token of profile {profile} expires on {when} (in {math.ceil(days)} days; "
        f"AniList tokens cannot be refreshed): run `watchbridge auth anilist --profile {profile}`"
    )


EXPIRY_STAGES = ("expiring", "expired")


def expiry_condition(profile: str, stage: str) -> str:
    """The alert condition the hourly check raises while a profile's sign-in (whichever
    token) is at `stage` `expiring`. That of `expired` is the key release 0.1.0 raised
    it under: it is told as the deliveries' pause now (`causes.paused_alert`)."""
    return f"anilist:{profile}:{stage}"


@dataclass(frozen=True)
class ExpiryAlert:
    """One alert about a token's expiry: `once` names the token and the stage, so each is
    told once; the caller picks its condition and title by `stage`."""

    once: str
    body: str
    stage: str  # one of EXPIRY_STAGES


def expiry_alert(
    token: AniListToken, now: float, profile: str, days: float = EXPIRY_ALERT_DAYS
) -> ExpiryAlert | None:
    """The alert due for `token` at `now`: within `days` of expiry, or expired; else None."""
    left = token.expires_in_days(now)
    if left is None or left > days or token.expires_at is None:
        return None
    stage = "expired" if left <= 0 else "expiring"
    return ExpiryAlert(
        f"anilist:{profile}:{int(token.expires_at)}:{stage}",
        expiry_warning(token, now, profile) or "",
        stage,
    )


def expiring_title(profile: str) -> str:
    """The title of the alert that `profile`'s sign-in expires within EXPIRY_ALERT_DAYS."""
    return f"watchbridge: the AniList sign-in of {profile} expires soon"


def username_of(cache: TokenStore, user_id: str, now: float) -> str | None:
    """The name of AniList user `user_id`, as the last read of its `Viewer` found it; None
    when not known."""
    hit, name = cache.cache_get(USERNAME_CACHE, user_id, now)
    return str(name) if hit and name else None


def pick_token(
    stored: Mapping[str, Any] | None, configured: str | None, now: float
) -> tuple[AniListToken | None, bool]:
    """The token to use: the stored one, or the config's when it lasts longer (a new one was
    pasted into the config). The flag says the config's token should be stored."""
    token = AniListToken.from_dict(stored) if stored else None
    if configured and (token is None or token.access_token != configured):
        candidate = AniListToken.from_access_token(configured, now)
        if token is None or (candidate.expires_at or 0) > (token.expires_at or 0):
            return candidate, True
    return token, False


def authorize_url(
    auth_url: str, client_id: str, response_type: Literal["code", "token"], redirect_uri: str
) -> str:
    """The page the user opens to approve watchbridge (§2)."""
    params = {"client_id": client_id, "response_type": response_type}
    if response_type == "code":
        params["redirect_uri"] = redirect_uri
    return f"{auth_url.rstrip('/')}/authorize?{urlencode(params)}"


def sign_in_page(config: AniListConfig, response_type: Literal["code", "token"]) -> str:
    """The page a user opens to sign in, or why the config cannot give one."""
    if not config.client_id:
        raise AniListAuthError(
            f"services.anilist.client_id is not set: {CREATE_CLIENT} and put its id there"
        )
    return authorize_url(config.auth_url, config.client_id, response_type, PIN_REDIRECT)


def pasted_token(text: str) -> str:
    """The token from what a user pasted: the token, or the whole `#access_token=...` URL."""
    text = text.strip()
    if "access_token=" in text:
        text = text.split("access_token=", 1)[1].split("&", 1)[0]
    return text


def parse_viewer(data: Any) -> Viewer:
    viewer = (data or {}).get("Viewer") if isinstance(data, Mapping) else None
    if not isinstance(viewer, Mapping) or whole(viewer.get("id")) is None:
        raise AniListError("the Viewer answer has no user id")
    options = viewer.get("mediaListOptions") or {}
    lists = (options.get("animeList") or {}).get("customLists") or []
    return Viewer(
        id=int(viewer["id"]),
        name=str(viewer.get("name") or ""),
        score_format=str(options.get("scoreFormat") or "POINT_100"),
        custom_lists=tuple(str(name) for name in lists if isinstance(name, str)),
    )


def parse_entry(raw: Any) -> ListEntry | None:
    """One MediaList object; None when it lacks the ids every use needs."""
    if not isinstance(raw, Mapping):
        return None
    media = _map(raw.get("media"))
    entry_id = whole(raw.get("id"))
    media_id = whole(raw.get("mediaId")) or whole(media.get("id"))
    status = raw.get("status")
    if entry_id is None or media_id is None or status not in STATUSES:
        return None
    title = _map(media.get("title"))
    score = _number(raw.get("score")) or 0.0
    return ListEntry(
        id=entry_id,
        media_id=media_id,
        status=str(status),
        progress=whole(raw.get("progress")) or 0,
        repeat=whole(raw.get("repeat")) or 0,
        score=max(0, min(100, int(score + 0.5))),  # a Float even in POINT_100 (§5.2)
        updated_at=_number(raw.get("updatedAt")) or 0.0,
        started_at=FuzzyDate.parse(raw.get("startedAt")),
        completed_at=FuzzyDate.parse(raw.get("completedAt")),
        episodes=whole(media.get("episodes")),
        format=media.get("format") if isinstance(media.get("format"), str) else None,
        mal_id=whole(media.get("idMal")),
        title=str(title.get("english") or title.get("romaji") or ""),
        hidden=bool(raw.get("hiddenFromStatusLists")),
        private=bool(raw.get("private")),
        release=media.get("status") if isinstance(media.get("status"), str) else None,
    )


SAVE_AGAIN = "the write is sent again later, as it sets the same values again"


def entry_problem(raw: Any) -> str | None:
    """What watchbridge cannot read in one MediaList object ("no `id`"), or None when every
    field a sync relies on is there: an entry read without its progress, repeats or score
    would be read as one with none, and its plays and rating removed from the other side."""
    if not isinstance(raw, Mapping):
        return "no fields"
    if whole(raw.get("id")) is None:
        return "no `id`"
    if whole(raw.get("mediaId")) is None and whole(_map(raw.get("media")).get("id")) is None:
        return "no `mediaId` nor `media.id`"
    if raw.get("status") not in STATUSES:
        return "a `status` watchbridge does not know"
    for name in ("progress", "repeat"):
        if whole(raw.get(name)) is None:
            return f"no `{name}` as a whole number"
    if _number(raw.get("score")) is None:
        return "no `score` as a number"
    return None


def entry_ids(raw: Any) -> tuple[int | None, int | None]:
    """The list entry id and the media id of one MediaList object, each None when unreadable."""
    if not isinstance(raw, Mapping):
        return None, None
    media_id = whole(raw.get("mediaId")) or whole(_map(raw.get("media")).get("id"))
    return whole(raw.get("id")), media_id


@dataclass(frozen=True)
class UnreadEntry:
    """A list entry watchbridge could not read whole (`problem`, as `entry_problem` says it),
    by the ids it still has: one of them at least (see `_entries_of`)."""

    entry_id: int | None
    media_id: int | None
    problem: str


@dataclass(frozen=True)
class ListRead:
    """What one read of the list (whole, or its latest changes) found: the entries read, and
    those it could not read whole. These are still on the list: whoever reads keeps what it
    had of them, never takes them as gone."""

    entries: list[ListEntry]
    unread: tuple[UnreadEntry, ...] = ()

    def said(self, what: str) -> str:
        """What could not be read, for a message: `1 of 40 entries of WHAT have no `id``."""
        rows: list[ListEntry | UnreadEntry] = [*self.entries, *self.unread]
        return rows_unread(rows, _problem_of, f"entries {what}")


def _problem_of(row: ListEntry | UnreadEntry) -> str | None:
    return row.problem if isinstance(row, UnreadEntry) else None


UNREAD_KEPT = (
    "what was read of them before is kept (their plays, their score), and their changes wait "
    "until they read again"
)


def _entries_of(raws: Any, what: str) -> tuple[list[ListEntry], list[UnreadEntry]]:
    """The entries of one answer's list `raws` that read whole, and those that do not.
    AniListError naming what changed when the list is not one, or an entry has neither id."""
    if not isinstance(raws, list):
        raise ListUnreadable(f"{what} has no list of entries")
    entries: list[ListEntry] = []
    unread: list[UnreadEntry] = []
    keyless = 0
    for raw in raws:
        problem = entry_problem(raw)
        entry = parse_entry(raw) if problem is None else None
        if entry is not None:
            entries.append(entry)
            continue
        entry_id, media_id = entry_ids(raw)
        if entry_id is None and media_id is None:
            keyless += 1
        else:
            unread.append(UnreadEntry(entry_id, media_id, problem or "no fields"))
    if keyless:
        # Without its entry id or its title's id an entry matches nothing read before: what
        # it held cannot be kept, and left out it would read as deleted, its plays removed
        # from the other side. Only failing the read keeps them.
        said = f"{keyless} of {len(raws)} entries have no `id` nor `mediaId`"
        raise ListUnreadable(f"{what}: {said}")
    return entries, unread


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ListUnreadable(f"{what} is not true or false")
    return value


def parse_collection(data: Any) -> tuple[ListRead, bool]:
    """One MediaListCollection chunk: entries of every group (custom lists too, §5.2), and
    whether another chunk follows. Duplicates across groups are left to `dedupe`. Entries
    that do not read whole are in the read's `unread`; a chunk watchbridge cannot read at all
    raises AniListError: never read as fewer entries."""
    collection = (data or {}).get("MediaListCollection") if isinstance(data, Mapping) else None
    if not isinstance(collection, Mapping):
        raise AniListError("the MediaListCollection answer is missing")
    groups = collection.get("lists")
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
        raise ListUnreadable("the anime list has no `lists` of groups")
    entries: list[ListEntry] = []
    unread: list[UnreadEntry] = []
    for group in groups:
        read, not_read = _entries_of(group.get("entries"), "a group of the anime list")
        entries += read
        unread += not_read
    more = _flag(collection.get("hasNextChunk"), "the anime list's `hasNextChunk`")
    return ListRead(entries, tuple(unread)), more


def parse_page(data: Any) -> tuple[ListRead, bool]:
    page = (data or {}).get("Page") if isinstance(data, Mapping) else None
    if not isinstance(page, Mapping):
        raise AniListError("the Page answer is missing")
    entries, unread = _entries_of(page.get("mediaList"), "a page of the anime list's changes")
    more = _map(page.get("pageInfo")).get("hasNextPage")
    return ListRead(entries, tuple(unread)), _flag(more, "the anime list page's `hasNextPage`")


def deduped(entries: Iterable[ListEntry], unread: Iterable[UnreadEntry]) -> ListRead:
    """One entry per list-entry id; an entry that could not be read in one group but was in
    another counts as read."""
    read = dedupe(entries)
    ids = {e.id for e in read}
    media = {e.media_id for e in read}
    left: dict[tuple[int | None, int | None], UnreadEntry] = {}
    for entry in unread:
        if entry.entry_id not in ids and entry.media_id not in media:
            left.setdefault((entry.entry_id, entry.media_id), entry)
    return ListRead(read, tuple(left.values()))


def dedupe(entries: Iterable[ListEntry]) -> list[ListEntry]:
    """One entry per list-entry id, in first-seen order."""
    seen: dict[int, ListEntry] = {}
    for entry in entries:
        seen.setdefault(entry.id, entry)
    return list(seen.values())


def entry_to_dict(entry: ListEntry) -> dict[str, Any]:
    """A list entry as plain JSON (for mirrors in the store)."""
    return asdict(entry)


def entry_from_dict(data: Mapping[str, Any]) -> ListEntry | None:
    try:
        values = dict(data)
        values["started_at"] = FuzzyDate(**(values.get("started_at") or {}))
        values["completed_at"] = FuzzyDate(**(values.get("completed_at") or {}))
        return ListEntry(**values)
    except (TypeError, ValueError):
        return None


def guard_progress(write: EntryWrite, current: ListEntry | None, allow_lower: bool) -> EntryWrite:
    """Never lower progress by accident: a lower value is dropped from the write unless
    `allow_lower` (a removal propagated on purpose) or a new rewatch pass starts."""
    if (
        allow_lower
        or current is None
        or write.progress is None
        or write.progress >= current.progress
    ):
        return write
    if write.status == "REPEATING" and current.status in ("COMPLETED", "REPEATING"):
        return write  # a rewatch counts its own pass from episode 1 (§7)
    return replace(write, progress=None)


def classify_errors(status: int, body: Any) -> AniListError | None:
    """The error an answer carries (`errors[]`, any HTTP status, §1), or None."""
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not errors:
        if status >= 400:
            return AniListError(f"answered HTTP {status}", status)
        return None
    first = errors[0] if isinstance(errors[0], Mapping) else {}
    message = str(first.get("message") or "unknown error")
    code = whole(first.get("status")) or status
    lowered = message.lower()
    if status == 403 or code == 403:
        if "disabled" in lowered:
            return AniListDisabled(f"the AniList API is disabled for now ({message})")
        return AniListError(f"refused (403): {message}", 403)
    if code == 401 or "invalid token" in lowered or lowered.startswith("unauthorized"):
        return AniListAuthError(f"the token is not accepted ({message})", code)
    if lowered == "validation":
        details = _map(first.get("validation"))
        fields = {str(k): [str(m) for m in v] for k, v in details.items() if isinstance(v, list)}
        text = "; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()) or message
        return AniListValidationError(f"AniList rejected the values ({text})", fields)
    if code == 404:
        return AniListNotFound(f"not found ({message})", 404)
    if code == 429:
        return AniListError(f"rate limited ({message})", 429)
    return AniListError(f"GraphQL error: {message}", code)


def anilists(body: Any) -> bool:
    """Whether `body` (an answer's JSON; None for none) is of AniList's API: an object with
    `data` or `errors`, its errors' too (§1, samples/anilist/error-*.json)."""
    return isinstance(body, Mapping) and ("data" in body or "errors" in body)


def from_anilist(response: httpx.Response) -> bool:
    """Whether AniList's API gave `response`: a page of Cloudflare, a proxy, a gateway, a
    captive portal or a DNS filter in its place (HTML, other JSON) is none of its answers."""
    try:
        return anilists(response.json())
    except ValueError:
        return False


# --------------------------------------------------------------------------- pacing


class AniListPacer(Pacer):
    """One pacer per IP: spreads requests evenly under the served limit, learns the limit from
    `X-RateLimit-Limit`, and counts the time spent waiting (reported apart from the work)."""

    def __init__(self, per_minute: float, burst: int = BURST) -> None:
        super().__init__({"api": Bucket(burst, per_minute / 60)})
        self.ceiling = per_minute
        self.waited = 0.0

    async def acquire(self, bucket: str | None, give_up_after: float = math.inf) -> None:
        started = time.monotonic()
        try:
            await super().acquire(bucket, give_up_after)
        finally:
            self.waited += time.monotonic() - started

    def observe(self, response: httpx.Response, now: float) -> None:
        """Adapt to the rate-limit headers (tolerating their absence, §3)."""
        headers = response.headers
        limit = whole(headers.get("x-ratelimit-limit"))
        remaining = whole(headers.get("x-ratelimit-remaining"))
        if limit is not None and limit > 0:
            per_minute = max(1.0, min(self.ceiling, limit - MARGIN))
            self.buckets["api"].per_second = per_minute / 60
        if response.status_code == 429 and "retry-after" not in headers:
            # The shared policy honours Retry-After only; AniList may give just the reset time
            # (unix seconds), and without either the timeout is a minute (§3).
            reset = _number(headers.get("x-ratelimit-reset"))
            wait = max(1.0, reset - now) if reset is not None else RATE_LIMIT_WAIT
            headers["retry-after"] = str(math.ceil(wait))
        elif remaining is not None and remaining <= 0 and response.status_code != 429:
            self.block(RATE_LIMIT_WAIT)  # the next request would start a 1-minute timeout


_PACERS: PerLoop[AniListPacer] = PerLoop()


def shared_pacer(api_url: str, per_minute: float) -> AniListPacer:
    """The one pacer of `api_url` in the running event loop: the limit is per IP, and the
    delivery target and each link run's reader have clients of their own."""
    return _PACERS.get((api_url.rstrip("/"), per_minute), lambda: AniListPacer(per_minute))


# --------------------------------------------------------------------------- client


class AniListClient:
    """One AniList API client (one pacer for the IP), many profiles (each with its token)."""

    def __init__(
        self,
        config: AniListConfig,
        tokens: TokenStore,
        *,
        seeded_tokens: Mapping[str, Secret] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        per_minute: float | None = None,
        max_inline_wait: float = RATE_LIMIT_WAIT + 5,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.seeded = dict(seeded_tokens or {})
        self.clock = clock
        self.http = HttpClient(
            SERVICE,
            config.api_url,
            metrics=metrics,
            clock=clock,
            retry=RetryPolicy(attempts=3, backoff=1.0, max_inline_wait=max_inline_wait),
            headers={"content-type": "application/json", "accept": "application/json"},
            own_answer=from_anilist,
            in_its_place=self._not_anilists,
        )
        # The served limit unless told, read now: a test lifts it for every client it makes.
        self.per_minute = SERVED_PER_MINUTE - MARGIN if per_minute is None else per_minute
        self._viewers: dict[str, tuple[float, Viewer]] = {}

    @property
    def pacer(self) -> AniListPacer:
        """The pacer every client of this API shares in the running event loop."""
        return shared_pacer(self.config.api_url, self.per_minute)

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    @property
    def waited(self) -> float:
        """Seconds spent waiting for the rate limit (pacing and 429 timeouts) so far."""
        return self.pacer.waited

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ tokens

    def token(self, profile: str) -> AniListToken:
        """The profile's token: the stored one or the config's, whichever lasts longer."""
        data = self.tokens.get_token(SERVICE, profile)
        seeded = self.seeded.get(profile)
        configured = seeded.reveal() if seeded is not None else None
        stored, adopt = pick_token(data, configured, self.clock())
        if stored is not None and adopt:
            self._save(profile, stored)
        if stored is None:
            raise AniListAuthError(
                # Not "token: run": the log's redaction takes a word after "token:" for one.
                f"profile {profile} is not signed in to AniList: run "
                f"`watchbridge auth anilist --profile {profile}` "
                f"or set profiles.{profile}.accounts.anilist.token"
            )
        if stored.expired(self.clock()):
            raise AniListAuthError(expiry_warning(stored, self.clock(), profile) or "expired")
        return stored

    async def _loaded(self, profile: str) -> AniListToken:
        """`token` on a thread: it waits for the store's lock, which a link run's apply holds
        for most of a second at a big account; on the event loop every webhook would wait."""
        return await asyncio.to_thread(self.token, profile)

    def expires_in_days(self, profile: str) -> float | None:
        """Days until the profile's token expires (None: unknown or no token)."""
        try:
            return self.token(profile).expires_in_days(self.clock())
        except AniListAuthError:
            return None

    def expiry_warning(self, profile: str) -> str | None:
        """The message to show or alert when the token expires within 30 days, else None."""
        try:
            token = self.token(profile)
        except AniListAuthError as exc:
            return exc.message if "expired" in exc.message else None
        return expiry_warning(token, self.clock(), profile)

    def _save(self, profile: str, token: AniListToken) -> AniListToken:
        self.tokens.put_token(SERVICE, profile, token.to_dict(), self.clock())
        return token

    def authorize_url(self, response_type: Literal["code", "token"] = "token") -> str:
        return sign_in_page(self.config, response_type)

    async def exchange_code(self, profile: str, code: str) -> Viewer:
        """Authorization-code grant (§2): trade the code from the pin page for a token."""
        if not self.config.client_id or self.config.client_secret is None:
            raise AniListAuthError(
                "the code flow needs services.anilist.client_id and client_secret"
            )
        response = await self.http.request(
            "POST",
            "/token",
            base_url=self.config.auth_url,
            json={
                "grant_type": "authorization_code",
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.reveal(),
                "redirect_uri": PIN_REDIRECT,
                "code": code.strip(),
            },
        )
        try:
            data = response.json()
        except ValueError:
            data = {}
        token = data.get("access_token") if isinstance(data, Mapping) else None
        if response.status_code >= 400 or not isinstance(token, str) or not token:
            reason = data.get("error") or data.get("message") if isinstance(data, Mapping) else ""
            raise AniListAuthError(
                f"AniList did not accept the code (HTTP {response.status_code}"
                + (f", {reason}" if reason else "")
                + "): open the link again and copy a fresh code"
            )
        expires_in = _number(data.get("expires_in"))
        return await self.use_token(profile, token, expires_in)

    async def use_token(
        self, profile: str, access_token: str, expires_in: float | None = None
    ) -> Viewer:
        """Adopt a token (implicit grant or pasted): checked with `Viewer`, then stored."""
        pasted = pasted_token(access_token)
        if not pasted or not all(c.isascii() and c.isprintable() and c != " " for c in pasted):
            raise AniListAuthError(
                "the pasted token is empty or holds a space or an invisible character: copy "
                "it again, whole, from the page AniList showed"
            )
        token = AniListToken.from_access_token(pasted, self.clock(), expires_in or TOKEN_LIFETIME)
        viewer = parse_viewer(await self._send(token.access_token, VIEWER_QUERY, {}))
        self._save(profile, replace(token, user_id=viewer.id))
        self._viewers[profile] = (self.clock(), viewer)
        self._remember_name(viewer)
        return viewer

    # ------------------------------------------------------------------ transport

    async def graphql(self, profile: str, query: str, variables: Mapping[str, Any]) -> Any:
        """One GraphQL request with the profile's token; returns `data` or raises."""
        token = (await self._loaded(profile)).access_token
        try:
            data = await self._send(token, query, variables)
        except AniListAuthError as exc:
            refused = AniListAuthError(
                f"AniList no longer accepts the token of profile {profile} "
                f"({exc.said}): run "
                f"`watchbridge auth anilist --profile {profile}`",
                exc.status,
            )
            # For the sign-in health: the token still looks good for months by its expiry.
            await asyncio.to_thread(
                note_refused, self.tokens, SERVICE, profile, token, refused.message, self.clock()
            )
            raise refused from None
        await asyncio.to_thread(note_taken, self.tokens, SERVICE, profile, token, self.clock())
        return data

    async def _send(self, token: str, query: str, variables: Mapping[str, Any]) -> Any:
        response = await self.http.request(
            "POST",
            "/",
            json={"query": query, "variables": dict(variables)},
            headers={"authorization": f"Bearer {token}"},
            pacer=self.pacer,
            bucket="api",
            inspect=self._observe,
            # Reads are safe to resend, and every write sets absolute values (progress 5,
            # status COMPLETED): sending one twice changes nothing.
            idempotent=True,
            # Every request is a POST: only a mutation's failure can be the fault of a row.
            write=query.lstrip().startswith("mutation"),
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not anilists(body):  # a 2xx: the HTTP policy held an error status already
            raise self._not_anilist(response)
        error = classify_errors(response.status_code, body)
        if error is not None:
            raise error
        data = body.get("data") if isinstance(body, Mapping) else None
        if data is None:
            raise AniListError("answered without data", response.status_code)
        return data

    def _not_anilist(self, response: httpx.Response) -> Unavailable:
        """The error for an answer that is not AniList's JSON (`from_anilist`): something
        else's (a DNS filter's block page, a captive portal, a proxy) or a broken one. No row
        is to blame: its deliveries wait as in an outage, spending no tries. A write is a set
        of absolute values, safe to send again."""
        return Unavailable(SERVICE, self._not_anilists(response), status=response.status_code)

    def _not_anilists(self, response: httpx.Response) -> str:
        """What an answer that is not AniList's JSON is, and what may have given it."""
        kind = response.headers.get("content-type", "").split(";")[0].strip()
        if "html" in kind:
            what = "a web page (text/html), not AniList's JSON"
        else:
            try:
                response.json()
            except ValueError:
                what = f"no JSON ({kind or 'no type'}), not AniList's JSON"
            else:
                what = "JSON that is not AniList's (neither data nor errors)"
        return (
            f"answered HTTP {response.status_code} with {what}: something else may answer for "
            f"{shown_url(self.config.api_url)} (a DNS filter's block page, a captive portal, a "
            "proxy), or services.anilist.api_url names another address"
        )

    def _observe(self, response: httpx.Response) -> None:
        self.pacer.observe(response, self.clock())

    # ------------------------------------------------------------------ reads

    async def viewer(self, profile: str, refresh: bool = False) -> Viewer:
        """Who the token belongs to and their score format (cached for VIEWER_TTL)."""
        cached = self._viewers.get(profile)
        if cached and not refresh and self.clock() - cached[0] < VIEWER_TTL:
            return cached[1]
        viewer = parse_viewer(await self.graphql(profile, VIEWER_QUERY, {}))
        self._viewers[profile] = (self.clock(), viewer)
        await asyncio.to_thread(self._remember_name, viewer)
        return viewer

    def _remember_name(self, viewer: Viewer) -> None:
        """Keep the user's name for `watchbridge status` and the alerts, which know the
        account by its id: the name is what `auth anilist` and AniList's pages show."""
        user, now = str(viewer.id), self.clock()
        if viewer.name and username_of(self.tokens, user, now) != viewer.name:
            self.tokens.cache_put(USERNAME_CACHE, user, viewer.name, now, USERNAME_TTL)

    async def user_id(self, profile: str) -> int:
        """The profile's AniList user id: the token's `sub` claim, else asked (`Viewer`)."""
        return (await self._loaded(profile)).user_id or (await self.viewer(profile)).id

    async def read_list(self, profile: str) -> ListRead:
        """The whole anime list: one request per 500 entries (§5.2), deduplicated, with the
        entries it could not read whole (one warning for the read, hourly at most)."""
        user_id = await self.user_id(profile)
        found: list[ListEntry] = []
        unread: list[UnreadEntry] = []
        chunk = 1
        while True:
            data = await self.graphql(
                profile,
                COLLECTION_QUERY,
                {"userId": user_id, "chunk": chunk, "perChunk": PER_CHUNK},
            )
            read, more = parse_collection(data)
            found += read.entries
            unread += read.unread
            if not more or not (read.entries or read.unread):
                return self._told(profile, deduped(found, unread), "of the anime list")
            chunk += 1

    async def entries(self, profile: str) -> list[ListEntry]:
        """The entries of the whole list that read whole (see `read_list`, which says which
        did not: where leaving one out would read as its removal, use that)."""
        return (await self.read_list(profile)).entries

    async def read_changes(self, profile: str, since: float) -> ListRead:
        """Entries updated after `since` (newest first): usually one request (§5.4), with the
        entries on the pages read that could not be read whole (their updates are unknown).

        Shows current state, not history, and no deletions (the full read finds those)."""
        user_id = await self.user_id(profile)
        found: list[ListEntry] = []
        unread: list[UnreadEntry] = []
        page = 1
        while True:
            data = await self.graphql(
                profile, UPDATED_SINCE_QUERY, {"userId": user_id, "page": page}
            )
            read, more = parse_page(data)
            fresh = [e for e in read.entries if e.updated_at > since - OVERLAP]
            found += fresh
            unread += read.unread
            # A page without an entry that reads gives no time to stop at: the rest waits
            # for the full read rather than every page being read now.
            if not more or len(fresh) < len(read.entries) or not read.entries:
                what = "on the pages read for the anime list's latest changes"
                return self._told(profile, deduped(found, unread), what)
            page += 1

    def _told(self, profile: str, read: ListRead, what: str) -> ListRead:
        if read.unread:
            _UNREAD_ENTRIES.warning(
                ("list", profile),
                changed_answer(NAME, read.said(what), UNREAD_KEPT),
                self.clock(),
                profile=profile,
                unreadable_entries=sorted(
                    str(e.entry_id or f"media {e.media_id}") for e in read.unread
                ),
            )
        return read

    async def newest_update(self, profile: str) -> float:
        """The newest `updatedAt` on the list (one request; 0 for an empty list)."""
        user_id = await self.user_id(profile)
        data = await self.graphql(profile, UPDATED_SINCE_QUERY, {"userId": user_id, "page": 1})
        read, _ = parse_page(data)
        self._told(profile, read, "on the first page of the anime list's latest changes")
        return max((e.updated_at for e in read.entries), default=0.0)

    async def titles(self, profile: str, media_ids: Iterable[int]) -> dict[int, Title]:
        """AniList's episode count and release status of each title; one request per 50
        titles. Titles AniList does not know are left out."""
        wanted = sorted(set(media_ids))
        counts: dict[int, Title] = {}
        for start in range(0, len(wanted), PER_PAGE):
            ids = wanted[start : start + PER_PAGE]
            data = await self.graphql(profile, MEDIA_QUERY, {"ids": ids})
            for raw in _map(_map(data).get("Page")).get("media") or ():
                media = _map(raw)
                media_id = whole(media.get("id"))
                release = media.get("status")
                if media_id is not None:
                    counts[media_id] = Title(
                        whole(media.get("episodes")), release if isinstance(release, str) else None
                    )
        return counts

    # ------------------------------------------------------------------ writes

    async def save_entry(
        self,
        profile: str,
        write: EntryWrite,
        *,
        current: ListEntry | None,
        allow_lower: bool = False,
    ) -> ListEntry | None:
        """Create or update an entry, sending only what differs from `current` (the entry as
        last read, None when there is none). Progress is never lowered unless `allow_lower`.
        Returns the entry as AniList now has it (`current` when nothing needed sending)."""
        guarded = guard_progress(write, current, allow_lower)
        changes = guarded.changes(current)
        if changes is None:
            return current
        variables = changes.variables(current.id if current else None)
        data = await self.graphql(profile, SAVE_MUTATION, variables)
        answer = _map(data).get("SaveMediaListEntry")
        problem = entry_problem(answer)
        saved = parse_entry(answer) if problem is None else None
        if saved is None:
            # The write went through (no `errors`); sent again it sets the same values.
            said = f"SaveMediaListEntry answered with an entry with {problem or 'no fields'}"
            raise AniListError(changed_answer(NAME, said, SAVE_AGAIN))
        return saved

    async def delete_entry(self, profile: str, entry_id: int) -> bool:
        """Delete by LIST ENTRY id (not media id, §6); True when AniList deleted it."""
        data = await self.graphql(profile, DELETE_MUTATION, {"id": entry_id})
        answer = (data or {}).get("DeleteMediaListEntry") or {}
        return bool(answer.get("deleted"))
