"""Pre-trade checks: each rejects with its code and passes at its boundary; config validation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.config import ConfigError
from common.messages import OrdType
from execution.risk import GLOBAL_KEYS, LIMIT_KEYS, RejectCode, RiskConfig, RiskEngine, Throttle
from execution.venues.simulator import SimulatedVenue

from .conftest import LIMITS, ROOT, intent

D = Decimal


@pytest.fixture
def risk(risk_config, instruments) -> RiskEngine:
    venue = SimulatedVenue(instruments, fee_bps=D("1"), min_fee=D("0.01"))
    return RiskEngine(risk_config, instruments, venue.fee)


def run(risk: RiskEngine, it, **kw):
    args = {"halted": False, "known": False, "mark": D("10"), "position": D(0), "open_same_side": D(0),
            "cash": D("100000"), "open_buy_notional": D(0)}
    args.update(kw)
    return risk.check(it, **args)


def test_a_plain_order_passes(risk):
    assert run(risk, intent()) is None


def test_kill_switch_rejects_everything(risk):
    assert run(risk, intent(), halted=True) == RejectCode.KILL_SWITCH


def test_duplicate_client_order_id_is_answered_before_the_kill_switch(risk):
    assert run(risk, intent(), known=True) == RejectCode.DUPLICATE_CLORDID
    assert run(risk, intent(), known=True, halted=True) == RejectCode.DUPLICATE_CLORDID


@pytest.mark.parametrize("qty", ["0", "-0", "-1", "NaN", "Infinity", "1.5", "1E+999999", "1E-999999"])
def test_invalid_quantity(risk, qty):
    assert run(risk, intent(qty=qty)) == RejectCode.INVALID_QTY


def test_quantity_must_be_a_whole_number_of_lots(risk):
    # BTCUSDT lot size is 0.00001
    assert run(risk, intent("BTCUSDT", qty="0.000015", ref="10")) == RejectCode.INVALID_QTY
    assert run(risk, intent("BTCUSDT", qty="0.00002", ref="10")) is None


def test_limit_price_must_be_on_the_tick_grid(risk):
    assert run(risk, intent(order_type=OrdType.LIMIT, limit="10.005")) == RejectCode.INVALID_PRICE
    assert run(risk, intent(order_type=OrdType.LIMIT)) == RejectCode.INVALID_PRICE
    assert run(risk, intent(order_type=OrdType.LIMIT, limit="10.01")) is None


def test_absurd_prices_are_invalid_not_errors(risk):
    assert run(risk, intent(ref="1E+999999")) == RejectCode.INVALID_PRICE
    assert run(risk, intent(ref="0")) == RejectCode.INVALID_PRICE
    assert run(risk, intent(order_type=OrdType.LIMIT, limit="1E+999999")) == RejectCode.INVALID_PRICE


def test_stop_orders_need_a_sane_stop_price_and_a_buy_stop_is_valued_at_its_stop(risk):
    assert run(risk, intent(order_type=OrdType.STOP, stop="10.20")) is None
    assert run(risk, intent(side=-1, order_type=OrdType.STOP, stop="9.50")) is None
    for bad in (None, "0", "-1", "10.001"):
        assert run(risk, intent(order_type=OrdType.STOP, stop=bad)) == RejectCode.INVALID_PRICE
    # 100 x 10 + fee fits 1030 of cash at the mark, not at a buy stop of 10.30 (it fills at or above it)
    assert run(risk, intent(qty="100"), cash=D("1030")) is None
    assert run(risk, intent(qty="100", order_type=OrdType.STOP, stop="10.30"), cash=D("1030")) == RejectCode.CASH
    it = intent(qty="100", order_type=OrdType.STOP, stop="10.30")
    assert risk.notional(it, D("10")) == D("1030.00")


def test_max_qty_boundary(risk):
    assert run(risk, intent(qty="1000")) is None
    assert run(risk, intent(qty="1001")) == RejectCode.MAX_QTY
    assert run(risk, intent("BTCUSDT", qty="2", ref="10")) is None  # per-symbol override
    assert run(risk, intent("BTCUSDT", qty="2.00001", ref="10")) == RejectCode.MAX_QTY


def test_no_reference_price_fails_closed(risk):
    assert run(risk, intent(), mark=None) == RejectCode.NO_REFERENCE_PRICE


def test_price_collar_boundary_on_ref_and_limit_price(risk):
    # 100 bps of a mark of 10 = 0.10
    assert run(risk, intent(ref="10.10")) is None
    assert run(risk, intent(ref="9.90")) is None
    assert run(risk, intent(ref="10.11")) == RejectCode.PRICE_COLLAR
    assert run(risk, intent(ref="9.89")) == RejectCode.PRICE_COLLAR
    assert run(risk, intent(order_type=OrdType.LIMIT, limit="10.10")) is None
    assert run(risk, intent(order_type=OrdType.LIMIT, limit="10.11")) == RejectCode.PRICE_COLLAR


def test_max_notional_boundary(risk):
    assert run(risk, intent(qty="500", ref="100"), mark=D("100")) is None  # 50,000
    assert run(risk, intent(qty="501", ref="100"), mark=D("100")) == RejectCode.MAX_NOTIONAL
    # a buy limit above the mark is valued at its limit
    it = intent(qty="500", ref="100", order_type=OrdType.LIMIT, limit="100.50")
    assert run(risk, it, mark=D("100")) == RejectCode.MAX_NOTIONAL


def test_position_limit_counts_open_orders_on_the_same_side(risk):
    assert run(risk, intent(qty="100"), position=D(1500), open_same_side=D(400)) is None  # 2000
    assert run(risk, intent(qty="101"), position=D(1500), open_same_side=D(400)) == RejectCode.POSITION_LIMIT
    # a sell that reduces a long position passes
    assert run(risk, intent(side=-1, qty="1000"), position=D(1900)) is None
    # short side symmetric
    assert run(risk, intent(side=-1, qty="101"), position=D(-1500), open_same_side=D(400)) == (
        RejectCode.POSITION_LIMIT
    )


def test_position_notional_boundary(risk):
    assert run(risk, intent(qty="100", ref="100"), mark=D("100"), position=D(900)) is None  # 100,000
    assert run(risk, intent(qty="101", ref="100"), mark=D("100"), position=D(900)) == RejectCode.POSITION_LIMIT


def test_cash_boundary_includes_fee_and_open_buys(risk):
    it = intent(qty="99")  # 990 + fee max(0.01, 0.099) = 990.099
    assert run(risk, it, cash=D("990.099")) is None
    assert run(risk, it, cash=D("990.098")) == RejectCode.CASH
    assert run(risk, it, cash=D("1990.099"), open_buy_notional=D("1000")) is None
    assert run(risk, it, cash=D("1990.099"), open_buy_notional=D("1000.001")) == RejectCode.CASH
    assert run(risk, intent(side=-1, qty="99"), cash=D("0")) is None  # sells do not need cash


def test_restricted_symbol(risk):
    assert run(risk, intent("HALTED")) == RejectCode.RESTRICTED_SYMBOL


def test_max_open_orders_boundary(risk):
    assert run(risk, intent(), open_orders=499) is None
    assert run(risk, intent(), open_orders=500) == RejectCode.MAX_OPEN_ORDERS


def test_stale_reference_price_fails_closed(risk):
    # max_mark_age_ms 5000
    assert run(risk, intent(), mark_age_ns=5_000_000_000) is None
    assert run(risk, intent(), mark_age_ns=5_000_000_001) == RejectCode.STALE_REFERENCE_PRICE


def test_gross_exposure_boundary_counts_the_worst_side(risk):
    # cap 1,000,000; the order adds 100 x 10 = 1,000
    assert run(risk, intent(qty="100"), gross_others=D(999_000)) is None
    assert run(risk, intent(qty="100"), gross_others=D("999000.01")) == RejectCode.GROSS_EXPOSURE
    # open sells of 300 on the symbol are a bigger worst case than the buy: 300 x 10
    assert run(risk, intent(qty="100"), open_other_side=D(300), gross_others=D(997_000)) is None
    assert run(risk, intent(qty="100"), open_other_side=D(300), gross_others=D(997_001)) == RejectCode.GROSS_EXPOSURE
    # a sell against a long position of 1,000: the worst case stays the position
    assert run(risk, intent(side=-1, qty="100"), position=D(1000), gross_others=D(990_000)) is None
    assert run(risk, intent(side=-1, qty="100"), position=D(1000), gross_others=D(990_001)) == (
        RejectCode.GROSS_EXPOSURE
    )


def test_throttle_sliding_window():
    t = Throttle(3, window_ns=1000)
    assert [t.allow(x) for x in (0, 100, 200, 300, 999)] == [True, True, True, False, False]
    assert t.allow(1000)  # the slot taken at 0 is a full window old
    assert not t.allow(1050)
    assert t.allow(1100) and t.allow(1200) and not t.allow(1201)


def test_throttles_take_slots_on_the_engine_clock(risk_config, instruments):
    now = [0]
    cfg = RiskConfig.from_dict({**LIMITS, "global": {**LIMITS["global"], "max_orders_per_sec": 2,
                                                     "max_messages_per_sec": 3}})
    risk = RiskEngine(cfg, instruments, lambda n: D(0), clock=lambda: now[0])
    # an invalid order uses a message slot, not an order slot
    assert [run(risk, intent(qty=q)) for q in ("0", "1", "1", "1")] == [
        RejectCode.INVALID_QTY, None, None, RejectCode.MESSAGE_RATE,
    ]
    now[0] += 1_000_000_000
    assert [run(risk, intent()) for _ in range(3)] == [None, None, RejectCode.ORDER_RATE]
    # the kill switch answers before the throttles and takes no slot
    now[0] += 1_000_000_000
    assert run(risk, intent(), halted=True) == RejectCode.KILL_SWITCH
    assert [run(risk, intent()) for _ in range(3)] == [None, None, RejectCode.ORDER_RATE]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    qty=st.decimals(min_value=-10, max_value=5000, places=2) | st.sampled_from([D("NaN"), D("Infinity")]),
    ref=st.decimals(min_value=D("0.01"), max_value=20, places=2),
    side=st.sampled_from([1, -1]),
    position=st.integers(-3000, 3000),
    open_qty=st.integers(0, 3000),
)
def test_whatever_passes_is_within_every_limit(risk, qty, ref, side, position, open_qty):
    it = intent(side=side, qty=str(qty), ref=str(ref))
    mark = D("10")
    code = run(risk, it, position=D(position), open_same_side=D(open_qty))
    if code is None:
        lim = risk.config.limits("BAC")
        assert qty.is_finite() and 0 < qty <= lim.max_order_qty and qty % 1 == 0
        assert abs(ref - mark) * 10000 <= lim.price_collar_bps * mark
        assert qty * mark <= lim.max_order_notional
        assert abs(position + side * (open_qty + qty)) <= lim.max_position_qty
    else:
        assert isinstance(code, RejectCode)


# -- configuration ----------------------------------------------------------------------------
def test_repository_risk_file_is_valid():
    cfg = RiskConfig.load(ROOT / "config" / "risk.yml")
    assert cfg.limits("ANY").max_order_qty > 0
    assert cfg.limits("BTCUSDT").max_order_qty < cfg.defaults.max_order_qty


@pytest.mark.parametrize("key", LIMIT_KEYS)
def test_missing_default_key_is_named(key):
    doc = {"defaults": {k: v for k, v in LIMITS["defaults"].items() if k != key}}
    with pytest.raises(ConfigError, match=f"defaults.{key}"):
        RiskConfig.from_dict(doc)


@pytest.mark.parametrize("bad", ["abc", "-1", "0", "NaN", True, None, [1]])
def test_bad_value_is_named(bad):
    doc = {"defaults": dict(LIMITS["defaults"]), "symbols": {"BAC": {"max_order_qty": bad}}}
    with pytest.raises(ConfigError, match="symbols.BAC.max_order_qty"):
        RiskConfig.from_dict(doc)


@pytest.mark.parametrize("key", GLOBAL_KEYS)
def test_missing_global_key_is_named(key):
    doc = {**LIMITS, "global": {k: v for k, v in LIMITS["global"].items() if k != key}}
    with pytest.raises(ConfigError, match=f"missing key 'global.{key}'"):
        RiskConfig.from_dict(doc)


def test_missing_global_section_is_named():
    with pytest.raises(ConfigError, match="missing key 'global'"):
        RiskConfig.from_dict({k: v for k, v in LIMITS.items() if k != "global"})


@pytest.mark.parametrize(("key", "bad"), [
    ("max_open_orders", "1.5"), ("max_open_orders", 0), ("max_orders_per_sec", "abc"), ("max_messages_per_sec", -5),
    ("max_messages_per_sec", "1e10"), ("max_gross_notional", "NaN"), ("max_gross_notional", True),
    ("restricted_symbols", "AAPL"), ("restricted_symbols", [1]), ("restricted_symbols", [""]),
])
def test_bad_global_value_is_named(key, bad):
    doc = {**LIMITS, "global": {**LIMITS["global"], key: bad}}
    with pytest.raises(ConfigError, match=f"global.{key}"):
        RiskConfig.from_dict(doc)


def test_global_limits_are_read():
    cfg = RiskConfig.from_dict({**LIMITS, "global": {**LIMITS["global"], "restricted_symbols": None}})
    assert cfg.glob.restricted_symbols == frozenset()
    g = RiskConfig.from_dict(LIMITS).glob
    assert (g.max_gross_notional, g.max_open_orders, g.restricted_symbols) == (D(1_000_000), 500, {"HALTED"})
    assert RiskConfig.from_dict(LIMITS).as_dict()["global"]["restricted_symbols"] == ["HALTED"]


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="symbols.BAC.max_qyt"):
        RiskConfig.from_dict({"defaults": dict(LIMITS["defaults"]), "symbols": {"BAC": {"max_qyt": "1"}}})
    with pytest.raises(ConfigError, match="defaults.extra"):
        RiskConfig.from_dict({"defaults": {**LIMITS["defaults"], "extra": "1"}})
    with pytest.raises(ConfigError, match="'limits'"):
        RiskConfig.from_dict({**LIMITS, "limits": {}})
    with pytest.raises(ConfigError, match="global.max_orders"):
        RiskConfig.from_dict({**LIMITS, "global": {**LIMITS["global"], "max_orders": 1}})


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        RiskConfig.load(tmp_path / "nope.yml")
    p = tmp_path / "bad.yml"
    p.write_text("defaults: [unclosed")
    with pytest.raises(ConfigError, match="invalid YAML"):
        RiskConfig.load(p)
    p.write_text("")
    with pytest.raises(ConfigError, match="expected a mapping"):
        RiskConfig.load(p)
