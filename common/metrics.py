"""A service's own Prometheus endpoint (``GET /metrics`` on ``AITRADER_<SVC>_METRICS_PORT``).

The HTTP server is prometheus_client's, on a thread of its own: a scrape never waits on the
event loop's hot path and the loop never waits on a scrape. What is exposed is what the
service already counts; nothing is counted for the metrics' sake. At scrape time the server
thread asks the event loop for a ``Snapshot`` (``asyncio.run_coroutine_threadsafe``): the copy
of the service's dicts and histograms is made on the loop, between two messages, so it is
consistent and never read while being written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.config import ConfigError
from common.latency import LatencyHistogram

__all__ = ["QUANTILES", "MetricsServer", "Snapshot", "latency_summary", "serve"]

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99, 0.999)
# Statuses a service reports in its heartbeat; the current one is always listed too.
_STATUSES = ("starting", "ok", "degraded", "stopping")
# A scrape that the loop does not answer within this is refused (the loop is stuck: that is news).
_SNAPSHOT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LatencySummary:
    """One stage's HDR histogram as a Prometheus summary, in seconds."""

    count: int
    sum_s: float  # mean x count: the HDR buckets' resolution (3 significant digits)
    quantiles: dict[float, float]


def latency_summary(h: LatencyHistogram) -> LatencySummary:
    """Summarise ``h`` (cost ~0.5 ms: one pass over the counts for every quantile)."""
    if h.count == 0:
        return LatencySummary(0, 0.0, {})
    values = h.h.get_percentile_to_value_dict([q * 100 for q in QUANTILES])
    return LatencySummary(h.count, h.h.get_mean_value() * h.count / 1e6,
                          {q: values[q * 100] / 1e6 for q in QUANTILES})


@dataclass
class Snapshot:
    """What a service exposes, copied on its event loop at scrape time."""

    service: str
    instance: str
    status: str
    started_at_ns: int
    last_heartbeat_ns: int  # 0 = none written yet
    counters: dict[str, int]  # the heartbeat's counters (Service.count)
    committed: dict[str, int]  # counters committed to stats:<service> by this process
    acked: dict[str, int]  # input entries acked, by stream
    dead_letters: dict[str, int]  # input entries dead-lettered, by stream
    latency: dict[str, LatencySummary]
    backlog: dict[str, tuple[int, int]] | None  # stream -> (lag, pending) of this group; None: Redis did not answer


class _Collector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        svc = [s.service]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=("service",))
            g.add_metric(svc, value)
            return g

        info = GaugeMetricFamily("aitrader_service_info", "1, labelled with the consumer (instance) name",
                                 labels=("service", "instance"))
        info.add_metric([s.service, s.instance], 1.0)
        yield info
        yield gauge("aitrader_service_start_time_seconds", "When the process started (Unix time)",
                    s.started_at_ns / 1e9)
        status = GaugeMetricFamily("aitrader_service_status", "1 for the status the heartbeat reports, else 0",
                                   labels=("service", "status"))
        for st in sorted({*_STATUSES, s.status}):
            status.add_metric([s.service, st], 1.0 if st == s.status else 0.0)
        yield status
        if s.last_heartbeat_ns:
            yield gauge("aitrader_service_heartbeat_age_seconds", "Seconds since the last heartbeat was written",
                        max(0.0, (time.time_ns() - s.last_heartbeat_ns) / 1e9))
        yield _counters("aitrader_service_committed", "Counters committed with each batch to stats:<service> "
                        "(this process's share; exactly once)", s.service, "name", s.committed)
        yield _counters("aitrader_service_events", "The process's own counters (the heartbeat's: errors, "
                        "retries, refreshes, tool calls)", s.service, "name", s.counters)
        yield _counters("aitrader_service_acked", "Input entries handled and acked, by stream",
                        s.service, "stream", s.acked)
        yield _counters("aitrader_service_dead_letters", "Input entries dead-lettered, by stream",
                        s.service, "stream", s.dead_letters)
        if s.backlog is not None:
            lag = GaugeMetricFamily("aitrader_service_consumer_lag",
                                    "Entries of an input stream not yet delivered to this service's group",
                                    labels=("service", "stream"))
            pending = GaugeMetricFamily("aitrader_service_consumer_pending",
                                        "Entries delivered to this service's group, not yet acked",
                                        labels=("service", "stream"))
            for stream, (n_lag, n_pending) in sorted(s.backlog.items()):
                lag.add_metric([s.service, stream], float(n_lag))
                pending.add_metric([s.service, stream], float(n_pending))
            yield lag
            yield pending
        yield gauge("aitrader_service_redis_up", "1 when Redis answered this scrape's XINFO, else 0",
                    0.0 if s.backlog is None else 1.0)
        lat = Metric("aitrader_service_latency_seconds",
                     "Stage latency this process recorded (HDR histogram, 3 significant digits)", "summary")
        for stage, summ in sorted(s.latency.items()):
            for q, v in summ.quantiles.items():
                lat.add_sample("aitrader_service_latency_seconds",
                               {"service": s.service, "stage": stage, "quantile": str(q)}, v)
            lat.add_sample("aitrader_service_latency_seconds_count", {"service": s.service, "stage": stage},
                           float(summ.count))
            lat.add_sample("aitrader_service_latency_seconds_sum", {"service": s.service, "stage": stage},
                           summ.sum_s)
        yield lat


def _counters(name: str, doc: str, service: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=("service", label))
    for k, n in sorted(values.items()):
        c.add_metric([service, k], float(n))
    return c


def serve(registry: CollectorRegistry, host: str, port: int, key: str) -> Any:
    """Serve ``registry`` on ``host:port`` from a daemon thread; the server (``shutdown()`` stops it).

    A port that cannot be bound is a ``ConfigError`` naming ``key``, the setting that chose it."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise ConfigError(f"invalid setting {key}: cannot serve metrics on {host}:{port}: {e.strerror or e}") from e
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


class MetricsServer:
    """``/metrics`` of one service process, served from a thread; the snapshot is taken on ``loop``."""

    def __init__(self, snapshot: Callable[[], Awaitable[Snapshot]], loop: asyncio.AbstractEventLoop) -> None:
        self._snapshot = snapshot
        self._loop = loop
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self._take))
        self._server: Any = None

    def _take(self) -> Snapshot:
        # Runs on the server's thread: the copy itself is made on the loop.
        return asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop).result(_SNAPSHOT_TIMEOUT_S)

    def start(self, host: str, port: int, key: str) -> None:
        self._server = serve(self.registry, host, port, key)

    async def stop(self) -> None:
        if self._server is not None:
            # shutdown() waits for serve_forever's poll (up to 0.5 s): not on the loop.
            await asyncio.to_thread(self._server.shutdown)
            self._server.server_close()
            self._server = None
