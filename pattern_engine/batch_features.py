"""Features in batch, for training: the live engine's feature rows for every tick of a file.

One definition, two drivers. The live engine (``engine.PatternEngine``) runs
``kernel.run_batch`` over each bus entry; this module runs ``kernel.run_features`` over large
chunks of a time-ordered tick stream. Both convert ticks with ``features.tick_arrays`` and
apply each tick with the same compiled ``kernel._update`` to the same ``FeatureState``
arrays, in the same order, so the row written after tick k is exactly the state the live
engine holds for that symbol after tick k (``tests/unit/pattern_engine/test_batch_features.py``
checks equality on synthetic and real files). Nothing is re-implemented here.

``compute_features(ticks)`` returns a ``pyarrow.Table``:

- ``symbol`` (dictionary-encoded string), ``ts_event`` (int64 ns UTC), ``seq`` (int64),
- ``n_ticks``, ``n_price`` (int64): ticks and price events the symbol had seen, this tick
  included (drop warm-up rows with them),
- one float64 column per name in ``features.FEATURES``, in that order,
- with ``books=`` (order-book imbalance, ``book.py``): one float64 column ``obi_<N>`` per
  level count, the imbalance of the symbol's book as of the tick's ``ts_event`` (NaN
  before the symbol's first synced book, or while it is out of sync). The live engine
  computes the same column for model detectors (``features.book_levels``) from the book
  messages of the tick stream, under the same rule: the last book state stamped at or
  before the tick (``docs/features.md``, "Order-book features live").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np
import pyarrow as pa

from common.messages import Tick
from pattern_engine import kernel
from pattern_engine.book import BookSeries
from pattern_engine.features import FEATURES, FeatureParams, FeatureState, tick_arrays

__all__ = ["DEFAULT_CHUNK", "FeatureBatcher", "compute_features", "obi_asof"]

DEFAULT_CHUNK = 65_536


class FeatureBatcher:
    """Drives the feature kernel over chunks of ticks, keeping state between chunks."""

    def __init__(self, params: FeatureParams | None = None, capacity: int = 64) -> None:
        self.state = FeatureState(params or FeatureParams(), n_detectors=0, capacity=capacity)

    def run(self, ticks: list[Tick], out: np.ndarray | None = None, out_n: np.ndarray | None = None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``ticks`` in order; return (symbol ids, ts_event, seq, counters [2, n], features [NF, n]).

        ``out`` / ``out_n``: where to write the features and counters (views of a larger table).
        """
        n = len(ticks)
        st = self.state
        sym, ts, x = tick_arrays(ticks, st.registry)
        st.ensure_capacity()
        seq = np.fromiter((t.seq for t in ticks), np.int64, n)
        if out is None or out_n is None:
            out = np.empty((kernel.N_FEATURES, n), dtype=np.float64)
            out_n = np.empty((2, n), dtype=np.int64)
        kernel.run_features(sym, ts, x, st.F, st.I, st.ring, st.dq, st.hist, st.fp, out, out_n)
        return sym, ts, seq, out_n, out


def _chunks(ticks: Iterable[Tick], size: int) -> Iterator[list[Tick]]:
    if isinstance(ticks, list):
        for i in range(0, len(ticks), size):
            yield ticks[i : i + size]
        return
    it = iter(ticks)
    while chunk := list(islice(it, size)):
        yield chunk


def compute_features(
    ticks: Iterable[Tick],
    params: FeatureParams | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
    books: Mapping[str, BookSeries] | None = None,
) -> pa.Table:
    """Feature rows after every tick of a time-ordered stream (a list or e.g. ``tick_replay.open_ticks``).

    ``params``: the ``features:`` settings (default: ``FeatureParams()``; pass
    ``load_pattern_config().features`` to match a running engine). ``books``: symbol →
    ``BookSeries`` (``book.book_series``) for the ``obi_<N>`` columns.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    fb = FeatureBatcher(params)
    if isinstance(ticks, list):  # known length: the kernel writes straight into the table's columns
        n = len(ticks)
        feats = np.empty((kernel.N_FEATURES, n), dtype=np.float64)
        counts = np.empty((2, n), dtype=np.int64)
        sym, ts, seq = (np.empty(n, dtype=np.int64) for _ in range(3))
        for i in range(0, n, chunk):
            j = min(n, i + chunk)
            sym[i:j], ts[i:j], seq[i:j], _, _ = fb.run(ticks[i:j], feats[:, i:j], counts[:, i:j])
    else:
        parts = [fb.run(c) for c in _chunks(ticks, chunk)]
        if parts:
            sym, ts, seq = (np.concatenate([p[c] for p in parts]) for c in range(3))
            counts, feats = (np.concatenate([p[c] for p in parts], axis=1) for c in (3, 4))
        else:
            sym = ts = seq = np.zeros(0, dtype=np.int64)
            counts = np.zeros((2, 0), dtype=np.int64)
            feats = np.zeros((kernel.N_FEATURES, 0), dtype=np.float64)
    symbols = fb.state.symbols
    cols: dict[str, Any] = {
        "symbol": pa.DictionaryArray.from_arrays(pa.array(sym.astype(np.int32)), pa.array(symbols, pa.string())),
        "ts_event": ts,
        "seq": seq,
        "n_ticks": counts[0],
        "n_price": counts[1],
    }
    for j, name in enumerate(FEATURES):
        cols[name] = feats[j]
    if books:
        levels = sorted({n for b in books.values() for n in b.levels})
        for n in levels:
            cols[f"obi_{n}"] = obi_asof(sym, ts, symbols, books, n)
    return pa.table(cols)


def obi_asof(sym: np.ndarray, ts: np.ndarray, symbols: list[str], books: Mapping[str, BookSeries],
             levels: int) -> np.ndarray:
    """Per tick, the ``levels``-level imbalance of its symbol's book as of ``ts_event`` (last state at or
    before it; NaN before the first, or for a symbol without a book). Vectorised per symbol."""
    out = np.full(sym.shape[0], np.nan)
    for sid, name in enumerate(symbols):
        series = books.get(name)
        if series is None or levels not in series.levels or series.ts.size == 0:
            continue
        rows = np.flatnonzero(sym == sid)
        idx = np.searchsorted(series.ts, ts[rows], side="right") - 1
        ok = idx >= 0
        col = series.obi[:, series.levels.index(levels)]
        out[rows[ok]] = col[idx[ok]]
    return out
