#!/usr/bin/env bash
# Stop the services (SIGTERM, then SIGKILL after a timeout), print each log's last lines,
# and stop the private Redis if start_pipeline.sh started one (its append-only file stays).
set -euo pipefail
. "$(dirname "$0")/_lib.sh"
TIMEOUT="${AITRADER_STOP_TIMEOUT:-20}"

for ((i=${#SERVICES[@]}-1; i>=0; i--)); do
  svc="${SERVICES[$i]}"
  pidf="$AITRADER_HOME/pids/$svc.pid"
  if ! pid_alive "$pidf"; then rm -f "$pidf"; continue; fi
  pid="$(cat "$pidf")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((TIMEOUT * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$svc (pid $pid) did not stop in ${TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  else
    log "$svc stopped"
  fi
  rm -f "$pidf"
  echo "---- last lines of $svc.log ----"
  tail -n "${AITRADER_LOG_LINES:-5}" "$AITRADER_HOME/logs/$svc.log" 2>/dev/null || true
done
if [ "${1:-}" != "--keep-redis" ]; then
  "$AITRADER_PYTHON" -m common.redis_server stop --home "$AITRADER_HOME"
fi
