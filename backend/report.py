"""The run report: what the pipeline did, from its authoritative sources.

Counts of ticks, signals and intents come from the stages' exactly-once counters
(incremented in the same MULTI/EXEC as their acks); orders, fills, rejects, positions
and cash come from the database (the authority), except the rejects that never get an
order row (a duplicate client order id), which come from the gateway's ``rejects.<CODE>``
counters; marks from the gateway's ``ex:marks``;
latency from the HDR histograms every service saves to Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa

from common import streams
from common.accounting import apply_fill
from common.bus import connect, group_backlog, wait_drained
from common.config import CommonSettings
from common.latency import merged_stages, summarize

__all__ = ["Position", "build_report", "format_report", "positions_from_fills", "rejects_by_reason", "wait_idle"]

# Reject codes the gateway answers without an order row (the id already has one): counted only.
ROWLESS_REJECTS = ("DUPLICATE_CLORDID", "DUPLICATE_CLORDID_MISMATCH")


@dataclass
class Position:
    qty: Decimal = Decimal(0)
    avg_px: Decimal = Decimal(0)
    realized: Decimal = Decimal(0)


def positions_from_fills(fills: list[tuple[str, int, Decimal, Decimal]]) -> dict[str, Position]:
    """Net position, average cost and realised P&L per symbol from (symbol, side, qty, price) in order."""
    pos: dict[str, Position] = defaultdict(Position)
    for symbol, side, qty, px in fills:
        p = pos[symbol]
        p.qty, p.avg_px, realised = apply_fill(p.qty, p.avg_px, side, qty, px)
        p.realized += realised
    return dict(pos)


def rejects_by_reason(db_rejects: dict[str, int], counters: dict[str, int]) -> dict[str, int]:
    """Rejects by reason code: the database's rejected orders plus the row-less codes' counters."""
    out = dict(db_rejects)
    for code in ROWLESS_REJECTS:
        n = counters.get(f"rejects.{code}", 0)
        if n:
            out[code] = out.get(code, 0) + n
    return out


async def wait_idle(r: aioredis.Redis, timeout_s: float, settle_s: float = 1.5) -> bool:
    """Wait until every consumer group has drained, and is still drained ``settle_s`` later."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not await wait_drained(r, None, left, poll_s=0.2):
            return False
        await asyncio.sleep(settle_s)
        if await wait_drained(r, None, 0):
            return True


def _int(v: Any) -> int:
    return int(v) if v is not None else 0


async def _latency(r: aioredis.Redis) -> dict[str, dict[str, int]]:
    return {stage: summarize(merged) for stage, (merged, _, _) in (await merged_stages(r)).items()}


def _db_figures(db_url: str) -> dict[str, Any]:
    from common.db import make_engine

    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            orders = c.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one()
            by_status = dict(c.execute(sa.text("SELECT status, COUNT(*) FROM orders GROUP BY status")).all())
            rejects = dict(
                c.execute(
                    sa.text(
                        "SELECT reject_reason, COUNT(*) FROM orders WHERE status = 'REJECTED' GROUP BY reject_reason"
                    )
                ).all()
            )
            rows = c.execute(sa.text("SELECT symbol, side, qty, price, fee FROM fills ORDER BY ts_exec, id")).all()
            state = c.execute(sa.text("SELECT state, reason FROM trading_state WHERE scope = 'global'")).first()
            scopes = dict(c.execute(sa.text(
                "SELECT scope, state FROM trading_state WHERE scope <> 'global' AND state <> 'ACTIVE' ORDER BY scope"
            )).all())
    finally:
        eng.dispose()
    fills = [(s, int(side), Decimal(str(q)), Decimal(str(p))) for s, side, q, p, _f in rows]
    fees = sum((Decimal(str(f)) for *_x, f in rows), Decimal(0))
    flow = sum((-(Decimal(str(q)) * Decimal(str(p))) if int(side) > 0 else Decimal(str(q)) * Decimal(str(p))
                for _s, side, q, p, _f in rows), Decimal(0))
    return {
        "orders": int(orders),
        "orders_by_status": {str(k): int(v) for k, v in by_status.items()},
        "rejects": {str(k): int(v) for k, v in rejects.items()},
        "fills": len(rows),
        "fees": fees,
        "cash_flow": flow,
        "positions": positions_from_fills(fills),
        "trading_state": (state[0] if state else "ACTIVE"),
        "trading_state_reason": (state[1] if state else ""),
        "scopes_not_active": {str(k): str(v) for k, v in scopes.items()},
    }


def fmt_qty(q: Decimal) -> str:
    """A quantity in plain notation without trailing zeros: -560, 0.0015 (never -5.6E+2)."""
    return f"{q.normalize():f}" if q else "0"


def _q(d: Decimal, places: str = "0.01") -> str:
    return str(d.quantize(Decimal(places)))


