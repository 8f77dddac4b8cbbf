"""The one YAML file: discovery, `${VAR}` interpolation and validation into typed objects.

Validation walks the YAML node tree (not the loaded dict) so every error can name the file,
the line, the key path and what was expected, e.g.
``watchbridge.yaml:14 links.tv.services: required: the two services it keeps in sync, ...``.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import functools
import hashlib
import ipaddress
import json
import os
import re
import types
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Union, get_args, get_origin, get_type_hints

import yaml

from watchbridge.errors import ConfigError

DEFAULT_SEARCH_PATHS = (Path("/config/watchbridge.yaml"), Path("./config/watchbridge.yaml"))
# Services a link can read in full (readers.READERS); Jellyfin and Emby only send webhooks.
LINK_SERVICES = ("trakt", "serializd", "plex", "anilist")

ServiceName = Literal["trakt", "plex", "jellyfin", "emby", "serializd", "anilist"]
SYNC_SERVICES: tuple[str, ...] = ("trakt", "plex", "jellyfin", "emby", "serializd", "anilist")
DataKind = Literal["history", "ratings", "watchlist", "collection"]
TV_ONLY: frozenset[str] = frozenset({"serializd"})  # services that hold no movies
AlertKind = Literal[
    "all",
    "credentials",
    "account_limit",
    "dead_letter",
    "sync_failing",
    "webhook_rejects",
    "service_unreachable",
    "internal_error",
    "storage",
    "downtime",
    "reported_twice",
    "account_changed",
    "webhooks_stopped",
    "unlisted_account",
]


class Secret:
    """A string that never shows itself in logs, reprs or summaries; ask with `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class Duration(float):
    """Seconds, written in YAML as `90`, `30s`, `15m`, `2h` or `1d`."""

    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    _PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")

    @classmethod
    def parse(cls, text: str) -> Duration | None:
        match = cls._PATTERN.match(text)
        if not match:
            return None
        number, unit = match.groups()
        return cls(float(number) * cls._UNITS[unit or "s"])


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8765
    webhook_port: int | None = None
    webhook_secret: Secret | None = None
    # An empty token would leave the API and UI open without a word.
    api_token: Secret | None = field(
        default=None,
        metadata={"if_empty": "set it, or remove the line to leave the API and UI open"},
    )
    trusted_proxies: list[str] = field(default_factory=list)
    # With no api_token, the page and API answer these names too (rebinding.py).
    allowed_hosts: list[str] = field(default_factory=list)
    shutdown_timeout: Duration = Duration(8)
    max_webhook_bytes: int = 5 * 1024 * 1024


@dataclass(frozen=True)
class DeliveryConfig:
    max_attempts: int = 12
    max_age: Duration = Duration(7 * 86400)
    retry_after: Duration = Duration(30)
    max_backoff: Duration = Duration(6 * 3600)
    late_after: Duration = Duration(120)


@dataclass(frozen=True)
class StorageConfig:
    path: str = "/data/watchbridge.db"
    durability: Literal["full", "normal"] = "full"
    busy_timeout: Duration = Duration(5)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class AlertsConfig:
    urls: list[Secret] = field(default_factory=list)
    kinds: list[AlertKind] = field(default_factory=lambda: ["all"])
    throttle: Duration = Duration(3600)
    recovery: bool = True

    def wants(self, kind: str) -> bool:
        # `watchbridge test-alert` always sends: it is no kind to choose.
        return "all" in self.kinds or kind in self.kinds or kind == "test"


NOT_A_KEY = {"config_key": False}  # metadata of a Config field the file cannot set


def expects(text: str) -> dict[str, str]:
    """Metadata of a required field: what to write, said when the key is missing."""
    return {"expects": text}


# How long a Trakt client whose token refresh Trakt refused looks for a pair another process
# (a `watchbridge sync` beside the service) stored meanwhile: see services/trakt.py.
TRAKT_REFRESH_RACE_SECONDS = 2.0


@dataclass(frozen=True)
class TraktConfig:
    client_id: str = field(
        metadata=expects(
            "your Trakt app's client id (the app of a VIP account); without Trakt, "
            "take services.trakt out"
        )
    )
    client_secret: Secret | None = None  # deprecated by Trakt for sign-in; sent when set
    api_url: str = "https://api.trakt.tv"
    auth_url: str = "https://auth.trakt.tv"
    # Not a key of the file: what every client built from this config waits (tests shorten it).
    refresh_race_seconds: float = field(default=TRAKT_REFRESH_RACE_SECONDS, metadata=NOT_A_KEY)


@dataclass(frozen=True)
class PlexConfig:
    url: str | None = None
    token: Secret | None = None
    account_url: str = "https://plex.tv"
    discover_url: str = "https://discover.provider.plex.tv"
    metadata_url: str = "https://metadata.provider.plex.tv"
    libraries: list[str] = field(default_factory=list)  # by name; empty: every movie/show one


@dataclass(frozen=True)
class JellyfinConfig:
    url: str = field(metadata=expects("your Jellyfin server's address, e.g. http://jellyfin:8096"))
    api_key: Secret | None = None
    # Read the mapped accounts' played items to copy the plays its webhooks missed (catchup.py).
    catch_up: bool = True


@dataclass(frozen=True)
class EmbyConfig:
    url: str = field(metadata=expects("your Emby server's address, e.g. http://emby:8096"))
    api_key: Secret | None = None
    # Read the mapped accounts' played items to copy the plays its webhooks missed (catchup.py).
    catch_up: bool = True


@dataclass(frozen=True)
class SerializdConfig:
    api_url: str = "https://serializd.onrender.com"


@dataclass(frozen=True)
class AnimeMappingUrls:
    """Where each anime mapping dataset is downloaded from; "" switches one off."""

    anibridge: str | None = None
    kometa: str | None = None
    fribb: str | None = None
    animelists: str | None = None


@dataclass(frozen=True)
class AniListConfig:
    api_url: str = "https://graphql.anilist.co"
    auth_url: str = "https://anilist.co/api/v2/oauth"
    client_id: str | None = None
    client_secret: Secret | None = None
    mapping_refresh: Duration = Duration(7 * 86400)  # anime mapping datasets, see anime_data
    mapping_overrides: str | None = None  # YAML file, relative to the config file
    mapping_urls: AnimeMappingUrls = field(default_factory=AnimeMappingUrls)


@dataclass(frozen=True)
class ServicesConfig:
    trakt: TraktConfig | None = None
    plex: PlexConfig | None = None
    jellyfin: JellyfinConfig | None = None
    emby: EmbyConfig | None = None
    serializd: SerializdConfig | None = None
    anilist: AniListConfig | None = None

    def configured(self) -> list[str]:
        return [name for name in SYNC_SERVICES if getattr(self, name) is not None]


@dataclass(frozen=True)
class MediaUsers:
    """Which media-server accounts are this person: account ids or usernames."""

    plex: list[str] = field(default_factory=list)
    jellyfin: list[str] = field(default_factory=list)
    emby: list[str] = field(default_factory=list)
    tautulli: list[str] = field(default_factory=list)
    generic: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TraktAccount:
    refresh_token: Secret | None = None


@dataclass(frozen=True)
class PlexAccount:
    # An empty token would make the profile the server's owner.
    token: Secret | None = field(
        default=None,
        metadata={"if_empty": "set it, or write `plex: {}` for the server's owner"},
    )


# An empty value of these is the key missing: "required, got an empty value".
EMPTY_IS_MISSING = {"empty_is_missing": True}


@dataclass(frozen=True)
class SerializdAccount:
    """A Serializd sign-in: a token pasted from the website (`token`), or the email and
    password watchbridge logs in with (and again whenever the token it got ends)."""

    email: str | None = field(default=None, metadata=EMPTY_IS_MISSING)
    password: Secret | None = field(default=None, metadata=EMPTY_IS_MISSING)
    token: Secret | None = field(default=None, metadata=EMPTY_IS_MISSING)

    def __post_init__(self) -> None:
        # A value pasted with a space around it (`email: "alice@example.com "`) is the login
        # without it: signing in with the space, Serializd would not know the user.
        if self.email is not None:
            object.__setattr__(self, "email", self.email.strip())
        if self.token is not None:
            object.__setattr__(self, "token", Secret(serializd_token(self.token.reveal())))

    @property
    def pasted(self) -> bool:
        """Whether this sign-in is a pasted token (no password to log in again with)."""
        return self.token is not None


SERIALIZD_COOKIE = "tvproject_credentials"  # the website's sign-in cookie: its value is the token
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_=-]*")


def serializd_token(text: str) -> str:
    """The token out of what a user pasted: the token itself, `Bearer <token>` (with or
    without `Authorization:`), or the website's cookie `tvproject_credentials=<token>`, alone
    or with the other cookies of a copied Cookie header. Pure."""
    text = text.strip()
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals and name.strip().rpartition(" ")[2].casefold() == SERIALIZD_COOKIE:
            return value.strip().strip('"')
    if text.casefold().startswith("authorization:"):
        text = text.split(":", 1)[1].strip()
    if text[:7].casefold() == "bearer ":
        text = text[7:].strip()
    return text


def is_jwt(token: str) -> bool:
    """Whether `token` has a JWT's shape (three base64url parts joined by dots). Pure."""
    return _JWT.fullmatch(token) is not None


# A token of another format (Serializd may change it): one word of token characters, long
# enough not to be a cookie's name or a setting. A cookie pasted without ours is refused.
_OPAQUE = re.compile(r"[A-Za-z0-9._~+/-]{32,}={0,2}")


def looks_like_a_token(token: str) -> bool:
    """Whether `token` can be a Serializd token: a JWT (what it is today), or one word of
    token characters (only Serializd can tell a token of another format). Pure."""
    return is_jwt(token) or _OPAQUE.fullmatch(token) is not None


@dataclass(frozen=True)
class AniListAccount:
    token: Secret | None = None


@dataclass(frozen=True)
class Accounts:
    trakt: TraktAccount | None = None
    plex: PlexAccount | None = None
    serializd: SerializdAccount | None = None
    anilist: AniListAccount | None = None


@dataclass(frozen=True)
class Profile:
    default: bool = False
    completion_threshold: int = 90
    users: MediaUsers = field(default_factory=MediaUsers)
    accounts: Accounts = field(default_factory=Accounts)


@dataclass(frozen=True)
class Link:
    services: list[ServiceName] = field(
        metadata=expects("the two services it keeps in sync, e.g. [plex, anilist]")
    )
    direction: Literal["two-way", "one-way"] = "two-way"
    kinds: list[DataKind] = field(default_factory=lambda: ["history", "ratings"])
    interval: Duration = Duration(1800)
    prefer: str = "newest-wins"
    profiles: list[str] = field(default_factory=list)
    first_run: Literal["dry-run", "apply"] = "dry-run"
    max_removal_share: float = 0.10
    # collection kind: also remove from Trakt what this link added and the server lost
    collection_removals: bool = False

    @property
    def movies(self) -> bool:
        """Whether the link carries movies: both its services hold them (Serializd is TV
        only; a movie copied there would read back as removed)."""
        return not TV_ONLY.intersection(self.services)


class Listing(NamedTuple):
    """A `users` entry naming an account: the server it names (as `same_account` folds it; ""
    for any server), its profile and the entry as written."""

    server: str
    profile: str
    entry: str


def listings_of(profiles: Mapping[str, Profile]) -> dict[str, dict[str, tuple[Listing, ...]]]:
    """Each source's `users` entries by the account they name (folded as `same_account`,
    without the server), in the file's order. Pure."""
    found: dict[str, dict[str, list[Listing]]] = {}
    for source in (f.name for f in dataclasses.fields(MediaUsers)):
        by_account = found.setdefault(source, {})
        for profile_name, profile in profiles.items():
            for entry in getattr(profile.users, source):
                server, _, account = same_account(entry).rpartition(":")
                by_account.setdefault(account, []).append(Listing(server, profile_name, entry))
    return {
        source: {account: tuple(listed) for account, listed in by_account.items()}
        for source, by_account in found.items()
    }


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    profiles: dict[str, Profile] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    # Where the config came from, and the line of each key in it: no keys of the file.
    source: Path = field(default=Path("<defaults>"), metadata=NOT_A_KEY)
    lines: Mapping[str, int] = field(
        default_factory=dict, compare=False, repr=False, metadata=NOT_A_KEY
    )

    def problem(self, key: str, message: str) -> str:
        """A problem with `key`'s value, as every config error reads: file, line, key, what."""
        return f"{self.source.name}:{_line_of(self.lines, key)} {key}: {message}"

    def secrets(self) -> list[str]:
        """Every secret value in this config, for log redaction."""
        return [s.reveal() for s in _walk_secrets(self) if s]

    @functools.cached_property
    def listings(self) -> Mapping[str, Mapping[str, tuple[Listing, ...]]]:
        """Each source's `users` entries by the account they name, built once per config: every
        webhook's route looks its account up here (`account_ids.listed_twice`)."""
        return listings_of(self.profiles)

    def delivery_fingerprint(self) -> str:
        """Tells whether what deliveries depend on changed (services, profiles and their
        accounts, delivery settings), without keeping a password or key (slow to guess
        from)."""
        parts = [_plain(self.services), _plain(self.profiles), _plain(self.delivery)]
        text = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.pbkdf2_hmac("sha256", text, b"watchbridge:config", 20_000).hex()


def _plain(value: object) -> object:
    """`value` as plain data, secrets revealed (for a fingerprint only)."""
    if isinstance(value, Secret):
        return value.reveal()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # What the file sets only: a setting of the code is no change of the config.
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata != NOT_A_KEY
        }
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value  # json.dumps writes the rest (numbers, text; str() of a path)


def _walk_secrets(value: object) -> list[Secret]:
    if isinstance(value, Secret):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [s for f in dataclasses.fields(value) for s in _walk_secrets(getattr(value, f.name))]
    if isinstance(value, list):
        return [s for item in value for s in _walk_secrets(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _walk_secrets(item)]
    return []


# --------------------------------------------------------------------------- discovery


def find_config(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The config path per the contract: --config, $WATCHBRIDGE_CONFIG, /config, ./config."""
    if explicit:
        return Path(explicit)
    if environ.get("WATCHBRIDGE_CONFIG"):
        return Path(environ["WATCHBRIDGE_CONFIG"])
    for candidate in DEFAULT_SEARCH_PATHS:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(p) for p in DEFAULT_SEARCH_PATHS)
    raise ConfigError(
        f"no config file found (looked in $WATCHBRIDGE_CONFIG, {looked}); "
        "pass --config PATH or copy config/watchbridge.example.yaml"
    )


_QUOTED = re.compile(r"'[^']*'")


def _yaml_problem(problem: str, context: str, line: str = "") -> str:
    """PyYAML's complaint in words a user can act on, without the text it quotes: that text
    may be part of a password (`password: *secret` reads as an alias). `line` is the line it
    points at, to recognise what caused it."""
    said = f"{context} {problem}"
    if "flow" in context and "got '{'" in problem and "${" in line:
        # In [...] and {...}, YAML reads `${NAME}` as a `$` followed by a new mapping.
        return 'a ${NAME} inside [...] or {...} must be quoted (e.g. urls: ["${DISCORD_URL}"])'
    if "'\\t'" in said or "\t" in said:
        return "a tab character: indent and separate with spaces (YAML does not take tabs)"
    if "alias" in said or "anchor" in said:
        return 'a value starting with * or & must be quoted (e.g. password: "*secret")'
    if "escape character" in said:
        return "a backslash in a double-quoted value: use single quotes, or write \\\\"
    if "could not find expected ':'" in problem and "simple key" in context:
        return (
            "write a space after the key's colon (`port: 8765`, not `port:8765`), or make the"
            " line a list item (`- value`)"
        )
    if "mapping values are not allowed" in problem:
        return (
            'a second `: ` on one line: quote a value that holds `: ` (token: "ab: cd"), and'
            " line a key up with the keys of its section (not indented deeper than the one"
            " above it)"
        )
    if "quoted scalar" in context and "end of stream" in problem:
        return "a quote opened and never closed: close the value's quote on its own line"
    # Keep what names no value: a single character (',') or a token ('<stream end>').
    return _QUOTED.sub(lambda m: m[0] if len(m[0]) <= 3 or m[0][1] == "<" else "'...'", problem)


def _yaml_error_mark(exc: yaml.YAMLError, context: str) -> yaml.Mark | None:
    """The place to name for a YAML error: where the token or bracket that could not end
    began (PyYAML's own mark is where it gave up, often the next line or the file's end)."""
    context_mark = getattr(exc, "context_mark", None)
    if context_mark is not None and context.startswith(("while scanning", "while parsing a flow")):
        return context_mark  # type: ignore[no-any-return]
    return getattr(exc, "problem_mark", None)


_KEY_LINE = re.compile(r"([ \t]*)([A-Za-z0-9_][A-Za-z0-9_-]*) *:")


def key_path_at(lines: Sequence[str], index: int) -> str:
    """The key path of line `index` as its indentation places it, for an error YAML could not
    parse (it names no key): the line's own key, and those of the lines above it indented
    less. Keys only, never a value (it may be a password). Pure."""
    own = lines[index] if index < len(lines) else ""
    indent = len(own) - len(own.lstrip(" \t"))
    names = []
    if (match := _KEY_LINE.match(own)) is not None:
        names.append(match[2])
    for line in reversed(lines[:index]):
        match = _KEY_LINE.match(line)
        if match is not None and len(match[1]) < indent:
            names.append(match[2])
            indent = len(match[1])
    return ".".join(reversed(names))


# PyYAML's words for a line indented between two keys above it: a new block where it ends one.
_UNALIGNED = re.compile(r"expected <block end>, but found '<block (mapping|sequence) start>'")


def _lined_up_with_nothing(lines: Sequence[str], index: int) -> str | None:
    """What to do with line `index`, indented between the keys above it (deeper than its
    section's keys, shallower than the ones above it): the keys above it to line it up with,
    each with its line and indentation. None when it does line up with one. Keys only, never
    a value (it may be a password). Pure."""
    own = lines[index] if index < len(lines) else ""
    indent = len(own) - len(own.lstrip(" "))
    above: list[tuple[int, str, int]] = []  # (indentation, key, line), each shallower than the last
    for number in range(index - 1, -1, -1):
        match = _KEY_LINE.match(lines[number])
        if match is not None and (not above or len(match[1]) < above[-1][0]):
            above.append((len(match[1]), match[2], number + 1))
    if any(depth == indent for depth, _, _ in above):
        return None
    shallower = [one for one in above if one[0] < indent][:1]
    deeper = [one for one in reversed(above) if one[0] > indent][:1]
    if not shallower and not deeper:
        return None
    options = " or ".join(
        f"`{key}:` (line {line}, {_spaces(depth)})" for depth, key, line in shallower + deeper
    )
    return (
        f"this line, indented {_spaces(indent)}, lines up with no key above it: line it up"
        f" with {options}"
    )


def _spaces(count: int) -> str:
    return f"{count} space" if count == 1 else f"{count} spaces"


def load_config(path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, interpolate and validate one config file; raises ConfigError listing every problem
    of its values, or (once those are right) every broken rule spanning them (ports, URLs,
    links): the rules need the values built."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    return parse_config(_utf8_text(data, path), path, environ)


def _utf8_text(data: bytes, path: Path) -> str:
    """The file's text; a file saved in another encoding (an editor's "Unicode", which is
    UTF-16, or Windows-1252 for an accented name) is named by the line to save again."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError(
            f'{path.name}:1 (top): the file is saved as UTF-16 (an editor\'s "Unicode"):'
            " save it as UTF-8"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        index = data.count(b"\n", 0, exc.start)
        key = key_path_at(data.decode("utf-8", errors="replace").split("\n"), index) or "(top)"
        raise ConfigError(
            f"{path.name}:{index + 1} {key}: a character that is not UTF-8 (the file was saved"
            " in another encoding, such as Windows-1252): save the file as UTF-8"
        ) from None


def parse_config(text: str, path: Path, environ: Mapping[str, str] = os.environ) -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:  # no mark: its line is counted here
        index = text.count("\n", 0, exc.position)
        key = key_path_at(text.splitlines(), index) or "(top)"
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(
            f"{path.name}:{index + 1} {key}: invalid YAML: a control character "
            f"(#x{character:04x}) YAML does not allow, perhaps pasted with a password or token:"
            " delete it"
        ) from None
    except yaml.YAMLError as exc:
        lines = text.splitlines()
        problem_mark = getattr(exc, "problem_mark", None)
        context = getattr(exc, "context", None) or ""
        problem = _yaml_problem(
            getattr(exc, "problem", None) or str(exc),
            context,
            lines[problem_mark.line] if problem_mark and problem_mark.line < len(lines) else "",
        )
        mark = _yaml_error_mark(exc, context)
        if mark is not None and _UNALIGNED.match(problem):
            problem = _lined_up_with_nothing(lines, mark.line) or problem
        if mark is None:
            raise ConfigError(f"{path.name}: invalid YAML: {problem}") from None
        key = key_path_at(lines, mark.line) or "(top)"
        raise ConfigError(f"{path.name}:{mark.line + 1} {key}: invalid YAML: {problem}") from None
    validator = _Validator(path.name, environ)
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [], yaml.Mark(path.name, 0, 0, 0, "", 0))
    config: Config = validator.build(Config, root, "")
    if validator.errors:
        raise ConfigError("\n".join(validator.errors))
    # `~/watchbridge.db` is the user's home, as in their shell (not a folder named `~`).
    storage = dataclasses.replace(config.storage, path=os.path.expanduser(config.storage.path))
    config = dataclasses.replace(config, source=path, lines=validator.lines, storage=storage)
    errors = [config.problem(key, msg) for key, msg in cross_check(config)]
    if errors:
        raise ConfigError("\n".join(errors))
    return config


def targets_for(config: Config, profile: Profile) -> list[str]:
    """Which services this profile's plays go to."""
    targets = []
    if profile.accounts.trakt is not None and config.services.trakt is not None:
        targets.append("trakt")
    # A household without Trakt still gets its plays logged on Serializd (episodes only: a
    # movie's webhook queues it no row, webhooks.rows_for).
    if profile.accounts.serializd is not None and config.services.serializd is not None:
        targets.append("serializd")
    # AniList takes anime only; its target maps each play and skips the rest without a request.
    if profile.accounts.anilist is not None and config.services.anilist is not None:
        targets.append("anilist")
    return targets


def takes_webhooks(profile: Profile) -> bool:
    """Whether any media server's webhooks count as this profile's (a profile may be there
    for a link only)."""
    return profile.default or any(vars(profile.users).values())


def copied_nowhere(config: Config, profile: Profile) -> list[str]:
    """What of a profile's webhook plays no account of it is sent (Serializd holds TV
    episodes only, AniList anime only; only Trakt takes every movie): said in check-config's
    summary and on the status page, not warned of at every start (a choice, not a fault)."""
    targets = targets_for(config, profile)
    if not takes_webhooks(profile) or not targets or "trakt" in targets:
        return []
    but_anime = " other than anime" if "anilist" in targets else ""
    gaps = [] if "serializd" in targets else [f"episodes{but_anime}"]
    return [*gaps, f"movies{but_anime}"]


def profile_gone(name: str) -> str:
    """Why rows of a profile the config lacks are not sent: their dead letters' reason."""
    return f"profile {name} is no longer in the config"


def delivery_targets(config: Config) -> list[str]:
    """The services this config delivers to (each a target of the delivery worker)."""
    services = config.services
    configured = {
        "trakt": services.trakt,
        "serializd": services.serializd,
        "anilist": services.anilist,
        "plex": services.plex if services.plex is not None and services.plex.url else None,
    }
    return [name for name, service in configured.items() if service is not None]


def delivered_profiles(config: Config) -> list[tuple[str, str]]:
    """Each (target, profile) this config delivers to: a profile's rows that can go out."""
    return [
        (target, profile)
        for target in delivery_targets(config)
        for profile in config.profiles
        if undeliverable(config, target, profile) is None
    ]


def undeliverable(
    config: Config, target: str, profile_name: str, link: str | None = None, action: str = ""
) -> str | None:
    """Why rows for `profile_name` on `target` cannot go out under this config (the service,
    the profile or its account was removed; for a row a link queued, `link`, the link, or
    what it syncs), or None when they can. Plex rows come from links, which take a profile
    with `accounts.plex` only (`{}`: the server's owner): without it, the rows would go to
    the owner's Plex."""
    if target not in delivery_targets(config):
        return f"{service_title(target)} is no longer in the config (services.{target})"
    profile = config.profiles.get(profile_name)
    if profile is None:
        return profile_gone(profile_name)
    held = (
        profile.accounts.plex is not None
        if target == "plex"
        else (target in targets_for(config, profile))
    )
    if not held:
        return f"profile {profile_name} no longer has profiles.{profile_name}.accounts.{target}"
    return None if link is None else unwanted_by_link(config, link, target, profile_name, action)


LINK_KINDS = {"play": "history", "remove_play": "history"}  # the rest: ratings
KIND_WORDS = {"history": "plays"}  # a kind as a person says it (the rest: as written)


def unwanted_by_link(
    config: Config, name: str, target: str, profile_name: str, action: str
) -> str | None:
    """Why link `name` no longer asks for a row it queued (`action` of `profile_name` on
    `target`): the link was removed, or no longer syncs that service, profile or kind of
    data; None when it still does. Not its direction: `watchbridge sync --direction` may
    run a one-way link the other way."""
    link = config.links.get(name)
    if link is None:
        return f"links.{name} is no longer in the config"
    if target not in link.services:
        return f"link {name} no longer syncs {service_title(target)} (links.{name}.services)"
    if profile_name not in link_profiles(config, link):
        return f"link {name} no longer syncs profile {profile_name} (links.{name}.profiles)"
    kind = LINK_KINDS.get(action, "ratings")
    if kind not in link.kinds:
        return f"link {name} no longer syncs {KIND_WORDS.get(kind, kind)} (links.{name}.kinds)"
    return None


MIN_BUSY_TIMEOUT = 0.1  # seconds


def cross_check(config: Config) -> list[tuple[str, str]]:
    """Rules that span sections: (key path, message) for each broken one."""
    problems: list[tuple[str, str]] = []
    server = config.server
    for key, port in (("server.port", server.port), ("server.webhook_port", server.webhook_port)):
        if port is not None and not 1 <= port <= 65535:
            problems.append((key, f"expected a port between 1 and 65535, got {port}"))
    if problem := _listen_address_problem(server.host):
        problems.append(("server.host", problem))
    if server.webhook_port is not None and server.webhook_port == server.port:
        problems.append(("server.webhook_port", "must differ from server.port (or leave it out)"))
    for entry in server.trusted_proxies:
        if _network(entry) is None:
            problems.append(
                (
                    "server.trusted_proxies",
                    f"expected IP addresses or networks such as 172.30.32.2 or 172.18.0.0/16,"
                    f" got {entry!r}",
                )
            )
    for entry in server.allowed_hosts:
        if _not_a_host(entry):
            problems.append(
                (
                    "server.allowed_hosts",
                    "expected host names such as wb.example.com or *.example.com (the name "
                    f"alone: no http://, port or path), got {entry!r}",
                )
            )
    if config.storage.busy_timeout < MIN_BUSY_TIMEOUT:
        problems.append(
            (
                "storage.busy_timeout",
                f"expected at least {MIN_BUSY_TIMEOUT}s (the default is 5s): a webhook that "
                "cannot wait for a moment's lock is refused, and media servers do not send it "
                "again",
            )
        )
    defaults = [name for name, p in config.profiles.items() if p.default]
    if len(defaults) > 1:
        problems.append(
            (
                f"profiles.{defaults[1]}.default",
                f"only one profile can be the default, {defaults[0]} already is",
            )
        )
    for name, profile in config.profiles.items():
        if not 1 <= profile.completion_threshold <= 100:
            problems.append(
                (f"profiles.{name}.completion_threshold", "expected a percentage 1-100")
            )
        for service in ("trakt", "serializd", "anilist", "plex"):
            if (
                getattr(profile.accounts, service) is not None
                and getattr(config.services, service) is None
            ):
                problems.append(
                    (
                        f"profiles.{name}.accounts.{service}",
                        f"services.{service} must be configured too (or, if this profile does"
                        f" not use {SERVICE_TITLES[service]}, remove accounts.{service})",
                    )
                )
    for name, link in config.links.items():
        where = f"links.{name}"
        if len(link.services) != 2 or link.services[0] == link.services[1]:
            problems.append(
                (f"{where}.services", "expected two different services, e.g. [trakt, serializd]")
            )
            continue
        for service in link.services:
            if service not in LINK_SERVICES:
                problems.append(
                    (
                        f"{where}.services",
                        f"{service} cannot be linked yet; links take two of "
                        f"{', '.join(LINK_SERVICES)} ({service} plays still arrive by webhook)",
                    )
                )
            elif getattr(config.services, service) is None:
                problems.append(
                    (
                        f"{where}.services",
                        f"services.{service} is not configured: configure it, or remove this link",
                    )
                )
        if link.prefer not in ("newest-wins", *link.services):
            problems.append(
                (
                    f"{where}.prefer",
                    f"expected newest-wins, {link.services[0]} "
                    f"or {link.services[1]}, got {link.prefer!r}",
                )
            )
        usable = all(
            s in LINK_SERVICES and getattr(config.services, s) is not None for s in link.services
        )
        if (
            usable
            and not link.profiles
            and not any(has_accounts(p, link.services) for p in config.profiles.values())
        ):
            a, b = link.services
            problems.append(
                (
                    f"{where}.services",
                    f"no profile has both accounts.{a} and accounts.{b}: the link would have "
                    "nobody to sync",
                )
            )
        for profile_name in link.profiles:
            if profile_name not in config.profiles:
                problems.append((f"{where}.profiles", f"unknown profile {profile_name!r}"))
                continue
            accounts = config.profiles[profile_name].accounts
            for service in link.services:
                if service in LINK_SERVICES and getattr(accounts, service) is None:
                    problems.append(
                        (
                            f"{where}.profiles",
                            f"profile {profile_name} has no accounts.{service}: the link would"
                            " skip it",
                        )
                    )
        plex = config.services.plex
        reads_the_server = set(link.kinds) - {"watchlist"}  # a watchlist is plex.tv's
        if "plex" in link.services and plex is not None and not plex.url and reads_the_server:
            problems.append(
                (
                    f"{where}.services",
                    "a plex link needs services.plex.url (the server's address, e.g."
                    " http://192.168.1.10:32400) for history, ratings and collection",
                )
            )
        if link.interval < 60:
            problems.append((f"{where}.interval", "expected at least 60s"))
        if not 0 <= link.max_removal_share <= 1:
            problems.append((f"{where}.max_removal_share", "expected a share between 0 and 1"))
        problems.extend(_list_kind_problems(where, link))
    problems.extend(_shared_account_problems(config.profiles))
    problems.extend(_serializd_sign_in_problems(config.profiles))
    problems.extend(_anilist_problems(config.services.anilist))
    problems.extend(_url_problems(config.services))
    if config.server.max_webhook_bytes < 64 * 1024:
        problems.append(("server.max_webhook_bytes", "expected at least 65536 (Plex posters)"))
    problems.extend(_delivery_problems(config.delivery))
    if config.alerts.throttle < 0:
        problems.append(("alerts.throttle", "expected a duration such as 1h"))
    return problems


# The services a profile can have an account on, by the names users know them by.
SERVICE_TITLES = {"trakt": "Trakt", "serializd": "Serializd", "anilist": "AniList", "plex": "Plex"}


def service_title(service: str) -> str:
    """`service` (a config name: trakt, jellyfin, ...) as the service writes itself, for text
    a person reads (alert titles and texts)."""
    return SERVICE_TITLES.get(service) or _SERVER_TITLES.get(service, service)


_SERVER_TITLES = {
    "jellyfin": "Jellyfin",
    "emby": "Emby",
    "tautulli": "Tautulli",
    "plextv": "plex.tv",
}
# A service's config name heading what it said ("trakt: answered 503", as http.said_by put it
# before it wrote the service's own name), not part of a config key, a command or a path
# ("accounts.trakt:", "auth trakt`").
_HEADING = re.compile(rf"(?<![\w.`/-])({'|'.join(sorted({*SERVICE_TITLES, *_SERVER_TITLES}))}): ")


