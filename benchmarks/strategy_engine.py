"""Strategy engine: signal -> intent latency under open-loop load, and proof that no MCP call sits on that path.

    python benchmarks/strategy_engine.py                          # 1k and 10k signals/s, 10 s each
    python benchmarks/strategy_engine.py --rates 1000 --seconds 5 --json
    BENCH_REDIS_DB=13 python benchmarks/strategy_engine.py        # the scratch Redis db (flushed!)
    python benchmarks/strategy_engine.py --refresh-s 5 --heartbeat-s 1   # the shipped refresh and heartbeat periods

For each rate: a fresh ``python -m mock_mcp`` (the real mock broker, MCP over streamable
HTTP) and a fresh ``python -m strategy_engine`` (the shipped ``config/strategies.yml``: five
strategies, each following one detector on every symbol, and the shipped portfolio limits)
run as subprocesses on a scratch Redis db (``REDIS_URL``'s server, db ``BENCH_REDIS_DB``,
default 12, flushed first; ``tests/integration/harness.py`` ``bench_setup``). Signals are
published open-loop on ``pe:signals`` at the rate for ``--seconds``: each millisecond the
signals due by then go out, one stream entry each (as the pattern engine publishes them),
in one pipelined round trip; ``ts_signal`` is stamped as they are sent. Detectors rotate
over the five strategies' detectors and ``--symbols`` symbols, sides alternate per symbol,
so most signals make an intent (the rest are counted as skipped by their reason).

Measured: the engine's own ``signal_to_intent`` histogram (``ts_intent - ts_signal``: the
bus hop in, routing, sizing, the portfolio checks; written to ``lat:signal_to_intent`` on
its last heartbeat), the same from the intents on ``se:intents`` as a cross-check, the
engine's CPU per signal, and the mock broker's tool calls counted during the timed window
(its heartbeat counters ``tool_calls.<tool>``) next to the engine's account refreshes in the
same window (``refreshes``, from its heartbeats): every refresh is one ``get_margins``, one
``get_positions`` and one ``get_holdings``, so calls = 3 x refreshes, set by ``refresh_s``
(``--refresh-s``) and not by the signal rate — no MCP call per signal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import redis.asyncio as aioredis

from common import streams
from common.latency import LatencyHistogram
from common.messages import Heartbeat, OrderIntent, Side, Signal, decode_as, encode, signal_id_for
from tests.integration.harness import bench_setup, cpu_seconds, free_port

DETECTORS = ("momentum_burst", "mean_reversion", "breakout", "imbalance", "ml_demo")
TOOLS_PER_REFRESH = ("get_margins", "get_positions", "get_holdings")



async def _heartbeat(r, service: str, after_ns: int = 0, timeout: float = 10.0) -> Heartbeat:
    """The latest heartbeat of ``service`` stamped after ``after_ns``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for _id, f in await r.xrevrange(streams.HEARTBEATS, count=100):
            hb = decode_as(f[b"d"], Heartbeat)
            if hb.service == service and hb.ts > after_ns:
                return hb
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no heartbeat of {service} after {after_ns}")


