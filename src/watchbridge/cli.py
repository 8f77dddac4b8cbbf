"""The `watchbridge` command line. Expected failures print one line; `--debug` shows tracebacks."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import io
import ipaddress
import os
import re
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from watchbridge import __version__, forplex, tautulliwatched
from watchbridge import queuewords as words
from watchbridge.account_ids import Key, Learnt, listed_twice_known
from watchbridge.config import (
    SECRET_IN_HEADER_ONLY,
    Config,
    Secret,
    copied_nowhere,
    find_config,
    fits_in_url,
    load_config,
)
from watchbridge.errors import ConfigError, StoreError, Waits, WatchbridgeError
from watchbridge.homeassistant import HomeAssistantApp, app_from_environment, option_problem
from watchbridge.lastwebhooks import LastWebhook, servers_shown
from watchbridge.logs import redact_error_line
from watchbridge.narrow import ANILIST_STATUSES, Narrowing
from watchbridge.redaction import mask_tokens_stored, redactor, secret_values
from watchbridge.shown_text import on_one_line
from watchbridge.store import (
    BEHIND,
    KEPT_OFF,
    KEPT_OFF_FIX,
    KEPT_OFF_SERVICE,
    KeptOff,
    OutboxItem,
    Store,
    StoreStatus,
    SyncRun,
    backup_damage,
    backup_path,
    damaged_backup_path,
    locked_by_another,
    storage_fault,
)
from watchbridge.zone import local_time, zone_in_use

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        help="Config file (default: $WATCHBRIDGE_CONFIG, /config/watchbridge.yaml, "
        "./config/watchbridge.yaml).",
    )(func)


def _load(config_path: str | None) -> Config:
    """The config; from here on, what commands log goes through the redacting formatter
    (warnings and worse, everything with --debug)."""
    from watchbridge.logs import setup_logging

    config = load_config(find_config(config_path))
    context = click.get_current_context(silent=True)
    debug = bool(context and context.find_root().obj and context.find_root().obj.get("debug"))
    setup_logging("debug" if debug else "warning", config.logging.format, secret_values(config))
    return config


def _open_store(config: Config, create: bool = False) -> Store:
    """The service's database (see `_database`)."""
    path = _database(config, create)
    return _masking(
        config, Store.open(path, config.storage.durability, config.storage.busy_timeout)
    )


def _masking(config: Config, store: Store) -> Store:
    """`store`, with what the command logs masking the secrets it keeps (a generated webhook
    secret, the sign-ins' tokens), also those a sign-in keeps from now on."""
    from watchbridge.logs import mask_also, mask_renewed

    mask_also(secret_values(config, store))
    mask_tokens_stored(store, mask_renewed)
    return store


def _look_at_store(config: Config) -> Store:
    """The service's database for a command that only reads it: an older schema is left for
    the service to upgrade when it starts (a release still running on it would break)."""
    path = _database(config, create=False)
    store = Store.open(path, config.storage.durability, config.storage.busy_timeout, upgrade=False)
    try:
        if store.behind():  # raises StoreError for one a newer release made
            raise WatchbridgeError(
                f"the database {path} was made by an earlier watchbridge: it is upgraded when "
                "the service of this version starts; restart the service (with no service "
                "running, syncs from cron: run `watchbridge sync`), then run this again"
            )
    except Exception:
        store.close()
        raise
    return _masking(config, store)


def _database(config: Config, create: bool) -> Path:
    """Where the database is. Commands that only read or fix its state never make a new one:
    a relative storage.path run from another folder would answer from an empty database.
    Commands that make one say where."""
    path = Path(config.storage.path)
    if problem := _unreachable_folder(path):  # before anything looks at the path
        raise ConfigError(_located(config, problem))
    if path.exists():
        return path
    if backup_path(path).is_file():  # opening the store starts from it (Store.open)
        if problem := _unreadable_backup(path):  # neither started from nor found damaged
            raise WatchbridgeError(problem)
        damage = backup_damage(path)
        if damage is None:
            click.echo(
                f"watchbridge: the database starts from its backup {backup_path(path)}", err=True
            )
        else:  # Store.open sets it aside and begins a new database
            click.echo(
                f"watchbridge: the database's backup {backup_path(path)} is damaged ({damage}): "
                f"it is kept as {damaged_backup_path(path)}, and a new database begins at "
                f"{path.resolve()} (sign in again)",
                err=True,
            )
        return path
    relative = "" if path.is_absolute() else f" (storage.path {path} is relative to {Path.cwd()})"
    if create:
        click.echo(f"watchbridge: a new database at {path.resolve()}{relative}", err=True)
        return path
    hint = (
        "run the command from the service's folder, or make storage.path absolute"
        if relative
        else "the service makes it when it first starts"
    )
    raise WatchbridgeError(
        f"no database at {path.resolve()}{relative}: is this the config the service runs "
        f"with? ({hint})"
    )


def _unreadable_backup(path: Path) -> str | None:
    """Why the backup copy a missing database at `path` would start from cannot be read by
    this user (a copy taken as root, 0600), with what to do; None when it can be read."""
    copy = backup_path(path)
    if os.access(copy, os.R_OK):
        return None
    uid, gid = os.getuid(), os.getgid()
    return (
        f"the database {path} is missing and its backup {copy}{_owner_and_mode(copy)} cannot "
        f"be read by this user (uid {uid}): give it to this user (chown {uid}:{gid} {copy}), "
        "or run watchbridge as its owner; it is left as it was"
    )


def _delivery(item: OutboxItem, when: float, what: str) -> str:
    """`#id  time  target/profile  action  what` for the lists of deliveries."""
    return f"#{item.id}  {_when(when)}  {item.target}/{item.profile}  {item.action} {what}"


def _say(row: str) -> None:
    """One row of a command's list (`status`, `unmatched`, `deadletters list`): titles, server
    names and services' words in it are theirs, so what would break the row or drive the
    terminal is shown as its code (shown_text.on_one_line)."""
    click.echo(on_one_line(row))


def _when(timestamp: float | None) -> str:
    """On the user's clock (`TZ`), with its zone's short name: `2026-05-01 22:14:03 CEST`."""
    if timestamp is None:
        return "-"
    return local_time(timestamp, seconds=True)


class _Commands(click.Group):
    """The commands, which suggest the one meant for a name that is none (`check`)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            typed = args[0] if args else ""
            near = meant(typed, self.list_commands(ctx))
            if not near or "Did you mean" in exc.message:
                raise
            raise click.UsageError(
                f"{exc.message} Did you mean {' or '.join(map(repr, near))}?", exc.ctx
            ) from None


def meant(typed: str, names: list[str]) -> list[str]:
    """The commands `typed` begins (`check`: check-config), which Click's own suggestion
    (difflib's cutoff: `stauts` is `status`) finds too far off. Pure."""
    if not typed or typed.startswith("-") or typed in names:
        return []
    return [name for name in names if name.startswith(typed)][:3]


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="watchbridge")
@click.option(
    "--debug", is_flag=True, help="Show tracebacks and debug logs (also WATCHBRIDGE_DEBUG=1)."
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Keep watch history, ratings and watchlists in sync across your services."""
    ctx.obj = {"debug": debug or debug_from_environment()}


def debug_from_environment() -> bool:
    """WATCHBRIDGE_DEBUG set to anything but an empty or "off" word (0, false, no, off)."""
    value = os.environ.get("WATCHBRIDGE_DEBUG", "").strip().lower()
    return value not in {"", "0", "false", "f", "no", "n", "off"}


def _home_assistant() -> HomeAssistantApp | None:
    """The Home Assistant app, as its entrypoint marked it; None elsewhere."""
    return app_from_environment(os.environ)


@cli.command()
@config_option
@click.option(
    "--backup-on-stop",
    is_flag=True,
    help="At a clean stop, copy the database to its .backup file (the Home Assistant app does).",
)
@click.pass_context
def serve(ctx: click.Context, config_path: str | None, backup_on_stop: bool) -> None:
    """Run the service: webhooks, delivery, scheduled syncs, metrics.

    One per database: while one runs, a second on the same storage.path stops at once with exit
    code 2, naming the one running (it holds a lock on storage.path with .lock added). The other
    commands run beside it.
    """
    from watchbridge import servelock
    from watchbridge.app import webhook_secret
    from watchbridge.healthcheck import listening_file
    from watchbridge.logs import setup_logging
    from watchbridge.server import serve as run_server
    from watchbridge.wiring import build_app, build_runtime

    config = _load(config_path)
    level = "debug" if ctx.obj["debug"] else config.logging.level
    setup_logging(level, config.logging.format, secret_values(config))
    if problem := _unreachable_folder(Path(config.storage.path)):  # the lock file's folder too
        raise ConfigError(_located(config, problem))
    # One service per database, checked before anything opens it (no restore from a backup,
    # no migration, no claim of the other one's deliveries); held until this process ends.
    with servelock.hold(Path(config.storage.path), time.time()):
        # Fail before binding ports if the database cannot be opened, or (on a first start)
        # take no generated webhook secret: one line, no traceback. Later starts only read it.
        with _open_store(config, create=True) as store:
            webhook_secret(config, store, time.time())
        runtime = build_runtime(
            config, backup_on_stop=backup_on_stop, home_assistant=_home_assistant()
        )
        # Where it listens, for the image's healthcheck to ask without reading the config: in
        # the data folder of the image (and of the systemd unit), which both set.
        data_dir = os.environ.get("WATCHBRIDGE_DATA_DIR")
        # Noted alive as the stop begins: a kill before it ends is no absence at the next start.
        run_server(
            build_app(runtime),
            config,
            on_stopping=runtime.note_stopping,
            listening_file=listening_file(data_dir) if data_dir else None,
        )


@cli.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the config file and print a summary (secrets masked)."""
    from watchbridge.alerts import Notifier

    config = _load(config_path)
    problems = list(Notifier(config.alerts).invalid_urls)
    storage_problem = _storage_problem(Path(config.storage.path))
    if storage_problem:
        problems.append(storage_problem)
    from watchbridge.anime_data import overrides_problem

    if overrides := overrides_problem(config):
        problems.append(overrides)
    click.echo(_summary(config))
    if problems:
        raise ConfigError("\n".join(_located(config, problem) for problem in problems))
    from watchbridge.app import (
        ClientIdNotice,
        anilist_client_id_notice,
        renamed_links,
        renamed_profiles,
        start_warnings,
    )
    from watchbridge.filesystems import read_mountinfo

    warnings = start_warnings(config, [], mountinfo=read_mountinfo())
    notice: ClientIdNotice | None = None
    if Path(config.storage.path).exists():
        # Best effort: a database an older release made, or a busy one, is checked at start.
        try:
            with contextlib.closing(_look_at_store(config)) as store:
                warnings += [problem] if (problem := store.journal_problem) else []
                warnings += renamed_profiles(config, store.profiles_with_state())
                warnings += renamed_links(config, store.links_with_state())
                notice = anilist_client_id_notice(config, store, time.time())
                warnings += [
                    f"{twice.message} (Named as watchbridge last saw it.)"
                    for twice in listed_twice_known(config, _known_accounts(store))
                ]
        except StoreError as exc:  # one a newer release made: the service will not start
            warnings.append(exc.message)
        except (WatchbridgeError, sqlite3.Error):
            pass
    if notice is None:  # no database (yet): no profile is signed in
        notice = anilist_client_id_notice(config, None, time.time())
    warnings += [notice.warning] if notice.warning else []
    for warning in warnings:
        click.echo(f"warning: {warning}")
    if notice.info:
        click.echo(f"note: {notice.info}")
    from watchbridge.account_ids import names_beside_default

    for hint in names_beside_default(config):
        click.echo(f"note: {hint}")
    click.echo("config OK")


def _located(config: Config, problem: str) -> str:
    """`problem` ("key: what") with the config file and line in front, as every config error
    has; one naming a file of its own (the anime overrides' line) is left as it is. In the
    Home Assistant app with the options form, a key the form fills is named by its option."""
    key, found, message = problem.partition(": ")
    if not found or not re.fullmatch(r"[a-z_]+(\.[a-z_]+|\[\d+\])*", key):
        return problem
    app = app_from_environment(os.environ)
    if (
        app is not None
        and app.options_form
        and (named := option_problem(key, message, app.alert_url_entries))
    ):
        return named  # by the option the user filled in: the generated file is not theirs
    return config.problem(key, message)


def _storage_problem(path: Path) -> str | None:
    """Why the database could not be created or written at `path`, or None."""
    if problem := _unreachable_folder(path):
        return problem
    if path.is_dir():
        example = path / "watchbridge.db"
        return f"storage.path: {path} is a directory; name the database file in it, e.g. {example}"
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), None)
    if existing == path and not os.access(path, os.W_OK):
        return (
            f"storage.path: {path}: the database file is not writable by this user: give it "
            "to the user the service runs as (chown), e.g. after a restore made as root"
        )
    if existing == path and not os.access(path.parent, os.W_OK):
        # SQLite makes its journal files (-wal, -shm) beside the database at every start.
        return (
            f"storage.path: {path}: its folder {path.parent} is not writable by this user, "
            "and SQLite keeps its journal files there: give the folder to the user the "
            "service runs as (chown)"
        )
    if existing is None or not os.access(existing, os.W_OK):
        return f"storage.path: {path}: directory is not writable by this user"
    if existing.is_file() and existing != path:
        return f"storage.path: {path}: {existing} is a file, not a directory"
    return None


