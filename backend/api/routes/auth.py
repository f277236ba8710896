"""``/auth``: log in (access + refresh token), rotate the refresh token, log out, who am I.

A login starts a token family; each refresh exchanges a refresh token (single use) for a new
pair in the same family. Presenting an already used refresh token revokes the whole family
(someone holds a stolen copy); so does logging out. Access tokens of a revoked family stop
working at once (``deps.require`` checks the family on every request).
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from backend.api.deps import ApiContext, Caller, context, require, token_claims, unauthorized
from backend.api.errors import ApiError
from backend.api.schemas import LoginRequest, LogoutResult, Me, RefreshRequest, TokenPair
from backend.api.security import encode_token
from backend.api.users import (
    User,
    authenticate,
    get_user,
    record_refresh_token,
    revoke_family,
    use_refresh_token,
)

router = APIRouter(prefix="/auth", tags=["auth"])
log = logging.getLogger(__name__)

_BAD_LOGIN = "invalid username or password"


def _issue(ctx: ApiContext, user: User, family_id: str) -> TokenPair:
    s = ctx.settings
    access, _ = encode_token(s.jwt_secret, sub=str(user.id), role=user.role, typ="access", fam=family_id,
                             ttl_s=s.access_ttl_s)
    refresh, claims = encode_token(s.jwt_secret, sub=str(user.id), role=user.role, typ="refresh", fam=family_id,
                                   ttl_s=s.refresh_ttl_s)
    record_refresh_token(ctx.engine, jti=claims["jti"], family_id=family_id, user_id=user.id,
                         issued_at_s=claims["iat"], expires_at_s=claims["exp"])
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=s.access_ttl_s,
                     refresh_expires_in=s.refresh_ttl_s, role=user.role)


@router.post("/login", response_model=TokenPair, summary="Log in: an access token and a refresh token (anonymous)",
             responses={401: {"description": "wrong user name or password"},
                        429: {"description": "too many attempts for this client and user name; see Retry-After"}})
def login(body: LoginRequest, request: Request, ctx: Annotated[ApiContext, Depends(context)]) -> TokenPair:
    client = request.client.host if request.client else "unknown"
    wait = ctx.login_limiter.hit((client, body.username.lower()))
    if wait:
        retry = ctx.login_limiter.retry_after(wait)
        raise ApiError(429, f"too many login attempts for this user from {client}; retry in {retry} s",
                       headers={"Retry-After": retry}, details={"retry_after_s": int(retry)})
    try:
        user = authenticate(ctx.engine, body.username, body.password)
        if user is None:
            log.warning("failed login for %r from %s", body.username[:64], client)
            raise unauthorized(_BAD_LOGIN, "invalid_credentials")
        pair = _issue(ctx, user, uuid.uuid4().hex)
    except SQLAlchemyError as e:
        raise ApiError(503, "database unavailable") from e
    log.info("login %s (%s) from %s", user.username, user.role, client)
    return pair


@router.post("/refresh", response_model=TokenPair, summary="Exchange a refresh token for a new pair (anonymous)",
             responses={401: {"description": "invalid, expired, revoked or reused refresh token"}})
def refresh(body: RefreshRequest, ctx: Annotated[ApiContext, Depends(context)]) -> TokenPair:
    claims, user_id = token_claims(ctx, body.refresh_token, "refresh")
    try:
        use = use_refresh_token(ctx.engine, claims["jti"])
        if use == "reused":
            n = revoke_family(ctx.engine, claims["fam"])
            log.warning("refresh token reused (user id %s): login family %s revoked (%d live tokens)",
                        user_id, claims["fam"], n)
            raise unauthorized("refresh token already used: this login is revoked; log in again",
                                "refresh_token_reused")
        if use != "ok":
            raise unauthorized(f"refresh token {use}: log in again")
        user = get_user(ctx.engine, user_id)
        if user is None or user.disabled:
            revoke_family(ctx.engine, claims["fam"])
            raise unauthorized("user unknown or disabled")
        return _issue(ctx, user, claims["fam"])
    except SQLAlchemyError as e:
        raise ApiError(503, "database unavailable") from e


@router.post("/logout", response_model=LogoutResult, summary="Revoke this login's tokens (any role)")
def logout(caller: Annotated[Caller, Depends(require("viewer"))],
           ctx: Annotated[ApiContext, Depends(context)]) -> LogoutResult:
    try:
        return LogoutResult(revoked=revoke_family(ctx.engine, caller.family_id))
    except SQLAlchemyError as e:
        raise ApiError(503, "database unavailable") from e


@router.get("/me", response_model=Me, summary="The authenticated user (any role)")
def me(caller: Annotated[Caller, Depends(require("viewer"))]) -> Me:
    return Me(id=caller.user.id, username=caller.username, role=caller.role)
