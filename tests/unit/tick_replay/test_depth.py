"""Depth files in the replay: the reader, the merge order with ticks, and BookUpdates on the bus."""

from __future__ import annotations

import gzip
import math

import pytest
import redis

from common.bus import DATA_FIELD
from common.messages import MAX_BOOK_LEVELS, BookUpdate, Tick, TickBatch, decode_as
from common.streams import ticks_stream
from tick_replay import open_ticks, replay
from tick_replay.formats import FormatError, ReaderStats, detect_format
from tick_replay.formats.binance import read_hftbacktest_depth

DEPTH_HEADER = "local_ts_ns,kind,event_ms,txn_ms,first_update_id,last_update_id,prev_last_update_id,side,price,qty"
TRADES_HEADER = "local_ts_ns,event_ms,trade_ms,trade_id,price,qty,buyer_is_maker"


def _gz(path, lines):
    path.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    return path


@pytest.fixture
def files(tmp_path):
    depth = _gz(tmp_path / "spot_btcusdt_x_depth.csv.gz", [
        DEPTH_HEADER,
        "10,snapshot,,,,3,,b,100.0,2.0",
        "10,snapshot,,,,3,,a,101.0,1.0",
        "20,update,1,,4,4,,b,100.0,nan",  # passed on: the engine's book counts it
        "20,update,1,,4,4,,a,abc,1.0",  # not a number: dropped here
        "garbage",
        "30,update,1,,5,6,,a,101.0,0.5",
    ])
    trades = _gz(tmp_path / "spot_btcusdt_x_trades.csv.gz", [
        TRADES_HEADER, "5,1,1,1,100.5,1.0,0", "20,1,1,2,100.5,1.0,1", "35,1,1,3,100.5,1.0,0"])
    return depth, trades


def test_the_reader_groups_rows_into_book_messages_and_counts_bad_ones(files):
    depth, _ = files
    assert detect_format(depth) == "hftbacktest_depth"
    st = ReaderStats(str(depth), "hftbacktest_depth")
    recs = list(read_hftbacktest_depth(depth, st))
    assert [(r[0], r[3], r[5], len(r[7]), len(r[8])) for r in recs] == [
        (10, True, 3, 1, 1), (20, False, 4, 1, 0), (30, False, 6, 0, 1)]
    assert math.isnan(recs[1][7][0][1])
    assert st.skipped == {"bad_level": 1, "bad_row": 1}


def test_depth_merges_before_ticks_stamped_the_same_instant_with_its_own_seq(files):
    depth, trades = files
    events = list(open_ticks([trades, depth], books=True))  # depth given last: still first on ties
    assert [(type(e).__name__, e.ts_event, e.seq) for e in events] == [
        ("Tick", 5, 1), ("BookUpdate", 10, 1), ("BookUpdate", 20, 2), ("Tick", 20, 2), ("BookUpdate", 30, 3),
        ("Tick", 35, 3)]
    assert [e for e in events if type(e) is Tick] == list(open_ticks([trades]))
    with pytest.raises(FormatError, match="order-book file"):
        open_ticks([trades, depth])


def test_a_side_too_long_for_the_wire_drops_its_message(tmp_path):
    rows = [DEPTH_HEADER] + [f"10,snapshot,,,,3,,b,{100 - i * 0.001:.3f},1.0" for i in range(MAX_BOOK_LEVELS + 1)]
    rows.append("20,update,1,,4,4,,b,100.0,2.0")
    p = _gz(tmp_path / "spot_btcusdt_y_depth.csv.gz", rows)
    st = ReaderStats(str(p), "hftbacktest_depth")
    assert [r[0] for r in read_hftbacktest_depth(p, st)] == [20]
    assert st.skipped == {"too_many_levels": 1}


async def test_the_replay_publishes_book_messages_with_the_ticks_of_their_shard(files, redis_url):
    depth, trades = files
    summary = await replay(redis_url, open_ticks([trades, depth], books=True), speed=None, shards=2, batch_max=4,
                           progress=False)
    assert summary.ticks == 3 and summary.books == 3
    r = redis.Redis.from_url(redis_url)
    try:
        entries = [decode_as(f[DATA_FIELD], TickBatch) for s in range(2) for _, f in r.xrange(ticks_stream(s))]
    finally:
        r.close()
    assert [(len(e.ticks), len(e.books)) for e in entries] == [(2, 2), (1, 1)]  # one shard: 4 items per entry
    assert all(type(b) is BookUpdate and b.symbol == "BTCUSDT" for e in entries for b in e.books)
    assert entries[0].books[0].snapshot and entries[0].books[0].last_id == 3 and entries[0].books[0].bids == [
        (100.0, 2.0)]
