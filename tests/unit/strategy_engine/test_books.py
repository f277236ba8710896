"""Strategy books: own fills per strategy, once per exec id, stored and read back, what no strategy owns."""

from __future__ import annotations

from decimal import Decimal

from common.messages import ExecutionReport, OrdStatus, Side
from strategy_engine.books import StrategyBooks

D = Decimal


def _fill(strategy: str, symbol: str, side: Side, qty: str, px: str, exec_id: str, fee: str = "0", status=None):
    q = D(qty)
    return ExecutionReport(
        exec_id=exec_id, client_order_id=f"o-{exec_id}", signal_id="s", strategy=strategy, symbol=symbol, side=side,
        status=status or OrdStatus.FILLED, order_qty=q, cum_qty=q, leaves_qty=D(0), last_qty=q, last_px=D(px),
        avg_px=D(px), fee=D(fee), ts_event=1, ts_ingest=1, ts_signal=1, ts_intent=1, ts_exec=1,
    )


def test_fills_book_to_their_strategy_once():
    b = StrategyBooks()
    assert b.apply_report(_fill("a", "X", Side.BUY, "10", "100", "e1", fee="1")) == "a"
    assert b.apply_report(_fill("a", "X", Side.BUY, "10", "100", "e1", fee="1")) is None  # again: once
    assert b.apply_report(_fill("b", "X", Side.SELL, "4", "101", "e2")) == "b"
    assert b.apply_report(_fill("", "X", Side.SELL, "4", "101", "e3")) is None  # no strategy: not ours
    ack = _fill("a", "X", Side.BUY, "0", "0", "e4", status=OrdStatus.ACCEPTED)
    assert b.apply_report(ack) is None
    assert (b.position("a", "X"), b.position("b", "X"), b.position("c", "X")) == (D(10), D(-4), D(0))
    assert b.attributed() == {"X": D(6)}
    assert b.get("a").pnl({"X": D(105)}) == -1000 - 1 + 1050
    assert b.get("b").pnl({}) == 404 - 404  # no price: the last fill's
    # A position closed leaves no zero entry behind.
    b.apply_report(_fill("b", "X", Side.BUY, "4", "99", "e5"))
    assert b.get("b").qty == {} and b.get("b").pnl({}) == 404 - 396


def test_books_round_trip_and_an_unreadable_one_starts_flat():
    b = StrategyBooks()
    b.apply_report(_fill("a", "X", Side.BUY, "0.001", "50000", "e1", fee="0.05"))
    stored = {b"a": b.dump_one("a").encode(), b"bad": b"{not json", "worse": '{"qty": {"X": "NaN"}}'}
    c = StrategyBooks()
    assert c.restore(stored) == 1
    assert c.position("a", "X") == D("0.001") and c.get("a").cash == b.get("a").cash
    assert sorted(c.unreadable) == ["bad", "worse"] and c.position("bad", "X") == 0
    assert "unreadable stored books: bad, worse" in c.describe({})


def test_unattributed_is_what_the_account_holds_beyond_the_books():
    b = StrategyBooks()
    b.apply_report(_fill("a", "X", Side.BUY, "10", "100", "e1"))
    b.apply_report(_fill("b", "Y", Side.SELL, "5", "10", "e2"))
    account = {"X": D(10), "Y": D(-5), "Z": D(7)}  # Z held before the engine started
    assert b.unattributed(account) == {"Z": D(7)}
    assert b.unattributed({"X": D(10)}) == {"Y": D(5)}  # the broker lost Y? it shows too
    assert "unattributed 1 (Z +7)" in b.describe(account)
