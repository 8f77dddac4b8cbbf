"""The config file: discovery, interpolation, and one clear line per mistake."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from watchbridge.config import (
    LINK_SERVICES,
    Config,
    Duration,
    Secret,
    find_config,
    interpolate,
    is_trusted_proxy,
    load_config,
    parse_config,
)
from watchbridge.errors import ConfigError
from watchbridge.readers import READERS

EXAMPLE = Path(__file__).parent.parent / "config" / "watchbridge.example.yaml"
FILE = Path("watchbridge.yaml")


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, FILE, environ or {})
    return caught.value.message


def test_example_config_loads_without_any_environment() -> None:
    config = load_config(EXAMPLE, {})
    assert config.server.port == 8765
    assert config.storage.path == "./data/watchbridge.db"
    assert config.storage.durability == "full"


def test_example_config_takes_data_dir_from_environment() -> None:
    config = load_config(EXAMPLE, {"WATCHBRIDGE_DATA_DIR": "/data"})
    assert config.storage.path == "/data/watchbridge.db"


def test_uncommenting_the_examples_of_the_example_config_gives_a_config_that_loads() -> None:
    # "Copy it to watchbridge.yaml and uncomment what you use": a Trakt service and a profile.
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n")
    wanted = ["#  trakt:", "#    client_id:", "#    client_secret:", "#  me:", "#    default:"]
    for n, line in enumerate(lines):  # the first of each: Trakt's client_id, not AniList's
        if first := next((w for w in wanted if line.startswith(w)), None):
            lines[n] = line[1:]
            wanted.remove(first)
    text = "\n".join(lines)
    environ = {"TRAKT_CLIENT_ID": "id", "TRAKT_CLIENT_SECRET": "secret"}
    config = parse_config(text, FILE, environ)
    assert config.services.trakt is not None and "me" in config.profiles


def test_uncommenting_the_example_config_for_a_household_without_trakt_loads() -> None:
    # Jellyfin, Serializd and AniList, with the link between the last two.
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n")
    start = next(n for n, line in enumerate(lines) if line.startswith("#  jellyfin:"))
    blocks = ("#  jellyfin:", "#  serializd:", "#  anilist:", "#  me:", "#  anilist-serializd:")
    keep = False
    for n, line in enumerate(lines[start:], start):
        if line.startswith("#  ") and not line.startswith("#   "):
            keep = line.startswith(blocks)
        skipped = ("#      plex:", "#      trakt:", "#    # ")
        if keep and line.startswith("#") and not line.startswith(skipped):
            lines[n] = line[1:]
    environ = {"JELLYFIN_API_KEY": "k", "SERIALIZD_TOKEN": f"tvproject_credentials={JWT}"}
    config = parse_config("\n".join(lines), FILE, environ | {"ANILIST_CLIENT_ID": "123"})
    assert list(config.links["anilist-serializd"].services) == ["anilist", "serializd"]
    assert config.profiles["me"].accounts.anilist is not None
    serializd = config.profiles["me"].accounts.serializd
    assert serializd is not None and serializd.token == Secret(JWT)


def test_uncommenting_the_example_config_for_a_plex_household_without_trakt_loads() -> None:
    # Plex, Serializd and AniList with the links the README's "Without Trakt" names; the
    # profile's `trakt: {}` line is marked as only for services.trakt, so it is left out.
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n")
    start = next(n for n, line in enumerate(lines) if line.startswith("#  plex:"))
    blocks = ("#  plex:", "#  serializd:", "#  anilist:", "#  me:", "#  plex-serializd:")
    blocks += ("#  plex-anilist:",)
    keep = False
    for n, line in enumerate(lines[start:], start):
        if line.startswith("#  ") and not line.startswith("#   "):
            keep = line.startswith(blocks)
        if keep and line.startswith("#") and not line.startswith(("#      trakt:", "#    # ")):
            lines[n] = line[1:]
    trakt_line = next(line for line in lines if line.startswith("#      trakt:"))
    assert "only with services.trakt" in trakt_line
    environ = {"PLEX_TOKEN": "t", "SERIALIZD_TOKEN": JWT}
    config = parse_config("\n".join(lines), FILE, environ | {"ANILIST_CLIENT_ID": "123"})
    assert config.services.trakt is None
    assert {name: list(link.services) for name, link in config.links.items()} == {
        "plex-serializd": ["plex", "serializd"],
        "plex-anilist": ["plex", "anilist"],
    }


def test_a_storage_path_under_home_written_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse_config("storage:\n  path: ~/watchbridge/watchbridge.db\n", FILE, {})
    assert config.storage.path == str(tmp_path / "watchbridge" / "watchbridge.db")


def test_empty_file_gives_all_defaults() -> None:
    assert parse_config("", FILE, {}) == Config(source=FILE)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml: config file not found"):
        load_config(tmp_path / "nothere.yaml", {})


def test_invalid_yaml_names_file_line_and_key() -> None:
    # The line the bracket opened on (PyYAML's own mark is the file's end).
    assert error_of("server:\n  port: 1\n  host: [a\n").startswith(
        "watchbridge.yaml:3 server.host: invalid YAML"
    )


def test_wrong_type_names_line_key_and_expectation() -> None:
    assert error_of("server:\n  port: eighty\n") == (
        "watchbridge.yaml:2 server.port: expected a whole number, got 'eighty'"
    )


def test_a_profile_written_twice_is_an_error_not_the_last_one() -> None:
    text = "profiles:\n  me: {users: {plex: [alice]}}\n  me: {users: {plex: [bob]}}\n"
    assert error_of(text) == "watchbridge.yaml:3 profiles.me: name given twice"


@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("zoë", "got 'zoë'"),  # ë is a letter: "letters only" alone did not say what is wrong
        ("my wife", "got 'my wife', e.g. my-wife"),
        ("_me", "got '_me'"),
    ],
)
def test_a_profile_name_outside_the_allowed_characters_says_which_it_may_use(
    name: str, told: str
) -> None:
    message = error_of(f"profiles:\n  '{name}': {{}}\n")
    assert message == (
        f"watchbridge.yaml:2 profiles.{name}: names may use the letters a-z and A-Z, digits, -"
        f" and _ only, starting with a letter or digit; {told}"
    )


def test_unknown_key_suggests_the_closest_one() -> None:
    assert error_of("storage:\n  pth: x.db\n") == (
        "watchbridge.yaml:2 storage.pth: unknown key; did you mean 'path'?"
    )


def test_unknown_key_without_a_close_match_lists_the_valid_ones() -> None:
    assert "expected one of host, port" in error_of("server:\n  zzz: 1\n")


def test_missing_required_key_is_named() -> None:
    message = error_of("services:\n  trakt:\n    client_secret: s\n")  # no client_id
    assert message.startswith("watchbridge.yaml:3 services.trakt.client_id: required: ")


def test_unset_environment_variable_is_named() -> None:
    message = error_of("server:\n  webhook_secret: ${HOOK_SECRET}\n")
    assert message.startswith(
        "watchbridge.yaml:2 server.webhook_secret: environment variable HOOK_SECRET is not set"
    )


def test_a_variable_written_the_shells_way_is_named_with_the_form_to_write() -> None:
    message = error_of(
        "services:\n  plex: {url: http://nas:32400, token: $PLEX_TOKEN}\n", {"PLEX_TOKEN": "t"}
    )
    assert message == (
        "watchbridge.yaml:2 services.plex.token: write ${PLEX_TOKEN} to use the variable"
        " PLEX_TOKEN (a literal $ is written $$)"
    )


def test_a_variable_reference_left_open_is_an_error() -> None:
    message = error_of(
        "services:\n  trakt:\n    client_id: ${TRAKT_CLIENT_ID\n", {"TRAKT_CLIENT_ID": "c"}
    )
    assert "watchbridge.yaml:3 services.trakt.client_id: a ${ that is not ${NAME}" in message


def test_a_variable_inside_a_default_is_an_error() -> None:
    text = "services:\n  plex:\n    url: http://nas:32400\n    token: ${A:-${B}}\n"
    assert "services.plex.token: a ${...} inside a default is not read" in error_of(
        text, {"B": "t"}
    )


def test_every_problem_is_reported_at_once() -> None:
    message = error_of("server:\n  port: x\nlogging:\n  level: loud\n")
    assert message.splitlines() == [
        "watchbridge.yaml:2 server.port: expected a whole number, got 'x'",
        "watchbridge.yaml:4 logging.level: expected one of debug, info, warning, error, got 'loud'",
    ]


def test_a_mapping_where_a_value_belongs_is_an_error() -> None:
    assert error_of("server:\n  port:\n    a: 1\n") == (
        "watchbridge.yaml:3 server.port: expected a whole number, got a mapping"
    )


def test_a_wrong_secret_value_is_never_echoed() -> None:
    message = error_of("services:\n  trakt:\n    client_id: x\n    client_secret: [hunter2]\n")
    assert "hunter2" not in message


def test_link_to_an_unconfigured_service_is_an_error() -> None:
    message = error_of(
        "services:\n  serializd: {}\nlinks:\n  a:\n    services: [trakt, serializd]\n"
    )
    assert message == (
        "watchbridge.yaml:5 links.a.services: services.trakt is not configured: configure it,"
        " or remove this link"
    )


def test_a_link_with_a_service_that_only_sends_webhooks_is_an_error() -> None:
    message = error_of(
        "services:\n  jellyfin: {url: 'http://jf:8096', api_key: k}\n  serializd: {}\n"
        "links:\n  a:\n    services: [jellyfin, serializd]\n"
    )
    assert message.startswith("watchbridge.yaml:6 links.a.services: jellyfin cannot be linked yet")
    assert "by webhook" in message


def test_every_linkable_service_has_a_reader() -> None:
    assert set(LINK_SERVICES) == set(READERS)


def test_link_prefer_must_name_one_of_its_services() -> None:
    message = error_of(
        "services:\n  serializd: {}\n  anilist: {}\n"
        "links:\n  a:\n    services: [anilist, serializd]\n    prefer: trakt\n"
    )
    assert "links.a.prefer: expected newest-wins, anilist or serializd, got 'trakt'" in message


def test_only_one_profile_can_be_default() -> None:
    message = error_of("profiles:\n  a:\n    default: true\n  b:\n    default: true\n")
    assert message == (
        "watchbridge.yaml:5 profiles.b.default: only one profile can be the default, a already is"
    )


def test_webhook_port_must_differ_from_port() -> None:
    assert "server.webhook_port: must differ from server.port" in error_of(
        "server:\n  port: 9000\n  webhook_port: 9000\n"
    )


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("0.0.0.0:8765", "without a port: the port goes in server.port"),
        ("http://0.0.0.0", "without http:// or a path"),
        ("'[::]'", "without [ ]"),
        ("my server", ""),
    ],
)
def test_a_listen_address_with_a_port_or_scheme_is_refused_by_its_key(host: str, hint: str) -> None:
    # `serve` would fail to bind it, naming server.port: check-config said "config OK".
    message = error_of(f"server:\n  port: 8765\n  host: {host}\n")
    assert message.startswith(
        "watchbridge.yaml:3 server.host: expected an address of this machine to listen on,"
    )
    assert hint in message and repr(host.strip("'")) in message


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "127.0.0.1", "localhost", "nas.lan", ""])
def test_a_listen_address_or_host_name_is_accepted(host: str) -> None:
    config = parse_config(f"server:\n  host: '{host}'\n", FILE, {})
    assert config.server.host == host


def test_a_busy_timeout_of_nothing_is_refused() -> None:
    assert error_of("storage:\n  busy_timeout: 0\n") == (
        "watchbridge.yaml:2 storage.busy_timeout: expected at least 0.1s (the default is 5s): a "
        "webhook that cannot wait for a moment's lock is refused, and media servers do not send "
        "it again"
    )


def test_profile_account_needs_its_service() -> None:
    message = error_of(
        "profiles:\n  me:\n    accounts:\n      serializd: {email: a@b.c, password: pw}\n"
    )
    assert "profiles.me.accounts.serializd: services.serializd must be configured too" in message


def test_a_trakt_account_without_trakt_says_it_can_be_removed() -> None:
    # A household without Trakt that uncommented the example profile's `trakt: {}` line is
    # told it may take that line out, not only that Trakt must be configured.
    message = error_of(
        "services:\n  serializd: {}\nprofiles:\n  me:\n    accounts:\n      trakt: {}\n"
        "      serializd: {email: a@b.c, password: pw}\n"
    )
    assert message == (
        "watchbridge.yaml:6 profiles.me.accounts.trakt: services.trakt must be configured too"
        " (or, if this profile does not use Trakt, remove accounts.trakt)"
    )


def test_a_section_written_without_a_value_is_configured_with_its_defaults() -> None:
    config = parse_config(
        "services:\n  trakt:\n    client_id: cid\n  serializd:\n"
        "profiles:\n  me:\n    accounts:\n      trakt:\n"
        "      serializd: {email: a@b.c, password: pw}\n",
        FILE,
        {},
    )
    assert config.services.serializd is not None
    assert config.profiles["me"].accounts.trakt is not None


def test_a_section_set_to_null_is_left_out() -> None:
    config = parse_config("services:\n  serializd: null\n  anilist: ~\n", FILE, {})
    assert config.services.serializd is None
    assert config.services.anilist is None


def test_a_section_without_a_value_names_its_missing_keys() -> None:
    message = error_of("services:\n  trakt:\nprofiles:\n  me:\n    accounts: {trakt: {}}\n")
    assert "services.trakt.client_id: required" in message
    assert "must be configured too" not in message


def test_a_required_key_left_empty_by_its_variable_names_the_variable() -> None:
    message = error_of(
        "services:\n  trakt:\n    client_id: ${TRAKT_CLIENT_ID}\n", {"TRAKT_CLIENT_ID": ""}
    )
    # What to write there is said too: a household without Trakt that left the variable
    # unset (an Unraid template's field left blank) learns to take services.trakt out.
    assert message == (
        "watchbridge.yaml:3 services.trakt.client_id: required, but environment variable"
        " TRAKT_CLIENT_ID is empty: your Trakt app's client id (the app of a VIP account);"
        " without Trakt, take services.trakt out"
    )


def test_a_required_secret_written_empty_is_an_error() -> None:
    message = error_of(
        "services:\n  serializd: {}\nprofiles:\n  me:\n    accounts:\n"
        "      serializd: {email: a@b.c, password: ''}\n"
    )
    assert "profiles.me.accounts.serializd.password: required, got an empty value" in message


def test_an_optional_key_may_be_left_empty_by_its_variable() -> None:
    config = parse_config("server:\n  webhook_secret: ${WATCHBRIDGE_WEBHOOK_SECRET:-}\n", FILE, {})
    assert not config.server.webhook_secret  # empty: one is generated


@pytest.mark.parametrize("secret", ["Ab3/kq+Zr9x=", "pa55#word!", "what?now", "50%off", "a b"])
def test_a_webhook_secret_may_hold_any_character(secret: str) -> None:
    # A password manager's symbols: the URLs `webhook-urls` prints quote them.
    config = parse_config(f"server:\n  webhook_secret: '{secret}'\n", FILE, {})
    assert config.server.webhook_secret == Secret(secret)


def test_one_media_account_in_two_profiles_is_refused() -> None:
    message = error_of(
        "profiles:\n  alice:\n    users: {plex: ['1']}\n  bob:\n    users: {plex: ['1']}\n"
    )
    assert message == (
        "watchbridge.yaml:5 profiles.bob.users.plex: plex account '1' is already mapped to"
        " profile alice (each account's plays go to one profile)"
    )


def test_one_plex_account_in_two_profiles_through_tautulli_is_refused() -> None:
    # Tautulli reports Plex's accounts (plex.tv id, username): Plex's webhook would send the
    # plays to bob and Tautulli's the same person's to alice.
    for bobs, alices in (("5551234", "5551234"), ("Bob", "bob"), ("abc123:5551234", "5551234")):
        message = error_of(
            f"profiles:\n  bob:\n    users: {{plex: ['{bobs}']}}\n"
            f"  alice:\n    users: {{tautulli: ['{alices}']}}\n"
        )
        assert message == (
            f"watchbridge.yaml:5 profiles.alice.users.tautulli: tautulli account '{alices}' is"
            f" plex account '{bobs}' of profile bob (Tautulli reports Plex's accounts, and each"
            " account's plays go to one profile; two people of two servers who share a name:"
            " write each as SERVER:ACCOUNT)"
        )


def test_the_same_name_on_two_plex_servers_may_be_two_people_through_tautulli() -> None:
    config = parse_config(
        "profiles:\n  bob:\n    users: {plex: ['abc123:kid']}\n"
        "  alice:\n    users: {tautulli: ['def456:kid']}\n",
        FILE,
        {},
    )
    assert config.profiles["alice"].users.tautulli == ["def456:kid"]


def test_accounts_written_with_commas_instead_of_a_list_are_refused() -> None:
    message = error_of("profiles:\n  me:\n    users:\n      jellyfin: alice, bob\n")
    assert message == (
        "watchbridge.yaml:4 profiles.me.users.jellyfin: one name with commas; for several,"
        " write a list: [alice, bob]"
    )


@pytest.mark.parametrize(
    ("users", "environ"),
    [("\n        - alice, bob", {}), (" ${JELLYFIN_USERS}", {"JELLYFIN_USERS": "alice, bob"})],
)
def test_accounts_written_with_commas_inside_a_list_or_a_variable_are_refused(
    users: str, environ: dict[str, str]
) -> None:
    message = error_of(f"profiles:\n  me:\n    users:\n      jellyfin:{users}\n", environ)
    assert "profiles.me.users.jellyfin: one name with commas" in message


@pytest.mark.parametrize(
    ("body", "key", "noun", "listed"),
    [
        (
            "links:\n  l:\n    services: [trakt, serializd]\n    kinds: history, ratings\n",
            "links.l.kinds",
            "value",
            "[history, ratings]",
        ),
        (
            "alerts:\n  kinds: credentials, dead_letter\n",
            "alerts.kinds",
            "value",
            "[credentials, dead_letter]",
        ),
        (
            "server:\n  trusted_proxies: 172.30.32.2, 10.0.0.0/8\n",
            "server.trusted_proxies",
            "value",
            "[172.30.32.2, 10.0.0.0/8]",
        ),
        (
            "services:\n  plex:\n    url: http://plex:32400\n    libraries: Movies, TV Shows\n",
            "services.plex.libraries",
            "name",
            "[Movies, TV Shows]",
        ),
    ],
)
def test_a_list_written_with_commas_instead_of_brackets_is_named_as_such(
    body: str, key: str, noun: str, listed: str
) -> None:
    # Not "expected one of history, ratings, ... got 'history, ratings'", nor (libraries) one
    # library named "Movies, TV Shows" that only the first sync finds missing.
    message = error_of(body)
    assert f" {key}: one {noun} with commas; for several, write a list: {listed}" in message


def test_a_library_name_with_a_comma_may_be_written_in_a_list() -> None:
    text = "services:\n  plex:\n    url: http://plex:32400\n    libraries: ['Movies, Kids']\n"
    config = parse_config(text, FILE, {})
    assert config.services.plex is not None
    assert config.services.plex.libraries == ["Movies, Kids"]


def test_an_account_is_compared_as_webhooks_match_it() -> None:
    message = error_of(
        "profiles:\n  alice:\n    users: {jellyfin: [Alice]}\n"
        "  bob:\n    users: {jellyfin: [alice]}\n"
    )
    assert "profiles.bob.users.jellyfin: jellyfin account 'alice' is already mapped" in message


def test_a_profile_named_by_a_link_needs_an_account_on_both_services() -> None:
    message = error_of(
        "services:\n  trakt: {client_id: c}\n  serializd: {}\n"
        "profiles:\n  me:\n    accounts: {trakt: {}}\n"
        "links:\n  a:\n    services: [trakt, serializd]\n    profiles: [me]\n"
    )
    assert "links.a.profiles: profile me has no accounts.serializd" in message


def test_a_plex_link_needs_the_server_url() -> None:
    message = error_of(
        "services:\n  trakt: {client_id: c}\n  plex: {token: t}\n"
        "links:\n  a:\n    services: [plex, trakt]\n"
    )
    assert "links.a.services: a plex link needs services.plex.url" in message


def test_empty_kinds_still_load_as_the_last_release_ran_them() -> None:
    # Start warnings say what they do (app.start_warnings): an upgrade must keep starting.
    config = parse_config(
        "alerts:\n  urls: ['json://127.0.0.1:1/x']\n  kinds: []\n"
        "services:\n  trakt: {client_id: c}\n  plex: {token: t, url: 'http://nas:32400'}\n"
        "profiles: {me: {accounts: {plex: {}, trakt: {}}}}\n"
        "links:\n  a:\n    services: [plex, trakt]\n    kinds: []\n",
        FILE,
        {},
    )
    assert config.alerts.kinds == [] and config.links["a"].kinds == []


def test_full_config_builds_typed_objects() -> None:
    config = parse_config(
        """
