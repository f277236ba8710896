"""Our side of the workload: the adapter the benchmark calls, ``run_ours``.

Today it measures the **detector only**: the pattern engine's ``ema_cross`` rule detector
(``PatternEngine.on_ticks``: Tick -> arrays, the numba kernel's full feature update plus the
detector, a Signal per cross) over the file's trades, in process. No orders, no fills, no
position: the trade count is the number of crosses the engine signals, which a stop-and-reverse
follower turns one for one into filled market orders (``workload``).

``run_kernel_only`` is the same detector with the Tick -> array conversion taken out of the
clock (arrays built first, one ``kernel.run_batch`` call): the share of the time that is the
compiled kernel, against the share that is Python objects in, Signals out.

``run_backtest_full`` is the like-for-like row against the peers' full backtests: the in-process
backtest (``backend/backtest``: the pattern engine, the strategy engine and the gateway's OMS with
its simulator, the same classes as live) over the same trades, with only the ``ema_cross``
detector on and one strategy following it stop-and-reverse (``allow_short``, sized
``fixed_notional`` at ``qty`` x the first price, so ``qty`` shares while the price stays near it),
the gateway's pre-trade checks on (throttles opened, as a backtest of a busy day needs) and its
simulator filling the market orders. The trade count is the filled orders.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from common.messages import Tick, TickType
from pattern_engine import kernel
from pattern_engine.engine import PatternEngine
from pattern_engine.features import FeatureState, tick_arrays
from pattern_engine.pattern_config import parse_pattern_config
from tick_replay import open_ticks

__all__ = ["BACKTEST_WHAT", "CHUNK", "KERNEL_WHAT", "WHAT", "crosses", "run_backtest_full", "run_kernel_only",
           "run_ours"]

WHAT = "detector only: PatternEngine.on_ticks (Ticks -> arrays, kernel: all features + ema_cross, Signals), no orders"
KERNEL_WHAT = "detector only, kernel alone: one run_batch over prebuilt arrays (all features + ema_cross)"
BACKTEST_WHAT = ("full backtest: backend.backtest (pattern engine, strategy engine: sizing + portfolio checks, "
                 "gateway: risk checks + simulator fills), stop and reverse")
CHUNK = 65_536  # ticks per on_ticks call: a backtest reads files in large chunks, not bus batches


def _config(fast: int, slow: int, warmup: int):
    return parse_pattern_config({"detectors": {"ema_cross": {"fast": fast, "slow": slow, "warmup": warmup,
                                                             "cooldown": 0}}})


def _trades(ticks_path: str | Path, limit: int) -> list[Tick]:
    ticks = [t for t in open_ticks([ticks_path]) if t.type == TickType.TRADE and t.price > 0.0]
    return ticks[:limit] if limit else ticks


def _engine(fast: int, slow: int, warmup: int) -> PatternEngine:
    engine = PatternEngine(_config(fast, slow, warmup))
    engine.warm_up()
    return engine


def crosses(ticks: list[Tick], fast: int, slow: int, warmup: int) -> list[tuple[int, int]]:
    """The engine's ema_cross signals over ``ticks`` as (tick number from 1, side): the tests compare these."""
    engine = _engine(fast, slow, warmup)
    seq_to_n = {t.seq: n for n, t in enumerate(ticks, 1)}
    out: list[tuple[int, int]] = []
    for i in range(0, len(ticks), CHUNK):
        out += [(seq_to_n[s.tick_seq], int(s.side)) for s in engine.on_ticks(ticks[i : i + CHUNK])]
    return out


def run_ours(ticks_path: str | Path, fast: int, slow: int, qty: int, *, warmup: int = 200,
             limit: int = 0) -> tuple[int, float]:
    """(trade count, seconds) of our side over the trades of ``ticks_path`` (``limit`` > 0: the first ones).

    Seconds cover the engine run only (the file is read before the clock starts, as for the peers).
    """
    ticks = _trades(ticks_path, limit)
    engine = _engine(fast, slow, warmup)
    signals = 0
    t0 = time.perf_counter()
    for i in range(0, len(ticks), CHUNK):
        signals += len(engine.on_ticks(ticks[i : i + CHUNK]))
    return signals, time.perf_counter() - t0


def run_kernel_only(ticks_path: str | Path, fast: int, slow: int, *, warmup: int = 200,
                    limit: int = 0) -> tuple[int, float]:
    """(crosses, seconds) of one ``kernel.run_batch`` call over arrays built before the clock starts."""
    ticks = _trades(ticks_path, limit)
    engine = _engine(fast, slow, warmup)  # compiles the kernel, not timed
    rules = engine.rules
    state = FeatureState(engine.config.features, n_detectors=len(rules))
    sym, ts, x = tick_arrays(ticks, state.registry)
    state.ensure_capacity()
    dint = np.array([[d.kind, d.warmup, d.cooldown] for d in rules], dtype=np.int64)
    dpar = np.array([d.pack() for d in rules], dtype=np.float64)
    out_i = np.zeros((len(ticks) * len(rules), 3), dtype=np.int64)
    out_f = np.zeros((len(ticks) * len(rules), 3), dtype=np.float64)
    st = state
    t0 = time.perf_counter()
    n = kernel.run_batch(sym, ts, x, st.F, st.I, st.ring, st.dq, st.hist, st.fp, dint, dpar, st.last_fire,
                         st.det_state, out_i, out_f)
    return n, time.perf_counter() - t0


def run_backtest_full(ticks_path: str | Path, fast: int, slow: int, qty: int, *, warmup: int = 200,
                      limit: int = 0, workdir: Path | None = None) -> tuple[int, float]:
    """(filled orders, seconds) of the in-process backtest over the trades of ``ticks_path``.

    The trades are read before the clock starts (as for the peers); the clock covers the run."""
    import asyncio
    import tempfile

    import yaml

    from backend.backtest.config import load_settings
    from backend.backtest.runner import _Backtest
    from tests.integration.harness import open_risk_env

    ticks = _trades(ticks_path, limit)
    if not ticks:
        return 0, 0.0
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        home = Path(tmp)
        (home / "pattern.yml").write_text(yaml.safe_dump({"detectors": {
            "ema_cross": {"fast": fast, "slow": slow, "warmup": warmup, "cooldown": 0}}}))
        (home / "strategies.yml").write_text(yaml.safe_dump({"strategies": [{
            "name": "ema", "type": "follow", "detectors": ["ema_cross"], "allocation": 1.0, "allow_short": True,
            "min_trade_fraction": 0.0, "max_position_notional": str(qty * ticks[0].price * 10),
            "sizing": {"model": "fixed_notional", "notional": str(round(qty * ticks[0].price, 2))}}]}))
        (home / "portfolio.yml").write_text(yaml.safe_dump({"portfolio": {"enabled": False}}))
        overrides = {"AITRADER_HOME": str(home), "AITRADER_PE_CONFIG": str(home / "pattern.yml"),
                     "AITRADER_SE_STRATEGIES_PATH": str(home / "strategies.yml"),
                     "AITRADER_SE_PORTFOLIO_PATH": str(home / "portfolio.yml"),
                     **open_risk_env(home, triggers_off=True, max_orders_per_sec=1_000_000,
                                     max_messages_per_sec=1_000_000)}
        bt = _Backtest(load_settings(overrides))
        try:
            t0 = time.perf_counter()
            asyncio.run(bt.run(ticks, len(ticks), None))
            seconds = time.perf_counter() - t0
        finally:
            bt.pattern.engine.close()
        filled = sum(1 for r in bt.result.orders().values() if r.cum_qty > 0)
    return filled, seconds
