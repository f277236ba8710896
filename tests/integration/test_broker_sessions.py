"""Broker sessions with real processes: mock_mcp requires a login, the strategy engine and the gateway's MCP venue
log in by configuration, tokens expire and are renewed, and the token is stored encrypted, never in plaintext."""

from __future__ import annotations

import base64
import os
import time
from decimal import Decimal

import pytest

from common import streams
from common.broker_tokens import BrokerTokenStore, TokenCipher
from common.db import make_engine
from common.messages import Heartbeat, decode_as
from tests.unit.common.test_broker_tokens import scan_database

from .harness import Pipeline
from .kill_drill import MARK, Reports, limit_intent, publish_intents, publish_mark

pytestmark = pytest.mark.integration

API_KEY, API_SECRET = "it-key", "it-secret-" + "q7" * 10


def counters(r, service: str) -> dict[str, int]:
    """The counters of the service's latest heartbeat (health key)."""
    keys = r.keys(streams.health_key(service, "*"))
    return dict(decode_as(r.get(keys[0]), Heartbeat).counters) if keys else {}


def test_services_log_in_renew_expired_tokens_and_store_them_encrypted(redis_url, database_url, tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    with Pipeline(redis_url, database_url, tmp_path / "home") as p:
        url = p.env["AITRADER_SE_MCP_URL"]
        p.env.update(
            AITRADER_MCP_API_KEY=API_KEY, AITRADER_MCP_API_SECRET=API_SECRET, AITRADER_MCP_TOKEN_TTL_S="3",
            AITRADER_SE_MCP_API_KEY=API_KEY, AITRADER_SE_MCP_API_SECRET=API_SECRET, AITRADER_SE_REFRESH_S="0.5",
            AITRADER_EX_VENUE="mcp", AITRADER_EX_MCP_URL=url,
            AITRADER_EX_MCP_API_KEY=API_KEY, AITRADER_EX_MCP_API_SECRET=API_SECRET,
            AITRADER_BROKER_TOKEN_KEY=key, AITRADER_LOG_LEVEL="DEBUG",
        )
        p.start(("mock_mcp", "strategy_engine", "execution"))
        r = p.redis()
        # The gateway places through the broker with its session.
        reports = Reports(r)
        publish_mark(r)
        publish_intents(r, [limit_intent("sess-fill", price=MARK)])
        reports.wait(["sess-fill"], lambda rep: rep.status == "FILLED", timeout=30)
        assert reports.last("sess-fill").last_qty == Decimal(1)
        # Tokens live 3 s; the engine refreshes every 0.5 s: it must have logged in again, with no refresh lost.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stats, se = counters(r, "mock_mcp"), counters(r, "strategy_engine")
            if stats.get("tool_calls.login", 0) >= 3 and se.get("refreshes", 0) >= 5:
                break
            time.sleep(0.3)
        assert stats.get("tool_calls.login", 0) >= 3, stats
        assert se.get("refreshes", 0) >= 5 and se.get("refresh_failures", 0) == 0, se
        codes = p.stop()
        assert codes == {"mock_mcp": 0, "strategy_engine": 0, "execution": 0}

    engine = make_engine(database_url)
    try:
        store = BrokerTokenStore(engine, TokenCipher(base64.b64decode(key)))
        stored = store.load("mock", API_KEY)
        assert stored is not None and len(stored.token) >= 32
        assert scan_database(engine, [stored.token, API_SECRET]) == []
    finally:
        engine.dispose()
    logs = {svc: (tmp_path / "home" / f"{svc}.log").read_text(errors="replace")
            for svc in ("mock_mcp", "strategy_engine", "execution")}
    assert "logged in to" in logs["strategy_engine"]
    # the gateway shares the engine's row: it logged in itself, or reused the session the engine stored
    assert "logged in to" in logs["execution"] or "reused from the token store" in logs["execution"]
    for svc, text in logs.items():
        assert stored.token not in text and API_SECRET not in text, svc


def test_a_login_without_a_token_key_refuses_to_start_naming_the_setting(redis_url, database_url, tmp_path):
    with Pipeline(redis_url, database_url, tmp_path / "home") as p:
        p.env.update(AITRADER_SE_MCP_API_KEY=API_KEY, AITRADER_SE_MCP_API_SECRET=API_SECRET)
        run = p.run("-m", "strategy_engine", check=False, timeout=60)
        assert run.returncode == 2
        assert "AITRADER_BROKER_TOKEN_KEY" in run.stderr and API_SECRET not in run.stderr
