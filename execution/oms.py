"""The order management system: intents → checks → durable orders → venue → fills → reports.

One bus batch is handled in three steps so that no order reaches a venue before its row
is durable:

1. ``stage(entries)`` walks the batch in order, in memory: ticks update marks and fill
   working orders, intents pass the pre-trade checks and become ACCEPTED or REJECTED
   orders, kill-switch commands change the trading state (engage cancels open orders).
   Every resulting write lands in ``plan.tx1``.
2. The caller commits ``plan.tx1`` (one transaction) — only then:
3. ``route(plan)`` sends the batch's accepted orders to the venue; immediate fills land in
   ``plan.tx2``, which the caller commits too.

Every report that follows a state change is also written to the ``outbox`` table in the
same transaction as the change, numbered by ``seq``; the bus commit publishes it and
records the highest published seq (``OUTBOX_HWM``), so a crash between the database and
the bus never loses a report (``Gateway`` republishes rows above the mark).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common import streams
from common.bus import Entry
from common.latency import LatencyHistogram
from common.messages import (
    Control,
    ControlAck,
    ExecutionReport,
    OrderIntent,
    OrdStatus,
    TickBatch,
    TickType,
    encode,
)
from execution.kill_switch import GLOBAL, KillSwitch, KillSwitches, TradingStateName, in_scope
from execution.order import IllegalTransition, Order
from execution.portfolio import Portfolio
from common.config import ConfigError
from execution.risk import RejectCode, RiskEngine
from execution.store import Changes, Snapshot
from execution.triggers import TriggerMonitor
from execution.venues.base import EventKind, Venue, VenueEvent

__all__ = [
    "LATE_FILL", "ORDER_COMMANDS", "RISK_COMMANDS", "OUTBOX_HWM", "SERVICE", "BatchPlan", "EntryResult", "OrderManager", "intent_problem",
]

log = logging.getLogger(__name__)

SERVICE = "execution"
# Highest outbox seq published to the bus (set in the same MULTI/EXEC as the publish).
OUTBOX_HWM = streams.OUTBOX_HWM

_ZERO = Decimal(0)
_INT64 = 1 << 63
_MAX_ID = 64
# Control commands on orders (never throttled): args {"client_order_id"} / optional {"symbol", "strategy"}.
ORDER_COMMANDS = ("order.cancel", "order.cancel_all")
RISK_COMMANDS = ("risk.set", "risk.unset")
LATE_FILL = "LATE_FILL"  # reason of the alert report of a fill for an order that is no longer open
_KEPT = 20_000  # most recent orders kept whole, to answer a duplicate id without the database
_TRIGGER_EVERY_NS = 200_000_000  # automatic kill triggers are evaluated at most this often
_BASELINES_EVERY_NS = 1_000_000_000  # a new drawdown peak is written at most this often (a new day at once)
TRIGGER_BASELINES = "kill_triggers.baselines"  # gateway_state key: the day's starting equity, the peak

Key = tuple[str, bytes]


def intent_problem(it: OrderIntent) -> str | None:
    """Why an intent cannot even be recorded (it is dead-lettered, not rejected), or None."""
    if not 0 < len(it.client_order_id) <= _MAX_ID:
        return "client_order_id must have 1..64 characters"
    if len(it.signal_id) > _MAX_ID or not 0 < len(it.strategy) <= _MAX_ID:
        return "signal_id / strategy longer than 64 characters (or empty strategy)"
    if "\x00" in it.client_order_id + it.signal_id + it.strategy + it.symbol:
        return "NUL character in an id"  # PostgreSQL text cannot hold it
    if not (
        0 <= it.tick_seq < _INT64 and 0 <= it.ts_event < _INT64 and 0 <= it.ts_ingest < _INT64
        and 0 <= it.ts_signal < _INT64 and 0 <= it.ts_intent < _INT64
    ):
        return "tick_seq / ts_* out of int64 range"
    for v in (it.qty, it.ref_price, it.limit_price):
        # adjusted() >= 18: |v| >= 1e18 does not fit NUMERIC(28, 10)
        if v is not None and (not v.is_finite() or v.adjusted() >= 18):
            return "qty / ref_price / limit_price out of range"
    return None


def _same_order(o: Order, it: OrderIntent) -> bool:
    """Whether ``it`` asks for the same order as ``o`` (ids, timestamps and sizing notes aside)."""
    return (
        o.symbol == it.symbol and o.side == it.side and o.qty == it.qty and o.order_type == it.order_type
        and o.tif == it.tif and o.limit_price == it.limit_price and o.ref_price == it.ref_price
        and o.strategy == it.strategy
    )


def _text(s: str) -> str:
    return s.replace("\x00", "")


def _halts(entry: Entry) -> bool:
    msg = entry.msg
    return isinstance(msg, Control) and msg.command in ("kill.engage", "kill.reduce")


def _shown(v: Any) -> str:
    """A limit's value as an operator reads it."""
    if v is None:
        return "off"
    if isinstance(v, list | tuple):
        return ",".join(map(str, v)) or "-"
    return str(v)


