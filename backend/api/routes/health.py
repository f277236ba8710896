"""``GET /health``: anonymous; 200 when the database answers, 503 (error shape) when it does not."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends

from backend.api.deps import ApiContext, context
from backend.api.errors import ApiError
from backend.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness and database reachability (anonymous)")
def health(ctx: Annotated[ApiContext, Depends(context)]) -> Health:
    try:
        with ctx.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as e:
        raise ApiError(503, "database unreachable", details={"error": str(e).splitlines()[0][:200]}) from e
    return Health(status="ok", database="ok")
