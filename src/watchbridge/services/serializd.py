"""Serializd: a typed client with its own errors, for its unofficial API (no public one exists).

What the API is and how it behaves is in `shared/reference/serializd.md` (sections cited as
§n). In short: the Render host (`services.serializd.api_url`); the app headers on every call;
login with email + password gives a bearer token (no refresh: log in again on a 401, under a
lock); request bodies are snake_case, answers camelCase; shows are TMDB tv ids, seasons TMDB
*season* ids; the watched state (ticks, season marks) and the diary are separate systems.

Tokens come and go through an injected `TokenStore` (service "serializd", per profile, as
JSON); the clock is injected too. Every request goes through the shared HTTP policy
(`watchbridge.http`), one at a time per account with a small delay between requests, whichever
client sends it (`lane`: the clients of one event loop share each account's lane); catalogue
reads, which no account signs, take the lane of the account that sent last (`catalogue_lane`),
so they count against an account's pace instead of adding one of their own. A 429's wait
holds every lane of the host (`Host.pause`), not only the one it came on. Answers are
never assumed to be JSON: an HTML answer (the www host's "Vercel Security Checkpoint") is
`SerializdUnavailable`, any other non-JSON answer a `SerializdError`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any
from urllib.parse import quote

import httpx

from watchbridge.config import SERIALIZD_COOKIE, SerializdAccount, SerializdConfig
from watchbridge.http import (
    Bucket,
    HttpClient,
    Pacer,
    Pause,
    PerLoop,
    ServiceError,
    Unavailable,
    changed_answer,
    shown_url,
)
from watchbridge.logs import Repeating
from watchbridge.loose import whole
from watchbridge.metrics import Metrics
from watchbridge.ratings import from_ten
from watchbridge.services.refusals import entry as refusal_entry
from watchbridge.services.refusals import note_refused, note_taken, refusal_of
from watchbridge.services.trakt import TokenStore

log = logging.getLogger(__name__)
# Rows a delta read cannot read come back at every run (every 30 minutes) until watchbridge is
# updated: a warning at first, then hourly with the count since (the full read says it daily).
_UNREAD_ROWS = Repeating(log)

SERVICE = "serializd"
NAME = "Serializd"  # as a user knows it, in messages
APP_ID = "serializd_vercel"  # X-Requested-With: the header that matters (§1)
SITE = "https://www.serializd.com"  # Origin / Referer (§1: sent by most clients, cheap)
DEFAULT_TAG = "#watchbridge"  # tag every diary entry we create (§10, pitfalls §4.3)
REQUESTS_PER_SECOND = 2.0  # §8: "about 1-2 requests per second per account"
EXPIRY_MARGIN = 3600.0  # log in again this long before a token's own expiry claim
LOGIN_FORBIDDEN_WAIT = 1800.0  # a login answered 403 is not tried again sooner (§8)
# Cache: the fingerprint of credentials Serializd refused, and when (`login_refusal`). A new
# name for the 6-hour refusal: the year-long ones older releases stored under
# "serializd-refused" held the login off for a year. The entry is kept until a login goes
# through (REFUSAL_SHOWN), so the sign-in reads refused until then; the login is held off
# only REFUSAL_KEPT from its time. (Releases before kept the bare fingerprint for 6 hours.)
REFUSED = "serializd-refused-6h"
FORBIDDEN = "serializd-forbidden"  # cache: a login answered 403, until it may be tried again
# Refused credentials are not sent again while unchanged for this long (at once when they
# change): a few tries a day cannot lock the account, and a password made right again on the
# website (not in the config) still works again the same day.
REFUSAL_KEPT = 6 * 3600.0
# A refusal on record says "refused" on the status until a login goes through, however long
# nothing tries one (only links, no deliveries): it is not let lapse into "works" by itself.
REFUSAL_SHOWN = 10 * 365 * 86400.0
# The service reads its config at its start: a password put right in the file while it runs
# is not read until it restarts (a `watchbridge sync` reads the file as it is).
RETRIED = (
    f"then restart watchbridge (tried again at once with a changed one, else every "
    f"{REFUSAL_KEPT / 3600:.0f} hours)"
)
# A pasted token Serializd refused is not sent again for as long (at once once the config has
# another): there is no password to log in again with, only the user can paste a new one.
TOKEN_REFUSAL_KEPT = REFUSAL_KEPT
EXPIRY_WARNING_DAYS = 14  # a pasted token this close to its expiry claim is warned of
SIGN_IN_PAGE = "https://www.serializd.com"
NEW_TOKEN = (
    f"sign in on {SIGN_IN_PAGE} in a browser, copy the value of its cookie {SERIALIZD_COOKIE} "
    "(the browser's developer tools > Application, or Storage in Firefox > Cookies), put it "
    "into {where} (or the variable that line names, such as SERIALIZD_TOKEN) and restart "
    "watchbridge"
)


class SerializdError(ServiceError):
    """Serializd refused or failed a request."""


class SerializdAuthError(SerializdError):
    """No usable sign-in for a profile (wrong password, no credentials): a human must act."""


class SerializdItemError(SerializdError):
    """The request was about a show or season Serializd does not know or will not take."""


class SerializdUnavailable(Unavailable, SerializdError):
    """Serializd cannot be used now: blocked by a bot checkpoint (an HTML answer).

    Also an `Unavailable`, so callers that queue and retry later treat it the same way.
    """


def same_email(one: str, other: str) -> bool:
    """Whether two emails are one Serializd login: compared without case, and without the
    spaces around a value pasted into the config (`email: "alice@example.com "`)."""
    return one.strip().casefold() == other.strip().casefold()


@dataclass(frozen=True)
class Session:
    """A profile's stored sign-in (kept as JSON in the token store)."""

    token: str
    username: str
    obtained_at: float
    expires_at: float | None = None  # from the JWT's own claim, when it has one
    # The login (email) that signed in, as the config has it: not hashed, since the row holds
    # the bearer token itself, far more to guard. None: a pasted token, or stored before.
    email: str | None = None
    # Usernames this sign-in had before, oldest first: Serializd answered the token, or a new
    # login with the same email, with a new one (renamed in its settings), which proves them
    # one account (`accounts.sign_in_names`).
    formerly: tuple[str, ...] = ()
    pasted: bool = False  # a token pasted into the config: no password to log in again with

    def usable(self, now: float) -> bool:
        """Whether to go on with it: a pasted token until Serializd refuses it (its expiry
        claim is single source, and there is nothing to log in again with), checked again
        once past its claim (`outlived_claim`); a login's until shortly before its claim."""
        if self.pasted:
            return self.expires_at is None or now < self.expires_at or self.outlived_claim
        return self.expires_at is None or now < self.expires_at - EXPIRY_MARGIN

    @property
    def outlived_claim(self) -> bool:
        """Serializd took this token after the expiry it claims: the claim is wrong."""
        return self.expires_at is not None and self.obtained_at >= self.expires_at

    def signed_in_as(self, account: SerializdAccount | None) -> bool:
        """Whether this sign-in is the configured account's (an email corrected in the config
        must not go on writing to the old account's diary; a token pasted into the config
        is used from the start after it changes)."""
        if account is None:
            return True
        if account.token is not None:
            return self.pasted and self.token == account.token.reveal()
        if self.pasted:
            return False  # the config went from a pasted token to email and password
        if self.email is None or account.email is None:
            return True
        return same_email(self.email, account.email)

    def same_login(self, account: SerializdAccount) -> bool:
        """Whether this sign-in was made with `account`'s email: Serializd's login, which stays
        with the account when its username changes. False when not known (a pasted token, or
        a sign-in an older release stored without its email)."""
        return (
            self.email is not None
            and account.email is not None
            and same_email(self.email, account.email)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "username": self.username,
            "obtained_at": self.obtained_at,
            "expires_at": self.expires_at,
            "email": self.email,
            "formerly": list(self.formerly),
            "pasted": self.pasted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session | None:
        token, username = data.get("token"), data.get("username")
        if not isinstance(token, str) or not token or not isinstance(username, str):
            return None
        obtained, expires = data.get("obtained_at"), data.get("expires_at")
        email, formerly = data.get("email"), data.get("formerly")
        return cls(
            token,
            username,
            float(obtained) if isinstance(obtained, int | float) else 0.0,
            float(expires) if isinstance(expires, int | float) else None,
            email if isinstance(email, str) else None,
            tuple(n for n in formerly if isinstance(n, str)) if isinstance(formerly, list) else (),
            data.get("pasted") is True,
        )


@dataclass(frozen=True)
class DiaryEntry:
    """One diary row (§5.1). Scope: episode, season (`episode_number` None) or show
    (`season_id` None). `rating` is Serializd's 0-10 half stars, 0 = none (§7)."""

    id: int
    show_id: int  # TMDB tv id
    season_id: int | None  # TMDB season id
    season_number: int | None  # resolved from the row's showSeasons
    episode_number: int | None
    watched_at: float  # backdate, else dateAdded
    rating: int
    is_rewatch: bool
    review_text: str
    date_added: float
    is_log: bool = True
    tags: tuple[str, ...] = ()

    @property
    def internal_rating(self) -> int | None:
        """The rating on watchbridge's 0-100 scale (None when unrated)."""
        return from_ten(self.rating)


@dataclass(frozen=True)
class WatchlistShow:
    """One show on a user's watchlist (§5.2 `watchlistpage_v2`): watchlisted seasons by TMDB
    season id (a season cannot be both watched and watchlisted, §6.1)."""

    show_id: int  # TMDB tv id
    season_ids: tuple[int, ...]
    name: str | None = None
    date_added: float | None = None


# --------------------------------------------------------------------------- pure shapes


def iso(timestamp: float) -> str:
    """A watch date as Serializd takes it: ISO-8601 UTC with `Z`, to the second (§6.2)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: Any) -> float | None:
    """ISO-8601 (`Z`, offsets, fractions; naive = UTC) to a timestamp; None when unusable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


# A claimed expiry past this many seconds is in milliseconds (JavaScript's Date.now()): in
# seconds it would be after the year 5000. Past the last one a date can show: no expiry known.
_MILLISECONDS_FROM = 1e11
_LAST_DATE = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


def _claimed_time(value: float) -> float | None:
    seconds = value / 1000 if value >= _MILLISECONDS_FROM else value
    return seconds if 0 < seconds < _LAST_DATE else None


def token_expiry(token: str) -> float | None:
    """The expiry a JWT claims (`expiry_time` per §2, or the standard `exp`; a number in
    seconds or milliseconds, or an ISO date), unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    for key in ("expiry_time", "exp"):
        value = claims.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _claimed_time(float(value))
        if (parsed := parse_iso(value)) is not None:
            return parsed
    return None


def _date(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def token_refused(profile: str, expires_at: float | None, now: float) -> str:
    """What to do once Serializd no longer takes the token pasted for `profile`. Pure."""
    if expires_at is not None and now >= expires_at:
        why = f"it expired on {_date(expires_at)}"
    else:
        why = "signed out on the website, or expired"
    where = f"profiles.{profile}.accounts.serializd.token"
    return (
        f"Serializd no longer accepts the token pasted for profile {profile} ({why}); its "
        "deliveries to Serializd wait, nothing is lost. To go on: " + NEW_TOKEN.format(where=where)
    )


def token_ending(profile: str, expires_at: float | None, now: float) -> str | None:
    """The warning that the token pasted for `profile` ends within EXPIRY_WARNING_DAYS, or
    None (further off, past, or no expiry known). Pure."""
    if expires_at is None or now >= expires_at:
        return None
    days = (expires_at - now) / 86400
    if days > EXPIRY_WARNING_DAYS:
        return None
    where = f"profiles.{profile}.accounts.serializd.token"
    return (
        f"the Serializd token pasted for profile {profile} expires on {_date(expires_at)} (in "
        f"{math.ceil(days)} days), and without a password watchbridge cannot sign in again; "
        "then its deliveries to Serializd wait. Before then: " + NEW_TOKEN.format(where=where)
    )


def snake_case_only(body: Mapping[str, Any]) -> None:
    """Refuse camelCase request keys: Serializd answers them with a 500 (§1)."""
    camel = [key for key in body if key != key.lower()]
    if camel:
        raise ValueError(f"Serializd request bodies are snake_case; got {camel}")


def login_body(account: SerializdAccount) -> dict[str, Any]:
    """A plain JSON object (a double-encoded string broke serializd-py's login, §2)."""
    assert account.email is not None and account.password is not None  # a login account
    return {"email": account.email, "password": account.password.reveal()}


def episode_log_body(
    show_id: int, season_id: int, numbers: Iterable[int], *, add: bool = True
) -> dict[str, Any]:
    """`episode_log/add` and `/remove` (§6.1); episode numbers inside the TMDB season."""
    body: dict[str, Any] = {
        "show_id": show_id,
        "season_id": season_id,
        "episode_numbers": sorted(set(numbers)),
    }
    if add:
        body["should_get_next_episode"] = False
    return body


def seasons_body(show_id: int, season_ids: Iterable[int]) -> dict[str, Any]:
    """`watched_v2` and `watched/remove_v2` (§6.1): TMDB season ids, never numbers."""
    return {"show_id": show_id, "season_ids": sorted(set(season_ids))}


def review_body(
    show_id: int,
    season_id: int | None,
    episode_number: int | None,
    *,
    watched_at: float | None,
    rating: int | None,
    is_rewatch: bool,
    review_text: str = "",
    tags: Iterable[str] = (DEFAULT_TAG,),
    is_log: bool = True,
    like: bool = False,
) -> dict[str, Any]:
    """`show/reviews/add` (§6.2): a diary entry with its watch date, rating and flags.

    `rating` is Serializd's 0-10 (use `ratings.to_serializd`); None is sent as 0, because a
    missing rating is a 500 and `null` is unconfirmed. `watched_at` None leaves `backdate`
    null (the server's "now").
    """
    if episode_number is not None and season_id is None:
        raise ValueError("an episode entry needs its season id")
    if rating is not None and not 0 <= rating <= 10:
        raise ValueError(f"Serializd ratings are 0-10, got {rating}")
    return {
        "show_id": show_id,
        "season_id": season_id,
        "episode_number": episode_number,
        "backdate": iso(watched_at) if watched_at is not None else None,
        "rating": rating or 0,
        "review_text": review_text,
        "contains_spoiler": False,
        "is_log": is_log,
        "is_rewatch": is_rewatch,
        "tags": list(tags),
        "allows_comments": True,
        "like": like,
    }


def _flag(row: Mapping[str, Any], *names: str) -> bool:
    """The first of `names` present (§5.1: flag spellings differ between sources)."""
    return next((bool(row[name]) for name in names if name in row), False)


def season_numbers(rows: Any) -> dict[int, int]:
    """Season id -> season number from `showSeasons` or show `seasons` rows (`id`, else
    `seasonId`, §3). Rows without a usable id are skipped."""
    found: dict[int, int] = {}
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        season_id = whole(row.get("id"))
        season_id = season_id if season_id is not None else whole(row.get("seasonId"))
        number = whole(row.get("seasonNumber"))
        if season_id is not None and number is not None:
            found[season_id] = number
    return found


def parse_season_map(show: Any) -> dict[int, int]:
    """`GET /api/show/{id}` -> season number -> TMDB season id."""
    return parse_show_seasons(show).ids


@dataclass(frozen=True)
class ShowSeasons:
    """A show's seasons as the catalogue lists them (§4)."""

    ids: dict[int, int]  # season number -> TMDB season id
    episodes: dict[int, int]  # season number -> episode count, where the answer gives one


def parse_show_seasons(show: Any) -> ShowSeasons:
    """`GET /api/show/{id}` -> season ids and episode counts by season number."""
    rows = show.get("seasons") if isinstance(show, dict) else None
    ids = {number: season_id for season_id, number in season_numbers(rows).items()}
    episodes: dict[int, int] = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict):
            number, count = whole(row.get("seasonNumber")), whole(row.get("episodeCount"))
            if number in ids and count is not None and count >= 0:
                episodes[number] = count
    return ShowSeasons(ids, episodes)


@dataclass(frozen=True)
class SeasonListing:
    """One season's episodes as Serializd (TMDB) numbers them."""

    ids: dict[int, int | None]  # number -> TMDB episode id (None when the row has none)
    aired: dict[int, str]  # number -> first air date (YYYY-MM-DD), where TMDB knows it


def parse_season_listing(data: Any) -> SeasonListing:
    """`GET /api/show/{id}/season/{n}` -> its episodes; none for an announced season."""
    rows = data.get("episodes") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise SerializdError(SERVICE, "the season answer has no `episodes` list")
    ids: dict[int, int | None] = {}
    aired: dict[int, str] = {}
    for row in rows:
        number = whole(row.get("episodeNumber")) if isinstance(row, dict) else None
        if number is None:
            continue
        ids[number] = whole(row.get("episodeId"))
        day = _day(row.get("airDate"))
        if day is not None:
            aired[number] = day
    return SeasonListing(dict(sorted(ids.items())), aired)


def _day(value: object) -> str | None:
    """A YYYY-MM-DD date (TMDB's `airDate`), or None."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None


def parse_diary_entry(row: Any) -> DiaryEntry | None:
    """One diary row, read loosely; None when it lacks an id, a show or any date."""
    if not isinstance(row, dict):
        return None
    entry_id, show_id = whole(row.get("id")), whole(row.get("showId"))
    date_added = parse_iso(row.get("dateAdded"))
    watched_at = parse_iso(row.get("backdate"))
    watched_at = watched_at if watched_at is not None else date_added
    if entry_id is None or show_id is None or watched_at is None:
        return None
    season_id = whole(row.get("seasonId"))
    rating = whole(row.get("rating")) or 0
    tags = row.get("tags")
    return DiaryEntry(
        id=entry_id,
        show_id=show_id,
        season_id=season_id,
        season_number=season_numbers(row.get("showSeasons")).get(season_id)
        if season_id is not None
        else None,
        episode_number=whole(row.get("episodeNumber")),
        watched_at=watched_at,
        rating=max(0, min(10, rating)),
        is_rewatch=_flag(row, "isRewatch", "isRewatched"),
        review_text=str(row.get("reviewText") or ""),
        date_added=date_added if date_added is not None else watched_at,
        # A row that does not say is taken as a log (a play): losing a play is worse than
        # reading a bare rating as one.
        is_log=_flag(row, "isLog", "isLogged") if {"isLog", "isLogged"} & set(row) else True,
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
    )


def parse_diary_page(data: Any) -> tuple[list[DiaryEntry], int | None]:
    """`{reviews, totalPages, totalReviews}` -> (entries, total pages or None if missing).
    Rows that cannot be read are left out (`unread_diary_rows` names them)."""
    if not isinstance(data, dict) or not isinstance(data.get("reviews"), list):
        raise SerializdError(
            SERVICE, changed_answer(NAME, "the diary answer has no `reviews` list")
        )
    entries = [e for row in data["reviews"] if (e := parse_diary_entry(row)) is not None]
    return entries, whole(data.get("totalPages"))


def unread_diary_rows(data: Any) -> list[int | None]:
    """The ids of a diary page's rows that `parse_diary_entry` cannot read (no show or date
    in a form known); None for each such row without an id either."""
    rows = data.get("reviews") if isinstance(data, dict) else None
    unread = [row for row in rows or [] if parse_diary_entry(row) is None]
    return [whole(row.get("id")) if isinstance(row, dict) else None for row in unread]


@dataclass(frozen=True)
class DiaryRead:
    """A diary as read: its entries (every one, or those a read of the newest pages keeps),
    the ids of the rows it could not read, and the ids of every row on the pages read
    (readable or not, kept or not)."""

    entries: list[DiaryEntry]
    unreadable: frozenset[int] = frozenset()
    listed: frozenset[int] = frozenset()
    counted: int | None = None  # `totalReviews` as every page answered it (None: not all did)
    changed: bool = False  # the count moved while it was read (`diary_read`'s `growing`)

    @property
    def all_listed(self) -> bool:
        """Whether the read listed as many rows as every page counted: then no row was left
        unseen by the pages shifting under it (a whole read raises on a count that moved). A
        diary answering no count (§5.1) never tells."""
        return self.counted is not None and self.counted == len(self.listed)


@dataclass(frozen=True)
class DiaryListing:
    """The ids of the diary rows a read saw (readable or not), and whether it read every page
    with a whole read's checks (`whole_read`, the diary unchanged while read): only then is
    an id it did not see gone, whatever order the pages came in."""

    ids: frozenset[int]
    whole: bool


def _rows_by_show(rows: list[Any], what: str) -> list[tuple[int, dict[str, Any]]]:
    """(show id, row) of each row of a page. A row without a show id watchbridge can read
    fails the page (SerializdError): it cannot be told from any other, nor what it held
    kept, and leaving it out would read as removed."""
    found = [(whole(r.get("showId")) if isinstance(r, dict) else None, r) for r in rows]
    readable = [(show_id, row) for show_id, row in found if show_id is not None]
    if len(readable) < len(rows):
        missing = f"{len(rows) - len(readable)} of {len(rows)} rows of {what} have no show id"
        raise SerializdError(SERVICE, changed_answer(NAME, missing))
    return readable


def _season_ids(raw: object) -> list[int] | None:
    """A row's `seasonIds`, or None unless it is a list of whole numbers (a list of objects,
    or a renamed field, would read as seasons unmarked)."""
    if not isinstance(raw, list):
        return None
    ids = [whole(v) for v in raw]
    return None if None in ids else [i for i in ids if i is not None]


@dataclass(frozen=True)
class WatchedPage:
    """One `watchedpage_v2` page: its shows with their marked season ids, the shows whose
    season ids could not be read, and the total pages (None if missing)."""

    shows: list[tuple[int, list[int]]]
    unreadable: frozenset[int]
    total_pages: int | None


@dataclass(frozen=True)
class WatchedRead:
    """Every show with seasons marked watched, and the shows whose seasons could not be read."""

    shows: list[tuple[int, list[int]]]
    unreadable: frozenset[int] = frozenset()


def parse_watched_page(data: Any, what: str = "a watched page") -> WatchedPage:
    """`watchedpage_v2` -> its shows (TMDB show id, season ids). A row without a show id fails
    the page (SerializdError); one without season ids in a form known is named unreadable."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise SerializdError(
            SERVICE, changed_answer(NAME, "the watched page answer has no `items` list")
        )
    shows: list[tuple[int, list[int]]] = []
    unreadable: set[int] = set()
    for show_id, item in _rows_by_show(data["items"], what):
        ids = _season_ids(item.get("seasonIds"))
        if ids is None:
            unreadable.add(show_id)
        else:
            shows.append((show_id, ids))
    return WatchedPage(shows, frozenset(unreadable), whole(data.get("totalPages")))


