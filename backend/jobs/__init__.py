"""Jobs (backtests, model training, suggestions) on Celery over the pipeline's Redis; the job row is the truth.

``submit`` queues a job, ``cancel`` cancels it, ``reap`` ends or re-queues jobs whose worker
was lost; ``register_job_type`` adds a type; ``python -m backend.jobs.worker`` runs them.
See docs/jobs.md.
"""

from backend.jobs.config import JobSettings
from backend.jobs.registry import (
    JobType,
    Payload,
    PayloadInvalid,
    UnknownJobType,
    job_type,
    job_types,
    load_job_types,
    register_job_type,
)
from backend.jobs.runner import JobCancelled, JobContext, JobFailed, JobLost
from backend.jobs.service import JobFinished, JobNotFound, JobQueue, QueueUnavailable, cancel, reap, submit

__all__ = [
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobFinished",
    "JobLost",
    "JobNotFound",
    "JobQueue",
    "JobSettings",
    "JobType",
    "Payload",
    "PayloadInvalid",
    "QueueUnavailable",
    "UnknownJobType",
    "cancel",
    "job_type",
    "job_types",
    "load_job_types",
    "reap",
    "register_job_type",
    "submit",
]
