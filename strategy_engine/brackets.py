"""Stops and targets per position: protective orders the strategy engine sends and manages.

A strategy with ``stops:`` (``config/strategies.yml``) gets a *bracket* for every entry:

- when the entry order is done (``FILLED``, or a final report with ``cum_qty > 0``) its
  ``ExecutionReport`` on ``ex:events`` makes the engine send, for the quantity it opened
  (``min(cum_qty, the intent's opening part)``), at the fill's average price ``px`` and the
  entry's sizing stop distance ``dist`` (direction ``d`` = +1 long, -1 short):

  - stop-loss: a ``STOP`` order on the other side at ``px - d * dist`` (``stop_loss: true``);
  - take-profit: a ``LIMIT`` order on the other side at ``px + d * take_profit_r * dist``
    (``take_profit_r > 0``);

  prices rounded to the tick away from the market, time in force ``stops.tif`` (GTC);
- client order ids are derived from the entry's: ``client_order_id_for(entry_id, "sl", n)``
  for the n-th stop (trailing moves make new ones), ``client_order_id_for(entry_id, "tp", 1)``
  for the target, so a replay sends the same ids (the gateway drops duplicates);
- OCO: a fill of one leg cancels the other open leg(s) with a ``Control`` ``order.cancel``
  on ``ctl:commands`` (the gateway's cancel path; request id ``se-cancel-<leg id>``);
- trailing (``trailing: true``): the best mark since entry is tracked; when
  ``best - d * dist`` is better than the working stop by at least ``trail_step_bps`` of the
  price, the stop is cancelled and, once its ``CANCELLED`` report arrives, a new stop is
  sent at the trail level of that moment for the quantity still open. Never two stops at
  once: a stop that fills before its cancel lands closes the bracket instead;
- a partial fill of the take-profit shrinks the position: the stop is cancelled and, once its
  ``CANCELLED`` report arrives, a new stop is sent for the quantity still open (the target keeps
  working for its rest); a full fill of either leg, or any fill of the stop, cancels the others;
- an intent of the same strategy against a bracket's direction (a signal that flattens or
  reverses its position) cancels that bracket's legs: the position they protect is being closed.
  Another strategy's intents never touch it (each strategy has its own book: books.py).

Marks: the price of every signal of the symbol (any detector, routed or not) and every fill
price on ``ex:events``. Nothing is read per tick: the engine sees no ticks, and a trailing
stop moves only as often as signals and fills come (between them a price can run and come
back without the stop following).

Durability: every entry waiting for its fill and every open bracket is kept in the Redis hash
``se:brackets`` (field = the entry's client order id, value = JSON), written in the same
transaction that acknowledges the message that changed it and removed when the bracket
closes; a restarted engine reads them back before it consumes anything, so its protective
orders stay trailed and OCO-linked. The best price since entry is stored when the stop moves
(not on every mark): after a restart the trail resumes from the stop's last level.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import msgspec

from common.instruments import Instruments
from common.messages import (
    Control,
    ExecutionReport,
    OrderIntent,
    OrdStatus,
    OrdType,
    Side,
    client_order_id_for,
)
from strategy_engine.strategies import StopsConfig

__all__ = ["BRACKETS_KEY", "Actions", "Bracket", "BracketBook", "leg_id"]

log = logging.getLogger(__name__)

ZERO = Decimal(0)
_BPS = Decimal(10_000)
_FINAL = {OrdStatus.FILLED, OrdStatus.CANCELLED, OrdStatus.REJECTED, OrdStatus.EXPIRED}
SERVICE = "strategy_engine"
BRACKETS_KEY = "se:brackets"


def leg_id(entry_coid: str, kind: str, n: int = 1) -> str:
    """The client order id of a protective leg (``sl`` stop n, ``tp`` target) of an entry."""
    return client_order_id_for(entry_coid, kind, n)


@dataclass(slots=True)
class Actions:
    """What the book wants sent: protective intents, cancels, counters."""

    intents: list[OrderIntent] = field(default_factory=list)
    cancels: list[Control] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def incr(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def extend(self, other: Actions) -> None:
        self.intents += other.intents
        self.cancels += other.cancels
        for k, v in other.counters.items():
            self.counters[k] = self.counters.get(k, 0) + v


@dataclass(slots=True)
class _Entry:
    intent: OrderIntent
    stops: StopsConfig
    opening: Decimal
    dist: Decimal


@dataclass(slots=True)
class _Leg:
    coid: str
    kind: str  # "sl" | "tp"
    n: int
    price: Decimal
    qty: Decimal
    state: str = "open"  # open | cancelling | done
    filled: Decimal = ZERO
    cancel_requested: bool = False


@dataclass(slots=True)
class Bracket:
    entry_coid: str
    strategy: str
    signal_id: str
    symbol: str
    d: int  # +1 protects a long, -1 a short
    qty: Decimal  # the position the bracket protects
    entry_px: Decimal
    dist: Decimal
    stops: StopsConfig
    best: Decimal
    legs: dict[str, _Leg] = field(default_factory=dict)
    exited: Decimal = ZERO
    replacing: bool = False  # the old stop is being cancelled, a new one follows its CANCELLED report
    replace_why: str = ""  # "trail" (a trailing move) or "resize" (a partial take-profit)
    closing: bool = False  # closed by a signal or an exit fill: no more legs
    stop_n: int = 0

    def open_legs(self) -> list[_Leg]:
        return [g for g in self.legs.values() if g.state != "done"]

    def dump(self) -> dict[str, Any]:
        return {"kind": "bracket", "entry_coid": self.entry_coid, "strategy": self.strategy,
                "signal_id": self.signal_id, "symbol": self.symbol, "d": self.d, "qty": str(self.qty),
                "entry_px": str(self.entry_px), "dist": str(self.dist), "stops": self.stops.model_dump(mode="json"),
                "best": str(self.best), "exited": str(self.exited), "replacing": self.replacing,
                "replace_why": self.replace_why, "closing": self.closing, "stop_n": self.stop_n,
                "legs": [{"coid": g.coid, "kind": g.kind, "n": g.n, "price": str(g.price), "qty": str(g.qty),
                          "state": g.state, "filled": str(g.filled), "cancel_requested": g.cancel_requested}
                         for g in self.legs.values()]}

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> Bracket:
        b = cls(entry_coid=d["entry_coid"], strategy=d["strategy"], signal_id=d["signal_id"], symbol=d["symbol"],
                d=int(d["d"]), qty=Decimal(d["qty"]), entry_px=Decimal(d["entry_px"]), dist=Decimal(d["dist"]),
                stops=StopsConfig.model_validate(d["stops"]), best=Decimal(d["best"]),
                exited=Decimal(d["exited"]), replacing=bool(d["replacing"]), replace_why=str(d.get("replace_why", "")),
                closing=bool(d["closing"]),
                stop_n=int(d["stop_n"]))
        for g in d["legs"]:
            b.legs[g["coid"]] = _Leg(g["coid"], g["kind"], int(g["n"]), Decimal(g["price"]), Decimal(g["qty"]),
                                     g["state"], Decimal(g["filled"]), bool(g["cancel_requested"]))
        return b

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.exited


@dataclass(slots=True)
class _Mark:
    price: Decimal
    tick_seq: int
    ts_event: int
    ts_ingest: int
    ts_signal: int


class BracketBook:
    """Brackets by entry and by leg id; every method is O(brackets of the symbol)."""

    def __init__(self, instruments: Instruments, clock_ns: Callable[[], int] = time.time_ns,
                 max_entries: int = 50_000) -> None:
        self.instruments = instruments
        self.clock_ns = clock_ns
        self.max_entries = max_entries
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.brackets: dict[str, Bracket] = {}
        self.by_leg: dict[str, str] = {}  # leg coid -> entry coid
        self.by_symbol: dict[str, dict[str, Bracket]] = {}
        self.marks: dict[str, _Mark] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.dirty: set[str] = set()  # entry ids whose stored state changed (persist with the ack)
        self.unreadable: list[str] = []  # stored entries that could not be read at restore

    # -- entries ---------------------------------------------------------------------------
    def on_entry(self, intent: OrderIntent, stops: StopsConfig, opening: Decimal, dist: Decimal) -> None:
        """Remember an entry intent whose fill will get a bracket (when ``stops`` asks for one)."""
        if not stops.any or opening <= 0 or dist <= 0:
            return
        self.entries[intent.client_order_id] = _Entry(intent, stops, opening, dist)
        self.dirty.add(intent.client_order_id)
        if len(self.entries) > self.max_entries:
            old, _ = self.entries.popitem(last=False)
            self.dirty.add(old)

    def on_exit_intent(self, intent: OrderIntent) -> Actions:
        """An engine intent on ``intent.symbol``: the same strategy's brackets protecting the other
        direction are closing (another strategy's intent does not close this strategy's position)."""
        acts = Actions()
        d_against = -int(intent.side)
        for b in list(self.by_symbol.get(intent.symbol, {}).values()):
            if b.d == d_against and not b.closing and b.strategy == intent.strategy:
                b.closing = True
                self.dirty.add(b.entry_coid)
                acts.incr("brackets.closed_by_signal")
                for g in b.open_legs():
                    self._cancel(b, g, "position closed by a signal", acts)
                self._maybe_close(b)
        return acts

    # -- marks -----------------------------------------------------------------------------
    def on_mark(self, symbol: str, price: Decimal, tick_seq: int = 0, ts_event: int = 0, ts_ingest: int = 0,
                ts_signal: int = 0) -> Actions | None:
        """A new price for ``symbol`` (a signal's or a fill's); moves trailing stops. None: nothing to do."""
        old = self.marks.get(symbol)
        if tick_seq or old is None:
            self.marks[symbol] = _Mark(price, tick_seq, ts_event, ts_ingest, ts_signal)
        else:  # a fill: keep the signal's stamps, take its price
            old.price = price
        brackets = self.by_symbol.get(symbol)
        if not brackets:
            return None
        acts = Actions()
        for b in list(brackets.values()):
            if not b.stops.trailing or b.closing:
                continue
            if (price - b.best) * b.d > 0:
                b.best = price
            stop = self._stop_leg(b)
            if stop is None or stop.state != "open" or b.replacing:
                continue
            level = self._stop_price(b)
            step = Decimal(repr(b.stops.trail_step_bps)) * price / _BPS
            if (level - stop.price) * b.d > 0 and (level - stop.price) * b.d >= step:
                b.replacing, b.replace_why = True, "trail"
                self.dirty.add(b.entry_coid)
                acts.incr("brackets.trail_requested")
                self._cancel(b, stop, "trailing stop moved", acts)
        return acts

    # -- reports ---------------------------------------------------------------------------
    def on_report(self, rep: ExecutionReport) -> Actions | None:
        """Entry fills open brackets; leg fills cancel siblings; leg cancels complete trailing moves."""
        coid = rep.client_order_id
        entry = self.entries.get(coid)
        owner = self.by_leg.get(coid)
        if entry is None and owner is None:
            if rep.last_qty > 0 and rep.symbol in self.by_symbol:
                return self.on_mark(rep.symbol, rep.last_px)
            return None
        if rep.exec_id in self._seen:
            return None
        self._seen[rep.exec_id] = None
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)
        acts = Actions()
        self.dirty.add(entry.intent.client_order_id if entry is not None else owner)  # type: ignore[arg-type]
        if entry is not None:
            done = rep.status == OrdStatus.FILLED or (rep.status in _FINAL and rep.cum_qty > 0)
            if done:
                del self.entries[coid]
                self._open(entry, rep, acts)
            elif rep.status in _FINAL:
                del self.entries[coid]  # rejected / cancelled without a fill: nothing to protect
            return acts
        b = self.brackets.get(owner)  # type: ignore[arg-type]
        if b is None:
            return acts
        g = b.legs[coid]
        if rep.last_qty > 0:
            g.filled += rep.last_qty
            b.exited += rep.last_qty
            acts.incr(f"brackets.{g.kind}_fills")
            if sum(1 for x in b.legs.values() if x.filled > 0) > 1:
                acts.incr("brackets.double_exit")
                log.warning("bracket %s of %s: more than one protective leg filled (OCO race)",
                            b.entry_coid, b.symbol)
            partial_target = g.kind == "tp" and rep.status not in _FINAL and b.remaining > 0
            if partial_target and not b.closing:
                # The target took part of the position: the stop must cover only what is left.
                stop = self._stop_leg(b)
                if stop is not None and stop.state == "open" and not b.replacing:
                    b.replacing, b.replace_why = True, "resize"
                    acts.incr("brackets.resize_requested")
                    self._cancel(b, stop, f"take-profit {g.coid} partly filled: stop for the rest", acts)
            elif not b.closing:
                b.closing = True
                for other in b.open_legs():
                    if other is not g:
                        acts.incr("brackets.oco_cancels")
                        self._cancel(b, other, f"OCO: {g.kind} {g.coid} filled", acts)
        if rep.status in _FINAL:
            g.state = "done"
            if rep.status == OrdStatus.REJECTED:
                acts.incr("brackets.leg_rejected")
                log.warning("bracket %s of %s: %s leg %s rejected (%s): the position is not protected by it",
                            b.entry_coid, b.symbol, g.kind, coid, rep.reason)
            elif rep.status in (OrdStatus.CANCELLED, OrdStatus.EXPIRED) and not g.cancel_requested:
                acts.incr("brackets.leg_cancelled_elsewhere")
            if g.kind == "sl" and b.replacing and rep.status == OrdStatus.CANCELLED and not b.closing:
                b.replacing = False
                if b.remaining > 0:
                    self._send_stop(b, acts)
                    acts.incr("brackets.trail_moved" if b.replace_why == "trail" else "brackets.stop_resized")
            elif g.kind == "sl" and b.replacing:
                b.replacing = False  # filled (or refused) instead of cancelled: no new stop
        self._maybe_close(b)
        return acts

    # -- internals -------------------------------------------------------------------------
    def _open(self, e: _Entry, rep: ExecutionReport, acts: Actions) -> None:
        it = e.intent
        qty = min(rep.cum_qty, e.opening)
        px = rep.avg_px if rep.avg_px > 0 else it.ref_price
        if qty <= 0:
            return
        b = Bracket(entry_coid=it.client_order_id, strategy=it.strategy, signal_id=it.signal_id, symbol=it.symbol,
                    d=int(it.side), qty=qty, entry_px=px, dist=e.dist, stops=e.stops, best=px)
        self.brackets[b.entry_coid] = b
        self.by_symbol.setdefault(b.symbol, {})[b.entry_coid] = b
        if b.symbol not in self.marks:
            self.marks[b.symbol] = _Mark(px, it.tick_seq, it.ts_event, it.ts_ingest, it.ts_signal)
        acts.incr("brackets.opened")
        if e.stops.stop_loss:
            self._send_stop(b, acts, it)
        if e.stops.take_profit_r > 0:
            inst = self.instruments.get(b.symbol)
            raw = px + b.d * Decimal(repr(e.stops.take_profit_r)) * b.dist
            price = _to_tick(raw, inst.tick_size, up=b.d > 0)
            if price > 0:
                self._send_leg(b, "tp", 1, OrdType.LIMIT, price, acts, it)
        self._maybe_close(b)

    def _stop_price(self, b: Bracket) -> Decimal:
        inst = self.instruments.get(b.symbol)
        return _to_tick(b.best - b.d * b.dist, inst.tick_size, up=b.d < 0)

    def _stop_leg(self, b: Bracket) -> _Leg | None:
        stops = [g for g in b.legs.values() if g.kind == "sl" and g.state != "done"]
        return stops[-1] if stops else None

    def _send_stop(self, b: Bracket, acts: Actions, entry: OrderIntent | None = None) -> None:
        price = self._stop_price(b)
        if price <= 0:
            acts.incr("brackets.stop_below_zero")
            return
        b.stop_n += 1
        self._send_leg(b, "sl", b.stop_n, OrdType.STOP, price, acts, entry)

    def _send_leg(self, b: Bracket, kind: str, n: int, typ: OrdType, price: Decimal, acts: Actions,
                  entry: OrderIntent | None) -> None:
        coid = leg_id(b.entry_coid, kind, n)
        qty = b.remaining
        m = self.marks.get(b.symbol)
        if entry is not None:
            ref, seq, ts = b.entry_px, entry.tick_seq, (entry.ts_event, entry.ts_ingest, entry.ts_signal)
        else:
            assert m is not None
            ref, seq, ts = m.price, m.tick_seq, (m.ts_event, m.ts_ingest, m.ts_signal)
        intent = OrderIntent(
            client_order_id=coid, signal_id=b.signal_id, strategy=b.strategy, symbol=b.symbol,
            side=Side.SELL if b.d > 0 else Side.BUY, qty=qty, order_type=typ, tif=b.stops.tif,
            ref_price=ref, tick_seq=seq, ts_event=ts[0], ts_ingest=ts[1], ts_signal=ts[2],
            ts_intent=self.clock_ns(),
            limit_price=price if typ == OrdType.LIMIT else None,
            stop_price=price if typ == OrdType.STOP else None,
            sizing={"bracket_entry_px": float(b.entry_px), "stop_distance": float(b.dist),
                    "bracket_best_px": float(b.best), f"bracket_{kind}": float(n),
                    "take_profit_r": b.stops.take_profit_r, "bracket_qty": float(qty)},
        )
        b.legs[coid] = _Leg(coid, kind, n, price, qty)
        self.by_leg[coid] = b.entry_coid
        acts.intents.append(intent)
        acts.incr(f"brackets.{kind}_sent")

    def _cancel(self, b: Bracket, g: _Leg, why: str, acts: Actions) -> None:
        if g.state != "open":
            return
        g.state = "cancelling"
        g.cancel_requested = True
        acts.cancels.append(Control(
            request_id=f"se-cancel-{g.coid}", command="order.cancel", scope=f"strategy:{b.strategy}",
            reason=why, actor=SERVICE, args={"client_order_id": g.coid}, ts=self.clock_ns(),
        ))

    def _maybe_close(self, b: Bracket) -> None:
        if b.open_legs() or b.replacing:
            return
        # nothing protects the position any more (filled, cancelled or refused): forget it
        self.dirty.add(b.entry_coid)
        self.brackets.pop(b.entry_coid, None)
        sym = self.by_symbol.get(b.symbol)
        if sym is not None:
            sym.pop(b.entry_coid, None)
            if not sym:
                del self.by_symbol[b.symbol]
        for coid in b.legs:
            self.by_leg.pop(coid, None)

    def open_brackets(self) -> int:
        return len(self.brackets)

    # -- persistence -----------------------------------------------------------------------
    def drain(self) -> list[tuple[str, str | None]]:
        """The changed entries as (field, JSON) to store, or (field, None) to delete; clears ``dirty``."""
        out: list[tuple[str, str | None]] = []
        for coid in self.dirty:
            b = self.brackets.get(coid)
            if b is not None:
                out.append((coid, json.dumps(b.dump(), separators=(",", ":"))))
                continue
            e = self.entries.get(coid)
            if e is not None:
                out.append((coid, json.dumps({"kind": "entry", "intent": msgspec.to_builtins(e.intent),
                                              "stops": e.stops.model_dump(mode="json"), "opening": str(e.opening),
                                              "dist": str(e.dist)}, separators=(",", ":"))))
            else:
                out.append((coid, None))
        self.dirty.clear()
        return out

    def restore(self, saved: Mapping[bytes | str, bytes | str]) -> int:
        """Read back what ``drain`` stored; the number of entries and brackets restored."""
        self.unreadable = []
        n = 0
        for k, v in (saved or {}).items():
            coid = k.decode() if isinstance(k, bytes) else k
            try:
                d = json.loads(v)
                if d["kind"] == "entry":
                    it = msgspec.convert(d["intent"], OrderIntent)
                    self.entries[coid] = _Entry(it, StopsConfig.model_validate(d["stops"]), Decimal(d["opening"]),
                                                Decimal(d["dist"]))
                else:
                    b = Bracket.load(d)
                    self.brackets[coid] = b
                    self.by_symbol.setdefault(b.symbol, {})[coid] = b
                    for leg in b.legs:
                        self.by_leg[leg] = coid
                    self.marks.setdefault(b.symbol, _Mark(b.best, 0, 0, 0, 0))
                n += 1
            except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, msgspec.ValidationError) as e:
                log.error("brackets: the stored bracket %s is unreadable (%s): its orders are no longer managed",
                          coid, e)
                self.unreadable.append(coid)
        return n


def _to_tick(px: Decimal, tick: Decimal, *, up: bool) -> Decimal:
    return (px / tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR) * tick
