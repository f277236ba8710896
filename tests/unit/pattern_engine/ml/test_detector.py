"""The onnx detector in the engine: loading and refusing bundles, NaN guard, breaker, timeouts, hot swap."""

from __future__ import annotations

import time

import numpy as np
import pytest

from common.config import ConfigError
from common.messages import Side, TickBatch
from pattern_engine.engine import PatternEngine
from pattern_engine.features import COLUMN, FEATURES, FeatureParams
from pattern_engine.ml.detector import OnnxDetector
from pattern_engine.pattern_config import parse_pattern_config
from tests.onnx_models import DEFAULT_FEATURES, make_bundle, mlp_reference
from tests.unit.pattern_engine.stubs import T0, random_walk


def config(model: str, **params: object):
    # a generous timeout: these tests compare signals, and a loaded machine must not turn a slow call into a
    # discarded one (the timeout tests set their own)
    body = {"type": "onnx", "model": model, "warmup": 20, "cooldown": 0, "threshold": 0.34, "timeout_us": 1_000_000,
            **params}
    return parse_pattern_config({"detectors": {"mlp": body}})


def engine(model: str, **params: object) -> PatternEngine:
    return PatternEngine(config(model, **params))


def feed(eng: PatternEngine, ticks, batch: int = 16):
    sigs, per_batch = [], []
    for i in range(0, len(ticks), batch):
        out = eng.on_batch(TickBatch(ticks=ticks[i : i + batch], ts_ingest=T0))
        sigs.extend(out)
        per_batch.append(out)
    return sigs, per_batch


def det(eng: PatternEngine) -> OnnxDetector:
    d = eng.models[0]
    assert isinstance(d, OnnxDetector)
    return d


def test_a_bundle_runs_on_every_batch_and_signals_carry_the_model(tmp_path):
    bundle = make_bundle(tmp_path / "b", name="mlp_a", seed=3)
    eng = engine(str(bundle))
    sigs, _ = feed(eng, random_walk(3000, 5, seed=2))
    assert sigs, "a threshold of 0.34 with three classes fires on nearly every warm row"
    assert {s.detector for s in sigs} == {"mlp"}
    assert {(s.model_id, s.model_version) for s in sigs} == {("mlp_a", "dev-seed3")}
    assert {s.side for s in sigs} <= {Side.BUY, Side.SELL}
    assert all(0.34 <= s.strength <= 1.0 for s in sigs)
    # deterministic: the same ticks in the same batches give the same signals
    again, _ = feed(engine(str(bundle)), random_walk(3000, 5, seed=2))
    assert [(s.signal_id, s.side, s.strength) for s in sigs] == [(s.signal_id, s.side, s.strength) for s in again]


def test_the_detector_scores_the_normalised_clipped_feature_rows(tmp_path):
    feats = ("zscore", "qimb", "ret_10")
    bundle = make_bundle(tmp_path / "b", features=feats, seed=5, mean=[0.5, 0.0, 0.0], scale=[2.0, 1.0, 1e-4],
                         clip=3.0)
    d = det(engine(str(bundle), threshold=0.99))
    x = np.zeros((4, len(FEATURES)))
    x[:, COLUMN["zscore"]] = [0.5, 4.5, -100.0, 1.0]
    x[:, COLUMN["qimb"]] = [0.1, -0.2, 0.3, 0.4]
    x[:, COLUMN["ret_10"]] = [1e-4, 5e-3, -2e-4, 0.0]
    rows, z = d.model.prepare(x)
    assert rows.tolist() == [0, 1, 2, 3]
    want = np.clip((x[:, [COLUMN[f] for f in feats]] - [0.5, 0, 0]) / [2.0, 1.0, 1e-4], -3, 3)
    np.testing.assert_allclose(z, want.astype(np.float32), rtol=1e-6)
    p = d.model.backend.run(z)
    np.testing.assert_allclose(p, mlp_reference(z, seed=5), atol=1e-5)


