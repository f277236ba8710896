"""The job row's transitions, each one conditional UPDATE, so the row stays the one truth.

Every change names the state it leaves (``WHERE status = 'running' AND task_id = :t AND
worker = :w``): two workers, a worker and the reaper, or a worker and a cancel can never both
win; the loser's UPDATE matches no row and it stops. Times are UTC from the writer's clock
(workers on other machines need synchronised clocks; the lease is seconds, skew should be
milliseconds).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from common.db import JOB_FINAL, AuditLog, Job

__all__ = ["CancelOutcome", "as_dict", "claim", "create", "expired", "fail_unsent", "finish", "get",
           "give_up", "list_jobs", "renew", "request_cancel", "requeue", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(t: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; every time here is written in UTC
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def as_dict(j: Job) -> dict[str, Any]:
    return {
        "id": j.id, "type": j.kind, "status": j.status, "created_by": j.created_by,
        "created_at": _utc(j.created_at), "started_at": _utc(j.started_at), "finished_at": _utc(j.finished_at),
        "error": j.error or "", "payload": j.payload or {}, "result": j.result, "progress": j.progress or 0.0,
        "progress_note": j.progress_note or "", "task_id": j.task_id or "", "worker": j.worker or "",
        "attempts": j.attempts or 0, "cancel_requested": bool(j.cancel_requested),
        "heartbeat_at": _utc(j.heartbeat_at), "parent_id": j.parent_id,
    }


def _audit(actor: str, action: str, job_id: int, detail: dict[str, Any]) -> AuditLog:
    return AuditLog(ts=time.time_ns(), actor=actor[:64], action=action, entity="job", entity_id=str(job_id),
                    detail=detail)


def _update(engine: Engine, job_id: int, where: list[Any], **values: Any) -> bool:
    with engine.begin() as c:
        return c.execute(sa.update(Job).where(Job.id == job_id, *where).values(**values)).rowcount == 1


# -- submit -------------------------------------------------------------------------------
def create(engine: Engine, kind: str, payload: dict[str, Any], actor: str, task_id: str,
           parent_id: int | None = None) -> int:
    """A queued row naming the task that will run it (written before the task is sent, so a worker never
    sees a task its row does not name yet), and its ``job.submit`` audit row; the job's id."""
    with Session(engine) as s, s.begin():
        job = Job(kind=kind, status="queued", created_by=actor[:64], error="", payload=payload, task_id=task_id,
                  parent_id=parent_id, progress=0.0, progress_note="", worker="", attempts=0,
                  cancel_requested=False)
        s.add(job)
        s.flush()
        s.add(_audit(actor, "job.submit", job.id, {"type": kind, "task_id": task_id, "parent_id": parent_id}))
        return job.id


def create_group(engine: Engine, kind: str, payload: dict[str, Any], actor: str) -> int:
    """A row that groups jobs (a sweep: its jobs' ``parent_id``) and runs nothing itself: completed at once,
    its ``result`` set by ``set_result`` once the jobs are queued; audited as a submit."""
    now = utcnow()
    with Session(engine) as s, s.begin():
        job = Job(kind=kind, status="completed", created_by=actor[:64], error="", payload=payload, task_id="",
                  progress=1.0, progress_note="jobs queued", worker="", attempts=0, cancel_requested=False,
                  started_at=now, finished_at=now)
        s.add(job)
        s.flush()
        s.add(_audit(actor, "job.submit", job.id, {"type": kind}))
        return job.id


def set_result(engine: Engine, job_id: int, result: dict[str, Any]) -> bool:
    return _update(engine, job_id, [], result=result)


def fail_unsent(engine: Engine, job_id: int, task_id: str, error: str) -> bool:
    """The task could not be sent: the queued row fails at once rather than wait for nothing."""
    return _update(engine, job_id, [Job.status == "queued", Job.task_id == task_id], status="failed",
                   finished_at=utcnow(), error=error[:4000])


# -- a worker's run -----------------------------------------------------------------------
def claim(engine: Engine, job_id: int, task_id: str, worker: str) -> bool:
    """queued → running for the task the row names; False when the row is not (or no longer) that task's:
    cancelled, re-queued under another task, already claimed by a redelivery."""
    now = utcnow()
    return _update(engine, job_id, [Job.status == "queued", Job.task_id == task_id],
                   status="running", worker=worker[:128], started_at=now, heartbeat_at=now,
                   attempts=Job.attempts + 1, progress=0.0, progress_note="started")


