"""Container entrypoint: choose and prepare the config file, then exec `watchbridge`.

- Home Assistant (an options file exists, normally /data/options.json): write a config from the
  app options, or use the user's own YAML named by the `config_file` option. Either way the
  command runs with $WATCHBRIDGE_HOME_ASSISTANT set (homeassistant.py): its page and alerts
  then speak to a user without a terminal.
- Any other container: on first start copy the shipped example to $WATCHBRIDGE_CONFIG.

Arguments pass through: `docker run IMAGE check-config` runs `watchbridge check-config` on the
chosen file (exported as $WATCHBRIDGE_CONFIG); no arguments means `serve`. Deciding is pure
(`plan_start`); `main` reads the inputs, carries out the plan and execs, so signals reach the
service directly.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from watchbridge.homeassistant import (
    ALERT_URL_ENTRIES_ENV,
    APP_ENV,
    FROM_OPTIONS,
    FROM_OWN_YAML,
    INGRESS_PORT,
    OPTIONS_PROFILE,
    WEBHOOK_PORT,
    alert_url_entries_value,
    alert_urls_entry,
    option_problem,
)
from watchbridge.privatefiles import in_the_way, not_writable, owner_of

HA_INGRESS_PROXY = "172.30.32.2"
GENERATED_CONFIG = "watchbridge.options.yaml"
TOKEN_FILE = "watchbridge.api_token"
SERVICE_USER = (1000, 1000)
# The folders the service makes in its data folder and writes into (anime_data.from_config:
# the anime datasets beside the database): `become` hands over their files too, no deeper.
SERVICE_FOLDERS = ("anime-datasets",)
IMAGE_EXAMPLE_CONFIG = "/app/watchbridge.example.yaml"
# Asking for these must work even when no config can be prepared (e.g. read-only mounts).
NO_CONFIG_ARGS = frozenset({"--version", "--help", "-h"})
# Environment variables a user's own YAML can reference to pick up the app options.
MEDIA_SOURCES = ("jellyfin", "emby", "generic")
# Plex's plays come from its own webhooks or Tautulli's (option `plex_plays_from`): both would
# report each viewing, minutes apart; `none`, a household without Plex (Emby, Jellyfin), takes
# neither. Unset (set-ups older than the option): both.
PLEX_SOURCES = {
    "webhooks": ("plex",),
    "tautulli": ("tautulli",),
    "none": (),
    "": ("plex", "tautulli"),
}
OPTION_ENV = {
    "webhook_secret": "WATCHBRIDGE_WEBHOOK_SECRET",
    "trakt_client_id": "TRAKT_CLIENT_ID",
    "trakt_client_secret": "TRAKT_CLIENT_SECRET",
    "log_level": "WATCHBRIDGE_LOG_LEVEL",
}
# The options taken as typed (`_as_typed`): secrets and ids, which go into headers or are
# compared with what a media server sends.
TYPED_OPTIONS = frozenset({"webhook_secret", "trakt_client_id", "trakt_client_secret"})


class StartError(Exception):
    """A start-up problem the user can fix; shown as one line, no traceback."""


@dataclass(frozen=True)
class Paths:
    """Where things live; each overridable from the environment (tests, bare metal)."""

    config: Path  # $WATCHBRIDGE_CONFIG: the config file of a plain container
    data: Path  # $WATCHBRIDGE_DATA_DIR: state; under Home Assistant the app's /data
    ha_options: Path  # $WATCHBRIDGE_HA_OPTIONS: exists only under Home Assistant
    example: Path  # $WATCHBRIDGE_EXAMPLE_CONFIG: the example shipped in the image

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Paths:
        data = Path(environ.get("WATCHBRIDGE_DATA_DIR") or "/data")
        return cls(
            config=Path(environ.get("WATCHBRIDGE_CONFIG") or "/config/watchbridge.yaml"),
            data=data,
            ha_options=Path(environ.get("WATCHBRIDGE_HA_OPTIONS") or data / "options.json"),
            example=Path(environ.get("WATCHBRIDGE_EXAMPLE_CONFIG") or IMAGE_EXAMPLE_CONFIG),
        )


@dataclass(frozen=True)
class StartPlan:
    """What to do before exec'ing `argv` with `env` added to the environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    copy_example_to: Path | None = None
    generated_config: tuple[Path, str] | None = None  # written with mode 0600: holds secrets
    run_as: tuple[int, int] | None = None  # (uid, gid) to become when started as root
    own_config: Path | None = None  # the user's own YAML (config_file): checked as `run_as`
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- pure logic


