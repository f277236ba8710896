"""What a backtest runs with: the live services' own settings, with overrides from a file or a payload.

A backtest config is a flat mapping of ``AITRADER_*`` setting names (the environment variables the
live services read) to values, e.g. ``AITRADER_SE_STRATEGIES_PATH``, ``AITRADER_EX_FEE_BPS``,
``AITRADER_REPLAY_BATCH_MAX``. Each is applied over the environment to the settings class that owns
it; a name no class owns is refused. So the same mapping given to a live pipeline (as its
environment) and to a backtest configures both the same way — which is what the parity test does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import CommonSettings, ConfigError, SettingsBase, env_name, load
from execution.config import ExecutionSettings
from mock_mcp.config import McpSettings
from pattern_engine.config import PatternEngineSettings
from strategy_engine.config import StrategySettings
from tick_replay.config import ReplaySettings

__all__ = ["BacktestSettings", "Settings", "config_digest", "load_overrides", "load_settings"]


class BacktestSettings(SettingsBase):
    """How a backtest samples its equity curve (prefix ``AITRADER_BACKTEST_``)."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_BACKTEST_", env_file=".env", extra="ignore", frozen=True)

    sample_s: float = Field(
        60.0, gt=0, le=86_400,
        description="Equity curve grid, seconds of market time: the curve holds the equity at the end of each "
        "interval; returns for Sharpe, Sortino and VaR are taken between grid points.",
    )


@dataclass(frozen=True)
class Settings:
    """Every settings object a backtest's services are built from."""

    common: CommonSettings
    pattern: PatternEngineSettings
    strategy: StrategySettings
    execution: ExecutionSettings
    mcp: McpSettings
    replay: ReplaySettings
    backtest: BacktestSettings


_CLASSES: dict[str, type[SettingsBase]] = {
    "common": CommonSettings, "pattern": PatternEngineSettings, "strategy": StrategySettings,
    "execution": ExecutionSettings, "mcp": McpSettings, "replay": ReplaySettings, "backtest": BacktestSettings,
}


def _fields_by_env(cls: type[SettingsBase]) -> dict[str, str]:
    out = {env_name(cls, f): f for f in cls.model_fields}
    for f, info in cls.model_fields.items():  # every alias (REDIS_URL and AITRADER_REDIS_URL)
        alias = info.validation_alias
        for a in getattr(alias, "choices", ()):
            out[str(a)] = f
    return out


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """The settings from the environment with ``overrides`` (setting name -> value) on top."""
    overrides = {str(k): v for k, v in (overrides or {}).items()}
    claimed: set[str] = set()
    built: dict[str, SettingsBase] = {}
    for attr, cls in _CLASSES.items():
        by_env = _fields_by_env(cls)
        mine = {by_env[k]: v for k, v in overrides.items() if k in by_env}
        claimed |= {k for k in overrides if k in by_env}
        built[attr] = load(cls, **mine)
    unknown = sorted(set(overrides) - claimed)
    if unknown:
        raise ConfigError(f"backtest config: unknown setting {unknown[0]!r} (expected an AITRADER_* name, "
                          "see docs/configuration.md)")
    return Settings(**built)  # type: ignore[arg-type]


def load_overrides(paths: list[str | Path]) -> dict[str, Any]:
    """Read config files (YAML mappings of setting name -> value); later files win."""
    out: dict[str, Any] = {}
    for p in paths:
        path = Path(p)
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"backtest config {path}: {e}") from e
        if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
            raise ConfigError(f"backtest config {path}: expected a mapping of AITRADER_* names to values")
        for k, v in doc.items():
            if isinstance(v, dict | list):
                raise ConfigError(f"backtest config {path}: {k} must be a single value")
            out[k] = v
    return out


def config_digest(overrides: Mapping[str, Any], files: list[str]) -> str:
    """SHA-256 of the overrides, the config files they name and the inputs: same digest, same backtest."""
    h = hashlib.sha256(json.dumps({"overrides": {k: str(v) for k, v in sorted(overrides.items())},
                                   "files": files}, sort_keys=True).encode())
    for v in sorted(str(v) for v in overrides.values()):
        p = Path(v)
        if p.suffix in (".yml", ".yaml") and p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