def parse_show_page(data: Any, what: str) -> tuple[list[int], int | None]:
    """`currently_watching_page` (and its paused/dropped siblings, §5.2) -> (TMDB show ids,
    total pages or None if missing). No `items` list is an error, never "no shows"; so is a
    row without a show id."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        no_list = f"the {what} answer has no `items` list"
        raise SerializdError(SERVICE, changed_answer(NAME, no_list))
    shows = [show_id for show_id, _ in _rows_by_show(data["items"], what)]
    return shows, whole(data.get("totalPages"))


def parse_watchlist_page(
    data: Any, what: str = "a watchlist page"
) -> tuple[list[WatchlistShow], int | None]:
    """`watchlistpage_v2` -> (shows, total pages or None if missing). An answer without an
    `items` list, or with rows without a show id, is an error: a broken read must never look
    like a shorter watchlist (its missing shows would be removed from the other side). So is
    a row whose season ids cannot be read: removing that show would send no seasons, which
    takes nothing off the list yet reads as done."""
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise SerializdError(
            SERVICE, changed_answer(NAME, "the watchlist page answer has no `items` list")
        )
    rows = _rows_by_show(data["items"], what)
    unreadable = sum(_season_ids(item.get("seasonIds")) is None for _, item in rows)
    if unreadable:
        missing = f"{unreadable} of {len(rows)} rows of {what} have no season ids"
        raise SerializdError(SERVICE, changed_answer(NAME, f"{missing} watchbridge can read"))
    shows: list[WatchlistShow] = []
    for show_id, item in rows:
        ids = _season_ids(item.get("seasonIds")) or []
        name = item.get("showName")
        shows.append(
            WatchlistShow(
                show_id,
                tuple(sorted(set(ids))),
                name if isinstance(name, str) and name else None,
                parse_iso(item.get("dateAdded")),
            )
        )
    return shows, whole(data.get("totalPages"))


def watchlist_remove_body(show_id: int, season_ids: Iterable[int]) -> dict[str, Any]:
    """`watchlist/remove_v2` (§6.1): like `watchlist_v2` plus `async` (false, as the site's
    own bundle sends it)."""
    return {**seasons_body(show_id, season_ids), "async": False}


# Kept per account: the status and each metrics scrape ask while a login stays refused, and
# each hash takes tens of milliseconds on purpose.
@functools.lru_cache(maxsize=32)
def credentials_fingerprint(account: SerializdAccount) -> str:
    """Tells whether credentials changed, without keeping the password (slow to guess from)."""
    assert account.password is not None  # a login account's
    salt = f"watchbridge:{account.email}".encode()
    digest = hashlib.pbkdf2_hmac("sha256", account.password.reveal().encode(), salt, 100_000)
    return digest.hex()


@dataclass(frozen=True)
class LoginRefusal:
    """Serializd refused the login with the credentials of `fingerprint` at `at`, and no login
    went through since."""

    fingerprint: str
    at: float

    def of(self, account: SerializdAccount) -> bool:
        """Whether `account`'s credentials are those refused (slow, as their fingerprint)."""
        return account.password is not None and self.fingerprint == credentials_fingerprint(account)

    def holds(self, now: float) -> bool:
        """Whether the same credentials are still not to be sent (REFUSAL_KEPT)."""
        return now - self.at < REFUSAL_KEPT


