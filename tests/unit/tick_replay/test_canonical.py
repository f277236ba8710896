"""The canonical schema: CSV / gzip / Parquet round trips, tolerant parsing, a hypothesis property."""

from __future__ import annotations

import csv
import gzip
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.messages import Tick, TickType
from tick_replay import FormatError, open_ticks, synthetic_ticks, write_canonical
from tick_replay.formats import detect_format

from .conftest import utc_ns

HEADER = "ts,symbol,type,price,size,bid,bid_size,ask,ask_size,side\n"


def _fields(t: Tick) -> tuple:
    return (t.ts_event, t.symbol, t.type, t.price, t.size, t.bid, t.bid_size, t.ask, t.ask_size, t.side, t.seq)


@pytest.mark.parametrize("name", ["ticks.csv", "ticks.csv.gz", "ticks.parquet"])
def test_round_trip_of_synthetic_ticks(tmp_path, name):
    ticks = list(synthetic_ticks(3000, symbols=3, seed=11))
    path = tmp_path / name
    assert write_canonical(path, ticks) == 3000
    assert detect_format(path) == "canonical"
    src = open_ticks([path])
    back = list(src)
    assert [_fields(t) for t in back] == [_fields(t) for t in ticks]
    st_ = src.stats[0]
    assert st_.rows == 3000 and st_.ticks == 3000 and st_.skipped_total == 0
    assert st_.symbols == {"SYNA", "SYNB", "SYNC"}


def test_csv_iso_timestamps_aliases_quotes_and_optional_columns(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "timestamp,symbol,type,price,qty,bid,ask,side\n"
        "2024-01-02T09:30:00.000000001-05:00,AAPL,trade,185.5,100,,,buy\n"
        '2024-01-02T14:30:00.5Z,"AAPL",quote,,,185.4,185.6,\n'
        "1704205801000000000,AAPL,TRADE,185.6,50,,,S\n"
    )
    ticks = list(open_ticks([path]))
    assert [t.ts_event for t in ticks] == [
        utc_ns("2024-01-02 14:30:00") + 1,
        utc_ns("2024-01-02 14:30:00.5"),
        utc_ns("2024-01-02 14:30:01"),
    ]
    assert ticks[0].side == 1 and ticks[2].side == -1
    assert (ticks[1].type, ticks[1].bid, ticks[1].ask, ticks[1].bid_size) == (TickType.QUOTE, 185.4, 185.6, 0.0)
    # The trade after the quote carries it.
    assert (ticks[2].bid, ticks[2].ask) == (185.4, 185.6)


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        HEADER
        + "1000,X,trade,10.0,1,,,,,buy\n"  # good
        + "abc,X,trade,10.0,1,,,,,buy\n"  # bad ts
        + "2000,X,trade,-1,1,,,,,buy\n"  # non-positive price
        + "2001,X,trade,0,1,,,,,buy\n"
        + "2002,X,trade,nan,1,,,,,buy\n"
        + "2003,X,trade,inf,1,,,,,buy\n"
        + "2004,X,trade,10.0,-5,,,,,buy\n"  # bad size
        + "2005,X,quote,,,10.0,5,9.0,5,\n"  # crossed
        + "2006,X,quote,,,0,0,0,0,\n"  # empty quote
        + "2007,X,fill,10,1,,,,,\n"  # unknown type
        + "2008,,trade,10,1,,,,,\n"  # no symbol
        + "2009,X,trade,10,1,,,,,up\n"  # bad side
        + "2010,X,trade,10,1\n"  # wrong width
        + '2011,"X,trade,10,1,,,,,\n'  # unbalanced quote
        + "2024-01-02 14:30:00,X,trade,10,1,,,,,\n"  # naive ISO: refused
        + "\n"
        + "3000,X,quote,,,9.0,5,10.0,5,\n"  # good
    )
    src = open_ticks([path])
    ticks = list(src)
    assert [t.ts_event for t in ticks] == [1000, 3000]
    s = src.stats[0]
    assert s.rows == 16 and s.ticks == 2 and s.skipped_total == 14
    assert s.skipped == {
        "bad_row": 5, "bad_price": 5, "bad_size": 1, "crossed_or_locked": 1, "bad_symbol": 1, "bad_side": 1,
    }


def test_missing_required_column_is_a_format_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("ts,type,price,size\n1,trade,1,1\n")
    with pytest.raises(FormatError, match="x.csv"):
        open_ticks([path], "canonical")


