"""The kill switch: trading states (ACTIVE / REDUCING / HALTED) per scope, changed by one method.

A scope is ``global``, ``strategy:<name>`` or ``symbol:<SYM>``; each has its own persisted
state (a ``trading_state`` row, keyed by scope). An intent is checked against the global
scope, its strategy's and its symbol's: the most restrictive state wins (``KillSwitches.effective``).

``KillSwitches.apply(control, now)`` is the only way a state changes. It is idempotent
(engaging a halted scope changes nothing), refuses to loosen a state (``kill.release`` to
ACTIVE, or ``kill.reduce`` of a HALTED scope) without a reason and an actor, and says what
happened as a ``KillDecision``; the OMS carries out the effects (cancel the scope's open
orders, persist the state, the event and the audit row, mirror to Redis, acknowledge).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from common.messages import Control

__all__ = [
    "COMMANDS", "GLOBAL", "KillDecision", "KillSwitch", "KillSwitches", "TradingStateName", "in_scope",
    "scope_problem",
]

GLOBAL = "global"
COMMANDS = ("kill.engage", "kill.reduce", "kill.release", "kill.status")
_PREFIXES = ("strategy:", "symbol:")
_MAX_SCOPE = 64  # trading_state.scope is String(64)


class TradingStateName(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only exposure-reducing orders pass (RejectCode.REDUCING_ONLY)
    HALTED = "HALTED"  # every new order is refused (RejectCode.KILL_SWITCH), open orders cancelled


_RANK = {TradingStateName.ACTIVE: 0, TradingStateName.REDUCING: 1, TradingStateName.HALTED: 2}
_TARGET = {"engage": TradingStateName.HALTED, "reduce": TradingStateName.REDUCING, "release": TradingStateName.ACTIVE}


def scope_problem(scope: str) -> str | None:
    """Why ``scope`` is not a valid scope name, or None."""
    if scope == GLOBAL:
        return None
    if not scope.startswith(_PREFIXES) or not scope.split(":", 1)[1] or "\x00" in scope:
        return f"unknown scope {scope[:80]!r} (global, strategy:<name> or symbol:<SYM>)"
    if len(scope) > _MAX_SCOPE:
        return f"scope longer than {_MAX_SCOPE} characters"
    return None


@dataclass(frozen=True, slots=True)
class KillDecision:
    """The outcome of one control command."""

    ok: bool
    changed: bool  # the state changed (persist, audit, act on it)
    action: str  # "engage", "reduce", "release" or "status"
    state: TradingStateName
    detail: str = ""
    scope: str = GLOBAL


class KillSwitch:
    """The persisted trading state of one scope and the rules for changing it."""

    def __init__(
        self,
        state: TradingStateName = TradingStateName.ACTIVE,
        reason: str = "",
        actor: str = "",
        changed_at: int = 0,
        scope: str = GLOBAL,
    ) -> None:
        self.scope = scope
        self.state = TradingStateName(state)
        self.reason = reason
        self.actor = actor
        self.changed_at = changed_at

    @property
    def halted(self) -> bool:
        return self.state == TradingStateName.HALTED

    def apply(self, ctl: Control, now: int) -> KillDecision | None:
        """Apply a kill command to this scope; None when the command is not a kill-switch command."""
        if ctl.command not in COMMANDS:
            return None
        action = ctl.command.removeprefix("kill.")
        if (ctl.scope or GLOBAL) != self.scope:
            return KillDecision(False, False, action, self.state, f"scope {ctl.scope!r} is not {self.scope!r}",
                                self.scope)
        if action == "status":
            return KillDecision(True, False, action, self.state, self.describe(), self.scope)
        target = _TARGET[action]
        reason = ctl.reason.strip()
        # Loosening (a release, or HALTED -> REDUCING) needs a reason and an actor; a release always does.
        if action == "release" or _RANK[target] < _RANK[self.state]:
            if not reason:
                return KillDecision(False, False, action, self.state, f"{action} requires a reason", self.scope)
            if not ctl.actor.strip():
                return KillDecision(False, False, action, self.state, f"{action} requires an actor", self.scope)
        if target == self.state:
            return KillDecision(True, False, action, self.state, "already " + self.describe(), self.scope)
        default = {"engage": "manual kill switch", "reduce": "manual reduce-only"}.get(action, "")
        self._set(target, reason or default, ctl.actor, now)
        return KillDecision(True, True, action, self.state, f"{self.scope} {self.state}: {self.reason}", self.scope)

    def _set(self, state: TradingStateName, reason: str, actor: str, now: int) -> None:
        self.state = state
        # NUL is the one character PostgreSQL text refuses; a kill must never fail on it.
        self.reason = reason.replace("\x00", "")
        self.actor = (actor.replace("\x00", "") or "unknown")[:64]
        self.changed_at = now

    def describe(self) -> str:
        who = f" by {self.actor}" if self.actor else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.state}{who}{why}"

    def row(self) -> dict[str, Any]:
        """Column values of the ``trading_state`` row."""
        return {
            "scope": self.scope,
            "state": str(self.state),
            "reason": self.reason,
            "actor": self.actor,
            "changed_at": self.changed_at,
        }

    def mirror(self) -> dict[str, str]:
        """Fields of the Redis hash ``streams.KILL_STATE``."""
        return {"state": str(self.state), "reason": self.reason, "actor": self.actor, "changed_at": str(self.changed_at)}


class KillSwitches:
    """Every scope's switch; a scope without a row is ACTIVE."""

    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.scopes: dict[str, KillSwitch] = {GLOBAL: KillSwitch()}
        for st in rows or []:
            scope = st["scope"]
            self.scopes[scope] = KillSwitch(TradingStateName(st["state"]), st["reason"] or "", st["actor"] or "",
                                            int(st["changed_at"] or 0), scope)
        # Scopes other than global that are not ACTIVE: the per-intent check looks only here.
        self._restricted = {s for s, k in self.scopes.items() if s != GLOBAL and k.state != TradingStateName.ACTIVE}

    @property
    def glob(self) -> KillSwitch:
        return self.scopes[GLOBAL]

    def apply(self, ctl: Control, now: int) -> KillDecision | None:
        if ctl.command not in COMMANDS:
            return None
        action = ctl.command.removeprefix("kill.")
        scope = ctl.scope or GLOBAL
        bad = scope_problem(scope)
        if bad is not None:
            return KillDecision(False, False, action, self.glob.state, bad, scope[:_MAX_SCOPE])
        sw = self.scopes.get(scope)
        if sw is None:
            sw = KillSwitch(scope=scope)
        if action == "status":
            return KillDecision(True, False, action, sw.state, self.describe(), scope)
        d = sw.apply(ctl, now)
        assert d is not None
        if d.changed:
            self.scopes[scope] = sw
            if scope != GLOBAL:
                (self._restricted.add if sw.state != TradingStateName.ACTIVE else self._restricted.discard)(scope)
        return d

    def effective(self, strategy: str, symbol: str) -> tuple[TradingStateName, str]:
        """The most restrictive state among global, ``strategy:<strategy>`` and ``symbol:<symbol>``, and its scope."""
        g = self.scopes[GLOBAL]
        if g.state == TradingStateName.HALTED or not self._restricted:
            return g.state, GLOBAL
        state, where = g.state, GLOBAL
        for scope in (f"strategy:{strategy}", f"symbol:{symbol}"):
            if scope in self._restricted:
                s = self.scopes[scope].state
                if _RANK[s] > _RANK[state]:
                    state, where = s, scope
        return state, where

    def halted_scope(self, strategy: str, symbol: str) -> str | None:
        """The scope that halts an order of ``strategy`` on ``symbol``, or None when none does."""
        state, where = self.effective(strategy, symbol)
        return where if state == TradingStateName.HALTED else None

    def non_active(self) -> list[KillSwitch]:
        return [k for s, k in sorted(self.scopes.items()) if k.state != TradingStateName.ACTIVE]

    def describe(self) -> str:
        """Every scope that is not ACTIVE, or that all are."""
        rows = self.non_active()
        if not rows:
            return "all scopes ACTIVE"
        return "; ".join(f"{k.scope} {k.describe()}" for k in rows)


def in_scope(scope: str, strategy: str, symbol: str) -> bool:
    """Whether an order of ``strategy`` on ``symbol`` belongs to ``scope``."""
    if scope == GLOBAL:
        return True
    kind, _, name = scope.partition(":")
    return (kind == "strategy" and strategy == name) or (kind == "symbol" and symbol == name)
