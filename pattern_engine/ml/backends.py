"""Inference backends behind one interface.

``InferenceBackend.run(x)`` takes a float32 ``[k, n_features]`` array (1 ≤ k ≤ ``max_batch``;
C-contiguous is fastest, anything numpy can cast to float32 is accepted) and returns float32
``[k, n_outputs]`` (the model's output tensor named in the bundle). **The returned array is a
read-only view of a buffer the backend reuses: copy it if you keep it past the next ``run``.**
A backend is not thread-safe: one caller at a time.

``make_backend(name, onnx_path, meta, max_batch, **options)`` builds one by name:

- ``cpu``: ONNX Runtime, CPUExecutionProvider (default; the reference for parity).
- ``ort-cuda``: ONNX Runtime, CUDAExecutionProvider (CPU for the nodes CUDA lacks).
- ``ort-tensorrt``: ONNX Runtime, TensorrtExecutionProvider (CUDA, then CPU, for the rest).
- ``tensorrt``: a native TensorRT engine built from the same ONNX file (``tensorrt`` + ``pycuda``),
  cached per GPU, TensorRT version, model and ``max_batch``; pinned host buffers, one stream,
  CUDA graphs per batch-size bucket.
- ``auto``: every available backend measured at start (``select_backend``); lowest tail wins.

Options (unknown names are refused; a backend ignores the ones it does not use, so one
configuration works with ``auto``): ``device_id`` (GPU ordinal, 0), ``cache_dir`` (TensorRT
engines; default ``$XDG_CACHE_HOME/aitrader/tensorrt``), ``fp16`` (TensorRT paths; False),
``tf32`` (allow TF32 matmuls on the GPU; False, so fp32 really is fp32), ``opt_batch`` (the
TensorRT profile's optimum; ``min(64, max_batch)``), ``cuda_graphs`` (``tensorrt``; True),
``workspace_mb`` (TensorRT builder workspace; 256), ``pinned`` (page-locked host buffers for
the ONNX Runtime GPU paths when pycuda is installed; True).

GPU libraries are imported only when a GPU backend is built; anything missing (library, driver,
GPU, provider) raises ``BackendUnavailable`` saying what and how to get it. A model file that
cannot be used at all (not ONNX, inputs/outputs not as ``model.json`` says) raises
``BundleError``.
"""

from __future__ import annotations

import abc
import ctypes
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from pattern_engine.ml.metadata import BundleError, ModelMetadata, onnx_sha256

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "OPTIONS",
    "BackendUnavailable",
    "InferenceBackend",
    "OrtCpuBackend",
    "OrtCudaBackend",
    "OrtTensorrtBackend",
    "TensorRTBackend",
    "format_selection",
    "latency",
    "make_backend",
    "parity",
    "parity_inputs",
    "select_backend",
]

log = logging.getLogger(__name__)

GPU_HINT = (
    "install the GPU extra: pip install 'aitrader[gpu]' (onnxruntime-gpu replaces onnxruntime: "
    "pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu)"
)

