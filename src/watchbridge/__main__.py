"""`python -m watchbridge` and the `watchbridge` command: the CLI, stoppable from its first moment.

Importing the CLI takes about half a second; Ctrl-C meanwhile stops it as it does later (one
line, exit 130), not with a traceback of whatever was being imported.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from watchbridge.cli import main as run

        run()
    except KeyboardInterrupt:  # before the CLI's own handling (its imports), or after it
        print("aborted", file=sys.stderr, flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
