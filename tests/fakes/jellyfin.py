"""A stateful fake Jellyfin or Emby server: series with provider ids, read with an API key.

What watchbridge asks of it (reference jellyfin-emby-tautulli.md §2-§3):
- Jellyfin: ``GET /Items/{id}`` → the item DTO; ``GET /Items?ids=…`` too. The key goes in
  ``Authorization: MediaBrowser Token="<key>"``; the legacy ``X-Emby-Token`` header and the
  ``api_key`` query are refused like a Jellyfin 12 server with legacy authorization off
  (``legacy_auth=True`` accepts them, like 10.11).
- Emby: ``GET /Items?Ids=…&Fields=ProviderIds`` → ``{"Items": [...], "TotalRecordCount"}``,
  with the key in ``X-Emby-Token`` (or the ``api_key`` query). Emby has no ``/Items/{id}``.

A missing or wrong key is a 401 with an empty body, as both servers answer. Failures beyond that
come from the base knobs (``fail_next(1, 503)``, ``drop_next``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
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

    @route("GET", "/Items")
    def query(self, req: Request) -> Response:
        if not self._authorized(req):
            return Response(401)
        query = {k.lower(): v for k, v in req.query.items()}
        wanted = [i for i in query.get("ids", "").split(",") if i]
        fields = {f.lower() for f in query.get("fields", "").split(",") if f}
        found = [self._dto(self.items[i], fields) for i in wanted if i in self.items]
        return json_response({"Items": found, "TotalRecordCount": len(found)})

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
