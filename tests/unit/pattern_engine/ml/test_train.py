"""Training: bundle contents, the engine's normalisation, ONNX parity, honest metrics, the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest

from backend.cli import main
from pattern_engine.features import FeatureParams
from pattern_engine.ml.dataset import LabelledRows, LeakError, labels_from_returns
from pattern_engine.ml.metadata import load_bundle
from pattern_engine.ml.train import PARITY_ATOL, TrainOptions, evaluate, normalise, train
from pattern_engine.pattern_config import load_pattern_config
from tests.unit.pattern_engine.ml.stubs import planted_rows
from tests.unit.pattern_engine.stubs import random_walk
from tick_replay import write_canonical

FEATS = ("ret", "vol", "qimb", "flow_imb")


def onnx_proba(bundle, raw: np.ndarray) -> np.ndarray:
    """What the engine computes: normalise + clip with the bundle's numbers, run the graph."""
    meta, path = load_bundle(bundle)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = normalise(raw, np.asarray(meta.mean), np.asarray(meta.scale), meta.clip)
    return sess.run([meta.output_name], {meta.input_name: x})[0]


def consistent_flag(m: dict) -> bool:
    """beats_baseline recomputed from the recorded numbers."""
    fired = [m[d] for d in ("up", "down") if d in m and m[d]["fires"] >= 20]
    return (m["accuracy"] > m["majority_accuracy"] and bool(fired)
            and all(f["precision"] > f["base_rate"] for f in fired))


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    rows = planted_rows(n=6000, signal=0.8)
    out = tmp_path_factory.mktemp("mlp")
    res = train(rows, TrainOptions(horizon=3, features=FEATS, flat_bps=0.4, max_epochs=40, threshold=0.45), out,
                FeatureParams(fast_halflife=4.0))
    return rows, res


