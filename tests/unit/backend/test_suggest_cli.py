"""``aitrader suggest`` against ``python -m mock_mcp`` (its own process), Redis and the database: the table, --json,
the OpenAI-compatible provider through the local stand-in, and the exits for failures and bad usage."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from backend.cli import main
from common import streams
from common.db import migrate
from tests.sql import sql_rows
from tests.unit.strategy_engine.suggest_kit import (
    KEY,
    LlmStandIn,
    Reply,
    broker_tool_calls,
    chat_body,
    mock_mcp_process,
    seed_signals,
    seed_sync,
)


@pytest.fixture
def env(clean_env, redis_url, database_url):
    migrate(database_url)
    clean_env.setenv("REDIS_URL", redis_url)
    clean_env.setenv("DATABASE_URL", database_url)
    return clean_env


@pytest.fixture
def broker(env, redis_url, tmp_path):
    asyncio.run(seed_signals(redis_url))
    seed_sync(redis_url)
    with mock_mcp_process(redis_url, tmp_path) as url:
        env.setenv("AITRADER_SE_MCP_URL", url)
        yield url


def test_suggest_prints_the_table_and_json_and_orders_nothing(broker, redis_url, database_url, capsys):
    assert main(["suggest", "scan my portfolio"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("suggestion run 1 completed (offline/rules-v1, context ")
    assert lines[1].split() == ["SYMBOL", "ACTION", "SIZE", "UNIT", "CONF", "RATIONALE"]
    rows = [ln.split()[:5] for ln in lines[2:-2] if not ln.startswith(" ")]  # (long rationales wrap, indented)
    assert rows == [
        ["BBB", "close", "1", "position_fraction", "0.80"], ["CCC", "buy", "0.02", "equity_fraction", "0.70"],
        ["AAA", "reduce", "0.17", "position_fraction", "0.55"], ["DDD", "hold", "0", "quantity", "0.50"]]
    assert lines[-1] == "advice only: nothing was ordered"

    assert main(["suggest", "what about CCC?", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["id"] == 2 and rec["status"] == "completed" and rec["created_by"].startswith("cli:")
    assert [s["symbol"] for s in rec["suggestions"]] == ["CCC"] and rec["context"]["account"]["cash"] == "64800"
    assert sql_rows(database_url, "SELECT count(*) FROM suggestions") == [(2,)]
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.xlen(streams.INTENTS) == 0
    finally:
        r.close()
    import time

    time.sleep(0.5)  # a heartbeat after the calls
    calls = broker_tool_calls(redis_url)
    assert calls.get("get_positions") == 2 and not {"place_order", "cancel_order"} & set(calls)


def test_suggest_with_an_openai_compatible_server(broker, env, capsys, caplog):
    with LlmStandIn() as llm:
        good = {"summary": "trim AAA", "suggestions": [{"symbol": "AAA", "action": "reduce", "size": 50,
                                                        "size_unit": "quantity", "rationale": "30% of equity",
                                                        "confidence": 0.66}]}
        llm.script.append(Reply(200, chat_body(json.dumps(good), model="grok-test")))
        env.setenv("AITRADER_LLM_URL", f"{llm.base}/v1")
        env.setenv("AITRADER_LLM_MODEL", "grok-test")
        env.setenv("AITRADER_LLM_API_KEY", KEY)
        assert main(["suggest", "scan my portfolio", "--provider", "openai"]) == 0
    out = capsys.readouterr()
    assert "suggestion run 1 completed (openai/grok-test" in out.out and "AAA     reduce    50  quantity  0.66  30% of equity" in out.out
    assert KEY not in out.out + out.err + caplog.text
    assert llm.seen[0].path == "/v1/chat/completions" and llm.seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_suggest_failures_and_bad_usage(env, tmp_path, capsys, database_url):
    env.setenv("AITRADER_SE_MCP_URL", "http://127.0.0.1:9/mcp")
    assert main(["suggest", "scan"]) == 1
    out = capsys.readouterr().out
    assert "suggestion run 1 failed" in out and "account context unavailable" in out
    assert main(["suggest", "scan", "--provider", "openai"]) == 2
    assert "AITRADER_LLM_URL" in capsys.readouterr().err
    assert main(["suggest", "  "]) == 2
    assert "the prompt is empty" in capsys.readouterr().err
    env.setenv("AITRADER_LLM_TIMEOUT_S", "-1")
    assert main(["suggest", "scan"]) == 2
    assert "AITRADER_LLM_TIMEOUT_S" in capsys.readouterr().err
    env.delenv("AITRADER_LLM_TIMEOUT_S")
    env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    assert main(["suggest", "scan"]) == 1
    assert "no database" in capsys.readouterr().err
    assert sql_rows(database_url, "SELECT count(*) FROM jobs") == [(1,)]
