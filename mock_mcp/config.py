"""Settings of the mock broker MCP server (prefix ``AITRADER_MCP_``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase, metrics_port_field

__all__ = ["DEFAULT_ACCOUNT_FILE", "McpSettings"]

DEFAULT_ACCOUNT_FILE = Path(__file__).resolve().parents[1] / "config" / "account.yml"


class McpSettings(SettingsBase):
    """Where the mock broker listens and how its simulated account is seeded."""

    model_config = SettingsConfigDict(
        env_prefix="AITRADER_MCP_", env_file=".env", extra="ignore", frozen=True
    )

    metrics_port: int = metrics_port_field()

    host: str = Field("127.0.0.1", description="Interface the MCP streamable-HTTP server binds to.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port of the MCP server (0 = any free port).")
    path: str = Field("/mcp", description="HTTP path of the MCP streamable-HTTP endpoint.")
    account_file: Path = Field(
        DEFAULT_ACCOUNT_FILE, description="YAML with the account's profile fields and optional seed holdings."
    )
    replay_page: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Entries per XRANGE page when rebuilding the account from ex:events.",
    )
    max_orders: int = Field(100_000, ge=100, description="Orders kept for get_orders (oldest dropped first).")
    max_trades: int = Field(100_000, ge=100, description="Trades kept for get_trades (oldest dropped first).")
    fee_bps: Decimal = Field(
        Decimal(1), ge=0, le=1000,
        description="Fee of the broker's own fills (orders placed through place_order), basis points of notional.",
    )
    marks_timeout_s: float = Field(
        0.5, gt=0, le=10, description="Longest wait for the gateway's marks hash when a tool is called."
    )
    shutdown_timeout_s: float = Field(
        3.0, gt=0, le=60, description="Longest graceful wait for open HTTP connections on stop."
    )
    seed: int | None = Field(
        None, ge=0, le=999_999,
        description="Generate a deterministic account (user id SIM<seed>, 1-4 holdings) from this seed; "
        "the account file must then list no holdings. Empty = the account file as written.",
    )
    api_key: str = Field(
        "", description="Api key the login tool accepts; set with api_secret to require a session token on "
        "every other tool. Empty = no sessions (tools answer anyone).",
    )
    api_secret: str = Field("", repr=False, description="Api secret the login tool accepts (with api_key).")
    token_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=7 * 86_400, description="Lifetime of an access token issued by login (seconds)."
    )

    @model_validator(mode="after")
    def _keys(self) -> McpSettings:
        if bool(self.api_key) != bool(self.api_secret):
            missing = "AITRADER_MCP_API_SECRET" if self.api_key else "AITRADER_MCP_API_KEY"
            raise ValueError(f"api_key and api_secret go together: {missing} is missing")
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v
