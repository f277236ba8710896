"""The MCP broker venue: orders placed and cancelled through a broker's MCP tools.

The same client a real broker's MCP server would take (``strategy_engine.mcp_client``:
streamable HTTP, Kite-named tools, decimals exact). Tools used: ``place_order`` (with
``client_order_id`` = our client order id; the mock broker makes it idempotent, so a
placement whose answer was lost is retried safely), ``cancel_order``, ``get_orders``,
``get_trades`` and ``get_positions``.

Threads. The gateway's loop must not wait on the network for every order, so the venue
runs its own event loop in one worker thread; every broker call runs there, one at a
time, in the order asked (a cancel never overtakes the placement of its order):

* ``submit`` queues the placement and returns no events;
* ``cancel`` waits for the broker's answer (at most ``timeout_s``): True when the broker
  cancelled it; an order the broker already finished (or no answer) is a cancel reject;
* while any of our orders is working, the worker polls ``get_orders`` + ``get_trades``
  every ``poll_ms``; a new trade of one of our orders becomes a FILL (exec id
  ``<client order id>:<trade id>``, the broker's trade id as venue trade id), an order the
  broker ended without us asking (cancelled / rejected) becomes an EXPIRED with its
  message; ``poll()`` (called by the gateway each batch and when idle) hands them over.

``reconcile`` (once, on start) maps the gateway's open orders to the broker's by
``client_order_id``, returns the fills the database lacks and the orders the broker ended
as events, names the open orders the broker never received (the gateway routes them
once nothing is refused), and lists every other order the broker reports plus its net
positions (see ``execution.service``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from common.messages import Tick
from execution.order import Order
from execution.venues.base import EventKind, Reconciliation, Venue, VenueEvent, VenueOrder, bps_fee
from strategy_engine.mcp_client import BrokerError, BrokerUnavailable, McpBrokerClient

__all__ = ["McpBrokerVenue", "broker_args"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_BPS = Decimal(10_000)
_ENDED = {"CANCELLED", "REJECTED"}
_FINAL = _ENDED | {"COMPLETE"}
_VALIDITY = {"DAY": "DAY", "IOC": "IOC", "GTC": "DAY"}  # Kite has no GTC for regular orders


def broker_args(o: Order) -> dict[str, Any]:
    """``place_order`` arguments (Kite names) for an order."""
    args: dict[str, Any] = {
        "tradingsymbol": o.symbol,
        "transaction_type": "BUY" if o.side > 0 else "SELL",
        "quantity": str(o.qty),
        "product": "MIS",
        "validity": _VALIDITY.get(o.tif, "DAY"),
        "client_order_id": o.client_order_id,
    }
    if o.order_type == "LIMIT":
        args.update(order_type="LIMIT", price=str(o.limit_price))
    elif o.order_type == "STOP":
        args.update(order_type="SL-M", trigger_price=str(o.stop_price))
    else:
        args["order_type"] = "MARKET"
    return args


def _dec(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v or 0))


@dataclass(frozen=True, slots=True)
class _Raw:
    """A broker event, before it is bound to the gateway's current ``Order`` object."""

    kind: EventKind
    cid: str
    qty: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    fee: Decimal = Decimal(0)
    trade_id: str = ""
    text: str = ""


