"""The bus against a real Redis: batching, effectively-once commit, dead letters, recovery."""

from __future__ import annotations

import asyncio


from common import streams
from common.bus import Consumer, Outputs, Publisher, connect
from common.config import CommonSettings, load
from common.messages import Tick, TickBatch, TickType, encode
from common.service import Service, check_health

IN, OUT = "t:in", "t:out"


def _batch(sym="AAA", n=2):
    return encode(TickBatch([Tick(sym, TickType.TRADE, i + 1, i + 1, 10.0, 1.0) for i in range(n)], ts_ingest=1))


class Echo(Service):
    name = "echo"

    def input_types(self):
        return {IN: TickBatch}

    async def handle(self, entry, out):
        if entry.msg.ticks[0].symbol == "BOOM":
            raise RuntimeError("boom")
        out.incr("ticks", len(entry.msg.ticks))
        out.publish(OUT, entry.msg)


def _settings(redis_url, **kw):
    return load(CommonSettings, redis_url=redis_url, **kw)


async def _run_until(svc, cond, timeout=10.0):
    task = asyncio.create_task(svc.run())
    try:
        for _ in range(int(timeout / 0.05)):
            if await cond():
                break
            await asyncio.sleep(0.05)
    finally:
        svc.request_stop()
        rc = await asyncio.wait_for(task, 10)
    return rc


async def test_valid_processed_garbage_and_failing_dead_lettered(redis_url, clean_env):
    r = connect(redis_url)
    svc = Echo(_settings(redis_url, max_deliveries=3))
    pub = Publisher(r, 10_000)
    await pub.publish([(IN, _batch())] * 20 + [(IN, b"\x00garbage"), (IN, encode(TickBatch([Tick("BOOM", TickType.TRADE, 1, 1, 1.0, 1.0)])))])
    await r.xadd(IN, {b"x": b"no d field"})

    async def done():
        return int(await r.hget(streams.DLQ_COUNTS, IN) or 0) >= 3

    rc = await _run_until(svc, done, timeout=15)
    assert rc == 0
    assert await r.xlen(OUT) == 20
    stats = await r.hgetall(streams.stats_key("echo"))
    assert int(stats[b"ticks"]) == 40 and int(stats[b"dead_letters"]) == 3
    reasons = sorted(e[1][b"reason"].decode()[:10] for e in await r.xrange(streams.dlq_stream(IN)))
    assert reasons == ["decode: Ex", "handler fa", "missing fi"]
    assert (await r.xpending(IN, "echo"))["pending"] == 0
    await r.aclose()


async def test_commit_is_atomic_publish_and_ack(redis_url, clean_env):
    r = connect(redis_url)
    c = Consumer(r, "g", "c1", {IN: TickBatch}, stats_key="stats:g", block_ms=10)
    await c.start()
    await Publisher(r, 1000).publish([(IN, _batch())] * 3)
    batch = await c.read()
    assert len(batch) == 3
    out = Outputs()
    for e in c.split(batch, out):
        out.publish(OUT, e.msg)
        out.ack(e)
    assert (await r.xpending(IN, "g"))["pending"] == 3 and await r.xlen(OUT) == 0
    await c.commit(out)
    assert (await r.xpending(IN, "g"))["pending"] == 0 and await r.xlen(OUT) == 3
    await r.aclose()


async def test_restarted_consumer_redelivers_its_pending_entries_first(redis_url, clean_env):
    r = connect(redis_url)
    c1 = Consumer(r, "g", "same", {IN: TickBatch}, stats_key="stats:g", block_ms=10)
    await c1.start()
    await Publisher(r, 1000).publish([(IN, _batch())] * 4)
    first = await c1.read()  # "crash" before commit
    assert len(first) == 4
    c2 = Consumer(r, "g", "same", {IN: TickBatch}, stats_key="stats:g", block_ms=10)
    await c2.start()
    again = await c2.read()
    assert [e.id for e in again] == [e.id for e in first]
    assert all(e.deliveries == 2 for e in again)
    await r.aclose()


async def test_abandoned_entries_of_a_dead_consumer_are_claimed(redis_url, clean_env):
    r = connect(redis_url)
    dead = Consumer(r, "g", "dead", {IN: TickBatch}, stats_key="stats:g", block_ms=10)
    await dead.start()
    await Publisher(r, 1000).publish([(IN, _batch())] * 2)
    assert len(await dead.read()) == 2
    alive = Consumer(r, "g", "alive", {IN: TickBatch}, stats_key="stats:g", block_ms=10, claim_idle_ms=1)
    await asyncio.sleep(0.01)
    await alive.start()
    assert len(await alive.read()) == 2
    await r.aclose()


