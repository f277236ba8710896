"""The ``onnx`` detector: a model bundle run on every bus batch, with hot swap and a circuit breaker.

Configured in ``config/pattern.yml``::

    detectors:
      mlp:
        type: onnx
        model: mlp_up        # registry name: follow its promoted version (hot swap)
                             # or name@3 (pinned) or a bundle directory (a path)
        backend: cpu         # cpu | ort-cuda | ort-tensorrt | tensorrt | auto
        threshold: 0.6       # default: the bundle's
        warmup: 200
        cooldown: 100

Per bus batch the engine hands ``evaluate`` the feature rows of the symbols that ticked
(warm, not cooling down). The detector picks the bundle's columns, drops rows holding a
NaN/inf (counted: ``nonfinite_rows``), normalises ``(x - mean) / scale`` clipped to
``±clip`` into float32, runs the backend in chunks of ``max_batch`` rows and fires BUY when
P(up) ≥ threshold, SELL when P(down) ≥ threshold; strength is that probability.

Safety. With ``isolation: thread`` inference runs on a dedicated worker thread and
the engine waits at most ``timeout_us``: a late call is abandoned (its result discarded,
``timeouts`` counted) and, while the worker is still stuck, later batches skip the model at
once (``busy``) — ticks and rule detectors never wait on a hung model. With ``isolation:
inline`` the call runs on the event loop's thread (saves the ~55 µs thread hand-off) and a
call slower than ``timeout_us`` is discarded after the fact (it did hold that batch). ``auto``
(default) is inline for the ``cpu`` backend, whose small models cannot hang and where the
hand-off would be most of the cost (measured: docs/benchmarks.md), and thread for the GPU
backends, where a driver stall is possible. Errors, timeouts and bad
outputs (wrong shape, non-finite) are failures; ``max_failures`` of them within the last
``failure_window`` evaluations open the breaker: model signals stop, an alert goes out
(``Control`` ``model.disabled`` on ``sys:alerts``, logged CRITICAL), and after
``retry_after_s`` one batch probes the model again (``model.enabled`` when it succeeds).

Hot swap. ``swap(loaded)`` replaces the running model between two batches (the service
calls it under its batch lock), so no tick is dropped or reordered; every signal carries the
``model_id`` / ``model_version`` of the model that produced it. ``load_model`` does the slow
part (session creation, warm-up, checks) off the hot path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
from pydantic import Field

from pattern_engine.detectors import BatchContext, BatchDetector, Detection, DetectorParams, register_detector
from pattern_engine.features import FeatureParams, model_columns
from pattern_engine.ml.backends import InferenceBackend, make_backend
from pattern_engine.ml.metadata import BundleError, ModelMetadata, load_bundle

__all__ = ["LoadedModel", "ModelLoadError", "NoPromotedVersion", "OnnxDetector", "OnnxParams", "load_model", "model_ref_kind", "registry_unavailable"]

log = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """A model that cannot be run by this engine; the message says which and why."""


class NoPromotedVersion(ModelLoadError):
    """A registry name followed by a detector has no promoted version (yet), or no version at all."""


class OnnxParams(DetectorParams):
    model: str = Field(
        ..., min_length=1, max_length=1024,
        description="Registry name (follow its promoted version), name@VERSION (pinned) or a bundle directory.",
    )
    backend: str = Field("cpu", pattern=r"^(cpu|ort-cuda|ort-tensorrt|tensorrt|auto)$",
                         description="Inference backend: cpu, ort-cuda, ort-tensorrt, tensorrt or auto.")
    backend_options: dict[str, int | float | bool | str] = Field(
        default_factory=dict, description="Options of the backend (device_id, fp16, cache_dir, ...: docs/models.md)."
    )
    threshold: float | None = Field(None, gt=0, le=1, description="Class probability to fire (default: the bundle's).")
    max_batch: int = Field(256, ge=1, le=65_536, description="Rows per inference call (larger batches are chunked).")
    isolation: Literal["auto", "thread", "inline"] = Field(
        "auto", description="thread: inference on a worker thread, abandoned after timeout_us; inline: on the loop's "
        "thread, a late result discarded; auto: inline for the cpu backend, thread for the GPU backends.",
    )
    timeout_us: int = Field(5_000, ge=10, le=10_000_000, description="An inference call slower than this fails.")
    max_failures: int = Field(10, ge=1, le=10_000, description="Failures within failure_window that stop the model.")
    failure_window: int = Field(100, ge=1, le=100_000, description="Evaluations the failure count looks back over.")
    retry_after_s: float = Field(30.0, ge=0, le=86_400, description="After the breaker opens, probe again after this.")
    poll_s: float = Field(1.0, ge=0, le=3_600,
                          description="How often the service checks the registry for a newly promoted version (0: never).")


def model_ref_kind(ref: str) -> Literal["path", "pinned", "follow"]:
    """How a ``model:`` value is read: a bundle path, ``name@version`` or a registry name to follow."""
    if "/" in ref or ref.startswith(".") or Path(ref).is_dir():
        return "path"
    return "pinned" if "@" in ref else "follow"


@dataclass
class LoadedModel:
    """A bundle ready to run: metadata, backend and the precomputed input transform."""

    meta: ModelMetadata
    backend: InferenceBackend
    version: str
    source: str  # where it came from (bundle path)
    columns: dict[str, int]  # the engine's feature name -> column of BatchContext.features
    cols: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    inv_scale: np.ndarray = field(init=False)
    up: int = field(init=False)
    down: int = field(init=False)

    def __post_init__(self) -> None:
        self.cols = np.array([self.columns[f] for f in self.meta.features], dtype=np.intp)
        self.mean = np.asarray(self.meta.mean, dtype=np.float64)
        self.inv_scale = 1.0 / np.asarray(self.meta.scale, dtype=np.float64)
        classes = list(self.meta.classes)
        self.up = classes.index(1) if 1 in classes else -1
        self.down = classes.index(-1) if -1 in classes else -1

    @property
    def name(self) -> str:
        return self.meta.name

    def prepare(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row indexes with finite inputs, their normalised float32 inputs): one compiled pass."""
        k = features.shape[0]
        rows = np.empty(k, dtype=np.int64)
        z = np.empty((k, self.cols.shape[0]), dtype=np.float32)
        n = _prepare(features, self.cols, self.mean, self.inv_scale, float(self.meta.clip), rows, z)
        return rows[:n], z[:n]

    def close(self) -> None:
        self.backend.close()


