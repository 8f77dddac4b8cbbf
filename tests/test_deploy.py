"""Packaging: container entrypoint, Home Assistant app, Unraid, compose, systemd, Dockerfile."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import (
    START_TIMEOUT,
    ServiceProcess,
    free_port,
    wait_ready,
    watchbridge,
    write_config,
)
from watchbridge.anime_data import from_config
from watchbridge.app import start_warnings
from watchbridge.config import ServerConfig, load_config
from watchbridge.entrypoint import (
    GENERATED_CONFIG,
    SERVICE_FOLDERS,
    Paths,
    StartError,
    apply_plan,
    become,
    load_or_create_token,
    option_warnings,
    options_env,
    plan_start,
    read_options,
    render_config,
    translate_options,
    write_private,
)
from watchbridge.errors import ConfigError
from watchbridge.healthcheck import addresses_to_ask, healthz_url, service_host
from watchbridge.homeassistant import (
    APP_ENV,
    FROM_OWN_YAML,
    HomeAssistantApp,
    app_from_environment,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "watchbridge.example.yaml"
ADDON = REPO / "addon"
TOKEN = "generated-token"
FULL_OPTIONS: dict[str, Any] = {
    "log_level": "debug",
    "webhook_secret": "s3cr$t-${not-a-var}",
    "alert_urls": ["ntfys://ntfy.sh/watchbridge", "", "discord://id/token"],
    "trakt_client_id": "trakt-id",
    "trakt_client_secret": "trakt-secret",
    "media_users": ["1", "alex"],
    "plex_plays_from": "webhooks",
}


def _paths(tmp_path: Path) -> Paths:
    return Paths(
        config=tmp_path / "config" / "watchbridge.yaml",
        data=tmp_path / "data",
        ha_options=tmp_path / "data" / "options.json",
        example=EXAMPLE,
    )


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- options translation


def test_options_put_the_ui_on_the_ingress_port_and_webhooks_on_8765() -> None:
    server = translate_options({}, TOKEN)["server"]
    assert (server["port"], server["webhook_port"]) == (8099, 8765)


def test_options_let_only_the_ingress_proxy_skip_the_generated_token() -> None:
    server = translate_options({}, TOKEN)["server"]
    assert server["trusted_proxies"] == ["172.30.32.2"]
    assert server["api_token"] == TOKEN


def test_options_keep_the_database_in_the_data_dir() -> None:
    config = translate_options({}, TOKEN, Path("/data"))
    assert config["storage"]["path"] == "/data/watchbridge.db"


def test_options_log_level_defaults_to_info() -> None:
    assert translate_options({}, TOKEN)["logging"]["level"] == "info"
    assert translate_options({"log_level": "warning"}, TOKEN)["logging"]["level"] == "warning"


def test_options_webhook_secret_is_set_only_when_given() -> None:
    assert translate_options({"webhook_secret": "abc"}, TOKEN)["server"]["webhook_secret"] == "abc"
    assert "webhook_secret" not in translate_options({"webhook_secret": ""}, TOKEN)["server"]


def test_options_alert_urls_skip_blank_entries() -> None:
    urls = translate_options(FULL_OPTIONS, TOKEN)["alerts"]["urls"]
    assert urls == ["ntfys://ntfy.sh/watchbridge", "discord://id/token"]


def test_options_add_trakt_with_its_client_id_and_the_secret_when_given() -> None:
    both = translate_options(FULL_OPTIONS, TOKEN)["services"]["trakt"]
    assert both == {"client_id": "trakt-id", "client_secret": "trakt-secret"}
    alone = translate_options({"trakt_client_id": "trakt-id"}, TOKEN)["services"]["trakt"]
    assert alone == {"client_id": "trakt-id"}
    assert "services" not in translate_options({"trakt_client_secret": "x"}, TOKEN)


def test_options_with_a_trakt_secret_but_no_id_give_a_warning() -> None:
    assert option_warnings({"trakt_client_secret": "x", "media_users": ["1"]})
    assert option_warnings({"trakt_client_id": "trakt-id", "media_users": ["1"]}) != []
    assert option_warnings(FULL_OPTIONS) == []


def test_options_media_users_become_one_profile_with_the_trakt_account() -> None:
    profile = translate_options(FULL_OPTIONS, TOKEN)["profiles"]["household"]
    assert profile["users"]["plex"] == ["1", "alex"] == profile["users"]["jellyfin"]
    assert profile["accounts"] == {"trakt": {}}


def test_options_from_before_plex_plays_from_keep_both_and_say_to_choose() -> None:
    older = {k: v for k, v in FULL_OPTIONS.items() if k != "plex_plays_from"}
    users = translate_options(older, TOKEN)["profiles"]["household"]["users"]
    assert users["plex"] == users["tautulli"] == ["1", "alex"]  # nothing stops arriving
    (warning,) = option_warnings(older)
    assert warning.startswith("plex_plays_from is not set")


@pytest.mark.parametrize(("choice", "heard", "not_heard"), [
    ("webhooks", "plex", "tautulli"), ("tautulli", "tautulli", "plex"),
])  # fmt: skip
def test_options_listen_for_plex_plays_to_one_of_plex_and_tautulli(
    choice: str, heard: str, not_heard: str, tmp_path: Path
) -> None:
    options = FULL_OPTIONS | {"plex_plays_from": choice}
    users = translate_options(options, TOKEN)["profiles"]["household"]["users"]
    assert users[heard] == ["1", "alex"] and not_heard not in users
    path = tmp_path / "watchbridge.yaml"
    path.write_text(render_config(translate_options(options, TOKEN)))  # as the entrypoint does
    assert not any("reported twice" in w for w in start_warnings(load_config(path, {}), []))


def test_options_without_a_plex_server_listen_to_neither_and_say_nothing_of_plex(
    tmp_path: Path,
) -> None:
    # An Emby or Jellyfin household has no Plex: `none` stops the warning at every start
    # that asks it to choose between Plex's webhooks and Tautulli's.
    options = FULL_OPTIONS | {"plex_plays_from": "none"}
    users = translate_options(options, TOKEN)["profiles"]["household"]["users"]
    assert "plex" not in users and "tautulli" not in users
    assert users["emby"] == users["jellyfin"] == ["1", "alex"]
    assert option_warnings(options) == []
    path = tmp_path / "watchbridge.yaml"
    path.write_text(render_config(translate_options(options, TOKEN)))
    assert start_warnings(load_config(path, {}), []) == []
    assert "none" in _yaml(ADDON / "config.yaml")["schema"]["plex_plays_from"]


def test_options_unset_plex_plays_from_offer_none_for_a_household_without_plex() -> None:
    older = {k: v for k, v in FULL_OPTIONS.items() if k != "plex_plays_from"}
    (warning,) = option_warnings(older)
    assert "none" in warning and "without a Plex server" in warning


def test_options_with_media_users_but_no_trakt_say_plays_have_nowhere_to_go() -> None:
    options = {"media_users": ["1"], "plex_plays_from": "webhooks", "webhook_secret": "s" * 24}
    (warning,) = option_warnings(options)
    assert "plays have nowhere to go" in warning


def test_options_without_a_webhook_secret_say_where_the_made_up_one_is_shown() -> None:
    # The app then makes one up and keeps it in its database; the status page and the log never
    # show it, and the command that does needs a terminal with Docker: the user is told.
    options = {k: v for k, v in FULL_OPTIONS.items() if k != "webhook_secret"}
    (warning,) = option_warnings(options)
    assert warning.startswith("webhook_secret is empty: ")
    assert "webhook-urls" in warning and "set webhook_secret" in warning
    assert option_warnings(options | {"webhook_secret": "  "}) == [warning]
    # Nobody's plays are taken yet (the media_users warning says so): nothing to add.
    assert option_warnings({}) == ["media_users is empty: every webhook is answered and ignored"]


def test_options_without_media_users_map_nobody_and_say_so() -> None:
    assert "profiles" not in translate_options({"trakt_client_id": "x"}, TOKEN)
    assert option_warnings({}) == ["media_users is empty: every webhook is answered and ignored"]


def test_generated_config_loads_with_every_option(tmp_path: Path) -> None:
    path = tmp_path / "generated.yaml"
    path.write_text(render_config(translate_options(FULL_OPTIONS, TOKEN, tmp_path)))
    config = load_config(path, environ={})
    assert config.server.port == 8099
    assert config.server.webhook_port == 8765
    assert config.server.trusted_proxies == ["172.30.32.2"]
    assert config.server.api_token is not None and config.server.api_token.reveal() == TOKEN
    assert config.server.webhook_secret is not None
    assert config.server.webhook_secret.reveal() == "s3cr$t-${not-a-var}"
    assert config.storage.path == str(tmp_path / "watchbridge.db")
    assert config.logging.level == "debug"
    assert [u.reveal() for u in config.alerts.urls] == [
        "ntfys://ntfy.sh/watchbridge",
        "discord://id/token",
    ]
    assert config.services.trakt is not None
    assert config.services.trakt.client_secret.reveal() == "trakt-secret"


def test_generated_config_from_empty_options_loads(tmp_path: Path) -> None:
    path = tmp_path / "generated.yaml"
    path.write_text(render_config(translate_options({}, TOKEN, tmp_path)))
    assert load_config(path, environ={}).services.configured() == []


def test_generated_config_is_written_readable_by_owner_only(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    plan = plan_start([], paths, FULL_OPTIONS, TOKEN)
    apply_plan(plan, paths)
    generated = paths.data / GENERATED_CONFIG
    assert _mode(generated) == 0o600
    assert load_config(generated, environ={}).server.port == 8099


def test_home_assistant_start_serves_the_generated_config(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    plan = plan_start([], paths, FULL_OPTIONS, TOKEN)
    generated = str(paths.data / GENERATED_CONFIG)
    assert plan.argv == ["watchbridge", "serve", "--config", generated, "--backup-on-stop"]
    assert plan.env["WATCHBRIDGE_CONFIG"] == generated
    assert plan.run_as == (1000, 1000)


def test_start_as_root_hands_the_data_dir_to_uid_1000_then_drops_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "watchbridge.db").write_text("")
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "chown", lambda path, uid, gid, **_: calls.append(("chown", path)))
    monkeypatch.setattr(os, "setgroups", lambda groups: calls.append(("setgroups", groups)))
    monkeypatch.setattr(os, "setgid", lambda gid: calls.append(("setgid", gid)))
    monkeypatch.setattr(os, "setuid", lambda uid: calls.append(("setuid", uid)))
    become((1000, 1000), tmp_path)
    assert calls == [
        ("chown", tmp_path),
        ("chown", tmp_path / "watchbridge.db"),
        ("setgroups", []),
        ("setgid", 1000),
        ("setuid", 1000),
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="starts as root, as Home Assistant does")
def test_start_as_root_hands_over_the_files_of_the_services_own_folders_and_no_others() -> None:
    # `docker exec` runs as root: `watchbridge anime refresh` killed halfway leaves its
    # dataset's .tmp root-owned in anime-datasets/, and the service (UID 1000) could never
    # write that dataset again. A folder of anyone else's in /data keeps what it holds.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        data = Path(name)
        data.chmod(0o755)
        datasets = data / SERVICE_FOLDERS[0]
        datasets.mkdir()
        (datasets / "datasets.json").write_text("{}")
        stale = datasets / "datasets.json.tmp"
        stale.write_text("{")
        (data / "elsewhere").mkdir()
        (data / "elsewhere" / "kept.txt").write_text("")
        outside = data / "elsewhere" / "outside.txt"
        outside.write_text("")
        (datasets / "link").symlink_to(outside)
        become_then_write = (
            "import sys; from pathlib import Path; from watchbridge.entrypoint import become\n"
            f"become((1000, 1000), Path({str(data)!r}))\n"
            f"Path({str(stale)!r}).write_text('{{}}')  # as anime_data writes a dataset\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", become_then_write], capture_output=True, text=True, timeout=60
        )
        owners = {
            path.relative_to(data).as_posix(): path.lstat().st_uid
            for path in [data, *data.rglob("*")]
        }
    assert result.returncode == 0, result.stderr
    assert owners == {
        ".": 1000,
        "anime-datasets": 1000,
        "anime-datasets/datasets.json": 1000,
        "anime-datasets/datasets.json.tmp": 1000,
        "anime-datasets/link": 1000,  # the link itself, not the file it leads to
        "elsewhere": 1000,
        "elsewhere/kept.txt": 0,
        "elsewhere/outside.txt": 0,
    }


def test_the_services_own_folders_are_those_it_writes_beside_the_database(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    plan = plan_start([], paths, FULL_OPTIONS, TOKEN)
    apply_plan(plan, paths)
    config = load_config(paths.data / GENERATED_CONFIG, environ={})
    assert from_config(config).directory == paths.data / SERVICE_FOLDERS[0]


def test_api_token_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "watchbridge.api_token"
    first = load_or_create_token(path)
    assert len(first) >= 32
    assert _mode(path) == 0o600
    assert load_or_create_token(path) == first


def test_user_config_file_wins_over_the_options(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    user = paths.config.parent / "mine.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("server: {port: 8099}\n")
    plan = plan_start([], paths, {**FULL_OPTIONS, "config_file": "mine.yaml"}, TOKEN)
    assert plan.argv == ["watchbridge", "serve", "--config", str(user), "--backup-on-stop"]
    assert plan.generated_config is None


def test_user_config_picks_up_options_through_its_references(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    user = paths.config.parent / "watchbridge.yaml"
    user.parent.mkdir(parents=True)
    user.write_text(
        "server:\n"
        "  api_token: ${WATCHBRIDGE_API_TOKEN}\n"
        "  webhook_secret: ${WATCHBRIDGE_WEBHOOK_SECRET}\n"
        "logging: {level: '${WATCHBRIDGE_LOG_LEVEL}'}\n"
        "alerts: {urls: ['${WATCHBRIDGE_ALERT_URL_2}']}\n"
        "services:\n"
        "  trakt: {client_id: '${TRAKT_CLIENT_ID}', client_secret: '${TRAKT_CLIENT_SECRET}'}\n"
    )
    plan = plan_start([], paths, {**FULL_OPTIONS, "config_file": "watchbridge.yaml"}, TOKEN)
    config = load_config(user, environ=plan.env)
    assert config.server.api_token is not None and config.server.api_token.reveal() == TOKEN
    assert config.logging.level == "debug"
    assert [u.reveal() for u in config.alerts.urls] == ["discord://id/token"]
    assert config.services.trakt is not None and config.services.trakt.client_id == "trakt-id"


def test_the_service_is_marked_as_the_app_with_where_its_config_came_from(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    from_options = plan_start([], paths, FULL_OPTIONS, TOKEN)
    a_command = plan_start(["deadletters", "list"], paths, FULL_OPTIONS, TOKEN)
    own = {**FULL_OPTIONS, "config_file": "watchbridge.yaml"}
    own_yaml = plan_start([], paths, own, TOKEN, is_file=lambda _: True)
    plain = plan_start([], paths, None, TOKEN, is_file=lambda _: True)
    # FULL_OPTIONS' second alert_urls entry is blank: the config keeps entries 1 and 3.
    form = HomeAssistantApp(options_form=True, alert_url_entries=(1, 3))
    assert app_from_environment(from_options.env) == form
    assert app_from_environment(a_command.env) == form
    assert app_from_environment(own_yaml.env) == HomeAssistantApp(options_form=False)
    assert APP_ENV not in plain.env and app_from_environment(plain.env) is None


def test_options_env_leaves_unset_options_out() -> None:
    assert options_env({}, TOKEN) == {"WATCHBRIDGE_API_TOKEN": TOKEN}


def test_missing_user_config_file_falls_back_to_the_options(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    plan = plan_start([], paths, {"config_file": "missing.yaml"}, TOKEN)
    assert plan.generated_config is not None
    assert "does not exist" in plan.notes[0]


def test_an_own_yaml_left_unnamed_by_config_file_is_said_to_be_unread(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.config.parent.mkdir(parents=True)
    paths.config.write_text("server: {port: 8099, webhook_port: 8765}\n")
    plan = plan_start([], paths, FULL_OPTIONS, TOKEN)
    assert plan.generated_config is not None
    assert f"{paths.config} is not read" in plan.notes[0]
    assert "set config_file to watchbridge.yaml" in plan.notes[0]


def test_without_an_own_yaml_the_options_start_says_nothing_of_one(tmp_path: Path) -> None:
    plan = plan_start([], _paths(tmp_path), FULL_OPTIONS, TOKEN)
    assert not any("config_file" in note for note in plan.notes)


def test_a_bad_option_is_named_as_the_option_the_user_filled_in(tmp_path: Path) -> None:
    pasted = {**FULL_OPTIONS, "trakt_client_id": "abc\u200bdef", "log_level": "loud"}
    with pytest.raises(StartError) as caught:
        plan_start([], _paths(tmp_path), pasted, TOKEN)
    message = str(caught.value)
    assert message.startswith("the app options: ")
    assert "trakt_client_id: holds the invisible" in message
    assert "log_level: " in message
    assert GENERATED_CONFIG not in message and "services.trakt" not in message


def test_a_webhook_secret_option_pasted_with_a_space_is_refused_as_an_own_yaml_is(
    tmp_path: Path,
) -> None:
    refused = "starts or ends with a space or line break (pasted?): remove it"
    with pytest.raises(StartError) as caught:
        plan_start([], _paths(tmp_path), {**FULL_OPTIONS, "webhook_secret": "s3cret-abc "}, TOKEN)
    assert str(caught.value) == f"the app options: webhook_secret: {refused}"
    own = tmp_path / "own.yaml"
    own.write_text("server: {webhook_secret: 's3cret-abc '}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"server.webhook_secret: {re.escape(refused)}"):
        load_config(own, {})


@pytest.mark.parametrize("option", ["trakt_client_id", "trakt_client_secret"])
def test_a_trakt_option_pasted_with_a_space_is_refused_naming_the_option(
    tmp_path: Path, option: str
) -> None:
    refused = "starts or ends with a space or line break (pasted?): remove it"
    pasted = {**FULL_OPTIONS, option: f"{FULL_OPTIONS[option]}\n"}
    with pytest.raises(StartError) as caught:
        plan_start([], _paths(tmp_path), pasted, TOKEN)
    assert str(caught.value) == f"the app options: {option}: {refused}"


@pytest.mark.parametrize(
    ("option", "variable", "key"),
    [
        ("webhook_secret", "WATCHBRIDGE_WEBHOOK_SECRET", "server.webhook_secret"),
        ("trakt_client_id", "TRAKT_CLIENT_ID", "services.trakt.client_id"),
        ("trakt_client_secret", "TRAKT_CLIENT_SECRET", "services.trakt.client_secret"),
    ],
)
def test_an_own_yaml_refuses_an_option_pasted_with_a_space_naming_its_variable(
    tmp_path: Path, option: str, variable: str, key: str
) -> None:
    # The own YAML takes the option as ${VARIABLE}: it was stripped on the way, silently.
    paths = _paths(tmp_path)
    own = paths.config.parent / "watchbridge.yaml"
    own.parent.mkdir(parents=True)
    own.write_text(
        "server: {webhook_secret: '${WATCHBRIDGE_WEBHOOK_SECRET}'}\n"
        "services:\n"
        "  trakt: {client_id: '${TRAKT_CLIENT_ID}', client_secret: '${TRAKT_CLIENT_SECRET}'}\n"
    )
    options = {**FULL_OPTIONS, "config_file": own.name, option: f" {FULL_OPTIONS[option]}"}
    plan = plan_start([], paths, options, TOKEN)
    with pytest.raises(ConfigError) as caught:
        load_config(own, plan.env)
    assert caught.value.message.endswith(
        f"{key}: starts or ends with a space or line break (pasted?): remove it where "
        f"${{{variable}}} is set"
    )
    assert FULL_OPTIONS[option] not in caught.value.message  # a secret stays unsaid


def test_media_users_typed_with_commas_in_one_entry_are_named_as_the_option(
    tmp_path: Path,
) -> None:
    with pytest.raises(StartError) as caught:
        plan_start([], _paths(tmp_path), {**FULL_OPTIONS, "media_users": ["1, alex"]}, TOKEN)
    assert str(caught.value).count("media_users: one name with commas") == 1  # said once


@pytest.mark.parametrize(
    "name", ["../data/options.json", "/addon_configs/a1b2c3d4_watchbridge/watchbridge.yaml"]
)
def test_config_file_outside_the_config_dir_is_refused_in_the_folders_words(
    tmp_path: Path, name: str
) -> None:
    # DOCS.md shows the folder as the host has it; a path copied from there is no name in it.
    with pytest.raises(StartError) as caught:
        plan_start([], _paths(tmp_path), {"config_file": name}, TOKEN)
    message = str(caught.value)
    assert "/addon_configs/<repository id>_watchbridge on the host" in message
    assert "e.g. watchbridge.yaml" in message


def test_invalid_options_json_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "options.json"
    path.write_text("{not json")
    with pytest.raises(StartError) as excinfo:
        read_options(path)
    assert "\n" not in str(excinfo.value)


def test_no_options_file_means_not_home_assistant(tmp_path: Path) -> None:
    assert read_options(tmp_path / "options.json") is None


# --------------------------------------------------------------------------- start plan


def test_first_start_plans_copying_the_example(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    plan = plan_start([], paths)
    assert plan.copy_example_to == paths.config
    assert plan.argv == ["watchbridge", "serve", "--config", str(paths.config)]
    assert len(plan.notes) == 1


def test_first_start_copies_the_shipped_example(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    apply_plan(plan_start([], paths), paths)
    assert paths.config.read_text() == EXAMPLE.read_text()


def test_the_copied_example_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    apply_plan(plan_start([], paths), paths)
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600


def test_a_directory_in_the_config_files_place_is_named_as_such(tmp_path: Path) -> None:
    # Docker makes one for a single-file mount whose host file does not exist yet.
    paths = _paths(tmp_path)
    paths.config.mkdir(parents=True)
    with pytest.raises(StartError) as caught:
        apply_plan(plan_start([], paths), paths)
    assert caught.value.args[0].startswith(f"{paths.config} is a directory, not a file")
    assert list(paths.config.parent.iterdir()) == [paths.config]  # no temporary file left


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "watchbridge.yaml"
    target.mkdir()  # os.replace cannot put a file there
    with pytest.raises(OSError):
        write_private(target, "x")
    assert list(tmp_path.iterdir()) == [target]


def test_existing_config_is_kept(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.config.parent.mkdir(parents=True)
    paths.config.write_text("logging: {level: error}\n")
    plan = plan_start([], paths)
    apply_plan(plan, paths)
    assert plan.copy_example_to is None and plan.notes == []
    assert paths.config.read_text() == "logging: {level: error}\n"


def test_arguments_pass_through_with_the_config_in_the_environment(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    plan = plan_start(["check-config"], paths, is_file=lambda _: True)
    assert plan.argv == ["watchbridge", "check-config"]
    assert plan.env == {"WATCHBRIDGE_CONFIG": str(paths.config)}


def test_a_command_inside_the_app_runs_with_the_services_config_and_user(tmp_path: Path) -> None:
    # `docker exec ... python -m watchbridge.entrypoint auth trakt` (addon/DOCS.md)
    paths = _paths(tmp_path)
    plan = plan_start(["auth", "trakt"], paths, FULL_OPTIONS, TOKEN)
    assert plan.argv == ["watchbridge", "auth", "trakt"]
    assert plan.env["WATCHBRIDGE_CONFIG"] == str(paths.data / GENERATED_CONFIG)
    assert plan.run_as == (1000, 1000)


def test_signing_in_without_media_users_names_the_option_not_the_generated_file(
    tmp_path: Path,
) -> None:
    options = {**FULL_OPTIONS, "media_users": []}
    with pytest.raises(StartError, match="set the media_users option") as caught:
        plan_start(["auth", "trakt"], _paths(tmp_path), options, TOKEN)
    assert GENERATED_CONFIG not in str(caught.value)


def test_signing_in_to_another_service_under_the_options_says_to_write_a_yaml(
    tmp_path: Path,
) -> None:
    with pytest.raises(StartError, match="sign in to Trakt only; for anilist write your own"):
        plan_start(["auth", "anilist"], _paths(tmp_path), FULL_OPTIONS, TOKEN)


def test_a_command_inside_the_app_gets_the_options_for_the_users_yaml(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    options = {**FULL_OPTIONS, "config_file": "watchbridge.yaml"}
    plan = plan_start(["status"], paths, options, TOKEN, is_file=lambda _: True)
    assert plan.argv == ["watchbridge", "status"]
    assert plan.env["WATCHBRIDGE_API_TOKEN"] == TOKEN


def test_version_needs_no_config(tmp_path: Path) -> None:
    plan = plan_start(["--version"], _paths(tmp_path))
    assert plan.argv == ["watchbridge", "--version"]
    assert plan.copy_example_to is None and plan.env == {}


def test_unwritable_config_dir_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "config"
    blocker.write_text("a file where the config folder should be")
    paths = _paths(tmp_path)
    with pytest.raises(StartError) as excinfo:
        apply_plan(plan_start([], paths), paths)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message == f"cannot write {paths.config}: {blocker} is a file where a folder should be"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_config_dir_is_one_clear_line(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    paths.config.parent.mkdir()
    paths.config.parent.chmod(0o500)
    try:
        with pytest.raises(StartError, match="Permission denied"):
            apply_plan(plan_start([], paths), paths)
    finally:
        paths.config.parent.chmod(0o700)


def _entrypoint(
    tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env = {k: v for k, v in env.items() if k not in ("PUID", "PGID")}
    env.update(extra_env or {})
    env.update(
        WATCHBRIDGE_CONFIG=str(tmp_path / "config" / "watchbridge.yaml"),
        WATCHBRIDGE_DATA_DIR=str(tmp_path / "data"),
        WATCHBRIDGE_HA_OPTIONS=str(tmp_path / "data" / "options.json"),
        WATCHBRIDGE_EXAMPLE_CONFIG=str(EXAMPLE),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return subprocess.run(
        [sys.executable, "-m", "watchbridge.entrypoint", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_container_first_start_copies_the_example_and_runs_the_real_cli(tmp_path: Path) -> None:
    result = _entrypoint(tmp_path, "check-config")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "config" / "watchbridge.yaml").read_text() == EXAMPLE.read_text()
    assert "wrote the example config" in result.stderr
    assert "config OK" in result.stdout


def test_the_apps_check_config_names_the_options_not_the_generated_files_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `check-config` as the app's entrypoint prepares it (DOCS.md: a command in the app): the
    # service's own warnings are about values the options form filled in.
    options = {
        "media_users": ["1", "alex"],
        "plex_plays_from": "tautulli",
        "trakt_client_id": "trakt-id",
        "webhook_secret": "short-secret",
    }
    paths = _paths(tmp_path)
    plan = plan_start(["check-config"], paths, options, TOKEN)
    apply_plan(plan, paths)
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    result = watchbridge(*plan.argv[1:])
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert any(w.startswith("warning: media_users lists '1', which Tautulli") for w in warnings)
    assert any(w.startswith("warning: webhook_secret is shorter than") for w in warnings)
    assert not any("profiles." in w or "server." in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("alert_urls", "entry"),
    [
        (["ntfys://ntfy.sh/my-topic", "ntfy.sh/my-topic"], 2),
        # The generated file drops the blank entry (its alerts.urls[1]); the form shows it.
        (["ntfys://ntfy.sh/my-topic", " ", "ntfy.sh/my-topic"], 3),
    ],
)
def test_the_apps_check_config_names_a_bad_alert_url_by_its_option_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alert_urls: list[str], entry: int
) -> None:
    # `check-config` in the app, on the file written from the options form: its error names
    # the entry of alert_urls the user filled in, not the generated file's line and key.
    options = {
        "media_users": ["alex"],
        "plex_plays_from": "webhooks",
        "trakt_client_id": "trakt-id",
        "alert_urls": alert_urls,
    }
    paths = _paths(tmp_path)
    plan = plan_start(["check-config"], paths, options, TOKEN)
    apply_plan(plan, paths)
    # The entrypoint's own line at start names the same entry.
    assert any(note.startswith(f"alert_urls entry {entry}: ") for note in plan.notes)
    for name, value in plan.env.items():
        monkeypatch.setenv(name, value)
    result = watchbridge(*plan.argv[1:])
    assert result.returncode == 2, result.stderr  # a config error's code
    expected = f"error: alert_urls entry {entry}: not an Apprise URL"
    assert expected in result.stderr, result.stderr
    assert "alerts.urls" not in result.stderr and "options.yaml" not in result.stderr
    assert "ntfy.sh/my-topic" not in result.stderr + result.stdout


def test_an_own_yaml_in_the_app_is_warned_about_by_its_own_keys(tmp_path: Path) -> None:
    own = tmp_path / "watchbridge.yaml"
    own.write_text(render_config(translate_options({"media_users": ["1"]}, TOKEN, tmp_path)))
    warnings = start_warnings(load_config(own, {}), [], environ={APP_ENV: FROM_OWN_YAML})
    assert any(w.startswith("profiles.household.users.tautulli lists '1'") for w in warnings)


def test_puid_and_pgid_other_than_the_containers_user_are_said_to_do_nothing(
    tmp_path: Path,
) -> None:
    # Images of linuxserver.io switch to PUID/PGID; this one runs as the user Docker starts it
    # as (`--user`, compose's `user:`), so files would belong to another user than asked.
    uid, gid = os.getuid(), os.getgid()
    asked = {"PUID": str(uid + 1), "PGID": str(gid)}
    result = _entrypoint(tmp_path, "check-config", extra_env=asked)
    assert result.returncode == 0, result.stderr
    (note,) = [line for line in result.stderr.splitlines() if "PUID" in line]
    assert note.startswith(f"watchbridge: PUID={uid + 1} PGID={gid} are set, but this image")
    assert f"runs as UID {uid} GID {gid}" in note and "--user" in note and "user:" in note
    same = _entrypoint(tmp_path, "check-config", extra_env={"PUID": str(uid), "PGID": str(gid)})
    assert same.returncode == 0 and "PUID" not in same.stderr


def test_container_with_unwritable_config_dir_exits_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("a file where the config folder should be")
    result = _entrypoint(tmp_path, "check-config")
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("watchbridge: cannot write")


def _mount_read_only(folder: Path) -> bool:
    """An empty read-only tmpfs on `folder`, as a `:ro` volume gives a container; False where
    this machine does not let the test mount (not root, no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)])
    return mounted.returncode == 0


