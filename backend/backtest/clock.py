"""The simulated clock of a backtest: market time, read by every time source the engines use."""

from __future__ import annotations

__all__ = ["SimClock"]


class SimClock:
    """Event time (ns) of the ticks being handled; never goes backwards.

    The engines take it where live they read the machine's clocks: ``ns`` for wall time
    (``time.time_ns``: signal, intent and report stamps, the OMS, the portfolio guard's day),
    ``monotonic_ns`` / ``monotonic`` for intervals (the gateway's throttles, the account
    context's age and its in-flight intents' expiry). All three read the same instant, so
    an interval measured in a backtest is market time elapsed.
    """

    __slots__ = ("now",)

    def __init__(self, start_ns: int = 0) -> None:
        self.now = start_ns

    def advance(self, ts_ns: int) -> int:
        """Move to ``ts_ns`` (ignored when earlier: out-of-order ticks do not rewind time); the new now."""
        self.now = max(self.now, ts_ns)
        return self.now

    def ns(self) -> int:
        return self.now

    def monotonic_ns(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1e9