@numba.njit(cache=True, nogil=True)
def _prepare(features, cols, mean, inv_scale, clip, rows, out):  # pragma: no cover - compiled
    """Gather ``cols`` of each row, skip rows holding a NaN/inf, write clip((x - mean) * inv_scale)
    as float32 into ``out`` (packed); the kept row indexes go to ``rows``. Returns how many."""
    n = 0
    m = cols.shape[0]
    for i in range(features.shape[0]):
        ok = True
        for j in range(m):
            v = features[i, cols[j]]
            if not np.isfinite(v):
                ok = False
                break
        if not ok:
            continue
        for j in range(m):
            z = (features[i, cols[j]] - mean[j]) * inv_scale[j]
            out[n, j] = min(max(z, -clip), clip)
        rows[n] = i
        n += 1
    return n


def load_model(
    ref: str,
    features: FeatureParams,
    backend: str = "cpu",
    max_batch: int = 256,
    resolve: Callable[[str], tuple[ModelMetadata, Path, str | None]] | None = None,
    options: dict[str, Any] | None = None,
) -> LoadedModel:
    """Resolve ``ref``, check the bundle against this engine, build the backend and warm it up.

    Raises ``ModelLoadError`` naming the problem (missing file, feature the live engine does
    not compute, feature settings that differ from training, a model whose outputs are wrong).
    """
    try:
        if model_ref_kind(ref) == "path":
            meta, onnx_path = load_bundle(ref)
            version = meta.version
        else:
            if resolve is None:
                from pattern_engine.ml.registry import resolve as registry_resolve

                resolve = registry_resolve
            meta, onnx_path, reg_version = resolve(ref)
            version = reg_version if reg_version is not None else meta.version
    except (BundleError, LookupError, OSError, ValueError) as e:
        raise ModelLoadError(str(e)) from e
    except Exception as e:  # the registry's errors (database unreachable, unknown name, bad stored copy)
        from pattern_engine.ml import registry

        if isinstance(e, registry.NoPromotedVersion) or (
            isinstance(e, registry.ModelNotFound) and model_ref_kind(ref) == "follow"
        ):
            raise NoPromotedVersion(str(e)) from e
        raise ModelLoadError(f"registry: {e}") from e
    columns = model_columns(features)
    missing = [f for f in meta.features if f not in columns]
    if missing:
        raise ModelLoadError(
            f"{meta.name}: features {missing} are not computed by the live engine with these settings "
            f"(it computes: {', '.join(columns)})"
        )
    if meta.feature_params:
        ours = features.recorded()
        diff = {k: (v, ours.get(k)) for k, v in meta.feature_params.items() if ours.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: trained {a}, engine {b}" for k, (a, b) in sorted(diff.items()))
            raise ModelLoadError(f"{meta.name}: trained with other feature settings ({shown})")
    try:
        be = make_backend(backend, onnx_path, meta, max_batch=max_batch, **(options or {}))
    except Exception as e:
        raise ModelLoadError(f"{meta.name}: {backend} backend: {e}") from e
    loaded = LoadedModel(meta=meta, backend=be, version=str(version), source=str(onnx_path.parent), columns=columns)
    try:
        _smoke(loaded)
    except Exception as e:
        be.close()
        raise ModelLoadError(f"{meta.name}: {e}") from e
    return loaded


def _smoke(m: LoadedModel) -> None:
    """Run a few rows (and warm the backend up); the outputs must be probabilities of the classes.
    Also compiles (or loads from numba's cache) the input pass now, not on the first real batch."""
    m.prepare(np.zeros((2, len(m.columns))))
    n = len(m.meta.features)
    rng = np.random.default_rng(0)
    for k in (1, min(8, m.backend.max_batch), 1):
        x = rng.normal(0, 1, (k, n)).astype(np.float32)
        out = np.asarray(m.backend.run(x))
        if out.shape != (k, len(m.meta.classes)):
            raise ModelLoadError(f"output shape {out.shape}, expected ({k}, {len(m.meta.classes)}) for the classes "
                                 f"{m.meta.classes}")
        if not np.isfinite(out).all() or (out < -1e-6).any() or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
            raise ModelLoadError("outputs are not class probabilities (finite, >= 0, rows summing to 1)")


def registry_unavailable() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


class InferenceTimeout(TimeoutError):
    pass


class _Worker:
    """One daemon thread running one call at a time; the caller waits at most a timeout."""

    def __init__(self, name: str) -> None:
        self._req = threading.Event()
        self._done = threading.Event()
        self._fn: Callable[[], Any] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self.busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"infer-{name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._req.wait()
            self._req.clear()
            if self._closed:
                return
            fn, self._fn = self._fn, None
            try:
                self._result, self._error = fn(), None  # type: ignore[misc]
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                self._result, self._error = None, e
            self.busy = False
            self._done.set()

    def call(self, fn: Callable[[], Any], timeout_s: float) -> Any:
        if self.busy:
            raise InferenceTimeout("previous inference still running")
        self.busy = True
        self._fn = fn
        self._done.clear()
        self._req.set()
        if not self._done.wait(timeout_s):
            raise InferenceTimeout(f"no result within {timeout_s * 1e6:.0f} µs")
        if self._error is not None:
            raise self._error
        return self._result

    def close(self) -> None:
        self._closed = True
        self._req.set()


@register_detector
class OnnxDetector(BatchDetector):
    """Runs a model bundle over the symbols that ticked in a bus batch."""

    type_name = "onnx"
    Params = OnnxParams

    def __init__(self, name: str, params: OnnxParams) -> None:  # type: ignore[override]
        super().__init__(name, params)
        self.params: OnnxParams = params
        self.model: LoadedModel | None = None
        self.features: FeatureParams | None = None
        self.stats: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self.alerts: list[tuple[str, str, dict[str, str]]] = []  # (command, reason, args) to publish
        self._recent: deque[bool] = deque(maxlen=params.failure_window)
        self._failures = 0
        self.open_until: float | None = None  # breaker open (monotonic deadline) or None
        self._worker: _Worker | None = None
        self.resolve: Callable[[str], tuple[ModelMetadata, Path, str | None]] | None = None

    # -- config-time -----------------------------------------------------------------------------
    def check(self, features: FeatureParams) -> list[tuple[str, str]]:
        """Config-time checks only (no file or database is touched: reading the pattern file stays
        cheap and side-effect free); the model is loaded by ``start``."""
        self.features = features
        return []

    def start(self) -> list[tuple[str, str]]:
        """Load the model (the engine calls this once, before the first batch).

        A path or a pinned ``name@N`` must load: otherwise ``[("model", why)]`` and the engine
        refuses to start, naming the key. A followed registry name with no promoted version, not
        registered yet, or a registry that cannot be read now is not an error: the detector
        starts idle (no model signals, a warning, the heartbeat says so) and the service swaps
        the first promoted version in once the registry answers.
        """
        if self.model is not None or not self.enabled:
            return []
        try:
            self.model = self.load(self.params.model)
        except NoPromotedVersion as e:
            log.warning("detector %s: %s; idle until a version is promoted", self.name, e)
        except ModelLoadError as e:
            if self.follows and isinstance(e.__cause__, registry_unavailable()):
                log.warning("detector %s: cannot read the model registry now (%s); idle until it answers and "
                            "%s has a promoted version", self.name, str(e).splitlines()[0][:300], self.follows)
                return []
            return [("model", str(e))]
        return []

    def load(self, ref: str) -> LoadedModel:
        if self.features is None:
            raise ModelLoadError("feature settings unknown: call check(features) first")
        return load_model(ref, self.features, self.params.backend, self.params.max_batch, self.resolve,
                          self.params.backend_options)

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def isolation(self) -> str:
        iso = self.params.isolation
        if iso == "auto":
            return "inline" if self.model is None or self.model.backend.name == "cpu" else "thread"
        return iso

    @property
    def follows(self) -> str | None:
        """The registry name whose promoted version this detector follows (hot swap), if any."""
        return self.params.model if model_ref_kind(self.params.model) == "follow" else None

    # -- stamps ------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self.model.name if self.model else ""

    @property
    def model_version(self) -> str:  # type: ignore[override]
        return self.model.version if self.model else ""

    # -- hot path ------------------------------------------------------------------------------------
    def evaluate(self, ctx: BatchContext) -> Sequence[Detection]:
        m = self.model
        if m is None:
            return []
        if self.open_until is not None and time.monotonic() < self.open_until:
            self._count("skipped_breaker")
            return []
        rows, x = m.prepare(ctx.features)
        if rows.shape[0] != ctx.features.shape[0]:
            self._count("nonfinite_rows", ctx.features.shape[0] - rows.shape[0])
        if rows.shape[0] == 0:
            return []
        self._count("rows", rows.shape[0])
        try:
            p = self._infer(m, x)
        except InferenceTimeout as e:
            self._fail("timeouts", str(e))
            return []
        except Exception as e:  # noqa: BLE001 - a failing model never stops the engine
            self._fail("errors", f"{type(e).__name__}: {e}")
            return []
        self._ok()
        thr = self.params.threshold if self.params.threshold is not None else m.meta.threshold
        out: list[Detection] = []
        pu = p[:, m.up].tolist() if m.up >= 0 else [0.0] * len(rows)
        pd = p[:, m.down].tolist() if m.down >= 0 else [0.0] * len(rows)
        for i, (u, d) in enumerate(zip(pu, pd)):
            if u >= thr or d >= thr:  # both only when thr <= 0.5: the likelier side wins
                out.append(Detection(int(rows[i]), 1, u) if u >= d else Detection(int(rows[i]), -1, d))
        return out

    def _infer(self, m: LoadedModel, x: np.ndarray) -> np.ndarray:
        mb = m.backend.max_batch
        n = x.shape[0]
        timeout_s = self.params.timeout_us / 1e6

        def run() -> np.ndarray:
            if n <= mb:
                return np.array(m.backend.run(x), dtype=np.float32, copy=True)
            return np.concatenate([np.asarray(m.backend.run(x[i : i + mb]), dtype=np.float32)
                                   for i in range(0, n, mb)])

        if self.isolation == "thread":
            if self._worker is None:
                self._worker = _Worker(self.name)
            p = self._worker.call(run, timeout_s)
        else:
            t0 = time.perf_counter()
            p = run()
            took = time.perf_counter() - t0
            if took > timeout_s:
                raise InferenceTimeout(f"inference took {took * 1e6:.0f} µs")
        if p.shape != (n, len(m.meta.classes)):
            raise ValueError(f"output shape {p.shape}, expected ({n}, {len(m.meta.classes)})")
        if not np.isfinite(p).all():
            raise ValueError("non-finite output")
        return p

    # -- breaker ---------------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def _record(self, failed: bool) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._failures -= 1
        self._recent.append(failed)
        self._failures += failed

    def _ok(self) -> None:
        self._count("inferences")
        self._record(False)
        if self.open_until is not None:  # the probe succeeded: close the breaker
            self.open_until = None
            self._recent.clear()
            self._failures = 0
            log.warning("%s: model %s@%s answers again; model signals resume", self.name, self.model_id,
                        self.model_version)
            self.alerts.append(("model.enabled", "inference succeeded after the retry delay",
                                {"model": self.model_id, "version": self.model_version}))

    def _fail(self, kind: str, why: str) -> None:
        self._count(kind)
        self._record(True)
        n = self.stats.get(kind, 0)
        if n in (1, 10, 100) or n % 1000 == 0:
            log.error("%s: inference failed (%s #%d): %s", self.name, kind, n, why)
        if self.open_until is not None:  # the half-open probe failed: stay open
            self.open_until = time.monotonic() + self.params.retry_after_s
            return
        if self._failures >= self.params.max_failures:
            self.open_until = time.monotonic() + self.params.retry_after_s
            self._count("breaker_opened")
            log.critical("%s: %d inference failures in the last %d evaluations (last: %s); model signals stop, "
                         "retry in %.0fs", self.name, self._failures, len(self._recent), why,
                         self.params.retry_after_s)
            self.alerts.append(("model.disabled", f"{self._failures} inference failures; last: {why}"[:2000], {
                "model": self.model_id, "version": self.model_version, "failures": str(self._failures),
                "window": str(len(self._recent)), "retry_after_s": str(self.params.retry_after_s),
            }))

    @property
    def breaker_open(self) -> bool:
        return self.open_until is not None

    def drain_stats(self) -> dict[str, int]:
        """Counter increments since the last call (``model.<detector>.<key>``)."""
        out = {}
        for k, v in self.stats.items():
            d = v - self._reported.get(k, 0)
            if d:
                out[k] = d
                self._reported[k] = v
        return out

    # -- hot swap ---------------------------------------------------------------------------------------
    def swap(self, new: LoadedModel) -> LoadedModel | None:
        """Run ``new`` from the next batch on; return the previous model (the caller closes it)."""
        old, self.model = self.model, new
        self.open_until = None
        self._recent.clear()
        self._failures = 0
        if self._worker is not None and self._worker.busy:  # stuck on the old model: start a fresh worker
            self._worker.close()
            self._worker = None
        self._count("swaps")
        return old

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self.model is not None:
            self.model.close()
            self.model = None
