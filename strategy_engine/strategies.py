"""Strategies from ``config/strategies.yml``: which signals each follows and how it sizes them.

A strategy follows one or more detectors (the pattern engine's detector names:
``momentum_burst``, ``mean_reversion``, ``breakout``, ``imbalance``) on a list of symbols
or ``"*"``. The file is validated at start: unknown keys, bad values, duplicate names
and enabled allocations summing above 1 raise ``ConfigError`` naming them.

Example::

    strategies:
      - name: momentum
        detectors: [momentum_burst]
        symbols: "*"                  # or [AAPL, MSFT]
        enabled: true
        allow_short: false
        allocation: 0.25              # fraction of equity this strategy risks from
        risk_per_trade: 0.02          # fraction of its allocation lost at the stop
        stop_k: 2.0                   # stop = max(stop_k * vol * sqrt(horizon_ticks),
        horizon_ticks: 20             #            stop_floor_bps * price / 10_000)
        stop_floor_bps: 10
        max_position_notional: "100000"   # |position| * price cap per symbol
        min_trade_fraction: 0.25      # add exposure only in steps of >= 25% of the target
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.config import ConfigError

__all__ = ["StrategyConfig", "StrategyRouter", "load_strategies", "parse_strategies"]


class StrategyConfig(BaseModel):
    """One strategy's routing and sizing parameters (immutable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    detectors: tuple[str, ...] = Field(min_length=1)
    symbols: tuple[str, ...] | Literal["*"] = "*"
    enabled: bool = True
    allow_short: bool = False
    allocation: float = Field(gt=0, le=1)
    risk_per_trade: float = Field(0.02, gt=0, le=1)
    stop_k: float = Field(2.0, gt=0, le=1000)
    horizon_ticks: int = Field(20, ge=1, le=1_000_000)
    stop_floor_bps: float = Field(10.0, gt=0, le=10_000)
    max_position_notional: Decimal = Field(gt=0, allow_inf_nan=False)
    min_trade_fraction: float = Field(0.25, ge=0, le=1)

    @field_validator("detectors", "symbols", mode="before")
    @classmethod
    def _listish(cls, v: object) -> object:
        if isinstance(v, str) and v != "*":
            return (v,)
        return v

    @field_validator("detectors")
    @classmethod
    def _detectors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not d for d in v):
            raise ValueError("detector names must be non-empty")
        return v


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategies: list[StrategyConfig]


def _where(loc: tuple, doc: dict) -> str:
    parts: list[str] = []
    strategies = doc.get("strategies") if isinstance(doc, dict) else None
    for i, p in enumerate(loc):
        if isinstance(p, int) and i > 0 and loc[i - 1] == "strategies":
            name = None
            if isinstance(strategies, list) and p < len(strategies) and isinstance(strategies[p], dict):
                name = strategies[p].get("name")
            parts[-1] += f"[{name!r}]" if name else f"[{p}]"
        else:
            parts.append(str(p))
    return ".".join(parts)


def parse_strategies(doc: object, source: str = "strategies") -> list[StrategyConfig]:
    """Validate a parsed document; raise ``ConfigError`` naming every bad or unknown key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'strategies' list")
    try:
        f = _File.model_validate(doc)
    except ValidationError as e:
        unknown = [_where(err["loc"], doc) for err in e.errors() if err["type"] == "extra_forbidden"]
        others = [
            f"{_where(err['loc'], doc)}: {err['msg']}"
            for err in e.errors()
            if err["type"] != "extra_forbidden"
        ]
        parts = []
        if unknown:
            parts.append("unknown keys: " + ", ".join(unknown))
        parts.extend(others)
        raise ConfigError(f"{source}: " + "; ".join(parts)) from e
    names = [s.name for s in f.strategies]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate strategy names: {', '.join(dupes)}")
    total = sum(s.allocation for s in f.strategies if s.enabled)
    if total > 1.0 + 1e-9:
        raise ConfigError(f"{source}: allocations of enabled strategies sum to {total:g} (> 1)")
    return list(f.strategies)


def load_strategies(path: Path | str) -> list[StrategyConfig]:
    """Read and validate a strategies YAML file."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"strategies file {p}: {e}") from e
    return parse_strategies(doc or {}, f"strategies file {p}")


@dataclass(frozen=True, slots=True)
class _Route:
    cfg: StrategyConfig
    symbols: frozenset[str] | None  # None = every symbol


class StrategyRouter:
    """Enabled strategies by detector; ``route(detector, symbol)`` is a dict lookup plus a set test."""

    def __init__(self, strategies: list[StrategyConfig]) -> None:
        self.strategies = [s for s in strategies if s.enabled]
        self._by_detector: dict[str, list[_Route]] = {}
        for s in self.strategies:
            syms = None if s.symbols == "*" else frozenset(s.symbols)
            for d in s.detectors:
                self._by_detector.setdefault(d, []).append(_Route(s, syms))

    def route(self, detector: str, symbol: str) -> list[StrategyConfig]:
        routes = self._by_detector.get(detector)
        if not routes:
            return []
        return [r.cfg for r in routes if r.symbols is None or symbol in r.symbols]
