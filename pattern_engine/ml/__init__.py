"""The model loop: bundles (ONNX + metadata), training, import, registry, inference backends.

A *model bundle* is a directory holding ``model.onnx`` and ``model.json``
(``metadata.ModelMetadata``). Training writes one, ``aitrader model import`` converts a
user's ``.onnx`` / ``.pkl`` / ``.pt`` into one, the registry stores versions of them, and
the pattern engine's ``onnx`` detector runs one on every bus batch through an inference
backend (ONNX Runtime CPU by default; ONNX Runtime CUDA / TensorRT providers or a native
TensorRT engine on a GPU). See ``docs/models.md``.
"""
