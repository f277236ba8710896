"""Importing user models: .onnx, scikit-learn .pkl / .joblib, PyTorch .pt; bad files give clear errors."""

from __future__ import annotations

import pickle
import sys

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from backend.cli import main
from pattern_engine.ml.convert import ModelImportError, import_model
from pattern_engine.ml.dataset import DatasetError
from pattern_engine.ml.metadata import load_bundle
from tests.onnx_models import mlp_onnx, mlp_reference

FEATS = ["ret", "vol", "zscore", "qimb", "flow_imb"]


def run_bundle(bundle, x: np.ndarray) -> np.ndarray:
    meta, path = load_bundle(bundle)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xn = ((x - np.asarray(meta.mean)) / np.asarray(meta.scale)).astype(np.float32)
    return sess.run([meta.output_name], {meta.input_name: xn})[0]


def logits_onnx(n_in: int, n_out: int, batch: int | str = "N", seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_in, n_out)).astype(np.float32)
    b = rng.normal(size=n_out).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["scores"])], "lin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, n_out])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString(), w, b


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def xy(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATS)))
    s = x[:, 0] - 0.5 * x[:, 3] + 0.3 * rng.normal(size=n)
    return x, np.where(s > 0.5, 1, np.where(s < -0.5, -1, 0))


# --- .onnx ------------------------------------------------------------------------------------------


