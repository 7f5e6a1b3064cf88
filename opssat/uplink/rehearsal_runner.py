"""Run a user's own ``smartcam.py``, unchanged on disk, in its DEBUG mode.

SmartCam's README (section 3.2.1) switches DEBUG mode with two module constants, ``DEBUG``
and ``DEBUG_ARCH``, that the rest of its module reads at import time. This runner sets
them in memory (in the parsed module, before it runs) and runs the module as
``__main__`` in the current folder, the rehearsal's work folder. It is started with
SmartCam's Python by ``opssat.uplink.rehearsal`` and imports nothing of the toolkit.

Usage: python rehearsal_runner.py SMARTCAM_PY ARCH
Exit codes beside SmartCam's own: MISSING_PACKAGE when a package it imports is missing,
NOT_SMARTCAM when the file does not define the two constants.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MISSING_PACKAGE = 3
NOT_SMARTCAM = 4
#: The prefix of the one line this runner prints on stderr when it cannot start SmartCam.
PREFIX = "rehearsal-runner:"


def debug_module(source: str, filename: str, arch: str) -> ast.Module:
    """``source`` parsed, with ``DEBUG = True`` and ``DEBUG_ARCH = arch`` assigned where the
    module assigns them; exit NOT_SMARTCAM when either assignment is missing."""
    tree = ast.parse(source, filename)
    wanted = {"DEBUG": True, "DEBUG_ARCH": arch}
    found = set()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in wanted):
            name = node.targets[0].id
            node.value = ast.copy_location(ast.Constant(wanted[name]), node.value)
            found.add(name)
    missing = sorted(set(wanted) - found)
    if missing:
        print(f"{PREFIX} {filename} assigns no {' or '.join(missing)} at module level: "
              "not SmartCam's smartcam.py", file=sys.stderr)
        sys.exit(NOT_SMARTCAM)
    return tree


def main() -> None:
    script, arch = Path(sys.argv[1]).resolve(), sys.argv[2]
    tree = debug_module(script.read_text(encoding="utf-8"), str(script), arch)
    sys.path.insert(0, str(script.parent))  # its own mocks/ package, as `python smartcam.py`
    sys.argv = [str(script)]
    code = compile(tree, str(script), "exec")
    try:
        exec(code, {"__name__": "__main__", "__file__": str(script)})  # noqa: S102
    except ModuleNotFoundError as err:
        print(f"{PREFIX} SmartCam's Python lacks the package {err.name!r}", file=sys.stderr)
        sys.exit(MISSING_PACKAGE)


if __name__ == "__main__":
    main()
