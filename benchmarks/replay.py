"""Replay throughput into the bus: ticks/s and entries/s of ``tick_replay.replay`` at max speed.

Three figures:

1. ``synthetic (pre-loaded)`` — N synthetic ticks built in memory first, so only batching,
   encoding and pipelined XADD are timed;
2. ``file (read only)`` — the real file through reader + merge + Tick construction, no Redis;
3. ``file (end to end)`` — the same file from disk into the bus (reading, normalising,
   publishing), the figure that matters for replaying real data.

Usage::

    python benchmarks/replay.py [--redis-url URL] [--synthetic N] [--file PATH] [--shards N]
                                [--batch-max N] [--repeat N] [--json] [--force]

Defaults: REDIS_URL, else redis://127.0.0.1:6379/1; 500,000 synthetic ticks; the BAC
quote day 2013-10-08 from ../shared/data. The streams it writes are deleted afterwards;
it refuses to run against md:ticks streams that already exist (a live pipeline) unless
``--force``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import deque
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.streams import ticks_stream
from tick_replay import open_ticks, replay, synthetic_ticks

DEFAULT_FILE = ROOT.parent / "shared" / "data" / "quantconnect_lean" / "equity_tick" / "20131008_bac_Quote_Tick.csv.gz"
TARGET_TICKS_PER_S = 50_000


def _machine(url: str) -> dict:
    r = redis.Redis.from_url(url)
    try:
        info = r.info("server")
    finally:
        r.close()
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "redis": info.get("redis_version"),
        "redis_url": url,
        "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _clear(url: str, shards: int) -> None:
    r = redis.Redis.from_url(url)
    try:
        r.delete(*[ticks_stream(s) for s in range(shards)])
    finally:
        r.close()


def _run(url: str, ticks, shards: int, batch_max: int) -> dict:
    summary = asyncio.run(replay(url, ticks, speed=None, shards=shards, batch_max=batch_max, progress=False))
    _clear(url, shards)
    return {
        "ticks": summary.ticks,
        "entries": summary.entries,
        "seconds": round(summary.duration_s, 4),
        "ticks_per_s": round(summary.ticks_per_s),
        "entries_per_s": round(summary.entries_per_s),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"))
    p.add_argument("--synthetic", type=int, default=500_000, metavar="N")
    p.add_argument("--file", type=Path, default=DEFAULT_FILE)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--batch-max", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per figure")
    p.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true", help="run even if md:ticks streams exist (they are deleted)")
    args = p.parse_args(argv)

    r = redis.Redis.from_url(args.redis_url)
    try:
        existing = [s for s in (ticks_stream(i) for i in range(args.shards)) if r.exists(s)]
    finally:
        r.close()
    if existing and not args.force:
        print(f"refusing: {', '.join(existing)} exist at {args.redis_url} (a live pipeline?); use --force",
              file=sys.stderr)
        return 2

    results: dict = {"machine": _machine(args.redis_url), "shards": args.shards, "batch_max": args.batch_max}
    preloaded = list(synthetic_ticks(args.synthetic))
    runs = [_run(args.redis_url, preloaded, args.shards, args.batch_max) for _ in range(args.repeat)]
    results["synthetic_preloaded"] = max(runs, key=lambda x: x["ticks_per_s"])
    del preloaded

    if args.file.is_file():
        best = None
        for _ in range(args.repeat):
            src = open_ticks([args.file])
            t0 = time.perf_counter()
            deque(src, maxlen=0)
            dt = time.perf_counter() - t0
            n = src.stats[0].ticks
            if best is None or dt < best["seconds"]:
                best = {"rows": src.stats[0].rows, "ticks": n, "seconds": round(dt, 4),
                        "rows_per_s": round(src.stats[0].rows / dt), "ticks_per_s": round(n / dt)}
        results["file"] = str(args.file)
        results["file_read_only"] = best
        runs = [_run(args.redis_url, open_ticks([args.file]), args.shards, args.batch_max) for _ in range(args.repeat)]
        results["file_end_to_end"] = max(runs, key=lambda x: x["ticks_per_s"])
    else:
        results["file"] = f"{args.file} (absent: skipped)"

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    m = results["machine"]
    print(f"machine: {m['cpus']} cpus ({m['cpu']}), python {m['python']}, redis {m['redis']} at {m['redis_url']}, "
          f"load {m['loadavg']}")
    print(f"shards {args.shards}, batch_max {args.batch_max}, best of {args.repeat}")
    s = results["synthetic_preloaded"]
    print(f"synthetic pre-loaded : {s['ticks']:>9,} ticks {s['seconds']:>7.3f} s {s['ticks_per_s']:>11,} ticks/s "
          f"{s['entries_per_s']:>9,} entries/s")
    if "file_end_to_end" in results:
        f, e = results["file_read_only"], results["file_end_to_end"]
        print(f"file: {results['file']}")
        print(f"file read only       : {f['ticks']:>9,} ticks {f['seconds']:>7.3f} s {f['ticks_per_s']:>11,} ticks/s "
              f"({f['rows']:,} rows, {f['rows_per_s']:,} rows/s)")
        print(f"file end to end      : {e['ticks']:>9,} ticks {e['seconds']:>7.3f} s {e['ticks_per_s']:>11,} ticks/s "
              f"{e['entries_per_s']:>9,} entries/s")
    worst = min(v["ticks_per_s"] for k, v in results.items() if k in ("synthetic_preloaded", "file_end_to_end"))
    print(f"target >= {TARGET_TICKS_PER_S:,} ticks/s into the bus: {'met' if worst >= TARGET_TICKS_PER_S else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
