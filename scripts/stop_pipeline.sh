#!/usr/bin/env bash
# Stop the services and the extra instances scripts/scale.sh started (SIGTERM, then SIGKILL after a
# timeout), print each log's last lines, and stop the private Redis if start_pipeline.sh started one
# (its append-only file stays).
set -euo pipefail
. "$(dirname "$0")/_lib.sh"

for ((i=${#SERVICES[@]}-1; i>=0; i--)); do
  # the service, then the extra instances scripts/scale.sh started (<service>@<n>.pid)
  for pidf in "$AITRADER_HOME/pids/${SERVICES[$i]}@"*.pid "$AITRADER_HOME/pids/${SERVICES[$i]}.pid"; do
    [ -e "$pidf" ] || continue
    svc="$(basename "$pidf" .pid)"
    stop_pidfile "$pidf" "$svc" || continue
    echo "---- last lines of $svc.log ----"
    tail -n "${AITRADER_LOG_LINES:-5}" "$AITRADER_HOME/logs/$svc.log" 2>/dev/null || true
  done
done
if [ "${1:-}" != "--keep-redis" ]; then
  "$AITRADER_PYTHON" -m common.redis_server stop --home "$AITRADER_HOME"
fi
