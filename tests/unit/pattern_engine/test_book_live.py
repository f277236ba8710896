"""Order-book imbalance on the live path: BookUpdates in TickBatches → engine books → obi_<N> model columns."""

from __future__ import annotations

import math
import random

import msgspec
import numpy as np
import pytest

from common.config import ConfigError
from common.messages import (
    MAX_BOOK_LEVELS,
    BookUpdate,
    DecodeError,
    Tick,
    TickBatch,
    TickType,
    decode_as,
    encode,
)
from pattern_engine.batch_features import compute_features
from pattern_engine.book import book_series
from pattern_engine.detectors import BatchContext, BatchDetector, Detection
from pattern_engine.engine import PatternEngine
from pattern_engine.features import FEATURES, FeatureParams, model_columns
from pattern_engine.pattern_config import PatternConfig, parse_pattern_config
from tests.onnx_models import make_bundle
from tick_replay import open_ticks
from tick_replay.player import ReplaySummary, _Out

SYM = "BTCUSDT"


class Recorder(BatchDetector):
    """Records what the model seam hands a detector: (symbol, last tick, feature row) per row."""

    type_name = "test_recorder"

    def __init__(self, name: str = "rec") -> None:
        super().__init__(name, BatchDetector.Params(warmup=0, cooldown=0))
        self.rows: list[tuple[str, Tick, np.ndarray]] = []
        self.widths: set[int] = set()

    def evaluate(self, ctx: BatchContext) -> list[Detection]:
        self.widths.add(ctx.features.shape[1])
        self.rows += [(s, t, ctx.features[i].copy()) for i, (s, t) in enumerate(zip(ctx.symbols, ctx.last))]
        return []


def engine(levels=(1, 2), rec: Recorder | None = None) -> tuple[PatternEngine, Recorder]:
    rec = rec or Recorder()
    cfg = PatternConfig(features=FeatureParams(book_levels=list(levels)), detectors=(rec,))
    return PatternEngine(cfg), rec


def tick(ts: int, seq: int, sym: str = SYM) -> Tick:
    return Tick(sym, TickType.QUOTE, ts, seq, bid=100.0, bid_size=1.0, ask=101.0, ask_size=1.0)


def book(ts: int, bids=(), asks=(), snapshot=False, sym=SYM, seq=0, first=0, last=0, prev=0) -> BookUpdate:
    return BookUpdate(sym, ts, seq, snapshot, first, last, prev, list(bids), list(asks))


def obi(rec: Recorder, k: int = -1, n: int = 1, levels=(1, 2)) -> float:
    return float(rec.rows[k][2][len(FEATURES) + list(levels).index(n)])


# -- the seam ------------------------------------------------------------------------------------------


def test_book_levels_add_obi_columns_after_the_features():
    cols = model_columns(FeatureParams(book_levels=[1, 5, 10]))
    assert list(cols)[: len(FEATURES)] == list(FEATURES)
    assert [(k, v) for k, v in cols.items() if k.startswith("obi_")] == [
        ("obi_1", len(FEATURES)), ("obi_5", len(FEATURES) + 1), ("obi_10", len(FEATURES) + 2)]
    assert model_columns(FeatureParams()) == {n: i for i, n in enumerate(FEATURES)}
    with pytest.raises(ConfigError, match="features.book_levels"):
        parse_pattern_config({"features": {"book_levels": [5, 5]}})
    with pytest.raises(ConfigError, match="features.book_levels.0"):
        parse_pattern_config({"features": {"book_levels": [0]}})
    # Not a kernel setting: bundles record model_dump() as feature_params (numbers only).
    assert "book_levels" not in FeatureParams(book_levels=[1]).model_dump()


def test_without_book_levels_book_messages_are_ignored_and_the_matrix_is_unchanged():
    eng, rec = engine(levels=())
    eng.on_batch(TickBatch([tick(20, 1)], books=[book(10, [(100.0, 3.0)], [(101.0, 1.0)], snapshot=True)]))
    assert rec.widths == {len(FEATURES)} and eng.book_updates == 0 and eng.obi(SYM) is None


# -- the order rule -----------------------------------------------------------------------------------


