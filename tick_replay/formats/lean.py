"""QuantConnect Lean files: AlgoSeek US-equity trade / quote ticks and FXCM FX quote ticks.

All three are header-less CSV (optionally gzip) whose clock is "milliseconds since local
midnight" of the date in the file name:

- equities (``YYYYMMDD_<sym>_{Trade,Quote}_Tick.csv[.gz]``): America/New_York wall
  clock (EDT/EST through zoneinfo), prices in deci-cents (÷ 10 000 → USD), sizes in shares;
- FXCM (``YYYYMMDD_<pair>_tick_quote.csv[.gz]``): fixed UTC−05:00 (no DST), plain prices,
  no sizes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from tick_replay.formats.base import (
    MAX_PRICE,
    MAX_SIZE,
    QUOTE,
    TRADE,
    FormatError,
    ReaderStats,
    Rec,
    WallClock,
    csv_rows,
    open_text,
)

__all__ = [
    "FXCM_NAME",
    "LEAN_QUOTE_NAME",
    "LEAN_TRADE_NAME",
    "read_fxcm_quote",
    "read_lean_quote",
    "read_lean_quote_by_exchange",
    "read_lean_trade",
    "sniff_fxcm",
    "sniff_lean_quote",
    "sniff_lean_trade",
]

NEW_YORK = "America/New_York"
FXCM_UTC_OFFSET_H = -5.0  # Lean market-hours database: Forex-fxcm dataTimeZone UTC-05 (no DST)
_DECI_CENTS = 10_000.0
_MAX_DECI_CENTS = int(MAX_PRICE * 10_000)

LEAN_TRADE_NAME = re.compile(r"^(\d{8})_([a-z0-9.\-]+)_trade_tick\.csv(\.gz)?$", re.IGNORECASE)
LEAN_QUOTE_NAME = re.compile(r"^(\d{8})_([a-z0-9.\-]+)_quote_tick\.csv(\.gz)?$", re.IGNORECASE)
FXCM_NAME = re.compile(r"^(\d{8})_([a-z]{6})_tick_quote\.csv(\.gz)?$", re.IGNORECASE)

_LEAN_TRADE_ROW = re.compile(rb"^\d+,\d+,\d+,[A-Za-z],[0-9A-Fa-f]*,[01]\r?$")
_LEAN_QUOTE_ROW = re.compile(rb"^\d+,\d+,\d+,\d+,\d+,[A-Za-z]?,[0-9A-Fa-f]*,[01]\r?$")
_FXCM_ROW = re.compile(rb"^\d+,\d+(\.\d+)?,\d+(\.\d+)?\r?$")


def _first_lines(head: bytes, n: int = 5) -> list[bytes]:
    lines = head.split(b"\n")[:-1] or head.split(b"\n")  # drop a possibly cut last line
    return [ln for ln in lines[:n] if ln.strip()]


def sniff_lean_trade(path: Path, head: bytes) -> bool:
    lines = _first_lines(head)
    return bool(lines) and all(_LEAN_TRADE_ROW.match(ln) for ln in lines)


def sniff_lean_quote(path: Path, head: bytes) -> bool:
    lines = _first_lines(head)
    return bool(lines) and all(_LEAN_QUOTE_ROW.match(ln) for ln in lines)


def sniff_fxcm(path: Path, head: bytes) -> bool:
    lines = _first_lines(head)
    return bool(lines) and all(_FXCM_ROW.match(ln) for ln in lines)


def _date_and_symbol(path: Path, pattern: re.Pattern[str], what: str) -> tuple[dt.date, str]:
    m = pattern.match(path.name)
    if m is None:
        # The clock is relative to the date in the name: without it the times mean nothing.
        raise FormatError(
            f"{path}: {what} files must be named like {pattern.pattern!r} "
            "(the date and symbol come from the file name)"
        )
    try:
        day = dt.datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError as e:
        raise FormatError(f"{path}: bad date {m.group(1)!r} in file name") from e
    return day, m.group(2).upper()


class _Counts:
    """Per-file counters kept in locals on the hot loop and flushed into the stats at the end."""

    __slots__ = ("crossed", "one_sided", "rows", "unchanged")

    def __init__(self) -> None:
        self.rows = self.crossed = self.one_sided = self.unchanged = 0

    def flush(self, stats: ReaderStats) -> None:
        stats.rows += self.rows
        for reason, n in (("crossed_or_locked", self.crossed), ("one_sided", self.one_sided),
                          ("unchanged", self.unchanged)):
            if n:
                stats.skip(reason, n)


def read_lean_trade(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """AlgoSeek trade prints: skip ``suspicious=1``; aggressor side by the tick rule."""
    day, sym = _date_and_symbol(path, LEAN_TRADE_NAME, "Lean trade tick")
    return _lean_trades(path, stats, sym, WallClock.named(day, NEW_YORK).to_ns)


def _lean_trades(path: Path, stats: ReaderStats, sym: str, to_ns: Callable[[int], int]) -> Iterator[Rec]:
    skip = stats.skip
    prev_px = 0
    side = 0
    rows = 0
    try:
        with open_text(path) as f:
            for row in csv_rows(f, stats):
                rows += 1
                try:
                    t = int(row[0])
                    px = int(row[1])
                    qty = int(row[2])
                    susp = row[5]  # sale_condition (row[4]) is a hex string; nothing downstream uses it
                except (ValueError, IndexError):
                    skip("bad_row")
                    continue
                if susp != "0":
                    skip("suspicious" if susp.strip() == "1" else "bad_row")
                    continue
                if px <= 0 or px >= _MAX_DECI_CENTS or t < 0:
                    skip("bad_price")
                    continue
                if qty <= 0 or qty > MAX_SIZE:
                    skip("bad_size")
                    continue
                # Tick rule: uptick buyer-initiated, downtick seller-initiated, zero tick keeps the last.
                if prev_px:
                    if px > prev_px:
                        side = 1
                    elif px < prev_px:
                        side = -1
                prev_px = px
                yield (to_ns(t), sym, TRADE, px / _DECI_CENTS, float(qty), 0.0, 0.0, 0.0, 0.0, side, True)
    finally:
        stats.rows += rows


def _quote_rows(path: Path, stats: ReaderStats, counts: _Counts) -> Iterator[tuple[int, int, int, int, int, str]]:
    """Valid, non-suspicious quote rows as ``(time_ms, bid, bid_size, ask, ask_size, exchange)``."""
    skip = stats.skip
    with open_text(path) as f:
        for row in csv_rows(f, stats):
            counts.rows += 1
            try:
                t = int(row[0])
                b = int(row[1])
                bsz = int(row[2])
                a = int(row[3])
                asz = int(row[4])
                ex = row[5]
                susp = row[7]
            except (ValueError, IndexError):
                skip("bad_row")
                continue
            if susp != "0":
                skip("suspicious" if susp.strip() == "1" else "bad_row")
                continue
            # A side reads (0, 0) when the row does not update it; a price without size, or a
            # size without price, or anything negative is malformed.
            if (
                t < 0 or b < 0 or a < 0 or bsz < 0 or asz < 0
                or b >= _MAX_DECI_CENTS or a >= _MAX_DECI_CENTS
                or bsz > MAX_SIZE or asz > MAX_SIZE
                or (b == 0) != (bsz == 0) and b == 0
                or (a == 0) != (asz == 0) and a == 0
            ):
                skip("bad_price")
                continue
            if not b and not a:
                skip("no_update")
                continue
            yield t, b, bsz, a, asz, ex


def read_lean_quote(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """AlgoSeek quote updates → consolidated top of book, one QUOTE per change.

    Each row updates one side (the other side is ``0,0`` = "no update of that side").
    Rows sharing a millisecond are applied together and the book is evaluated once per
    millisecond: a QUOTE is emitted when bid/ask price or size changed; one-sided and
    crossed/locked (bid >= ask) states are skipped and counted.

    The rows are consolidated best-bid / best-offer updates tagged with the exchange
    that set them: Lean's own minute quote bars agree with this reading on 636/636
    minutes of BAC 2013-10-08, while a per-exchange book agrees on 40/636 and is crossed
    about a quarter of the time (an exchange that leaves the inside is never updated).
    ``lean_quote_by_exchange`` implements the per-exchange reading for comparison.
    """
    day, sym = _date_and_symbol(path, LEAN_QUOTE_NAME, "Lean quote tick")
    return _lean_nbbo(path, stats, sym, WallClock.named(day, NEW_YORK).to_ns)


def _lean_nbbo(path: Path, stats: ReaderStats, sym: str, to_ns: Callable[[int], int]) -> Iterator[Rec]:
    counts = _Counts()
    bp = bs = ap = az = 0
    last = (0, 0, 0, 0)
    prev_t = -1
    try:
        for t, b, bsz, a, asz, _ in _quote_rows(path, stats, counts):
            if t != prev_t:
                if prev_t >= 0:
                    # The book as it stood at the end of the previous millisecond.
                    if not bp or not ap:
                        counts.one_sided += 1
                    elif bp >= ap:
                        counts.crossed += 1
                    elif (bp, bs, ap, az) != last:
                        last = (bp, bs, ap, az)
                        yield (to_ns(prev_t), sym, QUOTE, 0.0, 0.0,
                               bp / _DECI_CENTS, float(bs), ap / _DECI_CENTS, float(az), 0, False)
                    else:
                        counts.unchanged += 1
                prev_t = t
            if b:
                bp = b
                bs = bsz
            if a:
                ap = a
                az = asz
        if prev_t >= 0:
            if not bp or not ap:
                counts.one_sided += 1
            elif bp >= ap:
                counts.crossed += 1
            elif (bp, bs, ap, az) != last:
                yield (to_ns(prev_t), sym, QUOTE, 0.0, 0.0,
                       bp / _DECI_CENTS, float(bs), ap / _DECI_CENTS, float(az), 0, False)
            else:
                counts.unchanged += 1
    finally:
        counts.flush(stats)


def read_lean_quote_by_exchange(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """AlgoSeek quote updates read as per-exchange quotes (the data README's recipe).

    Keeps the latest bid and ask per exchange, NBBO = max bid / min ask across exchanges
    (size = sum of sizes at the best price), evaluated once per millisecond; emits a
    QUOTE when the NBBO changes; crossed/locked and one-sided books are skipped and
    counted. On the Lean AlgoSeek files this book is crossed most of the day (see
    ``read_lean_quote``), so it is not the default reading.
    """
    day, sym = _date_and_symbol(path, LEAN_QUOTE_NAME, "Lean quote tick")
    return _exchange_nbbo(path, stats, sym, WallClock.named(day, NEW_YORK).to_ns)


def _exchange_nbbo(path: Path, stats: ReaderStats, sym: str, to_ns: Callable[[int], int]) -> Iterator[Rec]:
    counts = _Counts()
    bids: dict[str, tuple[int, int]] = {}
    asks: dict[str, tuple[int, int]] = {}
    last = (0, 0, 0, 0)

    def nbbo(t_ms: int) -> Rec | None:
        nonlocal last
        if not bids or not asks:
            counts.one_sided += 1
            return None
        bb = max(p for p, _ in bids.values())
        ba = min(p for p, _ in asks.values())
        if bb >= ba:
            counts.crossed += 1
            return None
        q = (bb, sum(s for p, s in bids.values() if p == bb), ba, sum(s for p, s in asks.values() if p == ba))
        if q == last:
            counts.unchanged += 1
            return None
        last = q
        return (to_ns(t_ms), sym, QUOTE, 0.0, 0.0, bb / _DECI_CENTS, float(q[1]), ba / _DECI_CENTS, float(q[3]),
                0, False)

    prev_t = -1
    try:
        for t, b, bsz, a, asz, ex in _quote_rows(path, stats, counts):
            if t != prev_t:
                if prev_t >= 0 and (rec := nbbo(prev_t)) is not None:
                    yield rec
                prev_t = t
            if b:
                bids[ex] = (b, bsz)
            if a:
                asks[ex] = (a, asz)
        if prev_t >= 0 and (rec := nbbo(prev_t)) is not None:
            yield rec
    finally:
        counts.flush(stats)


def read_fxcm_quote(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """FXCM top of book ``time_ms,bid,ask`` (fixed UTC−05:00 clock, no sizes); one QUOTE per change."""
    day, sym = _date_and_symbol(path, FXCM_NAME, "FXCM tick quote")
    return _fxcm(path, stats, sym, WallClock.fixed(day, FXCM_UTC_OFFSET_H).to_ns)


def _fxcm(path: Path, stats: ReaderStats, sym: str, to_ns: Callable[[int], int]) -> Iterator[Rec]:
    skip = stats.skip
    counts = _Counts()
    last_b = last_a = 0.0
    try:
        with open_text(path) as f:
            for row in csv_rows(f, stats):
                counts.rows += 1
                try:
                    t = int(row[0])
                    b = float(row[1])
                    a = float(row[2])
                except (ValueError, IndexError):
                    skip("bad_row")
                    continue
                if not (0.0 < b < MAX_PRICE and 0.0 < a < MAX_PRICE) or t < 0:
                    skip("bad_price")
                    continue
                if b >= a:
                    counts.crossed += 1
                    continue
                if b == last_b and a == last_a:
                    counts.unchanged += 1
                    continue
                last_b = b
                last_a = a
                yield (to_ns(t), sym, QUOTE, 0.0, 0.0, b, 0.0, a, 0.0, 0, False)
    finally:
        counts.flush(stats)
