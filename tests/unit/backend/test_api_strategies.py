"""``/strategies`` against a running strategy engine (real Redis, the real mock broker, a real database): a
trader switches one off and the engine stops routing to it at once, an admin switches one on, both audited
as the CLI's are; enabling past the allocations is refused before anything is saved; no engine: 202, saved."""

from __future__ import annotations

import asyncio

import yaml

from common import streams
from common.bus import connect
from common.config import CommonSettings, load
from mock_mcp.config import McpSettings
from mock_mcp.service import MockMcpService
from strategy_engine.config import StrategySettings
from strategy_engine.service import StrategyEngineService
from strategy_engine.strategies import parse_strategies
from tests.sql import sql_rows
from tests.unit.strategy_engine.test_service import _true, _until

DOC = {"strategies": [
    {"name": "mom", "type": "momentum", "detectors": ["momentum_burst"], "allocation": 0.5,
     "max_position_notional": "50000", "min_trade_fraction": 0.0},
    {"name": "brk", "type": "breakout", "detectors": ["breakout"], "allocation": 0.6, "enabled": False,
     "max_position_notional": "20000"},
]}


def _strategies_file(tmp_path, clean_env) -> None:
    path = tmp_path / "strategies.yml"
    path.write_text(yaml.safe_dump(DOC))
    clean_env.setenv("AITRADER_SE_STRATEGIES_PATH", str(path))


async def test_switches_reach_the_running_engine_with_roles_and_audit(make_api, redis_url, tmp_path, clean_env):
    _strategies_file(tmp_path, clean_env)
    api = make_api(control_timeout_s=5.0)
    common = load(CommonSettings, redis_url=redis_url, database_url=api.db_url, initial_cash="100000",
                  block_ms=5, heartbeat_s=0.1)
    mock = MockMcpService(common, load(McpSettings, port=0))
    mock_task = asyncio.create_task(mock.run())
    await _until(lambda: _true(mock.http.started))
    se = StrategyEngineService(common, load(StrategySettings, mcp_url=mock.http.url, refresh_s=60),
                               strategies=parse_strategies(DOC))
    se_task = asyncio.create_task(se.run())
    await _until(lambda: _true(se.consumer is not None and se.status in ("ok", "degraded")))
    r = connect(redis_url)
    try:
        trader, admin, viewer = [await asyncio.to_thread(api.headers, who) for who in ("trader", "admin", "viewer")]

        def call(method, path, headers, body=None):
            return api.client.request(method, path, json=body, headers=headers)

        got = await asyncio.to_thread(call, "GET", "/strategies", viewer)
        assert got.status_code == 200, got.text
        rows = {s["name"]: s for s in got.json()["strategies"]}
        assert rows["mom"]["enabled"] and rows["mom"]["running"] and not rows["brk"]["enabled"]
        assert got.json()["notes"] == []

        # a viewer cannot switch; a trader may switch off, not on
        got = await asyncio.to_thread(call, "POST", "/strategies/mom/disable", viewer, {"reason": "x"})
        assert got.status_code == 403
        got = await asyncio.to_thread(call, "POST", "/strategies/brk/enable", trader, {"reason": "x"})
        assert got.status_code == 403 and "admin" in got.json()["error"]["message"]
        # enabling brk beside mom: 0.5 + 0.6 > 1, refused before anything is written
        got = await asyncio.to_thread(call, "POST", "/strategies/brk/enable", admin, {"reason": "x"})
        assert got.status_code == 409 and "sum to 1.1" in got.json()["error"]["message"], got.text
        assert sql_rows(api.db_url, "SELECT count(*) FROM strategy_switches") == [(0,)]

        got = await asyncio.to_thread(call, "POST", "/strategies/mom/disable", trader, {"reason": "too noisy"})
        assert got.status_code == 200, got.text
        assert got.json()["applied"] and got.json()["detail"] == "strategy mom disabled"
        assert se.router.enabled["mom"] is False  # no restart
        assert await r.hget(streams.STRATEGY_STATE, "mom") == b"0"
        got = await asyncio.to_thread(call, "POST", "/strategies/brk/enable", admin, {"reason": "try it"})
        assert got.status_code == 200 and got.json()["applied"], got.text
        assert se.router.enabled["brk"] is True

        assert sql_rows(api.db_url, "SELECT action, entity_id, actor FROM audit_log WHERE entity='strategy' "
                                    "ORDER BY id") == [("strategy.disable", "mom", "api:trader"),
                                                       ("strategy.enable", "brk", "api:admin")]
        got = await asyncio.to_thread(call, "GET", "/strategies/mom", viewer)
        body = got.json()
        assert got.status_code == 200 and not body["enabled"] and body["switch"]["reason"] == "too noisy"
        assert body["config"]["allocation"] == 0.5 and body["config"]["type"] == "momentum"
        got = await asyncio.to_thread(call, "GET", "/strategies/nope", viewer)
        assert got.status_code == 404 and "unknown strategy 'nope'" in got.json()["error"]["message"]
    finally:
        await r.aclose()
        se.request_stop()
        await asyncio.wait_for(se_task, 15)
        mock.request_stop()
        await asyncio.wait_for(mock_task, 15)


def test_without_an_engine_the_switch_is_saved_and_202(make_api, tmp_path, clean_env):
    _strategies_file(tmp_path, clean_env)
    api = make_api()
    got = api.client.post("/strategies/mom/disable", json={"reason": "night"}, headers=api.headers("trader"))
    assert got.status_code == 202, got.text
    assert not got.json()["applied"] and "no answer from the strategy engine" in got.json()["detail"]
    assert sql_rows(api.db_url, "SELECT name, enabled, actor FROM strategy_switches") == [("mom", False,
                                                                                          "api:trader")]
    listed = api.client.get("/strategies", headers=api.headers("viewer")).json()
    assert {s["name"]: s["enabled"] for s in listed["strategies"]} == {"mom": False, "brk": False}
    assert any("no running strategy engine" in n for n in listed["notes"])


def test_bad_names_and_bodies_are_422(make_api, tmp_path, clean_env):
    _strategies_file(tmp_path, clean_env)
    api = make_api()
    h = api.headers("admin")
    for path, body in (("/strategies/mom/disable", {}), ("/strategies/mom/disable", {"reason": ""}),
                       ("/strategies/mom/disable", {"reason": "x", "force": True}),
                       ("/strategies/bad%20name/disable", {"reason": "x"})):
        got = api.client.post(path, json=body, headers=h)
        assert got.status_code == 422, (path, body, got.text)
    assert sql_rows(api.db_url, "SELECT count(*) FROM strategy_switches") == [(0,)]
