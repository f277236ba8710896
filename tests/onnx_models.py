"""Small deterministic ONNX models for tests: an MLP with softmax, built with onnx.helper.

``mlp_onnx(n_in, n_out, hidden, seed)`` returns the model's bytes: input ``input`` float32
``[N, n_in]``, output ``probabilities`` float32 ``[N, n_out]`` (softmax of the last layer).
``make_bundle(directory, ...)`` writes a bundle (model.onnx + model.json) the engine can run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pattern_engine.ml.metadata import ModelMetadata, save_bundle

__all__ = ["DEFAULT_FEATURES", "make_bundle", "mlp_onnx", "mlp_reference"]

# Scale-free engine features (names of pattern_engine.features.FEATURES).
DEFAULT_FEATURES = ("ret", "vol", "zscore", "spread_bps", "vwap_dev_bps", "qimb", "qimb_ema", "flow_imb",
                    "intensity", "ret_10", "ret_100")


def _weights(n_in: int, n_out: int, hidden: Sequence[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    dims = [n_in, *hidden, n_out]
    return [
        (rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32), rng.normal(0, 0.1, b).astype(np.float32))
        for a, b in zip(dims[:-1], dims[1:])
    ]


def mlp_onnx(n_in: int, n_out: int = 3, hidden: Sequence[int] = (32, 32), seed: int = 0, opset: int = 17) -> bytes:
    layers = _weights(n_in, n_out, hidden, seed)
    nodes, inits, x = [], [], "input"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="aitrader-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mlp_reference(x: np.ndarray, n_out: int = 3, hidden: Sequence[int] = (32, 32), seed: int = 0) -> np.ndarray:
    """The same MLP in numpy (float64), for parity checks."""
    layers = _weights(x.shape[1], n_out, hidden, seed)
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64) + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_bundle(
    directory: str | Path,
    name: str = "test_mlp",
    features: Sequence[str] = DEFAULT_FEATURES,
    classes: Sequence[int] = (-1, 0, 1),
    seed: int = 0,
    hidden: Sequence[int] = (32, 32),
    threshold: float = 0.6,
    feature_params: dict[str, float] | None = None,
    n_out: int | None = None,
    **extra: object,
) -> Path:
    """Write a bundle with an untrained (random-weight) MLP; return its directory.

    ``n_out`` (default: one per class) makes a model whose outputs do not match its classes.
    """
    data = mlp_onnx(len(features), n_out or len(classes), hidden, seed)
    meta = ModelMetadata(
        name=name, version=f"dev-seed{seed}", kind="test-mlp", features=list(features),
        mean=extra.pop("mean", [0.0] * len(features)), scale=extra.pop("scale", [1.0] * len(features)), classes=list(classes), threshold=threshold,
        feature_params=dict(feature_params or {}), **extra,
    )
    return save_bundle(directory, meta, data)
