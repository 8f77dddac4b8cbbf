"""The `watchbridge` command line. Expected failures print one line; `--debug` shows tracebacks."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from watchbridge import __version__
from watchbridge.config import Config, find_config, load_config
from watchbridge.errors import StoreError, WatchbridgeError
from watchbridge.store import Store

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
    return load_config(find_config(config_path))


def _open_store(config: Config) -> Store:
    return Store.open(config.storage.path, config.storage.durability, config.storage.busy_timeout)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="watchbridge")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Keep watch history, ratings and watchlists in sync across your services."""
    ctx.obj = {"debug": debug}


@cli.command()
@config_option
@click.pass_context
def serve(ctx: click.Context, config_path: str | None) -> None:
    """Run the service: webhooks, delivery, scheduled syncs, metrics."""
    from watchbridge.logs import setup_logging
    from watchbridge.server import serve as run_server
    from watchbridge.wiring import build_app, build_runtime

    config = _load(config_path)
    level = "debug" if ctx.obj["debug"] else config.logging.level
    setup_logging(level, config.logging.format, config.secrets())
    # Fail before binding ports if the database cannot be opened: one line, no traceback.
    _open_store(config).close()
    run_server(build_app(build_runtime(config)), config)


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
    click.echo(_summary(config))
    if problems:
        raise WatchbridgeError("\n".join(problems))
    click.echo("config OK")


def _storage_problem(path: Path) -> str | None:
    """Why the database could not be created or written at `path`, or None."""
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        return f"storage.path {path}: directory is not writable by this user"
    if existing.is_file() and existing != path:
        return f"storage.path {path}: {existing} is a file, not a directory"
    return None


