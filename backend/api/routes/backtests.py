"""``/backtests``: run backtests as jobs (trader), fan a parameter sweep out as many jobs, read results (viewer).

``POST /backtests`` queues one ``backtest`` job (``backend/backtest/job.py``: the pattern engine,
strategy engine and gateway in process over the ticks) and answers 202 with the job; the worker
writes the ``backtests`` row (``job_id`` links them) and the Parquet files. ``POST
/backtests/sweep`` queues one job per point of a grid of settings (the Cartesian product, at most
``MAX_SWEEP_POINTS``) under a ``sweep`` row whose ``result.jobs`` lists them (each job's
``parent_id`` is the sweep). ``GET /backtests`` / ``/backtests/{id}`` read the rows and metrics;
``/equity`` the equity curve with its drawdown (evenly thinned to ``max_points``) and ``/trades``
the fills, both from the Parquet files.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

import pyarrow.parquet as pq
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError, db_call
from backend.api.routes.jobs import JobOut, State
from backend.backtest.job import JOB_TYPE, MAX_SWEEP_POINTS, BacktestPayload, sweep_payloads
from backend.jobs import PayloadInvalid, QueueUnavailable, submit
from backend.jobs import store as job_store
from common import db

__all__ = ["router"]

router = APIRouter(prefix="/backtests", tags=["backtests"])
Ctx = Annotated[ApiContext, Depends(context)]
Viewer = Annotated[Caller, Depends(require("viewer"))]
Trader = Annotated[Caller, Depends(require("trader"))]
BacktestId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the backtest's id")]
Status = Literal["queued", "running", "completed", "failed", "cancelled"]
_bt = db.Backtest.__table__
_Setting = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,127}$")]


class BacktestOut(BaseModel):
    id: int
    job_id: int | None
    status: Status
    label: str
    files: list[str]
    config_digest: str
    metrics: dict[str, Any] | None = Field(description="total_return, cagr, sharpe, sortino, max_drawdown, ... "
                                                       "(docs/backtests.md)")
    ticks: int
    orders: int
    fills: int
    duration_s: float
    error: str
    created_by: str
    created_at: datetime | None
    finished_at: datetime | None


class BacktestDetail(BacktestOut):
    config: dict[str, Any] | None = Field(description="the payload it ran with")
    timeseries_path: str
    trades_path: str


class EquityPoint(BaseModel):
    ts: int = Field(description="nanoseconds since the epoch (market time)")
    equity: float
    cash: float
    gross_exposure: float
    drawdown: float = Field(description="equity / its running peak - 1 (<= 0)")


class Equity(BaseModel):
    backtest_id: int
    points: int = Field(description="points in the stored curve")
    series: list[EquityPoint]


class Trade(BaseModel):
    ts: int
    client_order_id: str
    exec_id: str
    strategy: str
    symbol: str
    side: Literal["BUY", "SELL"]
    qty: float
    price: float
    fee: float


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: BacktestPayload
    grid: dict[_Setting, list[str | int | float | bool]] = Field(
        min_length=1, max_length=8, description="AITRADER_* setting -> the values to try (Cartesian product)")


class SweepOut(BaseModel):
    sweep_id: int = Field(description="the sweep's row in /jobs (type sweep); each job's parent_id")
    jobs: list[JobOut]


def _row(ctx: ApiContext, bt_id: int) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        with ctx.engine.connect() as c:
            r = c.execute(sa.select(_bt).where(_bt.c.id == bt_id)).mappings().first()
        return dict(r) if r is not None else None

    row = db_call(read)
    if row is None:
        raise ApiError(404, f"no backtest {bt_id}")
    return row


def _parquet(path: str, what: str, bt_id: int) -> Any:
    if not path:
        raise ApiError(409, f"backtest {bt_id} has no {what} (it has not completed)", code="not_ready")
    try:
        return pq.read_table(FsPath(path))
    except (OSError, ValueError) as e:
        raise ApiError(410, f"backtest {bt_id}: its {what} file is gone or unreadable: {e}"[:300], code="gone") from e


@router.get("", response_model=list[BacktestOut], summary="Backtests, newest first (viewer)")
def list_backtests(_caller: Viewer, ctx: Ctx,
                   status: Annotated[Status | None, Query(description="only backtests in this state")] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
    q = sa.select(_bt).order_by(_bt.c.id.desc()).limit(limit)
    if status:
        q = q.where(_bt.c.status == status)

    def read() -> list[dict[str, Any]]:
        with ctx.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings().all()]

    return db_call(read)


@router.get("/{backtest_id}", response_model=BacktestDetail, responses={404: {"description": "no such backtest"}},
            summary="One backtest with its metrics and config (viewer)")
def get_backtest(_caller: Viewer, ctx: Ctx, backtest_id: BacktestId) -> dict[str, Any]:
    return _row(ctx, backtest_id)


@router.get("/{backtest_id}/equity", response_model=Equity,
            responses={404: {"description": "no such backtest"}, 409: {"description": "not completed"},
                       410: {"description": "its file is gone"}},
            summary="The equity curve and drawdown, thinned evenly to max_points (viewer)")
def equity(_caller: Viewer, ctx: Ctx, backtest_id: BacktestId,
           max_points: Annotated[int, Query(ge=2, le=100_000)] = 2000) -> Equity:
    t = _parquet(_row(ctx, backtest_id)["timeseries_path"], "equity curve", backtest_id).to_pydict()
    n = len(t["ts"])
    peak, dd = -math.inf, []
    for e in t["equity"]:  # drawdown from the full curve, before thinning
        peak = max(peak, e)
        dd.append(e / peak - 1.0 if peak > 0 else 0.0)
    step = max(1, math.ceil(n / max_points))
    idx = list(range(0, n, step))
    if n and idx[-1] != n - 1:
        idx.append(n - 1)  # the last point always
    series = [EquityPoint(ts=t["ts"][i], equity=t["equity"][i], cash=t["cash"][i],
                          gross_exposure=t["gross_exposure"][i], drawdown=dd[i]) for i in idx]
    return Equity(backtest_id=backtest_id, points=n, series=series)


@router.get("/{backtest_id}/trades", response_model=list[Trade],
            responses={404: {"description": "no such backtest"}, 409: {"description": "not completed"},
                       410: {"description": "its file is gone"}},
            summary="The backtest's fills in time order (viewer)")
def trades(_caller: Viewer, ctx: Ctx, backtest_id: BacktestId,
           limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> list[Trade]:
    t = _parquet(_row(ctx, backtest_id)["trades_path"], "trades", backtest_id).slice(0, limit).to_pylist()
    return [Trade(**{**r, "side": "BUY" if r["side"] > 0 else "SELL"}) for r in t]


def _submit(ctx: ApiContext, state: Any, payload: dict[str, Any], actor: str, parent: int | None = None) -> int:
    try:
        return db_call(lambda: submit(ctx.engine, JOB_TYPE, payload, actor, parent, queue=state.queue))
    except PayloadInvalid as e:
        raise ApiError(422, str(e)[:500], code="invalid_payload") from e
    except QueueUnavailable as e:
        raise ApiError(503, f"task queue unavailable: {e}"[:500]) from e


@router.post("", response_model=JobOut, status_code=202,
             responses={422: {"description": "a payload the backtest refuses"},
                        503: {"description": "the task queue is unreachable (the job is stored as failed)"}},
             summary="Queue a backtest job (trader): files on the worker, or synthetic ticks")
def create_backtest(body: BacktestPayload, caller: Trader, ctx: Ctx, state: State) -> dict[str, Any]:
    job_id = _submit(ctx, state, body.model_dump(mode="json", exclude_none=True), caller.actor)
    row = db_call(lambda: job_store.get(ctx.engine, job_id))
    assert row is not None
    return row


@router.post("/sweep", response_model=SweepOut, status_code=202,
             responses={422: {"description": "a bad payload or grid, or more than MAX_SWEEP_POINTS points"},
                        503: {"description": "the task queue is unreachable"}},
             summary="Queue one backtest job per point of a settings grid (trader)")
def sweep(body: Sweep, caller: Trader, ctx: Ctx, state: State) -> SweepOut:
    n = math.prod(len(v) for v in body.grid.values())
    if not 1 <= n <= MAX_SWEEP_POINTS:
        raise ApiError(422, f"the grid has {n} points; 1..{MAX_SWEEP_POINTS} allowed", code="validation_error")
    base = body.base.model_dump(mode="json", exclude_none=True)
    payloads = sweep_payloads(base, body.grid)
    for p in payloads:  # every point checked before anything is queued
        try:
            BacktestPayload.model_validate(p)
        except ValueError as e:
            raise ApiError(422, f"sweep point {p.get('label', '')!r}: {e}"[:500], code="invalid_payload") from e
    actor = caller.actor
    sweep_id = db_call(lambda: job_store.create_group(ctx.engine, "sweep", {"base": base, "grid": body.grid}, actor))
    ids = [_submit(ctx, state, p, actor, sweep_id) for p in payloads]
    db_call(lambda: job_store.set_result(ctx.engine, sweep_id, {"jobs": ids}))
    rows = db_call(lambda: [job_store.get(ctx.engine, i) for i in ids])
    return SweepOut(sweep_id=sweep_id, jobs=[JobOut(**r) for r in rows if r is not None])