def services_titled(text: str) -> str:
    """`text` a release before this one stored (a dead letter's reason), quoting what services
    said, for a person to read: each service heading a part of it ("trakt: answered 503",
    "me: serializd: ...") written as the service writes itself ("Trakt: answered 503"), as
    errors are now made. A text made now is left as it is."""
    return _HEADING.sub(lambda found: f"{service_title(found[1])}: ", text)


# The links that sync each list kind, by the names the README uses for them.
LIST_KIND_LINKS: dict[str, dict[str, frozenset[str]]] = {
    "watchlist": {
        "plex-trakt": frozenset({"plex", "trakt"}),
        "trakt-serializd": frozenset({"trakt", "serializd"}),
        "plex-serializd": frozenset({"plex", "serializd"}),
    },
    "collection": {"plex-trakt": frozenset({"plex", "trakt"})},
}


def _list_kind_problems(where: str, link: Link) -> list[tuple[str, str]]:
    problems = []
    for kind, pairs in LIST_KIND_LINKS.items():
        if kind in link.kinds and frozenset(link.services) not in pairs.values():
            *others, last = pairs
            names = f"{', '.join(others)} or {last}" if others else last
            problems.append((f"{where}.kinds", f"{kind} can only be synced by a {names} link"))
    return problems


SECRET_IN_HEADER_ONLY = (
    "it holds '/', so it works only in the X-Webhook-Secret header (Jellyfin, Tautulli,"
    " curl); Plex and Emby need it in the URL: choose one without '/'"
)


