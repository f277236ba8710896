"""HDR latency histograms per pipeline stage, mergeable across processes through Redis."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

__all__ = ["LatencyHistogram", "STAGES", "summarize"]

# Stages of the tick→fill path; each is recorded by the service that closes it.
STAGES = ("tick_to_signal", "signal_to_intent", "intent_to_fill", "tick_to_fill")

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_DIGITS = 3


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
