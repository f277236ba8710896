"""HDR latency histograms per pipeline stage, mergeable across processes through Redis."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["BUCKET_EDGES_US", "STAGES", "LatencyHistogram", "buckets", "merged_stages", "summarize"]

# Stages of the tick→fill path; each is recorded by the service that closes it.
STAGES = ("tick_to_signal", "signal_to_intent", "intent_to_fill", "tick_to_fill")

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_DIGITS = 3
# The edges of ``buckets``: 1-2-5 steps from 1 µs to 1 h (a log scale a chart can label).
BUCKET_EDGES_US = tuple(m * 10**e for e in range(10) for m in (1, 2, 5) if m * 10**e <= _HIGHEST_US)


class LatencyHistogram:
    """Microsecond HDR histogram (3 significant digits), recorded from nanosecond deltas."""

    __slots__ = ("h", "dirty")

    def __init__(self) -> None:
        self.h = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self.dirty = False

    def record_ns(self, delta_ns: int) -> None:
        us = delta_ns // 1000
        if us < _LOWEST_US:
            us = _LOWEST_US
        elif us > _HIGHEST_US:
            us = _HIGHEST_US
        self.h.record_value(us)
        self.dirty = True

    def encode(self) -> bytes:
        return self.h.encode()

    @classmethod
    def decode(cls, data: bytes) -> "LatencyHistogram":
        obj = cls()
        obj.h = HdrHistogram.decode(data)
        return obj

    def merge(self, other: "LatencyHistogram") -> None:
        self.h.add(other.h)

    @property
    def count(self) -> int:
        return self.h.get_total_count()

    def percentile(self, q: float) -> int:
        return int(self.h.get_value_at_percentile(q))

    def summary(self) -> dict[str, int]:
        return summarize(self)


def summarize(h: LatencyHistogram) -> dict[str, int]:
    if h.count == 0:
        return {"count": 0, "p50": 0, "p99": 0, "p999": 0, "max": 0}
    return {
        "count": h.count,
        "p50": h.percentile(50),
        "p99": h.percentile(99),
        "p999": h.percentile(99.9),
        "max": int(h.h.get_max_value()),
    }


def buckets(h: LatencyHistogram) -> list[tuple[int, int | None, int]]:
    """``(lower edge µs, upper edge µs or None for the last, count)`` per ``BUCKET_EDGES_US`` bucket
    ``[edge, next edge)``, from the first bucket holding a value to the last (empty ones between kept, so a
    chart's x axis is even); ``[]`` when empty.

    A recorded value counts in the bucket of its HDR bin's lowest equivalent value (3 significant digits)."""
    if h.count == 0:
        return []
    counts = [0] * len(BUCKET_EDGES_US)
    for item in h.h.get_recorded_iterator():
        v = h.h.get_lowest_equivalent_value(item.value_iterated_to)
        i = bisect_right(BUCKET_EDGES_US, v) - 1
        counts[max(i, 0)] += item.count_added_in_this_iter_step
    used = [i for i, c in enumerate(counts) if c]
    upper = (*BUCKET_EDGES_US[1:], None)
    return [(BUCKET_EDGES_US[i], upper[i], counts[i]) for i in range(used[0], used[-1] + 1)]


async def merged_stages(r: Any) -> dict[str, tuple[LatencyHistogram, int, int]]:
    """Per stage, ``(histogram merged over the instances, instances merged, unreadable)`` from the histograms
    every service saves in Redis (``lat:<stage>``, one field per instance). A saved value that does not
    decode is skipped and counted, never an error."""
    from common import streams

    pipe = r.pipeline(transaction=False)
    for stage in STAGES:
        pipe.hgetall(streams.latency_key(stage))
    out = {}
    for stage, saved in zip(STAGES, await pipe.execute(), strict=True):
        merged, unreadable = LatencyHistogram(), 0
        for data in saved.values():
            try:
                merged.merge(LatencyHistogram.decode(data))
            except Exception:  # noqa: BLE001 - a foreign or truncated value: skipped, counted
                unreadable += 1
        out[stage] = (merged, len(saved) - unreadable, unreadable)
    return out
