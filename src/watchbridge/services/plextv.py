"""plex.tv (the account) and Plex's discover service (the watchlist): a typed client.

Follows `reference/plex.md` §3 (other users' tokens), §5 (PIN sign-in) and §6 (watchlist).
Three hosts, all settings: `services.plex.account_url` (plex.tv: PINs, users, shared servers,
resources), `discover_url` (watchlist list/add/remove and match-by-external-id) and
`metadata_url` (item details when a watchlist entry lacks its external ids).

Tokens travel in the `X-Plex-Token` header only, never in a query string. The client identifier
must stay the same for an install forever (plex.tv binds tokens to it): callers pass the one the
store keeps. A watchlist read that fails in any way raises `WatchlistUnavailable`: an empty list
is only ever what plex.tv really answered (Plex moved this endpoint without notice in 2025 and a
404 read as "empty" would delete the other side of a two-way sync).
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from watchbridge import __version__
from watchbridge.config import PlexConfig, Secret, same_name
from watchbridge.http import HttpClient, ServiceError
from watchbridge.ingest.common import epoch, flag, integer, number, obj, text
from watchbridge.ingest.plex import metadata_ref
from watchbridge.metrics import Metrics
from watchbridge.model import Ids
from watchbridge.services.trakt import TokenStore

SERVICE = "plextv"
TOKEN_SERVICE = "plex"  # the store keeps a profile's plex.tv token under ("plex", profile)
PRODUCT = "watchbridge"
AUTH_APP_URL = "https://app.plex.tv/auth#?"
PAGE_SIZE = 100  # plexapi's page size for containers (plex.md §3)
DISCOVER_TYPES = {"movie": 1, "show": 2}


class PlexTvError(ServiceError):
    """plex.tv or the discover service refused or failed a request."""


class PlexTvAuthError(PlexTvError):
    """No plex.tv sign-in for a profile, or plex.tv no longer accepts it (401)."""


class WatchlistUnavailable(PlexTvError):
    """The watchlist could not be read: never to be taken as an empty watchlist.

    `moved` is True for a 404: the endpoint is gone from that host (as in 2025), which needs a
    human (a new `services.plex.discover_url`), not a retry.
    """

    def __init__(self, service: str, message: str, moved: bool = False) -> None:
        super().__init__(service, message)
        self.moved = moved


@dataclass(frozen=True)
class Pin:
    """A plex.tv sign-in PIN; `auth_token` is set once the person approved it."""

    id: int
    code: str
    expires_in: float | None = None  # seconds left, as plex.tv counts them
    auth_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PlexAccount:
    id: int
    uuid: str
    username: str
    title: str


@dataclass(frozen=True)
class HomeUser:
    """A member of the owner's Plex Home; `managed` users have no plex.tv login of their own."""

    id: int
    uuid: str
    title: str
    username: str
    admin: bool
    managed: bool
    protected: bool  # a PIN is needed to switch to this user


@dataclass(frozen=True)
class ServerAccess:
    """An account's token for one server, and whether the account owns it."""

    token: str = field(repr=False)
    owned: bool = False


@dataclass(frozen=True)
class ServerShare:
    """A friend's access to one server: their token for *this* server (never log it)."""

    user_id: int
    username: str
    access_token: str = field(repr=False)


@dataclass(frozen=True)
class DiscoverItem:
    """A title on Plex's discover service (a watchlist entry or a match)."""

    rating_key: str  # 24-hex id of plex://movie/<id>, not a server ratingKey
    kind: str  # "movie" | "show"
    title: str | None = None
    year: int | None = None
    guid: str | None = None
    ids: Ids = field(default_factory=Ids)
    watchlisted_at: float | None = None


def auth_url(pin: Pin, client_identifier: str) -> str:
    """Where the person approves a strong PIN (plex.md §5)."""
    query = urlencode(
        {"clientID": client_identifier, "code": pin.code, "context[device][product]": PRODUCT}
    )
    return AUTH_APP_URL + query


def discover_item(entry: Mapping[str, Any]) -> DiscoverItem | None:
    """One discover `Metadata` entry (movie or show) with the external ids of its `Guid[]`."""
    kind = text(entry.get("type"))
    key = text(entry.get("ratingKey"))
    if kind not in DISCOVER_TYPES or not key:
        return None
    ref = metadata_ref(entry, [])
    ids = ref.ids if ref is not None else Ids()
    return DiscoverItem(
        rating_key=key,
        kind=kind,
        title=text(entry.get("title")),
        year=integer(entry.get("year")),
        guid=text(entry.get("guid")),
        ids=Ids(imdb=ids.imdb, tmdb=ids.tmdb, tvdb=ids.tvdb),
        watchlisted_at=epoch(entry.get("watchlistedAt")),
    )