def test_container_with_a_read_only_config_folder_and_no_config_says_to_put_one_there(
    tmp_path: Path,
) -> None:
    # `-v ./config:/config:ro` before watchbridge.yaml exists: no owner can write there, so
    # the advice is the file, or a writable mount for the first start, not a chown.
    folder = tmp_path / "config"
    if not _mount_read_only(folder):
        pytest.skip("cannot mount a read-only filesystem here")
    try:
        result = _entrypoint(tmp_path, "check-config")
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    config = folder / "watchbridge.yaml"
    assert line.startswith(f"watchbridge: cannot write {config}: {folder} is mounted read-only")
    assert "chown" not in line and "watchbridge.example.yaml" in line


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_container_whose_user_cannot_enter_the_data_folder_hands_over_to_the_command() -> None:
    """Not Home Assistant's "cannot read the app options": `serve` (its start checks) names the
    folder and what to do, as tests/test_cli.py shows. The entrypoint is prepared in a process
    of another user, not exec'd: that user could not run this machine's test interpreter."""
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o755)
        (folder / "config").mkdir(mode=0o755)
        (folder / "config" / "watchbridge.yaml").write_text(EXAMPLE.read_text())
        (folder / "config" / "watchbridge.yaml").chmod(0o644)
        data = folder / "data"  # the host folder, made by root (docker made it, or a sudo mkdir)
        data.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
        env.update(
            HOME=name,
            WATCHBRIDGE_CONFIG=str(folder / "config" / "watchbridge.yaml"),
            WATCHBRIDGE_DATA_DIR=str(data),
            WATCHBRIDGE_EXAMPLE_CONFIG=str(EXAMPLE),
        )
        prepare_serve = (
            "import os; from watchbridge.entrypoint import Paths, prepare; "
            "print(prepare(['serve'], Paths.from_env(os.environ)).argv)"
        )
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        result = subprocess.run(
            [*nobody, sys.executable, "-c", prepare_serve],
            env=env,
            cwd=name,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(["watchbridge", "serve"])


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_a_config_folder_root_owns_names_the_folder_and_the_chown_for_the_containers_user() -> None:
    # Unraid makes the appdata folders as root; the template runs the container as 99:100.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o755)
        config = folder / "config"
        config.mkdir(mode=0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
        env.update(
            HOME=name,
            WATCHBRIDGE_CONFIG=str(config / "watchbridge.yaml"),
            WATCHBRIDGE_DATA_DIR=str(folder / "data"),
            WATCHBRIDGE_EXAMPLE_CONFIG=str(EXAMPLE),
        )
        unraid = ["setpriv", "--reuid=99", "--regid=100", "--clear-groups"]
        result = subprocess.run(
            [*unraid, sys.executable, "-m", "watchbridge.entrypoint"],
            env=env,
            cwd=name,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"watchbridge: cannot write {config / 'watchbridge.yaml'} (Permission")
    assert f"the folder {config} (owner UID 0 GID 0, mode 0755) is not writable by UID 99 " in line
    assert f"(chown -R 99:100 {config}; in a container, on the host the folder mounted" in line
    assert ".tmp" not in line and "FOLDER" not in line


def _prepare_as_root(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The Home Assistant entrypoint's preparing (started as root, it becomes the service's
    user) in a process of its own: the config it runs, or its one line when it stops. Not
    exec'd: the service's user could not run this machine's test interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env.update(
        HOME=str(folder),
        WATCHBRIDGE_CONFIG=str(folder / "config" / "watchbridge.yaml"),
        WATCHBRIDGE_DATA_DIR=str(folder / "data"),
        WATCHBRIDGE_EXAMPLE_CONFIG=str(EXAMPLE),
    )
    prepare_serve = (
        "import os, sys; from watchbridge.entrypoint import Paths, StartError, prepare\n"
        "try:\n"
        f"    plan = prepare({list(args)!r}, Paths.from_env(os.environ))\n"
        "    print(plan.env['WATCHBRIDGE_CONFIG'])\n"
        "except StartError as exc:\n"
        "    sys.exit(f'watchbridge: {exc}')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prepare_serve],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="starts as root, as Home Assistant does")
def test_an_own_yaml_only_root_can_read_names_the_file_the_user_and_the_chown() -> None:
    # A watchbridge.yaml written in a root shell (the Terminal & SSH app) with mode 0600: the
    # service, UID 1000, used to stop on a bare "Permission denied".
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the service's user can reach
        folder = Path(name)
        folder.chmod(0o755)
        (folder / "config").mkdir(mode=0o755)
        own = folder / "config" / "watchbridge.yaml"
        own.write_text(EXAMPLE.read_text())
        own.chmod(0o600)
        (folder / "data").mkdir(mode=0o755)
        (folder / "data" / "options.json").write_text(json.dumps({"config_file": own.name}))
        refused = _prepare_as_root(folder, "serve")
        own.chmod(0o644)  # readable by all, as an editor may leave it
        served = _prepare_as_root(folder, "serve")
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"watchbridge: cannot read your config_file {own} (Permission denied)")
    assert "the app runs as UID 1000 GID 1000" in line, line
    assert "belongs to UID 0 GID 0 with mode 0600" in line, line
    assert line.endswith(
        "chown 1000:1000 /addon_configs/<repository id>_watchbridge/watchbridge.yaml"
    ), line
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == str(own)


@pytest.mark.skipif(os.geteuid() != 0, reason="starts as root, as Home Assistant does")
def test_an_own_yaml_in_a_folder_the_service_cannot_enter_says_to_give_it_the_folder() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:
        folder = Path(name)
        folder.chmod(0o755)
        (folder / "config").mkdir(mode=0o700)
        own = folder / "config" / "watchbridge.yaml"
        own.write_text(EXAMPLE.read_text())
        (folder / "data").mkdir(mode=0o755)
        (folder / "data" / "options.json").write_text(json.dumps({"config_file": own.name}))
        refused = _prepare_as_root(folder, "serve")
    assert refused.returncode == 1, refused.stdout
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"watchbridge: cannot read your config_file {own} (Permission denied)")
    assert "UID 1000 GID 1000, which cannot enter the folder holding it" in line, line
    assert line.endswith("chown -R 1000:1000 /addon_configs/<repository id>_watchbridge"), line


