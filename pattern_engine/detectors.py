"""Detectors: one small interface, rule detectors compiled into the kernel, and the model seam.

Every detector is a ``Detector``: a ``type_name`` (the ``type:`` in ``config/pattern.yml``),
a pydantic ``Params`` model (unknown or bad parameters are rejected when the YAML is
loaded) with the shared ``enabled`` / ``warmup`` / ``cooldown`` fields, and an instance
name (the key under ``detectors:``; it goes into signal ids and ``signals.<name>``
counters). ``DETECTOR_TYPES`` maps type names to classes; ``register_detector`` adds one.

Two kinds plug in:

- ``RuleDetector``: evaluated per tick, in order, inside the compiled kernel
  (``kernel.run_batch``) right after that tick's feature update, so results are identical
  however ticks are batched. A rule detector packs its parameters into a float vector
  (``pack()``) and names its compiled scoring function by ``kind``. Warm-up (ticks seen for
  the symbol) and cooldown (ticks since this detector last fired for the symbol) are
  applied in the kernel: one move yields one signal.

- ``BatchDetector`` — **the model seam**. Evaluated once per bus batch (micro-batched
  across the symbols that ticked in it), after the kernel: ``evaluate(ctx)`` receives a
  ``BatchContext`` with the feature matrix rows (columns ``features.model_columns``) of the
  symbols that ticked and are warm (ticks ≥ ``warmup``) and not cooling down, plus each
  symbol's latest tick, and returns ``Detection`` rows. The engine turns them into
  Signals stamped with the detector's ``model_id`` / ``model_version`` and with the id of
  that latest tick. A later issue adds an ONNX Runtime / TensorRT detector: a subclass
  with ``type_name = "onnx"``, ``Params`` naming the model file, its feature columns,
  the score threshold and the backend, decorated with ``@register_detector``, then
  enabled in YAML (``detectors: {mlp: {type: onnx, model: ..., ...}}``). No model ships
  here. Because it sees the latest state of each symbol once per bus batch, a batch
  detector's output may depend on batching (rule detectors' never does).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from common.messages import Tick
from pattern_engine import kernel
from pattern_engine.features import FeatureParams

__all__ = [
    "DETECTOR_TYPES",
    "BatchContext",
    "BatchDetector",
    "Breakout",
    "Detection",
    "Detector",
    "DetectorParams",
    "EmaCross",
    "Imbalance",
    "MeanReversion",
    "Momentum",
    "RuleDetector",
    "register_detector",
]


class DetectorParams(BaseModel):
    """Parameters every detector has."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = Field(True, description="False: the detector is built but never evaluated.")
    warmup: int = Field(200, ge=0, le=10**9, description="Ticks a symbol must have seen before it may fire.")
    cooldown: int = Field(100, ge=0, le=10**9, description="Ticks of the symbol after a signal before the next.")


