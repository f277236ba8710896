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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from tick_replay.formats.base import (
    MAX_PRICE,
    MAX_SIZE,
    QUOTE,
    TRADE,
    UNREADABLE,
    FormatError,
    ReaderStats,
    Rec,
    WallClock,
    csv_rows,
    mostly_match,
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


def sniff_lean_trade(path: Path, head: bytes) -> bool:
    return mostly_match(head, _LEAN_TRADE_ROW)


def sniff_lean_quote(path: Path, head: bytes) -> bool:
    return mostly_match(head, _LEAN_QUOTE_ROW)


def sniff_fxcm(path: Path, head: bytes) -> bool:
    return mostly_match(head, _FXCM_ROW)


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
    """Per-file counters kept off the stats object on the hot loop and flushed at the end."""

    __slots__ = ("crossed", "one_sided", "rows", "unchanged")

    def __init__(self) -> None:
        self.rows = self.crossed = self.one_sided = self.unchanged = 0

    def flush(self, stats: ReaderStats) -> None:
        stats.rows += self.rows
        for reason, n in (("crossed_or_locked", self.crossed), ("one_sided", self.one_sided),
                          ("unchanged", self.unchanged)):
            if n:
                stats.skip(reason, n)


def _with_fallback(
    fast: Callable[[ReaderStats], Iterator[Rec]], slow: Callable[[ReaderStats], Iterator[Rec]], stats: ReaderStats
) -> Iterator[Rec]:
    """Run the vectorised reader; if Arrow rejects the file part-way (a malformed number), re-read
    it with the row-by-row reader, which skips and counts bad rows, resuming after the ticks
    already produced. Both readers give identical ticks on well-formed rows (tested)."""
    scratch = ReaderStats(stats.path, stats.format)
    emitted = 0
    fell_back = False
    try:
        for rec in fast(scratch):
            emitted += 1
            yield rec
    except (pa.ArrowException, *UNREADABLE) as e:
        fell_back = True
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        stats.notes.append(f"fast parser stopped ({first}); re-read with the csv module")
    finally:
        if not fell_back:
            stats.merge(scratch)
    if fell_back:
        for i, rec in enumerate(slow(stats)):
            if i >= emitted:
                yield rec


def _arrow_batches(path: Path, names: list[str], types: dict[str, pa.DataType], stats: ReaderStats,
                   rows: _Counts) -> Iterator[pa.RecordBatch]:
    """Header-less CSV record batches; rows with the wrong number of columns are skipped and counted."""

    def invalid(row: Any) -> str:
        rows.rows += 1
        stats.skip("bad_row")
        return "skip"

    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    with stream:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(column_names=names, block_size=1 << 20),
            parse_options=pcsv.ParseOptions(quote_char=False, invalid_row_handler=invalid),
            convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
        for batch in reader:
            rows.rows += batch.num_rows
            yield batch


def _col(batch: pa.RecordBatch, i: int) -> tuple[np.ndarray, np.ndarray]:
    """An int64 column as numpy (nulls → 0) and its validity mask."""
    arr = batch.column(i)
    valid = np.ones(len(arr), dtype=bool) if arr.null_count == 0 else ~np.asarray(arr.is_null())
    return np.asarray(arr.fill_null(0)), valid


def _susp_codes(batch: pa.RecordBatch, i: int) -> tuple[np.ndarray, np.ndarray]:
    """suspicious column (read as text, as the row reader does): masks ok (== "0") and flagged ("1")."""
    col = batch.column(i)
    ok = np.asarray(pc.equal(col, "0"))
    flagged = np.asarray(pc.equal(pc.utf8_trim_whitespace(col), "1"))
    return ok, flagged


def _skip_counts(stats: ReaderStats, **masks: np.ndarray) -> None:
    for reason, m in masks.items():
        n = int(np.count_nonzero(m))
        if n:
            stats.skip(reason, n)


def _ffill(values: np.ndarray, update: np.ndarray, carry: int) -> np.ndarray:
    """values where ``update``, else the last updated value before (``carry`` before the first)."""
    idx = np.where(update, np.arange(len(values)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, values[np.maximum(idx, 0)], carry)


def read_lean_trade(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """AlgoSeek trade prints: skip ``suspicious=1``; aggressor side by the tick rule."""
    day, sym = _date_and_symbol(path, LEAN_TRADE_NAME, "Lean trade tick")
    clock = WallClock.named(day, NEW_YORK)
    return _with_fallback(
        lambda st: _arrow_trades(path, st, sym, clock), lambda st: _py_trades(path, st, sym, clock.to_ns), stats
    )


_TRADE_COLS = ["t", "px", "qty", "ex", "cond", "susp"]
_TRADE_TYPES = {"t": pa.int64(), "px": pa.int64(), "qty": pa.int64(), "ex": pa.string(), "cond": pa.string(),
                "susp": pa.string()}


def _arrow_trades(path: Path, stats: ReaderStats, sym: str, clock: WallClock) -> Iterator[Rec]:
    counts = _Counts()
    prev_px = 0
    side = 0
    try:
        for batch in _arrow_batches(path, _TRADE_COLS, _TRADE_TYPES, stats, counts):
            t, v0 = _col(batch, 0)
            px, v1 = _col(batch, 1)
            qty, v2 = _col(batch, 2)
            ok, flagged = _susp_codes(batch, 5)
            # The row reader's order of checks: parse, suspicious, price, size.
            parsed = v0 & v1 & v2
            susp = parsed & ~ok
            good = parsed & ok
            bad_price = good & ((px <= 0) | (px >= _MAX_DECI_CENTS) | (t < 0))
            good &= ~bad_price
            bad_size = good & ((qty <= 0) | (qty > MAX_SIZE))
            good &= ~bad_size
            _skip_counts(stats, bad_row=~parsed | (susp & ~flagged), suspicious=susp & flagged,
                         bad_price=bad_price, bad_size=bad_size)
            if not good.any():
                continue
            t, px, qty = t[good], px[good], qty[good]
            # Tick rule, carried across batches: the sign of each price change, zero ticks keep the last.
            change = np.sign(np.diff(px, prepend=prev_px if prev_px else px[0]))
            sides = _ffill(change, change != 0, side)
            prev_px = int(px[-1])
            side = int(sides[-1])
            ts = clock.to_ns_array(t).tolist()
            prices = (px / _DECI_CENTS).tolist()
            sizes = qty.astype(np.float64).tolist()
            for ts_i, p, q, s in zip(ts, prices, sizes, sides.tolist(), strict=True):
                yield (ts_i, sym, TRADE, p, q, 0.0, 0.0, 0.0, 0.0, s, True)
    finally:
        counts.flush(stats)


def _py_trades(path: Path, stats: ReaderStats, sym: str, to_ns: Callable[[int], int]) -> Iterator[Rec]:
    skip = stats.skip
    prev_px = 0
    side = 0
    rows = 0
    try:
        with open_text(path) as f:
            for row in csv_rows(f, stats):
                if not row:
                    continue
                rows += 1
                try:
                    if len(row) != 6:
                        raise IndexError
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


_QUOTE_COLS = ["t", "b", "bs", "a", "as", "ex", "cond", "susp"]
_QUOTE_TYPES = {"t": pa.int64(), "b": pa.int64(), "bs": pa.int64(), "a": pa.int64(), "as": pa.int64(),
                "ex": pa.string(), "cond": pa.string(), "susp": pa.string()}


def _py_quote_rows(path: Path, stats: ReaderStats, counts: _Counts) -> Iterator[tuple[int, int, int, int, int, str]]:
    """Valid, non-suspicious quote rows as ``(time_ms, bid, bid_size, ask, ask_size, exchange)``."""
    skip = stats.skip
    with open_text(path) as f:
        for row in csv_rows(f, stats):
            if not row:
                continue
            counts.rows += 1
            try:
                if len(row) != 8:
                    raise IndexError
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
            # A side reads (0, 0) when the row does not update it; a size without a price, a
            # negative number, or one beyond the wire bounds is malformed.
            if (
                t < 0 or b < 0 or a < 0 or bsz < 0 or asz < 0
                or b >= _MAX_DECI_CENTS or a >= _MAX_DECI_CENTS
                or bsz > MAX_SIZE or asz > MAX_SIZE
                or (b == 0 and bsz != 0) or (a == 0 and asz != 0)
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
    clock = WallClock.named(day, NEW_YORK)
    return _with_fallback(
        lambda st: _arrow_nbbo(path, st, sym, clock), lambda st: _py_nbbo(path, st, sym, clock.to_ns), stats
    )


def _arrow_nbbo(path: Path, stats: ReaderStats, sym: str, clock: WallClock) -> Iterator[Rec]:
    counts = _Counts()
    bp = bs = ap = az = 0  # book state after the last row read
    last = (0, 0, 0, 0)  # last emitted book
    pend_t = -1  # millisecond whose rows may continue into the next batch (not yet evaluated)

    def evaluate(b: int, bz: int, a: int, z: int) -> bool:
        """Scalar evaluation of one millisecond's final book (the group spanning two batches)."""
        nonlocal last
        if not b or not a:
            counts.one_sided += 1
        elif b >= a:
            counts.crossed += 1
        elif (b, bz, a, z) != last:
            last = (b, bz, a, z)
            return True
        else:
            counts.unchanged += 1
        return False

    try:
        for batch in _arrow_batches(path, _QUOTE_COLS, _QUOTE_TYPES, stats, counts):
            t, v0 = _col(batch, 0)
            b, v1 = _col(batch, 1)
            bz, v2 = _col(batch, 2)
            a, v3 = _col(batch, 3)
            az_, v4 = _col(batch, 4)
            ok, flagged = _susp_codes(batch, 7)
            parsed = v0 & v1 & v2 & v3 & v4
            susp = parsed & ~ok
            good = parsed & ok
            bad_price = good & (
                (t < 0) | (b < 0) | (a < 0) | (bz < 0) | (az_ < 0)
                | (b >= _MAX_DECI_CENTS) | (a >= _MAX_DECI_CENTS) | (bz > MAX_SIZE) | (az_ > MAX_SIZE)
                | ((b == 0) & (bz != 0)) | ((a == 0) & (az_ != 0))
            )
            good &= ~bad_price
            no_update = good & (b == 0) & (a == 0)
            good &= ~no_update
            _skip_counts(stats, bad_row=~parsed | (susp & ~flagged), suspicious=susp & flagged,
                         bad_price=bad_price, no_update=no_update)
            if not good.any():
                continue
            t, b, bz, a, az_ = t[good], b[good], bz[good], a[good], az_[good]
            out_t: list[int] = []
            books: list[tuple[int, int, int, int]] = []
            if pend_t >= 0 and t[0] != pend_t and evaluate(bp, bs, ap, az):
                out_t.append(pend_t)
                books.append(last)
            # Book after every row: each side forward-filled from the rows that update it.
            upd_b, upd_a = b > 0, a > 0
            fbp = _ffill(b, upd_b, bp)
            fbs = _ffill(bz, upd_b, bs)
            fap = _ffill(a, upd_a, ap)
            faz = _ffill(az_, upd_a, az)
            bp, bs, ap, az = int(fbp[-1]), int(fbs[-1]), int(fap[-1]), int(faz[-1])
            # Each millisecond's last row is where its book is evaluated; the batch's last
            # millisecond may continue in the next batch, so it stays pending.
            ends = np.flatnonzero(t[1:] != t[:-1])
            pend_t = int(t[-1])
            eb, ea = fbp[ends], fap[ends]
            one_sided = (eb == 0) | (ea == 0)
            crossed = ~one_sided & (eb >= ea)
            okb = ~one_sided & ~crossed
            counts.one_sided += int(np.count_nonzero(one_sided))
            counts.crossed += int(np.count_nonzero(crossed))
            gi = ends[okb]
            gb, gbs, ga, gas = fbp[gi], fbs[gi], fap[gi], faz[gi]
            if len(gi):
                # Emit where the book differs from the previous emitted one.
                pb = np.concatenate(([last[0]], gb[:-1]))
                pbs = np.concatenate(([last[1]], gbs[:-1]))
                pa_ = np.concatenate(([last[2]], ga[:-1]))
                pas = np.concatenate(([last[3]], gas[:-1]))
                changed = (gb != pb) | (gbs != pbs) | (ga != pa_) | (gas != pas)
                counts.unchanged += int(len(gi) - np.count_nonzero(changed))
                last = (int(gb[-1]), int(gbs[-1]), int(ga[-1]), int(gas[-1]))
                gi, gb, gbs, ga, gas = gi[changed], gb[changed], gbs[changed], ga[changed], gas[changed]
            for tp, book in zip(out_t, books, strict=True):
                yield (clock.to_ns(tp), sym, QUOTE, 0.0, 0.0, book[0] / _DECI_CENTS, float(book[1]),
                       book[2] / _DECI_CENTS, float(book[3]), 0, False)
            ts = clock.to_ns_array(t[gi]).tolist()
            for ts_i, b_i, bs_i, a_i, as_i in zip(
                ts, (gb / _DECI_CENTS).tolist(), gbs.astype(np.float64).tolist(),
                (ga / _DECI_CENTS).tolist(), gas.astype(np.float64).tolist(), strict=True,
            ):
                yield (ts_i, sym, QUOTE, 0.0, 0.0, b_i, bs_i, a_i, as_i, 0, False)
        if pend_t >= 0 and evaluate(bp, bs, ap, az):
            yield (clock.to_ns(pend_t), sym, QUOTE, 0.0, 0.0, bp / _DECI_CENTS, float(bs),
                   ap / _DECI_CENTS, float(az), 0, False)
    finally:
        counts.flush(stats)


def _py_nbbo(path: Path, stats: ReaderStats, sym: str, to_ns: Callable[[int], int]) -> Iterator[Rec]:
    counts = _Counts()
    bp = bs = ap = az = 0
    last = (0, 0, 0, 0)
    prev_t = -1

    def close_ms() -> Rec | None:
        """The book as it stood at the end of millisecond ``prev_t``: a QUOTE if it changed."""
        nonlocal last
        if not bp or not ap:
            counts.one_sided += 1
        elif bp >= ap:
            counts.crossed += 1
        elif (bp, bs, ap, az) != last:
            last = (bp, bs, ap, az)
            return (to_ns(prev_t), sym, QUOTE, 0.0, 0.0,
                    bp / _DECI_CENTS, float(bs), ap / _DECI_CENTS, float(az), 0, False)
        else:
            counts.unchanged += 1
        return None

    try:
        for t, b, bsz, a, asz, _ in _py_quote_rows(path, stats, counts):
            if t != prev_t:
                if prev_t >= 0:
                    rec = close_ms()
                    if rec is not None:
                        yield rec
                prev_t = t
            if b:
                bp = b
                bs = bsz
            if a:
                ap = a
                az = asz
        if prev_t >= 0:
            rec = close_ms()
            if rec is not None:
                yield rec
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
        for t, b, bsz, a, asz, ex in _py_quote_rows(path, stats, counts):
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
                if not row:
                    continue
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
