"""The service on a real Redis: ticks in, signals out, counters, dead letters, graceful stop."""

from __future__ import annotations

import asyncio
import math
import os
import time

import msgspec
import pytest
import redis.asyncio as aioredis

from common import streams
from common.bus import DATA_FIELD
from common.config import CommonSettings, load
from common.messages import Signal, TickBatch, decode_as, encode
from pattern_engine.config import PatternEngineSettings
from pattern_engine.engine import PatternEngine
from pattern_engine.pattern_config import parse_pattern_config
from pattern_engine.service import PatternEngineService
from tests.unit.pattern_engine.stubs import TickMaker, noise, stable

GROUP = streams.GROUP_PATTERN
TICKS = streams.ticks_stream(0)
DLQ = streams.dlq_stream(TICKS)
STATS = streams.stats_key("pattern_engine")

PATTERN = parse_pattern_config({"detectors": {
    "imbalance": {"warmup": 10, "persist": 5, "cooldown": 40},
    "mean_reversion": {"warmup": 50, "threshold": 4.0, "cooldown": 50},
}})


def scenario(symbols: tuple[str, ...] = ("AAA", "BBB")) -> list[TickBatch]:
    """Batches of quiet trading, a bid-heavy book and a price jump per symbol: several signals."""
    mk = TickMaker()
    ticks = []
    for i, sym in enumerate(symbols):
        ticks += noise(mk, sym, 120, quotes=False, seed=i)
        ticks += [mk.quote(sym, 99.99, 100.01, 900.0, 50.0) for _ in range(30)]
        ticks += [mk.trade(sym, 101.0, 10.0) for _ in range(3)]
    return [TickBatch(ticks=ticks[i : i + 25]) for i in range(0, len(ticks), 25)]


def stamped(batches: list[TickBatch]) -> list[TickBatch]:
    now = time.time_ns()
    return [TickBatch(ticks=b.ticks, ts_ingest=now) for b in batches]


async def start(redis_url: str, **common: object) -> tuple[PatternEngineService, asyncio.Task]:
    common = load(CommonSettings, redis_url=redis_url, instance="pe-test", heartbeat_s=0.2, block_ms=5, **common)
    svc = PatternEngineService(common, load(PatternEngineSettings, shards="0"), PATTERN)
    return svc, asyncio.create_task(svc.run(), name="pe-under-test")


async def wait_for(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def counters(r: aioredis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await r.hgetall(STATS)).items()}


async def signals(r: aioredis.Redis) -> list[Signal]:
    return [decode_as(f[DATA_FIELD], Signal) for _, f in await r.xrange(streams.SIGNALS)]


async def publish(r: aioredis.Redis, payloads: list[bytes]) -> None:
    for p in payloads:
        await r.xadd(TICKS, {DATA_FIELD: p})


@pytest.fixture
async def r(redis_url, clean_env):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_ticks_become_signals_with_counters_latency_and_a_clean_stop(r, redis_url):
    batches = stamped(scenario())
    reference = PatternEngine(PATTERN)
    expected = [s for b in batches for s in reference.on_batch(b)]
    assert len(expected) >= 4
    n_ticks = sum(len(b.ticks) for b in batches)

    svc, task = await start(redis_url)
    await publish(r, [encode(b) for b in batches])
    await wait_for(lambda: _ticks_done(r, n_ticks))

    got = await signals(r)
    assert stable(got) == stable(expected)
    assert all(s.ts_signal >= s.ts_ingest == batches[0].ts_ingest for s in got)
    c = await counters(r)
    assert c["ticks"] == n_ticks
    assert c["signals"] == len(expected)
    for det in ("imbalance", "mean_reversion"):
        assert c[f"signals.{det}"] == sum(s.detector == det for s in expected)
    h = svc.hist("tick_to_signal")
    assert h.count == len(expected) and 1 <= h.percentile(50) < 10_000_000

    svc.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    pending = await r.xpending(TICKS, GROUP)
    assert pending["pending"] == 0
    assert await r.hget(streams.latency_key("tick_to_signal"), "pe-test")  # saved on the way out
    assert not await r.exists(streams.health_key("pattern_engine", "pe-test"))


async def _ticks_done(r: aioredis.Redis, n: int) -> bool:
    return (await counters(r)).get("ticks", 0) >= n


def _mutate(batch: TickBatch, tick_field: int, value) -> bytes:
    """Re-encode ``batch`` with field ``tick_field`` of its first tick replaced (bypassing validation)."""
    raw = msgspec.msgpack.decode(encode(batch))
    raw[1][0][tick_field] = value
    return msgspec.msgpack.encode(raw)


