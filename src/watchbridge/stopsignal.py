"""A stop signal that came before the server took the signals over, kept so it is not lost.

The CLI's handlers stop the process by raising (SystemExit, KeyboardInterrupt) between two
bytecodes of the main thread. Raised inside code whose exceptions Python ignores (a weakref
callback of an import under way, a `__del__`), the exception is printed as "Exception ignored"
and the stop is lost, and as a container's first process the signal's default action does not
end it either: `docker stop` then waited 10 s for its SIGKILL. So the handlers also note the
signal here, and the server acts on a noted one once it has taken the signals over.
"""

from __future__ import annotations

_noted: list[int] = []


def note(signum: int) -> None:
    _noted.append(signum)


def noted() -> int | None:
    """The last stop signal the CLI's own handlers took, if any."""
    return _noted[-1] if _noted else None
