"""The offline provider: deterministic rules over the context, no network, no cost.

The same context and prompt always give the same answer. Rules, per position (largest first):

- **losing and signals against it**: unrealised loss of at least ``LOSS_PCT`` % and a signal
  consensus against its direction (``net`` at least ``STRONG_NET`` over ``MIN_SIGNALS`` signals) → close;
- **concentration**: more than ``CONCENTRATION`` of equity → reduce by the fraction that brings it back;
- **losing**: unrealised loss of at least ``LOSS_PCT`` % → reduce by half;
- **signals against it** → reduce by half;
- otherwise → hold.

A symbol without a position but with a buy consensus → buy ``ENTRY_FRACTION`` of equity (the rules
never open a short). A prompt naming symbols of the context limits the answer to them.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_DOWN, Decimal
from typing import Any

from strategy_engine.suggestions.llm import ChatAnswer, ChatRequest, LLMProvider

__all__ = ["CONCENTRATION", "ENTRY_FRACTION", "LOSS_PCT", "MIN_SIGNALS", "STRONG_NET", "OfflineProvider"]

CONCENTRATION = Decimal("0.25")  # of equity
LOSS_PCT = Decimal(-5)  # unrealised P&L, % of cost
STRONG_NET = 0.6  # (buys - sells) / count
MIN_SIGNALS = 3
ENTRY_FRACTION = Decimal("0.02")  # of equity, notional


def _clamp(x: float, lo: float = 0.05, hi: float = 0.95) -> float:
    return round(min(max(x, lo), hi), 2)


def _pct(d: Decimal) -> str:
    return f"{(d * 100).quantize(Decimal('0.1'))}%"


class OfflineProvider(LLMProvider):
    """Rule-based suggestions from the context (``model`` names the rule set's version)."""

    name = "offline"
    model = "rules-v1"

    async def complete(self, request: ChatRequest) -> ChatAnswer:
        return ChatAnswer(json.dumps(self.suggest(request.context, request.prompt, request.max_suggestions)),
                          self.model)

    def suggest(self, context: dict[str, Any], prompt: str, max_suggestions: int) -> dict[str, Any]:
        account = context.get("account", {})
        positions = account.get("positions", [])
        signals = {s["symbol"]: s for s in context.get("signals", {}).get("by_symbol", [])}
        symbols = {p["symbol"] for p in positions} | set(signals)
        words = set(re.findall(r"[A-Za-z0-9._/:\-]+", prompt.upper()))
        focus = {s for s in symbols if s.upper() in words}
        out: list[dict[str, Any]] = []
        for p in positions:
            if focus and p["symbol"] not in focus:
                continue
            out.append(self._position(p, signals.get(p["symbol"])))
        held = {p["symbol"] for p in positions}
        for sym in sorted(signals):
            s = signals[sym]
            if sym in held or (focus and sym not in focus):
                continue
            if s["count"] >= MIN_SIGNALS and s["net"] >= STRONG_NET:
                out.append({
                    "symbol": sym, "action": "buy", "size": str(ENTRY_FRACTION), "size_unit": "equity_fraction",
                    "rationale": f"no position; {s['buys']} of the last {s['count']} signals are buys "
                                 f"({', '.join(s['detectors'])}), last at {s['last_price']}",
                    "confidence": _clamp(0.35 + 0.3 * s["net"] + min(s["count"], 20) / 100),
                })
        out.sort(key=lambda x: (-x["confidence"], x["symbol"]))
        out = out[:max_suggestions]
        counts: dict[str, int] = {}
        for x in out:
            counts[x["action"]] = counts.get(x["action"], 0) + 1
        summary = (f"{len(positions)} position(s), equity {account.get('equity', '?')}; "
                   + (", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing to suggest")
                   + f" (offline rules: concentration > {_pct(CONCENTRATION)}, loss <= {LOSS_PCT}%, "
                     f"signal consensus >= {STRONG_NET} over >= {MIN_SIGNALS})")
        return {"summary": summary, "suggestions": out}

    @staticmethod
    def _position(p: dict[str, Any], s: dict[str, Any] | None) -> dict[str, Any]:
        sym = p["symbol"]
        qty = Decimal(p["quantity"])
        sign = 1 if qty > 0 else -1
        pct = Decimal(p["unrealised_pct"])
        weight = Decimal(p["weight"]) if p.get("weight") is not None else Decimal(0)
        net = sign * s["net"] if s and s["count"] >= MIN_SIGNALS else 0.0
        against = net <= -STRONG_NET
        losing = pct <= LOSS_PCT
        side = "long" if sign > 0 else "short"
        sig = (f"; {s['count']} recent signals, net {s['net']:+} ({', '.join(s['detectors'])})" if s else "")
        base = f"{side} {abs(qty)} at avg {p['average_price']}, last {p['last_price']}, P&L {pct}%, " \
               f"{_pct(weight)} of equity{sig}"
        if losing and against:
            return {"symbol": sym, "action": "close", "size": "1", "size_unit": "position_fraction",
                    "rationale": f"{base}: losing and the signals turned against it",
                    "confidence": _clamp(0.6 + float(min(-pct, Decimal(20))) / 100 + 0.1 * -net)}
        if weight > CONCENTRATION:
            frac = max((1 - CONCENTRATION / weight).quantize(Decimal("0.01"), rounding=ROUND_DOWN), Decimal("0.01"))
            return {"symbol": sym, "action": "reduce", "size": str(frac), "size_unit": "position_fraction",
                    "rationale": f"{base}: above the {_pct(CONCENTRATION)} concentration guide; reducing by {frac} "
                                 f"brings it back to about {_pct(CONCENTRATION)}",
                    "confidence": _clamp(0.5 + float(weight - CONCENTRATION))}
        if losing:
            return {"symbol": sym, "action": "reduce", "size": "0.5", "size_unit": "position_fraction",
                    "rationale": f"{base}: unrealised loss beyond {LOSS_PCT}%; halve the risk",
                    "confidence": _clamp(0.45 + float(min(-pct, Decimal(20))) / 100)}
        if against:
            return {"symbol": sym, "action": "reduce", "size": "0.5", "size_unit": "position_fraction",
                    "rationale": f"{base}: recent signals point against the position",
                    "confidence": _clamp(0.3 + 0.3 * -net)}
        return {"symbol": sym, "action": "hold", "size": "0", "size_unit": "quantity",
                "rationale": f"{base}: within the concentration and loss guides",
                "confidence": _clamp(0.5 + (0.2 * net if net > 0 else 0.0))}