def _unreachable_folder(path: Path) -> str | None:
    """The first folder on the way to the database (as named, then as its symlinks lead: the
    lock file and SQLite's journal files go beside the real file) that this user cannot enter
    or that is a file, or a symlink on the way (the database file's own too) that leads round
    in a loop or to nothing, said with what to do; None when every folder that exists can be
    entered."""
    named = path.expanduser().absolute()
    if looping := _symlink_loop(named):
        where = path if looping == named else f"{path}: {looping}"
        return (
            f"storage.path: {where} is a symlink that never reaches a file or folder "
            f"(a loop of links), so the database cannot be reached: see where it points (ls -l "
            f"{looping}), then fix or remove the link, or make storage.path name the real "
            "database file"
        )
    for way in dict.fromkeys((named, Path(os.path.realpath(named)))):  # never raises (a loop)
        for folder in reversed(way.parents):
            if os.path.islink(folder) and not os.path.exists(folder):
                if _leads_nowhere(folder):
                    return _dangling(path, folder)
                break  # it cannot be followed: the real way (next) names the folder in the way
            if os.path.lexists(folder) and not os.path.isdir(folder):
                return f"storage.path: {path}: {folder} is a file, not a directory"
            if not os.path.isdir(folder):
                break  # a missing folder (made at the first start)
            if not os.access(folder, os.X_OK):
                return _cannot_enter(path, folder, folder == way.parent)
    if os.path.islink(named) and _leads_nowhere(named):
        # Followed, it would make the file where the link leads: an empty database on the
        # unmounted mount point (no sign-ins, a new webhook secret), hidden once it is mounted.
        return _dangling(path, named)
    return None


def _symlink_loop(named: Path) -> Path | None:
    """The first part of absolute path `named` (a folder on the way, or the file) that is a
    symlink in a loop, where the system gives up following it; None if there is none."""
    for part in [*reversed(named.parents), named]:
        try:
            os.stat(part)
        except OSError as exc:  # missing, or not to be entered: the other checks say those
            return part if exc.errno == errno.ELOOP else None
    return None


def _leads_nowhere(link: Path) -> bool:
    """Whether following `link` ends at nothing (not at a folder this user cannot enter)."""
    try:
        os.stat(link)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _dangling(path: Path, link: Path) -> str:
    """The one line for the database file, or a folder on the way to it, that is a symlink to
    nothing."""
    folder = link != path.expanduser().absolute()
    return (
        f"storage.path: {f'{path}: {link}' if folder else path} is a symlink to "
        f"{os.path.realpath(link)}, which does not exist (a disk not mounted, a "
        f"{'folder' if folder else 'file'} moved or renamed), so the database cannot be "
        f"reached: see where it points (ls -l {link}), then mount the disk or fix the link, or "
        f"make storage.path name the real {'folder' if folder else 'database file'}"
    )


def _owner_and_mode(path: Path) -> str:
    """` (owner uid U, mode 0700)` of `path`, as the messages about access name it; "" when it
    cannot be told."""
    try:
        info = path.stat()
    except OSError:
        return ""
    return f" (owner uid {info.st_uid}, mode {info.st_mode & 0o7777:04o})"


def _cannot_enter(path: Path, folder: Path, holds_it: bool) -> str:
    """The one line for a folder on the way to the database this user cannot enter."""
    uid, gid = os.getuid(), os.getgid()
    found = _owner_and_mode(folder)
    if holds_it:
        return (
            f"storage.path: {path}: its folder {folder}{found} cannot be entered by this user "
            f"(uid {uid}): give it to this user (chown -R {uid}:{gid} {folder}; chmod u+rwx "
            f"{folder}), or run watchbridge as its owner (Docker: user: in docker-compose.yml, "
            "--user on Unraid)"
        )
    return (
        f"storage.path: {path}: the folder {folder}{found} on its way cannot be entered by "
        f"this user (uid {uid}): let this user through it (chmod o+x {folder}), or put "
        "storage.path in a folder it can reach"
    )


def _secret_summary(secret: Secret | None) -> str:
    if not secret:
        return "generated once, kept in the database (`watchbridge webhook-urls` shows it)"
    return "set" if fits_in_url(secret.reveal()) else f"set ({SECRET_IN_HEADER_ONLY})"


def _open_to(allowed_hosts: Sequence[str]) -> str:
    """Under which names the page and API answer with no api_token (rebinding.py)."""
    names = "".join(f", {name}" for name in allowed_hosts)
    return f"none (API and UI open on this port, by IP address or local name{names})"


def _summary(config: Config) -> str:
    server = config.server
    lines = [
        f"config file:   {config.source}",
        f"listening on:  {server.host}:{server.port}"
        + (
            f" (webhooks and metrics also on :{server.webhook_port})" if server.webhook_port else ""
        ),
        f"webhook secret: {_secret_summary(server.webhook_secret)}",
        f"API token:     {'set' if server.api_token else _open_to(server.allowed_hosts)}",
        f"database:      {config.storage.path} (durability {config.storage.durability})",
        f"logging:       {config.logging.level}, {config.logging.format}",
        f"time zone:     {zone_in_use()}",
        f"alerts:        {len(config.alerts.urls)} destination(s), "
        f"kinds {', '.join(config.alerts.kinds)}, throttle {int(config.alerts.throttle)}s",
    ]
    services = config.services.configured()
    lines.append(f"services:      {', '.join(services) if services else 'none yet'}")
    # Users paste this into bug reports; a URL may carry a token or a password.
    redact = redactor(config)
    for name in services:
        section = getattr(config.services, name)
        urls = {k: redact(str(v)) for k, v in vars(section).items() if k.endswith("url") and v}
        lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in urls.items()))
    lines.append(f"profiles:      {', '.join(config.profiles) if config.profiles else 'none yet'}")
    for name, profile in config.profiles.items():
        accounts = [
            s for s in ("trakt", "plex", "serializd", "anilist") if getattr(profile.accounts, s)
        ]
        users = "; ".join(f"{k}: {', '.join(v)}" for k, v in vars(profile.users).items() if v)
        lines.append(
            f"  {name}{' (default)' if profile.default else ''}: accounts "
            f"{', '.join(accounts) or 'none'}; media users {users or 'none'}"
        )
        if gaps := copied_nowhere(config, profile):
            lines.append(
                f"    {' and '.join(gaps)} it plays are sent to no account (Serializd holds TV"
                " episodes, AniList anime; only Trakt takes every movie)"
            )
    lines.append(f"links:         {', '.join(config.links) if config.links else 'none yet'}")
    for name, link in config.links.items():
        arrow = "<->" if link.direction == "two-way" else "->"
        lines.append(
            f"  {name}: {link.services[0]} {arrow} {link.services[1]}, {', '.join(link.kinds)}, "
            f"every {int(link.interval)}s, prefer {link.prefer}"
        )
    return "\n".join(lines)


