"""Automatic kill triggers (RELIABILITY B5): conditions that halt the gateway on their own.

Configured under ``kill_triggers:`` in the risk file (``config/risk.yml``); every threshold is
optional and ``null`` or ``0`` disables it. ``TriggerMonitor`` is fed by the OMS (ticks, order
decisions, equity) and by the gateway service (heartbeats of upstream services), all timed on
the OMS clock, and ``evaluate`` names the first trigger whose condition holds. The OMS then
engages HALTED at global scope as actor ``auto:<trigger>`` (see ``OrderManager.check_triggers``).

Triggers watch only while the global scope is ACTIVE. Leaving ACTIVE clears the reject
streak, the message-rate window and the heartbeat watch; each (re)arming, at start and after
a release, starts the drawdown peak and the market data clock afresh. The daily loss is measured from the equity at the
first evaluation of the UTC day (or at the gateway's start, when that is later).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from common.config import ConfigError

log = logging.getLogger(__name__)

__all__ = ["TRIGGER_KEYS", "TriggerConfig", "TriggerMonitor", "Trip", "number"]

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
TRIGGER_KEYS = (
    "daily_loss", "drawdown", "reject_streak", "message_rate_denials", "message_rate_window_s",
    "stale_market_data_s", "upstream_silence_s", "upstream_services",
)
# Reject codes that do not count towards the reject streak: they say the gateway is already
# restricted (a scope halted or reducing), not that something upstream misbehaves.
_NOT_STREAK = frozenset({"KILL_SWITCH", "REDUCING_ONLY"})


@dataclass(frozen=True, slots=True)
class TriggerConfig:
    """Thresholds of the automatic triggers; None = disabled."""

    daily_loss: Decimal | None = None  # P&L since the UTC day start below -daily_loss (account currency)
    drawdown: Decimal | None = None  # equity below its peak by more than this (account currency)
    reject_streak: int | None = None  # this many consecutive rejected orders
    message_rate_denials: int | None = None  # more than this many MESSAGE_RATE rejects within the window
    message_rate_window_s: Decimal = Decimal(10)
    stale_market_data_s: Decimal | None = None  # no tick at all for this long while orders are open
    upstream_silence_s: Decimal | None = None  # an upstream service seen alive, then silent this long
    upstream_services: tuple[str, ...] = ("strategy_engine", "pattern_engine")

    @classmethod
    def from_dict(cls, doc: Any, path: Path) -> TriggerConfig:
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise ConfigError(f"risk file {path}: 'kill_triggers' must be a mapping, got {doc!r}")
        for k in doc:
            if k not in TRIGGER_KEYS:
                raise ConfigError(f"risk file {path}: unknown key 'kill_triggers.{k}'")
        out: dict[str, Any] = {}
        for k in ("daily_loss", "drawdown", "stale_market_data_s", "upstream_silence_s", "message_rate_window_s"):
            if k in doc:
                out[k] = _amount(doc[k], k, path)
        if out.get("message_rate_window_s", 1) is None:
            raise ConfigError(f"risk file {path}: kill_triggers.message_rate_window_s must be a number > 0")
        for k in ("reject_streak", "message_rate_denials"):
            if k in doc:
                v = _amount(doc[k], k, path)
                if v is not None and (v != v.to_integral_value() or v > 10**9):
                    raise ConfigError(f"risk file {path}: kill_triggers.{k} must be a whole number, got {doc[k]!r}")
                out[k] = None if v is None else int(v)
        if "upstream_services" in doc:
            svcs = doc["upstream_services"]
            if svcs is None:
                svcs = []
            if not isinstance(svcs, list) or not all(isinstance(s, str) and s for s in svcs):
                raise ConfigError(f"risk file {path}: kill_triggers.upstream_services must be a list of service "
                                  f"names, got {svcs!r}")
            out["upstream_services"] = tuple(svcs)
        return cls(**out)

    def as_dict(self) -> dict[str, Any]:
        def s(v: Any) -> Any:
            return str(v) if isinstance(v, Decimal) else v

        return {k: (list(v) if isinstance(v := getattr(self, k), tuple) else s(v)) for k in TRIGGER_KEYS}


def number(value: Any, where: str, path: Path, kind: str = "a number") -> Decimal:
    """``value`` of the risk file's key ``where`` as a Decimal (not yet range-checked), or a
    ``ConfigError`` saying it must be ``kind``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigError(f"risk file {path}: {where} must be {kind}, got {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation as e:
        raise ConfigError(f"risk file {path}: {where} must be {kind}, got {value!r}") from e


def _amount(value: Any, key: str, path: Path) -> Decimal | None:
    """A threshold: a finite number >= 0; None or 0 disables it."""
    if value is None:
        return None
    d = number(value, f"kill_triggers.{key}", path, "a number or null")
    if not d.is_finite() or d < 0 or d.adjusted() >= 18:
        raise ConfigError(f"risk file {path}: kill_triggers.{key} must be a finite number >= 0, got {value!r}")
    return d if d > 0 else None


@dataclass(frozen=True, slots=True)
class Trip:
    """A trigger whose condition holds."""

    trigger: str  # daily_loss, drawdown, reject_streak, message_rate, stale_market_data, upstream_silence
    reason: str  # with the numbers
    args: dict[str, str]


class TriggerMonitor:
    """The triggers' state; every time is a reading of the OMS clock (ns)."""

    def __init__(self, config: TriggerConfig) -> None:
        self.reconfigure(config)
        self.armed = False
        self.day = -1
        self.day_start: Decimal | None = None
        self.peak: Decimal | None = None
        self.streak = 0
        self.denials: deque[int] = deque()
        self.last_tick = 0
        self.seen: dict[str, int] = {}  # upstream service -> when its last heartbeat was observed

    def reconfigure(self, config: TriggerConfig) -> None:
        """Evaluate ``config``'s thresholds from now on; what was observed so far (the day's
        start, the peak, the streak, denials, heartbeats) is kept."""
        self.config = c = config
        self._window_ns = int(c.message_rate_window_s * NS_PER_S)
        self._stale_ns = int(c.stale_market_data_s * NS_PER_S) if c.stale_market_data_s else None
        self._silence_ns = int(c.upstream_silence_s * NS_PER_S) if c.upstream_silence_s else None
        self._watched = frozenset(c.upstream_services)

    @property
    def enabled(self) -> bool:
        c = self.config
        return any(v is not None for v in (c.daily_loss, c.drawdown, c.reject_streak, c.message_rate_denials,
                                           self._stale_ns, self._silence_ns))

    def arm(self, now: int, equity: Decimal) -> None:
        """Start watching (at start, after a release): the drawdown peak and the market data clock start now."""
        self.armed = True
        if self.peak is None:  # kept when restored from the database (``restore``); reset by ``disarm``
            self.peak = equity
        self.last_tick = now

    def disarm(self) -> None:
        """Stop watching (the global scope is not ACTIVE): what led here is not counted again."""
        self.armed = False
        self.peak = None  # the drawdown counts from the next arm (a release), not from before the halt
        self.streak = 0
        self.denials.clear()
        self.seen.clear()

    # -- what survives a restart ----------------------------------------------------------
    def baselines(self) -> dict[str, str | int] | None:
        """The day's starting equity and the drawdown peak, as stored (``gateway_state``), or None before any."""
        if self.day_start is None and self.peak is None:
            return None
        return {"day": self.day, "day_start": None if self.day_start is None else str(self.day_start),
                "peak": None if self.peak is None else str(self.peak)}

    def restore(self, saved: dict[str, Any] | None) -> None:
        """Continue from stored baselines: a restart does not forgive the day's loss or the drawdown.

        Unreadable values are ignored (the baselines then start afresh, as on a first start)."""
        if not isinstance(saved, dict):
            return
        try:
            day = int(saved.get("day", -1))
            day_start = None if saved.get("day_start") is None else Decimal(str(saved["day_start"]))
            peak = None if saved.get("peak") is None else Decimal(str(saved["peak"]))
        except (ValueError, TypeError, ArithmeticError):
            log.warning("kill triggers: stored baselines unreadable (%r); starting afresh", saved)
            return
        if any(v is not None and not v.is_finite() for v in (day_start, peak)):
            log.warning("kill triggers: stored baselines not finite (%r); starting afresh", saved)
            return
        self.day, self.day_start, self.peak = day, day_start, peak

    # -- inputs --------------------------------------------------------------------------
    def on_tick(self, now: int) -> None:
        self.last_tick = now

    def on_order(self, code: str | None, now: int) -> None:
        """An order decision: None = accepted, else its reject code."""
        if code is None:
            self.streak = 0
            return
        if code == "MESSAGE_RATE" and self.config.message_rate_denials is not None:
            self.denials.append(now)
        if code not in _NOT_STREAK:
            self.streak += 1

    def on_heartbeat(self, service: str, status: str, now: int) -> None:
        if service not in self._watched:
            return
        if status == "stopping":
            self.seen.pop(service, None)  # a deliberate stop is not silence
        else:
            self.seen[service] = now

    # -- the check -----------------------------------------------------------------------
    def evaluate(self, now: int, equity: Decimal, open_orders: int) -> Trip | None:
        c = self.config
        day = now // NS_PER_DAY
        if day != self.day:
            self.day, self.day_start = day, equity
        if self.peak is None or equity > self.peak:
            self.peak = equity
        if c.daily_loss is not None and self.day_start is not None:
            pnl = equity - self.day_start
            if pnl < -c.daily_loss:
                return Trip("daily_loss", f"daily P&L {pnl} below -{c.daily_loss} (equity {equity}, "
                            f"{self.day_start} at the UTC day start)",
                            {"value": str(pnl), "threshold": str(-c.daily_loss)})
        if c.drawdown is not None:
            dd = self.peak - equity
            if dd > c.drawdown:
                return Trip("drawdown", f"drawdown {dd} beyond {c.drawdown} (equity {equity}, peak {self.peak})",
                            {"value": str(dd), "threshold": str(c.drawdown)})
        if c.reject_streak is not None and self.streak >= c.reject_streak:
            return Trip("reject_streak", f"{self.streak} consecutive rejected orders (limit {c.reject_streak})",
                        {"value": str(self.streak), "threshold": str(c.reject_streak)})
        if c.message_rate_denials is not None:
            edge = now - self._window_ns
            while self.denials and self.denials[0] <= edge:
                self.denials.popleft()
            if len(self.denials) > c.message_rate_denials:
                return Trip("message_rate", f"{len(self.denials)} MESSAGE_RATE rejects in {c.message_rate_window_s}s "
                            f"(more than {c.message_rate_denials})",
                            {"value": str(len(self.denials)), "threshold": str(c.message_rate_denials)})
        if self._stale_ns is not None and open_orders and now - self.last_tick > self._stale_ns:
            age = (now - self.last_tick) / NS_PER_S
            return Trip("stale_market_data", f"no market data for {age:.1f}s with {open_orders} open orders "
                        f"(limit {c.stale_market_data_s}s)",
                        {"value": f"{age:.3f}", "threshold": str(c.stale_market_data_s)})
        if self._silence_ns is not None:
            for svc, t in sorted(self.seen.items()):
                if now - t > self._silence_ns:
                    age = (now - t) / NS_PER_S
                    return Trip("upstream_silence", f"no heartbeat from {svc} for {age:.1f}s "
                                f"(limit {c.upstream_silence_s}s)",
                                {"value": f"{age:.3f}", "threshold": str(c.upstream_silence_s), "service": svc})
        return None
