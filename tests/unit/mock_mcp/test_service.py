"""The mock broker service on real Redis: fills from ex:events, dead letters, replay on restart, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from mcp import Client

from common import streams
from common.bus import Publisher, connect
from common.config import CommonSettings, ConfigError, load
from common.messages import Side, encode
from mock_mcp.config import McpSettings
from mock_mcp.service import MockMcpService
from tests.conftest import ROOT
from tests.unit.mock_mcp.stubs import fill


def _service(redis_url: str, **mcp) -> MockMcpService:
    common = load(CommonSettings, redis_url=redis_url, initial_cash="10000", block_ms=5, heartbeat_s=0.2)
    return MockMcpService(common, load(McpSettings, port=0, **mcp))


async def _start(svc: MockMcpService) -> asyncio.Task:
    task = asyncio.create_task(svc.run())
    for _ in range(300):
        if svc.http.started:
            return task
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    raise AssertionError("mock_mcp did not start")


async def _stop(svc: MockMcpService, task: asyncio.Task) -> int:
    svc.request_stop()
    return await asyncio.wait_for(task, 15)


async def _until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_fills_on_ex_events_move_the_account_seen_over_mcp(redis_url, clean_env):
    r = connect(redis_url)
    svc = _service(redis_url)
    task = await _start(svc)
    try:
        pub = Publisher(r, 10_000)
        buy = fill(symbol="AAA", side=Side.BUY, qty="10", px="100", fee="2", exec_id="e-1")
        await pub.publish(
            [
                (streams.EXEC_EVENTS, encode(buy)),
                (streams.EXEC_EVENTS, encode(buy)),  # re-delivered: applied once
                (
                    streams.EXEC_EVENTS,
                    encode(fill(symbol="AAA", side=Side.SELL, qty="4", px="105", exec_id="e-2")),
                ),
            ]
        )
        await r.hset(streams.MARKS, mapping={"AAA": "110"})

        async def applied():
            return (
                len(svc.account.applied) == 2
                and (await r.xpending(streams.EXEC_EVENTS, "mock_mcp"))["pending"] == 0
            )

        await _until(applied)
        async with Client(svc.http.url) as c:
            pos = json.loads((await c.call_tool("get_positions", {})).content[0].text)["net"][0]
            margins = json.loads((await c.call_tool("get_margins", {})).content[0].text)["equity"]
        assert (pos["quantity"], pos["average_price"], pos["realised"]) == ("6", "100", "20")
        assert (pos["last_price"], pos["unrealised"]) == ("110", "60")  # valued at the gateway's mark
        assert margins["available"]["cash"] == "9418"  # 10000 - 1000 - 2 + 420
        stats = await r.hgetall(streams.stats_key("mock_mcp"))
        assert int(stats[b"fills"]) == 2 and int(stats[b"reports_duplicate"]) == 1
        assert svc.tool_calls == {"get_positions": 1, "get_margins": 1}
    finally:
        assert await _stop(svc, task) == 0
        await r.aclose()


async def test_garbage_on_ex_events_is_dead_lettered(redis_url, clean_env):
    r = connect(redis_url)
    await r.xadd(streams.EXEC_EVENTS, {b"d": b"\x93garbage"})
    await r.xadd(streams.EXEC_EVENTS, {b"x": b"no data field"})
    await r.xadd(streams.EXEC_EVENTS, {b"d": encode(fill(px="0", exec_id="no-price"))})
    await r.xadd(streams.EXEC_EVENTS, {b"d": encode(fill(qty="1", px="10", exec_id="good"))})
    svc = _service(redis_url)
    task = await _start(svc)
    try:

        async def dead():
            return int(await r.hget(streams.DLQ_COUNTS, streams.EXEC_EVENTS) or 0) == 3

        await _until(dead)
        assert await r.xlen(streams.dlq_stream(streams.EXEC_EVENTS)) == 3
        assert svc.account.position("AAA").quantity == Decimal(1)
        assert (await r.xpending(streams.EXEC_EVENTS, "mock_mcp"))["pending"] == 0
    finally:
        await _stop(svc, task)
        await r.aclose()


async def test_restart_rebuilds_the_account_by_replaying_ex_events(redis_url, clean_env):
    r = connect(redis_url)
    pub = Publisher(r, 10_000)
    reps = [
        fill(side=Side.BUY, qty="10", px="100", fee="1"),
        fill(side=Side.SELL, qty="3", px="120", fee="1"),
    ]
    await pub.publish([(streams.EXEC_EVENTS, encode(x)) for x in reps])
    first = _service(redis_url)
    task = await _start(first)
    await _until(lambda: _acked(r))
    cash, qty = first.account.cash, first.account.position("AAA").quantity
    assert await _stop(first, task) == 0

    # Everything is acked now; a fresh process still rebuilds the same account from the stream.
    second = _service(redis_url, replay_page=1)
    task = await _start(second)
    try:
        assert second.account.cash == cash == Decimal(10000) - 1000 - 1 + 360 - 1
        assert second.account.position("AAA").quantity == qty == 7
        assert second.account.position("AAA").realised == Decimal(60)
        await pub.publish([(streams.EXEC_EVENTS, encode(fill(side=Side.BUY, qty="1", px="100")))])
        await _until(lambda: _pos(second, 8))
        assert second.counters.get("replayed_fills") == 2
    finally:
        await _stop(second, task)
        await r.aclose()


async def _acked(r) -> bool:
    return (await r.xinfo_groups(streams.EXEC_EVENTS))[0]["pending"] == 0 and await r.xlen(
        streams.EXEC_EVENTS
    ) > 0


async def _pos(svc, n) -> bool:
    return svc.account.position("AAA").quantity == n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_mock_mcp_serves_and_exits_0_on_sigterm(redis_url, clean_env):
    import redis

    port = _free_port()
    env = dict(
        os.environ, AITRADER_REDIS_URL=redis_url, AITRADER_MCP_PORT=str(port), AITRADER_HEARTBEAT_S="0.2"
    )
    proc = subprocess.Popen([sys.executable, "-m", "mock_mcp"], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    r = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None and not r.keys("health:mock_mcp:*"):
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the MCP server listens
        check = subprocess.run(
            [sys.executable, "-m", "mock_mcp", "--check"],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and f"127.0.0.1:{port}/mcp" in check.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not r.keys("health:mock_mcp:*")
    finally:
        r.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_settings_turn_sessions_and_seeded_accounts_on(clean_env):
    clean_env.setenv("AITRADER_MCP_API_KEY", "k1")
    with pytest.raises(ConfigError, match="AITRADER_MCP_API_SECRET is missing"):
        load(McpSettings)
    clean_env.setenv("AITRADER_MCP_API_SECRET", "s1-not-a-placeholder")
    clean_env.setenv("AITRADER_MCP_SEED", "42")
    clean_env.setenv("AITRADER_MCP_TOKEN_TTL_S", "5")
    svc = MockMcpService(load(CommonSettings), load(McpSettings))
    again = MockMcpService(load(CommonSettings), load(McpSettings))
    assert svc.auth is not None and svc.auth.ttl_s == 5 and "s1-not" not in repr(svc.auth)
    assert svc.account.profile()["user_id"] == "SIM000042" == svc.auth.user_id
    assert svc.account.holdings_view({}) == again.account.holdings_view({}) != []
    assert "sessions on" in svc.heartbeat_detail()
