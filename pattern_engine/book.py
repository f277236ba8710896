"""Level-2 order books from snapshots and deltas, and order-book imbalance over the top N levels.

- ``L2Book``: one symbol's price-level book. ``snapshot(bids, asks)`` replaces it;
  ``apply(bids, asks)`` applies one delta message (absolute quantity per price, 0 deletes
  the level). Levels are ``(price, qty)`` pairs of numbers or numeric strings. Bad input
  never raises: a level whose price is not a finite number > 0 or whose quantity is not a
  finite number >= 0 is skipped and counted (``stats.bad_levels``); a message that would
  leave the book crossed (best bid >= best ask) is rolled back whole and counted
  (``stats.crossed``), so the book only ever holds uncrossed states.
- ``imbalance(n)`` = (Σ bid qty − Σ ask qty) / (Σ bid qty + Σ ask qty) over the best ``n``
  levels of each side (fewer when a side has fewer); in [−1, 1]; NaN for an empty book.
- ``BinanceDepthBook``: Binance's diff-depth sync rules on top: updates received while
  there is no synced snapshot are buffered (the last ``PENDING_MAX``); a snapshot replays
  them, dropping those with ``u <= lastUpdateId``; the first applied update must straddle
  it, then each update must continue the previous one (spot ``U == prev u + 1``, USD-M
  futures ``pu == prev u``). A break in the chain is counted (``stats.gaps``) and the book
  is out of sync (no imbalance reported, updates buffered) until the next snapshot.
- ``read_binance_depth(path)``: the hftbacktest depth captures in ``../shared/data``
  (``*_depth.csv.gz``, one row per level, rows of one message share ``local_ts_ns`` and
  ids) as messages; ``book_series(path)`` replays one into a ``BookSeries`` (imbalance
  after every change of the book or of its sync state — NaN while out of sync —, stamped
  ``local_ts_ns`` like the same capture's ticks) that
  ``batch_features.compute_features(books=...)`` joins to ticks as of their ``ts_event``.
- ``SymbolBook``: the per-symbol wrapper both drivers feed (``book_series`` and the live
  engine, ``engine.PatternEngine``): Binance rules when messages carry update ids, plain L2
  otherwise, imbalance reported only while synced.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tick_replay.formats.base import crypto_symbol
from tick_replay.formats.binance import depth_messages

__all__ = [
    "BinanceDepthBook",
    "BookSeries",
    "BookStats",
    "DepthMessage",
    "L2Book",
    "SymbolBook",
    "book_series",
    "read_binance_depth",
]

Level = tuple[object, object]


@dataclass
class BookStats:
    """What a book did with its input (every skipped thing is counted, never raised)."""

    snapshots: int = 0
    messages: int = 0  # delta messages applied
    levels: int = 0  # level updates applied (snapshots and deltas)
    bad_levels: int = 0  # unparsable / non-finite / non-positive price / negative qty
    crossed: int = 0  # messages or snapshots rolled back because they crossed the book
    stale: int = 0  # Binance: updates already contained in the snapshot (u <= lastUpdateId)
    unsynced: int = 0  # Binance: updates never applied for want of a synced snapshot
    gaps: int = 0  # Binance: breaks in the update-id chain
    bad_rows: int = 0  # reader: rows that could not be parsed at all

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _level(price: object, qty: object) -> tuple[float, float] | None:
    try:
        p = float(price)  # type: ignore[arg-type]
        q = float(qty)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(p) and p > 0.0 and math.isfinite(q) and q >= 0.0):
        return None
    return p, q


class L2Book:
    """Price → quantity per side, with each side's prices kept sorted (best bid last, best ask first)."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bp: list[float] = []  # ascending
        self._ap: list[float] = []  # ascending
        self.stats = BookStats()

    # -- reads ---------------------------------------------------------------------------
    @property
    def best_bid(self) -> float:
        return self._bp[-1] if self._bp else math.nan

    @property
    def best_ask(self) -> float:
        return self._ap[0] if self._ap else math.nan

    def top(self, side: str, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels of ``side`` ("b" or "a"), best first."""
        if side == "b":
            return [(p, self.bids[p]) for p in reversed(self._bp[-n:])] if n > 0 else []
        return [(p, self.asks[p]) for p in self._ap[:n]]

    def imbalance(self, n: int) -> float:
        """(bid qty − ask qty) / (bid qty + ask qty) over the best ``n`` levels; NaN when both are empty."""
        b = sum(self.bids[p] for p in self._bp[-n:]) if n > 0 else 0.0
        a = sum(self.asks[p] for p in self._ap[:n])
        tot = b + a
        return (b - a) / tot if tot > 0.0 else math.nan

    def crossed(self) -> bool:
        return bool(self._bp and self._ap and self._bp[-1] >= self._ap[0])

    def __len__(self) -> int:
        return len(self._bp) + len(self._ap)

    # -- writes --------------------------------------------------------------------------
    def snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Replace the book; a crossed snapshot is refused (book unchanged, counted). True if taken."""
        new_b: dict[float, float] = {}
        new_a: dict[float, float] = {}
        for side, dst in ((bids, new_b), (asks, new_a)):
            for price, qty in side:
                lv = _level(price, qty)
                if lv is None:
                    self.stats.bad_levels += 1
                elif lv[1] > 0.0:
                    dst[lv[0]] = lv[1]
                else:
                    dst.pop(lv[0], None)
        if new_b and new_a and max(new_b) >= min(new_a):
            self.stats.crossed += 1
            return False
        self.bids, self.asks = new_b, new_a
        self._bp, self._ap = sorted(new_b), sorted(new_a)
        self.stats.snapshots += 1
        self.stats.levels += len(new_b) + len(new_a)
        return True

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Apply one delta message atomically; False (and rolled back) if it would cross the book."""
        undo: list[tuple[bool, float, float]] = []  # (is_bid, price, previous qty or 0)
        for is_bid, side in ((True, bids), (False, asks)):
            book, prices = (self.bids, self._bp) if is_bid else (self.asks, self._ap)
            for price, qty in side:
                lv = _level(price, qty)
                if lv is None:
                    self.stats.bad_levels += 1
                    continue
                undo.append((is_bid, lv[0], book.get(lv[0], 0.0)))
                _set(book, prices, lv[0], lv[1])
        if self.crossed():
            for is_bid, p, q in reversed(undo):
                if is_bid:
                    _set(self.bids, self._bp, p, q)
                else:
                    _set(self.asks, self._ap, p, q)
            self.stats.crossed += 1
            return False
        self.stats.messages += 1
        self.stats.levels += len(undo)
        return True


def _set(book: dict[float, float], prices: list[float], p: float, q: float) -> None:
    if q > 0.0:
        if p not in book:
            insort(prices, p)
        book[p] = q
    elif p in book:
        del book[p]
        del prices[bisect_left(prices, p)]


PENDING_MAX = 10_000


class BinanceDepthBook(L2Book):
    """An ``L2Book`` kept in sync with Binance diff-depth update ids (spot or USD-M futures rules)."""

    def __init__(self, futures: bool = False) -> None:
        super().__init__()
        self.futures = futures
        self.snapshot_id: int | None = None
        self.last_id: int | None = None  # u of the last applied update (None: none yet since the snapshot)
        self.synced = False
        self.pending: deque[tuple] = deque()

    def on_snapshot(self, last_update_id: int, bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Load a snapshot, then replay the updates buffered before it. True when taken."""
        if not self.snapshot(bids, asks):
            self.synced = False
            return False
        self.snapshot_id = last_update_id
        self.last_id = None
        self.synced = True
        pending, self.pending = self.pending, deque()
        for i, args in enumerate(pending):
            self.on_update(*args)
            if not self.synced:  # a gap inside the buffer: the rest waits for the next snapshot
                self.pending.extend(list(pending)[i + 1 :])
                break
        return True

    def on_update(self, first_id: int, last_id: int, prev_last_id: int | None,
                  bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Apply one diff message if the id chain allows; True when the book changed."""
        if not self.synced or self.snapshot_id is None:
            if len(self.pending) >= PENDING_MAX:
                self.pending.popleft()
                self.stats.unsynced += 1
            self.pending.append((first_id, last_id, prev_last_id, bids, asks))
            return False
        if last_id <= self.snapshot_id:
            self.stats.stale += 1
            return False
        futures = self.futures or prev_last_id is not None  # only USD-M diff-depth carries pu
        if self.last_id is None:
            lid = self.snapshot_id if futures else self.snapshot_id + 1
            ok = first_id <= lid <= last_id
        elif futures and prev_last_id is not None:
            ok = prev_last_id == self.last_id
        else:
            ok = first_id == self.last_id + 1
        if not ok:
            self.stats.gaps += 1
            self.synced = False  # wait for the next snapshot; this update may be needed after it
            self.pending.append((first_id, last_id, prev_last_id, bids, asks))
            return False
        self.last_id = last_id
        return self.apply(bids, asks)


class SymbolBook:
    """One symbol's book fed with snapshot / delta messages, as both feature drivers use it.

    The first message decides the kind: with update ids (``last_id`` > 0) a
    ``BinanceDepthBook`` (spot rules, or USD-M rules when ``futures`` or an update carries
    ``pu``), without a plain ``L2Book``. Either reports an imbalance only while *synced*:
    Binance after a snapshot until a break in the id chain; plain L2 after a snapshot
    (deltas before the first snapshot are counted in ``stats.unsynced`` and dropped, a
    refused (crossed) snapshot leaves it unsynced until the next good one).
    """

    __slots__ = ("_plain_synced", "book", "futures")

    def __init__(self, futures: bool = False) -> None:
        self.book: L2Book | None = None
        self.futures = futures
        self._plain_synced = False

    @property
    def synced(self) -> bool:
        b = self.book
        if isinstance(b, BinanceDepthBook):
            return b.synced
        return self._plain_synced

    @property
    def stats(self) -> BookStats:
        return self.book.stats if self.book is not None else BookStats()

    def on_message(self, snapshot: bool, first_id: int | None, last_id: int | None, prev_last_id: int | None,
                   bids: Iterable[Level], asks: Iterable[Level]) -> bool:
        """Apply one message; True when what ``imbalance`` reports may have changed (the book or
        the sync state)."""
        b = self.book
        if b is None:
            b = self.book = BinanceDepthBook(self.futures) if last_id else L2Book()
        if isinstance(b, BinanceDepthBook):
            was = b.synced
            if snapshot:
                changed = b.on_snapshot(last_id or 0, bids, asks)
            else:
                changed = b.on_update(first_id if first_id else -1, last_id or 0, prev_last_id or None, bids, asks)
            return changed or was != b.synced
        if snapshot:
            was = self._plain_synced
            self._plain_synced = b.snapshot(bids, asks)
            return self._plain_synced or was
        if not self._plain_synced:
            b.stats.unsynced += 1
            return False
        return b.apply(bids, asks)

    def imbalance(self, levels: Sequence[int]) -> list[float]:
        """``L2Book.imbalance(n)`` for each ``n`` of ``levels``; NaN for each while not synced."""
        b = self.book
        if b is None or not self.synced:
            return [math.nan] * len(levels)
        return [b.imbalance(n) for n in levels]


@dataclass
class DepthMessage:
    """One snapshot or diff message (``kind`` "snapshot" or "update")."""

    ts: int
    kind: str
    first_id: int | None
    last_id: int
    prev_last_id: int | None
    bids: list[Level] = field(default_factory=list)
    asks: list[Level] = field(default_factory=list)


def read_binance_depth(path: str | Path, stats: BookStats | None = None) -> Iterator[DepthMessage]:
    """Messages of an hftbacktest ``*_depth.csv.gz`` capture, in file order (rows grouped by
    ``local_ts_ns``, kind and ids). Rows that cannot be parsed are skipped and counted in ``stats``.
    The parser is ``tick_replay``'s (``depth_messages``): replay and batch read the same messages."""
    stats = stats if stats is not None else BookStats()

    def bad() -> None:
        stats.bad_rows += 1

    for ts, kind, first, last, prev, bids, asks in depth_messages(Path(path), bad):
        yield DepthMessage(ts, kind, first, last, prev, bids, asks)


@dataclass
class BookSeries:
    """Imbalance after each change of one symbol's book or sync state: ``obi[i, j]`` at ``ts[i]`` over
    ``levels[j]`` (NaN rows while out of sync)."""

    symbol: str
    levels: list[int]
    ts: np.ndarray  # int64, non-decreasing
    obi: np.ndarray  # float64 [len(ts), len(levels)]
    bbo: np.ndarray  # float64 [len(ts), 2]: best bid, best ask (NaN for an empty side or out of sync)
    stats: BookStats


def book_series(paths: str | Path | Sequence[str | Path], levels: Sequence[int] = (1, 5, 10),
                symbol: str | None = None, futures: bool | None = None) -> BookSeries:
    """Replay Binance depth captures of one symbol, in the order given (a continuation file after
    the one with the snapshot); symbol and spot/futures rules default from the first file name
    (``usdm_btcusdt_…`` → ``BTCUSDT-PERP``, futures rules), as ``tick_replay`` names its ticks."""
    ps = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not ps:
        raise ValueError("no depth file given")
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"levels must be positive level counts, got {list(levels)}")
    sym = symbol or crypto_symbol(ps[0])
    fut = futures if futures is not None else sym.endswith("-PERP")
    sb = SymbolBook(futures=fut)
    sb.book = book = BinanceDepthBook(futures=fut)
    ts: list[int] = []
    rows: list[list[float]] = []
    last_ts = -1
    msgs = (m for p in ps for m in read_binance_depth(p, book.stats))
    lv = list(levels)
    for m in msgs:
        changed = sb.on_message(m.kind == "snapshot", m.first_id, m.last_id, m.prev_last_id, m.bids, m.asks)
        # A row per change of what the engine would report (book or sync state: NaN while out of
        # sync). The recorder clock is monotonic; a step back would not be recorded.
        if changed and m.ts >= last_ts:
            ts.append(m.ts)
            synced = sb.synced
            rows.append(sb.imbalance(lv) + ([book.best_bid, book.best_ask] if synced else [math.nan, math.nan]))
            last_ts = m.ts
    book.stats.unsynced += len(book.pending)
    book.pending.clear()
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(levels) + 2)
    return BookSeries(sym, list(levels), np.array(ts, dtype=np.int64), np.ascontiguousarray(arr[:, :-2]),
                      np.ascontiguousarray(arr[:, -2:]), book.stats)
