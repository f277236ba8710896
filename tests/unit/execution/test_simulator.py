"""Simulated venue: next-tick fills (deterministic), prices, slippage, rounding, fees, limits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common.messages import OrdType, TimeInForce
from execution.order import Order
from execution.venues.base import EventKind
from execution.venues.simulator import SimulatedVenue, fill_ids

from .conftest import intent, quote, trade

D = Decimal


def order(symbol="BAC", side=1, qty="100", tick_seq=5, **kw) -> Order:
    o = Order.from_intent(intent(symbol, side, qty, tick_seq=tick_seq, **kw), "simulator")
    o.status = o.status.ACCEPTED
    return o


@pytest.fixture
def venue(instruments) -> SimulatedVenue:
    return SimulatedVenue(instruments, slippage_bps=D("1"), fee_bps=D("1"), min_fee=D("0.05"), ring_size=8)


def ticks_4_to_7():
    return [trade("BAC", 4, 10.00), trade("BAC", 5, 10.01), trade("BAC", 6, 10.02), trade("BAC", 7, 10.05)]


def test_fills_at_the_next_tick_whether_it_was_seen_before_or_after_the_order(instruments):
    a = SimulatedVenue(instruments, slippage_bps=D("1"), fee_bps=D("1"))
    b = SimulatedVenue(instruments, slippage_bps=D("1"), fee_bps=D("1"))
    oa, ob = order(cid="co-same"), order(cid="co-same")
    # a: the order first, then the ticks
    assert a.submit(oa) == []
    ev_a = a.on_ticks(ticks_4_to_7())
    # b: the ticks first, then the order (fills at once against the earliest tick after seq 5)
    assert b.on_ticks(ticks_4_to_7()) == []
    ev_b = b.submit(ob)
    assert len(ev_a) == len(ev_b) == 1
    fa, fb = ev_a[0], ev_b[0]
    assert (fa.tick_seq, fa.price, fa.qty, fa.fee, fa.exec_id, fa.venue_trade_id) == (
        fb.tick_seq, fb.price, fb.qty, fb.fee, fb.exec_id, fb.venue_trade_id
    )
    assert fa.tick_seq == 6
    assert fa.price == D("10.03")  # 10.02 * 1.0001 = 10.021002 -> up to the 0.01 grid


def test_tick_at_the_decision_seq_does_not_fill(venue):
    venue.submit(order(tick_seq=5))
    assert venue.on_ticks([trade("BAC", 5, 10.0)]) == []
    assert len(venue.on_ticks([trade("BAC", 6, 10.0)])) == 1


def test_quote_buy_lifts_the_ask_sell_hits_the_bid(instruments):
    v = SimulatedVenue(instruments)
    buy, sell = order(side=1), order(side=-1)
    v.submit(buy)
    v.submit(sell)
    evs = {e.order.side: e for e in v.on_ticks([quote("BAC", 6, 9.98, 10.02)])}
    assert evs[1].price == D("10.02") and evs[-1].price == D("9.98")


def test_one_sided_quote_does_not_fill_the_missing_side(instruments):
    v = SimulatedVenue(instruments)
    v.submit(order(side=1))
    assert v.on_ticks([quote("BAC", 6, 9.98, 0.0)]) == []
    [ev] = v.on_ticks([quote("BAC", 7, 9.98, 10.04)])
    assert ev.price == D("10.04") and ev.tick_seq == 7


def test_slippage_rounds_away_from_the_trader(instruments):
    v = SimulatedVenue(instruments, slippage_bps=D("1"))
    v.submit(order("BAC", 1))
    v.submit(order("BAC", -1))
    v.submit(order("EURUSD", 1, "10000", ref="1.08755"))
    v.submit(order("EURUSD", -1, "10000", ref="1.08755"))
    evs = v.on_ticks([trade("BAC", 6, 13.96), trade("EURUSD", 6, 1.08755, size=1e6)])
    px = {(e.order.symbol, e.order.side): e.price for e in evs}
    assert px[("BAC", 1)] == D("13.97")  # 13.961396 up
    assert px[("BAC", -1)] == D("13.95")  # 13.958604 down
    assert px[("EURUSD", 1)] == D("1.08766")  # 1.087658755 up to 0.00001
    assert px[("EURUSD", -1)] == D("1.08744")  # 1.087441245 down
    assert all(isinstance(p, Decimal) for p in px.values())


def test_without_slippage_the_price_is_exact(instruments):
    v = SimulatedVenue(instruments)
    v.submit(order())
    [ev] = v.on_ticks([trade("BAC", 6, 13.94)])
    assert ev.price == D("13.94")


def test_fee_is_bps_of_notional_with_a_minimum(venue):
    assert venue.fee(D("100000")) == D("10")  # 1 bp
    assert venue.fee(D("100")) == D("0.05")  # min fee
    assert venue.fee(D("1234.5678")) == D("0.1234567800")
    assert isinstance(venue.fee(D("1")), Decimal)


def test_fill_ids_are_deterministic_and_per_fill():
    assert fill_ids("simulator", "co-1", 1) == fill_ids("simulator", "co-1", 1)
    assert fill_ids("simulator", "co-1", 1) != fill_ids("simulator", "co-1", 2)
    assert fill_ids("simulator", "co-1", 1)[0] == "co-1:F1"


def test_marketable_limit_fills_on_arrival_never_beyond_its_limit(venue):
    o = order(order_type=OrdType.LIMIT, limit="10.00")
    venue.submit(o)
    [ev] = venue.on_ticks([trade("BAC", 6, 10.00)])
    assert ev.kind == EventKind.FILL and ev.price == D("10.00")  # 10.001 slipped, capped at the limit
    assert ev.liquidity == "taker" and venue.working() == []


def test_resting_limit_fills_only_when_the_market_trades_through_at_its_limit(venue):
    o = order(order_type=OrdType.LIMIT, limit="10.00")
    assert venue.submit(o) == []
    assert venue.on_ticks([trade("BAC", 6, 10.05)]) == []  # arrival: not marketable, it rests
    assert venue.working() == [o.client_order_id]
    assert venue.on_ticks([trade("BAC", 7, 10.00)]) == []  # at the limit: the queue is not modelled
    assert venue.on_ticks([quote("BAC", 8, 9.99, 10.00)]) == []  # ask at the limit: not through
    [ev] = venue.on_ticks([trade("BAC", 9, 9.98)])
    assert (ev.kind, ev.price, ev.liquidity, ev.tick_seq) == (EventKind.FILL, D("10.00"), "maker", 9)
    assert venue.working() == []


def test_ioc_limit_that_does_not_cross_expires(venue):
    o = order(order_type=OrdType.LIMIT, limit="10.00", tif=TimeInForce.IOC)
    venue.submit(o)
    [ev] = venue.on_ticks([trade("BAC", 6, 10.05)])
    assert ev.kind == EventKind.EXPIRED


def test_cancel_pulls_a_working_order(venue):
    o = order()
    venue.submit(o)
    assert venue.cancel(o.client_order_id) is True
    assert venue.cancel(o.client_order_id) is False
    assert venue.on_ticks([trade("BAC", 6, 10.0)]) == []


def test_repeated_ticks_are_ignored_and_a_seq_reset_starts_a_new_ring(venue):
    venue.on_ticks([trade("BAC", 6, 10.0), trade("BAC", 7, 11.0)])
    venue.on_ticks([trade("BAC", 7, 99.0)])  # the same seq again (a redelivery): ignored
    [ev] = venue.submit(order(tick_seq=6))
    assert ev.price == D("11.01")  # 11.0011 up
    venue.on_ticks([trade("BAC", 1, 12.0)])
    assert venue.seq_resets == 1


def test_order_older_than_the_ring_fills_against_the_oldest_tick_held(venue):
    venue.on_ticks([trade("BAC", s, 10.0 + s / 100) for s in range(1, 21)])  # ring keeps 8
    [ev] = venue.submit(order(tick_seq=2))
    assert ev.tick_seq == 13 and venue.ring_misses == 1


def test_latency_model_works_the_order_only_on_ticks_after_its_arrival_in_market_time(instruments):
    """latency_ms: the order reaches the venue that long after its decision tick (ts_event), so
    the ticks in between cannot fill it; the same whether the ticks came before or after it."""
    ms = 1_000_000
    t0 = 1_700_000_000_000_000_000
    ticks = [trade("BAC", 5, 10.00, ts=t0), trade("BAC", 6, 10.01, ts=t0 + 1 * ms),
             trade("BAC", 7, 10.02, ts=t0 + 4 * ms), trade("BAC", 8, 10.05, ts=t0 + 5 * ms)]
    fills = []
    for ticks_first in (False, True):
        v = SimulatedVenue(instruments, latency_ms=5)
        o = order(tick_seq=5, cid="co-lat", ts_event=t0)
        if ticks_first:
            assert v.on_ticks(ticks) == []
            evs = v.submit(o)
        else:
            assert v.submit(o) == []
            evs = v.on_ticks(ticks)
        assert [(e.kind, e.tick_seq, e.price) for e in evs] == [(EventKind.FILL, 8, D("10.05"))]
        fills.append(evs[0].exec_id)
    assert fills[0] == fills[1]
    # an IOC's "first tick" is the first after its arrival; without latency it is the next tick
    v = SimulatedVenue(instruments, latency_ms=5)
    v.submit(order(tick_seq=5, cid="co-ioc", ts_event=t0, order_type=OrdType.LIMIT, limit="9.00",
                   tif=TimeInForce.IOC))
    assert v.on_ticks(ticks[1:3]) == []  # still on its way: not expired either
    assert [e.kind for e in v.on_ticks(ticks[3:])] == [EventKind.EXPIRED]
    # an order resumed after a restart has long arrived
    v = SimulatedVenue(instruments, latency_ms=5)
    v.resume(order(tick_seq=5, cid="co-res", ts_event=t0))
    assert [e.tick_seq for e in v.on_ticks(ticks[1:2])] == [6]
