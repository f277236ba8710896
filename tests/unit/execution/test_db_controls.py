"""Control commands through the database (``control_requests``): the path that works while Redis is down.

The store functions; the gateway applying a request exactly as the same command from the bus,
marking it handled in the transaction of its effects; the CLI's ``--via db`` and its fallback
when Redis is unreachable. The gateway here has no working Redis at all unless a test says so.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from common import db, streams
from common.bus import Entry, connect
from common.config import CommonSettings
from common.messages import Control, ControlAck, ExecutionReport, OrdType, decode_as
from execution.store import Changes, Store, control_result, submit_control, withdraw_control

from .conftest import batch, intent, trade


def _dead_redis_url() -> str:
    with socket.socket() as s:  # a port nothing listens on: every Redis call is refused at once
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


def ctl(command: str = "kill.engage", scope: str = "global", reason: str = "db drill", **args: str) -> Control:
    return Control(request_id=uuid.uuid4().hex, command=command, scope=scope, reason=reason, actor="test:db",
                   args=args, ts=time.time_ns())


def rows(engine, table, order_by=None) -> list[dict]:
    with engine.connect() as c:
        q = sa.select(table)
        if order_by is not None:
            q = q.order_by(order_by)
        return [dict(r) for r in c.execute(q).mappings()]


@pytest.fixture
def dead_common(db_url, tmp_path, clean_env) -> CommonSettings:
    return CommonSettings(redis_url=_dead_redis_url(), database_url=db_url, home=tmp_path, initial_cash="100000")


def make_gateway(common, ex_settings, engine):
    """A gateway whose database is ready and whose Redis is whatever ``common`` says (not started)."""
    from execution.service import ExecutionGateway

    gw = ExecutionGateway(common, ex_settings, engine=engine)
    gw.store = Store(engine)
    gw.redis = connect(common.redis_url, socket_connect_timeout=1)
    return gw


async def rest(gw, n: int = 3) -> list[str]:
    """Rest ``n`` limit buys through the batch path (as bus entries would), durable in the database."""
    its = [intent("BAC", 1, "10", "10", tick_seq=1, order_type=OrdType.LIMIT, limit="9.90", strategy="s1")
           for _ in range(n)]
    entries = [Entry(streams.ticks_stream(0), b"1-0", batch(trade("BAC", 1, 10.0)), b"")]
    entries += [Entry(streams.INTENTS, f"{2 + i}-0".encode(), it, b"") for i, it in enumerate(its)]
    await gw._run(entries)
    assert len(gw.oms.orders) == n
    return [it.client_order_id for it in its]


# -- the store -------------------------------------------------------------------------------
def test_store_submit_pending_result_withdraw(engine):
    store = Store(engine)
    a, b = ctl(), ctl("kill.status")
    ida, idb = submit_control(engine, a), submit_control(engine, b)
    assert ida < idb
    assert [r["request_id"] for r in store.pending_controls()] == [a.request_id, b.request_id]
    row = control_result(engine, a.request_id)
    assert row["command"] == "kill.engage" and row["actor"] == "test:db" and row["ts_handled"] is None
    assert row["ts_requested"] == a.ts and row["args"] == {}
    with pytest.raises(IntegrityError):  # request ids are unique
        submit_control(engine, a)

    # the result is written once: a second write for the same row changes nothing
    store.write(Changes(control_results=[{"id": ida, "ts_handled": 5, "ok": True, "state": "HALTED", "detail": "x"}]))
    store.write(Changes(control_results=[{"id": ida, "ts_handled": 9, "ok": False, "state": "", "detail": "y"}]))
    row = control_result(engine, a.request_id)
    assert (row["ts_handled"], row["ok"], row["state"], row["detail"]) == (5, True, "HALTED", "x")
    assert [r["request_id"] for r in store.pending_controls()] == [b.request_id]

    assert not withdraw_control(engine, a.request_id)  # handled: stays
    assert withdraw_control(engine, b.request_id)
    assert control_result(engine, b.request_id) is None and store.pending_controls() == []
    assert control_result(engine, "nope") is None


# -- the gateway applies a request without Redis -----------------------------------------------
async def test_engage_from_the_database_without_redis_has_the_effects_of_the_bus_command(
        dead_common, ex_settings, engine):
    gw = make_gateway(dead_common, ex_settings, engine)
    cids = await rest(gw)
    req = ctl(reason="redis is down")
    submit_control(engine, req)

    assert await gw.poll_controls() == 1
    assert gw._bus_behind  # Redis refused: the reports wait in the outbox

    row = control_result(engine, req.request_id)
    assert row["ok"] is True and row["state"] == "HALTED" and row["ts_handled"] >= req.ts
    assert "HALTED" in row["detail"] and "redis is down" in row["detail"]
    [st] = rows(engine, db.TradingState.__table__)
    assert (st["scope"], st["state"], st["reason"], st["actor"]) == ("global", "HALTED", "redis is down", "test:db")
    orders = {o["client_order_id"]: o for o in rows(engine, db.Order.__table__)}
    assert {c: (orders[c]["status"], orders[c]["reject_reason"]) for c in cids} == dict.fromkeys(
        cids, ("CANCELLED", "KILL_SWITCH"))
    [ev] = rows(engine, db.KillSwitchEvent.__table__)
    assert (ev["action"], ev["request_id"], ev["actor"]) == ("engage", req.request_id, "test:db")
    [audit] = [a for a in rows(engine, db.AuditLog.__table__) if a["action"].startswith("kill.")]
    assert audit["action"] == "kill.engage" and audit["detail"]["request_id"] == req.request_id
    assert audit["detail"]["cancelled"] == 3
    # the cancel reports and the ack are in the outbox, to be published when Redis answers
    out = rows(engine, db.OutboxMessage.__table__, db.OutboxMessage.seq)
    cancels = [decode_as(o["payload"], ExecutionReport) for o in out if o["stream"] == streams.EXEC_EVENTS]
    cancels = [r for r in cancels if r.status == "CANCELLED"]
    assert sorted(r.client_order_id for r in cancels) == sorted(cids)
    [ack] = [decode_as(o["payload"], ControlAck) for o in out if o["stream"] == streams.CONTROL_ACKS]
    assert ack.request_id == req.request_id and ack.ok and ack.state == "HALTED"
    assert gw.oms.kill.state == "HALTED" and not gw.oms.orders
    assert gw.counters["control_requests"] == 1 and gw.counters["cancels"] == 3

    assert await gw.poll_controls() == 0  # handled once
    await gw.redis.aclose()


async def test_database_and_bus_engage_write_the_same_rows(dead_common, ex_settings, tmp_path, clean_env):
    from common.db import make_engine, migrate

    def effects(engine) -> dict:
        def strip(r: dict, *keys: str) -> dict:
            return {k: v for k, v in r.items() if k not in keys}

        return {
            "orders": sorted((o["status"], o["reject_reason"]) for o in rows(engine, db.Order.__table__)),
            "state": [strip(r, "changed_at") for r in rows(engine, db.TradingState.__table__)],
            "events": [strip(r, "id", "ts", "request_id", "created_at")
                       for r in rows(engine, db.KillSwitchEvent.__table__)],
            "audit": [(a["action"], a["detail"]["cancelled"]) for a in rows(engine, db.AuditLog.__table__)],
            "outbox": [o["stream"] for o in rows(engine, db.OutboxMessage.__table__, db.OutboxMessage.seq)],
        }

    got = {}
    for via in ("bus", "db"):
        url = f"sqlite:///{tmp_path / via / 'x.db'}"
        migrate(url)
        eng = make_engine(url)
        gw = make_gateway(dead_common, ex_settings, eng)
        await rest(gw)
        req = ctl(reason="same")
        if via == "bus":
            await gw._run([Entry(streams.CONTROL, b"9-0", req, b"")])
            flushed = gw.oms.flush_cancels()  # what the service does right after the batch
            gw.store.write(flushed[0])
        else:
            submit_control(eng, req)
            assert await gw.poll_controls() == 1
        got[via] = effects(eng)
        await gw.redis.aclose()
        eng.dispose()
    assert got["db"] == got["bus"]
    assert got["db"]["audit"] == [("kill.engage", 3)]


async def test_status_unknown_and_invalid_requests_are_answered_in_their_rows(dead_common, ex_settings, engine):
    gw = make_gateway(dead_common, ex_settings, engine)
    status, unknown, release = ctl("kill.status"), ctl("strategy.pause"), ctl("kill.release", reason="")
    for c in (status, unknown, release):
        submit_control(engine, c)
    with engine.begin() as c:  # written by hand: args must be text to text, as on the bus
        c.execute(db.ControlRequest.__table__.insert().values(
            request_id="bad-args", command="order.cancel", scope="global", reason="", actor="x",
            args={"client_order_id": 7}, ts_requested=1))
    assert await gw.poll_controls() == 4
    res = {r["request_id"]: r for r in rows(engine, db.ControlRequest.__table__)}
    assert all(r["ts_handled"] is not None for r in res.values())
    assert res[status.request_id]["ok"] is True and res[status.request_id]["state"] == "ACTIVE"
    assert res[unknown.request_id]["ok"] is False and "unknown command" in res[unknown.request_id]["detail"]
    assert res[release.request_id]["ok"] is False and "requires a reason" in res[release.request_id]["detail"]
    assert res["bad-args"]["ok"] is False and res["bad-args"]["detail"].startswith("invalid control request")
    # a status changes nothing: no state row, no outbox row; a refused release is audited as on the bus
    assert rows(engine, db.TradingState.__table__) == []
    assert [a["action"] for a in rows(engine, db.AuditLog.__table__)] == ["kill.release.refused"]
    await gw.redis.aclose()


async def test_cancel_from_the_database(dead_common, ex_settings, engine):
    gw = make_gateway(dead_common, ex_settings, engine)
    a, _b, _c = await rest(gw)
    one, rest_all, again = ctl("order.cancel", client_order_id=a), ctl("order.cancel_all"), ctl("order.cancel",
                                                                                                client_order_id=a)
    for x in (one, rest_all, again):
        submit_control(engine, x)
    assert await gw.poll_controls() == 3
    res = {r["request_id"]: r for r in rows(engine, db.ControlRequest.__table__)}
    assert (res[one.request_id]["ok"], res[one.request_id]["detail"]) == (True, f"{a} cancelled")
    assert (res[rest_all.request_id]["ok"], res[rest_all.request_id]["detail"]) == (True, "cancelled 2 order(s)")
    assert res[again.request_id]["ok"] is False and "not open" in res[again.request_id]["detail"]
    assert {o["status"] for o in rows(engine, db.Order.__table__)} == {"CANCELLED"}
    await gw.redis.aclose()


async def test_effects_and_result_are_one_transaction(dead_common, ex_settings, engine, monkeypatch):
    """A write of the effects that fails leaves nothing half-done: memory reloaded, the request answered not ok."""
    gw = make_gateway(dead_common, ex_settings, engine)
    cids = await rest(gw)
    real = gw.store.write

    def failing(ch: Changes) -> None:
        if ch.control_results and ch.trading_states:
            raise IntegrityError("INSERT", {}, Exception("boom"))
        real(ch)

    monkeypatch.setattr(gw.store, "write", failing)
    req = ctl()
    submit_control(engine, req)
    assert await gw.poll_controls() == 1
    row = control_result(engine, req.request_id)
    assert row["ok"] is False and row["detail"].startswith("failed: IntegrityError")
    assert rows(engine, db.TradingState.__table__) == [] and rows(engine, db.KillSwitchEvent.__table__) == []
    assert {o["status"] for o in rows(engine, db.Order.__table__)} == {"ACCEPTED"}
    assert gw.oms.kill.state == "ACTIVE" and sorted(gw.oms.orders) == sorted(cids)  # the database won
    await gw.redis.aclose()


# -- with Redis: the effects reach the bus; the task shares the batch lock ----------------------
async def test_database_request_reaches_the_bus_with_a_running_gateway(common, ex_settings, redis_url):
    from .conftest import start_gateway

    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings.model_copy(update={"control_poll_ms": 20.0}))
    try:
        eng = gw.gw._engine
        req = ctl(reason="via db, bus up")
        submit_control(eng, req)
        for _ in range(300):
            row = control_result(eng, req.request_id)
            if row["ts_handled"] is not None:
                break
            await asyncio.sleep(0.01)
        assert row["ok"] and row["state"] == "HALTED"
        for _ in range(300):  # the mirror and the (durable) ack are published
            if (await r.hget(streams.KILL_STATE, "state")) == b"HALTED" and await r.xlen(streams.CONTROL_ACKS):
                break
            await asyncio.sleep(0.01)
        assert (await r.hget(streams.KILL_STATE, "state")) == b"HALTED"
        [(_id, fields)] = await r.xrange(streams.CONTROL_ACKS)
        assert decode_as(fields[b"d"], ControlAck).request_id == req.request_id
        assert int(await r.hget(streams.stats_key("execution"), "control_requests")) == 1
    finally:
        assert await gw.stop() == 0
        await r.aclose()


# -- the CLI ---------------------------------------------------------------------------------
def _cli(common, *argv: str) -> int:
    from backend import cli

    args = cli._parser().parse_args(list(argv))
    return cli.cmd_kill(args, common) if args.cmd == "kill" else cli.cmd_cancel(args, common)


async def test_cli_falls_back_to_the_database_when_redis_is_unreachable(dead_common, ex_settings, engine, capsys):
    gw = make_gateway(dead_common, ex_settings, engine)
    cids = await rest(gw)
    poller = asyncio.create_task(gw._control_requests())
    try:
        rc = await asyncio.to_thread(_cli, dead_common, "kill", "engage", "--reason", "cli drill")
        assert rc == 0
        out = capsys.readouterr().out
        assert "sent through the database: redis unreachable" in out and "trading state global HALTED" in out
        rc = await asyncio.to_thread(_cli, dead_common, "cancel", cids[0], "--json")
        assert rc == 1  # already cancelled by the halt
        out = capsys.readouterr().out
        assert '"via": "database"' in out and "not open" in out
        assert await asyncio.to_thread(_cli, dead_common, "kill", "status", "--via", "db", "--json") == 0
        assert '"state": "HALTED"' in capsys.readouterr().out
        assert await asyncio.to_thread(_cli, dead_common, "kill", "engage", "--via", "bus") == 1
        assert "redis unreachable" in capsys.readouterr().err
    finally:
        gw.request_stop()
        await poller
        await gw.redis.aclose()
    [st] = rows(engine, db.TradingState.__table__)
    assert (st["state"], st["reason"]) == ("HALTED", "cli drill") and st["actor"].startswith("cli:")


def test_cli_withdraws_an_unanswered_database_request(dead_common, engine, capsys):
    assert _cli(dead_common, "kill", "engage", "--via", "db", "--timeout", "0.2", "--reason", "nobody") == 1
    assert "request withdrawn" in capsys.readouterr().err
    assert rows(engine, db.ControlRequest.__table__) == []  # a gateway started later does not act on it
