"""Training rows from tick files: the live engine's features, a future-return label, a time split, leak checks.

- **Features** are computed in batch by ``batch_features.compute_features`` (the same kernel as
  the live engine, bit for bit) with the ``features:`` settings of ``config/pattern.yml``.
- **Rows** are the symbol's *price events* only (the ticks that set the reference price ``ref``:
  every trade, or a mid-moving quote before the symbol's first trade). The label horizon is
  counted in price events, and a quote after the first trade does not move ``ref``, so a quote
  row would repeat the label of the price event before it with slightly newer quote features.
- **Label**: ``future_return = log(ref[t + H] / ref[t])`` where ``t + H`` is the symbol's H-th
  price event after this one (the first row of the symbol with ``n_price == t + H``);
  ``label_ts`` is that row's ``ts_event``. The class is ``1`` above ``+flat_bps``, ``-1`` below
  ``-flat_bps``, else ``0``. Rows without a full horizon and warm-up rows (``n_ticks < warmup``)
  are dropped.
- **Split**: chronological train / validation / test by ``ts_event``; rows whose label window
  (``ts_event .. label_ts``) reaches into the next window are purged (the embargo), so no
  training label is decided by prices of the validation window, nor a validation label by
  prices of the test window.
- **Leak check**: the split's windows are ordered as above, and no single feature predicts the
  validation labels almost perfectly (single-feature AUC ≥ 0.95 or ``|corr|`` with the future
  return ≥ 0.9 is a look-ahead symptom: nothing real is that predictive tick to tick).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from common.messages import Tick
from pattern_engine.batch_features import compute_features
from pattern_engine.book import BookSeries, book_series
from pattern_engine.features import FEATURES, FeatureParams

__all__ = [
    "DEFAULT_FEATURES",
    "DatasetError",
    "LabelledRows",
    "LeakError",
    "Split",
    "assert_no_leaks",
    "auto_flat_bps",
    "check_feature_names",
    "check_leaks",
    "label_rows",
    "labels_from_returns",
    "load_rows",
    "time_split",
]

# Scale-free engine features: a model trained on one price level still means something at another.
DEFAULT_FEATURES = ("ret", "vol", "zscore", "spread_bps", "vwap_dev_bps", "qimb", "qimb_ema", "flow_imb",
                    "intensity", "ret_10", "ret_100")
DEFAULT_WARMUP = 200
AUC_LEAK = 0.95
CORR_LEAK = 0.9
_OBI = re.compile(r"^obi_[1-9][0-9]*$")


class DatasetError(ValueError):
    """Training data that cannot be used; the message says what and why."""


class LeakError(DatasetError):
    """The split or a feature looks ahead; the message lists every problem found."""


@dataclass(frozen=True)
class LabelledRows:
    """One row per labelled price event, in time order (``ts_event`` non-decreasing)."""

    symbol: np.ndarray  # str (object)
    ts_event: np.ndarray  # int64 ns
    label_ts: np.ndarray  # int64 ns: ts_event of the price event H ahead
    future_return: np.ndarray  # float64 log return over the horizon
    columns: Mapping[str, np.ndarray]  # every feature column (FEATURES, then obi_<N>), float64
    horizon: int
    ticks: int = 0  # ticks the features were computed over
    files: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.ts_event.shape[0])

    def take(self, idx: np.ndarray) -> LabelledRows:
        return LabelledRows(self.symbol[idx], self.ts_event[idx], self.label_ts[idx], self.future_return[idx],
                            {k: v[idx] for k, v in self.columns.items()}, self.horizon, self.ticks, self.files)

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """float64 ``[rows, len(names)]`` of the named feature columns."""
        check_feature_names(names, self.columns)
        return np.column_stack([self.columns[n] for n in names]) if len(self) else np.zeros((0, len(names)))


def check_feature_names(names: Sequence[str], available: Sequence[str] | Mapping[str, object] | None = None) -> None:
    """Raise ``DatasetError`` naming a feature that is not an engine feature (or not in ``available``)."""
    if not names:
        raise DatasetError("no features given")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise DatasetError(f"feature {n!r} is listed twice")
        seen.add(n)
        if available is not None and n not in available:
            hint = " (obi_<N> columns need --depth)" if _OBI.match(n) else ""
            raise DatasetError(f"unknown feature {n!r}{hint}; known: {', '.join(available)}")
        if available is None and n not in FEATURES and not _OBI.match(n):
            raise DatasetError(f"unknown feature {n!r}; known: {', '.join(FEATURES)}, obi_<N>")


def label_rows(table: pa.Table, horizon: int, warmup: int = DEFAULT_WARMUP) -> LabelledRows:
    """Label the price-event rows of a ``compute_features`` table with the return ``horizon`` events ahead."""
    if horizon < 1:
        raise DatasetError(f"horizon must be >= 1 price event, got {horizon}")
    if warmup < 0:
        raise DatasetError(f"warmup must be >= 0, got {warmup}")
    n = table.num_rows
    sym_col = table.column("symbol").combine_chunks()
    if isinstance(sym_col, pa.DictionaryArray):
        codes = sym_col.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        names = np.array(sym_col.dictionary.to_pylist(), dtype=object)
    else:
        names, inv = np.unique(np.array(sym_col.to_pylist(), dtype=object), return_inverse=True)
        codes = inv.astype(np.int64)
    n_price = table.column("n_price").to_numpy()
    n_ticks = table.column("n_ticks").to_numpy()
    ts = table.column("ts_event").to_numpy()
    ref = table.column("ref").to_numpy()

    # Group rows by symbol (stable: time order inside a symbol); a price event is a row whose
    # n_price went up. Within a symbol the events are numbered 1, 2, 3 ... so the event H ahead
    # is H positions further in the event list.
    order = np.argsort(codes, kind="stable")
    c, npr = codes[order], n_price[order]
    prev = np.empty_like(npr)
    if n:
        prev[0] = 0
        prev[1:] = npr[:-1]
        prev[np.flatnonzero(np.diff(c)) + 1] = 0
    event = npr > prev
    ev_rows, ev_sym = order[event], c[event]
    k = ev_rows.shape[0]
    cur = np.arange(max(0, k - horizon))
    fut = cur + horizon
    ok = ev_sym[cur] == ev_sym[fut]
    cur, fut = ev_rows[cur[ok]], ev_rows[fut[ok]]
    if not np.array_equal(n_price[fut] - n_price[cur], np.full(cur.shape[0], horizon)):
        raise DatasetError("n_price is not a count of price events (gaps in the feature table)")
    keep = (n_ticks[cur] >= warmup) & (ref[cur] > 0) & (ref[fut] > 0)
    cur, fut = cur[keep], fut[keep]
    srt = np.argsort(cur, kind="stable")
    cur, fut = cur[srt], fut[srt]
    fr = np.log(ref[fut] / ref[cur])
    skip = {"symbol", "ts_event", "seq", "n_ticks", "n_price"}
    cols = {name: table.column(name).to_numpy()[cur] for name in table.column_names if name not in skip}
    return LabelledRows(names[codes[cur]], ts[cur], ts[fut], fr, cols, horizon, n)


def load_rows(
    paths: Sequence[str | Path],
    horizon: int,
    *,
    fmt: str | None = None,
    params: FeatureParams | None = None,
    depth: Mapping[str, Sequence[str | Path]] | None = None,
    levels: Sequence[int] = (1, 5, 10),
    warmup: int = DEFAULT_WARMUP,
    ticks: Iterable[Tick] | None = None,
) -> LabelledRows:
    """Read tick files (``tick_replay``), compute features and label them.

    ``ticks`` (with ``paths`` naming their source, e.g. ``["synthetic:n=...,seed=..."]``) are used
    instead of reading files.

    ``depth``: symbol → Binance depth capture files (``book.book_series``) for ``obi_<N>`` columns.
    Raises ``tick_replay.FormatError`` for a file that cannot be read, ``DatasetError`` otherwise.
    """
    from tick_replay import open_ticks

    if horizon < 1:
        raise DatasetError(f"horizon must be >= 1 price event, got {horizon}")
    books: dict[str, BookSeries] = {}
    for sym, files in (depth or {}).items():
        for f in files:
            if not Path(f).is_file():
                raise DatasetError(f"{f}: depth file not found")
        try:
            books[sym] = book_series(list(files), levels=tuple(levels), symbol=sym)
        except (OSError, ValueError) as e:
            raise DatasetError(f"depth for {sym}: {e}") from e
    source = ticks if ticks is not None else open_ticks(paths, fmt)
    table = compute_features(source, params, books=books or None)
    if table.num_rows == 0:
        raise DatasetError(f"no ticks in {', '.join(str(p) for p in paths)}")
    rows = label_rows(table, horizon, warmup)
    if len(rows) == 0:
        raise DatasetError(f"no labelled rows: {table.num_rows} ticks give no price event with a full horizon of "
                           f"{horizon} events after a warm-up of {warmup} ticks")
    return LabelledRows(rows.symbol, rows.ts_event, rows.label_ts, rows.future_return, rows.columns, horizon,
                        rows.ticks, tuple(str(p) for p in paths))


def labels_from_returns(future_return: np.ndarray, flat_bps: float) -> np.ndarray:
    """-1 / 0 / 1: below ``-flat_bps``, inside the band, above ``+flat_bps`` (log return in bps)."""
    bps = future_return * 1e4
    return np.where(bps > flat_bps, 1, np.where(bps < -flat_bps, -1, 0)).astype(np.int64)


def auto_flat_bps(future_return: np.ndarray) -> float:
    """A flat band holding about a third of the rows (the 1/3 quantile of |return| in bps), so the three
    classes are of comparable size. Rows with no move at all are always flat."""
    a = np.abs(future_return) * 1e4
    return float(np.quantile(a, 1 / 3)) if a.size else 0.0


@dataclass(frozen=True)
class Split:
    """Row indices (into ``LabelledRows``, time order) of the three windows."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    purged: int = 0  # rows dropped because their label window reached into the next window

    def windows(self, rows: LabelledRows) -> dict[str, list[int]]:
        """First and last ``ts_event`` of each window."""
        return {k: ([int(rows.ts_event[ix].min()), int(rows.ts_event[ix].max())] if ix.size else [])
                for k, ix in (("train", self.train), ("val", self.val), ("test", self.test))}


