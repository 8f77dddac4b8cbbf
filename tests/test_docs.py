"""The docs are checked against the code: every config key, metric, command and flag, and kind
of refused webhook is documented where a user looks for it, and what the docs name (a key, its
default, a flag, a metric) is what the code has."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import re
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import click
import httpx
import pytest

from tests.fakes.base import FakeServer
from tests.fakes.trakt import FakeTrakt
from tests.test_webhooks_e2e import SECRET, delivered_all, seeded, service_for, wait_for
from watchbridge.cli import cli
from watchbridge.config import NOT_A_KEY, AlertKind, Config, Duration, load_config, parse_config
from watchbridge.deliver.serializd import SECOND_READ_AFTER
from watchbridge.deliver.worker import STOP_GRACE
from watchbridge.errors import ConfigError
from watchbridge.http import PLAIN_AT_HTTPS_PORT
from watchbridge.maintenance import OWED_AT_MOST_EVERY
from watchbridge.metrics import Metrics
from watchbridge.refused import REFUSALS, REFUSED_WORDS
from watchbridge.server import CONNECTION_DRAIN_SECONDS
from watchbridge.store import TAUTULLI_SERVER_LAPSES

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


def readme_reference() -> dict[str, str]:
    """Each key of the README's configuration tables, with its default column."""
    rows = re.findall(r"^\| `([a-zA-Z_.]+)`(?: 🔒)? \| ([^|]*) \|", README, flags=re.M)
    return {key: default for key, default in rows if "." in key}


def test_every_key_in_the_readme_reference_is_one_the_config_reads() -> None:
    keys = config_keys(Config)
    sections = {key.rsplit(".", 1)[0] for key in keys}  # `accounts.trakt: {}` is a key too
    assert [k for k in readme_reference() if k not in keys and k not in sections] == []


def config_default(key: str) -> Any:
    """The default of `key` (`links.NAME.interval`) as the config classes set it."""
    cls: Any = Config
    *path, name = [part for part in key.split(".") if part != "NAME"]
    for part in path:
        hint = get_type_hints(cls)[part]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        cls = get_args(hint)[1] if get_origin(hint) is dict else hint
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return "required"


def as_written(value: Any) -> str:
    """A default as the README writes it: `30m`, `[history, ratings]`, `true`, required."""
    if isinstance(value, Duration):
        unit, size = next(
            (u, s) for u, s in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)) if value % s == 0
        )
        return f"`{int(value // size)}{unit}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`[{', '.join(value)}]`"
    return "required" if value == "required" else f"`{value}`"


# Defaults the README words instead of quoting: what an unset key means.
WORDED_DEFAULTS = {
    "none": lambda value: value is None,
    "all": lambda value: value == [],  # every library, every profile
    "generated": lambda value: value is None,  # the webhook secret, kept in the database
}


def test_every_default_in_the_readme_reference_is_the_one_the_config_takes() -> None:
    wrong = []
    for key, written in readme_reference().items():
        if key not in config_keys(Config):
            continue  # a section (`accounts.trakt`): its keys have their own rows
        value = config_default(key)
        if key.startswith("services.anilist.mapping_urls."):
            assert value is None, key  # the dataset's own address, named in words
        elif written in WORDED_DEFAULTS:
            if not WORDED_DEFAULTS[written](value):
                wrong.append(f"{key}: README {written}, code {value!r}")
        elif written != as_written(value):
            wrong.append(f"{key}: README {written}, code {as_written(value)}")
    assert wrong == []


def test_the_example_config_writes_the_defaults_the_readme_gives() -> None:
    # The sections the example writes out (server, storage, logging, alerts) say what an
    # unset key does; only where the database goes and the generated secret differ.
    example = load_config(ROOT / "config" / "watchbridge.example.yaml", {})
    defaults = Config()
    differ = [
        f"{section}.{f.name}"
        for section in ("server", "storage", "logging", "delivery", "alerts")
        for f in dataclasses.fields(getattr(defaults, section))
        if getattr(getattr(example, section), f.name) != getattr(getattr(defaults, section), f.name)
    ]
    assert differ == ["server.webhook_secret", "storage.path"]


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


def test_the_example_config_names_every_alert_kind_it_can_be_narrowed_to() -> None:
    example = (ROOT / "config" / "watchbridge.example.yaml").read_text()
    comment = re.search(r"^  kinds: \[all\] +# or a selection: (.*?)\n  \w", example, re.M | re.S)
    assert comment, "alerts.kinds line of the example config"
    named = set(re.findall(r"[a-z_]+", comment[1].replace("#", " ")))
    assert named == set(get_args(AlertKind)) - {"all"}


_EXAMPLE_KEY = re.compile(r"^([ #]*?)([a-z_][\w-]*):(?: |$)")


