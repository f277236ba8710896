"""The canonical tick schema: the one format users can produce from anything.

CSV (with a header row; optionally gzip) or Parquet with columns::

    ts, symbol, type, price, size, bid, bid_size, ask, ask_size, side

- ``ts``: integer nanoseconds since the epoch (UTC), or ISO-8601 with an explicit offset
  (``2024-01-02T14:30:00.123456789Z`` / ``…+01:00``); in Parquet also a tz-aware timestamp.
- ``symbol``: 1–64 characters. ``type``: ``trade`` or ``quote``.
- trade: ``price`` > 0 and ``size`` >= 0 required; bid/ask optional (the quote at the trade).
- quote: ``bid`` and/or ``ask`` > 0 with their sizes; bid >= ask (crossed/locked) is skipped.
- ``side`` (trades, optional): ``buy``/``b``/``1``/``+1``, ``sell``/``s``/``-1``, ``0`` (unknown);
  empty or absent → inferred by the tick rule per symbol.

Only ``ts``, ``symbol`` and ``type`` columns are required; absent numeric columns read
as 0. Rows must be in time order (out-of-order rows are passed through and counted).
One record per line: a quoted field may contain commas but not line breaks.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.messages import Tick, TickType
from tick_replay.formats.base import (
    MAX_PRICE,
    MAX_SIZE,
    QUOTE,
    TRADE,
    FormatError,
    ReaderStats,
    Rec,
    iso_to_ns,
    open_text,
    text_lines,
)
from tick_replay.formats.binance import parquet_batches, ts_column_ns

__all__ = [
    "COLUMNS",
    "read_canonical",
    "read_canonical_csv",
    "read_canonical_parquet",
    "sniff_canonical",
    "write_canonical",
]

COLUMNS = ("ts", "symbol", "type", "price", "size", "bid", "bid_size", "ask", "ask_size", "side")
REQUIRED = ("ts", "symbol", "type")
_ALIASES = {"ts_event": "ts", "timestamp": "ts", "qty": "size", "quantity": "size"}
_TYPES = {"trade": TRADE, "quote": QUOTE}
_SIDES = {"buy": 1, "b": 1, "1": 1, "+1": 1, "sell": -1, "s": -1, "-1": -1, "0": 0}
_BATCH = 65_536


def _norm(cols: Sequence[str]) -> list[str]:
    out = []
    for c in cols:
        c = c.strip().lower().lstrip("\ufeff")
        out.append(_ALIASES.get(c, c))
    return out


def sniff_canonical(path: Path, head: bytes) -> bool:
    if head[:4] == b"PAR1":
        from tick_replay.formats.binance import parquet_columns

        cols = set(_norm(parquet_columns(path)))
    else:
        first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
        cols = set(_norm(next(csv.reader([first]), [])))
    return set(REQUIRED) <= cols and bool(cols & {"price", "bid", "ask"})


def _ts(v: object) -> int:
    if isinstance(v, int):
        return v
    s = str(v).strip()
    if s.lstrip("+-").isdigit():
        return int(s)
    return iso_to_ns(s)


def _opt(v: object) -> float:
    if v is None or v == "":
        return 0.0
    return float(v)  # type: ignore[arg-type]


class _Rows:
    """Row validation shared by the CSV and Parquet readers (values may be str or typed)."""

    def __init__(self, stats: ReaderStats) -> None:
        self.stats = stats
        self.last_px: dict[str, float] = {}
        self.last_side: dict[str, int] = {}

    def rec(self, ts_v, sym_v, typ_v, px_v, sz_v, b_v, bs_v, a_v, as_v, side_v) -> Rec | None:
        skip = self.stats.skip
        try:
            ts = _ts(ts_v)
            typ = _TYPES[str(typ_v).strip().lower()]
            sym = str(sym_v).strip() if sym_v is not None else ""
            px, sz, b, bs, a, az = _opt(px_v), _opt(sz_v), _opt(b_v), _opt(bs_v), _opt(a_v), _opt(as_v)
        except (ValueError, KeyError, TypeError, OverflowError):
            skip("bad_row")
            return None
        if not 0 < len(sym) <= 64:
            skip("bad_symbol")
            return None
        if ts < 0 or ts >= 2**63:
            skip("bad_ts")
            return None
        if not (0.0 <= b < MAX_PRICE and 0.0 <= a < MAX_PRICE and 0.0 <= bs <= MAX_SIZE and 0.0 <= az <= MAX_SIZE):
            skip("bad_price")
            return None
        if typ is TRADE:
            if not 0.0 < px < MAX_PRICE:
                skip("bad_price")
                return None
            if not 0.0 <= sz <= MAX_SIZE:
                skip("bad_size")
                return None
            raw = "" if side_v is None else str(side_v).strip().lower()
            if raw:
                side = _SIDES.get(raw)
                if side is None:
                    # Parquet integer sides arrive as ints / floats.
                    side = _SIDES.get(raw.removesuffix(".0"))
                    if side is None:
                        skip("bad_side")
                        return None
                inferred = False
            else:
                # Tick rule per symbol, as for vendor files without an aggressor flag.
                prev = self.last_px.get(sym)
                side = self.last_side.get(sym, 0)
                if prev is not None:
                    if px > prev:
                        side = 1
                    elif px < prev:
                        side = -1
                self.last_side[sym] = side
                inferred = True
            self.last_px[sym] = px
            return (ts, sym, TRADE, px, sz, b, bs, a, az, side, inferred)
        if b <= 0.0 and a <= 0.0:
            skip("bad_price")
            return None
        if b > 0.0 and a > 0.0 and b >= a:
            skip("crossed_or_locked")
            return None
        return (ts, sym, QUOTE, 0.0, 0.0, b, bs, a, az, 0, False)


def _csv_header(path: Path) -> list[str]:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return _norm(next(csv.reader([line])))
    raise FormatError(f"{path}: empty file (the canonical CSV needs a header row)")


def read_canonical_csv(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """Canonical-schema CSV (header row; ``.gz`` allowed)."""
    cols = _csv_header(path)
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise FormatError(f"{path}: canonical CSV header lacks {', '.join(missing)} (has {', '.join(cols)})")
    idx = [cols.index(c) if c in cols else -1 for c in COLUMNS]
    width = len(cols)

    def gen() -> Iterator[Rec]:
        rows = _Rows(stats)
        n = 0
        header_seen = False
        try:
            with open_text(path) as f:
                for line in text_lines(f, stats):
                    if not line.strip():
                        continue
                    if not header_seen:
                        header_seen = True
                        continue
                    n += 1
                    if '"' in line:
                        try:
                            fields = next(csv.reader([line]))
                        except csv.Error:
                            stats.skip("bad_row")
                            continue
                    else:
                        fields = line.rstrip("\r\n").split(",")
                    if len(fields) != width:
                        stats.skip("bad_row")
                        continue
                    rec = rows.rec(*[fields[i] if i >= 0 else None for i in idx])
                    if rec is not None:
                        yield rec
        finally:
            stats.rows += n

    return gen()


def read_canonical_parquet(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """Canonical-schema Parquet (``ts`` int64 ns, tz-aware timestamp, or ISO string)."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{path}: not a readable parquet file ({e})") from e
    names = pf.schema_arrow.names
    norm = _norm(names)
    missing = [c for c in REQUIRED if c not in norm]
    if missing:
        raise FormatError(f"{path}: canonical parquet lacks column(s) {', '.join(missing)}")
    present = [c for c in COLUMNS if c in norm]
    source = [names[norm.index(c)] for c in present]

    def gen() -> Iterator[Rec]:
        rows = _Rows(stats)
        for batch in parquet_batches(pf, stats, source):
            stats.rows += batch.num_rows
            cols: dict[str, list] = {}
            for name, arr in zip(present, batch.columns, strict=True):
                if name == "ts" and not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                    cols[name] = ts_column_ns(arr)
                else:
                    cols[name] = arr.to_pylist()
            none = [None] * batch.num_rows
            for values in zip(*(cols.get(c, none) for c in COLUMNS), strict=True):
                if values[0] is None:
                    stats.skip("bad_ts")
                    continue
                rec = rows.rec(*values)
                if rec is not None:
                    yield rec

    return gen()


