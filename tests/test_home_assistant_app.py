"""The Home Assistant app's user has the sidebar page, the Log tab and the alerts, often no
terminal: where the page or an alert names a `watchbridge ...` command, it says where the app's
documentation tells how to run one; an alert URL written in the options form is named as that
form lists it. Outside Home Assistant, nothing of it."""

from __future__ import annotations

import asyncio
import html
import logging
import time
from pathlib import Path

import httpx

from tests.fakes.receiver import AlertReceiver
from tests.harness import AppThread, ServiceProcess, write_config
from watchbridge.app import Runtime, create_app
from watchbridge.cli import cli
from watchbridge.config import load_config
from watchbridge.deliver.worker import dead_letter_alert
from watchbridge.entrypoint import Paths, plan_start
from watchbridge.homeassistant import (
    COMMANDS,
    COMMANDS_HELP,
    HomeAssistantApp,
    app_from_environment,
)
from watchbridge.statuspage import ROUTES
from watchbridge.store import Untold
from watchbridge.wiring import build_runtime

HELP_ON_PAGE = html.escape(COMMANDS_HELP)
# The second URL has no schema: Apprise does not take it. The options form's first entry is
# blank, so the config written from it (ALERTS) has the URLs of its entries 2 and 3.
ALERTS = "alerts:\n  urls: ['json://127.0.0.1:9/hook', 'ntfy.sh/my-topic']\n"
OPTIONS = {
    "alert_urls": ["", "json://127.0.0.1:9/hook", "ntfy.sh/my-topic"],
    "media_users": ["1"],
}


def entrypoint_env(tmp_path: Path, options: dict[str, object]) -> dict[str, str]:
    """What the app's entrypoint marks the service with, for these options."""
    paths = Paths(
        config=tmp_path / "config" / "watchbridge.yaml",
        data=tmp_path / "data",
        ha_options=tmp_path / "data" / "options.json",
        example=tmp_path / "example.yaml",
    )
    plan = plan_start([], paths, options, "token", is_file=lambda path: path.name == "mine.yaml")
    return {name: value for name, value in plan.env.items() if name != "WATCHBRIDGE_CONFIG"}


def page(runtime: Runtime) -> str:
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as app:
        return httpx.get(f"{app.url}/").text


def test_the_commands_named_are_the_clis() -> None:
    assert sorted(COMMANDS) == sorted(cli.commands)


def test_the_apps_page_says_where_commands_are_told_and_names_alert_urls_as_the_options(
    tmp_path: Path,
) -> None:
    # As the app runs it: the entrypoint's mark, read by `watchbridge serve`; the secret is
    # typed in the form (without it, the page says the app made one up).
    config = write_config(tmp_path, ALERTS)
    secret = "server:\n  webhook_secret: a-long-random-secret-0123456789\n"
    config.write_text(config.read_text().replace("server:\n", secret, 1), encoding="utf-8")
    env = entrypoint_env(tmp_path, {**OPTIONS, "webhook_secret": "a-long-random-secret-0123456789"})
    service = ServiceProcess(config, load_config(config, {}).server.port, env=env).start()
    try:
        shown = httpx.get(f"{service.url}/").text
    finally:
        service.terminate()
    # The webhook secret is the option the user typed: no command to run, so no line on
    # running one (an own YAML's page below names one).
    assert "it is the app's <code>webhook_secret</code> option" in shown
    assert "webhook-urls" not in shown and HELP_ON_PAGE not in shown
    assert "Alerts are not sent to alert_urls entry 3: not an Apprise URL" in shown
    assert "fix it in the app's Configuration tab and restart the app." in shown
    assert "alerts.urls[" not in shown


def test_with_its_own_yaml_the_app_names_alert_urls_as_the_yaml_does(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ALERTS), {})
    app = app_from_environment(entrypoint_env(tmp_path, {"config_file": "mine.yaml"}))
    assert app == HomeAssistantApp(options_form=False)
    shown = page(build_runtime(config, home_assistant=app))
    assert f"<p>{HELP_ON_PAGE}</p>" in shown
    assert "Alerts are not sent to alerts.urls[1]: not an Apprise URL" in shown
    assert "alert_urls entry" not in shown


def test_outside_home_assistant_the_page_is_as_before(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ALERTS), {})
    assert app_from_environment({}) is None
    shown = page(build_runtime(config, home_assistant=app_from_environment({})))
    assert "Home Assistant" not in shown and "Documentation tab" not in shown
    assert "Alerts are not sent to alerts.urls[1]: not an Apprise URL" in shown
    assert "(<code>watchbridge check-config</code> checks it)" in shown


