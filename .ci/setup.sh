# Sourced by .ci/run and examples/main.sh: a fresh virtualenv with everything the project needs.
# torch is pinned: its CPU wheel is what this machine has; an unpinned torch pulls GBs of CUDA.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
VENV="${VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e "$ROOT[test,plot]"
PY="$VENV/bin/python"
cd "$ROOT"
