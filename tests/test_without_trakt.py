"""A household with no Trakt at all: media-server webhooks to Serializd and AniList only.

Every leg has to be worth running without Trakt: nothing Trakt alone could have done may be
silently missing, and what is wrong is said in words that do not assume Trakt exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import write_config
from tests.test_cli import run

SERIALIZD = "serializd: {email: a@example.com, password: pw}"


def without_trakt(users: str, services: str = "", accounts: str = SERIALIZD) -> str:
    return (
        f"services:\n  serializd: {{}}\n  anilist: {{client_id: '1'}}\n{services}"
        f"profiles:\n  me:\n    users: {{{users}}}\n    accounts: {{{accounts}}}\n"
    )


@pytest.mark.parametrize(
    ("source", "name", "settings"),
    [
        ("jellyfin", "Jellyfin", "services.jellyfin.url and services.jellyfin.api_key"),
        ("emby", "Emby", "services.emby.url and services.emby.api_key"),
        ("plex", "Plex", "services.plex.url and services.plex.token"),
    ],
)
def test_check_config_warns_that_a_media_server_without_its_key_leaves_episodes_unmatched(
    tmp_path: Path, source: str, name: str, settings: str
) -> None:
    # Jellyfin, Emby and Plex's current agents name an episode by its own ids only: without
    # the server's key (and no Trakt to search) no play of an episode can reach Serializd.
    path = write_config(tmp_path, without_trakt(f"{source}: [alex]", accounts=SERIALIZD))
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stdout
    (warning,) = warnings
    assert warning.startswith(f"warning: profile me takes {name}'s webhooks")
    assert settings in warning and "unmatched" in warning
    assert "trakt" not in warning.lower()


@pytest.mark.parametrize(
    ("users", "services"),
    [
        ("jellyfin: [alex]", "  jellyfin: {url: 'http://jf:8096', api_key: k}\n"),
        ("emby: [alex]", "  emby: {url: 'http://emby:8096', api_key: k}\n"),
        ("plex: ['1']", "  plex: {url: 'http://plex:32400', token: t}\n"),
        ("tautulli: [alex]", ""),  # Tautulli sends the show's TMDB and TVDB ids
        ("generic: [alex]", ""),  # a script sends what it has
    ],
)
def test_check_config_is_quiet_when_the_media_server_can_be_asked(
    tmp_path: Path, users: str, services: str
) -> None:
    path = write_config(tmp_path, without_trakt(users, services))
    result = run("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stdout, result.stdout
