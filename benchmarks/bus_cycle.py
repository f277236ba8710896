"""What one stage's read + commit cycle costs on this machine, against the raw socket floor.

    python benchmarks/bus_cycle.py [--redis-url redis://127.0.0.1:6379/13] [--n 3000]

Prints CPU and wall µs per cycle for: a raw-socket PING (the syscall floor), redis-py's
PING, and the bus's own cycle (``Consumer.read`` of one entry + ``Consumer.commit`` of one
output, one counter and the ack in MULTI/EXEC) on asyncio with uvloop. Uses (and flushes)
the given Redis database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from common.bus import Consumer, Outputs, Publisher, connect  # noqa: E402
from common.messages import Tick, TickBatch, TickType, encode  # noqa: E402


def per(n: int, c0: float, w0: float) -> str:
    return f"cpu {(time.process_time() - c0) / n * 1e6:7.1f} µs   wall {(time.perf_counter() - w0) / n * 1e6:7.1f} µs"


async def bus_cycle(url: str, n: int, fast_path: bool) -> str:
    r = connect(url)
    await r.flushdb()
    c = Consumer(r, "g", "c", {"in": TickBatch}, stats_key="stats:bench", block_ms=5, count=1,
                 fast_path=fast_path)
    await c.start()
    data = encode(TickBatch([Tick("AAA", TickType.TRADE, 1, 1, 10.0, 1.0)], ts_ingest=1))
    await Publisher(r, 1_000_000).publish([("in", data)] * n)
    done = 0
    c0, w0 = time.process_time(), time.perf_counter()
    while done < n:
        batch = await c.read()
        out = Outputs()
        for e in c.split(batch, out):
            out.incr("ticks")
            out.publish("out", e.msg)
            out.ack(e)
        await c.commit(out)
        done += len(batch)
    res = per(n, c0, w0)
    c.close()
    await r.flushdb()
    await r.aclose()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--n", type=int, default=3000)
    a = ap.parse_args()
    u = urlparse(a.redis_url)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, CPython {platform.python_version()}")
    if u.scheme == "unix":
        s = socket.socket(socket.AF_UNIX)
        s.connect(u.path)
    else:
        s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379))
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(a.n):
        s.sendall(b"PING\r\n")
        s.recv(64)
    print(f"raw socket PING             {per(a.n, c0, w0)}")
    s.close()
    r = redis.Redis.from_url(a.redis_url)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(a.n):
        r.ping()
    print(f"redis-py PING (sync)        {per(a.n, c0, w0)}")
    r.close()
    import uvloop

    uvloop.install()
    print(f"bus read+commit, redis-py   {asyncio.run(bus_cycle(a.redis_url, a.n, False))}")
    print(f"bus read+commit, lean RESP  {asyncio.run(bus_cycle(a.redis_url, a.n, True))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
