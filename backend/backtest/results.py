"""Where a backtest's results go: one ``backtests`` row, its equity curve and trades as Parquet.

Files: ``$AITRADER_HOME/backtests/<id>/equity.parquet`` (columns ``ts`` ns, ``equity``, ``cash``,
``gross_exposure``) and ``trades.parquet`` (one row per fill: ``ts``, ``client_order_id``,
``exec_id``, ``strategy``, ``symbol``, ``side`` +1/-1, ``qty``, ``price``, ``fee``). The live
``orders`` and ``fills`` tables are never written: they are the live account's record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from backend.backtest.metrics import Fill, summary
from backend.backtest.runner import BacktestResult
from common.db import Backtest, session_factory
from common.messages import OrdStatus

__all__ = ["compute_metrics", "create_row", "fills_of", "finish_row", "write_parquet"]


def fills_of(res: BacktestResult) -> list[Fill]:
    return [Fill(r.ts_exec, r.symbol, 1 if int(r.side) > 0 else -1, float(r.last_qty), float(r.last_px), float(r.fee))
            for r in res.fills]


def compute_metrics(res: BacktestResult, sample_s: float) -> dict[str, Any]:
    ts = [p[0] for p in res.equity]
    m = summary(ts, [p[1] for p in res.equity], [p[3] for p in res.equity], fills_of(res), sample_s)
    orders = res.orders()
    return {**m, "ticks": res.ticks, "signals": res.signals, "intents": len(res.intents), "orders": len(orders),
            "fills": len(res.fills), "rejects": sum(1 for r in orders.values() if r.status == OrdStatus.REJECTED),
            "initial_cash": res.initial_cash, "ticks_per_s": res.ticks / res.duration_s if res.duration_s else None}


def write_parquet(res: BacktestResult, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    eq = pa.table({
        "ts": pa.array([p[0] for p in res.equity], pa.int64()),
        "equity": pa.array([p[1] for p in res.equity], pa.float64()),
        "cash": pa.array([p[2] for p in res.equity], pa.float64()),
        "gross_exposure": pa.array([p[3] for p in res.equity], pa.float64()),
    })
    fills = res.fills
    tr = pa.table({
        "ts": pa.array([r.ts_exec for r in fills], pa.int64()),
        "client_order_id": pa.array([r.client_order_id for r in fills], pa.string()),
        "exec_id": pa.array([r.exec_id for r in fills], pa.string()),
        "strategy": pa.array([r.strategy for r in fills], pa.string()),
        "symbol": pa.array([r.symbol for r in fills], pa.string()),
        "side": pa.array([1 if int(r.side) > 0 else -1 for r in fills], pa.int8()),
        "qty": pa.array([float(r.last_qty) for r in fills], pa.float64()),
        "price": pa.array([float(r.last_px) for r in fills], pa.float64()),
        "fee": pa.array([float(r.fee) for r in fills], pa.float64()),
    })
    eq_path, tr_path = folder / "equity.parquet", folder / "trades.parquet"
    pq.write_table(eq, eq_path)
    pq.write_table(tr, tr_path)
    return eq_path, tr_path


def create_row(engine: Engine, *, files: list[str], config: Mapping[str, Any], digest: str, label: str,
               created_by: str, job_id: int | None = None) -> int:
    """A ``running`` row for a backtest about to start; its id."""
    with session_factory(engine).begin() as s:
        row = Backtest(status="running", label=label[:128], files=files, config=dict(config), config_digest=digest,
                       created_by=created_by[:64], job_id=job_id, error="")
        s.add(row)
        s.flush()
        return int(row.id)


def finish_row(engine: Engine, row_id: int, *, metrics: Mapping[str, Any] | None = None,
               paths: tuple[Path, Path] | None = None, res: BacktestResult | None = None, error: str = "",
               cancelled: bool = False) -> None:
    """Mark the row completed (metrics, paths, counts), failed (``error``) or cancelled (its job was)."""
    with session_factory(engine).begin() as s:
        row = s.get(Backtest, row_id)
        assert row is not None
        row.status = "cancelled" if cancelled else "failed" if error else "completed"
        row.error = error[:4000]
        row.finished_at = dt.datetime.now(dt.UTC)
        if metrics is not None:
            row.metrics = dict(metrics)
        if paths is not None:
            row.timeseries_path, row.trades_path = str(paths[0]), str(paths[1])
        if res is not None:
            row.ticks, row.orders, row.fills = res.ticks, len(res.orders()), len(res.fills)
            row.duration_s = res.duration_s
