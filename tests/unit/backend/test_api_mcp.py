"""``/mcp/*`` against the real mock broker over MCP/HTTP (its own process): a trader reads the account as the
broker answers it, viewers are refused, a tool error is 502, a broker that is not there 503, and nothing but
read tools is ever called."""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest

from tests.unit.strategy_engine.suggest_kit import broker_tool_calls, mock_mcp_process, seed_sync

READS = {"profile": "get_profile", "margins": "get_margins", "holdings": "get_holdings",
         "positions": "get_positions", "orders": "get_orders", "trades": "get_trades"}


@pytest.fixture
def broker(redis_url, clean_env, tmp_path):
    seed_sync(redis_url)  # fills on ex:events and marks: the broker's account has positions and trades
    with mock_mcp_process(redis_url, tmp_path) as url:
        clean_env.setenv("AITRADER_SE_MCP_URL", url)  # read by the API's broker client
        yield url


def test_trader_reads_the_account_as_the_broker_answers_it(broker, make_api, redis_url):
    api = make_api()
    h = api.headers("trader")
    got = {what: api.client.get(f"/mcp/{what}", headers=h) for what in READS}
    assert {w: r.status_code for w, r in got.items()} == dict.fromkeys(READS, 200), {w: r.text for w, r in got.items()}
    assert got["profile"].json()["broker"]
    assert {p["tradingsymbol"] for p in got["positions"].json()["net"]} == {"AAA", "BBB", "DDD"}
    assert got["margins"].json()["equity"]["available"]["cash"] == "64800"  # as the broker sent it
    assert len(got["trades"].json()) == 3
    q = api.client.get("/mcp/quotes?symbols=AAA,SIM:BBB", headers=h)
    assert q.status_code == 200 and set(q.json()) == {"AAA", "SIM:BBB"}, q.text
    # a viewer holds no account data
    r = api.client.get("/mcp/margins", headers=api.headers("viewer"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    time.sleep(0.5)  # a broker heartbeat after the calls
    calls = broker_tool_calls(redis_url)
    assert {t: calls.get(t) for t in [*READS.values(), "get_quotes"]} == dict.fromkeys([*READS.values(),
                                                                                         "get_quotes"], 1)
    assert not {"place_order", "modify_order", "cancel_order"} & set(calls)


def test_a_broker_error_is_502(broker, make_api, clean_env):
    # a login configured against a broker whose sessions are off: its login tool answers with an error
    clean_env.setenv("AITRADER_SE_MCP_API_KEY", "api-key-1")
    clean_env.setenv("AITRADER_SE_MCP_API_SECRET", "api-secret-Zq81")
    clean_env.setenv("AITRADER_BROKER_TOKEN_KEY", base64.b64encode(os.urandom(32)).decode())
    api = make_api()
    r = api.client.get("/mcp/margins", headers=api.headers("trader"))
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "bad_gateway" and "sessions are off" in err["message"]
    assert err["details"] == {"tool": "get_margins"} and set(err) == {"code", "message", "request_id", "details"}


def test_bad_symbols_are_422(make_api):
    api = make_api()
    h = api.headers("trader")
    for bad in ("", ",", "A A", ",".join(f"S{i}" for i in range(51))):
        r = api.client.get("/mcp/quotes", params={"symbols": bad}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", (bad, r.text)


def test_an_unreachable_broker_is_503(make_api, clean_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    clean_env.setenv("AITRADER_SE_MCP_URL", f"http://127.0.0.1:{port}/mcp")
    api = make_api()
    r = api.client.get("/mcp/positions", headers=api.headers("trader"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
    assert "broker unreachable" in r.json()["error"]["message"]
