"""Inference backends behind one interface.

``InferenceBackend.run(x)`` takes a C-contiguous float32 ``[k, n_features]`` array (k ≥ 1,
k ≤ ``max_batch``) and returns float32 ``[k, n_outputs]`` (the model's output tensor named
in the bundle). The returned array may be a buffer the backend reuses: copy it if you keep
it past the next ``run``.

``make_backend(name, onnx_path, meta, max_batch)`` builds one by name:

- ``cpu``: ONNX Runtime, CPUExecutionProvider (default).

(GPU backends and ``auto`` are added by the backends work; see docs/models.md.)
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

import numpy as np

from pattern_engine.ml.metadata import ModelMetadata

__all__ = ["BACKENDS", "BackendUnavailable", "InferenceBackend", "OrtCpuBackend", "make_backend"]


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (no GPU, library missing); the message says why."""


class InferenceBackend(abc.ABC):
    name: ClassVar[str] = ""

    def __init__(self, onnx_path: Path, meta: ModelMetadata, max_batch: int = 1024) -> None:
        self.onnx_path = Path(onnx_path)
        self.meta = meta
        self.n_features = len(meta.features)
        self.n_outputs = len(meta.classes)
        self.max_batch = max_batch

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for the rows of ``x`` (float32 ``[k, n_features]``)."""

    def close(self) -> None:
        """Release sessions / GPU memory."""

    def describe(self) -> str:
        return self.name


class OrtCpuBackend(InferenceBackend):
    """ONNX Runtime on the CPU: one intra-op thread, sequential execution, full graph optimisation."""

    name = "cpu"

    def __init__(self, onnx_path: Path, meta: ModelMetadata, max_batch: int = 1024) -> None:
        super().__init__(onnx_path, meta, max_batch)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BackendUnavailable(f"{self.onnx_path}: ONNX Runtime cannot load it: {e}") from e
        self._outputs = [meta.output_name]
        self._input = meta.input_name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self._outputs, {self._input: x})[0]


BACKENDS: dict[str, type[InferenceBackend]] = {"cpu": OrtCpuBackend}


def make_backend(name: str, onnx_path: Path, meta: ModelMetadata, max_batch: int = 1024) -> InferenceBackend:
    cls = BACKENDS.get(name)
    if cls is None:
        raise BackendUnavailable(f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    return cls(onnx_path, meta, max_batch)
