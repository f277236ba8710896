"""Fixed-fractional sizing with caps: a signal and the account context → a target position.

::

    stop_distance = max(stop_k * volatility * sqrt(horizon_ticks), stop_floor_bps * price / 10_000)
    risk_qty      = equity * allocation * risk_per_trade / stop_distance   (rounded down to the lot)

The signal's side sets the target position: BUY → long ``risk_qty``; SELL → short
``risk_qty`` when ``allow_short``, else flat. The target is then capped, in order:

- ``max_position``: ``|target| * price <= max_position_notional``;
- ``long_only``: a SELL without ``allow_short`` targets flat, so it never sells more than
  the long position;
- ``cash``: the part that opens or adds exposure costs ``qty * price`` of available cash,
  less a fee buffer (short sales are held to the same 100% margin);
- ``min_trade``: exposure is added only in steps of at least ``min_trade_fraction`` of
  the target (default 0.25), so a repeated signal does not churn small top-ups and a
  replay decides the same way whatever the refresh timing;
- ``stale``: with a stale account context nothing new is opened; closing still is. A
  signal that yields nothing while the context is stale is reported as blocked by it.

The order is ``target - current`` in the signal's direction; trading against the signal
never happens (a BUY never sells). Quantities are ``Decimal`` and lot multiples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from common.instruments import Instrument
from common.messages import Side
from strategy_engine.strategies import StrategyConfig

__all__ = ["SKIP_REASONS", "SizingResult", "size_intent", "stop_distance"]

ZERO = Decimal(0)
_BPS = Decimal(10_000)

# Reasons a signal yields no intent (counted as "signals_skipped.<reason>").
SKIP_REASONS = ("zero_qty", "max_position", "long_only", "cash", "min_trade", "at_target", "stale_context")


@dataclass(frozen=True, slots=True)
class SizingResult:
    side: Side
    qty: Decimal  # order quantity (>= 0, a lot multiple); 0 = no intent
    reason: str  # why qty is 0 (one of SKIP_REASONS), "" otherwise
    bound: str  # what set the target: risk | max_position | long_only | cash | min_trade | stale
    opening_qty: Decimal  # the part of qty that opens or adds exposure (needs cash / margin)
    blocked_stale: bool  # the stale-context rule cut the order
    sizing: dict[str, float] = field(default_factory=dict)


def stop_distance(price: Decimal, volatility: float, cfg: StrategyConfig) -> Decimal:
    """The stop distance in price units (never below the floor, so never zero)."""
    by_vol = cfg.stop_k * volatility * math.sqrt(cfg.horizon_ticks)
    floor = Decimal(repr(cfg.stop_floor_bps)) * price / _BPS
    if not math.isfinite(by_vol) or by_vol <= 0:
        return floor
    return max(Decimal(repr(by_vol)), floor)


def size_intent(
    *,
    side: Side,
    price: Decimal,
    volatility: float,
    equity: Decimal,
    cash: Decimal,
    current: Decimal,
    cfg: StrategyConfig,
    instrument: Instrument,
    fee_buffer_bps: float = 10.0,
    can_open: bool = True,
) -> SizingResult:
    """Size one signal for one strategy. ``cash`` is what is available to open exposure
    (after reservations); ``current`` the signed position including own in-flight intents."""
    d = 1 if side == Side.BUY else -1
    cur_dir = current * d  # > 0: already positioned with the signal
    already = max(cur_dir, ZERO)
    stop = stop_distance(price, volatility, cfg)

    alloc, risk = Decimal(repr(cfg.allocation)), Decimal(repr(cfg.risk_per_trade))
    risk_qty = instrument.round_qty(equity * alloc * risk / stop) if equity > 0 else ZERO
    target, bound = risk_qty, "risk"

    pos_cap = instrument.round_qty(cfg.max_position_notional / price)
    if target > pos_cap:
        target, bound = pos_cap, "max_position"
    if d < 0 and not cfg.allow_short:
        target, bound = ZERO, "long_only"

    desired = target
    cash_cap = ZERO
    if target > already:
        spendable = cash * (1 - Decimal(repr(fee_buffer_bps)) / _BPS)
        cash_cap = instrument.round_qty(spendable / price) if spendable > 0 else ZERO
        if target - already > cash_cap:
            target, bound = already + cash_cap, "cash"
        # No small top-ups: adding less than min_trade_fraction of the target is churn, and it would make
        # the decision hinge on cents of equity or cash that differ between refresh timings.
        if target - already < Decimal(repr(cfg.min_trade_fraction)) * desired:
            target = already
            if bound != "cash":
                bound = "min_trade"

    blocked_stale = False
    if not can_open and target > already:
        target, bound, blocked_stale = already, "stale", True

    want = target - cur_dir
    qty = instrument.round_qty(want) if want > 0 else ZERO
    opening = max(qty - max(-cur_dir, ZERO), ZERO)

    reason = ""
    if qty == 0:
        if not can_open:
            # Every input came from the stale context: whatever the other caps say, staleness blocked it.
            reason, blocked_stale = "stale_context", True
        elif bound == "risk":
            reason = "zero_qty" if risk_qty == 0 else "at_target"
        else:
            reason = bound  # max_position | long_only | cash | min_trade

    sizing = {
        "equity": float(equity),
        "cash": float(cash),
        "vol": float(volatility),
        "stop_distance": float(stop),
        "risk_fraction": cfg.risk_per_trade,
        "allocation": cfg.allocation,
        "min_trade_fraction": cfg.min_trade_fraction,
        "price": float(price),
        "risk_qty": float(risk_qty),
        "cap_position_qty": float(pos_cap),
        "cap_cash_qty": float(cash_cap),
        "current_position": float(current),
        "target_position": float(target * d),
        f"bound_{bound}": 1.0,
    }
    return SizingResult(side, qty, reason, bound, opening, blocked_stale, sizing)
