"""``/kill-switch``: every scope's trading state (viewer), engage (trader), release (admin only).

Commands go to the gateway by the same path as ``aitrader kill`` (``backend.control``: the bus,
or the database's ``control_requests`` when Redis is unreachable); the answer is the gateway's
acknowledgement. The actor is ``api:<username>``; every request through the API, answered or
not, is also written to ``audit_log`` (action ``api.kill.engage`` / ``api.kill.reduce`` /
``api.kill.release``). These routes are never rate-limited.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy.exc import SQLAlchemyError

from backend import control
from backend.api.commands import COMMAND_RESPONSES as _RESPONSES
from backend.api.commands import send_command
from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError, database_error
from backend.api.schemas import ControlResult, KillEngage, KillRelease, KillSwitchState, ScopeState
from execution.kill_switch import GLOBAL, scope_problem

router = APIRouter(prefix="/kill-switch", tags=["kill switch"])
log = logging.getLogger(__name__)
Ctx = Annotated[ApiContext, Depends(context)]



def _command(ctx: ApiContext, caller: Caller, command: str, scope: str, reason: str) -> ControlResult:
    bad = scope_problem(scope)
    if bad is not None:  # the schema's pattern is stricter; this keeps the gateway's own rule authoritative
        raise ApiError(422, bad, code="validation_error")
    ack, via, request_id = send_command(ctx, caller, command, reason=reason, scope=scope,
                                        entity="trading_state", entity_id=scope)
    return ControlResult(ok=True, scope=scope, state=ack.state, detail=ack.detail, via=via,  # type: ignore[arg-type]
                         request_id=request_id)


@router.get("", response_model=KillSwitchState, summary="Every scope's persisted trading state (viewer)")
def kill_switch_state(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx) -> KillSwitchState:
    try:
        rows = control.trading_states(ctx.engine)
    except SQLAlchemyError as e:
        raise database_error(e) from e
    glob = next((r["state"] for r in rows if r["scope"] == GLOBAL), "ACTIVE")
    return KillSwitchState(scopes=[ScopeState(**r) for r in rows], global_state=glob)


@router.post("/engage", response_model=ControlResult, responses=_RESPONSES,
             summary="Halt (or put in reduce-only mode) a scope (trader or admin)")
def engage(body: KillEngage, caller: Annotated[Caller, Depends(require("trader"))], ctx: Ctx) -> ControlResult:
    command = "kill.engage" if body.action == "halt" else "kill.reduce"
    return _command(ctx, caller, command, body.scope, body.reason)


@router.post("/release", response_model=ControlResult, responses=_RESPONSES,
             summary="Release a scope back to ACTIVE (admin only; a reason is required)")
def release(body: KillRelease, caller: Annotated[Caller, Depends(require("admin"))], ctx: Ctx) -> ControlResult:
    return _command(ctx, caller, "kill.release", body.scope, body.reason)