def test_parquet_with_tz_timestamps_and_int_sides(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table({
        "ts": pa.array([utc_ns("2024-01-02 14:30:00"), utc_ns("2024-01-02 14:30:01"), None],
                       type=pa.timestamp("ns", tz="UTC")),
        "symbol": ["ES", "ES", "ES"],
        "type": ["trade", "trade", "trade"],
        "price": [4700.25, 4700.5, 4700.75],
        "size": [1, 2, 3],
        "side": pa.array([1, -1, 0], type=pa.int8()),
    })
    pq.write_table(table, path)
    src = open_ticks([path])
    ticks = list(src)
    assert [(t.ts_event, t.price, t.size, t.side) for t in ticks] == [
        (utc_ns("2024-01-02 14:30:00"), 4700.25, 1.0, 1),
        (utc_ns("2024-01-02 14:30:01"), 4700.5, 2.0, -1),
    ]
    assert src.stats[0].skipped == {"bad_ts": 1}


def test_trades_without_side_use_tick_rule_then_quote_rule(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        HEADER
        + "1,Z,trade,10.00,1,,,,,\n"  # no quote yet, first trade: unknown
        + "2,Z,trade,10.01,1,,,,,\n"  # uptick: +1
        + "3,Z,quote,,,10.00,1,10.04,1,\n"
        + "3,Z,trade,10.01,1,,,,,\n"  # same instant as the quote: uses the quote before (none) -> tick rule keeps +1
        + "4,Z,trade,10.01,1,,,,,\n"  # below the mid 10.02 -> -1 (quote rule beats the zero tick)
        + "5,Z,trade,10.03,1,,,,,\n"  # above the mid -> +1
        + "6,Z,trade,10.02,1,,,,,\n"  # at the mid: tick rule (downtick) -> -1
        + "7,Z,trade,10.02,1,,,,,sell\n"  # explicit side wins
    )
    ticks = [t for t in open_ticks([path]) if t.type == TickType.TRADE]
    assert [t.side for t in ticks] == [0, 1, 1, -1, 1, -1, -1]
    assert [(t.bid, t.ask) for t in ticks[3:]] == [(10.0, 10.04)] * 4
    assert ticks[2].bid == 0.0  # the quote stamped at the same ts is not "before" the trade


# -- hypothesis -----------------------------------------------------------------------------

_symbols = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_", min_size=1, max_size=12)
_cents = st.integers(min_value=1, max_value=10**9)
_sizes = st.integers(min_value=0, max_value=10**7)


@st.composite
def _row(draw):
    ts = draw(st.integers(min_value=0, max_value=2**62))
    sym = draw(_symbols)
    if draw(st.booleans()):
        px = draw(_cents) / 100
        size = draw(_sizes) / 10
        side = draw(st.sampled_from(["buy", "sell", "1", "-1", "0", "b", "s"]))
        return (ts, sym, "trade", repr(px), repr(size), "", "", "", "", side)
    b = draw(_cents)
    a = b + draw(st.integers(min_value=1, max_value=10**6))
    return (ts, sym, "quote", "", "", repr(b / 100), repr(draw(_sizes) * 1.0), repr(a / 100),
            repr(draw(_sizes) * 1.0), "")


_garbage = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), min_size=1, max_size=60
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row(), max_size=30), garbage=st.lists(_garbage, max_size=10), gz=st.booleans(), data=st.data())
def test_canonical_csv_round_trips_valid_rows_and_counts_garbage(rows, garbage, gz, data):
    rows = sorted(rows, key=lambda r: r[0])
    lines = [",".join(map(str, r)) for r in rows]
    for g in garbage:
        lines.insert(data.draw(st.integers(0, len(lines))), g)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("t.csv.gz" if gz else "t.csv")
        text = HEADER + "".join(line + "\n" for line in lines)
        if gz:
            with gzip.open(path, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8")
        src = open_ticks([path], "canonical")
        ticks = list(src)  # never raises
        s = src.stats[0]
    assert s.rows == sum(1 for line in lines if line.strip())
    assert s.ticks + s.skipped_total == s.rows
    # Every valid row comes back, in order (garbage that happens to parse may sit between).
    # Trades are compared on the print (their bid/ask get the prevailing quote), quotes on the book.
    sides = {"buy": 1, "b": 1, "1": 1, "sell": -1, "s": -1, "-1": -1, "0": 0}

    def key_row(r):
        if r[2] == "trade":
            return (r[0], r[1], TickType.TRADE, float(r[3]), float(r[4]), sides[r[9]])
        return (r[0], r[1], TickType.QUOTE, float(r[5]), float(r[6]), float(r[7]), float(r[8]))

    def key_tick(t):
        if t.type == TickType.TRADE:
            return (t.ts_event, t.symbol, t.type, t.price, t.size, t.side)
        return (t.ts_event, t.symbol, t.type, t.bid, t.bid_size, t.ask, t.ask_size)

    got = iter([key_tick(t) for t in ticks])
    assert all(any(g == key_row(r) for g in got) for r in rows)


def test_write_canonical_csv_is_plain_csv(tmp_path):
    ticks = list(synthetic_ticks(5, symbols=1, seed=1))
    path = tmp_path / "x.csv"
    write_canonical(path, ticks)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[0]["symbol"] == "SYNA" and int(rows[0]["ts"]) == ticks[0].ts_event