@cli.command()
@config_option
def status(config_path: str | None) -> None:
    """Whether the database takes writes, queue depth, dead letters, sign-ins, whose account
    each service is, and the last run of each link with its cursors."""
    from watchbridge import defaulted
    from watchbridge.alerts import not_sent_yet
    from watchbridge.app import anime_lines, leftovers, storage_warnings
    from watchbridge.catchupstatus import status_lines
    from watchbridge.filesystems import read_mountinfo
    from watchbridge.readers.trakt import lookups_waiting
    from watchbridge.signins import STATE_WORDS, current_sign_ins
    from watchbridge.statuspage import unlisted_fix
    from watchbridge.writecheck import write_fault

    config = _load(config_path)
    with _look_at_store(config) as store:
        state = store.status().shown(redactor(config, store))
        sign_ins = current_sign_ins(config, store, time.time())
        kept = leftovers(config, store)
        storage = storage_warnings(config, store, read_mountinfo())
        anime = anime_lines(config, store, time.time())
        last_webhooks = store.last_webhooks()
        catch_up = status_lines(config, store, time.time())
        unlisted = store.unlisted_accounts()
        taken_in = store.defaulted_accounts()
        not_by_plex = forplex.people(store.for_plex(forplex.TAKEN))
        no_watched = [seen for seen in store.tautulli_reports() if seen.no_watched]
        known = _known_accounts(store)
        twice = listed_twice_known(config, known)
        unsent = not_sent_yet(store, config.alerts, time.time()) if config.alerts.urls else []
        account_names = _account_names(store, state.cursors)
        lookups = lookups_waiting(config, store, time.time())
        # The service's own finding lives in its memory: this process tries for itself.
        fault = write_fault(store)
    outbox = state.outbox
    _say(f"database:      {config.storage.path}")
    if fault is not None:
        _say(f"storage:       {fault.title}. {' '.join(fault.message.split())}")
    for warning in storage:  # a sync from cron says them once: here every time
        _say(f"warning:       {warning}")
    if unsent:  # the alerts' destination failing: the only place left to learn of them
        named = "; ".join(condition.owed_title for condition in unsent[:3])
        more = f"; and {len(unsent) - 3} more" if len(unsent) > 3 else ""
        _say(
            f"alerts:        {len(unsent)} not sent yet: alerts.urls did not take them (last"
            f" tried {_when(unsent[-1].failed_at)}); the service sends each again once one"
            f" does (`watchbridge test-alert` tries them): {named}{more}"
        )
    # One fact a line, in the status page's words (queuewords), each under its own label.
    _say(f"{words.WAITING}:       {outbox['pending']}")
    _say(f"{words.BEING_SENT}:    {outbox['inflight']}")
    _say(f"last week:     {words.sent(state.sent)}")
    _say(f"{words.OLDEST}: {_when(state.oldest_pending_at)}")
    if state.unmatched:
        _say(f"{words.FOR_A_MATCH}: {state.unmatched} {words.UNMATCHED} ({words.LOOKED_FOR})")
    if state.behind:
        _say(f"{words.THEIR_TURN}: {state.behind} {BEHIND}")
    for held in state.waiting:
        _say(
            f"{words.ON_HOLD}:       {words.service_for(held.target, held.profile)}: "
            f"{held.rows} {words.WAITING}, next try {_when(held.next_at)}: {held.reason}"
            + (f" ({words.NOTHING_TO_DO})" if held.service_waits else "")
        )
    if state.waiting_left_out:
        _say(f"{words.ON_HOLD}:       and for {state.waiting_left_out} more reasons")
    _say(
        f"{words.GIVEN_UP}: {state.dead_letters}"
        + (f" ({words.DEAD_LETTERS}; {words.DEAD_LETTERS_FIX})" if state.dead_letters else "")
    )
    if state.kept_off:
        plays = sum(entry.plays for entry in state.kept_off)
        _say(f"kept off:      {plays} play(s) kept off a link's target for good ({KEPT_OFF_FIX})")
    _show_last_webhooks(last_webhooks)
    for caught in catch_up:  # Jellyfin's and Emby's plays the webhooks missed (catchup.py)
        _say(f"catch-up:      {caught.message}")
    for seen in unlisted:  # as the status page's Webhooks list them
        server = f" on {seen.server_shown}" if seen.server else ""
        counted = f"{seen.webhooks} webhook(s), {seen.plays} play(s) ignored"
        fix = unlisted_fix(config, seen, known.values())
        _say(
            f"unlisted:      {seen.source} account {seen.label}{server}: {counted},"
            f" last {_when(seen.last_at)}; {fix}"
        )
    for person, plays in not_by_plex:  # as the status page lists them (forplex.py)
        _say(f"not by plex:   {forplex.status_line(person, plays, config)}")
    for tautulli in no_watched:  # as the status page says it (tautulliwatched.py)
        _say(f"no watched:    {tautulliwatched.status_line(tautulli)}")
    for listed in twice:  # as the status page lists them (by the names remembered)
        _say(f"twice:         {listed.message}")
    for seen in taken_in:  # as the status page lists them
        server = f" on {seen.server_shown}" if seen.server else ""
        counted = f"{seen.webhooks} webhook(s), {seen.plays} play(s)"
        _say(
            f"default:       plays of {seen.source} account {seen.label}{server} go to the"
            f" default profile {seen.default_profile} ({counted}, last {_when(seen.last_at)});"
            f" {defaulted.fix(config, seen)}"
        )
    if sign_ins:
        _say("sign-ins:")
    for one in sign_ins:
        told = STATE_WORDS.get(one.state, one.state)
        said = one.ok or one.message.startswith(told)  # "not signed in: run ..." says it
        whose = f"{one.service} (server)" if one.service_wide else f"{one.service}/{one.profile}"
        _say(f"  {whose}: {'' if said else f'{told}: '}{one.message}")
    for leftover in kept:  # a renamed profile or link: its state waits under the old name
        _say(f"kept:          {leftover.message}")
    for line in anime:  # datasets failing, shows numbered apart, anime kept off, shows rated
        _say(f"anime:         {line}")
    _show_links(config, state, account_names, lookups)


def _known_accounts(store: Store) -> dict[Key, Learnt]:
    """The accounts profiles list, as the database remembers their names with their ids
    (account_ids.py)."""
    return {
        Key(source, server, account_id): Learnt(profile, entry, name)
        for source, server, account_id, profile, entry, name in store.webhook_account_ids()
    }


def _show_last_webhooks(last: Sequence[LastWebhook]) -> None:
    """When each source (and server it names) last had a webhook accepted, as the store
    remembers it (the service's memory may be newer by the webhooks since its last write)."""
    if not last:
        _say("webhooks:      none accepted yet")
        return
    _say("last webhook:")
    shown = servers_shown(last)  # by its name, where its webhooks give one
    for one in sorted(last, key=lambda w: (w.source, -w.at, w.server)):
        server = f" from {shown[(one.source, one.server)]}" if one.server else ""
        _say(f"  {one.source}{server}: {_when(one.at)}")


def _account_names(
    store: Store, cursors: Sequence[tuple[str, str, str, str, float]]
) -> dict[tuple[str, str], str]:
    """(service, profile) -> the name of the account on record, where its identity is an id
    that tells a user nothing (a Trakt account's uuid, an AniList user's number: its
    username, where known)."""
    from watchbridge.accounts import username_shown
    from watchbridge.store import ACCOUNT_CURSOR

    names = {}
    for service, profile, name, value, _ in cursors:
        if name == ACCOUNT_CURSOR and (
            username := username_shown(store, service, value, time.time())
        ):
            names[service, profile] = username
    return names


def _noted(
    cursors: Sequence[tuple[str, str, str, str, float]],
    names: Mapping[tuple[str, str], str],
) -> list[str]:
    """What the cursors other than the links' say that a user can act on, in words: whose
    account each service is (by `names`, where known), and why a link starts over. The rest
    is bookkeeping (checks owed, fingerprints, read positions, where keys came from): left
    out."""
    from watchbridge.accounts import restarted_cursor, shown
    from watchbridge.store import ACCOUNT_CURSOR, ENGINE

    lines = []
    for service, profile, name, value, _ in cursors:
        if name == ACCOUNT_CURSOR and value:
            known = names.get((service, profile))
            whose = f"user {known}" if known else shown(value)
            lines.append(f"account:       {service}/{profile} is {whose}")
        link = name.removeprefix(restarted_cursor(""))
        if service == ENGINE and link != name and value:
            lines.append(f"starts over:   links.{link} for {profile}: {value}")
    return lines


def _streak(run: SyncRun, state: StoreStatus) -> str:
    """For a link whose last run failed, since when: once, or for weeks? (as the status
    page says it). Pure."""
    if run.outcome != "failed":
        return ""
    went = state.last_success_at.get(run.link)
    if went is None:
        return "no run of it has gone through yet"
    return f"last went through at {_when(went)}"


def _show_links(
    config: Config,
    state: StoreStatus,
    account_names: Mapping[tuple[str, str], str],
    lookups: Mapping[str, Sequence[str]],
) -> None:
    """Each link's last run with its cursors (JSON per service and profile, shown short),
    after whose account each service is (`_noted`); under it, the shows whose Trakt release
    dates have failed for days (`lookups`: by link)."""
    from watchbridge.alerts import format_span
    from watchbridge.progress import short_cursor
    from watchbridge.store import ENGINE

    link_cursors = [c for c in state.cursors if c[2].startswith("link:")]
    noted = [c for c in state.cursors if not c[2].startswith("link:")]
    for line in _noted(noted, account_names):
        _say(line)
    runs = {run.link: run.as_seen(time.time()) for run in state.last_runs}
    names = list(config.links) + [n for n in runs if n not in config.links]
    _say(f"{words.SYNCS}:" + ("" if names else "         none yet (no links in the config)"))
    for link in names:
        run = runs.get(link)
        # Its last run that went through is kept after it was taken out (Store.prune): it
        # must not read as a link that stopped running.
        label = link if link in config.links else f"{link} (no longer in the config)"
        if run is None:
            _say(f"  {label}: not run yet")
        elif run.outcome == "running":  # no counts yet: how far it has got instead
            ran = format_span(time.time() - run.started_at)
            where = (
                f"{run.progress.words()} (as of {_when(run.progress.at)[11:]})"
                if run.progress is not None
                else "how far it has got is recorded every minute"
            )
            _say(f"  {label}: running since {_when(run.started_at)}, for {ran}; {where}")
        else:
            # A run that stopped short (failed, waiting for a review) did not find nothing to
            # do: its error says what happened instead.
            quiet = "nothing to do" if run.outcome in ("ok", "dry-run") else ""
            queued = run.outcome != "dry-run"  # its writes were queued, not only planned
            counts = (
                ", ".join(words.change(k, v, queued) for k, v in sorted(run.counts.items()) if v)
                or quiet
            )
            took = (
                f" ({run.finished_at - run.started_at:.1f} s, {run.api_calls} API requests)"
                if run.finished_at is not None
                else ""
            )
            said = "; ".join(filter(None, (counts, run.error, _streak(run, state))))
            outcome = words.outcome(run.outcome)
            _say(f"  {label}: {outcome} at {_when(run.started_at)}{took}; {said or '-'}")
        for line in lookups.get(link, ()):  # plays held while Trakt fails on a show
            _say(f"    {line}")
        for service, profile, cursor, value, _ in link_cursors:
            # The engine's own notes (when it last read in full, the kinds it synced) are
            # bookkeeping, not a side read.
            if cursor == f"link:{link}" and service != ENGINE and (told := short_cursor(value)):
                read = words.service_for(service, profile)
                _say(f"    {read} {words.READ_UP_TO}: {told}")


