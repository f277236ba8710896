"""Stream, group and key names: the only place they are spelled."""

from __future__ import annotations

import zlib

__all__ = [
    "ALERTS",
    "CONTROL",
    "CONTROL_ACKS",
    "DLQ_COUNTS",
    "EXEC_EVENTS",
    "GROUP_ACCOUNT",
    "GROUP_EXECUTION",
    "GROUP_PATTERN",
    "GROUP_STRATEGY",
    "HEARTBEATS",
    "INTENTS",
    "KILL_STATE",
    "MARKS",
    "OUTBOX_HWM",
    "SIGNALS",
    "STRATEGY_STATE",
    "TICKS_PREFIX",
    "dlq_stream",
    "health_key",
    "inflight_key",
    "latency_key",
    "pattern_lease_key",
    "pnl_day_start_key",
    "shard_for",
    "stats_key",
    "strikes_key",
    "ticks_stream",
]

TICKS_PREFIX = "md:ticks:"
SIGNALS = "pe:signals"
INTENTS = "se:intents"
EXEC_EVENTS = "ex:events"
CONTROL = "ctl:commands"
CONTROL_ACKS = "ctl:acks"
HEARTBEATS = "sys:heartbeats"
ALERTS = "sys:alerts"  # anomalies for operators: a late fill (ExecutionReport), an automatic halt (Control)
DLQ_COUNTS = "dlq:counts"  # hash: source stream -> number of dead-lettered entries
MARKS = "ex:marks"  # hash: symbol -> last reference price seen by the gateway (str)
KILL_STATE = "ex:trading_state"  # hash mirror of the gateway's persisted trading state
STRATEGY_STATE = "se:strategy_state"  # hash: strategy name -> "1" enabled / "0" disabled (the engine's live switches)
OUTBOX_HWM = "ex:outbox_hwm"  # highest gateway outbox number published to ex:events

GROUP_PATTERN = "pattern_engine"
GROUP_STRATEGY = "strategy_engine"
GROUP_EXECUTION = "execution"
GROUP_ACCOUNT = "mock_mcp"


def ticks_stream(shard: int) -> str:
    # "{n}" is a Redis Cluster hash tag: a shard's streams stay in one slot.
    return f"{TICKS_PREFIX}{{{shard}}}"


def shard_for(symbol: str, shards: int) -> int:
    """Stable symbol → shard mapping (crc32, identical across processes and runs)."""
    return zlib.crc32(symbol.encode()) % shards if shards > 1 else 0


def dlq_stream(stream: str) -> str:
    return f"dlq:{stream}"


def stats_key(service: str) -> str:
    """Hash of exactly-once counters, incremented in the same MULTI/EXEC as the acks."""
    return f"stats:{service}"


def health_key(service: str, instance: str) -> str:
    return f"health:{service}:{instance}"


def inflight_key(group: str) -> str:
    """Hash: consumer -> the entries (``stream NUL id``, newline-separated) it is handling now, written only for
    entries delivered before (re-read after a restart, claimed from a dead consumer) and deleted by the commit:
    found at the next start, it says the consumer died while handling them (``common.bus.Consumer``)."""
    return f"sys:inflight:{group}"


def strikes_key(group: str) -> str:
    """Hash: ``stream NUL id`` -> how many times a consumer of ``group`` died while handling that entry; at
    ``max_deliveries`` the entry is dead-lettered as a poison message. Deleted when the entry is acked."""
    return f"sys:strikes:{group}"


def pattern_lease_key(shards: list[int]) -> str:
    """Standby mode: the lease of the pattern engines sharing these shards' consumer group (the holder's
    instance name, with a TTL); the holder alone reads."""
    return "pe:lease:" + ",".join(str(s) for s in sorted(shards))


def pnl_day_start_key(day: str) -> str:
    """JSON ``{"day", "equity", "at_ns"}``: the first equity the API computed on UTC day ``day`` (YYYY-MM-DD);
    set once (NX) by whichever API instance computes it first, kept 3 days."""
    return f"pnl:day_start:{day}"


def latency_key(stage: str) -> str:
    """Encoded HDR histogram of one pipeline stage (written by the service that closes the stage)."""
    return f"lat:{stage}"
