"""The real MCP server on a free port, called by the real ``mcp`` client: every tool, and bad input."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from common.instruments import Instruments
from common.messages import Side
from mock_mcp.account import Account
from mock_mcp.auth import SessionAuth, kite_checksum
from mock_mcp.server import TOOL_NAMES, McpHttpServer, build_mcp_server
from tests.unit.mock_mcp.stubs import fill


@pytest.fixture
async def served():
    account = Account(Decimal(50000), instruments=Instruments.load())
    calls: list[str] = []

    async def marks():
        return {"AAA": Decimal(101)}

    http = McpHttpServer(build_mcp_server(account, marks, calls.append), port=0)
    task = asyncio.create_task(http.serve())
    for _ in range(200):
        if http.started:
            break
        await asyncio.sleep(0.02)
    assert http.started
    yield account, http, calls
    http.stop()
    await asyncio.wait_for(task, 10)


def _json(result):
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def test_every_tool_answers_in_kite_shapes(served):
    account, http, calls = served
    account.apply_report(fill(symbol="AAA", side=Side.BUY, qty="10", px="100", fee="1"))
    async with Client(http.url) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names == set(TOOL_NAMES)
        prof = _json(await c.call_tool("get_profile", {}))
        assert prof["user_id"] == "SIM001" and "exchanges" in prof
        m = _json(await c.call_tool("get_margins", {}))["equity"]
        assert m["available"]["cash"] == "48999" and m["available"]["live_balance"] == "48999"
        assert set(m["utilised"]) >= {"debits", "exposure", "m2m_realised", "m2m_unrealised"}
        pos = _json(await c.call_tool("get_positions", {}))
        assert set(pos) == {"net", "day"}
        row = pos["net"][0]
        assert (row["tradingsymbol"], row["quantity"], row["average_price"]) == ("AAA", "10", "100")
        assert (row["last_price"], row["unrealised"], row["pnl"], row["realised"]) == ("101", "10", "10", "0")
        assert _json(await c.call_tool("get_holdings", {})) == []
        placed = _json(
            await c.call_tool(
                "place_order",
                {
                    "tradingsymbol": "AAA",
                    "transaction_type": "BUY",
                    "quantity": 5,
                    "order_type": "LIMIT",
                    "price": "99.5",
                },
            )
        )
        assert placed["status"] == "OPEN"
        orders = _json(await c.call_tool("get_orders", {}))
        assert [o["order_id"] for o in orders] == ["co-1", placed["order_id"]]
        assert orders[1]["pending_quantity"] == "5" and orders[1]["price"] == "99.5"
        trades = _json(await c.call_tool("get_trades", {}))
        assert trades[0]["quantity"] == "10" and trades[0]["average_price"] == "100"
        modified = _json(await c.call_tool("modify_order", {"order_id": placed["order_id"], "price": "99"}))
        assert modified == {"order_id": placed["order_id"], "status": "OPEN"}
        cancelled = _json(await c.call_tool("cancel_order", {"order_id": placed["order_id"]}))
        assert cancelled == {"order_id": placed["order_id"], "status": "CANCELLED"}
        hist = _json(await c.call_tool("get_order_history", {"order_id": placed["order_id"]}))
        assert [(h["status"], h["price"]) for h in hist] == [
            ("OPEN", "99.5"), ("MODIFIED", "99"), ("OPEN", "99"), ("CANCELLED", "99")
        ]
        assert _json(await c.call_tool("get_ltp", {"instruments": ["SIM:AAA", "ZZZ"]})) == {
            "SIM:AAA": {"instrument_token": 0, "last_price": "101"}
        }
        q = _json(await c.call_tool("get_quotes", {"instruments": ["AAA"]}))["AAA"]
        assert q["last_price"] == "101" and q["ohlc"]["high"] == "101" and q["volume"] == "10"
        r = await c.call_tool("login", {"api_key": "k", "api_secret": "s"})
        assert r.is_error and "sessions are off" in r.content[0].text
        r = await c.call_tool("modify_order", {"order_id": placed["order_id"], "quantity": 1})
        assert r.is_error and "CANCELLED" in r.content[0].text
        r = await c.call_tool("get_quotes", {"instruments": []})
        assert r.is_error and "non-empty" in r.content[0].text
    assert set(calls) == set(TOOL_NAMES)


async def test_with_sessions_every_tool_but_login_needs_a_live_token():
    now = [1_000_000.0]
    auth = SessionAuth("kite-key", "kite-secret", ttl_s=60, clock=lambda: now[0])
    account = Account(Decimal(50000))
    http = McpHttpServer(build_mcp_server(account, auth=auth), port=0)
    task = asyncio.create_task(http.serve())
    try:
        while not http.started:
            await asyncio.sleep(0.02)
        async with Client(http.url) as c:
            for tool, args in (("get_margins", {}), ("get_ltp", {"instruments": ["A"]}),
                               ("place_order", {"tradingsymbol": "A", "transaction_type": "BUY", "quantity": 1})):
                r = await c.call_tool(tool, args)
                assert r.is_error and "TokenException: missing access token" in r.content[0].text
            r = await c.call_tool("login", {"api_key": "kite-key", "api_secret": "wrong"})
            assert r.is_error and "TokenException: invalid api_secret" in r.content[0].text
            ses = _json(await c.call_tool("login", {"api_key": "kite-key", "api_secret": "kite-secret"}))
            assert ses["expires_in"] == 60 and ses["user_id"] == "SIM001" and len(ses["access_token"]) >= 32
        # Kite's flow without sending the secret: a request token and its checksum.
        async with Client(http.url) as c:
            other = _json(await c.call_tool("login", {"api_key": "kite-key", "request_token": "rt1",
                                                     "checksum": kite_checksum("kite-key", "rt1", "kite-secret")}))
            assert other["access_token"] != ses["access_token"]
        assert not account.orders
        good = {"Authorization": f"token kite-key:{ses['access_token']}"}
        async with httpx2.AsyncClient(headers=good) as h, Client(streamable_http_client(http.url, http_client=h)) as c:
            assert _json(await c.call_tool("get_profile", {}))["user_id"] == "SIM001"
            now[0] += 61
            r = await c.call_tool("get_profile", {})
            assert r.is_error and "TokenException: access token expired" in r.content[0].text
        bad = {"Authorization": "token kite-key:forged"}
        async with httpx2.AsyncClient(headers=bad) as h, Client(streamable_http_client(http.url, http_client=h)) as c:
            r = await c.call_tool("get_profile", {})
            assert r.is_error and "invalid or ended session" in r.content[0].text
    finally:
        http.stop()
        await asyncio.wait_for(task, 10)


BAD_ORDERS = [
    {"tradingsymbol": "AAA", "transaction_type": "HOLD", "quantity": 1},
    {"tradingsymbol": "AAA", "transaction_type": "BUY", "quantity": "NaN"},
    {"tradingsymbol": "AAA", "transaction_type": "BUY", "quantity": -3},
    {"tradingsymbol": "AAA", "transaction_type": "BUY", "quantity": "lots"},
    {"tradingsymbol": "AAA", "transaction_type": "BUY"},
    {"tradingsymbol": "AAA", "transaction_type": "BUY", "quantity": 1, "order_type": "LIMIT"},
    {"tradingsymbol": "EURUSD", "transaction_type": "BUY", "quantity": 10},
]


async def test_bad_place_order_input_is_a_tool_error_not_a_crash(served):
    account, http, _ = served
    async with Client(http.url) as c:
        for args in BAD_ORDERS:
            r = await c.call_tool("place_order", args)
            assert r.is_error and r.content[0].text, args
        r = await c.call_tool("cancel_order", {"order_id": "SIM999"})
        assert r.is_error and "not found" in r.content[0].text
        # The server is still there and well.
        assert _json(await c.call_tool("get_orders", {})) == []
    assert not account.orders
