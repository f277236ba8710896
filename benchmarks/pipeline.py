"""Drive the running pipeline at open-loop tick rates and print per-stage latency and throughput.

    python benchmarks/pipeline.py                      # start a private pipeline (own Redis db, SQLite)
    python benchmarks/pipeline.py --attach             # use the pipeline started by scripts/start_pipeline.sh
    python benchmarks/pipeline.py --rates 1000 10000 max --seconds 10

For each rate the benchmark publishes synthetic ticks on a fixed schedule (tick i is
due at t0 + i/rate, independent of how fast the pipeline answers: open loop; ticks due
together go out in one entry per shard — natural batching), waits until every consumer
group has drained, then reads the stamps carried by the signals, intents and execution
reports of that run and prints p50/p99/p999 per stage. ``max`` publishes as fast as
possible and reports the sustained throughput of each stage. The floor — one XADD
followed by one XREADGROUP on the same Redis, one at a time — is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from common import streams  # noqa: E402
from common.bus import Publisher, connect, wait_drained  # noqa: E402
from common.latency import LatencyHistogram  # noqa: E402
from common.messages import ExecutionReport, OrderIntent, Signal, TickBatch, decode_as, encode  # noqa: E402


def _hsum(h: LatencyHistogram) -> str:
    s = h.summary()
    return f"n={s['count']:>7,}  p50={s['p50']:>7,}µs  p99={s['p99']:>7,}µs  p999={s['p999']:>7,}µs  max={s['max']:>8,}µs"


async def redis_floor(r: aioredis.Redis, n: int = 2000) -> dict:
    """One XADD then one XREADGROUP, one at a time: the bus hop every stage pays."""
    stream, group = "bench:floor", "bench"
    await r.delete(stream)
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    rtt, ping = LatencyHistogram(), LatencyHistogram()
    for _ in range(200):
        await r.ping()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await r.ping()
        ping.record_ns(time.perf_counter_ns() - t0)
    for _ in range(n):
        t0 = time.perf_counter_ns()
        await r.xadd(stream, {b"d": b"x" * 100})
        resp = await r.xreadgroup(group, "c", {stream: ">"}, count=1)
        await r.xack(stream, group, resp[0][1][0][0])
        rtt.record_ns(time.perf_counter_ns() - t0)
    await r.delete(stream)
    return {"ping": ping, "xadd_xreadgroup_xack": rtt}


async def publish_open_loop(r: aioredis.Redis, ticks: list, rate: float | None, shards: int) -> tuple[float, int]:
    """Publish ``ticks`` at ``rate`` ticks/s (None = as fast as possible); returns (seconds, entries)."""
    pub = Publisher(r, 1_000_000)
    entries = 0
    t0 = time.perf_counter()
    i, n = 0, len(ticks)
    while i < n:
        if rate is None:
            j = min(n, i + 256)
        else:
            now = time.perf_counter() - t0
            j = min(n, int(now * rate) + 1)
            if j <= i:
                await asyncio.sleep(max(0.0, (i / rate) - now))
                continue
        per_shard: dict[int, list] = {}
        for t in ticks[i:j]:
            per_shard.setdefault(streams.shard_for(t.symbol, shards), []).append(t)
        now_ns = time.time_ns()
        items = [(streams.ticks_stream(s), encode(TickBatch(b, ts_ingest=now_ns))) for s, b in per_shard.items()]
        await pub.publish(items)
        entries += len(items)
        i = j
    return time.perf_counter() - t0, entries


async def drain_time(r: aioredis.Redis, pe_target: int, timeout: float) -> float:
    """Seconds until the pattern engine counted ``pe_target`` ticks and every group drained."""
    t0 = time.perf_counter()
    while int(await r.hget(streams.stats_key(streams.GROUP_PATTERN), "ticks") or 0) < pe_target:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("pipeline did not drain")
        await asyncio.sleep(0.02)
    if not await wait_drained(r, None, timeout - (time.perf_counter() - t0), poll_s=0.02):
        raise TimeoutError("pipeline did not drain")
    return time.perf_counter() - t0


async def stage_latencies(r: aioredis.Redis, since: dict[str, bytes]) -> dict[str, LatencyHistogram]:
    h = {s: LatencyHistogram() for s in ("tick_to_signal", "signal_to_intent", "intent_to_fill", "tick_to_fill")}
    for _id, f in await r.xrange(streams.SIGNALS, min=since[streams.SIGNALS]):
        s = decode_as(f[b"d"], Signal)
        h["tick_to_signal"].record_ns(s.ts_signal - s.ts_ingest)
    for _id, f in await r.xrange(streams.INTENTS, min=since[streams.INTENTS]):
        i = decode_as(f[b"d"], OrderIntent)
        h["signal_to_intent"].record_ns(i.ts_intent - i.ts_signal)
    for _id, f in await r.xrange(streams.EXEC_EVENTS, min=since[streams.EXEC_EVENTS]):
        e = decode_as(f[b"d"], ExecutionReport)
        if e.last_qty > 0:
            h["intent_to_fill"].record_ns(e.ts_exec - e.ts_intent)
            h["tick_to_fill"].record_ns(e.ts_exec - e.ts_ingest)
    return h


async def _last_ids(r: aioredis.Redis) -> dict[str, bytes]:
    out = {}
    for s in (streams.SIGNALS, streams.INTENTS, streams.EXEC_EVENTS):
        last = await r.xrevrange(s, count=1)
        # exclusive start: the next id after the last one
        out[s] = b"(" + last[0][0] if last else b"-"
    return out


async def run_rate(r: aioredis.Redis, rate: float | None, seconds: float, max_ticks: int, shards: int,
                   seed: int, symbols: int) -> dict:
    import tick_replay

    n = max_ticks if rate is None else int(rate * seconds)
    ticks = list(tick_replay.synthetic_ticks(n, symbols=symbols, seed=seed))
    since = await _last_ids(r)
    pe0 = int(await r.hget(streams.stats_key(streams.GROUP_PATTERN), "ticks") or 0)
    t_pub, entries = await publish_open_loop(r, ticks, rate, shards)
    t_drain = await drain_time(r, pe0 + n, timeout=max(120.0, seconds * 10))
    h = await stage_latencies(r, since)
    return {
        "rate": "max" if rate is None else rate,
        "ticks": n,
        "entries": entries,
        "publish_s": t_pub,
        "publish_ticks_per_s": n / t_pub,
        "drain_s": t_drain,
        "sustained_ticks_per_s": n / (t_pub + t_drain),
        "hist": h,
    }


async def main_async(a: argparse.Namespace, redis_url: str) -> dict:
    r = connect(redis_url)
    info = await r.info("server")
    floor = await redis_floor(r)
    results = []
    for i, rate in enumerate(a.rates):
        rv = None if rate == "max" else float(rate)
        res = await run_rate(r, rv, a.seconds, a.max_ticks, a.shards, a.seed + i, a.symbols)
        results.append(res)
    await r.aclose()
    return {"redis_version": info.get("redis_version"), "floor": floor, "results": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attach", action="store_true", help="use the running pipeline at REDIS_URL")
    ap.add_argument("--rates", nargs="+", default=["1000", "10000", "max"])
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each fixed-rate run")
    ap.add_argument("--max-ticks", type=int, default=200_000, help="ticks in the as-fast-as-possible run")
    ap.add_argument("--symbols", type=int, default=8)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    pipeline = None
    if a.attach:
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    else:
        from tests.integration.harness import Pipeline, bench_setup

        redis_url, db_url, home = bench_setup("aitrader-bench-")
        pipeline = Pipeline(redis_url, db_url, home, {"AITRADER_SHARDS": str(a.shards)})
        print(f"starting a private pipeline (redis {redis_url}, db {db_url.split('@')[-1]}, home {home})",
              file=sys.stderr)
        pipeline.start()
    try:
        out = asyncio.run(main_async(a, redis_url))
    finally:
        if pipeline is not None:
            pipeline.stop()

    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, Redis {out['redis_version']}"
    if a.json:
        def enc(v):
            return v.summary() if isinstance(v, LatencyHistogram) else v
        print(json.dumps({
            "machine": machine,
            "floor": {k: enc(v) for k, v in out["floor"].items()},
            "results": [{k: ({s: enc(h) for s, h in v.items()} if k == "hist" else v) for k, v in r.items()}
                        for r in out["results"]],
        }, indent=2))
        return 0
    print(f"machine: {machine}")
    print("floor (same Redis, one at a time):")
    for k, h in out["floor"].items():
        print(f"  {k:<24} {_hsum(h)}")
    for res in out["results"]:
        rate = res["rate"]
        print(f"\nrate {rate if rate == 'max' else f'{int(rate):,} ticks/s'}: {res['ticks']:,} ticks in "
              f"{res['entries']:,} entries; published {res['publish_ticks_per_s']:,.0f} ticks/s, "
              f"drained in {res['drain_s']:.2f}s, sustained {res['sustained_ticks_per_s']:,.0f} ticks/s")
        for stage, h in res["hist"].items():
            print(f"  {stage:<18} {_hsum(h)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
