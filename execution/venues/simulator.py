"""A deterministic simulated venue: orders work against the ticks after their decision tick.

"After" means ticks whose ``seq`` is greater than the intent's ``tick_seq`` (the tick the
decision was made on). The result does not depend on whether the gateway read those ticks
before or after the intent: recent ticks are kept in a small ring per symbol, so an order
whose next ticks were already seen is matched against them at once, in seq order;
otherwise it waits for them.

Latency. With ``latency_ms`` (``AITRADER_EX_SIM_LATENCY_MS``) an order reaches the venue
that long after its decision tick, in market time: it works only on ticks whose ts_event is
at or after the decision tick's ts_event + latency ("the first tick after" then means the
first tick after its arrival). Market time, not wall time, so a replay gives the same
fills at any speed. An order resumed after a restart has arrived.

Prices. A taker fill (a market order, a triggered stop, or a limit order on its arrival
tick, i.e. the first tick after its decision tick) is priced at a trade tick's price, or
for a quote at the ask (buy) / bid (sell); then slippage in basis points against the
order, rounded to the instrument's tick size away from the trader; a limit order fills
only when that price is at or better than its limit and never beyond it. A limit order
that did not fill in full on its arrival tick then rests (queue-free but honest): it
fills only when the market trades *through* its limit (a trade strictly below a buy
limit / above a sell limit, or a quote whose ask / bid crosses it), at its limit price
("maker", no slippage); a trade exactly at the limit does not fill it (the queue at that
price is not modelled, so no fill is assumed).

Sizes. A fill takes at most the displayed size of the tick that fills it: a trade's size,
the ask size (buy) or bid size (sell) of a quote, rounded down to whole lots; the rest
keeps working (PARTIALLY_FILLED) on later ticks. A tick without a size (0) fills the
order in full. Displayed size is not depleted by our own orders on the same tick
(queue-free): each order is capped by it independently.

Order types and time in force:

* STOP: triggers on the first tick after its decision tick where the market is at or
  through the stop (buy: trade price / ask >= stop; sell: trade price / bid <= stop), then
  fills as a market order on that tick (taker, with slippage, capped by displayed size);
  a partly filled stop keeps working as a market order.
* IOC: what can fill on its first priced tick (for a stop: its trigger tick) fills, the
  rest expires (an EXPIRED event). A tick without the price the order needs (a one-sided
  quote) is skipped, for every order.
* GTC: works until filled or cancelled.
* DAY: expires on the first tick of its symbol whose ``ts_event`` is at or past the end of
  the order's trading day. Instruments have no session times yet, so the trading day ends
  at the UTC midnight after the order's ``ts_event`` (the decision tick's exchange time).

Fee = max(min_fee, notional x fee_bps) per fill. Fill ids are deterministic from the order
id and the fill number (``fill_ids``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from common.instruments import Instruments
from common.messages import Tick, TickType
from execution.order import Order
from execution.venues.base import EventKind, Venue, VenueEvent, bps_fee

__all__ = ["NS_PER_DAY", "SimulatedVenue", "day_end", "fill_ids"]

_BPS = Decimal(10_000)
_ONE = Decimal(1)
_ZERO = Decimal(0)
NS_PER_DAY = 86_400 * 1_000_000_000


def fill_ids(venue: str, client_order_id: str, fill_no: int) -> tuple[str, str]:
    """Deterministic (exec_id, venue_trade_id) of fill number ``fill_no`` (1-based) of an order."""
    h = hashlib.blake2b(f"{client_order_id}|{fill_no}".encode(), digest_size=10).hexdigest()
    return f"{client_order_id}:F{fill_no}", f"{venue}-{h}"


def day_end(ts_event: int) -> int:
    """End of the trading day of a DAY order decided at ``ts_event`` (the next UTC midnight, ns)."""
    return (ts_event // NS_PER_DAY + 1) * NS_PER_DAY


@dataclass(slots=True)
class _Working:
    """The venue's view of one working order."""

    order: Order
    leaves: Decimal
    fills: int  # fills so far (the next fill is number fills + 1)
    resting: bool  # a limit order past its arrival tick (fills only when the market trades through)
    triggered: bool  # a STOP whose stop price was reached (it then works as a market order)
    expires_at: int | None  # DAY orders: ticks at or after this ts_event expire it
    arrives_at: int = 0  # market time (ts_event) the order reaches the venue: the latency model


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
        latency_ms: float = 0.0,
        name: str = "simulator",
    ) -> None:
        self.name = name
        # Order entry latency in market time: an order decided on a tick at ts_event T works
        # only on ticks at or after T + latency (0: the next tick). Market time, not wall time,
        # so a replay gives the same fills however fast it runs.
        self.latency_ns = int(latency_ms * 1_000_000)
        self.instruments = instruments
        self.slip = Decimal(slippage_bps) / _BPS
        self.fee_rate = Decimal(fee_bps) / _BPS
        self.min_fee = Decimal(min_fee)
        self.ring_size = ring_size
        self._rings: dict[str, deque[Tick]] = {}
        self._evicted: dict[str, int] = {}  # highest seq pushed out of each ring
        self._waiting: dict[str, list[_Working]] = {}
        self._ids: dict[str, _Working] = {}
        self.ring_misses = 0  # orders whose next tick had already left the ring
        self.seq_resets = 0  # a symbol's seq went backwards (a new session / replay)

    # -- pricing -----------------------------------------------------------------------
    def fee(self, notional: Decimal) -> Decimal:
        return bps_fee(notional, self.fee_rate, self.min_fee)

    @staticmethod
    def _market(order: Order, tick: Tick) -> float:
        """The tick's price on the side ``order`` trades against (0.0 when the tick lacks it)."""
        if tick.type == TickType.TRADE:
            return tick.price
        return tick.ask if order.side > 0 else tick.bid

    def price(self, order: Order, tick: Tick) -> Decimal | None:
        """The taker fill price of ``order`` on ``tick``, or None when the tick cannot fill it."""
        raw = self._market(order, tick)
        if raw <= 0.0:
            return None  # a one-sided quote without the side this order needs
        base = Decimal(repr(raw))  # the float's shortest exact decimal spelling
        step = self.instruments.get(order.symbol).tick_size
        limit = order.limit_price if order.order_type == "LIMIT" else None
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

    def _displayed(self, order: Order, tick: Tick) -> Decimal | None:
        """Whole lots shown on the tick for ``order``'s side; None when the tick has no size."""
        if tick.type == TickType.TRADE:
            size = tick.size
        else:
            size = tick.ask_size if order.side > 0 else tick.bid_size
        if size <= 0.0:
            return None
        return self.instruments.get(order.symbol).round_qty(Decimal(repr(size)))

    @staticmethod
    def _stop_reached(order: Order, raw: float) -> bool:
        stop = order.stop_price
        assert stop is not None
        px = Decimal(repr(raw))
        return px >= stop if order.side > 0 else px <= stop

    def _fill(self, w: _Working, tick: Tick, px: Decimal, liquidity: str) -> VenueEvent | None:
        shown = self._displayed(w.order, tick)
        qty = w.leaves if shown is None else min(w.leaves, shown)
        if qty <= _ZERO:
            return None  # less than a lot shown
        w.fills += 1
        w.leaves -= qty
        exec_id, trade_id = fill_ids(self.name, w.order.client_order_id, w.fills)
        return VenueEvent(
            EventKind.FILL, w.order, qty=qty, price=px, fee=self.fee(qty * px),
            exec_id=exec_id, venue_trade_id=trade_id, liquidity=liquidity, tick_seq=tick.seq,
        )

    def _step(self, w: _Working, tick: Tick) -> tuple[list[VenueEvent], bool]:
        """Work ``w`` on one tick after its decision tick: (events, done)."""
        o = w.order
        if w.expires_at is not None and tick.ts_event >= w.expires_at:
            return [VenueEvent(EventKind.EXPIRED, o, tick_seq=tick.seq, text="DAY order: end of its trading day")], True
        if tick.ts_event < w.arrives_at:
            return [], False  # still on its way to the venue
        raw = self._market(o, tick)
        if raw <= 0.0:
            return [], False  # the tick lacks the side this order needs
        if o.order_type == "STOP" and not w.triggered:
            if not self._stop_reached(o, raw):
                return [], False
            w.triggered = True
        ev: VenueEvent | None = None
        if w.resting:
            limit = o.limit_price
            assert limit is not None
            base = Decimal(repr(raw))
            if (base < limit) if o.side > 0 else (base > limit):
                ev = self._fill(w, tick, limit, "maker")
        else:
            px = self.price(o, tick)
            if px is not None:
                ev = self._fill(w, tick, px, "taker")
            if o.order_type == "LIMIT":
                w.resting = True  # past its arrival tick
        events = [ev] if ev is not None else []
        if w.leaves <= _ZERO:
            return events, True
        if o.tif == "IOC":
            text = "IOC: nothing filled on its first tick" if not events else f"IOC: {w.leaves} unfilled on its first tick"
            events.append(VenueEvent(EventKind.EXPIRED, o, tick_seq=tick.seq, text=text))
            return events, True
        return events, False

    # -- the Venue port ------------------------------------------------------------------
    def submit(self, order: Order) -> list[VenueEvent]:
        return self._enter(order, resumed=False)

    def resume(self, order: Order) -> list[VenueEvent]:
        return self._enter(order, resumed=True)

    def _enter(self, order: Order, resumed: bool) -> list[VenueEvent]:
        w = _Working(
            order=order,
            leaves=order.qty - order.cum_qty,
            fills=order.fills,
            # A reloaded limit order is past its arrival tick; a stop that has fills was triggered.
            resting=order.order_type == "LIMIT" and (resumed or order.cum_qty > _ZERO),
            triggered=order.cum_qty > _ZERO,
            expires_at=day_end(order.ts_event) if order.tif == "DAY" else None,
            # A resumed order (after a restart) reached the venue long ago.
            arrives_at=0 if resumed or not self.latency_ns else order.ts_event + self.latency_ns,
        )
        events: list[VenueEvent] = []
        ring = self._rings.get(order.symbol)
        if ring:
            if self._evicted.get(order.symbol, -1) > order.tick_seq:
                self.ring_misses += 1  # best effort: the earliest ticks still held
            for tick in ring:
                if tick.seq > order.tick_seq:
                    evs, done = self._step(w, tick)
                    events.extend(evs)
                    if done:
                        return events
        self._ids[order.client_order_id] = w
        self._waiting.setdefault(order.symbol, []).append(w)
        return events

    def cancel(self, client_order_id: str) -> bool:
        # O(1): the symbol's waiting list drops it at its next tick (a kill switch cancels
        # hundreds at once; rebuilding the list per cancel made that quadratic).
        return self._ids.pop(client_order_id, None) is not None

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
                keep: list[_Working] = []
                ids = self._ids
                for w in waiting:
                    if ids.get(w.order.client_order_id) is not w:
                        continue  # cancelled
                    if tick.seq <= w.order.tick_seq:
                        keep.append(w)
                        continue
                    evs, done = self._step(w, tick)
                    events.extend(evs)
                    if done:
                        self._ids.pop(w.order.client_order_id, None)
                    else:
                        keep.append(w)
                waiting[:] = keep
        return events

    def working(self) -> list[str]:
        return list(self._ids)

    @property
    def awaits_ticks(self) -> bool:
        return bool(self._ids)
