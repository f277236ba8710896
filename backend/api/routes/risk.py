"""``/risk``: the pre-trade limits in force (viewer), and changing one while the gateway runs (admin only).

``GET /risk`` is ``aitrader risk show --json``: the risk file (``AITRADER_EX_RISK_FILE``) with
the changes stored in the database applied, and those changes (who, when, why). ``PUT /risk``
is ``aitrader risk set|unset``: the key and value are checked against the file first (422
naming the key), then the gateway applies the change to the next order, stores it
(``risk_overrides``) and audits it; the answer is ``KEY: old -> new``. A value of null goes
back to the file's value. Never rate-limited (lowering a limit is a safety action).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from backend import views
from backend.api.commands import COMMAND_RESPONSES, send_command
from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError
from backend.api.schemas import RiskChange, RiskChangeResult, RiskLimits
from common.config import ConfigError, load

router = APIRouter(prefix="/risk", tags=["risk"])
Ctx = Annotated[ApiContext, Depends(context)]


@lru_cache(maxsize=1)
def _risk_file() -> Path:
    from execution.config import ExecutionSettings

    return Path(load(ExecutionSettings).risk_file)


def _base() -> Any:
    from execution.risk import RiskConfig

    try:
        return RiskConfig.load(_risk_file())
    except ConfigError as e:
        raise ApiError(503, f"the risk file cannot be read: {str(e).splitlines()[0][:300]}") from e


@router.get("", response_model=RiskLimits, summary="The pre-trade limits in force, and the changes made (viewer)")
def risk_limits(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx) -> dict[str, Any]:
    try:
        return views.risk_limits(_risk_file(), ctx.engine)
    except ConfigError as e:  # the file, or a change stored in the database, is not valid
        raise ApiError(503, f"the risk limits cannot be read: {str(e).splitlines()[0][:300]}") from e


@router.put("", response_model=RiskChangeResult, responses=COMMAND_RESPONSES,
            summary="Change one limit now, or (value null) go back to the file's value (admin only)")
def change_limit(body: RiskChange, caller: Annotated[Caller, Depends(require("admin"))], ctx: Ctx) -> RiskChangeResult:
    try:
        _base().with_override(body.key, body.value)  # the gateway checks again against its own file
    except ConfigError as e:
        raise ApiError(422, str(e).splitlines()[0][:300], code="validation_error", details={"key": body.key}) from e
    command = "risk.set" if body.value is not None else "risk.unset"
    args = {"key": body.key} | ({"value": body.value} if body.value is not None else {})
    ack, via, request_id = send_command(ctx, caller, command, reason=body.reason, args=args,
                                        entity="risk_limit", entity_id=body.key)
    return RiskChangeResult(ok=True, key=body.key, detail=ack.detail, via=via,  # type: ignore[arg-type]
                            request_id=request_id)
