"""``aitrader strategies`` against a running strategy engine (real Redis, the real mock broker over
HTTP, a real database): switches apply without a restart, are audited and survive a restart."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
import yaml

from backend import cli
from common import streams
from common.bus import Publisher, connect
from common.config import CommonSettings, load
from common.db import migrate
from common.messages import Control, ControlAck, Side, decode_as, encode
from mock_mcp.config import McpSettings
from mock_mcp.service import MockMcpService
from strategy_engine.config import StrategySettings
from strategy_engine.service import StrategyEngineService
from strategy_engine.strategies import parse_strategies
from tests.unit.strategy_engine.test_service import _intents, _signal, _true, _until

DOC = {"strategies": [
    {"name": "mom", "type": "momentum", "detectors": ["momentum_burst"], "allocation": 0.5,
     "max_position_notional": "50000", "min_trade_fraction": 0.0},
    {"name": "brk", "type": "breakout", "detectors": ["breakout"], "allocation": 0.6, "enabled": False,
     "max_position_notional": "20000"},  # 20% of the test account: inside config/portfolio.yml's concentration
]}


async def test_cli_switches_a_running_engine_audited_and_kept_across_restarts(redis_url, database_url, clean_env,
                                                                              tmp_path, capsys):
    migrate(database_url)
    path = tmp_path / "strategies.yml"
    path.write_text(yaml.safe_dump(DOC))
    for k, v in {"REDIS_URL": redis_url, "DATABASE_URL": database_url,
                 "AITRADER_SE_STRATEGIES_PATH": str(path)}.items():
        clean_env.setenv(k, v)
    common = load(CommonSettings, redis_url=redis_url, database_url=database_url, initial_cash="100000",
                  block_ms=5, heartbeat_s=0.1)
    r = connect(redis_url)
    mock = MockMcpService(common, load(McpSettings, port=0))
    mock_task = asyncio.create_task(mock.run())
    await _until(lambda: _true(mock.http.started))

    async def start() -> tuple[StrategyEngineService, asyncio.Task]:
        se = StrategyEngineService(common, load(StrategySettings, mcp_url=mock.http.url, refresh_s=60),
                                   strategies=parse_strategies(DOC))
        task = asyncio.create_task(se.run())
        await _until(lambda: _true(se.consumer is not None and se.status in ("ok", "degraded")))
        return se, task

    async def stop(se, task) -> None:
        se.request_stop()
        assert await asyncio.wait_for(task, 15) == 0

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    se, task = await start()
    try:
        assert se.router.enabled == {"mom": True, "brk": False}
        code, out, _ = await asyncio.to_thread(run, "strategies", "disable", "mom")
        assert code == 2  # --reason is required
        code, out, err = await asyncio.to_thread(run, "strategies", "enable", "brk", "--reason", "x")
        assert code == 1 and "sum to 1.1" in err  # 0.5 + 0.6: refused before anything is written
        code, out, err = await asyncio.to_thread(run, "strategies", "disable", "nope", "--reason", "x")
        assert code == 2 and "unknown strategy 'nope'" in err

        code, out, err = await asyncio.to_thread(run, "strategies", "disable", "mom", "--reason", "too noisy",
                                                 "--json")
        ans = json.loads(out)
        assert code == 0 and ans["applied"] and ans["detail"] == "strategy mom disabled", (out, err)
        assert se.router.enabled["mom"] is False  # no restart
        await Publisher(r, 1000).publish([(streams.SIGNALS, encode(_signal("AAA", 1)))])

        async def counted():
            return (await r.hget(streams.stats_key("strategy_engine"), "signals_skipped.no_strategy")) == b"1"

        await _until(counted)
        assert await _intents(r) == []

        # The database has the switch and the audit row; Redis the live state.
        eng = sa.create_engine(database_url)
        with eng.connect() as c:
            row = c.execute(sa.text("SELECT enabled, actor, reason FROM strategy_switches WHERE name='mom'")).one()
            audit = c.execute(sa.text("SELECT action, entity, entity_id, actor FROM audit_log "
                                      "WHERE entity='strategy'")).all()
        eng.dispose()
        assert (bool(row[0]), row[2]) == (False, "too noisy") and row[1].startswith("cli:")
        assert [tuple(a) for a in audit] == [("strategy.disable", "strategy", "mom", row[1])]
        assert await r.hget(streams.STRATEGY_STATE, "mom") == b"0"

        # An unknown strategy sent on the bus is refused with an ack, not a crash.
        bad = Control(request_id="rq-bad", command="strategy.enable", scope="strategy:zzz", actor="t")
        await r.xadd(streams.CONTROL, {b"d": encode(bad)})

        async def acked():
            acks = [decode_as(f[b"d"], ControlAck) for _, f in await r.xrange(streams.CONTROL_ACKS)]
            return next((a for a in acks if a.request_id == "rq-bad"), None)

        await _until(acked)
        ack = await acked()
        assert not ack.ok and "unknown strategy 'zzz'" in ack.detail and ack.service == "strategy_engine"
    finally:
        await stop(se, task)

    # A restart keeps the switch (read from the database).
    se, task = await start()
    try:
        assert se.router.enabled == {"mom": False, "brk": False} and se.switches_note == ""
        code, out, err = await asyncio.to_thread(run, "strategies", "enable", "brk", "--reason", "try it")
        assert code == 0 and "strategy brk enabled" in out, (out, err)
        await Publisher(r, 1000).publish([(streams.SIGNALS, encode(_signal("ZZZ", 5, Side.BUY, "breakout")))])
        await _until(lambda: _intent_count(r, 1))
        (it,) = await _intents(r)
        assert it.strategy == "brk"

        code, out, err = await asyncio.to_thread(run, "strategies", "list", "--json")
        rows = {s["name"]: s for s in json.loads(out)["strategies"]}
        assert code == 0 and rows["brk"]["enabled"] and not rows["mom"]["enabled"] and rows["brk"]["running"]
        assert rows["brk"]["counters"]["intents"] == 1 and rows["brk"]["type"] == "breakout"
        assert rows["mom"]["switch"]["reason"] == "too noisy"
        code, out, _ = await asyncio.to_thread(run, "strategies", "list")
        assert code == 0 and "mom" in out and "no (switched)" in out
        code, out, _ = await asyncio.to_thread(run, "strategies", "show", "brk")
        assert code == 0 and "type breakout" in out and "intents: 1" in out and "try it" in out
        # Enabling mom now would put the allocations above 1: refused, and the engine would refuse it too.
        code, out, err = await asyncio.to_thread(run, "strategies", "enable", "mom", "--reason", "back")
        assert code == 1 and "sum to 1.1" in err and not se.router.enabled["mom"]
        assert "sum to 1.1" in se.router.enable_problem("mom")
    finally:
        await stop(se, task)
        mock.request_stop()
        await asyncio.wait_for(mock_task, 15)
        await r.aclose()


async def _intent_count(r, n) -> bool:
    return await r.xlen(streams.INTENTS) == n
