"""Incremental per-symbol features: a struct of numpy arrays indexed by a symbol id.

The arrays are updated in place, O(1) per tick, by the compiled kernel in ``kernel.py``
(see its docstring for the column layout and what a *price event* is). This module owns
the parameters, the symbol registry (symbol → id, growing the arrays by doubling) and
read access for the rest of the engine, tests and model detectors.

Features (``FEATURES``, one column each): last trade, bid/ask and sizes, mid, spread (bps),
reference price, fast/slow EMAs, log return, EWMA realised volatility (log units, per price
event; ``vol_px`` in price units), z-score of price vs the slow EMA, VWAP and its deviation,
quote imbalance and its EWMA, trade-flow imbalance (EWMA of signed volume), inter-trade time
and trade intensity, rolling W-event high/low, log returns over 10 and 100 price events.
Half-lives are counted in events, so the features are the same whatever the wall-clock rate
of replay. ``docs/features.md`` defines each one; ``batch_features.py`` computes the same
rows in batch for training (same kernel code).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import chain
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.messages import MAX_BOOK_LEVELS
from pattern_engine import kernel

__all__ = [
    "COLUMN", "FEATURES", "FeatureParams", "FeatureState", "SymbolRegistry", "alpha", "book_columns", "model_columns",
    "tick_arrays",
]

FEATURES: tuple[str, ...] = kernel.FEATURE_NAMES
COLUMN: dict[str, int] = {name: i for i, name in enumerate(FEATURES)}


_FIELDS = operator.attrgetter("type", "side", "price", "size", "bid", "bid_size", "ask", "ask_size")


def tick_arrays(ticks: Sequence[Any], registry: SymbolRegistry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's input for ``ticks``: symbol ids (registering new symbols), ts_event, the
    8-column float matrix. Both drivers (live engine, batch features) convert through here.

    Raises OverflowError / ValueError / TypeError for values the arrays cannot hold.
    """
    n = len(ticks)
    sym = np.array([registry[t.symbol] for t in ticks], dtype=np.int64)
    ts = np.array([t.ts_event for t in ticks], dtype=np.int64)
    x = np.fromiter(chain.from_iterable(map(_FIELDS, ticks)), np.float64, 8 * n).reshape(n, 8)
    return sym, ts, x


def alpha(halflife: float) -> float:
    """EWMA weight of the newest observation for a half-life counted in observations."""
    return 1.0 - 0.5 ** (1.0 / halflife)


class FeatureParams(BaseModel):
    """The ``features:`` section of ``config/pattern.yml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    fast_halflife: float = Field(8.0, gt=0, le=1e6, description="Fast EMA half-life (price events).")
    slow_halflife: float = Field(64.0, gt=0, le=1e6, description="Slow EMA half-life (price events).")
    vol_halflife: float = Field(128.0, gt=0, le=1e6, description="Realised-volatility EWMA half-life (returns).")
    vwap_halflife: float = Field(
        512.0, ge=0, le=1e9, description="VWAP half-life (trades); 0 = session VWAP since the engine started."
    )
    flow_halflife: float = Field(32.0, gt=0, le=1e6, description="Signed-volume EWMA half-life (trades).")
    imbalance_halflife: float = Field(16.0, gt=0, le=1e6, description="Quote-imbalance EWMA half-life (quotes).")
    intensity_halflife: float = Field(32.0, gt=0, le=1e6, description="Inter-trade-time EWMA half-life (trades).")
    window: int = Field(64, ge=2, le=100_000, description="Rolling high/low window (price events).")
    # Left out of model_dump() (exclude=True): it decides which obi_<N> columns exist, not the value
    # of any feature, so a bundle's ``feature_params`` (recorded from model_dump()) stays the
    # numeric kernel settings; a model asking for a missing obi_<N> is refused by name instead.
    book_levels: list[Annotated[int, Field(ge=1, le=MAX_BOOK_LEVELS)]] = Field(
        default_factory=list, max_length=16, exclude=True,
        description="Order-book imbalance columns obi_<N> for these level counts N, from the book messages of "
        "the tick stream (empty: no book is kept, no obi column).",
    )

    @field_validator("book_levels")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("lists a level count twice")
        return v

    def recorded(self) -> dict[str, float]:
        """The settings a model bundle records as ``feature_params`` (numbers: ``book_levels`` is
        excluded) and the engine compares a bundle's with."""
        return {k: float(v) for k, v in self.model_dump().items()}

    def vector(self) -> np.ndarray:
        """The kernel's feature-parameter vector."""
        v = np.zeros(kernel.FP_SIZE, dtype=np.float64)
        a_slow = alpha(self.slow_halflife)
        v[kernel.FP_A_FAST] = alpha(self.fast_halflife)
        v[kernel.FP_A_SLOW] = a_slow
        v[kernel.FP_A_VOL] = alpha(self.vol_halflife)
        v[kernel.FP_A_VWAP] = alpha(self.vwap_halflife) if self.vwap_halflife > 0 else 0.0
        v[kernel.FP_A_FLOW] = alpha(self.flow_halflife)
        v[kernel.FP_A_QIMB] = alpha(self.imbalance_halflife)
        v[kernel.FP_A_INTENSITY] = alpha(self.intensity_halflife)
        v[kernel.FP_Z_NORM] = kernel.z_norm(a_slow)
        return v