def container_entries(answer: Any) -> tuple[list[Mapping[str, Any]], int | None]:
    """`MediaContainer` entries (Metadata, or Video/Directory on some cloud endpoints) and
    `totalSize`; raises ValueError when the answer has no MediaContainer at all."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("MediaContainer"), Mapping):
        raise ValueError("no MediaContainer")
    container = answer["MediaContainer"]
    entries: list[Mapping[str, Any]] = []
    for name in ("Metadata", "Video", "Directory"):
        value = container.get(name)
        if isinstance(value, list):
            entries += [obj(v) for v in value]
        elif isinstance(value, Mapping):
            entries.append(value)
    return entries, integer(container.get("totalSize"))


def parse_xml(body: bytes) -> ElementTree.Element:
    """plex.tv's v1 endpoints answer XML; entity declarations are refused outright."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ValueError("XML with a DOCTYPE")
    return ElementTree.fromstring(body)


def _records(response: httpx.Response, tag: str) -> list[Mapping[str, Any]]:
    """`<tag .../>` elements of an XML answer (or JSON objects under MediaContainer.<tag>)."""
    if "json" in response.headers.get("content-type", ""):
        container = obj(obj(response.json()).get("MediaContainer"))
        value = container.get(tag)
        return [obj(v) for v in value] if isinstance(value, list) else []
    root = parse_xml(response.content)
    return [dict(el.attrib) for el in root.iter(tag)]