def login_refusal(tokens: TokenStore, profile: str, now: float) -> LoginRefusal | None:
    """The refusal of `profile`'s last login on record, if no login went through since."""
    hit, value = tokens.cache_get(REFUSED, profile, now)
    if not hit:
        return None
    if isinstance(value, str):  # an older release's: kept REFUSAL_KEPT from its refusal
        expires = tokens.cache_expires(REFUSED, profile, now)
        return LoginRefusal(value, (now if expires is None else expires) - REFUSAL_KEPT)
    if isinstance(value, dict) and isinstance(value.get("fingerprint"), str):
        at = value.get("at")
        return LoginRefusal(value["fingerprint"], float(at) if isinstance(at, int | float) else 0)
    return None  # none (a login went through since), or unreadable


def last_page(page: int, total_pages: int | None, got_new: bool) -> bool:
    """Whether paging ends after `page`: past `totalPages`, or (when the answer has no
    `totalPages`) on the first page that adds nothing."""
    return page >= total_pages if total_pages is not None else not got_new


def _changed_while_read(totals: Sequence[int | None]) -> bool:
    """Whether a diary read page by page saw the diary change: its count moved between pages
    (the count alone may include rows a read cannot use, §5.1). Pure."""
    return len({t for t in totals if t is not None}) > 1


