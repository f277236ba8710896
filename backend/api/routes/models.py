"""``/models``: the model registry's versions (viewer), promote and retire (admin only: it changes what trades).

The same object as ``aitrader model list|show|promote|retire`` (``pattern_engine.ml.registry``);
the actor is ``api:<username>`` and every change is an ``audit_log`` row (``model.promote``,
``model.demote``, ``model.retire``). Registering (uploading a bundle) is the CLI's only.
404 for an unknown name or version, 409 for a change the version's state does not allow
(promoting a retired version).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError
from backend.api.schemas import Reason, _Strict
from pattern_engine.ml.registry import ModelNotFound, ModelRegistry, RegistryError, StateConflict

router = APIRouter(prefix="/models", tags=["models"])
T = TypeVar("T")

Ctx = Annotated[ApiContext, Depends(context)]
MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"  # ModelMetadata.name
State = Literal["registered", "promoted", "retired"]
Name = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, max_length=64, description="the model's name")]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="the registry version (1, 2, 3 ...)")]
_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"description": "no such model name or version"}}
_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_RESPONSES, 409: {"description": "the version's state does not allow it (a retired version is never promoted)"},
}


class ModelOut(BaseModel):
    id: int
    name: str
    version: int = Field(description="1, 2, 3 ... per name")
    state: State
    path: str = Field(description="the bundle's folder, relative to the model store")
    onnx_sha256: str
    kind: str
    features: list[str]
    metrics: dict[str, Any]
    created_at: datetime | None
    created_by: str
    promoted_at: datetime | None = Field(description="when it was last promoted (kept after it is replaced)")
    promoted_by: str | None
    retired_at: datetime | None
    retired_by: str | None
    reason: str = Field(description="the reason of the last change of state")


class ModelDetail(ModelOut):
    metadata: dict[str, Any] = Field(description="the stored bundle's model.json")


class ModelChange(_Strict):
    reason: Reason


class ModelChangeResult(BaseModel):
    changed: bool = Field(description="false when the version was already in that state (nothing written)")
    previous_state: State
    model: ModelOut
    replaced: ModelOut | None = Field(description="promote: the version promoted before, now registered")


def _registry(ctx: ApiContext) -> ModelRegistry:
    return ModelRegistry(ctx.engine, ctx.common.model_store_dir)


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ModelNotFound as e:
        raise ApiError(404, str(e)[:500]) from e
    except StateConflict as e:
        raise ApiError(409, str(e)[:500]) from e
    except RegistryError as e:
        raise ApiError(409, str(e)[:500]) from e
    except SQLAlchemyError as e:
        raise ApiError(503, f"database error: {str(e).splitlines()[0][:200]}") from e


@router.get("", response_model=list[ModelOut], summary="Model versions, by name then version (viewer)")
def list_models(
    _caller: Annotated[Caller, Depends(require("viewer"))],
    ctx: Ctx,
    name: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN, max_length=64, description="only this name")] = None,
    state: Annotated[State | None, Query(description="only this state")] = None,
) -> list[dict[str, Any]]:
    return [r.as_dict(metadata=False) for r in _call(lambda: _registry(ctx).list(name=name, state=state))]


@router.get("/{name}/{version}", response_model=ModelDetail, responses=_RESPONSES,
            summary="One model version with its full metadata (viewer)")
def get_model(_caller: Annotated[Caller, Depends(require("viewer"))], ctx: Ctx, name: Name,
              version: Version) -> dict[str, Any]:
    return _call(lambda: _registry(ctx).get(name, version)).as_dict()


def _change(ctx: ApiContext, caller: Caller, what: str, name: str, version: int, reason: str) -> dict[str, Any]:
    reg = _registry(ctx)
    fn = reg.promote if what == "promote" else reg.retire
    t = _call(lambda: fn(name, version, f"api:{caller.username}"[:64], reason))
    return {"changed": t.changed, "previous_state": t.previous_state, "model": t.record.as_dict(metadata=False),
            "replaced": t.replaced.as_dict(metadata=False) if t.replaced else None}


@router.post("/{name}/{version}/promote", response_model=ModelChangeResult, responses=_CHANGE_RESPONSES,
             summary="Make this version the one the engine runs for its name (admin only)")
def promote_model(body: ModelChange, caller: Annotated[Caller, Depends(require("admin"))], ctx: Ctx, name: Name,
                  version: Version) -> dict[str, Any]:
    return _change(ctx, caller, "promote", name, version, body.reason)


@router.post("/{name}/{version}/retire", response_model=ModelChangeResult, responses=_CHANGE_RESPONSES,
             summary="Retire this version; a retired promoted version leaves its name with none (admin only)")
def retire_model(body: ModelChange, caller: Annotated[Caller, Depends(require("admin"))], ctx: Ctx, name: Name,
                 version: Version) -> dict[str, Any]:
    return _change(ctx, caller, "retire", name, version, body.reason)