def test_onnx_probabilities_import_keeps_the_graph_and_normalisation(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(mlp_onnx(len(FEATS), 3, seed=3))
    mean, scale = [0.1, 0, 0, 0, -2.0], [1.0, 2.0, 1, 1, 4.0]
    out = import_model(src, tmp_path / "b", name="user_mlp", features=FEATS, mean=mean, scale=scale)
    meta, _ = load_bundle(out)
    assert meta.kind == "onnx-import" and meta.version.startswith("dev-") and meta.classes == [-1, 0, 1]
    assert meta.mean == mean and meta.scale == scale and meta.output_name == "probabilities"
    assert meta.training["source"] == str(src)
    x = np.random.default_rng(0).normal(size=(50, len(FEATS)))
    ref = mlp_reference((x - np.asarray(mean)) / np.asarray(scale), 3, seed=3)
    np.testing.assert_allclose(run_bundle(out, x), ref, atol=1e-5)


def test_onnx_logits_get_a_softmax(tmp_path):
    data, w, b = logits_onnx(len(FEATS), 2)
    src = tmp_path / "lin.onnx"
    src.write_bytes(data)
    with pytest.raises(ModelImportError, match="not probabilities.*--outputs logits"):
        import_model(src, tmp_path / "b0", name="lin", features=FEATS, classes=[-1, 1])
    out = import_model(src, tmp_path / "b", name="lin", features=FEATS, classes=[-1, 1], outputs="logits")
    meta, _ = load_bundle(out)
    assert meta.classes == [-1, 1] and meta.input_name == "x" and meta.output_name == "probabilities"
    x = np.random.default_rng(1).normal(size=(40, len(FEATS)))
    np.testing.assert_allclose(run_bundle(out, x), softmax(x.astype(np.float32) @ w + b), atol=1e-5)


def test_onnx_of_the_wrong_width_is_refused(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(mlp_onnx(7, 3))
    with pytest.raises(ModelImportError, match="7 wide but 5 features"):
        import_model(src, tmp_path / "b", name="m", features=FEATS)


def test_onnx_with_a_fixed_batch_or_the_wrong_class_count_is_refused(tmp_path):
    src = tmp_path / "fixed.onnx"
    src.write_bytes(logits_onnx(len(FEATS), 3, batch=1)[0])
    with pytest.raises(ModelImportError, match="fixed batch size of 1"):
        import_model(src, tmp_path / "b", name="m", features=FEATS, outputs="logits")
    src.write_bytes(mlp_onnx(len(FEATS), 2))
    with pytest.raises(ModelImportError, match=r"no float output of shape \[N, 3\]"):
        import_model(src, tmp_path / "b", name="m", features=FEATS)


def test_garbage_and_unknown_files_are_refused(tmp_path):
    for suffix, message in ((".onnx", "not an ONNX file|not a valid ONNX model"), (".pkl", "cannot be unpickled"),
                            (".joblib", "cannot be unpickled"), (".h5", "unknown model file type")):
        src = tmp_path / f"junk{suffix}"
        src.write_bytes(b"\x00\xffnot a model at all\x13\x37" * 10)
        with pytest.raises(ModelImportError, match=message):
            import_model(src, tmp_path / "b", name="m", features=FEATS)
    with pytest.raises(ModelImportError, match="no such file"):
        import_model(tmp_path / "absent.onnx", tmp_path / "b", name="m", features=FEATS)
    assert not (tmp_path / "b").exists()


def test_unknown_feature_names_are_refused(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(mlp_onnx(2, 3))
    with pytest.raises(DatasetError, match="unknown feature 'price_tomorrow'"):
        import_model(src, tmp_path / "b", name="m", features=["ret", "price_tomorrow"])


# --- scikit-learn ------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_sklearn_pipeline_import_matches_predict_proba(tmp_path, suffix):
    x, y = xy()
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    src = tmp_path / f"pipe{suffix}"
    if suffix == ".pkl":
        src.write_bytes(pickle.dumps(est))
    else:
        joblib.dump(est, src)
    out = import_model(src, tmp_path / "b", name="pipe", features=FEATS)
    meta, _ = load_bundle(out)
    assert meta.kind == "sklearn-import" and meta.classes == [-1, 0, 1]
    assert meta.mean == [0.0] * 5 and meta.scale == [1.0] * 5
    assert {"sklearn", "skl2onnx"} <= set(meta.versions)
    xt, _ = xy(300, seed=5)
    np.testing.assert_allclose(run_bundle(out, xt), est.predict_proba(xt), atol=1e-5)


def test_sklearn_binary_mlp_import(tmp_path):
    x, y = xy()
    yb = np.where(y == 1, 1, 0)
    est = MLPClassifier((8,), max_iter=300, random_state=0).fit(x, yb)
    src = tmp_path / "mlp.pkl"
    src.write_bytes(pickle.dumps(est))
    out = import_model(src, tmp_path / "b", name="up", features=FEATS)
    meta, _ = load_bundle(out)
    assert meta.classes == [0, 1]
    np.testing.assert_allclose(run_bundle(out, x[:200]), est.predict_proba(x[:200]), atol=1e-5)


def test_sklearn_files_that_cannot_be_models_are_refused(tmp_path):
    x, y = xy()
    cases = [
        (LinearRegression().fit(x, y), "LinearRegression, which has no predict_proba"),
        ({"weights": [1, 2, 3]}, "dict, which has no predict_proba"),
        (LogisticRegression(), "not fitted"),
        (LogisticRegression(max_iter=300).fit(x[:, :3], y), "takes 3 features but 5 were named"),
        (LogisticRegression(max_iter=300).fit(x, np.where(y > 0, "up", "down")), "not the labels -1 / 0 / 1"),
    ]
    for i, (obj, message) in enumerate(cases):
        src = tmp_path / f"bad{i}.pkl"
        src.write_bytes(pickle.dumps(obj))
        with pytest.raises(ModelImportError, match=message):
            import_model(src, tmp_path / "b", name="m", features=FEATS)
    est = LogisticRegression(max_iter=300).fit(x, y)
    src = tmp_path / "ok.pkl"
    src.write_bytes(pickle.dumps(est))
    with pytest.raises(ModelImportError, match=r"classes are \[-1, 0, 1\], not \[-1, 1\]"):
        import_model(src, tmp_path / "b", name="m", features=FEATS, classes=[-1, 1])


# --- PyTorch -----------------------------------------------------------------------------------------


def test_pt_without_torch_says_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    src = tmp_path / "m.pt"
    src.write_bytes(b"whatever")
    with pytest.raises(ModelImportError, match=r"PyTorch is not installed: pip install torch, or export to ONNX "
                                               r"yourself and import the \.onnx"):
        import_model(src, tmp_path / "b", name="m", features=FEATS)


def test_pt_torchscript_and_module_import(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the .pt import is not exercised here")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(len(FEATS), 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x = np.random.default_rng(2).normal(size=(30, len(FEATS))).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    script = tmp_path / "net_script.pt"
    torch.jit.script(net).save(str(script))
    whole = tmp_path / "net_module.pt"
    torch.save(net, str(whole))
    for i, src in enumerate((script, whole)):
        out = import_model(src, tmp_path / f"b{i}", name="net", features=FEATS, outputs="logits")
        meta, _ = load_bundle(out)
        assert meta.kind == "torch-import"
        np.testing.assert_allclose(run_bundle(out, x.astype(np.float64)), want, atol=1e-5)


# --- the command line ---------------------------------------------------------------------------


def cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def test_cli_import_and_its_errors(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    src.write_bytes(mlp_onnx(len(FEATS), 3))
    rc = cli(["model", "import", str(src), "--name", "user", "--features", ",".join(FEATS),
              "--mean", "0,0,0,0,1", "--scale", "1,1,1,1,2", "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert rc == 0 and "user dev-" in out and "classes [-1, 0, 1]" in out
    assert load_bundle(tmp_path / "b")[0].scale == [1, 1, 1, 1, 2]
    for argv, message in (
        (["--features", "ret,vol"], "5 wide but 2 features"),
        (["--features", ",".join(FEATS), "--mean", "0,1"], "one value per feature (5)"),
        (["--features", ",".join(FEATS), "--scale", "1,1,1,1,0"], "scale values must be finite and > 0"),
        (["--features", ",".join(FEATS), "--mean", "a,b"], "not a comma-separated list of numbers"),
    ):
        rc = cli(["model", "import", str(src), "--name", "user", *argv, "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "c").exists()


def test_imported_graph_has_one_output_and_passes_the_checker(tmp_path):
    x, y = xy()
    src = tmp_path / "lr.pkl"
    src.write_bytes(pickle.dumps(LogisticRegression(max_iter=300).fit(x, y)))
    _, path = load_bundle(import_model(src, tmp_path / "b", name="lr", features=FEATS))
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert [o.name for o in m.graph.output] == ["probabilities"]
    assert not any(n.op_type == "ZipMap" for n in m.graph.node)