def _grew_while_read(totals: Sequence[int | None]) -> bool:
    """Whether the count a diary read saw moved, and only up: entries were logged while it
    was read (a busy household's plays, ours among them), none seen deleted. Pure."""
    counts = [t for t in totals if t is not None]
    return _changed_while_read(counts) and all(a <= b for a, b in pairwise(counts))


def whole_read(
    page: int, total_pages: int | None, items: list[Any], before: list[Any], what: str
) -> None:
    """Raise when a page answers a list cut short: empty although `totalPages` says it holds
    rows (not the one page of an empty list), or the same rows as the page before (`page`
    ignored). Stopping there, or reading on, would leave a short list, which a full read
    takes for removals (a page changed by a write meanwhile still adds rows)."""
    empty = not items and total_pages is not None and page <= total_pages and total_pages > 1
    if empty or (page > 1 and items and items == before):
        raise SerializdUnavailable(
            SERVICE,
            f"Serializd answered {what} of {total_pages or '?'} with nothing new: the list was "
            "not read whole (tried again later)",
        )


def parse_episode_logs(data: Any) -> set[int]:
    """`season_v2_part_3` -> the ticked episode numbers of that season."""
    logs = data.get("episodeLogs") if isinstance(data, dict) else None
    if not isinstance(logs, list):
        raise SerializdError(SERVICE, "the season page answer has no `episodeLogs` list")
    numbers = (whole(row.get("episodeNumber")) for row in logs if isinstance(row, dict))
    return {n for n in numbers if n is not None}


def review_id(data: Any) -> int | None:
    """The created review's id from a `reviews/add` answer (`id`, else `review_id`, §6.2)."""
    if not isinstance(data, dict):
        return None
    found = whole(data.get("id"))
    return found if found is not None else whole(data.get("review_id"))


def _content_type(response: httpx.Response) -> str:
    value = str(response.headers.get("content-type", ""))
    return value.split(";")[0].strip().lower()


WORKING_API_URL = SerializdConfig.api_url  # the default: the backend that serves scripts (§1)


def blocked_advice(api_url: str, checkpoint: bool) -> str:
    """What to do about a web page answered in place of the API at `api_url`. Pure. Only a
    bot checkpoint says the host blocks scripts (the www host's, §1); any other page comes
    from something on the way. The address already set is never the fix."""
    at_backend = httpx.URL(api_url).host == httpx.URL(WORKING_API_URL).host
    use_backend = f"set services.serializd.api_url to {WORKING_API_URL}"
    if checkpoint and not at_backend:
        return f"that host blocks scripted clients; {use_backend}"
    if checkpoint:
        return "Serializd's backend put a bot check in front of its API; it is tried hourly"
    advice = (
        "something else may answer for it (a DNS filter's block page, a captive portal, a "
        "proxy): let the host through; it is tried hourly"
    )
    return advice if at_backend else f"{advice}; if it is not Serializd's API, {use_backend}"


def _is_html(response: httpx.Response) -> bool:
    return _content_type(response) in ("text/html", "application/xhtml+xml")


def _wrong_credentials(response: httpx.Response) -> bool:
    """Whether a login's 401 says the email or password is wrong (`Incorrect password.`,
    §1), not some other refusal that may pass (`You must be logged in`, a proxy's page)."""
    words = ("password", "email", "credential", "user")
    return any(word in _message(response).lower() for word in words)


def _message(response: httpx.Response) -> str:
    """Serializd's `{"message": ...}` when the answer is JSON, else the HTTP status."""
    if _content_type(response).endswith("json"):
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return f"{data['message']!r} (HTTP {response.status_code})"
    return f"HTTP {response.status_code}"


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Lane:
    """One account's way to Serializd: one request at a time with a small gap (§8), and one
    sign-in at a time."""

    gate: asyncio.Lock
    pacer: Pacer
    auth: asyncio.Lock


@dataclass
class Host:
    """The lanes of one Serializd host in one event loop, the account that sent last, and
    the pause a 429 puts on all of them: whether Serializd limits per account or per address
    is not known (§8), and a home server's accounts all send from one address."""

    lanes: dict[str, Lane] = field(default_factory=dict)
    latest: str | None = None
    pause: Pause = field(default_factory=Pause)


# Pacing is per account, not per client: every client of one event loop (in the service: the
# scheduled reads, the watchlist runs and the deliveries) takes the same lane per account.
# Keyed by rate too, so that a client paced differently (tests, benchmarks) never slows down or
# speeds up the others.
_HOSTS: PerLoop[Host] = PerLoop()
# The lane catalogue reads take while no account has sent anything (an AniList link numbering
# episodes as TMDB does, with no Serializd account at work).
CATALOGUE_ONLY = ""


def host(api_url: str, requests_per_second: float) -> Host:
    """The lanes of `api_url` in the running event loop."""
    return _HOSTS.get((api_url.rstrip("/"), requests_per_second), Host)


def lane(api_url: str, account: str, requests_per_second: float) -> Lane:
    """The lane of `account` on `api_url` in the running event loop."""
    shared = host(api_url, requests_per_second)
    if account not in shared.lanes:
        # One request at a time (no burst), a small gap between requests; a 429's wait holds
        # every lane of the host until it ends.
        pacer = Pacer({"calls": Bucket(1, requests_per_second)}, shared.pause)
        shared.lanes[account] = Lane(asyncio.Lock(), pacer, asyncio.Lock())
    return shared.lanes[account]