class PlexTvClient:
    """plex.tv and discover for every profile; each profile's plex.tv token from the store."""

    def __init__(
        self,
        config: PlexConfig,
        tokens: TokenStore,
        *,
        client_identifier: str,
        account_tokens: Mapping[str, Secret] | None = None,
        owners: Collection[str] = (),
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.client_identifier = client_identifier
        self.account_tokens = dict(account_tokens or {})
        # The profiles whose account token is the owner's services.plex.token (`plex: {}`).
        self.owners = frozenset(owners)
        self.clock = clock
        self.sleep = sleep
        self.http = HttpClient(
            SERVICE,
            config.account_url,
            metrics=metrics,
            clock=clock,
            headers={
                "accept": "application/json",
                "x-plex-client-identifier": client_identifier,
                "x-plex-product": PRODUCT,
                "x-plex-version": __version__,
                "x-plex-platform": "Python",
                "x-plex-device-name": PRODUCT,
            },
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def requests_sent(self) -> int:
        return self.http.requests_sent

    # ------------------------------------------------------------------ sign-in (§5)

    async def create_pin(self) -> Pin:
        response = await self.http.request(
            "POST", "/api/v2/pins", params={"strong": "true"}, idempotent=True
        )
        if response.status_code not in (200, 201):
            raise PlexTvError(SERVICE, f"creating a sign-in PIN answered {response.status_code}")
        return self._pin(response)

    async def check_pin(self, pin_id: int) -> Pin:
        response = await self.http.request("GET", f"/api/v2/pins/{pin_id}")
        if response.status_code == 404:
            raise PlexTvAuthError(
                SERVICE, "plex.tv no longer knows this sign-in PIN: run the sign-in again"
            )
        if response.status_code >= 400:
            raise PlexTvError(SERVICE, f"checking the sign-in PIN answered {response.status_code}")
        return self._pin(response)

    def _pin(self, response: httpx.Response) -> Pin:
        try:
            data = obj(response.json())
            return Pin(
                id=int(str(data["id"])),
                code=str(data["code"]),
                expires_in=number(data.get("expiresIn")),
                auth_token=text(data.get("authToken")),
            )
        except (ValueError, KeyError, TypeError):
            raise PlexTvError(SERVICE, "plex.tv answered the PIN request unreadably") from None

    async def sign_in(
        self,
        profile: str,
        show: Callable[[Pin, str], None],
        *,
        interval: float = 1.0,
        timeout: float = 1800.0,
    ) -> PlexAccount:
        """The PIN flow: show the link, poll about once a second, store the token, check it."""
        pin = await self.create_pin()
        show(pin, auth_url(pin, self.client_identifier))
        deadline = self.clock() + min(timeout, pin.expires_in or timeout)
        while self.clock() < deadline:
            await self.sleep(interval)
            pin = await self.check_pin(pin.id)
            if pin.auth_token:
                account = await self.account(pin.auth_token)
                # Not "account_id": that is the server-local id (the owner is 1 there).
                data = {
                    "token": pin.auth_token,
                    "plextv_id": account.id,
                    "username": account.username,
                }
                self.tokens.put_token(TOKEN_SERVICE, profile, data, self.clock())
                return account
        raise PlexTvAuthError(
            SERVICE, "the sign-in code expired before it was approved: run the sign-in again"
        )

    async def sign_in_home_user(
        self, profile: str, owner_token: str, user: str, pin: str | None = None
    ) -> HomeUser:
        """Sign a profile in as a member of the owner's Plex Home (managed users have no
        plex.tv login of their own): switch to them with the owner's token, store their token."""
        wanted = same_name(user.strip())
        members = await self.home_users(owner_token)
        member = next(
            (
                m
                for m in members
                if wanted in (str(m.id), same_name(m.title), same_name(m.username)) and not m.admin
            ),
            None,
        )
        if member is None:
            names = ", ".join(m.title for m in members if not m.admin) or "none"
            raise PlexTvError(SERVICE, f"no Plex Home user {user!r} (home users: {names})")
        token = await self.switch_home_user(owner_token, member.id, pin)
        data = {"token": token, "plextv_id": member.id, "username": member.title}
        self.tokens.put_token(TOKEN_SERVICE, profile, data, self.clock())
        return member

    def account_token(self, profile: str) -> str:
        """The profile's plex.tv token: the one `watchbridge auth plex` stored, else the one
        the config gives (`account_tokens`: `accounts.plex.token`, which serves here only when
        it is a plex.tv token, or the owner's `services.plex.token`)."""
        stored = self.tokens.get_token(TOKEN_SERVICE, profile)
        if stored and stored.get("token"):
            return str(stored["token"])
        if profile in self.account_tokens:
            return self.account_tokens[profile].reveal()
        raise PlexTvAuthError(
            SERVICE,
            f"profile {profile} is not signed in to plex.tv: "
            f"run `watchbridge auth plex --profile {profile}`",
        )

    # ------------------------------------------------------------------ account and users (§3)

    async def _get(
        self, path: str, token: str, *, base_url: str | None = None, what: str = ""
    ) -> httpx.Response:
        response = await self.http.request(
            "GET", path, headers={"x-plex-token": token}, base_url=base_url
        )
        self._check_auth(response, what or path)
        return response

    def _check_auth(self, response: httpx.Response, what: str, profile: str = "") -> None:
        if response.status_code != 401:
            return
        if not profile:
            raise PlexTvAuthError(
                SERVICE,
                f"plex.tv does not accept the token ({what} answered 401): sign in again with "
                "`watchbridge auth plex`",
            )
        auth = f"`watchbridge auth plex --profile {profile}`"
        refused = f"plex.tv does not accept profile {profile}'s token ({what} answered 401)"
        if (self.tokens.get_token(TOKEN_SERVICE, profile) or {}).get("token"):
            raise PlexTvAuthError(SERVICE, f"{refused}: sign in with {auth}")
        if profile in self.owners:  # not signed in, `plex: {}`: the config's key is the owner's
            raise PlexTvAuthError(
                SERVICE,
                f"{refused}: it is services.plex.token, the server owner's (profile {profile} "
                "has `plex: {}`), which may be a token for the Plex server alone: sign in with "
                f"{auth} as the server owner, or put the owner's current token in "
                "services.plex.token",
            )
        raise PlexTvAuthError(
            SERVICE,
            f"{refused} (profiles.{profile}.accounts.plex.token may be a token for the Plex "
            f"server: those do not work on plex.tv): sign in with {auth}",
        )

    async def account(self, token: str) -> PlexAccount:
        """Who this token belongs to (`/api/v2/user`)."""
        response = await self._get("/api/v2/user", token, what="reading the account")
        if response.status_code >= 400:
            raise PlexTvError(SERVICE, f"reading the account answered {response.status_code}")
        data = obj(response.json())
        return PlexAccount(
            id=integer(data.get("id")) or 0,
            uuid=text(data.get("uuid")) or "",
            username=text(data.get("username")) or "",
            title=text(data.get("title")) or text(data.get("username")) or "",
        )

    async def home_users(self, token: str) -> list[HomeUser]:
        """The owner's Plex Home members (admin, managed and invited home users)."""
        response = await self._get("/api/home/users", token, what="listing home users")
        if response.status_code >= 400:
            raise PlexTvError(
                SERVICE,
                f"listing home users answered {response.status_code} (limited tokens cannot)",
            )
        return [
            HomeUser(
                id=integer(u.get("id")) or 0,
                uuid=text(u.get("uuid")) or "",
                title=text(u.get("title")) or "",
                username=text(u.get("username")) or "",
                admin=bool(flag(u.get("admin"))),
                managed=bool(flag(u.get("restricted"))),
                protected=bool(flag(u.get("protected"))),
            )
            for u in _records(response, "User")
        ]

    async def switch_home_user(self, token: str, user_id: int, pin: str | None = None) -> str:
        """A home user's own plex.tv token, via the owner's token (`.../switch`)."""
        params = {"pin": pin} if pin else None
        response = await self.http.request(
            "POST",
            f"/api/home/users/{user_id}/switch",
            params=params,
            headers={"x-plex-token": token},
            idempotent=True,
        )
        self._check_auth(response, "switching home user")
        if response.status_code >= 400:
            raise PlexTvError(
                SERVICE,
                f"switching to home user {user_id} answered {response.status_code}"
                + (" (a PIN is needed)" if response.status_code == 403 and not pin else ""),
            )
        if "json" in response.headers.get("content-type", ""):
            data = obj(response.json())
        else:
            data = dict(parse_xml(response.content).attrib)
        found = text(data.get("authenticationToken")) or text(data.get("authToken"))
        if not found:
            raise PlexTvError(SERVICE, f"switching to home user {user_id} gave no token")
        return found

    async def shared_servers(self, owner_token: str, machine_id: str) -> list[ServerShare]:
        """Friends' access to this server, each with their token for it (owner token only)."""
        response = await self._get(
            f"/api/servers/{quote(machine_id, safe='')}/shared_servers",
            owner_token,
            what="listing shared servers",
        )
        if response.status_code >= 400:
            raise PlexTvError(SERVICE, f"listing shared servers answered {response.status_code}")
        return [
            ServerShare(
                user_id=integer(s.get("userID")) or 0,
                username=text(s.get("username")) or "",
                access_token=text(s.get("accessToken")) or "",
            )
            for s in _records(response, "SharedServer")
            if text(s.get("accessToken"))
        ]

    async def server_access(self, token: str, machine_id: str) -> ServerAccess | None:
        """The token this account uses for one server (`/api/v2/resources`), None if none."""
        response = await self.http.request(
            "GET",
            "/api/v2/resources",
            params={"includeHttps": "1", "includeRelay": "1"},
            headers={"x-plex-token": token},
        )
        self._check_auth(response, "listing resources")
        if response.status_code >= 400:
            raise PlexTvError(SERVICE, f"listing resources answered {response.status_code}")
        for resource in response.json() or []:
            resource = obj(resource)
            found = text(resource.get("accessToken"))
            if text(resource.get("clientIdentifier")) == machine_id and found:
                return ServerAccess(found, resource.get("owned") in (True, 1, "1", "true"))
        return None

    async def server_token_for(self, owner_token: str, machine_id: str, user: str) -> str:
        """Another person's token for this server, by plex.tv user id or name.

        A friend's comes from the owner's shared-servers list; a home user's from switching to
        them and asking plex.tv for their resources.
        """
        wanted = same_name(user.strip())

        def named(user_id: int, *names: str) -> bool:
            return wanted == str(user_id) or wanted in {same_name(n) for n in names if n}

        for share in await self.shared_servers(owner_token, machine_id):
            if named(share.user_id, share.username):
                return share.access_token
        for member in await self.home_users(owner_token):
            if named(member.id, member.username, member.title) and not member.admin:
                own = await self.switch_home_user(owner_token, member.id)
                # Their switch token is a plex.tv token, not one for this server (§3).
                found = await self.server_access(own, machine_id)
                if found:
                    return found.token
                break
        raise PlexTvError(
            SERVICE,
            f"Plex user {user!r} has no access to server {machine_id} (neither a friend the "
            "server is shared with nor a home user)",
        )

    # ------------------------------------------------------------------ watchlist (§6)

    async def watchlist(self, profile: str) -> list[DiscoverItem]:
        """Every movie and show on the profile's watchlist, page by page.

        Raises WatchlistUnavailable for any answer that is not a complete, readable list.
        """
        token = self.account_token(profile)
        host = self.config.discover_url
        items: list[DiscoverItem] = []
        start = 0
        while True:
            try:
                response = await self.http.request(
                    "GET",
                    "/library/sections/watchlist/all",
                    params={"includeCollections": "1", "includeExternalMedia": "1"},
                    headers={
                        "x-plex-token": token,
                        "x-plex-container-start": str(start),
                        "x-plex-container-size": str(PAGE_SIZE),
                    },
                    base_url=host,
                )
            except ServiceError as exc:
                raise WatchlistUnavailable(
                    SERVICE, f"the Plex watchlist could not be read ({exc.message})"
                ) from exc
            self._check_auth(response, "reading the watchlist", profile)
            status = response.status_code
            if status == 404:
                raise WatchlistUnavailable(
                    SERVICE,
                    f"the Plex watchlist answered 404 at {_host(host)}: Plex has moved this "
                    "endpoint before (2025); check services.plex.discover_url. Nothing was "
                    "changed on either watchlist",
                    moved=True,
                )
            if status >= 400:
                raise WatchlistUnavailable(
                    SERVICE, f"the Plex watchlist answered {status} at {_host(host)}"
                )
            try:
                entries, total = container_entries(response.json())
            except ValueError:
                raise WatchlistUnavailable(
                    SERVICE, f"the Plex watchlist at {_host(host)} gave no readable list"
                ) from None
            items += [item for e in entries if (item := discover_item(e)) is not None]
            start += len(entries)
            if total is None or start >= total:
                return items
            if not entries:
                raise WatchlistUnavailable(
                    SERVICE,
                    f"the Plex watchlist ended after {start} of {total} entries: read again later",
                )

    async def add_to_watchlist(self, profile: str, rating_key: str) -> None:
        await self._watchlist_action(profile, "addToWatchlist", rating_key)

    async def remove_from_watchlist(self, profile: str, rating_key: str) -> bool:
        """False when discover does not know the title (so it is on no watchlist)."""
        return await self._watchlist_action(profile, "removeFromWatchlist", rating_key)

    async def _watchlist_action(self, profile: str, action: str, rating_key: str) -> bool:
        response = await self.http.request(
            "PUT",
            f"/actions/{action}",
            params={"ratingKey": rating_key},
            headers={"x-plex-token": self.account_token(profile)},
            base_url=self.config.discover_url,
        )
        self._check_auth(response, action, profile)
        if response.status_code == 404 and action == "removeFromWatchlist":
            return False
        if response.status_code >= 400:
            raise PlexTvError(SERVICE, f"{action} {rating_key} answered {response.status_code}")
        return True

    async def match(self, profile: str, kind: str, ids: Ids) -> DiscoverItem | None:
        """The discover title for external ids (TMDB, then IMDb, then TVDB); None if unknown."""
        token = self.account_token(profile)
        for scheme in ("tmdb", "imdb", "tvdb"):
            value = getattr(ids, scheme)
            if not value:
                continue
            response = await self.http.request(
                "GET",
                "/library/metadata/matches",
                params={"type": str(DISCOVER_TYPES[kind]), "guid": f"{scheme}://{value}"},
                headers={"x-plex-token": token},
                base_url=self.config.discover_url,
            )
            self._check_auth(response, "matching a title", profile)
            if response.status_code == 404:
                continue
            if response.status_code >= 400:
                raise PlexTvError(
                    SERVICE, f"matching {scheme}://{value} answered {response.status_code}"
                )
            try:
                entries, _ = container_entries(response.json())
            except ValueError:
                continue
            for entry in entries:
                found = discover_item(entry)
                if found is not None and found.kind == kind:
                    return found
        return None

    async def details(self, profile: str, rating_key: str) -> DiscoverItem | None:
        """One title with its external ids, from the metadata host (None when unknown)."""
        response = await self.http.request(
            "GET",
            f"/library/metadata/{quote(rating_key, safe='')}",
            headers={"x-plex-token": self.account_token(profile)},
            base_url=self.config.metadata_url,
        )
        self._check_auth(response, "reading a title", profile)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise PlexTvError(
                SERVICE, f"reading title {rating_key} answered {response.status_code}"
            )
        try:
            entries, _ = container_entries(response.json())
        except ValueError:
            return None
        return next((i for e in entries if (i := discover_item(e)) is not None), None)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
