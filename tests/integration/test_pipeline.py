"""The whole pipeline as separate processes on a real Redis and database, replaying real files."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from common import streams
from common.db import make_engine
from common.messages import (
    ExecutionReport,
    OrderIntent,
    Signal,
    decode_as,
)

from .harness import Pipeline

pytestmark = pytest.mark.integration

REAL_FILES = [
    # equity trades and quotes (AlgoSeek consolidated quote updates → top of book)
    "quantconnect_lean/equity_tick/20131007_ibm_Trade_Tick.csv.gz",
    "quantconnect_lean/equity_tick/20131007_ibm_Quote_Tick.csv.gz",
    # FX quotes
    "nautilus_trader/fx_ticks/truefx_usdjpy-ticks.csv",
    "nautilus_trader/fx_ticks/histdata_eurusd_quote_tick_data.csv",
    # Binance trades (and best bid/offer)
    "nautilus_trader/crypto/binance_btcusdt-trades.parquet",
    "nautilus_trader/crypto/binance_btcusdt-quotes.parquet",
    "freqtrade/binance_ethusdt_public_trades_list.csv",
]


def _stream(r, name, typ):
    out = []
    for _id, fields in r.xrange(name):
        out.append(decode_as(fields[b"d"], typ))
    return out


def _run_once(redis_url, database_url, home, files):
    """One fresh pipeline replaying ``files`` in lockstep (reproducible grouping of every batch)."""
    with Pipeline(redis_url, database_url, home) as p:
        p.start()
        summary = p.replay(*files, "--lockstep")
        rep = p.report(wait_idle=240)
        r = p.redis()
        signals = _stream(r, streams.SIGNALS, Signal)
        intents = _stream(r, streams.INTENTS, OrderIntent)
        events = _stream(r, streams.EXEC_EVENTS, ExecutionReport)
        broker = _broker_snapshot(p)
        codes = p.stop()
    eng = make_engine(database_url)
    with eng.connect() as c:
        orders = {row.client_order_id: row for row in c.execute(sa.text("SELECT * FROM orders"))}
        fills = {row.exec_id: row for row in c.execute(sa.text("SELECT * FROM fills"))}
    eng.dispose()
    return summary, rep, signals, intents, events, orders, fills, codes, broker


def _broker_snapshot(p: Pipeline):
    """The account as the mock broker reports it over MCP (the strategy engine's real client)."""
    import asyncio

    from strategy_engine.mcp_client import McpBrokerClient

    return asyncio.run(McpBrokerClient(p.env["AITRADER_SE_MCP_URL"]).snapshot())


def _reset(redis_url, database_url, tmp_path):
    """A flushed Redis db and an empty database; returns the database URL to use."""
    import redis as redis_lib

    r = redis_lib.Redis.from_url(redis_url)
    r.flushdb()
    r.close()
    if database_url.startswith("postgresql"):
        eng = sa.create_engine(database_url)
        with eng.begin() as c:
            c.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            c.execute(sa.text("CREATE SCHEMA public"))
        eng.dispose()
        return database_url
    return f"sqlite:///{tmp_path / 'fresh.db'}"


def test_real_files_flow_end_to_end_and_twice_gives_same_ids(redis_url, database_url, shared_data, tmp_path):
    files = [str(shared_data / f) for f in REAL_FILES]
    summary, rep, signals, intents, events, orders, fills, codes, broker = _run_once(
        redis_url, database_url, tmp_path / "run1", files
    )

    # every service stopped cleanly on SIGTERM
    assert codes == {s: 0 for s in codes}, codes
    assert rep["idle"], rep["consumer_groups"]
    # every tick consumed, by both groups reading the tick stream
    published = summary["ticks"]
    assert published > 50_000
    assert rep["ticks"] == published
    assert rep["stage_counters"]["execution"]["ticks"] == published
    # no dead letters on real data
    assert rep["dead_letters"] == 0, rep["dead_letters_by_stream"]
    # the pipeline did something
    assert rep["signals"] == len(signals) > 0
    assert rep["intents"] == len(intents) > 0
    assert rep["fills"] > 0

    # every fill traces to an intent and a signal
    signal_ids = {s.signal_id for s in signals}
    intent_by_coid = {i.client_order_id: i for i in intents}
    for f in fills.values():
        order = orders[f.client_order_id]
        assert f.client_order_id in intent_by_coid
        assert order.signal_id == intent_by_coid[f.client_order_id].signal_id
        assert order.signal_id in signal_ids

    # the database holds the same orders and fills as ex:events
    assert set(orders) == {e.client_order_id for e in events}
    ev_fills = {e.exec_id: e for e in events if e.last_qty > 0}
    assert set(fills) == set(ev_fills)
    for exec_id, e in ev_fills.items():
        row = fills[exec_id]
        assert Decimal(str(row.qty)) == e.last_qty and Decimal(str(row.price)) == e.last_px
    final = {}
    for e in events:
        final[e.client_order_id] = e.status
    for coid, status in final.items():
        assert orders[coid].status == str(status), (coid, orders[coid].status, status)
    assert len(orders) == rep["orders"] and len(fills) == rep["fills"]

    # cash + position value = equity
    pos_value = sum(Decimal(p["market_value"]) for p in rep["positions"].values())
    assert abs(Decimal(rep["cash"]) + pos_value - Decimal(rep["equity"])) <= Decimal("0.05")
    pnl = Decimal(rep["realized_pnl"]) + Decimal(rep["unrealized_pnl"])
    assert abs(Decimal(rep["initial_cash"]) + pnl - Decimal(rep["equity"])) <= Decimal("0.05")
    # the broker's account (mock MCP, fed by ex:events) agrees with the database
    assert abs(broker.cash - Decimal(rep["cash"])) <= Decimal("0.01"), (broker.cash, rep["cash"])
    db_pos = {s: Decimal(p["qty"]) for s, p in rep["positions"].items() if Decimal(p["qty"])}
    assert {s: q for s, q in broker.positions.items() if q} == db_pos

    # latency was measured on every stage
    for stage in ("tick_to_signal", "signal_to_intent", "intent_to_fill", "tick_to_fill"):
        assert rep["latency_us"][stage]["count"] > 0, stage

    # the same inputs through a fresh pipeline give the same signal and order ids
    database_url = _reset(redis_url, database_url, tmp_path)
    _s2, rep2, signals2, intents2, _e2, orders2, _f2, _c2, _b2 = _run_once(redis_url, database_url, tmp_path / "run2", files)
    assert [s.signal_id for s in signals2] == [s.signal_id for s in signals] or (
        {s.signal_id for s in signals2} == signal_ids
    )
    intents2_by_coid = {i.client_order_id: i for i in intents2}
    differing = [
        (c, (intent_by_coid.get(c) or intents2_by_coid.get(c)))
        for c in set(intents2_by_coid) ^ set(intent_by_coid)
    ]
    assert rep2["fills"] == rep["fills"] and rep2["orders"] == rep["orders"]
    assert not differing, [
        (c, "run1" if c in intent_by_coid else "run2", i.symbol, i.strategy, int(i.side), str(i.qty), i.sizing)
        for c, i in differing
    ]
    assert set(orders2) == set(orders)
    assert rep2["ticks"] == rep["ticks"]


def test_kill_switch_engage_persists_across_restart_and_release_needs_reason(redis_url, database_url, tmp_path):
    with Pipeline(redis_url, database_url, tmp_path / "home") as p:
        p.start(("execution",))
        out = p.run("-m", "backend.cli", "kill", "engage", "--reason", "test", "--json")
        assert '"HALTED"' in out.stdout
        assert p.run("-m", "backend.cli", "kill", "release", check=False).returncode == 2
        p.stop()
        p.start(("execution",))
        st = p.run("-m", "backend.cli", "kill", "status", "--json")
        assert '"HALTED"' in st.stdout
        rel = p.run("-m", "backend.cli", "kill", "release", "--reason", "checked", "--json")
        assert '"ACTIVE"' in rel.stdout
        p.stop()
