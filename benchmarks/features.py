"""Batch features (the training driver) on a real file: ticks/s and per-tick feature cost.

    python benchmarks/features.py                       # BAC + IBM 2013-10-08 trades + quotes
    python benchmarks/features.py FILE [FILE ...] [--json]

Reported:

- ``read``: the files through ``tick_replay.open_ticks`` into a list of Ticks (the reader
  cost a training run pays once per file);
- ``batch``: ``compute_features`` over that list (chunks of 65 536: ``tick_arrays`` conversion
  + one ``kernel.run_features`` call per chunk + the pyarrow table), end-to-end ticks/s,
  and the kernel alone in µs per tick (amortised over the chunk);
- ``per tick``: one ``kernel.run_features`` call per tick (numba dispatch included), p50/p99
  in µs over every tick of the file — the feature cost of a single tick in isolation;
- with ``--depth FILE``: the L2 book replay (``book.book_series``), messages/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from pattern_engine import kernel
from pattern_engine.batch_features import compute_features
from pattern_engine.book import book_series
from pattern_engine.features import FeatureParams, FeatureState, tick_arrays
from tick_replay import open_ticks

DATA = ROOT.parent / "shared" / "data"
DEFAULT = [DATA / "quantconnect_lean" / "equity_tick" / f"20131008_{s}_{k}_Tick.csv.gz"
           for s in ("bac", "ibm") for k in ("Trade", "Quote")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, default=DEFAULT)
    ap.add_argument("--depth", type=Path, nargs="*", default=[], help="Binance depth capture(s) to replay")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    params = FeatureParams()

    t0 = time.perf_counter()
    ticks = list(open_ticks(args.files))
    read_s = time.perf_counter() - t0
    n = len(ticks)
    compute_features(ticks[:1000], params)  # compile / load the kernel from numba's cache

    t0 = time.perf_counter()
    table = compute_features(ticks, params)
    batch_s = time.perf_counter() - t0

    st = FeatureState(params, capacity=64)
    sym, ts, x = tick_arrays(ticks, st.registry)
    st.ensure_capacity()
    out = np.empty((kernel.N_FEATURES, n))
    out_n = np.empty((2, n), dtype=np.int64)
    t0 = time.perf_counter()
    kernel.run_features(sym, ts, x, st.F, st.I, st.ring, st.dq, st.hist, st.fp, out, out_n)
    kernel_s = time.perf_counter() - t0

    st = FeatureState(params, capacity=64)
    sym, ts, x = tick_arrays(ticks, st.registry)
    st.ensure_capacity()
    views = [(sym[k : k + 1], ts[k : k + 1], x[k : k + 1], out[:, k : k + 1], out_n[:, k : k + 1])
             for k in range(n)]
    times = np.empty(n, dtype=np.int64)
    perf = time.perf_counter_ns
    F, I, ring, dq, hist, fp = st.F, st.I, st.ring, st.dq, st.hist, st.fp
    run = kernel.run_features
    for k, (s1, t1, x1, o1, n1) in enumerate(views):
        a = perf()
        run(s1, t1, x1, F, I, ring, dq, hist, fp, o1, n1)
        times[k] = perf() - a
    us = times / 1000.0
    res = {
        "files": [p.name for p in args.files],
        "ticks": n,
        "symbols": table.column("symbol").combine_chunks().dictionary.to_pylist(),
        "read_s": round(read_s, 3),
        "read_ticks_per_s": int(n / read_s),
        "batch_s": round(batch_s, 3),
        "batch_ticks_per_s": int(n / batch_s),
        "kernel_us_per_tick_in_chunk": round(kernel_s / n * 1e6, 4),
        "per_tick_call_us_p50": round(float(np.percentile(us, 50)), 3),
        "per_tick_call_us_p99": round(float(np.percentile(us, 99)), 3),
        "cpus": os.cpu_count(),
    }
    if args.depth:
        t0 = time.perf_counter()
        s = book_series(args.depth)
        dt = time.perf_counter() - t0
        res["depth_messages"] = s.stats.messages + s.stats.snapshots
        res["depth_levels"] = s.stats.levels
        res["depth_s"] = round(dt, 3)
        res["depth_levels_per_s"] = int(s.stats.levels / dt)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"# {platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {n:,} ticks of {', '.join(res['files'])} ({', '.join(res['symbols'])})")
    print(f"read (open_ticks -> list):   {read_s:7.2f} s  {res['read_ticks_per_s']:>12,} ticks/s")
    print(f"batch (compute_features):    {batch_s:7.2f} s  {res['batch_ticks_per_s']:>12,} ticks/s")
    print(f"kernel only (run_features):  {res['kernel_us_per_tick_in_chunk']:.4f} µs/tick, one call over the whole file")
    print(f"one call per tick:           p50 {res['per_tick_call_us_p50']:.3f} µs  "
          f"p99 {res['per_tick_call_us_p99']:.3f} µs (numba dispatch included)")
    if args.depth:
        print(f"L2 book replay:              {res['depth_s']:7.2f} s  {res['depth_levels_per_s']:>12,} levels/s "
              f"({res['depth_messages']:,} messages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
