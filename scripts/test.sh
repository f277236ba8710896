#!/usr/bin/env bash
# Run every test: installs the project with its dev extras into .venv, then pytest.
# Uses REDIS_URL / 127.0.0.1:6379 if a Redis answers (else the tests start a private one)
# and DATABASE_URL when set (PostgreSQL in CI; SQLite files otherwise).
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/unit -x   # any pytest arguments
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. scripts/_venv.sh
ensure_venv dev
# The control panel's end-to-end test drives Debian's chromium (tests/frontend/test_panel.py); install it
# when missing and this runs as root with apt (elsewhere the test skips with a message saying so).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing chromium for the panel's end-to-end test" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "test.sh: chromium could not be installed; the panel's end-to-end test will skip" >&2
fi
exec "$AITRADER_PYTHON" -m pytest "$@"