def read_canonical(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """Canonical schema, CSV or Parquet (told apart by the Parquet magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PAR1":
        return read_canonical_parquet(path, stats)
    return read_canonical_csv(path, stats)


def _side_text(side: int) -> str:
    return {1: "buy", -1: "sell"}.get(side, "0")


def write_canonical(path: str | Path, ticks: Iterable[Tick]) -> int:
    """Write ticks in the canonical schema (``.parquet``, ``.csv`` or ``.csv.gz``); returns the count.

    Floats are written with ``repr`` (shortest exact form), so a read-back is exact.
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        for t in ticks:
            cols["ts"].append(t.ts_event)
            cols["symbol"].append(t.symbol)
            cols["type"].append("trade" if t.type == TickType.TRADE else "quote")
            cols["price"].append(t.price)
            cols["size"].append(t.size)
            cols["bid"].append(t.bid)
            cols["bid_size"].append(t.bid_size)
            cols["ask"].append(t.ask)
            cols["ask_size"].append(t.ask_size)
            cols["side"].append(_side_text(t.side))
        schema = pa.schema(
            [("ts", pa.int64()), ("symbol", pa.string()), ("type", pa.string())]
            + [(c, pa.float64()) for c in COLUMNS[3:9]]
            + [("side", pa.string())]
        )
        pq.write_table(pa.table(cols, schema=schema), path)
        return len(cols["ts"])
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    n = 0
    with opener(path, "wt", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for t in ticks:
            w.writerow((
                t.ts_event, t.symbol, "trade" if t.type == TickType.TRADE else "quote",
                repr(t.price), repr(t.size), repr(t.bid), repr(t.bid_size), repr(t.ask), repr(t.ask_size),
                _side_text(t.side) if t.type == TickType.TRADE else "",
            ))
            n += 1
    return n
