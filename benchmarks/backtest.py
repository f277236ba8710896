"""In-process backtest throughput: ticks per second through the live engines' code, no bus.

    python benchmarks/backtest.py                         # the IBM and BAC days of ../shared/data, 3 modes
    python benchmarks/backtest.py --max-ticks 500000 --json
    python benchmarks/backtest.py --model                 # also the model mode (trains demo_mlp first)

Modes (each a fresh backtest, ``backend.backtest.run_backtest``, one process, one core):

- ``replay``: no detector enabled, so no signal: the gateway's marks and simulator and the
  pattern engine's features on every tick (the floor of the pipeline's per-tick work);
- ``rules``: the shipped ``config/pattern.yml`` rule detectors and ``config/strategies.yml``
  (sizing, portfolio limits, the gateway's checks and fills); the model detector off;
- ``model`` (``--model``): ``rules`` plus the ``ml_demo`` detector running ``demo_mlp``, trained
  and promoted first in a scratch home (``aitrader model train --synthetic 200000``).

Per mode: ticks/s over the run (the kernel's warm-up excluded, reported apart) and the cost
per tick of each entry (one ``AITRADER_REPLAY_BATCH_MAX`` = 256-tick step: gateway, pattern
engine, strategy engine, fills), p50 / p99 over the steps, in microseconds per tick.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = Path(os.environ.get("AITRADER_DATA_DIR_FOR_TESTS", ROOT.parent / "shared" / "data"))
FILES = [
    "quantconnect_lean/equity_tick/20131007_ibm_Trade_Tick.csv.gz",
    "quantconnect_lean/equity_tick/20131007_ibm_Quote_Tick.csv.gz",
    "quantconnect_lean/equity_tick/20131007_bac_Trade_Tick.csv.gz",
    "quantconnect_lean/equity_tick/20131007_bac_Quote_Tick.csv.gz",
]


def _pattern_file(scratch: Path, *, rules: bool, model: bool) -> Path:
    doc = yaml.safe_load((ROOT / "config" / "pattern.yml").read_text())
    for d in doc["detectors"].values():
        d["enabled"] = model if d.get("type") == "onnx" else rules
    p = scratch / f"pattern-{int(rules)}{int(model)}.yml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_mode(name: str, files: list[str], max_ticks: int | None, overrides: dict[str, str]) -> dict:
    from backend.backtest import run_backtest

    res = run_backtest(files, max_ticks=max_ticks, overrides=overrides)
    per_tick = [ns / 1000 / k for k, ns in res.step_cost if k]
    return {
        "mode": name, "ticks": res.ticks, "signals": res.signals, "orders": len(res.orders()),
        "fills": len(res.fills), "seconds": round(res.duration_s, 3), "warmup_s": round(res.warmup_s, 3),
        "ticks_per_s": round(res.ticks / res.duration_s) if res.duration_s else None,
        "us_per_tick_p50": round(_pct(per_tick, 0.50), 3), "us_per_tick_p99": round(_pct(per_tick, 0.99), 3),
    }


def _train_demo(home: Path) -> dict[str, str]:
    env = {**os.environ, "AITRADER_HOME": str(home), "DATABASE_URL": f"sqlite:///{home / 'bench.db'}"}
    py = sys.executable
    subprocess.run([py, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"], env=env, cwd=ROOT,
                   check=True, capture_output=True)
    subprocess.run([py, "-m", "backend.cli", "model", "train", "--synthetic", "200000", "--horizon", "20",
                    "--name", "demo_mlp", "--promote", "--out", str(home / "demo_mlp")], env=env, cwd=ROOT,
                   check=True, capture_output=True)
    return {"AITRADER_HOME": str(home), "DATABASE_URL": env["DATABASE_URL"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="tick files (default: the IBM and BAC days of ../shared/data)")
    ap.add_argument("--max-ticks", type=int, default=None, help="only the first N ticks")
    ap.add_argument("--model", action="store_true", help="also the model mode (trains demo_mlp in a scratch home)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    files = args.files or [str(DATA / f) for f in FILES]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        print(f"missing tick files: {missing}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    os.environ["AITRADER_HOME"] = str(scratch)
    rows = []
    modes = [("replay", False, False), ("rules", True, False)]
    if args.model:
        os.environ.update(_train_demo(scratch / "model-home"))
        modes.append(("model", True, True))
    for name, rules, model in modes:
        rows.append(run_mode(name, files, args.max_ticks,
                             {"AITRADER_PE_CONFIG": str(_pattern_file(scratch, rules=rules, model=model))}))
        if not args.json:
            r = rows[-1]
            print(f"{r['mode']:<7} {r['ticks']:>9} ticks {r['ticks_per_s']:>9} ticks/s  p50 {r['us_per_tick_p50']:.2f} "
                  f"us/tick  p99 {r['us_per_tick_p99']:.2f} us/tick  signals {r['signals']} orders {r['orders']} "
                  f"fills {r['fills']}  (warm-up {r['warmup_s']} s)", flush=True)
    if args.json:
        print(json.dumps({"files": files, "load_avg": os.getloadavg(), "modes": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
