# Sourced by .ci/run and examples/main.sh: a fresh virtualenv with everything the project needs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# The viewer's browser tests (tests/e2e/test_view.py) need headless Chromium. CI requires them
# (SOFTREASON_REQUIRE_BROWSER=1, exported by .ci/run; CI runs as root), so it installs the
# browser where it is missing; other callers (examples/main.sh) do not need it.
if [ "${SOFTREASON_REQUIRE_BROWSER:-}" = 1 ] \
        && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
VENV="${VENV:-$ROOT/.venv}"
make_venv "$VENV" test,plot
PY="$VENV/bin/python"
cd "$ROOT"
