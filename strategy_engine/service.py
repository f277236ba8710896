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
``refreshes``, ``refresh_failures``; the portfolio limits (``strategy_engine/portfolio.py``)
add ``intents_blocked.<limit>`` (an intent not published) and ``portfolio_breaches.<limit>``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from decimal import Decimal

from redis.exceptions import ResponseError

from common import streams
from common.bus import Entry, Outputs
from common.config import CommonSettings, load
from common.instruments import Instruments
from common.messages import (
    Control,
    ControlAck,
    ExecutionReport,
    OrderIntent,
    OrdType,
    Signal,
    TimeInForce,
    client_order_id_for,
)
from common.service import Service
from strategy_engine.account import AccountContext
from strategy_engine.books import BOOKS_KEY, StrategyBooks
from strategy_engine.brackets import BRACKETS_KEY, Actions, BracketBook
from strategy_engine.config import StrategySettings
from strategy_engine.fusion import FusionBook
from strategy_engine.mcp_client import BrokerClientError, McpBrokerClient, client_from_settings
from strategy_engine.portfolio import PortfolioGuard, load_portfolio
from strategy_engine.refresher import ProcessRefresher
from strategy_engine.sizing import flatten_size, size_intent
from strategy_engine.state import STRATEGY_COMMANDS, load_switches
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
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(common)
        # Every time the engine's decisions read: a backtest passes its simulated clock (backend/backtest).
        self.wall_ns = wall_ns
        self.settings = s = settings or load(StrategySettings)
        self.serve_metrics_from(self.settings)
        self.router = StrategyRouter(
            strategies if strategies is not None else load_strategies(s.strategies_path)
        )
        self._strategies = {c.name: c.build() for c in self.router.all.values()}
        self._fusion = {c.name: FusionBook(c.fusion, c.sources) for c in self.router.all.values()}
        self.instruments = instruments or Instruments.load(s.instruments_path)
        self.brackets = BracketBook(self.instruments, clock_ns=wall_ns)
        self.switches_note = ""  # why the persisted strategy switches could not be read, if so
        # Built in both modes: building it checks the login settings (and the token key) now, at start.
        self.broker = broker or client_from_settings(s, common, "aitrader-strategy-engine")
        # refresh_isolation "process": the refresh's MCP work runs in a worker process (strategy_engine/refresher.py)
        self._refresher_proc = ProcessRefresher(s, common) if broker is None and s.refresh_isolation == "process" \
            else None
        self.context = AccountContext(s.stale_after_s, s.pending_ttl_s, settle_s=s.fill_settle_s, clock=monotonic,
                                      wall_ns=wall_ns)
        self._refresh_soon = asyncio.Event()
        self._fee_buffer_bps = s.fee_buffer_bps
        self.books = StrategyBooks()  # each strategy's own positions and P&L: what it sizes against
        self.portfolio = PortfolioGuard(load_portfolio(s.portfolio_path), self.context,
                                        {c.name: c.allocation for c in self.router.strategies}, self.books,
                                        wall_ns=wall_ns)

    # -- set-up ----------------------------------------------------------------------------
    def input_types(self) -> dict[str, type]:
        return {streams.SIGNALS: Signal, streams.EXEC_EVENTS: ExecutionReport, streams.CONTROL: Control}

    async def setup(self) -> None:
        assert self.redis is not None
        # Work on other threads of this process (the account refresh with refresh_isolation "thread", the
        # switches' database read) holds the GIL in slices; with CPython's default 5 ms switch interval the
        # event loop waits up to 5 ms each time. 0.5 ms bounds that wait (measured: docs/benchmarks.md).
        sys.setswitchinterval(self.settings.gil_switch_interval_s)
        # ex:events is a delta feed on top of the broker's snapshot, whose history the snapshot already
        # holds: a new group starts at the end of the stream ("$"), not at 0 as the Consumer would.
        # So is ctl:commands: the strategies' switches come from the database (state.py), not the history.
        for stream in (streams.EXEC_EVENTS, streams.CONTROL):
            try:
                await self.redis.xgroup_create(stream, self.name, id="$", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
        await self._load_switches()
        # The strategies' books and the portfolio's state, before the first message is consumed.
        self.books.restore(await self.redis.hgetall(BOOKS_KEY))
        self.brackets.restore(await self.redis.hgetall(BRACKETS_KEY))
        await self.portfolio.load(self.redis)
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per MCP request otherwise
        # Best effort: a broker that is down leaves the context stale, not the engine dead.
        await self.refresh()

    async def _load_switches(self) -> None:
        """Apply the persisted strategy switches over the file (database; else Redis's last known) and publish them."""
        assert self.redis is not None
        try:
            switches = await asyncio.to_thread(load_switches, self.common.db_url)
            self.switches_note = ""
        except Exception as e:  # noqa: BLE001 - any database failure: fall back, say so, keep running
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raw = await self.redis.hgetall(streams.STRATEGY_STATE)
            switches = {k.decode(): v == b"1" for k, v in raw.items()}
            self.switches_note = f"strategy switches not read from the database ({first}); using Redis's last known"
            log.warning("%s: %s", self.name, self.switches_note)
        # Offs first, so that an on that fits once another is off is not refused.
        for name, on in sorted(switches.items(), key=lambda kv: kv[1]):
            if name in self.router.all and self.router.enabled[name] != on:
                if on and (problem := self.router.enable_problem(name)):
                    log.warning("%s: persisted switch on %s not applied: %s", self.name, name, problem)
                    continue
                self.router.set_enabled(name, on)
                log.info("%s: strategy %s %s by a persisted switch", self.name, name, "enabled" if on else "disabled")
        state = {n: "1" if on else "0" for n, on in self.router.enabled.items()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(streams.STRATEGY_STATE)
        if state:
            pipe.hset(streams.STRATEGY_STATE, mapping=state)
        await pipe.execute()

    async def extra_tasks(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._refresher(), name=f"{self.name}.refresh"),
                asyncio.create_task(self.portfolio.run(self), name=f"{self.name}.portfolio")]

    # -- account context -------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Fetch a snapshot over MCP and apply it; False (context unchanged, error kept) on failure."""
        requested = self.wall_ns()
        try:
            # The MCP round trips (session set-up, JSON, validation) cost tens of ms of CPU: in a worker
            # process (default) they never hold this process's GIL; on a thread (refresh_isolation
            # "thread") they run on their own event loop and hold it in slices.
            if self._refresher_proc is not None:
                snap = await self._refresher_proc.snapshot()
            else:
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
        self.portfolio.poke()
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
            await self.nap(s.min_refresh_interval_s)

    def _update_status(self) -> None:
        # self.detail is the base loop's (Redis unavailable); the stale context is ours.
        self.status = "degraded" if self.context.is_stale() or self.detail else "ok"

    async def heartbeat_once(self, status: str | None = None) -> None:
        if status is None:
            self._update_status()  # staleness comes with time passing, not only with refresh attempts
        await super().heartbeat_once(status)

    async def teardown(self) -> None:
        if self._refresher_proc is not None:
            self._refresher_proc.close()

    def heartbeat_detail(self) -> str:
        ctx = f"{self.context.describe()}; {self.portfolio.describe()}; {self.books.describe(self.context.positions)}"
        if self.switches_note:
            ctx = f"{ctx}; {self.switches_note}"
        if self.brackets.unreadable:
            ctx = f"{ctx}; unreadable stored brackets (orders not managed): {', '.join(self.brackets.unreadable[:5])}"
        return f"{self.detail}; {ctx}" if self.detail else ctx

    # -- messages --------------------------------------------------------------------------
    def _count(self, out: Outputs, name: str) -> None:
        out.incr(name)
        self.count(name)

    async def handle(self, entry: Entry, out: Outputs) -> None:
        msg = entry.msg
        if isinstance(msg, Signal):
            self._on_signal(msg, out)
        elif isinstance(msg, ExecutionReport):
            self._on_report(msg, out)
        else:
            self._on_control(msg, out)
        if self.brackets.dirty:
            self._persist_brackets(out)

    def _persist_brackets(self, out: Outputs) -> None:
        """Store the brackets this message changed, in the transaction that acks it (brackets.py)."""
        for coid, state in self.brackets.drain():
            if state is None:
                out.redis_op(lambda pipe, c=coid: pipe.hdel(BRACKETS_KEY, c))
            else:
                out.redis_op(lambda pipe, c=coid, v=state: pipe.hset(BRACKETS_KEY, c, v))

    def _on_report(self, rep: ExecutionReport, out: Outputs) -> None:
        if self.context.apply_report(rep):
            self._count(out, "fills")
        booked = self.books.apply_report(rep)
        if booked is not None:
            # Durable with the report's ack: a crash redelivers it to a book that has not seen it.
            state = self.books.dump_one(booked)
            out.redis_op(lambda pipe, n=booked, v=state: pipe.hset(BOOKS_KEY, n, v))
            self.portfolio.on_fill(booked)
        if rep.last_qty > 0:
            self._refresh_soon.set()
        acts = self.brackets.on_report(rep)
        if acts is not None:
            self._send(acts, out)

    def _send(self, acts: Actions, out: Outputs) -> None:
        """Publish what the bracket book asks for: protective intents and cancels (on ``ctl:commands``)."""
        for it in acts.intents:
            out.publish(streams.INTENTS, it)
        for ctl in acts.cancels:
            out.publish(streams.CONTROL, ctl)
        for name, n in acts.counters.items():
            out.incr(name, n)
            self.count(name, n)

    # -- control ---------------------------------------------------------------------------
    def _on_control(self, ctl: Control, out: Outputs) -> None:
        """``strategy.enable`` / ``strategy.disable`` (scope ``strategy:<name>``): switch it now, ack on ctl:acks."""
        if ctl.command not in STRATEGY_COMMANDS:
            return  # another service's command
        name = ctl.scope.removeprefix("strategy:") if ctl.scope.startswith("strategy:") else ctl.args.get("name", "")
        on = ctl.command == "strategy.enable"
        problem = self.router.enable_problem(name) if on or name not in self.router.all else ""
        ok = not problem and self.router.set_enabled(name, on)
        if ok:
            detail = f"strategy {name} {'enabled' if on else 'disabled'}"
            log.warning("%s by %s: %s", detail, ctl.actor or "unknown", ctl.reason)
            state = "ENABLED" if on else "DISABLED"
            out.redis_op(lambda pipe, n=name, v=on: pipe.hset(streams.STRATEGY_STATE, n, "1" if v else "0"))
        else:
            detail, state = problem, ""
        self._count(out, f"control.{ctl.command}" + ("" if ok else ".refused"))
        out.publish(streams.CONTROL_ACKS, ControlAck(request_id=ctl.request_id, service=self.name, ok=ok,
                                                     state=state, detail=detail, ts=self.wall_ns()))

    # -- signals ---------------------------------------------------------------------------
    def _on_signal(self, sig: Signal, out: Outputs) -> None:
        self._count(out, "signals")
        ctx = self.context
        price = Decimal(str(sig.price))
        acts = self.brackets.on_mark(sig.symbol, price, sig.tick_seq, sig.ts_event, sig.ts_ingest, sig.ts_signal)
        if acts is not None:
            self._send(acts, out)
        strategies = self.router.route(sig.detector, sig.symbol, sig.model_id)
        if not strategies:
            self._count(out, "signals_skipped.no_strategy")
            return
        ctx.mark(sig.symbol, price)
        self.portfolio.observe(sig.symbol, sig.price, sig.ts_event)
        can_open = not ctx.is_stale()
        inst = self.instruments.get(sig.symbol)
        for cfg in strategies:
            name = cfg.name
            coid = client_order_id_for(sig.signal_id, name)
            again = ctx.recent_intent(coid)
            if again is not None:
                # A re-delivered signal: the same intent again (the gateway drops the duplicate id).
                out.publish(streams.INTENTS, again)
                self._count(out, "intents_replayed")
                continue
            out.incr(f"strategy.{name}.signals")
            fused = self._fusion[name].vote(StrategyRouter.source_of(cfg, sig.detector, sig.model_id), sig)
            if not fused.act:
                self._count(out, f"fusion.{name}.{fused.reason}")
                continue
            fsig = fused.signal
            assert fsig is not None
            # The strategy's own position (its fills and its intents in flight), not the account's net.
            current = self.books.position(name, sig.symbol) + ctx.strategy_pending(name, sig.symbol)
            dec = self._strategies[name].decide(fsig, current)
            if dec.action == "skip":
                self._count(out, f"signals_skipped.{dec.reason}")
                out.incr(f"strategy.{name}.skipped.{dec.reason}")
                continue
            if dec.action == "flatten":
                qty = flatten_size(dec.side, current, inst)
                sizing = {"flatten": 1.0, "current_position": float(current), "price": float(price),
                          "target_position": 0.0, f"exit_{dec.reason}": 1.0, "p": fsig.strength}
                res = None
                if qty <= 0:
                    self._count(out, "signals_skipped.flat")
                    continue
            else:
                res = size_intent(
                    side=dec.side,
                    price=price,
                    volatility=sig.volatility,
                    equity=ctx.equity,
                    cash=ctx.available_cash(),
                    current=current,
                    cfg=cfg,
                    instrument=inst,
                    fee_buffer_bps=self._fee_buffer_bps,
                    can_open=can_open,
                    p_win=dec.p_win,
                )
                if res.blocked_stale:
                    self._count(out, "intents_blocked_stale_context")
                if res.qty <= 0:
                    if not res.blocked_stale:
                        self._count(out, f"signals_skipped.{res.reason}")
                        out.incr(f"strategy.{name}.skipped.{res.reason}")
                    continue
                qty, sizing = res.qty, res.sizing
            ts_intent = self.wall_ns()
            intent = OrderIntent(
                client_order_id=coid,
                signal_id=sig.signal_id,
                strategy=name,
                symbol=sig.symbol,
                side=dec.side,
                qty=qty,
                order_type=OrdType.MARKET,
                tif=TimeInForce.DAY,
                ref_price=price,
                tick_seq=sig.tick_seq,
                ts_event=sig.ts_event,
                ts_ingest=sig.ts_ingest,
                ts_signal=sig.ts_signal,
                ts_intent=ts_intent,
                sizing=sizing | fused.numbers if fused.numbers else sizing,
            )
            blocked = self.portfolio.check(intent)
            if blocked is not None:
                self._count(out, f"intents_blocked.{blocked}")
                continue
            out.publish(streams.INTENTS, intent)
            ctx.add_pending(intent)
            self._count(out, "intents")
            out.incr(f"strategy.{name}.intents")
            self.hist("signal_to_intent").record_ns(ts_intent - sig.ts_signal)
            closing = self.brackets.on_exit_intent(intent)
            if closing.cancels or closing.counters:
                self._send(closing, out)
            if res is not None and cfg.stops.any:
                self.brackets.on_entry(intent, cfg.stops, res.opening_qty,
                                       Decimal(repr(res.sizing["stop_distance"])))


def build(argv: list[str]) -> StrategyEngineService:
    """Entry-point builder: settings from env/.env (``AITRADER_*``, ``AITRADER_SE_*``)."""
    return StrategyEngineService(load(CommonSettings), load(StrategySettings))
