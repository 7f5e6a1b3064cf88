"""What every script shares: the guard that turns a ``UserError`` into one line on
stderr and a non-zero exit instead of a traceback, and quiet native start-up."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from opssat.core.atomic import write_failure
from opssat.core.errors import UserError

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
    except OSError as err:
        # A full disk, a read-only file: one line naming the file (outputs are staged,
        # so nothing is half-written); any other OSError is a bug and keeps its traceback.
        message = write_failure(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(code or 0)


def on_interrupt(message: str) -> None:
    """From now on, Ctrl-C says ``message`` and exits 130 at once: for when the work
    is done and committed and only reporting (or library teardown) is left."""

    def handler(signum: int, frame: object) -> None:
        print(f"interrupted: {message}", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGINT, handler)


#: Start-up chatter that TensorFlow and LiteRT's native code print straight to
#: stderr (oneDNN and XNNPACK notices, no CUDA driver on a CPU machine), whatever
#: the log level.
NATIVE_CHATTER = re.compile(
    r"^(INFO: |I0000 |WARNING: All log messages before absl::InitializeLog\(\)"
    r"|E0000 .*failed call to cuInit)"
)


@contextmanager
def quiet_native_stderr(drop: re.Pattern = NATIVE_CHATTER) -> Iterator[None]:
    """Hold back the native lines written to file descriptor 2 that match ``drop``.

    Native libraries bypass ``sys.stderr``, so the descriptor itself is swapped
    for a file while the block runs; every other line is passed on afterwards.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. captured by a test runner)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if not drop.match(line):
                    print(line, file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ... (see --help)``), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
