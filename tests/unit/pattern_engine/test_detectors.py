"""Each detector fires on a constructed scenario, once per move, and stays quiet on flat data."""

from __future__ import annotations

import math

import pytest

from common.config import ConfigError
from common.messages import Side, TickBatch, signal_id_for
from pattern_engine.engine import PatternEngine
from pattern_engine.pattern_config import load_pattern_config, parse_pattern_config
from tests.unit.pattern_engine.stubs import T0, TickMaker, noise, only, run


def test_flat_market_fires_nothing():
    mk = TickMaker()
    ticks = []
    for _ in range(600):
        ticks += [mk.trade("FLAT", 100.0, 100.0, 1), mk.trade("FLAT", 100.0, 100.0, -1),
                  mk.quote("FLAT", 99.99, 100.01, 200.0, 200.0)]
    for name in ("momentum", "mean_reversion", "breakout", "imbalance"):
        assert run(PatternEngine(only(name, warmup=10, cooldown=1)), ticks) == [], name
    assert run(PatternEngine(load_pattern_config()), ticks) == []


# --- momentum ----------------------------------------------------------------------------------


def test_momentum_burst_fires_once_with_the_move():
    mk = TickMaker()
    ticks = noise(mk, "MOM", 200, quotes=False)
    burst = [mk.trade("MOM", round(100.0 * (1.003**i), 4), 100.0, 1) for i in range(1, 13)]
    sigs = run(PatternEngine(only("momentum", lookback=8, threshold=4.0, cooldown=30)), ticks + burst)
    assert [(s.detector, s.side) for s in sigs] == [("momentum", Side.BUY)]
    assert sigs[0].tick_seq in {t.seq for t in burst[:4]}  # early in the burst, not at its end


def test_momentum_fires_again_for_a_second_move_after_the_cooldown():
    mk = TickMaker()
    ticks = noise(mk, "MOM", 200, quotes=False)
    ticks += [mk.trade("MOM", round(100.0 * (1.003**i), 4)) for i in range(1, 13)]
    top = 100.0 * 1.003**12
    ticks += noise(mk, "MOM", 300, price=top, quotes=False, seed=3)  # the slow EMA catches up
    ticks += [mk.trade("MOM", round(top * (0.997**i), 4)) for i in range(1, 13)]
    sigs = run(PatternEngine(only("momentum", lookback=8, threshold=4.0, cooldown=30)), ticks)
    assert [s.side for s in sigs] == [Side.BUY, Side.SELL]


def test_momentum_needs_the_trend_when_required():
    mk = TickMaker()
    ticks = noise(mk, "MOM", 200, quotes=False)
    # Far below the slow EMA, then a sharp bounce that stays below it.
    ticks += [mk.trade("MOM", 97.0) for _ in range(10)]
    ticks += [mk.trade("MOM", round(97.0 * 1.004**i, 4)) for i in range(1, 6)]
    on = run(PatternEngine(only("momentum", lookback=4, threshold=2.0, require_trend=True, cooldown=1)), ticks)
    off = run(PatternEngine(only("momentum", lookback=4, threshold=2.0, require_trend=False, cooldown=1)), ticks)
    assert Side.BUY not in [s.side for s in on]
    assert Side.BUY in [s.side for s in off]


# --- mean reversion ----------------------------------------------------------------------------


def test_mean_reversion_fades_a_stretch_once():
    mk = TickMaker()
    ticks = noise(mk, "MR", 300, quotes=False)
    jump = [mk.trade("MR", 101.0) for _ in range(20)]  # +100 bps, about 5 sigma of the slow-EMA gap
    sigs = run(PatternEngine(only("mean_reversion", threshold=4.0, cooldown=50)), ticks + jump)
    assert [(s.detector, s.side) for s in sigs] == [("mean_reversion", Side.SELL)]
    assert sigs[0].tick_seq == jump[0].seq
    assert sigs[0].strength >= 4.0


def test_mean_reversion_does_not_fade_beyond_max_z():
    mk = TickMaker()
    ticks = noise(mk, "MR", 300, quotes=False) + [mk.trade("MR", 95.0) for _ in range(5)]
    assert run(PatternEngine(only("mean_reversion", threshold=4.0, max_z=8.0)), ticks) == []
    assert [s.side for s in run(PatternEngine(only("mean_reversion", threshold=4.0)), ticks)] == [Side.BUY]


# --- breakout ----------------------------------------------------------------------------------


