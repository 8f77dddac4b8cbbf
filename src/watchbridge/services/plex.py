"""Plex Media Server: a typed client with its own errors, for library items, state and writes.

Reads: the server's identity (`GET /identity`: plex.tv names servers by its machineIdentifier),
one item (`GET /library/metadata/{ratingKey}`, for webhook enrichment), many items' full details
in batches (`GET /library/metadata/{k1,k2,…}`, for the collection's stream details), the sections,
whole sections in pages (`/library/sections/{key}/all?type=…&includeGuids=1` with
`X-Plex-Container-Start/Size` headers, never one request per item or show) and the watch history
(`/status/sessions/history/all`, newest first, since a time). Writes: `/:/scrobble`,
`/:/unscrobble`, `/:/rate`, and deleting one history row.

Watched state and ratings belong to the account whose token is sent (reference §3), so every
call takes the token to use (`token=`; the configured server token when None). Tokens go in the
`X-Plex-Token` header (never the query string, where they would land in logs) and are redacted
from logs and errors. `Accept: application/json` (PMS answers XML otherwise). Metadata has the
same shape as a webhook's, so its guids are read by the webhook parser
(`watchbridge.ingest.plex`): one place parses Plex guids. Every request goes through the shared
HTTP policy (`watchbridge.http`).

A 404 is "no such item" only once the server is known to be this PMS answering: a reverse
proxy (Traefik, nginx, Caddy) whose Plex container is restarting answers 404 for every path.
The same `/identity` answer names the server's version, kept beside its machine id: since PMS
1.40.0.7998 marking an item played writes no history row (Plex's release note, quoted in
python-plexapi PR #1366), so a scrobble of ours makes none there (`rowless_scrobbles`).

Before a 404 is read as gone, `GET /identity` must answer a MediaContainer naming the server's
machineIdentifier (any, while none is known yet); else the 404 was the proxy's and the request
fails as an outage (`Unavailable`). A confirmation vouches for the 404s of the next
IDENTITY_VOUCHES seconds (`watchbridge.http.Vouch`): a link's run meeting many missing items
does not double its requests.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from watchbridge import __version__
from watchbridge.config import PlexConfig
from watchbridge.errors import ConfigError
from watchbridge.http import (
    HttpClient,
    ServiceError,
    Unavailable,
    Vouch,
    changed_answer,
    count_problems,
    earlier_try_may_have_landed,
    identity_answer,
    problems_said,
)
from watchbridge.ingest.common import epoch, integer, number, obj, text
from watchbridge.ingest.plex import (
    guid_array_ids,
    guid_ids,
    hama_mode,
    metadata_ref,
    parse_guid,
)
from watchbridge.logs import Redactor
from watchbridge.metrics import Metrics
from watchbridge.model import Ids

SERVICE = "plex"
NAME = "Plex"  # as a user knows it, in messages
PRODUCT = "watchbridge"
LIBRARY_IDENTIFIER = "com.plexapp.plugins.library"
PAGE_SIZE = 500  # plexapi pages by 100; PMS serves 500 items with guids comfortably
# The newest history rows the cheap check reads from a server that ignores `accountID`: the
# row it saw newest last time must still be among them (readers.plex `arrivals`).
HISTORY_PAGE = 100
DETAILS_BATCH = 100  # ratingKeys per `/library/metadata/{k1,k2,…}` (plexapi joins lists so)
LISTING_TYPES = {"movie": 1, "show": 2, "season": 3, "episode": 4}
# The first PMS whose mark played (our scrobble) writes no history row.
ROWLESS_SCROBBLES_SINCE = (1, 40, 0, 7998)
# How a refusal of the server's own token (the owner's, in the config) is worded wherever it
# is met (`_refused`, `readers.plex.refusal_fix`): no `watchbridge auth plex` of a profile
# ends it. The rows it holds are told by their ServerTokenRefused (outbox.waits_for_server_token),
# not by these words.
SERVER_TOKEN_REFUSED = "the Plex server does not accept services.plex.token"
Kept = TypeVar("Kept")  # what a paged read keeps of each row (`PlexClient._kept_pages`)


class PlexError(ServiceError):
    """The Plex server refused or failed a request."""


class PlexAuthError(PlexError):
    """The server does not accept the token (401): a new token is needed."""


class ServerTokenRefused(PlexAuthError):
    """The server does not accept its own token, services.plex.token (the owner's; 401),
    whoever's library the request was for: the owner's fix, never the person's."""


class PersonTokenRefused(PlexAuthError):
    """The server does not accept a person's token (401). The client does not know whose it
    is: `readers.plex.ServerTokens.refused` words it with what that profile is to do."""

    def __init__(self, what: str) -> None:
        super().__init__(
            SERVICE, f"{what}: the Plex server does not accept the person's token (401)"
        )
        self.what = what


class PlexItemError(PlexError):
    """The server has no such item (404 on a write): it left the library."""


@dataclass(frozen=True)
class Section:
    """One library section (`type`: movie, show, artist, photo; `agent`: the metadata agent
    that matches its items, e.g. `tv.plex.agents.movie`, "" when the answer names none)."""

    key: str
    title: str
    type: str
    agent: str = ""

    @property
    def matches_nothing(self) -> bool:
        """A library of personal media ("Other Videos", `tv.plex.agents.none` or the legacy
        `com.plexapp.agents.none`): its items never get an external id."""
        return self.agent.rpartition(".")[2] == "none"


@dataclass(frozen=True)
class LibraryItem:
    """One entry of a section listing, with the calling account's state.

    `ids` are the item's own (an episode's own ids for new agents); `show_ids` only where the
    guid names the show (legacy agents). `season`/`number`: an episode's parentIndex/index, a
    season's index. `parent_rating_key`: a season's show, an episode's season.
    """

    rating_key: str
    type: str
    title: str | None = None
    ids: Ids = field(default_factory=Ids)
    show_ids: Ids = field(default_factory=Ids)
    season: int | None = None
    number: int | None = None
    parent_rating_key: str | None = None
    grandparent_rating_key: str | None = None
    view_count: int = 0
    last_viewed_at: float | None = None
    user_rating: float | None = None  # 0-10, None: not rated
    last_rated_at: float | None = None
    # A show's own episode ordering (`showOrdering`: tmdbAiring, aired, dvd, absolute);
    # None: the library's default.
    ordering: str | None = None
    # An episode numbered absolutely (HAMA's tvdb3/tvdb4 modes): its number, `number` None.
    absolute: int | None = None
    # The HAMA anime agent's mode of the item's guid (`anidb`, `tvdb3`, ...); None: another agent.
    hama: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One dated play in the server's history (`id` from its `historyKey`)."""

    id: str
    rating_key: str
    viewed_at: float
    account_id: str


def library_item(metadata: Mapping[str, object]) -> LibraryItem | None:
    """One Metadata object of a section listing as a LibraryItem (None without a ratingKey)."""
    rating_key = text(metadata.get("ratingKey"))
    kind = text(metadata.get("type")) or ""
    if rating_key is None:
        return None
    ref = metadata_ref(metadata, [])
    absolute = None
    if ref is not None:
        ids, show_ids = ref.ids, ref.show_ids
        # Absolute numbers (HAMA tvdb3/tvdb4) are no season numbering: left unkeyed (an
        # AniList link places them by the anime mapping, `watchbridge.hama`).
        season, number_, absolute = ref.season, ref.number, ref.absolute
    else:  # a season: its own guid, its index
        ids = guid_array_ids(metadata.get("Guid"), []).merged(
            guid_ids(parse_guid(text(metadata.get("guid")) or ""))
        )
        show_ids, season, number_ = Ids(), integer(metadata.get("index")), None
    rating = number(metadata.get("userRating"))
    return LibraryItem(
        rating_key=rating_key,
        type=kind,
        title=text(metadata.get("title")),
        ids=ids,
        show_ids=show_ids,
        season=season,
        number=number_,
        parent_rating_key=text(metadata.get("parentRatingKey")),
        grandparent_rating_key=text(metadata.get("grandparentRatingKey")),
        view_count=integer(metadata.get("viewCount")) or 0,
        last_viewed_at=epoch(metadata.get("lastViewedAt")),
        user_rating=rating if rating is not None and rating > 0 else None,
        last_rated_at=epoch(metadata.get("lastRatedAt")),
        ordering=text(metadata.get("showOrdering")) if kind == "show" else None,
        absolute=absolute,
        hama=hama_mode(text(metadata.get("guid")) or ""),
    )


def history_entry(row: Mapping[str, object]) -> HistoryEntry | None:
    """One history row; None when it lacks what identifies a play."""
    key = text(row.get("historyKey")) or ""
    rating_key = text(row.get("ratingKey"))
    viewed_at = epoch(row.get("viewedAt"))
    if not key or rating_key is None or viewed_at is None:
        return None
    return HistoryEntry(
        id=history_id(key),
        rating_key=rating_key,
        viewed_at=viewed_at,
        account_id=text(row.get("accountID")) or "",
    )


def entries(
    answer: object, name: str = "Metadata", what: str = "an answer of the server"
) -> tuple[list[Mapping[str, object]], int]:
    """A container's entries (`Metadata`, or `Video`/`Directory`) and its `totalSize`. PMS
    leaves the list out of an empty container; one that says it holds entries but has no
    list watchbridge knows (or no `MediaContainer`) raises PlexError: never read as empty."""
    container = obj(answer).get("MediaContainer")
    if not isinstance(container, Mapping):
        raise PlexError(SERVICE, changed_answer(NAME, f"{what} has no `MediaContainer`"))
    found: list[Mapping[str, object]] | None = None
    for candidate in (name, "Metadata", "Video", "Directory"):
        value = container.get(candidate)
        if isinstance(value, list):
            found = [obj(entry) for entry in value]
            break
    said = max(integer(container.get("size")) or 0, integer(container.get("totalSize")) or 0)
    if found is None and said:
        missing = f"{what} says it holds {said} entries but has no `{name}` list"
        raise PlexError(SERVICE, changed_answer(NAME, missing))
    found = found or []
    total = integer(container.get("totalSize"))
    return found, total if total is not None else len(found)


def listing_problem(row: Mapping[str, object]) -> str | None:
    """What watchbridge cannot read in one row of a library listing, or None."""
    if text(row.get("ratingKey")) is None:
        return "no `ratingKey`"
    if row.get("viewCount") is not None and integer(row.get("viewCount")) is None:
        return "a `viewCount` that is no whole number"  # read as 0, it would unwatch
    return None


def history_problem(row: Mapping[str, object]) -> str | None:
    """What watchbridge cannot read in one row of the watch history, or None. A row of an
    item deleted from the library has neither `key` nor `ratingKey`, and is skipped: only a
    row that still names its item (`key`) without `ratingKey` is in another shape."""
    if text(row.get("historyKey")) is None:
        return "no `historyKey`"
    if text(row.get("ratingKey")) is None and text(row.get("key")) is not None:
        return "no `ratingKey`"
    if epoch(row.get("viewedAt")) is None:
        return "no `viewedAt` in epoch seconds"
    return None


@dataclass(frozen=True)
class PlexItem:
    """What PMS knows about one library item, reduced to what identifies it.

    `ids` are the item's own (for a new-agent episode: the episode's). `show_ids` are filled
    only where the item's guid names its show (legacy TV agents: `thetvdb://81189/5/16`);
    a new-agent episode's show ids come from reading `grandparent_rating_key`.
    """

    rating_key: str
    type: str
    title: str | None = None
    year: int | None = None
    guid: str | None = None
    ids: Ids = field(default_factory=Ids)
    show_ids: Ids = field(default_factory=Ids)
    show_title: str | None = None
    season: int | None = None
    number: int | None = None
    absolute: int | None = None
    grandparent_rating_key: str | None = None
    # A HAMA episode whose numbers place nothing, as `MediaRef.unplaced` says it.
    unplaced: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for the id cache); Ids as their present values."""
        return {
            "rating_key": self.rating_key,
            "type": self.type,
            "title": self.title,
            "year": self.year,
            "guid": self.guid,
            "ids": self.ids.present(),
            "show_ids": self.show_ids.present(),
            "show_title": self.show_title,
            "season": self.season,
            "number": self.number,
            "absolute": self.absolute,
            "grandparent_rating_key": self.grandparent_rating_key,
            "unplaced": self.unplaced,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlexItem:
        values = dict(data)
        for name in ("ids", "show_ids"):
            raw = values.get(name)
            values[name] = Ids(**raw) if isinstance(raw, dict) else Ids()
        return cls(**values)


def item_from_metadata(rating_key: str, metadata: Mapping[str, object]) -> PlexItem | None:
    """One Metadata object of `/library/metadata/{key}` as a PlexItem (None if it is empty)."""
    if not metadata:
        return None
    kind = text(metadata.get("type")) or ""
    ref = metadata_ref(metadata, [])
    guid = text(metadata.get("guid"))
    if ref is None:  # seasons, music, clips: keep what identifies them, nothing to parse
        return PlexItem(
            rating_key=text(metadata.get("ratingKey")) or rating_key,
            type=kind,
            title=text(metadata.get("title")),
            guid=guid,
        )
    return PlexItem(
        rating_key=ref.source_key or rating_key,
        type=kind,
        title=ref.title,
        year=ref.year,
        guid=guid,
        ids=ref.ids,
        show_ids=ref.show_ids,
        show_title=ref.show_title,
        season=ref.season,
        number=ref.number,
        absolute=ref.absolute,
        grandparent_rating_key=ref.show_source_key,
        unplaced=ref.unplaced,
    )


def first_metadata(answer: object) -> Mapping[str, object]:
    """`MediaContainer.Metadata[0]` (some endpoints use `Video`/`Directory`), else {}."""
    container = obj(obj(answer).get("MediaContainer"))
    for name in ("Metadata", "Video", "Directory"):
        entries = container.get(name)
        if isinstance(entries, list) and entries:
            return obj(entries[0])
        if isinstance(entries, Mapping):
            return entries
    return {}


def default_client_identifier(config: PlexConfig) -> str:
    """A stable id derived from the server URL, for callers that keep no generated one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"watchbridge:{config.url}"))


