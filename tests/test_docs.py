"""The docs are checked against the code: every config key, metric, command and flag, and kind
of refused webhook is documented where a user looks for it."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
import time
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import click
import pytest

from watchbridge.cli import cli
from watchbridge.config import NOT_A_KEY, AlertKind, Config, parse_config
from watchbridge.errors import ConfigError
from watchbridge.metrics import Metrics
from watchbridge.refused import REFUSALS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
WEBHOOKS = (ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")


def config_keys(cls: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata == NOT_A_KEY:
            continue
        path = f"{prefix}{f.name}"
        hint = get_type_hints(cls)[f.name]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        if get_origin(hint) is dict:
            keys += config_keys(get_args(hint)[1], f"{path}.NAME.")
        elif dataclasses.is_dataclass(hint):
            nested = config_keys(hint, f"{path}.")
            keys += nested if nested else [path]
        else:
            keys.append(path)
    return keys


def test_every_config_key_is_in_the_readme_reference() -> None:
    missing = [key for key in config_keys(Config) if f"`{key}`" not in README]
    assert missing == []


def readme_row(key: str) -> str:
    """The meaning column of a key's row in the README's configuration tables."""
    match = re.search(rf"^\| `{re.escape(key)}`(?: 🔒)? \|[^|]*\|(.*)\|$", README, flags=re.M)
    assert match, key
    return match[1]


@pytest.mark.parametrize(
    ("key", "yaml"),
    [
        ("server.max_webhook_bytes", "server: {max_webhook_bytes: 1}"),
        ("delivery.max_attempts", "delivery: {max_attempts: 0}"),
        ("delivery.max_age", "delivery: {max_age: 1s}"),
        ("delivery.retry_after", "delivery: {retry_after: 0s}"),
        ("delivery.max_backoff", "delivery: {max_backoff: 1s}"),
        ("storage.busy_timeout", "storage: {busy_timeout: 0s}"),
        ("services.anilist.mapping_refresh", "services: {anilist: {mapping_refresh: 1s}}"),
        ("links.NAME.interval", "links: {NAME: {services: [trakt, serializd], interval: 1s}}"),
    ],
)
def test_every_lower_limit_check_config_enforces_is_in_the_readme(key: str, yaml: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml, Path("watchbridge.yaml"), {})
    limit = re.search(r"expected at least ([\d.]+[smhd]?)", refused.value.message)
    assert limit, refused.value.message
    assert re.search(rf"at least `?{re.escape(limit[1])}\b", readme_row(key)), limit[1]


def test_the_alert_kinds_the_config_takes_are_those_the_readme_names() -> None:
    documented = set(re.findall(r"`([a-z_]+)`", readme_row("alerts.kinds")))
    assert set(get_args(AlertKind)) == documented


def test_every_watchbridge_metric_is_in_the_readme() -> None:
    metrics = Metrics()  # with the collectors the service adds, which read the store
    metrics.watch_queue(dict, lambda: None, time.time)
    metrics.watch_links(dict, [])
    metrics.watch_sign_ins(lambda: [("trakt", "me", 0.0, True)], time.time)
    names = {
        m.name + ("_total" if m.type == "counter" else "")
        for m in metrics.registry.collect()
        if m.name.startswith("watchbridge_")
    }
    documented = set(re.findall(r"`(watchbridge_[a-z_]+)`", README))
    assert names - documented == set()


def test_readme_starts_with_the_two_fresh_machine_commands() -> None:
    blocks = re.findall(r"```sh\n(.+?)\n```", README, flags=re.S)
    assert blocks[0].startswith("python3 -m venv .venv && .venv/bin/pip install -e . &&")
    assert (
        blocks[1]
        == "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/pytest"
    )


def refusal_statuses() -> dict[str, int]:
    """Each kind of refusal and the status the webhook route answers it with, as its code says
    (`_answer(..., "stalled", 408, ...)`, `_refused(..., "internal_error", 500, ...)`)."""
    import watchbridge.webhooks

    tree = ast.parse(Path(watchbridge.webhooks.__file__).read_text(encoding="utf-8"))
    statuses = {}
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        for outcome, status in itertools.pairwise(call.args):
            if (
                isinstance(outcome, ast.Constant)
                and outcome.value in REFUSALS
                and isinstance(status, ast.Constant)
                and isinstance(status.value, int)
            ):
                statuses[outcome.value] = status.value
    return statuses


def test_every_kind_of_refused_webhook_is_in_the_webhook_docs_with_its_status() -> None:
    statuses = refusal_statuses()
    assert set(statuses) == set(REFUSALS)  # each kind is answered somewhere
    documented = {
        row[2]: int(row[1])
        for row in re.finditer(r"^\| (\d{3}) \| `([a-z_]+)` \|", WEBHOOKS, flags=re.M)
    }
    assert documented == statuses


def test_the_readme_names_every_status_a_webhook_is_refused_with() -> None:
    listed = re.search(r"so a refusal \(([\d, ]+)\) shows", README)
    assert listed, "the README's list of refusals"
    assert {int(s) for s in listed[1].split(", ")} == set(refusal_statuses().values())
    page = re.search(r"per source and kind: ([^;]+);", README)
    assert page, "the status page's list of refusals"
    assert {int(s) for s in re.findall(r"\d{3}", page[1])} == set(refusal_statuses().values())


def commands(group: click.Group, prefix: str = "watchbridge") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def test_every_command_and_flag_is_in_the_readme_commands_table() -> None:
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(watchbridge [^`]+)` \|", table, flags=re.M)
    missing = []
    for name, command in commands(cli):
        row = next((r for r in rows if r == name or r.startswith(f"{name} ")), None)
        flags = [
            flag
            for param in command.params
            if isinstance(param, click.Option) and param.name != "config_path"
            for flag in param.opts
            if flag.startswith("--")
        ]
        if row is None:
            missing.append(name)
        missing += [f"{name} {flag}" for flag in flags if not re.search(rf"{flag}\b", row or "")]
    for param in cli.params:
        missing += [flag for flag in param.opts if f"`watchbridge {flag}" not in table]
    assert missing == []


def test_every_exit_code_of_the_commands_is_in_the_readme() -> None:
    import watchbridge.__main__
    import watchbridge.cli
    from watchbridge.errors import ConfigError, StoreError, WatchbridgeError
    from watchbridge.servelock import AlreadyServing

    codes = {e.exit_code for e in (WatchbridgeError, ConfigError, StoreError, AlreadyServing)}
    for module in (watchbridge.cli, watchbridge.__main__):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        codes |= {int(code) for code in re.findall(r"sys\.exit\((\d+)\)", source)}
    sentence = re.search(r"^Exit codes: (.+?)\n\n", README, flags=re.M | re.S)
    assert sentence, "the README's exit codes"
    assert {int(code) for code in re.findall(r"`(\d+)`", sentence[1])} == codes | {0}
