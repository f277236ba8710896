"""Stops and targets: protective orders on an entry's fill, OCO cancels, trailing moves, closes."""

from __future__ import annotations

from decimal import Decimal

from common.instruments import Instrument, Instruments
from common.messages import (
    ExecutionReport,
    OrderIntent,
    OrdStatus,
    OrdType,
    Side,
    TimeInForce,
    client_order_id_for,
)
from strategy_engine.brackets import BracketBook, leg_id
from strategy_engine.strategies import StopsConfig

D = Decimal
INST = Instruments(Instrument("*", D("1"), D("0.01")), {})
_n = 0


def entry(side=Side.BUY, qty="100", px="100", coid="co-entry", symbol="AAA") -> OrderIntent:
    return OrderIntent(client_order_id=coid, signal_id="sg-1", strategy="trend", symbol=symbol, side=side,
                       qty=D(qty), order_type=OrdType.MARKET, tif=TimeInForce.DAY, ref_price=D(px), tick_seq=7,
                       ts_event=1, ts_ingest=2, ts_signal=3, ts_intent=4)


def report(coid, status, side=Side.BUY, last_qty="0", last_px="0", cum="0", avg="0", symbol="AAA") -> ExecutionReport:
    global _n
    _n += 1
    return ExecutionReport(exec_id=f"ex-{_n}", client_order_id=coid, signal_id="sg-1", strategy="trend",
                           symbol=symbol, side=side, status=status, order_qty=D(100), cum_qty=D(cum),
                           leaves_qty=D(0), last_qty=D(last_qty), last_px=D(last_px), avg_px=D(avg), fee=D(0),
                           ts_event=1, ts_ingest=2, ts_signal=3, ts_intent=4, ts_exec=5)


def opened(stops: StopsConfig, side=Side.BUY, px="100", dist="2"):
    book = BracketBook(INST, clock_ns=lambda: 99)
    it = entry(side=side, px=px)
    book.on_entry(it, stops, opening=D(100), dist=D(dist))
    acts = book.on_report(report(it.client_order_id, OrdStatus.FILLED, side, "100", "100.04", "100", "100.04"))
    return book, acts


def test_entry_fill_sends_stop_and_target_with_ids_from_the_entry():
    book, acts = opened(StopsConfig(stop_loss=True, take_profit_r=2.0))
    stop, take = acts.intents
    assert stop.client_order_id == leg_id("co-entry", "sl", 1) == client_order_id_for("co-entry", "sl", 1)
    assert take.client_order_id == leg_id("co-entry", "tp", 1)
    # long at 100.04, distance 2: stop 98.04 (STOP sell), target 104.04 (LIMIT sell); GTC; the entry's stamps.
    assert (stop.order_type, stop.side, stop.stop_price, stop.limit_price, stop.qty) == (
        OrdType.STOP, Side.SELL, D("98.04"), None, D(100))
    assert (take.order_type, take.side, take.limit_price, take.stop_price) == (OrdType.LIMIT, Side.SELL, D("104.04"), None)
    assert stop.tif == TimeInForce.GTC and stop.tick_seq == 7 and stop.strategy == "trend" and stop.signal_id == "sg-1"
    assert stop.sizing["bracket_entry_px"] == 100.04 and stop.sizing["stop_distance"] == 2.0
    assert acts.counters == {"brackets.opened": 1, "brackets.sl_sent": 1, "brackets.tp_sent": 1}
    assert not acts.cancels and book.open_brackets() == 1
    # A re-delivered report (or another for the entry) opens no second bracket.
    again = book.on_report(report("co-entry", OrdStatus.FILLED, Side.BUY, "100", "100.04", "100", "100.04"))
    assert not again.intents and not again.cancels and book.open_brackets() == 1


def test_short_entry_gets_a_buy_stop_above_and_prices_round_away_from_the_market():
    _, acts = opened(StopsConfig(stop_loss=True, take_profit_r=1.5), side=Side.SELL, dist="0.333")
    stop, take = acts.intents
    # short at 100.04: stop 100.373 -> 100.38 (up), target 100.04 - 0.4995 = 99.5405 -> 99.54 (down)
    assert (stop.side, stop.stop_price, take.side, take.limit_price) == (Side.BUY, D("100.38"), Side.BUY, D("99.54"))