class McpBrokerVenue(Venue):
    """A broker reached through its MCP server (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        auth_header: str = "Authorization",
        auth_secret: str = "",
        timeout_s: float = 5.0,
        poll_ms: float = 50.0,
        fee_bps: Decimal = Decimal(0),
        min_fee: Decimal = Decimal(0),
        name: str = "mcp",
        client: McpBrokerClient | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.poll_s = poll_ms / 1000.0
        self.fee_rate = Decimal(fee_bps) / _BPS
        self.min_fee = Decimal(min_fee)
        self.client = client or McpBrokerClient(
            url, auth_header=auth_header, auth_secret=auth_secret, timeout_s=timeout_s,
            client_name="aitrader-execution",
        )
        # Gateway thread: the current Order object of every order we route (events are bound to it).
        self._orders: dict[str, Order] = {}
        self._out: queue.SimpleQueue[_Raw] = queue.SimpleQueue()
        self.unmatched = 0  # broker events for an order this process no longer holds
        # Worker thread only.
        self._cid_of: dict[str, str] = {}  # broker order id -> client order id
        self._bid_of: dict[str, str] = {}  # client order id -> broker order id
        self._seen: set[str] = set()  # broker trade ids already turned into fills
        self._final: set[str] = set()  # broker order ids whose end was handled
        self._cancelled: set[str] = set()  # broker order ids we cancelled (their end is not an event)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"McpBrokerVenue({self.url!r})"

    # -- the worker thread ---------------------------------------------------------------
    def _ensure(self) -> asyncio.AbstractEventLoop:
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name=f"venue-{self.name}", daemon=True)
            self._thread.start()
            self._started.wait()
        assert self._loop is not None
        return self._loop

    def _worker(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._started.set()
        while not self._stop.is_set():
            if any(b not in self._final for b in self._cid_of):
                try:
                    async with self._lock:
                        await self._poll_once()
                except BrokerUnavailable as e:
                    log.warning("venue %s: poll failed: %s", self.name, e)
                except Exception:  # keep polling; the next answer may be good
                    log.exception("venue %s: poll failed", self.name)
            try:
                await asyncio.wait_for(self._stop.wait(), self.poll_s)
            except TimeoutError:
                pass

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the worker (after the calls queued before it) and wait for its result."""
        loop = self._ensure()

        async def locked() -> T:
            assert self._lock is not None
            async with self._lock:
                return await coro

        fut = asyncio.run_coroutine_threadsafe(locked(), loop)
        return fut.result(timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        loop = self._ensure()

        async def locked() -> None:
            assert self._lock is not None
            async with self._lock:
                await coro

        asyncio.run_coroutine_threadsafe(locked(), loop)

    async def _place(self, order: Order) -> None:
        cid = order.client_order_id
        delay = 0.05
        while True:
            try:
                ans = await self.client.call("place_order", broker_args(order))
                break
            except BrokerUnavailable as e:
                # Placement is idempotent by client_order_id: retrying cannot place it twice.
                log.warning("venue %s: placing %s failed (%s); retrying in %.2fs", self.name, cid, e, delay)
                assert self._stop is not None
                if self._stop.is_set():
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except BrokerError as e:
                self._out.put(_Raw(EventKind.EXPIRED, cid, text=f"refused by the broker: {e}"[:500]))
                return
        bid = str(ans["order_id"])
        self._cid_of[bid], self._bid_of[cid] = cid, bid
        if ans.get("status") == "REJECTED":
            self._final.add(bid)
            self._out.put(_Raw(EventKind.EXPIRED, cid, text="rejected by the broker"))

    def _trade_event(self, cid: str, t: dict[str, Any]) -> _Raw:
        return _Raw(
            EventKind.FILL, cid, qty=_dec(t["quantity"]), price=_dec(t["average_price"]), fee=_dec(t.get("charges")),
            trade_id=str(t["trade_id"]),
        )

    async def _poll_once(self) -> None:
        orders, trades = await self.client.call_many([("get_orders", {}), ("get_trades", {})])
        for t in trades:
            cid = self._cid_of.get(str(t.get("order_id")))
            if cid is not None and str(t["trade_id"]) not in self._seen:
                self._seen.add(str(t["trade_id"]))
                self._out.put(self._trade_event(cid, t))
        for o in orders:
            bid = str(o.get("order_id"))
            cid = self._cid_of.get(bid)
            if cid is None or bid in self._final or o.get("status") not in _FINAL:
                continue
            self._final.add(bid)
            if o["status"] in _ENDED and bid not in self._cancelled:
                msg = o.get("status_message") or ""
                self._out.put(_Raw(EventKind.EXPIRED, cid, text=f"{o['status'].lower()} by the broker: {msg}"[:500]))

    # -- the Venue port (gateway thread) ---------------------------------------------------
    def fee(self, notional: Decimal) -> Decimal:
        return bps_fee(notional, self.fee_rate, self.min_fee)

    def submit(self, order: Order) -> list[VenueEvent]:
        self._orders[order.client_order_id] = order
        self._spawn(self._place(order))
        return []

    def resume(self, order: Order) -> list[VenueEvent]:
        # The broker keeps its orders across our restart: bind the reloaded object; ``reconcile``
        # places those the broker never received.
        self._orders[order.client_order_id] = order
        return []

    def cancel(self, client_order_id: str) -> bool:
        if client_order_id not in self._orders:
            return False
        abandoned = threading.Event()

        async def go() -> bool:
            bid = self._bid_of.get(client_order_id)
            if bid is None or bid in self._final:
                return False
            try:
                await self.client.call("cancel_order", {"order_id": bid})
            except (BrokerError, BrokerUnavailable) as e:
                log.warning("venue %s: cancel of %s refused: %s", self.name, client_order_id, e)
                return False
            if not abandoned.is_set():  # else the poll reports the broker's CANCELLED as an event
                self._cancelled.add(bid)
                self._final.add(bid)
            return True

        try:
            return self._call(go(), self.timeout_s * 2 + 1)
        except TimeoutError:
            abandoned.set()
            log.warning("venue %s: cancel of %s not answered in time", self.name, client_order_id)
            return False

    def on_ticks(self, ticks: Sequence[Tick]) -> list[VenueEvent]:
        return []  # the broker prices its own fills

    def working(self) -> list[str]:
        return [cid for cid, o in self._orders.items() if o.is_open]

    def forget(self) -> None:
        self._orders.clear()  # the broker keeps working them; ``resume`` binds the reloaded objects

    def poll(self) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        while True:
            try:
                r = self._out.get_nowait()
            except queue.Empty:
                return events
            o = self._orders.get(r.cid)
            if o is None:
                self.unmatched += 1
                log.error("venue %s: %s of %s, an order this gateway does not hold; not applied (the next "
                          "start's reconciliation lists it)", self.name, r.kind.value, r.cid)
                continue
            events.append(self._event(o, r))

    def _event(self, o: Order, r: _Raw) -> VenueEvent:
        if r.kind == EventKind.FILL:
            return VenueEvent(
                EventKind.FILL, o, qty=r.qty, price=r.price, fee=r.fee, exec_id=f"{o.client_order_id}:{r.trade_id}",
                venue_trade_id=r.trade_id, liquidity="taker",
            )
        return VenueEvent(EventKind.EXPIRED, o, text=r.text)

    def reconcile(self, open_orders: Sequence[Order], known_exec_ids: set[str]) -> Reconciliation:
        ours = {o.client_order_id: o for o in open_orders}
        for o in open_orders:
            self._orders[o.client_order_id] = o

        async def go() -> tuple[list[_Raw], list[str], list[VenueOrder], dict[str, Decimal]]:
            orders, trades, positions = await self.client.call_many(
                [("get_orders", {}), ("get_trades", {}), ("get_positions", {})]
            )
            raws: list[_Raw] = []
            others: list[VenueOrder] = []
            placed_here: set[str] = set()
            for v in orders:
                bid, cid = str(v["order_id"]), v.get("client_order_id") or ""
                if cid in ours and cid != bid:  # placed through place_order with our id
                    placed_here.add(cid)
                    self._cid_of[bid], self._bid_of[cid] = cid, bid
                    continue
                others.append(VenueOrder(
                    order_id=cid or bid, venue_order_id=bid, symbol=str(v.get("tradingsymbol")),
                    side=1 if v.get("transaction_type") == "BUY" else -1, qty=_dec(v.get("quantity")),
                    filled_qty=_dec(v.get("filled_quantity")), is_open=v.get("status") not in _FINAL,
                    status=str(v.get("status")),
                ))
            for t in trades:
                cid = self._cid_of.get(str(t.get("order_id")))
                if cid is None or cid not in ours:
                    continue
                self._seen.add(str(t["trade_id"]))
                if f"{cid}:{t['trade_id']}" not in known_exec_ids:
                    raws.append(self._trade_event(cid, t))
            for v in orders:
                bid = str(v["order_id"])
                cid = self._cid_of.get(bid)
                if cid in ours and v.get("status") in _FINAL:
                    self._final.add(bid)
                    if v["status"] in _ENDED:
                        raws.append(_Raw(EventKind.EXPIRED, cid, text=(
                            f"{v['status'].lower()} by the broker while the gateway was down: "
                            f"{v.get('status_message') or ''}")[:500]))
            unrouted = [cid for cid in ours if cid not in placed_here]  # durable here, never reached the broker
            pos = {str(p["tradingsymbol"]): _dec(p["quantity"]) for p in positions.get("net", [])}
            return raws, unrouted, others, pos

        raws, unrouted, others, pos = self._call(go(), self.timeout_s * 4 + 1)
        events = [self._event(ours[r.cid], r) for r in raws]
        return Reconciliation(events=events, unrouted=unrouted, others=others, positions=pos)

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread is not None:
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(self.timeout_s + 2)
            self._thread = None
