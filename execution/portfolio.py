"""Positions, cash and open-order exposure as the gateway's pre-trade checks see them."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from execution.order import Order

__all__ = ["Portfolio"]

_ZERO = Decimal(0)


class Portfolio:
    """Net position per symbol, cash, and what open orders could still add.

    Exposure counts orders entered, not only orders filled: every accepted order adds its
    unfilled quantity to its side until it fills or ends, and a buy also reserves its
    notional against cash, so concurrent orders cannot overshoot a limit together.

    Gross exposure is kept up to date incrementally (the checks must not walk every symbol):
    a symbol's exposure is its worst case ``max(|position + open buys|, |position - open
    sells|)``, valued at its last mark (``remark``), or until one arrives at the price it was
    first seen at (an order's mark or limit/reference price, a fill's price).
    """

    def __init__(self, cash: Decimal) -> None:
        self.cash = cash
        self.positions: dict[str, Decimal] = {}
        self._open: dict[tuple[str, int], Decimal] = {}
        self.open_buy_notional = _ZERO
        self.gross = _ZERO  # sum of _exposure[s] * _price[s]
        self._exposure: dict[str, Decimal] = {}
        self._price: dict[str, Decimal] = {}

    @classmethod
    def from_fills(cls, initial_cash: Decimal, fills: Iterable[tuple[str, int, Decimal, Decimal, Decimal]]) -> Portfolio:
        """Rebuild from (symbol, side, qty, price, fee) of every fill."""
        p = cls(initial_cash)
        for symbol, side, qty, price, fee in fills:
            p._book(symbol, int(side), qty, price, fee)
        return p

    def position(self, symbol: str) -> Decimal:
        return self.positions.get(symbol, _ZERO)

    def open_qty(self, symbol: str, side: int) -> Decimal:
        """Unfilled quantity of open and in-flight orders of ``symbol`` on ``side``."""
        return self._open.get((symbol, side), _ZERO)

    def equity(self) -> Decimal:
        """Cash plus every position valued at its last mark (or the price it was first seen at)."""
        price = self._price
        return self.cash + sum((q * price[s] for s, q in self.positions.items() if q), _ZERO)

    def exposure_qty(self, symbol: str) -> Decimal:
        """The symbol's worst case: all its open orders on one side fill."""
        p = self.positions.get(symbol, _ZERO)
        return max(abs(p + self._open.get((symbol, 1), _ZERO)), abs(p - self._open.get((symbol, -1), _ZERO)))

    def gross_without(self, symbol: str) -> Decimal:
        """Gross exposure of every symbol but ``symbol``."""
        q = self._exposure.get(symbol)
        return self.gross - q * self._price[symbol] if q else self.gross

    def _revalue(self, symbol: str, price: Decimal) -> None:
        # ``price`` only values a symbol that has none yet; later, marks move it (remark).
        px = self._price.get(symbol)
        if px is None:
            px = self._price[symbol] = price
        q = self.exposure_qty(symbol)
        self.gross += (q - self._exposure.get(symbol, _ZERO)) * px
        self._exposure[symbol] = q

    def remark(self, marks: dict[str, float]) -> None:
        """New marks (the gateway's last trade or mid per symbol): revalue what they hold."""
        exposure, prices = self._exposure, self._price
        for symbol, f in marks.items():
            q = exposure.get(symbol)
            if q is not None:
                px = Decimal(repr(f))
                if q:
                    self.gross += q * (px - prices[symbol])
                prices[symbol] = px

    def _book(self, symbol: str, side: int, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        self.positions[symbol] = self.positions.get(symbol, _ZERO) + side * qty
        self.cash -= side * qty * price + fee
        self._revalue(symbol, price)

    def reserve(self, order: Order, notional: Decimal, mark: Decimal | None = None) -> None:
        """An order became open: count its unfilled quantity (and a buy's notional)."""
        key = (order.symbol, order.side)
        self._open[key] = self._open.get(key, _ZERO) + (order.qty - order.cum_qty)
        if order.side > 0:
            order.reserved_notional = notional
            self.open_buy_notional += notional
        self._revalue(order.symbol, mark if mark is not None else order.limit_price or order.ref_price)

    def on_fill(self, order: Order, qty: Decimal, price: Decimal, fee: Decimal, leaves_before: Decimal) -> None:
        """A fill of ``qty`` at ``price``: book it and release that part of the reservation."""
        key = (order.symbol, order.side)
        self._open[key] = self._open.get(key, _ZERO) - qty
        self._book(order.symbol, order.side, qty, price, fee)
        if order.side > 0 and order.reserved_notional:
            part = order.reserved_notional if qty >= leaves_before else order.reserved_notional * qty / leaves_before
            order.reserved_notional -= part
            self.open_buy_notional -= part

    def release(self, order: Order, leaves: Decimal) -> None:
        """An order ended unfilled (cancelled, expired): drop what it still counted."""
        key = (order.symbol, order.side)
        self._open[key] = self._open.get(key, _ZERO) - leaves
        self._revalue(order.symbol, order.limit_price or order.ref_price)
        if order.reserved_notional:
            self.open_buy_notional -= order.reserved_notional
            order.reserved_notional = _ZERO
