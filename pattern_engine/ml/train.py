"""Train a small classifier on labelled ticks, export it to ONNX, measure it honestly, write a bundle.

Steps (``train``): pick the feature columns → drop rows with a non-finite feature → time split
with embargo (``dataset.time_split``) → flat band (given, or the 1/3 quantile of |return| on the
training rows) → leak check (refuses to go on) → normalise with the training rows' mean / std,
clipped to ``±clip`` exactly as the engine does → fit (``mlp``: MLPClassifier, one
``partial_fit`` pass per epoch, early stopping on validation log-loss with patience, the best
epoch kept; ``gbm``: GradientBoostingClassifier grown 10 trees at a time the same way) → ONNX
(skl2onnx, float32 ``input``, ``probabilities`` ``[N, classes]``) → parity of ONNX Runtime with
``predict_proba`` on the test rows → metrics on the test window (after validation), computed
from the ONNX Runtime outputs the engine will see, against naive baselines → bundle plus
``validation.npz`` (a sample of raw validation rows and the training curve, for the report).

HistGradientBoostingClassifier is not used: skl2onnx 1.20 fails to convert it under
scikit-learn 1.9 (a boolean attribute in TreeEnsembleClassifier).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pattern_engine.features import FeatureParams
from pattern_engine.ml.convert import ort_session, sklearn_to_onnx, versions
from pattern_engine.ml.dataset import (
    DEFAULT_FEATURES,
    DatasetError,
    LabelledRows,
    Split,
    assert_no_leaks,
    auto_flat_bps,
    check_feature_names,
    labels_from_returns,
    time_split,
)
from pattern_engine.ml.metadata import Horizon, ModelMetadata, file_sha256, save_bundle

__all__ = ["MODELS", "PARITY_ATOL", "TrainOptions", "TrainResult", "evaluate", "normalise", "train"]

MODELS = ("mlp", "gbm")
PARITY_ATOL = 1e-5  # ONNX Runtime (float32) vs predict_proba on the same float32 inputs
VALIDATION_SAMPLE = 20_000
CURVE_SAMPLE = 20_000  # training rows the per-epoch training loss is measured on
MIN_FIRES = 20  # a direction must fire on at least this many test rows for its precision to count
MIN_CLASS_SHARE = 0.10  # below this share of training rows, classes are re-weighted (balanced)


@dataclass(frozen=True)
class TrainOptions:
    horizon: int
    flat_bps: float | None = None  # None: about a third of the training rows flat
    model: str = "mlp"
    features: tuple[str, ...] | None = None  # None: DEFAULT_FEATURES plus obi_* columns present
    name: str | None = None
    threshold: float = 0.5
    max_rows: int | None = None
    seed: int = 0
    clip: float = 10.0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    max_epochs: int = 60
    patience: int = 5
    hidden: tuple[int, ...] = (32, 32)


@dataclass
class TrainResult:
    bundle: Path
    meta: ModelMetadata
    summary: str
    seconds: float = 0.0
    curve: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the fitted scikit-learn estimator (the one exported)
    split: Split | None = None


def normalise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
    """The engine's input transform: ``clip((x - mean) / scale, -clip, clip)`` in float64, then float32."""
    return np.clip((x - mean) / scale, -clip, clip).astype(np.float32)


def _balance(y: np.ndarray) -> dict[str, float]:
    return {str(c): round(float((y == c).mean()), 4) for c in (-1, 0, 1)}


def _log_loss(y: np.ndarray, p: np.ndarray, classes: Sequence[int]) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, np.clip(p, 1e-7, 1), labels=list(classes)))


