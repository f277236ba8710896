"""Order types, time in force, partial fills, cancels, late fills and illegal transitions.

The simulator alone for matching rules; the OMS over a real database (``Harness``) for what is
reported, acknowledged and written.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from common import db, streams
from common.messages import Control, ControlAck, OrdStatus, OrdType, TimeInForce, decode
from execution.order import Order
from execution.venues.base import EventKind, VenueEvent
from execution.venues.simulator import NS_PER_DAY, SimulatedVenue, day_end

from .conftest import batch, intent, quote, trade
from .test_oms import Harness, entry, intent_entry, rows, tick_entry

D = Decimal


def order(symbol="BAC", side=1, qty="100", tick_seq=5, **kw) -> Order:
    o = Order.from_intent(intent(symbol, side, qty, tick_seq=tick_seq, **kw), "simulator")
    o.status = OrdStatus.ACCEPTED
    return o


@pytest.fixture
def venue(instruments) -> SimulatedVenue:
    return SimulatedVenue(instruments, slippage_bps=D("1"), fee_bps=D("1"), min_fee=D("0.05"))


@pytest.fixture
def h(engine, risk_config, instruments) -> Harness:
    return Harness(engine, risk_config, instruments)


def ctl(command: str, rid: str, **args: str) -> Control:
    return Control(rid, command, actor="test", args=args)


def acks(plan) -> list[ControlAck]:
    out = [decode(d) for r in plan.results.values() for s, d in r.messages if s == streams.CONTROL_ACKS]
    return [a for a in out if isinstance(a, ControlAck)]


# -- STOP ---------------------------------------------------------------------------------
def test_buy_stop_triggers_at_or_through_its_stop_then_fills_as_market_with_slippage(venue):
    o = order(order_type=OrdType.STOP, stop="10.10")
    assert venue.submit(o) == []
    assert venue.on_ticks([trade("BAC", 6, 10.09), quote("BAC", 7, 10.05, 10.09)]) == []
    [ev] = venue.on_ticks([quote("BAC", 8, 10.08, 10.10)])  # ask at the stop
    assert (ev.kind, ev.tick_seq, ev.price, ev.liquidity) == (EventKind.FILL, 8, D("10.11"), "taker")  # 10.10101 up
    assert venue.working() == []


def test_sell_stop_triggers_on_a_trade_or_bid_at_or_below_it(venue):
    o = order(side=-1, order_type=OrdType.STOP, stop="9.90")
    venue.submit(o)
    assert venue.on_ticks([quote("BAC", 6, 9.91, 9.95)]) == []
    [ev] = venue.on_ticks([trade("BAC", 7, 9.85)])  # traded through
    assert ev.price == D("9.84") and ev.qty == D(100)  # 9.849015 down


def test_stop_never_triggers_on_its_decision_tick_or_before(venue):
    venue.on_ticks([trade("BAC", 4, 11.0), trade("BAC", 5, 11.0)])
    assert venue.submit(order(order_type=OrdType.STOP, stop="10.50", tick_seq=5)) == []
    [ev] = venue.on_ticks([trade("BAC", 6, 11.0)])
    assert ev.tick_seq == 6


def test_triggered_stop_fills_against_displayed_size_and_keeps_working_as_market(venue):
    o = order(order_type=OrdType.STOP, stop="10.10")
    venue.submit(o)
    [a] = venue.on_ticks([trade("BAC", 6, 10.20, size=30)])
    [b] = venue.on_ticks([trade("BAC", 7, 10.00, size=500)])  # below the stop: already triggered
    assert (a.qty, b.qty, b.exec_id) == (D(30), D(70), f"{o.client_order_id}:F2")


def test_stop_through_the_oms_reports_and_persists_its_stop(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    it = intent(tick_seq=1, order_type=OrdType.STOP, stop="10.10")
    [acc], _, _ = h.run(intent_entry(it))
    assert acc.status == OrdStatus.ACCEPTED
    [row] = rows(engine, db.Order.__table__)
    assert (row["order_type"], row["stop_price"]) == ("STOP", D("10.10"))
    assert h.run(tick_entry(trade("BAC", 2, 10.05)))[0] == []
    [fill], _, _ = h.run(tick_entry(trade("BAC", 3, 10.12)))
    assert fill.status == OrdStatus.FILLED and fill.last_px == D("10.12")


# -- time in force ------------------------------------------------------------------------
def test_ioc_fills_what_is_shown_on_its_first_tick_and_expires_the_rest(venue):
    o = order(tif=TimeInForce.IOC)
    venue.submit(o)
    fill, exp = venue.on_ticks([quote("BAC", 6, 9.99, 10.00, ask_size=40)])
    assert (fill.kind, fill.qty, exp.kind) == (EventKind.FILL, D(40), EventKind.EXPIRED)
    assert "60" in exp.text and venue.working() == []


def test_ioc_skips_a_tick_without_its_side_then_expires_if_it_cannot_cross(venue):
    o = order(order_type=OrdType.LIMIT, limit="9.50", tif=TimeInForce.IOC)
    venue.submit(o)
    assert venue.on_ticks([quote("BAC", 6, 9.40, 0.0)]) == []  # no ask: not its tick
    [exp] = venue.on_ticks([quote("BAC", 7, 9.40, 9.60)])
    assert exp.kind == EventKind.EXPIRED and exp.text == "IOC: nothing filled on its first tick"


def test_gtc_limit_rests_across_days_and_day_limit_expires_at_utc_midnight(venue):
    t0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
    midnight = day_end(t0)
    assert midnight % NS_PER_DAY == 0 and 0 < midnight - t0 <= NS_PER_DAY
    day = order(order_type=OrdType.LIMIT, limit="9.00", ts_event=t0, cid="co-day")
    gtc = order(order_type=OrdType.LIMIT, limit="9.00", tif=TimeInForce.GTC, ts_event=t0, cid="co-gtc")
    venue.submit(day)
    venue.submit(gtc)
    assert venue.on_ticks([trade("BAC", 6, 10.0, ts=midnight - 1)]) == []
    [exp] = venue.on_ticks([trade("BAC", 7, 10.0, ts=midnight)])
    assert (exp.kind, exp.order.client_order_id) == (EventKind.EXPIRED, "co-day")
    assert venue.working() == ["co-gtc"]
    [fill] = venue.on_ticks([trade("BAC", 8, 8.99, ts=midnight + 5 * NS_PER_DAY)])
    assert fill.order.client_order_id == "co-gtc" and fill.price == D("9.00")


def test_day_expiry_through_the_oms_is_an_expired_report_and_row(h, engine):
    t0 = 1_700_000_000 * 10**9
    h.run(tick_entry(trade("BAC", 1, 10.0, ts=t0)))
    h.run(intent_entry(intent(tick_seq=1, order_type=OrdType.LIMIT, limit="9.95", ts_event=t0)))
    [exp], counters, _ = h.run(tick_entry(trade("BAC", 2, 10.0, ts=day_end(t0) + 1)))
    assert exp.status == OrdStatus.EXPIRED and exp.leaves_qty == 0 and counters["expired"] == 1
    [row] = rows(engine, db.Order.__table__)
    assert row["status"] == "EXPIRED" and row["ts_done"] is not None
    assert h.oms.portfolio.open_qty("BAC", 1) == 0 and h.oms.portfolio.open_buy_notional == 0


# -- partial fills ------------------------------------------------------------------------
def test_market_order_fills_at_most_the_displayed_size_per_tick(venue):
    o = order(qty="250")
    venue.submit(o)
    [a] = venue.on_ticks([quote("BAC", 6, 9.99, 10.00, ask_size=100)])
    [b] = venue.on_ticks([trade("BAC", 7, 10.01, size=100)])
    assert venue.on_ticks([quote("BAC", 8, 9.99, 0.0)]) == []  # one-sided: nothing for a buy
    [c] = venue.on_ticks([quote("BAC", 9, 9.99, 10.02, ask_size=0)])  # no size known: the rest
    assert [e.qty for e in (a, b, c)] == [D(100), D(100), D(50)]
    assert [e.exec_id for e in (a, b, c)] == [f"{o.client_order_id}:F{i}" for i in (1, 2, 3)]
    assert venue.working() == []


def test_displayed_size_is_rounded_down_to_lots(venue):
    o = order("EURUSD", qty="10000", ref="1.08")
    venue.submit(o)
    assert venue.on_ticks([trade("EURUSD", 6, 1.08, size=999)]) == []  # less than a lot of 1000
    [ev] = venue.on_ticks([trade("EURUSD", 7, 1.08, size=2500)])
    assert ev.qty == D(2000)


def test_partial_fills_through_the_oms_keep_leaves_and_cum(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    h.run(intent_entry(intent(qty="250", tick_seq=1)))
    [a], _, _ = h.run(tick_entry(trade("BAC", 2, 10.0, size=100)))
    assert (a.status, a.cum_qty, a.leaves_qty, a.last_qty) == (OrdStatus.PARTIALLY_FILLED, D(100), D(150), D(100))
    [row] = rows(engine, db.Order.__table__)
    assert (row["status"], row["cum_qty"]) == ("PARTIALLY_FILLED", D(100))
    assert h.oms.portfolio.open_qty("BAC", 1) == D(150)
    [b], _, _ = h.run(tick_entry(trade("BAC", 3, 10.2, size=1000)))
    assert (b.status, b.cum_qty, b.leaves_qty, b.avg_px) == (OrdStatus.FILLED, D(250), 0, D("10.12"))
    assert len(rows(engine, db.Fill.__table__)) == 2
    assert h.oms.portfolio.position("BAC") == D(250) and h.oms.portfolio.open_buy_notional == 0


# -- cancel and cancel-all --------------------------------------------------------------------
def test_cancel_is_pending_cancel_then_cancelled_acked_and_written(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    [acc], _, _ = h.run(intent_entry(intent(tick_seq=1, order_type=OrdType.LIMIT, limit="9.90")))
    cid = acc.client_order_id
    reports, counters, plan = h.run(entry(streams.CONTROL, ctl("order.cancel", "rq-1", client_order_id=cid)))
    assert [(r.status, r.reason) for r in reports] == [
        (OrdStatus.PENDING_CANCEL, ""), (OrdStatus.CANCELLED, "CANCEL_REQUEST")]
    assert reports[1].leaves_qty == 0 and counters["cancels"] == 1
    [ack] = acks(plan)
    assert (ack.ok, ack.state, ack.request_id) == (True, "CANCELLED", "rq-1")
    [row] = rows(engine, db.Order.__table__)
    assert (row["status"], row["reject_reason"]) == ("CANCELLED", "CANCEL_REQUEST")
    [audit] = rows(engine, db.AuditLog.__table__)
    assert (audit["action"], audit["entity_id"], audit["detail"]["cancelled"]) == ("order.cancel", cid, [cid])
    assert h.oms.venue.working() == [] and h.oms.portfolio.open_qty("BAC", 1) == 0
    assert h.oms.portfolio.open_buy_notional == 0
    # the outbox holds the reports and the ack (durable)
    streams_out = [st for _s, st, _p in h.store.outbox_after(0)]
    assert streams_out.count(streams.CONTROL_ACKS) == 1


def test_cancel_of_an_unknown_or_finished_order_is_refused_and_changes_nothing(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    [acc], _, _ = h.run(intent_entry(intent(tick_seq=1)))
    h.run(tick_entry(trade("BAC", 2, 10.0)))  # filled
    for cid, why in ((acc.client_order_id, "not open"), ("co-nope", "unknown order"), ("", "needs")):
        reports, counters, plan = h.run(entry(streams.CONTROL, ctl("order.cancel", f"rq-{cid}", client_order_id=cid)))
        [ack] = acks(plan)
        assert reports == [] and not ack.ok and why in ack.detail and counters["cancel_rejects"] == 1
    [row] = rows(engine, db.Order.__table__)
    assert row["status"] == "FILLED"
    assert [a["action"] for a in rows(engine, db.AuditLog.__table__)] == ["order.cancel.refused"] * 3


def test_cancel_all_scoped_by_symbol_and_strategy(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0), trade("EURUSD", 1, 1.08)))
    lim = {"order_type": OrdType.LIMIT, "tick_seq": 1}
    a = intent("BAC", limit="9.90", strategy="s1", **lim)
    b = intent("BAC", limit="9.90", strategy="s2", **lim)
    c = intent("EURUSD", qty="1000", ref="1.08", limit="1.07", strategy="s1", **lim)
    h.run(intent_entry(a), intent_entry(b), intent_entry(c))
    reports, _, plan = h.run(entry(streams.CONTROL, ctl("order.cancel_all", "rq-a", symbol="BAC", strategy="s1")))
    assert {r.client_order_id for r in reports} == {a.client_order_id}
    assert acks(plan)[0].ok and acks(plan)[0].detail == "cancelled 1 order(s)"
    reports, _, plan = h.run(entry(streams.CONTROL, ctl("order.cancel_all", "rq-b")))
    assert [r.status for r in reports] == [OrdStatus.PENDING_CANCEL, OrdStatus.CANCELLED] * 2
    assert acks(plan)[0].detail == "cancelled 2 order(s)" and h.oms.orders == {}
    assert {r["status"] for r in rows(engine, db.Order.__table__)} == {"CANCELLED"}


def test_cancel_in_the_same_batch_as_the_intent_stops_it_before_the_venue(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0), trade("BAC", 2, 10.0)))
    it = intent(tick_seq=1)  # would fill at once against tick 2 when routed
    reports, _, plan = h.run(intent_entry(it), entry(streams.CONTROL, ctl("order.cancel", "rq", client_order_id=it.client_order_id)))
    assert [r.status for r in reports] == [OrdStatus.ACCEPTED, OrdStatus.PENDING_CANCEL, OrdStatus.CANCELLED]
    assert rows(engine, db.Fill.__table__) == [] and acks(plan)[0].ok


def test_cancel_refused_by_the_venue_leaves_the_order_working_and_a_late_fill_is_never_applied(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    [acc], _, _ = h.run(intent_entry(intent(tick_seq=1, order_type=OrdType.LIMIT, limit="9.90")))
    cid = acc.client_order_id
    o = h.oms.orders[cid]
    h.oms.venue.cancel(cid)  # the venue lost it (e.g. it filled there and the fill is in flight)
    reports, counters, plan = h.run(entry(streams.CONTROL, ctl("order.cancel", "rq-x", client_order_id=cid)))
    assert [(r.status, r.reason) for r in reports] == [
        (OrdStatus.PENDING_CANCEL, ""), (OrdStatus.ACCEPTED, "CANCEL_REJECTED")]
    assert not acks(plan)[0].ok and counters["cancel_rejects"] == 1 and cid in h.oms.orders
    # now cancelled by a kill switch; then the venue's fill arrives: late, recorded, alerted, not applied
    h.run(entry(streams.CONTROL, Control("k1", "kill.engage", reason="t", actor="t")))
    cash = h.oms.portfolio.cash
    h.oms._deferred.append(VenueEvent(EventKind.FILL, o, qty=D(100), price=D("9.90"), fee=D("0.1"),
                                      exec_id=f"{cid}:F1", venue_trade_id="sim-late"))
    reports, counters, plan = h.run(tick_entry(trade("BAC", 2, 9.9)))
    assert counters["late_fills"] == 1
    assert [s for r in plan.results.values() for s, _d in r.messages] == [streams.ALERTS]  # nothing on ex:events
    assert [(a.reason, a.last_qty, a.status) for a in reports] == [("LATE_FILL", D(100), OrdStatus.CANCELLED)]
    assert h.oms.portfolio.position("BAC") == 0 and h.oms.portfolio.cash == cash
    assert rows(engine, db.Fill.__table__) == []
    late = [a for a in rows(engine, db.AuditLog.__table__) if a["action"] == "order.late_fill"]
    assert late[0]["entity_id"] == cid and late[0]["detail"]["qty"] == "100"
    assert [st for _s, st, _p in h.store.outbox_after(0)].count(streams.ALERTS) == 1


def test_illegal_venue_event_is_refused_and_audited_without_crashing(h, engine):
    h.run(tick_entry(trade("BAC", 1, 10.0)))
    [acc], _, _ = h.run(intent_entry(intent(tick_seq=1, order_type=OrdType.LIMIT, limit="9.90")))
    o = h.oms.orders[acc.client_order_id]
    h.oms._deferred.append(VenueEvent(EventKind.FILL, o, qty=D(101), price=D("9.90"), exec_id="x:F9"))
    reports, counters, _ = h.run(tick_entry(trade("BAC", 2, 10.0)))
    assert reports == [] and counters["illegal_transitions"] == 1
    assert o.cum_qty == 0 and o.status == OrdStatus.ACCEPTED and h.oms.portfolio.position("BAC") == 0
    [audit] = rows(engine, db.AuditLog.__table__)
    assert audit["action"] == "order.illegal_transition" and "beyond order qty" in audit["detail"]["error"]


# -- the CLI against a running gateway ----------------------------------------------------------
async def test_aitrader_cancel_and_cancel_all_get_the_gateways_ack(common, ex_settings, redis_url, capsys):
    from backend import cli
    from common.bus import connect

    from .conftest import start_gateway
    from .test_service import db_rows, drained, reports, xadd

    def cli_run(*argv: str) -> int:  # the parsed command line, run with the test's settings
        return cli.cmd_cancel(cli._parser().parse_args(list(argv)), common)

    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    a = intent("BAC", 1, "10", "10", tick_seq=1, order_type=OrdType.LIMIT, limit="9.90", strategy="s1")
    b = intent("BAC", 1, "10", "10", tick_seq=1, order_type=OrdType.LIMIT, limit="9.90", strategy="s2")
    try:
        await xadd(r, streams.ticks_stream(0), batch(trade("BAC", 1, 10.0)))
        await xadd(r, streams.INTENTS, a)
        await xadd(r, streams.INTENTS, b)
        await reports(r, 2)
        await drained(r)
        assert await asyncio.to_thread(cli_run, "cancel", a.client_order_id) == 0
        assert await asyncio.to_thread(cli_run, "cancel", a.client_order_id, "--json") == 1  # now terminal
        assert await asyncio.to_thread(cli_run, "cancel-all", "--strategy", "s2") == 0
        await drained(r)
    finally:
        assert await gw.stop() == 0
    out = capsys.readouterr().out
    assert f"{a.client_order_id} cancelled" in out and "cancelled 1 order(s)" in out and '"ok": false' in out
    assert {x["status"] for x in db_rows(common.db_url, db.Order.__table__)} == {"CANCELLED"}
    await r.aclose()
