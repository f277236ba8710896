"""The ``suggestion`` job: prompt → account context (MCP) + recent signals → LLM → validated suggestions.

``SuggestionService`` is the one object the CLI (``aitrader suggest``) and the API
(``POST /suggestions``) call. ``create`` writes a ``jobs`` row (queued) and its
``suggestions`` row; ``execute`` runs it in this process (running → completed | failed) and
``suggest`` does both: the caller waits for the run. On the task queue (``backend.jobs``, job
type ``suggestion``) the worker owns the job row and calls ``create_run`` and ``produce``.

The answer is parsed and validated whole (``schema.parse_answer``); an invalid one is sent
back to the provider once with the validation error, and a second invalid answer fails the
job. Nothing here can place an order: the broker is read through ``ReadOnlyBroker`` and
nothing is published to the bus.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from common.db import Job, SuggestionRun, session_factory
from strategy_engine.config import StrategySettings
from strategy_engine.mcp_client import BrokerClientError
from strategy_engine.suggestions.config import LlmSettings
from strategy_engine.suggestions.context import ReadOnlyBroker, build_context, digest
from strategy_engine.suggestions.llm import ChatRequest, LlmError, LLMProvider, make_provider
from strategy_engine.suggestions.schema import AnswerInvalid, SuggestionSet, parse_answer, schema_text

__all__ = ["JOB_KIND", "MAX_PROMPT_CHARS", "SuggestionFailed", "SuggestionService", "system_prompt"]

log = logging.getLogger(__name__)

JOB_KIND = "suggestion"
MAX_PROMPT_CHARS = 2000


class SuggestionFailed(Exception):
    """The run could not produce valid suggestions; the message says why (also the job's ``error``)."""

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts  # answers the provider gave


def system_prompt(max_suggestions: int) -> str:
    return (
        "You are a careful portfolio assistant for one brokerage account. You give advice only: you cannot "
        "place, change or cancel orders, and nobody acts on your answer automatically. Base every suggestion "
        "on the context (the account as the broker reports it and a summary of recent trading signals); say "
        "in each rationale which figures support it. " + schema_text(max_suggestions)
    )


def user_message(prompt: str, context: dict[str, Any]) -> str:
    return f"Request: {prompt}\n\nContext (JSON):\n{json.dumps(context, separators=(',', ':'))}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Outcome:
    answer: SuggestionSet
    model: str
    attempts: int


async def ask(provider: LLMProvider, prompt: str, context: dict[str, Any], max_suggestions: int) -> Outcome:
    """The provider's validated answer; one retry with the validation error, then ``SuggestionFailed``."""
    messages = [{"role": "system", "content": system_prompt(max_suggestions)},
                {"role": "user", "content": user_message(prompt, context)}]
    for attempt in (1, 2):
        try:
            answer = await provider.complete(ChatRequest(list(messages), context, prompt, max_suggestions))
        except LlmError as e:
            raise SuggestionFailed(f"{provider.name} provider: {e}", attempt - 1) from e
        try:
            return Outcome(parse_answer(answer.text, context, max_suggestions), answer.model, attempt)
        except AnswerInvalid as e:
            if attempt == 2:
                raise SuggestionFailed(f"the {provider.name} answer was invalid twice; last: {e}", 2) from e
            log.warning("suggestion: the %s answer was invalid (%s); asking once more", provider.name, e)
            messages += [
                {"role": "assistant", "content": answer.text[:8000]},
                {"role": "user", "content": f"Your answer was rejected: {e}. Answer again with only the JSON "
                                            "object, following every rule."},
            ]
    raise AssertionError("unreachable")


def check_prompt(prompt: str) -> str:
    """The prompt stripped; ``ValueError`` when empty, too long or holding control characters / NUL."""
    p = prompt.strip()
    if not p:
        raise ValueError("the prompt is empty")
    if len(p) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt has {len(p)} characters; at most {MAX_PROMPT_CHARS}")
    if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in p):
        raise ValueError("the prompt holds control characters")
    return p


