"""The lean hot-path connection against a real Redis: replies, errors, transactions, loss."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from common.bus import Consumer, Entry, Outputs, Publisher, connect
from common.messages import Tick, TickBatch, TickType, encode
from common.resp import RecordingPipe, RespConnection


async def _open(redis_url):
    r = connect(redis_url)
    return r, await RespConnection.open(r.connection_pool.connection_kwargs)


async def test_call_returns_raw_replies_and_selects_the_db(redis_url):
    r, c = await _open(redis_url)
    assert await c.call("PING") == b"PONG"
    await c.call("SET", "k", b"\x00\xff")
    assert await r.get("k") == b"\x00\xff"  # same database as the redis-py client
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await c.call("XADD", "k", "*", "d", "x")
    c.close()
    await r.aclose()


async def test_transaction_is_atomic_and_reports_failed_commands(redis_url):
    r, c = await _open(redis_url)
    res = await c.transaction([("INCR", "n"), ("INCR", "n"), ("GET", "n")])
    assert res == [1, 2, b"2"]
    await r.set("s", "x")
    with pytest.raises(ResponseError):
        await c.transaction([("INCR", "n"), ("XADD", "s", "*", "d", "1")])
    with pytest.raises(ResponseError):  # an unknown command aborts the whole EXEC
        await c.transaction([("INCR", "n"), ("NOSUCHCOMMAND",)])
    assert await r.get("n") == b"3"  # the first failed at run time (INCR applied), the second aborted
    c.close()
    await r.aclose()


async def test_lost_connection_raises_connection_error_and_consumer_reconnects(redis_url):
    r = connect(redis_url)
    cons = Consumer(r, "g", "c", {"in": TickBatch}, stats_key="st", block_ms=10)
    await cons.start()
    assert await cons.read() == []
    fast = await cons._fast_conn()
    await r.client_kill_filter(_id=await fast.call("CLIENT", "ID"))  # only this connection
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionError):
        await fast.call("PING")
    await Publisher(r, 1000).publish([("in", encode(TickBatch([Tick("A", TickType.TRADE, 1, 1, 1.0, 1.0)])))])
    assert len(await cons.read()) == 1  # the consumer opened a fresh connection
    cons.close()
    await r.aclose()


def test_recording_pipe_records_the_commands_services_queue():
    p = RecordingPipe()
    p.hset("h", mapping={"a": "1", "b": "2"})
    p.hset("h", "k", "v")
    p.set("s", 5)
    p.set("t", 1, ex=10)
    p.hincrby("h", "c", 3)
    p.xadd("x", {"d": b"1"}, maxlen=100)
    assert p.commands == [
        ("HSET", "h", "a", "1", "b", "2"), ("HSET", "h", "k", "v"), ("SET", "s", 5), ("SET", "t", 1, "EX", 10),
        ("HINCRBY", "h", "c", 3), ("XADD", "x", "MAXLEN", "~", 100, "*", "d", b"1"),
    ]


@pytest.mark.parametrize("fast_path", [True, False])
async def test_both_paths_commit_the_same(redis_url, fast_path):
    r = connect(redis_url)
    c = Consumer(r, "g", "c", {"in": TickBatch}, stats_key="st", block_ms=10, fast_path=fast_path)
    await c.start()
    good = encode(TickBatch([Tick("A", TickType.TRADE, 1, 1, 1.0, 1.0)]))
    await Publisher(r, 1000).publish([("in", good), ("in", b"junk"), ("in", good)])
    batch = await c.read()
    out = Outputs()
    for e in c.split(batch, out):
        out.publish("out", e.msg)
        out.incr("n")
        out.ack(e)
    out.redis_op(lambda pipe: pipe.hset("marks", mapping={"A": "1.0"}))
    await c.commit(out, prefetch=True)
    assert await r.xlen("out") == 2 and await r.hget("st", "n") == b"2"
    assert await r.hget("marks", "A") == b"1.0"
    assert await r.xlen("dlq:in") == 1 and await r.hget("st", "dead_letters") == b"1"
    assert (await r.xpending("in", "g"))["pending"] == 0
    c.close()
    await r.aclose()


@pytest.mark.parametrize("fast_path", [True, False])
async def test_both_paths_prefetch_the_next_batch_in_the_commit(redis_url, fast_path):
    r = connect(redis_url)
    c = Consumer(r, "g", "c", {"in": TickBatch}, stats_key="st", block_ms=10, count=2, fast_path=fast_path)
    await c.start()
    good = encode(TickBatch([Tick("A", TickType.TRADE, 1, 1, 1.0, 1.0)]))
    await Publisher(r, 1000).publish([("in", good)] * 5)
    seen = []
    while len(seen) < 5:
        batch = await c.read()
        out = Outputs()
        for e in c.split(batch, out):
            out.ack(e)
            seen.append(e.id)
        await c.commit(out, prefetch=True)
        if len(seen) < 5:
            assert c.has_backlog  # the next entries came back with the commit
    assert len(set(seen)) == 5 and (await r.xpending("in", "g"))["pending"] == 0
    c.close()
    await r.aclose()


async def test_read_written_after_the_commit_blocks_then_delivers(redis_url):
    """Fast path: the commit writes a blocking read after EXEC; an entry published later comes out of it."""
    r = connect(redis_url)
    c = Consumer(r, "g", "c", {"in": TickBatch}, stats_key="st", block_ms=2000)
    await c.start()
    good = encode(TickBatch([Tick("A", TickType.TRADE, 1, 1, 1.0, 1.0)]))
    pub = Publisher(r, 1000)
    await pub.publish([("in", good)])
    out = Outputs()
    for e in c.split(await c.read(), out):
        out.ack(e)
    await c.commit(out, prefetch=True)  # returns once EXEC answered, the read still blocked
    assert c.has_backlog and (await r.xpending("in", "g"))["pending"] == 0
    later = await r.xadd("in", {b"d": good})
    assert [e.id for e in await c.read()] == [later]
    assert not c.has_backlog
    # A consumer closed while its read is blocked: nothing is logged as lost; the entry stays
    # pending for this consumer and is re-delivered to it on restart.
    out = Outputs()
    out.incr("n")
    out.ack(Entry("in", later, None, b""))
    await c.commit(out, prefetch=True)
    c.close()
    pending_id = await r.xadd("in", {b"d": good})
    c2 = Consumer(r, "g", "c", {"in": TickBatch}, stats_key="st", block_ms=10)
    await c2.start()
    # Delivered to the closed read (then pending and re-read first) or still new: either way next.
    assert [e.id for e in await c2.read()] == [pending_id]
    c2.close()
    await r.aclose()


@pytest.mark.parametrize("fast_path", [True, False])
async def test_lazy_streams_are_read_with_eager_news_and_first(redis_url, fast_path):
    """Between lazy reads only eager streams are read; an eager entry brings the lazy backlog, first."""
    r = connect(redis_url)
    c = Consumer(r, "g", "c", {"ticks": TickBatch, "cmd": TickBatch}, stats_key="st", block_ms=20,
                 fast_path=fast_path)
    c.set_lazy(["ticks"], interval_ms=60_000)
    await c.start()
    good = encode(TickBatch([Tick("A", TickType.TRADE, 1, 1, 1.0, 1.0)]))
    assert await c.read() == []  # the first read includes the lazy stream and starts its interval
    t1 = await r.xadd("ticks", {b"d": good})
    assert await c.read() == []  # inside the interval: the tick waits
    t2 = await r.xadd("ticks", {b"d": good})
    k1 = await r.xadd("cmd", {b"d": good})
    batch = await c.read()
    assert [(e.stream, e.id) for e in batch] == [("ticks", t1), ("ticks", t2), ("cmd", k1)]
    out = Outputs()
    for e in c.split(batch, out):
        out.ack(e)
    k2 = await r.xadd("cmd", {b"d": good})
    await c.commit(out, prefetch=True)  # the read-ahead is eager-only too...
    t3 = await r.xadd("ticks", {b"d": good})
    # ...so the lazy news is fetched before the read-ahead eager entry is handed out.
    assert [(e.stream, e.id) for e in await c.read()] == [("ticks", t3), ("cmd", k2)]
    c.urgent = True  # e.g. an order waits for its next tick: every read includes the lazy streams
    t4 = await r.xadd("ticks", {b"d": good})
    rest = [e.id for e in await c.read()]
    assert t4 in rest
    c.close()
    await r.aclose()


def test_a_passing_refusal_is_told_apart_from_other_error_replies():
    """Refusals apply nothing and pass (the services send the same again later); other errors do not."""
    import hiredis
    from redis.exceptions import ExecAbortError, OutOfMemoryError, ReadOnlyError

    from common.bus import BusUnavailable, refused
    from common.resp import Refused, reply_error

    for text in ("OOM command not allowed when used memory > 'maxmemory'.",
                 "MISCONF Errors writing to the AOF file: No space left on device",
                 "READONLY You can't write against a read only replica.",
                 "BUSY Redis is busy running a script.", "NOREPLICAS Not enough good replicas to write.",
                 "LOADING Redis is loading the dataset in memory", "TRYAGAIN Multiple keys request during rehashing",
                 # EXEC refused when it came, every command queued (Redis 7 checks the queued commands' memory then)
                 "EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'."):
        e = reply_error(hiredis.ReplyError(text))
        assert isinstance(e, Refused) and isinstance(e, BusUnavailable) and refused(e), text
        assert str(e) == text  # the code stays in the text the logs show
    for text in ("WRONGTYPE Operation against a key holding the wrong kind of value", "ERR unknown command 'X'",
                 "NOGROUP No such key 'in' or consumer group 'g'", "EXECABORT Transaction discarded",
                 "EXECABORT Transaction discarded because of previous errors.",
                 "EXECABORT Transaction discarded because of: WRONGTYPE Operation against a key",
                 "OOMPH not a code"):
        e = reply_error(hiredis.ReplyError(text))
        assert type(e) is ResponseError and not refused(e), text
    # what redis-py raises for the same refusals (its parser's classes, or a bare ResponseError for MISCONF)
    assert refused(OutOfMemoryError("command not allowed")) and refused(ReadOnlyError("replica"))
    assert refused(ResponseError("MISCONF Errors writing to the AOF file")) and not refused(ResponseError("ERR x"))
    assert refused(ExecAbortError("Transaction discarded because of: OOM command not allowed"))
    assert not refused(ExecAbortError("Transaction discarded because of previous errors."))
    assert not refused(ConnectionError("gone"))  # unavailable, not refused: whether it applied is unknown
