"""The gateway as a service on real Redis and the test database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import msgspec
import sqlalchemy as sa

from common import db, streams
from common.bus import connect
from common.messages import (
    Control,
    ExecutionReport,
    OrdStatus,
    decode,
    encode,
)
from execution.oms import OUTBOX_HWM

from .conftest import ROOT, batch, intent, quote, start_gateway, trade

D = Decimal
TICKS = streams.ticks_stream(0)


async def xadd(r, stream: str, payload) -> None:
    await r.xadd(stream, {b"d": payload if isinstance(payload, bytes) else encode(payload)})


async def reports(r, n: int, timeout: float = 5.0) -> list[ExecutionReport]:
    deadline = time.monotonic() + timeout
    while True:
        items = await r.xrange(streams.EXEC_EVENTS)
        if len(items) >= n or time.monotonic() > deadline:
            return [decode(f[b"d"]) for _i, f in items]
        await asyncio.sleep(0.02)


async def drained(r, timeout: float = 5.0) -> None:
    """Wait until the gateway's group has read and acked everything."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for s in (TICKS, streams.INTENTS, streams.CONTROL):
            if not await r.exists(s):
                continue
            for g in await r.xinfo_groups(s):
                if g["pending"] or g.get("lag"):
                    busy = True
        if not busy:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("gateway did not drain")


def db_rows(url: str, table) -> list[dict]:
    eng = db.make_engine(url)
    try:
        with eng.connect() as c:
            return [dict(x) for x in c.execute(sa.select(table).order_by(table.c.id)).mappings()]
    finally:
        eng.dispose()


async def test_ticks_and_intents_become_reports_equal_to_the_database(common, ex_settings, redis_url):
    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    try:
        await xadd(r, TICKS, batch(quote("BAC", 1, 9.99, 10.01), trade("IBM", 1, 180.0)))
        await drained(r)
        a = intent("BAC", 1, "100", "10", tick_seq=1)  # its next tick arrives after it
        b = intent("IBM", -1, "10", "180", tick_seq=1)
        c = intent("BAC", 1, "5000", "10", tick_seq=1)  # over max qty: rejected
        for it in (a, b, c):
            await xadd(r, streams.INTENTS, it)
        await drained(r)
        await xadd(r, TICKS, batch(trade("BAC", 2, 10.02), quote("IBM", 2, 179.5, 180.5)))
        reps = await reports(r, 5)
        await drained(r)
    finally:
        assert await gw.stop() == 0
    by = {(x.client_order_id, x.status): x for x in reps}
    assert set(by) == {
        (a.client_order_id, OrdStatus.ACCEPTED), (a.client_order_id, OrdStatus.FILLED),
        (b.client_order_id, OrdStatus.ACCEPTED), (b.client_order_id, OrdStatus.FILLED),
        (c.client_order_id, OrdStatus.REJECTED),
    }
    assert by[(c.client_order_id, OrdStatus.REJECTED)].reason == "MAX_QTY"
    fa = by[(a.client_order_id, OrdStatus.FILLED)]
    assert fa.last_px == D("10.02") and fa.fee == D("0.1002000000")
    assert (fa.ts_event, fa.ts_ingest, fa.ts_signal, fa.ts_intent) == (a.ts_event, a.ts_ingest, a.ts_signal, a.ts_intent)
    assert by[(b.client_order_id, OrdStatus.FILLED)].last_px == D("179.5")
    orders = {o["client_order_id"]: o for o in db_rows(common.db_url, db.Order.__table__)}
    fills = db_rows(common.db_url, db.Fill.__table__)
    assert {o: (x["status"], x["reject_reason"]) for o, x in orders.items()} == {
        a.client_order_id: ("FILLED", None), b.client_order_id: ("FILLED", None),
        c.client_order_id: ("REJECTED", "MAX_QTY"),
    }
    filled = [x for x in reps if x.status == OrdStatus.FILLED]
    assert sorted((f["exec_id"], f["venue_trade_id"], f["qty"], f["price"], f["fee"]) for f in fills) == sorted(
        (x.exec_id, x.venue_trade_id, x.last_qty, x.last_px, x.fee) for x in filled
    )
    for x in filled:
        o = orders[x.client_order_id]
        assert (o["cum_qty"], o["avg_px"], o["fees"]) == (x.cum_qty, x.avg_px, x.fee)
    stats = await r.hgetall(streams.stats_key("execution"))
    assert {k: int(stats[k.encode()]) for k in ("ticks", "intents", "orders", "accepted", "fills", "rejects")} == {
        "ticks": 4, "intents": 3, "orders": 3, "accepted": 2, "fills": 2, "rejects": 1,
    }
    assert int(stats[b"rejects.MAX_QTY"]) == 1
    marks = await r.hgetall(streams.MARKS)
    assert marks == {b"BAC": b"10.02", b"IBM": b"180.0"}
    lat = await r.hgetall(streams.latency_key("intent_to_fill"))
    assert lat  # saved at the last heartbeat (on stop)
    await r.aclose()


