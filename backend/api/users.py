"""The API's accounts and refresh-token families in the database (``users``, ``refresh_tokens``).

Synchronous (SQLAlchemy Core); the API calls these from its worker threads, never from
the event loop. A refresh token is exchanged at most once: ``use_refresh_token`` marks it
used in one conditional UPDATE, so two concurrent exchanges cannot both win, and reports a
second presentation as ``reused`` (the caller then revokes the family).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy import Engine

from backend.api.security import hash_password, password_needs_rehash, verify_password
from common import db

__all__ = [
    "ROLE_RANK",
    "RefreshUse",
    "User",
    "authenticate",
    "create_user",
    "ensure_admin",
    "family_revoked",
    "get_user",
    "record_refresh_token",
    "revoke_family",
    "use_refresh_token",
    "username_problem",
]

log = logging.getLogger(__name__)

ROLE_RANK = {role: i for i, role in enumerate(db.ROLES)}  # viewer < trader < admin
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,47}")  # matched whole (fullmatch): no trailing newline
_users = db.User.__table__
_tokens = db.RefreshToken.__table__

RefreshUse = Literal["ok", "unknown", "reused", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    disabled: bool


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None (3-48 of letters, digits, ``.``, ``_``, ``-``)."""
    if not _USERNAME.fullmatch(name):
        return "must be 3-48 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def _user(row: sa.Row | None) -> User | None:
    if row is None:
        return None
    return User(id=int(row.id), username=row.username, role=row.role, disabled=bool(row.disabled))


def get_user(engine: Engine, user_id: int) -> User | None:
    with engine.connect() as c:
        row = c.execute(sa.select(_users.c.id, _users.c.username, _users.c.role, _users.c.disabled)
                        .where(_users.c.id == user_id)).first()
    return _user(row)


def create_user(engine: Engine, username: str, password: str, role: str) -> User:
    """A new enabled user; raises ``ValueError`` for a bad name or role, ``IntegrityError`` if the name is taken."""
    bad = username_problem(username)
    if bad is not None:
        raise ValueError(f"username {bad}")
    if role not in ROLE_RANK:
        raise ValueError(f"role must be one of {', '.join(db.ROLES)}")
    with engine.begin() as c:
        uid = c.execute(_users.insert().values(username=username, role=role, password_hash=hash_password(password),
                                               disabled=False)).inserted_primary_key[0]
    return User(id=int(uid), username=username, role=role, disabled=False)


def authenticate(engine: Engine, username: str, password: str) -> User | None:
    """The enabled user ``username`` if ``password`` is theirs, else None (same cost either way).

    A name no user can have (``username_problem``: a NUL, a lone surrogate, ...) is not looked up:
    PostgreSQL refuses such text, and the answer is the unknown user's."""
    row = None
    if username_problem(username) is None:
        with engine.connect() as c:
            row = c.execute(sa.select(_users).where(_users.c.username == username)).first()
    ok = verify_password(row.password_hash if row is not None else None, password)
    if not ok or row is None or row.disabled:
        return None
    if password_needs_rehash(row.password_hash):  # the hasher's parameters were raised since
        with engine.begin() as c:
            c.execute(_users.update().where(_users.c.id == row.id).values(password_hash=hash_password(password)))
    return _user(row)


def ensure_admin(engine: Engine, username: str, password: str) -> str:
    """Create admin ``username`` when the database holds no enabled admin; what was done, in words."""
    with engine.begin() as c:
        admins = c.execute(sa.select(sa.func.count()).select_from(_users)
                           .where(_users.c.role == "admin", _users.c.disabled.is_(False))).scalar_one()
        if admins:
            return f"{admins} admin(s) exist; AITRADER_ADMIN_* not used"
        if not username:
            return "no admin exists and AITRADER_ADMIN_USERNAME / AITRADER_ADMIN_PASSWORD are not set"
        taken = c.execute(sa.select(_users.c.role).where(_users.c.username == username)).first()
        if taken is not None:
            raise ValueError(f"AITRADER_ADMIN_USERNAME {username!r} exists as a {taken.role} (or disabled); "
                             "choose another name")
    create_user(engine, username, password, "admin")
    return f"admin {username!r} created"


def record_refresh_token(engine: Engine, *, jti: str, family_id: str, user_id: int, issued_at_s: int,
                         expires_at_s: int) -> None:
    with engine.begin() as c:
        c.execute(_tokens.insert().values(jti=jti, family_id=family_id, user_id=user_id,
                                          issued_at=issued_at_s * 1_000_000_000,
                                          expires_at=expires_at_s * 1_000_000_000))


def use_refresh_token(engine: Engine, jti: str, now_ns: int | None = None) -> RefreshUse:
    """Mark refresh token ``jti`` used if it is still good; otherwise why not."""
    now = time.time_ns() if now_ns is None else now_ns
    with engine.begin() as c:
        res = c.execute(_tokens.update()
                        .where(_tokens.c.jti == jti, _tokens.c.used_at.is_(None), _tokens.c.revoked_at.is_(None),
                               _tokens.c.expires_at > now)
                        .values(used_at=now))
        if res.rowcount == 1:
            return "ok"
        row = c.execute(sa.select(_tokens.c.used_at, _tokens.c.revoked_at, _tokens.c.expires_at)
                        .where(_tokens.c.jti == jti)).first()
    if row is None:
        return "unknown"
    if row.used_at is not None:
        return "reused"
    if row.revoked_at is not None:
        return "revoked"
    return "expired"


def revoke_family(engine: Engine, family_id: str, now_ns: int | None = None) -> int:
    """Revoke every token of the login ``family_id``; how many were still live."""
    now = time.time_ns() if now_ns is None else now_ns
    with engine.begin() as c:
        return int(c.execute(_tokens.update()
                             .where(_tokens.c.family_id == family_id, _tokens.c.revoked_at.is_(None))
                             .values(revoked_at=now)).rowcount)


def family_revoked(engine: Engine, family_id: str) -> bool:
    """Whether the login ``family_id`` was revoked (logout, or a reused refresh token)."""
    with engine.connect() as c:
        return c.execute(sa.select(_tokens.c.jti).where(_tokens.c.family_id == family_id,
                                                        _tokens.c.revoked_at.is_not(None)).limit(1)).first() is not None
