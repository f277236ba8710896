"""How fast the kill switch halts: time to block new orders and to cancel N resting orders.

    python benchmarks/kill_switch.py                 # 5 runs of 500 resting orders
    python benchmarks/kill_switch.py --orders 2000 --runs 3 --json

Starts a private gateway (``python -m execution`` as a process, own Redis db
``BENCH_REDIS_DB`` (default 12), SQLite in a temporary folder unless ``DATABASE_URL`` is set).
Each run rests N limit buys at the simulator (inside the price collar, below the market),
then engages with ``aitrader kill engage`` (the CLI, as a process) while a prober publishes a
new intent every millisecond, and releases it again. Times are from the moment the CLI
sent its command (the ``Control.ts`` it stamps just before ``XADD``):

- halted: the gateway applied the command (its ``ControlAck.ts``);
- blocked: the first new intent refused with ``KILL_SWITCH`` (its report's ``ts_exec``);
- cancelled: the last of the N ``CANCELLED`` reports reached ``ex:events`` (Redis entry-id
  time, 1 ms resolution); the gateway commits their rows before it publishes them;
- CLI: the ``aitrader kill engage`` process had its answer and exited.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from tests.integration.harness import Pipeline, bench_setup
from tests.integration.kill_drill import (
    Probe,
    Reports,
    drill_env,
    engage_under_probe,
    publish_mark,
    rest_orders,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=500, help="resting orders to cancel per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--probe-ms", type=float, default=1.0, help="a new intent every this many ms while engaging")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    redis_url, db_url, home = bench_setup("aitrader-bench-kill-")
    print(f"starting a private gateway (redis {redis_url}, db {db_url.split('@')[-1]}, home {home})", file=sys.stderr)
    runs = []
    with Pipeline(redis_url, db_url, home, drill_env(home)) as p:
        p.start(("execution",))
        r = p.redis()
        reports = Reports(r)
        for k in range(1, a.runs + 1):
            publish_mark(r, seq=k, price="100.00" if k % 2 else "100.01")
            rested = rest_orders(r, reports, a.orders, prefix=f"run{k}", tick_seq=k)
            probe = Probe(r, prefix=f"probe{k}", every_s=a.probe_ms / 1000, tick_seq=k)
            res = engage_under_probe(p, r, reports, rested, reason=f"benchmark run {k}", probe=probe)
            p.run("-m", "backend.cli", "kill", "release", "--reason", f"benchmark run {k} done")
            runs.append({
                "halted_ms": round(res.ms(res.t_halted), 2),
                "blocked_ms": round(res.ms(res.t_first_blocked), 2),
                "cancelled_ms": round(res.ms(res.t_cancel_published), 1),
                "cli_ms": round(res.ms(res.t_cli_returned), 1),
                "probes": len(res.probes),
            })
            print(f"run {k}: {runs[-1]}", file=sys.stderr)
    machine = (f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
               f"{platform.python_version()}, {db_url.split(':', 1)[0]}")
    med = {k: statistics.median(run[k] for run in runs) for k in ("halted_ms", "blocked_ms", "cancelled_ms", "cli_ms")}
    worst = {k: max(run[k] for run in runs) for k in med}
    if a.json:
        print(json.dumps({"machine": machine, "orders": a.orders, "runs": runs, "median": med, "max": worst}, indent=2))
        return 0
    print(f"machine: {machine}; {a.orders} resting orders, {a.runs} runs, a new intent every {a.probe_ms} ms")
    print(f"{'':<34}{'median':>10}{'max':>10}")
    for key, label in [("halted_ms", "gateway halted"), ("blocked_ms", "first new intent refused"),
                       ("cancelled_ms", f"all {a.orders} cancelled and reported"), ("cli_ms", "CLI answered")]:
        print(f"{label:<34}{med[key]:>8.1f}ms{worst[key]:>8.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