@cli.command()
@config_option
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The database to copy, instead of the config's storage.path (no config is read).",
)
@click.option(
    "--to",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the copy (default: the database's path with .backup added).",
)
@click.option(
    "--missing-ok",
    is_flag=True,
    help="A --database not made yet (the service never started) is nothing to copy: say so "
    "and succeed (a backup hook must not fail the whole backup).",
)
def backup(
    config_path: str | None, database: Path | None, target: Path | None, missing_ok: bool
) -> None:
    """Copy the database consistently while the service runs (for your backups); a missing
    database is started from this copy."""
    if database is not None and not database.is_file():
        if missing_ok and not database.exists():
            click.echo(
                f"no database at {database} yet (the service has not made it): nothing to copy"
            )
            return
        raise WatchbridgeError(
            f"--database {database}: no such file"
            + ("" if not database.exists() else " (it is a folder)")
        )
    if database is None:
        config = _load(config_path)
        database = _database(config, create=False)
    store = Store.open(database, upgrade=False)  # copied as it is
    with store:
        destination = target or backup_path(database)
        store.backup_to(destination)
    click.echo(f"database copied to {destination} (mode 0600: it holds sign-ins)")


@cli.command("reset-state")
@config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset_state(config_path: str | None, yes: bool) -> None:
    """Forget sync state (queue, mirrors, cursors, cache, runs); sign-ins are kept."""
    config = _load(config_path)
    if not yes:
        if not sys.stdin.isatty():
            raise WatchbridgeError("reset-state asks for confirmation; pass --yes to skip it")
        click.confirm(
            f"Forget all sync state in {config.storage.path}? Queued deliveries are lost",
            abort=True,
        )
    from watchbridge import alerts, maintenance
    from watchbridge.deliver import anilist, serializd
    from watchbridge.readers import plex

    # Plex stamps a play we copied with the time of the copy, and Serializd and AniList cannot
    # say which entries we made: without these records the full comparison takes our own
    # writes for the user's and copies them back (a second play, dated today).
    kept = (plex.WRITTEN, plex.WRITTEN_BEFORE, plex.SYNTHETIC, plex.RETIRED)
    written = [(plex.SERVICE, c) for c in kept]
    written += [
        (serializd.NAME, c) for c in (serializd.PLAYS, serializd.RATINGS, serializd.RATED_ROWS)
    ]
    # What alerts told (an open one's "Resolved" is owed; a once-per-token warning is sent).
    told = [alerts.NAMESPACE, maintenance.ALERTED]
    # What the user chose: `deadletters discard --for-good`.
    written.append((KEPT_OFF_SERVICE, KEPT_OFF))
    with _open_store(config) as store:
        running = store.reset(time.time(), written, [anilist.FINISHED, *told])
    if running:
        raise WatchbridgeError(
            f"nothing was forgotten: a sync of {', '.join(running)} is running now, and what it "
            "writes afterwards would bring part of the old state back; run reset-state again "
            "once it has finished (`watchbridge status` shows the links' runs)"
        )
    click.echo(
        "sync state cleared (the records of what watchbridge wrote are kept, and so are the "
        "plays you kept off with `deadletters discard --for-good`); "
        "the next sync starts from a full comparison"
    )


@cli.command("rename-profile")
@config_option
@click.argument("old")
@click.argument("new")
def rename_profile(config_path: str | None, old: str, new: str) -> None:
    """Keep what the database holds for profile OLD under NEW: rename it in the config first.

    Stop the service first: while it runs, this refuses (nothing moved).
    """
    from watchbridge import servelock
    from watchbridge.config import profile_gone
    from watchbridge.renames import profile_keyed_cache, queued_later

    config = _load(config_path)
    if old in config.profiles:
        raise WatchbridgeError(
            f"profile {old} is still in the config: rename it there to {new} first, then run "
            "this again"
        )
    if new not in config.profiles:
        raise WatchbridgeError(
            f"profile {new} is not in the config: rename profiles.{old} there to {new} "
            "first, then run this again"
        )
    # Held as the service holds it, so that none starts while the state moves: one running
    # goes on with the config it read at its start, under the old name.
    database = _database(config, create=False)
    try:
        held = servelock.hold(database, time.time())
    except servelock.AlreadyServing as serving:
        raise WatchbridgeError(
            "stop the service first: it still runs with the config it read at its start"
            f"{servelock.described(serving.holder)} and would go on keeping state under the "
            f"name it knows; nothing was moved. Stop it, run `watchbridge rename-profile {old} "
            f"{new}` again, then start it"
        ) from None
    with (
        held,
        Store.open(database, config.storage.durability, config.storage.busy_timeout) as store,
    ):
        moved = store.move_profile(
            old,
            new,
            profile_gone(old),
            time.time(),
            cache=profile_keyed_cache(old, new),
            queued_later=queued_later(),
        )
        if moved.refused:
            raise WatchbridgeError(moved.refused)
        for target in moved.kept.sign_ins:
            store.resume_after_sign_in(target, new, time.time())
    kept = moved.kept
    what = [
        *([f"its sign-in to {', '.join(kept.sign_ins)}"] if kept.sign_ins else []),
        *([f"the sync state of links.{', links.'.join(kept.links)}"] if kept.links else []),
        *([f"{kept.kept_off} play(s) kept off for good"] if kept.kept_off else []),
        *([f"{kept.queued} queued write(s)"] if kept.queued else []),
        *([f"{kept.dead_letters} dead letter(s)"] if kept.dead_letters else []),
    ]
    click.echo(
        f"profile {new} keeps what the database held for profile {old}: "
        f"{', '.join(what) or 'its records (of what watchbridge wrote, webhooks, playbacks)'}"
        " (its links carry on where they were, copying nothing again)"
    )
    if moved.requeued:
        click.echo(
            f"{moved.requeued} of those dead letters were given up because the config lacked "
            f"profile {old}: they are queued again, and the service sends them"
        )


@cli.command("test-alert")
@config_option
def test_alert(config_path: str | None) -> None:
    """Send one test alert to every configured Apprise URL."""
    from watchbridge.alerts import Notifier

    config = _load(config_path)
    notifier = Notifier(config.alerts)
    unusable = [f"alerts are not sent to {problem}" for problem in notifier.invalid_urls]
    result = asyncio.run(notifier.send_test())
    if result == "sent":
        reached = len(config.alerts.urls) - len(notifier.invalid_urls)
        click.echo(f"test alert sent to {reached} destination(s)")
    if unusable:  # the others would never hear of a dead letter or a lost sign-in
        raise WatchbridgeError("; ".join(unusable))
    if result == "sent":
        return
    if result == "disabled":
        raise WatchbridgeError("no alert destinations: add Apprise URLs under alerts.urls")
    raise WatchbridgeError("the test alert could not be delivered; see the warning above")


def webhook_base(host: str | None, port: int) -> str:
    """The URL watchbridge's webhooks are reached at, from `--host`: a host name or address
    (our port added), `host:port`, or a whole URL (a reverse proxy's, kept as given)."""
    if host is None:
        return f"http://WATCHBRIDGE-HOST:{port}"
    text = host.strip()
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(text).version == 6:
            text = f"[{text}]"
    given_scheme = "://" in text
    try:
        parts = urllib.parse.urlsplit(text if given_scheme else f"http://{text}")
        given_port = parts.port
    except ValueError:
        parts, given_port = None, None
    if (
        parts is None
        or not parts.hostname
        or " " in text
        or parts.scheme not in ("http", "https")
        or given_port == 0
        or parts.netloc.endswith(":")  # a port left out after its colon
    ):
        raise WatchbridgeError(
            f"--host {host!r} is not a host name, host:port or http(s) URL "
            "(e.g. nas.lan, 192.168.1.10:8765 or https://watchbridge.example.com)"
        )
    netloc = parts.netloc if given_scheme or given_port else f"{parts.netloc}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


@cli.command("webhook-urls")
@config_option
@click.option("--host", default=None, help="Host name your media server uses to reach watchbridge.")
def webhook_urls(config_path: str | None, host: str | None) -> None:
    """Print the webhook URL to paste into each media server (contains the secret)."""
    from watchbridge.app import webhook_secret

    config = _load(config_path)
    with _open_store(config, create=True) as store:
        secret = webhook_secret(config, store, time.time())
    port = config.server.webhook_port or config.server.port
    base = webhook_base(host, port)
    if host and "://" in host and urllib.parse.urlsplit(base).port is None:
        click.echo(f"(no port in --host: these go to port 80/443; watchbridge listens on {port})")
    in_url = fits_in_url(secret)
    for source in ("plex", "jellyfin", "emby", "tautulli", "generic"):
        # Quoted: # ? % and spaces arrive whole once the server decodes the path.
        tail = f"/{urllib.parse.quote(secret, safe='')}" if in_url else ""
        click.echo(f"{source:9} {base}/webhooks/{source}{tail}")
    if not in_url:
        click.echo(f"The webhook secret is not in these URLs: {SECRET_IN_HEADER_ONLY}.")
    click.echo("Keep these private: anyone with the URL can post plays for your profiles.")


@cli.group()
def auth() -> None:
    """Sign in to a service."""


@auth.command("trakt")
@config_option
@click.option(
    "--profile", "profile_name", default=None, help="Profile to sign in (default: the only one)."
)
def auth_trakt(config_path: str | None, profile_name: str | None) -> None:
    """Sign in to Trakt with a code shown here (OAuth device flow); tokens stay in the database."""
    from watchbridge.services.trakt import DeviceCode
    from watchbridge.trakt_signin import sign_in

    config = _load(config_path)
    if config.services.trakt is None:
        raise WatchbridgeError(
            "services.trakt is not configured: add your Trakt app's client_id (and its "
            "client_secret, if you want it sent)"
        )
    name = _pick_profile(config, profile_name, "trakt")

    def show(code: DeviceCode) -> None:
        click.echo(f"Open {code.verification_url} and enter the code {code.user_code}")
        click.echo(f"(the code is valid for {int(code.expires_in // 60)} minutes; waiting...)")

    with _open_store(config, create=True) as store:
        done = asyncio.run(sign_in(config, store, name, show))
        # Whose account approved the code: a household member's, approved by mistake, shows.
        whose = f" as {on_one_line(done.username)}" if done.username else ""
        click.echo(f"profile {name} is signed in to Trakt{whose}")
        for note in done.notes:
            click.echo(note)
        if done.warning:
            click.echo(f"warning: {done.warning}", err=True)


@auth.command("plex")
@config_option
@click.option(
    "--profile", "profile_name", default=None, help="Profile to sign in (default: the only one)."
)
@click.option(
    "--home-user",
    "home_user",
    default=None,
    help="Sign in as this Plex Home member (e.g. a managed user) with the owner's token.",
)
@click.option("--pin", "home_pin", default=None, help="The home member's PIN, if protected.")
def auth_plex(
    config_path: str | None,
    profile_name: str | None,
    home_user: str | None,
    home_pin: str | None,
) -> None:
    """Sign in to plex.tv with a link shown here (PIN flow); the token stays in the database.

    With services.plex.url set, the person's own token for that server is then found through
    plex.tv and kept as well (their plex.tv token is not one)."""
    import uuid

    from watchbridge.http import ServiceError
    from watchbridge.readers.plex import ServerTokens, identity, plex_client
    from watchbridge.services.plextv import Pin, PlexTvClient

    if home_pin is not None and home_user is None:
        raise click.UsageError("--pin is a Plex Home member's PIN: it goes with --home-user NAME")
    config = _load(config_path)
    if config.services.plex is None:
        raise WatchbridgeError("services.plex is not configured: add a `plex:` section")
    name = _pick_profile(config, profile_name, "plex")
    owner_token = config.services.plex.token
    if home_user is not None and owner_token is None:
        raise WatchbridgeError("--home-user needs the owner's token in services.plex.token")

    def show(pin: Pin, url: str) -> None:
        click.echo(f"Open {url}")
        minutes = int((pin.expires_in or 1800) // 60)
        click.echo(f"and sign in to Plex to approve (valid for {minutes} minutes; waiting...)")

    with _open_store(config, create=True) as store:
        # Tokens are bound to the client identifier: the one the server adapter uses, forever.
        identifier = store.setting("plex_client_identifier", lambda: uuid.uuid4().hex, time.time())
        client = PlexTvClient(config.services.plex, store, client_identifier=identifier)

        async def sign_in() -> str:
            try:
                if home_user is not None and owner_token is not None:
                    member = await client.sign_in_home_user(
                        name, owner_token.reveal(), home_user, home_pin
                    )
                    return member.title
                return (await client.sign_in(name, show)).username
            finally:
                await client.aclose()

        username = asyncio.run(sign_in())
        click.echo(f"profile {name} is signed in to plex.tv as {username}")
        _resume_waiting(store, "plex", "Plex", name)
        if config.services.plex.url and not identity(config, store, name).pasted:

            async def server_token() -> None:
                plex = plex_client(config, store, time.time)
                tokens = ServerTokens(config, store, plex, time.time)
                try:
                    await tokens.find(name)
                finally:
                    await tokens.aclose()
                    await plex.aclose()

            try:
                asyncio.run(server_token())
                click.echo("their token for the Plex server was found through plex.tv and kept")
            except ServiceError as exc:  # signed in all the same; the link run tries again
                click.echo(f"no token for the Plex server yet: {exc.message}", err=True)


@auth.command("anilist")
@config_option
@click.option(
    "--profile", "profile_name", default=None, help="Profile to sign in (default: the only one)."
)
@click.option(
    "--token",
    "pasted",
    default=None,
    help="A token (or the pin page's whole URL) to store, instead of asking for it.",
)
def auth_anilist(config_path: str | None, profile_name: str | None, pasted: str | None) -> None:
    """Sign in to AniList: open the link shown, approve, paste what the page shows.

    With services.anilist.client_secret set the page shows a code (authorization-code grant);
    without it the page shows the token itself (implicit grant). Tokens last a year and cannot
    be refreshed: run this again when watchbridge warns that the token expires soon."""
    from watchbridge.logs import mask_also
    from watchbridge.services.anilist import (
        AniListAuthError,
        AniListClient,
        Viewer,
        pasted_token,
        sign_in_page,
    )

    config = _load(config_path)
    anilist = config.services.anilist
    if anilist is None:
        raise WatchbridgeError(
            "services.anilist is not configured: add `anilist: {client_id: ...}` under services"
        )
    name = _pick_profile(config, profile_name, "anilist")
    code_flow = anilist.client_secret is not None
    # Asked before the store opens: a config to fix first should leave no new database behind.
    page = sign_in_page(anilist, "code" if code_flow else "token") if pasted is None else ""
    with _open_store(config, create=True) as store:
        client = AniListClient(anilist, store)
        if pasted is None:
            click.echo(f"Open {page}")
            click.echo("approve watchbridge, then paste what the page shows here")
            pasted = str(click.prompt("code" if code_flow else "token", hide_input=True))
        # In no config and, if AniList refuses it, never kept: an answer quoting it is masked.
        mask_also([pasted_token(pasted)])

        async def sign_in(text: str) -> Viewer:
            try:
                if code_flow and text.strip().count(".") != 2:  # a code, not a JWT
                    return await client.exchange_code(name, text)
                try:
                    return await client.use_token(name, text)
                except AniListAuthError as exc:
                    if "copy it again" in exc.message:
                        raise
                    # Mostly a token cut short when copied: "Invalid token" alone says nothing.
                    raise AniListAuthError(
                        f"{exc.said}: copy it again, whole, from "
                        "the page AniList shows once you approve, or open the link again for a "
                        "new one",
                        exc.status,
                    ) from None
            finally:
                await client.aclose()

        viewer = asyncio.run(sign_in(pasted))
        days = client.expires_in_days(name)
        until = f"; the token expires in {int(days)} days" if days is not None else ""
        click.echo(f"profile {name} is signed in to AniList as {viewer.name}{until}")
        _resume_waiting(store, "anilist", "AniList", name)


def _resume_waiting(store: Store, target: str, service: str, profile: str) -> None:
    """After a sign-in: the profile's rows a missing or refused sign-in to `target` held (for
    up to half an hour) become due now."""
    from watchbridge.signins import waited_for_sign_in

    if resumed := store.resume_after_sign_in(target, profile, time.time()):
        click.echo(waited_for_sign_in(resumed, profile, service))


def _pick_profile(config: Config, wanted: str | None, service: str) -> str:
    with_account = [n for n, p in config.profiles.items() if getattr(p.accounts, service)]
    if wanted is not None:
        if wanted not in config.profiles:
            raise WatchbridgeError(f"no profile {wanted!r} in {config.source}")
        if wanted not in with_account:
            raise WatchbridgeError(
                f"profiles.{wanted}.accounts.{service} is not set: add `{service}: {{}}` there"
            )
        return wanted
    if len(with_account) == 1:
        return with_account[0]
    if not with_account:
        raise WatchbridgeError(f"no profile has accounts.{service}: add one to {config.source}")
    raise WatchbridgeError(
        f"several profiles use {service}: pass --profile ({', '.join(with_account)})"
    )


@cli.command()
@config_option
@click.option("--link", "link_name", default=None, help="The link to sync (default: every link).")
@click.option(
    "--direction",
    default=None,
    metavar="WAY",
    help="This run only: two-way, or one way such as trakt-to-serializd.",
)
@click.option("--dry-run", is_flag=True, help="Show the plan with reasons; write nothing.")
@click.option("--yes", is_flag=True, help="Write a first run's plan without a dry run first.")
@click.option(
    "--confirm-removals",
    is_flag=True,
    help="Write removals the guard held back (reads everything again to find them).",
)
@click.option("--full", is_flag=True, help="Read everything, skipping the cheap change checks.")
@click.option(
    "--anilist-id",
    "anilist_ids",
    type=int,
    multiple=True,
    metavar="ID",
    help="This run only: just this AniList title (repeatable); links with an anilist side. "
    "Moves no baseline or cursor: the next normal run still compares everything.",
)
@click.option(
    "--anilist-status",
    "anilist_statuses",
    type=click.Choice(ANILIST_STATUSES, case_sensitive=False),
    multiple=True,
    help="This run only: just the AniList entries in this list status (repeatable), "
    "e.g. completed or current; like --anilist-id otherwise.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Actions to list per profile.",
)
def sync(
    config_path: str | None,
    link_name: str | None,
    direction: str | None,
    dry_run: bool,
    yes: bool,
    confirm_removals: bool,
    full: bool,
    anilist_ids: tuple[int, ...],
    anilist_statuses: tuple[str, ...],
    limit: int,
) -> None:
    """Compare both sides of a link, show what differs and why, and write the changes.

    On a terminal a progress bar follows the reads and a table sums the run up; elsewhere
    (cron, pipes) the same summary comes as one `summary PROFILE SIDE: key=value ...` line per
    profile and side.

    --anilist-id and --anilist-status narrow the run to those AniList entries, both ways: only
    their plays and ratings are planned and queued. Such a run saves no baseline or cursor
    (only the plays it queued, so they are known when read back), so the next normal run
    still sees every other change and removes nothing."""
    from watchbridge.maintenance import housekeeping
    from watchbridge.narrow import narrowing
    from watchbridge.scheduler import resolve_removed
    from watchbridge.sync import (
        LinkBusy,
        NeedsReview,
        causes_of,
        failure_of,
        link_named,
        report_run,
        report_waiting,
        syncable,
        with_direction,
    )
    from watchbridge.wiring import build_runtime

    config = _load(config_path)
    if link_name is None and direction is not None:
        raise WatchbridgeError("--direction names a link's services: pass --link NAME with it")
    narrowed = narrowing(anilist_ids, anilist_statuses)
    names = [link_name] if link_name else [n for n, ln in config.links.items() if syncable(ln)]
    if narrowed is not None and link_name is None:
        names = [n for n in names if "anilist" in config.links[n].services]
    if not names:
        raise WatchbridgeError(f"no link to sync: add one under links in {config.source}")
    for name in names:  # a mistyped name (or direction) makes no database
        with_direction(link_named(config, name), name, direction)
    _database(config, create=True)  # says so when the database is new
    runtime = build_runtime(config, home_assistant=_home_assistant())
    runtime.open()  # alerts and recoveries shared with the service's (alerts.SharedConditions)
    _storage_warnings_once(runtime)
    failed, reviewing = [], []
    try:
        _restore_told_once(runtime)
        for name in names:
            try:
                _sync_link(
                    runtime, name, direction, dry_run, yes, confirm_removals, full, limit, narrowed
                )
                if not dry_run:
                    asyncio.run(report_run(runtime.store, runtime.notifier, name, None))
            except WatchbridgeError as exc:
                if isinstance(exc, Waits):  # no failure: what it waits for has its own alert
                    asyncio.run(report_waiting(runtime.notifier, exc))
                elif not isinstance(exc, LinkBusy):  # another run's outcome is that run's
                    failure, causes = failure_of(exc), causes_of(exc)
                    asyncio.run(report_run(runtime.store, runtime.notifier, name, failure, causes))
                if isinstance(exc, Waits):  # no error: it runs once what it waits for is there
                    click.echo(f"{name}: {exc.message}", err=True)
                    continue
                if len(names) == 1:
                    raise
                if isinstance(exc, NeedsReview) and failure_of(exc) is None:  # no failure
                    click.echo(f"{name}: {exc.message}", err=True)
                    reviewing.append(name)
                    continue
                if isinstance(exc, LinkBusy):  # the service (or another sync) runs it now
                    click.echo(f"skipped: {exc.message}", err=True)
                    continue
                # The other links still run.
                click.echo(redact_error_line(f"error: {exc.message}"), err=True)
                failed.append(name)
    finally:
        # Pruning and the sign-in checks, which a setup running only this from cron lacks
        # (a failing link most of all), and the alerts of links, services, profiles and
        # accounts taken out of the config.
        try:
            asyncio.run(housekeeping(runtime))
            asyncio.run(resolve_removed(runtime))
        finally:
            runtime.close()
    if failed or reviewing:
        raise WatchbridgeError(not_synced(len(names), failed, reviewing))


def not_synced(links: int, failed: Sequence[str], reviewing: Sequence[str]) -> str:
    """What a sync of every link ends with when some did not go through: those that failed,
    and those whose first sync waits for its review (no failure, but nothing of it is written
    until the user reviews it: the command does not end as done). Pure."""
    told = [f"{len(failed)} of {links} links failed: {', '.join(failed)}"] if failed else []
    if reviewing:
        waits = "waits for its" if len(reviewing) == 1 else "wait for their"
        whom = f"{len(reviewing)}" if failed else f"{len(reviewing)} of {links} links"
        see = f"see it with `watchbridge sync --link {reviewing[0]}"
        if len(reviewing) > 1:
            see = "see each with `watchbridge sync --link NAME"
        told.append(
            f"{whom} {waits} first sync's review: {', '.join(reviewing)} ({see} --dry-run`)"
        )
    return "; ".join(told)


STORAGE_TOLD = "storage_warnings_told"  # setting: what `sync` last said of the database's place


def _storage_warnings_once(runtime: Any) -> None:
    """What the service's start says of where the database is kept (a network or FUSE
    filesystem, no WAL mode), said by a sync once, and again when it changes: from cron a
    sync's output is mailed, and the same lines every half hour would be noise that hides
    real errors. `watchbridge status` says them every time."""
    from watchbridge.app import storage_warnings
    from watchbridge.filesystems import read_mountinfo

    warnings = storage_warnings(runtime.config, runtime.store, read_mountinfo())
    if runtime.store.newly_told(STORAGE_TOLD, "\n".join(warnings), runtime.clock()):
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)


def _restore_told_once(runtime: Any) -> None:
    """A backup copy put back, as the service's start tells it (a setup running only this
    from cron has no service to start): one line, on stderr (what cron mails), and the
    `downtime` alert, in the same words; once, by whichever process forgets it first (an alert
    that does not get through is kept, and sent again)."""
    from watchbridge.downtime import RESTORED_TITLE, restore_key, restore_notice

    copied = runtime.store.tell_restore(by_service=False)
    if copied is None:
        return
    notice = restore_notice(copied)
    click.echo(f"warning: {notice}", err=True)
    asyncio.run(runtime.notifier.notify("downtime", RESTORED_TITLE, notice, restore_key(copied)))


# What a sync waiting for a review says of the changes it delivered meanwhile: the link's
# other profiles', or the kinds of a profile that do not wait.
REVIEW_NOT_AMONG = "what waits for your review is not among them"


def _sync_link(
    runtime: Any,
    name: str,
    direction: str | None,
    dry_run: bool,
    yes: bool,
    confirm_removals: bool,
    full: bool,
    limit: int,
    narrowed: Narrowing | None = None,
) -> None:
    from contextlib import nullcontext

    from rich.console import Console

    from watchbridge.config import link_profiles
    from watchbridge.plexlink import lists_summary
    from watchbridge.progress import (
        DeliveryBar,
        LiveProgress,
        RunStats,
        render_table,
        summary_rows,
    )
    from watchbridge.review import apply_line, plan_lines
    from watchbridge.sync import NeedsReview, dry_run_waits, outbox_rows, run_link

    config = runtime.config
    terminal = sys.stdout.isatty()
    console = Console(highlight=False)
    profiles = link_profiles(config, config.links[name]) if name in config.links else []
    stats = LiveProgress(console, name, profiles) if terminal else RunStats()
    started = time.monotonic()
    try:
        with stats if isinstance(stats, LiveProgress) else nullcontext():
            result = asyncio.run(
                run_link(
                    config,
                    runtime.store,
                    name,
                    dry_run=dry_run,
                    yes=yes,
                    confirm_removals=confirm_removals,
                    full=full,
                    direction=direction,
                    progress=stats,
                    alerts=runtime.notifier,
                    narrowing=narrowed,
                    metrics=runtime.metrics,
                )
            )
    except NeedsReview as exc:  # what does not wait for the review was queued: deliver it
        for failure in exc.failures:
            click.echo(redact_error_line(f"error: {failure}"), err=True)
        _held_removals(runtime, name, exc.held, _whole(direction, narrowed, exc.held_unread))
        delivered = asyncio.run(_deliver_now(runtime))
        if delivered:
            click.echo(f"{delivered} change(s) delivered now ({REVIEW_NOT_AMONG})")
        raise
    seconds = time.monotonic() - started
    if narrowed is not None:
        click.echo(f"narrowed to {narrowed.describe()}: no baseline or cursor was moved")
    for line in plan_lines(result.plans, name, limit, confirm_removals):
        click.echo(line)
    for line in lists_summary(result.lists):
        click.echo(line)
    if dry_run:
        for held in result.held:
            click.echo(f"held: {held}")
    else:
        whole = _whole(direction, narrowed, result.held_unread)
        _held_removals(runtime, name, result.held, resolve=whole)
    rows = summary_rows(
        result.plans,
        config.links[name].services,
        stats,
        lambda profile, actions: len(outbox_rows(name, profile, actions)[0]),
        applied=not dry_run,
        confirm_removals=confirm_removals,
    )
    outcome = "dry run" if dry_run else result.outcome
    title = f"{name}: {outcome}, {result.api_calls} API requests in {seconds:.1f} s"
    if terminal:
        render_table(console, title, rows)
    else:
        for row in rows:
            click.echo(row.plain())
        click.echo(f"run {title}")
    if dry_run:
        click.echo("dry run: nothing was written")
        _parts_failed(name, result)
        link = config.links[name]
        if narrowed is None and not yes and dry_run_waits(link, result):
            click.echo(apply_line(name, direction))  # the next step, as the page's review has it
        return
    if result.skipped:
        click.echo(f"{result.skipped} planned write(s) name items no service can take yet")
    if terminal and result.queued:
        with DeliveryBar(console, result.queued) as bar:
            delivered = asyncio.run(_deliver_now(runtime, bar.update))
    else:
        delivered = asyncio.run(_deliver_now(runtime))
    counts = runtime.store.outbox_counts()
    left = counts["pending"] + counts["inflight"]
    rest = f"; {_where_the_rest_go(Path(config.storage.path))}" if left else ""
    click.echo(
        f"{result.queued} change(s) queued, {delivered} delivered now{rest}"
        " (see `watchbridge status`)"
    )
    _parts_failed(name, result)


def _where_the_rest_go(database: Path) -> str:
    """Who delivers what a sync run leaves queued (not due yet, or held): the running
    service, or with none (syncs from cron only) the next run; unsure when the lock file
    cannot be looked at."""
    from watchbridge import servelock

    seen = servelock.serving(database)
    if seen.running:
        return "the rest follow from the running service"
    if seen.running is None:
        return (
            f"could not tell whether a service is running ({seen.doubt}): the rest follow "
            "from the service if one runs, else from the next `watchbridge sync` (those due "
            "by then) or `watchbridge serve`"
        )
    return (
        "no service is running: the rest go out with the next `watchbridge sync`"
        " (those due by then) or `watchbridge serve`"
    )


def _whole(direction: str | None, narrowed: Any, held_unread: bool) -> bool:
    """Whether a run planned every removal a profile may hold: both ways, not narrowed, and
    every profile that held some was read."""
    return direction in (None, "two-way") and narrowed is None and not held_unread


def _held_removals(runtime: Any, name: str, held: Sequence[str], resolve: bool) -> None:
    """Say which removals a run holds, how to apply them, and alert (as the service does);
    `resolve`: none held after a run of every profile both ways ends the alert."""
    from watchbridge.guard import BEFORE_CONFIRMING
    from watchbridge.sync import report_held

    for what in held:
        click.echo(f"held: {what}")
    if held:
        click.echo(f"  (apply them with `watchbridge sync --link {name} --confirm-removals`)")
        click.echo(f"  {BEFORE_CONFIRMING}")
    if held or resolve:
        asyncio.run(report_held(runtime.notifier, name, held, resolve))


def _parts_failed(name: str, result: Any) -> None:
    """Fail a run that went through for some of the link's profiles or parts, saying which not."""
    from watchbridge.sync import PartsFailed

    if result.errors:
        raise PartsFailed(
            f"links.{name}: done for the other profiles, but not for {'; '.join(result.errors)}",
            result.failure_causes,
        )
    if result.lists.errors:
        raise PartsFailed(
            f"links.{name}: history and ratings are done, but not the watchlist or collection "
            f"of {'; '.join(result.lists.errors)}",
            result.failure_causes,
        )


async def _deliver_now(runtime: Any, on_pass: Callable[[int], None] | None = None) -> int:
    """Deliver what is due right away, as the running service would (claims are atomic, so
    both can work side by side, each leaving the targets and profiles the other one is
    delivering to alone: `Store.claim`); returns how many rows were settled. `on_pass`
    hears how many so far after each pass (a progress bar)."""
    from watchbridge import servelock
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.wiring import make_targets

    # With no service running, no start of one gives up what the edited config no longer
    # allows (a link or service taken out): this run does, or it would send it.
    alone = servelock.serving(Path(runtime.config.storage.path)).running is False
    worker = DeliveryWorker(make_targets, runtime.config.delivery, role="cli", judge_config=alone)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    before = runtime.store.outbox_counts()["done"]
    try:
        for _ in range(1000):
            if not await worker.pass_once(runtime):
                break
            if on_pass is not None:
                on_pass(int(runtime.store.outbox_counts()["done"] - before))
    except BaseException as exc:
        # Stopped half-way: what this run claimed goes back to the service at once, with no
        # attempt spent when the user stopped it (Ctrl-C).
        stopped = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
        runtime.store.release_claims(
            runtime.clock(), worker.worker_id, not stopped, runtime.config.delivery.retry_after
        )
        raise
    finally:
        for target in worker.targets.values():
            await target.aclose()
    return int(runtime.store.outbox_counts()["done"] - before)


@cli.group()
def deadletters() -> None:
    """Deliveries that gave up: list, retry or discard them."""


@cli.command()
@config_option
@click.option("--payload", is_flag=True, help="Also print each webhook event as received.")
def unmatched(config_path: str | None, payload: bool) -> None:
    """Show deliveries waiting for ids a service can use, with the reason."""

    config = _load(config_path)
    with _look_at_store(config) as store:
        waiting = store.unmatched()
        behind = store.waiting_behind(unmatched_only=True)
        redact = redactor(config, store)
    if not waiting:
        click.echo("nothing unmatched")
        return
    for entry in waiting:
        item = entry.item
        _say(
            f"{_delivery(item, item.created_at, item.describe())}  next try "
            f"{_when(item.next_attempt_at)}: "
            f"{redact(item.last_error or '')}"
        )
        if payload and entry.event is not None:
            click.echo(f"    event: {redact(entry.event)}")
        if payload and entry.raw is not None:  # a Plex URL in it may hold X-Plex-Token
            click.echo(f"    sent:  {redact(entry.raw)}")
    if behind:
        click.echo(
            f"and {behind} more waiting behind these: later deliveries of the same items, "
            "which go out in order once these are delivered or given up"
        )
    click.echo("to give one up (it is never sent): `watchbridge deadletters discard ID`")


class _RowId(click.ParamType[int]):
    """An outbox row's id, as `deadletters list` shows it (`#12`) or bare (`12`)."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        digits = str(value).strip().removeprefix("#")
        if not (digits.isascii() and digits.isdigit()):
            self.fail(
                f"{value!r} is not a row id: a number, as `deadletters list` shows it", param, ctx
            )
        return int(digits)


ROW_ID = _RowId()


@deadletters.command("list")
@config_option
@click.option(
    "--for-good",
    is_flag=True,
    help="Show instead the plays kept off with `discard --for-good` (undo: `allow`).",
)
def deadletters_list(config_path: str | None, for_good: bool) -> None:
    """Show every dead letter with its reason."""
    config = _load(config_path)
    with _look_at_store(config) as store:
        dead = [] if for_good else store.dead_letters()
        kept = store.kept_off()
        redact = redactor(config, store)
    if for_good:
        _list_kept_off(kept)
        return
    if not dead:
        click.echo("no dead letters")
    for item in dead:
        again = f" ({item.discarded_before()})" if item.discarded_before() else ""
        _say(
            f"{_delivery(item, item.updated_at, item.describe())}  "
            f"{redact(item.last_error or '')}{again}"
        )
    if kept:
        click.echo(
            f"and {len(kept)} play(s) kept off a link's target for good: "
            "see `watchbridge deadletters list --for-good`"
        )


def _list_kept_off(kept: list[KeptOff]) -> None:
    if not kept:
        click.echo("no plays kept off")
        return
    for entry in kept:
        _say(
            f"#{entry.row}  {_when(entry.since)}  {entry.target}/{entry.profile}  play "
            f"{entry.item} watched {_when(entry.at)}: links.{entry.link} does not copy it "
            "there"
        )
    click.echo("to let a link copy one again: `watchbridge deadletters allow ID`")


@deadletters.command("retry")
@config_option
@click.argument("ids", nargs=-1, type=ROW_ID)
@click.option("--all", "every", is_flag=True, help="Retry every dead letter.")
def deadletters_retry(config_path: str | None, ids: tuple[int, ...], every: bool) -> None:
    """Queue dead letters again (by id, or --all); the running service picks them up."""
    from watchbridge.deadletters import retry_dead_letters
    from watchbridge.deliver.worker import IDLE_WAKE_SECONDS

    _require_selection(ids, every, "dead letter ids (see `watchbridge deadletters list`)")
    config = _load(config_path)
    with _open_store(config) as store:
        outcome = retry_dead_letters(config, store, None if every else ids, time.time())
    within = f": the service sends them within {int(IDLE_WAKE_SECONDS // 60)} minutes"
    for line in outcome.lines(within):
        click.echo(line)
    _refuse_unknown(outcome.unknown)


@deadletters.command("discard")
@config_option
@click.argument("ids", nargs=-1, type=ROW_ID)
@click.option("--all", "every", is_flag=True, help="Discard every dead letter.")
@click.option(
    "--for-good",
    is_flag=True,
    help="Plays a link copied: also keep the link from copying them there again "
    "(`list --for-good` shows them, `allow` undoes it).",
)
def deadletters_discard(
    config_path: str | None, ids: tuple[int, ...], every: bool, for_good: bool
) -> None:
    """Delete dead letters (by id, or --all), or by id deliveries `watchbridge unmatched`
    lists (never sent). A play a link copied is copied again at the link's next full read
    while the other side lacks it, unless discarded --for-good."""
    from watchbridge.sync import kept_off_of

    _require_selection(ids, every, "dead letter ids (see `watchbridge deadletters list`)")
    config = _load(config_path)
    now = time.time()
    with _open_store(config) as store:
        dead = store.dead_letters()
        # `--all` is the dead letters: what still waits to go out is given up by id only.
        waiting = [] if every else [e.item for e in store.unmatched() if e.item.id in ids]
        unknown = _not_dead_letters(dead + waiting, ids)
        chosen = (dead if every else [item for item in dead if item.id in ids]) + waiting
        plays = [k for item in chosen if (k := kept_off_of(item, now)) is not None]
        if for_good:
            count = store.keep_off(plays)
        else:
            count = store.discard_dead(None if every else list(ids))
            count += store.discard_unmatched([item.id for item in waiting])
    click.echo(_discarded(count, waiting, len(chosen) - len(waiting)))
    if for_good:
        copied = {entry.row for entry in plays}
        others = [item for item in chosen if item.id not in copied]
        if count:
            click.echo(
                f"{count} play(s) kept off: their links do not copy them there again "
                "(`watchbridge deadletters list --for-good`; undo: `watchbridge deadletters "
                "allow ID`)"
            )
        if others:
            listed = ", ".join(f"#{i.id}" for i in others[:10]) + (", ..." if others[10:] else "")
            left = "as dead letter(s)" if all(i.status == "dead" for i in others) else "as is"
            click.echo(
                f"{len(others)} left {left}, no link's copy of a play: {listed} "
                "(discard them without --for-good)"
            )
        if others and not every:
            raise WatchbridgeError("--for-good keeps off only the plays a link copied")
    elif plays:
        click.echo(
            f"{len(plays)} of them a link's copy of a play: the link copies it again at its "
            "next full read while the other side lacks it (to keep one off, discard it with "
            "--for-good)"
        )
    if unknown:
        raise WatchbridgeError(
            f"not a dead letter: {', '.join(str(i) for i in unknown)} (see `watchbridge "
            "deadletters list`), nor a delivery waiting for ids (see `watchbridge unmatched`)"
        )


def _discarded(count: int, waiting: Sequence[OutboxItem], dead: int) -> str:
    """How many rows `deadletters discard` deleted, named by what they were."""
    if not waiting:
        return f"{count} dead letter(s) discarded"
    if not dead:
        return f"{count} delivery(ies) waiting for ids discarded: never sent"
    return f"{count} dead letter(s) and deliveries waiting for ids discarded (those never sent)"


@deadletters.command("allow")
@config_option
@click.argument("ids", nargs=-1, type=ROW_ID)
@click.option("--all", "every", is_flag=True, help="Allow every play kept off.")
def deadletters_allow(config_path: str | None, ids: tuple[int, ...], every: bool) -> None:
    """Let links copy again plays kept off with `discard --for-good` (by id, as
    `list --for-good` shows them, or --all): at their next full read."""
    _require_selection(
        ids, every, "ids of plays kept off (see `watchbridge deadletters list --for-good`)"
    )
    config = _load(config_path)
    with _open_store(config) as store:
        known = {entry.row for entry in store.kept_off()}
        count = store.allow_kept_off(None if every else list(ids))
    click.echo(
        f"{count} play(s) allowed again: their links copy them at their next full read "
        "(daily, or `watchbridge sync --full`) while the other side lacks them"
    )
    unknown = [i for i in ids if i not in known]
    if unknown:
        listed = ", ".join(str(i) for i in unknown)
        raise WatchbridgeError(
            f"not a play kept off: {listed} (see `watchbridge deadletters list --for-good`)"
        )


def _not_dead_letters(dead: list[OutboxItem], ids: tuple[int, ...]) -> list[int]:
    known = {item.id for item in dead}
    return [i for i in ids if i not in known]


def _refuse_unknown(ids: list[int]) -> None:
    if ids:
        listed = ", ".join(str(i) for i in ids)
        raise WatchbridgeError(f"not a dead letter: {listed} (see `watchbridge deadletters list`)")


def _require_selection(ids: tuple[int, ...], every: bool, what: str) -> None:
    """A `deadletters` command names `what` it acts on, or --all: naming nothing, or both, is
    a mistake on the command line (exit code 2, before the config is read). Both would act on
    every row where the user named a few."""
    if not ids and not every:
        raise click.UsageError(f"name {what} or --all", click.get_current_context())
    if ids and every:
        raise click.UsageError(
            f"name {what} or --all, not both: --all takes every one", click.get_current_context()
        )


@cli.group()
def anime() -> None:
    """Anime mapping (AniList ⇄ TMDB/TVDB): why an entry maps where it does, what does not."""


async def _anime_index(config: Config, offline: bool) -> Any:
    from watchbridge.anime_data import from_config

    data = from_config(config)
    try:
        index = data.cached_index() if offline else await data.index()
    finally:
        await data.aclose()
    for status in data.status():
        if status.error:
            click.echo(f"warning: {status.error}", err=True)
        elif not status.cached:
            click.echo(f"warning: anime dataset {status.name} is not downloaded yet", err=True)
    return index


@anime.command("explain")
@config_option
@click.argument("anilist_id", type=int)
@click.option("--offline", is_flag=True, help="Use the cached datasets; download nothing.")
def anime_explain(config_path: str | None, anilist_id: int, offline: bool) -> None:
    """Show the mapping chain used for one AniList id, with every dataset's answer."""
    config = _load(config_path)
    index = asyncio.run(_anime_index(config, offline))
    for line in index.explain(anilist_id):
        click.echo(line)


@anime.command("unmatched")
@config_option
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="One line per episode, as recorded (by default, a show's episodes are one line).",
)
def anime_unmatched(config_path: str | None, every: bool) -> None:
    """List AniList entries and plays that could not be mapped, by title, why, and the fix."""
    from watchbridge.anime_data import group_unmatched, unmatched_records
    from watchbridge.deliver.anilist import NAME, SKIPPED, skipped_titles

    config = _load(config_path)
    profiles = list(config.profiles) or ["default"]
    with _look_at_store(config) as store:
        records = unmatched_records(store, profiles)
        skipped = {p: skipped_titles(store.mirror_get(NAME, p, SKIPPED)) for p in profiles}
    for profile, titles in skipped.items():
        likely = [title for title in titles if title.why]
        if likely:
            click.echo(
                f"{profile}: webhook plays of titles in no mapping dataset, skipped as not anime "
                "although likely anime (queued again if a dataset refresh or an override maps "
                "them within 30 days):"
            )
        for one in likely:
            plays = f"{one.plays} play{'s' * (one.plays != 1)}"
            click.echo(f"  {one.title!r} ({one.ids or 'no ids'}): {plays}; likely anime: {one.why}")
        if others := len(titles) - len(likely):
            click.echo(
                f"{profile}: {others} other title{'s' * (others != 1)} skipped as not anime (no "
                "anime id, absolute number or anime genre; queued again too if a dataset "
                "refresh or an override maps one)"
            )
    if not records:
        click.echo("nothing unmatched")
        return
    from watchbridge.anime import DATASET_CODES, Unmatched
    from watchbridge.anime_data import from_config

    index = from_config(config).cached_index()  # datasets may have caught up since

    def maps_now(record: Any) -> str:
        # Only what the datasets decide: an entry waiting on a season list resolves all along.
        if record.anilist_id is None or record.code not in DATASET_CODES:
            return ""
        now = index.resolve(record.anilist_id)
        return "" if isinstance(now, Unmatched | str) else "  -> maps now; the next sync uses it"

    def line(record: Any) -> str:
        label = f" {record.title!r}" if record.title else ""
        return (
            f"{record.profile}  {record.key}{label}  [{record.code}]  {record.reason}"
            f"  (seen {_when(record.seen_at)}){maps_now(record)}"
        )

    if every:
        for record in records:
            click.echo(line(record))
        click.echo(
            "fix with an override (services.anilist.mapping_overrides), then check it with "
            "`watchbridge anime explain ANILIST_ID`"
        )
        return
    groups = group_unmatched(records)
    for group in groups:
        if len(group.records) == 1:
            click.echo(line(group.records[0]))
        else:
            label = f" {group.title!r}" if group.title else ""
            count = len(group.records)
            click.echo(
                f"{group.profile}  {group.key}{label}  [{group.code}]  {count} episodes: "
                f"{group.episodes}  (seen {_when(group.seen_at)})"
            )
            click.echo(f"    why (first): {group.records[0].reason}")
        click.echo(f"    fix: {group.fix}")
    if any(len(group.records) > 1 for group in groups):
        click.echo("`watchbridge anime unmatched --all` lists every episode on its own line")