def time_split(rows: LabelledRows, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
               embargo: bool = True) -> Split:
    """Chronological split by ``ts_event`` at the given row fractions.

    With ``embargo`` a row stays in its window only if its label is known before the next
    window starts (``label_ts < next window's first ts_event``); ``embargo=False`` exists to
    show what the leak check catches.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise DatasetError(f"split fractions must be three positive numbers summing to 1, got {fractions}")
    n = len(rows)
    if n < 30:
        raise DatasetError(f"{n} labelled rows are too few to split into train / validation / test")
    order = np.argsort(rows.ts_event, kind="stable")
    i1 = min(n - 1, round(n * fractions[0]))
    i2 = min(n - 1, round(n * (fractions[0] + fractions[1])))
    ts = rows.ts_event[order]
    # A window starts at a timestamp: rows sharing the cut's ts_event all go to the later window.
    i1 = np.searchsorted(ts, ts[i1], side="left")
    i2 = np.searchsorted(ts, ts[i2], side="left")
    train, val, test = order[:i1], order[i1:i2], order[i2:]
    purged = 0
    if embargo:
        keep_tr = rows.label_ts[train] < (ts[i1] if i1 < n else np.iinfo(np.int64).max)
        keep_va = rows.label_ts[val] < (ts[i2] if i2 < n else np.iinfo(np.int64).max)
        purged = int((~keep_tr).sum() + (~keep_va).sum())
        train, val = train[keep_tr], val[keep_va]
    if min(train.size, val.size, test.size) == 0:
        raise DatasetError(f"a window is empty after the split (train {train.size}, validation {val.size}, "
                           f"test {test.size} rows): too few rows or a horizon as long as a window")
    return Split(train, val, test, purged)


def _auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for the boolean ``pos``; NaN without both classes."""
    from sklearn.metrics import roc_auc_score

    if pos.all() or not pos.any():
        return float("nan")
    return float(roc_auc_score(pos, score))


