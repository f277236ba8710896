"""Batch features (training driver) equal the live engine's, bit for bit, on synthetic and real ticks."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from common.messages import Tick, TickBatch, TickType
from pattern_engine import kernel
from pattern_engine.batch_features import compute_features
from pattern_engine.book import book_series
from pattern_engine.engine import PatternEngine
from pattern_engine.features import FEATURES, FeatureParams
from pattern_engine.pattern_config import PatternConfig, load_pattern_config
from tests.unit.pattern_engine.stubs import T0, TickMaker, noise, random_walk
from tick_replay import open_ticks

NF = kernel.N_FEATURES


def feature_matrix(table: pa.Table) -> np.ndarray:
    return np.column_stack([table.column(c).to_numpy() for c in FEATURES])


def symbol_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    col = table.column("symbol").combine_chunks()
    return col.indices.to_numpy(), col.dictionary.to_pylist()


def assert_live_equals_batch(ticks: list[Tick], cfg: PatternConfig, seed: int, every_tick: bool = False,
                             big: int = 1500) -> int:
    """Feed ``ticks`` to a live engine as the service does (bus reads of 1-4 entries of random sizes,
    many of one tick) and compare, after each read, every symbol that ticked with the batch row of its
    last tick in that read. ``every_tick``: one tick per read, so every row is compared. Returns rows compared."""
    table = compute_features(ticks, cfg.features)
    assert table.num_rows == len(ticks)
    assert table.column_names[:5] == ["symbol", "ts_event", "seq", "n_ticks", "n_price"]
    assert table.column_names[5:] == list(FEATURES)
    feats = feature_matrix(table)
    counts = np.column_stack([table.column("n_ticks").to_numpy(), table.column("n_price").to_numpy()])
    codes, names = symbol_codes(table)
    assert [t.symbol for t in ticks[:50]] == [names[c] for c in codes[:50]]
    assert table.column("seq").to_pylist()[:50] == [t.seq for t in ticks[:50]]

    engine = PatternEngine(cfg)
    rng = np.random.default_rng(seed)
    n, i, compared = len(ticks), 0, 0
    while i < n:
        start = i
        entries = []
        for _ in range(1 if every_tick else int(rng.integers(1, 5))):
            if every_tick:
                size = 1
            else:
                size = int(rng.choice([1, rng.integers(2, 64), rng.integers(64, big)]))
            entries.append(TickBatch(ticks=ticks[i : i + size], ts_ingest=T0))
            i = min(n, i + size)
        engine.on_batches(entries)
        seg = codes[start:i][::-1]
        uniq, first_rev = np.unique(seg, return_index=True)
        last = i - 1 - first_rev
        ids = [engine.state.id_of(names[c]) for c in uniq.tolist()]
        np.testing.assert_array_equal(engine.state.F[ids, :NF], feats[last],
                                      err_msg=f"features after tick {i} differ")
        np.testing.assert_array_equal(engine.state.I[ids][:, [kernel.N_TICKS, kernel.N_PRICE]], counts[last])
        compared += len(ids)
    assert engine.ticks_seen == n
    return compared


# --- synthetic: always runs ----------------------------------------------------------------------


def synthetic_ticks() -> list[Tick]:
    mk = TickMaker()
    ticks = random_walk(6000, symbols=7, seed=5)
    ticks += noise(mk, "NOISY", 300, quotes=True)
    # one-sided quotes, priceless and unsized trades, unknown sides
    ticks += [mk.quote("ONE", 10.0, 10.02), Tick(symbol="ONE", type=TickType.QUOTE, ts_event=mk.ts + 1, seq=99,
                                                 bid=10.01, bid_size=5.0)]
    ticks += [mk.trade("ONE", 10.015, 0.0), mk.trade("ONE", 10.02, 3.0, side=0), mk.trade("ONE", 0.0, 1.0)]
    return ticks


def test_batch_rows_equal_the_live_engine_after_every_tick():
    cfg = load_pattern_config()  # shipped features and detectors: detectors must not disturb features
    ticks = synthetic_ticks()
    assert assert_live_equals_batch(ticks, cfg, seed=1, every_tick=True) == len(ticks)


@pytest.mark.parametrize("seed", [2, 3])
def test_batch_rows_equal_the_live_engine_over_random_bus_reads(seed):
    ticks = synthetic_ticks()
    fp = FeatureParams(fast_halflife=3.0, slow_halflife=20.0, vwap_halflife=0.0, window=5)
    assert assert_live_equals_batch(ticks, PatternConfig(features=fp, detectors=()), seed=seed, big=200) > 200


def test_batch_table_does_not_depend_on_chunk_size():
    ticks = synthetic_ticks()
    whole = compute_features(ticks)
    for chunk in (1, 7, 1000):
        assert compute_features(iter(ticks), chunk=chunk).equals(whole)
    assert compute_features([]).num_rows == 0
    with pytest.raises(ValueError, match="chunk"):
        compute_features(ticks, chunk=0)


def test_multi_horizon_returns():
    mk = TickMaker()
    prices = [100.0 * (1.001 ** (i % 37)) * (0.999 ** (i // 37)) for i in range(150)]
    ticks = [mk.trade("A", p, 10.0, 1) for p in prices]
    t = compute_features(ticks)
    r10, r100, r1 = (t.column(c).to_numpy() for c in ("ret_10", "ret_100", "ret"))
    assert (r10[:10] == 0).all() and (r100[:100] == 0).all()
    for k in (10, 57, 149):
        assert math.isclose(r10[k], math.log(prices[k] / prices[k - 10]), rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(r1[k], math.log(prices[k] / prices[k - 1]), rel_tol=1e-12, abs_tol=1e-15)
    for k in (100, 149):
        assert math.isclose(r100[k], math.log(prices[k] / prices[k - 100]), rel_tol=1e-12, abs_tol=1e-15)
    # quotes between trades are not price events once the symbol has traded: the horizons do not move
    t2 = compute_features(ticks[:120] + [mk.quote("A", 1.0, 2.0)])
    assert t2.column("ret_100")[-1].as_py() == r100[119]


# --- real files (../shared/data) -------------------------------------------------------------------


def _real(shared_data, *names: str) -> list[Tick]:
    return list(open_ticks([shared_data / n for n in names]))


REAL = {
    "bac_ibm_equity": ("quantconnect_lean/equity_tick/20131008_bac_Trade_Tick.csv.gz",
                       "quantconnect_lean/equity_tick/20131008_bac_Quote_Tick.csv.gz",
                       "quantconnect_lean/equity_tick/20131008_ibm_Trade_Tick.csv.gz",
                       "quantconnect_lean/equity_tick/20131008_ibm_Quote_Tick.csv.gz"),
    "binance_spot": ("hftbacktest_binance/spot_btcusdt_20240808_trades.csv.gz",
                     "hftbacktest_binance/spot_btcusdt_20240808_bbo.csv.gz"),
    "binance_nautilus": ("nautilus_trader/crypto/binance_btcusdt-trades.parquet",
                         "nautilus_trader/crypto/binance_btcusdt-quotes.parquet"),
    "fxcm_eurusd": ("quantconnect_lean/forex_tick/20140505_eurusd_tick_quote.csv.gz",),
}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_files_live_equals_batch(shared_data, name):
    ticks = _real(shared_data, *REAL[name])
    assert len(ticks) > 1000
    cfg = load_pattern_config()
    assert assert_live_equals_batch(ticks, cfg, seed=len(ticks)) > len(ticks) // 2000
    head = ticks[:20_000]  # and every single row of the first 20k ticks, one tick per bus read
    assert assert_live_equals_batch(head, cfg, seed=0, every_tick=True) == len(head)
    table = compute_features(ticks, cfg.features)
    assert np.isfinite(feature_matrix(table)).all()


@pytest.mark.data
def test_real_depth_gives_an_obi_column_joined_as_of_each_tick(shared_data):
    d = shared_data / "hftbacktest_binance"
    series = book_series(d / "spot_btcusdt_20240808_depth.csv.gz", levels=(1, 5, 20))
    ticks = _real(shared_data, *REAL["binance_spot"])
    table = compute_features(ticks, books={"BTCUSDT": series})
    assert [c for c in table.column_names if c.startswith("obi_")] == ["obi_1", "obi_5", "obi_20"]
    ts = table.column("ts_event").to_numpy()
    obi5 = table.column("obi_5").to_numpy()
    before = ts < series.ts[0]
    assert np.isnan(obi5[before]).all()
    assert np.isfinite(obi5[~before]).all() and (np.abs(obi5[~before]) <= 1).all()
    assert (~before).mean() > 0.95
    # as of: the value at a tick is the book's state at the last book change at or before it
    k = int(np.flatnonzero(~before)[len(ticks) // 2])
    j = int(np.searchsorted(series.ts, ts[k], side="right") - 1)
    assert obi5[k] == series.obi[j, 1] and series.ts[j] <= ts[k] < (series.ts[j + 1] if j + 1 < len(series.ts)
                                                                     else np.inf)
    # live and batch features are untouched by the book columns
    plain = compute_features(ticks)
    assert table.select(plain.column_names).equals(plain)
