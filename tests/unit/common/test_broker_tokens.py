"""Broker session tokens at rest: AES-GCM with a key outside the database; wrong keys and tampering."""

from __future__ import annotations

import base64
import os

import pytest
import sqlalchemy as sa

from common.broker_tokens import BrokerTokenStore, TokenCipher, TokenDecryptError
from common.config import CommonSettings, ConfigError
from common.db import make_engine, migrate

TOKEN = "tok-" + "Zq9" * 12


def _key() -> bytes:
    return os.urandom(32)


def scan_database(engine: sa.Engine, needles: list[str]) -> list[str]:
    """Every (table.column) whose value contains one of ``needles``, over every row of every table."""
    hits = []
    insp = sa.inspect(engine)
    with engine.connect() as c:
        for table in insp.get_table_names():
            cols = [col["name"] for col in insp.get_columns(table)]
            for row in c.execute(sa.text(f'SELECT * FROM "{table}"')):
                for name, val in zip(cols, row, strict=True):
                    raw = bytes(val) if isinstance(val, (bytes, memoryview)) else str(val).encode()
                    hits += [f"{table}.{name}" for n in needles if n.encode() in raw]
    return hits


@pytest.fixture
def store(database_url):
    migrate(database_url)
    engine = make_engine(database_url)
    yield BrokerTokenStore(engine, TokenCipher(_key()))
    engine.dispose()


def test_a_stored_token_is_encrypted_and_reads_back(store):
    store.save("kite", "api-key-1", TOKEN, expires_at=2_000_000_000_000_000_000)
    got = store.load("kite", "api-key-1")
    assert got.token == TOKEN and got.expires_at == 2_000_000_000_000_000_000
    assert got.created_at == got.rotated_at and TOKEN not in repr(got)
    assert store.load("kite", "other") is None
    assert scan_database(store.engine, [TOKEN, TOKEN[4:20]]) == []
    with store.engine.connect() as c:
        (blob,) = c.execute(sa.text("SELECT ciphertext FROM broker_tokens")).one()
    # Rotation: same row, a new nonce, a later rotated_at.
    store.save("kite", "api-key-1", TOKEN + "2", expires_at=2_000_000_000_000_000_001)
    again = store.load("kite", "api-key-1")
    assert again.token == TOKEN + "2" and again.rotated_at >= again.created_at == got.created_at
    with store.engine.connect() as c:
        (blob2,) = c.execute(sa.text("SELECT ciphertext FROM broker_tokens")).one()
        assert c.execute(sa.text("SELECT count(*) FROM broker_tokens")).scalar() == 1
    assert bytes(blob)[:12] != bytes(blob2)[:12]
    assert store.delete("kite", "api-key-1") and store.load("kite", "api-key-1") is None


def test_the_wrong_key_fails_to_decrypt_with_a_clear_error(store):
    store.save("kite", "k1", TOKEN, expires_at=1)
    other = BrokerTokenStore(store.engine, TokenCipher(_key()))
    with pytest.raises(TokenDecryptError, match="stored with another key .*wrong key"):
        other.load("kite", "k1")
    # Even with the key id forged to match, the wrong key cannot authenticate the ciphertext.
    with store.engine.begin() as c:
        c.execute(sa.text("UPDATE broker_tokens SET key_id = :k"), {"k": other.cipher.key_id})
    with pytest.raises(TokenDecryptError, match="failed authentication"):
        other.load("kite", "k1")


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE broker_tokens SET expires_at = expires_at + 3600000000000",  # extend the expiry
        "UPDATE broker_tokens SET account_id = 'k2'",  # move it to another account
        "UPDATE broker_tokens SET broker = 'other'",
    ],
)
def test_tampering_with_the_row_is_detected(store, sql):
    store.save("kite", "k1", TOKEN, expires_at=10**18)
    with store.engine.begin() as c:
        c.execute(sa.text(sql))
        broker, account = c.execute(sa.text("SELECT broker, account_id FROM broker_tokens")).one()
    with pytest.raises(TokenDecryptError, match="failed authentication: the row was altered"):
        store.load(broker, account)


def test_a_flipped_ciphertext_bit_is_detected():
    c = TokenCipher(_key())
    blob = bytearray(c.encrypt(TOKEN, "b", "a", 5))
    assert c.decrypt(bytes(blob), "b", "a", 5) == TOKEN
    blob[20] ^= 1
    with pytest.raises(TokenDecryptError, match="altered"):
        c.decrypt(bytes(blob), "b", "a", 5)
    with pytest.raises(TokenDecryptError, match="too short"):
        c.decrypt(b"x" * 10, "b", "a", 5)


def test_the_key_comes_from_the_environment_or_a_private_file(clean_env, tmp_path):
    with pytest.raises(ConfigError, match="AITRADER_BROKER_TOKEN_KEY: a broker login is configured"):
        TokenCipher.from_settings(CommonSettings())
    key = _key()
    b64 = base64.b64encode(key).decode()
    assert TokenCipher.from_settings(CommonSettings(broker_token_key=b64)).key_id == TokenCipher(key).key_id
    with pytest.raises(ConfigError, match="AITRADER_BROKER_TOKEN_KEY: must be base64 of exactly 32 bytes"):
        TokenCipher.from_settings(CommonSettings(broker_token_key=base64.b64encode(b"short").decode()))
    f = tmp_path / "token.key"
    f.write_text(b64 + "\n")
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="KEY_FILE: .* is readable by others"):
        TokenCipher.from_settings(CommonSettings(broker_token_key_file=f))
    f.chmod(0o600)
    assert TokenCipher.from_settings(CommonSettings(broker_token_key_file=f)).key_id == TokenCipher(key).key_id
    with pytest.raises(ConfigError, match="cannot read"):
        TokenCipher.from_settings(CommonSettings(broker_token_key_file=tmp_path / "missing"))
    assert b64 not in repr(CommonSettings(broker_token_key=b64))
