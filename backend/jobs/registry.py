"""Job types: a name, the function that runs it, the payload it accepts and the least role that may submit it.

A module registers its type at import time::

    register_job_type("backtest", run_backtest, payload=BacktestPayload, role="trader")

and is imported wherever jobs are submitted or run by ``load_job_types``: the built-in
modules (``BUILTIN_MODULES``) always, others named in ``AITRADER_JOBS_EXTRA_MODULES``.
``run(payload, ctx)`` gets the validated payload (an instance of ``payload``) and a
``JobContext`` (progress, cancel checks), and returns the job's result as a JSON-able dict.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from backend.jobs.runner import JobContext

__all__ = ["BUILTIN_MODULES", "JobType", "Payload", "PayloadInvalid", "UnknownJobType", "job_type", "job_types",
           "load_job_types", "register_job_type"]

# Modules that register the shipped job types.
BUILTIN_MODULES = ("backend.jobs.builtin", "backend.backtest.job")
ROLES = ("viewer", "trader", "admin")
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"


class Payload(BaseModel):
    """Base of a job type's payload: strict (an unknown field is an error), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UnknownJobType(KeyError):
    """No job type of that name is registered (here: in this process)."""

    def __str__(self) -> str:
        return f"unknown job type {self.args[0]!r} (known: {', '.join(sorted(_TYPES)) or 'none'})"


class PayloadInvalid(ValueError):
    """The payload does not fit its job type; the message says where and why."""


@dataclass(frozen=True, slots=True)
class JobType:
    name: str
    run: Callable[[Any, JobContext], dict[str, Any]]
    payload: type[BaseModel]
    role: str

    def validate(self, payload: dict[str, Any] | None) -> BaseModel:
        """The payload as this type's model; ``PayloadInvalid`` naming the first bad field."""
        try:
            return self.payload.model_validate(payload or {})
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "payload"
            raise PayloadInvalid(f"{self.name} payload: {where}: {err['msg']}") from e


_TYPES: dict[str, JobType] = {}


def register_job_type(name: str, run: Callable[[Any, JobContext], dict[str, Any]], *,
                      payload: type[BaseModel] = Payload, role: str = "trader") -> JobType:
    """Register (or, from the same function, re-register) the job type ``name``; ``ValueError`` for a bad
    name or role, or a name another function already holds."""
    if not re.match(NAME_PATTERN, name):
        raise ValueError(f"job type name {name!r} must match {NAME_PATTERN}")
    if role not in ROLES:
        raise ValueError(f"job type {name!r}: role must be one of {ROLES}, got {role!r}")
    old = _TYPES.get(name)
    if old is not None and (old.run.__module__, old.run.__qualname__) != (run.__module__, run.__qualname__):
        raise ValueError(f"job type {name!r} is already registered by {old.run.__module__}.{old.run.__qualname__}")
    jt = JobType(name, run, payload, role)
    _TYPES[name] = jt
    return jt


def job_type(name: str) -> JobType:
    try:
        return _TYPES[name]
    except KeyError:
        raise UnknownJobType(name) from None


def job_types() -> dict[str, JobType]:
    return dict(_TYPES)


def load_job_types(extra: Iterable[str] = ()) -> dict[str, JobType]:
    """Import the modules that register job types (built-in, then ``extra``); every type now known."""
    for mod in (*BUILTIN_MODULES, *extra):
        importlib.import_module(mod)
    return job_types()