def translate_options(
    options: Mapping[str, Any], api_token: str, data_dir: Path = Path("/data")
) -> dict[str, Any]:
    """The config for the Home Assistant options form: UI via ingress, webhooks on 8765."""
    server: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": INGRESS_PORT,
        "webhook_port": WEBHOOK_PORT,
        # Only the ingress proxy skips the token; nobody knows the token, so only ingress gets in.
        "api_token": api_token,
        "trusted_proxies": [HA_INGRESS_PROXY],
    }
    if _text(options, "webhook_secret"):
        # A media server's URL would hold the secret without the space; the config says so.
        server["webhook_secret"] = _as_typed(options, "webhook_secret")
    config: dict[str, Any] = {
        "server": server,
        "storage": {"path": str(data_dir / "watchbridge.db")},
        "logging": {"level": _text(options, "log_level") or "info"},
        "alerts": {"urls": [url for _, url in alert_url_entries(options)]},
    }
    # Trakt made the client secret optional for sign-in in 2026: the id alone is enough.
    if _text(options, "trakt_client_id"):
        trakt = {"client_id": _as_typed(options, "trakt_client_id")}
        if _text(options, "trakt_client_secret"):
            trakt["client_secret"] = _as_typed(options, "trakt_client_secret")
        config["services"] = {"trakt": trakt}
    plex_sources = PLEX_SOURCES.get(_text(options, "plex_plays_from") or "", PLEX_SOURCES[""])
    if users := _texts(options, "media_users"):
        # One household profile: the same names on every media server (Plex's owner is 1).
        accounts: dict[str, Any] = {"trakt": {}} if "services" in config else {}
        config["profiles"] = {
            OPTIONS_PROFILE: {
                "users": {source: users for source in (*plex_sources, *MEDIA_SOURCES)},
                "accounts": accounts,
            }
        }
    return config


_CONFIG_PROBLEM = re.compile(r"^\S+:\d+ (?P<key>[^:\s]+): (?P<problem>.*)$")


def alert_url_entries(options: Mapping[str, Any]) -> list[tuple[int, str]]:
    """Each `alert_urls` entry the generated config keeps, with its place in the options form's
    list (counted from 1, blank entries too: the form shows them)."""
    values = options.get("alert_urls") or []
    if isinstance(values, str):
        values = [values]
    return [
        (number, text)
        for number, value in enumerate(values, start=1)
        if value is not None and (text := str(value).strip())
    ]


def option_problems(text: str, path: Path, entries: Sequence[int]) -> list[str]:
    """What is wrong with a config generated from the options, each named by the option the
    user filled in (not the generated file's key, which they never wrote), an alert URL by
    its entry (`entries`: the form's entry of each kept URL, as ALERT_URL_ENTRIES_ENV). Pure."""
    from watchbridge.config import parse_config
    from watchbridge.errors import ConfigError

    try:
        parse_config(text, path, {})
    except ConfigError as exc:
        # One option fills several keys (media_users: every source): each problem once.
        lines = [line for line in exc.message.splitlines() if line.strip()]
        return list(dict.fromkeys(_as_option(line, entries) for line in lines))
    return []


def _as_option(problem: str, entries: Sequence[int]) -> str:
    found = _CONFIG_PROBLEM.match(problem)
    if found is None:
        return problem
    return option_problem(found["key"], found["problem"], entries) or problem


