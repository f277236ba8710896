"""The in-process hot path: TickBatches in, Signals out, no I/O.

The bus service wraps it; backtests can drive it directly over historical ticks, so live
and backtest run the same code. Per call the ticks are turned into three small arrays
(symbol ids, event times, an 8-column float matrix) and one compiled kernel updates the
per-symbol features and runs the rule detectors tick by tick; then the batch (model)
detectors, if any, score the symbols that ticked. Python work per tick is a few list
comprehensions; Python objects are built only for ticks that fire.

Order-book features (``features.book_levels``): the engine keeps one book per symbol
(``book.SymbolBook``) fed by the ``books`` of each TickBatch and holds its imbalance over
each level count in ``_obi`` (NaN while the symbol has no synced book). Model detectors get
those as extra columns ``obi_<N>`` after ``FEATURES`` (``features.model_columns``), as of
each symbol's last tick in the micro-batch under the TickBatch order rule: a symbol's book
messages are applied in order, and its row is taken just before the first one stamped later
than that tick. Book messages cost Python work per message; a batch without any costs
nothing more than before. With ``book_levels`` empty the messages are ignored.

State lives in memory only. After a restart it is rebuilt from the stream: detectors warm
up again, entries left pending are re-delivered by the Consumer, and deterministic
signal ids (symbol, tick ts_event, tick seq, detector) make any re-published signal
recognisable downstream.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np

from common.config import ConfigError
from common.messages import BookUpdate, Side, Signal, Tick, TickBatch, TickType, signal_id_for
from pattern_engine import kernel
from pattern_engine.book import BookStats, SymbolBook
from pattern_engine.detectors import BatchContext, BatchDetector
from pattern_engine.features import FeatureState, tick_arrays
from pattern_engine.pattern_config import PatternConfig

__all__ = ["PatternEngine", "UnprocessableTicks"]

log = logging.getLogger(__name__)

_SIDES = {1: Side.BUY, -1: Side.SELL}
_WARMUP_SYMBOL = "\x00warmup"


class UnprocessableTicks(ValueError):
    """Ticks the wire types accept but the engine cannot hold (e.g. ``ts_event`` beyond int64).

    Raised while converting the input, before any state changes: dead-letter the entry.
    """


class PatternEngine:
    """Features + detectors over ticks, in order; deterministic for a given tick sequence."""

    def __init__(
        self, config: PatternConfig, capacity: int = 64, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.config = config
        self.rules = config.rules
        self.models: list[BatchDetector] = config.batch
        self.clock = clock
        self.state = FeatureState(config.features, n_detectors=len(self.rules), capacity=capacity)
        nd = len(self.rules)
        self._names = [d.name for d in self.rules]
        self._dint = np.array([[d.kind, d.warmup, d.cooldown] for d in self.rules], dtype=np.int64).reshape(nd, 3)
        self._dpar = np.array([d.pack() for d in self.rules], dtype=np.float64).reshape(nd, kernel.DP_SIZE)
        self._out_i = np.zeros((64 * max(nd, 1), 3), dtype=np.int64)
        self._out_f = np.zeros((64 * max(nd, 1), 3), dtype=np.float64)
        self._model_last = np.full((self.state.capacity, len(self.models)), kernel.NEVER_FIRED, dtype=np.int64)
        self._model_errors = [0] * len(self.models)
        self.ticks_seen = 0
        self.book_updates = 0  # book messages applied (0 while book_levels is empty)
        self._levels: list[int] = list(config.features.book_levels)
        self._books: dict[int, SymbolBook] = {}  # symbol id -> its book
        self._obi = np.full((self.state.capacity, len(self._levels)), np.nan)  # current imbalance per symbol
        self._obi_at: dict[int, np.ndarray] = {}  # this micro-batch: rows taken before later book messages
        for det in self.models:  # load models now: a bad one stops the start, naming the key
            for param, problem in det.start():
                raise ConfigError(f"{config.source}: detectors.{det.name}.{param}: {problem}")

    # -- public API ------------------------------------------------------------------------
    def on_batch(self, batch: TickBatch) -> list[Signal]:
        """Process one TickBatch; return the signals it produced (in tick order)."""
        return self.on_batches((batch,))[0]

    def on_ticks(self, ticks: Sequence[Tick], ts_ingest: int = 0) -> list[Signal]:
        """Process ticks not wrapped in a batch (backtests); ``ts_ingest`` stamps their signals."""
        return self.on_batches((TickBatch(ticks=list(ticks), ts_ingest=ts_ingest),))[0]

    def on_batches(self, batches: Sequence[TickBatch]) -> list[list[Signal]]:
        """Process several bus entries as one micro-batch; return each entry's signals.

        Raises ``UnprocessableTicks`` while converting the input, before any state changes.
        """
        ticks = batches[0].ticks if len(batches) == 1 else list(chain.from_iterable(b.ticks for b in batches))
        out: list[list[Signal]] = [[] for _ in batches]
        n = len(ticks)
        books: Sequence[BookUpdate] = ()
        if self._levels:
            books = batches[0].books if len(batches) == 1 else list(chain.from_iterable(b.books for b in batches))
        if n == 0:
            if books:
                self._apply_books(books, None, None)
            return out
        sym, ts, x = self._arrays(ticks)
        if books:
            self._apply_books(books, sym, ts)
        elif self._obi_at:
            self._obi_at = {}
        nfired = self._run(sym, ts, x)
        self.ticks_seen += n
        if nfired == 0 and not self.models:
            return out
        ends = _ends(batches) if len(batches) > 1 else []
        if nfired:
            for (k, d, side), (strength, price, vol) in zip(
                self._out_i[:nfired].tolist(), self._out_f[:nfired].tolist()
            ):
                b = bisect_right(ends, k) if len(batches) > 1 else 0
                tick = ticks[k]
                out[b].append(
                    self._signal(tick, self._names[d], side, strength, price, vol,
                                 tick.ts_ingest or batches[b].ts_ingest)
                )
        if self.models:
            self._run_models(ticks, sym, batches, ends, out)
        return out

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernel now, not on the first real tick."""
        scratch = PatternEngine(PatternConfig(self.config.features, tuple(self.rules)), capacity=2)
        ticks = []
        for i in range(8):
            ticks.append(Tick(symbol=_WARMUP_SYMBOL, type=TickType.QUOTE, ts_event=i, seq=2 * i,
                              bid=100.0 + i, bid_size=10.0, ask=100.5 + i, ask_size=5.0))
            ticks.append(Tick(symbol=_WARMUP_SYMBOL, type=TickType.TRADE, ts_event=i, seq=2 * i + 1,
                              price=100.2 + i, size=3.0, side=1 if i % 2 else 0))
        scratch.on_ticks(ticks)

    @property
    def model_errors(self) -> dict[str, int]:
        """Failed ``evaluate`` calls per batch detector (they are skipped, rule detectors go on)."""
        return {d.name: n for d, n in zip(self.models, self._model_errors) if n}

    def reset(self) -> None:
        """Forget all per-symbol state (used after an internal error; detectors warm up again,
        books wait for their next snapshot)."""
        self.state.reset()
        self._model_last = np.full((self.state.capacity, len(self.models)), kernel.NEVER_FIRED, dtype=np.int64)
        self._books = {}
        self._obi = np.full((self.state.capacity, len(self._levels)), np.nan)
        self._obi_at = {}

    def book_stats(self) -> dict[str, dict[str, int]]:
        """Per symbol, what its book did with its messages (``book.BookStats``: bad levels,
        crossed, gaps, unsynced ...)."""
        syms = self.state.symbols
        return {syms[sid]: b.stats.to_dict() for sid, b in self._books.items()}

    def book_totals(self) -> BookStats:
        """``book_stats`` summed over the symbols."""
        tot = BookStats()
        for b in self._books.values():
            for k, v in b.stats.__dict__.items():
                setattr(tot, k, getattr(tot, k) + v)
        return tot

    def obi(self, symbol: str) -> dict[str, float] | None:
        """The current ``obi_<N>`` of ``symbol`` (NaN while unsynced); None if no book is kept for it."""
        sid = self.state.id_of(symbol)
        if sid is None or not self._levels:
            return None
        return {f"obi_{n}": float(v) for n, v in zip(self._levels, self._obi[sid].tolist())}

    def close(self) -> None:
        for det in self.models:
            det.close()

    # -- internals -------------------------------------------------------------------------
    def _arrays(self, ticks: Sequence[Tick]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reg = self.state.registry
        try:
            sym, ts, x = tick_arrays(ticks, reg)
        except (OverflowError, ValueError, TypeError) as e:
            raise UnprocessableTicks(f"{type(e).__name__}: {e}") from e
        if len(reg.symbols) > self.state.capacity:
            self._grow()
        return sym, ts, x

    def _grow(self) -> None:
        st = self.state
        st.ensure_capacity()
        grown = np.full((st.capacity, len(self.models)), kernel.NEVER_FIRED, dtype=np.int64)
        grown[: self._model_last.shape[0]] = self._model_last
        self._model_last = grown
        obi = np.full((st.capacity, len(self._levels)), np.nan)
        obi[: self._obi.shape[0]] = self._obi
        self._obi = obi

    def _apply_books(self, books: Sequence[BookUpdate], sym: np.ndarray | None, ts: np.ndarray | None) -> None:
        """Apply book messages in order; keep in ``_obi_at`` the row of each symbol that ticked
        here as it was just before its first message stamped later than its last tick."""
        reg = self.state.registry
        last_ts: dict[int, int] = {}
        if sym is not None and ts is not None:
            n = sym.shape[0]
            uniq, first_rev = np.unique(sym[::-1], return_index=True)
            last_ts = dict(zip(uniq.tolist(), ts[n - 1 - first_rev].tolist()))
        taken: dict[int, np.ndarray] = {}
        levels = self._levels
        for u in books:
            sid = reg[u.symbol]
            if sid >= self._obi.shape[0]:
                self._grow()
            t = last_ts.get(sid)
            if t is not None and u.ts_event > t and sid not in taken:
                taken[sid] = self._obi[sid].copy()
            b = self._books.get(sid)
            if b is None:
                b = self._books[sid] = SymbolBook(futures=u.symbol.endswith("-PERP"))
            if b.on_message(u.snapshot, u.first_id, u.last_id, u.prev_last_id, u.bids, u.asks):
                self._obi[sid] = b.imbalance(levels)
        self.book_updates += len(books)
        self._obi_at = taken

    def _model_matrix(self, ids: np.ndarray) -> np.ndarray:
        """The rows model detectors see: ``FEATURES`` then ``obi_<N>`` (``features.model_columns``)."""
        f = self.state.matrix(ids)
        if not self._levels:
            return f
        obi = self._obi[ids]
        if self._obi_at:
            for r, sid in enumerate(ids.tolist()):
                row = self._obi_at.get(sid)
                if row is not None:
                    obi[r] = row
        return np.concatenate((f, obi), axis=1)

    def _run(self, sym: np.ndarray, ts: np.ndarray, x: np.ndarray) -> int:
        need = sym.shape[0] * len(self.rules)
        if self._out_i.shape[0] < need:
            size = max(need, 2 * self._out_i.shape[0])
            self._out_i = np.zeros((size, 3), dtype=np.int64)
            self._out_f = np.zeros((size, 3), dtype=np.float64)
        st = self.state
        return kernel.run_batch(sym, ts, x, st.F, st.I, st.ring, st.dq, st.hist, st.fp, self._dint, self._dpar,
                                st.last_fire, st.det_state, self._out_i, self._out_f)

    def _signal(self, tick: Tick, detector: str, side: int, strength: float, price: float, vol: float,
                ts_ingest: int, model_id: str = "", model_version: str = "") -> Signal:
        return Signal(
            signal_id=signal_id_for(tick.symbol, tick.ts_event, tick.seq, detector),
            symbol=tick.symbol,
            detector=detector,
            side=_SIDES[side],
            strength=strength,
            price=price,
            tick_seq=tick.seq,
            ts_event=tick.ts_event,
            ts_ingest=ts_ingest,
            ts_signal=self.clock(),
            volatility=vol,
            model_id=model_id,
            model_version=model_version,
        )

    def _run_models(self, ticks: Sequence[Tick], sym: np.ndarray, batches: Sequence[TickBatch],
                    ends: list[int], out: list[list[Signal]]) -> None:
        if not any(det.ready for det in self.models):
            return  # e.g. a model detector waiting for its first promoted version
        n = sym.shape[0]
        if n == 1:
            uniq, last_k = sym, np.zeros(1, dtype=np.int64)
        else:
            uniq, first_rev = np.unique(sym[::-1], return_index=True)
            last_k = n - 1 - first_rev  # the latest tick of each symbol in this micro-batch
        st = self.state
        nt = st.I[uniq, kernel.N_TICKS]
        for j, det in enumerate(self.models):
            if not det.ready:
                continue
            ok = (nt >= det.warmup) & (nt - self._model_last[uniq, j] >= det.cooldown)
            if not ok.any():
                continue
            ids, ks, counts = uniq[ok], last_k[ok], nt[ok]
            ctx = BatchContext(
                symbols=[st.symbols[i] for i in ids.tolist()],
                ids=ids,
                features=self._model_matrix(ids),
                ticks=counts,
                last=[ticks[k] for k in ks.tolist()],
            )
            try:
                detections = [(int(row), int(side), float(strength)) for row, side, strength in det.evaluate(ctx)]
            except Exception:  # a failing model must not stop the rule detectors
                self._model_errors[j] += 1
                if self._model_errors[j] in (1, 10, 100) or self._model_errors[j] % 1000 == 0:
                    log.exception("batch detector %s failed (%d times)", det.name, self._model_errors[j])
                continue
            for row, side, strength in detections:
                if not 0 <= row < len(ids):
                    continue  # a row the context does not have
                sid, k = int(ids[row]), int(ks[row])
                price = float(st.F[sid, kernel.REF])
                vol = float(st.F[sid, kernel.VOL_PX])
                if side not in _SIDES or not (price > 0 and 0 <= strength <= 1e12 and 0 <= vol <= 1e12):
                    continue
                self._model_last[sid, j] = counts[row]
                b = bisect_right(ends, k) if len(batches) > 1 else 0
                tick = ticks[k]
                out[b].append(
                    self._signal(tick, det.name, side, strength, price, vol,
                                 tick.ts_ingest or batches[b].ts_ingest, det.model_id, det.model_version)
                )


def _ends(batches: Sequence[TickBatch]) -> list[int]:
    """Exclusive end index of each batch's ticks in the concatenated tick list."""
    ends, total = [], 0
    for b in batches:
        total += len(b.ticks)
        ends.append(total)
    return ends
