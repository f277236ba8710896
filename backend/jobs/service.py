"""Submit, cancel and reap jobs: what the API, the CLI and the workers' reaper call.

``submit`` writes the queued row (naming the task id) and its audit row, then sends the
task; ``cancel`` cancels a queued job at once (and revokes its task) or asks a running one
to stop at its next check point; ``reap`` ends or re-queues running jobs whose lease lapsed.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from backend.jobs import store
from backend.jobs.celery_app import TASK_NAME, make_app
from backend.jobs.config import JobSettings
from backend.jobs.registry import job_type
from backend.jobs.store import CancelOutcome
from common.config import CommonSettings, load

__all__ = ["JobFinished", "JobNotFound", "JobQueue", "QueueUnavailable", "cancel", "reap", "submit"]

log = logging.getLogger(__name__)


class JobNotFound(LookupError):
    """No job has that id."""


class JobFinished(Exception):
    """The job has already ended (completed, failed or cancelled): nothing to cancel."""


class QueueUnavailable(Exception):
    """The task could not be sent (Redis unreachable); the job's row has been failed with the reason."""


class JobQueue:
    """The sending side of the task queue (no worker here): settings and a Celery app for the broker."""

    def __init__(self, common: CommonSettings, settings: JobSettings) -> None:
        self.common = common
        self.settings = settings
        self.app = make_app(common, settings)

    @classmethod
    def from_env(cls) -> JobQueue:
        """Settings from the environment (``ConfigError`` naming a bad key)."""
        return cls(load(CommonSettings), load(JobSettings))

    def send(self, job_id: int, task_id: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], task_id=task_id, queue=self.settings.queue)

    def revoke(self, task_id: str) -> None:
        self.app.control.revoke(task_id)

    def close(self) -> None:
        self.app.close()


def _send(engine: Engine, queue: JobQueue, job_id: int, task_id: str) -> None:
    try:
        queue.send(job_id, task_id)
    except Exception as e:  # kombu's OperationalError and the socket errors under it
        reason = f"could not queue the task: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        store.fail_unsent(engine, job_id, task_id, reason)
        raise QueueUnavailable(reason) from e


def submit(engine: Engine, kind: str, payload: dict[str, Any] | None, actor: str, parent_id: int | None = None, *,
           queue: JobQueue) -> int:
    """Queue a job of type ``kind``; its id. ``UnknownJobType`` / ``PayloadInvalid`` before anything is
    written; ``QueueUnavailable`` when the task could not be sent (the row is then failed)."""
    clean = job_type(kind).validate(payload).model_dump(mode="json")
    task_id = uuid.uuid4().hex
    job_id = store.create(engine, kind, clean, actor, task_id, parent_id)
    _send(engine, queue, job_id, task_id)
    return job_id


def cancel(engine: Engine, job_id: int, actor: str, *, queue: JobQueue | None = None) -> tuple[str, dict[str, Any]]:
    """Cancel the job: (``cancelled`` or ``requested``, the row after). ``JobNotFound``; ``JobFinished`` when
    it had ended. A queued job's task is revoked too (best effort: its worker would drop it anyway)."""
    outcome, row = store.request_cancel(engine, job_id, actor)
    if outcome == CancelOutcome.MISSING or row is None:
        raise JobNotFound(job_id)
    if outcome == CancelOutcome.FINISHED:
        raise JobFinished(f"job {job_id} is already {row['status']}")
    if outcome == CancelOutcome.CANCELLED and queue is not None and row["task_id"]:
        try:
            queue.revoke(row["task_id"])
        except Exception as e:  # noqa: BLE001 - the row is cancelled; the task will be dropped when it arrives
            log.warning("job %d: revoking task %s failed: %s", job_id, row["task_id"], e)
    return str(outcome), row


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "never"


def reap(engine: Engine, *, queue: JobQueue) -> list[dict[str, Any]]:
    """End or re-queue every running job whose lease lapsed: cancelled when a cancel was pending, re-queued
    under a new task while attempts < ``max_attempts``, else failed. What was done, one dict per job."""
    s = queue.settings
    cutoff, rows = store.expired(engine, s.lease_s)
    done: list[dict[str, Any]] = []
    for row in rows:
        lost = (f"worker {row['worker'] or '?'} lost: no heartbeat since {_when(row['heartbeat_at'])} "
                f"(lease {s.lease_s:g} s)")
        if row["cancel_requested"]:
            action, ok = "cancelled", store.give_up(engine, row, cutoff, "cancelled", f"{lost}; a cancel was pending")
        elif row["attempts"] < s.max_attempts:
            task_id = uuid.uuid4().hex
            action = "requeued"
            ok = store.requeue(engine, row, cutoff, task_id, f"re-queued after attempt {row['attempts']}: {lost}")
            if ok:
                try:
                    _send(engine, queue, row["id"], task_id)
                except QueueUnavailable as e:
                    action = f"failed ({e})"
        else:
            action, ok = "failed", store.give_up(
                engine, row, cutoff, "failed", f"{lost}; attempt {row['attempts']} of {s.max_attempts}")
        if ok:  # another reaper may have taken it first
            log.warning("job %d (%s): %s; %s", row["id"], row["type"], lost, action)
            done.append({"id": row["id"], "type": row["type"], "action": action, "worker": row["worker"]})
    return done
