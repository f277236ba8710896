"""The kill switch while Redis is down (issue 3 item 3, RELIABILITY B4), with real processes.

The gateway runs against a private ``redis-server`` the test stops: ``aitrader kill engage``
cannot reach the bus, falls back to the database's ``control_requests`` table, and the
gateway — its bus loop backing off — halts, cancels every resting order at the venue and
answers the request in the transaction of those effects. When Redis is back the gateway
resumes and publishes the reports it kept in its outbox. The strategy engine is never
started: the control path does not need it. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from common import streams
from common.db import make_engine
from common.messages import ControlAck, decode_as
from tests.sql import sql_rows

from .harness import ROOT, Pipeline
from .kill_drill import Reports, drill_env, limit_intent, publish_intents, publish_mark, rest_orders
from .test_resilience import PrivateRedis

pytestmark = pytest.mark.integration

N_RESTING = 50


@pytest.fixture
def redis_server(tmp_path):
    rs = PrivateRedis(tmp_path / "redis", persistent=True)  # the append-only file keeps streams and marks
    rs.start()
    yield rs
    rs.stop()


def _acks(r) -> dict[str, ControlAck]:
    acks = [decode_as(f[b"d"], ControlAck) for _id, f in r.xrange(streams.CONTROL_ACKS)]
    return {a.request_id: a for a in acks}


def test_b4_engage_while_redis_is_down_goes_through_the_database(redis_server, database_url, tmp_path):
    home = tmp_path / "home"
    with Pipeline(redis_server.url(), database_url, home, drill_env(home)) as p:
        p.start(("execution",))  # no strategy engine, no pattern engine: only the gateway
        r = redis_server.client()
        reports = Reports(r)
        publish_mark(r)
        rested = rest_orders(r, reports, N_RESTING)
        r.close()

        redis_server.stop()
        t0 = time.time_ns()
        cli = subprocess.Popen(
            [sys.executable, "-m", "backend.cli", "kill", "engage", "--reason", "B4 redis down", "--json"],
            env=p.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        t_durable = 0
        eng = make_engine(database_url)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not t_durable:
                with eng.connect() as c:
                    st = c.execute(sa.text("SELECT state FROM trading_state WHERE scope = 'global'")).scalar()
                if st == "HALTED":
                    t_durable = time.time_ns()
                else:
                    time.sleep(0.005)
        finally:
            eng.dispose()
        out, err = cli.communicate(timeout=30)
        t_cli = time.time_ns()
        assert cli.returncode == 0, (out, err, p.log("execution"))
        res = json.loads(out)
        assert res["ok"] and res["state"] == "HALTED" and res["via"] == "database", res
        assert t_durable, "the halt was not durable within 15 s"
        assert p.procs["execution"].poll() is None  # the gateway rode out the outage

        # the database: HALTED, every resting order cancelled by the kill switch, the request answered, audited
        assert sql_rows(database_url, "SELECT state, reason FROM trading_state WHERE scope = 'global'") == [
            ("HALTED", "B4 redis down")]
        statuses = dict(sql_rows(database_url, "SELECT client_order_id, status || ':' || reject_reason FROM orders"))
        assert {statuses[c] for c in rested} == {"CANCELLED:KILL_SWITCH"}
        [(request_id, ok, state, ts_req, ts_handled)] = sql_rows(
            database_url, "SELECT request_id, ok, state, ts_requested, ts_handled FROM control_requests")
        assert ok and state == "HALTED" and ts_handled >= ts_req
        audit = sql_rows(database_url, "SELECT action, actor FROM audit_log WHERE action LIKE 'kill.%'")
        assert len(audit) == 1 and audit[0][0] == "kill.engage" and audit[0][1].startswith("cli:")
        assert sql_rows(database_url, "SELECT request_id FROM kill_switch_events") == [(request_id,)]

        # Redis back: the gateway resumes and publishes what it kept in its outbox
        t_restart = time.monotonic()
        redis_server.start()
        r = redis_server.client()
        reports = Reports(r)
        reports.wait(rested, lambda rep: rep.status == "CANCELLED", timeout=30)
        assert all(reports.last(c).reason == "KILL_SWITCH" for c in rested)
        published_s = time.monotonic() - t_restart
        deadline = time.monotonic() + 10  # the ack (from the outbox) and the mirror (rewritten by the gateway)
        while (request_id not in _acks(r) or r.hget(streams.KILL_STATE, "state") != b"HALTED") \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        ack = _acks(r)[request_id]
        assert ack.ok and ack.state == "HALTED"
        assert r.hget(streams.KILL_STATE, "state") == b"HALTED"
        # and trades through the bus again: a new intent is refused by the kill switch
        probe = limit_intent("after-redis", tick_seq=2)
        publish_intents(r, [probe])
        reports.wait([probe.client_order_id], lambda rep: rep.status == "REJECTED", timeout=30)
        assert reports.last(probe.client_order_id).reason == "KILL_SWITCH"
        r.close()

    print(f"\nB4 (Redis down): {N_RESTING} resting orders; `aitrader kill engage` -> halt durable in the database "
          f"{(t_durable - t0) / 1e6:.0f} ms after the CLI call (its process start included); the gateway applied "
          f"the request {(ts_handled - ts_req) / 1e6:.1f} ms after the CLI created it (the failed bus attempt, "
          f"the CLI's database import and insert and one poll interval of at most 100 ms included); CLI returned after "
          f"{(t_cli - t0) / 1e6:.0f} ms; the cancel reports were on ex:events {published_s:.2f} s after Redis "
          "restarted")


def test_b4_database_path_with_redis_up_and_no_strategy_engine(redis_server, database_url, tmp_path):
    """``--via db`` with Redis up: the same answers, and the bus learns of them (mirror, acks)."""
    home = tmp_path / "home"
    with Pipeline(redis_server.url(), database_url, home, drill_env(home)) as p:
        p.start(("execution",))
        r = redis_server.client()
        reports = Reports(r)
        publish_mark(r)
        rested = rest_orders(r, reports, 5)

        out = p.run("-m", "backend.cli", "kill", "engage", "--via", "db", "--reason", "B4 via db")
        assert "sent through the database" in out.stdout and "trading state global HALTED" in out.stdout
        reports.wait(rested, lambda rep: rep.status == "CANCELLED", timeout=30)
        deadline = time.monotonic() + 10
        while r.hget(streams.KILL_STATE, "state") != b"HALTED" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.hget(streams.KILL_STATE, "state") == b"HALTED"

        st = json.loads(p.run("-m", "backend.cli", "kill", "status", "--via", "db", "--json").stdout)
        assert st["state"] == "HALTED" and st["via"] == "database"
        out = p.run("-m", "backend.cli", "kill", "release", "--via", "db", "--reason", "drill over", "--json")
        assert json.loads(out.stdout)["state"] == "ACTIVE"
        deadline = time.monotonic() + 10
        while r.hget(streams.KILL_STATE, "state") != b"ACTIVE" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.hget(streams.KILL_STATE, "state") == b"ACTIVE"
        # the bus path still answers as before
        out = json.loads(p.run("-m", "backend.cli", "kill", "status", "--json").stdout)
        assert out["state"] == "ACTIVE" and out["via"] == "bus"
        r.close()
    assert [a for (a,) in sql_rows(database_url, "SELECT action FROM audit_log WHERE action LIKE 'kill.%' ORDER BY id")] \
        == ["kill.engage", "kill.release"]
    assert sql_rows(database_url, "SELECT count(*) FROM control_requests WHERE ts_handled IS NOT NULL") == [(3,)]