def fits_in_url(secret: str) -> bool:
    """Whether a webhook secret can be part of a URL: not with a '/' (the server decodes %2F
    before it splits the path); such a secret works in the X-Webhook-Secret header only."""
    return "/" not in secret


@functools.lru_cache(maxsize=1024)  # every webhook asks, of a few names
def same_account(name: str) -> str:
    """A media-server account as webhooks match it: user names as `same_name`, Jellyfin
    and Emby ids (32 hex digits) with or without dashes; a "server:account" entry part by part.
    A name keeps its dashes: "mary-jane" is not "maryjane"."""
    return ":".join(_same_account_part(part) for part in name.split(":"))


_GUID = re.compile(r"[0-9a-f]{32}")


def same_name(name: str) -> str:
    """A person's or library's name as it is compared with a server's: without case (`casefold`:
    "STRASSE" is "straße"), and one "é" whether typed as one character or as "e" and an accent
    (macOS and iOS may send the latter). Pure."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def _same_account_part(part: str) -> str:
    folded = same_name(part)
    bare = folded.replace("-", "")
    return bare if _GUID.fullmatch(bare) else folded


def _shared_account_problems(profiles: Mapping[str, Profile]) -> list[tuple[str, str]]:
    """Each media-server account belongs to one profile: webhooks go to the first naming it."""
    problems = []
    owners: dict[tuple[str, str], str] = {}
    for name, profile in profiles.items():
        for source, entries in vars(profile.users).items():
            for entry in entries:
                owner = owners.setdefault((source, same_account(entry)), name)
                if owner != name:
                    problems.append(
                        (
                            f"profiles.{name}.users.{source}",
                            f"{source} account {entry!r} is already mapped to profile {owner}"
                            " (each account's plays go to one profile)",
                        )
                    )
    return problems + _plex_through_tautulli_problems(profiles)


def _plex_through_tautulli_problems(profiles: Mapping[str, Profile]) -> list[tuple[str, str]]:
    """Tautulli names Plex's accounts (plex.tv id, username): one listed under another
    profile's `plex` would have Plex's webhook send its plays to one person and Tautulli's to
    the other. A plain `1` is no Tautulli account (Plex's name for each server's owner), and
    entries naming two different servers may be two people (managed users of two Homes)."""
    listed_for_plex = [
        (name, entry, *_server_and_account(entry))
        for name, profile in profiles.items()
        for entry in profile.users.plex
    ]
    problems = []
    for name, profile in profiles.items():
        for entry in profile.users.tautulli:
            server, account = _server_and_account(entry)
            for owner, plex_entry, plex_server, plex_account in listed_for_plex:
                if (
                    owner != name
                    and account == plex_account != "1"
                    and (not server or not plex_server or server == plex_server)
                ):
                    problems.append(
                        (
                            f"profiles.{name}.users.tautulli",
                            f"tautulli account {entry!r} is plex account {plex_entry!r} of "
                            f"profile {owner} (Tautulli reports Plex's accounts, and each "
                            "account's plays go to one profile; two people of two servers "
                            "who share a name: write each as SERVER:ACCOUNT)",
                        )
                    )
                    break
    return problems


def _server_and_account(entry: str) -> tuple[str, str]:
    """A `users` entry as webhooks match it: its server ("" for any) and its account."""
    server, _, account = same_account(entry).rpartition(":")
    return server, account


SERIALIZD_TOKEN_WANTED = (
    "expected the token Serializd's website signs in with: the value of its cookie "
    f"{SERIALIZD_COOKIE} (it starts eyJ and has two dots), or the cookie whole "
    f"({SERIALIZD_COOKIE}=eyJ...)"
)


def _serializd_sign_in_problems(profiles: Mapping[str, Profile]) -> list[tuple[str, str]]:
    """A Serializd account signs in one way: a pasted token, or an email and password."""
    problems = []
    for name, profile in profiles.items():
        account = profile.accounts.serializd
        if account is None:
            continue
        where = f"profiles.{name}.accounts.serializd"
        login = account.email is not None or account.password is not None
        if account.token is not None and login:
            given = "email" if account.email is not None else "password"
            problems.append(
                (
                    f"{where}.token",
                    f"give either token or email and password, not both (remove token, or {given})",
                )
            )
        elif account.token is not None and not looks_like_a_token(account.token.reveal()):
            problems.append((f"{where}.token", SERIALIZD_TOKEN_WANTED))
        elif account.token is None and not login:
            problems.append(
                (
                    where,
                    "expected token (pasted from the website: the value of its cookie "
                    f"{SERIALIZD_COOKIE}), or email and password",
                )
            )
        elif account.token is None and account.email is None:
            problems.append((f"{where}.email", "required with password (or use token instead)"))
        elif account.token is None and account.password is None:
            problems.append((f"{where}.password", "required with email (or use token instead)"))
    return problems


def has_accounts(profile: Profile, services: Sequence[str]) -> bool:
    """Whether `profile` has an account on each of `services` (a link runs for it)."""
    return all(getattr(profile.accounts, service, None) is not None for service in services)


def link_profiles(config: Config, link: Link) -> list[str]:
    """The profiles a link applies to: those named, else every one with both accounts."""
    names = link.profiles or list(config.profiles)
    return [name for name in names if has_accounts(config.profiles[name], link.services)]


def _delivery_problems(delivery: DeliveryConfig) -> list[tuple[str, str]]:
    """Waits short enough to hammer a service that is down, or to give up at once."""
    problems = []
    if delivery.max_attempts < 1:
        problems.append(("delivery.max_attempts", "expected at least 1"))
    if delivery.retry_after < 1:
        problems.append(("delivery.retry_after", "expected at least 1s (e.g. 30s)"))
    if delivery.max_backoff < max(delivery.retry_after, 60):
        problems.append(
            ("delivery.max_backoff", "expected at least 1m and delivery.retry_after (e.g. 6h)")
        )
    if delivery.max_age < 3600:
        problems.append(("delivery.max_age", "expected at least 1h (e.g. 7d)"))
    return problems


def _anilist_problems(anilist: AniListConfig | None) -> list[tuple[str, str]]:
    if anilist is None:
        return []
    problems = []
    if anilist.mapping_refresh < 3600:
        problems.append(("services.anilist.mapping_refresh", "expected at least 1h (e.g. 1d, 7d)"))
    return problems


def _url_problems(services: ServicesConfig) -> list[tuple[str, str]]:
    """Every service URL must name a scheme and a host (`192.168.1.10:32400` is not a URL)."""
    problems = []
    for service, settings in vars(services).items():
        if settings is None:
            continue
        urls = {k: v for k, v in vars(settings).items() if k == "url" or k.endswith("_url")}
        if service == "anilist":  # the dataset URLs: "" switches one off
            urls |= {f"mapping_urls.{k}": v for k, v in vars(settings.mapping_urls).items()}
        server_example = f"http://192.168.1.10:{32400 if service == 'plex' else 8096}"
        defaults = {f.name: f.default for f in dataclasses.fields(settings)}
        for key, url in urls.items():
            if not isinstance(url, str) or not url:
                continue
            if url != url.strip():
                # Python's URL parser skips a space or line break that the HTTP client keeps
                # (a relative URL, a refused one): every request would fail, as if down.
                problems.append((f"services.{service}.{key}", PASTED_WITH_A_SPACE))
            elif not _is_http_url(url):
                if key.startswith("mapping_urls."):
                    wanted = "expected an http(s) URL, or '' for off"
                else:
                    # A key with a default (a service's own host) is shown it, not a LAN address.
                    default = defaults.get(key)
                    example = default if isinstance(default, str) else server_example
                    wanted = f"expected an http(s) URL such as {example}"
                problems.append((f"services.{service}.{key}", wanted))
            elif key == "auth_url" and (endpoint := _endpoint_in_auth_url(service, url)):
                problems.append(
                    (
                        f"services.{service}.auth_url",
                        f"ends in {endpoint}, which watchbridge adds itself: expected the address "
                        f"its sign-in endpoints are under, such as {defaults[key]} (the default)",
                    )
                )
            elif key == "url" and service == "plex" and _has_plex_token(url):
                problems.append(
                    (
                        "services.plex.url",
                        "holds a token (X-Plex-Token): put the token in services.plex.token "
                        f"and give the server's own address only, such as {server_example}",
                    )
                )
            elif key == "url" and service in MEDIA_SERVERS and _is_web_app_address(url):
                problems.append(
                    (
                        f"services.{service}.url",
                        "that is the address of the server's web app (as the browser shows "
                        "it); expected the server's own address without /web, # or ?, such "
                        f"as {server_example}",
                    )
                )
    return problems


MEDIA_SERVERS = ("plex", "jellyfin", "emby")

# What each sign-in client adds to `auth_url` (services/trakt.py, services/anilist.py).
_AUTH_ENDPOINTS = {"trakt": ("oauth",), "anilist": ("authorize", "token")}


def _endpoint_in_auth_url(service: str, url: str) -> str | None:
    """The endpoint path an `auth_url` copied from a browser or the docs already holds (Trakt's
    `/oauth/authorize`, AniList's `/authorize`), which the client would add a second time."""
    segments = urllib.parse.urlsplit(url).path.rstrip("/").split("/")
    for at, segment in enumerate(segments):
        if segment in _AUTH_ENDPOINTS.get(service, ()):
            return "/" + "/".join(segments[at:])
    return None


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _listen_address_problem(host: str) -> str | None:
    """Why `server.host` cannot be bound: a port, scheme or path written with the address
    (`0.0.0.0:8765`, `http://0.0.0.0`) makes `serve` fail only once it binds. Empty (every
    interface), an IP address or a host name are fine."""
    if not host or _HOST_NAME.fullmatch(host):
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if "/" in host:
        hint = "without http:// or a path"
    elif host.startswith("["):
        hint = "without [ ] (write :: for every IPv6 interface)"
    elif re.fullmatch(r"[^:]*:\d+", host):
        hint = "without a port: the port goes in server.port"
    else:
        hint = "or a host name"
    return (
        "expected an address of this machine to listen on, such as 0.0.0.0 (every interface),"
        f" :: or 127.0.0.1, {hint}; got {host!r}"
    )


def _not_a_host(entry: str) -> bool:
    """Whether a `server.allowed_hosts` entry is no host name (`*.` may begin it) nor address."""
    name = entry.strip()
    if name.startswith("*."):
        name = name[2:]
    try:
        ipaddress.ip_address(name.strip("[]"))
        return False
    except ValueError:
        return not _HOST_NAME.fullmatch(name)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return None


def trusted_gateways(proxies: Sequence[str]) -> list[tuple[str, str]]:
    """(entry, address) for each network of `server.trusted_proxies` holding its first host
    address, which a Docker network gives its gateway: connections Docker forwards to a
    published port itself (clients over IPv6, the host) come from that address. Pure."""
    found = []
    for entry in proxies:
        network = _network(entry)
        if network is None or network.num_addresses <= 2 or network.is_loopback:
            continue  # one address (or a pair) names the proxy itself
        first = network.network_address + 1
        found.append((entry.strip(), str(first)))
    return found


def is_trusted_proxy(client: str, proxies: Sequence[str]) -> bool:
    """Whether a client address is one of `server.trusted_proxies` (addresses or networks)."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)  # an IPv4 client of a socket listening on "::"
    networks = [net for entry in proxies if (net := _network(entry)) is not None]
    return any(form in net for form in forms for net in networks)


def _is_http_url(text: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 (`:8096:8096` or `:8O96` raise, as the HTTP client would)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        return False
    return parts.scheme in ("http", "https") and bool(host)


def _has_plex_token(url: str) -> bool:
    """A Plex "View XML" address (`...?X-Plex-Token=...`), how users find their token."""
    query = urllib.parse.urlsplit(url).query
    return "x-plex-token" in (name.lower() for name, _ in urllib.parse.parse_qsl(query))


def _is_web_app_address(url: str) -> bool:
    """A media server's web app address (`.../web/index.html#!/`) copied from the browser:
    requests under it answer 404, which would read as "no such item"."""
    parts = urllib.parse.urlsplit(url)
    return bool(parts.query or parts.fragment) or "web" in parts.path.lower().split("/")


# --------------------------------------------------------------------------- interpolation

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Unset `${VAR}` raises."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            raise KeyError(name)
        return value

    return _VAR.sub(replace, text)


_SHELL_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def miswritten_variable(text: str, environ: Mapping[str, str]) -> str | None:
    """What is wrong with a variable reference `interpolate` would leave as it is: a `${`
    not closed as `${NAME}`, or the shell's `$NAME` for a variable that is set. Pure."""
    if any("${" in (found.group(2) or "") for found in _VAR.finditer(text)):
        return "a ${...} inside a default is not read (write the default itself)"
    rest = _VAR.sub("", text)
    if "${" in rest:
        return "a ${ that is not ${NAME} or ${NAME:-default} (a literal ${ is written $${)"
    for name in _SHELL_VAR.findall(rest):
        if name in environ:
            return f"write ${{{name}}} to use the variable {name} (a literal $ is written $$)"
    return None


# --------------------------------------------------------------------------- validation

_NULL_TAG = "tag:yaml.org,2002:null"
_BINARY_TAG = "tag:yaml.org,2002:binary"
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def _line_of(lines: Mapping[str, int], key: str) -> int:
    """The line of `key`, or of the nearest section holding it (a key left out: its default)."""
    while key and key not in lines:
        key = key.rpartition(".")[0]
    return lines.get(key, 1)


class _Validator:
    def __init__(self, filename: str, environ: Mapping[str, str]) -> None:
        self.filename = filename
        self.environ = environ
        self.errors: list[str] = []
        self.lines: dict[str, int] = {}
        self.misplaced: set[str] = set()  # keys written one level too far out

    def fail(self, node: yaml.Node, key: str, message: str) -> None:
        self.errors.append(
            f"{self.filename}:{node.start_mark.line + 1} {key or '(top)'}: {message}"
        )

    def build(self, hint: Any, node: yaml.Node, key: str) -> Any:
        self.lines.setdefault(key, node.start_mark.line + 1)
        if node.tag == _BINARY_TAG:
            self.fail(node, key, "a !!binary value is not decoded: write the text itself")
            return _Invalid
        if node.tag.startswith("!"):  # `password: !Hunter2` is a YAML tag and an empty value
            self.fail(node, key, 'a value starting with ! must be quoted (e.g. password: "!abc")')
            return _Invalid
        origin = get_origin(hint)
        if origin in (Union, types.UnionType):
            options = [a for a in get_args(hint) if a is not type(None)]
            if _is_null(node):
                # `serializd:` with nothing after it is the section with its defaults (as `{}`);
                # only a written `null` or `~` leaves a section out.
                if node.value == "" and dataclasses.is_dataclass(options[0]):
                    return self._dataclass(options[0], node, key)
                return None
            return self.build(options[0], node, key)
        if dataclasses.is_dataclass(hint):
            return self._dataclass(hint, node, key)
        if origin is list:
            return self._list(get_args(hint)[0], node, key)
        if origin is dict:
            return self._dict(get_args(hint)[1], node, key)
        return self._scalar(hint, node, key)

    def _dataclass(self, cls: Any, node: yaml.Node, key: str) -> Any:
        if _is_null(node):
            node = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark)
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, _no_space_after_colon(cls, node) or "expected a mapping of keys")
            return _Invalid
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata != NOT_A_KEY}
        values: dict[str, Any] = {}
        homes: dict[str, list[str]] = {}
        above = ""
        for key_node, _ in node.value:
            name = str(key_node.value)
            if name not in fields:
                sections = _sections_holding(hints, name)
                # The section just above is the one it fell out of, when it is one of them.
                homes[name] = [above] if above in sections else sections
            above = name
        for name, sections in homes.items():
            # Named where it was written, not again as missing from the section it belongs in.
            self.misplaced.update(f"{key}.{s}.{name}" if key else f"{s}.{name}" for s in sections)
        for key_node, value_node in node.value:
            name = str(key_node.value)
            path = f"{key}.{name}" if key else name
            if name == "<<":
                self.fail(key_node, key, MERGE_KEYS)
                continue
            if homes.get(name):
                where = " or ".join(f"{key}.{s}" if key else s for s in homes[name])
                under = " or ".join(f"`{s}:`" for s in homes[name])
                self.fail(
                    key_node,
                    path,
                    f"{_not_a_key_of(key)} but of {where}: indent it under {under}",
                )
                continue
            if name not in fields:
                close = difflib.get_close_matches(name, list(fields), n=1)
                hint = (
                    f"; did you mean {close[0]!r}?"
                    if close
                    else f"; expected one of {', '.join(fields)}"
                )
                self.fail(key_node, path, f"unknown key{hint}")
                continue
            if name in values:
                self.fail(key_node, path, "key given twice")
                continue
            if _is_null(value_node) and not _required(fields[name]) and _one_kind(hints[name]):
                # `port:` with nothing after it: not the default (that is the line left out).
                self.lines.setdefault(path, value_node.start_mark.line + 1)
                expected = _describe(hints[name])
                self.fail(
                    value_node,
                    path,
                    f"no value: expected {expected}, or take the line out to keep the default",
                )
                values[name] = _Invalid
                continue
            value = self.build(hints[name], value_node, path)
            missing = _required(fields[name]) or fields[name].metadata.get("empty_is_missing")
            if missing and _is_empty(value):
                said = f"required, {_emptied_by(value_node)}{_expects(fields[name])}"
                self.fail(value_node, path, said)
                value = _Invalid
            elif (if_empty := fields[name].metadata.get("if_empty")) and _is_empty(value):
                self.fail(value_node, path, f"{_empty_because(value_node)}: {if_empty}")
                value = _Invalid
            values[name] = value
        for name, f in fields.items():
            if name in values:
                continue
            if _required(f):
                path = f"{key}.{name}" if key else name
                if path not in self.misplaced:
                    self.fail(node, path, f"required{_expects(f)}")
                values[name] = _Invalid
        if any(v is _Invalid for v in values.values()):
            return _Invalid
        return cls(**values)

    def _list(self, item_hint: Any, node: yaml.Node, key: str) -> Any:
        if _is_null(node):
            return []
        if isinstance(node, yaml.ScalarNode):
            if item_hint is not Secret and ".users." not in key and "," in str(node.value):
                # `kinds: history, ratings` is one value: its error would list the very
                # words written, and one library "Movies, TV Shows" is missed only at a sync.
                noun = "name" if key.endswith(("libraries", "profiles")) else "value"
                names = ", ".join(n.strip() for n in str(node.value).split(",") if n.strip())
                self.fail(
                    node, key, f"one {noun} with commas; for several, write a list: [{names}]"
                )
                return _Invalid
            node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark)
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, key, "expected a list")
            return _Invalid
        items = [self.build(item_hint, item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        if ".users." in key:
            for item, value in zip(node.value, items, strict=True):
                if isinstance(value, str) and "," in value:
                    # `jellyfin: alice, bob` is one name no server sends: every play ignored.
                    names = ", ".join(n.strip() for n in value.split(",") if n.strip())
                    message = f"one name with commas; for several, write a list: [{names}]"
                    self.fail(item, key, message)
                    return _Invalid
        return _Invalid if any(i is _Invalid for i in items) else items

    def _dict(self, value_hint: Any, node: yaml.Node, key: str) -> Any:
        if _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, "expected a mapping of names")
            return _Invalid
        result: dict[str, Any] = {}
        above: yaml.Node | None = None  # the nearest entry above that is one (not a lost key)
        for key_node, value_node in node.value:
            name = str(key_node.value)
            path = f"{key}.{name}"
            if lost := _lost_indentation(value_hint, key, name, value_node, above):
                self.fail(key_node, path, lost)
                result[name] = _Invalid
                continue
            above = key_node
            if name == "<<":
                self.fail(key_node, key, MERGE_KEYS)
                continue
            if not re.fullmatch(_NAME, name):
                # ASCII only (ë is a letter to the user): names go into commands and URLs.
                dashed = "-".join(name.split())
                example = f", e.g. {dashed}" if re.fullmatch(_NAME, dashed) else ""
                self.fail(key_node, path, f"{NAME_RULE}; got {name!r}{example}")
                continue
            if name in result:  # YAML keeps the last one: the first would vanish unsaid
                self.fail(key_node, path, "name given twice")
                continue
            result[name] = self.build(value_hint, value_node, path)
        return _Invalid if any(v is _Invalid for v in result.values()) else result

    def _scalar(self, hint: Any, node: yaml.Node, key: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, key, f"expected {_describe(hint)}, got a {_kind(node)}")
            return _Invalid
        if _is_null(node):
            self.fail(node, key, f"required: expected {_describe(hint)}")
            return _Invalid
        miswritten = miswritten_variable(str(node.value), self.environ)
        if miswritten is not None:
            self.fail(node, key, miswritten)
            return _Invalid
        try:
            text = interpolate(str(node.value), self.environ)
        except KeyError as missing:
            name = missing.args[0]
            self.fail(
                node,
                key,
                f"environment variable {name} is not set (set it, or write ${{{name}:-default}})",
            )
            return _Invalid
        if _sent_in_headers(hint, key):
            problem = _header_problem(text, key)
            if problem:
                self.fail(node, key, _where_set(problem, str(node.value)))
                return _Invalid
        converted = _convert(hint, text)
        if converted is _Invalid:
            shown = "********" if hint is Secret else repr(text)
            names = [found[1] for found in _VAR.finditer(str(node.value)) if found[1]]
            source = f" (from {', '.join('${' + name + '}' for name in names)})" if names else ""
            self.fail(node, key, f"expected {_describe(hint)}, got {shown}{source}")
        return converted


def _not_a_key_of(section: str) -> str:
    return f"not a key of {section}" if section else "not a top-level key"


_GLUED_KEY = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_-]*):(\S+)")
# Values shown as written when a key is glued to them: never text, which may be a secret or
# a URL holding one (`url:http://nas?X-Plex-Token=...`).
_SHOWN_GLUED = (int, float, bool, Duration)