def test_a_tick_sees_the_book_messages_stamped_at_or_before_it_in_its_batch():
    eng, rec = engine()
    snap = book(10, [(100.0, 3.0), (99.0, 1.0)], [(101.0, 1.0), (102.0, 1.0)], snapshot=True)
    same_instant = book(20, [(100.0, 1.0)])  # obi_1 = 0
    later = book(30, [(100.0, 7.0)])  # obi_1 = 0.75
    eng.on_batch(TickBatch([tick(20, 1)], books=[snap, same_instant, later]))
    assert obi(rec) == 0.0 and obi(rec, n=2) == pytest.approx((2 - 2) / 4)
    assert eng.obi(SYM) == {"obi_1": 0.75, "obi_2": pytest.approx((8 - 2) / 10)}  # held for the next batch
    eng.on_batch(TickBatch([tick(35, 2)]))  # no book message: the book as of the last one
    assert obi(rec) == 0.75
    # Book messages of another symbol, and messages after a symbol's last tick, do not move its row.
    eng.on_batch(TickBatch([tick(40, 3), tick(41, 1, "ETHUSDT")], books=[
        book(40, [(100.0, 1.0)]), book(41, [(10.0, 1.0)], [(11.0, 3.0)], snapshot=True, sym="ETHUSDT"),
        book(45, [(100.0, 3.0)])]))
    rows = {s: r for s, _, r in rec.rows[-2:]}
    assert rows[SYM][len(FEATURES)] == 0.0 and rows["ETHUSDT"][len(FEATURES)] == -0.5
    assert eng.obi(SYM)["obi_1"] == 0.5


def test_a_micro_batch_of_several_entries_gives_the_rows_entry_by_entry_would():
    events: list = [book(10, [(100.0, 3.0)], [(101.0, 1.0)], snapshot=True)]
    for i in range(1, 60):  # book messages and ticks, some stamped the same instant (book first)
        events.append(book(10 + i, [(100.0, float(i % 5 + 1))]))
        events.append(tick(10 + i + (i % 2), i))
    entries = _entries(events, 9)
    assert any(e.books and e.ticks for e in entries)
    one, rec1 = engine()
    for e in entries:
        one.on_batch(e)
    many, rec2 = engine()
    for i in range(0, len(entries), 4):
        many.on_batches(entries[i : i + 4])
    by_seq = {t.seq: r[len(FEATURES):].tolist() for _, t, r in rec1.rows}
    assert len(rec2.rows) == math.ceil(len(entries) / 4)
    assert [r[len(FEATURES):].tolist() for _, _, r in rec2.rows] == [by_seq[t.seq] for _, t, _ in rec2.rows]


def test_a_batch_of_book_messages_only_updates_the_book():
    eng, rec = engine()
    assert eng.on_batch(TickBatch([], books=[book(10, [(100.0, 1.0)], [(101.0, 3.0)], snapshot=True)])) == []
    assert eng.obi(SYM) == {"obi_1": -0.5, "obi_2": -0.5} and rec.rows == []


# -- book states ---------------------------------------------------------------------------------------


def test_plain_l2_waits_for_a_snapshot_then_applies_deltas():
    eng, rec = engine()
    eng.on_batch(TickBatch([tick(5, 1)], books=[book(1, [(100.0, 1.0)], [(101.0, 1.0)])]))  # delta, no snapshot
    assert math.isnan(obi(rec)) and eng.book_stats()[SYM]["unsynced"] == 1
    eng.on_batch(TickBatch([tick(15, 2)], books=[
        book(10, [(100.0, 1.0), (99.0, 1.0)], [(101.0, 1.0)], snapshot=True), book(12, [(99.0, 0.0), (98.0, 5.0)])]))
    assert obi(rec) == 0.0 and obi(rec, n=2) == pytest.approx((6 - 1) / 7)


def test_binance_ids_gap_gives_nan_until_the_next_snapshot():
    eng, rec = engine()
    snap = book(10, [(100.0, 3.0)], [(101.0, 1.0)], snapshot=True, last=100)
    eng.on_batch(TickBatch([tick(11, 1)], books=[
        book(5, [(100.0, 9.0)], first=90, last=95),  # before the snapshot, already in it: stale
        snap, book(11, [(100.0, 1.0)], first=99, last=104)]))
    assert obi(rec) == 0.0
    eng.on_batch(TickBatch([tick(13, 2)], books=[book(12, [(100.0, 3.0)], first=106, last=110)]))  # 105 missing
    assert math.isnan(obi(rec)) and eng.book_stats()[SYM]["gaps"] == 1
    eng.on_batch(TickBatch([tick(14, 3)], books=[book(14, [(100.0, 5.0)], first=111, last=112)]))  # still out
    assert math.isnan(obi(rec))
    eng.on_batch(TickBatch([tick(21, 4)], books=[
        book(20, [(100.0, 1.0)], [(101.0, 3.0)], snapshot=True, last=120), book(21, [], [(101.0, 1.0)], first=121,
                                                                                    last=121)]))
    assert obi(rec) == 0.0 and eng.book_stats()[SYM]["stale"] >= 1


