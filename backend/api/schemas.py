"""Request and response bodies of the API. Requests are strict: unknown fields, wrong types and
out-of-range values are refused with 422. Money and quantities go out as exact decimal strings."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "SCOPE_PATTERN",
    "SYMBOL_PATTERN",
    "ControlResult",
    "FillOut",
    "Health",
    "KillEngage",
    "KillRelease",
    "KillSwitchState",
    "LoginRequest",
    "LogoutResult",
    "Me",
    "OrderOut",
    "PositionOut",
    "RefreshRequest",
    "RiskChange",
    "RiskChangeOut",
    "RiskChangeResult",
    "RiskLimits",
    "ScopeState",
    "TokenPair",
]

# global, strategy:<name> or symbol:<SYM>; at most 64 characters (trading_state.scope)
SCOPE_PATTERN = r"^(global|strategy:[A-Za-z0-9][A-Za-z0-9._\-]{0,54}|symbol:[A-Za-z0-9][A-Za-z0-9._/:\-]{0,56})$"
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:\-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

Username = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Scope = Annotated[str, StringConstraints(pattern=SCOPE_PATTERN, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LoginRequest(_Strict):
    username: Username
    password: Password


class RefreshRequest(_Strict):
    refresh_token: Token


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")
    refresh_expires_in: int = Field(description="Seconds the refresh token is valid (single use).")
    role: str


class Me(BaseModel):
    id: int
    username: str
    role: str


class LogoutResult(BaseModel):
    revoked: int = Field(description="Refresh tokens of this login that were still live and are now revoked.")


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


def _reason(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("must not be empty (every control action is audited with its reason)")
    if _CONTROL_CHARS.search(v):
        raise ValueError("must not contain control characters")
    return v


# Every control action's reason: 1-500 characters, stripped, not blank, no control characters.
Reason = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_reason)]


class KillEngage(_Strict):
    scope: Scope = Field("global", description="global, strategy:<name> or symbol:<SYM>")
    action: Literal["halt", "reduce"] = Field(
        "halt", description="halt: HALTED (open orders cancelled); reduce: REDUCING (only exposure-reducing orders)"
    )
    reason: Reason


class KillRelease(_Strict):
    scope: Scope = Field("global", description="global, strategy:<name> or symbol:<SYM>")
    reason: Reason


class ControlResult(BaseModel):
    ok: bool
    scope: str
    state: str = Field(description="The scope's trading state after the command: ACTIVE, REDUCING or HALTED.")
    detail: str
    via: Literal["bus", "database"] = Field(description="The path the command took to the gateway.")
    request_id: str = Field(description="The control request's id (ctl:commands / control_requests).")


class ScopeState(BaseModel):
    scope: str
    state: str
    reason: str
    actor: str
    changed_at: int | None = Field(description="ns since the epoch")


class KillSwitchState(BaseModel):
    scopes: list[ScopeState] = Field(description="Every scope that was ever changed, with its persisted state.")
    global_state: str = Field(description="The global scope's state (ACTIVE when it was never changed).")


class OrderOut(BaseModel):
    id: int
    client_order_id: str
    signal_id: str
    strategy: str
    symbol: str
    side: Literal["BUY", "SELL"]
    order_type: str
    tif: str
    qty: str
    limit_price: str | None
    ref_price: str
    status: str
    reason: str
    cum_qty: str
    leaves_qty: str
    avg_px: str
    fees: str
    venue: str
    ts_intent: int
    ts_accepted: int | None
    ts_done: int | None


class FillOut(BaseModel):
    id: int
    exec_id: str
    client_order_id: str
    strategy: str
    symbol: str
    side: Literal["BUY", "SELL"]
    qty: str
    price: str
    fee: str
    liquidity: str
    venue: str
    venue_trade_id: str
    ts_exec: int


class PositionOut(BaseModel):
    symbol: str
    qty: str
    avg_px: str
    realized_pnl: str
    fees: str
    fills: int
    mark: str | None
    unrealized_pnl: str | None


# -- risk limits -------------------------------------------------------------------------------
RISK_KEY_PATTERN = (r"^(global|defaults|kill_triggers)\.[a-z_]{1,40}$"
                    r"|^symbols\.[A-Za-z0-9][A-Za-z0-9._:/\-]{0,63}\.[a-z_]{1,40}$")


class RiskChange(_Strict):
    key: str = Field(pattern=RISK_KEY_PATTERN, max_length=160,
                     description="A dotted key of the risk file: global.<key>, defaults.<key>, "
                                 "symbols.<SYMBOL>.<key> or kill_triggers.<key>.")
    value: str | None = Field(max_length=4096, description="The new value as text (lists comma-separated, 'off' "
                                                           "disables a trigger); null goes back to the file's value.")
    reason: Reason


class RiskChangeOut(BaseModel):
    key: str
    value: str
    actor: str
    reason: str
    changed_at: str = Field(description="UTC")


class RiskLimits(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    risk_file: str
    global_: dict[str, Any] = Field(alias="global", description="Limits over the whole gateway.")
    defaults: dict[str, str] = Field(description="Per-symbol limits of every symbol not listed under symbols.")
    symbols: dict[str, dict[str, str]] = Field(description="Every listed symbol's limits (defaults filled in).")
    kill_triggers: dict[str, Any]
    overrides: dict[str, list[str]] = Field(description="Per symbol, the keys that differ from the defaults.")
    changes: list[RiskChangeOut] = Field(description="The changes made while running (applied over the file).")
    changes_unknown: str | None = Field(description="Why the changes could not be read (the file's limits shown).")


class RiskChangeResult(BaseModel):
    ok: bool
    key: str
    detail: str = Field(description="KEY: old -> new, as the gateway applied it.")
    via: Literal["bus", "database"]
    request_id: str

