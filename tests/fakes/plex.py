"""Stateful fake of a Plex Media Server: library listings, per-account state, history, writes.

Follows ``shared/reference/plex.md`` §2-3. Everything answers ``{"MediaContainer": {...}}``:

- ``GET /identity``: ``machineIdentifier`` (``fake.machine_id``) and ``version``
  (``fake.version``); no token needed.
- ``GET /library/metadata/{ratingKey}``: one item in the webhook Metadata shape (``ratingKey``
  as a string, ``guid``, ``Guid: [{"id": "imdb://..."}]``, for episodes
  ``parentIndex``/``index``/``grandparentRatingKey``/``grandparentGuid``) with its full
  ``Media[].Part[].Stream[]``; ``{k1,k2,...}`` (comma-separated) answers every item.
- ``GET /library/sections``: ``Directory[]`` with ``key``, ``type``, ``title``, ``agent``, ``uuid``.
- ``GET /library/sections/{key}/all?type=1|2|3|4``: movies, shows, seasons or episodes of a
  section (with ``lastViewedAt>>=<epoch>``: only those the calling account viewed after it;
  with ``viewCount>>=<n>``: only those it viewed more than n times);
  ``Guid[]`` only with ``includeGuids=1``; ``Media`` and ``Part`` without ``Stream`` (streams,
  where HDR and audio details live, only in the item's own answer). Paged by
  ``X-Plex-Container-Start`` / ``X-Plex-Container-Size`` (headers or query); the container
  says ``size``, ``totalSize``, ``offset``; no size means everything.
- ``GET /status/sessions/history/all``: history rows (``historyKey``, ``ratingKey``,
  ``viewedAt``, ``accountID``, ``deviceID``, ...), ``sort=viewedAt:desc|asc``, filters
  ``accountID``, ``librarySectionID``, ``metadataItemID`` and ``viewedAt>=<epoch>``; paged.
  ``fake.filters_history_by_account = False`` ignores ``accountID`` (an older server, or a
  proxy dropping the query string): every account's rows come back.
  ``DELETE /status/sessions/history/{id}`` removes one row.
- ``GET /:/scrobble`` / ``GET /:/unscrobble`` (``key``, ``identifier``), ``PUT /:/rate``
  (``rating`` 0-10, ``-1`` clears): they change the calling account's state. A scrobble adds
  one view stamped *now* (``fake.clock``), with a history row only on a server before
  PMS 1.40.0.7998 (``fake.version``; the default, ``OLD_VERSION``, is such a server): since
  then marking played writes no history entry (Plex's release note, quoted in
  python-plexapi PR #1366; ``MODERN_VERSION`` for a current server). An unscrobble resets
  ``viewCount`` and ``lastViewedAt``.
- ``GET /accounts``: the server-local accounts (owner = 1).

Behind a reverse proxy: ``fake.proxy_lost_plex()`` answers every request (``/identity`` too)
as Traefik does once the Plex container it routes to is gone (restarting): ``404`` text/plain
``404 page not found`` (``FakeServer.proxy_lost_server``); ``since=`` a route: from the first
request to it on (Plex stops during a run). ``fake.proxy_found_plex()`` ends it.

Per account: ``viewCount``, ``lastViewedAt``, ``userRating`` and ``lastRatedAt`` belong to the
account whose token is sent (the owner's ``fake.token`` is account 1; ``add_user`` adds
others), so one person's state never shows in another's answers.

Every request passes, in this order:

1. Token: ``X-Plex-Token`` header (or query parameter, which PMS also accepts) missing or not a
   known token -> ``401`` with PMS's HTML body. ``fake.token = None`` serves the owner without one.
2. ``Accept`` without ``application/json`` on the metadata route -> XML (PMS's default).
3. Unknown ratingKey/section -> ``404`` (HTML body, as PMS).

SILENT (assumed, not documented): PMS's exact 404 body; that a comma-separated metadata
request with one unknown key answers 404 as a whole; that history, its deletion and
``/accounts`` need the owner's token (a managed user's token is refused with 401 there); that
an unscrobble keeps the item's history rows (history and watched state are separate in PMS);
that deleting a history row leaves ``viewCount`` alone; that listings carry ``lastRatedAt``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import quoteattr

from .base import FakeServer, Request, Response, html_response, json_response, route

TOKEN = "fAkE-pLeX-tOkEn-9q8w7e6r"
MACHINE_ID = "5e1f0c3d9a7b4e2f8c6d0a1b3c5e7f9a2b4d6e8f"
OWNER_ID = 1
SECTION_MOVIES = (1, "Movies", "movie")
SECTION_SHOWS = (2, "TV Shows", "show")
# A server whose scrobble (mark played) adds a history row, and a current one whose does not
# (PMS 1.40.0.7998 on: "no longer creates a view history entry for items marked as played").
OLD_VERSION = "1.32.8.7639-fb6452ebf"
MODERN_VERSION = "1.41.3.9314-a0bfb8370"
ROWLESS_SINCE = (1, 40, 0, 7998)
UNAUTHORIZED = (
    "<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>"
)
NOT_FOUND = "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>"
BAD_REQUEST = "<html><head><title>Bad Request</title></head><body><h1>400</h1></body></html>"
PLEX_HEADERS = {"X-Plex-Protocol": "1.0"}
LIBRARY_IDENTIFIER = "com.plexapp.plugins.library"
LISTING_TYPES = {"1": "movie", "2": "show", "3": "season", "4": "episode"}
USER_STATE = ("viewCount", "lastViewedAt", "userRating", "lastRatedAt")
_ADDED_AT = 1691115281


def guid_list(guids: list[str]) -> list[dict[str, str]]:
    """``["imdb://tt…", …]`` in PMS's shape: ``[{"id": "imdb://tt…"}, …]``."""
    return [{"id": guid} for guid in guids]