async def test_nogroup_after_flush_recovers_without_hot_loop(redis_url, clean_env):
    r = connect(redis_url)
    c = Consumer(r, "g", "c", {IN: TickBatch}, stats_key="stats:g", block_ms=10)
    await c.start()
    await r.flushdb()
    assert await c.read() == []  # recreated the group instead of raising
    await Publisher(r, 1000).publish([(IN, _batch())])
    assert len(await c.read()) == 1
    await r.aclose()


async def test_health_key_and_graceful_stop(redis_url, clean_env):
    r = connect(redis_url)
    s = _settings(redis_url)
    svc = Echo(s)
    task = asyncio.create_task(svc.run())
    ok = False
    for _ in range(100):
        ok, _msg = await check_health(s, "echo")
        if ok:
            break
        await asyncio.sleep(0.05)
    assert ok
    # a container's healthcheck (--check --self) asks for its own instance only
    assert (await check_health(s, "echo", instance=svc.instance))[0]
    ok_other, msg = await check_health(s, "echo", instance="another-replica")
    assert not ok_other and "another-replica: no fresh health key" in msg
    svc.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert not (await check_health(s, "echo"))[0]
    assert await r.xlen(streams.HEARTBEATS) >= 1
    await r.aclose()


async def test_a_prefetched_batch_is_never_also_redelivered_by_the_retry_scan(redis_url, clean_env):
    """A commit's read-ahead delivers entries; if the stage then stalls past ``retry_idle_ms`` (a slow
    database, a Redis outage in its after-commit work), those entries are pending and idle, and the
    retry scan must not hand them out a second time: the read-ahead's reply comes first."""
    r = connect(redis_url)
    c = Consumer(r, "g", "c1", {IN: TickBatch}, stats_key="stats:t", retry_idle_ms=200, claim_idle_ms=200)
    try:
        await c.start()
        await r.xadd(IN, {b"d": _batch("AAA")})
        first = await c.read()
        assert [e.msg.ticks[0].symbol for e in first] == ["AAA"]
        await r.xadd(IN, {b"d": _batch("BBB")})  # there before the commit: its read-ahead takes it
        out = Outputs()
        out.incr("ticks", 2)
        for e in first:
            out.ack(e)
        await c.commit(out, prefetch=True)
        assert c.has_backlog  # the read-ahead is on its way
        await asyncio.sleep(0.5)  # the stall: BBB is now pending and idle longer than retry_idle_ms
        seen = []
        for _ in range(6):
            batch = await c.read()
            seen += [e.msg.ticks[0].symbol for e in batch]
            if batch:
                out = Outputs()
                for e in batch:
                    out.ack(e)
                await c.commit(out)
            await asyncio.sleep(0.25)  # past both scans' intervals again
        assert seen == ["BBB"]
    finally:
        c.close()
        await r.aclose()


def _consumer(r, name="same", **kw):
    return Consumer(r, "g", name, {IN: TickBatch}, stats_key="stats:g", block_ms=10, max_deliveries=3, **kw)


def _handle(c, batch):
    """What a service does with a batch it survives: split (poison out), ack the rest."""
    out = Outputs()
    good = c.split(batch, out)
    for e in good:
        out.ack(e)
    return out, good


async def test_restarts_alone_never_dead_letter_an_entry_however_often(redis_url, clean_env):
    """Killed over and over while entries are pending but before handling them (starting up, waiting on
    something else), a consumer raises Redis' delivery count of each at every start: that is no sign of a
    poison entry, and once it survives long enough every entry is handled, none dead-lettered (RELIABILITY D1)."""
    r = connect(redis_url)
    await _consumer(r).start()
    await Publisher(r, 1000).publish([(IN, _batch("AAA")), (IN, _batch("BBB"))])
    assert len(await _consumer(r).read()) == 2  # delivered, then the process dies before handling
    for _ in range(8):  # dies at every start, after re-reading its pending entries, before handing any out
        await _consumer(r).start()
    c = _consumer(r)
    await c.start()
    batch = await c.read()
    assert [e.msg.ticks[0].symbol for e in batch] == ["AAA", "BBB"] and min(e.deliveries for e in batch) > 3
    out, good = _handle(c, batch)
    assert len(good) == 2 and not out.dead
    await c.commit(out)
    assert (await r.xpending(IN, "g"))["pending"] == 0
    assert not await r.exists(streams.inflight_key("g"), streams.strikes_key("g"))
    await r.aclose()


