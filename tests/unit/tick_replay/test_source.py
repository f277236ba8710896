"""Merging several files in time order, per-symbol seq after the merge, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from common.messages import TickType
from tick_replay import FormatError, open_ticks

HEADER = "ts,symbol,type,price,size,bid,bid_size,ask,ask_size,side\n"


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_merge_orders_by_ts_then_file_then_row_and_sequences_per_symbol(tmp_path):
    a = _write(tmp_path / "a.csv", ["10,AAA,trade,1,1,,,,,buy", "20,BBB,trade,2,1,,,,,buy", "20,AAA,trade,3,1,,,,,buy",
                                    "40,AAA,trade,4,1,,,,,buy"])
    b = _write(tmp_path / "b.csv", ["5,BBB,trade,5,1,,,,,buy", "20,AAA,trade,6,1,,,,,buy", "30,BBB,trade,7,1,,,,,buy"])
    ticks = list(open_ticks([a, b]))
    # ts first; at ts=20 file a (index 0) before file b, and inside a the row order.
    assert [t.price for t in ticks] == [5, 1, 2, 3, 6, 7, 4]
    assert [(t.symbol, t.seq) for t in ticks] == [
        ("BBB", 1), ("AAA", 1), ("BBB", 2), ("AAA", 2), ("AAA", 3), ("BBB", 3), ("AAA", 4),
    ]
    # Order of the paths decides ties: swapping them swaps the tie at ts=20 (file b first now).
    swapped = list(open_ticks([b, a]))
    assert [t.price for t in swapped] == [5, 1, 6, 2, 3, 7, 4]


def test_source_is_reiterable_and_deterministic(tmp_path):
    a = _write(tmp_path / "a.csv", [f"{i},S{i % 3},trade,{10 + i % 7},1,,,,," for i in range(200)])
    src = open_ticks([a])
    first, second = list(src), list(src)
    assert first == second == list(open_ticks([a]))
    assert src.stats[0].ticks == 200  # stats reset per iteration, not accumulated


def test_real_trades_and_quotes_merge_in_time_with_quote_context(lean_tick):
    src = open_ticks([lean_tick / "20131009_ibm_Trade_Tick.csv.gz", lean_tick / "20131009_ibm_Quote_Tick.csv.gz"])
    ticks = list(src)
    assert len(ticks) == sum(s.ticks for s in src.stats) == 27_042 + 44_192
    assert all(a.ts_event <= b.ts_event for a, b in itertools.pairwise(ticks))
    assert [t.seq for t in ticks] == list(range(1, len(ticks) + 1))  # one symbol: 1..n in merged order
    trades = [t for t in ticks if t.type == TickType.TRADE]
    with_quote = [t for t in trades if t.bid > 0]
    assert len(with_quote) > 0.95 * len(trades)
    # Trades above the prevailing mid are buys, below are sells (quote rule).
    for t in with_quote:
        mid = (t.bid + t.ask) / 2
        if t.price > mid:
            assert t.side == 1
        elif t.price < mid:
            assert t.side == -1
    assert sum(t.side == 1 for t in trades) > 0.3 * len(trades)
    assert sum(t.side == -1 for t in trades) > 0.3 * len(trades)


def test_out_of_order_rows_are_counted(tmp_path):
    a = _write(tmp_path / "a.csv", ["10,A,trade,1,1,,,,,", "5,A,trade,1,1,,,,,", "20,A,trade,1,1,,,,,"])
    src = open_ticks([a])
    assert [t.ts_event for t in src] == [10, 5, 20]
    assert src.stats[0].out_of_order == 1


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FormatError, match="nope.csv"):
        open_ticks([tmp_path / "nope.csv"])
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage\n" * 10)
    with pytest.raises(FormatError, match="junk.bin"):
        open_ticks([junk])
    with pytest.raises(FormatError, match="unknown format 'xyz'"):
        open_ticks([junk], "xyz")
    with pytest.raises(FormatError, match="junk.bin"):
        open_ticks([junk], "hftbacktest_trades")  # forced, but the header is not there