def _no_space_after_colon(cls: Any, node: yaml.Node) -> str | None:
    """The section `cls` written as one key without a space after its colon (`port:8765`,
    which YAML reads as the text "port:8765", not a key): what to write instead."""
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return None  # a quoted value is meant as text
    glued = _GLUED_KEY.fullmatch((str(node.value).split() or [""])[0])
    if glued is None:
        return None
    name, value = glued[1], glued[2]
    if name not in _config_keys(cls):
        return None
    hint = get_type_hints(cls)[name]
    if not (hint in _SHOWN_GLUED or get_origin(hint) is Literal):
        value = "..."
    return f"`{name}:{value}` needs a space after the colon: `{name}: {value}`"


def _lost_indentation(
    hint: Any, section: str, name: str, value: yaml.Node, above: yaml.Node | None
) -> str | None:
    """Why the entry `name` of `section` (profiles, links) looks like a key of an entry that lost
    its indentation: of the entry `above` it, or, with none above, of an entry whose name line is
    missing. Its name is a key written in such an entry (`trakt:` of `accounts`) or, its value
    not a mapping, a near miss of one; with no value (`trakt:`), only that key itself, as an
    entry so named would hold nothing; with a mapping (`accounts:` and keys under it), only that
    key itself holding keys of its own and none an entry holds. None otherwise: a mapping of an
    entry's keys, or a null of another name (an entry with its defaults), is an entry of its
    own, whatever its name."""
    if not dataclasses.is_dataclass(hint):
        return None
    hints = get_type_hints(hint)
    own = _config_keys(hint)
    inner = [n for s in own for n in _keys_of(hints[s]) if n not in own]
    if isinstance(value, yaml.MappingNode):
        meant = [name] if _holds_keys_of(hints, name, value, own) else []
    elif _is_null(value):
        meant = [name] if name in own or name in inner else []
    else:
        meant = difflib.get_close_matches(name, [*own, *dict.fromkeys(inner)], n=1, cutoff=0.8)
    if not meant:
        return None
    key, noun = meant[0], section.removesuffix("s")
    if key in own:
        sections, takes = [], [hints[key]]
    else:
        holding = _sections_holding(hints, key)
        # A list is of `users:`, a mapping of `accounts:`: name only where the value fits.
        sections = [s for s in holding if _takes(_key_hint(hints[s], key), value)] or holding
        takes = [_key_hint(hints[s], key) for s in sections]
    spelt = "" if key == name else f" (`{key}`?)"
    then = f" then {' or '.join(f'`{s}:`' for s in sections)}" if sections else ""
    fits = "" if any(_takes(t, value) for t in takes) else _what_it_takes(key, takes[0], value)
    if above is None:
        return (
            f"looks like a key of a {noun}, with no {noun} above it{spelt}: indent it under"
            f" a {noun}'s name{then}{fits}"
        )
    entry = str(above.value)
    return (
        f"looks like a key of {noun} {entry} (line {above.start_mark.line + 1}) that lost its"
        f" indentation{spelt}: indent it under `{entry}:`{then}{fits}"
    )


