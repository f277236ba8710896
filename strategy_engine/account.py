"""The account context the strategy engine sizes from: cached, never fetched per signal.

``AccountContext`` holds cash, available cash, equity, the net position and last price
per symbol. It is refreshed from an ``AccountSnapshot`` of the broker's MCP server in the
background (every ``refresh_s`` and shortly after fills) and, between snapshots, moved
optimistically by every fill seen on ``ex:events`` and by the engine's own intents
(``add_pending``), so a burst of signals does not over-size before fills come back.

Snapshot and fills are reconciled by time, allowing the broker ``settle_s`` to apply a
fill. Whether a fill seen shortly before or during a refresh is in the snapshot cannot be
told, so a symbol with a fill seen since ``request − settle_s`` keeps its fill-derived
position (and the account its fill-derived cash, available cash and equity while any
such fill exists); everything quiet takes the broker's figures, which is where anything
traded outside the pipeline shows up. A fill stamped (``ts_exec``) before ``request −
settle_s`` that arrives after the snapshot (a re-delivery) is already in it and is not
applied again. Fills come from the same ``ex:events`` the broker account is built from, so
the fill-derived figures are exact, and decisions do not depend on refresh timing.

Own intents count until their fills or final report arrive, or until ``pending_ttl_s``
passes (an intent the gateway dropped must not block a symbol forever): the position is
confirmed plus the net quantity in flight, and available cash is what is left once the
in-flight intents have filled at the current price — computed from the net change per
symbol, so a BUY and the SELL that closes it, both in flight, hold back nothing. Sizing
therefore does not depend on whether fills are back yet. A refresh expires old intents;
it does not clear ones still in flight, since the broker does not know of them yet and
forgetting them would reopen the over-sizing window.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from common.messages import ExecutionReport, OrderIntent, OrdStatus, Side

__all__ = ["AccountContext", "AccountSnapshot", "SnapshotError"]

ZERO = Decimal(0)
_FINAL = {OrdStatus.FILLED, OrdStatus.CANCELLED, OrdStatus.REJECTED, OrdStatus.EXPIRED}


class SnapshotError(ValueError):
    """A broker answer did not have the expected (Kite Connect) shape."""


def _dec(obj: Mapping[str, Any], key: str, where: str) -> Decimal:
    try:
        val = obj[key]
        d = Decimal(str(val))
    except (KeyError, TypeError, InvalidOperation) as e:
        raise SnapshotError(f"{where}.{key}: missing or not a number") from e
    if not d.is_finite():
        raise SnapshotError(f"{where}.{key}: not finite")
    return d


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The account as the broker reported it (all ``Decimal``)."""

    cash: Decimal  # ledger cash
    available: Decimal  # free to open new exposure (live balance)
    equity: Decimal  # cash + market value of positions and holdings
    positions: dict[str, Decimal]  # signed net quantity per symbol (positions + holdings)
    prices: dict[str, Decimal]  # last price per symbol

    @classmethod
    def from_kite(cls, margins: Any, positions: Any, holdings: Any) -> AccountSnapshot:
        """Build from Kite Connect shaped ``get_margins`` / ``get_positions`` / ``get_holdings`` answers.

        Equity is ``available.cash`` plus every position and holding at its last price
        (its average price when the broker has no last price).
        """
        try:
            eq = margins["equity"]
            avail = eq["available"]
        except (KeyError, TypeError) as e:
            raise SnapshotError("get_margins: expected {'equity': {'available': {...}}}") from e
        cash = _dec(avail, "cash", "margins.equity.available")
        available = _dec(avail, "live_balance", "margins.equity.available")
        qty: dict[str, Decimal] = {}
        prices: dict[str, Decimal] = {}
        rows: list[tuple[str, Any]] = []
        if isinstance(positions, Mapping):
            rows += [("positions.net", r) for r in positions.get("net") or []]
        elif positions is not None:
            raise SnapshotError("get_positions: expected {'net': [...], 'day': [...]}")
        if isinstance(holdings, list):
            rows += [("holdings", r) for r in holdings]
        elif holdings is not None:
            raise SnapshotError("get_holdings: expected a list")
        value = ZERO
        for where, r in rows:
            if not isinstance(r, Mapping) or not r.get("tradingsymbol"):
                raise SnapshotError(f"{where}: a row without tradingsymbol")
            sym = str(r["tradingsymbol"])
            q = _dec(r, "quantity", where)
            last = _dec(r, "last_price", where) if r.get("last_price") not in (None, "") else ZERO
            if last <= 0:
                last = _dec(r, "average_price", where) if r.get("average_price") not in (None, "") else ZERO
            qty[sym] = qty.get(sym, ZERO) + q
            if last > 0:
                prices[sym] = last
            value += q * last
        return cls(cash, available, cash + value, qty, prices)


@dataclass(slots=True)
class _Pending:
    intent: OrderIntent
    sign: int
    remaining: Decimal
    created: float


