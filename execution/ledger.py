"""Orders and positions rebuilt from execution reports alone, in any order, any number of times.

A consumer of ``ex:events`` may see a report twice (a redelivery, an outbox republish) or out
of order (several readers, a replay). ``Ledger.apply`` makes the result independent of both:

* a report is applied once, by ``exec_id``;
* fills (``last_qty > 0``) are summed into positions and cash — addition commutes, so their
  order does not matter; an alert report (reason ``LATE_FILL``, published on ``sys:alerts``,
  never on ``ex:events``) is never booked even if it is fed in;
* an order's state is the one of its most advanced report: terminal before open, then the
  higher ``cum_qty``, then the later step of the cancel flow (a cancel reject, which always
  follows its PENDING_CANCEL, before that PENDING_CANCEL before ACCEPTED / PARTIALLY_FILLED
  before PENDING_NEW). Cumulative quantity never goes back and a terminal order never reopens.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from common.messages import ExecutionReport, OrdStatus

__all__ = ["Ledger", "OrderView"]

_ZERO = Decimal(0)
LATE_FILL = "LATE_FILL"  # the OMS's alert reason (execution.oms.LATE_FILL)
CANCEL_REJECTED = "CANCEL_REJECTED"
_TERMINAL = frozenset({OrdStatus.FILLED, OrdStatus.CANCELLED, OrdStatus.REJECTED, OrdStatus.EXPIRED})
_RANK = {
    OrdStatus.PENDING_NEW: 0,
    OrdStatus.ACCEPTED: 1,
    OrdStatus.PARTIALLY_FILLED: 1,
    OrdStatus.PENDING_CANCEL: 2,
}


def _progress(rep: ExecutionReport) -> tuple[bool, Decimal, int]:
    terminal = rep.status in _TERMINAL
    rank = 4 if terminal else (3 if rep.reason == CANCEL_REJECTED else _RANK.get(rep.status, 0))
    return terminal, rep.cum_qty, rank


@dataclass(slots=True)
class OrderView:
    """One order as its reports describe it."""

    client_order_id: str
    symbol: str
    side: int
    order_qty: Decimal
    status: OrdStatus
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_px: Decimal
    reason: str
    fees: Decimal = _ZERO
    fills: int = 0
    _key: tuple[bool, Decimal, int] = (False, _ZERO, -1)


class Ledger:
    """Idempotent, order-independent reducer of ``ExecutionReport``s into orders, positions and cash."""

    def __init__(self, initial_cash: Decimal = _ZERO) -> None:
        self.cash = initial_cash
        self.positions: dict[str, Decimal] = {}
        self.orders: dict[str, OrderView] = {}
        self._seen: set[str] = set()
        self.duplicates = 0
        self.ignored = 0

    def apply(self, rep: ExecutionReport) -> bool:
        """Account for ``rep`` once; False when it was a duplicate or an alert (nothing changed)."""
        if rep.exec_id in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(rep.exec_id)
        if rep.reason == LATE_FILL:
            self.ignored += 1
            return False
        cid = rep.client_order_id
        o = self.orders.get(cid)
        if o is None:
            o = self.orders[cid] = OrderView(cid, rep.symbol, int(rep.side), rep.order_qty, rep.status,
                                             rep.cum_qty, rep.leaves_qty, rep.avg_px, rep.reason)
        key = _progress(rep)
        if key > o._key:
            o._key = key
            o.status, o.cum_qty, o.leaves_qty, o.avg_px = rep.status, rep.cum_qty, rep.leaves_qty, rep.avg_px
            o.reason = rep.reason
        if rep.last_qty > _ZERO:
            side = int(rep.side)
            self.positions[rep.symbol] = self.positions.get(rep.symbol, _ZERO) + side * rep.last_qty
            self.cash -= side * rep.last_qty * rep.last_px + rep.fee
            o.fees += rep.fee
            o.fills += 1
        return True

    def state(self) -> tuple[dict[str, tuple], dict[str, Decimal], Decimal]:
        """(orders as comparable tuples, non-zero positions, cash): what two ledgers must agree on."""
        orders = {
            cid: (str(o.status), o.cum_qty, o.leaves_qty, o.avg_px, o.fees, o.fills, o.reason)
            for cid, o in self.orders.items()
        }
        return orders, {s: q for s, q in self.positions.items() if q}, self.cash
