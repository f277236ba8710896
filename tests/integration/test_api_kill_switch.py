"""The kill switch through the HTTP API with real processes (RELIABILITY B4, B6, F4).

A real gateway (``python -m execution``) and a real API (``python -m backend.api`` under
uvicorn, its first admin from the environment) run against the test Redis and database; the
strategy and pattern engines are never started. A trader halts through the API and the
gateway's state in the database becomes HALTED (resting orders cancelled); while logins are
rate-limited (429) the kill switch keeps answering; only the admin can release. Run with
``-s`` to see the figures.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from typing import Self

import httpx
import pytest

from backend.api.users import create_user
from common.db import make_engine
from tests.sql import sql_rows

from .harness import ROOT, Pipeline, free_port
from .kill_drill import Reports, drill_env, publish_mark, rest_orders
from .test_resilience import PrivateRedis

pytestmark = pytest.mark.integration

ADMIN_PW = "drill-admin-pw-7Hq2x"
TRADER_PW = "drill-trader-pw-4Lm9c"
VIEWER_PW = "drill-viewer-pw-2Vb8n"
N_RESTING = 20


class ApiProcess:
    """``python -m backend.api`` as a process on a free port, with the pipeline's environment."""

    def __init__(self, p: Pipeline, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = p.home / "api.log"
        self.env = {**p.env, "AITRADER_API_PORT": str(self.port), "AITRADER_API_JWT_SECRET": secrets.token_urlsafe(48),
                    "AITRADER_ADMIN_USERNAME": "chief", "AITRADER_ADMIN_PASSWORD": ADMIN_PW, **env}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self._out = open(self.log, "ab")  # held for the process's life, closed in __exit__
        self.proc = subprocess.Popen([sys.executable, "-m", "backend.api"], env=self.env, cwd=ROOT,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the API did not answer within 30 s:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            self._out.close()


def _login(c: httpx.Client, username: str, password: str) -> dict[str, str]:
    r = c.post("/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_b4_trader_halts_through_the_api_with_no_strategy_engine(redis_url, database_url, tmp_path):
    home = tmp_path / "home"
    with Pipeline(redis_url, database_url, home, drill_env(home)) as p:
        p.start(("execution",))  # the gateway only: no strategy engine, no pattern engine
        r = p.redis()
        reports = Reports(r)
        publish_mark(r)
        rested = rest_orders(r, reports, N_RESTING)
        eng = make_engine(database_url)
        try:
            create_user(eng, "tina", TRADER_PW, "trader")
            create_user(eng, "victor", VIEWER_PW, "viewer")
        finally:
            eng.dispose()

        with ApiProcess(p, AITRADER_API_LOGIN_RATE_LIMIT="3") as api, httpx.Client(base_url=api.url, timeout=30) as c:
            trader = _login(c, "tina", TRADER_PW)
            admin = _login(c, "chief", ADMIN_PW)  # the first admin, created from the environment at start
            viewer = _login(c, "victor", VIEWER_PW)
            assert c.get("/kill-switch", headers=viewer).json()["global_state"] == "ACTIVE"

            t0 = time.perf_counter()
            res = c.post("/kill-switch/engage", headers=trader,
                         json={"scope": "global", "action": "halt", "reason": "B4 via the API"})
            engage_ms = (time.perf_counter() - t0) * 1e3
            assert res.status_code == 200, res.text
            body = res.json()
            assert body["ok"] and body["state"] == "HALTED" and body["via"] == "bus" and body["scope"] == "global"
            assert res.headers["X-Request-ID"]

            # the gateway's state in the database: HALTED by the trader, resting orders cancelled
            assert sql_rows(database_url, "SELECT state, reason, actor FROM trading_state WHERE scope = 'global'") \
                == [("HALTED", "B4 via the API", "api:tina")]
            reports.wait(rested, lambda rep: rep.status == "CANCELLED", timeout=30)
            statuses = dict(sql_rows(database_url, "SELECT client_order_id, status FROM orders"))
            assert {statuses[cid] for cid in rested} == {"CANCELLED"}
            state = c.get("/kill-switch", headers=viewer).json()
            assert state["global_state"] == "HALTED"
            open_orders = c.get("/orders", params={"open": "true", "limit": 1000}, headers=viewer).json()
            assert open_orders == []

            # F4: logins are limited (429), the kill switch is not, even hammered
            codes = [c.post("/auth/login", json={"username": "chief", "password": "wrong-guess-123"}).status_code
                     for _ in range(5)]
            assert codes == [401, 401, 429, 429, 429]  # chief's own login above was the first of 3
            times, hammer = [], []
            for i in range(30):
                t = time.perf_counter()
                hammer.append(c.post("/kill-switch/engage", headers=trader,
                                     json={"scope": "symbol:KSW", "action": "reduce", "reason": f"hammer {i}"}))
                times.append((time.perf_counter() - t) * 1e3)
            assert [h.status_code for h in hammer] == [200] * 30, hammer[-1].text
            assert {h.json()["state"] for h in hammer} == {"REDUCING"}
            assert c.post("/auth/login", json={"username": "chief", "password": ADMIN_PW}).status_code == 429

            # B6 with a live gateway: only the admin releases
            for who in (viewer, trader):
                assert c.post("/kill-switch/release", headers=who,
                              json={"scope": "global", "reason": "not mine"}).status_code == 403
            res = c.post("/kill-switch/release", headers=admin, json={"scope": "global", "reason": "drill over"})
            assert res.status_code == 200 and res.json()["state"] == "ACTIVE", res.text

            # limits: only the admin changes one; the running gateway applies and stores it
            change = {"key": "symbols.KSW.max_order_qty", "value": "3", "reason": "drill limit"}
            assert c.put("/risk", headers=trader, json=change).status_code == 403
            res = c.put("/risk", headers=admin, json=change)
            assert res.status_code == 200, res.text
            assert res.json()["detail"].startswith("symbols.KSW.max_order_qty: ") and \
                res.json()["detail"].endswith(" -> 3")
            shown = c.get("/risk", headers=viewer).json()
            assert shown["symbols"]["KSW"]["max_order_qty"] == "3"
            assert [(x["key"], x["actor"]) for x in shown["changes"]] == [("symbols.KSW.max_order_qty", "api:chief")]
        r.close()

    assert sql_rows(database_url, "SELECT state, actor FROM trading_state WHERE scope = 'global'") \
        == [("ACTIVE", "api:chief")]
    # the API's audit rows (who, what, scope, result) beside the gateway's own
    api_audit = sql_rows(database_url, "SELECT actor, action, entity_id FROM audit_log WHERE action LIKE 'api.%' "
                                    "ORDER BY id")
    assert api_audit == ([("tina", "api.kill.engage", "global")] + [("tina", "api.kill.reduce", "symbol:KSW")] * 30
                         + [("chief", "api.kill.release", "global"),
                            ("chief", "api.risk.set", "symbols.KSW.max_order_qty")])
    gateway_audit = sql_rows(database_url, "SELECT actor, action FROM audit_log WHERE action IN "
                                        "('kill.engage', 'kill.reduce', 'kill.release') ORDER BY id")
    assert gateway_audit == [("api:tina", "kill.engage"), ("api:tina", "kill.reduce"), ("api:chief", "kill.release")]
    print(f"\nB4 via the API (real gateway, no strategy engine, {N_RESTING} resting orders): POST /kill-switch/engage "
          f"answered HALTED in {engage_ms:.0f} ms; 30 hammered engages while logins were 429: median "
          f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms, all 200 "
          f"({os.environ.get('DATABASE_URL', 'sqlite')[:10]}…)")


def test_b4_the_api_halts_through_the_database_while_redis_is_down(database_url, tmp_path):
    """Redis stops after the API started: the engage falls back to control_requests, like the CLI's."""
    rs = PrivateRedis(tmp_path / "redis", persistent=True)
    rs.start()
    home = tmp_path / "home"
    try:
        with Pipeline(rs.url(), database_url, home, drill_env(home)) as p:
            p.start(("execution",))
            eng = make_engine(database_url)
            try:
                create_user(eng, "tina", TRADER_PW, "trader")
            finally:
                eng.dispose()
            with ApiProcess(p) as api, httpx.Client(base_url=api.url, timeout=30) as c:
                trader = _login(c, "tina", TRADER_PW)
                rs.stop()
                t0 = time.perf_counter()
                res = c.post("/kill-switch/engage", headers=trader,
                             json={"scope": "strategy:drill", "action": "halt", "reason": "redis down"})
                engage_ms = (time.perf_counter() - t0) * 1e3
                assert res.status_code == 200, res.text
                assert res.json()["via"] == "database" and res.json()["state"] == "HALTED"
                assert c.get("/positions", headers=trader).status_code == 200  # marks unavailable, not an error
            assert sql_rows(database_url, "SELECT state, actor FROM trading_state WHERE scope = 'strategy:drill'") \
                == [("HALTED", "api:tina")]
            assert sql_rows(database_url, "SELECT actor, ok FROM control_requests") == [("api:tina", True)]
            [(detail,)] = sql_rows(database_url, "SELECT detail FROM audit_log WHERE action = 'api.kill.engage'")
            assert (detail if isinstance(detail, dict) else json.loads(detail))["via"] == "database"
    finally:
        rs.stop()
    print(f"\nB4 via the API with Redis down: POST /kill-switch/engage answered HALTED through the database in "
          f"{engage_ms:.0f} ms (the failed bus attempt and one gateway poll of <= 100 ms included)")
