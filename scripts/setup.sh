#!/usr/bin/env bash
# Set up the development environment for archc (idempotent).
#
#   - creates .venv in the repo root with `python3 -m venv` if it is missing
#   - installs archc in editable mode with the dev extra, constrained by
#     constraints.txt (which pins the CPU-only torch wheel)
#   - makes sure Graphviz's `dot` is available (installs it via apt when root)
#
#   - installs the example plugin (examples/plugins/archc-example-ops, see
#     docs/extending.md) in editable mode, so its `archc.ops` entry point is live
#
# Re-running is cheap: the pip step is skipped while pyproject.toml, the
# plugin's pyproject.toml and constraints.txt are unchanged since the last
# successful install.
# Set ARCHC_FORCE_INSTALL=1 to force it. Set PYTHON to choose the interpreter
# used to create the venv (default: python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
STAMP="$VENV/.archc-install-stamp"
PLUGIN="examples/plugins/archc-example-ops"

say() { printf '[setup] %s\n' "$*"; }

# --- 1. virtual environment ---------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "[setup] error: archc needs Python >= 3.10 ('$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing))." >&2
        exit 1
    fi
    say "creating virtual environment in .venv ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV"
else
    say "reusing existing .venv"
fi

# --- 2. python packages -------------------------------------------------------
want_stamp="$(cat pyproject.toml "$PLUGIN/pyproject.toml" constraints.txt | "$VENV/bin/python" -c \
    'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"

if [[ "${ARCHC_FORCE_INSTALL:-0}" != "1" && "$want_stamp" == "$have_stamp" && -x "$VENV/bin/archc" ]] \
    && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("archc"); m.version("archc-example-ops")' \
        2>/dev/null; then
    say "python packages up to date"
else
    say "installing archc + dev dependencies into .venv (torch pinned via constraints.txt)"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check \
        -c constraints.txt -e ".[dev]"
    say "installing the example plugin ($PLUGIN)"
    "$VENV/bin/python" -m pip install -qq --disable-pip-version-check \
        -c constraints.txt -e "$PLUGIN"
    printf '%s\n' "$want_stamp" > "$STAMP"
fi

# --- 3. Graphviz (`dot`), needed by `archc draw` --------------------------------
if command -v dot >/dev/null 2>&1; then
    :
elif [[ "${EUID:-$(id -u)}" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing Graphviz with apt-get"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; }; then
        say "warning: could not install Graphviz; 'archc draw' will not work (draw tests are skipped)."
    fi
else
    say "note: Graphviz 'dot' not found; install it for 'archc draw' (sudo apt-get install graphviz / brew install graphviz). Continuing without it."
fi

say "done"
