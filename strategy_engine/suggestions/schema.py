"""What a suggestion run returns: a validated ``SuggestionSet``, checked against the context it was made from.

An answer is accepted whole or not at all: ``parse_answer`` raises ``AnswerInvalid`` (with a
message fit to send back to the model) when the text is not one JSON object of the schema,
or when a suggestion names a symbol the context does not hold, reduces or closes a position
that does not exist, or repeats a symbol.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ACTIONS", "SIZE_UNITS", "AnswerInvalid", "Suggestion", "SuggestionSet", "parse_answer", "schema_text"]

ACTIONS = ("buy", "sell", "hold", "reduce", "close")
SIZE_UNITS = ("quantity", "position_fraction", "equity_fraction")
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:\-]{0,63}$"
_FENCE = re.compile(r"^```[A-Za-z]*\s*\n?(.*?)\n?```$", re.DOTALL)


class AnswerInvalid(ValueError):
    """The provider's answer is not a valid suggestion set; the message says why (sent back on the retry)."""


class Suggestion(BaseModel):
    """One piece of advice. ``size`` is in ``size_unit``: a quantity of the symbol, a fraction (0..1) of the
    current position (reduce / close), or a fraction (0..1) of account equity as notional (buy / sell)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str = Field(pattern=SYMBOL_PATTERN, max_length=64)
    action: Literal["buy", "sell", "hold", "reduce", "close"]
    size: Decimal = Field(ge=0, le=Decimal("1e15"), allow_inf_nan=False)
    size_unit: Literal["quantity", "position_fraction", "equity_fraction"]
    rationale: str = Field(min_length=1, max_length=1000)
    confidence: float = Field(ge=0, le=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _coherent(self) -> Suggestion:
        if self.size_unit != "quantity" and self.size > 1:
            raise ValueError(f"a {self.size_unit} is at most 1 (got {self.size})")
        if self.action == "hold" and self.size != 0:
            raise ValueError("hold has size 0")
        if self.action == "close" and (self.size_unit, self.size) != ("position_fraction", 1):
            raise ValueError("close is size 1 in position_fraction (the whole position)")
        if self.action in ("buy", "sell", "reduce") and self.size <= 0:
            raise ValueError(f"{self.action} needs a size above 0")
        if self.action in ("buy", "sell") and self.size_unit == "position_fraction":
            raise ValueError(f"{self.action} is sized in quantity or equity_fraction")
        if self.action == "reduce" and self.size_unit == "equity_fraction":
            raise ValueError("reduce is sized in quantity or position_fraction")
        return self


class SuggestionSet(BaseModel):
    """The whole answer: a short summary and the suggestions, most confident first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str = Field("", max_length=2000)
    suggestions: list[Suggestion] = Field(max_length=50)


def schema_text(max_suggestions: int) -> str:
    """The answer's shape and rules, as sent to the model."""
    return (
        'Answer with exactly one JSON object and nothing else: {"summary": string, "suggestions": [{"symbol": '
        'string, "action": "buy"|"sell"|"hold"|"reduce"|"close", "size": number >= 0, "size_unit": '
        '"quantity"|"position_fraction"|"equity_fraction", "rationale": string (at most 1000 characters), '
        '"confidence": number from 0 to 1}]}. Rules: use only symbols that appear in the context; reduce and '
        "close only symbols with a position; close is size 1 in position_fraction; hold is size 0; buy and sell "
        "are sized in quantity or equity_fraction (of account equity, notional), reduce in quantity or "
        f"position_fraction; fractions are at most 1; at most one suggestion per symbol; at most "
        f"{max_suggestions} suggestions; no other keys."
    )


def _errors(e: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in e.errors()[:limit]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
    more = len(e.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_answer(text: str, context: dict[str, Any], max_suggestions: int) -> SuggestionSet:
    """The answer as a ``SuggestionSet`` valid against ``context``; ``AnswerInvalid`` otherwise."""
    body = text.strip()
    m = _FENCE.match(body)  # a model that wraps its JSON in a Markdown fence
    if m:
        body = m.group(1).strip()
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError as e:
        raise AnswerInvalid(f"the answer is not JSON ({e}); it starts {text[:80]!r}") from e
    if not isinstance(data, dict):
        raise AnswerInvalid(f"the answer is JSON but not an object (got {type(data).__name__})")
    # confidence is a float: JSON numbers arrive as Decimal (exact sizes) and convert here
    items = data.get("suggestions")
    for s in items if isinstance(items, list) else []:
        if isinstance(s, dict) and isinstance(s.get("confidence"), Decimal):
            s["confidence"] = float(s["confidence"])
    try:
        out = SuggestionSet.model_validate(data)
    except ValidationError as e:
        raise AnswerInvalid(f"the answer does not match the schema: {_errors(e)}") from e
    problems = check_against_context(out, context, max_suggestions)
    if problems:
        raise AnswerInvalid("; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))
    return out


def check_against_context(answer: SuggestionSet, context: dict[str, Any], max_suggestions: int) -> list[str]:
    """What in ``answer`` the context does not support (empty when nothing)."""
    positions = {p["symbol"]: Decimal(p["quantity"]) for p in context.get("account", {}).get("positions", [])}
    signalled = {s["symbol"] for s in context.get("signals", {}).get("by_symbol", [])}
    known = set(positions) | signalled
    problems = []
    if len(answer.suggestions) > max_suggestions:
        problems.append(f"{len(answer.suggestions)} suggestions; at most {max_suggestions}")
    seen: set[str] = set()
    for i, s in enumerate(answer.suggestions):
        where = f"suggestions.{i} ({s.symbol})"
        if s.symbol in seen:
            problems.append(f"{where}: a second suggestion for the symbol")
        seen.add(s.symbol)
        if s.symbol not in known:
            problems.append(f"{where}: the symbol is not in the context (no position, no recent signal)")
            continue
        held = positions.get(s.symbol, Decimal(0))
        if s.action in ("reduce", "close") and not held:
            problems.append(f"{where}: {s.action} needs a position and there is none")
        elif s.action == "reduce" and s.size_unit == "quantity" and s.size > abs(held):
            problems.append(f"{where}: reduce by {s.size} exceeds the position {abs(held)}")
    return problems