async def build_report(common: CommonSettings, wait_idle_s: float = 0.0) -> dict[str, Any]:
    r = connect(common.redis_url)
    try:
        idle = True
        if wait_idle_s > 0:
            idle = await wait_idle(r, wait_idle_s)
            # Let every service write its latest latency histograms (saved each heartbeat).
            await asyncio.sleep(common.heartbeat_s * 1.5)
        pe = await r.hgetall(streams.stats_key(streams.GROUP_PATTERN))
        se = await r.hgetall(streams.stats_key(streams.GROUP_STRATEGY))
        ex = await r.hgetall(streams.stats_key(streams.GROUP_EXECUTION))
        dlq = {k.decode(): int(v) for k, v in (await r.hgetall(streams.DLQ_COUNTS)).items()}
        marks = {k.decode(): Decimal(v.decode()) for k, v in (await r.hgetall(streams.MARKS)).items()}
        latency = await _latency(r)
        lags = await group_backlog(r)
    finally:
        await r.aclose()
    db = await asyncio.to_thread(_db_figures, common.db_url)
    initial = Decimal(common.initial_cash)
    cash = initial + db["cash_flow"] - db["fees"]
    positions = {}
    pos_value = Decimal(0)
    unrealized = Decimal(0)
    realized = Decimal(0)
    for sym, p in sorted(db["positions"].items()):
        mark = marks.get(sym, p.avg_px)
        value = p.qty * mark
        upnl = (mark - p.avg_px) * p.qty if p.qty else Decimal(0)
        pos_value += value
        unrealized += upnl
        realized += p.realized
        positions[sym] = {
            "qty": fmt_qty(p.qty),
            "avg_px": _q(p.avg_px, "0.000001"),
            "mark": str(mark),
            "market_value": _q(value),
            "realized_pnl": _q(p.realized),
            "unrealized_pnl": _q(upnl),
        }
    equity = cash + pos_value
    ex_counters = {k.decode(): int(v) for k, v in ex.items()}
    rejects = rejects_by_reason(db["rejects"], ex_counters)
    return {
        "idle": idle,
        "ticks": _int(pe.get(b"ticks")),
        "signals": _int(pe.get(b"signals")),
        "intents": _int(se.get(b"intents")),
        "intents_blocked": {k.decode().removeprefix("intents_blocked."): int(v) for k, v in se.items()
                            if k.startswith(b"intents_blocked.")},
        "orders": db["orders"],
        "orders_by_status": db["orders_by_status"],
        "fills": db["fills"],
        "rejects": rejects,
        "rejected": sum(rejects.values()),
        "dead_letters": sum(dlq.values()),
        "dead_letters_by_stream": dlq,
        "positions": positions,
        "initial_cash": _q(initial),
        "cash": _q(cash),
        "fees": _q(db["fees"]),
        "realized_pnl": _q(realized - db["fees"]),
        "realized_pnl_before_fees": _q(realized),
        "unrealized_pnl": _q(unrealized),
        "equity": _q(equity),
        "trading_state": db["trading_state"],
        "scopes_not_active": db["scopes_not_active"],
        "latency_us": latency,
        "stage_counters": {
            "pattern_engine": {k.decode(): int(v) for k, v in pe.items()},
            "strategy_engine": {k.decode(): int(v) for k, v in se.items()},
            "execution": ex_counters,
        },
        "consumer_groups": lags,
    }


def format_report(rep: dict[str, Any]) -> str:
    lines = [
        "AITrader run report" + ("" if rep["idle"] else "  (WARNING: pipeline did not drain in time)"),
        f"  ticks           {rep['ticks']:>12,}",
        f"  signals         {rep['signals']:>12,}",
        f"  intents         {rep['intents']:>12,}"
        + (f"   blocked by portfolio limits / trading states: {rep['intents_blocked']}" if rep["intents_blocked"]
           else ""),
        f"  orders          {rep['orders']:>12,}   {rep['orders_by_status']}",
        f"  fills           {rep['fills']:>12,}",
        f"  rejects         {rep['rejected']:>12,}   {rep['rejects']}",
        f"  dead_letters    {rep['dead_letters']:>12,}   {rep['dead_letters_by_stream'] or ''}",
        f"  trading state   {rep['trading_state']:>12}"
        + (f"   not active: {rep['scopes_not_active']}" if rep["scopes_not_active"] else ""),
        "  account",
        f"    cash          {rep['cash']:>16}",
        f"    realized_pnl  {rep['realized_pnl']:>16}   (after fees {rep['fees']})",
        f"    unrealized    {rep['unrealized_pnl']:>16}",
        f"    equity        {rep['equity']:>16}   (initial {rep['initial_cash']})",
        "  positions",
    ]
    if not rep["positions"]:
        lines.append("    (flat)")
    for sym, p in rep["positions"].items():
        lines.append(
            f"    {sym:<10} qty {p['qty']:>14}  avg {p['avg_px']:>14}  mark {p['mark']:>12}  "
            f"uPnL {p['unrealized_pnl']:>12}  rPnL {p['realized_pnl']:>12}"
        )
    lines.append("  latency (µs)          count       p50       p99      p999       max")
    for stage, s in rep["latency_us"].items():
        lines.append(
            f"    {stage:<18}{s['count']:>9,}{s['p50']:>10,}{s['p99']:>10,}{s['p999']:>10,}{s['max']:>10,}"
        )
    return "\n".join(lines)
