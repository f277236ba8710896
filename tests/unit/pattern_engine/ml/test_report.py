"""Research report: permutation importance ranks a planted feature first; the PNG is drawn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from backend.cli import main
from pattern_engine.ml.metadata import BundleError
from pattern_engine.ml.report import permutation_importance, precision_curve, write_report
from pattern_engine.ml.train import TrainOptions, train
from tests.onnx_models import make_bundle
from tests.unit.pattern_engine.ml.stubs import planted_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_permutation_importance_ranks_the_planted_feature_first():
    rng = np.random.default_rng(0)
    names = ["a", "b", "planted", "c", "d"]
    x = rng.normal(size=(4000, 5))
    y = np.where(x[:, 2] + 0.5 * rng.normal(size=4000) > 0, 1, -1)
    model = LogisticRegression().fit(x[:2000], y[:2000])
    imps = permutation_importance(model.predict_proba, x[2000:], y[2000:], [-1, 1], names, repeats=3)
    assert imps[0].feature == "planted"
    assert imps[0].mean > 0.3  # log-loss rises a lot without it
    assert all(abs(i.mean) < 0.02 for i in imps[1:])  # the noise columns barely matter
    with pytest.raises(ValueError, match="3 columns for 5 feature names"):
        permutation_importance(model.predict_proba, x[:, :3], y, [-1, 1], names)


def test_precision_curve_counts_only_thresholds_that_fire_enough():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    hit = np.array([True, True, False, True, False, False])
    prec, share = precision_curve(p, hit, np.array([0.5, 0.75, 0.95]), min_fires=2)
    assert prec[0] == 0.75 and prec[1] == 1.0 and np.isnan(prec[2])
    np.testing.assert_allclose(share, [4 / 6, 2 / 6, 0])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    rows = planted_rows(n=5000, signal=0.9, seed=7, features=("ret", "vol", "qimb", "flow_imb", "zscore"))
    out = tmp_path_factory.mktemp("bundle")
    train(rows, TrainOptions(horizon=3, flat_bps=0.4, features=("ret", "vol", "qimb", "flow_imb", "zscore"),
                             max_epochs=25), out)
    return out


def test_report_png_and_the_trained_models_importance(bundle, tmp_path):
    res = write_report(bundle, tmp_path / "r" / "report.png")
    data = res.png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    import matplotlib.pyplot as plt

    img = plt.imread(res.png)
    assert img.shape[0] > 300 and img.shape[1] > 1000
    assert res.importances[0].feature == "qimb" and res.rows == 5000 * 0.2 - 3
    assert res.importances[0].mean > 5 * max(abs(i.mean) for i in res.importances[1:])


def test_report_needs_a_trained_bundle(tmp_path, capsys):
    plain = make_bundle(tmp_path / "imported")
    with pytest.raises(BundleError, match="validation.npz: missing"):
        write_report(plain, tmp_path / "x.png")
    assert main(["model", "report", str(plain)]) == 2
    assert "validation.npz: missing" in capsys.readouterr().err
    assert main(["model", "report", str(tmp_path / "nothing")]) == 2
    assert "no such bundle directory" in capsys.readouterr().err


def test_cli_report_prints_the_ranking(bundle, tmp_path, capsys):
    assert main(["model", "report", str(bundle), "--out", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  ")]
    assert lines[0][0] == "qimb" and len(lines) == 5
    assert (tmp_path / "r.png").read_bytes().startswith(PNG_MAGIC)
