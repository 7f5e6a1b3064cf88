"""Progress of a long step: tqdm's bar on a terminal, plain occasional lines otherwise.

tqdm redraws its bar with carriage returns, which a log file keeps as one endless
line of frames; when stderr is not a terminal, a line every ``INTERVAL_S`` seconds
(and one at the end) says how far the step got instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

#: Seconds between two plain progress lines in a log.
INTERVAL_S = 10.0


class Lines:
    """tqdm's ``update``/iteration interface, printing ``desc: n/total unit (s)`` lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str = "", unit: str = "it", interval: float | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = INTERVAL_S if interval is None else interval
        self.n = 0
        self.start = self.last = time.monotonic()
        self.shown = -1

    def _line(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.desc}: {self.n}{of} {self.unit} "
              f"({time.monotonic() - self.start:.0f} s)", file=sys.stderr, flush=True)
        self.shown, self.last = self.n, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._line()

    def close(self) -> None:
        """The last count, when the step was long enough to print lines at all."""
        if 0 <= self.shown != self.n:
            self._line()

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        """Kept for tqdm's interface; a log line has no room for it."""

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
        unit: str = "it", enabled: bool | None = None) -> tqdm | Lines:
    """Progress of a step: ``enabled`` None shows it (a bar on a terminal, lines in a
    log, from ``INTERVAL_S`` seconds on), False hides it, True shows it too."""
    if enabled is False:
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if sys.stderr is not None and sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit)
    return Lines(iterable, total, desc, unit)
