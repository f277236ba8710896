"""Settings of the pattern engine service (environment prefix ``AITRADER_PE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import ConfigError, SettingsBase, env_name, metrics_port_field

__all__ = ["DEFAULT_PATTERN_PATH", "PatternEngineSettings"]

# Kept here, not in pattern_config, so reading the settings never imports numba.
DEFAULT_PATTERN_PATH = Path(__file__).resolve().parents[1] / "config" / "pattern.yml"


class PatternEngineSettings(SettingsBase):
    """Which shards to consume, where the pattern file is, how much to pre-allocate."""

    model_config = SettingsConfigDict(
        env_prefix="AITRADER_PE_", env_file=".env", extra="ignore", frozen=True, validate_default=True
    )

    metrics_port: int = metrics_port_field()

    shards: str = Field(
        "all",
        description="Tick shards to consume: 'all' (0..AITRADER_SHARDS-1) or a comma list such as '0,2'.",
    )
    config: Path = Field(
        DEFAULT_PATTERN_PATH,
        description="Pattern file (features and detectors), default config/pattern.yml of the checkout.",
    )
    standby: bool = Field(
        False,
        description="Share these shards' consumer group with the other engines started on the same shards with "
        "standby on: the one holding the lease (pe:lease:<shards>) reads, the others stand by and one takes over "
        "within AITRADER_PE_LEASE_MS when it stops or dies (claiming what it left pending; features start cold).",
    )
    lease_ms: int = Field(
        3000, ge=300, le=60_000,
        description="Standby mode: the lease's time to live; the holder renews it every third of it and stops "
        "committing when it could not renew for two thirds of it.",
    )
    symbol_capacity: int = Field(
        256, ge=1, le=10_000_000, description="Symbols pre-allocated in the feature arrays (they grow by doubling)."
    )

    @field_validator("shards")
    @classmethod
    def _shards(cls, v: str) -> str:
        v = v.strip().lower()
        if v == "all":
            return v
        parts = [p.strip() for p in v.split(",")]
        if not parts or not all(p.isdigit() for p in parts):
            raise ValueError("must be 'all' or a comma list of shard numbers")
        if len(set(parts)) != len(parts):
            raise ValueError("lists a shard twice")
        return ",".join(str(int(p)) for p in parts)

    def shard_list(self, total: int) -> list[int]:
        """The shard numbers to consume given ``total`` shards; ConfigError if one is out of range."""
        if self.shards == "all":
            return list(range(total))
        shards = [int(p) for p in self.shards.split(",")]
        bad = [s for s in shards if s >= total]
        if bad:
            raise ConfigError(
                f"invalid setting {env_name(type(self), 'shards')}: shard {bad[0]} out of range "
                f"(AITRADER_SHARDS={total}: 0..{total - 1})"
            )
        return shards
