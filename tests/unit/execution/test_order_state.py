"""RELIABILITY C1 / C2: the order state machine under arbitrary venue behaviour, and replayed reports.

C1 drives the real ``OrderManager`` with a scripted venue through submit / ack / partial /
fill / cancel / cancel-reject / duplicate / out-of-order / late reports and checks, after
every step: cum_qty <= qty, leaves = qty - cum while open, terminal orders stay terminal,
late fills are recorded (audit row + alert) and never move position or cash.

C2 replays every execution report of a scripted run twice and shuffled into
``execution.ledger.Ledger`` and gets the same orders and positions as the in-order replay
(and as the OMS itself).
"""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from common import streams
from common.bus import Entry
from common.instruments import Instruments
from common.messages import Control, ExecutionReport, OrdStatus, OrdType, TimeInForce, decode
from execution.ledger import Ledger
from execution.oms import OrderManager
from execution.order import OPEN, TERMINAL, Order
from execution.risk import RiskConfig, RiskEngine
from execution.venues.base import EventKind, Venue, VenueEvent

from .conftest import ROOT, batch, intent, quote, trade
from .test_oms import Harness, entry, intent_entry, tick_entry

D = Decimal
BIG = {"max_order_qty": "1e9", "max_order_notional": "1e12", "price_collar_bps": "1000",
       "max_position_qty": "1e12", "max_position_notional": "1e15", "max_mark_age_ms": "1e12"}
BIG_GLOBAL = {"max_gross_notional": "1e18", "max_open_orders": 1_000_000, "max_orders_per_sec": 1_000_000,
              "max_messages_per_sec": 1_000_000, "restricted_symbols": []}
_eid = itertools.count(1)


class ScriptedVenue(Venue):
    """A venue that does nothing by itself: the test decides every event it reports."""

    name = "scripted"

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.queue: list[VenueEvent] = []
        self.refuse_cancels = False

    def submit(self, order: Order) -> list[VenueEvent]:
        self.live.add(order.client_order_id)
        return []

    def cancel(self, client_order_id: str) -> bool:
        if self.refuse_cancels or client_order_id not in self.live:
            return False
        self.live.discard(client_order_id)
        return True

    def on_ticks(self, ticks) -> list[VenueEvent]:
        out, self.queue = self.queue, []
        return out

    def fee(self, notional: Decimal) -> Decimal:
        return (abs(notional) / 10_000).quantize(D("0.0001"))

    def working(self) -> list[str]:
        return sorted(self.live)


class OrderMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    @initialize()
    def start(self) -> None:
        inst = Instruments.load(ROOT / "config" / "instruments.yml")
        self.venue = ScriptedVenue()
        risk = RiskEngine(RiskConfig.from_dict({"global": BIG_GLOBAL, "defaults": BIG}), inst, self.venue.fee)
        self.oms = OrderManager(risk, self.venue, D("1e9"))
        self.seq = 0
        self.all: dict[str, Order] = {}  # every order ever accepted (the OMS keeps open ones only)
        self.terminal: dict[str, tuple] = {}  # cid -> (status, cum) when it became terminal
        self.fills: list[VenueEvent] = []  # every fill event the venue sent (for duplicates)
        self.applied: dict[str, VenueEvent] = {}  # exec_id -> fill the OMS booked
        self.late = 0
        self.audit: list[dict] = []
        self.alerts: list[ExecutionReport] = []
        self.reports: list[ExecutionReport] = []
        self._step([self._tick()])

    # -- plumbing ------------------------------------------------------------------------
    def _tick(self) -> Entry:
        self.seq += 1
        return Entry(streams.ticks_stream(0), f"{next(_eid)}-0".encode(), _batch(self.seq), b"")

    def _step(self, entries: list[Entry]) -> dict[str, int]:
        plan = self.oms.stage(entries)
        self.oms.tx1_done(plan)
        self.oms.route(plan)
        counters: dict[str, int] = {}
        for ch in (plan.tx1, plan.tx2):
            self.audit.extend(ch.audit)
        for res in plan.results.values():
            for k, n in res.counters.items():
                counters[k] = counters.get(k, 0) + n
            for stream, data in res.messages:
                msg = decode(data)
                if stream == streams.ALERTS:
                    self.alerts.append(msg)
                elif stream == streams.EXEC_EVENTS:
                    self.reports.append(msg)
        return counters

    def _venue_says(self, *events: VenueEvent) -> dict[str, int]:
        self.venue.queue.extend(events)
        before = {cid: o.status for cid, o in self.all.items()}
        counters = self._step([self._tick()])
        for ev in events:
            if ev.kind != EventKind.FILL:
                continue
            # the model: a new exec id, for an order open before, within what it has left
            booked = sum((f.qty for f in self.applied.values() if f.order is ev.order), D(0))
            if (ev.exec_id not in self.applied and before[ev.order.client_order_id] in OPEN
                    and ev.qty <= ev.order.qty - booked):
                self.applied[ev.exec_id] = ev
        return counters

    def _fill(self, o: Order, qty: Decimal) -> VenueEvent:
        n = sum(1 for f in self.fills if f.order is o) + 1
        ev = VenueEvent(EventKind.FILL, o, qty=qty, price=D("10.01"), fee=D("0.01"),
                        exec_id=f"{o.client_order_id}:F{n}", venue_trade_id=f"v-{o.client_order_id}-{n}")
        self.fills.append(ev)
        return ev

    # -- rules ---------------------------------------------------------------------------
    @rule(target=orders, qty=st.integers(1, 5), side=st.sampled_from([1, -1]))
    def submit(self, qty: int, side: int):
        it = intent("BAC", side, str(qty * 10), "10", tick_seq=self.seq, order_type=OrdType.LIMIT, limit="10.00",
                    tif=TimeInForce.GTC)
        self._step([Entry(streams.INTENTS, f"{next(_eid)}-0".encode(), it, b"")])
        o = self.oms.orders[it.client_order_id]  # acked: ACCEPTED
        assert o.status == OrdStatus.ACCEPTED
        self.all[o.client_order_id] = o
        return o

    @rule(o=orders, lots=st.integers(1, 3))
    def partial(self, o: Order, lots: int):
        self._venue_says(self._fill(o, D(lots)))

    @rule(o=orders)
    def fill_rest(self, o: Order):
        self._venue_says(self._fill(o, max(o.qty - o.cum_qty, D(1))))

    @rule(o=orders, extra=st.integers(1, 10))
    def overfill(self, o: Order, extra: int):
        # out of order / wrong: more than the order has left
        was_open = o.is_open
        c = self._venue_says(self._fill(o, o.qty - o.cum_qty + extra))
        assert c.get("illegal_transitions" if was_open else "late_fills") == 1

    @rule(o=orders)
    def expire(self, o: Order):
        self._venue_says(VenueEvent(EventKind.EXPIRED, o, text="venue expiry"))

    @rule(o=orders, refuse=st.booleans())
    def cancel(self, o: Order, refuse: bool):
        self.venue.refuse_cancels = refuse
        was = o.status
        c = self._step([Entry(streams.CONTROL, f"{next(_eid)}-0".encode(),
                              Control(f"rq-{next(_eid)}", "order.cancel", actor="t",
                                      args={"client_order_id": o.client_order_id}), b"")])
        if was in OPEN and not refuse:
            assert o.status == OrdStatus.CANCELLED and c["cancels"] == 1
        elif was in OPEN:
            assert o.status == was and c["cancel_rejects"] == 1  # cancel reject: back to what it was
        else:
            assert o.status == was and c["cancel_rejects"] == 1  # already terminal: refused
        self.venue.refuse_cancels = False

    @rule()
    def duplicate(self):
        if self.fills:
            ev = self.fills[len(self.fills) // 2]
            before = (self.oms.portfolio.position("BAC"), self.oms.portfolio.cash)
            self._venue_says(ev)
            assert (self.oms.portfolio.position("BAC"), self.oms.portfolio.cash) == before

    @rule(o=orders)
    def late_fill(self, o: Order):
        if o.is_open:
            return
        before = (self.oms.portfolio.position("BAC"), self.oms.portfolio.cash, o.cum_qty)
        c = self._venue_says(self._fill(o, D(1)))
        self.late += 1
        assert c["late_fills"] == 1
        assert (self.oms.portfolio.position("BAC"), self.oms.portfolio.cash, o.cum_qty) == before

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def quantities(self):
        for o in self.all.values():
            assert D(0) <= o.cum_qty <= o.qty
            if o.is_open:
                assert o.leaves_qty == o.qty - o.cum_qty and self.oms.orders[o.client_order_id] is o
            else:
                assert o.leaves_qty == 0 and o.client_order_id not in self.oms.orders

    @invariant()
    def terminal_stays_terminal(self):
        for cid, o in self.all.items():
            if cid in self.terminal:
                assert (o.status, o.cum_qty) == self.terminal[cid]
            elif o.status in TERMINAL:
                self.terminal[cid] = (o.status, o.cum_qty)

    @invariant()
    def only_applied_fills_move_the_book(self):
        pos = sum((f.order.side * f.qty for f in self.applied.values()), D(0))
        cash = D("1e9") - sum((f.order.side * f.qty * f.price + f.fee for f in self.applied.values()), D(0))
        assert self.oms.portfolio.position("BAC") == pos and self.oms.portfolio.cash == cash
        for o in self.all.values():
            assert o.cum_qty == sum((f.qty for f in self.applied.values() if f.order is o), D(0))

    @invariant()
    def late_fills_are_recorded_and_alerted(self):
        late_audit = [a for a in self.audit if a["action"] == "order.late_fill"]
        assert len(late_audit) == len(self.alerts) >= self.late
        assert all(a.reason == "LATE_FILL" and a.status in TERMINAL for a in self.alerts)
        assert all(r.reason != "LATE_FILL" for r in self.reports)


def _batch(seq: int):
    return batch(trade("BAC", seq, 10.0))


TestOrderMachine = OrderMachine.TestCase
TestOrderMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])


