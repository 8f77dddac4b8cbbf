"""The one exception base: every error a user can act on carries a message meant for them."""

import re


class WatchbridgeError(Exception):
    """An expected failure with a one-line (or few-line) message for the user; no traceback."""

    exit_code = 1

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(WatchbridgeError):
    """The config file is missing, unreadable or invalid."""

    exit_code = 2


class StoreError(WatchbridgeError):
    """The database cannot be opened or written."""


class NewerDatabase(StoreError):
    """The database was made by a newer release: this one would misread it. Restarting cannot
    change that, so it exits as a config error does (the systemd unit does not loop on it)."""

    exit_code = 2


class Waits(WatchbridgeError):
    """A link run that cannot begin yet for something outside the link, told by an alert of
    its own (the anime mapping lists not downloaded yet): recorded as waiting, not failed,
    and not counted toward the link's failures. `until`: when what it waits for is tried
    again (None: not known)."""

    def __init__(self, message: str, until: float | None = None) -> None:
        super().__init__(message)
        self.until = until


def naming_profile(profile: str, message: str, *, service: str | None = None) -> str:
    """`message`, about `profile`, for a line that names the profile once. A message naming it
    already ("... the sign-in of profile bob", "Plex: profile sam: ...") stands as it is (a
    command's `--profile bob` does not count: it says what to run, not whose line it is).
    Another gets the profile in front: "bob: ..." (a run's errors, "PROFILE: why"), or with
    `service` (as the service writes itself, as its errors start), after the service its
    message starts with ("Plex: profile sam: ...", as a held delivery's reason names it)."""
    if names_profile(profile, message):
        return message
    head = f"{service}: "
    if service is not None and message.startswith(head):
        return f"{head}profile {profile}: {message.removeprefix(head)}"
    return f"{profile}: {message}"


def names_profile(profile: str, message: str) -> bool:
    """Whether `message` names `profile` ("profile bob", not a command's `--profile bob`)."""
    return re.search(rf"(?<![\w-])profile {re.escape(profile)}(?![\w-])", message) is not None
