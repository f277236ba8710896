"""``aitrader backtest PATH... [--config FILE] [--synthetic N] [--json] [--label L]``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from common.config import CommonSettings, ConfigError

__all__ = ["add_parser", "run"]

_SHOWN = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor", "round_trips",
          "exposure", "turnover", "fees", "var_95", "final_equity", "ticks", "signals", "orders", "fills", "rejects",
          "span_s", "ticks_per_s")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("backtest", help="run the engines over tick files in process; metrics, equity curve, trades",
                       description="Run the pattern engine, strategy engine and the gateway's simulator in process "
                       "over tick files (or synthetic ticks), as the live pipeline would with a lockstep replay; "
                       "record a backtests row and Parquet files under AITRADER_HOME/backtests/<id>/.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="tick files (merged in time order)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML of AITRADER_* settings over the environment (repeatable; later files win)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="N seeded synthetic ticks instead of files")
    p.add_argument("--symbols", type=int, default=4, metavar="N", help="synthetic: symbols (default 4)")
    p.add_argument("--seed", type=int, default=7, metavar="S", help="synthetic: seed (default 7)")
    p.add_argument("--format", dest="fmt", metavar="NAME", help="force one tick file format")
    p.add_argument("--max-ticks", type=int, default=None, metavar="N", help="only the first N ticks")
    p.add_argument("--label", default="", help="a name for the row")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


class _Bar:
    """tqdm on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.done = 0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(unit="tick", unit_scale=True, file=sys.stderr, smoothing=0.1, mininterval=0.5)

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            return
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def run(args: argparse.Namespace, common: CommonSettings) -> int:
    from backend.backtest.config import load_overrides
    from backend.backtest.job import run_and_store

    if not args.paths and args.synthetic <= 0:
        print("aitrader backtest: give tick files or --synthetic N", file=sys.stderr)
        return 2
    try:
        overrides = load_overrides(args.config)
    except ConfigError as e:
        print(f"aitrader backtest: {e}", file=sys.stderr)
        return 2
    payload = {"files": list(args.paths), "synthetic": args.synthetic, "symbols": args.symbols, "seed": args.seed,
               "max_ticks": args.max_ticks, "config": overrides, "label": args.label}
    if args.fmt:
        payload["format"] = args.fmt
    bar = _Bar(not args.no_progress)
    try:
        out = run_and_store(payload, bar, created_by=f"cli:{getpass.getuser()}")
    except ConfigError as e:
        print(f"aitrader backtest: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"backtest {out['backtest_id']}: equity {out['equity_path']}, trades {out['trades_path']}")
        for k in _SHOWN:
            print(f"  {k:<15} {_fmt(out['metrics'].get(k))}")
    return 0