def test_rows_with_nan_or_inf_features_are_dropped_before_inference_and_counted(tmp_path):
    d = det(engine(str(make_bundle(tmp_path / "b"))))
    seen = []
    run = d.model.backend.run
    d.model.backend.run = lambda x: (seen.append(x.copy()), run(x))[1]
    from pattern_engine.detectors import BatchContext

    x = np.random.default_rng(0).normal(size=(5, len(FEATURES)))
    x[1, COLUMN["ret"]] = np.nan
    x[3, COLUMN["intensity"]] = np.inf
    x[4, COLUMN["bid"]] = np.nan  # not a model input: the row stays
    out = d.evaluate(BatchContext(symbols=list("abcde"), ids=np.arange(5), features=x, ticks=np.full(5, 100),
                                  last=[None] * 5))
    assert seen[0].shape == (3, len(DEFAULT_FEATURES)) and np.isfinite(seen[0]).all()
    assert {r.row for r in out} <= {0, 2, 4}
    assert d.drain_stats()["nonfinite_rows"] == 2
    x[:] = np.nan
    assert d.evaluate(BatchContext(symbols=list("abcde"), ids=np.arange(5), features=x, ticks=np.full(5, 100),
                                   last=[None] * 5)) == []


@pytest.mark.parametrize("problem, make, key_text", [
    ("missing", lambda p: p / "nope", "not a model bundle"),
    ("garbage onnx", lambda p: _corrupt(make_bundle(p / "b")), "sha256"),
    ("obi feature", lambda p: make_bundle(p / "b", features=("ret", "obi_5")), "obi_5"),
    ("feature settings", lambda p: make_bundle(p / "b", feature_params={"fast_halflife": 4.0}), "fast_halflife"),
    ("wrong outputs", lambda p: make_bundle(p / "b", classes=(-1, 1), n_out=3), "lists 2 classes"),
])
def test_a_bad_bundle_stops_the_start_with_the_key_named(tmp_path, problem, make, key_text):
    bundle = make(tmp_path)
    cfg = config(str(bundle))  # reading the pattern file touches no model file
    with pytest.raises(ConfigError) as e:
        PatternEngine(cfg)
    assert "detectors.mlp.model" in str(e.value) and key_text in str(e.value)


def _corrupt(bundle):
    (bundle / "model.onnx").write_bytes(b"not an onnx file")
    return bundle


def test_the_default_feature_settings_match_a_bundle_trained_with_them(tmp_path):
    params = FeatureParams().model_dump()
    d = det(engine(str(make_bundle(tmp_path / "b", feature_params=params))))
    assert d.model is not None


def _ctx(n: int = 4):
    from pattern_engine.detectors import BatchContext

    x = np.random.default_rng(1).normal(size=(n, len(FEATURES)))
    return BatchContext(symbols=[f"S{i}" for i in range(n)], ids=np.arange(n), features=x, ticks=np.full(n, 100),
                        last=[None] * n)


def test_errors_are_counted_and_a_sustained_failure_opens_the_breaker_then_a_probe_closes_it(tmp_path):
    d = det(engine(str(make_bundle(tmp_path / "b")), isolation="inline", max_failures=3, failure_window=10,
                   retry_after_s=0.2))
    good = d.model.backend.run

    def broken(x):
        raise RuntimeError("device lost")

    assert d.evaluate(_ctx())
    d.model.backend.run = broken
    assert d.evaluate(_ctx()) == [] and d.evaluate(_ctx()) == []
    assert not d.breaker_open and d.alerts == []
    assert d.evaluate(_ctx()) == []
    assert d.breaker_open
    (cmd, reason, args), = d.alerts
    assert cmd == "model.disabled" and "device lost" in reason and args["failures"] == "3"
    d.model.backend.run = good
    assert d.evaluate(_ctx()) == []  # open: skipped without calling the model
    stats = d.drain_stats()
    assert stats["errors"] == 3 and stats["skipped_breaker"] == 1 and stats["breaker_opened"] == 1
    time.sleep(0.25)
    assert d.evaluate(_ctx())  # the probe succeeds: signals again
    assert not d.breaker_open and d.alerts[-1][0] == "model.enabled"


