"""Settings of the execution gateway (``AITRADER_EX_*``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase, metrics_port_field
from common.mcp_login import McpLoginSettings

__all__ = ["DEFAULT_RISK_FILE", "ExecutionSettings"]

DEFAULT_RISK_FILE = Path(__file__).resolve().parents[1] / "config" / "risk.yml"


class ExecutionSettings(SettingsBase, McpLoginSettings):
    """Execution gateway / OMS settings."""

    model_config = SettingsConfigDict(
        env_prefix="AITRADER_EX_", env_file=".env", extra="ignore", frozen=True, validate_default=True
    )

    metrics_port: int = metrics_port_field()

    risk_file: Path = Field(DEFAULT_RISK_FILE, description="YAML of pre-trade limits (defaults + per-symbol).")
    instruments_file: Path | None = Field(
        None, description="Instrument lot/tick sizes; empty = config/instruments.yml."
    )
    venue: str = Field(
        "simulator",
        description="Venue adapter orders are routed to: simulator (in process) or mcp (a broker's MCP server).",
    )
    mcp_url: str = Field(
        "", description="Venue mcp: streamable-HTTP URL of the broker's MCP server (required with venue mcp)."
    )
    mcp_auth_header: str = Field("Authorization", description="Venue mcp: HTTP header carrying mcp_auth_secret.")
    mcp_auth_secret: str = Field(
        "", repr=False, description="Venue mcp: value of mcp_auth_header on every request; empty = none."
    )
    mcp_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Venue mcp: longest wait for one broker call (place, cancel, poll)."
    )
    mcp_poll_ms: float = Field(
        50.0, ge=5, le=60_000, description="Venue mcp: how often the broker's orders and trades are polled for fills."
    )
    slippage_bps: Decimal = Field(
        Decimal(1), ge=0, le=1000, description="Simulator: slippage against the order, basis points."
    )
    fee_bps: Decimal = Field(
        Decimal(1), ge=0, le=1000,
        description="Simulator: fee, basis points of notional (venue mcp: the pre-trade estimate of the broker's fee).",
    )
    min_fee: Decimal = Field(
        Decimal(0), ge=0, description="Simulator: minimum fee per fill (venue mcp: used by the pre-trade estimate)."
    )
    sim_latency_ms: float = Field(
        0.0, ge=0, le=60_000,
        description=(
            "Simulator: order entry latency in market time; an order works only on ticks at least this long "
            "after its decision tick (0 = the next tick)."
        ),
    )
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
    control_poll_ms: float = Field(
        100.0, ge=5, le=60_000,
        description=(
            "How often the gateway reads control_requests (kill switch and cancel commands written to the "
            "database by `aitrader kill|cancel --via db`, or when Redis is down)."
        ),
    )

    @field_validator("mcp_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


    @field_validator("slippage_bps", "fee_bps", "min_fee")
    @classmethod
    def _finite(cls, v: Decimal) -> Decimal:
        if not v.is_finite():
            raise ValueError("must be a finite decimal")
        return v
