#!/usr/bin/env bash
# Start the pipeline in the background: Redis (private one if none answers at REDIS_URL),
# migrations, then each service with pid and log files under $AITRADER_HOME, and prints each
# one's /metrics address (ports: scripts/_lib.sh). Idempotent.
set -euo pipefail
. "$(dirname "$0")/_lib.sh"

"$AITRADER_PYTHON" -m common.redis_server ensure --url "$REDIS_URL" --home "$AITRADER_HOME"
"$ROOT/scripts/run_migrations.sh"

for svc in "${SERVICES[@]}"; do
  pidf="$AITRADER_HOME/pids/$svc.pid"
  if pid_alive "$pidf"; then
    log "$svc already running (pid $(cat "$pidf"))"
    continue
  fi
  nohup "$AITRADER_PYTHON" -m "$svc" >>"$AITRADER_HOME/logs/$svc.log" 2>&1 &
  echo $! >"$pidf"
  log "started $svc (pid $!, log $AITRADER_HOME/logs/$svc.log)"
  # Wait for health before starting the next one (the strategy engine needs mock_mcp).
  for _ in $(seq 1 "${AITRADER_START_TIMEOUT:-60}"); do
    if "$AITRADER_PYTHON" -m "$svc" --check >/dev/null 2>&1; then break; fi
    if ! pid_alive "$pidf"; then
      tail -n 30 "$AITRADER_HOME/logs/$svc.log" >&2 || true
      die "$svc exited during start (see $AITRADER_HOME/logs/$svc.log)"
    fi
    sleep 1
  done
  "$AITRADER_PYTHON" -m "$svc" --check >/dev/null 2>&1 || die "$svc not healthy in time (see $AITRADER_HOME/logs/$svc.log)"
  log "$svc healthy"
done
log "pipeline up: REDIS_URL=$REDIS_URL home=$AITRADER_HOME"
for svc in "${SERVICES[@]}"; do
  var="$(metrics_var "$svc")"
  if [ "${!var}" != 0 ]; then log "metrics: $svc http://${AITRADER_METRICS_HOST:-127.0.0.1}:${!var}/metrics ($var)"; fi
done