class AccountContext:
    """Cached account state for sizing; every method is O(1) in the number of symbols."""

    def __init__(
        self,
        stale_after_s: float = 15.0,
        pending_ttl_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
        max_seen: int = 200_000,
        settle_s: float = 1.0,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.pending_ttl_s = pending_ttl_s
        self.settle_ns = int(settle_s * 1e9)
        self.clock = clock
        self.wall_ns = wall_ns
        self.cash = ZERO
        self.available = ZERO
        self.equity = ZERO
        self.positions: dict[str, Decimal] = {}
        self.prices: dict[str, Decimal] = {}
        self.refreshed_at: float | None = None  # clock() of the last applied snapshot
        self.snapshot_requested_ns = 0
        self.last_error = ""
        self._fill_seen_ns: dict[str, int] = {}  # wall time a fill for the symbol was last applied
        self._any_fill_seen_ns = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max_seen = max_seen
        self._pending: dict[str, _Pending] = {}
        self._pending_pos: dict[str, Decimal] = {}  # net quantity of own intents in flight per symbol
        self._strategy_pending: dict[tuple[str, str], Decimal] = {}  # the same per (strategy, symbol)
        self._reserved: dict[str, Decimal] = {}  # cash those intents will use (< 0: free) per symbol
        self.reserved = ZERO
        self._emitted: OrderedDict[str, OrderIntent] = OrderedDict()

    # -- freshness -------------------------------------------------------------------------
    def age_s(self) -> float:
        return math.inf if self.refreshed_at is None else self.clock() - self.refreshed_at

    def is_stale(self) -> bool:
        return self.age_s() > self.stale_after_s

    def describe(self) -> str:
        age = self.age_s()
        if self.refreshed_at is None:
            head = "account context never loaded"
        else:
            head = f"account context {age:.1f}s old"
        if age > self.stale_after_s:
            why = f"; last error: {self.last_error}" if self.last_error else ""
            return f"STALE: {head} (limit {self.stale_after_s:g}s), not opening positions{why}"
        return f"{head}; equity {self.equity:.2f}; pending intents {len(self._pending)}"

    # -- snapshot --------------------------------------------------------------------------
    def apply_snapshot(self, snap: AccountSnapshot, requested_ns: int) -> None:
        """Take the broker's figures (requested at ``requested_ns``) where no recent fill makes them ambiguous."""
        cut = requested_ns - self.settle_ns
        if not self._any_fill_seen_ns or self._any_fill_seen_ns < cut:
            self.cash, self.available, self.equity = snap.cash, snap.available, snap.equity
            self.positions = dict(snap.positions)
            self.prices = dict(snap.prices)
        else:
            for sym in set(snap.positions) | set(self.positions):
                seen = self._fill_seen_ns.get(sym)
                if seen is None or seen < cut:
                    q = snap.positions.get(sym, ZERO)
                    if q:
                        self.positions[sym] = q
                    else:
                        self.positions.pop(sym, None)
            for sym, px in snap.prices.items():
                self.prices.setdefault(sym, px)
        self.snapshot_requested_ns = requested_ns
        self.refreshed_at = self.clock()
        self.last_error = ""
        self.expire_pending()
        for sym in list(self._pending_pos):
            self._reserve(sym)

    # -- fills and reports -----------------------------------------------------------------
    def apply_report(self, rep: ExecutionReport) -> bool:
        """Account for one execution report once (by exec id); True when a fill moved the context."""
        if rep.exec_id in self._seen:
            return False
        self._seen[rep.exec_id] = None
        if len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        p = self._pending.get(rep.client_order_id)
        if p is not None:
            if rep.last_qty > 0:
                self._shrink(rep.client_order_id, p, min(p.remaining, rep.last_qty))
            if rep.status in _FINAL and rep.client_order_id in self._pending:
                self._drop(rep.client_order_id)
        if rep.last_qty <= 0 or rep.last_px <= 0:
            return False
        if rep.ts_exec and rep.ts_exec < self.snapshot_requested_ns - self.settle_ns:
            return False  # stamped well before the current snapshot was requested: already in it
        self._fill_seen_ns[rep.symbol] = self._any_fill_seen_ns = self.wall_ns()
        self._apply_fill(rep.symbol, rep.side, rep.last_qty, rep.last_px, rep.fee)
        return True

    def _apply_fill(self, sym: str, side: Side, qty: Decimal, px: Decimal, fee: Decimal) -> None:
        signed = qty if side == Side.BUY else -qty
        before = self.positions.get(sym, ZERO)
        after = before + signed
        last = self.prices.get(sym)
        if last is not None and before:
            self.equity += before * (px - last)
        self.equity -= fee
        flow = -signed * px - fee
        self.cash += flow
        # Short-sale proceeds are margin, not spendable: available moves by the change in short exposure too.
        self.available += flow - (max(-after, ZERO) - max(-before, ZERO)) * px
        self.positions[sym] = after
        self.prices[sym] = px
        if sym in self._pending_pos:
            self._reserve(sym)

    def mark(self, symbol: str, price: Decimal) -> None:
        """Re-mark ``symbol`` at ``price`` (from a signal): equity follows the market between refreshes."""
        last = self.prices.get(symbol)
        pos = self.positions.get(symbol)
        if pos and last is not None:
            self.equity += pos * (price - last)
        self.prices[symbol] = price
        if symbol in self._pending_pos:
            self._reserve(symbol)

    # -- own intents -----------------------------------------------------------------------
    def position(self, symbol: str) -> Decimal:
        """Signed position: confirmed (snapshot + fills) plus own intents in flight."""
        return self.positions.get(symbol, ZERO) + self._pending_pos.get(symbol, ZERO)

    def strategy_pending(self, strategy: str, symbol: str) -> Decimal:
        """Net quantity of ``strategy``'s own intents in flight in ``symbol`` (its book holds its fills)."""
        return self._strategy_pending.get((strategy, symbol), ZERO)

    @property
    def pending_positions(self) -> dict[str, Decimal]:
        """Net quantity of own intents in flight per symbol (read-only view for the portfolio checks)."""
        return self._pending_pos

    def available_cash(self) -> Decimal:
        """Cash free to open exposure once own in-flight intents have filled at their reference prices."""
        return self.available - self.reserved

    def _reserve(self, sym: str) -> None:
        # The available-cash effect of the symbol's in-flight intents filling at the current price, from the
        # net change they make (not intent by intent): a BUY then a SELL still in flight reserve nothing, so
        # the decision for the next signal does not depend on whether their fills are back yet.
        delta = self._pending_pos.get(sym, ZERO)
        old = self._reserved.pop(sym, ZERO)
        new = ZERO
        if delta:
            c = self.positions.get(sym, ZERO)
            e = c + delta
            new = (delta + max(-e, ZERO) - max(-c, ZERO)) * self.prices.get(sym, ZERO)
            self._reserved[sym] = new
        self.reserved += new - old

    def recent_intent(self, client_order_id: str) -> OrderIntent | None:
        """The intent already emitted under this id (a re-delivered signal re-emits it unchanged)."""
        return self._emitted.get(client_order_id)

    def add_pending(self, intent: OrderIntent) -> None:
        """Count an emitted intent as in flight (position and cash) until its fills or final report."""
        coid = intent.client_order_id
        self._emitted[coid] = intent
        if len(self._emitted) > 10_000:
            self._emitted.popitem(last=False)
        if coid in self._pending:
            return
        sign = 1 if intent.side == Side.BUY else -1
        sym = intent.symbol
        self._pending[coid] = _Pending(intent, sign, intent.qty, self.clock())
        self._pending_pos[sym] = self._pending_pos.get(sym, ZERO) + sign * intent.qty
        key = (intent.strategy, sym)
        self._strategy_pending[key] = self._strategy_pending.get(key, ZERO) + sign * intent.qty
        self.prices.setdefault(sym, intent.ref_price)
        self._reserve(sym)

    def _shrink(self, coid: str, p: _Pending, qty: Decimal) -> None:
        p.remaining -= qty
        sym = p.intent.symbol
        self._set_pending_pos(sym, self._pending_pos.get(sym, ZERO) - p.sign * qty)
        self._strategy_shrink(p, qty)
        if p.remaining <= 0:
            self._drop(coid)

    def _set_pending_pos(self, sym: str, qty: Decimal) -> None:
        if qty:
            self._pending_pos[sym] = qty
        else:
            self._pending_pos.pop(sym, None)
        self._reserve(sym)

    def _strategy_shrink(self, p: _Pending, qty: Decimal) -> None:
        key = (p.intent.strategy, p.intent.symbol)
        q = self._strategy_pending.get(key, ZERO) - p.sign * qty
        if q:
            self._strategy_pending[key] = q
        else:
            self._strategy_pending.pop(key, None)

    def _drop(self, coid: str) -> None:
        p = self._pending.pop(coid)
        sym = p.intent.symbol
        self._set_pending_pos(sym, self._pending_pos.get(sym, ZERO) - p.sign * p.remaining)
        self._strategy_shrink(p, p.remaining)
        if not self._pending:
            self._pending_pos.clear()
            self._strategy_pending.clear()
            self._reserved.clear()
            self.reserved = ZERO  # no drift once nothing is in flight

    def expire_pending(self) -> int:
        """Forget own intents older than ``pending_ttl_s``; return how many."""
        cutoff = self.clock() - self.pending_ttl_s
        old = [c for c, p in self._pending.items() if p.created < cutoff]
        for c in old:
            self._drop(c)
        return len(old)

    @property
    def pending_count(self) -> int:
        return len(self._pending)
