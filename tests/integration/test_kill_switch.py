"""The kill switch with real processes (RELIABILITY B1, B2): halting 500 resting orders, and a crash right after.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from common import streams
from common.messages import Control, ControlAck, Heartbeat, decode_as, encode
from tests.sql import sql_rows

from .harness import Pipeline
from .kill_drill import (
    Reports,
    drill_env,
    engage_under_probe,
    limit_intent,
    publish_intents,
    publish_mark,
    rest_orders,
)

pytestmark = pytest.mark.integration

N_RESTING = 500


def test_b1_engage_blocks_new_orders_and_cancels_500_resting_orders(redis_url, database_url, tmp_path):
    with Pipeline(redis_url, database_url, tmp_path / "home", drill_env(tmp_path / "home")) as p:
        p.start(("execution",))
        r = p.redis()
        reports = Reports(r)
        publish_mark(r)
        rested = rest_orders(r, reports, N_RESTING)
        assert len(sql_rows(database_url, "SELECT 1 FROM orders WHERE status = 'ACCEPTED'")) == N_RESTING

        res = engage_under_probe(p, r, reports, rested, reason="B1 drill")
        assert json.loads(res.cli_stdout)["state"] == "HALTED"

        # every probe was answered: accepted before the halt (then cancelled with the rest) or refused
        probes = {cid: reports.last(cid) for cid, _t in res.probes}
        accepted_after = [c for c, rep in probes.items()
                          if any(x.status == "ACCEPTED" and x.ts_exec >= res.t_halted for x in reports.by_cid[c])]
        assert not accepted_after, accepted_after[:5]
        assert all(rep.status == "CANCELLED" or (rep.status == "REJECTED" and rep.reason == "KILL_SWITCH")
                   for rep in probes.values()), {rep.status for rep in probes.values()}
        # probes published once the CLI had its answer were all refused
        late = [cid for cid, t in res.probes if t > res.t_cli_returned]
        assert late and all(probes[c].reason == "KILL_SWITCH" for c in late)
        assert res.t_first_blocked > 0

        # the database: all 500 cancelled by the kill switch, nothing open, nothing accepted after the halt
        rows = sql_rows(database_url, "SELECT client_order_id, status, reject_reason, ts_accepted FROM orders")
        by_cid = {row[0]: row for row in rows}
        assert all(by_cid[c][1] == "CANCELLED" and by_cid[c][2] == "KILL_SWITCH" for c in rested)
        assert not [row for row in rows if row[1] in ("ACCEPTED", "PENDING_NEW", "PARTIALLY_FILLED")]
        assert not [row for row in rows if row[3] is not None and row[3] >= res.t_halted]
        st = sql_rows(database_url, "SELECT state, reason FROM trading_state WHERE scope = 'global'")
        assert st == [("HALTED", "B1 drill")]

        blocked_ms, halted_ms, cancel_ms = res.ms(res.t_first_blocked), res.ms(res.t_halted), res.ms(
            res.t_cancel_published)
        print(f"\nB1: {N_RESTING} resting orders, {len(res.probes)} probe intents; from `aitrader kill engage` "
              f"sending its command: gateway halted {halted_ms:.1f} ms, first new intent refused (KILL_SWITCH) "
              f"{blocked_ms:.1f} ms, all {N_RESTING} CANCELLED (rows committed, reports on ex:events) "
              f"{cancel_ms:.0f} ms (±1), CLI answered {res.ms(res.t_cli_returned):.0f} ms; "
              f"0 orders accepted after the halt")
        assert blocked_ms < 1000, blocked_ms
        assert cancel_ms < 5000, cancel_ms


def _gateway_healthy_since(r, since_ns: int, timeout: float = 60) -> Heartbeat:
    """Wait for a healthy heartbeat of a gateway started after ``since_ns`` (a killed one leaves
    its health key, under the same stable instance name, until the TTL)."""
    key = streams.health_key("execution", socket.gethostname())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = r.get(key)
        if data:
            hb = decode_as(data, Heartbeat)
            if hb.status == "ok" and hb.started_at >= since_ns:
                return hb
        time.sleep(0.05)
    raise AssertionError(f"no gateway started after {since_ns} healthy in {timeout}s")


def _control(r, command: str, reason: str, timeout: float = 10) -> ControlAck:
    """Send a raw control command (as any client could, bypassing the CLI's own checks); its ack."""
    req = Control(request_id=uuid.uuid4().hex, command=command, reason=reason, actor="test:raw", ts=time.time_ns())
    r.xadd(streams.CONTROL, {b"d": encode(req)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _eid, f in r.xrevrange(streams.CONTROL_ACKS, count=50):
            ack = decode_as(f[b"d"], ControlAck)
            if ack.request_id == req.request_id:
                return ack
        time.sleep(0.02)
    raise AssertionError(f"no ack for {command}")


def test_b2_gateway_killed_right_after_engage_comes_back_halted_until_released_with_a_reason(
    redis_url, database_url, tmp_path
):
    with Pipeline(redis_url, database_url, tmp_path / "home", drill_env(tmp_path / "home")) as p:
        p.start(("execution",))
        r = p.redis()
        reports = Reports(r)
        publish_mark(r)
        rested = rest_orders(r, reports, 100)

        eng = p.run("-m", "backend.cli", "kill", "engage", "--reason", "B2 drill", "--json")
        p.procs["execution"].kill()  # SIGKILL, right after the acknowledgement
        assert p.procs["execution"].wait(10) == -9
        assert json.loads(eng.stdout)["state"] == "HALTED"
        # intents that arrive while the gateway is down wait on the bus
        publish_intents(r, [limit_intent(f"down-{i}") for i in range(20)])

        del p.procs["execution"]
        restarted_at = time.time_ns()
        p.start(("execution",))
        hb = _gateway_healthy_since(r, restarted_at)
        assert hb.detail.startswith("HALTED"), hb.detail
        st = json.loads(p.run("-m", "backend.cli", "kill", "status", "--json").stdout)
        assert st["state"] == "HALTED" and "B2 drill" in st["detail"]

        publish_intents(r, [limit_intent(f"after-{i}") for i in range(20)])
        blocked = [f"down-{i}" for i in range(20)] + [f"after-{i}" for i in range(20)]
        reports.wait(blocked, lambda rep: rep.status != "PENDING_NEW")
        assert {(reports.last(c).status, reports.last(c).reason) for c in blocked} == {("REJECTED", "KILL_SWITCH")}

        # a release without a reason is refused by the CLI, and by the gateway if sent raw
        assert p.run("-m", "backend.cli", "kill", "release", check=False).returncode == 2
        refused = _control(r, "kill.release", "  ")
        assert not refused.ok and refused.state == "HALTED" and "reason" in refused.detail
        publish_intents(r, [limit_intent("still-halted")])
        reports.wait(["still-halted"], lambda rep: rep.status != "PENDING_NEW")
        assert reports.last("still-halted").reason == "KILL_SWITCH"

        rel = json.loads(p.run("-m", "backend.cli", "kill", "release", "--reason", "checked after the crash",
                               "--json").stdout)
        assert rel["state"] == "ACTIVE" and rel["ok"]
        publish_mark(r, price="100.01", seq=2)  # marks live in the gateway's memory: a fresh one needs a tick
        publish_intents(r, [limit_intent("after-release", tick_seq=2)])
        reports.wait(["after-release"], lambda rep: rep.status != "PENDING_NEW")
        last = reports.last("after-release")
        assert (last.status, last.reason) == ("ACCEPTED", "")
        p.stop()

    orders = {row[0]: row[1:] for row in sql_rows(
        database_url, "SELECT client_order_id, status, reject_reason FROM orders")}
    assert all(orders[c] == ("CANCELLED", "KILL_SWITCH") for c in rested)
    assert all(orders[c] == ("REJECTED", "KILL_SWITCH") for c in [*blocked, "still-halted"])
    accepted = [c for c, (status, _r) in orders.items() if status == "ACCEPTED"]
    assert accepted == ["after-release"]
    events = sql_rows(database_url, "SELECT action, reason, actor FROM kill_switch_events ORDER BY id")
    assert [(a, why) for a, why, _who in events] == [("engage", "B2 drill"), ("release", "checked after the crash")]
    assert all(who.startswith("cli:") for _a, _w, who in events)
    audit = sql_rows(database_url, "SELECT action, actor, detail FROM audit_log ORDER BY id")
    assert [a for a, _who, _d in audit] == ["kill.engage", "kill.release.refused", "kill.release"]
    detail = [json.loads(d) if isinstance(d, str) else d for _a, _w, d in audit]
    assert detail[0]["cancelled"] == len(rested) and detail[0]["state"] == "HALTED"
    assert audit[1][1] == "test:raw" and detail[2]["state"] == "ACTIVE"
    print(f"\nB2: gateway SIGKILLed right after engaging with {len(rested)} resting orders; restarted HALTED; "
          f"{len(blocked) + 1} intents refused (KILL_SWITCH), a release without a reason refused; "
          f"released with a reason; events {[a for a, _w, _x in events]}, audit {[a for a, _w, _d in audit]}")


def test_symbol_scope_halt_from_the_cli_refuses_that_symbol_and_accepts_others(redis_url, database_url, tmp_path):
    with Pipeline(redis_url, database_url, tmp_path / "home") as p:
        p.start(("execution",))
        r = p.redis()
        reports = Reports(r)
        publish_mark(r, "KSX")
        publish_mark(r, "KSY")
        rested = {s: [f"rest-{s}-{i}" for i in range(3)] for s in ("KSX", "KSY")}
        publish_intents(r, [limit_intent(c, symbol=s) for s, cids in rested.items() for c in cids])
        reports.wait([c for cids in rested.values() for c in cids], lambda rep: rep.status != "PENDING_NEW")
        assert {reports.last(c).status for cids in rested.values() for c in cids} == {"ACCEPTED"}

        eng = json.loads(p.run("-m", "backend.cli", "kill", "engage", "--scope", "symbol:KSX",
                               "--reason", "scope drill", "--json").stdout)
        assert (eng["ok"], eng["scope"], eng["state"]) == (True, "symbol:KSX", "HALTED")
        publish_intents(r, [limit_intent("new-x", symbol="KSX"), limit_intent("new-y", symbol="KSY")])
        reports.wait(["new-x", "new-y"], lambda rep: rep.status != "PENDING_NEW")
        x, y = reports.last("new-x"), reports.last("new-y")
        assert (x.status, x.reason) == ("REJECTED", "KILL_SWITCH") and x.text.startswith("HALTED at symbol:KSX")
        assert (y.status, y.reason) == ("ACCEPTED", "")
        st = json.loads(p.run("-m", "backend.cli", "kill", "status", "--json").stdout)
        assert st["state"] == "ACTIVE" and "symbol:KSX HALTED" in st["detail"]
        assert p.run("-m", "backend.cli", "kill", "engage", "--scope", "venue:X", check=False).returncode == 2
        p.stop()

    orders = {row[0]: row[1:] for row in sql_rows(
        database_url, "SELECT client_order_id, status, reject_reason FROM orders")}
    assert all(orders[c] == ("CANCELLED", "KILL_SWITCH") for c in rested["KSX"])
    assert all(orders[c][0] == "ACCEPTED" for c in rested["KSY"])
    assert orders["new-x"] == ("REJECTED", "KILL_SWITCH") and orders["new-y"][0] == "ACCEPTED"
    states = sql_rows(database_url, "SELECT scope, state, reason FROM trading_state ORDER BY scope")
    assert states == [("symbol:KSX", "HALTED", "scope drill")]
    print(f"\nscope: `aitrader kill engage --scope symbol:KSX` cancelled {len(rested['KSX'])} KSX orders, "
          f"left {len(rested['KSY'])} KSY orders working; a new KSX intent refused (KILL_SWITCH), a new KSY one accepted")
