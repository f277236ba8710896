"""The MCP broker venue against a real mock_mcp server, and the start-up reconciliation (RELIABILITY D7).

The mock broker serves from its own thread and event loop (as a separate process would),
so the venue's blocking calls (cancel, reconcile) and the gateway's loop never wait on
each other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal

import pytest

from common import db, streams
from common.bus import connect
from common.config import ConfigError, load
from common.instruments import Instruments
from common.messages import OrdStatus, OrdType, Side, decode
from execution.config import ExecutionSettings
from execution.order import Order
from execution.venues import EventKind, ReconciliationFailed, build_venue
from execution.venues.mcp_broker import McpBrokerVenue
from mock_mcp.account import Account, ReportResult
from mock_mcp.server import McpHttpServer, build_mcp_server
from tests.unit.mock_mcp.stubs import fill

from .conftest import batch, intent, start_gateway, trade
from .test_service import TICKS, db_rows, drained, xadd

D = Decimal


class Broker:
    """The mock broker's account and MCP server on a thread of its own; ``marks`` is what it prices at."""

    def __init__(self) -> None:
        self.account = Account(D(100000), instruments=Instruments.load(), fee_bps=D(1))
        self.marks: dict[str, Decimal] = {}
        self.calls: list[str] = []
        self.loop = asyncio.new_event_loop()

        async def marks():
            return dict(self.marks)

        self.http = McpHttpServer(build_mcp_server(self.account, marks, self.calls.append), port=0)
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.http.serve(),), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.http.started:
            assert time.monotonic() < deadline, "mock broker did not start"
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return self.http.url

    def do(self, fn, *args, **kw):
        """Run ``fn`` on the broker's thread (the account is not shared across threads otherwise)."""
        async def go():
            return fn(*args, **kw)
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.http.stop)
        self.thread.join(10)


@pytest.fixture
def broker():
    b = Broker()
    yield b
    b.stop()


@pytest.fixture
def venue(broker):
    v = McpBrokerVenue(broker.url, timeout_s=3, poll_ms=10, fee_bps=D(1))
    yield v
    v.close()


def accepted(it) -> Order:
    o = Order.from_intent(it, "mcp")
    o.transition(OrdStatus.ACCEPTED)
    return o


