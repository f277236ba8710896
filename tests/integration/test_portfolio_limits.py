"""Portfolio limits through the real gateway: a strategy's loss moves it to REDUCING, the
portfolio's daily loss moves everything to HALTED, and no new exposure gets through after.

Real processes: the mock broker (MCP over HTTP), the execution gateway and the strategy
engine, on real Redis and a real database. Prices move through ticks (the gateway's marks,
which the broker values the account at); the engine sees them through its account refreshes.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
import yaml

from common import streams
from common.messages import (
    ExecutionReport,
    Heartbeat,
    OrderIntent,
    Side,
    Signal,
    Tick,
    TickBatch,
    TickType,
    decode_as,
    encode,
    signal_id_for,
)
from tests.sql import sql_rows

from .harness import Pipeline, open_risk_env

pytestmark = pytest.mark.integration

SYM = "PFL"  # not in config/instruments.yml: lot 1


def _env(home) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "strategies.yml").write_text(yaml.safe_dump({"strategies": [
        # stop = max(1 * 1.0 * sqrt(1), 10 bps) = 1 -> 100000 * 0.5 * 0.02 / 1 = 1000, capped at 40000 / 100 = 400
        {"name": "mom", "detectors": ["momentum_burst"], "symbols": [SYM], "allocation": 0.5, "allow_short": False,
         "risk_per_trade": 0.02, "stop_k": 1.0, "horizon_ticks": 1, "stop_floor_bps": 10,
         "max_position_notional": "40000", "min_trade_fraction": 0.0},
        {"name": "brk", "detectors": ["breakout"], "symbols": [SYM], "allocation": 0.3, "allow_short": False,
         "risk_per_trade": 0.02, "stop_k": 1.0, "horizon_ticks": 1, "stop_floor_bps": 10,
         "max_position_notional": "40000", "min_trade_fraction": 0.0},
    ]}))
    (home / "portfolio.yml").write_text(yaml.safe_dump({"portfolio": {
        "max_portfolio_risk": 0.5,
        "max_symbol_concentration": 1.0,
        "correlation": None,
        # mom's capital is 0.5 x 100000: REDUCING at a loss of 1500
        "strategy_daily_loss": {"reduce": 0.03, "halt": 0.9},
        # the portfolio: REDUCING at 5000 lost today, HALTED at 6000
        "daily_loss": {"reduce": 0.05, "halt": 0.06},
        "drawdown": {"reduce": 0.5, "halt": 0.6},
        "check_interval_s": 0.1,
    }}))
    env = open_risk_env(home, triggers_off=True)  # the gateway's own triggers off: this is the engine's layer
    env.update(
        AITRADER_INITIAL_CASH="100000",
        AITRADER_SE_STRATEGIES_PATH=str(home / "strategies.yml"),
        AITRADER_SE_PORTFOLIO_PATH=str(home / "portfolio.yml"),
        AITRADER_SE_REFRESH_S="0.3",
        AITRADER_SE_FILL_SETTLE_S="0.05",
        AITRADER_SE_MIN_REFRESH_INTERVAL_S="0.1",
    )
    return env


_seq = 0


def _tick(r, price: str) -> None:
    """One trade tick without a size (fills an order in full) at the next seq; waits for the gateway's mark."""
    global _seq
    _seq += 1
    now = time.time_ns()
    tick = Tick(SYM, TickType.TRADE, now, _seq, price=float(price), size=0.0, ts_ingest=now)
    r.xadd(streams.ticks_stream(0), {b"d": encode(TickBatch([tick], ts_ingest=now))})
    _until(lambda: (got := r.hget(streams.MARKS, SYM)) is not None and Decimal(got.decode()) == Decimal(price),
           f"the gateway's mark {price}")


def _signal(r, detector: str, side: Side, price: float) -> str:
    """A signal decided on the last tick: an order from it fills on the next one."""
    now = time.time_ns()
    sig = Signal(signal_id=signal_id_for(SYM, now, _seq, detector), symbol=SYM, detector=detector, side=side,
                 strength=2.0, price=price, tick_seq=_seq, ts_event=now, ts_ingest=now, ts_signal=now, volatility=1.0)
    r.xadd(streams.SIGNALS, {b"d": encode(sig)})
    return sig.signal_id


def _intents(r) -> list[OrderIntent]:
    return [decode_as(f[b"d"], OrderIntent) for _, f in r.xrange(streams.INTENTS)]


def _reports(r) -> list[ExecutionReport]:
    return [decode_as(f[b"d"], ExecutionReport) for _, f in r.xrange(streams.EXEC_EVENTS)]


def _until(cond, what: str, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def _states(database_url: str) -> dict[str, tuple[str, str, str]]:
    return {s: (st, reason, actor) for s, st, reason, actor in
            sql_rows(database_url, "SELECT scope, state, reason, actor FROM trading_state")}


def _stats(r) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(streams.stats_key("strategy_engine")).items()}


def _engine_heartbeat(r) -> Heartbeat:
    for _id, f in r.xrevrange(streams.HEARTBEATS, count=50):
        hb = decode_as(f[b"d"], Heartbeat)
        if hb.service == "strategy_engine":
            return hb
    raise AssertionError("no heartbeat of the strategy engine")


