"""watchbridge: keeps watch history, ratings and watchlists in sync across services."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Looked up when first asked for: importing importlib.metadata here would hold up (and, on
    # Ctrl-C meanwhile, put a traceback on) every start of the command before it can stop quietly.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("watchbridge")
    except PackageNotFoundError:  # running from a source tree without an install
        found = "0.0.0+source"
    globals()["__version__"] = found  # looked up once
    return found
