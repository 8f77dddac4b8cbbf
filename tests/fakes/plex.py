"""Stateful fake of a Plex Media Server's library metadata endpoint.

Follows ``shared/reference/plex.md`` §2-3: ``GET /library/metadata/{ratingKey}`` answers
``{"MediaContainer": {"size": 1, ..., "Metadata": [item]}}`` where the item has the webhook
Metadata shape (``ratingKey`` as a string, ``guid``, ``Guid: [{"id": "imdb://..."}]``, and for
episodes ``parentIndex``/``index``/``grandparentRatingKey``/``grandparentGuid``).

Every request passes, in this order:

1. Token: ``X-Plex-Token`` header (or query parameter, which PMS also accepts) missing or not
   ``fake.token`` -> ``401`` with PMS's HTML body. ``fake.token = None`` serves without one.
2. ``Accept`` without ``application/json`` -> the answer as XML (PMS's default), which a JSON
   client cannot read.
3. Unknown ratingKey -> ``404`` (HTML body, as PMS).

SILENT: PMS's exact 404 body for a missing item; an HTML page is assumed.
"""

from __future__ import annotations

import copy
from typing import Any
from xml.sax.saxutils import quoteattr

from .base import FakeServer, Request, Response, html_response, json_response, route

TOKEN = "fAkE-pLeX-tOkEn-9q8w7e6r"
SECTION_MOVIES = (1, "Movies", "movie")
SECTION_SHOWS = (2, "TV Shows", "show")
UNAUTHORIZED = (
    "<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>"
)
NOT_FOUND = "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>"
PLEX_HEADERS = {"X-Plex-Protocol": "1.0"}
_ADDED_AT = 1691115281


def guid_list(guids: list[str]) -> list[dict[str, str]]:
    """``["imdb://tt…", …]`` in PMS's shape: ``[{"id": "imdb://tt…"}, …]``."""
    return [{"id": guid} for guid in guids]


class FakePlex(FakeServer):
    """One PMS with movies, shows and episodes added by the test."""

    default_headers = PLEX_HEADERS

    def __init__(self, token: str | None = TOKEN) -> None:
        super().__init__()
        self.token = token
        self.items: dict[str, dict[str, Any]] = {}

    # -- catalogue ---------------------------------------------------------------------------
    def add_movie(
        self,
        rating_key: str,
        title: str,
        year: int | None,
        guids: list[str] | None = None,
        *,
        guid: str | None = None,
    ) -> dict[str, Any]:
        """A movie; ``guids`` become ``Guid[]`` (left out when empty, as for legacy agents)."""
        item = self._base(rating_key, "movie", title, guid, guids, SECTION_MOVIES)
        item["year"] = year
        item["duration"] = 6_960_000
        item["Media"] = [{"id": int(rating_key) * 10, "duration": 6_960_000, "container": "mkv"}]
        self.items[rating_key] = item
        return item

    def add_show(
        self,
        rating_key: str,
        title: str,
        year: int | None = None,
        guids: list[str] | None = None,
        *,
        guid: str | None = None,
    ) -> dict[str, Any]:
        item = self._base(rating_key, "show", title, guid, guids, SECTION_SHOWS)
        item["key"] = f"/library/metadata/{rating_key}/children"
        item["year"] = year
        item["childCount"] = 1
        item["leafCount"] = 0
        self.items[rating_key] = item
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
    ) -> dict[str, Any]:
        """An episode of an added show (its title and guid become the ``grandparent*`` fields)."""
        show = self.items.get(show_key, {})
        season_key = f"{show_key}{season:03d}"
        item = self._base(
            rating_key,
            "episode",
            title or f"Episode {number}",
            guid,
            guids,
            SECTION_SHOWS,
        )
        item |= {
            "parentRatingKey": season_key,
            "grandparentRatingKey": show_key,
            "parentGuid": f"plex://season/{season_key:0>24}",
            "grandparentGuid": show.get("guid", f"plex://show/{show_key:0>24}"),
            "parentKey": f"/library/metadata/{season_key}",
            "grandparentKey": f"/library/metadata/{show_key}",
            "parentTitle": f"Season {season}",
            "grandparentTitle": show.get("title"),
            "parentIndex": season,
            "index": number,
            "duration": 1_500_000,
        }
        if show:
            show["leafCount"] += 1
        self.items[rating_key] = item
        return item

    @staticmethod
    def _base(
        rating_key: str,
        kind: str,
        title: str,
        guid: str | None,
        guids: list[str] | None,
        section: tuple[int, str, str],
    ) -> dict[str, Any]:
        section_id, section_title, _ = section
        item: dict[str, Any] = {
            "ratingKey": rating_key,
            "key": f"/library/metadata/{rating_key}",
            "guid": guid or f"plex://{kind}/{rating_key:0>24}",
            "type": kind,
            "title": title,
            "librarySectionTitle": section_title,
            "librarySectionID": section_id,
            "librarySectionKey": f"/library/sections/{section_id}",
            "addedAt": _ADDED_AT,
            "updatedAt": _ADDED_AT + 3600,
        }
        if guids:
            item["Guid"] = guid_list(guids)
        return item

    # -- routes ------------------------------------------------------------------------------
    @route("GET", "/library/metadata/{key}")
    def metadata(self, req: Request) -> Response:
        denied = self._auth(req)
        if denied is not None:
            return denied
        item = self.items.get(req.params["key"])
        if item is None:
            return html_response(NOT_FOUND, 404)
        _, section_title, section_type = (
            SECTION_MOVIES if item["type"] == "movie" else SECTION_SHOWS
        )
        container = {
            "size": 1,
            "allowSync": True,
            "identifier": "com.plexapp.plugins.library",
            "librarySectionID": item["librarySectionID"],
            "librarySectionTitle": section_title,
            "librarySectionUUID": f"{section_type}-0000-4000-8000-000000000000",
            "mediaTagPrefix": "/system/bundle/media/flags/",
            "mediaTagVersion": 1700000000,
            "Metadata": [copy.deepcopy(item)],
        }
        if "application/json" not in req.headers.get("accept", ""):
            return _xml(container)
        return json_response({"MediaContainer": container})

    def _auth(self, req: Request) -> Response | None:
        if self.token is None:
            return None
        sent = req.headers.get("x-plex-token") or req.query.get("X-Plex-Token")
        if sent != self.token:
            return html_response(UNAUTHORIZED, 401)
        return None


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