def options_auth_problem(args: Sequence[str], options: Mapping[str, Any]) -> str | None:
    """Why `auth ARGS` cannot sign in with a config made from the options, in the options'
    words (the generated file is rewritten at every start: pointing at it helps nobody)."""
    service = args[0] if args and not args[0].startswith("-") else ""
    if service and service != "trakt":
        return (
            f"the app options sign in to Trakt only; for {service} write your own YAML and "
            "name it in the config_file option"
        )
    if not _text(options, "trakt_client_id"):
        return "set the trakt_client_id option (your Trakt app's client id), then sign in"
    if not _texts(options, "media_users"):
        return (
            "set the media_users option (the names your media servers know you by): its "
            f"profile, {OPTIONS_PROFILE}, is the one signed in to Trakt"
        )
    return None


def options_env(options: Mapping[str, Any], api_token: str) -> dict[str, str]:
    """Environment for a user's own YAML: each set option under the name it can `${...}`."""
    env = {"WATCHBRIDGE_API_TOKEN": api_token}
    env.update(
        {
            # The YAML refuses a space around a secret, naming the variable (`_as_typed`).
            var: _as_typed(options, key) if key in TYPED_OPTIONS else _text(options, key)
            for key, var in OPTION_ENV.items()
            if _text(options, key)
        }
    )
    for number, url in enumerate(_texts(options, "alert_urls"), start=1):
        env[f"WATCHBRIDGE_ALERT_URL_{number}"] = url
    return env


# What an own YAML writes for each option the form has that it never reads as a variable.
OPTION_IN_OWN_YAML = {
    "media_users": "your accounts under profiles.NAME.users",
    "plex_plays_from": "your Plex accounts under users.plex, or users.tautulli without Plex Pass",
}


def unread_options(options: Mapping[str, Any], own_yaml: str) -> list[str]:
    """The options set in the form that the user's own YAML (its text) never reads: it is used
    as written, so they change nothing, which the form does not show. Names only, never a
    value. Pure; a YAML that does not parse is left to `watchbridge` to name."""
    from watchbridge.config import _VAR

    try:
        tree = yaml.safe_load(own_yaml)
    except yaml.YAMLError:
        return []
    if not tree:  # not read, or empty: `watchbridge` names it
        return []
    read = {found[1] for text in _strings(tree) for found in _VAR.finditer(text) if found[1]}
    unread = [
        f"{option} (write {where})"
        for option, where in OPTION_IN_OWN_YAML.items()
        if _texts(options, option)
    ]
    for option, variable in OPTION_ENV.items():
        default = option == "log_level" and _text(options, option) == "info"
        if _text(options, option) and not default and variable not in read:
            unread.append(f"{option} (write ${{{variable}}} where your YAML takes it)")
    urls = [n for n, _ in enumerate(_texts(options, "alert_urls"), start=1)]
    if missing := [n for n in urls if f"WATCHBRIDGE_ALERT_URL_{n}" not in read]:
        names = ", ".join(f"${{WATCHBRIDGE_ALERT_URL_{n}}}" for n in missing)
        unread.append(f"alert_urls (write {names} under alerts.urls)")
    if not unread:
        return []
    return [
        "these options are set but your YAML does not read them, so they change nothing: "
        + "; ".join(unread)
        + " (the app's Documentation tab, Your own YAML)"
    ]


def _strings(tree: Any) -> list[str]:
    """Every string value in a parsed YAML tree (where a `${...}` is read)."""
    if isinstance(tree, str):
        return [tree]
    if isinstance(tree, Mapping):
        return [text for value in tree.values() for text in _strings(value)]
    if isinstance(tree, list):
        return [text for value in tree for text in _strings(value)]
    return []