async def test_malformed_entries_are_dead_lettered_while_valid_ticks_flow(r, redis_url):
    batches = stamped(scenario(("AAA",)))
    good_one = batches[0]
    bad = [
        os.urandom(64),  # random bytes
        b"\x93\xa3abc",  # truncated msgpack
        encode(good_one.ticks[0]),  # a lone Tick where a TickBatch belongs
        msgspec.msgpack.encode({"kind": "ticks", "ticks": []}),  # a map, not the positional array
        _mutate(good_one, 2, 9),  # unknown tick type
        _mutate(good_one, 5, math.nan),  # NaN price
        _mutate(good_one, 1, ""),  # empty symbol
        _mutate(good_one, 3, 2**63),  # ts_event beyond int64: decodes, but the engine cannot hold it
    ]
    payloads = []
    for i, b in enumerate(batches):
        payloads.append(encode(b))
        if i < len(bad):
            payloads.append(bad[i])
    payloads.extend(bad[len(batches):])
    reference = PatternEngine(PATTERN)
    expected = [s for b in batches for s in reference.on_batch(b)]
    assert len(expected) >= 2
    n_ticks = sum(len(b.ticks) for b in batches)

    svc, task = await start(redis_url)
    await publish(r, payloads)
    await r.xadd(TICKS, {b"x": b"no d field"})
    await wait_for(lambda: _dlq_len(r, len(bad) + 1))
    await wait_for(lambda: _ticks_done(r, n_ticks))

    dead = await r.xrange(DLQ)
    reasons = [f[b"reason"].decode() for _, f in dead]
    assert all(reasons) and len(dead) == len(bad) + 1
    assert sum(rs.startswith("decode") for rs in reasons) == 7  # random, truncated, tick, map, enum, NaN, ""
    assert any("unprocessable" in rs and "OverflowError" in rs for rs in reasons)
    assert any("missing field" in rs for rs in reasons)
    assert stable(await signals(r)) == stable(expected)
    c = await counters(r)
    assert c["ticks"] == n_ticks and c["dead_letters"] == len(bad) + 1
    assert int(await r.hget(streams.DLQ_COUNTS, TICKS)) == len(bad) + 1

    svc.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert (await r.xpending(TICKS, GROUP))["pending"] == 0


async def _dlq_len(r: aioredis.Redis, n: int) -> bool:
    return await r.xlen(DLQ) >= n


async def test_restart_rebuilds_state_and_consumes_only_new_entries(r, redis_url):
    batches = stamped(scenario())
    half = len(batches) // 2
    svc, task = await start(redis_url)
    await publish(r, [encode(b) for b in batches[:half]])
    await wait_for(lambda: _ticks_done(r, sum(len(b.ticks) for b in batches[:half])))
    svc.request_stop()
    assert await asyncio.wait_for(task, 10) == 0

    svc2, task2 = await start(redis_url)
    await publish(r, [encode(b) for b in batches[half:]])
    total = sum(len(b.ticks) for b in batches)
    await wait_for(lambda: _ticks_done(r, total))
    svc2.request_stop()
    assert await asyncio.wait_for(task2, 10) == 0
    assert (await counters(r))["ticks"] == total  # nothing processed twice
    # The second run started cold: its state only knows the ticks it saw.
    assert svc2.engine.ticks_seen == total - sum(len(b.ticks) for b in batches[:half])
    ids = [s.signal_id for s in await signals(r)]
    assert ids and len(ids) == len(set(ids))


async def test_stop_mid_stream_commits_the_current_batch_and_leaves_the_rest_unread(r, redis_url):
    mk = TickMaker()
    batches = [TickBatch(ticks=noise(mk, f"S{i % 7}", 10, quotes=False, seed=i), ts_ingest=time.time_ns())
               for i in range(2000)]  # 10 ticks each
    await publish(r, [encode(b) for b in batches])
    svc, task = await start(redis_url, read_count=1)  # many small cycles: the stop lands mid-stream
    await wait_for(lambda: _ticks_done(r, 1))
    svc.request_stop()
    assert await asyncio.wait_for(task, 10) == 0

    assert (await r.xpending(TICKS, GROUP))["pending"] == 0  # everything read was acked
    (group,) = await r.xinfo_groups(TICKS)
    delivered = len(await r.xrange(TICKS, "-", group["last-delivered-id"]))
    assert 0 < delivered < len(batches)
    assert (await counters(r))["ticks"] == 10 * delivered  # counters committed with the acks

    svc2, task2 = await start(redis_url)  # the next run picks up exactly where it stopped
    await wait_for(lambda: _ticks_done(r, 10 * len(batches)))
    svc2.request_stop()
    assert await asyncio.wait_for(task2, 10) == 0
    assert (await counters(r))["ticks"] == 10 * len(batches)
