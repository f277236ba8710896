"""Typed, frozen settings from the environment and ``.env``; bad config fails fast naming the key.

Every service composes ``CommonSettings`` (the bus, the database, paths) with its own
settings class (prefix ``AITRADER_<SERVICE>_``). ``load()`` validates, rejects unknown
``AITRADER_*`` keys (a typo must not silently fall back to a default) and refuses
placeholder secrets. Errors raise ``ConfigError`` whose message names the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["SERVICE_PREFIXES", "CommonSettings", "ConfigError", "SettingsBase", "env_name", "is_placeholder",
           "known_env_names", "load", "metrics_port_field"]

T = TypeVar("T", bound=BaseSettings)

_REGISTRY: list[type[BaseSettings]] = []
_PLACEHOLDERS = {"changeme", "change-me", "change_me", "placeholder", "secret", "password", "xxx", "todo",
                 "your-secret-here"}


def is_placeholder(value: str) -> bool:
    """True for a value someone forgot to replace: ``changeme``, ``secret``, ``password``, ``xxx…``,
    ``<your key>`` (an example's angle brackets) and the like."""
    v = value.strip().lower()
    return v in _PLACEHOLDERS or v.startswith("<") or (len(v) >= 3 and set(v) == {"x"})


class ConfigError(Exception):
    """Configuration is invalid; the message names the offending key. Not retryable."""


class SettingsBase(BaseSettings):
    """Base for every settings class: frozen, reads env and ``.env``, registered for key checks."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, validate_default=True)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _REGISTRY.append(cls)


class CommonSettings(SettingsBase):
    """Settings every service shares."""

    model_config = SettingsConfigDict(
        env_prefix="AITRADER_", env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "AITRADER_REDIS_URL"),
        description="Redis holding the bus (streams, consumer groups, hot state).",
    )
    database_url: str = Field(
        "",
        validation_alias=AliasChoices("DATABASE_URL", "AITRADER_DATABASE_URL"),
        description="SQLAlchemy URL of the authoritative database; empty = SQLite file under AITRADER_HOME.",
    )
    home: Path = Field(Path("var"), description="Runtime folder: logs, pids, SQLite file, private Redis data.")
    model_store: str = Field(
        "",
        description=(
            "Folder of the model registry's bundles (<name>/<version>/); empty = models/ under AITRADER_HOME. "
            "One store per database."
        ),
    )
    shards: int = Field(1, ge=1, le=1024, description="Number of md:ticks:{shard} streams symbols hash to.")
    stream_maxlen: int = Field(
        1_000_000, ge=1000, description="Approximate MAXLEN of each stream (entries; ticks are batched)."
    )
    read_count: int = Field(512, ge=1, le=100_000, description="Max entries per XREADGROUP (natural batching).")
    block_ms: int = Field(5, ge=1, le=60_000, description="XREADGROUP block time when the stream is empty.")
    max_deliveries: int = Field(
        5, ge=1, le=1000,
        description="Deliveries after which a failing entry goes to its dead-letter stream (a handler that raised "
                    "on it each time), or deaths of the process while handling it alone (restarts alone count nothing).",
    )
    claim_idle_ms: int = Field(
        30_000, ge=0, description="Pending entries idle this long (other consumers) are claimed on start."
    )
    fast_bus: bool = Field(
        True,
        description="Hot-path reads and commits on a lean hiredis connection (false = redis-py for everything).",
    )
    heartbeat_s: float = Field(1.0, gt=0, le=60, description="Heartbeat / health-key period in seconds.")
    health_ttl_s: int = Field(10, ge=1, description="TTL of a service's health key.")
    initial_cash: str = Field(
        "1000000", description="Starting cash of the simulated account (decimal string, account currency)."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_json: bool = Field(False, description="Services log one JSON object per line (ts, level, logger, message, "
                                              "extras, exc) instead of text.")
    broker_token_key: str = Field(
        "",
        repr=False,
        description=(
            "Key that encrypts broker session tokens at rest (base64 of 32 random bytes; AES-256-GCM). "
            "Needed once a broker login is configured (AITRADER_SE_MCP_API_KEY / AITRADER_EX_MCP_API_KEY)."
        ),
    )
    broker_token_key_file: Path | None = Field(
        None,
        description="File holding that key instead (base64 text or 32 raw bytes; mode 0600 or stricter).",
    )
    instance: str = Field(
        "",
        description=(
            "Consumer name inside groups; default the host name, stable across restarts so a restarted "
            "service re-reads its own pending entries at once. Give each instance its own name when one "
            "host runs several instances of a service."
        ),
    )

    metrics_host: str = Field(
        "127.0.0.1",
        description="Address each service's /metrics listens on (its port: AITRADER_<SERVICE>_METRICS_PORT); "
        "0.0.0.0 for a Prometheus on another host.",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("initial_cash")
    @classmethod
    def _cash(cls, v: str) -> str:
        from decimal import Decimal, InvalidOperation

        try:
            d = Decimal(v)
        except InvalidOperation as e:
            raise ValueError("must be a decimal number") from e
        if not d.is_finite() or d < 0:
            raise ValueError("must be a finite, non-negative decimal")
        return v

    @property
    def db_url(self) -> str:
        """The effective database URL (SQLite file under ``home`` by default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'aitrader.db').resolve()}"

    @property
    def model_store_dir(self) -> Path:
        """The model registry's store folder (``models/`` under ``home`` by default), absolute."""
        return Path(self.model_store).expanduser().resolve() if self.model_store else (self.home / "models").resolve()


