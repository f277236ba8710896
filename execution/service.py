"""The execution gateway service: the OMS on the bus (``python -m execution``).

Consumes every ``md:ticks:{shard}`` (marks and simulator fills), ``se:intents`` and
``ctl:commands`` in one consumer group; publishes ``ExecutionReport`` on ``ex:events`` and
``ControlAck`` on ``ctl:acks`` in the same MULTI/EXEC as its acks.

The database is the authority and is written before the bus: per batch, one transaction
for the new orders (and everything else the batch changed) before any of them is routed,
then one for the fills the routing produced. While the database is unreachable the
gateway retries with back-off and routes nothing (status "degraded").

On start, after loading its state, the gateway reconciles it with the venue
(``_reconcile``): fills of its open orders that the database lacks are applied, orders the
venue ended are closed, open orders the venue never received are routed — each audited
(``venue.reconcile.*``); an order the venue holds that the database does not know (open
or with fills), an order whose state or fills differ from the database's, or a position
the fills do not explain makes it refuse to start (``ReconciliationFailed``, exit code 2)
naming each. An asynchronous venue's later events are applied per batch and when idle.

Control commands also come through the database (``control_requests``, written by
``aitrader kill|cancel`` when Redis is down): a task of its own polls the table every
``control_poll_ms`` — also while the bus loop backs off — and applies each request through
the same OMS path as the bus command, marking the row handled, with its result, in the
transaction that makes the effects durable. Its reports wait in the outbox until Redis
answers. The task and the bus batches share ``batch_lock``: they never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from common import streams
from common.bus import DATA_FIELD, BusUnavailable, Consumer, Entry, Outputs
from common.config import CommonSettings, ConfigError, load
from common.db import make_engine
from common.instruments import Instruments
from common.messages import (
    Control,
    ControlAck,
    DecodeError,
    Heartbeat,
    OrderIntent,
    TickBatch,
    decode_as,
    encode,
)
from common.service import Service
from execution.config import ExecutionSettings
from execution.kill_switch import GLOBAL
from execution.oms import OUTBOX_HWM, SERVICE, BatchPlan, EntryResult, OrderManager
from execution.risk import RiskConfig, RiskEngine
from execution.store import Changes, SchemaMissing, Store, is_transient
from execution.venues import ReconciliationFailed, build_venue

__all__ = ["EntryFailed", "ExecutionGateway"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_CONTROL = "db:control_requests"  # the stream name a database control request is staged under
_BUS_TIMEOUT_S = 2.0  # longest wait for Redis when publishing what a database request did


class EntryFailed(Exception):
    """The entry's batch could not be made durable; it stays pending and is retried."""


class _Aborted(Exception):
    """Stopping while the database is unreachable: leave the batch pending."""


