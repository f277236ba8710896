"""L2 book builder: snapshots, deltas, deletions, Binance id sync, bad input counted and never raised."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest

from pattern_engine.book import BinanceDepthBook, L2Book, book_series, read_binance_depth
from tick_replay import open_ticks

BIDS = [(100.0, 5.0), (99.5, 1.0), (99.0, 2.0)]
ASKS = [(100.5, 1.0), (101.0, 3.0), (102.0, 4.0)]


def booked() -> L2Book:
    b = L2Book()
    assert b.snapshot(BIDS, ASKS)
    return b


def test_snapshot_orders_levels_and_gives_imbalance_over_top_n():
    b = booked()
    assert b.best_bid == 100.0 and b.best_ask == 100.5
    assert b.top("b", 2) == [(100.0, 5.0), (99.5, 1.0)]
    assert b.top("a", 5) == [(100.5, 1.0), (101.0, 3.0), (102.0, 4.0)]
    assert b.imbalance(1) == pytest.approx((5 - 1) / 6)
    assert b.imbalance(2) == pytest.approx((6 - 4) / 10)
    assert b.imbalance(10) == pytest.approx((8 - 8) / 16)  # fewer levels than asked: all of them
    assert len(b) == 6 and b.stats.snapshots == 1 and b.stats.levels == 6


def test_a_second_snapshot_replaces_the_book():
    b = booked()
    assert b.snapshot([("50", "1")], [("51", "2")])  # numeric strings as the venues send them
    assert b.top("b", 5) == [(50.0, 1.0)] and b.top("a", 5) == [(51.0, 2.0)]


def test_deltas_set_add_and_delete_levels():
    b = booked()
    assert b.apply([(100.0, 2.0), (100.2, 7.0)], [(101.0, 0.0)])  # change, add inside the spread, delete
    assert b.best_bid == 100.2
    assert b.top("b", 3) == [(100.2, 7.0), (100.0, 2.0), (99.5, 1.0)]
    assert b.top("a", 3) == [(100.5, 1.0), (102.0, 4.0)]
    assert b.apply([], [(100.5, 0.0), (102.0, 0.0)])  # the whole ask side goes
    assert b.top("a", 3) == [] and math.isnan(b.best_ask)
    assert b.imbalance(1) == 1.0
    assert b.apply([(98.0, 0.0)], [])  # deleting a level that is not there is a no-op
    assert b.stats.messages == 3 and b.stats.crossed == 0
    b.apply([(p, 0.0) for p, _ in b.top("b", 10)], [])
    assert len(b) == 0 and math.isnan(b.imbalance(5))


def test_a_crossing_message_is_rolled_back_whole_and_counted():
    b = booked()
    before = (dict(b.bids), dict(b.asks))
    assert not b.apply([(99.0, 9.0), (100.6, 1.0)], [(101.0, 0.0)])  # bid 100.6 >= best ask 100.5
    assert (b.bids, b.asks) == before and b.top("b", 1) == [(100.0, 5.0)]
    assert b.top("a", 3) == [(100.5, 1.0), (101.0, 3.0), (102.0, 4.0)]
    assert b.stats.crossed == 1 and b.stats.messages == 0
    # the same move with the ask level it crosses removed in the same message is fine
    assert b.apply([(100.6, 1.0)], [(100.5, 0.0)])
    assert b.best_bid == 100.6 and b.best_ask == 101.0
    assert not b.snapshot([(10.0, 1.0)], [(9.0, 1.0)])  # a crossed snapshot is refused too
    assert b.best_bid == 100.6 and b.stats.crossed == 2


@pytest.mark.parametrize("level", [("x", 1), (None, 1), ("nan", 1), ("inf", 1), (-1, 1), (0, 1), (1, -2),
                                   (1, "nan"), (1, float("inf")), (1, object())])
def test_garbage_levels_are_skipped_and_counted(level):
    b = booked()
    assert b.apply([level, (99.9, 4.0)], [])
    assert b.stats.bad_levels == 1
    assert b.top("b", 2) == [(100.0, 5.0), (99.9, 4.0)]
    b.snapshot([level], [level])
    assert b.stats.bad_levels == 3


def binance(futures: bool = False) -> BinanceDepthBook:
    b = BinanceDepthBook(futures=futures)
    return b


def test_binance_spot_sync_buffers_updates_before_the_snapshot_and_drops_stale_ones():
    b = binance()
    assert not b.on_update(1, 5, None, [(10.0, 1.0)], [])  # before any snapshot: buffered
    assert not b.on_update(6, 12, None, [(10.0, 2.0)], [])  # straddles lastUpdateId + 1 = 11
    assert b.on_snapshot(10, [(10.0, 9.0), (9.0, 1.0)], [(11.0, 1.0)])
    assert b.stats.stale == 1 and b.stats.messages == 1 and b.last_id == 12
    assert b.top("b", 1) == [(10.0, 2.0)]
    assert b.on_update(13, 15, None, [], [(11.0, 0.0), (11.5, 2.0)])
    assert b.best_ask == 11.5
    assert not b.on_update(17, 20, None, [(9.0, 5.0)], [])  # 16 missing: gap, out of sync
    assert b.stats.gaps == 1 and not b.synced and b.top("b", 2) == [(10.0, 2.0), (9.0, 1.0)]
    assert not b.on_update(21, 22, None, [], [])  # buffered until the next snapshot
    assert b.on_snapshot(20, [(10.0, 1.0)], [(12.0, 1.0)])
    assert b.synced and b.last_id == 22 and b.stats.stale == 2


def test_binance_futures_sync_chains_on_pu():
    b = binance(futures=True)
    assert b.on_snapshot(100, [(10.0, 1.0)], [(11.0, 1.0)])
    assert not b.on_update(120, 130, 119, [], [])  # first update must have U <= 100 <= u
    assert b.stats.gaps == 1
    b = binance(futures=True)
    b.on_snapshot(100, [(10.0, 1.0)], [(11.0, 1.0)])
    assert b.on_update(90, 105, 89, [(10.0, 3.0)], [])
    assert b.on_update(107, 110, 105, [(10.5, 1.0)], [])  # ids may jump; pu chains
    assert not b.on_update(112, 115, 111, [], [])
    assert b.stats.gaps == 1 and b.top("b", 2) == [(10.5, 1.0), (10.0, 3.0)]


def test_reader_skips_bad_rows_and_rejects_a_foreign_file(tmp_path):
    p = tmp_path / "spot_btcusdt_x_depth.csv.gz"
    rows = [
        "local_ts_ns,kind,event_ms,txn_ms,first_update_id,last_update_id,prev_last_update_id,side,price,qty",
        "5,update,1,,1,3,,b,100.0,1.0",
        "10,snapshot,,,,3,,b,100.0,2.0",
        "10,snapshot,,,,3,,a,101.0,2.0",
        "10,snapshot,,,,3,,x,101.0,2.0",  # bad side
        "garbage",
        "11,update,1,,4,6,,b,100.5,1.0",
        "11,update,1,,4,6,,a,101.0,abc",  # bad qty: a bad level, counted by the book
        "12,update,1,,seven,8,,b,100.5,1.0",  # bad id
        "13,update,1,,7,9,,a,100.2,1.0",  # follows 6, but crosses the 100.5 bid: rolled back
        "14,update,1,,11,12,,b,99.0,1.0",  # 10 missing: a gap
    ]
    p.write_bytes(gzip.compress("\n".join(rows).encode()))
    msgs = list(read_binance_depth(p))
    assert [(m.ts, m.kind, len(m.bids), len(m.asks)) for m in msgs] == [
        (5, "update", 1, 0), (10, "snapshot", 1, 1), (11, "update", 1, 1), (13, "update", 0, 1),
        (14, "update", 1, 0)]
    s = book_series(p, levels=(1, 2))
    assert s.symbol == "BTCUSDT"
    assert s.stats.bad_rows == 3 and s.stats.bad_levels == 1 and s.stats.stale == 1
    assert s.stats.crossed == 1 and s.stats.gaps == 1 and s.stats.messages == 1
    assert list(s.ts) == [10, 11, 14]  # 14: the gap, recorded as "no book" (what the engine reports)
    assert s.obi[1, 0] == pytest.approx((1 - 2) / 3)
    assert np.isnan(s.obi[2]).all() and np.isnan(s.bbo[2]).all()
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an hftbacktest depth capture"):
        list(read_binance_depth(bad))
    with pytest.raises(ValueError, match="levels"):
        book_series(p, levels=(0,))


@pytest.mark.data
@pytest.mark.parametrize("files,bbo", [
    (["spot_btcusdt_20240808_depth.csv.gz", "spot_btcusdt_20240809_depth.csv.gz"],
     ["spot_btcusdt_20240808_bbo.csv.gz", "spot_btcusdt_20240809_bbo.csv.gz"]),
    (["usdm_btcusdt_20240808_depth.csv.gz"], ["usdm_btcusdt_20240808_bbo.csv.gz"]),
])
def test_real_depth_captures_stay_in_sync_and_agree_with_the_bbo_stream(shared_data, files, bbo):
    d = shared_data / "hftbacktest_binance"
    s = book_series([d / f for f in files], levels=(1, 5, 10))
    st = s.stats
    assert st.snapshots == 1 and st.gaps == 0 and st.crossed == 0 and st.bad_levels == 0 and st.bad_rows == 0
    assert st.unsynced == 0 and st.messages > 3000
    assert len(s.ts) > 3000 and (np.diff(s.ts) >= 0).all()
    assert np.isfinite(s.obi).all() and (np.abs(s.obi) <= 1).all()
    assert (s.bbo[:, 0] < s.bbo[:, 1]).all()
    # the book's best bid/ask, as of each bookTicker update, equals that update most of the time
    # (depth arrives in 100 ms / per-event batches, bookTicker per change: they interleave)
    quotes = [t for t in open_ticks([d / f for f in bbo]) if t.ts_event >= s.ts[0]]
    qts = np.array([t.ts_event for t in quotes])
    j = np.searchsorted(s.ts, qts, side="right") - 1
    same = (s.bbo[j, 0] == [t.bid for t in quotes]) & (s.bbo[j, 1] == [t.ask for t in quotes])
    assert same.mean() > 0.5, same.mean()
    mid_book = s.bbo[j].mean(axis=1)
    mid_q = np.array([(t.bid + t.ask) / 2 for t in quotes])
    assert np.median(np.abs(mid_book / mid_q - 1)) < 1e-4