def _range(mk: TickMaker, sym: str, n: int, half_bps: float) -> list:
    """A saw-tooth between 100 -/+ half_bps with period 8 (shorter than the window)."""
    steps = [-2, -1, 0, 1, 2, 1, 0, -1]
    return [mk.trade(sym, round(100.0 * (1 + half_bps * 1e-4 * steps[i % 8] / 2), 4)) for i in range(n)]


def test_breakout_buys_a_new_high_and_sells_a_new_low():
    mk = TickMaker()
    ticks = _range(mk, "BO", 80, 20.0)
    up = mk.trade("BO", 100.3)
    ticks += [up] + _range(mk, "BO", 40, 20.0)
    down = mk.trade("BO", 99.6)
    ticks.append(down)
    cfg = only("breakout", features={"window": 16}, min_range_bps=10.0, warmup=20, cooldown=10)
    sigs = run(PatternEngine(cfg), ticks)
    assert [(s.side, s.tick_seq) for s in sigs] == [(Side.BUY, up.seq), (Side.SELL, down.seq)]
    assert sigs[0].price == 100.3 and sigs[0].strength > 0


def test_breakout_ignores_a_range_narrower_than_min_range():
    mk = TickMaker()
    ticks = _range(mk, "BO", 80, 2.0) + [mk.trade("BO", 100.05)]  # 4 bps range, then a 5 bps poke
    cfg = only("breakout", features={"window": 16}, min_range_bps=10.0, warmup=20)
    assert run(PatternEngine(cfg), ticks) == []


# --- imbalance ---------------------------------------------------------------------------------


def test_quote_imbalance_fires_after_persisting_and_respects_warmup_and_cooldown():
    mk = TickMaker()
    ticks = [mk.quote("IMB", 99.99, 100.01, 900.0, 100.0) for _ in range(200)]
    sigs = run(PatternEngine(only("imbalance", quote_threshold=0.6, persist=20, warmup=50, cooldown=60)), ticks)
    assert [s.side for s in sigs] == [Side.BUY] * 3
    assert [s.tick_seq for s in sigs] == [50, 110, 170]  # warm-up, then one per cooldown
    assert math.isclose(sigs[0].strength, 0.8)
    assert sigs[0].price == 100.0  # mid: no trade yet


def test_imbalance_needs_persistence():
    mk = TickMaker()
    ticks = []
    for _ in range(50):  # heavy bid for 10 ticks, then balanced: never 20 in a row
        ticks += [mk.quote("IMB", 99.99, 100.01, 900.0, 100.0) for _ in range(10)]
        ticks += [mk.quote("IMB", 99.99, 100.01, 100.0, 100.0) for _ in range(10)]
    cfg = only("imbalance", features={"imbalance_halflife": 1.0}, quote_threshold=0.6, persist=20, warmup=0)
    assert run(PatternEngine(cfg), ticks) == []


def test_flow_imbalance_sells_into_persistent_selling():
    mk = TickMaker()
    ticks = noise(mk, "FLOW", 100, quotes=False, seed=11)  # mixed aggressors
    ticks += [mk.trade("FLOW", 100.0, 50.0, -1) for _ in range(100)]
    cfg = only("imbalance", quote_threshold=0.0, flow_threshold=0.7, persist=10, warmup=0, cooldown=1000)
    sigs = run(PatternEngine(cfg), ticks)
    assert [s.side for s in sigs] == [Side.SELL]
    assert sigs[0].tick_seq > 100


def test_disabled_detector_never_fires():
    mk = TickMaker()
    ticks = [mk.quote("IMB", 99.99, 100.01, 900.0, 100.0) for _ in range(200)]
    assert run(PatternEngine(only("imbalance", enabled=False)), ticks) == []


# --- EMA cross ---------------------------------------------------------------------------------

# fast = 1 (alpha 1: the fast EMA is the price), slow = 3 (alpha 0.5); every value below is exact.
#   trade  price  fast  slow      gap      side
#   1      10     10    10        0        -      (both seeded at the first price)
#   2      10     10    10        0        -
#   3      12     12    11        +1       +      first side taken: not a cross
#   4      12     12    11.5      +0.5     +
#   5      8      8     9.75      -1.75    SELL
#   6      8      8     8.875     -0.875   -
#   7      12     12    10.4375   +1.5625  BUY
#   8      10.4375 ...  10.4375   0        (+ holds: equal EMAs are not a cross)
#   9      10     10    10.21875  -0.21875 SELL
_CROSS_PRICES = [10.0, 10.0, 12.0, 12.0, 8.0, 8.0, 12.0, 10.4375, 10.0]


def _ema(**params: object):
    return only("ema_cross", **{"fast": 1, "slow": 3, "warmup": 0, "cooldown": 0, **params})


