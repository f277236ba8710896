#!/usr/bin/env python3
"""Write the panel's TypeScript API types (frontend/src/api/schema.ts) from the API's OpenAPI schema.

The app is built as ``python -m backend.api`` builds it, on a throwaway migrated SQLite database with
a throwaway secret and no ``AITRADER_*`` from the environment (so the schema is the code's, not the
machine's); its ``/openapi.json`` goes through ``openapi-typescript`` (frontend's devDependency, so
``npm ci`` in frontend/ first).

    python scripts/gen_api_client.py           # rewrite frontend/src/api/schema.ts
    python scripts/gen_api_client.py --check   # exit 1 when the committed file is stale (a test runs this)
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FRONTEND = ROOT / "frontend"
OUT = FRONTEND / "src" / "api" / "schema.ts"
TOOL = FRONTEND / "node_modules" / ".bin" / "openapi-typescript"


def openapi_schema(workdir: Path) -> dict:
    """The API's OpenAPI document, from an app built on a fresh SQLite database in ``workdir``."""
    for key in list(os.environ):
        if key.startswith("AITRADER_") or key in ("REDIS_URL", "DATABASE_URL"):
            del os.environ[key]
    os.chdir(workdir)  # no .env of the checkout is read
    from backend.api import create_app
    from backend.api.config import AdminSettings, ApiSettings
    from common.config import CommonSettings
    from common.db import migrate

    url = f"sqlite:///{workdir / 'schema.db'}"
    migrate(url)
    app = create_app(ApiSettings(jwt_secret=secrets.token_urlsafe(48)),
                     common=CommonSettings(database_url=url, home=str(workdir)),
                     admin=AdminSettings(username="", password=""))
    try:
        return app.openapi()
    finally:
        app.state.jobs.queue.close()
        app.state.ctx.engine.dispose()


def generate(target: Path) -> None:
    """Write the TypeScript types for the current schema to ``target``."""
    if not TOOL.exists():
        sys.exit(f"gen_api_client: {TOOL.relative_to(ROOT)} missing: run `npm ci` in frontend/ first")
    with tempfile.TemporaryDirectory(prefix="aitrader-openapi-") as tmp:
        work = Path(tmp)
        spec = work / "openapi.json"
        spec.write_text(json.dumps(openapi_schema(work), indent=1, sort_keys=True))
        subprocess.run([str(TOOL), str(spec), "--output", str(target)], check=True, cwd=FRONTEND,
                       stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--check":
        with tempfile.TemporaryDirectory(prefix="aitrader-schema-ts-") as tmp:
            fresh = Path(tmp) / "schema.ts"
            generate(fresh)
            if not OUT.exists() or OUT.read_text() != fresh.read_text():
                print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/gen_api_client.py", file=sys.stderr)
                return 1
        print(f"{OUT.relative_to(ROOT)} is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    generate(OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
