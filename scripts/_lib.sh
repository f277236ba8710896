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
# Stop the process of a pid file: SIGTERM, SIGKILL after AITRADER_STOP_TIMEOUT (20) seconds; the pid
# file and its .env (scripts/scale.sh) removed. Returns 1 when nothing was running.
stop_pidfile() {  # FILE NAME
  local f="$1" pid timeout="${AITRADER_STOP_TIMEOUT:-20}"
  if ! pid_alive "$f"; then rm -f "$f" "${f%.pid}.env"; return 1; fi
  pid="$(cat "$f")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((timeout * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$2 (pid $pid) did not stop in ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  else
    log "$2 stopped"
  fi
  rm -f "$f" "${f%.pid}.env"
}
# Build the control panel once (the API serves frontend/dist at /ui/) unless AITRADER_API_PANEL_DIR names
# another build or AITRADER_BUILD_PANEL=0; without npm, or when the build fails, the API runs without it.
build_panel_once() {  # WHO (the script, for its messages)
  [ -z "${AITRADER_API_PANEL_DIR:-}" ] && [ ! -f frontend/dist/index.html ] || return 0
  if [ "${AITRADER_BUILD_PANEL:-1}" = 0 ]; then
    echo "$1: AITRADER_BUILD_PANEL=0: the control panel is not built (the API runs without it)" >&2
  elif ! command -v npm >/dev/null 2>&1; then
    echo "$1: npm not found: the control panel is not built (the API runs without it)" >&2
  else
    echo "== building the control panel (once): npm ci && npm run build in frontend/ =="
    (cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent) \
      || echo "$1: the control panel could not be built; the API runs without it" >&2
  fi
}
