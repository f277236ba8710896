"""Fixed-fractional sizing: each cap binds in its scenario, lots round down, no short when disallowed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.instruments import Instrument
from common.messages import Side
from strategy_engine.sizing import kelly_fraction, size_intent, stop_distance
from strategy_engine.strategies import StrategyConfig

D = Decimal
UNIT = Instrument("AAA", D("1"), D("0.01"))
FX = Instrument("EURUSD", D("1000"), D("0.00001"))


def _cfg(**kw) -> StrategyConfig:
    base = {
        "name": "s",
        "detectors": ("momentum_burst",),
        "allocation": 0.25,
        "risk_per_trade": 0.02,
        "stop_k": 2.0,
        "horizon_ticks": 16,
        "stop_floor_bps": 10,
        "max_position_notional": D("1000000"),
        "allow_short": False,
    }
    return StrategyConfig(**(base | kw))


def _size(
    side=Side.BUY,
    price="100",
    vol=0.5,
    equity="1000000",
    cash="1000000",
    current="0",
    cfg=None,
    inst=UNIT,
    **kw,
):
    return size_intent(
        side=side,
        price=D(price),
        volatility=vol,
        equity=D(equity),
        cash=D(cash),
        current=D(current),
        cfg=cfg or _cfg(),
        instrument=inst,
        fee_buffer_bps=kw.pop("fee_buffer_bps", 10.0),
        **kw,
    )


def test_risk_sizing_when_no_cap_binds():
    # stop = 2 * 0.5 * sqrt(16) = 4; risk budget = 1e6 * 0.25 * 0.02 = 5000 -> 1250 units.
    r = _size()
    assert (r.qty, r.bound, r.reason, r.side) == (D(1250), "risk", "", Side.BUY)
    assert r.opening_qty == D(1250)
    s = r.sizing
    assert s["equity"] == 1e6 and s["stop_distance"] == 4.0 and s["risk_fraction"] == 0.02 and s["vol"] == 0.5
    assert s["cash"] == 1e6 and s["bound_risk"] == 1.0 and s["target_position"] == 1250
    assert all(isinstance(v, float) for v in s.values())


def test_stop_distance_never_below_the_floor():
    cfg = _cfg(stop_floor_bps=50)
    assert stop_distance(D("100"), 0.0, cfg) == D("0.5")  # no volatility: the floor
    assert stop_distance(D("100"), float("nan"), cfg) == D("0.5")
    assert stop_distance(D("100"), 1.0, cfg) == D("8.0")
    assert _size(vol=0.0, cfg=cfg, cash="5000000").qty == D(10000)  # 5000 / 0.5


def test_quantity_rounds_down_to_the_lot():
    # 5000 / 4 = 1250 units -> 1 lot of 1000.
    r = _size(inst=FX, price="1.1", vol=0.5)
    assert r.qty == D(1000) and r.qty % FX.lot_size == 0
    assert _size(equity="100", inst=FX, price="1.1").reason == "zero_qty"


def test_cash_cap_binds_on_a_buy_with_fee_buffer():
    r = _size(cash="40000", fee_buffer_bps=100)  # 39600 spendable at 100 -> 396 units
    assert (r.qty, r.bound) == (D(396), "cash")
    r = _size(cash="10000", fee_buffer_bps=100, cfg=_cfg(min_trade_fraction=0))  # 9900 -> 99 units
    assert (r.qty, r.bound) == (D(99), "cash")
    assert r.sizing["bound_cash"] == 1.0 and r.sizing["cap_cash_qty"] == 99
    assert _size(cash="50").reason == "cash"
    assert _size(cash="-5").reason == "cash"


def test_small_top_ups_are_skipped_below_min_trade_fraction():
    # Target 1250: holding 1000 leaves a 250 gap, under 25% (312.5) of the target.
    r = _size(current="1000")
    assert (r.qty, r.reason) == (D(0), "min_trade")
    assert _size(current="900").qty == D(350)
    assert _size(current="1000", cfg=_cfg(min_trade_fraction=0)).qty == D(250)
    # Cash for less than a quarter of the target: nothing, and cash is why.
    assert _size(cash="30000").reason == "cash"


def test_max_position_notional_caps_the_resulting_position():
    cfg = _cfg(max_position_notional=D("30000"))
    assert (_size(cfg=cfg).qty, _size(cfg=cfg).bound) == (D(300), "max_position")
    # Already holding 200: only 100 more to reach the cap.
    assert _size(cfg=cfg, current="200").qty == D(100)
    assert _size(cfg=cfg, current="300").reason == "max_position"


def test_no_short_when_disallowed_a_sell_only_reduces_the_long():
    flat = _size(side=Side.SELL)
    assert (flat.qty, flat.reason) == (D(0), "long_only")
    r = _size(side=Side.SELL, current="300")
    assert (r.qty, r.side, r.bound, r.opening_qty) == (D(300), Side.SELL, "long_only", D(0))
    assert r.sizing["target_position"] == 0


def test_opposite_signal_closes_then_opens_when_short_is_allowed():
    cfg = _cfg(allow_short=True)
    r = _size(side=Side.SELL, cfg=cfg)
    assert (r.qty, r.sizing["target_position"]) == (D(1250), -1250)
    flip = _size(side=Side.BUY, cfg=cfg, current="-400")
    assert flip.qty == D(1650) and flip.opening_qty == D(1250)
    # Cash only limits the opening part: covering the short is always allowed.
    covered = _size(side=Side.BUY, cfg=cfg, current="-400", cash="0")
    assert (covered.qty, covered.opening_qty, covered.bound) == (D(400), D(0), "cash")


def test_a_signal_never_trades_against_itself_or_beyond_target():
    assert _size(current="1250").reason == "at_target"
    assert _size(current="5000").reason == "at_target"  # over target: a BUY never sells


def test_stale_context_blocks_opening_but_lets_a_position_close():
    r = _size(can_open=False)
    assert (r.qty, r.reason, r.blocked_stale) == (D(0), "stale_context", True)
    cfg = _cfg(allow_short=True)
    close = _size(side=Side.SELL, current="700", cfg=cfg, can_open=False)
    assert (close.qty, close.blocked_stale, close.sizing["target_position"]) == (D(700), True, 0)
    same_way = _size(current="100", can_open=False)
    assert same_way.qty == 0 and same_way.blocked_stale


@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from([Side.BUY, Side.SELL]),
    price=st.decimals(min_value=D("0.01"), max_value=D("5000"), places=2),
    vol=st.floats(min_value=0, max_value=50, allow_nan=False),
    equity=st.decimals(min_value=D("-1000"), max_value=D("1e7"), places=2),
    cash=st.decimals(min_value=D("-1000"), max_value=D("1e7"), places=2),
    current=st.integers(-5000, 5000),
    allow_short=st.booleans(),
    max_notional=st.decimals(min_value=D("1"), max_value=D("1e6"), places=0),
    lot=st.sampled_from([D("1"), D("10"), D("0.001")]),
    can_open=st.booleans(),
)
def test_sizing_invariants(side, price, vol, equity, cash, current, allow_short, max_notional, lot, can_open):
    inst = Instrument("X", lot, D("0.01"))
    cur = D(current) * lot
    cfg = _cfg(allow_short=allow_short, max_position_notional=max_notional)
    r = size_intent(
        side=side,
        price=price,
        volatility=vol,
        equity=equity,
        cash=cash,
        current=cur,
        cfg=cfg,
        instrument=inst,
        fee_buffer_bps=10,
        can_open=can_open,
    )
    assert r.qty >= 0 and r.qty % lot == 0
    assert (r.qty == 0) == (r.reason != "")
    d = 1 if side == Side.BUY else -1
    after = cur + d * r.qty
    if r.qty:
        # Exposure opened never exceeds cash (less the buffer) nor the position cap.
        assert r.opening_qty * price <= max(cash, D(0)) * (1 - D("0.001")) + D("1e-9")
        if r.opening_qty:
            assert abs(after) * price <= max_notional
            assert can_open
    if not allow_short and cur >= 0:
        assert after >= 0
    if not can_open:
        assert abs(after) <= abs(cur)


# -- sizing models ---------------------------------------------------------------------------------
def _model(**sizing):
    stops = sizing.pop("stops", {})
    return _cfg(sizing=sizing, stops=stops, max_position_notional=D("1e9"))


def test_vol_target_formula_and_leverage_cap():
    # capital 250000; sigma over 100 ticks = 0.5 * 10 = 5 -> 250000 * 0.01 / 5 = 500 units (50000 notional).
    r = _size(cfg=_model(model="vol_target", target_vol=0.01, vol_horizon_ticks=100))
    assert (r.qty, r.bound) == (D(500), "vol_target")
    assert r.sizing["sigma_horizon"] == 5.0 and r.sizing["target_vol"] == 0.01 and r.sizing["model_vol_target"] == 1
    # A tiny vol would lever up: capped at max_leverage * capital / price = 0.5 * 250000 / 100 = 1250.
    capped = _size(vol=0.001, cfg=_model(model="vol_target", max_leverage=0.5))
    assert (capped.qty, capped.bound) == (D(1250), "leverage") and capped.sizing["bound_leverage"] == 1.0
    assert _size(vol=0.0, cfg=_model(model="vol_target")).reason == "zero_qty"


def test_fixed_notional():
    r = _size(cfg=_model(model="fixed_notional", notional=D("12345")))
    assert (r.qty, r.bound, r.sizing["notional"]) == (D(123), "notional", 12345.0)
    with pytest.raises(ValueError, match="notional"):
        _model(model="fixed_notional")


@pytest.mark.parametrize(
    ("p", "b", "frac", "cap", "full", "used", "capped"),
    [
        (0.6, 1.0, 1.0, 1.0, 0.2, 0.2, False),  # f* = 0.6 - 0.4 / 1
        (0.6, 2.0, 0.5, 1.0, 0.4, 0.2, False),  # f* = 0.6 - 0.4 / 2 = 0.4, half Kelly
        (0.9, 3.0, 1.0, 0.25, 0.9 - 0.1 / 3, 0.25, True),  # capped
        (0.4, 1.0, 1.0, 1.0, -0.2, 0.0, False),  # no edge
    ],
)
def test_kelly_fraction_formula(p, b, frac, cap, full, used, capped):
    f_full, f, hit = kelly_fraction(p, b, frac, cap)
    assert f_full == pytest.approx(full) and f == pytest.approx(used) and hit == capped


def test_kelly_sizing_uses_the_model_probability_and_records_its_inputs():
    cfg = _model(model="kelly", win_probability=0.55, payoff_ratio=2.0, kelly_fraction=0.5, kelly_cap=0.25)
    # Configured edge: f* = 0.55 - 0.45 / 2 = 0.325, half = 0.1625 -> 0.1625 * 250000 / 100 = 406 units.
    r = _size(cfg=cfg)
    assert (r.qty, r.bound) == (D(406), "kelly")
    assert r.sizing["kelly_p"] == 0.55 and r.sizing["kelly_b"] == 2.0 and r.sizing["kelly_f"] == pytest.approx(0.1625)
    # The model's probability replaces the configured one; a strong one hits the cap (0.25 -> 625 units).
    strong = _size(cfg=cfg, p_win=0.95)
    assert (strong.qty, strong.bound, strong.sizing["cap_kelly_hit"]) == (D(625), "kelly_cap", 1.0)
    weak = _size(cfg=cfg, p_win=0.3)
    assert (weak.qty, weak.reason, weak.sizing["kelly_f"]) == (D(0), "no_edge", 0.0)
    # b defaults to the stops' take-profit multiple.
    tp = _model(model="kelly", win_probability=0.6, kelly_fraction=1.0, kelly_cap=1.0, stops={"take_profit_r": 1.0})
    assert _size(cfg=tp, cash="1e9").sizing["kelly_b"] == 1.0


def test_kelly_without_an_edge_source_is_refused_at_load():
    from common.config import ConfigError
    from strategy_engine.strategies import parse_strategies

    base = {"name": "k", "detectors": ["x"], "allocation": 0.1, "max_position_notional": "1000"}
    with pytest.raises(ConfigError, match="win_probability"):
        parse_strategies({"strategies": [base | {"sizing": {"model": "kelly", "payoff_ratio": 1}}]})
    with pytest.raises(ConfigError, match="payoff_ratio"):
        parse_strategies({"strategies": [base | {"type": "model", "sizing": {"model": "kelly"}}]})
    (ok,) = parse_strategies({"strategies": [base | {"type": "model", "sizing": {"model": "kelly", "payoff_ratio": 1}}]})
    assert ok.sizing.model == "kelly"


@pytest.mark.parametrize("model", ["fixed_fractional", "vol_target", "fixed_notional", "kelly"])
def test_every_model_keeps_every_cap(model):
    extra = {"notional": D("1e9")} if model == "fixed_notional" else {}
    if model == "kelly":
        extra = {"win_probability": 0.99, "payoff_ratio": 5.0, "kelly_cap": 1.0, "max_leverage": 100.0}
    elif model == "vol_target":
        extra = {"max_leverage": 100.0}
    cfg = _cfg(sizing={"model": model, **extra}, max_position_notional=D("30000"))
    assert (_size(cfg=cfg).qty, _size(cfg=cfg).bound) == (D(300), "max_position")
    assert _size(cfg=cfg, cash="10000", fee_buffer_bps=0).bound == "cash"
    assert _size(side=Side.SELL, cfg=cfg).reason == "long_only"
    assert _size(cfg=cfg, can_open=False).reason == "stale_context"
    assert _size(cfg=cfg, current="290").reason == "min_trade"
