"""The EMA-cross workload every implementation runs, defined once.

The rule, per trade price p_t of one symbol (t = 1, 2, ...):

- EMAs: alpha = 2 / (N + 1) for the fast and slow periods N (in trades). Both start at p_1;
  every trade, the first included, applies ``ema = alpha * p + (1 - alpha) * ema``
  (nautilus_trader's ``ExponentialMovingAverage.update_raw``, operation for operation).
- Side: the sign of fast - slow. A trade whose side is nonzero and differs from the last
  nonzero side is a *cross* (BUY when it turns +, SELL when it turns -), except when there was
  no nonzero side before it. Equal EMAs keep the last side.
- Warm-up: a cross at trade t < ``warmup`` is not acted on (the EMAs and the side still move).
- Trading: always in the market after the first acted-on cross (stop and reverse). That cross
  sends a market order of ``qty``, each later one a market order of ``2 * qty`` that reverses
  the position to ``side * qty``. Fills at the trade price, no fees, no slippage.

So a run's trade count (orders filled) equals its acted-on crosses. The pattern engine's
``ema_cross`` detector is this rule with ``cooldown: 0`` (its warm-up counts every tick of the
symbol; the workload's files hold trades only, so ticks and trades are the same count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.messages import TickType
from tick_replay import open_ticks

__all__ = ["DEFAULT_FILE", "EmaCrossSpec", "PeerMissing", "PeerResult", "PeerSkipped", "Trades", "load_trades", "reference_crosses"]

DEFAULT_FILE = (Path(__file__).resolve().parents[3] / "shared" / "data" / "quantconnect_lean" / "equity_tick"
                / "20131008_spy_Trade_Tick.csv.gz")


class PeerSkipped(RuntimeError):
    """The peer cannot run here: the benchmark skips it and prints the message."""


class PeerMissing(PeerSkipped):
    """The peer framework is not installed (``pip install .[bench]``)."""


@dataclass(frozen=True)
class EmaCrossSpec:
    fast: int = 10
    slow: int = 30
    warmup: int = 200
    qty: int = 10

    def alphas(self) -> tuple[float, float]:
        return 2.0 / (self.fast + 1.0), 2.0 / (self.slow + 1.0)


@dataclass(frozen=True)
class Trades:
    """One symbol's trades in file order; the decimal places that hold every price and size exactly
    (the peers' instrument precisions)."""

    symbol: str
    ts: np.ndarray  # int64 ns UTC
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    price_decimals: int = 4
    size_decimals: int = 0

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass
class PeerResult:
    """One implementation's run: ``seconds`` covers ``what``; ``prepare_s`` the input conversion before it."""

    name: str
    what: str
    ticks: int
    seconds: float
    trades: int
    prepare_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds if self.seconds > 0 else float("inf")


def load_trades(path: str | Path, limit: int = 0) -> Trades:
    """The trades of ``path`` through ``tick_replay``'s readers (one symbol; ``limit`` > 0 keeps the first ones)."""
    ts: list[int] = []
    px: list[float] = []
    sz: list[float] = []
    symbols: set[str] = set()
    for t in open_ticks([path]):
        if t.type != TickType.TRADE or t.price <= 0.0:
            continue
        symbols.add(t.symbol)
        ts.append(t.ts_event)
        px.append(t.price)
        sz.append(t.size)
        if limit and len(ts) >= limit:
            break
    if len(symbols) != 1:
        raise ValueError(f"{path}: the workload needs the trades of exactly one symbol, found {sorted(symbols)}")
    price = np.array(px, dtype=np.float64)
    size = np.array(sz, dtype=np.float64)
    return Trades(symbols.pop(), np.array(ts, dtype=np.int64), price, size, _decimals(price), _decimals(size))


def _decimals(price: np.ndarray) -> int:
    """The fewest decimal places (<= 8) that represent every value exactly."""
    for d in range(9):
        if np.array_equal(np.round(price, d), price):
            return d
    raise ValueError("values need more than 8 decimal places")


def reference_crosses(prices, spec: EmaCrossSpec) -> list[tuple[int, int]]:
    """The acted-on crosses of the rule above as (trade number t, side +1/-1): plain Python, the yardstick."""
    a_f, a_s = spec.alphas()
    out: list[tuple[int, int]] = []
    fast = slow = 0.0
    last = 0
    for t, p in enumerate(prices, 1):
        if t == 1:
            fast = slow = p
        fast = a_f * p + (1.0 - a_f) * fast
        slow = a_s * p + (1.0 - a_s) * slow
        gap = fast - slow
        side = 1 if gap > 0.0 else (-1 if gap < 0.0 else 0)
        if side == 0 or side == last:
            continue
        if last != 0 and t >= spec.warmup:
            out.append((t, side))
        last = side
    return out
