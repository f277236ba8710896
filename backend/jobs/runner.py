"""One job's run inside a worker: claim the row, renew its lease, run the type's function, end the row.

The run owns the row only while the row says so (``status='running'``, its task id, its
worker name): every write is conditional on that. A background thread renews the lease every
``AITRADER_JOBS_HEARTBEAT_S`` and reads ``cancel_requested``; the job's function reports
progress and reaches check points through ``JobContext``, where a requested cancel raises
``JobCancelled`` (the row ends ``cancelled``) and a row taken away (the reaper decided this
run was lost) raises ``JobLost`` (nothing more is written).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Self

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.jobs import store
from backend.jobs.config import JobSettings
from backend.jobs.registry import PayloadInvalid, UnknownJobType, job_type

__all__ = ["JobCancelled", "JobContext", "JobFailed", "JobLost", "execute"]

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """A cancel was requested: stop now; the row ends ``cancelled``."""


class JobFailed(Exception):
    """The job cannot succeed; the message is the row's ``error`` as it stands (no exception type prefix)."""


class JobLost(Exception):
    """The row is no longer this run's (its lease lapsed and the reaper failed or re-queued it): stop."""


class JobContext:
    """What a job's function gets besides its payload: its row's id, progress, cancel check points."""

    def __init__(self, engine: Engine, settings: JobSettings, job_id: int, task_id: str, worker: str,
                 attempt: int, actor: str) -> None:
        self.engine = engine
        self.job_id = job_id
        self.actor = actor  # who submitted it (the row's created_by)
        self.task_id = task_id
        self.worker = worker
        self.attempt = attempt
        self._period = settings.heartbeat_s
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"job-{job_id}-lease", daemon=True)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def progress(self, fraction: float, note: str = "") -> None:
        """Record progress (0..1, clamped) and a short note on the row, renew the lease, then ``check()``."""
        try:
            self._renewed(store.renew(self.engine, self.job_id, self.task_id, self.worker, fraction, note))
        except SQLAlchemyError as e:  # a busy or briefly unreachable database: the lease thread keeps trying
            log.warning("job %d: progress not recorded: %s", self.job_id, str(e).splitlines()[0])
        self.check()

    def check(self) -> None:
        """A check point: ``JobCancelled`` when a cancel was requested, ``JobLost`` when the row was taken away."""
        if self._lost.is_set():
            raise JobLost(f"job {self.job_id}: its row is no longer run by {self.worker}")
        if self._cancel.is_set():
            raise JobCancelled(f"job {self.job_id}: cancel requested")

    def _renewed(self, cancel: bool | None) -> None:
        if cancel is None:
            self._lost.set()
        elif cancel:
            self._cancel.set()

    def _beat(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._renewed(store.renew(self.engine, self.job_id, self.task_id, self.worker))
            except Exception as e:  # noqa: BLE001 - the database may come back before the lease lapses
                log.warning("job %d: lease renewal failed: %s", self.job_id, str(e).splitlines()[0])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _json_result(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise TypeError(f"a job's function must return a dict, got {type(result).__name__}")
    return json.loads(json.dumps(result, default=str))


def execute(engine: Engine, settings: JobSettings, job_id: int, task_id: str, worker: str) -> str:
    """Run the job ``job_id`` as task ``task_id`` on ``worker``; what became of it (for the log)."""
    if not store.claim(engine, job_id, task_id, worker):
        row = store.get(engine, job_id)
        why = "no such job" if row is None else f"its row is {row['status']} under task {row['task_id'] or '-'}"
        log.info("job %d: task %s dropped (%s)", job_id, task_id, why)
        return "dropped"
    row = store.get(engine, job_id)
    assert row is not None
    log.info("job %d (%s) started on %s, attempt %d", job_id, row["type"], worker, row["attempts"])
    status, result, error = "failed", None, ""
    try:
        jt = job_type(row["type"])
        payload = jt.validate(row["payload"])
        with JobContext(engine, settings, job_id, task_id, worker, row["attempts"],
                        row["created_by"]) as ctx:
            result = _json_result(jt.run(payload, ctx))
        status = "completed"
    except JobCancelled:
        status, error = "cancelled", "cancelled while running"
    except JobLost as e:
        log.warning("%s: stopped", e)
        return "lost"
    except (JobFailed, PayloadInvalid, UnknownJobType) as e:
        error = str(e)
    except Exception as e:  # a job's bug or a failure it did not expect: the row says which
        log.exception("job %d failed", job_id)
        error = f"{type(e).__name__}: {e}"
    if not store.finish(engine, job_id, task_id, worker, status, result=result, error=error):
        log.warning("job %d ended %s but its row was no longer this run's (reaped meanwhile)", job_id, status)
        return "lost"
    log.info("job %d %s%s", job_id, status, f": {error}" if error else "")
    return status
