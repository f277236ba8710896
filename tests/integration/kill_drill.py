"""The kill-switch drill against a running gateway: rest N orders, engage under a stream of new intents.

Used by ``tests/integration/test_kill_switch.py`` (RELIABILITY B1/B2) and
``benchmarks/kill_switch.py``. Everything goes through the real bus: a tick sets the mark,
limit buys priced inside the collar but below the market rest at the simulator, and
``aitrader kill engage`` (the CLI, as a process) halts while a prober keeps publishing intents.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from common import streams
from common.messages import (
    Control,
    ControlAck,
    ExecutionReport,
    OrderIntent,
    OrdType,
    Side,
    Tick,
    TickBatch,
    TickType,
    TimeInForce,
    decode_as,
    encode,
)

from .harness import Pipeline, open_risk_env

SYMBOL = "KSW"  # not in config/instruments.yml: lot 1, tick 0.01
MARK = "100.00"
REST_PX = "99.00"  # 100 bps below the mark: inside the 500 bps collar, never marketable at 100


def drill_env(home: Path) -> dict[str, str]:
    """Gateway settings for the drill: the shipped risk file with the throttles opened up.

    The drill rests hundreds of orders in a second and probes while it engages; the
    shipped order/message rate limits would refuse most of them (ORDER_RATE) and hide
    what the drill measures: the kill switch."""
    return open_risk_env(home, max_orders_per_sec=1_000_000, max_messages_per_sec=1_000_000, max_open_orders=100_000)


def publish_mark(r: redis.Redis, symbol: str = SYMBOL, price: str = MARK, seq: int = 1, timeout: float = 10) -> None:
    """Publish one trade tick and wait until the gateway holds its price as the symbol's mark."""
    now = time.time_ns()
    tick = Tick(symbol, TickType.TRADE, now, seq, price=float(price), size=1.0, ts_ingest=now)
    r.xadd(streams.ticks_stream(0), {b"d": encode(TickBatch([tick], ts_ingest=now))})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = r.hget(streams.MARKS, symbol)
        if got is not None and Decimal(got.decode()) == Decimal(price):
            return
        time.sleep(0.01)
    raise AssertionError(f"the gateway did not take a mark for {symbol} within {timeout}s")


def limit_intent(cid: str, symbol: str = SYMBOL, price: str = REST_PX, tick_seq: int = 1) -> OrderIntent:
    now = time.time_ns()
    return OrderIntent(
        client_order_id=cid, signal_id=f"sig-{cid}", strategy="drill", symbol=symbol, side=Side.BUY,
        qty=Decimal(1), order_type=OrdType.LIMIT, tif=TimeInForce.GTC, ref_price=Decimal(MARK),
        tick_seq=tick_seq, ts_event=now, ts_ingest=now, ts_signal=now, ts_intent=now, limit_price=Decimal(price),
    )


class Reports:
    """Execution reports read from ``ex:events`` as they come, by client order id."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.cursor = b"0-0"
        self.by_cid: dict[str, list[ExecutionReport]] = {}
        self.published_ms: dict[str, int] = {}  # Redis time (ms, from the entry id) of each id's last report

    def poll(self) -> None:
        while True:
            items = self.r.xrange(streams.EXEC_EVENTS, min=b"(" + self.cursor, count=5000)
            if not items:
                return
            for eid, fields in items:
                self.cursor = eid
                rep = decode_as(fields[b"d"], ExecutionReport)
                self.by_cid.setdefault(rep.client_order_id, []).append(rep)
                self.published_ms[rep.client_order_id] = int(eid.split(b"-")[0])

    def last(self, cid: str) -> ExecutionReport | None:
        reps = self.by_cid.get(cid)
        return reps[-1] if reps else None

    def wait(self, cids: list[str], done, timeout: float = 60) -> None:
        """Wait until ``done(last report)`` holds for every id in ``cids``."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            missing = [c for c in cids if not ((rep := self.last(c)) is not None and done(rep))]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(missing)} of {len(cids)} orders not done in {timeout}s "
                                     f"(e.g. {missing[0]}: {self.last(missing[0])})")
            time.sleep(0.02)


def publish_intents(r: redis.Redis, intents: list[OrderIntent]) -> None:
    pipe = r.pipeline(transaction=False)
    for it in intents:
        pipe.xadd(streams.INTENTS, {b"d": encode(it)})
    pipe.execute()