def option_warnings(options: Mapping[str, Any]) -> list[str]:
    """Options that are set but cannot take effect, or left empty where the user needs one."""
    from watchbridge.config import SECRET_IN_HEADER_ONLY, fits_in_url

    warnings = [*_alert_url_warnings(options)]
    secret = _text(options, "webhook_secret")
    if secret and not fits_in_url(secret):
        warnings.append(f"webhook_secret is set, but {SECRET_IN_HEADER_ONLY}")
    if _text(options, "trakt_client_secret") and not _text(options, "trakt_client_id"):
        warnings.append("trakt_client_secret is set without trakt_client_id; Trakt is left out")
    if not _texts(options, "media_users"):
        warnings.append("media_users is empty: every webhook is answered and ignored")
    elif not _text(options, "trakt_client_id"):
        warnings.append(
            "media_users is set but Trakt is not (trakt_client_id): plays have nowhere to go; "
            "for Serializd or AniList use your own YAML (config_file)"
        )
    if _texts(options, "media_users") and not _text(options, "plex_plays_from"):
        warnings.append(
            "plex_plays_from is not set: both Plex's and Tautulli's webhooks are listened to; "
            "set it to the one that reports your Plex plays (webhooks, or tautulli without "
            "Plex Pass), or to none without a Plex server: each viewing is reported twice "
            "(counted once only when both name the player)"
        )
    if _texts(options, "media_users") and not _text(options, "webhook_secret"):
        # The made-up secret is never shown on the status page or in the log, and the one
        # command that shows it needs a terminal with Docker, which most users do not have.
        warnings.append(
            "webhook_secret is empty: the webhook URLs hold a secret the app made up, which "
            "only the webhook-urls command shows (in a terminal, see the Documentation tab); "
            "set webhook_secret to a long random string and put it in your media servers' "
            "webhook URLs"
        )
    return warnings


def _alert_url_warnings(options: Mapping[str, Any]) -> list[str]:
    """Each alert_urls entry Apprise does not take, by its place in the option's list: the
    service names it alerts.urls[N], a key of a file the user never wrote."""
    from watchbridge.alerts import url_problem

    return [
        f"{alert_urls_entry(number)}: {problem} (URL hidden: it may hold secrets); alerts are "
        "not sent to it, fix it in the app's Configuration tab"
        for number, url in alert_url_entries(options)
        if (problem := url_problem(url)) is not None
    ]


def render_config(config: Mapping[str, Any]) -> str:
    """YAML for a generated config; `$` is doubled so secrets survive `${VAR}` interpolation."""
    header = (
        "# Written by the watchbridge entrypoint from the Home Assistant app options at every\n"
        "# start; edits here are lost. To write your own YAML, set the config_file option.\n"
    )
    return header + yaml.safe_dump(_escape(config), sort_keys=False, allow_unicode=True)


def user_config_path(options: Mapping[str, Any], config_dir: Path) -> Path | None:
    """The file named by the `config_file` option, inside `config_dir`; None when unset."""
    name = _text(options, "config_file")
    if not name:
        return None
    path = Path(os.path.normpath(config_dir / name))
    if path != config_dir and config_dir in path.parents:
        return path
    # The user sees the folder on the host (DOCS.md), never the app's /config: name both.
    raise StartError(
        f"config_file {name!r}: give the name of a file in the app's config folder "
        f"(/addon_configs/<repository id>_watchbridge on the host, {config_dir} in the app), "
        "e.g. watchbridge.yaml, not a path elsewhere"
    )


def plan_start(
    args: Sequence[str],
    paths: Paths,
    options: Mapping[str, Any] | None = None,
    api_token: str = "",
    is_file: Callable[[Path], bool] = Path.is_file,
) -> StartPlan:
    """Decide which config to run and what to prepare; `options` is None outside Home Assistant."""
    if args and args[0] in NO_CONFIG_ARGS:
        return StartPlan(argv=["watchbridge", *args])
    if options is not None:
        return _plan_home_assistant(args, paths, options, api_token, is_file)
    if is_file(paths.config):
        return StartPlan(argv=_command(args, paths.config), env=_config_env(paths.config))
    return StartPlan(
        argv=_command(args, paths.config),
        env=_config_env(paths.config),
        copy_example_to=paths.config,
        notes=[f"first start: wrote the example config to {paths.config}; edit it and restart"],
    )


