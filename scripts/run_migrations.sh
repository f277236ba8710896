#!/usr/bin/env bash
# Bring the database (DATABASE_URL, else SQLite under $AITRADER_HOME) to the latest schema.
set -euo pipefail
. "$(dirname "$0")/_lib.sh"
"$AITRADER_PYTHON" -m alembic -c "$ROOT/alembic.ini" upgrade head
log "database at head"
