"""The execution gateway alone through Redis: intent → acknowledgement latency at fixed rates.

    python benchmarks/gateway.py                         # 1k and 10k intents/s, 5 s each
    python benchmarks/gateway.py --rates 1000 10000 max --seconds 5

Starts the gateway as a process (own Redis db, SQLite unless DATABASE_URL is set), sets
marks with one tick per symbol, then publishes ``OrderIntent``s to ``se:intents`` open loop
(intent *i* due at t0 + i/rate; intents due together go out in one pipelined write) while
a reader blocks on ``ex:events``. Per intent it records the time from ``ts_intent`` (stamped
just before publishing) until its acknowledgement — the ACCEPTED (or REJECTED) report —
was read back from ``ex:events``: the hop in, the pre-trade checks, the order row committed
to the database, the report published in the bus commit, and the hop out. Orders are market
orders of one lot, alternating buy and sell, so positions and cash stay inside the limits;
a tick per symbol every 10 ms fills them. The risk file is the shipped one with the
throttles opened up and the automatic kill triggers off (the benchmark measures the path of
an accepted order, not the limits). ``max`` publishes as fast as possible and reports
the sustained rate of acknowledgements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from common import streams  # noqa: E402
from common.bus import Publisher, connect  # noqa: E402
from common.latency import LatencyHistogram  # noqa: E402
from common.messages import (  # noqa: E402
    ExecutionReport,
    OrderIntent,
    OrdType,
    Side,
    Tick,
    TickBatch,
    TickType,
    TimeInForce,
    decode_as,
    encode,
)

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
PRICE = 100.0


def _hsum(h: LatencyHistogram) -> str:
    s = h.summary()
    return f"n={s['count']:>7,}  p50={s['p50']:>7,}µs  p99={s['p99']:>7,}µs  p999={s['p999']:>7,}µs  max={s['max']:>8,}µs"


class Ticker:
    """One quote per symbol; ``seq`` keeps rising across runs."""

    def __init__(self) -> None:
        self.seq = 0

    def batch(self) -> bytes:
        now = time.time_ns()
        ticks = []
        for s in SYMBOLS:
            self.seq += 1
            ticks.append(Tick(s, TickType.QUOTE, now, self.seq, 0.0, 0.0, PRICE - 0.01, 100.0, PRICE + 0.01, 100.0))
        return encode(TickBatch(ticks, ts_ingest=now))


def _intent(run: int, i: int, tick_seq: int) -> OrderIntent:
    now = time.time_ns()
    sym = SYMBOLS[i % len(SYMBOLS)]
    return OrderIntent(
        client_order_id=f"bench-{run}-{i}", signal_id=f"bench-sig-{run}-{i}", strategy="bench", symbol=sym,
        side=Side.BUY if (i // len(SYMBOLS)) % 2 == 0 else Side.SELL, qty=Decimal(1), order_type=OrdType.MARKET,
        tif=TimeInForce.DAY, ref_price=Decimal("100"), tick_seq=tick_seq, ts_event=now, ts_ingest=now,
        ts_signal=now, ts_intent=now,
    )


async def run_rate(r: aioredis.Redis, run: int, rate: float | None, seconds: float, max_n: int,
                   ticker: Ticker) -> dict:
    n = max_n if rate is None else int(rate * seconds)
    pub = Publisher(r, 1_000_000)
    tick_stream = streams.ticks_stream(0)
    await pub.publish([(tick_stream, ticker.batch())])
    await asyncio.sleep(0.2)  # marks set
    last = await r.xrevrange(streams.EXEC_EVENTS, count=1)
    start_id = last[0][0] if last else b"0-0"
    ack = LatencyHistogram()
    outcomes: dict[str, int] = {}
    done = asyncio.Event()

    async def read_acks() -> None:
        rr = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**r.connection_pool.connection_kwargs))
        cursor = start_id
        seen = 0
        prefix = f"bench-{run}-".encode()
        try:
            while seen < n:
                resp = await rr.xread({streams.EXEC_EVENTS: cursor}, count=10_000, block=2000)
                if not resp:
                    continue
                got = time.time_ns()
                for eid, f in resp[0][1]:
                    cursor = eid
                    data = f[b"d"]
                    if prefix not in data:
                        continue
                    e = decode_as(data, ExecutionReport)
                    if e.exec_id.endswith((":A", ":R")):
                        ack.record_ns(got - e.ts_intent)
                        key = "accepted" if e.exec_id.endswith(":A") else f"rejected {e.reason}"
                        outcomes[key] = outcomes.get(key, 0) + 1
                        seen += 1
        finally:
            done.set()
            await rr.aclose()

    task = asyncio.create_task(read_acks())
    t0 = time.perf_counter()
    i = 0
    next_tick = t0
    while i < n:
        now = time.perf_counter()
        items = []
        if now >= next_tick:  # keep the orders filling: one quote per symbol every 10 ms
            items.append((tick_stream, ticker.batch()))
            next_tick = now + 0.01
        j = min(n, i + 256) if rate is None else min(n, int((now - t0) * rate) + 1)
        if j <= i and not items:
            await asyncio.sleep(max(0.0, (i / rate) - (now - t0)))  # type: ignore[operator]
            continue
        items.extend((streams.INTENTS, encode(_intent(run, k, ticker.seq))) for k in range(i, j))
        await pub.publish(items)
        i = max(i, j)
    t_pub = time.perf_counter() - t0
    try:
        await asyncio.wait_for(task, timeout=max(60.0, seconds * 10))
    except TimeoutError:
        print(f"  timed out waiting for acknowledgements ({ack.count} of {n})", file=sys.stderr)
    t_all = time.perf_counter() - t0
    return {"rate": "max" if rate is None else rate, "intents": n, "publish_s": t_pub, "acked_s": t_all,
            "acks_per_s": n / t_all, "outcomes": outcomes, "ack": ack}


async def main_async(a: argparse.Namespace, redis_url: str) -> dict:
    r = connect(redis_url)
    ticker = Ticker()
    results = []
    for k, rate in enumerate(a.rates):
        results.append(await run_rate(r, k, None if rate == "max" else float(rate), a.seconds, a.max_intents, ticker))
    info = await r.info("server")
    await r.aclose()
    return {"redis_version": info.get("redis_version"), "results": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", nargs="+", default=["1000", "10000"])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each fixed-rate run")
    ap.add_argument("--max-intents", type=int, default=20_000, help="intents in the as-fast-as-possible run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from tests.integration.harness import Pipeline, bench_setup, open_risk_env

    redis_url, db_url, home = bench_setup("aitrader-bench-gw-")
    # The shipped risk file with the throttles opened up and the automatic kill triggers off:
    # at 10k intents/s the shipped 500 orders/s limit (and then the message-rate trigger) would
    # refuse almost everything, and the benchmark measures the path an accepted order takes.
    risk_env = open_risk_env(home, triggers_off=True, max_orders_per_sec=10_000_000,
                             max_messages_per_sec=10_000_000, max_open_orders=10_000_000, max_gross_notional="1e15")
    pipeline = Pipeline(redis_url, db_url, home, {"AITRADER_INITIAL_CASH": "100000000", **risk_env})
    print(f"starting the gateway (redis {redis_url}, db {db_url.split('@')[-1]})", file=sys.stderr)
    pipeline.start(("execution",))
    try:
        out = asyncio.run(main_async(a, redis_url))
    finally:
        pipeline.stop()
    if a.json:
        for res in out["results"]:
            res["ack"] = res["ack"].summary()
        print(json.dumps(out, indent=2))
        return 0
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, CPython {platform.python_version()}, "
          f"Redis {out['redis_version']}, db {db_url.split(':', 1)[0]}")
    for res in out["results"]:
        rate = res["rate"] if res["rate"] == "max" else f"{res['rate']:,.0f} intents/s"
        print(f"\nrate {rate}: {res['intents']:,} intents, published in {res['publish_s']:.2f}s, "
              f"all acknowledged after {res['acked_s']:.2f}s ({res['acks_per_s']:,.0f} acks/s)")
        print(f"  intent_to_ack      {_hsum(res['ack'])}")
        print(f"  outcomes           {res['outcomes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
