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
exec "$AITRADER_PYTHON" -m pytest "$@"
