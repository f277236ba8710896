"""Start the real services as separate processes against a real Redis and database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("mock_mcp", "execution", "strategy_engine", "pattern_engine")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), for the benchmarks' CPU per message."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_setup(prefix: str) -> tuple[str, str, Path]:
    """(redis_url, database_url, home) of a benchmark's private run.

    Redis: ``REDIS_URL``'s server (TCP or ``unix://``) at db ``BENCH_REDIS_DB`` (default 12),
    flushed; the database: ``DATABASE_URL`` or SQLite in a new temporary home folder."""
    base, db = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), os.environ.get("BENCH_REDIS_DB", "12")
    if base.startswith("unix:"):  # unix:///path/redis.sock[?db=N]
        redis_url = f"{base.split('?', 1)[0]}?db={db}"
    else:
        redis_url = f"{base.rsplit('/', 1)[0]}/{db}"
    redis.Redis.from_url(redis_url).flushdb()
    home = Path(tempfile.mkdtemp(prefix=prefix))
    return redis_url, os.environ.get("DATABASE_URL") or f"sqlite:///{home / 'bench.db'}", home


def open_risk_env(home: Path, *, triggers_off: bool = False, **glob) -> dict[str, str]:
    """Gateway settings pointing at the shipped risk file with its ``global`` limits replaced
    by ``glob`` (and, with ``triggers_off``, the automatic kill triggers disabled): for drills
    and benchmarks that measure a path the shipped throttles would otherwise refuse."""
    doc = yaml.safe_load((ROOT / "config" / "risk.yml").read_text())
    doc["global"].update(glob)
    if triggers_off:
        doc["kill_triggers"] = {k: None if k not in ("message_rate_window_s", "upstream_services") else v
                                for k, v in doc.get("kill_triggers", {}).items()}
    home.mkdir(parents=True, exist_ok=True)
    path = home / "open-risk.yml"
    path.write_text(yaml.safe_dump(doc))
    return {"AITRADER_EX_RISK_FILE": str(path)}


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
