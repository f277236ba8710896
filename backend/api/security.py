"""Password hashes (argon2id) and the API's JSON Web Tokens (HS256 only).

Every token carries ``sub`` (the user id), ``role``, ``typ`` (``access`` or ``refresh``),
``fam`` (the login it descends from), ``jti``, ``iat`` and ``exp``; decoding pins the
algorithm to HS256 and requires all of them, so ``alg: none``, another algorithm, a missing
``exp``, an expired or a tampered token all fail with ``TokenError``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["ALGORITHM", "REQUIRED_CLAIMS", "TokenError", "TokenType", "decode_token", "encode_token", "hash_password",
           "password_needs_rehash", "verify_password"]

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iat", "sub", "role", "typ", "fam", "jti")
TokenType = Literal["access", "refresh"]

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory parameters
# Verified against when the user does not exist, so that the answer takes as long either way.
_DUMMY_HASH = _hasher.hash(uuid.uuid4().hex)


class TokenError(Exception):
    """The token cannot be accepted (the message says why; the client must log in again)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; with None, spends the same time and says no."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def encode_token(secret: str, *, sub: str, role: str, typ: TokenType, fam: str, ttl_s: int,
                 jti: str | None = None, now: int | None = None) -> tuple[str, dict[str, Any]]:
    """A signed token and its claims; ``now`` in seconds since the epoch (default: the clock)."""
    iat = int(time.time()) if now is None else now
    claims = {"sub": sub, "role": role, "typ": typ, "fam": fam, "jti": jti or uuid.uuid4().hex,
              "iat": iat, "exp": iat + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM), claims


def decode_token(secret: str, token: str, typ: TokenType) -> dict[str, Any]:
    """The claims of ``token`` if it is a valid, unexpired HS256 token of type ``typ``; else ``TokenError``."""
    if len(token) > 4096:
        raise TokenError("token too long")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": list(REQUIRED_CLAIMS), "verify_signature": True,
                                     "verify_exp": True, "verify_iat": True})
    except jwt.ExpiredSignatureError as e:
        raise TokenError("token expired") from e
    except jwt.InvalidTokenError as e:
        raise TokenError(f"invalid token: {e}") from e
    if claims.get("typ") != typ:
        raise TokenError(f"not an {typ} token" if typ == "access" else f"not a {typ} token")
    for name in ("sub", "role", "fam", "jti"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise TokenError(f"invalid token: claim {name!r} malformed")
    return claims