def evaluate(proba: np.ndarray, y: np.ndarray, classes: Sequence[int], threshold: float,
             prior: np.ndarray | None = None, min_fires: int = MIN_FIRES) -> dict[str, Any]:
    """Test metrics of class probabilities ``proba`` (columns = ``classes``) against labels ``y``.

    Baselines: always the majority class of these rows (accuracy); always up / always down
    (their precision is the base rate); the class frequencies ``prior`` as the forecast (log-loss).
    ``beats_baseline``: accuracy above the majority baseline, at least one direction fires on
    ``min_fires`` rows or more, and every direction that does has precision above its base rate.
    """
    from sklearn.metrics import roc_auc_score

    classes = list(classes)
    n = int(y.shape[0])
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    acc = float((pred == y).mean())
    shares = {c: float((y == c).mean()) for c in classes}
    majority = max(shares, key=shares.get)
    auc: dict[str, float | None] = {}
    for j, c in enumerate(classes):
        pos = y == c
        auc[str(c)] = float(roc_auc_score(pos, proba[:, j])) if 0 < pos.sum() < n else None
    valid = [v for v in auc.values() if v is not None]
    out: dict[str, Any] = {
        "rows": n, "threshold": threshold, "accuracy": round(acc, 4),
        "majority_class": majority, "majority_accuracy": round(shares[majority], 4),
        "auc_ovr": {k: (round(v, 4) if v is not None else None) for k, v in auc.items()},
        "auc_macro": round(float(np.mean(valid)), 4) if valid else None,
        "log_loss": round(_log_loss(y, proba, classes), 5),
    }
    if prior is not None:
        out["baseline_log_loss"] = round(_log_loss(y, np.tile(prior, (n, 1)), classes), 5)
    counted, all_ok = 0, True
    parts = []
    for c, what in ((1, "up"), (-1, "down")):
        if c not in classes:
            continue
        fire = proba[:, classes.index(c)] >= threshold
        k = int(fire.sum())
        prec = float((y[fire] == c).mean()) if k else None
        base = shares[c]
        out[what] = {"fires": k, "precision": round(prec, 4) if prec is not None else None,
                     "base_rate": round(base, 4)}
        if k >= min_fires:
            counted += 1
            all_ok &= prec is not None and prec > base
            parts.append(f"{what} fires on {k} rows at precision {prec:.3f} vs base rate {base:.3f}")
        else:
            parts.append(f"{what} fires on {k} rows (too few to count; base rate {base:.3f})")
    beats = acc > shares[majority] and counted > 0 and all_ok
    out["beats_baseline"] = bool(beats)
    verdict = "beats the naive baselines" if beats else "does NOT beat the naive baselines"
    out["verdict"] = (f"On the test window ({n} rows): accuracy {acc:.3f} vs {shares[majority]:.3f} always "
                      f"predicting {majority}; {'; '.join(parts)} at threshold {threshold}: {verdict}.")
    return out


def _fit_mlp(xtr, ytr, w, xva, yva, classes, opts: TrainOptions) -> tuple[Any, dict[str, Any]]:
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=opts.hidden, alpha=1e-4, batch_size=512, learning_rate_init=1e-3,
                        random_state=opts.seed, shuffle=True)

    def grow(epoch: int) -> None:  # one pass over the training rows per epoch
        clf.partial_fit(xtr, ytr, classes=classes, sample_weight=w)

    return _early_stopped(clf, grow, range(1, opts.max_epochs + 1), "epoch", xtr, ytr, xva, yva, classes, opts)


def _fit_gbm(xtr, ytr, w, xva, yva, classes, opts: TrainOptions) -> tuple[Any, dict[str, Any]]:
    from sklearn.ensemble import GradientBoostingClassifier

    step = 10
    clf = GradientBoostingClassifier(n_estimators=0, learning_rate=0.1, max_depth=3, subsample=0.5,
                                     random_state=opts.seed, warm_start=True)

    def grow(trees: int) -> None:  # warm start: adds the trees beyond those already fitted
        clf.n_estimators = trees
        clf.fit(xtr, ytr, sample_weight=w)

    return _early_stopped(clf, grow, range(step, step * opts.max_epochs + 1, step), "trees", xtr, ytr, xva, yva,
                          classes, opts)


def _early_stopped(clf, grow, steps, kind: str, xtr, ytr, xva, yva, classes,
                   opts: TrainOptions) -> tuple[Any, dict[str, Any]]:
    """Grow ``clf`` step by step, record train / validation log-loss after each (the validation
    curve), stop after ``opts.patience`` steps without a validation improvement, return the best."""
    rng = np.random.default_rng(opts.seed)
    sub = rng.choice(ytr.size, min(ytr.size, CURVE_SAMPLE), replace=False)
    curve: dict[str, Any] = {"kind": kind, "x": [], "train": [], "val": []}
    best, best_model, best_x, bad = np.inf, None, 0, 0
    for x in steps:
        grow(x)
        tl = _log_loss(ytr[sub], clf.predict_proba(xtr[sub]), classes)
        vl = _log_loss(yva, clf.predict_proba(xva), classes)
        curve["x"].append(x)
        curve["train"].append(tl)
        curve["val"].append(vl)
        if vl < best - 1e-5:
            best, best_model, best_x, bad = vl, copy.deepcopy(clf), x, 0
        else:
            bad += 1
            if bad >= opts.patience:
                break
    curve["best"] = best_x
    return best_model, curve



