"""Settings of the execution gateway (``AITRADER_EX_*``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase

__all__ = ["DEFAULT_RISK_FILE", "ExecutionSettings"]

DEFAULT_RISK_FILE = Path(__file__).resolve().parents[1] / "config" / "risk.yml"


class ExecutionSettings(SettingsBase):
    """Execution gateway / OMS settings."""

    model_config = SettingsConfigDict(
        env_prefix="AITRADER_EX_", env_file=".env", extra="ignore", frozen=True, validate_default=True
    )

    risk_file: Path = Field(DEFAULT_RISK_FILE, description="YAML of pre-trade limits (defaults + per-symbol).")
    instruments_file: Path | None = Field(
        None, description="Instrument lot/tick sizes; empty = config/instruments.yml."
    )
    venue: str = Field("simulator", description="Venue adapter orders are routed to (simulator).")
    slippage_bps: Decimal = Field(
        Decimal(1), ge=0, le=1000, description="Simulator: slippage against the order, basis points."
    )
    fee_bps: Decimal = Field(Decimal(1), ge=0, le=1000, description="Simulator: fee, basis points of notional.")
    min_fee: Decimal = Field(Decimal(0), ge=0, description="Simulator: minimum fee per fill (account currency).")
    tick_ring: int = Field(
        256, ge=1, le=1_000_000,
        description="Simulator: recent ticks kept per symbol to fill intents that arrive after their next tick.",
    )
    md_interval_ms: float = Field(
        5.0, ge=0, le=1000,
        description=(
            "Market data is read at most this often (ms) while no simulated order waits for a tick; "
            "intents and control commands are read at once, after the ticks published before them. 0 = every cycle."
        ),
    )
    known_ids_cache: int = Field(
        200_000, ge=1000, description="Client order ids remembered in memory (older ones are checked in the DB)."
    )
    db_retry_max_s: float = Field(
        2.0, gt=0, le=60, description="Longest back-off between retries while the database is unreachable."
    )

    @field_validator("slippage_bps", "fee_bps", "min_fee")
    @classmethod
    def _finite(cls, v: Decimal) -> Decimal:
        if not v.is_finite():
            raise ValueError("must be a finite decimal")
        return v