async def test_fill_does_not_depend_on_reading_the_tick_before_or_after_the_intent(common, ex_settings, redis_url):
    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    try:
        await xadd(r, TICKS, batch(trade("BAC", 1, 10.0), trade("SPY", 1, 170.0)))
        await drained(r)
        early = intent("BAC", 1, "10", "10", tick_seq=1)
        await xadd(r, streams.INTENTS, early)  # BAC: intent first, tick 2 later
        await drained(r)
        await xadd(r, TICKS, batch(trade("BAC", 2, 10.05), trade("SPY", 2, 170.5), trade("BAC", 3, 10.5),
                                   trade("SPY", 3, 171.0)))
        await drained(r)
        late = intent("SPY", 1, "10", "170", tick_seq=1)  # SPY: ticks 2 and 3 seen before the intent
        await xadd(r, streams.INTENTS, late)
        reps = await reports(r, 4)
    finally:
        assert await gw.stop() == 0
    fills = {x.symbol: x for x in reps if x.status == OrdStatus.FILLED}
    assert fills["BAC"].last_px == D("10.05") and fills["SPY"].last_px == D("170.5")  # both at tick 2
    await r.aclose()


async def test_garbage_is_dead_lettered_with_reasons_and_valid_entries_still_processed(common, ex_settings,
                                                                                       redis_url):
    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    good_tick = batch(trade("BAC", 1, 10.0))
    nan_intent = msgspec.msgpack.encode(
        ["intent", "co-nan", "sg", "s", "BAC", 1, "NaN", "MARKET", "DAY", "10", 1, 1, 1, 1, 1]
    )
    try:
        await xadd(r, TICKS, b"\x00\x01garbage")
        await xadd(r, TICKS, intent())  # wrong schema on the tick stream
        await xadd(r, TICKS, good_tick)
        await r.xadd(TICKS, {b"other": b"field"})  # no payload field
        await xadd(r, streams.INTENTS, b"\xc1")
        await xadd(r, streams.INTENTS, good_tick)  # a TickBatch where an intent belongs
        await xadd(r, streams.INTENTS, nan_intent)
        await xadd(r, streams.INTENTS, intent(cid="x" * 100))  # cannot be recorded
        valid = intent("BAC", 1, "10", "10", tick_seq=1)
        await xadd(r, streams.INTENTS, valid)
        await xadd(r, streams.CONTROL, b"not msgpack at all")
        await xadd(r, streams.CONTROL, intent())
        await xadd(r, streams.CONTROL, Control("q1", "kill.status"))
        await xadd(r, streams.CONTROL, Control("q2", "replay.pause"))  # someone else's command
        await xadd(r, TICKS, batch(trade("BAC", 2, 10.01)))
        reps = await reports(r, 2)
        await drained(r)
    finally:
        assert await gw.stop() == 0
    assert [(x.client_order_id, x.status) for x in reps] == [
        (valid.client_order_id, OrdStatus.ACCEPTED), (valid.client_order_id, OrdStatus.FILLED),
    ]
    dlq = {s: [dict(f) for _i, f in await r.xrange(streams.dlq_stream(s))]
           for s in (TICKS, streams.INTENTS, streams.CONTROL)}
    assert len(dlq[TICKS]) == 3 and len(dlq[streams.INTENTS]) == 4 and len(dlq[streams.CONTROL]) == 2
    reasons = [f[b"reason"].decode() for fs in dlq.values() for f in fs]
    assert all(reasons), reasons
    assert any("non-finite decimal in qty" in x for x in reasons)
    assert any("client_order_id must have 1..64" in x or "length <= 64" in x for x in reasons)
    acks = [decode(f[b"d"]) for _i, f in await r.xrange(streams.CONTROL_ACKS)]
    assert [(a.request_id, a.ok, a.state) for a in acks] == [("q1", True, "ACTIVE")]
    assert len(db_rows(common.db_url, db.Order.__table__)) == 1
    await r.aclose()


async def test_reports_lost_between_database_and_bus_are_republished_on_start(common, ex_settings, redis_url):
    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    try:
        await xadd(r, TICKS, batch(trade("BAC", 1, 10.0)))
        it = intent("BAC", 1, "10", "10", tick_seq=1)
        await xadd(r, streams.INTENTS, it)
        await reports(r, 1)
        await drained(r)
    finally:
        assert await gw.stop() == 0
    hwm = int(await r.get(OUTBOX_HWM))
    # as if the last bus commit never happened: its reports and its mark are gone
    await r.delete(streams.EXEC_EVENTS)
    await r.set(OUTBOX_HWM, hwm - 1)
    gw = await start_gateway(common, ex_settings)
    try:
        reps = await reports(r, 1)
    finally:
        assert await gw.stop() == 0
    assert [(x.client_order_id, x.status) for x in reps] == [(it.client_order_id, OrdStatus.ACCEPTED)]
    assert int(await r.get(OUTBOX_HWM)) == hwm
    await r.aclose()


