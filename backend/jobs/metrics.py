"""A job worker's Prometheus ``/metrics`` (``AITRADER_JOBS_METRICS_PORT``), served from a thread of the main process.

Jobs are counted from their rows, the truth (those whose ``worker`` is this node, by status and
type), read at scrape time, as is the depth of the queue in Redis; the reaper's actions are
counted as they happen. The pool's children are not asked anything: a scrape never waits on a job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import NullPool

from backend.jobs.config import JobSettings
from common.config import CommonSettings
from common.db import Job, make_engine
from common.metrics import serve

__all__ = ["WorkerMetrics"]


class _Rows(Collector):
    def __init__(self, common: CommonSettings, settings: JobSettings, node: str) -> None:
        self.node = node
        self.queue_key = f"{settings.key_prefix}{settings.queue}"  # kombu's list under global_keyprefix
        self.queue = settings.queue
        self.engine = make_engine(common.db_url, poolclass=NullPool)  # one short connection per scrape
        self.redis = redis.Redis.from_url(common.redis_url, socket_timeout=2, socket_connect_timeout=2)

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("aitrader_jobs_worker_jobs", "Job rows this worker ran or runs, by status and type",
                                 labels=("worker", "status", "kind"))
        db_up = GaugeMetricFamily("aitrader_jobs_database_up", "1 when the database answered this scrape, else 0")
        try:
            with self.engine.connect() as c:
                rows = c.execute(sa.select(Job.status, Job.kind, sa.func.count())
                                 .where(Job.worker.like(f"{self.node}:%")).group_by(Job.status, Job.kind)).all()
        except sa.exc.SQLAlchemyError:
            db_up.add_metric([], 0.0)
        else:
            db_up.add_metric([], 1.0)
            for status, kind, n in rows:
                jobs.add_metric([self.node, status, kind], float(n))
        yield jobs
        yield db_up
        depth = GaugeMetricFamily("aitrader_jobs_queue_depth", "Tasks waiting in the queue (all workers')",
                                  labels=("queue",))
        redis_up = GaugeMetricFamily("aitrader_jobs_redis_up", "1 when Redis answered this scrape, else 0")
        try:
            depth.add_metric([self.queue], float(self.redis.llen(self.queue_key)))
            redis_up.add_metric([], 1.0)
        except (redis.RedisError, OSError):
            redis_up.add_metric([], 0.0)
        yield depth
        yield redis_up

    def close(self) -> None:
        self.engine.dispose()
        self.redis.close()


class WorkerMetrics:
    """The registry of one worker process and the server that exposes it."""

    def __init__(self, common: CommonSettings, settings: JobSettings, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.reaped = Counter("aitrader_jobs_reaped", "Jobs with a lapsed lease this worker's reaper ended or "
                              "re-queued, by action", ("action",), registry=self.registry)
        self._rows = _Rows(common, settings, node)
        self.registry.register(self._rows)
        self._server: Any = None

    def count_reaped(self, done: list[dict[str, Any]]) -> None:
        for d in done:
            self.reaped.labels(d["action"].split(" ", 1)[0]).inc()  # "failed (why)" counts as failed

    def start(self, host: str, port: int, key: str) -> None:
        self._server = serve(self.registry, host, port, key)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._rows.close()