def alert_text(tmp_path: Path, receiver: AlertReceiver, app: HomeAssistantApp | None) -> list[str]:
    """What reaches the user of the dead-letter alert and of one that names no command."""
    path = write_config(tmp_path, f"alerts:\n  urls: ['{receiver.apprise_url}']\n")
    runtime = build_runtime(load_config(path, {}), home_assistant=app)
    title, body = dead_letter_alert("trakt", Untold(1, [], time.time()))

    async def send() -> None:
        await runtime.notifier.notify("dead_letter", title, body, "trakt")
        await runtime.notifier.notify("credentials", "Trakt is down", "nothing to run", "t")

    asyncio.run(send())
    return [str(message["message"]) for message in receiver.messages]


RETRY_ALL = "Send it again with `watchbridge deadletters retry --all` (every dead letter);"


def test_the_apps_alerts_that_name_a_command_say_where_commands_are_told(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    app = app_from_environment(entrypoint_env(tmp_path, OPTIONS))
    dead, other = alert_text(tmp_path, receiver, app)
    assert RETRY_ALL in dead.splitlines()[0] and dead.endswith("\n\n" + COMMANDS_HELP)
    assert other == "nothing to run"


def test_outside_home_assistant_alerts_are_as_before(
    tmp_path: Path, receiver: AlertReceiver
) -> None:
    dead, other = alert_text(tmp_path, receiver, None)
    assert RETRY_ALL in dead.splitlines()[0] and COMMANDS_HELP not in dead
    assert other == "nothing to run"


WRONG_SECRET = {"event": "start", "user": "1", "item": {"type": "movie", "ids": {"imdb": "tt1"}}}


def refused_for_a_wrong_secret(tmp_path: Path, app: HomeAssistantApp | None) -> list[str]:
    """The webhook's answer, then what the page, /api/status and the log say to do, after a
    webhook posted with a wrong secret."""
    from watchbridge import webhooks

    path = write_config(tmp_path)
    secret = "server:\n  webhook_secret: the-right-secret-0123456789\n"
    path.write_text(path.read_text().replace("server:\n", secret, 1), encoding="utf-8")
    runtime = build_runtime(load_config(path, {}), home_assistant=app)
    told: list[str] = []
    handler = _Collect(told)
    webhooks.log.addHandler(handler)
    try:
        with AppThread(create_app(runtime, extra_routes=[*webhooks.ROUTES, *ROUTES])) as served:
            answer = httpx.post(f"{served.url}/webhooks/generic/wrong-secret", json=WRONG_SECRET)
            shown = html.unescape(httpx.get(f"{served.url}/").text)
            api = httpx.get(f"{served.url}/api/status").json()["refused_webhooks"][0]
    finally:
        webhooks.log.removeHandler(handler)
    return [answer.json()["error"], shown, f"{api['reason']} {api['fix']}", " ".join(told)]


class _Collect(logging.Handler):
    def __init__(self, told: list[str]) -> None:
        super().__init__()
        self.told = told

    def emit(self, record: logging.LogRecord) -> None:
        self.told.append(f"{record.getMessage()} {getattr(record, 'reason', '')}")
        self.told.append(str(getattr(record, "fix", "")))


def test_the_apps_wrong_secret_says_the_webhook_secret_option_not_a_terminal_command(
    tmp_path: Path,
) -> None:
    # The app's user has no terminal: the secret is the webhook_secret option they typed.
    app = app_from_environment(entrypoint_env(tmp_path, OPTIONS))
    for said in refused_for_a_wrong_secret(tmp_path, app):
        assert "webhook-urls" not in said
        assert "webhook_secret option" in said


def test_with_its_own_yaml_the_apps_wrong_secret_names_the_yamls_key_too(tmp_path: Path) -> None:
    app = app_from_environment(entrypoint_env(tmp_path, {"config_file": "mine.yaml"}))
    answer, shown, api, told = refused_for_a_wrong_secret(tmp_path, app)
    assert "webhook-urls" not in answer + shown + api + told
    assert "server.webhook_secret" in api and "server.webhook_secret" in told


def test_outside_home_assistant_a_wrong_secret_names_webhook_urls(tmp_path: Path) -> None:
    for said in refused_for_a_wrong_secret(tmp_path, None):
        assert "watchbridge webhook-urls" in said
