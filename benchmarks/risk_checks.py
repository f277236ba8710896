"""In-process cost of the gateway's pre-trade checks and of staging orders (no Redis, no database).

    python benchmarks/risk_checks.py

Limits are config/risk.yml's, with max_open_orders and the throttles raised so that the
measured orders pass every control (a rejected order stops at its first failing check).
The throttles run on a fake clock (2.5 ms per order, under the order rate), so they are
exercised on every order without depending on how fast this machine is.
"""

from __future__ import annotations

import copy
import itertools
import os
import platform
import sys
import time
from decimal import Decimal as D
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import streams  # noqa: E402
from common.bus import Entry  # noqa: E402
from common.instruments import Instruments  # noqa: E402
from execution.oms import OrderManager  # noqa: E402
from execution.risk import RiskConfig, RiskEngine  # noqa: E402
from execution.store import Snapshot  # noqa: E402
from execution.venues.simulator import SimulatedVenue  # noqa: E402
from tests.unit.execution.conftest import batch, intent, trade  # noqa: E402


def pct(xs: list[int], q: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * q))] / 1e3


def config() -> RiskConfig:
    import yaml

    doc = yaml.safe_load((ROOT / "config" / "risk.yml").read_text())
    doc["global"].update(max_open_orders=100_000, max_orders_per_sec=100_000, max_messages_per_sec=100_000)
    return RiskConfig.from_dict(doc, ROOT / "config" / "risk.yml")


def timed(f, n: int) -> list[int]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        f()
        ts.append(time.perf_counter_ns() - t0)
    ts.sort()
    return ts


def main() -> int:
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, CPython {platform.python_version()}")
    ins = Instruments.load()
    venue = SimulatedVenue(ins, fee_bps=D(1), slippage_bps=D(1), min_fee=D(0))
    fake = itertools.count()
    risk = RiskEngine(config(), ins, venue.fee, clock=lambda: next(fake) * 2_500_000)
    it = intent("BAC", qty="100", ref="10")
    kw = {"halted": False, "mark": D(10), "mark_age_ns": 1_000_000, "position": D(50), "open_same_side": D(10),
          "open_other_side": D(20), "cash": D(10**6), "open_buy_notional": D(1000), "open_orders": 10,
          "gross_others": D(100_000)}
    assert risk.check(it, **kw) is None
    ts = timed(lambda: risk.check(it, **kw), 50_000)
    print(f"risk.check (every control, passing order): p50 {pct(ts, .5):.2f} µs  p99 {pct(ts, .99):.2f} µs")

    oms = OrderManager(risk, venue, D(10**6))
    oms.load(Snapshot(None, [], [], 0, []))
    ids = itertools.count()
    n = 2000
    entries = [
        Entry(streams.ticks_stream(0), f"{next(ids)}-0".encode(),
              batch(*[trade(f"S{j % 20}", i * 50 + j, 10.0 + (j % 7) / 100) for j in range(50)]), b"")
        for i in range(n)
    ]
    t0 = time.perf_counter()
    oms.stage(entries)
    dt = time.perf_counter() - t0
    print(f"ticks through the gateway's staging (marks + simulator ring): {n * 50 / dt:,.0f} ticks/s")
    n = 5000
    ents = [
        Entry(streams.INTENTS, f"{next(ids)}-0".encode(),
              intent(f"S{j % 20}", side=1 if j % 2 else -1, qty="1", ref="10.03", tick_seq=10**6), b"")
        for j in range(n)
    ]
    per: list[int] = []
    t0 = time.perf_counter()
    for e in ents:
        t1 = time.perf_counter_ns()
        plan = oms.stage([e])
        oms.route(plan)
        per.append(time.perf_counter_ns() - t1)
    dt = time.perf_counter() - t0
    accepted = sum(r.counters.get("accepted", 0) for r in plan.results.values())
    assert accepted == 1 and len(oms.orders) == n, "the measured orders must pass every control"
    per.sort()
    print(f"intents through checks + staging + simulated routing (no DB), one per batch: p50 {pct(per, .5):.1f} µs  "
          f"p99 {pct(per, .99):.1f} µs  (mean {dt / n * 1e6:.1f} µs)")
    dup = [copy.copy(e) for e in ents[:2000]]
    per = []
    for e in dup:
        t1 = time.perf_counter_ns()
        plan = oms.stage([e])
        per.append(time.perf_counter_ns() - t1)
    assert all(r.counters.get("duplicates") == 1 for r in plan.results.values())
    per.sort()
    print(f"duplicate client order id answered with the first order's state: p50 {pct(per, .5):.1f} µs  "
          f"p99 {pct(per, .99):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