def history_entries(rows: Iterable[Mapping[str, object]]) -> list[HistoryEntry]:
    """The dated plays of a history listing's rows (rows of deleted items left out). Pure."""
    return [entry for row in rows if (entry := history_entry(row)) is not None]


@dataclass(frozen=True)
class History:
    """One account's dated plays, newest first, and how many rows of other accounts the
    server sent beside them though asked for this one's alone (`foreign`, dropped): a server
    that ignores `accountID` (an older one, or a proxy dropping the query) sends everyone's."""

    entries: list[HistoryEntry]
    foreign: int = 0
    # history id -> viewedAt of the account's rows of items deleted from the library (no
    # `ratingKey`): no play to read, but the server counts them in the history's total
    gone: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryRow:
    """One row of a history page as sent, whoever's it is (`entry` None: a row of an item
    deleted from the library)."""

    id: str
    account_id: str
    entry: HistoryEntry | None

    def owned_by(self, account_id: str) -> bool:
        """Whether the row is the account's (one naming no account is, as in `own_entries`)."""
        return self.account_id in ("", account_id)


@dataclass(frozen=True)
class HistoryPage:
    """The newest rows of the history as the server sends them when asked for one account
    (every account's, on a server ignoring `accountID`), and how many rows it holds in all."""

    total: int
    rows: tuple[HistoryRow, ...]


