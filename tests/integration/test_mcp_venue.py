"""The MCP broker venue with real processes: the gateway routes to mock_mcp through its MCP tools (D7 too).

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import pytest
from mcp import Client

from common import streams
from tests.sql import sql_rows

from .harness import Pipeline
from .kill_drill import MARK, Reports, limit_intent, publish_intents, publish_mark

pytestmark = pytest.mark.integration


async def _tool(url: str, tool: str, args: dict) -> object:
    async with Client(url) as c:
        res = await c.call_tool(tool, args)
        assert not res.is_error, res.content
        return json.loads(res.content[0].text)


def test_intent_fills_at_the_mcp_broker_and_an_unknown_broker_order_stops_the_next_start(
    redis_url, database_url, tmp_path
):
    with Pipeline(redis_url, database_url, tmp_path / "home") as p:
        url = p.env["AITRADER_SE_MCP_URL"]
        p.env.update(AITRADER_EX_VENUE="mcp", AITRADER_EX_MCP_URL=url)
        p.start(("mock_mcp", "execution"))
        r = p.redis()
        reports = Reports(r)
        publish_mark(r)  # the gateway's mark is also the broker's price (ex:marks)
        fills, rests = limit_intent("mcp-fill", price=MARK), limit_intent("mcp-rest")
        publish_intents(r, [fills, rests])
        reports.wait(["mcp-fill"], lambda rep: rep.status == "FILLED", timeout=30)
        reports.wait(["mcp-rest"], lambda rep: rep.status == "ACCEPTED", timeout=30)
        rep = reports.last("mcp-fill")
        assert (rep.venue, rep.last_qty, rep.last_px) == ("mcp", Decimal(1), Decimal(MARK))
        (f,) = sql_rows(database_url, "SELECT exec_id, venue, qty, price FROM fills")
        assert (f.exec_id, f.venue, Decimal(f.qty), Decimal(f.price)) == (rep.exec_id, "mcp", 1, Decimal(MARK))
        orders = asyncio.run(_tool(url, "get_orders", {}))
        placed = {o["client_order_id"]: o for o in orders if o["client_order_id"] and o["order_id"].startswith("SIM")}
        assert {c: o["status"] for c, o in placed.items()} == {"mcp-fill": "COMPLETE", "mcp-rest": "OPEN"}
        # The broker counts its own fill once: the gateway's report of it is not applied again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the broker has read every report
            (g,) = [g for g in r.xinfo_groups(streams.EXEC_EVENTS) if g["name"] == b"mock_mcp"]
            if not g["pending"] and not g["lag"]:
                break
            time.sleep(0.05)
        assert int(r.hget(streams.stats_key("mock_mcp"), "reports_own")) >= 1
        (pos,) = asyncio.run(_tool(url, "get_positions", {}))["net"]
        assert (pos["tradingsymbol"], pos["quantity"]) == ("KSW", "1")

        codes = p.stop()
        assert codes == {"mock_mcp": 0, "execution": 0}
        p.start(("mock_mcp",))  # the broker restarts: its own orders are gone, the account is rebuilt
        # An order placed at the broker by hand, which the gateway never saw.
        by_hand = asyncio.run(_tool(url, "place_order", {"tradingsymbol": "KSW", "transaction_type": "SELL",
                                                         "quantity": "3", "order_type": "LIMIT", "price": "101"}))
        t0 = time.monotonic()
        run = p.run("-m", "execution", check=False, timeout=60)
        print(f"\nD7 (processes): gateway exit {run.returncode} after {time.monotonic() - t0:.1f}s; "
              f"{run.stderr.strip().splitlines()[-1][:300]}")
        assert run.returncode == 2
        assert f"order unknown to the gateway: {by_hand['order_id']}" in run.stderr
        assert "reconciliation with venue mcp failed" in run.stderr
