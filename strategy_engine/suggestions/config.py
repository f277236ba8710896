"""Settings of the suggestion job's LLM provider (prefix ``AITRADER_LLM_``).

The broker the job reads the account from is the strategy engine's (``AITRADER_SE_MCP_*``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase

__all__ = ["LlmSettings"]


class LlmSettings(SettingsBase):
    """Which LLM answers ``aitrader suggest`` / ``POST /suggestions``, and how the job bounds its context."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_LLM_", env_file=".env", extra="ignore", frozen=True)

    provider: Literal["offline", "openai"] = Field(
        "offline",
        description="offline: deterministic rules, no network (default); openai: an OpenAI-compatible "
        "chat-completions server (xAI Grok, OpenAI, a local server) at AITRADER_LLM_URL.",
    )
    url: str = Field(
        "",
        description="Base URL of the OpenAI-compatible API, e.g. https://api.x.ai/v1, https://api.openai.com/v1 or "
        "http://127.0.0.1:8080/v1; /chat/completions is appended unless the URL already ends with it.",
    )
    model: str = Field("", max_length=128, description="Model name sent to the provider (e.g. grok-4, gpt-4o-mini).")
    api_key: str = Field(
        "", repr=False, description="Bearer key of the provider; empty = no Authorization header. Never logged."
    )
    timeout_s: float = Field(60.0, gt=0, le=600, description="Longest wait for one chat-completions answer.")
    max_retries: int = Field(
        3, ge=0, le=10, description="Retries of one request after a 429, a 5xx, a timeout or a dropped connection."
    )
    backoff_s: float = Field(
        1.0, ge=0, le=60, description="First retry delay; doubles per retry (a Retry-After header is honoured)."
    )
    backoff_max_s: float = Field(20.0, ge=0, le=600, description="Longest delay between two retries.")
    json_mode: bool = Field(
        True,
        description="Ask for a JSON answer with response_format={'type': 'json_object'}; dropped automatically "
        "when the server refuses the parameter.",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature sent to the provider.")
    max_tokens: int = Field(2000, ge=64, le=32_000, description="Most tokens the provider may answer with.")
    max_signals: int = Field(
        200, ge=0, le=10_000, description="Recent pe:signals entries read into the context (XREVRANGE COUNT)."
    )
    max_suggestions: int = Field(10, ge=1, le=50, description="Most suggestions one run may return.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")
