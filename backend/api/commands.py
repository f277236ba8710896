"""Commands to the execution gateway from the API: sent, audited, answered in one way.

``send_command`` sends a ``Control`` by the same path as the CLI (``backend.control``: the bus,
or the database's ``control_requests`` when Redis is unreachable) with actor
``api:<username>``, writes an ``audit_log`` row for the request whatever came of it (action
``api.<command>``), and returns the gateway's acknowledgement — or raises the API error that
says why there is none (504 no answer, 503 unreachable, 409 refused by the gateway).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from backend import control
from backend.api.deps import ApiContext, Caller
from backend.api.errors import ApiError
from common import db
from common.messages import Control, ControlAck

__all__ = ["COMMAND_RESPONSES", "send_command"]

log = logging.getLogger(__name__)

COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "the gateway refused the command (detail says why)"},
    503: {"description": "neither Redis nor the database could carry the command"},
    504: {"description": "the execution gateway did not answer in time"},
}


def _audit(ctx: ApiContext, caller: Caller, req: Control, entity: str, entity_id: str, result: str,
           details: dict[str, Any]) -> None:
    row = {"ts": time.time_ns(), "actor": caller.username, "action": f"api.{req.command}", "entity": entity,
           "entity_id": entity_id[:128],
           "detail": {"request_id": req.request_id, "reason": req.reason, "role": caller.role, "result": result,
                      **({"args": dict(req.args)} if req.args else {}), **details}}
    try:
        with ctx.engine.begin() as c:
            c.execute(db.AuditLog.__table__.insert(), row)
    except SQLAlchemyError:  # the command's own effects are audited by the gateway; say loudly that ours is not
        log.exception("audit_log row for %s by %s not written: %s", req.command, caller.username, row)


def send_command(ctx: ApiContext, caller: Caller, command: str, *, reason: str, scope: str = "global",
                 args: dict[str, str] | None = None, entity: str, entity_id: str) -> tuple[ControlAck, str, str]:
    """The gateway's positive answer to ``command``: (ack, the path taken, the request id)."""
    req = control.make_control(command, reason, scope, caller.actor, args)
    out = control.send(ctx.common, req, ctx.settings.control_via, ctx.settings.control_timeout_s)
    base = {"via": out.via, "request_id": req.request_id}
    if out.ack is None:
        _audit(ctx, caller, req, entity, entity_id, "no_answer" if out.failure == "no_answer" else "unreachable",
               {**base, "error": out.error})
        if out.failure == "no_answer":
            raise ApiError(504, f"{out.error} within {ctx.settings.control_timeout_s:g} s; is the gateway running?",
                           details=base)
        raise ApiError(503, f"cannot reach the execution gateway: {out.error}", details=base)
    ack = out.ack
    _audit(ctx, caller, req, entity, entity_id, "ok" if ack.ok else "refused",
           {**base, "state": ack.state, "detail": ack.detail})
    log.info("%s %s by %s via %s: ok=%s state=%s", command, entity_id, caller.username, out.via, ack.ok, ack.state)
    if not ack.ok:
        raise ApiError(409, f"the gateway refused {command}: {ack.detail or 'no detail'}", code="refused",
                       details={**base, "state": ack.state, "detail": ack.detail})
    return ack, out.via, req.request_id
