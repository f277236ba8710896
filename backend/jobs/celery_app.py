"""The Celery application: the pipeline's Redis as broker, no result backend (the job row is the truth).

Each task carries only a job id; the row names the task that may run it, so a redelivered,
revoked or superseded task finds a row that is not its own and is dropped. Tasks are
acknowledged late and given back when their worker process dies (``acks_late``,
``reject_on_worker_lost``), and a worker takes one task at a time (prefetch 1): a task is
never lost in a prefetch buffer. Every key Celery writes is under ``AITRADER_JOBS_KEY_PREFIX``.
"""

from __future__ import annotations

from celery import Celery

from backend.jobs.config import JobSettings
from common.config import CommonSettings

__all__ = ["TASK_NAME", "make_app", "node_name"]

TASK_NAME = "aitrader.jobs.run"


def make_app(common: CommonSettings, settings: JobSettings) -> Celery:
    app = Celery("aitrader-jobs", broker=common.redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": settings.key_prefix,
                                  "visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # a submit with Redis down fails within a second instead of hanging a request
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2,
                                   "interval_max": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


def node_name(common: CommonSettings) -> str:
    """The worker's Celery node name: ``jobs@<AITRADER_INSTANCE or host name>``."""
    import socket

    return f"jobs@{common.instance or socket.gethostname()}"
