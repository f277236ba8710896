"""The suggestion job end to end on real parts: the mock broker's MCP server over HTTP, Redis (pe:signals), the
database, and the OpenAI-compatible provider against a local stand-in. Advice only: nothing reaches se:intents
and no place_order reaches the broker."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pytest
import redis

from common import streams
from common.db import make_engine, migrate
from strategy_engine.config import StrategySettings
from strategy_engine.mcp_client import McpBrokerClient
from strategy_engine.suggestions.config import LlmSettings
from strategy_engine.suggestions.context import ReadOnlyBroker
from strategy_engine.suggestions.job import SuggestionService
from tests.sql import sql_rows

from .suggest_kit import EQUITY, KEY, LlmStandIn, Reply, chat_body, seed_signals, seeded_broker


@pytest.fixture
def engine(database_url, clean_env):
    migrate(database_url)
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def service(engine, redis_url, mcp_url, **llm) -> SuggestionService:
    return SuggestionService(engine, LlmSettings(**llm), StrategySettings(mcp_url=mcp_url, mcp_timeout_s=5),
                             redis_url)


def _untouched(redis_url: str, broker) -> None:
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.xlen(streams.INTENTS) == 0 and r.xlen(streams.CONTROL) == 0
    finally:
        r.close()
    assert not {"place_order", "modify_order", "cancel_order"} & set(broker.tool_calls)
    # the broker's only orders are the three the gateway reported (the seed fills)
    assert sorted(o["order_id"] for o in broker.account.orders_view()) == ["co-AAA", "co-BBB", "co-DDD"]


async def test_scan_my_portfolio_offline_reads_the_broker_and_stores_the_run(engine, redis_url, database_url):
    await seed_signals(redis_url)
    async with seeded_broker(redis_url) as broker:
        orders_before = broker.account.orders_view()
        svc = service(engine, redis_url, broker.http.url)
        rec = await svc.suggest("  scan my portfolio ", "cli:ann")
        assert rec["status"] == "completed", rec["error"]
        ctx = rec["context"]
        # the context is the broker's account, as read over MCP
        assert Decimal(ctx["account"]["equity"]) == EQUITY and ctx["account"]["cash"] == "64800"
        assert {p["symbol"]: p["quantity"] for p in ctx["account"]["positions"]} == {"AAA": "300", "BBB": "100",
                                                                                     "DDD": "10"}
        assert ctx["signals"]["read"] == 10 and ctx["signals"]["undecodable"] == 1
        assert [s["symbol"] for s in ctx["signals"]["by_symbol"]] == ["CCC", "BBB"]
        got = {s["symbol"]: (s["action"], s["size"], s["size_unit"]) for s in rec["suggestions"]}
        assert got == {"BBB": ("close", "1", "position_fraction"), "CCC": ("buy", "0.02", "equity_fraction"),
                       "AAA": ("reduce", "0.17", "position_fraction"), "DDD": ("hold", "0", "quantity")}
        assert (rec["provider"], rec["model"], rec["attempts"], rec["prompt"]) == ("offline", "rules-v1", 1,
                                                                                  "scan my portfolio")
        assert set(broker.tool_calls) == {"get_margins", "get_positions", "get_holdings"}
        assert broker.account.orders_view() == orders_before
        _untouched(redis_url, broker)

        # the same account and signals: the same context digest and the same advice
        again = await svc.suggest("scan my portfolio", "cli:ann")
        assert again["suggestions"] == rec["suggestions"] and again["id"] == rec["id"] + 1
    rows = sql_rows(database_url, "SELECT s.id, s.provider, s.context_digest, s.created_by, j.type, j.status "
                                  "FROM suggestions s JOIN jobs j ON j.id = s.job_id ORDER BY s.id")
    assert [r[1:2] + r[3:] for r in rows] == [("offline", "cli:ann", "suggestion", "completed")] * 2
    canonical = json.dumps(ctx, sort_keys=True, separators=(",", ":")).encode()
    assert rows[0][2] == hashlib.sha256(canonical).hexdigest() == rec["context_digest"]
    assert svc.list(limit=1)[0]["id"] == again["id"] and "context" not in svc.list()[0]
    assert svc.get(rec["id"])["context"] == ctx and svc.get(999) is None


async def test_an_invalid_answer_is_sent_back_once_then_accepted(engine, redis_url):
    bad = json.dumps({"summary": "", "suggestions": [{"symbol": "AAA", "action": "reduce", "size": 0.5,
                                                      "size_unit": "position_fraction", "rationale": "big",
                                                      "confidence": 1.7}]})
    ok = bad.replace("1.7", "0.7")
    with LlmStandIn() as llm:
        llm.script.extend([Reply(200, chat_body(bad)), Reply(200, chat_body(ok))])
        async with seeded_broker(redis_url) as broker:
            svc = service(engine, redis_url, broker.http.url, url=f"{llm.base}/v1", model="grok-test", api_key=KEY,
                          backoff_s=0.01)
            rec = await svc.suggest("scan my portfolio", "api:trader", "openai")
            _untouched(redis_url, broker)
    assert rec["status"] == "completed" and rec["attempts"] == 2 and rec["model"] == "stand-in-1"
    assert rec["suggestions"] == [{"symbol": "AAA", "action": "reduce", "size": "0.5", "size_unit": "position_fraction",
                                   "rationale": "big", "confidence": 0.7}]
    first, second = llm.seen
    assert [m["role"] for m in first.body["messages"]] == ["system", "user"]
    assert "scan my portfolio" in first.body["messages"][1]["content"]
    assert '"equity":"' + str(EQUITY) + '"' in first.body["messages"][1]["content"]  # the context is sent
    assert [m["role"] for m in second.body["messages"]] == ["system", "user", "assistant", "user"]
    assert second.body["messages"][2]["content"] == bad
    assert "suggestions.0.confidence" in second.body["messages"][3]["content"]


async def test_an_answer_invalid_twice_fails_the_job_and_keeps_nothing_of_it(engine, redis_url, database_url):
    with LlmStandIn() as llm:
        llm.script.extend([Reply(200, chat_body("I think you should buy AAA")),
                           Reply(200, chat_body('{"suggestions": [{"symbol": "NOPE", "action": "buy"}]}'))])
        async with seeded_broker(redis_url) as broker:
            svc = service(engine, redis_url, broker.http.url, url=llm.base, model="m")
            rec = await svc.suggest("scan", "cli:ann", "openai")
    assert rec["status"] == "failed" and rec["attempts"] == 2 and rec["suggestions"] == []
    assert rec["error"].startswith("the openai answer was invalid twice; last: the answer does not match")
    assert rec["context_digest"]  # the context it was given is kept, for the post-mortem
    assert sql_rows(database_url, "SELECT status, error FROM jobs")[0][0] == "failed"


async def test_provider_down_or_broker_unreachable_fail_the_job_with_the_reason(engine, redis_url):
    with LlmStandIn() as llm:
        llm.script.extend([Reply(503, b"{}")] * 2)
        async with seeded_broker(redis_url) as broker:
            svc = service(engine, redis_url, broker.http.url, url=llm.base, model="m", max_retries=1,
                          backoff_s=0.01)
            rec = await svc.suggest("scan", "cli:ann", "openai")
    assert rec["status"] == "failed" and "openai provider:" in rec["error"] and "HTTP 503" in rec["error"]
    assert rec["attempts"] == 0
    with LlmStandIn() as gone:  # a port nobody listens on once the stand-in is closed
        url = f"{gone.base}/mcp"
    rec = await service(engine, redis_url, url).suggest("scan", "cli:ann")
    assert rec["status"] == "failed" and rec["error"].startswith("account context unavailable:")
    assert rec["context_digest"] == "" and rec["finished_at"] is not None


async def test_suggestions_read_the_broker_only(redis_url):
    async with seeded_broker(redis_url) as broker:
        ro = ReadOnlyBroker(McpBrokerClient(broker.http.url))
        for tool in ("place_order", "modify_order", "cancel_order", "login"):
            with pytest.raises(PermissionError, match=tool):
                await ro.read(["get_margins", tool])
        assert broker.tool_calls == {}  # refused before any call
        assert (await ro.read(["get_profile"]))[0]["user_id"] == "SIM001"


async def test_redis_down_runs_without_signals_and_says_so(engine, redis_url):
    async with seeded_broker(redis_url) as broker:
        svc = SuggestionService(engine, LlmSettings(), StrategySettings(mcp_url=broker.http.url),
                                "redis://127.0.0.1:1/0")
        rec = await svc.suggest("scan", "cli:ann")
    assert rec["status"] == "completed"
    assert rec["context"]["signals"]["error"].startswith("recent signals unavailable")
    assert "CCC" not in {s["symbol"] for s in rec["suggestions"]}


def test_a_bad_prompt_or_an_unconfigured_provider_writes_nothing(engine, redis_url, database_url):
    import asyncio

    from common.config import ConfigError

    svc = service(engine, redis_url, "http://127.0.0.1:9/mcp")
    for bad in ("", "   ", "a\x00b", "x" * 2001):
        with pytest.raises(ValueError):
            asyncio.run(svc.suggest(bad, "cli:ann"))
    with pytest.raises(ConfigError, match="AITRADER_LLM_URL"):
        asyncio.run(svc.suggest("scan", "cli:ann", "openai"))
    assert sql_rows(database_url, "SELECT count(*) FROM jobs") == [(0,)]
