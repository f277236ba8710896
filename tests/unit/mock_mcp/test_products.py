"""Kite-style products at the mock broker: MIS leverage in margins, CNC against holdings, modify,
order history, quotes from the marks, and seeded accounts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.config import ConfigError
from common.messages import Side
from mock_mcp.account import Account, AccountSeed, InvalidOrder, generate_seed
from tests.unit.mock_mcp.stubs import fill

D = Decimal
HELD = (("HLD", "SIM", D(10), D(20), "INE0001"),)


def _acct(cash: str = "10000", leverage: str = "5", holdings=HELD) -> Account:
    return Account(D(cash), AccountSeed(holdings=holdings, mis_leverage=D(leverage)))


def _eq(a: Account, marks) -> dict:
    return a.margins(marks)["equity"]


def test_mis_long_takes_one_fifth_of_its_notional_as_margin_at_5x():
    a = _acct()
    o = a.place_order(tradingsymbol="AAA", transaction_type="BUY", quantity=D(200), marks={"AAA": D(100)})
    assert o.status == "OPEN"  # 20 000 notional > 10 000 cash, but 4 000 margin at 5x fits
    assert a.match({"AAA": D(100)}) == 1
    m = _eq(a, {"AAA": D(100)})
    assert m["available"]["cash"] == "-10000"  # the ledger paid 20 000
    assert m["utilised"]["span"] == "4000" and m["utilised"]["debits"] == "4000"
    assert m["available"]["live_balance"] == "6000" == m["net"]  # -10 000 + 20 000 - 4 000
    (row,) = a.positions_view({"AAA": D(100)})["net"]
    assert (row["product"], row["quantity"], row["margin"]) == ("MIS", "200", "4000")
    # A gain moves both the position's value and its margin: +1 000 value, +40 margin.
    assert _eq(a, {"AAA": D(105)})["available"]["live_balance"] == "6800"
    # 5x leverage runs out: 6 000 free buys at most 300 more at 100.
    big = a.place_order(tradingsymbol="AAA", transaction_type="BUY", quantity=D(301), marks={"AAA": D(100)})
    assert big.status == "REJECTED" and "need 6020" in big.status_message


def test_cnc_buy_takes_the_full_notional_and_shows_as_a_cnc_position():
    a = _acct()
    o = a.place_order(tradingsymbol="AAA", transaction_type="BUY", quantity=D(150), product="CNC",
                      marks={"AAA": D(100)})
    assert o.status == "REJECTED" and "need 15000" in o.status_message
    a.place_order(tradingsymbol="AAA", transaction_type="BUY", quantity=D(50), product="CNC", marks={"AAA": D(100)})
    a.match({"AAA": D(100)})
    m = _eq(a, {"AAA": D(100)})
    assert (m["available"]["cash"], m["available"]["live_balance"], m["utilised"]["span"]) == ("5000", "5000", "0")
    (row,) = a.positions_view({"AAA": D(100)})["day"]
    assert (row["product"], row["quantity"], row["margin"]) == ("CNC", "50", "5000")


def test_cnc_sell_needs_the_holding_and_shows_as_used_quantity():
    a = _acct()
    too_many = a.place_order(tradingsymbol="HLD", transaction_type="SELL", quantity=D(11), product="CNC",
                             marks={"HLD": D(25)})
    assert too_many.status == "REJECTED" and "holdings" in too_many.status_message
    a.place_order(tradingsymbol="HLD", transaction_type="SELL", quantity=D(4), product="CNC", marks={"HLD": D(25)})
    a.match({"HLD": D(25)})
    (h,) = a.holdings_view({"HLD": D(25)})
    assert (h["quantity"], h["used_quantity"], h["pnl"]) == ("10", "4", "50")
    assert a.position("HLD", "CNC").quantity == -4 and a.sellable("HLD") == 6
    # MIS and CNC positions in one symbol are kept apart.
    a.apply_report(fill(symbol="HLD", side=Side.BUY, qty="2", px="25"))
    rows = {(r["tradingsymbol"], r["product"]): r["quantity"] for r in a.positions_view({})["net"]}
    assert rows == {("HLD", "CNC"): "-4", ("HLD", "MIS"): "2"}


def test_leverage_1_keeps_the_cash_account_figures():
    a = _acct(leverage="1", holdings=())
    a.apply_report(fill(symbol="AAA", side=Side.BUY, qty="10", px="100"))
    m = _eq(a, {"AAA": D(110)})
    assert m["available"]["live_balance"] == "9000" and m["utilised"]["span"] == "1100"


def test_modify_order_changes_terms_rechecks_funds_and_keeps_a_history():
    a = _acct("1000", leverage="1", holdings=())
    o = a.place_order(tradingsymbol="AAA", transaction_type="BUY", quantity=D(5), order_type="LIMIT", price=D(90))
    assert a.modify_order(o.order_id, quantity=D(8), price=D(95)).status == "OPEN"
    assert (o.quantity, o.price) == (8, 95)
    with pytest.raises(InvalidOrder, match="insufficient funds: need 1100"):
        a.modify_order(o.order_id, quantity=D(11), price=D(100))
    assert (o.quantity, o.price) == (8, 95)  # a refused change leaves the order as it was
    with pytest.raises(InvalidOrder, match="orders take no price"):
        a.modify_order(o.order_id, order_type="MARKET", price=D(95))
    a.modify_order(o.order_id, order_type="MARKET")  # the kept price is dropped with the type
    assert (o.order_type, o.price) == ("MARKET", 0)
    a.match({"AAA": D(100)})
    hist = a.order_history(o.order_id)
    assert [h["status"] for h in hist] == ["OPEN", "MODIFIED", "OPEN", "MODIFIED", "OPEN", "COMPLETE"]
    assert [h["quantity"] for h in hist[:3]] == ["5", "8", "8"] and hist[-1]["average_price"] == "100"
    with pytest.raises(InvalidOrder, match="COMPLETE and cannot be modified"):
        a.modify_order(o.order_id, quantity=D(1))
    with pytest.raises(InvalidOrder, match="not found"):
        a.order_history("nope")
    a.apply_report(fill(symbol="BBB", coid="gw-1", qty="1", px="5"))
    with pytest.raises(InvalidOrder, match="execution gateway"):
        a.modify_order("gw-1", quantity=D(2))
    assert a.order_history("gw-1")[0]["status"] == "COMPLETE"


def test_ltp_and_quotes_come_from_the_marks_seen():
    a = _acct(holdings=())
    for px in ("100", "104", "97", "101"):
        a.match({"AAA": D(px)})
    assert a.ltp_view(["SIM:AAA", "ZZZ"], {"AAA": D(101)}) == {
        "SIM:AAA": {"instrument_token": 0, "last_price": "101"}
    }
    q = a.quotes_view(["AAA"], {"AAA": D(101)})["AAA"]
    assert q["ohlc"] == {"open": "100", "high": "104", "low": "97", "close": "100"}
    assert (q["last_price"], q["net_change"], q["depth"]) == ("101", "1", {"buy": [], "sell": []})
    for bad in ([], "", [""], ["A"] * 501, [1]):
        with pytest.raises(InvalidOrder):
            a.ltp_view(bad, {})


def test_a_seed_gives_the_same_account_and_ids_every_time():
    def run(seed: int):
        a = Account(D(50000), generate_seed(seed))
        ids = [a.place_order(tradingsymbol=s, transaction_type="BUY", quantity=D(1), order_type="LIMIT",
                             price=D(1)).order_id for s in ("AAA", "BBB")]
        return a.profile()["user_id"], a.holdings_view({}), ids

    assert run(7) == run(7)
    assert run(7)[1] != run(8)[1] and run(7)[0] == "SIM000007"
    assert 1 <= len(run(7)[1]) <= 4
    with pytest.raises(ConfigError, match="list none"):
        generate_seed(1, AccountSeed(holdings=HELD))