def test_strategy_reducing_then_portfolio_halted_through_the_gateway(redis_url, database_url, tmp_path):
    home = tmp_path / "home"
    with Pipeline(redis_url, database_url, home, _env(home)) as p:
        p.start(("mock_mcp", "execution", "strategy_engine"))
        r = p.redis()
        _tick(r, "100.00")

        # mom buys 400 at 100 and is filled
        _signal(r, "momentum_burst", Side.BUY, 100.0)
        [buy] = _until(lambda: _intents(r), "mom's first intent")
        assert (buy.strategy, buy.side, buy.qty) == ("mom", Side.BUY, Decimal(400))
        _tick(r, "100.00")
        _until(lambda: any(e.client_order_id == buy.client_order_id and e.last_qty > 0 for e in _reports(r)),
               "mom's fill")

        # the price falls 5: mom has lost 2000 + fees = 0.04 of its 50000 (>= 0.03); the portfolio 0.02 (< 0.05)
        time.sleep(0.3)  # past the fill's settle time: the next broker snapshot is authoritative
        _tick(r, "95.00")
        st = _until(lambda: (s := _states(database_url)).get("strategy:mom") and s, "strategy:mom REDUCING")
        state, reason, actor = st["strategy:mom"]
        assert state == "REDUCING" and actor == "auto:portfolio", st
        assert reason.startswith("strategy_daily_loss: strategy mom lost 20"), reason
        assert "of its capital 50000.00 (allocation 0.5" in reason
        assert st.get("global", ("ACTIVE",))[0] == "ACTIVE", st

        # `aitrader kill status` shows it, and so does the engine's heartbeat
        out = p.run("-m", "backend.cli", "kill", "status", "--scope", "strategy:mom", "--json")
        assert json.loads(out.stdout)["state"] == "REDUCING", out.stdout
        _until(lambda: "strategy:mom REDUCING" in _engine_heartbeat(r).detail, "the heartbeat's portfolio part")

        # a new BUY for mom is not published (the engine knows the scope is REDUCING); brk still trades
        n_before = len(_intents(r))
        _signal(r, "momentum_burst", Side.BUY, 95.0)
        _until(lambda: _stats(r).get("intents_blocked.trading_state", 0) >= 1, "mom's BUY blocked")
        # the run report says so too: the blocked intents and the scope that is not active
        rep = json.loads(p.run("-m", "backend.cli", "report", "--json").stdout)
        assert rep["intents_blocked"].get("trading_state", 0) >= 1, rep["intents_blocked"]
        assert rep["scopes_not_active"] == {"strategy:mom": "REDUCING"}, rep["scopes_not_active"]
        text = p.run("-m", "backend.cli", "report").stdout
        assert "blocked by portfolio limits / trading states: {'trading_state':" in text
        assert "not active: {'strategy:mom': 'REDUCING'}" in text
        assert len(_intents(r)) == n_before

        # the price falls to 84: the portfolio lost 16 x 400 + fees > 6000 = 0.06 of 100000 -> global HALTED
        _tick(r, "84.00")
        st = _until(lambda: (s := _states(database_url)).get("global", ("ACTIVE",))[0] == "HALTED" and s,
                    "global HALTED")
        state, reason, actor = st["global"]
        assert actor == "auto:portfolio" and reason.startswith("daily_loss: daily loss 0.06"), reason
        assert "of the day's starting equity 100000.00" in reason
        events = sql_rows(database_url, "SELECT scope, action, actor FROM kill_switch_events ORDER BY id")
        assert ("strategy:mom", "reduce", "auto:portfolio") in events and ("global", "engage", "auto:portfolio") in events
        _until(lambda: "global HALTED" in _engine_heartbeat(r).detail, "the heartbeat says HALTED")

        # after it: no new-exposure intent gets through, from any strategy
        t_halt = time.time_ns()
        n_before = len(_intents(r))
        blocked = _stats(r).get("intents_blocked.trading_state", 0)
        _signal(r, "momentum_burst", Side.BUY, 84.0)
        _signal(r, "breakout", Side.BUY, 84.0)
        _until(lambda: _stats(r).get("intents_blocked.trading_state", 0) >= blocked + 2, "both BUYs blocked")
        assert len(_intents(r)) == n_before
        accepted_after = [e for e in _reports(r) if e.status == "ACCEPTED" and e.ts_exec >= t_halt]
        assert not accepted_after
        stats = _stats(r)
        assert stats.get("portfolio_breaches.strategy_daily_loss") == 1
        assert stats.get("portfolio_breaches.daily_loss") == 1

        # the state survives an engine restart (se:portfolio): the day's start stays 100000, and the
        # breaches already sent are not sent again
        assert float(r.hgetall("se:portfolio")[b"day_start"]) == 100000.0
        proc = p.procs.pop("strategy_engine")
        proc.terminate()
        assert proc.wait(30) == 0
        p.start(("strategy_engine",))
        _until(lambda: "global HALTED" in _engine_heartbeat(r).detail and _engine_heartbeat(r).started_at > t_halt,
               "the restarted engine knows the halt (the gateway's mirror)")
        time.sleep(1.0)  # several evaluations
        assert float(r.hgetall("se:portfolio")[b"day_start"]) == 100000.0
        assert sql_rows(database_url, "SELECT scope, action, actor FROM kill_switch_events ORDER BY id") == events
        n_before = len(_intents(r))
        _signal(r, "momentum_burst", Side.BUY, 84.0)
        _until(lambda: "intents_blocked.trading_state" in _engine_heartbeat(r).counters, "blocked after restart")
        assert len(_intents(r)) == n_before