# --------------------------------------------------------------------------- Home Assistant app


def test_addon_targets_aarch64_and_amd64_exactly() -> None:
    assert _yaml(ADDON / "config.yaml")["arch"] == ["aarch64", "amd64"]


def test_addon_publishes_8765_for_webhooks_and_uses_ingress_for_the_ui() -> None:
    manifest = _yaml(ADDON / "config.yaml")
    assert manifest["ingress"] is True and manifest["ingress_port"] == 8099
    assert manifest["ports"] == {"8765/tcp": 8765}
    assert "8765/tcp" in manifest["ports_description"]
    assert manifest["watchdog"] == "http://[HOST]:[PORT:8765]/healthz"
    assert manifest["map"] == ["addon_config:rw"]


def test_addon_backups_hold_a_consistent_copy_of_the_database_not_the_live_file() -> None:
    # Home Assistant copies /data file by file while the app runs: the live database, being
    # written, may come out damaged; the copy `watchbridge backup` takes first does not.
    manifest = _yaml(ADDON / "config.yaml")
    assert (
        manifest["backup_pre"] == "watchbridge backup --database /data/watchbridge.db --missing-ok"
    )
    assert {"watchbridge.db", "watchbridge.db-wal", "watchbridge.db-shm"} <= set(
        manifest["backup_exclude"]
    )
    assert translate_options({}, "t")["storage"]["path"] == "/data/watchbridge.db"