def test_partial_fill_waits_and_a_rejected_entry_opens_nothing():
    book = BracketBook(INST)
    book.on_entry(entry(), StopsConfig(stop_loss=True), opening=D(100), dist=D(2))
    part = book.on_report(report("co-entry", OrdStatus.PARTIALLY_FILLED, last_qty="40", last_px="100", cum="40", avg="100"))
    assert part is not None and not part.intents
    # The rest is cancelled: protect the 40 that filled.
    done = book.on_report(report("co-entry", OrdStatus.CANCELLED, cum="40", avg="100"))
    assert [i.qty for i in done.intents] == [D(40)]
    book2 = BracketBook(INST)
    book2.on_entry(entry(), StopsConfig(stop_loss=True), opening=D(100), dist=D(2))
    assert not book2.on_report(report("co-entry", OrdStatus.REJECTED)).intents and book2.open_brackets() == 0


def test_oco_a_target_fill_cancels_the_stop_through_the_gateway():
    book, acts = opened(StopsConfig(stop_loss=True, take_profit_r=2.0))
    stop, take = acts.intents
    fill = book.on_report(report(take.client_order_id, OrdStatus.FILLED, Side.SELL, "100", "104.04", "100", "104.04"))
    (ctl,) = fill.cancels
    assert (ctl.command, ctl.args, ctl.actor) == ("order.cancel", {"client_order_id": stop.client_order_id},
                                                   "strategy_engine")
    assert ctl.request_id == f"se-cancel-{stop.client_order_id}" and "OCO" in ctl.reason
    assert fill.counters["brackets.oco_cancels"] == 1 and not fill.intents
    assert book.open_brackets() == 1  # until the stop's cancel is confirmed
    book.on_report(report(stop.client_order_id, OrdStatus.CANCELLED, Side.SELL))
    assert book.open_brackets() == 0


def test_oco_race_both_legs_fill_is_counted():
    book, acts = opened(StopsConfig(stop_loss=True, take_profit_r=2.0))
    stop, take = acts.intents
    book.on_report(report(stop.client_order_id, OrdStatus.FILLED, Side.SELL, "100", "98", "100", "98"))
    late = book.on_report(report(take.client_order_id, OrdStatus.FILLED, Side.SELL, "100", "104.04", "100", "104.04"))
    assert late.counters.get("brackets.double_exit") == 1 and book.open_brackets() == 0


def test_trailing_stop_moves_with_marks_by_cancel_then_replace():
    book, acts = opened(StopsConfig(stop_loss=True, trailing=True, trail_step_bps=10))
    (stop1,) = acts.intents
    assert stop1.stop_price == D("98.04")
    # Below the step (10 bps of ~100 = 0.1): nothing; a lower price never moves a long's stop.
    assert not book.on_mark("AAA", D("100.10"), 20).cancels
    assert not book.on_mark("AAA", D("99.00"), 21).cancels
    move = book.on_mark("AAA", D("101.00"), 22, 50, 51, 52)
    (ctl,) = move.cancels
    assert ctl.args["client_order_id"] == stop1.client_order_id and move.counters == {"brackets.trail_requested": 1}
    assert not book.on_mark("AAA", D("101.50"), 23).cancels  # one move at a time; the best price is kept
    done = book.on_report(report(stop1.client_order_id, OrdStatus.CANCELLED, Side.SELL))
    (stop2,) = done.intents
    # The new stop trails the best mark seen (101.50) by the distance, with the latest mark's stamps.
    assert stop2.client_order_id == leg_id("co-entry", "sl", 2)
    assert (stop2.stop_price, stop2.qty, stop2.tick_seq, stop2.ref_price) == (D("99.50"), D(100), 23, D("101.50"))
    assert done.counters["brackets.trail_moved"] == 1
    # Fills of the symbol are marks too.
    fill_mark = book.on_report(report("co-other", OrdStatus.FILLED, Side.BUY, "1", "103", "1", "103"))
    assert fill_mark is not None and fill_mark.cancels[0].args["client_order_id"] == stop2.client_order_id


def test_a_stop_that_fills_while_being_moved_closes_the_bracket():
    book, acts = opened(StopsConfig(stop_loss=True, trailing=True, trail_step_bps=0))
    (stop1,) = acts.intents
    book.on_mark("AAA", D("105"), 30)
    fill = book.on_report(report(stop1.client_order_id, OrdStatus.FILLED, Side.SELL, "100", "98", "100", "98"))
    assert not fill.intents and book.open_brackets() == 0


def test_a_signal_against_the_position_cancels_its_bracket():
    book, acts = opened(StopsConfig(stop_loss=True, take_profit_r=3.0))
    assert not book.on_exit_intent(entry(side=Side.BUY, coid="co-topup")).cancels  # same direction: kept
    closing = book.on_exit_intent(entry(side=Side.SELL, coid="co-exit"))
    assert sorted(c.args["client_order_id"] for c in closing.cancels) == sorted(i.client_order_id for i in acts.intents)
    assert closing.counters["brackets.closed_by_signal"] == 1
    for i in acts.intents:
        book.on_report(report(i.client_order_id, OrdStatus.CANCELLED, Side.SELL))
    assert book.open_brackets() == 0


