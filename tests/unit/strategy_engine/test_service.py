"""The strategy engine on real Redis against the real mock broker (MCP over HTTP), both in-process."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from common import streams
from common.bus import Publisher, connect
from common.config import CommonSettings, load
from common.messages import (
    ExecutionReport,
    Heartbeat,
    OrderIntent,
    OrdStatus,
    Side,
    Signal,
    client_order_id_for,
    decode_as,
    encode,
    signal_id_for,
)
from mock_mcp.config import McpSettings
from mock_mcp.service import MockMcpService
from strategy_engine.config import StrategySettings
from strategy_engine.service import StrategyEngineService
from strategy_engine.strategies import parse_strategies

STRATEGIES = parse_strategies(
    {
        "strategies": [
            {
                "name": "mom",
                "detectors": ["momentum_burst"],
                "allocation": 0.25,
                "allow_short": False,
                "stop_k": 2.0,
                "horizon_ticks": 16,
                "stop_floor_bps": 10,
                "max_position_notional": "50000",
                "min_trade_fraction": 0.0,  # so the last of the cash buys a partial position
            },
            {
                "name": "brk",
                "detectors": ["breakout"],
                "symbols": ["ZZZ"],
                "allocation": 0.25,
                "max_position_notional": "50000",
            },
        ]
    }
)


def _common(redis_url: str) -> CommonSettings:
    return load(CommonSettings, redis_url=redis_url, initial_cash="100000", block_ms=5, heartbeat_s=0.1)


def _signal(
    symbol: str, seq: int, side: Side = Side.BUY, detector: str = "momentum_burst", price: float = 100.0
):
    now = time.time_ns()
    return Signal(
        signal_id=signal_id_for(symbol, 1_000 + seq, seq, detector),
        symbol=symbol,
        detector=detector,
        side=side,
        strength=2.0,
        price=price,
        tick_seq=seq,
        ts_event=1_000 + seq,
        ts_ingest=now - 2_000,
        ts_signal=now - 1_000,
        volatility=0.5,  # stop = 2 * 0.5 * sqrt(16) = 4 -> 100000 * 0.25 * 0.02 / 4 = 125 units
    )


def _fill_for(intent: OrderIntent, exec_id: str) -> ExecutionReport:
    now = time.time_ns()
    return ExecutionReport(
        exec_id=exec_id,
        client_order_id=intent.client_order_id,
        signal_id=intent.signal_id,
        strategy=intent.strategy,
        symbol=intent.symbol,
        side=intent.side,
        status=OrdStatus.FILLED,
        order_qty=intent.qty,
        cum_qty=intent.qty,
        leaves_qty=Decimal(0),
        last_qty=intent.qty,
        last_px=intent.ref_price,
        avg_px=intent.ref_price,
        fee=Decimal(1),
        ts_event=intent.ts_event,
        ts_ingest=intent.ts_ingest,
        ts_signal=intent.ts_signal,
        ts_intent=intent.ts_intent,
        ts_exec=now,
    )


async def _until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def _intents(r) -> list[OrderIntent]:
    return [decode_as(f[b"d"], OrderIntent) for _, f in await r.xrange(streams.INTENTS)]


@pytest.fixture
async def stack(redis_url, clean_env):
    """mock_mcp and the strategy engine, each a real Service run in this event loop."""
    r = connect(redis_url)
    mock = MockMcpService(_common(redis_url), load(McpSettings, port=0))
    mock_task = asyncio.create_task(mock.run())
    await _until(lambda: _true(mock.http.started))
    started: list[tuple[StrategyEngineService, asyncio.Task]] = []

    async def start_engine(**kw) -> StrategyEngineService:
        strategies = kw.pop("strategies", STRATEGIES)
        settings = load(StrategySettings, mcp_url=kw.pop("mcp_url", mock.http.url), **kw)
        se = StrategyEngineService(_common(redis_url), settings, strategies=strategies)
        task = asyncio.create_task(se.run())
        started.append((se, task))
        _TASKS[se] = task
        await _until(lambda: _true(se.consumer is not None and se.status in ("ok", "degraded")))
        return se

    yield r, mock, mock_task, start_engine
    for se, task in started:
        se.request_stop()
        assert await asyncio.wait_for(task, 15) == 0
    mock.request_stop()
    await asyncio.wait_for(mock_task, 15)
    await r.aclose()


async def _true(v) -> bool:
    return bool(v)


_TASKS: dict[StrategyEngineService, asyncio.Task] = {}


async def _stop(se: StrategyEngineService) -> None:
    """Stop an engine started by the ``stack`` fixture (a restart); it exits 0."""
    se.request_stop()
    assert await asyncio.wait_for(_TASKS.pop(se), 15) == 0


async def test_signals_become_sized_intents_without_an_mcp_call_each(stack):
    r, mock, _, start_engine = stack
    se = await start_engine(refresh_s=60, stale_after_s=120, fill_refresh_delay_s=0.01)
    assert se.context.refreshed_at is not None and se.context.equity == Decimal(100000)
    calls_before = dict(mock.tool_calls)

    sigs = [_signal(f"S{i:02d}", i) for i in range(12)]
    sigs += [
        _signal("ZZZ", 99, detector="breakout"),
        _signal("S00", 100, detector="imbalance"),
    ]  # unrouted last
    sigs.insert(1, sigs.pop(12))  # the breakout signal early, before cash runs out
    await Publisher(r, 10_000).publish([(streams.SIGNALS, encode(s)) for s in sigs])

    async def all_signals():
        return int((await r.hget(streams.stats_key("strategy_engine"), "signals")) or 0) == len(sigs)

    await _until(all_signals)
    intents = await _intents(r)
    assert mock.tool_calls == calls_before  # the context is cached: no MCP call per signal

    by_signal = {i.signal_id: i for i in intents}
    first = by_signal[sigs[0].signal_id]
    assert first.client_order_id == client_order_id_for(sigs[0].signal_id, "mom")
    assert by_signal[sigs[1].signal_id].client_order_id == client_order_id_for(sigs[1].signal_id, "brk")
    assert (first.qty, first.side, first.strategy, first.ref_price) == (
        Decimal(125),
        Side.BUY,
        "mom",
        Decimal("100.0"),
    )
    assert (first.ts_event, first.ts_ingest, first.ts_signal) == (
        sigs[0].ts_event,
        sigs[0].ts_ingest,
        sigs[0].ts_signal,
    )
    assert first.ts_intent >= first.ts_signal and first.order_type == "MARKET" and first.tif == "DAY"
    assert {"equity", "cash", "vol", "stop_distance", "risk_fraction", "bound_risk"} <= set(first.sizing)

    # Own intents reserve cash optimistically: the burst never spends more than there is.
    total = sum(i.qty * i.ref_price for i in intents)
    assert total <= Decimal(100000) * Decimal("0.999")
    assert any("bound_cash" in i.sizing for i in intents)
    stats = await r.hgetall(streams.stats_key("strategy_engine"))
    assert int(stats[b"intents"]) == len(intents)
    assert int(stats[b"signals_skipped.no_strategy"]) == 1
    assert int(stats.get(b"signals_skipped.cash", 0)) == len(sigs) - 1 - len(intents)
    assert se.latency["signal_to_intent"].count == len(intents)

    # A fill on ex:events moves the context at once, then a refresh (scheduled by the fill) confirms it.
    await r.xadd(streams.EXEC_EVENTS, {b"d": encode(_fill_for(first, "ex-1"))})
    await _until(lambda: _true(se.context.positions.get("S00") == Decimal(125)))
    await _until(lambda: _true(mock.tool_calls.get("get_margins", 0) > calls_before.get("get_margins", 0)))
    await _until(lambda: _true(se.context.cash == Decimal(100000 - 12500 - 1)))
    assert se.context.position("S00") == Decimal(125)  # filled: no longer counted as in flight as well
    assert mock.account.position("S00").quantity == Decimal(125)

    # The same signal again (a replay) yields the very same intent.
    await r.xadd(streams.SIGNALS, {b"d": encode(sigs[2])})
    await _until(lambda: _intent_count(r, len(intents) + 1))
    again = (await _intents(r))[-1]
    assert again == by_signal[sigs[2].signal_id]


async def _intent_count(r, n) -> bool:
    return await r.xlen(streams.INTENTS) == n


async def test_stale_context_blocks_new_positions_and_says_why(stack):
    r, mock, mock_task, start_engine = stack
    se = await start_engine(refresh_s=0.1, stale_after_s=0.6, mcp_timeout_s=1)
    pub = Publisher(r, 10_000)
    await pub.publish([(streams.SIGNALS, encode(_signal("AAA", 1)))])
    await _until(lambda: _intent_count(r, 1))

    mock.request_stop()  # the broker's MCP server goes away
    await asyncio.wait_for(mock_task, 15)
    await _until(lambda: _true(se.context.is_stale()), timeout=10)
    await pub.publish([(streams.SIGNALS, encode(_signal("BBB", 2)))])

    async def blocked():
        return (await r.hget(streams.stats_key("strategy_engine"), "intents_blocked_stale_context")) == b"1"

    await _until(blocked)
    assert await r.xlen(streams.INTENTS) == 1
    await asyncio.sleep(0.2)  # a heartbeat or two
    keys = await r.keys(streams.health_key("strategy_engine", "*"))
    hb = decode_as(await r.get(keys[0]), Heartbeat)
    assert hb.status == "degraded" and "STALE" in hb.detail and "not opening positions" in hb.detail, (
        hb,
        se.status,
        se.context.is_stale(),
    )
    assert "BrokerUnavailable" in hb.detail or "127.0.0.1" in hb.detail
    assert hb.counters["intents_blocked_stale_context"] == 1

    # Closing still passes: a SELL on the position the engine knows of (its own in-flight intent) is sent.
    await pub.publish([(streams.SIGNALS, encode(_signal("AAA", 3, side=Side.SELL)))])
    await _until(lambda: _intent_count(r, 2))
    close = (await _intents(r))[-1]
    assert (close.side, close.qty, close.symbol) == (Side.SELL, Decimal(125), "AAA")


async def test_engine_starts_with_the_broker_down_and_opens_nothing(stack, redis_url):
    r, _, _, start_engine = stack
    se = await start_engine(mcp_url="http://127.0.0.1:9/mcp", refresh_s=0.2, stale_after_s=5, mcp_timeout_s=1)
    assert se.context.refreshed_at is None and se.status == "degraded"
    await Publisher(r, 1000).publish([(streams.SIGNALS, encode(_signal("AAA", 1)))])

    async def blocked():
        return (await r.hget(streams.stats_key("strategy_engine"), "intents_blocked_stale_context")) == b"1"

    await _until(blocked)
    assert await r.xlen(streams.INTENTS) == 0


TWO_ON_ONE_SYMBOL = parse_strategies(
    {
        "strategies": [
            {"name": "trend", "type": "momentum", "detectors": ["momentum_burst"], "allocation": 0.25,
             "allow_short": True, "stop_k": 2.0, "horizon_ticks": 16, "max_position_notional": "50000"},
            {"name": "fade", "type": "mean_reversion", "detectors": ["zscore_reversion"], "allocation": 0.25,
             "allow_short": True, "stop_k": 2.0, "horizon_ticks": 16, "max_position_notional": "50000"},
        ]
    }
)


async def test_each_strategy_sizes_against_its_own_book_and_keeps_it_across_a_restart(stack):
    """Two strategies on one symbol with opposite views: neither trades the other's position, each is
    charged only its own fills, and the books come back after a restart (se:books)."""
    from strategy_engine.books import BOOKS_KEY

    r, _, _, start_engine = stack
    kw = {"refresh_s": 60, "stale_after_s": 120, "strategies": TWO_ON_ONE_SYMBOL}

    async def step(sig: Signal, n: int, exec_id: str) -> OrderIntent:
        """Publish a signal, wait for the n-th intent, fill it on ex:events, wait for the book to take it."""
        await r.xadd(streams.SIGNALS, {b"d": encode(sig)})
        await _until(lambda: _intent_count(r, n))
        it = (await _intents(r))[-1]
        await r.xadd(streams.EXEC_EVENTS, {b"d": encode(_fill_for(it, exec_id))})
        await _until(lambda: _true(exec_id in se.books._seen and se.context.strategy_pending(it.strategy, it.symbol) == 0))
        return it

    se = await start_engine(**kw)
    buy = await step(_signal("AAA", 1, Side.BUY, "momentum_burst"), 1, "x1")
    assert (buy.strategy, buy.side, buy.qty) == ("trend", Side.BUY, Decimal(125))
    # The fade strategy sells its own short (124: equity is 99999 after the first fee); against the
    # account's net +125 it would have sold 125 + 124.
    sell = await step(_signal("AAA", 2, Side.SELL, "zscore_reversion"), 2, "x2")
    assert (sell.strategy, sell.side, sell.qty) == ("fade", Side.SELL, Decimal(124))
    assert sell.sizing["current_position"] == 0.0
    assert se.context.positions.get("AAA") == 1  # the account nets the two books
    assert (se.books.position("trend", "AAA"), se.books.position("fade", "AAA")) == (Decimal(125), Decimal(-124))
    assert se.books.unattributed(se.context.positions) == {}
    # A second fade signal finds fade already at its target: nothing, whatever trend holds.
    await r.xadd(streams.SIGNALS, {b"d": encode(_signal("AAA", 3, Side.SELL, "zscore_reversion"))})

    async def skipped():
        return int((await r.hget(streams.stats_key("strategy_engine"), "signals_skipped.at_target")) or 0) == 1

    await _until(skipped)
    assert await r.xlen(streams.INTENTS) == 2
    # Each is charged its own fills: at 110, trend made 125 x 10 and fade lost 124 x 10 (1 fee each).
    prices = {"AAA": Decimal(110)}
    assert se.books.get("trend").pnl(prices) == pytest.approx(1250 - 1)
    assert se.books.get("fade").pnl(prices) == pytest.approx(-1240 - 1)
    assert set(await r.hgetall(BOOKS_KEY)) == {b"trend", b"fade"}
    await _stop(se)

    # Restarted: the books are read back before anything is consumed; trend reverses its own long only.
    se = await start_engine(**kw)
    assert (se.books.position("trend", "AAA"), se.books.position("fade", "AAA")) == (Decimal(125), Decimal(-124))
    await r.xadd(streams.SIGNALS, {b"d": encode(_signal("AAA", 4, Side.SELL, "momentum_burst"))})
    await _until(lambda: _intent_count(r, 3))
    rev = (await _intents(r))[-1]
    assert (rev.strategy, rev.side) == ("trend", Side.SELL)
    assert rev.qty == 125 + Decimal(rev.sizing["risk_qty"])  # its own 125 closed, then its own short
    assert rev.sizing["current_position"] == 125.0


async def test_brackets_come_back_after_a_restart_and_stay_oco_linked(stack):
    """An entry fills, its stop and target go out; the engine restarts; the target's fill still cancels the stop."""
    from common.messages import Control
    from strategy_engine.brackets import BRACKETS_KEY, leg_id

    bracketed = parse_strategies({"strategies": [
        {"name": "trend", "type": "momentum", "detectors": ["momentum_burst"], "allocation": 0.25,
         "stop_k": 2.0, "horizon_ticks": 16, "max_position_notional": "50000",
         "stops": {"stop_loss": True, "take_profit_r": 2.0}}]})
    r, _, _, start_engine = stack
    kw = {"refresh_s": 60, "stale_after_s": 120, "strategies": bracketed}

    se = await start_engine(**kw)
    await r.xadd(streams.SIGNALS, {b"d": encode(_signal("AAA", 1))})
    await _until(lambda: _intent_count(r, 1))
    (entry,) = await _intents(r)
    await r.xadd(streams.EXEC_EVENTS, {b"d": encode(_fill_for(entry, "x1"))})
    await _until(lambda: _intent_count(r, 3))  # the stop and the target
    await _until(lambda: _true(se.brackets.open_brackets() == 1))
    await _stop(se)
    assert list(await r.hkeys(BRACKETS_KEY)) == [entry.client_order_id.encode()]

    se = await start_engine(**kw)
    assert se.brackets.open_brackets() == 1
    take = next(i for i in await _intents(r) if i.client_order_id == leg_id(entry.client_order_id, "tp", 1))
    await r.xadd(streams.EXEC_EVENTS, {b"d": encode(_fill_for(take, "x2"))})

    async def cancels() -> list[Control]:
        return [c for c in (decode_as(f[b"d"], Control) for _, f in await r.xrange(streams.CONTROL))
                if c.command == "order.cancel"]

    async def cancelled() -> bool:
        return bool(await cancels())

    await _until(cancelled)
    (ctl,) = await cancels()
    assert ctl.args["client_order_id"] == leg_id(entry.client_order_id, "sl", 1)