def test_addon_manifest_has_the_required_keys() -> None:
    manifest = _yaml(ADDON / "config.yaml")
    assert manifest["slug"] == "watchbridge" and manifest["version"] == "0.1.0"
    for key in ("name", "description", "url", "image", "startup", "boot", "init", "panel_icon"):
        assert key in manifest, key


def test_addon_schema_covers_exactly_the_options_the_entrypoint_reads() -> None:
    schema = _yaml(ADDON / "config.yaml")["schema"]
    expected = {"log_level", "webhook_secret", "alert_urls"}
    expected |= {"trakt_client_id", "trakt_client_secret", "media_users", "config_file"}
    expected |= {"plex_plays_from"}
    assert set(schema) == expected
    assert schema["webhook_secret"] == "password?" and schema["trakt_client_secret"] == "password?"


def test_addon_defaults_translate_to_a_loadable_config(tmp_path: Path) -> None:
    defaults = _yaml(ADDON / "config.yaml")["options"]
    path = tmp_path / "generated.yaml"
    path.write_text(render_config(translate_options(defaults, TOKEN, tmp_path)))
    assert load_config(path, environ={}).logging.level == "info"


def test_addon_translations_name_every_option_and_the_port() -> None:
    manifest = _yaml(ADDON / "config.yaml")
    translations = _yaml(ADDON / "translations" / "en.yaml")
    assert set(translations["configuration"]) == set(manifest["schema"])
    assert all({"name", "description"} <= set(v) for v in translations["configuration"].values())
    assert set(translations["network"]) == set(manifest["ports"])