def test_a_rejected_or_foreign_cancelled_leg_is_counted():
    book, acts = opened(StopsConfig(stop_loss=True, take_profit_r=2.0))
    stop, take = acts.intents
    rej = book.on_report(report(take.client_order_id, OrdStatus.REJECTED, Side.SELL))
    assert rej.counters == {"brackets.leg_rejected": 1}
    gone = book.on_report(report(stop.client_order_id, OrdStatus.CANCELLED, Side.SELL))  # e.g. the kill switch
    assert gone.counters == {"brackets.leg_cancelled_elsewhere": 1} and book.open_brackets() == 0


def test_no_stops_configured_means_no_bracket():
    book = BracketBook(INST)
    book.on_entry(entry(), StopsConfig(), opening=D(100), dist=D(2))
    assert book.on_report(report("co-entry", OrdStatus.FILLED, last_qty="100", last_px="100", cum="100", avg="100")) is None


def test_a_partial_target_fill_resizes_the_stop_to_what_is_left():
    book, acts = opened(StopsConfig(stop_loss=True, take_profit_r=2.0))
    stop, take = acts.intents
    part = book.on_report(report(take.client_order_id, OrdStatus.PARTIALLY_FILLED, Side.SELL, "30", "104.04", "30",
                                 "104.04"))
    (ctl,) = part.cancels  # the stop, to be re-sent for 70; the target keeps working
    assert ctl.args["client_order_id"] == stop.client_order_id and "partly filled" in ctl.reason
    assert part.counters == {"brackets.tp_fills": 1, "brackets.resize_requested": 1} and not part.intents
    done = book.on_report(report(stop.client_order_id, OrdStatus.CANCELLED, Side.SELL))
    (stop2,) = done.intents
    assert (stop2.client_order_id, stop2.qty, stop2.stop_price) == (leg_id("co-entry", "sl", 2), D(70), D("98.04"))
    assert done.counters == {"brackets.sl_sent": 1, "brackets.stop_resized": 1}
    # The rest of the target fills: OCO cancels the new stop; the bracket ends once that is confirmed.
    rest = book.on_report(report(take.client_order_id, OrdStatus.FILLED, Side.SELL, "70", "104.04", "100", "104.04"))
    assert [c.args["client_order_id"] for c in rest.cancels] == [stop2.client_order_id]
    book.on_report(report(stop2.client_order_id, OrdStatus.CANCELLED, Side.SELL))
    assert book.open_brackets() == 0


def test_another_strategys_intent_does_not_close_the_bracket():
    book, _ = opened(StopsConfig(stop_loss=True))
    other = entry(side=Side.SELL, coid="co-fade")
    other = OrderIntent(**{**{f: getattr(other, f) for f in other.__struct_fields__}, "strategy": "fade"})
    assert not book.on_exit_intent(other).cancels and book.open_brackets() == 1


def test_brackets_survive_a_restart_mid_trail():
    """What drain() stores and restore() reads back continues exactly: the trail's pending replace
    completes after the restart, and an entry still waiting for its fill gets its bracket."""
    book, acts = opened(StopsConfig(stop_loss=True, trailing=True, trail_step_bps=10))
    (stop1,) = acts.intents
    book.on_mark("AAA", D("101.00"), 22, 50, 51, 52)  # a move requested: stop1 is being cancelled
    waiting = entry(coid="co-second", symbol="BBB")
    book.on_entry(waiting, StopsConfig(stop_loss=True), opening=D(10), dist=D(1))
    stored = {k.encode(): v.encode() for k, v in book.drain() if v is not None}
    assert set(stored) == {b"co-entry", b"co-second"} and not book.dirty

    again = BracketBook(INST, clock_ns=lambda: 99)
    assert again.restore({**stored, b"co-bad": b"{broken"}) == 2 and again.unreadable == ["co-bad"]
    done = again.on_report(report(stop1.client_order_id, OrdStatus.CANCELLED, Side.SELL))
    (stop2,) = done.intents
    assert (stop2.client_order_id, stop2.stop_price, stop2.qty) == (leg_id("co-entry", "sl", 2), D("99.00"), D(100))
    assert done.counters["brackets.trail_moved"] == 1
    filled = again.on_report(report("co-second", OrdStatus.FILLED, Side.BUY, "10", "50", "10", "50", symbol="BBB"))
    assert [i.stop_price for i in filled.intents] == [D("49.00")]
    # A closed bracket is deleted from the store.
    again.drain()
    again.on_report(report(stop2.client_order_id, OrdStatus.FILLED, Side.SELL, "100", "99", "100", "99"))
    assert ("co-entry", None) in again.drain()
