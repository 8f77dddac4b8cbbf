"""Plex Media Server: a typed client with its own errors, for reading library items.

Only what enrichment needs: `GET /library/metadata/{ratingKey}` with the token in the
`X-Plex-Token` header (never in the query string, where it would land in logs) and
`Accept: application/json` (PMS answers XML otherwise). The answer's Metadata has the same shape
as a webhook's, so its guids are read by the webhook parser (`watchbridge.ingest.plex`): one
place parses Plex guids. Every request goes through the shared HTTP policy (`watchbridge.http`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from watchbridge import __version__
from watchbridge.config import PlexConfig
from watchbridge.errors import ConfigError
from watchbridge.http import HttpClient, ServiceError
from watchbridge.ingest.common import obj, text
from watchbridge.ingest.plex import metadata_ref
from watchbridge.logs import Redactor
from watchbridge.metrics import Metrics
from watchbridge.model import Ids

SERVICE = "plex"
PRODUCT = "watchbridge"


class PlexError(ServiceError):
    """The Plex server refused or failed a request."""


class PlexAuthError(PlexError):
    """The server does not accept the token (401): a new token is needed."""


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
        self.http = HttpClient(
            SERVICE,
            config.url,
            metrics=metrics,
            clock=clock,
            headers=headers,
            redactor=Redactor([token] if token else []),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

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
            raise PlexAuthError(
                SERVICE,
                "the Plex server does not accept the token (401): set a current "
                "services.plex.token (short-lived plex.tv JWTs expire after 7 days)",
            )
        if status == 404:
            return None
        if status >= 400:
            raise PlexError(SERVICE, f"reading item {key} answered {status}")
        try:
            answer = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "?")
            raise PlexError(SERVICE, f"reading item {key} gave no JSON ({kind})") from None
        return item_from_metadata(key, first_metadata(answer))
