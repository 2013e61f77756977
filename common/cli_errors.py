"""How every command ends on bad input: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_command(main: Callable[[], object], *bad_input: type[Exception]) -> None:
    """Run a command's ``main``; an error of the ``bad_input`` kinds (whose messages name the file, row and column)
    ends the process with ``error: MESSAGE`` on one line and status 2. Other errors are bugs: they keep their
    traceback."""
    try:
        main()
    except bad_input as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
