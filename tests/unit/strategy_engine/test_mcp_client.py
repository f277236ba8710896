"""The MCP client against the real mock broker server: snapshots, tool errors, unreachable servers."""

from __future__ import annotations

import asyncio
import json
import socket
from decimal import Decimal

import pytest
from mcp.server.mcpserver import Context, MCPServer

from common.messages import Side
from mock_mcp.account import Account, AccountSeed
from mock_mcp.server import McpHttpServer, build_mcp_server
from strategy_engine.account import AccountContext
from strategy_engine.mcp_client import BrokerError, BrokerUnavailable, McpBrokerClient
from tests.unit.mock_mcp.stubs import fill


@pytest.fixture
async def broker():
    seed = AccountSeed(holdings=(("HLD", "SIM", Decimal(5), Decimal(20), ""),))
    account = Account(Decimal(10000), seed)

    async def marks():
        return {"AAA": Decimal(110)}

    http = McpHttpServer(build_mcp_server(account, marks), port=0)
    task = asyncio.create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.02)
    yield account, http
    http.stop()
    await asyncio.wait_for(task, 10)


async def test_context_refresh_over_mcp_reflects_the_account(broker):
    account, http = broker
    account.apply_report(fill(symbol="AAA", side=Side.BUY, qty="10", px="100", fee="1"))
    client = McpBrokerClient(http.url, timeout_s=5)
    snap = await client.snapshot()
    assert snap.cash == Decimal(8999) and snap.available == Decimal(8999)
    assert snap.positions == {"AAA": Decimal(10), "HLD": Decimal(5)}
    assert snap.prices["AAA"] == Decimal(110)
    assert snap.equity == Decimal(8999) + 10 * 110 + 5 * 20
    ctx = AccountContext()
    ctx.apply_snapshot(snap, requested_ns=0)
    assert ctx.position("AAA") == 10 and not ctx.is_stale()


async def test_tool_error_is_a_broker_error(broker):
    _, http = broker
    client = McpBrokerClient(http.url)
    with pytest.raises(BrokerError, match="transaction_type"):
        await client.call("place_order", {"tradingsymbol": "AAA", "transaction_type": "HOLD", "quantity": 1})
    with pytest.raises(BrokerError, match="Unknown tool"):
        await client.call("no_such_tool")
    assert (await client.call("get_profile"))["user_id"] == "SIM001"


async def test_unreachable_or_silent_server_is_broker_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerUnavailable, match="127.0.0.1"):
        await McpBrokerClient(f"http://127.0.0.1:{port}/mcp", timeout_s=2).snapshot()
    # A server that accepts but never answers: the timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        with pytest.raises(BrokerUnavailable, match="no answer within"):
            await McpBrokerClient(url, timeout_s=0.5).snapshot()


def test_the_auth_secret_never_shows_in_repr():
    c = McpBrokerClient("https://broker.example/mcp", auth_secret="Bearer s3cr3t")
    assert "s3cr3t" not in repr(c) and "s3cr3t" not in repr(vars(c).get("url"))


async def test_the_auth_header_reaches_the_server():
    srv = MCPServer("echo")

    @srv.tool(name="whoami")
    async def whoami(ctx: Context) -> str:
        return json.dumps({"auth": (ctx.headers or {}).get("x-broker-token", "")})

    http = McpHttpServer(srv, port=0)
    task = asyncio.create_task(http.serve())
    try:
        while not http.started:
            await asyncio.sleep(0.02)
        client = McpBrokerClient(http.url, auth_header="X-Broker-Token", auth_secret="tok-123")
        assert await client.call("whoami") == {"auth": "tok-123"}
    finally:
        http.stop()
        await asyncio.wait_for(task, 10)
