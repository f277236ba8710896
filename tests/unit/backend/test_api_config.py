"""The API's configuration fails fast naming the key; the first admin comes from the environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.api import create_app
from backend.api.config import AdminSettings, ApiSettings
from common.config import CommonSettings, ConfigError, load
from common.db import make_engine

from .conftest import PASSWORDS

ROOT = Path(__file__).resolve().parents[3]
GOOD = secrets.token_urlsafe(48)


def _load_error(monkeypatch, cls, **env) -> str:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load(cls)
    return str(e.value)


@pytest.mark.parametrize(("value", "why"), [
    ("short-but-random-Xy7", "at least 32 bytes"),
    ("change-me", "at least 32 bytes"),
    ("secret", "at least 32 bytes"),
    ("changeme", "at least 32 bytes"),
    ("change-me-change-me-change-me-change-me", "placeholder"),
    ("my-super-secret-key-for-production-2026", "placeholder"),
    ("a" * 64, "distinct"),
])
def test_a_weak_jwt_secret_is_refused_naming_the_key(clean_env, value, why):
    msg = _load_error(clean_env, ApiSettings, AITRADER_API_JWT_SECRET=value)
    assert "AITRADER_API_JWT_SECRET" in msg and why in msg, msg


def test_the_jwt_secret_is_required(clean_env):
    msg = _load_error(clean_env, ApiSettings)
    assert "AITRADER_API_JWT_SECRET" in msg and "required" in msg.lower(), msg
    clean_env.setenv("AITRADER_API_JWT_SECRET", GOOD)
    s = load(ApiSettings)
    assert s.access_ttl_s == 900 and s.port == 8000 and s.cors_origin_list == []


@pytest.mark.parametrize(("key", "value"), [
    ("AITRADER_API_ACCESS_TTL_S", "901"),
    ("AITRADER_API_ACCESS_TTL_S", "3600"),
    ("AITRADER_API_ACCESS_TTL_S", "0"),
    ("AITRADER_API_REFRESH_TTL_S", "10"),
    ("AITRADER_API_CORS_ORIGINS", "*"),
    ("AITRADER_API_CORS_ORIGINS", "http://ok.example,localhost:3000"),
    ("AITRADER_API_LOGIN_RATE_LIMIT", "0"),
    ("AITRADER_API_PORT", "http"),
    ("AITRADER_API_CONTROL_VIA", "pigeon"),
    ("AITRADER_API_JWT_ALGORITHM", "none"),  # unknown key: a typo, or an attempt at a setting that does not exist
])
def test_bad_api_settings_fail_naming_the_key(clean_env, key, value):
    msg = _load_error(clean_env, ApiSettings, AITRADER_API_JWT_SECRET=GOOD, **{key: value})
    assert key in msg, msg


@pytest.mark.parametrize(("env", "key"), [
    ({"AITRADER_ADMIN_USERNAME": "root", "AITRADER_ADMIN_PASSWORD": "short-1"}, "AITRADER_ADMIN_PASSWORD"),
    ({"AITRADER_ADMIN_USERNAME": "root", "AITRADER_ADMIN_PASSWORD": "changeme-changeme"}, "AITRADER_ADMIN_PASSWORD"),
    ({"AITRADER_ADMIN_USERNAME": "root", "AITRADER_ADMIN_PASSWORD": "Password123456"}, "AITRADER_ADMIN_PASSWORD"),
    ({"AITRADER_ADMIN_USERNAME": "root", "AITRADER_ADMIN_PASSWORD": "aaaaaaaaaaaaaaaa"}, "AITRADER_ADMIN_PASSWORD"),
    ({"AITRADER_ADMIN_USERNAME": "root"}, "AITRADER_ADMIN_PASSWORD"),
    ({"AITRADER_ADMIN_PASSWORD": PASSWORDS["admin"]}, "AITRADER_ADMIN_PASSWORD"),
    ({"AITRADER_ADMIN_USERNAME": "bad name!", "AITRADER_ADMIN_PASSWORD": PASSWORDS["admin"]},
     "AITRADER_ADMIN_USERNAME"),
])
def test_bad_first_admin_settings_fail_naming_the_key(clean_env, env, key):
    msg = _load_error(clean_env, AdminSettings, **env)
    assert key in msg, msg


def test_first_admin_is_created_from_the_environment_once(api_db, redis_url, clean_env):
    clean_env.setenv("AITRADER_ADMIN_USERNAME", "root")
    clean_env.setenv("AITRADER_ADMIN_PASSWORD", PASSWORDS["admin"])
    common = CommonSettings(redis_url=redis_url, database_url=api_db)
    settings = ApiSettings(jwt_secret=GOOD)
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings, common=common)) as c:
        r = c.post("/auth/login", json={"username": "root", "password": PASSWORDS["admin"]})
        assert r.status_code == 200 and r.json()["role"] == "admin"
    # an admin exists: other AITRADER_ADMIN_* values are not used (no second admin, no password change)
    with TestClient(create_app(settings, common=common,
                               admin=AdminSettings(username="root2", password="other-admin-pw-93kd"))) as c:
        assert c.post("/auth/login", json={"username": "root2", "password": "other-admin-pw-93kd"}).status_code == 401
    eng = make_engine(api_db)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT username, role, password_hash FROM users")).all()
    finally:
        eng.dispose()
    assert [(u, r) for u, r, _h in rows] == [("root", "admin")]
    assert rows[0][2].startswith("$argon2id$") and PASSWORDS["admin"] not in rows[0][2]


def test_first_admin_name_taken_by_another_role_fails_naming_the_key(make_api, api_db, redis_url):
    make_api()  # users viewer / trader / admin
    eng = make_engine(api_db)
    try:
        with eng.begin() as c:
            c.execute(sa.text("DELETE FROM users WHERE role = 'admin'"))
    finally:
        eng.dispose()
    with pytest.raises(ConfigError, match="AITRADER_ADMIN_USERNAME"):
        create_app(ApiSettings(jwt_secret=GOOD), common=CommonSettings(redis_url=redis_url, database_url=api_db),
                   admin=AdminSettings(username="viewer", password=PASSWORDS["admin"]))


def test_an_unmigrated_database_is_refused(tmp_path, redis_url, clean_env):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ConfigError, match="not migrated"):
        create_app(ApiSettings(jwt_secret=GOOD), common=CommonSettings(redis_url=redis_url, database_url=url),
                   admin=AdminSettings())


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AITRADER_") and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, *args], check=False, env={**base, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_python_m_backend_api_exits_2_naming_the_key(tmp_path, api_db):
    p = _run({"DATABASE_URL": api_db, "AITRADER_HOME": str(tmp_path)}, "-m", "backend.api")
    assert p.returncode == 2 and "AITRADER_API_JWT_SECRET" in p.stderr, p.stderr
    p = _run({"DATABASE_URL": api_db, "AITRADER_HOME": str(tmp_path), "AITRADER_API_JWT_SECRET": "change-me"},
             "-m", "backend.api")
    assert p.returncode == 2 and "AITRADER_API_JWT_SECRET" in p.stderr, p.stderr
    p = _run({"DATABASE_URL": api_db, "AITRADER_HOME": str(tmp_path), "AITRADER_API_JWT_SECRET": GOOD,
              "AITRADER_API_ACCESS_TTL_S": "3600"}, "-m", "backend.api")
    assert p.returncode == 2 and "AITRADER_API_ACCESS_TTL_S" in p.stderr, p.stderr


def test_other_services_accept_the_admin_keys_in_a_shared_environment(tmp_path):
    """AITRADER_ADMIN_* is read only by the API; loading another service's settings must not call it unknown."""
    code = "from common.config import CommonSettings, load; load(CommonSettings); print('ok')"
    p = _run({"AITRADER_HOME": str(tmp_path), "AITRADER_ADMIN_USERNAME": "root",
              "AITRADER_ADMIN_PASSWORD": PASSWORDS["admin"], "AITRADER_API_JWT_SECRET": "x"}, "-c", code)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    p = _run({"AITRADER_HOME": str(tmp_path), "AITRADER_ADMINN_USERNAME": "root"}, "-c", code)
    assert p.returncode != 0 and "AITRADER_ADMINN_USERNAME" in p.stderr  # a typo is still caught


def test_a_user_name_is_matched_whole_a_trailing_newline_is_refused():
    from backend.api.users import username_problem

    assert username_problem("alice") is None
    assert username_problem("alice\n") is not None and username_problem("al") is not None
