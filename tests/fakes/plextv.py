"""Stateful fake of plex.tv (account, PINs, users, shared servers) and Plex's discover service.

Follows ``shared/reference/plex.md`` §3 (other users' tokens), §5 (PIN flow) and §6 (watchlist).
One instance serves all three hosts: point ``services.plex.account_url``, ``discover_url`` and
``metadata_url`` at ``fake.url``.

Every request passes, in this order:

1. ``X-Plex-Client-Identifier`` missing -> ``400`` (plex.tv binds PINs and tokens to it).
2. Routes other than the PIN routes: ``X-Plex-Token`` header (or query parameter) unknown ->
   ``401``.
3. The handler. v2 and discover routes answer JSON; the v1 routes (``/api/home/users``,
   ``.../switch``, ``/api/servers/{id}/shared_servers``) answer XML as plexapi sees them.

Failure modes: ``watchlist_moved = True`` answers the watchlist listing with the 2025 ``404
"Section 'watchlist' not found!"``; ``watchlist_guids = False`` leaves ``Guid[]`` out of
watchlist entries (clients must read the title's details); the base knobs for anything else.

SILENT: the exact 404 bodies, the JSON shapes of v1 routes (XML only here), how an expired
PIN answers (404), and that ``matches`` answers an empty container for unknown ids.
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from .base import FakeServer, Request, Response, json_response, route

XML_TYPE = "application/xml; charset=utf-8"
TYPES = {"movie": 1, "show": 2}


@dataclass(eq=False)
class Account:
    id: int
    uuid: str
    username: str
    title: str
    token: str
    admin: bool = False  # the Plex Home owner
    home: bool = False  # a member of the owner's Plex Home
    managed: bool = False  # a managed home user (no plex.tv login of their own)
    pin: str | None = None  # protected home users need it to switch
    watchlist: dict[str, float] = field(default_factory=dict)  # rating key -> watchlistedAt


@dataclass(eq=False)
class Title:
    rating_key: str  # 24 hex, as plex://movie/<id>
    kind: str
    title: str
    year: int | None
    guids: list[str]

    def to_json(self, *, with_guids: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ratingKey": self.rating_key,
            "key": f"/library/metadata/{self.rating_key}",
            "guid": f"plex://{self.kind}/{self.rating_key}",
            "type": self.kind,
            "title": self.title,
            "year": self.year,
        }
        if with_guids:
            data["Guid"] = [{"id": g} for g in self.guids]
        return data


@dataclass(eq=False)
class Pin:
    id: int
    code: str
    client_identifier: str
    created: float
    expires_in: int
    account: Account | None = None


@dataclass(eq=False)
class Server:
    machine_id: str
    name: str
    owner: Account
    shares: dict[int, str] = field(default_factory=dict)  # friend's user id -> access token
    home_tokens: dict[int, str] = field(default_factory=dict)  # home user id -> access token

    def token_of(self, account: Account) -> str | None:
        """The account's current token for this server."""
        return self.shares.get(account.id) or self.home_tokens.get(account.id)


