"""Kite-style sessions of the mock broker: ``login`` issues an expiring access token.

The flow follows Kite Connect's, minus the browser:

- ``login(api_key, api_secret)`` (headless), or ``login(api_key, request_token, checksum)``
  with ``checksum = sha256(api_key + request_token + api_secret)`` hex (Kite's
  ``generate_session``: the secret never travels), returns
  ``{"access_token", "expires_in", "expires_at", ...}``;
- every other tool needs the HTTP header ``Authorization: token <api_key>:<access_token>``
  (Kite's header). A missing, unknown or expired token is a tool error whose text starts
  with ``TokenException:`` (Kite's error type), so a client knows to log in again.

Tokens are random (``secrets.token_urlsafe``), held in memory only (a restart of the
mock broker ends every session), and checked in constant time. The accepted key and
secret come from settings (``AITRADER_MCP_API_KEY`` / ``AITRADER_MCP_API_SECRET``), never
from the repository.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["TOKEN_ERROR", "AuthError", "SessionAuth", "kite_checksum"]

TOKEN_ERROR = "TokenException"


class AuthError(Exception):
    """A login refused or a token not accepted; the message starts with ``TokenException:``."""

    def __init__(self, why: str) -> None:
        super().__init__(f"{TOKEN_ERROR}: {why}")


def kite_checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """Kite's login checksum: ``sha256(api_key + request_token + api_secret)``, hex."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class SessionAuth:
    """Issues and checks access tokens for one api key (see the module docstring)."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        ttl_s: float,
        *,
        user_id: str = "SIM001",
        clock: Callable[[], float] = time.time,
        max_sessions: int = 1000,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret are both required")
        self.api_key = api_key
        self._secret = api_secret
        self.ttl_s = ttl_s
        self.user_id = user_id
        self.clock = clock
        self.max_sessions = max_sessions
        self._tokens: OrderedDict[str, float] = OrderedDict()  # access token -> expiry (epoch seconds)
        self.logins = 0

    def __repr__(self) -> str:  # never shows the secret or a token
        return f"SessionAuth(api_key={self.api_key!r}, sessions={len(self._tokens)})"

    def login(self, api_key: str, api_secret: str = "", request_token: str = "", checksum: str = "") -> dict[str, Any]:
        """A new session for valid credentials; raise ``AuthError`` otherwise."""
        if not _eq(api_key or "", self.api_key):
            raise AuthError("invalid api_key")
        if api_secret:
            ok = _eq(api_secret, self._secret)
        elif request_token and checksum:
            ok = _eq(checksum.lower(), kite_checksum(self.api_key, request_token, self._secret))
        else:
            raise AuthError("login needs api_secret, or request_token and checksum")
        if not ok:
            raise AuthError("invalid api_secret" if api_secret else "invalid checksum")
        now = self.clock()
        for tok in [t for t, exp in self._tokens.items() if exp <= now]:
            del self._tokens[tok]
        while len(self._tokens) >= self.max_sessions:
            self._tokens.popitem(last=False)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = now + self.ttl_s
        self.logins += 1
        return {
            "user_id": self.user_id,
            "api_key": self.api_key,
            "access_token": token,
            "public_token": secrets.token_hex(8),
            "login_time": datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "expires_in": self.ttl_s,
            "expires_at": datetime.fromtimestamp(now + self.ttl_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }

    def check(self, headers: Mapping[str, str] | None) -> None:
        """Accept a request carrying ``Authorization: token <api_key>:<access_token>`` of a live session."""
        value = ""
        for k, v in (headers or {}).items():
            if k.lower() == "authorization":
                value = v
                break
        scheme, _, cred = value.strip().partition(" ")
        if scheme.lower() != "token" or ":" not in cred:
            raise AuthError("missing access token: send 'Authorization: token <api_key>:<access_token>' "
                            "(call login first)")
        key, _, token = cred.strip().partition(":")
        if not _eq(key, self.api_key):
            raise AuthError("invalid api_key in the Authorization header")
        exp = self._tokens.get(token)
        if exp is None:
            raise AuthError("invalid or ended session: call login again")
        if exp <= self.clock():
            del self._tokens[token]
            raise AuthError("access token expired: call login again")