def catalogue_lane(api_url: str, requests_per_second: float) -> Lane:
    """The lane a catalogue read (a show's seasons, a season's episodes) takes: the lane of the
    account that sent last, so the host sees one account's pace (§8), not that pace plus a
    catalogue lane's beside it; catalogue reads come with an account's run or delivery, and
    with several accounts at work, each still has its own lane. Before any account sent
    anything, a lane of their own."""
    latest = host(api_url, requests_per_second).latest
    return lane(api_url, CATALOGUE_ONLY if latest is None else latest, requests_per_second)


class SerializdClient:
    """One Serializd host, many profiles (each with its own sign-in and `lane`).

    Credentials: `accounts` maps profile -> `SerializdAccount` (from
    `profiles.NAME.accounts.serializd`); `login(profile, account)` also takes one per call.
    A pasted token can be adopted with `use_token`.
    """

    def __init__(
        self,
        config: SerializdConfig,
        tokens: TokenStore,
        *,
        accounts: Mapping[str, SerializdAccount] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        requests_per_second: float | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.accounts = dict(accounts or {})
        self.clock = clock
        # The module's rate unless told, read now: a test lifts it for every client it makes.
        self.requests_per_second = (
            REQUESTS_PER_SECOND if requests_per_second is None else requests_per_second
        )
        self.http = HttpClient(
            SERVICE,
            config.api_url,
            metrics=metrics,
            clock=clock,
            headers={
                "accept": "application/json",
                "x-requested-with": APP_ID,
                "origin": SITE,
                "referer": SITE,
            },
        )
        # Refused credentials (never sent again until they change) and logins answered 403
        # (not tried again for a while) are kept in the store: every sync run and watchlist
        # run builds its own client, and each would try them again.

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ transport

    def lane(self, account: str) -> Lane:
        """The account's lane, shared with every other client of this loop (see `lane`)."""
        return lane(self.config.api_url, account, self.requests_per_second)

    def catalogue_lane(self) -> Lane:
        """The lane catalogue reads take now (see `catalogue_lane`)."""
        return catalogue_lane(self.config.api_url, self.requests_per_second)

    async def _send(
        self,
        account: str | None,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        token: str | None = None,
        idempotent: bool | None = None,
        write: bool | None = None,
    ) -> httpx.Response:
        """One request through the shared policy, one at a time for `account` (None: a
        catalogue read, in `catalogue_lane`).

        An HTML 429 is the www host's bot checkpoint and fails at once; a JSON 429 is a rate
        limit, handled by the shared policy.
        """
        if json is not None:
            snake_case_only(json)
        if account is None:
            way = self.catalogue_lane()
        else:
            way = self.lane(account)
            host(self.config.api_url, self.requests_per_second).latest = account
        headers = {"authorization": f"Bearer {token}"} if token else None
        async with way.gate:
            return await self.http.request(
                method,
                path,
                json=json,
                params=params,
                headers=headers,
                pacer=way.pacer,
                bucket="calls",
                inspect=self._refuse_checkpoint,
                idempotent=idempotent,
                write=write,
            )

    def _refuse_checkpoint(self, response: httpx.Response) -> None:
        """An HTML 429 is the www host's bot checkpoint: no amount of waiting helps."""
        if response.status_code == 429 and _is_html(response):
            raise self._blocked(response)

    def _blocked(self, response: httpx.Response) -> SerializdUnavailable:
        checkpoint = "Vercel Security Checkpoint" in response.text
        what = "its bot checkpoint page" if checkpoint else "an HTML page"
        return SerializdUnavailable(
            SERVICE,
            f"{shown_url(self.config.api_url)} answered with {what} (HTTP {response.status_code}) "
            f"instead of the API: {blocked_advice(self.config.api_url, checkpoint)}",
            retry_after=3600,
            status=response.status_code,
        )

    def _json(self, response: httpx.Response, what: str) -> Any:
        """The JSON of a successful answer; anything else is an error with a clear cause."""
        if _is_html(response):
            raise self._blocked(response)
        if not _content_type(response).endswith("json"):
            raise SerializdError(
                SERVICE,
                f"{what} answered HTTP {response.status_code} with a non-JSON body "
                f"({_content_type(response) or 'no content type'})",
            )
        try:
            return response.json()
        except ValueError:
            raise SerializdError(SERVICE, f"{what} answered with broken JSON") from None

    def _check(self, response: httpx.Response, what: str) -> None:
        """Raise for a refused request (the 401 is handled before this)."""
        status = response.status_code
        if status < 400:
            return
        if _is_html(response) and status in (404, 405):
            raise SerializdError(
                SERVICE,
                f"{what}: {response.request.url.path} is not a Serializd endpoint (HTTP "
                f"{status}, HTML): the API may have renamed it (e.g. a new _v3)",
            )
        if _is_html(response):
            raise self._blocked(response)
        if status in (400, 404):
            raise SerializdItemError(SERVICE, f"{what} was refused: {_message(response)}")
        raise SerializdError(SERVICE, f"{what} failed: {_message(response)}")

    # ------------------------------------------------------------------ sign-in

    def _load(self, profile: str) -> Session | None:
        data = self.tokens.get_token(SERVICE, profile)
        return Session.from_dict(data) if isinstance(data, dict) else None

    async def _loaded(self, profile: str) -> Session | None:
        """`_load` on a thread: it waits for the store's lock, which a link run's apply holds
        for most of a second at a big account; on the event loop every webhook would wait."""
        return await asyncio.to_thread(self._load, profile)

    def _save(
        self,
        profile: str,
        token: str,
        username: str,
        email: str | None = None,
        formerly: tuple[str, ...] = (),
        *,
        pasted: bool = False,
    ) -> Session:
        now = self.clock()
        session = Session(token, username, now, token_expiry(token), email, formerly, pasted)
        self.tokens.put_token(SERVICE, profile, session.to_dict(), now)
        return session

    async def login(self, profile: str, account: SerializdAccount | None = None) -> str:
        """Log in with email + password (given, or the profile's configured account);
        stores the token; returns the Serializd username."""
        account = account or self.accounts.get(profile)
        async with self.lane(profile).auth:
            session = await self._login(profile, account)
        if account is not None:
            self.accounts[profile] = account  # for logging in again on a 401
        return session.username

    async def _login(self, profile: str, account: SerializdAccount | None) -> Session:
        where = f"profiles.{profile}.accounts.serializd"
        if account is not None and account.token is not None:
            return await self._adopt(profile, account.token.reveal())
        if account is None:
            raise SerializdAuthError(
                SERVICE,
                f"profile {profile} has no Serializd sign-in: set {where} (email, password)",
            )
        now = self.clock()
        # The fingerprint is slow on purpose: worked out only when a refusal holds.
        refused = login_refusal(self.tokens, profile, now)
        if refused is not None and refused.holds(now) and refused.of(account):
            raise SerializdAuthError(
                SERVICE,
                f"Serializd refused the email or password of profile {profile}: "
                f"check {where}, {RETRIED}",
                retry_after=max(refused.at + REFUSAL_KEPT - now, 1.0),
            )
        if self.tokens.cache_get(FORBIDDEN, profile, now)[0]:
            raise SerializdAuthError(
                SERVICE,
                f"Serializd refused to sign in profile {profile} (403) a short while ago; "
                f"tried again in a while: check {where} if this lasts",
            )
        response = await self._send(
            profile, "POST", "/api/login", json=login_body(account), write=False
        )
        if response.status_code == 401 and _wrong_credentials(response):  # §1
            at = self.clock()
            refusal = {"fingerprint": credentials_fingerprint(account), "at": at}
            self.tokens.cache_put(REFUSED, profile, refusal, at, REFUSAL_SHOWN)
            raise SerializdAuthError(
                SERVICE,
                f"Serializd refused the email or password of profile {profile} "
                f"({_message(response)}): check {where}, {RETRIED}",
                retry_after=REFUSAL_KEPT,  # the deliveries waiting for it too
            )
        if response.status_code in (401, 403):
            # Not how Serializd answers a wrong password (a proxy, "You must be logged in"):
            # tried again, but not at once.
            self.tokens.cache_put(FORBIDDEN, profile, True, self.clock(), LOGIN_FORBIDDEN_WAIT)
            raise SerializdAuthError(
                SERVICE,
                f"Serializd refused to sign in profile {profile} ({_message(response)}); "
                f"tried again in a while: check {where} if this lasts",
            )
        self._check(response, "login")
        data = self._json(response, "login")
        token = data.get("token") if isinstance(data, dict) else None
        username = data.get("username") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or not isinstance(username, str):
            raise SerializdError(SERVICE, "login answered without a token and username")
        self.tokens.cache_put(REFUSED, profile, None, self.clock(), 0.0)
        log.info("signed in to Serializd", extra={"profile": profile, "username": username})
        return self._save(
            profile, token, username, account.email, self._formerly(profile, account, username)
        )

    def _formerly(self, profile: str, account: SerializdAccount, username: str) -> tuple[str, ...]:
        """The usernames the profile's sign-in with `account`'s email answered to before, now
        that it answers to `username`: one email is one Serializd account, so another name
        at a new sign-in with it (the token expired before any read met the rename) is that
        account renamed in Serializd's settings, as `_renamed` learns it from a token. Empty
        when the sign-in before was with another email, a pasted token, or stored without its
        email (an older release): those cannot tell a rename from another account."""
        before = self._load(profile)
        if before is None or not before.same_login(account):
            return ()
        if before.username != username:
            log.info(
                "the Serializd username changed: the same email signed in as the new one (the "
                "same account)",
                extra={"profile": profile, "was": before.username, "username": username},
            )
        return tuple(n for n in (*before.formerly, before.username) if n != username)

    async def use_token(self, profile: str, token: str) -> str:
        """Adopt a pasted token (or `tvproject_credentials` cookie value) after checking it
        with `validateauthtoken`; returns the username."""
        async with self.lane(profile).auth:
            return (await self._adopt(profile, token)).username

    async def _adopt(self, profile: str, token: str) -> Session:
        """The session of a pasted token, checked with `validateauthtoken` (§2: it needs no
        sign-in and names the user the user paths need) and stored: at its first use, and
        again when a request is refused with it (one 401 may be a glitch of the service;
        only the check saying no is the token's end). One Serializd refused within
        TOKEN_REFUSAL_KEPT is refused without asking."""
        await self._not_refused(profile, token)
        response = await self._send(
            profile, "POST", "/api/validateauthtoken", json={"token": token}, write=False
        )
        self._check(response, "token check")
        data = self._json(response, "token check")
        username = data.get("username") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("isValid") is True and username:
            log.info("signed in to Serializd with the pasted token",
                     extra={"profile": profile, "username": str(username)})  # fmt: skip
            await asyncio.to_thread(note_taken, self.tokens, SERVICE, profile, token, self.clock())
            return await asyncio.to_thread(self._save, profile, token, str(username), pasted=True)
        now = self.clock()
        message = token_refused(profile, token_expiry(token), now)
        await asyncio.to_thread(note_refused, self.tokens, SERVICE, profile, token, message, now)
        raise SerializdAuthError(SERVICE, message, retry_after=TOKEN_REFUSAL_KEPT)

    async def _not_refused(self, profile: str, token: str) -> None:
        """Raise when Serializd refused this pasted token less than TOKEN_REFUSAL_KEPT ago:
        a backlog's every batch, or every link run, would ask again with it."""
        now = self.clock()
        record = await asyncio.to_thread(self.tokens.get_token, refusal_entry(SERVICE), profile)
        refused = refusal_of(record, token)
        if refused is not None and now - refused[0] < TOKEN_REFUSAL_KEPT:
            raise SerializdAuthError(
                SERVICE,
                refused[1] or token_refused(profile, token_expiry(token), now),
                retry_after=max(refused[0] + TOKEN_REFUSAL_KEPT - now, 1.0),
            )

    async def _session(self, profile: str) -> Session:
        current = await self._loaded(profile)
        account = self.accounts.get(profile)
        if current is not None and current.usable(self.clock()):
            if current.signed_in_as(account):
                if current.pasted:
                    await self._not_refused(profile, current.token)
                return current
            changed = "token" if account is not None and account.token is not None else "email"
            log.info(f"the Serializd {changed} changed in the config: signing in again",
                     extra={"profile": profile})  # fmt: skip
        return await self._relogin(profile, current.token if current else None)

    async def _relogin(
        self, profile: str, stale: str | None, stale_obtained: float | None = None
    ) -> Session:
        """Log in again, once for any number of callers holding the same stale token (a
        pasted one, stored at `stale_obtained`: checked again since, it is not again)."""
        async with self.lane(profile).auth:
            current = await self._loaded(profile)
            account = self.accounts.get(profile)
            if (
                current is not None
                and (
                    current.token != stale
                    or (current.pasted and current.obtained_at != stale_obtained)
                )
                and current.usable(self.clock())
                and current.signed_in_as(account)
            ):
                return current  # another task logged in (or checked the token) while we waited
            if account is not None and account.token is not None:
                return await self._adopt(profile, account.token.reveal())
            if account is None and current is not None:
                raise SerializdAuthError(
                    SERVICE,
                    f"Serializd no longer accepts the token of profile {profile} and no "
                    f"password is configured: set profiles.{profile}.accounts.serializd or "
                    "paste a new token",
                )
            return await self._login(profile, account)

    async def _renamed(self, profile: str, session: Session) -> Session | None:
        """The session under the username its token now has, when a user path answered 404
        (no such user): a username changed in Serializd's settings keeps the token working,
        but the paths name the user (§5). None when the name is the same (or unknown)."""
        response = await self._send(
            profile, "POST", "/api/validateauthtoken", json={"token": session.token}, write=False
        )
        if response.status_code >= 400 or _is_html(response):
            return None
        try:
            data = response.json()
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("isValid") is not True:
            return None
        username = data.get("username")
        if not isinstance(username, str) or not username or username == session.username:
            return None
        log.info(
            "the Serializd username changed: reading as the new one (the same account: "
            "the same sign-in answers to it)",
            extra={"profile": profile, "was": session.username, "username": username},
        )
        formerly = tuple(n for n in (*session.formerly, session.username) if n != username)
        return self._save(
            profile, session.token, username, session.email, formerly, pasted=session.pasted
        )

    async def username(self, profile: str) -> str:
        return (await self._session(profile)).username

    def sign_in_ending(self, profile: str) -> str | None:
        """Why `profile`'s sign-in stops working soon (the token pasted for it is within
        EXPIRY_WARNING_DAYS of its expiry claim), with what to do; None otherwise (a login
        with a password signs in again by itself). Read from the config only."""
        account = self.accounts.get(profile)
        if account is None or account.token is None:
            return None
        token = account.token.reveal()
        return token_ending(profile, token_expiry(token), self.clock())

    # ------------------------------------------------------------------ requests

    async def _call(
        self,
        profile: str,
        method: str,
        path: str | Callable[[Session], str],
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """A signed-in request; a 401 logs in again once and retries once."""
        session = await self._session(profile)
        for attempt in (1, 2):
            target = path(session) if callable(path) else path
            response = await self._send(
                profile, method, target, json=json, params=params, token=session.token
            )
            if callable(path) and response.status_code == 404 and not _is_html(response):
                renamed = await self._renamed(profile, session)
                if renamed is not None:  # the user changed their username on Serializd
                    session = renamed
                    response = await self._send(
                        profile, method, path(session), json=json, params=params,
                        token=session.token,
                    )  # fmt: skip
            if response.status_code != 401:
                return response
            if attempt == 1:
                session = await self._relogin(profile, session.token, session.obtained_at)
        after = (
            "although its token check takes the token pasted for it"
            if session.pasted
            else "even right after logging in"
        )
        raise SerializdAuthError(
            SERVICE,
            f"Serializd rejects profile {profile} {after} "
            f"({_message(response)}): check profiles.{profile}.accounts.serializd",
        )

    async def _read(
        self,
        profile: str,
        path: str | Callable[[Session], str],
        what: str,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        response = await self._call(profile, "GET", path, params=params)
        self._check(response, what)
        return self._json(response, what)

    async def _write(self, profile: str, path: str, body: dict[str, Any], what: str) -> Any:
        response = await self._call(profile, "POST", path, json=body)
        self._check(response, what)
        if _is_html(response):
            raise self._blocked(response)
        # §6.1: do not depend on write answers; a JSON one is returned for callers that look.
        if not _content_type(response).endswith("json"):
            return None
        try:
            return response.json()
        except ValueError:
            return None

    # ------------------------------------------------------------------ catalogue

    async def season_map(self, show_id: int) -> dict[int, int]:
        """Season number -> TMDB season id for a TMDB show (the caller caches it, §4)."""
        return (await self.show_seasons(show_id)).ids

    async def show_seasons(self, show_id: int) -> ShowSeasons:
        """A TMDB show's season ids and episode counts (one catalogue read; cache it, §4)."""
        what = f"show {show_id}"
        response = await self._send(None, "GET", f"/api/show/{show_id}")
        self._check(response, what)
        return parse_show_seasons(self._json(response, what))

    async def season_episodes(self, show_id: int, season_number: int) -> dict[int, int | None]:
        """One season's episodes, number -> TMDB episode id: for when the show answer gives
        no episode count, and to find an episode by id."""
        return (await self.season_listing(show_id, season_number)).ids

    async def season_listing(self, show_id: int, season_number: int) -> SeasonListing:
        """One season's episodes with their ids and air dates (`GET
        /api/show/{id}/season/{n}`, §4)."""
        what = f"show {show_id} season {season_number}"
        response = await self._send(None, "GET", f"/api/show/{show_id}/season/{season_number}")
        self._check(response, what)
        return parse_season_listing(self._json(response, what))

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _user_path(suffix: str) -> Callable[[Session], str]:
        return lambda session: f"/api/user/{quote(session.username, safe='')}/{suffix}"

    async def diary(self, profile: str) -> list[DiaryEntry]:
        """Every diary entry (all pages; the server's order is not reliable, §5.1), newest
        watch first, each id once."""
        return (await self.diary_read(profile)).entries

    async def diary_read(self, profile: str, growing: bool = False) -> DiaryRead:
        """`diary`, with the ids of the rows that could not be read. A diary that changes
        while it is read raises (`_diary_pages`); with `growing`, one that only grew (its
        count went up between pages) is read all the same, as a read that cannot tell it
        listed every row (`counted` None, `changed`), as one of a diary answering no count:
        an entry it misses is gone only if the next run's read misses it too
        (`readers.serializd.missed_by`). A busy household logs plays all evening: a link
        whose daily read failed on each of them would not run at all."""
        unread: list[int | None] = []
        totals: list[int | None] = []
        entries = await self._diary_pages(profile, unread, totals=totals, growing=growing)
        unreadable = frozenset(i for i in unread if i is not None)
        changed = _changed_while_read(totals)
        counted = totals[0] if totals and None not in totals and not changed else None
        listed = unreadable | {e.id for e in entries}
        return DiaryRead(entries, unreadable, listed, counted, changed)

    async def diary_added_since(self, profile: str, since: float) -> DiaryRead:
        """The entries added after `since` (`dateAdded`, Serializd's clock), ours included,
        reading pages from the first and stopping after the first page that holds none added
        since. Our own logs added since count as new too: a backlog of our deliveries (more
        than a page) would otherwise hide the user's log or rating behind a first page of
        ours, and a removal would untick a rewatch. With the ids of the rows that could not
        be read on the pages read (they may be any entry)."""
        unread: list[int | None] = []
        seen: set[int] = set()
        entries = await self._diary_pages(
            profile, unread, new=lambda entry: entry.date_added > since, old_pages=2, seen=seen
        )
        unreadable = frozenset(i for i in unread if i is not None)
        return DiaryRead(entries, unreadable, unreadable | seen)

    async def diary_lists(self, profile: str, ids: Collection[int]) -> DiaryListing:
        """What the diary lists, read for whether the entries `ids` still stand (a row it
        lists but watchbridge cannot read counts: it is there). The diary has no read by show
        or by entry (§5.1): pages are read from the first until every one has been seen (the
        order is not reliable, yet a row seen is there: a partial listing); one never seen is
        known gone only once the whole diary is read, with `diary_read`'s checks (a diary
        changed while read, or a list cut short, raises SerializdUnavailable: nothing is taken
        as gone on a guess). The listing holds every id seen, `ids` or not: callers share it."""
        sought = frozenset(ids)
        unread: list[int | None] = []
        entries = await self._diary_pages(profile, unread, sought=sought)
        seen = {e.id for e in entries} | {i for i in unread if i is not None}
        # The read stops early only once every one was seen; else it read every page.
        return DiaryListing(frozenset(seen), whole=not (sought and sought <= seen))

    async def diary_until(
        self, profile: str, known_ids: set[int], listed: set[int] | None = None
    ) -> list[DiaryEntry]:
        """The entries whose ids are not in `known_ids`, reading pages from the first and
        stopping after the first page that holds nothing new (pages are not reliably sorted,
        so an old entry on a page never ends the scan by itself). Rows that cannot be read
        are left out, with one warning for the read: a delta read only adds to what the last
        full read found, so leaving them out removes nothing. `listed` gets the id of every
        row on the pages read, known or new, readable or not (each is there)."""
        unread: list[int | None] = []
        seen: set[int] = set()
        entries = await self._diary_pages(
            profile, unread, new=lambda entry: entry.id not in known_ids, seen=seen
        )
        if listed is not None:
            listed |= seen | {i for i in unread if i is not None}
        if unread:
            ids = {i for i in unread if i is not None}
            without_id = unread.count(None)
            no_id = f" ({without_id} without an id)" if without_id else ""
            count = len(ids) + without_id
            _UNREAD_ROWS.warning(
                ("diary", profile),
                changed_answer(
                    NAME,
                    f"{count} diary entries{no_id} on the pages read for new entries have no "
                    "show or date watchbridge can read",
                    "they are left out of this read until they can be read; nothing read "
                    "before is removed for them",
                ),
                self.clock(),
                profile=profile,
                unreadable_ids=sorted(ids),
            )
        return entries

    async def _diary_pages(
        self,
        profile: str,
        unread: list[int | None],
        new: Callable[[DiaryEntry], bool] | None = None,
        kept: Callable[[DiaryEntry], bool] | None = None,
        old_pages: int = 1,
        sought: frozenset[int] = frozenset(),
        seen: set[int] | None = None,
        totals: list[int | None] | None = None,
        growing: bool = False,
    ) -> list[DiaryEntry]:
        """The entries read, and the ids of the rows that could not be read added to `unread`
        (None: a row without an id, which fails a whole read: it cannot be told from any
        other, nor its play kept). None `new`: the whole diary, or (`sought`) its pages until
        every row of those ids has been seen. Else the entries `kept` (by
        default those `new`), reading until `old_pages` pages in a row hold none `new` (see
        `diary_until`; the reference, §5.1, advises going on past two such pages, as the
        pages are not reliably sorted). `seen` gets the id of every readable row read;
        `totals` each page's `totalReviews` (an int, or None: the page answered null). A
        whole read that sees the diary change raises, unless `growing` and it only grew."""
        all_of_it = new is None
        keep = kept or new
        found: dict[int, DiaryEntry] = {}
        page, previous, old_in_a_row = 1, list[Any](), 0
        totals = [] if totals is None else totals  # each page's `totalReviews` (§5.1)
        while True:
            what = f"diary page {page}"
            data = await self._read(profile, self._user_path("diary"), what, {"page": page})
            entries, total_pages = parse_diary_page(data)
            unread_here = unread_diary_rows(data)
            if all_of_it and None in unread_here:
                no_id = f"{unread_here.count(None)} diary entries on a page have no id"
                raise SerializdError(SERVICE, changed_answer(NAME, no_id))
            # Pages may repeat rows (§5.1): each id counted once.
            unread += [i for i in unread_here if i is None or i not in unread]
            totals.append(whole(data.get("totalReviews")))
            if all_of_it:
                whole_read(page, total_pages, [e.id for e in entries], previous, what)
            if seen is not None:
                seen.update(e.id for e in entries)
            fresh = [e for e in entries if keep is None or keep(e)]
            before = len(found)
            for entry in fresh:
                found.setdefault(entry.id, entry)
            if sought and sought <= found.keys() | {i for i in unread if i is not None}:
                return list(found.values())  # every one seen: the rest cannot unsee them
            if not entries or last_page(page, total_pages, len(found) > before):
                break
            if new is not None:
                old_in_a_row = 0 if any(new(e) for e in entries) else old_in_a_row + 1
                if old_in_a_row >= old_pages:
                    break
            page, previous = page + 1, [e.id for e in entries]
        grew = growing and _grew_while_read(totals)
        if all_of_it and _changed_while_read(totals) and not grew:
            # An entry deleted (or added) while the pages were read shifts the rows after it
            # onto a page already read: one row is never seen, and would count as removed.
            # One only added pushes the rows after it onto pages still to read (and a row it
            # moves back in pages out of order, §5.1, is missed once by `growing`'s reader).
            raise SerializdUnavailable(
                SERVICE,
                f"the diary changed while it was read ({len(found)} entries seen, "
                f"{' then '.join(str(t) for t in dict.fromkeys(totals))} listed): it is read "
                "again later",
            )
        return sorted(found.values(), key=lambda e: (e.watched_at, e.id), reverse=True)

    async def watched_seasons(self, profile: str) -> list[tuple[int, list[int]]]:
        """Every show with seasons marked watched: (TMDB show id, TMDB season ids); the shows
        whose season ids could not be read are left out (`watched_read` names them)."""
        return (await self.watched_read(profile)).shows

    async def watched_read(self, profile: str) -> WatchedRead:
        """`watched_seasons`, with the shows whose season ids could not be read."""
        shows: dict[int, set[int]] = {}
        unreadable: set[int] = set()
        page, previous = 1, list[Any]()
        while True:
            what = f"watched page {page}"
            data = await self._read(
                profile,
                self._user_path(f"watchedpage_v2/{page}"),
                what,
                {"sort_by": "date_added_desc"},  # required on its sibling pages (§5.2)
            )
            read = parse_watched_page(data, what)
            items = [*read.shows, *sorted(read.unreadable)]
            whole_read(page, read.total_pages, items, previous, what)
            previous = items
            before = sum(len(ids) for ids in shows.values()) + len(unreadable)
            for show_id, season_ids in read.shows:
                shows.setdefault(show_id, set()).update(season_ids)
            unreadable |= read.unreadable
            grew = sum(len(ids) for ids in shows.values()) + len(unreadable) > before
            if not items or last_page(page, read.total_pages, grew):
                break
            page += 1
        return WatchedRead(
            [(show_id, sorted(ids)) for show_id, ids in shows.items() if show_id not in unreadable],
            frozenset(unreadable),
        )

    async def currently_watching(self, profile: str) -> list[int]:
        """The TMDB ids of the shows on the "currently watching" list, all pages (§5.2)."""
        shows: dict[int, None] = {}
        page, previous = 1, list[Any]()
        while True:
            what = f"currently watching page {page}"
            data = await self._read(
                profile,
                self._user_path(f"currently_watching_page/{page}"),
                what,
                {"sort_by": "date_added_desc"},  # every known client sends it (§5.2)
            )
            items, total_pages = parse_show_page(data, what)
            whole_read(page, total_pages, items, previous, what)
            previous = items
            before = len(shows)
            shows.update(dict.fromkeys(items))
            if not items or last_page(page, total_pages, len(shows) > before):
                break
            page += 1
        return list(shows)

    async def watchlist(self, profile: str) -> list[WatchlistShow]:
        """Every show on the watchlist, all pages (newest first as the server sorts them).

        Raises a `SerializdError` (never answers "empty") when a page cannot be read.
        """
        shows: dict[int, WatchlistShow] = {}
        page, previous = 1, list[Any]()
        while True:
            data = await self._read(
                profile,
                self._user_path(f"watchlistpage_v2/{page}"),
                f"watchlist page {page}",
                {"sort_by": "date_added_desc"},  # required: a bare-text 500 without it (§5.2)
            )
            items, total_pages = parse_watchlist_page(data, f"watchlist page {page}")
            whole_read(page, total_pages, items, previous, f"watchlist page {page}")
            previous = items
            before = len(shows)
            for item in items:
                known = shows.get(item.show_id)
                if known is not None:  # a show split over pages: join its seasons
                    seasons = tuple(sorted({*known.season_ids, *item.season_ids}))
                    item = WatchlistShow(known.show_id, seasons, known.name, known.date_added)
                shows[item.show_id] = item
            if not items or last_page(page, total_pages, len(shows) > before):
                break
            page += 1
        return list(shows.values())

    async def episode_logs(
        self, profile: str, show_id: int, season_number: int, season_id: int
    ) -> set[int]:
        """The ticked episode numbers of one season (the only per-episode read, §5.2)."""
        return parse_episode_logs(
            await self._read(
                profile,
                f"/mobile/page/show/{show_id}/season_v2_part_3/{season_number}",
                f"episode logs of show {show_id} season {season_number}",
                {"season_id": season_id},
            )
        )

    # ------------------------------------------------------------------ writes

    async def log_episodes(
        self, profile: str, show_id: int, season_id: int, numbers: Iterable[int]
    ) -> None:
        """Tick episodes watched (no date, no diary entry; does not mark the season, §6.1)."""
        body = episode_log_body(show_id, season_id, numbers)
        if body["episode_numbers"]:
            await self._write(profile, "/api/episode_log/add", body, "episode_log/add")

    async def unlog_episodes(
        self, profile: str, show_id: int, season_id: int, numbers: Iterable[int]
    ) -> None:
        body = episode_log_body(show_id, season_id, numbers, add=False)
        if body["episode_numbers"]:
            await self._write(profile, "/api/episode_log/remove", body, "episode_log/remove")

    async def mark_seasons(self, profile: str, show_id: int, season_ids: Iterable[int]) -> None:
        """Mark whole seasons watched (TMDB season ids)."""
        body = seasons_body(show_id, season_ids)
        if body["season_ids"]:
            await self._write(profile, "/api/watched_v2", body, "watched_v2")

    async def unmark_seasons(self, profile: str, show_id: int, season_ids: Iterable[int]) -> None:
        body = seasons_body(show_id, season_ids)
        if body["season_ids"]:
            await self._write(profile, "/api/watched/remove_v2", body, "watched/remove_v2")

    async def add_to_watchlist(self, profile: str, show_id: int, season_ids: Iterable[int]) -> None:
        """Put seasons of a show on the watchlist (`watchlist_v2`, §6.1). A season cannot be
        both watched and watchlisted there: callers leave watched seasons out."""
        body = seasons_body(show_id, season_ids)
        if body["season_ids"]:
            await self._write(profile, "/api/watchlist_v2", body, "watchlist_v2")

    async def remove_from_watchlist(
        self, profile: str, show_id: int, season_ids: Iterable[int]
    ) -> None:
        """Take seasons of a show off the watchlist (`watchlist/remove_v2`; no `_v2`-less
        route exists, §6.1)."""
        body = watchlist_remove_body(show_id, season_ids)
        await self._write(profile, "/api/watchlist/remove_v2", body, "watchlist/remove_v2")

    async def delete_review(self, profile: str, review: int) -> None:
        """Delete one diary row by id: `show/reviews/delete` [unconfirmed, §6.3]. A missing
        endpoint answers Django's HTML 404 (a SerializdError naming the path)."""
        await self._write(
            profile, "/api/show/reviews/delete", {"review_id": review}, "reviews/delete"
        )

    async def add_diary_entry(
        self,
        profile: str,
        show_id: int,
        season_id: int | None,
        episode_number: int | None,
        watched_at: float | None,
        rating: int | None,
        is_rewatch: bool,
        *,
        review_text: str = "",
        tags: Iterable[str] = (DEFAULT_TAG,),
        is_log: bool = True,
    ) -> int | None:
        """Add a dated diary entry (§6.2); returns the created review id when the answer
        carries one. It does not tick the episode: call `log_episodes` too.

        Not idempotent: every call is a new entry. Check the diary (or a ledger) first.
        """
        body = review_body(
            show_id,
            season_id,
            episode_number,
            watched_at=watched_at,
            rating=rating,
            is_rewatch=is_rewatch,
            review_text=review_text,
            tags=tags,
            is_log=is_log,
        )
        return review_id(await self._write(profile, "/api/show/reviews/add", body, "reviews/add"))
