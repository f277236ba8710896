"""``/suggestions``: run the suggestion job (trader: it may call a paid LLM) and read the runs (viewer).

The same object as ``aitrader suggest`` (``strategy_engine.suggestions.job.SuggestionService``).
Advice only: nothing here places an order. ``POST`` runs the job in this process and answers
201 with the stored run once it has ended, ``done`` or ``failed`` (the reason in ``error``:
broker unreachable, provider down, an answer invalid twice); 409 when the provider asked for
is not configured, 429 past the per-user limit. Every viewer sees every run (one account).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from backend.api.deps import ApiContext, Caller, context, require
from backend.api.errors import ApiError, database_error
from backend.api.ratelimit import SlidingWindowLimiter
from backend.api.schemas import _Strict
from common.config import ConfigError, load
from strategy_engine.config import StrategySettings
from strategy_engine.suggestions.config import LlmSettings
from strategy_engine.suggestions.job import MAX_PROMPT_CHARS, SuggestionService, check_prompt

__all__ = ["SuggestionsState", "install", "router"]

router = APIRouter(prefix="/suggestions", tags=["suggestions"])
T = TypeVar("T")

Ctx = Annotated[ApiContext, Depends(context)]
Status = Literal["queued", "running", "completed", "failed", "cancelled"]
RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the run's id")]


@dataclass(frozen=True, slots=True)
class SuggestionsState:
    service: SuggestionService
    limiter: SlidingWindowLimiter


def install(app: FastAPI, ctx: ApiContext, llm: LlmSettings | None = None,
            broker: StrategySettings | None = None) -> None:
    """Build the service the routes use (settings from the environment when not given; ``ConfigError``)."""
    llm = llm if llm is not None else load(LlmSettings)
    broker = broker if broker is not None else load(StrategySettings)
    s = ctx.settings
    app.state.suggestions = SuggestionsState(
        SuggestionService(ctx.engine, llm, broker, ctx.common.redis_url),
        SlidingWindowLimiter(s.suggest_rate_limit, s.suggest_rate_window_s),
    )


def _state(request: Request) -> SuggestionsState:
    return request.app.state.suggestions


State = Annotated[SuggestionsState, Depends(_state)]


def _prompt(v: str) -> str:
    return check_prompt(v)


Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS), AfterValidator(_prompt)]


class SuggestionRequest(_Strict):
    prompt: Prompt = Field(description='What to look at, e.g. "scan my portfolio" (sent to the provider).')
    provider: Literal["offline", "openai"] | None = Field(
        None, description="offline (rules, no cost) or openai (AITRADER_LLM_URL); default AITRADER_LLM_PROVIDER"
    )


class SuggestionOut(BaseModel):
    symbol: str
    action: Literal["buy", "sell", "hold", "reduce", "close"]
    size: str = Field(description="exact decimal, in size_unit")
    size_unit: Literal["quantity", "position_fraction", "equity_fraction"] = Field(
        description="quantity of the symbol; fraction (0..1) of the current position; fraction (0..1) of equity"
    )
    rationale: str
    confidence: float = Field(ge=0, le=1)


class SuggestionRunOut(BaseModel):
    id: int
    job_id: int
    status: Status
    error: str = Field(description="why the run failed (empty otherwise)")
    prompt: str
    provider: str
    model: str
    context_digest: str = Field(description="SHA-256 of the context sent to the provider (empty if none was built)")
    summary: str
    suggestions: list[SuggestionOut]
    attempts: int = Field(description="answers the provider gave (2: the first was invalid and sent back)")
    created_at: datetime | None
    created_by: str
    started_at: datetime | None
    finished_at: datetime | None


class SuggestionRunDetail(SuggestionRunOut):
    context: dict[str, Any] | None = Field(description="the account and signal summary the provider was given")


def _db(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except SQLAlchemyError as e:
        raise database_error(e) from e


@router.post("", response_model=SuggestionRunOut, status_code=201,
             responses={409: {"description": "the provider asked for is not configured"},
                        429: {"description": "too many runs by this user; see Retry-After"}},
             summary="Run the suggestion job now and return the run, done or failed (trader; advice only)")
async def create_suggestion(body: SuggestionRequest, caller: Annotated[Caller, Depends(require("trader"))],
                            state: State) -> dict[str, Any]:
    wait = state.limiter.hit(caller.username)
    if wait:
        retry = state.limiter.retry_after(wait)
        raise ApiError(429, f"too many suggestion runs; retry in {retry} s", headers={"Retry-After": retry},
                       details={"retry_after_s": int(retry)})
    try:
        rec = await state.service.suggest(body.prompt, caller.actor, body.provider)
    except ConfigError as e:
        raise ApiError(409, str(e), code="provider_not_configured") from e
    except SQLAlchemyError as e:
        raise database_error(e) from e
    rec.pop("context", None)
    return rec


@router.get("", response_model=list[SuggestionRunOut], summary="Suggestion runs, newest first (viewer)")
def list_suggestions(
    _caller: Annotated[Caller, Depends(require("viewer"))],
    state: State,
    status: Annotated[Status | None, Query(description="only runs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many runs")] = 50,
) -> list[dict[str, Any]]:
    return _db(lambda: state.service.list(limit=limit, status=status))


@router.get("/{run_id}", response_model=SuggestionRunDetail, responses={404: {"description": "no such run"}},
            summary="One suggestion run with the context it was made from (viewer)")
def get_suggestion(_caller: Annotated[Caller, Depends(require("viewer"))], state: State,
                   run_id: RunId) -> dict[str, Any]:
    rec = _db(lambda: state.service.get(run_id))
    if rec is None:
        raise ApiError(404, f"no suggestion run {run_id}")
    return rec
