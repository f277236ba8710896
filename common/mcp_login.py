"""The broker-login settings the MCP client's users share (strategy engine, gateway's mcp venue).

``McpLoginSettings`` is a field mixin: a service's settings class inherits it beside
``SettingsBase`` and its own ``env_prefix`` names the variables (``AITRADER_SE_MCP_API_KEY``,
``AITRADER_EX_MCP_API_KEY`` ...). The checks name the variables with that prefix.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

__all__ = ["McpLoginSettings"]


class McpLoginSettings(BaseModel):
    mcp_api_key: str = Field(
        "",
        description="Api key for the broker's login tool; with MCP_API_SECRET the client logs in, sends the session "
        "token on every call, logs in again when it expires and stores it encrypted (needs "
        "AITRADER_BROKER_TOKEN_KEY). Empty = no login.",
    )
    mcp_api_secret: str = Field("", repr=False, description="Api secret for the login tool (with mcp_api_key).")
    mcp_broker: str = Field(
        "mock", min_length=1, max_length=64, description="Name of the broker: the stored session token's row."
    )
    mcp_login_tool: str = Field("login", min_length=1, description="Name of the broker's login tool.")
    mcp_auth_format: str = Field(
        "token {api_key}:{access_token}",
        description="Value of mcp_auth_header after a login ({api_key} and {access_token} are filled in).",
    )

    @model_validator(mode="after")
    def _login(self) -> Any:
        prefix = str(self.model_config.get("env_prefix", ""))
        if bool(self.mcp_api_key) != bool(self.mcp_api_secret):
            missing = f"{prefix}MCP_API_SECRET" if self.mcp_api_key else f"{prefix}MCP_API_KEY"
            raise ValueError(f"mcp_api_key and mcp_api_secret go together: {missing} is missing")
        if self.mcp_api_key and getattr(self, "mcp_auth_secret", ""):
            raise ValueError("set either mcp_auth_secret (a fixed token) or mcp_api_key/mcp_api_secret (a login)")
        if "{access_token}" not in self.mcp_auth_format:
            raise ValueError("mcp_auth_format must contain {access_token}")
        return self
