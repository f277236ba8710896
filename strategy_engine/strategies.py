"""Strategies from ``config/strategies.yml``: plugins that turn signals into target positions.

A strategy has a ``type`` (a class registered in ``STRATEGY_TYPES`` with
``@register_strategy``, like the pattern engine's detectors), follows *sources* — the
pattern engine's detector names (``detectors:``) and/or model ids (``models:``, matched
against ``Signal.model_id``, so every detector that runs the model feeds it) — on a list of
symbols or ``"*"``, and has its own allocation, limits, sizing model, stops and on/off
switch. The file is validated at start: unknown keys (common or of the type), bad values,
duplicate names and enabled allocations summing above 1 raise ``ConfigError`` naming them.

Shipped types (see docs/strategies.md):

- ``momentum`` — trend following: trades in the direction of the signal (the move).
- ``mean_reversion`` — fades stretches: trades the detector's fade side, not beyond ``max_strength``.
- ``breakout`` — trades a break of the recent range in its direction.
- ``imbalance`` — order-book (DOM) imbalance: trades the heavy side.
- ``model`` — trades a model's class probability (``Signal.strength``) with entry, exit and
  hold thresholds.
- ``follow`` — the default: trades every signal's side (what every strategy did before types).

Example::

    strategies:
      - name: momentum
        type: momentum
        detectors: [momentum_burst]
        symbols: "*"                  # or [AAPL, MSFT]
        enabled: true
        allow_short: false
        allocation: 0.25              # fraction of equity this strategy sizes from
        risk_per_trade: 0.02          # fixed_fractional: fraction of its allocation lost at the stop
        stop_k: 2.0                   # stop = max(stop_k * vol * sqrt(horizon_ticks),
        horizon_ticks: 20             #            stop_floor_bps * price / 10_000)
        stop_floor_bps: 10
        max_position_notional: "100000"   # |position| * price cap per symbol
        min_trade_fraction: 0.25      # add exposure only in steps of >= 25% of the target
        min_strength: 0.0             # (momentum) ignore weaker signals
        sizing: {model: fixed_fractional}  # | vol_target | fixed_notional | kelly (strategy_engine/sizing.py)
        stops: {stop_loss: true, take_profit_r: 2.0, trailing: false}       # strategy_engine/brackets.py
        fusion: {window_ms: 0}        # several sources: strategy_engine/fusion.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.config import ConfigError
from common.messages import Side, Signal, TimeInForce

__all__ = [
    "STRATEGY_TYPES",
    "Decision",
    "FusionConfig",
    "SizingConfig",
    "StopsConfig",
    "Strategy",
    "StrategyConfig",
    "StrategyRouter",
    "load_strategies",
    "parse_strategies",
    "register_strategy",
]

_NAME = r"^[A-Za-z0-9_.:-]+$"
_PARAMS_ERR = "invalid type params "


# -- sub-sections ------------------------------------------------------------------------------
class SizingConfig(BaseModel):
    """``sizing:`` — how a target position is computed (formulas in ``strategy_engine/sizing.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["fixed_fractional", "vol_target", "fixed_notional", "kelly"] = "fixed_fractional"
    # vol_target: |position| * vol * sqrt(vol_horizon_ticks) = target_vol * equity * allocation
    target_vol: float = Field(0.01, gt=0, le=10)
    vol_horizon_ticks: int = Field(100, ge=1, le=10_000_000)
    max_leverage: float = Field(1.0, gt=0, le=100)  # vol_target / kelly: notional <= this * equity * allocation
    # fixed_notional: |position| * price = notional
    notional: Decimal | None = Field(None, gt=0, allow_inf_nan=False)
    # kelly: f = min(kelly_fraction * (p - (1 - p) / b), kelly_cap); notional = f * equity * allocation
    win_probability: float | None = Field(None, gt=0, lt=1)  # default for the model type: the signal's P
    payoff_ratio: float | None = Field(None, gt=0, le=1000)  # default: take_profit_r of the stops
    kelly_fraction: float = Field(0.5, gt=0, le=1)
    kelly_cap: float = Field(0.25, gt=0, le=1)

    @model_validator(mode="after")
    def _needs(self) -> SizingConfig:
        if self.model == "fixed_notional" and self.notional is None:
            raise ValueError("sizing.model fixed_notional needs sizing.notional")
        return self


class StopsConfig(BaseModel):
    """``stops:`` — protective orders sent when an entry fills (``strategy_engine/brackets.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_loss: bool = False  # STOP at entry -/+ the sizing stop distance
    take_profit_r: float = Field(0.0, ge=0, le=1000)  # LIMIT at entry +/- r * stop distance; 0 = none
    trailing: bool = False  # the stop follows the best mark at the stop distance (needs stop_loss)
    trail_step_bps: float = Field(5.0, ge=0, le=10_000)  # move the stop only by at least this much
    tif: Literal[TimeInForce.GTC, TimeInForce.DAY] = TimeInForce.GTC

    @property
    def any(self) -> bool:
        return self.stop_loss or self.take_profit_r > 0

    @model_validator(mode="after")
    def _trail(self) -> StopsConfig:
        if self.trailing and not self.stop_loss:
            raise ValueError("stops.trailing needs stops.stop_loss: true")
        return self


class FusionConfig(BaseModel):
    """``fusion:`` — several sources on one symbol within ``window_ms`` (``strategy_engine/fusion.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_ms: int = Field(0, ge=0, le=86_400_000)  # 0: every signal is decided alone
    mode: Literal["any", "majority", "unanimous", "veto"] = "any"
    conflict: Literal["skip", "net", "strongest"] = "skip"
    vetoers: tuple[str, ...] = ()  # mode veto: these sources only block (an opposite vote), never trade
    weights: dict[str, float] = {}  # per source, for conflict net / strongest (default 1)

    @model_validator(mode="after")
    def _veto(self) -> FusionConfig:
        if self.mode == "veto" and not self.vetoers:
            raise ValueError("fusion.mode veto needs fusion.vetoers (the sources that may block)")
        if any(w <= 0 for w in self.weights.values()):
            raise ValueError("fusion.weights must be > 0")
        return self


# -- strategies --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy wants after one (fused) signal.

    ``action``: ``target`` (a position in ``side``, sized), ``flatten`` (close the position)
    or ``skip`` (nothing; ``reason`` says why). ``p_win`` is the win probability for Kelly
    sizing when the strategy has one (the model's probability), else None."""

    action: Literal["target", "flatten", "skip"]
    side: Side
    reason: str = ""
    p_win: float | None = None


class Strategy:
    """A strategy type. Subclasses set ``type_name`` and ``Params`` and implement ``decide``.

    ``decide`` runs once per signal (after fusion) on the hot path: dict lookups and
    comparisons, no I/O. ``position`` is the account's signed net position in the symbol
    (confirmed plus own intents in flight)."""

    type_name: ClassVar[str] = ""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, cfg: StrategyConfig) -> None:
        self.cfg = cfg
        self.p = cfg.params

    def decide(self, sig: Signal, position: Decimal) -> Decision:
        raise NotImplementedError


STRATEGY_TYPES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available as ``type: <cls.type_name>``."""
    if not cls.type_name or cls.type_name in STRATEGY_TYPES:
        raise ValueError(f"strategy type {cls.type_name!r} empty or registered twice")
    STRATEGY_TYPES[cls.type_name] = cls
    return cls


class _StrengthParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_strength: float = Field(0.0, ge=0, le=1e12)  # signals weaker than this are skipped


@register_strategy
class Follow(Strategy):
    """Trade every signal's side (the behaviour of a strategy without a type); skip signals weaker
    than ``min_strength``. The rule types below trade their detector's side the same way."""

    type_name = "follow"
    Params = _StrengthParams

    def decide(self, sig: Signal, position: Decimal) -> Decision:
        if sig.strength < self.p.min_strength:
            return Decision("skip", sig.side, "weak_signal")
        return Decision("target", sig.side)


@register_strategy
class Momentum(Follow):
    """Trend following: go with the move (momentum_burst's side is the move's); strength in vol units."""

    type_name = "momentum"


@register_strategy
class MeanReversion(Follow):
    """Fade a stretch from the mean (the detector's side is already the fade); skip moves beyond ``max_strength``."""

    type_name = "mean_reversion"

    class Params(_StrengthParams):
        max_strength: float = Field(0.0, ge=0, le=1e12)  # 0 = no cap: a bigger |z| is a trend, not a stretch

    def decide(self, sig: Signal, position: Decimal) -> Decision:
        if self.p.max_strength and sig.strength > self.p.max_strength:
            return Decision("skip", sig.side, "too_strong")
        return super().decide(sig, position)


@register_strategy
class Breakout(Follow):
    """Trade a break of the recent high / low in its direction (strength: the break size)."""

    type_name = "breakout"


@register_strategy
class Imbalance(Follow):
    """Order-book (DOM) imbalance: trade the heavy side when |imbalance| (the strength, 0..1) is large enough."""

    type_name = "imbalance"


@register_strategy
class ModelStrategy(Strategy):
    """Trade a classifier's probability (``Signal.strength`` = P(signal side), in [0, 1]).

    With the position ``pos`` in the symbol and ``P`` the probability of the signal's side:

    - opposite position and ``P >= exit_threshold``: reverse when ``P >= enter_threshold`` (and a
      short is allowed for a SELL), else flatten;
    - same-side position and ``P < hold_threshold``: flatten (conviction faded);
    - otherwise ``P >= enter_threshold``: target a position on the signal's side (Kelly uses P);
    - otherwise skip (``below_threshold``).

    The model detector fires only when P reaches its own threshold (config/pattern.yml), so a
    probability below that is never seen: ``hold_threshold`` acts only between the two."""

    type_name = "model"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        enter_threshold: float = Field(0.6, gt=0, le=1)
        exit_threshold: float = Field(0.6, gt=0, le=1)
        hold_threshold: float = Field(0.0, ge=0, le=1)  # 0 = off

    def decide(self, sig: Signal, position: Decimal) -> Decision:
        p = sig.strength
        if not 0.0 <= p <= 1.0:
            return Decision("skip", sig.side, "not_a_probability")
        d = int(sig.side)
        held = position * d
        pp = self.p
        if held < 0:
            if p >= pp.exit_threshold:
                if p >= pp.enter_threshold and (sig.side == Side.BUY or self.cfg.allow_short):
                    return Decision("target", sig.side, p_win=p)
                return Decision("flatten", sig.side, "exit")
            return Decision("skip", sig.side, "below_threshold")
        if held > 0 and p < pp.hold_threshold:
            return Decision("flatten", sig.side, "hold_lost")
        if p >= pp.enter_threshold:
            return Decision("target", sig.side, p_win=p)
        return Decision("skip", sig.side, "below_threshold")


# -- configuration -----------------------------------------------------------------------------
_COMMON_KEYS: frozenset[str] = frozenset()  # filled below from StrategyConfig.model_fields


class StrategyConfig(BaseModel):
    """One strategy: routing, limits, sizing, stops, fusion, and its type's params (immutable).

    The type's parameters are written flat next to the common keys (``min_strength: 1.5``)
    and validated by the type's ``Params`` model: a key neither common nor the type's is
    refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=_NAME)
    type: str = "follow"
    detectors: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # model ids (Signal.model_id)
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
    sizing: SizingConfig = SizingConfig()
    stops: StopsConfig = StopsConfig()
    fusion: FusionConfig = FusionConfig()
    params: Any = None  # the type's Params instance (filled from the flat keys)

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "params" in data and not isinstance(data["params"], dict):
            return data  # already built (model_copy / re-validation)
        typ = data.get("type", "follow")
        klass = STRATEGY_TYPES.get(typ) if isinstance(typ, str) else None
        if klass is None:
            return data  # the type validator names the bad type
        own = set(klass.Params.model_fields)
        rest = {k: v for k, v in data.items() if k not in own or k in _COMMON_KEYS}
        given = dict(data.get("params") or {})
        given.update({k: v for k, v in data.items() if k in own and k not in _COMMON_KEYS})
        rest["params"] = given
        return rest

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in STRATEGY_TYPES:
            raise ValueError(f"unknown strategy type {v!r} (known: {', '.join(sorted(STRATEGY_TYPES))})")
        return v

    @field_validator("detectors", "models", "symbols", mode="before")
    @classmethod
    def _listish(cls, v: object) -> object:
        if isinstance(v, str) and v != "*":
            return (v,)
        return v

    @field_validator("detectors", "models")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not d for d in v):
            raise ValueError("detector / model names must be non-empty")
        return v

    @model_validator(mode="after")
    def _check(self) -> StrategyConfig:
        if not self.detectors and not self.models:
            raise ValueError("detectors: a strategy needs at least one detector or model to follow")
        if not isinstance(self.params, BaseModel):
            klass = STRATEGY_TYPES[self.type]
            try:
                params = klass.Params.model_validate(self.params or {})
            except ValidationError as e:  # parse_strategies reports these by key (_validate_params)
                raise ValueError(f"{_PARAMS_ERR}{e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
            object.__setattr__(self, "params", params)
        sz = self.sizing
        if sz.model == "kelly":
            if sz.win_probability is None and self.type != "model":
                raise ValueError("sizing.model kelly needs sizing.win_probability (only type model has its own)")
            if sz.payoff_ratio is None and not self.stops.take_profit_r:
                raise ValueError("sizing.model kelly needs sizing.payoff_ratio or stops.take_profit_r")
        srcs = set(self.sources)
        bad = [s for s in (*self.fusion.vetoers, *self.fusion.weights) if s not in srcs]
        if bad:
            raise ValueError(f"fusion names sources the strategy does not follow: {', '.join(bad)}")
        return self

    @property
    def sources(self) -> tuple[str, ...]:
        """Detector names and model ids this strategy follows (fusion votes are keyed by them)."""
        return self.detectors + self.models

    def build(self) -> Strategy:
        return STRATEGY_TYPES[self.type](self)


_COMMON_KEYS = frozenset(StrategyConfig.model_fields)


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
        elif p == "params" and i >= 2 and loc[i - 2] == "strategies":
            continue  # the type's params are written flat
        else:
            parts.append(str(p))
    return ".".join(parts)


def _validate_params(doc: dict) -> list[str]:
    """Errors of each strategy's type params (validated after the common keys), located by name."""
    errs: list[str] = []
    for i, s in enumerate(doc.get("strategies") or []):
        if not isinstance(s, dict):
            continue
        klass = STRATEGY_TYPES.get(s.get("type", "follow")) if isinstance(s.get("type", "follow"), str) else None
        if klass is None:
            continue
        own = {k: v for k, v in s.items() if k in klass.Params.model_fields and k not in _COMMON_KEYS}
        try:
            klass.Params.model_validate(own)
        except ValidationError as e:
            for err in e.errors():
                errs.append(f"{_where(('strategies', i, *err['loc']), doc)}: {err['msg']}")
    return errs


def parse_strategies(doc: object, source: str = "strategies") -> list[StrategyConfig]:
    """Validate a parsed document; raise ``ConfigError`` naming every bad or unknown key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'strategies' list")
    param_errs = _validate_params(doc)
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
        parts.extend(o for o in others if _PARAMS_ERR not in o)
        parts.extend(param_errs)
        raise ConfigError(f"{source}: " + "; ".join(parts)) from e
    if param_errs:
        raise ConfigError(f"{source}: " + "; ".join(param_errs))
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
    """Strategies by source; ``route(detector, symbol, model_id)`` is dict lookups plus set tests.

    Holds every configured strategy; ``enabled`` starts from the file and is switched at run
    time (``set_enabled``: ``aitrader strategies enable|disable``). Disabled strategies are not routed."""

    def __init__(self, strategies: list[StrategyConfig]) -> None:
        self.all: dict[str, StrategyConfig] = {s.name: s for s in strategies}
        self.enabled: dict[str, bool] = {s.name: s.enabled for s in strategies}
        self._build()

    def _build(self) -> None:
        self._by_source: dict[str, list[_Route]] = {}
        for s in self.all.values():
            if not self.enabled[s.name]:
                continue
            syms = None if s.symbols == "*" else frozenset(s.symbols)
            for d in s.sources:
                self._by_source.setdefault(d, []).append(_Route(s, syms))

    @property
    def strategies(self) -> list[StrategyConfig]:
        """The enabled strategies."""
        return [s for s in self.all.values() if self.enabled[s.name]]

    def enable_problem(self, name: str) -> str:
        """Why ``name`` cannot be switched on now ("" if it can): unknown, or allocations would exceed 1."""
        if name not in self.all:
            return f"unknown strategy {name!r} (configured: {', '.join(sorted(self.all))})"
        total = sum(s.allocation for s in self.all.values() if self.enabled[s.name] or s.name == name)
        if total > 1.0 + 1e-9:
            return f"allocations of enabled strategies would sum to {total:g} (> 1): disable another first"
        return ""

    def set_enabled(self, name: str, on: bool) -> bool:
        """Switch one strategy; False when it is not configured."""
        if name not in self.all:
            return False
        self.enabled[name] = on
        self._build()
        return True

    def route(self, detector: str, symbol: str, model_id: str = "") -> list[StrategyConfig]:
        routes = self._by_source.get(detector)
        if model_id:
            by_model = self._by_source.get(model_id)
            if by_model:
                routes = by_model if not routes else routes + [r for r in by_model if r not in routes]
        if not routes:
            return []
        return [r.cfg for r in routes if r.symbols is None or symbol in r.symbols]

    @staticmethod
    def source_of(cfg: StrategyConfig, detector: str, model_id: str) -> str:
        """The source name a signal votes under in ``cfg``'s fusion (its model id when followed by model)."""
        return model_id if model_id and model_id in cfg.models else detector


Factory = Callable[[StrategyConfig], Strategy]
