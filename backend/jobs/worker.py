"""``python -m backend.jobs.worker [--concurrency N] [--queues Q,...] [--check]``: a job worker.

A Celery worker (prefork: each job in a child process) on ``REDIS_URL``, writing to
``DATABASE_URL``; more workers, on this machine or others, are the same command with the same
two URLs (give each its own ``AITRADER_INSTANCE`` when one host runs several). The main
process also runs the reaper every ``AITRADER_JOBS_REAP_INTERVAL_S`` and, with
``AITRADER_JOBS_METRICS_PORT``, serves ``/metrics`` (backend/jobs/metrics.py). ``--check`` asks this
host's worker to answer a ping (exit 0) and is what scripts/start_pipeline.sh waits on.
SIGTERM: a warm stop (running jobs finish); a job cut short by SIGKILL is left to the reaper.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Any

from celery import Celery

__all__ = ["build_app", "main"]

log = logging.getLogger("backend.jobs.worker")


class _Engines:
    """One database engine per process: the prefork pool's children must not share the parent's sockets."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pid = -1
        self._engine: Any = None

    def get(self) -> Any:
        if self._pid != os.getpid():
            from common.db import make_engine

            self._engine, self._pid = make_engine(self.url), os.getpid()
        return self._engine


def build_app(common: Any, settings: Any) -> Celery:
    """The worker's Celery app: the job task bound to this configuration, job types loaded."""
    from backend.jobs.celery_app import TASK_NAME, make_app
    from backend.jobs.registry import load_job_types
    from backend.jobs.runner import execute

    load_job_types(settings.extra_module_list)
    app = make_app(common, settings)
    engines = _Engines(common.db_url)

    @app.task(name=TASK_NAME, bind=True)
    def run_job(self: Any, job_id: int) -> str:
        return execute(engines.get(), settings, int(job_id), self.request.id,
                       f"{self.request.hostname}:{os.getpid()}")

    return app


def _reaper(common: Any, settings: Any, stop: threading.Event, metrics: Any) -> None:
    from sqlalchemy.pool import NullPool

    from backend.jobs.service import JobQueue, reap
    from common.db import make_engine

    engine = make_engine(common.db_url, poolclass=NullPool)  # no pooled socket for a forked child to inherit
    queue = JobQueue(common, settings)
    try:
        while not stop.wait(settings.reap_interval_s):
            try:
                metrics.count_reaped(reap(engine, queue=queue))
            except Exception as e:  # noqa: BLE001 - the database or Redis may be back at the next round
                log.warning("reaper: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
    finally:
        queue.close()
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    from backend.jobs.celery_app import node_name
    from backend.jobs.config import JobSettings
    from backend.jobs.metrics import WorkerMetrics
    from common.config import CommonSettings, ConfigError, env_name, load
    from common.service import setup_logging

    p = argparse.ArgumentParser(prog="python -m backend.jobs.worker", description="run jobs from the task queue")
    p.add_argument("--concurrency", type=int, default=None, help="jobs run at once (default AITRADER_JOBS_CONCURRENCY)")
    p.add_argument("--queues", default=None, help="comma-separated queues to consume (default AITRADER_JOBS_QUEUE)")
    p.add_argument("--check", action="store_true", help="exit 0 when this host's worker answers a ping")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        common, settings = load(CommonSettings), load(JobSettings)
        node = node_name(common)
        if args.check:
            from backend.jobs.celery_app import make_app

            app = make_app(common, settings)
            try:
                answer = app.control.ping(destination=[node], timeout=2.0)
            finally:
                app.close()
            print(f"{node}: {'ok' if answer else 'no answer'}")
            return 0 if answer else 1
        if args.concurrency is not None and args.concurrency < 1:
            raise ConfigError("--concurrency must be >= 1")
        setup_logging(common.log_level, common.log_json)
        app = build_app(common, settings)
        metrics = WorkerMetrics(common, settings, node)
        if settings.metrics_port:
            metrics.start(common.metrics_host, settings.metrics_port, env_name(JobSettings, "metrics_port"))
    except ConfigError as e:
        print(f"backend.jobs.worker: configuration error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # a module of AITRADER_JOBS_EXTRA_MODULES
        print(f"backend.jobs.worker: cannot load job types: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    reaper = threading.Thread(target=_reaper, args=(common, settings, stop, metrics), name="jobs-reaper", daemon=True)
    reaper.start()
    try:
        app.worker_main(["worker", "-n", node, "-Q", args.queues or settings.queue,
                         f"--concurrency={args.concurrency or settings.concurrency}", "--pool=prefork",
                         f"--loglevel={common.log_level}", "--without-gossip", "--without-mingle"])
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:
        stop.set()
        reaper.join(timeout=5)
        metrics.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
