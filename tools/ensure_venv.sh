#!/usr/bin/env bash
# Creates .venv when it is missing and installs the given requirements files
# into it whenever their contents changed. Usage: tools/ensure_venv.sh FILE...
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as '$python' (set PYTHON=...)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv (first run: installing TensorFlow takes a few minutes)"
    "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat "$@" requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    for file in "$@"; do
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$file"
    done
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
    touch "$stamp"
fi
