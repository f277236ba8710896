"""``GET /orders``, ``/fills``, ``/positions`` (viewer and up): the CLI's views of the database."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from backend import views
from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import db_call
from backend.api.schemas import NAME_PATTERN, SYMBOL_PATTERN, FillOut, OrderOut, PositionOut

router = APIRouter(tags=["views"])

Viewer = Annotated[Caller, Depends(require("viewer"))]
Ctx = Annotated[ApiContext, Depends(context)]
Symbol = Annotated[str | None, Query(pattern=SYMBOL_PATTERN, max_length=64, description="only this symbol")]
Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many rows, newest first")]


def exact(row: dict[str, Any]) -> dict[str, Any]:
    """Decimals as exact strings without trailing zeros (None stays None)."""
    return {k: (views.fmt_decimal(v) if isinstance(v, Decimal) else v) for k, v in row.items()}


@router.get("/orders", response_model=list[OrderOut], summary="Orders, newest first (viewer)")
def orders(
    _caller: Viewer,
    ctx: Ctx,
    open_only: Annotated[bool, Query(alias="open", description="only orders still working")] = False,
    symbol: Symbol = None,
    strategy: Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=64,
                                          description="only this strategy")] = None,
    limit: Limit = 50,
) -> list[dict[str, Any]]:
    rows = db_call(lambda: views.list_orders(ctx.engine, open_only=open_only, symbol=symbol, strategy=strategy,
                                           limit=limit))
    return [exact(r) for r in rows]


@router.get("/fills", response_model=list[FillOut], summary="Fills, newest first (viewer)")
def fills(_caller: Viewer, ctx: Ctx, symbol: Symbol = None, limit: Limit = 50) -> list[dict[str, Any]]:
    return [exact(r) for r in db_call(lambda: views.list_fills(ctx.engine, symbol=symbol, limit=limit))]


@router.get("/positions", response_model=list[PositionOut],
            summary="Net position, average cost and P&L per symbol (viewer); marks null when Redis is down")
def positions(_caller: Viewer, ctx: Ctx) -> list[dict[str, Any]]:
    marks = views.read_marks(ctx.common.redis_url)
    return [exact(r) for r in db_call(lambda: views.positions(ctx.engine, marks))]