def check_leaks(rows: LabelledRows, split: Split, features: Sequence[str], labels: np.ndarray,
                auc_max: float = AUC_LEAK, corr_max: float = CORR_LEAK, sample: int = 50_000,
                seed: int = 0) -> list[str]:
    """Problems that point to look-ahead (empty list: none found).

    (a) every training label is known before validation starts, and every validation label
    before test starts; (b) on the validation rows, no feature alone separates up or down from
    the rest with AUC ≥ ``auc_max`` (either direction) or correlates with the future return at
    ``|corr| ≥ corr_max``.
    """
    problems: list[str] = []
    for a, b, an, bn in ((split.train, split.val, "train", "validation"), (split.val, split.test, "validation", "test")):
        if a.size and b.size:
            lmax, bmin = int(rows.label_ts[a].max()), int(rows.ts_event[b].min())
            if lmax >= bmin:
                problems.append(f"split: a {an} label is decided at {lmax} ns, at or after the {bn} window starts "
                                f"({bmin} ns); the {an} rows' label windows reach into {bn} (no embargo?)")
    idx = split.val
    if idx.size > sample:
        idx = np.sort(np.random.default_rng(seed).choice(idx, sample, replace=False))
    y = labels[idx]
    fr = rows.future_return[idx]
    for name in features:
        x = rows.columns[name][idx]
        ok = np.isfinite(x)
        if ok.sum() < 10 or np.ptp(x[ok]) == 0:
            continue
        xs, ys, frs = x[ok], y[ok], fr[ok]
        if np.ptp(frs) > 0:
            corr = float(np.corrcoef(xs, frs)[0, 1])
            if abs(corr) >= corr_max:
                problems.append(f"feature {name!r}: correlation with the future return on validation is "
                                f"{corr:+.3f} (|corr| >= {corr_max}): it looks ahead")
                continue
        for cls, what in ((1, "up"), (-1, "down")):
            auc = _auc(ys == cls, xs)
            if np.isfinite(auc) and max(auc, 1 - auc) >= auc_max:
                problems.append(f"feature {name!r}: alone it separates {what} from the rest on validation with "
                                f"AUC {max(auc, 1 - auc):.3f} (>= {auc_max}): it looks ahead")
                break
    return problems


def assert_no_leaks(rows: LabelledRows, split: Split, features: Sequence[str], labels: np.ndarray, **kw) -> None:
    """Raise ``LeakError`` listing every problem ``check_leaks`` finds."""
    problems = check_leaks(rows, split, features, labels, **kw)
    if problems:
        raise LeakError("refusing to train: look-ahead found:\n  - " + "\n  - ".join(problems))
