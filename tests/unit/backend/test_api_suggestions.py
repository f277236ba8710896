"""``/suggestions`` over HTTP, against the real mock broker (MCP over HTTP) and Redis: a trader runs one, viewers
read them; bad prompts 422, an unconfigured provider 409, the per-user limit 429; no order anywhere."""

from __future__ import annotations

import time

import pytest
import redis

from common import streams
from tests.sql import sql_rows
from tests.unit.strategy_engine.suggest_kit import (
    broker_tool_calls,
    mock_mcp_process,
    seed_signals,
    seed_sync,
)


@pytest.fixture
def broker(redis_url, clean_env, tmp_path):
    """``python -m mock_mcp`` (its own process: the TestClient blocks this test's thread), seeded."""
    import asyncio

    asyncio.run(seed_signals(redis_url))
    seed_sync(redis_url)
    with mock_mcp_process(redis_url, tmp_path) as url:
        clean_env.setenv("AITRADER_SE_MCP_URL", url)  # read by create_app
        yield url


def test_trader_runs_a_suggestion_and_viewers_read_it(broker, make_api, redis_url):
    api = make_api()
    r = api.client.post("/suggestions", json={"prompt": "scan my portfolio"}, headers=api.headers("trader"))
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "completed" and run["provider"] == "offline" and run["created_by"] == "api:trader"
    assert "context" not in run and len(run["context_digest"]) == 64
    assert {s["symbol"]: s["action"] for s in run["suggestions"]} == {"BBB": "close", "CCC": "buy", "AAA": "reduce",
                                                                      "DDD": "hold"}
    h = api.headers("viewer")
    listed = api.client.get("/suggestions", headers=h).json()
    assert [x["id"] for x in listed] == [run["id"]] and listed[0]["suggestions"] == run["suggestions"]
    assert api.client.get("/suggestions?status=failed", headers=h).json() == []
    detail = api.client.get(f"/suggestions/{run['id']}", headers=h).json()
    assert detail["context"]["account"]["cash"] == "64800" and detail["suggestions"] == run["suggestions"]
    # a viewer may read but not run one; nothing reached the bus or the broker's order tools
    r = api.client.post("/suggestions", json={"prompt": "scan"}, headers=h)
    assert r.status_code == 403 and "trader" in r.json()["error"]["message"]
    rr = redis.Redis.from_url(redis_url)
    try:
        assert rr.xlen(streams.INTENTS) == 0
    finally:
        rr.close()
    time.sleep(0.5)  # a heartbeat after the calls
    calls = broker_tool_calls(redis_url)
    assert calls.get("get_margins") == 1 and "place_order" not in calls and "cancel_order" not in calls
    assert sql_rows(api.db_url, "SELECT count(*) FROM suggestions") == [(1,)]


@pytest.mark.parametrize("body, where", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "scan\x00"}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"prompt": "scan", "provider": "claude"}, "provider"),
    ({"prompt": "scan", "place_orders": True}, "place_orders"),
    ({"prompt": 5}, "prompt"),
])
def test_bad_requests_are_422_and_write_nothing(make_api, clean_env, body, where):
    api = make_api()
    r = api.client.post("/suggestions", json=body, headers=api.headers("trader"))
    assert r.status_code == 422, r.text
    assert where in r.json()["error"]["message"]
    assert sql_rows(api.db_url, "SELECT count(*) FROM jobs") == [(0,)]


def test_an_unconfigured_provider_is_409_and_unknown_runs_404(make_api, clean_env):
    api = make_api()
    r = api.client.post("/suggestions", json={"prompt": "scan", "provider": "openai"}, headers=api.headers("trader"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "provider_not_configured"
    assert "AITRADER_LLM_URL" in r.json()["error"]["message"]
    h = api.headers("viewer")
    assert api.client.get("/suggestions/12345", headers=h).status_code == 404
    assert api.client.get("/suggestions/0", headers=h).status_code == 422


def test_an_unreachable_broker_is_a_stored_failed_run(make_api, clean_env):
    clean_env.setenv("AITRADER_SE_MCP_URL", "http://127.0.0.1:9/mcp")
    api = make_api()
    r = api.client.post("/suggestions", json={"prompt": "scan"}, headers=api.headers("trader"))
    assert r.status_code == 201 and r.json()["status"] == "failed"
    assert r.json()["error"].startswith("account context unavailable")


def test_runs_are_rate_limited_per_user(make_api, clean_env):
    clean_env.setenv("AITRADER_SE_MCP_URL", "http://127.0.0.1:9/mcp")
    api = make_api(suggest_rate_limit=2, suggest_rate_window_s=60)
    trader, admin = api.headers("trader"), api.headers("admin")
    codes = [api.client.post("/suggestions", json={"prompt": "scan"}, headers=trader).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    r = api.client.post("/suggestions", json={"prompt": "scan"}, headers=trader)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert api.client.post("/suggestions", json={"prompt": "scan"}, headers=admin).status_code == 201  # own bucket


def test_bad_llm_configuration_stops_the_api_at_start(make_api, clean_env):
    from common.config import ConfigError

    clean_env.setenv("AITRADER_LLM_URL", "not-a-url")
    with pytest.raises(ConfigError, match="AITRADER_LLM_URL"):
        make_api()
