"""What the API tells about itself and the pipeline: Prometheus metrics and structured JSON logs.

- ``RequestMetrics``: per app, a ``CollectorRegistry`` with a request counter and a latency
  histogram labelled by method, route template (``/orders``, never the raw path: an unknown path
  is ``<unmatched>``) and status.
- ``pipeline_exposition(snapshot)``: the pipeline's figures (ticks processed, dead letters,
  rejects by reason, consumer lag and pending, heartbeat ages and verdicts) as Prometheus text,
  from a ``backend.status`` snapshot read at scrape time.
- ``ws_exposition``: the WebSocket hub's clients and how many were dropped as too slow.
- ``ObservabilityMiddleware``: times every request, counts it, and with ``log_json`` logs one
  access line (request id, method, route, path, status, duration) on ``backend.api.access``.
- ``JsonFormatter`` / ``configure_logging``: one JSON object per line for every log record.
- ``RedactTokens`` (common/logs.py): no log line carries a token from a URL (uvicorn logs ``/ws?token=...``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.status import VERDICTS
from common.logs import JsonFormatter, RedactTokens, configure_logging

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "ObservabilityMiddleware", "RedactTokens", "RequestMetrics",
           "configure_logging",
           "pipeline_exposition", "ws_exposition"]

ACCESS_LOGGER = "backend.api.access"
UNMATCHED = "<unmatched>"
# Latency buckets in seconds: the kill path answers in ~10-30 ms, database views in a few ms.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_access = logging.getLogger(ACCESS_LOGGER)


class RequestMetrics:
    """The API's own metrics, in a registry of its own (several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aitrader_api_requests", "HTTP requests answered by the API",
                                ("method", "route", "status"), registry=self.registry)
        self.latency = Histogram("aitrader_api_request_duration_seconds",
                                 "Time from the request's arrival to the end of its answer",
                                 ("method", "route", "status"), buckets=_BUCKETS, registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Snapshot(Collector):
    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        s = self.snap
        up = GaugeMetricFamily("aitrader_redis_up", "1 when Redis answered this scrape, else 0")
        up.add_metric([], 1.0 if s["redis"] is None else 0.0)
        yield up
        stats = {svc["service"]: svc["stats"] for svc in s["services"]}
        ticks = CounterMetricFamily("aitrader_ticks_processed", "Ticks the pattern engine processed")
        ticks.add_metric([], float(stats.get("pattern_engine", {}).get("ticks", 0)))
        yield ticks
        counters = CounterMetricFamily("aitrader_pipeline_events",
                                       "Exactly-once counters of each stage (its stats:<service> hash)",
                                       labels=("service", "name"))
        rejects = CounterMetricFamily("aitrader_rejects", "Orders the gateway refused, by reason code",
                                      labels=("reason",))
        for service, hash_ in sorted(stats.items()):
            for name, n in sorted(hash_.items()):
                counters.add_metric([service, name], float(n))
                if name.startswith("rejects."):
                    rejects.add_metric([name.removeprefix("rejects.")], float(n))
        yield counters
        yield rejects
        dead = CounterMetricFamily("aitrader_dead_letters", "Entries dead-lettered, by source stream",
                                   labels=("stream",))
        for stream, n in sorted(s["dead_letters"]["by_stream"].items()):
            dead.add_metric([stream], float(n))
        yield dead
        lag = GaugeMetricFamily("aitrader_consumer_lag", "Entries not yet delivered to a consumer group",
                                labels=("stream", "group"))
        pending = GaugeMetricFamily("aitrader_consumer_pending", "Entries delivered to a group, not yet acked",
                                    labels=("stream", "group"))
        for g in s["consumer_groups"]:
            lag.add_metric([g["stream"], g["group"]], float(g["lag"]))
            pending.add_metric([g["stream"], g["group"]], float(g["pending"]))
        yield lag
        yield pending
        age = GaugeMetricFamily("aitrader_heartbeat_age_seconds", "Age of an instance's last heartbeat",
                                labels=("service", "instance"))
        errors = GaugeMetricFamily("aitrader_service_errors",
                                   "Errors an instance reports in its heartbeat (counters *errors, *failures)",
                                   labels=("service", "instance"))
        health = GaugeMetricFamily("aitrader_service_health",
                                   "1 for the service's verdict (healthy, degraded, unhealthy, dead, unknown)",
                                   labels=("service", "verdict"))
        for svc in s["services"]:
            for inst in svc["instances"]:
                age.add_metric([svc["service"], inst["instance"]], float(inst["age_s"]))
                errors.add_metric([svc["service"], inst["instance"]], float(inst["errors"]))
            for v in VERDICTS:
                health.add_metric([svc["service"], v], 1.0 if svc["verdict"] == v else 0.0)
        yield age
        yield errors
        yield health


def pipeline_exposition(snap: dict[str, Any]) -> bytes:
    """The pipeline's figures from a ``backend.status`` snapshot, in the Prometheus text format."""
    reg = CollectorRegistry()
    reg.register(_Snapshot(snap))
    return generate_latest(reg)


def ws_exposition(clients: int, dropped: int) -> bytes:
    """The /ws hub's figures: clients connected now, clients closed as too slow (4408) since start."""
    reg = CollectorRegistry()
    g = Gauge("aitrader_api_ws_clients", "WebSocket clients receiving the live feed", registry=reg)
    g.set(clients)
    c = Counter("aitrader_api_ws_dropped", "WebSocket clients closed as too slow (4408)", registry=reg)
    c.inc(dropped)
    return generate_latest(reg)


class ObservabilityMiddleware:
    """Counts and times every HTTP request by route template; logs one access line when ``log_json``.

    Sits inside ``RequestIdMiddleware`` (it reads the request id); an exception escaping the app is
    counted as a 500 (the outer middleware answers it) and re-raised."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, log_json: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_json = log_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            status = 500
            raise
        finally:
            elapsed = time.perf_counter() - t0
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope.get("method", "")
            self.metrics.observe(method, route, status, elapsed)
            if self.log_json:
                rid = (scope.get("state") or {}).get("request_id", "")
                _access.info("%s %s %d", method, route, status, extra={
                    "request_id": rid, "method": method, "route": route, "path": scope.get("path", ""),
                    "status": status, "duration_ms": round(elapsed * 1000, 3)})