async def test_open_order_is_reloaded_after_restart_and_a_replayed_intent_adds_nothing(common, ex_settings,
                                                                                       redis_url):
    from common.messages import OrdType

    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    it = intent("BAC", 1, "10", "10", tick_seq=1, order_type=OrdType.LIMIT, limit="9.95")
    try:
        await xadd(r, TICKS, batch(trade("BAC", 1, 10.0)))
        await xadd(r, streams.INTENTS, it)
        await reports(r, 1)
        await drained(r)
    finally:
        assert await gw.stop() == 0
    gw = await start_gateway(common, ex_settings)
    try:
        assert list(gw.gw.oms.orders) == [it.client_order_id]
        await xadd(r, streams.INTENTS, it)  # replayed
        await xadd(r, TICKS, batch(trade("BAC", 2, 9.9)))
        reps = await reports(r, 3)
        await drained(r)
    finally:
        assert await gw.stop() == 0
    # the replay is answered with the order's state (no new order) and the order fills; the two streams
    # may be read in either order, so the answer says ACCEPTED or FILLED
    cid = it.client_order_id
    got = {x.exec_id: (x.status, x.last_px) for x in reps}
    assert len(reps) == 3 and set(got) == {f"{cid}:A", f"{cid}:D", f"{cid}:F1"}
    assert got[f"{cid}:A"] == (OrdStatus.ACCEPTED, 0)
    assert got[f"{cid}:F1"] == (OrdStatus.FILLED, D("9.95"))  # traded through: at its limit
    assert got[f"{cid}:D"] in {(OrdStatus.ACCEPTED, 0), (OrdStatus.FILLED, 0)}
    assert int((await r.hgetall(streams.stats_key("execution")))[b"duplicates"]) == 1
    assert len(db_rows(common.db_url, db.Order.__table__)) == 1
    await r.aclose()


def test_python_m_execution_stops_on_sigterm_with_exit_0_and_nothing_pending(common, ex_settings, redis_url,
                                                                             tmp_path):
    import redis

    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_") and k != "DATABASE_URL"}
    env.update({
        "REDIS_URL": redis_url, "DATABASE_URL": common.db_url, "AITRADER_HOME": str(tmp_path),
        "AITRADER_EX_RISK_FILE": str(ex_settings.risk_file), "AITRADER_HEARTBEAT_S": "0.2",
    })
    r = redis.Redis.from_url(redis_url)
    proc = subprocess.Popen([sys.executable, "-m", "execution"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not r.keys(streams.health_key("execution", "*")):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "gateway did not become healthy"
            time.sleep(0.05)
        r.xadd(TICKS, {b"d": encode(batch(trade("BAC", 1, 10.0)))})
        for _ in range(20):
            r.xadd(streams.INTENTS, {b"d": encode(intent("BAC", 1, "1", "10", tick_seq=1))})
        r.xadd(TICKS, {b"d": encode(batch(trade("BAC", 2, 10.0)))})
        deadline = time.monotonic() + 20
        while r.xlen(streams.EXEC_EVENTS) < 40:
            assert time.monotonic() < deadline, "reports did not arrive"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for s in (TICKS, streams.INTENTS, streams.CONTROL):
        for g in r.xinfo_groups(s):
            assert g["pending"] == 0
    assert not r.keys(streams.health_key("execution", "*"))  # removed on the way out
    r.close()


def test_bad_risk_file_stops_the_gateway_with_exit_2_naming_the_key(redis_url, db_url, tmp_path):
    bad = tmp_path / "risk.yml"
    bad.write_text("defaults: {max_order_qty: '1'}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_") and k != "DATABASE_URL"}
    env.update({"REDIS_URL": redis_url, "DATABASE_URL": db_url, "AITRADER_HOME": str(tmp_path),
                "AITRADER_EX_RISK_FILE": str(bad)})
    res = subprocess.run([sys.executable, "-m", "execution"], cwd=ROOT, env=env, capture_output=True, timeout=30,
                         check=False)
    assert res.returncode == 2
    assert b"defaults.max_order_notional" in res.stderr


async def test_nothing_is_routed_or_reported_while_the_database_refuses_writes(redis_url, tmp_path, clean_env,
                                                                                ex_settings):
    import sqlite3

    from sqlalchemy import event

    from common.config import CommonSettings

    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}"
    db.migrate(url)
    eng = db.make_engine(url)
    # give up on a locked database quickly so the test sees the retry loop
    event.listen(eng, "connect", lambda con, _rec: con.execute("PRAGMA busy_timeout=20"))
    common = CommonSettings(redis_url=redis_url, database_url=url, home=tmp_path, heartbeat_s=0.2)
    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings, engine=eng)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await xadd(r, TICKS, batch(trade("BAC", 1, 10.0)))
        await drained(r)
        holder.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        it = intent("BAC", 1, "10", "10", tick_seq=1)
        await xadd(r, streams.INTENTS, it)
        await xadd(r, TICKS, batch(trade("BAC", 2, 10.0)))
        await asyncio.sleep(0.6)
        assert gw.gw.status == "degraded" and "database" in gw.gw.detail
        assert await r.xlen(streams.EXEC_EVENTS) == 0
        assert gw.gw.venue.working() == [] and not gw.gw.oms.portfolio.positions.get("BAC")
        holder.execute("COMMIT")
        reps = await reports(r, 2)
        await drained(r)
        assert gw.gw.status == "ok"
    finally:
        holder.close()
        assert await gw.stop() == 0
        eng.dispose()
    assert [x.status for x in reps] == [OrdStatus.ACCEPTED, OrdStatus.FILLED]
    assert [o["status"] for o in db_rows(url, db.Order.__table__)] == ["FILLED"]
    await r.aclose()