# -- C2 ---------------------------------------------------------------------------------------
@pytest.fixture
def h(engine, risk_config, instruments) -> Harness:
    return Harness(engine, risk_config, instruments)


def _scripted_run(h: Harness) -> list[ExecutionReport]:
    """Market, limit, stop, IOC, DAY, partial fills, cancels, cancel-all, a reject and a kill: every report."""
    out: list[ExecutionReport] = []

    def run(*entries):
        reps, _, plan = h.run(*entries)
        out.extend(decode(d) for r in plan.results.values() for s, d in r.messages if s == streams.EXEC_EVENTS)
        return reps

    lim = {"order_type": OrdType.LIMIT, "tick_seq": 1}
    run(tick_entry(trade("BAC", 1, 10.0), trade("EURUSD", 1, 1.08)))
    mkt = intent(qty="250", tick_seq=1)
    sell = intent(side=-1, qty="120", tick_seq=1)
    rest = intent(limit="9.95", strategy="s2", **lim)
    stop = intent(side=-1, qty="80", tick_seq=1, order_type=OrdType.STOP, stop="9.90")
    ioc = intent(qty="300", tick_seq=1, tif=TimeInForce.IOC)
    fx = intent("EURUSD", qty="5000", ref="1.08", limit="1.07", **lim)
    run(*(intent_entry(i) for i in (mkt, sell, rest, stop, ioc, fx)), intent_entry(intent(qty="1e6")))
    run(tick_entry(quote("BAC", 2, 9.99, 10.01, bid_size=50, ask_size=100)))
    run(tick_entry(trade("BAC", 3, 9.97, size=60)))
    run(tick_entry(trade("BAC", 4, 9.89, size=70)))  # stop triggers; limit 9.95 traded through
    run(entry(streams.CONTROL, Control("c1", "order.cancel", actor="t", args={"client_order_id": rest.client_order_id})))
    run(entry(streams.CONTROL, Control("c2", "order.cancel", actor="t", args={"client_order_id": "co-none"})))
    run(tick_entry(trade("BAC", 5, 9.95, size=1000), trade("EURUSD", 2, 1.08)))
    run(intent_entry(intent(limit="9.00", **lim | {"tick_seq": 5})), intent_entry(intent(side=-1, qty="40", tick_seq=5)))
    run(tick_entry(quote("BAC", 6, 9.94, 9.96, bid_size=25, ask_size=25)))
    run(entry(streams.CONTROL, Control("c3", "order.cancel_all", actor="t", args={"symbol": "BAC"})))
    run(entry(streams.CONTROL, Control("k", "kill.engage", reason="t", actor="t")))
    return out


def test_reports_replayed_twice_and_shuffled_rebuild_the_same_orders_and_positions(h):
    reports = _scripted_run(h)
    statuses = {r.status for r in reports}
    assert {OrdStatus.PARTIALLY_FILLED, OrdStatus.FILLED, OrdStatus.CANCELLED, OrdStatus.EXPIRED,
            OrdStatus.REJECTED, OrdStatus.PENDING_CANCEL} <= statuses
    in_order = Ledger(D("100000"))
    for r in reports:
        assert in_order.apply(r)
    expected = in_order.state()
    # the ledger agrees with the OMS itself
    orders, positions, cash = expected
    assert positions == {s: q for s, q in h.oms.portfolio.positions.items() if q}
    assert cash == h.oms.portfolio.cash
    db_rows = {r["client_order_id"]: r for r in h.store.iter_orders()}
    assert {cid: o[:2] for cid, o in orders.items()} == {cid: (r["status"], r["cum_qty"]) for cid, r in db_rows.items()}
    for seed in range(50):
        shuffled = reports * 2
        random.Random(seed).shuffle(shuffled)
        led = Ledger(D("100000"))
        for r in shuffled:
            led.apply(r)
        assert led.duplicates == len(reports)
        assert led.state() == expected, f"seed {seed}"
    print(f"\nC2: {len(reports)} reports, {len(orders)} orders, replayed x2 shuffled under 50 seeds: identical")
