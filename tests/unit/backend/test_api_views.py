"""``GET /orders``, ``/fills``, ``/positions``, ``/kill-switch`` over a database written by the real OMS:
the same rows as the CLI's views, decimals exact (strings), filters as the CLI's."""

from __future__ import annotations

import dataclasses
import time

import redis
import sqlalchemy as sa

from backend.views import list_fills, list_orders
from common import streams
from common.db import make_engine

from .test_views import Gateway, db_url, traded  # noqa: F401 - fixtures


def _exact(rows):
    from backend.api.routes.views import exact

    return [exact(r) for r in rows]


def test_orders_fills_positions_match_the_views_exactly(traded, make_api):  # noqa: F811
    eng, _gw = traded
    api = make_api()
    h = api.headers("viewer")
    orders = api.client.get("/orders", headers=h).json()
    assert orders == _exact(list_orders(eng))
    by = {o["client_order_id"]: o for o in orders}
    assert by["o1-buy"]["avg_px"] == "10.1" and by["o3-rest"]["limit_price"] == "10.45"
    assert by["o4-nomark"]["limit_price"] is None and by["o4-nomark"]["reason"] == "NO_REFERENCE_PRICE"
    assert [o["client_order_id"] for o in api.client.get("/orders?open=true", headers=h).json()] == ["o3-rest"]
    assert {o["client_order_id"] for o in api.client.get("/orders?symbol=BBB", headers=h).json()} \
        == {"o4-nomark", "o5-short"}
    assert {o["client_order_id"] for o in api.client.get("/orders?strategy=s2", headers=h).json()} \
        == {"o4-nomark", "o5-short"}
    assert [o["client_order_id"] for o in api.client.get("/orders?limit=2", headers=h).json()] \
        == ["o5-short", "o4-nomark"]

    fills = api.client.get("/fills", headers=h).json()
    assert fills == _exact(list_fills(eng))
    assert [f["exec_id"] for f in api.client.get("/fills?symbol=AAA&limit=1", headers=h).json()] == ["o2-sell:F1"]

    r = redis.Redis.from_url(api.common.redis_url)
    r.hset(streams.MARKS, mapping={"AAA": "10.40"})
    r.close()
    pos = {p["symbol"]: p for p in api.client.get("/positions", headers=h).json()}
    a = pos["AAA"]
    assert (a["qty"], a["avg_px"], a["realized_pnl"], a["fees"], a["fills"]) == ("60", "10.1", "16", "0.143", 2)
    assert (a["mark"], a["unrealized_pnl"]) == ("10.4", "18")
    assert pos["BBB"]["mark"] is None and pos["BBB"]["unrealized_pnl"] is None  # no mark for BBB in Redis


def test_kill_switch_state_lists_every_scope(make_api):
    api = make_api()
    h = api.headers("viewer")
    r = api.client.get("/kill-switch", headers=h)
    assert r.status_code == 200 and r.json() == {"scopes": [], "global_state": "ACTIVE"}
    eng = make_engine(api.db_url)
    now = time.time_ns()
    try:
        with eng.begin() as c:
            for scope, state in (("global", "REDUCING"), ("symbol:BAC", "HALTED"), ("strategy:momo", "ACTIVE")):
                c.execute(sa.text("INSERT INTO trading_state (scope, state, reason, actor, changed_at) "
                                  "VALUES (:s, :st, 'why', 'cli:ops', :t)"), {"s": scope, "st": state, "t": now})
    finally:
        eng.dispose()
    body = api.client.get("/kill-switch", headers=h).json()
    assert body["global_state"] == "REDUCING"
    assert [(s["scope"], s["state"], s["actor"], s["changed_at"]) for s in body["scopes"]] == [
        ("global", "REDUCING", "cli:ops", now), ("strategy:momo", "ACTIVE", "cli:ops", now),
        ("symbol:BAC", "HALTED", "cli:ops", now)]


def test_health_and_views_say_when_the_database_is_gone(make_api):
    api = make_api()
    h = api.headers("viewer")
    assert api.client.get("/health").json() == {"status": "ok", "database": "ok"}
    ctx = api.client.app.state.ctx
    gone = make_engine("postgresql://postgres@127.0.0.1:1/gone")  # nothing listens on port 1
    api.client.app.state.ctx = dataclasses.replace(ctx, engine=gone)
    try:
        r = api.client.get("/health")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        r = api.client.get("/orders", headers=h)  # the token cannot be checked either: 503, not 500
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    finally:
        api.client.app.state.ctx = ctx
        gone.dispose()
