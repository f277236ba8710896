"""Sizing: a signal, a strategy's sizing model and the account context → a target position.

The strategy's ``sizing.model`` (``config/strategies.yml``) gives the *base* target size:

- ``fixed_fractional`` (default)::

      stop_distance = max(stop_k * volatility * sqrt(horizon_ticks), stop_floor_bps * price / 10_000)
      qty           = equity * allocation * risk_per_trade / stop_distance

  (lose ``risk_per_trade`` of the allocation, 2% by default, if the stop is hit);
- ``vol_target``: the position's one-sigma move over ``vol_horizon_ticks`` is ``target_vol``
  of the allocated capital, at most ``max_leverage`` times it in notional::

      qty = min(equity * allocation * target_vol / (volatility * sqrt(vol_horizon_ticks)),
                equity * allocation * max_leverage / price)

- ``fixed_notional``: ``qty = notional / price``;
- ``kelly``: with win probability ``p`` (the model's probability for the ``model`` type,
  else ``sizing.win_probability``) and payoff ratio ``b`` (``sizing.payoff_ratio``, else the
  stops' ``take_profit_r``)::

      f*  = p - (1 - p) / b
      f   = min(kelly_fraction * f*, kelly_cap)                 (f <= 0: no edge, no trade)
      qty = min(f, max_leverage) * equity * allocation / price

All quantities round down to the lot. The signal's side sets the target position: BUY →
long; SELL → short when ``allow_short``, else flat. The target is then capped, in order:

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
never happens (a BUY never sells). Quantities are ``Decimal`` and lot multiples. Every
result carries ``sizing``: the numbers that sized it (equity, cash, allocation, price,
vol, stop distance, the model's inputs and outputs, each cap's quantity, ``bound_<cap>``
= 1 for the binding one), which the engine copies into ``OrderIntent.sizing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from common.instruments import Instrument
from common.messages import Side
from strategy_engine.strategies import StrategyConfig

__all__ = ["SKIP_REASONS", "SizingResult", "base_size", "kelly_fraction", "size_intent", "stop_distance"]

ZERO = Decimal(0)
_BPS = Decimal(10_000)

# Reasons a signal yields no intent (counted as "signals_skipped.<reason>").
SKIP_REASONS = (
    "zero_qty", "no_edge", "max_position", "long_only", "cash", "min_trade", "at_target", "stale_context",
)
_BASE_BOUNDS = ("risk", "vol_target", "leverage", "notional", "kelly", "kelly_cap")


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


def _f(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def kelly_fraction(p: float, b: float, fraction: float, cap: float) -> tuple[float, float, bool]:
    """``(f*, f, capped)``: the full Kelly fraction ``p - (1 - p) / b`` and the one used,
    ``min(fraction * f*, cap)`` (0 when there is no edge)."""
    full = p - (1.0 - p) / b
    f = fraction * full
    capped = f > cap
    return full, (min(f, cap) if f > 0 else 0.0), capped


def base_size(
    *,
    price: Decimal,
    volatility: float,
    equity: Decimal,
    cfg: StrategyConfig,
    instrument: Instrument,
    p_win: float | None = None,
) -> tuple[Decimal, str, str, dict[str, float]]:
    """The sizing model's target size before caps: ``(qty, bound, reason_if_zero, inputs)``."""
    sz = cfg.sizing
    alloc = _f(cfg.allocation)
    capital = equity * alloc if equity > 0 else ZERO
    stop = stop_distance(price, volatility, cfg)
    inputs: dict[str, float] = {"stop_distance": float(stop), f"model_{sz.model}": 1.0}
    reason = ""
    if sz.model == "fixed_fractional":
        risk = _f(cfg.risk_per_trade)
        qty, bound = (instrument.round_qty(capital * risk / stop) if capital > 0 else ZERO), "risk"
        inputs["risk_budget"] = float(capital * risk)
    elif sz.model == "vol_target":
        sigma_h = volatility * math.sqrt(sz.vol_horizon_ticks) if math.isfinite(volatility) else 0.0
        lev_cap = instrument.round_qty(capital * _f(sz.max_leverage) / price)
        inputs |= {"target_vol": sz.target_vol, "vol_horizon_ticks": float(sz.vol_horizon_ticks),
                   "sigma_horizon": sigma_h, "max_leverage": sz.max_leverage, "cap_leverage_qty": float(lev_cap)}
        if sigma_h <= 0:
            qty, bound, reason = ZERO, "vol_target", "zero_qty"
        else:
            qty, bound = instrument.round_qty(capital * _f(sz.target_vol) / _f(sigma_h)), "vol_target"
        if qty > lev_cap:
            qty, bound = lev_cap, "leverage"
    elif sz.model == "fixed_notional":
        assert sz.notional is not None
        qty, bound = instrument.round_qty(sz.notional / price), "notional"
        inputs["notional"] = float(sz.notional)
    else:  # kelly
        p = p_win if p_win is not None else sz.win_probability
        b = sz.payoff_ratio if sz.payoff_ratio is not None else cfg.stops.take_profit_r
        if p is None or not b:
            qty, bound, reason = ZERO, "kelly", "no_edge"  # refused at config load; kept safe here
            full = f = 0.0
            capped = False
        else:
            full, f, capped = kelly_fraction(p, b, sz.kelly_fraction, sz.kelly_cap)
            lev = min(f, sz.max_leverage)
            qty = instrument.round_qty(capital * _f(lev) / price) if capital > 0 else ZERO
            bound = "kelly_cap" if capped else "kelly"
            if f <= 0:
                reason = "no_edge"
        inputs |= {"kelly_p": float(p or 0.0), "kelly_b": float(b or 0.0), "kelly_full": full,
                   "kelly_fraction": sz.kelly_fraction, "kelly_cap": sz.kelly_cap, "kelly_f": f}
        if capped:
            inputs["cap_kelly_hit"] = 1.0
    return qty, bound, reason, inputs


def flatten_size(side: Side, current: Decimal, instrument: Instrument) -> Decimal:
    """The quantity in direction ``side`` that closes an opposite position (0 if there is none)."""
    d = 1 if side == Side.BUY else -1
    return instrument.round_qty(max(-current * d, ZERO))


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
    p_win: float | None = None,
) -> SizingResult:
    """Size one signal for one strategy. ``cash`` is what is available to open exposure
    (after reservations); ``current`` the signed position including own in-flight intents;
    ``p_win`` the win probability for Kelly sizing (the model's probability), if any."""
    d = 1 if side == Side.BUY else -1
    cur_dir = current * d  # > 0: already positioned with the signal
    already = max(cur_dir, ZERO)

    risk_qty, bound, base_reason, inputs = base_size(
        price=price, volatility=volatility, equity=equity, cfg=cfg, instrument=instrument, p_win=p_win
    )
    target = risk_qty

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
        elif bound in _BASE_BOUNDS:
            reason = base_reason or ("zero_qty" if risk_qty == 0 else "at_target")
        else:
            reason = bound  # max_position | long_only | cash | min_trade

    sizing = {
        "equity": float(equity),
        "cash": float(cash),
        "vol": float(volatility),
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
    } | inputs
    return SizingResult(side, qty, reason, bound, opening, blocked_stale, sizing)
