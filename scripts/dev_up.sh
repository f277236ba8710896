#!/usr/bin/env bash
# The development stack without Docker: .venv with the project, Redis (a private redis-server under
# $AITRADER_HOME when none answers at REDIS_URL), the database (SQLite under $AITRADER_HOME unless
# DATABASE_URL is set) migrated, the control panel built once when npm is there, then every service,
# a job worker and the API (scripts/start_pipeline.sh; idempotent: what runs is kept).
#
#   scripts/dev_up.sh                 # no Docker needed
#   scripts/dev_up.sh --docker        # the container stack instead (hostexecs/production.sh up), with dev
#                                     # secrets generated once under $AITRADER_HOME/secrets (needs Docker)
#   scripts/stop_pipeline.sh          # stop the Docker-less stack
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" = "--docker" ]; then
  if ! { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }; then
    echo "dev_up.sh: --docker needs Docker with the compose plugin; without it run scripts/dev_up.sh" >&2
    exit 1
  fi
  home="${AITRADER_HOME:-$ROOT/var}"
  mkdir -p "$home/secrets"
  gen() {  # NAME: a random URL-safe value, made once (0600)
    local f="$home/secrets/docker_$1"
    [ -s "$f" ] || (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$f")
    cat "$f"
  }
  export POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-$(gen postgres_password)}"
  export AITRADER_API_JWT_SECRET="${AITRADER_API_JWT_SECRET:-$(gen api_jwt_secret)}"
  export AITRADER_ADMIN_PASSWORD="${AITRADER_ADMIN_PASSWORD:-$(gen admin_password)}"
  echo "dev_up.sh: admin password in $home/secrets/docker_admin_password" >&2
  shift
  exec "$ROOT/hostexecs/production.sh" up "$@"
fi
[ $# -eq 0 ] || { echo "usage: scripts/dev_up.sh [--docker]" >&2; exit 2; }

if [ -z "${AITRADER_PYTHON:-}" ]; then  # an interpreter given in AITRADER_PYTHON is used as it is
  . scripts/_venv.sh
  ensure_venv
fi
. scripts/_lib.sh
build_panel_once dev_up.sh  # AITRADER_BUILD_PANEL=0 skips it (the API then serves no /ui/ until one is built)
exec "$ROOT/scripts/start_pipeline.sh"
