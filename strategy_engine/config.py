"""Settings of the strategy engine (prefix ``AITRADER_SE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase, metrics_port_field
from common.mcp_login import McpLoginSettings

__all__ = ["DEFAULT_STRATEGIES_FILE", "StrategySettings"]

DEFAULT_STRATEGIES_FILE = Path(__file__).resolve().parents[1] / "config" / "strategies.yml"
DEFAULT_PORTFOLIO_FILE = Path(__file__).resolve().parents[1] / "config" / "portfolio.yml"


class StrategySettings(SettingsBase, McpLoginSettings):
    """Where the broker's MCP server is, how fresh the account context must be, which strategies run."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_SE_", env_file=".env", extra="ignore", frozen=True)

    metrics_port: int = metrics_port_field()

    mcp_url: str = Field(
        "http://127.0.0.1:8765/mcp",
        description="Streamable-HTTP URL of the broker's MCP server (mock_mcp by default).",
    )
    mcp_auth_header: str = Field(
        "Authorization", description="HTTP header that carries mcp_auth_secret to a real broker's MCP server."
    )
    mcp_auth_secret: str = Field(
        "",
        repr=False,
        description="Value of mcp_auth_header on every MCP request (e.g. 'Bearer <token>'); empty = none.",
    )
    mcp_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Longest wait for one account refresh over MCP."
    )
    refresh_isolation: Literal["process", "thread"] = Field(
        "process",
        description="Where the account refresh's MCP work runs: a worker process (its CPU never holds the engine's "
        "GIL while signals wait) or a thread of the engine.",
    )
    gil_switch_interval_s: float = Field(
        0.0005, ge=0.0001, le=0.1,
        description="sys.setswitchinterval of the engine: how long the refresh thread may hold the GIL while "
        "signals wait (CPython's default is 0.005).",
    )
    refresh_s: float = Field(
        5.0, gt=0, le=3600, description="Background account-context refresh period (seconds)."
    )
    fill_refresh_delay_s: float = Field(
        0.05,
        ge=0,
        le=60,
        description="A fill schedules a refresh this long after it (bursts coalesce into one).",
    )
    min_refresh_interval_s: float = Field(
        1.0,
        ge=0,
        le=600,
        description="Fill-triggered refreshes come at most this often (fills apply optimistically between).",
    )
    fill_settle_s: float = Field(
        1.0,
        ge=0,
        le=600,
        description="Time the broker may take to apply a fill: a symbol with a fill seen this close to a "
        "refresh keeps its fill-derived position instead of the snapshot's.",
    )
    stale_after_s: float = Field(
        15.0, gt=0, le=86_400, description="Context older than this is stale: no new positions are opened."
    )
    strategies_path: Path = Field(DEFAULT_STRATEGIES_FILE, description="YAML file of the strategies to run.")
    portfolio_path: Path = Field(
        DEFAULT_PORTFOLIO_FILE,
        description="YAML file of the portfolio limits (risk, concentration, correlation, daily loss, drawdown).",
    )
    instruments_path: Path | None = Field(
        None, description="Instrument reference data (lot sizes); default config/instruments.yml."
    )
    fee_buffer_bps: float = Field(
        10.0, ge=0, le=10_000, description="Cash kept back from a buy's notional for fees (basis points)."
    )
    pending_ttl_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="An own intent with no fill or final report after this long stops counting as exposure.",
    )

    @field_validator("mcp_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

