"""The OMS over a real database (no bus): orders before routing, fills, duplicates, restarts."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
import sqlalchemy as sa

from common import db, streams
from common.bus import Entry
from common.messages import Control, ExecutionReport, OrdStatus, OrdType, TimeInForce, decode, encode
from execution.oms import OrderManager, intent_problem
from execution.order import IllegalTransition, Order
from execution.risk import RiskEngine
from execution.store import Store
from execution.venues.simulator import SimulatedVenue

from .conftest import batch, intent, quote, run_batch, trade

D = Decimal
_eid = itertools.count(1)


def entry(stream: str, msg) -> Entry:
    return Entry(stream, f"{next(_eid)}-0".encode(), msg, b"")


def tick_entry(*ticks) -> Entry:
    return entry(streams.ticks_stream(0), batch(*ticks))


def intent_entry(it) -> Entry:
    return entry(streams.INTENTS, it)


class Harness:
    """The OMS wired to a real store and simulator, run the way the service runs a batch."""

    def __init__(self, engine, risk_config, instruments, cash="100000") -> None:
        self.store = Store(engine)
        venue = SimulatedVenue(instruments, fee_bps=D("1"), min_fee=D("0.01"))
        self.oms = OrderManager(RiskEngine(risk_config, instruments, venue.fee), venue, D(cash))
        self.oms.load(self.store.snapshot("global", 1000))

    def run(self, *entries: Entry):
        reports, counters, plan = run_batch(self.oms, list(entries), self.store)
        return [x for x in reports if isinstance(x, ExecutionReport)], counters, plan


@pytest.fixture
def h(engine, risk_config, instruments) -> Harness:
    return Harness(engine, risk_config, instruments)


def rows(engine, table):
    with engine.connect() as c:
        return [dict(r) for r in c.execute(sa.select(table)).mappings()]


def test_order_row_is_durable_before_routing_and_fill_updates_it(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    reports, _, plan = h.run(intent_entry(intent(tick_seq=1)))
    # routed only after tx1: the accepted order row was in tx1, nothing to fill yet
    assert [r.status for r in reports] == [OrdStatus.ACCEPTED]
    assert list(plan.tx1.new_orders) == [reports[0].client_order_id]
    [row] = rows(engine, db.Order.__table__)
    assert row["status"] == "ACCEPTED" and row["ts_accepted"] is not None
    reports, _, _ = h.run(tick_entry(trade("BAC", 2, 10.02)))
    [fill] = reports
    assert fill.status == OrdStatus.FILLED and fill.last_px == D("10.02") and fill.last_qty == D("100")
    assert fill.fee == D("0.1002000000")
    [row] = rows(engine, db.Order.__table__)
    [frow] = rows(engine, db.Fill.__table__)
    assert (row["status"], row["cum_qty"], row["avg_px"], row["fees"]) == ("FILLED", D(100), D("10.02"), fill.fee)
    assert (frow["exec_id"], frow["price"], frow["qty"], frow["fee"]) == (fill.exec_id, D("10.02"), D(100), fill.fee)
    assert h.oms.portfolio.position("BAC") == D(100)
    assert h.oms.portfolio.cash == D("100000") - D("1002") - fill.fee
    assert h.oms.portfolio.open_buy_notional == 0


def test_intent_after_its_next_tick_fills_at_once_at_that_tick(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0), trade("BAC", 2, 10.03), trade("BAC", 3, 10.07)))
    reports, _, plan = h.run(intent_entry(intent(tick_seq=1)))
    assert [r.status for r in reports] == [OrdStatus.ACCEPTED, OrdStatus.FILLED]
    assert reports[1].last_px == D("10.03")
    assert plan.tx1.new_orders and plan.tx2.fills  # order durable in tx1, fill in tx2


def test_duplicate_client_order_id_gives_exactly_one_order(h, engine, risk_config, instruments):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    it = intent(cid="co-dup")
    reports, counters, _ = h.run(intent_entry(it), intent_entry(it))
    assert [(r.exec_id, r.status) for r in reports] == [
        ("co-dup:A", OrdStatus.ACCEPTED), ("co-dup:D", OrdStatus.ACCEPTED),
    ]
    assert counters["duplicates"] == 1 and counters["rejects.DUPLICATE_CLORDID"] == 1
    reports, counters, _ = h.run(tick_entry(trade("BAC", 2, 10.0)), intent_entry(it))  # later batch, after its fill
    assert [(r.exec_id, r.status) for r in reports] == [("co-dup:F1", OrdStatus.FILLED), ("co-dup:D", OrdStatus.FILLED)]
    assert counters["duplicates"] == 1
    assert h.store.outbox_after(0)[-1][2] != encode(reports[-1])  # the answer is not durable
    # a new gateway (memory empty) finds it in the database and answers with its state there
    h2 = Harness(engine, risk_config, instruments)
    h2.oms._known.clear()
    reports, counters, _ = h2.run(intent_entry(it))
    [r] = reports
    assert (r.exec_id, r.status, r.cum_qty) == ("co-dup:D", OrdStatus.FILLED, D(100))
    assert counters["duplicates"] == 1
    assert len(rows(engine, db.Order.__table__)) == 1


def test_rejects_are_recorded_with_their_reason(h, engine):
    reports, counters, _ = h.run(intent_entry(intent()))  # no tick yet
    assert reports[0].status == OrdStatus.REJECTED and reports[0].reason == "NO_REFERENCE_PRICE"
    assert counters["rejects"] == 1 and counters["rejects.NO_REFERENCE_PRICE"] == 1
    [row] = rows(engine, db.Order.__table__)
    assert (row["status"], row["reject_reason"]) == ("REJECTED", "NO_REFERENCE_PRICE")


def test_open_order_survives_a_restart_and_is_worked(engine, risk_config, instruments):
    a = Harness(engine, risk_config, instruments)
    a.run(tick_entry(trade("BAC", 1, 10.0)))
    [acc], _, _ = a.run(intent_entry(intent(tick_seq=1, order_type=OrdType.LIMIT, limit="9.95")))
    assert acc.status == OrdStatus.ACCEPTED
    b = Harness(engine, risk_config, instruments)  # restart
    assert list(b.oms.orders) == [acc.client_order_id]
    assert b.oms.portfolio.open_qty("BAC", 1) == D(100)
    # the replayed intent is a duplicate, answered with the order's state, and the order keeps being worked
    replay = intent(cid=acc.client_order_id, tick_seq=1, order_type=OrdType.LIMIT, limit="9.95")
    reports, counters, _ = b.run(intent_entry(replay))
    assert [(r.exec_id, r.status) for r in reports] == [(f"{acc.client_order_id}:D", OrdStatus.ACCEPTED)]
    assert counters["duplicates"] == 1
    [fill], _, _ = b.run(tick_entry(trade("BAC", 2, 9.94)))
    # a reloaded limit rests: the market trading through it fills it at its limit
    assert fill.status == OrdStatus.FILLED and fill.last_px == D("9.95")


def test_positions_and_cash_are_rebuilt_from_fills(h, engine, risk_config, instruments):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    h.run(intent_entry(intent(qty="100", tick_seq=1)), intent_entry(intent(side=-1, qty="30", tick_seq=1)))
    h.run(tick_entry(quote("BAC", 2, 9.99, 10.01)))
    pf = h.oms.portfolio
    b = Harness(engine, risk_config, instruments)
    assert b.oms.portfolio.positions == pf.positions == {"BAC": D(70)}
    assert b.oms.portfolio.cash == pf.cash
    assert pf.cash == D("100000") - D("1001") + D("299.7") - D("0.1001") - D("0.02997")


def test_kill_switch_goes_before_the_intents_of_its_batch(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    reports, _, _ = h.run(
        intent_entry(intent(tick_seq=1)),
        entry(streams.CONTROL, Control("r1", "kill.engage", reason="test", actor="t")),
        tick_entry(trade("BAC", 2, 10.0)),
        intent_entry(intent(tick_seq=2)),
    )
    # read in one batch with the halt: both refused, nothing reached the venue
    assert [(r.status, r.reason) for r in reports] == [
        (OrdStatus.REJECTED, "KILL_SWITCH"), (OrdStatus.REJECTED, "KILL_SWITCH"),
    ]
    assert rows(engine, db.Fill.__table__) == [] and h.oms.venue.working() == []
    assert h.oms.portfolio.open_qty("BAC", 1) == 0 and h.oms.portfolio.open_buy_notional == 0


def test_outbox_holds_every_durable_report(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    reports, _, _ = h.run(intent_entry(intent(tick_seq=1)), tick_entry(trade("BAC", 2, 10.0)))
    out = h.store.outbox_after(0)
    assert [decode(p) for _s, _st, p in out] == reports
    assert [s for s, _st, _p in out] == sorted(s for s, _st, _p in out)


def test_intents_that_cannot_be_recorded_are_dead_lettered(h):
    for bad in (intent(cid="x" * 65), intent(strategy=""), intent(qty="1e20"), intent(tick_seq=1 << 63)):
        assert intent_problem(bad) is not None
        _, _, plan = h.run(intent_entry(bad))
        assert next(iter(plan.results.values())).dead.startswith("invalid:")
    assert intent_problem(intent()) is None


def test_order_state_machine_refuses_illegal_transitions():
    o = Order.from_intent(intent(), "simulator")
    o.transition(OrdStatus.ACCEPTED)
    o.apply_fill(D(100), D(10), D(0), 1)
    assert o.status == OrdStatus.FILLED and o.leaves_qty == 0
    with pytest.raises(IllegalTransition):
        o.transition(OrdStatus.CANCELLED)
    with pytest.raises(IllegalTransition):
        o.apply_fill(D(1), D(10), D(0), 2)


def test_a_halt_whose_cancellations_were_not_recorded_before_a_crash_is_finished_on_load(
    h, engine, risk_config, instruments
):
    """The halting batch commits the state; the cancellations are recorded after it. A crash
    in between leaves ACCEPTED rows under a HALTED state: the next start cancels them."""
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    h.run(intent_entry(intent(tick_seq=1, order_type=OrdType.LIMIT, limit="9.95", tif=TimeInForce.GTC)))
    assert len(h.oms.orders) == 1
    plan = h.oms.stage([entry(streams.CONTROL, Control("r1", "kill.engage", reason="test", actor="t"))])
    h.store.write(plan.tx1)  # the halt is durable; the process dies before flush_cancels
    assert h.oms.cancels_to_record == 1 and not h.oms.orders and h.oms.venue.working() == []
    assert [o["status"] for o in rows(engine, db.Order.__table__)] == ["ACCEPTED"]

    b = Harness(engine, risk_config, instruments)  # the restart
    assert b.oms.kill.halted and not b.oms.orders and b.oms.venue.working() == []
    ch, res = b.oms.flush_cancels()
    b.store.write(ch)
    assert [(o["status"], o["reject_reason"]) for o in rows(engine, db.Order.__table__)] == [
        ("CANCELLED", "KILL_SWITCH")
    ]
    assert [decode(d).status for _s, d in res.messages] == [OrdStatus.CANCELLED]
    assert b.oms.portfolio.open_qty("BAC", 1) == 0
