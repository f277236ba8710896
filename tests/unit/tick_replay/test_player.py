"""Publishing into a real Redis: shard mapping, batching, stamps, pacing, stopping, capping."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from common.bus import DATA_FIELD
from common.messages import TickBatch, check, decode_as
from common.streams import shard_for, ticks_stream
from tick_replay import open_ticks, replay, synthetic_ticks


def _entries(url: str, shards: int) -> dict[int, list[tuple[bytes, TickBatch]]]:
    r = redis.Redis.from_url(url)
    try:
        return {
            s: [(eid, decode_as(f[DATA_FIELD], TickBatch)) for eid, f in r.xrange(ticks_stream(s))]
            for s in range(shards)
        }
    finally:
        r.close()


async def test_max_speed_publishes_every_tick_once_on_its_shard(redis_url):
    ticks = list(synthetic_ticks(5000, symbols=6, seed=5))
    before = time.time_ns()
    summary = await replay(redis_url, ticks, speed=None, shards=3, batch_max=64, progress=False)
    after = time.time_ns()
    got = _entries(redis_url, 3)
    assert summary.ticks == 5000 and summary.entries == sum(len(v) for v in got.values())
    assert summary.per_symbol == {s: sum(t.symbol == s for t in ticks) for s in {t.symbol for t in ticks}}
    assert summary.first_ts_event == ticks[0].ts_event and summary.last_ts_event == ticks[-1].ts_event
    seen = []
    for shard, entries in got.items():
        assert summary.per_stream.get(ticks_stream(shard), 0) == len(entries)
        for _, batch in entries:
            assert check(batch) is None  # what the consumers' semantic check accepts
            assert 1 <= len(batch.ticks) <= 64
            assert before <= batch.ts_ingest <= after
            for t in batch.ticks:
                assert shard_for(t.symbol, 3) == shard
                assert t.ts_ingest == 0
            seen.extend(batch.ticks)
    assert len(seen) == 5000
    # Per symbol, the bus order is the replay order.
    for sym in summary.per_symbol:
        assert [t for shard in got.values() for _, b in shard for t in b.ticks if t.symbol == sym] == [
            t for t in ticks if t.symbol == sym
        ]
    assert summary.max_batch == 64 and summary.ticks_per_s > 0
    assert summary.to_dict()["speed"] == "max"


async def test_ts_ingest_is_stamped_per_entry_in_stream_order(redis_url):
    await replay(redis_url, synthetic_ticks(20_000, seed=1), speed=None, batch_max=16, progress=False)
    entries = _entries(redis_url, 1)[0]
    stamps = [b.ts_ingest for _, b in entries]
    assert len(entries) == 1250 and stamps == sorted(stamps)


async def test_paced_replay_keeps_time_without_drift(redis_url):
    ticks = list(synthetic_ticks(200, symbols=4, seed=9))
    span = (ticks[-1].ts_event - ticks[0].ts_event) / 1e9
    speed = span / 0.5  # the whole replay should take about 0.5 s
    t0 = time.time_ns()
    summary = await replay(redis_url, ticks, speed=speed, progress=False)
    assert summary.ticks == 200
    assert 0.48 <= summary.duration_s <= 1.0, summary.duration_s
    entries = _entries(redis_url, 1)[0]
    # Natural batching: at ~400 ticks/s most entries hold a single tick.
    sizes = [len(b.ticks) for _, b in entries]
    assert sum(sizes) == 200 and sum(1 for s in sizes if s == 1) > 0.6 * len(sizes)
    # Every tick reaches the bus no earlier than due and not much later (open loop, no drift).
    start = min(b.ts_ingest for _, b in entries)
    ts0 = ticks[0].ts_event
    lags = []
    for _, b in entries:
        for t in b.ticks:
            due = (t.ts_event - ts0) / 1e9 / speed
            lags.append((b.ts_ingest - start) / 1e9 - due)
    assert min(lags) > -0.002, min(lags)
    assert sorted(lags)[len(lags) // 2] < 0.02  # median lateness (a few ms on an idle machine)
    assert lags[-1] < 0.1  # the end is on time too: nothing accumulated
    assert start - t0 < 0.2e9


async def test_stop_event_ends_a_paced_replay_early(redis_url):
    stop = asyncio.Event()
    ticks = synthetic_ticks(10_000, seed=2)  # ~10 s of market time at speed 1
    asyncio.get_running_loop().call_later(0.3, stop.set)
    t0 = time.perf_counter()
    summary = await replay(redis_url, ticks, speed=1.0, progress=False, stop=stop)
    assert time.perf_counter() - t0 < 1.5
    assert summary.interrupted and 0 < summary.ticks < 10_000
    assert sum(len(b.ticks) for _, b in _entries(redis_url, 1)[0]) == summary.ticks


async def test_streams_are_capped(redis_url):
    await replay(redis_url, synthetic_ticks(5000, seed=3), speed=None, batch_max=1, maxlen=1000, progress=False)
    r = redis.Redis.from_url(redis_url)
    try:
        assert 1000 <= r.xlen(ticks_stream(0)) < 1300  # MAXLEN ~ trims whole nodes
    finally:
        r.close()


async def test_file_replay_reports_reader_stats(redis_url, lean_tick):
    src = open_ticks([lean_tick / "20131009_ibm_Trade_Tick.csv.gz"])
    summary = await replay(redis_url, src, speed=None, shards=2, progress=False)
    d = summary.to_dict()
    assert d["ticks"] == 27_042 and d["per_symbol"] == {"IBM": 27_042}
    assert d["reader_stats"][0]["format"] == "lean_trade" and d["reader_stats"][0]["rows"] == 27_042
    got = _entries(redis_url, 2)
    assert sum(len(b.ticks) for _, b in got[shard_for("IBM", 2)]) == 27_042
    assert all(check(b) is None for entries in got.values() for _, b in entries)


@pytest.mark.parametrize("speed", [0.0, -1.0])
async def test_bad_speed_is_refused(redis_url, speed):
    with pytest.raises(ValueError):
        await replay(redis_url, [], speed=speed, progress=False)


async def test_lockstep_waits_for_the_pipeline_to_drain_before_each_batch(redis_url):
    from common.bus import connect

    r = connect(redis_url)
    stream = ticks_stream(0)
    await r.xgroup_create(stream, "slow", id="0", mkstream=True)
    outstanding_max = 0
    seen = 0
    done = asyncio.Event()

    async def slow_consumer():
        nonlocal outstanding_max, seen
        while not done.is_set():
            resp = await r.xreadgroup("slow", "c", {stream: ">"}, count=100, block=20)
            for _s, items in resp or []:
                outstanding_max = max(outstanding_max, len(items))
                await asyncio.sleep(0.03)  # a slow stage
                await r.xack(stream, "slow", *[i for i, _ in items])
                seen += len(items)

    task = asyncio.create_task(slow_consumer())
    summary = await replay(redis_url, synthetic_ticks(50, symbols=2, seed=1), speed=None, batch_max=10,
                           progress=False, lockstep=True)
    done.set()
    await task
    assert summary.ticks == 50 and summary.entries == 5
    # never more than one entry was waiting: each batch went out only after the last was acked
    assert outstanding_max == 1 and seen == 5
    info = await r.xinfo_groups(stream)
    assert info[0]["pending"] == 0
    await r.aclose()
