"""The simulated account's accounting: cash, positions, realised P&L, fees, idempotency, views."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import ConfigError
from common.instruments import Instruments
from common.messages import OrdStatus, Side
from mock_mcp.account import Account, AccountSeed, InvalidOrder, ReportResult, dec_str, load_seed
from tests.unit.mock_mcp.stubs import fill, order_report

D = Decimal


def _acct(cash: str = "100000", **kw) -> Account:
    return Account(D(cash), **kw)


def test_buy_then_partial_sell_realises_pnl_and_charges_fees():
    a = _acct()
    assert a.apply_report(fill(side=Side.BUY, qty="10", px="100", fee="1.5")) == ReportResult.FILL
    assert a.cash == D("100000") - D("1000") - D("1.5")
    a.apply_report(fill(side=Side.SELL, qty="4", px="110", fee="0.5"))
    p = a.position("AAA")
    assert p.quantity == D("6") and p.average_price == D("100")
    assert p.realised == D("40")  # 4 * (110 - 100), gross of fees
    assert p.charges == D("2.0") and a.charges == D("2.0")
    assert a.cash == D("100000") - D("1000") - D("1.5") + D("440") - D("0.5")
    assert all(isinstance(v, Decimal) for v in (a.cash, p.quantity, p.average_price, p.realised))


def test_adding_to_a_position_averages_the_entry_price():
    a = _acct()
    a.apply_report(fill(qty="10", px="100"))
    a.apply_report(fill(qty="30", px="104"))
    p = a.position("AAA")
    assert p.quantity == D("40") and p.average_price == D("103")
    assert p.realised == 0


def test_sell_through_zero_flips_to_short_at_the_fill_price():
    a = _acct()
    a.apply_report(fill(side=Side.BUY, qty="10", px="100"))
    a.apply_report(fill(side=Side.SELL, qty="25", px="90"))
    p = a.position("AAA")
    assert p.quantity == D("-15") and p.average_price == D("90")
    assert p.realised == D("-100")  # closed 10 at a 10 loss
    # Covering the short at 80 realises 15 * (90 - 80) = 150 more.
    a.apply_report(fill(side=Side.BUY, qty="15", px="80"))
    assert p.quantity == 0 and p.average_price == 0 and p.realised == D("50")
    # Round trip: realised equals sell value minus buy value, and cash moved by exactly that.
    assert p.realised == p.sell_value - p.buy_value
    assert a.cash == D("100050")


def test_short_then_cover_realises_gain():
    a = _acct()
    a.apply_report(fill(side=Side.SELL, qty="5", px="200", fee="1"))
    a.apply_report(fill(side=Side.BUY, qty="5", px="190", fee="1"))
    assert a.position("AAA").realised == D("50")
    assert a.cash == D("100000") + D("50") - D("2")


def test_a_redelivered_report_is_applied_once():
    a = _acct()
    rep = fill(exec_id="ex-dup", qty="3", px="50")
    assert a.apply_report(rep) == ReportResult.FILL
    assert a.apply_report(rep) == ReportResult.DUPLICATE
    assert a.position("AAA").quantity == D("3") and len(a.trades) == 1
    assert a.cash == D("100000") - D("150")


def test_fill_without_price_or_negative_fee_is_invalid_and_not_applied():
    a = _acct()
    assert a.apply_report(fill(px="0", exec_id="bad1")) == ReportResult.INVALID
    assert a.apply_report(fill(fee="-1", exec_id="bad2")) == ReportResult.INVALID
    assert not a.positions and a.cash == D("100000") and not a.applied


def test_order_state_from_reports_never_reopens_a_finished_order():
    a = _acct()
    a.apply_report(order_report("co-9", OrdStatus.ACCEPTED, exec_id="e1"))
    assert a.orders["co-9"].status == "OPEN"
    a.apply_report(order_report("co-9", OrdStatus.FILLED, exec_id="e3", cum="10"))
    a.apply_report(order_report("co-9", OrdStatus.PARTIALLY_FILLED, exec_id="e2", cum="4"))  # late
    o = a.orders["co-9"]
    assert o.status == "COMPLETE" and o.filled_quantity == D("10") and o.pending_quantity == 0
    assert (
        a.apply_report(order_report("co-9", OrdStatus.FILLED, exec_id="e3", cum="10"))
        == ReportResult.DUPLICATE
    )


def test_margins_hold_short_proceeds_and_value_at_marks():
    a = _acct("10000")
    a.apply_report(fill(symbol="LNG", side=Side.BUY, qty="10", px="100"))
    a.apply_report(fill(symbol="SHT", side=Side.SELL, qty="10", px="50"))
    marks = {"LNG": D("105"), "SHT": D("40")}
    m = a.margins(marks)["equity"]
    assert m["available"]["cash"] == "9500"  # 10000 - 1000 + 500
    assert m["utilised"]["exposure"] == "400"  # 10 short at the mark of 40
    assert m["available"]["live_balance"] == "9100" and m["net"] == "9100"
    assert m["utilised"]["m2m_unrealised"] == "150"  # +50 long, +100 short
    rows = {r["tradingsymbol"]: r for r in a.positions_view(marks)["net"]}
    assert rows["LNG"]["last_price"] == "105" and rows["LNG"]["unrealised"] == "50"
    assert rows["SHT"]["pnl"] == "100" and rows["SHT"]["quantity"] == "-10"
    # Without marks the latest fill price values the position.
    assert {r["tradingsymbol"]: r["last_price"] for r in a.positions_view({})["net"]} == {
        "LNG": "100",
        "SHT": "50",
    }


def test_place_order_records_open_orders_and_rejects_for_funds():
    a = _acct("1000")
    o = a.place_order(
        tradingsymbol="AAA", transaction_type="buy", quantity=D("5"), order_type="LIMIT", price=D("100")
    )
    assert o.status == "OPEN" and o.order_id == "SIM000000000001"
    assert a.margins({})["equity"]["available"]["live_balance"] == "500"  # the open buy blocks cash
    o2 = a.place_order(
        tradingsymbol="AAA", transaction_type="BUY", quantity=D("6"), order_type="LIMIT", price=D("100")
    )
    assert o2.status == "REJECTED" and "insufficient funds" in o2.status_message
    assert a.cancel_order(o.order_id).status == "CANCELLED"
    assert a.margins({})["equity"]["available"]["live_balance"] == "1000"
    with pytest.raises(InvalidOrder, match="cannot be cancelled"):
        a.cancel_order(o.order_id)
    with pytest.raises(InvalidOrder, match="not found"):
        a.cancel_order("nope")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"tradingsymbol": ""}, "tradingsymbol"),
        ({"tradingsymbol": "A B"}, "tradingsymbol"),
        ({"transaction_type": "HOLD"}, "transaction_type"),
        ({"quantity": D("0")}, "quantity"),
        ({"quantity": D("-1")}, "quantity"),
        ({"quantity": D("NaN")}, "finite"),
        ({"quantity": "abc"}, "decimal"),
        ({"quantity": D("1500")}, "lot size"),
        ({"order_type": "LIMIT"}, "need a price"),
        ({"order_type": "MARKET", "price": D("1")}, "take no price"),
        ({"order_type": "SL-M"}, "trigger_price"),
        ({"order_type": "LIMIT", "price": D("1.000001")}, "tick size"),
        ({"product": "XYZ"}, "product"),
        ({"validity": "GTC"}, "validity"),
        ({"variety": "iceberg"}, "variety"),
        ({"tag": "x" * 21}, "tag"),
    ],
)
def test_place_order_refuses_bad_input_with_a_reason(kw, match):
    a = _acct(instruments=Instruments.load())
    args = {"tradingsymbol": "EURUSD", "transaction_type": "BUY", "quantity": D("2000")} | kw
    with pytest.raises(InvalidOrder, match=match):
        a.place_order(**args)
    assert not a.orders


def test_seed_holdings_appear_in_holdings_and_unknown_keys_are_refused(tmp_path):
    f = tmp_path / "account.yml"
    f.write_text("user_id: U1\nholdings:\n  - {tradingsymbol: HLD, quantity: '10', average_price: '50'}\n")
    seed = load_seed(f)
    a = Account(D("1000"), seed)
    a.apply_report(fill(symbol="HLD", side=Side.SELL, qty="4", px="60"))
    h = a.holdings_view({"HLD": D("55")})[0]
    assert (
        h["quantity"] == "10" and h["used_quantity"] == "4" and h["pnl"] == "50" and h["last_price"] == "55"
    )
    assert a.profile()["user_id"] == "U1"
    f.write_text(
        "user_id: U1\ncolour: blue\n"
        "holdings: [{tradingsymbol: X, quantity: '1', average_price: '1', lot: 3}]\n"
    )
    with pytest.raises(ConfigError, match="colour") as e:
        load_seed(f)
    assert "holdings.0.lot" in str(e.value)
    assert AccountSeed().holdings == ()


def test_dec_str_is_canonical():
    assert [dec_str(D(x)) for x in ("100.50", "1E+2", "0.000", "-0", "-1.230")] == [
        "100.5",
        "100",
        "0",
        "0",
        "-1.23",
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B"]),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(1, 50),
            st.integers(1, 500),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_cash_plus_position_value_equals_start_plus_pnl_minus_fees(fills):
    """The accounting identity: cash + Σ qty·last = initial + realised + unrealised − fees."""
    a = _acct("1000000")
    for sym, side, q, px, fee in fills:
        a.apply_report(fill(symbol=sym, side=side, qty=D(q), px=D(px) / 4, fee=D(fee) / 10))
    marks = {"A": D("61.25"), "B": D("7")}
    value = sum((p.quantity * marks[s] for (s, _), p in a.positions.items()), D(0))
    pnl = sum((p.realised + p.unrealised(marks[s]) for (s, _), p in a.positions.items()), D(0))
    assert a.cash + value == D("1000000") + pnl - a.charges
