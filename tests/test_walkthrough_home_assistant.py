"""A Home Assistant user's walk through the app, from install to upgrade: Plex with Plex Pass,
Serializd and AniList in their own YAML (no Trakt), the sidebar page through ingress, the Log
tab. What they see where the options form and their YAML meet, where the webhook secret is,
and which version the store offers."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import httpx
import yaml

from tests.harness import AppThread, write_config
from watchbridge.app import create_app, start_warnings
from watchbridge.config import Config, load_config
from watchbridge.entrypoint import Paths, plan_start, unread_options
from watchbridge.homeassistant import APP_ENV, FROM_OWN_YAML, app_from_environment
from watchbridge.statuspage import ROUTES
from watchbridge.wiring import build_runtime

REPO = Path(__file__).resolve().parents[1]
# The user's own YAML as DOCS.md's "Without Trakt" step gives it, for Plex with Plex Pass.
OWN_YAML = """\
server:
  port: 8099
  webhook_port: 8765
  trusted_proxies: [172.30.32.2]
  api_token: ${WATCHBRIDGE_API_TOKEN}
  webhook_secret: ${WATCHBRIDGE_WEBHOOK_SECRET:-}
storage:
  path: /data/watchbridge.db
logging:
  level: ${WATCHBRIDGE_LOG_LEVEL:-info}
alerts:
  urls: []
services:
  plex: {url: "http://192.168.1.20:32400", token: plex-token}
  serializd: {}
  anilist: {client_id: "12345"}
profiles:
  household:
    users: {plex: ["1"]}
    accounts:
      serializd: {token: "eyJhbGciOiJIUzI1NiJ9.e30.sig"}
      anilist: {token: "anilist-token"}
"""
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


# --------------------------------------------------------------------------- the form and the YAML

# The form as a user who started with it left it when they moved to their own YAML.
FORM_LEFT_FILLED = {
    "log_level": "info",
    "webhook_secret": SECRET,
    "alert_urls": ["ntfys://ntfy.sh/my-topic"],
    "media_users": ["alex"],
    "plex_plays_from": "tautulli",
    "trakt_client_id": "trakt-id",
    "config_file": "watchbridge.yaml",
}


def _prepared(folder: Path, options: dict[str, object], own_yaml: str) -> list[str]:
    """The app's lines at start (its entrypoint's preparing, as Home Assistant starts it, in a
    process of its own; not exec'd: the service's user may not run this machine's test
    interpreter)."""
    folder.chmod(0o755)
    (folder / "config").mkdir(mode=0o755)
    (folder / "config" / "watchbridge.yaml").write_text(own_yaml, encoding="utf-8")
    (folder / "config" / "watchbridge.yaml").chmod(0o644)
    (folder / "data").mkdir(mode=0o755)
    (folder / "data" / "options.json").write_text(json.dumps(options), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env.update(
        HOME=str(folder),
        WATCHBRIDGE_CONFIG=str(folder / "config" / "watchbridge.yaml"),
        WATCHBRIDGE_DATA_DIR=str(folder / "data"),
    )
    prepare = (
        "import os; from watchbridge.entrypoint import Paths, prepare\n"
        "for note in prepare([], Paths.from_env(os.environ)).notes: print(note)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prepare],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_the_options_an_own_yaml_does_not_read_are_named_at_start() -> None:
    # The file wins, as the form's description says; the log said only "using ... as written",
    # and the user's media_users and Tautulli choice silently changed nothing.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the service's user can reach
        lines = _prepared(Path(name), FORM_LEFT_FILLED, OWN_YAML)
    assert lines[0].startswith("Home Assistant: using ") and lines[0].endswith(" as written")
    (said,) = lines[1:]
    assert said.startswith("these options are set but your YAML does not read them")
    for unread in ("media_users", "plex_plays_from", "trakt_client_id", "alert_urls"):
        assert f"{unread} (write " in said, said
    assert "${WATCHBRIDGE_ALERT_URL_1}" in said and "${TRAKT_CLIENT_ID}" in said
    # Read through ${...}: not named; log_level at its default is no choice of the user's.
    assert "webhook_secret" not in said and "log_level" not in said
    assert SECRET not in said and "ntfy.sh" not in said and "trakt-id" not in said


def test_an_own_yaml_reading_every_option_set_is_said_to_be_used_alone() -> None:
    options = {"log_level": "debug", "webhook_secret": SECRET, "config_file": "watchbridge.yaml"}
    assert unread_options(options, OWN_YAML) == []
    assert unread_options({**options, "alert_urls": [" ", "json://h/x"]}, OWN_YAML) == [
        "these options are set but your YAML does not read them, so they change nothing: "
        "alert_urls (write ${WATCHBRIDGE_ALERT_URL_1} under alerts.urls) (the app's "
        "Documentation tab, Your own YAML)"
    ]
    # A reference in a comment reads nothing.
    commented = OWN_YAML + "# alerts: {urls: ['${WATCHBRIDGE_ALERT_URL_1}']}\n"
    assert unread_options({"alert_urls": ["json://h/x"]}, commented) != []
    assert unread_options({"media_users": ["1"]}, "server: [") == []  # watchbridge names it


# --------------------------------------------------------------------------- upgrade


def test_the_app_version_is_the_packages_the_images_and_the_changelogs_last_release() -> None:
    # The Supervisor offers an update only when config.yaml's version moves, and pulls the image
    # tagged with it; the app's log and page show the package's version; the update dialog shows
    # the changelog. A release moves all four together.
    manifest = yaml.safe_load((REPO / "addon" / "config.yaml").read_text(encoding="utf-8"))
    package = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    image = re.search(r"ARG BUILD_VERSION=(\S+)", (REPO / "Dockerfile").read_text())
    changelog = (REPO / "addon" / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d[^\]]*)\]", changelog, flags=re.MULTILINE)
    assert image is not None and released
    assert manifest["version"] == package["version"] == image[1] == released[0]


def test_the_forms_start_without_media_users_is_told_once_in_the_forms_words(
    tmp_path: Path,
) -> None:
    # The entrypoint says `media_users is empty: ...`; the service added "map your media-server
    # accounts under `profiles` (see the README)", a file and a README the form's user never saw.
    plan = plan_start([], _paths(tmp_path), {}, "token")
    assert "media_users is empty: every webhook is answered and ignored" in plan.notes
    config = load_config(write_config(tmp_path), {})
    said = start_warnings(config, [], environ=plan.env)
    assert not [w for w in said if "profiles" in w or "README" in w], said
