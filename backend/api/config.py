"""Settings of the API (``AITRADER_API_*``) and of its first admin (``AITRADER_ADMIN_*``).

The JWT secret is required: the API refuses to start without one, with a short one (fewer
than 32 bytes) or with an obvious placeholder. The first admin comes from the environment
and is created at start when no admin exists.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase

__all__ = ["MIN_PASSWORD_LEN", "MIN_SECRET_BYTES", "AdminSettings", "ApiSettings", "weak_password_problem"]

MIN_SECRET_BYTES = 32
MIN_PASSWORD_LEN = 12
MAX_ACCESS_TTL_S = 900  # RELIABILITY F3: access tokens live at most 15 minutes
# Words that mark a value someone forgot to replace (matched inside the value, case-insensitively).
_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "placeholder", "secret", "password", "example",
                      "your-", "replace")


def _placeholder_word(value: str) -> str | None:
    low = value.lower()
    return next((w for w in _PLACEHOLDER_WORDS if w in low), None)


def weak_password_problem(password: str) -> str | None:
    """Why ``password`` is too weak for an account created from configuration, or None."""
    if len(password) < MIN_PASSWORD_LEN:
        return f"must be at least {MIN_PASSWORD_LEN} characters"
    word = _placeholder_word(password)
    if word is not None:
        return f"looks like a placeholder (contains {word!r}); set a real password"
    if len(set(password)) < 6:
        return "has too few distinct characters"
    return None


class ApiSettings(SettingsBase):
    """The HTTP API (``python -m backend.api``)."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_API_", env_file=".env", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="Address the API listens on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port the API listens on.")
    jwt_secret: str = Field(
        description=(
            f"HMAC key signing the API's tokens (HS256). Required; at least {MIN_SECRET_BYTES} bytes, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`. Changing it logs everyone out."
        ),
    )
    access_ttl_s: int = Field(
        900, ge=30, le=MAX_ACCESS_TTL_S, description="Lifetime of an access token in seconds (at most 900)."
    )
    refresh_ttl_s: int = Field(
        8 * 3600, ge=60, le=30 * 86400,
        description="Lifetime of a refresh token in seconds; each is single use and rotated on refresh.",
    )
    cors_origins: str = Field(
        "",
        description=(
            "Comma-separated origins a browser may call the API from (e.g. `http://localhost:5173`); "
            "empty = none. `*` is refused."
        ),
    )
    login_rate_limit: int = Field(
        5, ge=1, le=10_000, description="Login attempts allowed per client address and username per window."
    )
    login_rate_window_s: int = Field(60, ge=1, le=86_400, description="The login rate limit's window in seconds.")
    suggest_rate_limit: int = Field(
        10, ge=1, le=10_000,
        description="Suggestion runs (POST /suggestions) allowed per user per window: each may call a paid LLM.",
    )
    suggest_rate_window_s: int = Field(
        60, ge=1, le=86_400, description="The suggestion rate limit's window in seconds."
    )
    order_rate_limit: int = Field(
        30, ge=1, le=100_000,
        description="Manual orders (POST /orders) allowed per user per window; cancels and the kill switch are never "
                    "limited.",
    )
    order_rate_window_s: int = Field(60, ge=1, le=86_400, description="The order rate limit's window in seconds.")
    control_timeout_s: float = Field(
        5.0, gt=0, le=60, description="How long a kill-switch request waits for the gateway's answer."
    )
    control_via: str = Field(
        "auto",
        description=(
            "How kill-switch requests reach the gateway: auto (the bus, the database's control_requests "
            "when Redis is unreachable), bus or db."
        ),
    )

    model_upload_max_mb: int = Field(
        64, ge=1, le=4096, description="Largest model file POST /models accepts, in MiB (larger: 413)."
    )
    allow_pickle_uploads: bool = Field(
        False,
        description=(
            "Accept scikit-learn (.pkl/.joblib) and PyTorch (.pt/.pth) files on POST /models. Loading them runs "
            "code from the file on the API's host: off, only .onnx uploads are accepted."
        ),
    )
    metrics_public: bool = Field(
        False,
        description=(
            "Serve GET /metrics without a token (for a Prometheus scraper). Off: /metrics needs the viewer "
            "role. Turn on only where the API's port is reachable from a private network alone."
        ),
    )
    ws_tick_rate_hz: float = Field(
        4.0, ge=0.1, le=100,
        description=(
            "WebSocket /ws: updates per second per symbol on the ticks channel at most (the latest tick of each "
            "symbol is sent at this rate; ticks in between are skipped)."
        ),
    )
    ws_client_queue: int = Field(
        1000, ge=10, le=100_000,
        description=(
            "WebSocket /ws: messages waiting for one client at most; a client that falls this far behind is "
            "closed (code 4408) so it never slows the others."
        ),
    )
    ws_send_timeout_s: float = Field(
        5.0, ge=0.1, le=300,
        description=(
            "WebSocket /ws: seconds one message may wait for the client's socket to take it; a client that reads "
            "no faster is closed (code 4408), however few messages wait for it."
        ),
    )
    ws_pnl_interval_s: float = Field(
        1.0, ge=1.0, le=60, description="WebSocket /ws: seconds between P&L updates on the pnl channel (at least 1)."
    )
    panel_dir: str = Field(
        "",
        description=(
            "Folder of the built control panel (`npm run build` in frontend/) served at `/ui/`, with `/` "
            "redirecting there; empty = the checkout's `frontend/dist`. Nothing is served when the folder holds "
            "no index.html."
        ),
    )
    log_json: bool = Field(
        False,
        description=(
            "Log one JSON object per line (request id, route, status, duration for each request) instead "
            "of text lines and uvicorn's access log."
        ),
    )

    @field_validator("jwt_secret")
    @classmethod
    def _secret(cls, v: str) -> str:
        if len(v.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (got {len(v.encode())})")
        word = _placeholder_word(v)
        if word is not None:
            raise ValueError(f"looks like a placeholder (contains {word!r}); generate a random secret")
        if len(set(v)) < 10:
            raise ValueError("has too few distinct characters to be a random secret")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: str) -> str:
        for origin in (o.strip() for o in v.split(",") if o.strip()):
            if origin == "*":
                raise ValueError("'*' is refused: list the origins allowed")
            if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
                raise ValueError(f"{origin!r} is not an origin like https://host[:port]")
        return v

    @field_validator("control_via")
    @classmethod
    def _via(cls, v: str) -> str:
        if v not in ("auto", "bus", "db"):
            raise ValueError("must be auto, bus or db")
        return v

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


class AdminSettings(SettingsBase):
    """The first admin, created at the API's start when the database holds no admin."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_ADMIN_", env_file=".env", extra="ignore", frozen=True)

    username: str = Field(
        "", max_length=48, description="User name of the first admin (created at start when no admin exists)."
    )
    password: str = Field(
        "",
        description=f"Password of the first admin (at least {MIN_PASSWORD_LEN} characters; only read to create it).",
    )

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        from backend.api.users import username_problem

        if v:
            bad = username_problem(v)
            if bad is not None:
                raise ValueError(bad)
        return v

    @field_validator("password")
    @classmethod
    def _password(cls, v: str, info: ValidationInfo) -> str:
        username = info.data.get("username", "")
        if not v:
            if username:
                raise ValueError("required when AITRADER_ADMIN_USERNAME is set")
            return v
        if not username:
            raise ValueError("set AITRADER_ADMIN_USERNAME too (the first admin needs both)")
        bad = weak_password_problem(v)
        if bad is not None:
            raise ValueError(bad)
        return v