server: {port: 9000, webhook_port: 9001, webhook_secret: "${SECRET}"}
alerts: {urls: ["json://127.0.0.1:1/x"], kinds: [dead_letter], throttle: 15m}
services:
  trakt: {client_id: id, client_secret: cs, api_url: "http://127.0.0.1:5000"}
  serializd: {}
profiles:
  me:
    default: true
    users: {plex: [1, alice]}
    accounts:
      trakt: {}
      serializd: {email: me@example.com, password: "${SZ_PW:-pw}"}
links:
  ts:
    services: [trakt, serializd]
    direction: one-way
    interval: 1h
    prefer: serializd
""",
        FILE,
        {"SECRET": "s3cret"},
    )
    assert config.server.webhook_secret == Secret("s3cret")
    assert config.alerts.throttle == Duration(900)
    assert config.services.trakt is not None
    assert config.services.trakt.api_url == "http://127.0.0.1:5000"
    assert config.services.trakt.auth_url == "https://auth.trakt.tv"
    assert config.profiles["me"].users.plex == ["1", "alice"]
    serializd = config.profiles["me"].accounts.serializd
    assert serializd is not None and serializd.password.reveal() == "pw"
    assert config.links["ts"].interval == 3600
    assert sorted(config.secrets()) == ["cs", "json://127.0.0.1:1/x", "pw", "s3cret"]


def test_secrets_hide_in_repr_and_str() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret}"
    assert secret.reveal() == "hunter2"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert Duration.parse(text) == seconds


def test_interpolation_default_applies_when_unset_or_empty() -> None:
    assert interpolate("${A:-x}/${B:-y}", {"B": ""}) == "x/y"


def test_interpolation_dollar_dollar_is_a_literal_dollar() -> None:
    assert interpolate("pa$$word", {}) == "pa$word"


def test_find_config_prefers_explicit_then_environment(tmp_path: Path) -> None:
    assert find_config("a.yaml", {"WATCHBRIDGE_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert find_config(None, {"WATCHBRIDGE_CONFIG": "b.yaml"}) == Path("b.yaml")


@pytest.mark.skipif(
    Path("/config/watchbridge.yaml").is_file(), reason="this machine has /config/watchbridge.yaml"
)
def test_find_config_without_flag_or_environment_takes_config_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "watchbridge.yaml").write_text("server: {}\n")
    monkeypatch.chdir(tmp_path)
    assert find_config(None, {"WATCHBRIDGE_CONFIG": ""}) == Path("config/watchbridge.yaml")


def test_find_config_without_any_file_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        find_config(None, {})
    assert refused.value.message.startswith(
        "no config file found (looked in $WATCHBRIDGE_CONFIG, /config/watchbridge.yaml,"
        " config/watchbridge.yaml)"
    )


def test_an_api_token_left_empty_by_its_variable_is_an_error_not_an_open_api() -> None:
    message = error_of(
        "server:\n  api_token: ${WATCHBRIDGE_API_TOKEN}\n", {"WATCHBRIDGE_API_TOKEN": ""}
    )
    assert message == (
        "watchbridge.yaml:2 server.api_token: empty, as environment variable"
        " WATCHBRIDGE_API_TOKEN is: set it, or remove the line to leave the API and UI open"
    )


def test_a_plex_token_written_empty_does_not_make_the_profile_the_owner() -> None:
    message = error_of(
        "services:\n  plex: {url: 'http://plex.lan:32400'}\n"
        "profiles:\n  bob:\n    accounts:\n      plex: {token: ''}\n"
    )
    assert "profiles.bob.accounts.plex.token: empty: set it, or write `plex: {}`" in message


@pytest.mark.parametrize(
    ("service", "url"),
    [
        ("plex", "http://192.168.1.10:32400/web/index.html#!/"),
        ("jellyfin", "http://192.168.1.10:8096/web/#/home.html"),
        ("emby", "http://192.168.1.10:8096/web/index.html#!/home"),
    ],
)
def test_a_media_server_url_copied_from_the_browser_is_refused(service: str, url: str) -> None:
    # Requests under /web answer 404, which would read as "no such item", silently.
    message = error_of(f"services:\n  {service}:\n    url: '{url}'\n")
    assert f"services.{service}.url: that is the address of the server's web app" in message
    assert "abc" not in message


def test_a_plex_url_with_its_token_says_where_the_token_goes() -> None:
    message = error_of(
        "services:\n  plex:\n    url: 'http://10.0.0.2:32400/library/metadata/1?X-Plex-Token=abc'\n"
    )
    assert "services.plex.url: holds a token (X-Plex-Token): put the token in " in message
    assert "services.plex.token" in message and "http://192.168.1.10:32400" in message
    assert "abc" not in message


@pytest.mark.parametrize(
    "url", ["http://192.168.1.10:8096:8096", "http://192.168.1.10:8O96", "http://nas:99999"]
)
def test_a_url_with_a_malformed_port_names_the_key(url: str) -> None:
    # The HTTP client refuses it when the delivery starts: that would stop every delivery.
    message = error_of(f"services:\n  jellyfin:\n    url: '{url}'\n")
    assert "services.jellyfin.url: expected an http(s) URL such as http://192.168.1.10:8096" in (
        message
    )


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("server:\n  webhook_secret: !Xk9vQ2mLp7\n", "server.webhook_secret"),
        ("services:\n  plex:\n    token: !secret plex_token\n", "services.plex.token"),
    ],
)
def test_a_value_starting_with_a_bang_must_be_quoted(body: str, key: str) -> None:
    # Unquoted, YAML reads it as a tag: the value would be empty, or the tag's argument.
    message = error_of(body)
    assert f"{key}: a value starting with ! must be quoted" in message
    assert "Xk9vQ2mLp7" not in message and "plex_token" not in message


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("services:\n  trakt:\n    client_id: ${ID}\n", "services.trakt.client_id"),
        ("services:\n  plex:\n    token: '${TOKEN}'\n", "services.plex.token"),
    ],
)
def test_a_pasted_key_with_a_stray_space_is_named(body: str, key: str) -> None:
    # In a request header it would fail every request as if the service were unreachable.
    with pytest.raises(ConfigError) as caught:
        parse_config(body, FILE, {"ID": "abc123 ", "TOKEN": "tok\n"})
    assert f"{key}: starts or ends with a space or line break (pasted?): remove it" in str(
        caught.value
    )
    assert "tok" not in str(caught.value).replace("token", "")


def test_a_space_that_came_with_a_variable_is_said_to_be_where_it_is_set() -> None:
    # The file shows `${ID}` and no space: the space is in the .env line or the container's
    # variable. A space written around the variable in the file is the file's to remove.
    from_variable = error_of("services:\n  trakt:\n    client_id: x${ID}\n", {"ID": "abc "})
    assert from_variable.endswith("(pasted?): remove it where ${ID} is set")
    in_the_file = error_of("services:\n  trakt:\n    client_id: '${ID} '\n", {"ID": "abc"})
    assert in_the_file.endswith("(pasted?): remove it")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("services:\n  trakt:\n    client_id: abc\u200b123\n", "services.trakt.client_id"),
        ("services:\n  plex:\n    token: 'tók'\n", "services.plex.token"),
    ],
)
def test_a_pasted_key_with_an_invisible_or_foreign_character_is_named(body: str, key: str) -> None:
    # httpx cannot put it in a header: every request would fail with an encoding error.
    message = error_of(body)
    assert f"{key}: holds the invisible or non-ASCII character U+" in message
    assert "type or copy it again" in message


def test_a_password_may_end_with_a_space() -> None:
    config = parse_config(
        "services:\n  serializd: {}\nprofiles:\n  me:\n    accounts:\n      serializd:\n"
        "        email: me@example.com\n        password: 'correct horse '\n",
        FILE,
        {},
    )
    account = config.profiles["me"].accounts.serializd
    assert account is not None and account.password.reveal() == "correct horse "


def test_a_yaml_merge_key_is_named_as_such_not_as_an_unknown_key() -> None:
    message = error_of(
        "x-link: &defaults {interval: 1h}\n"
        "links:\n  tp:\n    <<: *defaults\n    services: [trakt, plex]\n"
    )
    assert "links.tp: YAML merge keys (<<) are not supported: write the keys out" in message


def test_a_media_server_behind_a_path_prefix_is_accepted() -> None:
    config = parse_config("services:\n  jellyfin: {url: 'http://nas/jellyfin'}\n", FILE, {})
    assert config.services.jellyfin is not None


def test_an_unclosed_ipv6_bracket_names_the_key() -> None:
    message = error_of("services:\n  jellyfin:\n    url: http://[fd00::10:8096\n")
    assert message == (
        "watchbridge.yaml:3 services.jellyfin.url: expected an http(s) URL such as"
        " http://192.168.1.10:8096"
    )


def test_an_ipv4_proxy_is_trusted_when_the_server_listens_on_both_families() -> None:
    assert is_trusted_proxy("::ffff:172.30.32.2", ["172.30.32.2"])
    assert is_trusted_proxy("::ffff:172.18.0.5", ["172.18.0.0/16"])
    assert not is_trusted_proxy("::ffff:10.0.0.1", ["172.18.0.0/16"])
    assert is_trusted_proxy("::ffff:172.18.0.3", ["::ffff:172.18.0.3"])  # as the server sees it


def test_trusted_proxies_take_addresses_and_networks_only() -> None:
    config = parse_config("server:\n  trusted_proxies: [172.30.32.2, 172.18.0.0/16]\n", FILE, {})
    assert config.server.trusted_proxies == ["172.30.32.2", "172.18.0.0/16"]
    message = error_of("server:\n  trusted_proxies: [homeassistant]\n")
    assert "server.trusted_proxies: expected IP addresses or networks" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("retry_after: 0", "delivery.retry_after: expected at least 1s"),
        ("max_backoff: 10s", "delivery.max_backoff: expected at least 1m"),
        ("max_age: 7", "delivery.max_age: expected at least 1h"),
    ],
)
def test_delivery_waits_that_would_hammer_a_service_or_give_up_at_once_are_refused(
    line: str, key: str
) -> None:
    assert key in error_of(f"delivery:\n  {line}\n")


def test_a_link_that_no_profile_can_run_is_refused() -> None:
    message = error_of(
        "services:\n  trakt: {client_id: c}\n  serializd: {}\n"
        "profiles:\n  me:\n    accounts: {trakt: {}}\n"
        "links:\n  a:\n    services: [trakt, serializd]\n"
    )
    assert "links.a.services: no profile has both accounts.trakt and accounts.serializd" in (
        message
    )


@pytest.mark.parametrize(
    "text", ["server:\n\tport: 8765\n", "server:\n  port: 8765\t# API\n", "server:\n  port:\t1\n"]
)
def test_a_tab_is_named_with_its_fix(text: str) -> None:
    assert error_of(text) == (
        "watchbridge.yaml:2 server.port: invalid YAML: a tab character: indent and separate"
        " with spaces (YAML does not take tabs)"
    )


def test_a_password_read_as_a_yaml_alias_is_not_printed() -> None:
    message = error_of("profiles:\n  me:\n    password: *Hunter2SecretPw\n")
    assert message == (
        "watchbridge.yaml:3 profiles.me.password: invalid YAML: a value starting with * or &"
        " must be quoted"
        ' (e.g. password: "*secret")'
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("services:\n  trakt: {client_id: ${TRAKT_CLIENT_ID}}\n", "services.trakt"),
        ("alerts:\n  urls: [${DISCORD_URL}]\n", "alerts.urls"),
        ("alerts:\n  urls: [ntfy://x, ${DISCORD_URL:-}]\n", "alerts.urls"),
    ],
)
def test_a_variable_inside_brackets_or_braces_is_told_to_be_quoted(text: str, key: str) -> None:
    # In [...] and {...} YAML reads `${` as a `$` and a new mapping: the variable needs quotes.
    environ = {"TRAKT_CLIENT_ID": "c", "DISCORD_URL": "ntfy://y"}
    assert error_of(text, environ) == (
        f"watchbridge.yaml:2 {key}: invalid YAML:"
        " a ${NAME} inside [...] or {...} must be quoted"
        ' (e.g. urls: ["${DISCORD_URL}"])'
    )


def test_a_control_character_is_named_on_its_line_without_the_value() -> None:
    assert error_of("server:\n  port: 1\nservices:\n  x: abc\x01def\n") == (
        "watchbridge.yaml:4 services.x: invalid YAML: a control character (#x0001) YAML does"
        " not allow, perhaps pasted with a password or token: delete it"
    )


def test_yaml_punctuation_stays_in_the_message() -> None:
    assert error_of("a: [b\n") == (
        "watchbridge.yaml:1 a: invalid YAML: expected ',' or ']', but got '<stream end>'"
    )


SERIALIZD_CONFIG = """
services: {serializd: {}}
profiles:
  me:
    accounts: {serializd: {email: me@example.com, password: "${SERIALIZD_PASSWORD}"}}