def _docs_table(heading: str) -> list[str]:
    """The first column of the table under `heading` in addon/DOCS.md, each `name` in it."""
    section = (ADDON / "DOCS.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+) \|", section, flags=re.M)
    return [name for row in rows[1:] for name in re.findall(r"`([^`]+)`", row)]


def test_addon_docs_describe_every_option_of_the_form_and_no_other() -> None:
    schema = _yaml(ADDON / "config.yaml")["schema"]
    assert sorted(_docs_table("Options")) == sorted(schema)


def test_addon_docs_name_the_variables_the_options_give_a_users_own_yaml() -> None:
    # `_1` stands for every alert URL in order (`WATCHBRIDGE_ALERT_URL_1`, `_2`, ...).
    given = set(options_env(FULL_OPTIONS | {"alert_urls": ["ntfys://a/b"]}, TOKEN))
    documented = {n for n in _docs_table("Your own YAML") if not n.startswith("_")}
    assert documented == given


def test_addon_docs_starting_yaml_runs_as_the_options_form_does(tmp_path: Path) -> None:
    # "A starting point that behaves like the options form (uncomment the parts whose options
    # you set)": all of it uncommented, with the options that fill it, it loads as the form's
    # own config does and starts without a warning (such as a viewing counted twice).
    docs = (ADDON / "DOCS.md").read_text()
    sample = docs.split("point that behaves like the options form", 1)[1]
    sample = sample.split("```yaml\n", 1)[1].split("```", 1)[0]
    own = tmp_path / "watchbridge.yaml"
    own.write_text(re.sub(r"^# ", "", sample, flags=re.M))
    options = FULL_OPTIONS | {"alert_urls": [], "webhook_secret": "a-long-webhook-secret-1234"}
    config = load_config(own, options_env(options, TOKEN))
    form = tmp_path / GENERATED_CONFIG
    form.write_text(render_config(translate_options(options, TOKEN)))
    expected = load_config(form, {})
    for section in ("server", "storage", "logging", "alerts", "services"):
        assert getattr(config, section) == getattr(expected, section), section
    assert list(config.profiles) == list(expected.profiles)
    assert start_warnings(config, [], environ={}) == []


