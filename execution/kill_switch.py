"""The kill switch: the gateway's trading state (ACTIVE / HALTED), changed by one method.

``KillSwitch.apply(control, now)`` is the only way the state changes. It is idempotent
(engaging a halted gateway changes nothing), refuses a release without a reason, and says
what happened as a ``KillDecision``; the OMS carries out the effects (cancel open orders,
persist the state, the event and the audit row, mirror to Redis, acknowledge).
Only the "global" scope exists yet; per-strategy / per-symbol scopes come later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from common.messages import Control

__all__ = ["COMMANDS", "GLOBAL", "KillDecision", "KillSwitch", "TradingStateName"]

GLOBAL = "global"
COMMANDS = ("kill.engage", "kill.release", "kill.status")


class TradingStateName(enum.StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # reserved: only exposure-reducing orders (a later issue)
    HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class KillDecision:
    """The outcome of one control command."""

    ok: bool
    changed: bool  # the state changed (persist, audit, act on it)
    action: str  # "engage", "release" or "status"
    state: TradingStateName
    detail: str = ""


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
        """Apply a kill command; None when the command is not a kill-switch command."""
        if ctl.command not in COMMANDS:
            return None
        action = ctl.command.removeprefix("kill.")
        if ctl.scope != self.scope:
            return KillDecision(False, False, action, self.state, f"unsupported scope {ctl.scope!r} (only 'global')")
        if action == "status":
            return KillDecision(True, False, action, self.state, self.describe())
        if action == "engage":
            if self.halted:
                return KillDecision(True, False, action, self.state, "already halted: " + self.describe())
            self._set(TradingStateName.HALTED, ctl.reason.strip() or "manual kill switch", ctl.actor, now)
            return KillDecision(True, True, action, self.state, f"halted: {self.reason}")
        reason = ctl.reason.strip()
        if not reason:
            return KillDecision(False, False, action, self.state, "release requires a reason")
        if not self.halted:
            return KillDecision(True, False, action, self.state, "already active")
        self._set(TradingStateName.ACTIVE, reason, ctl.actor, now)
        return KillDecision(True, True, action, self.state, f"released: {reason}")

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
