"""What every script shares: a user-facing error type and the guard that turns
it into one line on stderr and a non-zero exit instead of a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A problem the user can fix; its message names the problem and the fix."""


EXIT_USAGE = 2


def run(main: Callable[[], int | None]) -> None:
    """Run a script's ``main`` and exit with its code; user errors become one line."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; stop quietly as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(code or 0)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ... (see --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
