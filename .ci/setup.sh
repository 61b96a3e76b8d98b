# Sourced by .ci/run and examples/main.sh: a fresh virtualenv with everything the project needs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
VENV="${VENV:-$ROOT/.venv}"
make_venv "$VENV" test,plot
PY="$VENV/bin/python"
cd "$ROOT"
