"""Backtest metrics: pure functions of the equity curve and the fills.

The equity curve is sampled on a grid of ``sample_s`` seconds of market time (the value at the
end of each interval; ``backend.backtest.runner``); a period return is the change between two
consecutive grid points. Annualisation counts calendar time: ``periods per year =
SECONDS_PER_YEAR / sample_s`` (365.25 days), so figures from markets that close overnight are
comparable with 24/7 ones only through that convention.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SECONDS_PER_YEAR", "Fill", "cagr", "exposure", "max_drawdown", "period_returns", "profit_factor",
    "round_trips", "sharpe", "sortino", "summary", "total_return", "turnover", "value_at_risk", "win_rate",
]

SECONDS_PER_YEAR = 365.25 * 86_400


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill as the metrics need it: side +1 buy / -1 sell, fee in account currency."""

    ts: int
    symbol: str
    side: int
    qty: float
    price: float
    fee: float


def total_return(equity: Sequence[float]) -> float:
    return equity[-1] / equity[0] - 1.0 if len(equity) >= 2 and equity[0] else 0.0


def cagr(equity: Sequence[float], span_s: float) -> float | None:
    """Compound annual growth over ``span_s`` seconds; None under one day (an annualised rate from
    minutes says nothing) or when the equity ends at or below zero."""
    if span_s < 86_400 or len(equity) < 2 or equity[0] <= 0 or equity[-1] <= 0:
        return None
    return (equity[-1] / equity[0]) ** (SECONDS_PER_YEAR / span_s) - 1.0


def period_returns(equity: Sequence[float]) -> list[float]:
    return [b / a - 1.0 for a, b in itertools.pairwise(equity) if a]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def sharpe(returns: Sequence[float], sample_s: float) -> float | None:
    """Mean over sample standard deviation of the period returns (risk-free rate 0), annualised by
    ``sqrt(periods per year)``; None with fewer than two returns or no variation."""
    if len(returns) < 2:
        return None
    m = _mean(returns)
    sd = math.sqrt(sum((r - m) ** 2 for r in returns) / (len(returns) - 1))
    return m / sd * math.sqrt(SECONDS_PER_YEAR / sample_s) if sd > 0 else None


def sortino(returns: Sequence[float], sample_s: float) -> float | None:
    """Mean over downside deviation (``sqrt(mean(min(r, 0)^2))`` over all periods), annualised as
    ``sharpe``; None with fewer than two returns or no losing period."""
    if len(returns) < 2:
        return None
    dd = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / len(returns))
    return _mean(returns) / dd * math.sqrt(SECONDS_PER_YEAR / sample_s) if dd > 0 else None


def max_drawdown(equity: Sequence[float]) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0.25 = 25 %)."""
    peak, worst = -math.inf, 0.0
    for e in equity:
        peak = max(peak, e)
        if peak > 0:
            worst = max(worst, (peak - e) / peak)
    return worst


def value_at_risk(returns: Sequence[float], level: float = 0.95) -> float | None:
    """Historical VaR: the loss (positive fraction) of the period return at the ``1 - level``
    quantile (the lower empirical quantile, no interpolation); None without returns."""
    if not returns:
        return None
    xs = sorted(returns)
    k = max(0, math.ceil(round((1.0 - level) * len(xs), 9)) - 1)  # round: 0.05 * 20 is 1.0000000000000009
    return max(0.0, -xs[k])


def round_trips(fills: Sequence[Fill]) -> list[float]:
    """P&L of each round trip, fees included: per symbol, from leaving flat to being flat again
    (a fill that crosses zero closes one trip and opens the next with the rest)."""
    pos: dict[str, float] = {}
    pnl: dict[str, float] = {}
    out: list[float] = []
    for f in fills:
        q = pos.get(f.symbol, 0.0)
        signed = f.side * f.qty
        fee_rate = f.fee / f.qty if f.qty else 0.0
        if q and (q > 0) != (signed > 0) and abs(signed) >= abs(q) - 1e-12:
            closing = abs(q)
            acc = pnl.get(f.symbol, 0.0) - f.side * closing * f.price - fee_rate * closing
            out.append(acc)
            rest = signed + q
            pos[f.symbol] = rest if abs(rest) > 1e-12 else 0.0
            pnl[f.symbol] = -rest * f.price - fee_rate * abs(rest) if pos[f.symbol] else 0.0
            continue
        pos[f.symbol] = q + signed
        pnl[f.symbol] = pnl.get(f.symbol, 0.0) - signed * f.price - f.fee
    return out


def win_rate(trips: Sequence[float]) -> float | None:
    return sum(1 for t in trips if t > 0) / len(trips) if trips else None


def profit_factor(trips: Sequence[float]) -> float | None:
    """Gross profit over gross loss of the round trips; None when no trip lost (undefined)."""
    loss = -sum(t for t in trips if t < 0)
    return sum(t for t in trips if t > 0) / loss if loss > 0 else None


def exposure(gross: Sequence[float]) -> float:
    """Fraction of grid intervals that end holding a position (gross exposure > 0)."""
    return sum(1 for g in gross[1:] if g > 0) / (len(gross) - 1) if len(gross) >= 2 else 0.0


def turnover(fills: Sequence[Fill], equity: Sequence[float]) -> float:
    """Traded notional over the mean equity (2.0: the capital changed hands twice)."""
    if not equity:
        return 0.0
    mean = _mean(equity)
    return sum(f.qty * f.price for f in fills) / mean if mean > 0 else 0.0


def summary(ts: Sequence[int], equity: Sequence[float], gross: Sequence[float], fills: Sequence[Fill],
            sample_s: float) -> dict[str, float | int | None]:
    """Every metric of one backtest (docs/backtests.md, "Metrics")."""
    rets = period_returns(equity)
    trips = round_trips(fills)
    span = (ts[-1] - ts[0]) / 1e9 if len(ts) >= 2 else 0.0
    return {
        "total_return": total_return(equity),
        "cagr": cagr(equity, span),
        "sharpe": sharpe(rets, sample_s),
        "sortino": sortino(rets, sample_s),
        "max_drawdown": max_drawdown(equity),
        "win_rate": win_rate(trips),
        "profit_factor": profit_factor(trips),
        "round_trips": len(trips),
        "exposure": exposure(gross),
        "turnover": turnover(fills, equity),
        "fees": sum(f.fee for f in fills),
        "var_95": value_at_risk(rets, 0.95),
        "final_equity": equity[-1] if equity else None,
        "span_s": span,
        "sample_s": sample_s,
    }