def _holds_keys_of(
    hints: Mapping[str, Any], name: str, value: yaml.MappingNode, own: list[str]
) -> bool:
    """Whether `value`, a mapping written as an entry named `name`, holds what the key `name`
    of an entry (whose fields are `hints`, its keys `own`) holds, rather than an entry's keys:
    `accounts:` with `trakt:` under it, `trakt:` with `refresh_token:`."""
    written = {str(key.value) for key, _ in value.value}
    if not written or written & set(own):
        return False
    sections = [name] if name in own else _sections_holding(hints, name)
    holds = [_keys_of(_key_hint(hints[s], name) if s != name else hints[s]) for s in sections]
    return any(keys and written <= set(keys) for keys in holds)


def _key_hint(section_hint: Any, key: str) -> Any:
    """The type of `key` in a section of type `section_hint` (optional or not)."""
    return get_type_hints(_unless_none(section_hint))[key]


def _unless_none(hint: Any) -> Any:
    """`hint` without its `| None` (a section or value that may be left out)."""
    if get_origin(hint) not in (Union, types.UnionType):
        return hint
    return next(a for a in get_args(hint) if a is not type(None))


def _takes(hint: Any, node: yaml.Node) -> bool:
    """Whether a key of type `hint` may be written as `node`: its kind of value (a mapping for
    a section, a list or one value for a list, one value otherwise), or nothing."""
    if _is_null(node):
        return True
    hint = _unless_none(hint)
    if dataclasses.is_dataclass(hint) or get_origin(hint) is dict:
        return isinstance(node, yaml.MappingNode)
    if get_origin(hint) is list:
        return isinstance(node, yaml.SequenceNode | yaml.ScalarNode)
    return isinstance(node, yaml.ScalarNode)