"""


def test_the_delivery_fingerprint_changes_with_a_password_from_the_environment() -> None:
    def fingerprint(password: str) -> str:
        config = parse_config(SERIALIZD_CONFIG, FILE, {"SERIALIZD_PASSWORD": password})
        return config.delivery_fingerprint()

    assert fingerprint("old") == fingerprint("old")
    assert fingerprint("old") != fingerprint("new")
    assert "old" not in fingerprint("old")


def test_the_delivery_fingerprint_is_the_files_not_the_codes_settings() -> None:
    # A setting the file cannot write (a wait tests shorten) is no config change at a start:
    # an upgrade that adds one must not make every held delivery due at once.
    text = "services: {trakt: {client_id: abc}}\nprofiles: {me: {accounts: {trakt: {}}}}\n"
    config = parse_config(text, FILE, {})
    assert config.services.trakt is not None
    shortened = dataclasses.replace(
        config,
        services=dataclasses.replace(
            config.services,
            trakt=dataclasses.replace(config.services.trakt, refresh_race_seconds=0.01),
        ),
    )
    assert shortened.delivery_fingerprint() == config.delivery_fingerprint()


def test_the_delivery_fingerprint_ignores_what_deliveries_do_not_depend_on() -> None:
    environ = {"SERIALIZD_PASSWORD": "secret"}
    plain = parse_config(SERIALIZD_CONFIG, FILE, environ)
    logged = parse_config(SERIALIZD_CONFIG + "logging: {level: debug}\n", FILE, environ)
    assert plain.delivery_fingerprint() == logged.delivery_fingerprint()


# --------------------------------------------------------------------------- Serializd token

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJleHBpcnlfdGltZSI6IjIwMjctMDEtMDFUMDA6MDA6MDBaIn0.c2ln"
SERIALIZD = "services:\n  serializd: {}\nprofiles:\n  me:\n    accounts:\n      serializd:\n"


@pytest.mark.parametrize(
    "pasted",
    [
        JWT,
        f"tvproject_credentials={JWT}",
        f"Bearer {JWT}",
        f"Authorization: Bearer {JWT}",
        f"Cookie: _ga=GA1.2.3; tvproject_credentials={JWT}; theme=dark",
    ],
)
def test_a_serializd_token_is_taken_out_of_the_cookie_or_header_pasted(pasted: str) -> None:
    config = parse_config(
        SERIALIZD + "        token: ${SERIALIZD_TOKEN}\n", FILE, {"SERIALIZD_TOKEN": pasted}
    )
    account = config.profiles["me"].accounts.serializd
    assert account is not None and account.token is not None
    assert account.token.reveal() == JWT
    assert (account.email, account.password, account.pasted) == (None, None, True)
    assert config.secrets() == [JWT]  # what the logs' redaction hides


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (
            f"        token: {JWT}\n        email: a@b.c\n        password: pw\n",
            "watchbridge.yaml:7 profiles.me.accounts.serializd.token: give either token or "
            "email and password, not both (remove token, or email)",
        ),
        (
            "        {}\n",
            "watchbridge.yaml:6 profiles.me.accounts.serializd: expected token (pasted from the"
            " website: the value of its cookie tvproject_credentials), or email and password",
        ),
        (
            "        email: a@b.c\n",
            "watchbridge.yaml:7 profiles.me.accounts.serializd.password: required with email"
            " (or use token instead)",
        ),
        (
            "        password: pw\n",
            "watchbridge.yaml:7 profiles.me.accounts.serializd.email: required with password"
            " (or use token instead)",
        ),
        (
            "        token: 'theme=dark; _ga=GA1.2.3'\n",
            "watchbridge.yaml:7 profiles.me.accounts.serializd.token: expected the token"
            " Serializd's website signs in with: the value of its cookie tvproject_credentials"
            " (it starts eyJ and has two dots), or the cookie whole (tvproject_credentials=eyJ...)",
        ),
    ],
)
def test_a_serializd_account_signs_in_one_way_or_the_file_says_how(
    written: str, expected: str
) -> None:
    text = SERIALIZD + written
    if written.strip() == "{}":
        text = SERIALIZD.removesuffix("\n") + " {}\n"
    assert error_of(text) == expected


def test_a_serializd_token_left_empty_by_its_variable_names_the_variable() -> None:
    message = error_of(SERIALIZD + "        token: ${SERIALIZD_TOKEN}\n", {"SERIALIZD_TOKEN": ""})
    assert message == (
        "watchbridge.yaml:7 profiles.me.accounts.serializd.token: required, but environment"
        " variable SERIALIZD_TOKEN is empty"
    )


def test_a_serializd_token_that_is_no_token_is_not_shown_in_the_error() -> None:
    message = error_of(SERIALIZD + "        token: 'not-a-token-s3cr3t'\n")
    assert "not-a-token-s3cr3t" not in message
    assert "profiles.me.accounts.serializd.token: expected the token" in message


def test_a_serializd_token_of_another_format_than_a_jwt_is_taken() -> None:
    """The token is a JWT today; one Serializd gives in another format (opaque, as many
    services' tokens are) is Serializd's to judge at its check, not the config's to refuse."""
    opaque = "3f9a0c1e5b7d4a2f8e6c0b1d3a5f7e9c2b4d6f8a"
    config = parse_config(
        SERIALIZD + "        token: ${SERIALIZD_TOKEN}\n", FILE, {"SERIALIZD_TOKEN": opaque}
    )
    account = config.profiles["me"].accounts.serializd
    assert account is not None and account.token is not None
    assert account.token.reveal() == opaque


def test_a_wrong_value_from_an_environment_variable_names_the_variable() -> None:
    # The line shows `${WATCHBRIDGE_PORT:-8765}`; the value the error quotes is not written there.
    message = error_of("server:\n  port: ${WATCHBRIDGE_PORT:-8765}\n", {"WATCHBRIDGE_PORT": "abc"})
    assert (
        "watchbridge.yaml:2 server.port: expected a whole number, got 'abc' "
        "(from ${WATCHBRIDGE_PORT})" in message
    )


def test_a_binary_tagged_value_is_refused_not_taken_as_its_base64_text() -> None:
    message = error_of("server:\n  webhook_secret: !!binary aGVsbG8=\n")
    assert "watchbridge.yaml:2 server.webhook_secret: a !!binary value is not decoded" in message
    assert "aGVsbG8" not in message


@pytest.mark.parametrize(
    ("service", "url", "endpoint", "default"),
    [
        ("trakt", "https://trakt.tv/oauth/authorize", "/oauth/authorize", "https://auth.trakt.tv"),
        ("trakt", "https://api.trakt.tv/oauth/", "/oauth", "https://auth.trakt.tv"),
        (
            "anilist",
            "https://anilist.co/api/v2/oauth/authorize",
            "/authorize",
            "https://anilist.co/api/v2/oauth",
        ),
    ],
)
def test_an_auth_url_holding_the_sign_in_endpoint_is_refused(
    service: str, url: str, endpoint: str, default: str
) -> None:
    # The client adds the endpoint itself: every sign-in and refresh would answer 404.
    extra = "    client_secret: s\n" if service == "trakt" else ""
    message = error_of(f"services:\n  {service}:\n    client_id: c\n{extra}    auth_url: '{url}'\n")
    assert f"services.{service}.auth_url: ends in {endpoint}, which watchbridge adds itself" in (
        message
    )
    assert f"such as {default}" in message


def test_the_default_auth_urls_are_accepted() -> None:
    text = "services:\n  trakt: {client_id: c, client_secret: s}\n  anilist: {client_id: c}\n"
    config = parse_config(text, FILE, {})
    assert config.services.trakt is not None and config.services.anilist is not None


def test_uncommenting_the_example_config_for_an_emby_household_without_trakt_loads() -> None:
    # Emby (with its catch-up), Serializd and AniList, its users listed by the profile.
    lines = EXAMPLE.read_text(encoding="utf-8").split("\n")
    start = next(n for n, line in enumerate(lines) if line.startswith("#  emby:"))
    blocks = ("#  emby:", "#  serializd:", "#  anilist:", "#  me:")
    keep = False
    for n, line in enumerate(lines[start:], start):
        if line.startswith("#  ") and not line.startswith("#   "):
            keep = line.startswith(blocks)
        skipped = ("#      plex:", "#      jellyfin:", "#      trakt:", "#    # ")
        if keep and line.startswith("#") and not line.startswith(skipped):
            lines[n] = line[1:]
    environ = {"EMBY_API_KEY": "k", "SERIALIZD_TOKEN": JWT, "ANILIST_CLIENT_ID": "123"}
    config = parse_config("\n".join(lines), FILE, environ)
    emby = config.services.emby
    assert emby is not None and emby.catch_up and emby.api_key == Secret("k")
    assert list(config.profiles["me"].users.emby) == ["alice"]
    assert not config.profiles["me"].users.jellyfin