def test_addon_folder_has_docs_and_no_build_files() -> None:
    for name in ("DOCS.md", "README.md", "CHANGELOG.md"):
        assert (ADDON / name).is_file(), name
    assert "## [0.1.0]" in (ADDON / "CHANGELOG.md").read_text()
    assert not (ADDON / "build.yaml").exists() and not (ADDON / "Dockerfile").exists()


def test_repository_yaml_names_the_store_repository() -> None:
    repository = _yaml(REPO / "repository.yaml")
    assert {"name", "url", "maintainer"} <= set(repository)


# --------------------------------------------------------------------------- Unraid


def _unraid() -> ET.Element:
    return ET.parse(ADDON / "unraid" / "watchbridge.xml").getroot()


def test_unraid_template_is_well_formed_version_2() -> None:
    root = _unraid()
    assert root.tag == "Container" and root.get("version") == "2"
    for tag in ("Name", "Repository", "Registry", "Support", "Project", "Overview", "Category"):
        assert (root.findtext(tag) or "").strip(), tag
    assert root.findtext("WebUI") == "http://[IP]:[PORT:8765]/"


def test_unraid_template_maps_config_data_and_port() -> None:
    configs = {c.get("Target"): c for c in _unraid().findall("Config")}
    assert configs["/config"].text == "/mnt/user/appdata/watchbridge/config"
    assert configs["/data"].text == "/mnt/user/appdata/watchbridge/data"
    assert configs["8765"].get("Type") == "Port"


def test_unraid_template_leaves_the_time_zone_to_unraid() -> None:
    # Unraid gives every container its server's zone (`-e TZ="..."`, Settings > Date and
    # Time) before the template's variables, and docker takes the last: a template's TZ of
    # Etc/UTC put every household on UTC (the status page's times, AniList's days).
    configs = {c.get("Target"): c for c in _unraid().findall("Config")}
    assert "TZ" not in configs


def test_unraid_template_masks_every_secret() -> None:
    configs = {c.get("Target"): c for c in _unraid().findall("Config")}
    for name in ("WATCHBRIDGE_WEBHOOK_SECRET", "TRAKT_CLIENT_SECRET", "WATCHBRIDGE_API_TOKEN"):
        assert configs[name].get("Mask") == "true", name
    assert configs["TRAKT_CLIENT_ID"].get("Type") == "Variable"


RAW_MAIN = "https://raw.githubusercontent.com/watchbridge/watchbridge/main/"