def book_columns(params: FeatureParams) -> list[str]:
    """The order-book imbalance columns these settings compute: ``obi_<N>`` per ``book_levels``."""
    return [f"obi_{n}" for n in params.book_levels]


def model_columns(params: FeatureParams) -> dict[str, int]:
    """Feature name → column of the matrix model detectors see (``BatchContext.features``)
    with these settings: ``FEATURES`` in order, then ``obi_<N>`` for each ``book_levels``."""
    cols = dict(COLUMN)
    for j, name in enumerate(book_columns(params)):
        cols[name] = len(FEATURES) + j
    return cols


class SymbolRegistry(dict):
    """symbol → dense id; looking up an unknown symbol registers it (ids in first-seen order)."""

    def __init__(self) -> None:
        super().__init__()
        self.symbols: list[str] = []

    def __missing__(self, symbol: str) -> int:
        sid = len(self.symbols)
        self.symbols.append(symbol)
        self[symbol] = sid
        return sid


class FeatureState:
    """Per-symbol feature arrays (rows = symbol ids) plus the rule detectors' per-symbol state.

    The detectors' cooldown anchors and private state live here too so that one registry
    grows every per-symbol array together.
    """

    def __init__(self, params: FeatureParams, n_detectors: int = 0, capacity: int = 64) -> None:
        self.params = params
        self.fp = params.vector()
        self.n_detectors = n_detectors
        self._initial = max(1, capacity)
        self.reset()

    def reset(self) -> None:
        """Forget every symbol (state is rebuilt from the stream; detectors warm up again)."""
        self.registry = SymbolRegistry()
        self.capacity = self._initial
        self._set(kernel.new_arrays(self.capacity, self.params.window, self.n_detectors))

    def _set(self, arrays: dict[str, np.ndarray]) -> None:
        self.F = arrays["F"]
        self.I = arrays["I"]
        self.ring = arrays["ring"]
        self.dq = arrays["dq"]
        self.hist = arrays["hist"]
        self.last_fire = arrays["last_fire"]
        self.det_state = arrays["det_state"]

    def ensure_capacity(self) -> None:
        """Grow every array (doubling) once the registry holds more symbols than rows."""
        n = len(self.registry.symbols)
        if n <= self.capacity:
            return
        cap = self.capacity
        while cap < n:
            cap *= 2
        fresh = kernel.new_arrays(cap, self.params.window, self.n_detectors)
        old = {"F": self.F, "I": self.I, "ring": self.ring, "dq": self.dq, "hist": self.hist,
               "last_fire": self.last_fire, "det_state": self.det_state}  # fmt: skip
        for name, arr in old.items():
            fresh[name][: self.capacity] = arr
        self._set(fresh)
        self.capacity = cap

    @property
    def symbols(self) -> list[str]:
        return self.registry.symbols

    def id_of(self, symbol: str) -> int | None:
        return self.registry.get(symbol)

    def ticks(self, symbol: str) -> int:
        """Ticks seen for ``symbol`` (0 if never seen)."""
        sid = self.registry.get(symbol)
        return 0 if sid is None else int(self.I[sid, kernel.N_TICKS])

    def price_events(self, symbol: str) -> int:
        sid = self.registry.get(symbol)
        return 0 if sid is None else int(self.I[sid, kernel.N_PRICE])

    def row(self, symbol: str) -> dict[str, float] | None:
        """The features of ``symbol`` by name (None if never seen)."""
        sid = self.registry.get(symbol)
        if sid is None:
            return None
        return dict(zip(FEATURES, self.F[sid, : kernel.N_FEATURES].tolist()))

    def matrix(self, ids: Any) -> np.ndarray:
        """A copy of the feature rows of ``ids`` (columns ``FEATURES``)."""
        return self.F[ids, : kernel.N_FEATURES]
