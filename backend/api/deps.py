"""What routes depend on: the app's context (settings, database) and the caller's role.

Every route but the anonymous ones (``/health``, ``/auth/login``, ``/auth/refresh``, the
docs) declares ``Depends(require(role))``: the bearer access token must be valid, its user
enabled with the role the token names, its login not revoked (logout, refresh reuse), and
that role at least ``role`` (viewer < trader < admin). ``tests/unit/backend/test_api_auth.py``
checks every route in the OpenAPI schema against the endpoint x role matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from backend.api.config import ApiSettings
from backend.api.errors import ApiError
from backend.api.ratelimit import SlidingWindowLimiter
from backend.api.security import TokenError, TokenType, decode_token
from backend.api.users import ROLE_RANK, User, family_revoked, get_user
from common.config import CommonSettings

__all__ = ["ANONYMOUS_PATHS", "ApiContext", "Caller", "authenticate_token", "context", "require", "token_claims",
           "unauthorized"]

# /metrics only with AITRADER_API_METRICS_PUBLIC (else it needs the viewer role)
ANONYMOUS_PATHS = frozenset({"/health", "/auth/login", "/auth/refresh", "/docs", "/docs/oauth2-redirect",
                             "/openapi.json", "/redoc", "/metrics"})

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /auth/login")


@dataclass(frozen=True, slots=True)
class ApiContext:
    """Everything the routes share, built once by ``create_app``."""

    settings: ApiSettings
    common: CommonSettings
    engine: Engine
    login_limiter: SlidingWindowLimiter


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user of this request and the login (token family) it came through."""

    user: User
    family_id: str

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def actor(self) -> str:
        """Who the API acts as in audit rows, control commands and job rows: ``api:<username>``."""
        return f"api:{self.username}"[:64]


def context(request: Request) -> ApiContext:
    return request.app.state.ctx


def unauthorized(message: str, code: str | None = None) -> ApiError:
    return ApiError(401, message, code=code, headers={"WWW-Authenticate": "Bearer"})


def token_claims(ctx: ApiContext, token: str, typ: TokenType) -> tuple[dict[str, Any], int]:
    """The claims of an access or refresh token and its user id; 401 when it cannot be accepted."""
    try:
        claims = decode_token(ctx.settings.jwt_secret, token, typ)
        return claims, int(claims["sub"])
    except TokenError as e:
        raise unauthorized(str(e)) from None
    except ValueError:
        raise unauthorized("invalid token: claim 'sub' malformed") from None


def _authenticate(ctx: ApiContext, creds: HTTPAuthorizationCredentials | None) -> Caller:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise unauthorized("authentication required: send 'Authorization: Bearer <access token>'")
    return authenticate_token(ctx, creds.credentials)[0]


def authenticate_token(ctx: ApiContext, token: str) -> tuple[Caller, int]:
    """The caller an access token stands for and its expiry (s since the epoch), checked as on every request
    (``ApiError`` 401, or 503 when the database cannot tell); for the WebSocket, which has no headers."""
    claims, user_id = token_claims(ctx, token, "access")
    try:
        user = get_user(ctx.engine, user_id)
        revoked = user is not None and family_revoked(ctx.engine, claims["fam"])
    except SQLAlchemyError as e:
        raise ApiError(503, "database unavailable: cannot check the token") from e
    if user is None or user.disabled:
        raise unauthorized("user unknown or disabled")
    if user.role != claims["role"]:
        raise unauthorized("the user's role changed since this token was issued: log in again")
    if revoked:
        raise unauthorized("this login was revoked (logout or a reused refresh token): log in again")
    return Caller(user=user, family_id=claims["fam"]), int(claims["exp"])


def require(role: str) -> Callable[..., Caller]:
    """A dependency admitting callers whose role is at least ``role``; 401 without a valid token, 403 below it."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    def dependency(
        ctx: Annotated[ApiContext, Depends(context)],
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = _authenticate(ctx, creds)
        if ROLE_RANK[caller.role] < ROLE_RANK[role]:
            raise ApiError(403, f"needs the {role} role (you are {caller.role})",
                           details={"required_role": role, "role": caller.role})
        return caller

    return dependency
