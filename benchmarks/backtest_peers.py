"""The EMA-cross workload side by side: our pattern engine, nautilus_trader and backtrader.

    python benchmarks/backtest_peers.py                  # SPY trades of 2013-10-08 (451,545 ticks)
    python benchmarks/backtest_peers.py FILE [--fast 10 --slow 30 --warmup 200 --qty 10]
                                        [--limit N] [--repeat N] [--peers nautilus backtrader] [--json]

Same process, same ticks (one trade file read once through ``tick_replay``), same rule
(``benchmarks/peers/workload.py``: EMAs started at the first price, a cross is a change of
side of fast - slow, warm-up in trades, stop and reverse with market orders of ``qty``,
fills at the tick price, no fees). Rows:

- ``ours``: ``peers.ours.run_backtest_full`` — the **full in-process backtest** (``backend/backtest``:
  the pattern engine with only ``ema_cross`` on, the strategy engine sizing and checking, the
  gateway's risk checks and simulator fills): the like-for-like row for the peers' full backtests;
- ``ours (detector)``: ``peers.ours.run_ours`` — the detector alone (the pattern engine's
  ``ema_cross`` in the kernel, signals, no orders): the row for the peers' signals-only runs;
- ``ours (kernel)``: the same detector with the Tick -> array conversion out of the clock
  (one compiled ``kernel.run_batch`` over the whole file);
- ``reference``: the rule in a plain Python loop (the count every row must match);
- each peer twice: a full backtest (strategy, orders, simulated fills) and the indicators and
  rule alone (no orders) — the like-for-like row for our detector-only figure.

Seconds are wall time of the run itself (input conversion reported apart as ``prepare``),
the best of ``--repeat`` runs; ticks/s = ticks / seconds, one thread. ``x ours`` is our
ticks/s over the row's. A peer that is not installed (``pip install '.[bench]'``) or cannot take
the file (nautilus here: whole-share sizes only) is skipped with a message. Exit status 1 when a trade count differs from the reference's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import ours
from benchmarks.peers.backtrader_peer import run_backtrader
from benchmarks.peers.nautilus_peer import run_nautilus
from benchmarks.peers.workload import (
    DEFAULT_FILE,
    EmaCrossSpec,
    PeerResult,
    PeerSkipped,
    Trades,
    load_trades,
    reference_crosses,
)

PEERS: dict[str, Callable[[Trades, EmaCrossSpec, bool], PeerResult]] = {
    "nautilus": run_nautilus,
    "backtrader": run_backtrader,
}


def _best(runs: list[PeerResult]) -> PeerResult:
    return min(runs, key=lambda r: r.seconds)


def _ours(path: Path, spec: EmaCrossSpec, limit: int, n: int) -> PeerResult:
    runs = []
    for _ in range(n):
        trades, seconds = ours.run_backtest_full(path, spec.fast, spec.slow, spec.qty, warmup=spec.warmup,
                                                 limit=limit)
        runs.append(PeerResult("ours", ours.BACKTEST_WHAT, 0, seconds, trades))
    return _best(runs)


def _detector(path: Path, spec: EmaCrossSpec, limit: int, n: int) -> PeerResult:
    runs = []
    for _ in range(n):
        trades, seconds = ours.run_ours(path, spec.fast, spec.slow, spec.qty, warmup=spec.warmup, limit=limit)
        runs.append(PeerResult("ours (detector)", ours.WHAT, 0, seconds, trades))
    return _best(runs)


def _kernel_only(path: Path, spec: EmaCrossSpec, limit: int, n: int) -> PeerResult:
    runs = []
    for _ in range(n):
        trades, seconds = ours.run_kernel_only(path, spec.fast, spec.slow, warmup=spec.warmup, limit=limit)
        runs.append(PeerResult("ours (kernel)", ours.KERNEL_WHAT, 0, seconds, trades))
    return _best(runs)


def _reference(trades: Trades, spec: EmaCrossSpec, n: int) -> PeerResult:
    prices = trades.price.tolist()
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        count = len(reference_crosses(prices, spec))
        runs.append(PeerResult("reference", "the rule alone, a plain Python loop over a list of floats",
                               len(trades), time.perf_counter() - t0, count))
    return _best(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE, help="one symbol's trade ticks")
    ap.add_argument("--fast", type=int, default=EmaCrossSpec.fast, help="fast EMA period (trades)")
    ap.add_argument("--slow", type=int, default=EmaCrossSpec.slow, help="slow EMA period (trades)")
    ap.add_argument("--warmup", type=int, default=EmaCrossSpec.warmup, help="no cross acted on before this trade")
    ap.add_argument("--qty", type=int, default=EmaCrossSpec.qty, help="shares per position (reversals trade 2x)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N trades (0 = all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest is reported")
    ap.add_argument("--peers", nargs="*", choices=sorted(PEERS), default=sorted(PEERS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.file.exists():
        print(f"{args.file}: not found (the default needs ../shared/data)", file=sys.stderr)
        return 2
    spec = EmaCrossSpec(args.fast, args.slow, args.warmup, args.qty)

    t0 = time.perf_counter()
    trades = load_trades(args.file, args.limit)
    read_s = time.perf_counter() - t0
    rows = [_ours(args.file, spec, args.limit, args.repeat), _detector(args.file, spec, args.limit, args.repeat),
            _kernel_only(args.file, spec, args.limit, args.repeat)]
    for r in rows:
        r.ticks = len(trades)
    rows.append(_reference(trades, spec, args.repeat))
    skipped: list[str] = []
    for name in args.peers:
        for orders in (True, False):
            try:
                rows.append(_best([PEERS[name](trades, spec, orders) for _ in range(args.repeat)]))
            except PeerSkipped as e:
                skipped.append(str(e))
                break
    expected = rows[3].trades  # the reference
    agree = all(r.trades == expected for r in rows)
    ours_rate = rows[0].ticks_per_s
    res = {
        "file": args.file.name, "symbol": trades.symbol, "ticks": len(trades), "read_s": round(read_s, 3),
        "spec": vars(spec), "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "agree": agree, "skipped": skipped,
        "rows": [{"name": r.name, "what": r.what, "seconds": round(r.seconds, 4), "prepare_s": round(r.prepare_s, 3),
                  "ticks_per_s": int(r.ticks_per_s), "trades": r.trades, "ours_x": round(ours_rate / r.ticks_per_s, 2),
                  "notes": r.notes} for r in rows],
    }
    if args.json:
        print(json.dumps(res))
        return 0 if agree else 1
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {len(trades):,} trades of {trades.symbol} "
          f"({args.file.name}, read in {read_s:.2f} s)")
    print(f"# EMA {spec.fast}/{spec.slow} (alpha 2/(N+1)), warm-up {spec.warmup} trades, stop and reverse "
          f"{spec.qty} shares; best of {args.repeat}")
    print(f"{'row':<16} {'seconds':>8} {'ticks/s':>11} {'trades':>7} {'x ours':>7}  measures")
    for r in rows:
        print(f"{r.name:<16} {r.seconds:8.3f} {int(r.ticks_per_s):>11,} {r.trades:>7,} "
              f"{ours_rate / r.ticks_per_s:7.2f}  {r.what}" + (f" (prepare {r.prepare_s:.2f} s)" if r.prepare_s else ""))
        for note in r.notes:
            print(f"{'':<16} {note}")
    for s in skipped:
        print(f"skipped: {s}")
    if agree:
        print(f"trade counts agree: {expected:,} on every row")
    else:
        print("TRADE COUNTS DIFFER: " + ", ".join(f"{r.name} {r.trades:,}" for r in rows) + f" (reference {expected:,})")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
