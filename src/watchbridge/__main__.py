"""`python -m watchbridge` and the `watchbridge` command: the CLI, stoppable from its first moment.

Importing the CLI takes about half a second; Ctrl-C meanwhile stops it as it does later (one
line, exit 130), not with a traceback of whatever was being imported. SIGTERM ends it as its
default would, also as a container's first process, to which the kernel delivers no signal
without a handler: until the server took SIGTERM over, `docker stop` right after a start was
lost, and the container was killed 10 s later.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from watchbridge import stopsignal


def _terminated(signum: int, frame: FrameType | None) -> None:
    stopsignal.note(signum)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)  # ends the process, as SIGTERM always did...
    raise SystemExit(0)  # ...but as a container's first process (PID 1), which it spares


def _interrupted(signum: int, frame: FrameType | None) -> None:
    stopsignal.note(signum)
    signal.default_int_handler(signum, frame)


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    # A stop raised where Python ignores exceptions is noted (see stopsignal): no traceback.
    if not isinstance(unraisable.exc_value, (SystemExit, KeyboardInterrupt)):
        sys.__unraisablehook__(unraisable)


def main() -> None:
    # Also the handler the server gives SIGTERM back to once it has drained (it then sends it
    # again to this process).
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _interrupted)
    sys.unraisablehook = _unraisable
    try:
        _run()
    except SystemExit as exit:
        _not_waiting_for_alert_sends(exit.code)
        raise
    _not_waiting_for_alert_sends(0)


def _run() -> None:
    try:
        run = _cli()
        run()
    except KeyboardInterrupt:  # before the CLI's own handling (its imports), or after it
        print("aborted", file=sys.stderr, flush=True)
        sys.exit(130)


def _not_waiting_for_alert_sends(code: str | int | None) -> None:
    """End the process now if an alert send Apprise gave up on still runs on its thread: a
    stop cut it short, or it outlasted its timeout. Python waits at exit for such threads,
    for as long as the notification host takes (the URL's read timeout, `rto`, at the least:
    a stop as a container's first process or by Ctrl-C waited 30 s with `rto=30`). Nothing
    is lost: the alert is owed in the database (sent by the next start, maybe a second
    time). The log and output are flushed first: they are all the exit skips."""
    if "apprise" not in sys.modules:  # no alert was sent: nothing to wait for
        return
    from watchbridge.alerts import sends_left_running

    if not sends_left_running():
        return
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


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