def renew(engine: Engine, job_id: int, task_id: str, worker: str, progress: float | None = None,
          note: str | None = None) -> bool | None:
    """Renew the lease (and record progress); whether a cancel was requested, None when the row is no
    longer this run's (reaped, or finished elsewhere)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = min(1.0, max(0.0, float(progress)))
    if note is not None:
        values["progress_note"] = note[:256]
    mine = [Job.id == job_id, Job.status == "running", Job.task_id == task_id, Job.worker == worker[:128]]
    with engine.begin() as c:
        if c.execute(sa.update(Job).where(*mine).values(**values)).rowcount != 1:
            return None
        return bool(c.execute(sa.select(Job.cancel_requested).where(Job.id == job_id)).scalar_one())


def finish(engine: Engine, job_id: int, task_id: str, worker: str, status: str, *,
           result: dict[str, Any] | None = None, error: str = "") -> bool:
    """running → ``status`` (completed, failed or cancelled) for this run only; False when it was not."""
    if status not in JOB_FINAL:
        raise ValueError(f"not a final status: {status!r}")
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error[:4000], "result": result}
    if status == "completed":
        values |= {"progress": 1.0, "progress_note": "completed"}
    return _update(engine, job_id, [Job.status == "running", Job.task_id == task_id, Job.worker == worker[:128]],
                   **values)


# -- cancel -------------------------------------------------------------------------------
class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued: cancelled now
    REQUESTED = "requested"  # it is running: it stops at its next progress / check point
    FINISHED = "finished"  # it had already ended: nothing changed
    MISSING = "missing"


def request_cancel(engine: Engine, job_id: int, actor: str) -> tuple[str, dict[str, Any] | None]:
    """Cancel the job: (outcome, the row after). Audited (``job.cancel``) when something changed."""
    for _ in range(3):  # the row may move between the read and the conditional write: read again
        row = get(engine, job_id)
        if row is None:
            return CancelOutcome.MISSING, None
        if row["status"] in JOB_FINAL:
            return CancelOutcome.FINISHED, row
        with Session(engine) as s, s.begin():
            if row["status"] == "queued":
                done = s.execute(sa.update(Job).where(Job.id == job_id, Job.status == "queued").values(
                    status="cancelled", finished_at=utcnow(), cancel_requested=True,
                    error=f"cancelled by {actor} before it started"[:4000])).rowcount == 1
                outcome = CancelOutcome.CANCELLED
            else:
                done = s.execute(sa.update(Job).where(Job.id == job_id, Job.status == "running").values(
                    cancel_requested=True)).rowcount == 1
                outcome = CancelOutcome.REQUESTED
            if done:
                s.add(_audit(actor, "job.cancel", job_id, {"from": row["status"], "outcome": str(outcome),
                                                           "task_id": row["task_id"]}))
        if done:
            return outcome, get(engine, job_id)
    raise RuntimeError(f"job {job_id} kept changing while it was being cancelled")


# -- the reaper ---------------------------------------------------------------------------
def expired(engine: Engine, lease_s: float) -> tuple[datetime, list[dict[str, Any]]]:
    """(the cutoff, the running jobs whose lease is older than it)."""
    cutoff = utcnow() - timedelta(seconds=lease_s)
    with Session(engine) as s:
        rows = s.scalars(sa.select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)
                         .order_by(Job.id)).all()
        return cutoff, [as_dict(j) for j in rows]


def _lapsed(row: dict[str, Any], cutoff: datetime) -> list[Any]:
    return [Job.status == "running", Job.task_id == row["task_id"], Job.heartbeat_at < cutoff]


def requeue(engine: Engine, row: dict[str, Any], cutoff: datetime, task_id: str, note: str) -> bool:
    """A lapsed running job back to queued under a new task (sent by the caller after this returns True)."""
    return _update(engine, row["id"], _lapsed(row, cutoff), status="queued", task_id=task_id, worker="",
                   heartbeat_at=None, progress=0.0, progress_note=note[:256])


def give_up(engine: Engine, row: dict[str, Any], cutoff: datetime, status: str, error: str) -> bool:
    """A lapsed running job ends ``status`` (failed; cancelled when a cancel was pending) with ``error``."""
    return _update(engine, row["id"], _lapsed(row, cutoff), status=status, finished_at=utcnow(),
                   error=error[:4000])


# -- reads --------------------------------------------------------------------------------
def get(engine: Engine, job_id: int) -> dict[str, Any] | None:
    with Session(engine) as s:
        j = s.get(Job, job_id)
        return None if j is None else as_dict(j)


def list_jobs(engine: Engine, *, kind: str | None = None, status: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    q = sa.select(Job)
    if kind:
        q = q.where(Job.kind == kind)
    if status:
        q = q.where(Job.status == status)
    with Session(engine) as s:
        return [as_dict(j) for j in s.scalars(q.order_by(Job.id.desc()).limit(limit)).all()]
