"""A job type for the job tests, registered from outside backend.jobs (as the backtest module does): ``steps``
runs ``steps`` steps of ``step_s`` seconds, reporting progress before each, and raises at step ``fail_at``."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from backend.jobs import JobContext, Payload, register_job_type


class StepsPayload(Payload):
    steps: int = Field(ge=1, le=10_000)
    step_s: float = Field(0.1, ge=0, le=10)
    fail_at: int | None = None


def run_steps(p: StepsPayload, ctx: JobContext) -> dict[str, Any]:
    for i in range(p.steps):
        ctx.progress(i / p.steps, f"step {i + 1} of {p.steps}")
        if p.fail_at == i:
            raise RuntimeError(f"boom at step {i}")
        time.sleep(p.step_s)
    return {"steps": p.steps, "attempt": ctx.attempt}


register_job_type("steps", run_steps, payload=StepsPayload, role="trader")
