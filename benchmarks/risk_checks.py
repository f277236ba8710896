"""In-process cost of the gateway's pre-trade checks and of staging orders (no Redis, no database).

    python benchmarks/risk_checks.py
"""

from __future__ import annotations

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


def main() -> int:
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, CPython {platform.python_version()}")
    ins = Instruments.load()
    venue = SimulatedVenue(ins, fee_bps=D(1), slippage_bps=D(1), min_fee=D(0))
    risk = RiskEngine(RiskConfig.load(ROOT / "config" / "risk.yml"), ins, venue.fee)
    it = intent("BAC", qty="100", ref="10")
    kw = dict(halted=False, known=False, mark=D("10"), position=D(50), open_same_side=D(10),
              cash=D(10**6), open_buy_notional=D(1000))
    ts = []
    for _ in range(50_000):
        t0 = time.perf_counter_ns()
        risk.check(it, **kw)
        ts.append(time.perf_counter_ns() - t0)
    ts.sort()
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
    ents = [
        Entry(streams.INTENTS, f"{next(ids)}-0".encode(),
              intent(f"S{j % 20}", qty="1", ref="10.03", tick_seq=10**6), b"")
        for j in range(5000)
    ]
    t0 = time.perf_counter()
    plan = oms.stage(ents)
    oms.route(plan)
    dt = time.perf_counter() - t0
    print(f"intents through checks + staging + simulated routing (no DB): {dt / 5000 * 1e6:.1f} µs/intent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