async def test_an_entry_the_database_refuses_is_isolated_and_dead_lettered(redis_url, tmp_path, clean_env,
                                                                          ex_settings):
    from common.config import CommonSettings

    url = f"sqlite:///{tmp_path / 'poison.db'}"
    db.migrate(url)
    eng = db.make_engine(url)
    with eng.begin() as c:  # the database itself refuses one order (as a constraint would)
        c.exec_driver_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON orders WHEN NEW.symbol = 'POISON' "
            "BEGIN SELECT RAISE(ABORT, 'poison order'); END"
        )
    common = CommonSettings(redis_url=redis_url, database_url=url, home=tmp_path, heartbeat_s=0.2,
                            max_deliveries=2)
    r = connect(redis_url)
    good = [intent("BAC", 1, "1", "10", tick_seq=1) for _ in range(3)]
    # all in the stream before the gateway starts, so they arrive in one batch
    await xadd(r, TICKS, batch(trade("BAC", 1, 10.0)))
    await xadd(r, streams.INTENTS, good[0])
    await xadd(r, streams.INTENTS, intent("POISON", 1, "1", "10", tick_seq=1))
    await xadd(r, streams.INTENTS, good[1])
    await xadd(r, streams.INTENTS, good[2])
    gw = await start_gateway(common, ex_settings, engine=eng)
    try:
        reps = await reports(r, 3)
        deadline = time.monotonic() + 10
        while not await r.xlen(streams.dlq_stream(streams.INTENTS)):
            assert time.monotonic() < deadline, "poison entry was not dead-lettered"
            await asyncio.sleep(0.05)
        await drained(r)
        assert gw.task.done() is False and gw.gw.status == "ok"
    finally:
        assert await gw.stop() == 0
        eng.dispose()
    assert sorted(x.client_order_id for x in reps) == sorted(g.client_order_id for g in good)
    assert all(x.status == OrdStatus.ACCEPTED for x in reps)
    [(_id, dead)] = await r.xrange(streams.dlq_stream(streams.INTENTS))
    assert b"handler failed" in dead[b"reason"]
    assert {o["symbol"] for o in db_rows(url, db.Order.__table__)} == {"BAC"}
    await r.aclose()


async def test_nul_characters_cannot_break_the_kill_switch(common, ex_settings, redis_url):
    r = connect(redis_url)
    gw = await start_gateway(common, ex_settings)
    try:
        await xadd(r, streams.CONTROL, Control("r\x00id", "kill.engage", reason="bad\x00input", actor="a\x00b"))
        await xadd(r, streams.INTENTS, intent("BAC", 1, "1", "10", cid="co-\x00"))
        await drained(r)
    finally:
        assert await gw.stop() == 0
    [state] = [x for x in db_rows_state(common.db_url)]
    assert (state["state"], state["reason"], state["actor"]) == ("HALTED", "badinput", "ab")
    assert await r.xlen(streams.dlq_stream(streams.INTENTS)) == 1
    await r.aclose()


def db_rows_state(url: str) -> list[dict]:
    eng = db.make_engine(url)
    try:
        with eng.connect() as c:
            return [dict(x) for x in c.execute(sa.select(db.TradingState.__table__)).mappings()]
    finally:
        eng.dispose()
