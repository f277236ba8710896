"""Average-cost position accounting, shared by everything that values positions from fills."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["apply_fill"]

_ZERO = Decimal(0)


def apply_fill(quantity: Decimal, average_price: Decimal, side: int, qty: Decimal,
               px: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """Apply a fill of ``qty`` at ``px`` (``side`` +1 buy / −1 sell) to a net position.

    Returns (new quantity, new average price, realised P&L gross of fees). Adding to a
    position averages the entry; reducing it realises ``closed × (px − average) × direction``;
    a fill through zero opens the remainder at ``px``.
    """
    signed = qty if side > 0 else -qty
    new = quantity + signed
    if quantity == 0 or (quantity > 0) == (signed > 0):
        return new, (abs(quantity) * average_price + qty * px) / abs(new), _ZERO
    closed = min(abs(quantity), qty)
    realised = closed * (px - average_price) * (1 if quantity > 0 else -1)
    if new == 0:
        return new, _ZERO, realised
    if (new > 0) != (quantity > 0):
        return new, px, realised
    return new, average_price, realised
