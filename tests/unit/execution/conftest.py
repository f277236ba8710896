"""Shared builders for the execution tests: intents, ticks, a migrated database, a gateway."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from common.bus import Entry
from common.config import CommonSettings
from common.db import make_engine, migrate
from common.instruments import Instruments
from common.messages import OrderIntent, OrdType, Side, Tick, TickBatch, TickType, TimeInForce, decode
from execution.config import ExecutionSettings
from execution.risk import RiskConfig

ROOT = Path(__file__).resolve().parents[3]


def run_batch(oms, entries: list[Entry], store=None) -> tuple[list, dict[str, int], object]:
    """One bus batch through the OMS the way the gateway runs it: stage, (commit), route,
    (commit), then record the kill switch's cancellations. ``store`` (an ``execution.store.Store``)
    makes each step durable. Returns (every message decoded, in order; counters; the plan)."""
    plan = oms.stage(entries, store.existing(oms.unknown_ids(entries)) if store else frozenset())
    if store:
        store.write(plan.tx1)
    oms.tx1_done(plan)
    oms.route(plan)
    if store:
        store.write(plan.tx2)
    out = [decode(d) for r in plan.results.values() for _s, d in r.messages]
    counters: dict[str, int] = {}
    for r in plan.results.values():
        for k, n in r.counters.items():
            counters[k] = counters.get(k, 0) + n
    flushed = oms.flush_cancels()
    if flushed is not None:
        if store:
            store.write(flushed[0])
        out += [decode(d) for _s, d in flushed[1].messages]
    return out, counters, plan
_ids = itertools.count(1)

LIMITS = {
    "global": {
        "max_gross_notional": "1000000",
        "max_open_orders": 500,
        "max_orders_per_sec": 100000,
        "max_messages_per_sec": 100000,
        "restricted_symbols": ["HALTED"],
    },
    "defaults": {
        "max_order_qty": "1000",
        "max_order_notional": "50000",
        "price_collar_bps": "100",
        "max_position_qty": "2000",
        "max_position_notional": "100000",
        "max_mark_age_ms": "5000",
    },
    "symbols": {"BTCUSDT": {"max_order_qty": "2", "max_position_qty": "3"}},
}


def intent(
    symbol: str = "BAC",
    side: int = 1,
    qty: str = "100",
    ref: str = "10",
    *,
    cid: str | None = None,
    tick_seq: int = 1,
    order_type: OrdType = OrdType.MARKET,
    tif: TimeInForce = TimeInForce.DAY,
    limit: str | None = None,
    strategy: str = "s1",
    stop: str | None = None,
    ts_event: int | None = None,
) -> OrderIntent:
    n = next(_ids)
    now = time.time_ns()
    return OrderIntent(
        client_order_id=cid or f"co-test-{n}",
        signal_id=f"sg-test-{n}",
        strategy=strategy,
        symbol=symbol,
        side=Side(side),
        qty=Decimal(qty),
        order_type=order_type,
        tif=tif,
        ref_price=Decimal(ref),
        tick_seq=tick_seq,
        ts_event=now - 3000 if ts_event is None else ts_event,
        ts_ingest=now - 2000,
        ts_signal=now - 1000,
        ts_intent=now,
        limit_price=Decimal(limit) if limit is not None else None,
        stop_price=Decimal(stop) if stop is not None else None,
    )


def trade(symbol: str, seq: int, price: float, size: float = 100.0, ts: int | None = None) -> Tick:
    return Tick(symbol, TickType.TRADE, ts or time.time_ns(), seq, price=price, size=size, ts_ingest=time.time_ns())


def quote(symbol: str, seq: int, bid: float, ask: float, bid_size: float = 100.0, ask_size: float = 100.0,
          ts: int | None = None) -> Tick:
    return Tick(symbol, TickType.QUOTE, ts or time.time_ns(), seq, bid=bid, bid_size=bid_size, ask=ask,
                ask_size=ask_size, ts_ingest=time.time_ns())


def batch(*ticks: Tick) -> TickBatch:
    return TickBatch(list(ticks), ts_ingest=time.time_ns())


@pytest.fixture
def instruments() -> Instruments:
    return Instruments.load(ROOT / "config" / "instruments.yml")


@pytest.fixture
def risk_config() -> RiskConfig:
    return RiskConfig.from_dict(LIMITS)


@pytest.fixture
def risk_file(tmp_path) -> Path:
    import yaml

    p = tmp_path / "risk.yml"
    p.write_text(yaml.safe_dump(LIMITS))
    return p


@pytest.fixture
def db_url(database_url) -> str:
    """The test database, migrated to head."""
    migrate(database_url)
    return database_url


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def ex_settings(risk_file) -> ExecutionSettings:
    return ExecutionSettings(risk_file=risk_file, slippage_bps=Decimal(0), fee_bps=Decimal(1),
                             min_fee=Decimal("0.01"))


@pytest.fixture
def common(redis_url, db_url, tmp_path, clean_env) -> CommonSettings:
    return CommonSettings(redis_url=redis_url, database_url=db_url, home=tmp_path, heartbeat_s=0.2,
                          block_ms=5, initial_cash="100000", max_deliveries=3)


class Running:
    """A gateway running in this event loop (the real service, real Redis, real database)."""

    def __init__(self, gw, task) -> None:
        self.gw = gw
        self.task = task

    async def stop(self) -> int:
        self.gw.request_stop()
        rc = await asyncio.wait_for(self.task, 10)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        return rc


async def start_gateway(common: CommonSettings, settings: ExecutionSettings, engine=None) -> Running:
    from execution.service import ExecutionGateway

    gw = ExecutionGateway(common, settings, engine=engine)
    task = asyncio.create_task(gw.run())
    for _ in range(500):
        if gw.consumer is not None and gw.status == "ok":
            return Running(gw, task)
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    raise TimeoutError("gateway did not start")
