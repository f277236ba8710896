"""Brackets against the real OMS (risk checks, the simulator, a real database): the gateway accepts
the protective STOP / LIMIT orders, works them on ticks, and honours the OCO cancel."""

from __future__ import annotations

import itertools
from decimal import Decimal

from common import streams
from common.bus import Entry
from common.messages import Control, ExecutionReport, OrderIntent, OrdStatus, OrdType, Side
from strategy_engine.brackets import BracketBook, leg_id
from strategy_engine.strategies import StopsConfig
from tests.unit.execution.conftest import (  # noqa: F401 - fixtures
    batch,
    db_url,
    engine,
    instruments,
    intent,
    risk_config,
    trade,
)
from tests.unit.execution.test_oms import Harness

D = Decimal
_eid = itertools.count(1)


def _entry(stream: str, msg) -> Entry:
    return Entry(stream, f"{next(_eid)}-0".encode(), msg, b"")


def _step(h: Harness, book: BracketBook, *msgs) -> list[ExecutionReport]:
    """One gateway batch; every report goes to the book, and what the book sends goes to the gateway next."""
    entries = [_entry(streams.INTENTS if isinstance(m, OrderIntent) else streams.CONTROL
                      if isinstance(m, Control) else streams.ticks_stream(0), m) for m in msgs]
    reports, _, _ = h.run(*entries)
    sent = []
    for rep in reports:
        acts = book.on_report(rep)
        if acts is not None:
            sent += acts.intents + acts.cancels
    return reports + (_step(h, book, *sent) if sent else [])


def test_take_profit_fills_and_the_gateway_cancels_the_stop(engine, risk_config, instruments):  # noqa: F811
    h = Harness(engine, risk_config, instruments)
    book = BracketBook(instruments)
    h.run(_entry(streams.ticks_stream(0), batch(trade("BAC", 1, 10.0))))
    buy = intent("BAC", 1, "100", "10", cid="co-entry", tick_seq=1)
    book.on_entry(buy, StopsConfig(stop_loss=True, take_profit_r=2.0), opening=D(100), dist=D("0.05"))
    _step(h, book, buy)
    reps = _step(h, book, batch(trade("BAC", 2, 10.0)))  # the entry fills at 10.00
    sl, tp = leg_id("co-entry", "sl", 1), leg_id("co-entry", "tp", 1)
    by = {(r.client_order_id, r.status) for r in reps}
    assert ("co-entry", OrdStatus.FILLED) in by and (sl, OrdStatus.ACCEPTED) in by and (tp, OrdStatus.ACCEPTED) in by
    assert h.oms.orders[sl].order_type == OrdType.STOP and h.oms.orders[sl].side == Side.SELL
    # Price runs up through the target (10.10): the LIMIT fills, the OCO cancel takes the stop off.
    reps = _step(h, book, batch(trade("BAC", 3, 10.05), trade("BAC", 4, 10.12)))
    final = {r.client_order_id: r.status for r in reps}
    assert final[tp] == OrdStatus.FILLED and final[sl] == OrdStatus.CANCELLED
    assert h.oms.portfolio.position("BAC") == 0 and book.open_brackets() == 0
    assert not h.oms.orders or sl not in h.oms.orders


def test_stop_fills_on_a_drop_and_the_target_is_cancelled(engine, risk_config, instruments):  # noqa: F811
    h = Harness(engine, risk_config, instruments)
    book = BracketBook(instruments)
    h.run(_entry(streams.ticks_stream(0), batch(trade("BAC", 1, 10.0))))
    buy = intent("BAC", 1, "100", "10", cid="co-e2", tick_seq=1)
    book.on_entry(buy, StopsConfig(stop_loss=True, take_profit_r=2.0, trailing=True, trail_step_bps=1),
                  opening=D(100), dist=D("0.05"))
    _step(h, book, buy)
    _step(h, book, batch(trade("BAC", 2, 10.0)))
    # A signal's mark at 10.08 trails the stop from 9.95 up to 10.03 (cancel, then a new stop).
    acts = book.on_mark("BAC", D("10.08"), 3, 1, 1, 1)
    reps = _step(h, book, *acts.cancels)
    sl1, sl2, tp = leg_id("co-e2", "sl", 1), leg_id("co-e2", "sl", 2), leg_id("co-e2", "tp", 1)
    st = {r.client_order_id: r.status for r in reps}
    assert st[sl1] == OrdStatus.CANCELLED and st[sl2] == OrdStatus.ACCEPTED
    assert h.oms.orders[sl2].stop_price == D("10.03")
    reps = _step(h, book, batch(trade("BAC", 4, 10.07), trade("BAC", 5, 10.02)))
    st = {r.client_order_id: r.status for r in reps}
    assert st[sl2] == OrdStatus.FILLED and st[tp] == OrdStatus.CANCELLED
    assert h.oms.portfolio.position("BAC") == 0 and book.open_brackets() == 0
