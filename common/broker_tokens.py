"""Broker session tokens, encrypted at rest in the ``broker_tokens`` table.

``TokenCipher`` is AES-256-GCM (``cryptography``): a fresh random 12-byte nonce per
encryption, stored in front of the ciphertext and its tag, and associated data
``aitrader/broker_token/v1|<broker>|<account_id>|<expires_at>`` so a ciphertext copied to
another row, or a row whose expiry was edited, fails to decrypt. The key never enters the
database: it comes from ``AITRADER_BROKER_TOKEN_KEY`` (base64 of 32 bytes) or the file
``AITRADER_BROKER_TOKEN_KEY_FILE``; the row keeps only ``key_id``, a fingerprint of the
key, so a wrong key is told apart from a tampered row.

Decision: no key is generated. A service that must store a token and finds no key
refuses to start with a ``ConfigError`` naming ``AITRADER_BROKER_TOKEN_KEY`` (a key
generated next to the SQLite file would sit on the same disk as what it protects).
Make one with ``python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"``.

``BrokerTokenStore`` upserts one row per (broker, account) and returns the plaintext
only to its caller. A row that cannot be decrypted raises ``TokenDecryptError`` with
the reason (wrong key, or tampered); nothing here logs a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.config import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from common.config import CommonSettings

__all__ = ["BrokerTokenStore", "StoredToken", "TokenCipher", "TokenDecryptError"]

_NONCE = 12
_AD_PREFIX = b"aitrader/broker_token/v1"
KEY_ENV = "AITRADER_BROKER_TOKEN_KEY"
KEY_FILE_ENV = "AITRADER_BROKER_TOKEN_KEY_FILE"


class TokenDecryptError(Exception):
    """A stored token could not be decrypted: the wrong key, or the row was altered."""


def _decode_key(raw: bytes, where: str) -> bytes:
    if len(raw) == 32:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"invalid setting {where}: must be base64 of exactly 32 bytes (AES-256)")
    return key


class TokenCipher:
    """AES-256-GCM with associated data binding a token to its broker, account and expiry."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the token key must be 32 bytes")
        self._aead = AESGCM(key)
        # A fingerprint to tell keys apart; HMAC so it says nothing useful about the key.
        self.key_id = hmac.new(key, b"aitrader broker token key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"TokenCipher(key_id={self.key_id!r})"

    @classmethod
    def from_settings(cls, common: CommonSettings) -> TokenCipher:
        """The key from ``AITRADER_BROKER_TOKEN_KEY`` or ``AITRADER_BROKER_TOKEN_KEY_FILE``; ``ConfigError`` if neither."""
        if common.broker_token_key:
            return cls(_decode_key(common.broker_token_key.encode(), KEY_ENV))
        path = common.broker_token_key_file
        if path is not None:
            p = Path(path).expanduser()
            try:
                mode = p.stat().st_mode
                raw = p.read_bytes()
            except OSError as e:
                raise ConfigError(f"invalid setting {KEY_FILE_ENV}: cannot read {p}: {e.strerror}") from e
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"invalid setting {KEY_FILE_ENV}: {p} is readable by others (chmod 600 it)")
            return cls(_decode_key(raw, KEY_FILE_ENV))
        raise ConfigError(
            f"invalid setting {KEY_ENV}: a broker login is configured, so its session token is stored encrypted, "
            f"and no key is set. Set {KEY_ENV} to base64 of 32 random bytes (python -c \"import base64, os; "
            f"print(base64.b64encode(os.urandom(32)).decode())\") or {KEY_FILE_ENV} to a file holding one"
        )

    @staticmethod
    def _ad(broker: str, account_id: str, expires_at: int) -> bytes:
        return b"|".join((_AD_PREFIX, broker.encode(), account_id.encode(), str(expires_at).encode()))

    def encrypt(self, token: str, broker: str, account_id: str, expires_at: int) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, token.encode(), self._ad(broker, account_id, expires_at))

    def decrypt(self, blob: bytes, broker: str, account_id: str, expires_at: int, key_id: str = "") -> str:
        """The token, or ``TokenDecryptError`` saying whether the key is wrong or the data was altered."""
        if key_id and key_id != self.key_id:
            raise TokenDecryptError(
                f"broker token for {broker}/{account_id} was stored with another key (key id {key_id}, the "
                f"configured {KEY_ENV} has key id {self.key_id}): wrong key"
            )
        if len(blob) < _NONCE + 16:
            raise TokenDecryptError(f"broker token for {broker}/{account_id}: ciphertext too short (altered)")
        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], self._ad(broker, account_id, expires_at))
        except InvalidTag:
            raise TokenDecryptError(
                f"broker token for {broker}/{account_id} failed authentication: the row was altered "
                f"(ciphertext, broker, account or expiry) or the key is wrong"
            ) from None
        return plain.decode()


@dataclass(frozen=True, slots=True)
class StoredToken:
    token: str
    expires_at: int  # ns since the epoch
    created_at: int
    rotated_at: int

    def __repr__(self) -> str:  # never shows the token
        return f"StoredToken(expires_at={self.expires_at})"


class BrokerTokenStore:
    """Encrypted broker tokens in the ``broker_tokens`` table (synchronous; a few calls per login)."""

    def __init__(self, engine: Engine, cipher: TokenCipher, clock=time.time_ns) -> None:
        from common.db import session_factory

        self.engine = engine
        self.cipher = cipher
        self.clock = clock
        self._sessions = session_factory(engine)

    @classmethod
    def from_settings(cls, common: CommonSettings) -> BrokerTokenStore:
        """The store on ``common``'s database with its key (``ConfigError`` when no key is set)."""
        from common.db import make_engine

        cipher = TokenCipher.from_settings(common)
        return cls(make_engine(common.db_url), cipher)

    def load(self, broker: str, account_id: str) -> StoredToken | None:
        """The stored token, or None when none is stored; ``TokenDecryptError`` when it cannot be read."""
        from common.db import BrokerToken

        with self._sessions() as s:
            row = s.get(BrokerToken, (broker, account_id))
            if row is None:
                return None
            token = self.cipher.decrypt(row.ciphertext, broker, account_id, row.expires_at, row.key_id)
            return StoredToken(token, row.expires_at, row.created_at, row.rotated_at)

    def save(self, broker: str, account_id: str, token: str, expires_at: int) -> None:
        """Store (or rotate) the token of ``broker`` / ``account_id``, encrypted with a new nonce."""
        from common.db import BrokerToken

        from sqlalchemy.exc import IntegrityError

        now = self.clock()
        blob = self.cipher.encrypt(token, broker, account_id, expires_at)
        for attempt in (1, 2):
            try:
                with self._sessions.begin() as s:
                    row = s.get(BrokerToken, (broker, account_id))
                    if row is None:
                        s.add(BrokerToken(broker=broker, account_id=account_id, ciphertext=blob,
                                          key_id=self.cipher.key_id, expires_at=expires_at, created_at=now,
                                          rotated_at=now))
                    else:
                        row.ciphertext, row.key_id = blob, self.cipher.key_id
                        row.expires_at, row.rotated_at = expires_at, now
                return
            except IntegrityError:
                if attempt == 2:
                    raise
                # Another process stored the first row at the same moment: update it instead.

    def delete(self, broker: str, account_id: str) -> bool:
        from common.db import BrokerToken

        with self._sessions.begin() as s:
            row = s.get(BrokerToken, (broker, account_id))
            if row is None:
                return False
            s.delete(row)
            return True
