"""A Home Assistant user's walk through the app, from install to upgrade: Plex with Plex Pass,
Serializd and AniList in their own YAML (no Trakt), the sidebar page through ingress, the Log
tab. What they see where the options form and their YAML meet, where the webhook secret is,
and which version the store offers."""

from __future__ import annotations

import html
from pathlib import Path

import httpx

from tests.harness import AppThread, write_config
from watchbridge.app import create_app, start_warnings
from watchbridge.config import Config, load_config
from watchbridge.entrypoint import Paths, plan_start
from watchbridge.homeassistant import APP_ENV, FROM_OWN_YAML, app_from_environment
from watchbridge.statuspage import ROUTES
from watchbridge.wiring import build_runtime

REPO = Path(__file__).resolve().parents[1]
SECRET = "a-long-random-secret-0123456789"
UNSET = "${WATCHBRIDGE_WEBHOOK_SECRET:-}"  # DOCS.md's own YAML, with the option left empty
PROFILE = (
    "profiles:\n  household:\n    users: {plex: ['1']}\n"
    "    accounts:\n      serializd: {token: 'eyJhbGciOiJIUzI1NiJ9.e30.sig'}\n"
    "services:\n  serializd: {}\n"
)


def _paths(tmp_path: Path) -> Paths:
    return Paths(
        config=tmp_path / "config" / "watchbridge.yaml",
        data=tmp_path / "data",
        ha_options=tmp_path / "data" / "options.json",
        example=tmp_path / "example.yaml",
    )


def _config(tmp_path: Path, secret: str = "") -> Config:
    """A config with one profile (Plex's owner, to Serializd), and `secret` if given."""
    path = write_config(tmp_path, PROFILE)
    if secret:
        text = path.read_text(encoding="utf-8")
        line = f"server:\n  webhook_secret: '{secret}'\n"
        path.write_text(text.replace("server:\n", line, 1), encoding="utf-8")
    return load_config(path, {})


def _page(tmp_path: Path, options: dict[str, object], secret: str = "") -> str:
    """The sidebar page of the service the entrypoint starts for these options."""
    plan = plan_start(
        [], _paths(tmp_path), options, "token", is_file=lambda p: p.name == "own.yaml"
    )
    app = app_from_environment(plan.env)
    runtime = build_runtime(_config(tmp_path, secret), home_assistant=app)
    with AppThread(create_app(runtime, extra_routes=ROUTES)) as served:
        return html.unescape(httpx.get(f"{served.url}/").text)


def _webhooks_part(page: str) -> str:
    return page.split('id="webhooks"', 1)[1]


# --------------------------------------------------------------------------- webhook secret


def test_the_page_says_the_secret_was_made_up_when_the_option_is_empty(tmp_path: Path) -> None:
    # The options form with no webhook_secret: the page used to send the user to an empty
    # option for the secret in the URLs.
    shown = _webhooks_part(_page(tmp_path, {"media_users": ["1"]}))
    assert "it is the app's <code>webhook_secret</code> option" not in shown
    assert "the app's <code>webhook_secret</code> option is empty" in shown
    assert "made one up" in shown and "watchbridge webhook-urls" in shown
    assert "set the option" in shown


def test_the_page_sends_an_own_yaml_without_a_secret_to_the_option_too(tmp_path: Path) -> None:
    # DOCS.md's own YAML, the option left empty: ${WATCHBRIDGE_WEBHOOK_SECRET:-} is "".
    shown = _webhooks_part(_page(tmp_path, {"config_file": "own.yaml"}, UNSET))
    assert "it is your YAML's <code>server.webhook_secret</code>." not in shown
    assert "your YAML sets no <code>server.webhook_secret</code>" in shown
    assert "made one up" in shown and "${WATCHBRIDGE_WEBHOOK_SECRET}" in shown


def test_with_a_secret_the_page_names_where_it_is_typed(tmp_path: Path) -> None:
    form = _page(tmp_path, {"media_users": ["1"], "webhook_secret": SECRET}, SECRET)
    assert "it is the app's <code>webhook_secret</code> option (its Configuration tab)" in form
    assert "made one up" not in _webhooks_part(form)


def test_an_own_yaml_without_a_secret_is_warned_of_at_start(tmp_path: Path) -> None:
    # The form's start says so (entrypoint.option_warnings); an own YAML's said nothing, and the
    # made-up secret is shown only by a command the app's user has no terminal for.
    for written in ("", UNSET):
        warnings = start_warnings(_config(tmp_path, written), [], environ={APP_ENV: FROM_OWN_YAML})
        (said,) = [w for w in warnings if "made up" in w]
        assert said.startswith("server.webhook_secret is not set: the webhook URLs hold a secret")
        assert "webhook_secret option" in said and "${WATCHBRIDGE_WEBHOOK_SECRET}" in said
    with_secret = start_warnings(_config(tmp_path, SECRET), [], environ={APP_ENV: FROM_OWN_YAML})
    assert not [w for w in with_secret if "made up" in w]
