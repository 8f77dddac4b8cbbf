"""`python -m watchbridge` and the `watchbridge` command: the CLI, stoppable from its first moment.

Importing the CLI takes about half a second; Ctrl-C meanwhile stops it as it does later (one
line, exit 130), not with a traceback of whatever was being imported. SIGTERM ends it as its
default would, also as a container's first process, to which the kernel delivers no signal
without a handler: until the server took SIGTERM over, `docker stop` right after a start was
lost, and the container was killed 10 s later.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType


def _terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)  # ends the process, as SIGTERM always did...
    raise SystemExit(0)  # ...but as a container's first process (PID 1), which it spares


def main() -> None:
    # Also the handler the server gives SIGTERM back to once it has drained (it then sends it
    # again to this process).
    signal.signal(signal.SIGTERM, _terminated)
    try:
        run = _cli()
        run()
    except KeyboardInterrupt:  # before the CLI's own handling (its imports), or after it
        print("aborted", file=sys.stderr, flush=True)
        sys.exit(130)


def _cli() -> Callable[[], object]:
    """The CLI's entry, imported. On Python 3.11 a signal's exception raised while a class is
    being made (in a dataclass field's `__set_name__`) comes out wrapped in a RuntimeError:
    unwrapped here, it stops the command as it would anywhere else, without a traceback.
    (3.12, the image's, no longer wraps it: this matters to installs from PyPI on 3.11.)"""
    try:
        from watchbridge.cli import main as run
    except RuntimeError as exc:
        if isinstance(exc.__cause__, (SystemExit, KeyboardInterrupt)):
            raise exc.__cause__ from None
        raise
    return run


if __name__ == "__main__":
    main()
