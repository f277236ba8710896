"""A full garbage collection in each service's process, before and after ``gc.freeze()``.

    python benchmarks/gc_pause.py                 # every service, 7 collections each way
    python benchmarks/gc_pause.py --json

Every service imports and builds what it runs (msgspec structs, pydantic settings, SQLAlchemy,
the MCP client, numba / ONNX Runtime in the pattern engine): 100k+ objects that live as long as
the process. CPython's collector walks all of them in every full (generation 2) collection,
and a full collection runs on the event loop's thread in the middle of whatever message is
being handled. ``Service.start`` (common/service.py) freezes them once set-up is done, so later
collections walk only what the process made since.

For each service, a fresh interpreter (``python -c``) imports the service's package and builds
the service object the way ``python -m <service>`` does (settings from a scratch
``AITRADER_HOME``; nothing connects: building does not touch Redis), then times
``gc.collect()`` ``--reps`` times, freezes, and times it again. Figures: the objects tracked,
and p50 / max of a full collection each way, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVICES = {
    "pattern_engine": "pattern_engine.service",
    "strategy_engine": "strategy_engine.service",
    "execution": "execution.__main__",
    "mock_mcp": "mock_mcp.service",
}

PROBE = r"""
import gc, importlib, json, statistics, sys, time
mod = importlib.import_module(sys.argv[1])
build = getattr(mod, "build", None) or getattr(mod, "_build", None)
built = None
if build is not None:
    try:
        built = build([])
    except TypeError:
        built = build()
    except Exception as e:  # a service whose build needs a server: the imports are most of it anyway
        built = repr(e)
def times(n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); gc.collect(); out.append((time.perf_counter() - t) * 1e3)
    return out
reps = int(sys.argv[2])
gc.collect()
objects = len(gc.get_objects())
before = times(reps)
gc.freeze()
after = times(reps)
print(json.dumps({"objects": objects, "built": isinstance(built, str) and built or bool(built),
                  "before_p50_ms": statistics.median(before), "before_max_ms": max(before),
                  "after_p50_ms": statistics.median(after), "after_max_ms": max(after)}))
"""


def probe(module: str, reps: int, home: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_")}
    env.update(AITRADER_HOME=home, AITRADER_LOG_LEVEL="WARNING")
    res = subprocess.run([sys.executable, "-c", PROBE, module, str(reps)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="aitrader-bench-gc-")
    rows = {name: probe(mod, args.reps, home) for name, mod in SERVICES.items()}
    machine = {"python": platform.python_version(), "cores": os.cpu_count(), "loadavg": os.getloadavg()}
    if args.json:
        print(json.dumps({"machine": machine, "services": rows}, indent=2))
        return 0
    print(f"machine: {machine}")
    print(f"{'service':<22}{'objects':>10}{'full GC p50':>14}{'max':>9}{'frozen p50':>13}{'max':>9}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<22} error: {r['error']}")
            continue
        print(f"{name:<22}{r['objects']:>10,}{r['before_p50_ms']:>11.1f} ms{r['before_max_ms']:>6.1f} ms"
              f"{r['after_p50_ms']:>10.3f} ms{r['after_max_ms']:>6.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
