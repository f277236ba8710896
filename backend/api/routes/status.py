"""``GET /status``, ``GET /status/latency`` (viewer and up) and ``GET /metrics`` (viewer, or anonymous with ``AITRADER_API_METRICS_PUBLIC``).

Both read the pipeline from Redis at request time through ``backend.status`` (the code behind
``aitrader status``). Redis down is an answer, not an error: 200 with every service ``unknown``
and ``redis`` saying why; ``aitrader_redis_up 0`` on /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.observability import RequestMetrics, pipeline_exposition, ws_exposition
from backend.status import HeartbeatLog, latency_once, snapshot_once

__all__ = ["LatencyOut", "StatusOut", "StatusState", "metrics_router", "router"]

Verdict = Literal["healthy", "degraded", "unhealthy", "dead", "unknown"]
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class InstanceStatus(BaseModel):
    instance: str
    verdict: Verdict = Field(description="From the age of this instance's last heartbeat.")
    status: str = Field(description="What the service said of itself: ok, degraded, error or stopping.")
    age_s: float = Field(description="Seconds since its last heartbeat.")
    last_heartbeat_ns: int
    started_at_ns: int
    detail: str
    counters: dict[str, int] = Field(description="The process's counters, as in its heartbeat.")
    errors: int = Field(description="The sum of its counters named *errors or *failures.")


class ServiceStatus(BaseModel):
    service: str
    verdict: Verdict = Field(description="Its best instance's verdict; unknown when no heartbeat is seen.")
    instances: list[InstanceStatus]
    stats: dict[str, int] = Field(description="Its exactly-once counters (stats:<service>): ticks, dead_letters, "
                                              "rejects.<CODE>, ...")
    dead_letters: int
    errors: int


class GroupLag(BaseModel):
    stream: str
    group: str
    lag: int = Field(description="Entries not yet delivered to the group.")
    pending: int = Field(description="Entries delivered, not yet acknowledged.")


class DeadLetters(BaseModel):
    total: int
    by_stream: dict[str, int] = Field(description="Dead-lettered entries per source stream (dlq:counts).")


class Thresholds(BaseModel):
    healthy_s: float
    degraded_s: float
    unhealthy_s: float


class RedisMemory(BaseModel):
    used_bytes: int = Field(description="INFO memory used_memory.")
    max_bytes: int | None = Field(description="maxmemory; null when Redis has no limit.")
    policy: str = Field(description="maxmemory-policy (production: noeviction).")
    used_fraction: float | None = Field(description="used_bytes / max_bytes; null without a limit.")
    warning: str | None = Field(description="For an operator: at or above 90 % of maxmemory (at 100 % writes are "
                                "refused and trading stalls), or a policy that evicts keys; null when fine.")


class StatusOut(BaseModel):
    checked_at_ns: int = Field(description="When the ages were measured (ns since the epoch, UTC).")
    redis: str | None = Field(description="Why Redis could not be read (every service unknown); null when it was.")
    redis_memory: RedisMemory | None = Field(description="Redis's memory against its limit; null when unread.")
    thresholds: Thresholds
    services: list[ServiceStatus]
    consumer_groups: list[GroupLag]
    dead_letters: DeadLetters


class LatencyBucket(BaseModel):
    ge_us: int = Field(description="Lower edge (µs, inclusive).")
    lt_us: int | None = Field(description="Upper edge (µs, exclusive); null for the last bucket.")
    count: int


class StageLatency(BaseModel):
    stage: str = Field(description="tick_to_signal, signal_to_intent, intent_to_fill or tick_to_fill.")
    count: int = Field(description="Latencies recorded, over every instance since it started.")
    p50: int = Field(description="µs (0 when none recorded).")
    p99: int = Field(description="µs.")
    p999: int = Field(description="µs.")
    max: int = Field(description="µs.")
    instances: int = Field(description="Instances whose histogram was merged.")
    unreadable: int = Field(description="Saved histograms that did not decode (skipped).")
    buckets: list[LatencyBucket] = Field(description="Counts in 1-2-5 µs buckets, from the first non-empty to "
                                                     "the last (empty ones between included).")


class LatencyOut(BaseModel):
    checked_at_ns: int
    redis: str | None = Field(description="Why Redis could not be read (no stages); null when it was.")
    stages: list[StageLatency]


class StatusState:
    """Per app: the heartbeat log (kept between requests), the clock ages are measured with, and the API's
    request metrics."""

    def __init__(self, metrics: RequestMetrics, clock: Callable[[], int] = time.time_ns) -> None:
        self.log = HeartbeatLog()
        self.clock = clock
        self.metrics = metrics


def _state(request: Request) -> StatusState:
    return request.app.state.status


async def _snapshot(ctx: ApiContext, st: StatusState) -> dict[str, Any]:
    return await snapshot_once(ctx.common.redis_url, st.log, now_ns=st.clock())


router = APIRouter(tags=["status"])


@router.get("/status", response_model=StatusOut,
            summary="Every service's heartbeat verdict, consumer lag, errors and dead letters (viewer)")
async def status(_caller: Annotated[Caller, Depends(require("viewer"))],
                 ctx: Annotated[ApiContext, Depends(context)],
                 st: Annotated[StatusState, Depends(_state)]) -> dict[str, Any]:
    return await _snapshot(ctx, st)


@router.get("/status/latency", response_model=LatencyOut,
            summary="Per-stage latency (HDR histograms merged over instances): p50 / p99 / p999 / max and buckets "
                    "(viewer)")
async def status_latency(_caller: Annotated[Caller, Depends(require("viewer"))],
                         ctx: Annotated[ApiContext, Depends(context)],
                         st: Annotated[StatusState, Depends(_state)]) -> dict[str, Any]:
    stages, why = await latency_once(ctx.common.redis_url)
    return {"checked_at_ns": st.clock(), "redis": why, "stages": stages}


def metrics_router(public: bool) -> APIRouter:
    """``GET /metrics``: anonymous when ``public``, else for the viewer role and up."""
    r = APIRouter(tags=["status"])
    deps = [] if public else [Depends(require("viewer"))]
    who = "anonymous: AITRADER_API_METRICS_PUBLIC" if public else "viewer"

    @r.get("/metrics", dependencies=deps, response_class=Response,
           responses={200: {"description": "Prometheus text exposition (version 0.0.4)",
                            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}}}},
           summary=f"Prometheus metrics of the API and the pipeline ({who})")
    async def metrics(request: Request, ctx: Annotated[ApiContext, Depends(context)],
                      st: Annotated[StatusState, Depends(_state)]) -> Response:
        snap = await _snapshot(ctx, st)
        hub = request.app.state.hub
        return Response(st.metrics.exposition() + pipeline_exposition(snap) + ws_exposition(len(hub.clients),
                        hub.dropped), media_type=PROMETHEUS_TEXT)

    return r
