"""``GET /risk`` (viewer) and ``PUT /risk`` (admin only: RELIABILITY B6 "edit limits: 403").

No gateway runs here: an admin's valid change is sent and gets 504 (no answer); the answered
path, with a real gateway process, is in tests/integration/test_api_kill_switch.py.
"""

from __future__ import annotations

import time

import redis
import sqlalchemy as sa
import yaml

from common import db, streams
from common.db import make_engine
from tests.sql import sql_rows

from .conftest import ROLES

CHANGE = {"key": "defaults.max_order_qty", "value": "5", "reason": "thin market"}


def _count(url: str, table: str) -> int:
    return sql_rows(url, f"SELECT count(*) FROM {table}")[0][0]


def test_get_risk_is_the_file_with_the_stored_changes(api):
    from backend.api.routes.risk import _risk_file

    doc = yaml.safe_load(_risk_file().read_text())
    eng = make_engine(api.db_url)
    try:
        with eng.begin() as c:
            c.execute(sa.insert(db.RiskOverride.__table__).values(
                key="symbols.ZZZ.max_order_qty", value="3", actor="api:chief", reason="news", request_id="r",
                ts=time.time_ns()))
    finally:
        eng.dispose()
    for role in ROLES:
        r = api.client.get("/risk", headers=api.headers(role))
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["defaults"] == {k: str(v) for k, v in doc["defaults"].items()}
    assert body["global"]["max_open_orders"] == doc["global"]["max_open_orders"]
    assert body["symbols"]["ZZZ"]["max_order_qty"] == "3"
    assert body["symbols"]["ZZZ"]["max_position_qty"] == str(doc["defaults"]["max_position_qty"])
    assert [(c["key"], c["value"], c["actor"], c["reason"]) for c in body["changes"]] == [
        ("symbols.ZZZ.max_order_qty", "3", "api:chief", "news")]
    assert body["changes_unknown"] is None


def test_b6_viewer_and_trader_cannot_edit_limits_and_nothing_reaches_the_gateway(api):
    for role in ("viewer", "trader"):
        r = api.client.put("/risk", json=CHANGE, headers=api.headers(role))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    assert api.client.put("/risk", json=CHANGE).status_code == 401
    r = redis.Redis.from_url(api.common.redis_url)
    try:
        assert r.xlen(streams.CONTROL) == 0
    finally:
        r.close()
    assert _count(api.db_url, "control_requests") == 0 and _count(api.db_url, "audit_log") == 0


def test_bad_changes_are_422_naming_the_key_and_never_sent(api):
    admin = api.headers("admin")
    for body, words in [
        ({**CHANGE, "key": "defaults.nope"}, "not a risk limit"),
        ({**CHANGE, "key": "limits.max_order_qty"}, "key"),
        ({**CHANGE, "value": "-5"}, "defaults.max_order_qty must be a finite number > 0"),
        ({**CHANGE, "key": "global.max_open_orders", "value": "2.5"}, "global.max_open_orders must be a whole"),
        ({**CHANGE, "reason": ""}, "reason"),
        ({**CHANGE, "reason": "a\x00b"}, "reason"),
        ({**CHANGE, "extra": 1}, "extra"),
        ({"key": CHANGE["key"], "reason": "x"}, "value"),
        ({**CHANGE, "value": 5}, "value"),
        ({**CHANGE, "value": "9" * 5000}, "value"),
    ]:
        r = api.client.put("/risk", json=body, headers=admin)
        assert r.status_code == 422, (body, r.text)
        err = r.json()["error"]
        assert words in (err["message"] + str(err["details"])), (body, err)
    r = redis.Redis.from_url(api.common.redis_url)
    try:
        assert r.xlen(streams.CONTROL) == 0
    finally:
        r.close()


def test_an_admins_change_is_sent_and_audited_even_unanswered(api):
    r = api.client.put("/risk", json={**CHANGE, "value": None, "reason": "back to the file"},
                       headers=api.headers("admin"))
    assert r.status_code == 504, r.text  # no gateway in unit tests
    eng = make_engine(api.db_url)
    try:
        with eng.connect() as c:
            [row] = c.execute(sa.select(db.AuditLog.__table__)).mappings().all()
    finally:
        eng.dispose()
    assert (row["actor"], row["action"], row["entity"], row["entity_id"]) == (
        "admin", "api.risk.unset", "risk_limit", "defaults.max_order_qty")
    assert row["detail"]["result"] == "no_answer" and row["detail"]["args"] == {"key": "defaults.max_order_qty"}
