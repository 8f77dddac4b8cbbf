"""Running as the Home Assistant app, whose user has the sidebar page, the Log tab and the
alerts, often no terminal: the entrypoint says so in APP_ENV, naming where the config came
from. A page or alert that names a `watchbridge ...` command then says where the app's
documentation tells how to run one there; and with a config written from the options form,
the page names an alert URL by its place in the `alert_urls` option, as the user counts it,
not by the key of a file the user never wrote. Pure: the caller reads the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

APP_ENV = "WATCHBRIDGE_HOME_ASSISTANT"
# With the options form: the `alert_urls` entry (counted from 1, blanks too) of each URL the
# generated config keeps, in its order ("2,3"): blank entries are dropped, so `alerts.urls[0]`
# may be the form's entry 2.
ALERT_URL_ENTRIES_ENV = "WATCHBRIDGE_ALERT_URL_ENTRIES"
FROM_OPTIONS = "options"  # the config is written from the options form at each start
FROM_OWN_YAML = "own-yaml"  # the user's own YAML (the config_file option), used as written
# addon/config.yaml: ingress connects to INGRESS_PORT; WEBHOOK_PORT is the one port published,
# and the Supervisor's watchdog asks its /healthz.
INGRESS_PORT = 8099
WEBHOOK_PORT = 8765
OPTIONS_PROFILE = "household"  # the profile the options form maps `media_users` to
# The config keys the options form fills in, by the option that fills each
# (entrypoint.translate_options): a user of the form never saw the file that has the keys.
OPTION_OF_KEY = {
    "server.webhook_secret": "webhook_secret",
    "logging.level": "log_level",
    "alerts.urls": "alert_urls",
    "services.trakt.client_id": "trakt_client_id",
    "services.trakt.client_secret": "trakt_client_secret",
    f"profiles.{OPTIONS_PROFILE}.users": "media_users",
}

COMMANDS_HELP = (
    "Home Assistant: how to run a watchbridge command named here is in the app's "
    'Documentation tab, section "Signing in and other commands".'
)
# The CLI's top-level commands (tests/test_cli.py checks them against its click group).
COMMANDS = (
    "anime",
    "auth",
    "backup",
    "check-config",
    "deadletters",
    "rename-profile",
    "reset-state",
    "serve",
    "status",
    "sync",
    "test-alert",
    "unmatched",
    "webhook-urls",
)
_COMMAND = re.compile(r"\bwatchbridge (?:" + "|".join(map(re.escape, COMMANDS)) + r")(?![\w-])")
_ALERT_URL_ENTRY = re.compile(r"\balerts\.urls\[(\d+)\]")
_CONFIG_KEY = re.compile(r"\b[a-z_]+(?:\.[A-Za-z0-9_-]+|\[\d+\])+")


@dataclass(frozen=True)
class HomeAssistantApp:
    """The service runs as the Home Assistant app."""

    options_form: bool  # its config is the one written from the options form
    # The form's entry of each `alerts.urls` of that config, in order (ALERT_URL_ENTRIES_ENV).
    alert_url_entries: tuple[int, ...] = ()


def app_from_environment(environ: Mapping[str, str]) -> HomeAssistantApp | None:
    """The app as the entrypoint marked it in APP_ENV; None outside Home Assistant."""
    source = environ.get(APP_ENV, "").strip()
    if not source:
        return None
    if source != FROM_OPTIONS:
        return HomeAssistantApp(options_form=False)
    return HomeAssistantApp(
        options_form=True,
        alert_url_entries=_entry_numbers(environ.get(ALERT_URL_ENTRIES_ENV, "")),
    )


def alert_url_entries_value(entries: Sequence[int]) -> str:
    """ALERT_URL_ENTRIES_ENV's value for these entry numbers."""
    return ",".join(map(str, entries))


def _entry_numbers(value: str) -> tuple[int, ...]:
    # Written by the entrypoint of the same image; anything else is read as no positions
    # (each URL then named as if no entry were blank) rather than stopping the service.
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        return ()
    return tuple(int(part) for part in parts)


def names_a_command(text: str) -> bool:
    """True when `text` tells of a `watchbridge ...` command (plain, backquoted or in HTML)."""
    return _COMMAND.search(text) is not None


def with_commands_help(text: str) -> str:
    """An alert's text, with the line on running commands when it names one."""
    return f"{text}\n\n{COMMANDS_HELP}" if names_a_command(text) else text


def alert_urls_entry(number: int) -> str:
    """An `alert_urls` option's entry, counted from 1 as the options form lists them."""
    return f"alert_urls entry {number}"


def alert_url_entry_number(index: int, entries: Sequence[int]) -> int:
    """The options form's `alert_urls` entry of the config's `alerts.urls[index]`, given the
    entry of each URL the config kept (blank entries are not kept but are counted)."""
    return entries[index] if index < len(entries) else index + 1


def as_option_entries(text: str, entries: Sequence[int]) -> str:
    """`alerts.urls[N]` (the config's key, counted from 0) as the option's entry it came from."""
    return _ALERT_URL_ENTRY.sub(
        lambda found: alert_urls_entry(alert_url_entry_number(int(found[1]), entries)), text
    )


def option_of(key: str) -> str | None:
    """The option that fills the config key `key` (or a key under it); None for a key the
    options form does not fill."""
    return next(
        (
            option
            for filled, option in OPTION_OF_KEY.items()
            if key == filled or key.startswith((f"{filled}.", f"{filled}["))
        ),
        None,
    )


def in_options_words(text: str, entries: Sequence[int]) -> str:
    """A warning about a config written from the options form, with each key the form fills
    named by its option (an alert URL by its entry, `entries` as in `as_option_entries`);
    other keys are left as they are."""
    return _CONFIG_KEY.sub(
        lambda found: option_of(found[0]) or found[0], as_option_entries(text, entries)
    )


def option_problem(key: str, message: str, entries: Sequence[int]) -> str | None:
    """A config error `message` about key `key` of a config written from the options form,
    as its user reads it: by the option that fills the key, an alert URL by its entry
    (`alert_urls entry 2: ...`, `entries` as in `as_option_entries`), with no line of a file
    they never saw; None for a key the form does not fill."""
    if option_of(key) is None:
        return None
    return in_options_words(f"{key}: {message}", entries)


def port_problems(port: int, webhook_port: int | None) -> list[str]:
    """What an own YAML's ports break in the app, which fixes both ports (no environment to
    set there, unlike a plain container)."""
    problems = []
    if port != INGRESS_PORT:
        problems.append(
            f"server.port is {port}: the app's sidebar page (Home Assistant ingress) connects "
            f"to {INGRESS_PORT} and cannot open; set server.port: {INGRESS_PORT}"
        )
    if WEBHOOK_PORT not in (port, webhook_port):
        problems.append(
            f"server.webhook_port is {webhook_port or 'not set'}: the app publishes port "
            f"{WEBHOOK_PORT} alone for webhooks and metrics, and the app's watchdog asks "
            f"/healthz there and restarts the app while nothing answers; set "
            f"server.webhook_port: {WEBHOOK_PORT}"
        )
    return problems
