"""``/models``: the model registry's versions (viewer), promote and retire (admin only: it changes what trades).

The same object as ``aitrader model list|show|promote|retire`` (``pattern_engine.ml.registry``);
the actor is ``api:<username>`` and every change is an ``audit_log`` row (``model.promote``,
``model.demote``, ``model.retire``). ``POST /models`` uploads a model file (admin): ``.onnx``
always, ``.pkl`` / ``.joblib`` / ``.pt`` / ``.pth`` only with ``AITRADER_API_ALLOW_PICKLE_UPLOADS``
(loading them runs code from the file); it is converted like ``aitrader model import``,
registered (checked by running it) and, with ``promote``, promoted. 404 for an unknown name or
version, 409 for a change the version's state does not allow (promoting a retired version),
413 for a file over ``AITRADER_API_MODEL_UPLOAD_MAX_MB``, 422 for a file that is not a usable model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError, database_error
from backend.api.schemas import Reason, _Strict
from pattern_engine.ml.registry import (
    InvalidModel,
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    StateConflict,
)

router = APIRouter(prefix="/models", tags=["models"])
T = TypeVar("T")

Ctx = Annotated[ApiContext, Depends(context)]
MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"  # ModelMetadata.name
State = Literal["registered", "promoted", "retired", "deleted"]
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
    except InvalidModel as e:
        raise ApiError(422, str(e)[:500]) from e
    except RegistryError as e:
        raise ApiError(409, str(e)[:500]) from e
    except SQLAlchemyError as e:
        raise database_error(e) from e


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
    fn = {"promote": reg.promote, "retire": reg.retire, "delete": reg.delete}[what]
    t = _call(lambda: fn(name, version, caller.actor, reason))
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


@router.delete("/{name}/{version}", response_model=ModelChangeResult, responses=_CHANGE_RESPONSES,
               summary="Delete this version's stored files; the row stays (state deleted, the number never reused). "
                       "Not the promoted version: 409 (admin only)")
def delete_model(caller: Annotated[Caller, Depends(require("admin"))], ctx: Ctx, name: Name, version: Version,
                 reason: Annotated[str, Query(min_length=1, max_length=500, description="why (audited)")]
                 ) -> dict[str, Any]:
    if not reason.strip():
        raise ApiError(422, "a reason is required (every delete is audited)", code="validation_error")
    return _change(ctx, caller, "delete", name, version, reason)


_UPLOAD_SUFFIXES = {".onnx": False, ".pkl": True, ".pickle": True, ".joblib": True, ".pt": True, ".pth": True}
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "not admin, or a pickled model while AITRADER_API_ALLOW_PICKLE_UPLOADS is off"},
    413: {"description": "the file is larger than AITRADER_API_MODEL_UPLOAD_MAX_MB"},
    422: {"description": "not a usable model: the message says why"},
}


class UploadResult(BaseModel):
    model: ModelOut
    promoted: bool


@router.post("", response_model=UploadResult, status_code=201, responses=_UPLOAD_RESPONSES,
             summary="Upload a model file: convert, register (and promote) it (admin only)")
def upload_model(
    caller: Annotated[Caller, Depends(require("admin"))],
    ctx: Ctx,
    file: Annotated[UploadFile, File(description=".onnx (or .pkl/.joblib/.pt/.pth when allowed)")],
    name: Annotated[str, Form(pattern=MODEL_NAME_PATTERN, max_length=64)],
    features: Annotated[str, Form(min_length=1, max_length=4096,
                                  description="comma-separated engine feature names, in input-column order")],
    reason: Annotated[str, Form(min_length=1, max_length=2000)],
    classes: Annotated[str | None, Form(pattern=r"^-?[01](,-?[01]){1,2}$",
                                        description="label of each output column, e.g. -1,0,1")] = None,
    outputs: Annotated[Literal["probabilities", "logits"], Form()] = "probabilities",
    threshold: Annotated[float, Form(gt=0, le=1)] = 0.6,
    promote: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    from pattern_engine.ml.convert import ModelImportError, import_model
    from pattern_engine.ml.dataset import DatasetError
    from pattern_engine.ml.metadata import BundleError

    suffix = FsPath(file.filename or "").suffix.lower()
    if suffix not in _UPLOAD_SUFFIXES:
        raise ApiError(422, f"unsupported model file {file.filename!r}: .onnx, .pkl, .joblib, .pt or .pth")
    if _UPLOAD_SUFFIXES[suffix] and not ctx.settings.allow_pickle_uploads:
        raise ApiError(403, f"{suffix} files run code when loaded; uploads of them are off "
                            "(AITRADER_API_ALLOW_PICKLE_UPLOADS); upload the model as .onnx or use `aitrader model import`")
    limit = ctx.settings.model_upload_max_mb << 20
    actor = caller.actor
    with tempfile.TemporaryDirectory(prefix="aitrader-upload-") as tmp:
        src = FsPath(tmp) / f"upload{suffix}"
        size = 0
        with open(src, "wb") as f:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"model file larger than {ctx.settings.model_upload_max_mb} MiB")
                f.write(chunk)
        try:
            from common.config import load
            from pattern_engine.config import PatternEngineSettings
            from pattern_engine.pattern_config import load_pattern_config

            params = load_pattern_config(load(PatternEngineSettings).config).features
            bundle = import_model(
                src, FsPath(tmp) / "bundle", name=name, features=[x.strip() for x in features.split(",")],
                classes=[int(c) for c in classes.split(",")] if classes else None, outputs=outputs,
                threshold=threshold, feature_params=params.recorded(),
            )
        except (ModelImportError, DatasetError, BundleError, ValueError) as e:
            raise ApiError(422, str(e).replace(str(src), file.filename or "upload")[:500]) from e
        reg = _registry(ctx)
        rec = _call(lambda: reg.register(bundle, actor, reason))
        if promote:
            rec = _call(lambda: reg.promote(rec.name, rec.version, actor, reason)).record
    return {"model": rec.as_dict(metadata=False), "promoted": promote}
