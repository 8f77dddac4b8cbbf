"""How a line about one profile names it: once."""

from __future__ import annotations

import pytest

from watchbridge.errors import naming_profile
from watchbridge.http import ServiceError


@pytest.mark.parametrize(
    ("message", "service", "line"),
    [
        # A message naming the profile stands as it is, wherever it names it.
        (
            "Trakt no longer accepts the sign-in of profile bob (invalid_grant)",
            None,
            "Trakt no longer accepts the sign-in of profile bob (invalid_grant)",
        ),
        (
            "Plex: profile bob: the server refuses it",
            "Plex",
            "Plex: profile bob: the server refuses it",
        ),
        ("Serializd: profile bob's token", None, "Serializd: profile bob's token"),
        # Another profile's name, or bob's only in a command, is no naming of bob.
        (
            "Trakt: profile bobby is not signed in",
            None,
            "bob: Trakt: profile bobby is not signed in",
        ),
        (
            "Trakt: run `auth trakt --profile bob`",
            None,
            "bob: Trakt: run `auth trakt --profile bob`",
        ),
        # A run's errors put "PROFILE: " first; a held delivery's reason, after the service.
        ("Serializd: unreachable", None, "bob: Serializd: unreachable"),
        (
            "Plex: reading the history failed",
            "Plex",
            "Plex: profile bob: reading the history failed",
        ),
    ],
)
def test_a_line_names_the_profile_once(message: str, service: str | None, line: str) -> None:
    assert naming_profile("bob", message, service=service) == line


@pytest.mark.parametrize(
    ("message", "said"),
    [
        # A message naming its service first is not told under its name again.
        ("Trakt no longer accepts the sign-in", "Trakt no longer accepts the sign-in"),
        ("Trakt's sign-in service answered 500", "Trakt's sign-in service answered 500"),
        # One that does not gets it in front, whatever it names further on.
        # ... headed by the service's own written name, not its config name.
        ("answered 503 after 3 attempt(s)", "Trakt: answered 503 after 3 attempt(s)"),
        ("profile me is not signed in to Trakt", "Trakt: profile me is not signed in to Trakt"),
        ("Traktor refused it", "Trakt: Traktor refused it"),
    ],
)
def test_a_services_error_names_the_service_once_and_first(message: str, said: str) -> None:
    assert ServiceError("trakt", message).message == said


@pytest.mark.parametrize(
    ("service", "said"),
    [
        ("serializd", "Serializd: answered 503"),
        ("anilist", "AniList: answered 503"),
        ("plex", "Plex: answered 503"),
        ("plextv", "plex.tv: answered 503"),
        ("jellyfin", "Jellyfin: answered 503"),
        ("emby", "Emby: answered 503"),
    ],
)
def test_every_service_heads_its_errors_as_it_writes_itself(service: str, said: str) -> None:
    error = ServiceError(service, "answered 503")
    assert error.message == said
    assert error.said == "answered 503"  # to quote in another text without its name
    assert error.service == service  # the config name, for keys and logs


def test_a_text_naming_the_service_quotes_its_error_without_its_name_again() -> None:
    error = ServiceError("trakt", "answered 503")
    assert error.quoted("trakt") == "answered 503"  # "Trakt's id search failed: answered 503"
    assert error.quoted("serializd") == "Trakt: answered 503"  # another service's: named
