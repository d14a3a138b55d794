#!/usr/bin/env bash
# Set up .venv, then run the test suite. Arguments are passed to pytest:
#
#   bash scripts/test.sh                 # whole suite
#   bash scripts/test.sh -k shapes -x    # a subset
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Lint first: cheap, and configured in pyproject.toml ([tool.ruff]).
"$ROOT/.venv/bin/ruff" check --quiet .
exec "$ROOT/.venv/bin/python" -m pytest "$@"
