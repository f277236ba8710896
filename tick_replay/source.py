"""Tick sources: files opened through the format readers, merged in time order, sequenced.

``open_ticks(paths)`` returns a ``TickSource``: iterating it streams every file through
its reader, merges them with ``heapq.merge`` on (ts_event, file index, row) — stable, so
equal timestamps keep the order of the paths given, then file order — and only then
builds each ``Tick`` with its per-symbol ``seq`` (1, 2, 3 … in merged order), so the
same files in the same order always give the same ticks and the same seq.

While merging, the last quote per symbol is remembered. A trade without its own quote
gets the quote prevailing *before* it (strictly earlier ts, at most ``QUOTE_MAX_AGE_NS``
old) in its bid/ask fields, and a trade whose side came from the tick rule is
re-classified by the quote rule (Lee–Ready: above the mid → buy, below → sell, at the
mid → keep the tick-rule side). Trades with an exchange aggressor flag keep it.

Order-book files (depth captures, ``Format.books``) are read only with
``open_ticks(..., books=True)`` (the replay): their messages become ``BookUpdate``s, merged
into the same time order, *before* ticks stamped the same instant (the order rule of
``TickBatch``: a tick sees the book messages stamped at or before it), with their own
per-symbol ``seq`` (adding a depth file does not change the ticks' seq).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import pyarrow as pa

from common.messages import BookUpdate, Tick, TickType
from tick_replay.formats import FORMATS, FormatError, ReaderStats, Rec, detect_format, get_format
from tick_replay.formats.base import BOOK, UNREADABLE

__all__ = ["QUOTE_MAX_AGE_NS", "TickSource", "open_ticks", "sequence"]

QUOTE_MAX_AGE_NS = 300 * 1_000_000_000  # older quotes (e.g. the previous session's) are not used for trades

_QUOTE = TickType.QUOTE
_NO_QUOTE = (-1, 0.0, 0.0, 0.0, 0.0)


def _accounted(recs: Iterator[Rec], stats: ReaderStats) -> Iterator[Rec]:
    """Count ticks, symbols, first/last ts and time regressions of one file."""
    n = ooo = 0
    last = -1
    first: int | None = None
    syms = stats.symbols
    try:
        for rec in recs:
            ts = rec[0]
            if ts < last:
                ooo += 1
            else:
                last = ts
            if first is None:
                first = ts
            n += 1
            if rec[1] not in syms:
                syms.add(rec[1])
            yield rec
    finally:
        stats.ticks += n
        stats.out_of_order += ooo
        if first is not None:
            stats.first_ts = first if stats.first_ts is None else min(stats.first_ts, first)
        if last >= 0:
            stats.last_ts = last if stats.last_ts is None else max(stats.last_ts, last)


def sequence(recs: Iterable[Rec]) -> Iterator[Tick | BookUpdate]:
    """Records in final order → Ticks with per-symbol seq (and the quote rule for inferred sides);
    order-book records → BookUpdates (their own per-symbol seq)."""
    seqs: dict[str, int] = {}
    book_seqs: dict[str, int] = {}
    quotes: dict[str, list] = {}  # symbol -> [current quote, the one before it], as (ts, b, bs, a, as)
    for ts, sym, typ, px, sz, b, bs, a, az, side, inferred in recs:
        if typ is BOOK:  # (ts, sym, BOOK, snapshot, first, last, prev, bids, asks, 0, False)
            k = book_seqs.get(sym, 0) + 1
            book_seqs[sym] = k
            yield BookUpdate(sym, ts, k, px, sz, b, bs, a, az)
            continue
        n = seqs.get(sym, 0) + 1
        seqs[sym] = n
        if typ is _QUOTE:
            q = quotes.get(sym)
            if q is None:
                quotes[sym] = [(ts, b, bs, a, az), _NO_QUOTE]
            else:
                if ts > q[0][0]:
                    q[1] = q[0]
                q[0] = (ts, b, bs, a, az)
        elif not b and not a and (q := quotes.get(sym)) is not None:
            # The quote prevailing before the trade: one stamped at the same instant may be its result.
            qts, qb, qbs, qa, qaz = q[0] if q[0][0] < ts else q[1]
            if qts >= 0 and ts - qts <= QUOTE_MAX_AGE_NS and qb > 0.0 and qa > 0.0:
                b, bs, a, az = qb, qbs, qa, qaz
                if inferred:
                    mid = (qb + qa) * 0.5
                    if px > mid:
                        side = 1
                    elif px < mid:
                        side = -1
        yield Tick(sym, typ, ts, n, px, sz, b, bs, a, az, side)


class TickSource:
    """Ticks of one or more files in merged time order, with per-symbol ``seq``.

    Iterable (each iteration re-reads the files from the start and resets ``stats``).
    ``stats`` holds one ``ReaderStats`` per file: rows, ticks, skipped rows by reason,
    symbols, first/last ts_event.
    """

    def __init__(self, paths: list[Path], formats: list[str]) -> None:
        self.paths = paths
        self.formats = formats
        self.stats: list[ReaderStats] = [ReaderStats(str(p), f) for p, f in zip(paths, formats, strict=True)]

    @property
    def has_books(self) -> bool:
        """True when an order-book file is among the paths (iteration then yields BookUpdates too)."""
        return any(FORMATS[f].books for f in self.formats)

    def __iter__(self) -> Iterator[Tick | BookUpdate]:
        self.stats = [ReaderStats(str(p), f) for p, f in zip(self.paths, self.formats, strict=True)]
        streams = [
            _accounted(FORMATS[f].reader(p, st), st)
            for p, f, st in zip(self.paths, self.formats, self.stats, strict=True)
        ]
        # heapq.merge keeps equal keys in the order of its inputs: book files first, so a book
        # message goes before a tick stamped the same instant (TickBatch's order rule).
        order = sorted(range(len(streams)), key=lambda i: not FORMATS[self.formats[i]].books)
        streams = [streams[i] for i in order]
        if not streams:
            return iter(())
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=itemgetter(0))
        return sequence(merged)

    @property
    def symbols(self) -> list[str]:
        return sorted({s for st in self.stats for s in st.symbols})

    def stats_dicts(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.stats]

    def __repr__(self) -> str:
        files = ", ".join(f"{p.name}:{f}" for p, f in zip(self.paths, self.formats, strict=True))
        return f"TickSource({files})"


def open_ticks(paths: Iterable[str | Path], fmt: str | None = None, *, books: bool = False) -> TickSource:
    """Open tick files as one merged, sequenced stream.

    ``fmt`` forces one format name (``tick_replay.FORMATS``) for every file; by default
    each file's format is detected from its name and content. Raises ``FormatError``
    (naming the file) for a missing file, an unknown format, or a file the format cannot
    read (bad name / header) — before any tick is produced. Bad rows inside a file are
    skipped and counted in ``TickSource.stats``, never raised.

    ``books``: accept order-book files (depth captures); the stream then holds
    ``BookUpdate``s among the ticks. Without it such a file is refused (FormatError): a
    consumer expecting ticks only would choke on them.
    """
    ps = [Path(p) for p in paths]
    forced = get_format(fmt).name if fmt else None
    formats = []
    for p in ps:
        if not p.is_file():
            raise FormatError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
        name = forced or detect_format(p)
        if FORMATS[name].books and not books:
            raise FormatError(f"{p}: an order-book file ({name}); only the replay reads these among ticks "
                              "(open_ticks(..., books=True)); for batch features use pattern_engine.book.book_series")
        # Readers check names and headers eagerly: a bad file fails here, not mid-replay.
        try:
            FORMATS[name].reader(p, ReaderStats(str(p), name))
        except (*UNREADABLE, pa.ArrowException, UnicodeError) as e:
            raise FormatError(f"{p}: cannot be read as {name}: {e}") from e
        formats.append(name)
    return TickSource(ps, formats)