def history_page(rows: Iterable[Mapping[str, object]], total: int) -> HistoryPage:
    """A history answer's rows, kept in the order sent. Pure."""
    kept = []
    for row in rows:
        key = text(row.get("historyKey")) or ""
        account = text(row.get("accountID")) or ""
        kept.append(HistoryRow(history_id(key), account, history_entry(row)))
    return HistoryPage(total, tuple(kept))


def own_entries(
    rows: Iterable[Mapping[str, object]], account_id: str
) -> tuple[list[HistoryEntry], int]:
    """The plays of `account_id` among a history page's rows, and how many rows of other
    accounts it held. A row naming no account is kept: the filter is all there is to go by
    then. Pure."""
    entries = history_entries(rows)
    own = [entry for entry in entries if entry.account_id in ("", account_id)]
    return own, len(entries) - len(own)


def gone_rows(rows: Iterable[Mapping[str, object]], account_id: str) -> dict[str, float]:
    """History id -> viewedAt of the rows of `account_id` (or naming no account, as in
    `own_entries`) whose item was deleted from the library: they have no `ratingKey`. Pure."""
    gone = {}
    for row in rows:
        key = text(row.get("historyKey")) or ""
        viewed_at = epoch(row.get("viewedAt"))
        owned = (text(row.get("accountID")) or "") in ("", account_id)
        if key and viewed_at is not None and text(row.get("ratingKey")) is None and owned:
            gone[history_id(key)] = viewed_at
    return gone