def _what_it_takes(key: str, hint: Any, node: yaml.Node) -> str:
    """`; there `key` takes a mapping of keys, not a list`: the kind of value the key wants."""
    hint = _unless_none(hint)
    if dataclasses.is_dataclass(hint):
        wanted = f"a mapping of keys (`{key}: {{}}` for its defaults)"
    elif get_origin(hint) is dict:
        wanted = "a mapping of names"
    elif get_origin(hint) is list:
        wanted = "a list"
    else:
        wanted = _describe(hint)
    written = "a list" if isinstance(node, yaml.SequenceNode) else "one value"
    return f"; there `{key}` takes {wanted}, not {written}"


def _keys_of(hint: Any) -> list[str]:
    """The keys of a section of type `hint` (None for a value that is not a section)."""
    options = [a for a in get_args(hint) if a is not type(None)] or [hint]
    if not dataclasses.is_dataclass(options[0]):
        return []
    return _config_keys(options[0])


def _sections_holding(hints: Mapping[str, Any], name: str) -> list[str]:
    """The sections among `hints` (a dataclass's fields) that have a key `name`: where a key
    written one level too far out (its indentation lost) belongs."""
    return [section for section, hint in hints.items() if name in _keys_of(hint)]


def _config_keys(cls: Any) -> list[str]:
    """The keys a config file may write in a section of dataclass `cls`."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata != NOT_A_KEY]


def _sent_in_headers(hint: Any, key: str) -> bool:
    """Tokens, keys and ids go into request headers, where a stray space or line break makes
    every request fail before it is sent (as if the service were down). A password may hold
    spaces on purpose, and an alert URL is checked on its own."""
    if key.startswith("alerts.urls"):
        return False
    return (hint is Secret and not key.endswith(".password")) or key.endswith(".client_id")


PASTED_WITH_A_SPACE = "starts or ends with a space or line break (pasted?): remove it"


def _where_set(problem: str, written: str) -> str:
    """`problem`, saying where to remove the space when the file's text has none around it:
    it came with an environment variable (a .env line, a container's variable, an app
    option), and the file holds only the variable's name."""
    names = [found[1] for found in _VAR.finditer(written) if found[1]]
    if problem != PASTED_WITH_A_SPACE or not names or written != written.strip():
        return problem
    shown = ", ".join(f"${{{name}}}" for name in names)
    return f"{problem} where {shown} {'is' if len(names) == 1 else 'are'} set"


