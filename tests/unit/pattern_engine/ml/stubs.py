"""Synthetic labelled rows for the training tests: features with a planted, honest signal."""

from __future__ import annotations

import numpy as np

from pattern_engine.ml.dataset import LabelledRows

STEP = 1_000_000  # 1 ms between rows
T0 = 1_700_000_000_000_000_000


def planted_rows(n: int = 6000, horizon: int = 3, signal: float = 0.7, seed: int = 0,
                 features: tuple[str, ...] = ("ret", "vol", "qimb", "flow_imb")) -> LabelledRows:
    """One symbol, a row every ms, the label window ``horizon`` rows long. ``qimb`` drives the future
    return (correlation about ``signal`` / sqrt(1 + signal²)); the other columns are noise."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n, dtype=np.int64) * STEP
    cols = {f: rng.normal(size=n) for f in features}
    fr = (signal * cols["qimb"] + rng.normal(size=n)) * 1e-4
    return LabelledRows(np.array(["SYN"] * n, dtype=object), ts, ts + horizon * STEP, fr, cols, horizon, n)