def _summary(config: Config) -> str:
    server = config.server
    lines = [
        f"config file:   {config.source}",
        f"listening on:  {server.host}:{server.port}"
        + (
            f" (webhooks and metrics also on :{server.webhook_port})" if server.webhook_port else ""
        ),
        f"webhook secret: {'set' if server.webhook_secret else 'generated on first start'}",
        f"API token:     {'set' if server.api_token else 'none (API and UI open on this port)'}",
        f"database:      {config.storage.path} (durability {config.storage.durability})",
        f"logging:       {config.logging.level}, {config.logging.format}",
        f"alerts:        {len(config.alerts.urls)} destination(s), "
        f"kinds {', '.join(config.alerts.kinds)}, throttle {int(config.alerts.throttle)}s",
    ]
    services = config.services.configured()
    lines.append(f"services:      {', '.join(services) if services else 'none yet'}")
    for name in services:
        section = getattr(config.services, name)
        urls = {k: v for k, v in vars(section).items() if k.endswith("url") and v}
        lines.append(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in urls.items()))
    lines.append(f"profiles:      {', '.join(config.profiles) if config.profiles else 'none yet'}")
    for name, profile in config.profiles.items():
        accounts = [
            s for s in ("trakt", "plex", "serializd", "anilist") if getattr(profile.accounts, s)
        ]
        users = {k: v for k, v in vars(profile.users).items() if v}
        lines.append(
            f"  {name}{' (default)' if profile.default else ''}: accounts "
            f"{', '.join(accounts) or 'none'}; media users {users or 'none'}"
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
    """Queue depth, dead letters, cursors and the last run of each link."""
    config = _load(config_path)
    store = _open_store(config)
    try:
        state = store.status()
    finally:
        store.close()
    outbox = state.outbox
    click.echo(f"database:      {config.storage.path}")
    click.echo(
        f"queue:         {outbox['pending']} pending, {outbox['inflight']} in flight, "
        f"{outbox['done']} delivered"
    )
    click.echo(f"oldest queued: {_when(state.oldest_pending_at)}")
    if state.unmatched:
        click.echo(
            f"unmatched:     {state.unmatched} waiting for ids a service can use "
            "(retried hourly; see `watchbridge deadletters list` if they give up)"
        )
    click.echo(
        f"dead letters:  {state.dead_letters}"
        + ("  (see `watchbridge deadletters list`)" if state.dead_letters else "")
    )
    click.echo("cursors:" + ("" if state.cursors else "       none yet"))
    for service, profile, name, value, updated in state.cursors:
        click.echo(f"  {service}/{profile} {name} = {value}  ({_when(updated)})")
    click.echo("last runs:" + ("" if state.last_runs else "     none yet"))
    for run in state.last_runs:
        counts = ", ".join(f"{k} {v}" for k, v in run.counts.items()) or "no changes"
        click.echo(
            f"  {run.link}: {run.outcome} at {_when(run.started_at)}; {counts}"
            + (f"; {run.error}" if run.error else "")
        )


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
    store = _open_store(config)
    try:
        store.reset()
    finally:
        store.close()
    click.echo("sync state cleared; the next sync starts from a full comparison")


@cli.command("test-alert")
@config_option
def test_alert(config_path: str | None) -> None:
    """Send one test alert to every configured Apprise URL."""
    from watchbridge.alerts import Notifier

    config = _load(config_path)
    notifier = Notifier(config.alerts)
    result = asyncio.run(notifier.send_test())
    if result == "sent":
        click.echo(f"test alert sent to {len(config.alerts.urls)} destination(s)")
        return
    if result == "disabled":
        raise WatchbridgeError("no alert destinations: add Apprise URLs under alerts.urls")
    raise WatchbridgeError("the test alert could not be delivered; see the warning above")


@cli.command("webhook-urls")
@config_option
@click.option("--host", default=None, help="Host name your media server uses to reach watchbridge.")
def webhook_urls(config_path: str | None, host: str | None) -> None:
    """Print the webhook URL to paste into each media server (contains the secret)."""
    from watchbridge.app import webhook_secret

    config = _load(config_path)
    store = _open_store(config)
    try:
        secret = webhook_secret(config, store, time.time())
    finally:
        store.close()
    port = config.server.webhook_port or config.server.port
    base = f"http://{host or 'WATCHBRIDGE-HOST'}:{port}"
    for source in ("plex", "jellyfin", "emby", "tautulli", "generic"):
        click.echo(f"{source:9} {base}/webhooks/{source}/{secret}")
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
    from watchbridge.services.trakt import DeviceCode, TraktClient

    config = _load(config_path)
    if config.services.trakt is None:
        raise WatchbridgeError("services.trakt is not configured: add client_id and client_secret")
    name = _pick_profile(config, profile_name, "trakt")

    def show(code: DeviceCode) -> None:
        click.echo(f"Open {code.verification_url} and enter the code {code.user_code}")
        click.echo(f"(the code is valid for {int(code.expires_in // 60)} minutes; waiting...)")

    store = _open_store(config)
    try:
        client = TraktClient(config.services.trakt, store)

        async def sign_in() -> None:
            try:
                await client.sign_in(name, show)
            finally:
                await client.aclose()

        asyncio.run(sign_in())
    finally:
        store.close()
    click.echo(f"profile {name} is signed in to Trakt")


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
@click.option("--link", "link_name", required=True, help="The link to sync (links.NAME).")
@click.option("--dry-run", is_flag=True, help="Show the plan with reasons; write nothing.")
@click.option("--yes", is_flag=True, help="Write a first run's plan without a dry run first.")
@click.option("--confirm-removals", is_flag=True, help="Write removals the guard held back.")
@click.option("--full", is_flag=True, help="Read everything, skipping the cheap change checks.")
@click.option("--limit", default=50, show_default=True, help="Actions to list per profile.")
def sync(
    config_path: str | None,
    link_name: str,
    dry_run: bool,
    yes: bool,
    confirm_removals: bool,
    full: bool,
    limit: int,
) -> None:
    """Compare both sides of a link, show what differs and why, and write the changes."""
    from watchbridge.sync import run_link
    from watchbridge.wiring import build_runtime

    config = _load(config_path)
    runtime = build_runtime(config)
    runtime.open()
    try:
        result = asyncio.run(
            run_link(
                config,
                runtime.store,
                link_name,
                dry_run=dry_run,
                yes=yes,
                confirm_removals=confirm_removals,
                full=full,
            )
        )
        _show_plans(result.plans, limit)
        if dry_run:
            click.echo("dry run: nothing was written")
            return
        if result.skipped:
            click.echo(f"{result.skipped} show/season rating(s) are not written yet")
        for held in result.held:
            click.echo(f"held: {held}")
        delivered = asyncio.run(_deliver_now(runtime))
        click.echo(
            f"{result.queued} change(s) queued, {delivered} delivered now; the rest "
            "follow from the running service (see `watchbridge status`)"
        )
    finally:
        runtime.close()


def _show_plans(plans: list[Any], limit: int) -> None:
    for result in plans:
        if result.unchanged:
            click.echo(
                f"profile {result.profile}: nothing changed on either side since the last sync"
            )
            continue
        sizes = ", ".join(f"{side} {count} plays" for side, count in result.sizes.items())
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.plan.counts().items()))
        click.echo(f"profile {result.profile}: {sizes}; plan: {counts or 'nothing to do'}")
        if result.plan.held:
            click.echo(f"  held: {result.plan.held}")
        for action in result.plan.actions[:limit]:
            when = f" {_when(action.at)}" if action.at else ""
            value = f" = {action.value}/100" if action.value is not None else ""
            click.echo(
                f"  {action.kind} {action.target} {action.item}{when}{value}  ({action.reason})"
            )
        if len(result.plan.actions) > limit:
            click.echo(f"  ... and {len(result.plan.actions) - limit} more")