def _header_problem(text: str, key: str) -> str | None:
    """Why a value cannot go into a request header, in words for the one who pasted it. The
    server's own secrets are only received (a webhook secret may be any text: URL-quoted)."""
    if text != text.strip():
        return PASTED_WITH_A_SPACE
    if key.startswith("server."):
        return None
    odd = next((c for c in text if not (c.isascii() and c.isprintable())), None)
    if odd is not None:
        return (
            f"holds the invisible or non-ASCII character U+{ord(odd):04X} (pasted from a web "
            "page?): type or copy it again"
        )
    return None


_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"
NAME_RULE = (
    "names may use the letters a-z and A-Z, digits, - and _ only, starting with a letter or digit"
)
MERGE_KEYS = "YAML merge keys (<<) are not supported: write the keys out"


class _InvalidType:
    """Marks a value that failed validation, so one bad key does not hide the others."""


_Invalid: Any = _InvalidType()


def _one_kind(hint: Any) -> bool:
    """Whether a key of this type takes one plain value (not a section, list, map or a value
    that may be left empty)."""
    if get_origin(hint) in (Union, types.UnionType, list, dict):
        return False
    return not dataclasses.is_dataclass(hint)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _expects(f: dataclasses.Field[Any]) -> str:
    """What to write for a required field left out or empty (`expects`), after a colon."""
    wanted = f.metadata.get("expects")
    return f": {wanted}" if wanted else ""