def test_bad_levels_and_crossing_messages_are_counted_never_raised():
    eng, rec = engine()
    eng.on_batch(TickBatch([tick(30, 1)], books=[
        book(10, [(100.0, 3.0), (math.nan, 1.0), (-1.0, 1.0)], [(101.0, 1.0), (102.0, math.inf)], snapshot=True),
        book(20, [(101.5, 1.0)]),  # would cross the 101 ask: rolled back whole
        book(25, [(100.0, -2.0)])]))  # negative qty: skipped
    assert obi(rec) == 0.5
    st = eng.book_stats()[SYM]
    assert st["bad_levels"] == 4 and st["crossed"] == 1
    eng.reset()  # after an internal error: books are dropped with the rest
    eng.on_batch(TickBatch([tick(40, 2)]))
    assert math.isnan(obi(rec)) and eng.book_stats() == {}


# -- wire -----------------------------------------------------------------------------------------------


class _OldTickBatch(msgspec.Struct, tag="ticks", array_like=True, frozen=True, tag_field="kind"):
    ticks: list[Tick]
    ts_ingest: int = 0
    v: int = 1


class _LooseTickBatch(msgspec.Struct, tag="ticks", array_like=True, frozen=True, tag_field="kind"):
    ticks: list[Tick]
    ts_ingest: int = 0
    v: int = 1
    books: list = []


def test_old_payloads_decode_and_books_round_trip():
    old = encode(_OldTickBatch([tick(1, 1)], 7))
    b = decode_as(old, TickBatch)
    assert b.books == [] and b.ticks == [tick(1, 1)] and b.ts_ingest == 7
    new = TickBatch([tick(1, 1)], 7, books=[book(1, [(100.0, 1.5)], [(101.0, 2.0)], snapshot=True, last=9)])
    assert decode_as(encode(new), TickBatch) == new
    # An entry whose book message does not fit the contract is undecodable: the consumer dead-letters it.
    too_long = TickBatch([], books=[book(1, [(1.0, 1.0)] * (MAX_BOOK_LEVELS + 1))])
    with pytest.raises(DecodeError, match=rf"length <= {MAX_BOOK_LEVELS} - at `\$\[4\]\[0\]\[8\]`"):
        decode_as(encode(too_long), TickBatch)
    garbage = encode(_LooseTickBatch([], 0, 1, [["book", SYM, 1, 1, False, 0, 0, 0, [["x", "y"]], [], 1]]))
    with pytest.raises(DecodeError, match=r"Expected `float`, got `str` - at `\$\[4\]\[0\]\[8\]\[0\]\[0\]`"):
        decode_as(garbage, TickBatch)


# -- a model that needs book columns ----------------------------------------------------------------------


def test_a_model_needing_obi_loads_only_when_the_engine_computes_it(tmp_path):
    bundle = make_bundle(tmp_path / "m", features=("qimb", "obi_1", "obi_5"), classes=(-1, 1), threshold=0.5)
    det = {"mlp": {"type": "onnx", "model": str(bundle), "warmup": 0, "cooldown": 0}}
    with pytest.raises(ConfigError, match=r"obi_5.*not computed by the live engine"):
        PatternEngine(parse_pattern_config({"features": {"book_levels": [1]}, "detectors": det}))
    cfg = parse_pattern_config({"features": {"book_levels": [1, 5]}, "detectors": det})
    eng = PatternEngine(cfg)
    (mlp,) = eng.models
    eng.on_batch(TickBatch([tick(5, 1)]))  # no book yet: the row is dropped (NaN), not scored
    assert mlp.drain_stats() == {"nonfinite_rows": 1}
    eng.on_batch(TickBatch([tick(20, 2)], books=[book(10, [(100.0, 3.0)], [(101.0, 1.0)], snapshot=True)]))
    assert mlp.drain_stats() == {"rows": 1, "inferences": 1}
    eng.close()


# -- parity with the batch driver on the real capture ------------------------------------------------------


def _entries(events, batch_max: int) -> list[TickBatch]:
    """The replay's grouping into bus entries (tick_replay.player), without Redis."""
    out = _Out(None, 1, batch_max, 1, ReplaySummary())
    for e in events:
        out.add(e)
    out.seal_all()
    return [TickBatch(ticks, books=books) for _, ticks, books in out.take()]


