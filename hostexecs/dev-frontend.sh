#!/usr/bin/env bash
# The control panel in development: Vite on http://localhost:5173/ui/ with hot reload, every
# other path (the API's routes and /ws) proxied to the API at AITRADER_PANEL_API
# (default http://127.0.0.1:8000; start it with `python -m backend.api`, see docs/api.md).
#   hostexecs/dev-frontend.sh
#   AITRADER_PANEL_API=http://127.0.0.1:8001 hostexecs/dev-frontend.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/frontend"
command -v npm >/dev/null || { echo "npm not found: the panel needs Node.js 20+ and npm" >&2; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
echo "panel: http://localhost:5173/ui/  (API: ${AITRADER_PANEL_API:-http://127.0.0.1:8000})"
exec npx vite --host 127.0.0.1 --port 5173
