"""Each strategy's own book: the positions its fills made and its P&L, apart from the others'.

Several strategies trade the same symbols. The broker (and the account context) sees one net
position per symbol; a strategy must not decide against it, or one strategy's orders would
offset another's position (a mean-reversion sell closing a momentum long), and each would be
charged the other's trades. So every strategy sizes against its **own** position: the fills
of its own orders (``ExecutionReport.strategy``, protective bracket orders included) plus its
own intents still in flight (``AccountContext.strategy_pending``). The account's net position
stays what the portfolio limits and the gateway check (concentration, risk at the stops,
REDUCING), because that is the exposure the account carries.

A position in the account that no strategy's fills explain (held before the engine started,
traded by hand, or books lost) is *unattributed*: no strategy trades it, the heartbeat shows
it (``unattributed``), and the portfolio limits still count it.

A book also holds the strategy's cash flow (fills' notional and fees) and the last fill price
per symbol, so its P&L is ``cash + sum(qty x price)``: the figure ``strategy_daily_loss``
measures (``strategy_engine/portfolio.py``).

Durability: each fill is booked once (by ``exec_id``) and the strategy's book is written to
the Redis hash ``se:books`` (field = strategy, value = JSON) in the same transaction that acks
the report, so a crash either redelivers the report to a book that has not seen it or finds
the book already holding it. Quantities are kept as decimals (sizes are lot multiples);
cash and P&L as floats (they are measured against limits, never sent).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from common.messages import ExecutionReport, Side

__all__ = ["BOOKS_KEY", "Book", "StrategyBooks"]

log = logging.getLogger(__name__)

BOOKS_KEY = "se:books"
ZERO = Decimal(0)


class Book:
    """One strategy's fills: cash flow, net quantity and last fill price per symbol."""

    __slots__ = ("cash", "last_px", "qty")

    def __init__(self) -> None:
        self.cash = 0.0
        self.qty: dict[str, Decimal] = {}
        self.last_px: dict[str, float] = {}

    def book(self, symbol: str, side: Side, qty: Decimal, px: Decimal, fee: Decimal) -> None:
        signed = qty if side == Side.BUY else -qty
        self.cash += -float(signed) * float(px) - float(fee)
        q = self.qty.get(symbol, ZERO) + signed
        if q:
            self.qty[symbol] = q
        else:
            self.qty.pop(symbol, None)
        self.last_px[symbol] = float(px)

    def pnl(self, prices: Mapping[str, Decimal]) -> float:
        """Cash flow plus the open quantities at ``prices`` (the last fill price where none)."""
        v = self.cash
        for s, q in self.qty.items():
            p = prices.get(s)
            v += float(q) * (float(p) if p is not None else self.last_px.get(s, 0.0))
        return v

    def dump(self) -> str:
        return json.dumps({"cash": self.cash, "qty": {s: str(q) for s, q in self.qty.items()},
                           "last_px": self.last_px}, separators=(",", ":"))

    @classmethod
    def load(cls, raw: str | bytes) -> Book:
        d = json.loads(raw)
        b = cls()
        b.cash = float(d.get("cash", 0.0))
        b.qty = {str(s): Decimal(str(q)) for s, q in (d.get("qty") or {}).items() if Decimal(str(q))}
        b.last_px = {str(s): float(p) for s, p in (d.get("last_px") or {}).items()}
        if not all(q.is_finite() for q in b.qty.values()):
            raise ValueError("a quantity is not finite")
        return b


class StrategyBooks:
    """Every strategy's ``Book``, fed by execution reports (each ``exec_id`` once)."""

    def __init__(self, max_seen: int = 200_000) -> None:
        self.books: dict[str, Book] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max_seen = max_seen
        self.unreadable: list[str] = []  # strategies whose stored book could not be read at load

    def position(self, strategy: str, symbol: str) -> Decimal:
        """The strategy's filled position in ``symbol`` (in-flight intents not included)."""
        b = self.books.get(strategy)
        return b.qty.get(symbol, ZERO) if b is not None else ZERO

    def get(self, strategy: str) -> Book | None:
        return self.books.get(strategy)

    def apply_report(self, rep: ExecutionReport) -> str | None:
        """Book a fill to its strategy; the strategy's name when its book changed, else None."""
        if rep.last_qty <= 0 or rep.last_px <= 0 or not rep.strategy:
            return None
        if rep.exec_id in self._seen:
            return None
        self._seen[rep.exec_id] = None
        if len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        b = self.books.get(rep.strategy)
        if b is None:
            b = self.books[rep.strategy] = Book()
        b.book(rep.symbol, rep.side, rep.last_qty, rep.last_px, rep.fee)
        return rep.strategy

    def dump_one(self, strategy: str) -> str:
        return self.books[strategy].dump()

    def restore(self, saved: Mapping[bytes | str, bytes | str]) -> int:
        """Load the books stored in ``se:books``; the number loaded. An unreadable book is skipped
        (the strategy starts flat, its position shows as unattributed) and named in ``unreadable``."""
        self.unreadable = []
        n = 0
        for k, v in (saved or {}).items():
            name = k.decode() if isinstance(k, bytes) else k
            try:
                self.books[name] = Book.load(v)
                n += 1
            except (ValueError, TypeError, AttributeError, InvalidOperation) as e:
                log.error("strategy books: the stored book of %s is unreadable (%s); it starts flat", name, e)
                self.unreadable.append(name)
        return n

    def attributed(self) -> dict[str, Decimal]:
        """The net of every strategy's position per symbol."""
        out: dict[str, Decimal] = {}
        for b in self.books.values():
            for s, q in b.qty.items():
                out[s] = out.get(s, ZERO) + q
        return out

    def unattributed(self, account: Mapping[str, Decimal]) -> dict[str, Decimal]:
        """Per symbol, the account's position that no strategy's fills explain (non-zero only)."""
        mine = self.attributed()
        out = {}
        for s in account.keys() | mine.keys():
            d = account.get(s, ZERO) - mine.get(s, ZERO)
            if d:
                out[s] = d
        return out

    def describe(self, account: Mapping[str, Decimal]) -> str:
        held = sum(1 for b in self.books.values() for q in b.qty.values() if q)
        head = f"strategy books: {len(self.books)} strategies, {held} positions"
        un = self.unattributed(account)
        if un:
            first = ", ".join(f"{s} {q:+f}" for s, q in sorted(un.items())[:5])
            head += f"; unattributed {len(un)} ({first}{', ...' if len(un) > 5 else ''})"
        if self.unreadable:
            head += f"; unreadable stored books: {', '.join(sorted(self.unreadable))}"
        return head
