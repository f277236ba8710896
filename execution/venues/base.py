"""The venue port: where accepted orders are routed and where fills come from."""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from common.config import ConfigError
from common.db import AMOUNT_SCALE
from common.messages import Tick
from execution.order import Order

__all__ = [
    "EventKind", "Reconciliation", "ReconciliationFailed", "Venue", "VenueEvent", "VenueOrder", "bps_fee",
]


def bps_fee(notional: Decimal, rate: Decimal, min_fee: Decimal) -> Decimal:
    """A venue's fee for a fill of ``notional``: ``rate`` (bps / 10,000) of it, at least ``min_fee``."""
    return max(min_fee, (abs(notional) * rate).quantize(AMOUNT_SCALE, ROUND_HALF_UP))


class ReconciliationFailed(ConfigError):
    """The venue holds orders, fills or positions the gateway cannot account for: it refuses to start."""


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


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order the venue reports that is not one of the gateway's open orders."""

    order_id: str  # the gateway's client order id when the venue carries it, else the venue's own id
    venue_order_id: str
    symbol: str
    side: int
    qty: Decimal
    filled_qty: Decimal
    is_open: bool
    status: str  # the venue's word for it


@dataclass(slots=True)
class Reconciliation:
    """What the venue holds, compared with the gateway's open orders (``Venue.reconcile``).

    ``events``: resolved safely by the venue's own account of known orders (fills the
    database lacks, orders the venue ended) — the gateway applies and audits them.
    ``unrouted``: open orders the venue never received (the gateway routes them once
    nothing is refused). ``others``: every
    other order the venue reports (the gateway checks each against its database).
    ``positions``: the venue's net position per symbol, or None when it keeps none.
    """

    events: list[VenueEvent] = field(default_factory=list)
    unrouted: list[str] = field(default_factory=list)
    others: list[VenueOrder] = field(default_factory=list)
    positions: dict[str, Decimal] | None = None


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

    def forget(self) -> None:
        """Before the gateway reloads its open orders from the database (which then ``resume``).

        Default (an in-process venue whose state dies with the process): cancel what works.
        A remote venue keeps its orders and only drops its references to the old ``Order`` objects.
        """
        for cid in self.working():
            self.cancel(cid)

    def poll(self) -> list[VenueEvent]:
        """Events that arrived since the last call (a venue that reports asynchronously); default none."""
        return []

    def reconcile(self, open_orders: Sequence[Order], known_exec_ids: set[str]) -> Reconciliation:
        """Compare the gateway's open orders (already ``resume``d) and their recorded fills with the venue.

        May block (network); the gateway calls it once on start, off its event loop.
        Default (in-process venue): it holds exactly what was resumed, so nothing to report.
        """
        return Reconciliation()

    def close(self) -> None:
        """Release connections and threads (on stop)."""

    @property
    def awaits_ticks(self) -> bool:
        """True while a working order can only progress on market data (the gateway then reads every tick at once)."""
        return False
