"""Manual orders and cancels through the API (trader): the same gateway, risk checks and records as the pipeline's.

- ``POST /orders`` publishes an ``OrderIntent`` on ``se:intents`` with strategy ``manual`` (so
  ``strategy:manual`` is a kill-switch scope of its own, and the strategy engine books its fills
  to a ``manual`` book that no strategy trades), a fresh client order id, and the gateway's last
  mark of the symbol as its reference price (a LIMIT's own price when there is no mark). The
  gateway runs its pre-trade checks exactly as for any intent; the route waits up to
  ``AITRADER_API_CONTROL_TIMEOUT_S`` for the order's row and answers with its state (``ACCEPTED``,
  ``FILLED``, ``REJECTED`` with the reason, …) or 202 with ``PENDING_NEW`` when the gateway has not
  recorded it yet. New orders are rate-limited per user (``AITRADER_API_ORDER_RATE_LIMIT`` per
  ``..._WINDOW_S``); every request is written to ``audit_log`` (``api.order.new``).
- ``POST /orders/{client_order_id}/cancel`` and ``POST /orders/cancel-all`` send ``order.cancel`` /
  ``order.cancel_all`` by the kill switch's path (``backend.control``) and return the gateway's
  answer. Cancels only reduce risk: like the kill switch they are never rate-limited.
"""

from __future__ import annotations

import logging
import time
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import SQLAlchemyError

from backend import views
from backend.api.commands import COMMAND_RESPONSES, send_command
from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError, db_call
from backend.api.ratelimit import SlidingWindowLimiter
from backend.api.routes.views import exact
from backend.api.schemas import NAME_PATTERN, SYMBOL_PATTERN, OrderOut
from common import db, streams
from common.messages import OrderIntent, OrdType, Side, TimeInForce, encode
from execution.oms import intent_problem

__all__ = ["MANUAL_STRATEGY", "install", "router"]

router = APIRouter(prefix="/orders", tags=["orders"])
log = logging.getLogger(__name__)

MANUAL_STRATEGY = "manual"
Ctx = Annotated[ApiContext, Depends(context)]
Trader = Annotated[Caller, Depends(require("trader"))]
ClientOrderId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$",
                                    description="the order's client order id")]
# Quantities and prices: positive, finite, at most 18 integer digits and 10 decimals (the database's NUMERIC).
Qty = Annotated[Decimal, Field(gt=0, max_digits=28, decimal_places=10)]


def install(app: FastAPI, ctx: ApiContext) -> None:
    s = ctx.settings
    app.state.order_limiter = SlidingWindowLimiter(s.order_rate_limit, s.order_rate_window_s)


class NewOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(pattern=SYMBOL_PATTERN, max_length=64)
    side: Literal["BUY", "SELL"]
    qty: Qty
    order_type: Literal["MARKET", "LIMIT", "STOP"] = "MARKET"
    limit_price: Qty | None = Field(None, description="LIMIT: the limit price")
    stop_price: Qty | None = Field(None, description="STOP: the trigger price")
    tif: Literal["DAY", "GTC", "IOC"] = "DAY"
    reason: str = Field("", max_length=500, description="why (kept in the audit log)")

    @model_validator(mode="after")
    def _prices(self) -> NewOrder:
        if self.order_type == "LIMIT" and self.limit_price is None:
            raise ValueError("a LIMIT order needs limit_price")
        if self.order_type != "LIMIT" and self.limit_price is not None:
            raise ValueError("limit_price is only for LIMIT orders")
        if self.order_type == "STOP" and self.stop_price is None:
            raise ValueError("a STOP order needs stop_price")
        if self.order_type != "STOP" and self.stop_price is not None:
            raise ValueError("stop_price is only for STOP orders")
        return self


class OrderSubmitted(BaseModel):
    client_order_id: str
    status: str = Field(description="the order's state when answered: PENDING_NEW (202) until the gateway records it")
    reject_reason: str = Field("", description="the gateway's reject code when REJECTED")
    order: OrderOut | None = Field(None, description="the order's row, once the gateway has written it")


class CancelResult(BaseModel):
    ok: bool
    detail: str = Field(description="the gateway's answer")
    state: str = Field(description="what the gateway reported with it (may be empty)")
    via: Literal["bus", "database"] = Field(description="The path the command took to the gateway.")
    request_id: str = Field(description="The control request's id (ctl:commands / control_requests).")


