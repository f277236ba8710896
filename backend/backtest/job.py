"""The ``backtest`` job type (registered with the job system: ``backend/jobs``) and parameter sweeps.

A payload is ``{"files": [...], "synthetic": N, "symbols": N, "seed": S, "max_ticks": N,
"config": {AITRADER_* name: value}, "label": "..."}``: ``files`` or ``synthetic``; ``config``
as a backtest config file holds (``backend.backtest.config``). ``run_backtest_job`` runs it,
writes the ``backtests`` row and Parquet files and returns the row id and metrics.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from backend.backtest.config import config_digest, load_settings
from backend.backtest.results import compute_metrics, create_row, finish_row, write_parquet
from backend.backtest.runner import run_backtest
from backend.jobs.registry import Payload, register_job_type
from common.config import ConfigError
from common.db import make_engine

if TYPE_CHECKING:
    from backend.jobs.runner import JobContext

__all__ = ["JOB_TYPE", "MAX_SWEEP_POINTS", "BacktestPayload", "run_and_store", "run_backtest_job", "sweep_payloads"]

JOB_TYPE = "backtest"
_KEYS = {"files", "synthetic", "symbols", "seed", "max_ticks", "format", "config", "label"}


def _check(payload: Mapping[str, Any]) -> None:
    unknown = set(payload) - _KEYS
    if unknown:
        raise ConfigError(f"backtest payload: unknown key {min(unknown)!r} (known: {sorted(_KEYS)})")
    files = payload.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ConfigError("backtest payload: files must be a list of paths")
    if not files and not int(payload.get("synthetic") or 0):
        raise ConfigError("backtest payload: give files or synthetic > 0")
    if not isinstance(payload.get("config") or {}, dict):
        raise ConfigError("backtest payload: config must be a mapping of AITRADER_* names to values")


def run_and_store(payload: Mapping[str, Any], progress: Callable[[int, int | None], None] | None = None, *,
                  created_by: str = "job", job_id: int | None = None) -> dict[str, Any]:
    """Run one backtest and record it; ``{"backtest_id", "metrics", "equity_path", "trades_path"}``."""
    _check(payload)
    files = list(payload.get("files") or [])
    overrides = dict(payload.get("config") or {})
    s = load_settings(overrides)  # a bad setting fails here, before the row exists
    engine = make_engine(s.common.db_url)
    try:
        row_id = create_row(engine, files=files or [f"synthetic:{payload.get('synthetic')}"], config=payload,
                            digest=config_digest(overrides, files), label=str(payload.get("label") or ""),
                            created_by=created_by, job_id=job_id)
        try:
            res = run_backtest(files or None, synthetic=int(payload.get("synthetic") or 0),
                               symbols=int(payload.get("symbols") or 4), seed=int(payload.get("seed") or 7),
                               fmt=payload.get("format"), max_ticks=payload.get("max_ticks"), overrides=overrides,
                               progress=progress)
            metrics = compute_metrics(res, s.backtest.sample_s)
            paths = write_parquet(res, s.common.home.resolve() / "backtests" / str(row_id))
        except BaseException as e:
            finish_row(engine, row_id, error=f"{type(e).__name__}: {e}", cancelled=type(e).__name__ == "JobCancelled")
            raise
        finish_row(engine, row_id, metrics=metrics, paths=paths, res=res)
    finally:
        engine.dispose()
    return {"backtest_id": row_id, "metrics": metrics, "equity_path": str(paths[0]), "trades_path": str(paths[1])}


def run_backtest_job(payload: dict, progress: Callable[[float, str], None]) -> dict:
    """The job system's entry for type ``backtest``: progress as (fraction, note)."""

    def report(done: int, total: int | None) -> None:
        progress(min(done / total, 1.0) if total else 0.0, f"{done} ticks" + (f" of {total}" if total else ""))

    return run_and_store(payload, report)


def sweep_payloads(base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """One payload per point of ``grid`` (setting name -> values; the Cartesian product), each the
    base payload with those settings over its ``config`` and a label naming the point."""
    if not grid:
        return [dict(base)]
    names = sorted(grid)
    out = []
    for values in itertools.product(*(list(grid[n]) for n in names)):
        point = dict(zip(names, values))
        label = " ".join(f"{n}={v}" for n, v in point.items())
        out.append({**base, "config": {**dict(base.get("config") or {}), **point},
                    "label": f"{base.get('label', '')} {label}".strip()[:128]})
    return out


MAX_SWEEP_POINTS = 256  # one job each: a bigger grid is a mistake more often than a plan
_Path = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00]+$")]
_Setting = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,127}$")]
_Value = str | int | float | bool


class BacktestPayload(Payload):
    """A backtest job: ``files`` (tick files on the worker's machine) or ``synthetic`` ticks, and settings."""

    files: list[_Path] = Field(default_factory=list, max_length=1000, description="tick files on the worker")
    synthetic: int = Field(0, ge=0, le=100_000_000, description="synthetic ticks instead of files")
    symbols: int = Field(4, ge=1, le=1000, description="synthetic symbols")
    seed: int = Field(7, ge=0, le=2**32 - 1, description="synthetic seed")
    max_ticks: int | None = Field(None, ge=1, le=10**10, description="stop after this many ticks")
    format: str | None = Field(None, max_length=64, description="the files' format (default: from the name)")
    config: dict[_Setting, _Value] = Field(default_factory=dict, max_length=200,
                                          description="AITRADER_* setting name -> value (docs/configuration.md)")
    label: str = Field("", max_length=128)

    @model_validator(mode="after")
    def _source(self) -> BacktestPayload:
        if bool(self.files) == bool(self.synthetic):
            raise ValueError("give files or synthetic > 0 (one of them)")
        return self


def _run_job(p: BacktestPayload, ctx: JobContext) -> dict[str, Any]:
    """The worker's entry: progress on the row at most every 0.5 s (each a cancel check point)."""
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and not (total and done >= total):
            return
        last[0] = now
        ctx.progress(min(done / total, 1.0) if total else 0.0, f"{done:,} ticks" + (f" of {total:,}" if total else ""))

    return run_and_store(p.model_dump(mode="json", exclude_none=True), report, created_by=ctx.actor,
                         job_id=ctx.job_id)


register_job_type(JOB_TYPE, _run_job, payload=BacktestPayload, role="trader")
