"""watchbridge: keeps watch history, ratings and watchlists in sync across services."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("watchbridge")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
