"""Jellyfin and Emby servers: a typed client for the read webhook enrichment needs, a series' ids.

Both servers' webhooks name an episode by the **episode's** provider ids only; the show's
TMDB/TVDB/IMDb ids (what Serializd, AniList and Trakt's show + numbers need) are on the series
item, which the webhook names by `SeriesId` (reference jellyfin-emby-tautulli.md §1-§3):

- Jellyfin: `GET /Items/{SeriesId}` (userId is optional since 10.9) with
  `Authorization: MediaBrowser Token="<api key>"`. Only that header: Jellyfin 12 turns the
  legacy `X-Emby-Token`/`api_key` forms off by default, and `Device` fields would rewrite a
  token's device record.
- Emby: `GET /Items?Ids=<SeriesId>&Fields=ProviderIds` with `X-Emby-Token: <api key>`.

Both answer `ProviderIds` as `{"Tmdb": "1396", "Tvdb": "81189", "Imdb": "tt0903747", …}`
(strings). The key is sent in a header only and redacted from logs and errors; every request
goes through the shared HTTP policy (`watchbridge.http`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from watchbridge.config import EmbyConfig, JellyfinConfig
from watchbridge.errors import ConfigError
from watchbridge.http import HttpClient, RetryPolicy, ServiceError
from watchbridge.ingest.common import clean_id, obj, server_guid, text
from watchbridge.logs import Redactor
from watchbridge.metrics import Metrics
from watchbridge.model import Ids

Server = Literal["jellyfin", "emby"]
NAMES: dict[Server, str] = {"jellyfin": "Jellyfin", "emby": "Emby"}
# The AniDB and AniList plugins' ids too: a series they identified may carry nothing else, and
# its AniList id places TVDB-numbered episodes on the right AniList entry.
PROVIDERS = ("imdb", "tmdb", "tvdb", "anidb", "anilist")
# A local server answers fast or not at all: a webhook's delivery should not wait long on it.
RETRY = RetryPolicy(attempts=2, backoff=0.5, max_inline_wait=5.0)


class MediaServerError(ServiceError):
    """A Jellyfin or Emby server refused or failed a request."""


class MediaServerAuthError(MediaServerError):
    """The server does not accept the API key (401/403): a new key is needed, not a retry."""


@dataclass(frozen=True)
class Series:
    """A series (or a movie) as its server knows it: its own id, title and provider ids."""

    id: str
    title: str | None
    ids: Ids
    server: str | None = None  # the `ServerId` of the server that answered (a Guid, no dashes)


def provider_ids(raw: object) -> Ids:
    """`ProviderIds` (keys in any case, string values) as Ids; malformed values dropped."""
    found: dict[str, str] = {}
    for key, value in obj(raw).items():
        name = str(key).lower()
        if name in PROVIDERS and (cleaned := clean_id(name, value)) is not None:
            found[name] = cleaned
    return Ids(**found)


def series_from(answer: Mapping[str, Any], series_id: str, kind: str = "Series") -> Series | None:
    """An item DTO of `kind` (Series, Movie) as a Series; None when it is another kind."""
    found = text(answer.get("Type"))
    if found is not None and found != kind:
        return None
    return Series(
        id=text(answer.get("Id")) or series_id,
        title=text(answer.get("Name")),
        ids=provider_ids(answer.get("ProviderIds")),
        server=server_guid(answer.get("ServerId")),
    )


class MediaServerClient:
    """One Jellyfin or Emby server, read with the configured API key."""

    def __init__(
        self,
        config: JellyfinConfig | EmbyConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server: Server = "emby" if isinstance(config, EmbyConfig) else "jellyfin"
        self.name = NAMES[self.server]
        key = config.api_key.reveal() if config.api_key else ""
        if not config.url or not key:
            raise ConfigError(
                f"services.{self.server}.url and services.{self.server}.api_key are needed "
                f"to read series from {self.name}"
            )
        if self.server == "jellyfin":
            auth = {"authorization": f'MediaBrowser Token="{key}"'}
        else:
            auth = {"x-emby-token": key}
        self.http = HttpClient(
            self.server,
            config.url,
            metrics=metrics,
            clock=clock,
            headers={"accept": "application/json", **auth},
            timeout=15.0,
            retry=RETRY,
            redactor=Redactor([key]),
            transport=transport,
            setting=f"services.{self.server}.url",
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def answers(self) -> bool:
        """Whether the server answers at all (`GET /System/Info/Public`): a lookup failing to
        answer about one item while it does is that item's failure, not an outage."""
        return await self.http.answers("/System/Info/Public")

    async def series(self, series_id: str) -> Series | None:
        """The series with this server id; None when the server has no such series (404, an
        empty answer, or an item of another type).

        Raises MediaServerAuthError on 401/403, MediaServerError on other refusals, an
        unreadable answer or a 404 from a URL where the server does not answer, Unavailable
        (from the HTTP policy) when the server is down.
        """
        return await self._item(series_id, "Series")

    async def movie(self, movie_id: str) -> Series | None:
        """The movie with this server id, as `series` reads a series (a movie played before
        the server identified it has its ids only here, once identified)."""
        return await self._item(movie_id, "Movie")

    async def _item(self, item_id: str, kind: str) -> Series | None:
        key = item_id.strip()
        if not key:
            return None
        if self.server == "jellyfin":
            answer = await self._get(f"/Items/{quote(key, safe='')}", None, key)
            return None if answer is None else series_from(obj(answer), key, kind)
        params = {"Ids": key, "Fields": "ProviderIds", "Recursive": "true"}
        answer = await self._get("/Items", params, key)
        rows = obj(answer).get("Items")
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and text(row.get("Id")) == key:
                return series_from(row, key, kind)
        return None

    async def _get(self, path: str, params: Mapping[str, str] | None, key: str) -> Any:
        response = await self.http.request("GET", path, params=params)
        status = response.status_code
        if status in (401, 403):
            raise MediaServerAuthError(
                self.server,
                f"the {self.name} server does not accept services.{self.server}.api_key "
                f"({status}): create an API key in {self.name}'s dashboard (API Keys) and "
                "set it there",
            )
        if status == 404:
            if not await self.answers():
                # Not this item missing: nothing answers as a server there (a reverse proxy's
                # path left out of the URL, or added to it). Re-identifying cannot help.
                raise MediaServerError(
                    self.server,
                    f"services.{self.server}.url answers 404 where {self.name}'s API should be "
                    f"(/System/Info/Public too): set it to the address {self.name} itself "
                    "answers at, with a reverse proxy's path if it has one (e.g. "
                    f"http://host/{self.server})",
                )
            return None
        if status >= 400:
            raise MediaServerError(self.server, f"reading item {key} answered {status}")
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "?")
            raise MediaServerError(
                self.server, f"reading item {key} gave no JSON ({kind})"
            ) from None


def media_server_client(
    config: JellyfinConfig | EmbyConfig | None,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
) -> MediaServerClient | None:
    """A client when the server is configured with a URL and an API key, else None."""
    if config is None or not config.url or config.api_key is None or not config.api_key.reveal():
        return None
    return MediaServerClient(config, metrics=metrics, clock=clock)
