"""The in-process backtest: the live services' own message handling over historical ticks.

No Redis and no database: the pattern engine, the strategy engine and the execution gateway
are the live classes (``PatternEngineService``, ``StrategyEngineService``, ``ExecutionGateway``'s
``OrderManager`` with its simulated venue), built from the same settings, each handed what
the others emit (``Outputs.messages``) through an in-memory bus, with a simulated clock
(``SimClock``, market time) in place of every clock their decisions read.

The schedule is the live pipeline's under ``aitrader replay --lockstep``: ticks go out in
entries of ``AITRADER_REPLAY_BATCH_MAX`` (one per shard), and each entry's consequences run
to completion before the next: the gateway handles the entry first (marks, fills of resting
orders — its lazy market-data read puts ticks published before an intent ahead of it), then
the pattern engine; the strategy engine gets the gateway's reports, then the signals; its
intents and commands go to the gateway, whose reports and acknowledgements come back, until
nothing is left in flight. The simulated clock reads the last tick's ``ts_event`` of the
entry being handled (every stamp of that step: ``ts_ingest``, ``ts_signal``, ``ts_intent``,
``ts_exec``).

The broker account: instead of the MCP server, the mock broker's own ``Account``
(``mock_mcp.service.build_account``: the same seed and settings) is fed every execution
report, as ``mock_mcp`` is fed ``ex:events``, and the strategy engine's ``refresh()`` reads
it in process (``InProcessBroker``: the same Kite-shaped views the MCP tools return,
valued at the gateway's marks). Refreshes follow the live timers in market time: at start,
every ``AITRADER_SE_REFRESH_S``, and ``FILL_REFRESH_DELAY_S`` after a step with fills (at most
every ``MIN_REFRESH_INTERVAL_S``); due timers run between steps. The portfolio guard's loss
limits are evaluated after every step with fills or a refresh and every ``check_interval_s``;
its commands go to the gateway as ``ctl:commands`` and their acknowledgements back.

Not simulated: the persisted strategy switches (the strategies file's ``enabled`` is used),
redelivery and crash paths, order-book files, and model hot swap (a model detector runs the
version it loaded at start). A model detector's inference timeout and circuit breaker still
read the machine's clock: a backtest on a machine too slow for the timeout differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from backend.backtest.clock import SimClock
from backend.backtest.config import Settings, load_settings
from common import streams
from common.bus import Entry, Outputs
from common.config import ConfigError
from common.messages import (
    BookUpdate,
    Control,
    ControlAck,
    ExecutionReport,
    OrderIntent,
    Signal,
    Tick,
    TickBatch,
    decode_as,
    encode,
)
from execution.service import ExecutionGateway
from execution.venues.simulator import SimulatedVenue
from mock_mcp.account import Account
from mock_mcp.service import build_account
from pattern_engine.service import PatternEngineService
from strategy_engine.account import AccountSnapshot
from strategy_engine.service import StrategyEngineService

__all__ = ["BacktestResult", "InProcessBroker", "Progress", "run_backtest", "tick_source"]

Progress = Callable[[int, int | None], None]  # (ticks done, total ticks or None when unknown)

_TYPES: dict[str, type] = {
    streams.SIGNALS: Signal, streams.INTENTS: OrderIntent, streams.EXEC_EVENTS: ExecutionReport,
    streams.CONTROL: Control, streams.CONTROL_ACKS: ControlAck,
}


class InProcessBroker:
    """The strategy engine's broker client, answered by the mock broker's account in process.

    ``snapshot()`` builds the ``AccountSnapshot`` from the same views the MCP tools
    ``get_margins`` / ``get_positions`` / ``get_holdings`` serve, valued at ``marks()``."""

    def __init__(self, account: Account, marks: Callable[[], Mapping[str, Decimal]]) -> None:
        self.account = account
        self.marks = marks

    async def snapshot(self) -> AccountSnapshot:
        m = self.marks()
        a = self.account
        return AccountSnapshot.from_kite(a.margins(m), a.positions_view(m), a.holdings_view(m))


@dataclass
class BacktestResult:
    """What a backtest did: every intent and execution report, the equity curve, the counters."""

    ticks: int = 0
    steps: int = 0
    signals: int = 0
    intents: list[OrderIntent] = field(default_factory=list)
    reports: list[ExecutionReport] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)  # kill commands (portfolio limits, triggers)
    equity: list[tuple[int, float, float, float]] = field(default_factory=list)  # (ts, equity, cash, gross)
    initial_cash: float = 0.0
    first_ts: int = 0
    last_ts: int = 0
    duration_s: float = 0.0  # the run, after the start-up (kernel warm-up)
    warmup_s: float = 0.0
    step_cost: list[tuple[int, int]] = field(default_factory=list)  # (ticks, ns) of each entry's handling
    counters: dict[str, int] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)

    @property
    def fills(self) -> list[ExecutionReport]:
        return [r for r in self.reports if r.last_qty > 0]

    def orders(self) -> dict[str, ExecutionReport]:
        """Each order's last report, in the order the orders were first reported."""
        out: dict[str, ExecutionReport] = {}
        for r in self.reports:
            out[r.client_order_id] = r
        return out


