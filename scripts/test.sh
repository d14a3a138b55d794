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
# -n: the tests spread over one worker per core (pytest-xdist); ARCHC_TEST_WORKERS=0 runs them in this
# one process, and a -n given as an argument wins. --durations: the slowest tests, to keep an eye on.
exec "$ROOT/.venv/bin/python" -m pytest -n "${ARCHC_TEST_WORKERS:-auto}" --durations=20 "$@"