def test_bad_outputs_count_as_failures(tmp_path):
    d = det(engine(str(make_bundle(tmp_path / "b")), isolation="inline"))
    d.model.backend.run = lambda x: np.full((x.shape[0], 3), np.nan, dtype=np.float32)
    assert d.evaluate(_ctx()) == []
    d.model.backend.run = lambda x: np.zeros((1, 3), dtype=np.float32)
    assert d.evaluate(_ctx()) == []
    assert d.drain_stats()["errors"] == 2


def test_a_hung_model_never_holds_the_batch_longer_than_the_timeout(tmp_path):
    d = det(engine(str(make_bundle(tmp_path / "b")), isolation="thread", timeout_us=20_000))
    good = d.model.backend.run
    assert d.evaluate(_ctx())
    release = time.monotonic() + 0.5

    def hung(x):
        while time.monotonic() < release:
            time.sleep(0.005)
        return good(x)

    d.model.backend.run = hung
    t0 = time.perf_counter()
    assert d.evaluate(_ctx()) == []  # abandoned after 20 ms
    assert d.evaluate(_ctx()) == []  # worker still stuck: skipped at once
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.2
    stats = d.drain_stats()
    assert stats["timeouts"] == 2
    d.model.backend.run = good
    time.sleep(0.6)  # the stuck call returns; the worker is free again
    assert d.evaluate(_ctx())


def test_inline_isolation_discards_a_late_result(tmp_path):
    d = det(engine(str(make_bundle(tmp_path / "b")), isolation="inline", timeout_us=1000))
    good = d.model.backend.run
    d.model.backend.run = lambda x: (time.sleep(0.01), good(x))[1]
    assert d.evaluate(_ctx()) == []
    assert d.drain_stats()["timeouts"] == 1


def test_a_hot_swap_between_batches_loses_and_reorders_no_tick(tmp_path):
    a = make_bundle(tmp_path / "a", name="m", seed=1)
    b = make_bundle(tmp_path / "b", name="m", seed=2)
    ticks = random_walk(4000, 4, seed=9)
    ref = engine(str(a))
    want_a, _ = feed(ref, ticks)
    ref_b = engine(str(b))
    want_b, _ = feed(ref_b, ticks)

    eng = engine(str(a))
    d = det(eng)
    half = 2000
    s1, _ = feed(eng, ticks[:half])
    old = d.swap(d.load(str(b)))
    old.close()
    s2, _ = feed(eng, ticks[half:])
    assert eng.ticks_seen == len(ticks)
    assert {s.model_version for s in s1} == {"dev-seed1"} and {s.model_version for s in s2} == {"dev-seed2"}
    # features are not reset by a swap: after it, the signals are exactly what model b gives on the same state
    key = lambda s: (s.signal_id, s.side, s.strength)
    assert [key(s) for s in s1] == [key(s) for s in want_a if s.ts_event <= ticks[half - 1].ts_event]
    assert [key(s) for s in s2] == [key(s) for s in want_b if s.ts_event > ticks[half - 1].ts_event]


def test_a_disabled_onnx_detector_loads_nothing(tmp_path):
    cfg = config(str(tmp_path / "absent"), enabled=False)
    assert cfg.batch == [] and cfg.detectors[0].model is None


def test_backend_options_reach_the_backend_and_an_unknown_one_is_refused_at_start(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    assert det(engine(str(bundle), backend_options={"device_id": 0})).model is not None  # cpu ignores it
    with pytest.raises(ConfigError, match=r"detectors\.mlp\.model: .*colour"):
        engine(str(bundle), backend_options={"colour": "blue"})