class Detector(abc.ABC):
    """A named, configured detector instance."""

    type_name: ClassVar[str] = ""
    Params: ClassVar[type[DetectorParams]] = DetectorParams

    def __init__(self, name: str, params: DetectorParams) -> None:
        self.name = name
        self.params = params

    @property
    def enabled(self) -> bool:
        return self.params.enabled

    @property
    def warmup(self) -> int:
        return self.params.warmup

    @property
    def cooldown(self) -> int:
        return self.params.cooldown

    def check(self, features: FeatureParams) -> list[tuple[str, str]]:
        """Cross-section checks against the feature settings: ``(parameter, problem)`` pairs."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.params!r})"


class RuleDetector(Detector):
    """A detector evaluated per tick inside the compiled kernel."""

    kind: ClassVar[int] = 0

    @abc.abstractmethod
    def pack(self) -> np.ndarray:
        """The kernel's parameter vector for this detector (length ``kernel.DP_SIZE``)."""


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What a ``BatchDetector`` sees once per bus batch (row i describes ``symbols[i]``)."""

    symbols: list[str]
    ids: np.ndarray  # symbol ids (rows of FeatureState)
    features: np.ndarray  # float64 [k, len(model_columns)]: FEATURES then obi_<N> (book_levels), a copy
    ticks: np.ndarray  # int64 [k]: ticks seen per symbol
    last: list[Tick]  # the latest tick of each symbol in this batch


class Detection(NamedTuple):
    """One output row of a ``BatchDetector``: ``row`` indexes the context, ``side`` is +1/-1."""

    row: int
    side: int
    strength: float


class BatchDetector(Detector):
    """A detector evaluated once per bus batch over the symbols that ticked (model detectors)."""

    model_id: str = ""
    model_version: str = ""

    @abc.abstractmethod
    def evaluate(self, ctx: BatchContext) -> Sequence[Detection]:
        """Score the context's rows; return the rows that fire."""

    @property
    def ready(self) -> bool:
        """False while the detector has nothing to run (a model not loaded yet): the engine skips it."""
        return True

    def start(self) -> list[tuple[str, str]]:
        """Acquire resources (load a model) before the first batch; ``(parameter, problem)``
        pairs stop the engine's start with a ConfigError naming ``detectors.<name>.<parameter>``."""
        return []

    def close(self) -> None:
        """Release resources (sessions, GPU buffers)."""


