"""The engine: batching invariance, multi-entry micro-batches, the model seam, input it cannot hold."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pydantic import Field

from common.messages import Side, Tick, TickBatch, TickType, signal_id_for
from pattern_engine.detectors import (
    DETECTOR_TYPES,
    BatchContext,
    BatchDetector,
    Detection,
    DetectorParams,
    register_detector,
)
from pattern_engine.engine import PatternEngine, UnprocessableTicks
from pattern_engine.features import COLUMN, FEATURES
from pattern_engine.pattern_config import parse_pattern_config
from tests.unit.pattern_engine.stubs import T0, TickMaker, random_walk, run, stable

BUSY = {
    "features": {"window": 32, "slow_halflife": 32},
    "detectors": {
        "momentum": {"warmup": 50, "cooldown": 20, "lookback": 8, "threshold": 2.0},
        "mean_reversion": {"warmup": 50, "cooldown": 20, "threshold": 1.5},
        "breakout": {"warmup": 50, "cooldown": 20, "min_range_bps": 5.0},
        "imbalance": {"warmup": 20, "cooldown": 20, "quote_threshold": 0.3, "persist": 3},
        "flow": {"type": "imbalance", "warmup": 20, "cooldown": 20, "quote_threshold": 0.0,
                 "flow_threshold": 0.3, "persist": 3},
    },
}


def test_signals_do_not_depend_on_how_ticks_are_batched():
    cfg = parse_pattern_config(BUSY)
    ticks = random_walk(12_000, symbols=7, seed=5)
    results = {size: stable(run(PatternEngine(cfg, capacity=2), ticks, batch=size)) for size in (1, 64, 1000)}
    by_detector = Counter(r[2] for r in results[1])
    assert set(by_detector) == set(BUSY["detectors"]), by_detector  # every detector is exercised
    assert results[1] == results[64] == results[1000]


def test_several_entries_in_one_micro_batch_equal_one_at_a_time():
    cfg = parse_pattern_config(BUSY)
    ticks = random_walk(6_000, symbols=5, seed=9)
    batches = [TickBatch(ticks=ticks[i : i + 37], ts_ingest=T0 + i) for i in range(0, len(ticks), 37)]
    one = PatternEngine(cfg)
    singly = [stable(one.on_batch(b)) for b in batches]
    many = PatternEngine(cfg)
    grouped: list[list] = []
    for i in range(0, len(batches), 11):
        grouped.extend(stable(s) for s in many.on_batches(batches[i : i + 11]))
    assert sum(map(len, singly)) > 10
    assert grouped == singly
    # each signal carries its own entry's ts_ingest
    for b, sigs in zip(batches, singly):
        assert all(s[8] == b.ts_ingest for s in sigs)


def test_engine_state_grows_past_initial_capacity_mid_stream():
    cfg = parse_pattern_config(BUSY)
    ticks = random_walk(5_000, symbols=100, seed=2)
    small = stable(run(PatternEngine(cfg, capacity=1), ticks, batch=300))
    large = stable(run(PatternEngine(cfg, capacity=512), ticks, batch=300))
    assert small == large


def test_a_tick_time_beyond_int64_raises_before_any_state_changes():
    engine = PatternEngine(parse_pattern_config(BUSY))
    ok = Tick(symbol="A", type=TickType.TRADE, ts_event=T0, seq=1, price=10.0, size=1.0)
    bad = Tick(symbol="A", type=TickType.TRADE, ts_event=2**63, seq=2, price=11.0, size=1.0)
    with pytest.raises(UnprocessableTicks, match="OverflowError"):
        engine.on_batch(TickBatch(ticks=[ok, bad]))
    assert engine.state.ticks("A") == 0 and engine.ticks_seen == 0


# --- the model seam ----------------------------------------------------------------------------


class _CutParams(DetectorParams):
    cut: float = Field(0.5, description="score threshold")


class _ImbalanceModel(BatchDetector):
    """A stand-in model (tests only): scores each row by its EWMA quote imbalance."""

    type_name = "test_imbalance_model"
    Params = _CutParams
    model_id = "test-model"
    model_version = "7"

    def __init__(self, name, params):
        super().__init__(name, params)
        self.calls: list[BatchContext] = []

    def evaluate(self, ctx: BatchContext) -> list[Detection]:
        self.calls.append(ctx)
        score = ctx.features[:, COLUMN["qimb_ema"]]
        return [Detection(i, 1 if v > 0 else -1, abs(float(v))) for i, v in enumerate(score)
                if abs(v) >= self.params.cut]


@pytest.fixture
def model_type():
    register_detector(_ImbalanceModel)
    yield _ImbalanceModel.type_name
    DETECTOR_TYPES.pop(_ImbalanceModel.type_name, None)


def test_a_batch_detector_plugs_in_by_config_and_is_micro_batched(model_type):
    cfg = parse_pattern_config({"detectors": {"mlp": {"type": model_type, "warmup": 5, "cooldown": 8, "cut": 0.5}}})
    engine = PatternEngine(cfg)
    (model,) = engine.models
    mk = TickMaker()
    heavy = [mk.quote(s, 9.99, 10.01, 900.0, 100.0) for _ in range(6) for s in ("A", "B")]
    calm = [mk.quote("C", 9.99, 10.01, 100.0, 100.0) for _ in range(6)]
    first = engine.on_batch(TickBatch(ticks=heavy[:4] + calm[:4], ts_ingest=T0))  # nobody warm yet
    assert first == [] and model.calls == []
    sigs = engine.on_batch(TickBatch(ticks=heavy[4:] + calm[4:5], ts_ingest=T0 + 1))
    ctx = model.calls[-1]
    assert ctx.symbols == ["A", "B", "C"] and ctx.features.shape == (3, len(FEATURES))
    assert [t.symbol for t in ctx.last] == ["A", "B", "C"]
    last_a = heavy[-2]
    assert [(s.symbol, s.side, s.model_id, s.model_version) for s in sigs] == [
        ("A", Side.BUY, "test-model", "7"), ("B", Side.BUY, "test-model", "7")]
    assert sigs[0].signal_id == signal_id_for("A", last_a.ts_event, last_a.seq, "mlp")
    # cooldown: A and B have fired, so only C (calm) is offered next time
    engine.on_batch(TickBatch(ticks=[mk.quote(s, 9.99, 10.01, 900.0, 100.0) for s in ("A", "B", "C")]))
    assert model.calls[-1].symbols == ["C"]


def test_a_failing_batch_detector_does_not_stop_rule_signals(model_type):
    cfg = parse_pattern_config({"detectors": {
        "mlp": {"type": model_type, "warmup": 0},
        "imbalance": {"warmup": 0, "persist": 2, "cooldown": 100},
    }})
    engine = PatternEngine(cfg)
    engine.models[0].evaluate = lambda ctx: 1 / 0
    mk = TickMaker()
    sigs = engine.on_batch(TickBatch(ticks=[mk.quote("A", 9.99, 10.01, 900.0, 100.0) for _ in range(3)]))
    assert [s.detector for s in sigs] == ["imbalance"]
    assert np.isfinite(engine.state.F).all()


def test_batch_detector_output_outside_the_wire_contract_is_dropped(model_type):
    cfg = parse_pattern_config({"detectors": {"mlp": {"type": model_type, "warmup": 0, "cooldown": 0}}})
    engine = PatternEngine(cfg)
    engine.models[0].evaluate = lambda ctx: [Detection(5, 1, 1.0), Detection(0, 0, 1.0),
                                             Detection(0, 1, float("nan")), Detection(0, -1, 2.0)]
    mk = TickMaker()
    sigs = engine.on_batch(TickBatch(ticks=[mk.quote("A", 9.99, 10.01)]))
    assert [(s.side, s.strength) for s in sigs] == [(Side.SELL, 2.0)]


def test_warm_up_compiles_the_only_kernel_signature_the_hot_path_uses():
    from pattern_engine import kernel

    engine = PatternEngine(parse_pattern_config(BUSY))
    engine.warm_up()
    assert len(kernel.run_batch.signatures) == 1
    run(engine, random_walk(500, symbols=3), batch=7)
    engine.on_batches([TickBatch(ticks=random_walk(10, symbols=2)), TickBatch(ticks=[])])
    assert len(kernel.run_batch.signatures) == 1  # no second compile on a real tick
