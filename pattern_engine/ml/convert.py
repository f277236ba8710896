"""Bring a model into a bundle: a user's ``.onnx``, a scikit-learn ``.pkl`` / ``.joblib``, a PyTorch ``.pt``.

Every import ends the same way: an ONNX graph with one float32 input ``[N, len(features)]``
(dynamic batch) and one probability output ``[N, len(classes)]``, checked by running it in
ONNX Runtime on a few rows (shape, finite, rows sum to 1), then written with
``metadata.save_bundle``.

- ``.onnx``: ``onnx.checker`` and ONNX Runtime must accept it; the input must be float32 2-D
  with width ``len(features)`` and a dynamic batch axis; the output is the one named
  ``output`` or else the only float 2-D output of width ``len(classes)``. ``outputs="logits"``
  appends a Softmax node.
- ``.pkl`` / ``.joblib``: an estimator or Pipeline with ``predict_proba``, converted by
  skl2onnx (zipmap off) and compared with ``predict_proba``. **Unpickling runs code from the
  file: import only files you trust.**
- ``.pt``: needs PyTorch (optional); TorchScript (``torch.jit.load``) or a pickled
  ``nn.Module``, exported with ``torch.onnx.export`` with a dynamic batch axis.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import io
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from pydantic import ValidationError

from common.config import first_error
from pattern_engine.ml.dataset import check_feature_names
from pattern_engine.ml.metadata import ModelMetadata, save_bundle

__all__ = [
    "ModelImportError",
    "check_onnx",
    "import_model",
    "keep_output",
    "ort_session",
    "sklearn_to_onnx",
    "versions",
]

OPSET = {"": 17, "ai.onnx.ml": 3}
SUM_TOL = 1e-3  # rows of probabilities must sum to 1 within this
SKLEARN_ATOL = 1e-4  # an imported sklearn model's ONNX graph vs its predict_proba (float32 vs float64)


class ModelImportError(ValueError):
    """A model file that cannot become a bundle; the message names the file and the problem."""


def versions(*extra: str) -> dict[str, str]:
    """Versions of python, numpy, onnx, onnxruntime and the named extra modules (those importable)."""
    import importlib

    out = {"python": platform.python_version()}
    for mod in ("numpy", "onnx", "onnxruntime", *extra):
        try:
            out[mod] = str(importlib.import_module(mod).__version__)
        except ImportError:
            continue
    return out


def keep_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``model`` whose only graph output is ``name``, without the nodes nothing needs any more."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    outs = [o for o in g.output if o.name == name]
    if not outs:
        raise ModelImportError(f"the graph has no output named {name!r} (outputs: {[o.name for o in g.output]})")
    del g.output[:]
    g.output.extend(outs)
    needed = {name}
    keep = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    return m


def sklearn_to_onnx(estimator: Any, n_features: int) -> onnx.ModelProto:
    """skl2onnx conversion with a float32 input ``input`` ``[None, n]`` and only the ``probabilities`` output."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    try:
        model = convert_sklearn(estimator, initial_types=[("input", FloatTensorType([None, n_features]))],
                                options={"zipmap": False}, target_opset=OPSET)
    except Exception as e:  # skl2onnx raises many types (RuntimeError, ValueError, MissingShapeCalculator)
        raise ModelImportError(f"skl2onnx cannot convert {type(estimator).__name__}: {str(e).splitlines()[0][:300]}"
                               ) from e
    return keep_output(model, "probabilities")


def ort_session(data: bytes) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def check_onnx(data: bytes, n_features: int, n_classes: int, input_name: str, output_name: str,
               source: str = "model", rows: np.ndarray | None = None) -> np.ndarray:
    """Run the graph in ONNX Runtime on a few rows (default: 7 standard-normal rows); check the output is
    float ``[rows, n_classes]``, finite, and sums to 1 per row. Return the output."""
    try:
        sess = ort_session(data)
    except Exception as e:  # onnxruntime's own exception types
        raise ModelImportError(f"{source}: ONNX Runtime cannot load it: {str(e).splitlines()[0][:300]}") from e
    x = rows if rows is not None else np.random.default_rng(0).normal(size=(7, n_features))
    x = np.ascontiguousarray(x, dtype=np.float32)
    try:
        out = sess.run([output_name], {input_name: x})[0]
    except Exception as e:
        raise ModelImportError(f"{source}: running it on {x.shape[0]} rows of {n_features} features failed: "
                               f"{str(e).splitlines()[0][:300]}") from e
    out = np.asarray(out)
    if out.shape != (x.shape[0], n_classes):
        raise ModelImportError(f"{source}: output {output_name!r} has shape {list(out.shape)} for {x.shape[0]} "
                               f"rows; expected [{x.shape[0]}, {n_classes}] (one column per class)")
    if not np.isfinite(out).all():
        raise ModelImportError(f"{source}: output {output_name!r} holds NaN or infinite values")
    sums = out.sum(axis=1)
    if np.abs(sums - 1).max() > SUM_TOL or (out < -1e-6).any():
        raise ModelImportError(f"{source}: output {output_name!r} is not probabilities (row sums "
                               f"{np.round(sums[:3], 4).tolist()}...); if it gives logits, import with "
                               f"--outputs logits to append a softmax")
    return out


