"""The cached account context: snapshots, optimistic fills, own intents in flight, staleness."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.messages import OrderIntent, OrdStatus, OrdType, Side, TimeInForce
from strategy_engine.account import AccountContext, AccountSnapshot, SnapshotError
from tests.unit.mock_mcp.stubs import fill

D = Decimal


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _snap(cash="10000", available=None, positions=None, prices=None, equity=None) -> AccountSnapshot:
    positions = {k: D(v) for k, v in (positions or {}).items()}
    prices = {k: D(v) for k, v in (prices or {}).items()}
    eq = D(cash) + sum((q * prices.get(s, 0) for s, q in positions.items()), D(0))
    return AccountSnapshot(D(cash), D(available or cash), D(equity) if equity else eq, positions, prices)


def _intent(coid="co-1", side=Side.BUY, qty="10", px="100", symbol="AAA") -> OrderIntent:
    return OrderIntent(
        client_order_id=coid,
        signal_id="sg",
        strategy="s",
        symbol=symbol,
        side=side,
        qty=D(qty),
        order_type=OrdType.MARKET,
        tif=TimeInForce.DAY,
        ref_price=D(px),
        tick_seq=1,
        ts_event=1,
        ts_ingest=1,
        ts_signal=1,
        ts_intent=1,
    )


def test_snapshot_from_kite_answers():
    margins = {"equity": {"available": {"cash": "9000", "live_balance": "8500"}, "net": "8500"}}
    positions = {
        "net": [{"tradingsymbol": "AAA", "quantity": "10", "last_price": "105", "average_price": "100"}],
        "day": [],
    }
    holdings = [
        {"tradingsymbol": "HLD", "quantity": 5, "last_price": D("20"), "average_price": "18"},
        {"tradingsymbol": "AAA", "quantity": "2", "last_price": "0", "average_price": "90"},
    ]
    s = AccountSnapshot.from_kite(margins, positions, holdings)
    assert (s.cash, s.available) == (D(9000), D(8500))
    assert s.positions == {"AAA": D(12), "HLD": D(5)}
    assert s.equity == D(9000) + 10 * 105 + 5 * 20 + 2 * 90
    with pytest.raises(SnapshotError, match="live_balance"):
        AccountSnapshot.from_kite({"equity": {"available": {"cash": "1"}}}, positions, [])
    with pytest.raises(SnapshotError):
        AccountSnapshot.from_kite([], positions, [])


def test_fills_move_the_context_optimistically_and_once():
    ctx = AccountContext()
    ctx.apply_snapshot(_snap(prices={"AAA": "100"}), requested_ns=100)
    rep = fill(side=Side.BUY, qty="10", px="101", fee="1", ts=200)
    assert ctx.apply_report(rep) is True
    assert ctx.apply_report(rep) is False  # same exec id
    assert ctx.positions["AAA"] == D(10)
    assert ctx.cash == D(10000 - 1010 - 1) and ctx.available == ctx.cash
    assert ctx.equity == D(10000 - 1)  # paid 1010 for 10 worth 1010 at the fill price, less the fee
    ctx.mark("AAA", D("110"))
    assert ctx.equity == D(10000 - 1 + 90)
    # A short sale's proceeds are margin: available cash does not grow.
    ctx.apply_report(fill(symbol="BBB", side=Side.SELL, qty="5", px="50", ts=300))
    assert ctx.cash == D(8989 + 250) and ctx.available == D(8989)


def test_snapshot_never_double_counts_a_fill_seen_around_the_refresh():
    wall = [10_000_000_000]
    ctx = AccountContext(settle_s=1.0, wall_ns=lambda: wall[0])
    ctx.apply_snapshot(_snap(prices={"AAA": "10", "BBB": "5"}), requested_ns=wall[0])
    ctx.apply_report(fill(qty="2", px="10", ts=wall[0], exec_id="f1"))
    assert ctx.positions["AAA"] == D(2) and ctx.cash == D(9980)
    # A refresh right after: the broker may or may not have applied f1 yet. Either answer keeps 2.
    wall[0] += 100_000_000
    for broker_has_it in (True, False):
        snap = _snap(
            cash="9980" if broker_has_it else "10000", positions={"AAA": "2"} if broker_has_it else {}
        )
        snap = AccountSnapshot(
            snap.cash, snap.available, snap.equity, {**snap.positions, "BBB": D(7)}, snap.prices
        )
        ctx.apply_snapshot(snap, requested_ns=wall[0])
        assert ctx.positions["AAA"] == D(2) and ctx.cash == D(9980)
        assert ctx.positions["BBB"] == D(7)  # quiet symbols take the broker's figure (outside trades)
    # Once quiet for longer than the settle time, the broker's figures win outright.
    wall[0] += 2_000_000_000
    ctx.apply_snapshot(_snap(cash="9979", positions={"AAA": "2"}), requested_ns=wall[0])
    assert ctx.cash == D(9979) and ctx.positions == {"AAA": D(2)}
    # A fill stamped well before that request, delivered late (a re-delivery), is already in it.
    assert ctx.apply_report(fill(qty="4", px="10", ts=wall[0] - 1_500_000_000, exec_id="late")) is False
    assert ctx.positions["AAA"] == D(2)
    assert ctx.apply_report(fill(qty="1", px="10", ts=wall[0] - 500_000_000, exec_id="recent")) is True
    assert ctx.positions["AAA"] == D(3)


def test_own_intents_count_until_filled_or_final():
    ctx = AccountContext()
    ctx.apply_snapshot(_snap(), requested_ns=0)
    ctx.add_pending(_intent("co-1", qty="10", px="100"))
    assert ctx.position("AAA") == D(10) and ctx.available_cash() == D(9000)
    assert ctx.recent_intent("co-1").qty == D(10)
    ctx.apply_report(fill(qty="4", px="100", coid="co-1", status=OrdStatus.PARTIALLY_FILLED, ts=10))
    assert ctx.position("AAA") == D(10)  # 4 filled + 6 still in flight
    assert ctx.available_cash() == D(10000 - 400 - 600)
    ctx.apply_report(fill(qty="2", px="100", coid="co-1", status=OrdStatus.CANCELLED, ts=11))
    assert ctx.pending_count == 0 and ctx.position("AAA") == D(6) and ctx.reserved == 0


def test_a_sell_in_flight_frees_cash_and_expires_after_ttl():
    clock = Clock()
    ctx = AccountContext(pending_ttl_s=30, clock=clock)
    ctx.apply_snapshot(_snap(positions={"AAA": "10"}, prices={"AAA": "100"}), requested_ns=0)
    ctx.add_pending(_intent("co-2", side=Side.SELL, qty="10"))
    # Selling the long will free its value; shorting beyond it would hold the same as margin.
    assert ctx.position("AAA") == 0 and ctx.available_cash() == D(11000)
    ctx.add_pending(_intent("co-3", side=Side.SELL, qty="4"))
    assert ctx.position("AAA") == D(-4) and ctx.available_cash() == D(11000)
    clock.t += 31
    ctx.apply_snapshot(_snap(positions={"AAA": "10"}, prices={"AAA": "100"}), requested_ns=1)
    assert ctx.pending_count == 0 and ctx.position("AAA") == D(10) and ctx.available_cash() == D(10000)


def test_a_round_trip_in_flight_holds_back_no_cash():
    ctx = AccountContext()
    ctx.apply_snapshot(_snap(prices={"AAA": "100"}), requested_ns=0)
    ctx.add_pending(_intent("b", side=Side.BUY, qty="10"))
    assert ctx.available_cash() == D(9000)
    ctx.add_pending(_intent("s", side=Side.SELL, qty="10"))
    assert ctx.available_cash() == D(10000) and ctx.position("AAA") == 0
    # The buy fills first: confirmed cash drops, and the sell still in flight will bring it back.
    ctx.apply_report(fill(qty="10", px="100", coid="b", ts=5))
    assert ctx.available == D(9000) and ctx.available_cash() == D(10000)


def test_staleness_follows_the_last_good_refresh():
    clock = Clock()
    ctx = AccountContext(stale_after_s=10, clock=clock)
    assert ctx.is_stale() and "never loaded" in ctx.describe()
    ctx.apply_snapshot(_snap(), requested_ns=0)
    assert not ctx.is_stale()
    clock.t += 10.5
    ctx.last_error = "BrokerUnavailable: connection refused"
    assert ctx.is_stale()
    assert "STALE" in ctx.describe() and "connection refused" in ctx.describe()
