#!/usr/bin/env bash
# Everything for working on the panel: the pipeline and the API (scripts/start_pipeline.sh, idempotent:
# what already runs is kept), then Vite on http://localhost:5173/ui/ with hot reload, proxying the API's
# routes and /ws to the port the API was started on ($AITRADER_HOME/pids/backend.api.port).
#   hostexecs/dev-fullstack.sh
# Ctrl-C stops Vite only: the pipeline keeps running (a reload of the panel finds it) until
# scripts/stop_pipeline.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. scripts/_venv.sh
ensure_venv
"$ROOT/scripts/start_pipeline.sh"
. scripts/_lib.sh
port_file="$AITRADER_HOME/pids/backend.api.port"
[ -s "$port_file" ] || { echo "no API port in $port_file: did scripts/start_pipeline.sh start backend.api?" >&2; exit 1; }
export AITRADER_PANEL_API="http://${AITRADER_API_HOST:-127.0.0.1}:$(cat "$port_file")"
echo "pipeline and API running (API $AITRADER_PANEL_API); Ctrl-C stops Vite only, scripts/stop_pipeline.sh stops the pipeline"
exec "$ROOT/hostexecs/dev-frontend.sh"
