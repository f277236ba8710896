"""A deterministic simulated venue: orders fill against the next tick of their symbol.

"Next tick" means the first tick whose ``seq`` is greater than the intent's ``tick_seq``
(the tick the decision was made on). The result does not depend on whether the gateway
read that tick before or after the intent: recent ticks are kept in a small ring per
symbol, so an order whose next tick was already seen fills at once against the earliest
such tick; otherwise it waits for it.

Fill price: a trade tick's price, or for a quote the ask (buy) / bid (sell); then slippage
in basis points against the order, rounded to the instrument's tick size away from the
trader. A limit order fills only when that market price is at or better than its limit
(and never beyond the limit); an IOC limit that does not cross on its next tick expires.
Fee = max(min_fee, notional x fee_bps). Orders fill in full (partial fills come later).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from common.db import AMOUNT_SCALE
from common.instruments import Instruments
from common.messages import Tick, TickType
from execution.order import Order
from execution.venues.base import EventKind, Venue, VenueEvent

__all__ = ["SimulatedVenue", "fill_ids"]

_BPS = Decimal(10_000)
_ONE = Decimal(1)
_ZERO = Decimal(0)


def fill_ids(venue: str, client_order_id: str, fill_no: int) -> tuple[str, str]:
    """Deterministic (exec_id, venue_trade_id) of fill number ``fill_no`` (1-based) of an order."""
    h = hashlib.blake2b(f"{client_order_id}|{fill_no}".encode(), digest_size=10).hexdigest()
    return f"{client_order_id}:F{fill_no}", f"{venue}-{h}"


class SimulatedVenue(Venue):
    """In-process matching against the tick stream (see the module docstring)."""

    def __init__(
        self,
        instruments: Instruments,
        *,
        slippage_bps: Decimal = Decimal(0),
        fee_bps: Decimal = Decimal(0),
        min_fee: Decimal = Decimal(0),
        ring_size: int = 256,
        name: str = "simulator",
    ) -> None:
        self.name = name
        self.instruments = instruments
        self.slip = Decimal(slippage_bps) / _BPS
        self.fee_rate = Decimal(fee_bps) / _BPS
        self.min_fee = Decimal(min_fee)
        self.ring_size = ring_size
        self._rings: dict[str, deque[Tick]] = {}
        self._evicted: dict[str, int] = {}  # highest seq pushed out of each ring
        self._waiting: dict[str, list[Order]] = {}
        self._ids: dict[str, Order] = {}
        self.ring_misses = 0  # orders whose next tick had already left the ring
        self.seq_resets = 0  # a symbol's seq went backwards (a new session / replay)

    # -- pricing -----------------------------------------------------------------------
    def fee(self, notional: Decimal) -> Decimal:
        return max(self.min_fee, (abs(notional) * self.fee_rate).quantize(AMOUNT_SCALE, ROUND_HALF_UP))

    def price(self, order: Order, tick: Tick) -> Decimal | None:
        """The fill price of ``order`` on ``tick``, or None when the tick cannot fill it."""
        if tick.type == TickType.TRADE:
            raw = tick.price
        else:
            raw = tick.ask if order.side > 0 else tick.bid
        if raw <= 0.0:
            return None  # a one-sided quote without the side this order needs
        base = Decimal(repr(raw))  # the float's shortest exact decimal spelling
        step = self.instruments.get(order.symbol).tick_size
        limit = order.limit_price
        if order.side > 0:
            if limit is not None and base > limit:
                return None
            px = (base * (_ONE + self.slip) / step).to_integral_value(ROUND_CEILING) * step
            return min(px, limit) if limit is not None else px
        if limit is not None and base < limit:
            return None
        px = (base * (_ONE - self.slip) / step).to_integral_value(ROUND_FLOOR) * step
        if px <= _ZERO:
            px = step
        return max(px, limit) if limit is not None else px

    def _fill(self, order: Order, tick: Tick, px: Decimal) -> VenueEvent:
        qty = order.qty - order.cum_qty
        exec_id, trade_id = fill_ids(self.name, order.client_order_id, order.fills + 1)
        return VenueEvent(
            EventKind.FILL, order, qty=qty, price=px, fee=self.fee(qty * px),
            exec_id=exec_id, venue_trade_id=trade_id, tick_seq=tick.seq,
        )

    def _match(self, order: Order, tick: Tick) -> VenueEvent | None:
        """Try ``order`` on one tick after its decision tick; an event, or None to keep waiting."""
        px = self.price(order, tick)
        if px is not None:
            return self._fill(order, tick, px)
        if order.limit_price is not None and order.tif == "IOC":
            return VenueEvent(EventKind.EXPIRED, order, tick_seq=tick.seq, text="IOC limit did not cross")
        return None

    # -- the Venue port ------------------------------------------------------------------
    def submit(self, order: Order) -> list[VenueEvent]:
        ring = self._rings.get(order.symbol)
        if ring:
            if self._evicted.get(order.symbol, -1) > order.tick_seq:
                self.ring_misses += 1  # best effort: the earliest tick still held
            for tick in ring:
                if tick.seq > order.tick_seq:
                    ev = self._match(order, tick)
                    if ev is not None:
                        return [ev]
        self._ids[order.client_order_id] = order
        self._waiting.setdefault(order.symbol, []).append(order)
        return []

    def cancel(self, client_order_id: str) -> bool:
        order = self._ids.pop(client_order_id, None)
        if order is None:
            return False
        waiting = self._waiting.get(order.symbol)
        if waiting:
            waiting[:] = [o for o in waiting if o.client_order_id != client_order_id]
        return True

    def on_ticks(self, ticks: Sequence[Tick]) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        rings = self._rings
        for tick in ticks:
            sym = tick.symbol
            ring = rings.get(sym)
            if ring is None:
                ring = rings[sym] = deque(maxlen=self.ring_size)
            elif ring:
                last = ring[-1].seq
                if tick.seq == last:
                    continue  # the same tick again (a redelivered batch)
                if tick.seq < last:
                    self.seq_resets += 1
                    ring.clear()
                    self._evicted.pop(sym, None)
                elif len(ring) == self.ring_size:
                    self._evicted[sym] = ring[0].seq
            ring.append(tick)
            waiting = self._waiting.get(sym)
            if waiting:
                keep: list[Order] = []
                for order in waiting:
                    ev = self._match(order, tick) if tick.seq > order.tick_seq else None
                    if ev is None:
                        keep.append(order)
                    else:
                        events.append(ev)
                        self._ids.pop(order.client_order_id, None)
                waiting[:] = keep
        return events

    def working(self) -> list[str]:
        return list(self._ids)

    @property
    def awaits_ticks(self) -> bool:
        return bool(self._ids)
