"""The pattern file (``config/pattern.yml``): feature settings and detector instances, validated at start.

Shape::

    features: {<FeatureParams field>: value, ...}
    detectors:
      <name>:              # instance name: signal ids, counters signals.<name>
        type: <type name>  # optional, defaults to <name>; a key of DETECTOR_TYPES
        <param>: value     # the type's Params fields (enabled, warmup, cooldown, ...)

An unknown section, detector type or parameter, or a bad value, raises ``ConfigError``
whose message names the file and the dotted key (``detectors.momentum.threshold``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from common.config import ConfigError, first_error
from pattern_engine.config import DEFAULT_PATTERN_PATH
from pattern_engine.detectors import DETECTOR_TYPES, BatchDetector, Detector, RuleDetector
from pattern_engine.features import FeatureParams
from pattern_engine.ml import detector as _onnx_detector  # noqa: F401 - registers type: onnx

__all__ = ["DEFAULT_PATH", "PatternConfig", "load_pattern_config", "parse_pattern_config"]

DEFAULT_PATH = DEFAULT_PATTERN_PATH

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_SECTIONS = ("features", "detectors")


@dataclass(frozen=True)
class PatternConfig:
    """Validated feature parameters and detector instances (in file order)."""

    features: FeatureParams
    detectors: tuple[Detector, ...]
    source: str = "<dict>"

    @property
    def rules(self) -> list[RuleDetector]:
        """Enabled rule detectors, in file order (their index is the kernel's detector index)."""
        return [d for d in self.detectors if isinstance(d, RuleDetector) and d.enabled]

    @property
    def batch(self) -> list[BatchDetector]:
        """Enabled batch (model) detectors, in file order."""
        return [d for d in self.detectors if isinstance(d, BatchDetector) and d.enabled]


def _validate(model: type[BaseModel], data: Any, prefix: str, source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        loc, msg = first_error(e)
        key = f"{prefix}.{loc}" if loc else prefix
        raise ConfigError(f"{source}: {key}: {msg}") from e


def parse_pattern_config(data: Any, source: str = "<dict>") -> PatternConfig:
    """Validate an already-parsed pattern document; raise ``ConfigError`` naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping with {', '.join(_SECTIONS)}")
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"{source}: {key}: unknown section (known: {', '.join(_SECTIONS)})")
    features = _validate(FeatureParams, data.get("features") or {}, "features", source)
    raw = data.get("detectors") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: detectors: must be a mapping of name -> parameters")
    detectors: list[Detector] = []
    for name, body in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{source}: detectors.{name}: name must match {_NAME.pattern}")
        body = dict(body or {}) if isinstance(body, dict) or body is None else body
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: detectors.{name}: must be a mapping of parameters")
        type_name = body.pop("type", name)
        cls = DETECTOR_TYPES.get(type_name) if isinstance(type_name, str) else None
        if cls is None:
            known = ", ".join(sorted(DETECTOR_TYPES))
            raise ConfigError(f"{source}: detectors.{name}.type: unknown detector type {type_name!r} (known: {known})")
        params = _validate(cls.Params, body, f"detectors.{name}", source)
        det = cls(name, params)
        for param, problem in det.check(features):
            raise ConfigError(f"{source}: detectors.{name}.{param}: {problem}")
        detectors.append(det)
    return PatternConfig(features=features, detectors=tuple(detectors), source=source)


def load_pattern_config(path: str | Path = DEFAULT_PATH) -> PatternConfig:
    """Read and validate the pattern file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read pattern config: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    return parse_pattern_config(data, str(p))