def test_mlp_bundle_holds_what_the_engine_and_the_registry_need(mlp_run):
    rows, res = mlp_run
    meta, path = load_bundle(res.bundle)
    assert meta.kind == "sklearn-mlp" and meta.name == "mlp_h3"
    assert meta.version == "dev-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert meta.features == list(FEATS) and meta.classes == [-1, 0, 1]
    assert meta.input_name == "input" and meta.output_name == "probabilities"
    assert meta.horizon.events == 3 and meta.horizon.flat_bps == 0.4 and meta.threshold == 0.45
    assert meta.feature_params["fast_halflife"] == 4.0 and meta.feature_params["window"] == 64.0
    # mean / scale come from the training rows only
    x_train = rows.matrix(FEATS)[res.split.train]
    np.testing.assert_allclose(meta.mean, x_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(meta.scale, x_train.std(axis=0), rtol=1e-12)
    t = meta.training
    assert t["rows"]["train"] + t["rows"]["val"] + t["rows"]["test"] + t["rows"]["purged_by_embargo"] == 6000
    w = t["windows"]
    assert w["train"]["last_ts"] < w["val"]["first_ts"] <= w["val"]["last_ts"] < w["test"]["first_ts"]
    assert set(t["label_balance"]["test"]) == {"-1", "0", "1"}
    assert {"python", "numpy", "sklearn", "onnx", "onnxruntime", "skl2onnx"} <= set(meta.versions)
    assert meta.created_at.endswith("+00:00")
    assert res.curve["best"] == t["curve"]["best"] and len(res.curve["val"]) == t["curve"]["steps"]
    assert t["model"]["params"]["epochs"] == res.curve["best"] == 1 + int(np.argmin(res.curve["val"]))
    assert min(res.curve["val"]) == pytest.approx(meta.metrics["validation_log_loss"], abs=1e-5)
    json.loads((res.bundle / "model.json").read_text())  # plain JSON


def test_onnx_runtime_matches_sklearn_on_the_test_rows(mlp_run):
    rows, res = mlp_run
    raw = rows.matrix(FEATS)[res.split.test]
    meta, _ = load_bundle(res.bundle)
    xn = normalise(raw, np.asarray(meta.mean), np.asarray(meta.scale), meta.clip)
    np.testing.assert_allclose(onnx_proba(res.bundle, raw), res.model.predict_proba(xn), atol=PARITY_ATOL, rtol=0)
    assert meta.metrics["parity"]["max_abs_diff"] <= PARITY_ATOL


def test_a_planted_signal_beats_the_baselines_and_the_flag_matches_the_numbers(mlp_run):
    rows, res = mlp_run
    m = res.meta.metrics
    assert m["beats_baseline"] is True and consistent_flag(m)
    assert m["auc_ovr"]["1"] > 0.65 and m["auc_ovr"]["-1"] > 0.65
    assert m["log_loss"] < m["baseline_log_loss"]
    assert "beats the naive baselines" in m["verdict"] and "beats the naive baselines" in res.summary
    # the metrics are those of the ONNX outputs on the test rows
    y = labels_from_returns(rows.future_return, 0.4)[res.split.test]
    p = onnx_proba(res.bundle, rows.matrix(FEATS)[res.split.test])
    assert m["accuracy"] == round(float((np.array([-1, 0, 1])[p.argmax(1)] == y).mean()), 4)
    assert m["up"]["fires"] == int((p[:, 2] >= 0.45).sum())


def test_validation_sample_is_raw_features_and_the_curve(mlp_run):
    rows, res = mlp_run
    v = np.load(res.bundle / "validation.npz")
    assert list(v["features"]) == list(FEATS)
    np.testing.assert_array_equal(v["x"], rows.matrix(FEATS)[res.split.val])
    np.testing.assert_array_equal(v["y"], labels_from_returns(rows.future_return, 0.4)[res.split.val])
    assert str(v["curve_kind"]) == "epoch" and v["curve_val"].size == v["curve_x"].size >= 1


def test_normalise_is_the_engines_transform_with_clip():
    x = np.array([[0.0, 100.0], [2.0, -1e9], [4.0, np.float64(5.0)]])
    got = normalise(x, np.array([2.0, 0.0]), np.array([2.0, 0.5]), clip=10.0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([[-1, 10], [0, -10], [1, 10]], dtype=np.float32))


def test_gbm_trains_exports_and_matches(tmp_path):
    rows = planted_rows(n=4000, signal=0.8, seed=1)
    res = train(rows, TrainOptions(horizon=3, model="gbm", features=FEATS, flat_bps=0.4, max_epochs=6), tmp_path)
    meta, _ = load_bundle(res.bundle)
    assert meta.kind == "sklearn-gbm" and res.curve["kind"] == "trees" and res.curve["x"][0] == 10
    assert res.model.n_estimators == res.curve["best"] == meta.training["model"]["params"]["n_estimators"]
    raw = rows.matrix(FEATS)[res.split.test]
    xn = normalise(raw, np.asarray(meta.mean), np.asarray(meta.scale), meta.clip)
    np.testing.assert_allclose(onnx_proba(res.bundle, raw), res.model.predict_proba(xn), atol=PARITY_ATOL, rtol=0)
    assert consistent_flag(meta.metrics) == meta.metrics["beats_baseline"]


def test_noise_does_not_beat_the_baselines_and_says_so(tmp_path):
    rows = planted_rows(n=4000, signal=0.0, seed=2)
    res = train(rows, TrainOptions(horizon=3, features=FEATS, max_epochs=15), tmp_path)
    m = res.meta.metrics
    assert m["beats_baseline"] is False and consistent_flag(m) is False
    assert "does NOT beat" in m["verdict"] and "does NOT beat" in res.summary
    assert res.meta.training["flat_bps_auto"] is True


def test_training_refuses_a_feature_that_looks_ahead(tmp_path):
    rows = planted_rows(n=3000)
    cols = dict(rows.columns, peek=rows.future_return)
    rows = LabelledRows(rows.symbol, rows.ts_event, rows.label_ts, rows.future_return, cols, 3, 3000)
    with pytest.raises(LeakError, match="'peek'.*looks ahead"):
        train(rows, TrainOptions(horizon=3, features=("ret", "peek")), tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_rare_classes_are_reweighted(tmp_path):
    rows = planted_rows(n=4000, signal=0.8, seed=4)
    res = train(rows, TrainOptions(horizon=3, features=FEATS, flat_bps=2.0, max_epochs=5), tmp_path)
    bal = res.meta.training["label_balance"]["train"]
    assert min(bal.values()) < 0.1 and res.meta.training["class_weights"] == "balanced"
    # balanced weights: the rare classes get about as much probability mass as the common one
    p = onnx_proba(res.bundle, rows.matrix(FEATS)[res.split.test])
    assert p[:, 2].mean() > 3 * bal["1"] and p[:, 0].mean() > 3 * bal["-1"]


def test_evaluate_on_hand_made_probabilities():
    y = np.array([1, 1, 1, 0, 0, -1, 0, 0, 0, 0])
    p = np.full((10, 3), 1 / 3)
    p[:3] = [0.1, 0.2, 0.7]  # fires up three times, right every time
    p[5] = [0.6, 0.3, 0.1]  # fires down once, right (too few to count)
    m = evaluate(p, y, [-1, 0, 1], threshold=0.6, prior=np.array([0.1, 0.6, 0.3]), min_fires=2)
    assert m["up"] == {"fires": 3, "precision": 1.0, "base_rate": 0.3}
    assert m["down"] == {"fires": 1, "precision": 1.0, "base_rate": 0.1}
    assert m["majority_class"] == 0 and m["majority_accuracy"] == 0.6
    assert m["accuracy"] == 0.4  # ties (1/3 each) go to the first class, -1: 3 up + 1 down right
    assert m["beats_baseline"] is False  # accuracy below always-0
    assert "does NOT beat" in m["verdict"]


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tick_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ticks") / "walk.csv"
    write_canonical(path, random_walk(12_000, symbols=2, seed=9))
    return path


def test_cli_train_writes_a_bundle_and_prints_an_honest_summary(tick_file, tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["model", "train", "--data", str(tick_file), "--horizon", "5", "--features", "ret,zscore,qimb",
               "--max-rows", "3000", "--out", str(out), "--name", "walk"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    meta, _ = load_bundle(out)
    assert meta.name == "walk" and meta.features == ["ret", "zscore", "qimb"]
    assert meta.training["rows"]["used"] == 3000 and meta.training["files"][0]["path"] == str(tick_file)
    assert meta.training["files"][0]["sha256"] == hashlib.sha256(tick_file.read_bytes()).hexdigest()
    assert meta.feature_params == {k: float(v) for k, v in load_pattern_config().features.model_dump().items()}
    assert consistent_flag(meta.metrics) == meta.metrics["beats_baseline"]
    assert meta.metrics["verdict"] in text.out and str(out) in text.out


def cli(argv: list[str]) -> int:
    """``aitrader`` with argparse's exit turned into a return code."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("argv, message", [
    (["--data", "/nonexistent/ticks.csv", "--horizon", "5"], "no such file"),
    (["--horizon", "0"], "--horizon: must be >= 1"),
    (["--horizon", "5", "--features", "ret,bogus"], "unknown feature 'bogus'"),
    (["--horizon", "5", "--features", "ret,obi_5"], "need --depth"),
    (["--horizon", "5", "--depth", "BTCUSDT=/nonexistent/depth.csv.gz"], "depth file not found"),
])
def test_cli_train_bad_input_exits_2_with_a_clear_message(tick_file, tmp_path, capsys, argv, message):
    if "--data" not in argv:
        argv = ["--data", str(tick_file), *argv]
    rc = cli(["model", "train", *argv, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


# --- a real file ------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_bac_trades_and_quotes_train_in_seconds(shared_data, tmp_path, capsys):
    d = shared_data / "quantconnect_lean" / "equity_tick"
    files = [d / "20131008_bac_Trade_Tick.csv.gz", d / "20131008_bac_Quote_Tick.csv.gz"]
    out = tmp_path / "bac"
    rc = main(["model", "train", "--data", *map(str, files), "--horizon", "50", "--max-rows", "30000",
               "--out", str(out), "--name", "bac_mlp"])
    text = capsys.readouterr()
    assert rc == 0, text.err
    meta, _ = load_bundle(out)
    assert meta.training["rows"]["ticks"] > 200_000 and meta.training["rows"]["used"] == 30_000
    assert meta.training["seconds"] < 30
    m = meta.metrics
    assert {"accuracy", "majority_accuracy", "auc_ovr", "up", "down", "log_loss", "baseline_log_loss",
            "beats_baseline", "verdict"} <= set(m)
    assert m["parity"]["max_abs_diff"] <= PARITY_ATOL
    assert consistent_flag(m) == m["beats_baseline"]
    assert ("does NOT beat" in text.out) == (not m["beats_baseline"])
    v = np.load(out / "validation.npz")
    p = onnx_proba(out, v["x"])
    assert p.shape == (v["y"].size, len(meta.classes)) and np.allclose(p.sum(1), 1, atol=1e-5)