def example_config_keys() -> list[str]:
    """Every key the example config writes, also those commented out for the user to take: a
    key's depth is its column, less the `# ` put before a line to comment it out (a `#` in the
    first column takes the place of a space)."""
    example = (ROOT / "config" / "watchbridge.example.yaml").read_text(encoding="utf-8")
    found, parents = [], []  # parents: (column, name) of the keys above the line
    for line in example.splitlines():
        match = _EXAMPLE_KEY.match(line)
        if not match:
            continue
        column = len(match[1]) - 2 * match[1][1:].count("#")
        while parents and parents[-1][0] >= column:
            parents.pop()
        parents.append((column, match[2]))
        found.append(".".join(name for _, name in parents))
    return found


def test_every_key_the_example_config_writes_or_comments_out_is_one_the_config_reads() -> None:
    keys = config_keys(Config)
    named = {re.sub(r"^(profiles|links)\.[^.]+", r"\1.NAME", key) for key in example_config_keys()}
    # A section (`services.trakt`, `accounts.trakt: {}`) is the start of the keys it holds.
    unknown = [k for k in named if not any(f"{c}.".startswith(f"{k}.") for c in keys)]
    assert sorted(unknown) == []


def test_every_watchbridge_metric_is_in_the_readme() -> None:
    metrics = Metrics()  # with the collectors the service adds, which read the store
    metrics.watch_queue(dict, ["trakt"], time.time)
    metrics.watch_holds(set, ["trakt"], [("trakt", "me")])
    metrics.watch_links(dict, [])
    metrics.watch_sign_ins(lambda: [("trakt", "me", 0.0, True)], time.time)
    metrics.watch_webhooks(dict)
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


def test_the_webhook_docs_give_each_refusal_in_the_status_pages_words() -> None:
    # The page says `could not be stored`, not `store_error`: a reader looks that up here.
    shown = dict(re.findall(r"^\| \d{3} \| `([a-z_]+)` \| ([^|`]+?) \|", WEBHOOKS, flags=re.M))
    assert shown == REFUSED_WORDS


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


def test_every_command_and_flag_in_the_readme_commands_table_exists() -> None:
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    known = dict(commands(cli))
    top = {flag for param in cli.params for flag in param.opts}
    unknown = []
    for row in re.findall(r"^\| `(watchbridge [^`]+)` \|", table, flags=re.M):
        name = max((n for n in known if row == n or row.startswith(f"{n} ")), key=len, default="")
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", row))
        opts = {flag for param in known[name].params for flag in param.opts} if name else top
        unknown += [f"{row}: {flag}" for flag in sorted(flags - opts)]
        if not name and not flags:
            unknown.append(row)
    assert unknown == []


