"""What a model bundle is: ``model.onnx`` plus ``model.json`` (``ModelMetadata``).

The contract between training / import (which write bundles), the registry (which stores
and versions them) and the engine (which runs them):

- **Input**: one float32 tensor ``[batch, len(features)]`` named ``input_name``; column j
  is the engine feature ``features[j]`` (a name of ``features.FEATURES``), *normalised* by
  the engine as ``(x - mean[j]) / scale[j]`` then clipped to ``±clip``. Normalisation lives
  in the metadata, not in the graph, so every backend sees the same numbers and a user's
  ``.onnx`` that normalises inside its graph sets ``mean = 0``, ``scale = 1``.
- **Output**: a float32 tensor ``[batch, len(classes)]`` named ``output_name``: class
  probabilities (rows sum to 1) in the order of ``classes``. ``classes`` are the label
  values: ``-1`` the price falls by more than the flat band within the horizon, ``0`` it
  stays inside the band, ``1`` it rises beyond it. A binary model has ``classes = [-1, 1]``
  or ``[0, 1]`` (up vs not). The detector fires BUY when P(1) ≥ threshold, SELL when
  P(-1) ≥ threshold.
- **Features must mean what they meant in training**: ``feature_params`` records the
  ``features:`` settings (half-lives, window) the training rows were computed with; the
  engine refuses a bundle whose settings differ from its own.
- Versions: ``name`` + ``version``. Training and import set ``version`` to
  ``dev-<first 12 hex of sha256(model.onnx)>``; the registry assigns ``1, 2, 3 ...`` per
  name when it stores a bundle and rewrites ``version`` in its copy. Signals carry
  ``model_id = name`` and ``model_version = version``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.config import first_error

__all__ = [
    "BUNDLE_META",
    "BUNDLE_ONNX",
    "BundleError",
    "Horizon",
    "ModelMetadata",
    "file_sha256",
    "load_bundle",
    "onnx_sha256",
    "save_bundle",
]

BUNDLE_ONNX = "model.onnx"
BUNDLE_META = "model.json"
SCHEMA = 1


class BundleError(ValueError):
    """A model bundle that cannot be used; the message says which file and why."""


class Horizon(BaseModel):
    """What the label looks ahead over."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: int = Field(..., ge=1, le=10**7, description="Price events of the symbol ahead.")
    flat_bps: float = Field(
        0.0, ge=0, le=1e4, description="|future log return| below this (bps) is label 0 (flat)."
    )


class ModelMetadata(BaseModel):
    """``model.json`` of a bundle. Unknown keys are kept (``extra``) so newer writers stay readable."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: int = Field(SCHEMA, alias="schema")
    name: str = Field(..., pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    version: str = Field(..., min_length=1, max_length=64)
    kind: str = Field("", description="What produced it: 'sklearn-mlp', 'sklearn-gbm', 'onnx-import', ...")
    features: list[str] = Field(..., min_length=1, max_length=512)
    mean: list[float]
    scale: list[float]
    clip: float = Field(10.0, gt=0, le=1e6)
    input_name: str = "input"
    output_name: str = "probabilities"
    classes: list[int] = Field(..., min_length=2, max_length=3)
    threshold: float = Field(0.6, gt=0, le=1, description="Default decision threshold on a class probability.")
    horizon: Horizon | None = None
    feature_params: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="Data files, windows, row counts.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Validation / test metrics and baselines.")
    versions: dict[str, str] = Field(default_factory=dict, description="Library versions that produced it.")
    onnx_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    created_at: str = ""

    @model_validator(mode="after")
    def _shapes(self) -> ModelMetadata:
        n = len(self.features)
        if len(self.mean) != n or len(self.scale) != n:
            raise ValueError(f"mean and scale must have one value per feature ({n})")
        if any(not math.isfinite(v) for v in self.mean):
            raise ValueError("mean holds a non-finite value")
        if any(not (math.isfinite(v) and v > 0) for v in self.scale):
            raise ValueError("scale values must be finite and > 0")
        if len(set(self.features)) != n:
            raise ValueError("features lists a name twice")
        if len(set(self.classes)) != len(self.classes) or not set(self.classes) <= {-1, 0, 1}:
            raise ValueError("classes must be distinct values of -1, 0, 1")
        if 1 not in self.classes and -1 not in self.classes:
            raise ValueError("classes must include 1 (up) or -1 (down)")
        return self

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


onnx_sha256 = file_sha256


def load_bundle(directory: str | Path, verify: bool = True) -> tuple[ModelMetadata, Path]:
    """Read a bundle's metadata; return it and the ONNX file's path. Raises ``BundleError``.

    ``verify`` checks the ONNX file's sha256 against ``onnx_sha256`` (when recorded).
    """
    d = Path(directory)
    meta_path, onnx_path = d / BUNDLE_META, d / BUNDLE_ONNX
    if not d.is_dir():
        raise BundleError(f"{d}: not a model bundle directory")
    try:
        raw = json.loads(meta_path.read_text())
    except OSError as e:
        raise BundleError(f"{meta_path}: cannot read: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise BundleError(f"{meta_path}: invalid JSON: {e}") from e
    try:
        meta = ModelMetadata.model_validate(raw)
    except ValidationError as e:
        loc, msg = first_error(e, "(top level)")
        raise BundleError(f"{meta_path}: {loc}: {msg}") from e
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing")
    if verify and meta.onnx_sha256 and onnx_sha256(onnx_path) != meta.onnx_sha256:
        raise BundleError(f"{onnx_path}: sha256 does not match {BUNDLE_META} (file changed or truncated)")
    return meta, onnx_path


def save_bundle(directory: str | Path, meta: ModelMetadata, onnx_bytes: bytes) -> Path:
    """Write ``model.onnx`` and ``model.json`` (sha256 filled in); return the directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / BUNDLE_ONNX).write_bytes(onnx_bytes)
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    meta = meta.model_copy(update={"onnx_sha256": sha})
    (d / BUNDLE_META).write_text(json.dumps(meta.dump(), indent=2, sort_keys=True) + "\n")
    return d