class CancelAll(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(None, pattern=SYMBOL_PATTERN, max_length=64)
    strategy: str | None = Field(None, pattern=NAME_PATTERN, max_length=64)
    reason: str = Field("", max_length=500)


class CancelOne(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


def _audit(ctx: ApiContext, caller: Caller, coid: str, result: str, detail: dict[str, Any]) -> None:
    row = {"ts": time.time_ns(), "actor": caller.username, "action": "api.order.new", "entity": "order",
           "entity_id": coid, "detail": {"role": caller.role, "result": result, **detail}}
    try:
        with ctx.engine.begin() as c:
            c.execute(db.AuditLog.__table__.insert(), row)
    except SQLAlchemyError:
        log.exception("audit_log row for a manual order by %s not written: %s", caller.username, row)


def _redis(ctx: ApiContext) -> redis.Redis:
    return redis.Redis.from_url(ctx.common.redis_url, socket_connect_timeout=2, socket_timeout=2)


def _mark(r: redis.Redis, symbol: str) -> Decimal | None:
    """The gateway's last reference price of ``symbol`` (``ex:marks``), or None."""
    try:
        raw = r.hget(streams.MARKS, symbol)
    except (redis.RedisError, OSError) as e:
        raise ApiError(503, "Redis is unreachable: the order cannot reach the gateway") from e
    return Decimal(raw.decode()) if raw is not None else None


def _publish(ctx: ApiContext, r: redis.Redis, intent: OrderIntent) -> None:
    try:
        r.xadd(streams.INTENTS, {b"d": encode(intent)}, maxlen=ctx.common.stream_maxlen, approximate=True)
    except (redis.RedisError, OSError) as e:
        raise ApiError(503, f"Redis is unreachable: {e}") from e


@router.post("", response_model=OrderSubmitted, status_code=201,
             responses={202: {"model": OrderSubmitted, "description": "sent; the gateway has not recorded it yet"},
                        409: {"description": "no mark for a MARKET or STOP order's symbol"},
                        429: {"description": "too many new orders: see Retry-After"},
                        503: {"description": "Redis or the database is unreachable"}},
             summary="Place a manual order through the gateway's risk checks (trader or admin; rate-limited)")
def new_order(body: NewOrder, caller: Trader, ctx: Ctx, request: Request) -> Any:
    wait = request.app.state.order_limiter.hit(caller.username)
    if wait > 0:
        raise ApiError(429, f"too many new orders: try again in {wait:.0f} s", code="rate_limited",
                       headers={"Retry-After": SlidingWindowLimiter.retry_after(wait)})
    r = _redis(ctx)
    try:
        return _new_order(body, caller, ctx, r)
    finally:
        r.close()


def _new_order(body: NewOrder, caller: Caller, ctx: ApiContext, r: redis.Redis) -> Any:
    mark = _mark(r, body.symbol)
    ref = mark if mark is not None else body.limit_price
    if ref is None:
        raise ApiError(409, f"no mark for {body.symbol}: the gateway has seen no price for it; a MARKET or STOP "
                            "order needs one (a LIMIT order uses its own price)", code="no_mark")
    now = time.time_ns()
    coid = f"man-{uuid.uuid4().hex[:24]}"
    intent = OrderIntent(
        client_order_id=coid, signal_id=f"manual:{caller.username}"[:64], strategy=MANUAL_STRATEGY,
        symbol=body.symbol, side=Side.BUY if body.side == "BUY" else Side.SELL, qty=body.qty,
        order_type=OrdType(body.order_type), tif=TimeInForce(body.tif), ref_price=ref, tick_seq=0,
        ts_event=now, ts_ingest=now, ts_signal=now, ts_intent=now, limit_price=body.limit_price,
        stop_price=body.stop_price,
    )
    bad = intent_problem(intent)
    if bad is not None:
        raise ApiError(422, bad, code="validation_error")
    detail = {"symbol": body.symbol, "side": body.side, "qty": str(body.qty), "order_type": body.order_type,
              "limit_price": str(body.limit_price or ""), "stop_price": str(body.stop_price or ""),
              "ref_price": str(ref), "reason": body.reason}
    try:
        _publish(ctx, r, intent)
    except ApiError:
        _audit(ctx, caller, coid, "unreachable", detail)
        raise
    _audit(ctx, caller, coid, "sent", detail)
    log.info("manual order %s by %s: %s %s %s %s", coid, caller.username, body.side, body.qty, body.symbol,
             body.order_type)
    deadline = time.monotonic() + ctx.settings.control_timeout_s
    row = db_call(lambda: views.get_order(ctx.engine, coid))
    while row is None and time.monotonic() < deadline:
        time.sleep(0.05)
        row = db_call(lambda: views.get_order(ctx.engine, coid))
    if row is None:
        return JSONResponse(status_code=202, content=OrderSubmitted(client_order_id=coid,
                                                                    status="PENDING_NEW").model_dump(mode="json"))
    return OrderSubmitted(client_order_id=coid, status=row["status"], reject_reason=row["reason"],
                          order=OrderOut(**exact(row)))


@router.post("/{client_order_id}/cancel", response_model=CancelResult, responses=COMMAND_RESPONSES,
             summary="Cancel one open order (trader or admin; never rate-limited)")
def cancel_order(client_order_id: ClientOrderId, caller: Trader, ctx: Ctx,
                 body: CancelOne | None = None) -> CancelResult:
    reason = body.reason if body is not None else ""
    ack, via, rid = send_command(ctx, caller, "order.cancel", reason=reason or "cancel from the API",
                                 args={"client_order_id": client_order_id}, entity="order",
                                 entity_id=client_order_id)
    return CancelResult(ok=True, state=ack.state, detail=ack.detail, via=via, request_id=rid)  # type: ignore[arg-type]


@router.post("/cancel-all", response_model=CancelResult, responses=COMMAND_RESPONSES,
             summary="Cancel every open order, optionally of one symbol / strategy (trader or admin)")
def cancel_all(body: CancelAll, caller: Trader, ctx: Ctx) -> CancelResult:
    args = {k: v for k, v in (("symbol", body.symbol), ("strategy", body.strategy)) if v}
    ack, via, rid = send_command(ctx, caller, "order.cancel_all", reason=body.reason or "cancel-all from the API",
                                 args=args, entity="order", entity_id="*")
    return CancelResult(ok=True, state=ack.state, detail=ack.detail, via=via, request_id=rid)  # type: ignore[arg-type]
