#!/usr/bin/env bash
# Start the pipeline in the background: Redis (private one if none answers at REDIS_URL),
# migrations, then each service with pid and log files under $AITRADER_HOME, and prints each
# one's /metrics address (ports: scripts/_lib.sh). Idempotent.
set -euo pipefail
. "$(dirname "$0")/_lib.sh"

"$AITRADER_PYTHON" -m common.redis_server ensure --url "$REDIS_URL" --home "$AITRADER_HOME"
"$ROOT/scripts/run_migrations.sh"

# The API (and the panel it serves) needs a signing key and a first admin. Unless the environment or
# .env gives them, the first start makes both under $AITRADER_HOME/secrets (0600) and later starts reuse
# them; the admin's password is printed below and stays in that file.
secret_file() {  # NAME: the file's contents, created with a random value the first time
  local f="$AITRADER_HOME/secrets/$1"
  if [ ! -s "$f" ]; then
    (umask 077; mkdir -p "$AITRADER_HOME/secrets"; "$AITRADER_PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$f")
  fi
  cat "$f"
}
if [ -z "${AITRADER_API_JWT_SECRET:-}" ]; then export AITRADER_API_JWT_SECRET="$(secret_file api_jwt_secret)"; fi
if [ -z "${AITRADER_ADMIN_USERNAME:-}${AITRADER_ADMIN_PASSWORD:-}" ]; then
  export AITRADER_ADMIN_USERNAME=admin AITRADER_ADMIN_PASSWORD="$(secret_file admin_password)"
  ADMIN_NOTE="log in as admin, password in $AITRADER_HOME/secrets/admin_password"
fi
if [ -z "${AITRADER_API_PORT:-}" ]; then  # 8000, or the next free port; a running API keeps its own
  if pid_alive "$AITRADER_HOME/pids/backend.api.pid" && [ -s "$AITRADER_HOME/pids/backend.api.port" ]; then
    p="$(cat "$AITRADER_HOME/pids/backend.api.port")"
  else
    p=8000
    while port_busy "$p" && [ "$p" -lt 8100 ]; do p=$((p + 1)); done
  fi
  export AITRADER_API_PORT="$p"
fi
echo "$AITRADER_API_PORT" >"$AITRADER_HOME/pids/backend.api.port"

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
  if [ -n "$var" ] && [ "${!var}" != 0 ]; then
    log "metrics: $svc http://${AITRADER_METRICS_HOST:-127.0.0.1}:${!var}/metrics ($var)"
  fi
done
panel="http://${AITRADER_API_HOST:-127.0.0.1}:$AITRADER_API_PORT"
log "API: $panel/docs (metrics: $panel/metrics)"
if [ -f "${AITRADER_API_PANEL_DIR:-$ROOT/frontend/dist}/index.html" ]; then
  log "control panel: $panel/ui/${ADMIN_NOTE:+ ($ADMIN_NOTE)}"
else
  log "control panel: not built (cd frontend && npm ci && npm run build), then $panel/ui/"
fi