def _plan_home_assistant(
    args: Sequence[str],
    paths: Paths,
    options: Mapping[str, Any],
    api_token: str,
    is_file: Callable[[Path], bool],
) -> StartPlan:
    config_dir = paths.config.parent
    user_config = user_config_path(options, config_dir)
    if user_config is not None and is_file(user_config):
        return StartPlan(
            argv=_command(args, user_config, home_assistant=True),
            env={
                **options_env(options, api_token),
                **_config_env(user_config),
                APP_ENV: FROM_OWN_YAML,
            },
            run_as=SERVICE_USER,
            own_config=user_config,
            notes=[f"Home Assistant: using {user_config} as written"],
        )
    notes = option_warnings(options)
    if user_config is not None:
        notes.insert(0, f"config_file {user_config} does not exist; using the app options instead")
    elif is_file(paths.config):
        # A YAML put in the app's folder as the README's other installs do is not read: say so,
        # or the user edits a file that changes nothing and wonders why.
        notes.insert(
            0,
            f"{paths.config} is not read: the config_file option is empty, so the app runs "
            f"from its options; set config_file to {paths.config.name} to use that file",
        )
    if args and args[0] == "auth" and (problem := options_auth_problem(args[1:], options)):
        raise StartError(problem)
    generated = paths.data / GENERATED_CONFIG
    text = render_config(translate_options(options, api_token, paths.data))
    entries = [number for number, _ in alert_url_entries(options)]
    if problems := option_problems(text, generated, entries):
        raise StartError("the app options: " + "; ".join(problems))
    return StartPlan(
        argv=_command(args, generated, home_assistant=True),
        env={
            **_config_env(generated),
            APP_ENV: FROM_OPTIONS,
            # The service names `alerts.urls[N]` by the entry the user filled in.
            ALERT_URL_ENTRIES_ENV: alert_url_entries_value(entries),
        },
        generated_config=(generated, text),
        run_as=SERVICE_USER,
        notes=notes,
    )


def _command(args: Sequence[str], config: Path, home_assistant: bool = False) -> list[str]:
    if args:
        return ["watchbridge", *args]
    # Home Assistant copies the database (backup_pre) only while the app runs: a copy made at
    # each stop is what a backup of the stopped app holds.
    stop_copy = ["--backup-on-stop"] if home_assistant else []
    return ["watchbridge", "serve", "--config", str(config), *stop_copy]


def _config_env(config: Path) -> dict[str, str]:
    return {"WATCHBRIDGE_CONFIG": str(config)}


def _text(options: Mapping[str, Any], key: str) -> str:
    value = options.get(key)
    return "" if value is None else str(value).strip()


def _as_typed(options: Mapping[str, Any], key: str) -> str:
    """A secret option as the user typed it: a space pasted around it is refused where it is
    used, as the same secret in an own YAML is (stripped, the two ways would disagree)."""
    return str(options[key])


def _texts(options: Mapping[str, Any], key: str) -> list[str]:
    values = options.get(key) or []
    if isinstance(values, str):
        values = [values]
    return [text for value in values if value is not None and (text := str(value).strip())]


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, Mapping):
        return {key: _escape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escape(item) for item in value]
    return value


# --------------------------------------------------------------------------- effects