@anime.command("import-plexanisync")
@config_option
@click.argument("path", metavar="PATH", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--write",
    is_flag=True,
    help="Add the overrides to the file services.anilist.mapping_overrides names "
    "(entries already there stay as they are).",
)
def anime_import_plexanisync(config_path: str | None, path: Path, write: bool) -> None:
    """Translate a PlexAniSync custom_mappings.yaml into anime overrides, by your Plex library."""
    from watchbridge.anime import DatasetError
    from watchbridge.anime_data import overrides_path, write_atomic
    from watchbridge.plexanisync import (
        REMOTE_SKIPPED,
        existing_ids,
        import_entries,
        merged,
        parse_mappings,
        read_library,
        render,
    )
    from watchbridge.readers.plex import choose_sections
    from watchbridge.services.plex import PlexClient

    config = _load(config_path)
    try:
        mappings = parse_mappings(path.read_text(encoding="utf-8"), path.name)
    except (OSError, UnicodeDecodeError) as exc:
        raise WatchbridgeError(f"cannot read {path} ({exc})") from None
    except DatasetError as exc:
        raise WatchbridgeError(str(exc)) from None
    plex = config.services.plex
    if plex is None or not plex.url or plex.token is None:
        missing = "services.plex" if plex is None else "services.plex.url and .token"
        raise WatchbridgeError(
            f"{missing} must be set: PlexAniSync names shows by their Plex titles and seasons, "
            "so the import reads your Plex server's TV libraries (their shows' TVDB/TMDB ids, "
            "episode ordering and seasons) with the server owner's token; set them (see the "
            "README's Plex section) and run this again"
        )
    target = overrides_path(config)
    existing = ""
    if target is not None and target.exists():
        try:
            existing = target.read_text(encoding="utf-8")
            known = existing_ids(existing, target.name)
        except (OSError, UnicodeDecodeError) as exc:
            raise WatchbridgeError(f"cannot read {target} ({exc})") from None
        except DatasetError as exc:
            raise WatchbridgeError(f"{exc} (fix your overrides file first)") from None
    else:
        known = set()
    client = PlexClient(plex)

    async def read() -> list[Any]:
        try:
            sections = await client.sections()
            return await read_library(client, choose_sections(sections, plex.libraries, "-"))
        finally:
            await client.aclose()

    shows = asyncio.run(read())
    result = import_entries(mappings, shows, known)
    header = f"# imported from PlexAniSync's {path.name} by `watchbridge anime import-plexanisync`"
    if mappings.remote_urls:
        click.echo(REMOTE_SKIPPED.format(count=len(mappings.remote_urls)), err=True)
    for skipped in result.skipped:
        click.echo(f"skipped {skipped.title!r} ({skipped.kind}): {skipped.reason}", err=True)
    for title, library in sorted({(o.plex_title, o.library) for o in result.imported if o.assumed}):
        click.echo(
            f"note: {title!r} has no episode ordering of its own in Plex, so it is taken as "
            f"numbered by Plex's default, The Movie Database (tmdb:); if library {library!r} "
            "defaults to a TheTVDB ordering, set the show's own ordering in Plex (Edit > "
            "Advanced > Episode ordering) and import again",
            err=True,
        )
    click.echo(result.summary(), err=True)
    if not write:
        if result.imported:
            click.echo(header)
            click.echo(render(result.imported), nl=False)
        return
    if target is None:
        if result.imported:
            click.echo(header)
            click.echo(render(result.imported), nl=False)
        raise WatchbridgeError(
            "services.anilist.mapping_overrides is not set, so there is no file to add them "
            "to: set it (e.g. `mapping_overrides: anime-overrides.yaml`, next to the config "
            "file) and run this again with --write, or paste the YAML above into your file"
        )
    if not result.imported:
        click.echo(f"nothing to add to {target}")
        return
    try:
        text = merged(existing, result.imported, header, target.name)
    except DatasetError as exc:
        raise WatchbridgeError(f"{exc}; nothing was written to {target}") from None
    try:
        write_atomic(target, text.encode("utf-8"))
    except OSError as exc:
        raise WatchbridgeError(f"could not write {target} ({exc}); nothing was changed") from None
    click.echo(f"added {len(result.imported)} override(s) to {target}")
    click.echo(render(result.imported), nl=False)


