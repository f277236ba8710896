# Shared helpers for the scripts (sourced, not run).
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export AITRADER_HOME="${AITRADER_HOME:-$ROOT/var}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
mkdir -p "$AITRADER_HOME/logs" "$AITRADER_HOME/pids"
AITRADER_HOME="$(cd "$AITRADER_HOME" && pwd)"
export AITRADER_HOME
if [ -z "${AITRADER_PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then AITRADER_PYTHON="$ROOT/.venv/bin/python"; else AITRADER_PYTHON="$(command -v python3.11 || command -v python3)"; fi
fi
export AITRADER_PYTHON
# Services started by start_pipeline.sh, in start order (stop goes in reverse); backend.jobs.worker runs
# jobs (docs/jobs.md): more of them, here or on other machines, share the same REDIS_URL and DATABASE_URL.
SERVICES=(mock_mcp execution strategy_engine pattern_engine backend.jobs.worker)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
