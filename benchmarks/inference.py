"""Inference backends: latency of one ``run`` call per backend and batch size.

    python benchmarks/inference.py                          # the test MLP (11 → 32 → 32 → 3)
    python benchmarks/inference.py --bundle DIR             # a model bundle (model.onnx + model.json)
    python benchmarks/inference.py --backends cpu tensorrt --batches 1 8 64 256 --calls 5000 --json

For each backend that builds here (the others are listed with the reason), and each batch
size: ``--calls`` timed calls of ``backend.run(x)`` after ``--warmup`` untimed ones, on a fixed
float32 input of that many rows (seeded N(0, 1)). Reported: p50 / p99 / p99.9 µs per call,
µs per row at p50, calls/s (1 / mean), and the backend's start time (engine build or cache
load included). The timer is ``time.perf_counter_ns`` around the call (its own cost, ~0.1 µs,
is included). GPU options: ``--device-id``, ``--cache-dir``, ``--fp16``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from pattern_engine.ml.backends import AUTO_ORDER, BackendUnavailable, make_backend
from pattern_engine.ml.metadata import load_bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="model bundle directory (default: the test MLP)")
    ap.add_argument("--backends", nargs="+", default=list(AUTO_ORDER))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64, 256])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--device-id", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.bundle:
        meta, onnx = load_bundle(args.bundle)
        model = str(args.bundle)
    else:
        from tests.onnx_models import make_bundle

        meta, onnx = load_bundle(make_bundle(tempfile.mkdtemp(prefix="aitrader-bench-")))
        model = "test MLP 11 → 32 → 32 → 3 (tests/onnx_models.py)"
    max_batch = max(args.batches)
    opts = {"device_id": args.device_id, "fp16": args.fp16}
    if args.cache_dir:
        opts["cache_dir"] = str(args.cache_dir)
    x = np.random.default_rng(0).normal(size=(max_batch, len(meta.features))).astype(np.float32)

    results, unavailable = [], {}
    for name in args.backends:
        t0 = time.perf_counter()
        try:
            backend = make_backend(name, onnx, meta, max_batch, **opts)
        except BackendUnavailable as e:
            unavailable[name] = str(e)
            continue
        start_s = time.perf_counter() - t0
        for k in args.batches:
            us = _samples(backend, x[:k], args.calls, args.warmup)
            p50, p99, p999 = np.percentile(us, [50, 99, 99.9])
            results.append({
                "backend": name, "describe": backend.describe(), "start_s": round(start_s, 3), "batch": k,
                "p50_us": round(p50, 2), "p99_us": round(p99, 2), "p999_us": round(p999, 2),
                "us_per_row": round(p50 / k, 3), "calls_per_s": round(1e6 / us.mean()),
            })
        backend.close()

    if args.json:
        print(json.dumps({"machine": _machine(), "model": model, "calls": args.calls, "results": results,
                          "unavailable": unavailable}, indent=2))
        return 0
    print(f"model: {model}\nmachine: {_machine()}\ncalls per cell: {args.calls} (after {args.warmup} warm-up)\n")
    print(f"{'backend':<13} {'batch':>5} {'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9} {'µs/row':>7} {'calls/s':>9}")
    for r in results:
        print(f"{r['backend']:<13} {r['batch']:>5} {r['p50_us']:8.2f} {r['p99_us']:8.2f} {r['p999_us']:9.2f} "
              f"{r['us_per_row']:7.3f} {r['calls_per_s']:9,}")
    for r in {r["backend"]: r for r in results}.values():
        print(f"  {r['describe']}: start {r['start_s']} s")
    for name, why in unavailable.items():
        print(f"{name}: unavailable: {why}")
    return 0


def _samples(backend, x, calls: int, warmup: int) -> np.ndarray:
    """µs per ``run(x)`` call, ``calls`` samples after ``warmup`` untimed calls."""
    run, clock = backend.run, time.perf_counter_ns
    for _ in range(warmup):
        run(x)
    t = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = clock()
        run(x)
        t[i] = clock() - t0
    return t / 1e3


def _machine() -> str:
    import onnxruntime

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, load(1 min) {load:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