def _dims(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    shape = vi.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _prepare_onnx(model: onnx.ModelProto, n_features: int, n_classes: int, outputs: str, output: str | None,
                  source: str) -> tuple[onnx.ModelProto, str, str]:
    """Check the graph's interface, pick the output, append a softmax for logits; return (model, in, out)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelImportError(f"{source}: not a valid ONNX model: {str(e).splitlines()[0][:300]}") from e
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelImportError(f"{source}: the graph must take exactly one input, it takes {len(inputs)}: "
                               f"{[i.name for i in inputs]}")
    inp = inputs[0]
    elem = inp.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise ModelImportError(f"{source}: input {inp.name!r} is {TensorProto.DataType.Name(elem)}; the engine "
                               f"feeds float32 (export the model with a float32 input)")
    dims = _dims(inp)
    if len(dims) != 2:
        raise ModelImportError(f"{source}: input {inp.name!r} has {len(dims)} dimensions; expected 2 "
                               f"[batch, features]")
    if isinstance(dims[1], int) and dims[1] != n_features:
        raise ModelImportError(f"{source}: input {inp.name!r} is {dims[1]} wide but {n_features} features were "
                               f"named (the input width must equal the number of features)")
    if isinstance(dims[0], int) and dims[0] > 0:
        raise ModelImportError(f"{source}: input {inp.name!r} has a fixed batch size of {dims[0]}; the engine "
                               f"scores many rows at once: export with a dynamic batch axis")
    floats = [o for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    if output is not None:
        chosen = [o for o in model.graph.output if o.name == output]
        if not chosen:
            raise ModelImportError(f"{source}: no output named {output!r} (outputs: "
                                   f"{[o.name for o in model.graph.output]})")
    else:
        chosen = [o for o in floats if len(_dims(o)) == 2 and _dims(o)[1] in (n_classes, None)]
        if len(chosen) > 1:
            named = [o for o in chosen if o.name == "probabilities"]
            if not named:
                raise ModelImportError(f"{source}: several outputs could be the class scores "
                                       f"{[o.name for o in chosen]}: choose one with --output-name")
            chosen = named
        if not chosen:
            raise ModelImportError(f"{source}: no float output of shape [N, {n_classes}] (outputs: "
                                   f"{[(o.name, _dims(o)) for o in model.graph.output]})")
    out = chosen[0]
    if out.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelImportError(f"{source}: output {out.name!r} is not float32")
    model = keep_output(model, out.name)
    out_name = out.name
    if outputs == "logits":
        out_name = "probabilities" if out.name != "probabilities" else "probabilities_softmax"
        g = model.graph
        g.node.append(helper.make_node("Softmax", [out.name], [out_name], axis=1, name="aitrader_softmax"))
        del g.output[:]
        g.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [None, n_classes]))
        onnx.checker.check_model(model)
    elif outputs != "probabilities":
        raise ModelImportError(f"outputs must be 'probabilities' or 'logits', got {outputs!r}")
    return model, inp.name, out_name


def _load_pickle(path: Path) -> Any:
    try:
        if path.suffix == ".joblib":
            import joblib

            return joblib.load(path)
        import pickle

        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # unpickling garbage raises anything (UnpicklingError, EOFError, ValueError ...)
        raise ModelImportError(f"{path}: cannot be unpickled: {type(e).__name__}: {str(e)[:200]}") from e


def _from_sklearn(path: Path, n_features: int, classes: Sequence[int] | None) -> tuple[bytes, list[int], dict]:
    est = _load_pickle(path)
    if not hasattr(est, "predict_proba"):
        raise ModelImportError(f"{path}: holds a {type(est).__name__}, which has no predict_proba "
                               f"(need a fitted classifier or a Pipeline ending in one)")
    model_classes = getattr(est, "classes_", None)
    if model_classes is None:
        raise ModelImportError(f"{path}: the {type(est).__name__} is not fitted (no classes_)")
    try:
        mc = [int(c) for c in model_classes]
    except (TypeError, ValueError) as e:
        raise ModelImportError(f"{path}: classes {list(model_classes)} are not the labels -1 / 0 / 1") from e
    if classes is not None and list(classes) != mc:
        raise ModelImportError(f"{path}: the model's classes are {mc}, not {list(classes)}")
    nin = getattr(est, "n_features_in_", None)
    if nin is not None and nin != n_features:
        raise ModelImportError(f"{path}: the model takes {nin} features but {n_features} were named "
                               f"(the input width must equal the number of features)")
    model = sklearn_to_onnx(est, n_features)
    data = model.SerializeToString()
    x = np.random.default_rng(1).normal(size=(64, n_features)).astype(np.float32)
    got = check_onnx(data, n_features, len(mc), "input", "probabilities", str(path), rows=x)
    want = est.predict_proba(x.astype(np.float64))
    diff = float(np.abs(got - want).max())
    if diff > SKLEARN_ATOL:
        raise ModelImportError(f"{path}: the converted graph differs from predict_proba by {diff:.2e} "
                               f"(> {SKLEARN_ATOL}); skl2onnx does not convert this model faithfully")
    return data, mc, {"kind": "sklearn-import", "parity_max_abs_diff": diff,
                      "versions": versions("sklearn", "skl2onnx")}


def _from_torch(path: Path, n_features: int) -> bytes:
    try:
        import torch
    except ImportError as e:
        raise ModelImportError("PyTorch is not installed: pip install torch, or export to ONNX yourself and "
                               "import the .onnx") from e
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:  # noqa: BLE001 - not TorchScript: a pickled nn.Module (unpickling runs code: trusted files)
        try:
            module = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelImportError(f"{path}: neither TorchScript nor a pickled torch module: "
                                   f"{type(e).__name__}: {str(e)[:200]}") from e
    if not isinstance(module, torch.nn.Module):
        raise ModelImportError(f"{path}: holds a {type(module).__name__}, not a torch.nn.Module (a state_dict "
                               f"needs its model class: export to ONNX yourself)")
    module.eval()
    buf = io.BytesIO()
    kw: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw["dynamo"] = False  # the TorchScript-based exporter handles both kinds of module
    try:
        torch.onnx.export(module, (torch.zeros(2, n_features),), buf, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          opset_version=OPSET[""], **kw)
    except Exception as e:
        raise ModelImportError(f"{path}: torch.onnx.export failed for an input of {n_features} features: "
                               f"{str(e).splitlines()[0][:300]}") from e
    return buf.getvalue()


def import_model(
    path: str | Path,
    out_dir: str | Path,
    *,
    name: str,
    features: Sequence[str],
    classes: Sequence[int] | None = None,
    outputs: str = "probabilities",
    output_name: str | None = None,
    mean: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    threshold: float = 0.6,
    feature_params: dict[str, float] | None = None,
) -> Path:
    """Convert ``path`` into a bundle at ``out_dir``; return it. Raises ``ModelImportError`` / ``DatasetError``.

    ``mean`` / ``scale``: the engine's normalisation before the graph (default 0 / 1: the graph gets
    raw features). ``feature_params``: the ``features:`` settings the model's inputs assume.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelImportError(f"{p}: no such file")
    check_feature_names(features)
    n = len(features)
    mean = [0.0] * n if mean is None else [float(v) for v in mean]
    scale = [1.0] * n if scale is None else [float(v) for v in scale]
    if len(mean) != n or len(scale) != n:
        raise ModelImportError(f"--mean and --scale need one value per feature ({n}), got {len(mean)} and "
                               f"{len(scale)}")
    suffix = p.suffix.lower()
    extra: dict[str, Any] = {}
    if suffix == ".onnx":
        cls = list(classes) if classes is not None else [-1, 0, 1]
        try:
            model = onnx.load_model_from_string(p.read_bytes())
        except Exception as e:  # protobuf DecodeError and friends
            raise ModelImportError(f"{p}: not an ONNX file: {str(e)[:200]}") from e
        model, in_name, out_name = _prepare_onnx(model, n, len(cls), outputs, output_name, str(p))
        data = model.SerializeToString()
        extra = {"kind": "onnx-import", "versions": versions()}
    elif suffix in (".pkl", ".pickle", ".joblib"):
        if outputs != "probabilities":
            raise ModelImportError(f"{p}: --outputs logits is for .onnx / .pt files; sklearn models give probabilities")
        data, cls, extra = _from_sklearn(p, n, classes)
        in_name, out_name = "input", "probabilities"
    elif suffix in (".pt", ".pth"):
        cls = list(classes) if classes is not None else [-1, 0, 1]
        raw = _from_torch(p, n)
        model, in_name, out_name = _prepare_onnx(onnx.load_model_from_string(raw), n, len(cls), outputs,
                                                 output_name or "output", str(p))
        data = model.SerializeToString()
        extra = {"kind": "torch-import", "versions": versions("torch")}
    else:
        raise ModelImportError(f"{p}: unknown model file type {suffix or '(none)'!r} (known: .onnx, .pkl, .joblib, "
                               f".pt)")
    check_onnx(data, n, len(cls), in_name, out_name, str(p))
    sha = hashlib.sha256(data).hexdigest()
    try:
        meta = ModelMetadata(
            name=name, version=f"dev-{sha[:12]}", kind=extra["kind"], features=list(features), mean=mean,
            scale=scale, input_name=in_name, output_name=out_name, classes=cls, threshold=threshold,
            feature_params=dict(feature_params or {}),
            training={"source": str(p), "source_sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                      **({"parity_max_abs_diff": extra["parity_max_abs_diff"]}
                         if "parity_max_abs_diff" in extra else {})},
            versions=extra["versions"], created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
    except ValidationError as e:  # bad name, classes, scale ...
        loc, msg = first_error(e, "metadata")
        raise ModelImportError(f"{p}: {loc}: {msg}") from e
    return save_bundle(out_dir, meta, data)
