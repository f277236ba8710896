"""The shipped job types: ``suggestion`` (trader) and ``train`` (admin: its bundle may be promoted).

Each calls the same code as its command: ``aitrader suggest`` (``SuggestionService``) and
``aitrader model train`` (``backend.model_cli.research.train_bundle``). Settings (the LLM
provider, the broker, the model store) are the worker's environment.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from backend.jobs.registry import Payload, register_job_type
from backend.jobs.runner import JobContext, JobFailed
from strategy_engine.suggestions.job import MAX_PROMPT_CHARS, check_prompt

__all__ = ["SuggestionPayload", "TrainPayload", "run_suggestion", "run_train"]

_U32 = 2**32 - 1
MODEL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"  # ModelMetadata.name
_Path = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00]+$")]


class SuggestionPayload(Payload):
    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS), AfterValidator(check_prompt)]
    provider: Literal["offline", "openai"] | None = Field(None, description="default AITRADER_LLM_PROVIDER")


def run_suggestion(p: SuggestionPayload, ctx: JobContext) -> dict[str, Any]:
    from common.config import CommonSettings, ConfigError, load
    from strategy_engine.config import StrategySettings
    from strategy_engine.suggestions.config import LlmSettings
    from strategy_engine.suggestions.job import SuggestionFailed, SuggestionService

    try:
        svc = SuggestionService(ctx.engine, load(LlmSettings), load(StrategySettings), load(CommonSettings).redis_url)
        provider = svc.provider(p.provider)
    except ConfigError as e:
        raise JobFailed(f"configuration error on the worker: {e}") from e
    run_id = svc.create_run(ctx.job_id, p.prompt, provider, ctx.actor)
    steps = iter((0.1, 0.5))

    def step(what: str) -> None:
        ctx.progress(next(steps, 0.9), what)

    try:
        data = asyncio.run(svc.produce(run_id, p.prompt, provider, step))
    except SuggestionFailed as e:
        raise JobFailed(str(e)) from e
    return {"run_id": run_id, "provider": provider.name, "summary": data["summary"],
            "suggestions": len(data["suggestions"])}


class TrainPayload(Payload):
    """``aitrader model train``'s options; paths are on the worker's machine."""

    data: list[_Path] = Field(default_factory=list, max_length=1000, description="tick files (any format)")
    synthetic: int | None = Field(None, ge=1, le=100_000_000, description="N synthetic ticks instead of files")
    symbols: int = Field(4, ge=1, le=1000)
    synthetic_seed: int = Field(101, ge=0, le=_U32)
    format: str | None = Field(None, max_length=64)
    horizon: int = Field(ge=1, le=1_000_000, description="label horizon in price events")
    flat_bps: float | None = Field(None, ge=0, le=10_000, allow_inf_nan=False)
    model: Literal["mlp", "gbm"] = "mlp"
    features: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(None, min_length=1,
                                                                                      max_length=256)
    name: str | None = Field(None, pattern=MODEL_NAME_PATTERN)
    threshold: float = Field(0.5, gt=0, le=1)
    max_rows: int | None = Field(None, ge=1, le=1_000_000_000)
    seed: int = Field(0, ge=0, le=_U32)
    out: _Path = Field(description="bundle directory to write")
    add_to_registry: bool = Field(False, description="also register the bundle in the model registry")
    promote: bool = Field(False, description="register and promote (engines following the name swap to it)")
    reason: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _source(self) -> TrainPayload:
        if bool(self.data) == (self.synthetic is not None):
            raise ValueError("give tick files (data) or a number of synthetic ticks (synthetic), not both or neither")
        return self


def run_train(p: TrainPayload, ctx: JobContext) -> dict[str, Any]:
    from backend.model_cli.research import TrainSpec, register_bundle, train_bundle, train_errors
    from common.config import CommonSettings, load
    from pattern_engine.ml.registry import RegistryError

    spec = TrainSpec(out=p.out, horizon=p.horizon, data=tuple(p.data), synthetic=p.synthetic, symbols=p.symbols,
                     synthetic_seed=p.synthetic_seed, format=p.format, flat_bps=p.flat_bps, model=p.model,
                     features=tuple(p.features) if p.features else None, name=p.name, threshold=p.threshold,
                     max_rows=p.max_rows, seed=p.seed)
    progress = {"reading ticks": 0.05, "training": 0.5}
    try:
        result = train_bundle(spec, lambda what: ctx.progress(progress[what], what))
    except train_errors() as e:
        raise JobFailed(str(e)) from e
    meta = result.meta
    out: dict[str, Any] = {"bundle": str(result.bundle), "name": meta.name, "version": meta.version,
                           "kind": meta.kind, "seconds": round(result.seconds, 3), "summary": result.summary}
    if p.add_to_registry or p.promote:
        ctx.progress(0.9, "registering")
        try:
            rec, where = register_bundle(Path(p.out), load(CommonSettings), ctx.actor,
                                         p.reason or f"train job {ctx.job_id}", p.promote)
        except RegistryError as e:
            raise JobFailed(f"the bundle is at {p.out} but registering it failed: {e}") from e
        out |= {"registered": rec.ref, "store_path": str(where), "promoted": p.promote}
    return out


register_job_type("suggestion", run_suggestion, payload=SuggestionPayload, role="trader")
register_job_type("train", run_train, payload=TrainPayload, role="admin")