@dataclass(slots=True)
class EntryResult:
    """What one bus entry produced: messages to publish, counters, extra Redis ops."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    ops: list[Callable[[Any], Any]] = field(default_factory=list)
    dead: str | None = None  # dead-letter reason
    hwm: int = 0  # highest outbox seq among its messages

    def incr(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n


@dataclass
class BatchPlan:
    results: dict[Key, EntryResult]
    tx1: Changes
    route: list[tuple[Order, Key]] = field(default_factory=list)
    tx2: Changes = field(default_factory=Changes)


class OrderManager:
    """Owns the gateway's in-memory state: open orders, positions/cash, marks, trading state."""

    def __init__(
        self,
        risk: RiskEngine,
        venue: Venue,
        initial_cash: Decimal,
        *,
        known_ids: int = 200_000,
        clock: Callable[[], int] = time.time_ns,
        hist: Callable[[str], LatencyHistogram] | None = None,
    ) -> None:
        self.risk = risk
        self.venue = venue
        self.initial_cash = initial_cash
        self.clock = clock
        self.hist = hist
        self.switches = KillSwitches()
        self.triggers = TriggerMonitor(risk.config.triggers)
        self._trigger_at = 0
        self._baselines_saved: dict[str, Any] | None = None  # the trigger baselines last written
        self._baselines_at = 0
        self.portfolio = Portfolio(initial_cash)
        self.orders: dict[str, Order] = {}  # open orders only
        self.marks: dict[str, float] = {}
        self.mark_ts: dict[str, int] = {}  # wall time (ns) each mark arrived at the gateway
        self._known: OrderedDict[str, None] = OrderedDict()
        self._known_cap = known_ids
        self._kept: OrderedDict[str, Order] = OrderedDict()
        self._kept_cap = min(known_ids, _KEPT)
        self._deferred: list[VenueEvent] = []  # venue events raised while reloading
        # Kill-switch cancellations done in memory and at the venue, rows and reports to write.
        self._to_record: list[tuple[Order, int, str, str]] = []
        self._unrouted: set[str] = set()  # accepted in the batch being staged, not at the venue yet
        self._exec_seen: OrderedDict[str, None] = OrderedDict()  # venue exec ids applied (dedupe)
        self._ch = Changes()
        self.outbox_seq = 0  # last outbox seq handed out
        self.confirmed_hwm = 0  # highest seq known to be on the bus
        self._deleted_upto = 0

    # -- state ------------------------------------------------------------------------
    def load(self, snap: Snapshot) -> None:
        """Rebuild memory from the database: trading state, positions, cash, open orders."""
        st = snap.trading_states or ([snap.trading_state] if snap.trading_state else [])
        self.switches = KillSwitches(st)
        self.apply_risk_overrides(snap.risk_overrides)
        self.triggers.armed = False
        self.triggers.restore(snap.gateway_state.get(TRIGGER_BASELINES))
        self._baselines_saved = self.triggers.baselines()
        self.portfolio = Portfolio.from_fills(self.initial_cash, snap.fills)
        self.venue.forget()
        self.orders = {}
        self._unrouted.clear()
        self._known.clear()
        self._kept.clear()
        for cid in snap.recent_ids:
            self._remember(cid)
        self._to_record = []
        now = self.clock()
        for o in snap.open_orders:
            self.orders[o.client_order_id] = o
            self._remember(o.client_order_id, o)
            leaves = o.qty - o.cum_qty
            self.portfolio.reserve(o, leaves * (o.limit_price or o.ref_price))
            halted = self.switches.halted_scope(o.strategy, o.symbol)
            if halted is not None:
                # A halt whose cancellations were not recorded before a crash: finish it.
                self.venue.cancel(o.client_order_id)
                self._cancelled_unrecorded(o, now, "KILL_SWITCH", halted)
                continue
            self._deferred.extend(self.venue.resume(o))
        self.outbox_seq = max(self.outbox_seq, snap.outbox_max_seq)

    @property
    def kill(self) -> KillSwitch:
        """The global scope's switch."""
        return self.switches.glob

    def _remember(self, cid: str, order: Order | None = None) -> None:
        self._known[cid] = None
        if len(self._known) > self._known_cap:
            self._known.popitem(last=False)
        if order is not None:
            self._kept[cid] = order
            if len(self._kept) > self._kept_cap:
                self._kept.popitem(last=False)

    def mark(self, symbol: str) -> Decimal | None:
        px = self.marks.get(symbol)
        return Decimal(repr(px)) if px is not None and px > 0.0 else None

    def unknown_ids(self, entries: list[Entry]) -> list[str]:
        """Client order ids of the batch's intents whose order memory does not hold (look them up).

        ``Store.existing`` answers with the orders of those that have one: a duplicate id is
        answered with its first order's state and compared with its parameters.
        """
        kept, open_ = self._kept, self.orders
        return [
            e.msg.client_order_id
            for e in entries
            if isinstance(e.msg, OrderIntent) and e.msg.client_order_id not in kept
            and e.msg.client_order_id not in open_
        ]

    # -- step 1: in order, in memory -------------------------------------------------------
    def stage(self, entries: list[Entry], existing: Mapping[str, Order] | None = None) -> BatchPlan:
        plan = BatchPlan(results={}, tx1=Changes())
        self._ch = plan.tx1
        self._deferred.extend(self.venue.poll())  # what an asynchronous venue reported since
        if len(entries) > 1 and any(_halts(e) for e in entries):
            # A halt read together with new intents goes first: they are refused, not routed
            # (streams have no order between them; the kill switch wins the tie).
            entries = [e for e in entries if _halts(e)] + [e for e in entries if not _halts(e)]
        for entry in entries:
            key = (entry.stream, entry.id)
            res = plan.results[key] = EntryResult()
            if self._deferred:
                deferred, self._deferred = self._deferred, []
                for ev in deferred:
                    self._apply(ev, res)
            msg = entry.msg
            if isinstance(msg, TickBatch):
                self._on_ticks(msg, res)
            elif isinstance(msg, OrderIntent):
                self._on_intent(msg, key, res, plan, existing or {})
            elif isinstance(msg, Control):
                self._on_control(msg, res)
            else:
                res.dead = f"unexpected message {type(msg).__name__}"
        if plan.tx1 and self.confirmed_hwm > self._deleted_upto:
            plan.tx1.outbox_delete_upto = self.confirmed_hwm
        return plan

    def tx1_done(self, plan: BatchPlan) -> None:
        if plan.tx1.outbox_delete_upto is not None:
            self._deleted_upto = plan.tx1.outbox_delete_upto

    def _on_ticks(self, batch: TickBatch, res: EntryResult) -> None:
        ticks = batch.ticks
        res.incr("ticks", len(ticks))
        self.triggers.on_tick(self.clock())
        last: dict[str, float] = {}
        for t in ticks:
            if t.type == TickType.TRADE:
                if t.price <= 0.0:
                    continue
                last[t.symbol] = t.price
            elif t.bid > 0.0 and t.ask > 0.0:
                last[t.symbol] = round((t.bid + t.ask) * 0.5, 10)
        if last:
            self.marks.update(last)
            ts = batch.ts_ingest or self.clock()  # when it reached the bus, not the ticks' (historical) ts_event
            self.mark_ts.update(dict.fromkeys(last, ts))
            self.portfolio.remark(last)
            mapping = {s: repr(p) for s, p in last.items()}
            res.ops.append(lambda pipe, m=mapping: pipe.hset(streams.MARKS, mapping=m))
        for ev in self.venue.on_ticks(ticks):
            self._apply(ev, res)

    def _on_intent(
        self, it: OrderIntent, key: Key, res: EntryResult, plan: BatchPlan, existing: Mapping[str, Order]
    ) -> None:
        bad = intent_problem(it)
        if bad is not None:
            res.dead = f"invalid: {bad}"
            return
        res.incr("intents")
        cid = it.client_order_id
        first = self.orders.get(cid) or self._kept.get(cid) or existing.get(cid)
        if first is not None or cid in self._known:
            self._on_duplicate(it, first, res)
            return
        mark = self.mark(it.symbol)
        pf = self.portfolio
        symbol, side = it.symbol, int(it.side)
        now = self.clock()
        tstate, tscope = self.switches.effective(it.strategy, symbol)
        code = self.risk.check(
            it,
            halted=tstate == TradingStateName.HALTED,
            reducing=tstate == TradingStateName.REDUCING,
            mark=mark,
            mark_age_ns=now - self.mark_ts.get(symbol, now),
            position=pf.position(symbol),
            open_same_side=pf.open_qty(symbol, side),
            open_other_side=pf.open_qty(symbol, -side),
            cash=pf.cash,
            open_buy_notional=pf.open_buy_notional,
            open_orders=len(self.orders),
            gross_others=pf.gross_without(symbol),
        )
        order = Order.from_intent(it, self.venue.name)
        self._remember(cid, order)
        res.incr("orders")
        self._ch.new_orders[cid] = order
        self.triggers.on_order(code, now)
        if code is not None:
            order.transition(OrdStatus.REJECTED)
            order.reject_reason = str(code)
            order.ts_done = now
            res.incr("rejects")
            res.incr(f"rejects.{code}")
            # What the check saw, so an operator can tell why without replaying the state.
            text = (
                f"qty={it.qty} ref={it.ref_price} mark={mark} position={pf.position(it.symbol)} "
                f"open_same_side={pf.open_qty(it.symbol, int(it.side))} cash={pf.cash} "
                f"mark_age_ms={(now - self.mark_ts.get(symbol, now)) // 1_000_000} open_orders={len(self.orders)} "
                f"gross={pf.gross}"
            )
            if code in (RejectCode.KILL_SWITCH, RejectCode.REDUCING_ONLY):
                text = f"{tstate} at {tscope}: {self.switches.scopes[tscope].reason}; {text}"
            self._emit(
                res, streams.EXEC_EVENTS, self._report(order, f"{cid}:R", now, reason=str(code), text=text)
            )
            return
        order.transition(OrdStatus.ACCEPTED)
        order.ts_accepted = now
        self.orders[cid] = order
        assert mark is not None  # the checks passed, so there is a reference price
        pf.reserve(order, self.risk.notional(it, mark), mark)
        res.incr("accepted")
        self._emit(res, streams.EXEC_EVENTS, self._report(order, f"{cid}:A", now))
        plan.route.append((order, key))
        self._unrouted.add(cid)

    def _on_duplicate(self, it: OrderIntent, first: Order | None, res: EntryResult) -> None:
        """A client order id that already has an order: never a second one, never a change to it.

        Same parameters (a redelivery, a retry): answered with the first order's current state.
        Other parameters: refused with DUPLICATE_CLORDID_MISMATCH. Either answer keeps the first
        order's status and quantities, so a consumer that tracks orders by id is not misled, and
        is not durable (it changes nothing); its exec id is deterministic.
        """
        cid = it.client_order_id
        res.incr("duplicates")
        if first is None:
            # Known id whose order the caller did not look up (stage() without the database).
            res.incr(f"rejects.{RejectCode.DUPLICATE_CLORDID}")
            return
        now = self.clock()
        if _same_order(first, it):
            res.incr(f"rejects.{RejectCode.DUPLICATE_CLORDID}")
            self._emit(res, streams.EXEC_EVENTS, self._report(
                first, f"{cid}:D", now, reason=first.reject_reason or "",
                text=f"duplicate client order id: state of the first order ({first.status})",
            ), durable=False)
            return
        code = RejectCode.DUPLICATE_CLORDID_MISMATCH
        res.incr(f"rejects.{code}")
        log.warning("client order id %s reused with other parameters; refused", cid)
        self._emit(res, streams.EXEC_EVENTS, self._report(
            first, f"{cid}:DM", now, reason=str(code),
            text=(
                f"refused: id already used by an order with other parameters "
                f"(this one: {it.symbol} side={int(it.side)} qty={it.qty} {it.order_type} limit={it.limit_price} "
                f"ref={it.ref_price}); the first order is unchanged"
            ),
        ), durable=False)

    def _on_control(self, ctl: Control, res: EntryResult) -> None:
        if ctl.command in ORDER_COMMANDS:
            self._on_order_control(ctl, res)
            return
        if ctl.command in RISK_COMMANDS:
            self._on_risk_control(ctl, res)
            return
        now = self.clock()
        d = self.switches.apply(ctl, now)
        if d is None:
            res.incr("control.ignored")  # another service's command
            return
        res.incr(f"control.{d.action}")
        ch = self._ch
        actor = _text(ctl.actor or "unknown")[:64]
        request_id = _text(ctl.request_id)[:64]
        cancelled = 0
        if d.changed:
            sw = self.switches.scopes[d.scope]
            if d.action == "engage":
                cancelled = self._cancel_all(res, now, "KILL_SWITCH", d.scope)
            ch.trading_states[d.scope] = sw.row()
            ch.kill_events.append({
                "scope": d.scope, "action": d.action, "reason": sw.reason, "actor": actor,
                "request_id": request_id, "ts": now,
            })
            if d.scope == GLOBAL:
                self.triggers.disarm()  # what led here is not counted again; re-armed afresh while ACTIVE
                mirror = sw.mirror()
                res.ops.append(lambda pipe, m=mirror: pipe.hset(streams.KILL_STATE, mapping=m))
        if d.changed or not d.ok:
            ch.audit.append({
                "ts": now, "actor": actor,
                "action": f"kill.{d.action}" + ("" if d.ok else ".refused"),
                "entity": "trading_state", "entity_id": _text(ctl.scope)[:128],
                "detail": {"request_id": request_id, "state": str(d.state), "reason": _text(ctl.reason),
                           "detail": d.detail, "cancelled": cancelled},
            })
        ack = ControlAck(request_id=ctl.request_id, service=SERVICE, ok=d.ok, state=str(d.state),
                         detail=d.detail, ts=now)
        self._emit(res, streams.CONTROL_ACKS, ack, durable=d.changed or not d.ok)

    def check_triggers(self) -> tuple[Changes, EntryResult] | None:
        """Evaluate the automatic kill triggers (at most every 200 ms of the OMS clock).

        When one fires: HALTED at global scope by actor ``auto:<trigger>``, exactly as a
        ``kill.engage`` command (open orders cancelled, state row, kill event, audit row, ack)
        plus an alert (the command, with the numbers in ``args``) on ``sys:alerts``. Returns
        the writes (to commit, then publish from the outbox) and the result, or None.

        The daily-loss and drawdown baselines (the equity at the UTC day's first check, the
        peak since the last release) go to ``gateway_state`` with these writes: a new day at
        once, a new peak at most once a second; ``load`` restores them, so a restart does not
        forgive the day's loss or the drawdown.
        """
        mon = self.triggers
        if not mon.enabled:
            return None
        if self.kill.state != TradingStateName.ACTIVE:
            mon.disarm()  # re-armed, afresh, once released
            return None
        now = self.clock()
        if mon.armed and now - self._trigger_at < _TRIGGER_EVERY_NS:
            return None
        self._trigger_at = now
        equity = self.portfolio.equity()
        if not mon.armed:
            mon.arm(now, equity)
        trip = mon.evaluate(now, equity, len(self.orders))
        baselines = mon.baselines()
        save = baselines != self._baselines_saved and (
            trip is not None or now - self._baselines_at >= _BASELINES_EVERY_NS
            or baselines is None or self._baselines_saved is None or baselines["day"] != self._baselines_saved["day"]
        )
        if trip is None and not save:
            return None
        ch, res = Changes(), EntryResult()
        if save:
            ch.gateway_state[TRIGGER_BASELINES] = baselines
            self._baselines_saved, self._baselines_at = baselines, now
        if trip is None:
            return ch, res
        log.error("automatic kill trigger %s: %s; halting", trip.trigger, trip.reason)
        self._ch = ch
        ctl = Control(request_id=f"auto-{trip.trigger}-{now}", command="kill.engage", scope=GLOBAL,
                      reason=f"{trip.trigger}: {trip.reason}", actor=f"auto:{trip.trigger}",
                      args={"trigger": trip.trigger, **trip.args}, ts=now)
        self._on_control(ctl, res)
        res.incr(f"kill_triggers.{trip.trigger}")
        self._emit(res, streams.ALERTS, ctl)
        return ch, res

    def _cancel_all(self, res: EntryResult, now: int, reason: str, scope: str = GLOBAL) -> int:
        """Cancel the scope's open orders at the venue and in memory, at once.

        Their rows and reports are *recorded* later (``flush_cancels``, right after the next
        bus batch or when idle): the batch that halts then commits only the state change,
        so the next intents are read and refused within milliseconds instead of waiting
        for N order rows to be written. Nothing can fill in between (the venue no longer
        holds them), and a crash in between is covered by ``load``: a halted scope's open
        orders are cancelled again on start."""
        n = 0
        for cid, o in list(self.orders.items()):
            if not in_scope(scope, o.strategy, o.symbol):
                continue
            self.venue.cancel(cid)
            self._cancelled_unrecorded(o, now, reason, scope)
            res.incr("cancels")
            n += 1
        return n

    def _cancelled_unrecorded(self, o: Order, now: int, reason: str, scope: str) -> None:
        leaves = o.leaves_qty
        o.transition(OrdStatus.CANCELLED)
        o.reject_reason = reason
        o.ts_done = now
        self.portfolio.release(o, leaves)
        self.orders.pop(o.client_order_id, None)
        self._to_record.append((o, now, reason, f"cancelled by kill switch ({scope})"))

    @property
    def cancels_to_record(self) -> int:
        return len(self._to_record)

    def flush_cancels(self) -> tuple[Changes, EntryResult] | None:
        """The rows and reports of the kill switch's cancellations not yet recorded (see ``_cancel_all``)."""
        if not self._to_record:
            return None
        ch, res = Changes(), EntryResult()
        self._ch = ch
        todo, self._to_record = self._to_record, []
        for o, ts, reason, text in todo:
            ch.order_changed(o)
            self._emit(res, streams.EXEC_EVENTS, self._report(o, f"{o.client_order_id}:C", ts, reason=reason,
                                                              text=text))
        return ch, res

    def apply_risk_overrides(self, overrides: Mapping[str, str]) -> None:
        """Check against the risk file with ``overrides`` (from the database) from now on.

        Raises ``ConfigError`` naming the key when one is no longer valid: the gateway then
        refuses to start rather than trade on limits nobody set."""
        cfg = self.risk.config.with_overrides(dict(overrides))
        self.risk.reconfigure(cfg)
        self.triggers.reconfigure(cfg.triggers)

    def _on_risk_control(self, ctl: Control, res: EntryResult) -> None:
        """``risk.set`` (args key, value) / ``risk.unset`` (args key): change one limit now.

        The new limits are validated exactly as the file is; a refused change leaves every
        limit as it was. A change is durable (``risk_overrides`` row, audit row) in the
        transaction that acknowledges it, and the next order is checked against it."""
        now = self.clock()
        ch = self._ch
        actor = _text(ctl.actor or "unknown")[:64]
        request_id = _text(ctl.request_id)[:64]
        key = ctl.args.get("key", "")
        value = ctl.args.get("value") if ctl.command == "risk.set" else None
        old_cfg = self.risk.config
        ok, detail = False, ""
        if not key:
            detail = f"{ctl.command} needs args.key"
        elif ctl.command == "risk.set" and value is None:
            detail = "risk.set needs args.value"
        elif not _text(ctl.reason).strip():
            detail = f"{ctl.command} needs a reason"
        else:
            try:
                was = old_cfg.value_of(key)
                cfg = old_cfg.with_override(key, value)
            except ConfigError as e:
                detail = str(e)
            else:
                self.risk.reconfigure(cfg)
                self.triggers.reconfigure(cfg.triggers)
                now_v = cfg.value_of(key)
                ok = True
                detail = f"{key}: {_shown(was)} -> {_shown(now_v)}" + ("" if value is not None else " (the file's value)")
                ch.risk_overrides[key] = None if value is None else {
                    "key": key, "value": value, "actor": actor, "reason": _text(ctl.reason)[:2000],
                    "request_id": request_id, "ts": now,
                }
        res.incr(f"control.{ctl.command}" + ("" if ok else ".refused"))
        if ok:
            log.warning("risk limit changed by %s: %s (%s)", actor, detail, _text(ctl.reason))
        ch.audit.append({
            "ts": now, "actor": actor, "action": ctl.command + ("" if ok else ".refused"),
            "entity": "risk_limit", "entity_id": _text(key)[:128] or "-",
            "detail": {"request_id": request_id, "value": value, "reason": _text(ctl.reason), "detail": detail},
        })
        ack = ControlAck(request_id=ctl.request_id, service=SERVICE, ok=ok, state="SET" if ok else "REFUSED",
                         detail=detail, ts=now)
        self._emit(res, streams.CONTROL_ACKS, ack, durable=True)

    def _on_order_control(self, ctl: Control, res: EntryResult) -> None:
        """``order.cancel`` / ``order.cancel_all``: PENDING_CANCEL, then CANCELLED or a cancel reject."""
        now = self.clock()
        res.incr(f"control.{ctl.command}")
        actor = _text(ctl.actor or "unknown")[:64]
        request_id = _text(ctl.request_id)[:64]
        args = ctl.args
        refused: list[str] = []
        cancelled: list[str] = []
        if ctl.command == "order.cancel":
            cid = args.get("client_order_id", "")
            entity_id = _text(cid)[:128]
            o = self.orders.get(cid)
            if o is None:
                if not cid:
                    detail = "order.cancel needs args.client_order_id"
                elif cid in self._known:
                    detail = f"order {cid} is not open (already filled, cancelled, rejected or expired)"
                else:
                    detail = f"unknown order {cid} (no open order has this id)"
                ok, state = False, ""
                res.incr("cancel_rejects")
            else:
                ok = self._cancel(o, res, now, request_id, f"cancelled by {actor}")
                (cancelled if ok else refused).append(cid)
                state = str(o.status)
                detail = (f"{cid} cancelled" if ok else
                          f"{cid} not cancelled: the venue no longer works it (a fill may be on its way)")
        else:
            sym, strat = args.get("symbol", ""), args.get("strategy", "")
            entity_id = _text(f"symbol={sym or '*'} strategy={strat or '*'}")[:128]
            for o in [o for o in self.orders.values() if (not sym or o.symbol == sym)
                      and (not strat or o.strategy == strat)]:
                ok_one = self._cancel(o, res, now, request_id, f"cancel-all by {actor}")
                (cancelled if ok_one else refused).append(o.client_order_id)
            ok, state = not refused, ""
            detail = f"cancelled {len(cancelled)} order(s)" + (f", {len(refused)} refused by the venue" if refused else "")
        self._ch.audit.append({
            "ts": now, "actor": actor, "action": ctl.command + ("" if ok else ".refused"),
            "entity": "order", "entity_id": entity_id,
            "detail": {"request_id": request_id, "reason": _text(ctl.reason), "detail": detail,
                       "cancelled": cancelled[:1000], "refused": refused[:1000], "n_cancelled": len(cancelled)},
        })
        ack = ControlAck(request_id=ctl.request_id, service=SERVICE, ok=ok, state=state, detail=detail, ts=now)
        self._emit(res, streams.CONTROL_ACKS, ack)

    def _cancel(self, o: Order, res: EntryResult, now: int, request_id: str, text: str) -> bool:
        """Cancel one open order (PENDING_CANCEL, then CANCELLED or back to working); True if cancelled."""
        cid = o.client_order_id
        o.request_cancel()
        self._ch.order_changed(o)
        rid = request_id[:32]
        self._emit(res, streams.EXEC_EVENTS, self._report(o, f"{cid}:PC:{rid}", now, text=text))
        # An order accepted in this batch is not at the venue yet: route() skips it once cancelled.
        if self.venue.cancel(cid) or cid in self._unrouted:
            leaves = o.leaves_qty
            o.transition(OrdStatus.CANCELLED)
            o.reject_reason = "CANCEL_REQUEST"
            o.ts_done = now
            self.portfolio.release(o, leaves)
            del self.orders[cid]
            res.incr("cancels")
            self._emit(res, streams.EXEC_EVENTS, self._report(o, f"{cid}:C", now, reason="CANCEL_REQUEST", text=text))
            return True
        o.cancel_rejected()
        res.incr("cancel_rejects")
        self._emit(res, streams.EXEC_EVENTS, self._report(
            o, f"{cid}:CR:{rid}", now, reason="CANCEL_REJECTED", text="the venue no longer works the order",
        ))
        return False

    # -- step 3: routing, after tx1 is durable -----------------------------------------------
    def route(self, plan: BatchPlan) -> Changes:
        """Send the batch's accepted orders to the venue; returns the writes of what happened."""
        self._ch = plan.tx2
        for order, key in plan.route:
            if order.status != OrdStatus.ACCEPTED or self.orders.get(order.client_order_id) is not order:
                continue  # cancelled (kill switch) before it was routed
            for ev in self.venue.submit(order):
                self._apply(ev, plan.results[key])
        self._unrouted.clear()
        return plan.tx2

    # -- venue events ----------------------------------------------------------------------
    def apply_venue_events(self, events: list[VenueEvent]) -> tuple[EntryResult, Changes]:
        """Apply venue events outside a bus batch (an asynchronous venue's poll, the start-up reconciliation)."""
        res, self._ch = EntryResult(), Changes()
        for ev in events:
            self._apply(ev, res)
        return res, self._ch

    def _apply(self, ev: VenueEvent, res: EntryResult) -> None:
        o = ev.order
        cid = o.client_order_id
        if ev.kind == EventKind.FILL and ev.exec_id in self._exec_seen:
            res.incr("duplicate_fills")  # the venue said it twice: applied once
            return
        if self.orders.get(cid) is not o:
            # Not open here any more (e.g. cancelled): record the anomaly, never apply it silently.
            res.incr("late_events")
            log.warning("venue event %s for %s which is not open (%s); ignored", ev.kind, cid, o.status)
            if ev.kind == EventKind.FILL:
                self._late_fill(ev, res)
            return
        now = self.clock()
        if ev.kind == EventKind.FILL:
            leaves_before = o.qty - o.cum_qty
            try:
                o.apply_fill(ev.qty, ev.price, ev.fee, now)
            except IllegalTransition as e:
                self._illegal(ev, res, str(e))
                return
            self._exec_seen[ev.exec_id] = None
            if len(self._exec_seen) > self._known_cap:
                self._exec_seen.popitem(last=False)
            self.portfolio.on_fill(o, ev.qty, ev.price, ev.fee, leaves_before)
            self._ch.fills.append({
                "exec_id": ev.exec_id, "venue_trade_id": ev.venue_trade_id, "client_order_id": cid,
                "symbol": o.symbol, "side": o.side, "qty": ev.qty, "price": ev.price, "fee": ev.fee,
                "liquidity": ev.liquidity, "venue": self.venue.name, "ts_exec": now,
            })
            res.incr("fills")
            self._emit(res, streams.EXEC_EVENTS, self._report(
                o, ev.exec_id, now, last_qty=ev.qty, last_px=ev.price, fee=ev.fee, venue_trade_id=ev.venue_trade_id,
            ))
            if self.hist is not None:
                self.hist("intent_to_fill").record_ns(now - o.ts_intent)
                self.hist("tick_to_fill").record_ns(now - o.ts_ingest)
        else:
            leaves = o.leaves_qty
            try:
                o.transition(OrdStatus.EXPIRED)
            except IllegalTransition as e:
                self._illegal(ev, res, str(e))
                return
            o.ts_done = now
            self.portfolio.release(o, leaves)
            res.incr("expired")
            self._emit(res, streams.EXEC_EVENTS, self._report(o, f"{cid}:X", now, text=ev.text))
        self._ch.order_changed(o)
        if not o.is_open:
            del self.orders[cid]

    def _event_detail(self, ev: VenueEvent) -> dict[str, Any]:
        o = ev.order
        return {"kind": ev.kind.value, "exec_id": ev.exec_id, "venue_trade_id": ev.venue_trade_id, "qty": str(ev.qty),
                "price": str(ev.price), "fee": str(ev.fee), "tick_seq": ev.tick_seq, "status": str(o.status),
                "order_qty": str(o.qty), "cum_qty": str(o.cum_qty), "venue": self.venue.name}

    def _late_fill(self, ev: VenueEvent, res: EntryResult) -> None:
        """A fill for an order that is no longer open: audited and alerted, never applied."""
        o = ev.order
        now = self.clock()
        res.incr("late_fills")
        self._exec_seen[ev.exec_id] = None
        self._ch.audit.append({"ts": now, "actor": SERVICE, "action": "order.late_fill", "entity": "order",
                               "entity_id": o.client_order_id, "detail": self._event_detail(ev)})
        # On sys:alerts, not ex:events: consumers of ex:events book every report with last_qty > 0.
        self._emit(res, streams.ALERTS, self._report(
            o, f"{ev.exec_id}:LATE", now, last_qty=ev.qty, last_px=ev.price, fee=ev.fee, reason=LATE_FILL,
            venue_trade_id=ev.venue_trade_id, text=f"fill for an order that is {o.status}: not applied",
        ))

    def _illegal(self, ev: VenueEvent, res: EntryResult, error: str) -> None:
        """A venue event the state machine refuses (e.g. a fill beyond the order quantity): audited, not applied."""
        res.incr("illegal_transitions")
        log.error("venue event refused by the order state machine: %s", error)
        detail = self._event_detail(ev)
        detail["error"] = error
        self._ch.audit.append({"ts": self.clock(), "actor": SERVICE, "action": "order.illegal_transition",
                               "entity": "order", "entity_id": ev.order.client_order_id, "detail": detail})

    # -- output ------------------------------------------------------------------------------
    def _emit(self, res: EntryResult, stream: str, msg: Any, durable: bool = True) -> None:
        data = encode(msg)
        res.messages.append((stream, data))
        if durable:
            self.outbox_seq += 1
            self._ch.outbox.append({"seq": self.outbox_seq, "stream": stream, "payload": data})
            res.hwm = self.outbox_seq

    def _report(
        self,
        o: Order,
        exec_id: str,
        ts_exec: int,
        *,
        last_qty: Decimal = _ZERO,
        last_px: Decimal = _ZERO,
        fee: Decimal = _ZERO,
        reason: str = "",
        venue_trade_id: str = "",
        text: str = "",
    ) -> ExecutionReport:
        return ExecutionReport(
            exec_id=exec_id,
            client_order_id=o.client_order_id,
            signal_id=o.signal_id,
            strategy=o.strategy,
            symbol=o.symbol,
            side=o.side,
            status=o.status,
            order_qty=o.qty,
            cum_qty=o.cum_qty,
            leaves_qty=o.leaves_qty,
            last_qty=last_qty,
            last_px=last_px,
            avg_px=o.avg_px,
            fee=fee,
            ts_event=o.ts_event,
            ts_ingest=o.ts_ingest,
            ts_signal=o.ts_signal,
            ts_intent=o.ts_intent,
            ts_exec=ts_exec,
            reason=reason,
            venue=o.venue,
            venue_trade_id=venue_trade_id,
            text=text,
        )
