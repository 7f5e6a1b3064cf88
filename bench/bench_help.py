#!/usr/bin/env python3
"""Wall time of ``--help`` for ./train.sh and every script (each a fresh process, the
best of --repeat runs), and whether it imported TensorFlow or scikit-learn. Target:
under 2 s each on the project's 2-core machine.

    .venv/bin/python bench/bench_help.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tools"))

from write_flags_doc import SCRIPTS  # noqa: E402

#: Runs a script's --help in this process and says which heavy libraries came in.
PROBE = ("import runpy, sys; sys.argv = [{name!r}, '--help']\n"
         "try:\n    runpy.run_path({name!r}, run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('HEAVY', [m for m in ('tensorflow', 'sklearn') if m in sys.modules])")


def best_time(command: list[str], repeat: int) -> tuple[float, str]:
    """The shortest wall time of ``repeat`` runs, and the last run's output."""
    times, out = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True,
                             check=True).stdout
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    seconds, _ = best_time([str(PROJECT / "train.sh"), "--help"], repeat)
    print(f"{'./train.sh --help':<36} {seconds:5.2f} s")
    for name in SCRIPTS:
        seconds, out = best_time([sys.executable, "-c", PROBE.format(name=name)], repeat)
        heavy = out.rsplit("HEAVY", 1)[-1].strip()
        print(f"{name + ' --help':<36} {seconds:5.2f} s  heavy imports: {heavy}")


if __name__ == "__main__":
    main()
