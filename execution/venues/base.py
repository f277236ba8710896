"""The venue port: where accepted orders are routed and where fills come from."""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from common.messages import Tick
from execution.order import Order

__all__ = ["EventKind", "Venue", "VenueEvent"]


class EventKind(enum.Enum):
    FILL = "fill"
    EXPIRED = "expired"  # the venue ended the order unfilled (e.g. an IOC limit that did not cross)


@dataclass(frozen=True, slots=True)
class VenueEvent:
    """Something the venue did to one order (a fill, or an expiry)."""

    kind: EventKind
    order: Order
    qty: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    exec_id: str = ""
    venue_trade_id: str = ""
    liquidity: str = "taker"
    tick_seq: int = 0  # the market event that caused it
    text: str = ""


class Venue(abc.ABC):
    """A place orders are routed to. Implementations must be deterministic for a given input."""

    name: str = "venue"

    @abc.abstractmethod
    def submit(self, order: Order) -> list[VenueEvent]:
        """Route an accepted (already durable) order; returns what happened at once, if anything."""

    def resume(self, order: Order) -> list[VenueEvent]:
        """Route an open order again after a restart (it may have worked before); default: ``submit``."""
        return self.submit(order)

    @abc.abstractmethod
    def cancel(self, client_order_id: str) -> bool:
        """Pull a working order; True when it was working and is now gone."""

    @abc.abstractmethod
    def on_ticks(self, ticks: Sequence[Tick]) -> list[VenueEvent]:
        """Market data for the venue (a simulator matches against it; a broker may ignore it)."""

    @abc.abstractmethod
    def fee(self, notional: Decimal) -> Decimal:
        """The fee of a fill of ``notional`` (also used by pre-trade checks as an estimate)."""

    def working(self) -> list[str]:
        """Client order ids currently working at the venue."""
        return []

    @property
    def awaits_ticks(self) -> bool:
        """True while a working order can only progress on market data (the gateway then reads every tick at once)."""
        return False
