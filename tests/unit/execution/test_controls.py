"""RELIABILITY.md section A: the pre-trade controls through the real OMS (no database, no bus).

Orders go through ``OrderManager.stage`` / ``route`` with the real ``RiskEngine``; the venue
is the simulator with a recorder at the boundary, so "reached the venue" is what it saw.
Clocks are fakes: the tests decide what time it is, never the machine.
"""

from __future__ import annotations

import copy
import itertools
import os
import random
from collections import Counter
from decimal import Decimal

import msgspec
import pytest

from common import streams
from common.bus import Entry
from common.messages import (
    Control,
    ExecutionReport,
    OrderIntent,
    OrdStatus,
    OrdType,
    Side,
    Tick,
    TickBatch,
    TickType,
    TimeInForce,
)
from execution.oms import OrderManager
from execution.order import Order
from execution.risk import RejectCode, RiskConfig, RiskEngine
from execution.store import Snapshot
from execution.venues.base import VenueEvent
from execution.venues.simulator import SimulatedVenue

from .conftest import LIMITS, run_batch

D = Decimal
SEC = 1_000_000_000
MS = 1_000_000
_eid = itertools.count(1)


class Clock:
    def __init__(self, now: int = 1_700_000_000 * SEC) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class RecordingVenue(SimulatedVenue):
    """The simulator, recording every order that reaches it."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.submitted: list[Order] = []

    def submit(self, order: Order) -> list[VenueEvent]:
        self.submitted.append(copy.copy(order))
        return super().submit(order)


def make_config(**overrides) -> RiskConfig:
    doc = copy.deepcopy(LIMITS)
    for section, values in overrides.items():
        doc.setdefault(section, {}).update(values)
    return RiskConfig.from_dict(doc)


class Gateway:
    """An OrderManager with a recording simulator, fed the way the service feeds it."""

    def __init__(self, instruments, config: RiskConfig, cash: str = "1000000") -> None:
        self.clock = Clock()
        self.venue = RecordingVenue(instruments, fee_bps=D(1), min_fee=D("0.01"))
        self.risk = RiskEngine(config, instruments, self.venue.fee, clock=self.clock)
        self.oms = OrderManager(self.risk, self.venue, D(cash), clock=self.clock)
        self.oms.load(Snapshot(None, [], [], 0, []))
        self.seq = 0

    def run(self, *msgs) -> tuple[list[ExecutionReport], Counter, list[str]]:
        """Stage and route one batch; an intent with tick_seq -1 was decided on the last tick sent."""
        msgs = tuple(
            msgspec.structs.replace(m, tick_seq=self.seq) if isinstance(m, OrderIntent) and m.tick_seq < 0 else m
            for m in msgs
        )
        entries = [Entry(streams.INTENTS, f"{next(_eid)}-0".encode(), m, b"") for m in msgs]
        reports, counters, plan = run_batch(self.oms, entries)
        dead = [r.dead for r in plan.results.values() if r.dead]
        return [x for x in reports if isinstance(x, ExecutionReport)], Counter(counters), dead

    def ticks(self, marks: dict[str, float], ts_ingest: int | None = None) -> TickBatch:
        """One trade per symbol at its mark (size enough to fill any order), stamped as arriving now (or at ``ts_ingest``)."""
        ticks = []
        for sym, px in marks.items():
            self.seq += 1
            ticks.append(Tick(sym, TickType.TRADE, 1_000 + self.seq, self.seq, price=px, size=1e9))
        return TickBatch(ticks, ts_ingest=self.clock.now if ts_ingest is None else ts_ingest)


def order(symbol: str, side: int, qty: str, ref: str, *, cid: str, tick_seq: int = -1,
          order_type: OrdType = OrdType.MARKET, limit: str | None = None, strategy: str = "s1",
          tif: TimeInForce = TimeInForce.DAY) -> OrderIntent:
    return OrderIntent(
        client_order_id=cid, signal_id=f"sg-{cid}", strategy=strategy, symbol=symbol, side=Side(side),
        qty=D(qty), order_type=order_type, tif=tif, ref_price=D(ref), tick_seq=tick_seq,
        ts_event=1, ts_ingest=2, ts_signal=3, ts_intent=4, limit_price=D(limit) if limit is not None else None,
    )


def by_reason(reports: list[ExecutionReport]) -> Counter:
    return Counter(r.reason for r in reports if r.status == OrdStatus.REJECTED)


# -- A1: generated orders, valid and invalid ------------------------------------------------------
A1_ORDERS = int(os.environ.get("AITRADER_TEST_A1_ORDERS", "100000"))
A1_CHUNK = 200
# symbol: (tick size, lot size, base mark in ticks, max qty, max notional); limits as configured below
A1_SYMBOLS = {
    "BAC": (D("0.01"), D("1"), 10_000, D(1000), D(50000)),  # mark ~100.00
    "BTCUSDT": (D("0.01"), D("0.00001"), 3_000_000, D(2), D(50000)),  # mark ~30000.00
    "EURUSD": (D("0.00001"), D("1000"), 110_000, D(1_000_000), D(50000)),  # mark ~1.10000
}
COLLAR_BPS = D(100)


def _a1_config() -> RiskConfig:
    return make_config(
        **{
            "global": {"max_gross_notional": "1E+15", "max_open_orders": 1_000_000, "max_orders_per_sec": 1_000_000,
                       "max_messages_per_sec": 1_000_000, "restricted_symbols": ["HALTED"]},
            "defaults": {"max_position_qty": "1E+12", "max_position_notional": "1E+15"},
            "symbols": {"BTCUSDT": {"max_order_qty": "2", "max_position_qty": "1E+12"},
                        "EURUSD": {"max_order_qty": "1000000"}},
        }
    )


def _gen(rng: random.Random, n: int, sym: str, mark: D, seq: int, kind: str) -> tuple[OrderIntent, str | None]:
    """One intent of ``kind`` ('valid' or a defect) and the code its defect must be rejected with."""
    tick, lot, _base, max_qty, max_notional = A1_SYMBOLS[sym]
    side = rng.choice((1, -1))
    band = mark * COLLAR_BPS / 10_000
    top_lots = int(min(max_qty, max_notional / (mark + band)) / lot)  # buy limits may be valued at the top
    qty = lot * rng.randint(1, top_lots)
    ref = (mark + band * D(rng.uniform(-0.99, 0.99))).quantize(tick)
    is_limit = rng.random() < 0.5
    limit = (mark + band * D(rng.uniform(-0.99, 0.99))).quantize(tick) if is_limit else None
    otype, expect, strategy = (OrdType.LIMIT if is_limit else OrdType.MARKET), None, "s1"
    if kind == "over_qty":
        qty, expect = max_qty + lot * rng.randint(1, 1000), RejectCode.MAX_QTY
    elif kind == "over_notional":
        lo = int(max_notional / (mark - band) / lot) + 1  # beyond the cap at any price the collar allows
        qty, expect = lot * rng.randint(lo, int(max_qty / lot)), RejectCode.MAX_NOTIONAL
    elif kind == "collar_ref":
        ref = (mark + rng.choice((1, -1)) * band * D(rng.uniform(1.01, 3))).quantize(tick)
        expect = RejectCode.PRICE_COLLAR
    elif kind == "collar_limit":
        otype, limit = OrdType.LIMIT, (mark + rng.choice((1, -1)) * band * D(rng.uniform(1.01, 3))).quantize(tick)
        expect = RejectCode.PRICE_COLLAR
    elif kind == "restricted":
        sym, expect = "HALTED", RejectCode.RESTRICTED_SYMBOL
    elif kind == "qty_not_positive":
        qty, expect = rng.choice((D(0), -qty, D("-0"))), RejectCode.INVALID_QTY
    elif kind == "bad_lot":
        qty, expect = qty + lot / 2, RejectCode.INVALID_QTY
    elif kind == "bad_tick":
        otype, limit, expect = OrdType.LIMIT, (limit or ref) + tick / 3, RejectCode.INVALID_PRICE
    elif kind == "ref_not_positive":
        ref, expect = rng.choice((D(0), -ref)), RejectCode.INVALID_PRICE
    elif kind == "limit_missing":
        otype, limit, expect = OrdType.LIMIT, None, RejectCode.INVALID_PRICE
    elif kind == "stop":  # a stop order without its stop price
        otype, limit, expect = OrdType.STOP, None, RejectCode.INVALID_PRICE
    elif kind == "not_finite":  # cannot even be recorded: dead-lettered before the checks
        field = rng.choice(("qty", "ref", "limit"))
        bad = rng.choice((D("NaN"), D("Infinity"), D("-Infinity"), D("sNaN")))
        if field == "qty":
            qty = bad
        elif field == "ref":
            ref = bad
        else:
            otype, limit = OrdType.LIMIT, bad
        expect = "dead"
    tif = TimeInForce.IOC if otype == OrdType.LIMIT else TimeInForce.DAY  # unfilled limits end at the next tick
    it = OrderIntent(
        client_order_id=f"a1-{n}", signal_id=f"sg-{n}", strategy=strategy, symbol=sym, side=Side(side), qty=qty,
        order_type=otype, tif=tif, ref_price=ref, tick_seq=seq, ts_event=1, ts_ingest=2, ts_signal=3, ts_intent=4,
        limit_price=limit,
    )
    return it, expect


A1_DEFECTS = ("over_qty", "over_notional", "collar_ref", "collar_limit", "restricted", "qty_not_positive", "bad_lot",
              "bad_tick", "ref_not_positive", "limit_missing", "stop", "not_finite")


def _within_limits(o: Order, mark: D, config: RiskConfig, instruments) -> bool:
    """An independent reading of the per-order limits (what must hold for anything the venue sees)."""
    lim = config.limits(o.symbol)
    inst = instruments.get(o.symbol)
    q, ref, lp = o.qty, o.ref_price, o.limit_price
    ok = q.is_finite() and q > 0 and q % inst.lot_size == 0 and q <= lim.max_order_qty
    ok = ok and o.symbol not in config.glob.restricted_symbols and o.order_type in ("MARKET", "LIMIT")
    ok = ok and ref.is_finite() and ref > 0 and abs(ref - mark) * 10_000 <= lim.price_collar_bps * mark
    if o.order_type == "LIMIT":
        ok = ok and lp is not None and lp.is_finite() and lp > 0 and lp % inst.tick_size == 0
        ok = ok and abs(lp - mark) * 10_000 <= lim.price_collar_bps * mark
    px = max(mark, lp) if lp is not None and o.side > 0 else mark
    return ok and q * px <= lim.max_order_notional


def test_a1_generated_orders_no_invalid_order_reaches_the_venue_and_every_reject_has_a_code(instruments):
    config = _a1_config()
    gw = Gateway(instruments, config, cash="1E+15")
    rng = random.Random(20240601)
    kinds: Counter = Counter()
    reasons: Counter = Counter()
    invalid_ids: set[str] = set()
    mark_at: dict[str, D] = {}
    dead = accepted = 0
    codes = {str(c) for c in RejectCode}
    for start in range(0, A1_ORDERS, A1_CHUNK):
        gw.clock.now += 10 * MS
        marks = {s: float(v[0] * (v[2] + rng.randint(-200, 200))) for s, v in A1_SYMBOLS.items()}
        tick_batch = gw.ticks(marks)
        seq = gw.seq
        msgs: list = [tick_batch]
        expected: dict[str, str | None] = {}
        for n in range(start, min(start + A1_CHUNK, A1_ORDERS)):
            sym = rng.choice(tuple(A1_SYMBOLS))
            kind = "valid" if rng.random() < 0.5 else rng.choice(A1_DEFECTS)
            it, expect = _gen(rng, n, sym, D(repr(marks[sym])), seq, kind)
            kinds[kind] += 1
            expected[it.client_order_id] = expect
            mark_at[it.client_order_id] = D(repr(marks.get(it.symbol, 0.0)))
            if kind != "valid":
                invalid_ids.add(it.client_order_id)
            msgs.append(it)
        reports, _, dead_letters = gw.run(*msgs)
        dead += len(dead_letters)
        answered = {}
        for r in reports:
            if r.status == OrdStatus.REJECTED:
                assert r.reason in codes, r  # every reject has a reason code
                reasons[r.reason] += 1
                answered[r.client_order_id] = r.reason
            elif r.status == OrdStatus.ACCEPTED:
                answered[r.client_order_id] = None
                accepted += 1
        for cid, expect in expected.items():
            if expect == "dead":
                assert cid not in answered
            else:
                assert cid in answered, cid  # every recordable intent gets an answer
                assert answered[cid] == expect, (cid, answered[cid], expect)  # valid ones pass (None)
        assert len(dead_letters) == sum(1 for e in expected.values() if e == "dead")
    submitted = gw.venue.submitted
    reached_invalid = [o.client_order_id for o in submitted if o.client_order_id in invalid_ids]
    print(f"\nA1: {A1_ORDERS:,} orders ({sum(v for k, v in kinds.items() if k != 'valid'):,} invalid), "
          f"{len(submitted):,} reached the venue, {len(reached_invalid)} of them invalid; "
          f"{dead:,} dead-lettered (not finite); rejects by reason: {dict(sorted(reasons.items()))}")
    assert reached_invalid == []
    assert len(submitted) == accepted and len({o.client_order_id for o in submitted}) == accepted
    for o in submitted:
        assert _within_limits(o, mark_at[o.client_order_id], config, instruments), o
    assert accepted == kinds["valid"] > A1_ORDERS // 3  # every valid order passed: not just refusing everything
    assert set(A1_DEFECTS) <= set(kinds)


# -- A2: no reference price, stale reference price: fail closed ---------------------------------
def test_a2_missing_or_stale_reference_price_rejects_every_order(instruments):
    gw = Gateway(instruments, make_config())
    n = 100
    reps, _, _ = gw.run(*[order("BAC", 1, "10", "10", cid=f"nomark-{i}") for i in range(n)])
    assert Counter(r.reason for r in reps) == {"NO_REFERENCE_PRICE": n}

    # a mark that arrived 5 s ago (the limit) is usable, one older is not, whatever the ticks' own time says
    gw.run(gw.ticks({"BAC": 10.0}))
    gw.clock.now += 5_000 * MS
    [ok], _, _ = gw.run(order("BAC", 1, "10", "10", cid="fresh-enough"))
    assert ok.status == OrdStatus.ACCEPTED
    gw.clock.now += 1
    reps, counters, _ = gw.run(*[order("BAC", 1, "10", "10", cid=f"stale-{i}") for i in range(n)])
    assert Counter(r.reason for r in reps) == {"STALE_REFERENCE_PRICE": n}
    assert counters["rejects.STALE_REFERENCE_PRICE"] == n
    # a batch that reached the bus long ago (a backlog) gives a stale mark at once
    gw.run(gw.ticks({"BAC": 10.0}, ts_ingest=gw.clock.now - 6_000 * MS))
    [r], _, _ = gw.run(order("BAC", 1, "10", "10", cid="backlog"))
    assert r.reason == "STALE_REFERENCE_PRICE"
    # a batch without ts_ingest is stamped with the gateway's clock when it arrives
    gw.run(gw.ticks({"BAC": 10.0}, ts_ingest=0))
    [r], _, _ = gw.run(order("BAC", 1, "10", "10", cid="stamped-here"))
    assert r.status == OrdStatus.ACCEPTED
    assert len(gw.venue.submitted) == 2


# -- A3: concurrent orders racing one limit --------------------------------------------------------
def _send(gw: Gateway, orders: list, batches: str) -> list:
    """The reports of ``orders`` sent in one bus batch or one batch each."""
    if batches == "one batch":
        return gw.run(*orders)[0]
    return [rep for o in orders for rep in gw.run(o)[0]]


@pytest.mark.parametrize("batches", ["one batch", "one per batch"])
def test_a3_fifty_orders_racing_the_position_limit_overshoot_nothing(instruments, batches):
    gw = Gateway(instruments, make_config())
    gw.run(gw.ticks({"BAC": 10.0}))
    orders = [order("BAC", 1, "70", "10", cid=f"race-{i}") for i in range(50)]  # 50 x 70 = 3,500 vs 2,000
    reps = _send(gw, orders, batches)
    acc = [r for r in reps if r.status == OrdStatus.ACCEPTED]
    assert len(acc) == 28 and by_reason(reps) == {"POSITION_LIMIT": 22}  # 28 x 70 = 1,960
    assert gw.oms.portfolio.open_qty("BAC", 1) == D(1960)
    gw.run(gw.ticks({"BAC": 10.0}))  # all fill
    assert gw.oms.portfolio.position("BAC") == D(1960) and gw.oms.portfolio.open_qty("BAC", 1) == 0
    print(f"\nA3 ({batches}): 50 orders of 70 vs a position limit of 2,000: {len(acc)} accepted, "
          f"position {gw.oms.portfolio.position('BAC')}, overshoot 0")


@pytest.mark.parametrize("batches", ["one batch", "one per batch"])
def test_a3_fifty_orders_on_fifty_symbols_racing_the_gross_limit_overshoot_nothing(instruments, batches):
    gw = Gateway(instruments, make_config(**{"global": {"max_gross_notional": "1000000"}}), cash="1E+9")
    syms = [f"S{i}" for i in range(50)]
    gw.run(gw.ticks({s: 100.0 for s in syms}))
    # 50 x 40,000 = 2,000,000 vs a gross cap of 1,000,000; sells count as much as buys
    orders = [order(s, 1 if i % 2 else -1, "400", "100", cid=f"gross-{i}") for i, s in enumerate(syms)]
    reps = _send(gw, orders, batches)
    acc = [r for r in reps if r.status == OrdStatus.ACCEPTED]
    assert len(acc) == 25 and by_reason(reps) == {"GROSS_EXPOSURE": 25}
    pf = gw.oms.portfolio
    recomputed = sum(pf.exposure_qty(s) * D(100) for s in syms)
    assert pf.gross == recomputed == D(1_000_000)
    # fills turn open orders into positions without changing the exposure; a new mark revalues it
    gw.run(gw.ticks({s: 100.0 for s in syms}))
    assert pf.gross == D(1_000_000) and sum(abs(pf.position(s)) for s in syms) == D(10_000)
    gw.run(gw.ticks({syms[1]: 90.0}))
    assert pf.gross == D(1_000_000) - D(400) * 10
    [r], _, _ = gw.run(order(syms[1], 1, "44", "90", cid="fits"))  # 444 x 90 = 39,960: back to 999,960
    assert r.status == OrdStatus.ACCEPTED
    [r], _, _ = gw.run(order(syms[3], 1, "1", "100", cid="over"))
    assert r.reason == "GROSS_EXPOSURE"
    # a sell that reduces a long position adds nothing to the worst case: it passes
    gw.run(gw.ticks({syms[1]: 90.0}))
    [r], _, _ = gw.run(order(syms[1], -1, "100", "90", cid="reduce"))
    assert r.status == OrdStatus.ACCEPTED
    print(f"\nA3 gross ({batches}): 50 orders of 40,000 vs a gross cap of 1,000,000: {len(acc)} accepted, overshoot 0")


# -- A4: one client order id, 1,000 times ------------------------------------------------------------
def test_a4_one_client_order_id_sent_1000_times_gives_one_submit_and_the_first_result(instruments):
    gw = Gateway(instruments, make_config())
    gw.run(gw.ticks({"BAC": 10.0}))
    it = order("BAC", 1, "10", "10", cid="same-id", order_type=OrdType.LIMIT, limit="9.95")
    reps, counters, _ = gw.run(*[it] * 1000)
    assert len(gw.venue.submitted) == 1
    first, answers = reps[0], reps[1:]
    assert (first.exec_id, first.status) == ("same-id:A", OrdStatus.ACCEPTED)
    assert len(answers) == 999 and {(a.exec_id, a.status, a.order_qty, a.reason) for a in answers} == {
        ("same-id:D", OrdStatus.ACCEPTED, D(10), "")
    }
    assert counters["orders"] == 1 and counters["duplicates"] == 999 and counters["rejects.DUPLICATE_CLORDID"] == 999
    # later, after a fill, the answer is the order's state then
    gw.run(gw.ticks({"BAC": 9.9}))
    [a], _, _ = gw.run(copy.copy(it))
    assert (a.status, a.cum_qty, a.avg_px, a.last_qty) == (OrdStatus.FILLED, D(10), D("9.9"), 0)
    # the same id with other parameters: refused, the first order untouched, nothing sent
    for other in (
        order("BAC", 1, "11", "10", cid="same-id", order_type=OrdType.LIMIT, limit="9.95"),
        order("BAC", -1, "10", "10", cid="same-id", order_type=OrdType.LIMIT, limit="9.95"),
        order("BAC", 1, "10", "10", cid="same-id", order_type=OrdType.LIMIT, limit="9.96"),
        order("BAC", 1, "10", "10", cid="same-id"),
        order("C", 1, "10", "10", cid="same-id", order_type=OrdType.LIMIT, limit="9.95"),
        order("BAC", 1, "10", "10", cid="same-id", order_type=OrdType.LIMIT, limit="9.95", strategy="s2"),
    ):
        [r], counters, _ = gw.run(other)
        assert (r.exec_id, r.reason) == ("same-id:DM", "DUPLICATE_CLORDID_MISMATCH")
        assert (r.status, r.order_qty, r.side, r.symbol) == (OrdStatus.FILLED, D(10), Side.BUY, "BAC")
        assert counters["rejects.DUPLICATE_CLORDID_MISMATCH"] == 1
    assert len(gw.venue.submitted) == 1 and gw.oms.portfolio.position("BAC") == D(10)
    print(f"\nA4: 1,000 x one client order id: {len(gw.venue.submitted)} venue submit, 999 answered with the first "
          "result; 6 variants with other parameters refused (DUPLICATE_CLORDID_MISMATCH)")


def test_a4_a_mismatched_duplicate_in_the_same_batch_is_refused_and_answers_are_deterministic(instruments):
    def once() -> list[tuple[str, str, str]]:
        gw = Gateway(instruments, make_config())
        gw.run(gw.ticks({"BAC": 10.0}))
        it = order("BAC", 1, "10", "10", cid="x")
        reps, _, _ = gw.run(it, order("BAC", 1, "12", "10", cid="x"), it)
        assert len(gw.venue.submitted) == 1
        return [(r.exec_id, str(r.status), r.reason) for r in reps]

    first = once()
    assert first == [("x:A", "ACCEPTED", ""), ("x:DM", "ACCEPTED", "DUPLICATE_CLORDID_MISMATCH"),
                     ("x:D", "ACCEPTED", "")]
    assert once() == first


def test_a4_duplicate_of_a_rejected_order_gets_its_reject(instruments):
    gw = Gateway(instruments, make_config())
    it = order("BAC", 1, "10", "10", cid="r")
    reps, _, _ = gw.run(it, it)  # no mark yet
    assert [(r.exec_id, r.status, r.reason) for r in reps] == [
        ("r:R", OrdStatus.REJECTED, "NO_REFERENCE_PRICE"), ("r:D", OrdStatus.REJECTED, "NO_REFERENCE_PRICE"),
    ]


# -- A5: throttles -------------------------------------------------------------------------------------
def test_a5_burst_of_ten_times_the_order_rate_forwards_exactly_the_limit(instruments):
    limit = 20
    gw = Gateway(instruments, make_config(**{"global": {"max_orders_per_sec": limit}}))
    gw.run(gw.ticks({"BAC": 10.0}))
    received = 10 * limit
    burst = [order("BAC", 1, "1", "10", cid=f"b-{i}", order_type=OrdType.LIMIT, limit="9.90") for i in range(received)]
    reps, counters, _ = gw.run(*burst)
    forwarded = len(gw.venue.submitted)
    denied = by_reason(reps)["ORDER_RATE"]
    print(f"\nA5: burst of {received} orders in one window, limit {limit}/s: forwarded {forwarded}, denied {denied}")
    assert forwarded == limit and forwarded + denied == received == len(reps)
    assert counters["rejects.ORDER_RATE"] == denied
    # the window slides: nothing more until the first slot is a second old
    gw.clock.now += SEC - 1
    [r], _, _ = gw.run(order("BAC", 1, "1", "10", cid="early", order_type=OrdType.LIMIT, limit="9.90"))
    assert r.reason == "ORDER_RATE"
    gw.clock.now += 1
    gw.run(gw.ticks({"BAC": 10.0}))
    reps, _, _ = gw.run(*[order("BAC", 1, "1", "10", cid=f"c-{i}", order_type=OrdType.LIMIT, limit="9.90")
                          for i in range(received)])
    assert len(gw.venue.submitted) == 2 * limit and by_reason(reps) == {"ORDER_RATE": received - limit}
    # cancels are never throttled: the kill switch cancels every open order with both throttles spent
    open_before = len(gw.oms.orders)
    assert open_before == 2 * limit
    reps, counters, _ = gw.run(Control("k1", "kill.engage", reason="test", actor="t"))
    assert counters["cancels"] == open_before and gw.oms.orders == {} and gw.venue.working() == []
    assert {r.status for r in reps} == {OrdStatus.CANCELLED}


def test_a5_message_rate_counts_every_order_message_rejected_ones_too(instruments):
    limit = 30
    gw = Gateway(instruments, make_config(**{"global": {"max_messages_per_sec": limit}}))
    gw.run(gw.ticks({"BAC": 10.0}))
    # invalid quantities: rejected, but each one still used a message slot
    msgs = [order("BAC", 1, "0" if i % 2 else "1", "10", cid=f"m-{i}") for i in range(10 * limit)]
    reps, _, _ = gw.run(*msgs)
    reasons = by_reason(reps)
    handled = len(reps) - reasons["MESSAGE_RATE"]
    print(f"\nA5: {len(msgs)} order messages in one window, limit {limit}/s: handled {handled}, "
          f"denied {reasons['MESSAGE_RATE']} ({dict(reasons)})")
    assert handled == limit and handled + reasons["MESSAGE_RATE"] == len(msgs)
    assert reasons["INVALID_QTY"] == limit // 2 and len(gw.venue.submitted) == limit // 2
    gw.clock.now += SEC
    gw.run(gw.ticks({"BAC": 10.0}))
    [r], _, _ = gw.run(order("BAC", 1, "1", "10", cid="later"))
    assert r.status == OrdStatus.ACCEPTED


# -- the other global limits ---------------------------------------------------------------------------
def test_max_open_orders_counts_open_orders_across_symbols(instruments):
    gw = Gateway(instruments, make_config(**{"global": {"max_open_orders": 3}}))
    gw.run(gw.ticks({"BAC": 10.0, "C": 50.0}))
    lim = [order("BAC", 1, "1", "10", cid="o1", order_type=OrdType.LIMIT, limit="9.9"),
           order("C", 1, "1", "50", cid="o2", order_type=OrdType.LIMIT, limit="49.9"),
           order("C", -1, "1", "50", cid="o3", order_type=OrdType.LIMIT, limit="50.1"),
           order("BAC", -1, "1", "10", cid="o4", order_type=OrdType.LIMIT, limit="10.1")]
    reps, _, _ = gw.run(*lim)
    assert [r.reason for r in reps] == ["", "", "", "MAX_OPEN_ORDERS"]
    gw.run(gw.ticks({"BAC": 9.9}))  # o1 fills: a slot frees up
    [r], _, _ = gw.run(order("BAC", -1, "1", "9.9", cid="o5", order_type=OrdType.LIMIT, limit="9.95"))
    assert r.status == OrdStatus.ACCEPTED


def test_restricted_symbol_is_refused_even_with_a_mark(instruments):
    gw = Gateway(instruments, make_config())
    gw.run(gw.ticks({"HALTED": 10.0}))
    [r], counters, _ = gw.run(order("HALTED", 1, "1", "10", cid="h"))
    assert r.reason == "RESTRICTED_SYMBOL" and counters["rejects.RESTRICTED_SYMBOL"] == 1
    assert gw.venue.submitted == []
