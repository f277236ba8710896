"""Binance crypto data in three shapes: nautilus parquet, hftbacktest captures, freqtrade trades.

- nautilus parquet trades (``timestamp, trade_id, price, quantity, buyer_maker``) and quotes
  (``timestamp, symbol, ask_size, ask, bid_size, bid``); ``buyer_maker`` True → the
  aggressor sold (side −1).
- hftbacktest CSV captures ``*_trades.csv.gz`` (``local_ts_ns, event_ms, trade_ms, trade_id,
  price, qty, buyer_is_maker``) and ``*_bbo.csv.gz`` (``local_ts_ns, event_ms, txn_ms,
  update_id, bid_px, bid_qty, ask_px, ask_qty``). Both are stamped and ordered by
  ``local_ts_ns`` (the recorder clock): spot bookTicker has no exchange time, and one clock
  for both files keeps trades and quotes merged in the order they were received.
- hftbacktest ``*_depth.csv.gz`` (``local_ts_ns, kind, event_ms, txn_ms, first_update_id,
  last_update_id, prev_last_update_id, side, price, qty``; one row per level, the rows of one
  message share ``local_ts_ns``, kind and ids): order-book records (snapshot / diff-depth
  delta), stamped by ``local_ts_ns`` like the trades and quotes of the same capture.
- freqtrade public trades (``,timestamp,id,type,side,price,amount,cost,date``): ms epoch,
  ``side`` is the taker side.

Trades carry the exchange's aggressor flag (never inferred); quotes are emitted per
change of (bid, bid size, ask, ask size), crossed/locked ones skipped and counted.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.messages import MAX_BOOK_LEVELS
from tick_replay.formats.base import (
    BOOK,
    MAX_PRICE,
    MAX_SIZE,
    QUOTE,
    TRADE,
    UNREADABLE,
    FormatError,
    ReaderStats,
    Rec,
    crypto_symbol,
    csv_rows,
    open_text,
    trade_problem,
    truncated,
)

__all__ = [
    "HFT_BBO_HEADER",
    "HFT_DEPTH_HEADER",
    "HFT_TRADES_HEADER",
    "depth_messages",
    "parquet_batches",
    "parquet_columns",
    "read_freqtrade_trades",
    "read_hftbacktest_bbo",
    "read_hftbacktest_depth",
    "read_hftbacktest_trades",
    "read_nautilus_quotes",
    "read_nautilus_trades",
    "sniff_freqtrade",
    "sniff_hftbacktest_bbo",
    "sniff_hftbacktest_depth",
    "sniff_hftbacktest_trades",
    "sniff_nautilus_quotes",
    "sniff_nautilus_trades",
    "ts_column_ns",
]

HFT_DEPTH_HEADER = ("local_ts_ns", "kind", "first_update_id", "last_update_id", "prev_last_update_id", "side",
                    "price", "qty")
HFT_TRADES_HEADER = ("local_ts_ns", "price", "qty", "buyer_is_maker")
HFT_BBO_HEADER = ("local_ts_ns", "bid_px", "bid_qty", "ask_px", "ask_qty")
FREQTRADE_HEADER = ("timestamp", "side", "price", "amount")
NAUTILUS_TRADES = ("timestamp", "price", "quantity", "buyer_maker")
NAUTILUS_QUOTES = ("timestamp", "bid", "bid_size", "ask", "ask_size")
_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_BATCH = 65_536


def _header(head: bytes) -> list[str]:
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return [c.strip().lower() for c in first.split(",")]


def sniff_hftbacktest_trades(path: Path, head: bytes) -> bool:
    h = _header(head)
    return h[:1] == ["local_ts_ns"] and set(HFT_TRADES_HEADER) <= set(h)


def sniff_hftbacktest_bbo(path: Path, head: bytes) -> bool:
    h = _header(head)
    return h[:1] == ["local_ts_ns"] and set(HFT_BBO_HEADER) <= set(h)


def sniff_hftbacktest_depth(path: Path, head: bytes) -> bool:
    h = _header(head)
    return h[:1] == ["local_ts_ns"] and set(HFT_DEPTH_HEADER) <= set(h)


def _opt_int(v: str) -> int | None:
    return int(v) if v else None


DepthMsg = tuple[int, str, int | None, int, int | None, list[tuple[str, str]], list[tuple[str, str]]]


def depth_messages(path: Path, bad_row: Callable[[], None]) -> Iterator[DepthMsg]:
    """Messages of an hftbacktest depth capture in file order: ``(local_ts_ns, kind, first_id,
    last_id, prev_last_id, bids, asks)``, levels as the file's (price, qty) strings. Rows that
    cannot be parsed call ``bad_row`` and are skipped. ``FormatError`` (at the call) for a
    file whose header is not a depth capture's. The one parser of these files: the replay
    (``read_hftbacktest_depth``) and the batch features (``pattern_engine.book``) share it."""
    with open_text(path) as f:
        first = f.readline()
    header = [c.strip().lower() for c in first.strip().split(",")]
    if any(c not in header for c in HFT_DEPTH_HEADER):
        raise FormatError(f"{path}: not an hftbacktest depth capture (header {first.strip()[:200]!r})")
    ix = [header.index(c) for c in HFT_DEPTH_HEADER]

    def gen() -> Iterator[DepthMsg]:
        cur: list | None = None
        key: tuple | None = None
        with open_text(path) as f:
            rows = csv.reader(f)
            next(rows, None)
            for row in rows:
                try:
                    ts_s, kind, first, last, prev, side, price, qty = (row[i] for i in ix)
                    k = (ts_s, kind, first, last, prev)
                    if k != key:
                        if kind not in ("snapshot", "update") or side not in ("b", "a"):
                            raise ValueError(kind)
                        msg = [int(ts_s), kind, _opt_int(first), int(last), _opt_int(prev), [], []]
                    elif side not in ("b", "a"):
                        raise ValueError(side)
                except (IndexError, ValueError):
                    bad_row()
                    continue
                if k != key:
                    if cur is not None:
                        yield tuple(cur)  # type: ignore[misc]
                    cur, key = msg, k
                (cur[5] if side == "b" else cur[6]).append((price, qty))  # type: ignore[index]
            if cur is not None:
                yield tuple(cur)  # type: ignore[misc]

    return gen()


def _float_levels(levels: list[tuple[str, str]], stats: ReaderStats) -> list[tuple[float, float]]:
    out = []
    for p, q in levels:
        try:
            out.append((float(p), float(q)))
        except ValueError:
            stats.skip("bad_level")  # the book would have skipped it too
    return out


def read_hftbacktest_depth(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """hftbacktest Binance depth capture → order-book records (``base.BOOK``), one per message.

    Values are passed on as the file has them: a level whose price or quantity is not a
    number is dropped (``bad_level``), a non-finite or negative one is left for the book to
    skip and count; a side with more than ``MAX_BOOK_LEVELS`` levels drops its message
    (``too_many_levels``: it would not fit a ``BookUpdate``)."""
    sym = crypto_symbol(path)

    def bad() -> None:
        stats.skip("bad_row")

    msgs = depth_messages(path, bad)

    def gen() -> Iterator[Rec]:
        n = 0
        try:
            for ts, kind, first, last, prev, bids, asks in msgs:
                n += len(bids) + len(asks)
                if len(bids) > MAX_BOOK_LEVELS or len(asks) > MAX_BOOK_LEVELS:
                    stats.skip("too_many_levels")
                    continue
                yield (ts, sym, BOOK, kind == "snapshot", first or 0, last, prev or 0,
                       _float_levels(bids, stats), _float_levels(asks, stats), 0, False)
        except UNREADABLE as e:
            truncated(stats, e)
        finally:
            stats.rows += n

    return gen()


def sniff_freqtrade(path: Path, head: bytes) -> bool:
    h = _header(head)
    return set(FREQTRADE_HEADER) <= set(h) and "id" in h and "ts" not in h


def parquet_columns(path: Path) -> list[str]:
    """Column names of a parquet file ([] if it is not one)."""
    try:
        return [n.lower() for n in pq.ParquetFile(path).schema_arrow.names]
    except (pa.ArrowException, OSError):
        return []


def sniff_nautilus_trades(path: Path, head: bytes) -> bool:
    return head[:4] == b"PAR1" and set(NAUTILUS_TRADES) <= set(parquet_columns(path))


def sniff_nautilus_quotes(path: Path, head: bytes) -> bool:
    return head[:4] == b"PAR1" and set(NAUTILUS_QUOTES) <= set(parquet_columns(path))


def _csv_index(path: Path, required: Sequence[str]) -> dict[str, int]:
    """Column name → index from the header line; FormatError naming the missing columns."""
    with open_text(path) as f:
        first = f.readline()
    cols = [c.strip().lower() for c in first.strip().split(",")]
    missing = [c for c in required if c not in cols]
    if missing:
        raise FormatError(f"{path}: header lacks column(s) {', '.join(missing)} (header: {first.strip()[:200]!r})")
    return {c: i for i, c in enumerate(cols)}


def _flag(v: str) -> bool:
    return v.strip().lower() in _TRUE


def _data_rows(path: Path, stats: ReaderStats) -> Iterator[list[str]]:
    with open_text(path) as f:
        rows = csv_rows(f, stats)
        next(rows, None)  # the header
        yield from rows


def _csv_trades(
    path: Path, stats: ReaderStats, parse: Callable[[list[str]], tuple[int, float, float, int]]
) -> Iterator[Rec]:
    """Trade records from a CSV whose rows ``parse`` turns into (ts_ns, price, qty, side).

    A row ``parse`` cannot read is skipped as ``bad_row``; a non-positive or absurd price or
    size as ``bad_price`` / ``bad_size``.
    """
    sym = crypto_symbol(path)

    def gen() -> Iterator[Rec]:
        skip = stats.skip
        rows = 0
        try:
            for row in _data_rows(path, stats):
                rows += 1
                try:
                    ts, px, qty, side = parse(row)
                except (ValueError, IndexError):
                    skip("bad_row")
                    continue
                bad = trade_problem(ts, px, qty)
                if bad:
                    skip(bad)
                    continue
                yield (ts, sym, TRADE, px, qty, 0.0, 0.0, 0.0, 0.0, side, False)
        finally:
            stats.rows += rows

    return gen()


def read_hftbacktest_trades(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """hftbacktest trade rows, stamped with ``local_ts_ns``; ``buyer_is_maker=1`` → side −1."""
    ix = _csv_index(path, HFT_TRADES_HEADER)
    its, ipx, iqty, imaker = (ix[c] for c in HFT_TRADES_HEADER)

    def parse(row: list[str]) -> tuple[int, float, float, int]:
        return int(row[its]), float(row[ipx]), float(row[iqty]), (-1 if _flag(row[imaker]) else 1)

    return _csv_trades(path, stats, parse)


def _book(rows: Iterator[tuple[int, float, float, float, float]], sym: str, stats: ReaderStats) -> Iterator[Rec]:
    """Quotes from top-of-book rows: drop crossed/locked and unchanged ones (counted)."""
    crossed = unchanged = 0
    last = (0.0, 0.0, 0.0, 0.0)
    try:
        for ts, b, bq, a, aq in rows:
            if b >= a:
                crossed += 1
                continue
            q = (b, bq, a, aq)
            if q == last:
                unchanged += 1
                continue
            last = q
            yield (ts, sym, QUOTE, 0.0, 0.0, b, bq, a, aq, 0, False)
    finally:
        if crossed:
            stats.skip("crossed_or_locked", crossed)
        if unchanged:
            stats.skip("unchanged", unchanged)


def _valid_book(b: float, bq: float, a: float, aq: float) -> bool:
    return 0.0 < b < MAX_PRICE and 0.0 < a < MAX_PRICE and 0.0 <= bq <= MAX_SIZE and 0.0 <= aq <= MAX_SIZE


def read_hftbacktest_bbo(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """hftbacktest bookTicker rows, stamped with ``local_ts_ns``; one QUOTE per change."""
    sym = crypto_symbol(path)
    ix = _csv_index(path, HFT_BBO_HEADER)
    its, ib, ibq, ia, iaq = (ix[c] for c in HFT_BBO_HEADER)

    def rows() -> Iterator[tuple[int, float, float, float, float]]:
        skip = stats.skip
        n = 0
        try:
            for row in _data_rows(path, stats):
                n += 1
                try:
                    ts = int(row[its])
                    b = float(row[ib])
                    bq = float(row[ibq])
                    a = float(row[ia])
                    aq = float(row[iaq])
                except (ValueError, IndexError):
                    skip("bad_row")
                    continue
                if not _valid_book(b, bq, a, aq) or ts < 0:
                    skip("bad_price")
                    continue
                yield ts, b, bq, a, aq
        finally:
            stats.rows += n

    return _book(rows(), sym, stats)


def read_freqtrade_trades(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """freqtrade/ccxt public trades: ms epoch ``timestamp``, taker ``side``, ``price``, ``amount``."""
    ix = _csv_index(path, FREQTRADE_HEADER)
    its, iside, ipx, iqty = (ix[c] for c in FREQTRADE_HEADER)
    sides = {"buy": 1, "sell": -1}

    def parse(row: list[str]) -> tuple[int, float, float, int]:
        side = sides.get(row[iside].strip().lower(), 0)
        return int(row[its]) * 1_000_000, float(row[ipx]), float(row[iqty]), side

    return _csv_trades(path, stats, parse)


# -- parquet ----------------------------------------------------------------------------


def ts_column_ns(arr: pa.Array | pa.ChunkedArray) -> list[int | None]:
    """A timestamp / integer column as ns epoch UTC ints (None where null or unparseable)."""
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            # A naive timestamp's zone is unknown: refuse the whole column rather than guess.
            return [None] * len(arr)
        return pc.cast(pc.cast(arr, pa.timestamp("ns", t.tz)), pa.int64()).to_pylist()
    if pa.types.is_integer(t):
        return pc.cast(arr, pa.int64()).to_pylist()
    return [None] * len(arr)


def _float_column(arr: pa.Array | pa.ChunkedArray) -> list:
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type):
        return pc.cast(arr, pa.float64()).to_pylist()
    return arr.to_pylist()  # strings: parsed (or rejected) row by row


def parquet_batches(pf: pq.ParquetFile, stats: ReaderStats, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Record batches; a corrupt part ends the file (counted in the stats) instead of raising."""
    try:
        yield from pf.iter_batches(batch_size=_BATCH, columns=list(columns))
    except (pa.ArrowException, *UNREADABLE) as e:
        truncated(stats, e)


