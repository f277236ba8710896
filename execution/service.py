"""The execution gateway service: the OMS on the bus (``python -m execution``).

Consumes every ``md:ticks:{shard}`` (marks and simulator fills), ``se:intents`` and
``ctl:commands`` in one consumer group; publishes ``ExecutionReport`` on ``ex:events`` and
``ControlAck`` on ``ctl:acks`` in the same MULTI/EXEC as its acks.

The database is the authority and is written before the bus: per batch, one transaction
for the new orders (and everything else the batch changed) before any of them is routed,
then one for the fills the routing produced. While the database is unreachable the
gateway retries with back-off and routes nothing (status "degraded").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from common import streams
from common.bus import DATA_FIELD, Consumer, Entry, Outputs
from common.config import CommonSettings, ConfigError, load
from common.db import make_engine
from common.instruments import Instruments
from common.messages import Control, OrderIntent, TickBatch
from common.service import Service
from execution.config import ExecutionSettings
from execution.kill_switch import GLOBAL
from execution.oms import OUTBOX_HWM, SERVICE, BatchPlan, EntryResult, OrderManager
from execution.risk import RiskConfig, RiskEngine
from execution.store import SchemaMissing, Store, is_transient
from execution.venues import build_venue

__all__ = ["EntryFailed", "ExecutionGateway"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    ) -> None:
        super().__init__(common)
        self.settings = settings if settings is not None else load(ExecutionSettings)
        s = self.settings
        # Validated here so a bad file stops `python -m execution` with a ConfigError at once.
        self.instruments = Instruments.load(s.instruments_file)
        self.risk_config = RiskConfig.load(s.risk_file)
        self.venue = build_venue(s, self.instruments)
        self.risk = RiskEngine(self.risk_config, self.instruments, self.venue.fee)
        self.oms = OrderManager(
            self.risk, self.venue, Decimal(common.initial_cash), known_ids=s.known_ids_cache, hist=self.hist
        )
        self._own_engine = engine is None
        self._engine = engine
        self.store: Store | None = None
        self._results: dict[tuple[str, bytes], EntryResult] = {}
        self._failed: set[tuple[str, bytes]] = set()
        self._batch_hwm = 0
        self._written_seq = 0  # highest outbox seq durable in the database
        self._unconfirmed = True  # outbox rows may be missing from the bus: republish first

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
            await self._republish()
        except SchemaMissing as e:
            raise ConfigError(str(e)) from e
        except _Aborted:
            return

    async def teardown(self) -> None:
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
            self.oms.kill.describe(), len(self.oms.orders), sum(1 for q in pf.positions.values() if q), pf.cash,
        )

    async def on_bus_reset(self) -> None:
        # The trading state and the outbox live in the database; Redis only mirrors them.
        # Mirror the state again (a HALTED gateway stays HALTED: memory came from the
        # database) and republish the outbox rows still held: the high-water mark went with
        # the flush, so reports are sent again rather than lost (at-least-once, by exec_id).
        assert self.redis is not None
        await self.redis.hset(streams.KILL_STATE, mapping=self.oms.kill.mirror())
        self._unconfirmed = True

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
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay)
                except TimeoutError:
                    pass
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

    async def idle(self) -> None:
        if self._unconfirmed:
            await self._republish()
