"""The `watchbridge` command as a user types it: clear lines, right exit codes, no tracebacks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlite_utils

from tests.fakes.base import FakeServer
from tests.fakes.trakt import CLIENT_ID, FakeTrakt
from tests.harness import (
    ServiceProcess,
    free_port,
    three_unmatched_plays_and_a_rating_behind_one,
    wait_ready,
    watchbridge,
    write_config,
)
from watchbridge.app import renamed_profiles, webhook_secret
from watchbridge.cli import webhook_base
from watchbridge.config import load_config, parse_config
from watchbridge.errors import WatchbridgeError
from watchbridge.store import NewOutboxRow, Settlement, Store, migrations
from watchbridge.zone import zone_in_use

EXAMPLE = Path(__file__).parent.parent / "config" / "watchbridge.example.yaml"

DEVICE_CODE = "POST /oauth/device/code"


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`watchbridge ARGS`: in this process, or with its own environment or working directory
    (what a process takes at its start) as a new one."""
    if env is None and cwd is None:
        return watchbridge(*args, stdin=stdin)
    return subprocess.run(
        [sys.executable, "-m", "watchbridge", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@pytest.fixture
def receiver() -> Iterator[list[dict[str, object]]]:
    """A local HTTP endpoint that records Apprise json:// notifications."""
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.append({"port": server.server_address[1]})
    yield received
    server.shutdown()
    server.server_close()


def test_version_prints_the_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("watchbridge, version ")


def test_a_mistyped_command_suggests_the_one_meant() -> None:
    # `check` is what people type; Click's own suggestion (difflib) finds check-config too far.
    result = run("check", "--config", str(EXAMPLE))
    assert result.returncode == 2
    assert "No such command 'check'. Did you mean 'check-config'?" in result.stderr
    result = run("stauts")  # Click's own suggestion, once
    assert result.stderr.count("Did you mean") == 1 and "'status'" in result.stderr
    result = run("frobnicate")
    assert "Did you mean" not in result.stderr and "No such command" in result.stderr


def test_check_config_accepts_the_example() -> None:
    result = run("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout


def test_a_bug_in_a_command_is_one_line_and_exit_code_70_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(_: object) -> str:
        raise KeyError("links")  # stands for a bug: no input reaches this code path

    monkeypatch.setattr("watchbridge.cli._summary", bug)
    result = run("check-config", "--config", str(write_config(tmp_path)))
    assert result.returncode == 70
    assert result.stderr == "unexpected error: KeyError: 'links' (run with --debug for details)\n"


def test_check_config_tells_what_the_service_would_warn_of(tmp_path: Path) -> None:
    path = write_config(tmp_path, "profiles:\n  kids:\n    users: {plex: [kid]}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "warning: profile kids has no account to deliver to" in result.stdout


def test_check_config_notes_a_name_listed_beside_a_default_profile(tmp_path: Path) -> None:
    profiles = "profiles:\n  me: {default: true}\n  kid: {users: {plex: [kid, '5551234']}}\n"
    result = run("check-config", "--config", str(write_config(tmp_path, profiles)))
    assert result.returncode == 0, result.stderr
    [note] = [line for line in result.stdout.splitlines() if "by name beside" in line]
    assert note.startswith("note: profiles.kid.users.plex lists kid by name beside the default")


def test_check_config_warns_of_a_time_zone_this_machine_does_not_know(
    tmp_path: Path, time_zone: Callable[[str], None]
) -> None:
    # glibc takes a misspelt TZ for UTC without a word: AniList's dates would be UTC days.
    # (In this process, TZ set as a new one would take it: six process starts spared.)
    path = write_config(tmp_path, "profiles:\n  me: {default: true}\n")
    time_zone("Europe/Berlim")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning: TZ")]
    assert warning.startswith("warning: TZ=Europe/Berlim is no time zone this machine knows")
    assert "UTC" in warning and "Europe/Berlin" in warning
    assert "a generic webhook's watched_at sent as a time without its zone is read as UTC" in (
        warning
    )
    for known in ("Europe/Berlin", ":America/New_York", "Etc/UTC", "EST5EDT", ""):
        time_zone(known)
        result = run("check-config", "--config", str(path))
        assert "warning: TZ" not in result.stdout, known


@pytest.mark.parametrize(
    ("zone", "shown"),
    [
        ("Pacific/Honolulu", "time zone:     Pacific/Honolulu (UTC-10:00 now)"),
        ("Pacific/Apia", "time zone:     Pacific/Apia (UTC+13:00 now)"),
        ("", "time zone:     UTC (TZ not set): AniList's start and finish dates"),
        ("Etc/UTC", "time zone:     UTC (TZ=Etc/UTC): AniList's start and finish dates"),
    ],
)
def test_check_config_names_the_time_zone_whose_days_anilists_dates_are(
    tmp_path: Path, time_zone: Callable[[str], None], zone: str, shown: str
) -> None:
    # A household in Hawaii that left TZ at the compose default would see every evening's
    # finish a day late on AniList, and nothing said so.
    time_zone(zone)
    path = write_config(tmp_path, "profiles:\n  me: {default: true}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("time zone:")]
    assert line.startswith(shown)
    assert ("set TZ to your time zone" in line) is (zone in ("", "Etc/UTC"))


@pytest.mark.parametrize(
    ("machine", "shown"),
    [
        ("Europe/London", "this machine's, UTC+00:00 now, UTC+01:00 part of the year (TZ not set)"),
        ("GMT0BST,M3.5.0/1,M10.5.0", "this machine's, UTC+00:00 now, UTC+01:00 part of the year"),
        (
            "Etc/UTC",
            "UTC (TZ not set): AniList's start and finish dates and a generic webhook's"
            " watched_at sent as a day are UTC days, and one sent as a time without its zone is"
            " read as UTC (or refused)",
        ),
    ],
)
def test_a_machine_at_utc_in_winter_only_is_not_shown_as_utc(
    time_zone: Callable[[str], None], machine: str, shown: str
) -> None:
    # With TZ unset and the machine in London, a January check-config said "UTC ... AniList's
    # dates are UTC days", which stops being true at the end of March. The machine's own zone
    # is this process's (/etc/localtime unchanged); the environment it is told of has no TZ.
    time_zone(machine)
    january = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
    assert zone_in_use({}, at=january).startswith(shown)


def test_check_config_warns_that_tautulli_never_sends_the_owner_as_user_1(tmp_path: Path) -> None:
    # Plex's own webhook calls the owner 1; Tautulli sends the owner's plex.tv account id.
    path = write_config(
        tmp_path,
        "services: {trakt: {client_id: abc}}\n"
        "profiles:\n  me:\n    users: {tautulli: ['1']}\n    accounts: {trakt: {}}\n",
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: profiles.me.users.tautulli lists '1'")
    assert "plex.tv account id" in warning and "user name" in warning
    assert "config OK" in result.stdout


def test_check_config_warns_of_two_profiles_on_one_serializd_login(tmp_path: Path) -> None:
    # The second person's block copied from the first, ${SERIALIZD_EMAIL} and all.
    path = write_config(
        tmp_path,
        "services: {serializd: {}, jellyfin: {url: 'http://jf:8096', api_key: k}}\nprofiles:\n"
        "  alice:\n    users: {jellyfin: [alice]}\n"
        "    accounts: {serializd: {email: Home@example.com, password: pw}}\n"
        "  bob:\n    users: {jellyfin: [bob]}\n"
        "    accounts: {serializd: {email: home@example.com, password: pw}}\n",
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        "warning: profiles.bob.accounts.serializd.email is the Serializd login of profile alice"
    )
    assert "bob's plays would land on alice's Serializd" in warning


SERIALIZD_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJleHBpcnlfdGltZSI6IjIwOTktMDEtMDFUMDA6MDA6MDBaIn0.c2lnbmVk"


def test_check_config_takes_a_pasted_serializd_cookie_and_never_shows_it(tmp_path: Path) -> None:
    # Each person's own token: the second block copied from the first warns, as a shared email.
    cookie = f"tvproject_credentials={SERIALIZD_JWT}"
    path = write_config(
        tmp_path,
        "services: {serializd: {}, jellyfin: {url: 'http://jf:8096', api_key: k}}\nprofiles:\n"
        "  alice:\n    users: {jellyfin: [alice]}\n"
        f"    accounts: {{serializd: {{token: '{cookie}'}}}}\n"
        "  bob:\n    users: {jellyfin: [bob]}\n"
        f"    accounts: {{serializd: {{token: 'Bearer {SERIALIZD_JWT}'}}}}\n",
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        "warning: profiles.bob.accounts.serializd.token is profile alice's token too"
    )
    assert "config OK" in result.stdout
    for part in SERIALIZD_JWT.split("."):
        assert part not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("anilist", "profiles", "warned"),
    [
        ("{}", "me: {accounts: {anilist: {}}}", "profile me"),
        ("{}", "me: {accounts: {anilist: {}}}\n  bo: {accounts: {anilist: {}}}", "profiles me, bo"),
        ("{client_id: '123'}", "me: {accounts: {anilist: {}}}", None),
        ("{}", "me: {accounts: {anilist: {token: t0k}}}", None),
    ],
    ids=["no-client-id", "two-profiles", "client-id-set", "token-in-config"],
)
def test_check_config_warns_of_anilist_accounts_auth_anilist_cannot_sign_in(
    tmp_path: Path, anilist: str, profiles: str, warned: str | None
) -> None:
    # Said only by `auth anilist` before: the service would run, its AniList plays waiting
    # for a sign-in the command cannot give without a client id.
    path = write_config(tmp_path, f"services:\n  anilist: {anilist}\nprofiles:\n  {profiles}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    said = [line for line in result.stdout.splitlines() if "client_id is not set" in line]
    if warned is None:
        assert said == []
        return
    key = "profiles.me" if warned == "profile me" else "profiles.NAME"
    assert said == [
        "warning: services.anilist.client_id is not set, and `watchbridge auth anilist` needs it"
        f" to sign in {warned}: create a client at https://anilist.co/settings/developer with"
        " the redirect URL https://anilist.co/api/v2/oauth/pin and put its id in"
        f" services.anilist.client_id, or paste a token into {key}.accounts.anilist.token"
    ]


@pytest.mark.parametrize(
    ("days_left", "said_as"),
    [(300, "note"), (10, "warning"), (None, "warning")],
    ids=["signed-in", "ends-in-10-days", "not-signed-in"],
)
def test_a_profile_signed_in_to_anilist_without_a_client_id_is_told_as_a_note(
    tmp_path: Path, days_left: int | None, said_as: str
) -> None:
    # Every start warned of `me`, signed in with a token good for months: true (no sign-in
    # again without a client id once it ends), but nothing to do today. A warning only while
    # the sign-in is missing, ends within 30 days, ended or was refused; else a note (info).
    path = write_config(
        tmp_path, "services:\n  anilist: {}\nprofiles:\n  me: {accounts: {anilist: {}}}\n"
    )
    store = Store.open(tmp_path / "watchbridge.db")
    if days_left is not None:
        now = time.time()
        token = {"access_token": "stored-t0k", "expires_at": now + days_left * 86400.0}
        store.put_token("anilist", "me", token, now)
    store.close()
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "client_id is not set" in line]
    assert len(said) == 1 and said[0].startswith(f"{said_as}: services.anilist.client_id")
    if said_as == "note":
        assert said == [
            "note: services.anilist.client_id is not set: profile me is signed in to AniList for"
            " now, but `watchbridge auth anilist` needs it to sign in again once that token ends"
            " (`watchbridge status` says so 30 days ahead): create a client at"
            " https://anilist.co/settings/developer with the redirect URL"
            " https://anilist.co/api/v2/oauth/pin and put its id in services.anilist.client_id"
        ]
    assert "stored-t0k" not in result.stdout


def test_check_config_says_what_plays_of_a_profile_go_to_no_account(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "services: {serializd: {}}\nprofiles:\n  me:\n    users: {jellyfin: [alex]}\n"
        "    accounts: {serializd: {email: a@example.com, password: pw}}\n",
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "movies it plays are sent to no account" in result.stdout


def test_check_config_warns_of_a_profile_that_looks_renamed(tmp_path: Path) -> None:
    # A renamed profile starts over without the records of what watchbridge wrote for it, so
    # its links would copy those plays again (under the new name they look like new plays).
    profile = "profiles:\n  {}:\n    users: {{plex: [alex]}}\n    accounts: {{trakt: {{}}}}\n"
    trakt = "services:\n  trakt: {client_id: cid}\n"
    path = write_config(tmp_path, trakt + profile.format("alexander"))
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.put_token("trakt", "alex", {"access_token": "a", "refresh_token": "r"}, 0.0)
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "profile alexander is new to the database" in result.stdout
    assert "state of profile alex, no longer in the config" in result.stdout
    assert "if you renamed a profile, run `watchbridge rename-profile alex alexander`" in (
        result.stdout
    )


def test_renamed_profiles_warns_only_of_one_gone_beside_one_new() -> None:
    body = "services: {trakt: {client_id: c}}\nprofiles:\n  alexander: {accounts: {trakt: {}}}\n"
    config = parse_config(body + "  kids: {}\n", Path("watchbridge.yaml"), {})
    assert renamed_profiles(config, {"alex"})  # alex gone, alexander new
    assert renamed_profiles(config, {"alex", "alexander"}) == []  # alex removed, nothing new
    assert renamed_profiles(config, set()) == []  # a first start: nothing kept yet
    # kids has no account, so nothing is ever kept for it: no rename
    assert "kids" not in renamed_profiles(config, {"alex"})[0]


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "services:\n  trakt:\n    client_id: cid\n    client_secret: topsecret-value\n"
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "trakt: api_url=https://api.trakt.tv" in result.stdout
    assert "topsecret-value" not in result.stdout + result.stderr


def test_check_config_masks_tokens_and_passwords_in_service_urls(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "services:\n  plex:\n    url: http://bob:PLEXSECRET123@plex.lan:32400/\n"
        "  trakt:\n    client_id: cid\n    api_url: https://proxy.lan/trakt?token=hunter2pass\n",
    )
    result = run("check-config", "--config", str(path))
    assert "plex.lan:32400" in result.stdout and "proxy.lan/trakt" in result.stdout
    assert "PLEXSECRET123" not in result.stdout and "hunter2pass" not in result.stdout
    assert "webhook secret: generated once, kept in the database" in result.stdout  # readable
    assert "API token:     none (API and UI open on this port, by IP address or local name)" in (
        result.stdout
    )


def test_check_config_names_the_hosts_the_open_page_answers_and_a_wrong_one(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, "")
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  allowed_hosts: [wb.example.com]\n")
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "by IP address or local name, wb.example.com)" in result.stdout
    path.write_text(path.read_text().replace("[wb.example.com]", "['https://wb.example.com']"))
    result = run("check-config", "--config", str(path))
    assert result.returncode != 0
    assert "server.allowed_hosts: expected host names such as wb.example.com" in result.stderr


def check_config_as_nobody(
    folder: Path, command_name: str = "check-config", database: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`check-config` (or `command_name`) of a config in `folder` naming its database there
    (or `database`), run as nobody."""
    config = write_config(folder)
    if database is not None:
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace(str(folder / "watchbridge.db"), str(database)))
    config.chmod(0o644)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    command = [sys.executable, "-m", "watchbridge", command_name, "--config", str(config)]
    return subprocess.run(
        [*nobody, *command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(folder)},
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_check_config_names_a_database_file_the_user_cannot_write() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o777)  # the folder is writable; the file was restored as root
        Store.open(folder / "watchbridge.db").close()
        result = check_config_as_nobody(folder)
    assert result.returncode == 2
    assert "the database file is not writable by this user" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_check_config_names_a_database_folder_the_user_cannot_write() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o755)  # root's folder; the file itself was given to the user
        database = folder / "watchbridge.db"
        Store.open(database).close()
        os.chown(database, 65534, 65534)
        result = check_config_as_nobody(folder)
    assert result.returncode == 2
    assert f"its folder {folder} is not writable by this user" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
@pytest.mark.parametrize("command", ["check-config", "serve"])
@pytest.mark.parametrize("mode", [0o700, 0o000])
def test_a_database_folder_the_user_cannot_enter_is_named_with_what_to_do(
    command: str, mode: int
) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o755)
        data = folder / "data"  # root's, as a restore or a mkdir as root leaves it
        data.mkdir(mode=mode)
        data.chmod(mode)
        result = check_config_as_nobody(folder, command, data / "watchbridge.db")
    assert result.returncode == 2, result.stderr
    assert "unexpected error" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: watchbridge.yaml:5 storage.path: ")
    assert f"its folder {data} (owner uid 0, mode {mode:04o}) cannot be entered" in line
    assert "by this user (uid 65534)" in line
    assert f"chown -R 65534:65534 {data}" in line


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_serve_names_the_folder_a_symlinked_database_leads_to_that_the_user_cannot_enter() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o777)
        real = folder / "disk"  # root's: the lock and journal files go beside the real file
        (real / "db").mkdir(parents=True)
        real.chmod(0o700)
        (folder / "watchbridge.db").symlink_to(real / "db" / "watchbridge.db")
        result = check_config_as_nobody(folder, "serve")
    assert result.returncode == 2, result.stderr
    assert f"the folder {real} (owner uid 0, mode 0700) on its way cannot be" in result.stderr
    assert f"chmod o+x {real}" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_a_folder_symlink_this_user_cannot_follow_names_the_folder_in_its_way() -> None:
    # Not a link to nothing (nor a file): where it leads is behind a folder closed to the user.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o755)
        disk = folder / "disk"  # root's
        (disk / "data").mkdir(parents=True)
        disk.chmod(0o700)
        (folder / "data").symlink_to(disk / "data")
        result = check_config_as_nobody(folder, database=folder / "data" / "watchbridge.db")
    assert result.returncode == 2, result.stderr
    assert f"the folder {disk} (owner uid 0, mode 0700) on its way cannot be" in result.stderr
    assert "does not exist" not in result.stderr and "is a file" not in result.stderr


@pytest.mark.parametrize("command", ["check-config", "serve", "status"])
@pytest.mark.parametrize("loop", ["the file", "a folder"])
def test_a_storage_path_in_a_symlink_loop_is_one_line_naming_the_link(
    tmp_path: Path, command: str, loop: str
) -> None:
    # A link left pointing at itself (a restore, a mount moved): the database can never be
    # reached by that path. One line saying where and what to do, exit 2, no traceback.
    if loop == "the file":  # watchbridge.db -> other.db -> watchbridge.db
        link = tmp_path / "watchbridge.db"
        (tmp_path / "other.db").symlink_to(link)
        link.symlink_to(tmp_path / "other.db")
        database = link
    else:  # data -> data
        link = tmp_path / "data"
        link.symlink_to(link)
        database = link / "watchbridge.db"
    config = tmp_path / "w.yaml"
    config.write_text(f"storage:\n  path: {database}\n")
    result = run(command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "unexpected error" not in result.stderr
    assert "config OK" not in result.stdout
    (line,) = result.stderr.strip().splitlines()
    named = database if link == database else f"{database}: {link}"  # the file: named once
    assert line.startswith(f"error: w.yaml:2 storage.path: {named} is a symlink")
    assert "loop" in line and "storage.path" in line and f"ls -l {link}" in line


@pytest.mark.parametrize("command", ["check-config", "serve", "status"])
@pytest.mark.parametrize("where", ["its folder", "a folder on the way"])
def test_a_storage_path_through_a_dangling_symlink_is_one_line_naming_the_link(
    tmp_path: Path, command: str, where: str
) -> None:
    # A link to a disk not mounted, or a folder moved: it is no file, and nothing can be made
    # through it. One line saying which link, where it points, and what to do; exit 2.
    link, gone = tmp_path / "data", tmp_path / "disk" / "watchbridge"
    link.symlink_to(gone)
    database = link / "watchbridge.db" if where == "its folder" else link / "db" / "w.db"
    config = tmp_path / "w.yaml"
    config.write_text(f"storage:\n  path: {database}\n")
    result = run(command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "unexpected error" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: w.yaml:2 storage.path: {database}: {link} is a symlink to {gone}, which does"
        " not exist"
    )
    assert f"ls -l {link}" in line and "is a file" not in line
    assert not gone.exists()  # nothing made where the link leads (a disk not mounted yet)


@pytest.mark.parametrize("command", ["check-config", "serve", "status"])
@pytest.mark.parametrize("mount_point", ["empty", "missing"])
def test_a_database_file_that_is_a_dangling_symlink_is_one_line_and_nothing_is_made(
    tmp_path: Path, command: str, mount_point: str
) -> None:
    # watchbridge.db -> /mnt/usb/watchbridge.db while the disk is not mounted: followed, serve
    # made an empty database on the mount point (no sign-ins, a new webhook secret), and
    # status said there was no database at the target.
    usb = tmp_path / "mnt" / "usb"
    if mount_point == "empty":
        usb.mkdir(parents=True)
    database, gone = tmp_path / "watchbridge.db", usb / "watchbridge.db"
    database.symlink_to(gone)
    config = tmp_path / "w.yaml"
    config.write_text(f"storage:\n  path: {database}\n")
    result = run(command, "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "config OK" not in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: w.yaml:2 storage.path: {database} is a symlink to {gone}, which does not exist"
    )
    assert f"ls -l {database}" in line and "mount the disk" in line
    assert not gone.exists() and usb.exists() == (mount_point == "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["w.yaml", "watchbridge.db", *(["mnt"] if mount_point == "empty" else [])]
    )  # no lock file, no backup, no journal beside the link


def test_ctrl_c_while_auth_waits_for_the_code_exits_130(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    config = write_config(
        tmp_path,
        f"services:\n  trakt: {{client_id: {CLIENT_ID}, api_url: '{trakt.url}',"
        f" auth_url: '{trakt.url}'}}\nprofiles:\n  me: {{accounts: {{trakt: {{}}}}}}\n",
    )
    waiting = subprocess.Popen(
        [sys.executable, "-m", "watchbridge", "auth", "trakt", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert waiting.stdout is not None and "enter the code" in waiting.stdout.readline()
    waiting.send_signal(signal.SIGINT)  # the user gives up
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 130  # not a failure's 1
    assert err.endswith("\naborted\n") and "Traceback" not in err


def test_check_config_error_is_one_line_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "watchbridge.yaml"
    path.write_text("server:\n  prot: 1\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert (
        result.stderr
        == "error: watchbridge.yaml:2 server.prot: unknown key; did you mean 'port'?\n"
    )


def test_check_config_refuses_a_url_without_a_scheme(tmp_path: Path) -> None:
    path = write_config(tmp_path, "services:\n  plex: {url: '192.168.1.10:32400'}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "services.plex.url: expected an http(s) URL" in result.stderr


def test_check_config_gives_a_service_url_example_of_that_service(tmp_path: Path) -> None:
    # The example was a media server's LAN address for every key: for a Trakt host written
    # without its scheme, it told the user to write http://192.168.1.10:8096.
    body = (
        "services:\n  trakt: {client_id: abc, api_url: api.trakt.tv, auth_url: auth.trakt.tv}\n"
        "  plex: {account_url: plex.tv}\n  anilist: {mapping_urls: {kometa: github.com}}\n"
    )
    result = run("check-config", "--config", str(write_config(tmp_path, body)))
    assert result.returncode == 2
    errors = [line[line.index("services.") :] for line in result.stderr.splitlines()]
    assert errors == [
        "services.trakt.api_url: expected an http(s) URL such as https://api.trakt.tv",
        "services.trakt.auth_url: expected an http(s) URL such as https://auth.trakt.tv",
        "services.plex.account_url: expected an http(s) URL such as https://plex.tv",
        "services.anilist.mapping_urls.kometa: expected an http(s) URL, or '' for off",
    ]


@pytest.mark.parametrize(
    ("pasted", "key"),
    [
        (" http://jellyfin:8096", "services.jellyfin.url"),  # read as a path: no request goes
        ("http://jellyfin:8096\n", "services.jellyfin.url"),  # httpx refuses it at each request
        ("http://jellyfin:8096 ", "services.jellyfin.url"),  # was "expected an http(s) URL"
        ("https://api.trakt.tv\t", "services.trakt.api_url"),
    ],
)
def test_check_config_names_a_space_around_a_url_from_the_environment(
    tmp_path: Path, pasted: str, key: str
) -> None:
    body = (
        "services:\n  jellyfin: {url: '${JELLYFIN_URL}'}\n"
        "  trakt: {client_id: abc, api_url: '${TRAKT_API_URL}'}\n"
    )
    urls = {"JELLYFIN_URL": "http://jellyfin:8096", "TRAKT_API_URL": "https://api.trakt.tv"}
    urls["TRAKT_API_URL" if "trakt" in key else "JELLYFIN_URL"] = pasted
    path = write_config(tmp_path, body)
    result = run("check-config", "--config", str(path), env=urls)
    assert result.returncode == 2, result.stdout
    assert f"{key}: starts or ends with a space or line break (pasted?): remove it" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_check_config_refuses_a_missing_anime_overrides_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "services:\n  anilist: {mapping_overrides: anime-overides.yaml}\n"
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    missing = tmp_path / "anime-overides.yaml"
    assert re.search(
        rf"watchbridge.yaml:\d+ services.anilist.mapping_overrides: {re.escape(str(missing))} not",
        result.stderr,
    )


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = run("check-config", "--config", str(tmp_path / "none.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("none.yaml: config file not found")


def test_config_found_through_the_environment_variable(tmp_path: Path) -> None:
    result = run("check-config", env={"WATCHBRIDGE_CONFIG": str(write_config(tmp_path))})
    assert result.returncode == 0, result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "check-config", "--config", str(tmp_path / "none.yaml"))
    assert "Traceback" in result.stderr


def test_the_debug_variable_turns_on_debug_logging_like_the_flag(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'alerts: {urls: ["json://127.0.0.1:9/closed"]}\n')
    result = run("test-alert", "--config", str(path), env={"WATCHBRIDGE_DEBUG": "1"})
    assert "level=debug" in result.stderr


def test_the_debug_variable_in_words_shows_the_traceback_too(tmp_path: Path) -> None:
    result = run(
        "check-config", "--config", str(tmp_path / "none.yaml"), env={"WATCHBRIDGE_DEBUG": "true"}
    )
    assert "Traceback" in result.stderr


def test_any_other_debug_value_turns_debug_on_without_refusing_the_command(
    tmp_path: Path,
) -> None:
    result = run(
        "check-config", "--config", str(write_config(tmp_path)), env={"WATCHBRIDGE_DEBUG": "2"}
    )
    assert result.returncode == 0, result.stderr


def test_unwritable_storage_path_is_reported_by_check_config(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    path = tmp_path / "w.yaml"
    path.write_text(f"storage:\n  path: {tmp_path / 'blocker' / 'db.sqlite'}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode != 0
    assert "storage.path" in result.stderr


def test_a_storage_path_naming_a_directory_is_reported_by_check_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "w.yaml"
    path.write_text(f"storage:\n  path: {tmp_path / 'data'}\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert f"w.yaml:2 storage.path: {tmp_path / 'data'} is a directory; name the database" in (
        result.stderr
    )


def test_check_config_names_the_file_and_line_of_an_alert_url_apprise_refuses(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text('alerts:\n  urls:\n    - "json://ok.example"\n    - "no-scheme-here"\n')
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "w.yaml:4 alerts.urls[1]: " in result.stderr


def test_serve_refuses_a_listen_address_with_a_port_as_check_config_does(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("host: 127.0.0.1", "host: 127.0.0.1:8765"))
    checked = run("check-config", "--config", str(path))
    served = run("serve", "--config", str(path))
    expected = "error: watchbridge.yaml:2 server.host: expected an address of this machine"
    assert checked.returncode == served.returncode == 2
    assert checked.stderr.startswith(expected) and served.stderr.startswith(expected)
    assert "Traceback" not in served.stderr


@pytest.mark.parametrize("under", ["db.sqlite", "data/db.sqlite"])
def test_serve_with_unwritable_storage_path_fails_with_one_line(tmp_path: Path, under: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    path = write_config(tmp_path)
    path.write_text(
        path.read_text().replace(str(tmp_path / "watchbridge.db"), str(blocker / under))
    )
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    # Says what is wrong on the way (not "cannot open its lock file ... (File exists)").
    assert line.startswith("error: watchbridge.yaml:")
    assert f"storage.path: {blocker / under}: {blocker} is a file, not a directory" in line
    assert "lock file" not in line


@contextlib.contextmanager
def write_locked(db: Path) -> Iterator[None]:
    """Another process (a `watchbridge sync`, a sqlite3 shell) holding the write lock."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_serve_starts_while_another_process_writes_to_the_database(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, "  busy_timeout: 0.5\n", port=port)
    with Store.open(tmp_path / "watchbridge.db") as store:
        webhook_secret(load_config(config), store, 1.0)  # made at the first start
    with write_locked(tmp_path / "watchbridge.db"):
        service = ServiceProcess(config, port).start(wait=False)
        # Its start meets the lock and says so (slow on a busy machine).
        service.wait_for_output("stayed locked by another process")
    try:
        wait_ready(service.url, timeout=30)  # once the lock is gone
        assert "Traceback" not in service.output()
    finally:
        service.kill()


def test_a_first_serve_while_another_process_writes_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "  busy_timeout: 0.5\n")
    Store.open(tmp_path / "watchbridge.db").close()  # made by a `sync` before any start
    with write_locked(tmp_path / "watchbridge.db"):
        result = run("serve", "--config", str(config))
    assert result.returncode == 1
    assert "error: the database (storage.path) stayed locked" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_on_a_fresh_database(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    Store.open(tmp_path / "watchbridge.db").close()  # as the service's first start leaves it
    result = run("status", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "waiting:       0\nbeing sent:    0\n" in result.stdout
    assert "last week:     nothing sent" in result.stdout
    assert "given up (dead letters): 0" in result.stdout


def test_status_says_once_that_a_profile_is_not_signed_in_and_what_to_run(
    tmp_path: Path,
) -> None:
    # A household without Trakt, right after `check-config`: AniList is set up, nobody ran
    # `watchbridge auth anilist` yet. The line said "not signed in: not signed in: run ...".
    path = write_config(
        tmp_path,
        "services: {anilist: {client_id: '1'}}\nprofiles: {me: {accounts: {anilist: {}}}}\n",
    )
    Store.open(tmp_path / "watchbridge.db").close()
    result = run("status", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "  anilist/me: not signed in: run `watchbridge auth anilist --profile me`\n" in (
        result.stdout
    )


def test_check_config_lists_a_profiles_media_users_as_written(tmp_path: Path) -> None:
    # It printed Python's {'plex': ['1']}.
    path = write_config(
        tmp_path,
        "services: {serializd: {}}\nprofiles:\n  me:\n    users: {plex: ['1', alex], "
        "jellyfin: [alice]}\n    accounts: {serializd: {email: a@b.c, password: pw}}\n",
    )
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "  me: accounts serializd; media users plex: 1, alex; jellyfin: alice\n" in (
        result.stdout
    )


def test_status_never_makes_a_database(tmp_path: Path) -> None:
    result = run("status", "--config", str(write_config(tmp_path)))
    assert result.returncode == 1
    assert f"no database at {tmp_path / 'watchbridge.db'}" in result.stderr
    assert "the service makes it when it first starts" in result.stderr
    assert not (tmp_path / "watchbridge.db").exists()


def test_a_relative_storage_path_run_from_another_folder_is_named(tmp_path: Path) -> None:
    config = tmp_path / "watchbridge.yaml"
    config.write_text("storage: {path: ./data/watchbridge.db}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("deadletters", "list", "--config", str(config), cwd=elsewhere)
    assert result.returncode == 1
    assert f"storage.path data/watchbridge.db is relative to {elsewhere}" in result.stderr
    assert not (elsewhere / "data").exists()


def test_a_command_that_makes_the_database_says_where_it_is(tmp_path: Path) -> None:
    result = run("webhook-urls", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert f"a new database at {tmp_path / 'watchbridge.db'}" in result.stderr


def test_a_backup_path_that_is_a_folder_is_not_said_to_be_started_from(tmp_path: Path) -> None:
    (tmp_path / "watchbridge.db.backup").mkdir()  # no copy: the start makes a new database
    result = run("webhook-urls", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "starts from its backup" not in result.stderr
    assert f"a new database at {tmp_path / 'watchbridge.db'}" in result.stderr


def test_a_damaged_backup_is_not_said_to_be_started_from(tmp_path: Path) -> None:
    # The database lost, and its backup copy on the same failing SD card lost pages too.
    database, copy = tmp_path / "watchbridge.db", tmp_path / "watchbridge.db.backup"
    Store.open(database).close()
    data = database.read_bytes()
    copy.write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))
    database.unlink()
    result = run("webhook-urls", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "starts from its backup" not in result.stderr
    assert (
        f"the database's backup {copy} is damaged (database disk image is malformed): it is "
        f"kept as {copy}.damaged, and a new database begins at {database} (sign in again)"
    ) in result.stderr
    assert (tmp_path / "watchbridge.db.backup.damaged").is_file() and not copy.exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs it as another user"
)
def test_a_backup_this_user_cannot_read_is_not_said_to_be_damaged() -> None:
    # The database lost; its backup copy was taken as root (`docker exec ... backup`), 0600.
    with tempfile.TemporaryDirectory(dir="/tmp") as name:  # one the other user can reach
        folder = Path(name)
        folder.chmod(0o777)
        database, copy = folder / "watchbridge.db", folder / "watchbridge.db.backup"
        Store.open(database).close()
        database.replace(copy)
        copy.chmod(0o600)
        result = check_config_as_nobody(folder, "webhook-urls")
        left = sorted(p.name for p in folder.iterdir())
    assert result.returncode == 1, result.stderr
    assert "damaged" not in result.stderr and "starts from its backup" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line == (
        f"error: the database {database} is missing and its backup {copy} (owner uid 0, mode "
        "0600) cannot be read by this user (uid 65534): give it to this user (chown "
        f"65534:65534 {copy}), or run watchbridge as its owner; it is left as it was"
    )
    assert left == ["watchbridge.db.backup", "watchbridge.yaml"]  # nothing set aside or begun


def test_status_shows_queue_and_dead_letters(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    store = Store.open(tmp_path / "watchbridge.db")
    store.enqueue(
        [
            NewOutboxRow("trakt", "me", "a", {}, "k1", "i1"),
            NewOutboxRow("trakt", "me", "a", {}, "k2", "i2"),
        ],
        1.0,
    )
    item = store.claim("w", 2.0, limit=1)[0]
    store.mark_dead(item.id, 3.0, "gave up")
    store.close()
    result = run("status", "--config", str(path))
    assert "waiting:       1\n" in result.stdout
    assert "given up (dead letters): 1" in result.stdout


def test_status_shows_whose_account_each_service_is_and_leaves_bookkeeping_out(
    tmp_path: Path,
) -> None:
    # It showed `serializd/me account_check:tv = owed  (1970-01-01 ...)` and the like.
    from watchbridge.accounts import AccountNotes, restarted_cursor, user_named

    path = write_config(
        tmp_path,
        "services: {serializd: {}, plex: {url: 'http://127.0.0.1:9', token: t}}\n"
        "profiles: {me: {users: {plex: ['1']}, accounts: {plex: {}, serializd: "
        "{email: a@b.c, password: pw}}}}\n"
        "links: {tv: {services: [plex, serializd]}}\n",
    )
    config = load_config(path, {})
    with Store.open(tmp_path / "watchbridge.db") as store:
        # As the Serializd target notes the username of its first login (a clock at 0).
        notes = AccountNotes(store, config, lambda: 0.0)
        assert asyncio.run(notes.note("serializd", "me", user_named("alice_tv"))) is None
        store.set_cursor("plex", "me", "keys_from", "machine-1234", 5.0)
        store.set_cursor("watchbridge", "me", restarted_cursor("tv"), "the first sync of "
                         "links.tv went one way only (--direction)", 6.0)  # fmt: skip
        assert store.get_cursor("serializd", "me", "account_check:tv") == "owed"
    shown = run("status", "--config", str(path)).stdout
    assert "account:       serializd/me is user alice_tv\n" in shown
    assert (
        "starts over:   links.tv for me: the first sync of links.tv went one way only "
        "(--direction)\n"
    ) in shown
    assert "cursors:" not in shown
    for bookkeeping in ("account_check", "owed", "keys_from", "machine-1234", "1970"):
        assert bookkeeping not in shown


def test_status_says_what_pending_deliveries_wait_behind_an_unmatched_one(
    tmp_path: Path,
) -> None:
    # Status said "4 pending" and `watchbridge unmatched` listed 3; nothing said where the
    # 4th was.
    path = three_unmatched_plays_and_a_rating_behind_one(tmp_path)
    shown = run("status", "--config", str(path)).stdout
    assert "waiting:       4\n" in shown
    assert "waiting for a match: 3 title(s) not found on the service yet" in shown
    assert (
        "waiting their turn: 1 waiting for an earlier delivery of the same item to the same "
        "service (they go out in order: each follows once the one before it is delivered or "
        "given up)\n"
    ) in shown
    listed = run("unmatched", "--config", str(path)).stdout
    assert listed.count("no TMDB show id") == 3
    assert listed.endswith(
        "and 1 more waiting behind these: later deliveries of the same items, which go out "
        "in order once these are delivered or given up\n"
        "to give one up (it is never sent): `watchbridge deadletters discard ID`\n"
    )


def test_status_says_nothing_waits_behind_when_each_item_has_one_delivery(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "me:trakt:a", "i1")], 1.0)
        store.enqueue([NewOutboxRow("trakt", "me", "rating", {}, "me:trakt:a:ratings", "i2")], 1.0)
    shown = run("status", "--config", str(path)).stdout
    assert "waiting:       2\n" in shown and "waiting their turn:" not in shown


def test_reset_state_without_yes_refuses_when_not_interactive(tmp_path: Path) -> None:
    result = run("reset-state", "--config", str(write_config(tmp_path)))
    assert result.returncode != 0
    assert "pass --yes" in result.stderr


def test_reset_state_with_yes_clears_the_queue(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    store = Store.open(tmp_path / "watchbridge.db")
    store.enqueue([NewOutboxRow("trakt", "me", "a", {}, "k1", "i1")], 1.0)
    store.close()
    assert run("reset-state", "--yes", "--config", str(path)).returncode == 0
    store = Store.open(tmp_path / "watchbridge.db")
    assert store.outbox_counts()["pending"] == 0
    store.close()


def test_reset_state_refuses_while_a_sync_runs(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.start_run("trakt-serializd", time.time())
        store.enqueue([NewOutboxRow("trakt", "me", "a", {}, "k1", "i1")], 1.0)
    result = run("reset-state", "--yes", "--config", str(path))
    assert result.returncode != 0
    assert "a sync of trakt-serializd is running now" in result.stderr
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.outbox_counts()["pending"] == 1


def test_reset_state_keeps_the_records_of_what_watchbridge_wrote_to_serializd(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        for collection in ("plays", "ratings", "rated-rows"):
            store.mirror_put("serializd", "me", collection, {"k": {"review_id": 1}}, 1.0)
    assert run("reset-state", "--yes", "--config", str(path)).returncode == 0
    with Store.open(tmp_path / "watchbridge.db") as store:
        kept = [store.mirror_get("serializd", "me", c) for c in ("plays", "ratings", "rated-rows")]
    assert kept == [{"k": {"review_id": 1}}] * 3


def test_reset_state_keeps_what_alerts_told(tmp_path: Path) -> None:
    # An open alert's "Resolved" is owed still; a once-per-token warning was sent.
    from watchbridge import alerts, maintenance

    path, now = write_config(tmp_path), time.time()
    with Store.open(tmp_path / "watchbridge.db") as store:
        for namespace in (alerts.NAMESPACE, maintenance.ALERTED):
            store.cache_put(namespace, "told", {"open": True}, now, 86400.0)
    assert run("reset-state", "--yes", "--config", str(path)).returncode == 0
    with Store.open(tmp_path / "watchbridge.db") as store:
        kept = [store.cache_get(n, "told", now)[0] for n in (alerts.NAMESPACE, maintenance.ALERTED)]
    assert kept == [True, True]


def test_test_alert_reaches_a_local_receiver(
    tmp_path: Path, receiver: list[dict[str, object]]
) -> None:
    port = receiver[0]["port"]
    path = write_config(tmp_path, f"alerts:\n  urls: ['json://127.0.0.1:{port}/hook']\n")
    result = run("test-alert", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert len(receiver) == 2
    assert "test" in str(receiver[1]["title"]).lower()


def test_test_alert_names_a_url_it_cannot_use_beside_one_it_reached(
    tmp_path: Path, receiver: list[dict[str, object]]
) -> None:
    port = receiver[0]["port"]
    urls = f"['json://127.0.0.1:{port}/hook', 'nftys://ntfy.sh/topic']"
    result = run(
        "test-alert", "--config", str(write_config(tmp_path, f"alerts:\n  urls: {urls}\n"))
    )
    assert result.returncode != 0
    assert "test alert sent to 1 destination(s)" in result.stdout
    assert "alerts are not sent to alerts.urls[1]" in result.stderr


def test_test_alert_with_only_unusable_urls_names_them(tmp_path: Path) -> None:
    path = write_config(tmp_path, "alerts:\n  urls: ['nftys://ntfy.sh/topic']\n")
    result = run("test-alert", "--config", str(path))
    assert result.returncode != 0
    assert "alerts are not sent to alerts.urls[0]" in result.stderr
    assert "add Apprise URLs" not in result.stderr


def test_test_alert_without_destinations_says_what_to_do(tmp_path: Path) -> None:
    result = run("test-alert", "--config", str(write_config(tmp_path)))
    assert result.returncode != 0
    assert "add Apprise URLs under alerts.urls" in result.stderr


def test_webhook_urls_use_the_generated_secret_consistently(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    first = run("webhook-urls", "--config", str(path), "--host", "nas.local")
    second = run("webhook-urls", "--config", str(path), "--host", "nas.local")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "plex      http://nas.local:" in first.stdout


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("nas.lan", "http://nas.lan:8765"),
        ("nas.lan:8765", "http://nas.lan:8765"),  # what the address bar shows
        ("http://nas.lan:8765", "http://nas.lan:8765"),
        ("https://proxy.example/watchbridge/", "https://proxy.example/watchbridge"),
        ("fd00::5", "http://[fd00::5]:8765"),
    ],
)
def test_webhook_urls_take_a_host_a_host_and_port_or_a_whole_url(host: str, base: str) -> None:
    assert webhook_base(host, 8765) == base


def test_webhook_urls_say_when_a_url_given_has_no_port(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = run("webhook-urls", "--config", str(path), "--host", "http://192.168.1.10")
    assert "(no port in --host: these go to port 80/443; watchbridge listens on" in result.stdout


def test_webhook_urls_refuse_a_host_they_cannot_make_a_url_of(tmp_path: Path) -> None:
    result = run("webhook-urls", "--config", str(write_config(tmp_path)), "--host", "ftp://nas")
    assert result.returncode != 0 and "/webhooks/" not in result.stdout
    assert "--host 'ftp://nas' is not a host name, host:port or http(s) URL" in result.stderr


@pytest.mark.parametrize("host", ["192.168.1.10:", "nas.lan:0", "http://nas.lan:/x"])
def test_webhook_urls_refuse_a_host_with_an_empty_or_zero_port(host: str) -> None:
    with pytest.raises(WatchbridgeError, match="is not a host name, host:port or http"):
        webhook_base(host, 8765)


GENERIC_PLAY = json.dumps(
    {"event": "played", "user": "alice", "item": {"type": "movie", "ids": {"imdb": "tt0113277"}}}
)


def with_secret(path: Path, secret: str) -> Path:
    path.write_text(
        path.read_text().replace("server:\n", f"server:\n  webhook_secret: '{secret}'\n")
    )
    return path


def test_webhook_urls_quote_a_secret_with_symbols_and_the_service_takes_them(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = write_config(tmp_path, port=port)
    path.write_text(
        path.read_text().replace("server:\n", "server:\n  webhook_secret: 'p#ss?w%d x'\n")
    )
    urls = run("webhook-urls", "--config", str(path), "--host", "127.0.0.1").stdout
    generic = next(line.split()[1] for line in urls.splitlines() if line.startswith("generic"))
    assert generic.endswith("/webhooks/generic/p%23ss%3Fw%25d%20x")
    service = ServiceProcess(path, port).start()
    try:
        answer = httpx.post(
            generic, content=GENERIC_PLAY, headers={"content-type": "application/json"}
        )
    finally:
        service.terminate()
    assert answer.status_code == 200  # accepted, and ignored: no profile maps alice


def test_a_secret_with_letters_beyond_ascii_works_in_the_url_and_the_header(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = with_secret(write_config(tmp_path, port=port), "pässwörd-ß")
    urls = run("webhook-urls", "--config", str(path), "--host", "127.0.0.1").stdout
    generic = next(line.split()[1] for line in urls.splitlines() if line.startswith("generic"))
    service = ServiceProcess(path, port).start()
    try:
        by_url = httpx.post(generic, content=GENERIC_PLAY)
        by_header = [  # UTF-8, or latin-1 as Python's http.client sends text headers
            httpx.post(
                f"{service.url}/webhooks/generic",
                content=GENERIC_PLAY,
                headers={"x-webhook-secret": "pässwörd-ß".encode(encoding)},
            ).status_code
            for encoding in ("utf-8", "latin-1")
        ]
    finally:
        service.terminate()
    assert (by_url.status_code, by_header) == (200, [200, 200])


def test_a_secret_holding_a_slash_is_left_out_of_the_urls_with_the_reason(tmp_path: Path) -> None:
    path = with_secret(write_config(tmp_path), "a/b")
    urls = run("webhook-urls", "--config", str(path), "--host", "nas.local").stdout
    assert "generic   http://nas.local:" in urls and "/webhooks/generic\n" in urls
    assert "works only in the X-Webhook-Secret header" in urls
    assert (
        "works only in the X-Webhook-Secret header"
        in run("check-config", "--config", str(path)).stdout
    )


TRAKT_PROFILE = """
services: {trakt: {client_id: abc}}
profiles: {me: {users: {plex: ["1"]}, accounts: {trakt: {}}}}
"""


def dead_letter(tmp_path: Path, profile: str = "me") -> Path:
    """A Trakt play of `profile` that gave up, under a config whose profile `me` uses Trakt."""
    path = write_config(tmp_path, TRAKT_PROFILE)
    store = Store.open(tmp_path / "watchbridge.db")
    store.enqueue(
        [
            NewOutboxRow(
                "trakt", profile, "play", {"item": {"kind": "movie", "title": "Heat"}}, "k1", "i1"
            )
        ],
        1.0,
    )
    (item,) = store.claim("w", 2.0)
    store.mark_dead(item.id, 3.0, "gave up after 12 attempts: unmatched")
    store.close()
    return path


def test_unmatched_lists_each_waiting_play_with_its_reason_and_event(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    store = Store.open(tmp_path / "watchbridge.db")
    item = {"kind": "episode", "show_title": "Frieren", "season": 1, "number": 3}
    store.record_event(
        source="plex",
        kind="stop",
        payload={"item": item, "server": "nas"},
        now=1.0,
        rows=[NewOutboxRow("serializd", "me", "play", {"item": item}, "k1", "i1")],
    )
    (row,) = store.claim("w", 2.0)
    store.retry_later(row.id, 2.0, 3602.0, "unmatched: set services.plex to read its ids")
    store.close()
    result = run("unmatched", "--payload", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "#1" in result.stdout and "serializd/me  play Frieren S01E03" in result.stdout
    assert "unmatched: set services.plex to read its ids" in result.stdout
    assert '"server": "nas"' in result.stdout or '"server":"nas"' in result.stdout


def test_unmatched_says_when_nothing_waits(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    Store.open(tmp_path / "watchbridge.db").close()
    result = run("unmatched", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "nothing unmatched" in result.stdout


def test_deadletters_list_shows_what_gave_up_and_why(tmp_path: Path) -> None:
    result = run("deadletters", "list", "--config", str(dead_letter(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "#1" in result.stdout and "Heat" in result.stdout
    assert "gave up after 12 attempts: unmatched" in result.stdout


def test_a_dead_letter_of_an_episode_names_its_show_and_numbers(tmp_path: Path) -> None:
    # "Pilot" or "Episode 16" alone tell nothing.
    path = write_config(tmp_path, TRAKT_PROFILE)
    episode = {"kind": "episode", "title": "Felina", "show_title": "Breaking Bad", "season": 5,
               "number": 16, "show_ids": {"tmdb": "1396"}}  # fmt: skip
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {"item": episode}, "k1", "i1")], 1.0)
        (item,) = store.claim("w", 2.0)
        store.mark_dead(item.id, 3.0, "gave up after 12 attempts: trakt: answered 500")
    result = run("deadletters", "list", "--config", str(path))
    assert "trakt/me  play Breaking Bad S05E16  gave up after 12 attempts" in result.stdout


def test_a_dead_letter_is_one_line_whatever_its_title_holds(tmp_path: Path) -> None:
    # A title is the media server's text: a newline in it would forge a second row, an escape
    # sequence would drive the terminal (clear it, recolour or retitle it).
    path = write_config(tmp_path, TRAKT_PROFILE)
    movie = {"kind": "movie", "title": "Heat\x1b[2J\n#9  forged\u202e", "year": 1995}
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {"item": movie}, "k1", "i1")], 1.0)
        (item,) = store.claim("w", 2.0)
        store.mark_dead(item.id, 3.0, "gave up after 12 attempts: refused\r\nok")
    (line,) = run("deadletters", "list", "--config", str(path)).stdout.splitlines()
    assert "play Heat\\x1b[2J\\n#9  forged\\u202e (1995)" in line
    assert line.endswith("refused\\r\\nok")


def test_stored_error_texts_are_shown_redacted_by_the_commands(tmp_path: Path) -> None:
    # A service's message stored as a row's or a run's error may quote a URL with a key, a
    # token or the webhook path: users paste these outputs into bug reports.
    path = write_config(
        tmp_path, "services: {trakt: {client_id: abc, client_secret: cs-7731x}}\n"
        "profiles: {me: {users: {plex: ['1']}, accounts: {trakt: {}}}}\n"
    )  # fmt: skip
    with Store.open(tmp_path / "watchbridge.db") as store:
        generated = webhook_secret(load_config(path, {}), store, 1.0)
        store.enqueue(
            [NewOutboxRow("trakt", "me", "play", {}, f"k{n}", f"i{n}") for n in range(3)], 1.0
        )
        dead, held, unmatched = store.claim("w", 2.0)
        store.mark_dead(dead.id, 3.0, "gave up: trakt refused client_secret cs-7731x")
        store.hold(held.id, 3.0, 4.0, "http://jf.local/Items?apikey=k9k9k9k9 answered 500")
        store.retry_later(unmatched.id, 3.0, 9.0, "unmatched: Bearer tok-55aa66bb")
        link_run = store.start_run("a", 1.0)
        assert link_run is not None
        store.finish_run(link_run, 2.0, "failed", {}, 3, f"POST /webhooks/plex/{generated}: 500")
    shown = "".join(
        run(*command, "--config", str(path)).stdout
        for command in (("deadletters", "list"), ("status",), ("unmatched",))
    )
    assert "client_secret ********" in shown and "apikey=********" in shown
    assert "Bearer ********" in shown and "/webhooks/plex/********" in shown
    assert not [s for s in ("cs-7731x", "k9k9k9k9", "tok-55aa66bb", generated) if s in shown]


def test_a_link_waiting_for_review_is_said_in_words_with_what_to_run(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "services: {trakt: {client_id: abc}, serializd: {}}\n"
        "profiles: {me: {accounts: {trakt: {}, serializd: {email: a@b.c, password: pw}}}}\n"
        "links: {ts: {services: [trakt, serializd]}}\n"
    )  # fmt: skip
    with Store.open(tmp_path / "watchbridge.db") as store:
        link_run = store.start_run("ts", 1.0)
        assert link_run is not None
        why = "this is the first sync of links.ts: review the plan"
        store.finish_run(link_run, 2.0, "needs-review", {}, 3, why)
    status = run("status", "--config", str(path)).stdout
    line = next(t for t in status.splitlines() if t.startswith("  ts: "))
    assert line.startswith("  ts: waiting for your review at "), line
    assert line.endswith(f"; {why}") and "needs-review" not in line, line


def test_deadletters_retry_queues_them_again(tmp_path: Path) -> None:
    path = dead_letter(tmp_path)
    assert (
        "1 dead letter(s) queued again: the service sends them within 5 minutes"
        in run("deadletters", "retry", "1", "--config", str(path)).stdout
    )
    assert "no dead letters" in run("deadletters", "list", "--config", str(path)).stdout
    assert "waiting:       1\n" in run("status", "--config", str(path)).stdout


def test_deadletters_take_ids_as_the_list_shows_them(tmp_path: Path) -> None:
    path = dead_letter(tmp_path)
    assert (
        "1 dead letter(s) queued again"
        in run("deadletters", "retry", "#1", "--config", str(path)).stdout
    )


@pytest.mark.parametrize("given", ["Heat", "\u00b2"])  # a superscript two is a digit to Python
def test_a_dead_letter_id_that_is_no_number_is_a_usage_error(tmp_path: Path, given: str) -> None:
    result = run("deadletters", "discard", given, "--config", str(dead_letter(tmp_path)))
    assert result.returncode == 2
    assert f"{given!r} is not a row id" in result.stderr


def test_deadletters_retry_leaves_what_the_config_still_cannot_deliver(tmp_path: Path) -> None:
    path = dead_letter(tmp_path, profile="kid")  # a profile since removed from the config
    result = run("deadletters", "retry", "--all", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "0 dead letter(s) queued again" in result.stdout
    assert "1 left as dead letter(s): profile kid is no longer in the config" in result.stdout
    assert "#1" in run("deadletters", "list", "--config", str(path)).stdout


def test_deadletters_discard_all(tmp_path: Path) -> None:
    path = dead_letter(tmp_path)
    assert (
        "1 dead letter(s) discarded"
        in run("deadletters", "discard", "--all", "--config", str(path)).stdout
    )


def test_deadletters_retry_without_ids_says_what_to_do(tmp_path: Path) -> None:
    result = run("deadletters", "retry", "--config", str(dead_letter(tmp_path)))
    assert result.returncode != 0
    assert "--all" in result.stderr


@pytest.mark.parametrize("command", ["retry", "discard", "allow"])
def test_deadletters_naming_no_row_is_a_command_line_mistake(tmp_path: Path, command: str) -> None:
    # README: exit code 2 for a mistake on the command line (scripts tell it from a failure).
    path = dead_letter(tmp_path)
    result = run("deadletters", command, "--config", str(path))
    assert result.returncode == 2
    assert "--all" in result.stderr
    assert "#1" in run("deadletters", "list", "--config", str(path)).stdout


@pytest.mark.parametrize("command", ["retry", "discard", "allow"])
def test_deadletters_ids_with_all_change_nothing(tmp_path: Path, command: str) -> None:
    # `discard 1 --all` gave up every dead letter, not the one named.
    path = dead_letter(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        heat = {"item": {"kind": "movie", "title": "Heat 2"}}
        store.enqueue([NewOutboxRow("trakt", "me", "play", heat, "k2", "i2")], 4.0)
        (item,) = store.claim("w", 5.0)
        store.mark_dead(item.id, 6.0, "gave up after 12 attempts: unmatched")
    result = run("deadletters", command, "1", "--all", "--config", str(path))
    assert result.returncode == 2
    assert "or --all, not both" in result.stderr
    listed = run("deadletters", "list", "--config", str(path)).stdout
    assert "#1" in listed and "#2" in listed


@pytest.mark.parametrize("command", ["retry", "discard"])
def test_deadletters_names_the_ids_that_are_not_dead_letters(tmp_path: Path, command: str) -> None:
    path = dead_letter(tmp_path)
    result = run("deadletters", command, "1", "4242", "--config", str(path))
    assert result.returncode != 0
    assert "1 dead letter(s)" in result.stdout  # the known one is still done
    assert "not a dead letter: 4242" in result.stderr


def _auth_trakt(tmp_path: Path, start_fake: Any, username: str | None = None) -> str:
    """`watchbridge auth trakt` for profile me, approved on the fake Trakt (by its user
    `username`, made for it, else its default one); its output."""
    from tests.fakes.trakt import CLIENT_ID, FakeTrakt

    trakt = start_fake(FakeTrakt())
    trakt.device_interval = 0
    approver = trakt.add_user(username, vip=True) if username else None
    path = write_config(
        tmp_path,
        f"services:\n  trakt:\n    client_id: {CLIENT_ID}\n"
        f"    api_url: {trakt.url}\n    auth_url: {trakt.url}\n"
        "profiles:\n  me:\n    accounts:\n      trakt: {}\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchbridge", "auth", "trakt", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    code = first.rsplit(" ", 1)[-1].strip()
    trakt.approve_device(code, approver)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def test_auth_trakt_signs_in_with_the_device_code(tmp_path: Path, start_fake: Any) -> None:
    out = _auth_trakt(tmp_path, start_fake)
    # Whose account approved the code: the fake's signed-in user.
    assert "profile me is signed in to Trakt as sean\n" in out
    store = Store.open(tmp_path / "watchbridge.db")
    assert store.get_token("trakt", "me") is not None
    store.close()


def test_status_names_the_trakt_account_by_its_username_shown_as_text(
    tmp_path: Path, start_fake: Any
) -> None:
    # A uuid tells a user nothing; the username is the account owner's own text (a
    # right-to-left override in it would turn the rest of the line around).
    out = _auth_trakt(tmp_path, start_fake, "bob\u202egnp")
    assert "profile me is signed in to Trakt as bob\\u202egnp\n" in out
    with Store.open(tmp_path / "watchbridge.db") as store:
        identity = store.get_cursor("trakt", "me", "account")
    assert identity is not None and identity.startswith("account ")
    shown = run("status", "--config", str(tmp_path / "watchbridge.yaml"))
    assert shown.returncode == 0, shown.stderr
    assert "account:       trakt/me is user bob\\u202egnp\n" in shown.stdout
    assert identity.removeprefix("account ") not in shown.stdout
    assert "\u202e" not in out + shown.stdout


def test_auth_trakt_makes_the_deliveries_its_missing_sign_in_held_due_now(
    tmp_path: Path, start_fake: Any
) -> None:
    now = time.time()
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], now)
        (item,) = store.claim("test", now, 1, ["trakt"])
        store.hold(
            item.id, now, now + 900, "not signed in: run `watchbridge auth trakt --profile me`"
        )
    out = _auth_trakt(tmp_path, start_fake)
    assert "1 deliveries of profile me to Trakt waited for this sign-in" in out
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.next_due(["trakt"]) <= time.time()


def test_signing_in_a_second_profile_to_the_first_ones_trakt_account_is_warned_of(
    tmp_path: Path, start_fake: Any
) -> None:
    # Bob approves the code in a browser where Alice is signed in to trakt.tv.
    trakt = start_fake(FakeTrakt())
    trakt.device_interval = 0
    trakt.add_user("bob")
    path = write_config(
        tmp_path,
        f"services:\n  trakt:\n    client_id: {CLIENT_ID}\n"
        f"    api_url: {trakt.url}\n    auth_url: {trakt.url}\n"
        "profiles:\n  alice: {accounts: {trakt: {}}}\n  bob: {accounts: {trakt: {}}}\n",
    )

    def sign_in(profile: str, user: str | None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "watchbridge", "auth", "trakt", "--config", str(path)]
        proc = subprocess.Popen(
            [*command, "--profile", profile],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        code = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        trakt.approve_device(code, user)
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    alice = sign_in("alice", None)
    assert alice.returncode == 0 and "same Trakt account" not in alice.stdout + alice.stderr
    bob = sign_in("bob", None)
    assert bob.returncode == 0, bob.stderr
    assert (
        "profile bob is signed in to the same Trakt account as profile alice (user sean)"
        in bob.stderr  # its username, not its uuid
    )
    assert "watchbridge auth trakt --profile bob" in bob.stderr
    right = sign_in("bob", "bob")  # again, signed in on trakt.tv as Bob
    assert "same Trakt account" not in right.stdout + right.stderr


def test_auth_trakt_for_an_app_trakt_does_not_serve_says_the_app_needs_vip_and_what_was_kept(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.vip, trakt.device_interval = False, 0  # the app's owner has no VIP (July 2026)
    path = write_config(
        tmp_path,
        f"services:\n  trakt: {{client_id: {CLIENT_ID}, api_url: '{trakt.url}',"
        f" auth_url: '{trakt.url}'}}\nprofiles:\n  me: {{accounts: {{trakt: {{}}}}}}\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchbridge", "auth", "trakt", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    trakt.approve_device(proc.stdout.readline().rsplit(" ", 1)[-1].strip())
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "profile me is signed in to Trakt, but Trakt does not serve the app" in err
    assert "services.trakt.client_id" in err and "VIP account" in err
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.get_token("trakt", "me") is not None  # as the message says


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (403, "check services.trakt.client_id, and that the app belongs to a VIP account"),
        # "VIP only": the app is known, and its owner is not VIP (any more).
        (426, "the account that owns the app of services.trakt.client_id must be VIP"),
    ],
)
def test_auth_trakt_refused_at_the_poll_says_the_app_needs_vip_at_once(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer], status: int, words: str
) -> None:
    # Trakt's own answer (its request id: no firewall block) to the code's poll, as it
    # answers the code request of an app it does not serve: not "device token poll answered".
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.device_interval = 0
    trakt.fail_next(1, status, {"x-request-id": "r1"}, route="POST /oauth/device/token")
    path = write_config(
        tmp_path,
        f"services:\n  trakt: {{client_id: {CLIENT_ID}, api_url: '{trakt.url}',"
        f" auth_url: '{trakt.url}'}}\nprofiles:\n  me: {{accounts: {{trakt: {{}}}}}}\n",
    )
    result = run("auth", "trakt", "--config", str(path), env={})  # a process of its own
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: Trakt refused the app (HTTP {status})" in result.stderr
    assert words in result.stderr
    assert trakt.count("POST", "/oauth/device/token") == 1  # not polled until the code expires
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.get_token("trakt", "me") is None


def test_auth_trakt_with_a_code_answer_lacking_its_code_says_so_in_one_line(
    tmp_path: Path, start_fake: Callable[[FakeServer], FakeServer]
) -> None:
    # Read as before, the command ended "unexpected error: KeyError", exit code 70.
    trakt = start_fake(FakeTrakt())
    assert isinstance(trakt, FakeTrakt)
    trakt.reshape_next(
        1, lambda body: {k: v for k, v in body.items() if k != "user_code"}, route=DEVICE_CODE
    )
    path = write_config(
        tmp_path,
        f"services:\n  trakt: {{client_id: {CLIENT_ID}, api_url: '{trakt.url}',"
        f" auth_url: '{trakt.url}'}}\nprofiles:\n  me: {{accounts: {{trakt: {{}}}}}}\n",
    )
    result = run("auth", "trakt", "--config", str(path), env={})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the device code request answered without its user_code" in result.stderr
    assert "Trakt may have changed its answers" in result.stderr


def test_auth_plex_pin_without_a_home_user_is_a_usage_error(tmp_path: Path) -> None:
    result = run("auth", "plex", "--pin", "1234", "--config", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert "--pin is a Plex Home member's PIN: it goes with --home-user NAME" in result.stderr


def test_auth_trakt_without_the_service_configured_says_so(tmp_path: Path) -> None:
    result = run("auth", "trakt", "--config", str(write_config(tmp_path)))
    assert result.returncode != 0
    assert "services.trakt is not configured" in result.stderr


@pytest.mark.parametrize("command", [["retry", "1"], ["discard", "1"]])
def test_deadletters_on_a_database_another_watchbridge_holds_locked_say_so(
    tmp_path: Path, command: list[str]
) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("storage:\n", "storage:\n  busy_timeout: 1\n"))
    db = tmp_path / "watchbridge.db"
    with Store.open(db) as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {"item": {}}, "k", "i1")], 0.0)
        store.settle(0.0, [Settlement(1, "dead", None, "gave up")])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the service in the middle of a long write
    try:
        result = run("deadletters", *command, "--config", str(config))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    assert result.stderr.startswith("error: the database (storage.path) stayed locked by another")


def an_older_database(path: Path) -> str:
    """A database as the previous release left it; the name of the migration it lacks."""
    last = migrations.pending(sqlite_utils.Database(memory=True))[-1].name
    older = sqlite_utils.Database(path)
    migrations.apply(older, stop_before=last)
    older.close()
    return last


@pytest.mark.parametrize("command", [["status"], ["unmatched"], ["deadletters", "list"]])
def test_a_command_that_only_looks_leaves_an_older_database_for_the_service_to_upgrade(
    tmp_path: Path, command: list[str]
) -> None:
    # The release still running on it (pip upgraded under it) would find it changed.
    config = write_config(tmp_path)
    missing = an_older_database(tmp_path / "watchbridge.db")
    result = run(*command, "--config", str(config))
    assert result.returncode == 1
    assert "made by an earlier watchbridge" in result.stderr
    assert "restart the service" in result.stderr
    # A cron-only setup has no service to restart: its next sync upgrades the database.
    assert "with no service running, syncs from cron: run `watchbridge sync`" in result.stderr
    looked_at = sqlite_utils.Database(tmp_path / "watchbridge.db")
    assert missing not in {m.name for m in migrations.applied(looked_at)}


def a_database_a_newer_release_made(directory: Path) -> Path:
    """A config whose database has a migration this release does not know."""
    config = write_config(directory)
    Store.open(directory / "watchbridge.db").close()
    newer = sqlite_utils.Database(directory / "watchbridge.db")
    newer["_sqlite_migrations"].insert(
        {"migration_set": "watchbridge", "name": "m099_next", "applied_at": "2027-01-01"}
    )
    newer.close()
    return config


def test_a_command_that_only_looks_refuses_a_database_a_newer_release_made(
    tmp_path: Path,
) -> None:
    result = run("status", "--config", str(a_database_a_newer_release_made(tmp_path)))
    assert result.returncode == 2  # as a config error: running it again cannot mend it
    assert "made by a newer watchbridge (m099_next)" in result.stderr


def test_check_config_warns_of_a_database_the_service_would_refuse(tmp_path: Path) -> None:
    result = run("check-config", "--config", str(a_database_a_newer_release_made(tmp_path)))
    assert result.returncode == 0
    assert "warning: storage.path" in result.stdout and "newer watchbridge" in result.stdout


def test_backup_copies_an_older_database_as_it_is(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    missing = an_older_database(tmp_path / "watchbridge.db")
    assert run("backup", "--config", str(config)).returncode == 0
    copy = sqlite_utils.Database(tmp_path / "watchbridge.db.backup")
    assert missing not in {m.name for m in migrations.applied(copy)}


def test_sync_of_a_mistyped_link_makes_no_database(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "services:\n  trakt: {client_id: abc}\n  serializd: {}\n"
        "profiles:\n  me: {accounts: {trakt: {}, serializd: {email: a@b.c, password: x}}}\n"
        "links:\n  trakt-serializd: {services: [trakt, serializd]}\n",
    )
    result = run("sync", "--link", "trakt-serialzd", "--config", str(config))
    assert result.returncode == 1
    assert "no link 'trakt-serialzd'" in result.stderr and "a new database" not in result.stderr
    assert not (tmp_path / "watchbridge.db").exists()


def test_backup_copies_the_database_beside_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.put_token("trakt", "me", {"access_token": "a"}, 1.0)
    result = run("backup", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"database copied to {tmp_path / 'watchbridge.db.backup'}")
    with Store.open(tmp_path / "watchbridge.db.backup") as copy:
        assert copy.get_token("trakt", "me") == {"access_token": "a"}


def test_backup_to_a_place_it_cannot_write_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    Store.open(tmp_path / "watchbridge.db").close()
    (tmp_path / "mount").write_text("a file where a folder is expected")
    result = run("backup", "--config", str(config), "--to", str(tmp_path / "mount" / "c.db"))
    assert result.returncode == 1, result.stderr
    assert f"cannot write the copy to {tmp_path / 'mount' / 'c.db'}" in result.stderr
    assert "unexpected" not in result.stderr


def test_backup_to_the_database_itself_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.put_token("trakt", "me", {"access_token": "a"}, 1.0)
    for live in ("watchbridge.db", "watchbridge.db-wal"):
        result = run("backup", "--config", str(config), "--to", str(tmp_path / live))
        assert result.returncode == 1 and "is the database itself" in result.stderr
    with Store.open(tmp_path / "watchbridge.db") as store:
        assert store.get_token("trakt", "me") == {"access_token": "a"}


def test_status_after_only_the_backup_was_restored_starts_from_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "o", "k")], 1.0)
        store.backup_to(tmp_path / "watchbridge.db.backup")
    for leftover in tmp_path.glob("watchbridge.db*"):
        if leftover.name != "watchbridge.db.backup":
            leftover.unlink()  # the backup copy alone was restored into an empty folder
    result = run("status", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "starts from its backup" in result.stderr and "waiting:       1\n" in result.stdout


def test_backup_of_a_named_database_reads_no_config(tmp_path: Path) -> None:
    # Home Assistant runs it before each backup, outside the service's environment.
    Store.open(tmp_path / "wb.db").close()
    result = run("backup", "--database", str(tmp_path / "wb.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "wb.db.backup").is_file()


def test_backup_of_a_database_not_made_yet_is_nothing_to_copy_for_a_backup_hook(
    tmp_path: Path,
) -> None:
    # Home Assistant's backup runs it as the app starts for the first time: failing, the hook
    # fails the backup.
    result = run("backup", "--database", str(tmp_path / "wb.db"), "--missing-ok", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nothing to copy" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_backup_of_a_named_database_that_is_not_there_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    result = run("backup", "--database", str(tmp_path / "wb.db"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: --database {tmp_path / 'wb.db'}: no such file"
    ]


def test_status_says_what_holds_deliveries_back(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 1.0)
        (item,) = store.claim("test", 1.0, 1, ["trakt"])
        store.hold(item.id, 1.0, 2.0, "run `watchbridge auth trakt --profile me`")
    result = run("status", "--config", str(path))
    assert (
        "on hold:       trakt for me: 1 waiting, next try 1970-01-01 00:00:02 UTC: run `watchbridge"
        in (result.stdout)
    )


def test_status_speaks_the_words_of_the_status_page(tmp_path: Path) -> None:
    # It said "3 pending, 1 in flight, 0 done (delivered or settled)", "unmatched:" and
    # "held: trakt/me", where the page says waiting, being sent, on hold.
    path = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue(
            [NewOutboxRow("trakt", "me", "play", {}, f"k{n}", f"i{n}") for n in range(4)], 1.0
        )
        held, unmatched, _sending = store.claim("test", 1.0, 3, ["trakt"])
        store.hold(held.id, 1.0, 2.0, "Trakt is down")
        store.retry_later(unmatched.id, 1.0, 2.0, "unmatched: Trakt has no id for Heat yet")
    shown = run("status", "--config", str(path)).stdout
    lines = shown.splitlines()
    assert "waiting:       3" in lines and "being sent:    1" in lines
    assert "last week:     nothing sent" in lines
    assert (
        "on hold:       trakt for me: 1 waiting, next try 1970-01-01 00:00:02 UTC: Trakt is down"
        in lines
    )
    assert "waiting for a match: 1 title(s) not found on the service yet (looked for again" in shown
    assert "given up (dead letters): 0" in lines
    for internal in ("pending", "in flight", "settled", "unmatched:", "held:", "queue:"):
        assert internal not in shown, internal


def test_status_tells_times_on_the_households_clock(tmp_path: Path) -> None:
    # 2026-09-21 14:13:20 UTC: in Berlin, on summer time, 16:13.
    path = write_config(tmp_path)
    with Store.open(tmp_path / "watchbridge.db") as store:
        store.enqueue([NewOutboxRow("trakt", "me", "play", {}, "k1", "i1")], 1.0)
        (item,) = store.claim("test", 1.0, 1, ["trakt"])
        store.hold(item.id, 1.0, 1_790_000_000.0, "run `watchbridge auth trakt --profile me`")
    result = run("status", "--config", str(path), env={"TZ": "Europe/Berlin"})
    assert "next try 2026-09-21 16:13:20 CEST: run `watchbridge auth" in result.stdout


def test_deadletters_on_a_full_disk_say_so_without_a_traceback(tmp_path: Path) -> None:
    # The service keeps the database open (its -wal and -shm files exist); the disk then
    # fills up: this process may not grow any file (RLIMIT_FSIZE), as on a full disk.
    path = dead_letter(tmp_path)
    holder = sqlite3.connect(tmp_path / "watchbridge.db", isolation_level=None)
    holder.execute("SELECT count(*) FROM outbox").fetchone()

    def no_room() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG) instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "watchbridge",
                "deadletters",
                "retry",
                "1",
                "--config",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=no_room,
        )
    finally:
        holder.close()
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: the database (storage.path) could not be written")
    assert "check the disk that holds it" in result.stderr


def test_commands_show_names_a_latin_1_terminal_cannot_hold_without_crashing(
    tmp_path: Path,
) -> None:
    """On a terminal whose encoding is Latin-1 (an old NAS's locale; Windows' cp1252 when the
    output is redirected), "山田" and "進撃の巨人" cannot be written as they are: they come out
    as escapes, "Pokémon" as it is, and each command ends as it would anyway."""
    path = write_config(
        tmp_path,
        "services: {trakt: {client_id: abc}}\n"
        "profiles: {me: {users: {jellyfin: [山田, Zoë]}, accounts: {trakt: {}}}}\n",
    )
    with Store.open(tmp_path / "watchbridge.db") as store:
        items = [{"kind": "movie", "title": title} for title in ("進撃の巨人", "Pokémon")]
        store.enqueue(
            [NewOutboxRow("trakt", "me", "play", {"item": item}, f"k{n}", f"i{n}")
             for n, item in enumerate(items)],
            1.0,
        )  # fmt: skip
        dead, waiting = store.claim("w", 2.0)
        store.mark_dead(dead.id, 3.0, "gave up after 12 attempts: Trakt knows no 進撃の巨人")
        store.retry_later(waiting.id, 3.0, 9.0, "unmatched: Trakt knows no Pokémon")
    for command in (("check-config",), ("deadletters", "list"), ("unmatched",), ("status",)):
        result = subprocess.run(
            [sys.executable, "-m", "watchbridge", *command, "--config", str(path)],
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHONIOENCODING": "latin-1"},
        )
        assert result.returncode == 0, result.stderr.decode("latin-1")
        shown = result.stdout.decode("latin-1")
        if command == ("check-config",):
            assert "jellyfin: \\u5c71\\u7530, Zoë" in shown
        if command == ("deadletters", "list"):
            assert "Trakt knows no \\u9032\\u6483\\u306e\\u5de8\\u4eba" in shown
        if command == ("unmatched",):
            assert "play Pokémon" in shown