def tick_source(files: list[str] | None = None, synthetic: int = 0, symbols: int = 4, seed: int = 7,
                fmt: str | None = None, max_ticks: int | None = None) -> tuple[Iterable[Tick], int | None]:
    """(ticks, total or None): files merged in time order, else the seeded synthetic market."""
    from tick_replay.source import open_ticks
    from tick_replay.synthetic import synthetic_ticks

    if files:
        src: Iterable[Tick] = open_ticks(files, fmt)
        total = max_ticks
    else:
        src, total = synthetic_ticks(synthetic, symbols, seed), synthetic
        if max_ticks is not None:
            total = min(total, max_ticks)
    if max_ticks is not None:
        src = _first(src, max_ticks)
    return src, total


def _first(ticks: Iterable[Tick], n: int) -> Iterator[Tick]:
    for i, t in enumerate(ticks):
        if i >= n:
            return
        yield t


class _Backtest:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.clock = clock = SimClock()
        common = s.common
        self.gateway = ExecutionGateway(common, s.execution, clock=clock.ns, monotonic_ns=clock.monotonic_ns)
        if not isinstance(self.gateway.venue, SimulatedVenue):
            raise ConfigError(f"a backtest needs the simulator venue (AITRADER_EX_VENUE=simulator), not "
                              f"{s.execution.venue!r}")
        self.oms = self.gateway.oms
        self.account = build_account(common, s.mcp, instruments=self.gateway.instruments, clock=clock.ns)
        self.broker = InProcessBroker(self.account, self._marks)
        self.pattern = PatternEngineService(common, s.pattern, clock=clock.ns)
        self.strategy = StrategyEngineService(common, s.strategy, broker=self.broker,  # type: ignore[arg-type]
                                              wall_ns=clock.ns, monotonic=clock.monotonic)
        self.result = BacktestResult(initial_cash=float(common.initial_cash))
        self._ids = 0
        self._se: list[Entry] = []
        self._gw: list[Entry] = []
        self._fills_in_step = False
        se = s.strategy
        self._refresh_every = int(se.refresh_s * 1e9)
        self._fill_delay = int(se.fill_refresh_delay_s * 1e9)
        self._min_refresh = int(se.min_refresh_interval_s * 1e9)
        self._next_refresh = 0
        self._fill_refresh: int | None = None
        self._last_refresh = 0
        self._check_every = int(self.strategy.portfolio.cfg.check_interval_s * 1e9)
        self._next_check = 0
        self._sample = int(s.backtest.sample_s * 1e9)
        self._next_sample = 0

    def _marks(self) -> dict[str, Decimal]:
        return {sym: Decimal(repr(px)) for sym, px in self.oms.marks.items() if px > 0}

    def _entry(self, stream: str, msg: Any) -> Entry:
        self._ids += 1
        return Entry(stream, f"{self._ids}-0".encode(), msg, b"")

    # -- the stages ------------------------------------------------------------------------
    def _route(self, messages: list[tuple[str, bytes]]) -> None:
        res = self.result
        for stream, data in messages:
            typ = _TYPES.get(stream)
            if typ is None:
                continue  # sys:alerts: for operators
            msg = decode_as(data, typ)
            if stream == streams.SIGNALS:
                res.signals += 1
                self._se.append(self._entry(stream, msg))
            elif stream == streams.INTENTS:
                res.intents.append(msg)
                self._gw.append(self._entry(stream, msg))
            elif stream == streams.EXEC_EVENTS:
                res.reports.append(msg)
                self.account.apply_report(msg)  # as mock_mcp applies ex:events
                if msg.last_qty > 0:
                    self._fills_in_step = True
                self._se.append(self._entry(stream, msg))
            elif stream == streams.CONTROL:
                if msg.command.startswith("kill."):
                    res.controls.append(msg)
                self.strategy.portfolio.on_command(msg)
                self._gw.append(self._entry(stream, msg))
                self._se.append(self._entry(stream, msg))
            else:
                self.strategy.portfolio.on_ack(msg)

    def _gateway(self, entries: list[Entry]) -> None:
        """One gateway batch: ``ExecutionGateway._run`` and ``handle`` without the database writes."""
        oms = self.oms
        before = oms.cancels_to_record
        plan = oms.stage(entries, {})
        oms.tx1_done(plan)
        oms.route(plan)
        msgs: list[tuple[str, bytes]] = []
        for e in entries:
            r = plan.results.get((e.stream, e.id))
            if r is None:
                continue
            if r.dead is not None:
                self.result.dead_letters.append(f"{e.stream}: {r.dead}")
            msgs.extend(r.messages)
            for name, n in r.counters.items():
                self.gateway.count(name, n)
        if oms.cancels_to_record and oms.cancels_to_record == before:  # as after_commit
            msgs.extend(self._gateway_aside(oms.flush_cancels()))
        msgs.extend(self._gateway_aside(oms.check_triggers()))
        self._route(msgs)

    def _gateway_aside(self, out: Any) -> list[tuple[str, bytes]]:
        if out is None:
            return []
        _ch, res = out
        for name, n in res.counters.items():
            self.gateway.count(name, n)
        return res.messages

    async def _pattern(self, entries: list[Entry]) -> None:
        pe = self.pattern
        await pe.before_batch(entries)
        out = Outputs()
        for e in entries:
            await pe.handle(e, out)
        for d in out.dead:
            self.result.dead_letters.append(f"{d.stream}: {d.reason}")
        self._route(out.messages)

    async def _strategy(self, entries: list[Entry]) -> None:
        out = Outputs()
        se = self.strategy
        for e in entries:
            await se.handle(e, out)
        for name, n in out.counters.items():
            self.result.counters[name] = self.result.counters.get(name, 0) + n
        self._route(out.messages)

    async def _settle(self) -> None:
        """Hand messages on until nothing is in flight (the lockstep replay's drain)."""
        while self._se or self._gw:
            if self._se:
                batch, self._se = self._se, []
                await self._strategy(batch)
            if self._gw:
                batch, self._gw = self._gw, []
                self._gateway(batch)

    # -- timers ----------------------------------------------------------------------------
    async def _timers(self, now: int) -> None:
        due_fill = self._fill_refresh is not None and now >= self._fill_refresh
        refreshed = False
        if now >= self._next_refresh or due_fill:
            await self.strategy.refresh()
            self._last_refresh = now
            self._next_refresh = now + self._refresh_every
            self._fill_refresh = None
            refreshed = True
        if refreshed or self._fills_in_step or now >= self._next_check:
            self._fills_in_step = False
            self._next_check = now + self._check_every
            pf = self.strategy.portfolio
            pf.evaluate()
            commands, pf.outbox = pf.outbox, []
            self._route([(streams.CONTROL, encode(c)) for c in commands])
            await self._settle()

    def _after_step(self, now: int) -> None:
        if self._fills_in_step and self._fill_refresh is None:
            self._fill_refresh = max(now + self._fill_delay, self._last_refresh + self._min_refresh)

    def _sample_until(self, now: int) -> None:
        """Record the equity at every grid point up to ``now`` (before the step at ``now`` changes it):
        nothing moves between steps, so that is the value at the end of each interval."""
        while self._next_sample <= now:
            self._record(self._next_sample)
            self._next_sample += self._sample

    def _record(self, now: int) -> None:
        pf = self.oms.portfolio
        marks = self.oms.marks
        cash = float(pf.cash)
        value = gross = 0.0
        for sym, q in pf.positions.items():
            if q:
                px = marks.get(sym, 0.0)
                v = float(q) * px
                value += v
                gross += abs(v)
        self.result.equity.append((now, cash + value, cash, gross))

    # -- the run ---------------------------------------------------------------------------
    async def run(self, ticks: Iterable[Tick | BookUpdate], total: int | None, progress: Progress | None) -> None:
        from common.streams import shard_for, ticks_stream

        res = self.result
        t0 = time.perf_counter()
        self.pattern.engine.warm_up()  # numba's compile / cache load, not counted in duration_s
        res.warmup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        clock_ns = time.perf_counter_ns
        shards = self.s.common.shards
        batch_max = self.s.replay.batch_max
        shard_of: dict[str, int] = {}
        pending: list[list[Tick]] = [[] for _ in range(shards)]
        n = since = 0
        started = False

        async def step() -> None:
            nonlocal started
            s0 = clock_ns()
            k = sum(map(len, pending))
            last = max(t.ts_event for p in pending if p for t in (p[-1],))
            now = self.clock.advance(last)
            if not started:
                started = True
                res.first_ts = min(p[0].ts_event for p in pending if p)
                self.clock.now = res.first_ts  # the start-up refresh happens before the first tick
                self._record(res.first_ts)
                await self.strategy.refresh()
                self._last_refresh = res.first_ts
                self._next_refresh = res.first_ts + self._refresh_every
                self._next_check = res.first_ts + self._check_every
                self._next_sample = (res.first_ts // self._sample + 1) * self._sample
                now = self.clock.advance(last)
            self._sample_until(now)
            await self._timers(now)
            entries = [self._entry(ticks_stream(i), TickBatch(p, now)) for i, p in enumerate(pending) if p]
            for i in range(shards):
                pending[i] = []
            self._gateway(entries)
            await self._pattern(entries)
            await self._settle()
            self._after_step(now)
            res.steps += 1
            res.last_ts = now
            res.step_cost.append((k, clock_ns() - s0))

        for t in ticks:
            if type(t) is not Tick:
                raise ConfigError("a backtest reads ticks only, not order-book files")
            s = shard_of.get(t.symbol)
            if s is None:
                s = shard_of[t.symbol] = shard_for(t.symbol, shards)
            pending[s].append(t)
            n += 1
            since += 1
            if since >= batch_max:
                await step()
                since = 0
                if progress is not None and res.steps % 64 == 0:
                    progress(n, total)
        if since:
            await step()
        res.ticks = n
        if started:
            self._sample_until(res.last_ts)
            if res.equity[-1][0] != res.last_ts:
                self._record(res.last_ts)  # the end: a last, shorter interval
        if progress is not None:
            progress(n, total)
        res.counters.update({f"execution.{k}": v for k, v in self.gateway.counters.items()})
        res.duration_s = time.perf_counter() - t0


def run_backtest(
    files: list[str] | None = None,
    *,
    synthetic: int = 0,
    symbols: int = 4,
    seed: int = 7,
    fmt: str | None = None,
    max_ticks: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> BacktestResult:
    """Run the pipeline's engines over ``files`` (else ``synthetic`` seeded ticks) in process.

    ``overrides``: setting name -> value over the environment (``backend.backtest.config``).
    ``progress(ticks_done, total)`` is called every 64 entries and at the end (total None when
    reading files without ``max_ticks``: their length is not known before reading them)."""
    s = load_settings(overrides)
    ticks, total = tick_source(files, synthetic, symbols, seed, fmt, max_ticks)
    bt = _Backtest(s)
    try:
        asyncio.run(bt.run(ticks, total, progress))
    finally:
        bt.pattern.engine.close()
    return bt.result
