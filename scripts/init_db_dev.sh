#!/usr/bin/env bash
# Development database from scratch: remove the SQLite file (never a DATABASE_URL one), migrate.
set -euo pipefail
. "$(dirname "$0")/_lib.sh"
if [ -z "${DATABASE_URL:-}" ]; then
  rm -f "$AITRADER_HOME/aitrader.db" "$AITRADER_HOME/aitrader.db-wal" "$AITRADER_HOME/aitrader.db-shm"
  log "removed $AITRADER_HOME/aitrader.db"
else
  log "DATABASE_URL is set: not dropping anything, only migrating"
fi
"$ROOT/scripts/run_migrations.sh"
