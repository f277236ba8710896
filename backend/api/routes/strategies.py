"""``/strategies``: the strategy engine's strategies (viewer), switched off (trader) or on (admin).

The same object as ``aitrader strategies`` (``backend.strategies``): the file, the persisted
switches, the live switches and counters; a switch is saved with its ``audit_log`` row (actor
``api:<username>``) and sent to the running engine on ``ctl:commands``.

Roles follow the kill switch's: switching a strategy off stops trading (like an engage) and is
open to traders; switching one on starts trading (like a release) and needs an admin.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from backend import strategies
from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError
from backend.api.schemas import NAME_PATTERN, Reason, _Strict
from backend.views import ViewError
from common.config import ConfigError

__all__ = ["router"]

router = APIRouter(prefix="/strategies", tags=["strategies"])
Ctx = Annotated[ApiContext, Depends(context)]
Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64, description="the strategy's name")]


class SwitchOut(BaseModel):
    name: str
    enabled: bool
    actor: str
    reason: str
    request_id: str
    ts: int


class StrategyOut(BaseModel):
    name: str
    type: str
    detectors: list[str]
    models: list[str]
    symbols: str | list[str] = Field(description='"*" or the symbols it trades')
    allocation: float
    enabled: bool = Field(description="the engine's live switch, else the persisted one, else the file's")
    enabled_in_file: bool
    switch: SwitchOut | None = Field(description="the last switch saved (who, why), null when never switched")
    running: bool = Field(description="a running engine has published its switch for it")
    sizing: str
    stops: dict[str, Any] | None
    fusion: dict[str, Any] | None
    counters: dict[str, int] = Field(description="its counters in stats:strategy_engine (signals, intents, "
                                                 "skipped.<why>, fusion.<name>.*)")


class StrategyDetail(StrategyOut):
    config: dict[str, Any] = Field(description="its whole configuration, as validated from the file")


class StrategyList(BaseModel):
    strategies: list[StrategyOut]
    notes: list[str] = Field(description="sources that could not be read (database, Redis, no running engine)")


class StrategyDetailOut(StrategyDetail):
    notes: list[str]


class SwitchRequest(_Strict):
    reason: Reason


class SwitchResult(BaseModel):
    name: str
    enabled: bool = Field(description="the switch saved")
    applied: bool = Field(description="the running engine acknowledged it; false: it applies at its next start")
    detail: str = Field(description="the engine's answer, or why there is none")
    request_id: str


def _gather(ctx: ApiContext) -> strategies.StrategiesView:
    try:
        return strategies.gather(ctx.common, ctx.engine)
    except ConfigError as e:
        raise ApiError(503, f"strategies file unusable: {e}") from e


@router.get("", response_model=StrategyList, summary="Every configured strategy with its switch and counters (viewer)")
def list_strategies(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx) -> dict[str, Any]:
    view = _gather(ctx)
    return {"strategies": view.rows(), "notes": view.notes}


@router.get("/{name}", response_model=StrategyDetailOut, responses={404: {"description": "no such strategy"}},
            summary="One strategy with its whole configuration (viewer)")
def get_strategy(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx, name: Name) -> dict[str, Any]:
    view = _gather(ctx)
    try:
        return strategies.detail(view, name) | {"notes": view.notes}
    except strategies.UnknownStrategy as e:
        raise ApiError(404, str(e)) from None


_SWITCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": SwitchResult, "description": "saved; no running engine acknowledged it (applies at its next "
                                                "start)"},
    404: {"description": "no such strategy"},
    409: {"description": "refused: the enabled allocations would exceed 1 (nothing saved), or the engine refused"},
    503: {"description": "the database or the strategies file cannot be used (nothing saved)"},
}


def _switch(ctx: ApiContext, caller: Caller, name: str, on: bool, reason: str) -> Any:
    try:
        res = strategies.switch(ctx.common, name, on, reason=reason, actor=caller.actor,
                                timeout_s=ctx.settings.control_timeout_s, engine=ctx.engine)
    except strategies.UnknownStrategy as e:
        raise ApiError(404, str(e)) from None
    except strategies.EnableRefused as e:
        raise ApiError(409, str(e), code="refused", details={"saved": False}) from None
    except ConfigError as e:
        raise ApiError(503, f"strategies file unusable: {e}") from e
    except (ViewError, SQLAlchemyError) as e:
        raise ApiError(503, f"database error: {str(e).splitlines()[0][:200]}") from e
    body = SwitchResult(name=res.name, enabled=on, applied=res.applied,
                        detail=res.ack.detail if res.ack else res.error, request_id=res.request_id)
    if res.ack is not None and not res.ack.ok:
        raise ApiError(409, f"the strategy engine refused it: {res.ack.detail or 'no detail'}", code="refused",
                       details={"saved": True, **body.model_dump()})
    if res.ack is None:
        return JSONResponse(body.model_dump(), status_code=202)
    return body


@router.post("/{name}/enable", response_model=SwitchResult, responses=_SWITCH_RESPONSES,
             summary="Switch a strategy on: it starts trading (admin; a reason is required)")
def enable(name: Name, body: SwitchRequest, caller: Annotated[Caller, Depends(require("admin"))], ctx: Ctx) -> Any:
    return _switch(ctx, caller, name, True, body.reason)


@router.post("/{name}/disable", response_model=SwitchResult, responses=_SWITCH_RESPONSES,
             summary="Switch a strategy off: it stops opening trades (trader or admin; a reason is required)")
def disable(name: Name, body: SwitchRequest, caller: Annotated[Caller, Depends(require("trader"))], ctx: Ctx) -> Any:
    return _switch(ctx, caller, name, False, body.reason)