def test_unraid_template_links_only_files_this_repository_has() -> None:
    # Unraid shows the Icon in the Docker tab and the app store, and reads TemplateURL for
    # updates: a link to a file that is not here is a broken image, or no updates.
    root = _unraid()
    links = [root.findtext(tag) or "" for tag in ("Icon", "TemplateURL")]
    assert all(link.startswith(RAW_MAIN) for link in links), links
    files = [REPO / link.removeprefix(RAW_MAIN) for link in links]
    assert [f for f in files if not f.is_file()] == []
    assert files[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_readmes_unraid_commands_fetch_the_template_and_prepare_its_folders() -> None:
    # Unraid's Add Container lists only templates in templates-user (or from Community
    # Applications), and the container (--user 99:100) cannot write folders Unraid makes as root.
    root = _unraid()
    section = (REPO / "README.md").read_text().split("### Unraid\n", 1)[1].split("\n### ", 1)[0]
    command = section.split("```sh\n", 1)[1].split("```", 1)[0]
    user = root.findtext("ExtraParams", "").split("--user ", 1)[1].split()[0]
    folders = [c.text or "" for c in root.findall("Config") if c.get("Type") == "Path"]
    appdata = os.path.commonpath(folders)
    assert root.findtext("TemplateURL", "") in command
    assert "/boot/config/plugins/dockerMan/templates-user/my-watchbridge.xml" in command
    assert f"mkdir -p {' '.join(folders)}" in command
    assert f"chown -R {user} {appdata}" in command


def _example_variables() -> set[str]:
    """The variables the example config takes a value from (`key: ${NAME}`, with no default)."""
    return set(re.findall(r"^[ #]*\w+: \$\{([A-Z_]+)\}", EXAMPLE.read_text(), flags=re.M))


def test_unraid_template_offers_every_variable_the_example_config_uses() -> None:
    configs = {c.get("Target"): c for c in _unraid().findall("Config")}
    assert _example_variables() - set(configs) == set()
    secrets = [
        name
        for name in _example_variables()
        if name.endswith(("_SECRET", "_TOKEN", "_KEY", "_PASSWORD"))
    ]
    assert [name for name in secrets if configs[name].get("Mask") != "true"] == []


def test_env_example_names_every_variable_the_example_config_uses() -> None:
    named = set(re.findall(r"^#? ?([A-Z_]+)=", (REPO / ".env.example").read_text(), flags=re.M))
    assert _example_variables() - named == set()


# --------------------------------------------------------------------------- compose + monitoring


def _compose() -> Any:
    return _yaml(REPO / "docker-compose.yml")


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_git_ignores_the_files_the_compose_steps_put_secrets_in() -> None:
    # README: `cp .env.example .env` (secrets) and `cp config/watchbridge.example.yaml
    # config/watchbridge.yaml`, in the checkout: a `git add .` must not commit them.
    files = [".env", "config/watchbridge.yaml", "data/watchbridge.db"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *files], cwd=REPO, capture_output=True, text=True
    )
    assert ignored.stdout.split() == files


def test_compose_runs_watchbridge_with_volumes_port_and_optional_env_file() -> None:
    service = _compose()["services"]["watchbridge"]
    assert service["build"] == "." and service["image"].startswith("ghcr.io/watchbridge/")
    assert service["ports"] == ["8765:8765"]
    assert service["volumes"] == ["./config:/config", "./data:/data"]
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert service["restart"] == "unless-stopped"
    assert service["user"] == "1000:1000"


@pytest.mark.parametrize(
    "grace",
    [
        str(_yaml(REPO / "docker-compose.yml")["services"]["watchbridge"]["stop_grace_period"]),
        (REPO / "addon" / "unraid" / "watchbridge.xml").read_text().split("--stop-timeout ")[1][:2],
        str(_yaml(REPO / "addon" / "config.yaml")["timeout"]),
    ],
)
def test_every_package_gives_a_stop_the_time_the_shutdown_takes(grace: str) -> None:
    seconds = int(grace.removesuffix("s"))
    # A stop ends its work within server.shutdown_timeout of the signal (open connections'
    # 2 s drain and background work inside it; an alert send left running not waited for),
    # then makes its final writes (the alive note, closing the database): well under a
    # second. A kill in them loses nothing (noted alive at the signal; queues in SQLite).
    assert seconds >= ServerConfig().shutdown_timeout + 1


def test_compose_bounds_the_containers_log() -> None:
    logging = _compose()["services"]["watchbridge"]["logging"]
    assert logging["options"]["max-size"] and logging["options"]["max-file"]


def test_compose_healthcheck_is_exec_form_python() -> None:
    test = _compose()["services"]["watchbridge"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1].endswith("python")
    assert test[2:] == ["-m", "watchbridge.healthcheck"]  # the image's (its test below)


def test_compose_monitoring_stack_is_behind_a_profile() -> None:
    services = _compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    assert "profiles" not in services["watchbridge"]


