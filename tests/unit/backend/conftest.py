"""Fixtures for the API tests: a migrated database, the app built by ``create_app`` and one user per role.

The app runs in process behind Starlette's ``TestClient`` (httpx over ASGI, lifespan included),
against the real test database and the test Redis db; no gateway runs here (the kill-switch
routes' answered path is tested with a real gateway in tests/integration/test_api_kill_switch.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from backend.api import create_app
from backend.api.config import AdminSettings, ApiSettings
from backend.api.users import create_user
from common.config import CommonSettings
from common.db import make_engine, migrate

PASSWORDS = {"viewer": "viewer-pass-Q7k2m9", "trader": "trader-pass-W3x8n1", "admin": "admin-pass-R5t4v6Z"}
ROLES = ("viewer", "trader", "admin")


@dataclass
class Api:
    client: TestClient
    settings: ApiSettings
    common: CommonSettings
    db_url: str

    def login(self, username: str, password: str | None = None) -> dict:
        r = self.client.post("/auth/login", json={"username": username, "password": password or PASSWORDS[username]})
        assert r.status_code == 200, r.text
        return r.json()

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.login(role)['access_token']}"}


def api_settings(**kw) -> ApiSettings:
    base = {"jwt_secret": secrets.token_urlsafe(48), "control_timeout_s": 0.3}
    return ApiSettings(**{**base, **kw})


@pytest.fixture
def api_db(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def make_api(api_db: str, redis_url: str, clean_env) -> Iterator[Callable[..., Api]]:
    """Build an app (settings overridable) on the migrated database, with users viewer / trader / admin."""
    clients: list[TestClient] = []

    def build(*, admin: AdminSettings | None = None, users: bool = True, **settings_kw) -> Api:
        settings = api_settings(**settings_kw)
        common = CommonSettings(redis_url=redis_url, database_url=api_db)
        app = create_app(settings, common=common,
                         admin=admin or AdminSettings(username="admin", password=PASSWORDS["admin"]))
        if users and not clients:
            eng = make_engine(api_db)
            try:
                for role in ("viewer", "trader"):
                    create_user(eng, role, PASSWORDS[role], role)
            finally:
                eng.dispose()
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Api(client, settings, common, api_db)

    yield build
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def api(make_api) -> Api:
    return make_api()