# Every option any backend takes; each backend class lists the ones it uses.
OPTIONS = frozenset({"device_id", "cache_dir", "fp16", "tf32", "opt_batch", "cuda_graphs", "workspace_mb", "pinned"})


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (no GPU, library missing); the message says why."""


class InferenceBackend(abc.ABC):
    name: ClassVar[str] = ""
    #: Options (of ``OPTIONS``) this backend takes.
    options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, onnx_path: Path, meta: ModelMetadata, max_batch: int = 1024) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer ≥ 1, got {max_batch!r}")
        self.onnx_path = Path(onnx_path)
        self.meta = meta
        self.n_features = len(meta.features)
        self.n_outputs = len(meta.classes)
        self.max_batch = max_batch
        self._row = (self.n_features,)

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for the rows of ``x`` (float32 ``[k, n_features]``); a reused, read-only buffer."""

    def close(self) -> None:
        """Release sessions / GPU memory."""

    def describe(self) -> str:
        return self.name

    @property
    def parity_atol(self) -> float:
        """Largest |output − CPU ONNX Runtime output| this backend is held to (see docs/models.md)."""
        return 1e-5

    def _bad_input(self, x: Any) -> ValueError:
        shape = getattr(x, "shape", None)
        what = f"shape {tuple(shape)}" if shape is not None else f"a {type(x).__name__}"
        return ValueError(
            f"{self.name}: input must be float32 [k, {self.n_features}] with 1 ≤ k ≤ max_batch "
            f"({self.max_batch}); got {what}"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _inspect_onnx(path: Path, meta: ModelMetadata) -> None:
    """Check the ONNX file against ``model.json`` before any runtime sees it; raise BundleError."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read: {e.strerror or e}") from e
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise BundleError(f"{path}: not a valid ONNX model: {e}") from e
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if [i.name for i in inputs] != [meta.input_name]:
        raise BundleError(
            f"{path}: the model's inputs are {[i.name for i in inputs]}; model.json says one input "
            f"named {meta.input_name!r}"
        )
    outputs = {o.name: o for o in g.output}
    if meta.output_name not in outputs:
        raise BundleError(f"{path}: no output named {meta.output_name!r} (outputs: {sorted(outputs)})")
    for vi, width, what in ((inputs[0], len(meta.features), "features"), (outputs[meta.output_name], len(meta.classes), "classes")):
        tt = vi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise BundleError(f"{path}: {vi.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}, not FLOAT")
        if tt.HasField("shape"):
            dims = tt.shape.dim
            if len(dims) != 2:
                raise BundleError(f"{path}: {vi.name!r} has rank {len(dims)}; expected [batch, {width}]")
            if dims[0].HasField("dim_value") and dims[0].dim_value != -1:
                raise BundleError(
                    f"{path}: {vi.name!r} has a fixed batch dimension {dims[0].dim_value}; export it dynamic"
                )
            if dims[1].HasField("dim_value") and dims[1].dim_value != width:
                raise BundleError(
                    f"{path}: {vi.name!r} has width {dims[1].dim_value}; model.json lists {width} {what}"
                )


def _buckets(max_batch: int) -> list[int]:
    """Batch-size buckets 1, 2, 4, ... and ``max_batch``."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    out.append(max_batch)
    return out


def _import(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailable(f"{what} is not installed ({e}); {GPU_HINT}") from e
    except Exception as e:  # e.g. a wheel whose shared libraries are missing
        raise BackendUnavailable(f"{what} cannot be imported: {e}") from e


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "unknown"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aitrader" / "tensorrt"


class _CudaDriver:
    """The few CUDA driver calls we need, through ctypes (no extra package): device identity and
    stream capture into CUDA graphs. One instance per process."""

    _instance: ClassVar[_CudaDriver | None] = None
    _lock = threading.Lock()
    CAPTURE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_*

    @classmethod
    def get(cls) -> _CudaDriver:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        names = ("nvcuda.dll",) if os.name == "nt" else ("libcuda.so.1", "libcuda.so")
        lib = None
        for n in names:
            try:
                lib = ctypes.CDLL(n)
                break
            except OSError:
                continue
        if lib is None:
            raise BackendUnavailable(f"no NVIDIA driver on this machine ({names[0]} not found): no GPU to run on")
        vp, i, pi = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
        sig = {
            "cuInit": [ctypes.c_uint],
            "cuGetErrorString": [i, ctypes.POINTER(ctypes.c_char_p)],
            "cuDeviceGetCount": [pi],
            "cuDeviceGet": [pi, i],
            "cuDeviceGetName": [ctypes.c_char_p, i, i],
            "cuDeviceGetAttribute": [pi, i, i],
            "cuStreamBeginCapture_v2": [vp, i],
            "cuStreamEndCapture": [vp, ctypes.POINTER(vp)],
            "cuGraphInstantiateWithFlags": [ctypes.POINTER(vp), vp, ctypes.c_ulonglong],
            "cuGraphLaunch": [vp, vp],
            "cuGraphExecDestroy": [vp],
            "cuGraphDestroy": [vp],
        }
        for fn, args in sig.items():
            f = getattr(lib, fn)
            f.argtypes, f.restype = args, ctypes.c_int
        self.lib = lib
        self.check(lib.cuInit(0), "cuInit")

    def error(self, rc: int) -> str:
        s = ctypes.c_char_p()
        if self.lib.cuGetErrorString(rc, ctypes.byref(s)) == 0 and s.value:
            return f"{s.value.decode()} ({rc})"
        return f"CUDA error {rc}"

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise BackendUnavailable(f"{what} failed: {self.error(rc)}")

    def device(self, device_id: int) -> tuple[str, tuple[int, int]]:
        """Name and compute capability of GPU ``device_id``."""
        n = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(n)), "cuDeviceGetCount")
        if not 0 <= device_id < n.value:
            raise BackendUnavailable(f"device_id {device_id}: this machine has {n.value} CUDA device(s)")
        dev = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(dev), device_id), "cuDeviceGet")
        buf = ctypes.create_string_buffer(256)
        self.check(self.lib.cuDeviceGetName(buf, 256, dev.value), "cuDeviceGetName")
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(major), self.ATTR_CC_MAJOR, dev.value), "attribute")
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(minor), self.ATTR_CC_MINOR, dev.value), "attribute")
        return buf.value.decode(errors="replace"), (major.value, minor.value)

    def gpu_key(self, device_id: int) -> str:
        name, (major, minor) = self.device(device_id)
        return f"{_slug(name)}-sm{major}{minor}"


