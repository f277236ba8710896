"""Settings of the tick replayer (env prefix ``AITRADER_REPLAY_``); the CLI flags override them."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase

__all__ = ["ReplaySettings", "parse_speed"]


def parse_speed(value: Any) -> float | None:
    """``"max"`` / empty / None → None (as fast as possible); otherwise a float > 0."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "max", "inf", "none"):
            return None
        value = text.removesuffix("x")
    speed = float(value)
    if not speed > 0 or speed == float("inf"):
        raise ValueError("speed must be 'max' or a number > 0")
    return speed


class ReplaySettings(SettingsBase):
    """Defaults of ``python -m tick_replay`` / ``aitrader replay``."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_REPLAY_", env_file=".env", extra="ignore", frozen=True)

    speed: float | None = Field(
        None, description="Pace: 'max' (as fast as possible) or a multiple of real time, e.g. 1 or 10."
    )
    batch_max: int = Field(256, ge=1, le=100_000, description="Most ticks in one md:ticks stream entry.")
    synthetic_ticks: int = Field(100_000, ge=0, description="Ticks the synthetic source makes when no file is given.")
    synthetic_symbols: int = Field(4, ge=1, le=10_000, description="Symbols of the synthetic source (SYNA, SYNB, …).")
    synthetic_seed: int = Field(7, description="Seed of the synthetic source (same seed → same ticks).")
    progress: bool = Field(True, description="Show a progress bar on stderr (only when it is a terminal).")

    @field_validator("speed", mode="before")
    @classmethod
    def _speed(cls, v: Any) -> float | None:
        return parse_speed(v)
