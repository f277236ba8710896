"""A seeded synthetic market: the default tick source when no files are given.

Per symbol (``SYNA``, ``SYNB``, … at different price levels) a latent log price follows
GARCH(1,1) returns (volatility clustering) inside a three-state regime chain:

- ``normal`` — base arrival rate, no drift;
- ``trend`` — drift of ±0.35 σ̄ per event and order flow leaning the same way (momentum
  and breakout detectors have something to find), ~150 events long;
- ``burst`` — 3× volatility and 5× arrival rate (intensity bursts), ~60 events long.

Events arrive as a Poisson process (exponential inter-arrival times, rate = the sum of
the symbols' intensities); each is a QUOTE (top of book on a 0.01 tick grid, spread
widening with volatility, sizes in round lots) or a TRADE at the touch (side = the
aggressor, carrying the quote it hit). Time starts at 2024-01-02 14:30:00 UTC (the US
open). Everything is drawn from one ``numpy`` PCG64 generator: the same (n, symbols,
seed) always gives the same ticks, seq included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from common.messages import Tick, TickType

__all__ = ["BASE_TS_NS", "TICK_SIZE", "symbol_names", "synthetic_ticks"]

BASE_TS_NS = 1_704_205_800 * 1_000_000_000  # 2024-01-02 14:30:00 UTC
TICK_SIZE = 0.01
_RATE_PER_SYMBOL = 250.0  # events per second per symbol in the normal regime
_SIGMA = 3e-4  # long-run per-event return volatility
_ALPHA, _BETA = 0.10, 0.86  # GARCH(1,1): persistence 0.96 → visible clustering
_OMEGA = _SIGMA**2 * (1.0 - _ALPHA - _BETA)
_NORMAL, _TREND, _BURST = 0, 1, 2
_INTENSITY = (1.0, 1.5, 5.0)
_VOL_MULT = (1.0, 1.0, 3.0)
_TRADE_P = (0.25, 0.35, 0.5)
# Per-event regime switching probabilities from normal; leaving trend / burst.
_P_TREND, _P_BURST = 0.0015, 0.0008
_P_END = (0.0, 1 / 150, 1 / 60)
_CHUNK = 8192
_QUOTE, _TRADE = TickType.QUOTE, TickType.TRADE


def symbol_names(n: int) -> list[str]:
    """``SYNA``, ``SYNB``, … ``SYNZ``, ``SYNBA``, … (base-26 letters after ``SYN``)."""
    out = []
    for i in range(n):
        letters = ""
        k = i
        while True:
            letters = chr(ord("A") + k % 26) + letters
            k //= 26
            if k == 0:
                break
        out.append("SYN" + letters)
    return out


def _start_price(i: int) -> float:
    return round(20.0 * 2.2 ** (i % 8) * (1.0 + 0.13 * (i // 8)), 2)


def synthetic_ticks(n: int, symbols: int = 4, seed: int = 7) -> Iterator[Tick]:
    """``n`` synthetic ticks over ``symbols`` symbols, deterministic for ``seed`` (see module doc)."""
    if n < 0 or symbols < 1:
        raise ValueError("n must be >= 0 and symbols >= 1")
    rng = np.random.Generator(np.random.PCG64(seed))
    names = symbol_names(symbols)
    logp = [math.log(_start_price(i)) for i in range(symbols)]
    h = [_SIGMA**2] * symbols  # conditional variance
    regime = [_NORMAL] * symbols
    drift_dir = [0] * symbols
    seq = [0] * symbols
    intens = [_INTENSITY[_NORMAL]] * symbols
    total = float(sum(intens))
    # Current top of book per symbol, integer cents.
    bid_c = [0] * symbols
    ask_c = [0] * symbols
    bid_sz = [0.0] * symbols
    ask_sz = [0.0] * symbols
    for i in range(symbols):
        mid_c = _start_price(i) / TICK_SIZE
        bid_c[i] = int(mid_c) - 1
        ask_c[i] = int(mid_c) + 1
        bid_sz[i] = ask_sz[i] = 500.0
    ts = BASE_TS_NS
    emitted = 0
    sqrt = math.sqrt
    exp = math.exp
    while emitted < n:
        # Always whole chunks: the stream for a seed does not depend on n (a shorter run is a prefix).
        m = _CHUNK
        gaps = rng.standard_exponential(m).tolist()
        picks = rng.random(m).tolist()
        zs = rng.standard_normal(m).tolist()
        kinds = rng.random(m).tolist()
        switches = rng.random(m).tolist()
        sides = rng.random(m).tolist()
        lots = rng.geometric(0.35, size=(m, 2)).tolist()
        for j in range(min(m, n - emitted)):
            ts += int(gaps[j] / (total * _RATE_PER_SYMBOL) * 1e9) + 1
            # The symbol that ticks, in proportion to its intensity.
            u = picks[j] * total
            k = 0
            while k < symbols - 1 and u >= intens[k]:
                u -= intens[k]
                k += 1
            reg = regime[k]
            # GARCH(1,1) return with the regime's drift and volatility multiplier.
            # The recursion sees the GARCH shock only; drift and the burst multiplier scale the
            # output (feeding them back would make the variance explode).
            e = sqrt(h[k]) * zs[j]
            h[k] = _OMEGA + _ALPHA * e * e + _BETA * h[k]
            sd = sqrt(h[k]) * _VOL_MULT[reg]
            logp[k] += drift_dir[k] * 0.35 * _SIGMA + e * _VOL_MULT[reg]
            # Regime switching.
            sw = switches[j]
            if reg == _NORMAL:
                if sw < _P_TREND:
                    regime[k] = _TREND
                    drift_dir[k] = 1 if sw < _P_TREND / 2 else -1
                elif sw < _P_TREND + _P_BURST:
                    regime[k] = _BURST
            elif sw < _P_END[reg]:
                regime[k] = _NORMAL
                drift_dir[k] = 0
            if regime[k] != reg:
                total += _INTENSITY[regime[k]] - intens[k]
                intens[k] = _INTENSITY[regime[k]]
            seq[k] += 1
            lot = lots[j]
            if kinds[j] < _TRADE_P[reg]:
                # Aggressor leans with the trend; trades at the touch of the current quote.
                p_buy = 0.5 + 0.25 * drift_dir[k]
                if sides[j] < p_buy:
                    side, px = 1, ask_c[k]
                else:
                    side, px = -1, bid_c[k]
                yield Tick(
                    names[k], _TRADE, ts, seq[k], px / 100, 100.0 * lot[0],
                    bid_c[k] / 100, bid_sz[k], ask_c[k] / 100, ask_sz[k], side,
                )
            else:
                mid_c = exp(logp[k]) / TICK_SIZE
                spread = 1 + min(int(mid_c * sd * 4.0), 19)  # in ticks, wider when volatile
                b = max(1, int(mid_c - spread / 2))
                bid_c[k], ask_c[k] = b, b + spread
                bid_sz[k], ask_sz[k] = 100.0 * lot[0], 100.0 * lot[1]
                yield Tick(
                    names[k], _QUOTE, ts, seq[k], 0.0, 0.0,
                    b / 100, bid_sz[k], (b + spread) / 100, ask_sz[k], 0,
                )
        emitted += m