def _trt_version_for_ort() -> str:
    """TensorRT version ONNX Runtime's TensorRT provider will load (for its cache key)."""
    try:
        import tensorrt

        return tensorrt.__version__
    except Exception as e:  # noqa: BLE001 - any failure: ask the library itself below
        log.debug("no usable tensorrt module (%s); asking libnvinfer for its version", e)
    for lib in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            f = ctypes.CDLL(lib).getInferLibVersion
            f.restype = ctypes.c_int
            return f"lib{f()}"
        except (OSError, AttributeError):
            continue
    log.warning("TensorRT version unknown: the ort-tensorrt engine cache is keyed without it")
    return "unknown"


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class _OrtBackend(InferenceBackend):
    """ONNX Runtime with preallocated host buffers bound once per batch size (io_binding):
    ``run`` copies the rows into the input buffer and runs; no allocation per call."""

    provider: ClassVar[str] = "CPUExecutionProvider"
    #: What a failed warm-up run means: the model's fault on the CPU, the GPU path's elsewhere.
    _run_error: ClassVar[type[Exception]] = BackendUnavailable

    def __init__(self, onnx_path: Path, meta: ModelMetadata, max_batch: int = 1024, **opts: Any) -> None:
        super().__init__(onnx_path, meta, max_batch)
        self.session = None
        self._slots: list[tuple[np.ndarray, Any, np.ndarray] | None] = [None] * (max_batch + 1)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed: {e}") from e
        if self.provider not in ort.get_available_providers():
            raise BackendUnavailable(
                f"{self.name}: this onnxruntime build has no {self.provider} (it has "
                f"{', '.join(ort.get_available_providers())}); {GPU_HINT}"
            )
        _inspect_onnx(self.onnx_path, meta)
        self._gpu_checks(opts)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), so, providers=self._providers(ort, opts))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            self._load_failed(e)
        got = self.session.get_providers()
        if got[0] != self.provider:
            raise BackendUnavailable(
                f"{self.name}: ONNX Runtime could not start {self.provider} (session providers: {got}); "
                "check the CUDA / cuDNN / TensorRT libraries it needs"
            )
        if self.provider != "CPUExecutionProvider":
            self.session.disable_fallback()  # a failing GPU must not silently become CPU
        self._in_name, self._out_name = meta.input_name, meta.output_name
        self._inb, self._outb = self._host_buffers(opts)
        self._run_io = self._fast_run(self.session)
        self._warm_up()

    def _gpu_checks(self, opts: dict[str, Any]) -> None:
        pass

    @staticmethod
    def _fast_run(session: Any) -> Callable[[Any], None]:
        """``session.run_with_iobinding`` minus its Python wrapper (~0.2 µs a call, 5 % at batch 1,
        measured here); the public method where this onnxruntime lacks the private names."""
        c_sess = getattr(session, "_sess", None)
        if not (hasattr(c_sess, "run_with_iobinding") and hasattr(session.io_binding(), "_iobinding")):
            return session.run_with_iobinding

        def run(io: Any, _run: Any = c_sess.run_with_iobinding) -> None:
            _run(io._iobinding, None)

        return run

    def _providers(self, ort: Any, opts: dict[str, Any]) -> list[Any]:
        return ["CPUExecutionProvider"]

    def _load_failed(self, e: Exception) -> None:
        raise BackendUnavailable(f"{self.name}: ONNX Runtime cannot load {self.onnx_path}: {e}") from e

    def _host_buffers(self, opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros((self.max_batch, self.n_features), np.float32),
                np.zeros((self.max_batch, self.n_outputs), np.float32))

    def _warm_up(self) -> None:
        for k in sorted({1, min(64, self.max_batch), self.max_batch}):
            try:
                out = self.run(np.zeros((k, self.n_features), np.float32))
            except Exception as e:
                self.close()
                raise self._run_error(
                    f"{self.onnx_path}: {self.name} cannot run it on a [{k}, {self.n_features}] input "
                    f"into a [{k}, {self.n_outputs}] output: {e}"
                ) from e
            if not np.all(np.isfinite(out)):
                log.warning("%s: %s gives non-finite outputs for an all-zero row", self.onnx_path, self.name)

    def _slot(self, k: int) -> tuple[np.ndarray, Any, np.ndarray]:
        if self.session is None:
            raise RuntimeError(f"{self.name}: backend is closed")
        io = self.session.io_binding()
        io.bind_input(self._in_name, "cpu", 0, np.float32, [k, self.n_features], self._inb.ctypes.data)
        io.bind_output(self._out_name, "cpu", 0, np.float32, [k, self.n_outputs], self._outb.ctypes.data)
        out = self._outb[:k]
        out.flags.writeable = False
        slot = (self._inb[:k], io, out)
        self._slots[k] = slot
        return slot

    def run(self, x: np.ndarray) -> np.ndarray:
        shape = x.shape
        if shape[1:] != self._row or not 0 < shape[0] <= self.max_batch:
            raise self._bad_input(x)
        slot = self._slots[shape[0]] or self._slot(shape[0])
        np.copyto(slot[0], x)
        self._run_io(slot[1])
        return slot[2]

    def close(self) -> None:
        self._slots = [None] * (self.max_batch + 1)
        self.session = None

    def describe(self) -> str:
        return f"{self.name} (onnxruntime, {self.provider})"


