#!/usr/bin/env bash
# The main job: set up .venv, then compile, summarise and draw a spec.
#
#   bash scripts/run.sh                          # specs/googlenet.yaml
#   SPEC=specs/other.yaml bash scripts/run.sh    # another spec
#
# Artifacts go to build/<NAME>/, where NAME is the spec file's stem.
set -euo pipefail

CALLER_PWD="$PWD"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bash "$ROOT/scripts/setup.sh"
cd "$ROOT"

SPEC="${SPEC:-specs/googlenet.yaml}"
# A relative SPEC may be given relative to the caller's directory or the repo root.
if [[ "$SPEC" != /* && ! -e "$SPEC" && -e "$CALLER_PWD/$SPEC" ]]; then
    SPEC="$CALLER_PWD/$SPEC"
fi
if [[ ! -f "$SPEC" ]]; then
    echo "[run] error: spec file not found: $SPEC" >&2
    exit 1
fi

NAME="$(basename "$SPEC")"
NAME="${NAME%.*}"
OUT="build/$NAME"
ARCHC="$ROOT/.venv/bin/archc"

echo
echo "== archc build $SPEC -o $OUT"
"$ARCHC" build "$SPEC" -o "$OUT"

echo
echo "== archc summary $SPEC --depth 1"
"$ARCHC" summary "$SPEC" --depth 1

echo
if command -v dot >/dev/null 2>&1; then
    echo "== archc draw $SPEC -o $OUT/$NAME.svg"
    "$ARCHC" draw "$SPEC" -o "$OUT/$NAME.svg"
else
    echo "== skipping 'archc draw': Graphviz 'dot' is not installed (sudo apt-get install graphviz / brew install graphviz)"
fi

echo
echo "Artifacts in $ROOT/$OUT:"
ls -1 "$OUT" | sed 's/^/  /'
