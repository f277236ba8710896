"""The EMA-cross workload means the same thing everywhere: our kernel, the pure-Python
reference, nautilus_trader and backtrader find the same crosses (peers skip when not installed)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.peers import backtrader_peer, nautilus_peer, ours
from benchmarks.peers.workload import EmaCrossSpec, PeerMissing, PeerSkipped, Trades, reference_crosses
from common.messages import Tick, TickType

T0 = 1_700_000_000_000_000_000
PEERS = {"nautilus_trader": nautilus_peer.run_nautilus, "backtrader": backtrader_peer.run_backtrader}


def _walk(n: int, seed: int) -> np.ndarray:
    """A random walk on a 1-cent grid with runs of equal prices (equal EMAs happen)."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([-2, -1, 0, 0, 0, 1, 2], size=n)
    return np.round(100.0 + 0.01 * np.cumsum(steps), 2)


def _trades(prices: np.ndarray) -> Trades:
    n = len(prices)
    return Trades("SYN", T0 + np.arange(n, dtype=np.int64) * 1_000_000, prices.astype(np.float64),
                  np.full(n, 100.0), price_decimals=2)


def _ticks(prices: np.ndarray) -> list[Tick]:
    return [Tick(symbol="SYN", type=TickType.TRADE, ts_event=T0 + i * 1_000_000, seq=i + 1, price=float(p),
                 size=100.0) for i, p in enumerate(prices.tolist())]


# The hand-computed series of tests/unit/pattern_engine/test_detectors.py: fast 1 (alpha 1), slow 3 (alpha 0.5).
HAND = np.array([10.0, 10.0, 12.0, 12.0, 8.0, 8.0, 12.0, 10.4375, 10.0])
SERIES = [
    (HAND, EmaCrossSpec(fast=1, slow=3, warmup=0, qty=1)),
    (_walk(3000, seed=1), EmaCrossSpec(fast=5, slow=20, warmup=50, qty=1)),
    (_walk(3000, seed=2), EmaCrossSpec(fast=10, slow=30, warmup=200, qty=1)),
]


def test_the_reference_finds_the_hand_computed_crosses():
    assert reference_crosses(HAND.tolist(), SERIES[0][1]) == [(5, -1), (7, 1), (9, -1)]
    assert reference_crosses(HAND.tolist(), EmaCrossSpec(fast=1, slow=3, warmup=6)) == [(7, 1), (9, -1)]


@pytest.mark.parametrize(("prices", "spec"), SERIES)
def test_our_detector_fires_exactly_the_reference_crosses(prices, spec):
    expected = reference_crosses(prices.tolist(), spec)
    assert len(expected) >= 3
    assert ours.crosses(_ticks(prices), spec.fast, spec.slow, spec.warmup) == expected


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize(("prices", "spec"), SERIES)
def test_each_peer_trades_once_per_reference_cross_at_the_tick_price(peer, prices, spec):
    crosses = reference_crosses(prices.tolist(), spec)
    expected = len(crosses)
    # backtrader fills an order when it processes the next bar: none follows a cross on the
    # last tick (the hand series ends with one); nautilus fills on the crossing tick itself.
    unfilled = int(peer == "backtrader" and crosses[-1][0] == len(prices))
    try:
        full = PEERS[peer](_trades(prices), spec, True)
        signals = PEERS[peer](_trades(prices), spec, False)
    except PeerMissing as e:
        pytest.skip(str(e))
    assert (full.trades, signals.trades) == (expected - unfilled, expected)
    note = (f"{expected} crosses, {expected - unfilled} fills, 0 fills away from the crossing tick's price, "
            f"{unfilled} orders unfilled at the end")
    assert full.notes == [note]


@pytest.mark.parametrize("module", [nautilus_peer, backtrader_peer])
def test_a_missing_peer_raises_peer_missing_naming_the_extra(module, monkeypatch):
    monkeypatch.setattr(module, "_MISSING", ImportError("No module named 'x'"))
    run = nautilus_peer.run_nautilus if module is nautilus_peer else backtrader_peer.run_backtrader
    with pytest.raises(PeerMissing, match=r"not installed .*pip install '\.\[bench\]'"):
        run(_trades(HAND), SERIES[0][1])


def test_nautilus_skips_fractional_sizes_rather_than_rounding_them():
    trades = _trades(HAND)
    fractional = Trades(trades.symbol, trades.ts, trades.price, trades.size / 3, 2, size_decimals=8)
    with pytest.raises(PeerSkipped, match="nautilus_trader"):
        nautilus_peer.run_nautilus(fractional, SERIES[0][1])


def test_our_full_backtest_fills_one_order_per_reference_cross(tmp_path):
    """The benchmark's 'ours' row: the in-process backtest (engines, sizing, risk checks, simulator fills)
    turns every reference cross into one filled order, stop and reverse."""
    from tick_replay.formats.canonical import write_canonical

    prices, spec = SERIES[1]
    path = tmp_path / "walk.csv"
    write_canonical(path, _ticks(prices))
    filled, seconds = ours.run_backtest_full(path, spec.fast, spec.slow, qty=10, warmup=spec.warmup,
                                             workdir=tmp_path)
    assert filled == len(reference_crosses(prices.tolist(), spec)) and seconds > 0