def metrics_port_field() -> Any:
    """The ``metrics_port`` field of a service's settings (``AITRADER_<SERVICE>_METRICS_PORT``)."""
    return Field(0, ge=0, le=65535, description=(
        "Port of this service's Prometheus /metrics (on AITRADER_METRICS_HOST); 0 = not served. "
        "scripts/start_pipeline.sh sets one per service (docs/operations.md)."))


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``cls`` (first alias if any)."""
    info = cls.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    prefix = cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{field}".upper()


def known_env_names() -> set[str]:
    names: set[str] = set()
    for cls in _REGISTRY:
        prefix = (cls.model_config.get("env_prefix", "") or "").upper()
        for field, info in cls.model_fields.items():
            names.add(f"{prefix}{field}".upper())
            alias = info.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(str(c).upper() for c in alias.choices)
            elif isinstance(alias, str):
                names.add(alias.upper())
    return names


def _dotenv_keys(path: Path) -> list[str]:
    keys = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                keys.append(line.split("=", 1)[0].strip().removeprefix("export ").strip())
    return keys


# Prefix of each service's own settings class. A key under one of these is checked only
# when that service's settings are loaded (one shared .env serves every service).
SERVICE_PREFIXES = (
    "AITRADER_PE_",
    "AITRADER_SE_",
    "AITRADER_EX_",
    "AITRADER_MCP_",
    "AITRADER_REPLAY_",
    "AITRADER_API_",
    "AITRADER_ADMIN_",  # the API's first admin (backend.api.config.AdminSettings)
    "AITRADER_LLM_",  # the suggestion job's LLM provider (strategy_engine.suggestions.config.LlmSettings)
    "AITRADER_BACKTEST_",  # backtests (backend.backtest.config.BacktestSettings)
    "AITRADER_JOBS_",  # the task queue and its workers (backend.jobs.config.JobSettings)
)


# Keys read only by the shell scripts and tests (see README), allowed in env and .env.
SCRIPT_KEYS = frozenset({
    "AITRADER_PYTHON",  # interpreter the scripts use (default .venv/bin/python)
    "AITRADER_SKIP_INSTALL",  # 1 = scripts do not pip install
    "AITRADER_REDIS_SERVER",  # redis-server binary for the private Redis
    "AITRADER_START_TIMEOUT",  # seconds start_pipeline.sh waits for each service's health
    "AITRADER_STOP_TIMEOUT",  # seconds stop_pipeline.sh waits before SIGKILL
    "AITRADER_LOG_LINES",  # log lines stop_pipeline.sh prints per service
    "AITRADER_REPORT_WAIT",  # seconds quick-start.sh waits for the pipeline to drain
    "AITRADER_BUILD_PANEL",  # 0 = quick-start.sh / scripts/dev_up.sh do not build the control panel
    "AITRADER_DATA_DIR_FOR_TESTS",  # where tests look for ../shared/data
})


def _check_unknown() -> None:
    known = known_env_names()
    registered = {(c.model_config.get("env_prefix", "") or "").upper() for c in _REGISTRY}
    # Keys only some tools read (scripts), allowed so a shared .env can set them.
    allowed_extra = SCRIPT_KEYS
    candidates = [k for k in os.environ if k.startswith("AITRADER_")] + [
        k for k in _dotenv_keys(Path(".env")) if k.upper().startswith("AITRADER_")
    ]
    for key in candidates:
        owner = next((p for p in SERVICE_PREFIXES if key.upper().startswith(p)), None)
        if owner is not None and owner not in registered:
            continue
        if key.upper() not in known and key.upper() not in allowed_extra:
            raise ConfigError(f"unknown setting {key!r} (typo?); see docs/configuration.md")


def first_error(e: ValidationError, top: str = "") -> tuple[str, str]:
    """The first error of a pydantic validation: its dotted location (``top`` when it has none) and message."""
    err = e.errors()[0]
    return ".".join(str(p) for p in err.get("loc", ())) or top, err["msg"]


def load(cls: type[T], **overrides: Any) -> T:
    """Build ``cls`` from env/.env (+ overrides); raise ``ConfigError`` naming the bad key."""
    _check_unknown()
    try:
        settings = cls(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "?"
        key = env_name(cls, field) if field in cls.model_fields else field
        raise ConfigError(f"invalid setting {key}: {err['msg']}") from e
    for field, info in cls.model_fields.items():
        if "secret" in field or "password" in field or field.endswith("_key"):
            val = str(getattr(settings, field) or "")
            if is_placeholder(val):
                raise ConfigError(f"invalid setting {env_name(cls, field)}: placeholder secret refused")
    return settings
