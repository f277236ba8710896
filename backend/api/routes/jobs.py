"""``/jobs``: queue jobs on the task queue, read them (viewer) and cancel them.

The same functions as ``aitrader jobs`` (``backend.jobs``). ``POST /jobs`` answers 202 with the
queued row; the least role depends on the type (``suggestion``, ``backtest``: trader;
``train``: admin, since its bundle may be promoted). Cancelling is trader's for one's own job
and admin's for another user's. 404 for an unknown id, 409 for cancelling a job that ended,
422 for an unknown type or a payload the type refuses, 503 when the queue (Redis) is
unreachable (the row is then failed with the reason). Every viewer sees every job (one account).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError, db_call
from backend.api.schemas import _Strict
from backend.api.users import ROLE_RANK
from backend.jobs import (
    JobFinished,
    JobNotFound,
    JobQueue,
    JobSettings,
    PayloadInvalid,
    QueueUnavailable,
    UnknownJobType,
    cancel,
    job_type,
    load_job_types,
    submit,
)
from backend.jobs import store as job_store
from backend.jobs.registry import NAME_PATTERN
from common.config import load

__all__ = ["JobsState", "install", "router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

Status = Literal["queued", "running", "completed", "failed", "cancelled"]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the job's id")]
TypeName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=32,
                                description="suggestion, train, backtest, ... (GET /jobs lists what ran)")]


@dataclass(frozen=True, slots=True)
class JobsState:
    queue: JobQueue


def install(app: FastAPI, ctx: ApiContext, settings: JobSettings | None = None) -> None:
    """Load the job types and build the queue the routes send to (settings from the environment when not given;
    ``ConfigError``)."""
    settings = settings if settings is not None else load(JobSettings)
    load_job_types(settings.extra_module_list)
    app.state.jobs = JobsState(JobQueue(ctx.common, settings))


def _state(request: Request) -> JobsState:
    return request.app.state.jobs


State = Annotated[JobsState, Depends(_state)]
Ctx = Annotated[ApiContext, Depends(context)]


class JobRequest(_Strict):
    type: TypeName
    payload: dict[str, Any] = Field(default_factory=dict, description="what the type needs (docs/jobs.md)")


class JobOut(BaseModel):
    id: int
    type: str
    status: Status
    created_by: str
    created_at: datetime | None
    started_at: datetime | None = Field(description="when its last attempt started")
    finished_at: datetime | None
    error: str = Field(description="why it failed or was cancelled (empty otherwise)")
    payload: dict[str, Any]
    result: dict[str, Any] | None = Field(description="what the job returned (completed jobs)")
    progress: float = Field(ge=0, le=1)
    progress_note: str
    task_id: str = Field(description="the task queue's id of the task that runs (or ran) it")
    worker: str = Field(description="the worker process that runs (or ran) it")
    attempts: int = Field(description="runs started (a job whose worker was lost may be re-queued)")
    cancel_requested: bool
    heartbeat_at: datetime | None = Field(description="its lease: the worker's last sign of life")
    parent_id: int | None


class CancelResult(BaseModel):
    outcome: Literal["cancelled", "requested"] = Field(
        description="cancelled: it was queued and is cancelled now; requested: it is running and stops at its "
        "next check point")
    job: JobOut


@router.get("", response_model=list[JobOut], summary="Jobs, newest first (viewer)")
def list_jobs(
    _caller: Annotated[Caller, Depends(require("viewer"))],
    ctx: Ctx,
    type: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=32, description="only this type")] = None,
    status: Annotated[Status | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many jobs")] = 50,
) -> list[dict[str, Any]]:
    return db_call(lambda: job_store.list_jobs(ctx.engine, kind=type, status=status, limit=limit))


@router.get("/{job_id}", response_model=JobOut, responses={404: {"description": "no such job"}},
            summary="One job: status, progress, result or error (viewer)")
def get_job(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx, job_id: JobId) -> dict[str, Any]:
    row = db_call(lambda: job_store.get(ctx.engine, job_id))
    if row is None:
        raise ApiError(404, f"no job {job_id}")
    return row


@router.post("", response_model=JobOut, status_code=202,
             responses={403: {"description": "the type needs a higher role (train: admin)"},
                        422: {"description": "unknown type, or a payload the type refuses"},
                        503: {"description": "the task queue is unreachable (the job is stored as failed)"}},
             summary="Queue a job (suggestion, backtest: trader; train: admin)")
def create_job(body: JobRequest, caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx,
               state: State) -> dict[str, Any]:
    try:
        role = job_type(body.type).role
    except UnknownJobType as e:
        raise ApiError(422, str(e), code="unknown_job_type") from e
    if ROLE_RANK[caller.role] < ROLE_RANK[role]:
        raise ApiError(403, f"{body.type} jobs need the {role} role (you are {caller.role})",
                       details={"required_role": role, "role": caller.role})
    try:
        job_id = db_call(lambda: submit(ctx.engine, body.type, body.payload, caller.actor, queue=state.queue))
    except PayloadInvalid as e:
        raise ApiError(422, str(e)[:500], code="invalid_payload") from e
    except QueueUnavailable as e:
        raise ApiError(503, f"task queue unavailable: {e}"[:500]) from e
    row = db_call(lambda: job_store.get(ctx.engine, job_id))
    assert row is not None
    return row


@router.post("/{job_id}/cancel", response_model=CancelResult,
             responses={403: {"description": "another user's job needs the admin role"},
                        404: {"description": "no such job"},
                        409: {"description": "the job has already ended"}},
             summary="Cancel a job: a queued one at once, a running one at its next check point (trader; "
                     "admin for another user's job)")
def cancel_job(caller: Annotated[Caller, Depends(require("trader"))], ctx: Ctx, state: State,
               job_id: JobId) -> dict[str, Any]:
    row = db_call(lambda: job_store.get(ctx.engine, job_id))
    if row is None:
        raise ApiError(404, f"no job {job_id}")
    if row["created_by"] != caller.actor and ROLE_RANK[caller.role] < ROLE_RANK["admin"]:
        raise ApiError(403, f"job {job_id} was submitted by {row['created_by']}; cancelling it needs the admin role",
                       details={"required_role": "admin", "role": caller.role})
    try:
        outcome, after = db_call(lambda: cancel(ctx.engine, job_id, caller.actor, queue=state.queue))
    except JobNotFound as e:
        raise ApiError(404, f"no job {job_id}") from e
    except JobFinished as e:
        raise ApiError(409, str(e), code="job_finished") from e
    return {"outcome": outcome, "job": after}
