"""The OMS's working view of one order and its FIX-like state machine."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common.db import AMOUNT_SCALE
from common.messages import OrderIntent, OrdStatus

__all__ = ["OPEN", "TERMINAL", "TRANSITIONS", "IllegalTransition", "Order"]

S = OrdStatus
TRANSITIONS: dict[OrdStatus, frozenset[OrdStatus]] = {
    S.PENDING_NEW: frozenset({S.ACCEPTED, S.REJECTED, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELLED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.CANCELLED, S.EXPIRED}),
    # A cancel can be rejected (back to working), overtaken by fills or by the end of the day.
    S.PENDING_CANCEL: frozenset({S.CANCELLED, S.PARTIALLY_FILLED, S.FILLED, S.ACCEPTED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
OPEN = frozenset(TRANSITIONS) - TERMINAL
_ZERO = Decimal(0)


class IllegalTransition(Exception):
    """A state change the order state machine does not allow (a bug or a venue anomaly)."""


@dataclass(slots=True)
class Order:
    """One order: its intent fields, its state and its fills so far (all money in Decimal)."""

    client_order_id: str
    signal_id: str
    strategy: str
    symbol: str
    side: int
    order_type: str
    tif: str
    qty: Decimal
    limit_price: Decimal | None
    ref_price: Decimal
    tick_seq: int
    ts_event: int
    ts_ingest: int
    ts_signal: int
    ts_intent: int
    venue: str
    status: OrdStatus = OrdStatus.PENDING_NEW
    reject_reason: str | None = None
    cum_qty: Decimal = _ZERO
    avg_px: Decimal = _ZERO
    fees: Decimal = _ZERO
    ts_accepted: int | None = None
    ts_done: int | None = None
    fills: int = 0  # number of fills so far (fill ids are derived from it)
    reserved_notional: Decimal = _ZERO  # buy notional held against cash while open
    stop_price: Decimal | None = None  # STOP orders: the trigger price

    @classmethod
    def from_intent(cls, intent: OrderIntent, venue: str) -> Order:
        return cls(
            client_order_id=intent.client_order_id,
            signal_id=intent.signal_id,
            strategy=intent.strategy,
            symbol=intent.symbol,
            side=int(intent.side),
            order_type=intent.order_type.value,
            tif=intent.tif.value,
            qty=intent.qty,
            limit_price=intent.limit_price,
            stop_price=intent.stop_price,
            ref_price=intent.ref_price,
            tick_seq=intent.tick_seq,
            ts_event=intent.ts_event,
            ts_ingest=intent.ts_ingest,
            ts_signal=intent.ts_signal,
            ts_intent=intent.ts_intent,
            venue=venue,
        )

    @property
    def leaves_qty(self) -> Decimal:
        return _ZERO if self.status in TERMINAL else self.qty - self.cum_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def transition(self, to: OrdStatus) -> None:
        if to not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"{self.client_order_id}: {self.status} -> {to}")
        self.status = to

    def request_cancel(self) -> None:
        """A cancel was asked for: PENDING_CANCEL until the venue confirms or refuses it."""
        self.transition(OrdStatus.PENDING_CANCEL)

    def cancel_rejected(self) -> None:
        """The venue refused the cancel: back to working (ACCEPTED, or PARTIALLY_FILLED once filled)."""
        if self.status != OrdStatus.PENDING_CANCEL:
            raise IllegalTransition(f"{self.client_order_id}: cancel reject while {self.status}")
        self.status = OrdStatus.PARTIALLY_FILLED if self.cum_qty > _ZERO else OrdStatus.ACCEPTED

    def apply_fill(self, qty: Decimal, price: Decimal, fee: Decimal, ts: int) -> None:
        """Add one fill: cumulative quantity, average price, fees, status.

        A partial fill of an order whose cancel is pending keeps it PENDING_CANCEL (the
        cancel still stands; ``cancel_rejected`` gives PARTIALLY_FILLED if it is refused).
        """
        if qty <= _ZERO or self.cum_qty + qty > self.qty:
            raise IllegalTransition(f"{self.client_order_id}: fill of {qty} beyond order qty {self.qty}")
        new_cum = self.cum_qty + qty
        to = OrdStatus.FILLED if new_cum == self.qty else OrdStatus.PARTIALLY_FILLED
        if not (to == OrdStatus.PARTIALLY_FILLED and self.status == OrdStatus.PENDING_CANCEL):
            self.transition(to)
        self.avg_px = ((self.avg_px * self.cum_qty + price * qty) / new_cum).quantize(AMOUNT_SCALE)
        self.cum_qty = new_cum
        self.fees += fee
        self.fills += 1
        if to == OrdStatus.FILLED:
            self.ts_done = ts

    # -- persistence -------------------------------------------------------------------
    def row(self) -> dict[str, Any]:
        """Column values of the ``orders`` row."""
        return {
            "client_order_id": self.client_order_id,
            "signal_id": self.signal_id,
            "strategy": self.strategy,
            "symbol": self.symbol,
            "side": self.side,
            "order_type": self.order_type,
            "tif": self.tif,
            "qty": self.qty,
            "limit_price": self.limit_price,
            "stop_price": self.stop_price,
            "ref_price": self.ref_price,
            "status": str(self.status),
            "reject_reason": self.reject_reason,
            "cum_qty": self.cum_qty,
            "avg_px": self.avg_px,
            "fees": self.fees,
            "venue": self.venue,
            "tick_seq": self.tick_seq,
            "ts_event": self.ts_event,
            "ts_ingest": self.ts_ingest,
            "ts_signal": self.ts_signal,
            "ts_intent": self.ts_intent,
            "ts_accepted": self.ts_accepted,
            "ts_done": self.ts_done,
        }

    @classmethod
    def from_row(cls, r: Any, fills: int = 0) -> Order:
        """Rebuild from an ``orders`` row (a ``common.db.Order`` or a mapping with its columns)."""
        g = (lambda k: r[k]) if isinstance(r, dict) else (lambda k: getattr(r, k))
        return cls(
            client_order_id=g("client_order_id"),
            signal_id=g("signal_id"),
            strategy=g("strategy"),
            symbol=g("symbol"),
            side=int(g("side")),
            order_type=g("order_type"),
            tif=g("tif"),
            qty=g("qty"),
            limit_price=g("limit_price"),
            stop_price=g("stop_price"),
            ref_price=g("ref_price"),
            tick_seq=int(g("tick_seq")),
            ts_event=int(g("ts_event")),
            ts_ingest=int(g("ts_ingest")),
            ts_signal=int(g("ts_signal")),
            ts_intent=int(g("ts_intent")),
            venue=g("venue"),
            status=OrdStatus(g("status")),
            reject_reason=g("reject_reason"),
            cum_qty=g("cum_qty"),
            avg_px=g("avg_px"),
            fees=g("fees"),
            ts_accepted=g("ts_accepted"),
            ts_done=g("ts_done"),
            fills=fills,
        )