class FakePlex(FakeServer):
    """One PMS with sections, items, accounts and their state, all added by the test."""

    default_headers = PLEX_HEADERS

    def __init__(
        self, token: str | None = TOKEN, machine_id: str = MACHINE_ID, version: str = OLD_VERSION
    ) -> None:
        super().__init__()
        self.token = token
        self.machine_id = machine_id
        self.version = version  # what /identity says, and whether a scrobble adds a row
        # Whether a scrobble adds a history row whatever the version says (None: as it says):
        # a build that does not do as its version's release notes say.
        self.scrobble_rows: bool | None = None
        self.clock: Callable[[], float] = time.time  # "now" for scrobbles and ratings
        self.items: dict[str, dict[str, Any]] = {}
        self.sections: dict[str, dict[str, Any]] = {}
        self.users: dict[str, tuple[int, str]] = {}  # token -> (account id, name)
        self.shared_sections: dict[int, set[str]] = {}  # account id -> section keys it sees
        self.state: dict[tuple[int, str], dict[str, Any]] = {}  # (account, ratingKey) -> state
        self.history: dict[int, dict[str, Any]] = {}  # history id -> row
        self._listing: dict[tuple[str, str], list[str]] = {}  # (section, type) -> ratingKeys
        self._next_history = 1
        # False: the history ignores `accountID` and sends every account's rows (an older
        # server, or a proxy dropping the query string).
        self.filters_history_by_account = True
        for key, title, kind in (SECTION_MOVIES, SECTION_SHOWS):
            self.add_section(str(key), title, kind)

    def date_clock(self) -> float:
        return self.clock()

    # -- a reverse proxy in front --------------------------------------------------------------
    def proxy_lost_plex(self, since: str | None = None) -> None:
        """Every request answered by a proxy whose Plex is gone (see the module docstring);
        `since`: a route (``"/:/scrobble"``), from the first request to it on."""
        self.proxy_lost_server(since)

    def proxy_found_plex(self) -> None:
        """Plex answers behind the proxy again."""
        self.proxy_found_server()

    # -- catalogue ---------------------------------------------------------------------------
    def add_section(self, key: str, title: str, kind: str, agent: str | None = None) -> None:
        """A library section (``movie`` or ``show``; ``artist``/``photo`` for the rest)."""
        agents = {"movie": "tv.plex.agents.movie", "show": "tv.plex.agents.series"}
        self.sections[key] = {
            "key": key,
            "type": kind,
            "title": title,
            "agent": agent or agents.get(kind, "tv.plex.agents.none"),
            "scanner": "Plex Movie" if kind == "movie" else "Plex TV Series",
            "language": "en-US",
            "uuid": f"{int(key):08d}-0000-4000-8000-000000000000",
            "updatedAt": _ADDED_AT,
            "createdAt": _ADDED_AT,
        }

    def add_user(
        self, token: str, account_id: int, name: str, libraries: set[str] | None = None
    ) -> None:
        """Another account (a managed or shared user) with its own token for this server;
        `libraries`: the section keys shared with it (None: all)."""
        self.users[token] = (account_id, name)
        if libraries is not None:
            self.shared_sections[account_id] = libraries

    def add_movie(
        self,
        rating_key: str,
        title: str,
        year: int | None,
        guids: list[str] | None = None,
        *,
        guid: str | None = None,
        section: str = "1",
        media: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A movie; ``guids`` become ``Guid[]`` (left out when empty, as for legacy agents).
        ``media``: its versions as PMS has them (``Media[]`` with ``Part[]`` and ``Stream[]``);
        one plain version without streams when None."""
        item = self._base(rating_key, "movie", title, guid, guids, section)
        item["year"] = year
        item["duration"] = 6_960_000
        item["Media"] = copy.deepcopy(media) if media is not None else _plain_media(rating_key)
        self._add(item)
        return item

    def replace_media(self, rating_key: str, media: list[dict[str, Any]], at: int) -> None:
        """New files for an item (an upgrade): its ``Media`` and ``updatedAt`` change."""
        with self.lock:
            self.items[rating_key]["Media"] = copy.deepcopy(media)
            self.items[rating_key]["updatedAt"] = at

    def add_show(
        self,
        rating_key: str,
        title: str,
        year: int | None = None,
        guids: list[str] | None = None,
        *,
        guid: str | None = None,
        section: str = "2",
        ordering: str | None = None,
    ) -> dict[str, Any]:
        """A show; ``ordering``: its own ``showOrdering`` (``aired``, ``dvd``, ``absolute``:
        TheTVDB's; ``tmdbAiring``), left out as PMS does for the library's default."""
        item = self._base(rating_key, "show", title, guid, guids, section)
        item["key"] = f"/library/metadata/{rating_key}/children"
        item["year"] = year
        item["childCount"] = 0
        item["leafCount"] = 0
        if ordering is not None:
            item["showOrdering"] = ordering
        self._add(item)
        return item

    def add_episode(
        self,
        rating_key: str,
        show_key: str,
        season: int,
        number: int,
        guids: list[str] | None = None,
        *,
        guid: str | None = None,
        title: str | None = None,
        media: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An episode of an added show (its title and guid become the ``grandparent*`` fields);
        its season is created on first use. ``media`` as for ``add_movie``."""
        show = self.items.get(show_key, {})
        section = str(show.get("librarySectionID", SECTION_SHOWS[0]))
        season_key = f"{show_key}{season:03d}"
        if show and season_key not in self.items:
            self._add_season(season_key, show, season)
        item = self._base(rating_key, "episode", title or f"Episode {number}", guid, guids, section)
        item |= {
            "parentRatingKey": season_key,
            "grandparentRatingKey": show_key,
            "parentGuid": (
                self.items[season_key]["guid"] if show else f"plex://season/{season_key:0>24}"
            ),
            "grandparentGuid": show.get("guid", f"plex://show/{show_key:0>24}"),
            "parentKey": f"/library/metadata/{season_key}",
            "grandparentKey": f"/library/metadata/{show_key}",
            "parentTitle": f"Season {season}",
            "grandparentTitle": show.get("title"),
            "parentIndex": season,
            "index": number,
            "duration": 1_500_000,
            "Media": copy.deepcopy(media) if media is not None else _plain_media(rating_key),
        }
        if show:
            show["leafCount"] += 1
            self.items[season_key]["leafCount"] += 1
        self._add(item)
        return item

    def _add_season(self, season_key: str, show: dict[str, Any], season: int) -> None:
        item = self._base(
            season_key,
            "season",
            f"Season {season}",
            _season_guid(show["guid"], season) or f"plex://season/{season_key:0>24}",
            None,
            str(show["librarySectionID"]),
        )
        item |= {
            "parentRatingKey": show["ratingKey"],
            "parentGuid": show["guid"],
            "parentTitle": show["title"],
            "index": season,
            "leafCount": 0,  # its episodes, as PMS counts them in a season listing
        }
        show["childCount"] += 1
        self._add(item)

    def rematch(self, rating_key: str, guid: str, guids: list[str] | None = None) -> None:
        """The item matched again (its library switched from a legacy agent to Plex's current
        ones and its metadata refreshed, or a Fix Match): its ratingKey, every account's state
        and its history rows stay; its ``guid`` and ``Guid[]`` are the new match's. A show's
        seasons are matched with it, and its episodes name both by their new guids."""
        with self.lock:
            item = self.items[rating_key]
            item["guid"] = guid
            item.pop("Guid", None)
            if guids:
                item["Guid"] = guid_list(guids)
            if item["type"] != "show":
                return
            for season in self.items.values():
                if season["type"] == "season" and season["parentRatingKey"] == rating_key:
                    season["parentGuid"] = guid
                    key = season["ratingKey"]
                    season["guid"] = _season_guid(guid, season["index"]) or (
                        f"plex://season/{key:0>24}"
                    )
            for episode in self.items.values():
                if episode.get("grandparentRatingKey") == rating_key:
                    episode["grandparentGuid"] = guid
                    episode["parentGuid"] = self.items[episode["parentRatingKey"]]["guid"]

    def empty_section(self, key: str) -> None:
        """The section's share is unmounted and a scan emptied the trash: it lists nothing."""
        with self.lock:
            for listing, keys in self._listing.items():
                if listing[0] == key:
                    for rating_key in keys:
                        self.items.pop(rating_key, None)
                    keys.clear()

    def delete_item(self, rating_key: str) -> None:
        """The item's file is deleted and a scan emptied the trash: it lists nothing, and its
        history rows stay without `key` and `ratingKey` (python-plexapi#1267 skips history
        rows without `key` for this; that `ratingKey` goes too is assumed)."""
        with self.lock:
            self.items.pop(rating_key, None)
            for keys in self._listing.values():
                if rating_key in keys:
                    keys.remove(rating_key)
            for row in self.history.values():
                if row.get("ratingKey") == rating_key:
                    del row["key"], row["ratingKey"]

    def rescan_as(self, old: str, new: str, *, history_follows: bool = True) -> None:
        """A rescan re-adds the item (a replaced file) under a new ratingKey: every account's
        state goes with it, and its history rows too unless `history_follows` is False."""
        with self.lock:
            item = self.items.pop(old)
            self.items[new] = {**item, "ratingKey": new, "key": f"/library/metadata/{new}"}
            for keys in self._listing.values():
                if old in keys:
                    keys[keys.index(old)] = new
            for account, rating_key in list(self.state):
                if rating_key == old:
                    self.state[account, new] = self.state.pop((account, rating_key))
            for row in self.history.values():
                if history_follows and row["ratingKey"] == old:
                    row["ratingKey"] = new

    def _add(self, item: dict[str, Any]) -> None:
        key = item["ratingKey"]
        if key not in self.items:
            listing = (str(item["librarySectionID"]), item["type"])
            self._listing.setdefault(listing, []).append(key)
        self.items[key] = item

    def _base(
        self,
        rating_key: str,
        kind: str,
        title: str,
        guid: str | None,
        guids: list[str] | None,
        section: str,
    ) -> dict[str, Any]:
        info = self.sections[section]
        item: dict[str, Any] = {
            "ratingKey": rating_key,
            "key": f"/library/metadata/{rating_key}",
            "guid": guid or f"plex://{kind}/{rating_key:0>24}",
            "type": kind,
            "title": title,
            "librarySectionTitle": info["title"],
            "librarySectionID": int(section),
            "librarySectionKey": f"/library/sections/{section}",
            "addedAt": _ADDED_AT,
            "updatedAt": _ADDED_AT + 3600,
        }
        if guids:
            item["Guid"] = guid_list(guids)
        return item

    # -- per-account state -------------------------------------------------------------------
    def watch(
        self, rating_key: str, at: float, account: int = OWNER_ID, *, history: bool = True
    ) -> int | None:
        """The account watched the item at `at`: a view, and a history row unless `history` is
        False (a mark-watched that left no row). Returns the history id."""
        state = self.state.setdefault((account, rating_key), {})
        state["viewCount"] = state.get("viewCount", 0) + 1
        state["lastViewedAt"] = max(int(at), state.get("lastViewedAt", 0))
        return self._history_row(rating_key, int(at), account) if history else None

    def unwatch(self, rating_key: str, account: int = OWNER_ID) -> None:
        """The account marked the item unplayed ("mark unplayed", as `/:/unscrobble`): its
        view count and last viewing reset; its history rows stay."""
        state = self.state.setdefault((account, rating_key), {})
        for name in ("viewCount", "lastViewedAt", "viewOffset"):
            state.pop(name, None)

    def rate(
        self, rating_key: str, rating: float | None, at: float, account: int = OWNER_ID
    ) -> None:
        state = self.state.setdefault((account, rating_key), {})
        if rating is None:
            state.pop("userRating", None)
            state.pop("lastRatedAt", None)
        else:
            state["userRating"] = float(rating)
            state["lastRatedAt"] = int(at)

    def user_state(self, rating_key: str, account: int = OWNER_ID) -> dict[str, Any]:
        return dict(self.state.get((account, rating_key), {}))

    def history_of(self, rating_key: str, account: int = OWNER_ID) -> list[int]:
        """viewedAt of the account's history rows for one item, oldest first."""
        return sorted(
            row["viewedAt"]
            for row in self.history.values()
            if row["ratingKey"] == rating_key and row["accountID"] == account
        )

    def _history_row(self, rating_key: str, at: int, account: int) -> int:
        item = self.items[rating_key]
        number = self._next_history
        self._next_history += 1
        row = {
            "historyKey": f"/status/sessions/history/{number}",
            "key": item["key"] if item["type"] != "show" else f"/library/metadata/{rating_key}",
            "ratingKey": rating_key,
            "librarySectionID": str(item["librarySectionID"]),
            "title": item["title"],
            "type": item["type"],
            "thumb": f"/library/metadata/{rating_key}/thumb/{_ADDED_AT}",
            "originallyAvailableAt": "2016-11-11",
            "viewedAt": at,
            "accountID": account,
            "deviceID": 7,
        }
        for name in ("parentKey", "grandparentKey", "grandparentTitle", "parentIndex", "index"):
            if name in item:
                row[name] = item[name]
        self.history[number] = row
        return number

    def scrobbles_rowless(self) -> bool:
        """Whether a scrobble adds no history row: PMS 1.40.0.7998 and later."""
        if self.scrobble_rows is not None:
            return not self.scrobble_rows
        parts = self.version.split("-")[0].split(".")
        if not all(part.isdigit() for part in parts):
            return False  # no version (or not one): an older server's behaviour
        return tuple(int(n) for n in parts) >= ROWLESS_SINCE

    # -- routes ------------------------------------------------------------------------------
    @route("GET", "/identity")
    def identity(self, req: Request) -> Response:
        return json_response(
            {
                "MediaContainer": {
                    "size": 0,
                    "claimed": True,
                    "machineIdentifier": self.machine_id,
                    "version": self.version,
                }
            }
        )

    @route("GET", "/library/metadata/{key}")
    def metadata(self, req: Request) -> Response:
        account = self._account(req)
        if account is None:
            return html_response(UNAUTHORIZED, 401)
        keys = req.params["key"].split(",")
        if any(key not in self.items for key in keys):
            return html_response(NOT_FOUND, 404)
        item = self.items[keys[0]]
        section = self.sections[str(item["librarySectionID"])]
        container = {
            "size": len(keys),
            "allowSync": True,
            "identifier": LIBRARY_IDENTIFIER,
            "librarySectionID": item["librarySectionID"],
            "librarySectionTitle": section["title"],
            "librarySectionUUID": section["uuid"],
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1700000000,
            "Metadata": [self._view(self.items[k], account, guids=True) for k in keys],
        }
        if "application/json" not in req.headers.get("accept", ""):
            return _xml(container)
        return json_response({"MediaContainer": container})

    @route("GET", "/library/sections")
    def library_sections(self, req: Request) -> Response:
        account = self._account(req)
        if account is None:
            return html_response(UNAUTHORIZED, 401)
        shared = self.shared_sections.get(account)
        sections = [
            copy.deepcopy(s) for k, s in self.sections.items() if shared is None or k in shared
        ]
        return json_response(
            {
                "MediaContainer": {
                    "size": len(sections),
                    "allowSync": False,
                    "title1": "Plex Library",
                    "Directory": sections,
                }
            }
        )

    @route("GET", "/library/sections/{key}/all")
    def section_all(self, req: Request) -> Response:
        account = self._account(req)
        if account is None:
            return html_response(UNAUTHORIZED, 401)
        section = self.sections.get(req.params["key"])
        if section is None:
            return html_response(NOT_FOUND, 404)
        default = "1" if section["type"] == "movie" else "2"
        kind = LISTING_TYPES.get(req.query.get("type", default))
        if kind is None:
            return html_response(BAD_REQUEST, 400)
        keys = self._listing.get((section["key"], kind), [])
        # Filters name the operator in the field (`lastViewedAt>>=<epoch>`: after it;
        # `viewCount>>=<n>`: more than n, as plexapi's `viewCount>>=0` for watched items).
        for field in ("lastViewedAt", "viewCount"):
            if f"{field}>>" in req.query:
                above = int(req.query[f"{field}>>"])
                state = {k: self.state.get((account, k), {}).get(field) for k in keys}
                keys = [k for k in keys if (state[k] or 0) > above]
        start, size = _paging(req, len(keys))
        guids = req.query.get("includeGuids") == "1"
        page = [
            self._view(self.items[k], account, guids=guids, streams=False)
            for k in keys[start : start + size]
        ]
        return json_response(
            {
                "MediaContainer": {
                    "size": len(page),
                    "totalSize": len(keys),
                    "offset": start,
                    "allowSync": True,
                    "librarySectionID": int(section["key"]),
                    "librarySectionTitle": section["title"],
                    "librarySectionUUID": section["uuid"],
                    "viewGroup": kind,
                    "Metadata": page,
                }
            }
        )

    @route("GET", "/status/sessions/history/all")
    def history_all(self, req: Request) -> Response:
        account = self._account(req)
        if account is None or account != OWNER_ID:
            return html_response(UNAUTHORIZED, 401)
        rows = list(self.history.values())
        for name, field in (
            ("accountID", "accountID"),
            ("librarySectionID", "librarySectionID"),
            ("metadataItemID", "ratingKey"),
        ):
            if name == "accountID" and not self.filters_history_by_account:
                continue
            if name in req.query:
                rows = [r for r in rows if str(r.get(field)) == req.query[name]]
        if "viewedAt>" in req.query:  # `viewedAt>=<epoch>`, split by the query parser at "="
            since = int(req.query["viewedAt>"])
            rows = [r for r in rows if r["viewedAt"] >= since]
        descending = req.query.get("sort", "viewedAt:desc") != "viewedAt:asc"
        rows.sort(key=lambda r: (r["viewedAt"], r["historyKey"]), reverse=descending)
        start, size = _paging(req, len(rows))
        page = [dict(r) for r in rows[start : start + size]]
        return json_response(
            {
                "MediaContainer": {
                    "size": len(page),
                    "totalSize": len(rows),
                    "offset": start,
                    "Metadata": page,
                }
            }
        )

    @route("DELETE", "/status/sessions/history/{id}")
    def history_delete(self, req: Request) -> Response:
        if self._account(req) != OWNER_ID:
            return html_response(UNAUTHORIZED, 401)
        number = int(req.params["id"]) if req.params["id"].isdigit() else -1
        if self.history.pop(number, None) is None:
            return html_response(NOT_FOUND, 404)
        return Response(200)

    @route("GET", "/accounts")
    def accounts(self, req: Request) -> Response:
        if self._account(req) != OWNER_ID:
            return html_response(UNAUTHORIZED, 401)
        accounts = [{"id": 0, "key": "/accounts/0", "name": "", "defaultAudioLanguage": "en"}]
        accounts.append({"id": OWNER_ID, "key": "/accounts/1", "name": "owner"})
        accounts += [
            {"id": number, "key": f"/accounts/{number}", "name": name}
            for number, name in self.users.values()
        ]
        return json_response({"MediaContainer": {"size": len(accounts), "Account": accounts}})

    @route("GET", "/:/scrobble")
    def scrobble(self, req: Request) -> Response:
        found = self._write_target(req)
        if isinstance(found, Response):
            return found
        account, key = found
        self.watch(key, self.clock(), account, history=not self.scrobbles_rowless())
        return Response(200)

    @route("GET", "/:/unscrobble")
    def unscrobble(self, req: Request) -> Response:
        found = self._write_target(req)
        if isinstance(found, Response):
            return found
        account, key = found
        self.unwatch(key, account)
        return Response(200)

    @route("PUT", "/:/rate")
    def rate_route(self, req: Request) -> Response:
        found = self._write_target(req)
        if isinstance(found, Response):
            return found
        account, key = found
        try:
            rating = float(req.query.get("rating", ""))
        except ValueError:
            return html_response(BAD_REQUEST, 400)
        if rating != -1 and not 0 <= rating <= 10:
            return html_response(BAD_REQUEST, 400)
        self.rate(key, None if rating == -1 else rating, self.clock(), account)
        return Response(200)

    # -- helpers -----------------------------------------------------------------------------
    def _write_target(self, req: Request) -> tuple[int, str] | Response:
        account = self._account(req)
        if account is None:
            return html_response(UNAUTHORIZED, 401)
        if req.query.get("identifier") != LIBRARY_IDENTIFIER:
            return html_response(BAD_REQUEST, 400)
        key = req.query.get("key", "")
        if key not in self.items:
            return html_response(NOT_FOUND, 404)
        return account, key

    def _view(
        self, item: dict[str, Any], account: int, *, guids: bool, streams: bool = True
    ) -> dict[str, Any]:
        """The item as `account` sees it: its own state merged in (listings: no streams)."""
        view = copy.deepcopy(item)
        if not guids:
            view.pop("Guid", None)
        if not streams:
            for media in view.get("Media", []):
                for part in media.get("Part", []):
                    part.pop("Stream", None)
        view.update(self.state.get((account, item["ratingKey"]), {}))
        return view

    def _account(self, req: Request) -> int | None:
        """The account of the sent token (None: refused)."""
        if self.token is None:
            return OWNER_ID
        sent = req.headers.get("x-plex-token") or req.query.get("X-Plex-Token")
        if sent == self.token:
            return OWNER_ID
        user = self.users.get(sent or "")
        return user[0] if user else None


def _season_guid(show_guid: str, season: int) -> str | None:
    """A legacy agent's guid of a show's season (``com.plexapp.agents.thetvdb://81189/5?lang=en``
    for show ``…://81189?lang=en``); None for Plex's current agents (a plex://season/ guid of
    its own)."""
    if not show_guid.startswith("com.plexapp.agents."):
        return None
    base, query = show_guid.split("?", 1) if "?" in show_guid else (show_guid, "")
    return f"{base}/{season}" + (f"?{query}" if query else "")


def _plain_media(rating_key: str) -> list[dict[str, Any]]:
    """One version with no stream details."""
    number = int(rating_key) if rating_key.isdigit() else 1
    part = {"id": number * 10 + 1, "file": f"/media/{rating_key}.mkv", "container": "mkv"}
    return [{"id": number * 10, "duration": 6_960_000, "container": "mkv", "Part": [part]}]


def _paging(req: Request, total: int) -> tuple[int, int]:
    """(start, size) from the X-Plex-Container-* headers or query; no size means all."""

    def value(name: str) -> str | None:
        return req.headers.get(name) or req.query.get(name)

    start = int(value("X-Plex-Container-Start") or 0)
    size_text = value("X-Plex-Container-Size")
    size = int(size_text) if size_text is not None else total
    return max(0, start), max(0, size)


def _xml(container: dict[str, Any]) -> Response:
    """PMS's default XML: attributes only (enough to show it is not JSON)."""
    item = container["Metadata"][0]
    tag = "Video" if item["type"] in ("movie", "episode") else "Directory"
    attrs = " ".join(
        f"{name}={quoteattr(str(value))}"
        for name, value in item.items()
        if isinstance(value, str | int)
    )
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<MediaContainer size="1"><{tag} {attrs}/>'
    body += "</MediaContainer>\n"
    return Response(200, body.encode(), {"Content-Type": "text/xml;charset=utf-8"})
