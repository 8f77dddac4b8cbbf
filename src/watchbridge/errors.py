"""The one exception base: every error a user can act on carries a message meant for them."""


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