def test_every_watchbridge_metric_the_readme_names_exists() -> None:
    metrics = Metrics()
    metrics.watch_queue(dict, ["trakt"], time.time)
    metrics.watch_holds(set, ["trakt"], [("trakt", "me")])
    metrics.watch_links(dict, [])
    metrics.watch_sign_ins(lambda: [("trakt", "me", 0.0, True)], time.time)
    metrics.watch_webhooks(dict)
    names = {m.name + ("_total" if m.type == "counter" else "") for m in metrics.registry.collect()}
    table = README.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(watchbridge_[a-z_]+)`", table, flags=re.M)) - names == set()


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


def test_the_readme_quotes_every_answer_of_a_proxy_at_its_https_port() -> None:
    # The troubleshooting row is how a user finds the error by what their proxy said.
    for said in PLAIN_AT_HTTPS_PORT:
        assert f"`{said}`" in README or f'"{said}"' in README, said


@pytest.mark.parametrize(
    ("claim", "doc"),
    [
        (f"open connections get their {CONNECTION_DRAIN_SECONDS} s", README),
        (f"A delivery under way gets {STOP_GRACE:g} s for its answer", README),
        (f"its own tries at most every {OWED_AT_MOST_EVERY:g} s", README),
        (f"The second is the removal's next try, {SECOND_READ_AFTER / 60:g} minutes later", README),
        (
            f"A server Tautulli has not reported for {TAUTULLI_SERVER_LAPSES / 86400:g} days",
            WEBHOOKS,
        ),
    ],
)
def test_the_timings_the_docs_give_are_the_codes(claim: str, doc: str) -> None:
    assert claim in " ".join(doc.split()), claim


GENERIC = WEBHOOKS.split("## Generic JSON", 1)[1].split("\n## ", 1)[0]
# What the Home Assistant example renders: `{{ name | to_json }}`, `{{ name | int * 1000 }}`.
_HA_EXPRESSION = re.compile(r"\{\{ (\w+) \| (to_json|int \* 1000) \}\}")


def curl_examples() -> list[tuple[str, dict[str, str], bytes]]:
    """Each curl line of the generic section: (path after /webhooks/, headers, body)."""
    block = re.search(r"```sh\n(.+?)```", GENERIC, flags=re.S)
    assert block, "the generic section's curl examples"
    found = []
    for command in re.split(r"\n(?=curl )", block[1])[1:]:
        headers = dict(h.split(": ", 1) for h in re.findall(r"-H '([^']+)'", command))
        secret_in_path = '"$URL"' in command
        assert secret_in_path or headers.get("X-Webhook-Secret") == "SECRET", command
        body = re.search(r"-d '(.+?)'(?:\n|$)", command, flags=re.S)
        assert body, command
        if secret_in_path:
            path = f"generic/{SECRET}"
        else:
            path, headers["X-Webhook-Secret"] = "generic", SECRET
        found.append((path, headers, body[1].encode()))
    return found


_PLAIN_NUMBER = re.compile(r"[+-]?(?!0\d)\d*(?:\.\d*)?")


def home_assistant_native(rendered: str) -> object:
    """What Home Assistant (0.118 on) makes of a template's text, as the automation's `data`
    hands it on: a Python literal becomes its value (`"1917"` the number 1917, `"True"` a
    boolean), but a number only when written plainly (`"007"` stays text), and text stays
    text."""
    try:
        value = ast.literal_eval(rendered)
    except (ValueError, TypeError, SyntaxError, MemoryError):
        return rendered
    if isinstance(value, str | complex):
        return rendered
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if _PLAIN_NUMBER.fullmatch(rendered) else rendered
    return value


def home_assistant_payload(**data: object) -> bytes:
    """The rest_command's payload as Home Assistant renders it with the automation's `data`
    (an attribute the player does not have renders as ""; each value the automation's
    templates render is read as Home Assistant reads it: `home_assistant_native`)."""
    payload = re.search(r"payload: >-\n(.+?)\n\n", GENERIC, flags=re.S)
    assert payload, "the Home Assistant example's payload"

    def render(expression: re.Match[str]) -> str:
        value = home_assistant_native(str(data.get(expression[1], "")))
        if expression[2] == "to_json":
            return json.dumps(value)
        return str(int(value or 0) * 1000)  # type: ignore[call-overload]

    rendered = _HA_EXPRESSION.sub(render, payload[1])
    assert "{{" not in rendered, f"an expression this test does not render: {rendered}"
    return rendered.encode()


def test_every_generic_example_in_the_webhook_docs_is_taken_by_the_service(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(seeded(FakeTrakt()))
    assert isinstance(trakt, FakeTrakt)
    one_piece = trakt.add_show("One Piece", 1999, tvdb=81797)
    trakt.add_episode(one_piece, 21, 108, number_abs=1000)
    heat = trakt.add_show("Ozark", 2017, tvdb=328634)
    trakt.add_episode(heat, 1, 2)
    trakt.add_movie("1917", 2019, imdb="tt8579674", tmdb=530915)
    trakt.add_episode(trakt.add_show("1883", 2021, tvdb=403245), 1, 1, title="1883")
    service = service_for(tmp_path, trakt).start()
    player = {"user": "alice", "player": "kodi-livingroom"}
    home_assistant = [
        home_assistant_payload(
            **player, type="movie", title="Heat (1995)", position=10_100, duration=10_260
        ),
        # The automation fires twice: at the end, and when the TV is switched off.
        *[
            home_assistant_payload(
                **player,
                type="episode",
                title="Sugarwood",
                show="Ozark",
                season=1,
                number=2,
                position=3_500,
                duration=3_600,
            )
        ]
        * 2,
        # Titles that are numbers: Home Assistant hands them on as numbers.
        home_assistant_payload(
            **player, type="movie", title="1917", position=7_000, duration=7_140
        ),
        home_assistant_payload(
            **player,
            type="episode",
            title="1883",
            show="1883",
            season=1,
            number=1,
            position=3_400,
            duration=3_480,
        ),
        home_assistant_payload(**player, type="music", title="Ain't No Sunshine", duration=125),
    ]
    try:
        answers = [
            httpx.post(f"{service.url}/webhooks/{path}", content=body, headers=headers)
            for path, headers, body in curl_examples()
        ]
        answers += [
            httpx.post(
                f"{service.url}/webhooks/generic/{SECRET}",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            for body in home_assistant
        ]
        assert [a.status_code for a in answers] == [202] * (len(answers) - 1) + [200], [
            a.text for a in answers
        ]
        wait_for(lambda: delivered_all(service))
    finally:
        service.terminate()
    watched = sorted(
        (e.item.title, getattr(e.item, "season", None), getattr(e.item, "number", None))
        for e in trakt.history()
    )
    assert watched == [
        ("1883", 1, 1),
        ("1917", None, None),
        ("Arrival", None, None),  # the start and stop; the played mark minutes later is that play
        ("Episode 108", 21, 108),
        ("Episode 14", 5, 14),
        ("Episode 2", 1, 2),  # once, though the automation fired twice
        ("Heat", None, None),
    ]
    assert [(r.item.title, r.rating) for r in trakt.ratings()] == [("Arrival", 8)]