def wait_events(venue, n: int = 1, timeout: float = 5.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += venue.poll()
        time.sleep(0.01)
    return got


async def test_market_order_is_placed_at_the_broker_and_its_fill_comes_back_once(broker, venue):
    broker.marks["BAC"] = D("10.02")
    o = accepted(intent("BAC", 1, "100", "10"))
    assert venue.submit(o) == []  # the placement is asynchronous
    evs = await asyncio.to_thread(wait_events, venue, 1)
    assert len(evs) == 1
    ev = evs[0]
    assert ev.kind == EventKind.FILL and ev.order is o
    assert (ev.qty, ev.price, ev.fee) == (D(100), D("10.02"), D("0.1002"))
    (bo,) = broker.do(lambda: [x for x in broker.account.orders.values() if x.client_order_id == o.client_order_id])
    assert bo.status == "COMPLETE" and bo.order_id != o.client_order_id
    assert ev.exec_id == f"{o.client_order_id}:{ev.venue_trade_id}" and ev.venue_trade_id == f"{bo.order_id}-T1"
    assert await asyncio.to_thread(wait_events, venue, 1, 0.3) == []  # polled again: not repeated
    # The gateway's report of this fill on ex:events is not counted again by the broker.
    rep = fill(symbol="BAC", qty="100", px="10.02", coid=o.client_order_id, exec_id=ev.exec_id)
    assert broker.do(broker.account.apply_report, rep) == ReportResult.OWN
    assert broker.account.position("BAC").quantity == D(100)
    assert broker.account.cash == D(100000) - D("1002") - D("0.1002")


async def test_resting_limit_is_cancelled_at_the_broker_and_a_filled_one_cannot_be(broker, venue):
    broker.marks["BAC"] = D("10.00")
    rest = accepted(intent("BAC", 1, "10", "10", order_type=OrdType.LIMIT, limit="9.90"))
    later = accepted(intent("BAC", -1, "10", "10", order_type=OrdType.LIMIT, limit="10.10"))
    venue.submit(rest)
    venue.submit(later)
    assert await asyncio.to_thread(venue.cancel, rest.client_order_id) is True
    assert await asyncio.to_thread(venue.cancel, rest.client_order_id) is False  # already cancelled
    broker.marks["BAC"] = D("10.20")  # the sell limit is now marketable: the broker fills it
    evs = await asyncio.to_thread(wait_events, venue, 1)
    assert [(e.kind, e.order.client_order_id, e.price) for e in evs] == [
        (EventKind.FILL, later.client_order_id, D("10.20"))
    ]
    assert await asyncio.to_thread(venue.cancel, later.client_order_id) is False
    assert await asyncio.to_thread(wait_events, venue, 1, 0.3) == []  # our own cancel is not an event
    assert broker.calls.count("place_order") == 2


async def test_an_order_the_broker_refuses_or_ends_becomes_an_expiry(broker, venue):
    bad = accepted(intent("BAC", 1, "100.5", "10"))  # not a whole lot: a tool error at the broker
    venue.submit(bad)
    broker.marks["BAC"] = D("10")
    rest = accepted(intent("BAC", 1, "10", "10", order_type=OrdType.LIMIT, limit="9.00"))
    venue.submit(rest)
    (ev,) = await asyncio.to_thread(wait_events, venue, 1)
    assert ev.kind == EventKind.EXPIRED and ev.order is bad and "refused by the broker" in ev.text
    bid = await asyncio.to_thread(lambda: venue._call(_bid(venue, rest.client_order_id)))
    broker.do(broker.account.cancel_order, bid)  # cancelled at the broker, not by us
    (ev,) = await asyncio.to_thread(wait_events, venue, 1)
    assert ev.kind == EventKind.EXPIRED and ev.order is rest and "cancelled by the broker" in ev.text


async def _bid(venue, cid):
    return venue._bid_of[cid]


def test_venue_mcp_needs_a_valid_url(clean_env):
    clean_env.setenv("AITRADER_EX_VENUE", "mcp")
    with pytest.raises(ConfigError, match="AITRADER_EX_MCP_URL"):
        build_venue(load(ExecutionSettings), Instruments.load())
    clean_env.setenv("AITRADER_EX_MCP_URL", "ftp://x")
    with pytest.raises(ConfigError, match="AITRADER_EX_MCP_URL"):
        load(ExecutionSettings)
    clean_env.setenv("AITRADER_EX_MCP_URL", "http://127.0.0.1:1/mcp")
    v = build_venue(load(ExecutionSettings), Instruments.load())
    assert isinstance(v, McpBrokerVenue) and v.name == "mcp"


# -- start-up reconciliation through the gateway (D7) ------------------------------------------


@pytest.fixture
def mcp_settings(ex_settings, broker) -> ExecutionSettings:
    return ex_settings.model_copy(update={"venue": "mcp", "mcp_url": broker.url, "mcp_poll_ms": 10.0,
                                          "mcp_timeout_s": 3.0})


async def _wait(pred, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _audit(url: str) -> list[dict]:
    return db_rows(url, db.AuditLog.__table__)


async def test_intent_becomes_a_broker_order_and_its_fill_a_report_and_a_db_fill(common, mcp_settings, broker,
                                                                              redis_url):
    r = connect(redis_url)
    broker.marks["BAC"] = D("10.02")
    gw = await start_gateway(common, mcp_settings)
    try:
        await xadd(r, TICKS, batch(trade("BAC", 1, 10.02)))
        await drained(r)
        it = intent("BAC", 1, "100", "10", tick_seq=1)
        await xadd(r, streams.INTENTS, it)
        await _wait(lambda: any(f["client_order_id"] == it.client_order_id
                                for f in db_rows(common.db_url, db.Fill.__table__)))
        await _wait(lambda: not gw.gw.oms.orders)
        # the fill is durable first, then published from the outbox: wait for it on the bus
        deadline = time.monotonic() + 5.0
        while await r.xlen(streams.EXEC_EVENTS) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        reps = [decode(f[b"d"]) for _i, f in await r.xrange(streams.EXEC_EVENTS)]
    finally:
        assert await gw.stop() == 0
    assert [(x.status, x.last_qty, x.last_px) for x in reps] == [
        (OrdStatus.ACCEPTED, 0, 0), (OrdStatus.FILLED, D(100), D("10.02"))
    ]
    (f,) = db_rows(common.db_url, db.Fill.__table__)
    assert (f["exec_id"], f["venue"], f["qty"], f["price"]) == (reps[1].exec_id, "mcp", D(100), D("10.02"))
    (o,) = db_rows(common.db_url, db.Order.__table__)
    assert (o["status"], o["cum_qty"], o["venue"]) == ("FILLED", D(100), "mcp")
    assert broker.account.position("BAC").quantity == D(100)
    await r.aclose()


async def test_d7_an_order_the_gateway_does_not_know_makes_it_refuse_to_start(common, mcp_settings, broker, caplog):
    broker.marks["IBM"] = D("180")
    by_hand = broker.do(broker.account.place_order, tradingsymbol="IBM", transaction_type="BUY",
                        quantity=D(5), order_type="LIMIT", price=D("170"))
    ended = broker.do(broker.account.place_order, tradingsymbol="IBM", transaction_type="BUY",
                      quantity=D(5), order_type="LIMIT", price=D("170"))
    broker.do(broker.account.cancel_order, ended.order_id)  # ended unfilled: changes nothing
    with pytest.raises(ReconciliationFailed) as e:
        await start_gateway(common, mcp_settings)
    msg = str(e.value)
    assert f"order unknown to the gateway: {by_hand.order_id}" in msg and ended.order_id not in msg
    assert "1 unresolved" in msg
    (row,) = [a for a in _audit(common.db_url) if a["action"] == "venue.reconcile.refused"]
    figures = {k: row["detail"][k] for k in ("found", "resolved", "ignored")} | {"refused": len(row["detail"]["refused"])}
    print(f"\nD7 unknown order at the venue: {figures}")
    assert figures == {"found": 2, "resolved": 0, "refused": 1, "ignored": 1}
    assert any("reconciliation with venue mcp: found 2, resolved 0, refused 1" in m for m in caplog.messages)


async def test_d7_a_fill_the_database_lacks_is_applied_and_audited_and_the_gateway_starts(
    common, mcp_settings, broker, redis_url
):
    r = connect(redis_url)
    broker.marks["BAC"] = D("10.00")
    gw = await start_gateway(common, mcp_settings)
    rest = intent("BAC", 1, "10", "10", tick_seq=1, order_type=OrdType.LIMIT, limit="9.95")
    never = intent("BAC", 1, "10", "10", tick_seq=1, order_type=OrdType.LIMIT, limit="9.92")
    try:
        await xadd(r, TICKS, batch(trade("BAC", 1, 10.0)))
        await drained(r)
        await xadd(r, streams.INTENTS, rest)
        await xadd(r, streams.INTENTS, never)
        await drained(r)
        await _wait(lambda: len(broker.do(lambda: [o for o in broker.account.orders.values() if o.source == "mcp"]))
                    == 2)
    finally:
        assert await gw.stop() == 0
    # While the gateway is down: the broker fills `rest`; `never` is forgotten by the broker
    # (as if its placement had been lost: the gateway then routes it again on start).
    broker.marks["BAC"] = D("9.94")
    assert broker.do(broker.account.match, dict(broker.marks)) == 1
    broker.do(lambda: broker.account.orders.pop(broker.account.own.pop(never.client_order_id)))
    gw = await start_gateway(common, mcp_settings)
    try:
        assert list(gw.gw.oms.orders) == [never.client_order_id]  # rest is FILLED now; never was routed again
        counters = dict(gw.gw.counters)
        await _wait(lambda: broker.do(lambda: never.client_order_id in broker.account.own))
    finally:
        assert await gw.stop() == 0
    (f,) = db_rows(common.db_url, db.Fill.__table__)
    assert (f["client_order_id"], f["qty"], f["price"]) == (rest.client_order_id, D(10), D("9.94"))
    orders = {o["client_order_id"]: o["status"] for o in db_rows(common.db_url, db.Order.__table__)}
    assert orders == {rest.client_order_id: "FILLED", never.client_order_id: "ACCEPTED"}
    audit = [a for a in _audit(common.db_url) if a["action"].startswith("venue.reconcile")]
    assert sorted(a["action"] for a in audit) == ["venue.reconcile", "venue.reconcile.fill", "venue.reconcile.routed"]
    summary = next(a for a in audit if a["action"] == "venue.reconcile")["detail"]
    figures = {k: summary[k] for k in ("found", "resolved", "ignored")} | {"refused": len(summary["refused"])}
    print(f"\nD7 fill missing in the database: {figures}")
    assert figures == {"found": 2, "resolved": 2, "refused": 0, "ignored": 0}
    assert counters["reconcile.found"] == 2 and counters["fills"] == 1
    reps = [decode(x[b"d"]) for _i, x in await r.xrange(streams.EXEC_EVENTS)]
    assert (reps[-1].client_order_id, reps[-1].status, reps[-1].last_px) == (rest.client_order_id, OrdStatus.FILLED,
                                                                            D("9.94"))
    await r.aclose()


async def test_d7_a_position_the_fills_do_not_explain_refuses_the_start(common, mcp_settings, broker):
    # A fill reported for an order id the database has never seen (e.g. another gateway's).
    broker.do(broker.account.apply_report, fill(symbol="BAC", side=Side.SELL, qty="30", px="10", coid="co-foreign"))
    with pytest.raises(ReconciliationFailed) as e:
        await start_gateway(common, mcp_settings)
    msg = str(e.value)
    assert "order unknown to the gateway: co-foreign" in msg
    assert "position BAC: -30 at the venue, 0 from the gateway's fills" in msg and "2 unresolved" in msg


async def test_simulator_reconciliation_takes_the_same_path_and_finds_nothing(common, ex_settings, caplog):
    caplog.set_level("INFO", logger="execution.service")
    gw = await start_gateway(common, ex_settings)
    try:
        assert gw.gw.counters.get("reconcile.found") == 0
    finally:
        assert await gw.stop() == 0
    assert any("reconciliation with venue simulator: found 0, resolved 0, refused 0" in m for m in caplog.messages)