def rest_orders(r: redis.Redis, reports: Reports, n: int, prefix: str = "rest", tick_seq: int = 1) -> list[str]:
    """Publish ``n`` resting limit buys and wait until the gateway has accepted every one."""
    cids = [f"{prefix}-{i}" for i in range(n)]
    for i in range(0, n, 100):
        publish_intents(r, [limit_intent(c, tick_seq=tick_seq) for c in cids[i : i + 100]])
    reports.wait(cids, lambda rep: rep.status != "PENDING_NEW")
    bad = [(c, reports.last(c).status, reports.last(c).reason) for c in cids if reports.last(c).status != "ACCEPTED"]
    assert not bad, bad[:5]
    return cids


@dataclass
class Probe:
    """Intents published one every ``every_s`` while the switch is engaged; (cid, wall ns) each."""

    r: redis.Redis
    prefix: str = "probe"
    every_s: float = 0.002
    tick_seq: int = 1
    sent: list[tuple[str, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            cid = f"{self.prefix}-{i}"
            t = time.time_ns()
            self.r.xadd(streams.INTENTS, {b"d": encode(limit_intent(cid, tick_seq=self.tick_seq))})
            self.sent.append((cid, t))
            i += 1
            time.sleep(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _newest(r: redis.Redis, stream: str, typ: type, count: int, match: Callable[[Any], bool], what: str) -> Any:
    """The newest of the last ``count`` messages on ``stream`` that ``match``."""
    for _eid, fields in r.xrevrange(stream, count=count):
        msg = decode_as(fields[b"d"], typ)
        if match(msg):
            return msg
    raise AssertionError(what)


def last_control(r: redis.Redis, command: str) -> Control:
    return _newest(r, streams.CONTROL, Control, 100, lambda c: c.command == command,
                   f"no {command} on {streams.CONTROL}")


def ack_for(r: redis.Redis, request_id: str) -> ControlAck:
    return _newest(r, streams.CONTROL_ACKS, ControlAck, 1000, lambda a: a.request_id == request_id,
                   f"no ack for {request_id}")


@dataclass
class EngageResult:
    """What one engage under probing measured (ns are wall-clock, same machine)."""

    t_command: int  # the CLI stamped its Control just before XADD
    t_halted: int  # the gateway applied it (its ControlAck.ts)
    t_first_blocked: int  # ts_exec of the first probe rejected with KILL_SWITCH
    t_cancel_reported: int  # latest ts_exec among the CANCELLED reports of the rested orders (in memory)
    t_cancel_published: int  # the last of them on ex:events (after their rows were committed), ms resolution
    t_cli_returned: int  # the CLI process had its answer and exited
    cli_stdout: str
    probes: list[tuple[str, int]]
    reports: Reports

    def ms(self, t: int) -> float:
        return (t - self.t_command) / 1e6


def engage_under_probe(p: Pipeline, r: redis.Redis, reports: Reports, rested: list[str], reason: str,
                       probe_after_s: float = 0.3, probe: Probe | None = None) -> EngageResult:
    """Engage through ``aitrader kill engage`` while new intents keep arriving; wait for every report."""
    probe = probe if probe is not None else Probe(r)
    probe.start()
    try:
        time.sleep(0.05)  # a few probes before the command: accepted, then cancelled by it
        out = p.run("-m", "backend.cli", "kill", "engage", "--reason", reason, "--json")
        t_cli = time.time_ns()
        time.sleep(probe_after_s)
    finally:
        probe.stop()
    ctl = last_control(r, "kill.engage")
    ack = ack_for(r, ctl.request_id)
    probe_ids = [c for c, _t in probe.sent]
    reports.wait(rested, lambda rep: rep.status == "CANCELLED", timeout=30)
    reports.wait(probe_ids, lambda rep: rep.status in ("CANCELLED", "REJECTED"), timeout=30)
    blocked = [reports.last(c).ts_exec for c in probe_ids if reports.last(c).reason == "KILL_SWITCH"
               and reports.last(c).status == "REJECTED"]
    return EngageResult(
        t_command=ctl.ts, t_halted=ack.ts, t_first_blocked=min(blocked) if blocked else 0,
        t_cancel_reported=max(reports.last(c).ts_exec for c in rested),
        t_cancel_published=max(reports.published_ms[c] for c in rested) * 1_000_000, t_cli_returned=t_cli,
        cli_stdout=out.stdout, probes=probe.sent, reports=reports,
    )
