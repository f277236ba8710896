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
# Debian packages some tests drive (each skips with a message where it is missing): installed when missing
# and this runs as root with apt.
apt_install_missing() {  # PACKAGE WHAT PROGRAM... (present when any PROGRAM, a path or a name on PATH, runs)
  local pkg="$1" what="$2" p
  shift 2
  for p in "$@"; do command -v "$p" >/dev/null && return 0; done
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  echo "test.sh: installing $pkg for $what" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; } >/dev/null 2>&1 \
    || echo "test.sh: $pkg could not be installed; $what will skip" >&2
}
apt_install_missing chromium "the panel's end-to-end test (tests/frontend/test_panel.py)" /usr/bin/chromium
apt_install_missing nginx-light "the panel image's proxy test (tests/frontend/test_nginx.py)" nginx /usr/sbin/nginx
exec "$AITRADER_PYTHON" -m pytest "$@"
