"""Labels, the purged time split and the leak check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pattern_engine.batch_features import compute_features
from pattern_engine.ml.dataset import (
    DEFAULT_FEATURES,
    DatasetError,
    LabelledRows,
    LeakError,
    assert_no_leaks,
    auto_flat_bps,
    check_feature_names,
    check_leaks,
    label_rows,
    labels_from_returns,
    time_split,
)
from tests.onnx_models import DEFAULT_FEATURES as TEST_DEFAULT_FEATURES
from tests.unit.pattern_engine.ml.stubs import planted_rows
from tests.unit.pattern_engine.stubs import TickMaker, random_walk


def two_symbols():
    mk = TickMaker()
    t = [
        mk.quote("A", 99.99, 100.01),  # A event 1 (mid 100, before A's first trade)
        mk.trade("B", 50.0),  # B event 1
        mk.quote("A", 99.99, 100.01, bid_size=50),  # mid unchanged: not an event
        mk.quote("A", 100.01, 100.03),  # A event 2 (mid 100.02)
        mk.trade("A", 100.5),  # A event 3
        mk.quote("A", 100.6, 100.7),  # after the first trade a quote does not move ref: not an event
        mk.trade("B", 51.0),  # B event 2
        mk.trade("A", 101.0),  # A event 4
        mk.trade("A", 101.0),  # A event 5 (a trade is an event even at the same price)
        mk.trade("B", 49.0),  # B event 3
        mk.trade("A", 99.0),  # A event 6
    ]
    return t


def test_labels_are_the_log_return_h_price_events_ahead_of_the_same_symbol():
    ticks = two_symbols()
    rows = label_rows(compute_features(ticks), horizon=2, warmup=0)
    ts = [t.ts_event for t in ticks]
    # A's events are ticks 0, 3, 4, 7, 8, 10 (ref 100, 100.02, 100.5, 101, 101, 99); B's 1, 6, 9 (50, 51, 49)
    expect = [  # (tick index, future tick index, ref now, ref then), in time order
        (0, 4, 100.0, 100.5), (1, 9, 50.0, 49.0), (3, 7, 100.02, 101.0), (4, 8, 100.5, 101.0),
        (7, 10, 101.0, 99.0),
    ]
    assert list(rows.ts_event) == [ts[i] for i, *_ in expect]
    assert list(rows.label_ts) == [ts[j] for _, j, *_ in expect]
    assert list(rows.symbol) == ["A", "B", "A", "A", "A"]
    np.testing.assert_allclose(rows.future_return, [math.log(b / a) for *_, a, b in expect], rtol=1e-12)
    np.testing.assert_allclose(rows.columns["ref"], [a for *_, a, _ in expect], rtol=1e-12)
    assert rows.horizon == 2 and rows.ticks == len(ticks)


def test_warmup_rows_and_rows_without_a_full_horizon_are_dropped():
    ticks = random_walk(3000, symbols=3, seed=2)
    table = compute_features(ticks)
    rows = label_rows(table, horizon=10, warmup=200)
    n_ticks = dict(zip(table.column("ts_event").to_pylist(), table.column("n_ticks").to_pylist()))
    assert len(rows) > 500
    assert min(n_ticks[t] for t in rows.ts_event) >= 200
    assert (rows.label_ts > rows.ts_event).all()
    assert (np.diff(rows.ts_event) >= 0).all()
    every = label_rows(table, horizon=10, warmup=0)
    assert len(every) > len(rows)
    # each symbol loses exactly its last 10 price events
    syms = np.array(table.column("symbol").to_pylist(), dtype=object)
    n_price = table.column("n_price").to_numpy()
    for s in set(every.symbol):
        assert (every.symbol == s).sum() == n_price[syms == s].max() - 10


def test_a_horizon_below_one_is_refused():
    table = compute_features(two_symbols())
    with pytest.raises(DatasetError, match="horizon must be >= 1"):
        label_rows(table, horizon=0)


def test_flat_band_and_auto_band():
    fr = np.array([-3e-4, -1e-4, 0.0, 0.5e-4, 1e-4, 2e-4])
    assert labels_from_returns(fr, 1.0).tolist() == [-1, 0, 0, 0, 0, 1]
    assert labels_from_returns(fr, 0.0).tolist() == [-1, -1, 0, 1, 1, 1]
    rng = np.random.default_rng(0)
    r = rng.normal(size=30_000) * 1e-4
    y = labels_from_returns(r, auto_flat_bps(r))
    shares = [(y == c).mean() for c in (-1, 0, 1)]
    assert all(abs(s - 1 / 3) < 0.02 for s in shares)


def test_default_features_are_the_scale_free_set():
    assert DEFAULT_FEATURES == TEST_DEFAULT_FEATURES
    check_feature_names(DEFAULT_FEATURES)
    check_feature_names(["ret", "obi_5"])
    with pytest.raises(DatasetError, match="unknown feature 'nope'"):
        check_feature_names(["ret", "nope"])
    with pytest.raises(DatasetError, match="listed twice"):
        check_feature_names(["ret", "ret"])
    with pytest.raises(DatasetError, match="need --depth"):
        check_feature_names(["obi_5"], {"ret": 1})


def test_split_is_chronological_and_purges_label_windows_that_reach_the_next_window():
    rows = planted_rows(n=3000, horizon=25)
    split = time_split(rows)
    assert split.train.size + split.val.size + split.test.size + split.purged == len(rows)
    assert split.purged == 2 * 25  # the last 25 rows of train and of validation see the next window
    assert rows.label_ts[split.train].max() < rows.ts_event[split.val].min()
    assert rows.label_ts[split.val].max() < rows.ts_event[split.test].min()
    assert rows.ts_event[split.train].max() < rows.ts_event[split.val].min() < rows.ts_event[split.test].min()
    assert abs(split.test.size - 600) <= 1
    y = labels_from_returns(rows.future_return, 0.3)
    assert check_leaks(rows, split, ["ret", "vol", "qimb"], y) == []


def test_split_puts_rows_sharing_a_timestamp_in_one_window():
    rows = planted_rows(n=1000, horizon=1)
    ts = rows.ts_event // (10 * 1_000_000) * (10 * 1_000_000)  # ten rows per timestamp
    rows = LabelledRows(rows.symbol, ts, ts + 10 * 1_000_000, rows.future_return, rows.columns, 1, 1000)
    split = time_split(rows)
    assert set(ts[split.train]).isdisjoint(ts[split.val]) and set(ts[split.val]).isdisjoint(ts[split.test])


def test_leak_check_catches_a_split_without_embargo():
    rows = planted_rows(n=3000, horizon=25)
    y = labels_from_returns(rows.future_return, 0.3)
    leaky = time_split(rows, embargo=False)
    problems = check_leaks(rows, leaky, ["ret"], y)
    assert len(problems) == 2
    assert "train label is decided" in problems[0] and "validation window starts" in problems[0]
    assert "validation label is decided" in problems[1] and "test window starts" in problems[1]
    with pytest.raises(LeakError, match="no embargo"):
        assert_no_leaks(rows, leaky, ["ret"], y)


def test_leak_check_catches_a_feature_that_is_the_future_return():
    rows = planted_rows(n=3000, horizon=5)
    cols = dict(rows.columns, peek=rows.future_return * 3.0 + 1.0)
    rows = LabelledRows(rows.symbol, rows.ts_event, rows.label_ts, rows.future_return, cols, 5, 3000)
    split = time_split(rows)
    y = labels_from_returns(rows.future_return, 0.3)
    problems = check_leaks(rows, split, ["ret", "qimb", "peek"], y)
    assert len(problems) == 1 and "'peek'" in problems[0] and "correlation" in problems[0]


def test_leak_check_catches_a_feature_that_separates_the_labels():
    rows = planted_rows(n=3000, horizon=5)
    y = labels_from_returns(rows.future_return, 0.3)
    rng = np.random.default_rng(3)
    # up / not up, plus noise: weakly correlated with the return itself, but ranks the up rows first
    tell = (y == 1) + rng.normal(0, 0.05, y.size)
    cols = dict(rows.columns, tell=tell)
    rows = LabelledRows(rows.symbol, rows.ts_event, rows.label_ts, rows.future_return, cols, 5, 3000)
    split = time_split(rows)
    assert abs(np.corrcoef(tell[split.val], rows.future_return[split.val])[0, 1]) < 0.9
    problems = check_leaks(rows, split, ["ret", "tell"], y)
    assert len(problems) == 1 and "'tell'" in problems[0] and "AUC" in problems[0]


def test_too_few_rows_to_split():
    with pytest.raises(DatasetError, match="too few"):
        time_split(planted_rows(n=20))
