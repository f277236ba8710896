"""Research report of a trained bundle: training curve, precision vs threshold, permutation importance.

Everything is computed from the bundle alone: ``model.onnx`` run by ONNX Runtime (what the
engine runs) on ``validation.npz`` (raw validation features and labels saved by training),
normalised with the bundle's mean / scale / clip.

Permutation importance of a feature: the rise in validation log-loss when that column is
shuffled (its link to the label broken, its distribution kept), averaged over a few
shuffles. Near 0: the model does not use it; negative: noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pattern_engine.ml.metadata import BundleError, load_bundle

__all__ = ["Importance", "ReportResult", "permutation_importance", "precision_curve", "write_report"]

VALIDATION_FILE = "validation.npz"


@dataclass(frozen=True)
class Importance:
    feature: str
    mean: float  # rise in log-loss when shuffled (mean over repeats)
    std: float


@dataclass(frozen=True)
class ReportResult:
    png: Path
    importances: list[Importance]
    rows: int


def _log_loss(y: np.ndarray, p: np.ndarray, classes: Sequence[int]) -> float:
    idx = np.searchsorted(np.asarray(classes), y)
    return float(-np.log(np.clip(p[np.arange(y.size), idx], 1e-7, 1.0)).mean())


def permutation_importance(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                           classes: Sequence[int], features: Sequence[str], repeats: int = 3,
                           seed: int = 0) -> list[Importance]:
    """Rise in log-loss of ``predict`` (rows → class probabilities) when each column of ``x`` is shuffled;
    most important first. Rows whose label is not in ``classes`` are ignored."""
    if x.shape[1] != len(features):
        raise ValueError(f"x has {x.shape[1]} columns for {len(features)} feature names")
    ok = np.isin(y, classes)
    x, y = x[ok], y[ok]
    rng = np.random.default_rng(seed)
    base = _log_loss(y, predict(x), classes)
    out = []
    for j, name in enumerate(features):
        drops = []
        for _ in range(repeats):
            xs = x.copy()
            xs[:, j] = xs[rng.permutation(xs.shape[0]), j]
            drops.append(_log_loss(y, predict(xs), classes) - base)
        out.append(Importance(name, float(np.mean(drops)), float(np.std(drops))))
    return sorted(out, key=lambda i: -i.mean)


def precision_curve(p: np.ndarray, hit: np.ndarray, thresholds: np.ndarray, min_fires: int = 10
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Precision of "fire when p ≥ t" for each threshold t (NaN where fewer than ``min_fires`` rows fire)
    and the share of rows that fire."""
    prec = np.full(thresholds.size, np.nan)
    share = np.zeros(thresholds.size)
    for i, t in enumerate(thresholds):
        fire = p >= t
        k = int(fire.sum())
        share[i] = k / max(1, p.size)
        if k >= min_fires:
            prec[i] = float(hit[fire].mean())
    return prec, share


def write_report(bundle_dir: str | Path, out_png: str | Path | None = None, repeats: int = 3) -> ReportResult:
    """Draw the report of a trained bundle into ``out_png`` (default ``<bundle>/report.png``).

    Raises ``BundleError`` for a bundle without a validation sample (imported models have none).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pattern_engine.ml.convert import ort_session

    meta, onnx_path = load_bundle(bundle_dir)
    vpath = Path(bundle_dir) / VALIDATION_FILE
    if not vpath.is_file():
        raise BundleError(f"{vpath}: missing; a report needs a bundle written by 'aitrader model train'")
    try:
        v = np.load(vpath, allow_pickle=False)
        x, y = v["x"], v["y"]
        saved = [str(f) for f in v["features"]]
        curve = {k: v[f"curve_{k}"] for k in ("kind", "x", "train", "val", "best")}
    except (OSError, KeyError, ValueError) as e:
        raise BundleError(f"{vpath}: unreadable validation sample: {e}") from e
    if saved != list(meta.features):
        raise BundleError(f"{vpath}: features {saved} differ from model.json's {list(meta.features)}")
    out = Path(out_png) if out_png else Path(bundle_dir) / "report.png"
    mean, scale = np.asarray(meta.mean), np.asarray(meta.scale)
    sess = ort_session(onnx_path.read_bytes())

    def predict(raw: np.ndarray) -> np.ndarray:
        xn = np.clip((raw - mean) / scale, -meta.clip, meta.clip).astype(np.float32)
        return sess.run([meta.output_name], {meta.input_name: xn})[0]

    classes = list(meta.classes)
    imps = permutation_importance(predict, x, y, classes, meta.features, repeats=repeats)
    proba = predict(x)

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    what = "epoch" if str(curve["kind"]) == "epoch" else "trees"
    ax.plot(curve["x"], curve["train"], label="train (sample)")
    ax.plot(curve["x"], curve["val"], label="validation")
    ax.axvline(int(curve["best"]), color="grey", ls=":", label=f"kept: {int(curve['best'])}")
    ax.set_xlabel(what)
    ax.set_ylabel("log-loss")
    ax.set_title(f"training curve ({meta.kind})")
    ax.legend()

    ax = axes[1]
    ts = np.linspace(0.34, 0.95, 62)
    for c, what, color in ((1, "up", "tab:green"), (-1, "down", "tab:red")):
        if c not in classes:
            continue
        prec, _ = precision_curve(proba[:, classes.index(c)], y == c, ts)
        ax.plot(ts, prec, color=color, label=f"{what} precision")
        ax.axhline(float((y == c).mean()), color=color, ls="--", lw=1, label=f"{what} base rate")
    ax.axvline(meta.threshold, color="grey", ls=":", label=f"threshold {meta.threshold}")
    ax.set_xlabel("threshold on P(class)")
    ax.set_ylabel("precision (validation)")
    ax.set_title(f"precision vs threshold ({y.size} validation rows)")
    ax.legend(fontsize=8)

    ax = axes[2]
    names = [i.feature for i in imps][::-1]
    ax.barh(names, [i.mean for i in imps][::-1], xerr=[i.std for i in imps][::-1], color="tab:blue")
    ax.set_xlabel("rise in validation log-loss when shuffled")
    ax.set_title(f"permutation importance ({repeats} shuffles)")

    fig.suptitle(f"{meta.name} {meta.version}: horizon {meta.horizon.events if meta.horizon else '?'} price events")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return ReportResult(out, imps, int(y.size))