def read_options(path: Path) -> dict[str, Any] | None:
    """The Home Assistant options, or None when not running under Home Assistant."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        if isinstance(exc, PermissionError) and not os.access(path.parent, os.X_OK):
            # Home Assistant starts the app as root, which enters every folder: this is a
            # container whose user cannot enter its data folder; the command says so and how.
            return None
        raise StartError(f"cannot read the app options {path} ({exc.strerror})") from None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StartError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(options, dict):
        raise StartError(f"{path}: expected a JSON object of options")
    return options


def load_or_create_token(path: Path) -> str:
    """The API token kept in `path`, created (random, mode 0600) on first use."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise StartError(f"cannot read {path} ({exc.strerror})") from None
    if not token:
        token = secrets.token_urlsafe(32)
        _write(lambda: write_private(path, token + "\n"), path)
    return token


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)  # the mode given to os.open only applies when it creates the file
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def apply_plan(plan: StartPlan, paths: Paths) -> None:
    """Copy the example and write the generated config, as the plan says."""
    if plan.copy_example_to is not None:
        target = plan.copy_example_to
        if target.is_dir():
            raise StartError(
                f"{target} is a directory, not a file: Docker makes one when the host file of "
                "a single-file mount does not exist yet; remove that directory on the host and "
                "mount the folder instead (-v ./config:/config), or create the file first"
            )
        if not paths.example.is_file():
            raise StartError(
                f"no config at {target} and no example to copy ({paths.example} is missing); "
                f"mount your watchbridge.yaml at {target}"
            )

        # The user adds passwords and tokens to this file: owner-only from the start.
        _write(
            lambda: write_private(target, paths.example.read_text(encoding="utf-8")),
            target,
            when_read_only=(
                f"put your watchbridge.yaml there (start from the repository's "
                f"config/watchbridge.example.yaml, or {IMAGE_EXAMPLE_CONFIG} in the image), or "
                "mount the folder writable once so that the first start writes the example"
            ),
            otherwise="mount an existing watchbridge.yaml",
        )
    if plan.generated_config is not None:
        path, text = plan.generated_config
        _write(lambda: write_private(path, text), path)


def become(run_as: tuple[int, int], data_dir: Path) -> None:
    """Started as root (the Home Assistant image): hand the data folder over, then drop root.
    Files a command run as root made (`docker exec`: a backup, `anime refresh`) become the
    service's again."""
    if os.geteuid() != 0:
        return
    uid, gid = run_as
    try:
        for path in _service_files(data_dir):
            os.chown(path, uid, gid, follow_symlinks=False)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise StartError(f"cannot switch to UID {uid} GID {gid} ({exc.strerror})") from None


def check_readable(own_config: Path, config_dir: Path) -> None:
    """The user's own YAML can be read by the user the app runs as (checked as that user):
    one written as root (a root shell, an editor app running as root) with mode 0600 cannot,
    and `watchbridge` would only say "Permission denied"."""
    try:
        with own_config.open("rb"):
            return
    except PermissionError as exc:
        reason = exc.strerror
    except OSError:
        return  # not a matter of owners: `watchbridge` names it (missing, a directory, ...)
    uid, gid = os.getuid(), os.getgid()
    on_host = f"/addon_configs/<repository id>_watchbridge/{own_config.relative_to(config_dir)}"
    try:
        found = own_config.stat()
    except PermissionError:  # its folder cannot be entered
        raise StartError(
            f"cannot read your config_file {own_config} ({reason}): the app runs as UID {uid} "
            f"GID {gid}, which cannot enter the folder holding it; give the app's config folder "
            f"to it, e.g. in the Advanced SSH & Web Terminal app: chown -R {uid}:{gid} "
            "/addon_configs/<repository id>_watchbridge"
        ) from None
    raise StartError(
        f"cannot read your config_file {own_config} ({reason}): the app runs as UID {uid} GID "
        f"{gid}, and the file belongs to UID {found.st_uid} GID {found.st_gid} with mode "
        f"{stat.S_IMODE(found.st_mode):04o}; give it to the app's user (it stays private to "
        f"it), e.g. in the Advanced SSH & Web Terminal app: chown {uid}:{gid} {on_host}"
    ) from None


def _service_files(data_dir: Path) -> list[Path]:
    """The data folder, what it holds, and what the service's own folders in it hold: any
    other folder (or a link) there is handed over itself, never what it holds."""
    found = [data_dir, *data_dir.iterdir()]
    for name in SERVICE_FOLDERS:
        folder = data_dir / name
        if folder.is_dir() and not folder.is_symlink():
            found += folder.iterdir()
    return found