def test_prometheus_scrapes_watchbridge_metrics() -> None:
    job = _yaml(REPO / "config" / "prometheus.yml")["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["watchbridge:8765"]


def test_grafana_provider_reads_the_folder_compose_mounts() -> None:
    provisioning = REPO / "config" / "grafana" / "provisioning"
    provider = _yaml(provisioning / "dashboards" / "watchbridge.yml")["providers"][0]
    mounts = _compose()["services"]["grafana"]["volumes"]
    assert f"./config/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    datasource = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"


def test_grafana_dashboard_charts_the_core_metrics_via_a_datasource_variable() -> None:
    dashboard = json.loads((REPO / "config/grafana/dashboards/watchbridge.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "watchbridge_webhook_events_total",
        "watchbridge_outbox_depth",
        "watchbridge_dead_letters",
        "watchbridge_unmatched",
        "watchbridge_http_requests_total",
        "watchbridge_sync_runs_total",
        "watchbridge_outbox_oldest_pending_age_seconds",
        "watchbridge_sync_last_success_timestamp_seconds",
        "watchbridge_sign_in_expiry_seconds",
        "watchbridge_sign_in_ok",
        "process_resident_memory_bytes",
    ):
        assert metric in exprs, metric
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    assert dashboard["id"] is None and dashboard["uid"]


def test_env_example_holds_no_secret_values() -> None:
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert name in {"TZ"} or value == "", line


def test_env_example_lists_every_variable_the_example_config_needs() -> None:
    """Each `${NAME}` without a default in the example (the ones a service's lines need) has a
    line in .env.example, so uncommenting a service and filling in .env is enough."""
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", EXAMPLE.read_text())) - {"VAR"}
    listed = set(re.findall(r"^#? ?([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert needed - listed == set()


# --------------------------------------------------------------------------- systemd


def test_systemd_unit_runs_serve_and_restarts_on_failure() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ADDON / "systemd" / "watchbridge.service")
    service = unit["Service"]
    assert service["ExecStart"] == (
        "/opt/watchbridge/.venv/bin/watchbridge serve --config /etc/watchbridge/watchbridge.yaml"
    )
    assert service["Restart"] == "on-failure"
    assert service["User"] == "watchbridge"
    assert service["TimeoutStopSec"] == "15"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_readmes_systemd_cli_command_loads_what_the_unit_loads() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ADDON / "systemd" / "watchbridge.service")
    section = (REPO / "README.md").read_text().split("### systemd (bare metal)")[1]
    command = section.split("```sh")[2].split("```")[0]
    assert f"EnvironmentFile={unit['Service']['EnvironmentFile']}" in command
    data_dir = "WATCHBRIDGE_DATA_DIR=/var/lib/watchbridge"
    assert f"Environment={data_dir}" in (ADDON / "systemd" / "watchbridge.service").read_text()
    assert f"-E {data_dir}" in command
    assert f"--uid={unit['Service']['User']}" in command


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists, and /opt/watchbridge is not installed here.
    text = (ADDON / "systemd" / "watchbridge.service").read_text()
    unit = tmp_path / "watchbridge.service"
    unit.write_text(text.replace("/opt/watchbridge/.venv/bin/watchbridge", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Dockerfile


def _hadolint() -> str | None:
    sibling = Path(sys.executable).with_name("hadolint")
    return str(sibling) if sibling.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint binary not installed (dev extra)")
def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_dockerfile_default_target_runs_as_uid_1000_through_the_entrypoint() -> None:
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()]
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    assert stages[-1] == "FROM app AS runtime"
    assert lines[-1] == "USER 1000:1000"
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "watchbridge.entrypoint"]' in lines
    assert 'VOLUME ["/config", "/data"]' in lines


def _healthcheck_command(source: str) -> list[str]:
    """The image's (or compose's) healthcheck command, to run with this interpreter."""
    if source == "Dockerfile":
        joined = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
        line = next(ln for ln in joined.splitlines() if ln.startswith("HEALTHCHECK "))
        command = json.loads(line.split(" CMD ", 1)[1])
    else:
        command = _compose()["services"]["watchbridge"]["healthcheck"]["test"][1:]
    assert command[0] == "/opt/venv/bin/python"
    return [sys.executable, *command[1:]]


def _healthcheck_env(tmp_path: Path, config: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHBRIDGE_")}
    env.update(
        WATCHBRIDGE_CONFIG=str(config),
        WATCHBRIDGE_DATA_DIR=str(tmp_path / "data"),
        WATCHBRIDGE_PORT=str(port),
        WATCHBRIDGE_IMAGE="1",
    )
    return env


def test_the_healthchecks_ask_the_address_the_service_listens_on(tmp_path: Path) -> None:
    # server.host set to one address (host networking on Unraid): the service does not answer
    # on 127.0.0.1, and a check asking there marked the container unhealthy for ever.
    port = free_port()
    config = write_config(tmp_path, port=port)
    config.write_text(config.read_text().replace("host: 127.0.0.1", "host: 127.0.0.2"))
    env = _healthcheck_env(tmp_path, config, port)
    service = ServiceProcess(config, port).start(wait=False)
    try:
        wait_ready(f"http://127.0.0.2:{port}", START_TIMEOUT, serving=service._listening)
        checks = {
            source: subprocess.run(
                _healthcheck_command(source), env=env, capture_output=True, text=True, timeout=60
            )
            for source in ("Dockerfile", "docker-compose.yml")
        }
    finally:
        service.terminate()
    assert {source: result.returncode for source, result in checks.items()} == {
        "Dockerfile": 0,
        "docker-compose.yml": 0,
    }, {source: result.stdout + result.stderr for source, result in checks.items()}
    stopped = subprocess.run(
        _healthcheck_command("Dockerfile"), env=env, capture_output=True, text=True, timeout=60
    )
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(f"http://127.0.0.2:{port}/healthz: ")


@pytest.mark.parametrize(
    ("host", "asked"),
    [
        ("0.0.0.0", ["127.0.0.1"]),
        ("", ["127.0.0.1"]),
        ("::", ["::1", "127.0.0.1"]),
        ("192.168.1.20", ["192.168.1.20"]),
        ("fd00::20", ["fd00::20"]),
        ("nas.local", ["nas.local"]),
    ],
)
def test_the_healthcheck_asks_loopback_for_every_interface_and_an_address_itself(
    host: str, asked: list[str]
) -> None:
    assert addresses_to_ask(host) == asked
    assert healthz_url("fd00::20", "8765") == "http://[fd00::20]:8765/healthz"


def test_the_apps_healthcheck_reads_the_config_the_app_runs(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    env = _healthcheck_env(tmp_path, paths.config, 8765)
    paths.data.mkdir(parents=True)
    paths.ha_options.write_text(json.dumps(FULL_OPTIONS))
    token = load_or_create_token(paths.data / "watchbridge.api_token")  # as the app's start
    apply_plan(plan_start([], paths, FULL_OPTIONS, token), paths)  # writes them
    assert service_host(env) == ("0.0.0.0", None)  # the options form's
    own = paths.config.parent / "mine.yaml"
    own.parent.mkdir(parents=True)
    own.write_text(
        "server: {host: 192.168.1.20, port: 8099, webhook_port: 8765,"
        " api_token: '${WATCHBRIDGE_API_TOKEN}'}\n"
        f"storage: {{path: {paths.data / 'watchbridge.db'}}}\n"
    )
    paths.ha_options.write_text(json.dumps({**FULL_OPTIONS, "config_file": own.name}))
    assert service_host(env) == ("192.168.1.20", None)


def test_dockerfile_keeps_sqlites_temporary_files_on_the_data_disk() -> None:
    # Compose mounts /tmp in memory; the space check before a rewrite counts the data disk.
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()]
    assert "SQLITE_TMPDIR=/data \\" in lines


def test_dockerignore_keeps_the_build_context_to_an_allow_list() -> None:
    entries = [
        ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and ln[0] != "#"
    ]
    assert entries[0] == "*"
    assert "!config/watchbridge.example.yaml" in entries and "!.env" not in entries


# --------------------------------------------------------------------------- pyproject


def test_the_build_asks_for_a_setuptools_that_reads_the_license_field() -> None:
    # `license = "MIT"` (an SPDX expression, PEP 639) is read from setuptools 77.0.3 on; an
    # older one stops the install with "`project.license` must be valid exactly by one
    # definition" wherever pip uses the setuptools at hand (--no-build-isolation, distros).
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    floors = [
        tuple(int(part) for part in found[1].split("."))
        for requirement in pyproject["build-system"]["requires"]
        if (found := re.fullmatch(r"setuptools>=([\d.]+)", requirement))
    ]
    assert floors and floors[0] >= (77, 0, 3)


# --------------------------------------------------------------------------- constraints.txt

CONSTRAINTS = REPO / "constraints.txt"
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)\s*(?:;.*)?")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str]) -> list[tuple[str, str]]:
    """(canonical name, version) of each `name==version` line; any other form fails the test."""
    pins = []
    for line in requirements:
        found = _PIN.fullmatch(line.strip())
        assert found, f"not an exact pin: {line!r}"
        pins.append((_canonical(found[1]), found[2]))
    return pins


def _constraint_pins() -> list[tuple[str, str]]:
    lines = CONSTRAINTS.read_text(encoding="utf-8").splitlines()
    return _pins([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")])


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_constraints_pin_every_direct_dependency_at_pyprojects_version() -> None:
    # The two drifting apart would make `pip install -c constraints.txt .` fail to resolve
    # (or, for a dependency left out, let it float again).
    direct = dict(_pins(_pyproject()["project"]["dependencies"]))
    pinned = dict(_constraint_pins())
    assert {name: pinned.get(name) for name in direct} == direct


def test_constraints_pin_each_distribution_once() -> None:
    names = [name for name, _ in _constraint_pins()]
    assert len(names) > len(_pyproject()["project"]["dependencies"])  # the indirect ones too
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_constraints_leave_out_the_dev_tools_and_pip() -> None:
    dev = {name for name, _ in _pins(_pyproject()["project"]["optional-dependencies"]["dev"])}
    names = {name for name, _ in _constraint_pins()}
    assert names & (dev | {"pip", "setuptools", "wheel", "watchbridge"}) == set()


def test_the_image_and_the_systemd_install_use_the_constraints() -> None:
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()]
    copied = next(ln for ln in lines if ln.startswith("COPY pyproject.toml"))
    assert "constraints.txt" in copied.split()
    assert "RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt ." in lines
    assert "!constraints.txt" in (REPO / ".dockerignore").read_text().splitlines()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "/opt/watchbridge/.venv/bin/pip install -c constraints.txt ." in readme


def test_options_name_an_alert_url_apprise_does_not_take_by_its_entry_in_alert_urls() -> None:
    # The service says alerts.urls[1], a key of the generated file the user never saw.
    options = {**FULL_OPTIONS, "alert_urls": ["ntfys://ntfy.sh/my-topic", "ntfy.sh/my-topic"]}
    (warning,) = option_warnings(options)
    assert warning.startswith("alert_urls entry 2: not an Apprise URL; expected schema://")
    assert "Configuration tab" in warning and "ntfy.sh/my-topic" not in warning
    unknown = {**FULL_OPTIONS, "alert_urls": ["nfty://ntfy.sh/my-topic"]}
    assert option_warnings(unknown)[0].startswith("alert_urls entry 1: unknown Apprise service")


def test_options_say_a_webhook_secret_with_a_slash_cannot_go_in_plex_urls() -> None:
    (warning,) = option_warnings({**FULL_OPTIONS, "webhook_secret": "abc/def-ghi-jkl-mno"})
    assert warning.startswith("webhook_secret is set, but it holds '/'")
