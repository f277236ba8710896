#!/usr/bin/env bash
# The main job, from a fresh machine: install into .venv, build the control panel (npm), start
# the pipeline and the API serving the panel (private Redis if none answers, SQLite by default),
# replay ticks — synthetic by default, or the files given — then print the run report and where
# to look next. The pipeline and the panel keep running until scripts/stop_pipeline.sh.
#
#   hostexecs/quick-start.sh                                  # synthetic ticks
#   hostexecs/quick-start.sh ../shared/data/quantconnect_lean/equity_tick/20131007_bac_*.csv.gz
#   hostexecs/quick-start.sh --speed 50 FILE...               # any `aitrader replay` option
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
. scripts/_venv.sh
ensure_venv
. scripts/_lib.sh
scripts/run_migrations.sh
# The pattern engine's ML detector (config/pattern.yml: ml_demo) follows the registry model
# `demo_mlp`. The first run trains it (~10 s) on a synthetic market seeded differently from the
# replay's, registers and promotes it. AITRADER_DEMO_MODEL=0 skips this (the detector stays idle).
if [ "${AITRADER_DEMO_MODEL:-1}" != 0 ] && ! aitrader model show demo_mlp >/dev/null 2>&1; then
  echo "== training the demo model (once): aitrader model train --synthetic 200000 --horizon 20 =="
  aitrader model train --synthetic 200000 --horizon 20 --name demo_mlp --out "$AITRADER_HOME/bundles/demo_mlp" \
    --promote --reason "quick-start demo model"
fi
build_panel_once quick-start
scripts/start_pipeline.sh
if [ $# -eq 0 ]; then
  # The synthetic default (100k ticks, ~90 s of market time) at 10x real time: ~11k ticks/s.
  set -- --speed 10
fi
echo "== replaying: aitrader replay $* =="
aitrader replay "$@"
echo "== report =="
aitrader report --wait-idle "${AITRADER_REPORT_WAIT:-300}" || true
cat <<MSG

Next (aitrader is .venv/bin/aitrader: \`source .venv/bin/activate\` puts it on PATH):
  control panel: http://${AITRADER_API_HOST:-127.0.0.1}:$(cat "$AITRADER_HOME/pids/backend.api.port" 2>/dev/null || echo "${AITRADER_API_PORT:-8000}")/ui/ (user admin; password: $AITRADER_HOME/secrets/admin_password unless AITRADER_ADMIN_PASSWORD was set)
  aitrader status                     services' health and stream lag
  aitrader report --json              the run as JSON
  aitrader kill engage --reason "..." halt trading (release needs --reason too)
  aitrader replay FILE... [--speed X] replay more ticks (formats: docs/data-formats.md)
  aitrader model list                 the registry's models (train, promote, report: docs/models.md)
  logs in $AITRADER_HOME/logs, database $( [ -n "${DATABASE_URL:-}" ] && echo "$DATABASE_URL" || echo "$AITRADER_HOME/aitrader.db")
  scripts/stop_pipeline.sh            stop everything
MSG