@anime.command("refresh")
@config_option
def anime_refresh(config_path: str | None) -> None:
    """Download the anime mapping datasets now (the cached copies stay if a download fails)."""
    from watchbridge.anime_data import from_config

    config = _load(config_path)
    # The database keeps what datasets.json cannot (a folder mounted read-only): the service
    # and `watchbridge status` read it there. None made for this: a first run has none.
    store = _open_store(config) if Path(config.storage.path).exists() else None
    data = from_config(config, store=store)

    async def run() -> list[Any]:
        try:
            return await data.refresh(force=True)
        finally:
            await data.aclose()
            if store is not None:
                store.close()

    statuses = asyncio.run(run())
    for status in statuses:
        state = status.error or f"{status.rows} rows, fetched {_when(status.fetched_at)}"
        click.echo(f"{status.name}: {state}")
    failed = [s.name for s in statuses if s.error]
    if failed:
        raise WatchbridgeError(
            f"could not refresh {', '.join(failed)}; the cached copies stay in use"
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning expected errors into one clear line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or debug_from_environment()
    _output_any_terminal_can_take()
    try:
        cli.main(args=args, prog_name="watchbridge", standalone_mode=False)
    except click.exceptions.Abort as exc:
        click.echo("aborted", err=True)
        # Ctrl-C (which click turns into Abort) exits as interrupted shells do, so scripts
        # can tell it from a failure; a "no" to a question is one.
        sys.exit(130 if isinstance(exc.__context__, KeyboardInterrupt) else 1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (WatchbridgeError, StoreError) as exc:
        if debug:
            raise
        _say_error(f"error: {exc.message}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        if locked_by_another(exc):
            click.echo(
                "error: the database (storage.path) stayed locked by another watchbridge "
                "writing to it (the service or a sync) for longer than storage.busy_timeout: "
                "nothing was changed; try again in a minute",
                err=True,
            )
            sys.exit(1)
        if isinstance(exc, sqlite3.DatabaseError) and storage_fault(exc):
            _say_error(
                f"error: the database (storage.path) could not be written or read ({exc}): "
                "the command stopped; check the disk that holds it (full? read-only? failing?)"
            )
            sys.exit(1)
        _say_error(f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)")
        sys.exit(70)


def _output_any_terminal_can_take() -> None:
    """A name or title its output encoding cannot hold ("山田" on a Latin-1 terminal, Windows'
    cp1252 when redirected to a file) is written as a `\\u5c71` escape, not a crash of the
    command (Python's UTF-8 mode covers LANG=C and POSIX, not these locales)."""
    for stream in (sys.stdout, sys.stderr):
        if not isinstance(stream, io.TextIOWrapper):
            continue  # replaced (a test's capture): its owner chose how it encodes
        with contextlib.suppress(LookupError):
            if codecs.lookup(stream.encoding).name != "utf-8":
                stream.reconfigure(errors="backslashreplace")


def _say_error(line: str) -> None:
    """A command's last word, with the secrets its log masks: an error may quote a service's
    answer or a URL, and either may hold a token."""
    click.echo(redact_error_line(line), err=True)


if __name__ == "__main__":
    main()