def _signals(n: int, symbols: int) -> list[tuple[str, str, Side, float]]:
    rng = np.random.default_rng(7)
    px = np.full(symbols, 100.0)
    side = [Side.BUY] * symbols
    out = []
    for i in range(n):
        s = i % symbols
        px[s] *= float(np.exp(rng.normal(0, 5e-4)))
        if (i // symbols) % 2 == 0:
            side[s] = Side.SELL if side[s] == Side.BUY else Side.BUY
        out.append((f"S{s:03d}", DETECTORS[(i // symbols) % len(DETECTORS)], side[s], round(float(px[s]), 2)))
    return out


async def run_rate(rate: int, seconds: float, symbols: int, refresh_s: float, heartbeat_s: float = 0.2) -> dict:
    redis_url, db_url, home = bench_setup("aitrader-bench-se-")
    r = aioredis.Redis.from_url(redis_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(REDIS_URL=redis_url, DATABASE_URL=db_url, AITRADER_HOME=str(home), AITRADER_MCP_PORT=str(port),
               AITRADER_SE_MCP_URL=f"http://127.0.0.1:{port}/mcp", AITRADER_HEARTBEAT_S=str(heartbeat_s),
               AITRADER_LOG_LEVEL="WARNING", AITRADER_INSTANCE="bench", AITRADER_SE_REFRESH_S=str(refresh_s),
               AITRADER_INITIAL_CASH="100000000")
    log = open(home / "services.log", "ab")  # noqa: ASYNC230, SIM115 - the services' log, open while they run
    procs = {svc: subprocess.Popen([sys.executable, "-m", svc], cwd=ROOT, env=env, stdout=log,  # noqa: ASYNC220
                                   stderr=log) for svc in ("mock_mcp",)}
    try:
        await _heartbeat(r, "mock_mcp", timeout=60)
        procs["strategy_engine"] = se = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
            [sys.executable, "-m", "strategy_engine"], cwd=ROOT, env=env, stdout=log, stderr=log)
        hb = await _heartbeat(r, "strategy_engine", timeout=60)
        while hb.counters.get("refreshes", 0) < 1:  # the account context is loaded
            hb = await _heartbeat(r, "strategy_engine", hb.ts, timeout=30)
        await asyncio.sleep(0.5)

        sigs = _signals(int(rate * seconds), symbols)
        t_start = time.time_ns()
        mcp0 = await _heartbeat(r, "mock_mcp", t_start)
        se0 = await _heartbeat(r, "strategy_engine", t_start)
        cpu0 = cpu_seconds(se.pid)
        t0 = time.perf_counter()
        i = 0
        while i < len(sigs):
            now = time.perf_counter() - t0
            due = min(len(sigs), int(now * rate) + 1)
            if due > i:
                pipe = r.pipeline(transaction=False)
                ts = time.time_ns()
                for j in range(i, due):
                    sym, det, side, px = sigs[j]
                    sig = Signal(signal_id=signal_id_for(sym, ts, j, det), symbol=sym, detector=det, side=side,
                                 strength=2.0, price=px, tick_seq=j, ts_event=ts, ts_ingest=ts, ts_signal=ts,
                                 volatility=0.05)
                    pipe.xadd(streams.SIGNALS, {b"d": encode(sig)})
                await pipe.execute()
                i = due
            await asyncio.sleep(max(0.0, (int(now * 1000) + 1) / 1000 - (time.perf_counter() - t0)))
        sent_s = time.perf_counter() - t0
        done = 0
        for _ in range(600):
            done = int(await r.hget(streams.stats_key("strategy_engine"), "signals") or 0)
            if done >= len(sigs):
                break
            await asyncio.sleep(0.05)
        cpu = cpu_seconds(se.pid) - cpu0
        t_end = time.time_ns()
        mcp1 = await _heartbeat(r, "mock_mcp", t_end)
        se1 = await _heartbeat(r, "strategy_engine", t_end)
        window_s = (t_end - t_start) / 1e9
    finally:
        for p in reversed(list(procs.values())):
            p.terminate()
        codes = {svc: p.wait(30) for svc, p in procs.items()}
        log.close()
    calls = {t: mcp1.counters.get(f"tool_calls.{t}", 0) - mcp0.counters.get(f"tool_calls.{t}", 0)
             for t in sorted({k.split(".", 1)[1] for k in mcp1.counters if k.startswith("tool_calls.")})}
    refreshes = se1.counters.get("refreshes", 0) - se0.counters.get("refreshes", 0)
    failures = se1.counters.get("refresh_failures", 0) - se0.counters.get("refresh_failures", 0)
    raw = await r.hget(streams.latency_key("signal_to_intent"), "bench")
    h = LatencyHistogram.decode(raw) if raw else LatencyHistogram()
    stream_h = LatencyHistogram()
    n_intents = 0
    last = "-"
    while True:
        items = await r.xrange(streams.INTENTS, min=last, count=10_000)
        if last != "-":
            items = items[1:]
        if not items:
            break
        for eid, f in items:
            it = decode_as(f[b"d"], OrderIntent)
            stream_h.record_ns(it.ts_intent - it.ts_signal)
            n_intents += 1
        last = items[-1][0]
    stats = {k.decode(): int(v) for k, v in (await r.hgetall(streams.stats_key("strategy_engine"))).items()}
    await r.aclose()
    total_calls = sum(calls.values())
    return {
        "rate": rate, "signals": len(sigs), "sent_s": round(sent_s, 2), "processed": done, "window_s": round(window_s, 2),
        "intents": n_intents, "skipped": {k: v for k, v in stats.items() if k.startswith(("signals_skipped.",
                                                                                          "intents_blocked"))},
        "exit_codes": codes, "engine_cpu_s": round(cpu, 2), "engine_cpu_us_per_signal": round(cpu / len(sigs) * 1e6, 1),
        "signal_to_intent_us": h.summary(), "signal_to_intent_us_from_stream": stream_h.summary(),
        "mcp": {"tool_calls": calls, "total": total_calls, "refreshes": refreshes, "refresh_failures": failures,
                "expected_calls": (refreshes + failures) * len(TOOLS_PER_REFRESH),
                "refresh_s": refresh_s, "heartbeat_s": heartbeat_s,
                "calls_per_1k_signals": round(total_calls / len(sigs) * 1000, 3)},
    }


def verdict(m: dict) -> str:
    """Calls match 3 x refreshes, give or take one refresh straddling each edge of the window
    (the two services' counters are read a few ms apart)."""
    slack = 2 * len(TOOLS_PER_REFRESH)
    if abs(m["total"] - m["expected_calls"]) <= slack:
        return f"calls = {len(TOOLS_PER_REFRESH)} x refreshes (within one refresh at each edge): no MCP call per signal"
    return "MISMATCH: MCP calls not explained by the refreshes"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--refresh-s", type=float, default=1.0, help="the engine's AITRADER_SE_REFRESH_S")
    ap.add_argument("--heartbeat-s", type=float, default=0.2,
                    help="the services' AITRADER_HEARTBEAT_S (0.2 reads counters quickly; the shipped default is 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [asyncio.run(run_rate(rate, args.seconds, args.symbols, args.refresh_s, args.heartbeat_s))
               for rate in args.rates]
    machine = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "loadavg_after": os.getloadavg()}
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
        return 0
    print(f"machine: {machine}")
    for res in results:
        lat, s2 = res["signal_to_intent_us"], res["signal_to_intent_us_from_stream"]
        m = res["mcp"]
        print(f"\n{res['rate']} signals/s for {res['sent_s']} s: {res['signals']} signals, {res['processed']} processed,"
              f" {res['intents']} intents; skipped/blocked {res['skipped']}")
        print(f"  signal->intent (engine histogram, us): p50 {lat['p50']}  p99 {lat['p99']}  p99.9 {lat['p999']}  "
              f"max {lat['max']}  (n={lat['count']}); from se:intents: p50 {s2['p50']} p99 {s2['p99']}")
        print(f"  engine CPU {res['engine_cpu_s']} s = {res['engine_cpu_us_per_signal']} us/signal; exit {res['exit_codes']}")
        print(f"  MCP tool calls in the {res['window_s']} s window: {m['total']} {m['tool_calls']}; engine refreshes "
              f"{m['refreshes']} (+{m['refresh_failures']} failed) x {len(TOOLS_PER_REFRESH)} tools = "
              f"{m['expected_calls']} expected (refresh_s {m['refresh_s']}); {m['calls_per_1k_signals']} calls per "
              f"1k signals -> {verdict(m)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