@pytest.mark.data
def test_live_obi_equals_the_batch_driver_at_every_tick_on_the_real_capture(shared_data):
    d = shared_data / "hftbacktest_binance"
    files = [d / "spot_btcusdt_20240808_trades.csv.gz", d / "spot_btcusdt_20240808_bbo.csv.gz"]
    depth = d / "spot_btcusdt_20240808_depth.csv.gz"
    levels = (1, 5, 10)
    ticks = list(open_ticks(files))
    table = compute_features(ticks, books={SYM: book_series(depth, levels=levels)})
    want = np.column_stack([table.column(f"obi_{n}").to_numpy() for n in levels])
    assert np.isfinite(want[-1]).all() and np.isnan(want[0]).all()  # the capture starts before its snapshot
    events = list(open_ticks([*files, depth], books=True))
    assert [e for e in events if type(e) is Tick] == ticks  # adding the depth file leaves the ticks alone
    row_of = {t.seq: k for k, t in enumerate(ticks)}

    def live(entries: list[TickBatch], group: int = 1) -> tuple[np.ndarray, np.ndarray]:
        eng, rec = engine(levels)
        for i in range(0, len(entries), group):
            eng.on_batches(entries[i : i + group])
        k = np.array([row_of[t.seq] for _, t, _ in rec.rows])
        return k, np.array([r[len(FEATURES):] for _, _, r in rec.rows])

    # One tick or book message per entry: the row of every tick.
    k, got = live(_entries(events, 1))
    assert k.tolist() == list(range(len(ticks)))
    assert np.array_equal(got, want, equal_nan=True)
    # Bus-sized entries, read several at a time: the row of each micro-batch's last tick.
    k, got = live(_entries(events, 256), group=3)
    assert len(k) > 50 and np.array_equal(got, want[k], equal_nan=True)
    rng = random.Random(5)
    entries, i = [], 0
    while i < len(events):  # random entry sizes
        n = rng.choice((1, 2, 7, 40, 300))
        chunk = events[i : i + n]
        entries.append(TickBatch([e for e in chunk if type(e) is Tick],
                                 books=[e for e in chunk if type(e) is BookUpdate]))
        i += n
    k, got = live(entries)
    assert len(k) > 500 and np.array_equal(got, want[k], equal_nan=True)


# -- the service on a real Redis ------------------------------------------------------------------------------


async def test_the_service_hands_a_model_obi_columns_and_dead_letters_a_bad_book_entry(redis_url, clean_env):
    import asyncio
    import time

    import redis.asyncio as aioredis

    from common import streams
    from common.bus import DATA_FIELD
    from common.config import CommonSettings, load
    from pattern_engine.config import PatternEngineSettings
    from pattern_engine.service import PatternEngineService

    ticks_stream = streams.ticks_stream(0)
    r = aioredis.Redis.from_url(redis_url)
    rec = Recorder()
    pattern = PatternConfig(features=FeatureParams(book_levels=[1, 2]), detectors=(rec,))
    common = load(CommonSettings, redis_url=redis_url, instance="pe-book", heartbeat_s=0.2, block_ms=5)
    svc = PatternEngineService(common, load(PatternEngineSettings, shards="0"), pattern)
    task = asyncio.create_task(svc.run(), name="pe-book-under-test")
    snap = book(10, [(100.0, 3.0), (99.0, 1.0)], [(101.0, 1.0), (102.0, 1.0)], snapshot=True)
    bad = encode(_LooseTickBatch([tick(33, 2)], 0, 1, [["book", SYM, 1, 1, False, 0, 0, 0, [["x", "y"]], [], 1]]))

    async def until(n_ticks: int, n_dead: int) -> None:
        deadline = time.monotonic() + 15
        while int(await r.hget(streams.stats_key("pattern_engine"), "ticks") or 0) < n_ticks or \
                await r.xlen(streams.dlq_stream(ticks_stream)) < n_dead:
            assert time.monotonic() < deadline, "the service did not process the entries"
            await asyncio.sleep(0.02)

    first = TickBatch([tick(20, 1)], books=[snap, book(20, [(100.0, 1.0)]), book(30, [(100.0, 7.0)])])
    await r.xadd(ticks_stream, {DATA_FIELD: encode(first)})
    await until(1, 0)  # its own bus batch: the model sees tick 1
    for p in (bad, encode(TickBatch([tick(35, 3)]))):
        await r.xadd(ticks_stream, {DATA_FIELD: p})
    await until(2, 1)
    assert [(t.seq, obi(rec, k)) for k, (_, t, _) in enumerate(rec.rows)] == [(1, 0.0), (3, 0.75)]
    assert int(await r.hget(streams.stats_key("pattern_engine"), "book_updates")) == 3
    assert "book_updates=3 book_gaps=0" in svc.heartbeat_detail()
    (_, f), = await r.xrange(streams.dlq_stream(ticks_stream))
    assert f[b"reason"].decode().startswith("decode") and "Expected `float`" in f[b"reason"].decode()
    svc.request_stop()
    assert await asyncio.wait_for(task, 10) == 0
    await r.aclose()