DETECTOR_TYPES: dict[str, type[Detector]] = {}


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Make ``cls`` available to ``type: <cls.type_name>`` in the pattern config."""
    if not cls.type_name:
        raise ValueError(f"{cls.__name__} has no type_name")
    DETECTOR_TYPES[cls.type_name] = cls
    return cls


def _vec(*values: float) -> np.ndarray:
    v = np.zeros(kernel.DP_SIZE, dtype=np.float64)
    v[: len(values)] = values
    return v


class MomentumParams(DetectorParams):
    lookback: int = Field(16, ge=1, le=100_000, description="N: return over the last N price events.")
    threshold: float = Field(
        4.0, gt=0, le=1e6, description="k: fire when |N-event log return| >= k * vol * sqrt(N)."
    )
    require_trend: bool = Field(True, description="Also require the fast EMA on the move's side of the slow EMA.")


@register_detector
class Momentum(RuleDetector):
    """Momentum burst: the N-event return is beyond k standard deviations; trade with it."""

    type_name = "momentum"
    Params = MomentumParams
    kind = kernel.KIND_MOMENTUM

    def pack(self) -> np.ndarray:
        p = self.params
        return _vec(p.lookback, p.threshold, 1.0 if p.require_trend else 0.0)

    def check(self, features: FeatureParams) -> list[tuple[str, str]]:
        if self.params.lookback > features.window:
            return [("lookback", f"must be <= features.window ({features.window})")]
        return []


class MeanReversionParams(DetectorParams):
    threshold: float = Field(
        3.0, gt=0, le=1e6, description="Fire (fade) when |z| of price vs the slow EMA is >= this."
    )
    max_z: float = Field(0.0, ge=0, le=1e6, description="Do not fade beyond this |z| (0 = no cap).")


@register_detector
class MeanReversion(RuleDetector):
    """Mean-reversion stretch: price far from its slow EMA in volatility units; fade it."""

    type_name = "mean_reversion"
    Params = MeanReversionParams
    kind = kernel.KIND_MEAN_REVERSION

    def pack(self) -> np.ndarray:
        return _vec(self.params.threshold, self.params.max_z)

    def check(self, features: FeatureParams) -> list[tuple[str, str]]:
        if self.params.max_z and self.params.max_z < self.params.threshold:
            return [("max_z", "must be 0 or >= threshold")]
        return []


class BreakoutParams(DetectorParams):
    min_range_bps: float = Field(
        10.0, ge=0, le=1e6, description="The window's high-low range must be at least this (bps of the low)."
    )
    min_break_bps: float = Field(0.0, ge=0, le=1e6, description="Price must clear the high/low by this (bps).")


@register_detector
class Breakout(RuleDetector):
    """Breakout: a new high (buy) or low (sell) of the last ``features.window`` price events."""

    type_name = "breakout"
    Params = BreakoutParams
    kind = kernel.KIND_BREAKOUT

    def pack(self) -> np.ndarray:
        return _vec(self.params.min_range_bps, self.params.min_break_bps)


class ImbalanceParams(DetectorParams):
    quote_threshold: float = Field(
        0.6, ge=0, lt=1, description="|EWMA quote imbalance| needed (0 = quote leg off)."
    )
    flow_threshold: float = Field(
        0.0, ge=0, lt=1, description="|trade-flow imbalance| needed (0 = flow leg off)."
    )
    persist: int = Field(20, ge=1, le=10**6, description="Consecutive ticks the imbalance must hold.")


@register_detector
class Imbalance(RuleDetector):
    """Quote / order-flow imbalance held for ``persist`` ticks; trade with the heavy side."""

    type_name = "imbalance"
    Params = ImbalanceParams
    kind = kernel.KIND_IMBALANCE

    def pack(self) -> np.ndarray:
        p = self.params
        return _vec(p.quote_threshold, p.flow_threshold, p.persist)

    def check(self, features: FeatureParams) -> list[tuple[str, str]]:
        if self.params.quote_threshold == 0 and self.params.flow_threshold == 0:
            return [("quote_threshold", "quote_threshold and flow_threshold cannot both be 0")]
        return []


class EmaCrossParams(DetectorParams):
    cooldown: int = Field(
        0, ge=0, le=10**9,
        description="Ticks of the symbol after a signal before the next (0: every cross; a cross "
        "skipped by a cooldown leaves a follower on the wrong side until the next one).",
    )
    fast: int = Field(10, ge=1, le=10**6, description="Fast EMA period N in trades: alpha = 2 / (N + 1).")
    slow: int = Field(30, ge=2, le=10**6, description="Slow EMA period in trades: alpha = 2 / (N + 1).")
    fast_alpha: float | None = Field(None, gt=0, le=1, description="Fast EMA alpha; set, it replaces `fast`.")
    slow_alpha: float | None = Field(None, gt=0, le=1, description="Slow EMA alpha; set, it replaces `slow`.")

    def alphas(self) -> tuple[float, float]:
        """(fast, slow) EMA weights of the newest trade price."""
        a_f = self.fast_alpha if self.fast_alpha is not None else 2.0 / (self.fast + 1.0)
        a_s = self.slow_alpha if self.slow_alpha is not None else 2.0 / (self.slow + 1.0)
        return a_f, a_s


@register_detector
class EmaCross(RuleDetector):
    """EMA cross: BUY when the fast EMA of trade prices crosses above the slow one, SELL below.

    Both EMAs start at the symbol's first trade price and update on trades only (quotes do not
    move them); each trade applies ``ema = a * price + (1 - a) * ema``, the first one included
    (nautilus_trader's EMA, so ``benchmarks/backtest_peers.py`` can compare crossing counts
    exactly). A cross is a change of the sign of fast - slow from the last nonzero sign: the
    first sign a symbol takes is not a cross, equal EMAs hold the last sign. Strength: the gap
    |fast - slow| in bps of the slow EMA at the cross (small by construction).
    """

    type_name = "ema_cross"
    Params = EmaCrossParams
    kind = kernel.KIND_EMA_CROSS

    def pack(self) -> np.ndarray:
        return _vec(*self.params.alphas())

    def check(self, features: FeatureParams) -> list[tuple[str, str]]:
        a_f, a_s = self.params.alphas()
        if a_f <= a_s:
            what = "fast_alpha" if self.params.fast_alpha is not None else "fast"
            return [(what, "the fast EMA must be faster than the slow one (fast < slow, fast_alpha > slow_alpha)")]
        return []
