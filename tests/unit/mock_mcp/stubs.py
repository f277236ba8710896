"""Builders of execution reports for the mock broker's tests."""

from __future__ import annotations

from decimal import Decimal

from common.messages import ExecutionReport, OrdStatus, Side

_seq = iter(range(1, 10**9))


def fill(
    symbol: str = "AAA",
    side: Side = Side.BUY,
    qty: str | Decimal = "10",
    px: str | Decimal = "100",
    fee: str | Decimal = "0",
    *,
    exec_id: str | None = None,
    coid: str = "co-1",
    status: OrdStatus = OrdStatus.FILLED,
    ts: int = 1_700_000_000_000_000_000,
) -> ExecutionReport:
    q = Decimal(str(qty))
    return ExecutionReport(
        exec_id=exec_id or f"ex-{next(_seq)}",
        client_order_id=coid,
        signal_id="sg-1",
        strategy="test",
        symbol=symbol,
        side=side,
        status=status,
        order_qty=q,
        cum_qty=q,
        leaves_qty=Decimal(0),
        last_qty=q,
        last_px=Decimal(str(px)),
        avg_px=Decimal(str(px)),
        fee=Decimal(str(fee)),
        ts_event=ts,
        ts_ingest=ts,
        ts_signal=ts,
        ts_intent=ts,
        ts_exec=ts,
        venue="SIM",
    )


def order_report(
    coid: str, status: OrdStatus, *, exec_id: str, cum: str = "0", qty: str = "10"
) -> ExecutionReport:
    return ExecutionReport(
        exec_id=exec_id,
        client_order_id=coid,
        signal_id="sg-1",
        strategy="test",
        symbol="AAA",
        side=Side.BUY,
        status=status,
        order_qty=Decimal(qty),
        cum_qty=Decimal(cum),
        leaves_qty=Decimal(qty) - Decimal(cum),
        last_qty=Decimal(0),
        last_px=Decimal(0),
        avg_px=Decimal(0),
        fee=Decimal(0),
        ts_event=1,
        ts_ingest=1,
        ts_signal=1,
        ts_intent=1,
        ts_exec=2,
    )
