"""Our side of the workload: the adapter the benchmark calls, ``run_ours``.

Today it measures the **detector only**: the pattern engine's ``ema_cross`` rule detector
(``PatternEngine.on_ticks``: Tick -> arrays, the numba kernel's full feature update plus the
detector, a Signal per cross) over the file's trades, in process. No orders, no fills, no
position: the trade count is the number of crosses the engine signals, which a stop-and-reverse
follower turns one for one into filled market orders (``workload``).

``run_kernel_only`` is the same detector with the Tick -> array conversion taken out of the
clock (arrays built first, one ``kernel.run_batch`` call): the share of the time that is the
compiled kernel, against the share that is Python objects in, Signals out.

``run_ours`` is the spot where the in-process backtest runner (``run_backtest``) plugs in at merge:
replace the body with a run of the runner over ``ticks_path`` with an ``ema_cross`` detector
(``fast``, ``slow``, ``warmup``, ``cooldown: 0``) and a strategy trading ``qty`` stop-and-reverse,
returning its filled orders and the run's wall time, so the same table then reads "full
backtest" for all three. Until then ``qty`` is unused: nothing is sized.
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

__all__ = ["CHUNK", "KERNEL_WHAT", "WHAT", "crosses", "run_kernel_only", "run_ours"]

WHAT = "detector only: PatternEngine.on_ticks (Ticks -> arrays, kernel: all features + ema_cross, Signals), no orders"
KERNEL_WHAT = "detector only, kernel alone: one run_batch over prebuilt arrays (all features + ema_cross)"
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