class FakePlexTv(FakeServer):
    """plex.tv + discover. Default owner account ``fake.owner`` ("alex", Plex Home admin).

    Seed: ``add_account``, ``add_title``, ``add_server``, ``share_server`` (``share_on`` for a
    ``FakePlex``: the server learns the token), ``watchlist_add``.
    Sign-in: ``approve_pin``. Inspect: ``watchlist``, ``pins`` (plus ``requests``/``calls``).
    Misbehave: ``watchlist_moved``, ``watchlist_guids``, base knobs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.watchlist_moved = False
        self.watchlist_guids = True
        self.accounts: dict[int, Account] = {}
        self.titles: dict[str, Title] = {}
        self.servers: dict[str, Server] = {}
        self.pins: dict[int, Pin] = {}
        self._next_id = 1000
        self._clock_offset = 0.0
        self.owner = self.add_account("alex", admin=True, home=True)

    # -- helpers -----------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        with self.lock:
            self._clock_offset += seconds

    def date_clock(self) -> float:
        return self.now()  # its Date header moves with `advance`, as its other times do

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_account(
        self,
        username: str,
        *,
        admin: bool = False,
        home: bool = False,
        managed: bool = False,
        pin: str | None = None,
    ) -> Account:
        with self.lock:
            account = Account(
                id=self._id() * 1000 + 23,
                uuid=secrets.token_hex(8),
                username="" if managed else username,
                title=username,
                token=secrets.token_urlsafe(15),
                admin=admin,
                home=home or managed,
                managed=managed,
                pin=pin,
            )
            self.accounts[account.id] = account
            return account

    def add_title(
        self,
        kind: str,
        title: str,
        year: int | None = None,
        guids: list[str] | None = None,
        rating_key: str | None = None,  # as in plex://show/<rating_key>
    ) -> Title:
        with self.lock:
            key = rating_key or secrets.token_hex(12)
            item = Title(key, kind, title, year, list(guids or []))
            self.titles[item.rating_key] = item
            return item

    def add_server(self, machine_id: str, name: str = "Basement") -> Server:
        with self.lock:
            server = Server(machine_id, name, self.owner)
            self.servers[machine_id] = server
            return server

    def share_server(self, machine_id: str, account: Account) -> str:
        """Share the server with ``account``; returns that account's token for it."""
        with self.lock:
            server = self.servers[machine_id]
            token = secrets.token_urlsafe(15)
            if account.home:
                server.home_tokens[account.id] = token
            else:
                server.shares[account.id] = token
            return token

    def share_on(self, plex: Any, account: Account) -> str:
        """Share a fake PMS (``FakePlex``) with ``account``, or rotate their token for it: the
        server learns the new token and forgets the old one. Returns the new token."""
        with self.lock:
            server = self.servers.get(plex.machine_id) or self.add_server(plex.machine_id)
            old = server.home_tokens.get(account.id) or server.shares.get(account.id)
        plex.users.pop(old, None)
        token = self.share_server(plex.machine_id, account)
        plex.add_user(token, account.id, account.username or account.title)
        return token

    def watchlist_add(self, account: Account, title: Title) -> None:
        with self.lock:
            account.watchlist[title.rating_key] = self.now()

    def watchlist(self, account: Account | None = None) -> list[Title]:
        with self.lock:
            return [self.titles[k] for k in (account or self.owner).watchlist]

    def approve_pin(self, pin: int | str, account: Account | None = None) -> None:
        """The person opened the link and approved the PIN (by id or code)."""
        with self.lock:
            found = next(p for p in self.pins.values() if pin in (p.id, p.code))
            found.account = account or self.owner

    # -- gate --------------------------------------------------------------------------------
    def _caller(self, req: Request) -> Account | None:
        token = req.headers.get("x-plex-token") or req.query.get("X-Plex-Token")
        return next((a for a in self.accounts.values() if a.token == token), None)

    def _gate(self, req: Request, *, token: bool = True) -> Account | Response:
        if not req.headers.get("x-plex-client-identifier"):
            return json_response(
                {"errors": [{"code": 1000, "message": "X-Plex-Client-Identifier is missing"}]}, 400
            )
        if not token:
            return self.owner
        account = self._caller(req)
        if account is None:
            return json_response(
                {"errors": [{"code": 1001, "message": "User could not be authenticated"}]}, 401
            )
        return account

    # -- PIN flow (§5) -----------------------------------------------------------------------
    def _pin_json(self, pin: Pin) -> dict[str, Any]:
        expires_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pin.created + pin.expires_in))
        return {
            "id": pin.id,
            "code": pin.code,
            "product": "watchbridge",
            "trusted": False,
            "qr": f"https://plex.tv/api/v2/pins/qr/{pin.code}",
            "clientIdentifier": pin.client_identifier,
            "expiresIn": max(0, int(pin.created + pin.expires_in - self.now())),
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pin.created)),
            "expiresAt": expires_at,
            "authToken": pin.account.token if pin.account else None,
            "newRegistration": None,
        }

    @route("POST", "/api/v2/pins")
    def create_pin(self, req: Request) -> Response:
        gate = self._gate(req, token=False)
        if isinstance(gate, Response):
            return gate
        strong = req.query.get("strong") == "true"
        alphabet = string.ascii_lowercase + string.digits
        code = "".join(secrets.choice(alphabet) for _ in range(25 if strong else 4))
        pin = Pin(
            self._id(),
            code if strong else code.upper(),
            req.headers["x-plex-client-identifier"],
            self.now(),
            1800 if strong else 900,
        )
        self.pins[pin.id] = pin
        return json_response(self._pin_json(pin), 201)

    @route("GET", "/api/v2/pins/{id}")
    def get_pin(self, req: Request) -> Response:
        gate = self._gate(req, token=False)
        if isinstance(gate, Response):
            return gate
        pin = self.pins.get(int(req.params["id"])) if req.params["id"].isdigit() else None
        # A PIN belongs to the client that made it; an expired one is gone.
        if (
            pin is None
            or pin.client_identifier != req.headers["x-plex-client-identifier"]
            or self.now() >= pin.created + pin.expires_in
        ):
            return json_response(
                {"errors": [{"code": 1020, "message": "Code not found or expired"}]}, 404
            )
        return json_response(self._pin_json(pin))

    # -- account and users (§3) --------------------------------------------------------------
    @route("GET", "/api/v2/user")
    def user(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        return json_response(
            {
                "id": account.id,
                "uuid": account.uuid,
                "username": account.username,
                "title": account.title,
                "email": f"{account.title}@example.com",
                "home": account.home,
                "restricted": account.managed,
            }
        )

    @route("GET", "/api/home/users")
    def home_users(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        if not account.home:
            return _xml('<Response code="403" status="Not a Plex Home member"/>', 403)
        members = [a for a in self.accounts.values() if a.home]
        rows = "".join(
            f'<User id={_q(a.id)} uuid={_q(a.uuid)} admin={_q(int(a.admin))} guest="0" '
            f"restricted={_q(int(a.managed))} protected={_q(int(a.pin is not None))} "
            f"title={_q(a.title)} username={_q(a.username)} />"
            for a in members
        )
        return _xml(
            f'<MediaContainer friendlyName="myPlex" size={_q(len(members))}>{rows}</MediaContainer>'
        )

    @route("POST", "/api/home/users/{id}/switch")
    def switch_user(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        target = self.accounts.get(int(req.params["id"])) if req.params["id"].isdigit() else None
        if not account.home or target is None or not target.home:
            return _xml('<Response code="404" status="User not found"/>', 404)
        if target.pin is not None and req.query.get("pin") != target.pin:
            return _xml('<Response code="403" status="PIN required"/>', 403)
        return _xml(
            f"<user id={_q(target.id)} uuid={_q(target.uuid)} title={_q(target.title)} "
            f"authenticationToken={_q(target.token)} authToken={_q(target.token)} />"
        )

    @route("GET", "/api/servers/{machine}/shared_servers")
    def shared_servers(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        server = self.servers.get(req.params["machine"])
        if server is None or server.owner is not account:
            return _xml('<Response code="401" status="Unauthorized"/>', 401)
        rows = "".join(
            f"<SharedServer id={_q(n)} username={_q(self.accounts[uid].username)} "
            f"userID={_q(uid)} accessToken={_q(token)} name={_q(server.name)} "
            f'machineIdentifier={_q(server.machine_id)} owned="0" />'
            for n, (uid, token) in enumerate(server.shares.items(), start=1)
        )
        return _xml(
            f"<MediaContainer machineIdentifier={_q(server.machine_id)} "
            f"size={_q(len(server.shares))}>{rows}</MediaContainer>"
        )

    @route("GET", "/api/v2/resources")
    def resources(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        out = []
        for server in self.servers.values():
            token = (
                account.token
                if server.owner is account
                else server.shares.get(account.id) or server.home_tokens.get(account.id)
            )
            if token:
                out.append(
                    {
                        "name": server.name,
                        "product": "Plex Media Server",
                        "provides": "server",
                        "clientIdentifier": server.machine_id,
                        "owned": server.owner is account,
                        "accessToken": token,
                        "connections": [],
                    }
                )
        return json_response(out)

    # -- discover watchlist (§6) -------------------------------------------------------------
    @route("GET", "/library/sections/watchlist/all")
    def watchlist_all(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        if self.watchlist_moved:
            return json_response(
                {"errors": [{"code": 1001, "message": "Section 'watchlist' not found!"}]}, 404
            )
        start = int(
            req.headers.get("x-plex-container-start")
            or req.query.get("X-Plex-Container-Start")
            or 0
        )
        size = int(
            req.headers.get("x-plex-container-size") or req.query.get("X-Plex-Container-Size") or 50
        )
        listed = sorted(account.watchlist.items(), key=lambda kv: kv[1], reverse=True)
        page = listed[start : start + size]
        entries = [
            {**self.titles[key].to_json(with_guids=self.watchlist_guids), "watchlistedAt": int(at)}
            for key, at in page
        ]
        return json_response(
            {
                "MediaContainer": {
                    "size": len(entries),
                    "totalSize": len(listed),
                    "offset": start,
                    "identifier": "tv.plex.provider.discover",
                    "Metadata": entries,
                }
            }
        )

    @route("PUT", "/actions/addToWatchlist")
    @route("PUT", "/actions/removeFromWatchlist")
    def watchlist_action(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        key = req.query.get("ratingKey", "")
        if key not in self.titles:
            return json_response(
                {"errors": [{"code": 1001, "message": f"MetadataItem {key} not found"}]}, 404
            )
        if req.path.endswith("addToWatchlist"):
            account.watchlist.setdefault(key, self.now())
        else:
            account.watchlist.pop(key, None)
        return Response(200)

    @route("GET", "/library/metadata/{id}")
    def metadata(self, req: Request) -> Response:
        account = self._gate(req)
        if isinstance(account, Response):
            return account
        if req.params["id"] == "matches":
            return self._matches(req)
        title = self.titles.get(req.params["id"])
        if title is None:
            return json_response({"errors": [{"code": 1001, "message": "Not found"}]}, 404)
        return json_response({"MediaContainer": {"size": 1, "Metadata": [title.to_json()]}})

    def _matches(self, req: Request) -> Response:
        kind = req.query.get("type")
        if kind not in ("1", "2"):
            return json_response({"errors": [{"code": 1000, "message": "type is required"}]}, 400)
        guid = req.query.get("guid", "")
        wanted = "movie" if kind == "1" else "show"
        found = [t.to_json() for t in self.titles.values() if t.kind == wanted and guid in t.guids]
        return json_response({"MediaContainer": {"size": len(found), "Metadata": found}})


def _q(value: object) -> str:
    return quoteattr(str(value))


def _xml(body: str, status: int = 200) -> Response:
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + body
    return Response(status, text.encode(), {"Content-Type": XML_TYPE})
