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
# backend.api serves the HTTP API and the built control panel (/ui/).
SERVICES=(mock_mcp execution strategy_engine pattern_engine backend.jobs.worker backend.api)
# Each service serves Prometheus /metrics on its own port (docs/operations.md); 0 turns one off.
# A port the user set is used as is (taken: that service refuses to start, naming the setting); a
# default that something already listens on moves up to the next free one, so the quick start never
# fails on a busy 91xx port.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
default_metrics_port() {  # VAR DEFAULT
  local var="$1" p="$2"
  if [ -n "${!var:-}" ]; then export "${var?}"; return; fi
  while port_busy "$p" && [ "$p" -lt $(($2 + 200)) ]; do p=$((p + 5)); done
  export "$var=$p"
}
default_metrics_port AITRADER_MCP_METRICS_PORT 9101
default_metrics_port AITRADER_EX_METRICS_PORT 9102
default_metrics_port AITRADER_SE_METRICS_PORT 9103
default_metrics_port AITRADER_PE_METRICS_PORT 9104
default_metrics_port AITRADER_JOBS_METRICS_PORT 9105
# The setting holding a service's metrics port.
metrics_var() {
  case "$1" in
    mock_mcp) echo AITRADER_MCP_METRICS_PORT ;;
    execution) echo AITRADER_EX_METRICS_PORT ;;
    strategy_engine) echo AITRADER_SE_METRICS_PORT ;;
    pattern_engine) echo AITRADER_PE_METRICS_PORT ;;
    backend.jobs.worker) echo AITRADER_JOBS_METRICS_PORT ;;
  esac
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