async def test_an_entry_the_consumer_dies_on_is_isolated_and_dead_lettered_alone(redis_url, clean_env):
    """A poison entry that kills the process every time it is handled: its batch neighbours each get one strike
    at most and are handled; handed out alone after its first strike, the poison entry collects the rest and
    goes to the dead-letter stream at ``max_deliveries`` strikes (RELIABILITY E2 for a crash, not an exception)."""
    r = connect(redis_url)
    await _consumer(r).start()
    await Publisher(r, 1000).publish([(IN, _batch(s)) for s in ("AAA", "BOOM", "CCC")])
    assert len(await _consumer(r).read()) == 3  # first delivery: the process dies handling it (no marker yet)
    handled: list[str] = []
    deaths = 0
    for _ in range(20):
        c = _consumer(r)
        await c.start()
        while True:
            batch = await c.read()
            if not batch:
                break
            out, good = _handle(c, batch)
            if any(e.msg.ticks[0].symbol == "BOOM" for e in good):
                deaths += 1  # dies handling it: nothing committed, the marker stays
                break
            handled += [e.msg.ticks[0].symbol for e in good]
            await c.commit(out)
        else:
            continue
        if not batch:
            break
    assert sorted(handled) == ["AAA", "CCC"]
    # after the unmarked first death: once with its neighbours (a strike each), then alone up to its 3rd strike
    assert deaths == 3
    dlq = await r.xrange(streams.dlq_stream(IN))
    assert len(dlq) == 1 and dlq[0][1][b"reason"] == b"poison: 3 strikes, the last a death of the consumer while handling it"
    assert (await r.xpending(IN, "g"))["pending"] == 0
    assert not await r.exists(streams.inflight_key("g"), streams.strikes_key("g"))
    await r.aclose()


async def test_strikes_follow_an_entry_claimed_from_a_consumer_that_died_handling_it(redis_url, clean_env):
    """Another consumer claiming a dead consumer's entries counts that consumer's death against the entries it
    was handling (its marker), not against those it only held."""
    r = connect(redis_url)
    dead = _consumer(r, "dead")
    await dead.start()
    await Publisher(r, 1000).publish([(IN, _batch("AAA")), (IN, _batch("BBB"))])
    assert len(await dead.read()) == 2
    dead.close()
    again = _consumer(r, "dead")
    await again.start()  # re-reads both: suspects now
    first = await again.read()
    assert len(first) == 2  # marked: handling them when it dies for good
    alive = _consumer(r, "alive", claim_idle_ms=1)
    await asyncio.sleep(0.01)
    await alive.start()
    assert {k: int(v) for k, v in (await r.hgetall(streams.strikes_key("g"))).items()} == {
        f"{IN}\x00{e.id.decode()}".encode(): 1 for e in first}
    one = await alive.read()
    assert len(one) == 1  # a struck suspect goes alone
    out, good = _handle(alive, one)
    await alive.commit(out)
    assert len(await r.hgetall(streams.strikes_key("g"))) == 1  # the acked one's strike is gone
    await r.aclose()


async def test_handler_failures_are_strikes_kept_across_restarts_and_not_inflated_by_them(redis_url, clean_env):
    """A handler that raised once has one strike, in Redis: restarts re-read the entry (its delivery count grows)
    but add no strike, so it is not dead-lettered before it failed ``max_deliveries`` times."""
    r = connect(redis_url)
    c = _consumer(r)
    await c.start()
    await Publisher(r, 1000).publish([(IN, _batch("BOOM")), (IN, _batch("AAA"))])
    boom, fine = await c.read()
    out = Outputs()
    out.fail(boom)  # what Service.process does when the handler raises
    out.ack(fine)
    await c.commit(out)
    assert c.strikes(boom) == 1 and c.strikes(fine) == 0
    for _ in range(5):
        await _consumer(r).start()  # each restart re-reads it
    c = _consumer(r)
    await c.start()
    (again,) = await c.read()
    assert again.id == boom.id and again.deliveries > 3 and c.strikes(again) == 1
    out, good = _handle(c, [again])
    assert good == [again] and not out.dead  # handed to the handler again, not dead-lettered
    await c.commit(out)
    assert not await r.exists(streams.strikes_key("g"), streams.inflight_key("g"))
    await r.aclose()


async def test_a_failed_entry_trimmed_away_while_pending_is_acked_and_its_strike_forgotten(redis_url, clean_env):
    r = connect(redis_url)
    c = _consumer(r, retry_idle_ms=50)
    await c.start()
    await Publisher(r, 1000).publish([(IN, _batch("BOOM"))])
    (boom,) = await c.read()
    out = Outputs()
    out.fail(boom)
    await c.commit(out)
    assert await r.hlen(streams.strikes_key("g")) == 1
    await r.xdel(IN, boom.id)  # trimmed (MAXLEN) while pending
    await asyncio.sleep(0.1)
    assert await c.read() == []  # the retry scan finds nothing left to retry
    assert (await r.xpending(IN, "g"))["pending"] == 0
    assert not await r.exists(streams.strikes_key("g")) and c.strikes(boom) == 0
    await r.aclose()