class OrtCpuBackend(_OrtBackend):
    """ONNX Runtime on the CPU: one intra-op thread, sequential execution, full graph optimisation."""

    name = "cpu"
    _run_error = BundleError

    def _load_failed(self, e: Exception) -> None:
        # The CPU provider runs every standard operator: a failure here is the model's.
        raise BundleError(f"{self.onnx_path}: ONNX Runtime cannot load it: {e}") from e


class _OrtGpuBackend(_OrtBackend):
    options = frozenset({"device_id", "tf32", "pinned"})

    def _gpu_checks(self, opts: dict[str, Any]) -> None:
        self.device_id = int(opts.get("device_id", 0))
        self.gpu_key = _CudaDriver.get().gpu_key(self.device_id)
        self._ctx = None

    def _cuda_options(self, opts: dict[str, Any]) -> dict[str, str]:
        return {
            "device_id": str(self.device_id),
            "use_tf32": "1" if opts.get("tf32", False) else "0",
            "arena_extend_strategy": "kSameAsRequested",
        }

    def _host_buffers(self, opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if opts.get("pinned", True):
            try:
                cuda = __import__("pycuda.driver", fromlist=["driver"])
                cuda.init()
                self._ctx = cuda.Device(self.device_id).retain_primary_context()
                self._ctx.push()
                try:
                    flags = cuda.host_alloc_flags.PORTABLE
                    return (cuda.pagelocked_zeros((self.max_batch, self.n_features), np.float32, mem_flags=flags),
                            cuda.pagelocked_zeros((self.max_batch, self.n_outputs), np.float32, mem_flags=flags))
                finally:
                    self._ctx.pop()
            except Exception as e:  # noqa: BLE001 - pycuda missing or pinning refused: pageable works
                log.info("%s: pageable host buffers (no page-locked memory: %s)", self.name, e)
        return super()._host_buffers(opts)

    @property
    def parity_atol(self) -> float:
        return 1e-4

    def close(self) -> None:
        super().close()
        # Pinned buffers are freed when the last view goes (pycuda activates their context).
        self._inb = self._outb = None  # type: ignore[assignment]
        self._ctx = None  # pycuda releases the primary context with the last pinned buffer

    def describe(self) -> str:
        return f"{self.name} (onnxruntime, {self.provider}, GPU {self.device_id}: {self.gpu_key})"


class OrtCudaBackend(_OrtGpuBackend):
    """ONNX Runtime, CUDAExecutionProvider on GPU ``device_id`` (CPU for nodes CUDA lacks)."""

    name = "ort-cuda"
    provider = "CUDAExecutionProvider"

    def _providers(self, ort: Any, opts: dict[str, Any]) -> list[Any]:
        return [(self.provider, self._cuda_options(opts)), "CPUExecutionProvider"]


class OrtTensorrtBackend(_OrtGpuBackend):
    """ONNX Runtime, TensorrtExecutionProvider (engine cache on), CUDA then CPU for the rest."""

    name = "ort-tensorrt"
    provider = "TensorrtExecutionProvider"
    options = frozenset({"device_id", "tf32", "pinned", "cache_dir", "fp16", "opt_batch", "workspace_mb"})

    def _providers(self, ort: Any, opts: dict[str, Any]) -> list[Any]:
        import onnxruntime

        self.fp16 = bool(opts.get("fp16", False))
        # ORT names its engine files by model hash and SM; the directory adds the GPU model and
        # the TensorRT / ORT versions so an upgrade or another GPU never loads a stale engine.
        base = Path(opts.get("cache_dir") or _default_cache_dir())
        self.cache_dir = base / "ort-trt" / f"{self.gpu_key}-trt{_trt_version_for_ort()}-ort{onnxruntime.__version__}"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        n, name = self.n_features, self.meta.input_name
        opt = int(opts.get("opt_batch") or min(64, self.max_batch))
        trt_opts = {
            "device_id": str(self.device_id),
            "trt_fp16_enable": "True" if self.fp16 else "False",
            "trt_max_workspace_size": str(int(opts.get("workspace_mb", 256)) << 20),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(self.cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(self.cache_dir),
            "trt_profile_min_shapes": f"{name}:1x{n}",
            "trt_profile_opt_shapes": f"{name}:{max(1, min(opt, self.max_batch))}x{n}",
            "trt_profile_max_shapes": f"{name}:{self.max_batch}x{n}",
        }
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", self._cuda_options(opts)), "CPUExecutionProvider"]

    @property
    def parity_atol(self) -> float:
        # TensorRT may pick TF32 kernels for fp32 layers (no ORT option turns that off).
        return 1e-2 if getattr(self, "fp16", False) else 1e-3


# ---------------------------------------------------------------------------------------------
# Native TensorRT


class TensorRTBackend(InferenceBackend):
    """A TensorRT engine built from the ONNX file and cached on disk; pinned host buffers, one
    CUDA stream, one CUDA graph per batch-size bucket (rows padded with zeros to the bucket)."""

    name = "tensorrt"
    options = frozenset({"device_id", "cache_dir", "fp16", "tf32", "opt_batch", "cuda_graphs", "workspace_mb"})

    def __init__(
        self,
        onnx_path: Path,
        meta: ModelMetadata,
        max_batch: int = 1024,
        device_id: int = 0,
        cache_dir: str | Path | None = None,
        fp16: bool = False,
        tf32: bool = False,
        opt_batch: int | None = None,
        cuda_graphs: bool = True,
        workspace_mb: int = 256,
    ) -> None:
        super().__init__(onnx_path, meta, max_batch)
        self._closed = True
        trt = _import("tensorrt", "TensorRT (the tensorrt package)")
        drv = _CudaDriver.get()  # before pycuda: "no driver" is the clearer message on a GPU-less box
        gpu_key = drv.gpu_key(device_id)
        cuda = _import("pycuda.driver", "pycuda")
        _inspect_onnx(self.onnx_path, meta)
        self.device_id, self.fp16, self.tf32 = device_id, bool(fp16), bool(tf32)
        self.opt_batch = max(1, min(int(opt_batch or 64), max_batch))
        self._trt, self._cuda, self._drv = trt, cuda, drv
        cuda.init()
        self._ctx = cuda.Device(device_id).retain_primary_context()
        self._ctx.push()
        self._owner = threading.get_ident()
        self._closed = False
        self._graphs: dict[int, int] = {}
        self._engine = self._runtime = None
        self._contexts: dict[int, Any] = {}
        self._dev: list[Any] = []
        try:
            prec = "fp16" if self.fp16 else ("tf32" if self.tf32 else "fp32")
            self.engine_path = (
                Path(cache_dir or _default_cache_dir()) / f"{gpu_key}-trt{trt.__version__}"
                / f"{onnx_sha256(self.onnx_path)}-b{max_batch}-o{self.opt_batch}-{prec}.plan"
            )
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._load_or_build(int(workspace_mb))
            self._setup_buffers()
            if cuda_graphs:
                self._capture_graphs()
        except BaseException:
            self.close()
            raise

    # -- engine -----------------------------------------------------------------------------
    def _load_or_build(self, workspace_mb: int) -> Any:
        p = self.engine_path
        if p.is_file():
            engine = self._runtime.deserialize_cuda_engine(p.read_bytes())
            if engine is not None:
                log.info("tensorrt: engine from cache %s", p)
                return engine
            log.warning("tensorrt: cached engine %s does not load; rebuilding", p)
        t0 = time.perf_counter()
        plan = self._build_plan(workspace_mb)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(plan)
        os.replace(tmp, p)  # atomic: a concurrent start never reads half an engine
        log.info("tensorrt: built engine in %.1f s, cached at %s", time.perf_counter() - t0, p)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendUnavailable(f"tensorrt: the engine just built for {self.onnx_path} does not deserialize")
        return engine

    def _build_plan(self, workspace_mb: int) -> bytes:
        trt, n = self._trt, self.n_features
        builder = trt.Builder(self._logger)
        major = int(trt.__version__.split(".")[0])
        # TensorRT 10 networks are always explicit-batch (the flag is deprecated there).
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"tensorrt cannot parse {self.onnx_path}: {errors or 'no detail'}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if not self.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)  # TensorRT enables TF32 by default on Ampere+
        profile = builder.create_optimization_profile()
        profile.set_shape(self.meta.input_name, (1, n), (self.opt_batch, n), (self.max_batch, n))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailable(f"tensorrt could not build an engine for {self.onnx_path} (see its log above)")
        return bytes(memoryview(plan))

    # -- buffers ----------------------------------------------------------------------------
    def _setup_buffers(self) -> None:
        """Pinned host buffers, device buffers, and one execution context per batch bucket with
        its shape set once: a bucket's CUDA graph then never sees a shape change after capture."""
        trt, cuda, eng = self._trt, self._cuda, self._engine
        names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
        inputs = [t for t in names if eng.get_tensor_mode(t) == trt.TensorIOMode.INPUT]
        outputs = [t for t in names if eng.get_tensor_mode(t) == trt.TensorIOMode.OUTPUT]
        if inputs != [self.meta.input_name] or self.meta.output_name not in outputs:
            raise BackendUnavailable(f"tensorrt: engine tensors {names} do not match model.json")
        for t in (self.meta.input_name, self.meta.output_name):
            if eng.get_tensor_dtype(t) != trt.float32:
                raise BackendUnavailable(f"tensorrt: tensor {t!r} is {eng.get_tensor_dtype(t)}, not float32")
        buckets = _buckets(self.max_batch)
        for b in buckets:
            c = eng.create_execution_context()
            if c is None:
                raise BackendUnavailable("tensorrt: cannot create an execution context (GPU memory?)")
            if not c.set_input_shape(self.meta.input_name, (b, self.n_features)):
                raise BackendUnavailable(f"tensorrt: input shape [{b}, {self.n_features}] refused by the engine")
            self._contexts[b] = c
        self._h_in = cuda.pagelocked_zeros((self.max_batch, self.n_features), np.float32)
        self._h_out = cuda.pagelocked_zeros((self.max_batch, self.n_outputs), np.float32)
        self._stream = cuda.Stream()
        self._stream_h = self._stream.handle
        self._d_in = cuda.mem_alloc(self._h_in.nbytes)
        self._dev.append(self._d_in)
        addresses = {self.meta.input_name: int(self._d_in)}
        big = self._contexts[self.max_batch]
        for t in outputs:
            shape = tuple(big.get_tensor_shape(t))
            if t == self.meta.output_name and shape != (self.max_batch, self.n_outputs):
                raise BackendUnavailable(f"tensorrt: output {t!r} has shape {shape}, expected [k, {self.n_outputs}]")
            size = int(np.prod(shape)) * np.dtype(trt.nptype(eng.get_tensor_dtype(t))).itemsize
            d = cuda.mem_alloc(max(size, 1))
            self._dev.append(d)
            addresses[t] = int(d)
            if t == self.meta.output_name:
                self._d_out = d
        for c in self._contexts.values():
            for t, ptr in addresses.items():
                if not c.set_tensor_address(t, ptr):
                    raise BackendUnavailable(f"tensorrt: cannot bind tensor {t!r}")
        self._bucket_of = [0] * (self.max_batch + 1)
        j = 0
        for k in range(1, self.max_batch + 1):
            while buckets[j] < k:
                j += 1
            self._bucket_of[k] = buckets[j]
        self._in_views = {b: self._h_in[:b] for b in buckets}
        self._out_views = {b: self._h_out[:b] for b in buckets}
        self._results: list[np.ndarray | None] = [None] * (self.max_batch + 1)
        for b in buckets:  # first enqueue per context outside any capture (TensorRT sets up state)
            self._enqueue(b)
        self._stream.synchronize()

    def _enqueue(self, b: int) -> None:
        cuda = self._cuda
        cuda.memcpy_htod_async(self._d_in, self._in_views[b], self._stream)
        if not self._contexts[b].execute_async_v3(self._stream_h):
            raise RuntimeError(f"tensorrt: execute_async_v3 failed (batch bucket {b})")
        cuda.memcpy_dtoh_async(self._out_views[b], self._d_out, self._stream)

    # -- CUDA graphs ------------------------------------------------------------------------
    def _capture_graphs(self) -> None:
        for b in _buckets(self.max_batch):
            try:
                g = self._capture(b)
            except Exception as e:  # noqa: BLE001 - no graph for this bucket: plain enqueue there
                log.warning("tensorrt: no CUDA graph for batch %d (%s); plain enqueue there", b, e)
                continue
            if g is not None:
                self._graphs[b] = g
        log.info("tensorrt: CUDA graphs for batch buckets %s", sorted(self._graphs))

    def _capture(self, b: int) -> int | None:
        drv, h = self._drv, self._stream_h
        rng = np.random.default_rng(b)
        self._in_views[b][:] = rng.normal(size=(b, self.n_features)).astype(np.float32)
        self._enqueue(b)
        self._stream.synchronize()
        want = self._out_views[b].copy()
        self._out_views[b][:] = 0
        drv.check(drv.lib.cuStreamBeginCapture_v2(h, drv.CAPTURE_THREAD_LOCAL), "cuStreamBeginCapture")
        err: Exception | None = None
        try:
            self._enqueue(b)
        except Exception as e:  # noqa: BLE001 - the capture must be ended whatever happened
            err = e
        graph = ctypes.c_void_p()
        rc = drv.lib.cuStreamEndCapture(h, ctypes.byref(graph))
        if err is not None or rc != 0 or not graph.value:
            if graph.value:
                drv.lib.cuGraphDestroy(graph)
            raise RuntimeError(f"capture failed: {err or drv.error(rc)}")
        exe = ctypes.c_void_p()
        rc = drv.lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, 0)
        drv.lib.cuGraphDestroy(graph)
        if rc != 0:
            raise RuntimeError(f"cuGraphInstantiate: {drv.error(rc)}")
        drv.check(drv.lib.cuGraphLaunch(exe, h), "cuGraphLaunch")
        self._stream.synchronize()
        if not np.array_equal(self._out_views[b], want):  # the graph must replay the same work
            drv.lib.cuGraphExecDestroy(exe)
            raise RuntimeError("graph replay differs from a plain enqueue")
        return exe.value

    # -- run --------------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        shape = x.shape
        if shape[1:] != self._row or not 0 < shape[0] <= self.max_batch:
            raise self._bad_input(x)
        if self._closed:
            raise RuntimeError("tensorrt: backend is closed")
        if self._owner != threading.get_ident():
            self._ctx.push()  # the CUDA context is current only in the thread that built us
            try:
                return self._run(x, shape[0])
            finally:
                self._ctx.pop()
        return self._run(x, shape[0])

    def _run(self, x: np.ndarray, k: int) -> np.ndarray:
        b = self._bucket_of[k]
        np.copyto(self._h_in[:k], x)
        if b > k:
            self._h_in[k:b] = 0.0
        g = self._graphs.get(b)
        if g is not None:
            rc = self._drv.lib.cuGraphLaunch(g, self._stream_h)
            if rc != 0:
                raise RuntimeError(f"tensorrt: cuGraphLaunch: {self._drv.error(rc)}")
        else:
            self._enqueue(b)
        self._stream.synchronize()
        out = self._results[k]
        if out is None:
            out = self._h_out[:k]
            out.flags.writeable = False
            self._results[k] = out
        return out

    @property
    def parity_atol(self) -> float:
        return 1e-2 if self.fp16 else (1e-3 if self.tf32 else 1e-4)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        pushed = self._owner != threading.get_ident()
        if pushed:
            self._ctx.push()
        try:
            for g in self._graphs.values():
                self._drv.lib.cuGraphExecDestroy(g)
            self._graphs = {}
            # TensorRT objects go before the memory they point at, contexts before the engine.
            self._contexts = {}
            self._engine = None
            self._runtime = None
            for d in self._dev:
                d.free()
            self._dev = []
            self._stream = None
            # Pinned host buffers are freed with their last view (pycuda activates the context).
            self._results, self._in_views, self._out_views = [], {}, {}
            self._h_in = self._h_out = None
        finally:
            # pycuda releases the primary context when its last user (a pinned buffer a caller
            # may still hold a view of) is gone; an explicit detach here would free it under them.
            self._ctx.pop()
            self._ctx = None

    def describe(self) -> str:
        prec = "fp16" if self.fp16 else ("tf32" if self.tf32 else "fp32")
        return (f"tensorrt ({self._trt.__version__}, {prec}, GPU {self.device_id}, "
                f"CUDA graphs for {sorted(self._graphs)})")


BACKENDS: dict[str, type[InferenceBackend]] = {
    "cpu": OrtCpuBackend,
    "ort-cuda": OrtCudaBackend,
    "ort-tensorrt": OrtTensorrtBackend,
    "tensorrt": TensorRTBackend,
}

#: ``auto`` tries these; on a tie (within 5 %) the earlier one wins (simpler, fewer moving parts).
AUTO_ORDER = ("cpu", "ort-cuda", "ort-tensorrt", "tensorrt")
TIE = 0.05


def make_backend(
    name: str, onnx_path: Path, meta: ModelMetadata, max_batch: int = 1024, **options: Any
) -> InferenceBackend:
    """Build backend ``name`` (or ``auto``); raises BackendUnavailable, BundleError or ValueError."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"unknown backend option(s) {sorted(unknown)} (known: {', '.join(sorted(OPTIONS))})")
    if name == "auto":
        backend, rows = select_backend(onnx_path, meta, max_batch, **options)
        log.info("inference backend auto → %s\n%s", backend.name, format_selection(rows))
        return backend
    cls = BACKENDS.get(name)
    if cls is None:
        raise BackendUnavailable(f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))}, auto)")
    return cls(onnx_path, meta, max_batch, **{k: v for k, v in options.items() if k in cls.options})


# ---------------------------------------------------------------------------------------------
# Measurement, selection, parity


def latency(backend: InferenceBackend, x: np.ndarray, calls: int = 300, warmup: int = 30) -> dict[str, float]:
    """p50 / p99 / mean of ``backend.run(x)`` in µs over ``calls`` calls (after ``warmup``)."""
    run = backend.run
    for _ in range(warmup):
        run(x)
    t = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        run(x)
        t[i] = clock() - t0
    us = t / 1e3
    return {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)), "mean_us": float(us.mean())}


def select_backend(
    onnx_path: Path,
    meta: ModelMetadata,
    max_batch: int = 1024,
    candidates: Sequence[str] = AUTO_ORDER,
    calls: int = 300,
    typical_batch: int = 64,
    **options: Any,
) -> tuple[InferenceBackend, list[dict[str, Any]]]:
    """Build every available candidate, time ``run`` at batch 1 and at ``typical_batch``, keep
    the one with the lowest p99(1) + p99(typical) — the tail of a one-symbol tick plus the tail
    of a busy one, weighted equally in µs. Candidates within 5 % of the best tie, and a tie goes
    to the earlier candidate in ``candidates``. Returns the open backend and the table."""
    n = len(meta.features)
    tb = max(1, min(typical_batch, max_batch))
    x = np.random.default_rng(0).normal(size=(tb, n)).astype(np.float32)
    rows: list[dict[str, Any]] = []
    built: list[tuple[InferenceBackend, float]] = []
    for name in candidates:
        cls = BACKENDS.get(name)
        if cls is None:
            raise BackendUnavailable(f"unknown backend {name!r} in candidates")
        t0 = time.perf_counter()
        try:
            b = cls(onnx_path, meta, max_batch, **{k: v for k, v in options.items() if k in cls.options})
        except BackendUnavailable as e:
            rows.append({"backend": name, "available": False, "reason": str(e)})
            continue
        start_s = time.perf_counter() - t0
        try:
            one, typ = latency(b, x[:1], calls), latency(b, x, calls)
        except Exception as e:  # noqa: BLE001 - a backend that builds but cannot run is skipped
            b.close()
            rows.append({"backend": name, "available": False, "reason": f"run failed: {e}"})
            continue
        score = one["p99_us"] + typ["p99_us"]
        rows.append({"backend": name, "available": True, "start_s": round(start_s, 3), "batch": tb,
                     "p50_1_us": one["p50_us"], "p99_1_us": one["p99_us"],
                     "p50_typ_us": typ["p50_us"], "p99_typ_us": typ["p99_us"], "score_us": score})
        built.append((b, score))
    if not built:
        raise BackendUnavailable("no inference backend is available: " + "; ".join(r["reason"] for r in rows))
    best = min(s for _, s in built)
    chosen = next(b for b, s in built if s <= best * (1 + TIE))
    for b, _ in built:
        if b is not chosen:
            b.close()
    for r in rows:
        r["chosen"] = r["backend"] == chosen.name
    return chosen, rows


def format_selection(rows: Iterable[dict[str, Any]]) -> str:
    lines = [f"{'backend':<13} {'p50@1':>8} {'p99@1':>8} {'p50@B':>8} {'p99@B':>8} {'score':>8}  (µs)"]
    for r in rows:
        if r.get("available"):
            mark = "  ← chosen" if r.get("chosen") else ""
            lines.append(f"{r['backend']:<13} {r['p50_1_us']:8.1f} {r['p99_1_us']:8.1f} {r['p50_typ_us']:8.1f} "
                         f"{r['p99_typ_us']:8.1f} {r['score_us']:8.1f}{mark}  (B={r['batch']})")
        else:
            lines.append(f"{r['backend']:<13} unavailable: {r['reason']}")
    return "\n".join(lines)


def parity_inputs(meta: ModelMetadata, n_random: int = 512, seed: int = 0) -> np.ndarray:
    """The fixed parity set: seeded N(0, 1) rows (normalised units, clipped to ±clip like the
    engine does), then edge rows: zeros, ±clip everywhere, alternating ±clip, one column at
    ±clip, and ±10×clip (values past the clip bounds, for models fed unclipped rows)."""
    n, c = len(meta.features), float(meta.clip)
    rng = np.random.default_rng(seed)
    rand = np.clip(rng.normal(size=(n_random, n)), -c, c)
    alt = np.where(np.arange(n) % 2 == 0, c, -c)
    eye = np.eye(n) * c
    edges = np.vstack([np.zeros((1, n)), np.full((1, n), c), np.full((1, n), -c), alt, -alt,
                       eye, -eye, np.full((1, n), 10 * c), np.full((1, n), -10 * c)])
    return np.ascontiguousarray(np.vstack([rand, edges]), dtype=np.float32)


def parity(
    backend: InferenceBackend,
    reference: InferenceBackend | Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    batch: int | None = None,
) -> float:
    """Largest |backend − reference| over the rows of ``x``, run in chunks of ``batch`` rows
    (default ``backend.max_batch``); the reference sees the same chunks."""
    ref = reference.run if isinstance(reference, InferenceBackend) else reference
    step = batch or backend.max_batch
    worst = 0.0
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        got = np.array(backend.run(chunk), dtype=np.float64)
        want = np.asarray(ref(chunk), dtype=np.float64)
        if got.shape != want.shape:
            raise ValueError(f"parity: {backend.name} gives shape {got.shape}, the reference {want.shape}")
        if not np.all(np.isfinite(got) == np.isfinite(want)):
            return float("inf")
        fin = np.isfinite(got)
        if fin.any():
            worst = max(worst, float(np.max(np.abs(got[fin] - want[fin]))))
    return worst
