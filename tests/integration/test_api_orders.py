"""Manual orders and cancels through the HTTP API, against a real gateway (``python -m execution``).

A trader's MARKET order passes the gateway's pre-trade checks and fills on the next tick; an
order above the gateway's size limit comes back REJECTED with the gateway's reason; a resting
LIMIT order is cancelled through the API; viewers cannot trade; new orders are rate-limited
(429) while cancels are not; every request leaves an audit row.
"""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from backend.api.users import create_user
from common.db import make_engine
from tests.sql import sql_rows

from .harness import Pipeline
from .kill_drill import MARK, SYMBOL, drill_env, publish_mark
from .test_api_kill_switch import ADMIN_PW, TRADER_PW, VIEWER_PW, ApiProcess, _login

pytestmark = pytest.mark.integration


def _wait_status(c: httpx.Client, headers, coid: str, want: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [o for o in c.get("/orders", params={"symbol": SYMBOL, "limit": 100}, headers=headers).json()
                if o["client_order_id"] == coid]
        if rows and rows[0]["status"] == want:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"{coid} not {want} within {timeout} s: {rows}")


def test_manual_orders_pass_the_gateways_checks_and_cancel(redis_url, database_url, tmp_path):
    home = tmp_path / "home"
    with Pipeline(redis_url, database_url, home, drill_env(home)) as p:
        p.start(("execution",))
        r = p.redis()
        eng = make_engine(database_url)
        try:
            create_user(eng, "tina", TRADER_PW, "trader")
            create_user(eng, "victor", VIEWER_PW, "viewer")
        finally:
            eng.dispose()
        with ApiProcess(p, AITRADER_API_ORDER_RATE_LIMIT="4") as api, \
                httpx.Client(base_url=api.url, timeout=30) as c:
            trader, viewer = _login(c, "tina", TRADER_PW), _login(c, "victor", VIEWER_PW)
            _login(c, "chief", ADMIN_PW)
            market = {"symbol": SYMBOL, "side": "BUY", "qty": "1", "order_type": "MARKET", "reason": "test"}

            # No price seen for the symbol yet: a MARKET order has no reference and is refused before the gateway.
            res = c.post("/orders", headers=trader, json=market)
            assert res.status_code == 409 and res.json()["error"]["code"] == "no_mark", res.text
            publish_mark(r)
            assert c.post("/orders", headers=viewer, json=market).status_code == 403

            # 1: a MARKET buy (1: the size of the drill's ticks) is accepted by the gateway and fills.
            res = c.post("/orders", headers=trader, json=market)
            assert res.status_code == 201, res.text
            body = res.json()
            coid = body["client_order_id"]
            assert coid.startswith("man-") and body["status"] in ("ACCEPTED", "FILLED")
            assert body["order"]["strategy"] == "manual" and body["order"]["ref_price"] == f"{Decimal(MARK).normalize():f}"  # the mark
            publish_mark(r, price="100.50", seq=2)
            filled = _wait_status(c, trader, coid, "FILLED")
            assert filled["cum_qty"] == "1"

            # 2: far above the size limit: the gateway's own reject, with its reason.
            res = c.post("/orders", headers=trader, json={**market, "qty": "100000000"})
            assert res.status_code == 201 and res.json()["status"] == "REJECTED", res.text
            assert res.json()["reject_reason"] in ("MAX_QTY", "MAX_NOTIONAL"), res.text

            # 3: a resting LIMIT below the market, then cancelled through the API.
            res = c.post("/orders", headers=trader, json={"symbol": SYMBOL, "side": "BUY", "qty": "1",
                                                           "order_type": "LIMIT", "limit_price": "99.5"})
            assert res.status_code == 201 and res.json()["status"] == "ACCEPTED", res.text
            resting = res.json()["client_order_id"]

            # 4: the fifth new order in the window is limited; cancels never are.
            res = c.post("/orders", headers=trader, json=market)
            assert res.status_code == 429 and int(res.headers["Retry-After"]) >= 1, res.text
            assert c.post(f"/orders/{resting}/cancel", headers=viewer, json={"reason": "x"}).status_code == 403
            res = c.post(f"/orders/{resting}/cancel", headers=trader, json={"reason": "changed my mind"})
            assert res.status_code == 200 and res.json()["ok"], res.text
            _wait_status(c, trader, resting, "CANCELLED")
            res = c.post("/orders/cancel-all", headers=trader, json={"symbol": SYMBOL, "reason": "tidy"})
            assert res.status_code == 200 and res.json()["ok"], res.text
            # 422s: a LIMIT without its price, an unknown field
            assert c.post("/orders", headers=trader, json={**market, "order_type": "LIMIT"}).status_code == 422
            assert c.post("/orders", headers=trader, json={**market, "leverage": 10}).status_code == 422
        r.close()

    audit = sql_rows(database_url, "SELECT actor, action, entity_id FROM audit_log WHERE action LIKE 'api.order%' "
                                   "ORDER BY id")
    assert [a[:2] for a in audit] == [("tina", "api.order.new")] * 3 + [("tina", "api.order.cancel"),
                                                                       ("tina", "api.order.cancel_all")]
    assert audit[3][2] == resting