def _write(
    action: Callable[[], None], target: Path, when_read_only: str = "", otherwise: str = ""
) -> None:
    """Carry out `action`, which writes `target`; a failure as one line saying what to do
    (`when_read_only`: on a `:ro` volume; `otherwise`: a way round a folder it cannot write)."""
    try:
        action()
    except OSError as exc:
        if exc.errno == errno.EROFS:
            # A `:ro` volume: no owner can write it, so a chown is no advice.
            raise StartError(
                f"cannot write {target}: {target.parent} is mounted read-only"
                + (f"; {when_read_only}" if when_read_only else "")
            ) from None
        if exc.errno in (errno.EEXIST, errno.ENOTDIR) and os.path.isfile(exc.filename or ""):
            raise StartError(
                f"cannot write {target}: {exc.filename} is a file where a folder should be"
            ) from None
        if exc.errno not in (errno.EACCES, errno.EPERM):
            raise StartError(f"cannot write {target} ({exc.strerror})") from None
        # Named by what the user mounts, never by the temporary file beside it.
        blocked = in_the_way(target)
        said = not_writable(
            blocked,
            owner_of(blocked),
            os.getuid(),
            os.getgid(),
            where="; in a container, on the host the folder mounted there",
        )
        raise StartError(
            f"cannot write {target} ({exc.strerror}): {said}"
            + (f", or {otherwise}" if otherwise else "")
        ) from None


def _text_of(path: Path) -> str:
    """A file's text, or "" when it cannot be read (`check_readable` or `watchbridge` says why)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _cli_program() -> str:
    """The `watchbridge` script of this interpreter's environment, else whatever PATH finds."""
    sibling = Path(sys.executable).with_name("watchbridge")
    return str(sibling) if sibling.is_file() else "watchbridge"


def user_id_notes(environ: Mapping[str, str], uid: int, gid: int) -> list[str]:
    """PUID/PGID asking for another user than the container runs as: linuxserver.io images
    switch to them, this one does not (it never starts as root outside Home Assistant)."""
    asked = {name: environ.get(name, "").strip() for name in ("PUID", "PGID")}
    if (asked["PUID"] or str(uid), asked["PGID"] or str(gid)) == (str(uid), str(gid)):
        return []
    given = " ".join(f"{name}={value}" for name, value in asked.items() if value)
    return [
        f"{given} are set, but this image does not switch users: it runs as UID {uid} GID "
        f"{gid}, the user Docker starts it as; set that instead (docker run --user UID:GID, "
        "user: in docker-compose.yml, --user 99:100 in Unraid's Extra Parameters) and give "
        "the config and data folders to it"
    ]


def prepare(
    args: Sequence[str], paths: Paths, environ: Mapping[str, str] = os.environ
) -> StartPlan:
    """Read the inputs, plan and carry out everything before exec."""
    if args and args[0] in NO_CONFIG_ARGS:
        return plan_start(args, paths)
    options = read_options(paths.ha_options)
    token = load_or_create_token(paths.data / TOKEN_FILE) if options is not None else ""
    plan = plan_start(args, paths, options, token)
    if options is None:
        plan = replace(plan, notes=[*plan.notes, *user_id_notes(environ, os.getuid(), os.getgid())])
    elif plan.own_config is not None:
        # Read before dropping root: which options it reads, never its values.
        unread = unread_options(options, _text_of(plan.own_config))
        plan = replace(plan, notes=[*plan.notes, *unread])
    apply_plan(plan, paths)
    if plan.run_as is not None:
        become(plan.run_as, paths.data)
    if plan.own_config is not None:
        check_readable(plan.own_config, paths.config.parent)
    return plan


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Prepare, then replace this process with `watchbridge`; one line and exit 1 on failure."""
    args = list(sys.argv[1:] if argv is None else argv)
    program = _cli_program()
    try:
        plan = prepare(args, Paths.from_env(os.environ), os.environ)
        for note in plan.notes:
            print(f"watchbridge: {note}", file=sys.stderr, flush=True)
        os.execvpe(program, plan.argv, {**os.environ, **plan.env})
    except StartError as exc:
        print(f"watchbridge: {exc}", file=sys.stderr, flush=True)
    except OSError as exc:
        print(f"watchbridge: cannot run {program} ({exc.strerror})", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