def _open_parquet(path: Path, required: Sequence[str]) -> tuple[pq.ParquetFile, list[str]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{path}: not a readable parquet file ({e})") from e
    names = {n.lower(): n for n in pf.schema_arrow.names}
    missing = [c for c in required if c not in names]
    if missing:
        raise FormatError(f"{path}: parquet lacks column(s) {', '.join(missing)}")
    return pf, [names[c] for c in required]


def _num(v: object) -> float:
    # Strings and numbers alike; None / garbage raise (TypeError / ValueError) → bad row.
    return float(v)  # type: ignore[arg-type]


def read_nautilus_trades(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """Nautilus parquet trades; ``buyer_maker`` (bool or "True"/"False") True → side −1."""
    sym = crypto_symbol(path)
    pf, cols = _open_parquet(path, NAUTILUS_TRADES)

    def gen() -> Iterator[Rec]:
        skip = stats.skip
        for batch in parquet_batches(pf, stats, cols):
            n = batch.num_rows
            stats.rows += n
            ts_l = ts_column_ns(batch.column(0))
            px_l = _float_column(batch.column(1))
            qty_l = _float_column(batch.column(2))
            maker = batch.column(3)
            mk_l = maker.to_pylist() if pa.types.is_boolean(maker.type) else [
                None if v is None else _flag(str(v)) for v in maker.to_pylist()
            ]
            for ts, px, qty, mk in zip(ts_l, px_l, qty_l, mk_l, strict=True):
                try:
                    px = _num(px)
                    qty = _num(qty)
                except (TypeError, ValueError):
                    skip("bad_row")
                    continue
                if ts is None or mk is None:
                    skip("bad_row")
                    continue
                bad = trade_problem(ts, px, qty)
                if bad:
                    skip(bad)
                    continue
                yield (ts, sym, TRADE, px, qty, 0.0, 0.0, 0.0, 0.0, -1 if mk else 1, False)

    return gen()


def read_nautilus_quotes(path: Path, stats: ReaderStats) -> Iterator[Rec]:
    """Nautilus parquet best bid/ask; one QUOTE per change."""
    sym = crypto_symbol(path)
    pf, cols = _open_parquet(path, NAUTILUS_QUOTES)

    def rows() -> Iterator[tuple[int, float, float, float, float]]:
        skip = stats.skip
        for batch in parquet_batches(pf, stats, cols):
            stats.rows += batch.num_rows
            columns = [ts_column_ns(batch.column(0))] + [_float_column(batch.column(i)) for i in range(1, 5)]
            for ts, b, bq, a, aq in zip(*columns, strict=True):
                try:
                    b, bq, a, aq = _num(b), _num(bq), _num(a), _num(aq)
                except (TypeError, ValueError):
                    skip("bad_row")
                    continue
                if ts is None:
                    skip("bad_row")
                    continue
                if not _valid_book(b, bq, a, aq) or ts < 0:
                    skip("bad_price")
                    continue
                yield ts, b, bq, a, aq

    return _book(rows(), sym, stats)

