"""Tick builders and small configs shared by the pattern engine tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from common.messages import Signal, Tick, TickBatch, TickType
from pattern_engine.pattern_config import PatternConfig, parse_pattern_config

T0 = 1_700_000_000_000_000_000
STEP_NS = 1_000_000


class TickMaker:
    """Builds ticks with per-symbol sequence numbers and a steadily advancing clock."""

    def __init__(self) -> None:
        self.seq: Counter[str] = Counter()
        self.ts = T0

    def _next(self, symbol: str) -> tuple[int, int]:
        self.seq[symbol] += 1
        self.ts += STEP_NS
        return self.ts, self.seq[symbol]

    def trade(self, symbol: str, price: float, size: float = 100.0, side: int = 0, **quote: float) -> Tick:
        ts, seq = self._next(symbol)
        return Tick(symbol=symbol, type=TickType.TRADE, ts_event=ts, seq=seq, price=price, size=size,
                    side=side, **quote)

    def quote(self, symbol: str, bid: float, ask: float, bid_size: float = 100.0, ask_size: float = 100.0) -> Tick:
        ts, seq = self._next(symbol)
        return Tick(symbol=symbol, type=TickType.QUOTE, ts_event=ts, seq=seq, bid=bid, ask=ask,
                    bid_size=bid_size, ask_size=ask_size)


def only(detector: str, features: dict | None = None, **params: object) -> PatternConfig:
    """A config with exactly one detector (of type ``detector``, named after it) enabled."""
    body = {"warmup": 50, "cooldown": 30, **params}
    return parse_pattern_config({"features": features or {}, "detectors": {detector: body}})


def noise(mk: TickMaker, symbol: str, n: int, price: float = 100.0, bps: float = 2.0, seed: int = 7,
          quotes: bool = True) -> list[Tick]:
    """A mean-reverting wiggle around ``price`` (small, bounded moves) of trades and quotes."""
    rng = np.random.default_rng(seed)
    out: list[Tick] = []
    for _ in range(n):
        p = round(price * (1 + rng.normal(0, bps) * 1e-4), 4)
        out.append(mk.trade(symbol, p, float(rng.integers(1, 300)), int(rng.integers(-1, 2))))
        if quotes:
            out.append(mk.quote(symbol, p - 0.01, p + 0.01, float(rng.integers(50, 150)),
                                float(rng.integers(50, 150))))
    return out


def random_walk(n: int, symbols: int, seed: int = 1, vol: float = 2e-4) -> list[Tick]:
    """Trades and quotes on a random walk per symbol, symbols interleaved at random."""
    rng = np.random.default_rng(seed)
    mk = TickMaker()
    px = np.full(symbols, 100.0)
    out: list[Tick] = []
    for _ in range(n):
        s = int(rng.integers(symbols))
        sym = f"S{s:03d}"
        px[s] *= float(np.exp(rng.normal(0, vol)))
        p = round(float(px[s]), 2)
        if rng.random() < 0.5:
            out.append(mk.trade(sym, p, float(rng.integers(1, 500)), int(rng.integers(-1, 2))))
        else:
            out.append(mk.quote(sym, p - 0.01, p + 0.01, float(rng.integers(1, 900)), float(rng.integers(1, 900))))
    return out


def run(engine, ticks: list[Tick], batch: int = 64) -> list[Signal]:
    sigs: list[Signal] = []
    for i in range(0, len(ticks), batch):
        sigs.extend(engine.on_batch(TickBatch(ticks=ticks[i : i + batch], ts_ingest=T0)))
    return sigs


def stable(signals: Iterable[Signal]) -> list[tuple]:
    """Signals without the wall-clock ``ts_signal`` (everything else must be reproducible)."""
    return [(s.signal_id, s.symbol, s.detector, s.side, s.strength, s.price, s.tick_seq, s.ts_event,
             s.ts_ingest, s.volatility) for s in signals]
