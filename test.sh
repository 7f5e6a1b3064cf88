#!/usr/bin/env bash
# Lint and test: ./test.sh [pytest arguments]. Creates .venv when missing.
set -euo pipefail
cd "$(dirname "$0")"
tools/ensure_venv.sh requirements-dev.txt
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