async def _deliver_now(runtime: Any) -> int:
    """Deliver what is due right away, as the running service would (claims are atomic, so
    both can work side by side); returns how many rows were settled."""
    from watchbridge.deliver.worker import DeliveryWorker
    from watchbridge.wiring import make_targets

    worker = DeliveryWorker(make_targets, runtime.config.delivery)
    worker.targets = {t.name: t for t in make_targets(runtime)}
    before = runtime.store.outbox_counts()["done"]
    try:
        for _ in range(1000):
            if not await worker.pass_once(runtime):
                break
    finally:
        for target in worker.targets.values():
            await target.aclose()
    return int(runtime.store.outbox_counts()["done"] - before)


@cli.group()
def deadletters() -> None:
    """Deliveries that gave up: list, retry or discard them."""


@deadletters.command("list")
@config_option
def deadletters_list(config_path: str | None) -> None:
    """Show every dead letter with its reason."""
    config = _load(config_path)
    store = _open_store(config)
    try:
        dead = store.dead_letters()
    finally:
        store.close()
    if not dead:
        click.echo("no dead letters")
        return
    for item in dead:
        what = item.payload.get("item", {})
        label = what.get("title") or what.get("show_title") or what.get("kind", "?")
        click.echo(
            f"#{item.id}  {_when(item.updated_at)}  {item.target}/{item.profile}  {item.action} "
            f"{label}  after {item.attempts} attempts: {item.last_error}"
        )


@deadletters.command("retry")
@config_option
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Retry every dead letter.")
def deadletters_retry(config_path: str | None, ids: tuple[int, ...], every: bool) -> None:
    """Queue dead letters again (by id, or --all); the running service picks them up."""
    config = _load(config_path)
    _require_selection(ids, every)
    store = _open_store(config)
    try:
        count = store.retry_dead(None if every else list(ids), time.time())
    finally:
        store.close()
    click.echo(f"{count} dead letter(s) queued again")


@deadletters.command("discard")
@config_option
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Discard every dead letter.")
def deadletters_discard(config_path: str | None, ids: tuple[int, ...], every: bool) -> None:
    """Delete dead letters for good (by id, or --all)."""
    config = _load(config_path)
    _require_selection(ids, every)
    store = _open_store(config)
    try:
        count = store.discard_dead(None if every else list(ids))
    finally:
        store.close()
    click.echo(f"{count} dead letter(s) discarded")


def _require_selection(ids: tuple[int, ...], every: bool) -> None:
    if not ids and not every:
        raise WatchbridgeError("name dead letter ids (see `watchbridge deadletters list`) or --all")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning expected errors into one clear line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("WATCHBRIDGE_DEBUG") == "1"
    try:
        cli.main(args=args, prog_name="watchbridge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (WatchbridgeError, StoreError) as exc:
        if debug:
            raise
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.echo(
            f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
            err=True,
        )
        sys.exit(70)


if __name__ == "__main__":
    main()
