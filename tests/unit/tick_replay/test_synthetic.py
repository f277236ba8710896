"""The synthetic market: deterministic per seed, a sane book, visible volatility clustering."""

from __future__ import annotations

import itertools

import numpy as np

from common.messages import TickType, check
from tick_replay.synthetic import BASE_TS_NS, symbol_names, synthetic_ticks


def test_same_seed_same_ticks_other_seed_other_ticks():
    a = list(synthetic_ticks(5000, symbols=4, seed=3))
    assert a == list(synthetic_ticks(5000, symbols=4, seed=3))
    assert a != list(synthetic_ticks(5000, symbols=4, seed=4))
    assert list(synthetic_ticks(1000, seed=3)) == a[:1000]  # a prefix does not depend on n


def test_book_prices_sizes_and_sequences_are_sane():
    ticks = list(synthetic_ticks(20_000, symbols=5, seed=7))
    assert len(ticks) == 20_000
    assert {t.symbol for t in ticks} == set(symbol_names(5)) == {"SYNA", "SYNB", "SYNC", "SYND", "SYNE"}
    assert ticks[0].ts_event > BASE_TS_NS
    assert all(a.ts_event < b.ts_event for a, b in itertools.pairwise(ticks))
    seqs: dict[str, int] = {}
    for t in ticks:
        assert check(t) is None
        assert 0 < t.bid < t.ask and t.bid_size > 0 and t.ask_size > 0
        for px in (t.bid, t.ask, t.price):
            assert abs(px * 100 - round(px * 100)) < 1e-6  # whole cents
        if t.type == TickType.TRADE:
            assert t.side in (1, -1) and t.size > 0
            assert t.price == (t.ask if t.side == 1 else t.bid)
        seqs[t.symbol] = seqs.get(t.symbol, 0) + 1
        assert t.seq == seqs[t.symbol]
    # Different price levels per symbol.
    first = {}
    for t in ticks:
        first.setdefault(t.symbol, t.bid)
    assert len({round(p, -1) for p in first.values()}) == 5
    trades = sum(t.type == TickType.TRADE for t in ticks)
    assert 0.15 < trades / len(ticks) < 0.5


def test_volatility_clusters():
    ticks = list(synthetic_ticks(60_000, symbols=2, seed=7))
    acfs = []
    for sym in ("SYNA", "SYNB"):
        mids = np.array([(t.bid + t.ask) / 2 for t in ticks if t.symbol == sym and t.type == TickType.QUOTE])
        r = np.abs(np.diff(np.log(mids)))
        r = r - r.mean()
        acfs.append(float(np.dot(r[:-1], r[1:]) / np.dot(r, r)))
    assert min(acfs) > 0.05, acfs
