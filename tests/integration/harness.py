"""Start the real services as separate processes against a real Redis and database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("mock_mcp", "execution", "strategy_engine", "pattern_engine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pipeline:
    """The four services as processes, with their own Redis db, database and home folder."""

    def __init__(self, redis_url: str, database_url: str, home: Path, extra_env: dict[str, str] | None = None):
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.database_url = database_url
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
        env.update(
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            AITRADER_HOME=str(home),
            AITRADER_MCP_PORT=str(port),
            AITRADER_SE_MCP_URL=f"http://127.0.0.1:{port}/mcp",
            AITRADER_HEARTBEAT_S="0.5",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [sys.executable, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and p.returncode != 0:
            raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
        return p

    def migrate(self) -> None:
        self.run("-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head")

    def start(self, services: tuple[str, ...] = SERVICES, timeout: float = 60) -> None:
        self.migrate()
        for svc in services:
            log = open(self.home / f"{svc}.log", "ab")
            self.procs[svc] = subprocess.Popen(
                [sys.executable, "-m", svc], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
            self.wait_healthy(svc, timeout)

    def wait_healthy(self, svc: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs.get(svc)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{svc} exited with {proc.returncode}:\n{self.log(svc)}")
            if self.run("-m", svc, "--check", check=False, timeout=30).returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"{svc} not healthy within {timeout}s:\n{self.log(svc)}")

    def log(self, svc: str) -> str:
        p = self.home / f"{svc}.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def stop(self, timeout: float = 30) -> dict[str, int]:
        codes = {}
        for svc in reversed(list(self.procs)):
            proc = self.procs[svc]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for svc, proc in self.procs.items():
            try:
                codes[svc] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[svc] = proc.wait()
        self.procs.clear()
        return codes

    def replay(self, *args: str, timeout: float = 600) -> dict:
        p = self.run("-m", "backend.cli", "replay", *args, "--json", "--no-progress", timeout=timeout)
        return json.loads(p.stdout)

    def report(self, wait_idle: float = 180) -> dict:
        p = self.run("-m", "backend.cli", "report", "--json", "--wait-idle", str(wait_idle),
                     timeout=wait_idle + 60, check=False)
        if p.returncode not in (0, 1):
            raise AssertionError(f"report failed: {p.stderr[-3000:]}")
        return json.loads(p.stdout)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
