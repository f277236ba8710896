"""The strategy engine service: signals → sized order intents, from a cached account context.

Consumes ``Signal``s (``pe:signals``) and ``ExecutionReport``s (``ex:events``) in group
``strategy_engine``. A signal is routed to the enabled strategies that follow its
detector and symbol, sized against the cached ``AccountContext`` (never a network call
per signal) and published to ``se:intents`` with a deterministic client order id, in the
same MULTI/EXEC that acks the signal. Fills move the context at once and schedule a
refresh from the broker's MCP server; a background task also refreshes every
``refresh_s``. When the context is older than ``stale_after_s`` the engine opens nothing
new (closing still passes), counts ``intents_blocked_stale_context`` and says why in its
heartbeat.

Counters (heartbeat and ``stats:strategy_engine``): ``signals``, ``intents``,
``signals_skipped.<reason>``, ``intents_blocked_stale_context``, ``fills``,
``refreshes``, ``refresh_failures``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from redis.exceptions import ResponseError

from common import streams
from common.bus import Entry, Outputs
from common.config import CommonSettings, load
from common.instruments import Instruments
from common.messages import ExecutionReport, OrderIntent, OrdType, Signal, TimeInForce, client_order_id_for
from common.service import Service
from strategy_engine.account import AccountContext
from strategy_engine.config import StrategySettings
from strategy_engine.mcp_client import BrokerClientError, McpBrokerClient, client_from_settings
from strategy_engine.sizing import size_intent
from strategy_engine.strategies import StrategyConfig, StrategyRouter, load_strategies

__all__ = ["StrategyEngineService", "build"]

log = logging.getLogger(__name__)


class StrategyEngineService(Service):
    """Turns signals into sized ``OrderIntent``s using the broker account context."""

    name = streams.GROUP_STRATEGY  # "strategy_engine": also the consumer group

    def __init__(
        self,
        common: CommonSettings,
        settings: StrategySettings | None = None,
        strategies: list[StrategyConfig] | None = None,
        instruments: Instruments | None = None,
        broker: McpBrokerClient | None = None,
    ) -> None:
        super().__init__(common)
        self.settings = s = settings or load(StrategySettings)
        self.router = StrategyRouter(
            strategies if strategies is not None else load_strategies(s.strategies_path)
        )
        self.instruments = instruments or Instruments.load(s.instruments_path)
        self.broker = broker or client_from_settings(s, common, "aitrader-strategy-engine")
        self.context = AccountContext(s.stale_after_s, s.pending_ttl_s, settle_s=s.fill_settle_s)
        self._refresh_soon = asyncio.Event()
        self._fee_buffer_bps = s.fee_buffer_bps

    # -- set-up ----------------------------------------------------------------------------
    def input_types(self) -> dict[str, type]:
        return {streams.SIGNALS: Signal, streams.EXEC_EVENTS: ExecutionReport}

    async def setup(self) -> None:
        assert self.redis is not None
        # ex:events is a delta feed on top of the broker's snapshot, whose history the snapshot already
        # holds: a new group starts at the end of the stream ("$"), not at 0 as the Consumer would.
        try:
            await self.redis.xgroup_create(streams.EXEC_EVENTS, self.name, id="$", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per MCP request otherwise
        # Best effort: a broker that is down leaves the context stale, not the engine dead.
        await self.refresh()

    async def extra_tasks(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._refresher(), name=f"{self.name}.refresh")]

    # -- account context -------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Fetch a snapshot over MCP and apply it; False (context unchanged, error kept) on failure."""
        requested = time.time_ns()
        try:
            # The MCP round trips (session set-up, JSON, validation) cost tens of ms of CPU:
            # run them on their own event loop in a thread so signals keep flowing here.
            snap = await asyncio.to_thread(asyncio.run, self.broker.snapshot())
        except BrokerClientError as e:
            if not self.context.last_error:
                log.warning("%s: account refresh failed: %s", self.name, e)
            self.context.last_error = str(e)[:300]
            self.count("refresh_failures")
            self._update_status()
            return False
        if self.context.last_error:
            log.info("%s: account refresh recovered", self.name)
        self.context.apply_snapshot(snap, requested)
        self.count("refreshes")
        self._update_status()
        return True

    async def _refresher(self) -> None:
        s = self.settings
        while not self.stopping.is_set():
            period = s.refresh_s if not self.context.last_error else min(s.refresh_s, 1.0)
            try:
                await asyncio.wait_for(self._refresh_soon.wait(), timeout=period)
                # A fill asked for it: let the broker apply the burst first, then take one snapshot.
                await asyncio.sleep(s.fill_refresh_delay_s)
            except TimeoutError:
                pass
            self._refresh_soon.clear()
            if self.stopping.is_set():
                return
            await self.refresh()
            # Bursts of fills coalesce: at most one refresh per min_refresh_interval_s.
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=s.min_refresh_interval_s)
            except TimeoutError:
                pass

    def _update_status(self) -> None:
        # self.detail is the base loop's (Redis unavailable); the stale context is ours.
        self.status = "degraded" if self.context.is_stale() or self.detail else "ok"

    async def heartbeat_once(self, status: str | None = None) -> None:
        if status is None:
            self._update_status()  # staleness comes with time passing, not only with refresh attempts
        await super().heartbeat_once(status)

    def heartbeat_detail(self) -> str:
        ctx = self.context.describe()
        return f"{self.detail}; {ctx}" if self.detail else ctx

    # -- messages --------------------------------------------------------------------------
    def _count(self, out: Outputs, name: str) -> None:
        out.incr(name)
        self.count(name)

    async def handle(self, entry: Entry, out: Outputs) -> None:
        msg = entry.msg
        if isinstance(msg, Signal):
            self._on_signal(msg, out)
        else:
            self._on_report(msg, out)

    def _on_report(self, rep: ExecutionReport, out: Outputs) -> None:
        if self.context.apply_report(rep):
            self._count(out, "fills")
        if rep.last_qty > 0:
            self._refresh_soon.set()

    def _on_signal(self, sig: Signal, out: Outputs) -> None:
        self._count(out, "signals")
        strategies = self.router.route(sig.detector, sig.symbol)
        if not strategies:
            self._count(out, "signals_skipped.no_strategy")
            return
        ctx = self.context
        price = Decimal(str(sig.price))
        ctx.mark(sig.symbol, price)
        can_open = not ctx.is_stale()
        inst = self.instruments.get(sig.symbol)
        for cfg in strategies:
            coid = client_order_id_for(sig.signal_id, cfg.name)
            again = ctx.recent_intent(coid)
            if again is not None:
                # A re-delivered signal: the same intent again (the gateway drops the duplicate id).
                out.publish(streams.INTENTS, again)
                self._count(out, "intents_replayed")
                continue
            res = size_intent(
                side=sig.side,
                price=price,
                volatility=sig.volatility,
                equity=ctx.equity,
                cash=ctx.available_cash(),
                current=ctx.position(sig.symbol),
                cfg=cfg,
                instrument=inst,
                fee_buffer_bps=self._fee_buffer_bps,
                can_open=can_open,
            )
            if res.blocked_stale:
                self._count(out, "intents_blocked_stale_context")
            if res.qty <= 0:
                if not res.blocked_stale:
                    self._count(out, f"signals_skipped.{res.reason}")
                continue
            ts_intent = time.time_ns()
            intent = OrderIntent(
                client_order_id=coid,
                signal_id=sig.signal_id,
                strategy=cfg.name,
                symbol=sig.symbol,
                side=sig.side,
                qty=res.qty,
                order_type=OrdType.MARKET,
                tif=TimeInForce.DAY,
                ref_price=price,
                tick_seq=sig.tick_seq,
                ts_event=sig.ts_event,
                ts_ingest=sig.ts_ingest,
                ts_signal=sig.ts_signal,
                ts_intent=ts_intent,
                sizing=res.sizing,
            )
            out.publish(streams.INTENTS, intent)
            ctx.add_pending(intent)
            self._count(out, "intents")
            self.hist("signal_to_intent").record_ns(ts_intent - sig.ts_signal)


def build(argv: list[str]) -> StrategyEngineService:
    """Entry-point builder: settings from env/.env (``AITRADER_*``, ``AITRADER_SE_*``)."""
    return StrategyEngineService(load(CommonSettings), load(StrategySettings))
