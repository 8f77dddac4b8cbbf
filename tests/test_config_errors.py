"""Mistakes a user makes editing the YAML file by hand (nano on a NAS), each met through the
real commands, `watchbridge check-config` and `watchbridge serve`: exit code 2 and one line
naming the file, the line, the key and what is expected; never a traceback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import watchbridge
from watchbridge.config import load_config

FILE = "watchbridge.yaml"
STORAGE = "storage:\n  path: {db}\n"  # lines 1-2 of most files: the test's own database


@dataclass(frozen=True)
class Mistake:
    """A file as a user saved it, and the line its error must be."""

    name: str
    text: str  # `{db}` is the test's database path
    line: int
    key: str
    expected: str  # words of what is expected, in the line
    encoding: str = "utf-8"
    last: bool = False  # `expected` ends the line: nothing more is said after it

    def write(self, folder: Path) -> Path:
        path = folder / FILE
        text = self.text.replace("{db}", str(folder / "watchbridge.db"))
        path.write_bytes(text.encode(self.encoding))
        return path


MISTAKES = [
    Mistake(
        "a key that has a default left without a value",
        STORAGE + "server:\n  port:\n",
        4,
        "server.port",
        "no value: expected a whole number, or take the line out to keep the default",
    ),
    Mistake(
        "a tab for indentation",
        STORAGE + "server:\n\tport: 8765\n",
        4,
        "server.port",
        "invalid YAML: a tab character: indent and separate with spaces",
    ),
    Mistake(
        "no space after a colon, among other keys",
        STORAGE + "server:\n  host: 127.0.0.1\n  port:8765\n",
        5,  # PyYAML's own mark is the line after it
        "server.port",
        "invalid YAML: write a space after the key's colon (`port: 8765`, not `port:8765`)",
    ),
    Mistake(
        "no space after a colon, the only key of its section",
        STORAGE + "server:\n  port:8765\n",
        4,  # YAML reads `port:8765` as the section's value: text, not a key
        "server",
        "`port:8765` needs a space after the colon: `port: 8765`",
    ),
    Mistake(
        "no space after a colon, the only key of its section, a URL that may hold a token",
        STORAGE + "services:\n  plex:\n    url:http://nas:32400/?X-Plex-Token=abc\n",
        5,
        "services.plex",
        "`url:...` needs a space after the colon: `url: ...`",
    ),
    Mistake(
        "a value holding ': ' without quotes",
        STORAGE + "services:\n  plex:\n    url: http://nas:32400\n    token: ab: cd\n",
        6,
        "services.plex.token",
        "invalid YAML: a second `: ` on one line: quote a value that holds `: `",
    ),
    Mistake(
        "a key indented deeper than the one above it",
        STORAGE + "services:\n  trakt:\n    client_id: abc\n      client_secret: xyz\n",
        6,
        "services.trakt.client_id.client_secret",
        "line a key up with the keys of its section",
    ),
    Mistake(
        "a link's name lined up between its section's keys and the ones above it",
        STORAGE + "links:\n  plex-serializd:\n    services: [plex, serializd]\n"
        "   plex-anilist:\n    services: [plex, anilist]\n",
        6,
        "links.plex-serializd.plex-anilist",  # as the indentation places it: named below
        "invalid YAML: this line, indented 3 spaces, lines up with no key above it: line it up with"
        " `plex-serializd:` (line 4, 2 spaces) or `services:` (line 5, 4 spaces)",
        last=True,
    ),
    Mistake(
        "a profile's key indented one space short",
        STORAGE + "profiles:\n  me:\n    completion_threshold: 90\n   users:\n      plex: ['1']\n",
        6,
        "profiles.me.users",
        "invalid YAML: this line, indented 3 spaces, lines up with no key above it: line it up with"
        " `me:` (line 4, 2 spaces) or `completion_threshold:` (line 5, 4 spaces)",
        last=True,
    ),
    Mistake(
        "a list item lined up with no key above it",
        STORAGE + "profiles:\n  me:\n    users:\n      plex: ['1']\n     - alice\n",
        7,
        "profiles.me.users",
        "invalid YAML: this line, indented 5 spaces, lines up with no key above it: line it up with"
        " `users:` (line 5, 4 spaces) or `plex:` (line 6, 6 spaces)",
        last=True,
    ),
    Mistake(
        "a quote never closed",
        STORAGE + 'services:\n  trakt:\n    client_id: "abc\nserver:\n  port: 8765\n',
        5,  # PyYAML's own mark is the end of the file
        "services.trakt.client_id",
        "invalid YAML: a quote opened and never closed",
    ),
    Mistake(
        "a port in quotes is still a port: a misspelt key next to it",
        STORAGE + 'server:\n  port: "8765"\n  prot: 8766\n',
        5,
        "server.prot",
        "unknown key; did you mean 'port'?",
    ),
    Mistake(
        "yes/no where a word is wanted",
        STORAGE + "  durability: yes\n",
        3,
        "storage.durability",
        "expected one of full, normal, got 'yes'",
    ),
    Mistake(
        "on/off where a number is wanted",
        STORAGE + "server:\n  port: on\n",
        4,
        "server.port",
        "expected a whole number, got 'on'",
    ),
    Mistake(
        "a number where true/false is wanted",
        STORAGE + "alerts:\n  recovery: 1\n",
        4,
        "alerts.recovery",
        "expected true or false, got '1'",
    ),
    Mistake(
        "a duration of two units",
        STORAGE + "delivery:\n  late_after: 1h30m\n",
        4,
        "delivery.late_after",
        "expected a duration such as 90s, 15m, 2h or 1d, got '1h30m'",
    ),
    Mistake(
        "a list written as one value with commas",
        STORAGE + "alerts:\n  kinds: credentials, dead_letter\n",
        4,
        "alerts.kinds",
        "for several, write a list: [credentials, dead_letter]",
    ),
    Mistake(
        "a list written as one value with spaces",
        STORAGE + "alerts:\n  kinds: credentials dead_letter\n",
        4,
        "alerts.kinds[0]",
        "expected one of all, credentials,",
    ),
    Mistake(
        "a mapping where a list is wanted",
        STORAGE + "alerts:\n  kinds: {credentials: true}\n",
        4,
        "alerts.kinds",
        "expected a list",
    ),
    Mistake(
        "a list where text is wanted",
        STORAGE + "services:\n  trakt:\n    client_id: [abc]\n",
        5,
        "services.trakt.client_id",
        "expected text, got a list",
    ),
    Mistake(
        "a key of services.trakt indented as one of services",
        STORAGE + "services:\n  trakt:\n  client_id: abc\n",
        5,
        "services.client_id",
        "not a key of services but of services.trakt: indent it under `trakt:`",
    ),
    Mistake(
        "a user list indented as a key of the profile",
        STORAGE + "profiles:\n  alice:\n    users:\n    plex: [1]\n",
        6,
        "profiles.alice.plex",
        "not a key of profiles.alice but of profiles.alice.users: indent it under `users:`",
    ),
    Mistake(
        "a key of a profile that lost its indentation",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  trakt: true\n",
        7,
        "profiles.trakt",
        "looks like a key of profile alice (line 4) that lost its indentation: indent it under"
        " `alice:` then `accounts:`",
    ),
    Mistake(
        "a misspelt key of a profile that lost its indentation",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  completion_treshold: 80\n",
        7,
        "profiles.completion_treshold",
        "looks like a key of profile alice (line 4) that lost its indentation"
        " (`completion_threshold`?): indent it under `alice:`",
    ),
    Mistake(
        "a key of a profile with no profile above it",
        STORAGE + "profiles:\n  trakt: true\n  alice:\n    users:\n      plex: [1]\n",
        4,
        "profiles.trakt",
        "looks like a key of a profile, with no profile above it: indent it under a profile's"
        " name then `accounts:`; there `trakt` takes a mapping of keys (`trakt: {}` for its"
        " defaults), not one value",
    ),
    Mistake(
        "a key of a profile that lost its indentation, with no value",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  trakt:\n",
        7,
        "profiles.trakt",
        "looks like a key of profile alice (line 4) that lost its indentation: indent it under"
        " `alice:` then `accounts:`",
    ),
    Mistake(
        "a user list of a profile that lost its indentation",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  plex: [2]\n",
        7,
        "profiles.plex",
        "looks like a key of profile alice (line 4) that lost its indentation: indent it under"
        " `alice:` then `users:`",
        last=True,  # not `users:` or `accounts:`: an account is a mapping
    ),
    Mistake(
        "a list for a profile's account that lost its indentation",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  trakt: [2]\n",
        7,
        "profiles.trakt",
        "indent it under `alice:` then `accounts:`; there `trakt` takes a mapping of keys"
        " (`trakt: {}` for its defaults), not a list",
    ),
    Mistake(
        "a profile's accounts that lost their indentation, with keys under them",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  accounts:\n    trakt: {}\n",
        7,
        "profiles.accounts",
        "looks like a key of profile alice (line 4) that lost its indentation: indent it under"
        " `alice:`",
        last=True,
    ),
    Mistake(
        "a profile's account that lost its indentation, with keys under it",
        STORAGE + "profiles:\n  alice:\n    users:\n      plex: [1]\n  trakt:\n"
        "    refresh_token: abc\n",
        7,
        "profiles.trakt",
        "looks like a key of profile alice (line 4) that lost its indentation: indent it under"
        " `alice:` then `accounts:`",
        last=True,
    ),
    Mistake(
        "a key of a link with no link above it",
        STORAGE + "links:\n  kinds: [history]\n",
        4,
        "links.kinds",
        "looks like a key of a link, with no link above it: indent it under a link's name",
    ),
    Mistake(
        "a key of server written at the top",
        STORAGE + "port: 8765\n",
        3,
        "port",
        "not a top-level key but of server: indent it under `server:`",
    ),
    Mistake(
        "a variable that is not set",
        STORAGE + "services:\n  trakt:\n    client_id: ${WATCHBRIDGE_TEST_UNSET}\n",
        5,
        "services.trakt.client_id",
        "environment variable WATCHBRIDGE_TEST_UNSET is not set (set it, or write",
    ),
    Mistake(
        "a key written twice (YAML would keep the last)",
        STORAGE + "server:\n  port: 8001\n  port: 8002\n",
        5,
        "server.port",
        "key given twice",
    ),
    Mistake(
        "a section written twice",
        STORAGE + "server:\n  port: 8001\nserver:\n  host: 127.0.0.1\n",
        5,
        "server",
        "key given twice",
    ),
    Mistake(
        "a required key left without a value",
        STORAGE + "services:\n  trakt:\n    client_id:\n",
        5,
        "services.trakt.client_id",
        "required: expected text",
    ),
    Mistake(
        "a saved BOM",
        "\ufeff" + STORAGE + "server:\n  port: eighty\n",
        4,
        "server.port",
        "expected a whole number, got 'eighty'",
    ),
    Mistake(
        "Windows line endings",
        (STORAGE + "server:\n  host: 127.0.0.1\n  port: eighty\n").replace("\n", "\r\n"),
        5,
        "server.port",
        "expected a whole number, got 'eighty'",
    ),
    Mistake(
        "a file saved as UTF-16 (an editor's Unicode)",
        STORAGE + "server:\n  port: 8765\n",
        1,
        "(top)",
        'the file is saved as UTF-16 (an editor\'s "Unicode"): save it as UTF-8',
        encoding="utf-16",
    ),
    Mistake(
        "an accented name saved as Windows-1252",
        STORAGE + "profiles:\n  zoe:\n    users:\n      plex: [Zoë]\n",
        6,
        "profiles.zoe.users.plex",
        "a character that is not UTF-8 (the file was saved in another encoding, such as"
        " Windows-1252): save the file as UTF-8",
        encoding="cp1252",
    ),
    Mistake(
        "Trakt's section uncommented without its app (a household without Trakt)",
        STORAGE + "services:\n  trakt: {}\n  serializd: {}\n",
        4,
        "services.trakt.client_id",
        "required: your Trakt app's client id (the app of a VIP account); without Trakt, "
        "take services.trakt out",
        last=True,
    ),
    Mistake(
        "a Jellyfin server without its address",
        STORAGE + "services:\n  jellyfin:\n    api_key: k\n",
        5,
        "services.jellyfin.url",
        "required: your Jellyfin server's address, e.g. http://jellyfin:8096",
        last=True,
    ),
    Mistake(
        "an Emby server without its address",
        STORAGE + "services:\n  emby:\n    api_key: k\n",
        5,
        "services.emby.url",
        "required: your Emby server's address, e.g. http://emby:8096",
        last=True,
    ),
    Mistake(
        "a link without its services",
        STORAGE + "links:\n  plex-anilist:\n    interval: 1h\n",
        5,
        "links.plex-anilist.services",
        "required: the two services it keeps in sync, e.g. [plex, anilist]",
        last=True,
    ),
    Mistake(
        "a list for the whole file",
        "- server\n- storage\n",
        1,
        "(top)",
        "expected a mapping of keys",
    ),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_mistake_in_the_file_is_one_line_naming_file_line_key_and_what_is_expected(
    tmp_path: Path, command: str, mistake: Mistake
) -> None:
    path = mistake.write(tmp_path)
    result = watchbridge(command, "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {FILE}:{mistake.line} {mistake.key}: "), lines[0]
    assert mistake.expected in lines[0]
    assert lines[0].endswith(mistake.expected) or not mistake.last, lines[0]
    assert not (tmp_path / "watchbridge.db").exists()  # stopped before anything was made


@pytest.mark.parametrize(
    "text",
    [
        'server:\n  port: "8765"\n',  # quoted or not: the same number
        "alerts:\n  recovery: yes\n  kinds: [credentials]\n",  # YAML 1.1 booleans
        "alerts:\n  recovery: off\n  kinds: credentials\n",  # one value for a list of one
        "delivery:\n  late_after: 600\n  retry_after: 10m\n",
        "services:\n  trakt:\n    client_id: 0x1f\n"  # text that looks like a number
        "  jellyfin:\n    url: http://jellyfin:8096\n    api_key: 1e10\n"
        "profiles:\n  me:\n    users:\n      plex: [1]\n      jellyfin: [0123]\n"
        "    accounts:\n      trakt: {}\n",
    ],
)
def test_values_yaml_would_read_otherwise_are_read_as_written(tmp_path: Path, text: str) -> None:
    path = tmp_path / FILE
    path.write_text(STORAGE.format(db=tmp_path / "watchbridge.db") + text, encoding="utf-8")
    result = watchbridge("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr


def test_an_id_or_token_of_digits_is_kept_as_written(tmp_path: Path) -> None:
    path = tmp_path / FILE
    path.write_text(
        "services:\n  trakt:\n    client_id: 0x1f\n"
        "profiles:\n  me:\n    users:\n      plex: [1]\n      jellyfin: [0123, 1e3]\n",
        encoding="utf-8",
    )
    config = load_config(path, {})
    assert config.services.trakt is not None and config.services.trakt.client_id == "0x1f"
    assert config.profiles["me"].users.jellyfin == ["0123", "1e3"]
    assert config.profiles["me"].users.plex == ["1"]


def test_a_profile_named_like_a_key_that_holds_a_profiles_keys_is_a_profile(
    tmp_path: Path,
) -> None:
    # Only a mapping of what the key holds (`accounts:` with `trakt:` under it) is taken as a
    # key that lost its indentation: a person may well be called `plex` in the household.
    text = "profiles:\n  alice:\n    default: true\n  plex:\n    users:\n      plex: [2]\n"
    path = tmp_path / FILE
    path.write_text(STORAGE.format(db=tmp_path / "watchbridge.db") + text, encoding="utf-8")
    assert list(load_config(path).profiles) == ["alice", "plex"]