def history_id(history_key: str) -> str:
    """A history row's id: the last part of its `historyKey`. Pure."""
    return history_key.rstrip("/").rpartition("/")[2]


def library_items(rows: Iterable[Mapping[str, object]]) -> list[LibraryItem]:
    """A section listing's rows as LibraryItems (rows without a ratingKey left out). Pure."""
    return [item for row in rows if (item := library_item(row)) is not None]


class PlexClient:
    """One Plex Media Server, read with the configured token."""

    def __init__(
        self,
        config: PlexConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        client_identifier: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not config.url:
            raise ConfigError("services.plex.url is needed to read items from the Plex server")
        self.config = config
        token = config.token.reveal() if config.token else ""
        headers = {
            "accept": "application/json",
            "x-plex-client-identifier": client_identifier or default_client_identifier(config),
            "x-plex-product": PRODUCT,
            "x-plex-version": __version__,
            "x-plex-platform": "Python",
            "x-plex-device-name": PRODUCT,
        }
        if token:
            headers["x-plex-token"] = token
        self.token: str | None = token or None  # None: no server token configured
        self.clock = clock
        # The server's machineIdentifier, as /identity last named it (None: not asked yet),
        # and whether it vouches for a 404 now (`_gone`).
        self.vouch = Vouch(clock)
        self.version: str | None = None  # as /identity last named it (None: not known)
        self.http = HttpClient(
            SERVICE,
            config.url,
            metrics=metrics,
            clock=clock,
            headers=headers,
            redactor=Redactor([token] if token else []),
            transport=transport,
            setting="services.plex.url",
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    async def metadata(self, rating_key: str) -> PlexItem | None:
        """The library item with this ratingKey; None when the server does not have it (404).

        Raises PlexAuthError on 401, PlexError on other refusals or an unreadable answer,
        Unavailable (from the HTTP policy) when the server is down or keeps failing.
        """
        key = rating_key.strip()
        if not key:
            return None
        path = f"/library/metadata/{quote(key, safe='')}"
        response = await self.http.request("GET", path)
        status = response.status_code
        if status == 401:
            raise _refused(f"reading item {key}", None)
        if status == 404:
            await self._gone(response, f"reading item {key}")
            return None
        if status >= 400:
            raise PlexError(SERVICE, f"reading item {key} answered {status}")
        try:
            answer = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "?")
            raise PlexError(SERVICE, f"reading item {key} gave no JSON ({kind})") from None
        return item_from_metadata(key, first_metadata(answer))

    async def answers(self) -> bool:
        """Whether the server answers at all (`GET /identity` naming a machineIdentifier): a
        lookup failing to answer about one item while it does is that item's failure, not an
        outage. A page in Plex's place (a proxy's 404 or sign-in page) is no answer."""
        try:
            response = await self.http.request("GET", "/identity")
        except ServiceError:
            return False
        return machine_of(response) is not None

    async def identity(self) -> str:
        """The server's machineIdentifier (`GET /identity`), how plex.tv names this server.
        Any other answer (a 404, a page) is not Plex's: Unavailable, as an outage."""
        response = await self.http.request("GET", "/identity")
        machine = machine_of(response)
        if machine is None:
            self.vouch.named(None)  # Plex gone from the address: it vouches for nothing
            raise Unavailable(SERVICE, _not_plex(response, "/identity", self.vouch))
        self.vouch.renamed(machine)  # another server there: its 404s are asked about again
        self.version = version_of(response)
        return machine

    @property
    def rowless_scrobbles(self) -> bool:
        """Whether a scrobble of ours writes no history row on this server (PMS 1.40.0.7998
        and later), as /identity last said; False while its version is not known."""
        return scrobbles_rowless(self.version)

    async def _gone(self, response: httpx.Response, what: str) -> None:
        """Return when the 404 `response` is this PMS saying it has no such thing: /identity
        names the server we know (any, while none is known), or did so within
        IDENTITY_VOUCHES. Else raise Unavailable: a proxy answered for a Plex that is gone."""
        if self.vouch.fresh():
            return
        unknown = earlier_try_may_have_landed(response)
        try:
            asked = await self.http.request("GET", "/identity")
        except Unavailable as exc:
            said = f"{what} answered 404, and asking /identity whether Plex said it failed"
            raise Unavailable(
                SERVICE, f"{said}: {exc.message}", exc.retry_after, outcome_unknown=unknown
            ) from None
        if not self.vouch.named(machine_of(asked)):
            said = f"{what} answered 404, and {_not_plex(asked, '/identity', self.vouch)}"
            raise Unavailable(SERVICE, said, outcome_unknown=unknown)
        self.version = version_of(asked)

    async def details(
        self, rating_keys: Sequence[str], token: str | None = None, batch: int = DETAILS_BATCH
    ) -> dict[str, Mapping[str, object]]:
        """Full Metadata (with `Media/Part/Stream`) of many items, `batch` ratingKeys per
        request (`/library/metadata/1,2,3`, as plexapi's fetchItems asks); items the server no
        longer has are left out."""
        found: dict[str, Mapping[str, object]] = {}
        keys = [k for k in dict.fromkeys(rating_keys) if k.strip()]
        for start in range(0, len(keys), batch):
            await self._details(keys[start : start + batch], token, found)
        return found

    async def _details(
        self, keys: list[str], token: str | None, found: dict[str, Mapping[str, object]]
    ) -> None:
        path = "/library/metadata/" + ",".join(quote(k, safe="") for k in keys)
        response = await self.http.request("GET", path, headers=self._headers(token))
        if response.status_code == 404:
            await self._gone(response, f"reading the details of {len(keys)} item(s)")
            # One key gone since the listing can fail the batch: halve it to find the rest.
            if len(keys) > 1:
                middle = len(keys) // 2
                await self._details(keys[:middle], token, found)
                await self._details(keys[middle:], token, found)
            return
        self._check(response, f"reading the details of {len(keys)} item(s)", token)
        try:
            answer = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "?")
            raise PlexError(SERVICE, f"reading item details gave no JSON ({kind})") from None
        rows, _ = entries(answer)
        for row in rows:
            if (key := text(row.get("ratingKey"))) is not None:
                found[key] = row

    # ------------------------------------------------------------------ library reads

    async def sections(self, token: str | None = None) -> list[Section]:
        """The libraries the token's account can see."""
        answer = await self._get("/library/sections", "listing the libraries", token)
        found, _ = entries(answer, "Directory")
        return [
            Section(
                key,
                text(d.get("title")) or key,
                text(d.get("type")) or "",
                text(d.get("agent")) or "",
            )
            for d in found
            if (key := text(d.get("key")))
        ]

    async def listing(
        self, section: str, kind: str, token: str | None = None, page_size: int = PAGE_SIZE
    ) -> list[LibraryItem]:
        """Every movie, show, season or episode (`kind`) of one section, page by page, each
        page's rows made items as it comes (not `listing_rows`: at 40,000 episodes the rows
        are ~100 MB, their items ~15)."""
        return await self._kept_pages(
            f"/library/sections/{quote(section, safe='')}/all",
            {"type": LISTING_TYPES[kind], "includeGuids": 1},
            f"listing library {section}",
            token,
            page_size,
            (listing_problem, f"the listing of library {section}"),
            library_items,
        )

    async def listing_rows(
        self, section: str, kind: str, token: str | None = None, page_size: int = PAGE_SIZE
    ) -> list[Mapping[str, object]]:
        """`listing` as PMS's Metadata objects (with `Media`, for the collection)."""
        path = f"/library/sections/{quote(section, safe='')}/all"
        params = {"type": LISTING_TYPES[kind], "includeGuids": 1}
        return await self._kept_pages(
            path,
            params,
            f"listing library {section}",
            token,
            page_size,
            (listing_problem, f"the listing of library {section}"),
            list,
        )

    async def viewed_since(
        self, section: str, kind: str, since: float, token: str | None = None
    ) -> int | None:
        """How many movies or episodes (`kind`) of one section the token's account viewed
        after `since` (epoch seconds, the server's `lastViewedAt`): one request answering a
        count and no rows (`lastViewedAt>>=`, container size 0, as plexapi's `totalViewSize`
        asks). None when it cannot tell: the section is gone (404), or no count came."""
        # plexapi sends `lastViewedAt>>=<epoch>` ("after"): the field name carries the operator.
        return await self._counted(section, kind, {"lastViewedAt>>": int(since)}, token)

    async def watched_count(self, section: str, kind: str, token: str | None = None) -> int | None:
        """How many movies or episodes (`kind`) of one section the token's account has
        watched, whenever (`viewCount>>=0`, plexapi's filter for watched items): the count
        of the section's listing whose `viewCount` is above 0. One request, no rows; None as
        `viewed_since`."""
        return await self._counted(section, kind, {"viewCount>>": 0}, token)

    async def _counted(
        self, section: str, kind: str, where: Mapping[str, int], token: str | None
    ) -> int | None:
        path = f"/library/sections/{quote(section, safe='')}/all"
        params = {"type": LISTING_TYPES[kind], **where}
        paging = {"x-plex-container-start": "0", "x-plex-container-size": "0"}
        headers = {**(self._headers(token) or {}), **paging}
        response = await self.http.request("GET", path, params=params, headers=headers)
        what = f"asking library {section} what was watched"
        if response.status_code == 404:
            await self._gone(response, what)
            return None
        self._check(response, what, token)
        try:
            answer = response.json()
        except ValueError:
            raise PlexError(SERVICE, f"{what} gave no JSON") from None
        return integer(obj(obj(answer).get("MediaContainer")).get("totalSize"))

    async def history(
        self,
        account_id: str,
        since: float | None = None,
        token: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> History:
        """One account's dated plays, newest first; only those at or after `since` if given.
        Rows of other accounts are dropped and counted (`History.foreign`)."""
        foreign = 0
        gone: dict[str, float] = {}

        def own(rows: list[Mapping[str, object]]) -> list[HistoryEntry]:
            nonlocal foreign  # pages are kept one after another, never two at once
            kept, others = own_entries(rows, account_id)
            foreign += others
            gone.update(gone_rows(rows, account_id))
            return kept

        entries = await self._kept_pages(
            "/status/sessions/history/all",
            _history_params(account_id, since),
            "reading the watch history",
            token,
            page_size,
            (history_problem, "the watch history"),
            own,
        )
        return History(entries, foreign, gone)

    async def history_head(self, account_id: str, token: str | None = None) -> tuple[int, str]:
        """(how many history rows the account has, the newest's id; "": none): one request.
        The rows of items deleted from the library count: the server counts them."""
        answer = await self._get(
            "/status/sessions/history/all",
            "reading the watch history",
            token,
            params=_history_params(account_id, None),
            headers={"x-plex-container-start": "0", "x-plex-container-size": "1"},
        )
        rows, total = entries(answer)
        return total, history_id(text(rows[0].get("historyKey")) or "") if rows else ""

    async def history_page(
        self, account_id: str, token: str | None = None, size: int = HISTORY_PAGE
    ) -> HistoryPage:
        """The newest `size` rows of the account's history as the server sends them (on a
        server ignoring `accountID`, everyone's), and the total: one request."""
        answer = await self._get(
            "/status/sessions/history/all",
            "reading the watch history",
            token,
            params=_history_params(account_id, None),
            headers={"x-plex-container-start": "0", "x-plex-container-size": str(size)},
        )
        rows, total = entries(answer)
        return history_page(rows, total)

    async def first_view_since(
        self, account_id: str, rating_key: str, since: float, token: str | None = None
    ) -> float | None:
        """When the account first viewed one item at or after `since` (epoch seconds, the
        server's clock), by its history: one request (oldest first, one row). None: no row,
        or one the filters did not make (another account's, another item's, an older view: a
        server ignoring `accountID`, a proxy dropping the query), which says nothing of it."""
        params = {
            **_history_params(account_id, since),
            "sort": "viewedAt:asc",
            "metadataItemID": rating_key,
        }
        answer = await self._get(
            "/status/sessions/history/all",
            "reading the watch history",
            token,
            params=params,
            headers={"x-plex-container-start": "0", "x-plex-container-size": "1"},
        )
        rows, _ = entries(answer)
        first = history_entry(rows[0]) if rows else None
        if first is None or first.account_id not in ("", account_id):
            return None
        if first.rating_key != rating_key or first.viewed_at < int(since):
            return None
        return first.viewed_at

    async def accounts(self, token: str | None = None) -> dict[str, str]:
        """The server's accounts: server-local id -> name (owner token only)."""
        answer = await self._get("/accounts", "listing the server's accounts", token)
        found, _ = entries(answer, "Account")
        return {
            key: text(a.get("name")) or ""
            for a in found
            if (key := text(a.get("id"))) and key != "0"
        }

    # ------------------------------------------------------------------ writes

    async def scrobble(self, rating_key: str, token: str | None = None) -> None:
        """Mark watched: Plex adds one view stamped *now* (it cannot back-date)."""
        # Each call adds a view: never resent after an ambiguous failure (it may have landed).
        await self._write(
            "GET", "/:/scrobble", rating_key, "marking watched", token, idempotent=False
        )

    async def unscrobble(self, rating_key: str, token: str | None = None) -> None:
        """Mark unwatched: the view count and last-viewed date are reset."""
        await self._write("GET", "/:/unscrobble", rating_key, "marking unwatched", token)

    async def rate(self, rating_key: str, rating: float | None, token: str | None = None) -> None:
        """Set the user rating (0-10 in halves); None clears it (`rating=-1`)."""
        value = "-1" if rating is None else f"{rating:g}"
        await self._write("PUT", "/:/rate", rating_key, "rating", token, {"rating": value})

    async def delete_history(self, history_id: str, token: str | None = None) -> bool:
        """Remove one history row; False when it was already gone."""
        path = f"/status/sessions/history/{quote(history_id, safe='')}"
        response = await self.http.request("DELETE", path, headers=self._headers(token))
        what = f"deleting history row {history_id}"
        if response.status_code == 404:
            await self._gone(response, what)
            return False
        self._check(response, what, token)
        return True

    # ------------------------------------------------------------------ plumbing

    def _headers(self, token: str | None) -> dict[str, str] | None:
        if token is None:
            return None
        self.http.redact.add([token])
        return {"x-plex-token": token}

    def _check(self, response: httpx.Response, what: str, token: str | None) -> None:
        """Raise for a refused request; `token` is the one it was sent with (None: the
        configured services.plex.token)."""
        status = response.status_code
        if status == 401:
            raise _refused(what, token)
        if status >= 400:
            raise PlexError(SERVICE, f"{what} answered {status}")

    @property
    def clock_skew(self) -> float:
        """How far the server's clock is ahead of ours: it stamps plays, ours what we wrote."""
        return self.http.clock_skew

    async def _get(
        self,
        path: str,
        what: str,
        token: str | None,
        *,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> object:
        sent = {**(self._headers(token) or {}), **(headers or {})}
        response = await self.http.request("GET", path, params=params, headers=sent or None)
        if response.status_code == 404:
            await self._gone(response, what)  # Plex's own 404: refused below, as any
        self._check(response, what, token)
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "?")
            raise PlexError(SERVICE, f"{what} gave no JSON ({kind})") from None

    async def _pages(
        self,
        path: str,
        params: Mapping[str, object],
        what: str,
        token: str | None,
        page_size: int,
    ) -> AsyncIterator[list[Mapping[str, object]]]:
        """The rows of a paged listing, a page at a time, until `totalSize` is reached."""
        start = 0
        while True:
            paging = {
                "x-plex-container-start": str(start),
                "x-plex-container-size": str(page_size),
            }
            answer = await self._get(path, what, token, params=params, headers=paging)
            rows, total = entries(answer, what=what)
            yield rows
            start += len(rows)
            if not rows or start >= total:
                return

    async def _kept_pages(
        self,
        path: str,
        params: Mapping[str, object],
        what: str,
        token: str | None,
        page_size: int,
        unread: tuple[Callable[[Mapping[str, object]], str | None], str],
        keep: Callable[[list[Mapping[str, object]]], list[Kept]],
    ) -> list[Kept]:
        """What `keep` makes of every page of a paged listing, page by page as each comes
        (off the event loop: at 40,000 rows a few hundred ms of the loop's thread), so that
        the rows are never all held at once: their JSON is several times the size of what is
        kept. `unread`: the problem a row may have and what to call the listing; any row with
        one refuses the whole listing once it is read: a row left out would read as a play or
        an item that is gone, and be removed from the other side."""
        problem, told = unread
        problems: dict[str, int] = {}
        kept: list[Kept] = []

        def page_kept(rows: list[Mapping[str, object]]) -> list[Kept]:
            count_problems(rows, problem, problems)
            return keep(rows)

        read = 0
        async for rows in self._pages(path, params, what, token, page_size):
            kept += await asyncio.to_thread(page_kept, rows)
            read += len(rows)
        if said := problems_said(problems, read):
            raise PlexError(SERVICE, changed_answer(NAME, f"{told}: {said}"))
        return kept

    async def _write(
        self,
        method: str,
        path: str,
        rating_key: str,
        what: str,
        token: str | None,
        extra: Mapping[str, str] | None = None,
        *,
        idempotent: bool = True,
    ) -> None:
        params = {"key": rating_key, "identifier": LIBRARY_IDENTIFIER, **(extra or {})}
        response = await self.http.request(
            method,
            path,
            params=params,
            headers=self._headers(token),
            idempotent=idempotent,
            write=True,  # a GET, but a write: an error it gets may be its own fault
        )
        if response.status_code == 404:
            await self._gone(response, f"{what} item {rating_key}")
            raise PlexItemError(SERVICE, f"{what}: the server has no item {rating_key}")
        self._check(response, f"{what} item {rating_key}", token)


def _refused(what: str, token: str | None) -> PlexAuthError:
    """The error for a 401, telling which token the request went with: the server's own
    (`token` None; its fix is the config) or a person's (whose it is decides the fix, see
    PersonTokenRefused)."""
    if token is None:
        return ServerTokenRefused(
            SERVICE,
            f"{what}: {SERVER_TOKEN_REFUSED} (401): set the "
            "server owner's current token there (it changes when the owner's plex.tv password "
            'is changed with "sign out of all devices"; short-lived plex.tv JWTs expire '
            "after 7 days)",
        )
    return PersonTokenRefused(what)


def _history_params(account_id: str, since: float | None) -> dict[str, object]:
    params: dict[str, object] = {"sort": "viewedAt:desc", "accountID": account_id}
    if since is not None:
        # plexapi sends `viewedAt>=<epoch>`: the field name carries the operator.
        params["viewedAt>"] = int(since)
    return params


def machine_of(response: httpx.Response) -> str | None:
    """The machineIdentifier a `GET /identity` answer names, when it is PMS's: a 2xx JSON
    MediaContainer naming one. None for anything else (a proxy's 404, a login page). Pure."""
    container = obj(identity_answer(response)).get("MediaContainer")
    return text(container.get("machineIdentifier")) if isinstance(container, Mapping) else None


def version_of(response: httpx.Response) -> str | None:
    """The version a PMS `GET /identity` answer names (`1.41.3.9314-a0bfb8370`), if any. Pure."""
    try:
        container = obj(response.json()).get("MediaContainer")
    except ValueError:
        return None
    return text(container.get("version")) if isinstance(container, Mapping) else None


def scrobbles_rowless(version: str | None) -> bool:
    """Whether a PMS of this version writes no history row for an item marked played: 1.40.0.7998
    and later. An unknown or unreadable version is taken for an older one (its rows are then
    taken for ours near a scrobble: the side of not duplicating). Pure."""
    numbers = re.findall(r"\d+", (version or "").partition("-")[0])
    if len(numbers) < 2:
        return False
    return tuple(int(n) for n in numbers[:4]) >= ROWLESS_SCROBBLES_SINCE


def _not_plex(asked: httpx.Response, path: str, vouch: Vouch) -> str:
    """Why the answer `asked` to `path` (`/identity`) is not this PMS's, for an outage."""
    said = vouch.not_vouched(path, "Plex", machine_of(asked), asked)
    return (
        f"{said}: not the Plex server answering (a reverse proxy whose Plex is restarting "
        "or down, or services.plex.url pointing elsewhere); nothing is taken as gone, and "
        "what waits for Plex goes once it answers there"
    )
