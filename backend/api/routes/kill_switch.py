"""``/kill-switch``: every scope's trading state (viewer), engage (trader), release (admin only).

Commands go to the gateway by the same path as ``aitrader kill`` (``backend.control``: the bus,
or the database's ``control_requests`` when Redis is unreachable); the answer is the gateway's
acknowledgement. The actor is ``api:<username>``; every request through the API, answered or
not, is also written to ``audit_log`` (action ``api.kill.engage`` / ``api.kill.reduce`` /
``api.kill.release``). These routes are never rate-limited.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy.exc import SQLAlchemyError

from backend import control
from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError
from backend.api.schemas import ControlResult, KillEngage, KillRelease, KillSwitchState, ScopeState
from common import db
from execution.kill_switch import GLOBAL, scope_problem

router = APIRouter(prefix="/kill-switch", tags=["kill switch"])
log = logging.getLogger(__name__)
Ctx = Annotated[ApiContext, Depends(context)]

_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "the gateway refused the command (detail says why)"},
    503: {"description": "neither Redis nor the database could carry the command"},
    504: {"description": "the execution gateway did not answer in time"},
}


def _audit(ctx: ApiContext, caller: Caller, req: Any, result: str, details: dict[str, Any]) -> None:
    row = {"ts": time.time_ns(), "actor": caller.username, "action": f"api.{req.command}", "entity": "trading_state",
           "entity_id": req.scope,
           "detail": {"request_id": req.request_id, "reason": req.reason, "role": caller.role, "result": result,
                      **details}}
    try:
        with ctx.engine.begin() as c:
            c.execute(db.AuditLog.__table__.insert(), row)
    except SQLAlchemyError:  # the command's own effects are audited by the gateway; say loudly that ours is not
        log.exception("audit_log row for %s by %s not written: %s", req.command, caller.username, row)


def _command(ctx: ApiContext, caller: Caller, command: str, scope: str, reason: str) -> ControlResult:
    bad = scope_problem(scope)
    if bad is not None:  # the schema's pattern is stricter; this keeps the gateway's own rule authoritative
        raise ApiError(422, bad, code="validation_error")
    req = control.make_control(command, reason, scope, f"api:{caller.username}")
    out = control.send(ctx.common, req, ctx.settings.control_via, ctx.settings.control_timeout_s)
    base = {"via": out.via, "request_id": req.request_id}
    if out.ack is None:
        _audit(ctx, caller, req, "no_answer" if out.failure == "no_answer" else "unreachable",
               {**base, "error": out.error})
        if out.failure == "no_answer":
            raise ApiError(504, f"{out.error} within {ctx.settings.control_timeout_s:g} s; is the gateway running?",
                           details=base)
        raise ApiError(503, f"cannot reach the execution gateway: {out.error}", details=base)
    ack = out.ack
    _audit(ctx, caller, req, "ok" if ack.ok else "refused", {**base, "state": ack.state, "detail": ack.detail})
    log.info("%s %s by %s via %s: ok=%s state=%s", command, scope, caller.username, out.via, ack.ok, ack.state)
    if not ack.ok:
        raise ApiError(409, f"the gateway refused {command}: {ack.detail or 'no detail'}", code="refused",
                       details={**base, "state": ack.state, "detail": ack.detail})
    return ControlResult(ok=True, scope=scope, state=ack.state, detail=ack.detail, via=out.via,  # type: ignore[arg-type]
                         request_id=req.request_id)


@router.get("", response_model=KillSwitchState, summary="Every scope's persisted trading state (viewer)")
def kill_switch_state(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx) -> KillSwitchState:
    try:
        rows = control.trading_states(ctx.engine)
    except SQLAlchemyError as e:
        raise ApiError(503, f"database error: {str(e).splitlines()[0][:200]}") from e
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
