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
            "trakt: Trakt no longer accepts the sign-in of profile bob (invalid_grant)",
            None,
            "trakt: Trakt no longer accepts the sign-in of profile bob (invalid_grant)",
        ),
        (
            "plex: profile bob: the server refuses it",
            "plex",
            "plex: profile bob: the server refuses it",
        ),
        ("serializd: profile bob's token", None, "serializd: profile bob's token"),
        # Another profile's name, or bob's only in a command, is no naming of bob.
        (
            "trakt: profile bobby is not signed in",
            None,
            "bob: trakt: profile bobby is not signed in",
        ),
        (
            "trakt: run `auth trakt --profile bob`",
            None,
            "bob: trakt: run `auth trakt --profile bob`",
        ),
        # A run's errors put "PROFILE: " first; a held delivery's reason, after the service.
        ("serializd: unreachable", None, "bob: serializd: unreachable"),
        (
            "plex: reading the history failed",
            "plex",
            "plex: profile bob: reading the history failed",
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
        ("answered 503 after 3 attempt(s)", "trakt: answered 503 after 3 attempt(s)"),
        ("profile me is not signed in to Trakt", "trakt: profile me is not signed in to Trakt"),
        ("Traktor refused it", "trakt: Traktor refused it"),
    ],
)
def test_a_services_error_names_the_service_once_and_first(message: str, said: str) -> None:
    assert ServiceError("trakt", message).message == said