def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def train(rows: LabelledRows, opts: TrainOptions, out_dir: str | Path,
          feature_params: FeatureParams | None = None) -> TrainResult:
    """Train on ``rows``, write the bundle to ``out_dir``. Raises ``DatasetError`` (``LeakError``) on bad data."""
    t0 = time.perf_counter()
    if opts.model not in MODELS:
        raise DatasetError(f"unknown model {opts.model!r} (known: {', '.join(MODELS)})")
    if opts.horizon != rows.horizon:
        raise DatasetError(f"rows are labelled at horizon {rows.horizon}, options say {opts.horizon}")
    if not 0 < opts.threshold <= 1:
        raise DatasetError(f"threshold must be in (0, 1], got {opts.threshold}")
    params = feature_params or FeatureParams()
    features = list(opts.features or (*DEFAULT_FEATURES, *sorted(c for c in rows.columns if c.startswith("obi_"))))
    check_feature_names(features, rows.columns)

    labelled = len(rows)
    if opts.max_rows is not None and labelled > opts.max_rows:
        keep = np.sort(np.random.default_rng(opts.seed).choice(labelled, opts.max_rows, replace=False))
        rows = rows.take(keep)
    x_all = rows.matrix(features)
    finite = np.isfinite(x_all).all(axis=1)
    dropped = int((~finite).sum())
    if dropped:
        rows, x_all = rows.take(np.flatnonzero(finite)), x_all[finite]
    split = time_split(rows, opts.fractions)

    flat = opts.flat_bps if opts.flat_bps is not None else auto_flat_bps(rows.future_return[split.train])
    y_all = labels_from_returns(rows.future_return, flat)
    ytr, yva, yte = y_all[split.train], y_all[split.val], y_all[split.test]
    classes = sorted(int(c) for c in np.unique(ytr))
    if len(classes) < 2 or (1 not in classes and -1 not in classes):
        raise DatasetError(f"the training rows hold only the classes {classes} at a flat band of {flat:.3g} bps: "
                           f"lower --flat-bps or use more data")
    assert_no_leaks(rows, split, features, y_all, seed=opts.seed)

    xtr_raw = x_all[split.train]
    mean = xtr_raw.mean(axis=0)
    std = xtr_raw.std(axis=0)
    scale = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    xtr, xva, xte = (normalise(x_all[ix], mean, scale, opts.clip) for ix in (split.train, split.val, split.test))

    counts = np.array([(ytr == c).sum() for c in classes], dtype=np.float64)
    weighted = bool(counts.min() / counts.sum() < MIN_CLASS_SHARE)
    w = None
    if weighted:
        per = counts.sum() / (len(classes) * counts)
        w = per[np.searchsorted(classes, ytr)]
    fit = _fit_mlp if opts.model == "mlp" else _fit_gbm
    model, curve = fit(xtr, ytr, w, xva, yva, classes, opts)

    onnx_model = sklearn_to_onnx(model, len(features))
    data = onnx_model.SerializeToString()
    sess = ort_session(data)
    p_onnx = sess.run(["probabilities"], {"input": xte})[0]
    p_skl = model.predict_proba(xte)
    parity = float(np.abs(p_onnx - p_skl).max())
    if parity > PARITY_ATOL:
        raise DatasetError(f"ONNX Runtime and scikit-learn disagree by {parity:.2e} (> {PARITY_ATOL}) on the test "
                           f"rows: the exported graph is not the trained model")
    prior = counts / counts.sum()
    metrics = evaluate(p_onnx, yte, classes, opts.threshold, prior)
    metrics["validation_log_loss"] = round(float(min(curve["val"])), 5)
    metrics["parity"] = {"rows": int(yte.size), "max_abs_diff": parity, "atol": PARITY_ATOL,
                         "between": "onnxruntime CPU float32 vs sklearn predict_proba"}

    sha = hashlib.sha256(data).hexdigest()
    name = opts.name or f"{opts.model}_h{opts.horizon}"
    training = {
        "files": [{"path": f, "sha256": file_sha256(f)} if Path(f).is_file() else {"source": f}
                  for f in rows.files],
        "windows": {k: {"first_ts": v[0], "last_ts": v[1], "first": _iso(v[0]), "last": _iso(v[1])}
                    for k, v in split.windows(rows).items()},
        "rows": {"ticks": rows.ticks, "labelled": labelled, "used": len(rows), "train": int(split.train.size),
                 "val": int(split.val.size), "test": int(split.test.size), "purged_by_embargo": split.purged,
                 "dropped_non_finite": dropped, "max_rows": opts.max_rows},
        "label_balance": {"train": _balance(ytr), "val": _balance(yva), "test": _balance(yte)},
        "label": "future log return of ref over the horizon in price events; rows at price events only",
        "flat_bps_auto": opts.flat_bps is None,
        "split_fractions": list(opts.fractions),
        "embargo": "rows whose label window reaches into the next window are dropped",
        "class_weights": "balanced" if weighted else "none",
        "model": {"type": type(model).__name__, "params": _params(model, opts, curve)},
        "curve": {"kind": curve["kind"], "best": curve["best"], "steps": len(curve["x"])},
        "seed": opts.seed,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    meta = ModelMetadata(
        name=name, version=f"dev-{sha[:12]}", kind=f"sklearn-{opts.model}", features=features,
        mean=[float(v) for v in mean], scale=[float(v) for v in scale], clip=opts.clip, classes=classes,
        threshold=opts.threshold, horizon=Horizon(events=opts.horizon, flat_bps=round(flat, 6)),
        feature_params=params.recorded(), training=training, metrics=metrics,
        versions=versions("sklearn", "skl2onnx"),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    out = save_bundle(out_dir, meta, data)
    _save_validation(out, x_all[split.val], yva, rows.future_return[split.val], features, curve, opts.seed)
    seconds = time.perf_counter() - t0
    return TrainResult(out, meta, _summary(out, meta, seconds), seconds, curve, model, split)


def _params(model: Any, opts: TrainOptions, curve: dict[str, Any]) -> dict[str, Any]:
    if opts.model == "mlp":
        return {"hidden": list(opts.hidden), "alpha": model.alpha, "batch_size": model.batch_size,
                "learning_rate_init": model.learning_rate_init, "epochs": int(curve["best"])}
    return {"n_estimators": int(model.n_estimators), "max_depth": model.max_depth,
            "learning_rate": model.learning_rate, "subsample": model.subsample}


def _save_validation(out: Path, x: np.ndarray, y: np.ndarray, fr: np.ndarray, features: Sequence[str],
                     curve: dict[str, Any], seed: int) -> None:
    idx = np.arange(y.size)
    if y.size > VALIDATION_SAMPLE:
        idx = np.sort(np.random.default_rng(seed).choice(y.size, VALIDATION_SAMPLE, replace=False))
    np.savez_compressed(
        out / "validation.npz", x=x[idx], y=y[idx], future_return=fr[idx], features=np.array(features),
        curve_kind=np.array(curve["kind"]), curve_x=np.array(curve["x"]), curve_train=np.array(curve["train"]),
        curve_val=np.array(curve["val"]), curve_best=np.array(curve["best"]),
    )


def _summary(out: Path, meta: ModelMetadata, seconds: float) -> str:
    t, m = meta.training, meta.metrics
    r = t["rows"]
    aucs = ", ".join(f"{k}: {v:.3f}" if v is not None else f"{k}: n/a" for k, v in m["auc_ovr"].items())
    rows = (f"rows: {r['ticks']} ticks -> {r['labelled']} labelled price events, used {r['used']}: "
            f"train {r['train']} / validation {r['val']} / test {r['test']} "
            f"(purged by embargo {r['purged_by_embargo']}, non-finite {r['dropped_non_finite']})")
    label = (f"label: horizon {meta.horizon.events} price events, flat band {meta.horizon.flat_bps:.3g} bps"
             f"{' (auto)' if t['flat_bps_auto'] else ''}; test balance {t['label_balance']['test']}")
    test = (f"test: accuracy {m['accuracy']:.3f} (majority {m['majority_accuracy']:.3f}), AUC {aucs}; "
            f"log-loss {m['log_loss']:.4f} (prior {m.get('baseline_log_loss', float('nan')):.4f})")
    parity = (f"onnx parity: max |diff| {m['parity']['max_abs_diff']:.1e} over {m['parity']['rows']} test rows "
              f"(atol {m['parity']['atol']})")
    head = f"model {meta.name} {meta.version} ({meta.kind}, {len(meta.features)} features) in {seconds:.1f}s"
    lines = [head, rows, label, test, m["verdict"], parity, f"bundle: {out}"]
    return "\n".join(lines)