class SuggestionService:
    """Creates, runs and reads suggestion runs (the CLI and the API share it)."""

    def __init__(
        self,
        engine: Engine,
        llm: LlmSettings,
        broker: StrategySettings,
        redis_url: str,
        *,
        provider_factory: Callable[[LlmSettings, str | None], LLMProvider] = make_provider,
    ) -> None:
        self.engine = engine
        self.llm = llm
        self.broker_settings = broker
        self.redis_url = redis_url
        self._sessions = session_factory(engine)
        self._provider_factory = provider_factory

    def provider(self, name: str | None = None) -> LLMProvider:
        """The provider ``name`` (default: configured); ``ConfigError`` naming the missing key."""
        return self._provider_factory(self.llm, name)

    def _broker(self) -> ReadOnlyBroker:
        from common.config import CommonSettings, load
        from strategy_engine.mcp_client import client_from_settings

        # the strategy engine's MCP settings, its login included (tokens shared through the encrypted store)
        return ReadOnlyBroker(client_from_settings(self.broker_settings, load(CommonSettings), "aitrader-suggestions"))

    # -- records -----------------------------------------------------------------------------
    def create(self, prompt: str, provider: LLMProvider, actor: str) -> int:
        """A queued job and its run row; the run's id."""
        with self._sessions.begin() as s:
            job = Job(kind=JOB_KIND, status="queued", created_by=actor[:64], error="")
            s.add(job)
            s.flush()
            return _new_run(s, job.id, prompt, provider, actor)

    def create_run(self, job_id: int, prompt: str, provider: LLMProvider, actor: str) -> int:
        """The run row of the existing job ``job_id`` (one queued by ``backend.jobs``); the run's id."""
        with self._sessions.begin() as s:
            return _new_run(s, job_id, prompt, provider, actor)

    def _update(self, run_id: int, job: dict[str, Any], run: dict[str, Any] | None = None) -> None:
        with self._sessions.begin() as s:
            r = s.get(SuggestionRun, run_id)
            if r is None:
                raise KeyError(run_id)
            if job:
                s.execute(sa.update(Job).where(Job.id == r.job_id).values(**job))
            if run:
                s.execute(sa.update(SuggestionRun).where(SuggestionRun.id == run_id).values(**run))

    def get(self, run_id: int, *, context: bool = True) -> dict[str, Any] | None:
        with self._sessions() as s:
            row = s.execute(sa.select(SuggestionRun, Job).join(Job, Job.id == SuggestionRun.job_id)
                            .where(SuggestionRun.id == run_id)).first()
            return None if row is None else _as_dict(row[0], row[1], context)

    def list(self, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(SuggestionRun, Job).join(Job, Job.id == SuggestionRun.job_id)
        if status:
            q = q.where(Job.status == status)
        with self._sessions() as s:
            rows = s.execute(q.order_by(SuggestionRun.id.desc()).limit(limit)).all()
            return [_as_dict(r, j, False) for r, j in rows]

    # -- running -----------------------------------------------------------------------------
    async def produce(self, run_id: int, prompt: str, provider: LLMProvider,
                      step: Callable[[str], None] = lambda _what: None) -> dict[str, Any]:
        """Build the context, ask the provider and store both on the run row (the job row is the caller's);
        the validated answer. ``SuggestionFailed`` when no valid answer came (its attempts are stored).
        ``step`` is told before each stage."""
        step("reading the account and the recent signals")
        try:
            ctx = await build_context(self._broker(), self.redis_url, self.llm.max_signals)
        except BrokerClientError as e:
            raise SuggestionFailed(f"account context unavailable: {e}") from e
        await asyncio.to_thread(self._update, run_id, {}, {"context": ctx, "context_digest": digest(ctx)})
        step(f"asking the {provider.name} provider")
        try:
            out = await ask(provider, prompt, ctx, self.llm.max_suggestions)
        except SuggestionFailed as e:
            await asyncio.to_thread(self._update, run_id, {}, {"attempts": e.attempts})
            raise
        data = out.answer.model_dump(mode="json")
        await asyncio.to_thread(
            self._update, run_id, {}, {"summary": data["summary"], "suggestions": data["suggestions"],
                                       "attempts": out.attempts, "model": out.model[:128]})
        return data

    async def execute(self, run_id: int, prompt: str, provider: LLMProvider) -> dict[str, Any]:
        """Run the job ``run_id`` in this process: the record when it ends, completed or failed (errors are in
        the record)."""
        await asyncio.to_thread(self._update, run_id, {"status": "running", "started_at": _now()})
        try:
            await self.produce(run_id, prompt, provider)
        except SuggestionFailed as e:
            log.warning("suggestion %d failed: %s", run_id, e)
            await asyncio.to_thread(self._update, run_id, {"status": "failed", "finished_at": _now(),
                                                           "error": str(e)[:4000]})
        except BaseException as e:  # a crash or a cancel: the record must not stay "running"
            await asyncio.shield(asyncio.to_thread(
                self._update, run_id, {"status": "failed", "finished_at": _now(),
                                       "error": f"interrupted: {type(e).__name__}: {str(e)[:500]}"}))
            raise
        else:
            await asyncio.to_thread(self._update, run_id, {"status": "completed", "finished_at": _now()})
        got = await asyncio.to_thread(self.get, run_id)
        assert got is not None
        return got

    async def suggest(self, prompt: str, actor: str, provider: str | None = None) -> dict[str, Any]:
        """Create and run one job; its record. ``ValueError`` for a bad prompt, ``ConfigError`` for a provider
        that is not configured (nothing is written then)."""
        prompt = check_prompt(prompt)
        p = self.provider(provider)
        run_id = await asyncio.to_thread(self.create, prompt, p, actor)
        return await self.execute(run_id, prompt, p)


def _new_run(s: Any, job_id: int, prompt: str, provider: LLMProvider, actor: str) -> int:
    run = SuggestionRun(job_id=job_id, prompt=prompt, provider=provider.name, model=provider.model[:128],
                        context_digest="", summary="", attempts=0, created_by=actor[:64])
    s.add(run)
    s.flush()
    return run.id


def _utc(t: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; every time here is written in UTC
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _as_dict(r: SuggestionRun, j: Job, context: bool) -> dict[str, Any]:
    out = {
        "id": r.id, "job_id": j.id, "status": j.status, "error": j.error, "prompt": r.prompt,
        "provider": r.provider, "model": r.model, "context_digest": r.context_digest, "summary": r.summary,
        "suggestions": r.suggestions or [], "attempts": r.attempts, "created_at": _utc(r.created_at),
        "created_by": r.created_by, "started_at": _utc(j.started_at), "finished_at": _utc(j.finished_at),
    }
    if context:
        out["context"] = r.context
    return out