def _cross(cfg, ticks, batch: int = 64) -> list[tuple[Side, int, float]]:
    return [(s.side, s.tick_seq, s.strength) for s in run(PatternEngine(cfg), ticks, batch)]


def test_ema_cross_fires_on_each_change_of_side_of_the_hand_computed_emas():
    mk = TickMaker()
    ticks = [mk.trade("X", p) for p in _CROSS_PRICES]
    cfg = _ema()
    assert _cross(cfg, ticks) == [(Side.SELL, 5, 1.75 / 9.75 * 1e4), (Side.BUY, 7, 1.5625 / 10.4375 * 1e4),
                                  (Side.SELL, 9, 0.21875 / 10.21875 * 1e4)]
    assert _cross(cfg, ticks, batch=1) == _cross(cfg, ticks)
    by_alpha = _ema(fast=2, slow=5, fast_alpha=1.0, slow_alpha=0.5)
    assert _cross(by_alpha, ticks) == _cross(cfg, ticks)


def test_ema_cross_warmup_suppresses_early_crosses_but_the_emas_keep_running():
    mk = TickMaker()
    ticks = [mk.trade("X", p) for p in _CROSS_PRICES]
    assert [seq for _, seq, _ in _cross(_ema(warmup=5), ticks)] == [5, 7, 9]
    assert [seq for _, seq, _ in _cross(_ema(warmup=6), ticks)] == [7, 9]


def test_ema_cross_follows_trades_only_and_each_symbol_alone():
    mk = TickMaker()
    ticks = []
    for p in _CROSS_PRICES:  # a quote far from the trades between each, and another symbol
        ticks += [mk.trade("X", p), mk.quote("X", 50.0, 50.5), mk.trade("Y", 100.0)]
    sigs = run(PatternEngine(_ema()), ticks)
    # The far quotes and Y's trades move nothing: the same three crosses as trades alone.
    assert [(s.symbol, s.side, s.price) for s in sigs] == [("X", Side.SELL, 8.0), ("X", Side.BUY, 12.0),
                                                           ("X", Side.SELL, 10.0)]


def test_ema_cross_rejects_a_fast_ema_no_faster_than_the_slow_one():
    with pytest.raises(ConfigError, match=r"detectors\.ema_cross\.fast: .*faster"):
        only("ema_cross", fast=30, slow=30)
    with pytest.raises(ConfigError, match=r"detectors\.ema_cross\.fast_alpha: "):
        only("ema_cross", fast_alpha=0.1, slow=3)


def test_ema_cross_is_shipped_but_not_enabled():
    det = {d.name: d for d in load_pattern_config().detectors}["ema_cross"]
    assert det.type_name == "ema_cross" and not det.enabled


# --- the signal --------------------------------------------------------------------------------


def test_signal_carries_the_tick_stamps_reference_price_volatility_and_deterministic_id():
    mk = TickMaker()
    ticks = noise(mk, "MR", 300, quotes=False) + [mk.trade("MR", 101.0)]
    engine = PatternEngine(only("mean_reversion", threshold=4.0), clock=lambda: 42)
    sigs = engine.on_batch(TickBatch(ticks=ticks, ts_ingest=T0 + 5))
    assert len(sigs) == 1
    s, tick = sigs[0], ticks[-1]
    assert s.signal_id == signal_id_for("MR", tick.ts_event, tick.seq, "mean_reversion")
    assert (s.symbol, s.tick_seq, s.ts_event, s.ts_ingest, s.ts_signal) == ("MR", tick.seq, tick.ts_event,
                                                                            T0 + 5, 42)
    row = engine.state.row("MR")
    assert s.price == row["ref"] == 101.0
    assert s.volatility == row["vol_px"] > 0
    assert (s.model_id, s.model_version) == ("", "")


def test_two_runs_give_the_same_signal_ids():
    mk = TickMaker()
    ticks = noise(mk, "A", 300) + [mk.trade("A", 101.0)] + [mk.quote("A", 100.99, 101.01, 900.0, 10.0)] * 40
    cfg = parse_pattern_config({"detectors": {
        "mean_reversion": {"warmup": 50, "threshold": 4.0},
        "imbalance": {"warmup": 50, "persist": 10, "cooldown": 20},
    }})
    a, b = run(PatternEngine(cfg), ticks), run(PatternEngine(cfg), ticks)
    assert len(a) >= 2 and {s.detector for s in a} == {"mean_reversion", "imbalance"}
    assert [s.signal_id for s in a] == [s.signal_id for s in b]
    assert len({s.signal_id for s in a}) == len(a)