class ExecutionGateway(Service):
    """Pre-trade checks, kill switch, OMS and venue routing as a bus service."""

    name = SERVICE  # also its consumer group: streams.GROUP_EXECUTION

    def __init__(
        self,
        common: CommonSettings,
        settings: ExecutionSettings | None = None,
        *,
        engine: Engine | None = None,
        clock: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        super().__init__(common)
        self.settings = settings if settings is not None else load(ExecutionSettings)
        self.serve_metrics_from(self.settings)
        s = self.settings
        # Validated here so a bad file stops `python -m execution` with a ConfigError at once.
        self.instruments = Instruments.load(s.instruments_file)
        self.risk_config = RiskConfig.load(s.risk_file)
        self.venue = build_venue(s, self.instruments, common)
        # The OMS's wall clock and the throttles' monotonic clock: a backtest passes its simulated clock.
        self.risk = RiskEngine(self.risk_config, self.instruments, self.venue.fee, clock=monotonic_ns)
        self.oms = OrderManager(
            self.risk, self.venue, Decimal(common.initial_cash), known_ids=s.known_ids_cache, hist=self.hist,
            clock=clock,
        )
        self._own_engine = engine is None
        self._engine = engine
        self.store: Store | None = None
        self._results: dict[tuple[str, bytes], EntryResult] = {}
        self._failed: set[tuple[str, bytes]] = set()
        self._cancels_before = 0
        self._batch_hwm = 0
        self._written_seq = 0  # highest outbox seq durable in the database
        self._unconfirmed = True  # outbox rows may be missing from the bus: republish first
        self._hb_cursor = b"$"  # sys:heartbeats read so far (upstream silence trigger)
        self._hb_polled = 0.0
        self._bus_behind = False  # a database request's mirror / reports not on the bus yet
        self._ctl_counters: dict[str, int] = {}  # its counters, for the bus's stats hash

    def input_types(self) -> dict[str, type]:
        types: dict[str, type] = {streams.ticks_stream(i): TickBatch for i in range(self.common.shards)}
        types[streams.INTENTS] = OrderIntent
        types[streams.CONTROL] = Control
        return types

    def configure_consumer(self, consumer: Consumer) -> None:
        # Ticks only update marks between orders: read them in a few large batches instead
        # of one cycle per entry (CPU the hot path's stages need), but every cycle while an
        # order waits for its next tick.
        consumer.set_lazy([streams.ticks_stream(i) for i in range(self.common.shards)], self.settings.md_interval_ms)

    # -- lifecycle ---------------------------------------------------------------------
    async def setup(self) -> None:
        if self._engine is None:
            self._engine = make_engine(self.common.db_url)
        self.store = Store(self._engine)
        try:
            await self._db(self.store.check_schema)
            await self._load()
            await self._reconcile()
            await self._republish()
        except SchemaMissing as e:
            raise ConfigError(str(e)) from e
        except _Aborted:
            return

    async def teardown(self) -> None:
        await asyncio.to_thread(self.venue.close)
        if self._own_engine and self._engine is not None:
            self._engine.dispose()

    async def _load(self) -> None:
        assert self.store is not None
        snap = await self._db(self.store.snapshot, GLOBAL, self.settings.known_ids_cache)
        self.oms.load(snap)
        self._written_seq = max(self._written_seq, snap.outbox_max_seq)
        assert self.redis is not None
        await self.redis.hset(streams.KILL_STATE, mapping=self.oms.kill.mirror())
        pf = self.oms.portfolio
        log.info(
            "execution: loaded state %s, %d open orders, %d positions, cash %s",
            self.oms.switches.describe(), len(self.oms.orders), sum(1 for q in pf.positions.values() if q), pf.cash,
        )

    async def _reconcile(self) -> dict[str, int]:
        """Compare the open orders, fills and positions with the venue's; resolve what is safe, else refuse."""
        assert self.store is not None
        oms, venue = self.oms, self.venue
        open_orders = list(oms.orders.values())
        known = await self._db(self.store.exec_ids, [o.client_order_id for o in open_orders]) if open_orders else set()
        try:
            rec = await asyncio.to_thread(venue.reconcile, open_orders, known)
        except Exception as e:  # any failure to ask means "cannot reconcile"
            raise ReconciliationFailed(
                f"cannot reconcile with venue {venue.name}: {type(e).__name__}: {e}; the gateway does not start "
                "(see docs/operations.md, 'The gateway refuses to start')"
            ) from e
        refused: list[str] = []
        ours = set(oms.orders)
        others = [v for v in rec.others if v.order_id not in ours]
        db_orders = await self._db(self.store.existing, [v.order_id for v in others]) if others else {}
        ignored = 0
        for v in others:
            o = db_orders.get(v.order_id)
            what = (f"{v.order_id} (venue id {v.venue_order_id}: {v.symbol} side={v.side} qty={v.qty} "
                    f"filled={v.filled_qty} {v.status})")
            if o is None:
                if v.is_open or v.filled_qty:
                    refused.append(f"order unknown to the gateway: {what}")
                else:
                    ignored += 1  # ended unfilled before it reached us: changes nothing
            elif v.is_open:
                refused.append(f"order open at the venue but {o.status} in the database: {what}")
            elif v.filled_qty != o.cum_qty:
                refused.append(f"order filled {v.filled_qty} at the venue but {o.cum_qty} in the database: {what}")
        res, ch = oms.apply_venue_events(rec.events)
        now = oms.clock()
        for ev in rec.events:
            ch.audit.append({"ts": now, "actor": SERVICE, "action": f"venue.reconcile.{ev.kind.value}",
                             "entity": "order", "entity_id": ev.order.client_order_id,
                             "detail": oms._event_detail(ev)})
        if rec.positions is not None:
            pf = oms.portfolio
            for sym in sorted(set(rec.positions) | {s for s, q in pf.positions.items() if q}):
                theirs, mine = rec.positions.get(sym, Decimal(0)), pf.position(sym)
                if theirs != mine:
                    refused.append(f"position {sym}: {theirs} at the venue, {mine} from the gateway's fills")
        routed = [] if refused else rec.unrouted  # nothing is routed by a gateway that refuses to start
        for cid in routed:
            ch.audit.append({"ts": now, "actor": SERVICE, "action": "venue.reconcile.routed", "entity": "order",
                             "entity_id": cid, "detail": {"venue": venue.name,
                                                          "text": "open order the venue had never received"}})
        found = len(rec.events) + len(rec.unrouted) + len(refused) + ignored
        figures = {"found": found, "resolved": len(rec.events) + len(routed), "refused": len(refused),
                   "ignored": ignored}
        if found:
            ch.audit.append({"ts": now, "actor": SERVICE, "action": "venue.reconcile" + (".refused" if refused else ""),
                             "entity": "venue", "entity_id": venue.name, "detail": {**figures, "refused": refused}})
        if ch:
            await self._db(self.store.write, ch)
            self._note_written(ch.outbox)  # published by setup's _republish right after
        for name, n in res.counters.items():
            self.count(name, n)
        self.count("reconcile.found", found)
        self.count("reconcile.resolved", figures["resolved"])
        level = logging.ERROR if refused else logging.WARNING if found else logging.INFO
        log.log(level, "execution: reconciliation with venue %s: found %d, resolved %d, refused %d, ignored %d",
                venue.name, found, figures["resolved"], len(refused), ignored)
        if refused:
            self.count("reconcile.refused", len(refused))
            for r in refused:
                log.error("execution: reconciliation: %s", r)
            raise ReconciliationFailed(
                f"reconciliation with venue {venue.name} failed; the gateway does not start: {len(refused)} "
                f"unresolved ({'; '.join(refused[:20])}{' ...' if len(refused) > 20 else ''}); "
                "see docs/operations.md, 'The gateway refuses to start'"
            )
        for cid in routed:  # durable and open here, never received by the venue: route it now
            order = oms.orders.get(cid)
            if order is not None and order.is_open:
                oms._deferred.extend(venue.submit(order))
        return figures

    async def _drain_venue(self) -> None:
        """Apply what an asynchronous venue reported while no batch came (fills, expiries)."""
        events = self.venue.poll()
        if not events:
            return
        res, ch = self.oms.apply_venue_events(events)
        assert self.store is not None
        try:
            await self._db(self.store.write, ch)
        except _Aborted:
            return  # stopping: the next start's reconciliation finds these fills again
        self._note_written(ch.outbox)
        for name, n in res.counters.items():
            self.count(name, n)
        await self._republish()

    async def on_bus_reset(self) -> None:
        # The trading state and the outbox live in the database; Redis only mirrors them.
        # Mirror the state again (a HALTED gateway stays HALTED: memory came from the
        # database) and republish the outbox rows still held: the high-water mark went with
        # the flush, so reports are sent again rather than lost (at-least-once, by exec_id).
        assert self.redis is not None
        await self.redis.hset(streams.KILL_STATE, mapping=self.oms.kill.mirror())
        self._unconfirmed = True

    async def extra_tasks(self) -> list[asyncio.Task]:
        tasks = await super().extra_tasks()
        tasks.append(asyncio.create_task(self._control_requests(), name=f"{self.name}.control_requests"))
        return tasks

    def heartbeat_detail(self) -> str:
        base = f"{self.oms.kill.state} open={len(self.oms.orders)}"
        return f"{base} {self.detail}" if self.detail else base

    # -- the database, with retries -----------------------------------------------------
    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        delay = 0.05
        while True:
            try:
                out = fn(*args)
            except SQLAlchemyError as e:
                if not is_transient(e):
                    raise
                if self.stopping.is_set():
                    raise _Aborted() from e
                self.status, self.detail = "degraded", f"database unavailable: {type(e).__name__}"
                self.count("db_retries")
                log.warning("execution: %s; retrying in %.2fs", str(e).splitlines()[0], delay)
                await self.nap(delay)
                delay = min(delay * 2, self.settings.db_retry_max_s)
                continue
            if self.detail.startswith("database unavailable"):
                self.status, self.detail = "ok", ""
            return out

    async def _republish(self) -> None:
        """Publish outbox rows above the bus's high-water mark (after a crash or a failed commit)."""
        assert self.redis is not None and self.store is not None
        raw = await self.redis.get(OUTBOX_HWM)
        hwm = int(raw) if raw else 0
        rows = await self._db(self.store.outbox_after, hwm)
        if rows:
            pipe = self.redis.pipeline(transaction=True)
            for _seq, stream, payload in rows:
                pipe.xadd(stream, {DATA_FIELD: payload}, maxlen=self.common.stream_maxlen, approximate=True)
            pipe.set(OUTBOX_HWM, rows[-1][0])
            await pipe.execute()
            hwm = rows[-1][0]
            self.count("republished", len(rows))
            log.info("execution: republished %d outbox messages up to seq %d", len(rows), hwm)
        self.oms.confirmed_hwm = max(self.oms.confirmed_hwm, hwm)
        self._unconfirmed = False

    # -- batches -------------------------------------------------------------------------
    async def _run(self, entries: list[Entry]) -> BatchPlan:
        """Stage, persist, route, persist: the three steps of one batch (see execution.oms)."""
        assert self.store is not None
        oms = self.oms
        cids = oms.unknown_ids(entries)
        existing = await self._db(self.store.existing, cids) if cids else {}
        plan = oms.stage(entries, existing)
        await self._db(self.store.write, plan.tx1)
        oms.tx1_done(plan)
        self._note_written(plan.tx1.outbox)
        oms.route(plan)
        await self._db(self.store.write, plan.tx2)
        self._note_written(plan.tx2.outbox)
        return plan

    def _note_written(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._written_seq = max(self._written_seq, rows[-1]["seq"])

    async def _reload(self) -> None:
        # Memory may be ahead of the database after a failed step: the database wins.
        await self._load()
        self._unconfirmed = True

    async def before_batch(self, batch: list[Entry]) -> None:
        self._results, self._failed = {}, set()
        self._cancels_before = self.oms.cancels_to_record
        if self._unconfirmed:
            await self._republish()
        try:
            plan = await self._run(batch)
            self._results = plan.results
        except _Aborted:
            self._failed = {(e.stream, e.id) for e in batch}
        except Exception:  # a bug or a bad entry: find it by retrying one by one
            log.exception("execution: batch of %d failed; reloading state and retrying entry by entry", len(batch))
            self.count("batch_failures")
            if not await self._reload_or_fail(batch):
                batch = []
            for i, e in enumerate(batch):
                try:
                    self._results.update((await self._run([e])).results)
                except _Aborted:
                    self._failed.update((x.stream, x.id) for x in batch[i:])
                    break
                except Exception:  # this entry stays pending; its redeliveries are counted
                    log.exception("execution: entry %s %s failed", e.stream, e.id)
                    self._failed.add((e.stream, e.id))
                    if not await self._reload_or_fail(batch[i + 1 :]):
                        break
        self._batch_hwm = max((r.hwm for r in self._results.values()), default=0)
        # Until the bus commit confirms it, what this batch wrote may be missing from the bus.
        self._unconfirmed = self.oms.confirmed_hwm < self._written_seq

    async def _reload_or_fail(self, rest: list[Entry]) -> bool:
        try:
            await self._reload()
            return True
        except _Aborted:
            self._failed.update((x.stream, x.id) for x in rest)
            return False

    async def handle(self, entry: Entry, out: Outputs) -> None:
        key = (entry.stream, entry.id)
        if key in self._failed:
            raise EntryFailed(f"{entry.stream} {entry.id!r}: not persisted; left pending for retry")
        res = self._results.pop(key, None)
        if res is None:
            return
        if res.dead is not None:
            out.dead_letter(entry, res.dead)
            return
        for stream, data in res.messages:
            out.publish(stream, data)
        for name, n in res.counters.items():
            out.incr(name, n)
        for op in res.ops:
            out.redis_op(op)
        if res.hwm:
            out.redis_op(lambda pipe, v=res.hwm: pipe.set(OUTBOX_HWM, v))

    async def after_commit(self, batch: list[Entry], out: Outputs) -> None:
        if self.consumer is not None:
            self.consumer.urgent = self.venue.awaits_ticks
        for name, n in out.counters.items():
            self.count(name, n)
        if self._batch_hwm:
            self.oms.confirmed_hwm = max(self.oms.confirmed_hwm, self._batch_hwm)
        self._unconfirmed = self.oms.confirmed_hwm < self._written_seq
        # A halt in this very batch: its cancellations are recorded after the next batch (or
        # when idle), so the intents already waiting are refused first (see OrderManager._cancel_all).
        if self.oms.cancels_to_record and self.oms.cancels_to_record == self._cancels_before:
            await self._flush_cancels()
        await self._kill_triggers()

    async def idle(self) -> None:
        if self._unconfirmed:
            await self._republish()
        await self._flush_cancels()
        await self._drain_venue()
        await self._kill_triggers()

    async def _write_aside(self, ch: Changes, what: str) -> bool:
        """Commit writes made outside a bus batch; True once durable (their reports then go
        out from the outbox). Not durable: the database wins — memory is reloaded from it.
        Stopping with the database away: left to the next start."""
        assert self.store is not None
        try:
            await self._db(self.store.write, ch)
        except _Aborted:
            return False
        except Exception:
            log.exception("execution: writing %s failed; reloading state", what)
            await self._reload()
            return False
        self._note_written(ch.outbox)
        self._unconfirmed = True
        return True

    async def _flush_cancels(self, publish: bool = True) -> None:
        """Record the kill switch's cancellations not yet recorded (a halted scope's open orders
        are cancelled again on load if this never happens), then publish them."""
        out = self.oms.flush_cancels()
        if out is not None and await self._write_aside(out[0], "the kill switch's cancellations") and publish:
            await self._republish()

    # -- control requests through the database -----------------------------------------------
    async def _control_requests(self) -> None:
        """Poll ``control_requests`` and apply each new row; never depends on Redis."""
        every = self.settings.control_poll_ms / 1000
        failing = False
        while not self.stopping.is_set():
            try:
                await self.poll_controls()
                failing = False
            except _Aborted:
                return
            except Exception as e:  # the control path must outlive a bad moment
                self.count("control_requests.errors")
                if not failing:
                    log.exception("execution: reading control_requests failed (%s); retrying", type(e).__name__)
                failing = True
            await self.nap(every)

    async def poll_controls(self) -> int:
        """Apply the unhandled control requests, then publish what they did if Redis answers; how many."""
        assert self.store is not None
        rows = await asyncio.to_thread(self.store.pending_controls)  # off the loop: most polls find nothing
        if rows:
            async with self.batch_lock:
                for row in rows:
                    if self.stopping.is_set():
                        break
                    await self._apply_control_request(row)
            self._bus_behind = True
        if self._bus_behind:
            await self._publish_control_effects()
        return len(rows)

    async def _apply_control_request(self, row: dict[str, Any]) -> None:
        """One request: staged as the same command from the bus; effects and result in one transaction."""
        assert self.store is not None
        oms = self.oms
        ctl, problem = _control_of(row)
        if ctl is None:
            result = {"id": row["id"], "ts_handled": oms.clock(), "ok": False, "state": "", "detail": problem}
            await self._db(self.store.write, Changes(control_results=[result]))
            self._note_control({"control_requests.invalid": 1})
            log.warning("execution: control request %s refused: %s", row["request_id"], problem)
            return
        entry = Entry(stream=DB_CONTROL, id=str(row["id"]).encode(), msg=ctl, raw=b"")
        try:
            plan = oms.stage([entry])
            res = plan.results[(entry.stream, entry.id)]
            ack = next((decode_as(data, ControlAck) for stream, data in res.messages
                        if stream == streams.CONTROL_ACKS), None)
            if ack is None:  # a command no part of the gateway handles (on the bus: another service's)
                result = {"ok": False, "state": "", "detail": f"unknown command {ctl.command!r}"}
            else:
                result = {"ok": ack.ok, "state": ack.state[:16], "detail": ack.detail}
            plan.tx1.control_results.append({"id": row["id"], "ts_handled": oms.clock(), **result})
            await self._db(self.store.write, plan.tx1)
            oms.tx1_done(plan)
            self._note_written(plan.tx1.outbox)
            oms.route(plan)  # nothing to route for a command; keeps the OMS's per-batch bookkeeping
            await self._db(self.store.write, plan.tx2)
            self._note_written(plan.tx2.outbox)
            await self._flush_cancels(publish=False)  # no bus batch may come (Redis down): record them now
        except _Aborted:
            raise
        except Exception as e:  # not durable: the database wins; answer the request instead of retrying forever
            log.exception("execution: control request %s failed; reloading state", row["request_id"])
            try:
                await self._reload()
            except BusUnavailable:
                pass  # memory is reloaded; the Redis mirror is rewritten by _publish_control_effects
            fail = {"id": row["id"], "ts_handled": oms.clock(), "ok": False, "state": "",
                    "detail": f"failed: {type(e).__name__}: {str(e)[:500]}"}
            await self._db(self.store.write, Changes(control_results=[fail]))
            self._note_control({"control_requests.failed": 1})
            return
        self._note_control({**res.counters, "control_requests": 1})
        log.info("execution: control request %s (%s %s by %s) from the database: ok=%s %s", ctl.request_id,
                 ctl.command, ctl.scope, ctl.actor, result["ok"], result["detail"])

    def _note_control(self, counters: dict[str, int]) -> None:
        for name, n in counters.items():
            self.count(name, n)
            self._ctl_counters[name] = self._ctl_counters.get(name, 0) + n

    async def _publish_control_effects(self) -> None:
        """The trading-state mirror, the counters and the outbox onto the bus (when Redis answers)."""
        assert self.redis is not None
        self._unconfirmed = True  # the batch path republishes too, whichever comes first
        try:
            async with self.batch_lock:
                await asyncio.wait_for(self._publish_control_effects_now(), timeout=_BUS_TIMEOUT_S)
        except (TimeoutError, *BusUnavailable) as e:
            log.debug("execution: bus unavailable for control request effects (%s); kept in the outbox", e)
            return
        self._bus_behind = False

    async def _publish_control_effects_now(self) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(streams.KILL_STATE, mapping=self.oms.kill.mirror())
        for name, n in self._ctl_counters.items():
            pipe.hincrby(streams.stats_key(self.name), name, n)
        await pipe.execute()
        self._ctl_counters = {}
        await self._republish()

    # -- automatic kill triggers -----------------------------------------------------------
    async def _kill_triggers(self) -> None:
        """Feed the upstream heartbeats (once a second), evaluate the triggers, carry out a halt."""
        oms = self.oms
        if not oms.triggers.enabled or self.store is None:
            return
        if oms.triggers.config.upstream_silence_s is not None:
            loop_now = asyncio.get_running_loop().time()
            if loop_now - self._hb_polled >= 1.0:
                self._hb_polled = loop_now
                await self._poll_heartbeats()
        out = oms.check_triggers()
        if out is None:
            return
        ch, res = out
        # Not durable: memory must not say halted while the database does not (it is retried).
        if not await self._write_aside(ch, "the automatic halt" if ch.outbox else "the kill triggers' baselines"):
            return
        if not (ch.outbox or res.ops or res.counters):  # only the baselines: nothing to publish
            return
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=True)
        for op in res.ops:
            op(pipe)
        for name, n in res.counters.items():
            pipe.hincrby(streams.stats_key(self.name), name, n)
            self.count(name, n)
        await pipe.execute()
        await self._republish()  # the cancels, the ack and the alert, from the outbox

    async def _poll_heartbeats(self) -> None:
        assert self.redis is not None
        if self._hb_cursor == b"$":
            last = await self.redis.xrevrange(streams.HEARTBEATS, count=1)
            self._hb_cursor = last[0][0] if last else b"0-0"
        resp = await self.redis.xread({streams.HEARTBEATS: self._hb_cursor}, count=10_000)
        now = self.oms.clock()
        for _stream, items in resp or []:
            for eid, fields in items:
                self._hb_cursor = eid
                try:
                    hb = decode_as(fields.get(DATA_FIELD, b""), Heartbeat)
                except DecodeError:
                    continue
                self.oms.triggers.on_heartbeat(hb.service, hb.status, now)


def _control_of(row: dict[str, Any]) -> tuple[Control | None, str]:
    """The ``Control`` a ``control_requests`` row asks for, validated as a bus command is; or why not."""
    try:
        ctl = Control(
            request_id=row["request_id"], command=row["command"], scope=row["scope"] or "global",
            reason=row["reason"] or "", actor=row["actor"] or "", args=dict(row["args"] or {}),
            ts=int(row["ts_requested"] or 0),
        )
        return decode_as(encode(ctl), Control), ""  # the bus's bounds and types (args: text to text)
    except (DecodeError, TypeError, ValueError) as e:
        return None, f"invalid control request: {str(e)[:500]}"
