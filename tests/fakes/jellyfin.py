"""A stateful fake Jellyfin or Emby server: series with provider ids, read with an API key.

What watchbridge asks of it (reference jellyfin-emby-tautulli.md §2-§3):
- Jellyfin: ``GET /Items/{id}`` → the item DTO; ``GET /Items?ids=…`` too. The key goes in
  ``Authorization: MediaBrowser Token="<key>"``; the legacy ``X-Emby-Token`` header and the
  ``api_key`` query are refused like a Jellyfin 12 server with legacy authorization off
  (``legacy_auth=True`` accepts them, like 10.11).
- Emby: ``GET /Items?Ids=…&Fields=ProviderIds`` → ``{"Items": [...], "TotalRecordCount"}``,
  with the key in ``X-Emby-Token`` (or the ``api_key`` query). Emby has no ``/Items/{id}``.

Accounts and what they played (the catch-up, catchup.py): ``GET /Users`` → ``[{"Id", "Name"}]``;
Jellyfin ``GET /Items?userId=…`` and Emby ``GET /Users/{id}/Items`` list movies and episodes
with the account's ``UserData`` (``Played``, ``PlayCount``, ``LastPlayedDate``), filtered by
``IsPlayed`` and ``MinDateLastSavedForUser`` (user data saved at or after it), paged by
``StartIndex``/``Limit``. ``play`` does what a viewing does to them (Jellyfin's SessionManager:
the start adds one to ``PlayCount`` and dates ``LastPlayedDate``; the end sets ``Played``),
``mark_unplayed`` what "mark unplayed" does (count 0, no date). They stamp by the server's clock:
``clock`` (the test's) ``ahead`` seconds off, which its ``Date`` header tells too.

A missing or wrong key is a 401 with an empty body, as both servers answer. Failures beyond that
come from the base knobs (``fail_next(1, 503)``, ``drop_next``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from .base import FakeServer, Request, Response, json_response, route

API_KEY = "0123456789abcdef0123456789abcdef"
# The series the webhook samples (tests/fixtures/{jellyfin,emby}/*_episode*.json) name by SeriesId.
JELLYFIN_SERIES = "1f0e2d3c4b5a69788796a5b4c3d2e1f0"
EMBY_SERIES = "51801"
BREAKING_BAD_PROVIDER_IDS = {"Tmdb": "1396", "Tvdb": "81189", "Imdb": "tt0903747"}
# The `ServerId` of the webhook samples' server: a server puts its own in every item it answers.
SAMPLE_SERVER_IDS = {
    "jellyfin": "5b6f0e3a2c1d4e8f9a7b6c5d4e3f2a1b",
    "emby": "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
}
_MEDIABROWSER_TOKEN = re.compile(r'^MediaBrowser\s+.*\bToken="([^"]*)"', re.IGNORECASE)


class FakeJellyfin(FakeServer):
    """One Jellyfin (or, with ``flavour="emby"``, Emby) server holding series."""

    def __init__(
        self,
        flavour: Literal["jellyfin", "emby"] = "jellyfin",
        api_key: str = API_KEY,
        *,
        legacy_auth: bool = False,
        server_id: str | None = None,
    ) -> None:
        super().__init__()
        self.flavour = flavour
        self.server_id = server_id or SAMPLE_SERVER_IDS[flavour]
        self.api_key = api_key
        self.legacy_auth = legacy_auth
        self.items: dict[str, dict[str, Any]] = {}
        self.users: dict[str, str] = {}  # id -> name
        # (user id, item id) -> user data, with "saved" (epoch) beside the fields answered
        self.user_data: dict[tuple[str, str], dict[str, Any]] = {}
        # The server's clock: the test's (`clock`), `ahead` seconds ahead of it (behind: < 0).
        self.clock: Callable[[], float] = time.time
        self.ahead = 0.0

    def date_clock(self) -> float:
        return self.clock() + self.ahead

    @property
    def item_route(self) -> str:
        """The route watchbridge reads an item by: Jellyfin's item, Emby's items query."""
        return "/Items/{item_id}" if self.flavour == "jellyfin" else "/Items"

    # -- catalogue ---------------------------------------------------------------------------
    def add_series(self, item_id: str, name: str, **provider_ids: str) -> dict[str, Any]:
        """A series with provider ids given as ``Tmdb="1396", Tvdb="81189", Imdb="tt…"``."""
        with self.lock:
            item = {
                "Name": name,
                "Id": item_id,
                "Type": "Series",
                "IsFolder": True,
                "ProviderIds": dict(provider_ids),
            }
            self.items[item_id] = item
            return item

    def add_item(self, item_id: str, name: str, kind: str) -> dict[str, Any]:
        """Any other item (an ``Episode``, a ``Season``) without provider ids."""
        with self.lock:
            item = {"Name": name, "Id": item_id, "Type": kind, "ProviderIds": {}}
            self.items[item_id] = item
            return item

    def add_movie(self, item_id: str, name: str, year: int, **provider_ids: str) -> None:
        with self.lock:
            self.items[item_id] = {
                "Name": name,
                "Id": item_id,
                "Type": "Movie",
                "ProductionYear": year,
                "RunTimeTicks": 69_600_000_000,
                "ProviderIds": dict(provider_ids),
            }

    def add_episode(
        self, item_id: str, series_id: str, season: int, number: int, **provider_ids: str
    ) -> None:
        with self.lock:
            series = self.items.get(series_id, {})
            self.items[item_id] = {
                "Name": f"Episode {number}",
                "Id": item_id,
                "Type": "Episode",
                "SeriesId": series_id,
                "SeriesName": series.get("Name"),
                "ParentIndexNumber": season,
                "IndexNumber": number,
                "RunTimeTicks": 28_200_000_000,
                "ProviderIds": dict(provider_ids),
            }

    def add_user(self, user_id: str, name: str) -> None:
        with self.lock:
            self.users[user_id] = name

    def play(self, user_id: str, item_id: str, at: float, *, finished: bool = True) -> None:
        """A viewing that began at `at` (a start counts it and dates it, by the server's clock),
        played to the end unless `finished` is False (then the item is unplayed while it
        resumes)."""
        at += self.ahead
        with self.lock:
            data = self._data(user_id, item_id)
            data["PlayCount"] += 1
            data["LastPlayedDate"] = _iso(at)
            data["Played"] = finished
            data["saved"] = at

    def mark_played(self, user_id: str, item_id: str, at: float, *, counted: bool = False) -> None:
        """ "Mark played"; `counted`: the mark names its date (the web app's), which Jellyfin
        adds to PlayCount (BaseItem.MarkPlayed), else the count is at least one."""
        at += self.ahead
        with self.lock:
            data = self._data(user_id, item_id)
            data["PlayCount"] = max(data["PlayCount"] + int(counted), 1)
            data["LastPlayedDate"] = _iso(at)
            data["Played"] = True
            data["saved"] = at

    def mark_unplayed(self, user_id: str, item_id: str, at: float) -> None:
        at += self.ahead
        with self.lock:
            data = self._data(user_id, item_id)
            data.update(PlayCount=0, LastPlayedDate=None, Played=False, saved=at)

    def _data(self, user_id: str, item_id: str) -> dict[str, Any]:
        fresh = {"PlayCount": 0, "Played": False, "LastPlayedDate": None, "saved": 0.0}
        return self.user_data.setdefault((user_id, item_id), fresh)

    # -- auth --------------------------------------------------------------------------------
    def _key(self, req: Request) -> str | None:
        header = req.headers.get("authorization", "")
        if self.flavour == "jellyfin":
            match = _MEDIABROWSER_TOKEN.match(header)
            if match:
                return match.group(1)
            if not self.legacy_auth:
                return None
        return req.headers.get("x-emby-token") or req.query.get("api_key")

    def _authorized(self, req: Request) -> bool:
        return self._key(req) == self.api_key

    # -- routes ------------------------------------------------------------------------------
    @route("GET", "/System/Info/Public")
    def public_info(self, req: Request) -> Response:
        """Answered without a key: what clients ask to see that the server is there."""
        name = "Emby Server" if self.flavour == "emby" else "Jellyfin Server"
        return json_response({"Id": self.server_id, "ServerName": "nas", "ProductName": name})

    @route("GET", "/Items/{item_id}")
    def item(self, req: Request) -> Response:
        if self.flavour == "emby":
            return Response(404)
        if not self._authorized(req):
            return Response(401)
        found = self.items.get(req.params["item_id"])
        if found is None:
            return Response(404, b"Item not found.", {"Content-Type": "text/plain"})
        return json_response(self._dto(found, None))

    @route("GET", "/Users")
    def list_users(self, req: Request) -> Response:
        if not self._authorized(req):
            return Response(401)
        return json_response([{"Id": i, "Name": n} for i, n in self.users.items()])

    @route("GET", "/Users/{user_id}/Items")
    def user_items(self, req: Request) -> Response:
        if self.flavour == "jellyfin":  # removed in 10.9: /Items?userId= instead
            return Response(404)
        if not self._authorized(req):
            return Response(401)
        return self._listing(req.params["user_id"], {k.lower(): v for k, v in req.query.items()})

    @route("GET", "/Items")
    def query(self, req: Request) -> Response:
        if not self._authorized(req):
            return Response(401)
        query = {k.lower(): v for k, v in req.query.items()}
        if self.flavour == "jellyfin" and "userid" in query and "ids" not in query:
            return self._listing(query["userid"], query)
        wanted = [i for i in query.get("ids", "").split(",") if i]
        fields = {f.lower() for f in query.get("fields", "").split(",") if f}
        found = [self._dto(self.items[i], fields) for i in wanted if i in self.items]
        return json_response({"Items": found, "TotalRecordCount": len(found)})

    def _listing(self, user_id: str, query: dict[str, str]) -> Response:
        """An account's movies and episodes with its user data, as both servers list them; an
        account the server does not have (deleted) is a 404, as both answer."""
        if user_id not in self.users:
            return Response(404, b"User not found.", {"Content-Type": "text/plain"})
        kinds = set(query.get("includeitemtypes", "Movie,Episode").split(","))
        played = query.get("isplayed")
        since = query.get("mindatelastsavedforuser")
        floor = datetime.fromisoformat(since).timestamp() if since else None
        found = []
        for item_id, item in self.items.items():
            if item["Type"] not in kinds:
                continue
            data = self.user_data.get((user_id, item_id))
            shown = {k: v for k, v in (data or self._data_of_nobody()).items() if k != "saved"}
            if played is not None and shown["Played"] != (played.lower() == "true"):
                continue
            if floor is not None and (data is None or data["saved"] < floor):
                continue
            found.append({**self._dto(item, None), "UserData": shown})
        start, limit = int(query.get("startindex", 0)), int(query.get("limit", 10_000))
        page = found[start : start + limit]
        return json_response({"Items": page, "TotalRecordCount": len(found)})

    @staticmethod
    def _data_of_nobody() -> dict[str, Any]:
        return {"PlayCount": 0, "Played": False, "LastPlayedDate": None}

    def _dto(self, item: dict[str, Any], fields: set[str] | None) -> dict[str, Any]:
        """The item as the server answers it; Emby's queries list ProviderIds only when
        asked for them in ``Fields``."""
        dto = {**item, "ServerId": self.server_id}
        if fields is not None and self.flavour == "emby" and "providerids" not in fields:
            dto.pop("ProviderIds", None)
        return dto


def sample_server(
    start_fake: Callable[[FakeServer], FakeServer], flavour: Literal["jellyfin", "emby"]
) -> FakeJellyfin:
    """A started server of this flavour holding the series its webhook samples name, identified
    (Breaking Bad with its TMDB, TVDB and IMDb ids)."""
    fake = FakeJellyfin(flavour)
    start_fake(fake)
    series = JELLYFIN_SERIES if flavour == "jellyfin" else EMBY_SERIES
    fake.add_series(series, "Breaking Bad", **BREAKING_BAD_PROVIDER_IDS)
    return fake


def _iso(at: float) -> str:
    """A time as both servers write it: UTC with seven fractional digits."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
