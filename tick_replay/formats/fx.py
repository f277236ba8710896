"""FX quote ticks from TrueFX and HistData.com (top of book, no sizes).

- TrueFX (``truefx_<pair>-ticks.csv``): header ``timestamp,bid,ask``; ISO-8601 timestamps
  with an explicit offset (``+00:00``).
- HistData (``histdata_<pair>_…csv`` or HistData's own ``DAT_ASCII_<PAIR>_T_…csv``): no
  header, ``YYYYMMDD HHMMSSfff,bid,ask,volume``; clock fixed UTC−05:00 (EST, no DST).

Both emit a QUOTE per change of (bid, ask); crossed/locked rows are skipped and counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from tick_replay.formats.base import (
    MAX_PRICE,
    QUOTE,
    ReaderStats,
    Rec,
    csv_rows,
    fx_symbol,
    iso_to_ns,
    mostly_match,
    open_text,
)

__all__ = ["HISTDATA_UTC_OFFSET_H", "read_histdata", "read_truefx", "sniff_histdata", "sniff_truefx"]

HISTDATA_UTC_OFFSET_H = -5  # HistData.com: "EST without daylight saving"

_TRUEFX_HEAD = re.compile(rb"^\s*timestamp\s*,\s*bid\s*,\s*ask\s*\r?$", re.IGNORECASE)
_HISTDATA_ROW = re.compile(rb"^\d{8} \d{9},\d+(\.\d+)?,\d+(\.\d+)?(,\d+(\.\d+)?)?\r?$")


def sniff_truefx(path: Path, head: bytes) -> bool:
    return bool(_TRUEFX_HEAD.match(head.split(b"\n", 1)[0]))


def sniff_histdata(path: Path, head: bytes) -> bool:
    return mostly_match(head, _HISTDATA_ROW)


def _quotes(rows: Iterator[tuple[int, float, float]], sym: str, stats: ReaderStats) -> Iterator[Rec]:
    crossed = unchanged = 0
    last_b = last_a = 0.0
    try:
        for ts, b, a in rows:
            if b >= a:
                crossed += 1
                continue
            if b == last_b and a == last_a:
                unchanged += 1
                continue
            last_b = b
            last_a = a
            yield (ts, sym, QUOTE, 0.0, 0.0, b, 0.0, a, 0.0, 0, False)
    finally:
        if crossed:
            stats.skip("crossed_or_locked", crossed)
        if unchanged:
            stats.skip("unchanged", unchanged)


def read_truefx(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """TrueFX ``timestamp,bid,ask`` (ISO-8601 with offset)."""
    sym = fx_symbol(path)

    def rows() -> Iterator[tuple[int, float, float]]:
        skip = stats.skip
        with open_text(path) as f:
            for row in csv_rows(f, stats):
                stats.rows += 1
                try:
                    ts = iso_to_ns(row[0])
                    b = float(row[1])
                    a = float(row[2])
                except (ValueError, IndexError):
                    if stats.rows == 1 and row and row[0].strip().lower() == "timestamp":
                        stats.rows = 0  # the header
                    else:
                        skip("bad_row")
                    continue
                if not (0.0 < b < MAX_PRICE and 0.0 < a < MAX_PRICE) or ts < 0:
                    skip("bad_price")
                    continue
                yield ts, b, a

    return _quotes(rows(), sym, stats)


def read_histdata(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """HistData tick quotes ``YYYYMMDD HHMMSSfff,bid,ask,volume`` on a fixed UTC−05:00 clock."""
    sym = fx_symbol(path)
    offset_ns = HISTDATA_UTC_OFFSET_H * 3_600_000_000_000

    def rows() -> Iterator[tuple[int, float, float]]:
        import datetime as dt

        from tick_replay.formats.base import epoch_day_ns

        skip = stats.skip
        day_ns: dict[str, int] = {}
        with open_text(path) as f:
            for row in csv_rows(f, stats):
                stats.rows += 1
                try:
                    stamp = row[0]
                    day = stamp[:8]
                    base = day_ns.get(day)
                    if base is None:
                        base = day_ns[day] = epoch_day_ns(dt.date(int(day[:4]), int(day[4:6]), int(day[6:8])))
                    if len(stamp) != 18 or stamp[8] != " ":
                        raise ValueError(stamp)
                    hh, mm, ss, ms = int(stamp[9:11]), int(stamp[11:13]), int(stamp[13:15]), int(stamp[15:18])
                    if hh > 23 or mm > 59 or ss > 60:
                        raise ValueError(stamp)
                    b = float(row[1])
                    a = float(row[2])
                except (ValueError, IndexError):
                    skip("bad_row")
                    continue
                if not (0.0 < b < MAX_PRICE and 0.0 < a < MAX_PRICE):
                    skip("bad_price")
                    continue
                ts = base + ((hh * 3600 + mm * 60 + ss) * 1000 + ms) * 1_000_000 - offset_ns
                yield ts, b, a

    return _quotes(rows(), sym, stats)