def _is_empty(value: Any) -> bool:
    return value == "" or (isinstance(value, Secret) and not value.reveal())


def _emptied_by(node: yaml.Node) -> str:
    """Why a value is empty: the variable it names (set, but to nothing), or as written."""
    names = [m.group(1) for m in _VAR.finditer(str(node.value)) if m.group(1)]
    return f"but environment variable {names[0]} is empty" if names else "got an empty value"


def _empty_because(node: yaml.Node) -> str:
    names = [m.group(1) for m in _VAR.finditer(str(node.value)) if m.group(1)]
    return f"empty, as environment variable {names[0]} is" if names else "empty"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    return "list" if isinstance(node, yaml.SequenceNode) else "value"


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(hint))
    names: dict[Any, str] = {
        str: "text",
        Secret: "text",
        int: "a whole number",
        float: "a number",
        bool: "true or false",
        Duration: "a duration such as 90s, 15m, 2h or 1d",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))


_CONVERTERS: dict[Any, Callable[[str], Any]] = {
    str: lambda t: t,
    Secret: Secret,
    int: lambda t: int(t) if re.fullmatch(r"[+-]?\d+", t.strip()) else _Invalid,
    float: lambda t: float(t) if re.fullmatch(r"[+-]?\d+(\.\d+)?", t.strip()) else _Invalid,
    bool: lambda t: True if t.lower() in _TRUE else (False if t.lower() in _FALSE else _Invalid),
    Duration: lambda t: _Invalid if (d := Duration.parse(t)) is None else d,
}


def _convert(hint: Any, text: str) -> Any:
    if get_origin(hint) is Literal:
        return text if text in get_args(hint) else _Invalid
    return _CONVERTERS[hint](text)
