"""Jellyfin and Emby servers: a typed client for what webhook enrichment reads (a series' ids)
and for the catch-up of plays the webhooks missed (accounts, played items; catchup.py).

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

Behind a reverse proxy (Traefik, nginx, SWAG), a restarting server's container leaves the proxy
answering 404 or an error page for every path. So an answer a proxy could give in the server's
place (a 404, a 401/403, any other refusal, a page that is no JSON) is taken as the server's
own ("no such item", "key refused") only once `GET /System/Info/Public` (answered without a
key) names the server: a JSON object with its `Id` (the `ServerId` its items carry) and
`ServerName` or `Version`, the `Id` last seen at the URL (any, while none was). One such answer
vouches for the next minute (`watchbridge.http.Vouch`). Otherwise it is an outage
(`Unavailable`): the plays that need the server wait without spending a try. Only where no
server was seen yet and the check plainly answers as another kind of server (Plex, JSON that
is not Jellyfin's or Emby's) is the URL the fix (MediaServerError).
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
from watchbridge.http import (
    HttpClient,
    RetryPolicy,
    ServiceError,
    Unavailable,
    Vouch,
    identity_answer,
)
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
# Answered without a key by both servers: what their apps ask to find a server (its `Id`).
CHECK = "/System/Info/Public"
# Items a listing asks for at once (the first read of an account's played items pages by it).
PAGE = 500


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
        # The server at the URL (its `Id`), as the check or its items last named it, and
        # whether a check vouches for its 404s and refusals now (`_own`).
        self.vouch = Vouch(clock)
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
        """Whether the server answers as itself (`GET /System/Info/Public` naming the server
        last seen at the URL, any while none was): a lookup failing to answer about one item
        while it does is that item's failure, not an outage. Always asked (it follows a lookup
        that got no answer); a proxy's page, or another server, is no answer."""
        try:
            response = await self.http.request("GET", CHECK)
        except ServiceError:
            return False
        return self.vouch.named(server_id_of(response))

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
            return None if answer is None else self._seen(series_from(obj(answer), key, kind))
        params = {"Ids": key, "Fields": "ProviderIds", "Recursive": "true"}
        answer = await self._get("/Items", params, key)
        rows = obj(answer).get("Items")
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and text(row.get("Id")) == key:
                return self._seen(series_from(row, key, kind))
        return None

    def _seen(self, found: Series | None) -> Series | None:
        """`found`, its `ServerId` taken as the server at the URL: an item read with our key
        is the server's own answer (one reinstalled there has a new id)."""
        if found is not None and found.server:
            self.vouch.renamed(found.server)
        return found

    async def users(self) -> list[tuple[str, str]]:
        """Every account of the server as (`Id`, `Name`), the id in the form webhooks name it
        (`GET /Users`, which the API key may read). Raises as `series` does; a 404 (no such
        listing where the server answers) is a MediaServerError."""
        answer = await self._get("/Users", None, what="reading its accounts (/Users)")
        if answer is None:
            raise MediaServerError(self.server, "reading its accounts (/Users) answered 404")
        found = []
        for row in answer if isinstance(answer, list) else []:
            user = obj(row)
            user_id, name = server_guid(user.get("Id")), text(user.get("Name"))
            if user_id and name:
                found.append((user_id, name))
        return found

    async def played(self, user_id: str, since: str | None) -> list[dict[str, Any]]:
        """The account's movies and episodes with their user data: those played when `since`
        is None (a first read), else every one whose user data changed since that ISO time
        (`MinDateLastSavedForUser`: one small answer when nothing did), page by page.
        Raises as `users` does."""
        params = {
            "Recursive": "true",
            "IncludeItemTypes": "Movie,Episode",
            "Fields": "ProviderIds,PremiereDate,ProductionYear",
            "EnableUserData": "true",
            "Limit": str(PAGE),
        }
        if since is None:
            params["IsPlayed"] = "true"
        else:
            params["MinDateLastSavedForUser"] = since
        if self.server == "jellyfin":
            path, params = "/Items", {"userId": user_id, **params}
        else:  # Emby lists a user's items under the user
            path = f"/Users/{quote(user_id, safe='')}/Items"
        what = "reading played items (/Items)"
        rows: list[dict[str, Any]] = []
        while True:
            answer = await self._get(path, {**params, "StartIndex": str(len(rows))}, what=what)
            if answer is None:
                raise MediaServerError(self.server, f"{what} answered 404")
            listed = obj(answer).get("Items")
            page = (
                [row for row in listed if isinstance(row, dict)] if isinstance(listed, list) else []
            )
            rows.extend(page)
            total = obj(answer).get("TotalRecordCount")
            if len(page) < PAGE or not isinstance(total, int) or len(rows) >= total:
                return rows

    async def _get(
        self,
        path: str,
        params: Mapping[str, str] | None,
        key: str = "",
        *,
        what: str = "",
    ) -> Any:
        response = await self.http.request("GET", path, params=params)
        status = response.status_code
        what = what or f"reading item {key}"
        if status >= 400:
            await self._own(response, what)  # a proxy's page in the server's place: an outage
        if status in (401, 403):
            raise MediaServerAuthError(
                self.server,
                f"the {self.name} server does not accept services.{self.server}.api_key "
                f"({status}): create an API key in {self.name}'s dashboard (API Keys) and "
                "set it there",
            )
        if status == 404:
            return None
        if status >= 400:
            raise MediaServerError(self.server, f"{what} answered {status}")
        try:
            return response.json()
        except ValueError:
            await self._own(response, what)
            kind = response.headers.get("content-type", "?")
            raise MediaServerError(self.server, f"{what} gave no JSON ({kind})") from None

    async def _own(self, response: httpx.Response, what: str) -> None:
        """Return when `response` (a 404, a refusal, a page) is the server's own: the check
        names the server last seen at the URL (any, while none was), or did so within
        IDENTITY_VOUCHES. Else raise Unavailable: a proxy answered in the place of a server
        that is restarting or gone. MediaServerError only where no server was seen yet and
        another kind of server plainly answers: the URL is the fix."""
        if self.vouch.fresh():
            return
        said = f"{what} answered {response.status_code}"
        try:
            asked = await self.http.request("GET", CHECK)
        except Unavailable as exc:
            failed = f"{said}, and asking {CHECK} whether {self.name} said it failed"
            raise Unavailable(self.server, f"{failed}: {exc.message}", exc.retry_after) from None
        if self.vouch.named(server_id_of(asked)):
            return
        other = other_kind(asked)
        if other is not None and self.vouch.known is None:
            raise MediaServerError(
                self.server,
                f"{said}, and {CHECK} answers as {other}, not a {self.name} server: set "
                f"services.{self.server}.url to the address {self.name} itself answers at, "
                f"with a reverse proxy's path if it has one (e.g. http://host/{self.server})",
            )
        raise Unavailable(self.server, f"{said}, and {self._not_server(asked)}")

    def _not_server(self, asked: httpx.Response) -> str:
        """Why the check's answer `asked` is not this server's, for an outage."""
        found = self.vouch.not_vouched(CHECK, self.name, server_id_of(asked), asked)
        setting = f"services.{self.server}.url"
        return (
            f"{found}: not the {self.name} server answering (a reverse proxy whose {self.name} "
            f"is restarting or down, or {setting} pointing elsewhere, such as without the "
            f"proxy's path, e.g. http://host/{self.server}); nothing is taken as unknown to "
            f"{self.name}, and what waits for it goes once it answers there"
        )


def server_id_of(response: httpx.Response) -> str | None:
    """The server's `Id` a `GET /System/Info/Public` answer names when it is a Jellyfin or
    Emby server's: a 2xx JSON object with an `Id` and a `ServerName` or `Version`, the id in
    the form its items' `ServerId` take. None for anything else (a proxy's 404, a page). Pure."""
    answer = identity_answer(response)
    if not isinstance(answer, dict):
        return None
    if text(answer.get("ServerName")) is None and text(answer.get("Version")) is None:
        return None
    return server_guid(answer.get("Id"))


def other_kind(asked: httpx.Response) -> str | None:
    """What plainly answered the check in a Jellyfin or Emby server's place, when nothing a
    reverse proxy answers for a server that is down could be it: a Plex server (its headers
    on any answer), or a service answering JSON of its own; None otherwise (a 404, an error
    or login page: what a proxy says while the server restarts). Pure."""
    if "x-plex-protocol" in asked.headers:
        return "a Plex server"
    if not asked.is_success or server_id_of(asked) is not None:
        return None
    try:
        asked.json()
    except ValueError:
        return None
    return "another service (JSON without a server Id)"


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
