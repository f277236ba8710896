"""The pipeline's health, read from Redis: heartbeats, consumer-group lag, error and dead-letter counts.

Shared by ``aitrader status`` and the API's ``GET /status`` and ``GET /metrics``.

Every service writes a ``Heartbeat`` each ``AITRADER_HEARTBEAT_S`` to its health key (which
expires after ``AITRADER_HEALTH_TTL_S``, 10 s by default, and is deleted on a clean stop) and
to the ``sys:heartbeats`` stream (about the last 10,000 kept). The health keys alone cannot
tell a service silent for 40 s from one that never ran, so the last heartbeat of each
(service, instance) is taken from the stream too: ``HeartbeatLog`` reads it once backwards and
then only what was added since.

The verdict of an instance is the age of its last heartbeat: healthy below ``HEALTHY_S``,
degraded below ``DEGRADED_S``, unhealthy below ``UNHEALTHY_S``, dead beyond. A service's
verdict is its best instance's; ``unknown`` when no heartbeat of it can be seen (Redis down,
or never seen since the stream began).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common import streams
from common.bus import DATA_FIELD, BusUnavailable, connect, group_backlog
from common.latency import buckets, merged_stages, summarize
from common.messages import DecodeError, Heartbeat, decode_as

__all__ = ["CORE_SERVICES", "DEGRADED_S", "HEALTHY_S", "UNHEALTHY_S", "VERDICTS", "HeartbeatLog",
           "error_count", "read_health_keys", "snapshot", "snapshot_once", "unknown", "verdict"]

HEALTHY_S = 30.0  # last heartbeat younger than this: healthy
DEGRADED_S = 60.0  # younger than this: degraded
UNHEALTHY_S = 300.0  # younger than this: unhealthy; older: dead
VERDICTS = ("healthy", "degraded", "unhealthy", "dead", "unknown")  # best first
# Listed even before any heartbeat of theirs is seen (as "unknown"): the services a pipeline runs.
CORE_SERVICES = (streams.GROUP_PATTERN, streams.GROUP_STRATEGY, streams.GROUP_EXECUTION, streams.GROUP_ACCOUNT)
_PAGE = 1000
_MAX_INSTANCES = 1000  # instances remembered; beyond, the longest silent is forgotten


def verdict(age_s: float) -> str:
    """The health verdict of an instance whose last heartbeat is ``age_s`` seconds old."""
    if age_s < HEALTHY_S:
        return "healthy"
    if age_s < DEGRADED_S:
        return "degraded"
    if age_s < UNHEALTHY_S:
        return "unhealthy"
    return "dead"


def error_count(counters: dict[str, int]) -> int:
    """Errors a heartbeat reports: its counters named ``*errors`` or ``*failures`` (handler_errors, ...)."""
    return sum(n for name, n in counters.items() if name.endswith(("errors", "failures")))


async def read_health_keys(r: aioredis.Redis) -> list[Heartbeat]:
    """The heartbeats in the live health keys (``health:<service>:<instance>``)."""
    out = []
    async for key in r.scan_iter(match="health:*"):
        data = await r.get(key)
        if not data:
            continue
        try:
            out.append(decode_as(data, Heartbeat))
        except DecodeError:
            continue
    return out


def _id_tuple(eid: bytes) -> tuple[int, int]:
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)


class HeartbeatLog:
    """The last heartbeat of each (service, instance) seen on ``sys:heartbeats``, kept up to date."""

    def __init__(self, max_instances: int = _MAX_INSTANCES) -> None:
        self.last: dict[tuple[str, str], Heartbeat] = {}
        self.cursor: bytes | None = None
        self.max_instances = max_instances
        self._lock = asyncio.Lock()

    def note(self, hb: Heartbeat) -> None:
        key = (hb.service, hb.instance)
        old = self.last.get(key)
        if old is None or hb.ts > old.ts:
            self.last[key] = hb
        while len(self.last) > self.max_instances:
            del self.last[min(self.last, key=lambda k: self.last[k].ts)]

    def _note_entries(self, items: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for _eid, fields in items:
            try:
                self.note(decode_as(fields.get(DATA_FIELD, b""), Heartbeat))
            except DecodeError:
                continue

    async def refresh(self, r: aioredis.Redis) -> None:
        """Read what the stream holds beyond the cursor (all of it, newest first, the first time or after
        the stream was recreated), then the live health keys."""
        async with self._lock:
            newest = await r.xrevrange(streams.HEARTBEATS, count=1)
            if newest:
                newest_id = newest[0][0]
                if self.cursor is None or _id_tuple(newest_id) < _id_tuple(self.cursor):
                    top: bytes | str = newest_id
                    while True:
                        items = await r.xrevrange(streams.HEARTBEATS, max=top, count=_PAGE)
                        self._note_entries(items)
                        if len(items) < _PAGE:
                            break
                        top = b"(" + items[-1][0]
                    self.cursor = newest_id
                else:
                    while True:
                        resp = await r.xread({streams.HEARTBEATS: self.cursor}, count=_PAGE)
                        items = resp[0][1] if resp else []
                        self._note_entries(items)
                        if items:
                            self.cursor = items[-1][0]
                        if len(items) < _PAGE:
                            break
            for hb in await read_health_keys(r):
                self.note(hb)


def _instance(hb: Heartbeat, now_ns: int) -> dict[str, Any]:
    age = max(0.0, (now_ns - hb.ts) / 1e9)
    return {
        "instance": hb.instance, "verdict": verdict(age), "status": hb.status, "age_s": round(age, 3),
        "last_heartbeat_ns": hb.ts, "started_at_ns": hb.started_at, "detail": hb.detail,
        "counters": dict(hb.counters), "errors": error_count(hb.counters),
    }


def _thresholds() -> dict[str, float]:
    return {"healthy_s": HEALTHY_S, "degraded_s": DEGRADED_S, "unhealthy_s": UNHEALTHY_S}


def _ints(h: dict[bytes, bytes]) -> dict[str, int]:
    out = {}
    for k, v in h.items():
        try:
            out[k.decode()] = int(v)
        except ValueError:
            continue
    return out


NEAR_FULL = 0.9  # of maxmemory: warn before Redis starts refusing writes


def redis_memory(info: dict[str, Any]) -> dict[str, Any]:
    """Redis's memory against its limit (``INFO memory``), with a warning for an operator: near or at
    ``maxmemory`` (with ``noeviction`` writes are refused and trading stalls), or a policy that evicts keys
    (stream entries and consumer groups could silently go)."""
    used, cap = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    policy = str(info.get("maxmemory_policy", ""))
    fraction = used / cap if cap else None
    warning = None
    if cap and policy != "noeviction":
        warning = (f"redis maxmemory-policy is {policy}: at maxmemory it may evict stream entries and consumer "
                   "groups; use noeviction (docs/deployment.md)")
    elif fraction is not None and fraction >= 1:
        warning = (f"redis is full ({used / 2**20:,.0f} of {cap / 2**20:,.0f} MiB maxmemory): writes are refused "
                   "and trading stalls until room is made (docs/operations.md, When Redis is full)")
    elif fraction is not None and fraction >= NEAR_FULL:
        warning = (f"redis memory at {fraction:.0%} of maxmemory ({cap / 2**20:,.0f} MiB): at 100% writes are "
                   "refused and trading stalls (docs/operations.md, When Redis is full)")
    return {"used_bytes": used, "max_bytes": cap or None, "policy": policy,
            "used_fraction": round(fraction, 4) if fraction is not None else None, "warning": warning}


async def snapshot(r: aioredis.Redis, log: HeartbeatLog, now_ns: int) -> dict[str, Any]:
    """Every service's heartbeat verdict, consumer-group lag, stats counters and dead letters.

    Redis errors propagate (``BusUnavailable``, ``RedisError``); ``snapshot_once`` turns them into
    an answer."""
    await log.refresh(r)
    groups = await group_backlog(r)
    stats = {}
    async for key in r.scan_iter(match=streams.stats_key("*"), _type="hash"):
        stats[key.decode()[len(streams.stats_key("")):]] = _ints(await r.hgetall(key))
    dlq = _ints(await r.hgetall(streams.DLQ_COUNTS))
    memory = redis_memory(await r.info("memory"))
    by_service: dict[str, list[Heartbeat]] = {s: [] for s in CORE_SERVICES}
    for (service, _inst), hb in log.last.items():
        by_service.setdefault(service, []).append(hb)
    services = []
    for name in sorted(by_service):
        insts = [_instance(hb, now_ns) for hb in sorted(by_service[name], key=lambda h: h.instance)]
        best = min((VERDICTS.index(i["verdict"]) for i in insts), default=VERDICTS.index("unknown"))
        svc_stats = stats.get(name, {})
        services.append({"service": name, "verdict": VERDICTS[best], "instances": insts, "stats": svc_stats,
                         "dead_letters": svc_stats.get("dead_letters", 0),
                         "errors": sum(i["errors"] for i in insts)})
    return {
        "checked_at_ns": now_ns, "redis": None, "redis_memory": memory, "thresholds": _thresholds(),
        "services": services,
        "consumer_groups": [{"stream": k.rsplit("/", 1)[0], "group": k.rsplit("/", 1)[1], **v}
                            for k, v in sorted(groups.items())],
        "dead_letters": {"total": sum(dlq.values()), "by_stream": dlq},
    }


def unknown(log: HeartbeatLog, now_ns: int, error: str) -> dict[str, Any]:
    """What ``snapshot`` answers when Redis does not: every service known so far, ``unknown``."""
    names = sorted(set(CORE_SERVICES) | {s for s, _i in log.last})
    return {
        "checked_at_ns": now_ns, "redis": error, "redis_memory": None, "thresholds": _thresholds(),
        "services": [{"service": n, "verdict": "unknown", "instances": [], "stats": {}, "dead_letters": 0,
                      "errors": 0} for n in names],
        "consumer_groups": [], "dead_letters": {"total": 0, "by_stream": {}},
    }


def _unreadable(e: BaseException) -> str:
    """Why Redis could not be read, in one line."""
    return "redis unavailable: " + (str(e).splitlines()[0][:300] if str(e) else type(e).__name__)


async def snapshot_once(redis_url: str, log: HeartbeatLog | None = None, now_ns: int | None = None,
                        timeout_s: float = 2.0) -> dict[str, Any]:
    """``snapshot`` over a fresh connection; Redis unreachable or failing gives ``unknown`` (never raises
    for Redis). ``now_ns``: the time ages are measured at (now unless given: a fake clock in tests)."""
    log = log if log is not None else HeartbeatLog()
    r = connect(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return await asyncio.wait_for(snapshot(r, log, now_ns if now_ns is not None else time.time_ns()),
                                      timeout=timeout_s * 3)
    except (TimeoutError, *BusUnavailable, RedisError) as e:
        return unknown(log, now_ns if now_ns is not None else time.time_ns(), _unreadable(e))
    finally:
        await r.aclose()


async def latency(r: aioredis.Redis) -> list[dict[str, Any]]:
    """Each stage's HDR histogram merged over the instances that saved one (``lat:<stage>``, every heartbeat:
    since each instance started): count, p50 / p99 / p999 / max in µs and 1-2-5 buckets. A histogram that
    does not decode is skipped (and counted in ``unreadable``), never an error."""
    return [{"stage": stage, **summarize(merged), "instances": instances, "unreadable": unreadable,
             "buckets": [{"ge_us": ge, "lt_us": lt, "count": n} for ge, lt, n in buckets(merged)]}
            for stage, (merged, instances, unreadable) in (await merged_stages(r)).items()]


async def latency_once(redis_url: str, timeout_s: float = 2.0) -> tuple[list[dict[str, Any]], str | None]:
    """``latency`` over a fresh connection: ``(stages, None)``, or ``([], why)`` when Redis cannot be read."""
    r = connect(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return await asyncio.wait_for(latency(r), timeout=timeout_s * 3), None
    except (TimeoutError, *BusUnavailable, RedisError) as e:
        return [], _unreadable(e)
    finally:
        await r.aclose()
