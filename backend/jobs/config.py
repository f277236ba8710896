"""Settings of the job queue and its workers (prefix ``AITRADER_JOBS_``).

The broker is the pipeline's Redis (``REDIS_URL``) and the truth is the pipeline's database
(``DATABASE_URL``): a worker on another machine needs only those two and these settings.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from common.config import SettingsBase, metrics_port_field

__all__ = ["JobSettings"]


class JobSettings(SettingsBase):
    """Where jobs are queued, how a worker proves it is alive, and what happens when it is not."""

    model_config = SettingsConfigDict(env_prefix="AITRADER_JOBS_", env_file=".env", extra="ignore", frozen=True)

    metrics_port: int = metrics_port_field()

    queue: str = Field(
        "aitrader.jobs", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Celery queue jobs are sent to and workers consume by default.",
    )
    key_prefix: str = Field(
        "jobs:", pattern=r"^[A-Za-z0-9_.:-]{1,32}$",
        description="Prefix of every Redis key the task queue writes (so it never meets a pipeline stream).",
    )
    heartbeat_s: float = Field(
        5.0, gt=0, le=600, description="How often a running job renews its lease (heartbeat_at) and reads cancel."
    )
    lease_s: float = Field(
        30.0, gt=0, le=86_400,
        description="A running job whose heartbeat is older than this lost its worker (at least 2x heartbeat_s).",
    )
    max_attempts: int = Field(
        1, ge=1, le=100,
        description="Runs a job gets: a job whose worker was lost is re-queued while attempts < this, else failed.",
    )
    reap_interval_s: float = Field(
        10.0, gt=0, le=3600, description="How often each worker looks for running jobs whose lease lapsed."
    )
    concurrency: int = Field(1, ge=1, le=256, description="Jobs one worker runs at once (processes).")
    visibility_timeout_s: int = Field(
        3600, ge=60,
        description="Seconds before Redis hands an unacknowledged task to another worker (a stale one is dropped: "
        "only the task a queued row names runs).",
    )
    extra_modules: str = Field(
        "", description="Comma-separated modules imported at start that register more job types "
        "(register_job_type); the built-in ones are always loaded.",
    )

    @field_validator("lease_s")
    @classmethod
    def _lease(cls, v: float, info: ValidationInfo) -> float:
        hb = info.data.get("heartbeat_s")
        if hb is not None and v < 2 * hb:
            raise ValueError(f"must be at least twice AITRADER_JOBS_HEARTBEAT_S ({hb})")
        return v

    @property
    def extra_module_list(self) -> list[str]:
        return [m.strip() for m in self.extra_modules.split(",") if m.strip()]
